-- bench/line_echo.lua: the baseline of `make bench`'s WebSocket echo row:
-- a plain TCP echo with line framing, in the callback style like
-- bench/ws_echo.lua, every line back as it came (terminator included).
--
--   build/luaserv -l 127.0.0.1:9000 bench/line_echo.lua
--   build/luaserv-bench -p 9000 -m persistent --check echo -s 64 -P 16 -d 5
local handler = { framing = { "line", keep_eol = true } }

function handler.on_message(_, line)
    return line
end

return handler

-- examples/udp_time.lua: a UDP time service.
--
--   build/luaserv -l udp://127.0.0.1:7000 examples/udp_time.lua
--
-- Every datagram gets one datagram back, sent to whoever sent it:
--
--   "unix"      -> the seconds since the epoch, "1764275749.032117"
--   anything    -> "[Thu Nov 27 20:35:49 2025] anything", as the
--                  timestamp server answers a line
--
-- A trailing LF or CRLF is kept: "unix\r\n" is answered with the number
-- and "\r\n". There is no connection: on_message runs once per datagram,
-- and conn only names the sender for the length of the call.
local luaserv = require "luaserv"

local handler = {}

function handler.on_message(_, data)
    local eol = data:match("\r?\n$") or ""
    if #data == #eol + 4 and data:sub(1, 4) == "unix" then
        -- luaserv.now() is the event loop's clock: no system call.
        return { ("%.6f"):format(luaserv.now()), eol }
    end
    -- A table reply goes out as one datagram, one sendmsg with an iovec
    -- per string: no concatenation in Lua.
    return { "[", luaserv.ctime(), "] ", data }
end

return handler

-- scripts/handle.lua: the timestamp server.
-- Each line comes back as "[<ctime>] <the line as received>", terminator
-- included, on TCP and UDP alike.
local luaserv = require "luaserv"

local ctime = luaserv.ctime

local handler = { framing = { "line", keep_eol = true } }

function handler.on_message(_, line)
    return "[" .. ctime() .. "] " .. line
end

return handler

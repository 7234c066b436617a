-- scripts/handle.lua: the timestamp server.
-- Each line comes back as "[<ctime>] <the line as received>", terminator
-- included, on TCP and UDP alike. Returning the pieces (rather than
-- joining them with ..) lets the core write them without building a
-- string per line.
local luaserv = require "luaserv"

local ctime = luaserv.ctime

local handler = { framing = { "line", keep_eol = true } }

function handler.on_message(_, line)
    return "[", ctime(), "] ", line
end

return handler

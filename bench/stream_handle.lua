-- bench/stream_handle.lua: the timestamp server in the stream style, to
-- measure handle(conn) tasks against the callback style of
-- scripts/handle.lua with the same replies.
local luaserv = require "luaserv"

local ctime = luaserv.ctime

local handler = {}

function handler.handle(conn)
    while true do
        local line = conn:readline(true)
        if not line then return end
        conn:write("[", ctime(), "] ", line)
    end
end

return handler

-- examples/echo.lua: a line echo server, in the stream style.
--
--   build/luaserv -l 127.0.0.1:7000 examples/echo.lua
--
-- Each connection runs handle(conn) as its own task. conn:readline() looks
-- blocking but only suspends this task; the event loop serves every other
-- connection meanwhile. A line comes back exactly as it arrived, its LF or
-- CRLF included; a last line the peer ended without a terminator (it
-- closed mid-line) comes back as it is.
local handler = {
    -- Not a field the core knows: ours, read at each connection, so it
    -- can be changed at run time like any handler field.
    idle_timeout = 300,     -- seconds without a whole line before we hang up
}

function handler.handle(conn)
    conn:set_timeout(handler.idle_timeout)
    while true do
        -- true keeps the terminator, so the echo is byte for byte.
        local line, err = conn:readline(true)
        if not line then
            -- "closed": the peer hung up (any partial last line was
            -- returned first); "timeout": idle too long; "too long": a
            -- line over 64 KiB. Returning closes the connection once its
            -- queued output has been written.
            if err == "timeout" then conn:write("idle too long, bye\r\n") end
            return
        end
        -- In a task, write waits while more than the high-water mark
        -- (1 MiB) is queued for this peer: a client that sends without
        -- reading slows down only its own task.
        conn:write(line)
    end
end

return handler

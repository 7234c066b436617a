-- Stream style: handle(conn) as the connection's task, with readline,
-- read, read_until, read_frame, write waiting on backpressure, flush,
-- timeouts, errors and the task count. The server is
-- spec/fixtures/stream_modes.lua: a connection's first line picks a mode.
local helpers = require "helpers"
local socket = require "socket"

local TIMEOUT = helpers.sanitize and 30 or 10
local SCRIPT = "spec/fixtures/stream_modes.lua"
local MIB = 1024 * 1024
local serve, probe = helpers.serve, helpers.probe

-- The stream server with its datagram (callback style) listener.
local function start(opts)
    opts = opts or {}
    opts.script = opts.script or SCRIPT
    opts.listen = opts.listen or { "127.0.0.1:0", "udp://127.0.0.1:0" }
    return serve(opts)
end

local function stats(srv) return probe(srv, "stats") end

-- Nothing left: no task, no connection.
local function settled(srv)
    local s
    local ok = helpers.wait_for(function()
        s = stats(srv)
        return s.tasks == 0 and s.active == 0
    end, TIMEOUT)
    assert.truthy(ok, ("tasks=%d active=%d"):format(s.tasks, s.active))
end

-- A connection in MODE.
local function open(srv, mode, timeout)
    local c = helpers.connect(srv.port, timeout or TIMEOUT)
    assert(c:setoption("tcp-nodelay", true))
    assert(c:send(mode .. "\n"))
    return c
end

-- Sends data, half-closes, returns everything the server sent.
local function finish(c, data)
    if data and #data > 0 then assert(c:send(data)) end
    c:shutdown("send")
    local all = helpers.receive_all(c)
    c:close()
    return all
end

-- Reads exactly n bytes (or less if the peer closes); returns them.
local function read_n(c, n)
    local parts, got = {}, 0
    while got < n do
        local data, err, partial = c:receive(math.min(65536, n - got))
        data = data or partial
        if data and #data > 0 then
            parts[#parts + 1] = data
            got = got + #data
        end
        if err then break end
    end
    return table.concat(parts)
end

describe("stream style reads", function()
    local srv

    lazy_setup(function()
        srv = helpers.start_server{ script = SCRIPT, no_finally = true,
            listen = { "127.0.0.1:0", "udp://127.0.0.1:0" } }
    end)

    lazy_teardown(function()
        if not srv then return end
        local ok, err = pcall(settled, srv)
        local log = srv:log()
        local status = srv:stop()
        assert(ok, err)
        assert.not_matches("handler error", log)
        assert.equal(0, status)
    end)

    it("readline assembles a line that arrives a byte at a time", function()
        local c = open(srv, "lines")
        for ch in ("split\r\nacross\n"):gmatch(".") do
            assert(c:send(ch))
            helpers.sleep(0.01)
        end
        assert.equal("<split>", c:receive("*l"))
        assert.equal("<across>", c:receive("*l"))
        assert.equal("END closed\n", finish(c))
    end)

    it("readline returns every line of one read, in order", function()
        local c = open(srv, "lines")
        local lines, want = {}, {}
        for i = 1, 2000 do
            lines[i] = "line " .. i .. (i % 2 == 0 and "\r\n" or "\n")
            want[i] = "<line " .. i .. ">\n"
        end
        want[#want + 1] = "END closed\n"
        assert.equal(table.concat(want), finish(c, table.concat(lines)))
    end)

    it("readline(true) keeps the CRLF or LF", function()
        local c = open(srv, "keep")
        assert.equal("<a\\r\\n>\n<b\\n>\n<c>\nEND closed\n",
                     finish(c, "a\r\nb\nc"))
    end)

    it("returns a partial last line at end of stream, then nil, 'closed'", function()
        local c = open(srv, "lines")
        assert.equal("<one>\n<two, unterminated>\nEND closed\n",
                     finish(c, "one\ntwo, unterminated"))
    end)

    it("read(n) returns exactly n bytes, however they arrive", function()
        local c = open(srv, "read 4")
        assert(c:send("ab"))
        helpers.sleep(0.05)
        assert(c:send("cdef"))
        assert.equal("[abcd]", c:receive("*l"))
        helpers.sleep(0.05)
        assert(c:send("gh"))
        assert.equal("[efgh]", c:receive("*l"))
        assert.equal("[ijkl]\n[mn]\nEND closed\n", finish(c, "ijklmn"))
    end)

    it("read() returns what has arrived, 1 byte to 64 KiB at a time", function()
        local c = open(srv, "raw")
        local data = ("x"):rep(1000000)
        assert(c:send(data))
        local reply = finish(c)
        local total, max, count, err = reply:match("^RAW (%d+) (%d+) (%d+) (%a+)\n$")
        assert.truthy(total, reply)
        assert.equal(1000000, tonumber(total))
        assert.is_true(tonumber(max) <= 65536, "max chunk " .. max)
        assert.is_true(tonumber(count) >= 16, "chunks " .. count)
        assert.equal("closed", err)
    end)

    it("read() returns a single byte when only one arrived", function()
        local c = open(srv, "raw")
        assert(c:send("z"))
        helpers.sleep(0.05)
        assert.equal("RAW 1 1 1 closed\n", finish(c))
    end)

    it("read_until finds a delimiter split across writes", function()
        local c = open(srv, "until \\r\\n\\r\\n")
        assert(c:send("head: 1\r\n\r"))
        helpers.sleep(0.05)
        assert(c:send("\nbody\r"))
        assert.equal("<head: 1>", c:receive("*l"))
        helpers.sleep(0.05)
        assert(c:send("\n"))
        helpers.sleep(0.05)
        assert.equal("<body>\n<rest>\nEND closed\n",
                     finish(c, "\r\nrest\r\n\r\n"))
    end)

    it("read_until(delim, true) keeps the delimiter", function()
        local c = open(srv, "until || keep")
        assert.equal("<a||>\n<||>\n<b||>\n<c>\nEND closed\n", finish(c, "a||||b||c"))
    end)

    it("read_frame returns frames by the conn's framing (prefix)", function()
        local c = open(srv, "frames")
        local frames = { "first", "", ("y"):rep(300), "last" }
        local out = {}
        for i, f in ipairs(frames) do out[i] = string.pack(">s2", f) end
        local wire = table.concat(out)
        -- split inside a length prefix and inside a payload
        assert(c:send(wire:sub(1, 8)))
        helpers.sleep(0.05)
        assert(c:send(wire:sub(9, 11)))
        helpers.sleep(0.05)
        local reply = finish(c, wire:sub(12))
        local got, pos = {}, 1
        while pos <= #reply do
            local f
            f, pos = string.unpack(">s2", reply, pos)
            got[#got + 1] = f
        end
        assert.same({ "got first", "got ", "got " .. ("y"):rep(300),
                      "got last", "END closed" }, got)
    end)

    it("read_frame returns nil, 'closed' for a frame cut by end of stream", function()
        local c = open(srv, "frames")
        local reply = finish(c, string.pack(">s2", "whole") .. "\0\9cut")
        local f1, pos = string.unpack(">s2", reply)
        local f2 = string.unpack(">s2", reply, pos)
        assert.equal("got whole", f1)
        assert.equal("END closed", f2)
    end)

    it("a read returns nil, 'timeout' after set_timeout; the handler still writes", function()
        local c = open(srv, "timeout 0.3")
        local line = c:receive("*l")
        local secs = line and tonumber(line:match("^GOT nil timeout ([%d.]+)$"))
        assert.truthy(secs, "got " .. tostring(line))
        assert.is_true(secs >= 0.25 and secs < 3, line)
        -- the connection is still usable: the next read gets the next line
        assert.equal("THEN more nil\n", finish(c, "more\n"))
    end)

    it("a line over max gives nil, 'too long'; the error reply still goes out", function()
        local c = open(srv, "toolong")
        assert(c:send("short\n"))
        assert.equal("<short>", c:receive("*l"))
        assert(c:send(("L"):rep(100) .. "\nignored\n"))
        assert.equal("ERR too long", c:receive("*l"))
        -- the input ended there: later reads say "closed"
        assert.equal("AGAIN nil closed", c:receive("*l"))
        c:close()
    end)
end)

describe("stream style idle timeout", function()
    it("a read returns nil, 'timeout' after --idle-timeout without input", function()
        local srv = start{ args = { "--idle-timeout", "0.3" } }
        local c = open(srv, "lines")
        assert(c:send("quick\n"))
        assert.equal("<quick>", c:receive("*l"))
        local t0 = helpers.now()
        assert.equal("END timeout", c:receive("*l"))
        local took = helpers.now() - t0
        assert.is_true(took >= 0.25 and took < 3, "took " .. took)
        c:close()
        settled(srv)
        assert.equal(0, srv:stop())
    end)
end)

describe("stream style writes", function()
    it("conn:write waits while the peer does not read, bounding memory", function()
        local srv = start()
        local rss0 = srv:rss_kib()
        local c = open(srv, "flood 50")
        -- the peer reads nothing: the task gets stuck in conn:write once the
        -- socket buffers and the high-water mark are full
        local p1, p2
        assert.truthy(helpers.wait_for(function()
            p1 = probe(srv, "progress")
            helpers.sleep(0.5)
            p2 = probe(srv, "progress")
            return p1.progress > 0 and p1.progress == p2.progress
        end, TIMEOUT), "the flood task never stopped writing")
        local rss1 = srv:rss_kib()
        assert.equal(1, p2.floods, "the flood task should still be waiting")
        assert.is_true(p2.progress < 25 * MIB,
                       "queued " .. p2.progress .. " bytes for a stalled peer")
        local limit = (helpers.sanitize and 32 or 12) * 1024
        assert.is_true(rss1 - rss0 < limit,
                       ("RSS grew from %d to %d KiB"):format(rss0, rss1))
        -- now read it all: every byte arrives and the task ends
        local got = read_n(c, 50 * MIB)
        assert.equal(50 * MIB, #got)
        assert.equal(("0123456789abcdef"):rep(4), got:sub(1, 64))
        got = nil -- luacheck: ignore
        c:close()
        assert.truthy(helpers.wait_for(function()
            return srv:log():find("EV flood done " .. 50 * MIB, 1, true)
        end, TIMEOUT), srv:log())
        settled(srv)
        assert.equal(0, srv:stop())
    end)

    it("a peer closing while a write waits wakes the task with nil, 'closed'", function()
        local srv = start()
        local c = open(srv, "flood 200")
        assert.truthy(helpers.wait_for(function()
            local p = probe(srv, "progress")
            return p.floods == 1 and p.progress > MIB
        end, TIMEOUT))
        helpers.sleep(0.3)
        c:close()
        assert.truthy(helpers.wait_for(function()
            return srv:log():find("EV flood write failed", 1, true)
        end, TIMEOUT), srv:log())
        assert.matches("EV flood write failed closed after %d+", srv:log())
        assert.not_matches("handler error", srv:log())
        settled(srv)
        -- still serving
        assert.equal("<fine>\nEND closed\n", finish(open(srv, "lines"),
                                                  "fine\n"))
        assert.equal(0, srv:stop())
    end)

    it("conn:flush returns true once every queued byte went to the kernel", function()
        local srv = start()
        local c = open(srv, "flush 4")
        helpers.sleep(0.3)                  -- flush is waiting on us
        assert.equal(0, probe(srv, "stats").errors)
        local body = read_n(c, 4 * MIB)
        assert.equal(4 * MIB, #body)
        assert.equal("", c:receive("*l"))   -- the "\n" before FLUSHED
        assert.equal("FLUSHED true nil queued=true pending=0", c:receive("*l"))
        c:close()
        settled(srv)
        assert.equal(0, srv:stop())
    end)

    it("closes the connection after all output drained when handle returns", function()
        local srv = start()
        local c = open(srv, "bulk 6")
        helpers.sleep(0.5)                  -- handle has long returned
        local all = helpers.receive_all(c)  -- until the server closes
        c:close()
        assert.equal(6 * MIB, #all)
        assert.truthy(helpers.wait_for(function()
            return srv:log():find("EV close %d+ closed")
        end, TIMEOUT), srv:log())
        settled(srv)
        assert.equal(0, srv:stop())
    end)
end)

describe("stream style tasks", function()
    it("an error in handle closes only that connection and logs a traceback", function()
        local srv = start()
        local other = open(srv, "lines")
        assert(other:send("before\n"))
        assert.equal("<before>", other:receive("*l"))

        local c = open(srv, "boom")
        assert.equal("about to fail", c:receive("*l"))
        -- then the server closes
        assert.same({ "", "closed" }, { helpers.read_to_close(c) })

        assert(other:send("after\n"))
        assert.equal("<after>", other:receive("*l"))
        assert.equal("END closed\n", finish(other))

        local log = srv:log()
        assert.matches("handler error in handle[^\n]*stream_modes%.lua:%d+: " ..
                       "attempt to index a nil value", log)
        assert.matches("stack traceback:\n[^\n]*stream_modes%.lua:%d+", log)
        assert.matches("EV on_error %d+ [^\n]*stream_modes%.lua:%d+: attempt", log)
        assert.matches("EV close %d+ error", log)
        assert.equal(1, stats(srv).errors)
        settled(srv)
        assert.equal(0, srv:stop())
    end)

    it("calling conn:readline() in on_message raises an error that says 'task'", function()
        local srv = serve{ source = [[
local handler = {}
function handler.on_message(conn, line)
    if line == "try" then
        local ok, err = pcall(conn.readline, conn)
        return tostring(ok) .. " " .. err .. "\n"
    end
    return conn:readline()
end
return handler
]] }
        local c = helpers.connect(srv.port)
        assert(c:send("try\n"))
        local reply = c:receive("*l")
        assert.matches("^false .*readline.*task", reply)
        -- unprotected: a handler error that closes only that connection
        assert(c:send("raise\n"))
        -- then the server closes
        assert.same({ "", "closed" }, { helpers.read_to_close(c) })
        assert.matches("handler error in on_message[^\n]*readline[^\n]*task",
                       srv:log())
        assert.equal(0, srv:stop())
    end)

    it("serves callback and stream listeners side by side", function()
        -- one script: handle() for TCP, on_message for its UDP listener
        local srv = start()
        local c = open(srv, "lines")
        assert(c:send("x\n"))
        assert.equal("<x>", c:receive("*l"))
        local u = assert(socket.udp())
        u:settimeout(5)
        assert(u:setpeername("127.0.0.1", srv.ports[2]))
        assert(u:send("ping"))
        assert.equal("dgram ping", u:receive())   -- while the task waits
        u:close()
        assert.equal("<y>\nEND closed\n", finish(c, "y\n"))
        -- and a callback-style server next to it, each its own style
        local cb = serve{ script = "scripts/handle.lua" }
        local d = helpers.connect(cb.port)
        assert(d:send("z\n"))
        assert.matches("^" .. helpers.CTIME .. "z$", d:receive("*l"))
        d:close()
        settled(srv)
        assert.equal(0, cb:stop())
        assert.equal(0, srv:stop())
    end)

    it("counts a task per connection and none once they closed", function()
        local srv = start()
        local conns = {}
        for i = 1, 20 do
            conns[i] = open(srv, "wait")
            assert.equal("waiting", conns[i]:receive("*l"))
        end
        local s = stats(srv)
        assert.equal(20, s.tasks)
        assert.equal(20, s.active)
        for i = 1, 10 do conns[i]:close() end
        assert.truthy(helpers.wait_for(function()
            return stats(srv).tasks == 10
        end, TIMEOUT))
        for i = 11, 20 do conns[i]:close() end
        settled(srv)
        assert.not_matches("handler error", srv:log())
        assert.equal(0, srv:stop())
    end)
end)

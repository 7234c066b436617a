-- Issue 8, item 3 and its "Also" items: a stream-style read gets the bytes
-- it waits for whatever the shape of the read and however much input
-- piled up while the task was not reading; a closed peer ends the task; a
-- task that does not read does not spin; over-long and cut-off frames are
-- logged; stream reads count as messages.
local helpers = require "helpers"
local op = require "fixtures.operations_util"

local SCRIPT = "spec/fixtures/stream_reads.lua"
local SLOW = op.SLOW

-- Sends data on c while reading replies, until done(received) is true,
-- the peer closed, or timeout seconds passed. Returns what arrived.
local function exchange(c, data, done, timeout)
    return (helpers.pump(c, data, done, timeout))
end

-- A payload of n bytes, all the letter for i ("a", "b", ...).
local function body(i, n)
    return string.char(96 + i):rep(n)
end

-- The replies the fixture gives for frames 1..count of n bytes each.
local function oks(count, n)
    local out = {}
    for i = 1, count do
        local ch = string.char(96 + i)
        out[i] = ("ok %d %s %s\n"):format(n, ch, ch)
    end
    return table.concat(out)
end

-- Sends "MODE DELAY\n" and payload on a fresh connection and returns the
-- replies once want bytes of them came (or the wait ran out).
-- The connection is returned second, for closing early.
local function talk(port, first, payload, want, timeout)
    local c = helpers.connect(port, 5)
    helpers.close_at_end({ c })
    return exchange(c, first .. "\n" .. payload,
                    function(got) return #got >= want end,
                    timeout or 10 * SLOW), c
end

-- The server's "stats" answer as a table of numbers.
local function stats(port)
    local c = helpers.connect(port, 5 * SLOW)
    local t = {}
    assert(c:send("stats\n"))
    local line = assert(c:receive("*l"))
    c:close()
    for k, v in line:gmatch("(%w+)=(%d+)") do t[k] = tonumber(v) end
    return t
end

-- Waits until only the connection asking (and its task) is left.
local function settles(port)
    return helpers.wait_for(function()
        local s = stats(port)
        return s.conns == 1 and s.tasks == 1
    end, 5 * SLOW)
end

-- CPU seconds (user + system) the process pid has used so far.
local function cpu_seconds(pid)
    local stat = assert(helpers.read_file("/proc/" .. pid .. "/stat"))
    local rest = stat:match("%) (.*)$")
    local fields = {}
    for f in rest:gmatch("%S+") do fields[#fields + 1] = f end
    -- after "pid (comm) ", utime and stime are fields 12 and 13
    local p = io.popen("getconf CLK_TCK")
    local tck = tonumber(p:read("l")) or 100
    p:close()
    return (tonumber(fields[12]) + tonumber(fields[13])) / tck
end

describe("stream-style reads (issue 8 item 3)", function()
    local srv

    lazy_setup(function()
        srv = helpers.start_server{ script = SCRIPT, no_finally = true,
                                    args = { "--log-level", "info" } }
    end)

    lazy_teardown(function()
        if srv then srv:stop() end
    end)

    local N = 300000

    -- frames "N\n" + N bytes, count of them
    local function len_frames(count, n, eol)
        local out = {}
        for i = 1, count do out[i] = n .. (eol or "\n") .. body(i, n) end
        return table.concat(out)
    end

    it("answers four pipelined 300 KB read(n) frames after a sleep",
       function()
        local want = oks(4, N)
        local got, c = talk(srv.port, "fixed 0.3", len_frames(4, N), #want)
        assert.equal(want, got)
        c:close()
        assert.truthy(settles(srv.port))
    end)

    it("answers read(n) taken in 100,000-byte pieces", function()
        local want = oks(4, N)
        assert.equal(want, talk(srv.port, "pieces 0.3", len_frames(4, N),
                                #want))
    end)

    it("answers readline(), read(N-2), read(2), pipelined", function()
        local frames = {}
        for i = 1, 4 do
            frames[i] = "200000\r\n" .. body(i, 199998) .. "\r\n"
        end
        local want = oks(4, 199998)
        assert.equal(want, talk(srv.port, "mixed 0.3", table.concat(frames),
                                #want))
    end)

    it("answers readline(), read(N-2), read(2), one request at a time",
       function()
        local c = helpers.connect(srv.port, 5)
        helpers.close_at_end({ c })
        assert(c:send("mixed 0\n"))
        for i, n in ipairs({ 10, 1000, 200000, 200000, 150000 }) do
            local frame = n .. "\r\n" .. body(i, n - 2) .. "\r\n"
            local ch = string.char(96 + i)
            local want = ("ok %d %s %s\n"):format(n - 2, ch, ch)
            assert.equal(want, exchange(c, frame, function(got)
                return #got >= #want
            end, 10 * SLOW))
        end
    end)

    it("answers 300 KB lines by readline()", function()
        local lines = {}
        for i = 1, 4 do lines[i] = body(i, N) .. "\n" end
        local want = oks(4, N)
        assert.equal(want, talk(srv.port, "line 0.3", table.concat(lines),
                                #want))
    end)

    it("answers 300 KB records by read_until()", function()
        local recs = {}
        for i = 1, 4 do recs[i] = body(i, N) .. "\0" end
        local want = oks(4, N)
        assert.equal(want, talk(srv.port, "until 0.3", table.concat(recs),
                                #want))
    end)

    it("answers 300 KB prefixed frames by read_frame()", function()
        local frames = {}
        for i = 1, 4 do frames[i] = string.pack(">I4", N) .. body(i, N) end
        local want = oks(4, N)
        assert.equal(want, talk(srv.port, "frame 0.3", table.concat(frames),
                                #want))
    end)

    it("returns nil, 'too long' for read(n) over the 64 MiB cap", function()
        local got = talk(srv.port, "huge 0", "67108865\n", 13)
        assert.equal("END too long\n", got)
    end)

    it("times out a read on no input, not on the whole read", function()
        local c = helpers.connect(srv.port, 5)
        helpers.close_at_end({ c })
        assert(c:send("timed 0\n" .. N .. "\n"))
        -- 300 KB in ten pieces over 2 s, under a 0.5 s timeout
        for _ = 1, 10 do
            helpers.sleep(0.2)
            assert(c:send(body(1, N / 10)))
        end
        assert.equal(oks(1, N), c:receive("*l") .. "\n")
        -- and a peer that goes quiet still times out
        c = helpers.connect(srv.port, 5)
        helpers.close_at_end({ c })
        assert(c:send("timed 0\n" .. N .. "\n" .. body(1, 1000)))
        assert.equal("END timeout", c:receive("*l"))
    end)

    it("ends the task of a peer that closed while it slept", function()
        local c = helpers.connect(srv.port, 5)
        local data = "fixed 0.3\n" .. len_frames(4, N)
        exchange(c, data, function() return false end, 0.2)
        c:close()
        assert.truthy(settles(srv.port))
    end)

    it("ends the task of a peer that closed while it waited in read(n)",
       function()
        local c = helpers.connect(srv.port, 5)
        local data = "fixed 0.3\n" .. len_frames(1, N) .. N .. "\n" ..
                     body(2, 100000)
        local want = oks(1, N)
        assert.equal(want, exchange(c, data, function(got)
            return #got >= #want
        end, 10 * SLOW))
        c:close()
        assert.truthy(settles(srv.port))
    end)

    it("does not spin while a task sleeps with 32 KiB buffered", function()
        local c = helpers.connect(srv.port, 5)
        helpers.close_at_end({ c })
        local before = cpu_seconds(srv.pid)
        local got = exchange(c, "idle 1.5\n" .. ("x"):rep(32768),
                             function(g) return g:find("\n") end, 10 * SLOW)
        local used = cpu_seconds(srv.pid) - before
        assert.equal("END idle\n", got)
        assert.is_true(used < 0.3, ("%.2f s of CPU in a 1.5 s sleep")
                       :format(used))
    end)

    it("logs an over-long line with its limit and how to raise it",
       function()
        local got = talk(srv.port, "short 0", ("y"):rep(100000), 13)
        assert.equal("END too long\n", got)
        local log = helpers.wait_for(function()
            local l = srv:log()
            return l:find("line too long", 1, true) and l
        end, 5 * SLOW)
        assert.truthy(log, srv:log())
        assert.matches("line too long %(line framing, max 65536%)", log)
        assert.matches("max_frame", log)
    end)
end)

describe("stream-style request metrics", function()
    it("counts every frame a read returns and times it", function()
        local srv = op.start{ script = SCRIPT, announce = 2,
                              args = { "--metrics", "127.0.0.1:0" } }
        helpers.defer(function() srv:stop() end)
        local mport = srv.listening[2].port
        local m0 = stats(srv.port).messages
        local want = oks(3, 10)
        assert.equal(want, talk(srv.port, "fixed 0",
                                "10\n" .. body(1, 10) .. "10\n" ..
                                body(2, 10) .. "10\n" .. body(3, 10),
                                #want))
        -- the mode line, 3 lines and 3 bodies, and the second "stats"
        assert.truthy(helpers.wait_for(function()
            return stats(srv.port).messages - m0 == 8
        end, 5 * SLOW))
        local text = helpers.wait_for(function()
            local _, _, t = op.http_get(mport, "/metrics")
            local msgs = tonumber(t:match("\nluaserv_messages_total{[^}]*} (%d+)"))
            local count = tonumber(t:match(
                "\nluaserv_handler_duration_seconds_count{[^}]*} (%d+)"))
            return msgs and count and msgs >= 9 and count == msgs and t
        end, 5 * SLOW)
        assert.truthy(text, "no handler durations for stream reads")
    end)
end)

describe("examples under pipelined big requests", function()
    local resp = helpers.resp

    it("resp.lua answers ten pipelined 300 KB SETs", function()
        local srv = helpers.serve{ script = "examples/resp.lua" }
        local cmds = {}
        for i = 1, 10 do cmds[i] = resp("SET", "k" .. i, body(i, 300000)) end
        local c = helpers.connect(srv.port, 5)
        helpers.close_at_end({ c })
        local got = exchange(c, table.concat(cmds), function(g)
            return #g >= 50
        end, 15 * SLOW)
        assert.equal(("+OK\r\n"):rep(10), got)
        assert.equal(#body(7, 300000) + 2,
                     #exchange(c, resp("GET", "k7"), function(g)
                         return #g >= 300000 + 10
                     end, 10 * SLOW) - #"$300000\r\n")
    end)

    it("resp.lua answers two 200,000-byte SETs and stops at once",
       function()
        local srv = helpers.start_server{ script = "examples/resp.lua" }
        local c = helpers.connect(srv.port, 5)
        helpers.close_at_end({ c })
        local got = exchange(c, resp("SET", "a", body(1, 200000)) ..
                                resp("SET", "b", body(2, 200000)),
                             function(g) return #g >= 10 end, 10 * SLOW)
        assert.equal("+OK\r\n+OK\r\n", got)
        local t0 = helpers.now()
        assert.equal(0, srv:stop("TERM", 15))
        assert.is_true(helpers.now() - t0 < 5, "stop took too long")
    end)

    it("http.lua answers three pipelined 300 KB POST /echo", function()
        local srv = helpers.serve{ script = "examples/http.lua" }
        local reqs = {}
        for i = 1, 3 do
            reqs[i] = "POST /echo HTTP/1.1\r\nHost: x\r\n" ..
                      "Content-Length: 300000\r\n\r\n" .. body(i, 300000)
        end
        -- complete responses at the start of got
        local function complete(got)
            local n, pos = 0, 1
            while true do
                local e = got:find("\r\n\r\n", pos, true)
                if not e then return n end
                local len = tonumber(got:sub(pos, e):match(
                    "[Cc]ontent%-[Ll]ength: (%d+)"))
                if not len or #got < e + 3 + len then return n end
                n, pos = n + 1, e + 4 + len
            end
        end
        local c = helpers.connect(srv.port, 5)
        helpers.close_at_end({ c })
        local got = exchange(c, table.concat(reqs), function(g)
            return complete(g) >= 3
        end, 15 * SLOW)
        assert.equal(3, complete(got))
        assert.equal(3, helpers.count(got, "HTTP/1.1 200"))
        assert.truthy(got:find(body(3, 300000), 1, true))
    end)
end)

describe("callback-style truncated frames", function()
    it("logs a frame cut off at end of stream at info", function()
        local srv = helpers.serve{ source = [[
            return { framing = { "fixed", 10 },
                     on_message = function(_, m) return "got " .. m .. "\n" end }
        ]] }
        local c = helpers.connect(srv.port, 5)
        assert(c:send(("z"):rep(15)))
        c:shutdown("send")
        assert.equal("got zzzzzzzzzz", c:receive("*l"))
        c:close()
        local log = helpers.wait_for(function()
            local l = srv:log()
            return l:find("cut off", 1, true) and l
        end, 5 * SLOW)
        assert.truthy(log, srv:log())
        assert.matches("info.*peer 127%.0%.0%.1:%d+.*5 bytes", log)
    end)
end)

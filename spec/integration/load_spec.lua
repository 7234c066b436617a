-- luaserv under load: many connections at once, a peer that never reads,
-- a long pipeline on one connection, and a busy peer beside a quiet one.
local helpers = require "helpers"
local socket = require "socket"

local CTIME = helpers.CTIME
local SCRIPT = "scripts/handle.lua"
local STATS = "spec/fixtures/timestamp_stats.lua"
local SLOW = "spec/fixtures/slow_timestamp.lua"
local BIG = "spec/fixtures/big_replies.lua"
local SLOWDOWN = helpers.sanitize and 3 or 1
local TIMEOUT = 10 * SLOWDOWN
-- how long a reply may take while another peer keeps the server busy
local LATENCY = helpers.sanitize and 2 or 1
local KIB_PER_MIB = 1024

-- The soft limit on open files of this process (inherited by sh).
local function fd_limit()
    local p = assert(io.popen("ulimit -n"))
    local s = p:read("l")
    p:close()
    return s == "unlimited" and math.huge or tonumber(s) or 0
end

-- Asks a timestamp_stats server for its counters: active, total.
local function server_stats(port)
    local c = helpers.connect(port, TIMEOUT)
    assert(c:send("stats\n"))
    local line = assert(c:receive("*l"))
    c:close()
    local active, total = line:match("^active=(%d+) total=(%d+)$")
    return tonumber(active), tonumber(total)
end

describe("1000 concurrent connections", function()
    local N = 1000

    it("each get the reply to their own line", function()
        assert(fd_limit() >= N + 100,
               "this spec needs ulimit -n of at least " .. (N + 100))
        local srv = helpers.start_server{ script = STATS }
        local conns = {}
        helpers.close_at_end(conns)
        for i = 1, N do
            conns[i] = helpers.connect(srv.port, TIMEOUT)
        end
        for i, c in ipairs(conns) do
            assert(c:send(("conn %d says hi\r\n"):format(i)))
        end
        local wrong = {}
        for i, c in ipairs(conns) do
            local reply, err = helpers.read_line(c)
            if not (reply and reply:match("^" .. CTIME .. "conn " .. i ..
                                          " says hi\r\n$")) then
                wrong[#wrong + 1] = ("%d: %s"):format(i, reply or err)
            end
        end
        assert.same({}, wrong)
        local active, total = server_stats(srv.port)
        assert.equal(N + 1, active)
        assert.equal(N + 1, total)
        for i, c in ipairs(conns) do
            c:close()
            conns[i] = nil
        end
        -- every connection is gone from the server, not just from us
        local settled = helpers.wait_for(function()
            return server_stats(srv.port) == 1
        end, TIMEOUT)
        assert.truthy(settled, "connections still active after close")
        assert.equal(0, srv:stop())
    end)
end)

describe("a peer that writes without reading", function()
    it("cannot grow server memory past a bound", function()
        local bound = 64 * KIB_PER_MIB * SLOWDOWN
        local srv, hog = helpers.start_and_connect({ script = SCRIPT }, TIMEOUT)
        hog:settimeout(0)
        local chunk = (("x"):rep(1000) .. "\n"):rep(64)
        local pos, sent, max_rss = 1, 0, 0
        local start = socket.gettime()
        local progress = start
        -- push until 100 MB went out, the socket stalls 2 s, or 60 s pass
        while sent < 100e6 and socket.gettime() - progress < 2 and
              socket.gettime() - start < 60 do
            local last, _, partial = hog:send(chunk, pos)
            last = last or partial
            if last and last >= pos then
                sent = sent + (last - pos + 1)
                progress = socket.gettime()
                pos = last + 1
                if pos > #chunk then pos = 1 end
            else
                socket.sleep(0.01)
            end
            max_rss = math.max(max_rss, srv:rss_kib() or 0)
        end
        assert.is_true(srv:alive())
        assert.is_true(max_rss < bound,
                       ("server RSS reached %d KiB (bound %d KiB) after %d " ..
                        "bytes were pushed"):format(max_rss, bound, sent))
        assert.is_true(sent < 100e6, "the server read 100 MB of a peer " ..
                       "that never reads its replies")

        -- meanwhile another client is served as usual
        local c = helpers.connect(srv.port, TIMEOUT)
        assert(c:send("anyone there?\n"))
        assert.matches("^" .. CTIME .. "anyone there%?$",
                       assert(c:receive("*l")))
        c:close()

        -- and after the hog leaves, too
        hog:close()
        c = helpers.connect(srv.port, TIMEOUT)
        assert(c:send("after\n"))
        assert.matches("^" .. CTIME .. "after$", assert(c:receive("*l")))
        c:close()
        assert.equal(0, srv:stop())
    end)
end)

describe("a pipelining client", function()
    it("gets 10,000 lines sent in one write answered in order", function()
        local N = 10000
        local srv = helpers.start_server{ script = SCRIPT }
        local c = helpers.connect(srv.port, TIMEOUT)
        assert(c:send(helpers.numbered_lines("pipelined %d\n", N)))
        local wrong, first_wrong = 0, nil
        for i = 1, N do
            local reply, err = c:receive("*l")
            if not reply then
                wrong = wrong + (N - i + 1)
                first_wrong = first_wrong or ("%d: %s"):format(i, err)
                break
            end
            if not reply:match("^" .. CTIME .. "pipelined " .. i .. "$") then
                wrong = wrong + 1
                first_wrong = first_wrong or ("%d: %s"):format(i, reply)
            end
        end
        c:close()
        assert.equal(0, wrong, first_wrong)
        assert.equal(0, srv:stop())
    end)

    it("gets every reply when they pass --high-water on the way", function()
        -- 1000 replies of ~40 bytes queue far more than 1 KiB: reading
        -- pauses and resumes many times
        local N = 1000
        local srv, c = helpers.start_and_connect({
            script = SCRIPT, args = { "--high-water", "1024" } }, TIMEOUT)
        assert(c:send(helpers.numbered_lines("pipelined %d\n", N)))
        for i = 1, N do
            local reply, err = c:receive("*l")
            assert(reply, ("reply %d of %d: %s"):format(i, N, err))
            assert.matches("^" .. CTIME .. "pipelined " .. i .. "$", reply)
        end
        assert.equal(0, srv:stop())
    end)

    it("gets every reply when they are bigger than the socket buffers",
       function()
        -- big_replies answers each line with 64 KiB: 200 lines make 13 MB
        local N = 200
        local srv, c = helpers.start_and_connect({ script = BIG }, TIMEOUT)
        assert(c:send(helpers.numbered_lines("big %d\n", N)))
        for i = 1, N do
            local reply, err = c:receive("*l")
            assert(reply, ("reply %d of %d: %s"):format(i, N, err))
            assert.equal("big " .. i .. " " .. ("x"):rep(65536), reply)
        end
        assert.equal(0, srv:stop())
    end)

    it("does not hold up the replies of another client", function()
        -- slow_timestamp spends 0.5 ms a line: 10,000 lines keep it busy
        -- for 5 s
        local N = 10000
        local srv, busy = helpers.start_and_connect({ script = SLOW },
                                                    30 * SLOWDOWN)
        assert(busy:send(helpers.numbered_lines("busy %d\n", N)))
        socket.sleep(0.05)
        local start = socket.gettime()
        local quiet = helpers.connect(srv.port, 30 * SLOWDOWN)
        assert(quiet:send("quick one\n"))
        local reply = assert(quiet:receive("*l"))
        local waited = socket.gettime() - start
        quiet:close()
        assert.matches("^" .. CTIME .. "quick one$", reply)
        assert.is_true(waited < LATENCY,
                       ("the quiet client waited %.2f s"):format(waited))
        busy:close()   -- unread replies: a reset ends its work at once
        assert.equal(0, srv:stop())
    end)

    it("gets its first replies before the whole pipeline is done", function()
        local N = 10000
        local srv, c = helpers.start_and_connect({ script = SLOW },
                                                 30 * SLOWDOWN)
        local input = helpers.numbered_lines("busy %d\n", N)
        local start = socket.gettime()
        assert(c:send(input))
        local first = assert(c:receive("*l"))
        local waited = socket.gettime() - start
        assert.matches("^" .. CTIME .. "busy 1$", first)
        assert.is_true(waited < LATENCY,
                       ("the first reply took %.2f s"):format(waited))
        for i = 2, 100 do
            assert.matches("^" .. CTIME .. "busy " .. i .. "$",
                           assert(c:receive("*l")))
        end
        c:close()   -- unread replies: a reset ends its work at once
        assert.equal(0, srv:stop())
    end)
end)

-- Datagram listeners: a graceful stop answers the datagrams the socket
-- already holds; rcvbuf and sndbuf are settable per listener (config
-- listen{}) and by flag (--rcvbuf, --sndbuf); datagrams the kernel drops
-- for a full receive buffer are counted (SO_RXQ_OVFL) in luaserv.stats(),
-- admin stats and luaserv_udp_drops_total, and logged.
local helpers = require "helpers"
local socket = require "socket"

-- "block" keeps the loop busy for 0.5 s of CPU, so whatever arrives
-- meanwhile queues in the socket (the servers here get a long
-- --handler-timeout: on a loaded machine that CPU can take over a
-- second); "stats" answers the drop counters; "q..." gets no
-- answer; anything else is echoed.
local SCRIPT = [==[
local luaserv = require "luaserv"
local core = require "luaserv.core"
return {
    on_message = function(_, msg)
        if msg == "block" then
            local t = os.clock() + 0.5
            while os.clock() < t do end
            return "blocked"
        elseif msg == "stats" then
            local metric = core.metrics():match("luaserv_udp_drops_total{[^\n]*")
            local l = core.listeners()[1]
            return ("drops=%d listener=%d metric=%s datagrams=%d"):format(
                luaserv.stats().udp_drops, l.udp_drops, metric,
                luaserv.stats().datagrams)
        elseif msg == "stop" then
            core.shutdown()
            return "stopping"
        elseif msg:sub(1, 1) == "q" then
            return nil      -- counted, not answered
        end
        return msg
    end,
}
]==]

local function client()
    local c = assert(socket.udp())
    assert(c:setsockname("127.0.0.1", 0))
    c:settimeout(5)
    return c
end

-- Receives replies until none comes for `quiet` seconds; returns a set.
local function replies(c, quiet)
    local got, n = {}, 0
    c:settimeout(quiet)
    for _ = 1, 100000 do
        local r = c:receive()
        if not r then break end
        if not got[r] then n = n + 1 end
        got[r] = true
    end
    return got, n
end

local function start(opts)
    opts.args = opts.args or {}
    table.insert(opts.args, 1, "--handler-timeout")
    table.insert(opts.args, 2, "30")
    opts.source = opts.source or SCRIPT
    opts.listen = opts.listen or { "udp://127.0.0.1:0" }
    return helpers.start_server(opts)
end

describe("datagram listeners", function()
    it("answer every datagram queued when SIGTERM arrives", function()
        local srv = start{}
        local c = client()
        assert(c:sendto("block", "127.0.0.1", srv.port))
        helpers.wait_read(srv.port, nil, "udp")   -- the loop is blocked
        for i = 1, 200 do assert(c:sendto("d" .. i, "127.0.0.1", srv.port)) end
        os.execute("kill -TERM " .. srv.pid)   -- while the loop is busy
        local got, n = replies(c, 3)
        assert.truthy(got.blocked)
        local missing = {}
        for i = 1, 200 do
            if not got["d" .. i] then missing[#missing + 1] = i end
        end
        assert.equal(201, n, "missing: " .. table.concat(missing, " "))
        assert.equal(0, srv:wait())
    end)

    it("answer every queued datagram when a handler calls core.shutdown()",
       function()
        -- The stop drained and closed the listener under the batch that
        -- was running: 1 reply of 16, "Bad file descriptor" for the rest.
        local srv = start{}
        local c = client()
        assert(c:sendto("block", "127.0.0.1", srv.port))
        helpers.wait_read(srv.port, nil, "udp")   -- the loop is blocked
        for i = 1, 16 do
            local msg = i == 6 and "stop" or "d" .. i
            assert(c:sendto(msg, "127.0.0.1", srv.port))
        end
        local got, n = replies(c, 3)
        assert.equal(17, n)
        assert.truthy(got.stopping)
        assert.equal(0, srv:wait())
        assert.falsy(srv:log():find("Bad file descriptor", 1, true), srv:log())
    end)

    it("count, report and log the datagrams the kernel drops", function()
        local srv = start{ args = { "--rcvbuf", "4096" } }
        local c = client()
        assert(c:sendto("block", "127.0.0.1", srv.port))
        helpers.wait_read(srv.port, nil, "udp")   -- the loop is blocked
        for i = 1, 300 do assert(c:sendto("d" .. i, "127.0.0.1", srv.port)) end
        local _, n = replies(c, 3)
        assert.is_true(n < 200, n .. " answered")
        -- drops are reported with the next datagram received
        assert(c:sendto("stats", "127.0.0.1", srv.port))
        c:settimeout(5)
        local r = assert(c:receive())
        local drops, per, metric = r:match("^drops=(%d+) listener=(%d+) metric=(.*) datagrams")
        assert.truthy(drops, r)
        drops = tonumber(drops)
        assert.is_true(drops >= 300 - n, r)
        assert.equal(drops, tonumber(per))
        assert.equal(('luaserv_udp_drops_total{listener="udp://127.0.0.1:%d"} %d')
                     :format(srv.port, drops), metric)
        assert.truthy(srv:log():find("the kernel dropped %d+ datagrams"), srv:log())
        assert.equal(0, srv:stop())
    end)

    it("take rcvbuf from the config's listen{} and lose nothing", function()
        local script = helpers.write_file(helpers.tmpname(".lua"), SCRIPT)
        local cfg = helpers.write_file(helpers.tmpname(".conf"), ([[
            listen { "udp://127.0.0.1:0", handler = %q, rcvbuf = 8388608,
                     sndbuf = 1048576 }
        ]]):format(script))
        local srv = helpers.start_server{ listen = {}, args = { "-c", cfg },
                                          expect_ready = false }
        assert.truthy(helpers.wait_for(function()
            return srv:log():match("listening on udp [%d.]+:(%d+)")
        end, 10), srv:log())
        local port = tonumber(srv:log():match("listening on udp [%d.]+:(%d+)"))
        local c = client()
        assert(c:sendto("block", "127.0.0.1", port))
        helpers.wait_read(port, nil, "udp")       -- the loop is blocked
        -- unanswered, so that the client's own buffer cannot overflow
        for i = 1, 3000 do assert(c:sendto("q" .. i, "127.0.0.1", port)) end
        assert.equal("blocked", c:receive())
        assert(c:sendto("stats", "127.0.0.1", port))
        local r = assert(c:receive())
        assert.matches("^drops=0 ", r)
        assert.matches(" datagrams=3002$", r)     -- block, 3000 and stats
        assert.equal(0, srv:stop())
    end)

    it("refuse rcvbuf on a stream listener in the config", function()
        local cfg = helpers.write_file(helpers.tmpname(".conf"),
            'listen { "tcp://127.0.0.1:0", handler = "scripts/handle.lua", '
            .. 'rcvbuf = 65536 }\n')
        local rc, out = helpers.run(helpers.luaserv, "-c " .. helpers.shell_quote(cfg))
        assert.equal(2, rc, out)
        assert.truthy(out:find("rcvbuf applies to udp:// and unixgram:", 1, true), out)
    end)
end)

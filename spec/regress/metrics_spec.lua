-- The metrics endpoint and luaserv.metrics, issue 8: HEAD got a body; a
-- client trickling header lines held a connection forever (the 30 s limit
-- was per line); the process_* metrics and luaserv_build_info were
-- missing; a counter without _total and counter:inc(labels, n) (which
-- counted 1) were accepted silently.
local helpers = require "helpers"
local op = require "fixtures.operations_util"

local SLOW = op.SLOW

-- A server with a metrics endpoint and a handler that answers each line
-- with the outcome of running it as Lua against luaserv.metrics ("ok" or
-- "error: ..."), so the spec can try the metric API's argument rules.
local SOURCE = [[
local luaserv = require "luaserv"
local metrics = luaserv.metrics
local hits = metrics.counter("rg_hits_total", "Hits.")
local depth = metrics.gauge("rg_depth", "Depth.")
local took = metrics.histogram("rg_seconds", "Time.", { 0.5, 1 })
local env = { metrics = metrics, hits = hits, depth = depth, took = took }
return {
    on_message = function(_, line)
        local fn = assert(load(line, "=probe", "t", env))
        local ok, err = pcall(fn)
        return ok and "ok\n" or ("error: " .. tostring(err) .. "\n")
    end,
}
]]

local function start()
    local srv = op.start{ source = SOURCE, args = { "--metrics", "127.0.0.1:0" },
                          announce = 2 }
    return srv, srv.listening[1].port, op.find(srv.listening, "tcp", 1).port
end

-- Reads an HTTP response head from c: status line and the headers (lower
-- case names), or nil, err.
local function read_head(c)
    local status, err = c:receive("*l")
    if not status then return nil, err end
    local headers = {}
    while true do
        local line = assert(c:receive("*l"))
        if line == "" then break end
        local k, v = line:match("^([^:]+):%s*(.*)$")
        headers[k:lower()] = v
    end
    return status, headers
end

describe("the metrics endpoint", function()
    it("answers HEAD with the headers of GET and no body", function()
        local _, _, mport = start()
        local c = helpers.connect(mport, 10 * SLOW)
        helpers.close_at_end({ c })
        assert(c:send("HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
        local status, h = read_head(c)
        assert.equal("HTTP/1.1 200 OK", status)
        assert.is_true(tonumber(h["content-length"]) > 1000)
        -- Then a GET on the same connection: its status line must come
        -- next, with no stray body in front of it.
        assert(c:send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
        local status2, h2 = read_head(c)
        assert.equal("HTTP/1.1 200 OK", status2)
        local body = assert(c:receive(tonumber(h2["content-length"])))
        assert.truthy(body:find("# TYPE luaserv_connections_total counter", 1, true))
        -- HEAD of an unknown path: a 404 head, and again no body.
        assert(c:send("HEAD /nope HTTP/1.1\r\n\r\nHEAD /metrics HTTP/1.0\r\n\r\n"))
        assert.equal("HTTP/1.1 404 Not Found", (read_head(c)))
        assert.equal("HTTP/1.1 200 OK", (read_head(c)))
        c:settimeout(1)
        local rest, err, partial = c:receive("*a")
        assert.equal("", rest or partial, "bytes after a HEAD reply")
        assert.is_true(rest ~= nil or err == "closed", tostring(err))
    end)

    it("gives a whole request 30 s, however slowly its lines trickle in", function()
        local _, _, mport = start()
        local c = helpers.connect(mport, 5)
        helpers.close_at_end({ c })
        local t0 = helpers.now()
        assert(c:send("GET /metrics HTTP/1.1\r\n"))
        -- One header line every 2 s: each line is well inside any
        -- per-line limit; the request as a whole never ends.
        local closed_at
        for i = 1, 30 do
            helpers.sleep(2)
            local ok = c:send(("X-Slow-%d: y\r\n"):format(i))
            c:settimeout(0)
            local _, err = c:receive(1)
            c:settimeout(5)
            if not ok or err == "closed" then
                closed_at = helpers.now() - t0
                break
            end
        end
        assert.is_not_nil(closed_at, "a slowloris client kept its connection 60 s")
        io.stderr:write(("# slowloris held %.1f s\n"):format(closed_at))
        assert.is_true(closed_at >= 29 and closed_at < 36 * SLOW, closed_at)
    end)

    it("exports the process_* metrics and luaserv_build_info", function()
        local srv, _, mport = start()
        local code, _, body = op.http_get(mport, "/metrics")
        assert.equal(200, code)
        for _, f in ipairs({ "process_cpu_seconds_total counter",
                             "process_open_fds gauge", "process_max_fds gauge",
                             "process_virtual_memory_bytes gauge",
                             "process_resident_memory_bytes gauge",
                             "process_start_time_seconds gauge",
                             "luaserv_build_info gauge" }) do
            assert.truthy(body:find("# TYPE " .. f .. "\n", 1, true), f)
        end
        -- The values are this process's, as /proc shows it from outside.
        local stat = helpers.read_file("/proc/" .. srv.pid .. "/status")
        local rss = tonumber(stat:match("VmRSS:%s*(%d+) kB")) * 1024
        local vsz = tonumber(stat:match("VmSize:%s*(%d+) kB")) * 1024
        local got_rss = op.sample(body, "process_resident_memory_bytes")
        assert.is_true(math.abs(got_rss - rss) < 0.5 * rss, got_rss .. " vs " .. rss)
        assert.is_true(math.abs(op.sample(body, "process_virtual_memory_bytes") - vsz)
                       < 0.2 * vsz)
        local fds = 0
        for _ in io.popen("ls /proc/" .. srv.pid .. "/fd"):lines() do fds = fds + 1 end
        assert.is_true(math.abs(op.sample(body, "process_open_fds") - fds) <= 2)
        local limits = helpers.read_file("/proc/" .. srv.pid .. "/limits")
        assert.equal(tonumber(limits:match("Max open files%s+(%d+)")),
                     op.sample(body, "process_max_fds"))
        local start_t = op.sample(body, "process_start_time_seconds")
        assert.is_true(math.abs(start_t - os.time()) < 30 * SLOW, start_t)
        assert.is_true(op.sample(body, "process_cpu_seconds_total") >= 0)
        local _, out = helpers.run(helpers.luaserv, "-V")
        local version = out:match("^luaserv (%S+)")
        assert.truthy(body:find('\nluaserv_build_info{version="' .. version
                                .. '",', 1, true), body)
    end)
end)

describe("luaserv.metrics", function()
    it("refuses a counter whose name does not end in _total", function()
        local _, port = start()
        local r = op.ask(port, 'metrics.counter("rg_hits", "x")')
        assert.truthy(r:find("^error: .*counter rg_hits: .*must end in _total"), r)
        assert.equal("ok", op.ask(port, 'metrics.counter("rg_more_total", "x")'))
    end)

    it("raises for labels before the number, and counts n the right way round", function()
        local _, port, mport = start()
        local r = op.ask(port, 'hits:inc({ kind = "a" }, 5)')
        assert.truthy(r:find("^error: probe:1: rg_hits_total:inc%(n, labels%): "
                             .. "the number comes first"), r)
        for _, bad in ipairs({ 'hits:inc("5")', 'depth:set({ a = "b" }, 2)',
                               'depth:dec({ a = "b" }, 2)', 'took:observe({}, 1)',
                               'hits:inc(1, "a")' }) do
            assert.truthy(op.ask(port, bad):find("^error: probe:1: "), bad)
        end
        assert.equal("ok", op.ask(port, 'hits:inc(5, { kind = "a" })'))
        assert.equal("ok", op.ask(port, 'hits:inc({ kind = "a" })'))
        assert.equal("ok", op.ask(port, 'hits:inc()'))
        assert.equal("ok", op.ask(port, 'depth:set(7, { a = "b" })'))
        local _, _, body = op.http_get(mport, "/metrics")
        assert.equal(6, op.sample(body, "rg_hits_total", 'kind="a"'), body)
        assert.equal(1, op.sample(body, "rg_hits_total"), body)
        assert.equal(7, op.sample(body, "rg_depth", 'a="b"'), body)
    end)
end)

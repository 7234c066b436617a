-- Health checks (issue 12): the metrics endpoint answers GET /healthz,
-- 200 "ok" while serving and 503 "draining" from the moment a stop or an
-- upgrade begins; --health HOST:PORT serves /healthz alone. The health
-- listeners stay open through a stop's drain, so a balancer's probe sees
-- 503 rather than a refused connect; --drain-delay keeps the server
-- serving that long after the stop signal, so the balancer takes the
-- instance out before its listeners close.
local helpers = require "helpers"
local op = require "fixtures.operations_util"

local FIXTURE = "spec/fixtures/health_handler.lua"
local SLOW = op.SLOW

-- Sends the raw request req to port and reads until the server closes
-- (or timeout); returns what came back.
local function raw(port, req, timeout)
    local c = helpers.connect(port, timeout or 5 * SLOW)
    helpers.close_at_end({ c })
    assert(c:send(req))
    local out = {}
    while true do
        local data, err, partial = c:receive(4096)
        data = data or partial
        if data and #data > 0 then out[#out + 1] = data end
        if err then break end
    end
    c:close()
    return table.concat(out)
end

-- The status code of GET path on port (nil when nothing answers).
local function code_of(port, path)
    return (op.http_get(port, path or "/healthz"))
end

-- Whether a TCP connect to port is refused.
local function refused(port)
    local socket = require "socket"
    local c = socket.tcp()
    c:settimeout(2 * SLOW)
    local ok = c:connect("127.0.0.1", port)
    c:close()
    return not ok
end

-- Starts FIXTURE with -l 127.0.0.1:0 and args; returns the server, its
-- data port, and the ports of the TCP listeners after it (in order).
local function start(args, opts)
    opts = opts or {}
    local srv = op.start({ script = FIXTURE, args = args, shell = opts.shell,
                           announce = 1 + (opts.extra or 1) })
    local ports = {}
    for i, l in ipairs(srv.listening) do
        if i > 1 and l.kind == "tcp" then ports[#ports + 1] = l.port end
    end
    return srv, srv.listening[1].port, ports
end

-- Sends srv SIGTERM and waits (5 * SLOW at most) for /healthz on hport to
-- answer 503, the drain's first sign; returns the time of the signal.
local function term_until_503(srv, hport)
    local t0 = helpers.now()
    os.execute("kill -TERM " .. srv.pid)
    assert.truthy(helpers.wait_for(function()
        return code_of(hport) == 503
    end, 5 * SLOW), "health did not turn 503")
    return t0
end

-- Starts FIXTURE with args, --health and a 30 s --drain-delay, sends
-- SIGTERM and, once /healthz answers 503, SIGINT: the server must exit 0
-- within wait seconds, less than 5 * SLOW after the second signal.
-- Returns the server, for more checks on its log.
local function assert_second_signal_stops(args, wait)
    local all = { table.unpack(args) }
    for _, a in ipairs({ "--health", "127.0.0.1:0", "--drain-delay", "30" }) do
        all[#all + 1] = a
    end
    local srv, _, p = start(all)
    term_until_503(srv, p[1])
    local t0 = helpers.now()
    os.execute("kill -INT " .. srv.pid)
    assert.equal(0, srv:wait(wait))
    assert.is_true(helpers.now() - t0 < 5 * SLOW)
    return srv
end

describe("GET /healthz on the metrics endpoint", function()
    it("answers 200 ok, and HEAD, with /metrics, 404 and 405 as before", function()
        local _, _, p = start({ "--metrics", "127.0.0.1:0" })
        local mport = p[1]
        local code, ctype, body = op.http_get(mport, "/healthz")
        assert.equal(200, code)
        assert.equal("ok\n", body)
        assert.matches("^text/plain", ctype)
        assert.equal(200, code_of(mport, "/healthz?verbose=1"))
        local head = raw(mport, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n"
                                .. "Connection: close\r\n\r\n")
        assert.matches("^HTTP/1.1 200 OK\r\n", head)
        assert.matches("\r\nContent%-Length: 3\r\n", head)
        assert.matches("\r\n\r\n$", head)       -- no body
        assert.equal(404, code_of(mport, "/healthzz"))
        assert.equal(404, code_of(mport, "/"))
        assert.equal(405, (op.http_get(mport, "/healthz", "POST")))
        local _, _, text = op.http_get(mport, "/metrics")
        assert.equal(0, op.sample(text, "luaserv_draining"))
        -- while serving, a probe's connection stays open for the next
        local two = raw(mport, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                               .. "GET /healthz HTTP/1.1\r\nHost: x\r\n"
                               .. "Connection: close\r\n\r\n")
        assert.equal(2, helpers.count(two, "HTTP/1.1 200 OK\r\n"))
    end)

    it("answers a request split at every byte, and HAProxy's HTTP/1.0 check", function()
        local _, _, p = start({ "--metrics", "127.0.0.1:0" })
        local req = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        local c = helpers.connect(p[1], 5 * SLOW)
        helpers.close_at_end({ c })
        c:setoption("tcp-nodelay", true)
        for i = 1, #req do
            assert(c:send(req:sub(i, i)))
            if i % 7 == 0 then helpers.sleep(0.001) end
        end
        local resp = helpers.read_to_close(c)
        assert.matches("^HTTP/1.1 200 OK\r\n.*\r\n\r\nok\n$", resp)
        resp = raw(p[1], "GET /healthz HTTP/1.0\r\n\r\n")
        assert.matches("^HTTP/1.1 200 OK\r\n.*\r\n\r\nok\n$", resp)
        assert.matches("^HTTP/1.1 400 ", raw(p[1], "\0\1garbage\r\n\r\n"))
    end)
end)

describe("--health HOST:PORT", function()
    it("serves /healthz alone: /metrics is not there", function()
        local _, dport, p = start({ "--health", "127.0.0.1:0" })
        local code, _, body = op.http_get(p[1], "/healthz")
        assert.equal(200, code)
        assert.equal("ok\n", body)
        code, _, body = op.http_get(p[1], "/metrics")
        assert.equal(404, code)
        assert.equal("try /healthz\n", body)
        assert.equal("echo hi", (op.ask(dport, "hi")))
    end)

    it("comes from the configuration file, as an assignment or a call", function()
        for _, form in ipairs({ 'health = "127.0.0.1:0"', 'health "127.0.0.1:0"' }) do
            local cfg = helpers.write_file(helpers.tmpname(".lua"),
                'listen { "127.0.0.1:0", handler = "' .. FIXTURE .. '" }\n'
                .. form .. "\n")
            local srv = op.start({ args = { "-c", cfg }, listen = {}, announce = 2 })
            assert.equal(200, code_of(srv.listening[2].port), form)
            assert.equal(404, code_of(srv.listening[2].port, "/metrics"), form)
            assert.equal(0, srv:stop())
        end
    end)

    it("refuses an address that is not TCP", function()
        local status, _, err = op.run(helpers.luaserv, "--health unix:"
            .. helpers.shell_quote(op.sock_path()) .. " -l 127.0.0.1:0 " .. FIXTURE)
        assert.is_not.equal(0, status)
        assert.matches("--health must be a TCP address", err, 1, true)
    end)
end)

describe("draining", function()
    it("with --drain-delay: 503 at once, served for the delay, then the stop", function()
        local delay = 2.5 * SLOW   -- room for the checks below under load
        local srv, dport, p = start({ "--metrics", "127.0.0.1:0",
                                      "--health", "127.0.0.1:0",
                                      "--drain-delay", tostring(delay) },
                                    { extra = 2 })
        local mport, hport = p[1], p[2]
        assert.equal(200, code_of(hport))
        local t0 = term_until_503(srv, hport)
        local _, _, body = op.http_get(hport, "/healthz")
        assert.equal("draining\n", body)
        assert.equal(503, code_of(mport))
        local _, _, text = op.http_get(mport, "/metrics")
        assert.equal(1, op.sample(text, "luaserv_draining"))
        -- a 503 answer closes its connection, even one meant to be kept
        local resp = raw(hport, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert.matches("^HTTP/1.1 503 Service Unavailable\r\n", resp)
        assert.matches("\r\nConnection: close\r\n", resp)
        -- new connections are still served during the delay
        assert.equal("echo during", (op.ask(dport, "during")))
        assert.equal("true", (op.ask(dport, "draining")))
        -- work in flight when the delay ends holds the stop
        local slow = helpers.connect(dport, 10 * SLOW)
        helpers.close_at_end({ slow })
        assert(slow:send("slow " .. (delay + 2 * SLOW) .. "\n"))
        assert.truthy(helpers.wait_for(function() return refused(dport) end,
                                       5 * SLOW), "the data listener stayed open")
        assert.is_true(helpers.now() - t0 >= delay * 0.9,
                       "closed before the delay: " .. (helpers.now() - t0))
        -- the stop is under way: health still answers, 503
        assert.is_true(srv:alive())
        assert.equal(503, code_of(hport))
        assert.equal(503, code_of(mport))
        assert.equal("slow done", (slow:receive("*l")))
        assert.equal(0, srv:wait(10 * SLOW))
        assert.matches("drain delay over", srv:log(), 1, true)
    end)

    it("without a delay: the health listeners stay open through the drain", function()
        local srv, dport, p = start({ "--health", "127.0.0.1:0" })
        local slow = helpers.connect(dport, 10 * SLOW)
        helpers.close_at_end({ slow })
        assert(slow:send("slow " .. (1.5 * SLOW) .. "\n"))
        helpers.sleep(0.2)
        os.execute("kill -TERM " .. srv.pid)
        assert.truthy(helpers.wait_for(function() return refused(dport) end,
                                       5 * SLOW))
        assert.equal(503, code_of(p[1]))
        assert.equal("slow done", (slow:receive("*l")))
        assert.equal(0, srv:wait(10 * SLOW))
        assert.is_true(refused(p[1]))   -- closed at the exit
    end)

    it("does not wait for a probe's idle keep-alive connection", function()
        local srv, _, p = start({ "--metrics", "127.0.0.1:0",
                                  "--shutdown-timeout", "20" })
        local c = helpers.connect(p[1], 5 * SLOW)
        helpers.close_at_end({ c })
        assert(c:send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
        assert.equal("HTTP/1.1 200 OK", (c:receive("*l")))
        local t0 = helpers.now()
        assert.equal(0, srv:stop("TERM", 10 * SLOW))
        assert.is_true(helpers.now() - t0 < 5 * SLOW,
                       "the stop waited " .. (helpers.now() - t0) .. " s")
    end)

    it("stops at once on a second signal during the delay", function()
        local srv = assert_second_signal_stops({}, 10 * SLOW)
        assert.matches("again: closing now", srv:log(), 1, true)
    end)

    it("drains the same way on the admin socket's shutdown", function()
        local path = op.sock_path()
        local srv, dport, p = start({ "--admin", "unix:" .. path,
                                      "--health", "127.0.0.1:0",
                                      "--drain-delay", tostring(SLOW) },
                                    { extra = 2 })
        local hport = p[1]
        assert.equal(200, code_of(hport))
        op.admin(path):ok("shutdown")
        assert.truthy(helpers.wait_for(function()
            return code_of(hport) == 503
        end, 5 * SLOW))
        assert.equal("echo still", (op.ask(dport, "still")))
        assert.equal(0, srv:wait(10 * SLOW))
    end)
end)

describe("--workers 2", function()
    it("the master answers 503 at the stop; the workers serve through the delay", function()
        local delay = 2.5 * SLOW   -- room for the checks below under load
        local srv, dport, p = start({ "--workers", "2", "--health", "127.0.0.1:0",
                                      "--metrics", "127.0.0.1:0",
                                      "--drain-delay", tostring(delay) },
                                    { extra = 2 })
        local mport, hport = p[1], p[2]   -- metrics comes first
        assert.equal(200, code_of(hport))
        assert.equal("echo w", (op.ask(dport, "w")))
        for _ = 1, 6 do assert.equal("false", (op.ask(dport, "draining"))) end
        local t0 = term_until_503(srv, hport)
        -- one luaserv_draining, the master's, beside the workers' merged
        local _, _, text = op.http_get(mport, "/metrics")
        assert.equal(1, helpers.count(text, "# TYPE luaserv_draining gauge"))
        assert.equal(1, op.sample(text, "luaserv_draining"))
        assert.equal("echo during", (op.ask(dport, "during")))
        -- every worker's handlers see the master's drain
        for _ = 1, 6 do assert.equal("true", (op.ask(dport, "draining"))) end
        local slow = helpers.connect(dport, 10 * SLOW)
        helpers.close_at_end({ slow })
        assert(slow:send("slow " .. (delay + 2 * SLOW) .. "\n"))
        assert.truthy(helpers.wait_for(function() return refused(dport) end,
                                       5 * SLOW), "the workers kept accepting")
        assert.is_true(helpers.now() - t0 >= delay * 0.9)
        -- the master serves health until it exits, after its workers
        assert.equal(503, code_of(hport))
        assert.equal("slow done", (slow:receive("*l")))
        assert.equal(0, srv:wait(15 * SLOW))
        assert.matches(("stopping 2 workers in %.1f s"):format(delay), srv:log(),
                       1, true)
    end)

    it("stops its workers at once on a second signal during the delay", function()
        assert_second_signal_stops({ "--workers", "2" }, 15 * SLOW)
    end)
end)

describe("an upgrade (SIGUSR2)", function()
    it("answers 503 from the old generation once it begins, 200 from the new", function()
        local hold, shell, new = helpers.hold_upgrade()
        local srv, dport, p = start({ "--health", "127.0.0.1:0" },
                                    { shell = shell })
        local hport = p[1]
        assert.equal(200, code_of(hport))
        local oldpid = tonumber((op.ask(dport, "pid")))
        assert.equal(srv.pid, oldpid)
        -- the new generation waits in on_load while the file exists
        helpers.write_file(hold, "")
        os.execute("kill -USR2 " .. srv.pid)
        assert.truthy(helpers.wait_for(function()
            return code_of(hport) == 503
        end, 5 * SLOW), "the old generation's health did not turn 503")
        assert.equal("true", (op.ask(dport, "draining")))
        local _, _, text = op.http_get(hport, "/healthz")
        assert.equal("draining\n", text)
        os.remove(hold)
        -- the new generation serves: 200, and its own pid answers
        assert.truthy(helpers.wait_for(function()
            return code_of(hport) == 200
        end, 10 * SLOW), "the new generation's health did not answer 200")
        assert.equal(0, srv:wait(15 * SLOW))
        new.pid = tonumber((op.ask(dport, "pid")))
        assert.is_not.equal(oldpid, new.pid)
        assert.equal("false", (op.ask(dport, "draining")))
        assert.equal(200, code_of(hport))
    end)

    it("answers 200 again when the upgrade fails", function()
        local hold = helpers.tmpname(".hold")
        local srv, dport, p = start({ "--health", "127.0.0.1:0",
                                      "--load-timeout", "1" },
            { shell = "HEALTH_HOLD_LOAD=" .. helpers.shell_quote(hold) .. " " })
        helpers.defer(function() os.remove(hold) end)
        local hport = p[1]
        helpers.write_file(hold, "")   -- the new one's on_load times out
        os.execute("kill -USR2 " .. srv.pid)
        assert.truthy(helpers.wait_for(function()
            return code_of(hport) == 503
        end, 5 * SLOW))
        assert.truthy(helpers.wait_until and helpers.wait_for(function()
            return srv:log():find("upgrade failed", 1, true)
        end, 20 * SLOW), "the upgrade did not fail:\n" .. srv:log())
        assert.equal(200, code_of(hport))
        assert.equal("false", (op.ask(dport, "draining")))
        assert.equal(0, srv:stop())
    end)
end)

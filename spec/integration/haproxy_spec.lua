-- A real haproxy (TCP mode, the PROXY protocol v2 and v1, HTTP health
-- checks on /healthz) and a real nginx (stream module, PROXY v1) in front
-- of two luaserv instances (spec/fixtures/lb_backend.lua), with the
-- configurations docs/scaling.md gives, read from it and run with only the
-- addresses changed. Asserted: the handler sees the spec client's own
-- address and port (the client binds 127.0.0.2, the balancer connects from
-- 127.0.0.1), both instances get traffic, and an instance stopped with
-- SIGTERM and --drain-delay is taken out (haproxy: through /healthz, before
-- its listener closes) while a client loop through the balancer sees no
-- error.
local helpers = require "helpers"
local balancer = require "balancer"

local TIMEOUT = helpers.sanitize and 30 or 15
local CLIENT_IP = "127.0.0.2"
local DRAIN = 5        -- --drain-delay: docs/scaling.md's value
local DOC = "docs/scaling.md"

-- What this build of luaserv supports, from its --help: the PROXY header
-- stage and the health endpoint with draining. A test needing a missing
-- one is pending and says which.
local features
local function missing()
    if not features then
        local _, help = helpers.run(helpers.luaserv, "--help")
        features = {
            proxy = help:find("--proxy-protocol", 1, true) ~= nil,
            health = help:find("--health", 1, true) ~= nil and
                     help:find("--drain-delay", 1, true) ~= nil,
        }
    end
    local why = {}
    if not features.proxy then
        why[#why + 1] = "luaserv has no --proxy-protocol (the PROXY header stage, h12-stage)"
    end
    if not features.health then
        why[#why + 1] = "luaserv has no --health/--drain-delay (h12-health)"
    end
    if #why > 0 then return table.concat(why, "; ") end
end

-- The fenced block of language lang in docs/scaling.md that holds needle.
local function doc_block(lang, needle)
    local text = assert(helpers.read_file(DOC))
    for body in text:gmatch("```" .. lang .. "\n(.-)```") do
        if body:find(needle, 1, true) then return body end
    end
    error(("no ```%s block with %q in %s"):format(lang, needle, DOC))
end

-- The instances' addresses in the docs' configurations, in server order.
local DOC_SERVERS = { "10.0.0.1:7000", "10.0.0.2:7000" }

-- Replaces the plain text from in text, exactly once.
local function replace_once(text, from, to)
    local i, j = text:find(from, 1, true)
    assert(i, ("%q is not in the documented configuration"):format(from))
    assert(not text:find(from, j + 1, true),
           ("%q is in the documented configuration twice"):format(from))
    return text:sub(1, i - 1) .. to .. text:sub(j + 1)
end

-- docs/scaling.md's HAProxy configuration for instances insts, with only
-- the addresses changed: the front socket is the inherited fd 3, each
-- server is an instance's data and health port on 127.0.0.1, the admin
-- socket is in haproxy's folder; with v1, send-proxy instead of -v2.
local function haproxy_config(insts, version)
    local cfg = doc_block("haproxy", "send-proxy-v2")
    cfg = replace_once(cfg, "bind :7000", "bind fd@3")
    cfg = replace_once(cfg, "/run/haproxy/admin.sock", "{{dir}}/admin.sock")
    for i, inst in ipairs(insts) do
        cfg = replace_once(cfg, DOC_SERVERS[i] .. " send-proxy-v2 check port 7001",
                           ("127.0.0.1:%d %s check port %d"):format(
                               inst.port,
                               version == 1 and "send-proxy" or "send-proxy-v2",
                               inst.health_port))
    end
    return cfg
end

-- docs/scaling.md's nginx stream block for insts, in a whole nginx.conf.
local function nginx_config(insts)
    local cfg = doc_block("nginx", "proxy_protocol on")
    cfg = replace_once(cfg, "listen 7000;", "listen 127.0.0.1:@PORT@;")
    for i, inst in ipairs(insts) do
        cfg = replace_once(cfg, "server " .. DOC_SERVERS[i],
                           "server 127.0.0.1:" .. inst.port)
    end
    return "load_module {{stream_module}};\n" ..
           "daemon off;\n" ..
           "pid {{dir}}/nginx.pid;\n" ..
           "error_log stderr notice;\n" ..
           "events { worker_connections 1024; }\n" .. cfg
end

-- Starts luaserv instance name (lb_backend.lua) with the PROXY protocol
-- on its listener, a --health endpoint and --drain-delay DRAIN. Returns
-- the server, .health_port set. Stopped (KILL) when the test ends.
local function instance(name, extra)
    local args = { "--proxy-protocol", "--health", "127.0.0.1:0",
                   "--drain-delay", tostring(DRAIN),
                   "--shutdown-timeout", "5" }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    local srv = helpers.start_server{
        script = "spec/fixtures/lb_backend.lua",
        listen = { "127.0.0.1:0" }, args = args,
        shell = "INSTANCE=" .. name .. " " }
    srv.name = name
    -- The health endpoint announces itself with a ready line of its own.
    local ready = helpers.wait_until(function()
        local r = helpers.ready(srv:log())
        return #r >= 2 and r
    end, 10, name .. "'s --health ready line")
    srv.health_port = tonumber(ready[2].addr:match(":(%d+)$"))
    return srv
end

-- GET /healthz on port: the status code and the body, or nil.
local function healthz(port)
    local status, out = helpers.sh(("curl -s -m 2 -w ' %%{http_code}' " ..
                                    "http://127.0.0.1:%d/healthz"):format(port))
    if status ~= 0 then return nil end
    local body, code = out:match("^(.-) (%d+)$")
    return tonumber(code), body
end

-- Asks "who" through the balancer at port from src (default CLIENT_IP).
-- Returns the answer's fields, and .client: the client's own address as
-- luaserv formats one ("127.0.0.2:40000", "[::1]:40000").
local function who_through(port, src)
    local c = assert(balancer.client(port, src or CLIENT_IP, TIMEOUT))
    helpers.close_at_end({ c })
    local ip, cport = c:getsockname()
    assert(c:send("who\n"))
    local f = balancer.fields(assert(c:receive("*l")))
    c:close()
    f.client = (ip:find(":", 1, true) and "[" .. ip .. "]" or ip) .. ":" .. cport
    return f
end

-- Sends n requests through the balancer, each on its own connection;
-- returns how many each instance answered and the errors.
local function spread(port, n)
    local count, errors = {}, {}
    for _ = 1, n do
        local reply, err = balancer.ask(port, "who", CLIENT_IP, TIMEOUT)
        if reply then
            local inst = balancer.fields(reply).instance
            count[inst] = (count[inst] or 0) + 1
        else
            errors[#errors + 1] = err
        end
    end
    return count, errors
end

-- Round robin over a and b: n answers, split about evenly (the health
-- checks and the balancer's own order may shift it by one or two).
local function assert_even(count, n)
    assert.equal(n, (count.a or 0) + (count.b or 0))
    assert.is_true(math.abs((count.a or 0) - (count.b or 0)) <= 2,
                   ("a answered %d, b %d"):format(count.a or 0, count.b or 0))
end

-- A persistent connection through the balancer at port that reached
-- instance a (round robin: a few tries); closed when the test ends.
local function hold(port, a)
    for _ = 1, 10 do
        local c = assert(balancer.client(port, CLIENT_IP, TIMEOUT))
        helpers.close_at_end({ c })
        assert(c:send("who\n"))
        local f = balancer.fields(assert(c:receive("*l")))
        if f.instance == a.name then return c end
        c:close()
    end
    error("no connection through the balancer reached " .. a.name)
end

-- The stop under traffic. A client loop asks "who" through the balancer
-- on a new connection every 20 ms while instance a gets SIGTERM and drains
-- (DRAIN seconds of 503 on /healthz, then its stop), until a has exited
-- and b answered a few more, bounded in time and count. On held, a
-- persistent connection to a opened before (see hold), a request sent
-- during the delay is still answered by a. is_down(), when given, says
-- whether the balancer has marked a down. Returns what was seen:
--   errors     the client loop's failed requests (each "connect: ..." or
--              "receive: ...")
--   after_down instances that answered after is_down() first held
--   down_at    loop time when is_down() first held (nil if never)
--   closed_at  loop time when a's listener was seen closed (its "stopping"
--              log line)
--   health     a's /healthz status code during the delay
--   held       the persistent connection's answer during the delay
--   status     a's exit status
local function stop_under_traffic(port, a, held_conn, is_down)
    local seen = { errors = {}, after_down = {}, replies = 0 }
    local t0 = helpers.now()
    os.execute("kill -TERM " .. a.pid)
    local deadline = t0 + DRAIN + TIMEOUT
    local after_exit = 0
    for _ = 1, 5000 do
        local now = helpers.now() - t0
        if now > deadline - t0 then break end
        if not seen.down_at and is_down and is_down() then seen.down_at = now end
        if not seen.closed_at and a:log():find("stopping: no new connections", 1, true) then
            seen.closed_at = now
        end
        if not seen.health and now > 0.3 then
            seen.health = healthz(a.health_port)
        end
        if not seen.held and now > 0.5 then
            -- a drains but serves its open connection meanwhile
            held_conn:send("who\n")
            seen.held = balancer.fields(held_conn:receive("*l") or "")
        end
        local reply, err = balancer.ask(port, "who", CLIENT_IP, TIMEOUT)
        if reply then
            seen.replies = seen.replies + 1
            if seen.down_at then
                seen.after_down[balancer.fields(reply).instance] = true
            end
        else
            seen.errors[#seen.errors + 1] = ("%.2f s: %s"):format(now, err)
        end
        if not a:alive() then
            after_exit = after_exit + 1
            if after_exit >= 20 then break end
        end
        helpers.sleep(0.02)
    end
    seen.status = a:wait(TIMEOUT)
    print(("\n# stop under traffic: %d requests, %d failed; marked down at "
           .. "%s, listener closed at %s (s after SIGTERM)")
          :format(seen.replies, #seen.errors,
                  seen.down_at and ("%.2f"):format(seen.down_at) or "-",
                  seen.closed_at and ("%.2f"):format(seen.closed_at) or "-"))
    return seen
end

-- Holds a connection to instance a through haproxy (hap), stops a under
-- traffic and checks what every drain through haproxy must show: no
-- client error, a clean exit, 503 on /healthz and the held connection
-- served during the delay, a marked DOWN before its listener closed and
-- only b answering after. Returns what stop_under_traffic saw, for more.
local function assert_drained_out(hap, a)
    local held = hold(hap.port, a)
    local seen = stop_under_traffic(hap.port, a, held, function()
        return (hap:stat("luaserv").app1 or ""):find("^DOWN") ~= nil
    end)
    assert.same({}, seen.errors)
    assert.equal(0, seen.status)
    assert.equal(503, seen.health)
    -- the open connection was served during the delay
    assert.equal("a", seen.held.instance)
    -- haproxy saw a's 503 and took it out while a still listened, and
    -- sent it nothing more
    assert.truthy(seen.down_at, "haproxy never marked a down")
    assert.truthy(seen.closed_at, "a never logged its stop")
    assert.is_true(seen.down_at < seen.closed_at,
        ("down at %.2f s, listener closed at %.2f s")
        :format(seen.down_at, seen.closed_at))
    assert.same({ b = true }, seen.after_down)
    return seen
end

if not balancer.have("haproxy") then
    describe("haproxy in front of luaserv", function()
        pending("haproxy is not installed: apt-get install haproxy")
    end)
else
    describe("haproxy in front of luaserv", function()
        for _, version in ipairs({ 2, 1 }) do
            local proxy_word = version == 2 and "send-proxy-v2" or "send-proxy"
            describe("with " .. proxy_word, function()
                local why = missing()
                if why then
                    pending(why)
                    return
                end

                -- Two instances and haproxy in front, both servers up.
                -- extra: more flags for both instances; host: where
                -- haproxy listens (default 127.0.0.1).
                local function setup(extra, host)
                    local a, b = instance("a", extra), instance("b", extra)
                    local hap = balancer.haproxy(haproxy_config({ a, b }, version),
                                                 nil, host)
                    hap:wait_state("luaserv", "app1", "^UP", TIMEOUT)
                    hap:wait_state("luaserv", "app2", "^UP", TIMEOUT)
                    helpers.wait_until(function()
                        local _, checks = hap:stat("luaserv")
                        return checks.app1 == "L7OK" and checks.app2 == "L7OK"
                    end, TIMEOUT, "both health checks to pass")
                    return a, b, hap
                end

                it("the handler sees the client's own address and port", function()
                    local a, _, hap = setup()
                    local seen = {}
                    for _ = 1, 4 do
                        local f = who_through(hap.port)
                        assert.equal(f.client, f.peer)
                        assert.equal(CLIENT_IP, f.peer_ip)
                        assert.equal(f.client:match(":(%d+)$"), f.peer_port)
                        assert.equal("127.0.0.1:" .. hap.port, f["local"])
                        assert.equal(tostring(version), f.proxy)
                        assert.equal("127.0.0.1", f.socket_peer:match("^(.*):%d+$"))
                        seen[f.instance] = true
                    end
                    assert.same({ a = true, b = true }, seen)
                    assert.equal(200, (healthz(a.health_port)))
                    -- USR1 is haproxy's graceful stop
                    assert.equal(0, hap:stop("USR1"))
                end)

                it("passes an IPv6 client's address", function()
                    local _, _, hap = setup(nil, "::1")
                    for _ = 1, 2 do
                        local f = who_through(hap.port, "::1")
                        assert.equal(f.client, f.peer)
                        assert.equal("::1", f.peer_ip)
                        assert.equal("[::1]:" .. hap.port, f["local"])
                        assert.equal(tostring(version), f.proxy)
                        assert.equal("127.0.0.1", f.socket_peer:match("^(.*):%d+$"))
                    end
                end)

                it("spreads connections over both instances", function()
                    local _, _, hap = setup()
                    local count, errors = spread(hap.port, 40)
                    assert.same({}, errors)
                    assert_even(count, 40)
                end)

                it("takes a draining instance out through /healthz before "
                   .. "its listener closes; the client sees no error", function()
                    local a, _, hap = setup()
                    local seen = assert_drained_out(hap, a)
                    assert.truthy(hap:log():find("luaserv/app1 is DOWN.-503"),
                                  hap:log())
                    assert.truthy(seen.replies > 50, "only " .. seen.replies ..
                                  " requests in the loop")
                end)

                it("does the same with --workers 2 instances", function()
                    local a, _, hap = setup({ "--workers", "2" })
                    local f = who_through(hap.port)
                    assert.equal(f.client, f.peer)
                    assert.equal(tostring(version), f.proxy)
                    assert_drained_out(hap, a)
                end)
            end)
        end
    end)
end

-- nginx's worker pids, from its log: "start worker process N" lines.
local function nginx_workers(ngx)
    local pids = {}
    for pid in ngx:log():gmatch("start worker process (%d+)") do
        pids[#pids + 1] = tonumber(pid)
    end
    return pids
end

describe("nginx stream in front of luaserv", function()
    local why = balancer.nginx_missing() or missing()
    if why then
        pending(why)
        return
    end

    -- Two instances and nginx in front with docs/scaling.md's stream block.
    local function setup()
        local a, b = instance("a"), instance("b")
        return a, b, balancer.nginx(nginx_config({ a, b }))
    end

    it("passes the client's address with proxy_protocol on and spreads "
       .. "connections over both instances", function()
        local _, _, ngx = setup()
        for _ = 1, 2 do
            local f = who_through(ngx.port)
            assert.equal(f.client, f.peer)
            assert.equal(CLIENT_IP, f.peer_ip)
            assert.equal("1", f.proxy)
            assert.equal("127.0.0.1:" .. ngx.port, f["local"])
            assert.equal("127.0.0.1", f.socket_peer:match("^(.*):%d+$"))
        end
        local count, errors = spread(ngx.port, 20)
        assert.same({}, errors)
        assert_even(count, 20)
        -- QUIT is nginx's graceful stop
        assert.equal(0, ngx:stop("QUIT"))
    end)

    it("passes a client to the other instance when one is gone "
       .. "(proxy_next_upstream, no active check)", function()
        local a, _, ngx = setup()
        a:stop("KILL")
        local count, errors = spread(ngx.port, 20)
        assert.same({}, errors)
        assert.same({ b = 20 }, count)
    end)

    it("drains an instance marked down and reloaded, with no client error",
       function()
        local a, _, ngx = setup()
        local held = hold(ngx.port, a)
        -- the documented planned stop: mark a down, reload nginx, then
        -- stop a; the old worker keeps the held connection to a
        local conf = ngx.dir .. "/nginx.conf"
        local text = assert(helpers.read_file(conf))
        helpers.write_file(conf, replace_once(text,
            "server 127.0.0.1:" .. a.port .. " ",
            "server 127.0.0.1:" .. a.port .. " down "))
        os.execute("kill -HUP " .. ngx.pid)
        helpers.wait_until(function() return #nginx_workers(ngx) >= 2 end,
                           TIMEOUT, "nginx's reload (a new worker)")
        local seen = stop_under_traffic(ngx.port, a, held)
        assert.same({}, seen.errors)
        assert.equal(0, seen.status)
        assert.equal(503, seen.health)
        assert.equal("a", seen.held.instance)
        assert.truthy(seen.replies > 50, "only " .. seen.replies ..
                      " requests in the loop")
    end)
end)

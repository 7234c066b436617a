-- examples/ratelimit.lua against a real redis-server: the fixed window
-- per client address, counts kept across connections, one count per
-- address, no lost hit under concurrent requests, Redis over TCP and a
-- unix socket, failing open when Redis is down, bad settings refused; then
-- two instances behind a real haproxy sharing one Redis's counts, with the
-- PROXY protocol (each client address counted on its own, whichever
-- instance answers) and without it (every client counted as the
-- balancer).
local helpers = require "helpers"
local balancer = require "balancer"

local TIMEOUT = helpers.sanitize and 30 or 15
local WINDOW = 3600

if not balancer.have("redis-server") then
    describe("examples/ratelimit.lua", function()
        pending("redis-server is not installed: apt-get install redis-server")
    end)
    return
end

-- Waits, when the current window ends within 5 s, until the next one
-- starts, so that a test's requests fall in one window.
local function same_window()
    local left = WINDOW - os.time() % WINDOW
    if left <= 5 then helpers.sleep(left + 0.1) end
end

-- The example with env (a table of NAME = value) served on 127.0.0.1:0,
-- plus args. Stopped when the test ends.
local function limiter(env, args, listen)
    local words = {}
    for k, v in pairs(env) do words[#words + 1] = k .. "=" .. helpers.shell_quote(v) end
    table.sort(words)
    return helpers.serve{ script = "examples/ratelimit.lua",
                          listen = listen, args = args,
                          shell = table.concat(words, " ") .. " " }
end

-- Sends n lines on one connection from src, returns the answers.
local function requests(port, n, src)
    local c = assert(balancer.client(port, src, TIMEOUT))
    helpers.close_at_end({ c })
    local out = {}
    for i = 1, n do
        assert(c:send("req\n"))
        out[i] = assert(c:receive("*l"))
    end
    c:close()
    return out
end

-- One request on a new connection from src; the answer.
local function one(port, src)
    local reply, err = balancer.ask(port, "req", src, TIMEOUT)
    assert(reply, err)
    return reply
end

-- The key the example counts ip's requests under in this window.
local function key_of(ip)
    return ("ratelimit:%s:%d"):format(ip, os.time() // WINDOW)
end

describe("examples/ratelimit.lua", function()
    it("allows RATE_LIMIT requests per window, then answers limited", function()
        same_window()
        local redis = balancer.redis()
        local srv = limiter{ REDIS_HOST = redis.host, RATE_LIMIT = 3,
                             RATE_WINDOW = WINDOW }
        local got = requests(srv.port, 5)
        assert.same({ "ok 2", "ok 1", "ok 0" }, { got[1], got[2], got[3] })
        for i = 4, 5 do
            local secs = tonumber(got[i]:match("^limited (%d+)$"))
            assert.truthy(secs, got[i])
            assert.is_true(secs > 0 and secs <= WINDOW, got[i])
        end
        -- the count is in Redis, under the window's key, with an expiry
        assert.equal("5", redis:redis("GET", key_of("127.0.0.1")))
        local ttl = redis:redis("TTL", key_of("127.0.0.1"))
        assert.is_true(ttl > 0 and ttl <= WINDOW + 1, tostring(ttl))
    end)

    it("counts per address, across connections", function()
        same_window()
        local redis = balancer.redis()
        local srv = limiter{ REDIS_HOST = redis.host, RATE_LIMIT = 4,
                             RATE_WINDOW = WINDOW }
        -- each request on a new connection: the count is the address's
        assert.equal("ok 3", one(srv.port, "127.0.0.2"))
        assert.equal("ok 2", one(srv.port, "127.0.0.2"))
        assert.equal("ok 3", one(srv.port, "127.0.0.3"))
        assert.equal("ok 1", one(srv.port, "127.0.0.2"))
        assert.equal("ok 0", one(srv.port, "127.0.0.2"))
        assert.matches("^limited %d+$", one(srv.port, "127.0.0.2"))
        assert.equal("ok 2", one(srv.port, "127.0.0.3"))
    end)

    it("loses no hit when one address sends 60 requests at once", function()
        same_window()
        local redis = balancer.redis()
        local srv = limiter({ REDIS_HOST = redis.host, RATE_LIMIT = 25,
                              RATE_WINDOW = WINDOW }, { "--workers", "2" })
        local socks = {}
        helpers.close_at_end(socks)
        for i = 1, 60 do
            socks[i] = assert(balancer.client(srv.port, "127.0.0.4", TIMEOUT))
        end
        for _, c in ipairs(socks) do assert(c:send("req\n")) end
        local ok, limited = 0, 0
        for _, c in ipairs(socks) do
            local line = assert(c:receive("*l"))
            if line:find("^ok %d+$") then ok = ok + 1
            elseif line:find("^limited %d+$") then limited = limited + 1
            else error("unexpected answer " .. line) end
        end
        assert.equal(25, ok)
        assert.equal(35, limited)
        assert.equal("60", redis:redis("GET", key_of("127.0.0.4")))
    end)

    it("reaches Redis over TCP with REDIS_HOST and REDIS_PORT", function()
        same_window()
        local redis = balancer.redis{ tcp = true }
        local srv = limiter{ REDIS_HOST = "127.0.0.1", REDIS_PORT = redis.port,
                             RATE_LIMIT = 1, RATE_WINDOW = WINDOW }
        local got = requests(srv.port, 2, "127.0.0.5")
        assert.equal("ok 0", got[1])
        assert.matches("^limited %d+$", got[2])
    end)

    it("lets requests through and logs why when Redis is down", function()
        local redis = balancer.redis()
        local srv = limiter{ REDIS_HOST = redis.host, RATE_LIMIT = 1,
                             RATE_WINDOW = WINDOW }
        redis:stop()
        assert.same({ "ok -", "ok -" }, requests(srv.port, 2))
        helpers.wait_until(function()
            return srv:log():find("warn examples/ratelimit.lua:%d+: ratelimit: redis unix:")
        end, 5, "the warning")
    end)

    it("refuses a bad setting at start", function()
        for _, env in ipairs({ "RATE_LIMIT=0", "RATE_WINDOW=1.5",
                               "REDIS_PORT=x" }) do
            local status, out = helpers.run("/usr/bin/env",
                env .. " " .. helpers.luaserv .. " --check examples/ratelimit.lua")
            assert.equal(2, status, out)
            assert.matches(env:match("^%u+_%u+") .. " must be a positive integer",
                           out)
        end
    end)
end)

-- Behind haproxy -------------------------------------------------------------

-- Whether this luaserv reads PROXY headers (the h12-stage work).
local function has_proxy_protocol()
    local _, help = helpers.run(helpers.luaserv, "--help")
    return help:find("--proxy-protocol", 1, true) ~= nil
end

-- haproxy in TCP mode in front of the instances insts, round robin, with
-- a TCP check on each; proxy: "send-proxy-v2" or "" (none).
local function haproxy(insts, proxy)
    local servers = {}
    for i, inst in ipairs(insts) do
        servers[i] = ("    server app%d 127.0.0.1:%d %s check inter 200ms\n")
                     :format(i, inst.port, proxy)
    end
    local hap = balancer.haproxy([[
global
    stats socket {{dir}}/admin.sock mode 600 level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 1m
    timeout server 1m
frontend luaserv_in
    bind fd@3
    default_backend luaserv
backend luaserv
    balance roundrobin
]] .. table.concat(servers))
    for i = 1, #insts do
        hap:wait_state("luaserv", "app" .. i, "^UP", TIMEOUT)
    end
    return hap
end

-- How many connections from ip an instance's access log shows
-- ("conn 3 (peer 127.0.0.2:40000, tcp://...): access ...").
local function served(srv, ip)
    return helpers.count(srv:log(), "(peer " .. ip .. ":")
end

describe("examples/ratelimit.lua, two instances behind haproxy", function()
    if not balancer.have("haproxy") then
        pending("haproxy is not installed: apt-get install haproxy")
        return
    end

    it("share one count per client address with the PROXY protocol", function()
        if not has_proxy_protocol() then
            pending("luaserv has no --proxy-protocol yet (the PROXY header stage, h12-stage)")
            return
        end
        same_window()
        local redis = balancer.redis()
        local env = { REDIS_HOST = redis.host, RATE_LIMIT = 6,
                      RATE_WINDOW = WINDOW }
        local args = { "--proxy-protocol", "--access-log" }
        local a, b = limiter(env, args), limiter(env, args)
        local hap = haproxy({ a, b }, "send-proxy-v2")
        -- two clients take turns, two requests each, every request on a
        -- new connection: round robin sends each client's two to a and b
        local got = { ["127.0.0.2"] = {}, ["127.0.0.3"] = {} }
        for _ = 1, 4 do
            for _, ip in ipairs({ "127.0.0.2", "127.0.0.3" }) do
                local t = got[ip]
                for _ = 1, 2 do
                    t[#t + 1] = one(hap.port, ip):match("^%a+ ?%d*")
                end
            end
        end
        for _, ip in ipairs({ "127.0.0.2", "127.0.0.3" }) do
            local t = got[ip]
            assert.same({ "ok 5", "ok 4", "ok 3", "ok 2", "ok 1", "ok 0" },
                        { table.unpack(t, 1, 6) })
            assert.matches("^limited", t[7])
            assert.matches("^limited", t[8])
            -- both instances served this client
            local ok = helpers.wait_for(function()
                return served(a, ip) > 0 and served(b, ip) > 0
            end, 5)
            assert.truthy(ok, a:log() .. b:log())
        end
        assert.equal(0, hap:stop("USR1"))
    end)

    it("count every client as the balancer without it", function()
        same_window()
        local redis = balancer.redis()
        local env = { REDIS_HOST = redis.host, RATE_LIMIT = 3,
                      RATE_WINDOW = WINDOW }
        local a, b = limiter(env), limiter(env)
        local hap = haproxy({ a, b }, "")
        assert.equal("ok 2", one(hap.port, "127.0.0.2"))
        assert.equal("ok 1", one(hap.port, "127.0.0.3"))
        assert.equal("ok 0", one(hap.port, "127.0.0.2"))
        assert.matches("^limited", one(hap.port, "127.0.0.3"))
        assert.equal("4", redis:redis("GET", key_of("127.0.0.1")))
        assert.equal(0, hap:stop("USR1"))
    end)
end)

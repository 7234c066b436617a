-- luaserv.redis against a real redis-server: call, method sugar, null
-- and error replies, nested arrays, a pipeline of 1000 commands, subscribe
-- with redis-cli publishing, the pool (reuse, bound, idle timeout, bad
-- states), db and password, unix sockets, a timeout against a server that
-- never answers, a refused connection, redis-server restarted mid-session,
-- and 300 KB and 24 MiB values. The client runs in a luaserv task of
-- spec/fixtures/redis_client_driver.lua; each test sends it Lua chunks.
local helpers = require "helpers"
local socket = require "socket"

local TIMEOUT = helpers.sanitize and 60 or 30

local function have(cmd)
    return os.execute("command -v " .. cmd .. " >/dev/null 2>&1") == true
end

if not have("redis-server") then
    describe("luaserv.redis", function()
        pending("redis-server is not installed: apt-get install redis-server")
    end)
    return
end

-- Whether something on 127.0.0.1:port answers a RESP PING (+PONG, or an
-- error such as -NOAUTH: either way the server is up).
local function answers(port)
    local c = socket.tcp()
    c:settimeout(0.5)
    if not c:connect("127.0.0.1", port) then
        c:close()
        return false
    end
    c:send("PING\r\n")
    local line = c:receive("*l")
    c:close()
    return line ~= nil and (line:sub(1, 1) == "+" or line:sub(1, 1) == "-")
end

local Redis = {}
Redis.__index = Redis

-- Every redis-server started here, by pid; whatever a failed run left
-- running is killed when busted exits, as helpers does for luaserv.
local started = {}
helpers._redis_sweeper = setmetatable({}, { __gc = function()
    for pid in pairs(started) do
        os.execute("kill -KILL " .. pid .. " 2>/dev/null")
    end
end })

-- Starts redis-server on a port nothing listens on (the same port again
-- when given, for a restart), with extra flags; waits until it answers.
local function start_redis(extra, port)
    for _ = 1, 5 do
        local p = port or helpers.dead_port()
        local log = helpers.tmpname(".redis.log")
        local cmd = ("redis-server --port %d --save '' --appendonly no " ..
                     "--bind 127.0.0.1 %s >%s 2>&1 & echo $!")
                    :format(p, extra or "", helpers.shell_quote(log))
        local f = io.popen(cmd)
        local pid = tonumber(f:read("*l"))
        f:close()
        local r = setmetatable({ pid = pid, port = p, log = log,
                                 extra = extra }, Redis)
        started[pid] = true
        if helpers.wait_for(function() return answers(p) end, 10) then
            return r
        end
        r:stop()
    end
    error("redis-server did not start")
end

function Redis:alive()
    return os.execute("kill -0 " .. self.pid .. " 2>/dev/null") == true
end

-- Stops it by PID (TERM, then KILL after 5 s) and waits until it is gone.
function Redis:stop()
    started[self.pid] = nil
    if not self:alive() then return end
    os.execute("kill " .. self.pid .. " 2>/dev/null")
    if not helpers.wait_for(function() return not self:alive() end, 5) then
        os.execute("kill -9 " .. self.pid .. " 2>/dev/null")
        helpers.wait_for(function() return not self:alive() end, 5)
    end
end

-- A RESP command to this redis from the spec itself (luasocket); returns
-- the first reply line.
function Redis:command(...)
    local c = helpers.connect(self.port, 5)
    local pre = self.password and helpers.resp("AUTH", self.password) or ""
    c:send(pre .. helpers.resp(...))
    if pre ~= "" then c:receive("*l") end
    local line = c:receive("*l")
    c:close()
    return line
end

local redis1, driver, drv

-- Sends one chunk to the driver and returns its serialized results.
local function run(code, timeout)
    drv:settimeout(timeout or TIMEOUT)
    assert(drv:send("RUN " .. #code .. "\n" .. code))
    local n = assert(drv:receive("*l"))
    return assert(drv:receive(tonumber(n)))
end

-- code with $PORT (and $HOST) filled in for r.
local function fill(code, r)
    return (code:gsub("%$PORT", tostring(r.port)))
end

describe("luaserv.redis", function()
    lazy_setup(function()
        redis1 = start_redis()
        -- Building and comparing 24 MiB strings under ASan on a loaded
        -- machine can pass the default 1 s budget of one task run.
        driver = helpers.start_server{
            script = "spec/fixtures/redis_client_driver.lua",
            args = { "--handler-timeout", "10" } }
        drv = helpers.connect(driver.port, TIMEOUT)
    end)

    lazy_teardown(function()
        if drv then drv:close() end
        if driver then driver:stop("KILL", 5) end
        if redis1 then redis1:stop() end
    end)

    describe("call", function()
        it("sets, gets, increments and deletes", function()
            assert.equal('"OK", "v1", 1, 2, 1, nil, 0', run(fill([[
                local r = assert(redis.connect("127.0.0.1", $PORT))
                local a = r:call("SET", "k1", "v1")
                local b = r:get("k1")
                r:del("n1")
                local c = r:incr("n1")
                local d = r:call("INCR", "n1")
                local e = r:del("k1")
                local f = r:get("k1")
                local g = r:del("k1")
                r:close()
                return a, b, c, d, e, f, g
            ]], redis1)))
        end)

        it("returns arrays, nested arrays and nulls inside them", function()
            assert.equal('{"a","b","c"}, {"a",null,"b"}, ' ..
                         '{1,{2,{"x"}},null}, {}', run(fill([[
                local r = assert(redis.connect("127.0.0.1", $PORT))
                r:del("l1")
                r:rpush("l1", "a", "b", "c")
                r:mset("m1", "a", "m2", "b")
                local lr = r:lrange("l1", 0, -1)
                local mg = r:mget("m1", "nosuchkey", "m2")
                local nested = r:eval("return {1, {2, {'x'}}, false}", 0)
                local empty = r:lrange("nosuchlist", 0, -1)
                r:close()
                return lr, mg, nested, empty
            ]], redis1)))
        end)

        it("returns nil and the server's text for an error reply and stays usable",
           function()
            assert.equal('nil, "WRONGTYPE Operation against a key holding ' ..
                         'the wrong kind of value", true, "PONG", ' ..
                         '"ERR unknown command \'nosuchcmd\', with args ' ..
                         'beginning with: \'x\' "', run(fill([[
                local r = assert(redis.connect("127.0.0.1", $PORT))
                r:del("l2")
                r:rpush("l2", "x")
                local v, err = r:get("l2")
                local _, err2 = r:nosuchcmd("x")
                return v, err, not r:is_closed(), r:ping(), err2
            ]], redis1)))
        end)

        it("sends binary strings, empty strings and numbers as they are",
           function()
            assert.equal('"a\\13\\n\\0b", "", "3", "2.5", 7', run(fill([[
                local r = assert(redis.connect("127.0.0.1", $PORT))
                r:set("b1", "a\r\n\0b")
                r:set("b2", "")
                r:set("b3", 3)
                r:set("b4", 2.5)
                r:set("n2", 5)
                return r:get("b1"), r:get("b2"), r:get("b3"), r:get("b4"),
                       r:incrby("n2", 2)
            ]], redis1)))
        end)

        it("raises for an argument that is not a string or a number",
           function()
            local out = run(fill([[
                local r = assert(redis.connect("127.0.0.1", $PORT))
                local ok, err = pcall(r.set, r, "k", {})
                return ok, err, r:ping()
            ]], redis1))
            assert.matches('^false, ".*argument #3 is a table.*", "PONG"$', out)
        end)

        it("raises when a second task uses a client that is waiting",
           function()
            local out = run(fill([[
                local r = assert(redis.connect("127.0.0.1", $PORT))
                r:del("bq")
                local got
                local t = luaserv.spawn(function()
                    got = { r:blpop("bq", 5) }
                end)
                luaserv.sleep(0.1)
                local ok, err = pcall(r.ping, r)
                local r2 = assert(redis.connect("127.0.0.1", $PORT))
                r2:rpush("bq", "item")
                for _ = 1, 100 do
                    if got then break end
                    luaserv.sleep(0.02)
                end
                return ok, err, got, t:status(), r:ping()
            ]], redis1))
            assert.matches('^false, ".*client is busy.*", {{"bq","item"}}, ' ..
                           '"dead", "PONG"$', out)
        end)

        it("closes the client after QUIT", function()
            assert.equal('"OK", true, nil, "closed"', run(fill([[
                local r = assert(redis.connect("127.0.0.1", $PORT))
                local q = r:quit()
                return q, r:is_closed(), r:ping()
            ]], redis1)))
        end)

        it("round-trips 300 KB and 24 MiB values", function()
            assert.equal('"OK", true, 300000, "OK", true, 25165824, ' ..
                         '{300000,25165824}', run(fill([[
                local r = assert(redis.connect("127.0.0.1", $PORT))
                local small = string.rep("0123456789abcdef", 18750)
                local big = string.rep("abcdefgh", 3 * 2^20)
                local a = r:set("big1", small)
                local g1 = r:get("big1")
                local b = r:set("big2", big)
                local g2 = r:get("big2")
                local both = r:mget("big1", "big2")
                r:del("big1", "big2")
                return a, g1 == small, #g1, b, g2 == big, #g2,
                       { #both[1], #both[2] }
            ]], redis1), 120))
        end)

        it("connects over a unix socket", function()
            local path = helpers.tmpname(".redis.sock")
            local r = start_redis("--unixsocket " .. path ..
                                  " --unixsocketperm 700")
            finally(function() r:stop() end)
            assert.equal('"PONG", "u"', run(([[
                local r = assert(redis.connect("unix:%s"))
                r:set("uk", "u")
                return r:ping(), r:get("uk")
            ]]):format(path)))
        end)
    end)

    describe("pipeline", function()
        it("sends 1000 commands and reads every reply in order", function()
            local out = run(fill([[
                local r = assert(redis.connect("127.0.0.1", $PORT))
                r:del("pc", "ps")
                r:set("ps", "str")
                local res = assert(r:pipeline(function(p)
                    for i = 1, 1000 do
                        if i % 250 == 0 then p:incr("ps")
                        else p:call("INCR", "pc") end
                    end
                    p:get("nosuchkey")
                end))
                local ok = true
                local n = 0
                for i = 1, 1000 do
                    if i % 250 ~= 0 then
                        n = n + 1
                        if res[i] ~= n then ok = false end
                    end
                end
                return #res, ok, res[250], res[1001], r:get("pc")
            ]], redis1))
            assert.equal('1001, true, {err="ERR value is not an integer ' ..
                         'or out of range"}, null, "996"', out)
        end)

        it("gives back an empty list for no commands and raises fn's error",
           function()
            local out = run(fill([[
                local r = assert(redis.connect("127.0.0.1", $PORT))
                local empty = r:pipeline(function() end)
                local ok, err = pcall(r.pipeline, r, function(p)
                    p:set("pe", "x")
                    error("boom", 0)
                end)
                return empty, ok, err, r:exists("pe"), r:ping()
            ]], redis1))
            assert.equal('{}, false, "boom", 0, "PONG"', out)
        end)
    end)

    describe("subscribe", function()
        it("calls fn per message until it returns false, then unsubscribes",
           function()
            if not have("redis-cli") then
                pending("redis-cli is not installed")
                return
            end
            drv:settimeout(TIMEOUT)
            local code = fill([[
                local r = assert(redis.connect("127.0.0.1", $PORT))
                local got = {}
                local ok, err = r:subscribe("news", function(msg, ch)
                    got[#got + 1] = ch .. ":" .. msg
                    return msg ~= "stop"
                end)
                return ok, err, got, r:ping(), r:pubsub("numsub", "news")
            ]], redis1)
            assert(drv:send("RUN " .. #code .. "\n" .. code))
            local cli = "redis-cli -p " .. redis1.port .. " publish news "
            helpers.wait_until(function()
                local _, out = helpers.sh(cli .. "hello")
                return out:match("^1") ~= nil
            end, 10, "the subscriber")
            local _, o2 = helpers.sh(cli .. "'two words'")
            local _, o3 = helpers.sh(cli .. "stop")
            assert.equal("1\n", o2)
            assert.equal("1\n", o3)
            local n = assert(drv:receive("*l"))
            local out = assert(drv:receive(tonumber(n)))
            -- PUBLISH answered 1 only once subscribed: "hello" may have
            -- been sent several times before that.
            assert.matches('^true, nil, {"news:hello",.*' ..
                           '"news:two words","news:stop"}, "PONG", ' ..
                           '{"news",0}$', out)
        end)

        it("returns nil, 'timeout' when no message comes in time", function()
            assert.equal('nil, "timeout", nil, "closed"', run(fill([[
                local r = assert(redis.connect("127.0.0.1", $PORT))
                local ok, err = r:subscribe({ "quiet1", "quiet2" },
                                            function() return false end, 0.3)
                return ok, err, r:ping()
            ]], redis1)))
        end)

        it("waits past the client's timeout while the server answers PING",
           function()
            local code = fill([[
                local r = assert(redis.connect("127.0.0.1", $PORT,
                                               { timeout = 0.2 }))
                local t0 = luaserv.now()
                local got = {}
                local ok, err = r:subscribe("slow", function(msg)
                    got[#got + 1] = msg
                    return msg ~= "stop"
                end)
                return ok, err, got[#got], luaserv.now() - t0 > 1
            ]], redis1)
            drv:settimeout(TIMEOUT)
            assert(drv:send("RUN " .. #code .. "\n" .. code))
            helpers.wait_until(function()
                return redis1:command("PUBLISH", "slow", "hi") == ":1"
            end, 10, "the subscriber")
            helpers.sleep(1.2)
            assert.equal(":1", redis1:command("PUBLISH", "slow", "stop"))
            local n = assert(drv:receive("*l"))
            assert.equal('true, nil, "stop", true', drv:receive(tonumber(n)))
        end)

        it("psubscribe passes the pattern too", function()
            local code = fill([[
                local r = assert(redis.connect("127.0.0.1", $PORT))
                local got
                local ok = r:psubscribe("ev.*", function(msg, ch, pat)
                    got = { msg, ch, pat }
                    return false
                end)
                return ok, got
            ]], redis1)
            drv:settimeout(TIMEOUT)
            assert(drv:send("RUN " .. #code .. "\n" .. code))
            helpers.wait_until(function()
                return redis1:command("PUBLISH", "ev.one", "m") == ":1"
            end, 10, "the pattern subscriber")
            local n = assert(drv:receive("*l"))
            assert.equal('true, {"m","ev.one","ev.*"}',
                         drv:receive(tonumber(n)))
        end)
    end)

    describe("pool", function()
        it("reuses an idle connection (same CLIENT ID)", function()
            assert.equal('true, 1, 0, true', run(fill([[
                local p = redis.pool("127.0.0.1", $PORT, { size = 2 })
                local r1 = assert(p:get())
                local id1 = r1:client("id")
                r1:release()
                local idle = p:idle_count()
                local r2 = assert(p:get())
                local id2 = r2:call("CLIENT", "ID")
                local idle2 = p:idle_count()
                r2:release()
                local v = p:call("CLIENT", "ID")
                p:close()
                return id1 == id2, idle, idle2, v == id1
            ]], redis1)))
        end)

        it("keeps at most size idle clients and closes the others", function()
            local out = run(fill([[
                local p = redis.pool("127.0.0.1", $PORT, { size = 2 })
                local rs, ids = {}, {}
                for i = 1, 5 do
                    rs[i] = assert(p:get())
                    ids[i] = rs[i]:client("id")
                end
                local kept = {}
                for i = 1, 5 do kept[i] = p:put(rs[i]) end
                S.pool_ids = ids
                return kept, p:idle_count(), rs[3]:ping()
            ]], redis1))
            assert.equal('{true,true,false,false,false}, 2, nil, "closed"',
                         out)
            -- Clients 3..5 are gone from the server, 1 and 2 stay.
            local ids = run("return S.pool_ids")
            local list = {}
            for id in ids:gmatch("%d+") do list[#list + 1] = id end
            helpers.wait_until(function()
                local c = helpers.connect(redis1.port, 5)
                c:send(helpers.resp("CLIENT", "LIST"))
                local len = tonumber(c:receive("*l"):sub(2))
                local text = c:receive(len + 2)
                c:close()
                local has = function(id)
                    return text:find("id=" .. id .. " ", 1, true) ~= nil
                end
                return has(list[1]) and has(list[2]) and not has(list[3])
                    and not has(list[4]) and not has(list[5])
            end, 5, "the closed clients to leave redis")
        end)

        it("closes idle clients after idle_timeout", function()
            assert.equal('1, 0, true', run(fill([[
                local p = redis.pool("127.0.0.1", $PORT,
                                     { idle_timeout = 0.2 })
                local r = assert(p:get())
                r:release()
                local n = p:idle_count()
                luaserv.sleep(0.6)
                return n, p:idle_count(), r:is_closed()
            ]], redis1)))
        end)

        it("closes a client left in MULTI, on another db or failed",
           function()
            assert.equal('false, false, false, true, 1', run(fill([[
                local p = redis.pool("127.0.0.1", $PORT)
                local a = assert(p:get())
                a:multi()
                local b = assert(p:get())
                b:select(2)
                local c = assert(p:get())
                c:close()
                local d = assert(p:get())
                d:multi()
                d:discard()
                return p:put(a), p:put(b), p:put(c), p:put(d), p:idle_count()
            ]], redis1)))
        end)

        it("drops an idle client whose server closed it", function()
            local id = run(fill([[
                S.kp = redis.pool("127.0.0.1", $PORT, { check_idle = 0 })
                return (S.kp:call("CLIENT", "ID"))
            ]], redis1))
            assert.equal(":1", redis1:command("CLIENT", "KILL", "ID", id))
            local out = run(([[
                local id2 = S.kp:call("CLIENT", "ID")
                local id3 = S.kp:call("CLIENT", "ID")
                return id2 ~= %s, id2 == id3, S.kp:idle_count()
            ]]):format(id))
            assert.equal("true, true, 1", out)
        end)

        it("raises when a client given back is used", function()
            local out = run(fill([[
                local p = redis.pool("127.0.0.1", $PORT)
                local r = assert(p:get())
                r:release()
                return pcall(r.ping, r)
            ]], redis1))
            assert.matches('^false, ".*given back to its pool"$', out)
        end)
    end)

    describe("db and password", function()
        it("sends AUTH and SELECT on connect, and fails with the server's text",
           function()
            local r = start_redis("--requirepass s3cret")
            r.password = "s3cret"
            finally(function() r:stop() end)
            local out = run(fill([[
                local r1 = redis.connect("127.0.0.1", $PORT)
                local _, noauth = r1:get("x")
                local r2, wrong = redis.connect("127.0.0.1", $PORT,
                                                { password = "nope" })
                local r3 = assert(redis.connect("127.0.0.1", $PORT,
                    { password = "s3cret", db = 3 }))
                r3:set("dbk", "in3")
                local r4 = assert(redis.connect("127.0.0.1", $PORT,
                    { username = "default", password = "s3cret" }))
                local r5, baddb = redis.connect("127.0.0.1", $PORT,
                    { password = "s3cret", db = 99 })
                return noauth, r2, wrong, r4:get("dbk"), r3:get("dbk"),
                       r5, baddb
            ]], r))
            assert.equal('"NOAUTH Authentication required.", nil, ' ..
                         '"WRONGPASS invalid username-password pair or ' ..
                         'user is disabled.", nil, "in3", nil, ' ..
                         '"ERR DB index is out of range"', out)
        end)
    end)

    describe("failures", function()
        it("returns nil, 'timeout' from a server that never answers",
           function()
            local silent = assert(socket.bind("127.0.0.1", 0))
            finally(function() silent:close() end)
            local _, port = silent:getsockname()
            local t0 = socket.gettime()
            local out = run(([[
                local r = assert(redis.connect("127.0.0.1", %d,
                                               { timeout = 0.3 }))
                local v, err = r:ping()
                local v2, err2 = r:ping()
                local r3, err3 = redis.connect("127.0.0.1", %d,
                                               { timeout = 0.3, db = 1 })
                local r4 = assert(redis.connect("127.0.0.1", %d,
                                                { timeout = 0.3 }))
                local ok4, err4 = r4:subscribe("ch", function() end)
                return v, err, v2, err2, r3, err3, ok4, err4
            ]]):format(port, port, port))
            assert.equal('nil, "timeout", nil, "closed", nil, "timeout", ' ..
                         'nil, "timeout"', out)
            assert.is_true(socket.gettime() - t0 < 5)
        end)

        it("returns nil, err for a malformed, oversized or cut-off reply",
           function()
            local fake = assert(socket.bind("127.0.0.1", 0))
            finally(function() fake:close() end)
            fake:settimeout(10)
            local _, port = fake:getsockname()
            local code = ([[
                local out = {}
                for i = 1, 4 do
                    local r = assert(redis.connect("127.0.0.1", %d,
                        { timeout = 5, max_reply = 1000000 }))
                    local v, err = r:get("k")
                    local _, err2 = r:ping()
                    out[i] = tostring(v) .. " " .. tostring(err) .. " " ..
                             tostring(err2)
                end
                return out
            ]]):format(port)
            drv:settimeout(TIMEOUT)
            assert(drv:send("RUN " .. #code .. "\n" .. code))
            for _, reply in ipairs({ "?garbage\r\n", "$10\r\nabc",
                                     "$99999999\r\n", "*2\r\n:1\r\n" }) do
                local c = assert(fake:accept())
                c:settimeout(5)
                if not c:receive("*l") then     -- *2, then GET k
                    local n = assert(drv:receive("*l"))
                    error(reply .. ": " .. drv:receive(tonumber(n)))
                end
                c:send(reply)
                c:close()
            end
            local n = assert(drv:receive("*l"))
            local out = drv:receive(tonumber(n))
            -- A malformed reply is a protocol error; one cut off by the
            -- server's close is "closed", as any read at end of stream.
            assert.equal('{"nil protocol error closed",' ..
                         '"nil closed closed",' ..
                         '"nil too long closed","nil closed closed"}',
                         out)
        end)

        it("reads a reply split at every byte, and many in one read",
           function()
            local fake = assert(socket.bind("127.0.0.1", 0))
            finally(function() fake:close() end)
            fake:settimeout(10)
            local _, port = fake:getsockname()
            local code = ([[
                local r = assert(redis.connect("127.0.0.1", %d))
                local one = r:call("X")
                local many = r:pipeline(function(p)
                    for _ = 1, 3 do p:call("Y") end
                end)
                return one, many
            ]]):format(port)
            drv:settimeout(TIMEOUT)
            assert(drv:send("RUN " .. #code .. "\n" .. code))
            local c = assert(fake:accept())
            finally(function() c:close() end)
            c:settimeout(5)
            c:setoption("tcp-nodelay", true)
            assert.equal("*1", c:receive("*l"))
            c:receive("*l")
            c:receive("*l")
            local reply = "*3\r\n$3\r\nabc\r\n:42\r\n*2\r\n$-1\r\n+OK\r\n"
            for i = 1, #reply do
                c:send(reply:sub(i, i))
                helpers.sleep(0.002)
            end
            for _ = 1, 9 do c:receive("*l") end      -- 3 x *1 $1 Y
            c:send("+a\r\n:-7\r\n-ERR no\r\n")
            local n = assert(drv:receive("*l"))
            assert.equal('{"abc",42,{null,"OK"}}, {"a",-7,{err="ERR no"}}',
                         drv:receive(tonumber(n)))
        end)

        it("returns nil, 'connection refused'", function()
            assert.equal('nil, "connection refused"', run(([[
                return redis.connect("127.0.0.1", %d)
            ]]):format(helpers.dead_port())))
        end)

        it("returns nil, err when redis-server restarts mid-session, then "
           .. "connects again", function()
            local r = start_redis()
            finally(function() r:stop() end)
            assert.equal('"OK", "before", "OK"', run(fill([[
                S.r = assert(redis.connect("127.0.0.1", $PORT))
                S.p = redis.pool("127.0.0.1", $PORT, { check_idle = 0 })
                return S.r:set("rk", "before"), S.r:get("rk"),
                       (S.p:call("SET", "pk", "x"))
            ]], r)))
            r:stop()
            local out = run([[
                local v, err = S.r:get("rk")
                local v2, err2 = S.r:get("rk")
                return v, err, v2, err2
            ]])
            assert.matches('^nil, "%a[%a ]*", nil, "closed"$', out)
            local r2 = start_redis(nil, r.port)
            finally(function() r2:stop() end)
            out = run(fill([[
                local r = assert(redis.connect("127.0.0.1", $PORT))
                local a, b = S.p:call("GET", "pk")
                local c, d = S.p:call("SET", "pk", "y")
                return r:get("rk"), r:ping(), a, b, c, d
            ]], r2))
            -- The pool checks its idle client (check_idle = 0), finds it
            -- dead and connects again: the new server has no "pk" yet.
            assert.equal('nil, "PONG", nil, nil, "OK", nil', out)
        end)
    end)
end)

-- examples/resp.lua, the Redis-protocol key/value server on framing
-- "resp" and luaserv.resp, driven by real redis-cli, redis-benchmark,
-- redis-py and raw luasocket writes.
local helpers = require "helpers"

-- Whether a client program is installed; tests needing a missing one are
-- pending, with the reason.
local function have(program)
    return helpers.sh("command -v " .. program) == 0
end

local function have_redis_py()
    return helpers.sh("/usr/bin/python3 -c 'import redis'") == 0
end

-- Runs redis-cli against port with the argument string (and stdin, if
-- given); returns its output without the last newline, and its status.
local function cli(port, args, stdin)
    local status, out = helpers.run("redis-cli",
                                    "-p " .. port .. " " .. args, stdin)
    return (out:gsub("\n$", "")), status
end

-- A client connected to port, closed when the test ends.
local function connect(port)
    local c = helpers.connect(port)
    helpers.close_at_end({ c })
    return c
end

local resp = helpers.resp

-- Reads one RESP reply from a luasocket client, as Lua values: a string
-- for +simple and $bulk, a number for :integer, false for the null bulk,
-- { err = msg } for -error, a table for *array.
local function read_reply(c)
    local line, err = c:receive("*l")
    if not line then return nil, err end
    local kind, rest = line:sub(1, 1), line:sub(2)
    if kind == "+" then return rest end
    if kind == "-" then return { err = rest } end
    if kind == ":" then return tonumber(rest) end
    if kind == "$" then
        local n = tonumber(rest)
        if n < 0 then return false end
        local data = assert(c:receive(n + 2))
        return data:sub(1, n)
    end
    if kind == "*" then
        local list = {}
        for i = 1, tonumber(rest) do list[i] = read_reply(c) end
        return list
    end
    error("bad reply line: " .. line)
end

-- INFO's "name:value" lines as a table.
local function info(port)
    local fields = {}
    for name, value in cli(port, "INFO"):gmatch("([%w_]+):([^\r\n]*)") do
        fields[name] = value
    end
    return fields
end

describe("examples/resp.lua", function()
    local srv, port

    lazy_setup(function()
        srv = helpers.start_server{ script = "examples/resp.lua",
                                    no_finally = true }
        port = srv.port
    end)

    lazy_teardown(function()
        if srv then srv:stop("KILL", 5) end
    end)

    describe("with redis-cli", function()
        -- without redis-cli, each test here is pending and says why
        local it = have("redis-cli") and it or function(name)
            pending(name .. " (redis-cli is not installed)")
        end

        it("answers PING with PONG, and PING msg with msg", function()
            assert.equal("PONG", cli(port, "PING"))
            assert.equal("hello there", cli(port, "PING 'hello there'"))
            assert.equal("\"hi\"", cli(port, "--no-raw ECHO hi"))
        end)

        it("SETs and GETs a value, and GETs nil for a missing key", function()
            assert.equal("OK", cli(port, "SET greeting 'hello world'"))
            assert.equal("hello world", cli(port, "GET greeting"))
            assert.equal("\"hello world\"", cli(port, "--no-raw GET greeting"))
            assert.equal("(nil)", cli(port, "--no-raw GET no-such-key"))
        end)

        it("INCRs an integer and refuses a non-integer", function()
            assert.equal("(integer) 1", cli(port, "--no-raw INCR counter"))
            assert.equal("(integer) 2", cli(port, "--no-raw INCR counter"))
            assert.equal("2", cli(port, "GET counter"))
            assert.equal("(integer) 12", cli(port, "--no-raw INCRBY counter 10"))
            assert.equal("(integer) 11", cli(port, "--no-raw DECR counter"))
            cli(port, "SET word abc")
            assert.equal("(error) ERR value is not an integer or out of range",
                         cli(port, "--no-raw INCR word"))
            cli(port, "SET big 9223372036854775807")
            assert.equal("(error) ERR increment or decrement would overflow",
                         cli(port, "--no-raw INCR big"))
            assert.equal("(error) ERR value is not an integer or out of range",
                         cli(port, "--no-raw INCRBY counter 1.5"))
        end)

        it("counts EXISTS and DEL over several keys", function()
            cli(port, "SET e1 a")
            cli(port, "SET e2 b")
            assert.equal("(integer) 3", cli(port, "--no-raw EXISTS e1 e2 nope e1"))
            assert.equal("(integer) 2", cli(port, "--no-raw DEL e1 e2 nope"))
            assert.equal("(integer) 0", cli(port, "--no-raw EXISTS e1 e2"))
            assert.equal("(integer) 0", cli(port, "--no-raw DEL e1"))
        end)

        it("expires a key SET with EX 1 after a second", function()
            -- counted before the SETs: under load, the 200 ms key may be
            -- gone before a second redis-cli starts
            local before = info(port)
            local keys = before.db0 and tonumber(before.db0:match("keys=(%d+)")) or 0
            assert.equal("OK", cli(port, "SET short v EX 1"))
            assert.equal("OK", cli(port, "SET shorter v PX 200"))
            assert.equal("(integer) 1", cli(port, "--no-raw TTL short"))
            assert.equal("v", cli(port, "GET short"))
            -- the timers delete both keys, before anyone asks for them:
            -- INFO only counts, so the wait is for the timers, however
            -- late a loaded machine runs them
            local after
            helpers.wait_until(function()
                after = info(port)
                local n = after.db0 and
                          tonumber(after.db0:match("keys=(%d+)")) or 0
                return n == keys and
                       (after.db0 or "expires=0"):find("expires=0", 1, true)
            end, 10, "both keys to expire")
            assert.equal(keys, after.db0 and
                         tonumber(after.db0:match("keys=(%d+)")) or 0)
            assert.matches("expires=0", after.db0 or "expires=0", 1, true)
            assert.equal("(nil)", cli(port, "--no-raw GET short"))
            assert.equal("(integer) 0", cli(port, "--no-raw EXISTS short shorter"))
            assert.equal("(integer) -2", cli(port, "--no-raw TTL short"))
        end)

        it("cancels a key's timer when a plain SET replaces it", function()
            cli(port, "SET kept old EX 1")
            cli(port, "SET kept new")
            assert.equal("(integer) -1", cli(port, "--no-raw TTL kept"))
            cli(port, "SET later a EX 1")
            cli(port, "SET later b EX 3")
            cli(port, "SET ttl-kept a EX 3")
            cli(port, "SET ttl-kept b KEEPTTL")
            helpers.sleep(1.5)
            assert.equal("new", cli(port, "GET kept"))
            assert.equal("b", cli(port, "GET later"))
            -- 3 s less the 1.5 s slept and the redis-cli runs: 1 or 2
            assert.matches("^%(integer%) [12]$", cli(port, "--no-raw TTL later"))
            assert.matches("^%(integer%) [12]$", cli(port, "--no-raw TTL ttl-kept"))
        end)

        it("SETs with NX only a new key and with XX only an existing one", function()
            assert.equal("(nil)", cli(port, "--no-raw SET nx-key a XX"))
            assert.equal("OK", cli(port, "--no-raw SET nx-key a NX"))
            assert.equal("(nil)", cli(port, "--no-raw SET nx-key b NX"))
            assert.equal("OK", cli(port, "--no-raw SET nx-key c XX"))
            assert.equal("c", cli(port, "GET nx-key"))
        end)

        it("answers Redis's errors for bad SET options", function()
            assert.equal("(error) ERR syntax error",
                         cli(port, "--no-raw SET k v NX XX"))
            assert.equal("(error) ERR syntax error",
                         cli(port, "--no-raw SET k v EX"))
            assert.equal("(error) ERR syntax error",
                         cli(port, "--no-raw SET k v FOREVER"))
            assert.equal("(error) ERR value is not an integer or out of range",
                         cli(port, "--no-raw SET k v EX soon"))
            assert.equal("(error) ERR invalid expire time in 'set' command",
                         cli(port, "--no-raw SET k v EX 0"))
        end)

        it("answers an unknown command and a wrong arity with -ERR", function()
            assert.equal("(error) ERR unknown command 'FROB', with args " ..
                         "beginning with: 'a' 'b c' ",
                         cli(port, "--no-raw FROB a 'b c'"))
            assert.equal("(error) ERR wrong number of arguments for 'get' command",
                         cli(port, "--no-raw GET"))
            assert.equal("(error) ERR wrong number of arguments for 'get' command",
                         cli(port, "--no-raw get a b"))
            assert.equal("(error) ERR wrong number of arguments for 'ping' command",
                         cli(port, "--no-raw PING a b"))
        end)

        it("answers COMMAND DOCS with an empty array", function()
            assert.equal("(empty array)", cli(port, "--no-raw COMMAND DOCS"))
        end)

        it("sets, reads and clears a time to live", function()
            cli(port, "SET tk v")
            assert.equal("(integer) -1", cli(port, "--no-raw TTL tk"))
            assert.equal("(integer) 1", cli(port, "--no-raw EXPIRE tk 100"))
            assert.equal("(integer) 100", cli(port, "--no-raw TTL tk"))
            assert.matches("^%(integer%) 99%d%d%d$", cli(port, "--no-raw PTTL tk"))
            assert.equal("(integer) 1", cli(port, "--no-raw PEXPIRE tk 50000"))
            assert.equal("(integer) 50", cli(port, "--no-raw TTL tk"))
            assert.equal("(integer) 1", cli(port, "--no-raw PERSIST tk"))
            assert.equal("(integer) 0", cli(port, "--no-raw PERSIST tk"))
            assert.equal("(integer) -1", cli(port, "--no-raw TTL tk"))
            assert.equal("(integer) 0", cli(port, "--no-raw EXPIRE nokey 10"))
            assert.equal("(integer) -2", cli(port, "--no-raw PTTL nokey"))
            assert.equal("(integer) 1", cli(port, "--no-raw EXPIRE tk -1"))
            assert.equal("(integer) 0", cli(port, "--no-raw EXISTS tk"))
            assert.equal("(error) ERR value is not an integer or out of range",
                         cli(port, "--no-raw EXPIRE tk soon"))
        end)

        it("SETs with GET, PX, EXAT, and MSETs, MGETs, APPENDs", function()
            assert.equal("(nil)", cli(port, "--no-raw SET sg a GET"))
            assert.equal("\"a\"", cli(port, "--no-raw SET sg b GET"))
            assert.equal("OK", cli(port, "SET sg c PX 100000"))
            assert.equal("(integer) 100", cli(port, "--no-raw TTL sg"))
            assert.equal("OK", cli(port, "SET sg d EXAT " .. (os.time() + 1000)))
            local left = tonumber(cli(port, "--no-raw TTL sg"):match("^%(integer%) (%d+)$"))
            assert.truthy(left and left >= 997 and left <= 1000, left)
            assert.equal("OK", cli(port, "MSET m1 1 m2 2 m3 3"))
            assert.equal("1) \"1\"\n2) (nil)\n3) \"3\"",
                         cli(port, "--no-raw MGET m1 nope m3"))
            assert.equal("(error) ERR wrong number of arguments for 'mset' command",
                         cli(port, "--no-raw MSET m1 1 m2"))
            assert.equal("(integer) 5", cli(port, "--no-raw APPEND ap hello"))
            assert.equal("(integer) 11", cli(port, "--no-raw APPEND ap ' world'"))
            assert.equal("(integer) 11", cli(port, "--no-raw STRLEN ap"))
            assert.equal("(integer) 0", cli(port, "--no-raw STRLEN nope"))
        end)

        it("pushes, ranges and pops lists", function()
            assert.equal("(integer) 3", cli(port, "--no-raw LPUSH li c b a"))
            assert.equal("(integer) 5", cli(port, "--no-raw RPUSH li d e"))
            assert.equal("1) \"a\"\n2) \"b\"\n3) \"c\"\n4) \"d\"\n5) \"e\"",
                         cli(port, "--no-raw LRANGE li 0 -1"))
            assert.equal("1) \"d\"\n2) \"e\"", cli(port, "--no-raw LRANGE li -2 100"))
            assert.equal("(empty array)", cli(port, "--no-raw LRANGE li 3 1"))
            assert.equal("(integer) 5", cli(port, "--no-raw LLEN li"))
            assert.equal("\"a\"", cli(port, "--no-raw LPOP li"))
            assert.equal("\"e\"", cli(port, "--no-raw RPOP li"))
            assert.equal("1) \"b\"\n2) \"c\"", cli(port, "--no-raw LPOP li 2"))
            assert.equal("\"d\"", cli(port, "--no-raw RPOP li"))
            assert.equal("(nil)", cli(port, "--no-raw RPOP li"))
            assert.equal("(integer) 0", cli(port, "--no-raw EXISTS li"))
            assert.equal("(integer) 0", cli(port, "--no-raw LLEN li"))
        end)

        it("sets, reads and deletes hash fields", function()
            assert.equal("(integer) 2", cli(port, "--no-raw HSET hh f1 v1 f2 v2"))
            assert.equal("(integer) 0", cli(port, "--no-raw HSET hh f1 v9"))
            assert.equal("\"v9\"", cli(port, "--no-raw HGET hh f1"))
            assert.equal("(nil)", cli(port, "--no-raw HGET hh nope"))
            local all = {}
            for line in cli(port, "HGETALL hh"):gmatch("[^\n]+") do all[#all + 1] = line end
            local pairs_seen = {}
            for i = 1, #all, 2 do pairs_seen[all[i]] = all[i + 1] end
            assert.same({ f1 = "v9", f2 = "v2" }, pairs_seen)
            assert.equal("(integer) 1", cli(port, "--no-raw HDEL hh f1 nope"))
            assert.equal("1) \"f2\"\n2) \"v2\"", cli(port, "--no-raw HGETALL hh"))
            assert.equal("(integer) 1", cli(port, "--no-raw HDEL hh f2"))
            assert.equal("(empty array)", cli(port, "--no-raw HGETALL hh"))
            assert.equal("(error) ERR wrong number of arguments for 'hset' command",
                         cli(port, "--no-raw HSET hh f1"))
        end)

        it("adds, lists and pops set members, and sorted set members by score", function()
            assert.equal("(integer) 3", cli(port, "--no-raw SADD st a b c"))
            assert.equal("(integer) 0", cli(port, "--no-raw SADD st a"))
            assert.equal("(integer) 3", cli(port, "--no-raw SCARD st"))
            assert.equal("(integer) 1", cli(port, "--no-raw SREM st b"))
            local members = {}
            for m in cli(port, "SMEMBERS st"):gmatch("[^\n]+") do members[#members + 1] = m end
            table.sort(members)
            assert.same({ "a", "c" }, members)
            local popped = cli(port, "SPOP st")
            assert.truthy(popped == "a" or popped == "c", popped)
            assert.equal("(integer) 1", cli(port, "--no-raw SCARD st"))
            assert.equal("(integer) 3", cli(port, "--no-raw ZADD zs 2 b 1 a 3.5 c"))
            assert.equal("(integer) 0", cli(port, "--no-raw ZADD zs 0.5 c"))
            assert.equal("c\n0.5\na\n1\nb\n2", cli(port, "ZRANGE zs 0 -1 WITHSCORES"))
            assert.equal("a\nb", cli(port, "ZRANGE zs 1 2"))
            assert.equal("1) \"c\"\n2) \"0.5\"", cli(port, "--no-raw ZPOPMIN zs"))
            assert.equal("a\n1\nb\n2", cli(port, "ZPOPMIN zs 5"))
            assert.equal("(empty array)", cli(port, "--no-raw ZPOPMIN zs"))
            assert.equal("(error) ERR value is not a valid float",
                         cli(port, "--no-raw ZADD zs x m"))
        end)

        it("answers WRONGTYPE and TYPE as Redis", function()
            cli(port, "SET ty-s v")
            cli(port, "LPUSH ty-l v")
            cli(port, "HSET ty-h f v")
            cli(port, "SADD ty-set v")
            cli(port, "ZADD ty-z 1 v")
            for key, kind in pairs({ ["ty-s"] = "string", ["ty-l"] = "list",
                                     ["ty-h"] = "hash", ["ty-set"] = "set",
                                     ["ty-z"] = "zset", ["ty-none"] = "none" }) do
                assert.equal(kind, cli(port, "TYPE " .. key))
            end
            local wrong = "(error) WRONGTYPE Operation against a key holding " ..
                          "the wrong kind of value"
            assert.equal(wrong, cli(port, "--no-raw GET ty-l"))
            assert.equal(wrong, cli(port, "--no-raw INCR ty-h"))
            assert.equal(wrong, cli(port, "--no-raw LPUSH ty-s x"))
            assert.equal(wrong, cli(port, "--no-raw HGET ty-set f"))
            assert.equal(wrong, cli(port, "--no-raw SADD ty-z x"))
            assert.equal(wrong, cli(port, "--no-raw ZADD ty-s 1 x"))
            assert.equal("OK", cli(port, "SET ty-l now-a-string"))
            assert.equal("string", cli(port, "TYPE ty-l"))
        end)

        it("lists KEYS by glob and SCANs every key once", function()
            local c = connect(port)
            assert(c:send(resp("SELECT", "5")))
            assert.equal("OK", read_reply(c))
            local names = { "user:1", "user:2", "user:10", "usr:1", "a*b", "a?b",
                            "[x]", "hello", "hallo", "hxllo", "h.llo", "^$%" }
            for _, k in ipairs(names) do
                assert(c:send(resp("SET", k, "v")))
                assert.equal("OK", read_reply(c))
            end
            local function keys(pattern)
                assert(c:send(resp("KEYS", pattern)))
                local list = read_reply(c)
                table.sort(list)
                return list
            end
            assert.same({ "user:1", "user:10", "user:2" }, keys("user:*"))
            assert.same({ "user:1", "user:2" }, keys("user:?"))
            assert.same({ "hallo", "hello" }, keys("h[ae]llo"))
            assert.same({ "h.llo", "hxllo" }, keys("h[^ae]llo"))
            assert.same({ "hallo", "hello" }, keys("h[a-e]llo"))
            assert.same({ "a*b" }, keys("a\\*b"))
            assert.same({ "a*b", "a?b" }, keys("a?b"))
            assert.same({ "[x]" }, keys("\\[*"))
            assert.same({ "^$%" }, keys("^$%"))
            assert.same({ "h.llo" }, keys("h.llo"))
            assert.same({ "user:1", "usr:1" }, keys("u*:1"))
            assert.same({ "user:1", "user:10", "usr:1" }, keys("*s*1*"))
            assert.same({}, keys("*zzz*"))
            table.sort(names)
            assert.same(names, keys("*"))
            -- a pattern that would backtrack for ages as one Lua pattern
            assert(c:send(resp("SET", ("a"):rep(5000), "v")))
            read_reply(c)
            local t0 = helpers.now()
            assert.same({}, keys(("*a"):rep(30) .. "*b"))
            assert.truthy(helpers.now() - t0 < 2)
            assert(c:send(resp("DEL", ("a"):rep(5000))))
            read_reply(c)
            -- SCAN with COUNT 3 until cursor 0: each key exactly once
            local seen, cursor, rounds = {}, "0", 0
            repeat
                assert(c:send(resp("SCAN", cursor, "COUNT", "3")))
                local r = read_reply(c)
                cursor = r[1]
                for _, k in ipairs(r[2]) do
                    assert.is_nil(seen[k], k)
                    seen[k] = true
                end
                rounds = rounds + 1
            until cursor == "0" or rounds > 100
            assert.equal("0", cursor)
            local all = {}
            for k in pairs(seen) do all[#all + 1] = k end
            table.sort(all)
            assert.same(names, all)
            assert(c:send(resp("SCAN", "0", "MATCH", "user:*", "COUNT", "100")))
            local r = read_reply(c)
            table.sort(r[2])
            assert.same({ "0", { "user:1", "user:10", "user:2" } }, r)
            assert(c:send(resp("SCAN", "12345678901") .. resp("FLUSHDB") ..
                          resp("DBSIZE")))
            assert.same({ err = "ERR invalid cursor" }, read_reply(c))
            assert.equal("OK", read_reply(c))
            assert.equal(0, read_reply(c))
        end)

        it("keeps each SELECTed database apart", function()
            assert.equal("OK", cli(port, "-n 2 SET same two"))
            assert.equal("OK", cli(port, "-n 3 SET same three"))
            assert.equal("two", cli(port, "-n 2 GET same"))
            assert.equal("three", cli(port, "-n 3 GET same"))
            assert.equal("(nil)", cli(port, "--no-raw GET same"))
            assert.equal("OK", cli(port, "-n 3 FLUSHDB"))
            assert.equal("two", cli(port, "-n 2 GET same"))
            assert.equal("(integer) 0", cli(port, "--no-raw -n 3 DBSIZE"))
            assert.matches("db2:keys=1,expires=0", cli(port, "INFO keyspace"), 1, true)
            assert.equal("(error) ERR DB index is out of range",
                         cli(port, "--no-raw SELECT 16"))
        end)

        it("runs MULTI/EXEC transactions and aborts one with a bad command", function()
            local out = cli(port, "", "MULTI\nSET tx 1\nINCR tx\nGET tx\nEXEC\n")
            assert.equal("OK\nQUEUED\nQUEUED\nQUEUED\nOK\n2\n2", out)
            out = cli(port, "--no-raw", "MULTI\nINCR tx\nNOPE\nEXEC\nGET tx\n")
            assert.equal("OK\nQUEUED\n(error) ERR unknown command 'NOPE', with args " ..
                         "beginning with: \n(error) EXECABORT Transaction discarded " ..
                         "because of previous errors.\n\"2\"", out)
            assert.equal("(error) ERR EXEC without MULTI", cli(port, "--no-raw EXEC"))
        end)

        it("answers HELLO, CLIENT and CONFIG GET as client tools expect", function()
            assert.matches("^server\nredis\nversion\n6%.2%.0\nproto\n2\nid\n%d+\n" ..
                           "mode\nstandalone\nrole\nmaster\nmodules", cli(port, "HELLO 2"))
            assert.equal("(error) NOPROTO sorry, this protocol version is not supported",
                         cli(port, "--no-raw HELLO 3"))
            assert.equal("OK\nme", cli(port, "", "CLIENT SETNAME me\nCLIENT GETNAME\n"))
            assert.equal("save\n\nappendonly\nno", cli(port, "", "CONFIG GET save\n" ..
                         "CONFIG GET appendonly\n"))
        end)

        it("answers inline commands piped into redis-cli, in order", function()
            local out = cli(port, "", "PING\r\nSET piped 1\r\nINCR piped\r\n")
            assert.equal("PONG\nOK\n2", out)
        end)

        it("takes RESP from redis-cli --pipe", function()
            local input = resp("SET", "mass", "10") .. resp("INCR", "mass") ..
                          resp("INCRBY", "mass", "5") .. resp("GET", "nope")
            local out, status = cli(port, "--pipe", input)
            assert.equal(0, status, out)
            assert.matches("errors: 0, replies: 4", out, 1, true)
            assert.equal("16", cli(port, "GET mass"))
        end)
    end)

    describe("with raw writes", function()
        it("answers several RESP commands sent in one write, in order", function()
            local c = connect(port)
            assert(c:send(resp("SET", "raw", "1") .. resp("INCR", "raw") ..
                          resp("GET", "raw") .. resp("PING") ..
                          resp("EXISTS", "raw", "none") .. resp("DEL", "raw") ..
                          resp("GET", "raw") .. resp("INCR", "raw", "x") ..
                          resp("ECHO", "with\r\nCRLF") .. resp("COMMAND")))
            assert.equal("OK", read_reply(c))
            assert.equal(2, read_reply(c))
            assert.equal("2", read_reply(c))
            assert.equal("PONG", read_reply(c))
            assert.equal(1, read_reply(c))
            assert.equal(1, read_reply(c))
            assert.equal(false, read_reply(c))
            assert.same({ err = "ERR wrong number of arguments for 'incr' command" },
                        read_reply(c))
            assert.equal("with\r\nCRLF", read_reply(c))
            assert.same({}, read_reply(c))
        end)

        it("takes a 1 MiB value sent in pieces", function()
            local value = ("0123456789abcdef"):rep(64 * 1024)
            local req = resp("SET", "large", value) .. resp("GET", "large")
            local c = connect(port)
            for i = 1, #req, 100000 do
                assert(c:send(req:sub(i, i + 99999)))
            end
            assert.equal("OK", read_reply(c))
            assert.equal(value, read_reply(c))
        end)

        it("splits inline commands with quotes as redis-cli does", function()
            local c = connect(port)
            assert(c:send("SET 'in line' \"a\\x41\\tb\"\r\n" ..
                          "GET \"in line\"\n" ..
                          "\r\n" ..                 -- empty: ignored
                          "  exists  'in line'  \r\n" ..
                          "ECHO 'it\\'s'\r\n"))
            assert.equal("OK", read_reply(c))
            assert.equal("aA\tb", read_reply(c))
            assert.equal(1, read_reply(c))
            assert.equal("it's", read_reply(c))
        end)

        it("ignores *0 and *-1", function()
            local c = connect(port)
            assert(c:send("*0\r\n*-1\r\n" .. resp("PING")))
            assert.equal("PONG", read_reply(c))
        end)

        it("answers QUIT with OK and closes", function()
            local c = connect(port)
            assert(c:send(resp("QUIT") .. resp("PING")))
            assert.equal("+OK\r\n", helpers.receive_all(c))
        end)

        it("answers 1000 pipelined commands in one write, in order", function()
            local c = connect(port)
            local parts = {}
            for i = 1, 1000 do parts[i] = resp("INCR", "pipelined") end
            assert(c:send(table.concat(parts)))
            for i = 1, 1000 do assert.equal(i, read_reply(c)) end
        end)

        it("takes commands split at every byte", function()
            local c = connect(port)
            c:setoption("tcp-nodelay", true)
            local req = resp("SET", "split", "a\r\nb") .. "GET split\r\n" ..
                        resp("APPEND", "split", "c")
            for i = 1, #req do
                assert(c:send(req:sub(i, i)))
                if i % 8 == 0 then helpers.sleep(0.001) end
            end
            assert.equal("OK", read_reply(c))
            assert.equal("a\r\nb", read_reply(c))
            assert.equal(5, read_reply(c))
        end)

        -- Sends SET big <size bytes>, STRLEN, GET on c and checks the replies.
        local function round_trip(c, size)
            local value = ("0123456789abcdef"):rep(size // 16) .. ("z"):rep(size % 16)
            local req = resp("SET", "big", value) .. resp("STRLEN", "big") ..
                        resp("GET", "big")
            for i = 1, #req, 1000000 do assert(c:send(req:sub(i, i + 999999))) end
            assert.equal("OK", read_reply(c))
            assert.equal(#value, read_reply(c))
            assert.equal(value, read_reply(c))
        end

        it("stores values of 300 KB and 8 MiB, its limit, and refuses more", function()
            local c = connect(port)
            c:settimeout(30)
            round_trip(c, 300 * 1000)
            round_trip(c, 8 * 1024 * 1024)
            assert(c:send(resp("DEL", "big")))
            assert.equal(1, read_reply(c))
            local over = connect(port)
            assert(over:send("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$8388609\r\n"))
            assert.equal("-ERR Protocol error: invalid bulk length\r\n",
                         helpers.receive_all(over))
        end)

        it("stores a 24 MiB value with its limits raised by a wrapper", function()
            local big = helpers.start_server{ source = ([[
local handler = dofile(%q)
handler.framing.max_bulk = 100 * 1024 * 1024
handler.framing.max = 256 * 1024 * 1024
return handler
]]):format(assert(io.popen("pwd")):read("*l") .. "/examples/resp.lua") }
            local c = connect(big.port)
            c:settimeout(30)
            round_trip(c, 24 * 1024 * 1024)
            round_trip(c, 100)
        end)

        it("closes only the connection that sent a protocol error", function()
            local good = connect(port)
            assert(good:send(resp("SET", "survivor", "1")))
            assert.equal("OK", read_reply(good))
            local bad = connect(port)
            assert(bad:send("*2\r\n$3\r\nGET\r\n$zz\r\n" .. resp("PING")))
            local got = helpers.receive_all(bad)
            assert.matches("^%-ERR Protocol error: [^\r\n]+\r\n$", got)
            assert(good:send(resp("INCR", "survivor")))
            assert.equal(2, read_reply(good))
        end)

        it("answers a protocol error with -ERR Protocol error and closes", function()
            local bad = {
                ["*x\r\n"] = "invalid multibulk length",
                ["*1\r\n$abc\r\n"] = "invalid bulk length",
                ["*1\r\n$-1\r\n"] = "invalid bulk length",
                ["*1\r\n:4\r\n"] = "expected '$', got ':'",
                ["*1\r\n$4\r\nPINGxx"] = "expected CRLF after bulk data",
                ["SET \"open\r\n"] = "unbalanced quotes in request",
                ["SET \"a\"b\r\n"] = "unbalanced quotes in request",
            }
            for req, msg in pairs(bad) do
                local c = connect(port)
                -- a PING after the error is never answered
                assert(c:send(req .. "\r\nPING\r\n"))
                local all = helpers.receive_all(c)
                assert.equal("-ERR Protocol error: " .. msg .. "\r\n", all)
            end
        end)
    end)

    describe("with redis-benchmark", function()
        -- Runs redis-benchmark with args; returns its result lines
        -- ("NAME: N requests per second, ...") and the other lines,
        -- progress lines (ending in \r) left out.
        local function benchmark(args)
            local status, out = helpers.sh("timeout 300 redis-benchmark -p " .. port ..
                                           " " .. args)
            assert.equal(0, status, out)
            local results, others = {}, {}
            for line in out:gsub("\r", "\n"):gmatch("[^\n]+") do
                if line:find("^[%w_ ()]+: [%d.]+ requests per second") then
                    results[#results + 1] = line:match("^([^:]+):")
                elseif line:find("%S") and not line:find("rps=", 1, true) then
                    others[#others + 1] = line
                end
            end
            return results, others
        end

        local DEFAULT_TESTS = {
            "PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "LPUSH", "RPUSH",
            "LPOP", "RPOP", "SADD", "HSET", "SPOP", "ZADD", "ZPOPMIN",
            "LPUSH (needed to benchmark LRANGE)", "LRANGE_100 (first 100 elements)",
            "LRANGE_300 (first 300 elements)", "LRANGE_500 (first 500 elements)",
            "LRANGE_600 (first 600 elements)", "MSET (10 keys)",
        }

        it("runs the default test set to the end with no error", function()
            if not have("redis-benchmark") then
                return pending("redis-benchmark is not installed")
            end
            local results, others = benchmark("-q -n 2000")
            assert.same(DEFAULT_TESTS, results)
            assert.same({}, others)
        end)

        it("runs the default test set pipelined 16 deep with no error", function()
            if not have("redis-benchmark") then
                return pending("redis-benchmark is not installed")
            end
            local results, others = benchmark("-q -n 2000 -P 16")
            assert.same(DEFAULT_TESTS, results)
            assert.same({}, others)
        end)
    end)

    describe("with redis-py", function()
        it("names the client, sets, expires and runs a transactional pipeline", function()
            if not have_redis_py() then
                return pending("/usr/bin/python3 has no redis module (python3-redis)")
            end
            local status, out = helpers.sh("timeout 60 /usr/bin/python3 " ..
                                           "spec/fixtures/resp_redis_py.py " .. port)
            assert.equal(0, status, out)
            assert.equal(table.concat({
                "set: True",
                "get: b'v1'",
                "expire: True",
                "ttl: 100",
                "persist: True -1",
                "pipeline: [True, 2, 7, b'7', 2, [b'a', b'b'], 1, {b'f': b'1'}]",
                "getname: x",
                "mset: True [b'1', b'2', None]",
                "db3: None True b'three' b'v1'",
                "wrongtype: WRONGTYPE Operation against a key holding the wrong " ..
                    "kind of value",
                "pipeline error: ['Command', '#', '2']",
                "after: b'1'",
            }, "\n") .. "\n", out)
        end)
    end)

    it("leaks no connection or task, and stops cleanly", function()
        local stats = info(port)
        assert.equal("1", stats.connections_active)
        assert.equal("0", stats.tasks)   -- callback style: no task per conn
        assert.equal("0", stats.handler_errors)
        -- neither an idle client nor a pending expiry timer holds up the
        -- shutdown
        local c = connect(port)
        assert(c:send(resp("SET", "far", "x", "EX", "100")))
        assert.equal("OK", read_reply(c))
        local t0 = helpers.now()
        assert.equal(0, srv:stop())
        assert.truthy(helpers.now() - t0 < 5)
    end)
end)

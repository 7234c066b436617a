-- examples/resp.lua, the Redis-protocol key/value server, driven by real
-- redis-cli and by raw luasocket writes.
local helpers = require "helpers"

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

        it("answers a protocol error with -ERR Protocol error and closes", function()
            local bad = {
                ["*x\r\n"] = "invalid multibulk length",
                ["*1\r\n$abc\r\n"] = "invalid bulk length",
                ["*1\r\n$-1\r\n"] = "invalid bulk length",
                ["*1\r\n:4\r\n"] = "expected '$', got ':'",
                ["*1\r\n$4\r\nPINGxx"] = "bulk string not followed by CRLF",
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

    it("leaks no connection or task, and stops cleanly", function()
        local stats = info(port)
        assert.equal("1", stats.connections_active)
        assert.equal("1", stats.tasks)
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

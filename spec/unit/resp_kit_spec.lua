-- luaserv.resp, the Redis-protocol service kit, driven without a server:
-- its on_message gets argument tables as the C framer decodes them, with a
-- stand-in conn.
local resp = require "luaserv.resp"

-- A conn as the kit uses it: an id, close().
local function fake_conn(id)
    return setmetatable({ id = id, closed = false }, { __index = {
        close = function(c) c.closed = true end,
    } })
end

-- A service with GET and SET over a table, its handler, and call(conn,
-- ...) sending one command.
local function new_service(opts)
    local svc = resp.service(opts)
    local store = {}
    svc:command("get", 2, function(args) return resp.bulk(store[args[2]]) end,
                "readonly")
    svc:command("set", 3, function(args)
        store[args[2]] = args[3]
        return resp.OK
    end, "write")
    svc:command("db", 1, function(_, client) return resp.integer(client.db) end)
    local h = svc:handler()
    local function call(conn, ...) return h.on_message(conn, { ... }) end
    return svc, h, call, store
end

describe("luaserv.resp encoders", function()
    it("encodes status, error, integer and bulk replies", function()
        assert.equal("+OK\r\n", resp.status("OK"))
        assert.equal("+a b\r\n", resp.status("a\nb"))
        assert.equal("-ERR bad thing\r\n", resp.error("ERR bad\r\nthing"):gsub("  ", " "))
        assert.equal(":0\r\n", resp.integer(0))
        assert.equal(":-7\r\n", resp.integer(-7))
        assert.equal(":123456789012\r\n", resp.integer(123456789012))
        assert.equal(":3\r\n", resp.integer(3.0))
        assert.error(function() resp.integer(1.5) end)
        assert.equal("$5\r\nhello\r\n", resp.bulk("hello"))
        assert.equal("$0\r\n\r\n", resp.bulk(""))
        assert.equal("$-1\r\n", resp.bulk(nil))
        assert.equal("$2\r\n42\r\n", resp.bulk(42))
        local big = ("x"):rep(70000)
        assert.equal("$70000\r\n" .. big .. "\r\n", resp.bulk(big))
    end)

    it("encodes arrays by element type, nested, with nulls", function()
        assert.equal("*0\r\n", resp.array({}))
        assert.equal("*5\r\n$1\r\na\r\n:1\r\n*2\r\n$1\r\nb\r\n$-1\r\n$-1\r\n$3\r\n2.5\r\n",
                     resp.array({ "a", 1, { "b", resp.null }, false, 2.5 }))
        assert.equal("*2\r\n$1\r\nb\r\n$1\r\nc\r\n",
                     resp.array({ "a", "b", "c", "d" }, 2, 3))
        assert.equal("*0\r\n", resp.array({ "a" }, 2, 1))
        assert.error(function() resp.array({ true }) end)
        -- an error leaves no debris for the next reply
        assert.equal("*1\r\n$1\r\nz\r\n", resp.array({ "z" }))
    end)

    it("has the ready-made constants", function()
        assert.equal("+OK\r\n", resp.OK)
        assert.equal("+QUEUED\r\n", resp.QUEUED)
        assert.equal(":0\r\n", resp.ZERO)
        assert.equal(":1\r\n", resp.ONE)
        assert.equal("$-1\r\n", resp.NULL)
        assert.equal("*0\r\n", resp.EMPTY_ARRAY)
    end)

    it("reads integers as Redis does", function()
        assert.equal(12, resp.to_integer("12"))
        assert.equal(-3, resp.to_integer("-3"))
        assert.equal(math.maxinteger, resp.to_integer("9223372036854775807"))
        for _, bad in ipairs({ "", "+1", " 1", "01", "1.0", "1e3", "-", "-0x1",
                               "99999999999999999999" }) do
            assert.is_nil(resp.to_integer(bad), bad)
        end
    end)
end)

describe("luaserv.resp service", function()
    it("builds a handler table for framing resp", function()
        local _, h = new_service({ on_connect = function() end })
        assert.equal("resp", h.framing)
        assert.is_function(h.on_message)
        assert.is_function(h.on_close)
        assert.is_function(h.on_connect)
        local _, h2 = new_service({ framing = { "resp", max_bulk = 100 } })
        assert.same({ "resp", max_bulk = 100 }, h2.framing)
    end)

    it("dispatches by name in any case and checks arity as Redis", function()
        local _, _, call = new_service()
        local c = fake_conn(1)
        assert.equal("+OK\r\n", call(c, "SET", "k", "v"))
        assert.equal("$1\r\nv\r\n", call(c, "get", "k"))
        assert.equal("$1\r\nv\r\n", call(c, "gEt", "k"))
        assert.equal("-ERR wrong number of arguments for 'get' command\r\n",
                     call(c, "GET"))
        assert.equal("-ERR wrong number of arguments for 'set' command\r\n",
                     call(c, "SET", "a", "b", "c"))
        assert.equal("-ERR unknown command 'FROB', with args beginning with: " ..
                     "'a' 'b c' \r\n", call(c, "FROB", "a", "b c"))
        assert.equal("-ERR unknown command 'x', with args beginning with: \r\n",
                     call(c, "x"))
        assert.error(function() resp.service():command("x", 0, print) end)
        assert.error(function() resp.service():command("x", 1, "nope") end)
    end)

    it("answers PING, ECHO and QUIT", function()
        local _, _, call = new_service()
        local c = fake_conn(1)
        assert.equal("+PONG\r\n", call(c, "PING"))
        assert.equal("$2\r\nhi\r\n", call(c, "PING", "hi"))
        assert.equal("-ERR wrong number of arguments for 'ping' command\r\n",
                     call(c, "PING", "a", "b"))
        assert.equal("$4\r\na\r\nb\r\n", call(c, "ECHO", "a\r\nb"))
        assert.equal("+OK\r\n", call(c, "QUIT"))
        assert.is_true(c.closed)
    end)

    it("keeps SELECT's database and CLIENT's name per connection", function()
        local svc, h, call = new_service()
        local a, b = fake_conn(11), fake_conn(12)
        assert.equal("+OK\r\n", call(a, "SELECT", "15"))
        assert.equal(":15\r\n", call(a, "DB"))
        assert.equal(":0\r\n", call(b, "DB"))
        assert.equal("-ERR DB index is out of range\r\n", call(a, "SELECT", "16"))
        assert.equal("-ERR DB index is out of range\r\n", call(a, "SELECT", "-1"))
        assert.equal("-ERR value is not an integer or out of range\r\n",
                     call(a, "SELECT", "x"))
        assert.equal("+OK\r\n", call(a, "CLIENT", "SETNAME", "worker-1"))
        assert.equal("$8\r\nworker-1\r\n", call(a, "client", "getname"))
        assert.equal("$-1\r\n", call(b, "CLIENT", "GETNAME"))
        assert.equal(":12\r\n", call(b, "CLIENT", "ID"))
        assert.equal("+OK\r\n", call(b, "CLIENT", "SETINFO", "LIB-NAME", "x"))
        assert.matches("^%-ERR Client names cannot contain spaces",
                       call(b, "CLIENT", "SETNAME", "a b"))
        assert.equal("-ERR unknown subcommand 'KILLALL'. Try CLIENT HELP.\r\n",
                     call(b, "CLIENT", "KILLALL"))
        assert.equal("-ERR wrong number of arguments for 'client|getname' command\r\n",
                     call(b, "CLIENT", "GETNAME", "x"))
        -- on_close drops the session: a new conn starts fresh
        assert.is_table(svc.sessions[a])
        h.on_close(a, "eof")
        assert.is_nil(svc.sessions[a])
        assert.equal("3", resp.service({ databases = 3 }).config.databases)
        local small = resp.service({ databases = 2 }):handler()
        assert.equal("-ERR DB index is out of range\r\n",
                     small.on_message(fake_conn(1), { "SELECT", "2" }))
    end)

    it("answers HELLO as Redis 6 does for RESP2", function()
        local _, _, call = new_service()
        local c = fake_conn(42)
        local want = "*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n" ..
                     "$5\r\n6.2.0\r\n$5\r\nproto\r\n:2\r\n$2\r\nid\r\n:42\r\n" ..
                     "$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n" ..
                     "$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"
        assert.equal(want, call(c, "HELLO"))
        assert.equal(want, call(c, "HELLO", "2"))
        assert.equal("-NOPROTO sorry, this protocol version is not supported\r\n",
                     call(c, "HELLO", "3"))
        assert.equal("-NOPROTO unsupported protocol version\r\n", call(c, "HELLO", "4"))
        assert.equal("-ERR Protocol version is not an integer or out of range\r\n",
                     call(c, "HELLO", "two"))
        assert.equal(want, call(c, "HELLO", "2", "SETNAME", "n1"))
        assert.equal("$2\r\nn1\r\n", call(c, "CLIENT", "GETNAME"))
        assert.equal("-ERR Syntax error in HELLO option 'BOGUS'\r\n",
                     call(c, "HELLO", "2", "BOGUS"))
    end)

    it("answers COMMAND, COMMAND DOCS, COMMAND COUNT and CONFIG GET", function()
        local svc, _, call = new_service()
        local c = fake_conn(1)
        assert.equal("*0\r\n", call(c, "COMMAND"))
        assert.equal("*0\r\n", call(c, "COMMAND", "DOCS"))
        local n = 0
        for _ in pairs(svc.commands) do n = n + 1 end
        assert.equal(":" .. n .. "\r\n", call(c, "COMMAND", "COUNT"))
        assert.equal("*2\r\n$4\r\nsave\r\n$0\r\n\r\n", call(c, "CONFIG", "GET", "save"))
        assert.equal("*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
                     call(c, "CONFIG", "GET", "APPENDONLY"))
        assert.equal("*0\r\n", call(c, "CONFIG", "GET", "maxmemory"))
        assert.equal("-ERR unknown subcommand 'SET'. Try CONFIG HELP.\r\n",
                     call(c, "CONFIG", "SET", "a", "b"))
    end)

    it("queues commands in MULTI and answers their replies at EXEC", function()
        local _, _, call, store = new_service()
        local c, other = fake_conn(1), fake_conn(2)
        assert.equal("-ERR EXEC without MULTI\r\n", call(c, "EXEC"))
        assert.equal("-ERR DISCARD without MULTI\r\n", call(c, "DISCARD"))
        assert.equal("+OK\r\n", call(c, "MULTI"))
        assert.equal("-ERR MULTI calls can not be nested\r\n", call(c, "MULTI"))
        assert.equal("+QUEUED\r\n", call(c, "SET", "t", "1"))
        assert.equal("+QUEUED\r\n", call(c, "GET", "t"))
        assert.equal("+QUEUED\r\n", call(c, "PING"))
        assert.is_nil(store.t)                       -- not run yet
        assert.equal("$-1\r\n", call(other, "GET", "t"))  -- others unaffected
        assert.equal("*3\r\n+OK\r\n$1\r\n1\r\n+PONG\r\n", call(c, "EXEC"))
        assert.equal("1", store.t)
        assert.equal("-ERR EXEC without MULTI\r\n", call(c, "EXEC"))
        -- EXEC of nothing
        call(c, "MULTI")
        assert.equal("*0\r\n", call(c, "EXEC"))
        -- DISCARD drops the queue
        call(c, "MULTI")
        call(c, "SET", "t", "2")
        assert.equal("+OK\r\n", call(c, "DISCARD"))
        assert.equal("1", store.t)
    end)

    it("aborts EXEC after an unknown command or a wrong arity in MULTI", function()
        local _, _, call, store = new_service()
        local c = fake_conn(1)
        for _, bad in ipairs({ { "NOPE", "x" }, { "GET" } }) do
            call(c, "MULTI")
            assert.equal("+QUEUED\r\n", call(c, "SET", "u", "1"))
            assert.matches("^%-ERR ", call(c, table.unpack(bad)))
            assert.equal("-EXECABORT Transaction discarded because of previous errors.\r\n",
                         call(c, "EXEC"))
            assert.is_nil(store.u)
        end
        -- the next transaction is clean
        call(c, "MULTI")
        call(c, "SET", "u", "2")
        assert.equal("*1\r\n+OK\r\n", call(c, "EXEC"))
    end)

    it("runs noqueue commands at once inside MULTI", function()
        local svc, _, call = new_service()
        local ran = 0
        svc:command("now", 1, function()
            ran = ran + 1
            return resp.OK
        end, "noqueue readonly")
        local c = fake_conn(1)
        call(c, "MULTI")
        assert.equal("+OK\r\n", call(c, "NOW"))
        assert.equal(1, ran)
        assert.equal("*0\r\n", call(c, "EXEC"))
        assert.same({ noqueue = true, readonly = true }, svc:find("Now").flags)
    end)

    it("flattens a handler's table of pieces inside EXEC", function()
        local svc, _, call = new_service()
        svc:command("pieces", 1, function() return { "+a", "b\r\n" } end)
        local c = fake_conn(1)
        assert.same({ "+a", "b\r\n" }, call(c, "PIECES"))
        call(c, "MULTI")
        call(c, "PIECES")
        assert.equal("*1\r\n+ab\r\n", call(c, "EXEC"))
    end)
end)

-- The handler API over real sockets: on_accept, on_connect, on_close
-- reasons, conn fields and methods, replies, timeouts, pause/resume,
-- luaserv.stats() and luaserv.log. The fixture is
-- spec/fixtures/handler_commands.lua.
local helpers = require "helpers"

local SCRIPT = "spec/fixtures/handler_commands.lua"

local defer = helpers.defer
local read_to_close = helpers.read_to_close
local cmd = helpers.command
local stats = helpers.stats

-- Starts the fixture, from lazy_setup: lazy_teardown stops it.
local function start(args)
    return helpers.start_server{ script = SCRIPT, args = args }
end

-- Connects and reads the greeting; returns the client and the conn id.
local function session(port)
    local c = helpers.connect(port, 10)
    local hello = assert(c:receive("*l"))
    local id = tonumber(hello:match("^hello (%d+)$"))
    assert(id, "bad greeting: " .. hello)
    return c, id
end

-- The close reason of conn id, asked on a fresh connection; waits until
-- on_close has run.
local function reason_of(port, id)
    return helpers.reason_of(session(port), id)
end

-- Reads c until the server closes it, then asserts that on_close of conn
-- id got reason. Returns what was read and when the read ended.
local function closed_with(port, c, id, reason)
    local data, err = read_to_close(c)
    local t = helpers.now()
    assert.equal("closed", err)
    assert.equal(reason, reason_of(port, id))
    return data, t
end

-- Has the fixture keep a conn, closes it from this side, waits for
-- on_close, and returns what the fixture then says about the kept conn
-- ("old"), and its id.
local function old_conn(port)
    local a, id = session(port)
    assert.equal("kept " .. id, cmd(a, "keep"))
    a:close()
    assert.equal("eof", reason_of(port, id))
    local b = session(port)
    local old = cmd(b, "old")
    b:close()
    return old, id
end

-- Checks that no line arrives on c for 0.3 s.
local function assert_silent(c)
    c:settimeout(0.3)
    local got, err = c:receive("*l")
    assert.is_nil(got)
    assert.equal("timeout", err)
    c:settimeout(10)
end

-- Waits until only the asking connection is open, and checks it.
local function assert_no_leak(port)
    local c = session(port)
    local active = helpers.wait_for(function()
        local s = stats(c)
        return s.connections_active == 1 and s.connections_active
    end, 10)
    c:close()
    assert.equal(1, active)
end

describe("on_accept", function()
    local srv

    lazy_setup(function()
        srv = start()
    end)

    lazy_teardown(function()
        if srv then srv:stop() end
    end)

    -- Has on_accept refuse connections (line is the fixture's "refuse"
    -- command) until the test ends, and checks that the server closes a
    -- new connection without sending a byte.
    local function assert_refused(line)
        local ctl = session(srv.port)
        defer(function() cmd(ctl, "accept"); ctl:close() end)
        assert.equal("refusing", cmd(ctl, line))
        local data, err = read_to_close(helpers.connect(srv.port, 10))
        assert.equal("", data)
        assert.equal("closed", err)
    end

    it("gets the peer address and the listener", function()
        local c = session(srv.port)
        local _, port = c:getsockname()
        assert.equal(("127.0.0.1:%d tcp://127.0.0.1:%d"):format(port, srv.port),
                     cmd(c, "accepted"))
        c:close()
    end)

    it("refuses a connection when it returns false and a reason", function()
        assert_refused("refuse go away")
        assert.is_truthy(helpers.wait_for(function()
            return srv:log():match("refused 127%.0%.0%.1:%d+: go away")
        end, 5), "no refusal with its reason in the log:\n" .. srv:log())
    end)

    it("refuses a connection when it returns false alone", function()
        assert_refused("refuse")
    end)

    it("accepts a connection when it returns true", function()
        local ctl = session(srv.port)
        cmd(ctl, "refuse")
        assert.equal("accepting", cmd(ctl, "accept"))
        local c = session(srv.port)
        assert.equal("echo hi", cmd(c, "hi"))
        c:close()
        ctl:close()
    end)

    it("accepts a connection when it returns nothing", function()
        local ctl = session(srv.port)
        defer(function() cmd(ctl, "accept"); ctl:close() end)
        assert.equal("accepting with nil", cmd(ctl, "acceptnil"))
        local c = session(srv.port)
        assert.equal("echo hi", cmd(c, "hi"))
        c:close()
    end)

    it("leaves no connection open and exits 0 on SIGTERM", function()
        assert_no_leak(srv.port)
        assert.equal(0, srv:stop())
    end)
end)

describe("a handler", function()
    local srv

    lazy_setup(function()
        srv = start()
    end)

    lazy_teardown(function()
        if srv then srv:stop() end
    end)

    it("can write a greeting from on_connect", function()
        local c = helpers.connect(srv.port, 10)
        assert.matches("^hello %d+$", assert(c:receive("*l")))
        c:close()
    end)

    it("sees conn fields describing the connection", function()
        local c, id = session(srv.port)
        local ip, port = c:getsockname()
        assert.equal("127.0.0.1", ip)
        local want = table.concat({
            "127.0.0.1:" .. port, "127.0.0.1", "integer", tostring(port),
            "127.0.0.1:" .. srv.port, "integer", tostring(id),
            "tcp://127.0.0.1:" .. srv.port }, " ")
        assert.equal(want, cmd(c, "fields"))
        c:close()
    end)

    it("sees a peer of the form 127.0.0.1:PORT", function()
        local c = session(srv.port)
        local peer = cmd(c, "fields"):match("^(%S+)")
        assert.matches("^127%.0%.0%.1:%d+$", peer)
        c:close()
    end)

    it("sees a distinct id on every connection", function()
        local seen, clients = {}, {}
        for i = 1, 5 do
            local c, id = session(srv.port)
            clients[i] = c
            assert.is_nil(seen[id])
            seen[id] = true
        end
        for _, c in ipairs(clients) do c:close() end
    end)

    it("keeps conn.state across the messages of one connection", function()
        local a = session(srv.port)
        assert.equal("1", cmd(a, "count"))
        assert.equal("2", cmd(a, "count"))
        local b = session(srv.port)
        assert.equal("1", cmd(b, "count"))
        assert.equal("3", cmd(a, "count"))
        a:close()
        b:close()
    end)

    it("sends a reply given as a table of strings and numbers", function()
        local c = session(srv.port)
        assert.equal("ab31.5", cmd(c, "table"))
        c:close()
    end)

    it("sends nothing for a nil reply", function()
        local c = session(srv.port)
        assert(c:send("nil\nping\n"))
        assert.equal("echo ping", assert(c:receive("*l")))
        c:close()
    end)

    it("still sends the reply of the on_message that called conn:close()",
       function()
        local c, id = session(srv.port)
        assert(c:send("close\nping\n"))
        assert.equal("bye\n", closed_with(srv.port, c, id, "closed"))
    end)

    it("gets nil, 'closed' from conn:write after conn:close()", function()
        local c = session(srv.port)
        assert(c:send("closewrite\n"))
        local data, err = read_to_close(c)
        assert.equal("write nil closed is_closed true\n", data)
        assert.equal("closed", err)
    end)

    it("sees only id and state on a conn after it closed, and nil, 'closed' " ..
       "from its methods", function()
        local old, id = old_conn(srv.port)
        assert.matches(("^id %d state kept peer nil peer_ip nil peer_port nil " ..
                        "local_addr nil listener nil is_closed true "):format(id),
                       old)
        for _, m in ipairs({ "write", "set_framing", "set_timeout", "pause",
                             "resume" }) do
            assert.matches(" " .. m .. "=nil,closed", old, 1, true)
        end
    end)

    it("gets nil, 'closed' from conn:close() on a conn that closed", function()
        local old = old_conn(srv.port)
        assert.matches(" close=nil,closed", old, 1, true)
    end)

    it("calls on_close with 'eof' when the peer closes", function()
        local c, id = session(srv.port)
        c:close()
        assert.equal("eof", reason_of(srv.port, id))
    end)

    it("calls on_close with 'eof' when the peer half-closes", function()
        local c, id = session(srv.port)
        c:shutdown("send")
        closed_with(srv.port, c, id, "eof")
    end)

    it("calls on_close with 'closed' after conn:close()", function()
        local c, id = session(srv.port)
        assert.equal("bye", cmd(c, "close"))
        c:close()
        assert.equal("closed", reason_of(srv.port, id))
    end)

    it("calls on_close with 'error' after a handler error", function()
        local c, id = session(srv.port)
        assert(c:send("boom\n"))
        closed_with(srv.port, c, id, "error")
    end)

    it("closes an idle connection after conn:set_timeout() with reason " ..
       "'timeout'", function()
        local c, id = session(srv.port)
        local t0 = helpers.now()
        assert.equal("timeout 0.2", cmd(c, "timeout 0.2"))
        local data, t1 = closed_with(srv.port, c, id, "timeout")
        local elapsed = t1 - t0
        assert.equal("", data)
        assert.is_true(elapsed >= 0.15, "closed after " .. elapsed .. " s")
    end)

    it("keeps the connection open while on_timeout returns true", function()
        local c, id = session(srv.port)
        assert.equal("ticks 2", cmd(c, "ticks 2"))
        assert.equal("timeout 0.2", cmd(c, "timeout 0.2"))
        assert.equal("tick 1\ntick 2\n",
                     closed_with(srv.port, c, id, "timeout"))
    end)

    it("restarts the clock when on_timeout returns true", function()
        local c = session(srv.port)
        cmd(c, "ticks 1")
        local t0 = helpers.now()
        cmd(c, "timeout 0.2")
        assert.equal("tick 1", assert(c:receive("*l")))
        local _, err = read_to_close(c)
        local elapsed = helpers.now() - t0
        assert.equal("closed", err)
        assert.is_true(elapsed >= 0.35, "closed after " .. elapsed .. " s")
    end)

    it("stops calling on_message while paused, until resumed", function()
        local a = session(srv.port)
        local b = session(srv.port)
        assert.equal("paused", cmd(a, "pause"))
        assert(a:send("one\ntwo\n"))
        assert_silent(a)
        assert.equal("resumed", cmd(b, "resume"))
        assert.equal("echo one", assert(a:receive("*l")))
        assert.equal("echo two", assert(a:receive("*l")))
        assert.equal("echo three", cmd(a, "three"))
        a:close()
        b:close()
    end)

    it("holds frames already buffered behind a pause until resumed", function()
        local a = session(srv.port)
        local b = session(srv.port)
        assert(a:send("pause\nx\ny\n"))
        assert.equal("paused", assert(a:receive("*l")))
        assert_silent(a)
        assert.equal("resumed", cmd(b, "resume"))
        assert.equal("echo x", assert(a:receive("*l")))
        assert.equal("echo y", assert(a:receive("*l")))
        a:close()
        b:close()
    end)

    it("sees luaserv.stats() counters move with traffic", function()
        local a = session(srv.port)
        local s1 = stats(a)
        local reply1 = #cmd(a, "stats") + 1   -- only its length matters
        local s2 = stats(a)
        -- "stats\n" twice: 2 messages, 12 bytes in; the first reply out
        assert.equal(s1.messages + 2, s2.messages)
        assert.equal(s1.bytes_received + 12, s2.bytes_received)
        assert.is_true(s2.bytes_sent >= s1.bytes_sent + reply1)

        local b, id = session(srv.port)
        local s3 = stats(a)
        assert.equal(s2.connections_total + 1, s3.connections_total)
        assert.equal(s2.connections_active + 1, s3.connections_active)
        assert.equal("echo hello", cmd(b, "hello"))
        assert(b:send("boom\n"))
        read_to_close(b)
        assert.equal("error", reason_of(srv.port, id))
        -- once b and reason_of's connection have closed
        local s4 = helpers.wait_for(function()
            local s = stats(a)
            return s.connections_active == s2.connections_active and s
        end, 10)
        assert.is_truthy(s4, "connections_active did not come back")
        -- b: "hello\n" and "boom\n" (11 bytes); reason_of: one connection
        -- and at least one "reason N\n"
        assert.is_true(s4.messages >= s3.messages + 4)
        assert.is_true(s4.bytes_received >= s3.bytes_received + 11)
        assert.is_true(s4.bytes_sent > s3.bytes_sent)
        assert.equal(s3.handler_errors + 1, s4.handler_errors)
        assert.equal(s3.connections_total + 1, s4.connections_total)
        assert.equal(s1.datagrams, s4.datagrams)
        a:close()
    end)

    it("writes luaserv.log.info() to the server log with file:line", function()
        local line = helpers.line_of(SCRIPT, 'luaserv.log.info("note')
        local c = session(srv.port)
        assert.equal("logged", cmd(c, "log"))
        c:close()
        local want = " info " .. SCRIPT .. ":" .. line .. ": note hello 42\n"
        assert.is_truthy(helpers.wait_for(function()
            return srv:log():find(want, 1, true)
        end, 5), "no line with '" .. want .. "' in:\n" .. srv:log())
    end)

    it("leaves no connection open and exits 0 on SIGTERM", function()
        assert_no_leak(srv.port)
        assert.equal(0, srv:stop())
    end)
end)

describe("--idle-timeout", function()
    local srv

    lazy_setup(function()
        srv = start({ "--idle-timeout", "0.3" })
    end)

    lazy_teardown(function()
        if srv then srv:stop() end
    end)

    it("closes a connection idle that long with reason 'timeout'", function()
        local c, id = session(srv.port)
        local t0 = helpers.now()
        local data, t1 = closed_with(srv.port, c, id, "timeout")
        local elapsed = t1 - t0
        assert.equal("", data)
        assert.is_true(elapsed >= 0.2, "closed after " .. elapsed .. " s")
    end)

    it("keeps a connection with traffic open past the timeout", function()
        local c = session(srv.port)
        for i = 1, 8 do
            helpers.sleep(0.1)
            assert.equal("echo " .. i, cmd(c, tostring(i)))
        end
        local _, err = read_to_close(c)
        assert.equal("closed", err)
    end)

    it("is turned off for a connection by conn:set_timeout(0)", function()
        local c = session(srv.port)
        assert.equal("timeout 0", cmd(c, "timeout 0"))
        helpers.sleep(0.8)
        assert.equal("echo still here", cmd(c, "still here"))
        c:close()
    end)

    it("leaves no connection open and exits 0 on SIGTERM", function()
        assert_no_leak(srv.port)
        assert.equal(0, srv:stop())
    end)
end)

-- The timestamp server (scripts/handle.lua) over each kind of listener:
-- UDP, unix stream, unix datagram, IPv6; ready lines and half-close.
local helpers = require "helpers"
local socket = require "socket"
local unix = require "socket.unix"

local CTIME = helpers.CTIME
local SCRIPT = "scripts/handle.lua"
local WHOAMI = "spec/fixtures/whoami.lua"
local TIMEOUT = helpers.sanitize and 15 or 5

-- Whether path is a socket file (io.open cannot open one).
local function is_socket(path)
    return os.execute("test -S " .. helpers.shell_quote(path)) == true
end

local function udp_client(host, port)
    local u = assert(host:find(":", 1, true) and socket.udp6() or socket.udp())
    u:settimeout(TIMEOUT)
    assert(u:setpeername(host, port))
    return u
end

-- A unix datagram socket bound to its own fresh path, so it gets replies.
-- The socket is closed and its path removed when the test ends.
local function unixgram_client()
    local path = helpers.tmpname(".sock")
    local d = assert(unix.dgram())
    helpers.defer(function()
        d:close()
        os.remove(path)
    end)
    d:settimeout(TIMEOUT)
    assert(d:bind(path))
    return d
end

-- Whether this host can bind ::1 (no IPv6 on loopback in some containers).
local function have_ipv6_loopback()
    local s = socket.tcp6 and socket.tcp6()
    if not s then return false end
    local ok = s:bind("::1", 0)
    s:close()
    return ok ~= nil
end

-- Sends three lines, half-closes, and checks that the reply to each
-- arrives before EOF; closes c.
local function assert_replies_then_eof(c)
    assert(c:send("one\ntwo\r\nthree\n"))
    assert(c:shutdown("send"))
    local data, err, partial = c:receive("*a")
    c:close()
    assert.is_nil(err)
    assert.matches("^" .. CTIME .. "one\n" .. CTIME .. "two\r\n" ..
                   CTIME .. "three\n$", data or partial)
end

describe("the ready line", function()
    it("shows the real port for a TCP listener on port 0", function()
        local srv = helpers.start_server{ script = SCRIPT,
                                          listen = { "127.0.0.1:0" } }
        assert.equal("tcp", srv.addrs[1].kind)
        assert.matches("^127%.0%.0%.1:%d+$", srv.addrs[1].addr)
        assert.is_true(srv.port > 0)
        local c = helpers.connect(srv.port, TIMEOUT)
        assert(c:send("port\n"))
        assert.matches("^" .. CTIME .. "port$", assert(c:receive("*l")))
        c:close()
        assert.equal(0, srv:stop())
    end)

    it("shows the real port for a udp:// listener on port 0", function()
        local srv = helpers.start_server{ script = SCRIPT,
                                          listen = { "udp://127.0.0.1:0" } }
        assert.equal("udp", srv.addrs[1].kind)
        assert.matches("^127%.0%.0%.1:%d+$", srv.addrs[1].addr)
        assert.is_true(srv.port > 0)
        assert.equal(0, srv:stop())
    end)

    it("prints one line per listener, in command-line order", function()
        local path = helpers.tmpname(".sock")
        local srv = helpers.start_server{ script = SCRIPT, listen = {
            "tcp://127.0.0.1:0", "udp://127.0.0.1:0", "unix:" .. path } }
        assert.equal(3, #srv.addrs)
        assert.equal("tcp", srv.addrs[1].kind)
        assert.equal("udp", srv.addrs[2].kind)
        assert.equal("unix", srv.addrs[3].kind)
        assert.equal(path, srv.addrs[3].addr)
        assert.equal(0, srv:stop())
    end)
end)

describe("a UDP listener", function()
    local srv

    lazy_setup(function()
        srv = helpers.start_server{ script = SCRIPT, no_finally = true,
                                    listen = { "udp://127.0.0.1:0" } }
    end)

    lazy_teardown(function()
        if srv then srv:stop() end
    end)

    it("answers a datagram with [ctime] and the datagram", function()
        local u = udp_client("127.0.0.1", srv.port)
        assert(u:send("hi\n"))
        local reply = assert(u:receive())
        u:close()
        assert.matches("^" .. CTIME .. "hi\n$", reply)
    end)

    it("answers each datagram with its own datagram, in order", function()
        local u = udp_client("127.0.0.1", srv.port)
        for i = 1, 5 do assert(u:send("dgram " .. i .. "\r\n")) end
        for i = 1, 5 do
            assert.matches("^" .. CTIME .. "dgram " .. i .. "\r\n$",
                           assert(u:receive()))
        end
        u:close()
    end)

    it("answers a datagram without a newline as it came", function()
        local u = udp_client("127.0.0.1", srv.port)
        assert(u:send("no newline"))
        assert.matches("^" .. CTIME .. "no newline$", assert(u:receive()))
        u:close()
    end)

    it("answers two senders, each with its own reply", function()
        local a = udp_client("127.0.0.1", srv.port)
        local b = udp_client("127.0.0.1", srv.port)
        assert(a:send("from a\n"))
        assert(b:send("from b\n"))
        assert.matches("^" .. CTIME .. "from b\n$", assert(b:receive()))
        assert.matches("^" .. CTIME .. "from a\n$", assert(a:receive()))
        a:close()
        b:close()
    end)
end)

describe("a datagram conn", function()
    it("has id 0 and the sender as its peer", function()
        local srv = helpers.start_server{ script = WHOAMI,
                                          listen = { "udp://127.0.0.1:0" } }
        local u = udp_client("127.0.0.1", srv.port)
        assert(u:send("who\n"))
        local reply = assert(u:receive())
        local _, my_port = u:getsockname()
        u:close()
        assert.equal(("id=0 peer=127.0.0.1:%d port=%d listener=udp://" ..
                      "127.0.0.1:%d\n"):format(my_port, my_port, srv.port),
                     reply)
        assert.equal(0, srv:stop())
    end)
end)

describe("a unix stream listener", function()
    local srv, path

    lazy_setup(function()
        path = helpers.tmpname(".sock")
        srv = helpers.start_server{ script = SCRIPT, no_finally = true,
                                    listen = { "unix:" .. path } }
    end)

    lazy_teardown(function()
        if srv then srv:stop() end
    end)

    local function connect()
        local c = assert(unix.stream())
        c:settimeout(TIMEOUT)
        assert(c:connect(path))
        return c
    end

    it("shows the socket path in its ready line", function()
        assert.equal("unix", srv.addrs[1].kind)
        assert.equal(path, srv.addrs[1].addr)
    end)

    it("answers a line with [ctime] and the line", function()
        local c = connect()
        assert(c:send("'Tis but a scratch.\r\n"))
        local reply = assert(helpers.read_line(c))
        c:close()
        assert.matches("^" .. CTIME .. "'Tis but a scratch%.\r\n$", reply)
    end)

    it("answers all lines sent before a half-close, then closes", function()
        assert_replies_then_eof(connect())
    end)
end)

describe("a unix stream conn", function()
    it("names an unnamed peer \"unix\" and has no peer_port", function()
        local path = helpers.tmpname(".sock")
        local srv = helpers.start_server{ script = WHOAMI,
                                          listen = { "unix:" .. path } }
        local c = assert(unix.stream())
        c:settimeout(TIMEOUT)
        assert(c:connect(path))
        assert(c:send("who\n"))
        local reply = assert(c:receive("*l"))
        c:close()
        assert.matches("^id=%d+ peer=unix port=nil listener=unix:" ..
                       path:gsub("%p", "%%%0") .. "$", reply)
        assert.equal(0, srv:stop())
    end)
end)

describe("a unix datagram listener", function()
    local srv, path

    lazy_setup(function()
        path = helpers.tmpname(".sock")
        srv = helpers.start_server{ script = SCRIPT, no_finally = true,
                                    listen = { "unixgram:" .. path } }
    end)

    lazy_teardown(function()
        if srv then srv:stop() end
    end)

    it("shows the socket path in its ready line", function()
        assert.equal("unixgram", srv.addrs[1].kind)
        assert.equal(path, srv.addrs[1].addr)
    end)

    it("answers a bound sender's datagram with [ctime] and it", function()
        local d = unixgram_client()
        assert(d:sendto("hi\n", path))
        local reply = assert(d:receive())
        assert.matches("^" .. CTIME .. "hi\n$", reply)
    end)

    it("answers each datagram of a bound sender, in order", function()
        local d = unixgram_client()
        for i = 1, 5 do assert(d:sendto("dgram " .. i .. "\n", path)) end
        for i = 1, 5 do
            assert.matches("^" .. CTIME .. "dgram " .. i .. "\n$",
                           assert(d:receive()))
        end
    end)

    it("drops the reply to an unbound sender and keeps serving", function()
        local anon = assert(unix.dgram())
        assert(anon:sendto("nobody to answer\n", path))
        anon:close()
        local d = unixgram_client()
        assert(d:sendto("still here\n", path))
        assert.matches("^" .. CTIME .. "still here\n$", assert(d:receive()))
        assert.is_true(srv:alive())
    end)
end)

describe("unix socket files", function()
    it("are removed when the server shuts down", function()
        local stream = helpers.tmpname(".sock")
        local dgram = helpers.tmpname(".sock")
        local srv = helpers.start_server{ script = SCRIPT, listen = {
            "unix:" .. stream, "unixgram:" .. dgram } }
        assert.is_true(is_socket(stream))
        assert.is_true(is_socket(dgram))
        assert.equal(0, srv:stop())
        assert.is_false(is_socket(stream))
        assert.is_false(is_socket(dgram))
    end)
end)

describe("an IPv6 listener on [::1]", function()
    it("answers a line over TCP", function()
        if not have_ipv6_loopback() then
            pending("::1 cannot be bound on this host")
            return
        end
        local srv = helpers.start_server{ script = SCRIPT,
                                          listen = { "[::1]:0" } }
        assert.equal("tcp", srv.addrs[1].kind)
        assert.matches("^%[::1%]:%d+$", srv.addrs[1].addr)
        local c = assert(socket.tcp6())
        c:settimeout(TIMEOUT)
        assert(c:connect("::1", srv.port))
        assert(c:send("over six\r\n"))
        local reply = assert(helpers.read_line(c))
        c:close()
        assert.matches("^" .. CTIME .. "over six\r\n$", reply)
        assert.equal(0, srv:stop())
    end)

    it("answers a datagram over UDP", function()
        if not have_ipv6_loopback() then
            pending("::1 cannot be bound on this host")
            return
        end
        local srv = helpers.start_server{ script = SCRIPT,
                                          listen = { "udp://[::1]:0" } }
        assert.equal("udp", srv.addrs[1].kind)
        local u = udp_client("::1", srv.port)
        assert(u:send("hi\n"))
        local reply = assert(u:receive())
        u:close()
        assert.matches("^" .. CTIME .. "hi\n$", reply)
        assert.equal(0, srv:stop())
    end)

    it("gives the conn a bracketed peer address", function()
        if not have_ipv6_loopback() then
            pending("::1 cannot be bound on this host")
            return
        end
        local srv = helpers.start_server{ script = WHOAMI,
                                          listen = { "tcp://[::1]:0" } }
        local c = assert(socket.tcp6())
        c:settimeout(TIMEOUT)
        assert(c:connect("::1", srv.port))
        local _, my_port = c:getsockname()
        assert(c:send("who\n"))
        local reply = assert(c:receive("*l"))
        c:close()
        assert.matches(("^id=%%d+ peer=%%[::1%%]:%d port=%d " ..
                        "listener=tcp://%%[::1%%]:%d$"):format(
                            my_port, my_port, srv.port), reply)
        assert.equal(0, srv:stop())
    end)
end)

describe("a TCP connection", function()
    local srv

    lazy_setup(function()
        srv = helpers.start_server{ script = SCRIPT, no_finally = true }
    end)

    lazy_teardown(function()
        if srv then srv:stop() end
    end)

    it("gets every reply to lines sent before a half-close, then EOF", function()
        assert_replies_then_eof(helpers.connect(srv.port, TIMEOUT))
    end)

    it("gets the replies after a half-close even when it reads late", function()
        local c = helpers.connect(srv.port, TIMEOUT)
        assert(c:send("one\ntwo\nthree\n"))
        assert(c:shutdown("send"))
        helpers.sleep(0.3)
        local all = helpers.receive_all(c)
        assert.matches("^" .. CTIME .. "one\n" .. CTIME .. "two\n" ..
                       CTIME .. "three\n$", all)
    end)
end)

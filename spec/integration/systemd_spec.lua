-- systemd: sd_notify datagrams to $NOTIFY_SOCKET (READY=1 once serving,
-- RELOADING=1 with MONOTONIC_USEC then READY=1 around a reload, STOPPING=1
-- on the way out), and socket activation (LISTEN_PID, LISTEN_FDS, sockets
-- from fd 3), with spec/fixtures/systemd_activate.py playing systemd's part.
local helpers = require "helpers"
local unix = require "socket.unix"
local op = require "fixtures.operations_util"

local SCRIPT = "scripts/handle.lua"
local ACTIVATE = "python3 spec/fixtures/systemd_activate.py "
local SLOW = op.SLOW
local CTIME = helpers.CTIME
local q = helpers.shell_quote

-- A unix datagram socket standing in for systemd's notify socket.
local function notify_socket()
    local path = op.sock_path()
    local s = assert(unix.dgram())
    assert(s:bind(path))
    s:settimeout(10 * SLOW)
    return s, path
end

-- The next notification, or nil, "timeout".
local function next_note(s, timeout)
    if timeout then s:settimeout(timeout) end
    local msg, err = s:receive()
    s:settimeout(10 * SLOW)
    return msg, err
end

-- CLOCK_MONOTONIC in microseconds, as sd_notify's MONOTONIC_USEC counts.
local function monotonic_usec()
    local p = assert(io.popen("python3 -c 'import time; "
        .. "print(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)'"))
    local v = tonumber(p:read("a"))
    p:close()
    return v
end

local function signal(srv, sig)
    os.execute(("kill -%s %d"):format(sig, srv.pid))
end

describe("sd_notify", function()
    it("sends READY=1 once the listeners accept", function()
        local s, path = notify_socket()
        local sock = op.sock_path()
        -- a unix listener has a known address: talk to it the moment
        -- READY=1 arrives, before anything else waited for the server
        helpers.start_server{ script = SCRIPT, listen = { "unix:" .. sock },
                              shell = "NOTIFY_SOCKET=" .. q(path) .. " ",
                              expect_ready = false }
        assert.equal("READY=1", next_note(s))
        local c = assert(unix.stream())
        c:settimeout(10 * SLOW)
        assert(c:connect(sock))
        assert(c:send("ready?\n"))
        local reply = c:receive("*l")
        assert.truthy(reply and reply:match("^" .. CTIME .. "ready%?$"), reply)
        c:close()
        assert.is_nil(next_note(s, 0.3))   -- once only
        s:close()
        os.remove(path)
    end)

    it("sends RELOADING=1 with MONOTONIC_USEC, then READY=1, on SIGHUP", function()
        local s, path = notify_socket()
        local srv = helpers.start_server{ script = SCRIPT,
                                          shell = "NOTIFY_SOCKET=" .. q(path) .. " " }
        assert.equal("READY=1", next_note(s))
        for _ = 1, 2 do
            local before = monotonic_usec()
            signal(srv, "HUP")
            local msg = next_note(s)
            local after = monotonic_usec()
            assert.truthy(msg, "no notification after SIGHUP")
            local usec = msg:match("^RELOADING=1\nMONOTONIC_USEC=(%d+)$")
            assert.truthy(usec, msg)
            usec = tonumber(usec)
            assert.is_true(usec >= before and usec <= after,
                           ("MONOTONIC_USEC %d not in [%d, %d]"):format(usec, before, after))
            assert.equal("READY=1", next_note(s))
        end
        local reply = op.ask(srv.port, "after")
        assert.truthy(reply:match("^" .. CTIME .. "after$"), reply)
        s:close()
        os.remove(path)
    end)

    it("sends READY=1 after a reload that failed, the old handler serving", function()
        local s, path = notify_socket()
        local script = helpers.write_file(helpers.tmpname(".lua"),
            'return { on_message = function(_, l) return "v1 " .. l .. "\\n" end }\n')
        local srv = helpers.start_server{ script = script,
                                          shell = "NOTIFY_SOCKET=" .. q(path) .. " " }
        assert.equal("READY=1", next_note(s))
        helpers.write_file(script, "return {\n")
        signal(srv, "HUP")
        assert.truthy((next_note(s) or ""):match("^RELOADING=1\n"))
        assert.equal("READY=1", next_note(s))
        assert.equal("v1 still", op.ask(srv.port, "still"))
        s:close()
        os.remove(path)
    end)

    it("sends RELOADING=1 and READY=1 around the admin reload", function()
        local s, path = notify_socket()
        local admin = op.sock_path()
        op.start{ script = SCRIPT, args = { "--admin", "unix:" .. admin }, announce = 2,
                  shell = "NOTIFY_SOCKET=" .. q(path) .. " " }
        assert.equal("READY=1", next_note(s))
        assert.equal("ok", (op.admin_cmd(admin, "reload")))
        assert.truthy((next_note(s) or ""):match("^RELOADING=1\nMONOTONIC_USEC=%d+$"))
        assert.equal("READY=1", next_note(s))
        s:close()
        os.remove(path)
    end)

    it("sends STOPPING=1 on SIGTERM and exits 0", function()
        local s, path = notify_socket()
        local srv = helpers.start_server{ script = SCRIPT,
                                          shell = "NOTIFY_SOCKET=" .. q(path) .. " " }
        assert.equal("READY=1", next_note(s))
        signal(srv, "TERM")
        assert.equal("STOPPING=1", next_note(s))
        assert.equal(0, srv:wait(30 * SLOW))
        assert.is_nil(next_note(s, 0.2))
        s:close()
        os.remove(path)
    end)

    it("sends STOPPING=1 on the admin shutdown", function()
        local s, path = notify_socket()
        local admin = op.sock_path()
        local srv = op.start{ script = SCRIPT, args = { "--admin", "unix:" .. admin },
                              announce = 2, shell = "NOTIFY_SOCKET=" .. q(path) .. " " }
        assert.equal("READY=1", next_note(s))
        assert.equal("ok", (op.admin_cmd(admin, "shutdown")))
        assert.equal("STOPPING=1", next_note(s))
        assert.equal(0, srv:wait(30 * SLOW))
        s:close()
        os.remove(path)
    end)

    it("serves as usual when nobody listens at NOTIFY_SOCKET", function()
        for _, where in ipairs({ op.sock_path(), "relative/notify", "@" }) do
            local srv = helpers.start_server{ script = SCRIPT,
                                              shell = "NOTIFY_SOCKET=" .. q(where) .. " " }
            signal(srv, "HUP")
            local reply = op.ask(srv.port, "fine")
            assert.truthy(reply:match("^" .. CTIME .. "fine$"), reply)
            assert.equal(0, srv:stop("TERM", 30 * SLOW))
        end
    end)
end)

describe("socket activation", function()
    -- Starts luaserv under systemd_activate.py with the given -l addresses
    -- ("{PORT}" for the activated port) and options; returns the server,
    -- the activated port and what luaserv announced.
    local function activate(listen, opts)
        opts = opts or {}
        local srv = helpers.start_server{
            script = opts.script or SCRIPT, listen = listen, args = opts.args,
            shell = (opts.env or "") .. ACTIVATE .. (opts.flags or ""),
            expect_ready = false }
        local port = tonumber(helpers.wait_for(function()
            return srv:log():match("activated (%d+)\n")
        end, 10 * SLOW))
        assert(port, "systemd_activate.py did not start:\n" .. srv:log())
        local l = op.wait_listening(srv, opts.announce or math.max(#listen, 1))
        return srv, port, l
    end

    it("serves the inherited socket when no address is named", function()
        local srv, port, l = activate({})
        assert.equal(1, #l, srv:log())
        assert.same({ "tcp", "127.0.0.1:" .. port }, { l[1].kind, l[1].addr })
        local reply = op.ask(port, "activated")
        assert.truthy(reply:match("^" .. CTIME .. "activated$"), reply)
        assert.equal(0, srv:stop("TERM", 30 * SLOW))
    end)

    it("serves the inherited socket for the -l address it matches", function()
        local srv, port, l = activate({ "127.0.0.1:{PORT}" })
        assert.equal(1, #l, srv:log())
        assert.equal(port, l[1].port)
        local reply = op.ask(port, "matched")
        assert.truthy(reply:match("^" .. CTIME .. "matched$"), reply)
    end)

    it("takes the inherited socket for a -l address with port 0", function()
        local srv, port, l = activate({ "127.0.0.1:0" })
        assert.equal(1, #l, srv:log())
        assert.equal(port, l[1].port)
        local reply = op.ask(port, "any port")
        assert.truthy(reply:match("^" .. CTIME .. "any port$"), reply)
    end)

    it("serves an inherited UDP socket", function()
        local srv, port, l = activate({}, { flags = "--udp " })
        assert.equal(1, #l, srv:log())
        assert.same({ "udp", port }, { l[1].kind, l[1].port })
        local reply = op.ask_udp(port, "datagram\n")
        assert.truthy(reply and reply:match("^" .. CTIME .. "datagram\n$"), reply)
    end)

    it("opens its own socket for a -l address the inherited one does not match",
       function()
        local srv, port, l = activate({ "udp://127.0.0.1:0", "127.0.0.1:{PORT}" })
        assert.equal(2, #l, srv:log())
        assert.equal("udp", l[1].kind)
        assert.not_equal(port, l[1].port)
        assert.equal(port, l[2].port)
        assert.truthy(op.ask_udp(l[1].port, "own\n"))
        assert.truthy(op.ask(port, "inherited"))
    end)

    it("ignores LISTEN_FDS meant for another process", function()
        local srv, port, l = activate({ "127.0.0.1:0" }, { flags = "--wrong-pid " })
        assert.equal(1, #l, srv:log())
        assert.not_equal(port, l[1].port)
        local reply = op.ask(l[1].port, "own socket")
        assert.truthy(reply:match("^" .. CTIME .. "own socket$"), reply)
    end)

    it("hides LISTEN_PID and LISTEN_FDS from the handlers", function()
        local admin = op.sock_path()
        local srv = activate({}, { args = { "--admin", "unix:" .. admin }, announce = 2 })
        local a = op.admin(admin)
        assert.equal("nil", a:ok('eval os.getenv("LISTEN_FDS")'), srv:log())
        assert.equal("nil", a:ok('eval os.getenv("LISTEN_PID")'))
    end)

    it("keeps inherited sockets from processes the handlers start", function()
        -- sd_listen_fds() marks them close-on-exec, as luaserv's own are
        local admin = op.sock_path()
        local srv = activate({}, { args = { "--admin", "unix:" .. admin }, announce = 2 })
        local p = assert(io.popen("readlink /proc/" .. srv.pid .. "/fd/3"))
        local inherited = p:read("a"):match("socket:%[%d+%]")
        p:close()
        assert.truthy(inherited, "fd 3 is not the inherited socket")
        local child = op.admin(admin):ok(
            [[eval io.popen("readlink /proc/self/fd/3 2>/dev/null || echo none"):read("a")]])
        assert.not_equal(inherited, child:match("socket:%[%d+%]"),
                         "a child process holds the listening socket")
    end)

    it("sends READY=1 when serving inherited sockets", function()
        local s, path = notify_socket()
        local srv, port = activate({}, { env = "NOTIFY_SOCKET=" .. q(path) .. " " })
        assert.equal("READY=1", next_note(s))
        assert.truthy(op.ask(port, "ok"))
        signal(srv, "TERM")
        assert.equal("STOPPING=1", next_note(s))
        assert.equal(0, srv:wait(30 * SLOW))
        s:close()
        os.remove(path)
    end)

    it("says so when an inherited socket matches no listener", function()
        -- an unused inherited socket would take connections nobody accepts
        local sock = op.sock_path()
        local srv, port = activate({ "unix:" .. sock })
        assert.truthy(helpers.wait_for(function()
            return srv:log():find("127.0.0.1:" .. port, 1, true)
        end, 2 * SLOW), "nothing logged about the unused socket on port " .. port
                        .. ":\n" .. srv:log())
    end)
end)

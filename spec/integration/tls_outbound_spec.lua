-- Outbound TLS: luaserv.connect(host, port, { tls = true, ... }) against
-- a Python ssl echo server (the real client library's counterpart) with
-- the throwaway certificates of fixtures/tls_util: verification against
-- ca = and against the system store, hostname and IP checks, SNI,
-- verify = false, ALPN, a 24 MiB echo, and the connect timeout covering
-- a server that never answers the handshake. A driver luaserv takes one
-- request per connection (a Lua table literal), runs it in its handle()
-- task and answers one line.
local helpers = require "helpers"
local socket = require "socket"
local tls = require "fixtures.tls_util"

local TIMEOUT = helpers.sanitize and 40 or 20
local PYTHON = "/usr/bin/python3"
local q = helpers.shell_quote

local DRIVER = [==[
local luaserv = require "luaserv"
local handler = {}

-- 24 MiB in 64 KiB blocks, each numbered, so a lost, doubled or
-- reordered block shows.
local function big(n)
    local blocks = {}
    for i = 1, n // 65536 do
        blocks[i] = ("%08d"):format(i) ..
                    string.rep(string.char(65 + i % 26), 65528)
        if i % 32 == 0 then luaserv.sleep(0) end  -- under --handler-timeout
    end
    return table.concat(blocks)
end

local function tls_alpn(up)
    local ok, t = pcall(function() return up.tls end)
    return ok and type(t) == "table" and tostring(t.alpn) or "-"
end

local function run(req)
    if req.stats then
        local s = luaserv.stats()
        return ("STATS tasks=%d outbound=%d"):format(s.tasks - 1,
                                                     s.outbound_active)
    end
    if req.pcall then
        local ok, err = pcall(luaserv.connect, req.host, req.port, req.opts)
        return ("PCALL %s %s"):format(tostring(ok), tostring(err))
    end
    local t0 = luaserv.now()
    local up, err = luaserv.connect(req.host, req.port, req.opts)
    if not up then
        return ("ERR %s %.2f"):format(err, luaserv.now() - t0)
    end
    if req.size then
        local data = big(req.size)
        luaserv.spawn(function() up:write(data) end)
        local got, n = {}, 0
        while n < #data do
            local d = up:read()
            if not d then break end
            got[#got + 1] = d
            n = n + #d
        end
        up:close()
        return ("ECHO %s %d"):format(table.concat(got) == data and "same"
                                     or "differs", n)
    end
    up:write(req.text or "hello", "\n")
    local line, rerr = up:readline()
    local alpn = tls_alpn(up)
    up:close()
    return ("OK %s alpn=%s"):format(tostring(line or rerr), alpn)
end

function handler.handle(conn)
    local line = conn:readline()
    if not line then return end
    local req = load("return " .. line, "req", "t", {})()
    conn:write(run(req), "\n")
end

return handler
]==]

-- A threaded echo server on Python's ssl module: prints PORT, then for
-- each connection the SNI it heard and the ALPN it agreed (or HSFAIL).
local ECHO = [==[
import socket, ssl, sys, threading
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
ctx.set_alpn_protocols(["h2", "http/1.1"])
def sni(sock, name, c):
    print("SNI", name, flush=True)
ctx.sni_callback = sni
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(64)
print("PORT", ls.getsockname()[1], flush=True)
def serve(s):
    try:
        t = ctx.wrap_socket(s, server_side=True)
    except Exception as e:
        print("HSFAIL", e, flush=True)
        s.close()
        return
    print("ALPN", t.selected_alpn_protocol(), flush=True)
    try:
        while True:
            d = t.recv(262144)
            if not d:
                break
            t.sendall(d)
    except Exception as e:
        print("ERR", e, flush=True)
    t.close()
while True:
    s, _ = ls.accept()
    threading.Thread(target=serve, args=(s,), daemon=True).start()
]==]

local echo_py

-- Runs shell command cmd (its output to a log) until the test ends,
-- then kills it by PID. Returns { port =, log = function } once the log
-- shows a port (port_pattern captures it).
local function background(cmd, port_pattern)
    local base = helpers.tmpname()
    local log, pidf = base .. ".log", base .. ".pid"
    os.execute(("sh -c %s >/dev/null 2>&1"):format(q(
        ("%s >%s 2>&1 </dev/null & echo $! >%s"):format(cmd, q(log), q(pidf)))))
    local pid = helpers.wait_until(function()
        local p = helpers.read_file(pidf)
        return p and p:match("%d+")
    end, 10, "a pid: " .. cmd)
    helpers.defer(function()
        os.execute("kill " .. pid .. " 2>/dev/null")
        os.remove(log)
        os.remove(pidf)
    end)
    local port = helpers.wait_until(function()
        local l = helpers.read_file(log)
        return l and tonumber(l:match(port_pattern))
    end, 10, "a port: " .. cmd)
    return { port = port, log = function() return helpers.read_file(log) or "" end }
end

-- The Python echo server with cert and key.
local function echo_server(cert, key)
    echo_py = echo_py or helpers.write_file(helpers.tmpname(".py"), ECHO)
    return background(("%s -u %s %s %s"):format(PYTHON, q(echo_py), q(cert),
                                                 q(key)), "PORT (%d+)")
end

-- `openssl s_server -rev` (each line back reversed) with cert and key,
-- for one connection (its log is flushed when it exits).
local function s_server(cert, key)
    return background(("openssl s_server -accept 127.0.0.1:0 -cert %s " ..
                       "-key %s -rev -alpn h2,http/1.1 -naccept 1")
                      :format(q(cert), q(key)),
                      "ACCEPT 127%.0%.0%.1:(%d+)")
end

-- Sends one request (a Lua table literal) to the driver; its answer.
local function ask(driver, req, timeout)
    local c = helpers.connect(driver.port, timeout or TIMEOUT)
    assert(c:send(req .. "\n"))
    local reply, err = c:receive("*l")
    c:close()
    return reply or ("(no reply: " .. tostring(err) .. ")")
end

-- The driver's request for a connect to port with opts (Lua text).
local function req(host, port, opts, extra)
    return ("{ host = %q, port = %d, opts = %s%s }"):format(host, port, opts,
                                                            extra or "")
end

-- Nothing leaked in the driver: no task but the asking one, no outbound.
local function settled(driver)
    local r
    local ok = helpers.wait_for(function()
        r = ask(driver, "{ stats = true }")
        return r == "STATS tasks=0 outbound=0"
    end, TIMEOUT)
    assert.truthy(ok, r)
end

-- The CPU seconds pid used so far (utime + stime).
local function cpu_seconds(pid)
    local stat = helpers.read_file("/proc/" .. pid .. "/stat") or ""
    local rest = stat:match("^%d+ %b() (.*)$") or ""
    local f = {}
    for w in rest:gmatch("%S+") do f[#f + 1] = w end
    return ((tonumber(f[12]) or 0) + (tonumber(f[13]) or 0)) / 100
end

describe("luaserv.connect with tls", function()
    local f, driver, skip
    lazy_setup(function()
        local ok, why = tls.available()
        if not ok then skip = why return end
        if not tls.have(PYTHON) then
            skip = "no " .. PYTHON .. ": outbound TLS specs skipped"
            return
        end
        f = tls.files()
        -- the 24 MiB check's concat and compare run without a yield
        driver = helpers.start_server{ source = DRIVER,
                                       args = { "--handler-timeout", "30" } }
    end)
    lazy_teardown(function()
        if driver then assert.equal(0, driver:stop()) end
    end)
    before_each(function()
        if skip then pending(skip) end
    end)
    after_each(function()
        if driver and not skip then settled(driver) end
    end)

    it("verifies the server against ca = and sends the host as SNI", function()
        if skip then return end
        local srv = echo_server(f.cert, f.key)
        local opts = ("{ tls = true, ca = %q }"):format(f.ca)
        local reply = ask(driver, req("localhost", srv.port, opts,
                                      ", text = 'over tls'"))
        assert.matches("^OK over tls alpn=", reply)
        assert.matches("SNI localhost\n", srv.log())
        -- an IP literal is checked against the certificate's IP SAN and
        -- sends no SNI (RFC 6066 allows host names only)
        reply = ask(driver, req("127.0.0.1", srv.port, opts))
        assert.matches("^OK hello alpn=", reply)
        assert.matches("SNI None\n", srv.log())
    end)

    it("talks to openssl s_server, ALPN agreed", function()
        if skip then return end
        local srv = s_server(f.cert, f.key)
        local opts = ("{ tls = true, ca = %q, alpn = { 'h2' } }"):format(f.ca)
        local reply = ask(driver, req("localhost", srv.port, opts,
                                      ", text = 'hello over tls'"))
        assert.matches("^OK slt revo olleh alpn=", reply)
        helpers.wait_until(function()
            return srv.log():find("ALPN protocols selected: h2", 1, true)
        end, TIMEOUT, "s_server's ALPN line")
        local alpn = reply:match("alpn=(%S+)")
        if alpn ~= "-" then assert.equal("h2", alpn) end   -- with conn.tls
        -- and a server whose certificate no store trusts
        local self = s_server(f.self_cert, f.self_key)
        assert.matches("^ERR tls: certificate verify failed: self%-signed ",
                       ask(driver, req("localhost", self.port, "{ tls = true }")))
    end)

    it("fails verification against the system store for a self-signed server", function()
        if skip then return end
        local srv = echo_server(f.self_cert, f.self_key)
        local reply = ask(driver, req("localhost", srv.port, "{ tls = true }"))
        assert.matches("^ERR tls: certificate verify failed: self%-signed " ..
                       "certificate ", reply)
        -- our own CA is in no system store either
        local srv2 = echo_server(f.cert, f.key)
        reply = ask(driver, req("localhost", srv2.port, "{ tls = true }"))
        assert.matches("^ERR tls: certificate verify failed: unable to get " ..
                       "local issuer certificate ", reply)
    end)

    it("refuses a certificate for another name or address", function()
        if skip then return end
        local srv = echo_server(f.b_cert, f.b_key)        -- b.test only
        local opts = ("{ tls = true, ca = %q }"):format(f.ca)
        assert.matches("^ERR tls: certificate verify failed: hostname mismatch ",
                       ask(driver, req("localhost", srv.port, opts)))
        assert.matches("^ERR tls: certificate verify failed: IP address mismatch ",
                       ask(driver, req("127.0.0.1", srv.port, opts)))
        -- sni = names the server when the address does not
        local sni = ("{ tls = true, ca = %q, sni = 'b.test' }"):format(f.ca)
        assert.matches("^OK hello ", ask(driver, req("127.0.0.1", srv.port, sni)))
        assert.matches("SNI b.test\n", srv.log())
    end)

    it("talks to a self-signed server with verify = false", function()
        if skip then return end
        local srv = echo_server(f.self_cert, f.self_key)
        local reply = ask(driver, req("localhost", srv.port,
                                      "{ tls = true, verify = false }"))
        assert.matches("^OK hello ", reply)
    end)

    it("offers alpn = and the server picks from it", function()
        if skip then return end
        local srv = echo_server(f.cert, f.key)
        local opts = ("{ tls = true, ca = %q, alpn = { 'h2', 'http/1.1' } }")
            :format(f.ca)
        local reply = ask(driver, req("localhost", srv.port, opts))
        assert.matches("^OK hello ", reply)
        assert.matches("ALPN h2\n", srv.log())
        local alpn = reply:match("alpn=(%S+)")
        if alpn ~= "-" then assert.equal("h2", alpn) end   -- with conn.tls
        -- without alpn = none is offered: a second context, cached apart
        opts = ("{ tls = true, ca = %q, alpn = { 'http/1.1' } }"):format(f.ca)
        assert.matches("^OK hello ", ask(driver, req("localhost", srv.port, opts)))
        assert.matches("ALPN http/1.1\n", srv.log())
        opts = ("{ tls = true, ca = %q }"):format(f.ca)
        assert.matches("^OK hello ", ask(driver, req("localhost", srv.port, opts)))
        assert.matches("ALPN None\n", srv.log())
    end)

    it("echoes 24 MiB over the outbound TLS conn, byte-exact", function()
        if skip then return end
        local srv = echo_server(f.cert, f.key)
        local opts = ("{ tls = true, ca = %q }"):format(f.ca)
        local size = 24 * 1024 * 1024
        local reply = ask(driver, req("localhost", srv.port, opts,
                                      ", size = " .. size), TIMEOUT * 3)
        assert.equal("ECHO same " .. size, reply)
    end)

    it("times out a server that never answers the handshake, without spinning", function()
        if skip then return end
        -- the kernel completes the TCP connect into the backlog; nothing
        -- ever reads the ClientHello
        local l = assert(socket.bind("127.0.0.1", 0))
        helpers.defer(function() l:close() end)
        local _, port = l:getsockname()
        local c = helpers.connect(driver.port, TIMEOUT)
        local cpu0 = cpu_seconds(driver.pid)
        assert(c:send(req("127.0.0.1", port, "{ tls = true, timeout = 1.5 }") ..
                      "\n"))
        local reply = c:receive("*l")
        c:close()
        local took = tonumber((reply or ""):match("^ERR timeout ([%d.]+)$"))
        assert.truthy(took, reply)
        assert.is_true(took >= 1.4 and took < 5, reply)
        -- a loop spinning on a writable socket would burn the 1.5 s
        local used = cpu_seconds(driver.pid) - cpu0
        assert.is_true(used < 0.5, ("driver used %.2f s of CPU"):format(used))
    end)

    it("fails the handshake with a server that answers plaintext", function()
        if skip then return end
        local l = assert(socket.bind("127.0.0.1", 0))
        helpers.defer(function() l:close() end)
        local _, port = l:getsockname()
        local c = helpers.connect(driver.port, TIMEOUT)
        assert(c:send(req("127.0.0.1", port, "{ tls = true }") .. "\n"))
        l:settimeout(TIMEOUT)
        local s = assert(l:accept())
        s:send("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
        s:close()
        local reply = c:receive("*l")
        c:close()
        assert.matches("^ERR tls: handshake: ", reply)
    end)

    it("reports a ca that cannot be read, and bad options", function()
        if skip then return end
        local srv = echo_server(f.cert, f.key)
        local missing = f.dir .. "/no-such-ca.pem"
        assert.matches("^ERR tls: ", ask(driver, req("localhost", srv.port,
            ("{ tls = true, ca = %q }"):format(missing))))
        local function raises(opts, text)
            local r = ask(driver, req("localhost", srv.port, opts,
                                      ", pcall = true"))
            assert.matches("^PCALL false ", r)
            assert.truthy(r:find(text, 1, true), r)
        end
        raises("{ sni = 'x' }", "need tls = true")
        raises("{ tls = 'yes' }", "tls must be a boolean")
        raises("{ tls = true, alpn = { '' } }", "alpn names must be strings")
        raises("{ tls = true, alpn = 'h2' }", "alpn must be a list")
        raises("{ tls = true, verify = 1 }", "verify must be a boolean")
        raises("{ tls = true, proxy_protocol = 1 }", "cannot be combined")
    end)
end)

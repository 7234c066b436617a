-- The TLS options (issue 13): --tls-cert, --tls-key, --tls-client-ca,
-- --tls-verify, --tls-alpn, --tls-handshake-timeout and their listen{}
-- keys; the mistakes that stop the start with exit status 2 and a clear
-- message; a config file's tls listener with ALPN; the flags on -l
-- tls:// listeners, with --proxy-protocol and under --workers 2. Real
-- clients: Python's ssl module, against the throwaway certificates of
-- spec/fixtures/tls_util.lua (made with the openssl command).
local helpers = require "helpers"
local tls = require "fixtures.tls_util"

local q = helpers.shell_quote
local SCRIPT = "scripts/handle.lua"
local PY = "/usr/bin/python3"
local TIMEOUT = helpers.sanitize and 20 or 8

local function have(cmd)
    return (helpers.sh("command -v " .. cmd)) == 0
end

-- A TLS client (Python's ssl): connects to port, verifying the server
-- against ca; opts.alpn = { ... }, opts.cert/opts.key (a client
-- certificate), opts.proxy (a PROXY v1 header first, in plaintext).
-- Sends "hello\n" and reads a line; opts.n = N does all that N times.
-- Returns the exit status and its output: per connection,
-- "ALPN=<protocol or None>", "SERIAL=<the server certificate's, hex>"
-- and "LINE=<the reply>".
local CLIENT = [[
import socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
opts = dict(a.split("=", 1) for a in sys.argv[3:])
ctx = ssl.create_default_context(cafile=ca)
if "alpn" in opts: ctx.set_alpn_protocols(opts["alpn"].split(","))
if "cert" in opts: ctx.load_cert_chain(opts["cert"], opts["key"])
for _ in range(int(opts.get("n", "1"))):
    s = socket.create_connection(("127.0.0.1", port), timeout=%d)
    if "proxy" in opts:
        s.sendall(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n")
    t = ctx.wrap_socket(s, server_hostname="localhost")
    print("ALPN=%%s" %% t.selected_alpn_protocol())
    print("SERIAL=%%s" %% t.getpeercert()["serialNumber"])
    t.sendall(b"hello\n")
    buf = b""
    while not buf.endswith(b"\n"):
        d = t.recv(4096)
        if not d: break
        buf += d
    print("LINE=" + buf.decode().strip())
    t.close()
]]

local client_file

local function tls_client(port, ca, opts)
    local args = { q(PY), q(client_file), tostring(port), q(ca) }
    for k, v in pairs(opts or {}) do args[#args + 1] = q(k .. "=" .. v) end
    return helpers.sh(table.concat(args, " "))
end

-- Writes a configuration file; returns its path.
local function conf(text)
    return helpers.write_file(helpers.tmpname(".conf.lua"), text)
end

-- Starts luaserv -c cfg and waits for n ready lines; srv.port is the
-- first tls listener's.
local function start_cfg(cfg, n)
    local srv = helpers.start_server{ listen = {}, args = { "-c", cfg },
                                      expect_ready = false }
    assert.truthy(helpers.wait_for(function()
        return #helpers.ready(srv:log()) >= n
    end, TIMEOUT), srv:log())
    srv.port = tonumber(srv:log():match(
        "luaserv: listening on tls 127%.0%.0%.1:(%d+)\n"))
    assert.truthy(srv.port, srv:log())
    return srv
end

-- Runs luaserv with the argument string to completion: status, output.
local function run(args)
    return helpers.run(helpers.luaserv, args .. " " .. SCRIPT)
end

describe("TLS options", function()
    local f, why
    lazy_setup(function()
        local ok
        ok, why = tls.available()
        if ok then f = tls.files() end
        client_file = helpers.write_file(helpers.tmpname(".py"),
                                         CLIENT:format(TIMEOUT))
    end)
    lazy_teardown(function()
        if client_file then os.remove(client_file) end
    end)

    -- Skips the test (pending, with why) without openssl or python3.
    local function need()
        if not f then
            pending("no certificates: " .. tostring(why))
            return false
        end
        if not have(PY) then
            pending("no " .. PY .. " for the TLS client")
            return false
        end
        return true
    end

    describe("mistakes exit 2 with a message", function()
        -- want: plain text, or a list of texts any of which may say it.
        local function fails(args, want)
            local status, out = run(args)
            assert.equal(2, status, out)
            local found = false
            for _, w in ipairs(type(want) == "table" and want or { want }) do
                found = found or out:find(w, 1, true) ~= nil
            end
            assert.truthy(found, "wanted: " .. table.concat(
                type(want) == "table" and want or { want }, " | ") ..
                "\ngot: " .. out)
        end
        local MISMATCH = { "does not match", "mismatch" }

        it("a tls listener with no cert or no key", function()
            if not need() then return end
            local cfg = conf('listen { "tls://127.0.0.1:0", cert = ' ..
                             ("%q"):format(f.cert) .. ' }\n')
            local want = "tls://127.0.0.1:0: a tls listener needs cert " ..
                         "and key (--tls-cert, --tls-key or listen{ cert =, " ..
                         "key = })"
            fails("-l tls://127.0.0.1:0", want)
            fails("-l tls://127.0.0.1:0 --tls-cert " .. q(f.cert), want)
            fails("-l tls://127.0.0.1:0 --tls-key " .. q(f.key), want)
            fails("-c " .. q(cfg), cfg .. ": listen " .. want)
        end)

        it("tls keys on a listener that is not tls://", function()
            local cfg = conf('listen { "tcp://127.0.0.1:0", cert = "c.pem", ' ..
                             'key = "k.pem" }\n')
            fails("-c " .. q(cfg), cfg .. ": listen tcp://127.0.0.1:0: cert " ..
                  "applies to tls:// listeners only")
            cfg = conf('listen { "udp://127.0.0.1:0", alpn = { "h2" } }\n')
            fails("-c " .. q(cfg), "listen udp://127.0.0.1:0: alpn applies " ..
                  "to tls:// listeners only")
            fails("-l 127.0.0.1:0 --tls-cert c.pem --tls-key k.pem",
                  "--tls-cert applies to tls:// listeners, and there is none")
            fails("-l 127.0.0.1:0 --tls-handshake-timeout 3",
                  "--tls-handshake-timeout applies to tls:// listeners")
        end)

        it("verify without a client CA", function()
            if not need() then return end
            local keys = ("-l tls://127.0.0.1:0 --tls-cert %s --tls-key %s ")
                         :format(q(f.cert), q(f.key))
            fails(keys .. "--tls-verify optional", "tls://127.0.0.1:0: " ..
                  "--tls-verify needs a client CA to check client " ..
                  "certificates against (--tls-client-ca or listen{ " ..
                  "client_ca = })")
            local cfg = conf(('listen { "tls://127.0.0.1:0", cert = %q, ' ..
                              'key = %q, verify = "require" }\n')
                             :format(f.cert, f.key))
            fails("-c " .. q(cfg), ": listen tls://127.0.0.1:0: verify " ..
                  "needs a client CA")
            fails(keys .. "--tls-verify maybe", "unknown tls verify 'maybe' " ..
                  "(--tls-verify needs \"require\" or \"optional\")")
            cfg = conf(('listen { "tls://127.0.0.1:0", cert = %q, key = %q, ' ..
                        'client_ca = %q, verify = "sometimes" }\n')
                       :format(f.cert, f.key, f.ca))
            fails("-c " .. q(cfg), cfg .. ":1: listen.verify must be " ..
                  "\"require\" or \"optional\", not \"sometimes\"")
        end)

        it("a bad alpn entry", function()
            if not need() then return end
            local keys = ("-l tls://127.0.0.1:0 --tls-cert %s --tls-key %s ")
                         :format(q(f.cert), q(f.key))
            local want = "--tls-alpn needs protocol names of 1 to 255 " ..
                         "bytes, comma-separated, as in h2,http/1.1"
            fails(keys .. "--tls-alpn h2,,http/1.1", want)
            fails(keys .. "--tls-alpn ''", want)
            fails(keys .. "--tls-alpn " .. ("x"):rep(256), want)
            local base = ('listen { "tls://127.0.0.1:0", cert = %q, key = %q, ')
                         :format(f.cert, f.key)
            local cfg = conf(base .. 'alpn = { "h2", "" } }\n')
            fails("-c " .. q(cfg), cfg .. ":1: listen.alpn[2] must be a " ..
                  "protocol name of 1 to 255 bytes (the list at most 65535 " ..
                  "bytes), not \"\"")
            cfg = conf(base .. 'alpn = { "h2", 2 } }\n')
            fails("-c " .. q(cfg), "listen.alpn[2] must be a protocol name")
            cfg = conf(base .. 'alpn = "h2" }\n')
            fails("-c " .. q(cfg), "listen.alpn must be a list of protocol " ..
                  "names of 1 to 255 bytes, as in { \"h2\", \"http/1.1\" }, " ..
                  "not \"h2\"")
            cfg = conf(base .. 'alpn = {} }\n')
            fails("-c " .. q(cfg), "listen.alpn[1] must be a protocol name")
        end)

        it("a bad handshake timeout", function()
            if not need() then return end
            fails("-l tls://127.0.0.1:0 --tls-handshake-timeout -1",
                  "--tls-handshake-timeout needs a number of seconds >= 0")
            local cfg = conf(('listen { "tls://127.0.0.1:0", cert = %q, ' ..
                              'key = %q, handshake_timeout = "x" }\n')
                             :format(f.cert, f.key))
            fails("-c " .. q(cfg), "listen.handshake_timeout must be a " ..
                  "number of seconds >= 0, not \"x\"")
        end)

        it("a certificate or key that does not load", function()
            if not need() then return end
            fails(("-l tls://127.0.0.1:0 --tls-cert %s --tls-key %s")
                  :format(q(f.dir .. "/missing.pem"), q(f.key)),
                  "cannot load certificate")
            fails(("-l tls://127.0.0.1:0 --tls-cert %s --tls-key %s")
                  :format(q(f.cert), q(f.wrong_key)), MISMATCH)
        end)

        it("also under --workers 2", function()
            if not need() then return end
            fails("--workers 2 -l tls://127.0.0.1:0 --tls-cert " .. q(f.cert),
                  "a tls listener needs cert and key")
            fails(("--workers 2 -l tls://127.0.0.1:0 --tls-cert %s " ..
                   "--tls-key %s"):format(q(f.cert), q(f.wrong_key)),
                  MISMATCH)
        end)
    end)

    it("lists tls:// and the --tls flags in --help", function()
        local status, out = helpers.run(helpers.luaserv, "--help")
        assert.equal(0, status, out)
        for _, s in ipairs({ "tls://HOST:PORT", "--tls-cert FILE",
                             "--tls-key FILE", "--tls-client-ca FILE",
                             "--tls-verify MODE", "--tls-alpn LIST",
                             "--tls-handshake-timeout SEC" }) do
            assert.truthy(out:find(s, 1, true), s)
        end
    end)

    it("serves a config file's tls listener with its alpn", function()
        if not need() then return end
        local cfg = conf(([[
listen { "tls://127.0.0.1:0", handler = %q, cert = %q, key = %q,
         alpn = { "h2", "http/1.1" }, handshake_timeout = 5 }
listen { "tcp://127.0.0.1:0", handler = %q }
]]):format(SCRIPT, f.cert, f.key, SCRIPT))
        local srv = start_cfg(cfg, 2)
        local log, port = srv:log(), srv.port
        assert.truthy(log:find("luaserv: listening on tcp 127.0.0.1:", 1,
                               true), log)
        local status, out = tls_client(port, f.ca, { alpn = "http/1.1,h2" })
        assert.equal(0, status, out)
        assert.truthy(out:find("ALPN=h2\n", 1, true), out)  -- ours first
        assert.truthy(out:match("LINE=%[.-%] hello\n"), out)
        status, out = tls_client(port, f.ca, { alpn = "http/1.1" })
        assert.equal(0, status, out)
        assert.truthy(out:find("ALPN=http/1.1\n", 1, true), out)
        -- No protocol in common: the handshake goes on without ALPN.
        status, out = tls_client(port, f.ca, { alpn = "spdy/3" })
        assert.equal(0, status, out)
        assert.truthy(out:find("ALPN=None\n", 1, true), out)
    end)

    it("re-reads a config file's certificate on SIGHUP", function()
        if not need() then return end
        local dir = helpers.tmpname(".certs")
        os.execute("mkdir -p " .. q(dir))
        finally(function() os.execute("rm -rf " .. q(dir)) end)
        local cert, key = dir .. "/cert.pem", dir .. "/key.pem"
        local function install(c, k)
            assert(os.execute(("cp %s %s.new && mv %s.new %s && cp %s %s.new"
                               .. " && mv %s.new %s"):format(q(c), q(cert),
                               q(cert), q(cert), q(k), q(key), q(key),
                               q(key))))
        end
        install(f.cert, f.key)
        local cfg = conf(('listen { "tls://127.0.0.1:0", handler = %q, ' ..
                          'cert = %q, key = %q }\n'):format(SCRIPT, cert, key))
        local srv = start_cfg(cfg, 1)
        local function serial()
            local status, out = tls_client(srv.port, f.ca)
            assert.equal(0, status, out)
            return out:match("SERIAL=(%x+)")
        end
        assert.equal(tls.serial(f.cert):upper(), serial())
        local c2, k2 = tls.issue()
        install(c2, k2)
        os.execute("kill -HUP " .. srv.pid)
        assert.truthy(helpers.wait_for(function()
            return srv:log():find("certificate reloaded", 1, true)
        end, TIMEOUT), srv:log())
        assert.equal(tls.serial(c2):upper(), serial())
    end)

    it("serves -l tls:// with the flags, and mutual TLS", function()
        if not need() then return end
        local srv = helpers.start_server{
            listen = { "tls://127.0.0.1:0", "127.0.0.1:0" }, script = SCRIPT,
            args = { "--tls-cert", f.cert, "--tls-key", f.key,
                     "--tls-alpn", "http/1.1" } }
        assert.equal("tls", srv.addrs[1].kind)
        assert.equal("tcp", srv.addrs[2].kind)
        local status, out = tls_client(srv.ports[1], f.ca,
                                       { alpn = "h2,http/1.1" })
        assert.equal(0, status, out)
        assert.truthy(out:find("ALPN=http/1.1\n", 1, true), out)
        assert.truthy(out:match("LINE=%[.-%] hello\n"), out)

        local m = helpers.start_server{
            listen = { "tls://127.0.0.1:0" }, script = SCRIPT,
            args = { "--tls-cert", f.cert, "--tls-key", f.key,
                     "--tls-client-ca", f.client_ca } }
        status, out = tls_client(m.port, f.ca, { cert = f.client_cert,
                                                 key = f.client_key })
        assert.equal(0, status, out)
        assert.truthy(out:match("LINE=%[.-%] hello\n"), out)
        status, out = tls_client(m.port, f.ca)   -- no client certificate
        assert.are_not.equal(0, status, out)
        assert.falsy(out:find("LINE=[", 1, true), out)

        local o = helpers.start_server{
            listen = { "tls://127.0.0.1:0" }, script = SCRIPT,
            args = { "--tls-cert", f.cert, "--tls-key", f.key,
                     "--tls-client-ca", f.client_ca, "--tls-verify",
                     "optional" } }
        status, out = tls_client(o.port, f.ca)
        assert.equal(0, status, out)
        assert.truthy(out:match("LINE=%[.-%] hello\n"), out)
    end)

    it("serves a chain file: the leaf, then its intermediate", function()
        if not need() then return end
        local srv = helpers.start_server{
            listen = { "tls://127.0.0.1:0" }, script = SCRIPT,
            args = { "--tls-cert", f.chain, "--tls-key", f.chain_key } }
        -- The client trusts the root only: the intermediate must be sent.
        local status, out = tls_client(srv.port, f.ca)
        assert.equal(0, status, out)
        assert.truthy(out:match("LINE=%[.-%] hello\n"), out)
    end)

    it("closes a handshake not done in --tls-handshake-timeout", function()
        if not need() then return end
        local srv = helpers.start_server{
            listen = { "tls://127.0.0.1:0" }, script = SCRIPT,
            args = { "--tls-cert", f.cert, "--tls-key", f.key,
                     "--tls-handshake-timeout", "0.5" } }
        local c = helpers.connect(srv.port)
        c:settimeout(TIMEOUT)
        local t0 = helpers.now()
        local data, err = c:receive(1)     -- we send nothing
        c:close()
        assert.is_nil(data)
        assert.equal("closed", err)
        local took = helpers.now() - t0
        assert.truthy(took >= 0.4 and took < TIMEOUT, took)
    end)

    it("reads a PROXY header before TLS with --proxy-protocol", function()
        if not need() then return end
        local srv = helpers.start_server{
            listen = { "tls://127.0.0.1:0" }, script = SCRIPT,
            args = { "--tls-cert", f.cert, "--tls-key", f.key,
                     "--proxy-protocol" } }
        local status, out = tls_client(srv.port, f.ca, { proxy = "1" })
        assert.equal(0, status, out)
        assert.truthy(out:match("LINE=%[.-%] hello\n"), out)
    end)

    it("serves TLS from each of --workers 2", function()
        if not need() then return end
        local srv = helpers.start_server{
            listen = { "tls://127.0.0.1:0" },
            source = 'local luaserv = require "luaserv"\n' ..
                     'return { on_message = function(_, l)\n' ..
                     '  return "worker " .. luaserv.worker.id .. " " .. l ..' ..
                     ' "\\n"\n' ..
                     'end }\n',
            args = { "--workers", "2", "--tls-cert", f.cert, "--tls-key",
                     f.key, "--tls-alpn", "h2" } }
        assert.equal("tls", srv.addrs[1].kind)
        -- The kernel spreads connections over both workers' sockets
        -- (SO_REUSEPORT): 40 of them reach each with near certainty.
        local status, out = tls_client(srv.port, f.ca, { alpn = "h2",
                                                         n = "40" })
        assert.equal(0, status, out)
        assert.equal(40, helpers.count(out, "ALPN=h2\n"), out)
        assert.equal(40, helpers.count(out, "hello\n"), out)
        assert.truthy(out:find("LINE=worker 1 hello\n", 1, true), out)
        assert.truthy(out:find("LINE=worker 2 hello\n", 1, true), out)
        -- A worker the master restarts builds its TLS anew and serves.
        local before = helpers.children(srv.pid)
        assert.equal(2, #before)
        os.execute("kill -KILL " .. before[1])
        assert.truthy(helpers.wait_for(function()
            local now = helpers.children(srv.pid)
            return #now == 2 and now[1] ~= before[1] and now[2] ~= before[1]
        end, TIMEOUT), srv:log())
        -- Until it listens, the other worker takes every connection.
        local both = helpers.wait_for(function()
            status, out = tls_client(srv.port, f.ca, { alpn = "h2",
                                                       n = "20" })
            return status == 0 and out:find("LINE=worker 1 hello\n", 1,
                                            true) and
                   out:find("LINE=worker 2 hello\n", 1, true)
        end, TIMEOUT)
        assert.truthy(both, out .. srv:log())
    end)
end)

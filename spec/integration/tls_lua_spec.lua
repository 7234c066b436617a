-- TLS in the handler layer: conn.tls as real clients (openssl s_client,
-- Python's ssl, curl) see it, on_sni choosing the certificate, the
-- certificates' reload on SIGHUP, the handshake metrics, and
-- luaserv.http's static files over TLS (no sendfile there).
local helpers = require "helpers"
local op = require "fixtures.operations_util"

local WHOAMI = "spec/fixtures/tls_whoami.lua"
local SLOW = op.SLOW
local q = helpers.shell_quote

local tls = require "fixtures.tls_util"

local HAVE_OPENSSL = tls.available()
local HAVE_CURL = tls.have("curl")
local HAVE_PYTHON = os.execute("/usr/bin/python3 -c 'import ssl' "
                               .. ">/dev/null 2>&1") == true

-- --- certificates ---------------------------------------------------------

-- The shared set (tls_util: a CA, localhost, b.test, a client CA and
-- client) and this file's own folder, whose files the tests replace: the
-- server's live cert and key, on_sni's copies of b.test's.
local f, dir

-- Runs shell text in dir; raises with its output when it fails.
local function sh(cmd)
    local status, out = helpers.sh("cd " .. q(dir) .. " && " .. cmd)
    if status ~= 0 then error(cmd .. ":\n" .. out, 2) end
    return out
end

local function path(name) return dir .. "/" .. name end

-- Copies the file at from (a path) to name in dir.
local function copy(from, name)
    helpers.write_file(path(name), assert(helpers.read_file(from)))
end

-- --- clients --------------------------------------------------------------

-- openssl s_client to port: sends input (lines), returns what came back
-- (stdout) and the exit status. opts: servername (false: none sent),
-- alpn, cert (true: the client cert), tls12, sess_out / sess_in (files).
local function s_client(port, input, opts)
    opts = opts or {}
    local args = { "-connect 127.0.0.1:" .. port, "-CAfile " .. q(f.ca),
                   "-quiet" }
    if opts.servername == false then args[#args + 1] = "-noservername"
    else args[#args + 1] = "-servername " .. q(opts.servername or "localhost") end
    if opts.alpn then args[#args + 1] = "-alpn " .. q(opts.alpn) end
    if opts.cert then
        args[#args + 1] = "-cert " .. q(f.client_cert)
        args[#args + 1] = "-key " .. q(f.client_key)
    end
    if opts.tls12 then args[#args + 1] = "-tls1_2" end
    if opts.sess_out then args[#args + 1] = "-sess_out " .. q(opts.sess_out) end
    if opts.sess_in then args[#args + 1] = "-sess_in " .. q(opts.sess_in) end
    local status, out = helpers.sh(("printf %s | timeout %d openssl s_client %s "
                                    .. "2>/dev/null"):format(
        q(input), 10 * SLOW, table.concat(args, " ")))
    return out, status
end

-- The "info" line's fields as a table, through s_client.
local function tls_info(port, opts)
    local out = s_client(port, "info\nbye\n", opts)
    local line = out:match("([^\n]*version=[^\n]*)")
    assert(line, "no info line in: " .. out)
    local t = {}
    for k, v in line:gmatch("([%w_]+)=([^|]*)") do t[k] = v end
    return t
end

-- The subject and serial of the certificate port serves for name (nil:
-- no SNI), and whether the handshake worked.
local function served(port, name)
    local status, out = helpers.sh(("timeout %d openssl s_client -connect "
        .. "127.0.0.1:%d %s </dev/null 2>/dev/null | openssl x509 -noout "
        .. "-subject -serial"):format(10 * SLOW, port,
        name and "-servername " .. q(name) or "-noservername"))
    if status ~= 0 then return nil end
    return out:match("subject=([^\n]*)"), out:match("serial=(%x+)")
end

-- A TLS server on the whoami fixture; extra args and shell prefix.
local function start(args, shell, listen)
    local a = { "--tls-cert", f.cert, "--tls-key", f.key }
    for _, x in ipairs(args or {}) do a[#a + 1] = x end
    return helpers.start_server{
        script = WHOAMI, args = a, listen = listen or { "tls://127.0.0.1:0" },
        shell = "TLS_SNI_DIR=" .. q(dir) .. " " .. (shell or ""),
    }
end

local function wait_log(srv, pattern, what)
    return helpers.wait_until(function()
        return srv:log():find(pattern, 1, true)
    end, 10 * SLOW, what or pattern)
end

-- The port of the first listener of kind in srv's ready lines (waiting
-- for its line: start_server waits only for the -l ones).
local function port_of(srv, kind)
    return tonumber(helpers.wait_until(function()
        for _, a in ipairs(helpers.ready(srv:log())) do
            if a.kind == kind then return a.addr:match(":(%d+)$") end
        end
    end, 10 * SLOW, "the " .. kind .. " ready line"))
end

local function luaserv_has(flag)
    local _, out = helpers.run(helpers.luaserv, "--help")
    return out:find(flag, 1, true) ~= nil
end

-- --- the specs ------------------------------------------------------------

local describe_tls = HAVE_OPENSSL and describe or function(name)
    describe(name, function()
        pending("needs the openssl command")
    end)
end

describe_tls("TLS in the handler layer", function()
    lazy_setup(function()
        f = tls.files()
        dir = helpers.tmpname(".tlslua")
        assert(os.execute("mkdir -p " .. q(dir)))
        copy(f.b_cert, "b.pem")
        copy(f.b_key, "b.key")
    end)

    lazy_teardown(function()
        if dir then os.execute("rm -rf " .. q(dir)) end
    end)

    describe("conn.tls", function()
        it("shows version, cipher, sni and alpn to a callback handler", function()
            local srv = start({ "--tls-alpn", "h2,http/1.1" },
                              nil, { "tls://127.0.0.1:0", "127.0.0.1:0" })
            local port = port_of(srv, "tls")
            local t = tls_info(port, { alpn = "http/1.1" })
            assert.equal("TLSv1.3", t.version)
            assert.matches("^TLS_", t.cipher)
            assert.equal("localhost", t.sni)
            assert.equal("http/1.1", t.alpn)
            assert.equal("false", t.resumed)
            assert.equal("false", t.peer_cert)
            t = tls_info(port, { servername = false, tls12 = true })
            assert.equal("TLSv1.2", t.version)
            assert.equal("-", t.sni)
            assert.equal("-", t.alpn)
            assert.matches("^ECDHE%-ECDSA%-", t.cipher)
            -- the same table each time; nil on a plaintext conn
            assert.matches("true\n", (s_client(port, "same\nbye\n")))
            local c = helpers.connect(port_of(srv, "tcp"), 10 * SLOW)
            assert(c:send("info\n"))
            assert.equal("plain", c:receive("*l"))
            c:close()
        end)

        it("shows the same to a stream-style handler", function()
            local srv = start(nil, "TLS_WHOAMI_STREAM=1 ")
            local t = tls_info(srv.port, { alpn = "h2" })
            assert.equal("TLSv1.3", t.version)
            assert.equal("localhost", t.sni)
            assert.equal("-", t.alpn)      -- the listener offers none
        end)

        it("says resumed for a resumed TLS 1.2 session", function()
            local srv = start()
            local sess = helpers.tmpname(".sess")
            helpers.defer(function() os.remove(sess) end)
            assert.equal("false", tls_info(srv.port, { tls12 = true,
                                                       sess_out = sess }).resumed)
            assert.equal("true", tls_info(srv.port, { tls12 = true,
                                                      sess_in = sess }).resumed)
        end)

        it("shows the client's certificate under mutual TLS", function()
            if not luaserv_has("--tls-client-ca") then
                pending("needs --tls-client-ca (the ops helper's flags)")
                return
            end
            local srv = start({ "--tls-client-ca", f.client_ca,
                                "--tls-verify", "optional" })
            local t = tls_info(srv.port, { cert = true })
            assert.equal("true", t.peer_cert)
            assert.equal("true", t.verified)
            assert.matches("CN=client", t.subject)
            assert.matches("CN=luaserv client CA", t.issuer)
            local fp = sh("openssl x509 -noout -fingerprint -sha256 -in "
                          .. q(f.client_cert)):match("=([%x:]+)")
            assert.equal(fp:upper(), t.fingerprint)
            -- verify = optional: no certificate is no peer_cert
            assert.equal("false", tls_info(srv.port).peer_cert)
        end)
    end)

    describe("on_sni", function()
        it("chooses the certificate by the name asked for", function()
            local srv = start()
            assert.matches("CN ?= ?b%.test", (served(srv.port, "b.test")))
            assert.matches("CN ?= ?b%.test", (served(srv.port, "pem.test")))
            assert.matches("CN ?= ?localhost", (served(srv.port, "other.test")))
            assert.matches("CN ?= ?localhost", (served(srv.port, nil)))
            -- and it was given the client, the listener and the address
            local out = s_client(srv.port, "sni\nbye\n", { servername = "x.test" })
            local p = srv.port
            assert.matches("name=x.test|peer=127.0.0.1:%d+|listener=tls://127.0.0.1:"
                           .. p .. "|local=127.0.0.1:" .. p, out)
        end)

        it("reads a certificate once, until a reload", function()
            local srv = start()
            assert.matches("CN ?= ?b%.test", (served(srv.port, "b.test")))
            os.rename(path("b.pem"), path("b.pem.away"))
            helpers.defer(function() os.rename(path("b.pem.away"), path("b.pem")) end)
            -- cached: served without its file
            assert.matches("CN ?= ?b%.test", (served(srv.port, "b.test")))
            assert(os.execute("kill -HUP " .. srv.pid))
            wait_log(srv, "certificate reloaded")
            -- the reload dropped the cache: the file is read again, and
            -- it is gone
            assert.is_nil((served(srv.port, "b.test")))
            wait_log(srv, 'on_sni("b.test")')
            os.rename(path("b.pem.away"), path("b.pem"))
            assert.matches("CN ?= ?b%.test", (served(srv.port, "b.test")))
            -- a clean exit frees the cache (SANITIZE=1: no leak reported)
            assert.equal(0, srv:stop())
        end)

        it("fails the handshake on an error, and serves on", function()
            local srv = start({ "--handler-timeout", "0.3", "--metrics",
                                "127.0.0.1:0" })
            local port = port_of(srv, "tls")
            for _, name in ipairs({ "bad.test", "missing.test", "shape.test",
                                    "loop.test" }) do
                assert.is_nil((served(port, name)), name)
                wait_log(srv, 'on_sni("' .. name .. '")')
                -- one line each, no traceback
                local log = srv:log()
                local line = log:match('[^\n]*on_sni%("' .. name:gsub("%.", "%%.")
                                       .. '"%)[^\n]*')
                assert.matches("warn", line)
                assert.matches("the TLS handshake fails", line)
                assert.is_nil(log:find("stack traceback", 1, true))
                assert.matches("CN ?= ?localhost", (served(port, "ok.test")))
            end
            local log = srv:log()
            assert.matches("no certificate for bad.test", log)
            assert.matches("missing.pem", log)
            assert.matches("returned a number and a nil", log)
            assert.matches("timeout", log:match('[^\n]*on_sni%("loop%.test"%)[^\n]*'))
            local body = select(3, op.http_get(port_of(srv, "tcp"), "/metrics"))
            assert.equal(4, op.sample(body, "luaserv_tls_handshake_failures_total",
                                      'listener="tls://127.0.0.1:' .. port
                                      .. '",reason="sni"'))
            assert.equal(0, srv:stop())
        end)
    end)

    describe("certificate reload", function()
        it("serves a rotated certificate to new handshakes after SIGHUP", function()
            if not HAVE_PYTHON then
                pending("needs /usr/bin/python3 with ssl")
                return
            end
            copy(f.cert, "live.pem")
            copy(f.key, "live.key")
            local serial = tls.serial(f.cert)
            local srv = helpers.start_server{
                script = WHOAMI, listen = { "tls://127.0.0.1:0" },
                args = { "--tls-cert", path("live.pem"), "--tls-key",
                         path("live.key") } }
            assert.equal(serial, select(2, served(srv.port)))
            -- a connection open across the reload
            local go, out = helpers.tmpname(".go"), helpers.tmpname(".out")
            helpers.defer(function() os.remove(go); os.remove(out) end)
            local py = ([[
import os, socket, ssl, sys, time
ctx = ssl.create_default_context(cafile=%q)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", %d)),
                    server_hostname="localhost")
f = s.makefile("rwb")
def ask():
    f.write(b"info\n"); f.flush()
    return f.readline().decode().strip()
cert = s.getpeercert()
first = ask()
with open(%q, "w") as o: o.write("1 %%s\n" %% cert["serialNumber"])
deadline = time.time() + 30
while not os.path.exists(%q) and time.time() < deadline: time.sleep(0.02)
second = ask()
with open(%q, "a") as o: o.write("2 %%s\n" %% second)
]]):format(f.ca, srv.port, out, go, out)
            local pyfile = helpers.write_file(helpers.tmpname(".py"), py)
            helpers.defer(function() os.remove(pyfile) end)
            os.execute(("timeout %d /usr/bin/python3 %s >/dev/null 2>&1 &"):format(
                40 * SLOW, q(pyfile)))
            helpers.wait_until(function()
                return (helpers.read_file(out) or ""):find("^1 ")
            end, 10 * SLOW, "the held connection")
            local rot, rot_key, rot_serial = tls.issue()
            copy(rot, "live.pem")
            copy(rot_key, "live.key")
            assert(os.execute("kill -HUP " .. srv.pid))
            wait_log(srv, "tls://127.0.0.1:" .. srv.port .. ": certificate reloaded")
            assert.equal(rot_serial, select(2, served(srv.port)))
            -- the open connection still works, on its old session
            helpers.write_file(go, "")
            local got = helpers.wait_until(function()
                return (helpers.read_file(out) or ""):match("\n2 ([^\n]*)")
            end, 10 * SLOW, "the held connection's second answer")
            assert.matches("version=TLSv1%.3", got)
            assert.equal("1 " .. serial .. "\n", helpers.read_file(out):match("^1 [^\n]*\n"))
        end)

        it("keeps the old certificate when the new one does not load", function()
            copy(f.cert, "live2.pem")
            copy(f.key, "live2.key")
            local serial = tls.serial(f.cert)
            local rot, rot_key, rot_serial = tls.issue()
            local srv = helpers.start_server{
                script = WHOAMI, listen = { "tls://127.0.0.1:0" },
                args = { "--tls-cert", path("live2.pem"), "--tls-key",
                         path("live2.key") } }
            -- a key that does not match the certificate
            copy(rot, "live2.pem")
            copy(f.b_key, "live2.key")
            assert(os.execute("kill -HUP " .. srv.pid))
            wait_log(srv, "keeping the old certificate")
            local line = srv:log():match("[^\n]*keeping the old certificate[^\n]*")
            assert.matches("error", line)
            assert.matches("tls://127.0.0.1:" .. srv.port, line, 1, true)
            assert.equal(serial, select(2, served(srv.port)))
            -- a file that is not PEM at all
            helpers.write_file(path("live2.pem"), "not a certificate\n")
            assert(os.execute("kill -HUP " .. srv.pid))
            helpers.wait_until(function()
                return helpers.count(srv:log(), "keeping the old certificate") >= 2
            end, 10 * SLOW, "the second error line")
            assert.equal(serial, select(2, served(srv.port)))
            -- and a good pair again is taken
            copy(rot, "live2.pem")
            copy(rot_key, "live2.key")
            assert(os.execute("kill -HUP " .. srv.pid))
            wait_log(srv, "certificate reloaded")
            assert.equal(rot_serial, select(2, served(srv.port)))
            assert.equal(0, srv:stop())
        end)
        -- Starts the whoami fixture (a copy the test may break) on live
        -- files in dir with extra args; rotates them to a fresh cert
        -- and returns the server, the old and the new serial.
        local function rotate_setup(extra, live)
            copy(f.cert, live .. ".pem")
            copy(f.key, live .. ".key")
            copy(WHOAMI, live .. ".lua")
            local args = { "--tls-cert", path(live .. ".pem"), "--tls-key",
                           path(live .. ".key") }
            for _, a in ipairs(extra) do args[#args + 1] = a end
            local srv = helpers.start_server{ script = path(live .. ".lua"),
                                              listen = { "tls://127.0.0.1:0" },
                                              args = args }
            local serial = tls.serial(f.cert)
            assert.equal(serial, select(2, served(srv.port)))
            local rot, rot_key, rot_serial = tls.issue()
            copy(rot, live .. ".pem")
            copy(rot_key, live .. ".key")
            return srv, serial, rot_serial
        end

        it("reloads the certificate in every worker (--workers 2)", function()
            local srv, _, rot_serial = rotate_setup({ "--workers", "2" }, "w")
            assert(os.execute("kill -HUP " .. srv.pid))
            helpers.wait_until(function()
                return helpers.count(srv:log(), "certificate reloaded") == 2
            end, 10 * SLOW, "both workers' reload lines")
            for _ = 1, 6 do     -- whichever worker accepts
                assert.equal(rot_serial, select(2, served(srv.port)))
            end
        end)

        it("reloads the certificate when the script's reload fails", function()
            for _, workers in ipairs({ "1", "2" }) do
                local srv, _, rot_serial = rotate_setup({ "--workers", workers },
                                                        "f" .. workers)
                helpers.write_file(path("f" .. workers .. ".lua"), "return (\n")
                assert(os.execute("kill -HUP " .. srv.pid))
                helpers.wait_until(function()
                    return helpers.count(srv:log(), "certificate reloaded")
                           == tonumber(workers)
                end, 10 * SLOW, "the reload lines of " .. workers .. " worker(s)")
                assert.matches("reload of [^\n]* failed", srv:log())
                for _ = 1, 4 do
                    assert.equal(rot_serial, select(2, served(srv.port)))
                end
                srv:stop("KILL")
            end
        end)
    end)

    describe("metrics", function()
        it("counts handshakes, resumptions and failures by reason", function()
            local srv = start({ "--metrics", "127.0.0.1:0" })
            local port, mport = port_of(srv, "tls"), port_of(srv, "tcp")
            local sess = helpers.tmpname(".sess")
            helpers.defer(function() os.remove(sess) end)
            tls_info(port, { tls12 = true, sess_out = sess })
            tls_info(port, { tls12 = true, sess_in = sess })
            local c = helpers.connect(port, 10 * SLOW)     -- plaintext
            c:send("GET / HTTP/1.0\r\n\r\n")
            helpers.read_to_close(c)
            local body = select(3, op.http_get(mport, "/metrics"))
            local l = 'listener="tls://127.0.0.1:' .. port .. '"'
            assert.equal(2, op.sample(body, "luaserv_tls_handshakes_total", l))
            assert.equal(1, op.sample(body, "luaserv_tls_resumed_total", l))
            for _, r in ipairs({ "protocol", "version", "certificate", "timeout",
                                 "eof", "sni" }) do
                local v = op.sample(body, "luaserv_tls_handshake_failures_total",
                                    l:sub(1, -2) .. '",reason="' .. r .. '"')
                assert.is_number(v, r)
                if r == "protocol" then assert.equal(1, v) end
            end
            assert.matches("# TYPE luaserv_tls_handshakes_total counter", body, 1, true)
            -- a plaintext listener (the metrics one) has no TLS series
            assert.is_nil(body:find('luaserv_tls_handshakes_total{listener="tcp://',
                                    1, true))
            -- core.listeners() has them too
            local out = s_client(port, "listeners\nbye\n")
            assert.matches("tls://127.0.0.1:" .. port .. " handshakes=3 resumed=1 "
                           .. "protocol=1 sni=0", out, 1, true)
            assert.is_nil(out:find("tcp://", 1, true))
        end)

        it("labels and sums them by worker under --workers", function()
            local sock = helpers.tmpname(".sock")
            local srv = start({ "--workers", "2", "--metrics", "127.0.0.1:0",
                                "--admin", "unix:" .. sock })
            local port = port_of(srv, "tls")
            for _ = 1, 4 do tls_info(port) end
            local mport = port_of(srv, "tcp")
            local l = 'listener="tls://127.0.0.1:' .. port .. '"'
            local body
            helpers.wait_until(function()
                body = select(3, op.http_get(mport, "/metrics"))
                return op.sample(body, "luaserv_tls_handshakes_total",
                                 l:sub(1, -2) .. '",worker="all"') == 4
            end, 10 * SLOW, "4 handshakes summed over the workers")
            local w1 = op.sample(body, "luaserv_tls_handshakes_total",
                                 l:sub(1, -2) .. '",worker="1"')
            local w2 = op.sample(body, "luaserv_tls_handshakes_total",
                                 l:sub(1, -2) .. '",worker="2"')
            assert.equal(4, w1 + w2)
            assert.is_number(op.sample(body, "luaserv_tls_handshake_failures_total",
                                       l:sub(1, -2) .. '",reason="sni",worker="all"'))
            -- admin stats sums them too
            local _, stats = helpers.run(helpers.cli, "--admin " .. q(sock) .. " stats")
            assert.matches("listener tls://127.0.0.1:" .. port .. " [^\n]* "
                           .. "tls_handshakes=4 tls_resumed=0 tls_failures=0", stats)
        end)
    end)

    describe("luaserv.http static files", function()
        local function serve_static(style)
            local root = path("static")
            os.execute("mkdir -p " .. q(root))
            return helpers.start_server{
                script = "examples/http.lua", listen = { "tls://127.0.0.1:0" },
                args = { "--tls-cert", f.cert, "--tls-key", f.key },
                shell = "HTTP_STATIC=" .. q(root) .. " HTTP_STYLE=" .. style .. " ",
            }
        end

        for _, style in ipairs({ "callback", "stream" }) do
            it("sends files over TLS with curl, kept alive (" .. style .. ")", function()
                if not HAVE_CURL then
                    pending("needs curl")
                    return
                end
                local srv = serve_static(style)
                sh("head -c 300000 /dev/urandom >static/small.bin")
                local big = style == "stream" and 24 * 1024 * 1024 or 1024 * 1024
                sh(("head -c %d /dev/urandom >static/big.bin"):format(big))
                local a, b = helpers.tmpname(".a"), helpers.tmpname(".b")
                helpers.defer(function() os.remove(a); os.remove(b) end)
                local url = "https://localhost:" .. srv.port .. "/static/"
                local status, out = helpers.sh(("curl -sS -m %d --cacert %s "
                    .. "--resolve localhost:%d:127.0.0.1 -w '%%{num_connects} "
                    .. "%%{http_code}\\n' %s -o %s %s -o %s"):format(
                    30 * SLOW, q(f.ca), srv.port, q(url .. "small.bin"),
                    q(a), q(url .. "big.bin"), q(b)))
                assert.equal(0, status, out)
                assert.equal("1 200\n0 200\n", out)   -- one connection for both
                assert.is_true(helpers.read_file(a) ==
                               helpers.read_file(path("static/small.bin")))
                assert.is_true(helpers.read_file(b) ==
                               helpers.read_file(path("static/big.bin")))
            end)
        end
    end)
end)

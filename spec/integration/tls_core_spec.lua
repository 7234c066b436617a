-- The TLS transport and the server's handshake stage (src/core/tls.c,
-- tls_stage.c) with real clients: openssl s_client and Python's ssl.
-- Certificates are made here with the openssl command (a CA and a cert
-- for localhost), so this file needs no other fixture.
local helpers = require "helpers"
local socket = require "socket"

local q = helpers.shell_quote
local CLIENT = "spec/fixtures/tls_core_client.py"
local PY = "/usr/bin/python3"
local TIMEOUT = helpers.sanitize and 20 or 8

local function have(cmd)
    return os.execute(cmd .. " >/dev/null 2>&1") == true
end

local missing
if not have("openssl version") then
    missing = "no openssl command: TLS core specs skipped"
elseif not have(PY .. " -c 'import ssl'") then
    missing = "no " .. PY .. " with ssl: TLS core specs skipped"
end

-- A CA and a localhost certificate (SAN localhost and 127.0.0.1) in a
-- fresh directory; EC keys, so it takes milliseconds.
local function make_certs()
    local dir = helpers.tmpname(".tls")
    local ok = os.execute(table.concat({
        "mkdir -p " .. q(dir), "cd " .. q(dir),
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1"
            .. " -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=core-ca",
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
            .. " -keyout srv.key -out srv.csr -subj /CN=localhost",
        "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext",
        "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key"
            .. " -CAcreateserial -out srv.pem -days 2 -extfile ext",
    }, " && ") .. " >/dev/null 2>&1")
    assert(ok, "openssl could not make the test certificates")
    return { dir = dir, ca = dir .. "/ca.pem", cert = dir .. "/srv.pem",
             key = dir .. "/srv.key" }
end

local certs

-- Starts a TLS listener serving source (Lua text) or script.
local function tls_server(opts, certs_)
    local args = { "--tls-cert", certs_.cert, "--tls-key", certs_.key }
    for _, a in ipairs(opts.args or {}) do args[#args + 1] = a end
    return helpers.start_server{ script = opts.script, source = opts.source,
                                 listen = { "tls://127.0.0.1:0" },
                                 args = args }
end

-- Runs the Python client; returns its output.
local function client(port, mode, ...)
    local argv = { q(PY), q(CLIENT), q(certs.ca), tostring(port), mode }
    for _, a in ipairs({ ... }) do argv[#argv + 1] = q(tostring(a)) end
    local p = io.popen("timeout 120 " .. table.concat(argv, " ") .. " 2>&1")
    local out = p:read("a")
    p:close()
    return out
end

-- Sends bytes on a plain TCP socket and returns what came back before the
-- server closed (nil and the error if it did not close in time).
local function plain(port, bytes, close_after)
    local c = assert(socket.tcp())
    c:settimeout(TIMEOUT)
    assert(c:connect("127.0.0.1", port))
    if bytes then assert(c:send(bytes)) end
    if close_after then c:close() return "" end
    local data, err, partial = c:receive("*a")
    c:close()
    if err and err ~= "closed" then return nil, err end
    return data or partial
end

local function wait_log(srv, pattern)
    return helpers.wait_until(function()
        return srv:log():find(pattern) ~= nil
    end, TIMEOUT, pattern)
end

local CB_ECHO = [[
local h = { framing = "raw" }
function h.on_message(_, data) return data end
return h
]]

local STREAM_ECHO = [[
local h = {}
function h.handle(conn)
    while true do
        local d = conn:read()
        if not d then return end
        conn:write(d)
    end
end
return h
]]

local LINES = [[
local h = { framing = "line" }
function h.on_message(conn, line)
    if line == "quit" then conn:close() return end
    if line == "who" then return tostring(conn.peer) .. "\n" end
    return line .. "\n"
end
return h
]]

describe("TLS core", function()
    if missing then
        pending(missing)
        return
    end

    lazy_setup(function() certs = make_certs() end)
    lazy_teardown(function()
        if certs then os.execute("rm -rf " .. q(certs.dir)) end
    end)

    it("echoes byte for byte to openssl s_client (scripts/handle.lua)",
       function()
        local srv = tls_server({ script = "scripts/handle.lua" }, certs)
        assert.equal("tls", srv.addrs[1].kind)
        local _, out = helpers.sh("(printf 'hello\\nw\\0rld\\r\\n'; sleep 1) | timeout 10 "
            .. "openssl s_client -quiet -connect 127.0.0.1:" .. srv.port
            .. " -CAfile " .. q(certs.ca) .. " 2>/dev/null")
        assert.matches("^" .. helpers.CTIME .. "hello\n" .. helpers.CTIME
                       .. "w%zrld\r\n$", out)
        assert.equal(0, srv:stop())
    end)

    it("closes plaintext, garbage, silence and a half handshake with one "
       .. "info line each, and serves the next client", function()
        local srv = tls_server({ source = LINES,
                                 args = { "--tls-handshake-timeout", "0.5" } },
                               certs)
        assert.equal("", plain(srv.port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        wait_log(srv, "TLS handshake: http request %(protocol%); closed")
        local junk = {}
        for i = 1, 3000 do junk[i] = string.char((i * 73 + 11) % 256) end
        plain(srv.port, table.concat(junk))
        wait_log(srv, "TLS handshake: [^\n]+ %(protocol%); closed")
        assert.equal("", plain(srv.port, nil))
        wait_log(srv, "TLS handshake: not done within 0.5 s %(timeout%)")
        plain(srv.port, "\22\3\1\0\200\1\0", true)
        wait_log(srv, "TLS handshake: [^\n]+ %(eof%); closed")
        assert.matches("^lines 10\n$", client(srv.port, "lines", 10))
        local log = srv:log()
        assert.is_nil(log:find(" warn "), log)
        assert.equal(4, helpers.count(log, "TLS handshake:"), log)
        assert.equal(0, srv:stop())
    end)

    for _, style in ipairs({ { "callback", CB_ECHO }, { "stream", STREAM_ECHO } }) do
        it("echoes 24 MiB in the " .. style[1] .. " style", function()
            local srv = tls_server({ source = style[2] }, certs)
            local out = client(srv.port, "echo", 24 * 1024 * 1024)
            assert.matches("^echo same 25165824\n$", out)
            assert.equal(0, srv:stop())
        end)
    end

    it("stops reading from a peer that does not read, without spinning",
       function()
        local srv = tls_server({ source = STREAM_ECHO }, certs)
        local out = client(srv.port, "stall", 10, srv.pid)
        local sent, rss, ticks = out:match("stalled after (%d+) rss (%d+) "
                                           .. "ticks (%d+)")
        assert(sent, out)
        sent = tonumber(sent)
        assert.is_true(sent < 64 * 1024 * 1024, out)   -- it stopped
        assert.is_true(tonumber(ticks) <= 5, out)      -- <= 50 ms a second
        assert.is_true(tonumber(rss) < (helpers.sanitize and 400000 or 60000),
                       out)
        assert.matches("read back " .. sent .. " of " .. sent, out)
        assert.equal(0, srv:stop())
    end)

    it("answers many pipelined lines that came in few records", function()
        local srv = tls_server({ source = LINES }, certs)
        assert.matches("^lines 20000\n$", client(srv.port, "lines", 20000))
        assert.equal(0, srv:stop())
    end)

    it("ends on the peer's close_notify and answers with its own",
       function()
        local srv = tls_server({ source = LINES }, certs)
        assert.matches("^unwrapped after one\n$",
                       client(srv.port, "close_notify"))
        assert.equal(0, srv:stop())
    end)

    it("answers a peer that half-closed without close_notify", function()
        local srv = tls_server({ source = LINES }, certs)
        assert.matches("^fin b'one\\ntwo\\n'\n$", client(srv.port, "fin"))
        assert.equal(0, srv:stop())
    end)

    it("sends close_notify when it closes a conn", function()
        local srv = tls_server({ source = LINES }, certs)
        assert.matches("^eof b'' with close_notify\n$",
                       client(srv.port, "server_close"))
        assert.equal(0, srv:stop())
    end)

    it("reads a PROXY header, then the handshake", function()
        local srv = tls_server({ source = LINES,
                                 args = { "--proxy-protocol" } }, certs)
        assert.matches("^proxy 203%.0%.113%.9:5555\n$",
                       client(srv.port, "proxy"))
        assert.equal(0, srv:stop())
    end)

    it("closes conns still in their handshake at a stop", function()
        local srv = tls_server({ source = LINES }, certs)
        local c = assert(socket.tcp())
        c:settimeout(TIMEOUT)
        assert(c:connect("127.0.0.1", srv.port))
        helpers.defer(function() c:close() end)
        helpers.sleep(0.1)
        local t0 = helpers.now()
        assert.equal(0, srv:stop())
        assert.is_true(helpers.now() - t0 < 3)
    end)
end)

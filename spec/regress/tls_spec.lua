-- TLS shapes that break servers: a handshake and records split at every
-- byte, a TLS 1.3 KeyUpdate asked of the server mid-stream, a TLS 1.2
-- renegotiation attempt (refused, the conn goes on), a TLS 1.1 client
-- (refused: reason "version"), a record header claiming more than TLS
-- allows, and many peers stuck mid-handshake at SIGTERM.
local helpers = require "helpers"
local tls = require "fixtures.tls_util"
local op = require "fixtures.operations_util"

local q = helpers.shell_quote
local CTIME = helpers.CTIME
local SLOW = helpers.sanitize and 4 or 1
local PY = "/usr/bin/python3"

local function skip(...)
    local why = tls.missing(...)
    if why then pending(why) end
    return why ~= nil
end

local function start(script, args)
    local f = tls.files()
    local all = { "--tls-cert", f.cert, "--tls-key", f.key,
                  "--metrics", "127.0.0.1:0" }
    for _, a in ipairs(args or {}) do all[#all + 1] = a end
    local srv = op.start{ script = script, args = all, announce = 2,
                          listen = { "tls://127.0.0.1:0" } }
    helpers.defer(function() srv:stop() end)
    srv.mport = op.find(srv.listening, "tcp").port
    return srv
end

-- openssl s_client with its commands on (no -quiet). steps: { { line,
-- wait }, ... }: each line is written alone, then the input waits (10 s
-- at most) until the output holds `wait` (plain text) before the next, so
-- a command letter reaches s_client in a read of its own; { line, wait,
-- n } waits for n lines holding `wait`. Returns the
-- timestamped lines' text after the stamp, joined, and the whole output.
local function s_client_cmds(port, steps, extra)
    local out = helpers.write_file(helpers.tmpname(".out"), "")
    local script = {}
    for _, st in ipairs(steps) do
        script[#script + 1] = ("printf '%%s\\n' %s; i=0; while [ $(grep -cF -- " ..
            "%s %s) -lt %d ] && [ $i -lt %d ]; do sleep 0.05; i=$((i+1)); done")
            :format(q(st[1]), q(st[2]), q(out), st[3] or 1, 200 * SLOW)
    end
    os.execute(("(%s) | timeout %d openssl s_client -no_ign_eof " ..
                "-connect 127.0.0.1:%d -CAfile %s %s >%s 2>&1"):format(
        table.concat(script, "; "), 40 * SLOW, port, q(tls.files().ca),
        extra or "", q(out)))
    local text = helpers.read_file(out) or ""
    os.remove(out)
    local got = {}
    for line in text:gmatch("[^\n]*\n") do
        local stamp = line:match("^" .. CTIME)
        if stamp then got[#got + 1] = line:sub(#stamp + 1) end
    end
    return table.concat(got), text
end

local function failures(srv, reason)
    local _, _, body = op.http_get(srv.mport, "/metrics")
    for line in body:gmatch("[^\n]+") do
        if line:find("^luaserv_tls_handshake_failures_total{") and
           line:find('reason="' .. reason .. '"', 1, true) then
            return tonumber(line:match(" (%S+)$"))
        end
    end
    return nil
end

describe("TLS regressions", function()
    it("takes a handshake and records that arrive a byte at a time", function()
        if skip("openssl", PY) then return end
        local srv = start("spec/fixtures/tls_stream.lua")
        local _, out = helpers.sh(("%s spec/fixtures/tls_client.py --trickle " ..
            "--timeout %d %d %s ask one two"):format(q(PY), 30 * SLOW, srv.port,
            q(tls.files().ca)))
        assert.equal("reply b'one\\n'\nreply b'two\\n'\n", out)
    end)

    it("answers a TLS 1.3 KeyUpdate request and its own, and serves on",
       function()
        if skip("openssl") then return end
        local srv = start("scripts/handle.lua")
        -- "K": a KeyUpdate asking the server to update too; "k": one not
        local got, text = s_client_cmds(srv.port, {
            { "one", "] one" }, { "K", "KEYUPDATE" }, { "two", "] two" },
            { "k", "KEYUPDATE", 2 }, { "three", "] three" } })
        assert.equal("one\ntwo\nthree\n", got, text)
        assert.equal(2, helpers.count(text, "KEYUPDATE"), text)
        assert.matches("Protocol  : TLSv1.3", text, 1, true)
    end)

    it("refuses a TLS 1.2 renegotiation and serves on", function()
        if skip("openssl") then return end
        local srv = start("scripts/handle.lua")
        local got, text = s_client_cmds(srv.port, { { "one", "] one" },
            { "R", "renegotiation" } }, "-tls1_2")
        assert.equal("one\n", got, text)
        assert.matches("RENEGOTIATING", text, 1, true)
        -- the server says no_renegotiation; OpenSSL's client then gives up
        assert.matches("no renegotiation", text, 1, true)
        assert.is_true(srv:alive())
        got = s_client_cmds(srv.port, { { "after", "] after" } }, "-tls1_2")
        assert.equal("after\n", got)
        assert.not_matches("warn", srv:log())
    end)

    it("refuses TLS 1.1 with reason version", function()
        if skip("openssl") then return end
        local srv = start("scripts/handle.lua")
        local _, text = helpers.sh(("timeout %d openssl s_client -tls1_1 " ..
            "-connect 127.0.0.1:%d </dev/null"):format(10 * SLOW, srv.port))
        assert.matches("alert protocol version", text, 1, true)
        helpers.wait_until(function() return failures(srv, "version") == 1 end,
                           5 * SLOW, "a version failure counted")
        assert.matches("info[^\n]*TLS handshake[^\n]*%(version%)", srv:log())
    end)

    it("closes a peer whose record header claims 65535 bytes", function()
        if skip("openssl") then return end
        local srv = start("scripts/handle.lua")
        local c = helpers.connect(srv.port, 10 * SLOW)
        -- a handshake record of 65535 bytes (TLS allows 16384 + 2048)
        assert(c:send("\22\3\1\255\255" .. ("\1"):rep(20000)))
        local _, err = helpers.read_to_close(c)
        assert.equal("closed", err)
        helpers.wait_until(function() return (failures(srv, "protocol") or 0) >= 1 end,
                           5 * SLOW, "a protocol failure counted")
        local got = s_client_cmds(srv.port, { { "after", "] after" } })
        assert.equal("after\n", got)
    end)

    it("stops at once with 50 peers mid-handshake", function()
        if skip("openssl") then return end
        local srv = start("scripts/handle.lua")
        local socks = {}
        helpers.close_at_end(socks)
        for i = 1, 50 do
            socks[i] = helpers.connect(srv.port, 10 * SLOW)
            -- half a ClientHello record: the stage waits for the rest
            if i % 2 == 0 then socks[i]:send("\22\3\1\2\0\1\0\1\252\3\3") end
        end
        helpers.wait_read(srv.port, 5 * SLOW)
        local t0 = helpers.now()
        assert.equal(0, srv:stop("TERM", 20))
        local took = helpers.now() - t0
        assert.is_true(took < 3 * SLOW, "took " .. took)
        for _, c in ipairs(socks) do
            local _, err = helpers.read_to_close(c)
            assert.equal("closed", err)
        end
    end)
end)

-- What a review of the TLS change found: on_accept ran only after a full
-- handshake (and after on_sni); on_sni's info.local was the listener's
-- wildcard address; a worker restarted after its certificate files went
-- bad failed to start again and again.
describe("TLS regressions from review", function()
    local function s_client(port, extra)
        local _, out = helpers.sh(("echo hi | timeout %d openssl s_client " ..
            "-connect %s -CAfile %s %s 2>&1"):format(10 * SLOW, port,
            q(tls.files().ca), extra or ""))
        return out
    end

    it("refuses a peer on_accept refuses before the handshake, without on_sni",
       function()
        if skip("openssl") then return end
        local f = tls.files()
        local srv = op.start{ source = [[
local h = {}
function h.on_accept(peer) io.stderr:write("on_accept ", peer, "\n") return false, "banned" end
function h.on_sni(_, name) io.stderr:write("on_sni ", name, "\n") end
function h.on_message(_, m) return m end
return h
]], args = { "--tls-cert", f.cert, "--tls-key", f.key },
            listen = { "tls://127.0.0.1:0" } }
        helpers.defer(function() srv:stop() end)
        local out = s_client("127.0.0.1:" .. srv.port, "-servername a.test")
        assert.is_nil(out:find("New, TLS", 1, true), out)
        helpers.wait_until(function() return srv:log():find("refused 127.0.0.1") end,
                           5 * SLOW, "the refusal's log line")
        local log = srv:log()
        assert.truthy(log:find("on_accept 127.0.0.1:", 1, true), log)
        assert.is_nil(log:find("on_sni", 1, true), log)
    end)

    it("limits the info lines of failed handshakes per listener, as warnings",
       function()
        if skip("openssl") then return end
        local srv = start("spec/fixtures/tls_stream.lua")
        for _ = 1, 30 do
            local c = helpers.connect(srv.port, 5 * SLOW)
            c:send("GET / HTTP/1.1\r\n\r\n")
            c:receive("*a")
            c:close()
        end
        helpers.wait_until(function() return failures(srv, "protocol") == 30 end,
                           10 * SLOW, "30 failures counted")
        assert.equal(10, helpers.count(srv:log(), "TLS handshake: "), srv:log())
    end)

    it("gives on_sni the address the client connected to", function()
        if skip("openssl") then return end
        local f = tls.files()
        local srv = op.start{ source = [[
local h = {}
function h.on_sni(info, name)
    io.stderr:write("sni ", name, " local ", tostring(info["local"]), "\n")
end
function h.on_message(_, m) return m end
return h
]], args = { "--tls-cert", f.cert, "--tls-key", f.key },
            listen = { "tls://0.0.0.0:0" } }
        helpers.defer(function() srv:stop() end)
        s_client("127.0.0.2:" .. srv.port, "-servername b.test")
        local want = "sni b.test local 127.0.0.2:" .. srv.port .. "\n"
        helpers.wait_until(function() return srv:log():find(want, 1, true) end,
                           5 * SLOW, want)
    end)

    it("serves the certificate loaded at start from a worker restarted after "
       .. "its files went bad", function()
        if skip("openssl") then return end
        local f = tls.files()
        local cert = helpers.write_file(helpers.tmpname(".pem"),
                                        helpers.read_file(f.cert))
        local srv = op.start{ source = "return { on_message = function(_, m) return m end }",
            args = { "--workers", "2", "--tls-cert", cert, "--tls-key", f.key },
            listen = { "tls://127.0.0.1:0" } }
        helpers.defer(function() srv:stop() end)
        helpers.write_file(cert, "garbage\n")
        local _, pids = helpers.sh("pgrep -P " .. srv.pid)
        local worker = assert(tonumber(pids:match("%d+")), pids)
        helpers.sh("kill -9 " .. worker)
        helpers.wait_until(function()
            return srv:log():find("serving the certificate loaded at start", 1, true)
        end, 10 * SLOW, "the restarted worker's fallback")
        for _ = 1, 6 do
            local out = s_client("127.0.0.1:" .. srv.port)
            assert.truthy(out:find("Verify return code: 0 (ok)", 1, true), out)
        end
        assert.is_nil(srv:log():find("exited with status 2", 1, true), srv:log())
    end)
end)

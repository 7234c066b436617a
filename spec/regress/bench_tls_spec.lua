-- spec/regress/bench_tls_spec.lua: luaserv-bench --tls, the client behind
-- `make bench`'s TLS rows (bench/tls_bench.py), in short bounded runs
-- against spec/fixtures/tls_line_server.py (a TLS line echo on Python's
-- ssl, with a throwaway certificate made by the openssl command).
local helpers = require "spec.helpers"

local BENCH = helpers.build .. "/luaserv-bench"
local FIXTURE = "spec/fixtures/tls_line_server.py"

local function field(out, name)
    return tonumber(out:match('"' .. name .. '":([%d.]+)'))
end

local have_openssl = os.execute("command -v openssl >/dev/null 2>&1")

-- A self-signed certificate for localhost (and 127.0.0.1) in a temp
-- dir, once: its cert and key paths.
local cert, key
local function certificate()
    if cert then return cert, key end
    local dir = helpers.tmpname(".d")
    assert(os.execute("mkdir -p " .. dir))
    cert, key = dir .. "/cert.pem", dir .. "/key.pem"
    assert(os.execute("openssl req -x509 -nodes -days 1 -newkey ec "
        .. "-pkeyopt ec_paramgen_curve:prime256v1 -subj /CN=localhost "
        .. "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "
        .. key .. " -out " .. cert .. " >/dev/null 2>&1"))
    return cert, key
end

local function fixture()
    local c, k = certificate()
    return helpers.start_server({ bin = FIXTURE, args = { c, k } })
end

local function bench(port, args)
    return helpers.run(BENCH, "-p " .. port .. " --warmup 0 --json "
                       .. "--check echo " .. args)
end

describe("luaserv-bench --tls", function()
    it("documents --tls, --tls-ca, --tls-sni and --tls-resume", function()
        local status, out = helpers.run(BENCH, "--help")
        assert.equal(0, status)
        for _, opt in ipairs({ "--tls ", "--tls-ca FILE", "--tls-sni NAME",
                               "--tls-resume" }) do
            assert.truthy(out:find(opt, 1, true), opt)
        end
    end)

    it("refuses the TLS options where they do not apply", function()
        for _, args in ipairs({ "-m udp --tls", "-m idle --tls",
                                "-m websocket --tls", "--tls-resume",
                                "--tls-ca x.pem", "-m persistent --tls "
                                .. "--tls-resume" }) do
            local status, out = helpers.run(BENCH, args)
            assert.equal(2, status, args .. ": " .. out)
        end
    end)

    if not have_openssl then
        pending("the openssl command is missing: no certificate to test with")
        return
    end

    it("short: a full handshake per request, none resumed", function()
        local srv = fixture()
        local status, out = bench(srv.port, "-m short --tls -c 4 -d 0.6")
        assert.equal(0, status, out)
        local n = field(out, "requests")
        assert.truthy(n > 0, out)
        assert.equal(0, field(out, "errors"), out)
        assert.truthy(field(out, "tls_handshakes") >= n, out)
        assert.equal(0, field(out, "tls_resumed"), out)
        assert.truthy(out:find('"tls_version":"TLSv1.3"', 1, true), out)
    end)

    it("short --tls-resume: every handshake after a connection's first resumes", function()
        local srv = fixture()
        local status, out = bench(srv.port, "-m short --tls --tls-resume "
                                  .. "-c 4 -d 0.6")
        assert.equal(0, status, out)
        local hs, res = field(out, "tls_handshakes"), field(out, "tls_resumed")
        assert.equal(0, field(out, "errors"), out)
        assert.truthy(hs > 8 and res >= hs - 4, out)
    end)

    it("persistent: pipelined echoes, lines of 70,000 B over many records", function()
        local srv = fixture()
        for _, args in ipairs({ "-c 4 -P 16 -s 16", "-c 2 -P 4 -s 70000" }) do
            local status, out = bench(srv.port, "-m persistent --tls -d 0.5 "
                                      .. args)
            assert.equal(0, status, out)
            assert.truthy(field(out, "requests") > 0, out)
            assert.equal(0, field(out, "errors"), out)
        end
    end)

    it("--tls-ca checks the certificate and the host", function()
        local srv = fixture()
        local c = certificate()
        local status, out = bench(srv.port, "-m short --tls -c 1 -d 0.3 "
                                  .. "-H localhost --tls-ca " .. c)
        assert.equal(0, status, out)
        assert.equal(0, field(out, "errors"), out)
        -- another server_name sent: the name checked is still the host
        status, out = bench(srv.port, "-m short --tls -c 1 -d 0.3 "
                            .. "--tls-sni other.test --tls-ca " .. c)
        assert.equal(0, status, out)
        -- a CA that did not sign it
        local other = helpers.tmpname(".pem")
        assert(os.execute("openssl req -x509 -nodes -days 1 -newkey ec "
            .. "-pkeyopt ec_paramgen_curve:prime256v1 -subj /CN=x -keyout "
            .. other .. ".key -out " .. other .. " >/dev/null 2>&1"))
        status, out = bench(srv.port, "-m short --tls -c 1 -d 0.3 "
                            .. "--tls-ca " .. other)
        assert.equal(1, status, out)
        assert.truthy(out:find("certificate verify failed", 1, true), out)
    end)

    it("a plaintext server fails the handshake, counted, not a crash", function()
        local srv = helpers.start_server({ script = "scripts/handle.lua" })
        local status, out = bench(srv.port, "-m short --tls -c 1 -d 0.3")
        assert.equal(1, status, out)
        assert.truthy(field(out, "connect") > 0, out)
        assert.truthy(out:find("tls handshake", 1, true), out)
    end)
end)

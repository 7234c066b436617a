-- valgrind finds no leaks over 1,000 TLS connections: the timestamp server
-- on a tls:// listener under `valgrind --leak-check=full`, 1,000 full
-- handshakes from Python's ssl module (4 at a time, each sends a line,
-- checks the answer and sends close_notify), 30 more cut off in the
-- handshake, then SIGTERM. Definite leaks make valgrind exit 99. Run it
-- with the plain build (valgrind cannot run an ASan binary).
local helpers = require "helpers"
local tls = require "fixtures.tls_util"

local q = helpers.shell_quote
local PY = "/usr/bin/python3"
local CONNS = tonumber(os.getenv("TLS_VALGRIND_CONNS")) or 1000

describe("TLS under valgrind", function()
    it("leaks nothing over 1,000 TLS connections and a SIGTERM", function()
        local ok, why = tls.available()
        if not ok then return pending(why) end
        if not tls.have("valgrind") then
            return pending("valgrind is not installed: test skipped")
        end
        if not tls.have(PY) then return pending(PY .. " is missing") end
        if helpers.sanitize then
            return pending("valgrind cannot run the ASan build: run this "
                           .. "spec with the plain build")
        end
        local f = tls.files()
        local start = helpers.now()
        local vlog = helpers.tmpname(".valgrind")
        helpers.defer(function() os.remove(vlog) end)
        local srv = helpers.start_server{
            script = "scripts/handle.lua", listen = { "tls://127.0.0.1:0" },
            args = { "--tls-cert", f.cert, "--tls-key", f.key,
                     "--tls-handshake-timeout", "5" },
            shell = "valgrind --leak-check=full --errors-for-leak-kinds=definite "
                .. "--error-exitcode=99 --log-file=" .. q(vlog) .. " ",
            expect_ready = false }
        local ready = helpers.wait_for(function()
            return helpers.ready(srv:log())[1]
        end, 60)
        assert.truthy(ready, "luaserv under valgrind did not start:\n" ..
                      srv:log() .. (helpers.read_file(vlog) or ""))
        local port = tonumber(ready.addr:match(":(%d+)$"))
        local up = helpers.now() - start
        -- handshakes cut off: a connect closed at once, half a record
        -- then EOF, and plaintext
        for _ = 1, 10 do
            local c = helpers.connect(port, 30)
            c:close()
            c = helpers.connect(port, 30)
            c:send(("\22\3\1\0\200"):rep(20))
            c:shutdown("send")
            helpers.read_to_close(c)
            c = helpers.connect(port, 30)
            c:send("GET / HTTP/1.0\r\n\r\n")
            helpers.read_to_close(c)
        end
        local t0 = helpers.now()
        local _, out = helpers.sh(("timeout 120 %s spec/fixtures/tls_client.py " ..
            "--timeout 60 %d %s loop %d 4"):format(q(PY), port, q(f.ca), CONNS))
        local took = helpers.now() - t0
        assert.equal(("loop ok=%d bad=0 first_error=None\n"):format(CONNS), out)
        local t1 = helpers.now()
        local status = srv:stop("TERM", 60)
        local stop = helpers.now() - t1
        local report = helpers.read_file(vlog) or ""
        print(("-- valgrind: up in %.1f s, %d TLS connections in %.1f s, "
               .. "stopped in %.1f s"):format(up, CONNS, took, stop))
        assert.matches("ERROR SUMMARY: 0 errors", report, 1, true)
        assert.not_matches("definitely lost: [1-9]", report)
        assert.equal(0, status, report)
        assert.matches("luaserv: listening on tls", srv:log(), 1, true)
    end)
end)

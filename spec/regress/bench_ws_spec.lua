-- spec/regress/bench_ws_spec.lua: luaserv-bench -m websocket, the load
-- mode behind `make bench`'s WebSocket echo row, in short bounded runs
-- against spec/fixtures/ws_echo_server.py (a WebSocket echo server with
-- modes that split, ping, close or misbehave) and against luaserv itself.
local helpers = require "spec.helpers"

local BENCH = helpers.build .. "/luaserv-bench"
local FIXTURE = "spec/fixtures/ws_echo_server.py"

-- One field of luaserv-bench's --json object.
local function field(out, name)
    return tonumber(out:match('"' .. name .. '":([%d.]+)'))
end

-- Runs luaserv-bench -m websocket against port with the extra args;
-- returns its exit status and output (the JSON line, and stderr).
local function ws_bench(port, args)
    return helpers.run(BENCH, "-p " .. port .. " -m websocket --warmup 0 "
                       .. "--json " .. args)
end

local function fixture(mode)
    return helpers.start_server({ bin = FIXTURE,
                                  args = mode and { mode } or nil })
end

describe("luaserv-bench -m websocket", function()
    it("upgrades, then counts pipelined echoed frames, none in error", function()
        local srv = fixture()
        local status, out = ws_bench(srv.port, "-c 2 -P 4 -s 64 -d 0.5")
        assert.equal(0, status, out)
        assert.truthy(field(out, "requests") > 0, out)
        assert.equal(0, field(out, "errors"), out)
        assert.truthy(out:find('"mode":"websocket"', 1, true), out)
    end)

    it("handles 16- and 64-bit payload lengths (300 B, 70,000 B)", function()
        local srv = fixture()
        for _, size in ipairs({ 300, 70000 }) do
            local status, out = ws_bench(srv.port, "-c 1 -P 2 -d 0.4 -s " .. size)
            assert.equal(0, status, out)
            assert.truthy(field(out, "requests") > 0, out)
            assert.equal(0, field(out, "errors"), out)
        end
    end)

    it("reads a 101 and frames split at every byte", function()
        local srv = fixture("--split")
        local status, out = ws_bench(srv.port, "-c 1 -P 2 -s 20 -d 0.8")
        assert.equal(0, status, out)
        assert.truthy(field(out, "requests") > 0, out)
        assert.equal(0, field(out, "errors"), out)
    end)

    it("skips ping frames between the echoes", function()
        local srv = fixture("--ping")
        local status, out = ws_bench(srv.port, "-c 2 -P 4 -d 0.4")
        assert.equal(0, status, out)
        assert.equal(0, field(out, "errors"), out)
    end)

    it("counts a close frame as a close, and reconnects", function()
        local srv = fixture("--close")
        local status, out = ws_bench(srv.port, "-c 1 -P 1 -d 0.4")
        assert.equal(0, status, out)
        assert.truthy(field(out, "requests") >= 3, out)
        assert.truthy(field(out, "closed") >= 1, out)
        assert.equal(0, field(out, "bad"), out)
    end)

    it("fails a masked server frame as a bad reply", function()
        local srv = fixture("--masked")
        local status, out = ws_bench(srv.port, "-c 1 -d 0.3")
        assert.equal(1, status, out)
        assert.equal(0, field(out, "requests"), out)
        assert.truthy(field(out, "bad") >= 1, out)
    end)

    it("refuses a 101 with the wrong Sec-WebSocket-Accept", function()
        local srv = fixture("--bad-accept")
        local status, out = ws_bench(srv.port, "-c 1 -d 0.3")
        assert.equal(1, status, out)
        assert.truthy(out:find("without the expected Sec-WebSocket-Accept",
                               1, true), out)
    end)

    it("says so when the server does not upgrade", function()
        local srv = helpers.start_server({ script = "bench/line_echo.lua" })
        local status, out = ws_bench(srv.port, "-c 1 -d 0.3")
        assert.equal(1, status, out)
        assert.truthy(out:find("upgrade refused: GET / HTTP/1.1", 1, true), out)
    end)

    it("rejects options that do not fit the mode", function()
        local status, out = helpers.run(BENCH, "-m websocket --check timestamp")
        assert.equal(2, status, out)
        status, out = helpers.run(BENCH, "--path /chat")
        assert.equal(2, status, out)
        status, out = helpers.run(BENCH, "-m websocket --path 'a b'")
        assert.equal(2, status, out)
    end)

    it("loads bench/ws_echo.lua (framing http, then websocket)", function()
        local srv = helpers.start_server({ script = "bench/ws_echo.lua" })
        -- Until the http and websocket framers are built (issue 11's
        -- h11-http-core and h11-ws), framing "http" rejects every request
        -- with a close and no answer.
        local c = helpers.connect(srv.port)
        c:send("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               .. "Connection: Upgrade\r\nSec-WebSocket-Key: "
               .. "dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        c:settimeout(5)
        local head = c:receive("*l")
        c:close()
        if head == nil then
            pending("framing \"http\" and \"websocket\" are not built in yet")
            return
        end
        assert.equal("HTTP/1.1 101 Switching Protocols", head)
        local status, out = ws_bench(srv.port, "-c 4 -P 8 -s 64 -d 0.5")
        assert.equal(0, status, out)
        assert.truthy(field(out, "requests") > 0, out)
        assert.equal(0, field(out, "errors"), out)
    end)
end)

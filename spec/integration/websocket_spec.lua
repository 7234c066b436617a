-- framing = "websocket" and luaserv.websocket over real sockets, with
-- Debian's python3-websockets as the client (spec/fixtures/ws_client.py;
-- raw sockets for what a client library will not send) and curl for the
-- handshake. Each scenario runs against an echo server in both styles:
-- stream (spec/fixtures/ws_echo.lua, request head read by hand) and
-- callback (spec/fixtures/ws_echo_cb.lua, on framing "http").
local helpers = require "helpers"

local PY = "/usr/bin/python3"
local CLIENT = "spec/fixtures/ws_client.py"

local have_ws = helpers.sh(PY .. " -c 'import websockets'") == 0
local have_curl = helpers.sh("curl --version") == 0
local slow = helpers.sanitize and 4 or 1

-- Runs one client scenario against port; env (shell text) sets its
-- variables. Asserts it printed "ok SCENARIO".
local function scenario(port, name, env)
    local status, out = helpers.sh((env or "") .. " WS_TIMEOUT=" ..
                                   (10 * slow) .. " timeout " ..
                                   (120 * slow) .. " " .. PY .. " " ..
                                   CLIENT .. " " .. port .. " /chat " .. name)
    assert.equal(0, status, out)
    assert.matches("ok " .. name, out, 1, true)
end

local SCENARIOS = {
    { "echo", "echoes text and binary messages, empty ones too, with a " ..
              "subprotocol chosen" },
    { "big", "echoes a 300 KB binary and text message" },
    { "fragmented", "reassembles fragmented messages" },
    { "ping", "answers a ping with a pong; the server's own ping works" },
    { "close", "echoes the close code; ws:close(4000, reason) closes" },
    { "too_big", "closes with 1009 on a message over max (1 MiB)" },
    { "raw_frag_ping", "answers a ping between fragments, split at " ..
                       "every byte, before the message" },
    { "raw_ping_mid", "answers pings sent after a first fragment before " ..
                      "the message is finished, each once" },
    { "raw_close_mid", "echoes a close sent after a first fragment at " ..
                       "once and closes" },
    { "raw_bad_utf8", "closes with 1007 on text that is not UTF-8" },
    { "raw_unmasked", "closes with 1002 on an unmasked frame, RSV bits, " ..
                      "a lone continuation, a long ping" },
}

for _, style in ipairs({ { "stream", "spec/fixtures/ws_echo.lua" },
                         { "callback", "spec/fixtures/ws_echo_cb.lua" } }) do
    describe("websocket, " .. style[1] .. " style", function()
        local srv

        lazy_setup(function()
            if have_ws then srv = helpers.start_server{ script = style[2] } end
        end)

        lazy_teardown(function()
            if srv then srv:stop() end
        end)

        for _, s in ipairs(SCENARIOS) do
            it(s[2], function()
                if not have_ws then
                    return pending("python3-websockets is not installed")
                end
                scenario(srv.port, s[1])
            end)
        end

        it("logs the close code and reason the handler saw", function()
            if not have_ws then
                return pending("python3-websockets is not installed")
            end
            scenario(srv.port, "close")
            helpers.wait_until(function()
                return srv:log():find("ws close 4001 bye now", 1, true)
            end, 5 * slow, "the close in the log")
        end)

        it("echoes a 24 MiB message under a 32 MiB max", function()
            if not have_ws then
                return pending("python3-websockets is not installed")
            end
            -- A callback's 24 MiB write may outlast the 1 s handler
            -- timeout on a loaded machine: the test is about the framer.
            local big = helpers.start_server{ script = style[2],
                                              args = { "--handler-timeout",
                                                       "30" },
                                              shell = "WS_MAX=33554432; " ..
                                                      "export WS_MAX; " }
            scenario(big.port, "big", "WS_BIG=25165824")
            big:stop()
        end)
    end)
end

describe("websocket handshake", function()
    local srv

    lazy_setup(function()
        srv = helpers.start_server{ script = "spec/fixtures/ws_echo_cb.lua" }
    end)

    lazy_teardown(function()
        if srv then srv:stop() end
    end)

    it("answers curl's upgrade with 101 and the RFC's accept key", function()
        if not have_curl then return pending("curl is not installed") end
        local _, out = helpers.sh("curl -s -i -N --max-time 2 " ..
            "-H 'Connection: Upgrade' -H 'Upgrade: websocket' " ..
            "-H 'Sec-WebSocket-Version: 13' " ..
            "-H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' " ..
            "http://127.0.0.1:" .. srv.port .. "/chat")
        assert.matches("^HTTP/1.1 101 Switching Protocols\r\n", out)
        assert.matches("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n",
                       out, 1, true)
    end)

    it("refuses a request that is not an upgrade with 400", function()
        local c = helpers.connect(srv.port, 5 * slow)
        assert(c:send("GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n" ..
                      "Connection: Upgrade\r\nSec-WebSocket-Version: 8\r\n" ..
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"))
        local got = helpers.read_to_close(c)
        assert.matches("^HTTP/1.1 400 Bad Request\r\n", got)
        assert.matches("Sec-WebSocket-Version: 13\r\n", got, 1, true)
        c = helpers.connect(srv.port, 5 * slow)
        assert(c:send("GET /chat HTTP/1.1\r\nHost: x\r\n\r\n"))
        assert.matches("no Upgrade: websocket", helpers.read_to_close(c), 1,
                       true)
    end)
end)

describe("websocket client mode", function()
    it("reads a python3-websockets server's frames, answers its ping " ..
       "masked, and closes", function()
        if not have_ws then
            return pending("python3-websockets is not installed")
        end
        local base = helpers.tmpname()
        os.execute("sh -c '" .. PY .. " spec/fixtures/ws_pyserver.py " ..
                   30 * slow .. " >" .. base .. ".port 2>&1 & echo $! >" ..
                   base .. ".pid'")
        local pid = helpers.wait_for(function()
            local f = io.open(base .. ".pid")
            local p = f and f:read("n")
            if f then f:close() end
            return p
        end, 5)
        assert(pid, "python server did not start")
        finally(function() os.execute("kill " .. pid .. " 2>/dev/null") end)
        local pyport = helpers.wait_for(function()
            local f = io.open(base .. ".port")
            local p = f and f:read("n")
            if f then f:close() end
            return p
        end, 10 * slow)
        assert(pyport, "python server gave no port")
        local srv = helpers.start_server{
            script = "spec/fixtures/ws_client_mode.lua" }
        local c = helpers.connect(srv.port, 10 * slow)
        assert(c:send(pyport .. "\n"))
        local got = helpers.read_to_close(c)
        assert.equal("HTTP/1.1 101 Switching Protocols\ntext hello\n" ..
                     "text pong-ok\ntext fragmented\ntext echo me\n" ..
                     "close 1000 done\n", got)
        srv:stop()
    end)
end)

-- examples/websocket_chat.lua, the chat room over WebSocket, with Debian's
-- python3-websockets (spec/fixtures/ws_client.py) and curl.
local helpers = require "helpers"
local util = require "fixtures.example_util"

local PY = "/usr/bin/python3"
local have_ws = helpers.sh(PY .. " -c 'import websockets'") == 0
local have_curl = helpers.sh("curl --version") == 0

describe("examples/websocket_chat.lua", function()
    local srv

    lazy_setup(function()
        srv = util.start("websocket_chat", nil, { no_finally = true })
    end)

    lazy_teardown(function()
        if srv then srv:stop() end
    end)

    local function scenario(name)
        local status, out = helpers.sh("WS_TIMEOUT=" .. 10 * util.slow ..
            " timeout " .. 120 * util.slow .. " " .. PY ..
            " spec/fixtures/ws_client.py " .. srv.port .. " /chat " .. name)
        assert.equal(0, status, out)
        assert.matches("ok " .. name, out, 1, true)
    end

    it("serves the page on GET / and 404 elsewhere", function()
        local c = helpers.connect(srv.port, 5 * util.slow)
        assert(c:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n" ..
                      "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
        local got = helpers.read_to_close(c)
        assert.matches("^HTTP/1.1 200 OK\r\n", got)
        assert.matches("new WebSocket", got, 1, true)
        assert.matches("HTTP/1.1 404 Not Found\r\n", got, 1, true)
    end)

    it("broadcasts between two clients, answers /who, relays binary, " ..
       "refuses a taken nickname, announces leaving", function()
        if not have_ws then
            return pending("python3-websockets is not installed")
        end
        scenario("chat")
    end)

    it("drops a member that does not read; the others go on", function()
        if not have_ws then
            return pending("python3-websockets is not installed")
        end
        scenario("chat_slow")
    end)

    it("answers curl's upgrade handshake with 101 and the accept key",
       function()
        if not have_curl then return pending("curl is not installed") end
        local _, out = helpers.sh("curl -s -i -N --max-time 2 " ..
            "-H 'Connection: Upgrade' -H 'Upgrade: websocket' " ..
            "-H 'Sec-WebSocket-Version: 13' " ..
            "-H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' " ..
            "http://127.0.0.1:" .. srv.port .. "/chat")
        assert.matches("^HTTP/1.1 101 Switching Protocols\r\n", out)
        assert.matches("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n",
                       out, 1, true)
        assert.matches("* hello guest-", out, 1, true)
    end)

    it("leaves no connection or task behind", function()
        local s = util.wait_idle(srv)
        assert.equal(0, s.connections_active)
        assert.equal(0, s.tasks)
    end)
end)

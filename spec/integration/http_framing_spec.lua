-- framing = "http" over real sockets: the C request framer (src/core/http.c)
-- and the request object (src/lua/http_lua.c), with curl and raw sockets.
-- The fixtures answer each request with its fields, so a spec checks what
-- the handler saw.
local helpers = require "helpers"
local socket = require "socket"

local ECHO = "spec/fixtures/http_echo.lua"

-- Starts the echo fixture, with framing options (Lua source text) if any.
local function start_echo(framing)
    if not framing then return helpers.start_server{ script = ECHO } end
    local source = ("local handler = dofile(%q)\nhandler.framing = %s\n" ..
                    "return handler\n"):format(ECHO, framing)
    return helpers.start_server{ source = source }
end

-- Sends data (in pieces of `step` bytes when given), then reads until the
-- server closes; returns what came back.
local function exchange(port, data, step)
    local c = helpers.connect(port, 10)
    c:setoption("tcp-nodelay", true)
    if step then
        for i = 1, #data, step do
            assert(c:send(data:sub(i, i + step - 1)))
            if step < 16 then socket.sleep(0.0005) end
        end
    else
        assert(c:send(data))
    end
    local got, err = helpers.read_to_close(c)
    assert.equal("closed", err)
    return got
end

local function count(s, pat)
    return select(2, s:gsub(pat, ""))
end

describe("framing http", function()
    it("gives a GET's fields to on_message", function()
        local srv = start_echo()
        local _, out = helpers.sh(("curl -s -i 'http://127.0.0.1:%d/a/b?x=1'")
                                  :format(srv.port))
        assert.matches("^HTTP/1.1 200 OK", out)
        assert.matches("method=GET\ntarget=/a/b%?x=1\npath=/a/b\nquery=x=1\n" ..
                       "version=1.1\nkeep_alive=true\nupgrade=nil\n", out)
        assert.matches("host=127.0.0.1:%d+|127.0.0.1:%d+|127.0.0.1:%d+", out)
        assert.matches("body_len=0\n", out)
    end)

    it("frames pipelined requests in one write, bodies by length and chunked",
       function()
        local srv = start_echo()
        local req = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n" ..
            "POST /2 HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\n\r\nxyz" ..
            "POST /3 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" ..
            "3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: x\r\n\r\n" ..
            "GET /close HTTP/1.1\r\nX-Multi: 1\r\nx-multi: 2\r\n\r\n"
        for _, step in ipairs({ false, 1, 7 }) do
            local out = exchange(srv.port, req, step or nil)
            assert.equal(4, count(out, "HTTP/1.1 200 OK"))
            assert.matches("target=/1\n.*body=xyz\n.*body=abcde\n.*" ..
                           "x%-multi=1, 2\n", out)
        end
    end)
end)

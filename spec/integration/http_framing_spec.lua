-- framing = "http" over real sockets: the C request framer (src/core/http.c)
-- and the request object (src/lua/http_lua.c), with curl and raw sockets,
-- in callback style (spec/fixtures/http_echo.lua answers each request with
-- its fields) and stream style (spec/fixtures/http_stream.lua answers with
-- the body's length and checksum).
local helpers = require "helpers"
local socket = require "socket"

local ECHO = "spec/fixtures/http_echo.lua"
local STREAM = "spec/fixtures/http_stream.lua"
local CONTINUE = "HTTP/1.1 100 Continue\r\n\r\n"

-- Starts a fixture, with framing options (Lua source text) if any.
local function start(fixture, framing)
    if not framing then return helpers.start_server{ script = fixture } end
    local source = ("local handler = dofile(%q)\nhandler.framing = %s\n" ..
                    "return handler\n"):format(fixture, framing)
    return helpers.start_server{ source = source }
end

local function connect(port)
    local c = helpers.connect(port, 10)
    c:setoption("tcp-nodelay", true)
    return c
end

-- Sends data (in pieces of `step` bytes when given), then reads until the
-- server closes; returns what came back.
local function exchange(port, data, step)
    local c = connect(port)
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

-- Reads one response with a Content-Length from c: its status line,
-- headers (lowercase names) and body.
local function read_response(c)
    local status = assert(c:receive("*l"))
    local headers = {}
    while true do
        local line = assert(c:receive("*l"))
        if line == "" then break end
        local k, v = line:match("^([^:]+):%s*(.*)$")
        headers[k:lower()] = v
    end
    local n = tonumber(headers["content-length"] or "0")
    local body = n > 0 and assert(c:receive(n)) or ""
    return status, headers, body
end

-- The sum of a string's bytes mod 2^32, as http_stream.lua computes it.
local function checksum(s)
    local sum = 0
    for i = 1, #s, 4096 do
        local bytes = { s:byte(i, math.min(i + 4095, #s)) }
        for j = 1, #bytes do sum = sum + bytes[j] end
    end
    return sum % 4294967296
end

-- A body of n bytes that is not one byte repeated.
local function body_of(n)
    local piece = ("0123456789abcdefghijklmnopqrstuvwxyz\r\n"):rep(1700)
    return piece:rep(n // #piece + 1):sub(1, n)
end

local function count(s, plain) return helpers.count(s, plain) end

local function curl(args)
    local status, out = helpers.sh("curl -s --max-time 20 " .. args)
    assert.equal(0, status, out)
    return out
end

describe("framing http, callback style", function()
    local srv
    lazy_setup(function() srv = start(ECHO) end)
    lazy_teardown(function() srv:stop("KILL", 5) end)
    local function url(path)
        return ("'http://127.0.0.1:%d%s'"):format(srv.port, path)
    end

    it("gives a GET's fields to on_message", function()
        local out = curl("-i " .. url("/a/b?x=1&y"))
        assert.matches("^HTTP/1.1 200 OK", out)
        assert.matches("method=GET\ntarget=/a/b%?x=1&y\npath=/a/b\n" ..
                       "query=x=1&y\nversion=1.1\nkeep_alive=true\n" ..
                       "upgrade=nil\n", out)
        assert.matches("host=127.0.0.1:%d+|127.0.0.1:%d+|127.0.0.1:%d+\n",
                       out)
        assert.matches("first=Host:127.0.0.1:%d+\n", out)
        assert.matches("body_len=0\n", out)
    end)

    it("looks headers up in any case, long names too", function()
        local long = ("Very-Long-Header-Name-"):rep(5)
        local out = exchange(srv.port, "GET /lookup?" .. long ..
                             " HTTP/1.1\r\n" .. long:upper() .. ": v1\r\n" ..
                             long:lower() .. ":v2 \r\nConnection: close" ..
                             "\r\n\r\n")
        assert.matches("nheaders=3\n", out)
        assert.matches("\nlookup=v1, v2|nil\n", out)
        out = exchange(srv.port, "GET /lookup?x-ABSENT HTTP/1.1\r\n" ..
                       "Connection: close\r\n\r\n")
        assert.matches("\nlookup=nil|nil\n", out)
    end)

    it("keeps the head whole in req.head and builds headers from it", function()
        local out = exchange(srv.port, "GET /head?q HTTP/1.1\r\nHost: a\r\n" ..
                             "X-One:  1 \r\nConnection: close\r\n\r\n")
        assert.matches("\nlazy=true same=true\n", out, 1, true)
        assert.matches("\nhead=GET /head?q HTTP/1.1|\\Host: a|\\X-One:  1 |" ..
                       "\\Connection: close|\\|\\\n", out, 1, true)
        assert.matches("nheaders=3\n", out, 1, true)
        assert.matches("first=Host:a\n", out, 1, true)
        -- a POST's head stops at the blank line; the body is apart
        out = exchange(srv.port, "POST /head HTTP/1.1\r\nHost: a\r\n" ..
                       "Content-Length: 3\r\nConnection: close\r\n\r\nabc")
        assert.matches("|\\Connection: close|\\|\\\nbody=abc\n", out, 1, true)
    end)

    it("answers curl's HEAD", function()
        local out = curl("-I " .. url("/h"))
        assert.matches("^HTTP/1.1 200 OK\r\n", out)
        assert.matches("Content%-Length: %d+\r\n", out)
    end)

    it("gives a POST's body by Content-Length", function()
        local out = curl("-d 'hello=world&a=b' " .. url("/post"))
        assert.matches("method=POST\n", out)
        assert.matches("body_len=15\nbody=hello=world&a=b\n", out)
    end)

    it("decodes curl's chunked upload", function()
        local body = body_of(3000)
        local file = helpers.write_file(helpers.tmpname(".bin"), body)
        local out = curl("-H 'Transfer-Encoding: chunked' --data-binary @" ..
                         file .. " " .. url("/chunked"))
        os.remove(file)
        assert.matches("body_len=3000\n", out, 1, true)
        assert.truthy(out:find("body=" .. body .. "\n", 1, true))
    end)

    it("frames pipelined requests in one write, a byte at a time and in " ..
       "7-byte pieces", function()
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

    it("sets keep_alive by version and Connection, and upgrade", function()
        local out = exchange(srv.port, "GET /a HTTP/1.0\r\n\r\n")
        assert.matches("version=1.0\nkeep_alive=false\n", out)
        out = exchange(srv.port, "GET /b HTTP/1.0\r\nConnection: Keep-Alive" ..
                       "\r\n\r\nGET /c HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert.matches("target=/b\n.*keep_alive=true\n.*target=/c\n.*" ..
                       "keep_alive=false\n", out)
        out = exchange(srv.port, "GET /ws HTTP/1.1\r\nConnection: keep-alive" ..
                       ", Upgrade\r\nUpgrade: WebSocket\r\n\r\n" ..
                       "GET /close HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")
        assert.matches("target=/ws\n.*upgrade=websocket\n.*target=/close\n" ..
                       ".*upgrade=nil\n", out)
    end)

    it("sends 100 Continue once the head is in, then takes the body",
       function()
        local c = connect(srv.port)
        assert(c:send("POST /close HTTP/1.1\r\nExpect: 100-continue\r\n" ..
                      "Content-Length: 5\r\n\r\n"))
        c:settimeout(1)
        assert.equal(CONTINUE, c:receive(#CONTINUE))
        assert(c:send("hel"))
        socket.sleep(0.05)
        assert(c:send("lo"))
        c:settimeout(5)
        local out = helpers.read_to_close(c)
        assert.matches("^HTTP/1.1 200 OK\r\n", out)
        assert.equal(0, count(out, "100 Continue"))
        assert.matches("body=hello\n", out)
    end)

    it("takes a 300 KB body arriving in pieces", function()
        local body = body_of(300 * 1024)
        local c = connect(srv.port)
        local data = "POST /close HTTP/1.1\r\nContent-Length: " .. #body ..
            "\r\n\r\n" .. body
        local out = helpers.pump(c, data, function(got)
            return got:find("body_len=%d+\n") ~= nil
        end, 20)
        c:close()
        assert.matches("body_len=307200\n", out)
    end)
end)

describe("framing http, callback style, max raised", function()
    it("takes a 24 MiB body", function()
        local srv = start(ECHO, '{ "http", max = 32 * 1024 * 1024 }')
        local n = 24 * 1024 * 1024
        local c = connect(srv.port)
        local data = "POST /close HTTP/1.1\r\nContent-Length: " .. n ..
            "\r\n\r\n" .. body_of(n)
        local out = helpers.pump(c, data, function(got)
            return got:find("body_len=%d+\n") ~= nil
        end, 30)
        c:close()
        assert.matches("body_len=" .. n .. "\n", out)
    end)
end)

describe("framing http refuses", function()
    local srv, keep
    lazy_setup(function()
        srv = start(ECHO, '{ "http", max = 1000, max_head = 2048, ' ..
                    'max_headers = 10 }')
    end)
    lazy_teardown(function() srv:stop("KILL", 5) end)
    before_each(function()
        keep = keep or connect(srv.port)
    end)

    -- Each shape gets its status and a close, and the connection opened
    -- before it is still served.
    local cases = {
        { "Content-Length with Transfer-Encoding", 400,
          "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: " ..
          "chunked\r\n\r\n0\r\n\r\n" },
        { "differing Content-Length headers", 400,
          "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n" ..
          "\r\nabcd" },
        { "bad Content-Length", 400,
          "POST / HTTP/1.1\r\nContent-Length: 3x\r\n\r\nabc" },
        { "obs-fold", 400, "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n" },
        { "bare CR in the head", 400, "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n" },
        { "whitespace between header name and colon", 400,
          "GET / HTTP/1.1\r\nHost : a\r\n\r\n" },
        { "bad chunk size line", 400,
          "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" },
        { "missing CRLF after chunk data", 400,
          "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" ..
          "2\r\nabc\r\n" },
        { "body over max", 413,
          "POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n" },
        { "body over max", 413,
          "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" ..
          "3e9\r\n" },
        { "request line too long", 414,
          "GET /" .. ("a"):rep(3000) .. " HTTP/1.1\r\n\r\n" },
        { "header section too long", 431,
          "GET / HTTP/1.1\r\nX: " .. ("a"):rep(3000) .. "\r\n\r\n" },
        { "too many headers", 431,
          "GET / HTTP/1.1\r\n" .. ("X: 1\r\n"):rep(11) .. "\r\n" },
        { "Transfer-Encoding other than chunked", 501,
          "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n" },
        { "HTTP version not supported", 505, "GET / HTTP/2.0\r\n\r\n" },
    }
    for _, case in ipairs(cases) do
        local why, status, req = case[1], case[2], case[3]
        it(("%s with %d and a close"):format(why, status), function()
            local out = exchange(srv.port, req)
            assert.matches("^HTTP/1.1 " .. status .. " [^\r]+\r\n", out)
            assert.matches("\r\nConnection: close\r\n", out)
            local n = tonumber(out:match("Content%-Length: (%d+)"))
            assert.equal(n, #out:match("\r\n\r\n(.*)$"))
            assert(keep:send("GET /still HTTP/1.1\r\n\r\n"))
            local st, _, body = read_response(keep)
            assert.equal("HTTP/1.1 200 OK", st)
            assert.matches("target=/still\n", body)
            helpers.wait_until(function()
                return srv:log():find(why, 1, true)
            end, 5, "the log line")
        end)
    end

    it("closes without a reply at end of stream mid-request", function()
        for _, part in ipairs({ "GET / HTTP/1.1\r\nHo",
                                "POST / HTTP/1.1\r\nContent-Length: 9\r\n" ..
                                "\r\nabc" }) do
            local c = connect(srv.port)
            assert(c:send(part))
            c:shutdown("send")
            local out, err = helpers.read_to_close(c)
            assert.equal("closed", err)
            assert.equal("", out)
        end
        helpers.wait_until(function()
            return helpers.count(srv:log(), " bytes of an incomplete http " ..
                                 "frame dropped") >= 2
        end, 5, "two log lines")
        keep:close()
    end)
end)

describe("framing http, stream style", function()
    local srv
    lazy_setup(function()
        srv = start(STREAM, '{ "http", max = 32 * 1024 * 1024 }')
    end)
    lazy_teardown(function() srv:stop("KILL", 5) end)

    it("reads curl's 2 MB upload without curl's 1 s Expect wait", function()
        local body = body_of(2 * 1000 * 1000)
        local file = helpers.write_file(helpers.tmpname(".bin"), body)
        local cmd = ("-v --data-binary @%s %%s 'http://127.0.0.1:%d/fast' " ..
                     "2>&1")
            :format(file, srv.port)
        -- The same upload without Expect is the baseline: waiting for a
        -- 100 that never came would add curl's 1 s to the first.
        local t0 = helpers.now()
        local out = curl(cmd:format(""))
        local t1 = helpers.now()
        local plain = curl(cmd:format("-H 'Expect:'"))
        local t2 = helpers.now()
        os.remove(file)
        assert.matches("> Expect: 100%-continue", out)
        assert.matches("< HTTP/1.1 100 Continue", out)
        assert.equal(0, count(plain, "100 Continue"))
        local want = ("POST /fast len=%d sum=0\n"):format(#body)
        assert.truthy(out:find(want, 1, true), out)
        assert.truthy(plain:find(want, 1, true), plain)
        local extra = (t1 - t0) - (t2 - t1)
        assert.is_true(extra < 0.6, ("Expect took %.2f s more"):format(extra))
    end)

    it("sends one 100 Continue to a raw client before the body", function()
        local c = connect(srv.port)
        assert(c:send("PUT /raw HTTP/1.1\r\nExpect: 100-continue\r\n" ..
                      "Transfer-Encoding: chunked\r\n\r\n"))
        c:settimeout(1)
        assert.equal(CONTINUE, c:receive(#CONTINUE))
        assert(c:send("4\r\nwiki\r\n"))
        socket.sleep(0.05)
        assert(c:send("5\r\npedia\r\n0\r\n\r\n"))
        c:settimeout(5)
        local st, _, body = read_response(c)
        assert.equal("HTTP/1.1 200 OK", st)
        assert.equal(("PUT /raw len=9 sum=%d\n"):format(checksum("wikipedia")),
                     body)
        c:close()
    end)

    it("takes a 300 KB and a 24 MiB body", function()
        for _, n in ipairs({ 300 * 1024, 24 * 1024 * 1024 }) do
            local body = body_of(n)
            local c = connect(srv.port)
            local data = "POST /big HTTP/1.1\r\nContent-Length: " .. n ..
                "\r\nConnection: close\r\n\r\n" .. body
            local want = ("POST /big len=%d sum=%d\n"):format(n, checksum(body))
            local out = helpers.pump(c, data, function(got)
                return got:find(want, 1, true) ~= nil
            end, 30)
            c:close()
            assert.truthy(out:find(want, 1, true), out)
        end
    end)

    it("reads pipelined requests split a byte at a time", function()
        local req = "GET /1 HTTP/1.1\r\n\r\n" ..
            "POST /2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" ..
            "1\r\na\r\n0\r\n\r\nGET /3 HTTP/1.0\r\n\r\n"
        local out = exchange(srv.port, req, 1)
        assert.equal(3, count(out, "HTTP/1.1 200 OK"))
        assert.matches("GET /1 len=0.*POST /2 len=1 sum=97\n.*GET /3 len=0",
                       out)
    end)

    it("gives read_frame nil, 'protocol error' after the 400", function()
        local out = exchange(srv.port, "GET /ok HTTP/1.1\r\n\r\n" ..
                             "GET / HTTP/1.1\r\nA: 1\r\n b\r\n\r\n")
        assert.matches("^HTTP/1.1 200 OK.-GET /ok len=0 sum=0\n" ..
                       "HTTP/1.1 400 Bad Request\r\n", out)
        helpers.wait_until(function()
            return srv:log():find("hs end protocol error", 1, true)
        end, 5, "the task's end")
    end)
end)

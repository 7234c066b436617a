-- examples/http.lua, the HTTP/1.1 server on luaserv.http and the C framer,
-- driven by real curl (and wrk) and by raw luasocket requests, in the
-- callback style (the default) and the stream style (HTTP_STYLE=stream).
local helpers = require "helpers"

local CTIME_DAY = "%u%l%l %u%l%l [ 123]%d %d%d:%d%d:%d%d %d%d%d%d"
local IMF_DATE = "^%u%l%l, %d%d %u%l%l %d%d%d%d %d%d:%d%d:%d%d GMT$"
local SLOW = helpers.sanitize and 3 or 1

-- A client connected to port, closed when the test ends.
local function connect(port)
    local c = helpers.connect(port, 10 * SLOW)
    helpers.close_at_end({ c })
    return c
end

-- Runs curl with the argument string; returns its output (stdout and
-- stderr together) and exit status.
local function curl(args)
    local status, out = helpers.run("curl", "-sS --max-time 30 " .. args)
    return out, status
end

-- Splits one "HTTP/1.1 200 OK\r\n...\r\n\r\nbody" text (curl -i output or
-- raw bytes) into status, fields (lowercase names) and the rest.
local function parse_response(text)
    local head, rest = text:match("^(.-)\r\n\r\n(.*)$")
    assert(head, "no complete response head in: " .. text)
    local status = tonumber(head:match("^HTTP/1%.%d (%d%d%d) "))
    local fields = {}
    for name, value in head:gmatch("\r\n([^:\r\n]+): ([^\r\n]*)") do
        fields[name:lower()] = value
    end
    return status, fields, rest
end

-- Reads one response from a luasocket client: status, fields, body (a
-- chunked body decoded). A response to HEAD (is_head) has no body.
local function read_response(c, is_head)
    local lines = {}
    while true do
        local line, err = c:receive("*l")
        if not line then return nil, err end
        if line == "" then break end
        lines[#lines + 1] = line
    end
    local status, fields = parse_response(table.concat(lines, "\r\n") ..
                                          "\r\n\r\n")
    local body = ""
    if is_head then return status, fields, body end
    if fields["transfer-encoding"] == "chunked" then
        local parts = {}
        while true do
            local size = tonumber(assert(c:receive("*l")), 16)
            if size == 0 then assert(c:receive("*l")); break end
            parts[#parts + 1] = assert(c:receive(size))
            assert(c:receive("*l"))
        end
        body = table.concat(parts)
    else
        local n = tonumber(fields["content-length"])
        if n and n > 0 then body = assert(c:receive(n)) end
    end
    return status, fields, body
end

-- A temp file of n bytes of a varied pattern, removed when the test ends.
local function temp_body(n)
    local unit = ("0123456789abcdefghijklmnopqrstuvwxyz\n"):rep(100)
    local data = unit:rep(n // #unit + 1):sub(1, n)
    local path = helpers.write_file(helpers.tmpname(".bin"), data)
    helpers.defer(function() os.remove(path) end)
    return path, data
end

-- The behaviours both styles share: every test here runs against each.
local function shared_behaviours(get)
    it("answers GET / with hello, Date, Server and Content-Length", function()
        local srv, url = get()
        local status, fields, body = parse_response(curl("-i " .. url .. "/"))
        assert.equal(200, status)
        assert.equal("hello", body)
        assert.equal("5", fields["content-length"])
        assert.matches(IMF_DATE, fields.date)
        assert.matches("^luaserv/", fields.server)
        assert.equal("text/plain; charset=utf-8", fields["content-type"])
        assert.truthy(srv)
    end)

    it("reuses one connection for two URLs on one command line", function()
        local _, url = get()
        local out = curl("-v " .. url .. "/hello/a " .. url .. "/hello/b")
        assert.matches("Re%-using existing connection", out)
        assert.matches("Hello, a!\n", out, 1, true)
        assert.matches("Hello, b!\n", out, 1, true)
    end)

    it("echoes a chunked POST body of 300 KB, and a Content-Length one", function()
        local _, url = get()
        local file, data = temp_body(300000)
        local got = helpers.tmpname(".out")
        helpers.defer(function() os.remove(got) end)
        local out, rc = curl("-o " .. got .. " -w '%{http_code}' " ..
                             "-H 'Transfer-Encoding: chunked' " ..
                             "--data-binary @" .. file .. " " .. url .. "/echo")
        assert.equal(0, rc, out)
        assert.equal("200", out)
        assert.equal(data, helpers.read_file(got))
        out = curl("-o " .. got .. " -w '%{http_code}' --data-binary @" ..
                   file .. " " .. url .. "/echo")
        assert.equal("200", out)
        assert.equal(data, helpers.read_file(got))
    end)

    it("streams a chunked response that curl reads whole", function()
        local _, url = get()
        local out = curl("-i '" .. url .. "/stream?n=20000'")
        local status, fields, body = parse_response(out)
        assert.equal(200, status)
        assert.equal("chunked", fields["transfer-encoding"])
        assert.is_nil(fields["content-length"])
        local n = 0
        for line in body:gmatch("line (%d+)\n") do
            n = n + 1
            assert.equal(n, tonumber(line))
        end
        assert.equal(20000, n)
    end)

    it("answers pipelined requests sent in one write, in order", function()
        local srv = get()
        local c = connect(srv.port)
        assert(c:send("GET /hello/one HTTP/1.1\r\nHost: x\r\n\r\n" ..
                      "POST /echo HTTP/1.1\r\nHost: x\r\n" ..
                      "Content-Length: 5\r\n\r\nfive!" ..
                      "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n" ..
                      "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" ..
                      "POST /echo HTTP/1.1\r\nHost: x\r\n" ..
                      "Transfer-Encoding: chunked\r\n\r\n" ..
                      "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n" ..
                      "GET /hello/two HTTP/1.1\r\nHost: x\r\n" ..
                      "Connection: close\r\n\r\n"))
        local status, fields, body = read_response(c)
        assert.equal(200, status)
        assert.equal("Hello, one!\n", body)
        assert.is_nil(fields.connection)
        status, fields, body = read_response(c)
        assert.equal(200, status)
        assert.equal("five!", body)
        assert.is_nil(fields.connection)
        assert.equal(404, (read_response(c)))
        status, fields = read_response(c, true)
        assert.equal(200, status)
        assert.equal("5", fields["content-length"])
        status, fields, body = read_response(c)
        assert.equal(200, status)
        assert.equal("abcde", body)
        assert.equal("5", fields["content-length"])
        local rest = helpers.receive_all(c)
        status, fields, body = parse_response(rest)
        assert.equal(200, status)
        assert.equal("close", fields.connection)
        assert.equal("Hello, two!\n", body)
    end)

end

describe("examples/http.lua", function()
    local srv, url

    lazy_setup(function()
        srv = helpers.start_server{ script = "examples/http.lua",
                                    no_finally = true }
        url = "http://127.0.0.1:" .. srv.port
    end)

    lazy_teardown(function()
        if srv then srv:stop() end
    end)

    -- connections_total so far, from GET /stats (which counts itself)
    local function connections_total()
        local out = curl(url .. "/stats")
        return tonumber(out:match("connections_total (%d+)"))
    end

    shared_behaviours(function() return srv, url end)

    describe("with curl", function()
        it("answers GET /time with the server's ctime()", function()
            local status, _, body = parse_response(curl("-i " .. url .. "/time"))
            assert.equal(200, status)
            assert.matches("^" .. CTIME_DAY .. "\n$", body)
        end)

        it("greets a percent-encoded name on GET /hello/NAME", function()
            local status, fields, body =
                parse_response(curl("-i " .. url .. "/hello/W%C3%B6rld"))
            assert.equal(200, status)
            assert.equal("Hello, Wörld!\n", body)
            assert.equal(#body, tonumber(fields["content-length"]))
        end)

        it("echoes a POST --data body with its Content-Type", function()
            local status, fields, body =
                parse_response(curl("-i --data 'a=1&b=two' " .. url .. "/echo"))
            assert.equal(200, status)
            assert.equal("a=1&b=two", body)
            assert.equal("9", fields["content-length"])
            assert.equal("application/x-www-form-urlencoded",
                         fields["content-type"])
        end)

        it("answers HEAD like GET, with Content-Length and no body", function()
            local out = curl("-i --head " .. url .. "/time")
            local status, fields, body = parse_response(out)
            assert.equal(200, status)
            assert.equal("", body)
            local _, _, get_body = parse_response(curl("-i " .. url .. "/time"))
            assert.equal(#get_body, tonumber(fields["content-length"]))
        end)

        it("counts one connection for two URLs on one command line", function()
            local before = connections_total()
            curl(url .. "/hello/a " .. url .. "/hello/b")
            -- the two requests took one connection, /stats one more
            assert.equal(before + 2, connections_total())
        end)

        it("answers 404 for a path with no route", function()
            local status, fields, body = parse_response(curl("-i " .. url .. "/nope"))
            assert.equal(404, status)
            assert.equal("404 Not Found\n", body)
            assert.equal(#body, tonumber(fields["content-length"]))
        end)

        it("answers 405 with Allow for a known path and another method", function()
            local status, fields = parse_response(curl("-i -X DELETE " .. url .. "/time"))
            assert.equal(405, status)
            assert.equal("GET, HEAD", fields.allow)
            status, fields = parse_response(curl("-i " .. url .. "/echo"))
            assert.equal(405, status)
            assert.equal("POST", fields.allow)
        end)

        it("answers 501 to a method HTTP does not define", function()
            local out = curl("-v -X FROB " .. url .. "/ " .. url .. "/time")
            assert.equal(2, helpers.count(out, "< HTTP/1.1 501 Not Implemented"))
            -- and keeps the connection open
            assert.matches("Re%-using existing connection", out)
        end)

        it("answers 411 to a POST without a body", function()
            local status, _, body = parse_response(curl("-i -X POST " .. url .. "/echo"))
            assert.equal(411, status)
            assert.equal("411 Length Required\n", body)
        end)

        it("answers 413 to a body over 1 MiB, with and without Expect", function()
            local big = temp_body(2 * 1024 * 1024)
            local out, rc = curl("-i --data-binary @" .. big .. " " .. url .. "/echo")
            assert.equal(0, rc, out)
            local status, fields = parse_response(out)
            assert.equal(413, status)
            assert.equal("close", fields.connection)
            out = curl("-i -H 'Expect:' --data-binary @" .. big .. " " ..
                       url .. "/echo")
            -- without Expect the framer answers and closes without reading
            -- the body away (no lingering close): curl sees the 413, or a
            -- reset while it still sends, and the server serves on
            assert.is_truthy(out:match("^HTTP/1%.1 413 ") or
                             out:match("Connection reset by peer"), out)
            assert.equal("hello", (curl(url .. "/")))
        end)

        it("takes a body of exactly 1 MiB", function()
            local file = temp_body(1024 * 1024)
            local out = curl("-o /dev/null -w '%{http_code} %{size_download}' " ..
                             "--data-binary @" .. file .. " " .. url .. "/echo")
            assert.equal("200 1048576", out)
        end)

        it("closes after an HTTP/1.0 request", function()
            local out = curl("-v -0 " .. url .. "/ " .. url .. "/time")
            assert.matches("< Connection: close", out, 1, true)
            assert.not_matches("Re%-using existing connection", out)
        end)

        it("answers GET /json with JSON from lua-cjson", function()
            if not pcall(require, "cjson") then
                pending("lua-cjson is not installed for the specs' Lua")
                return
            end
            local cjson = require "cjson"
            local status, fields, body = parse_response(curl(
                "-i -A spec-agent '" .. url .. "/json?a=1&b=x%20y'"))
            assert.equal(200, status)
            assert.equal("application/json", fields["content-type"])
            local v = cjson.decode(body)
            assert.equal("/json", v.path)
            assert.same({ a = "1", b = "x y" }, v.query)
            assert.equal("spec-agent", v.user_agent)
        end)

        it("serves static files with a Content-Type by extension", function()
            local status, fields, body = parse_response(curl("-i " .. url .. "/static/"))
            assert.equal(200, status)
            assert.equal("text/html; charset=utf-8", fields["content-type"])
            assert.equal(helpers.read_file("examples/static/index.html"), body)
            status, fields, body = parse_response(curl("-i " .. url ..
                                                       "/static/css/site.css"))
            assert.equal(200, status)
            assert.equal("text/css; charset=utf-8", fields["content-type"])
            assert.equal(helpers.read_file("examples/static/css/site.css"), body)
            status, fields = parse_response(curl("-I " .. url .. "/static/hello.txt"))
            assert.equal(200, status)
            assert.equal(#helpers.read_file("examples/static/hello.txt"),
                         tonumber(fields["content-length"]))
        end)

        it("refuses path traversal (403) and hides what is not a file (404)", function()
            for _, path in ipairs{ "/static/../http.lua",
                                   "/static/css/../../http.lua",
                                   "/static/%2e%2e/http.lua",
                                   "/static/css/%2E%2E/%2e%2e/resp.lua",
                                   "/static/..%2fhttp.lua" } do
                local status = parse_response(curl("-i --path-as-is " .. url .. path))
                assert.equal(403, status, path)
            end
            for _, path in ipairs{ "/static/nope.txt", "/static/css",
                                   "/static/.hidden", "/static/%00x" } do
                local status = parse_response(curl("-i --path-as-is " .. url .. path))
                assert.is_true(status == 404 or status == 403, path)
            end
        end)
    end)

    describe("with raw requests", function()
        it("answers 400 to a garbage request line and closes", function()
            local c = connect(srv.port)
            assert(c:send("garbage\r\n\r\n"))
            local all = helpers.receive_all(c)
            local status, fields, body = parse_response(all)
            assert.equal(400, status)
            assert.equal("close", fields.connection)
            assert.equal(#body, tonumber(fields["content-length"]))
        end)

        it("answers 400 to malformed headers and Content-Length", function()
            local bad = {
                "GET / HTTP/1.1\r\n\r\n",                       -- no Host
                "GET / HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: x\r\nNo-Colon\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
                "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n" ..
                    "Content-Length: 4\r\n\r\nabcd",
                "GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n",      -- bare CR
            }
            for _, req in ipairs(bad) do
                local c = connect(srv.port)
                assert(c:send(req))
                local all = helpers.receive_all(c)
                assert.equal(400, (parse_response(all)), req)
            end
        end)

        it("answers 505 to HTTP/2.0 on the request line", function()
            local c = connect(srv.port)
            assert(c:send("GET / HTTP/2.0\r\nHost: x\r\n\r\n"))
            assert.equal(505, (read_response(c)))
        end)

        it("answers 501 to a transfer coding other than chunked", function()
            local c = connect(srv.port)
            assert(c:send("POST /echo HTTP/1.1\r\nHost: x\r\n" ..
                          "Transfer-Encoding: gzip\r\n\r\n"))
            assert.equal(501, (read_response(c)))
        end)

        it("answers 414 to a request line over 8 KiB", function()
            local c = connect(srv.port)
            assert(c:send("GET /" .. ("a"):rep(9000) .. " HTTP/1.1\r\nHost: x\r\n\r\n"))
            local status, fields = read_response(c)
            assert.equal(414, status)
            assert.equal("close", fields.connection)
        end)

        it("answers 431 to a header section too large or too many fields", function()
            local c = connect(srv.port)
            assert(c:send("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " ..
                          ("b"):rep(66000) .. "\r\n\r\n"))
            assert.equal(431, (read_response(c)))
            local many = {}
            for i = 1, 101 do many[i] = "X-" .. i .. ": 1\r\n" end
            c = connect(srv.port)
            assert(c:send("GET / HTTP/1.1\r\nHost: x\r\n" ..
                          table.concat(many) .. "\r\n"))
            assert.equal(431, (read_response(c)))
        end)

        it("answers a request split at every byte", function()
            local c = connect(srv.port)
            local req = "POST /echo HTTP/1.1\r\nHost: x\r\n" ..
                        "Transfer-Encoding: chunked\r\n\r\n" ..
                        "4\r\nspli\r\n1\r\nt\r\n0\r\n\r\n"
            c:setoption("tcp-nodelay", true)
            for i = 1, #req do
                assert(c:send(req:sub(i, i)))
                if i % 16 == 0 then helpers.sleep(0.001) end
            end
            local status, _, body = read_response(c)
            assert.equal(200, status)
            assert.equal("split", body)
        end)

        it("closes an HTTP/1.0 connection after its response", function()
            local c = connect(srv.port)
            assert(c:send("GET /hello/old HTTP/1.0\r\n\r\n"))
            local all = helpers.receive_all(c)   -- ends when the server closes
            local status, fields, body = parse_response(all)
            assert.equal(200, status)
            assert.equal("close", fields.connection)
            assert.equal("Hello, old!\n", body)
        end)

        it("keeps an HTTP/1.0 connection open with Connection: keep-alive", function()
            local c = connect(srv.port)
            for i = 1, 2 do
                assert(c:send("GET /hello/" .. i .. " HTTP/1.0\r\n" ..
                              "Connection: Keep-Alive\r\n\r\n"))
                local status, fields, body = read_response(c)
                assert.equal(200, status)
                assert.equal("keep-alive", fields.connection)
                assert.equal("Hello, " .. i .. "!\n", body)
            end
        end)

        it("matches header names case-insensitively", function()
            local c = connect(srv.port)
            assert(c:send("POST /echo HTTP/1.1\r\nhOsT: x\r\n" ..
                          "CONTENT-length: 3\r\ncontent-TYPE: text/x\r\n" ..
                          "connection: CLOSE\r\n\r\nabc"))
            local all = helpers.receive_all(c)
            local status, fields, body = parse_response(all)
            assert.equal(200, status)
            assert.equal("abc", body)
            assert.equal("text/x", fields["content-type"])
            assert.equal("close", fields.connection)
        end)
    end)

    it("accepts an absolute-form request target", function()
        local c = connect(srv.port)
        assert(c:send("GET http://example.com/hello/abs?q=1 HTTP/1.1\r\n" ..
                      "Host: example.com\r\n\r\n"))
        local status, _, body = read_response(c)
        assert.equal(200, status)
        assert.equal("Hello, abs!\n", body)
    end)

    it("takes wrk's load with no error", function()
        if helpers.sh("command -v wrk") ~= 0 then
            pending("wrk is not installed")
            return
        end
        local rc, out = helpers.sh("wrk -t1 -c10 -d1s " .. url .. "/")
        assert.equal(0, rc, out)
        local n = tonumber(out:match("(%d+) requests in"))
        assert.truthy(n and n > 100, out)
        assert.not_matches("Non%-2xx", out)
        assert.not_matches("Socket errors", out)
    end)

    it("leaks no connection, and stops cleanly", function()
        local out = curl(url .. "/stats")
        assert.matches("connections_active 1\n", out, 1, true)
        assert.matches("handler_errors 0\n", out, 1, true)
        -- a kept-alive connection, idle between requests, does not hold
        -- up the shutdown
        local c = connect(srv.port)
        assert(c:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        assert.equal(200, (read_response(c)))
        local t0 = helpers.now()
        assert.equal(0, srv:stop())
        assert.truthy(helpers.now() - t0 < 5)
    end)
end)

describe("examples/http.lua in the stream style", function()
    local srv, url

    lazy_setup(function()
        srv = helpers.start_server{ script = "examples/http.lua",
                                    shell = "HTTP_STYLE=stream ",
                                    no_finally = true }
        url = "http://127.0.0.1:" .. srv.port
    end)

    lazy_teardown(function()
        if srv then srv:stop() end
    end)

    shared_behaviours(function() return srv, url end)

    it("streams a 1 MB chunked body to a reader that waits", function()
        local c = connect(srv.port)
        assert(c:send("GET /stream?n=100000 HTTP/1.1\r\nHost: x\r\n" ..
                      "Connection: close\r\n\r\n"))
        helpers.sleep(0.5)   -- the server waits: the kernel buffers are full
        local all = helpers.receive_all(c)
        local _, fields, body = parse_response(all)
        assert.equal("chunked", fields["transfer-encoding"])
        assert.matches("line 100000\n\r\n0\r\n\r\n$", body)
        local out = curl(url .. "/stats")
        assert.matches("tasks 1\n", out, 1, true)
    end)

    it("leaks no connection or task, and stops cleanly", function()
        local out = curl(url .. "/stats")
        assert.matches("connections_active 1\n", out, 1, true)
        assert.matches("tasks 1\n", out, 1, true)
        assert.equal(0, srv:stop())
    end)
end)

describe("examples/http.lua with a big static file", function()
    for _, style in ipairs{ "callback", "stream" } do
        it("sends 3 MB whole, with its length, to a quick and a slow reader (" ..
           style .. ")", function()
            local dir = helpers.tmpname()
            assert(os.execute("mkdir -p " .. dir))
            helpers.defer(function() os.execute("rm -rf " .. dir) end)
            local unit = ("0123456789abcdefghijklmnopqrstuvwxyz\n"):rep(1000)
            local data = unit:rep(90):sub(1, 3000000)
            helpers.write_file(dir .. "/big.bin", data)
            local srv = helpers.serve{ script = "examples/http.lua",
                shell = "HTTP_STYLE=" .. style .. " HTTP_STATIC=" .. dir .. " " }
            local url = "http://127.0.0.1:" .. srv.port .. "/static/big.bin"
            local got = helpers.tmpname(".out")
            helpers.defer(function() os.remove(got) end)
            local out = curl("-w '%{http_code} %{size_download}' -o " .. got ..
                             " " .. url .. " -o /dev/null " .. url)
            assert.equal("200 3000000200 3000000", out)
            assert.is_true(helpers.read_file(got) == data, "the bytes differ")
            out = curl("--limit-rate 4M -o " .. got .. " -w '%{http_code}' " .. url)
            assert.equal("200", out)
            assert.is_true(helpers.read_file(got) == data, "the bytes differ")
        end)
    end
end)

describe("examples/http.lua refusing a request", function()
    for _, style in ipairs{ "callback", "stream" } do
        it("answers 400 to a request smuggling shape, closes and serves on (" ..
           style .. ")", function()
            local srv = helpers.serve{ script = "examples/http.lua",
                                       shell = "HTTP_STYLE=" .. style .. " " }
            local c = connect(srv.port)
            assert(c:send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n" ..
                          "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"))
            local all = helpers.receive_all(c)
            assert.equal(400, (parse_response(all)))
            local d = connect(srv.port)
            assert(d:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
            assert.equal(200, (read_response(d)))
        end)
    end
end)

describe("examples/http.lua with HTTP_IDLE_TIMEOUT=0.5", function()
    for _, style in ipairs{ "callback", "stream" } do
        it("closes an idle keep-alive connection silently (" .. style .. ")", function()
            local srv = helpers.serve{ script = "examples/http.lua",
                shell = "HTTP_STYLE=" .. style .. " HTTP_IDLE_TIMEOUT=0.5 " }
            local c = connect(srv.port)
            assert(c:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
            assert.equal(200, (read_response(c)))
            local t0 = helpers.now()
            local data, err = c:receive(1)     -- the server closes, silently
            assert.is_nil(data)
            assert.equal("closed", err)
            assert.truthy(helpers.now() - t0 > 0.3)
        end)

        it("answers 408 to a request stalled half-way (" .. style .. ")", function()
            local srv = helpers.serve{ script = "examples/http.lua",
                shell = "HTTP_STYLE=" .. style .. " HTTP_IDLE_TIMEOUT=0.5 " }
            local c = connect(srv.port)
            assert(c:send("GET / HTTP/1.1\r\nHost: x\r\n"))
            local all = helpers.receive_all(c)
            local status, fields = parse_response(all)
            assert.equal(408, status)
            assert.equal("close", fields.connection)
        end)
    end
end)

describe("examples/http.lua with HTTP_REQUEST_TIMEOUT=1.5", function()
    for _, style in ipairs{ "callback", "stream" } do
        it("answers 408 to headers trickled in under the idle timeout (" ..
           style .. ")", function()
            local srv = helpers.serve{ script = "examples/http.lua",
                shell = "HTTP_STYLE=" .. style ..
                        " HTTP_IDLE_TIMEOUT=0.5 HTTP_REQUEST_TIMEOUT=1.5 " }
            local c = connect(srv.port)
            local t0 = helpers.now()
            assert(c:send("GET / HTTP/1.1\r\nHost: x\r\n"))
            for i = 1, 40 do          -- 8 s of a header line every 0.2 s
                helpers.sleep(0.2)
                if not c:send(("X-%d: a\r\n"):format(i)) then break end
                if helpers.now() - t0 > 4 then break end
            end
            local all = helpers.receive_all(c)
            local status, fields = parse_response(all)
            assert.equal(408, status)
            assert.equal("close", fields.connection)
            assert.is_true(helpers.now() - t0 < 4, helpers.now() - t0)
            -- a prompt client on another connection is served as before
            local d = connect(srv.port)
            assert(d:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
            assert.equal(200, (read_response(d)))
        end)
    end
end)

-- A script of the kit's own: a route that raises, a stream-style route
-- that writes slowly.
local APP = [[
local luaserv = require "luaserv"
local http = require "luaserv.http"
local app = http.app()
app:get("/boom", function() error("kaboom") end)
app:get("/half", function(_, res)
    res:write("first ")
    error("after the head")
end)
app:get("/ok", function() return "ok" end)
app:get("/slow", function(_, res)
    for i = 1, 3 do res:write(i .. "\n"); luaserv.sleep(0.05) end
end)
-- a protocol of lines after the upgrade, as luaserv.websocket does it
local STREAM = os.getenv("STYLE") == "stream"
app:upgrade("echo", function(req, conn)
    if req.path ~= "/echo" then return 404, "no echo here\n" end
    conn:write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n" ..
               "Connection: Upgrade\r\n\r\n")
    conn:set_framing("line")
    if STREAM then
        while true do
            local line = conn:readline()
            if not line then return end
            conn:write("echo: ", line, "\n")
        end
    end
    return { on_message = function(_, line) return "echo: " .. line .. "\n" end }
end)
return app:handler{ stream = STREAM }
]]

describe("luaserv.http", function()
    for _, style in ipairs{ "callback", "stream" } do
        it("answers 500 to a route that raised, logs it and serves the next (" ..
           style .. ")", function()
            local srv = helpers.serve{ source = APP,
                                       shell = "STYLE=" .. style .. " " }
            local c = connect(srv.port)
            assert(c:send("GET /boom HTTP/1.1\r\nHost: x\r\n\r\n" ..
                          "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"))
            local status, _, body = read_response(c)
            assert.equal(500, status)
            assert.equal("500 Internal Server Error\n", body)
            status, _, body = read_response(c)
            assert.equal(200, status)
            assert.equal("ok", body)
            helpers.wait_until(function()
                return srv:log():find("kaboom", 1, true)
            end, 5, "the error logged")
            assert.matches("GET /boom", srv:log(), 1, true)
            -- an error after the head went out cuts the body short
            assert(c:send("GET /half HTTP/1.1\r\nHost: x\r\n\r\n"))
            local all = helpers.receive_all(c)
            assert.matches("first ", all, 1, true)
            assert.not_matches("0\r\n\r\n$", all)
        end)
    end

    for _, style in ipairs{ "callback", "stream" } do
        it("hands a request with Upgrade to the hook, which takes the conn (" ..
           style .. ")", function()
            local srv = helpers.serve{ source = APP,
                                       shell = "STYLE=" .. style .. " " }
            local c = connect(srv.port)
            assert(c:send("GET /echo HTTP/1.1\r\nHost: x\r\n" ..
                          "Connection: Upgrade\r\nUpgrade: echo\r\n\r\nfirst\n"))
            assert.equal("HTTP/1.1 101 Switching Protocols", c:receive("*l"))
            repeat local l = c:receive("*l") until l == ""
            assert.equal("echo: first", c:receive("*l"))
            assert(c:send("second\n"))
            assert.equal("echo: second", c:receive("*l"))
            -- a refusal from the hook is an HTTP answer; the conn goes on
            local d = connect(srv.port)
            assert(d:send("GET /other HTTP/1.1\r\nHost: x\r\n" ..
                          "Connection: Upgrade\r\nUpgrade: echo\r\n\r\n" ..
                          "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"))
            local status, _, body = read_response(d)
            assert.equal(404, status)
            assert.equal("no echo here\n", body)
            status, _, body = read_response(d)
            assert.equal(200, status)
            assert.equal("ok", body)
        end)
    end

    it("streams a chunked body with waits between writes", function()
        local srv = helpers.serve{ source = APP, shell = "STYLE=stream " }
        local out = curl("-i http://127.0.0.1:" .. srv.port .. "/slow")
        local status, fields, body = parse_response(out)
        assert.equal(200, status)
        assert.equal("chunked", fields["transfer-encoding"])
        assert.equal("1\n2\n3\n", body)
    end)
end)

-- examples/http.lua, the HTTP/1.1 server in stream style, driven by real
-- curl and by raw luasocket requests.
local helpers = require "helpers"

local CTIME_DAY = "%u%l%l %u%l%l [ 123]%d %d%d:%d%d:%d%d %d%d%d%d"
local IMF_DATE = "^%u%l%l, %d%d %u%l%l %d%d%d%d %d%d:%d%d:%d%d GMT$"

-- A client connected to port, closed when the test ends.
local function connect(port)
    local c = helpers.connect(port)
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

-- Reads one response from a luasocket client: status, fields, body. A
-- response to HEAD (is_head) has Content-Length but no body.
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
    local n = tonumber(fields["content-length"])
    if n and n > 0 and not is_head then body = assert(c:receive(n)) end
    return status, fields, body
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

    describe("with curl", function()
        it("answers GET / with a greeting, Date, Server and Content-Length", function()
            local status, fields, body = parse_response(curl("-i " .. url .. "/"))
            assert.equal(200, status)
            assert.matches("^Hello from luaserv!", body)
            assert.equal(#body, tonumber(fields["content-length"]))
            assert.matches(IMF_DATE, fields.date)
            assert.matches("^luaserv/", fields.server)
            assert.equal("text/plain; charset=utf-8", fields["content-type"])
        end)

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
            local out = curl("-i --head " .. url .. "/")
            local status, fields, body = parse_response(out)
            assert.equal(200, status)
            assert.equal("", body)
            local _, _, get_body = parse_response(curl("-i " .. url .. "/"))
            assert.equal(#get_body, tonumber(fields["content-length"]))
        end)

        it("reuses one connection for two URLs on one command line", function()
            local before = connections_total()
            local out = curl("-v " .. url .. "/hello/a " .. url .. "/hello/b")
            assert.matches("Re%-using existing connection", out)
            assert.matches("Hello, a!\n", out, 1, true)
            assert.matches("Hello, b!\n", out, 1, true)
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

        it("answers 413 to a body over 1 MiB, with and without Expect", function()
            local big = helpers.write_file(helpers.tmpname(".bin"),
                                           ("x"):rep(2 * 1024 * 1024))
            helpers.defer(function() os.remove(big) end)
            local out, rc = curl("-i --data-binary @" .. big .. " " .. url .. "/echo")
            assert.equal(0, rc, out)
            local status, fields, body = parse_response(out)
            assert.equal(413, status)
            assert.equal("close", fields.connection)
            assert.equal(#body, tonumber(fields["content-length"]))
            -- without Expect: 100-continue the server reads the body away
            out, rc = curl("-i -H 'Expect:' --data-binary @" .. big .. " " ..
                           url .. "/echo")
            assert.equal(0, rc, out)
            assert.equal(413, (parse_response(out)))
        end)

        it("takes a body of exactly 1 MiB", function()
            local file = helpers.write_file(helpers.tmpname(".bin"),
                                            ("y"):rep(1024 * 1024))
            helpers.defer(function() os.remove(file) end)
            local out = curl("-o /dev/null -w '%{http_code} %{size_download}' " ..
                             "--data-binary @" .. file .. " " .. url .. "/echo")
            assert.equal("200 1048576", out)
        end)

        it("answers 411 to Transfer-Encoding: chunked", function()
            local status, fields = parse_response(curl(
                "-i -H 'Transfer-Encoding: chunked' --data-binary hello " ..
                url .. "/echo"))
            assert.equal(411, status)
            assert.equal("close", fields.connection)
        end)

        it("closes after an HTTP/1.0 request", function()
            local out = curl("-v -0 " .. url .. "/ " .. url .. "/time")
            assert.matches("< Connection: close", out, 1, true)
            assert.not_matches("Re%-using existing connection", out)
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
                "GET /\r\n\r\n",                                 -- HTTP/0.9
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
            local status = read_response(c)
            assert.equal(505, status)
        end)

        it("answers 414 to a request line over 8 KiB", function()
            local c = connect(srv.port)
            assert(c:send("GET /" .. ("a"):rep(9000) .. " HTTP/1.1\r\nHost: x\r\n\r\n"))
            local status, fields = read_response(c)
            assert.equal(414, status)
            assert.equal("close", fields.connection)
        end)

        it("answers 431 to a header section too large", function()
            local c = connect(srv.port)
            assert(c:send("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " ..
                          ("b"):rep(9000) .. "\r\n\r\n"))
            assert.equal(431, (read_response(c)))
            local many = {}
            for i = 1, 101 do many[i] = "X-" .. i .. ": 1\r\n" end
            c = connect(srv.port)
            assert(c:send("GET / HTTP/1.1\r\nHost: x\r\n" ..
                          table.concat(many) .. "\r\n"))
            assert.equal(431, (read_response(c)))
        end)

        it("answers pipelined requests sent in one write, in order", function()
            local c = connect(srv.port)
            assert(c:send("GET /hello/one HTTP/1.1\r\nHost: x\r\n\r\n" ..
                          "POST /echo HTTP/1.1\r\nHost: x\r\n" ..
                          "Content-Length: 5\r\n\r\nfive!" ..
                          "\r\n" ..   -- a stray CRLF between requests
                          "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n" ..
                          "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" ..
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
            status = read_response(c)
            assert.equal(404, status)
            status, fields = read_response(c, true)
            assert.equal(200, status)
            assert.truthy(tonumber(fields["content-length"]) > 0)
            local rest = helpers.receive_all(c)
            status, fields, body = parse_response(rest)
            assert.equal(200, status)
            assert.equal("close", fields.connection)
            assert.equal("Hello, two!\n", body)
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

        it("accepts an absolute-form request target", function()
            local c = connect(srv.port)
            assert(c:send("GET http://example.com/hello/abs?q=1 HTTP/1.1\r\n" ..
                          "Host: example.com\r\n\r\n"))
            local status, _, body = read_response(c)
            assert.equal(200, status)
            assert.equal("Hello, abs!\n", body)
        end)
    end)

    it("leaks no connection or task, and stops cleanly", function()
        local out = curl(url .. "/stats")
        assert.matches("connections_active 1\n", out, 1, true)
        assert.matches("tasks 1\n", out, 1, true)
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

describe("examples/http.lua with HTTP_IDLE_TIMEOUT=0.5", function()
    local srv

    lazy_setup(function()
        srv = helpers.start_server{ script = "examples/http.lua",
                                    shell = "HTTP_IDLE_TIMEOUT=0.5 ",
                                    no_finally = true }
    end)

    lazy_teardown(function()
        if srv then srv:stop("KILL", 5) end
    end)

    it("closes a keep-alive connection idle for the timeout", function()
        local c = connect(srv.port)
        assert(c:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        assert.equal(200, (read_response(c)))
        local t0 = helpers.now()
        local data, err = c:receive(1)     -- the server closes, silently
        assert.is_nil(data)
        assert.equal("closed", err)
        assert.truthy(helpers.now() - t0 > 0.3)
    end)

    it("answers 408 to a request not complete within the timeout", function()
        local c = connect(srv.port)
        assert(c:send("GET / HTTP/1.1\r\nHost: x\r\n"))
        local all = helpers.receive_all(c)
        local status, fields = parse_response(all)
        assert.equal(408, status)
        assert.equal("close", fields.connection)
    end)

    it("stops cleanly", function()
        assert.equal(0, srv:stop())
    end)
end)

describe("examples/http.lua with HTTP_REQUEST_TIMEOUT=1.5", function()
    it("answers 408 to headers trickled in under the idle timeout", function()
        -- Each line came within the 0.5 s idle timeout, which every byte
        -- restarts, so a slowloris client held the connection for ever.
        local srv = helpers.serve{ script = "examples/http.lua",
            shell = "HTTP_IDLE_TIMEOUT=0.5 HTTP_REQUEST_TIMEOUT=1.5 " }
        local c = connect(srv.port)
        local t0 = helpers.now()
        assert(c:send("GET / HTTP/1.1\r\nHost: x\r\n"))
        local closed = false
        for i = 1, 40 do          -- 8 s of a header line every 0.2 s
            helpers.sleep(0.2)
            if not c:send(("X-%d: a\r\n"):format(i)) then
                closed = true
                break
            end
        end
        local all = helpers.receive_all(c)
        local status, fields = parse_response(all)
        assert.equal(408, status)
        assert.equal("close", fields.connection)
        assert.is_true(closed or helpers.now() - t0 < 8.5)
        assert.is_true(helpers.now() - t0 < 6, helpers.now() - t0)
        -- a prompt client on another connection is served as before
        local d = connect(srv.port)
        assert(d:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        assert.equal(200, (read_response(d)))
    end)
end)

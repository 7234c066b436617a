-- luaserv.http without a server: routing, the response object and the
-- bytes it writes, on a fake conn and request tables shaped as the C
-- framer makes them (the real thing runs in spec/examples/http_spec.lua).

-- The C module luaserv.http needs, faked: a clock and a log.
local logged = {}
local clock = 1700000000.25
package.loaded.luaserv = package.loaded.luaserv or {
    version = "test",
    now = function() return clock end,
    log = { error = function(fmt, ...) logged[#logged + 1] = fmt:format(...) end,
            warn = function(fmt, ...) logged[#logged + 1] = fmt:format(...) end },
}
package.loaded["luaserv.http"] = nil
local http = require "luaserv.http"

-- A conn that keeps what is written.
local function fake_conn()
    local c = { out = {}, closed = false, state = {}, input = 0 }
    local function put(v)
        if type(v) == "table" then
            for _, x in ipairs(v) do put(x) end
        else
            c.out[#c.out + 1] = tostring(v)
        end
    end
    function c.write(self, ...)
        if self.closed then return nil, "closed" end
        for i = 1, select("#", ...) do put((select(i, ...))) end
        return self
    end
    function c.close(self) self.closed = true end
    function c.is_closed(self) return self.closed end
    function c.buffered(self) return self.input end
    function c.set_timeout() end
    function c.text(self) return table.concat(self.out) end
    return c
end

-- A request table as the framer makes it.
local function request(method, target, opts)
    opts = opts or {}
    local path, query = target:match("^([^?]*)%??(.*)$")
    local headers = setmetatable(opts.headers or { host = "x" }, {
        __index = function(t, k) return rawget(t, k:lower()) end })
    return { method = method, target = target, path = path,
             query = query ~= "" and query or nil,
             version = opts.version or "1.1", headers = headers,
             header_list = {}, body = opts.body or "",
             keep_alive = opts.keep_alive ~= false, upgrade = opts.upgrade }
end

-- Splits a response text into status, fields (lowercase), body.
local function parse(text)
    local head, body = text:match("^(.-)\r\n\r\n(.*)$")
    assert(head, "no head in " .. text)
    local fields = {}
    for name, value in head:gmatch("\r\n([^:\r\n]+): ([^\r\n]*)") do
        local k = name:lower()
        fields[k] = fields[k] and fields[k] .. ", " .. value or value
    end
    return tonumber(head:match("^HTTP/1%.1 (%d%d%d) ")), fields, body
end

-- What on_message returned, written as the core writes a reply: even
-- after conn:close() in the same call.
local function reply(conn, ...)
    if select("#", ...) > 0 then
        local closed = conn.closed
        conn.closed = false
        conn:write(...)
        conn.closed = closed
    end
    return conn
end

-- Sends req through app's callback handler; returns the conn.
local function call(app, req, conn)
    conn = conn or fake_conn()
    return reply(conn, app:handler().on_message(conn, req))
end

describe("luaserv.http", function()
    local app

    before_each(function()
        logged = {}
        app = http.app()
        app:get("/", function() return "hello" end)
        app:get("/users/:id", function(req, res)
            res:header("X-Id", req.params.id)
            return req.params.id
        end)
        app:post("/users/:id", function(req) return 201, req.body end)
        app:get("/files/*", function(req) return req.params["*"] end)
        app:get("^/v(%d+)/x$", function(req) return "v" .. req.params[1] end)
        app:post("/need", function(req) return req.body end, { body = true })
        app:get("/boom", function() error("kaboom") end)
        app:get("/tuple", function()
            return 202, "yes", { ["X-A"] = "1", ["Set-Cookie"] = { "a=1", "b=2" } }
        end)
        app:get("/stream", function(_, res)
            res:header("Content-Type", "text/event-stream")
            res:write("one")
            res:write("")
            res:write("three")
        end)
        app:get("/json", function(_, res) res:json({ a = 1 }) end)
    end)

    it("answers a GET with status line, Server, Date, type and length", function()
        local text = call(app, request("GET", "/")):text()
        assert.equal("HTTP/1.1 200 OK\r\n", text:sub(1, 17))
        local status, f, body = parse(text)
        assert.equal(200, status)
        assert.equal("hello", body)
        assert.equal("5", f["content-length"])
        assert.equal("luaserv/test", f.server)
        assert.equal("Tue, 14 Nov 2023 22:13:20 GMT", f.date)
        assert.equal("text/plain; charset=utf-8", f["content-type"])
        assert.is_nil(f.connection)
    end)

    it("routes :params, a trailing * and Lua patterns, percent-decoded", function()
        local _, f, body = parse(call(app, request("GET", "/users/a%20b")):text())
        assert.equal("a b", body)
        assert.equal("a b", f["x-id"])
        _, _, body = parse(call(app, request("GET", "/files/a/b.txt")):text())
        assert.equal("a/b.txt", body)
        _, _, body = parse(call(app, request("GET", "/v12/x")):text())
        assert.equal("v12", body)
    end)

    it("answers 404, 405 with Allow, and 501 for an unknown method", function()
        local s, _, body = parse(call(app, request("GET", "/nope")):text())
        assert.equal(404, s)
        assert.equal("404 Not Found\n", body)
        local f
        s, f = parse(call(app, request("DELETE", "/users/1")):text())
        assert.equal(405, s)
        assert.equal("GET, HEAD, POST", f.allow)
        s = parse(call(app, request("BREW", "/")):text())
        assert.equal(501, s)
        s = parse(call(app, request("PUT", "/")):text())
        assert.equal(405, s)
    end)

    it("keeps the connection open after 404, 405 and 501", function()
        local conn = call(app, request("GET", "/nope"))
        call(app, request("BREW", "/"), conn)
        assert.is_false(conn.closed)
    end)

    it("answers HEAD with GET's head and no body", function()
        local s, f, body = parse(call(app, request("HEAD", "/")):text())
        assert.equal(200, s)
        assert.equal("5", f["content-length"])
        assert.equal("", body)
        s, f, body = parse(call(app, request("HEAD", "/stream")):text())
        assert.equal(200, s)
        assert.equal("chunked", f["transfer-encoding"])
        assert.equal("", body)
    end)

    it("says Connection: close and closes when the request asks", function()
        local conn = call(app, request("GET", "/", { keep_alive = false }))
        local _, f = parse(conn:text())
        assert.equal("close", f.connection)
        assert.is_true(conn.closed)
    end)

    it("says Connection: keep-alive to an HTTP/1.0 keep-alive request", function()
        local conn = call(app, request("GET", "/", { version = "1.0" }))
        local _, f = parse(conn:text())
        assert.equal("keep-alive", f.connection)
        assert.is_false(conn.closed)
    end)

    it("takes status, body and headers returned", function()
        local s, f, body = parse(call(app, request("GET", "/tuple")):text())
        assert.equal(202, s)
        assert.equal("yes", body)
        assert.equal("1", f["x-a"])
        assert.equal("a=1, b=2", f["set-cookie"])
    end)

    it("streams res:write as chunks, ended when the function returns", function()
        local s, f, body = parse(call(app, request("GET", "/stream")):text())
        assert.equal(200, s)
        assert.equal("chunked", f["transfer-encoding"])
        assert.equal("text/event-stream", f["content-type"])
        assert.is_nil(f["content-length"])
        assert.equal("3\r\none\r\n5\r\nthree\r\n0\r\n\r\n", body)
    end)

    it("streams to HTTP/1.0 without chunks and closes", function()
        local conn = call(app, request("GET", "/stream", { version = "1.0" }))
        local _, f, body = parse(conn:text())
        assert.equal("onethree", body)
        assert.equal("close", f.connection)
        assert.is_true(conn.closed)
    end)

    it("answers 500 to a route that raised, logs it and keeps the connection", function()
        local conn = call(app, request("GET", "/boom"))
        local s, f, body = parse(conn:text())
        assert.equal(500, s)
        assert.equal("500 Internal Server Error\n", body)
        assert.is_nil(f.connection)
        assert.is_false(conn.closed)
        assert.matches("GET /boom: .*kaboom", logged[1])
        assert.matches("traceback", logged[1])
    end)

    it("answers 411 to a body route without a length, 400 without Host", function()
        local s = parse(call(app, request("POST", "/need")):text())
        assert.equal(411, s)
        s = parse(call(app, request("POST", "/need", {
            headers = { host = "x", ["content-length"] = "2" }, body = "ok" })):text())
        assert.equal(200, s)
        s = parse(call(app, request("POST", "/need", {
            headers = { host = "x", ["transfer-encoding"] = "chunked" },
            body = "ok" })):text())
        assert.equal(200, s)
        local conn = call(app, request("GET", "/", { headers = {} }))
        assert.equal(400, (parse(conn:text())))
        assert.is_true(conn.closed)
        s = parse(call(app, request("GET", "/", { headers = {}, version = "1.0" })):text())
        assert.equal(200, s)
    end)

    it("encodes JSON with lua-cjson when installed", function()
        if not pcall(require, "cjson") then
            pending("lua-cjson is not installed")
            return
        end
        local s, f, body = parse(call(app, request("GET", "/json")):text())
        assert.equal(200, s)
        assert.equal("application/json", f["content-type"])
        assert.equal('{"a":1}', body)
    end)

    it("refuses header injection and headers it writes itself", function()
        local res = http.Response
        local r = setmetatable({ done = false }, res)
        assert.has_error(function() r:header("X-A", "a\r\nB: c") end)
        assert.has_error(function() r:header("Content-Length", "3") end)
        assert.has_error(function() r:header("Bad Name", "1") end)
        assert.has_error(function() r:status(42) end)
    end)

    it("answers 408 at a timeout mid-request, nothing between requests", function()
        local h = app:handler()
        local conn = fake_conn()
        h.on_timeout(conn)
        assert.equal("", conn:text())
        conn.input = 10
        h.on_timeout(conn)
        local s, f = parse(conn:text())
        assert.equal(408, s)
        assert.equal("close", f.connection)
    end)

    it("hands an upgrade to the hook, and later frames to its table", function()
        local seen = {}
        app:upgrade("websocket", function(req, conn)
            conn:write("HTTP/1.1 101 Switching Protocols\r\n\r\n")
            seen.path = req.path
            return { on_message = function(_, data, kind)
                seen[#seen + 1] = data .. "/" .. kind
                return "echo"
            end }
        end)
        app:upgrade("h2c", function() return 400, "no" end)
        local h = app:handler()
        local conn = fake_conn()
        h.on_message(conn, request("GET", "/chat", { upgrade = "websocket" }))
        assert.equal("/chat", seen.path)
        assert.equal("echo", h.on_message(conn, "hi", "text"))
        assert.same({ "hi/text" }, { seen[1] })
        assert.is_false(conn.closed)
        conn = fake_conn()
        reply(conn, h.on_message(conn, request("GET", "/", { upgrade = "h2c" })))
        assert.equal(400, (parse(conn:text())))
        -- an Upgrade no hook takes is ignored
        conn = fake_conn()
        reply(conn, h.on_message(conn, request("GET", "/", { upgrade = "foo" })))
        assert.equal(200, (parse(conn:text())))
    end)

    it("parses query strings", function()
        assert.same({ a = "2", b = "x y", c = "" }, http.parse_query("a=1&b=x%20y&a=2&c"))
        assert.same({ a = { "1", "2" } }, http.parse_query("a=1&a=2", true))
    end)

    it("serves static files and refuses traversal", function()
        local dir = os.tmpname()
        os.remove(dir)
        assert(os.execute("mkdir -p " .. dir .. "/sub"))
        local f = assert(io.open(dir .. "/sub/a.css", "w"))
        f:write("body{}")
        f:close()
        app:get("/s/*", http.static(dir))
        local s, hdr, body = parse(call(app, request("GET", "/s/sub/a.css")):text())
        assert.equal(200, s)
        assert.equal("body{}", body)
        assert.equal("text/css; charset=utf-8", hdr["content-type"])
        assert.equal(403, (parse(call(app, request("GET", "/s/../etc/passwd")):text())))
        assert.equal(403, (parse(call(app, request("GET", "/s/sub/%2e%2e/%2e%2e/x")):text())))
        assert.equal(404, (parse(call(app, request("GET", "/s/sub")):text())))
        assert.equal(404, (parse(call(app, request("GET", "/s/nope")):text())))
        assert.equal(404, (parse(call(app, request("GET", "/s/.hidden")):text())))
        os.execute("rm -rf " .. dir)
    end)
end)

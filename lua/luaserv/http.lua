-- luaserv.http: a small HTTP/1.1 server on the C framer (framing "http").
--
--   local http = require "luaserv.http"
--   local app = http.app()
--   app:get("/", function() return "hello\n" end)
--   app:get("/users/:id", function(req, res) res:json{ id = req.params.id } end)
--   return app:handler()                  -- or app:handler{ stream = true }
--
-- The framer (src/core/http.c) parses the request line, the headers and the
-- body (Content-Length or chunked) in C and hands over one request table
-- (docs/handler-api.md, "HTTP framing"); this module routes it, calls the
-- route's function with a response object and writes the answer: status
-- line, Server, Date (formatted once a second), Content-Type,
-- Content-Length or a chunked body, Connection when it must say so.
--
-- The framer answers malformed requests itself and closes (400, 413, 414,
-- 431, 501 for a transfer coding it does not know, 505); this module
-- answers 400 (an HTTP/1.1 request without Host), 404, 405 (with Allow),
-- 408 (the idle timeout passed in the middle of a request), 411, 413 (a
-- route's own max_body), 500 (a route function raised: logged, the
-- connection goes on) and 501 (a method HTTP does not define).
local luaserv = require "luaserv"

local byte = string.byte
local char = string.char
local concat = table.concat
local error = error
local find = string.find
local format = string.format
local gsub = string.gsub
local ipairs = ipairs
local lower = string.lower
local match = string.match
local next = next
local now = luaserv.now
local os_date = os.date
local pairs = pairs
local rawget = rawget
local setmetatable = setmetatable
local sort = table.sort
local sub = string.sub
local tonumber = tonumber
local tostring = tostring
local traceback = debug.traceback
local type = type
local xpcall = xpcall

local has_cjson, cjson = pcall(require, "cjson")

local _M = { version = "0.1" }

_M.REASONS = {
    [100] = "Continue", [101] = "Switching Protocols",
    [200] = "OK", [201] = "Created", [202] = "Accepted",
    [204] = "No Content", [206] = "Partial Content",
    [301] = "Moved Permanently", [302] = "Found", [303] = "See Other",
    [304] = "Not Modified", [307] = "Temporary Redirect",
    [308] = "Permanent Redirect",
    [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden",
    [404] = "Not Found", [405] = "Method Not Allowed",
    [406] = "Not Acceptable", [408] = "Request Timeout",
    [409] = "Conflict", [410] = "Gone", [411] = "Length Required",
    [412] = "Precondition Failed", [413] = "Content Too Large",
    [414] = "URI Too Long", [415] = "Unsupported Media Type",
    [416] = "Range Not Satisfiable", [422] = "Unprocessable Content",
    [426] = "Upgrade Required", [429] = "Too Many Requests",
    [431] = "Request Header Fields Too Large",
    [500] = "Internal Server Error", [501] = "Not Implemented",
    [502] = "Bad Gateway", [503] = "Service Unavailable",
    [504] = "Gateway Timeout", [505] = "HTTP Version Not Supported",
}
local REASONS = _M.REASONS

-- "HTTP/1.1 200 OK\r\n" per status, made once.
local STATUS_LINE = setmetatable({}, { __index = function(t, code)
    local line = format("HTTP/1.1 %d %s\r\n", code,
                        REASONS[code] or "Unknown")
    t[code] = line
    return line
end })

-- The methods RFC 9110 and 5789 define; another gets 501 unless a route
-- names it.
local METHODS = { GET = true, HEAD = true, POST = true, PUT = true,
                  DELETE = true, CONNECT = true, OPTIONS = true,
                  TRACE = true, PATCH = true }

local TEXT = "Content-Type: text/plain; charset=utf-8\r\n"
-- What goes between the other headers and the length, by how the
-- connection goes on: open (HTTP/1.1), open (HTTP/1.0 keep-alive), closed.
local CL_KEEP = "Content-Length: "
local CL_KEEP10 = "Connection: keep-alive\r\nContent-Length: "
local CL_CLOSE = "Connection: close\r\nContent-Length: "
local END_HEAD = "\r\n\r\n"
local NO_PARAMS = setmetatable({}, { __newindex = function()
    error("req.params of a route without parameters is read-only", 2)
end })

-- Date ----------------------------------------------------------------------

-- The "Date: ...\r\n" line, formatted when the second changes.
local date_sec, date_line = -1, ""
local function date()
    local sec = now() // 1
    if sec ~= date_sec then
        date_sec = sec
        date_line = os_date("!Date: %a, %d %b %Y %H:%M:%S GMT\r\n", sec)
    end
    return date_line
end
_M.date = function()
    return sub(date(), 7, -3)
end

-- Percent-decoding ----------------------------------------------------------

local function hex_char(h)
    return char(tonumber(h, 16))
end

-- s with %XX escapes decoded (and "+" as a space when form is true).
local function decode(s, form)
    if form and find(s, "+", 1, true) then s = gsub(s, "+", " ") end
    if not find(s, "%", 1, true) then return s end
    return (gsub(s, "%%(%x%x)", hex_char))
end
_M.decode = decode

-- http.parse_query("a=1&b=x%20y&a=2") -> { a = "2", b = "x y" }; a name
-- that repeats keeps its last value, and all of them in list[name] when
-- the second argument is true: { a = { "1", "2" }, b = { "x y" } }.
function _M.parse_query(q, list)
    local t = {}
    if not q then return t end
    for pair in q:gmatch("[^&;]+") do
        local eq = find(pair, "=", 1, true)
        local k, v
        if eq then
            k, v = decode(sub(pair, 1, eq - 1), true),
                   decode(sub(pair, eq + 1), true)
        else
            k, v = decode(pair, true), ""
        end
        if list then
            local l = t[k]
            if not l then l = {}; t[k] = l end
            l[#l + 1] = v
        else
            t[k] = v
        end
    end
    return t
end

-- The response ---------------------------------------------------------------

local Response = {}
Response.__index = Response

-- Headers this module writes itself; setting them is a caller error.
local OWN_HEADERS = { ["content-length"] = true, ["transfer-encoding"] = true,
                      date = true }

-- The Connection header (when the connection's fate must be said) and
-- the start of the Content-Length line, which ends the head.
local function clength_prefix(res)
    if res.close then return CL_CLOSE end
    if res.req.version == "1.0" then return CL_KEEP10 end
    return CL_KEEP
end

-- In the callback style the response goes back as on_message's return
-- values (unpacked from OUT), cheaper than a conn:write: emit fills OUT for the
-- response being collected (the one on_message is serving) and sets
-- filled; a response finished later (from a task) is written.
local OUT = {}
local collecting, filled = nil, false

-- Writes the whole response with a body of known length (a string).
-- Returns true, or false when the write failed (the conn is gone).
local function emit(res, body)
    res.done = true
    local app = res.app
    local n = #body
    if res.head then body = "" end
    if res == collecting then
        OUT[1], OUT[2], OUT[3], OUT[4], OUT[5] = STATUS_LINE[res.code],
            app.server_line, date(), res.ctype or TEXT, res.extra or ""
        OUT[6], OUT[7], OUT[8], OUT[9] = clength_prefix(res), n, END_HEAD, body
        filled = true
        return true
    end
    local ok = res.conn:write(STATUS_LINE[res.code], app.server_line, date(),
                              res.ctype or TEXT, res.extra or "",
                              clength_prefix(res), n, END_HEAD, body)
    return ok ~= nil
end

-- A 200 text/plain response with this body, for a route function that
-- takes no res and returned a string: no response object is made.
local function emit_plain(app, conn, req, body, stream)
    local n = #body
    if req.method == "HEAD" then body = "" end
    local cl = CL_CLOSE
    if req.keep_alive then cl = req.version == "1.0" and CL_KEEP10 or CL_KEEP end
    if stream then
        conn:write(STATUS_LINE[200], app.server_line, date(), TEXT, "", cl, n,
                   END_HEAD, body)
        return
    end
    OUT[1], OUT[2], OUT[3], OUT[4], OUT[5] = STATUS_LINE[200],
        app.server_line, date(), TEXT, ""
    OUT[6], OUT[7], OUT[8], OUT[9] = cl, n, END_HEAD, body
    filled = true
end

-- res:status(code) sets the status (default 200); returns res.
function Response:status(code)
    if type(code) ~= "number" or code < 100 or code > 999 or code % 1 ~= 0 then
        error("res:status: a status code from 100 to 999 expected, got " ..
              tostring(code), 2)
    end
    self.code = code
    return self
end

-- res:header(name, value) adds a header (repeat it for several values);
-- Content-Type replaces the default text/plain; Connection: close closes
-- the connection after this response. Returns res.
function Response:header(name, value)
    if self.started or self.done then
        error("res:header: the response head was already sent", 2)
    end
    value = tostring(value)
    if type(name) ~= "string" or not match(name, "^[%w!#$%%&'*+%-.^_`|~]+$")
       or find(value, "[\r\n%z]") then
        error("res:header: bad header name or value (" .. tostring(name) ..
              ")", 2)
    end
    local lname = lower(name)
    if OWN_HEADERS[lname] then
        error("res:header: " .. name .. " is written by luaserv.http", 2)
    elseif lname == "content-type" then
        self.ctype = "Content-Type: " .. value .. "\r\n"
    elseif lname == "connection" then
        if find(lower(value), "close", 1, true) then self.close = true end
    else
        self.extra = (self.extra or "") .. name .. ": " .. value .. "\r\n"
    end
    return self
end

-- res:send([body]) sends the response with this body (a string, or a
-- table of strings; Content-Length set). A HEAD request gets the head
-- alone. Returns true, or nil, "closed" when the connection is gone.
function Response:send(body)
    if self.done or self.started then
        error("res:send: the response was already sent", 2)
    end
    if body == nil then
        body = ""
    elseif type(body) == "table" then
        body = concat(body)
    elseif type(body) ~= "string" then
        body = tostring(body)
    end
    if emit(self, body) then return true end
    return nil, "closed"
end

-- res:json(value[, status]) sends value encoded by lua-cjson, as
-- application/json. Raises when lua-cjson is not installed.
function Response:json(value, status)
    if not has_cjson then
        error("res:json needs lua-cjson (Debian: apt install lua-cjson; " ..
              "luarocks install lua-cjson)", 2)
    end
    if status then self:status(status) end
    self.ctype = "Content-Type: application/json\r\n"
    return self:send(cjson.encode(value))
end

-- Sends the head of a streamed body: chunked for HTTP/1.1, up to the
-- close for HTTP/1.0 (which has no chunks).
local function start(res)
    res.started = true
    local conn_line, te
    if res.req.version == "1.0" then
        res.close, te = true, ""
        conn_line = "Connection: close\r\n\r\n"
    else
        res.chunked, te = true, "Transfer-Encoding: chunked\r\n"
        conn_line = res.close and "Connection: close\r\n\r\n" or "\r\n"
    end
    return res.conn:write(STATUS_LINE[res.code], res.app.server_line, date(),
                          res.ctype or TEXT, res.extra or "", te, conn_line)
end

-- res:write(chunk) streams chunk as part of a body of unknown length
-- (chunked; the first write sends the head). In the stream style it waits
-- while the peer is slow to read (backpressure). Returns true, or nil,
-- err ("closed", "timeout") when the peer is gone: stop writing then.
function Response:write(chunk)
    if self.done then error("res:write: the response was already sent", 2) end
    chunk = tostring(chunk)
    if not self.started then
        if not start(self) then return nil, "closed" end
    end
    if self.head or chunk == "" then return true end
    local ok, err
    if self.chunked then
        ok, err = self.conn:write(format("%x\r\n", #chunk), chunk, "\r\n")
    else
        ok, err = self.conn:write(chunk)
    end
    if not ok then
        self.done, self.close = true, true
        return nil, err
    end
    return true
end

-- res:finish() ends a streamed body (a response never written gets an
-- empty body). The module calls it when the route function returns.
function Response:finish()
    if self.done then return true end
    if not self.started then return self:send("") end
    self.done = true
    if self.chunked and not self.head then
        if not self.conn:write("0\r\n\r\n") then return nil, "closed" end
    end
    return true
end

local CHUNK = 65536

-- Sends the file's bytes [0, size) by conn:sendfile (the kernel copies
-- them; a stream-style task only). When the socket is full one chunk
-- goes through the output queue, whose write and flush wait for the
-- peer, and sendfile goes on. Returns how many bytes went (the caller
-- copies the rest when the transport cannot, e.g. TLS), or nil when the
-- peer went away or the file shrank.
local function send_kernel(conn, path, f, size)
    if not conn:flush() then return nil end
    local off = 0
    while off < size do
        local n, how = conn:sendfile(path, off, size - off)
        if not n then
            if how == "unsupported" or how == "pending" then return off end
            return nil
        end
        off = off + n
        if how == "eof" then return nil end
        if off < size then
            if how == "again" then
                f:seek("set", off)
                local data = f:read(size - off < CHUNK and size - off or CHUNK)
                if not data or not conn:write(data) or not conn:flush() then
                    return nil
                end
                off = off + #data
            else
                luaserv.sleep(0)    -- a 1 MiB slice went: let others run
            end
        end
    end
    return off
end

-- Copies the file's bytes [sent, size) with conn:write, 64 KiB at a time
-- (a stream-style task waits for the peer between them; a callback
-- queues it all). Returns true, or nil when the peer went away or the
-- file shrank.
local function send_copy(conn, f, sent, size)
    f:seek("set", sent)
    while sent < size do
        local data = f:read(size - sent < CHUNK and size - sent or CHUNK)
        if not data then return nil end
        if not conn:write(data) then return nil end
        sent = sent + #data
    end
    return true
end

-- res:sendfile(path[, content_type]) sends a file's contents with its
-- Content-Length: in the stream style by sendfile(2) where the transport
-- allows it (plain TCP), else read and written 64 KiB at a time.
-- Returns true, or nil, err when the file cannot be read (nothing was
-- sent: answer 404 or so) or the peer went away.
function Response:sendfile(path, content_type)
    if self.done or self.started then
        error("res:sendfile: the response was already sent", 2)
    end
    local f, err = io.open(path, "rb")
    if not f then return nil, err end
    local size = f:seek("end")
    f:seek("set")
    local probe, rerr = f:read(1)
    if not probe and (rerr or size ~= 0) then   -- a directory: EISDIR
        f:close()
        return nil, rerr or "cannot read " .. path
    end
    if content_type then self.ctype = "Content-Type: " .. content_type .. "\r\n" end
    self.done = true
    local conn = self.conn
    local ok = conn:write(STATUS_LINE[self.code], self.app.server_line,
                          date(), self.ctype or TEXT, self.extra or "",
                          clength_prefix(self), size, END_HEAD)
    if ok and not self.head and size > 0 then
        -- exactly the length announced, should the file grow meanwhile
        local sent = 0
        if self.stream and conn.sendfile then
            sent = send_kernel(conn, path, f, size)
        end
        ok = sent and (sent == size or send_copy(conn, f, sent, size))
        if not ok then        -- the peer went, or the length was a lie
            self.close = true
            conn:close()
        end
    end
    f:close()
    if not ok then
        self.close = true
        return nil, "closed"
    end
    return true
end

local function new_response(app, conn, req, stream)
    local res = setmetatable({ app = app, conn = conn, req = req, code = 200,
                               stream = stream,
                               head = req.method == "HEAD",
                               close = not req.keep_alive }, Response)
    if not stream then collecting = res end
    return res
end
_M.Response = Response

-- Routes ---------------------------------------------------------------------

local App = {}
App.__index = App

-- A route's path as a Lua pattern: "/users/:id" -> "^/users/([^/]+)$"
-- with names { "id" }; a trailing "*" matches the rest, named "*". A
-- path beginning with "^" is a Lua pattern already: its captures are
-- params[1], params[2], ... Returns nil for a plain path.
local function compile(path)
    if sub(path, 1, 1) == "^" then return path, nil end
    if not find(path, "[:*]") then return nil end
    local names, out = {}, { "^" }
    local i = 1
    while i <= #path do
        local c = sub(path, i, i)
        if c == ":" then
            local name = match(path, "^[%w_]+", i + 1)
            if not name then error("route " .. path .. ": ':' without a name", 3) end
            names[#names + 1] = name
            out[#out + 1] = "([^/]+)"
            i = i + 1 + #name
        elseif c == "*" then
            if i ~= #path then error("route " .. path .. ": '*' must end it", 3) end
            names[#names + 1] = "*"
            out[#out + 1] = "(.*)"
            i = i + 1
        else
            out[#out + 1] = gsub(c, "[%^%$%(%)%%%.%[%]%+%-%?]", "%%%0")
            i = i + 1
        end
    end
    out[#out + 1] = "$"
    return concat(out), names
end

-- "GET, HEAD, POST": an entry's methods for Allow (HEAD with GET).
local function allow_of(methods)
    local list, seen = {}, {}
    for m in pairs(methods) do
        list[#list + 1], seen[m] = m, true
    end
    if seen.GET and not seen.HEAD then list[#list + 1] = "HEAD" end
    sort(list)
    return concat(list, ", ")
end

-- app:route(method, path, fn[, opts]) adds a route: fn(req, res) for
-- requests with this method (a string or a list of them) and a path
-- matching path ("/a/b", "/users/:id", "/static/*", or a Lua pattern
-- "^/v(%d+)/"). opts.body = true: a request with no Content-Length and
-- no chunked body gets 411; opts.max_body = n: a body over n bytes gets
-- 413. Returns app.
function App:route(method, path, fn, opts)
    if type(path) ~= "string" or sub(path, 1, 1) ~= "/" and sub(path, 1, 1) ~= "^" then
        error("app:route: a path beginning with '/' (or a pattern with '^') expected", 2)
    end
    if type(fn) ~= "function" then
        error("app:route: a function expected for " .. path, 2)
    end
    if type(method) == "table" then
        for _, m in ipairs(method) do self:route(m, path, fn, opts) end
        return self
    end
    method = method:upper()
    local pattern, names = compile(path)
    local entry
    if not pattern then
        entry = self.exact[path]
        if not entry then
            entry = { methods = {} }
            self.exact[path] = entry
        end
    else
        for _, e in ipairs(self.patterns) do
            if e.pattern == pattern then entry = e end
        end
        if not entry then
            entry = { methods = {}, pattern = pattern, names = names }
            self.patterns[#self.patterns + 1] = entry
        end
    end
    opts = opts or {}
    local info = debug.getinfo(fn, "u")
    entry.methods[method] = { fn = fn, body = opts.body,
                              max_body = opts.max_body,
                              no_res = info.nparams < 2 and not info.isvararg }
    entry.allow = allow_of(entry.methods)
    self.used[method] = true
    return self
end

for _, m in ipairs{ "get", "post", "put", "delete", "patch", "options" } do
    local M = m:upper()
    App[m] = function(self, path, fn, opts)
        return self:route(M, path, fn, opts)
    end
end

-- app:upgrade(name, fn) calls fn(req, conn) for a request whose Upgrade
-- header names this protocol ("websocket"), on any path, instead of a
-- route. fn may answer an HTTP response by returning status, body[,
-- headers] (a refusal: the connection goes on as HTTP); otherwise it has
-- taken the conn over (luaserv.websocket's upgrade writes the 101 and
-- switches the framing). In the stream style the connection closes when
-- fn returns; in the callback style fn returns a handler table whose
-- on_message (and on_timeout, on_close) get the conn's later frames.
function App:upgrade(name, fn)
    if type(fn) ~= "function" then error("app:upgrade: a function expected", 2) end
    self.upgrades[lower(name)] = fn
    return self
end

-- The route for req: the method's route and the path's params, or nil
-- and the status to answer (404, 405 with the Allow value, 501).
local function find_route(app, method, path)
    local entry = app.exact[path]
    if entry then
        local r = entry.methods[method] or
                  method == "HEAD" and entry.methods.GET
        if r then return r, NO_PARAMS end
    end
    local allow = entry and entry.allow
    for _, e in ipairs(app.patterns) do
        local caps = { match(path, e.pattern) }
        if caps[1] then
            local r = e.methods[method] or
                      method == "HEAD" and e.methods.GET
            if r then
                local params, names = {}, e.names
                for i, c in ipairs(caps) do
                    if type(c) == "string" then c = decode(c) end
                    params[names and names[i] or i] = c
                end
                return r, params
            end
            allow = allow and allow .. ", " .. e.allow or e.allow
        end
    end
    if not METHODS[method] and not app.used[method] then return nil, 501 end
    if allow then
        -- several entries matched: their methods once each, sorted
        local seen, list = {}, {}
        for m in allow:gmatch("[^, ]+") do
            if not seen[m] then seen[m], list[#list + 1] = true, m end
        end
        sort(list)
        return nil, 405, concat(list, ", ")
    end
    return nil, 404
end

-- Serving --------------------------------------------------------------------

-- Whether req has a Host header. The framer's request keeps its head in
-- req.head and builds req.headers only when first read: a look at the
-- head (a field name starts a line; the framer refuses space before the
-- colon) spares a request that reads no header the headers' tables. The
-- kit sees req first, so the head is what the headers will say. Plain
-- finds first: a pattern, tried at every byte, costs 20 times as much.
local function has_host(req)
    local head = req.head
    if head then
        return find(head, "\nHost:", 1, true) ~= nil or
               find(head, "\n[Hh][Oo][Ss][Tt]:") ~= nil
    end
    return req.headers.host ~= nil
end

-- A status-only answer: "404 Not Found\n". Returns like emit.
local function answer(res, code, allow)
    res.code, res.ctype, res.extra = code, nil, nil
    if allow then res.extra = "Allow: " .. allow .. "\r\n" end
    if code == 400 or code == 408 then res.close = true end
    return emit(res, code .. " " .. (REASONS[code] or "") .. "\n")
end
_M.answer = answer

-- What a route function returned: nothing (the response is in res or
-- empty), a body string (or table of strings), or status, body[,
-- headers] (a table name -> value, or name -> list of values).
local function finish(res, a, b, c)
    if res.done then return true end
    if res.started then return res:finish() end
    if type(a) == "number" then
        res:status(a)
        if c then
            for name, v in pairs(c) do
                if type(v) == "table" then
                    for _, x in ipairs(v) do res:header(name, x) end
                else
                    res:header(name, v)
                end
            end
        end
        a = b
    end
    return res:send(a)
end

-- One route call, protected as a whole: the function and what it returned.
local function run(fn, req, res)
    return finish(res, fn(req, res))
end

local function log_error(req, err)
    luaserv.log.error("http: %s %s: %s", req.method, req.target, err)
end

-- Answers one request on conn. Returns true to read the next request,
-- false to close, or "upgraded" (and the hook's handler table) when an
-- upgrade hook took the conn.
local function serve(app, conn, req, stream)
    if req.upgrade then
        local hook = app.upgrades[req.upgrade]
        if hook then
            local res = new_response(app, conn, req, stream)
            local ok, a, b, c = xpcall(hook, traceback, req, conn)
            if not ok then
                log_error(req, a)
                if conn:is_closed() then return false end
                answer(res, 500)
                return false
            end
            if type(a) ~= "number" then return "upgraded", a end
            finish(res, a, b, c)
            return not res.close
        end
    end
    if req.version == "1.1" and not has_host(req) then
        answer(new_response(app, conn, req, stream), 400)
        return false
    end
    local route, params, allow = find_route(app, req.method, req.path)
    if not route and byte(req.path, 1) ~= 47 then
        -- absolute-form, as sent to proxies: http://host/path
        local path = match(req.path, "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]*(.*)$")
        if path then
            if path == "" then path = "/" end
            req.path = path
            route, params, allow = find_route(app, req.method, path)
        end
    end
    local status
    if not route then
        status = params
    elseif route.body and rawget(req.headers, "content-length") == nil and
           rawget(req.headers, "transfer-encoding") == nil then
        status = 411
    elseif route.max_body and #req.body > route.max_body then
        status = 413
    end
    if status then
        local res = new_response(app, conn, req, stream)
        answer(res, status, allow)
        return not res.close
    end
    req.params = params
    local res, ok, err
    if route.no_res then
        -- fn(req) cannot reach res: a body string answers without one
        local a, b, c
        ok, a, b, c = xpcall(route.fn, traceback, req)
        if ok and b == nil and type(a) == "string" then
            emit_plain(app, conn, req, a, stream)
            return req.keep_alive
        end
        res = new_response(app, conn, req, stream)
        if ok then
            ok, err = xpcall(finish, traceback, res, a, b, c)
        else
            err = a
        end
    else
        res = new_response(app, conn, req, stream)
        ok, err = xpcall(run, traceback, route.fn, req, res)
    end
    if not ok then
        log_error(req, err)
        if res.started or res.done then
            -- the head went out: nothing to do but cut the body short
            conn:close()
            return false
        end
        answer(res, 500)
    end
    return not res.close
end

-- The options for app:handler and http.app.
local function framing_of(opts)
    return { "http", max = opts.max_body, max_head = opts.max_head,
             max_headers = opts.max_headers }
end

-- 408 and a close, for a request that stopped half-way.
local function answer_408(app, conn)
    local res = setmetatable({ app = app, conn = conn, code = 408,
                               req = { version = "1.1" }, close = true },
                             Response)
    answer(res, 408)
    conn:close()
end

-- The idle timeout passed. Mid-request (input buffered and no request
-- yet) the answer is 408 and a close; between requests a silent close.
local function timed_out(app, conn)
    if conn:buffered() > 0 then answer_408(app, conn) end
end

-- The request timeout (opts.request_timeout): the idle timeout restarts
-- at every byte, so a client trickling a request (slowloris) would hold a
-- connection for ever. Each handler keeps its open conns in a weak table,
-- conn -> when a partial request was first seen (false: none; true: a
-- stream-style task is serving a request, its input is not looked at),
-- and one timer
-- looks at them a few times per timeout while any is open: a request
-- still partial after the timeout gets 408 and the close. A stream-style
-- conn counts only while its task waits for a request.
local function watch(app, timeout)
    local live = setmetatable({}, { __mode = "k" })
    local timer
    local step = timeout / 4
    if step > 1 then step = 1 end
    -- conn's entry, since (false or a time), at the time t; a conn whose
    -- request ran out of time goes on the list late
    local function check(conn, since, t, late)
        if conn:buffered() > 0 then
            if not since then
                live[conn] = t
            elseif t - since >= timeout then
                live[conn] = nil
                late[#late + 1] = conn
            end
        elseif since then
            live[conn] = false
        end
    end
    local function sweep()
        local t, any, late = now(), false, nil
        for conn, since in pairs(live) do
            if conn:is_closed() then
                live[conn] = nil
            else
                any = true
                -- true: a stream-style task is serving a request
                if since ~= true then
                    late = late or {}
                    check(conn, since, t, late)
                end
            end
        end
        -- answered after the walk: a write may wait, and conns may come
        -- and go meanwhile
        for _, conn in ipairs(late or {}) do answer_408(app, conn) end
        if not any and timer then
            timer:cancel()
            timer = nil
        end
    end
    return {
        add = function(conn)
            live[conn] = false
            if not timer then timer = luaserv.timer.every(step, sweep) end
        end,
        remove = function(conn) live[conn] = nil end,
        busy = function(conn, busy) live[conn] = busy end,
    }
end

-- The stream style's handle(conn): a loop reading requests.
local function stream_handler(app, handler, idle, watcher)
    function handler.handle(conn)
        if idle then conn:set_timeout(idle) end
        if watcher then watcher.add(conn) end
        while true do
            local req, err = conn:read_frame()
            if not req then
                if err == "timeout" then timed_out(app, conn) end
                break
            end
            if watcher then watcher.busy(conn, true) end
            local keep = serve(app, conn, req, true)
            if keep ~= true then break end
            if watcher then watcher.busy(conn, false) end
        end
        if watcher then watcher.remove(conn) end
    end
    return handler
end

-- An upgraded conn's handler table (callback style), or nil.
local function upgraded(conn)
    local st = conn.state
    return st and st.http_upgraded
end

-- app:handler([opts]) -> the handler table the script returns. Callback
-- style by default; opts.stream = true makes a stream-style one (handle
-- reads requests with conn:read_frame(), and res:write waits for a slow
-- peer). opts.idle_timeout and opts.request_timeout override the app's.
function App:handler(opts)
    opts = opts or {}
    local app = self
    local handler = { framing = framing_of(self.opts) }
    local idle = opts.idle_timeout or self.opts.idle_timeout
    local rt = opts.request_timeout or self.opts.request_timeout
    local watcher = rt and rt > 0 and watch(self, rt)
    if opts.stream then return stream_handler(self, handler, idle, watcher) end
    -- The callback style: each request is one on_message call. An upgraded
    -- conn's frames (not request tables) go to the hook's handler table.
    function handler.on_message(conn, req, ...)
        if type(req) ~= "table" then
            local h = upgraded(conn)
            if h and h.on_message then return h.on_message(conn, req, ...) end
            return
        end
        filled = false
        local keep, h = serve(app, conn, req)
        collecting = nil
        if keep == true then
            if filled then
                -- indexed in the VM: cheaper than unpack's 9 lua_geti
                return OUT[1], OUT[2], OUT[3], OUT[4], OUT[5], OUT[6],
                       OUT[7], OUT[8], OUT[9]
            end
            return
        end
        if keep == "upgraded" then
            if watcher then watcher.remove(conn) end
            if type(h) == "table" then
                conn.state.http_upgraded = h
                return
            end
            luaserv.log.warn("http: the %s upgrade hook returned no handler " ..
                             "table (callback style); closing", req.upgrade)
        end
        conn:close()
        if filled then return OUT end
    end
    function handler.on_timeout(conn)
        local h = upgraded(conn)
        if h then
            if h.on_timeout then return h.on_timeout(conn) end
            return
        end
        timed_out(app, conn)
    end
    if idle or watcher then
        function handler.on_connect(conn)
            if idle then conn:set_timeout(idle) end
            if watcher then watcher.add(conn) end
        end
    end
    if watcher or next(self.upgrades) then
        function handler.on_close(conn, reason)
            if watcher then watcher.remove(conn) end
            local h = upgraded(conn)
            if h and h.on_close then return h.on_close(conn, reason) end
        end
    end
    return handler
end

-- http.app([opts]) -> an application: routes, then app:handler().
-- opts: server (the Server header, default "luaserv/<version>"; false for
-- none), max_body (default 1 MiB), max_head (request line and headers,
-- default 64 KiB), max_headers (default 100), idle_timeout (seconds),
-- request_timeout (seconds a request may take to arrive whole; off by
-- default).
function _M.app(opts)
    opts = opts or {}
    local server = opts.server
    if server == nil then server = "luaserv/" .. luaserv.version end
    return setmetatable({
        opts = opts, exact = {}, patterns = {}, used = {}, upgrades = {},
        server_line = server and "Server: " .. server .. "\r\n" or "",
    }, App)
end

_M.App = App
_M.serve = serve

-- Static files ---------------------------------------------------------------

_M.MIME = {
    html = "text/html; charset=utf-8", htm = "text/html; charset=utf-8",
    txt = "text/plain; charset=utf-8", css = "text/css; charset=utf-8",
    js = "text/javascript; charset=utf-8", mjs = "text/javascript; charset=utf-8",
    json = "application/json", xml = "application/xml",
    svg = "image/svg+xml", png = "image/png", jpg = "image/jpeg",
    jpeg = "image/jpeg", gif = "image/gif", webp = "image/webp",
    ico = "image/x-icon", pdf = "application/pdf", wasm = "application/wasm",
    woff = "font/woff", woff2 = "font/woff2", mp4 = "video/mp4",
    md = "text/markdown; charset=utf-8", lua = "text/plain; charset=utf-8",
}

-- The Content-Type for a file name, by its extension.
function _M.mime_type(name)
    local ext = match(name, "%.([%w]+)$")
    return ext and _M.MIME[lower(ext)] or "application/octet-stream"
end

-- http.static(root[, opts]) -> a route function serving files under the
-- folder root for a route ending in "*" (app:get("/static/*",
-- http.static("public"))). A path with a ".." segment, a NUL byte or a
-- backslash gets 403; a name beginning with "." 404; a missing file or a
-- folder 404; "dir/" serves dir/index.html (opts.index). Symbolic links
-- are followed: keep the folder free of links out of it.
function _M.static(root, opts)
    opts = opts or {}
    local index = opts.index or "index.html"
    root = gsub(root, "/+$", "")
    return function(req, res)
        local rel = req.params["*"] or req.params[1] or ""
        if find(rel, "[%z\\]") then return 403, "403 Forbidden\n" end
        for seg in rel:gmatch("[^/]+") do
            if seg == ".." then return 403, "403 Forbidden\n" end
            if byte(seg, 1) == 46 then return 404, "404 Not Found\n" end
        end
        if rel == "" or sub(rel, -1) == "/" then rel = rel .. index end
        local path = root .. "/" .. rel
        local ok = res:sendfile(path, _M.mime_type(rel))
        if not ok and not res.done then return 404, "404 Not Found\n" end
    end
end

return _M

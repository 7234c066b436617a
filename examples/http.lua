-- examples/http.lua: a small HTTP/1.1 server in stream style.
--
-- Every connection runs handle(conn) as its own task and reads requests
-- with conn:readline() (the request line, then header fields up to the
-- empty line) and conn:read(n) (a body of Content-Length bytes). The
-- connection stays open for the next request (HTTP/1.1 by default, HTTP/1.0
-- with "Connection: keep-alive") until the client asks to close, an error
-- response, or IDLE_TIMEOUT seconds without a request; requests pipelined
-- in one write are answered in order.
--
--   GET  /              a greeting
--   GET  /time          the server's ctime()
--   GET  /hello/NAME    "Hello, NAME!" (NAME percent-decoded)
--   POST /echo          the request body, echoed with its Content-Type
--   GET  /stats         luaserv.stats(), one "name value" line each
--
-- HEAD works wherever GET does. 404 (no route), 405 (a known path, another
-- method; with Allow) and 501 (a method HTTP does not define) keep the
-- connection open. These errors close it: 400 a malformed request line,
-- header field or Content-Length, or no Host in HTTP/1.1; 408 a request
-- not complete within the timeouts (below), trickled or not; 411
-- Transfer-Encoding: chunked (only Content-Length bodies are read); 501
-- any other transfer coding; 413 a body over MAX_BODY; 414 a request line over MAX_LINE; 431 a header line
-- over MAX_LINE, or the header section over MAX_HEAD bytes or MAX_FIELDS
-- fields; 505 an HTTP version other than 1.x.
--
-- Run: build/luaserv -l 127.0.0.1:8080 examples/http.lua
-- Environment: HTTP_IDLE_TIMEOUT, the seconds a read may wait without
-- input (default 15), and HTTP_REQUEST_TIMEOUT, the seconds one request
-- may take to arrive in all, waiting for it included (default 30).
local luaserv = require "luaserv"

local char = string.char
local concat = table.concat
local find = string.find
local floor = math.floor
local format = string.format
local match = string.match
local ipairs = ipairs
local min = math.min
local pairs = pairs
local sort = table.sort
local sub = string.sub
local tonumber = tonumber
local tostring = tostring
local type = type
local unpack = table.unpack

local MAX_LINE = 8192               -- request line, and each header line
local MAX_HEAD = 65536              -- the whole header section
local MAX_FIELDS = 100
local MAX_BODY = 1024 * 1024
local MAX_DRAIN = 16 * 1024 * 1024  -- unwanted body read before closing
local IDLE_TIMEOUT = tonumber(os.getenv("HTTP_IDLE_TIMEOUT")) or 15
-- A read's timeout counts seconds without input, so a client trickling
-- its request a byte at a time would hold a connection for ever
-- (slowloris): each request also has this long in all, counted from when
-- the connection starts waiting for it.
local REQUEST_TIMEOUT = tonumber(os.getenv("HTTP_REQUEST_TIMEOUT")) or 30
local SERVER = "luaserv/" .. luaserv.version

local REASONS = {
    [100] = "Continue", [200] = "OK", [400] = "Bad Request",
    [404] = "Not Found", [405] = "Method Not Allowed",
    [408] = "Request Timeout", [411] = "Length Required",
    [413] = "Content Too Large", [414] = "URI Too Long",
    [431] = "Request Header Fields Too Large", [501] = "Not Implemented",
    [505] = "HTTP Version Not Supported",
}

-- RFC 9110 token characters: methods and field names.
local TOKEN = "^[%w!#$%%&'*+%-.^_`|~]+$"

-- Date: an IMF-fixdate, formatted once a second.
local date_sec, date_str
local function http_date()
    local now = floor(luaserv.now())
    if now ~= date_sec then
        date_sec, date_str = now, os.date("!%a, %d %b %Y %H:%M:%S GMT", now)
    end
    return date_str
end

-- s without leading and trailing characters outside the class `keep` (a
-- pattern item such as "%S"). Linear: the obvious s:match("^%s*(.-)%s*$")
-- retries the rest of the string at each character of an inner run of
-- spaces, and an 8 KB header line of them costs half a second of CPU.
local function trim(s, keep)
    local i = find(s, keep)
    if not i then return "" end
    return match(s, "^.*" .. keep, i)
end

local function percent_decode(s)
    return (s:gsub("%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

-- Does a comma-separated field value list the token (case-insensitive)?
local function has_token(value, token)
    for item in (value or ""):gmatch("[^,]+") do
        if trim(item, "%S"):lower() == token then return true end
    end
    return false
end

-- Responses -----------------------------------------------------------------

-- Queues one response. headers is a flat list { name, value, ... }; req is
-- nil for a request that could not be parsed. Content-Length is always the
-- body's length; a HEAD response leaves the body out.
local function respond(conn, req, status, body, headers, close)
    body = body or ""
    local out = {
        format("HTTP/1.1 %d %s\r\n", status, REASONS[status]),
        "Date: ", http_date(), "\r\n",
        "Server: ", SERVER, "\r\n",
        "Content-Length: ", #body, "\r\n",
    }
    headers = headers or { "Content-Type", "text/plain; charset=utf-8" }
    for i = 1, #headers, 2 do
        out[#out + 1] = headers[i] .. ": " .. headers[i + 1] .. "\r\n"
    end
    if close then
        out[#out + 1] = "Connection: close\r\n"
    elseif req.minor == 0 then
        out[#out + 1] = "Connection: keep-alive\r\n"
    end
    out[#out + 1] = "\r\n"
    if req and req.method == "HEAD" then body = "" end
    conn:write(concat(out), body)
end

-- A status-only response: a short text body, and Allow for a 405.
local function answer(conn, req, status, close, allow)
    local headers = { "Content-Type", "text/plain; charset=utf-8" }
    if allow then
        headers[3], headers[4] = "Allow", allow
    end
    respond(conn, req, status, status .. " " .. REASONS[status] .. "\n",
            headers, close)
end

-- An error response, which always closes the connection.
local function fail(conn, req, status)
    answer(conn, req, status, true)
end

-- Reads and drops n bytes of an unwanted body, so that closing with them
-- unread does not reset the connection before the client read our answer.
local function drain(conn, n)
    n = min(n, MAX_DRAIN)
    while n > 0 do
        local data = conn:read(min(n, 65536))
        if not data or data == "" then return end
        n = n - #data
    end
end

-- Routes --------------------------------------------------------------------

-- Each route: a Lua pattern for the path (its captures, percent-decoded,
-- are passed on) and a function per method. A function gets (req, ...)
-- and returns status, body[, headers].
local ROUTES = {
    { "^/$", GET = function()
        return 200, "Hello from luaserv! Try /time, /hello/NAME, " ..
                    "POST /echo or /stats.\n"
    end },
    { "^/time$", GET = function()
        return 200, luaserv.ctime() .. "\n"
    end },
    { "^/hello/([^/]+)$", GET = function(_, name)
        return 200, "Hello, " .. name .. "!\n"
    end },
    { "^/echo$", POST = function(req)
        return 200, req.body, {
            "Content-Type", req.fields["content-type"] or
                            "application/octet-stream" }
    end },
    { "^/stats$", GET = function()
        local lines = {}
        for name, value in pairs(luaserv.stats()) do
            lines[#lines + 1] = name .. " " .. tostring(value) .. "\n"
        end
        sort(lines)
        return 200, concat(lines)
    end },
}

-- HEAD goes wherever GET does; Allow lists a route's methods.
for _, r in ipairs(ROUTES) do
    if r.GET and not r.HEAD then r.HEAD = r.GET end
    local methods = {}
    for k in pairs(r) do
        if type(k) == "string" then methods[#methods + 1] = k end
    end
    sort(methods)
    r.allow = concat(methods, ", ")
end

local METHODS = { GET = true, HEAD = true, POST = true, PUT = true,
                  DELETE = true, CONNECT = true, OPTIONS = true, TRACE = true,
                  PATCH = true }

-- Returns the method's function and the path's decoded captures, or nil
-- and 501, 404, or 405 and the Allow value.
local function route(method, path)
    if not METHODS[method] then return nil, 501 end
    for _, r in ipairs(ROUTES) do
        local captures = { path:match(r[1]) }
        if captures[1] then
            local fn = r[method]
            if not fn then return nil, 405, r.allow end
            if r[1]:find("(", 1, true) then
                for i, c in ipairs(captures) do
                    captures[i] = percent_decode(c)
                end
            else
                captures = {}
            end
            return fn, captures
        end
    end
    return nil, 404
end

-- Requests ------------------------------------------------------------------

-- Reads a request line and header fields. Returns the request, or nil and
-- the status to answer with (nil when the connection just ended or went
-- idle between requests: it closes without an answer).
local function read_head(conn, state)
    local line, err
    repeat  -- RFC 9112 2.2: empty lines before a request line are ignored
        line, err = conn:readline()
    until line ~= ""
    if not line then
        if err == "too long" then return nil, 414 end
        return nil
    end
    local method, target, major, minor =
        line:match("^(%S+) (%S+) HTTP/(%d)%.(%d)$")
    if not method or not method:match(TOKEN) then return nil, 400 end
    if major ~= "1" then return nil, 505 end
    local path
    if target:sub(1, 1) == "/" then
        path = target
    else  -- absolute-form, as sent to proxies: http://host/path
        path = target:match("^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]*(.*)$")
        if not path then return nil, 400 end
        if path == "" then path = "/" end
    end
    local req = { method = method, target = target, minor = tonumber(minor),
                  path = path:match("^[^?#]*"), fields = {} }
    state.req = req
    local fields, count, size = req.fields, 0, #line
    while true do
        line, err = conn:readline()
        if not line then
            if err == "too long" then return nil, 431, req end
            if err == "timeout" then return nil, 408, req end
            return nil
        end
        if line == "" then break end
        count, size = count + 1, size + #line + 2
        if count > MAX_FIELDS or size > MAX_HEAD then return nil, 431, req end
        -- no space before the colon, no obs-fold continuation lines
        local colon = find(line, ":", 1, true)
        local name = colon and sub(line, 1, colon - 1)
        if not name or not name:match(TOKEN) then return nil, 400, req end
        local value = trim(sub(line, colon + 1), "[^ \t]")
        name = name:lower()
        local old = fields[name]
        fields[name] = old and (old .. ", " .. value) or value
    end
    if req.minor >= 1 and (not fields.host or fields.host:find(",")) then
        return nil, 400, req
    end
    return req
end

-- The body length from Content-Length: a number, or nil and a status.
local function body_length(req)
    local te = req.fields["transfer-encoding"]
    if te then
        -- the last coding: what follows the last comma or space
        te = trim(te, "%S")
        local last = sub(te, match(te, "^.*[,%s]()") or 1)
        if last == "" then last = nil end
        return nil, last and last:lower() == "chunked" and 411 or 501
    end
    local cl = req.fields["content-length"]
    if not cl then return 0 end
    -- repeated fields ("5, 5") must agree
    local first
    for item in cl:gmatch("[^,]+") do
        item = item:match("^%s*(%d+)%s*$")
        if not item or (first and item ~= first) then return nil, 400 end
        first = item
    end
    if not first then return nil, 400 end
    if #first > 15 then return nil, 413 end
    return tonumber(first)
end

-- Answers one parsed request; returns true to keep the connection open.
-- state.answered: an error went out before the body was read; state.done:
-- the request has been read whole.
local function serve(conn, req, state)
    local length, status = body_length(req)
    if not length then
        fail(conn, req, status)
        return false
    end
    -- a client that sent "Expect: 100-continue" waits before its body
    local expect = req.minor >= 1 and
                   has_token(req.fields.expect, "100-continue")
    if length > MAX_BODY then
        state.answered = true
        fail(conn, req, 413)
        if not expect then drain(conn, length) end
        return false
    end
    -- found: the path's captures, or (no fn) the error status
    local fn, found, allow = route(req.method, req.path)
    if not fn and length > 0 and expect then
        answer(conn, req, found, true, allow)  -- no use sending the body
        return false
    end
    req.body = ""
    if length > 0 then
        if expect then conn:write("HTTP/1.1 100 Continue\r\n\r\n") end
        local body, err = conn:read(length)
        if not body or #body < length then
            if err == "timeout" then fail(conn, req, 408) end
            return false
        end
        req.body = body
    end
    state.done = true
    local keep
    if req.minor >= 1 then
        keep = not has_token(req.fields.connection, "close")
    else
        keep = has_token(req.fields.connection, "keep-alive")
    end
    if not fn then
        answer(conn, req, found, not keep, allow)
    else
        local body, headers
        status, body, headers = fn(req, unpack(found))
        respond(conn, req, status, body, headers, not keep)
    end
    return keep
end

local handler = { framing = { "line", max = MAX_LINE } }

-- Starts the timer that bounds reading one request (REQUEST_TIMEOUT):
-- before a request line it closes the connection, during the head or the
-- body it answers 408 and closes, after an early error answer (while an
-- unwanted body drains) it closes. Once the request is read it does
-- nothing: writes have the idle timeout.
local function watch(conn, state)
    return luaserv.timer.after(REQUEST_TIMEOUT, function()
        if state.done then return end
        if state.req and not state.answered then fail(conn, state.req, 408) end
        conn:close()
    end)
end

function handler.handle(conn)
    while true do
        conn:set_timeout(IDLE_TIMEOUT)
        local state = {}
        local timer = watch(conn, state)
        local req, status, partial = read_head(conn, state)
        local keep = false
        if not req then
            if status then fail(conn, partial, status) end
        else
            keep = serve(conn, req, state)
        end
        timer:cancel()
        if not keep then return end
    end
end

return handler

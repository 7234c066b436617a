-- examples/http.lua: an HTTP/1.1 server on luaserv.http.
--
-- The C framer (framing "http") parses each request, head and body
-- (Content-Length or chunked, decoded), and answers the malformed ones
-- itself; luaserv.http routes the request table to these functions and
-- writes the responses (Date, Server, Content-Length or chunks, keep-alive
-- as the request asks, HEAD wherever GET works, 404 / 405 / 500).
--
--   GET  /              "hello" (the benchmark route)
--   GET  /time          the server's ctime()
--   GET  /hello/:name   "Hello, NAME!" (NAME percent-decoded)
--   POST /echo          the request body, echoed with its Content-Type
--                       (chunked request bodies too; 411 without a body)
--   GET  /json          a JSON object (lua-cjson; 501 when not installed)
--   GET  /stream?n=N    N lines as a chunked body, written one by one
--   GET  /stats         luaserv.stats(), one "name value" line each
--   GET  /static/*      files from examples/static/ (HTTP_STATIC), with
--                       a Content-Type by extension; "..": 403
--
-- Run: build/luaserv -l 127.0.0.1:8080 examples/http.lua
-- Environment: HTTP_STYLE=stream serves in the stream style (a task per
-- connection; res:write waits for a slow reader), the default is the
-- callback style; HTTP_IDLE_TIMEOUT, the seconds a connection may stay
-- idle (default 15; in the middle of a request: 408); HTTP_REQUEST_TIMEOUT,
-- the seconds a request may take to arrive whole, however it trickles in
-- (default 30; then 408); HTTP_STATIC, the folder /static/ serves.
local luaserv = require "luaserv"
local http = require "luaserv.http"

local concat = table.concat
local pairs = pairs
local sort = table.sort
local tonumber = tonumber
local tostring = tostring

local has_cjson = pcall(require, "cjson")
local HERE = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local STATIC = os.getenv("HTTP_STATIC") or HERE .. "static"
local STREAM = os.getenv("HTTP_STYLE") == "stream"
local IDLE_TIMEOUT = tonumber(os.getenv("HTTP_IDLE_TIMEOUT")) or 15
local REQUEST_TIMEOUT = tonumber(os.getenv("HTTP_REQUEST_TIMEOUT")) or 30
local MAX_LINES = 100000

local app = http.app{ max_body = 1024 * 1024, idle_timeout = IDLE_TIMEOUT,
                      request_timeout = REQUEST_TIMEOUT }

app:get("/", function()
    return "hello"
end)

app:get("/time", function()
    return luaserv.ctime() .. "\n"
end)

app:get("/hello/:name", function(req)
    return "Hello, " .. req.params.name .. "!\n"
end)

-- { body = true }: a POST with neither Content-Length nor a chunked body
-- gets 411.
app:post("/echo", function(req, res)
    res:header("Content-Type", req.headers["content-type"] or
                               "application/octet-stream")
    return req.body
end, { body = true })

app:get("/json", function(req, res)
    if not has_cjson then
        return 501, "lua-cjson is not installed (apt install lua-cjson)\n"
    end
    res:json{ time = luaserv.now(), path = req.path,
              query = http.parse_query(req.query),
              user_agent = req.headers["User-Agent"] }
end)

-- A body of unknown length: each res:write is one chunk. In the stream
-- style a write waits while the client is slow to read.
app:get("/stream", function(req, res)
    local n = tonumber(http.parse_query(req.query).n) or 5
    if n < 0 or n > MAX_LINES then return 400, "n: 0 to 100000\n" end
    for i = 1, n do
        if not res:write("line " .. i .. "\n") then return end
    end
end)

app:get("/stats", function()
    local lines = {}
    for name, value in pairs(luaserv.stats()) do
        lines[#lines + 1] = name .. " " .. tostring(value) .. "\n"
    end
    sort(lines)
    return concat(lines)
end)

app:get("/static/*", http.static(STATIC))

return app:handler{ stream = STREAM }

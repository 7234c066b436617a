-- luaserv.metrics: handler-defined Prometheus metrics, and the handler
-- behind --metrics HOST:PORT that serves GET /metrics in the text
-- exposition format (the core's metrics, then these).
--
--   local hits = luaserv.metrics.counter("myapp_hits_total", "Lines seen.")
--   hits:inc()                      -- or hits:inc(n, { kind = "x" })
--
-- A counter's name must end in _total, and inc/dec/set/observe take the
-- number first and the labels second (or the labels alone for inc/dec):
-- anything else raises, rather than count something the caller did not
-- mean.
--   local g = luaserv.metrics.gauge("myapp_queue", "Queued jobs.")
--   g:set(5); g:inc(); g:dec(2)
--   local h = luaserv.metrics.histogram("myapp_seconds", "Work time.",
--                                       { 0.01, 0.1, 1 })
--   h:observe(0.05)
--
-- Creating a metric that exists returns the existing one, so a script can
-- create its metrics at load and keep their values across reloads.
local concat = table.concat
local error = error
local format = string.format
local ipairs = ipairs
local math_type = math.type
local pairs = pairs
local setmetatable = setmetatable
local sort = table.sort
local tostring = tostring
local type = type

local _M = {}

local registry = {}     -- name -> metric
local order = {}        -- names in creation order

local NAME = "^[a-zA-Z_:][a-zA-Z0-9_:]*$"
local DEFAULT_BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }

local function escape(v)
    return (tostring(v):gsub("[\\\"\n]", { ["\\"] = "\\\\", ["\""] = "\\\"",
                                          ["\n"] = "\\n" }))
end

-- The label set as "{a=\"1\",b=\"2\"}", sorted, or "" for none.
local function label_key(labels)
    if labels == nil then return "" end
    local keys = {}
    for k in pairs(labels) do
        if type(k) ~= "string" or not k:match("^[a-zA-Z_][a-zA-Z0-9_]*$") then
            error("bad label name " .. tostring(k), 3)
        end
        keys[#keys + 1] = k
    end
    if #keys == 0 then return "" end
    sort(keys)
    local parts = {}
    for i, k in ipairs(keys) do parts[i] = format('%s="%s"', k, escape(labels[k])) end
    return "{" .. concat(parts, ",") .. "}"
end

local Metric = {}
Metric.__index = Metric

local function new(kind, name, help, extra)
    if type(name) ~= "string" or not name:match(NAME) then
        error("metric name must match [a-zA-Z_:][a-zA-Z0-9_:]*", 3)
    end
    local m = registry[name]
    if m then
        if m.kind ~= kind then
            error(format("metric %s exists as a %s", name, m.kind), 3)
        end
        return m
    end
    m = setmetatable({ kind = kind, name = name, help = help or name,
                       values = {}, extra = extra }, Metric)
    registry[name] = m
    order[#order + 1] = name
    return m
end

function _M.counter(name, help)
    if type(name) == "string" and name:match(NAME) and not name:match("_total$") then
        error(format("counter %s: a counter's name must end in _total "
                     .. "(the Prometheus naming rule), as %s_total", name, name), 2)
    end
    return new("counter", name, help)
end
function _M.gauge(name, help) return new("gauge", name, help) end

function _M.histogram(name, help, buckets)
    buckets = buckets or DEFAULT_BUCKETS
    for i = 2, #buckets do
        if buckets[i] <= buckets[i - 1] then
            error("histogram buckets must increase", 2)
        end
    end
    return new("histogram", name, help, buckets)
end

-- Checks the (n, labels) arguments of inc, dec, set and observe: n a
-- number (or nil where one_ok), labels a table or nil. The labels alone
-- are accepted for inc and dec; labels first and a number second is the
-- wrong order and raises instead of counting 1.
local function args(what, n, labels, one_ok)
    if type(n) == "table" then
        if labels ~= nil or not one_ok then
            error(format("%s(n, labels): the number comes first, then the "
                         .. "labels table (got a table, then %s)", what,
                         type(labels)), 3)
        end
        return 1, n
    end
    if n == nil and one_ok then n = 1 end
    if math_type(n) == nil then
        error(format("%s(n, labels): n must be a number, not %s", what,
                     type(n)), 3)
    end
    if labels ~= nil and type(labels) ~= "table" then
        error(format("%s(n, labels): labels must be a table, not %s", what,
                     type(labels)), 3)
    end
    return n, labels
end

function Metric:inc(n, labels)
    n, labels = args(self.name .. ":inc", n, labels, true)
    if self.kind == "counter" and n < 0 then
        error("a counter only goes up", 2)
    end
    local k = label_key(labels)
    self.values[k] = (self.values[k] or 0) + n
end

function Metric:dec(n, labels)
    if self.kind ~= "gauge" then error("only a gauge goes down", 2) end
    n, labels = args(self.name .. ":dec", n, labels, true)
    local k = label_key(labels)
    self.values[k] = (self.values[k] or 0) - n
end

function Metric:set(v, labels)
    if self.kind ~= "gauge" then error("only a gauge is set", 2) end
    v, labels = args(self.name .. ":set", v, labels, false)
    self.values[label_key(labels)] = v
end

function Metric:observe(v, labels)
    if self.kind ~= "histogram" then error("only a histogram observes", 2) end
    v, labels = args(self.name .. ":observe", v, labels, false)
    local k = label_key(labels)
    local h = self.values[k]
    if not h then
        h = { counts = {}, sum = 0, count = 0 }
        for i = 1, #self.extra do h.counts[i] = 0 end
        self.values[k] = h
    end
    for i, le in ipairs(self.extra) do
        if v <= le then h.counts[i] = h.counts[i] + 1 end
    end
    h.sum = h.sum + v
    h.count = h.count + 1
end

-- Adds le to a label key.
local function with_le(k, le)
    if k == "" then return format('{le="%s"}', le) end
    return k:sub(1, -2) .. format(',le="%s"}', le)
end

local function number(v)
    if v == math.huge then return "+Inf" end
    if v == -math.huge then return "-Inf" end
    if v ~= v then return "NaN" end
    return format("%.17g", v)
end

-- _M.render() -> the handler-defined metrics in the text format.
function _M.render()
    local out = {}
    for _, name in ipairs(order) do
        local m = registry[name]
        out[#out + 1] = format("# HELP %s %s\n# TYPE %s %s\n", name,
                               m.help:gsub("\\", "\\\\"):gsub("\n", "\\n"),
                               name, m.kind)
        local keys = {}
        for k in pairs(m.values) do keys[#keys + 1] = k end
        sort(keys)
        for _, k in ipairs(keys) do
            local v = m.values[k]
            if m.kind == "histogram" then
                for i, le in ipairs(m.extra) do
                    out[#out + 1] = format("%s_bucket%s %d\n", name,
                                           with_le(k, number(le)), v.counts[i])
                end
                out[#out + 1] = format("%s_bucket%s %d\n%s_sum%s %s\n%s_count%s %d\n",
                                       name, with_le(k, "+Inf"), v.count,
                                       name, k, number(v.sum), name, k, v.count)
            else
                out[#out + 1] = format("%s%s %s\n", name, k, number(v))
            end
        end
    end
    return concat(out)
end

-- _M.draining_text() -> the luaserv_draining gauge in the text format:
-- 1 once a stop or an upgrade began (core.draining()), else 0.
function _M.draining_text()
    local core = require "luaserv.core"
    return "# HELP luaserv_draining Whether a stop or an upgrade began "
        .. "(GET /healthz answers 503).\n# TYPE luaserv_draining gauge\n"
        .. format("luaserv_draining %d\n", core.draining() and 1 or 0)
end

-- The --metrics endpoint: a small HTTP/1.1 server for GET (and HEAD)
-- /metrics and /healthz; with { health_only = true } (--health) for
-- /healthz alone. /healthz answers 200 "ok" while serving and 503
-- "draining" once a stop or an upgrade began; while draining, every
-- answer closes its connection, so a probe does not hold the stop.
-- Each request, from the moment the handler waits for it, has
-- REQUEST_SECONDS in all to arrive: every readline waits only for what is
-- left, so a client that trickles its headers one line at a time (a
-- slowloris) is cut off then, not kept forever. A request with more than
-- MAX_HEADERS header lines is refused.
local REQUEST_SECONDS = 30
local MAX_HEADERS = 100

-- Whether target is path, alone or with a query.
local function is_path(target, path)
    return target == path or target:sub(1, #path + 1) == path .. "?"
end

function _M.http_handler(opts)
    local core = require "luaserv.core"
    local luaserv = require "luaserv"
    local health_only = opts ~= nil and opts.health_only
    local home = health_only and "/healthz" or "/metrics"
    local handler = {}

    -- The exposition: this process's, or a --workers master's: every
    -- worker's merged (luaserv.control).
    local function text()
        if luaserv.worker.id == 0 and core.control() then
            return require("luaserv.control").metrics() .. _M.draining_text()
        end
        return core.metrics() .. core.process_metrics() .. _M.render()
            .. _M.draining_text()
    end

    -- Sends the status line and headers, and the body unless head (a HEAD
    -- request gets the GET's headers, Content-Length included, and no
    -- body, as RFC 9110 9.3.2 says); close adds "Connection: close".
    local function respond(conn, status, body, head, ctype, close)
        local hdr = format("HTTP/1.1 %s\r\nContent-Type: %s\r\n"
                           .. "Content-Length: %d\r\n%s\r\n", status,
                           ctype or "text/plain; charset=utf-8", #body,
                           close and "Connection: close\r\n" or "")
        if head then conn:write(hdr) else conn:write(hdr, body) end
    end

    -- Reads one line before the deadline: the line, or nil.
    local function readline(conn, deadline)
        local left = deadline - luaserv.now()
        if left <= 0 then return nil end
        conn:set_timeout(left)
        return conn:readline()
    end

    function handler.handle(conn)
        while true do
            local deadline = luaserv.now() + REQUEST_SECONDS
            local line = readline(conn, deadline)
            if not line then return end
            local method, target, version = line:match("^(%u+) (%S+) HTTP/(%d%.%d)$")
            local close = version == "1.0"
            local n = 0
            repeat
                local h = readline(conn, deadline)
                if not h then return end
                if h:lower():match("^connection:%s*close") then close = true end
                n = n + 1
            until h == "" or n > MAX_HEADERS
            local head = method == "HEAD"
            local draining = core.draining()
            if n > MAX_HEADERS then
                respond(conn, "431 Request Header Fields Too Large",
                        "too many header lines\n", head)
                return
            elseif not method then
                respond(conn, "400 Bad Request", "bad request\n")
                return
            elseif method ~= "GET" and not head then
                respond(conn, "405 Method Not Allowed", "GET " .. home .. "\n",
                        false, nil, draining)
            elseif is_path(target, "/healthz") then
                if draining then
                    respond(conn, "503 Service Unavailable", "draining\n", head,
                            nil, true)
                else
                    respond(conn, "200 OK", "ok\n", head)
                end
            elseif not health_only and is_path(target, "/metrics") then
                respond(conn, "200 OK", text(), head,
                        "text/plain; version=0.0.4; charset=utf-8", draining)
            else
                respond(conn, "404 Not Found", "try " .. home .. "\n", head, nil,
                        draining)
            end
            if close or draining then return end
        end
    end

    return handler
end

return _M

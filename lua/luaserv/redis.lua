-- luaserv.redis: a client for Redis (or any RESP2 server) in the stream
-- style. It runs in a task (handle(conn), luaserv.spawn, a timer,
-- on_load): luaserv.connect, then the conn's framing is set to
-- { "resp", client = true } so that conn:read_frame() returns one reply
-- decoded in C (a string, an integer, { err = "..." }, luaserv.null or a
-- table of those, nested). Commands go out as RESP multibulks, a pipeline
-- as one write. Network failures (refused, timeout, the server gone)
-- return nil, err and close the client; caller bugs (a table as an
-- argument, one client used by two tasks at once) raise.
local luaserv = require "luaserv"

local error = error
local pcall = pcall
local select = select
local setmetatable = setmetatable
local tonumber = tonumber
local tostring = tostring
local unpack = table.unpack
local type = type
local math_type = math.type
local remove = table.remove
local upper = string.upper

local _M = {}

-- A null reply inside an array or a pipeline's results (a top-level null
-- reply to r:call is plain nil).
local null = luaserv.null
_M.null = null

local DEFAULT_TIMEOUT = 5        -- seconds, every connect, read and write
local DEFAULT_POOL_SIZE = 16     -- idle clients a pool keeps
local DEFAULT_IDLE_TIMEOUT = 60  -- seconds an idle pooled client lives
local DEFAULT_CHECK_IDLE = 1     -- seconds idle before get() checks it
-- The read timeout of that check: the conn has read the server's end of
-- stream already, if there was one, so one loop turn tells.
local PROBE_TIMEOUT = 1e-6
-- Arguments up to this size are copied into their header's string; a
-- bigger one goes to conn:write as its own piece, never copied in Lua.
local INLINE_ARG = 4096

-- Commands whose replies put the connection in push mode: r:call cannot
-- pair their replies with requests; r:subscribe can.
local PUSH_MODE = { SUBSCRIBE = true, PSUBSCRIBE = true, SSUBSCRIBE = true,
                    UNSUBSCRIBE = true, PUNSUBSCRIBE = true,
                    SUNSUBSCRIBE = true }

-- Appends the RESP multibulk for the command (args[1..n]) to out, as
-- pieces for conn:write. Raises for an argument that is neither a string
-- nor a number (a caller bug), at the user's level.
local function encode(out, n, ...)
    local argc = select("#", ...)
    if argc == 0 then error("redis: a command needs a name", 3) end
    n = n + 1
    out[n] = "*" .. argc .. "\r\n"
    for i = 1, argc do
        local a = select(i, ...)
        local t = type(a)
        if t == "number" then
            a = math_type(a) == "integer" and tostring(a)
                or string.format("%.17g", a)
        elseif t ~= "string" then
            error("redis: argument #" .. i .. " is a " .. t ..
                  " (strings and numbers only)", 3)
        end
        local len = #a
        if len <= INLINE_ARG then
            n = n + 1
            out[n] = "$" .. len .. "\r\n" .. a .. "\r\n"
        else
            out[n + 1] = "$" .. len .. "\r\n"
            out[n + 2] = a
            out[n + 3] = "\r\n"
            n = n + 3
        end
    end
    return n
end

-- __index for clients and pipelines: methods first, then any other name
-- becomes a command: r:get(k) is r:call("get", k). The functions are
-- made once per name.
local function command_index(methods)
    local made = {}
    return function(_, name)
        local m = methods[name]
        if m ~= nil then return m end
        if type(name) ~= "string" then return nil end
        m = made[name]
        if m == nil then
            m = function(self, ...) return self:call(name, ...) end
            made[name] = m
        end
        return m
    end
end

-- Client -------------------------------------------------------------------

local Client = {}
local client_mt = { __index = command_index(Client) }

-- Closes the client after a network failure and returns nil, err; the
-- next call says nil, "closed".
local function fail(self, err)
    local conn = self.conn
    self.conn = false
    self.busy = false
    if conn then conn:close() end
    return nil, err or "closed"
end

-- The conn for a call, or nil when the client is closed. Raises for a
-- client another task (or an unfinished pipeline or subscribe of its own)
-- is using, and for one already given back to its pool.
local function take(self, level)
    if self.pooled then
        error("redis: this client was given back to its pool", level + 1)
    end
    if self.busy then
        error("redis: this client is busy (in use by another task, or in "
              .. "its own pipeline or subscribe)", level + 1)
    end
    return self.conn
end

-- Remembers what a command left on the connection that a pool must not
-- hand to the next user (a MULTI, a WATCH, another db, a MONITOR).
local function track(self, name, v, ...)
    local u = upper(name)
    if u == "SELECT" then
        -- From a pipeline the db is not known here: -1 (a pool closes it).
        self.db = select("#", ...) > 0 and tonumber((...)) or -1
    elseif u == "MULTI" then
        self.in_multi = true
    elseif u == "EXEC" or u == "DISCARD" then
        self.in_multi, self.watching = false, false
    elseif u == "WATCH" then
        self.watching = true
    elseif u == "UNWATCH" then
        self.watching = false
    elseif u == "MONITOR" or u == "CLIENT" or u == "RESET" then
        -- CLIENT REPLY OFF / TRACKING and RESET change the session.
        -- From a pipeline the subcommand is not known here: dirty.
        local sub = u == "CLIENT" and select("#", ...) > 0
                    and upper(tostring((...))) or "?"
        if u ~= "CLIENT" or sub == "REPLY" or sub == "TRACKING"
                or sub == "SETNAME" or sub == "?" then
            self.dirty = true
        end
    elseif u == "QUIT" then
        fail(self, "closed")
    end
    return v
end

-- r:call(cmd, ...) -> reply | nil (a null reply) | nil, err. err is the
-- server's error reply ("ERR ...", "WRONGTYPE ...": the client stays
-- usable) or a network failure ("timeout", "closed", ...: the client is
-- closed).
function Client:call(name, ...)
    local conn = take(self, 2)
    if not conn then return nil, "closed" end
    if type(name) == "string" and PUSH_MODE[upper(name)] then
        error("redis: use r:subscribe() or r:psubscribe() for " .. name, 2)
    end
    local out = {}
    encode(out, 0, name, ...)
    self.busy = true
    local ok, err = conn:write(out)
    if not ok then return fail(self, err) end
    local v
    v, err = conn:read_frame()
    self.busy = false
    if v == nil then return fail(self, err) end
    if v == null then return nil end
    if type(v) == "table" and v.err then
        if v.err:find("^EXECABORT") then self.in_multi = false end
        return nil, v.err
    end
    return track(self, name, v, ...)
end

-- The pipeline object fn(p) fills: p:call(...) and p:get(k), ... queue a
-- command; nothing is sent until fn returns.
local Pipe = {}
local pipe_mt = { __index = command_index(Pipe) }

function Pipe:call(name, ...)
    if type(name) == "string" and PUSH_MODE[upper(name)] then
        error("redis: no " .. name .. " in a pipeline", 2)
    end
    self.n = encode(self.out, self.n, name, ...)
    self.count = self.count + 1
    self.names[self.count] = name
    return self
end

-- r:pipeline(fn) -> results | nil, err. fn(p) queues commands; they go
-- out in one write and every reply is read, in order. results[i] is the
-- i-th reply: a value, luaserv.null for a null reply, or { err = "..." }
-- for an error reply. nil, err only for a network failure (the client is
-- then closed). An error raised by fn is raised again, with nothing sent.
function Client:pipeline(fn)
    local conn = take(self, 2)
    if not conn then return nil, "closed" end
    local p = setmetatable({ out = {}, n = 0, count = 0, names = {} }, pipe_mt)
    self.busy = true
    local ok, perr = pcall(fn, p)
    if not ok then
        self.busy = false
        error(perr, 0)
    end
    local results = {}
    if p.count == 0 then
        self.busy = false
        return results
    end
    local wok, err = conn:write(p.out)
    if not wok then return fail(self, err) end
    p.out = false
    for i = 1, p.count do
        local v, rerr = conn:read_frame()
        if v == nil then return fail(self, rerr) end
        results[i] = v
    end
    self.busy = false
    for i = 1, p.count do
        local v = results[i]
        if not (type(v) == "table" and v.err) then
            track(self, p.names[i], v)
        end
    end
    return results
end

local PING = "*1\r\n$4\r\nPING\r\n"

-- Reads push-mode replies until fn returns false (or a failure); see
-- r:subscribe. With a limit (timeout), a quiet spell that long ends it.
-- Without one it waits for messages as long as the server is there: after
-- the client's timeout with nothing read it sends PING, and a server that
-- does not answer that within the timeout fails it with "timeout".
local function listen(self, conn, kind, fn, limit)
    local pinged = false
    conn:set_timeout(limit or self.timeout)
    while true do
        local v, err = conn:read_frame()
        if v == nil then
            if err ~= "timeout" or limit or pinged then
                return fail(self, err)
            end
            local ok, werr = conn:write(PING)
            if not ok then return fail(self, werr) end
            pinged = true
        elseif type(v) == "table" and v[1] == kind then
            pinged = false
            local ok, more
            if kind == "pmessage" then
                ok, more = pcall(fn, v[4], v[3], v[2])
            else
                ok, more = pcall(fn, v[3], v[2])
            end
            if not ok then
                fail(self, "closed")
                error(more, 0)
            end
            if more == false then return true end
        elseif type(v) == "table" and v.err then
            fail(self, "closed")
            return nil, v.err
        else
            pinged = false      -- a pong, or a subscribe confirmation
        end
    end
end

-- Ends push mode: unsubscribes from everything and drops the messages
-- still coming until the server says no subscription is left.
local function unsubscribe(self, conn, unsub_cmd)
    conn:set_timeout(self.timeout)
    local ok, err = conn:write("*1\r\n$" .. #unsub_cmd .. "\r\n" ..
                               unsub_cmd .. "\r\n")
    if not ok then return fail(self, err) end
    local kind = unsub_cmd:lower()
    while true do
        local v, rerr = conn:read_frame()
        if v == nil then return fail(self, rerr) end
        if type(v) == "table" and v[1] == kind and v[3] == 0 then
            return true
        end
    end
end

local function subscribe(self, cmd, unsub_cmd, kind, channels, fn, timeout)
    if type(channels) == "string" then channels = { channels } end
    if type(channels) ~= "table" or #channels == 0 then
        error("redis: " .. cmd .. " needs a channel or a list of them", 3)
    end
    if type(fn) ~= "function" then
        error("redis: " .. cmd .. " needs a function", 3)
    end
    local conn = take(self, 3)
    if not conn then return nil, "closed" end
    local out = {}
    encode(out, 0, cmd, unpack(channels))
    self.busy = true
    local ok, err = conn:write(out)
    if not ok then return fail(self, err) end
    ok, err = listen(self, conn, kind, fn, timeout)
    if not ok then return nil, err end
    ok, err = unsubscribe(self, conn, unsub_cmd)
    if not ok then return nil, err end
    self.busy = false
    return true
end

-- r:subscribe(channel | { channels }, fn[, timeout]) -> true | nil, err.
-- Calls fn(message, channel) for each message until fn returns false,
-- then unsubscribes; the client is then usable again. It waits for
-- messages without limit unless timeout (seconds without any message) is
-- given, checking with PING after each quiet spell of the client's
-- timeout that the server is still there. An error fn raises closes the
-- client and is raised again.
function Client:subscribe(channels, fn, timeout)
    return subscribe(self, "SUBSCRIBE", "UNSUBSCRIBE", "message", channels,
                     fn, timeout)
end

-- r:psubscribe(pattern | { patterns }, fn[, timeout]): as subscribe, with
-- fn(message, channel, pattern).
function Client:psubscribe(patterns, fn, timeout)
    return subscribe(self, "PSUBSCRIBE", "PUNSUBSCRIBE", "pmessage",
                     patterns, fn, timeout)
end

-- r:close() -> true. Closes the connection; later calls return
-- nil, "closed".
function Client:close()
    fail(self, "closed")
    return true
end

-- r:is_closed() -> whether the client can no longer be used.
function Client:is_closed()
    return not self.conn or self.conn:is_closed()
end

-- r:release(): gives a pooled client back to its pool (see pool:put);
-- closes one that came from redis.connect.
function Client:release()
    if self.pool then return self.pool:put(self) end
    return self:close()
end

-- redis.connect(host, port[, opts]) -> client | nil, err. host may be
-- "unix:/path" (port then ignored). opts: timeout (seconds, default 5,
-- for the connect and then every read and write), password and username
-- (AUTH), db (SELECT), max_reply (the largest reply in bytes, default
-- the resp framing's 64 MiB). Must run in a task.
function _M.connect(host, port, opts)
    opts = opts or {}
    local timeout = opts.timeout or DEFAULT_TIMEOUT
    if type(timeout) ~= "number" or timeout < 0 then
        error("redis.connect: timeout must be a number >= 0", 2)
    end
    local copts = { timeout = timeout > 0 and timeout or nil }
    local conn, err
    if type(host) == "string" and host:sub(1, 5) == "unix:" then
        conn, err = luaserv.connect(host, nil, copts)
    else
        conn, err = luaserv.connect(host, port, copts)
    end
    if not conn then return nil, err end
    conn:set_framing({ "resp", client = true, max = opts.max_reply })
    conn:set_timeout(timeout)
    -- Every field is set (false for none): a missing one would read as a
    -- command through __index.
    local self = setmetatable({ conn = conn, timeout = timeout, db = 0,
                                busy = false, pool = false, pooled = false,
                                dirty = false, in_multi = false,
                                watching = false, idle_since = 0 },
                              client_mt)
    if opts.password then
        local ok, aerr
        if opts.username then
            ok, aerr = self:call("AUTH", opts.username, opts.password)
        else
            ok, aerr = self:call("AUTH", opts.password)
        end
        if not ok then
            fail(self, "closed")
            return nil, aerr or "closed"
        end
    end
    if opts.db and opts.db ~= 0 then
        local ok, serr = self:call("SELECT", opts.db)
        if not ok then
            fail(self, "closed")
            return nil, serr or "closed"
        end
    end
    return self
end

-- Pool ---------------------------------------------------------------------

local Pool = {}
Pool.__index = Pool

-- Closes the idle clients that waited longer than idle_timeout; the
-- oldest are at the bottom of the stack.
local function sweep(self)
    local idle = self.idle
    local limit = luaserv.now() - self.idle_timeout
    local k = 0
    while idle[k + 1] and (idle[k + 1].idle_since <= limit
                           or idle[k + 1]:is_closed()) do
        k = k + 1
    end
    for _ = 1, k do
        local r = remove(idle, 1)
        r.pooled = false
        fail(r, "closed")
    end
end

-- Keeps a timer armed while idle clients wait, so that they are closed
-- after idle_timeout even when the pool is not used again.
local function arm(self)
    if self.timer or #self.idle == 0 then return end
    self.timer = luaserv.timer.after(self.idle_timeout + 0.05, function()
        self.timer = nil
        sweep(self)
        arm(self)
    end)
end

-- redis.pool(host, port[, opts]) -> pool. A pool of this worker's
-- connections to one server: opts as redis.connect's, plus size (idle
-- clients kept, default 16) and idle_timeout (seconds, default 60). It
-- opens connections only when get() finds none idle.
function _M.pool(host, port, opts)
    opts = opts or {}
    local size = opts.size or DEFAULT_POOL_SIZE
    if math_type(size) ~= "integer" or size < 0 then
        error("redis.pool: size must be an integer >= 0", 2)
    end
    return setmetatable({ host = host, port = port, opts = opts,
                          size = size, db = opts.db or 0,
                          idle_timeout = opts.idle_timeout
                              or DEFAULT_IDLE_TIMEOUT,
                          check_idle = opts.check_idle or DEFAULT_CHECK_IDLE,
                          idle = {} }, Pool)
end

-- Whether an idle client's server is still there: a read that must time
-- out at once. End of stream (a restarted server, its idle timeout) or a
-- stray reply says the client is not usable.
local function alive(r)
    local conn = r.conn
    if not conn or conn:is_closed() then return false end
    conn:set_timeout(PROBE_TIMEOUT)
    local v, err = conn:read_frame()
    conn:set_timeout(r.timeout)
    return v == nil and err == "timeout"
end

-- pool:get() -> client | nil, err: the most recently returned idle
-- client, else a new connection. A client idle for check_idle seconds or
-- more is checked first (one loop turn) and dropped if its server went
-- away. In a task.
function Pool:get()
    sweep(self)
    local now = luaserv.now()
    while #self.idle > 0 do
        local r = remove(self.idle)
        r.pooled = false
        if now - r.idle_since < self.check_idle or alive(r) then
            return r
        end
        fail(r, "closed")
    end
    local r, err
    r, err = _M.connect(self.host, self.port, self.opts)
    if not r then return nil, err end
    r.pool = self
    return r
end

-- pool:put(client) -> true if kept, false if closed. A client in a state
-- the next user must not inherit (closed, failed, busy in a pipeline or
-- subscribe, inside MULTI or WATCH, on another db, MONITOR, CLIENT REPLY)
-- is closed instead, as is one over the pool's size.
function Pool:put(r)
    if r.pool ~= self then error("redis: a client from another pool", 2) end
    if r.pooled then error("redis: this client is already in its pool", 2) end
    if not r.conn or r.busy or r.dirty or r.in_multi or r.watching
            or r.db ~= self.db or r.conn:is_closed() then
        fail(r, "closed")
        return false
    end
    sweep(self)
    if #self.idle >= self.size then
        fail(r, "closed")
        return false
    end
    r.pooled = true
    r.idle_since = luaserv.now()
    self.idle[#self.idle + 1] = r
    arm(self)
    return true
end

-- pool:call(cmd, ...) -> as r:call, on a client from the pool that goes
-- back to it afterwards (closed instead if the call failed).
function Pool:call(...)
    local r, err = self:get()
    if not r then return nil, err end
    local v, cerr = r:call(...)
    self:put(r)
    return v, cerr
end

-- pool:idle_count() -> how many idle clients the pool holds now.
function Pool:idle_count()
    return #self.idle
end

-- pool:close() closes the idle clients (those in use close when put back
-- only if over size; call r:close() on them yourself).
function Pool:close()
    for i = #self.idle, 1, -1 do
        local r = self.idle[i]
        self.idle[i] = nil
        r.pooled = false
        fail(r, "closed")
    end
    if self.timer then
        self.timer:cancel()
        self.timer = nil
    end
end

return _M

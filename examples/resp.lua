-- examples/resp.lua: a key/value server speaking the Redis protocol (RESP2),
-- in stream style: redis-cli and Redis client libraries talk to it.
--
-- Every connection runs handle(conn) as its own task. A command is a RESP
-- array of bulk strings ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"), read with
-- conn:readline() for the "*N" and "$LEN" lines and conn:read(LEN) for each
-- argument, or an inline command (a plain line such as "SET k v", quotes
-- as redis-cli takes them), as telnet users type. Replies go out in order,
-- so pipelined commands need nothing special.
--
--   PING [msg]  ECHO msg  GET key  SET key value [EX s|PX ms|KEEPTTL] [NX|XX]
--   DEL key...  EXISTS key...  INCR/DECR key  INCRBY/DECRBY key n
--   TTL key  DBSIZE  FLUSHALL  INFO  COMMAND ...  QUIT
--
-- Keys with a time to live are deleted by a luaserv.timer.after timer (a
-- new SET cancels or replaces it) and, should a timer be late, lazily when
-- the key is next looked at. Errors are Redis's own: "-ERR unknown
-- command ...", "-ERR wrong number of arguments for 'get' command", ...;
-- a protocol error ("-ERR Protocol error: ...") closes the connection.
--
-- Run: build/luaserv -l 127.0.0.1:6379 examples/resp.lua
local luaserv = require "luaserv"

local char = string.char
local concat = table.concat
local floor = math.floor
local format = string.format
local ipairs = ipairs
local maxinteger = math.maxinteger
local mininteger = math.mininteger
local next = next
local pairs = pairs
local sort = table.sort
local tointeger = math.tointeger
local tonumber = tonumber
local tostring = tostring

-- Per-command input limits: one client must not make the server hold
-- more than this for a command it has not finished sending. Set them on
-- the handler table this script returns (handler.limits.max_bulk = ...),
-- from a wrapper script or the config file's handler.
local LIMITS = {
    max_args = 64 * 1024,             -- elements in one command array
    max_bulk = 8 * 1024 * 1024,       -- bytes in one argument
    max_command = 64 * 1024 * 1024,   -- bytes of all of one command's args
}
local MAX_EXPIRE = 1e12               -- seconds, for EX and PX

local store = {}    -- key -> value (a string)
local expires = {}  -- key -> when it expires, as luaserv.now() counts
local timers = {}   -- key -> the timer that deletes it then

-- Replies -------------------------------------------------------------------

local OK = "+OK\r\n"
local NULL = "$-1\r\n"

local function bulk(s)
    if s == nil then return NULL end
    return "$" .. #s .. "\r\n" .. s .. "\r\n"
end

local function integer(n)
    return ":" .. format("%d", n) .. "\r\n"
end

local function err(msg)
    return "-" .. msg:gsub("[\r\n]", " ") .. "\r\n"
end

local NOT_INTEGER = err("ERR value is not an integer or out of range")
local SYNTAX = err("ERR syntax error")

-- The keyspace --------------------------------------------------------------

-- Removes key's time to live (SET without KEEPTTL does).
local function persist(key)
    expires[key] = nil
    local timer = timers[key]
    if timer then
        timers[key] = nil
        timer:cancel()
    end
end

local function forget(key)
    store[key] = nil
    persist(key)
end

-- The value of a live key; an expired one is deleted on the way.
local function lookup(key)
    local at = expires[key]
    if at and luaserv.now() >= at then forget(key) end
    return store[key]
end

-- Deletes key in seconds, replacing any earlier timer.
local function expire_in(key, seconds)
    local old = timers[key]
    if old then old:cancel() end
    expires[key] = luaserv.now() + seconds
    local timer
    timer = luaserv.timer.after(seconds, function()
        if timers[key] == timer then
            timers[key] = nil
            store[key], expires[key] = nil, nil
        end
    end)
    timers[key] = timer
end

-- A 64-bit integer as Redis reads one: digits, optionally "-", no leading
-- zeros, spaces or "+". Returns nil for anything else.
local function to_integer(s)
    if #s > 20 or not (s == "0" or s:match("^%-?[1-9]%d*$")) then
        return nil
    end
    return tointeger(tonumber(s))
end

-- Commands ------------------------------------------------------------------

-- name -> { arity, fn }: arity counts the name, as Redis does: N exactly
-- N arguments, -N at least N. fn(args) returns the reply, and true to close.
local COMMANDS = {}

local function command(name, arity, fn)
    COMMANDS[name] = { arity = arity, fn = fn }
end

command("ping", -1, function(args)
    if #args > 2 then
        return err("ERR wrong number of arguments for 'ping' command")
    end
    if args[2] then return bulk(args[2]) end
    return "+PONG\r\n"
end)

command("echo", 2, function(args) return bulk(args[2]) end)

command("get", 2, function(args) return bulk(lookup(args[2])) end)

command("set", -3, function(args)
    local key, value = args[2], args[3]
    local ttl, keep_ttl, cond
    local i = 4
    while args[i] do
        local opt = args[i]:upper()
        if (opt == "NX" or opt == "XX") and not cond then
            cond = opt
        elseif opt == "KEEPTTL" and not ttl and not keep_ttl then
            keep_ttl = true
        elseif (opt == "EX" or opt == "PX") and not ttl and not keep_ttl
               and args[i + 1] then
            i = i + 1
            local n = to_integer(args[i])
            if not n then return NOT_INTEGER end
            if n <= 0 or n > MAX_EXPIRE then
                return err("ERR invalid expire time in 'set' command")
            end
            ttl = opt == "EX" and n or n / 1000
        else
            return SYNTAX
        end
        i = i + 1
    end
    local exists = lookup(key) ~= nil
    if (cond == "NX" and exists) or (cond == "XX" and not exists) then
        return NULL
    end
    store[key] = value
    if ttl then
        expire_in(key, ttl)
    elseif not keep_ttl then
        persist(key)
    end
    return OK
end)

command("del", -2, function(args)
    local n = 0
    for i = 2, #args do
        if lookup(args[i]) ~= nil then
            forget(args[i])
            n = n + 1
        end
    end
    return integer(n)
end)

command("exists", -2, function(args)
    local n = 0
    for i = 2, #args do
        if lookup(args[i]) ~= nil then n = n + 1 end
    end
    return integer(n)
end)

-- INCR and friends keep the key's time to live, as Redis does.
local function incr_by(key, by)
    local old = lookup(key)
    local n = to_integer(old or "0")
    if not n then return NOT_INTEGER end
    if (by > 0 and n > maxinteger - by) or (by < 0 and n < mininteger - by) then
        return err("ERR increment or decrement would overflow")
    end
    n = n + by
    store[key] = format("%d", n)
    return integer(n)
end

command("incr", 2, function(args) return incr_by(args[2], 1) end)
command("decr", 2, function(args) return incr_by(args[2], -1) end)

command("incrby", 3, function(args)
    local by = to_integer(args[3])
    if not by then return NOT_INTEGER end
    return incr_by(args[2], by)
end)

command("decrby", 3, function(args)
    local by = to_integer(args[3])
    if not by then return NOT_INTEGER end
    if by == mininteger then return err("ERR decrement would overflow") end
    return incr_by(args[2], -by)
end)

command("ttl", 2, function(args)
    if lookup(args[2]) == nil then return integer(-2) end
    local at = expires[args[2]]
    if not at then return integer(-1) end
    return integer(floor(at - luaserv.now() + 0.5))
end)

command("dbsize", 1, function()
    local n = 0
    for key in pairs(store) do
        if lookup(key) ~= nil then n = n + 1 end
    end
    return integer(n)
end)

command("flushall", -1, function()
    for _, timer in pairs(timers) do timer:cancel() end
    store, expires, timers = {}, {}, {}
    return OK
end)

-- INFO: luaserv's counters in Redis's "name:value" sections.
command("info", -1, function()
    local stats = luaserv.stats()
    local keys, volatile = 0, 0
    for _ in pairs(store) do keys = keys + 1 end
    for _ in pairs(expires) do volatile = volatile + 1 end
    local lines = { "# Server", "luaserv_version:" .. luaserv.version, "",
                    "# Stats" }
    local names = {}
    for name in pairs(stats) do names[#names + 1] = name end
    sort(names)
    for _, name in ipairs(names) do
        lines[#lines + 1] = name .. ":" .. tostring(stats[name])
    end
    lines[#lines + 1] = ""
    lines[#lines + 1] = "# Keyspace"
    if keys > 0 then
        lines[#lines + 1] = format("db0:keys=%d,expires=%d", keys, volatile)
    end
    return bulk(concat(lines, "\r\n") .. "\r\n")
end)

-- redis-cli asks for "COMMAND DOCS" to build its hints: there are none.
command("command", -1, function() return "*0\r\n" end)

command("quit", -1, function() return OK, true end)

local function execute(args)
    local name = args[1]:lower()
    local cmd = COMMANDS[name]
    if not cmd then
        local shown = {}
        for i = 2, #args do
            shown[#shown + 1] = "'" .. args[i]:sub(1, 128) .. "' "
            if i > 20 then break end
        end
        return err(format("ERR unknown command '%s', with args beginning with: %s",
                          args[1]:sub(1, 128), concat(shown)))
    end
    local arity = cmd.arity
    if (arity > 0 and #args ~= arity) or (arity < 0 and #args < -arity) then
        return err(format("ERR wrong number of arguments for '%s' command",
                          name))
    end
    return cmd.fn(args)
end

-- The protocol --------------------------------------------------------------

local ESCAPES = { n = "\n", r = "\r", t = "\t", b = "\b", a = "\a" }

-- Splits an inline command as redis-cli and Redis do (sdssplitargs):
-- words, "double quoted" with \n \xHH ... escapes, 'single quoted'.
-- Returns the list, or nil for unbalanced quotes.
local function split_inline(line)
    local args, i, n = {}, 1, #line
    while true do
        i = line:find("[^ \t]", i)
        if not i then return args end
        local c = line:sub(i, i)
        local word = {}
        if c == "\"" or c == "'" then
            i = i + 1
            while true do
                local ch = line:sub(i, i)
                if ch == "" then return nil end
                if ch == c then
                    i = i + 1
                    break
                elseif ch == "\\" and c == "\"" then
                    local hex = line:match("^x(%x%x)", i + 1)
                    local nx = line:sub(i + 1, i + 1)
                    if hex then
                        word[#word + 1] = char(tonumber(hex, 16))
                        i = i + 4
                    elseif nx ~= "" then
                        word[#word + 1] = ESCAPES[nx] or nx
                        i = i + 2
                    else
                        return nil
                    end
                elseif ch == "\\" and line:sub(i + 1, i + 1) == "'" then
                    word[#word + 1] = "'"
                    i = i + 2
                else
                    word[#word + 1] = ch
                    i = i + 1
                end
            end
            -- a closing quote must end the word
            if i <= n and not line:sub(i, i):match("[ \t]") then return nil end
            args[#args + 1] = concat(word)
        else
            local j = line:find("[ \t]", i) or n + 1
            args[#args + 1] = line:sub(i, j - 1)
            i = j
        end
    end
end

-- Reads one command. Returns its arguments ({} for nothing to do), or nil
-- and a protocol error to answer before closing, or nil at end of stream.
local function read_command(conn)
    local line, rerr = conn:readline()
    if not line then
        if rerr == "too long" then
            return nil, "Protocol error: too big inline request"
        end
        return nil
    end
    if line:sub(1, 1) ~= "*" then
        local args = split_inline(line)
        if not args then return nil, "Protocol error: unbalanced quotes in request" end
        return args
    end
    local count = to_integer(line:sub(2))
    if not count or count > LIMITS.max_args then
        return nil, "Protocol error: invalid multibulk length"
    end
    local args = {}
    local total = 0
    for i = 1, count do     -- "*0" and "*-1" are no command at all
        line, rerr = conn:readline()
        if not line then
            if rerr == "too long" then
                return nil, "Protocol error: too big bulk count string"
            end
            return nil
        end
        if line:sub(1, 1) ~= "$" then
            return nil, format("Protocol error: expected '$', got '%s'",
                               line:sub(1, 1))
        end
        local len = to_integer(line:sub(2))
        if not len or len < 0 or len > LIMITS.max_bulk then
            return nil, "Protocol error: invalid bulk length"
        end
        total = total + len
        if total > LIMITS.max_command then
            return nil, format("Protocol error: command larger than %d "
                               .. "bytes", LIMITS.max_command)
        end
        local data = ""
        if len > 0 then
            data = conn:read(len)
            if not data or #data < len then return nil end
        end
        local eol = conn:read(2)
        if eol ~= "\r\n" then
            if not eol or #eol < 2 then return nil end
            return nil, "Protocol error: bulk string not followed by CRLF"
        end
        args[i] = data
    end
    return args
end

local handler = { limits = LIMITS }

function handler.handle(conn)
    while true do
        local args, perr = read_command(conn)
        if not args then
            if perr then conn:write(err("ERR " .. perr)) end
            return
        end
        if next(args) then
            local reply, quit = execute(args)
            conn:write(reply)
            if quit then return end
        end
    end
end

return handler

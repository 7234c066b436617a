-- luaserv.resp: a Redis-protocol (RESP2) service kit on framing "resp".
--
-- The C framer hands on_message one table per command, { "SET", "k", "v" }.
-- This module adds what every Redis-protocol server needs on top: a
-- command table (name -> function, arity, flags), reply encoders, the
-- connection commands a client library sends on its own (PING, ECHO, QUIT,
-- SELECT, HELLO, CLIENT, COMMAND, CONFIG GET) and MULTI/EXEC/DISCARD.
--
--   local resp = require "luaserv.resp"
--   local svc = resp.service()
--   local store = {}
--   svc:command("get", 2, function(args) return resp.bulk(store[args[2]]) end,
--               "readonly")
--   svc:command("set", 3, function(args)
--       store[args[2]] = args[3]
--       return resp.OK
--   end, "write")
--   return svc:handler()
--
-- A command function is fn(args, client): args as the framer decoded them
-- (args[1] is the name as the client spelled it), client the connection's
-- session ({ conn, db, id, name }). It returns one encoded reply: a string
-- from the encoders below (or a ready constant), or a flat table of string
-- pieces that concatenate to one reply. To close after the reply, it calls
-- client.conn:close() (QUIT does). A Lua error in a command is the core's
-- handler error: logged, and that connection closed.
local luaserv_ok, luaserv = pcall(require, "luaserv")

local concat = table.concat
local error = error
local format = string.format
local lower = string.lower
local math_type = math.type
local pairs = pairs
local setmetatable = setmetatable
local sub = string.sub
local tointeger = math.tointeger
local tonumber = tonumber
local tostring = tostring
local type = type
local upper = string.upper

local _M = {}

-- Encoders ------------------------------------------------------------------

local CRLF = "\r\n"

-- The null bulk reply's marker inside arrays: luaserv.null (the light
-- userdata the RESP client decoder gives for a null) when the core has it,
-- else a table of our own. `false` encodes as null too.
_M.null = luaserv_ok and type(luaserv) == "table" and luaserv.null or
          setmetatable({}, { __tostring = function() return "resp.null" end })
local NULL_VALUE = _M.null

_M.OK = "+OK\r\n"
_M.QUEUED = "+QUEUED\r\n"
_M.PONG = "+PONG\r\n"
_M.NULL = "$-1\r\n"             -- the null bulk string (a missing key)
_M.NULL_ARRAY = "*-1\r\n"
_M.EMPTY_ARRAY = "*0\r\n"
_M.EMPTY_BULK = "$0\r\n\r\n"
_M.ZERO = ":0\r\n"
_M.ONE = ":1\r\n"
_M.ERR_SYNTAX = "-ERR syntax error\r\n"
_M.ERR_NOT_INTEGER = "-ERR value is not an integer or out of range\r\n"
_M.ERR_NOT_FLOAT = "-ERR value is not a valid float\r\n"
_M.WRONGTYPE = "-WRONGTYPE Operation against a key holding the wrong kind " ..
               "of value\r\n"
local NULL = _M.NULL

-- ":n\r\n" for the small integers replies use most, made once.
local INTEGERS = {}
for n = -2, 1024 do INTEGERS[n] = ":" .. n .. CRLF end

-- "$len\r\n" bulk headers for short lengths, made on first use.
local HEADS = setmetatable({}, { __index = function(t, len)
    local h = "$" .. len .. CRLF
    if len <= 4096 then t[len] = h end
    return h
end })

-- "+s\r\n". s must not hold CR or LF (they are replaced by spaces).
function _M.status(s)
    if s:find("[\r\n]") then s = s:gsub("[\r\n]", " ") end
    return "+" .. s .. CRLF
end

-- "-msg\r\n": msg starts with the error code ("ERR ...", "WRONGTYPE ...").
function _M.error(msg)
    if msg:find("[\r\n]") then msg = msg:gsub("[\r\n]", " ") end
    return "-" .. msg .. CRLF
end

-- ":n\r\n" for an integer (a float with an integral value is taken);
-- raises for anything else.
local function integer(n)
    local s = INTEGERS[n]
    if s then return s end
    local i = tointeger(n)
    if not i then error("resp.integer: not an integer: " .. tostring(n), 2) end
    return ":" .. format("%d", i) .. CRLF
end
_M.integer = integer

-- "$len\r\ns\r\n"; nil gives the null bulk "$-1\r\n"; a number is sent as
-- its tostring.
local function bulk(s)
    if s == nil then return NULL end
    if type(s) ~= "string" then s = tostring(s) end
    return HEADS[#s] .. s .. CRLF
end
_M.bulk = bulk

-- Appends v's encoding to buf from index k + 1; returns the new last index.
-- Strings are bulks, integers integers, other numbers bulks of tostring,
-- tables arrays (nested), resp.null and false nulls.
local encode_array
local function encode_value(buf, k, v)
    local tv = type(v)
    if tv == "string" then
        buf[k + 1] = HEADS[#v]
        buf[k + 2] = v
        buf[k + 3] = CRLF
        return k + 3
    elseif tv == "number" then
        if math_type(v) == "integer" then
            buf[k + 1] = INTEGERS[v] or ":" .. format("%d", v) .. CRLF
            return k + 1
        end
        return encode_value(buf, k, tostring(v))
    elseif v == NULL_VALUE or v == false then
        buf[k + 1] = NULL
        return k + 1
    elseif tv == "table" then
        return encode_array(buf, k, v, 1, #v)
    end
    error("resp.array: cannot encode a " .. tv, 3)
end

function encode_array(buf, k, t, i, j)
    local n = j >= i and j - i + 1 or 0
    buf[k + 1] = "*" .. n .. CRLF
    k = k + 1
    for x = i, j do k = encode_value(buf, k, t[x]) end
    return k
end

local scratch = {}      -- pieces of the array being encoded, then cleared

-- The array reply of t[i..j] (default 1..#t), each element encoded by
-- type (see encode_value). One string is made; no table per reply.
function _M.array(t, i, j)
    i = i or 1
    j = j or #t
    if j < i then return _M.EMPTY_ARRAY end
    local buf = scratch
    scratch = {}            -- an error or a nested call cannot clobber it
    local k = encode_array(buf, 0, t, i, j)
    local s = concat(buf, "", 1, k)
    for x = 1, k do buf[x] = nil end
    scratch = buf
    return s
end

-- The array of already encoded replies (EXEC's answer), from n pieces.
local function raw_array(replies, n)
    for x = 1, n do
        local r = replies[x]
        if type(r) == "table" then replies[x] = concat(r) end
    end
    return "*" .. n .. CRLF .. concat(replies, "", 1, n)
end

-- A 64-bit integer as Redis reads one (string2ll): digits, an optional
-- "-", no leading zeros, no spaces or "+". Returns nil for anything else.
function _M.to_integer(s)
    if #s > 20 or not (s == "0" or s:find("^%-?[1-9]%d*$")) then
        return nil
    end
    return tointeger(tonumber(s))
end
local to_integer = _M.to_integer

-- Errors Redis answers with these exact words -------------------------------

local function wrong_arity(name)
    return "-ERR wrong number of arguments for '" .. name .. "' command\r\n"
end

-- Redis's "unknown command" line: at most 128 bytes of the name, and each
-- of the arguments quoted (each cut to 128 bytes; the list cut where Redis
-- cuts it).
local function unknown_command(args)
    local shown = {}
    local budget = 128
    for x = 2, #args do
        if budget <= 0 then break end
        local a = sub(args[x], 1, budget)
        budget = budget - #a
        shown[#shown + 1] = "'" .. a .. "' "
    end
    return _M.error(format("ERR unknown command '%s', with args beginning with: %s",
                           sub(args[1], 1, 128), concat(shown)))
end

local function unknown_subcommand(args)
    return _M.error(format("ERR unknown subcommand '%s'. Try %s HELP.",
                           sub(args[2], 1, 128), upper(args[1])))
end
_M.unknown_subcommand = unknown_subcommand

-- The service ---------------------------------------------------------------

local Service = {}
Service.__index = Service

-- Parses "write readonly" (or a list { "write" }) into a set.
local function parse_flags(flags)
    local set = {}
    if type(flags) == "string" then
        for f in flags:gmatch("%S+") do set[f] = true end
    elseif type(flags) == "table" then
        for _, f in pairs(flags) do set[f] = true end
    elseif flags ~= nil then
        error("flags must be a string or a list", 3)
    end
    return set
end

-- Adds (or replaces) a command. name is case-insensitive; arity counts
-- the name as Redis does (3: exactly 3 words; -2: at least 2); flags a
-- string of words: "write", "readonly", "noqueue" (run at once even inside
-- MULTI, as EXEC and QUIT are). Returns the service.
function Service:command(name, arity, fn, flags)
    if type(name) ~= "string" or name == "" then
        error("command name must be a non-empty string", 2)
    end
    if math_type(arity) ~= "integer" or arity == 0 then
        error("arity must be a non-zero integer", 2)
    end
    if type(fn) ~= "function" then error("command needs a function", 2) end
    local set = parse_flags(flags)
    local cmd = { name = lower(name), arity = arity, fn = fn, flags = set,
                  noqueue = set.noqueue or false }
    self.commands[lower(name)] = cmd
    self.lookup[lower(name)] = cmd
    self.lookup[upper(name)] = cmd
    return self
end

-- The command table entry for a name (any case), or nil.
function Service:find(name)
    return self.lookup[name] or self.commands[lower(name)]
end

-- Sessions are made on a connection's first command and dropped in
-- on_close: one small table per connection, found by its conn userdata.
local function new_session(svc, conn)
    local s = { conn = conn, db = 0, id = conn.id, name = nil, multi = nil,
                dirty = false }
    svc.sessions[conn] = s
    return s
end

-- Runs one command whose arity is checked and that is not queued.
local function run(cmd, args, s)
    return cmd.fn(args, s)
end

-- EXEC: runs the queue, answers the array of its replies.
local function exec(svc, s)
    local queue, dirty = s.multi, s.dirty
    s.multi, s.dirty = nil, false
    if dirty then
        return "-EXECABORT Transaction discarded because of previous errors.\r\n"
    end
    local replies = {}
    for x = 1, #queue do
        local args = queue[x]
        replies[x] = run(svc:find(args[1]), args, s)
        if replies[x] == nil then
            error("command '" .. args[1] .. "' returned no reply", 0)
        end
    end
    return raw_array(replies, #queue)
end

local SERVICE_OPTIONS = { server = true, version = true, databases = true,
                          config = true }

-- The handler table for luaserv: framing "resp", on_message dispatching
-- the commands, on_close dropping the session. Extra fields of the
-- service's options (on_connect, on_load, ...) are copied in; an on_close
-- there is called after the session is dropped.
function Service:handler()
    local svc = self
    local user_close = self.options.on_close
    local h = {}
    for k, v in pairs(self.options) do
        if not SERVICE_OPTIONS[k] then h[k] = v end
    end
    h.framing = self.options.framing or "resp"
    -- The hot path: finds the session and the command, checks the arity,
    -- queues inside MULTI, else runs the command as a tail call.
    local sessions, by_name, commands = self.sessions, self.lookup, self.commands
    local QUEUED = _M.QUEUED
    h.on_message = function(conn, args)
        local s = sessions[conn] or new_session(svc, conn)
        local name = args[1]
        local cmd = by_name[name] or commands[lower(name)]
        local n, arity = #args, cmd and cmd.arity
        if not cmd or (n ~= arity and (arity > 0 or n < -arity)) then
            if s.multi then s.dirty = true end
            if not cmd then return unknown_command(args) end
            return wrong_arity(cmd.name)
        end
        local q = s.multi
        if q and not cmd.noqueue then
            q[#q + 1] = args
            return QUEUED
        end
        return cmd.fn(args, s)
    end
    h.on_close = function(conn, reason)
        svc.sessions[conn] = nil
        if user_close then return user_close(conn, reason) end
    end
    return h
end

-- The session of conn (made if it has none), for code outside a command.
function Service:session(conn)
    return self.sessions[conn] or new_session(self, conn)
end

-- Connection commands ---------------------------------------------------------

local function add_connection_commands(svc)
    local opts = svc.options

    svc:command("ping", -1, function(args)
        if #args > 2 then return wrong_arity("ping") end
        if args[2] then return bulk(args[2]) end
        return _M.PONG
    end, "fast")

    svc:command("echo", 2, function(args) return bulk(args[2]) end, "fast")

    svc:command("quit", -1, function(_, s)
        s.conn:close()
        return _M.OK
    end, "noqueue")

    svc:command("select", 2, function(args, s)
        local n = to_integer(args[2])
        if not n then return _M.ERR_NOT_INTEGER end
        if n < 0 or n >= svc.databases then
            return "-ERR DB index is out of range\r\n"
        end
        s.db = n
        return _M.OK
    end)

    -- Redis 6's answer to HELLO in RESP2: a flat array of field, value.
    local function hello_reply(s)
        return _M.array({ "server", opts.server or "redis",
                          "version", opts.version or "6.2.0",
                          "proto", 2, "id", s.id, "mode", "standalone",
                          "role", "master", "modules", {} })
    end

    local function valid_name(name)
        return not name:find("[^\33-\126]")
    end

    svc:command("hello", -1, function(args, s)
        local x = 2
        if args[2] then
            local v = to_integer(args[2])
            if not v then
                return "-ERR Protocol version is not an integer or out of range\r\n"
            end
            if v == 3 then
                return "-NOPROTO sorry, this protocol version is not supported\r\n"
            elseif v ~= 2 then
                return "-NOPROTO unsupported protocol version\r\n"
            end
            x = 3
        end
        local name
        while args[x] do
            local opt = upper(args[x])
            if opt == "AUTH" and args[x + 2] then
                x = x + 3           -- no password is set: any is taken
            elseif opt == "SETNAME" and args[x + 1] then
                name = args[x + 1]
                if not valid_name(name) then
                    return "-ERR Client names cannot contain spaces, newlines " ..
                           "or special characters.\r\n"
                end
                x = x + 2
            else
                return _M.error(format("ERR Syntax error in HELLO option '%s'",
                                       sub(args[x], 1, 128)))
            end
        end
        if name then s.name = name ~= "" and name or nil end
        return hello_reply(s)
    end, "noqueue")

    svc:command("client", -2, function(args, s)
        local sub_name = upper(args[2])
        if sub_name == "SETNAME" and #args == 3 then
            if not valid_name(args[3]) then
                return "-ERR Client names cannot contain spaces, newlines " ..
                       "or special characters.\r\n"
            end
            s.name = args[3] ~= "" and args[3] or nil
            return _M.OK
        elseif sub_name == "GETNAME" and #args == 2 then
            return bulk(s.name)
        elseif sub_name == "ID" and #args == 2 then
            return integer(s.id)
        elseif sub_name == "SETINFO" and #args == 4 then
            return _M.OK
        elseif sub_name == "SETNAME" or sub_name == "GETNAME" or
               sub_name == "ID" or sub_name == "SETINFO" then
            return wrong_arity("client|" .. lower(sub_name))
        end
        return unknown_subcommand(args)
    end)

    -- No command documentation: redis-cli starts without hints.
    svc:command("command", -1, function(args)
        local sub_name = args[2] and upper(args[2])
        if sub_name == "COUNT" then
            local n = 0
            for _ in pairs(svc.commands) do n = n + 1 end
            return integer(n)
        end
        return _M.EMPTY_ARRAY
    end)

    -- CONFIG GET name... answers the pairs of svc.config (by exact
    -- lowercase name, or all for "*"); a name it does not hold is left
    -- out, so an unknown one gives an empty array. redis-benchmark asks
    -- for "save" and "appendonly" and warns unless it gets both.
    svc:command("config", -2, function(args)
        local sub_name = upper(args[2])
        if sub_name == "GET" then
            if #args < 3 then return wrong_arity("config|get") end
            local out, seen = {}, {}
            for x = 3, #args do
                local want = lower(args[x])
                for name, value in pairs(svc.config) do
                    if (want == "*" or want == name) and not seen[name] then
                        seen[name] = true
                        out[#out + 1] = name
                        out[#out + 1] = value
                    end
                end
            end
            return _M.array(out)
        end
        return unknown_subcommand(args)
    end)

    svc:command("multi", 1, function(_, s)
        if s.multi then return "-ERR MULTI calls can not be nested\r\n" end
        s.multi, s.dirty = {}, false
        return _M.OK
    end, "noqueue")

    svc:command("exec", 1, function(_, s)
        if not s.multi then return "-ERR EXEC without MULTI\r\n" end
        return exec(svc, s)
    end, "noqueue")

    svc:command("discard", 1, function(_, s)
        if not s.multi then return "-ERR DISCARD without MULTI\r\n" end
        s.multi, s.dirty = nil, false
        return _M.OK
    end, "noqueue")
end

-- A new service. opts (all optional): framing (default "resp"; a table
-- such as { "resp", max_bulk = 1048576 } sets the framer's limits),
-- databases (SELECT's range, default 16), config (CONFIG GET's
-- name -> value strings; default: save "", appendonly "no" and
-- databases, a server that keeps nothing on disk), server and version (HELLO's
-- answer, default "redis" and "6.2.0", what client libraries check), and
-- any handler field (on_load, on_connect, on_close, ...) to copy into
-- svc:handler()'s table.
function _M.service(opts)
    opts = opts or {}
    if type(opts) ~= "table" then error("resp.service: opts must be a table", 2) end
    local svc = setmetatable({
        options = opts,
        commands = {},      -- lowercase name -> command
        lookup = {},        -- lowercase and uppercase name -> command
        sessions = setmetatable({}, { __mode = "k" }),
        databases = opts.databases or 16,
        config = opts.config or { save = "", appendonly = "no" },
    }, Service)
    svc.config.databases = svc.config.databases or tostring(svc.databases)
    add_connection_commands(svc)
    return svc
end

return _M

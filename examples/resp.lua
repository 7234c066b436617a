-- examples/resp.lua: a Redis-protocol key/value server on luaserv.resp.
-- redis-cli, redis-benchmark and client libraries (redis-py) talk to it.
--
-- The C framer (framing "resp") reads each command, multibulk or inline,
-- into a table of strings; luaserv.resp dispatches it by name, checks its
-- arity, answers the connection commands (PING, ECHO, QUIT, SELECT,
-- HELLO, CLIENT, COMMAND, CONFIG GET) and queues MULTI/EXEC. This file is
-- only the data: 16 databases of strings, lists, hashes, sets and sorted
-- sets, with expiry.
--
--   strings  SET key value [EX s|PX ms|EXAT t|PXAT t|KEEPTTL] [NX|XX] [GET]
--            GET MGET MSET INCR INCRBY DECR DECRBY APPEND STRLEN
--   keys     DEL EXISTS TYPE KEYS pattern  SCAN cursor [MATCH p] [COUNT n]
--            EXPIRE PEXPIRE TTL PTTL PERSIST DBSIZE FLUSHDB FLUSHALL INFO
--   lists    LPUSH RPUSH LPOP RPOP [count] LRANGE LLEN
--   hashes   HSET HGET HGETALL HDEL HLEN HEXISTS
--   sets     SADD SREM SMEMBERS SISMEMBER SPOP [count] SCARD
--   zsets    ZADD ZRANGE [WITHSCORES] ZPOPMIN [count] ZSCORE ZCARD
--
-- Expiry: a key past its time is deleted when a command looks at it, and
-- a timer sweeps the keys with a time to live ten times a second.
--
-- Run: build/luaserv -l 127.0.0.1:6379 examples/resp.lua
local luaserv = require "luaserv"
local resp = require "luaserv.resp"

local concat = table.concat
local floor = math.floor
local format = string.format
local insert = table.insert
local maxinteger = math.maxinteger
local mininteger = math.mininteger
local next = next
local pairs = pairs
local pcall = pcall
local random = math.random
local remove = table.remove
local sort = table.sort
local tonumber = tonumber
local tostring = tostring
local type = type
local upper = string.upper

local bulk, integer, array = resp.bulk, resp.integer, resp.array
local to_integer = resp.to_integer
local OK, NULL, ZERO, ONE = resp.OK, resp.NULL, resp.ZERO, resp.ONE
local WRONGTYPE, SYNTAX = resp.WRONGTYPE, resp.ERR_SYNTAX
local NOT_INTEGER, NOT_FLOAT = resp.ERR_NOT_INTEGER, resp.ERR_NOT_FLOAT

-- MSET and HSET take pairs: an odd count is an arity error, in its words.
local WRONG_ARITY_MSET = resp.error("ERR wrong number of arguments for 'mset' command")
local WRONG_ARITY_HSET = resp.error("ERR wrong number of arguments for 'hset' command")

-- One command's input is limited, so one client cannot make the server
-- hold gigabytes for a command it has not finished sending: at most 65,536
-- arguments, 8 MiB in one, 64 MiB in all (Redis allows 1,048,576 and
-- 512 MiB, the framer's defaults). Past a limit the answer is a protocol
-- error and a close. A wrapper script may change them:
--   local handler = dofile("examples/resp.lua")
--   handler.framing.max_bulk = 100 * 1024 * 1024
local svc = resp.service({
    framing = { "resp", max_args = 64 * 1024, max_bulk = 8 * 1024 * 1024,
                max = 64 * 1024 * 1024 },
})

-- The keyspace ----------------------------------------------------------------

-- A database: data[key] is a string, or a table { type = "list" | "hash"
-- | "set" | "zset", ... }; expires[key] the time it dies (luaserv.now()).
local function new_db() return { data = {}, expires = {} } end

local dbs = {}
for i = 0, svc.databases - 1 do dbs[i] = new_db() end

local function db_of(client) return dbs[client.db] end

-- The value of a live key, or nil; a key past its time is deleted here.
local function lookup(db, key)
    local v = db.data[key]
    if v ~= nil then
        local at = db.expires[key]
        if at and luaserv.now() >= at then
            db.data[key], db.expires[key] = nil, nil
            return nil
        end
    end
    return v
end

local function delete(db, key)
    db.data[key], db.expires[key] = nil, nil
end

-- The value of key if it is a table of kind kind; nil when absent; false
-- (answer WRONGTYPE) when it holds another type.
local function typed(db, key, kind)
    local v = lookup(db, key)
    if v == nil then return nil end
    if type(v) ~= "table" or v.type ~= kind then return false end
    return v
end

-- Deletes the key of an emptied list, hash, set or sorted set, as Redis.
local function drop_if_empty(db, key, v)
    if v.n == 0 then delete(db, key) end
end

-- Strings ---------------------------------------------------------------------

svc:command("get", 2, function(args, client)
    local v = lookup(dbs[client.db], args[2])
    if type(v) == "table" then return WRONGTYPE end
    return bulk(v)
end, "readonly")

local MAX_EXPIRE_MS = 2 ^ 52

-- SET's options, as Redis 7 parses them. Returns the options or an error.
local function set_options(args)
    local o = {}
    local x = 4
    while args[x] do
        local opt = upper(args[x])
        local unit = (opt == "EX" or opt == "EXAT") and 1000 or
                     (opt == "PX" or opt == "PXAT") and 1
        if (opt == "NX" or opt == "XX") and not o.cond then
            o.cond = opt
        elseif opt == "GET" then
            o.get = true
        elseif opt == "KEEPTTL" and not o.ttl then
            o.keep = true
        elseif unit and not o.ttl and not o.keep and args[x + 1] then
            x = x + 1
            local n = to_integer(args[x])
            if not n then return nil, NOT_INTEGER end
            if n <= 0 or n > MAX_EXPIRE_MS / unit then
                return nil, "-ERR invalid expire time in 'set' command\r\n"
            end
            if opt == "EXAT" or opt == "PXAT" then
                o.ttl = n * unit / 1000 - luaserv.now()
            else
                o.ttl = n * unit / 1000
            end
        else
            return nil, SYNTAX
        end
        x = x + 1
    end
    return o
end

svc:command("set", -3, function(args, client)
    local db, key = dbs[client.db], args[2]
    if not args[4] then             -- the common case, without options
        db.data[key] = args[3]
        local expires = db.expires
        if expires[key] then expires[key] = nil end
        return OK
    end
    local o, err = set_options(args)
    if not o then return err end
    local old = lookup(db, key)
    if o.get and type(old) == "table" then return WRONGTYPE end
    local reply = o.get and bulk(old) or OK
    if (o.cond == "NX" and old ~= nil) or (o.cond == "XX" and old == nil) then
        return o.get and reply or NULL
    end
    db.data[key] = args[3]
    if o.ttl then
        db.expires[key] = luaserv.now() + o.ttl
    elseif not o.keep then
        db.expires[key] = nil
    end
    return reply
end, "write")

svc:command("mget", -2, function(args, client)
    local db, out = db_of(client), {}
    for x = 2, #args do
        local v = lookup(db, args[x])
        out[x - 1] = type(v) == "string" and v or resp.null
    end
    return array(out, 1, #args - 1)
end, "readonly")

svc:command("mset", -3, function(args, client)
    if #args % 2 == 0 then return WRONG_ARITY_MSET end
    local db = db_of(client)
    for x = 2, #args, 2 do
        db.data[args[x]], db.expires[args[x]] = args[x + 1], nil
    end
    return OK
end, "write")

-- INCR and friends keep the key's time to live, as Redis does.
local function incr_by(client, key, by)
    local db = db_of(client)
    local old = lookup(db, key)
    if type(old) == "table" then return WRONGTYPE end
    local n = to_integer(old or "0")
    if not n then return NOT_INTEGER end
    if (by > 0 and n > maxinteger - by) or (by < 0 and n < mininteger - by) then
        return "-ERR increment or decrement would overflow\r\n"
    end
    n = n + by
    db.data[key] = format("%d", n)
    return integer(n)
end

svc:command("incr", 2, function(args, c) return incr_by(c, args[2], 1) end, "write")
svc:command("decr", 2, function(args, c) return incr_by(c, args[2], -1) end, "write")

svc:command("incrby", 3, function(args, c)
    local by = to_integer(args[3])
    if not by then return NOT_INTEGER end
    return incr_by(c, args[2], by)
end, "write")

svc:command("decrby", 3, function(args, c)
    local by = to_integer(args[3])
    if not by then return NOT_INTEGER end
    if by == mininteger then return "-ERR decrement would overflow\r\n" end
    return incr_by(c, args[2], -by)
end, "write")

svc:command("append", 3, function(args, client)
    local db, key = db_of(client), args[2]
    local old = lookup(db, key)
    if type(old) == "table" then return WRONGTYPE end
    local v = (old or "") .. args[3]
    db.data[key] = v
    return integer(#v)
end, "write")

svc:command("strlen", 2, function(args, client)
    local v = lookup(db_of(client), args[2])
    if type(v) == "table" then return WRONGTYPE end
    return integer(v and #v or 0)
end, "readonly")

-- Keys ------------------------------------------------------------------------

svc:command("del", -2, function(args, client)
    local db, n = db_of(client), 0
    for x = 2, #args do
        if lookup(db, args[x]) ~= nil then
            delete(db, args[x])
            n = n + 1
        end
    end
    return integer(n)
end, "write")

svc:command("exists", -2, function(args, client)
    local db, n = db_of(client), 0
    for x = 2, #args do
        if lookup(db, args[x]) ~= nil then n = n + 1 end
    end
    return integer(n)
end, "readonly")

local function type_name(v)
    if v == nil then return "none" end
    if type(v) == "string" then return "string" end
    return v.type
end

svc:command("type", 2, function(args, client)
    return resp.status(type_name(lookup(db_of(client), args[2])))
end, "readonly")

-- Glob patterns (KEYS, SCAN MATCH) as Redis's stringmatch: * ? [abc] [^a]
-- [a-z] and \x. Every piece but * matches exactly one byte, so a glob is
-- compiled into the Lua patterns of the runs between stars, each matched
-- where the one before ended (leftmost is right for a glob): linear in
-- the key, where one Lua pattern with several ".*" could backtrack for
-- a very long time on a hostile pattern.
local function class_char(c)
    return c:find("%w") and c or "%" .. c
end

-- The Lua pattern item for [...] starting after the '[' at i; returns it
-- and the index after the closing ']'.
local function glob_class(glob, i)
    local neg = glob:sub(i, i) == "^"
    if neg then i = i + 1 end
    local items = {}
    while i <= #glob and glob:sub(i, i) ~= "]" do
        local c = glob:sub(i, i)
        if c == "\\" and i < #glob then
            i = i + 1
            c = glob:sub(i, i)
        end
        if glob:sub(i + 1, i + 1) == "-" and i + 2 <= #glob and
           glob:sub(i + 2, i + 2) ~= "]" then
            local hi = glob:sub(i + 2, i + 2)
            if hi == "\\" and i + 3 <= #glob then
                i = i + 1
                hi = glob:sub(i + 2, i + 2)
            end
            local a, b = c:byte(), hi:byte()
            if a > b then a, b = b, a end
            for byte = a, b do items[#items + 1] = class_char(string.char(byte)) end
            i = i + 3
        else
            items[#items + 1] = class_char(c)
            i = i + 1
        end
    end
    if #items == 0 then             -- [] matches nothing, [^] anything
        return neg and "." or "[^\0-\255]", i + 1
    end
    return "[" .. (neg and "^" or "") .. concat(items) .. "]", i + 1
end

-- Compiles a glob into { runs = { pattern... }, lens = { n... }, star }:
-- the runs between stars and how many bytes each matches.
local function compile_glob(glob)
    local runs, lens = { {} }, { 0 }
    local i = 1
    while i <= #glob do
        local c = glob:sub(i, i)
        local item
        if c == "*" then
            if #runs[#runs] > 0 or #runs == 1 then
                runs[#runs + 1], lens[#lens + 1] = {}, 0
            end
            i = i + 1
        elseif c == "?" then
            item, i = ".", i + 1
        elseif c == "[" then
            item, i = glob_class(glob, i + 1)
        else
            if c == "\\" and i < #glob then
                i = i + 1
                c = glob:sub(i, i)
            end
            item, i = class_char(c), i + 1
        end
        if item then
            local run = runs[#runs]
            run[#run + 1] = item
            lens[#lens] = lens[#lens] + 1
        end
    end
    for x = 1, #runs do runs[x] = concat(runs[x]) end
    return { runs = runs, lens = lens }
end

-- Whether key matches the compiled glob g.
local function glob_match(g, key)
    local runs, lens = g.runs, g.lens
    local last = #runs
    if last == 1 then
        return #key == lens[1] and key:find("^" .. runs[1]) ~= nil
    end
    -- the first run at the start, the last one at the end, each middle
    -- one leftmost after the one before
    if not key:find("^" .. runs[1]) then return false end
    local pos = lens[1] + 1
    for x = 2, last - 1 do
        if lens[x] > 0 then
            local _, e = key:find(runs[x], pos)
            if not e then return false end
            pos = e + 1
        end
    end
    local start = #key - lens[last] + 1
    return start >= pos and key:find("^" .. runs[last], start) ~= nil
end

svc:command("keys", 2, function(args, client)
    local db, g, out = db_of(client), compile_glob(args[2]), {}
    for key in pairs(db.data) do
        if glob_match(g, key) and lookup(db, key) ~= nil then out[#out + 1] = key end
    end
    return array(out)
end, "readonly")

-- SCAN: cursor 0 takes a snapshot of the database's keys; the cursor
-- then counts into it (its id in the high bits), so a key present for
-- the whole scan is returned once, whatever changes meanwhile. The last
-- 16 snapshots are kept; an older cursor is refused.
local scans, scan_ids, next_scan = {}, {}, 1
local SCAN_SHIFT = 2 ^ 32

svc:command("scan", -2, function(args, client)
    local cursor = to_integer(args[2])
    if not cursor or cursor < 0 then return "-ERR invalid cursor\r\n" end
    local count, g, want = 10, nil, nil
    local x = 3
    while args[x] do
        local opt, v = upper(args[x]), args[x + 1]
        if not v then return SYNTAX end
        if opt == "COUNT" then
            count = to_integer(v)
            if not count then return NOT_INTEGER end
            if count < 1 then return SYNTAX end
        elseif opt == "MATCH" then
            g = compile_glob(v)
        elseif opt == "TYPE" then
            want = v:lower()
        else
            return SYNTAX
        end
        x = x + 2
    end
    local db = db_of(client)
    local id, pos = floor(cursor / SCAN_SHIFT), cursor % SCAN_SHIFT
    local snap
    if cursor == 0 then
        snap = {}
        for key in pairs(db.data) do snap[#snap + 1] = key end
        id, next_scan = next_scan, next_scan + 1
        scans[id] = snap
        scan_ids[#scan_ids + 1] = id
        if #scan_ids > 16 then scans[remove(scan_ids, 1)] = nil end
    else
        snap = scans[id]
        if not snap then return "-ERR invalid cursor\r\n" end
    end
    local out = {}
    local stop = pos + count
    while pos < stop and pos < #snap do
        pos = pos + 1
        local key = snap[pos]
        local v = lookup(db, key)
        if v ~= nil and (not g or glob_match(g, key)) and
           (not want or type_name(v) == want) then
            out[#out + 1] = key
        end
    end
    local next_cursor = 0
    if pos < #snap then
        next_cursor = id * SCAN_SHIFT + pos
    else
        scans[id] = nil
    end
    return array({ format("%d", next_cursor), out })
end, "readonly")

-- EXPIRE key seconds, PEXPIRE key ms: 1 when set, 0 for a missing key; a
-- time not in the future deletes the key.
local function expire_cmd(unit)
    return function(args, client)
        local db, key = db_of(client), args[2]
        local n = to_integer(args[3])
        if not n then return NOT_INTEGER end
        if #args > 3 then return SYNTAX end
        if n > MAX_EXPIRE_MS / unit or n < -MAX_EXPIRE_MS / unit then
            return format("-ERR invalid expire time in '%s' command\r\n",
                          unit == 1 and "pexpire" or "expire")
        end
        if lookup(db, key) == nil then return ZERO end
        if n <= 0 then
            delete(db, key)
        else
            db.expires[key] = luaserv.now() + n * unit / 1000
        end
        return ONE
    end
end
svc:command("expire", -3, expire_cmd(1000), "write")
svc:command("pexpire", -3, expire_cmd(1), "write")

-- TTL and PTTL: -2 for a missing key, -1 for one without a time to live.
local function ttl_cmd(unit)
    return function(args, client)
        local db, key = db_of(client), args[2]
        if lookup(db, key) == nil then return integer(-2) end
        local at = db.expires[key]
        if not at then return integer(-1) end
        local ms = floor((at - luaserv.now()) * 1000 + 0.5)
        return integer(floor((ms + unit / 2) / unit))
    end
end
svc:command("ttl", 2, ttl_cmd(1000), "readonly")
svc:command("pttl", 2, ttl_cmd(1), "readonly")

svc:command("persist", 2, function(args, client)
    local db, key = db_of(client), args[2]
    if lookup(db, key) == nil or not db.expires[key] then return ZERO end
    db.expires[key] = nil
    return ONE
end, "write")

-- Keys and keys with a time to live, as Redis counts them for DBSIZE and
-- INFO: an expired key still counts until a command or the sweep deletes it.
local function count_keys(db)
    local n, volatile = 0, 0
    for _ in pairs(db.data) do n = n + 1 end
    for _ in pairs(db.expires) do volatile = volatile + 1 end
    return n, volatile
end

svc:command("dbsize", 1, function(_, client)
    return integer((count_keys(db_of(client))))
end, "readonly")

svc:command("flushdb", -1, function(_, client)
    dbs[client.db] = new_db()
    return OK
end, "write")

svc:command("flushall", -1, function()
    for i = 0, svc.databases - 1 do dbs[i] = new_db() end
    return OK
end, "write")

-- INFO [section]: server, clients, stats (luaserv.stats()) and keyspace.
svc:command("info", -1, function(args)
    local want = args[2] and args[2]:lower()
    local stats = luaserv.stats()
    local sections = {
        { "server", { "redis_version:6.2.0", "luaserv_version:" .. luaserv.version,
                      "redis_mode:standalone" } },
        { "clients", { "connected_clients:" .. stats.connections_active } },
        { "stats", {} },
        { "keyspace", {} },
    }
    local names = {}
    for name in pairs(stats) do names[#names + 1] = name end
    sort(names)
    for _, name in pairs(names) do
        insert(sections[3][2], name .. ":" .. tostring(stats[name]))
    end
    for i = 0, svc.databases - 1 do
        local n, volatile = count_keys(dbs[i])
        if n > 0 then
            insert(sections[4][2], format("db%d:keys=%d,expires=%d", i, n, volatile))
        end
    end
    local lines = {}
    for _, s in pairs(sections) do
        if not want or want == "all" or want == "everything" or want == s[1] then
            if #lines > 0 then lines[#lines + 1] = "" end
            lines[#lines + 1] = "# " .. s[1]:sub(1, 1):upper() .. s[1]:sub(2)
            for _, l in pairs(s[2]) do lines[#lines + 1] = l end
        end
    end
    return bulk(concat(lines, "\r\n") .. "\r\n")
end, "readonly")

-- Lists: items[head..tail], so both ends push and pop in O(1) ---------------

local function list_push(args, client, left)
    local db, key = db_of(client), args[2]
    local l = typed(db, key, "list")
    if l == false then return WRONGTYPE end
    if not l then
        l = { type = "list", head = 1, tail = 0, n = 0, items = {} }
        db.data[key] = l
    end
    local items = l.items
    for x = 3, #args do
        if left then
            l.head = l.head - 1
            items[l.head] = args[x]
        else
            l.tail = l.tail + 1
            items[l.tail] = args[x]
        end
    end
    l.n = l.tail - l.head + 1
    return integer(l.n)
end

svc:command("lpush", -3, function(a, c) return list_push(a, c, true) end, "write")
svc:command("rpush", -3, function(a, c) return list_push(a, c, false) end, "write")

-- The count argument of LPOP, RPOP, SPOP, ZPOPMIN: nil when absent, or
-- an error reply.
local function pop_count(args)
    if not args[3] then return nil end
    local n = to_integer(args[3])
    if not n or n < 0 then
        return nil, "-ERR value is out of range, must be positive\r\n"
    end
    return n
end

local function list_pop(args, client, left)
    if #args > 3 then return SYNTAX end
    local count, err = pop_count(args)
    if err then return err end
    local db, key = db_of(client), args[2]
    local l = typed(db, key, "list")
    if l == false then return WRONGTYPE end
    if not l then return count and resp.NULL_ARRAY or NULL end
    local out, items = {}, l.items
    for x = 1, count or 1 do
        if l.n == 0 then break end
        if left then
            out[x], items[l.head] = items[l.head], nil
            l.head = l.head + 1
        else
            out[x], items[l.tail] = items[l.tail], nil
            l.tail = l.tail - 1
        end
        l.n = l.n - 1
    end
    drop_if_empty(db, key, l)
    if count then return array(out) end
    return bulk(out[1])
end

svc:command("lpop", -2, function(a, c) return list_pop(a, c, true) end, "write")
svc:command("rpop", -2, function(a, c) return list_pop(a, c, false) end, "write")

svc:command("llen", 2, function(args, client)
    local l = typed(db_of(client), args[2], "list")
    if l == false then return WRONGTYPE end
    return integer(l and l.n or 0)
end, "readonly")

-- Redis's range: negative indexes count from the end; clamped to 0..n-1.
-- Returns first, last (0-based; last < first when empty).
local function range(n, s, e)
    if s < 0 then s = n + s end
    if e < 0 then e = n + e end
    if s < 0 then s = 0 end
    if e >= n then e = n - 1 end
    return s, e
end

svc:command("lrange", 4, function(args, client)
    local s, e = to_integer(args[3]), to_integer(args[4])
    if not s or not e then return NOT_INTEGER end
    local l = typed(db_of(client), args[2], "list")
    if l == false then return WRONGTYPE end
    if not l then return resp.EMPTY_ARRAY end
    s, e = range(l.n, s, e)
    return array(l.items, l.head + s, l.head + e)
end, "readonly")

-- Hashes ----------------------------------------------------------------------

svc:command("hset", -4, function(args, client)
    if #args % 2 == 1 then return WRONG_ARITY_HSET end
    local db, key = db_of(client), args[2]
    local h = typed(db, key, "hash")
    if h == false then return WRONGTYPE end
    if not h then
        h = { type = "hash", n = 0, fields = {} }
        db.data[key] = h
    end
    local fields, added = h.fields, 0
    for x = 3, #args, 2 do
        if fields[args[x]] == nil then added = added + 1 end
        fields[args[x]] = args[x + 1]
    end
    h.n = h.n + added
    return integer(added)
end, "write")

svc:command("hget", 3, function(args, client)
    local h = typed(db_of(client), args[2], "hash")
    if h == false then return WRONGTYPE end
    return bulk(h and h.fields[args[3]])
end, "readonly")

svc:command("hexists", 3, function(args, client)
    local h = typed(db_of(client), args[2], "hash")
    if h == false then return WRONGTYPE end
    return (h and h.fields[args[3]] ~= nil) and ONE or ZERO
end, "readonly")

svc:command("hlen", 2, function(args, client)
    local h = typed(db_of(client), args[2], "hash")
    if h == false then return WRONGTYPE end
    return integer(h and h.n or 0)
end, "readonly")

svc:command("hgetall", 2, function(args, client)
    local h = typed(db_of(client), args[2], "hash")
    if h == false then return WRONGTYPE end
    local out = {}
    if h then
        for f, v in pairs(h.fields) do
            out[#out + 1] = f
            out[#out + 1] = v
        end
    end
    return array(out)
end, "readonly")

svc:command("hdel", -3, function(args, client)
    local db, key = db_of(client), args[2]
    local h = typed(db, key, "hash")
    if h == false then return WRONGTYPE end
    if not h then return ZERO end
    local removed = 0
    for x = 3, #args do
        if h.fields[args[x]] ~= nil then
            h.fields[args[x]] = nil
            removed = removed + 1
        end
    end
    h.n = h.n - removed
    drop_if_empty(db, key, h)
    return integer(removed)
end, "write")

-- Sets: members in an array (SPOP picks at random in O(1)) and their
-- index in a map --------------------------------------------------------------

local function set_remove(s, m)
    local x = s.index[m]
    local last = s.list[s.n]
    s.list[x], s.index[last] = last, x
    s.list[s.n], s.index[m] = nil, nil
    s.n = s.n - 1
end

svc:command("sadd", -3, function(args, client)
    local db, key = db_of(client), args[2]
    local s = typed(db, key, "set")
    if s == false then return WRONGTYPE end
    if not s then
        s = { type = "set", n = 0, list = {}, index = {} }
        db.data[key] = s
    end
    local added = 0
    for x = 3, #args do
        local m = args[x]
        if not s.index[m] then
            s.n = s.n + 1
            s.list[s.n], s.index[m] = m, s.n
            added = added + 1
        end
    end
    return integer(added)
end, "write")

svc:command("srem", -3, function(args, client)
    local db, key = db_of(client), args[2]
    local s = typed(db, key, "set")
    if s == false then return WRONGTYPE end
    if not s then return ZERO end
    local removed = 0
    for x = 3, #args do
        if s.index[args[x]] then
            set_remove(s, args[x])
            removed = removed + 1
        end
    end
    drop_if_empty(db, key, s)
    return integer(removed)
end, "write")

svc:command("smembers", 2, function(args, client)
    local s = typed(db_of(client), args[2], "set")
    if s == false then return WRONGTYPE end
    if not s then return resp.EMPTY_ARRAY end
    return array(s.list, 1, s.n)
end, "readonly")

svc:command("sismember", 3, function(args, client)
    local s = typed(db_of(client), args[2], "set")
    if s == false then return WRONGTYPE end
    return (s and s.index[args[3]]) and ONE or ZERO
end, "readonly")

svc:command("scard", 2, function(args, client)
    local s = typed(db_of(client), args[2], "set")
    if s == false then return WRONGTYPE end
    return integer(s and s.n or 0)
end, "readonly")

svc:command("spop", -2, function(args, client)
    if #args > 3 then return SYNTAX end
    local count, err = pop_count(args)
    if err then return err end
    local db, key = db_of(client), args[2]
    local s = typed(db, key, "set")
    if s == false then return WRONGTYPE end
    if not s then return count and resp.EMPTY_ARRAY or NULL end
    local out = {}
    for x = 1, count or 1 do
        if s.n == 0 then break end
        local m = s.list[random(s.n)]
        set_remove(s, m)
        out[x] = m
    end
    drop_if_empty(db, key, s)
    if count then return array(out) end
    return bulk(out[1])
end, "write")

-- Sorted sets: scores by member, and the members in an array sorted by
-- (score, member), kept sorted by binary-search inserts ----------------------

local function zless(z, a, b)
    local sa, sb = z.score[a], z.score[b]
    if sa ~= sb then return sa < sb end
    return a < b
end

-- The index where member m (with its score already set) belongs.
local function zsearch(z, m)
    local lo, hi = 1, z.n + 1
    while lo < hi do
        local mid = (lo + hi) // 2
        if zless(z, z.list[mid], m) then lo = mid + 1 else hi = mid end
    end
    return lo
end

local function zremove(z, m)
    remove(z.list, zsearch(z, m))
    z.score[m] = nil
    z.n = z.n - 1
end

-- A score as Redis prints it: integers plainly, else the shortest %g that
-- reads back the same.
local function score_string(s)
    if s == floor(s) and s > -2 ^ 53 and s < 2 ^ 53 then return format("%d", s) end
    if s == 1 / 0 then return "inf" elseif s == -1 / 0 then return "-inf" end
    local str = format("%.15g", s)
    if tonumber(str) ~= s then str = format("%.17g", s) end
    return str
end

local function parse_score(s)
    local l = s:lower()
    if l == "inf" or l == "+inf" then return 1 / 0 end
    if l == "-inf" then return -1 / 0 end
    local n = tonumber(s)
    if not n or n ~= n or s:find("^%s") or s:find("%s$") then return nil end
    return n + 0.0
end

svc:command("zadd", -4, function(args, client)
    if #args % 2 == 1 then return SYNTAX end
    local scores = {}
    for x = 3, #args, 2 do
        scores[x] = parse_score(args[x])
        if not scores[x] then return NOT_FLOAT end
    end
    local db, key = db_of(client), args[2]
    local z = typed(db, key, "zset")
    if z == false then return WRONGTYPE end
    if not z then
        z = { type = "zset", n = 0, list = {}, score = {} }
        db.data[key] = z
    end
    local added = 0
    for x = 3, #args, 2 do
        local m = args[x + 1]
        if z.score[m] then
            zremove(z, m)
        else
            added = added + 1
        end
        z.score[m] = scores[x]
        insert(z.list, zsearch(z, m), m)
        z.n = z.n + 1
    end
    return integer(added)
end, "write")

svc:command("zcard", 2, function(args, client)
    local z = typed(db_of(client), args[2], "zset")
    if z == false then return WRONGTYPE end
    return integer(z and z.n or 0)
end, "readonly")

svc:command("zscore", 3, function(args, client)
    local z = typed(db_of(client), args[2], "zset")
    if z == false then return WRONGTYPE end
    local s = z and z.score[args[3]]
    return bulk(s and score_string(s))
end, "readonly")

svc:command("zrange", -4, function(args, client)
    local s, e = to_integer(args[3]), to_integer(args[4])
    if not s or not e then return NOT_INTEGER end
    local withscores = false
    if args[5] then
        if #args ~= 5 or upper(args[5]) ~= "WITHSCORES" then return SYNTAX end
        withscores = true
    end
    local z = typed(db_of(client), args[2], "zset")
    if z == false then return WRONGTYPE end
    if not z then return resp.EMPTY_ARRAY end
    s, e = range(z.n, s, e)
    local out = {}
    for x = s + 1, e + 1 do
        out[#out + 1] = z.list[x]
        if withscores then out[#out + 1] = score_string(z.score[z.list[x]]) end
    end
    return array(out)
end, "readonly")

svc:command("zpopmin", -2, function(args, client)
    if #args > 3 then return SYNTAX end
    local count, err = pop_count(args)
    if err then return err end
    local db, key = db_of(client), args[2]
    local z = typed(db, key, "zset")
    if z == false then return WRONGTYPE end
    local out = {}
    if z then
        for _ = 1, count or 1 do
            if z.n == 0 then break end
            local m = z.list[1]
            out[#out + 1] = m
            out[#out + 1] = score_string(z.score[m])
            zremove(z, m)
        end
        drop_if_empty(db, key, z)
    end
    return array(out)
end, "write")

-- Expiry sweep ----------------------------------------------------------------

-- Looks at up to 200 keys with a time to live per database, going on
-- where the last sweep stopped, and deletes those past their time. The
-- place is a key; when keys were added since, the table may have been
-- rebuilt and next() refuses the old key: the sweep then starts over.
local cursors = {}

local function sweep()
    local now = luaserv.now()
    for i = 0, svc.databases - 1 do
        local db = dbs[i]
        local expires, key = db.expires, cursors[i]
        for _ = 1, 200 do
            local ok, k, at = pcall(next, expires, key)
            if not ok then k, at = next(expires) end
            key = k
            if key == nil then break end
            if now >= at then db.data[key], expires[key] = nil, nil end
        end
        cursors[i] = key
    end
end

local handler = svc:handler()

function handler.on_load()
    luaserv.timer.every(0.1, sweep)
end

return handler

-- bench/shdict.lua: operations per second on a shared dict from Lua
-- (get, set, incr), against a plain Lua table doing the same as the limit.
-- Runs in on_load and prints "WORKER OP TABLE_OPS/S SHARED_OPS/S RATIO
-- SECONDS" lines; alone it then exits, with --workers 2 both workers run
-- each row at once and it serves on until stopped (make bench does both):
--
--   build/luaserv --shared bench=64m -l 127.0.0.1:0 bench/shdict.lua
--
-- SHDICT_OPS (environment) sets the operations per row (default 1e6).
-- Each row cycles over the same 1000 keys of 8 to 11 bytes in every
-- worker (worker 2 starts half way round), values of 16 bytes (set) or
-- integers (incr). Every worker starts a row at the same moment (a barrier
-- through the dict: each counts itself in and waits for the rest), and
-- the time is wall-clock time: CPU time would hide the time a worker
-- spends waiting for a lock. The clock is the dict's own: a key with a
-- long TTL counts down CLOCK_MONOTONIC in milliseconds (d:ttl), since
-- luaserv.now() is the loop's cached time and does not move in on_load.
local luaserv = require "luaserv"

local format = string.format

local N = math.tointeger(tonumber(os.getenv("SHDICT_OPS") or "")) or 1000000
local NKEYS = 1000
local VALUE = string.rep("v", 16)
local FAR = 1e7      -- the clock key's TTL, seconds

local keys, counters = {}, {}
for i = 1, NKEYS do keys[i], counters[i] = "key:" .. i, "n:" .. i end

local d, id, count, first = nil, 1, 1, 0

-- Seconds on CLOCK_MONOTONIC, to the millisecond, from an arbitrary
-- origin (the same for every worker).
local function now()
    return FAR - assert(d:ttl("bench:clock"))
end

-- Waits until every worker reached barrier `name`.
local function barrier(name)
    d:incr("bench:" .. name, 1, 0)
    while (d:get("bench:" .. name) or 0) < count do end
end

-- Runs body(n) once every worker is ready; returns operations per second
-- and the seconds it took.
local row = 0
local function rate(body)
    row = row + 1
    barrier("row" .. row)
    local t0 = now()
    body(N)
    local dt = now() - t0
    if dt <= 0 then dt = 0.0005 end
    return N / dt, dt
end

local function table_rows()
    local t, r = {}, {}
    r.set = { rate(function(n)
        for i = first, first + n - 1 do t[keys[i % NKEYS + 1]] = VALUE end
    end) }
    r.get = { rate(function(n)
        local x
        for i = first, first + n - 1 do x = t[keys[i % NKEYS + 1]] end
        return x
    end) }
    r.incr = { rate(function(n)
        for i = first, first + n - 1 do
            local k = keys[i % NKEYS + 1]
            t[k] = (tonumber(t[k]) or 0) + 1
        end
    end) }
    return r
end

local function dict_rows()
    local r = {}
    r.set = { rate(function(n)
        for i = first, first + n - 1 do d:set(keys[i % NKEYS + 1], VALUE) end
    end) }
    r.get = { rate(function(n)
        local x
        for i = first, first + n - 1 do x = d:get(keys[i % NKEYS + 1]) end
        return x
    end) }
    r.incr = { rate(function(n)
        for i = first, first + n - 1 do
            d:incr(counters[i % NKEYS + 1], 1, 0)
        end
    end) }
    return r
end

return {
    on_load = function()
        d = luaserv.shared.bench
        if not d then
            io.stderr:write("bench/shdict.lua: run with --shared bench=64m\n")
            os.exit(2)
        end
        id, count = luaserv.worker.id, luaserv.worker.count
        first = (id - 1) * NKEYS // count
        d:add("bench:clock", true, FAR)
        local t, s = table_rows(), dict_rows()
        -- "worker op table_ops shared_ops ratio seconds", one line an op;
        -- with --workers 2 both workers print theirs
        for _, op in ipairs({ "get", "set", "incr" }) do
            print(format("%d %-4s %14.0f %14.0f %7.1fx %.3f", id, op,
                         t[op][1], s[op][1], t[op][1] / s[op][1], s[op][2]))
        end
        io.stdout:flush()
        if count == 1 then os.exit(0) end
    end,
    on_message = function() end,
}

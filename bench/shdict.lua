-- bench/shdict.lua: operations per second on a shared dict from Lua
-- (get, set, incr), against a plain Lua table doing the same as the limit.
-- Runs in on_load and prints "WORKER OP TABLE_OPS/S SHARED_OPS/S RATIO"
-- lines; alone it then exits, with --workers 2 both workers run at once
-- and it serves on until stopped (make bench does both):
--
--   build/luaserv --shared bench=64m -l 127.0.0.1:0 bench/shdict.lua
--
-- SHDICT_OPS (environment) sets the operations per row (default 1e6).
-- Each row cycles over 1000 keys of 8 to 11 bytes, and values of 16 bytes
-- (set) or integers (incr); the time is CPU time (os.clock).
local luaserv = require "luaserv"

local clock, format = os.clock, string.format

local N = math.tointeger(tonumber(os.getenv("SHDICT_OPS") or "")) or 1000000
local NKEYS = 1000
local VALUE = string.rep("v", 16)

local keys, counters = {}, {}
for i = 1, NKEYS do keys[i], counters[i] = "key:" .. i, "n:" .. i end

-- Runs body(n) and returns operations per second.
local function rate(body)
    local t0 = clock()
    body(N)
    local dt = clock() - t0
    return N / (dt > 0 and dt or 1e-9)
end

local function table_rows()
    local t = {}
    return {
        set = rate(function(n)
            for i = 1, n do t[keys[i % NKEYS + 1]] = VALUE end
        end),
        get = rate(function(n)
            local x
            for i = 1, n do x = t[keys[i % NKEYS + 1]] end
            return x
        end),
        incr = rate(function(n)
            for i = 1, n do
                local k = keys[i % NKEYS + 1]
                t[k] = (tonumber(t[k]) or 0) + 1
            end
        end),
    }
end

local function dict_rows(d)
    return {
        set = rate(function(n)
            for i = 1, n do d:set(keys[i % NKEYS + 1], VALUE) end
        end),
        get = rate(function(n)
            local x
            for i = 1, n do x = d:get(keys[i % NKEYS + 1]) end
            return x
        end),
        incr = rate(function(n)
            for i = 1, n do d:incr(counters[i % NKEYS + 1], 1, 0) end
        end),
    }
end

return {
    on_load = function()
        local d = luaserv.shared.bench
        if not d then
            io.stderr:write("bench/shdict.lua: run with --shared bench=64m\n")
            os.exit(2)
        end
        local t, s = table_rows(), dict_rows(d)
        -- "worker op table_ops shared_ops ratio", one line an op; with
        -- --workers 2 both workers print theirs, running at once
        local id = luaserv.worker.id
        for _, op in ipairs({ "get", "set", "incr" }) do
            print(format("%d %-4s %14.0f %14.0f %7.1fx", id, op, t[op], s[op],
                         t[op] / s[op]))
        end
        io.stdout:flush()
        if luaserv.worker.count == 1 then os.exit(0) end
    end,
    on_message = function() end,
}

-- luaserv.control: a --workers master's side of its workers. Each worker
-- serves luaserv.admin on its own channel, a unix socket DIR/K in a
-- directory of mode 0700 the master made (core.control()); the master's
-- admin socket, /metrics and SIGHUP ask every worker there and merge the
-- replies. Runs in the master only, in tasks.
local core = require "luaserv.core"
local luaserv = require "luaserv"

local concat = table.concat
local format = string.format
local ipairs = ipairs
local pairs = pairs
local pcall = pcall
local sort = table.sort
local tonumber = tonumber
local tostring = tostring

local _M = {}

-- How long a worker has to answer a question (stats, metrics, eval:
-- under a scraper's usual 10 s, since the workers are asked at once), and
-- a reload step (it runs the new scripts' top level and on_load).
local TIMEOUT = 5
local RELOAD_TIMEOUT = 60
-- The longest reply line a worker may send (a big eval result).
local MAX_LINE = 16 * 1024 * 1024

-- ask(k, line[, timeout]) -> true, body | false, error | nil, why the
-- worker could not be asked. Sends one admin command line to worker k and
-- reads its reply (a status line, the body, "."), undoing the
-- dot-stuffing.
function _M.ask(k, line, timeout)
    timeout = timeout or TIMEOUT
    local c, err = luaserv.connect(format("unix:%s/%d", core.control(), k),
                                   nil, { timeout = timeout })
    if not c then return nil, err end
    c:set_timeout(timeout)
    c:set_framing({ "line", max = MAX_LINE })
    c:write(line, "\n")
    local status
    status, err = c:readline()
    local body = {}
    while status do
        local l
        l, err = c:readline()
        if l == nil or l == "." then break end
        if l:sub(1, 1) == "." then l = l:sub(2) end
        body[#body + 1] = l
    end
    c:close()
    if err == "too long" then
        return false, format("a reply line over %d MiB", MAX_LINE // 2^20)
    end
    if err then return nil, "no reply (" .. tostring(err) .. ")" end
    if status == "ok" then return true, concat(body, "\n") end
    return false, status:match("^error: (.*)$") or status
end

-- each(line[, timeout]) -> { [k] = { ok = true|false|nil, body = ... } }
-- for every worker, all asked at once (one task each), so a worker that
-- hangs costs its timeout once, not once per worker.
function _M.each(line, timeout)
    local n = luaserv.worker.count
    local res, left = {}, n
    for k = 1, n do
        luaserv.spawn(function()
            local ok, a, b = pcall(_M.ask, k, line, timeout)
            if ok then res[k] = { ok = a, body = b }
            else res[k] = { ok = nil, body = tostring(a) } end
            left = left - 1
        end)
    end
    while left > 0 do luaserv.sleep(0.002) end
    return res
end

-- "worker K: why" for each worker whose reply was not ok; "" if none.
local function failures(res)
    local out = {}
    for k, r in ipairs(res) do
        if not r.ok then
            out[#out + 1] = format("worker %d: %s%s", k,
                                   r.ok == nil and "unreachable: " or "",
                                   tostring(r.body):gsub("\n", " "))
        end
    end
    return concat(out, "; ")
end
_M.failures = failures

-- One reload at a time: another waits for it (up to RELOAD_WAIT
-- seconds). Each has its own id, so a worker commits or aborts only the
-- reload it prepared.
local reloading, last_id = false, 0
local RELOAD_WAIT = 120

local function reload_steps()
    last_id = last_id + 1
    local id = last_id
    core.notify("RELOADING=1")
    local prep = _M.each("reload prepare " .. id, RELOAD_TIMEOUT)
    local bad = failures(prep)
    if bad ~= "" then
        _M.each(("reload abort %d %s"):format(id, bad), RELOAD_TIMEOUT)
        core.notify("READY=1")
        local msg = "every worker keeps the old script: " .. bad
        luaserv.log.error("reload failed: " .. msg)
        return false, msg
    end
    local done = _M.each("reload commit " .. id, RELOAD_TIMEOUT)
    core.notify("READY=1")
    local lines = {}
    for k, r in ipairs(done) do
        lines[k] = format("worker %d: %s", k, r.ok and "reloaded"
                          or "kept the old script: " .. tostring(r.body))
    end
    bad = failures(done)
    if bad ~= "" then
        luaserv.log.error("reload: a worker did not switch: " .. bad)
    else
        luaserv.log.info(format("reloaded %d workers", luaserv.worker.count))
    end
    return bad == "", concat(lines, "\n")
end

-- reload() -> true, "worker K: reloaded" lines | false, why. Every
-- worker loads the new scripts without switching ("reload prepare ID");
-- only when all did do they switch ("reload commit ID"), otherwise every
-- worker drops them ("reload abort ID WHY") and keeps the old ones.
function _M.reload()
    local deadline = luaserv.now() + RELOAD_WAIT
    while reloading do
        if luaserv.now() > deadline then
            return false, "another reload is still running"
        end
        luaserv.sleep(0.01)
    end
    reloading = true
    local ok, a, b = pcall(reload_steps)
    reloading = false
    if not ok then return false, tostring(a) end
    return a, b
end

-- stats() -> the workers' `stats` summed: each "key value" line and each
-- listener's counters, then one line per worker with its own figures.
function _M.stats()
    local res = _M.each("stats")
    local sums, keys, lst, lnames, per = {}, {}, {}, {}, {}
    for k, r in ipairs(res) do
        if r.ok then
            local mine = {}
            for line in (r.body .. "\n"):gmatch("(.-)\n") do
                local name, rest = line:match("^listener (%S+) (.*)$")
                if name then
                    local l = lst[name]
                    if not l then
                        l = { order = {}, v = {} }
                        lst[name] = l
                        lnames[#lnames + 1] = name
                    end
                    for f, v in rest:gmatch("([%w_]+)=(%S+)") do
                        if l.v[f] == nil then l.order[#l.order + 1] = f end
                        local n = tonumber(v)
                        l.v[f] = n and (tonumber(l.v[f]) or 0) + n or v
                    end
                else
                    local key, v = line:match("^(%S+) (%-?[%d.]+)$")
                    if key then
                        if not sums[key] then keys[#keys + 1] = key end
                        sums[key] = (sums[key] or 0) + tonumber(v)
                        mine[#mine + 1] = key .. "=" .. v
                    end
                end
            end
            per[k] = concat(mine, " ")
        else
            per[k] = (r.ok == nil and "unreachable: " or "error: ")
                     .. tostring(r.body)
        end
    end
    sort(keys)
    local out = { "workers " .. luaserv.worker.count }
    for _, key in ipairs(keys) do
        out[#out + 1] = format("%s %s", key, math.tointeger(sums[key]) or sums[key])
    end
    for _, name in ipairs(lnames) do
        local l, f = lst[name], {}
        for _, field in ipairs(l.order) do
            f[#f + 1] = field .. "=" .. tostring(math.tointeger(l.v[field]) or l.v[field])
        end
        out[#out + 1] = format("listener %s %s", name, concat(f, " "))
    end
    for k = 1, luaserv.worker.count do
        out[#out + 1] = format("worker %d %s", k, per[k])
    end
    return true, concat(out, "\n")
end

-- conns() -> every worker's `conns` lines, each with " worker=K" added.
function _M.conns()
    local out, res = {}, _M.each("conns")
    for k, r in ipairs(res) do
        if r.ok then
            for line in r.body:gmatch("[^\n]+") do
                out[#out + 1] = line .. " worker=" .. k
            end
        end
    end
    local bad = failures(res)
    if bad ~= "" then out[#out + 1] = "# " .. bad end
    return true, concat(out, "\n")
end

-- eval(arg) -> as the workers' eval: with "--worker K CODE" worker K's
-- reply as it is; else each worker's as "worker K: values" lines, ok only
-- when every worker's was.
function _M.eval(arg)
    local k, code = arg:match("^%-%-worker[=%s]+(%d+)%s+(.*)$")
    if k then
        k = tonumber(k)
        if k < 1 or k > luaserv.worker.count then
            return false, format("no worker %d (1..%d)", k, luaserv.worker.count)
        end
        local ok, body = _M.ask(k, "eval " .. code)
        if ok == nil then return false, format("worker %d unreachable: %s", k, body) end
        return ok, body
    end
    if arg:match("^%-%-worker") then
        return false, "usage: eval [--worker K] LUA"
    end
    local res, out = _M.each("eval " .. arg), {}
    for i, r in ipairs(res) do
        if r.ok then
            out[#out + 1] = format("worker %d: %s", i, (r.body:gsub("\n", "\n  ")))
        end
    end
    local bad = failures(res)
    if bad ~= "" then return false, bad end
    return true, concat(out, "\n")
end

-- Adds worker="K" to a series' labels ("" or "{...}").
local function label(labels, k)
    if labels == "" then return format('{worker="%s"}', k) end
    return labels:sub(1, -2) .. format(',worker="%s"}', k)
end

-- For the worker="all" sums of counters and histograms, which must
-- never go down: each worker's last value of each series, and what the
-- workers that restarted since (their value went down) had reached.
local last, carried = {}, {}
local MONOTONIC = { counter = true, histogram = true, summary = true }

-- Adds worker k's value v of a monotonic series key to the state.
local function note(key, k, v)
    local l = last[key]
    if not l then
        l = {}
        last[key] = l
    end
    if l[k] and v < l[k] then carried[key] = (carried[key] or 0) + l[k] end
    l[k] = v
end

-- The sum of a monotonic series over every worker, restarts included.
local function total(key)
    local sum = carried[key] or 0
    for _, v in pairs(last[key]) do sum = sum + v end
    return sum
end

-- merge_metrics(texts) -> one exposition: texts[k] is worker k's metrics
-- text (texts[0] the master's own). Every series gets a worker label;
-- the luaserv_* and handler-defined families (not process_*, not *_info)
-- also get worker="all", the sum over the workers: for counters and
-- histograms the sum of each worker's last value plus what restarted
-- workers had counted, so it only goes up.
function _M.merge_metrics(texts)
    local fams, order = {}, {}
    for k = 0, luaserv.worker.count do
        local text, fam = texts[k], nil
        for line in (text or ""):gmatch("[^\n]+") do
            local kind, name, rest = line:match("^# (%u+) (%S+) ?(.*)$")
            if kind then
                fam = fams[name]
                if not fam then
                    fam = { name = name, series = {}, sums = {}, keys = {},
                            sum = not name:match("^process_")
                                  and not name:match("_info$") }
                    fams[name] = fam
                    order[#order + 1] = name
                end
                fam[kind] = rest
            elseif fam then
                local series, labels, value = line:match("^([%w_:]+)(.-) (%S+)$")
                if series then
                    fam.series[#fam.series + 1] = series .. label(labels, k)
                        .. " " .. value
                    local key = series .. labels
                    if fam.sum and k > 0 then
                        local v = tonumber(value) or 0
                        if not fam.sums[key] then fam.keys[#fam.keys + 1] = key end
                        fam.sums[key] = (fam.sums[key] or 0) + v
                        if MONOTONIC[fam.TYPE] then note(key, k, v) end
                    end
                end
            end
        end
    end
    local out = {}
    for _, name in ipairs(order) do
        local fam = fams[name]
        out[#out + 1] = format("# HELP %s %s\n# TYPE %s %s\n", name,
                               fam.HELP or name, name, fam.TYPE or "untyped")
        for _, key in ipairs(fam.keys) do
            local series, labels = key:match("^([%w_:]+)(.*)$")
            local v = MONOTONIC[fam.TYPE] and total(key) or fam.sums[key]
            out[#out + 1] = format("%s%s %s\n", series, label(labels, "all"),
                                   math.tointeger(v) or format("%.17g", v))
        end
        for _, s in ipairs(fam.series) do out[#out + 1] = s .. "\n" end
    end
    return concat(out)
end

-- metrics() -> the whole server's /metrics text: every worker's (the
-- admin command `metrics`, asked at once), the master's process metrics,
-- merged, and luaserv_worker_up: 1 for each worker that answered.
function _M.metrics()
    local texts = { [0] = core.process_metrics() }
    local up = { "# HELP luaserv_worker_up Whether the worker answered the "
                 .. "master's scrape (1) or not (0).\n# TYPE luaserv_worker_up gauge\n" }
    for k, r in ipairs(_M.each("metrics")) do
        if r.ok then texts[k] = r.body .. "\n" end
        up[#up + 1] = format('luaserv_worker_up{worker="%d"} %d\n', k, r.ok and 1 or 0)
    end
    return _M.merge_metrics(texts) .. concat(up)
end

return _M

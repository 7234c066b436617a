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
local sort = table.sort
local tonumber = tonumber
local tostring = tostring

local _M = {}

-- How long a worker has to answer one command.
local TIMEOUT = 10

-- ask(k, line) -> true, body | false, error | nil, why the worker could
-- not be asked. Sends one admin command line to worker k and reads its
-- reply (a status line, the body, "."), undoing the dot-stuffing.
function _M.ask(k, line)
    local c, err = luaserv.connect(format("unix:%s/%d", core.control(), k),
                                   nil, { timeout = TIMEOUT })
    if not c then return nil, err end
    c:set_timeout(TIMEOUT)
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
    if err then return nil, "no reply (" .. tostring(err) .. ")" end
    if status == "ok" then return true, concat(body, "\n") end
    return false, status:match("^error: (.*)$") or status
end

-- each(line) -> { [k] = { ok = true|false|nil, body = ... } } for every
-- worker, asked one after another.
function _M.each(line)
    local res = {}
    for k = 1, luaserv.worker.count do
        local ok, body = _M.ask(k, line)
        res[k] = { ok = ok, body = body }
    end
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

-- reload() -> true, "worker K: reloaded" lines | false, why. Every
-- worker loads the new scripts without switching ("reload prepare");
-- only when all did do they switch ("reload commit"), otherwise every
-- worker drops them ("reload abort") and keeps the old ones.
function _M.reload()
    local prep = _M.each("reload prepare")
    local bad = failures(prep)
    if bad ~= "" then
        _M.each("reload abort " .. bad:gsub("\n", " "))
        local msg = "every worker keeps the old script: " .. bad
        luaserv.log.error("reload failed: " .. msg)
        return false, msg
    end
    local done = _M.each("reload commit")
    local lines = {}
    for k, r in ipairs(done) do
        lines[k] = format("worker %d: %s", k, r.ok and "reloaded"
                          or "kept the old script: " .. tostring(r.body))
    end
    luaserv.log.info(format("reloaded %d workers", luaserv.worker.count))
    return failures(done) == "", concat(lines, "\n")
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
        if r.ok then out[#out + 1] = format("worker %d: %s", i, r.body) end
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

-- merge_metrics(texts) -> one exposition: texts[k] is worker k's metrics
-- text (texts[0] the master's own). Every series gets a worker label;
-- the luaserv_* and handler-defined families also get worker="all", the
-- sum over the workers (process_* families are per process only).
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
                            sum = not name:match("^process_") }
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
                        if not fam.sums[key] then fam.keys[#fam.keys + 1] = key end
                        fam.sums[key] = (fam.sums[key] or 0) + (tonumber(value) or 0)
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
            local v = fam.sums[key]
            out[#out + 1] = format("%s%s %s\n", series, label(labels, "all"),
                                   math.tointeger(v) or format("%.17g", v))
        end
        for _, s in ipairs(fam.series) do out[#out + 1] = s .. "\n" end
    end
    return concat(out)
end

-- metrics() -> the whole server's /metrics text: every worker's (the
-- admin command `metrics`) and the master's process metrics, merged.
function _M.metrics()
    local texts = { [0] = core.process_metrics() }
    for k = 1, luaserv.worker.count do
        local ok, body = _M.ask(k, "metrics")
        if ok then texts[k] = body .. "\n" end
    end
    return _M.merge_metrics(texts)
end

return _M

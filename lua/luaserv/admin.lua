-- luaserv.admin: the handler behind --admin unix:/path. A line protocol:
-- the client sends one command a line; each reply is a status line ("ok"
-- or "error: message"), the body, and a line holding a single "."; body
-- lines starting with "." get one more ".". `luaserv-cli --admin PATH CMD`
-- speaks it. eval is exactly as powerful as editing the script, which is
-- why the admin socket is only ever a unix socket with mode 0600.
--
-- With --workers N the master serves it and asks every worker (each
-- serves this same handler on its own channel; see luaserv.control):
-- stats and metrics are summed, conns and eval listed per worker, and a
-- reload switches every worker or none.
local core = require "luaserv.core"
local luaserv = require "luaserv"
local control = luaserv.worker.id == 0 and core.control()
                and require "luaserv.control"

local concat = table.concat
local format = string.format
local load = load
local pack = table.pack
local pcall = pcall
local setmetatable = setmetatable
local sort = table.sort
local tostring = tostring

local handler = { framing = { "line", max = 1024 * 1024 } }

-- The body's dot-stuffing is two gsubs in C: a line-by-line loop in Lua
-- over a big eval result (17 MiB) outran --handler-timeout on a busy host.
local function reply(conn, ok, body)
    if not ok then
        conn:write("error: ", (tostring(body):gsub("\n", " ")), "\n.\n")
    elseif body and body ~= "" then
        body = tostring(body):gsub("^%.", ".."):gsub("\n%.", "\n..")
        conn:write("ok\n", body, "\n.\n")
    else
        conn:write("ok\n.\n")
    end
end

local function stats()
    local lines = {}
    local s = luaserv.stats()
    local keys = {}
    for k in pairs(s) do keys[#keys + 1] = k end
    sort(keys)
    for _, k in ipairs(keys) do lines[#lines + 1] = format("%s %s", k, s[k]) end
    for _, l in ipairs(core.listeners()) do
        lines[#lines + 1] = format("listener %s script=%s active=%d total=%d "
            .. "messages=%d errors=%d reloads=%d reload_failures=%d",
            l.name, l.script, l.connections_active, l.connections_total,
            l.messages, l.handler_errors, l.reloads, l.reload_failures)
        if l.tls_handshakes then        -- a tls:// listener's handshakes
            local f = l.tls_handshake_failures
            lines[#lines] = lines[#lines] .. format(" tls_handshakes=%d "
                .. "tls_resumed=%d tls_failures=%d", l.tls_handshakes,
                l.tls_resumed, f.protocol + f.version + f.certificate
                + f.timeout + f.eof + f.sni)
        end
    end
    return true, concat(lines, "\n")
end

local function conns()
    local lines = {}
    for _, c in ipairs(core.conns()) do
        lines[#lines + 1] = format("%d %s %s age=%.1fs in=%d out=%d messages=%d %s",
            c.id, c.peer, c.listener, c.age, c.bytes_in, c.bytes_out,
            c.messages, c.style)
    end
    return true, concat(lines, "\n")
end

-- eval CODE: runs in the server's Lua state, with `handler` (the current
-- handler table of the main script), `handlers` (every script's, by path)
-- and `luaserv` at hand; globals are the server's own. An expression's
-- values are printed; statements print nothing. It runs under a
-- --handler-timeout budget of its own and cannot wait (no sleep, no reads).
local function eval(code)
    local handlers, main = core.handlers()
    local env = setmetatable({ handler = handlers[main], handlers = handlers,
                               luaserv = luaserv }, { __index = _G,
                                                      __newindex = _G })
    local fn = load("return " .. code, "=eval", "t", env)
    if not fn then
        local err
        fn, err = load(code, "=eval", "t", env)
        if not fn then return false, err end
    end
    -- core.eval: a --handler-timeout budget of its own; an endless loop
    -- fails with "handler timeout", returned here.
    local res = pack(core.eval(fn))
    if not res[1] then return false, res[2] end
    local out = {}
    for i = 2, res.n do out[#out + 1] = tostring(res[i]) end
    return true, concat(out, "\t")
end

-- The metrics text /metrics serves (a master's: every worker's merged).
local function metrics()
    local m = require("luaserv.metrics")
    if control then return true, control.metrics() .. m.draining_text() end
    -- A worker's channel leaves luaserv_draining out: its master's says
    -- it for the whole server.
    local draining = luaserv.worker.count == 1 and m.draining_text() or ""
    return true, core.metrics() .. core.process_metrics() .. m.render()
                 .. draining
end

-- reload: every script, as SIGHUP. A master's workers also take it in
-- steps (see luaserv.control.reload), "reload prepare|commit|abort ID
-- [WHY]", on their channel only; a commit or an abort applies only to the
-- reload this worker prepared.
local prepared
local function reload(arg)
    if control then return control.reload() end
    local phase, id, why = arg:match("^(%S*)%s*(%S*)%s*(.-)$")
    local ok, err
    if phase == "" then
        ok, err = core.reload()
    elseif luaserv.worker.id == 0 or luaserv.worker.count < 2 then
        return false, "reload " .. phase .. ": only a master asks its workers that"
    elseif phase == "prepare" then
        prepared = nil
        ok, err = core.reload("prepare")
        if ok then prepared = id end
    elseif prepared ~= id then
        return false, ("reload %s is not the one prepared here (%s)")
                      :format(id, tostring(prepared))
    else
        prepared = nil
        ok, err = core.reload(phase, why)
    end
    if ok then return true, "ok" end
    return false, err
end

local function log_level(arg)
    if arg == "" then return true, core.log_level() end
    local ok, err = pcall(core.log_level, arg)
    if not ok then return false, "unknown level (debug, info, warn, error)" end
    if control then
        local bad = control.failures(control.each("log-level " .. arg))
        if bad ~= "" then return false, bad end
    end
    return true, err
end

local commands = {
    stats = control and control.stats or stats,
    conns = control and control.conns or conns,
    reload = reload,
    eval = control and control.eval or eval,
    metrics = metrics,
    ["log-level"] = log_level,
    workers = function() return true, tostring(luaserv.worker.count) end,
    shutdown = function()
        luaserv.timer.after(0, core.shutdown)
        return true, "shutting down"
    end,
    -- Waits for the new generation to serve (this process then drains,
    -- after this reply) or to fail (this one serves on).
    upgrade = function()
        local ok, err = core.upgrade()
        if not ok then return false, err end
        while true do
            luaserv.sleep(0.02)
            local state, msg = core.upgrade_status()
            if state ~= "running" then return state == "done", msg end
        end
    end,
    help = function()
        return true, "stats\nconns\nreload\neval LUA\neval --worker K LUA\n"
            .. "metrics\nlog-level [LEVEL]\nworkers\nupgrade\nshutdown\nquit"
    end,
}

function handler.handle(conn)
    while true do
        local line = conn:readline()
        if not line then return end
        local cmd, arg = line:match("^%s*(%S+)%s*(.-)%s*$")
        if cmd == "quit" then return end
        local fn = cmd and commands[cmd]
        if not fn then
            reply(conn, false, "unknown command " .. tostring(cmd)
                  .. " (try help)")
        else
            local ok, a, b = pcall(fn, arg)
            if ok then reply(conn, a, b) else reply(conn, false, a) end
        end
        conn:flush()
    end
end

return handler

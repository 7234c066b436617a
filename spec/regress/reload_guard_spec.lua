-- Loading a script runs under a time budget (issue 8, item 6): a script,
-- or a module it requires, that loops at load stops the start with exit
-- status 2, and fails a reload (SIGHUP or admin) that keeps the old
-- handler and says so; on_load has its own --load-timeout. And the rules
-- of a reload's hooks: on_load runs for every newly loaded script, then
-- on_reload(old); if either raises, nothing switches.
local helpers = require "helpers"
local op = require "fixtures.operations_util"

local SLOW = op.SLOW

-- A handler script of version v; mode "loop" loops at load,
-- "on_load_loop" loops in on_load, "on_reload_error" raises in on_reload.
-- EVENTS, a global, survives reloads and records the hooks that ran.
local function source(v, mode, module)
    return ([[
local VERSION, MODE, MODULE = %q, %q, %q
if MODE == "loop" then while true do end end
local mod = MODULE ~= "" and require(MODULE) or {}
EVENTS = EVENTS or {}
local handler = { framing = "line", version = VERSION }
function handler.on_load()
    EVENTS[#EVENTS + 1] = "load v" .. VERSION
    if MODE == "on_load_loop" then while true do end end
end
function handler.on_reload(old)
    EVENTS[#EVENTS + 1] = "reload v" .. VERSION .. " from v" .. old.version
    if MODE == "on_reload_error" then error("boom from on_reload") end
end
function handler.on_message(_, line)
    if line == "events" then return table.concat(EVENTS, ",") .. "\n" end
    return "v" .. VERSION .. tostring(mod.tag or "") .. " " .. line .. "\n"
end
return handler
]]):format(v, mode or "", module or "")
end

-- Replaces the file at path with text in one rename, as editors do.
local function write_atomic(path, text)
    helpers.write_file(path .. ".new", text)
    assert(os.rename(path .. ".new", path))
end

-- A fresh folder for a script and its module.
local function new_dir()
    local d = helpers.tmpname(".d")
    assert(os.execute("mkdir -p " .. helpers.shell_quote(d)))
    helpers.defer(function()
        os.execute("rm -rf " .. helpers.shell_quote(d))
    end)
    return d
end

-- Starts the script at path with an admin socket; returns the server and
-- the socket's path.
local function serve(path, args)
    local sock = op.sock_path()
    local all = { "--admin", "unix:" .. sock }
    for _, a in ipairs(args or {}) do all[#all + 1] = a end
    local srv = op.start{ script = path, args = all, announce = 2 }
    return srv, sock
end

describe("loading a script", function()
    it("that loops at start exits 2 with a clear message", function()
        local t0 = helpers.now()
        local srv = helpers.start_server{ source = source("1", "loop"),
                                          expect_ready = false }
        local status = srv:wait(6 * SLOW)
        io.stderr:write(("# looping script at start: exit %d after %.2f s\n")
            :format(status, helpers.now() - t0))
        assert.equal(2, status, srv:log())
        assert.matches("load timeout: loading the script took over 1 s",
                       srv:log(), 1, true)
        assert.matches(":2: load timeout", srv:log(), 1, true)
    end)

    it("whose on_load loops exits 2 after --load-timeout", function()
        local srv = helpers.start_server{ source = source("1", "on_load_loop"),
                                          args = { "--load-timeout", "0.5" },
                                          expect_ready = false }
        assert.equal(2, srv:wait(6 * SLOW), srv:log())
        assert.matches("on_load failed: .*on_load timeout: still running after "
                       .. "0.5 s %(%-%-load%-timeout%)", srv:log())
    end)

    it("reads load_timeout from the config file", function()
        local conf = helpers.write_file(helpers.tmpname(".lua"),
                                        "load_timeout = 0.5\n")
        local srv = helpers.start_server{ source = source("1", "on_load_loop"),
                                          args = { "-c", conf },
                                          expect_ready = false }
        assert.equal(2, srv:wait(6 * SLOW), srv:log())
        assert.matches("on_load timeout", srv:log(), 1, true)
    end)
end)

describe("a reload", function()
    it("on SIGHUP of a script that loops at load fails and keeps the old handler",
       function()
        local dir = new_dir()
        local path = helpers.write_file(dir .. "/h.lua", source("1"))
        local srv = serve(path)
        assert.equal("v1 a", op.ask(srv.port, "a"))
        write_atomic(path, source("2", "loop"))
        local t0 = helpers.now()
        os.execute("kill -HUP " .. srv.pid)
        local failed = "reload of " .. path .. " failed; the old handler stays"
        assert.truthy(helpers.wait_for(function()
            return srv:log():find(failed, 1, true)
        end, 5 * SLOW), srv:log())
        io.stderr:write(("# SIGHUP of a looping script: failure logged after "
            .. "%.2f s\n"):format(helpers.now() - t0))
        assert.matches("load timeout", srv:log(), 1, true)
        assert.equal("v1 b", op.ask(srv.port, "b", 5))
        t0 = helpers.now()
        assert.equal(0, srv:stop("TERM", 5 * SLOW))
        io.stderr:write(("# then SIGTERM exit in %.3f s\n"):format(helpers.now() - t0))
    end)

    it("from the admin socket, of a module that loops at load, fails with "
       .. "the error in the reply", function()
        local dir = new_dir()
        local name = "rgmod" .. tostring(os.time()):sub(-5)
        helpers.write_file(dir .. "/" .. name .. ".lua", "return { tag = 'm1' }\n")
        local path = helpers.write_file(dir .. "/h.lua", source("1", nil, name))
        local srv, sock = serve(path)
        assert.equal("v1m1 a", op.ask(srv.port, "a"))
        write_atomic(dir .. "/" .. name .. ".lua", "while true do end\n")
        local t0 = helpers.now()
        local status = op.admin_cmd(sock, "reload")
        io.stderr:write(("# admin reload of a looping module: reply after %.2f s\n")
            :format(helpers.now() - t0))
        assert.matches("^error: .*" .. name .. "%.lua:1: load timeout", status)
        assert.equal("v1m1 b", op.ask(srv.port, "b", 5))
        -- A good module then loads afresh.
        write_atomic(dir .. "/" .. name .. ".lua", "return { tag = 'm2' }\n")
        assert.equal("ok", (op.admin_cmd(sock, "reload")))
        assert.equal("v1m2 c", op.ask(srv.port, "c", 5))
        assert.equal(0, srv:stop("TERM", 5 * SLOW))
    end)

    it("whose on_load loops past --load-timeout fails and keeps the old handler",
       function()
        local dir = new_dir()
        local path = helpers.write_file(dir .. "/h.lua", source("1"))
        local srv, sock = serve(path, { "--load-timeout", "0.5" })
        write_atomic(path, source("2", "on_load_loop"))
        local status = op.admin_cmd(sock, "reload")
        assert.matches("^error: .*on_load failed: .*on_load timeout", status)
        assert.equal("v1 a", op.ask(srv.port, "a", 5))
        assert.equal(0, srv:stop("TERM", 5 * SLOW))
    end)

    it("whose on_reload raises keeps the old handler and reports the error",
       function()
        local dir = new_dir()
        local path = helpers.write_file(dir .. "/h.lua", source("1"))
        local srv, sock = serve(path)
        write_atomic(path, source("2", "on_reload_error"))
        local status = op.admin_cmd(sock, "reload")
        assert.matches("^error: .*on_reload failed: .*boom from on_reload", status)
        assert.equal("v1 a", op.ask(srv.port, "a", 5))
        assert.matches("reload of " .. path .. " failed; the old handler stays: "
                       .. "on_reload failed", srv:log(), 1, true)
        local _, per = op.stats(sock)
        local l
        for _, v in pairs(per) do
            if v.script == path then l = v end
        end
        assert.equal(1, l.reload_failures)
        assert.equal(0, l.reloads)
        assert.equal(0, srv:stop("TERM", 5 * SLOW))
    end)

    it("runs the new script's on_load, then its on_reload", function()
        local dir = new_dir()
        local path = helpers.write_file(dir .. "/h.lua", source("1"))
        local srv, sock = serve(path)
        assert.equal("load v1", op.ask(srv.port, "events"))
        write_atomic(path, source("2"))
        assert.equal("ok", (op.admin_cmd(sock, "reload")))
        assert.equal("load v1,load v2,reload v2 from v1", op.ask(srv.port, "events"))
        assert.equal("v2 a", op.ask(srv.port, "a"))
        assert.equal(0, srv:stop("TERM", 5 * SLOW))
    end)
end)

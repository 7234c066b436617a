-- Hot reload of handler scripts (the admin "reload" command, SIGHUP and
-- --watch): under load nothing is lost, a broken version keeps the old
-- handler, and what a reload keeps (on_reload, conn.state, running stream
-- tasks, luaserv's modules) and replaces (the script's own modules).
-- Scripts are copied from spec/fixtures/reload_* to a temp dir and rewritten
-- there, always atomically (a temp file, then os.rename).
local helpers = require "helpers"
local socket = require "socket"
local unix = require "socket.unix"

local SLOWDOWN = helpers.sanitize and 3 or 1
local TIMEOUT = 10 * SLOWDOWN
-- how soon --watch must notice a change (it settles for 0.1 s)
local WATCH_WITHIN = 2 * SLOWDOWN
local FIXTURES = "spec/fixtures/"
local LOAD_DRIVER = FIXTURES .. "reload_traffic.py"
local RELOADS = 20
local INTERVAL = 0.05      -- seconds between reloads under load
local CONNS = 50
local q = helpers.shell_quote

-- Temp dirs and client sockets of the current test, removed in after_each.
local dirs, socks, drivers = {}, {}, {}

local function new_dir()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -m 700 " .. q(dir)))
    dirs[#dirs + 1] = dir
    return dir
end

local function track(s)
    socks[#socks + 1] = s
    return s
end

-- Writes text to path atomically: a temp file beside it, then a rename.
local function write_atomic(path, text)
    local tmp = path .. ".new"
    helpers.write_file(tmp, text)
    assert(os.rename(tmp, path))
    return path
end

local function fixture(name)
    return assert(helpers.read_file(FIXTURES .. name), "no fixture " .. name)
end

-- Replaces the one line of src that starts with prefix by new_line.
local function replace_line(src, prefix, new_line)
    local out, found = {}, false
    for line in (src .. "\n"):gmatch("(.-)\n") do
        if not found and line:sub(1, #prefix) == prefix then
            line, found = new_line, true
        end
        out[#out + 1] = line
    end
    assert(found, "no line starting with " .. prefix)
    return table.concat(out, "\n")
end

-- The number of the first line of src that starts with prefix.
local function line_of(src, prefix)
    local n = 0
    for line in (src .. "\n"):gmatch("(.-)\n") do
        n = n + 1
        if line:sub(1, #prefix) == prefix then return n end
    end
    error("no line starting with " .. prefix)
end

-- src with its line `NAME = "..."` (name is "local VERSION", say) set to
-- NAME = "v".
local function set_string(src, name, v)
    return replace_line(src, name .. " = ", ("%s = %q"):format(name, v))
end

-- reload_echo.lua answering "<fmt>:<line>".
local ECHO = fixture("reload_echo.lua")
local FORMAT_LINE = "local FORMAT = "
local function echo_version(fmt)
    return set_string(ECHO, "local FORMAT", fmt)
end

-- Broken versions of reload_echo.lua, each with the line its error names.
local BROKEN = {
    { kind = "a syntax error",
      src = replace_line(ECHO, FORMAT_LINE, 'local FORMAT = = "X"'),
      line = line_of(ECHO, FORMAT_LINE) },
    { kind = "a runtime error at load",
      src = replace_line(ECHO, FORMAT_LINE,
                         'local FORMAT = error("broken on purpose")'),
      line = line_of(ECHO, FORMAT_LINE) },
    { kind = "a non-table return",
      src = replace_line(ECHO, "return handler", 'return "not a table"'),
      line = line_of(ECHO, "return handler") },
}

-- How many times the plain text what occurs in s.
local function count(s, what)
    local n, at = 0, 1
    while true do
        local i, j = s:find(what, at, true)
        if not i then return n end
        n, at = n + 1, j + 1
    end
end

local function sleep_until(t)
    local d = t - helpers.now()
    if d > 0 then socket.sleep(d) end
end

-- --- the server and its admin socket ---------------------------------------

-- Starts luaserv on script with an admin socket in dir; srv.tcp is the TCP
-- port, srv.admin the admin socket's path.
local function serve(dir, script, extra)
    local admin_path = dir .. "/admin.sock"
    local args = { "--admin", "unix:" .. admin_path }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    local srv = helpers.start_server{ script = script, args = args }
    for _, a in ipairs(srv.addrs) do
        if a.kind == "tcp" then srv.tcp = tonumber(a.addr:match(":(%d+)$")) end
    end
    assert(srv.tcp, "no TCP listener in:\n" .. srv:log())
    srv.admin = admin_path
    return srv
end

-- Writes src as name in a new temp dir and serves it. Returns the server,
-- the script's path and the dir.
local function serve_new(name, src, extra)
    local dir = new_dir()
    local script = write_atomic(dir .. "/" .. name, src)
    return serve(dir, script, extra), script, dir
end

-- A connection to the admin socket (it may still be opening).
local function admin_connect(srv)
    local c
    helpers.wait_for(function()
        c = assert(unix.stream())
        c:settimeout(TIMEOUT)
        if c:connect(srv.admin) then return true end
        c:close()
        c = nil
    end, TIMEOUT)
    assert(c, "cannot connect to the admin socket " .. srv.admin)
    return track(c)
end

-- Sends an admin command; returns true, body lines or false, the message.
local function admin(c, cmd)
    assert(c:send(cmd .. "\n"))
    local status = assert(c:receive("*l"))
    local body = {}
    while true do
        local line = assert(c:receive("*l"))
        if line == "." then break end
        if line:sub(1, 1) == "." then line = line:sub(2) end
        body[#body + 1] = line
    end
    if status == "ok" then return true, body end
    return false, status:match("^error: (.*)$") or status
end

-- The admin "stats" counters: the global ones by name, and the listener
-- running script as .listener = { active, reloads, reload_failures }.
local function stats(c, script)
    local ok, body = admin(c, "stats")
    assert(ok, body)
    local s = {}
    for _, line in ipairs(body) do
        local k, v = line:match("^(%S+) (%d+)$")
        if k then s[k] = tonumber(v) end
        if line:find(" script=" .. script .. " ", 1, true) then
            s.listener = {}
            for key, n in line:gmatch("(%S+)=(%d+)") do
                s.listener[key] = tonumber(n)
            end
        end
    end
    assert(s.listener, "no listener for " .. script .. " in:\n" ..
           table.concat(body, "\n"))
    return s
end

-- Sends line on c and returns the reply line.
local function ask(c, line)
    assert(c:send(line .. "\n"))
    return assert(c:receive("*l"))
end

-- The reload times "reloaded PATH in X ms" logged for path, in order.
local function reload_times(log, path)
    local times = {}
    local pat = "reloaded " .. path:gsub("%p", "%%%0") .. " in ([%d.]+) ms"
    for ms in log:gmatch(pat) do times[#times + 1] = tonumber(ms) end
    return times
end

local function median(list)
    local s = {}
    for i, v in ipairs(list) do s[i] = v end
    table.sort(s)
    if #s == 0 then return nil end
    if #s % 2 == 1 then return s[(#s + 1) // 2] end
    return (s[#s // 2] + s[#s // 2 + 1]) / 2
end

-- --- the load driver (reload_traffic.py) --------------------------------

-- Starts CONNS pipelining clients on port; returns once each got a reply.
local function start_load(dir, port, final)
    local d = { stop = dir .. "/stop" }
    local cmd = ("python3 %s %d %d %s %d A,B %s 2>&1"):format(
        q(LOAD_DRIVER), port, CONNS, q(d.stop), 60 * SLOWDOWN, final)
    d.pipe = assert(io.popen(cmd, "r"))
    drivers[#drivers + 1] = d
    local first = d.pipe:read("l")
    if first ~= "ready" then
        error("the load driver failed:\n" .. tostring(first) .. "\n"
              .. (d.pipe:read("a") or ""), 2)
    end
    return d
end

-- Stops the driver; returns its summary as a table and its full output.
local function finish_load(d)
    helpers.write_file(d.stop, "")
    local out = d.pipe:read("a")
    d.pipe:close()
    d.pipe = nil
    local summary = {}
    local line = out:match("summary ([^\n]*)")
    assert(line, "no summary from the load driver:\n" .. out)
    for k, v in line:gmatch("(%S+)=(%d+)") do summary[k] = tonumber(v) end
    return summary, out
end

-- What every load run must show: all requests answered once, well formed,
-- on connections that stayed up to the end.
local function assert_nothing_lost(s, out, final)
    assert.equal(CONNS, s.connected, out)
    assert.equal(0, s.bad, out)
    assert.equal(0, s.extra, out)
    assert.equal(0, s.drops, out)
    assert.equal(0, s.stuck, out)
    assert.equal(0, s.timed_out, out)
    assert.equal(s.sent, s.replies, out)
    assert.equal(CONNS, s.final_ok, final .. " expected at the end:\n" .. out)
    assert.equal(CONNS, s.clean, out)
    -- both formats served, and connections saw the switch while open
    assert.is_true(s.A > 0 and s.B > 0, out)
    assert.is_true(s.switches > 0, out)
end

after_each(function()
    for i = #drivers, 1, -1 do
        local d = drivers[i]
        if d.pipe then
            helpers.write_file(d.stop, "")
            d.pipe:close()
        end
        drivers[i] = nil
    end
    for i = #socks, 1, -1 do
        socks[i]:close()
        socks[i] = nil
    end
    for i = #dirs, 1, -1 do
        os.execute("rm -rf " .. q(dirs[i]))
        dirs[i] = nil
    end
end)

describe("hot reload under load", function()
    it("answers every request once, in either format, through 20 reloads",
       function()
        local srv, script, dir = serve_new("reload_echo.lua", echo_version("A"))
        local ctl = admin_connect(srv)
        local probe = track(helpers.connect(srv.tcp, TIMEOUT))
        assert.equal("A:probe", ask(probe, "probe"))
        local load = start_load(dir, srv.tcp, "A")

        local errors, wrong, round_trips = {}, {}, {}
        local t0 = helpers.now()
        for k = 1, RELOADS do
            sleep_until(t0 + k * INTERVAL)
            local fmt = k % 2 == 1 and "B" or "A"
            write_atomic(script, echo_version(fmt))
            local t = helpers.now()
            local ok, msg = admin(ctl, "reload")
            round_trips[k] = (helpers.now() - t) * 1000
            if not ok then errors[#errors + 1] = k .. ": " .. msg end
            -- the reply to "reload" comes after the swap
            local got = ask(probe, "probe " .. k)
            if got ~= fmt .. ":probe " .. k then
                wrong[#wrong + 1] = ("after reload %d: %s"):format(k, got)
            end
        end
        local elapsed = helpers.now() - t0
        socket.sleep(0.2)     -- the last version serves for a while too
        local summary, out = finish_load(load)

        assert.same({}, errors)
        assert.same({}, wrong)
        assert_nothing_lost(summary, out, "A")
        local s = stats(ctl, script)
        assert.equal(RELOADS, s.listener.reloads)
        assert.equal(0, s.listener.reload_failures)
        assert.equal(0, s.handler_errors)
        probe:close()
        -- no connection outlives its client
        assert.truthy(helpers.wait_for(function()
            return stats(ctl, script).listener.active == 0
        end, TIMEOUT), "connections still active")

        local log = srv:log()
        local times = reload_times(log, script)
        assert.equal(RELOADS, #times, log)
        -- the server's own measure ("reloaded PATH in X ms", 0.1 ms steps)
        -- and the admin "reload" round trip seen by this client
        io.stderr:write(("# reload under load (%s build, %d conns, %d "
            .. "requests, %d reloads in %.2f s): logged median %.2f ms "
            .. "(max %.2f); admin round trip median %.2f ms (max %.2f)\n")
            :format(helpers.sanitize and "asan" or "plain", CONNS,
                    summary.replies, RELOADS, elapsed, median(times),
                    math.max(table.unpack(times)), median(round_trips),
                    math.max(table.unpack(round_trips))))
        assert.equal(0, srv:stop(nil, TIMEOUT))
    end)

    it("keeps the old handler through 10 broken reloads out of 20", function()
        local srv, script, dir = serve_new("reload_echo.lua", echo_version("A"))
        local ctl = admin_connect(srv)
        local probe = track(helpers.connect(srv.tcp, TIMEOUT))
        local load = start_load(dir, srv.tcp, "A")

        local problems = {}
        local good, fmt = 0, "A"
        local t0 = helpers.now()
        for k = 1, RELOADS do
            sleep_until(t0 + k * INTERVAL)
            local broken
            if k % 2 == 1 then
                good = good + 1
                fmt = good % 2 == 1 and "B" or "A"
                write_atomic(script, echo_version(fmt))
            else
                broken = BROKEN[(k // 2 - 1) % #BROKEN + 1]
                write_atomic(script, broken.src)
            end
            local ok, msg = admin(ctl, "reload")
            if broken then
                local where = script .. ":" .. broken.line .. ":"
                if ok then
                    problems[#problems + 1] = k .. ": " .. broken.kind
                        .. " reloaded"
                elseif broken.kind == "a non-table return" then
                    -- the line is asserted in its own spec below
                    if not msg:find(script, 1, true) then
                        problems[#problems + 1] = k .. ": " .. msg
                    end
                elseif not msg:find(where, 1, true) then
                    problems[#problems + 1] = ("%d: %s: %q does not name %s")
                        :format(k, broken.kind, msg, where)
                end
            elseif not ok then
                problems[#problems + 1] = k .. ": " .. msg
            end
            local got = ask(probe, "probe " .. k)
            if got ~= fmt .. ":probe " .. k then
                problems[#problems + 1] = ("after reload %d: %s, want %s")
                    :format(k, got, fmt)
            end
        end
        socket.sleep(0.2)
        local summary, out = finish_load(load)

        assert.same({}, problems)
        assert_nothing_lost(summary, out, "A")
        local s = stats(ctl, script)
        assert.equal(RELOADS / 2, s.listener.reloads)
        assert.equal(RELOADS / 2, s.listener.reload_failures)
        assert.equal(0, s.handler_errors)
        probe:close()
        assert.truthy(helpers.wait_for(function()
            return stats(ctl, script).listener.active == 0
        end, TIMEOUT), "connections still active")

        local times = reload_times(srv:log(), script)
        assert.equal(RELOADS / 2, #times)
        io.stderr:write(("# reload under load, every other one broken (%s "
            .. "build): logged median %.2f ms over %d good reloads\n")
            :format(helpers.sanitize and "asan" or "plain", median(times),
                    #times))
        assert.equal(0, srv:stop(nil, TIMEOUT))
    end)
end)

describe("a reload", function()
    it("runs the new table's on_reload with the old table, to carry state",
       function()
        local src = fixture("reload_state.lua")
        local srv, script = serve_new("reload_state.lua", src)
        local ctl = admin_connect(srv)
        for i = 1, 3 do
            local c = track(helpers.connect(srv.tcp, TIMEOUT))
            assert.equal(("v1 count=%d conn=1 from=none"):format(i),
                         ask(c, "hi"))
            c:close()
        end
        write_atomic(script, set_string(src, "local VERSION", "2"))
        assert.same({ true, { "ok" } }, { admin(ctl, "reload") })
        local c = track(helpers.connect(srv.tcp, TIMEOUT))
        assert.equal("v2 count=4 conn=1 from=v1", ask(c, "hi"))
        write_atomic(script, set_string(src, "local VERSION", "3"))
        assert.same({ true, { "ok" } }, { admin(ctl, "reload") })
        assert.equal("v3 count=5 conn=2 from=v2", ask(c, "hi"))
    end)

    it("keeps conn.state of an open callback-style connection", function()
        local src = fixture("reload_state.lua")
        local srv, script = serve_new("reload_state.lua", src)
        local ctl = admin_connect(srv)
        local c = track(helpers.connect(srv.tcp, TIMEOUT))
        assert.equal("v1 count=1 conn=1 from=none", ask(c, "a"))
        assert.equal("v1 count=2 conn=2 from=none", ask(c, "b"))
        write_atomic(script, set_string(src, "local VERSION", "2"))
        assert.same({ true, { "ok" } }, { admin(ctl, "reload") })
        assert.equal("v2 count=3 conn=3 from=v1", ask(c, "c"))
        local other = track(helpers.connect(srv.tcp, TIMEOUT))
        assert.equal("v2 count=4 conn=1 from=v1", ask(other, "d"))
        assert.equal("v2 count=5 conn=4 from=v1", ask(c, "e"))
    end)

    it("keeps an open connection's framing when the new handler changes "
       .. "it; new connections get the new framing", function()
        local function version(v, framing)
            return ("local handler = { framing = %s }\n"
                .. "function handler.on_message(_, m)\n"
                .. "    return 'v%d:' .. m .. '\\n'\n"
                .. "end\n"
                .. "return handler\n"):format(framing, v)
        end
        local srv, script = serve_new("reload_framing.lua",
                                      version(1, '{ "line" }'))
        local ctl = admin_connect(srv)
        local old = track(helpers.connect(srv.tcp, TIMEOUT))
        assert.equal("v1:a", ask(old, "a"))
        write_atomic(script, version(2, '{ "delim", ";" }'))
        assert.same({ true, { "ok" } }, { admin(ctl, "reload") })
        for _ = 1, 2 do
            local new = track(helpers.connect(srv.tcp, TIMEOUT))
            assert(new:send("b;c;"))
            assert.equal("v2:b", new:receive("*l"))
            assert.equal("v2:c", new:receive("*l"))
        end
        assert.equal("v2:d", ask(old, "d"))     -- still lines
        write_atomic(script, version(3, '{ "line" }'))
        assert.same({ true, { "ok" } }, { admin(ctl, "reload") })
        local third = track(helpers.connect(srv.tcp, TIMEOUT))
        assert.equal("v3:e", ask(third, "e"))
        assert.equal("v3:f", ask(old, "f"))
        assert.equal(0, srv:stop(nil, TIMEOUT))
    end)

    it("lets a running stream task go on with the old code, new connections "
       .. "get the new", function()
        local src = fixture("reload_stream.lua")
        local srv, script = serve_new("reload_stream.lua", src)
        local ctl = admin_connect(srv)
        local old = track(helpers.connect(srv.tcp, TIMEOUT))
        assert.equal("1:x", ask(old, "x"))
        write_atomic(script, set_string(src, "local VERSION", "2"))
        assert.same({ true, { "ok" } }, { admin(ctl, "reload") })
        local new = track(helpers.connect(srv.tcp, TIMEOUT))
        assert.equal("2:y", ask(new, "y"))
        assert.equal("1:z", ask(old, "z"))
        assert.equal("2:w", ask(new, "w"))
        -- the old task ends when its peer leaves; nothing leaks
        old:close()
        new:close()
        assert.truthy(helpers.wait_for(function()
            local s = stats(ctl, script)
            return s.listener.active == 0 and s.tasks == 1   -- admin's own
        end, TIMEOUT), "connections or tasks left")
        assert.equal(0, srv:stop(nil, TIMEOUT))
    end)

    it("loads the script's own modules afresh, and not luaserv's", function()
        local dir = new_dir()
        local mod = fixture("reload_module.lua")
        write_atomic(dir .. "/reload_module.lua", mod)
        local script = write_atomic(dir .. "/reload_requires_module.lua",
                                    fixture("reload_requires_module.lua"))
        local srv = serve(dir, script)
        local ctl = admin_connect(srv)
        local c = track(helpers.connect(srv.tcp, TIMEOUT))
        assert.equal("mod=1", ask(c, "mod"))
        local ss = ask(c, "ss")
        assert.matches("^ss=table: ", ss)
        write_atomic(dir .. "/reload_module.lua",
                     set_string(mod, "_M.VERSION", "2"))
        assert.same({ true, { "ok" } }, { admin(ctl, "reload") })
        assert.equal("mod=2", ask(c, "mod"))
        assert.equal(ss, ask(c, "ss"))
        assert.equal(0, srv:stop(nil, TIMEOUT))
    end)

    it("loads a module afresh that only a failed reload had required",
       function()
        local dir = new_dir()
        local mod = fixture("reload_module.lua")
        write_atomic(dir .. "/reload_module.lua", mod)
        local script = write_atomic(dir .. "/reload_echo.lua", ECHO)
        local srv = serve(dir, script)
        local ctl = admin_connect(srv)
        local c = track(helpers.connect(srv.tcp, TIMEOUT))
        assert.equal("A:x", ask(c, "x"))
        -- requires reload_module (version 1), then fails
        write_atomic(script, replace_line(ECHO, FORMAT_LINE,
            'local FORMAT = require("reload_module").VERSION .. error("broken")'))
        assert.is_false(admin(ctl, "reload"))
        assert.equal("A:x", ask(c, "x"))
        write_atomic(dir .. "/reload_module.lua",
                     set_string(mod, "_M.VERSION", "2"))
        write_atomic(script, replace_line(ECHO, FORMAT_LINE,
            'local FORMAT = require("reload_module").VERSION'))
        assert.same({ true, { "ok" } }, { admin(ctl, "reload") })
        assert.equal("2:x", ask(c, "x"))
    end)
end)

describe("reload triggers", function()
    it("reloads on SIGHUP", function()
        local srv, script = serve_new("reload_echo.lua", echo_version("A"))
        local ctl = admin_connect(srv)
        local c = track(helpers.connect(srv.tcp, TIMEOUT))
        assert.equal("A:x", ask(c, "x"))
        write_atomic(script, echo_version("B"))
        assert(os.execute("kill -HUP " .. srv.pid))
        assert.truthy(helpers.wait_for(function()
            return ask(c, "x") == "B:x"
        end, TIMEOUT), srv:log())
        assert.matches("SIGHUP: reloading", srv:log())
        assert.equal(1, stats(ctl, script).listener.reloads)
        assert.is_true(srv:alive())
    end)

    it("reloads with --watch soon after the script changes, each time",
       function()
        local srv, script = serve_new("reload_echo.lua", echo_version("A"),
                                      { "--watch" })
        local ctl = admin_connect(srv)
        local c = track(helpers.connect(srv.tcp, TIMEOUT))
        assert.equal("A:x", ask(c, "x"))
        local failed = "reload of " .. script .. " failed"
        -- an editor's saves: good, broken (the old handler stays), good
        for i, fmt in ipairs({ "B", "A", false, "B" }) do
            socket.sleep(0.3)      -- apart from the last change's settling
            write_atomic(script, fmt and echo_version(fmt) or BROKEN[1].src)
            local t0 = helpers.now()
            assert.truthy(helpers.wait_for(function()
                if not fmt then return count(srv:log(), failed) == 1 end
                return ask(c, "x") == fmt .. ":x"
            end, WATCH_WITHIN), ("change %d not seen in %g s:\n%s")
                :format(i, WATCH_WITHIN, srv:log()))
            assert.is_true(helpers.now() - t0 < WATCH_WITHIN)
            if not fmt then assert.equal("A:x", ask(c, "x")) end
        end
        local s = stats(ctl, script)
        assert.is_true(s.listener.reloads >= 3)
        assert.equal(1, s.listener.reload_failures)
        assert.equal(0, srv:stop(nil, TIMEOUT))
    end)

    it("reloads with --watch after a module of the script changes", function()
        local dir = new_dir()
        local mod = fixture("reload_module.lua")
        write_atomic(dir .. "/reload_module.lua", mod)
        local script = write_atomic(dir .. "/reload_requires_module.lua",
                                    fixture("reload_requires_module.lua"))
        local srv = serve(dir, script, { "--watch" })
        local c = track(helpers.connect(srv.tcp, TIMEOUT))
        assert.equal("mod=1", ask(c, "mod"))
        for v = 2, 3 do
            socket.sleep(0.3)
            write_atomic(dir .. "/reload_module.lua",
                         set_string(mod, "_M.VERSION", tostring(v)))
            assert.truthy(helpers.wait_for(function()
                return ask(c, "mod") == "mod=" .. v
            end, WATCH_WITHIN), srv:log())
        end
        assert.equal(0, srv:stop(nil, TIMEOUT))
    end)

    it("answers luaserv-cli --admin PATH reload: exit 0, or 1 and the error",
       function()
        local srv, script = serve_new("reload_echo.lua", echo_version("A"))
        admin_connect(srv):close()      -- the admin socket is up
        local c = track(helpers.connect(srv.tcp, TIMEOUT))
        write_atomic(script, echo_version("B"))
        local status, out = helpers.run(helpers.cli,
                                        "--admin " .. q(srv.admin) .. " reload")
        assert.equal(0, status, out)
        assert.equal("B:x", ask(c, "x"))
        local broken = BROKEN[1]
        write_atomic(script, broken.src)
        status, out = helpers.run(helpers.cli,
                                  "--admin " .. q(srv.admin) .. " reload")
        assert.equal(1, status, out)
        assert.matches("error: ", out, 1, true)
        assert.truthy(out:find(script .. ":" .. broken.line .. ":", 1, true),
                      out)
        assert.equal("B:x", ask(c, "x"))
    end)
end)

describe("a failed reload", function()
    it("logs the error with file:line and keeps the old handler", function()
        local srv, script = serve_new("reload_echo.lua", echo_version("A"))
        local ctl = admin_connect(srv)
        local c = track(helpers.connect(srv.tcp, TIMEOUT))
        for i, broken in ipairs(BROKEN) do
            write_atomic(script, broken.src)
            assert(os.execute("kill -HUP " .. srv.pid))
            local head = "reload of " .. script .. " failed; the old handler "
                         .. "stays: " .. script
            assert.truthy(helpers.wait_for(function()
                return count(srv:log(), head) >= i
            end, TIMEOUT), srv:log())
            assert.equal("A:x", ask(c, "x"))
            if broken.kind ~= "a non-table return" then
                assert.truthy(srv:log():find(head .. ":" .. broken.line .. ": ",
                                             1, true), srv:log())
            end
        end
        local s = stats(ctl, script)
        assert.equal(0, s.listener.reloads)
        assert.equal(#BROKEN, s.listener.reload_failures)
        assert.equal(0, srv:stop(nil, TIMEOUT))
    end)

    it("names the line of the return for a script that returns no table",
       function()
        local srv, script = serve_new("reload_echo.lua", echo_version("A"))
        local ctl = admin_connect(srv)
        local broken = BROKEN[3]
        write_atomic(script, broken.src)
        local ok, msg = admin(ctl, "reload")
        assert.is_false(ok)
        -- docs/handler-api.md: a script that fails to load is reported as
        -- SCRIPT:LINE: message, which a non-table return does not get yet
        assert.matches("must return a handler table", msg, 1, true)
        assert.truthy(msg:find(script .. ":" .. broken.line .. ":", 1, true),
                      msg)
    end)
end)

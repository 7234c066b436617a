-- SIGUSR2: a zero-downtime binary upgrade. The server execs its binary
-- again with the same arguments, passing its listening sockets by fd; the
-- new generation loads the script and says it is ready, and only then
-- does the old one stop accepting, drain and exit 0. Clients connecting
-- in a loop through it see no refused or reset connection. A new
-- generation that fails to start leaves the old one serving.
local helpers = require "helpers"

local FIXTURE = "spec/fixtures/workers_echo.lua"
local SLOWDOWN = helpers.sanitize and 3 or 1

-- Clients in threads, each connecting in a loop, one line per
-- connection, until the stop file appears (or the bounds: 20000
-- connections each, 60 s). Prints one line per outcome:
-- "ok PID", or "fail WHAT" for a refused, reset or wrong answer. The
-- file OUT.going appears once 20 connections were answered.
local CLIENT = [[
import os, socket, sys, threading, time
port, out, stop, threads = int(sys.argv[1]), sys.argv[2], sys.argv[3], 4
lines, lock = [], threading.Lock()
def run(t):
    deadline = time.time() + 60
    for i in range(20000):
        if os.path.exists(stop) or time.time() > deadline:
            break
        msg = "t%d-%d" % (t, i)
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall((msg + "\n").encode())
            got = b""
            while not got.endswith(b"\n"):
                b = s.recv(4096)
                if not b:
                    break
                got += b
            s.close()
            parts = got.decode().split()
            if len(parts) == 3 and parts[2] == msg:
                r = "ok " + parts[1]
            else:
                r = "fail wrong answer %r" % got
        except Exception as e:
            r = "fail %s: %s" % (type(e).__name__, e)
        with lock:
            lines.append(r)
            if len(lines) == 20:
                open(out + ".going", "w").close()
ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
with open(out + ".tmp", "w") as f:
    f.write("\n".join(lines) + "\n")
os.rename(out + ".tmp", out)
]]

-- Whether process pid runs (a zombie, or no such process, does not).
local function running(pid)
    local stat = helpers.read_file("/proc/" .. pid .. "/stat")
    return stat ~= nil and stat:match("^%d+ %b() (%a)") ~= "Z"
end

-- The pid the pid file at path holds, or nil.
local function pid_in(path)
    local s = helpers.read_file(path)
    return s and tonumber(s:match("^(%d+)\n$"))
end

-- Stops pid (a generation this test started) by TERM, then KILL.
local function stop_pid(pid)
    if not pid or not running(pid) then return end
    os.execute("kill -TERM " .. pid .. " 2>/dev/null")
    if not helpers.wait_for(function() return not running(pid) end,
                            10 * SLOWDOWN) then
        os.execute("kill -KILL " .. pid .. " 2>/dev/null")
    end
end

-- Starts the fixture with a pid file and extra args, in a copy of the
-- script a test may break (opts.bin: the binary to run). Returns the server
-- and the pid file's path.
local function start(args, opts)
    local script = helpers.write_file(helpers.tmpname(".lua"),
                                      assert(helpers.read_file(FIXTURE)))
    local pid_file = helpers.tmpname(".pid")
    local a = { "--pid-file", pid_file, "--shutdown-timeout", "5" }
    for _, x in ipairs(args or {}) do a[#a + 1] = x end
    local srv = helpers.start_server({ script = script, args = a,
                                       bin = opts and opts.bin })
    helpers.defer(function() stop_pid(pid_in(pid_file)) end)
    helpers.defer(function() os.remove(script) end)
    return srv, pid_file
end

-- Runs the client loop on port in the background and waits for its first
-- answers; returns a function that stops it and returns
-- { ok = n, by = { [pid] = n }, fails = { line, ... } }.
local function clients(port)
    local py = helpers.write_file(helpers.tmpname(".py"), CLIENT)
    local out, stop = helpers.tmpname(".out"), helpers.tmpname(".stop")
    os.execute(("python3 %s %d %s %s >/dev/null 2>&1 &"):format(
        helpers.shell_quote(py), port, helpers.shell_quote(out),
        helpers.shell_quote(stop)))
    local function finish()
        helpers.write_file(stop, "")
        local text = helpers.wait_until(function()
            return helpers.read_file(out)
        end, 30 * SLOWDOWN, "the clients to finish")
        os.remove(py); os.remove(out); os.remove(stop)
        os.remove(out .. ".going")
        local r = { ok = 0, by = {}, fails = {} }
        for line in text:gmatch("[^\n]+") do
            local pid = line:match("^ok (%d+)$")
            if pid then
                r.ok = r.ok + 1
                r.by[tonumber(pid)] = (r.by[tonumber(pid)] or 0) + 1
            else
                r.fails[#r.fails + 1] = line
            end
        end
        return r
    end
    helpers.wait_until(function() return helpers.read_file(out .. ".going")
                       end, 10 * SLOWDOWN, "the clients' first answers")
    return finish
end

describe("SIGUSR2", function()
    it("writes the pid file at start and removes it at a clean exit",
       function()
        local srv, pid_file = start()
        assert.equal(srv.pid, helpers.wait_until(function()
            return pid_in(pid_file)
        end, 5, "the pid file"))
        assert.equal(0, srv:stop())
        assert.is_nil(helpers.read_file(pid_file))
    end)

    -- The config file's pid_file: written, rewritten by an upgrade and
    -- removed at a clean exit as --pid-file's is; a flag overrides it.
    describe("the config's pid_file", function()
        -- Starts the fixture with a config naming a pid file, plus args.
        local function start_conf(args)
            local pid_file = helpers.tmpname(".pid")
            local conf = helpers.write_file(helpers.tmpname(".conf.lua"),
                ("pid_file = %q\nshutdown_timeout = 5\n"):format(pid_file))
            helpers.defer(function() os.remove(conf) end)
            local a = { "-c", conf }
            for _, x in ipairs(args or {}) do a[#a + 1] = x end
            local srv = helpers.start_server({ script = FIXTURE, args = a })
            helpers.defer(function() stop_pid(pid_in(pid_file)) end)
            return srv, pid_file
        end

        it("is written once serving, rewritten by an upgrade, removed at "
           .. "a clean exit", function()
            local srv, pid_file = start_conf()
            assert.equal(srv.pid, helpers.wait_until(function()
                return pid_in(pid_file)
            end, 5, "the pid file"))
            os.execute("kill -USR2 " .. srv.pid)
            assert.equal(0, srv:wait(20 * SLOWDOWN))
            local new = pid_in(pid_file)
            assert.is_true(new ~= nil and new ~= srv.pid and running(new),
                           srv:log())
            stop_pid(new)
            assert.is_false(running(new))
            assert.is_nil(helpers.read_file(pid_file))
        end)

        it("gives way to --pid-file", function()
            local flag_file = helpers.tmpname(".pid")
            local srv, pid_file = start_conf({ "--pid-file", flag_file })
            helpers.defer(function() os.remove(flag_file) end)
            assert.equal(srv.pid, helpers.wait_until(function()
                return pid_in(flag_file)
            end, 5, "the pid file"))
            assert.is_nil(helpers.read_file(pid_file))
            assert.equal(0, srv:stop())
            assert.is_nil(helpers.read_file(flag_file))
        end)

        it("is not written by --check", function()
            local pid_file = helpers.tmpname(".pid")
            local conf = helpers.write_file(helpers.tmpname(".conf.lua"),
                ("pid_file = %q\n"):format(pid_file))
            local status, out = helpers.run(helpers.luaserv, "-c " ..
                helpers.shell_quote(conf) .. " --check " .. FIXTURE)
            os.remove(conf)
            assert.equal(0, status, out)
            assert.is_nil(helpers.read_file(pid_file))
        end)
    end)

    -- The pids of the processes that ran on_load (the workers, or the
    -- single process) in log, before its first SIGUSR2 and after.
    local function handler_pids(log)
        local cut = log:find("SIGUSR2", 1, true) or #log + 1
        local old, new = {}, {}
        for at, pid in log:gmatch("()on_load in worker %d+ %(pid (%d+)%)") do
            table.insert(at < cut and old or new, tonumber(pid))
        end
        return old, new
    end

    -- How many of the answers in r came from the pids in list.
    local function answered_by(r, list)
        local n = 0
        for _, pid in ipairs(list) do n = n + (r.by[pid] or 0) end
        return n
    end

    for _, workers in ipairs({ 1, 2 }) do
        local mode = workers == 1 and "the single process" or
                     "a master of " .. workers .. " workers"
        local args = { "--workers", tostring(workers) }

        it("upgrades " .. mode .. " with no refused or reset connection",
           function()
            local sock = helpers.tmpname(".sock")
            local srv, pid_file = start({ "-l", "unix:" .. sock,
                                          table.unpack(args) })
            helpers.wait_until(function() return pid_in(pid_file) end, 5,
                               "the pid file")
            local finish = clients(srv.port)   -- answered by the old one
            os.execute("kill -USR2 " .. srv.pid)
            assert.equal(0, srv:wait(20 * SLOWDOWN))
            local new = pid_in(pid_file)
            assert.is_number(new)
            assert.are_not.equal(srv.pid, new)
            assert.is_true(running(new))
            local log = srv:log()
            local old_pids, new_pids = handler_pids(log)
            assert.equal(workers, #old_pids, log)
            assert.equal(workers, #new_pids, log)
            helpers.sleep(0.3 * SLOWDOWN)   -- and on against the new one
            local r = finish()
            assert.same({}, r.fails)
            assert.is_true(answered_by(r, old_pids) > 0, "the old answered none")
            assert.is_true(answered_by(r, new_pids) > 0, "the new answered none")
            assert.equal(r.ok, answered_by(r, old_pids) +
                               answered_by(r, new_pids))
            assert.truthy(log:find("upgrade: the new generation (pid " ..
                                   new .. ") serves", 1, true), log)
            -- The new generation serves the unix socket too, and removes
            -- its file and the pid file when it stops.
            local function is_socket()
                return os.execute("test -S " .. helpers.shell_quote(sock))
                       == true
            end
            assert.is_true(is_socket(), sock)
            local u = assert(require("socket.unix")())
            u:settimeout(5)
            assert(u:connect(sock))
            assert(u:send("unix\n"))
            local reply = assert(u:receive("*l"))
            u:close()
            local pid = tonumber(reply:match("^%d+/%d+ (%d+) unix$"))
            assert.is_true(answered_by({ by = { [pid or 0] = 1 } }, new_pids)
                           == 1, reply)
            stop_pid(new)
            assert.is_false(is_socket(), sock)
            assert.is_nil(helpers.read_file(pid_file))
        end)

        it("keeps " .. mode .. " serving when the new one cannot load",
           function()
            local srv, pid_file = start(args)
            helpers.wait_until(function() return pid_in(pid_file) end, 5,
                               "the pid file")
            helpers.write_file(srv.script, "error('broken on purpose')\n")
            os.execute("kill -USR2 " .. srv.pid)
            local log = helpers.wait_until(function()
                local l = srv:log()
                return l:find("upgrade failed", 1, true) and l
            end, 10 * SLOWDOWN, "the failure to be logged")
            assert.truthy(log:find("broken on purpose", 1, true), log)
            assert.truthy(log:find("exited with status 2 before it was " ..
                                   "serving", 1, true), log)
            assert.equal(srv.pid, pid_in(pid_file))
            assert.is_true(srv:alive())
            local old_pids = handler_pids(log)
            for i = 1, 4 do
                local c = helpers.connect(srv.port)
                assert(c:send("still " .. i .. "\n"))
                local reply = assert(c:receive("*l"))
                c:close()
                local pid = tonumber(reply:match("^%d+/%d+ (%d+) still"))
                assert.equal(1, answered_by({ by = { [pid or 0] = 1 } },
                                            old_pids), reply)
            end
            assert.equal(0, srv:stop())
        end)
    end

    -- After a failed upgrade: the old single process srv still holds the
    -- pid file, answers, and stops cleanly.
    local function serves_on(srv, pid_file)
        assert.equal(srv.pid, pid_in(pid_file))
        local c = helpers.connect(srv.port)
        assert(c:send("old\n"))
        assert.equal("1/1 " .. srv.pid .. " old", c:receive("*l"))
        c:close()
        assert.equal(0, srv:stop())
    end

    -- A new generation that hangs at load (never ready, never exits) is
    -- killed after --load-timeout + --handler-timeout + 5 s; the old one
    -- serves on and the admin client hears "timed out".
    it("kills a new generation that hangs at load and serves on", function()
        local op = require "fixtures.operations_util"
        local path = op.sock_path()
        local srv, pid_file = start({ "--admin", "unix:" .. path,
                                      "--load-timeout", "1",
                                      "--handler-timeout", "1" })
        helpers.wait_until(function() return pid_in(pid_file) end, 5,
                           "the pid file")
        -- Only the new generation reads this: it blocks in C (no Lua
        -- instruction for the guards to stop) for longer than the bound.
        helpers.write_file(srv.script, "os.execute('sleep 20')\n" ..
                           assert(helpers.read_file(FIXTURE)))
        local t0 = os.time()
        local status, body = op.admin_cmd(path, "upgrade")
        local took = os.time() - t0
        assert.truthy(status:find("^error: the new generation %(pid %d+%) " ..
                                  "timed out: not serving after 7 s; " ..
                                  "killed it$"), status)
        assert.equal("", body)
        assert.is_true(took >= 6 and took <= 20, took .. " s")
        local new = tonumber(status:match("pid (%d+)"))
        assert.is_true(helpers.wait_for(function() return not running(new)
                                        end, 5), "the new one still runs")
        local log = srv:log()
        assert.truthy(log:find("upgrade failed: the new generation (pid " ..
                               new .. ") timed out", 1, true), log)
        assert.is_true(srv:alive())
        serves_on(srv, pid_file)
    end)

    -- The same under a master: the new master and the workers it forked
    -- (stuck in the same load) are all gone; the old workers answer.
    it("kills a new master and its workers that hang at load", function()
        local srv, pid_file = start({ "--workers", "2", "--load-timeout",
                                      "1", "--handler-timeout", "1" })
        helpers.wait_until(function() return pid_in(pid_file) end, 5,
                           "the pid file")
        helpers.write_file(srv.script, "os.execute('sleep 20')\n" ..
                           assert(helpers.read_file(FIXTURE)))
        os.execute("kill -USR2 " .. srv.pid)
        local new = tonumber(helpers.wait_until(function()
            return srv:log():match("upgrade: started %S+ %(pid (%d+)%)")
        end, 5, "the new generation"))
        -- Its luaserv processes: itself and the workers it forked (the
        -- shell and sleep of os.execute are not luaserv, and outlive it).
        local function generation()
            local pids = { new }
            local p = io.popen("pgrep -P " .. new)
            for pid in p:read("a"):gmatch("%d+") do
                local comm = helpers.read_file("/proc/" .. pid .. "/comm")
                if comm and comm:match("^luaserv") then
                    pids[#pids + 1] = tonumber(pid)
                end
            end
            p:close()
            return pids
        end
        local pids = helpers.wait_until(function()
            local g = generation()
            return #g == 3 and g
        end, 5, "the new master's two workers")
        local log = helpers.wait_until(function()
            local l = srv:log()
            return l:find("upgrade failed", 1, true) and l
        end, 15 * SLOWDOWN, "the timeout")
        assert.truthy(log:find("upgrade failed: the new generation (pid " ..
                               new .. ") timed out: not serving after 7 s; " ..
                               "killed it", 1, true), log)
        for _, pid in ipairs(pids) do
            assert.is_true(helpers.wait_for(function()
                return not running(pid)
            end, 5), "pid " .. pid .. " still runs")
        end
        assert.equal(srv.pid, pid_in(pid_file))
        local c = helpers.connect(srv.port)
        assert(c:send("old\n"))
        local reply = assert(c:receive("*l"))
        c:close()
        local pid = tonumber(reply:match("^%d/2 (%d+) old$"))
        assert.is_true(pid ~= nil and running(pid), reply)
        assert.truthy(log:find("on_load in worker %d %(pid " .. pid .. "%)"),
                      reply)
        assert.equal(0, srv:stop())
    end)

    -- A copy of the binary at a path of its own, so a test can replace it
    -- (a new install) or remove it; returns the path.
    local function own_binary()
        local bin = helpers.tmpname(".bin")
        assert(os.execute(("cp %s %s && chmod +x %s"):format(
            helpers.shell_quote(helpers.luaserv), helpers.shell_quote(bin),
            helpers.shell_quote(bin))))
        helpers.defer(function() os.remove(bin) end)
        return bin
    end

    it("execs the build installed at its path at the time of the signal",
       function()
        local bin = own_binary()
        local srv, pid_file = start(nil, { bin = bin })
        helpers.wait_until(function() return pid_in(pid_file) end, 5,
                           "the pid file")
        -- "Install" a new build by rename: a script that says so and runs
        -- the real binary with the arguments it was given.
        local new_bin = helpers.write_file(bin .. ".new", ("#!/bin/sh\n" ..
            "echo 'the newly installed build runs' >&2\nexec %s \"$@\"\n")
            :format(helpers.shell_quote(helpers.luaserv)))
        assert(os.execute("chmod +x " .. helpers.shell_quote(new_bin)))
        assert(os.rename(new_bin, bin))
        os.execute("kill -USR2 " .. srv.pid)
        assert.equal(0, srv:wait(20 * SLOWDOWN))
        local log = srv:log()
        assert.truthy(log:find("the newly installed build runs", 1, true),
                      log)
        local new = pid_in(pid_file)
        assert.is_true(new ~= nil and new ~= srv.pid and running(new), log)
        local c = helpers.connect(srv.port)
        assert(c:send("new\n"))
        assert.equal("1/1 " .. new .. " new", c:receive("*l"))
        c:close()
    end)

    it("keeps serving when the binary cannot be executed", function()
        local bin = own_binary()
        local srv, pid_file = start(nil, { bin = bin })
        helpers.wait_until(function() return pid_in(pid_file) end, 5,
                           "the pid file")
        os.remove(bin)
        os.execute("kill -USR2 " .. srv.pid)
        local log = helpers.wait_until(function()
            local l = srv:log()
            return l:find("upgrade failed", 1, true) and l
        end, 10 * SLOWDOWN, "the failure to be logged")
        assert.truthy(log:find("upgrade failed: cannot exec " .. bin ..
                               ": No such file or directory", 1, true), log)
        serves_on(srv, pid_file)
    end)

    describe("the admin command upgrade", function()
        local op = require "fixtures.operations_util"

        it("replies once the new generation serves, then the old drains",
           function()
            local path = op.sock_path()
            local srv, pid_file = start({ "--admin", "unix:" .. path })
            helpers.wait_until(function() return pid_in(pid_file) end, 5,
                               "the pid file")
            local status, body = op.admin_cmd(path, "upgrade")
            assert.equal("ok", status, body)
            assert.equal(0, srv:wait(20 * SLOWDOWN))
            local new = pid_in(pid_file)
            assert.is_true(new ~= nil and new ~= srv.pid and running(new))
            assert.equal("the new generation (pid " .. new .. ") serves",
                         body)
            -- The new generation answers on the admin socket too.
            local s2, b2 = op.admin_cmd(path, "eval return " ..
                                        "io.open('/proc/self/stat'):read('n')")
            assert.equal("ok", s2, b2)
            assert.equal(tostring(new), b2)
        end)

        it("replies with why when the new generation cannot start",
           function()
            local path = op.sock_path()
            local srv, pid_file = start({ "--admin", "unix:" .. path })
            helpers.wait_until(function() return pid_in(pid_file) end, 5,
                               "the pid file")
            helpers.write_file(srv.script, "error('broken on purpose')\n")
            local status, body = op.admin_cmd(path, "upgrade")
            assert.truthy(status:find("^error: the new generation %(pid %d+%) "
                                      .. "exited with status 2 before it was "
                                      .. "serving"), status)
            assert.equal("", body)
            assert.truthy(srv:log():find("broken on purpose", 1, true))
            assert.equal(srv.pid, pid_in(pid_file))
            assert.equal("ok", (op.admin_cmd(path, "stats")))
            assert.equal(0, srv:stop())
        end)
    end)
end)

-- Runaway handler code does not freeze the server (issue 8, items 5 and
-- 7): a task looping on luaserv.sleep(0) or coroutine.yield() lets the
-- loop poll and SIGTERM through; a CPU-bound task is preempted every
-- --task-slice instructions and shares the loop; a callback handler has a
-- 1 s budget by default.
local helpers = require "helpers"

local SLOW = helpers.sanitize and 3 or 1

-- A line handler answering "ok LINE" and "stats" with luaserv.stats()
-- fields; on_load runs SPAWN (Lua text) once.
local function script(spawn, extra)
    return ([[
local luaserv = require "luaserv"
local handler = { framing = "line" }
function handler.on_load()
    %s
end
function handler.on_message(_, line)
    if line == "stats" then
        local s = luaserv.stats()
        return ("preemptions=%%d errors=%%d tasks=%%d\n"):format(
            s.preemptions or -1, s.handler_errors, s.tasks)
    end
    %s
    return "ok " .. line .. "\n"
end
return handler
]]):format(spawn, extra or "")
end

-- Sends line on a fresh connection; returns the reply line (or nil, err)
-- and the seconds it took.
local function ask(port, line, timeout)
    local t0 = helpers.now()
    local c = helpers.connect(port, timeout)
    assert(c:send(line .. "\n"))
    local reply, err = c:receive("*l")
    c:close()
    return reply, err, helpers.now() - t0
end

-- Stops srv with one SIGTERM; returns its exit status and the seconds the
-- exit took (a server that ignores it is killed after `within` s).
local function term(srv, within)
    local t0 = helpers.now()
    local status = srv:stop("TERM", within)
    return status, helpers.now() - t0
end

describe("a task that never waits for anything", function()
    for _, case in ipairs({
        { "luaserv.sleep(0)", "while true do luaserv.sleep(0) end" },
        { "coroutine.yield()", "while true do coroutine.yield() end" },
    }) do
        it("looping on " .. case[1] .. " lets others be served and SIGTERM stop it",
           function()
            local srv = helpers.start_server{
                source = script("luaserv.spawn(function() " .. case[2] .. " end)") }
            for i = 1, 3 do
                local reply, err, took = ask(srv.port, "a" .. i, 3 * SLOW)
                assert.equal("ok a" .. i, reply, err)
                assert.is_true(took < 1 * SLOW, ("answered after %.2f s"):format(took))
            end
            local status, took = term(srv, 3 * SLOW)
            io.stderr:write(("# %s loop: SIGTERM exit in %.3f s\n"):format(case[1], took))
            assert.equal(0, status)
        end)
    end

    it("when CPU-bound, is preempted and shares the loop", function()
        -- --handler-timeout 10 (the old default): without preemption every
        -- client waits out the budget.
        local srv = helpers.start_server{
            source = script([[luaserv.spawn(function()
                local n = 0
                while true do n = n + 1 end
            end)]]), args = { "--handler-timeout", "10" } }
        for i = 1, 3 do
            local reply, err, took = ask(srv.port, "b" .. i, 5)
            assert.equal("ok b" .. i, reply, err)
            assert.is_true(took < 1 * SLOW, ("answered after %.2f s"):format(took))
        end
        local stats = ask(srv.port, "stats", 5)
        local pre = tonumber(stats:match("preemptions=(%-?%d+)"))
        assert.is_true(pre > 0, stats)
        assert.matches("errors=0", stats, 1, true)   -- never timed out
        local status, took = term(srv, 3 * SLOW)
        io.stderr:write(("# busy task: %d preemptions, SIGTERM exit in %.3f s\n")
            :format(pre, took))
        assert.equal(0, status)
    end)

    it("in a stream handler, spins without stalling other connections",
       function()
        local srv = helpers.start_server{ source = [[
local handler = {}
function handler.handle(conn)
    local line = conn:readline()
    if line == "spin" then
        local n = 0
        while true do n = n + 1 end
    end
    conn:write("ok " .. tostring(line) .. "\n")
end
return handler
]], args = { "--handler-timeout", "10" } }
        local spinners = {}
        helpers.close_at_end(spinners)
        for i = 1, 2 do
            spinners[i] = helpers.connect(srv.port, 5)
            assert(spinners[i]:send("spin\n"))
        end
        helpers.wait_read(srv.port)     -- both tasks have their line: spinning
        for i = 1, 3 do
            local reply, err, took = ask(srv.port, "c" .. i, 5)
            assert.equal("ok c" .. i, reply, err)
            assert.is_true(took < 1 * SLOW, ("answered after %.2f s"):format(took))
        end
        -- The spinners' connections stay open: nobody killed their tasks.
        spinners[1]:settimeout(0.2)
        local _, err = spinners[1]:receive("*l")
        assert.equal("timeout", err)
        -- A graceful stop waits for them, a second signal does not.
        local t0 = helpers.now()
        os.execute("kill -TERM " .. srv.pid)
        helpers.sleep(0.3)
        assert.is_true(srv:alive())
        local status = srv:stop("TERM", 3 * SLOW)
        assert.is_true(helpers.now() - t0 < 2 * SLOW)
        assert.equal(0, status)
    end)

    it("leaves a coroutine of its own alone: its yields go to its resume",
       function()
        -- The generator runs far more than a slice between its yields; the
        -- slice hook it inherits must not yield into the task's resume.
        local srv = helpers.start_server{ source = script([[
            local function gen()
                for i = 1, 5 do
                    local s = 0
                    for j = 1, 100000 do s = s + j end
                    coroutine.yield(i, s)
                end
            end
            luaserv.spawn(function()
                local got = {}
                for i, s in coroutine.wrap(gen) do
                    got[#got + 1] = i .. ":" .. s
                end
                RESULT = table.concat(got, ",")
            end)]], [[if line == "result" then return tostring(RESULT) .. "\n" end]]) }
        local reply = helpers.wait_for(function()
            local r = ask(srv.port, "result", 5)
            return r ~= "nil" and r
        end, 5 * SLOW)
        assert.equal("1:5000050000,2:5000050000,3:5000050000,4:5000050000,"
                     .. "5:5000050000", reply)
        assert.equal(0, term(srv, 3 * SLOW))
    end)

    it("with --task-slice 0 is not preempted, and the budget stops it", function()
        local srv = helpers.start_server{
            source = script([[luaserv.spawn(function()
                while true do end
            end)]]), args = { "--task-slice", "0", "--handler-timeout", "0.3" } }
        assert.truthy(helpers.wait_for(function()
            return srv:log():find("handler timeout", 1, true)
        end, 5 * SLOW), srv:log())
        local stats = ask(srv.port, "stats", 5)
        assert.matches("preemptions=0 ", stats, 1, true)
        assert.equal(0, term(srv, 3 * SLOW))
    end)

    it("inside a call that cannot yield is still bounded by the budget",
       function()
        -- A table.sort comparator cannot yield: no preemption there, so
        -- the per-run budget is what stops it.
        local srv = helpers.start_server{
            source = script([[luaserv.spawn(function()
                table.sort({ 3, 2, 1 }, function(a, b)
                    while true do end
                end)
            end)]]), args = { "--handler-timeout", "0.3" } }
        assert.truthy(helpers.wait_for(function()
            return srv:log():find("handler timeout", 1, true)
        end, 5 * SLOW), srv:log())
        assert.equal("ok d", (ask(srv.port, "d", 5)))
        assert.equal(0, term(srv, 3 * SLOW))
    end)
end)

describe("a callback handler", function()
    it("fails with 'handler timeout' after 1 s by default", function()
        local srv = helpers.start_server{ source = script("",
            [[if line == "loop" then while true do end end]]) }
        local reply, err, took = ask(srv.port, "loop", 8)
        assert.is_nil(reply)
        assert.equal("closed", err)
        io.stderr:write(("# looping on_message closed after %.2f s (default "
            .. "budget)\n"):format(took))
        assert.is_true(took >= 0.9 and took < 2 * SLOW, ("took %.2f s"):format(took))
        assert.matches("handler timeout: still running after 1 s", srv:log(), 1, true)
        assert.equal("ok e", (ask(srv.port, "e", 5)))
        assert.equal(0, term(srv, 3 * SLOW))
    end)
end)

describe("--task-slice", function()
    it("is refused when not a whole number >= 0", function()
        local status, out = helpers.run(helpers.luaserv,
                                        "--task-slice -1 --check scripts/handle.lua")
        assert.equal(2, status)
        assert.matches("--task-slice needs a whole number", out, 1, true)
    end)

    it("is read from the config file as task_slice", function()
        local conf = helpers.write_file(helpers.tmpname(".lua"),
                                        "task_slice = 0\nhandler_timeout = 0.3\n")
        local srv = helpers.start_server{
            source = script([[luaserv.spawn(function()
                while true do end
            end)]]), args = { "-c", conf } }
        assert.truthy(helpers.wait_for(function()
            return srv:log():find("handler timeout", 1, true)
        end, 5 * SLOW), srv:log())
        assert.equal(0, term(srv, 3 * SLOW))
        local status, out = helpers.run(helpers.luaserv, "-c " ..
            helpers.shell_quote(helpers.write_file(helpers.tmpname(".lua"),
                                                   "task_slice = 1.5\n"))
            .. " --check scripts/handle.lua")
        assert.equal(2, status)
        assert.matches("task_slice must be a whole number", out, 1, true)
    end)
end)

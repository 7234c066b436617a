-- Tasks and timers: luaserv.sleep, luaserv.spawn, task:cancel/status,
-- luaserv.timer.after/every, errors in tasks, coroutine.yield in a task.
-- Each script prints "EV ..." lines to stdout (the server log, line
-- buffered) and "DONE" when its scenario is over; a UDP listener answers
-- "stats" with the core's counters.
local helpers = require "helpers"

local TIMEOUT = helpers.sanitize and 20 or 10

-- The common tail of every script: a UDP stats probe and a TCP line echo
-- ("still serving" checks).
local TAIL = [[
function handler.on_message(conn, msg)
    if conn.listener:find("^udp") then
        local s = luaserv.stats()
        return ("tasks=%d active=%d errors=%d"):format(s.tasks,
            s.connections_active, s.handler_errors)
    end
    return "echo " .. msg .. "\n"
end
return handler
]]

local HEAD = [[
local luaserv = require "luaserv"
local handler = {}
local function ev(...) print("EV " .. table.concat({ ... }, " ")) end
]]

local serve = helpers.serve

local function start(body)
    return serve{
        source = HEAD .. body .. TAIL,
        listen = { "127.0.0.1:0", "udp://127.0.0.1:0" },
    }
end

-- Like start, for a body that brings its own on_message and return.
local function start_own(body)
    return serve{
        source = HEAD .. body,
        listen = { "127.0.0.1:0", "udp://127.0.0.1:0" },
    }
end

-- Waits for "DONE" in the log; returns the EV lines, in order.
local function events(srv, marker)
    marker = marker or "DONE"
    assert(helpers.wait_for(function()
        return srv:log():find("\n" .. marker .. "\n", 1, true)
            or srv:log():find("^" .. marker .. "\n")
    end, TIMEOUT), "no " .. marker .. " in the log:\n" .. srv:log())
    local out = {}
    for line in srv:log():gmatch("EV ([^\n]*)") do out[#out + 1] = line end
    return out
end

local function stats(srv) return helpers.probe(srv, "stats") end

local function echo(srv, text)
    local c = helpers.connect(srv.port)
    assert(c:send(text .. "\n"))
    local reply = c:receive("*l")
    c:close()
    return reply
end

-- No handler error was logged.
local function no_errors(srv)
    assert.not_matches("handler error", srv:log())
end

-- No handler error was logged, and the server exits 0 on TERM.
local function clean_exit(srv)
    no_errors(srv)
    assert.equal(0, srv:stop())
end

local function no_tasks_left(srv)
    assert.truthy(helpers.wait_for(function()
        return stats(srv).tasks == 0
    end, TIMEOUT), "tasks left: " .. tostring(stats(srv).tasks))
end

-- After ERRORS handler errors the server still echoes TEXT, has no task
-- left and exits 0 on TERM.
local function still_serving(srv, text, errors)
    assert.equal("echo " .. text, echo(srv, text))
    assert.equal(errors, stats(srv).errors)
    no_tasks_left(srv)
    assert.equal(0, srv:stop())
end

describe("tasks", function()
    it("wakes sleeping tasks in the order of their deadlines", function()
        local srv = start([[
local done = 0
local function sleeper(name, s)
    local t0 = luaserv.now()
    luaserv.sleep(s)
    ev(name, ("%.2f"):format(luaserv.now() - t0))
    done = done + 1
    if done == 3 then print("DONE") end
end
function handler.on_load()
    luaserv.spawn(sleeper, "c", 0.3)
    luaserv.spawn(sleeper, "a", 0.1)
    luaserv.spawn(sleeper, "b", 0.2)
end
]])
        local evs = events(srv)
        assert.equal(3, #evs)
        local names, slept = {}, {}
        for i, e in ipairs(evs) do
            local name, s = e:match("^(%a) ([%d.]+)$")
            names[i], slept[name] = name, tonumber(s)
        end
        assert.same({ "a", "b", "c" }, names)
        assert.is_true(slept.a >= 0.09, "a slept " .. slept.a)
        assert.is_true(slept.b >= 0.19, "b slept " .. slept.b)
        assert.is_true(slept.c >= 0.29, "c slept " .. slept.c)
        no_tasks_left(srv)
        clean_exit(srv)
    end)

    it("lets the other ready tasks run a turn on sleep(0)", function()
        local srv = start([[
local function worker(name)
    for i = 1, 3 do
        ev(name .. i)
        luaserv.sleep(0)
    end
    if name == "b" then print("DONE") end
end
function handler.on_load()
    luaserv.spawn(worker, "a")
    luaserv.spawn(worker, "b")
end
]])
        assert.same({ "a1", "b1", "a2", "b2", "a3", "b3" }, events(srv))
        clean_exit(srv)
    end)

    it("passes spawn's extra arguments to the function, nils included", function()
        local srv = start([[
function handler.on_load()
    luaserv.spawn(function(...)
        local n = select("#", ...)
        local a, b, c, d = ...
        ev(tostring(n), tostring(a), tostring(b), tostring(c), math.type(d))
        print("DONE")
    end, "x", nil, true, 42)
end
]])
        assert.same({ "4 x nil true integer" }, events(srv))
        clean_exit(srv)
    end)

    it("runs a spawned task before the loop next waits, not inside spawn", function()
        local srv = start([[
function handler.on_load()
    luaserv.timer.after(0.05, function()
        ev("before")
        luaserv.spawn(function() ev("task") print("DONE") end)
        ev("after")
    end)
end
]])
        assert.same({ "before", "after", "task" }, events(srv))
        clean_exit(srv)
    end)

    it("never resumes a cancelled sleeping task", function()
        local srv = start([[
function handler.on_load()
    local victim = luaserv.spawn(function()
        ev("victim started")
        luaserv.sleep(0.2)
        ev("victim woke")
    end)
    luaserv.spawn(function()
        luaserv.sleep(0.05)
        ev("status", victim:status())
        ev("cancel", tostring(victim:cancel()))
        ev("status", victim:status())
        ev("cancel again", tostring(victim:cancel()))
        luaserv.sleep(0.5)
        print("DONE")
    end)
end
]])
        assert.same({ "victim started", "status waiting", "cancel true",
                      "status dead", "cancel again false" }, events(srv))
        no_tasks_left(srv)
        clean_exit(srv)
    end)

    it("cancels a task that was spawned but has not run yet", function()
        local srv = start([[
function handler.on_load()
    local t = luaserv.spawn(function() ev("ran") end)
    ev("cancel", tostring(t:cancel()), t:status())
    luaserv.timer.after(0.2, function() print("DONE") end)
end
]])
        assert.same({ "cancel true dead" }, events(srv))
        no_tasks_left(srv)
        clean_exit(srv)
    end)

    it("reports 'running' for the current task and 'dead' once it ended", function()
        local srv = start([[
function handler.on_load()
    local me
    me = luaserv.spawn(function()
        luaserv.sleep(0)
        ev("inside", me:status())
    end)
    luaserv.spawn(function()
        luaserv.sleep(0.1)
        ev("later", me:status(), tostring(me:cancel()))
        print("DONE")
    end)
end
]])
        assert.same({ "inside running", "later dead false" }, events(srv))
        clean_exit(srv)
    end)

    it("treats coroutine.yield() in a task as giving up one turn", function()
        local srv = start([[
local function worker(name)
    ev(name .. "1")
    local r = table.pack(coroutine.yield("ignored", 1))
    ev(name .. "2", tostring(r.n))
    coroutine.yield()
    ev(name .. "3")
    if name == "b" then print("DONE") end
end
function handler.on_load()
    luaserv.spawn(worker, "a")
    luaserv.spawn(worker, "b")
end
]])
        assert.same({ "a1", "b1", "a2 0", "b2 0", "a3", "b3" }, events(srv))
        assert.truthy(helpers.wait_for(function()
            return echo(srv, "hi") == "echo hi"
        end, TIMEOUT))
        no_tasks_left(srv)
        clean_exit(srv)
    end)

    it("logs an error in a spawned task with a traceback and keeps serving", function()
        local srv = start([[
function handler.on_load()
    luaserv.spawn(function()
        luaserv.sleep(0.05)
        error("boom in a task")
    end)
    luaserv.timer.after(0.3, function() print("DONE") end)
end
]])
        events(srv)
        local log = srv:log()
        assert.matches("error[^\n]*:%d+: boom in a task", log)
        assert.matches("stack traceback", log)
        still_serving(srv, "still here", 1)
    end)

    it("logs an error in a task spawned from on_message and keeps the conn", function()
        local srv = start_own([[
function handler.on_message(conn, msg)
    if conn.listener:find("^udp") then
        return "tasks=" .. luaserv.stats().tasks
    end
    if msg == "fail" then
        luaserv.spawn(function() error("task from on_message") end)
        return "spawned\n"
    end
    return "echo " .. msg .. "\n"
end
return handler
]])
        local c = helpers.connect(srv.port)
        assert(c:send("fail\nafter\n"))
        assert.equal("spawned", c:receive("*l"))
        assert.equal("echo after", c:receive("*l"))
        c:close()
        assert.truthy(helpers.wait_for(function()
            return srv:log():find("task from on_message", 1, true)
        end, TIMEOUT))
        assert.matches(":%d+: task from on_message", srv:log())
        no_tasks_left(srv)
        assert.equal(0, srv:stop())
    end)
end)

describe("timers", function()
    it("runs timer.after once, after its delay", function()
        local srv = start([[
function handler.on_load()
    local t0 = luaserv.now()
    local t = luaserv.timer.after(0.2, function()
        ev("fired", ("%.2f"):format(luaserv.now() - t0))
    end)
    luaserv.timer.after(0.6, function()
        ev("cancel after firing", tostring(t:cancel()))
        print("DONE")
    end)
end
]])
        local evs = events(srv)
        assert.equal(2, #evs)
        local elapsed = tonumber(evs[1]:match("^fired ([%d.]+)$"))
        assert.is_true(elapsed >= 0.19 and elapsed < 0.6, evs[1])
        assert.equal("cancel after firing false", evs[2])
        clean_exit(srv)
    end)

    it("never runs a timer.after cancelled before it fired", function()
        local srv = start([[
function handler.on_load()
    local t = luaserv.timer.after(0.2, function() ev("fired") end)
    ev("cancel", tostring(t:cancel()))
    luaserv.timer.after(0.5, function() print("DONE") end)
end
]])
        assert.same({ "cancel true" }, events(srv))
        clean_exit(srv)
    end)

    it("runs timer.every repeatedly until it is cancelled", function()
        local srv = start([[
local n = 0
local timer
function handler.on_load()
    timer = luaserv.timer.every(0.05, function()
        n = n + 1
        ev("tick", tostring(n))
        if n == 5 then
            ev("cancel", tostring(timer:cancel()))
            luaserv.timer.after(0.4, function()
                ev("ticks", tostring(n))
                print("DONE")
            end)
        end
    end)
end
]])
        assert.same({ "tick 1", "tick 2", "tick 3", "tick 4", "tick 5",
                      "cancel true", "ticks 5" }, events(srv))
        clean_exit(srv)
    end)

    it("runs each firing as a task that may sleep", function()
        local srv = start([[
local n = 0
local timer
function handler.on_load()
    timer = luaserv.timer.every(0.1, function()
        n = n + 1
        local me = n
        if me > 2 then return end
        ev("start", tostring(me))
        luaserv.sleep(0.15)
        ev("end", tostring(me))
        if me == 2 then timer:cancel() print("DONE") end
    end)
end
]])
        -- firing 2 starts while firing 1 is still asleep
        assert.same({ "start 1", "start 2", "end 1", "end 2" }, events(srv))
        clean_exit(srv)
    end)

    it("works from on_load without the handler keeping the timer", function()
        local srv = start([[
function handler.on_load()
    luaserv.timer.after(0.1, function()
        collectgarbage()
        collectgarbage()
        ev("after")
    end)
    luaserv.timer.every(0.05, function() collectgarbage() end)
    luaserv.spawn(function()
        luaserv.sleep(0.3)
        ev("spawned")
        print("DONE")
    end)
    collectgarbage()
end
]])
        assert.same({ "after", "spawned" }, events(srv))
        assert.equal("echo ok", echo(srv, "ok"))
        clean_exit(srv)
    end)

    it("logs an error in a timer function and keeps firing", function()
        local srv = start([[
local n = 0
local timer
function handler.on_load()
    timer = luaserv.timer.every(0.05, function()
        n = n + 1
        if n == 3 then
            timer:cancel()
            print("DONE")
        end
        error("timer failure " .. n)
    end)
end
]])
        events(srv)
        local log = srv:log()
        assert.matches(":%d+: timer failure 1", log)
        assert.matches(":%d+: timer failure 2", log)
        assert.matches(":%d+: timer failure 3", log)
        still_serving(srv, "fine", 3)
    end)

    it("can be started from a callback and run as a task", function()
        local srv = start_own([[
function handler.on_message(conn, msg)
    if conn.listener:find("^udp") then
        return "tasks=" .. luaserv.stats().tasks
    end
    luaserv.timer.after(0.05, function()
        luaserv.sleep(0.05)
        ev("timer for", msg)
        print("DONE")
    end)
    return "ok\n"
end
return handler
]])
        local c = helpers.connect(srv.port)
        assert(c:send("hello\n"))
        assert.equal("ok", c:receive("*l"))
        c:close()
        assert.same({ "timer for hello" }, events(srv))
        no_tasks_left(srv)
        clean_exit(srv)
    end)
end)

-- --workers N: a master forks N workers, each with its own loop and Lua
-- state; TCP spreads by SO_REUSEPORT, a unix socket is shared; the master
-- prints the ready lines, restarts a dead worker (backing off when it
-- crashes at once), passes SIGHUP and SIGTERM on, and gives up when no
-- worker stays alive.
local helpers = require "helpers"
local socket = require "socket"
local unix = require "socket.unix"

local FIXTURE = "spec/fixtures/workers_echo.lua"
local SLOWDOWN = helpers.sanitize and 3 or 1

local children = helpers.children

-- Sends line on c and returns the reply's worker id, count and pid, or
-- nil and the error.
local function ask(c, line)
    local ok, err = c:send(line .. "\n")
    if not ok then return nil, err end
    local reply, rerr = c:receive("*l")
    if not reply then return nil, rerr end
    local id, count, pid, echo = reply:match("^(%d+)/(%d+) (%d+) (.*)$")
    assert.equal(line, echo, reply)
    return tonumber(id), tonumber(count), tonumber(pid)
end

-- Opens n connections to port; returns them and, per worker id, the
-- connections it took. Each connection is closed when the test ends.
local function spread(port, n)
    local conns, by = {}, {}
    for i = 1, n do
        conns[i] = helpers.connect(port, 5 * SLOWDOWN)
    end
    helpers.close_at_end(conns)
    for i, c in ipairs(conns) do
        local id = assert(ask(c, "hello " .. i))
        by[id] = by[id] or {}
        table.insert(by[id], c)
    end
    return conns, by
end

local function start(n, opts)
    opts = opts or {}
    opts.script = FIXTURE
    opts.args = { "--workers", tostring(n), table.unpack(opts.args or {}) }
    return helpers.start_server(opts)
end

local function count_in_log(srv, text)
    return helpers.count(srv:log(), text)
end

describe("--workers", function()
    it("spreads 64 connections over two workers that both answer", function()
        local srv = start(2)
        assert.equal(2, #children(srv.pid))
        local _, by = spread(srv.port, 64)
        local one, two = #(by[1] or {}), #(by[2] or {})
        print(("\n64 connections over 2 workers: worker 1 took %d, "
               .. "worker 2 took %d"):format(one, two))
        assert.equal(64, one + two)
        assert.is_true(one > 0 and two > 0, "one worker took all 64")
        assert.equal(0, srv:stop())
    end)

    it("prints the ready lines once, from the master, for every kind",
       function()
        local path = helpers.tmpname(".sock")
        local srv = start(2, { listen = { "127.0.0.1:0", "udp://127.0.0.1:0",
                                          "unix:" .. path } })
        local ready = helpers.ready(srv:log())
        assert.equal(3, #ready)
        assert.same({ "tcp", "udp", "unix" },
                    { ready[1].kind, ready[2].kind, ready[3].kind })
        assert.equal(path, ready[3].addr)
        -- the unix socket is shared: each worker accepts from it
        for i = 1, 8 do
            local c = assert(unix())
            c:settimeout(5 * SLOWDOWN)
            assert(c:connect(path))
            local id, count = ask(c, "unix " .. i)
            assert.is_true(id == 1 or id == 2)
            assert.equal(2, count)
            c:close()
        end
        -- UDP: each worker has its own socket on the same port
        for i = 1, 8 do
            local u = assert(socket.udp())
            u:settimeout(5 * SLOWDOWN)
            assert(u:setpeername("127.0.0.1", srv.ports[2]))
            assert(u:send("udp " .. i))
            local reply = assert(u:receive())
            assert.truthy(reply:match("^[12]/2 %d+ udp " .. i .. "\n$"), reply)
            u:close()
        end
        assert.equal(0, srv:stop())
        assert.is_nil(io.open(path), "the master removes the socket file")
    end)

    it("gives luaserv.worker.id and count, and runs on_load in every worker",
       function()
        local srv = start(3)
        for id = 1, 3 do
            assert.equal(1, count_in_log(srv, "script loaded in worker " .. id
                                              .. " of 3"))
            assert.equal(1, count_in_log(srv, "on_load in worker " .. id))
        end
        assert.equal(0, count_in_log(srv, "in worker 0"),
                     "the master ran handler code")
        local _, by = spread(srv.port, 32)
        for id, conns in pairs(by) do
            assert.is_true(id >= 1 and id <= 3)
            local _, count = ask(conns[1], "count")
            assert.equal(3, count)
        end
        assert.equal(0, srv:stop())
    end)

    it("loads anew in each worker a script the master read for its listen",
       function()
        local srv = helpers.start_server({
            listen = {}, args = { "--workers", "2" }, source = [[
local luaserv = require "luaserv"
luaserv.log.info("chunk in worker " .. luaserv.worker.id)
return { listen = "127.0.0.1:0",
         on_message = function(c, l) return luaserv.worker.id .. " " .. l .. "\n" end }
]] })
        helpers.wait_until(function() return #helpers.ready(srv:log()) == 1 end,
                           5 * SLOWDOWN, "the ready line")
        -- the master reads handler.listen (its chunk runs as worker 0),
        -- then each worker loads the script itself
        for id = 0, 2 do
            assert.equal(1, count_in_log(srv, "chunk in worker " .. id))
        end
        local port = tonumber(helpers.ready(srv:log())[1].addr:match(":(%d+)$"))
        local c = helpers.connect(port)
        helpers.close_at_end({ c })
        assert(c:send("x\n"))
        assert.truthy(c:receive("*l"):match("^[12] x$"))
        assert.equal(0, srv:stop())
    end)

    it("stays one process with --workers 1, as worker 1 of 1", function()
        local srv = start(1)
        assert.same({}, children(srv.pid))
        local c = helpers.connect(srv.port)
        helpers.close_at_end({ c })
        local id, count, pid = ask(c, "one")
        assert.same({ 1, 1, srv.pid }, { id, count, pid })
        assert.equal(0, srv:stop())
    end)

    it("restarts a worker killed under load; the other's conns go on",
       function()
        local srv = start(2)
        local _, by = spread(srv.port, 32)
        assert.truthy(by[1] and by[2], "one worker took all 32")
        local _, _, victim = ask(by[1][1], "pid")
        -- load: every connection has 200 lines in flight
        local N = 200
        for id = 1, 2 do
            for _, c in ipairs(by[id]) do
                assert(c:send(helpers.numbered_lines("load %d\n", N)))
            end
        end
        os.execute("kill -KILL " .. victim)
        for _, c in ipairs(by[2]) do
            for i = 1, N do
                local reply, err = c:receive("*l")
                assert.truthy(reply, err)
                assert.truthy(reply:match("^2/2 %d+ load " .. i .. "$"), reply)
            end
            assert.equal(2, (ask(c, "after")))
        end
        for _, c in ipairs(by[1]) do   -- lost with their worker
            local data, err, partial = c:receive("*a")
            assert.truthy(err == "closed" or err == "connection reset by peer"
                          or data, err)
            assert.is_nil(partial and partial:match("after"))
        end
        helpers.wait_until(function()
            return count_in_log(srv, "worker 1 serving again") == 1
        end, 5 * SLOWDOWN, "worker 1 to be restarted")
        assert.truthy(srv:log():find("worker 1 %(pid " .. victim
                                     .. "%) killed by signal 9"))
        assert.equal(2, #children(srv.pid))
        local _, again = spread(srv.port, 64)
        assert.truthy(again[1] and again[2], "the new worker 1 takes none")
        assert.equal(0, srv:stop())
    end)

    it("passes SIGHUP to every worker, each reloading", function()
        local srv = start(2)
        os.execute("kill -HUP " .. srv.pid)
        helpers.wait_until(function()
            return count_in_log(srv, "script loaded in worker 1 of 2") == 2
               and count_in_log(srv, "script loaded in worker 2 of 2") == 2
        end, 5 * SLOWDOWN, "both workers to reload")
        assert.equal(1, count_in_log(srv, "SIGHUP: reloading 2 workers"))
        local _, by = spread(srv.port, 16)
        assert.truthy(by[1] or by[2])
        assert.equal(0, srv:stop())
    end)

    it("drains every worker on SIGTERM and exits 0", function()
        local srv = start(2)
        local workers = children(srv.pid)
        local _, by = spread(srv.port, 16)
        local conns = {}
        for _, list in pairs(by) do
            for _, c in ipairs(list) do conns[#conns + 1] = c end
        end
        for _, c in ipairs(conns) do
            assert(c:send(helpers.numbered_lines("last %d\n", 50)))
        end
        os.execute("kill -TERM " .. srv.pid)
        for _, c in ipairs(conns) do
            for i = 1, 50 do
                local reply, err = c:receive("*l")
                assert.truthy(reply, err)
                assert.truthy(reply:match(" last " .. i .. "$"), reply)
            end
            c:close()
        end
        assert.equal(0, srv:wait(10 * SLOWDOWN))
        assert.equal(2, count_in_log(srv, "signal 15: shutting down"))
        for _, pid in ipairs(workers) do
            assert.is_false(os.execute("kill -0 " .. pid .. " 2>/dev/null")
                            == true, "worker " .. pid .. " still runs")
        end
    end)

    it("stops the workers at once on a second SIGTERM", function()
        local srv = start(2, { args = { "--shutdown-timeout", "60" } })
        -- a connection with half a line keeps its worker's drain waiting
        local c = helpers.connect(srv.port)
        helpers.close_at_end({ c })
        assert(c:send("half a line"))
        helpers.wait_read(srv.port)
        os.execute("kill -TERM " .. srv.pid)
        helpers.wait_until(function()
            return count_in_log(srv, "stopping: no new connections") == 2
        end, 5 * SLOWDOWN, "both workers to begin the drain")
        helpers.sleep(0.3)
        assert.is_true(srv:alive(), "stopped before the second signal")
        local t0 = helpers.now()
        assert.equal(0, srv:stop("TERM", 10 * SLOWDOWN))
        assert.is_true(helpers.now() - t0 < 5 * SLOWDOWN, "took too long")
        assert.equal(1, count_in_log(srv, "stopping the workers now"))
        assert.equal(1, count_in_log(srv, "again: closing now"))
    end)

    it("restarts a worker that crashes at once, backing off", function()
        local srv = start(2, { shell = "LUASERV_CRASH=2 " })
        helpers.wait_until(function()
            return count_in_log(srv, "restarting it in 2.0 s") == 1
        end, 10 * SLOWDOWN, "three quick deaths of worker 2")
        local log = srv:log()
        local delays = {}
        for d in log:gmatch("worker 2 %(pid %d+%) exited with status 3 after "
                            .. "[%d.]+ s; restarting it in ([%d.]+) s") do
            delays[#delays + 1] = d
        end
        assert.same({ "0.5", "1.0", "2.0" }, delays)
        -- worker 1 serves on, and takes every connection while worker 2
        -- waits out its backoff (its socket is closed meanwhile)
        for i = 1, 8 do
            local c = helpers.connect(srv.port)
            helpers.close_at_end({ c })
            assert.equal(1, (ask(c, "still " .. i)))
        end
        assert.equal(0, srv:stop())
    end)

    it("exits 1 with the reason when no worker stays alive", function()
        local srv = start(2, { shell = "LUASERV_CRASH=all " })
        assert.equal(1, srv:wait(20 * SLOWDOWN))
        assert.truthy(srv:log():find("cannot keep any worker alive", 1, true))
    end)

    it("fails the start with exit 2 when a worker cannot load the script",
       function()
        local bad = helpers.write_file(helpers.tmpname(".lua"),
            "return { on_load = function() error('no way') end }\n")
        local status, out = helpers.run(helpers.luaserv,
            "--workers 2 -l 127.0.0.1:0 " .. bad)
        assert.equal(2, status, out)
        assert.truthy(out:find("no way", 1, true), out)
        assert.is_nil(out:find("listening on", 1, true), out)
    end)

    it("exits 1 for a port in use, even by another server with workers",
       function()
        local first = start(2)
        local status, out = helpers.run(helpers.luaserv,
            "--workers 2 -l 127.0.0.1:" .. first.port .. " " .. FIXTURE)
        assert.equal(1, status, out)
        assert.truthy(out:find("Address already in use", 1, true), out)
        -- and the first one still takes every connection
        local _, by = spread(first.port, 16)
        assert.equal(16, #(by[1] or {}) + #(by[2] or {}))
        assert.equal(0, first:stop())
    end)

end)

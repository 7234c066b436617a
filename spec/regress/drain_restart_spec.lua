-- A --workers master restarts a worker that dies during --drain-delay
-- (it serves as before until the delay is over). The restarted worker is
-- forked from the master's loop: it must not carry the master's
-- end-of-delay stop with it, which would run in the worker too (close
-- the master's socket numbers, signal its siblings, end its own loop
-- when its copy of the master's table shows none alive) and cut the
-- requests it was draining.
local helpers = require "helpers"
local op = require "fixtures.operations_util"

local SLOW = op.SLOW

describe("a worker restarted during --drain-delay", function()
    it("drains its requests at the stop like the others", function()
        local delay = 2.5 * SLOW
        local srv = op.start({ script = "spec/fixtures/health_handler.lua",
                               args = { "--workers", "2",
                                        "--drain-delay", tostring(delay),
                                        "--shutdown-timeout", "20" } })
        local port = srv.listening[1].port
        local before = helpers.children(srv.pid)
        assert.equal(2, #before)
        os.execute("kill -TERM " .. srv.pid)
        assert.truthy(helpers.wait_for(function()
            return srv:log():find("draining: health checks answer 503", 1,
                                  true)
        end, 5 * SLOW), "the drain did not begin")
        -- both die: the first restarted sees no live sibling in its copy
        os.execute("kill -KILL " .. before[1] .. " " .. before[2])
        assert.truthy(helpers.wait_for(function()
            local now = helpers.children(srv.pid)
            return #now == 2 and now[1] ~= before[1] and now[1] ~= before[2]
                and now[2] ~= before[1] and now[2] ~= before[2]
        end, 5 * SLOW), "the workers were not restarted")
        assert.truthy(helpers.wait_for(function()
            return srv:log():find("worker 1 serving again", 1, true)
                and srv:log():find("worker 2 serving again", 1, true)
        end, 5 * SLOW), "the restarted workers do not serve")
        -- requests that last past the delay's end, spread over both
        local conns = {}
        for i = 1, 10 do
            local c = helpers.connect(port, 20 * SLOW)
            helpers.close_at_end({ c })
            assert(c:send("slow " .. (delay + 0.5 * SLOW) .. "\n"))
            conns[i] = c
        end
        for i, c in ipairs(conns) do
            local line, err = c:receive("*l")
            assert.equal("slow done", line, "request " .. i .. ": " ..
                         tostring(err))
            c:close()
        end
        assert.equal(0, srv:wait(20 * SLOW))
        assert.not_matches("again: closing now", srv:log(), 1, true)
    end)
end)

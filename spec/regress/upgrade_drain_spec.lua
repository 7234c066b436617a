-- A stop signal (with --drain-delay) that comes while an upgrade is under
-- way: once the new generation serves, the old one's hand-over sends
-- itself SIGTERM to begin its own drain. That SIGTERM is not an
-- operator's second signal: it must not abort the requests the old
-- generation is still answering.
local helpers = require "helpers"
local op = require "fixtures.operations_util"

local SLOW = op.SLOW

describe("SIGTERM during an upgrade, with --drain-delay", function()
    it("lets the old generation finish its requests after the hand-over", function()
        local hold, shell, new = helpers.hold_upgrade()
        local srv = op.start({ script = "spec/fixtures/health_handler.lua",
                               args = { "--drain-delay", "30",
                                        "--shutdown-timeout", "20" },
                               shell = shell })
        local port = srv.listening[1].port
        local c = helpers.connect(port, 20 * SLOW)
        helpers.close_at_end({ c })
        assert(c:send("pid\n"))
        assert.equal(tostring(srv.pid), (c:receive("*l")))
        -- the new generation waits in on_load while the file exists
        helpers.write_file(hold, "")
        os.execute("kill -USR2 " .. srv.pid)
        assert.truthy(helpers.wait_for(function()
            return srv:log():find("upgrading to", 1, true)
        end, 5 * SLOW), "the upgrade did not begin")
        os.execute("kill -TERM " .. srv.pid)
        assert.truthy(helpers.wait_for(function()
            return srv:log():find("draining: health checks answer 503", 1,
                                  true)
        end, 5 * SLOW), "the drain did not begin")
        -- a request the old generation answers after its hand-over
        assert(c:send("slow " .. (3 * SLOW) .. "\n"))
        os.remove(hold)
        assert.equal("slow done", (c:receive("*l")), srv:log())
        c:close()
        assert.equal(0, srv:wait(20 * SLOW))
        assert.matches("stops accepting and drains", srv:log(), 1, true)
        assert.not_matches("again: closing now", srv:log(), 1, true)
        new.pid = tonumber((op.ask(port, "pid")))
        assert.is_not.equal(srv.pid, new.pid)
    end)
end)

-- A second SIGTERM during a graceful stop closes everything at once, as
-- the README promises: an operator is never stuck behind
-- --shutdown-timeout.
local helpers = require "helpers"

describe("a second signal", function()
    it("closes open connections and exits 0 without waiting", function()
        local srv = helpers.start_server{ script = "scripts/handle.lua",
                                          args = { "--shutdown-timeout", "60" } }
        -- A connection with half a line keeps the graceful stop waiting.
        local c = helpers.connect(srv.port)
        assert(c:send("half a line"))
        helpers.sleep(0.2)
        os.execute("kill -TERM " .. srv.pid)
        helpers.sleep(0.3)
        assert.is_true(srv:alive(), "stopped before the second signal")
        local t0 = helpers.now()
        local status = srv:stop("TERM", 10)
        assert.equal(0, status)
        assert.is_true(helpers.now() - t0 < 5, "took too long after it")
        assert.matches("again: closing now", srv:log(), 1, true)
        c:close()
    end)
end)

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
        helpers.wait_read(srv.port)         -- the half line is in hand
        os.execute("kill -TERM " .. srv.pid)
        -- the second signal must come after the first was handled (two
        -- pending ones are one), and the stop must then keep waiting
        helpers.wait_until(function()
            return srv:log():find("stopping: no new connections", 1, true)
        end, 5, "the graceful stop to begin")
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

describe("a second signal during --drain-delay", function()
    -- on_stop runs at every signal stop (handler-api.md): a second signal
    -- that cuts the delay short must not skip it, as it never did before
    -- the delay existed (the first signal had run it already).
    it("still runs on_stop, once, then exits 0 at once", function()
        local srv = helpers.start_server{
            script = "spec/fixtures/lifecycle_log.lua",
            args = { "--drain-delay", "60" } }
        os.execute("kill -TERM " .. srv.pid)
        helpers.wait_until(function()
            return srv:log():find("draining: health checks answer 503", 1,
                                  true)
        end, 5, "the drain to begin")
        helpers.sleep(0.2)
        assert.is_true(srv:alive(), "stopped before the second signal")
        local t0 = helpers.now()
        assert.equal(0, srv:stop("INT", 10))
        assert.is_true(helpers.now() - t0 < 5, "took too long after it")
        assert.matches("again: closing now", srv:log(), 1, true)
        assert.equal(1, helpers.count(srv:log(), "lifecycle_log: on_stop"),
                     srv:log())
    end)
end)

-- Log rate limiting: a source (call site, plus the listener the line is
-- about) writes its first lines in full, then only a "suppressed N similar
-- messages" line per interval (10 lines per 5 s). A script's own
-- luaserv.log lines are never limited.
local helpers = require "helpers"
local unix = require "socket.unix"

-- Lines of text matching the plain string s.
local function count(text, s)
    local n, i = 0, 1
    while true do
        local j = text:find(s, i, true)
        if not j then return n end
        n, i = n + 1, j + #s
    end
end

describe("log rate limit", function()
    it("limits a failing 1 ms timer to a few lines and a report", function()
        local srv = helpers.start_server{ source = [[
            local luaserv = require "luaserv"
            return {
                on_load = function()
                    for i = 1, 20 do luaserv.log.info("script line %d", i) end
                    luaserv.timer.every(0.001, function() error("boom") end)
                end,
                on_message = function(_, msg) return msg end,
            }
        ]] }
        local log0, t0 = #srv:log(), helpers.now()
        -- the first errors get through, however late a loaded machine
        -- runs the timer; then 2 s of it add no more
        helpers.wait_until(function()
            return count(srv:log(), "error handler error in a task") >= 10
        end, 10, "the first ten timer errors in the log")
        helpers.sleep(math.max(0, t0 + 2 - helpers.now()))
        local grown = #srv:log() - log0
        local log = srv:log()
        assert.equal(10, count(log, "error handler error in a task"))
        assert.is_true(grown < 20000, ("log grew %d bytes in 2 s"):format(grown))
        -- the script's own lines all got through
        assert.equal(20, count(log, "script line "))
        -- the interval ends: one line counts what was left out
        assert.truthy(helpers.wait_for(function()
            return srv:log():find("suppressed %d+ similar messages")
        end, 6), srv:log())
        local n = tonumber(srv:log():match("suppressed (%d+) similar messages"))
        assert.is_true(n > 100, "suppressed " .. n)
        assert.truthy(srv:log():find("(like: handler error in a task:", 1, true))
        assert.equal(0, srv:stop())
    end)

    it("limits the warning for oversize datagrams per listener", function()
        local path = helpers.tmpname(".sock")
        local srv = helpers.start_server{ listen = { "unixgram:" .. path },
            source = "return { on_message = function() end }" }
        local s = assert(unix.dgram())
        local big = string.rep("x", 70000)
        for _ = 1, 50 do assert(s:sendto(big, path)) end
        s:close()
        -- the report comes when the server stops, if not before
        assert.equal(0, srv:stop())
        local log = srv:log()
        assert.equal(10, count(log, "bytes; dropped\n"), log)
        assert.truthy(log:find("suppressed 40 similar messages", 1, true), log)
    end)
end)

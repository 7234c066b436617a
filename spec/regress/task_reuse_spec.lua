-- Issue 11, idle memory and the stream style's cost: a handle() task that
-- returned gives its thread to the next task, with nothing of the old one
-- left on it (arguments, locals, results); a task that failed does not.
local helpers = require "helpers"

local SOURCE = [[
local handler = {}
local seen = setmetatable({}, { __mode = "k" })   -- threads, weakly
local results = setmetatable({}, { __mode = "v" }) -- what tasks returned
local count = 0

function handler.handle(conn, ...)
    local co = coroutine.running()
    local state = seen[co] and "reused" or "new"
    seen[co] = true
    count = count + 1
    -- What earlier tasks returned must not stay alive on their thread.
    collectgarbage()
    collectgarbage()
    conn:write(("%s extra=%d kept=%s\n"):format(state, select("#", ...),
        tostring(next(results) ~= nil)))
    local line = conn:readline()
    if line == "fail" then error("failing on purpose in task " .. count) end
    local result = { count }
    results[count] = result
    return result, "and more"
end

return handler
]]

describe("a returned task's thread", function()
    local function session(srv, last)
        local c = helpers.connect(srv.port)
        local greeting = assert(c:receive("*l"))
        assert(c:send(last .. "\n"))
        helpers.read_to_close(c)
        return greeting
    end

    it("serves the next task clean, and a failed task's does not", function()
        local srv = helpers.serve{ source = SOURCE }
        assert.equal("new extra=0 kept=false", session(srv, "bye"))
        -- The first task returned: its thread serves the second, with
        -- the same shape of stack (only conn, no leftovers).
        assert.equal("reused extra=0 kept=false", session(srv, "fail"))
        -- The second failed: its thread is not handed out again.
        assert.equal("new extra=0 kept=false", session(srv, "bye"))
        assert.equal("reused extra=0 kept=false", session(srv, "bye"))
        assert.truthy(srv:log():find("failing on purpose in task 2", 1, true))
    end)
end)

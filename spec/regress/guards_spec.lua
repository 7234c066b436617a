-- A handler stuck in a loop is stopped by --handler-timeout, and one that
-- allocates past --lua-memory fails; either way only that connection is
-- lost and the server keeps serving.
local helpers = require "helpers"

local SCRIPT = [[
local handler = { framing = "line" }
function handler.on_message(_, line)
    if line == "loop" then while true do end end
    if line == "pcall-loop" then
        while true do pcall(function() while true do end end) end
    end
    if line == "eat" then
        local t = {}
        for i = 1, 1e8 do t[i] = ("x"):rep(200) .. i end
    end
    return "ok " .. line .. "\n"
end
function handler.handle_never_used() end
return handler
]]

-- Sends line on a fresh connection; returns the reply line or nil, err.
local function ask(port, line, timeout)
    local c = helpers.connect(port, timeout or 10)
    assert(c:send(line .. "\n"))
    local reply, err = c:receive("*l")
    c:close()
    return reply, err
end

describe("handler guards", function()
    it("stops a handler stuck in a loop after --handler-timeout", function()
        local srv = helpers.start_server{ source = SCRIPT,
                                          args = { "--handler-timeout", "0.3" } }
        assert.equal("ok a", ask(srv.port, "a"))
        local reply, err = ask(srv.port, "loop")
        assert.is_nil(reply)
        assert.equal("closed", err)
        assert.equal("ok b", ask(srv.port, "b"))
        assert.matches("handler timeout", srv:log(), 1, true)
        assert.equal(0, srv:stop())
    end)

    it("stops a loop that catches the timeout error with pcall", function()
        local srv = helpers.start_server{ source = SCRIPT,
                                          args = { "--handler-timeout", "0.3" } }
        local reply = ask(srv.port, "pcall-loop")
        assert.is_nil(reply)
        assert.equal("ok c", ask(srv.port, "c"))
        assert.equal(0, srv:stop())
    end)

    it("fails a call that allocates past --lua-memory, not the process",
       function()
        local srv = helpers.start_server{ source = SCRIPT,
                                          args = { "--lua-memory", "20000000",
                                                   "--handler-timeout", "60" } }
        local reply = ask(srv.port, "eat", 60)
        assert.is_nil(reply)
        assert.matches("not enough memory", srv:log(), 1, true)
        assert.equal("ok d", ask(srv.port, "d"))
        assert.equal(0, srv:stop())
    end)

    it("refuses a --lua-memory under 1 MiB with exit status 2", function()
        local status, out = helpers.run(helpers.luaserv,
                                        "--lua-memory 1000 --check scripts/handle.lua")
        assert.equal(2, status)
        assert.matches("lua-memory", out, 1, true)
    end)
end)

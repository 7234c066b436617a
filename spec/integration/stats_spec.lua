-- Handler errors are counted in one place, per listener: an error in
-- on_message or in a task spawned from it counts against that listener;
-- one in a task that belongs to no listener (a timer's) counts against
-- "server". luaserv.stats().handler_errors and the series of
-- luaserv_handler_errors_total always agree.
local helpers = require "helpers"

local SCRIPT = [[
local luaserv = require "luaserv"
return {
    on_message = function(_, line)
        if line == "boom" then error("boom") end
        if line == "spawn" then
            luaserv.spawn(function() error("task boom") end)
            return "spawned\n"
        end
        if line == "timer" then
            luaserv.timer.after(0.01, function() error("timer boom") end)
            return "armed\n"
        end
        if line == "stats" then
            return "errors " .. luaserv.stats().handler_errors .. "\n"
        end
        return "echo " .. line .. "\n"
    end,
}
]]

local function get_metrics(port)
    local c = helpers.connect(port)
    assert(c:send("GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n"))
    local body = helpers.receive_all(c)
    c:close()
    return body
end

local function errors_series(body)
    local t, sum = {}, 0
    for l, v in body:gmatch('luaserv_handler_errors_total{listener="([^"]*)"} (%d+)') do
        t[l] = tonumber(v)
        sum = sum + tonumber(v)
    end
    return t, sum
end

describe("handler error counts", function()
    it("count per listener, or against 'server', and sum to luaserv.stats()",
       function()
        local srv = helpers.start_server{ source = SCRIPT,
                                          args = { "--metrics", "127.0.0.1:0" } }
        local tcp = "tcp://127.0.0.1:" .. srv.ports[1]
        local mport = srv.ports[2]
        for _, line in ipairs({ "boom", "spawn", "timer" }) do
            local c = helpers.connect(srv.port)
            assert(c:send(line .. "\n"))
            c:receive("*l")
            c:close()
        end
        local series, sum
        assert.truthy(helpers.wait_for(function()
            series, sum = errors_series(get_metrics(mport))
            return sum == 3
        end, 10), "errors never reached 3")
        assert.equal(2, series[tcp])          -- on_message, the spawned task
        assert.equal(1, series.server)        -- the timer's task
        local c = helpers.connect(srv.port)
        assert(c:send("stats\n"))
        assert.equal("errors " .. sum, c:receive("*l"))
        c:close()
        assert.equal(0, srv:stop())
    end)
end)

-- A shared dict is one dict for every worker: two workers that incr the
-- same key 100,000 times each at once leave exactly 200,000, and a value
-- one worker sets the other reads.
local helpers = require "helpers"

local SCRIPT = [[
local luaserv = require "luaserv"
local d = luaserv.shared.counts
return {
    on_message = function(_, line)
        if line == "id" then return luaserv.worker.id .. "\n" end
        if line == "go" then
            for _ = 1, 100000 do assert(d:incr("k", 1, 0)) end
            return "done " .. luaserv.worker.id .. "\n"
        end
        if line == "get" then return tostring(d:get("k")) .. "\n" end
        local k, v = line:match("^set (%S+) (%S+)$")
        if k then d:set(k, v) return "ok\n" end
        k = line:match("^read (%S+)$")
        if k then return tostring(d:get(k)) .. "\n" end
        return "?\n"
    end,
}
]]

-- One connection to each of the two workers (SO_REUSEPORT spreads them).
local function one_per_worker(port)
    local by_id = {}
    for _ = 1, 200 do
        local c = helpers.connect(port)
        assert(c:send("id\n"))
        local id = assert(c:receive("*l"))
        if by_id[id] then c:close() else by_id[id] = c end
        if by_id["1"] and by_id["2"] then return by_id["1"], by_id["2"] end
    end
    error("200 connections all reached one worker")
end

describe("shared dicts with --workers 2", function()
    it("count exactly 200,000 after two workers incr 100,000 times each",
       function()
        local srv = helpers.start_server{ source = SCRIPT,
            args = { "--workers", "2", "--shared", "counts=1m" } }
        local a, b = one_per_worker(srv.port)
        assert(a:send("go\n"))
        assert(b:send("go\n"))
        local ra, rb = a:receive("*l"), b:receive("*l")
        assert.same({ "done 1", "done 2" }, { ra, rb })
        assert(a:send("get\n"))
        assert.equal("200000", a:receive("*l"))
        assert(b:send("set greeting hello\n"))
        assert.equal("ok", b:receive("*l"))
        assert(a:send("read greeting\n"))
        assert.equal("hello", a:receive("*l"))
        a:close()
        b:close()
        assert.equal(0, srv:stop())
    end)
end)

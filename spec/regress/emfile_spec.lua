-- Out of descriptors on accept: luaserv pauses accepting instead of
-- spinning on a listener that stays readable, logs it once, and takes the
-- waiting connections once descriptors are free again.
local helpers = require "helpers"

local CTIME = helpers.CTIME

-- CPU seconds (user + system) the process has used, from /proc.
local function cpu_seconds(pid)
    local stat = helpers.read_file("/proc/" .. pid .. "/stat") or ""
    local fields = {}
    for f in stat:gsub("^.-%) ", ""):gmatch("%S+") do fields[#fields + 1] = f end
    return (tonumber(fields[12]) + tonumber(fields[13])) / 100
end

local function ask(c, line)
    assert(c:send(line .. "\n"))
    return helpers.read_line(c)
end

describe("accept under EMFILE", function()
    it("pauses accepting without spinning and resumes when fds free up", function()
        local srv = helpers.start_server{ script = "scripts/handle.lua",
                                          shell = "ulimit -n 40; " }
        local conns = {}
        for i = 1, 60 do
            local c = assert(require("socket").tcp())
            c:settimeout(5)
            assert(c:connect("127.0.0.1", srv.port))
            conns[i] = c
        end
        -- The first connection was accepted before the limit hit.
        assert.matches("^" .. CTIME .. "first\n$", ask(conns[1], "first"))
        assert.truthy(helpers.wait_for(function()
            return srv:log():find("pausing accepts", 1, true)
        end, 5), srv:log())

        local before = cpu_seconds(srv.pid)
        helpers.sleep(1.5)
        local used = cpu_seconds(srv.pid) - before
        assert.is_true(used < 0.5, "server used " .. used .. " s of CPU")
        local _, pauses = srv:log():gsub("pausing accepts", "")
        assert.equal(1, pauses)

        -- Free descriptors: every waiting connection is served.
        for i = 1, 30 do conns[i]:close() end
        for i = 31, 45 do
            assert.matches("^" .. CTIME .. "late " .. i .. "\n$",
                           ask(conns[i], "late " .. i))
        end
        for i = 31, 60 do conns[i]:close() end
        assert.equal(0, srv:stop())
    end)
end)

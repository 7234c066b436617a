-- examples/http.lua parses header fields in linear time (issue 8, item 7):
-- its trims were s:match("^%s*(.-)%s*$") and "(.-)[ \t]*$", quadratic in
-- a run of inner spaces, so one 56 KB request took 3.6 s of CPU, and no
-- hook can interrupt a pattern match. Since issue 11 the C framer
-- (framing "http") parses and trims, and luaserv.http routes: the same
-- requests must stay cheap. The CPU time is read from /proc.
local helpers = require "helpers"

local SLOW = helpers.sanitize and 3 or 1
local PAD = ("a" .. (" "):rep(8000) .. "b")   -- one line under MAX_LINE

-- The server's user + system CPU seconds so far.
local function cpu_seconds(pid)
    local stat = assert(helpers.read_file("/proc/" .. pid .. "/stat"))
    -- fields after the ")" of the command name: state is field 3
    local rest = stat:match("%) (.*)$")
    local f = {}
    for v in rest:gmatch("%S+") do f[#f + 1] = v end
    local p = assert(io.popen("getconf CLK_TCK"))
    local hz = tonumber(p:read("a"))
    p:close()
    return (tonumber(f[12]) + tonumber(f[13])) / hz   -- utime, stime
end

-- Sends request and reads the status line and headers of the response.
local function exchange(port, request)
    local c = helpers.connect(port, 10 * SLOW)
    helpers.close_at_end({ c })
    assert(c:send(request))
    local status = c:receive("*l")
    local head = {}
    while true do
        local line = c:receive("*l")
        if not line or line == "" then break end
        head[#head + 1] = line
    end
    return status, table.concat(head, "\n")
end

describe("examples/http.lua", function()
    it("handles a 56 KB header section of long space runs quickly", function()
        local srv = helpers.start_server{ script = "examples/http.lua" }
        local lines = { "GET / HTTP/1.1", "Host: x",
                        "Connection: " .. PAD .. ", keep-alive" }
        for i = 1, 6 do lines[#lines + 1] = "X-Pad-" .. i .. ": " .. PAD end
        local request = table.concat(lines, "\r\n") .. "\r\n\r\n"
        assert.is_true(#request > 56000)
        local before = cpu_seconds(srv.pid)
        local status = exchange(srv.port, request)
        -- a Transfer-Encoding of one long value, answered 501, and a
        -- coding list the framer does not take (gzip), 501 as well
        local te = exchange(srv.port, "POST /echo HTTP/1.1\r\nHost: x\r\n"
            .. "Transfer-Encoding: " .. PAD:gsub(" ", "x", 4000) .. " \t \r\n\r\n")
        local chunked = exchange(srv.port, "POST /echo HTTP/1.1\r\nHost: x\r\n"
            .. "Transfer-Encoding: gzip, " .. (" "):rep(8000) .. "chunked  \r\n\r\n")
        local used = cpu_seconds(srv.pid) - before
        io.stderr:write(("# http.lua: 3 requests of long space runs took %.2f s "
            .. "of server CPU\n"):format(used))
        assert.equal("HTTP/1.1 200 OK", status)
        assert.equal("HTTP/1.1 501 Not Implemented", te)
        assert.equal("HTTP/1.1 501 Not Implemented", chunked)
        assert.is_true(used < 0.5 * SLOW, ("took %.2f s of CPU"):format(used))
    end)

    it("trims header values as before", function()
        local srv = helpers.start_server{ script = "examples/http.lua" }
        local status, head = exchange(srv.port, "GET / HTTP/1.1\r\nHost: x\r\n"
            .. "Connection: \t  keep-alive ,  close \t\r\n\r\n")
        assert.equal("HTTP/1.1 200 OK", status)
        assert.matches("Connection: close", head, 1, true)
        status = exchange(srv.port, "GET / HTTP/1.1\r\n: nameless\r\nHost: x\r\n\r\n")
        assert.equal("HTTP/1.1 400 Bad Request", status)
    end)
end)

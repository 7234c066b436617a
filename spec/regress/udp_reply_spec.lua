-- A datagram reply a script sizes: one that no datagram can hold (here
-- 70 pieces of 30 MB, 2.1 GB, the size that aborted the stream side) fails
-- that datagram with a log line; it used to grow the reply buffer past its
-- 32-bit length, with no cap. The server answers the next datagram.
local helpers = require "helpers"
local socket = require "socket"

local SCRIPT = [[
local handler = {}
local big = ("x"):rep(30 * 1000 * 1000)
function handler.on_message(conn, msg)
    if msg == "huge" then
        local t = {}
        for i = 1, 70 do t[i] = big end
        return t
    end
    if msg == "write" then
        for _ = 1, 70 do conn:write(big) end
        return
    end
    if msg == "over" then return ("y"):rep(65537) end
    if msg == "max" then return ("z"):rep(65000) end
    return "ok " .. msg
end
return handler
]]

-- Sends msg to port and returns the answer, or nil, "timeout".
local function ask(port, msg, timeout)
    local u = assert(socket.udp())
    u:settimeout(timeout or 2)
    assert(u:setpeername("127.0.0.1", port))
    assert(u:send(msg))
    local reply, err = u:receive(70000)
    u:close()
    return reply, err
end

describe("datagram replies", function()
    it("refuses a 2.1 GB reply, and one over 64 KiB, and serves on", function()
        local srv = helpers.serve{ source = SCRIPT,
                                   listen = { "udp://127.0.0.1:0" } }
        assert.equal("ok a", ask(srv.port, "a"))
        for _, what in ipairs({ "huge", "write", "over" }) do
            local reply, err = ask(srv.port, what, 1)
            assert.is_nil(reply, what)
            assert.equal("timeout", err)
            assert.is_true(srv:alive(), srv:log())
            assert.equal("ok after " .. what, ask(srv.port, "after " .. what))
        end
        -- a reply that fits one datagram still goes out
        assert.equal(65000, #assert(ask(srv.port, "max")))
        local log = srv:log()
        assert.truthy(log:find("its reply is over 65536 bytes", 1, true), log)
        assert.truthy(log:find("conn:write: the reply is over 65536 bytes", 1,
                               true), log)
        assert.equal(0, srv:stop())
    end)
end)

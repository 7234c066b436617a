-- examples/udp_time.lua, the UDP time service, with luasocket datagrams.
local helpers = require "helpers"
local util = require "fixtures.example_util"

local socket = require "socket"

local CTIME = helpers.CTIME

describe("examples/udp_time.lua", function()
    local srv

    lazy_setup(function()
        srv = util.start("udp_time", { "udp://127.0.0.1:0" }, { no_finally = true })
    end)

    lazy_teardown(function()
        if srv then srv:stop() end
    end)

    -- A UDP socket whose peer is the server.
    local function client()
        local u = assert(socket.udp())
        u:settimeout(2 * util.slow)
        assert(u:setpeername("127.0.0.1", srv.port))
        return u
    end

    local function ask(u, data)
        assert(u:send(data))
        return assert(u:receive(65536))
    end

    it("answers a datagram with [ctime] and the datagram", function()
        local u = client()
        assert.matches("^" .. CTIME .. "hello$", ask(u, "hello"))
        assert.matches("^" .. CTIME .. "two words\r\n$", ask(u, "two words\r\n"))
        assert.matches("^" .. CTIME .. "unix time\n$", ask(u, "unix time\n"))
        u:close()
    end)

    it("answers unix with the seconds since the epoch", function()
        local u = client()
        local before = socket.gettime()
        local reply = ask(u, "unix")
        local after = socket.gettime()
        assert.matches("^%d+%.%d%d%d%d%d%d$", reply)
        local t = tonumber(reply)
        -- the loop's clock was read when the datagram woke it
        assert.is_true(t >= before - 1 and t <= after + 1,
                       ("%f not in [%f, %f]"):format(t, before, after))
        assert.matches("^%d+%.%d+\r\n$", ask(u, "unix\r\n"))
        assert.matches("^%d+%.%d+\n$", ask(u, "unix\n"))
        u:close()
    end)

    it("answers an empty datagram and a large one", function()
        local u = client()
        assert.matches("^" .. CTIME .. "$", ask(u, ""))
        local big = ("b"):rep(60000) .. "\0end"
        local reply = ask(u, big)
        assert.equal(27 + #big, #reply)
        assert.is_true(reply:sub(28) == big)
        u:close()
    end)

    it("sends each reply back to its own sender", function()
        local a, b = client(), client()
        for i = 1, 50 do
            assert(a:send("a" .. i))
            assert(b:send("b" .. i))
        end
        for i = 1, 50 do
            assert.matches("^" .. CTIME .. "a" .. i .. "$", assert(a:receive()))
            assert.matches("^" .. CTIME .. "b" .. i .. "$", assert(b:receive()))
        end
        a:close()
        b:close()
    end)

    it("answers unconnected sendto with the sender's address", function()
        local u = assert(socket.udp())
        u:settimeout(2 * util.slow)
        assert(u:setsockname("127.0.0.1", 0))
        assert(u:sendto("unix", "127.0.0.1", srv.port))
        local reply, ip, port = u:receivefrom()
        assert.matches("^%d+%.%d+$", reply)
        assert.equal("127.0.0.1", ip)
        assert.equal(srv.port, port)
        u:close()
    end)

    it("counts every datagram and leaves nothing behind", function()
        local s = util.assert_clean_end(srv)
        assert.equal(3 + 3 + 2 + 100 + 1, s.datagrams)
    end)
end)

-- The timestamp server (scripts/handle.lua) over TCP, byte for byte.
local helpers = require "helpers"

local CTIME = helpers.CTIME

describe("the timestamp server", function()
    local srv

    lazy_setup(function()
        srv = helpers.start_server{ script = "scripts/handle.lua",
                                    no_finally = true }
    end)

    lazy_teardown(function()
        if srv then srv:stop() end
    end)

    it("answers a CRLF line with [ctime] and the line, CRLF included", function()
        local c = helpers.connect(srv.port)
        assert(c:send("'Tis but a scratch.\r\n"))
        local reply = assert(helpers.read_line(c))
        c:close()
        assert.matches("^" .. CTIME .. "'Tis but a scratch%.\r\n$", reply)
    end)

    it("keeps an LF terminator as LF", function()
        local c = helpers.connect(srv.port)
        assert(c:send("Just a flesh wound.\n"))
        c:shutdown("send")
        local all = helpers.receive_all(c)
        assert.matches("^" .. CTIME .. "Just a flesh wound%.\n$", all)
    end)

    it("formats the day space-padded, as C ctime() does", function()
        local c = helpers.connect(srv.port)
        assert(c:send("x\n"))
        local reply = assert(c:receive("*l"))
        c:close()
        local stamp = reply:match("^%[(.-)%]")
        assert.equal(24, #stamp)
        local day = tonumber(os.date("%d"))
        local expect = os.date("%a %b ") .. ("%2d"):format(day)
        -- the date can roll over between the reply and this check
        if stamp:sub(1, 10) ~= expect then
            day = tonumber(os.date("%d"))
            expect = os.date("%a %b ") .. ("%2d"):format(day)
        end
        assert.equal(expect, stamp:sub(1, 10))
    end)

    it("answers every line of a connection, in order", function()
        local c = helpers.connect(srv.port)
        assert(c:send(helpers.numbered_lines("line %d\r\n", 100)))
        for i = 1, 100 do
            local reply = assert(helpers.read_line(c))
            assert.matches("^" .. CTIME .. "line " .. i .. "\r\n$", reply)
        end
        c:close()
    end)

    it("delivers a last line without a terminator at end of stream", function()
        local c = helpers.connect(srv.port)
        assert(c:send("one\nno newline"))
        c:shutdown("send")
        local all = helpers.receive_all(c)
        assert.matches("^" .. CTIME .. "one\n" .. CTIME .. "no newline$", all)
    end)
end)

-- examples/lenprefix.lua, the length-prefixed binary RPC, over real TCP.
local helpers = require "helpers"
local util = require "fixtures.example_util"

local MAX = 64 * 1024

local function frame(payload)
    return string.pack(">s4", payload)
end

-- Reads one reply frame; returns status ("ok" or "err") and body, or nil
-- and the receive error.
local function read_reply(c)
    local head, err = c:receive(4)
    if not head then return nil, err end
    local n = string.unpack(">I4", head)
    local body = ""
    if n > 0 then body = assert(c:receive(n)) end
    local status = body:sub(1, 1)
    assert.is_true(status == "\0" or status == "\1", "bad status byte")
    return status == "\0" and "ok" or "err", body:sub(2)
end

local function call(c, payload)
    assert(c:send(frame(payload)))
    return read_reply(c)
end

-- Asserts that the server closed c.
local function assert_closed(c)
    local data, err = c:receive(1)
    assert.is_nil(data)
    assert.equal("closed", err)
end

local function add(a, b)
    return "add " .. string.pack(">i8i8", a, b)
end

describe("examples/lenprefix.lua", function()
    local srv

    lazy_setup(function()
        srv = util.start("lenprefix", nil, { no_finally = true })
    end)

    lazy_teardown(function()
        if srv then srv:stop() end
    end)

    it("answers echo, upper and add", function()
        local c = helpers.connect(srv.port)
        assert.same({ "ok", "hello" }, { call(c, "echo hello") })
        assert.same({ "ok", "" }, { call(c, "echo") })
        assert.same({ "ok", "" }, { call(c, "echo ") })
        assert.same({ "ok", "MIXED CASE 1" }, { call(c, "upper Mixed case 1") })
        local status, sum = call(c, add(40, 2))
        assert.equal("ok", status)
        assert.equal(42, string.unpack(">i8", sum))
        assert.equal(-5, string.unpack(">i8", select(2, call(c, add(-7, 2)))))
        assert.equal(math.mininteger,
                     string.unpack(">i8", select(2, call(c, add(math.maxinteger, 1)))))
        c:close()
    end)

    it("passes any bytes through, NUL and newlines included", function()
        local c = helpers.connect(srv.port)
        local bytes = {}
        for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
        local all = table.concat(bytes):rep(4)
        assert.same({ "ok", all }, { call(c, "echo " .. all) })
        c:close()
    end)

    it("replies with an error to a bad request and keeps the connection", function()
        local c = helpers.connect(srv.port)
        assert.same({ "err", "unknown method nope" }, { call(c, "nope 1 2") })
        assert.same({ "err", "bad request: want \"method args\"" },
                    { call(c, " echo") })
        assert.same({ "err", "add takes two big-endian int64 (16 bytes)" },
                    { call(c, "add 1 2") })
        assert.same({ "ok", "still open" }, { call(c, "echo still open") })
        c:close()
    end)

    it("replies with an error to a zero-length payload", function()
        local c = helpers.connect(srv.port)
        assert(c:send("\0\0\0\0"))
        assert.same({ "err", "empty request" }, { read_reply(c) })
        assert.same({ "ok", "after" }, { call(c, "echo after") })
        c:close()
    end)

    it("answers pipelined requests from one write in order", function()
        local c = helpers.connect(srv.port)
        local reqs = {}
        for i = 1, 500 do
            reqs[#reqs + 1] = frame(i % 3 == 0 and add(i, i) or "echo " .. i)
        end
        reqs[#reqs + 1] = frame("")
        assert(c:send(table.concat(reqs)))
        for i = 1, 500 do
            local status, body = read_reply(c)
            assert.equal("ok", status)
            if i % 3 == 0 then
                assert.equal(2 * i, string.unpack(">i8", body))
            else
                assert.equal(tostring(i), body)
            end
        end
        assert.same({ "err", "empty request" }, { read_reply(c) })
        c:close()
    end)

    it("reassembles frames split anywhere, the length included", function()
        local c = helpers.connect(srv.port)
        local req = frame("upper split frame") .. frame("echo two")
        for i = 1, #req do
            assert(c:send(req:sub(i, i)))
            if i % 5 == 0 then helpers.sleep(0.005) end
        end
        assert.same({ "ok", "SPLIT FRAME" }, { read_reply(c) })
        assert.same({ "ok", "two" }, { read_reply(c) })
        -- nothing is answered before a frame is complete
        assert(c:send(frame("echo late"):sub(1, 7)))
        c:settimeout(0.2)
        local early, err = c:receive(1)
        assert.is_nil(early)
        assert.equal("timeout", err)
        c:settimeout(5)
        assert(c:send(frame("echo late"):sub(8)))
        assert.same({ "ok", "late" }, { read_reply(c) })
        c:close()
    end)

    it("accepts a frame of exactly the maximum length", function()
        local c = helpers.connect(srv.port)
        local payload = "echo " .. ("m"):rep(MAX - 5)
        assert.same({ "ok", payload:sub(6) }, { call(c, payload) })
        c:close()
    end)

    it("closes the connection after an error reply for an oversized frame", function()
        local c = helpers.connect(srv.port)
        assert.same({ "ok", "first" }, { call(c, "echo first") })
        -- the length alone is enough: the payload is never sent
        assert(c:send(string.pack(">I4", MAX + 1)))
        assert.same({ "err", "frame too long (max 65536 bytes)" }, { read_reply(c) })
        assert_closed(c)
        c:close()
        assert.matches("frame too long", srv:log())
    end)

    it("drops a frame cut short by the end of the stream", function()
        local c = helpers.connect(srv.port)
        assert(c:send(frame("echo whole") .. frame("echo cut"):sub(1, 9)))
        c:shutdown("send")
        assert.same({ "ok", "whole" }, { read_reply(c) })
        assert_closed(c)
        c:close()
    end)

    it("leaves no connection or task behind", function()
        util.assert_clean_end(srv)
    end)
end)

-- examples/echo.lua, the stream-style line echo, over real TCP sockets.
local helpers = require "helpers"
local util = require "fixtures.example_util"

describe("examples/echo.lua", function()
    local srv

    lazy_setup(function()
        srv = util.start("echo", nil, { no_finally = true })
    end)

    lazy_teardown(function()
        if srv then srv:stop() end
    end)

    it("echoes each line with its own terminator, LF or CRLF", function()
        local c = helpers.connect(srv.port)
        assert(c:send("one\r\n"))
        assert.equal("one\r\n", helpers.read_line(c))
        assert(c:send("two\n"))
        assert.equal("two\n", helpers.read_line(c))
        assert(c:send("\r\n"))
        assert.equal("\r\n", helpers.read_line(c))
        assert(c:send("tab\there, and a lone \r inside\n"))
        assert.equal("tab\there, and a lone \r inside\n", helpers.read_line(c))
        c:close()
    end)

    it("waits for the whole line when it arrives in pieces", function()
        local c = helpers.connect(srv.port)
        assert(c:send("hel"))
        helpers.sleep(0.05)
        assert(c:send("lo wor"))
        c:settimeout(0.2)
        local early, err = c:receive(1)
        assert.is_nil(early)
        assert.equal("timeout", err)
        c:settimeout(5)
        assert(c:send("ld\r"))
        helpers.sleep(0.05)
        assert(c:send("\n"))
        assert.equal("hello world\r\n", helpers.read_line(c))
        c:close()
    end)

    it("answers many lines sent in one write, in order", function()
        local c = helpers.connect(srv.port)
        local lines = {}
        for i = 1, 2000 do
            lines[i] = "line " .. i .. (i % 2 == 0 and "\r\n" or "\n")
        end
        local all = table.concat(lines)
        assert(c:send(all))
        assert.equal(all, assert(c:receive(#all)))
        c:close()
    end)

    it("returns the partial last line when the peer closes mid-line", function()
        local c = helpers.connect(srv.port)
        assert(c:send("whole\nno newline"))
        c:shutdown("send")
        assert.equal("whole\nno newline", helpers.receive_all(c))
        c:close()
    end)

    it("closes a connection whose line is over 64 KiB", function()
        local c = helpers.connect(srv.port)
        assert(c:send("short\n" .. ("x"):rep(70000)))
        assert.equal("short\n", helpers.read_line(c))
        local rest, err = c:receive(1)
        assert.is_nil(rest)
        assert.equal("closed", err)
        c:close()
    end)

    it("slows down only a client that sends without reading", function()
        local greedy = helpers.connect(srv.port)
        local line = ("z"):rep(99) .. "\n"
        local big = line:rep(160000)         -- 16 MB
        local rss0 = srv:rss_kib()
        -- Send until the server stops reading from us: it does once 1 MiB
        -- of echo is queued and the kernel buffers are full.
        greedy:settimeout(0.5 * util.slow)
        local last, _, partial = greedy:send(big)
        local sent = last or partial
        assert.is_true(sent < #big, "the server never stopped reading")
        -- Meanwhile another client is served at once.
        local other = helpers.connect(srv.port, 2 * util.slow)
        local t0 = helpers.now()
        assert(other:send("still here\n"))
        assert.equal("still here\n", helpers.read_line(other))
        assert.is_true(helpers.now() - t0 < 1 * util.slow)
        other:close()
        -- The greedy client gets everything back once it reads.
        local back = helpers.pump(greedy, big:sub(sent + 1), #big,
                                  30 * util.slow)
        assert.equal(#big, #back)
        assert.is_true(back == big)
        greedy:close()
        -- About 1 MiB of queued output and 64 KiB of input, not 16 MB.
        -- (Under ASan the quarantine of freed blocks swells RSS anyway.)
        if not helpers.sanitize then
            local grew = srv:rss_kib() - rss0
            assert.is_true(grew < 8 * 1024, "RSS grew " .. grew .. " KiB")
        end
    end)

    it("leaves no connection or task behind", function()
        util.assert_clean_end(srv)
    end)

    describe("with idle_timeout = 0.5", function()
        it("says bye and hangs up on a client idle that long", function()
            local short = util.start("echo", nil, nil, "{ idle_timeout = 0.5 }")
            local c = helpers.connect(short.port, 5 * util.slow)
            -- each line starts the clock again
            for i = 1, 4 do
                assert(c:send("tick " .. i .. "\n"))
                assert.equal("tick " .. i .. "\n", helpers.read_line(c))
                helpers.sleep(0.3)
            end
            local t0 = helpers.now()
            assert.equal("idle too long, bye\r\n", helpers.read_line(c))
            local idle = helpers.now() - t0
            assert.is_true(idle > 0.1 and idle < 2 * util.slow, "after " .. idle .. " s")
            local rest, err = c:receive(1)
            assert.is_nil(rest)
            assert.equal("closed", err)
            c:close()
            util.wait_idle(short)
            assert.equal(0, short:stop())
        end)
    end)
end)

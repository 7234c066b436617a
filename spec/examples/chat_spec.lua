-- examples/chat.lua, the line-based chat room, over real TCP sockets.
local helpers = require "helpers"
local util = require "fixtures.example_util"

local WELCOME = "* welcome! your nickname?\r\n"

-- The greeting once nick has joined.
local function hello(nick)
    return "* hello " .. nick .. "; /who lists who is here, /quit leaves\r\n"
end

describe("examples/chat.lua", function()
    local srv

    lazy_setup(function()
        srv = util.start("chat", nil, { no_finally = true })
    end)

    lazy_teardown(function()
        if srv then srv:stop() end
    end)

    -- The next line from c, which must be `want`.
    local function expect(c, want)
        local line, err, partial = helpers.read_line(c)
        assert.equal(want, line, "got " .. tostring(err) .. " after " ..
                     tostring(partial))
    end

    -- Sends line on c; the answer on c must be `want`.
    local function say(c, line, want)
        assert(c:send(line))
        expect(c, want)
    end

    -- Connects and joins as nick; returns the client.
    local function join(nick)
        local c = helpers.connect(srv.port, 5 * util.slow)
        expect(c, WELCOME)
        say(c, nick .. "\r\n", hello(nick))
        return c
    end

    -- Asserts nothing more arrives on c for a moment.
    local function expect_quiet(c)
        c:settimeout(0.2)
        local data, err = c:receive(1)
        c:settimeout(5 * util.slow)
        assert.is_nil(data)
        assert.equal("timeout", err)
    end

    -- Asserts the server has closed c.
    local function expect_closed(c)
        local rest, err = c:receive(1)
        assert.is_nil(rest)
        assert.equal("closed", err)
    end

    it("asks for a nickname first and says hello", function()
        local c = helpers.connect(srv.port)
        expect(c, WELCOME)
        say(c, "alice\n", hello("alice"))
        c:close()
    end)

    it("sends each line to every other client as <nick> text", function()
        local alice = join("alice")
        local bob = join("bob")
        expect(alice, "* bob joined\r\n")
        local carol = join("carol")
        expect(alice, "* carol joined\r\n")
        expect(bob, "* carol joined\r\n")

        assert(alice:send("hello, all\r\n"))
        expect(bob, "<alice> hello, all\r\n")
        expect(carol, "<alice> hello, all\r\n")
        assert(carol:send("hi alice\nhi bob\n"))
        expect(alice, "<carol> hi alice\r\n")
        expect(alice, "<carol> hi bob\r\n")
        expect(bob, "<carol> hi alice\r\n")
        expect(bob, "<carol> hi bob\r\n")
        -- the sender gets no copy of its own lines
        expect_quiet(alice)
        expect_quiet(carol)

        carol:close()
        expect(alice, "* carol left\r\n")
        expect(bob, "* carol left\r\n")
        bob:close()
        expect(alice, "* bob left\r\n")
        alice:close()
    end)

    it("lists the nicknames present on /who, sorted", function()
        local zed = join("zed")
        local amy = join("amy")
        expect(zed, "* amy joined\r\n")
        say(amy, "/who\r\n", "* here: amy, zed\r\n")
        say(amy, "/whom\n", "* unknown command /whom; try /who or /quit\r\n")
        expect_quiet(zed)
        amy:close()
        expect(zed, "* amy left\r\n")
        say(zed, "/who\n", "* here: zed\r\n")
        zed:close()
    end)

    it("says bye on /quit, closes, and announces the leave", function()
        local stay = join("stay")
        local go = join("go")
        expect(stay, "* go joined\r\n")
        say(go, "/quit\r\n", "* bye, go\r\n")
        expect_closed(go)
        go:close()
        expect(stay, "* go left\r\n")
        stay:close()
    end)

    it("refuses an empty, malformed or taken nickname and asks again", function()
        local dup = join("dup")
        local c = helpers.connect(srv.port)
        expect(c, WELCOME)
        local again = "* a nickname is 1 to 16 letters, digits, _ or -; try again\r\n"
        say(c, "\r\n", again)
        say(c, "   \n", again)
        say(c, "two words\n", again)
        say(c, ("n"):rep(17) .. "\n", again)
        say(c, "dup\n", "* dup is taken; try another\r\n")
        -- nobody hears about a client that has not joined yet
        expect_quiet(dup)
        say(c, "  dup2 \n", hello("dup2"))
        expect(dup, "* dup2 joined\r\n")
        c:close()
        expect(dup, "* dup2 left\r\n")
        -- a nickname is free again once its owner left
        local c2 = join("dup2")
        c2:close()
        dup:close()
    end)

    it("disconnects a client whose line is over 4096 bytes", function()
        local calm = join("calm")
        local loud = join("loud")
        expect(calm, "* loud joined\r\n")
        assert(loud:send(("a"):rep(4096) .. "\n"))
        expect(calm, "<loud> " .. ("a"):rep(4096) .. "\r\n")
        say(loud, ("a"):rep(5000) .. "\n",
            "* lines are at most 4096 bytes; bye\r\n")
        expect_closed(loud)
        loud:close()
        expect(calm, "* loud left (line too long)\r\n")
        calm:close()
    end)

    it("keeps serving the others while one client never reads", function()
        local slow = join("slow")
        local flood = join("flood")
        local third = join("third")
        -- Without this, Nagle's algorithm on our side and the server's
        -- delayed ACKs hold each batch up to 40 ms once the server has
        -- sent flood a line (the leave notice).
        flood:setoption("tcp-nodelay", true)
        finally(function()
            slow:close()
            flood:close()
            third:close()
        end)
        expect(flood, "* third joined\r\n")
        local rss0 = srv:rss_kib()

        -- flood sends batches of PER lines (20 KB) until slow, which
        -- reads nothing, has been dropped, and 20 batches more; third
        -- must get each batch at once. The kernel buffers take megabytes
        -- for slow before its queue in luaserv grows (here 4 to 5 MB).
        local MAX_BATCHES, PER = 1000, 100
        local LEFT = "* slow left (too slow to read)\r\n"
        local pad = ("x"):rep(180)
        local dropped, worst = nil, 0
        local t_start = helpers.now()
        for b = 1, MAX_BATCHES do
            if dropped and b > dropped + 20 then break end
            local lines, want = {}, {}
            for i = 1, PER do
                lines[i] = ("%d.%d %s\n"):format(b, i, pad)
                want[i] = "<flood> " .. lines[i]:sub(1, -2) .. "\r\n"
            end
            want = table.concat(want)
            local t0 = helpers.now()
            assert(flood:send(table.concat(lines)))
            local got = assert(third:receive(#want))
            if got ~= want then            -- the leave notice came in between
                got = got .. assert(third:receive(#LEFT))
                local at = assert(got:find(LEFT, 1, true), "unexpected output")
                got = got:sub(1, at - 1) .. got:sub(at + #LEFT)
                assert.is_true(got == want, "batch " .. b .. " is wrong")
                dropped = b
            end
            worst = math.max(worst, helpers.now() - t0)
        end
        local total = helpers.now() - t_start
        assert.is_true(worst < 1 * util.slow, "a batch took " .. worst .. " s")
        assert.is_true(total < 20 * util.slow, "the flood took " .. total .. " s")

        -- slow fell more than 256 KiB behind and was dropped.
        assert.is_number(dropped, "slow was never dropped")
        expect(flood, "* slow left (too slow to read)\r\n")
        say(third, "/who\n", "* here: flood, third\r\n")
        if not helpers.sanitize then       -- ASan's quarantine swells RSS
            local grew = srv:rss_kib() - rss0
            assert.is_true(grew < 16 * 1024, "RSS grew " .. grew .. " KiB")
        end

        -- What was queued for slow is still written if it reads now, up to
        -- the notice, then the connection closes.
        local all = helpers.receive_all(slow)
        assert.matches("\r\n%* you are not reading; bye\r\n$", all)
    end)

    it("leaves no connection or task behind", function()
        util.assert_clean_end(srv)
    end)
end)

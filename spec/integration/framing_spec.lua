-- Framing over real sockets: every framing mode fed one byte at a time, in
-- one write and split at every boundary; limits; end of stream; switching
-- framing on a live connection. The fixture echoes each frame as
-- string.pack(">s4", payload), so frame boundaries are checked exactly.
local helpers = require "helpers"

local ECHO = "spec/fixtures/framing_echo.lua"
local BYTE_GAP = 0.005   -- between sends, so the server sees separate reads

local read_to_close = helpers.read_to_close

-- Starts the echo fixture with the given framing (Lua source text);
-- inside it() the test stops it even when it fails.
local function start_echo(framing)
    local source = ("local handler = dofile(%q)\nhandler.framing = %s\n" ..
                    "return handler\n"):format(ECHO, framing)
    return helpers.start_server{ source = source }
end

-- Splits the fixture's replies into payloads; returns them and any bytes
-- left over that do not make a whole reply.
local function decode(data)
    local frames, pos = {}, 1
    while pos + 3 <= #data do
        local n = string.unpack(">I4", data, pos)
        if pos + 3 + n > #data then break end
        frames[#frames + 1] = data:sub(pos + 4, pos + 3 + n)
        pos = pos + 4 + n
    end
    return frames, data:sub(pos)
end

local function connect(port)
    local c = helpers.connect(port, 10)
    c:setoption("tcp-nodelay", true)
    return c
end

-- Reads until the server closes c, closes it, and returns the payloads
-- echoed; checks that the server closed and left no partial reply.
local function read_frames(c)
    local all, err = read_to_close(c)
    assert.equal("closed", err)
    local frames, rest = decode(all)
    assert.equal("", rest)
    return frames
end

-- Sends chunks (a short sleep between them), half-closes, and returns the
-- payloads echoed before the server closed.
local function exchange(port, chunks)
    local c = connect(port)
    for i, chunk in ipairs(chunks) do
        if i > 1 then helpers.sleep(BYTE_GAP) end
        assert(c:send(chunk))
    end
    c:shutdown("send")
    return read_frames(c)
end

local function bytes_of(s)
    local out = {}
    for i = 1, #s do out[i] = s:sub(i, i) end
    return out
end

-- How many connections the server logged on_connect and on_close for.
local function opens_and_closes(srv)
    local log = srv:log()
    local _, opened = log:gsub("fw open %d+", "")
    local _, closed = log:gsub("fw close %d+ ", "")
    return opened, closed
end

-- Waits until the server logged on_close for every connection it logged
-- on_connect for, and for at least `opened` (default 0) of them, then
-- stops it and checks no connection was left.
local function stop_clean(srv, opened)
    local counts = helpers.wait_for(function()
        local o, c = opens_and_closes(srv)
        if o == c and o >= (opened or 0) then return { o, c } end
    end, 10)
    local o, c = opens_and_closes(srv)
    assert.is_truthy(counts, ("on_close was not called for every connection:"
        .. " %d opened (%d expected at least), %d closed"):format(o, opened or 0, c))
    assert.equal(0, srv:stop())
    assert.matches("fw stop active=0\n", srv:log())
end

-- Checks that the server logged on_close(conn, reason) within 5 s.
local function assert_closed_with(srv, reason)
    assert.is_truthy(helpers.wait_for(function()
        return srv:log():match("fw close %d+ " .. reason .. "\n")
    end, 5), "no on_close(conn, \"" .. reason .. "\") in:\n" .. srv:log())
end

local function pack_all(fmt, payloads)
    local out = {}
    for i, p in ipairs(payloads) do out[i] = string.pack(fmt, p) end
    return table.concat(out)
end

local MODES = {
    { name = "line (LF)", framing = '"line"',
      input = "ab\ncd\n\nxyz\n", frames = { "ab", "cd", "", "xyz" } },
    { name = "line (CRLF)", framing = '"line"',
      input = "ab\r\ncd\r\n\r\nx\ry\r\n", frames = { "ab", "cd", "", "x\ry" } },
    { name = "line with keep_eol", framing = '{ "line", keep_eol = true }',
      input = "ab\r\ncd\n\r\nx\n", frames = { "ab\r\n", "cd\n", "\r\n", "x\n" } },
    { name = "line with max 4", framing = '{ "line", max = 4 }',
      input = "abcd\nab\r\nwxyz\r\n", frames = { "abcd", "ab", "wxyz" } },
    { name = "line with keep_eol and max 4",
      framing = '{ "line", keep_eol = true, max = 4 }',
      input = "abcd\r\nef\n", frames = { "abcd\r\n", "ef\n" } },
    { name = "delim \\r\\n\\r\\n", framing = '{ "delim", "\\r\\n\\r\\n" }',
      input = "a\r\nb\r\n\r\n\r\n\r\nc\r\r\n\r\n", frames = { "a\r\nb", "", "c\r" } },
    { name = "delim || with keep_eol and max 3",
      framing = '{ "delim", "||", keep_eol = true, max = 3 }',
      input = "x||||y|z||", frames = { "x||", "||", "y|z||" } },
    { name = "fixed 3", framing = '{ "fixed", 3 }',
      input = "abc\0\255\ndef", frames = { "abc", "\0\255\n", "def" } },
    { name = "fixed 1", framing = '{ "fixed", 1 }',
      input = "xyz", frames = { "x", "y", "z" } },
    { name = "prefix (default: 4 bytes, big endian)", framing = '"prefix"',
      input = pack_all(">s4", { "ab", "", "xyz" }), frames = { "ab", "", "xyz" } },
    { name = "raw", framing = '"raw"', input = "hello\r\n\0world", raw = true },
    { name = "raw with max 4", framing = '{ "raw", max = 4 }',
      input = "hello\r\n\0world", raw = true, max = 4 },
}

local PREFIX_PAYLOADS = { "ab", "", "\0\1\r\n", "xyz" }
for _, len in ipairs({ 1, 2, 4, 8 }) do
    for _, endian in ipairs({ "big", "little" }) do
        local fmt = (endian == "big" and ">" or "<") .. "s" .. len
        MODES[#MODES + 1] = {
            name = ("prefix %d bytes %s endian"):format(len, endian),
            framing = ('{ "prefix", %d, endian = "%s" }'):format(len, endian),
            input = pack_all(fmt, PREFIX_PAYLOADS), frames = PREFIX_PAYLOADS,
        }
    end
end
MODES[#MODES + 1] = {
    name = "prefix 2 bytes little endian with max 5",
    framing = '{ "prefix", 2, endian = "little", max = 5 }',
    input = pack_all("<s2", { "12345", "", "a" }), frames = { "12345", "", "a" },
}

for _, mode in ipairs(MODES) do
    describe(mode.name .. " framing", function()
        local srv

        lazy_setup(function()
            srv = start_echo(mode.framing)
        end)

        lazy_teardown(function()
            if srv then srv:stop() end
        end)

        local function check(frames)
            if mode.raw then
                assert.equal(mode.input, table.concat(frames))
                for _, f in ipairs(frames) do
                    assert.is_true(#f >= 1 and #f <= (mode.max or 65536))
                end
            else
                assert.same(mode.frames, frames)
            end
        end

        it("frames input fed one byte at a time", function()
            check(exchange(srv.port, bytes_of(mode.input)))
        end)

        it("frames input that arrives in one write", function()
            check(exchange(srv.port, { mode.input }))
        end)

        it("frames input split in two at every byte boundary", function()
            for i = 1, #mode.input - 1 do
                check(exchange(srv.port, { mode.input:sub(1, i),
                                           mode.input:sub(i + 1) }))
            end
        end)

        it("closes every connection it opened", function()
            -- its own three, so that it checks something when run alone:
            -- a whole exchange, a hang-up inside a frame, and a reset
            local opened = opens_and_closes(srv)
            check(exchange(srv.port, { mode.input }))
            local cut = connect(srv.port)
            assert(cut:send(mode.input:sub(1, 1)))
            cut:close()
            local reset = connect(srv.port)
            assert(reset:send(mode.input:sub(1, 2)))
            assert(reset:setoption("linger", { on = true, timeout = 0 }))
            reset:close()
            stop_clean(srv, opened + 3)
        end)
    end)
end

describe("raw framing with max", function()
    it("delivers no frame longer than max from one large write", function()
        local srv = start_echo('{ "raw", max = 4 }')
        local input = ("0123456789"):rep(10)
        local frames = exchange(srv.port, { input })
        assert.equal(input, table.concat(frames))
        for _, f in ipairs(frames) do assert.is_true(#f <= 4) end
        assert.is_true(#frames >= 25)
        stop_clean(srv)
    end)
end)

describe("a frame over max", function()
    -- Sends input, does not half-close, and reads until the server closes.
    local function send_and_read(port, input)
        local c = connect(port)
        assert(c:send(input))
        return read_frames(c)
    end

    -- Starts the echo fixture with framing, sends input, and checks that
    -- the payloads echoed are want and that the conn closed as "too long".
    local function check_too_long(framing, input, want)
        local srv = start_echo(framing)
        assert.same(want, send_and_read(srv.port, input))
        assert_closed_with(srv, "too long")
        stop_clean(srv)
    end

    it("calls on_error with 'frame too long' and closes for a line", function()
        check_too_long('{ "line", max = 4 }', "ok\nabcde\nnever\n",
                       { "ok", "error: frame too long" })
    end)

    it("is refused before its terminator arrives", function()
        check_too_long('{ "line", max = 4 }', "abcdefgh",
                       { "error: frame too long" })
    end)

    it("calls on_error with 'frame too long' for a delimited record", function()
        check_too_long('{ "delim", "\\r\\n", max = 3 }', "abc\r\nabcd\r\n",
                       { "abc", "error: frame too long" })
    end)

    it("is refused as soon as a length prefix over max arrives", function()
        check_too_long('{ "prefix", 2, max = 10 }',
                       string.pack(">s2", "0123456789") ..
                       string.pack(">I2", 1000),
                       { "0123456789", "error: frame too long" })
    end)

    it("is refused for an 8-byte prefix announcing 2^62 bytes", function()
        check_too_long('{ "prefix", 8 }', string.pack(">I8", 1 << 62),
                       { "error: frame too long" })
    end)

    it("leaves the server serving new connections", function()
        local srv = start_echo('{ "line", max = 4 }')
        for i = 1, 3 do
            assert.same({ "error: frame too long" },
                        send_and_read(srv.port, "toolong" .. i .. "\n"))
            assert.same({ "ok" .. i }, exchange(srv.port, { "ok" .. i .. "\n" }))
        end
        stop_clean(srv)
    end)
end)

describe("end of stream", function()
    it("delivers a partial line as a last frame", function()
        local srv = start_echo('"line"')
        assert.same({ "ab", "cd" }, exchange(srv.port, { "ab\ncd" }))
        assert_closed_with(srv, "eof")
        stop_clean(srv)
    end)

    it("delivers a partial line as a last frame with keep_eol", function()
        local srv = start_echo('{ "line", keep_eol = true }')
        assert.same({ "ab\r\n", "cd" }, exchange(srv.port, { "ab\r\ncd" }))
        stop_clean(srv)
    end)

    it("delivers a partial delimited record as a last frame", function()
        local srv = start_echo('{ "delim", "||" }')
        assert.same({ "x", "y|" }, exchange(srv.port, { "x||y|" }))
        stop_clean(srv)
    end)

    it("delivers the bytes left over in raw framing", function()
        local srv = start_echo('"raw"')
        assert.same({ "tail" }, exchange(srv.port, { "tail" }))
        stop_clean(srv)
    end)

    it("drops a truncated fixed frame and closes with 'truncated'", function()
        local srv = start_echo('{ "fixed", 3 }')
        assert.same({ "abc" }, exchange(srv.port, { "abcde" }))
        assert_closed_with(srv, "truncated")
        stop_clean(srv)
    end)

    it("drops a prefixed frame truncated in its payload and closes with 'truncated'",
       function()
        local srv = start_echo('{ "prefix", 4 }')
        local input = string.pack(">s4", "ab") .. string.pack(">I4", 10) .. "abc"
        assert.same({ "ab" }, exchange(srv.port, { input }))
        assert_closed_with(srv, "truncated")
        stop_clean(srv)
    end)

    it("drops a prefixed frame truncated in its length and closes with 'truncated'",
       function()
        local srv = start_echo('{ "prefix", 4, endian = "little" }')
        assert.same({}, exchange(srv.port, { "\0\0" }))
        assert_closed_with(srv, "truncated")
        stop_clean(srv)
    end)

    it("closes with 'eof' after whole fixed frames", function()
        local srv = start_echo('{ "fixed", 2 }')
        assert.same({ "ab", "cd" }, exchange(srv.port, { "abcd" }))
        assert_closed_with(srv, "eof")
        stop_clean(srv)
    end)
end)

describe("many frames in one write", function()
    it("are all delivered, in order", function()
        local srv = start_echo('"line"')
        local lines, want = {}, {}
        for i = 1, 300 do
            lines[i] = "line " .. i .. "\n"
            want[i] = "line " .. i
        end
        assert.same(want, exchange(srv.port, { table.concat(lines) }))
        stop_clean(srv)
    end)
end)

describe("conn:set_framing", function()
    local srv

    lazy_setup(function()
        srv = helpers.start_server{ script = "spec/fixtures/framing_switch.lua" }
    end)

    lazy_teardown(function()
        if srv then srv:stop() end
    end)

    it("frames the bytes already buffered after the current frame by the new spec",
       function()
        local input = "HDR\n" .. string.pack(">s4", "one") ..
                      string.pack(">s4", "two\n")
        assert.same({ "HDR", "one", "two\n" }, exchange(srv.port, { input }))
    end)

    it("switches back and forth within one write", function()
        local input = "HDR\n" .. string.pack(">s4", "a") ..
                      string.pack(">s4", "LINE") .. "b\nc\n"
        assert.same({ "HDR", "a", "LINE", "b", "c" },
                    exchange(srv.port, { input }))
    end)

    it("switches the same way when the input arrives one byte at a time",
       function()
        local input = "HDR\n" .. string.pack(">s4", "a") ..
                      string.pack(">s4", "LINE") .. "b\n"
        assert.same({ "HDR", "a", "LINE", "b" },
                    exchange(srv.port, bytes_of(input)))
    end)
end)

describe("handler.framing", function()
    it("is read again when a new connection opens", function()
        local srv = helpers.start_server{
            script = "spec/fixtures/framing_reassign.lua" }
        local old = connect(srv.port)
        assert(old:send("fixed\n"))
        local frames = decode(assert(old:receive(4 + #"fixed")))
        assert.same({ "fixed" }, frames)
        -- a connection opened after the change frames 2 bytes at a time
        assert.same({ "ab", "cd" }, exchange(srv.port, { "abcd" }))
        -- the connection that was open keeps its line framing
        assert(old:send("xyz\n"))
        old:shutdown("send")
        local all = read_to_close(old)
        assert.same({ "xyz" }, (decode(all)))
    end)
end)

-- framing = "resp" over real sockets: commands in callback and stream
-- style (multibulk and inline, pipelined, split into 1-byte writes, bulks
-- of 300 KB and 24 MiB), redis-cli, protocol errors answered as Redis
-- does, and the client mode reading a real redis-server's replies.
-- Fixtures: spec/fixtures/resp_echo.lua (commands), resp_client.lua
-- (client mode).
local helpers = require "helpers"
local socket = require "socket"

local TIMEOUT = helpers.sanitize and 60 or 20
local ECHO = "spec/fixtures/resp_echo.lua"
local CLIENT = "spec/fixtures/resp_client.lua"
local resp = helpers.resp

-- Starts the echo fixture, with extra Lua lines run on its handler `h`.
local function start_echo(extra)
    local source = ("local h = dofile(%q)\n%s\nreturn h\n"):format(
        ECHO, extra or "")
    return helpers.start_server{ source = source }
end

local STREAM = [[
h.on_message = nil
function h.handle(conn)
    while true do
        local args, err = conn:read_frame()
        if args == nil then return end
        conn:write(h.respond(args))
    end
end
]]

local function connect(port)
    local c = helpers.connect(port, TIMEOUT)
    c:setoption("tcp-nodelay", true)
    return c
end

-- Parses RESP replies from data; returns the values (bulk and simple
-- strings as strings, errors as { err = }, integers, null as "<null>",
-- arrays as tables) and the bytes left over.
local function parse(data)
    local pos, out = 1, {}
    local function value()
        local t = data:sub(pos, pos)
        local e = data:find("\r\n", pos, true)
        if not e then return nil end
        local line = data:sub(pos + 1, e - 1)
        if t == "+" then pos = e + 2; return line end
        if t == "-" then pos = e + 2; return { err = line } end
        if t == ":" then pos = e + 2; return tonumber(line) end
        local n = tonumber(line)
        if t == "$" then
            if n < 0 then pos = e + 2; return "<null>" end
            if #data < e + 1 + n + 2 then return nil end
            pos = e + 2 + n + 2
            return data:sub(e + 2, e + 1 + n)
        end
        assert(t == "*", "bad reply type " .. t)
        local save = pos
        pos = e + 2
        local arr = {}
        for i = 1, n do
            local v = value()
            if v == nil then pos = save; return nil end
            arr[i] = v
        end
        return arr
    end
    while pos <= #data do
        local v = value()
        if v == nil then break end
        out[#out + 1] = v
    end
    return out, data:sub(pos)
end

-- Reads from c until want replies parsed (or the peer closed); returns
-- them, the leftover bytes and the error that ended reading, if any.
local function read_replies(c, want)
    local buf, vals, rest, err = "", {}, "", nil
    local deadline = socket.gettime() + TIMEOUT
    while #vals < want and socket.gettime() < deadline do
        local data, e, partial = c:receive(65536)
        data = data or partial
        if data and #data > 0 then
            buf = buf .. data
            vals, rest = parse(buf)
        end
        if e == "closed" then err = e; break end
    end
    return vals, rest, err
end

-- Both styles: each test runs against a callback- and a stream-style
-- server.
for _, style in ipairs({ "callback", "stream" }) do
    describe("resp framing (" .. style .. " style)", function()
        local function start()
            return start_echo(style == "stream" and STREAM or nil)
        end

        it("delivers multibulk and inline commands as argument tables", function()
            local srv = start()
            local c = connect(srv.port)
            assert(c:send(resp("ECHO", "a b", "", "\r\n*1") ..
                          "FOO bar \"q u\\x41\" 'it\\'s'\r\n\r\n*0\r\n" ..
                          resp("PING")))
            local vals = read_replies(c, 3)
            assert.same({ { "ECHO", "a b", "", "\r\n*1" },
                          { "FOO", "bar", "q uA", "it's" }, "PONG" }, vals)
            c:close()
        end)

        it("frames 10,000 pipelined commands sent in one write", function()
            local srv = start()
            local c = connect(srv.port)
            local parts = {}
            for i = 1, 10000 do parts[i] = resp("SET", "key:" .. i, "v" .. i) end
            parts[#parts + 1] = resp("GET", "key:9999")
            local got = helpers.pump(c, table.concat(parts), function(d)
                return d:sub(-6) == "v9999\r\n" or #d > 50005 + 12
            end, TIMEOUT)
            local vals, rest = parse(got)
            assert.equal(10001, #vals)
            assert.equal("", rest)
            assert.equal("OK", vals[1])
            assert.equal("OK", vals[10000])
            assert.equal("v9999", vals[10001])
            c:close()
        end)

        it("frames a command sent one byte per write", function()
            local srv = start()
            local c = connect(srv.port)
            local cmd = resp("ECHO", "x\r\ny", "") .. "INLINE 'a b'\r\n"
            for i = 1, #cmd do
                assert(c:send(cmd:sub(i, i)))
                socket.sleep(0.002)
            end
            local vals = read_replies(c, 2)
            assert.same({ { "ECHO", "x\r\ny", "" }, { "INLINE", "a b" } }, vals)
            c:close()
        end)

        it("delivers bulks of 300 KB and 24 MiB", function()
            local srv = start()
            local c = connect(srv.port)
            local mid = string.rep("ab\r\n", 75000)
            local big = string.rep("0123456789abcdef", 24 * 65536)
            local data = resp("LENS", mid) .. resp("LENS", big, "z") ..
                         resp("PING")
            local got = helpers.pump(c, data, function(d)
                return d:find("+PONG\r\n", 1, true) ~= nil
            end, TIMEOUT)
            local vals = parse(got)
            assert.same({ { 4, 300000 }, { 4, 24 * 1024 * 1024, 1 }, "PONG" },
                        vals)
            c:close()
        end)

        it("answers a protocol error with -ERR and closes, other conns go on", function()
            local srv = start()
            local good = connect(srv.port)
            assert(good:send(resp("PING")))
            assert.same({ "PONG" }, (read_replies(good, 1)))
            local cases = {
                { "*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n",
                  "expected '$', got 'f'" },
                { "*x\r\n", "invalid multibulk length" },
                { "*1\r\n$-3\r\n", "invalid bulk length" },
                { "SET k \"v\r\n", "unbalanced quotes in request" },
                { "*2000000\r\n", "invalid multibulk length" },
                { string.rep("a", 70000), "too big inline request" },
            }
            for _, case in ipairs(cases) do
                local c = connect(srv.port)
                local got, err = helpers.pump(c, case[1], function() return false end,
                                              TIMEOUT / 4)
                local all, e = helpers.read_to_close(c)
                got = got .. all
                err = e or err
                assert.equal("-ERR Protocol error: " .. case[2] .. "\r\n", got)
                assert.equal("closed", err)
            end
            assert(good:send(resp("SET", "k", "still") .. resp("GET", "k")))
            assert.same({ "OK", "still" }, (read_replies(good, 2)))
            good:close()
            local log = srv:log()
            assert.truthy(log:find("expected '$' (resp framing); closing", 1,
                                   true))
        end)

        it("closes without a reply when the stream ends mid-command", function()
            local srv = start()
            local c = connect(srv.port)
            assert(c:send(resp("PING") .. "*2\r\n$3\r\nGET\r\n"))
            c:shutdown("send")
            local all, err = helpers.read_to_close(c)
            assert.equal("+PONG\r\n", all)
            assert.equal("closed", err)
            -- Dropped as any cut-off frame is: no on_error, no -ERR.
            assert.truthy(helpers.wait_for(function()
                return srv:log():find("resp close %d+ " ..
                    (style == "stream" and "closed" or "truncated"))
            end, TIMEOUT))
            local log = srv:log()
            assert.falsy(log:find("resp error", 1, true))
            assert.truthy(log:find("frame cut off at end of stream", 1, true))
        end)
    end)
end

describe("resp framing with redis-cli", function()
    it("answers PING, SET and GET", function()
        if helpers.sh("command -v redis-cli") ~= 0 then
            return pending("redis-cli is not installed")
        end
        local srv = start_echo()
        local cli = "redis-cli -p " .. srv.port .. " "
        local _, out = helpers.sh(cli .. "PING")
        assert.equal("PONG\n", out)
        _, out = helpers.sh(cli .. "SET greeting 'hello world'")
        assert.equal("OK\n", out)
        _, out = helpers.sh(cli .. "GET greeting")
        assert.equal("hello world\n", out)
        _, out = helpers.sh(cli .. "GET missing")
        assert.equal("\n", out)
        _, out = helpers.sh("printf 'PING\\nGET greeting\\n' | " .. cli)
        assert.equal("PONG\nhello world\n", out)
    end)
end)

describe("resp framing, client mode", function()
    -- Sends "ADDR CMD | CMD ..." to the client fixture; returns its lines.
    local function ask(srv, addr, cmds, n)
        local c = connect(srv.port)
        assert(c:send(addr .. " " .. cmds .. "\n"))
        local lines = {}
        for i = 1, n do
            local line, err = c:receive("*l")
            assert(line, err)
            lines[i] = line
        end
        c:close()
        return lines
    end

    -- Starts redis-server on a unix socket (no port to pick), stopped by
    -- pid when the test ends; returns "unix:PATH", or nil when missing.
    local function start_redis()
        if helpers.sh("command -v redis-server") ~= 0 then return nil end
        local base = helpers.tmpname()
        local sock, pidf = base .. ".sock", base .. ".pid"
        os.execute("sh -c " .. helpers.shell_quote(
            "redis-server --port 0 --unixsocket " .. sock ..
            " --save '' --appendonly no >" .. base .. ".log 2>&1 & echo $! >" ..
            pidf) .. " >/dev/null 2>&1")
        local pid = helpers.wait_for(function()
            local t = helpers.read_file(pidf)
            return t and t:match("%d+")
        end, 10)
        assert(pid, "redis-server did not start")
        finally(function() os.execute("kill " .. pid .. " 2>/dev/null") end)
        assert(helpers.wait_for(function()
            return helpers.sh("redis-cli -s " .. sock .. " PING") == 0
        end, 10), "redis-server did not answer")
        return "unix:" .. sock
    end

    it("reads a real redis-server's replies: nested, null, errors, integers", function()
        local addr = start_redis()
        if not addr then return pending("redis-server is not installed") end
        local srv = helpers.start_server{ script = CLIENT }
        local big = string.rep("x", 300000)
        local lines = ask(srv, addr, table.concat({
            "PING", "SET k v", "GET k", "GET nope", "INCR n", "INCRBY n -5",
            "RPUSH l a b\\sc", "LRANGE l 0 -1", "LRANGE none 0 -1", "FOO",
            "MULTI", "GET k", "LRANGE l 0 0", "EXEC", "BLPOP nolist 0.01",
            "SET big " .. big, "STRLEN big",
        }, " | "), 17)
        assert.same({ '"PONG"', '"OK"', '"v"', "null", "integer:1",
                      "integer:-4", "integer:2", '["a","b c"]', "[]" }, {
                      table.unpack(lines, 1, 9) })
        assert.truthy(lines[10]:find('^err%("ERR unknown command'))
        assert.same({ '"OK"', '"QUEUED"', '"QUEUED"', '["v",["a"]]', "null",
                      '"OK"', "integer:300000" }, { table.unpack(lines, 11) })
    end)

    it("reads replies split into 1-byte writes, nested 128 deep", function()
        local srv = helpers.start_server{ script = CLIENT }
        local server = assert(socket.bind("127.0.0.1", 0))
        server:settimeout(TIMEOUT)
        local _, port = server:getsockname()
        local c = connect(srv.port)
        assert(c:send(port .. " A | B | C | D\n"))
        local up = assert(server:accept())
        server:close()
        up:setoption("tcp-nodelay", true)
        local deep = string.rep("*1\r\n", 128) .. ":7\r\n"
        local replies = "*3\r\n$2\r\nab\r\n*-1\r\n*2\r\n-ERR x\r\n$-1\r\n" ..
                        "+a\rb\r\n" .. deep .. ":-12\r\n"
        for i = 1, #replies do
            assert(up:send(replies:sub(i, i)))
            if i % 7 == 0 then socket.sleep(0.001) end
        end
        local want = { '["ab",null,[err("ERR x"),null]]', '"a\\13b"',
                       string.rep("[", 128) .. "integer:7" ..
                       string.rep("]", 128), "integer:-12" }
        for i = 1, 4 do
            local line, err = c:receive("*l")
            assert.equal(want[i], line, err)
        end
        up:close()
        c:close()
    end)

    it("returns nil, 'protocol error' for a reply nested 129 deep", function()
        local srv = helpers.start_server{ script = CLIENT }
        local server = assert(socket.bind("127.0.0.1", 0))
        server:settimeout(TIMEOUT)
        local _, port = server:getsockname()
        local c = connect(srv.port)
        assert(c:send(port .. " A\n"))
        local up = assert(server:accept())
        server:close()
        assert(up:send(string.rep("*1\r\n", 129) .. ":7\r\n"))
        assert.equal("END protocol error", (c:receive("*l")))
        -- The server was not answered: a reply has no reply.
        up:settimeout(TIMEOUT)
        local rest = up:receive("*a")
        assert.equal(helpers.resp("A"), rest)
        up:close()
        c:close()
    end)
end)

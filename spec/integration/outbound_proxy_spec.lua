-- luaserv.connect's proxy_protocol option (issue 12): the conn comes with
-- a PROXY header (v1 or v2) queued before anything the task writes, so a
-- luaserv proxy passes its client on to the next hop. The upstream here
-- is a plain socket in the spec, which reads the raw header bytes and
-- checks them to the byte.
local helpers = require "helpers"
local socket = require "socket"

local TIMEOUT = helpers.sanitize and 20 or 10
local SIG = "\r\n\r\n\0\r\nQUIT\n"

-- One command line per connection: PORT|PATH VERSION SRC DST [BIG]
-- ("-" for an absent SRC or DST). The task connects to 127.0.0.1:PORT (a
-- unix socket for a path) with the option, writes "hello\n" and BIG more
-- bytes, reads one line and answers "OK <its local address> <the line>",
-- "ERR <err>" from connect, or "RAISE <error>". "stats" answers the
-- outbound conns still open.
local DRIVER = [==[
local luaserv = require "luaserv"
local handler = {}

local function opt(v)
    if v ~= "-" then return v end
end

local function run(w)
    local host, port = "127.0.0.1", tonumber(w[1])
    if not port then host = "unix:" .. w[1] end
    local pp = tonumber(w[2]) or w[2]
    if pp == "false" then pp = false end
    local ok, up, err = pcall(luaserv.connect, host, port, {
        timeout = 5, proxy_protocol = pp,
        src = opt(w[3]), dst = opt(w[4]) })
    if not ok then return "RAISE " .. tostring(up) end
    if not up then return "ERR " .. err end
    up:write("hello\n")
    if w[5] then up:write(string.rep("x", tonumber(w[5]))) end
    local reply, rerr = up:readline()
    local la = up.local_addr
    up:close()
    return ("OK %s %s"):format(la, tostring(reply or rerr))
end

function handler.handle(conn)
    local line = conn:readline()
    if not line then return end
    if line == "stats" then
        local s = luaserv.stats()
        conn:write(("outbound=%d tasks=%d"):format(s.outbound_active,
                                                  s.tasks - 1), "\n")
        return
    end
    local w = {}
    for x in line:gmatch("%S+") do w[#w + 1] = x end
    conn:write(run(w), "\n")
end

return handler
]==]

-- A listening socket for the upstream, closed when the test ends.
local function upstream()
    local l = assert(socket.tcp())
    assert(l:bind("127.0.0.1", 0))
    assert(l:listen(8))
    l:settimeout(TIMEOUT)
    helpers.close_at_end({ l })
    local _, port = l:getsockname()
    return l, tonumber(port)
end

-- Sends the driver one command; returns the client socket to read its
-- answer from once the upstream has played its part.
local function ask(driver, cmd)
    local c = helpers.connect(driver.port, TIMEOUT)
    helpers.close_at_end({ c })
    assert(c:send(cmd .. "\n"))
    return c
end

-- Reads a PROXY header from s, v1 (to its CRLF) or v2 (16 bytes and the
-- length they declare); returns its bytes.
local function read_header(s)
    local first = assert(s:receive(1))
    if first == "P" then
        local h = first
        while h:sub(-2) ~= "\r\n" and #h < 200 do
            h = h .. assert(s:receive(1))
        end
        return h
    end
    local head = first .. assert(s:receive(15))
    local len = string.unpack(">I2", head, 15)
    return head .. (len > 0 and assert(s:receive(len)) or "")
end

-- Plays the upstream for one command: accepts, reads the header and
-- "hello\n" (and big more bytes), answers "ack". Returns the header and
-- the driver's answer.
local function exchange(driver, l, cmd, big)
    local c = ask(driver, cmd)
    local s = assert(l:accept())
    helpers.close_at_end({ s })
    s:settimeout(TIMEOUT)
    local h = read_header(s)
    assert.equal("hello\n", s:receive(6))
    if big then
        local body = assert(s:receive(big))
        assert.equal(string.rep("x", big), body)
    end
    assert(s:send("ack\n"))
    local answer = c:receive("*l")
    s:close()
    return h, answer
end

local function ip4(a, b, c, d) return string.char(a, b, c, d) end

describe("luaserv.connect with proxy_protocol", function()
    it("sends a v1 header naming its own ends by default", function()
        local driver = helpers.serve{ source = DRIVER }
        local l, port = upstream()
        local h, answer = exchange(driver, l, port .. " 1 - -")
        local lport = assert(answer:match("^OK 127%.0%.0%.1:(%d+) ack$"),
                             answer)
        assert.equal(("PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n"):format(
                     lport, port), h)
    end)

    it("sends a v2 header naming its own ends by default", function()
        local driver = helpers.serve{ source = DRIVER }
        local l, port = upstream()
        local h, answer = exchange(driver, l, port .. " 2 - -")
        local lport = tonumber(answer:match("^OK 127%.0%.0%.1:(%d+) ack$"))
        assert.truthy(lport, answer)
        assert.equal(SIG .. "\x21\x11" .. string.pack(">I2", 12) ..
                     ip4(127, 0, 0, 1) .. ip4(127, 0, 0, 1) ..
                     string.pack(">I2I2", lport, port), h)
    end)

    it("passes on the src and dst it is given, IPv4 and IPv6", function()
        local driver = helpers.serve{ source = DRIVER }
        local l, port = upstream()
        local h = exchange(driver, l,
                           port .. " 1 192.0.2.1:1234 198.51.100.2:80")
        assert.equal("PROXY TCP4 192.0.2.1 198.51.100.2 1234 80\r\n", h)
        h = exchange(driver, l, port .. " 1 [2001:db8::1]:0 [::1]:65535")
        assert.equal("PROXY TCP6 2001:db8::1 ::1 0 65535\r\n", h)
        h = exchange(driver, l, port .. " 2 192.0.2.1:1234 198.51.100.2:80")
        assert.equal(SIG .. "\x21\x11\0\12" .. ip4(192, 0, 2, 1) ..
                     ip4(198, 51, 100, 2) .. string.pack(">I2I2", 1234, 80),
                     h)
        h = exchange(driver, l, port .. " 2 [2001:db8::1]:7 [2001:db8::2]:8")
        assert.equal(SIG .. "\x21\x21\0\36" ..
                     "\x20\x01\x0d\xb8" .. ("\0"):rep(11) .. "\1" ..
                     "\x20\x01\x0d\xb8" .. ("\0"):rep(11) .. "\2" ..
                     string.pack(">I2I2", 7, 8), h)
        -- only src given: dst is the upstream's address
        h = exchange(driver, l, port .. " 1 203.0.113.9:5555 -")
        assert.equal(("PROXY TCP4 203.0.113.9 127.0.0.1 5555 %d\r\n"):format(
                     port), h)
    end)

    it("queues the header before a 300 KB write that follows it", function()
        local driver = helpers.serve{ source = DRIVER }
        local l, port = upstream()
        local h, answer = exchange(driver, l, port .. " 2 - - 300000",
                                   300000)
        assert.equal(SIG, h:sub(1, 12))
        assert.equal(28, #h)
        assert.truthy(answer:find(" ack$"), answer)
    end)

    it("returns nil, err for a src or dst that cannot go in a header",
       function()
        local driver = helpers.serve{ source = DRIVER }
        local l, port = upstream()
        local cases = {
            { "1 example.com:80 -", "src is not a numeric ip:port" },
            { "2 - 1.2.3.4", "dst is not a numeric ip:port" },
            { "2 1.2.3.4:99999 -", "src is not a numeric ip:port" },
            { "1 1.2.3.4:1 [::1]:2", "src and dst are of different families" },
        }
        for _, case in ipairs(cases) do
            local c = ask(driver, port .. " " .. case[1])
            assert.equal("ERR proxy_protocol: " .. case[2], c:receive("*l"))
        end
        -- a src whose family differs from the upstream's address (the
        -- default dst): known once connected; the conn closes unsent
        local c = ask(driver, port .. " 2 [::1]:1 -")
        local s = assert(l:accept())
        helpers.close_at_end({ s })
        s:settimeout(TIMEOUT)
        assert.equal("ERR proxy_protocol: src and dst are of different " ..
                     "families", c:receive("*l"))
        local data, err, partial = s:receive(1)
        assert.is_nil(data)
        assert.equal("closed", err)
        assert.equal("", partial)
        assert.equal("outbound=0 tasks=0", ask(driver, "stats"):receive("*l"))
    end)

    it("takes proxy_protocol = false as none, and 2.0 as 2", function()
        local driver = helpers.serve{ source = DRIVER }
        local l, port = upstream()
        local c = ask(driver, port .. " false - -")
        local s = assert(l:accept())
        helpers.close_at_end({ s })
        s:settimeout(TIMEOUT)
        assert.equal("hello\n", s:receive(6))
        assert(s:send("ack\n"))
        assert.truthy(c:receive("*l"):find(" ack$"))
        local h = exchange(driver, l, port .. " 2.0 - -")
        assert.equal("\r\n\r\n\0\r\nQUIT\n\x21", h:sub(1, 13))
    end)

    it("raises for a proxy_protocol other than 1 or 2", function()
        local driver = helpers.serve{ source = DRIVER }
        local _, port = upstream()
        for _, v in ipairs({ "3", "0", "true", "1.5" }) do
            local answer = ask(driver, port .. " " .. v .. " - -"):receive("*l")
            assert.truthy(answer:find("^RAISE .*proxy_protocol must be 1 or 2"),
                          answer)
        end
    end)

    it("names a unix socket's ends in v2 and says UNKNOWN in v1", function()
        local unix = require "socket.unix"
        local path = helpers.tmpname(".sock")
        local l = assert(unix.stream())
        assert(l:bind(path))
        assert(l:listen(4))
        l:settimeout(TIMEOUT)
        helpers.close_at_end({ l })
        helpers.defer(function() os.remove(path) end)
        local driver = helpers.serve{ source = DRIVER }
        local h = exchange(driver, l, path .. " 1 - -")
        assert.equal("PROXY UNKNOWN\r\n", h)
        h = exchange(driver, l, path .. " 2 - -")
        assert.equal(SIG .. "\x21\x31" .. string.pack(">I2", 216), h:sub(1, 16))
        -- src is the client's unnamed end, dst the listener's path
        assert.equal(("\0"):rep(108), h:sub(17, 124))
        assert.equal(path, h:sub(125, 124 + #path))
        assert.equal(("\0"):rep(108 - #path), h:sub(125 + #path, 232))
    end)

    it("runs the docs' pp_proxy.lua: the next hop sees the client", function()
        local doc = helpers.read_file("docs/handler-api.md")
        local src = assert(doc:match("```lua\n(%-%- pp_proxy%.lua.-)```"))
        local l, port = upstream()
        local n
        src, n = src:gsub("7001", tostring(port))
        assert.equal(2, n)      -- the comment and the code
        local proxy = helpers.serve{ source = src }
        local c = helpers.connect(proxy.port, TIMEOUT)
        helpers.close_at_end({ c })
        local cip, cport = c:getsockname()
        assert(c:send("hi\n"))
        local s = assert(l:accept())
        helpers.close_at_end({ s })
        s:settimeout(TIMEOUT)
        assert.equal(SIG .. "\x21\x11\0\12" .. ip4(127, 0, 0, 1) ..
                     ip4(127, 0, 0, 1) ..
                     string.pack(">I2I2", tonumber(cport), proxy.port),
                     read_header(s))
        assert.equal("127.0.0.1", cip)
        assert.equal("hi\n", s:receive(3))
        assert(s:send("yo\n"))
        assert.equal("yo", c:receive("*l"))
        c:close()
        local data, err = s:receive(1)
        assert.is_nil(data)
        assert.equal("closed", err)
    end)

    -- HAProxy reads the header (accept-proxy on a unix socket, so no port
    -- is guessed) and passes the client it names on with its own v1
    -- header (send-proxy) to the spec's socket.
    it("is accepted by HAProxy, which passes the client on", function()
        if os.execute("command -v haproxy >/dev/null 2>&1") ~= true then
            pending("haproxy is not installed: apt-get install haproxy")
            return
        end
        local dir = helpers.tmpname(".hap")
        assert(os.execute("mkdir -p " .. helpers.shell_quote(dir)))
        helpers.defer(function()
            os.execute("rm -rf " .. helpers.shell_quote(dir))
        end)
        local l, port = upstream()
        local sock = dir .. "/front.sock"
        helpers.write_file(dir .. "/h.cfg", table.concat({
            "defaults", "  mode tcp", "  timeout connect 2s",
            "  timeout client 10s", "  timeout server 10s",
            "frontend f", "  bind " .. sock .. " accept-proxy",
            "  default_backend b",
            "backend b", "  server s 127.0.0.1:" .. port .. " send-proxy", ""
        }, "\n"))
        os.execute("haproxy -db -f " .. helpers.shell_quote(dir .. "/h.cfg") ..
                   " >" .. helpers.shell_quote(dir .. "/log") .. " 2>&1 & " ..
                   "echo $! >" .. helpers.shell_quote(dir .. "/pid"))
        local pid = helpers.wait_for(function()
            local p = helpers.read_file(dir .. "/pid")
            return p and p:match("%d+")
        end, 5)
        assert.truthy(pid, "haproxy did not start")
        helpers.defer(function() os.execute("kill -KILL " .. pid) end)
        assert.truthy(helpers.wait_for(function()
            return os.execute("test -S " .. helpers.shell_quote(sock)) == true
        end, 10), helpers.read_file(dir .. "/log"))
        local driver = helpers.serve{ source = DRIVER }
        for _, v in ipairs({ "1", "2" }) do
            local h = exchange(driver, l, sock .. " " .. v ..
                               " 192.0.2.1:1234 198.51.100.2:80")
            assert.equal("PROXY TCP4 192.0.2.1 198.51.100.2 1234 80\r\n", h)
            h = exchange(driver, l, sock .. " " .. v ..
                         " [2001:db8::1]:5 [2001:db8::2]:6")
            assert.equal("PROXY TCP6 2001:db8::1 2001:db8::2 5 6\r\n", h)
        end
    end)
end)

-- The PROXY protocol on a listener (--proxy-protocol, listen{
-- proxy_protocol = true }): v1 and v2 headers read before the handler
-- sees the connection, what conn.peer, conn.local and conn.proxy say,
-- bad headers, stalls, and the stage's log lines and metrics.
local helpers = require "helpers"
local op = require "fixtures.operations_util"
local unix = require "socket.unix"

local FIXTURE = "spec/fixtures/proxy_whoami.lua"
local TIMEOUT = helpers.sanitize and 15 or 5
local SLOW = op.SLOW
local SIG = "\r\n\r\n\0\r\nQUIT\n"

local V1 = "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"

-- --- building headers ----------------------------------------------------

local function ip4(s)
    local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    return string.char(tonumber(a), tonumber(b), tonumber(c), tonumber(d))
end

local IP6_DOC = "\32\1\13\184" .. ("\0"):rep(11) .. "\1"   -- 2001:db8::1
local IP6_LO = ("\0"):rep(15) .. "\1"                          -- ::1

local function tlv(t, v)
    return string.char(t) .. string.pack(">I2", #v) .. v
end

-- A v2 header: cmd 0 (LOCAL) or 1 (PROXY), fam the family/transport byte,
-- body the address block and TLVs.
local function v2(cmd, fam, body)
    return SIG .. string.char(0x20 + cmd, fam) .. string.pack(">I2", #body) ..
           body
end

local function inet4(src, sport, dst, dport)
    return ip4(src) .. ip4(dst) .. string.pack(">I2I2", sport, dport)
end

local function unix_path(p) return p .. ("\0"):rep(108 - #p) end

local SSL = tlv(0x20, "\1" .. string.pack(">I4", 0) ..
                      tlv(0x21, "TLSv1.3") .. tlv(0x22, "client.example") ..
                      tlv(0x23, "TLS_AES_128_GCM_SHA256"))
local TLVS = tlv(0x01, "h2") .. tlv(0x02, "example.com") ..
             tlv(0x05, "req-42") .. SSL
local V2_TLVS = v2(1, 0x11, inet4("192.0.2.7", 40000, "198.51.100.9", 8443) ..
                            TLVS)

-- --- talking -------------------------------------------------------------

local function fields(line)
    local t = {}
    for k, v in line:gmatch("([%w_]+)=(%S*)") do t[k] = v end
    return t
end

-- A client on port (TCP) or path (unix) closed when the test ends.
local function client(port)
    local c
    if type(port) == "string" then
        c = assert(unix.stream())
        c:settimeout(TIMEOUT)
        assert(c:connect(port))
    else
        c = helpers.connect(port, TIMEOUT)
    end
    helpers.close_at_end({ c })
    return c
end

-- Sends data on a new connection and returns the first reply's fields.
local function ask(port, data)
    local c = client(port)
    assert(c:send(data))
    local line, err = c:receive("*l")
    c:close()
    assert(line, err)
    return fields(line)
end

-- Sends data on a new connection and reads until the server closes it:
-- returns what came and the seconds it took.
local function refused(port, data)
    local c = client(port)
    local t0 = helpers.now()
    if data ~= "" then assert(c:send(data)) end
    local got, err = helpers.read_to_close(c)
    assert.equal("closed", err)
    return got, helpers.now() - t0
end

local function serve(args, listen)
    return op.start{ script = FIXTURE, listen = listen,
                     args = args or { "--proxy-protocol" },
                     announce = args and args.announce }
end

local function metrics(port)
    local code, _, body = op.http_get(port, "/metrics")
    assert.equal(200, code)
    return body
end

-- The server's log, once pattern (plain) shows up in it.
local function log_with(srv, text)
    helpers.wait_until(function() return srv:log():find(text, 1, true) end,
                       10 * SLOW, text)
    return srv:log()
end

-- --- the specs -----------------------------------------------------------

describe("PROXY protocol v1", function()
    it("gives conn.peer and conn.local from a TCP4 header", function()
        local srv = serve()
        local r = ask(srv.port, V1 .. "hello\n")
        assert.equal("192.0.2.1:56324", r.peer)
        assert.equal("192.0.2.1", r.ip)
        assert.equal("56324", r.port)
        assert.equal("198.51.100.2:443", r["local"])
        assert.equal("198.51.100.2:443", r.local_addr)
        assert.equal("1", r.v)
        assert.equal("proxy", r.cmd)
        assert.equal("192.0.2.1:56324", r.src)
        assert.equal("198.51.100.2:443", r.dst)
        assert.matches("^127%.0%.0%.1:%d+$", r.sp)
        assert.equal("true", r.same)
        assert.equal("true", r.acc)           -- on_accept saw the client
        assert.equal("hello", r.head)
    end)

    it("reads a TCP6 header", function()
        local srv = serve()
        local r = ask(srv.port, "PROXY TCP6 2001:db8::1 ::1 5000 80\r\nx\n")
        assert.equal("[2001:db8::1]:5000", r.peer)
        assert.equal("2001:db8::1", r.ip)
        assert.equal("[::1]:80", r["local"])
        assert.equal("[2001:db8::1]:5000", r.src)
    end)

    it("leaves the socket's peer for UNKNOWN", function()
        local srv = serve()
        local r = ask(srv.port, "PROXY UNKNOWN\r\nx\n")
        assert.matches("^127%.0%.0%.1:%d+$", r.peer)
        assert.equal(r.sp, r.peer)
        assert.equal("unknown", r.cmd)
        assert.equal("nil", r.src)
        assert.matches("^127%.0%.0%.1:" .. srv.port .. "$", r["local"])
    end)

    it("consumes the header only, at every split point", function()
        local srv = serve()
        for i = 1, #V1 - 1 do
            local c = client(srv.port)
            c:setoption("tcp-nodelay", true)
            assert(c:send(V1:sub(1, i)))
            helpers.sleep(0.005)
            assert(c:send(V1:sub(i + 1) .. "split" .. i .. "\n"))
            local r = fields(assert(c:receive("*l")))
            c:close()
            assert.equal("192.0.2.1:56324", r.peer)
            assert.equal("split" .. i, r.head:sub(1, #("split" .. i)))
        end
    end)

    it("takes a header sent a byte at a time", function()
        local srv = serve()
        local c = client(srv.port)
        c:setoption("tcp-nodelay", true)
        for i = 1, #V1 do
            assert(c:send(V1:sub(i, i)))
            helpers.sleep(0.002)
        end
        assert(c:send("after\n"))
        local r = fields(assert(c:receive("*l")))
        assert.equal("192.0.2.1:56324", r.peer)
        assert.equal("after", r.head)
    end)
end)

describe("PROXY protocol v2", function()
    it("decodes a PROXY INET header with its TLVs", function()
        local srv = serve()
        local r = ask(srv.port, V2_TLVS .. "hello\n")
        assert.equal("192.0.2.7:40000", r.peer)
        assert.equal("198.51.100.9:8443", r["local"])
        assert.equal("2", r.v)
        assert.equal("proxy", r.cmd)
        assert.equal("h2", r.alpn)
        assert.equal("h2", r.t1)
        assert.equal("example.com", r.authority)
        assert.equal("req-42", r.uid)
        assert.equal("1", r.ssl_client)
        assert.equal("0", r.ssl_verify)
        assert.equal("TLSv1.3", r.ssl_version)
        assert.equal("client.example", r.ssl_cn)
        assert.equal("TLS_AES_128_GCM_SHA256", r.ssl_cipher)
        assert.equal("true", r.acc)
        assert.equal("hello", r.head)
    end)

    it("reads an INET6 header", function()
        local srv = serve()
        local body = IP6_DOC .. IP6_LO .. string.pack(">I2I2", 6000, 443)
        local r = ask(srv.port, v2(1, 0x21, body) .. "x\n")
        assert.equal("[2001:db8::1]:6000", r.peer)
        assert.equal("[::1]:443", r["local"])
        assert.equal("alpn=nil", "alpn=" .. r.alpn)
    end)

    it("reads a UNIX header: the peer is the client's path", function()
        local srv = serve()
        local body = unix_path("/run/client.sock") .. unix_path("/run/srv.sock")
        local r = ask(srv.port, v2(1, 0x31, body) .. "x\n")
        assert.equal("/run/client.sock", r.peer)
        assert.equal("/run/srv.sock", r["local"])
        assert.equal("nil", r.port)
    end)

    it("leaves the socket's peer for LOCAL (a balancer's check)", function()
        local srv = serve()
        local r = ask(srv.port, v2(0, 0x00, "") .. "x\n")
        assert.equal(r.sp, r.peer)
        assert.matches("^127%.0%.0%.1:%d+$", r.peer)
        assert.equal("local", r.cmd)
        assert.equal("nil", r.src)
    end)

    it("consumes the header only, at every split point", function()
        local srv = serve()
        for i = 1, #V2_TLVS - 1, (#V2_TLVS > 60 and 1 or 1) do
            local c = client(srv.port)
            c:setoption("tcp-nodelay", true)
            assert(c:send(V2_TLVS:sub(1, i)))
            helpers.sleep(0.003)
            assert(c:send(V2_TLVS:sub(i + 1) .. "s" .. i .. "\n"))
            local r = fields(assert(c:receive("*l")))
            c:close()
            assert.equal("192.0.2.7:40000", r.peer)
            assert.equal("req-42", r.uid)
            assert.equal("s" .. i, r.head)
        end
    end)

    it("reads a 60 KB header (TLVs past the stage's own buffer)", function()
        local srv = serve()
        local big = v2(1, 0x11, inet4("192.0.2.8", 1, "198.51.100.1", 2) ..
                                tlv(0x04, ("n"):rep(60000)) ..
                                tlv(0x05, "big-one"))
        local r = ask(srv.port, big .. "x\n")
        assert.equal("192.0.2.8:1", r.peer)
        assert.equal("big-one", r.uid)
    end)
end)

describe("the PROXY stage", function()
    it("hands a 300 KB line right after the header to the handler", function()
        local srv = serve()
        local line = ("z"):rep(300 * 1000)
        for _, hdr in ipairs({ V1, V2_TLVS }) do
            local r = ask(srv.port, hdr .. line .. "\nnext\n")
            assert.equal(tostring(#line), r.len)
        end
    end)

    it("answers pipelined lines sent with the header", function()
        local srv = serve()
        local c = client(srv.port)
        local lines = {}
        for i = 1, 50 do lines[i] = "l" .. i .. "\n" end
        assert(c:send(V1 .. table.concat(lines)))
        for i = 1, 50 do
            local r = fields(assert(c:receive("*l")))
            assert.equal("l" .. i, r.head)
            assert.equal("192.0.2.1:56324", r.peer)
        end
    end)

    it("closes a connection with a bad header, with one log line", function()
        local srv = serve({ "--proxy-protocol", "--metrics", "127.0.0.1:0",
                            announce = 2 })
        local bad = {
            "PROXY TCP4 192.0.2.1 198.51.100.2 56324 99999\r\nx\n",
            "PROXY TCP4 ::1 198.51.100.2 1 2\r\nx\n",
            "PROXY TCP5 192.0.2.1 198.51.100.2 1 2\r\nx\n",
            SIG .. "\x31\x11\0\12" .. inet4("1.2.3.4", 1, "5.6.7.8", 2),
            SIG .. "\x2f\x11\0\12" .. inet4("1.2.3.4", 1, "5.6.7.8", 2),
        }
        for _, data in ipairs(bad) do
            local got, took = refused(srv.port, data)
            assert.equal("", got)
            assert.is_true(took < 3 * SLOW, "closed after " .. took)
        end
        local log = log_with(srv, "PROXY header")
        assert.matches("warn tcp://127%.0%.0%.1:%d+ %(peer 127%.0%.0%.1:%d+%): "
                       .. "PROXY header: .* %(bad%); closed", log)
        local mport = srv.listening[2].port
        local body = metrics(mport)
        local lbl = 'listener="tcp://127.0.0.1:' .. srv.port .. '"'
        assert.equal(#bad, op.sample(body, "luaserv_proxy_header_errors_total",
                                     lbl .. ',reason="bad"'))
        -- the server still serves
        assert.equal("192.0.2.1:56324", ask(srv.port, V1 .. "x\n").peer)
        body = metrics(mport)
        assert.equal(1, op.sample(body, "luaserv_proxy_headers_total",
                                  lbl .. ',version="1"'))
    end)

    it("refuses a plaintext client at once, without the timeout", function()
        local srv = serve()
        for _, data in ipairs({ "GET / HTTP/1.0\r\n\r\n", "hello\n", "\r\nx" }) do
            local got, took = refused(srv.port, data)
            assert.equal("", got)
            assert.is_true(took < 2 * SLOW, "closed after " .. took)
        end
        assert.matches("PROXY header: .* %(bad%); closed", srv:log())
    end)

    it("closes a header over its bounds as too long", function()
        local srv = serve({ "--proxy-protocol", "--metrics", "127.0.0.1:0",
                            announce = 2 })
        local long = "PROXY UNKNOWN " .. ("x"):rep(120) .. "\r\n"
        assert.equal("", (refused(srv.port, long)))
        assert.matches("v1: header over 107 bytes %(too_long%); closed",
                       log_with(srv, "too_long"))
        -- v2: an INET address block that does not fit the declared length
        local short = SIG .. "\x21\x11\0\4" .. inet4("1.2.3.4", 1, "5.6.7.8", 2)
        assert.equal("", (refused(srv.port, short)))
        local lbl = 'listener="tcp://127.0.0.1:' .. srv.port .. '"'
        helpers.wait_until(function()
            return op.sample(metrics(srv.listening[2].port),
                             "luaserv_proxy_header_errors_total",
                             lbl .. ',reason="too_long"') == 2
        end, 10 * SLOW, "2 too_long counted")
    end)

    it("closes a stalled header after --proxy-timeout", function()
        local srv = serve({ "--proxy-protocol", "--proxy-timeout", "0.3" })
        for _, data in ipairs({ "PROXY TCP4 192.0", SIG:sub(1, 5), "" }) do
            local got, took = refused(srv.port, data)
            assert.equal("", got)
            assert.is_true(took >= 0.25, "closed after " .. took)
            assert.is_true(took < 3 * SLOW, "closed after " .. took)
        end
        assert.matches("none complete within 0%.3 s %(%d+ bytes came%) "
                       .. "%(timeout%)", log_with(srv, "timeout"))
    end)

    it("logs a close mid-header as eof, and an empty one at debug", function()
        local srv = serve({ "--proxy-protocol", "--metrics", "127.0.0.1:0",
                            announce = 2 })
        local c = client(srv.port)
        assert(c:send("PROXY TCP4 192.0.2.1 "))
        c:close()
        for _ = 1, 3 do client(srv.port):close() end   -- a TCP check
        local log = log_with(srv, "(eof)")
        assert.matches("PROXY header: closed mid%-header %(eof%)", log)
        local lbl = 'listener="tcp://127.0.0.1:' .. srv.port .. '"'
        helpers.wait_until(function()
            return op.sample(metrics(srv.listening[2].port),
                             "luaserv_proxy_empty_total", lbl) == 3
        end, 10 * SLOW, "3 empty connections counted")
        assert.is_nil(srv:log():find("health check", 1, true))
    end)

    it("serves others while one connection stalls", function()
        local srv = serve({ "--proxy-protocol", "--proxy-timeout", "2" })
        local stalled = client(srv.port)
        assert(stalled:send("PROXY TCP4 19"))
        local t0 = helpers.now()
        for i = 1, 20 do
            local r = ask(srv.port, "PROXY TCP4 192.0.2.1 198.51.100.2 " ..
                                    (1000 + i) .. " 443\r\nx\n")
            assert.equal("192.0.2.1:" .. (1000 + i), r.peer)
        end
        assert.is_true(helpers.now() - t0 < 2, "others waited on the stall")
        local _, err = stalled:receive("*l")
        assert.equal("closed", err)
    end)

    it("lets on_accept refuse the header's client", function()
        local srv = serve()
        local got = refused(srv.port, "PROXY TCP4 203.0.113.9 198.51.100.2 "
                                      .. "1 2\r\nx\n")
        assert.equal("", got)
        assert.equal("192.0.2.1:56324", ask(srv.port, V1 .. "x\n").peer)
    end)

    it("shows the client in the access log", function()
        local srv = serve({ "--proxy-protocol", "--access-log" })
        ask(srv.port, V1 .. "x\n")
        assert.matches("192%.0%.2%.1:56324", log_with(srv, "192.0.2.1:56324"))
    end)

    it("works on a unix stream listener", function()
        local path = op.sock_path()
        serve(nil, { "unix:" .. path })
        local r = ask(path, V2_TLVS .. "x\n")
        assert.equal("192.0.2.7:40000", r.peer)
        assert.equal("unix", r.sp)
        r = ask(path, "PROXY UNKNOWN\r\nx\n")
        assert.equal("unix", r.peer)
    end)

    it("works under --workers 2, each worker reading its own", function()
        local srv = serve({ "--proxy-protocol", "--workers", "2" })
        for i = 1, 20 do
            local r = ask(srv.port, "PROXY TCP4 192.0.2.1 198.51.100.2 " ..
                                    (2000 + i) .. " 443\r\nx\n")
            assert.equal("192.0.2.1:" .. (2000 + i), r.peer)
            assert.equal("true", r.acc)
        end
    end)

    it("does not hold a graceful stop", function()
        local srv = serve()
        local c = client(srv.port)
        assert(c:send("PROXY TCP4 1"))
        helpers.sleep(0.1)
        local t0 = helpers.now()
        assert.equal(0, srv:stop())
        assert.is_true(helpers.now() - t0 < 3 * SLOW)
    end)

    it("finishes, at the stop, a header that already arrived", function()
        local srv = serve()
        local c = client(srv.port)
        assert(c:send(V1 .. "x\n"))
        local r = fields(assert(c:receive("*l")))
        assert.equal("192.0.2.1:56324", r.peer)
        assert.equal(0, srv:stop())
    end)
end)

describe("PROXY protocol in the stream style", function()
    it("gives handle() the header's client and the bytes after it", function()
        local srv = op.start{ source = [[
            return { handle = function(conn)
                local line = conn:readline()
                local p = conn.proxy
                conn:write(conn.peer, " ", conn["local"], " ", p.version, " ",
                           p.tlvs.authority or "-", " ", line, "\n")
            end }
        ]], args = { "--proxy-protocol" } }
        local c = client(srv.port)
        assert(c:send(V2_TLVS .. "first line\n"))
        assert.equal("192.0.2.7:40000 198.51.100.9:8443 2 example.com "
                     .. "first line", c:receive("*l"))
    end)
end)

describe("a luaserv proxy in front of a luaserv PROXY listener", function()
    it("passes the client on through luaserv.connect", function()
        local back = serve()
        for _, version in ipairs({ 1, 2 }) do
            local front = op.start{ source = ([[
                local luaserv = require "luaserv"
                return { handle = function(conn)
                    local up = assert(luaserv.connect("127.0.0.1", %d, {
                        proxy_protocol = %d, src = conn.peer,
                        dst = conn.local_addr }))
                    up:write(conn:readline(), "\n")
                    conn:write(up:readline(), "\n")
                end }
            ]]):format(back.port, version) }
            local c = client(front.port)
            assert(c:send("through\n"))
            local r = fields(assert(c:receive("*l")))
            local _, cport = c:getsockname()
            assert.equal("127.0.0.1:" .. cport, r.peer)   -- the spec client
            assert.equal("127.0.0.1:" .. front.port, r["local"])
            assert.equal(tostring(version), r.v)
            assert.equal("through", r.head)
            front:stop()
        end
    end)
end)

describe("turning the PROXY protocol on", function()
    it("leaves conn.proxy nil and the bytes as data without it", function()
        local srv = op.start{ script = FIXTURE }
        local r = ask(srv.port, "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")
        assert.equal("nil", r.v)
        assert.equal("PROXY", r.head)
        assert.matches("^127%.0%.0%.1:%d+$", r.peer)
    end)

    it("reads listen { proxy_protocol = true } per listener", function()
        local cfg = helpers.write_file(helpers.tmpname(".lua"), ([[
            handler = %q
            listen { "tcp://127.0.0.1:0", proxy_protocol = true,
                     proxy_timeout = 0.5 }
            listen { "tcp://127.0.0.1:0" }
        ]]):format(FIXTURE))
        local srv = op.start{ listen = {}, args = { "-c", cfg }, announce = 2 }
        local p1, p2 = srv.listening[1].port, srv.listening[2].port
        assert.equal("192.0.2.1:56324", ask(p1, V1 .. "x\n").peer)
        assert.equal("PROXY", ask(p2, V1).head)
        local _, took = refused(p1, "PROXY")
        assert.is_true(took < 3 * SLOW)
    end)

    it("refuses proxy_protocol on a datagram listener", function()
        local cfg = helpers.write_file(helpers.tmpname(".lua"), ([[
            handler = %q
            listen { "udp://127.0.0.1:0", proxy_protocol = true }
        ]]):format(FIXTURE))
        local status, out = helpers.run(helpers.luaserv, "-c " ..
                                        helpers.shell_quote(cfg))
        assert.equal(2, status)
        assert.matches("proxy_protocol applies to tcp:// and unix: stream "
                       .. "listeners only", out)
    end)

    it("refuses --proxy-protocol with no -l stream listener", function()
        local status, out = helpers.run(helpers.luaserv, "--proxy-protocol "
                                        .. "-l udp://127.0.0.1:0 " .. FIXTURE)
        assert.equal(2, status)
        assert.matches("%-%-proxy%-protocol applies to the tcp and unix "
                       .. "stream listeners given with %-l", out)
    end)

    it("leaves the metrics listener without a header", function()
        local srv = serve({ "--proxy-protocol", "--metrics", "127.0.0.1:0",
                            announce = 2 })
        assert.matches("luaserv_proxy_headers_total",
                       metrics(srv.listening[2].port))
    end)
end)

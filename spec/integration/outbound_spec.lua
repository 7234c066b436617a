-- Outbound connections from tasks: luaserv.connect (numeric and named
-- hosts, refused, timeout, the peers closing or resetting) and
-- luaserv.udp() (setpeername/send/receive, receive timeout, sendto).
-- A driver server takes one command line per connection, runs it in its
-- handle() task and answers one result line; its UDP listener answers
-- "stats" with the core's counters.
local helpers = require "helpers"
local socket = require "socket"

local CTIME = helpers.CTIME
local TIMEOUT = helpers.sanitize and 20 or 10

local DRIVER = [==[
local luaserv = require "luaserv"
local handler = {}
local cmds = {}

-- tcp HOST PORT TEXT [TIMEOUT]: connect, send TEXT and a newline, answer
-- the first line the upstream sends back.
function cmds.tcp(_, host, port, text, timeout)
    local up, err = luaserv.connect(host, tonumber(port),
                                    { timeout = tonumber(timeout) or 5 })
    if not up then return "ERR " .. err end
    local info = up.peer .. " " .. up.listener
    up:write(text, "\n")
    local line, rerr = up:readline()
    up:close()
    if not line then return "READERR " .. rerr .. " " .. info end
    return "OK " .. info .. " " .. line
end

-- drain HOST PORT: connect, send "hi", read until the upstream ends;
-- answer the bytes read and the error that ended it.
function cmds.drain(_, host, port)
    local up, err = luaserv.connect(host, tonumber(port))
    if not up then return "ERR " .. err end
    up:write("hi\n")
    local n = 0
    while true do
        local data, rerr = up:read(1000)
        if not data then
            up:close()
            return ("END %d %s"):format(n, rerr)
        end
        n = n + #data
    end
end

-- hold HOST PORT [TIMEOUT]: the client is expected to hang up while this
-- task waits in connect or in a read; the outcome goes to the log.
function cmds.hold(conn, host, port, timeout)
    local up, err = luaserv.connect(host, tonumber(port),
                                    { timeout = tonumber(timeout) or 5 })
    if up then
        local line, rerr = up:readline()
        err = ("read %s %s"):format(tostring(line), tostring(rerr))
        up:close()
    end
    local ok, werr = conn:write("late\n")
    print(("EV hold: %s; write %s %s"):format(err, tostring(ok and "ok"),
                                              tostring(werr)))
    return nil
end

-- gc HOST PORT: connect, then drop the conn and collect it.
function cmds.gc(_, host, port)
    local up = luaserv.connect(host, tonumber(port))
    if not up then return "ERR connect" end
    local before = luaserv.stats().outbound_active
    up = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    luaserv.sleep(0.05)
    return ("GC %d %d"):format(before, luaserv.stats().outbound_active)
end

-- udp HOST PORT TEXT: setpeername, send, receive.
function cmds.udp(_, host, port, text)
    local u = luaserv.udp()
    local ok, err = u:setpeername(host, tonumber(port))
    if not ok then return "ERR setpeername " .. err end
    ok, err = u:send(text .. "\n")
    if not ok then return "ERR send " .. err end
    local data, ip, rport = u:receive(5)
    u:close()
    if not data then return "ERR receive " .. ip end
    return ("OK %s %s %s"):format(ip, rport, (data:gsub("\n$", "")))
end

-- sendto IP PORT TEXT: one datagram to a numeric address, one reply.
function cmds.sendto(_, ip, port, text)
    local u = luaserv.udp()
    local ok, err = u:sendto(text .. "\n", ip, tonumber(port))
    if not ok then return "ERR sendto " .. err end
    local data, rip, rport = u:receive(5)
    u:close()
    if not data then return "ERR receive " .. rip end
    return ("OK %s %s %s"):format(rip, rport, (data:gsub("\n$", "")))
end

-- silent IP PORT SECONDS: send to a peer that never answers; time the
-- receive timeout.
function cmds.silent(_, ip, port, seconds)
    local u = luaserv.udp()
    assert(u:setpeername(ip, tonumber(port)))
    assert(u:send("anyone?"))
    local t0 = luaserv.now()
    local data, err = u:receive(tonumber(seconds))
    u:close()
    return ("%s %s %.2f"):format(tostring(data), tostring(err),
                                 luaserv.now() - t0)
end

-- fresh SECONDS: receive on a socket that has sent nothing yet.
function cmds.fresh(_, seconds)
    local u = luaserv.udp()
    local t0 = luaserv.now()
    local data, err = u:receive(tonumber(seconds))
    u:close()
    return ("%s %s %.2f"):format(tostring(data), tostring(err),
                                 luaserv.now() - t0)
end

function handler.handle(conn)
    local line = conn:readline()
    if not line then return end
    local words = {}
    for w in line:gmatch("%S+") do words[#words + 1] = w end
    local reply = cmds[words[1]](conn, table.unpack(words, 2))
    if reply then conn:write(reply, "\n") end
end

function handler.on_message(_, msg)
    if msg == "stats" then
        local s = luaserv.stats()
        return ("tasks=%d active=%d outbound=%d errors=%d"):format(s.tasks,
            s.connections_active, s.outbound_active, s.handler_errors)
    end
end

return handler
]==]

local serve, dead_port = helpers.serve, helpers.dead_port

local function start_driver()
    return serve{ source = DRIVER,
                  listen = { "127.0.0.1:0", "udp://127.0.0.1:0" } }
end

-- The timestamp server on TCP and UDP.
local function start_target()
    return serve{ script = "scripts/handle.lua",
                  listen = { "127.0.0.1:0", "udp://127.0.0.1:0" } }
end

-- Sends one command to the driver; returns its one-line answer.
local function ask(driver, cmd, timeout)
    local c = helpers.connect(driver.port, timeout or TIMEOUT)
    assert(c:send(cmd .. "\n"))
    local reply, err = c:receive("*l")
    c:close()
    return reply or ("(no reply: " .. tostring(err) .. ")")
end

local function stats(srv) return helpers.probe(srv, "stats") end

-- Nothing leaked: no task, no connection, no outbound conn.
local function settled(srv)
    local s
    local ok = helpers.wait_for(function()
        s = stats(srv)
        return s.tasks == 0 and s.active == 0 and s.outbound == 0
    end, TIMEOUT)
    assert.truthy(ok, ("tasks=%d active=%d outbound=%d"):format(s.tasks,
                  s.active, s.outbound))
end

-- A listener whose accept queue is full: further connects get no answer.
-- Returns its port, or nil when this system answers them anyway. The
-- listener and its filler connections are closed when the test ends.
local function full_backlog()
    local l = assert(socket.tcp())
    assert(l:bind("127.0.0.1", 0))
    assert(l:listen(0))
    local _, port = l:getsockname()
    local fillers = {}
    for i = 1, 4 do
        local c = assert(socket.tcp())
        c:settimeout(0.2)
        fillers[i] = c
        local ok, err = c:connect("127.0.0.1", port)
        if not ok and err == "timeout" then
            fillers[#fillers + 1] = l
            helpers.close_at_end(fillers)
            return port
        end
    end
    l:close()
    for _, c in ipairs(fillers) do c:close() end
    return nil
end

-- A bare TCP listener standing in for an upstream, closed when the test
-- ends. Returns it and its port.
local function upstream()
    local l = assert(socket.bind("127.0.0.1", 0))
    helpers.defer(function() l:close() end)
    local _, port = l:getsockname()
    return l, port
end

-- Sends CMD to the driver on a new client connection and accepts the
-- outbound connection it makes to upstream L. Returns the client and the
-- accepted socket.
local function drive(driver, l, cmd)
    local c = helpers.connect(driver.port)
    assert(c:send(cmd .. "\n"))
    l:settimeout(TIMEOUT)
    local s = assert(l:accept())
    s:settimeout(TIMEOUT)
    return c, s
end

-- Waits until the driver logs the outcome of a "hold"; returns the log.
local function held(driver)
    assert.truthy(helpers.wait_for(function()
        return driver:log():find("EV hold", 1, true)
    end, TIMEOUT))
    return driver:log()
end

-- The reply of "silent" or "fresh": a receive timeout after about 0.3 s.
local function assert_timed_out(reply)
    local took = tonumber(reply:match("^nil timeout ([%d.]+)$"))
    assert.truthy(took, reply)
    assert.is_true(took >= 0.25 and took < 3, reply)
end

-- Ends a test: the driver leaked nothing, then every server exits 0.
local function finish(driver, ...)
    settled(driver)
    assert.equal(0, driver:stop())
    for _, srv in ipairs({ ... }) do assert.equal(0, srv:stop()) end
end

describe("luaserv.connect", function()
    it("connects to a numeric address and talks to the server there", function()
        local target, driver = start_target(), start_driver()
        local reply = ask(driver, "tcp 127.0.0.1 " .. target.port .. " hello")
        assert.matches("^OK 127%.0%.0%.1:" .. target.port .. " outbound " ..
                       CTIME .. "hello$", reply)
        finish(driver, target)
    end)

    it("resolves a host name (localhost) off the loop thread", function()
        local target = serve{ script = "scripts/handle.lua",
                              listen = { "127.0.0.1:0", "[::1]:0" } }
        local driver = start_driver()
        -- localhost may be 127.0.0.1 or ::1; the target has a port on each
        -- but they differ, so ask for the one localhost resolves to first.
        local info = socket.dns.getaddrinfo("localhost")
        local port = target.ports[1]
        if info and info[1] and info[1].family == "inet6" then
            port = target.ports[2]
        end
        local reply = ask(driver, "tcp localhost " .. port .. " named")
        assert.matches("^OK %S+:" .. port .. " outbound " .. CTIME ..
                       "named$", reply)
        finish(driver, target)
    end)

    it("connects to a unix socket given as unix:PATH", function()
        local path = helpers.tmpname(".sock")
        local target = serve{ script = "scripts/handle.lua",
                              listen = { "unix:" .. path } }
        local driver = start_driver()
        local reply = ask(driver, "tcp unix:" .. path .. " 0 over-unix")
        assert.matches("^OK %S+ outbound " .. CTIME .. "over%-unix$", reply)
        os.remove(path .. ".gone")
        assert.equal("ERR no such file or directory",
                     ask(driver, "tcp unix:" .. path .. ".gone 0 x"))
        finish(driver, target)
    end)

    it("returns nil, 'connection refused' when nothing listens", function()
        local driver = start_driver()
        local port = dead_port()
        assert.equal("ERR connection refused",
                     ask(driver, "tcp 127.0.0.1 " .. port .. " x"))
        finish(driver)
    end)

    it("returns nil, 'cannot resolve ...' for an unknown host name", function()
        local driver = start_driver()
        local reply = ask(driver, "tcp no-such-host.invalid 80 x 3")
        assert.matches("^ERR cannot resolve no%-such%-host%.invalid: ", reply)
        finish(driver)
    end)

    it("returns nil, 'timeout' after its timeout when no answer comes", function()
        local port = full_backlog()
        if not port then
            pending("this system answers connects to a full backlog")
            return
        end
        local driver = start_driver()
        local t0 = helpers.now()
        local reply = ask(driver, "tcp 127.0.0.1 " .. port .. " x 0.3")
        local took = helpers.now() - t0
        assert.equal("ERR timeout", reply)
        assert.is_true(took >= 0.25 and took < 3, "took " .. took)
        finish(driver)
    end)

    it("returns nil, 'closed' when the upstream closes before answering", function()
        local up = serve{ source = [[
return { handle = function(conn)
    conn:readline()
    conn:write("partial, no newline")
end }
]] }
        local driver = start_driver()
        -- readline returns the partial last line first, as at any EOF
        local reply = ask(driver, "tcp 127.0.0.1 " .. up.port .. " x")
        assert.matches("^OK %S+ outbound partial, no newline$", reply)
        assert.equal("END 19 closed",
                     ask(driver, "drain 127.0.0.1 " .. up.port))
        finish(driver, up)
    end)

    it("returns nil, 'closed' when the upstream resets mid-read", function()
        local l, port = upstream()
        local driver = start_driver()
        local c, s = drive(driver, l, "drain 127.0.0.1 " .. port)
        assert.equal("hi", s:receive("*l"))
        assert(s:send(("x"):rep(500)))       -- half of a read(1000)
        helpers.sleep(0.1)
        assert(s:setoption("linger", { on = true, timeout = 0 }))
        s:close()                            -- RST
        local reply = c:receive("*l")
        c:close()
        assert.matches("^END %d+ closed$", reply)
        settled(driver)
        assert.is_true(driver:alive())
        assert.equal(0, driver:stop())
    end)

    it("survives the client hanging up while it waits in connect", function()
        local port = full_backlog()
        if not port then
            pending("this system answers connects to a full backlog")
            return
        end
        local driver = start_driver()
        local c = helpers.connect(driver.port)
        assert(c:send("hold 127.0.0.1 " .. port .. " 0.5\n"))
        helpers.wait_read(driver.port)      -- the connect has begun
        c:close()
        assert.matches("EV hold: timeout; write ", held(driver))
        settled(driver)
        local target = start_target()
        assert.matches("^OK .*" .. CTIME .. "again$",
                       ask(driver, "tcp 127.0.0.1 " .. target.port .. " again"))
        assert.equal(0, driver:stop())
        assert.equal(0, target:stop())
    end)

    it("survives the client hanging up while it waits in an outbound read", function()
        local l, port = upstream()
        local driver = start_driver()
        local c, s = drive(driver, l, "hold 127.0.0.1 " .. port)
        c:close()                            -- the client goes first
        helpers.sleep(0.2)
        assert.is_nil(driver:log():find("EV hold", 1, true))
        assert(s:send("answer\n"))           -- then the upstream answers
        assert.matches("EV hold: read answer nil; write ", held(driver))
        s:close()
        settled(driver)
        assert.not_matches("handler error", driver:log())
        assert.equal(0, driver:stop())
    end)

    it("closes an outbound conn the handler dropped, at garbage collection", function()
        local l, port = upstream()
        local driver = start_driver()
        local c, s = drive(driver, l, "gc 127.0.0.1 " .. port)
        assert.equal("GC 1 0", c:receive("*l"))
        c:close()
        local data, err, partial = s:receive("*a")
        assert.equal("", data or partial)    -- the driver closed it
        assert.is_nil(err ~= "closed" and err or nil)
        s:close()
        finish(driver)
    end)
end)

describe("luaserv.udp", function()
    it("sends to and receives from the peer set by setpeername", function()
        local target, driver = start_target(), start_driver()
        local uport = target.ports[2]
        local reply = ask(driver, "udp 127.0.0.1 " .. uport .. " dgram")
        assert.matches("^OK 127%.0%.0%.1 " .. uport .. " " .. CTIME ..
                       "dgram$", reply)
        finish(driver, target)
    end)

    it("resolves a host name in setpeername", function()
        local target = serve{ script = "scripts/handle.lua",
                              listen = { "udp://127.0.0.1:0" } }
        local info = socket.dns.getaddrinfo("localhost")
        if info and info[1] and info[1].family == "inet6" then
            pending("localhost resolves to ::1 first here")
            return
        end
        local driver = start_driver()
        local reply = ask(driver, "udp localhost " .. target.port .. " named")
        assert.matches("^OK 127%.0%.0%.1 " .. target.port .. " " .. CTIME ..
                       "named$", reply)
        finish(driver, target)
    end)

    it("returns nil, 'timeout' when no datagram comes in time", function()
        local u = assert(socket.udp())
        assert(u:setsockname("127.0.0.1", 0))
        helpers.defer(function() u:close() end)
        local _, port = u:getsockname()
        local driver = start_driver()
        local reply = ask(driver, "silent 127.0.0.1 " .. port .. " 0.3")
        assert_timed_out(reply)
        u:settimeout(1)
        assert.equal("anyone?", u:receive())  -- it did send
        finish(driver)
    end)

    it("returns nil, 'timeout' on a socket that has not sent yet", function()
        local driver = start_driver()
        local reply = ask(driver, "fresh 0.3")
        assert_timed_out(reply)
        finish(driver)
    end)

    it("sends with sendto and gets the reply with the sender's address", function()
        local target, driver = start_target(), start_driver()
        local uport = target.ports[2]
        local reply = ask(driver, "sendto 127.0.0.1 " .. uport .. " to")
        assert.matches("^OK 127%.0%.0%.1 " .. uport .. " " .. CTIME .. "to$",
                       reply)
        finish(driver, target)
    end)
end)

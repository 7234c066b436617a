-- examples/proxy.lua in front of real luaserv upstreams: the timestamp
-- server (scripts/handle.lua) and spec/fixtures/proxy_upstream.lua (echo,
-- gen, flood, sink, hold). The proxy runs under
-- spec/fixtures/example_dgram_stats.lua where a test needs its counters;
-- the environment goes in through the start_server shell option.
local helpers = require "helpers"
local socket = require "socket"

local CTIME = helpers.CTIME
local TIMEOUT = helpers.sanitize and 40 or 15
local MIB = 1024 * 1024
local BLOCK = 4096
local FILL = ("abcdefghijklmnopqrstuvwxyz0123456789"):rep(114):sub(1, BLOCK - 4)
local serve, probe, dead_port = helpers.serve, helpers.probe, helpers.dead_port

-- helpers.pump, leaving c with this file's TIMEOUT.
local function pump(c, data, want, timeout)
    return helpers.pump(c, data, want, timeout, TIMEOUT)
end

-- Block k of a test stream, as proxy_upstream.lua makes and checks them.
local function block(k)
    return string.pack(">I4", k) .. FILL
end

local function blocks(n)
    local t = {}
    for k = 1, n do t[k] = block(k) end
    return table.concat(t)
end

local function upstream()
    return serve{ script = "spec/fixtures/proxy_upstream.lua",
                  listen = { "127.0.0.1:0", "udp://127.0.0.1:0" } }
end

-- The proxy to 127.0.0.1:port, with its stats probe on a UDP port.
-- env: more "NAME=value " text for the shell.
local function proxy(port, env)
    return serve{
        script = "spec/fixtures/example_dgram_stats.lua",
        listen = { "127.0.0.1:0", "udp://127.0.0.1:0" },
        shell = "EXAMPLE_SCRIPT=examples/proxy.lua UPSTREAM_PORT=" .. port ..
                " UPSTREAM_LINGER=0.3 " .. (env or ""),
    }
end

-- The proxy has no task, connection or upstream connection left.
local function settled(p)
    local s
    local ok = helpers.wait_for(function()
        s = probe(p, "stats")
        return s.tasks == 0 and s.connections_active == 0 and
               s.outbound_active == 0
    end, TIMEOUT)
    assert.truthy(ok, ("tasks=%d connections_active=%d outbound_active=%d")
                  :format(s.tasks, s.connections_active, s.outbound_active))
end

-- The proxy settles (see settled), then it and its upstream up, when
-- given, exit 0 on TERM.
local function stop_clean(p, up)
    settled(p)
    assert.equal(0, p:stop())
    if up then assert.equal(0, up:stop()) end
end

describe("examples/proxy.lua", function()
    it("relays lines both ways on one connection", function()
        local ts = serve{ script = "scripts/handle.lua" }
        local p = serve{ script = "examples/proxy.lua",
                         shell = "UPSTREAM_PORT=" .. ts.port .. " " }
        local c = helpers.connect(p.port)
        assert(c:send("'Tis but a scratch.\r\n"))
        assert.matches("^" .. CTIME .. "'Tis but a scratch%.\r\n$",
                       helpers.read_line(c))
        assert(c:send("Just a flesh wound.\n"))
        assert.matches("^" .. CTIME .. "Just a flesh wound%.\n$",
                       helpers.read_line(c))
        c:close()
        assert.equal(0, p:stop())
        assert.equal(0, ts:stop())
    end)

    it("works with the reference client, a connection per line", function()
        local ts = serve{ script = "scripts/handle.lua" }
        local p = proxy(ts.port)
        local status, out = helpers.run(helpers.cli, "-p " .. p.port,
                                        "first\nsecond\n\n")
        assert.equal(0, status, out)
        assert.matches("^" .. CTIME .. "first\n" .. CTIME .. "second\n$", out)
        stop_clean(p, ts)
    end)

    it("answers a client that half-closes, then closes after the linger", function()
        local ts = serve{ script = "scripts/handle.lua" }
        local p = proxy(ts.port)
        local c = helpers.connect(p.port, TIMEOUT)
        assert(c:send("one\ntwo\n"))
        c:shutdown("send")
        local t0 = helpers.now()
        local data, how = helpers.read_to_close(c)
        local took = helpers.now() - t0
        assert.matches("^" .. CTIME .. "one\n" .. CTIME .. "two\n$", data)
        assert.equal("closed", how)
        assert.is_true(took >= 0.25 and took < TIMEOUT / 2, "took " .. took)
        stop_clean(p, ts)
    end)

    it("carries 8 MiB both ways intact (echo upstream)", function()
        local up = upstream()
        local p = proxy(up.port)
        local c = helpers.connect(p.port, TIMEOUT)
        local data = blocks(8 * MIB // BLOCK)
        local got = pump(c, "echo\n" .. data, #data, TIMEOUT * 2)
        c:close()
        assert.equal(#data, #got)
        assert.is_true(got == data, "the echoed bytes differ")
        stop_clean(p, up)
    end)

    it("carries 20 MiB from the upstream intact, then closes", function()
        local up = upstream()
        local p = proxy(up.port)
        local c = helpers.connect(p.port, TIMEOUT)
        local n = 20 * MIB // BLOCK
        assert(c:send("gen " .. n .. "\n"))
        local data, how = helpers.read_to_close(c)
                assert.equal("closed", how)
        assert.equal(n * BLOCK, #data)
        assert.is_true(data == blocks(n), "the bytes differ")
        stop_clean(p, up)
    end)

    it("carries 16 MiB to the upstream intact", function()
        local up = upstream()
        local p = proxy(up.port)
        local c = helpers.connect(p.port, TIMEOUT)
        local n = 16 * MIB // BLOCK
        local data = "sink " .. n .. "\n" .. blocks(n)
        local reply = pump(c, data, #("sink OK " .. n .. "\n"), TIMEOUT * 2)
        c:close()
        assert.equal("sink OK " .. n .. "\n", reply)
        stop_clean(p, up)
    end)

    it("closes the client cleanly, sending nothing, when the upstream is down", function()
        local port = dead_port()
        local p = proxy(port)
        for _ = 1, 3 do
            local c = helpers.connect(p.port, TIMEOUT)
            local data, how = helpers.read_to_close(c)
            assert.equal("", data)
            assert.equal("closed", how)       -- a FIN, not a reset
        end
        assert.matches("warn[^\n]*upstream 127%.0%.0%.1:" .. port ..
                       ": connection refused", p:log())
        stop_clean(p)
    end)

    it("closes the client cleanly when the upstream name does not resolve", function()
        local p = proxy(1, "UPSTREAM_HOST=no-such-host.invalid ")
        local c = helpers.connect(p.port, TIMEOUT)
        local data, how = helpers.read_to_close(c)
        assert.equal("", data)
        assert.equal("closed", how)
        assert.matches("upstream no%-such%-host%.invalid:1: cannot resolve",
                       p:log())
        stop_clean(p)
    end)

    it("closes the upstream connection when the client goes away", function()
        local up = upstream()
        local p = proxy(up.port)
        local c = helpers.connect(p.port, TIMEOUT)
        assert(c:send("echo\nping\n"))
        assert.equal("ping", c:receive("*l"))
        assert.equal(1, probe(up, "stats").tasks)
        c:close()
        assert.truthy(helpers.wait_for(function()
            return probe(up, "stats").tasks == 0
        end, TIMEOUT), "the upstream connection stayed open")
        stop_clean(p, up)
    end)

    it("holds back an upstream streaming to a client that does not read", function()
        local up = upstream()
        local p = proxy(up.port)
        local rss0 = p:rss_kib()
        local c = helpers.connect(p.port, TIMEOUT)
        assert(c:send("flood\n"))
        -- the client reads nothing: the flood must come to a stop
        local p1, p2
        assert.truthy(helpers.wait_for(function()
            p1 = probe(up, "progress")
            helpers.sleep(0.5)
            p2 = probe(up, "progress")
            return p1.bytes > 0 and p1.bytes == p2.bytes
        end, TIMEOUT), "the upstream never stopped writing")
        local rss1 = p:rss_kib()
        assert.equal(1, p2.running)
        assert.is_true(p2.bytes < 40 * MIB,
                       ("the upstream got %d bytes out"):format(p2.bytes))
        local limit = (helpers.sanitize and 32 or 12) * 1024
        assert.is_true(rss1 - rss0 < limit,
                       ("proxy RSS grew from %d to %d KiB"):format(rss0, rss1))
        -- reading resumes the flow
        local got = pump(c, "", 8 * MIB, TIMEOUT)
        assert.is_true(#got >= 8 * MIB, "got " .. #got .. " bytes")
        assert.equal(block(1) .. block(2), got:sub(1, 2 * BLOCK))
        c:close()
        -- the client is gone: the proxy drops the upstream, the flood ends
        assert.truthy(helpers.wait_for(function()
            return probe(up, "progress").running == 0
        end, TIMEOUT), "the flood still runs")
        stop_clean(p, up)
    end)

    it("holds back a client sending to an upstream that does not read", function()
        local up = upstream()
        local p = proxy(up.port)
        local rss0 = p:rss_kib()
        local c = helpers.connect(p.port, TIMEOUT)
        local n = 64 * MIB // BLOCK
        local data = "hold " .. n .. "\n" .. blocks(n)
        -- send until the proxy stops taking bytes
        c:settimeout(0)
        local sent, last_progress = 0, helpers.now()
        while helpers.now() - last_progress < 1 do
            local last, _, partial = c:send(data, sent + 1)
            local now_sent = last or partial or sent
            if now_sent > sent then
                sent, last_progress = now_sent, helpers.now()
            else
                socket.select(nil, { c }, 0.1)
            end
            assert.is_true(sent < #data, "everything was taken")
        end
        local rss1 = p:rss_kib()
        assert.is_true(sent < 40 * MIB, ("the proxy took %d bytes"):format(sent))
        local limit = (helpers.sanitize and 32 or 12) * 1024
        assert.is_true(rss1 - rss0 < limit,
                       ("proxy RSS grew from %d to %d KiB"):format(rss0, rss1))
        -- the upstream reads again: the rest goes through, intact
        probe(up, "release")
        local reply = pump(c, data:sub(sent + 1), #("sink OK " .. n .. "\n"),
                           TIMEOUT * 2)
        c:close()
        assert.equal("sink OK " .. n .. "\n", reply)
        stop_clean(p, up)
    end)

    it("refuses to start with a bad UPSTREAM_PORT, naming the line", function()
        local status, out = helpers.run("sh", "-c " .. helpers.shell_quote(
            "UPSTREAM_PORT=http " .. helpers.luaserv ..
            " --check examples/proxy.lua"))
        assert.equal(2, status)
        assert.matches("examples/proxy%.lua:%d+: UPSTREAM_PORT must be a " ..
                       "positive integer", out)
    end)
end)

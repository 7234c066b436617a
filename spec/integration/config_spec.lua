-- The configuration file (luaserv -c FILE): settings, listen{} calls each
-- with its own handler and options, admin and metrics; flags override it;
-- mistakes stop luaserv with exit status 2 and a message naming FILE:LINE.
-- The shipped examples/luaserv.conf.lua is run too, moved to free ports.
local helpers = require "helpers"
local op = require "fixtures.operations_util"

local OP = "spec/fixtures/operations_handler.lua"
local EXAMPLE = "examples/luaserv.conf.lua"
local SLOW = op.SLOW
local CTIME = helpers.CTIME
local q = helpers.shell_quote

-- Writes a configuration file; returns its path.
local function conf(text)
    return helpers.write_file(helpers.tmpname(".conf.lua"), text)
end

-- Starts luaserv -c path (plus args) and waits for announce listeners.
local function start(path, announce, args)
    local a = { "-c", path }
    for _, x in ipairs(args or {}) do a[#a + 1] = x end
    return op.start{ listen = {}, args = a, announce = announce }
end

-- Runs luaserv -c path to completion; returns the status and its output.
local function run(path, extra)
    return helpers.run(helpers.luaserv, "-c " .. q(path) .. " " .. (extra or ""))
end

-- The example, with its addresses moved to free ones, and its commented
-- second listener turned on when second is true.
local function example(admin, second)
    local text = assert(helpers.read_file(EXAMPLE))
    local n
    text, n = text:gsub("0%.0%.0%.0:21567", "127.0.0.1:0")
    assert.equal(2, n)
    text, n = text:gsub('metrics "127%.0%.0%.1:9145"', 'metrics "127.0.0.1:0"')
    assert.equal(1, n)
    text, n = text:gsub("unix:/run/luaserv/admin%.sock", "unix:" .. admin)
    assert.equal(1, n)
    if second then
        text, n = text:gsub("\n%-%- (listen { \"tcp://127%.0%.0%.1:)21568(.-)\n%-%-( [^\n]*)",
                            "\n%10%2\n%3")
        assert.equal(1, n)
    end
    return conf(text)
end

-- Whether the server closed c: reads once, expecting no data.
local function closed(c)
    local data, err = c:receive("*l")
    return data == nil and err == "closed"
end

describe("configuration file", function()
    describe("the example " .. EXAMPLE, function()
        it("serves TCP and UDP with the admin socket and metrics", function()
            local admin = op.sock_path()
            local srv = start(example(admin), 4)
            local l = srv.listening
            assert.same({ "tcp", "udp", "unix", "tcp" },
                        { l[1].kind, l[2].kind, l[3].kind, l[4].kind })
            assert.equal(admin, l[3].addr)
            local reply = op.ask(l[1].port, "tcp line")
            assert.truthy(reply:match("^" .. CTIME .. "tcp line$"), reply)
            reply = op.ask_udp(l[2].port, "udp datagram\n")
            assert.truthy(reply:match("^" .. CTIME .. "udp datagram\n$"), reply)
            local _, per = op.stats(admin)
            assert.truthy(per["tcp://" .. l[1].addr].script:find("scripts/handle.lua", 1, true))
            assert.truthy(per["udp://" .. l[2].addr].script:find("scripts/handle.lua", 1, true))
            local code, _, body = op.http_get(l[4].port, "/metrics")
            assert.equal(200, code)
            assert.truthy(op.sample(body, "luaserv_connections_total",
                                    'listener="tcp://' .. l[1].addr .. '"'))
            assert.is_nil(srv:log():find(" warn ", 1, true), srv:log())
            assert.is_nil(srv:log():find(" error ", 1, true), srv:log())
        end)

        it("serves its commented second listener once it is turned on", function()
            local admin = op.sock_path()
            local srv = start(example(admin, true), 5)
            local l = srv.listening
            assert.equal("tcp", l[3].kind)
            local c = helpers.connect(l[3].port, 10 * SLOW)
            assert(c:send("classic\n"))
            local reply = c:receive("*l")
            assert.truthy(reply and reply:match("^" .. CTIME .. "classic$"), reply)
            assert.truthy(closed(c))   -- tsTservSS answers one line a connection
            c:close()
            local _, per = op.stats(admin)
            assert.truthy(per["tcp://" .. l[3].addr].script:find("tsTservSS.lua", 1, true))
        end)

        it("passes luaserv --check", function()
            local status, out = helpers.run(helpers.luaserv, "--check -c " .. q(EXAMPLE))
            assert.equal(0, status, out)
        end)
    end)

    it("gives each listener its own handler and options", function()
        local admin = op.sock_path()
        local path = conf(([[
idle_timeout = 60
listen { "tcp://127.0.0.1:0", handler = %q, max_frame = 16 }
listen { "tcp://127.0.0.1:0", handler = "scripts/handle.lua", idle_timeout = 0.5 }
listen { "tcp://127.0.0.1:0", handler = %q, framing = { "delim", ";" },
         high_water = 4096 }
listen { "udp://127.0.0.1:0", handler = "scripts/handle.lua" }
admin %q
]]):format(OP, OP, "unix:" .. admin))
        local srv = start(path, 5)
        local l = srv.listening
        local short, stamp, delim, udp = l[1], l[2], l[3], l[4]
        assert.same({ "tcp", "tcp", "tcp", "udp", "unix" },
                    { l[1].kind, l[2].kind, l[3].kind, l[4].kind, l[5].kind })

        -- its own handler each
        assert.equal("echo hi", op.ask(short.port, "hi"))
        local reply = op.ask(stamp.port, "hi")
        assert.truthy(reply:match("^" .. CTIME .. "hi$"), reply)
        reply = op.ask_udp(udp.port, "hi\n")
        assert.truthy(reply:match("^" .. CTIME .. "hi\n$"), reply)
        local _, per = op.stats(admin)
        assert.truthy(per["tcp://" .. short.addr].script:find(OP, 1, true))
        assert.truthy(per["tcp://" .. stamp.addr].script:find("scripts/handle.lua", 1, true))

        -- max_frame = 16: a longer line closes the connection
        local c = helpers.connect(short.port, 10 * SLOW)
        assert(c:send(("x"):rep(40) .. "\n"))
        assert.truthy(closed(c), "a 40-byte line got through max_frame = 16")
        c:close()

        -- framing = { "delim", ";" }
        c = helpers.connect(delim.port, 10 * SLOW)
        assert(c:send("a;bc;"))
        assert.equal("echo a", c:receive("*l"))
        assert.equal("echo bc", c:receive("*l"))
        c:close()

        -- idle_timeout = 0.5 closes an idle connection there, while the
        -- global 60 s keeps one open on another listener
        local idle = helpers.connect(stamp.port, 10 * SLOW)
        local kept = helpers.connect(short.port, 10 * SLOW)
        local t0 = helpers.now()
        assert.truthy(closed(idle))
        local waited = helpers.now() - t0
        assert.is_true(waited >= 0.4 and waited < 5 * SLOW, "closed after " .. waited)
        assert(kept:send("still\n"))
        assert.equal("echo still", kept:receive("*l"))
        idle:close()
        kept:close()
    end)

    describe("flags", function()
        it("--log-level beats log_level", function()
            local srv = start(conf('log_level = "warn"\nlisten "127.0.0.1:0"\n'), 1,
                              { OP })
            local srv2 = start(conf('log_level = "warn"\nlisten "127.0.0.1:0"\n'), 1,
                               { "--log-level", "info", OP })
            local srv3 = start(conf('log_level = "error"\nlisten "127.0.0.1:0"\n'), 1,
                               { "--log-level", "warn", OP })
            -- a line too long is a warning
            for _, s in ipairs({ srv, srv2, srv3 }) do
                local c = helpers.connect(s.listening[1].port, 10 * SLOW)
                c:send(("z"):rep(70000) .. "\n")   -- the server may hang up midway
                c:receive("*a")
                c:close()
            end
            assert.truthy(helpers.wait_for(function()
                return srv3:log():find(" warn ", 1, true)
            end, 10 * SLOW), "--log-level warn hid a warning:\n" .. srv3:log())
            assert.truthy(helpers.wait_for(function()
                return srv:log():find(" warn ", 1, true)
            end, 10 * SLOW))
            assert.is_nil(srv:log():find(" info ", 1, true), srv:log())
            assert.truthy(srv2:log():find(" info serving ", 1, true), srv2:log())
        end)

        it("--log-format beats log_format", function()
            local srv = start(conf('log_format = "json"\nlisten "127.0.0.1:0"\n'), 1,
                              { OP })
            local srv2 = start(conf('log_format = "json"\nlisten "127.0.0.1:0"\n'), 1,
                               { "--log-format", "text", OP })
            assert.truthy(helpers.wait_for(function()
                return srv:log():find('"msg":"serving ', 1, true)
            end, 10 * SLOW), srv:log())
            assert.truthy(helpers.wait_for(function()
                return srv2:log():find(" info serving ", 1, true)
            end, 10 * SLOW), srv2:log())
        end)

        it("-l replaces the listeners but keeps admin and metrics", function()
            local admin = op.sock_path()
            local path = conf(([[
handler = %q
listen { "tcp://127.0.0.1:0", handler = "scripts/handle.lua" }
listen { "udp://127.0.0.1:0", handler = "scripts/handle.lua" }
admin %q
metrics "127.0.0.1:0"
]]):format(OP, "unix:" .. admin))
            local srv = op.start{ listen = { "127.0.0.1:0" }, args = { "-c", path },
                                  announce = 3 }
            local l = srv.listening
            assert.same({ "tcp", "unix", "tcp" }, { l[1].kind, l[2].kind, l[3].kind })
            -- the config's handler setting serves the -l listener
            assert.equal("echo hi", op.ask(l[1].port, "hi"))
            assert.equal(200, (op.http_get(l[3].port, "/metrics")))
            local _, per = op.stats(admin)
            local n = 0
            for name in pairs(per) do
                n = n + 1
                assert.is_nil(name:find("^udp:"), name)
            end
            assert.equal(3, n)
        end)

        it("the script argument beats the handler setting", function()
            local path = conf(('handler = %q\nlisten "127.0.0.1:0"\n'):format(OP))
            local srv = start(path, 1, { "scripts/handle.lua" })
            local reply = op.ask(srv.listening[1].port, "hi")
            assert.truthy(reply:match("^" .. CTIME .. "hi$"), reply)
        end)

        it("--idle-timeout beats idle_timeout", function()
            local text = 'idle_timeout = 0.3\nlisten "127.0.0.1:0"\n'
            local timed = start(conf(text), 1, { OP })
            local kept = start(conf(text), 1, { "--idle-timeout", "0", OP })
            local a = helpers.connect(timed.listening[1].port, 10 * SLOW)
            local b = helpers.connect(kept.listening[1].port, 10 * SLOW)
            assert.truthy(closed(a), "idle_timeout = 0.3 did not close")
            helpers.sleep(0.5)
            assert(b:send("still\n"))
            assert.equal("echo still", b:receive("*l"))
            a:close()
            b:close()
        end)

        it("--admin beats admin", function()
            local ignored, used = op.sock_path(), op.sock_path()
            local path = conf(('admin %q\nlisten "127.0.0.1:0"\n'):format("unix:" .. ignored))
            local srv = start(path, 2, { "--admin", "unix:" .. used, OP })
            assert.equal(used, srv.listening[2].addr)
            assert.equal("ok", (op.admin_cmd(used, "workers")))
            assert.is_nil(io.open(ignored))
        end)
    end)

    describe("mistakes", function()
        -- Each: the file's text, its line with the mistake, and words the
        -- message must hold.
        local cases = {
            { "an unknown setting", 'log_level = "info"\nwokers = 2\n', 2,
              "unknown setting wokers" },
            { "a misspelt call", '\n\nlissen { "127.0.0.1:0" }\n', 3,
              "unknown name lissen" },
            { "reading an unknown name", 'x = print\n', 1, "unknown name print" },
            { "a log_level of the wrong type", 'log_level = 3\n', 1,
              'log_level must be "debug", "info", "warn" or "error", not 3' },
            { "an unknown log level", 'log_level = "loud"\n', 1, "log_level must be" },
            { "a log_format of the wrong kind", 'log_format = "xml"\n', 1,
              'log_format must be "text" or "json"' },
            { "a negative idle_timeout", 'idle_timeout = -1\n', 1,
              "idle_timeout must be a number of seconds >= 0, not -1" },
            { "a string shutdown_timeout", 'shutdown_timeout = "10"\n', 1,
              'shutdown_timeout must be a number of seconds >= 0, not "10"' },
            { "a tiny high_water", '\nhigh_water = 10\n', 2,
              "high_water must be a whole number of bytes >= 1024" },
            { "a fractional backlog", 'backlog = 1.5\n', 1, "backlog must be a whole number" },
            { "a string access_log", 'access_log = "yes"\n', 1,
              "access_log must be true or false" },
            { "a bad workers", 'workers = 0\n', 1, "workers must be" },
            { "an empty handler", 'handler = ""\n', 1, "handler must be a non-empty string" },
            { "a listen{} key it does not know",
              'listen { "127.0.0.1:0", handler = "scripts/handle.lua", idle = 3 }\n', 1,
              "listen: unknown key idle" },
            { "a listen{} key it does not know, on a later line of the call",
              '-- one\n\nlisten { "127.0.0.1:0",\n    handler = "scripts/handle.lua",\n'
              .. '    idel_timeout = 3 }\n', 3, "listen: unknown key idel_timeout" },
            { "a listen{} value of the wrong type",
              'listen { "127.0.0.1:0", idle_timeout = "x" }\n', 1,
              'listen.idle_timeout must be a number of seconds >= 0, not "x"' },
            { "a listen{} max_frame of 0", 'listen { "127.0.0.1:0", max_frame = 0 }\n', 1,
              "listen.max_frame must be a whole number >= 1" },
            { "a listen{} framing of the wrong type",
              'listen { "127.0.0.1:0", framing = 4 }\n', 1, "listen.framing must be" },
            { "a listen{} with no address", 'listen { handler = "x.lua" }\n', 1,
              "listen needs a table starting with an address" },
            { "a TCP admin address", 'admin "127.0.0.1:9999"\n', 1,
              "admin must be a unix:/path address" },
            { "a metrics address of the wrong type", 'metrics(9145)\n', 1,
              "metrics must be a non-empty string" },
            { "a syntax error", 'log_level = = "info"\n', 1, "unexpected symbol" },
            { "a runtime error", 'local t = nil\nlog_level = t.x\n', 2, "attempt to index" },
        }
        for _, case in ipairs(cases) do
            it("reports " .. case[1] .. " as FILE:LINE and exits 2", function()
                local path = conf(case[2])
                local status, out = run(path, OP)
                assert.equal(2, status, out)
                local want = ("luaserv: %s:%d: "):format(path, case[3])
                assert.truthy(out:find(want, 1, true), "want '" .. want .. "' in: " .. out)
                assert.truthy(out:find(case[4], 1, true), "want '" .. case[4] .. "' in: " .. out)
                assert.is_nil(out:find("listening on", 1, true), out)
            end)
        end

        it("reports a missing file and exits 2", function()
            local path = helpers.tmpname(".conf.lua")
            local status, out = run(path, OP)
            assert.equal(2, status, out)
            assert.truthy(out:find(path, 1, true), out)
        end)

        -- Values the C core checks: the message must still say which file.
        it("names the file for a listen{} framing it does not know", function()
            local path = conf('listen { "127.0.0.1:0", framing = "bogus" }\n')
            local status, out = run(path, OP)
            assert.equal(2, status, out)
            assert.truthy(out:find("bogus", 1, true), out)
            assert.truthy(out:find(path, 1, true), "no file named in: " .. out)
        end)

        it("fails --check for a listener whose handler does not exist", function()
            local path = conf('listen { "127.0.0.1:0", handler = "spec/fixtures/op_none.lua" }\n')
            local status, out = helpers.run(helpers.luaserv, "--check -c " .. q(path))
            assert.equal(2, status, out)
            assert.truthy(out:find("op_none.lua", 1, true), out)
        end)

        it("names the file for a listen{} address it cannot parse", function()
            local path = conf('listen { "nonsense:::" }\n')
            local status, out = run(path, OP)
            assert.equal(2, status, out)
            assert.truthy(out:find("nonsense:::", 1, true), out)
            assert.truthy(out:find(path, 1, true), "no file named in: " .. out)
        end)
    end)
end)

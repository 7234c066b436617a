-- examples/tsTservSS.lua, Python's socketserver timestamp server ported
-- line by line: one line a connection, answered "[ctime] line", then the
-- connection closes. Talked to by the reference client (luaserv-cli) and by
-- a Python 3 port of the original client (spec/fixtures/tsTclnt.py).
-- It runs under spec/fixtures/example_dgram_stats.lua, whose UDP listener
-- reports the counters; -l keeps it off port 21567.
local helpers = require "helpers"

local CTIME = helpers.CTIME
local TIMEOUT = helpers.sanitize and 20 or 10
local CLIENT = "spec/fixtures/tsTclnt.py"

local function python3()
    return os.execute("python3 -c 'import sys; sys.exit(sys.version_info[0] != 3)'" ..
                      " >/dev/null 2>&1") == true
end

local function stats(srv) return helpers.probe(srv, "stats") end

-- No task and no connection left, and no handler error.
local function settled(srv)
    local s
    local ok = helpers.wait_for(function()
        s = stats(srv)
        return s.tasks == 0 and s.connections_active == 0
    end, TIMEOUT)
    assert.truthy(ok, ("tasks=%d connections_active=%d"):format(s.tasks,
                  s.connections_active))
    assert.equal(0, s.handler_errors)
end

describe("examples/tsTservSS.lua", function()
    local srv

    lazy_setup(function()
        srv = helpers.start_server{
            script = "spec/fixtures/example_dgram_stats.lua",
            listen = { "127.0.0.1:0", "udp://127.0.0.1:0" },
            shell = "EXAMPLE_SCRIPT=examples/tsTservSS.lua ",
            no_finally = true,
        }
    end)

    lazy_teardown(function()
        if not srv then return end
        local ok, err = pcall(settled, srv)
        local status = srv:stop()
        assert(ok, err)
        assert.equal(0, status)
    end)

    it("prints 'waiting for connection...' and listens where -l says", function()
        assert.matches("waiting for connection%.%.%.\n", srv:log())
        assert.equal("tcp", srv.addrs[1].kind)
        assert.matches("^127%.0%.0%.1:%d+$", srv.addrs[1].addr)
        assert.is_nil(srv:log():find(":21567", 1, true))
    end)

    it("answers the reference client, two lines then an empty one", function()
        local status, out = helpers.run(helpers.cli, "-p " .. srv.port,
                                        "first line\nsecond line\n\n")
        assert.equal(0, status, out)
        assert.matches("^" .. CTIME .. "first line\n" .. CTIME ..
                       "second line\n$", out)
    end)

    it("answers the Python 3 port of the original client", function()
        if not python3() then
            pending("python3 is not installed")
            return
        end
        local status, out = helpers.run("python3", CLIENT .. " " .. srv.port ..
                                        " 127.0.0.1", "'Tis but a scratch.\n" ..
                                        "Just a flesh wound.\n")
        assert.equal(0, status, out)
        -- input() prompts even when its input is not a terminal
        assert.matches("^> " .. CTIME .. "'Tis but a scratch%.\n> " .. CTIME ..
                       "Just a flesh wound%.\n> $", out)
    end)

    it("answers one line per connection, then closes it", function()
        local c = helpers.connect(srv.port)
        assert(c:send("one\r\ntwo\r\n"))
        local data, how = helpers.read_to_close(c)
        assert.matches("^" .. CTIME .. "one\r\n$", data)
        assert.equal("closed", how)
    end)

    it("keeps the line's own terminator, as rfile.readline() does", function()
        local c = helpers.connect(srv.port)
        assert(c:send("lf only\n"))
        local data = helpers.read_to_close(c)
        assert.matches("^" .. CTIME .. "lf only\n$", data)
    end)

    it("answers '[ctime] ' to a client that sends nothing, as Python does", function()
        local c = helpers.connect(srv.port)
        c:shutdown("send")
        local data, how = helpers.read_to_close(c)
        assert.matches("^" .. CTIME .. "$", data)
        assert.equal("closed", how)
    end)

    it("logs '...connected from:' with the client's address tuple", function()
        local c = helpers.connect(srv.port)
        local ip, port = c:getsockname()
        assert(c:send("who\n"))
        helpers.read_to_close(c)
        local want = ("...connected from:\t('%s', %d)\n"):format(ip, port)
        assert.truthy(helpers.wait_for(function()
            return srv:log():find(want, 1, true)
        end, TIMEOUT), srv:log())
    end)

    it("serves many clients at once, each in its own task", function()
        local conns = {}
        for i = 1, 20 do conns[i] = helpers.connect(srv.port) end
        assert.truthy(helpers.wait_for(function()
            return stats(srv).tasks == 20
        end, TIMEOUT))
        for i = 20, 1, -1 do
            assert(conns[i]:send("client " .. i .. "\n"))
            local data = helpers.read_to_close(conns[i])
            assert.matches("^" .. CTIME .. "client " .. i .. "\n$", data)
        end
    end)
end)

-- The ready lines, issue 8: the README said they go to stdout, before the
-- log on stderr, but both went to stderr; and with --log-format json they
-- stayed plain text, so `2>&1 | jq` choked on them. They now go to stdout,
-- written at once, and are JSON objects under --log-format json.
local helpers = require "helpers"
local json = require "dkjson"

local SLOW = helpers.sanitize and 3 or 1

-- Starts the default script on TCP, UDP and a unix socket whose path holds
-- a double quote, with stdout and stderr in files of their own (srv:log()
-- is stdout); returns the server and its stderr path.
local function start(args)
    local err = helpers.tmpname(".err")
    local sock = helpers.tmpname('"q.sock')
    local srv = helpers.start_server{
        script = "scripts/handle.lua", args = args, stderr = err,
        listen = { "127.0.0.1:0", "udp://127.0.0.1:0", "unix:" .. sock } }
    helpers.defer(function() os.remove(err); os.remove(sock) end)
    return srv, err, sock
end

-- Waits until the server logged "serving" on stderr; returns that text.
local function stderr_when_serving(path)
    return helpers.wait_for(function()
        local s = helpers.read_file(path)
        return s and s:find("serving ", 1, true) and s
    end, 10 * SLOW)
end

describe("the ready lines", function()
    it("go to stdout, one per listener, while the log goes to stderr", function()
        local srv, err, sock = start({})
        -- stdout is a regular file here, which stdio would buffer: the
        -- lines are there while the server runs, not at exit.
        assert.equal(("luaserv: listening on tcp 127.0.0.1:%d\n"
                      .. "luaserv: listening on udp 127.0.0.1:%d\n"
                      .. "luaserv: listening on unix %s\n"):format(
                         srv.ports[1], srv.ports[2], sock), srv:log())
        local log = assert(stderr_when_serving(err), "no log on stderr")
        assert.is_nil(log:find("listening on", 1, true), log)
        assert.equal(0, srv:stop("TERM", 10 * SLOW))
        assert.truthy(helpers.read_file(err):find(" info stopped\n", 1, true))
        assert.is_nil(srv:log():find("stopped", 1, true), srv:log())
    end)

    it("are JSON objects with --log-format json, as every log line is", function()
        local srv, err, sock = start({ "--log-format", "json" })
        assert(stderr_when_serving(err), "no log on stderr")
        assert.equal(0, srv:stop("TERM", 10 * SLOW))
        local log = helpers.read_file(err)
        -- What `luaserv ... 2>&1 | jq` would read: every line one object.
        local ready = {}
        for line in (srv:log() .. log):gmatch("([^\n]*)\n") do
            local obj, _, e = json.decode(line)
            assert.equal("table", type(obj), line .. " " .. tostring(e))
            assert.equal("string", type(obj.ts), line)
            assert.equal("string", type(obj.level), line)
            if obj.msg == "listening" then ready[#ready + 1] = obj end
        end
        assert.same({ { proto = "tcp", addr = "127.0.0.1:" .. srv.ports[1] },
                      { proto = "udp", addr = "127.0.0.1:" .. srv.ports[2] },
                      { proto = "unix", addr = sock } },
                    { { proto = ready[1].proto, addr = ready[1].addr },
                      { proto = ready[2].proto, addr = ready[2].addr },
                      { proto = ready[3].proto, addr = ready[3].addr } })
        assert.equal("info", ready[1].level)
        assert.truthy(ready[1].ts:match("^%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z$"), ready[1].ts)
        -- the ready lines are on stdout, and nothing else is
        assert.equal(3, select(2, srv:log():gsub("\n", "")), srv:log())
    end)
end)

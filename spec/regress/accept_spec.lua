-- Accepting: an inherited socket that is one connection (systemd's
-- Accept=yes) is refused at start with a message saying so, instead of
-- "listening" and then `accept: Invalid argument` in a tight loop; and a
-- listener whose every accept fails backs off and logs rarely, whatever
-- the error. spec/fixtures/unacceptable_socket.py plays systemd's part.
local helpers = require "helpers"

local q = helpers.shell_quote
local FIXTURE = "python3 spec/fixtures/unacceptable_socket.py "

-- Runs cmd with a time limit; returns its exit status and output.
local function run(cmd, limit)
    local out = helpers.tmpname(".out")
    local ok, how, code = os.execute(("timeout -s KILL %d %s >%s 2>&1")
                                     :format(limit, cmd, q(out)))
    local text = helpers.read_file(out) or ""
    os.remove(out)
    if ok then return 0, text end
    return how == "exit" and code or 128 + code, text
end

local function server_cmd()
    return q(helpers.luaserv) .. " scripts/handle.lua"
end

describe("inherited sockets", function()
    it("refuses a connected socket (Accept=yes) with a clear error", function()
        local t0 = helpers.now()
        local rc, out = run(FIXTURE .. "connected " .. server_cmd(), 5)
        assert.equal(1, rc, out)
        assert.is_true(helpers.now() - t0 < 4)
        assert.truthy(out:find("is not listening", 1, true), out)
        assert.truthy(out:find("Accept=yes", 1, true), out)
        assert.falsy(out:find("listening on", 1, true), out)
        assert.falsy(out:find("accept:", 1, true), out)
    end)

    it("backs off when every accept fails", function()
        -- the listener stops listening 1 s in; 2 s of failing accepts follow
        local rc, out = run(FIXTURE .. "shutdown 2 " .. server_cmd(), 10)
        assert.equal(0, rc, out)
        assert.truthy(out:find("listening on", 1, true), out)
        local _, lines = out:gsub("accept: Invalid argument", "")
        assert.is_true(lines >= 1 and lines <= 2,
                       ("%d accept error lines in 2 s"):format(lines))
        assert.truthy(out:find("pausing accepts", 1, true), out)
    end)
end)

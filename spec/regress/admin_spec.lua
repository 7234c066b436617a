-- The admin socket under careless commands (issue 8, item 7 and the admin
-- details): eval runs under --handler-timeout and returns the timeout to
-- the client; os.exit() from eval leaves no socket file behind; a regular
-- file at the admin path is refused, not removed; reload prints "ok".
local helpers = require "helpers"
local op = require "fixtures.operations_util"

local SLOW = op.SLOW
local q = helpers.shell_quote

local SCRIPT = [[
local handler = { framing = "line" }
function handler.on_message(_, line) return "ok " .. line .. "\n" end
return handler
]]

local function serve(args)
    local sock = op.sock_path()
    local all = { "--admin", "unix:" .. sock }
    for _, a in ipairs(args or {}) do all[#all + 1] = a end
    local srv = op.start{ source = SCRIPT, args = all, announce = 2 }
    return srv, sock
end

local function exists(path)
    return os.execute("test -e " .. q(path)) == true
end

describe("admin eval", function()
    for _, case in ipairs({
        { "an endless loop", "eval while true do end" },
        { "a loop that catches the timeout",
          "eval while true do pcall(function() while true do end end) end" },
    }) do
        it("of " .. case[1] .. " fails with 'handler timeout' and serving goes on",
           function()
            local srv, sock = serve()
            local a = op.admin(sock, 10 * SLOW)
            local t0 = helpers.now()
            local status = a:cmd(case[2])
            local took = helpers.now() - t0
            io.stderr:write(("# admin %s: error reply after %.2f s\n")
                :format(case[2], took))
            assert.matches("^error: .*handler timeout: still running after 1 s",
                           status)
            assert.is_true(took < 3 * SLOW, ("took %.2f s"):format(took))
            -- The same admin connection, and the server, carry on.
            assert.equal("2", a:ok("eval 1 + 1"))
            a:close()
            assert.equal("ok a", op.ask(srv.port, "a", 5))
            assert.equal(0, srv:stop("TERM", 5 * SLOW))
        end)
    end

    it("of os.exit() leaves no socket file behind", function()
        local srv, sock = serve()
        assert.is_true(exists(sock))
        local a = op.admin(sock, 5 * SLOW)
        a.sock:send("eval os.exit(3)\n")
        local status = srv:wait(5 * SLOW)
        a:close()
        assert.equal(3, status)
        assert.is_false(exists(sock), "the admin socket file is still there")
    end)
end)

describe("the admin path", function()
    it("holding a regular file is refused as not a socket and kept", function()
        local path = helpers.write_file(helpers.tmpname(".sock"), "precious\n")
        helpers.defer(function() os.remove(path) end)
        local status, _, err = op.run(helpers.luaserv, "--admin " ..
            q("unix:" .. path) .. " -l 127.0.0.1:0 " ..
            q(helpers.write_file(helpers.tmpname(".lua"), SCRIPT)))
        assert.equal(1, status)
        assert.matches("cannot listen on unix " .. path .. ": the path exists "
                       .. "and is not a socket (not removing it)", err, 1, true)
        assert.not_matches("Address already in use", err, 1, true)
        assert.equal("precious\n", helpers.read_file(path))
    end)
end)

describe("luaserv-cli --admin PATH reload", function()
    it("prints ok on success", function()
        local srv, sock = serve()
        local status, out, err = op.run(helpers.cli, "--admin " .. q(sock) .. " reload")
        assert.equal(0, status, err)
        assert.equal("ok\n", out)
        assert.equal(0, srv:stop("TERM", 5 * SLOW))
    end)
end)

-- The admin socket (--admin unix:PATH): a private unix socket speaking a
-- line protocol (a status line "ok" or "error: msg", the body, then ".");
-- stats and conns describe the live server, eval runs Lua inside it,
-- log-level and shutdown steer it; luaserv-cli --admin speaks it.
local helpers = require "helpers"
local op = require "fixtures.operations_util"

local SCRIPT = "spec/fixtures/operations_handler.lua"
local SLOW = op.SLOW

-- Starts the fixture on TCP with an admin socket; returns the server, the
-- socket's path and the TCP port.
local function start(extra)
    local path = op.sock_path()
    local args = { "--admin", "unix:" .. path }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    local srv = op.start{ script = SCRIPT, args = args, announce = 2 }
    return srv, path, srv.port
end

-- Opens a TCP client and makes sure the server has handled one line of it.
local function client(port)
    local c = helpers.connect(port, 10 * SLOW)
    assert(c:send("hello\n"))
    assert.equal("echo hello", c:receive("*l"))
    return c
end

describe("admin socket", function()
    it("is a unix socket only its owner can use", function()
        local _, path = start()
        local p = assert(io.popen("stat -c '%F %a' " .. helpers.shell_quote(path)))
        local kind, mode = p:read("a"):match("^(.-) (%d+)")
        p:close()
        assert.equal("socket", kind)
        mode = tonumber(mode, 8)
        assert.equal(0, mode & 0x3f, ("group or others may use it: %o"):format(mode))
        assert.equal(6 * 64, mode & (6 * 64), ("owner cannot read and write: %o"):format(mode))
    end)

    it("answers stats with the open connections per listener", function()
        local _, path, port = start()
        local tcp = "tcp://127.0.0.1:" .. port
        local clients = {}
        for i = 1, 3 do clients[i] = client(port) end
        local global, per = op.stats(path)
        assert.equal(3, per[tcp].active)
        assert.equal(3, per[tcp].total)
        assert.equal(3, per[tcp].messages)
        assert.equal(0, per[tcp].errors)
        assert.truthy(per[tcp].script:find("operations_handler.lua", 1, true))
        -- the admin connection asking is the fourth open one
        assert.equal(4, global.connections_active)
        assert.equal(1, per["unix:" .. path].active)

        clients[1]:close()
        assert.truthy(helpers.wait_for(function()
            local _, p = op.stats(path)
            return p[tcp].active == 2
        end, 10 * SLOW), "a closed connection still counts as open")
        for i = 2, 3 do clients[i]:close() end
        -- nothing leaks: only the asking admin connection stays open
        assert.truthy(helpers.wait_for(function()
            local g, p = op.stats(path)
            return p[tcp].active == 0 and g.connections_active == 1
        end, 10 * SLOW))
        local _, p = op.stats(path)
        assert.equal(3, p[tcp].total)
    end)

    it("answers conns with a line per open connection", function()
        local _, path, port = start()
        local a, b = client(port), client(port)
        assert(b:send("more\n"))
        assert.equal("echo more", b:receive("*l"))
        local adm = op.admin(path)
        local body, lines = adm:ok("conns")
        adm:close()     -- not left to the garbage collector: counted below
        assert.equal(3, #lines, body)   -- a, b and the admin connection
        local function line_of(c)
            local _, cport = c:getsockname()
            for _, l in ipairs(lines) do
                if l:find(" 127.0.0.1:" .. cport .. " ", 1, true) then return l end
            end
            error("no conns line for port " .. cport .. ":\n" .. body)
        end
        local la, lb = line_of(a), line_of(b)
        local listener = " tcp://127.0.0.1:" .. port .. " "
        assert.truthy(la:find(listener, 1, true), la)
        assert.truthy(la:match("^%d+ .* age=[%d.]+s in=6 out=11 messages=1 callback$"), la)
        assert.truthy(lb:match("^%d+ .* in=11 out=21 messages=2 callback$"), lb)
        assert.not_equal(la:match("^%d+"), lb:match("^%d+"))
        a:close()
        b:close()
        assert.truthy(helpers.wait_for(function()
            local _, _, l = op.admin_cmd(path, "conns")
            return #l == 1
        end, 10 * SLOW), "closed connections still listed")
    end)

    describe("eval", function()
        it("returns the values of an expression, tab-separated", function()
            local _, path = start()
            local a = op.admin(path)
            assert.equal("2", a:ok("eval 1 + 1"))
            assert.equal("a\t2\tnil\ttrue", a:ok('eval "a", 2, nil, true'))
            assert.equal("", a:ok("eval x_from_eval = 42"))
            assert.equal("42", a:ok("eval x_from_eval"))
            assert.equal("3", a:ok("eval local t = {1, 2, 3} return #t"))
        end)

        it("sends a multi-line value intact, a leading dot included", function()
            local _, path = start()
            local body, lines = op.admin(path):ok([[eval "one\n.two\n..three\n."]])
            assert.same({ "one", ".two", "..three", "." }, lines, body)
        end)

        for _, case in ipairs({
            { "a syntax error", "eval for", "eval:1: " },
            { "a runtime error", "eval nil + 1", "arithmetic" },
            { "an error()", 'eval error("nope")', "nope" },
            { "infinite recursion",
              "eval local function f() return 1 + f() end return f()",
              "stack overflow",
              -- a million frames take about a second: more than eval's
              -- default --handler-timeout on a busy machine
              { "--handler-timeout", "30" } },
        }) do
            it("answers " .. case[1] .. " with an error and keeps serving",
               function()
                local _, path, port = start(case[4])
                local a = op.admin(path)
                local status, body = a:cmd(case[2])
                assert.truthy(status, body)
                assert.truthy(status:match("^error: "), status)
                assert.truthy(status:find(case[3], 1, true), status)
                assert.equal("", body)
                -- the same admin connection and the listener still work
                assert.equal("2", a:ok("eval 1 + 1"))
                assert.equal("echo still here", op.ask(port, "still here"))
            end)
        end

        it("sees the handler, and patching it changes replies live", function()
            local _, path, port = start()
            local held = client(port)   -- opened before the patch
            local a = op.admin(path)
            assert.equal("function", a:ok("eval type(handler.on_message)"))
            assert.equal("", a:ok('eval handler.on_message = function(c, l) '
                                  .. 'return "patched " .. l .. "\\n" end'))
            assert.equal("patched new", op.ask(port, "new"))
            assert(held:send("old\n"))
            assert.equal("patched old", held:receive("*l"))
            held:close()
        end)
    end)

    describe("log-level", function()
        it("reports and changes the level the server logs at", function()
            local srv, path, port = start()
            local a = op.admin(path)
            assert.equal("info", a:ok("log-level"))
            assert.equal("debug", a:ok("log-level debug"))
            assert.equal("debug", a:ok("log-level"))
            -- at debug, a closed connection is logged
            local c = client(port)
            c:close()
            assert.truthy(helpers.wait_for(function()
                return srv:log():find(" debug ", 1, true)
            end, 10 * SLOW), "no debug line at level debug:\n" .. srv:log())
            assert.equal("error", a:ok("log-level error"))
            local before = #srv:log()
            assert.equal("echo boom?", op.ask(port, "boom?"))
            assert.is_nil(op.ask(port, "boom"))   -- logged at error
            assert.truthy(helpers.wait_for(function()
                return srv:log():find("boom requested", before, true)
            end, 10 * SLOW))
            a:ok("shutdown")
            assert.equal(0, srv:wait(30 * SLOW))
            local after = srv:log():sub(before + 1)
            assert.is_nil(after:find(" info ", 1, true), after)
            assert.is_nil(after:find(" debug ", 1, true), after)
        end)

        it("refuses an unknown level and keeps the old one", function()
            local _, path = start()
            local a = op.admin(path)
            local status = a:cmd("log-level loud")
            assert.truthy(status:match("^error: unknown level"), status)
            assert.equal("info", a:ok("log-level"))
        end)
    end)

    it("stops the server with exit status 0 on shutdown", function()
        local srv, path, port = start()
        local c = client(port)
        local a = op.admin(path)
        assert.equal("shutting down", a:ok("shutdown"))
        -- an open connection may finish: it closes when the client does
        c:close()
        assert.equal(0, srv:wait(30 * SLOW))
        assert.truthy(srv:log():find("stopped", 1, true), srv:log())
    end)

    it("answers an unknown command with an error and goes on", function()
        local _, path = start()
        local a = op.admin(path)
        local status, body = a:cmd("frobnicate now")
        assert.equal("error: unknown command frobnicate (try help)", status)
        assert.equal("", body)
        local _, lines = a:ok("help")
        for _, want in ipairs({ "stats", "conns", "reload", "eval LUA",
                                "log-level [LEVEL]", "shutdown", "quit" }) do
            assert.truthy(table.concat(lines, "\n"):find(want, 1, true), want)
        end
        assert.equal("1", a:ok("workers"))
    end)

    it("closes the connection on quit", function()
        local _, path = start()
        local a = op.admin(path)
        assert(a.sock:send("quit\n"))
        local line, err = a.sock:receive("*l")
        assert.is_nil(line)
        assert.equal("closed", err)
    end)

    it("is refused when given a TCP address", function()
        for _, addr in ipairs({ "127.0.0.1:0", "tcp://127.0.0.1:0" }) do
            local status, out = helpers.run(helpers.luaserv,
                "-l 127.0.0.1:0 --admin " .. addr .. " " .. SCRIPT)
            assert.equal(2, status, out)
            assert.truthy(out:find("--admin must be unix:", 1, true), out)
            assert.is_nil(out:find("listening on", 1, true), out)
        end
    end)
end)

describe("luaserv-cli --admin", function()
    local CLI = helpers.cli
    local q = helpers.shell_quote

    it("prints the body of a reply and exits 0", function()
        local _, path, port = start()
        local c = client(port)
        local status, out, err = op.run(CLI, "--admin " .. q(path) .. " stats")
        assert.equal(0, status, err)
        assert.equal("", err)
        assert.truthy(out:find("\nconnections_active 2\n", 1, true), out)
        assert.truthy(out:find("listener tcp://127.0.0.1:" .. port .. " ", 1, true), out)
        assert.is_nil(out:find("^ok"), out)
        assert.is_nil(out:find("\n%.\n$"), out)
        c:close()
    end)

    it("joins its arguments into one command", function()
        local _, path = start()
        local status, out, err = op.run(CLI, "--admin " .. q(path) ..
                                        [[ eval '"x", 1 + 1']])
        assert.equal(0, status, err)
        assert.equal("x\t2\n", out)
        -- a body line starting with a dot comes back as it was
        status, out = op.run(CLI, "--admin " .. q(path) .. [[ eval '".hidden"']])
        assert.equal(0, status)
        assert.equal(".hidden\n", out)
    end)

    it("runs commands read from stdin", function()
        local _, path = start()
        local out = helpers.tmpname(".out")
        local inp = helpers.write_file(helpers.tmpname(".in"),
                                       "eval 6 * 7\nlog-level\n")
        local ok = os.execute(q(CLI) .. " --admin " .. q(path) .. " <" .. q(inp)
                              .. " >" .. q(out) .. " 2>&1")
        assert.truthy(ok)
        assert.equal("42\ninfo\n", helpers.read_file(out))
        os.remove(out)
        os.remove(inp)
    end)

    it("prints an error reply on stderr and exits 1", function()
        local _, path = start()
        local status, out, err = op.run(CLI, "--admin " .. q(path) .. " bogus")
        assert.equal(1, status)
        assert.equal("", out)
        assert.truthy(err:find("error: unknown command bogus", 1, true), err)
        status, out, err = op.run(CLI, "--admin " .. q(path) .. " eval 'error(\"no\")'")
        assert.equal(1, status)
        assert.equal("", out)
        assert.truthy(err:find("no", 1, true), err)
    end)

    it("exits 1 when no server is at the path", function()
        local status, out, err = op.run(CLI, "--admin " .. q(op.sock_path()) .. " stats")
        assert.equal(1, status)
        assert.equal("", out)
        assert.truthy(err:find("cannot connect", 1, true), err)
    end)

    it("refuses a TCP address with exit status 2", function()
        local status, out, err = op.run(CLI, "--admin tcp://127.0.0.1:9 stats")
        assert.equal(2, status, err)
        assert.equal("", out)
        assert.truthy(err ~= "", "no message")
    end)
end)

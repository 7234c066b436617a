-- Errors: a failing handler hurts only its own connection; scripts that
-- fail to load and bad command lines exit 2 before listening; a busy port
-- exits 1. The handler fixture is spec/fixtures/failing_handler.lua.
local helpers = require "helpers"
local socket = require "socket"

local SCRIPT = "spec/fixtures/failing_handler.lua"
local RUN_LIMIT = 30   -- seconds a luaserv that should exit may run

local read_to_close = helpers.read_to_close
local cmd = helpers.command
local stats = helpers.stats

-- Starts the fixture; the test stops it even when it fails.
local function start()
    return helpers.start_server{ script = SCRIPT }
end

local function connect(port)
    return helpers.connect(port, 10)
end

local function reason_of(port, id)
    return helpers.reason_of(connect(port), id)
end

-- What the boom error says: "SCRIPT:LINE: boom requested".
local function boom_where()
    local line = helpers.line_of(SCRIPT, 'error("boom requested")')
    return SCRIPT .. ":" .. line .. ": boom requested"
end

-- Sends "boom" on c and returns what arrived before the server closed it.
local function boom(c)
    assert(c:send("boom\n"))
    local data, err = read_to_close(c)
    assert.equal("closed", err)
    return data
end

describe("a handler error", function()
    it("leaves 50 other open connections unaffected", function()
        local srv = start()
        local clients = {}
        for i = 1, 50 do clients[i] = connect(srv.port) end
        helpers.close_at_end(clients)
        for i, c in ipairs(clients) do assert(c:send("before " .. i .. "\n")) end
        for i, c in ipairs(clients) do
            assert.equal("echo before " .. i, assert(c:receive("*l")))
        end

        local victim = connect(srv.port)
        assert.matches("^on_error: ", boom(victim))

        for i, c in ipairs(clients) do assert(c:send("after " .. i .. "\n")) end
        for i, c in ipairs(clients) do
            assert.equal("echo after " .. i, assert(c:receive("*l")))
        end
        assert.equal(51, stats(clients[1]).connections_total)
        assert.equal(50, stats(clients[50]).connections_active)
        for _, c in ipairs(clients) do c:close() end
        local probe = connect(srv.port)
        assert.is_truthy(helpers.wait_for(function()
            return stats(probe).connections_active == 1
        end, 10), "connections left open")
        probe:close()
        assert.equal(0, srv:stop())
    end)

    it("is logged once, at level error, with the script's file:line and a " ..
       "traceback", function()
        local srv = start()
        boom(connect(srv.port))
        local where = boom_where()
        local log = helpers.wait_for(function()
            local l = srv:log()
            return l:find("stack traceback", 1, true) and l
        end, 5) or srv:log()
        assert.equal(1, helpers.count(log, "boom requested"))
        assert.matches("Z error [^\n]*" .. where:gsub("%p", "%%%0") ..
                       "\nstack traceback:\n", log)
    end)

    it("calls on_error with the error and its traceback", function()
        local srv = start()
        local data = boom(connect(srv.port))
        local where = boom_where()
        assert.equal(1, helpers.count(data, "on_error: "))
        assert.matches("^on_error: " .. where:gsub("%p", "%%%0") ..
                       "|stack traceback:|.*\n$", data)
    end)

    it("closes the erroring connection with reason 'error'", function()
        local srv = start()
        local c = connect(srv.port)
        local id = tonumber(cmd(c, "id"))
        boom(c)
        assert.equal("error", reason_of(srv.port, id))
    end)

    it("is counted in luaserv.stats().handler_errors", function()
        local srv = start()
        local ctl = connect(srv.port)
        local before = stats(ctl).handler_errors
        boom(connect(srv.port))
        boom(connect(srv.port))
        assert.equal(before + 2, stats(ctl).handler_errors)
        ctl:close()
    end)

    it("in on_connect closes only that connection", function()
        local srv = start()
        local ctl = connect(srv.port)
        assert.equal("ok", cmd(ctl, "failconnect"))
        local victim = connect(srv.port)
        local data, err = read_to_close(victim)
        assert.equal("closed", err)
        assert.matches("^on_error: [^\n]*connect boom", data)
        assert.equal("echo still", cmd(ctl, "still"))
        local fresh = connect(srv.port)
        assert.equal("echo fresh", cmd(fresh, "fresh"))
        fresh:close()
        ctl:close()
        assert.matches("error [^\n]*handler error in on_connect[^\n]*" ..
                       SCRIPT:gsub("%p", "%%%0") .. ":%d+: connect boom",
                       srv:log())
    end)
end)

describe("a reply of the wrong type", function()
    -- Starts the fixture, sends line on one connection, and checks that
    -- the server closes it with reason "error" and counts one handler
    -- error. Returns the server and a control connection, still open.
    local function closes_with_error(line)
        local srv = start()
        local ctl = connect(srv.port)
        local before = stats(ctl).handler_errors
        local c = connect(srv.port)
        local id = tonumber(cmd(c, "id"))
        assert(c:send(line .. "\n"))
        local _, err = read_to_close(c)
        assert.equal("closed", err)
        assert.equal("error", reason_of(srv.port, id))
        assert.equal(before + 1, stats(ctl).handler_errors)
        return srv, ctl
    end

    it("closes the connection with reason 'error' and counts a handler " ..
       "error for a boolean", function()
        local srv, ctl = closes_with_error("bool")
        assert.equal("echo fine", cmd(ctl, "fine"))
        assert.matches("Z error [^\n]*on_message", srv:log())
        ctl:close()
    end)

    it("closes the connection and counts a handler error for a nested table",
       function()
        local _, ctl = closes_with_error("nested")
        ctl:close()
    end)

    it("calls on_error for a boolean", function()
        local srv = start()
        local c = connect(srv.port)
        assert(c:send("bool\n"))
        local data, err = read_to_close(c)
        assert.equal("closed", err)
        assert.matches("^on_error: ", data)
    end)

    it("is logged with the file:line where on_message is defined", function()
        -- nothing raised, so there is no traceback to show: the log names
        -- the function that returned the bad reply
        local srv = start()
        local c = connect(srv.port)
        assert(c:send("bool\n"))
        read_to_close(c)
        local log = srv:log()
        assert.matches("Z error [^\n]*" .. SCRIPT:gsub("%p", "%%%0") ..
                       ":%d+: on_message returned a boolean", log)
    end)
end)

-- Runs luaserv with args (a string, already quoted), killed after
-- RUN_LIMIT seconds if it does not exit; returns the status and output.
local function run(args)
    return helpers.run("timeout", RUN_LIMIT .. " " ..
                       helpers.shell_quote(helpers.luaserv) .. " " .. args)
end

local function script_file(source)
    local path = helpers.write_file(helpers.tmpname(".lua"), source)
    helpers.defer(function() os.remove(path) end)
    return path
end

-- Runs a script that must fail to load; checks status 2, that nothing
-- listened, and returns the output.
local function load_fails(source)
    local path = script_file(source)
    local status, out = run("-l 127.0.0.1:0 " .. helpers.shell_quote(path))
    assert.equal(2, status, out)
    assert.matches("^luaserv: ", out)
    assert.is_nil(out:find("listening on", 1, true))
    assert.is_truthy(out:find(path, 1, true), "no script name in: " .. out)
    return out, path
end

local OK_BODY = "function handler.on_message(_, m) return m end\n" ..
                "return handler\n"

describe("a script that fails to load", function()
    it("exits 2 naming file:line for a syntax error", function()
        local out, path = load_fails("local handler = {}\n\nlocal x = = 1\n" ..
                                     OK_BODY)
        assert.is_truthy(out:find(path .. ":3:", 1, true), out)
    end)

    it("exits 2 naming file:line for a runtime error while loading", function()
        local out, path = load_fails("local handler = {}\n" ..
                                     "error(\"load boom\")\n" .. OK_BODY)
        assert.is_truthy(out:find(path .. ":2: load boom", 1, true), out)
    end)

    it("exits 2 when the script returns a non-table", function()
        load_fails("return 42\n")
    end)

    it("exits 2 when the script returns nothing", function()
        load_fails("local x = 1\n")
    end)

    it("exits 2 when on_message is not a function", function()
        local out = load_fails("return { on_message = 5 }\n")
        assert.matches("on_message", out)
    end)

    it("exits 2 when on_close is not a function", function()
        local out = load_fails("return { on_message = print, on_close = {} }\n")
        assert.matches("on_close", out)
    end)

    for _, framing in ipairs({ '"bogus"', '{ "prefix", 3 }', '{ "delim", "" }',
                               '{ "fixed" }', '{ "prefix", endian = "middle" }',
                               '{ "line", max = "lots" }', "42" }) do
        it("exits 2 for the framing " .. framing, function()
            local out = load_fails("local handler = { framing = " .. framing ..
                                   " }\n" .. OK_BODY)
            assert.matches("framing", out)
        end)
    end

    it("exits 2 when on_load raises", function()
        local out = load_fails("local handler = {}\n" ..
                               "function handler.on_load() error(\"no db\") end\n" ..
                               OK_BODY)
        assert.matches("no db", out)
    end)

    it("exits 2 for an on_load error before it opens any listener", function()
        local busy = assert(socket.bind("127.0.0.1", 0))
        helpers.close_at_end({ busy })
        local _, port = busy:getsockname()
        local path = script_file("local handler = {}\n" ..
                                 "function handler.on_load() error(\"no db\") end\n" ..
                                 OK_BODY)
        local status, out = run("-l 127.0.0.1:" .. port .. " " ..
                                helpers.shell_quote(path))
        assert.equal(2, status, out)
        assert.matches("no db", out)
    end)
end)

describe("--check", function()
    it("exits 0 for scripts/handle.lua without listening", function()
        local status, out = run("--check scripts/handle.lua")
        assert.equal(0, status, out)
        assert.is_nil(out:find("listening on", 1, true))
    end)

    it("exits 2 for a script with a syntax error", function()
        local path = script_file("return {\n")
        local status, out = run("--check " .. helpers.shell_quote(path))
        assert.equal(2, status, out)
        assert.is_truthy(out:find(path, 1, true), out)
    end)
end)

describe("the command line", function()
    local function usage_exit(args)
        local status, out = run(args)
        assert.equal(2, status, out)
        assert.matches("usage: luaserv", out, 1, true)
        assert.is_nil(out:find("listening on", 1, true))
    end

    it("prints usage and exits 2 for an unknown option", function()
        usage_exit("--no-such-option scripts/handle.lua")
    end)

    it("prints usage and exits 2 for --idle-timeout abc", function()
        usage_exit("--idle-timeout abc -l 127.0.0.1:0 scripts/handle.lua")
    end)

    it("prints usage and exits 2 for -l nonsense", function()
        usage_exit("-l nonsense scripts/handle.lua")
    end)

    it("prints usage and exits 2 for two scripts", function()
        usage_exit("-l 127.0.0.1:0 scripts/handle.lua scripts/handle.lua")
    end)

    it("exits 1 with 'Address already in use' for a port in use", function()
        local busy = assert(socket.bind("127.0.0.1", 0))
        helpers.close_at_end({ busy })
        local _, port = busy:getsockname()
        local status, out = run("-l 127.0.0.1:" .. port ..
                                " scripts/handle.lua")
        assert.equal(1, status, out)
        assert.matches("Address already in use", out, 1, true)
    end)
end)

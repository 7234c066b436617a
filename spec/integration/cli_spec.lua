-- luaserv-cli, the reference client, and the seed article's own client
-- (a Python 3 port of tsTclnt.py), both against the real server.
local helpers = require "helpers"
local socket = require "socket"

local CTIME = helpers.CTIME
local SCRIPT = "scripts/handle.lua"
local WHOAMI = "spec/fixtures/whoami.lua"
local SILENT = "spec/fixtures/never_answers.lua"
local TSTCLNT = "spec/fixtures/tsTclnt.py"

local q = helpers.shell_quote

-- Runs a command line with stdin (a string, or nothing) and returns its
-- exit status, stdout and stderr, kept apart.
local function run(cmd, stdin)
    local out, err = helpers.tmpname(".out"), helpers.tmpname(".err")
    local inp = "/dev/null"
    if stdin then inp = helpers.write_file(helpers.tmpname(".in"), stdin) end
    local _, _, status = os.execute(("%s <%s >%s 2>%s"):format(
        cmd, q(inp), q(out), q(err)))
    local stdout, stderr = helpers.read_file(out), helpers.read_file(err)
    os.remove(out)
    os.remove(err)
    if stdin then os.remove(inp) end
    return status, stdout, stderr
end

-- Runs luaserv-cli with the given arguments (a list).
local function cli(args, stdin)
    local argv = { q(helpers.cli) }
    for _, a in ipairs(args) do argv[#argv + 1] = q(a) end
    return run(table.concat(argv, " "), stdin)
end

local function lines_of(text)
    local lines = {}
    for line in text:gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
    return lines
end

-- The "id=N" a whoami reply starts with.
local function id_of(line)
    return tonumber(line:match("^id=(%d+) "))
end

describe("luaserv-cli", function()
    local srv

    lazy_setup(function()
        srv = helpers.start_server{ script = SCRIPT, no_finally = true,
                                    listen = { "127.0.0.1:0",
                                               "udp://127.0.0.1:0" } }
    end)

    lazy_teardown(function()
        if srv then srv:stop() end
    end)

    it("prints one stripped reply per piped line, ending on an empty line",
       function()
        local status, out, err = cli({ "-H", "127.0.0.1", "-p", srv.port },
                                     "line\nline\n\nnot sent\n")
        assert.equal(0, status)
        assert.equal("", err)
        local lines = lines_of(out)
        assert.equal(2, #lines)
        for _, line in ipairs(lines) do
            assert.matches("^" .. CTIME .. "line$", line)
        end
    end)

    it("shows no prompt when stdin is not a terminal", function()
        local status, out = cli({ "-H", "127.0.0.1", "-p", srv.port },
                                "a\nb\n\n")
        assert.equal(0, status)
        assert.is_nil(out:find("> ", 1, true))
        assert.matches("^" .. CTIME .. "a\n" .. CTIME .. "b\n$", out)
    end)

    it("ends with status 0 at the end of input without an empty line",
       function()
        local status, out = cli({ "-H", "127.0.0.1", "-p", srv.port },
                                "only\n")
        assert.equal(0, status)
        assert.matches("^" .. CTIME .. "only\n$", out)
    end)

    it("finds the server through the default host, localhost", function()
        local status, out = cli({ "-p", srv.port }, "hello\n\n")
        assert.equal(0, status)
        assert.matches("^" .. CTIME .. "hello\n$", out)
    end)

    it("sends one line with -e and prints its reply", function()
        local status, out, err = cli({ "-H", "127.0.0.1", "-p", srv.port,
                                       "-e", "one shot" })
        assert.equal(0, status)
        assert.equal("", err)
        assert.matches("^" .. CTIME .. "one shot\n$", out)
    end)

    it("ignores stdin with -e", function()
        local status, out = cli({ "-H", "127.0.0.1", "-p", srv.port,
                                  "--exec", "from -e" }, "from stdin\n")
        assert.equal(0, status)
        assert.matches("^" .. CTIME .. "from %-e\n$", out)
    end)

    it("talks UDP with --udp", function()
        local status, out, err = cli({ "-H", "127.0.0.1", "-p", srv.ports[2],
                                       "--udp" }, "by datagram\nagain\n\n")
        assert.equal(0, status)
        assert.equal("", err)
        assert.matches("^" .. CTIME .. "by datagram\n" .. CTIME .. "again\n$",
                       out)
    end)

    it("exits 1 with one line on stderr when the port is closed", function()
        local status, out, err = cli({ "-H", "127.0.0.1", "-p",
                                       helpers.dead_port() }, "hello\n\n")
        assert.equal(1, status)
        assert.equal("", out)
        assert.equal(1, #lines_of(err))
        assert.matches("^luaserv%-cli: .*refused", err)
    end)

    it("exits 1 with one line on stderr when -e meets a closed port",
       function()
        local status, out, err = cli({ "-H", "127.0.0.1", "-p",
                                       helpers.dead_port(), "-e", "hello" })
        assert.equal(1, status)
        assert.equal("", out)
        assert.equal(1, #lines_of(err))
    end)

    it("exits 1 with one line on stderr when nothing listens on the UDP port", function()
        local status, out, err = cli({ "-H", "127.0.0.1", "-p",
                                       helpers.dead_port(), "--udp", "-t", "1",
                                       "-e", "hello" })
        assert.equal(1, status)
        assert.equal("", out)
        assert.equal(1, #lines_of(err))
    end)
end)

describe("luaserv-cli on unix sockets", function()
    local srv, stream, dgram

    lazy_setup(function()
        stream = helpers.tmpname(".sock")
        dgram = helpers.tmpname(".sock")
        srv = helpers.start_server{ script = SCRIPT, no_finally = true,
                                    listen = { "unix:" .. stream,
                                               "unixgram:" .. dgram } }
    end)

    lazy_teardown(function()
        if srv then srv:stop() end
    end)

    it("talks to a unix stream socket with --unix", function()
        local status, out, err = cli({ "--unix", stream }, "local\n\n")
        assert.equal(0, status, err)
        assert.matches("^" .. CTIME .. "local\n$", out)
    end)

    it("talks to a unix datagram socket with --unixgram", function()
        local status, out, err = cli({ "--unixgram", dgram, "-t", "2" },
                                     "one\ntwo\n\n")
        assert.equal(0, status, err)
        assert.matches("^" .. CTIME .. "one\n" .. CTIME .. "two\n$", out)
    end)
end)

describe("luaserv-cli against a server that never answers", function()
    it("gives up after -t seconds with one line on stderr", function()
        local srv = helpers.start_server{ script = SILENT }
        local start = socket.gettime()
        local status, out, err = cli({ "-H", "127.0.0.1", "-p", srv.port,
                                       "-t", "1", "-e", "anyone?" })
        local took = socket.gettime() - start
        assert.equal(1, status)
        assert.equal("", out)
        assert.equal(1, #lines_of(err))
        assert.matches("^luaserv%-cli: ", err)
        assert.is_true(took >= 0.9 and took < 5,
                       ("gave up after %.2f s"):format(took))
        assert.equal(0, srv:stop())
    end)
end)

describe("luaserv-cli connections", function()
    local srv

    lazy_setup(function()
        srv = helpers.start_server{ script = WHOAMI, no_finally = true }
    end)

    lazy_teardown(function()
        if srv then srv:stop() end
    end)

    it("sends every line over one connection with --keep", function()
        local status, out = cli({ "-H", "127.0.0.1", "-p", srv.port,
                                  "--keep" }, "first\nsecond\nthird\n\n")
        assert.equal(0, status)
        local lines = lines_of(out)
        assert.equal(3, #lines)
        local id = assert(id_of(lines[1]), lines[1])
        assert.equal(id, id_of(lines[2]))
        assert.equal(id, id_of(lines[3]))
    end)

    it("opens a new connection for each line without --keep", function()
        local status, out = cli({ "-H", "127.0.0.1", "-p", srv.port },
                                "first\nsecond\nthird\n\n")
        assert.equal(0, status)
        local lines = lines_of(out)
        assert.equal(3, #lines)
        local a, b, c = id_of(lines[1]), id_of(lines[2]), id_of(lines[3])
        assert.truthy(a and b and c, out)
        assert.is_true(a ~= b and b ~= c and a ~= c, out)
    end)
end)

describe("the seed article's client, tsTclnt.py in Python 3", function()
    local srv

    lazy_setup(function()
        srv = helpers.start_server{ script = SCRIPT, no_finally = true }
    end)

    lazy_teardown(function()
        if srv then srv:stop() end
    end)

    it("prints the server's reply to each line, as in the article", function()
        local status, out, err = run(("python3 %s %d"):format(q(TSTCLNT),
                                                              srv.port),
                                     "'Tis but a scratch.\n" ..
                                     "Just a flesh wound.\n\n")
        assert.equal(0, status, err)
        -- input() writes its "> " prompt even when stdin is a pipe
        local replies = {}
        for _, line in ipairs(lines_of(out)) do
            replies[#replies + 1] = line:gsub("^> ", "")
        end
        assert.equal(2, #replies)
        assert.matches("^" .. CTIME .. "'Tis but a scratch%.$", replies[1])
        assert.matches("^" .. CTIME .. "Just a flesh wound%.$", replies[2])
        assert.equal("> ", out:match("[^\n]*$"))
    end)

    it("leaves the server serving after its unused last connection", function()
        local status = run(("python3 %s %d"):format(q(TSTCLNT), srv.port),
                           "one\n\n")
        assert.equal(0, status)
        local c = helpers.connect(srv.port)
        assert(c:send("still up\n"))
        assert.matches("^" .. CTIME .. "still up$", assert(c:receive("*l")))
        c:close()
    end)
end)

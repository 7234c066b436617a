-- Graceful shutdown on SIGTERM and SIGINT: listeners close first, open
-- connections finish what they sent, on_stop runs, the exit status is 0,
-- and --shutdown-timeout bounds the wait.
local helpers = require "helpers"
local socket = require "socket"

local CTIME = helpers.CTIME
local SCRIPT = "scripts/handle.lua"
local SLOW = "spec/fixtures/slow_timestamp.lua"
local LIFECYCLE = "spec/fixtures/lifecycle_log.lua"
local BIG = "spec/fixtures/big_replies.lua"
local SLOWDOWN = helpers.sanitize and 3 or 1
local TIMEOUT = 10 * SLOWDOWN

local function signal(srv, sig)
    os.execute(("kill -%s %d"):format(sig, srv.pid))
end

-- Whether a TCP connect to 127.0.0.1:port is refused.
local function refused(port)
    local c = assert(socket.tcp())
    c:settimeout(1)
    local ok, err = c:connect("127.0.0.1", port)
    c:close()
    return not ok and err == "connection refused"
end

-- Reads to the end of c and fails unless the server closed it in order
-- (FIN, not RST) with nothing more to say.
local function assert_eof(c)
    local data, err, partial = c:receive("*a")
    assert.equal("", data or partial)
    assert.is_true(err == nil or err == "closed",
                   "not an orderly close: " .. tostring(err))
end

for _, sig in ipairs({ "TERM", "INT" }) do
    describe("SIG" .. sig, function()
        it("lets a client get every reply to lines it sent before the signal",
           function()
            -- slow_timestamp spends 0.5 ms a line, so most lines are still
            -- unanswered when the signal arrives
            local N = 2000
            local srv, c = helpers.start_and_connect({ script = SLOW },
                                                     30 * SLOWDOWN)
            assert(c:send(helpers.numbered_lines("before %d\n", N)))
            signal(srv, sig)
            local got, wrong, err = 0, nil, nil
            for i = 1, N do
                local reply, e = c:receive("*l")
                if not reply then
                    err = e
                    break
                end
                got = got + 1
                if not reply:match("^" .. CTIME .. "before " .. i .. "$") then
                    wrong = wrong or ("%d: %s"):format(i, reply)
                end
            end
            assert.equal(N, got, err)
            assert.is_nil(wrong)
            assert_eof(c)
            assert.equal(0, srv:wait(TIMEOUT))
        end)

        it("answers lines that wait behind a full output queue", function()
            -- big_replies answers each line with 64 KiB, so the client, reading
            -- nothing until after the signal, leaves the server with a full
            -- output queue, reading paused and lines not yet read; lines
            -- of 1 KiB fill the 16 KiB reads exactly, with nothing left over
            local N = 100
            local srv, c = helpers.start_and_connect({ script = BIG }, TIMEOUT)
            local lines = {}
            for i = 1, N do
                local head = ("line %d "):format(i)
                lines[i] = head .. ("-"):rep(1023 - #head) .. "\n"
            end
            assert(c:send(table.concat(lines)))
            helpers.sleep(0.5)
            signal(srv, sig)
            helpers.sleep(0.5)
            for i = 1, N do
                local reply, err = c:receive("*l")
                assert(reply, ("reply %d of %d: %s"):format(i, N, err))
                assert.equal(lines[i]:sub(1, -2) .. " " .. ("x"):rep(65536),
                             reply)
            end
            assert_eof(c)
            assert.equal(0, srv:wait(TIMEOUT))
        end)

        it("lets a client finish a line it started before the signal",
           function()
            local srv, c = helpers.start_and_connect({ script = SCRIPT, args = {
                "--shutdown-timeout", tostring(5 * SLOWDOWN) } }, TIMEOUT)
            assert(c:send("half a"))
            helpers.wait_read(srv.port)     -- "half a" is in its buffer
            signal(srv, sig)
            -- the rest of the line comes after the stop began
            helpers.wait_until(function()
                return srv:log():find("stopping: no new connections", 1, true)
            end, 5, "the graceful stop to begin")
            assert(c:send(" line\n"))
            local reply = assert(c:receive("*l"))
            assert.matches("^" .. CTIME .. "half a line$", reply)
            assert_eof(c)
            assert.equal(0, srv:wait(TIMEOUT))
        end)

        it("exits 0 at once when the only client is idle", function()
            local srv, c = helpers.start_and_connect({ script = SCRIPT, args = {
                "--shutdown-timeout", "1" } }, TIMEOUT)
            assert(c:send("hello\n"))
            assert(c:receive("*l"))
            local start = socket.gettime()
            signal(srv, sig)
            assert.equal(0, srv:wait(TIMEOUT))
            local took = socket.gettime() - start
            assert.is_true(took < 3 * SLOWDOWN,
                           ("exit took %.2f s"):format(took))
            -- the idle client sees an orderly close
            assert_eof(c)
        end)

        it("closes an unfinished connection after --shutdown-timeout",
           function()
            local srv, c = helpers.start_and_connect({ script = SCRIPT, args = {
                "--shutdown-timeout", "1" } }, TIMEOUT)
            assert(c:send("a line that never ends"))
            helpers.wait_read(srv.port)
            local start = socket.gettime()
            signal(srv, sig)
            helpers.sleep(0.5)
            assert.is_true(srv:alive(), "did not wait for the connection")
            assert.equal(0, srv:wait(TIMEOUT))
            local took = socket.gettime() - start
            assert.is_true(took >= 0.9 and took < 3 * SLOWDOWN,
                           ("exit took %.2f s"):format(took))
            assert_eof(c)
        end)

        it("refuses new connections while it finishes open ones", function()
            local srv, c = helpers.start_and_connect({ script = SCRIPT, args = {
                "--shutdown-timeout", tostring(3 * SLOWDOWN) } }, TIMEOUT)
            assert(c:send("unfinished"))
            helpers.wait_read(srv.port)
            signal(srv, sig)
            local port = srv.port
            assert.truthy(helpers.wait_for(function()
                return refused(port)
            end, 2 * SLOWDOWN), "a new connection was accepted")
            assert.is_true(srv:alive())
            -- the open one is still served meanwhile
            assert(c:send(" until now\n"))
            assert.matches("^" .. CTIME .. "unfinished until now$",
                           assert(c:receive("*l")))
            assert.equal(0, srv:wait(TIMEOUT))
        end)

        it("calls on_stop once and closes connections as \"shutdown\"",
           function()
            local srv, c = helpers.start_and_connect({ script = LIFECYCLE },
                                                     TIMEOUT)
            assert(c:send("hi\n"))
            assert(c:receive("*l"))
            signal(srv, sig)
            assert.equal(0, srv:wait(TIMEOUT))
            local log = srv:log()
            assert.equal(1, helpers.count(log, "lifecycle_log: on_stop"), log)
            assert.equal(1, helpers.count(log, "reason shutdown"), log)
        end)
    end)
end

-- spec/helpers.lua: start the real luaserv binary and talk to it.
-- Servers listen on 127.0.0.1:0; the real port comes from the ready line.
-- Every server started here is stopped by PID: at the end of the test that
-- started it, by stop(), or, as a last resort, when the busted process exits.
local socket = require "socket"

local helpers = {}

local BUILD = os.getenv("LUASERV_BUILD") or "build"
helpers.build = BUILD
helpers.luaserv = BUILD .. "/luaserv"
helpers.cli = BUILD .. "/luaserv-cli"
helpers.sanitize = BUILD:find("asan", 1, true) ~= nil

local running = {}   -- pid -> server, for the exit-time sweep

local function shell_quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
helpers.shell_quote = shell_quote

local function read_file(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local s = f:read("a")
    f:close()
    return s
end
helpers.read_file = read_file

function helpers.write_file(path, data)
    local f = assert(io.open(path, "wb"))
    f:write(data)
    f:close()
    return path
end

function helpers.tmpname(suffix)
    local p = os.tmpname()
    os.remove(p)
    return p .. (suffix or "")
end

function helpers.sleep(s) socket.sleep(s) end
function helpers.now() return socket.gettime() end

-- Waits until fn() returns a true value or timeout seconds pass.
function helpers.wait_for(fn, timeout)
    local deadline = socket.gettime() + (timeout or 5)
    repeat
        local v = fn()
        if v then return v end
        socket.sleep(0.01)
    until socket.gettime() > deadline
    return nil
end

-- Like wait_for, for a condition a test cannot go on without: returns
-- fn()'s true value, or raises "timed out after N s waiting for <what>"
-- at the caller. A timing-dependent check waits for its condition with a
-- bound like this, never a fixed sleep followed by a count.
function helpers.wait_until(fn, timeout, what)
    timeout = timeout or 5
    local v = helpers.wait_for(fn, timeout)
    if not v then
        error(("timed out after %g s waiting for %s")
              :format(timeout, what or "a condition"), 2)
    end
    return v
end

-- The bytes the kernel holds unread on the server's side of local port,
-- from /proc/net: for proto "tcp" (the default) the established
-- connections to it, accepted or still in the backlog; for "udp" the
-- sockets bound to it. 0 once the server has read everything sent to it.
-- A test that needs the server to have its input in hand (before a
-- signal, a hang-up, more input) waits for this instead of sleeping.
function helpers.unread(port, proto)
    proto = proto or "tcp"
    local total = 0
    for _, path in ipairs({ "/proc/net/" .. proto, "/proc/net/" .. proto .. "6" }) do
        local text = read_file(path) or ""
        for lport, st, rx in text:gmatch(
                "\n%s*%d+: %x+:(%x+) %x+:%x+ (%x+) %x+:(%x+)") do
            if tonumber(lport, 16) == port and (proto == "udp" or st == "01") then
                total = total + tonumber(rx, 16)
            end
        end
    end
    return total
end

-- Waits until the server on port has read all its input (see unread),
-- for timeout seconds at most (default 5); raises if it has not.
function helpers.wait_read(port, timeout, proto)
    return helpers.wait_until(function()
        return helpers.unread(port, proto) == 0
    end, timeout, "the server to read its input")
end

local Server = {}
Server.__index = Server

-- The server's log (stdout and stderr) so far.
function Server:log()
    return read_file(self.log_path) or ""
end

function Server:alive()
    return os.execute("kill -0 " .. self.pid .. " 2>/dev/null") == true
end

-- Resident set size in KiB, from /proc.
function Server:rss_kib()
    local s = read_file("/proc/" .. self.pid .. "/status") or ""
    return tonumber(s:match("VmRSS:%s*(%d+)"))
end

-- Sends sig (default TERM) and waits for the exit; returns the status.
function Server:stop(sig, timeout)
    if self.status then return self.status end
    os.execute(("kill -%s %d 2>/dev/null"):format(sig or "TERM", self.pid))
    return self:wait(timeout)
end

-- Waits for the process to exit (killing it after timeout); returns the
-- exit status (128 + signal when a signal ended it).
function Server:wait(timeout)
    if self.status then return self.status end
    local rc = helpers.wait_for(function() return read_file(self.rc_path) end,
                                timeout or 15)
    if not rc then
        os.execute("kill -KILL " .. self.pid .. " 2>/dev/null")
        rc = helpers.wait_for(function() return read_file(self.rc_path) end, 5)
    end
    running[self.pid] = nil
    self.status = tonumber(rc) or -1
    os.remove(self.rc_path)
    os.remove(self.pid_path)
    return self.status
end

-- Cleanups of the running test, run when it ends (see helpers.defer).
local in_test = false
local cleanups = {}
do
    local ok, busted = pcall(require, "busted")
    if ok and type(busted) == "table" and busted.subscribe then
        busted.subscribe({ "test", "start" }, function()
            in_test = true
            return nil, true
        end)
        busted.subscribe({ "test", "end" }, function()
            in_test = false
            while #cleanups > 0 do pcall(table.remove(cleanups)) end
            return nil, true
        end)
    end
end

-- Runs fn when the test that calls this ends, passed or not: after the
-- test's body and its finally(), last registered first; an error in one
-- cleanup does not stop the others. busted keeps only the last finally()
-- a test registers, and a module cannot see finally() at all, so specs
-- and helpers register cleanups here. Raises when called outside a test
-- (in lazy_setup, say).
function helpers.defer(fn)
    if not in_test then error("helpers.defer called outside a test", 2) end
    cleanups[#cleanups + 1] = fn
end

-- Whether process pid runs (a zombie, or no such process, does not).
function helpers.pid_running(pid)
    local stat = read_file("/proc/" .. pid .. "/stat")
    return stat ~= nil and stat:match("^%d+ %b() (%a)") ~= "Z"
end

-- For a test that upgrades a server running spec/fixtures/health_handler.lua
-- and holds the new generation in on_load: returns the hold file's path
-- (the new generation waits while it exists; the file is not made here),
-- the shell prefix that passes it (HEALTH_HOLD_LOAD=...) for
-- start_server's shell option, and a table whose pid field the test sets
-- to the new generation's pid. When the test ends the file is removed and
-- that pid, if it still runs, killed, so a failed test leaves nothing.
function helpers.hold_upgrade()
    local hold = helpers.tmpname(".hold")
    local new = {}
    helpers.defer(function()
        os.remove(hold)
        if new.pid and helpers.pid_running(new.pid) then
            os.execute("kill -KILL " .. new.pid .. " 2>/dev/null")
        end
    end)
    return hold, "HEALTH_HOLD_LOAD=" .. shell_quote(hold) .. " ", new
end

-- Closes every socket in socks when the test ends. socks is read then, so
-- sockets added to it later are closed too, and ones already closed are
-- harmless.
function helpers.close_at_end(socks)
    helpers.defer(function()
        for _, s in pairs(socks) do s:close() end
    end)
end

-- The listeners a server announced in log (its stdout, or stdout and
-- stderr together): { { kind = "tcp", addr = "127.0.0.1:4242" }, ... }, in
-- order, from the ready lines, text ("luaserv: listening on tcp ADDR") or
-- JSON ({..."msg":"listening","proto":"tcp","addr":"ADDR"}).
function helpers.ready(log)
    local out = {}
    for line in log:gmatch("[^\n]*\n") do
        local kind, addr = line:match("^luaserv: listening on (%S+) ([^\n]*)\n")
        if not kind and line:find('"msg":"listening"', 1, true) then
            kind = line:match('"proto":"(%a+)"')
            addr = line:match('"addr":"(.-)"}\n$')
            addr = addr and addr:gsub('\\(.)', "%1")
        end
        if kind then out[#out + 1] = { kind = kind, addr = addr } end
    end
    return out
end

-- Starts luaserv. opts:
--   script = path, or source = Lua text (written to a temp file)
--   listen = { "127.0.0.1:0", "udp://127.0.0.1:0", ... } (default TCP)
--   args = { extra flags }
--   expect_ready = false for a server meant to fail at start
--   shell = "ulimit -n 64; " runs shell text before the binary
--   stderr = path sends stderr there, so :log() holds stdout alone
--   bin = path runs that binary instead of helpers.luaserv
--   no_finally = true keeps a server started inside a test running after
--     it (stop it yourself); servers started outside tests (lazy_setup)
--     are always yours to stop
-- Returns a server with .pid, .ports (in listen order), .port (first),
-- .addrs, :log(), :stop(), :wait(), :rss_kib().
function helpers.start_server(opts)
    opts = opts or {}
    local script = opts.script
    if opts.source then
        script = helpers.write_file(helpers.tmpname(".lua"), opts.source)
    end
    local listen = opts.listen or { "127.0.0.1:0" }
    local argv = { shell_quote(opts.bin or helpers.luaserv) }
    for _, l in ipairs(listen) do
        argv[#argv + 1] = "-l " .. shell_quote(l)
    end
    for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = shell_quote(a) end
    if script then argv[#argv + 1] = shell_quote(script) end
    local base = helpers.tmpname()
    local log_path, pid_path, rc_path = base .. ".log", base .. ".pid",
                                        base .. ".rc"
    -- A detached shell runs the server and records its pid and exit
    -- status in files: nothing here holds a pipe the server could block.
    local inner = (opts.shell or "") .. table.concat(argv, " ") ..
        " >" .. shell_quote(log_path) ..
        (opts.stderr and " 2>" .. shell_quote(opts.stderr) or " 2>&1") ..
        " </dev/null & echo $! >" ..
        shell_quote(pid_path) .. "; wait $!; echo $? >" ..
        shell_quote(rc_path .. ".tmp") .. "; mv " ..
        shell_quote(rc_path .. ".tmp") .. " " .. shell_quote(rc_path)
    os.execute("sh -c " .. shell_quote(inner) .. " >/dev/null 2>&1 &")
    local pid = tonumber(helpers.wait_for(function()
        local p = read_file(pid_path)
        return p and p:match("%d+")
    end, 10))
    assert(pid, "could not start luaserv")
    local srv = setmetatable({ pid = pid, log_path = log_path,
                               pid_path = pid_path, rc_path = rc_path,
                               script = script, ports = {}, addrs = {} },
                             Server)
    running[pid] = srv
    if in_test and not opts.no_finally then
        helpers.defer(function() srv:stop("KILL", 5) end)
    end
    if opts.expect_ready == false then return srv end
    local ok = helpers.wait_for(function()
        return #helpers.ready(srv:log()) >= #listen or read_file(rc_path)
    end, 10)
    local log = srv:log()
    for _, a in ipairs(helpers.ready(log)) do
        srv.addrs[#srv.addrs + 1] = a
        srv.ports[#srv.ports + 1] = tonumber(a.addr:match(":(%d+)$"))
    end
    if not ok or #srv.addrs < #listen then
        srv:stop("KILL", 2)
        error("luaserv did not start:\n" .. log, 2)
    end
    srv.port = srv.ports[1]
    return srv
end

-- Runs luaserv to completion with the given argument string; returns the
-- exit status and its output.
function helpers.run(bin, args, stdin)
    local out = helpers.tmpname(".out")
    local cmd = shell_quote(bin) .. " " .. args .. " >" .. shell_quote(out) ..
                " 2>&1"
    if stdin then
        local inp = helpers.write_file(helpers.tmpname(".in"), stdin)
        cmd = cmd .. " <" .. shell_quote(inp)
    else
        cmd = cmd .. " </dev/null"
    end
    local _, _, status = os.execute(cmd)
    local text = read_file(out) or ""
    os.remove(out)
    return status, text
end

-- Runs shell text with stdin from /dev/null; returns its exit status and
-- its output (stdout and stderr together).
function helpers.sh(cmd)
    local out = helpers.tmpname(".out")
    local _, _, status = os.execute("(" .. cmd .. ") >" .. shell_quote(out) ..
                                    " 2>&1 </dev/null")
    local text = read_file(out) or ""
    os.remove(out)
    return status, text
end

-- The RESP encoding of one command: resp("SET", "k", "v").
function helpers.resp(...)
    local parts = { "*" .. select("#", ...) .. "\r\n" }
    for _, a in ipairs({ ... }) do
        parts[#parts + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n"
    end
    return table.concat(parts)
end

-- A TCP client connected to the server (luasocket), with a timeout.
function helpers.connect(port, timeout)
    local c = assert(socket.tcp())
    c:settimeout(timeout or 5)
    assert(c:connect("127.0.0.1", port))
    return c
end

-- Starts a server (helpers.start_server(opts)) that is stopped with TERM,
-- not KILL, when the test ends, pass or fail, so that a test can check
-- for a clean exit (srv:stop() returns 0). Call it inside a test.
function helpers.serve(opts)
    local srv = helpers.start_server(opts)
    helpers.defer(function() srv:stop() end)
    return srv
end

-- Starts a server (helpers.start_server(opts)) and connects a client to
-- it with the given timeout; returns both. Inside a test, the client is
-- closed and then the server stopped when the test ends.
function helpers.start_and_connect(opts, timeout)
    local srv = helpers.start_server(opts)
    local c = helpers.connect(srv.port, timeout)
    if in_test then helpers.close_at_end({ c }) end
    return srv, c
end

-- Reads until the peer closes (or the read fails), then closes c: the
-- connection is over either way. Returns the bytes that arrived and the
-- error that ended the read: "closed" when the peer closed, "timeout" when
-- it went quiet, "too much data" after 100,000 reads without an end.
function helpers.read_to_close(c)
    local parts = {}
    local err = "too much data"
    for _ = 1, 100000 do
        local data, e, partial = c:receive(8192)
        if not data then
            parts[#parts + 1] = partial
            err = e
            break
        end
        parts[#parts + 1] = data
    end
    c:close()
    return table.concat(parts), err
end

-- Reads until the peer closes or goes quiet, then closes c; returns what
-- arrived.
function helpers.receive_all(c)
    return (helpers.read_to_close(c))
end

-- Sends data from c while reading what comes back, until want bytes have
-- arrived (or, when want is a function, until want(what arrived) is
-- true), the peer closed, or timeout seconds passed. c is non-blocking
-- meanwhile and gets a timeout of after (default 5) seconds back. Returns
-- what arrived and how many bytes of data were sent.
function helpers.pump(c, data, want, timeout, after)
    local got, n, sent = {}, 0, 0
    local deadline = socket.gettime() + timeout
    local done = type(want) ~= "function" and want <= 0
    c:settimeout(0)
    while not done and socket.gettime() < deadline do
        if sent < #data then
            local last, _, partial = c:send(data, sent + 1)
            sent = last or partial or sent
        end
        local chunk, err, partial = c:receive(65536)
        chunk = chunk or partial
        if chunk and #chunk > 0 then
            got[#got + 1] = chunk
            n = n + #chunk
            if type(want) == "function" then done = want(table.concat(got))
            else done = n >= want end
        elseif err == "closed" then
            break
        else
            socket.select({ c }, sent < #data and { c } or nil, 0.05)
        end
    end
    c:settimeout(after or 5)
    return table.concat(got), sent
end

-- Sends what (a datagram) to the server's second listener, a UDP one
-- (srv.ports[2]), and returns its "key=value ..." answer as a table of
-- numbers. Raises when no answer comes within 5 s.
function helpers.probe(srv, what)
    local u = assert(socket.udp())
    u:settimeout(5)
    assert(u:setpeername("127.0.0.1", srv.ports[2]))
    assert(u:send(what))
    local reply = assert(u:receive())
    u:close()
    local t = {}
    for k, v in reply:gmatch("([%w_]+)=(%d+)") do t[k] = tonumber(v) end
    return t
end

-- The pids of pid's children (a master's workers), sorted.
function helpers.children(pid)
    local p = io.popen("pgrep -P " .. pid)
    local out = {}
    for line in p:lines() do out[#out + 1] = tonumber(line) end
    p:close()
    table.sort(out)
    return out
end

-- A TCP port on 127.0.0.1 that nothing listens on: bound, then closed.
function helpers.dead_port()
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    return tonumber(port)
end

-- Reads one line with its terminator kept ("...\r\n" stays as is), which
-- luasocket's "*l" would strip. Returns nil, err on timeout or close.
function helpers.read_line(c)
    local parts = {}
    while true do
        local ch, err = c:receive(1)
        if not ch then return nil, err, table.concat(parts) end
        parts[#parts + 1] = ch
        if ch == "\n" then return table.concat(parts) end
    end
end

-- Sends line (a "\n" is added) and returns the reply line without its
-- terminator. Raises when the send or the read fails.
function helpers.command(c, line)
    assert(c:send(line .. "\n"))
    return assert(c:receive("*l"))
end

-- The counters of a fixture that answers "stats" with key=value pairs
-- (handler_commands, failing_handler), as a table of numbers.
function helpers.stats(c)
    local t = {}
    for k, v in helpers.command(c, "stats"):gmatch("(%S+)=(%S+)") do
        t[k] = tonumber(v)
    end
    return t
end

-- The close reason of conn id, asked on c of a fixture that answers
-- "reason ID" with the reason or "none" (handler_commands,
-- failing_handler). Asks again until on_close has run, for 10 s at most. Takes ownership of c and
-- closes it. Returns the reason, or nil when none came.
function helpers.reason_of(c, id)
    local r = helpers.wait_for(function()
        local v = helpers.command(c, "reason " .. id)
        return v ~= "none" and v
    end, 10)
    c:close()
    return r
end

-- How many times plain (not a pattern) occurs in text.
function helpers.count(text, plain)
    local n, init = 0, 1
    while true do
        local i, j = text:find(plain, init, true)
        if not i then return n end
        n, init = n + 1, j + 1
    end
end

-- The number of the last line of the file at path that holds text (plain):
-- the last, so that a comment quoting the line further up does not count.
-- Raises when no line holds it.
function helpers.line_of(path, text)
    local line
    local n = 0
    for l in io.lines(path) do
        n = n + 1
        if l:find(text, 1, true) then line = n end
    end
    if not line then error("no '" .. text .. "' in " .. path, 2) end
    return line
end

-- fmt formatted with each of 1 to n, joined: numbered_lines("line %d\n", 2)
-- is "line 1\nline 2\n", n lines to send in one write.
function helpers.numbered_lines(fmt, n)
    local lines = {}
    for i = 1, n do lines[i] = fmt:format(i) end
    return table.concat(lines)
end

-- The pattern of a timestamp reply: "[Tue Apr  8 20:55:49 2006] ".
helpers.CTIME = "%[%u%l%l %u%l%l [ 123]%d %d%d:%d%d:%d%d %d%d%d%d%] "

-- Kill whatever a failed spec left running when busted exits.
helpers._sweeper = setmetatable({}, { __gc = function()
    for pid in pairs(running) do
        os.execute("kill -KILL " .. pid .. " 2>/dev/null")
    end
end })

return helpers

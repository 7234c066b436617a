-- spec/balancer.lua: real load balancers (haproxy, nginx's stream module)
-- and redis-server for the specs that put luaserv instances behind them.
--
-- Every process started here runs in its own temporary folder (its
-- config, log, pid and sockets), listens where no other process can take
-- the port first (the balancers' front sockets come from
-- spec/fixtures/listen_exec.py, redis-server listens on a unix socket or
-- on a port it is retried on), and is stopped by PID: when the test that
-- started it ends (pass or fail), by :stop(), or as a last resort when the
-- busted process exits. Every wait is bounded.
local helpers = require "helpers"
local socket = require "socket"
local unix = require "socket.unix"

local balancer = {}

local shell_quote, read_file = helpers.shell_quote, helpers.read_file

-- Whether program is on the PATH.
function balancer.have(program)
    return os.execute("command -v " .. program .. " >/dev/null 2>&1") == true
end

-- The nginx module that gives it `stream {}`, as Debian installs it.
balancer.NGINX_STREAM = "/usr/lib/nginx/modules/ngx_stream_module.so"

local running = {}   -- pid -> process, for the exit-time sweep

-- The folder busted runs in (the repository root): processes run in their
-- own folders, so paths into the tree are made absolute.
local cwd
do
    local f = io.popen("pwd")
    cwd = f:read("*l")
    f:close()
end

local dirs = {}      -- temporary folders, removed when busted exits

-- A fresh temporary folder, removed when busted exits (processes' logs
-- stay readable after they stop, until then).
local function tmpdir()
    local p = helpers.tmpname(".lb")
    assert(os.execute("mkdir -m 700 " .. shell_quote(p)))
    dirs[#dirs + 1] = p
    return p
end
balancer.tmpdir = tmpdir

-- text with every {{name}} replaced by tostring(vars.name); an unknown
-- name raises, so a typo in a config template cannot go unnoticed.
function balancer.fill(text, vars)
    return (text:gsub("{{([%w_]+)}}", function(name)
        local v = vars[name]
        if v == nil then error("no value for {{" .. name .. "}}", 3) end
        return tostring(v)
    end))
end

local Proc = {}
Proc.__index = Proc

-- The process's output so far (stdout and stderr).
function Proc:log()
    return read_file(self.log_path) or ""
end

function Proc:alive()
    return self.status == nil and read_file(self.rc_path) == nil and
           os.execute("kill -0 " .. self.pid .. " 2>/dev/null") == true
end

-- The process's children (nginx's workers): { { pid =, comm = }, ... },
-- comm from /proc, so a pid reused by then is not taken for one.
function Proc:children()
    local kids = {}
    for _, k in ipairs(helpers.children(self.pid)) do
        local comm = read_file("/proc/" .. k .. "/comm")
        if comm then kids[#kids + 1] = { pid = k, comm = comm } end
    end
    return kids
end

-- KILLs those of kids (from :children()) that still run as they did.
local function kill_children(kids)
    for _, k in ipairs(kids) do
        if read_file("/proc/" .. k.pid .. "/comm") == k.comm then
            os.execute("kill -KILL " .. k.pid .. " 2>/dev/null")
        end
    end
end

-- Sends sig (default TERM), waits up to timeout seconds (default 10) for
-- the exit, then KILLs it; any child it had when signalled and that
-- outlived it is KILLed too (by PID). Returns the exit status (128 +
-- signal when a signal ended it).
function Proc:stop(sig, timeout)
    if self.status then return self.status end
    local kids = self:children()
    os.execute(("kill -%s %d 2>/dev/null"):format(sig or "TERM", self.pid))
    local rc = helpers.wait_for(function() return read_file(self.rc_path) end,
                                timeout or 10)
    if not rc then
        os.execute("kill -KILL " .. self.pid .. " 2>/dev/null")
        rc = helpers.wait_for(function() return read_file(self.rc_path) end, 5)
    end
    kill_children(kids)
    running[self.pid] = nil
    self.status = tonumber(rc) or -1
    return self.status
end

-- Runs the shell words argv (already quoted) detached, in dir, with its
-- output to dir/NAME.log, its pid and exit status recorded in files, as
-- helpers.start_server runs luaserv: nothing here holds a pipe the process
-- could block on. Stopped when the running test ends (if inside one).
local function spawn(name, dir, argv)
    local base = dir .. "/" .. name
    local p = setmetatable({ name = name, dir = dir, log_path = base .. ".log",
                             pid_path = base .. ".pid",
                             rc_path = base .. ".rc" }, Proc)
    local inner = "cd " .. shell_quote(dir) .. " && " ..
        table.concat(argv, " ") .. " >" .. shell_quote(p.log_path) ..
        " 2>&1 </dev/null & echo $! >" .. shell_quote(p.pid_path) ..
        "; wait $!; echo $? >" .. shell_quote(p.rc_path .. ".tmp") ..
        "; mv " .. shell_quote(p.rc_path .. ".tmp") .. " " ..
        shell_quote(p.rc_path)
    os.execute("sh -c " .. shell_quote(inner) .. " >/dev/null 2>&1 &")
    p.pid = tonumber(helpers.wait_for(function()
        local s = read_file(p.pid_path)
        return s and s:match("%d+")
    end, 10))
    assert(p.pid, "could not start " .. name)
    running[p.pid] = p
    -- inside a test, stopped when it ends; outside one (lazy_setup), by
    -- the caller or the sweep
    pcall(helpers.defer, function() p:stop("KILL", 5) end)
    return p
end

-- Raises with the process's log when it is not running.
function Proc:check(what)
    if not self:alive() then
        error(("%s exited (%s) %s:\n%s"):format(self.name,
              tostring(read_file(self.rc_path)), what or "", self:log()), 2)
    end
end

-- Runs the balancer command (a list of words, unquoted) through
-- listen_exec.py, which binds 127.0.0.1:0 (host:0 when given), writes the
-- port, fills @PORT@ into dir/template.conf to make dir/CONFIG, and execs
-- the command with the socket as fd 3. Returns the process, .port set.
local function spawn_front(name, dir, config, command, host)
    local argv = { host and "LISTEN_HOST=" .. shell_quote(host) or "",
                   "/usr/bin/python3",
                   shell_quote(cwd .. "/spec/fixtures/listen_exec.py"),
                   shell_quote(dir .. "/port"),
                   shell_quote(dir .. "/template.conf"),
                   shell_quote(dir .. "/" .. config) }
    for _, w in ipairs(command) do argv[#argv + 1] = shell_quote(w) end
    local p = spawn(name, dir, argv)
    p.port = tonumber(helpers.wait_for(function()
        local s = read_file(dir .. "/port")
        return s and s:match("%d+") or (not p:alive() and "0")
    end, 10))
    if not p.port or p.port == 0 then
        p:stop("KILL", 2)
        error(name .. " did not start:\n" .. p:log(), 2)
    end
    return p
end

-- HAProxy --------------------------------------------------------------

-- Starts haproxy in the foreground (-db) on config, a template whose
-- frontend binds `fd@3` (the front socket on 127.0.0.1, or on host when
-- given, "::1" say; its port is .port) and in which {{dir}} is the
-- process's folder and other {{names}} come from vars. The global section
-- should hold `stats socket {{dir}}/admin.sock level admin` for :stat().
-- Waits until haproxy answers on that socket.
function balancer.haproxy(config, vars, host)
    local dir = tmpdir()
    vars = setmetatable({ dir = dir }, { __index = vars or {} })
    helpers.write_file(dir .. "/template.conf", balancer.fill(config, vars))
    local p = spawn_front("haproxy", dir, "haproxy.cfg",
                          { "haproxy", "-db", "-f", dir .. "/haproxy.cfg" },
                          host)
    p.admin = dir .. "/admin.sock"
    if config:find("admin.sock", 1, true) then
        local ok = helpers.wait_for(function()
            return p:command("show info") ~= nil or not p:alive()
        end, 10)
        p:check("at start")
        assert(ok, "haproxy's admin socket never answered:\n" .. p:log())
    end
    return p
end

-- Sends one command to haproxy's admin socket; returns the answer, or
-- nil when the socket is not there (yet).
function Proc:command(line)
    local c = unix.stream()
    c:settimeout(2)
    if not c:connect(self.admin) then
        c:close()
        return nil
    end
    c:send(line .. "\n")
    local parts = {}
    for _ = 1, 10000 do
        local data, err, partial = c:receive(4096)
        parts[#parts + 1] = data or partial
        if not data then
            if err ~= "closed" then c:close() return nil end
            break
        end
    end
    c:close()
    return table.concat(parts)
end

-- The state of every server of backend be, from `show stat`:
-- { name = "UP" | "DOWN" | "MAINT" | "UP 1/3" ..., ... }, and the check
-- status of each as a second table ({ name = "L7OK" | "L7STS" ... }).
function Proc:stat(be)
    local text = self:command("show stat") or ""
    local states, checks = {}, {}
    local cols
    for line in text:gmatch("[^\n]+") do
        if line:sub(1, 2) == "# " then
            cols = {}
            local i = 0
            for name in (line:sub(3) .. ","):gmatch("([^,]*),") do
                i = i + 1
                cols[name] = i
            end
        elseif cols then
            local f = {}
            for v in (line .. ","):gmatch("([^,]*),") do f[#f + 1] = v end
            if f[1] == be and f[2] ~= "BACKEND" and f[2] ~= "FRONTEND" then
                states[f[2]] = f[cols.status]
                checks[f[2]] = f[cols.check_status]
            end
        end
    end
    return states, checks
end

-- Waits until server name of backend be is in state (a pattern matched
-- against haproxy's status, "^UP" or "^DOWN"); raises after timeout.
function Proc:wait_state(be, name, state, timeout)
    return helpers.wait_until(function()
        local st = self:stat(be)[name]
        return st and st:find(state) ~= nil
    end, timeout or 10, ("haproxy server %s/%s %s"):format(be, name, state))
end

-- nginx ------------------------------------------------------------------

-- Whether this nginx can load the stream module: nil, or the reason not.
function balancer.nginx_missing()
    if not balancer.have("nginx") then
        return "nginx is not installed: apt-get install nginx libnginx-mod-stream"
    end
    if not read_file(balancer.NGINX_STREAM) then
        return "nginx's stream module is not installed: apt-get install libnginx-mod-stream"
    end
    local dir = tmpdir()
    local conf = ("load_module %s;\npid %s/nginx.pid;\nerror_log stderr;\n" ..
                  "events {}\nstream {}\n"):format(balancer.NGINX_STREAM, dir)
    helpers.write_file(dir .. "/t.conf", conf)
    local status, out = helpers.sh("nginx -t -p " .. shell_quote(dir) ..
                                   " -e stderr -c " ..
                                   shell_quote(dir .. "/t.conf"))
    os.execute("rm -rf " .. shell_quote(dir))
    if status ~= 0 then return "nginx cannot load its stream module: " .. out end
    return nil
end

-- Starts nginx in the foreground (daemon off, with its master: nginx
-- crashes on inherited sockets without it) on config, a template that
-- listens on `127.0.0.1:@PORT@` (the front socket, inherited: .port), with
-- {{dir}} and {{stream_module}} filled in and other {{names}} from vars.
-- Waits until its worker runs.
function balancer.nginx(config, vars)
    local dir = tmpdir()
    vars = setmetatable({ dir = dir, stream_module = balancer.NGINX_STREAM },
                        { __index = vars or {} })
    helpers.write_file(dir .. "/template.conf", balancer.fill(config, vars))
    local p = spawn_front("nginx", dir, "nginx.conf",
                          { "nginx", "-p", dir, "-e", "stderr",
                            "-c", dir .. "/nginx.conf" })
    local ok = helpers.wait_for(function()
        return p:log():find("start worker process %d+") or not p:alive()
    end, 10)
    p:check("at start")
    assert(ok, "nginx did not start its worker:\n" .. p:log())
    return p
end

-- redis-server -------------------------------------------------------------

-- Whether a RESP PING on the connected socket c is answered.
local function pings(c)
    c:settimeout(0.5)
    c:send("PING\r\n")
    local line = c:receive("*l")
    c:close()
    return line ~= nil and (line:sub(1, 1) == "+" or line:sub(1, 1) == "-")
end

-- Starts redis-server without persistence. opts.tcp: on a TCP port of
-- 127.0.0.1 too (tried on up to 5 free ports, since redis-server cannot
-- be handed a socket: .port); always on a unix socket (.path, and .host
-- "unix:PATH" as luaserv.redis names it). Waits until it answers PING.
function balancer.redis(opts)
    opts = opts or {}
    for _ = 1, 5 do
        local dir = tmpdir()
        local port = opts.tcp and helpers.dead_port() or 0
        local path = dir .. "/redis.sock"
        local p = spawn("redis", dir, {
            "redis-server", "--port", tostring(port), "--bind", "127.0.0.1",
            "--unixsocket", shell_quote(path), "--unixsocketperm", "700",
            "--save", "''", "--appendonly", "no", "--dir", shell_quote(dir) })
        p.path, p.host = path, "unix:" .. path
        p.port = opts.tcp and port or nil
        local up = helpers.wait_for(function()
            if not p:alive() then return "exited" end
            local c = unix.stream()
            if not c:connect(path) then c:close() return false end
            if not pings(c) then return false end
            if port == 0 then return "up" end
            c = socket.tcp()
            c:settimeout(0.5)
            if not c:connect("127.0.0.1", port) then c:close() return false end
            return pings(c) and "up"
        end, 10)
        if up == "up" then return p end
        p:stop("KILL", 2)
    end
    error("redis-server did not start")
end

-- One command to this redis from the spec (RESP over its unix socket);
-- returns the reply: a string for +status and $bulk, a number for
-- :integer, false for a null bulk, or nil and the text of an -error.
function Proc:redis(...)
    local c = unix.stream()
    c:settimeout(5)
    assert(c:connect(self.path))
    c:send(helpers.resp(...))
    local line = assert(c:receive("*l"))
    local kind, rest = line:sub(1, 1), line:sub(2)
    local value, err
    if kind == "+" then value = rest
    elseif kind == ":" then value = tonumber(rest)
    elseif kind == "-" then err = rest
    elseif kind == "$" then
        local n = tonumber(rest)
        value = n >= 0 and assert(c:receive(n + 2)):sub(1, n)
    else error("unexpected reply " .. line) end
    c:close()
    return value, err
end

-- luaserv behind a balancer ------------------------------------------------

-- A TCP client of 127.0.0.1:port whose own address is src (another
-- loopback address, 127.0.0.2, ...: every 127/8 address is local on
-- Linux), so that a server behind a balancer can tell it from the
-- balancer, whose connections come from 127.0.0.1. With src "::1", an
-- IPv6 client of [::1]:port. Returns the client, or nil and the error.
function balancer.client(port, src, timeout)
    src = src or "127.0.0.1"
    local v6 = src:find(":", 1, true) ~= nil
    local c = assert(v6 and socket.tcp6() or socket.tcp())
    c:settimeout(timeout or 5)
    local ok, err = c:bind(src, 0)
    if ok then ok, err = c:connect(v6 and "::1" or "127.0.0.1", port) end
    if not ok then
        c:close()
        return nil, err
    end
    return c
end

-- Sends line on a new connection from src to port and returns the reply
-- line, or nil and what went wrong ("connect: ...", "receive: closed").
-- The connection is closed either way.
function balancer.ask(port, line, src, timeout)
    local c, err = balancer.client(port, src, timeout)
    if not c then return nil, "connect: " .. tostring(err) end
    local ok
    ok, err = c:send(line .. "\n")
    if not ok then
        c:close()
        return nil, "send: " .. tostring(err)
    end
    local reply
    reply, err = c:receive("*l")
    c:close()
    if not reply then return nil, "receive: " .. tostring(err) end
    return reply
end

-- "key=value key=value" as a table of strings.
function balancer.fields(line)
    local t = {}
    for k, v in (line or ""):gmatch("([%w_]+)=(%S*)") do t[k] = v end
    return t
end

-- Kill whatever a failed spec left running when busted exits.
balancer._sweeper = setmetatable({}, { __gc = function()
    for pid, p in pairs(running) do
        local kids = p:children()
        os.execute("kill -KILL " .. pid .. " 2>/dev/null")
        kill_children(kids)
    end
    for _, d in ipairs(dirs) do os.execute("rm -rf " .. shell_quote(d)) end
end })

return balancer

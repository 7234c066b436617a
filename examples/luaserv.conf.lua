-- examples/luaserv.conf.lua: a luaserv configuration, for
--     luaserv -c /etc/luaserv/luaserv.conf.lua
-- (examples/luaserv.service runs it so under systemd).
--
-- The file is Lua run in a sandbox: settings are assignments, listeners,
-- the admin socket and the metrics endpoint are calls. An unknown name, a
-- misspelt setting or a value of the wrong type stops luaserv at start-up
-- with exit status 2 and a message naming this file and the line.
--
-- Command-line flags beat this file: --log-level, --idle-timeout and the
-- like override the settings below, and any -l replaces every listen{}
-- (admin and metrics stay). Handler paths are relative to luaserv's working
-- directory (WorkingDirectory= in luaserv.service); absolute paths work too.

-- luacheck: globals workers log_level log_format access_log watch
-- luacheck: globals idle_timeout shutdown_timeout high_water backlog handler
-- luacheck: globals listen admin metrics

-- --- settings ------------------------------------------------------------

-- The handler script of listeners that name none, and of any -l.
handler = "scripts/handle.lua"

-- debug, info, warn or error. The admin command "log-level" changes it
-- while running.
log_level = "info"

-- "text" (TIMESTAMP LEVEL message) or "json" (one object a line with ts,
-- level, msg, and listener, peer and conn for connection lines).
log_format = "text"

-- A line per closed connection: peer, duration, bytes in and out,
-- messages, and why it closed.
access_log = false

-- Reload the handlers when a script or a module it requires changes
-- (SIGHUP and the admin command "reload" always work).
watch = false

-- Close connections idle this many seconds (0 = never); a listen{} may
-- set its own.
idle_timeout = 300

-- On SIGTERM or SIGINT, wait this long for open connections to finish.
-- Keep it below TimeoutStopSec= in luaserv.service.
shutdown_timeout = 10

-- Bytes of queued output that pause reading from a peer (resumes below a
-- quarter of it); a listen{} may set its own.
high_water = 1048576

-- The listen backlog.
backlog = 511

-- This build runs one process: 1 (or "auto", which means 1 too).
workers = 1

-- --- listeners -----------------------------------------------------------
-- listen { ADDRESS, handler =, framing =, idle_timeout =, max_frame =,
--          high_water = }: ADDRESS as for -l (tcp://HOST:PORT,
-- udp://HOST:PORT, unix:/PATH, unixgram:/PATH, [::1]:PORT). Options left
-- out come from the settings above and from the handler script itself.

-- The timestamp server on TCP and UDP port 21567, every interface.
listen { "tcp://0.0.0.0:21567", handler = "scripts/handle.lua",
         max_frame = 65536 }
listen { "udp://0.0.0.0:21567", handler = "scripts/handle.lua" }

-- Another handler on its own port, with options of its own: the classic
-- socketserver port answers one line and hangs up, so a short timeout.
-- (Installed, the example lives under share/doc/luaserv/examples.)
-- listen { "tcp://127.0.0.1:21568", handler = "examples/tsTservSS.lua",
--          idle_timeout = 30, framing = "line", high_water = 65536 }

-- --- operations ----------------------------------------------------------

-- The admin socket: stats, conns, reload, eval, log-level, shutdown, as in
--     luaserv-cli --admin /run/luaserv/admin.sock stats
-- Always a unix socket, created with no access for group or others: eval
-- runs any Lua inside the server.
admin "unix:/run/luaserv/admin.sock"

-- Prometheus metrics at http://127.0.0.1:9145/metrics: per-listener
-- connections, messages, bytes, handler errors and durations, reloads,
-- and the handlers' own luaserv.metrics.
metrics "127.0.0.1:9145"

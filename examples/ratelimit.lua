-- examples/ratelimit.lua: a rate limiter whose counts live in Redis, so
-- that every luaserv instance behind a load balancer (and every worker of
-- each) shares them. Each line a client sends is one request; the answer
-- is one line:
--
--   ok REMAINING       the request is allowed; REMAINING more are, in this
--                      window
--   limited SECONDS    over the limit; the window ends in SECONDS
--
-- The count is per client address (conn.peer_ip) and per fixed window of
-- RATE_WINDOW seconds of wall-clock time, so all instances agree on where
-- a window starts. Behind HAProxy or nginx with the PROXY protocol
-- (listen { ..., proxy_protocol = true } or --proxy-protocol), conn.peer_ip
-- is the real client's address, not the balancer's: see docs/scaling.md.
--
--   redis-server --port 6379 &
--   build/luaserv -l 127.0.0.1:7000 examples/ratelimit.lua
--   printf 'a\nb\nc\n' | build/luaserv-cli -p 7000 -k
--
-- Configuration, from the environment when the script loads:
--
--   REDIS_HOST    Redis host (default 127.0.0.1); "unix:/path" for a socket
--   REDIS_PORT    Redis port (default 6379)
--   RATE_LIMIT    requests allowed per client per window (default 10)
--   RATE_WINDOW   the window, whole seconds (default 60)
--
-- A bad value stops luaserv at start (exit 2, naming this file and line).
--
-- How it counts: one pipeline, one round trip per request: INCR on the key
-- "ratelimit:IP:WINDOW" (WINDOW = the window's number, os.time() divided
-- by RATE_WINDOW), then EXPIRE on it, so a window's key goes away once the
-- window is over. INCR is atomic in Redis, so two instances counting the
-- same client at the same moment never lose a request. Setting the expiry
-- on every hit rather than only the first costs nothing here (the key's
-- name already holds its window) and leaves no key without one if an
-- instance dies between the two commands.
--
-- When Redis cannot be reached the limiter fails open: the request is
-- allowed ("ok -"), and the reason goes to the log at level warn. A limiter
-- that fails closed would turn a Redis outage into an outage of the whole
-- service; change allow_without_redis below if yours must.
local luaserv = require "luaserv"
local redis = require "luaserv.redis"

local log = luaserv.log
local time = os.time

-- Reads a positive integer from the environment variable name.
local function env_integer(name, default)
    local text = os.getenv(name)
    if text == nil or text == "" then return default end
    local n = tonumber(text)
    if n == nil or math.type(n) ~= "integer" or n <= 0 then
        error(("%s must be a positive integer, not %q"):format(name, text), 2)
    end
    return n
end

local REDIS_HOST = os.getenv("REDIS_HOST") or "127.0.0.1"
local REDIS_PORT = env_integer("REDIS_PORT", 6379)
local LIMIT = env_integer("RATE_LIMIT", 10)
local WINDOW = env_integer("RATE_WINDOW", 60)

local allow_without_redis = true

-- One pool per worker; a client is taken for one request's round trip and
-- given back, so a few pooled connections serve any number of clients.
local pool = redis.pool(REDIS_HOST, REDIS_PORT, { timeout = 2, size = 16 })

-- Counts one request from ip. Returns the count in the current window and
-- the seconds until that window ends, or nil and the reason Redis gave.
local function hit(ip)
    local now = time()
    local window = now // WINDOW
    local key = ("ratelimit:%s:%d"):format(ip, window)
    local r, err = pool:get()
    if not r then return nil, err end
    local res
    res, err = r:pipeline(function(p)
        p:incr(key)
        p:expire(key, WINDOW + 1)
    end)
    r:release()
    if not res then return nil, err end
    if type(res[1]) ~= "number" then
        return nil, res[1].err or "INCR gave no count"
    end
    return res[1], (window + 1) * WINDOW - now
end

local handler = {}

function handler.handle(conn)
    local ip = conn.peer_ip
    while true do
        local line = conn:readline()
        if not line then return end
        local count, left_or_err = hit(ip)
        if count == nil then
            log.warn("ratelimit: redis %s:%s: %s", REDIS_HOST, REDIS_PORT,
                     left_or_err)
            conn:write(allow_without_redis and "ok -\n" or "unavailable\n")
        elseif count <= LIMIT then
            conn:write("ok ", LIMIT - count, "\n")
        else
            conn:write("limited ", left_or_err, "\n")
        end
    end
end

return handler

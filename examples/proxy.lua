-- examples/proxy.lua: a TCP proxy, in the stream style. Every connection
-- gets its own connection to one upstream server, and bytes are copied
-- both ways unchanged.
--
--   UPSTREAM_PORT=21567 build/luaserv -l 127.0.0.1:6380 examples/proxy.lua
--
-- Configuration, from the environment when the script loads:
--
--   UPSTREAM_HOST     upstream host name or address (default 127.0.0.1)
--   UPSTREAM_PORT     upstream port (default 6379, a local Redis)
--   UPSTREAM_TIMEOUT  seconds to wait for the upstream connect (default 5)
--   UPSTREAM_LINGER   seconds of upstream silence, after the client
--                     half-closed, before the proxy hangs up (default 2)
--   PROXY_LISTEN      where to listen without -l (default 127.0.0.1:6380)
--
-- A bad value stops luaserv at start (exit 2, naming this file and line).
--
-- How it works: handle(conn) connects to the upstream with luaserv.connect,
-- spawns a task copying upstream -> client (up:read(), conn:write()) and
-- itself copies client -> upstream (conn:read(), up:write()). In a task,
-- conn:write waits while more than the high-water mark (1 MiB) is queued
-- for a peer, and a conn that nobody reads stops reading its socket: a slow
-- reader on either side slows the other side down instead of growing the
-- proxy's memory.
--
-- Closing:
--   * The upstream closes: what it sent is delivered to the client, then
--     the client connection closes.
--   * The client closes (or half-closes, like `nc -N`): what it sent is
--     delivered to the upstream, which may still answer; once it has been
--     silent for UPSTREAM_LINGER seconds, or closes itself, both close.
--   * The upstream cannot be reached (refused, timeout, no such host): the
--     client's connection closes at once, cleanly, without a byte. The
--     proxy cannot know the client's protocol, so it sends no error text;
--     the reason goes to the log at level warn.
local luaserv = require "luaserv"

local log = luaserv.log
local now = luaserv.now
local sleep = luaserv.sleep
local spawn = luaserv.spawn

-- Reads a positive number from the environment variable name.
local function env_number(name, default, integer)
    local text = os.getenv(name)
    if text == nil or text == "" then return default end
    local n = tonumber(text)
    if n == nil or n <= 0 or (integer and math.type(n) ~= "integer") then
        error(("%s must be a positive %s, not %q"):format(name,
              integer and "integer" or "number", text), 2)
    end
    return n
end

local UPSTREAM_HOST = os.getenv("UPSTREAM_HOST") or "127.0.0.1"
local UPSTREAM_PORT = env_number("UPSTREAM_PORT", 6379, true)
local CONNECT_TIMEOUT = env_number("UPSTREAM_TIMEOUT", 5)
local LINGER = env_number("UPSTREAM_LINGER", 2)
if UPSTREAM_PORT > 65535 then
    error("UPSTREAM_PORT must be at most 65535")
end

local handler = {
    listen = os.getenv("PROXY_LISTEN") or "127.0.0.1:6380",
}

-- Copies src to dst until one of them ends. Returns "read" when src ended
-- (or was closed), "write" when dst could not take more. progress.moved
-- counts the bytes, progress.writing is true while a write waits.
local function pump(src, dst, progress)
    while true do
        local data = src:read()
        if not data then return "read" end
        progress.writing = true
        local ok = dst:write(data)
        progress.writing = false
        if not ok then return "write" end
        progress.moved = progress.moved + #data
    end
end

-- The upstream -> client task.
local function downstream(up, conn, progress)
    local ended = pump(up, conn, progress)
    progress.done = true
    if ended == "write" then up:close() end    -- the client is gone
    conn:close()          -- after what is already queued for the client
end

-- After the client stopped sending: waits while the upstream is still
-- answering, until it closes or has been silent for LINGER seconds.
local function linger(progress)
    local seen = progress.moved
    local quiet_since = now()
    while not progress.done do
        sleep(LINGER / 4)
        if progress.moved ~= seen or progress.writing then
            seen, quiet_since = progress.moved, now()
        elseif now() - quiet_since >= LINGER then
            return
        end
    end
end

function handler.handle(conn)
    local up, err = luaserv.connect(UPSTREAM_HOST, UPSTREAM_PORT,
                                    { timeout = CONNECT_TIMEOUT })
    if not up then
        log.warn("conn %d (%s): upstream %s:%d: %s", conn.id, conn.peer,
                 UPSTREAM_HOST, UPSTREAM_PORT, err)
        return                          -- closes the client, no bytes sent
    end
    log.debug("conn %d (%s) -> upstream %s", conn.id, conn.peer, up.peer)
    local progress = { moved = 0, writing = false, done = false }
    spawn(downstream, up, conn, progress)

    local ended = pump(conn, up, { moved = 0 })
    if ended == "read" and not progress.done then
        -- The client finished sending: make sure the upstream got it all,
        -- then give it the chance to answer.
        if up:flush() then linger(progress) end
    end
    up:close()
    -- Returning closes the client once its queued output is written.
end

return handler

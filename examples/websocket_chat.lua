-- examples/websocket_chat.lua: the chat room of examples/chat.lua over
-- WebSocket, in the stream style, on framing "http" and luaserv.websocket.
--
--   build/luaserv -l 127.0.0.1:8080 examples/websocket_chat.lua
--
-- GET / serves a small HTML page whose script talks to GET /chat, which
-- upgrades to a WebSocket; /chat?nick=NAME picks a nickname (else
-- "guest-N"). Every text message goes to everyone else as "<nick> text";
-- "/who" lists who is here. Joins and leaves are announced with "* ".
-- Binary messages are relayed as they are.
--
-- A slow reader must not stall the room: a broadcast never waits. Before
-- writing to a peer it checks conn:pending(), and a peer with more than
-- MAX_PENDING bytes still queued is sent a close frame (1008) and
-- dropped; its own task then sees receive() fail and announces it.
local websocket = require "luaserv.websocket"

local handler = { framing = "http" }

local MAX_MESSAGE = 64 * 1024
local MAX_PENDING = 256 * 1024  -- well under the high-water mark, so a
                                -- write to a peer never waits
local MAX_NICK = 16

local PAGE = [[<!doctype html>
<meta charset="utf-8"><title>luaserv chat</title>
<pre id="log"></pre>
<form id="f"><input id="m" autocomplete="off" autofocus> <button>send</button></form>
<script>
const nick = prompt("nickname?") || "";
const ws = new WebSocket(`ws://${location.host}/chat?nick=${encodeURIComponent(nick)}`);
const log = (t) => { document.getElementById("log").textContent += t + "\n"; };
ws.onmessage = (e) => log(e.data);
ws.onclose = (e) => log(`* closed (${e.code} ${e.reason})`);
document.getElementById("f").onsubmit = (e) => {
  e.preventDefault();
  const m = document.getElementById("m");
  if (m.value) { ws.send(m.value); log("> " + m.value); m.value = ""; }
};
</script>
]]

local members = {}              -- nick -> ws, for everyone who joined
local guests = 0

-- Queues a message for one peer without ever waiting; drops a peer that
-- is too far behind.
local function send(ws, data, kind)
    local conn = ws.conn
    if conn:is_closed() then return end
    if conn:pending() > MAX_PENDING then
        ws.why = "too slow to read"
        ws:close(1008, "you are not reading")
        return
    end
    ws:send(data, kind)
end

-- Sends to every member except `from` (nil: to everyone). Nothing here
-- yields, so no other task can change `members` during the loop.
local function broadcast(from, data, kind)
    for _, ws in pairs(members) do
        if ws ~= from then send(ws, data, kind) end
    end
end

local function who()
    local nicks = {}
    for nick in pairs(members) do nicks[#nicks + 1] = nick end
    table.sort(nicks)
    return "* here: " .. table.concat(nicks, ", ")
end

local function respond(conn, req, status, ctype, body)
    conn:write("HTTP/1.1 ", status, "\r\nContent-Type: ", ctype,
               "\r\nContent-Length: ", #body, "\r\n",
               req.keep_alive and "" or "Connection: close\r\n", "\r\n",
               req.method == "HEAD" and "" or body)
end

-- The WebSocket part of a connection: joins, relays, leaves.
local function chat(conn, req)
    local nick = req.query and req.query:match("^nick=([%w_%-]+)$")
    local ws = websocket.upgrade(req, conn, { max = MAX_MESSAGE })
    if not ws then return end
    if not nick or #nick > MAX_NICK then
        guests = guests + 1
        nick = "guest-" .. guests
    end
    if members[nick] then
        return ws:close(4001, "nickname taken")
    end
    members[nick] = ws
    ws:send("* hello " .. nick .. "; /who lists who is here")
    broadcast(ws, "* " .. nick .. " joined")
    local why
    while true do
        local data, kind, code = ws:receive()
        if not data then
            why = ws.why or kind        -- kind is the error here
            break
        elseif kind == "close" then
            why = code and "closed " .. code
            break
        elseif kind == "binary" then
            broadcast(ws, data, "binary")
        elseif data == "/who" then
            ws:send(who())
        elseif data ~= "" then
            broadcast(ws, "<" .. nick .. "> " .. data)
        end
    end
    members[nick] = nil
    broadcast(nil, "* " .. nick .. " left" .. (why and " (" .. why .. ")"
                                                   or ""))
end

function handler.handle(conn)
    while true do
        local req = conn:read_frame()
        if not req then return end
        if req.path == "/chat" then
            return chat(conn, req)
        elseif req.path == "/" and (req.method == "GET" or
                                    req.method == "HEAD") then
            respond(conn, req, "200 OK", "text/html; charset=utf-8", PAGE)
        else
            respond(conn, req, "404 Not Found", "text/plain", "not found\n")
        end
        if not req.keep_alive then return end
    end
end

return handler

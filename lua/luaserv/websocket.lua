-- luaserv.websocket: WebSocket (RFC 6455) on a conn upgraded from an HTTP
-- request. The C core frames and decodes the messages (framing
-- "websocket": fragments reassembled, pings answered, the close handshake,
-- UTF-8 checked); this module does the handshake and writes frames.
--
--   local ws, err = websocket.upgrade(req, conn[, opts])
--   local data, kind, code = ws:receive()  -- kind "text"|"binary"|"close"
--   ws:send(data[, "binary"]); ws:ping([data]); ws:close([code[, reason]])
--
-- req is the request table of framing "http" (method, version, headers
-- with case-insensitive lookup). opts: protocols = { "chat", ... } (the
-- subprotocols this server speaks, in its order of preference; the first
-- one the client offers is chosen, ws.protocol), max = bytes (the message
-- cap, framing "websocket"'s max), headers = { name = value } (extra
-- response headers).
--
-- In the callback style, after upgrade() the handler's on_message(conn,
-- data, kind[, code]) gets each message; websocket.send(conn, data, kind),
-- websocket.ping(conn, data) and websocket.close(conn, code, reason) write
-- frames there; what on_message returns is written as is, so it may
-- return websocket.frame(data[, kind]) (a header and the data).
local wscore = require "luaserv.wscore"

local pack = string.pack
local concat = table.concat
local error = error
local ipairs = ipairs
local pairs = pairs
local setmetatable = setmetatable
local type = type

local _M = {}

local OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 1, 2, 8, 9, 10

-- The headers of short text and binary messages, made once: most
-- messages are short, and a table lookup beats string.pack.
local SHORT = { [OP_TEXT] = {}, [OP_BINARY] = {} }
for op, t in pairs(SHORT) do
    for n = 0, 125 do t[n] = pack(">BB", 0x80 | op, n) end
end

-- A server's frame header (FIN, unmasked) for a payload of n bytes.
local function header(opcode, n)
    if n < 126 then
        return pack(">BB", 0x80 | opcode, n)
    elseif n < 65536 then
        return pack(">BBI2", 0x80 | opcode, 126, n)
    end
    return pack(">BBI8", 0x80 | opcode, 127, n)
end
_M.header = header

-- Whether the comma-separated header value has token (case-insensitive).
local function has_token(value, token)
    if type(value) ~= "string" then return false end
    for t in value:gmatch("[^,]+") do
        if t:match("^%s*(.-)%s*$"):lower() == token then return true end
    end
    return false
end

local function refuse(conn, why, extra)
    local body = why .. "\n"
    conn:write("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n",
               extra or "", "Content-Length: ", #body,
               "\r\nConnection: close\r\n\r\n", body)
    conn:close()
    return nil, why
end

-- The first of ours the client offered, or nil.
local function choose_protocol(offered, ours)
    if not ours or type(offered) ~= "string" then return nil end
    for _, p in ipairs(ours) do
        if has_token(offered, p:lower()) then return p end
    end
    return nil
end

local WS = {}
WS.__index = WS

-- websocket.upgrade(req, conn[, opts]) -> ws | nil, err
-- Checks the request asks for a WebSocket (GET, HTTP/1.1, Upgrade:
-- websocket, Connection: Upgrade, Sec-WebSocket-Version: 13, a 16-byte
-- Sec-WebSocket-Key); if not, answers 400 and closes the conn, and
-- returns nil and why. Otherwise writes the 101 response and switches the
-- conn to framing "websocket".
function _M.upgrade(req, conn, opts)
    if type(req) ~= "table" or type(req.headers) ~= "table" then
        error("websocket.upgrade: req must be an HTTP request table", 2)
    end
    opts = opts or {}
    local h = req.headers
    if req.method ~= "GET" then
        return refuse(conn, "websocket upgrade needs GET")
    elseif req.version ~= nil and req.version ~= "1.1" then
        return refuse(conn, "websocket upgrade needs HTTP/1.1")
    elseif not has_token(h["upgrade"], "websocket") then
        return refuse(conn, "no Upgrade: websocket")
    elseif not has_token(h["connection"], "upgrade") then
        return refuse(conn, "no Connection: Upgrade")
    elseif h["sec-websocket-version"] ~= "13" then
        return refuse(conn, "Sec-WebSocket-Version must be 13",
                      "Sec-WebSocket-Version: 13\r\n")
    end
    local key = h["sec-websocket-key"]
    if type(key) ~= "string" or not key:match("^[%w+/]+==$") or #key ~= 24 then
        return refuse(conn, "bad Sec-WebSocket-Key")
    end
    local protocol = choose_protocol(h["sec-websocket-protocol"],
                                     opts.protocols)
    local out = { "HTTP/1.1 101 Switching Protocols\r\n",
                  "Upgrade: websocket\r\nConnection: Upgrade\r\n",
                  "Sec-WebSocket-Accept: ", wscore.accept(key), "\r\n" }
    if protocol then
        out[#out + 1] = "Sec-WebSocket-Protocol: " .. protocol .. "\r\n"
    end
    for name, value in pairs(opts.headers or {}) do
        out[#out + 1] = name .. ": " .. value .. "\r\n"
    end
    out[#out + 1] = "\r\n"
    local ok, err = conn:write(concat(out))
    if not ok then return nil, err end
    ok, err = conn:set_framing(opts.max and { "websocket", max = opts.max }
                               or "websocket")
    if not ok then return nil, err end
    -- conn's read_frame and write, looked up once: a conn's fields come
    -- through a C __index, a call per message otherwise
    return setmetatable({ conn = conn, protocol = protocol,
                          _read_frame = conn.read_frame,
                          _write = conn.write }, WS)
end

local function opcode_of(kind, what)
    if kind == "binary" then return OP_BINARY end
    if kind ~= nil and kind ~= "text" then
        error("websocket." .. what .. ": kind must be 'text' or 'binary'", 3)
    end
    return OP_TEXT
end

-- websocket.send(conn, data[, kind]): one message, "text" (the default)
-- or "binary". The header and the payload go as two pieces of one write.
function _M.send(conn, data, kind)
    local op = opcode_of(kind, "send")
    local n = #data
    return conn:write(n < 126 and SHORT[op][n] or header(op, n), data)
end

-- websocket.frame(data[, kind]) -> header, data: a message as the two
-- pieces to write; in the callback style on_message may return them
-- (`return websocket.frame(data)`), which saves the conn:write call.
function _M.frame(data, kind)
    local op = opcode_of(kind, "frame")
    local n = #data
    return n < 126 and SHORT[op][n] or header(op, n), data
end

local function control(conn, op, data, what)
    data = data or ""
    if #data > 125 then
        error("websocket." .. what .. ": at most 125 bytes", 3)
    end
    return conn:write(header(op, #data), data)
end

-- websocket.ping(conn[, data]); the core ignores the pong that answers.
function _M.ping(conn, data)
    return control(conn, OP_PING, data, "ping")
end

function _M.pong(conn, data)
    return control(conn, OP_PONG, data, "pong")
end

-- websocket.close(conn[, code[, reason]]): sends a close frame and closes
-- the conn once it is written (the server ends the TCP connection first,
-- as RFC 6455 7.1.1 suggests). A no-op on a closed conn.
function _M.close(conn, code, reason)
    if conn:is_closed() then return true end
    local body = ""
    if code then
        body = pack(">I2", code) .. (reason or "")
    elseif reason then
        error("websocket.close: a reason needs a code", 2)
    end
    control(conn, OP_CLOSE, body, "close")
    return conn:close()
end

-- ws:receive() -> data, "text"|"binary" | reason, "close", code|nil |
-- nil, err ("closed", "timeout", "too long", "protocol error")
function WS:receive()
    local conn = self.conn
    local data, kind, code = (self._read_frame or conn.read_frame)(conn)
    -- After the peer's close (answered by the core) or the end of the
    -- input, ws:close() must not send a second close frame.
    if kind == "close" or data == nil then self.closed = true end
    return data, kind, code
end

function WS:send(data, kind)
    local op = (kind == nil or kind == "text") and OP_TEXT or
               opcode_of(kind, "send")
    local n, conn = #data, self.conn
    return (self._write or conn.write)(conn, n < 126 and SHORT[op][n] or
                                                header(op, n), data)
end

function WS:ping(data)
    return _M.ping(self.conn, data)
end

function WS:pong(data)
    return _M.pong(self.conn, data)
end

function WS:close(code, reason)
    if self.closed then return self.conn:close() end
    self.closed = true
    return _M.close(self.conn, code, reason)
end

return _M

-- bench/ws_echo.lua: the WebSocket side of `make bench`'s echo row, in the
-- callback style: an HTTP request that asks to upgrade gets its 101 (the
-- Sec-WebSocket-Accept computed here), then the connection switches to
-- framing "websocket" and every text or binary message comes back in one
-- unmasked frame. Its baseline is bench/line_echo.lua (line framing).
--
--   build/luaserv -l 127.0.0.1:9001 bench/ws_echo.lua
--   build/luaserv-bench -p 9001 -m websocket -s 64 -P 16 -d 5
--
-- The 101 is written here rather than through luaserv.websocket so that the
-- row measures the framer and the callback path alone.
local byte, char, rep = string.byte, string.char, string.rep
local pack, unpack = string.pack, string.unpack

local GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

-- SHA-1 (FIPS 180-4) of a short string: once per connection.
local function sha1(msg)
    local function rol(x, n) return ((x << n) | (x >> (32 - n))) & 0xffffffff end
    local h0, h1, h2, h3, h4 =
        0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0
    local ml = #msg * 8
    msg = msg .. "\128" .. rep("\0", (55 - #msg) % 64) .. pack(">I8", ml)
    local w = {}
    for chunk = 1, #msg, 64 do
        for i = 0, 15 do w[i] = unpack(">I4", msg, chunk + 4 * i) end
        for i = 16, 79 do
            w[i] = rol(w[i - 3] ~ w[i - 8] ~ w[i - 14] ~ w[i - 16], 1)
        end
        local a, b, c, d, e = h0, h1, h2, h3, h4
        for i = 0, 79 do
            local f, k
            if i < 20 then f, k = (b & c) | (~b & d), 0x5A827999
            elseif i < 40 then f, k = b ~ c ~ d, 0x6ED9EBA1
            elseif i < 60 then f, k = (b & c) | (b & d) | (c & d), 0x8F1BBCDC
            else f, k = b ~ c ~ d, 0xCA62C1D6 end
            local t = (rol(a, 5) + (f & 0xffffffff) + e + k + w[i]) & 0xffffffff
            a, b, c, d, e = t, a, rol(b, 30), c, d
        end
        h0, h1 = (h0 + a) & 0xffffffff, (h1 + b) & 0xffffffff
        h2, h3 = (h2 + c) & 0xffffffff, (h3 + d) & 0xffffffff
        h4 = (h4 + e) & 0xffffffff
    end
    return pack(">I4I4I4I4I4", h0, h1, h2, h3, h4)
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(s)
    local out = {}
    for i = 1, #s, 3 do
        local a, b, c = byte(s, i, i + 2)
        local n = (a << 16) | ((b or 0) << 8) | (c or 0)
        local q = {}
        for j = 1, 4 do
            local v = (n >> (6 * (4 - j))) & 63
            q[j] = B64:sub(v + 1, v + 1)
        end
        if not b then q[3], q[4] = "=", "=" elseif not c then q[4] = "=" end
        out[#out + 1] = table.concat(q)
    end
    return table.concat(out)
end

-- The header of an unmasked server frame, FIN set, for n payload bytes.
local function header(op, n)
    if n < 126 then return char(0x80 | op, n) end
    if n < 65536 then return char(0x80 | op, 126) .. pack(">I2", n) end
    return char(0x80 | op, 127) .. pack(">I8", n)
end

-- The headers of short messages by kind, made once: a table lookup
-- instead of a string.char call per message.
local SHORT = { text = {}, binary = {} }
for kind, op in pairs{ text = 1, binary = 2 } do
    for n = 0, 125 do SHORT[kind][n] = header(op, n) end
end

local handler = { framing = "http" }

local BAD = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
            .. "Connection: close\r\n\r\n"

function handler.on_message(conn, msg, kind)
    local short = SHORT[kind]           -- a text or binary message: echo it
    if short then
        return short[#msg] or header(kind == "binary" and 2 or 1, #msg), msg
    end
    if kind == nil then                 -- the HTTP request: upgrade it
        local key = msg.headers["sec-websocket-key"]
        if msg.upgrade ~= "websocket" or not key then
            conn:write(BAD)
            conn:close()
            return
        end
        conn:write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   .. "Connection: Upgrade\r\nSec-WebSocket-Accept: "
                   .. base64(sha1(key .. GUID)) .. "\r\n\r\n")
        conn:set_framing("websocket")
    end
    -- "close": the core answers the close
end

return handler

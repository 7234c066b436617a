-- examples/lenprefix.lua: a tiny binary RPC over length-prefixed frames,
-- in the callback style.
--
--   build/luaserv -l 127.0.0.1:7000 examples/lenprefix.lua
--
-- Every message, both ways, is a 4-byte big-endian length and then that
-- many bytes: string.pack(">s4", payload). A request payload is a method
-- name, a space and the arguments, as raw bytes:
--
--   "echo <bytes>"                        -> the bytes
--   "upper <text>"                        -> the text in upper case
--   "add " .. string.pack(">i8i8", a, b)  -> string.pack(">i8", a + b)
--
-- A reply payload is a status byte, "\0" before a result or "\1" before an
-- error message. Requests are answered in order, so a client may send many
-- before reading any reply. A frame longer than MAX gets an error reply
-- and the connection closes.
local MAX = 64 * 1024

local handler = {
    -- The core cuts the stream into frames in C, however the bytes
    -- arrive; on_message gets one payload, without its length.
    framing = { "prefix", 4, endian = "big", max = MAX },
}

local OK, ERR = "\0", "\1"

local function reply(status, body)
    return string.pack(">s4", status .. body)
end

-- Each method takes the argument bytes and returns the result bytes, or
-- nil and an error message.
local methods = {}

function methods.echo(args)
    return args
end

function methods.upper(args)
    return args:upper()
end

function methods.add(args)
    if #args ~= 16 then
        return nil, "add takes two big-endian int64 (16 bytes)"
    end
    local a, b = string.unpack(">i8i8", args)
    return string.pack(">i8", a + b)    -- wraps around, as int64 does
end

function handler.on_message(_, payload)
    if payload == "" then return reply(ERR, "empty request") end
    local name, args = payload:match("^(%w+) (.*)$")
    if not name then name, args = payload:match("^%w+$"), "" end
    if not name then return reply(ERR, "bad request: want \"method args\"") end
    local method = methods[name]
    if not method then return reply(ERR, "unknown method " .. name) end
    local result, err = method(args)
    if not result then return reply(ERR, err) end
    return reply(OK, result)
end

-- Called for a frame over MAX (the core refuses to buffer it), or when a
-- handler above raised (the core has logged the traceback already). The
-- stream cannot be trusted after either, so the core closes the
-- connection; what we write here is sent first.
function handler.on_error(conn, err)
    if err == "frame too long" then
        conn:write(reply(ERR, "frame too long (max " .. MAX .. " bytes)"))
    else
        conn:write(reply(ERR, "internal error"))
    end
end

return handler

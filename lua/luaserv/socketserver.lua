-- luaserv.socketserver: Python's socketserver on luaserv, so a socketserver
-- program ports line by line. Handler classes keep Python's names and
-- protocol (setup, handle, finish; self.rfile, self.wfile, self.request,
-- self.client_address, self.server); TCPServer(ADDR, Handler):serve_forever()
-- returns the luaserv handler table the script returns. Every connection
-- runs in its own task, so the Threading and Forking mix-ins are built in.
local luaserv = require "luaserv"

local concat = table.concat
local format = string.format
local setmetatable = setmetatable
local tostring = tostring
local type = type

local _M = {}

-- Python prints a client address as a tuple: ('127.0.0.1', 53476).
local address_mt = {
    __tostring = function(a)
        if a[2] then return format("('%s', %d)", a[1], a[2]) end
        return format("'%s'", a[1])
    end,
}

local function address(conn)
    return setmetatable({ conn.peer_ip, conn.peer_port }, address_mt)
end

-- Classes -------------------------------------------------------------------

local BaseRequestHandler = {}
BaseRequestHandler.__index = BaseRequestHandler

-- Cls:subclass([fields]) -> a new class inheriting Cls's methods.
function BaseRequestHandler.subclass(cls, fields)
    local sub = fields or {}
    sub.__index = sub
    return setmetatable(sub, cls)
end

function BaseRequestHandler.setup() end
function BaseRequestHandler.handle() end
function BaseRequestHandler.finish() end

-- Runs one request as Python's BaseRequestHandler.__init__ does: setup,
-- handle, and finish even when handle raised (then re-raises).
local function run(cls, self)
    self = setmetatable(self, cls)
    self:setup()
    local ok, err = pcall(self.handle, self)
    self:finish()
    if not ok then error(err, 0) end
    return self
end

-- rfile over a stream conn: Python's file semantics, "" at end of file.
local StreamReader = {}
StreamReader.__index = StreamReader

function StreamReader:readline()
    return self.conn:readline(true) or ""
end

function StreamReader:read(n)
    if n == nil then
        local parts = {}
        while true do
            local data = self.conn:read()
            if not data then return concat(parts) end
            parts[#parts + 1] = data
        end
    end
    return self.conn:read(n) or ""
end

-- for line in self.rfile:lines() do ... end (lines keep their newline)
function StreamReader:lines()
    return function()
        local line = self.conn:readline(true)
        return line
    end
end

-- wfile over a stream conn.
local StreamWriter = {}
StreamWriter.__index = StreamWriter

function StreamWriter:write(...)
    local ok, err = self.conn:write(...)
    if not ok then error("write: " .. tostring(err), 2) end
    return self
end

function StreamWriter:flush()
    self.conn:flush()
    return self
end

local StreamRequestHandler = BaseRequestHandler:subclass()
_M.StreamRequestHandler = StreamRequestHandler
_M.BaseRequestHandler = BaseRequestHandler

function StreamRequestHandler:setup()
    self.connection = self.request
    self.rfile = setmetatable({ conn = self.request }, StreamReader)
    self.wfile = setmetatable({ conn = self.request }, StreamWriter)
end

-- rfile over one datagram.
local PacketReader = {}
PacketReader.__index = PacketReader

function PacketReader:readline()
    local data, pos = self.data, self.pos
    if pos > #data then return "" end
    local nl = data:find("\n", pos, true) or #data
    self.pos = nl + 1
    return data:sub(pos, nl)
end

function PacketReader:read(n)
    local data, pos = self.data, self.pos
    local last = n and pos + n - 1 or #data
    self.pos = last + 1
    return data:sub(pos, last)
end

-- wfile collecting the reply datagram.
local PacketWriter = {}
PacketWriter.__index = PacketWriter

function PacketWriter:write(...)
    local parts = self.parts
    for i = 1, select("#", ...) do parts[#parts + 1] = tostring((select(i, ...))) end
    return self
end

function PacketWriter.flush(self) return self end

local DatagramRequestHandler = BaseRequestHandler:subclass()
_M.DatagramRequestHandler = DatagramRequestHandler

function DatagramRequestHandler:setup()
    self.packet = self.request[1]
    self.socket = self.request[2]
    self.rfile = setmetatable({ data = self.packet, pos = 1 }, PacketReader)
    self.wfile = setmetatable({ parts = {} }, PacketWriter)
end

function DatagramRequestHandler:finish()
    self.reply = concat(self.wfile.parts)
end

-- Servers -------------------------------------------------------------------

local Server = {}
Server.__index = Server

local function listen_address(scheme, addr)
    if type(addr) == "string" then return addr end
    local host, port = addr[1], addr[2]
    if host == "" or host == nil then host = "0.0.0.0" end
    if host:find(":", 1, true) then host = "[" .. host .. "]" end
    return format("%s://%s:%d", scheme, host, port)
end

local function new_server(scheme)
    return function(server_address, handler_class)
        if type(handler_class) ~= "table" then
            error("socketserver: a RequestHandler class is required", 2)
        end
        return setmetatable({
            server_address = server_address,
            RequestHandlerClass = handler_class,
            scheme = scheme,
        }, Server)
    end
end

_M.TCPServer = new_server("tcp")
_M.UDPServer = new_server("udp")
_M.ThreadingTCPServer = _M.TCPServer
_M.ForkingTCPServer = _M.TCPServer
_M.ThreadingUDPServer = _M.UDPServer
_M.ForkingUDPServer = _M.UDPServer

-- server:serve_forever() -> the luaserv handler table to return from the
-- script. The listen address is the server_address unless -l is given.
function Server:serve_forever()
    local server, cls = self, self.RequestHandlerClass
    local handler = { listen = { listen_address(self.scheme,
                                                self.server_address) } }
    if self.scheme == "tcp" then
        function handler.handle(conn)
            run(cls, { request = conn, client_address = address(conn),
                       server = server })
        end
    else
        function handler.on_message(conn, data)
            local h = run(cls, { request = { data, conn },
                                 client_address = address(conn),
                                 server = server })
            if h.reply ~= "" then return h.reply end
        end
    end
    return handler
end

_M.log = luaserv.log
return _M

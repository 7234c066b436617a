-- examples/tsTservSS.lua: the classic socketserver timestamp server,
-- ported line by line from the Python original (tsTservSS.py): one line a
-- connection, answered "[ctime] line", then the connection closes.
local socketserver = require "luaserv.socketserver"
local TCP, SRH = socketserver.TCPServer, socketserver.StreamRequestHandler
local ctime = require("luaserv").ctime

local HOST = ""
local PORT = 21567
local ADDR = { HOST, PORT }

local MyRequestHandler = SRH:subclass()
function MyRequestHandler:handle()
    print("...connected from:", self.client_address)
    self.wfile:write(("[%s] %s"):format(ctime(), self.rfile:readline()))
end

local tcpServ = TCP(ADDR, MyRequestHandler)
print("waiting for connection...")
return tcpServ:serve_forever()

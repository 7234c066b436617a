#!/usr/bin/env python3
"""bench/ref_socketserver.py: the timestamp server on Python's socketserver,
a thread per connection (and per datagram): the classic tsTservSS.

usage: python3 bench/ref_socketserver.py HOST PORT [--udp]

Every line (LF or CRLF) is answered with "[" + time.ctime() + "] " + the line
as received; a last unterminated line is answered at end of stream. With
--udp a ThreadingUDPServer answers datagrams on the same host and port.
Port 0 picks a free port; the ready line on stdout reads like luaserv's:
    luaserv: listening on tcp 127.0.0.1:PORT
SIGTERM and SIGINT exit 0.

Two settings differ from the library's defaults so the benchmark measures
the server and not the kernel: the listen backlog is 511 (luaserv's; the
default 5 drops SYNs under many connects) and Nagle is off, as luaserv has
it. The UDP buffer takes a whole 64 KiB datagram (the default is 8192).
"""
import signal
import socket
import socketserver
import sys
import threading
import time


class TimestampHandler(socketserver.StreamRequestHandler):
    disable_nagle_algorithm = True

    def handle(self):
        rfile, wfile = self.rfile, self.wfile
        try:
            while True:
                line = rfile.readline()
                if not line:
                    break
                wfile.write(b"[%s] %s" % (time.ctime().encode(), line))
        except (ConnectionError, OSError):
            pass


class TimestampDatagramHandler(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        try:
            sock.sendto(b"[%s] %s" % (time.ctime().encode(), data),
                        self.client_address)
        except OSError:
            pass


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def server_class(base, host):
    class Server(base):
        address_family = family_of(host)
        allow_reuse_address = True
        daemon_threads = True
        request_queue_size = 511
        max_packet_size = 65536
    return Server


def name_of(server):
    host, port = server.server_address[:2]
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)


def main(argv):
    args = [a for a in argv[1:] if a != "--udp"]
    if len(args) != 2:
        sys.stderr.write("usage: ref_socketserver.py HOST PORT [--udp]\n")
        return 2
    host, port = args[0], int(args[1])

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))

    tcp = server_class(socketserver.ThreadingTCPServer, host)(
        (host, port), TimestampHandler)
    servers = [("tcp", tcp)]
    if "--udp" in argv:
        udp = server_class(socketserver.ThreadingUDPServer, host)(
            (host, tcp.server_address[1]), TimestampDatagramHandler)
        servers.append(("udp", udp))
        threading.Thread(target=udp.serve_forever, daemon=True).start()
    for kind, s in servers:
        sys.stdout.write("luaserv: listening on %s %s\n" % (kind, name_of(s)))
    sys.stdout.flush()
    try:
        tcp.serve_forever()
    finally:
        for _, s in servers:
            s.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

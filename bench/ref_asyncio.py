#!/usr/bin/env python3
"""bench/ref_asyncio.py: the timestamp server on asyncio streams, one task
per connection.

usage: python3 bench/ref_asyncio.py HOST PORT [--udp]

Every line (LF or CRLF) is answered with "[" + time.ctime() + "] " + the line
as received; a last unterminated line is answered at end of stream, and a
line past the reader's 64 KiB limit closes the connection (luaserv's default
frame limit is the same). With --udp a datagram endpoint answers on the same
host and port. Port 0 picks a free port; the ready line on stdout reads like
luaserv's:
    luaserv: listening on tcp 127.0.0.1:PORT
SIGTERM and SIGINT exit 0. asyncio already turns Nagle off; the listen
backlog is 511, luaserv's, instead of the default 100.
"""
import asyncio
import signal
import sys
import time


async def handle(reader, writer):
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            writer.write(b"[%s] %s" % (time.ctime().encode(), line))
            await writer.drain()
    except (ConnectionError, ValueError):
        pass
    except asyncio.CancelledError:
        pass    # shutdown: end quietly (3.11 logs a cancelled handler task)
    finally:
        writer.close()


class TimestampDatagram(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(b"[%s] %s" % (time.ctime().encode(), data), addr)


def name_of(sockname):
    host, port = sockname[:2]
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)


async def serve(host, port, udp):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    server = await asyncio.start_server(handle, host, port, backlog=511)
    tcp_name = server.sockets[0].getsockname()
    sys.stdout.write("luaserv: listening on tcp %s\n" % name_of(tcp_name))
    transport = None
    if udp:
        transport, _ = await loop.create_datagram_endpoint(
            TimestampDatagram, local_addr=(host, tcp_name[1]))
        sys.stdout.write("luaserv: listening on udp %s\n"
                         % name_of(transport.get_extra_info("sockname")))
    sys.stdout.flush()

    await stop.wait()
    server.close()
    if transport:
        transport.close()


def main(argv):
    args = [a for a in argv[1:] if a != "--udp"]
    if len(args) != 2:
        sys.stderr.write("usage: ref_asyncio.py HOST PORT [--udp]\n")
        return 2
    asyncio.run(serve(args[0], int(args[1]), "--udp" in argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#!/usr/bin/env python3
"""bench/ref_check.py: checks a running timestamp server byte for byte
(luaserv or one of the bench/ref_* servers).

usage: python3 bench/ref_check.py HOST PORT [--udp[=UDP_PORT]]

Each reply must be "[" + time.ctime(t) + "] " + the line as sent, for a t
within the test's run, in order. Prints one line per check and exits 1 on
the first failure."""
import socket
import sys
import threading
import time

CTIME_LEN = 24      # "Tue Apr  8 20:55:49 2006"
PREFIX_LEN = CTIME_LEN + 3


class Failed(Exception):
    pass


def valid_times(t0, t1):
    return {time.ctime(t).encode() for t in range(int(t0) - 1, int(t1) + 2)}


def check_stream(data, lines, t0, t1):
    """Raises Failed unless data is exactly the replies to lines."""
    ok = valid_times(t0, t1)
    pos = 0
    for i, line in enumerate(lines):
        head = data[pos:pos + PREFIX_LEN]
        ct = head[1:1 + CTIME_LEN]
        if head[:1] != b"[" or head[-2:] != b"] " or ct not in ok:
            raise Failed("reply %d: bad prefix %r" % (i, head))
        body = data[pos + PREFIX_LEN:pos + PREFIX_LEN + len(line)]
        if body != line:
            raise Failed("reply %d: %r != %r" % (i, body[:60], line[:60]))
        pos += PREFIX_LEN + len(line)
    if pos != len(data):
        raise Failed("%d extra bytes: %r"
                     % (len(data) - pos, data[pos:pos + 60]))


def exchange(addr, lines, pause=0.0, half_close=False, timeout=30.0):
    """Sends all lines in one sendall from a thread (so a server that
    pauses reading cannot deadlock us), waits pause seconds before reading,
    and returns what came back once the expected length has arrived (or
    the server closed, after a half-close)."""
    payload = b"".join(lines)
    want = sum(PREFIX_LEN + len(l) for l in lines)
    s = socket.create_connection(addr, timeout=timeout)
    err = []

    def send():
        try:
            s.sendall(payload)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError as e:
            err.append(e)

    t = threading.Thread(target=send)
    t.start()
    time.sleep(pause)
    got = bytearray()
    try:
        while len(got) < want or half_close:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += chunk
    finally:
        t.join()
        s.close()
    if err:
        raise Failed("send: %s" % err[0])
    return bytes(got)


def run(name, fn):
    t = time.time()
    try:
        detail = fn()
    except (Failed, OSError) as e:
        print("FAIL %s: %s" % (name, e))
        return False
    print("ok   %s (%.2fs)%s" % (name, time.time() - t,
                                 ": " + detail if detail else ""))
    return True


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--udp")]
    udp_opt = [a for a in argv[1:] if a.startswith("--udp")]
    addr = (args[0], int(args[1]))
    udp_addr = addr
    if udp_opt and "=" in udp_opt[0]:
        udp_addr = (args[0], int(udp_opt[0].split("=", 1)[1]))

    def pipelined():
        lines = []
        for i in range(10000):
            end = b"\r\n" if i % 3 == 0 else b"\n"
            body = b"" if i % 97 == 0 else b"line %d %s" % (i, b"x" * (i % 50))
            lines.append(body + end)
        t0 = time.time()
        data = exchange(addr, lines)
        check_stream(data, lines, t0, time.time())
        return "10000 lines in one write, %d reply bytes" % len(data)

    def long_lines():
        lines = [b"a" * 20000 + b"\r\n", b"short\n", b"b" * 40000 + b"\n",
                 b"c" * 16383 + b"\n", b"d" * 16384 + b"\n"]
        t0 = time.time()
        check_stream(exchange(addr, lines), lines, t0, time.time())
        return "20000, 40000, 16384, 16385 bytes"

    def trailing():
        lines = [b"first\n", b"no newline at the end"]
        t0 = time.time()
        data = exchange(addr, lines, half_close=True)
        check_stream(data, lines, t0, time.time())
        return "unterminated last line answered, then closed"

    def stays_open():
        s = socket.create_connection(addr, timeout=10)
        t0 = time.time()
        got = bytearray()
        try:
            for i, line in enumerate([b"one\n", b"two\r\n"]):
                s.sendall(line)
                while len(got) < sum(PREFIX_LEN + len(l) for l in
                                     [b"one\n", b"two\r\n"][:i + 1]):
                    chunk = s.recv(4096)
                    if not chunk:
                        raise Failed("closed early")
                    got += chunk
                time.sleep(0.5)
        finally:
            s.close()
        check_stream(bytes(got), [b"one\n", b"two\r\n"], t0, time.time())

    def backpressure():
        lines = [b"%07d %s\n" % (i, b"y" * 90) for i in range(200000)]
        t0 = time.time()
        data = exchange(addr, lines, pause=1.0)
        check_stream(data, lines, t0, time.time())
        return "%.1f MB in, %.1f MB out, reader paused 1s" % (
            sum(map(len, lines)) / 1e6, len(data) / 1e6)

    def udp():
        family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.settimeout(5)
        t0 = time.time()
        sent = [b"hello\n", b"dgram with no newline", b"", b"z" * 60000]
        sent += [b"burst %d\n" % i for i in range(100)]
        got = []
        for d in sent[:4]:
            s.sendto(d, udp_addr)
            got.append(s.recvfrom(70000)[0])
        for d in sent[4:]:
            s.sendto(d, udp_addr)
        for _ in sent[4:]:
            got.append(s.recvfrom(70000)[0])
        s.close()
        ok = valid_times(t0, time.time())
        burst = sorted(got[4:])
        for d, r in zip(sent[:4] + sorted(sent[4:]), got[:4] + burst):
            if r[:1] != b"[" or r[1:25] not in ok or r[25:27] != b"] " \
                    or r[27:] != d:
                raise Failed("datagram %r -> %r" % (d[:40], r[:60]))
        return "%d datagrams" % len(sent)

    checks = [("pipelined", pipelined), ("long lines", long_lines),
              ("trailing line", trailing), ("stays open", stays_open),
              ("backpressure", backpressure)]
    if udp_opt:
        checks.append(("udp", udp))
    ok = all([run(n, f) for n, f in checks])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

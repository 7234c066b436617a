#!/usr/bin/env python3
"""bench/idle_mem.py [--request] SCRIPT [N]: RSS bytes per idle connection
above the empty server, for a handler script. Starts build/luaserv on
127.0.0.1:0, opens N connections that send nothing (a stream handler's
task waits in readline), and reads VmRSS from /proc before and after.
--request: each connection first sends one line and reads its reply, so
what a served connection keeps (its buffers given back, its task's
thread grown) is what is measured."""
import os, socket, subprocess, sys, time, resource

args = [a for a in sys.argv[1:] if a != "--request"]
request = "--request" in sys.argv[1:]
script = args[0]
n = int(args[1]) if len(args) > 1 else 10000
binary = os.environ.get("LUASERV", "build/luaserv")
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

p = subprocess.Popen([binary, "-l", "127.0.0.1:0", script],
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
try:
    line = p.stdout.readline().decode()
    port = int(line.rsplit(":", 1)[1])
    # warm up: one connection, so lazily created state exists
    c = socket.create_connection(("127.0.0.1", port)); c.close()
    time.sleep(0.3)
    before = rss(p.pid)
    conns = []
    deadline = time.time() + 60
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        if request:
            s.sendall(b"hello\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    raise RuntimeError("closed before the reply")
                reply += chunk
        conns.append(s)
        if time.time() > deadline:
            break
    time.sleep(1.0)
    after = rss(p.pid)
    per = (after - before) / len(conns)
    what = " (after one request each)" if request else ""
    print(f"{script}: {len(conns)} idle connections{what}: RSS {before/1024:.0f} KiB"
          f" -> {after/1024:.0f} KiB, {per:.0f} bytes per connection")
    for c in conns:
        c.close()
finally:
    p.terminate()
    p.wait(timeout=15)

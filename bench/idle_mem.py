#!/usr/bin/env python3
"""bench/idle_mem.py SCRIPT [N]: RSS bytes per idle connection above the
empty server, for a handler script. Starts build/luaserv on 127.0.0.1:0,
opens N connections that send nothing (a stream handler's task waits in
readline), and reads VmRSS from /proc before and after."""
import os, socket, subprocess, sys, time, resource

script = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
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
        conns.append(socket.create_connection(("127.0.0.1", port)))
        if time.time() > deadline:
            break
    time.sleep(1.0)
    after = rss(p.pid)
    per = (after - before) / len(conns)
    print(f"{script}: {len(conns)} idle connections: RSS {before/1024:.0f} KiB"
          f" -> {after/1024:.0f} KiB, {per:.0f} bytes per connection")
    for c in conns:
        c.close()
finally:
    p.terminate()
    p.wait(timeout=15)

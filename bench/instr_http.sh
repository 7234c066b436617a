#!/bin/bash
# bench/instr_http.sh [SCRIPT]: user-space instructions per HTTP request
# of luaserv running SCRIPT (default examples/http.lua), or of nginx
# `return 200 "hello"` (one worker) when SCRIPT is "nginx", under
# wrk -t1 -c50 keep-alive, counted by callgrind (see instr_per_req.sh:
# an instruction count compares builds on a shared machine; wall-clock
# rates do not). Kernel instructions are not counted.
#   DUR    seconds of load (default 4)
#   BUILD  luaserv's build directory (default build)
# Prints: requests, instructions, instructions per request.
set -eu
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
#   KEEP   a file to copy callgrind's output to (for callgrind_annotate)
script=${1:-examples/http.lua}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
if [ "$script" = nginx ]; then
    cat > "$out/nginx.conf" <<NGX
daemon off;
master_process off;
worker_processes 1;
error_log stderr;
pid $out/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$port;
        location / { return 200 "hello"; }
    }
}
NGX
    cmd=(nginx -e stderr -p "$out" -c "$out/nginx.conf")
else
    cmd=("${BUILD:-build}/luaserv" -l "127.0.0.1:$port" "$script")
fi
valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$out/cg.out" "${cmd[@]}" > "$out/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && break
    sleep 0.2
done
callgrind_control -i on "$pid" > /dev/null 2>&1
wrk -t1 -c50 -d"${DUR:-4}s" "http://127.0.0.1:$port/" > "$out/wrk.txt" 2>&1 || true
callgrind_control -i off "$pid" > /dev/null 2>&1
kill -INT "$pid"                # nginx exits on INT, not on TERM here
wait "$pid" 2> /dev/null || true
[ -n "${KEEP:-}" ] && cat "$out"/cg.out* > "$KEEP"
python3 - "$out" <<'PY'
import re, sys, glob
out = sys.argv[1]
m = re.search(r"(\d+) requests in", open(f"{out}/wrk.txt").read())
req = int(m.group(1))
ir = 0
for f in glob.glob(f"{out}/cg.out*"):
    for line in open(f):
        if line.startswith(("totals:", "summary:")):
            ir = max(ir, int(line.split()[1]))
print(f"{req} requests, {ir} instructions, {ir / req:.0f} per request "
      "(user space)")
PY

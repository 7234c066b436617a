#!/bin/bash
# bench/instr_per_req.sh SERVER [ARGS...]: user-space instructions per
# request of a server under luaserv-bench, counted by callgrind. This
# machine (a VM) has no hardware counters for `perf stat -e instructions`,
# and on a shared, loaded machine an instruction count is what compares
# two builds; wall-clock rates do not. Kernel instructions (the syscalls)
# are not counted.
#   MODE   luaserv-bench's load (default "-m persistent -c 50 -P 16")
#   DUR    seconds of load (default 4)
#   KEEP   a file to copy callgrind's output to (for callgrind_annotate)
# Example: bench/instr_per_req.sh build/luaserv scripts/handle.lua
#          bench/instr_per_req.sh build/ref_libev
# Prints: requests, instructions, instructions per request.
set -eu
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$out/cg.out" "$@" -l 127.0.0.1:0 \
    > "$out/server.log" 2>&1 &
pid=$!
port=
for _ in $(seq 100); do
    port=$(grep -o "listening on tcp.*" "$out/server.log" | head -1 |
           sed 's/.*://') || true
    [ -n "$port" ] && break
    sleep 0.2
done
[ -n "$port" ] || { kill "$pid"; echo "server did not start" >&2; exit 1; }
callgrind_control -i on "$pid" > /dev/null 2>&1
# shellcheck disable=SC2086
build/luaserv-bench -p "$port" ${MODE:--m persistent -c 50 -P 16} \
    -d "${DUR:-4}" --warmup 0 --json > "$out/bench.json" 2> /dev/null || true
callgrind_control -i off "$pid" > /dev/null 2>&1
kill "$pid"
wait "$pid" 2> /dev/null || true
[ -n "${KEEP:-}" ] && cat "$out"/cg.out* > "$KEEP"
python3 - "$out" <<'EOF'
import json, sys, glob
out = sys.argv[1]
j = json.loads(open(f"{out}/bench.json").read().strip().splitlines()[-1])
req = j.get("requests_total", j["requests"])
ir = 0
for f in glob.glob(f"{out}/cg.out*"):
    for line in open(f):
        if line.startswith(("totals:", "summary:")):
            ir = max(ir, int(line.split()[1]))
print(f"{req} requests, {ir} instructions, {ir / req:.0f} per request "
      "(user space)")
EOF

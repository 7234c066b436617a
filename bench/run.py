#!/usr/bin/env python3
"""bench/run.py: `make bench`. Runs every scenario against luaserv and the
reference servers in one run, server and load generator pinned to separate
cores, interleaved and repeated; prints a table with ratios to the bare C
server and writes bench/results/latest.md and bench/results/latest.png.

QUICK=1 (or --quick): short runs, one repetition, fewer scenarios' length
(but still WORKER_PAIRS pairs for the --workers 2 row). BUILD=DIR: the
binaries' directory (default build). ONLY=NAME[,NAME...] (or --only=...):
only those parts, out of lines (the timestamp scenarios and the --workers
2 pairs), idle, shdict, resp, http, ws and tls (bench/tls_bench.py);
"protocols" is resp,http,ws. A
run with ONLY writes bench/results/partial.md and partial.json and leaves
latest.* (the whole run's) as they are.

The protocols (bench/run.py's second half): examples/resp.lua against
redis-server under redis-benchmark, examples/http.lua against nginx
(`return 200 "hello"`) under wrk, and bench/ws_echo.lua against
bench/line_echo.lua under luaserv-bench (-m websocket against -m
persistent --check echo), each luaserv with one worker and each reference
one process, on the server's core.

Server CPU is read from /proc (schedstat: nanoseconds, every thread of the
server and its descendants) once it serves and again when the load
generator exits, and divided by every request answered in between.
"""
import tls_bench
import json, os, socket, statistics, subprocess, sys, tempfile, time, \
    datetime, platform, shutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BUILD", "build")
QUICK = os.environ.get("QUICK") == "1" or "--quick" in sys.argv
BENCH = os.path.join(ROOT, BUILD, "luaserv-bench")
TICK = os.sysconf("SC_CLK_TCK")

SERVER_CPU, BENCH_CPU = "0", "1"
if os.cpu_count() and os.cpu_count() < 2:
    SERVER_CPU = BENCH_CPU = "0"

SERVERS = {
    "bare C (libev)": [os.path.join(ROOT, BUILD, "ref_libev")],
    "luaserv": [os.path.join(ROOT, BUILD, "luaserv"), "scripts/handle.lua"],
    "luaserv stream": [os.path.join(ROOT, BUILD, "luaserv"),
                       "bench/stream_handle.lua"],
    # a master and two workers, all on the server's core: its CPU per
    # request against one worker's is the cost of the workers
    "luaserv, --workers 2": [os.path.join(ROOT, BUILD, "luaserv"),
                             "--workers", "2", "scripts/handle.lua"],
    # the same without preemption: the difference is --task-slice's cost
    "luaserv stream, no slice": [os.path.join(ROOT, BUILD, "luaserv"),
                                 "--task-slice", "0",
                                 "bench/stream_handle.lua"],
    "Python socketserver": ["python3", "bench/ref_socketserver.py"],
    "Python asyncio": ["python3", "bench/ref_asyncio.py"],
}
REFERENCE = "bare C (libev)"

# The parts a run can be limited to (ONLY=...), and names for several.
PARTS = ["lines", "idle", "shdict", "resp", "http", "ws", "tls"]
PART_GROUPS = {"protocols": ["resp", "http", "ws"], "all": PARTS}


def selected_parts():
    """The parts ONLY (or --only=) names, in PARTS order; all of them when
    it is unset. An unknown name exits with the list of known ones."""
    arg = os.environ.get("ONLY", "")
    for a in sys.argv[1:]:
        if a.startswith("--only="):
            arg = a.split("=", 1)[1]
    if not arg.strip():
        return list(PARTS)
    want = set()
    for name in arg.replace(" ", ",").split(","):
        if not name:
            continue
        if name not in PARTS and name not in PART_GROUPS:
            sys.exit(f"bench: unknown part '{name}' in ONLY: expected "
                     + ", ".join(PARTS + list(PART_GROUPS)))
        want.update(PART_GROUPS.get(name, [name]))
    return [p for p in PARTS if p in want]

D = 2 if QUICK else 5
# name, bench args, servers, whether the generator is the limit (compare
# server CPU per request rather than requests/s)
SCENARIOS = [
    ("persistent P=1, 50 conns", ["-m", "persistent", "-c", "50", "-P", "1"],
     ["bare C (libev)", "luaserv", "luaserv, --workers 2", "luaserv stream",
      "luaserv stream, no slice", "Python socketserver", "Python asyncio"], True),
    ("pipelined P=16, 50 conns", ["-m", "persistent", "-c", "50", "-P", "16"],
     ["bare C (libev)", "luaserv", "luaserv, --workers 2", "luaserv stream",
      "luaserv stream, no slice", "Python socketserver", "Python asyncio"], False),
    ("short connections, 32 at a time", ["-m", "short", "-c", "32"],
     ["bare C (libev)", "luaserv", "Python socketserver", "Python asyncio"],
     True),
    ("UDP", ["-m", "udp", "-c", "8", "-P", "16"],
     ["bare C (libev)", "luaserv", "Python socketserver", "Python asyncio"],
     False),
]
# The --workers 2 row against one worker: each of its runs is paired with
# the one-worker run just before it (the machine's speed drifts; a pair
# shares it), and the ratio is the median over the pairs. A QUICK run adds
# pairs to reach this many.
WORKERS_ROW, ONE_WORKER = "luaserv, --workers 2", "luaserv"
WORKER_PAIRS = 3
IDLE_CONNS = 2000 if QUICK else 10000
IDLE_SERVERS = ["bare C (libev)", "luaserv", "luaserv stream"]
REPEATS = 1 if QUICK else 3


def tree(pid):
    """pid and its descendants (a master's workers)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return pids


def cpu_seconds(pid):
    """CPU time of pid and its descendants, every thread, in nanoseconds
    from /proc/PID/task/TID/schedstat (the stat file's ticks are 10 ms: a
    two-second run split over a master and two workers lost up to 3 % to
    rounding), falling back to the stat file's ticks."""
    total = 0.0
    for p in tree(pid):
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/schedstat") as f:
                    total += int(f.read().split()[0]) / 1e9
            continue
        except (OSError, ValueError, IndexError):
            pass
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def stop_proc(proc):
    """Ends a server we started (by its PID): SIGTERM, then SIGKILL if it
    is still there after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Server:
    def __init__(self, name, udp=False, argv=None):
        argv = argv or SERVERS[name]
        if argv[0] == "python3":
            cmd = argv + ["127.0.0.1", "0"] + (["--udp"] if udp else [])
        elif udp:
            cmd = argv[:1] + ["-l", "udp://127.0.0.1:0"] + argv[1:]
        else:
            cmd = argv[:1] + ["-l", "127.0.0.1:0"] + argv[1:]
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CPU] + cmd,
                                     cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self.port = None
        deadline = time.time() + 10
        want = "udp" if udp else "tcp"
        while time.time() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                break
            if line.startswith("luaserv: listening on " + want):
                self.port = int(line.rsplit(":", 1)[1])
                break
        if self.port is None:
            self.stop()
            raise RuntimeError(f"{name} did not start")
        # drain the rest of its stdout so it never blocks on a full pipe
        self.drain = subprocess.Popen(["cat"], stdin=self.proc.stdout,
                                      stdout=subprocess.DEVNULL)

    def stop(self):
        stop_proc(self.proc)
        if hasattr(self, "drain"):
            self.drain.wait(5)


def run_bench(port, args, duration):
    check = [] if "--check" in args or "websocket" in args else \
        ["--check", "timestamp"]
    cmd = ["taskset", "-c", BENCH_CPU, BENCH, "-p", str(port), "-d",
           str(duration), "--warmup", "0.5" if QUICK else "1",
           "--json"] + check + args
    out = subprocess.run(cmd, capture_output=True, text=True,
                         timeout=duration + 30)
    try:
        r = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError("luaserv-bench failed: " + out.stderr.strip())
    if out.returncode != 0:     # it says why on stderr
        print("#   " + out.stderr.strip(), file=sys.stderr)
    return r


def one_run(server, scenario, argv=None):
    name, args, _, _ = scenario
    srv = Server(server, udp="udp" in args, argv=argv)
    try:
        # Once it serves (every worker loaded: the ready line waits for
        # them), so no start-up is counted; the tree is read at both ends.
        time.sleep(0.2)
        c0 = cpu_seconds(srv.proc.pid)
        r = run_bench(srv.port, args, D)
        c1 = cpu_seconds(srv.proc.pid)
    finally:
        srv.stop()
    # CPU over the generator's whole run (warmup and measured time), so
    # divided by every request it got answered in that time, not only the
    # measured ones.
    total = r.get("requests_total", r["requests"])
    r["server_cpu_s"] = c1 - c0
    r["server_cpu_us_per_req"] = (c1 - c0) / total * 1e6 if total else 0
    return r


def idle_run(server):
    srv = Server(server)
    try:
        time.sleep(0.3)
        before = rss_bytes(srv.proc.pid)
        p = subprocess.Popen(["taskset", "-c", BENCH_CPU, BENCH, "-p",
                              str(srv.port), "-m", "idle", "-c",
                              str(IDLE_CONNS), "-d", "60"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        ready = None
        deadline = time.time() + 60
        while time.time() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            if line.startswith("ready"):
                ready = int(line.split()[1])
                break
        time.sleep(1.0)
        after = rss_bytes(srv.proc.pid)
        p.terminate()
        p.wait(10)
    finally:
        srv.stop()
    if not ready:
        raise RuntimeError(f"idle: {server}: connections did not open")
    return {"conns": ready, "before": before, "after": after,
            "per_conn": (after - before) / ready}


SHDICT_OPS = 200000 if QUICK else 1000000


def shdict_run(workers):
    """bench/shdict.lua in `workers` workers at once (both cores): each
    prints "ID OP TABLE_OPS SHARED_OPS RATIO SECONDS" for get, set and
    incr, every worker starting each row at the same moment."""
    cmd = [os.path.join(ROOT, BUILD, "luaserv"), "--shared", "bench=64m",
           "-l", "127.0.0.1:0", "bench/shdict.lua"]
    if workers > 1:
        cmd[1:1] = ["--workers", str(workers)]
    env = dict(os.environ, SHDICT_OPS=str(SHDICT_OPS))
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    rows, deadline = {}, time.time() + 120
    try:
        while len(rows) < 3 * workers and time.time() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            f = line.split()
            if len(f) >= 6 and f[0].isdigit():
                rows[(int(f[0]), f[1])] = (float(f[2]), float(f[3]),
                                           float(f[5]))
    finally:
        if p.poll() is None:
            p.terminate()
        p.wait(30)
    if len(rows) < 3 * workers:
        raise RuntimeError(f"shdict: {workers} worker(s) printed {len(rows)} rows")
    return rows

# ---- protocols: RESP, HTTP, WebSocket ----

LUASERV = os.path.join(ROOT, BUILD, "luaserv")
REDIS_N = 200000 if QUICK else 1000000     # requests a redis-benchmark test
REDIS_TESTS = ["SET", "GET", "INCR"]
REDIS_ARGS = ["-P", "16", "-c", "50"]
WRK_ARGS = ["-t1", "-c50"]
WS_SIZE, WS_ARGS = 64, ["-c", "50", "-P", "16"]
# (row, luaserv's name and argv, the reference's name and argv): the
# references are started by ExtServer, luaserv by Server (one worker).
RESP_PAIR = ("luaserv examples/resp.lua", [LUASERV, "examples/resp.lua"],
             "redis-server")
HTTP_PAIR = ("luaserv examples/http.lua", [LUASERV, "examples/http.lua"],
             "nginx return 200")
WS_PAIR = ("luaserv bench/ws_echo.lua", [LUASERV, "bench/ws_echo.lua"],
           "luaserv bench/line_echo.lua", [LUASERV, "bench/line_echo.lua"])
NGINX_CONF = """daemon off;
master_process off;
worker_processes 1;
error_log stderr;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "hello"; }}
    }}
}}
"""


def free_port():
    """A TCP port on 127.0.0.1 free a moment ago (the reference servers
    take a port on their command line, not port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ExtServer:
    """A reference server (redis-server, nginx) on the server's core, on a
    port of ours; ready once a connect to it succeeds."""

    def __init__(self, name):
        self.port, self.dir = free_port(), None
        if name == "redis-server":
            cmd = ["redis-server", "--port", str(self.port), "--bind",
                   "127.0.0.1", "--save", "", "--appendonly", "no"]
        else:
            self.dir = tempfile.mkdtemp(prefix="luaserv-bench-nginx.")
            conf = os.path.join(self.dir, "nginx.conf")
            with open(conf, "w") as f:
                f.write(NGINX_CONF.format(dir=self.dir, port=self.port))
            cmd = ["nginx", "-e", "stderr", "-p", self.dir, "-c", conf]
        if not shutil.which(cmd[0]):
            raise RuntimeError(f"{cmd[0]} is not installed "
                               "(sh .ci/deps bench)")
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CPU] + cmd,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{name} did not start on port {self.port}")

    def stop(self):
        stop_proc(self.proc)
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def start(name, argv):
    """luaserv (argv given) or a reference server, serving."""
    srv = Server(name, argv=argv) if argv else ExtServer(name)
    time.sleep(0.2)
    return srv


def redis_bench(port, test):
    """One redis-benchmark test against port: its CSV row's figures. It
    stops at the first error reply (and still exits 0), so a missing row
    or an "Error" line is a failure."""
    cmd = ["taskset", "-c", BENCH_CPU, "redis-benchmark", "-h", "127.0.0.1",
           "-p", str(port), "-t", test.lower(), "-n", str(REDIS_N),
           "--csv"] + REDIS_ARGS
    out = subprocess.run(cmd, capture_output=True, text=True,
                         timeout=300)
    row = next((l for l in out.stdout.splitlines()
                if l.startswith(f'"{test}"')), None)
    err = next((l for l in (out.stdout + out.stderr).splitlines()
                if l.startswith("Error")), None)
    if row is None or err:
        raise RuntimeError(f"redis-benchmark {test}: "
                           + (err or out.stderr.strip()[-200:] or "no result"))
    f = [x.strip('"') for x in row.split(",")]
    return {"rps": float(f[1]), "p50_us": float(f[4]) * 1000,
            "p99_us": float(f[6]) * 1000, "requests": REDIS_N, "errors": 0}


def resp_run(name, argv):
    """Each of REDIS_TESTS against one server, the server's CPU read around
    each test: {test: figures}."""
    srv, res = start(name, argv), {}
    try:
        for test in REDIS_TESTS:
            c0 = cpu_seconds(srv.proc.pid)
            r = redis_bench(srv.port, test)
            r["server_cpu_s"] = cpu_seconds(srv.proc.pid) - c0
            res[test] = r
    finally:
        srv.stop()
    return res


def wrk_time_us(s):
    for unit, k in (("us", 1), ("ms", 1e3), ("s", 1e6)):
        if s.endswith(unit):
            return float(s[:-len(unit)]) * k
    return float("nan")


def wrk(port, secs):
    cmd = ["taskset", "-c", BENCH_CPU, "wrk"] + WRK_ARGS + [
        f"-d{secs}s", "--latency", f"http://127.0.0.1:{port}/"]
    out = subprocess.run(cmd, capture_output=True, text=True,
                         timeout=secs + 60).stdout
    r = {"errors": 0}
    for line in out.splitlines():
        f = line.split()
        if "requests in" in line:
            r["requests"] = int(f[0])
        elif f[:1] == ["Requests/sec:"]:
            r["rps"] = float(f[1])
        elif f[:1] == ["50%"]:
            r["p50_us"] = wrk_time_us(f[1])
        elif f[:1] == ["99%"]:
            r["p99_us"] = wrk_time_us(f[1])
        elif line.strip().startswith("Non-2xx"):
            r["errors"] += int(f[-1])
        elif line.strip().startswith("Socket errors"):
            r["errors"] += sum(int(x.strip(",")) for x in f[3::2])
    if "requests" not in r or "rps" not in r:
        raise RuntimeError("wrk: no result: " + out.strip()[-200:])
    return r


def http_run(name, argv):
    """wrk against one server, after a warmup run; the server's CPU over
    the measured run: {"GET /": figures}."""
    srv = start(name, argv)
    try:
        wrk(srv.port, 1)
        c0 = cpu_seconds(srv.proc.pid)
        r = wrk(srv.port, D)
        r["server_cpu_s"] = cpu_seconds(srv.proc.pid) - c0
    finally:
        srv.stop()
    return {"GET /": r}


def ws_run(name, argv, args):
    """luaserv-bench (args) against one luaserv: {"echo": figures}."""
    r = one_run(name, (name, args, [], False), argv=argv)
    r["server_cpu_s"] = r["server_cpu_us_per_req"] * r.get(
        "requests_total", r["requests"]) / 1e6
    r["requests"] = r.get("requests_total", r["requests"])
    return {"echo": r}


def protocol_runs(parts):
    """Every selected protocol part, its luaserv and its reference run
    after one another, REPEATS times: {part: {server: [run, ...]}}."""
    jobs = []
    if "resp" in parts:
        jobs.append(("resp", lambda: resp_run(RESP_PAIR[0], RESP_PAIR[1]),
                     RESP_PAIR[0]))
        jobs.append(("resp", lambda: resp_run(RESP_PAIR[2], None),
                     RESP_PAIR[2]))
    if "http" in parts:
        jobs.append(("http", lambda: http_run(HTTP_PAIR[0], HTTP_PAIR[1]),
                     HTTP_PAIR[0]))
        jobs.append(("http", lambda: http_run(HTTP_PAIR[2], None),
                     HTTP_PAIR[2]))
    if "ws" in parts:
        size = ["-s", str(WS_SIZE)] + WS_ARGS
        jobs.append(("ws", lambda: ws_run(WS_PAIR[0], WS_PAIR[1],
                                          ["-m", "websocket"] + size),
                     WS_PAIR[0]))
        jobs.append(("ws", lambda: ws_run(WS_PAIR[2], WS_PAIR[3],
                                          ["-m", "persistent", "--check",
                                           "echo"] + size), WS_PAIR[2]))
    out = {}
    for rep in range(REPEATS):
        for part, fn, server in jobs:
            print(f"# run {rep + 1}/{REPEATS}: {part}: {server}",
                  file=sys.stderr, flush=True)
            try:
                r = fn()
            except Exception as e:  # one bad run is reported, not fatal
                print(f"#   failed: {e}", file=sys.stderr)
                continue
            out.setdefault(part, {}).setdefault(server, []).append(r)
    return out


def proto_figures(runs, test):
    """Medians over a server's runs of one test: requests/s, p99, server
    CPU µs per request; errors summed."""
    if test == "all":       # every test's requests and CPU together
        tests = [t for t in REDIS_TESTS if all(t in r for r in runs)]
        if not runs or not tests:
            return None
        per = [proto_figures(runs, t) for t in tests]
        n = sum(r[t]["requests"] for r in runs for t in tests)
        return {"rps": len(tests) / sum(1 / f["rps"] for f in per),
                "p99_us": max(f["p99_us"] for f in per),
                "cpu_us": sum(r[t]["server_cpu_s"] for r in runs
                              for t in tests) / n * 1e6,
                "errors": sum(f["errors"] for f in per)}
    rs = [r[test] for r in runs if test in r]
    if not rs:
        return None
    return {"rps": median([r["rps"] for r in rs]),
            "p99_us": median([r.get("p99_us", float("nan")) for r in rs]),
            "cpu_us": median([r["server_cpu_s"] / r["requests"] * 1e6
                              for r in rs if r["requests"]]),
            "errors": sum(r["errors"] for r in rs)}


def protocol_lines(proto):
    """The Protocols table: a row a workload, luaserv against its
    reference, with the issue's target and whether it was met."""
    if not proto:
        return []
    lines = ["", "Protocols: luaserv (one worker) against a reference "
             "server (one process), both on the server's core. RESP: "
             f"redis-benchmark {' '.join(REDIS_ARGS)} -n {REDIS_N:,} a test "
             "against redis-server (--save '' --appendonly no); HTTP: wrk "
             f"{' '.join(WRK_ARGS)} (keep-alive) against nginx `return 200 "
             f"\"hello\"` (one worker, no master); WebSocket: luaserv-bench "
             f"{' '.join(WS_ARGS)} of {WS_SIZE}-byte messages, -m websocket "
             "against bench/ws_echo.lua and -m persistent --check echo "
             "against bench/line_echo.lua (a plain TCP echo, line framing). "
             "The ratio is server CPU per request, luaserv over the "
             "reference, for RESP and HTTP (lower is better) and messages/s, "
             "WebSocket over lines, for the echo (higher is better).", "",
             "| workload | luaserv | reference | luaserv req/s | reference "
             "req/s | luaserv CPU µs/req | reference CPU µs/req | luaserv p99 "
             "µs | errors | ratio | target | met |",
             "|" + "---|" * 12]
    rows = []
    if "resp" in proto:
        for test in REDIS_TESTS + ["all"]:
            label = "/".join(REDIS_TESTS) if test == "all" else test
            rows.append((f"RESP {label}", RESP_PAIR[0], RESP_PAIR[2],
                         "resp", test, "cpu", 1.5))
    if "http" in proto:
        rows.append(("HTTP GET /", HTTP_PAIR[0], HTTP_PAIR[2], "http",
                     "GET /", "cpu", 1.0))
    if "ws" in proto:
        rows.append((f"WebSocket echo, {WS_SIZE} B", WS_PAIR[0], WS_PAIR[2],
                     "ws", "echo", "rps", 0.8))
    for label, ours, ref, part, test, by, target in rows:
        a = proto_figures(proto[part].get(ours, []), test)
        b = proto_figures(proto[part].get(ref, []), test)
        ratio, failed = None, not (a and b and a["rps"] and b["rps"])
        if not failed:
            ratio = (a["cpu_us"] / b["cpu_us"] if by == "cpu" and b["cpu_us"]
                     else a["rps"] / b["rps"] if b["rps"] else None)
        met = "failed" if failed else "-" if ratio is None else (
            "yes" if (ratio <= target if by == "cpu" else ratio >= target)
            else "no")
        g = lambda f, k, spec: fmt(f[k], spec) if f else "-"
        errs = f"{a['errors'] if a else '-'}/{b['errors'] if b else '-'}"
        lines.append(
            f"| {label} | {ours} | {ref} | {g(a, 'rps', ',.0f')} | "
            f"{g(b, 'rps', ',.0f')} | {g(a, 'cpu_us', '.2f')} | "
            f"{g(b, 'cpu_us', '.2f')} | {g(a, 'p99_us', ',.0f')} | {errs} | "
            f"{fmt(ratio, '.2f')}{'x' if ratio else ''} "
            f"{'CPU/req' if by == 'cpu' else 'msg/s'} | "
            f"{'≤' if by == 'cpu' else '≥'} {target}x | {met} |")
    return lines


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    for path in [BENCH, SERVERS[REFERENCE][0]]:
        if not os.path.exists(path):
            sys.exit(f"bench: {path} is missing: run make first")
    parts = selected_parts()
    results = {}   # (scenario, server) -> [runs]
    pairs = {}     # scenario -> [(one worker's run, --workers 2's run)]
    for rep in range(REPEATS if "lines" in parts else 0):
        for sc in SCENARIOS:
            run_servers(sc, sc[2], f"{rep + 1}/{REPEATS}", results, pairs)
    for sc in SCENARIOS:
        if WORKERS_ROW not in sc[2] or "lines" not in parts:
            continue
        for k in range(len(pairs.get(sc[0], [])), WORKER_PAIRS):
            run_servers(sc, [ONE_WORKER, WORKERS_ROW], f"pair {k + 1}",
                        results, pairs)
    idle = {}
    for server in IDLE_SERVERS if "idle" in parts else []:
        print(f"# idle {IDLE_CONNS} connections: {server}", file=sys.stderr,
              flush=True)
        try:
            idle[server] = idle_run(server)
        except Exception as e:
            print(f"#   failed: {e}", file=sys.stderr)
    shd = {}
    for workers in (1, 2) if "shdict" in parts else ():
        print(f"# shared dict, {workers} worker(s)", file=sys.stderr,
              flush=True)
        try:
            shd[workers] = shdict_run(workers)
        except Exception as e:
            print(f"#   failed: {e}", file=sys.stderr)
    proto = protocol_runs(parts)
    tls = tls_bench.runs(sys.modules[__name__]) if "tls" in parts else {}
    report(results, idle, shd, pairs, proto, parts, tls)


def run_servers(sc, servers, label, results, pairs):
    """One run of sc against each of servers in turn, into results; a
    --workers 2 run right after a one-worker run makes a pair."""
    last = None
    for server in servers:
        print(f"# run {label}: {sc[0]}: {server}", file=sys.stderr,
              flush=True)
        try:
            r = one_run(server, sc)
        except Exception as e:  # one bad run is reported, not fatal
            print(f"#   failed: {e}", file=sys.stderr)
            last = None
            continue
        results.setdefault((sc[0], server), []).append(r)
        if server == WORKERS_ROW and last is not None:
            pairs.setdefault(sc[0], []).append((last, r))
        last = r if server == ONE_WORKER else None


def workers_lines(pairs):
    """The --workers 2 row's server CPU per request against one worker's,
    pair by pair."""
    if not pairs:
        return []
    lines = ["", "`--workers 2` against one worker: server CPU per request "
             "(the master and both workers, all on the server's core), "
             "each run divided by the one-worker run just before it; the "
             "issue's bound is 1.05x:", "",
             "| scenario | pairs | median | each pair |", "|---|---|---|---|"]
    for sc in SCENARIOS:
        ps = pairs.get(sc[0])
        if not ps:
            continue
        ratios = [b["server_cpu_us_per_req"] / a["server_cpu_us_per_req"]
                  for a, b in ps if a["server_cpu_us_per_req"]]
        lines.append(f"| {sc[0]} | {len(ratios)} | "
                     f"{fmt(median(ratios), '.3f')}x | "
                     + " ".join(f"{x:.3f}" for x in ratios) + " |")
    return lines


def fmt(x, spec):
    return "-" if x is None or x != x else format(x, spec)


def shdict_lines(shd):
    if 1 not in shd:
        return []
    lines = ["", f"Shared dict (`--shared`), operations per second from Lua "
             f"({SHDICT_OPS:,} a row per worker, the same 1000 keys in "
             "every worker; bench/shdict.lua), by wall-clock time, against "
             "a plain Lua table as the limit; \"2 workers\" start each row "
             "at the same moment on the two cores; \"each\" is per worker, "
             "\"sum\" is both workers' operations over the time the slower "
             "took. The last column is the same ratio for the Lua table, which "
             "shares nothing: what the machine gives two processes at once.",
             "", "| op | Lua table | 1 worker | 2 workers, each | 2 workers, sum "
             "| 2 workers sum vs 1 | Lua table, 2 vs 1 |",
             "|---|---|---|---|---|---|---|"]
    for op in ("get", "set", "incr"):
        one = shd[1][(1, op)]
        two = [shd[2][(w, op)] for w in (1, 2)] if 2 in shd else []
        each = "/".join(f"{x[1]:,.0f}" for x in two) if two else "-"
        total = 2 * SHDICT_OPS / max(x[2] for x in two) if two else None
        tables = sum(x[0] for x in two) if two else None
        lines.append(f"| {op} | {one[0]:,.0f} | {one[1]:,.0f} | {each} | "
                     f"{fmt(total, ',.0f')} | "
                     f"{fmt(total / one[1] if total else None, '.2f')}x | "
                     f"{fmt(tables / one[0] if tables else None, '.2f')}x |")
    return lines


def report(results, idle, shd=None, pairs=None, proto=None, parts=PARTS,
           tls=None):
    rows = []
    for sc in SCENARIOS if "lines" in parts else []:
        name, _, servers, gen_limited = sc
        ref = results.get((name, REFERENCE), [])
        ref_rps = median([r["rps"] for r in ref])
        ref_cpu = median([r["server_cpu_us_per_req"] for r in ref])
        for server in servers:
            runs = results.get((name, server), [])
            if not runs:
                rows.append([name, server] + ["-"] * 8)
                continue
            rps = median([r["rps"] for r in runs])
            p99 = median([r["p99_us"] for r in runs])
            cpu = median([r["server_cpu_us_per_req"] for r in runs])
            gen = median([r["bench_cpu_s"] / r["duration"] for r in runs])
            errs = sum(r["errors"] for r in runs)
            rows.append([name, server, fmt(rps, ",.0f"), fmt(p99, ",.0f"),
                         fmt(cpu, ".2f"), fmt(gen * 100, ".0f") + "%",
                         fmt(rps / ref_rps, ".2f") + "x",
                         fmt(ref_cpu / cpu if cpu else None, ".2f") + "x"
                         if not gen_limited else
                         fmt(cpu / ref_cpu if ref_cpu else None, ".2f") + "x cpu",
                         str(errs), "CPU/req" if gen_limited else "req/s"])
    head = ["scenario", "server", "requests/s", "p99 µs", "server CPU µs/req",
            "bench CPU", "req/s vs C", "CPU vs C", "errors", "compare by"]
    cpu_model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# luaserv benchmark, {now}", "",
             f"Machine: {os.cpu_count()} CPUs ({cpu_model}); server on CPU "
             f"{SERVER_CPU}, luaserv-bench on CPU {BENCH_CPU} (taskset). "
             f"{'QUICK run: ' if QUICK else ''}{D} s a run, median of "
             f"{REPEATS}, runs interleaved."
             + ("" if parts == PARTS else
                " Only: " + ", ".join(parts) + "."), ""]
    if "lines" in parts:
        lines += [
             "\"CPU vs C\" is the server's CPU time per request relative to "
             "the bare C server (lower is better; 1.10x = 10 % more). Where "
             "the load generator is the limit (P=1, short connections) that "
             "is the figure to compare; elsewhere requests/s is.", "",
             "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(str(x) for x in r) + " |")
    if idle:
        lines += ["", f"Idle connections ({IDLE_CONNS}), resident memory above "
              "the empty server:", "",
              "| server | connections | RSS before | RSS after | bytes per connection |",
              "|---|---|---|---|---|"]
    for server, r in idle.items():
        lines.append(f"| {server} | {r['conns']} | {r['before'] // 1024} KiB "
                     f"| {r['after'] // 1024} KiB | {r['per_conn']:.0f} |")
    lines += workers_lines(pairs or {})
    lines += protocol_lines(proto or {})
    lines += shdict_lines(shd or {})
    lines += tls_bench.lines(sys.modules[__name__], tls or {})
    text = "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"
    print(text)
    # A run limited by ONLY leaves the whole run's results alone.
    base = "latest" if parts == PARTS else "partial"
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", base + ".md"), "w") as f:
        f.write(text)
    with open(os.path.join(ROOT, "bench", "results", base + ".json"),
              "w") as f:
        json.dump({"results": {f"{k[0]} | {k[1]}": v
                               for k, v in results.items()},
                   "idle": idle,
                   "workers_pairs": {
                       sc: [[a["server_cpu_us_per_req"],
                             b["server_cpu_us_per_req"]] for a, b in ps]
                       for sc, ps in (pairs or {}).items()},
                   "shdict": {str(w): {f"{k[0]} {k[1]}": v
                                       for k, v in rows.items()}
                              for w, rows in (shd or {}).items()},
                   "protocols": proto or {}, "tls": tls or {}},
                  f, indent=1)
    if "lines" in parts:
        plot(rows)


def plot(rows):
    if not shutil.which("gnuplot"):
        print("bench: gnuplot not found: no PNG (apt-get install gnuplot-nox)",
              file=sys.stderr)
        return
    data = os.path.join(ROOT, "bench", "results", "latest.dat")
    servers = list(SERVERS)
    scen = [s[0] for s in SCENARIOS]
    with open(data, "w") as f:
        f.write("scenario " + " ".join(f'"{s}"' for s in servers) + "\n")
        for sc in scen:
            vals = []
            for s in servers:
                v = next((r[2] for r in rows if r[0] == sc and r[1] == s), "-")
                vals.append(v.replace(",", "") if v != "-" else "0")
            f.write(f'"{sc}" ' + " ".join(vals) + "\n")
    png = os.path.join(ROOT, "bench", "results", "latest.png")
    script = f"""
set terminal pngcairo size 1100,560 font ",10"
set output "{png}"
set title "luaserv vs reference servers: requests/s (higher is better)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key outside right top
set ylabel "requests/s"
set yrange [0:*]
set grid ytics
set xtics rotate by -15 scale 0
plot for [i=2:{len(servers) + 1}] "{data}" using i:xtic(1) title columnheader(i)
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=False)
    print(f"bench: wrote {png}", file=sys.stderr)


if __name__ == "__main__":
    main()

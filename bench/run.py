#!/usr/bin/env python3
"""bench/run.py: `make bench`. Runs every scenario against luaserv and the
reference servers in one run, server and load generator pinned to separate
cores, interleaved and repeated; prints a table with ratios to the bare C
server and writes bench/results/latest.md and bench/results/latest.png.

QUICK=1 (or --quick): short runs, one repetition, fewer scenarios' length
(but still WORKER_PAIRS pairs for the --workers 2 row). BUILD=DIR: the
binaries' directory (default build).

Server CPU is read from /proc (schedstat: nanoseconds, every thread of the
server and its descendants) once it serves and again when the load
generator exits, and divided by every request answered in between.
"""
import json, os, statistics, subprocess, sys, time, datetime, platform, shutil

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


class Server:
    def __init__(self, name, udp=False):
        argv = SERVERS[name]
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
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if hasattr(self, "drain"):
            self.drain.wait(5)


def run_bench(port, args, duration):
    cmd = ["taskset", "-c", BENCH_CPU, BENCH, "-p", str(port), "-d",
           str(duration), "--warmup", "0.5" if QUICK else "1",
           "--check", "timestamp", "--json"] + args
    out = subprocess.run(cmd, capture_output=True, text=True,
                         timeout=duration + 30)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError("luaserv-bench failed: " + out.stderr.strip())


def one_run(server, scenario):
    name, args, _, _ = scenario
    srv = Server(server, udp="udp" in args)
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


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    for path in [BENCH, SERVERS[REFERENCE][0]]:
        if not os.path.exists(path):
            sys.exit(f"bench: {path} is missing: run make first")
    results = {}   # (scenario, server) -> [runs]
    pairs = {}     # scenario -> [(one worker's run, --workers 2's run)]
    for rep in range(REPEATS):
        for sc in SCENARIOS:
            run_servers(sc, sc[2], f"{rep + 1}/{REPEATS}", results, pairs)
    for sc in SCENARIOS:
        if WORKERS_ROW not in sc[2]:
            continue
        for k in range(len(pairs.get(sc[0], [])), WORKER_PAIRS):
            run_servers(sc, [ONE_WORKER, WORKERS_ROW], f"pair {k + 1}",
                        results, pairs)
    idle = {}
    for server in IDLE_SERVERS:
        print(f"# idle {IDLE_CONNS} connections: {server}", file=sys.stderr,
              flush=True)
        try:
            idle[server] = idle_run(server)
        except Exception as e:
            print(f"#   failed: {e}", file=sys.stderr)
    shd = {}
    for workers in (1, 2):
        print(f"# shared dict, {workers} worker(s)", file=sys.stderr,
              flush=True)
        try:
            shd[workers] = shdict_run(workers)
        except Exception as e:
            print(f"#   failed: {e}", file=sys.stderr)
    report(results, idle, shd, pairs)


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


def report(results, idle, shd=None, pairs=None):
    rows = []
    for sc in SCENARIOS:
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
             f"{REPEATS}, runs interleaved.", "",
             "\"CPU vs C\" is the server's CPU time per request relative to "
             "the bare C server (lower is better; 1.10x = 10 % more). Where "
             "the load generator is the limit (P=1, short connections) that "
             "is the figure to compare; elsewhere requests/s is.", "",
             "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(str(x) for x in r) + " |")
    lines += ["", f"Idle connections ({IDLE_CONNS}), resident memory above "
              "the empty server:", "",
              "| server | connections | RSS before | RSS after | bytes per connection |",
              "|---|---|---|---|---|"]
    for server, r in idle.items():
        lines.append(f"| {server} | {r['conns']} | {r['before'] // 1024} KiB "
                     f"| {r['after'] // 1024} KiB | {r['per_conn']:.0f} |")
    lines += workers_lines(pairs or {})
    lines += shdict_lines(shd or {})
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "latest.md"), "w") as f:
        f.write(text)
    with open(os.path.join(ROOT, "bench", "results", "latest.json"), "w") as f:
        json.dump({"results": {f"{k[0]} | {k[1]}": v
                               for k, v in results.items()},
                   "idle": idle,
                   "workers_pairs": {
                       sc: [[a["server_cpu_us_per_req"],
                             b["server_cpu_us_per_req"]] for a, b in ps]
                       for sc, ps in (pairs or {}).items()},
                   "shdict": {str(w): {f"{k[0]} {k[1]}": v
                                       for k, v in rows.items()}
                              for w, rows in (shd or {}).items()}},
                  f, indent=1)
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

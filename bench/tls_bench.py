"""bench/tls_bench.py: `make bench`'s TLS part (ONLY=tls), called by
bench/run.py with itself as `run` (its Server, run_bench, cpu_seconds, the
pinned cores and the repeat count are used as they are).

Three rows, every server on the server's core, one process each, runs
interleaved and repeated:
- full handshakes/s: luaserv-bench -m short --tls (a new connection per
  request, no session offered) against luaserv `-l tls://` serving
  scripts/handle.lua and against nginx's stream module terminating TLS
  with `return` of a line as long as luaserv's reply;
- resumed handshakes/s: the same with --tls-resume (each connection
  offers the session its previous one got: a TLS 1.3 ticket);
- pipelined requests/s over TLS (-m persistent -c 50 -P 16) against
  luaserv's own plaintext figure in the same run.

The peer is nginx's stream `return`, not its HTTP `return 200`, because
luaserv-bench speaks a line protocol: both servers then do the same TLS
work (one handshake, one small record out, close) and neither parses
HTTP. nginx never reads the request (luaserv reads and answers it), so
the comparison leans, if anything, nginx's way.

Both servers use one throwaway certificate made here with the openssl
command: RSA 2048 by default (TLS_KEY=ec for EC prime256v1). With RSA the
server's signature dominates a full handshake, so the server, not the
generator, is the limit; with EC the generator's own verify often is,
and server CPU per handshake is then the figure to compare.
"""
import os, shutil, subprocess, sys, tempfile, time

KEY = os.environ.get("TLS_KEY", "rsa")
SHORT = ["-m", "short", "-c", "32", "--check", "line"]
ROWS = [
    # row, luaserv-bench args, (ours, reference), target, compare
    ("TLS full handshakes", SHORT + ["--tls"], ("luaserv tls", "nginx"),
     0.9),
    ("TLS resumed handshakes", SHORT + ["--tls", "--tls-resume"],
     ("luaserv tls", "nginx"), 0.9),
    ("pipelined P=16, 50 conns, TLS vs plaintext",
     ["-m", "persistent", "-c", "50", "-P", "16", "--check", "timestamp"],
     ("luaserv tls", "luaserv"), 0.7),
]
REPLY = "[Tue Dec  1 05:00:00 2026] " + "x" * 16 + "\\r\\n"
NGINX_CONF = """daemon off;
master_process off;
worker_processes 1;
error_log stderr emerg;
pid {dir}/nginx.pid;
load_module {module};
events {{ worker_connections 4096; }}
stream {{
    ssl_certificate {dir}/cert.pem;
    ssl_certificate_key {dir}/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;
    server {{
        listen 127.0.0.1:{port} ssl;
        return "{reply}";
    }}
}}
"""
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


def make_cert(d):
    """A self-signed certificate for localhost and 127.0.0.1 in d."""
    key = (["-newkey", "rsa:2048"] if KEY == "rsa" else
           ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
    subprocess.run(["openssl", "req", "-x509", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", os.path.join(d, "key.pem"),
                    "-out", os.path.join(d, "cert.pem")] + key,
                   check=True, capture_output=True, timeout=60)


class Nginx:
    """nginx's stream module terminating TLS, one worker, no master, on
    the server's core; ready once a TCP connect succeeds. Stopped by its
    PID."""

    def __init__(self, run, d):
        if not shutil.which("nginx") or not os.path.exists(STREAM_MODULE):
            raise RuntimeError("nginx with its stream module is not "
                               "installed (sh .ci/deps bench)")
        self.run = run
        self.port = run.free_port()
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(dir=d, port=self.port, reply=REPLY,
                                      module=STREAM_MODULE))
        self.proc = subprocess.Popen(
            ["taskset", "-c", run.SERVER_CPU, "nginx", "-e", "stderr", "-p",
             d, "-c", conf], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline and self.proc.poll() is None:
            try:
                run.socket.create_connection(("127.0.0.1", self.port),
                                             1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not start")

    def stop(self):
        self.run.stop_proc(self.proc)


def luaserv_argv(run, d, tls):
    """luaserv serving scripts/handle.lua, over TLS when tls."""
    argv = [run.LUASERV]
    if tls:
        argv += ["-l", "tls://127.0.0.1:0", "--tls-cert",
                 os.path.join(d, "cert.pem"), "--tls-key",
                 os.path.join(d, "key.pem")]
    return argv + ["scripts/handle.lua"]


def start_luaserv(run, d, tls):
    """luaserv on the server's core as run.Server starts it, with a
    tls:// listener when tls (run.Server adds a plaintext -l itself)."""
    if not tls:
        return run.Server("luaserv", argv=luaserv_argv(run, d, False))
    srv = run.Server.__new__(run.Server)
    srv.proc = subprocess.Popen(
        ["taskset", "-c", run.SERVER_CPU] + luaserv_argv(run, d, True),
        cwd=run.ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    srv.port, deadline = None, time.time() + 10
    while time.time() < deadline:
        line = srv.proc.stdout.readline().decode()
        if not line:
            break
        if line.startswith("luaserv: listening on tls "):
            srv.port = int(line.rsplit(":", 1)[1])
            break
    if srv.port is None:
        srv.stop()
        raise RuntimeError("luaserv did not start a tls listener")
    # drain the rest of its stdout so it never blocks on a full pipe
    srv.drain = subprocess.Popen(["cat"], stdin=srv.proc.stdout,
                                 stdout=subprocess.DEVNULL)
    return srv


def one(run, d, server, args):
    """One luaserv-bench run of args against server (its CPU read around
    it): the figures, with server_cpu_us_per_req."""
    tls = server != "luaserv"
    srv = Nginx(run, d) if server == "nginx" else start_luaserv(run, d,
                                                                   tls)
    try:
        time.sleep(0.2)
        c0 = run.cpu_seconds(srv.proc.pid)
        r = run.run_bench(srv.port, args + (["--tls"] if tls and "--tls"
                                            not in args else []), run.D)
        c1 = run.cpu_seconds(srv.proc.pid)
    finally:
        srv.stop()
    total = r.get("requests_total", r["requests"])
    r["server_cpu_us_per_req"] = (c1 - c0) / total * 1e6 if total else 0
    return r


def runs(run):
    """Every row's two servers after one another, run.REPEATS times:
    {row: {server: [figures, ...]}}; a failed run is reported, not
    fatal."""
    out, d = {}, tempfile.mkdtemp(prefix="luaserv-bench-tls.")
    try:
        make_cert(d)
        for rep in range(run.REPEATS):
            for row, args, servers, _ in ROWS:
                for server in servers:
                    print(f"# run {rep + 1}/{run.REPEATS}: {row}: {server}",
                          file=sys.stderr, flush=True)
                    try:
                        r = one(run, d, server, args)
                    except Exception as e:
                        print(f"#   failed: {e}", file=sys.stderr)
                        continue
                    out.setdefault(row, {}).setdefault(server, []).append(r)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return out


def figures(run, rs):
    """Medians over runs: requests/s, server CPU µs/req, generator CPU
    share, resumed share; errors summed."""
    if not rs:
        return None
    med = run.median
    return {"rps": med([r["rps"] for r in rs]),
            "cpu": med([r["server_cpu_us_per_req"] for r in rs]),
            "gen": med([r["bench_cpu_s"] / r["duration"] for r in rs]),
            "p99": med([r["p99_us"] for r in rs]),
            "resumed": sum(r.get("tls_resumed", 0) for r in rs),
            "handshakes": sum(r.get("tls_handshakes", 0) for r in rs),
            "version": rs[-1].get("tls_version", ""),
            "errors": sum(r["errors"] for r in rs)}


def lines(run, res):
    """The TLS table: each row's luaserv against its reference, the ratio
    of requests/s (the target's figure) and of server CPU per request
    (the figure to read when the generator was the limit)."""
    if not res:
        return []
    fmt = run.fmt
    out = ["", "TLS (one worker each, both on the server's core; "
           f"certificate {'RSA 2048' if KEY == 'rsa' else 'EC prime256v1'}, "
           "the same for both): luaserv `-l tls://` (scripts/handle.lua) "
           "against nginx's stream module (`ssl`, TLSv1.2 TLSv1.3, "
           "`ssl_session_cache shared:SSL:10m`, tickets on, `return` of "
           "the same line) under luaserv-bench -m short -c 32 --tls "
           "[--tls-resume] --check line; TLS pipelined against luaserv's "
           "plaintext under -m persistent -c 50 -P 16. \"req/s ratio\" is "
           "luaserv over the reference; \"CPU ratio\" is the reference's "
           "server CPU per request over luaserv's (both: higher is better). "
           "Where the generator was busy over 90 % the CPU ratio is the "
           "one that counts.", "",
           "| row | luaserv | reference | luaserv req/s | reference req/s "
           "| luaserv CPU µs/req | reference CPU µs/req | bench CPU | "
           "resumed | errors | req/s ratio | CPU ratio | target | met |",
           "|" + "---|" * 14]
    for row, _, (ours, ref), target in ROWS:
        a = figures(run, res.get(row, {}).get(ours, []))
        b = figures(run, res.get(row, {}).get(ref, []))
        if not (a and b and a["rps"] and b["rps"]):
            out.append(f"| {row} | {ours} | {ref} |" + " - |" * 10
                       + " failed |")
            continue
        rr, cr = a["rps"] / b["rps"], b["cpu"] / a["cpu"] if a["cpu"] else None
        gen_bound = max(a["gen"], b["gen"]) > 0.9 and ref == "nginx"
        by = cr if gen_bound and cr else rr
        res_share = (f"{a['resumed']}/{a['handshakes']} vs "
                     f"{b['resumed']}/{b['handshakes']}"
                     if "resumed" in row else "-")
        out.append(
            f"| {row} | {ours} ({a['version'] or 'plain'}) | {ref} "
            f"({b['version'] or 'plain'}) | {a['rps']:,.0f} | "
            f"{b['rps']:,.0f} | {a['cpu']:.1f} | {b['cpu']:.1f} | "
            f"{a['gen'] * 100:.0f}%/{b['gen'] * 100:.0f}% | {res_share} | "
            f"{a['errors']}/{b['errors']} | {rr:.2f}x | "
            f"{fmt(cr, '.2f')}x | ≥ {target}x | "
            f"{'yes' if by >= target else 'no'}"
            f"{' (by CPU)' if gen_bound else ''} |")
    return out

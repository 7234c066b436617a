/* main.c: luaserv, the server: options, start-up, signals, shutdown. */
#include "lsv.h"
#include "loop.h"
#include "conn.h"
#include "dispatch.h"
#include "listener.h"
#include "lua_api.h"
#include "udp.h"
#include "config.h"
#include "guard.h"
#include "log.h"
#include "net.h"
#include "notify.h"
#include "script.h"
#include "resolve.h"
#include "sched.h"
#include "server.h"
#include "vm.h"

#include <errno.h>
#include <getopt.h>
#include <lauxlib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_SCRIPT "scripts/handle.lua"
#define DEFAULT_PORT 21567
#define MAX_LISTEN 64

static void usage(FILE *f)
{
    fprintf(f,
"usage: luaserv [options] [SCRIPT]\n"
"Serves the Lua handler SCRIPT (default " DEFAULT_SCRIPT ").\n"
"With no -l it listens on TCP and UDP port %d, all interfaces.\n"
"\n"
"  -l, --listen ADDR          listen on ADDR (repeatable): tcp://HOST:PORT,\n"
"                             udp://HOST:PORT, unix:/PATH, unixgram:/PATH,\n"
"                             HOST:PORT or :PORT (TCP), [::1]:PORT (IPv6)\n"
"      --idle-timeout SEC     close connections idle this long (0 = never)\n"
"      --shutdown-timeout SEC on SIGTERM/SIGINT, wait this long for\n"
"                             connections to finish (default 10)\n"
"      --high-water BYTES     queued output that pauses reading from a peer\n"
"                             (default 1048576; resumes below a quarter)\n"
"      --max-output BYTES     cap on output queued for one peer (default\n"
"                             268435456, 256 MiB; at most 3 GiB): a reply\n"
"                             that would pass it fails that connection\n"
"      --backlog N            listen backlog (default 511)\n"
"      --rcvbuf BYTES         receive buffer of udp:// and unixgram:\n"
"                             listeners (default: the kernel's)\n"
"      --sndbuf BYTES         send buffer of udp:// and unixgram: listeners\n"
"  -c, --config FILE          read listeners and settings from FILE (Lua);\n"
"                             flags override it\n"
"      --log-level LEVEL      debug, info, warn or error (default info)\n"
"      --log-format FORMAT    text (default) or json, one object a line\n"
"      --access-log           log a line per closed connection\n"
"      --admin unix:PATH      admin socket (mode 0600): stats, conns,\n"
"                             reload, eval, log-level, shutdown\n"
"      --metrics HOST:PORT    serve Prometheus metrics at GET /metrics\n"
"      --watch                reload when the script or its modules change\n"
"      --handler-timeout SEC  stop a handler call, or a script's load,\n"
"                             running longer (default 1; 0 = never): it\n"
"                             fails like a handler error\n"
"      --load-timeout SEC     the same for on_load (default 30; 0 = never)\n"
"      --task-slice N         a task yields to the loop every N Lua\n"
"                             instructions (default 10000; 0 = never)\n"
"      --lua-memory BYTES     cap on the Lua state's memory: an allocation\n"
"                             over it fails that call (default: no cap)\n"
"      --check                load SCRIPT, report problems, and exit\n"
"  -h, --help                 show this help\n"
"  -V, --version              show the version\n"
"\n"
"SIGHUP reloads the handler scripts; SIGTERM and SIGINT stop gracefully.\n"
"A ready line per listener goes to stdout once it accepts (JSON with\n"
"--log-format json); the log goes to stderr.\n"
"Exit status: 0 after a clean shutdown, 1 when a listener cannot be\n"
"opened, 2 for bad options or a script that fails to load.\n",
            DEFAULT_PORT);
}

static lsv_server_t server;

/* --- the server's hooks ------------------------------------------------- */

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop; (void)revents;
    lsv_server_t *srv = w->data;
    if (srv->stopping) {
        lsv_warn("signal %d again: closing now", w->signum);
        lsv_loop_stop_now(srv);
        return;
    }
    lsv_info("signal %d: shutting down", w->signum);
    lsv_loop_stop(srv);
}

static void sighup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop; (void)revents;
    char err[4096];
    lsv_info("SIGHUP: reloading");
    lsv_reload_all(w->data, err, sizeof err);
}

static const lsv_hooks_t hooks = {
    .accept = lsv_dispatch_accept,
    .datagram = lsv_dispatch_datagram,
    .turn = lsv_sched_run,
    .stopping = lsv_dispatch_stopping,
    .low_memory = lsv_dispatch_low_memory,
    .notify = lsv_notify,
};

static ev_signal sigterm_watcher, sigint_watcher, sighup_watcher;

/* --- options ------------------------------------------------------------ */

enum {
    OPT_IDLE = 256, OPT_SHUTDOWN, OPT_HIGH_WATER, OPT_BACKLOG,
    OPT_LOG_LEVEL, OPT_LOG_FORMAT, OPT_CHECK, OPT_ADMIN, OPT_METRICS,
    OPT_WATCH, OPT_ACCESS_LOG, OPT_HANDLER_TIMEOUT, OPT_LUA_MEMORY,
    OPT_RCVBUF, OPT_SNDBUF,
    OPT_LOAD_TIMEOUT, OPT_TASK_SLICE,
    OPT_MAX_OUTPUT
};

static const struct option long_opts[] = {
    { "listen", required_argument, NULL, 'l' },
    { "config", required_argument, NULL, 'c' },
    { "idle-timeout", required_argument, NULL, OPT_IDLE },
    { "shutdown-timeout", required_argument, NULL, OPT_SHUTDOWN },
    { "high-water", required_argument, NULL, OPT_HIGH_WATER },
    { "backlog", required_argument, NULL, OPT_BACKLOG },
    { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
    { "log-format", required_argument, NULL, OPT_LOG_FORMAT },
    { "access-log", no_argument, NULL, OPT_ACCESS_LOG },
    { "admin", required_argument, NULL, OPT_ADMIN },
    { "metrics", required_argument, NULL, OPT_METRICS },
    { "watch", no_argument, NULL, OPT_WATCH },
    { "handler-timeout", required_argument, NULL, OPT_HANDLER_TIMEOUT },
    { "lua-memory", required_argument, NULL, OPT_LUA_MEMORY },
    { "rcvbuf", required_argument, NULL, OPT_RCVBUF },
    { "sndbuf", required_argument, NULL, OPT_SNDBUF },
    { "load-timeout", required_argument, NULL, OPT_LOAD_TIMEOUT },
    { "task-slice", required_argument, NULL, OPT_TASK_SLICE },
    { "max-output", required_argument, NULL, OPT_MAX_OUTPUT },
    { "check", no_argument, NULL, OPT_CHECK },
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { NULL, 0, NULL, 0 }
};

static void bad_option(const char *fmt, const char *arg)
{
    fprintf(stderr, "luaserv: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    usage(stderr);
    exit(2);
}

static double parse_seconds(const char *s, const char *opt)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < 0 || v > 1e9)
        bad_option("%s needs a number of seconds >= 0", opt);
    return v;
}

static long parse_count(const char *s, const char *opt, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        bad_option("%s needs a whole number in range", opt);
    return v;
}

/* Why no default script was found: every path tried and its error, for
 * the "cannot open" message; empty while one was. */
static char default_missing[1024];

/* Resolves the default script: the source tree's, else the installed one
 * (under the PREFIX the binary was built with). When neither is readable
 * it returns DEFAULT_SCRIPT, whose load then fails, and fills
 * default_missing so that failure can say where it looked. */
static const char *default_script(void)
{
    static const char *const tried[] = {
        DEFAULT_SCRIPT, LSV_PREFIX "/share/luaserv/" DEFAULT_SCRIPT
    };
    size_t n = (size_t)snprintf(default_missing, sizeof default_missing,
                                "cannot open the default script; tried");
    for (size_t i = 0; i < sizeof tried / sizeof *tried; i++) {
        if (access(tried[i], R_OK) == 0) {
            default_missing[0] = '\0';
            return tried[i];
        }
        if (n < sizeof default_missing)
            n += (size_t)snprintf(default_missing + n,
                                  sizeof default_missing - n, "%s %s (%s)",
                                  i ? "," : "", tried[i], strerror(errno));
    }
    return DEFAULT_SCRIPT;
}

/* A server holds a descriptor per connection: raise the soft limit to the
 * hard one, as nginx's worker_rlimit_nofile would. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Parses the command line into srv->opt and f. Exits 0 for --help and
 * --version, 2 for a bad option. */
static void parse_args(lsv_server_t *srv, lsv_flags_t *f, int argc,
                       char **argv)
{
    int c;
    memset(f, 0, sizeof *f);
    f->log_level = -1;
    while ((c = getopt_long(argc, argv, "l:c:hV", long_opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            if (f->nlisten == LSV_MAX_LISTEN)
                bad_option("too many -l (max %s)", "64");
            f->listen[f->nlisten++] = optarg;
            break;
        case 'c':
            f->config = optarg;
            break;
        case OPT_IDLE:
            srv->opt.idle_timeout = parse_seconds(optarg, "--idle-timeout");
            f->set_idle = 1;
            break;
        case OPT_SHUTDOWN:
            srv->opt.shutdown_timeout =
                parse_seconds(optarg, "--shutdown-timeout");
            f->set_shutdown = 1;
            break;
        case OPT_HIGH_WATER:
            srv->opt.high_water = (size_t)parse_count(optarg, "--high-water",
                                                      1024, 1L << 30);
            f->set_high_water = 1;
            break;
        case OPT_RCVBUF:
            srv->opt.rcvbuf = (size_t)parse_count(optarg, "--rcvbuf", 1024,
                                                  1L << 30);
            break;
        case OPT_SNDBUF:
            srv->opt.sndbuf = (size_t)parse_count(optarg, "--sndbuf", 1024,
                                                  1L << 30);
            break;
        case OPT_BACKLOG:
            srv->opt.backlog = (int)parse_count(optarg, "--backlog", 1, 65535);
            f->set_backlog = 1;
            break;
        case OPT_LOG_LEVEL:
            f->log_level = lsv_log_level = lsv_log_parse_level(optarg);
            if (lsv_log_level < 0)
                bad_option("unknown log level '%s' (debug, info, warn, "
                           "error)", optarg);
            break;
        case OPT_LOG_FORMAT:
            if (strcmp(optarg, "text") && strcmp(optarg, "json"))
                bad_option("unknown log format '%s' (text, json)", optarg);
            f->log_format = optarg;
            lsv_log_format = optarg[0] == 'j' ? LSV_LOG_JSON : LSV_LOG_TEXT;
            break;
        case OPT_ACCESS_LOG:
            f->access_log = srv->opt.access_log = 1;
            break;
        case OPT_ADMIN:
            f->admin = optarg;
            break;
        case OPT_METRICS:
            f->metrics = optarg;
            break;
        case OPT_WATCH:
            f->watch = srv->opt.watch = 1;
            break;
        case OPT_HANDLER_TIMEOUT:
            srv->opt.handler_timeout =
                parse_seconds(optarg, "--handler-timeout");
            f->set_handler_timeout = 1;
            break;
        case OPT_LUA_MEMORY:
            srv->opt.lua_memory = (size_t)parse_count(optarg, "--lua-memory",
                                                      0, 1L << 40);
            f->set_lua_memory = 1;
            break;
        case OPT_LOAD_TIMEOUT:
            srv->opt.load_timeout = parse_seconds(optarg, "--load-timeout");
            f->set_load_timeout = 1;
            break;
        case OPT_TASK_SLICE:
            srv->opt.task_slice = (int)parse_count(optarg, "--task-slice", 0,
                                                   1L << 30);
            f->set_task_slice = 1;
            break;
        case OPT_MAX_OUTPUT:
            /* Output buffers count in uint32: at most 3 GiB. */
            srv->opt.max_output = (size_t)parse_count(optarg, "--max-output",
                                                      65536, 3L << 30);
            f->set_max_output = 1;
            break;
        case OPT_CHECK:
            f->check = 1;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        case 'V':
            printf("luaserv %s (%s, libev %d.%d)\n", LSV_VERSION, LUA_RELEASE,
                   ev_version_major(), ev_version_minor());
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (argc - optind > 1) bad_option("one script at most (got '%s' too)",
                                      argv[optind + 1]);
    f->script = optind < argc ? argv[optind] : NULL;
    /* Check addresses now, so a typo exits 2 before anything starts. */
    for (int i = 0; i < f->nlisten; i++) {
        lsv_addr_t a;
        char err[LSV_ERRLEN];
        if (lsv_net_parse(f->listen[i], &a, err) != LSV_OK)
            bad_option("%s", err);
    }
}

/* Opens the plan's listeners, each with its script's handler. Exits 1 when
 * an address cannot be opened, 2 when a script fails to load. */
static void open_listeners(lsv_server_t *srv, lsv_plan_t *p)
{
    char err[4096];
    for (int i = 0; i < p->n; i++) {
        lsv_plan_entry_t *e = &p->e[i];
        lsv_script_t *s = lsv_script_load(srv, e->script, err, sizeof err);
        if (s == NULL) {
            fprintf(stderr, "luaserv: %s\n", err);
            exit(2);
        }
        s->builtin = e->builtin;
        mode_t mask = 0;
        if (e->private_socket) mask = umask(077);   /* admin: mode 0600 */
        lsv_listener_t *l = lsv_listener_open(srv, &e->addr, e->fd, err);
        if (e->private_socket) {
            umask(mask);
            if (l) chmod(e->addr.path, 0600);
        }
        if (l == NULL) {
            if (e->optional && (errno == EAFNOSUPPORT ||
                                errno == EADDRNOTAVAIL)) {
                lsv_info("%s (skipped)", err);
                continue;
            }
            fprintf(stderr, "luaserv: %s\n", err);
            exit(1);
        }
        if (lsv_listener_is_dgram(l)) lsv_udp_attach(l);
        l->script = s;
        l->framing = s->framing;
        if (lsv_config_apply(srv, p, e, l) != LSV_OK) exit(2);
    }
}

/* Runs each user script's on_load once, each within --load-timeout.
 * Exits 2 on an error. */
static void run_on_load(lsv_server_t *srv)
{
    for (lsv_script_t *s = srv->vm->scripts; s; s = s->next) {
        if (s->builtin) continue;
        char err[4096];
        if (lsv_script_on_load(s, err, sizeof err) != LSV_OK) {
            fprintf(stderr, "luaserv: %s: on_load failed: %s\n", s->path,
                    err);
            exit(2);
        }
    }
}

/* Unix socket files we bound, removed at any exit, including os.exit()
 * from a handler or an admin eval, which skips the normal stop. */
static void remove_socket_files(void)
{
    for (lsv_listener_t *l = server.listeners; l; l = l->next)
        if (l->fd >= 0 && !l->inherited && (l->addr.kind == LSV_NET_UNIX ||
                                            l->addr.kind == LSV_NET_UNIXGRAM))
            unlink(l->addr.path);
}


int main(int argc, char **argv)
{
    lsv_server_t *srv = &server;
    static lsv_plan_t plan;
    lsv_flags_t flags;

    srv->opt.idle_timeout = 0;
    srv->opt.shutdown_timeout = 10;
    srv->opt.high_water = 1024 * 1024;
    srv->opt.backlog = 511;
    srv->opt.handler_timeout = 1;
    srv->opt.load_timeout = 30;
    srv->opt.task_slice = 10000;
    srv->opt.max_output = 256u << 20;
    parse_args(srv, &flags, argc, argv);
    if (srv->opt.lua_memory && srv->opt.lua_memory < (1u << 20))
        bad_option("--lua-memory needs at least %s bytes", "1048576");
    srv->opt.low_water = srv->opt.high_water / 4;

    signal(SIGPIPE, SIG_IGN);
    atexit(remove_socket_files);
    raise_fd_limit();
    setvbuf(stdout, NULL, _IOLBF, 0);   /* print() in handlers, promptly */
    srv->loop = ev_default_loop(EVFLAG_AUTO);
    if (srv->loop == NULL) {
        fprintf(stderr, "luaserv: cannot initialise libev\n");
        return 1;
    }
    lsv_log_attach(srv->loop);
    srv->hooks = &hooks;
    lsv_loop_init(srv, srv->loop);
    lsv_lua_open(srv, flags.script ? flags.script : DEFAULT_SCRIPT);
    srv->resolver = lsv_resolver_new(srv->loop);
    static lsv_listener_t outbound;   /* what outbound conns point at */
    snprintf(outbound.name, sizeof outbound.name, "outbound");
    outbound.srv = srv;
    outbound.fd = -1;
    outbound.opt.high_water = srv->opt.high_water;
    outbound.opt.low_water = srv->opt.low_water;
    lsv_frame_spec_init(&outbound.framing, LSV_FRAME_LINE);
    srv->outbound_listener = &outbound;
    static lsv_listener_t server_listener;   /* counts what has no listener */
    snprintf(server_listener.name, sizeof server_listener.name, "server");
    server_listener.srv = srv;
    server_listener.fd = -1;
    srv->server_listener = &server_listener;
    lsv_notify_take_fds(srv);

    if (lsv_config_load(srv, &flags, &plan) != LSV_OK) return 2;
    /* Before any script runs: a script that loops at load is stopped. */
    lsv_guard_set_load_timeout(srv->opt.load_timeout);
    lsv_guard_init(srv->opt.handler_timeout, srv->opt.lua_memory);
    outbound.opt.high_water = srv->opt.high_water;
    outbound.opt.low_water = srv->opt.low_water;
    plan.main_script = flags.script;
    plan.config = flags.config;
    if (plan.main_script == NULL && plan.cfg_ref != LUA_NOREF) {
        lua_rawgeti(srv->vm->L, LUA_REGISTRYINDEX, plan.cfg_ref);
        lua_getfield(srv->vm->L, -1, "handler");
        plan.main_script = lua_tostring(srv->vm->L, -1);   /* cfg anchors it */
        lua_pop(srv->vm->L, 2);
    }
    if (plan.main_script == NULL) {
        plan.main_script = default_script();
        /* With -l, or with no config file, the default script serves. */
        if (default_missing[0] && (flags.nlisten > 0 ||
                                   plan.cfg_ref == LUA_NOREF)) {
            fprintf(stderr, "luaserv: %s\n", default_missing);
            return 2;
        }
    }
    if (lsv_config_plan(srv, &flags, &plan) != LSV_OK) return 2;
    /* Load every script (and run on_load) before opening anything. */
    for (int i = 0; i < plan.n; i++) {
        char err[4096];
        lsv_script_t *s = lsv_script_load(srv, plan.e[i].script, err,
                                          sizeof err);
        if (s == NULL) {
            fprintf(stderr, "luaserv: %s\n", default_missing[0] &&
                    plan.e[i].script == plan.main_script ? default_missing
                                                         : err);
            return 2;
        }
        s->builtin = plan.e[i].builtin;
    }
    if (flags.check) {
        for (lsv_script_t *s = srv->vm->scripts; s; s = s->next)
            if (!s->builtin)
                printf("luaserv: %s is a valid handler script\n", s->path);
        lsv_script_free_all(srv);
        lsv_vm_close(srv);
        return 0;
    }
    run_on_load(srv);
    open_listeners(srv, &plan);
    lsv_notify_close_unused(srv);
    if (srv->opt.watch) lsv_reload_watch(srv);

    ev_signal_init(&sigterm_watcher, signal_cb, SIGTERM);
    ev_signal_init(&sigint_watcher, signal_cb, SIGINT);
    ev_signal_init(&sighup_watcher, sighup_cb, SIGHUP);
    sigterm_watcher.data = sigint_watcher.data = sighup_watcher.data = srv;
    ev_signal_start(srv->loop, &sigterm_watcher);
    ev_signal_start(srv->loop, &sigint_watcher);
    ev_signal_start(srv->loop, &sighup_watcher);

    lsv_listener_start_all(srv);
    for (lsv_listener_t *l = srv->listeners; l; l = l->next) {
        const char *n = l->name;
        const char *sep = strstr(n, "://");
        lsv_log_ready(lsv_net_kind_name(l->addr.kind),
                      sep ? sep + 3 : strchr(n, ':') + 1);
    }
    lsv_info("serving %s (pid %d)", plan.main_script, (int)getpid());
    lsv_notify(srv, "READY=1");

    ev_run(srv->loop, 0);

    lsv_loop_close(srv);
    ev_signal_stop(srv->loop, &sigterm_watcher);
    ev_signal_stop(srv->loop, &sigint_watcher);
    ev_signal_stop(srv->loop, &sighup_watcher);
    lsv_sched_free_all(srv);
    lsv_listener_free_all(srv);
    lsv_script_free_all(srv);
    lsv_vm_close(srv);
    lsv_resolver_free(srv->resolver);
    lsv_server_free_bufs(srv);
    lsv_log_detach();
    ev_loop_destroy(srv->loop);
    lsv_info("stopped");
    return 0;
}

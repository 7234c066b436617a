/* main.c: luaserv, the server: options, start-up, signals, shutdown. */
#include "lsv.h"
#include "conn.h"
#include "listener.h"
#include "log.h"
#include "net.h"
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
"      --backlog N            listen backlog (default 511)\n"
"      --log-level LEVEL      debug, info, warn or error (default info)\n"
"      --check                load SCRIPT, report problems, and exit\n"
"  -h, --help                 show this help\n"
"  -V, --version              show the version\n"
"\n"
"Exit status: 0 after a clean shutdown, 1 when a listener cannot be\n"
"opened, 2 for bad options or a script that fails to load.\n",
            DEFAULT_PORT);
}

static lsv_server_t server;

/* --- read buffer pool --------------------------------------------------- */

char *lsv_server_get_buf(lsv_server_t *srv)
{
    if (srv->nfree_bufs) return srv->free_bufs[--srv->nfree_bufs];
    return lsv_malloc(LSV_READ_SIZE);
}

void lsv_server_put_buf(lsv_server_t *srv, char *p)
{
    if (srv->nfree_bufs < (int)(sizeof srv->free_bufs / sizeof *srv->free_bufs))
        srv->free_bufs[srv->nfree_bufs++] = p;
    else
        free(p);
}

/* --- stopping ----------------------------------------------------------- */

static void call_on_stop(lsv_server_t *srv)
{
    lua_State *L = srv->L;
    for (lsv_listener_t *l = srv->listeners; l; l = l->next) {
        /* Each distinct handler table gets one call. */
        int seen = 0;
        for (lsv_listener_t *p = srv->listeners; p != l; p = p->next)
            if (p->handler_ref == l->handler_ref) seen = 1;
        if (seen || !lsv_vm_get_fn(L, l->handler_ref, "on_stop")) continue;
        if (lsv_vm_pcall(L, 0, 0) != LUA_OK) {
            lsv_error("handler error in on_stop: %s", lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    }
}

static void shutdown_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)revents;
    lsv_server_t *srv = container_of(w, lsv_server_t, shutdown_timer);
    int n = 0;
    for (lsv_conn_t *c = srv->conns; c; c = c->next) n++;
    lsv_warn("shutdown timeout: closing %d connection%s that did not finish",
             n, n == 1 ? "" : "s");
    lsv_conn_abort_all(srv, "shutdown");
    lsv_server_maybe_done(srv);
}

void lsv_server_stop(lsv_server_t *srv)
{
    if (srv->stopping) return;
    srv->stopping = 1;
    lsv_info("stopping: no new connections; finishing open ones "
             "(up to %.1f s)", srv->opt.shutdown_timeout);
    lsv_listener_close_all(srv);
    call_on_stop(srv);
    ev_timer_set(&srv->shutdown_timer, srv->opt.shutdown_timeout, 0.);
    ev_timer_start(srv->loop, &srv->shutdown_timer);
    lsv_conn_drain_all(srv);
    lsv_server_maybe_done(srv);
}

void lsv_server_maybe_done(lsv_server_t *srv)
{
    if (srv->stopping && srv->conns == NULL) ev_break(srv->loop, EVBREAK_ALL);
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop; (void)revents;
    lsv_server_t *srv = w->data;
    if (srv->stopping) {
        lsv_warn("signal %d again: closing now", w->signum);
        lsv_conn_abort_all(srv, "shutdown");
        ev_break(srv->loop, EVBREAK_ALL);
        return;
    }
    lsv_info("signal %d: shutting down", w->signum);
    lsv_server_stop(srv);
}

/* Before the loop polls: give conns their input turn, run the tasks that
 * became ready, then write what everyone queued. Work queued after this
 * (by events libev runs later in the turn) kicks the idle watcher, so the
 * loop comes back here instead of blocking. */
static void flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    lsv_server_t *srv = container_of(w, lsv_server_t, flush_watcher);
    ev_idle_stop(loop, &srv->kick_watcher);
    lsv_conn_run_again(srv);
    lsv_sched_run(srv);
    lsv_conn_flush_pending(srv);
}

static void kick_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)revents;
    ev_idle_stop(loop, w);   /* its being active was the point */
}

/* --- options ------------------------------------------------------------ */

enum {
    OPT_IDLE = 256, OPT_SHUTDOWN, OPT_HIGH_WATER, OPT_BACKLOG,
    OPT_LOG_LEVEL, OPT_CHECK
};

static const struct option long_opts[] = {
    { "listen", required_argument, NULL, 'l' },
    { "idle-timeout", required_argument, NULL, OPT_IDLE },
    { "shutdown-timeout", required_argument, NULL, OPT_SHUTDOWN },
    { "high-water", required_argument, NULL, OPT_HIGH_WATER },
    { "backlog", required_argument, NULL, OPT_BACKLOG },
    { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
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

/* Resolves the default script: the source tree's, else the installed one. */
static const char *default_script(void)
{
    if (access(DEFAULT_SCRIPT, R_OK) == 0) return DEFAULT_SCRIPT;
    static const char installed[] = LSV_PREFIX "/share/luaserv/"
                                    DEFAULT_SCRIPT;
    if (access(installed, R_OK) == 0) return installed;
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

/* Opens a listener or exits with status 1 naming the address. */
static lsv_listener_t *open_or_die(lsv_server_t *srv, const lsv_addr_t *a,
                                   int optional)
{
    char err[LSV_ERRLEN];
    lsv_listener_t *l = lsv_listener_open(srv, a, err);
    if (l) return l;
    if (optional && (errno == EAFNOSUPPORT || errno == EADDRNOTAVAIL)) {
        lsv_info("%s (skipped)", err);
        return NULL;
    }
    fprintf(stderr, "luaserv: %s\n", err);
    exit(1);
}

/* Without -l, a script may name its own addresses: handler.listen, a
 * string or a list of them (luaserv.socketserver sets it from ADDR).
 * Returns LSV_ERR after printing the problem. */
static int script_listen(lsv_server_t *srv, int ref, lsv_addr_t *addrs,
                         int *naddrs)
{
    lua_State *L = srv->L;
    char err[LSV_ERRLEN];
    int rc = LSV_OK;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    int t = lua_getfield(L, -1, "listen");
    if (t == LUA_TSTRING) {
        lua_createtable(L, 1, 0);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);
    } else if (t != LUA_TTABLE && t != LUA_TNIL) {
        fprintf(stderr, "luaserv: handler.listen must be an address or a "
                "list of addresses, not a %s\n", lua_typename(L, t));
        rc = LSV_ERR;
    }
    if (lua_istable(L, -1)) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
        for (lua_Integer i = 1; i <= n && rc == LSV_OK; i++) {
            lua_rawgeti(L, -1, i);
            const char *spec = lua_tostring(L, -1);
            if (*naddrs == MAX_LISTEN) {
                fprintf(stderr, "luaserv: handler.listen: too many\n");
                rc = LSV_ERR;
            } else if (spec == NULL ||
                       lsv_net_parse(spec, &addrs[*naddrs], err) != LSV_OK) {
                fprintf(stderr, "luaserv: handler.listen[%lld]: %s\n",
                        (long long)i, spec ? err : "not a string");
                rc = LSV_ERR;
            } else {
                (*naddrs)++;
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 2);
    return rc;
}

int main(int argc, char **argv)
{
    lsv_server_t *srv = &server;
    const char *listen_specs[MAX_LISTEN];
    int nlisten = 0, check_only = 0, c;

    srv->opt.idle_timeout = 0;
    srv->opt.shutdown_timeout = 10;
    srv->opt.high_water = 1024 * 1024;
    srv->opt.backlog = 511;

    while ((c = getopt_long(argc, argv, "l:hV", long_opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            if (nlisten == MAX_LISTEN) bad_option("too many -l (max %s)", "64");
            listen_specs[nlisten++] = optarg;
            break;
        case OPT_IDLE:
            srv->opt.idle_timeout = parse_seconds(optarg, "--idle-timeout");
            break;
        case OPT_SHUTDOWN:
            srv->opt.shutdown_timeout =
                parse_seconds(optarg, "--shutdown-timeout");
            break;
        case OPT_HIGH_WATER:
            srv->opt.high_water = (size_t)parse_count(optarg, "--high-water",
                                                      1024, 1L << 30);
            break;
        case OPT_BACKLOG:
            srv->opt.backlog = (int)parse_count(optarg, "--backlog", 1, 65535);
            break;
        case OPT_LOG_LEVEL:
            lsv_log_level = lsv_log_parse_level(optarg);
            if (lsv_log_level < 0)
                bad_option("unknown log level '%s' (debug, info, warn, "
                           "error)", optarg);
            break;
        case OPT_CHECK:
            check_only = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("luaserv %s (%s, libev %d.%d)\n", LSV_VERSION, LUA_RELEASE,
                   ev_version_major(), ev_version_minor());
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (argc - optind > 1) bad_option("one script at most (got '%s' too)",
                                      argv[optind + 1]);
    srv->opt.low_water = srv->opt.high_water / 4;
    const char *script = optind < argc ? argv[optind] : default_script();

    /* Parse every address before doing anything, so a typo exits 2. */
    lsv_addr_t addrs[MAX_LISTEN + 4];
    int optional[MAX_LISTEN + 4] = { 0 };
    int naddrs = 0;
    char err[LSV_ERRLEN];
    for (int i = 0; i < nlisten; i++)
        if (lsv_net_parse(listen_specs[i], &addrs[naddrs++], err) != LSV_OK)
            bad_option("%s", err);

    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    setvbuf(stdout, NULL, _IOLBF, 0);   /* print() in handlers, promptly */
    srv->loop = ev_default_loop(EVFLAG_AUTO);
    if (srv->loop == NULL) {
        fprintf(stderr, "luaserv: cannot initialise libev\n");
        return 1;
    }
    ev_idle_init(&srv->kick_watcher, kick_cb);
    ev_prepare_init(&srv->flush_watcher, flush_cb);
    ev_prepare_start(srv->loop, &srv->flush_watcher);
    ev_unref(srv->loop);   /* flushing alone does not keep the loop up */
    lsv_vm_open(srv, script);
    srv->resolver = lsv_resolver_new(srv->loop);
    static lsv_listener_t outbound;   /* what outbound conns point at */
    snprintf(outbound.name, sizeof outbound.name, "outbound");
    outbound.srv = srv;
    outbound.fd = -1;
    outbound.handler_ref = LUA_NOREF;
    lsv_frame_spec_init(&outbound.framing, LSV_FRAME_LINE);
    srv->outbound_listener = &outbound;

    int ref;
    lsv_frame_spec_t framing;
    char lerr[4096];
    if (lsv_vm_load(srv, script, &ref, &framing, lerr, sizeof lerr) != LSV_OK) {
        fprintf(stderr, "luaserv: %s\n", lerr);
        return 2;
    }
    if (nlisten == 0 && script_listen(srv, ref, addrs, &naddrs) != LSV_OK)
        return 2;
    if (naddrs == 0) {
        static const char *const defaults[] = {
            "tcp://0.0.0.0:21567", "tcp://[::]:21567",
            "udp://0.0.0.0:21567", "udp://[::]:21567"
        };
        for (int i = 0; i < 4; i++) {
            lsv_net_parse(defaults[i], &addrs[naddrs], err);
            optional[naddrs++] = i % 2;   /* IPv6 may be off on this host */
        }
    }
    if (check_only) {
        printf("luaserv: %s is a valid handler script\n", script);
        lsv_vm_close(srv);
        return 0;
    }

    if (lsv_vm_get_fn(srv->L, ref, "on_load") &&
        lsv_vm_pcall(srv->L, 0, 0) != LUA_OK) {
        fprintf(stderr, "luaserv: %s: on_load failed: %s\n", script,
                lua_tostring(srv->L, -1));
        return 2;
    }

    for (int i = 0; i < naddrs; i++) {
        lsv_listener_t *l = open_or_die(srv, &addrs[i], optional[i]);
        if (l == NULL) continue;
        l->handler_ref = ref;
        l->framing = framing;
    }

    ev_signal_init(&srv->sigterm_watcher, signal_cb, SIGTERM);
    ev_signal_init(&srv->sigint_watcher, signal_cb, SIGINT);
    srv->sigterm_watcher.data = srv->sigint_watcher.data = srv;
    ev_signal_start(srv->loop, &srv->sigterm_watcher);
    ev_signal_start(srv->loop, &srv->sigint_watcher);
    ev_init(&srv->shutdown_timer, shutdown_timer_cb);

    lsv_listener_start_all(srv);
    for (lsv_listener_t *l = srv->listeners; l; l = l->next) {
        const char *n = l->name;
        const char *sep = strstr(n, "://");
        char kind[16];
        snprintf(kind, sizeof kind, "%s", lsv_net_kind_name(l->addr.kind));
        fprintf(stderr, "luaserv: listening on %s %s\n", kind,
                sep ? sep + 3 : strchr(n, ':') + 1);
    }
    lsv_info("serving %s (pid %d)", script, (int)getpid());

    ev_run(srv->loop, 0);

    /* Reached after a graceful stop: everything is closed or aborted. */
    lsv_conn_abort_all(srv, "shutdown");
    lsv_conn_flush_pending(srv);
    ev_timer_stop(srv->loop, &srv->shutdown_timer);
    ev_ref(srv->loop);
    ev_prepare_stop(srv->loop, &srv->flush_watcher);
    ev_idle_stop(srv->loop, &srv->kick_watcher);
    ev_signal_stop(srv->loop, &srv->sigterm_watcher);
    ev_signal_stop(srv->loop, &srv->sigint_watcher);
    lsv_sched_free_all(srv);
    lsv_listener_free_all(srv);
    lsv_vm_close(srv);
    lsv_resolver_free(srv->resolver);
    while (srv->nfree_bufs) free(srv->free_bufs[--srv->nfree_bufs]);
    ev_loop_destroy(srv->loop);
    lsv_info("stopped");
    return 0;
}

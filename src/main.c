/* main.c: luaserv, the server: start-up, signals, shutdown. */
#include "lsv.h"
#include "conn.h"
#include "listener.h"
#include "config.h"
#include "guard.h"
#include "log.h"
#include "net.h"
#include "notify.h"
#include "options.h"
#include "script.h"
#include "resolve.h"
#include "sched.h"
#include "server.h"
#include "vm.h"

#include <errno.h>
#include <lauxlib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_SCRIPT LSV_DEFAULT_SCRIPT

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
    lsv_notify(srv, "STOPPING=1");
    lsv_listener_close_all(srv);
    call_on_stop(srv);
    ev_timer_set(&srv->shutdown_timer, srv->opt.shutdown_timeout, 0.);
    ev_timer_start(srv->loop, &srv->shutdown_timer);
    lsv_conn_drain_all(srv);
    lsv_server_maybe_done(srv);
}

static void stop_soon_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)revents;
    lsv_server_stop(container_of(w, lsv_server_t, stop_soon));
}

void lsv_server_stop_soon(lsv_server_t *srv)
{
    if (srv->stopping || ev_is_active(&srv->stop_soon)) return;
    ev_timer_set(&srv->stop_soon, 0., 0.);
    ev_timer_start(srv->loop, &srv->stop_soon);
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
        l->script = s;
        l->handler_ref = s->ref;
        l->framing = s->framing;
        if (lsv_config_apply(srv, p, e, l) != LSV_OK) exit(2);
    }
}

/* Runs each user script's on_load once, each within --load-timeout.
 * Exits 2 on an error. */
static void run_on_load(lsv_server_t *srv)
{
    for (lsv_script_t *s = srv->scripts; s; s = s->next) {
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

static void sighup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop; (void)revents;
    char err[4096];
    lsv_info("SIGHUP: reloading");
    lsv_reload_all(w->data, err, sizeof err);
}

int main(int argc, char **argv)
{
    lsv_server_t *srv = &server;
    static lsv_plan_t plan;
    lsv_flags_t flags;

    lsv_options_parse(&srv->opt, &flags, argc, argv);

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
    ev_idle_init(&srv->kick_watcher, kick_cb);
    ev_prepare_init(&srv->flush_watcher, flush_cb);
    ev_prepare_start(srv->loop, &srv->flush_watcher);
    ev_unref(srv->loop);   /* flushing alone does not keep the loop up */
    ev_init(&srv->shutdown_timer, shutdown_timer_cb);
    ev_init(&srv->stop_soon, stop_soon_cb);
    lsv_vm_open(srv, flags.script ? flags.script : DEFAULT_SCRIPT);
    srv->resolver = lsv_resolver_new(srv->loop);
    static lsv_listener_t outbound;   /* what outbound conns point at */
    snprintf(outbound.name, sizeof outbound.name, "outbound");
    outbound.srv = srv;
    outbound.fd = -1;
    outbound.handler_ref = LUA_NOREF;
    outbound.opt.high_water = srv->opt.high_water;
    outbound.opt.low_water = srv->opt.low_water;
    lsv_frame_spec_init(&outbound.framing, LSV_FRAME_LINE);
    srv->outbound_listener = &outbound;
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
        lua_rawgeti(srv->L, LUA_REGISTRYINDEX, plan.cfg_ref);
        lua_getfield(srv->L, -1, "handler");
        plan.main_script = lua_tostring(srv->L, -1);   /* cfg anchors it */
        lua_pop(srv->L, 2);
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
        for (lsv_script_t *s = srv->scripts; s; s = s->next)
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

    ev_signal_init(&srv->sigterm_watcher, signal_cb, SIGTERM);
    ev_signal_init(&srv->sigint_watcher, signal_cb, SIGINT);
    ev_signal_init(&srv->sighup_watcher, sighup_cb, SIGHUP);
    srv->sigterm_watcher.data = srv->sigint_watcher.data = srv;
    srv->sighup_watcher.data = srv;
    ev_signal_start(srv->loop, &srv->sigterm_watcher);
    ev_signal_start(srv->loop, &srv->sigint_watcher);
    ev_signal_start(srv->loop, &srv->sighup_watcher);

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

    /* Reached after a graceful stop: everything is closed or aborted. */
    lsv_conn_abort_all(srv, "shutdown");
    lsv_conn_flush_pending(srv);
    ev_timer_stop(srv->loop, &srv->shutdown_timer);
    ev_timer_stop(srv->loop, &srv->stop_soon);
    ev_ref(srv->loop);
    ev_prepare_stop(srv->loop, &srv->flush_watcher);
    ev_idle_stop(srv->loop, &srv->kick_watcher);
    ev_signal_stop(srv->loop, &srv->sigterm_watcher);
    ev_signal_stop(srv->loop, &srv->sigint_watcher);
    ev_signal_stop(srv->loop, &srv->sighup_watcher);
    lsv_sched_free_all(srv);
    lsv_listener_free_all(srv);
    lsv_script_free_all(srv);
    lsv_vm_close(srv);
    lsv_resolver_free(srv->resolver);
    while (srv->nfree_bufs) free(srv->free_bufs[--srv->nfree_bufs]);
    lsv_log_detach();
    ev_loop_destroy(srv->loop);
    lsv_info("stopped");
    return 0;
}

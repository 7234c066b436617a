/* main.c: luaserv, the server: start-up, signals, shutdown. */
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
#include "options.h"
#include "script.h"
#include "resolve.h"
#include "sched.h"
#include "sni_lua.h"
#include "tls_lua.h"
#include "upgrade.h"
#include "server.h"
#include "vm.h"
#include "workers.h"

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
/* A --workers master: it serves only luaserv's own handlers (the admin
 * socket, /metrics); the workers serve the rest. */
static int master;

/* --- the server's hooks ------------------------------------------------- */

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop; (void)revents;
    lsv_server_t *srv = w->data;
    /* After a hand-over (whose own SIGTERM this may be) a drain delay
     * that an earlier signal began has nothing left to wait for: this
     * signal begins the stop, it is not a second one. */
    int handed_over = lsv_upgrade_handed_over();
    if (lsv_loop_is_draining(srv) && !(handed_over && !srv->stopping)) {
        lsv_warn("signal %d again: closing now", w->signum);
        lsv_loop_stop_now(srv);
        return;
    }
    lsv_info("signal %d: shutting down", w->signum);
    /* An old generation's stop after its hand-over: nothing to wait for,
     * its listeners are the new one's already. */
    if (handed_over) lsv_loop_stop(srv);
    else lsv_loop_drain(srv);
}

static void sighup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop; (void)revents;
    lsv_server_t *srv = w->data;
    char err[4096];
    if (srv->vm->ask_reload) {   /* a worker: the master reloads them all */
        srv->vm->ask_reload(srv);
        return;
    }
    lsv_info("SIGHUP: reloading");
    lsv_reload_all(srv, err, sizeof err);
}

static const lsv_hooks_t hooks = {
    .accept = lsv_dispatch_accept,
    .admit = lsv_dispatch_admit,
    .datagram = lsv_dispatch_datagram,
    .turn = lsv_sched_run,
    .stopping = lsv_dispatch_stopping,
    .low_memory = lsv_dispatch_low_memory,
    .sni = lsv_sni_select,
    .notify = lsv_notify,
};

static ev_signal sigterm_watcher, sigint_watcher, sighup_watcher;

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

/* Opens the plan's listeners (a master's: the builtin ones), each with
 * its script's handler. Exits 1 when an address cannot be opened, 2 when
 * a script fails to load. */
static void open_listeners(lsv_server_t *srv, lsv_plan_t *p)
{
    char err[4096];
    for (int i = 0; i < p->n; i++) {
        lsv_plan_entry_t *e = &p->e[i];
        if (master && !e->builtin) continue;
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
        l->internal = e->internal;
        l->health = e->health;
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


/* A listener that accepts nothing: what outbound conns point at, and
 * "server", which counts handler errors that belong to no listener. */
static void pseudo_listener(lsv_server_t *srv, lsv_listener_t *l,
                            const char *name)
{
    snprintf(l->name, sizeof l->name, "%s", name);
    l->srv = srv;
    l->fd = -1;
    l->opt.high_water = srv->opt.high_water;
    l->opt.low_water = srv->opt.low_water;
    lsv_frame_spec_init(&l->framing, LSV_FRAME_LINE);
}

/* The loop, the hooks, the handler layer and the resolver. Exits 1 when
 * libev cannot start. */
static void init_server(lsv_server_t *srv, const lsv_flags_t *flags)
{
    static lsv_listener_t outbound, server_listener;
    signal(SIGPIPE, SIG_IGN);
    atexit(remove_socket_files);
    raise_fd_limit();
    setvbuf(stdout, NULL, _IOLBF, 0);   /* print() in handlers, promptly */
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    if (loop == NULL) {
        fprintf(stderr, "luaserv: cannot initialise libev\n");
        exit(1);
    }
    lsv_log_attach(loop);
    srv->hooks = &hooks;
    lsv_loop_init(srv, loop);
    lsv_lua_open(srv, flags->script ? flags->script : DEFAULT_SCRIPT);
    srv->resolver = lsv_resolver_new(loop);
    srv->outbound_listener = &outbound;
    srv->server_listener = &server_listener;
    lsv_notify_take_fds(srv);
    lsv_upgrade_take_fds(srv);   /* a binary upgrade's, the same way */
}

/* A master's own serving (lsv_workers_run calls it): the admin socket
 * and /metrics, on the sockets it opened. */
static void serve_builtin(lsv_server_t *srv, lsv_plan_t *plan)
{
    master = 1;
    open_listeners(srv, plan);
    lsv_listener_start_all(srv);
}

/* Reads the config file and the flags into plan, names the main script,
 * and loads every script (before anything opens). Returns LSV_OK, or
 * LSV_ERR after saying why on stderr. */
static int plan_scripts(lsv_server_t *srv, const lsv_flags_t *flags,
                        lsv_plan_t *plan)
{
    if (lsv_config_load(srv, flags, plan) != LSV_OK) return LSV_ERR;
    if (lsv_config_shared(srv, flags, plan) != LSV_OK) return LSV_ERR;
    /* Before any script runs: a script that loops at load is stopped. */
    lsv_guard_set_load_timeout(srv->opt.load_timeout);
    lsv_guard_init(srv->opt.handler_timeout, srv->opt.lua_memory);
    pseudo_listener(srv, srv->outbound_listener, "outbound");
    pseudo_listener(srv, srv->server_listener, "server");
    plan->main_script = flags->script;
    plan->config = flags->config;
    if (plan->main_script == NULL && plan->cfg_ref != LUA_NOREF) {
        lua_State *L = srv->vm->L;
        lua_rawgeti(L, LUA_REGISTRYINDEX, plan->cfg_ref);
        lua_getfield(L, -1, "handler");
        plan->main_script = lua_tostring(L, -1);   /* cfg anchors it */
        lua_pop(L, 2);
    }
    if (plan->main_script == NULL) {
        plan->main_script = default_script();
        /* With -l, or with no config file, the default script serves. */
        if (default_missing[0] && (flags->nlisten > 0 ||
                                   plan->cfg_ref == LUA_NOREF)) {
            fprintf(stderr, "luaserv: %s\n", default_missing);
            return LSV_ERR;
        }
    }
    /* --workers N: the master (worker 0) stays in lsv_workers_run; each
     * worker goes on from there. */
    int workers = flags->check ? 1 : lsv_workers_count(&srv->opt);
    if (workers > 1) lsv_lua_set_worker(srv, 0, workers);
    if (lsv_config_plan(srv, flags, plan) != LSV_OK) return LSV_ERR;
    if (workers > 1) {   /* returns in a worker only */
        lsv_workers_run(srv, plan, workers, serve_builtin);
        master = 0;      /* a restarted worker is forked from the master */
    }
    else if (!flags->check) lsv_upgrade_watch(srv, NULL, NULL);
    for (int i = 0; i < plan->n; i++) {
        char err[4096];
        lsv_script_t *s = lsv_script_load(srv, plan->e[i].script, err,
                                          sizeof err);
        if (s == NULL) {
            fprintf(stderr, "luaserv: %s\n", default_missing[0] &&
                    plan->e[i].script == plan->main_script ? default_missing
                                                           : err);
            return LSV_ERR;
        }
        s->builtin = plan->e[i].builtin;
    }
    return LSV_OK;
}

/* on_load, the listeners, --watch, the signals; then the ready lines. */
static void start_serving(lsv_server_t *srv, lsv_plan_t *plan)
{
    run_on_load(srv);
    open_listeners(srv, plan);
    lsv_upgrade_own(srv);
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
    if (lsv_workers_tell_ready(srv)) return;   /* the master says ready */
    for (lsv_listener_t *l = srv->listeners; l; l = l->next) {
        const char *n = l->name;
        const char *sep = strstr(n, "://");
        lsv_log_ready(lsv_net_scheme(&l->addr),
                      sep ? sep + 3 : strchr(n, ':') + 1);
    }
    lsv_info("serving %s (pid %d)", plan->main_script, (int)getpid());
    lsv_upgrade_ready(srv);   /* the pid file; an old generation stops */
    lsv_notify(srv, "READY=1");
}

/* After the loop ended: frees everything, in the order that keeps every
 * pointer valid until its last use. */
static void free_server(lsv_server_t *srv)
{
    lsv_loop_close(srv);
    ev_signal_stop(srv->loop, &sigterm_watcher);
    ev_signal_stop(srv->loop, &sigint_watcher);
    ev_signal_stop(srv->loop, &sighup_watcher);
    lsv_sched_free_all(srv);
    lsv_tls_cache_clear(srv);
    lsv_listener_free_all(srv);
    lsv_script_free_all(srv);
    lsv_vm_close(srv);
    lsv_resolver_free(srv->resolver);
    lsv_server_free_bufs(srv);
    lsv_log_detach();
    ev_loop_destroy(srv->loop);
}

int main(int argc, char **argv)
{
    lsv_server_t *srv = &server;
    static lsv_plan_t plan;
    lsv_flags_t flags;

    lsv_options_parse(&srv->opt, &flags, argc, argv);
    lsv_upgrade_init(argc, argv, flags.check ? NULL : flags.pid_file);
    init_server(srv, &flags);
    if (plan_scripts(srv, &flags, &plan) != LSV_OK) return 2;
    if (flags.check) {
        for (lsv_script_t *s = srv->vm->scripts; s; s = s->next)
            if (!s->builtin)
                printf("luaserv: %s is a valid handler script\n", s->path);
        lsv_script_free_all(srv);
        lsv_vm_close(srv);
        return 0;
    }
    start_serving(srv, &plan);
    ev_run(srv->loop, 0);
    free_server(srv);
    lsv_info("stopped");
    return 0;
}

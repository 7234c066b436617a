/* core_module.c: luaserv.core, the server's own controls (stats per listener,
 * connections, reload, log level, shutdown, core metrics) for the admin
 * socket and the metrics endpoint, which are Lua handlers in lua/luaserv. */
#include "lsv.h"
#include "loop.h"
#include "core_module.h"
#include "conn.h"
#include "guard.h"
#include "listener.h"
#include "handshake.h"
#include "log.h"
#include "procstat.h"
#include "sched.h"
#include "tls.h"
#include "script.h"
#include "server.h"
#include "vm.h"

#include <lauxlib.h>
#include <stdio.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>

/* core.conns() -> { { id=, peer=, listener=, age=, bytes_in=, bytes_out=,
 * messages=, style= }, ... } for every open inbound connection. */
static int core_conns(lua_State *L)
{
    lsv_server_t *srv = lsv_vm_server(L);
    lua_newtable(L);
    lua_Integer i = 0;
    for (lsv_conn_t *c = lsv_conn_first(srv); c; c = lsv_conn_next(c)) {
        char peer[LSV_ADDRSTRLEN];
        if (lsv_conn_listener(c)->internal) continue;
        socklen_t len;
        const struct sockaddr *sa = lsv_conn_peer(c, &len);
        lsv_conn_info_t info;
        lsv_conn_info(c, &info);
        lua_createtable(L, 0, 8);
        lua_pushinteger(L, (lua_Integer)lsv_conn_id(c));
        lua_setfield(L, -2, "id");
        lua_pushstring(L, lsv_net_format(sa, len, peer));
        lua_setfield(L, -2, "peer");
        lua_pushstring(L, lsv_conn_listener(c)->name);
        lua_setfield(L, -2, "listener");
        lua_pushnumber(L, info.age);
        lua_setfield(L, -2, "age");
        lua_pushinteger(L, (lua_Integer)info.bytes_in);
        lua_setfield(L, -2, "bytes_in");
        lua_pushinteger(L, (lua_Integer)info.bytes_out);
        lua_setfield(L, -2, "bytes_out");
        lua_pushinteger(L, (lua_Integer)info.messages);
        lua_setfield(L, -2, "messages");
        lua_pushstring(L, lsv_conn_type(c)->style);
        lua_setfield(L, -2, "style");
        lua_rawseti(L, -2, ++i);
    }
    return 1;
}

/* core.listeners() -> { { name=, script=, conns_active=, ... }, ... };
 * a TLS listener's also has tls_handshakes, tls_resumed and
 * tls_handshake_failures = { [reason] = n } (every reason, 0 too). */
static int core_listeners(lua_State *L)
{
    lsv_server_t *srv = lsv_vm_server(L);
    lua_newtable(L);
    lua_Integer i = 0;
    for (lsv_listener_t *l = srv->listeners; l; l = l->next) {
        const lsv_lstats_t *s = &l->stats;
        if (l->internal) continue;
        lua_createtable(L, 0, 10);
        lua_pushstring(L, l->name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, l->script ? l->script->path : "");
        lua_setfield(L, -2, "script");
#define FIELD(name, v) \
        (lua_pushinteger(L, (lua_Integer)(v)), lua_setfield(L, -2, name))
        FIELD("connections_active", s->conns_active);
        FIELD("connections_total", s->conns_total);
        FIELD("messages", s->messages);
        FIELD("bytes_received", s->bytes_in);
        FIELD("bytes_sent", s->bytes_out);
        FIELD("handler_errors", s->handler_errors);
        FIELD("reloads", s->reloads);
        FIELD("reload_failures", s->reload_failures);
        FIELD("udp_drops", s->udp_drops);
        if (l->addr.tls) {
            FIELD("tls_handshakes", s->tls_handshakes);
            FIELD("tls_resumed", s->tls_resumed);
            lua_createtable(L, 0, LSV_TLS_ERR_COUNT);
            for (int r = 0; r < LSV_TLS_ERR_COUNT; r++)
                FIELD(lsv_tls_err_names[r], s->tls_errors[r]);
            lua_setfield(L, -2, "tls_handshake_failures");
        }
#undef FIELD
        lua_rawseti(L, -2, ++i);
    }
    return 1;
}

/* core.handlers() -> { [script path] = handler table, ... }, and the first
 * user script's path as a second result. */
static int core_handlers(lua_State *L)
{
    lsv_server_t *srv = lsv_vm_server(L);
    lua_newtable(L);
    const char *first = NULL;
    for (lsv_script_t *s = srv->vm->scripts; s; s = s->next) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
        lua_setfield(L, -2, s->path);
        if (!s->builtin) first = s->path;   /* the list is newest first */
    }
    if (first) lua_pushstring(L, first);
    else lua_pushnil(L);
    return 2;
}

/* core.reload([phase]) -> true | nil, errors. Reloads every script; or,
 * for a master reloading its workers all or none, one phase of it:
 * "prepare" loads the new scripts without switching, "commit" switches
 * to them, "abort" drops them. */
static int core_reload(lua_State *L)
{
    static const char *const phases[] = { "all", "prepare", "commit",
                                          "abort", NULL };
    int phase = luaL_checkoption(L, 1, "all", phases);
    lsv_server_t *srv = lsv_vm_server(L);
    char err[4096] = "no reload is prepared";
    int rc = phase == 0 ? lsv_reload_all(srv, err, sizeof err)
           : phase == 1 ? lsv_reload_prepare(srv, err, sizeof err)
           : phase == 2 ? lsv_reload_commit(srv)
                        : lsv_reload_abort(srv, luaL_optstring(L, 2, ""));
    if (rc == LSV_OK) {
        lua_pushboolean(L, 1);
        return 1;
    }
    luaL_pushfail(L);
    lua_pushstring(L, err);
    return 2;
}

/* core.eval(fn) -> true, fn's results... | false, error. Calls fn with a
 * --handler-timeout budget of its own, in a call that cannot yield (so a
 * task's slice hook cannot make a loop in it share the loop forever): a
 * runaway eval fails with "handler timeout" and the admin client gets
 * that error back. [-0, +(1|n), -] */
static int core_eval(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    /* The task's slice hook cannot yield in here: off, it only costs. */
    lua_Hook hook = lua_gethook(L);
    int mask = lua_gethookmask(L), count = lua_gethookcount(L);
    lua_sethook(L, NULL, 0, 0);
    int ok = lsv_vm_pcall_as(L, 0, LUA_MULTRET, LSV_GUARD_HANDLER) == LUA_OK;
    lua_sethook(L, hook, mask, count);
    lua_pushboolean(L, ok);
    lua_insert(L, 1);
    return lua_gettop(L);
}

/* core.log_level([name]) -> the level's name; sets it when given. */
static int core_log_level(lua_State *L)
{
    static const char *const names[] = { "debug", "info", "warn", "error",
                                         NULL };
    if (!lua_isnoneornil(L, 1))
        lsv_log_level = luaL_checkoption(L, 1, NULL, names);
    lua_pushstring(L, names[lsv_log_level]);
    return 1;
}

/* The workers' channel directory (a master's and its workers'; the
 * caller's string, which lives as long as the process), or NULL; whether
 * this process is their master. */
static const char *control_dir;
static int control_master;

/* core.shutdown(): the graceful stop SIGTERM starts, from the loop's next
 * turn, so the handler that asks finishes its batch first. */
static int core_shutdown(lua_State *L)
{
    if (control_master) raise(SIGTERM);   /* a master: its own stop */
    else lsv_loop_stop_soon(lsv_vm_server(L));
    return 0;
}

void lsv_core_set_control(const char *dir, int master)
{
    control_dir = dir;
    control_master = master;
}

/* A master's stop, shared with its workers (lsv_core_share_draining). */
static volatile int *master_draining;

void lsv_core_share_draining(void)
{
    void *p = mmap(NULL, sizeof *master_draining, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) master_draining = p;
}

void lsv_core_mark_draining(void)
{
    if (master_draining) *master_draining = 1;
}

/* core.draining() -> whether a stop or an upgrade began (/healthz
 * answers 503): true from a stop signal (its --drain-delay included, in
 * a --workers master's workers too) or an upgrade's start until the
 * exit, or until the upgrade fails. */
static int core_draining(lua_State *L)
{
    lua_pushboolean(L, lsv_vm_server(L)->draining != 0 ||
                       (master_draining && *master_draining));
    return 1;
}

/* core.control() -> the directory of the workers' admin channels (DIR/K
 * is worker K's), or nil without workers. */
static int core_control(lua_State *L)
{
    if (control_dir) lua_pushstring(L, control_dir);
    else lua_pushnil(L);
    return 1;
}

/* core.notify(state): tells systemd (NOTIFY_SOCKET) "RELOADING=1",
 * "READY=1", ..., as the server does; nothing without it. */
static int core_notify(lua_State *L)
{
    lsv_server_t *srv = lsv_vm_server(L);
    const char *state = luaL_checkstring(L, 1);
    if (srv->hooks->notify) srv->hooks->notify(srv, state);
    return 0;
}

/* Spawns require(module)[fn]() as a task. [-2, +0, e] */
static int spawn_named(lua_State *L)
{
    lua_getglobal(L, "require");
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    lua_getfield(L, -1, lua_tostring(L, 2));
    lsv_task_spawn(lsv_vm_server(L), L, 0, NULL, NULL);
    return 0;
}

void lsv_core_spawn(lsv_server_t *srv, const char *module, const char *fn)
{
    lua_State *L = srv->vm->L;
    lua_pushcfunction(L, spawn_named);
    lua_pushstring(L, module);
    lua_pushstring(L, fn);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        lsv_error("%s.%s: %s", module, fn, lua_tostring(L, -1));
        lua_pop(L, 1);
    }
}

static const lsv_core_upgrade_t *upgrade_ops;

void lsv_core_set_upgrade(const lsv_core_upgrade_t *u)
{
    upgrade_ops = u;
}

/* core.upgrade() -> true | nil, why. Starts a binary upgrade; its end
 * is core.upgrade_status()'s. */
static int core_upgrade(lua_State *L)
{
    char err[1024];
    if (upgrade_ops == NULL)
        return luaL_error(L, "no binary upgrade in this process");
    if (upgrade_ops->start(lsv_vm_server(L), err, sizeof err) == LSV_OK) {
        lua_pushboolean(L, 1);
        return 1;
    }
    luaL_pushfail(L);
    lua_pushstring(L, err);
    return 2;
}

/* core.upgrade_status() -> "running" | "done", message | nil, why |
 * "none" for the last binary upgrade. */
static int core_upgrade_status(lua_State *L)
{
    static const char *const names[] = { "none", "running", "done" };
    char msg[1024];
    int st = upgrade_ops ? upgrade_ops->status(msg, sizeof msg) : 0;
    if (st == 3) luaL_pushfail(L);
    else lua_pushstring(L, names[st >= 0 && st <= 2 ? st : 0]);
    lua_pushstring(L, upgrade_ops ? msg : "");
    return 2;
}

/* Appends one metric family's HELP and TYPE lines. */
static void family(luaL_Buffer *b, const char *name, const char *type,
                   const char *help)
{
    char line[512];
    snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n", name, help,
             name, type);
    luaL_addstring(b, line);
}

/* Appends name{listener="..."} value for every listener. */
static void per_listener(luaL_Buffer *b, lsv_server_t *srv, const char *name,
                         size_t offset)
{
    char line[512];
    for (lsv_listener_t *l = srv->listeners; l; l = l->next) {
        uint64_t v = *(const uint64_t *)((const char *)&l->stats + offset);
        if (l->internal) continue;
        snprintf(line, sizeof line, "%s{listener=\"%s\"} %llu\n", name,
                 l->name, (unsigned long long)v);
        luaL_addstring(b, line);
    }
    if (offset == offsetof(lsv_lstats_t, handler_errors)) {
        /* Errors that belong to no listener (on_load, a timer's task):
         * the series sum to luaserv.stats().handler_errors. */
        snprintf(line, sizeof line, "%s{listener=\"server\"} %llu\n", name,
                 (unsigned long long)srv->server_listener->stats
                     .handler_errors);
        luaL_addstring(b, line);
    }
}

/* Appends listener's n samples of counter family name, one a value of the
 * label key: name{listener="<listener>",<key>="<values[i]>"} <counts[i]>. */
static void labelled_counts(luaL_Buffer *b, const char *name,
                            const char *listener, const char *key,
                            const char *const *values,
                            const uint64_t *counts, int n)
{
    char line[512];
    for (int i = 0; i < n; i++) {
        snprintf(line, sizeof line, "%s{listener=\"%s\",%s=\"%s\"} %llu\n",
                 name, listener, key, values[i],
                 (unsigned long long)counts[i]);
        luaL_addstring(b, line);
    }
}

/* Appends the PROXY protocol stage's counters of the listeners that read
 * a header (nothing when none does). */
static void proxy_metrics(luaL_Buffer *b, lsv_server_t *srv)
{
    static const char *const versions[] = { "1", "2", "local" };
    char line[512];
    lsv_listener_t *any = srv->listeners;
    while (any && !any->opt.proxy_protocol) any = any->next;
    if (any == NULL) return;      /* no PROXY listener: no families */
    family(b, "luaserv_proxy_headers_total", "counter",
           "PROXY protocol headers read, by version (local: a v2 LOCAL or "
           "a v1 UNKNOWN, a balancer's own connection).");
    for (lsv_listener_t *l = srv->listeners; l; l = l->next) {
        if (!l->opt.proxy_protocol || l->internal) continue;
        labelled_counts(b, "luaserv_proxy_headers_total", l->name, "version",
                        versions, l->stats.proxy_headers, 3);
    }
    family(b, "luaserv_proxy_header_errors_total", "counter",
           "Connections closed for want of a good PROXY header, by reason.");
    for (lsv_listener_t *l = srv->listeners; l; l = l->next) {
        if (!l->opt.proxy_protocol || l->internal) continue;
        labelled_counts(b, "luaserv_proxy_header_errors_total", l->name,
                        "reason", lsv_proxy_err_names, l->stats.proxy_errors,
                        LSV_PROXY_ERR_COUNT);
    }
    family(b, "luaserv_proxy_empty_total", "counter",
           "Connections to a PROXY protocol listener closed before their "
           "first byte (a balancer's TCP health check).");
    for (lsv_listener_t *l = srv->listeners; l; l = l->next) {
        if (!l->opt.proxy_protocol || l->internal) continue;
        snprintf(line, sizeof line, "luaserv_proxy_empty_total{listener="
                 "\"%s\"} %llu\n", l->name,
                 (unsigned long long)l->stats.proxy_empty);
        luaL_addstring(b, line);
    }
}

/* Appends the TLS handshakes' counters of the tls:// listeners (nothing
 * when there is none): done, resumed, and failed by every reason, 0s
 * included, so a rate over any of them starts at the first scrape. */
static void tls_metrics(luaL_Buffer *b, lsv_server_t *srv)
{
    static const struct {
        const char *name, *help;
        size_t offset;
    } fams[] = {
        { "luaserv_tls_handshakes_total", "TLS handshakes completed.",
          offsetof(lsv_lstats_t, tls_handshakes) },
        { "luaserv_tls_resumed_total", "TLS handshakes that resumed a "
          "session (a ticket or the session cache).",
          offsetof(lsv_lstats_t, tls_resumed) },
    };
    char line[512];
    lsv_listener_t *any = srv->listeners;
    while (any && !(any->addr.tls && !any->internal)) any = any->next;
    if (any == NULL) return;
    for (size_t i = 0; i < sizeof fams / sizeof *fams; i++) {
        family(b, fams[i].name, "counter", fams[i].help);
        for (lsv_listener_t *l = srv->listeners; l; l = l->next) {
            if (!l->addr.tls || l->internal) continue;
            uint64_t v = *(const uint64_t *)((const char *)&l->stats +
                                             fams[i].offset);
            snprintf(line, sizeof line, "%s{listener=\"%s\"} %llu\n",
                     fams[i].name, l->name, (unsigned long long)v);
            luaL_addstring(b, line);
        }
    }
    family(b, "luaserv_tls_handshake_failures_total", "counter",
           "TLS handshakes that failed, by reason (protocol: not TLS; "
           "version: no shared version, cipher or ALPN; certificate: the "
           "client's was refused; timeout; eof; sni: on_sni failed).");
    for (lsv_listener_t *l = srv->listeners; l; l = l->next) {
        if (!l->addr.tls || l->internal) continue;
        labelled_counts(b, "luaserv_tls_handshake_failures_total", l->name,
                        "reason", lsv_tls_err_names, l->stats.tls_errors,
                        LSV_TLS_ERR_COUNT);
    }
}

/* core.metrics() -> the core's metrics in the Prometheus text format. */
static int core_metrics(lua_State *L)
{
    lsv_server_t *srv = lsv_vm_server(L);
    static const struct {
        const char *name, *type, *help;
        size_t offset;
    } counters[] = {
        { "luaserv_connections_active", "gauge", "Open connections.",
          offsetof(lsv_lstats_t, conns_active) },
        { "luaserv_connections_total", "counter", "Connections accepted.",
          offsetof(lsv_lstats_t, conns_total) },
        { "luaserv_messages_total", "counter",
          "Frames and datagrams handed to handlers.",
          offsetof(lsv_lstats_t, messages) },
        { "luaserv_bytes_received_total", "counter", "Bytes read.",
          offsetof(lsv_lstats_t, bytes_in) },
        { "luaserv_bytes_sent_total", "counter", "Bytes written.",
          offsetof(lsv_lstats_t, bytes_out) },
        { "luaserv_handler_errors_total", "counter",
          "Errors raised by handler functions.",
          offsetof(lsv_lstats_t, handler_errors) },
        { "luaserv_reloads_total", "counter", "Successful script reloads.",
          offsetof(lsv_lstats_t, reloads) },
        { "luaserv_reload_failures_total", "counter",
          "Script reloads that failed (the old handler stayed).",
          offsetof(lsv_lstats_t, reload_failures) },
    };
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < sizeof counters / sizeof *counters; i++) {
        family(&b, counters[i].name, counters[i].type, counters[i].help);
        per_listener(&b, srv, counters[i].name, counters[i].offset);
    }
    family(&b, "luaserv_udp_drops_total", "counter",
           "Datagrams the kernel dropped because the receive buffer was "
           "full (SO_RXQ_OVFL).");
    for (lsv_listener_t *l = srv->listeners; l; l = l->next) {
        char drops[512];
        if (!lsv_listener_is_dgram(l) || l->internal) continue;
        snprintf(drops, sizeof drops, "luaserv_udp_drops_total{listener="
                 "\"%s\"} %llu\n", l->name,
                 (unsigned long long)l->stats.udp_drops);
        luaL_addstring(&b, drops);
    }
    proxy_metrics(&b, srv);
    tls_metrics(&b, srv);
    family(&b, "luaserv_handler_duration_seconds", "histogram",
           "Time spent in on_message calls.");
    char line[512];
    for (lsv_listener_t *l = srv->listeners; l; l = l->next) {
        uint64_t cum = 0;
        if (l->internal) continue;
        for (int i = 0; i <= LSV_HIST_BUCKETS; i++) {
            cum += l->stats.hist[i];
            if (i < LSV_HIST_BUCKETS)
                snprintf(line, sizeof line, "luaserv_handler_duration_seconds"
                         "_bucket{listener=\"%s\",le=\"%g\"} %llu\n", l->name,
                         lsv_hist_bounds[i], (unsigned long long)cum);
            else
                snprintf(line, sizeof line, "luaserv_handler_duration_seconds"
                         "_bucket{listener=\"%s\",le=\"+Inf\"} %llu\n",
                         l->name, (unsigned long long)cum);
            luaL_addstring(&b, line);
        }
        snprintf(line, sizeof line, "luaserv_handler_duration_seconds_sum"
                 "{listener=\"%s\"} %.9f\nluaserv_handler_duration_seconds_"
                 "count{listener=\"%s\"} %llu\n", l->name, l->stats.hist_sum,
                 l->name, (unsigned long long)l->stats.hist_count);
        luaL_addstring(&b, line);
    }
    family(&b, "luaserv_tasks_active", "gauge", "Live tasks (coroutines).");
    snprintf(line, sizeof line, "luaserv_tasks_active %llu\n",
             (unsigned long long)srv->stats.tasks_active);
    luaL_addstring(&b, line);
    luaL_pushresult(&b);
    return 1;
}

int luaopen_luaserv_core(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "conns", core_conns },
        { "listeners", core_listeners },
        { "handlers", core_handlers },
        { "reload", core_reload },
        { "eval", core_eval },
        { "log_level", core_log_level },
        { "shutdown", core_shutdown },
        { "upgrade", core_upgrade },
        { "upgrade_status", core_upgrade_status },
        { "metrics", core_metrics },
        { "control", core_control },
        { "draining", core_draining },
        { "notify", core_notify },
        { "process_metrics", lsv_procstat_metrics },
        { NULL, NULL }
    };
    luaL_newlib(L, funcs);
    return 1;
}

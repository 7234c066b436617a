/* lua_api.c: the `luaserv` module handlers require. */
#include "lsv.h"
#include "lua_api.h"
#include "connect.h"
#include "core_module.h"
#include "guard.h"
#include "lua_conn.h"
#include "shared.h"
#include "timer.h"
#include "udp_socket.h"
#include "listener.h"
#include "log.h"
#include "sched.h"
#include "server.h"
#include "stream.h"
#include "vm.h"
#include "ws_lua.h"

#include <lauxlib.h>
#include <string.h>
#include <time.h>

/* luaserv.ctime() -> "Tue Apr  8 20:55:49 2006". C ctime() without the
 * newline, in local time. The timestamp server calls it for every line,
 * so the Lua string is made once per second of loop time and kept in an
 * upvalue: a call is a compare and a push. [-0, +1, -] */
static int api_ctime(lua_State *L)
{
    lsv_server_t *srv = lsv_vm_server(L);
    time_t now = (time_t)ev_now(srv->loop);
    if (unlikely(now != srv->vm->ctime_sec)) {
        struct tm tm;
        char buf[64];
        localtime_r(&now, &tm);
        /* asctime's fixed format: day of month space-padded to 2. */
        size_t n = strftime(buf, sizeof buf, "%a %b %e %H:%M:%S %Y", &tm);
        lua_pushlstring(L, buf, n);
        lua_copy(L, -1, lua_upvalueindex(1));
        srv->vm->ctime_sec = now;
        return 1;
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    return 1;
}

/* luaserv.now() -> seconds since the epoch (the loop's time). */
static int api_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)ev_now(lsv_vm_server(L)->loop));
    return 1;
}

/* luaserv.log.LEVEL(fmt, ...): string.format, then log with the caller's
 * file:line. [-0, +0, v] */
static int api_log(lua_State *L)
{
    int level = (int)lua_tointeger(L, lua_upvalueindex(1));
    if (level < lsv_log_level) return 0;
    int n = lua_gettop(L);
    luaL_checkstring(L, 1);
    if (n > 1) {
        lua_getglobal(L, "string");
        lua_getfield(L, -1, "format");
        lua_insert(L, 1);
        lua_pop(L, 1);
        lua_call(L, n, 1);
    }
    luaL_where(L, 1);
    /* not rate-limited: the script chose to write each line */
    lsv_log_write_all(level, "%s%s", lua_tostring(L, -1),
                      lua_tostring(L, -2));
    return 0;
}

/* luaserv.stats() -> a table of the core's counters. [-0, +1, m] */
static int api_stats(lua_State *L)
{
    lsv_server_t *srv = lsv_vm_server(L);
    const lsv_stats_t *s = &srv->stats;
    lsv_lstats_t sum;
    memset(&sum, 0, sizeof sum);
    for (const lsv_listener_t *l = srv->listeners; l; l = l->next) {
        if (l->internal) continue;
        sum.conns_active += l->stats.conns_active;
        sum.conns_total += l->stats.conns_total;
        sum.messages += l->stats.messages;
        sum.bytes_in += l->stats.bytes_in;
        sum.bytes_out += l->stats.bytes_out;
        sum.udp_drops += l->stats.udp_drops;
        sum.handler_errors += l->stats.handler_errors;
    }
    sum.handler_errors += srv->server_listener->stats.handler_errors;
    /* Outbound traffic counts in the bytes, not in the connections. */
    sum.bytes_in += srv->outbound_listener->stats.bytes_in;
    sum.bytes_out += srv->outbound_listener->stats.bytes_out;
    lua_createtable(L, 0, 10);
#define FIELD(name, v) \
    (lua_pushinteger(L, (lua_Integer)(v)), lua_setfield(L, -2, name))
    FIELD("connections_active", sum.conns_active);
    FIELD("connections_total", sum.conns_total);
    FIELD("messages", sum.messages);
    FIELD("datagrams", s->datagrams);
    FIELD("bytes_received", sum.bytes_in);
    FIELD("bytes_sent", sum.bytes_out);
    FIELD("handler_errors", sum.handler_errors);
    FIELD("tasks", s->tasks_active);
    FIELD("lua_memory", lsv_guard_memory());
    FIELD("outbound_active", s->outbound_active);
    FIELD("udp_drops", sum.udp_drops);
    FIELD("preemptions", s->preemptions);
#undef FIELD
    return 1;
}

static const luaL_Reg api_funcs[] = {
    { "now", api_now },
    { "stats", api_stats },
    { NULL, NULL }
};

/* luaserv.metrics is the Lua module luaserv.metrics, loaded on first use.
 * [-0, +1, e] */
static int api_index(lua_State *L)
{
    const char *k = lua_tostring(L, 2);
    if (k == NULL || strcmp(k, "metrics") != 0) return 0;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "luaserv.metrics");
    lua_call(L, 1, 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, 1, "metrics");
    return 1;
}

/* Which worker process this is, and how many there are: 1 of 1 for the
 * single-process server; set by src/ops/workers.c after each fork. */
static int worker_id = 1, worker_count = 1;

/* Sets luaserv.worker's fields in the table at the top of the stack.
 * [-0, +0, m] */
static void set_worker_fields(lua_State *L)
{
    lua_pushinteger(L, worker_id);
    lua_setfield(L, -2, "id");
    lua_pushinteger(L, worker_count);
    lua_setfield(L, -2, "count");
}

void lsv_lua_set_worker(lsv_server_t *srv, int id, int count)
{
    lua_State *L = srv->vm->L;
    worker_id = id;
    worker_count = count;
    int top = lua_gettop(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_getfield(L, -1, "luaserv") == LUA_TTABLE &&
        lua_getfield(L, -1, "worker") == LUA_TTABLE)
        set_worker_fields(L);   /* a module required before the fork */
    lua_settop(L, top);
}

int luaopen_luaserv(lua_State *L)
{
    static const char *const levels[] = { "debug", "info", "warn", "error" };
    luaL_newlib(L, api_funcs);
    lua_pushliteral(L, "");
    lua_pushcclosure(L, api_ctime, 1);
    lua_setfield(L, -2, "ctime");
    lua_createtable(L, 0, 4);
    for (int i = 0; i < 4; i++) {
        lua_pushinteger(L, i);
        lua_pushcclosure(L, api_log, 1);
        lua_setfield(L, -2, levels[i]);
    }
    lua_setfield(L, -2, "log");
    lua_pushliteral(L, LSV_VERSION);
    lua_setfield(L, -2, "version");
    /* luaserv.null: a RESP null reply ($-1, *-1), a light userdata NULL
     * so every null is equal to it (resp_lua.c pushes the same). */
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_createtable(L, 0, 2);
    set_worker_fields(L);
    lua_setfield(L, -2, "worker");
    lsv_sched_open(L);
    lsv_timer_open(L);
    lsv_connect_open_api(L);
    lsv_udp_open_api(L);
    lsv_shared_open(L);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, api_index);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    return 1;
}

void lsv_lua_open(lsv_server_t *srv, const char *script)
{
    lsv_vm_open(srv, script);
    lsv_sched_init(srv);
    lua_State *L = srv->vm->L;
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_luaserv);
    lua_setfield(L, -2, "luaserv");
    lua_pushcfunction(L, luaopen_luaserv_core);
    lua_setfield(L, -2, "luaserv.core");
    lua_pushcfunction(L, luaopen_luaserv_wscore);
    lua_setfield(L, -2, "luaserv.wscore");
    lua_pop(L, 1);
    lsv_lconn_open(L);
    lsv_stream_open_methods(L);
}

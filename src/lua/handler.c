/* handler.c: calls into the handler table serving a conn: the failure
 * path, on_error, on_close, the end of a handle() task. */
#include "lsv.h"
#include "handler.h"
#include "log.h"
#include "lua_conn.h"
#include "script.h"
#include "vm.h"

#include <lauxlib.h>
#include <string.h>

int lsv_handler_ref(const lsv_listener_t *l)
{
    return l->script ? l->script->ref : LUA_NOREF;
}

int lsv_handler_call(lsv_conn_t *c, const char *fn, int nargs, int nres)
{
    lua_State *L = lsv_conn_server(c)->vm->L;
    if (!lsv_vm_get_fn(L, lsv_handler_ref(lsv_conn_listener(c)), fn)) {
        lua_pop(L, nargs);
        return LSV_AGAIN;
    }
    lua_insert(L, -nargs - 1);
    lsv_lconn_push(L, c);
    lua_insert(L, -nargs - 1);
    lsv_vm_t *vm = lsv_conn_server(c)->vm;
    lsv_listener_t *outer = vm->listener;
    vm->listener = lsv_conn_listener(c);
    int rc = lsv_vm_pcall(L, nargs + 1, nres);
    vm->listener = outer;
    if (likely(rc == LUA_OK)) return LSV_OK;
    lsv_handler_failed(c, fn);
    return LSV_ERR;
}

void lsv_handler_failed(lsv_conn_t *c, const char *fn)
{
    lsv_server_t *srv = lsv_conn_server(c);
    lua_State *L = srv->vm->L;
    lsv_vm_count_error(srv, lsv_conn_listener(c));
    lsv_conn_log(LSV_LOG_ERROR, c, "handler error in %s: %s", fn,
                 lua_tostring(L, -1));
    if (strcmp(fn, "on_error") == 0 || strcmp(fn, "on_close") == 0 ||
        lsv_conn_is_closing(c)) {
        lua_pop(L, 1);
        return;
    }
    lsv_handler_call(c, "on_error", 1, 0);
    lsv_conn_close(c, "error");
}

/* Under lsv_handler_on_error's pcall: [c, msg] -> on_error(conn, msg). */
static int on_error_cb(lua_State *L)
{
    lsv_conn_t *c = lua_touserdata(L, 1);
    const char *msg = lua_touserdata(L, 2);
    lua_settop(L, 0);
    lua_pushstring(L, msg);
    lsv_handler_call(c, "on_error", 1, 0);
    return 0;
}

void lsv_handler_on_error(lsv_conn_t *c, const char *msg)
{
    lua_State *L = lsv_conn_server(c)->vm->L;
    lua_pushcfunction(L, on_error_cb);
    lua_pushlightuserdata(L, c);
    lua_pushlightuserdata(L, (void *)msg);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) lua_pop(L, 1);
}

void lsv_handler_closed(lsv_conn_t *c, const char *reason)
{
    lsv_lconn_t *u = lsv_lconn_of(c);
    if (u == NULL) return;
    lua_State *L = lsv_conn_server(c)->vm->L;
    if (u->connected) {
        u->connected = 0;
        lua_pushstring(L, reason);
        lsv_handler_call(c, "on_close", 1, 0);
    }
    if (u->task) u->task->conn = NULL;
    lsv_lconn_detach(L, c);
}

void lsv_handler_task_end(lsv_task_t *t, lsv_conn_t *c, const char *err,
                          int gone)
{
    lsv_lconn_t *u = lsv_lconn_of(c);
    if (u) {
        if (u->task == t) u->task = NULL;
        if (u->reader == t) u->reader = NULL;
        if (u->writer == t) u->writer = NULL;
    }
    if (gone) return;
    if (err == NULL) {
        lsv_conn_close(c, "closed");
        return;
    }
    lsv_vm_count_error(lsv_conn_server(c), lsv_conn_listener(c));
    lsv_conn_log(LSV_LOG_ERROR, c, "handler error in handle: %s", err);
    lsv_conn_hold(c);
    lsv_handler_on_error(c, err);
    lsv_conn_close(c, "error");     /* a no-op if on_error closed it */
    lsv_conn_release(c);            /* may free c */
}

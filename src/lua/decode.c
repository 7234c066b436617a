/* decode.c: a frame as Lua values; see decode.h. */
#include "lsv.h"
#include "decode.h"
#include "vm.h"

#include <lauxlib.h>

int lsv_decode_push(lua_State *L, lsv_conn_t *c, const lsv_frame_spec_t *spec,
                    const char *p, size_t n)
{
    switch (spec->kind) {
    case LSV_FRAME_RESP: return lsv_resp_push(L, spec, p, n);
    case LSV_FRAME_HTTP: return lsv_http_push(L, spec, p, n);
    case LSV_FRAME_WS: return lsv_ws_push(L, c, spec, p, n);
    default:
        lua_pushlstring(L, p, n);
        return 1;
    }
}

/* Where lsv_decode_pcall's frame comes from. */
typedef struct frame_arg {
    lsv_conn_t *c;
    const lsv_frame_spec_t *spec;
    const char *p;
    size_t n;
} frame_arg_t;

/* Runs under the pcall: [fn, args..., frame_arg]. */
static int call_with_frame(lua_State *L)
{
    int top = lua_gettop(L);
    const frame_arg_t *a = lua_touserdata(L, top);
    lua_pop(L, 1);
    int k = lsv_decode_push(L, a->c, a->spec, a->p, a->n);
    if (k == 0) {
        lua_settop(L, 0);
        return 0;
    }
    lua_call(L, top - 2 + k, LUA_MULTRET);
    return lua_gettop(L);
}

int lsv_decode_pcall(lua_State *L, int nargs, lsv_conn_t *c,
                     const lsv_frame_spec_t *spec, const char *p, size_t n,
                     int nresults)
{
    /* Small frames are decoded outside the protected call, as the core
     * makes small strings (LSV_VM_SMALL_STR, vm.h): their allocations are
     * small, and a C call level per message is a fifth of its cost. */
    if (spec->kind == LSV_FRAME_WS && lsv_ws_push_small(L, p, n) == 2)
        return lsv_vm_pcall(L, nargs + 2, nresults);
    if (spec->kind == LSV_FRAME_HTTP && n <= LSV_VM_SMALL_STR &&
        lua_checkstack(L, 16)) {
        /* a frame the framer accepted: lsv_http_push raises only for
         * memory, and its luaL_checkstack is covered by the check above */
        lsv_http_push(L, spec, p, n);
        return lsv_vm_pcall(L, nargs + 1, nresults);
    }
    frame_arg_t a = { c, spec, p, n };
    lua_pushcfunction(L, call_with_frame);
    lua_insert(L, -(nargs + 2));
    lua_pushlightuserdata(L, &a);
    return lsv_vm_pcall(L, nargs + 2, nresults);
}

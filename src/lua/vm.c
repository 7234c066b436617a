/* vm.c: the Lua state: opening, loading handler scripts, calling handlers. */
#include "lsv.h"
#include "vm.h"
#include "listener.h"
#include "log.h"
#include "guard.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>


/* Message handler for every pcall: turns the error into a string and adds
 * a traceback, so the one log line says where it happened. */
static int msgh(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)",
                              luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* An error outside any protected call: the core's own bug or memory
 * exhaustion outside a handler; nothing sane can go on. */
static int panic(lua_State *L)
{
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "luaserv: Lua panic: %s\n", msg ? msg : "?");
    return 0;
}

void lsv_vm_count_error(lsv_server_t *srv, lsv_listener_t *l)
{
    (l ? l : srv->server_listener)->stats.handler_errors++;
}

int lsv_vm_pcall(lua_State *L, int nargs, int nresults)
{
    /* Slot LSV_VM_MSGH is relative to the running C function: at the
     * loop's level it is the main state's handler, but inside a C
     * function Lua called (conn:write failing a conn, say) it is that
     * function's first argument, so bring a handler along there. */
    if (unlikely(lua_tocfunction(L, LSV_VM_MSGH) != msgh))
        return lsv_vm_pcall_as(L, nargs, nresults, LSV_GUARD_HANDLER);
    lsv_guard_enter(L);
    int rc = lua_pcall(L, nargs, nresults, LSV_VM_MSGH);
    lsv_guard_leave(L);
    return rc;
}

int lsv_vm_pcall_as(lua_State *L, int nargs, int nresults, int kind)
{
    int base = lua_gettop(L) - nargs;    /* the function; msgh goes here */
    lua_pushcfunction(L, msgh);
    lua_insert(L, base);
    lsv_guard_scope_t sc;
    lsv_guard_begin(&sc, L, kind);
    int rc = lua_pcall(L, nargs, nresults, base);
    lsv_guard_end(&sc);
    lua_remove(L, base);
    return rc;
}

/* Where lsv_vm_pcall_str's string comes from. */
typedef struct str_arg {
    const char *p;
    size_t n;
} str_arg_t;

/* Runs under the pcall: [fn, args..., str_arg]. Makes the string (a
 * failed allocation raises here, inside the protected call, instead of
 * panicking) in place of its light userdata and calls fn. */
static int call_with_str(lua_State *L)
{
    int top = lua_gettop(L);
    const str_arg_t *a = lua_touserdata(L, top);
    lua_pushlstring(L, a->p, a->n);
    lua_replace(L, top);
    lua_call(L, top - 1, LUA_MULTRET);
    return lua_gettop(L);
}

int lsv_vm_pcall_str(lua_State *L, int nargs, const char *p, size_t n,
                     int nresults)
{
    if (likely(n <= LSV_VM_SMALL_STR)) {
        lua_pushlstring(L, p, n);
        return lsv_vm_pcall(L, nargs + 1, nresults);
    }
    str_arg_t a = { p, n };
    lua_pushcfunction(L, call_with_str);
    lua_insert(L, -(nargs + 2));
    lua_pushlightuserdata(L, &a);
    return lsv_vm_pcall(L, nargs + 2, nresults);
}

int lsv_vm_get_fn(lua_State *L, int ref, const char *name)
{
    if (unlikely(ref == LUA_NOREF)) return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    if (likely(lua_getfield(L, -1, name) == LUA_TFUNCTION)) {
        lua_remove(L, -2);
        return 1;
    }
    lua_pop(L, 2);
    return 0;
}

/* Prepends the script's folder and luaserv's lua/ folder to package.path,
 * so handlers require their neighbours and our modules. lua/ is found next
 * to the binary in a build tree (build/ or build/asan/), else installed. */
static void set_path(lua_State *L, const char *script)
{
    char dir[4096], exe[4096];
    const char *slash = strrchr(script, '/');
    if (slash) {
        size_t n = (size_t)(slash - script);
        if (n >= sizeof dir) n = sizeof dir - 1;
        memcpy(dir, script, n);
        dir[n] = '\0';
    } else {
        strcpy(dir, ".");
    }
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    char *e = strrchr(exe, '/');
    if (e) *e = '\0';
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s/../lua/?.lua;"
                    "%s/../../lua/?.lua;" LSV_PREFIX "/share/luaserv/lua/?.lua;"
                    "%s", dir, dir, exe, exe, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
}

void lsv_vm_open(lsv_server_t *srv, const char *script)
{
    lua_State *L = lua_newstate(lsv_guard_alloc, NULL);
    if (L == NULL) {
        fprintf(stderr, "luaserv: cannot create a Lua state\n");
        abort();
    }
    lua_atpanic(L, panic);
    srv->vm = lsv_calloc(1, sizeof *srv->vm);
    srv->vm->L = L;
    luaL_openlibs(L);
    lua_pushcfunction(L, msgh);       /* stays at LSV_VM_MSGH */
    set_path(L, script ? script : ".");
}

void lsv_vm_close(lsv_server_t *srv)
{
    if (srv->vm == NULL) return;
    if (srv->vm->L) lua_close(srv->vm->L);
    free(srv->vm->sched);
    free(srv->vm);
    srv->vm = NULL;
}

static int parse_kind(const char *name)
{
    for (int k = LSV_FRAME_LINE; k <= LSV_FRAME_LAST; k++)
        if (strcmp(name, lsv_frame_kind_name(k)) == 0) return k;
    return -1;
}

/* Pops an optional integer in [lo, hi] off the stack into *out (a nil
 * leaves *out alone). */
static int pop_uint(lua_State *L, const char *key, lua_Integer lo,
                    lua_Integer hi, uint32_t *out, char err[LSV_ERRLEN])
{
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return LSV_OK;
    }
    int isnum;
    lua_Integer v = lua_tointegerx(L, -1, &isnum);
    lua_pop(L, 1);
    if (!isnum || v < lo || v > hi) {
        snprintf(err, LSV_ERRLEN, "framing: %s must be an integer from %lld "
                 "to %lld", key, (long long)lo, (long long)hi);
        return LSV_ERR;
    }
    *out = (uint32_t)v;
    return LSV_OK;
}

/* The protocol kinds' own options: RESP max_args, max_bulk and client;
 * HTTP max_head and max_headers; WebSocket client. */
static int parse_proto(lua_State *L, int idx, lsv_frame_spec_t *s,
                       char err[LSV_ERRLEN])
{
    if (s->kind == LSV_FRAME_RESP) {
        lua_getfield(L, idx, "max_args");
        if (pop_uint(L, "max_args", 1, INT32_MAX, &s->max_args, err))
            return LSV_ERR;
        lua_getfield(L, idx, "max_bulk");
        if (pop_uint(L, "max_bulk", 1, LSV_FRAME_PROTO_HARD_MAX, &s->max_bulk,
                     err))
            return LSV_ERR;
    } else if (s->kind == LSV_FRAME_HTTP) {
        lua_getfield(L, idx, "max_headers");
        if (pop_uint(L, "max_headers", 1, 65535, &s->max_args, err))
            return LSV_ERR;
        lua_getfield(L, idx, "max_head");
        if (pop_uint(L, "max_head", 64, LSV_FRAME_HARD_MAX, &s->max_bulk,
                     err))
            return LSV_ERR;
    }
    if (s->kind != LSV_FRAME_HTTP) {
        lua_getfield(L, idx, "client");
        s->client = (uint8_t)lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    return LSV_OK;
}

int lsv_vm_parse_framing(lua_State *L, int idx, lsv_frame_spec_t *spec,
                         char err[LSV_ERRLEN])
{
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) == LUA_TSTRING) {
        int k = parse_kind(lua_tostring(L, idx));
        if (k < 0 || k == LSV_FRAME_DELIM || k == LSV_FRAME_FIXED) {
            snprintf(err, LSV_ERRLEN, k < 0 ?
                     "framing: unknown kind '%s' (line, delim, fixed, "
                     "prefix, raw, resp, http, websocket)" : "framing: '%s' needs a table with its "
                     "argument, e.g. { \"delim\", \"\\r\\n\" }",
                     lua_tostring(L, idx));
            return LSV_ERR;
        }
        lsv_frame_spec_init(spec, (lsv_frame_kind_t)k);
        return LSV_OK;
    }
    if (lua_type(L, idx) != LUA_TTABLE) {
        snprintf(err, LSV_ERRLEN, "framing must be a string or a table, not "
                 "a %s", luaL_typename(L, idx));
        return LSV_ERR;
    }
    lua_rawgeti(L, idx, 1);
    const char *name = lua_tostring(L, -1);
    int k = name ? parse_kind(name) : -1;
    lua_pop(L, 1);
    if (k < 0) {
        snprintf(err, LSV_ERRLEN, "framing: the first element must name the "
                 "kind (line, delim, fixed, prefix, raw, resp, http, "
                 "websocket)");
        return LSV_ERR;
    }
    lsv_frame_spec_t s;
    lsv_frame_spec_init(&s, (lsv_frame_kind_t)k);
    lua_getfield(L, idx, "max");
    if (pop_uint(L, "max", 1, lsv_frame_is_proto(k) ? LSV_FRAME_PROTO_HARD_MAX
                                                    : LSV_FRAME_HARD_MAX,
                 &s.max, err))
        return LSV_ERR;
    if (lsv_frame_is_proto(k) && parse_proto(L, idx, &s, err) != LSV_OK)
        return LSV_ERR;
    lua_getfield(L, idx, "keep_eol");
    s.keep_eol = (uint8_t)lua_toboolean(L, -1);
    lua_pop(L, 1);

    if (k == LSV_FRAME_DELIM) {
        size_t n = 0;
        lua_rawgeti(L, idx, 2);
        const char *d = lua_type(L, -1) == LUA_TSTRING ?
                        lua_tolstring(L, -1, &n) : NULL;
        if (d == NULL || n == 0 || n > LSV_FRAME_DELIM_MAX) {
            lua_pop(L, 1);
            snprintf(err, LSV_ERRLEN, "framing: delim needs a delimiter "
                     "string of 1 to %d bytes", LSV_FRAME_DELIM_MAX);
            return LSV_ERR;
        }
        memcpy(s.delim, d, n);
        s.delim_len = (uint8_t)n;
        lua_pop(L, 1);
    } else if (k == LSV_FRAME_FIXED) {
        lua_rawgeti(L, idx, 2);
        s.size = 0;
        if (pop_uint(L, "size", 1, LSV_FRAME_HARD_MAX, &s.size, err))
            return LSV_ERR;
        if (s.size == 0) {
            snprintf(err, LSV_ERRLEN, "framing: fixed needs a size, e.g. "
                     "{ \"fixed\", 16 }");
            return LSV_ERR;
        }
    } else if (k == LSV_FRAME_PREFIX) {
        lua_rawgeti(L, idx, 2);
        if (!lua_isnil(L, -1)) {
            int isnum;
            lua_Integer v = lua_tointegerx(L, -1, &isnum);
            if (!isnum || (v != 1 && v != 2 && v != 4 && v != 8)) {
                lua_pop(L, 1);
                snprintf(err, LSV_ERRLEN, "framing: prefix length must be "
                         "1, 2, 4 or 8");
                return LSV_ERR;
            }
            s.prefix_len = (uint8_t)v;
        }
        lua_pop(L, 1);
        lua_getfield(L, idx, "endian");
        const char *e = lua_tostring(L, -1);
        if (e && strcmp(e, "little") == 0) s.big_endian = 0;
        else if (e && strcmp(e, "big") != 0) {
            lua_pop(L, 1);
            snprintf(err, LSV_ERRLEN, "framing: endian must be \"big\" or "
                     "\"little\"");
            return LSV_ERR;
        }
        lua_pop(L, 1);
    }
    *spec = s;
    return LSV_OK;
}

/* Fields the core knows; a present one must be a function. */
static const char *const handler_fns[] = {
    "on_accept", "on_connect", "on_message", "on_close", "on_error",
    "on_timeout", "on_load", "on_reload", "on_stop", "handle",
    "on_sni",
    NULL
};

/* Checks the handler table at the top of the stack. */
static int check_handler(lua_State *L, const char *script,
                         lsv_frame_spec_t *framing, char *err, size_t errlen)
{
    if (!lua_istable(L, -1)) {
        snprintf(err, errlen, "%s: the script must return a handler table, "
                 "not a %s", script, luaL_typename(L, -1));
        return LSV_ERR;
    }
    for (int i = 0; handler_fns[i]; i++) {
        int t = lua_getfield(L, -1, handler_fns[i]);
        lua_pop(L, 1);
        if (t != LUA_TNIL && t != LUA_TFUNCTION) {
            snprintf(err, errlen, "%s: handler.%s must be a function, not a "
                     "%s", script, handler_fns[i], lua_typename(L, t));
            return LSV_ERR;
        }
    }
    lsv_frame_spec_init(framing, LSV_FRAME_LINE);
    if (lua_getfield(L, -1, "framing") != LUA_TNIL) {
        char ferr[LSV_ERRLEN];
        if (lsv_vm_parse_framing(L, -1, framing, ferr) != LSV_OK) {
            lua_pop(L, 1);
            snprintf(err, errlen, "%s: handler.%s", script, ferr);
            return LSV_ERR;
        }
    }
    lua_pop(L, 1);
    return LSV_OK;
}

int lsv_vm_load(lsv_server_t *srv, const char *script, int *ref,
                lsv_frame_spec_t *framing, char *err, size_t errlen)
{
    lua_State *L = srv->vm->L;
    int top = lua_gettop(L);
    int rc = luaL_loadfile(L, script);
    int last_line = 0;
    if (rc == LUA_OK) {
        /* The chunk's last line holds its return: where a bad handler
         * table is reported. */
        lua_Debug ar;
        lua_pushvalue(L, -1);
        if (lua_getinfo(L, ">L", &ar)) {
            lua_pushnil(L);
            while (lua_next(L, -2)) {
                lua_pop(L, 1);
                if (lua_tointeger(L, -1) > last_line)
                    last_line = (int)lua_tointeger(L, -1);
            }
            lua_pop(L, 1);
        }
        /* Under the handlers' budget, with a scope of its own: a reload
         * from the admin socket runs inside the admin task's call. */
        lsv_guard_scope_t sc;
        lsv_guard_begin(&sc, L, LSV_GUARD_LOAD);
        rc = lua_pcall(L, 0, 1, LSV_VM_MSGH);
        lsv_guard_end(&sc);
    }
    if (rc != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        snprintf(err, errlen, "%s", msg ? msg : "(error without message)");
        lua_settop(L, top);
        return LSV_ERR;
    }
    char where[4200];
    if (last_line > 0) snprintf(where, sizeof where, "%s:%d", script, last_line);
    else snprintf(where, sizeof where, "%s", script);
    if (check_handler(L, where, framing, err, errlen) != LSV_OK) {
        lua_settop(L, top);
        return LSV_ERR;
    }
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, top);
    return LSV_OK;
}

void lsv_vm_memo(lua_State *L, const void *key, int idx,
                 int (*make)(lua_State *L, const void *ud), const void *ud)
{
    idx = lua_absindex(L, idx);
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "k");
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2);
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, key);
    }
    lua_pushvalue(L, idx);
    if (lua_rawget(L, -2) == LUA_TNIL) {
        lua_pop(L, 1);
        if (!make(L, ud)) lua_pushnil(L);
        else {
            lua_pushvalue(L, idx);
            lua_pushvalue(L, -2);
            lua_rawset(L, -4);
        }
    }
    lua_remove(L, -2);
}

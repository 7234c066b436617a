/* sni_lua.c: on_sni, the handler's choice of a TLS listener's
 * certificate by the name the client asked for. */
#include "lsv.h"
#include "sni_lua.h"
#include "guard.h"
#include "handler.h"
#include "listener.h"
#include "log.h"
#include "net.h"
#include "tls.h"
#include "tls_lua.h"
#include "vm.h"

#include <ctype.h>
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

/* What call_on_sni needs: the handshake's listener, name and client. */
typedef struct sni_call {
    lsv_listener_t *l;
    const char *name;
    const struct sockaddr *peer;
    socklen_t peer_len;
    const struct sockaddr *local;
    socklen_t local_len;
} sni_call_t;

/* Runs under the pcall: [on_sni, call]. Makes on_sni's two arguments
 * inside it (so running out of memory fails this call, not the process)
 * and calls on_sni(info, name). [-2, +2, e] */
static int call_on_sni(lua_State *L)
{
    const sni_call_t *a = lua_touserdata(L, 2);
    char buf[LSV_ADDRSTRLEN];
    lua_settop(L, 1);
    lua_createtable(L, 0, 3);
    if (a->peer != NULL) {
        lua_pushstring(L, lsv_net_format(a->peer, a->peer_len, buf));
        lua_setfield(L, -2, "peer");
    }
    lua_pushstring(L, a->l->name);
    lua_setfield(L, -2, "listener");
    if (a->local_len > 0) {
        lua_pushstring(L, lsv_net_format(a->local, a->local_len, buf));
        lua_setfield(L, -2, "local");
    }
    lua_pushstring(L, a->name);
    lua_call(L, 2, 2);
    return 2;
}

/* Copies name into out (at most 255 bytes, the longest DNS name) with
 * any byte that is not printable ASCII as '?': a peer chose it, and it
 * goes into a log line. */
static const char *printable(const char *name, char out[256])
{
    size_t i = 0;
    for (; name[i] && i < 255; i++)
        out[i] = isprint((unsigned char)name[i]) ? name[i] : '?';
    out[i] = '\0';
    return out;
}

/* Logs why on_sni gave l no context for name (the first line of why:
 * a traceback stays out of a line the internet can cause) and fails the
 * handshake. Rate-limited as every warn line is. Returns NULL. */
static lsv_tls_ctx_t *refuse(const sni_call_t *a, const char *why, int *fail)
{
    char peer[LSV_ADDRSTRLEN], name[256];
    lsv_log_ctx_t ctx = { a->l->name, NULL, 0 };
    if (a->peer != NULL)
        ctx.peer = lsv_net_format(a->peer, a->peer_len, peer);
    const char *nl = strchr(why, '\n');
    int len = nl ? (int)(nl - why) : (int)strlen(why);
    lsv_log_writec(LSV_LOG_WARN, &ctx, "on_sni(\"%s\"): %.*s; the TLS "
                   "handshake fails", printable(a->name, name), len, why);
    *fail = 1;
    return NULL;
}

/* The context for on_sni's answer cert, key (at the stack's top - 1 and
 * top): the cached one, or a new one (cached). NULL with err. */
static lsv_tls_ctx_t *context_for(lua_State *L, lsv_listener_t *l,
                                  char err[LSV_ERRLEN])
{
    size_t clen, klen;
    const char *cert = lua_tolstring(L, -2, &clen);
    const char *key = lua_tolstring(L, -1, &klen);
    if (strlen(cert) != clen || strlen(key) != klen) {
        snprintf(err, LSV_ERRLEN, "a cert or key with a NUL byte");
        return NULL;
    }
    lsv_tls_ctx_t *ctx = lsv_tls_cache_get(l, cert, clen, key, klen);
    if (ctx != NULL) return ctx;
    lsv_tls_opts_t o = l->opt.tls;    /* the listener's other settings */
    o.cert = cert;
    o.key = key;
    ctx = lsv_tls_server_ctx(&o, err);
    if (ctx != NULL) lsv_tls_cache_put(l, cert, clen, key, klen, ctx);
    return ctx;
}

struct lsv_tls_ctx *lsv_sni_select(lsv_listener_t *l, const char *name,
                                   const struct sockaddr *peer,
                                   socklen_t peer_len,
                                   const struct sockaddr *local,
                                   socklen_t local_len, int *fail)
{
    lsv_server_t *srv = l->srv;
    lua_State *L = srv->vm->L;
    int top = lua_gettop(L);
    if (!lsv_vm_get_fn(L, lsv_handler_ref(l), "on_sni")) return NULL;
    sni_call_t a = { l, name, peer, peer_len, local, local_len };
    lua_pushcfunction(L, call_on_sni);
    lua_insert(L, -2);
    lua_pushlightuserdata(L, &a);
    lsv_listener_t *outer = srv->vm->listener;
    srv->vm->listener = l;
    int rc = lsv_vm_pcall_as(L, 2, 2, LSV_GUARD_HANDLER);
    srv->vm->listener = outer;
    lsv_tls_ctx_t *ctx = NULL;
    char err[LSV_ERRLEN];
    if (rc != LUA_OK) {
        lsv_vm_count_error(srv, l);
        const char *msg = lua_tostring(L, -1);
        refuse(&a, msg ? msg : "(error without message)", fail);
    } else if (lua_isnil(L, -2)) {
        /* nil: the listener's own certificate */
    } else if (lua_type(L, -2) != LUA_TSTRING ||
               lua_type(L, -1) != LUA_TSTRING) {
        lsv_vm_count_error(srv, l);
        snprintf(err, sizeof err, "on_sni returned a %s and a %s; it returns "
                 "cert, key (file names or PEM text) or nil",
                 luaL_typename(L, -2), luaL_typename(L, -1));
        refuse(&a, err, fail);
    } else if ((ctx = context_for(L, l, err)) == NULL) {
        refuse(&a, err, fail);
    }
    lua_settop(L, top);
    return ctx;
}

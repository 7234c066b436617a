/* connect_tls.c: luaserv.connect's TLS options, the process's client
 * contexts, and a failed handshake's message (connect_tls.h). */
#include "lsv.h"
#include "connect_tls.h"
#include "lua_conn.h"
#include "tls.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Distinct (verify, ca, alpn) contexts kept; past this many (a script
 * making up CA paths) the cache starts over. Open conns hold their own
 * references, so dropping an entry frees nothing in use. */
#define CTX_CACHE_MAX 32

typedef struct ctx_entry {
    struct ctx_entry *next;
    lsv_tls_ctx_t *ctx;
    int verify;
    char *ca;                     /* NULL: the system store */
    size_t alpn_len;
    unsigned char alpn[];
} ctx_entry_t;

static ctx_entry_t *cache;
static unsigned cache_len;

/* Reads the alpn list at the top of L into o's wire format (each name
 * length-prefixed, as ALPN sends it). [-0, +0, v] */
static void read_alpn(lua_State *L, int idx, lsv_connect_tls_t *o)
{
    luaL_argcheck(L, lua_istable(L, -1), idx, "alpn must be a list of strings");
    lua_Integer n = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, -1, i);
        size_t len;
        const char *p = lua_tolstring(L, -1, &len);
        luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING && len >= 1 &&
                      len <= 255, idx,
                      "alpn names must be strings of 1 to 255 bytes");
        luaL_argcheck(L, o->alpn_len + 1 + len <= sizeof o->alpn, idx,
                      "alpn list too long");
        o->alpn[o->alpn_len++] = (unsigned char)len;
        memcpy(o->alpn + o->alpn_len, p, len);
        o->alpn_len += len;
        lua_pop(L, 1);
    }
}

void lsv_connect_tls_opts(lua_State *L, int idx, lsv_connect_tls_t *o)
{
    memset(o, 0, sizeof *o);
    o->verify = 1;
    int t = lua_getfield(L, idx, "tls");
    luaL_argcheck(L, t == LUA_TNIL || t == LUA_TBOOLEAN, idx,
                  "tls must be a boolean");
    o->on = lua_toboolean(L, -1);
    lua_pop(L, 1);
    static const char *const keys[4] = { "sni", "verify", "ca", "alpn" };
    for (int i = 0; i < 4; i++) {
        t = lua_getfield(L, idx, keys[i]);
        if (t == LUA_TNIL) {
            lua_pop(L, 1);
            continue;
        }
        luaL_argcheck(L, o->on, idx,
                      "sni, verify, ca and alpn need tls = true");
        if (i == 1) {
            luaL_argcheck(L, t == LUA_TBOOLEAN, idx,
                          "verify must be a boolean");
            o->verify = lua_toboolean(L, -1);
        } else if (i == 3) {
            read_alpn(L, idx, o);
        } else {
            size_t len;
            luaL_argcheck(L, t == LUA_TSTRING, idx, i ? "ca must be a string"
                          : "sni must be a string");
            const char *s = lua_tolstring(L, -1, &len);
            luaL_argcheck(L, len >= 1 && len <= 255 && strlen(s) == len, idx,
                          i ? "ca must be a file name"
                            : "sni must be a name of 1 to 255 bytes");
            if (i == 0) o->sni = s;    /* the table keeps the string */
            else o->ca = s;
        }
        lua_pop(L, 1);
    }
}

static void cache_clear(void)
{
    while (cache) {
        ctx_entry_t *e = cache;
        cache = e->next;
        lsv_tls_ctx_unref(e->ctx);
        free(e->ca);
        free(e);
    }
    cache_len = 0;
}

lsv_tls_ctx_t *lsv_connect_tls_ctx(const lsv_connect_tls_t *o,
                                   char err[LSV_ERRLEN])
{
    for (ctx_entry_t *e = cache; e; e = e->next) {
        if (e->verify == o->verify && e->alpn_len == o->alpn_len &&
            (e->ca == NULL ? o->ca == NULL
                           : o->ca != NULL && strcmp(e->ca, o->ca) == 0) &&
            memcmp(e->alpn, o->alpn, o->alpn_len) == 0)
            return lsv_tls_ctx_ref(e->ctx);
    }
    char why[LSV_ERRLEN] = "";
    lsv_tls_ctx_t *ctx = lsv_tls_client_ctx(o->verify, o->ca,
                                            o->alpn_len ? o->alpn : NULL,
                                            o->alpn_len, why);
    if (ctx == NULL) {
        snprintf(err, LSV_ERRLEN, "%s%s",
                 strncmp(why, "tls: ", 5) == 0 ? "" : "tls: ",
                 why[0] ? why : "cannot make a client context");
        return NULL;
    }
    if (cache_len >= CTX_CACHE_MAX) cache_clear();
    ctx_entry_t *e = malloc(sizeof *e + o->alpn_len);
    char *ca = o->ca ? strdup(o->ca) : NULL;
    if (e == NULL || (o->ca && ca == NULL)) {
        free(e);                  /* not cached: built again next time */
        free(ca);
        return ctx;
    }
    e->ctx = ctx;
    e->verify = o->verify;
    e->ca = ca;
    e->alpn_len = o->alpn_len;
    memcpy(e->alpn, o->alpn, o->alpn_len);
    e->next = cache;
    cache = e;
    cache_len++;
    return lsv_tls_ctx_ref(ctx);
}

int lsv_connect_push_error(lua_State *L, const lsv_conn_t *c, int err)
{
    const char *why = err == EPROTO ? lsv_conn_tls_error(c) : NULL;
    if (why == NULL) return lsv_push_errno(L, err);
    luaL_pushfail(L);
    lua_pushfstring(L, "tls: %s", why);
    return 2;
}

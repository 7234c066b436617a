/* tls_lua.c: conn.tls, on_sni's contexts cached per listener, and the
 * certificates' reload. */
#include "lsv.h"
#include "tls_lua.h"
#include "vm.h"
#include "listener.h"
#include "log.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

/* --- conn.tls ------------------------------------------------------------ */

/* Registry key of the weak-keyed table of conns' conn.tls tables: made on
 * the first conn.tls, so conns whose handler never asks cost nothing. */
static const char cache_key = 't';

/* Sets t[name] = s (nil for NULL) on the table at the top. [-0, +0, m] */
static void set_str(lua_State *L, const char *name, const char *s)
{
    if (s == NULL) return;
    lua_pushstring(L, s);
    lua_setfield(L, -2, name);
}

/* Pushes a new conn.tls table from i. [-0, +1, m] */
static void push_new(lua_State *L, const lsv_tls_info_t *i)
{
    lua_createtable(L, 0, 6);
    set_str(L, "version", i->version);
    set_str(L, "cipher", i->cipher);
    set_str(L, "sni", i->sni);
    if (i->alpn != NULL) {
        lua_pushlstring(L, (const char *)i->alpn, i->alpn_len);
        lua_setfield(L, -2, "alpn");
    }
    lua_pushboolean(L, i->resumed);
    lua_setfield(L, -2, "resumed");
    if (!i->has_peer_cert) return;
    lua_createtable(L, 0, 4);
    set_str(L, "subject", i->subject);
    set_str(L, "issuer", i->issuer);
    set_str(L, "fingerprint", i->fingerprint);
    lua_pushboolean(L, i->peer_verified);
    lua_setfield(L, -2, "verified");
    lua_setfield(L, -2, "peer_cert");
}

/* lsv_vm_memo's maker: conn.tls for the conn ud, or nothing (nil). */
static int make_tls(lua_State *L, const void *ud)
{
    lsv_tls_info_t info;
    if (!lsv_conn_tls_info(ud, &info)) return 0;
    push_new(L, &info);
    return 1;
}

void lsv_tls_push(lua_State *L, int idx, const lsv_conn_t *c)
{
    if (c == NULL) {
        lua_pushnil(L);
        return;
    }
    /* Asked of the session only once: the names and the peer's
     * certificate are formatted each time it is asked. */
    lsv_vm_memo(L, &cache_key, idx, make_tls, c);
}

/* --- on_sni's contexts ---------------------------------------------------- */

typedef struct entry {
    uint64_t hash;
    char *cert, *key;              /* owned copies */
    size_t cert_len, key_len;
    lsv_tls_ctx_t *ctx;            /* one reference */
} entry_t;

/* One listener's cache; made at its first on_sni answer. */
typedef struct cache {
    struct cache *next;
    lsv_listener_t *l;
    int n;
    entry_t e[LSV_TLS_CACHE_MAX];
} cache_t;

/* The process's caches (one server, one loop). */
static cache_t *caches;

/* FNV-1a over cert, a NUL, then key: a lookup compares the strings only
 * when the hashes agree. */
static uint64_t hash_pair(const char *cert, size_t cert_len, const char *key,
                          size_t key_len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < cert_len; i++)
        h = (h ^ (unsigned char)cert[i]) * 1099511628211ULL;
    h *= 1099511628211ULL;
    for (size_t i = 0; i < key_len; i++)
        h = (h ^ (unsigned char)key[i]) * 1099511628211ULL;
    return h;
}

static cache_t *find_cache(const lsv_listener_t *l)
{
    for (cache_t *c = caches; c; c = c->next)
        if (c->l == l) return c;
    return NULL;
}

lsv_tls_ctx_t *lsv_tls_cache_get(lsv_listener_t *l, const char *cert,
                                 size_t cert_len, const char *key,
                                 size_t key_len)
{
    cache_t *c = find_cache(l);
    if (c == NULL) return NULL;
    uint64_t h = hash_pair(cert, cert_len, key, key_len);
    for (int i = 0; i < c->n; i++) {
        const entry_t *e = &c->e[i];
        if (e->hash == h && e->cert_len == cert_len &&
            e->key_len == key_len && memcmp(e->cert, cert, cert_len) == 0 &&
            memcmp(e->key, key, key_len) == 0)
            return lsv_tls_ctx_ref(e->ctx);
    }
    return NULL;
}

/* Drops c's entries and their references. */
static void empty(cache_t *c)
{
    for (int i = 0; i < c->n; i++) {
        free(c->e[i].cert);
        free(c->e[i].key);
        lsv_tls_ctx_unref(c->e[i].ctx);
    }
    c->n = 0;
}

/* A copy of p[0, n) with a NUL after it. Aborts out of memory: on_sni's
 * strings are a certificate's size, and the cache holds at most 256. */
static char *copy(const char *p, size_t n)
{
    char *s = lsv_malloc(n + 1);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

void lsv_tls_cache_put(lsv_listener_t *l, const char *cert, size_t cert_len,
                       const char *key, size_t key_len, lsv_tls_ctx_t *ctx)
{
    cache_t *c = find_cache(l);
    if (c == NULL) {
        c = lsv_calloc(1, sizeof *c);
        c->l = l;
        c->next = caches;
        caches = c;
    }
    if (c->n == LSV_TLS_CACHE_MAX) empty(c);
    entry_t *e = &c->e[c->n++];
    e->hash = hash_pair(cert, cert_len, key, key_len);
    e->cert = copy(cert, cert_len);
    e->cert_len = cert_len;
    e->key = copy(key, key_len);
    e->key_len = key_len;
    e->ctx = lsv_tls_ctx_ref(ctx);
}

void lsv_tls_cache_clear(lsv_server_t *srv)
{
    (void)srv;   /* one server per process: the caches are its */
    while (caches) {
        cache_t *c = caches;
        caches = c->next;
        empty(c);
        free(c);
    }
}

/* --- reload --------------------------------------------------------------- */

void lsv_tls_reload_certs(lsv_server_t *srv)
{
    lsv_tls_cache_clear(srv);
    for (lsv_listener_t *l = srv->listeners; l; l = l->next) {
        char err[LSV_ERRLEN];
        if (l->tls == NULL) continue;
        if (lsv_tls_listener_reload(l, err) == LSV_OK)
            lsv_info("%s: certificate reloaded", l->name);
        else
            lsv_error("%s: keeping the old certificate: %s", l->name, err);
    }
}

/* config_tls.c: the tls:// listeners' settings. The --tls-* flags are
 * every tls listener's; a config file's listen{} keys override them.
 * They are resolved and checked for the whole plan at once, before any
 * worker forks, so a mistake exits 2 before anything serves; then each
 * process builds its own contexts from them (lsv_config_tls_setup). */
#include "lsv.h"
#include "config.h"
#include "log.h"
#include "options.h"
#include "tls.h"
#include "vm.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

/* ALPN's wire form: each protocol name after a byte of its length. The
 * buffers live as long as the plan (the process): l->opt.tls borrows
 * them, and a reload rebuilds the contexts from them. */

/* The wire form of "h2,http/1.1" (checked by the options table). Returns
 * a new buffer with *len set. */
static unsigned char *alpn_from_list(const char *s, size_t *len)
{
    size_t n = strlen(s);
    unsigned char *w = lsv_malloc(n + 1), *q = w;
    for (const char *p = s;; p++) {
        size_t k = strcspn(p, ",");
        *q++ = (unsigned char)k;
        memcpy(q, p, k);
        q += k;
        p += k;
        if (*p == '\0') break;
    }
    *len = (size_t)(q - w);
    return w;
}

/* The wire form of the list at idx (checked by the options table:
 * strings of 1 to 255 bytes, at most 65535 together). */
static unsigned char *alpn_from_lua(lua_State *L, int idx, size_t *len)
{
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    size_t total = 0, k;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        lua_tolstring(L, -1, &k);
        total += k + 1;
        lua_pop(L, 1);
    }
    unsigned char *w = lsv_malloc(total), *q = w;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        const char *s = lua_tolstring(L, -1, &k);
        *q++ = (unsigned char)k;
        memcpy(q, s, k);
        q += k;
        lua_pop(L, 1);
    }
    *len = total;
    return w;
}

/* The first --tls-* flag given, or NULL. */
static const lsv_option_t *tls_flag(const lsv_flags_t *f)
{
    for (int i = 0; i < lsv_option_count; i++) {
        const lsv_option_t *o = &lsv_option_table[i];
        if ((o->where & LSV_OPT_TLS) && (f->given & lsv_option_bit(o)))
            return o;
    }
    return NULL;
}

/* Pushes the listen{} table of e from the config; returns its index, or
 * 0 (nothing pushed) for a listener the config did not declare. */
static int push_listen(lua_State *L, const lsv_plan_t *p,
                       const lsv_plan_entry_t *e)
{
    if (e->cfg_index == 0 || p->cfg_ref == LUA_NOREF) return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->cfg_ref);
    lua_getfield(L, -1, "listen");
    lua_rawgeti(L, -1, e->cfg_index);
    lua_replace(L, -3);
    lua_pop(L, 1);
    return lua_gettop(L);
}

/* A listen{} of a listener that is not tls:// with a TLS key: says so.
 * Returns LSV_ERR after printing, or LSV_OK. */
static int no_tls_keys(lua_State *L, int idx, const lsv_plan_t *p,
                       const lsv_plan_entry_t *e)
{
    for (int i = 0; i < lsv_option_count; i++) {
        const lsv_option_t *o = &lsv_option_table[i];
        if (!(o->where & LSV_OPT_TLS)) continue;
        int t = lua_getfield(L, idx, o->key);
        lua_pop(L, 1);
        if (t == LUA_TNIL) continue;
        fprintf(stderr, "luaserv: %s: listen %s: %s applies to tls:// "
                "listeners only (as in listen { \"tls://0.0.0.0:443\", "
                "cert = ..., key = ... })\n", p->config, e->spec, o->key);
        return LSV_ERR;
    }
    return LSV_OK;
}

/* Fills e->tls: the flags' settings (alpn: their wire form, or NULL),
 * then the listen{} keys at idx (0: none) over them; checks that a cert
 * and a key are named and that verify comes with a client CA. Returns
 * LSV_ERR after printing. */
static int resolve(lua_State *L, int idx, const lsv_flags_t *f,
                   const lsv_plan_t *p, lsv_plan_entry_t *e,
                   const unsigned char *alpn, size_t alpn_len)
{
    lsv_lopts_t lo;
    const char *verify_from = NULL;   /* who asked for verify, if any */
    int optional = f->tls_verify == 1;
    char where[LSV_ERRLEN + 64];
    memset(&lo, 0, sizeof lo);
    lo.tls.cert = f->tls_cert;
    lo.tls.key = f->tls_key;
    lo.tls.client_ca = f->tls_client_ca;
    lo.tls.handshake_timeout = f->tls_handshake_timeout;
    lo.tls.alpn = alpn;
    lo.tls.alpn_len = alpn_len;
    for (int i = 0; i < lsv_option_count; i++) {
        const lsv_option_t *o = &lsv_option_table[i];
        if (!(o->where & LSV_OPT_TLS)) continue;
        if (o->type == LSV_OPT_ENUM && (f->given & lsv_option_bit(o)))
            verify_from = "--tls-verify";
        if (idx == 0 || lua_getfield(L, idx, o->key) == LUA_TNIL) {
            if (idx) lua_pop(L, 1);
            continue;
        }
        if (o->type == LSV_OPT_ENUM) {          /* verify */
            optional = strcmp(lua_tostring(L, -1), "optional") == 0;
            verify_from = "verify";
        } else if (o->type == LSV_OPT_ALPN) {
            lo.tls.alpn = alpn_from_lua(L, lua_gettop(L), &lo.tls.alpn_len);
        } else {
            lsv_option_store_lua(o, L, -1, NULL, &lo);
        }
        lua_pop(L, 1);
    }
    if (idx) snprintf(where, sizeof where, "%s: listen ", p->config);
    else where[0] = '\0';
    if (lo.tls.cert == NULL || lo.tls.key == NULL) {
        fprintf(stderr, "luaserv: %s%s: a tls listener needs cert and key "
                "(--tls-cert, --tls-key or listen{ cert =, key = })\n",
                where, e->spec);
        return LSV_ERR;
    }
    if (verify_from && lo.tls.client_ca == NULL) {
        fprintf(stderr, "luaserv: %s%s: %s needs a client CA to check "
                "client certificates against (--tls-client-ca or "
                "listen{ client_ca = })\n", where, e->spec, verify_from);
        return LSV_ERR;
    }
    lo.tls.verify = lo.tls.client_ca == NULL ? LSV_TLS_VERIFY_NONE
                  : optional ? LSV_TLS_VERIFY_OPTIONAL
                             : LSV_TLS_VERIFY_REQUIRE;
    e->tls = lo.tls;
    return LSV_OK;
}

/* Builds e's context once, so a certificate or key that does not load
 * fails the start here, said once, rather than in every worker (each
 * builds its own after the fork), and --check says so too. The context
 * is kept (e->tls_loaded) for a worker restarted after the files went
 * bad: it serves this one rather than fail to start again and again.
 * Returns LSV_ERR after printing. */
static int try_ctx(lsv_plan_entry_t *e)
{
    char err[LSV_ERRLEN];
    lsv_tls_ctx_t *x = lsv_tls_server_ctx(&e->tls, err);
    if (x == NULL) {
        fprintf(stderr, "luaserv: %s\n", err);
        return LSV_ERR;
    }
    lsv_tls_ctx_unref(e->tls_loaded);
    e->tls_loaded = x;
    return LSV_OK;
}

int lsv_config_tls_plan(lsv_server_t *srv, const lsv_flags_t *f,
                        lsv_plan_t *p)
{
    lua_State *L = srv->vm->L;
    static unsigned char *flag_alpn;      /* the --tls-alpn's, kept */
    static size_t flag_alpn_len;
    int any = 0, rc = LSV_OK;
    if (f->tls_alpn && flag_alpn == NULL)
        flag_alpn = alpn_from_list(f->tls_alpn, &flag_alpn_len);
    for (int i = 0; i < p->n && rc == LSV_OK; i++) {
        lsv_plan_entry_t *e = &p->e[i];
        int top = lua_gettop(L), idx = push_listen(L, p, e);
        if (e->addr.tls) {
            any = 1;
            rc = resolve(L, idx, f, p, e, flag_alpn, flag_alpn_len);
            if (rc == LSV_OK && (srv->opt.workers != 1 || f->check))
                rc = try_ctx(e);
        } else if (idx) {
            rc = no_tls_keys(L, idx, p, e);
        }
        lua_settop(L, top);
    }
    const lsv_option_t *o = tls_flag(f);
    if (rc == LSV_OK && o && !any) {
        fprintf(stderr, "luaserv: --%s applies to tls:// listeners, and "
                "there is none (-l tls://HOST:PORT, or listen { "
                "\"tls://HOST:PORT\", ... } in a config file)\n", o->name);
        rc = LSV_ERR;
    }
    return rc;
}

int lsv_config_tls_setup(const lsv_plan_entry_t *e, lsv_listener_t *l)
{
    char err[LSV_ERRLEN];
    if (!l->addr.tls) return LSV_OK;
    l->opt.tls = e->tls;
    if (lsv_tls_listener_setup(l, err) == LSV_OK) return LSV_OK;
    if (e->tls_loaded) {
        lsv_error("%s: %s; serving the certificate loaded at start", l->name,
                  err);
        lsv_tls_listener_adopt(l, lsv_tls_ctx_ref(e->tls_loaded));
        return LSV_OK;
    }
    fprintf(stderr, "luaserv: %s\n", err);
    return LSV_ERR;
}

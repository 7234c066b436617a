/* tls_lua.h: TLS in the handler layer: conn.tls, the contexts built
 * from on_sni's answers (cached per listener) and the listeners'
 * certificate reload that every script reload ends with. The on_sni
 * call itself is sni_lua.c's. */
#ifndef LSV_TLS_LUA_H
#define LSV_TLS_LUA_H

#include "lsv.h"
#include "server.h"
#include "tls.h"

#include <lua.h>

/* Pushes conn.tls for the conn userdata at idx whose conn is c (NULL once
 * closed): nil for a plaintext conn, else { version, cipher, sni, alpn,
 * resumed, peer_cert = { subject, issuer, fingerprint, verified } | nil },
 * built on first access and kept (weakly, by the userdata) for the next,
 * so conn.tls == conn.tls. [-0, +1, m] */
void lsv_tls_push(lua_State *L, int idx, const lsv_conn_t *c);

/* The context on_sni's (cert, key) answer made on l before, with a new
 * reference (the caller gives it to the handshake), or NULL when there is
 * none yet. The strings are borrowed. */
lsv_tls_ctx_t *lsv_tls_cache_get(lsv_listener_t *l, const char *cert,
                                 size_t cert_len, const char *key,
                                 size_t key_len);

/* Keeps ctx (takes one more reference; the caller keeps its own) as l's
 * context for (cert, key), copied. A full cache (LSV_TLS_CACHE_MAX
 * entries) is emptied first: on_sni's answers are few in practice, and a
 * handler that makes one per name must not grow it without bound. */
#define LSV_TLS_CACHE_MAX 256
void lsv_tls_cache_put(lsv_listener_t *l, const char *cert, size_t cert_len,
                       const char *key, size_t key_len, lsv_tls_ctx_t *ctx);

/* Drops every listener's cached contexts (handshakes under way and open
 * conns keep theirs by reference): a reload's, and the exit's. */
void lsv_tls_cache_clear(lsv_server_t *srv);

/* The certificates' part of a reload (SIGHUP, admin reload, --watch, a
 * worker's commit or abort), whether the scripts reloaded or not: every
 * TLS listener re-reads its cert and key (lsv_tls_listener_reload),
 * logged at info when it did ("tls://...: certificate reloaded") and as
 * an error when it keeps the old one; on_sni's contexts are dropped so
 * their files are read again too. */
void lsv_tls_reload_certs(lsv_server_t *srv);

#endif

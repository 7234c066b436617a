/* connect_tls.h: luaserv.connect's TLS options (tls, sni, verify, ca,
 * alpn), the client contexts they share, and the text of a failed
 * handshake as the connecting task sees it. */
#ifndef LSV_CONNECT_TLS_H
#define LSV_CONNECT_TLS_H

#include "lsv.h"
#include "tls.h"

#include <lua.h>

/* The options as read from connect's table (borrowed strings). */
typedef struct lsv_connect_tls {
    int on;                       /* tls = true */
    int verify;                   /* verify (default true) */
    const char *ca;               /* ca: a PEM file; NULL: the system store */
    const char *sni;              /* sni, or NULL: the host when a name */
    unsigned char alpn[512];      /* alpn in wire format */
    size_t alpn_len;
} lsv_connect_tls_t;

/* Reads tls, sni, verify, ca and alpn of the option table at idx into
 * *o (o->on stays 0 without tls = true). Raises an argument error for a
 * wrong type, an empty or over-long ALPN name or SNI, or a TLS option
 * without tls = true. [-0, +0, v] */
void lsv_connect_tls_opts(lua_State *L, int idx, lsv_connect_tls_t *o);

/* The client context for o, with a reference for the caller (who drops
 * it with lsv_tls_ctx_unref once lsv_tls_connect took its own): built
 * once per (verify, ca, alpn) for the process, as reading the system
 * store takes milliseconds. NULL with "tls: ..." in err. */
lsv_tls_ctx_t *lsv_connect_tls_ctx(const lsv_connect_tls_t *o,
                                   char err[LSV_ERRLEN]);

/* Pushes nil and why the connect of c ended with err: "tls: <reason>"
 * when c's TLS handshake failed (EPROTO), else the errno's text.
 * Returns 2. [-0, +2, m] */
int lsv_connect_push_error(lua_State *L, const lsv_conn_t *c, int err);

#endif

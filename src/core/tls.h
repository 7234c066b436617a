/* tls.h: TLS on OpenSSL 3 as a transport. A certificate context
 * (lsv_tls_ctx_t) is shared by reference: a listener holds its current
 * one, each handshake takes its own reference, so a reload swaps the
 * listener's while open conns keep theirs. The server's handshake is a
 * stage after accept (and after a PROXY header, handshake.c); the
 * client's runs in an outbound conn after its connect (tls_client.c).
 * Once either is done the conn reads and writes through the session's
 * transport, so framing, both handler styles and backpressure are as on
 * plain TCP. */
#ifndef LSV_TLS_H
#define LSV_TLS_H

#include "lsv.h"
#include "listener.h"
#include "server.h"

#include <sys/socket.h>

/* An SSL_CTX and its reference count (tls.c). */
typedef struct lsv_tls_ctx lsv_tls_ctx_t;
/* One conn's TLS session: its SSL and its transport (tls_int.h). */
typedef struct lsv_tls_session lsv_tls_session_t;

/* Why a server handshake failed: lsv_lstats_t's tls_errors index and
 * luaserv_tls_handshake_failures_total's reason label. */
enum {
    LSV_TLS_ERR_PROTOCOL,        /* not TLS: plaintext, garbage */
    LSV_TLS_ERR_VERSION,         /* no shared version, cipher or ALPN */
    LSV_TLS_ERR_CERT,            /* the client's certificate was refused
                                  * (or missing under verify=require) */
    LSV_TLS_ERR_TIMEOUT,         /* not done within handshake_timeout */
    LSV_TLS_ERR_EOF,             /* the peer closed or reset mid-way */
    LSV_TLS_ERR_SNI,             /* on_sni failed or gave a bad cert */
    LSV_TLS_ERR_COUNT
};

/* "protocol", "version", "certificate", "timeout", "eof", "sni". */
extern const char *const lsv_tls_err_names[LSV_TLS_ERR_COUNT];

/* --- contexts ----------------------------------------------------------- */

/* A server context from o: o->cert's chain and o->key (files or PEM
 * text; the key must match the leaf), TLS 1.2 and 1.3 with OpenSSL's
 * default ciphers, a session cache and tickets, ALPN chosen from
 * o->alpn, client certificates checked against o->client_ca as o->verify
 * says. Returns it with one reference, or NULL with a message naming the
 * file and OpenSSL's reason in err. */
lsv_tls_ctx_t *lsv_tls_server_ctx(const lsv_tls_opts_t *o,
                                  char err[LSV_ERRLEN]);

/* A client context: verify checks the server's chain against ca (a PEM
 * file) or, with ca NULL, the system store (ca-certificates); alpn as
 * in lsv_tls_opts_t. Returns it with one reference, or NULL with err. */
lsv_tls_ctx_t *lsv_tls_client_ctx(int verify, const char *ca,
                                  const unsigned char *alpn, size_t alpn_len,
                                  char err[LSV_ERRLEN]);

/* Takes one more reference; returns x. */
lsv_tls_ctx_t *lsv_tls_ctx_ref(lsv_tls_ctx_t *x);
/* Drops one; frees x with the last (x may be NULL). */
void lsv_tls_ctx_unref(lsv_tls_ctx_t *x);

/* --- listeners ---------------------------------------------------------- */

/* Makes l (a tls:// listener, l->opt.tls set) serve TLS: builds its
 * context and puts the handshake stage after accept (after the PROXY
 * stage when l has both). Returns LSV_OK, or LSV_ERR with err (the start
 * fails with it). */
int lsv_tls_listener_setup(lsv_listener_t *l, char err[LSV_ERRLEN]);

/* Makes l serve TLS with x (its reference taken), as setup does with the
 * context it builds: a restarted worker whose files no longer load
 * serves the one its master loaded. */
void lsv_tls_listener_adopt(lsv_listener_t *l, lsv_tls_ctx_t *x);

/* Re-reads l's cert, key and client CA (SIGHUP, admin reload): new
 * handshakes use the new context, open conns keep theirs. An unreadable
 * or mismatched pair keeps the old one: returns LSV_ERR with err (the
 * caller logs it). LSV_OK for a listener without TLS. */
int lsv_tls_listener_reload(lsv_listener_t *l, char err[LSV_ERRLEN]);

/* Frees what l's TLS holds (its context reference); l->free calls it. */
void lsv_tls_listener_free(lsv_listener_t *l);

/* Closes every connection still in its server handshake (the stop). */
void lsv_tls_stop_all(lsv_server_t *srv);

/* Frees a session that never became a conn's (a refused accept). */
void lsv_tls_session_free(lsv_tls_session_t *s);

/* --- conns -------------------------------------------------------------- */

/* What conn.tls shows. The strings are borrowed from c's session (valid
 * while c is open, until c next reads or writes for sni/alpn: copy them
 * at once). */
typedef struct lsv_tls_info {
    const char *version;          /* "TLSv1.3" */
    const char *cipher;           /* "TLS_AES_256_GCM_SHA384" */
    const char *sni;              /* the name the client sent, or NULL */
    const unsigned char *alpn;    /* the protocol agreed, or NULL */
    unsigned alpn_len;
    int resumed;                  /* a resumed session */
    int has_peer_cert;            /* the peer sent a certificate */
    int peer_verified;            /* ... and it verified */
    char subject[256];            /* RFC 2253: "CN=client,O=test" */
    char issuer[256];
    char fingerprint[96];         /* SHA-256, hex pairs joined by ':' */
} lsv_tls_info_t;

/* Fills out for c. Returns 1, or 0 when c is not TLS (conn.tls nil). */
int lsv_conn_tls_info(const lsv_conn_t *c, lsv_tls_info_t *out);

/* Makes c, an outbound conn whose connect is in progress, speak TLS with
 * ctx (a reference is taken): once the TCP connect is done the client
 * handshake runs (sending sni when not NULL; with the context's verify,
 * the certificate must name sni), and only then does type->connected
 * hear 0, or EPROTO when the handshake failed (lsv_conn_tls_error says
 * why). Returns LSV_OK, or LSV_ERR out of memory. */
int lsv_tls_connect(lsv_conn_t *c, lsv_tls_ctx_t *ctx, const char *sni);

/* Why c's client handshake failed: "certificate verify failed:
 * hostname mismatch", "handshake: ..."; NULL if it did not. */
const char *lsv_conn_tls_error(const lsv_conn_t *c);

#endif

/* tls_int.h: what tls.c (contexts, the server stage, the transport) and
 * tls_client.c (the outbound handshake) share; nothing outside src/core
 * includes it. */
#ifndef LSV_TLS_INT_H
#define LSV_TLS_INT_H

#include "lsv.h"
#include "transport.h"

#include <openssl/ssl.h>

/* As in tls.h, which includes no _int header the other way round. */
typedef struct lsv_tls_ctx lsv_tls_ctx_t;
typedef struct lsv_tls_session lsv_tls_session_t;

struct lsv_tls_ctx {
    SSL_CTX *ssl;
    unsigned refs;
};

/* A TLS conn's transport points at its session's vt, a copy of
 * lsv_tls_transport: the transport then finds its session from the conn
 * (lsv_tls_session_of) with no field in every conn for it, so a plain
 * conn costs not a byte more (bench/idle_mem.py). */
struct lsv_tls_session {
    lsv_transport_t vt;          /* first */
    SSL *ssl;
    lsv_tls_ctx_t *ctx;          /* the reference its handshake took */
    char *error;                 /* a client handshake's failure (owned) */
};

/* The read, write, close, pending and handshake of a TLS conn (tls.c). */
extern const lsv_transport_t lsv_tls_transport;

/* c's session; c must be a TLS conn (its transport is lsv_tls_transport's copy). */
static inline lsv_tls_session_t *lsv_tls_session_of(const lsv_conn_t *c)
{
    return (lsv_tls_session_t *)(void *)lsv_conn_transport(c);
}

/* A session on fd with a reference to ctx: server side when server, else
 * client. Returns NULL (nothing taken) out of memory. */
lsv_tls_session_t *lsv_tls_session_new(lsv_tls_ctx_t *ctx, int fd,
                                       int server);

#endif

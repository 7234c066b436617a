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
/* A connection in its server handshake (tls_stage.c). */
typedef struct lsv_tls_stage lsv_tls_stage_t;

struct lsv_tls_ctx {
    SSL_CTX *ssl;
    unsigned refs;
    const unsigned char *alpn;   /* borrowed: the options keep it */
    size_t alpn_len;
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
    int write_wants_read;        /* SSL_write waits for input (tls.c) */
    int end_held;                /* a read returned bytes before an end
                                  * or a fault it met: the next one owes it */
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

/* tls_stage.c: the server handshake stage. */
struct lsv_proxy_info;

/* The listener stage (l->stage) of a tls:// listener without a PROXY
 * header: as lsv_tls_stage_begin with no header. */
void lsv_tls_stage_start(lsv_listener_t *l, int fd, const struct sockaddr *sa,
                         socklen_t salen);

/* Takes ownership of fd (accepted on l, from the client sa) and of proxy
 * (the PROXY header's info, or NULL): runs the server handshake within
 * l's handshake_timeout, then hands both and the session to
 * hooks->accept. A failure closes fd with one info line, counted. */
void lsv_tls_stage_begin(lsv_listener_t *l, int fd, const struct sockaddr *sa,
                         socklen_t salen, struct lsv_proxy_info *proxy);

/* The servername callback every server context gets (tls.c). */
int lsv_tls_sni_cb(SSL *ssl, int *alert, void *arg);

#endif

/* bench_tls.h: luaserv-bench's TLS client (bench_tls.c), the bottom of
 * the tool's layers beside the socket calls it replaces: a context, one
 * SSL per connection, a non-blocking handshake step, reads and writes
 * mapped to the socket's conventions, and the session kept for
 * resumption. It knows no bench_t: bench_conn.c and bench.c call it. */
#ifndef LSV_BENCH_TLS_H
#define LSV_BENCH_TLS_H

#include "lsv.h"

#include <openssl/ssl.h>
#include <sys/types.h>

/* The client context and what every connection is opened with. */
typedef struct bench_tls {
    SSL_CTX *ctx;
    char *sni;              /* NULL: no server_name (an IP literal) */
    char *host;             /* checked against the certificate (--tls-ca) */
    int verify, resume;
} bench_tls_t;

/* A context: TLS 1.2 and 1.3, no verification unless ca (a PEM file;
 * the certificate must then name host), sni sent when not NULL, and
 * with resume each connection's newest session kept (see
 * bench_tls_open). Returns it, or NULL with OpenSSL's reason in err. */
bench_tls_t *bench_tls_new(const char *ca, const char *host,
                           const char *sni, int resume,
                           char err[LSV_ERRLEN]);

/* A new SSL on fd (connected). With resume, *keep is offered to the
 * server when set, and replaced by each newer session the server sends
 * (the reference held there, for the process's life: the next connection
 * in that slot offers it). Returns the SSL, or NULL out of memory. */
SSL *bench_tls_open(bench_tls_t *t, int fd, SSL_SESSION **keep);

/* One handshake step. Returns LSV_OK when done, LSV_AGAIN with *events
 * (EV_READ or EV_WRITE) to wait for, or LSV_ERR with a reason in err. */
int bench_tls_handshake(SSL *ssl, int *events, char err[LSV_ERRLEN]);

/* Reads into p (up to n) as many records as are there. Returns the
 * bytes; 0 after a close (close_notify or EOF) when nothing came; -1
 * with errno EAGAIN when nothing is there yet, or another errno
 * (ECONNRESET for a TLS error) when the connection failed. */
ssize_t bench_tls_read(SSL *ssl, char *p, size_t n);

/* Writes from p (up to n), record by record. Returns the bytes taken, or
 * -1 with errno EAGAIN (wait for EV_WRITE) or EPIPE (failed). */
ssize_t bench_tls_write(SSL *ssl, const char *p, size_t n);

/* Whether the handshake that ssl finished resumed a session. */
int bench_tls_resumed(SSL *ssl);

/* Sends close_notify once (without waiting for the peer's) when the
 * handshake finished and nothing failed, then frees ssl. The fd is the
 * caller's to close. */
void bench_tls_close(SSL *ssl);

#endif

/* bench_tls.c: luaserv-bench's TLS client on OpenSSL 3: the context, one
 * SSL per connection with its non-blocking handshake, record reads and
 * writes in the socket's conventions, sessions kept for resumption. */
#include "bench_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* OpenSSL's read buffer with read_ahead: a pipelined batch of replies in
 * one read(2), however many records it spans. */
#define TLS_READ_BUFFER (64u << 10)

/* Whether s is an IP literal (no server_name for it: RFC 6066 3). */
static int is_ip(const char *s)
{
    unsigned char a[16];
    return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

/* OpenSSL's reason for the last failure, or fallback. */
static void reason(char err[LSV_ERRLEN], const char *what,
                   const char *fallback)
{
    unsigned long e = ERR_peek_last_error();
    char buf[200];

    if (e != 0) ERR_error_string_n(e, buf, sizeof buf);
    snprintf(err, LSV_ERRLEN, "%s%s", what, e != 0 ? buf : fallback);
    ERR_clear_error();
}

/* The session callback under --tls-resume: the newest session the
 * server sent (TLS 1.3 sends tickets after the handshake, read with the
 * first reply) replaces the connection's kept one. Returns 1: the
 * reference is ours. */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    SSL_SESSION **keep = SSL_get_app_data(ssl);

    if (keep == NULL) return 0;
    if (*keep != NULL) SSL_SESSION_free(*keep);
    *keep = sess;
    return 1;
}

bench_tls_t *bench_tls_new(const char *ca, const char *host,
                           const char *sni, int resume,
                           char err[LSV_ERRLEN])
{
    bench_tls_t *t = lsv_calloc(1, sizeof *t);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (ctx == NULL
        || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
        reason(err, "tls: ", "cannot make a context");
        goto fail;
    }
    /* EOF without close_notify reads as a close, as on plain TCP. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE
                     | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, TLS_READ_BUFFER);
    if (ca != NULL) {
        if (!SSL_CTX_load_verify_locations(ctx, ca, NULL)) {
            reason(err, "tls: cannot load --tls-ca: ", "no certificate");
            goto fail;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        t->verify = 1;
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (resume) {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT
                                       | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
    t->ctx = ctx;
    t->resume = resume;
    t->host = lsv_strdup(host);
    t->sni = sni != NULL ? lsv_strdup(sni)
             : is_ip(host) ? NULL : lsv_strdup(host);
    return t;
fail:
    SSL_CTX_free(ctx);
    free(t);
    return NULL;
}

SSL *bench_tls_open(bench_tls_t *t, int fd, SSL_SESSION **keep)
{
    SSL *ssl = SSL_new(t->ctx);

    if (ssl == NULL) return NULL;
    if (!SSL_set_fd(ssl, fd)
        || (t->sni != NULL && !SSL_set_tlsext_host_name(ssl, t->sni))
        || (t->verify && (is_ip(t->host)
                ? !X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl),
                                                 t->host)
                : !SSL_set1_host(ssl, t->host)))) {
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    if (t->resume) {
        SSL_set_app_data(ssl, keep);
        if (*keep != NULL) SSL_set_session(ssl, *keep);
    }
    SSL_set_connect_state(ssl);
    return ssl;
}

int bench_tls_handshake(SSL *ssl, int *events, char err[LSV_ERRLEN])
{
    int r, e;
    long v;

    ERR_clear_error();
    r = SSL_do_handshake(ssl);
    if (r == 1) return LSV_OK;
    e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        *events = e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE;
        return LSV_AGAIN;
    }
    SSL_set_quiet_shutdown(ssl, 1);
    v = SSL_get_verify_result(ssl);
    if (v != X509_V_OK) {
        snprintf(err, LSV_ERRLEN, "certificate verify failed: %s",
                 X509_verify_cert_error_string(v));
        ERR_clear_error();
    } else if (e == SSL_ERROR_SYSCALL && ERR_peek_last_error() == 0) {
        snprintf(err, LSV_ERRLEN, "%s", errno ? strerror(errno)
                 : "closed by the server");
    } else {
        reason(err, "", "failed");
    }
    return LSV_ERR;
}

/* Maps a failed SSL call's error to the socket's: -1 with errno EAGAIN
 * (wait), 0 (a close, reading), or -1 with errno (failed; nothing more
 * is sent on ssl). */
static ssize_t failed(SSL *ssl, int r, int reading)
{
    int e = SSL_get_error(ssl, r), saved = errno;

    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        errno = EAGAIN;
        return -1;
    }
    if (reading && e == SSL_ERROR_ZERO_RETURN) return 0;
    SSL_set_quiet_shutdown(ssl, 1);
    ERR_clear_error();
    if (reading && e == SSL_ERROR_SYSCALL && saved == 0) return 0;
    errno = !reading ? EPIPE : e == SSL_ERROR_SYSCALL && saved != 0 ? saved
            : ECONNRESET;
    return -1;
}

ssize_t bench_tls_read(SSL *ssl, char *p, size_t n)
{
    size_t total = 0, got;

    for (;;) {
        ERR_clear_error();
        errno = 0;
        if (SSL_read_ex(ssl, p + total, n - total, &got)) {
            total += got;
            /* read_ahead: more whole records may sit in OpenSSL's buffer
             * that epoll will not announce. */
            if (total == n || !SSL_has_pending(ssl)) return (ssize_t)total;
            continue;
        }
        ssize_t r = failed(ssl, 0, 1);
        if (total > 0) return (ssize_t)total;   /* the close comes next */
        return r;
    }
}

ssize_t bench_tls_write(SSL *ssl, const char *p, size_t n)
{
    size_t w;

    ERR_clear_error();
    errno = 0;
    if (SSL_write_ex(ssl, p, n, &w)) return (ssize_t)w;
    return failed(ssl, 0, 0);
}

int bench_tls_resumed(SSL *ssl)
{
    return SSL_session_reused(ssl);
}

void bench_tls_close(SSL *ssl)
{
    if (SSL_is_init_finished(ssl) && !SSL_get_quiet_shutdown(ssl)) {
        ERR_clear_error();
        (void)SSL_shutdown(ssl);
    }
    ERR_clear_error();
    SSL_free(ssl);
}

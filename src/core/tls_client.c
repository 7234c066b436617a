/* tls_client.c: the client handshake of an outbound TLS conn (tls.h). */
#include "lsv.h"
#include "conn.h"
#include "conn_int.h"
#include "log.h"
#include "tls.h"
#include "tls_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Keeps why s's handshake failed (what lsv_conn_tls_error returns),
 * replacing an earlier reason. Out of memory it keeps none; the caller
 * then says "handshake failed". */
static void set_error(lsv_tls_session_t *s, const char *fmt, const char *a)
{
    char msg[LSV_ERRLEN];
    snprintf(msg, sizeof msg, fmt, a);
    free(s->error);
    s->error = strdup(msg);
}

/* Says why SSL_connect failed with ssl_err: a certificate the context's
 * verification refused (OpenSSL's own text: "self-signed certificate in
 * certificate chain", "hostname mismatch", ...), else the first reason
 * on OpenSSL's error queue, else the socket's errno or the peer's EOF.
 * Clears the error queue. */
static void handshake_failed(lsv_conn_t *c, lsv_tls_session_t *s,
                             int ssl_err)
{
    long vr = SSL_get_verify_result(s->ssl);
    unsigned long e = ERR_peek_error();
    if (vr != X509_V_OK) {
        set_error(s, "certificate verify failed: %s",
                  X509_verify_cert_error_string(vr));
    } else if (ssl_err == SSL_ERROR_SSL && e != 0) {
        const char *why = ERR_reason_error_string(e);
        set_error(s, "handshake: %s", why ? why : "protocol error");
    } else if (ssl_err == SSL_ERROR_SYSCALL && errno != 0) {
        set_error(s, "handshake: %s", strerror(errno));
    } else {
        set_error(s, "handshake: %s", "the server closed the connection");
    }
    ERR_clear_error();
    lsv_debug("conn %llu: TLS handshake failed: %s",
              (unsigned long long)lsv_conn_id(c),
              s->error ? s->error : "?");
}

/* The transport's handshake op for a client session: one SSL_connect,
 * non-blocking. LSV_OK once done; LSV_AGAIN with *events the socket must
 * show first (a want-read waits for input only, so the loop never spins
 * on a writable socket); LSV_ERR with the reason kept in the session. */
static int client_handshake(lsv_conn_t *c, int *events)
{
    lsv_tls_session_t *s = lsv_tls_session_of(c);
    ERR_clear_error();
    errno = 0;
    int r = SSL_connect(s->ssl);
    if (r == 1) return LSV_OK;
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        *events = EV_READ;
        return LSV_AGAIN;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        *events = EV_WRITE;
        return LSV_AGAIN;
    }
    handshake_failed(c, s, e);
    return LSV_ERR;
}

/* 1 when name is an IPv4 or IPv6 literal (checked as an address, and
 * never sent as SNI, which RFC 6066 allows for host names only). */
static int is_ip_literal(const char *name)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, name, buf) == 1 ||
           inet_pton(AF_INET6, name, buf) == 1;
}

int lsv_tls_connect(lsv_conn_t *c, lsv_tls_ctx_t *ctx, const char *sni)
{
    lsv_tls_session_t *s = lsv_tls_session_new(ctx, lsv_conn_fd(c), 0);
    if (s == NULL) return LSV_ERR;
    int ok = 1;
    if (sni && *sni) {
        if (is_ip_literal(sni)) {
            ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), sni);
        } else {
            /* the name is sent, and the certificate must carry it when
             * the context verifies (SSL_VERIFY_PEER) */
            ok = SSL_set_tlsext_host_name(s->ssl, sni) == 1 &&
                 SSL_set1_host(s->ssl, sni) == 1;
        }
    }
    if (!ok) {
        ERR_clear_error();
        lsv_tls_session_free(s);
        return LSV_ERR;
    }
    s->vt.handshake = client_handshake;
    c->transport = &s->vt;
    return LSV_OK;
}

const char *lsv_conn_tls_error(const lsv_conn_t *c)
{
    if (lsv_conn_transport(c)->handshake != client_handshake) return NULL;
    return lsv_tls_session_of(c)->error;
}

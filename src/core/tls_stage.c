/* tls_stage.c: the server's TLS handshake, a stage between accept (or the
 * PROXY header) and the conn, with the SNI callback that asks the layer
 * above for a certificate. No conn exists until the handshake is done,
 * so a failed one costs no conn and no handler call. */
#include "lsv.h"
#include "tls.h"
#include "tls_int.h"
#include "listener.h"
#include "log.h"
#include "net.h"
#include "proxy.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct lsv_tls_stage {
    lsv_tls_stage_t *prev, *next;   /* srv->tls_stages */
    lsv_listener_t *l;
    lsv_tls_session_t *s;
    lsv_proxy_info_t *proxy;        /* the PROXY header's (owned), or NULL */
    ev_io io;
    ev_timer timer;
    struct sockaddr_storage peer;   /* the client (the header's) */
    socklen_t peer_len;
    int sni_failed;                 /* hooks->sni refused the name */
};

static void stage_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void stage_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

/* Unlinks t, stops its watchers and frees it; with keep the fd, the
 * session and the PROXY info go on to the conn, else they go too. */
static void stage_free(lsv_tls_stage_t *t, int keep)
{
    lsv_server_t *srv = t->l->srv;
    ev_io_stop(srv->loop, &t->io);
    ev_timer_stop(srv->loop, &t->timer);
    if (t->prev) t->prev->next = t->next;
    else srv->tls_stages = t->next;
    if (t->next) t->next->prev = t->prev;
    SSL_set_app_data(t->s->ssl, NULL);
    if (!keep) {
        lsv_tls_session_free(t->s);
        free(t->proxy);
        close(t->io.fd);
    }
    free(t);
}

/* --- failures ----------------------------------------------------------- */

/* Closes t for reason (an LSV_TLS_ERR_*), counted, with one info line
 * naming the listener, the client and the fault. The internet sends
 * garbage and scans all day: the line is rate-limited per listener as
 * warnings are (LSV_LOG_LIMITED). */
static void stage_fail(lsv_tls_stage_t *t, int reason, const char *fault)
{
    lsv_listener_t *l = t->l;
    l->stats.tls_errors[reason]++;
    if (LSV_LOG_INFO >= lsv_log_level) {
        char peer[LSV_ADDRSTRLEN];
        lsv_log_ctx_t ctx = {
            l->name,
            lsv_net_format((struct sockaddr *)&t->peer, t->peer_len, peer), 0
        };
        lsv_log_writec(LSV_LOG_INFO | LSV_LOG_LIMITED, &ctx,
                       "TLS handshake: %s (%s); closed", fault,
                       lsv_tls_err_names[reason]);
    }
    ERR_clear_error();
    stage_free(t, 0);
}

/* The reason of an OpenSSL error in the handshake: what the client
 * offered that we do not share, a certificate either side refused, else
 * bytes that are not TLS (the default: garbage, plaintext). */
static int classify(unsigned long e)
{
    switch (ERR_GET_REASON(e)) {
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_NO_PROTOCOLS_AVAILABLE:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_VERSION_TOO_HIGH:
    case SSL_R_NO_SHARED_CIPHER:
    case SSL_R_NO_SHARED_GROUPS:
    case SSL_R_NO_SHARED_SIGNATURE_ALGORITHMS:
    case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
    case SSL_R_NO_APPLICATION_PROTOCOL:
    case SSL_R_INAPPROPRIATE_FALLBACK:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
    case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
    case SSL_R_TLSV1_ALERT_INSUFFICIENT_SECURITY:
        return LSV_TLS_ERR_VERSION;
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
    case SSL_R_NO_CERTIFICATES_RETURNED:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_TLSV1_ALERT_DECRYPT_ERROR:
        return LSV_TLS_ERR_CERT;
    case SSL_R_UNEXPECTED_EOF_WHILE_READING:
        return LSV_TLS_ERR_EOF;
    default:
        return LSV_TLS_ERR_PROTOCOL;
    }
}

/* Closes t after SSL_do_handshake failed with ssl_err: classified, with
 * OpenSSL's reason ("http request", "wrong version number", "tlsv1 alert
 * unknown ca") or the socket's as the fault. */
static void handshake_failed(lsv_tls_stage_t *t, int ssl_err)
{
    unsigned long e = ERR_peek_last_error();
    char fault[160];
    long vr = SSL_get_verify_result(t->s->ssl);
    if (t->sni_failed) {
        stage_fail(t, LSV_TLS_ERR_SNI, "no certificate for the name sent");
    } else if (ssl_err == SSL_ERROR_SSL && vr != X509_V_OK) {
        snprintf(fault, sizeof fault, "client certificate refused: %s",
                 X509_verify_cert_error_string(vr));
        stage_fail(t, LSV_TLS_ERR_CERT, fault);
    } else if (ssl_err == SSL_ERROR_SSL && e) {
        const char *why = ERR_reason_error_string(e);
        stage_fail(t, classify(e), why ? why : "protocol error");
    } else if (ssl_err == SSL_ERROR_SYSCALL && errno) {
        snprintf(fault, sizeof fault, "%s", strerror(errno));
        stage_fail(t, LSV_TLS_ERR_EOF, fault);
    } else {
        stage_fail(t, LSV_TLS_ERR_EOF, "closed mid-handshake");
    }
}

/* --- the handshake ------------------------------------------------------ */

/* Hands t's connection on: counted, then hooks->accept with the session
 * and the PROXY info (both the conn's now). */
static void stage_done(lsv_tls_stage_t *t)
{
    lsv_listener_t *l = t->l;
    l->stats.tls_handshakes++;
    if (SSL_session_reused(t->s->ssl)) l->stats.tls_resumed++;
    struct sockaddr_storage sa = t->peer;
    socklen_t salen = t->peer_len;
    int fd = t->io.fd;
    lsv_accepted_t acc = { t->proxy, &t->s->vt, 1 };
    stage_free(t, 1);
    l->srv->hooks->accept(l, fd, (struct sockaddr *)&sa, salen, &acc);
}

/* One step of t's handshake. Waits for the event OpenSSL wants (only
 * that one, so a writable socket cannot spin a handshake that waits for
 * input), or ends t (done or failed). */
static void stage_step(lsv_tls_stage_t *t)
{
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(t->s->ssl);
    if (r == 1) {
        stage_done(t);
        return;
    }
    int e = SSL_get_error(t->s->ssl, r);
    int want = e == SSL_ERROR_WANT_READ ? EV_READ
             : e == SSL_ERROR_WANT_WRITE ? EV_WRITE : 0;
    if (want == 0) {
        handshake_failed(t, e);
        return;
    }
    struct ev_loop *loop = t->l->srv->loop;
    if (ev_is_active(&t->io) && (t->io.events & (EV_READ | EV_WRITE)) == want)
        return;
    ev_io_stop(loop, &t->io);
    ev_io_set(&t->io, t->io.fd, want);
    ev_io_start(loop, &t->io);
}

static void stage_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop; (void)revents;
    stage_step(container_of(w, lsv_tls_stage_t, io));
}

static void stage_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)revents;
    lsv_tls_stage_t *t = container_of(w, lsv_tls_stage_t, timer);
    char fault[64];
    snprintf(fault, sizeof fault, "not done within %g s",
             t->l->opt.tls.handshake_timeout);
    stage_fail(t, LSV_TLS_ERR_TIMEOUT, fault);
}

void lsv_tls_stage_begin(lsv_listener_t *l, int fd, const struct sockaddr *sa,
                         socklen_t salen, lsv_proxy_info_t *proxy)
{
    lsv_server_t *srv = l->srv;
    /* A peer on_accept refuses costs no handshake (nor an on_sni call). */
    if (srv->hooks->admit && !srv->hooks->admit(l, sa, salen)) {
        free(proxy);
        close(fd);
        return;
    }
    lsv_tls_session_t *s = l->tls ? lsv_tls_session_new(l->tls, fd, 1) : NULL;
    if (s == NULL) {
        lsv_warn("%s: no TLS session for a new connection (out of memory); "
                 "closed", l->name);
        free(proxy);
        close(fd);
        return;
    }
    lsv_tls_stage_t *t = lsv_malloc(sizeof *t);
    t->l = l;
    t->s = s;
    t->proxy = proxy;
    t->sni_failed = 0;
    if (salen > sizeof t->peer) salen = sizeof t->peer;
    memcpy(&t->peer, sa, salen);
    t->peer_len = salen;
    t->prev = NULL;
    t->next = srv->tls_stages;
    if (srv->tls_stages) srv->tls_stages->prev = t;
    srv->tls_stages = t;
    SSL_set_app_data(s->ssl, t);
    /* The server's flight goes out in several writes: without NODELAY
     * the second would wait for the client's delayed ACK. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ev_io_init(&t->io, stage_io_cb, fd, EV_READ);
    ev_init(&t->timer, stage_timer_cb);
    if (l->opt.tls.handshake_timeout > 0) {
        ev_timer_set(&t->timer, l->opt.tls.handshake_timeout, 0.);
        ev_timer_start(srv->loop, &t->timer);
    }
    /* The ClientHello often came with the accept: try at once. */
    stage_step(t);
}

void lsv_tls_stage_start(lsv_listener_t *l, int fd, const struct sockaddr *sa,
                         socklen_t salen)
{
    lsv_tls_stage_begin(l, fd, sa, salen, NULL);
}

/* --- SNI ---------------------------------------------------------------- */

/* The client sent a server name: hooks->sni may give a context for it
 * (its certificate; the session then holds that context), refuse it
 * (the handshake fails with reason sni), or leave the listener's.
 * Without a stage (an outbound session) or a hook, the name is only
 * recorded (conn.tls.sni). */
int lsv_tls_sni_cb(SSL *ssl, int *alert, void *arg)
{
    (void)arg;
    lsv_tls_stage_t *t = SSL_get_app_data(ssl);
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (t == NULL || name == NULL || t->l->srv->hooks->sni == NULL)
        return SSL_TLSEXT_ERR_OK;
    /* The address the client asked for: a PROXY header's dst, else the
     * socket's own (with a wildcard listener, not the listener's). */
    struct sockaddr_storage local;
    socklen_t local_len = sizeof local;
    if (t->proxy && !t->proxy->hdr.local && t->proxy->hdr.dst_len) {
        local = t->proxy->hdr.dst;
        local_len = t->proxy->hdr.dst_len;
    } else if (getsockname(t->io.fd, (struct sockaddr *)&local,
                           &local_len) != 0) {
        local_len = 0;
    }
    int fail = 0;
    lsv_tls_ctx_t *x = t->l->srv->hooks->sni(t->l, name,
                                             (struct sockaddr *)&t->peer,
                                             t->peer_len,
                                             (struct sockaddr *)&local,
                                             local_len, &fail);
    if (fail) {
        lsv_tls_ctx_unref(x);
        t->sni_failed = 1;
        *alert = SSL_AD_UNRECOGNIZED_NAME;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    if (x == NULL) return SSL_TLSEXT_ERR_OK;
    if (SSL_set_SSL_CTX(ssl, x->ssl) == NULL) {
        lsv_tls_ctx_unref(x);
        t->sni_failed = 1;
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    lsv_tls_ctx_unref(t->s->ctx);
    t->s->ctx = x;          /* the hook's reference, now the session's */
    return SSL_TLSEXT_ERR_OK;
}

/* --- the stop ----------------------------------------------------------- */

void lsv_tls_stop_all(lsv_server_t *srv)
{
    while (srv->tls_stages) {
        lsv_tls_stage_t *t = srv->tls_stages;
        lsv_debug("%s: closing a connection still in its TLS handshake: "
                  "stopping", t->l->name);
        stage_free(t, 0);
    }
}

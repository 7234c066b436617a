/* tls.c: certificate contexts, the TLS transport, conn.tls's info and a
 * listener's TLS (tls.h). The server's handshake stage is tls_stage.c. */
#include "lsv.h"
#include "tls.h"
#include "tls_int.h"
#include "conn_int.h"
#include "log.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

const char *const lsv_tls_err_names[LSV_TLS_ERR_COUNT] = {
    "protocol", "version", "certificate", "timeout", "eof", "sni"
};

/* What every session of either side gets: partial writes (a record at a
 * time, so the conn's buffer keeps the rest and backpressure counts it),
 * a retry from a moved buffer (c->out compacts), and buffers given back
 * while idle (an idle TLS conn holds no 34 KB of them). A peer's EOF
 * without close_notify reads as an end of stream, not a fatal error, so
 * a half-closed peer still gets its answer. */
#define SESSION_MODES (SSL_MODE_ENABLE_PARTIAL_WRITE | \
                       SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | \
                       SSL_MODE_RELEASE_BUFFERS)
#define SESSION_OPTIONS (SSL_OP_NO_RENEGOTIATION | \
                         SSL_OP_IGNORE_UNEXPECTED_EOF)

/* --- contexts ----------------------------------------------------------- */

lsv_tls_ctx_t *lsv_tls_ctx_ref(lsv_tls_ctx_t *x)
{
    x->refs++;
    return x;
}

void lsv_tls_ctx_unref(lsv_tls_ctx_t *x)
{
    if (x == NULL || --x->refs > 0) return;
    SSL_CTX_free(x->ssl);
    free(x);
}

/* Fills err with "tls: WHAT NAME: <OpenSSL's reason>" and clears
 * OpenSSL's error queue. A PEM text (not a file) is named "(PEM text)".
 * Returns NULL, for the caller's return. */
static lsv_tls_ctx_t *ctx_error(SSL_CTX *ssl, const char *what,
                               const char *name, char err[LSV_ERRLEN])
{
    /* The queue's first entry is the cause ("no start line", or the
     * errno of a file that cannot be opened: "No such file or
     * directory"); the later ones only say where it surfaced ("PEM
     * lib", "system lib"). */
    unsigned long e = ERR_get_error();
    const char *why = e == 0 ? NULL
                    : ERR_SYSTEM_ERROR(e) ? strerror(ERR_GET_REASON(e))
                    : ERR_reason_error_string(e);
    if (name && strncmp(name, "-----BEGIN", 10) == 0) name = "(PEM text)";
    snprintf(err, LSV_ERRLEN, "tls: %s %.120s: %s", what, name ? name : "",
             why ? why : e ? "unknown error" : strerror(errno ? errno
                                                                : EINVAL));
    ERR_clear_error();
    SSL_CTX_free(ssl);
    return NULL;
}

/* A new SSL_CTX for method with what both sides share (TLS 1.2 and up,
 * the modes and options above). NULL out of memory. */
static SSL_CTX *ctx_new(const SSL_METHOD *method)
{
    SSL_CTX *ssl = SSL_CTX_new(method);
    if (ssl == NULL) return NULL;
    SSL_CTX_set_min_proto_version(ssl, TLS1_2_VERSION);
    SSL_CTX_set_mode(ssl, SESSION_MODES);
    SSL_CTX_set_options(ssl, SESSION_OPTIONS);
    /* Reads take every whole record the socket holds at once (the
     * transport's pending() tells the conn of them). */
    SSL_CTX_set_read_ahead(ssl, 1);
    return ssl;
}

/* Wraps ssl with one reference; frees ssl when that allocation fails. */
static lsv_tls_ctx_t *ctx_wrap(SSL_CTX *ssl, char err[LSV_ERRLEN])
{
    lsv_tls_ctx_t *x = malloc(sizeof *x);
    if (x == NULL) {
        snprintf(err, LSV_ERRLEN, "tls: out of memory");
        SSL_CTX_free(ssl);
        return NULL;
    }
    x->ssl = ssl;
    x->refs = 1;
    return x;
}

static int is_pem(const char *s)
{
    return strncmp(s, "-----BEGIN", 10) == 0;
}

/* Loads a PEM chain given as text: the leaf, then its intermediates.
 * Returns 1, or 0 with OpenSSL's error queue saying why. */
static int use_chain_text(SSL_CTX *ssl, const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    if (bio == NULL) return 0;
    X509 *leaf = PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL);
    int ok = leaf && SSL_CTX_use_certificate(ssl, leaf) == 1 &&
             SSL_CTX_clear_chain_certs(ssl) == 1;
    X509_free(leaf);
    X509 *ca;
    while (ok && (ca = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (SSL_CTX_add0_chain_cert(ssl, ca) != 1) {
            X509_free(ca);
            ok = 0;
        }
    }
    if (ok) {
        /* The chain ends where the text's last certificate did. */
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_LIB(e) == ERR_LIB_PEM &&
            ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
            ERR_clear_error();
    }
    BIO_free(bio);
    return ok;
}

/* Loads a private key given as PEM text. Returns 1, or 0 (queue). */
static int use_key_text(SSL_CTX *ssl, const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    if (bio == NULL) return 0;
    EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    int ok = key && SSL_CTX_use_PrivateKey(ssl, key) == 1;
    EVP_PKEY_free(key);
    BIO_free(bio);
    return ok;
}

/* The ALPN select callback: the first of the server's protocols (its
 * preference) the client offers. None in common: the handshake goes on
 * without ALPN (NOACK), as nginx does. arg is the lsv_tls_ctx_t. */
static int alpn_select_cb(SSL *ssl, const unsigned char **out,
                          unsigned char *outlen, const unsigned char *in,
                          unsigned int inlen, void *arg)
{
    (void)ssl;
    const lsv_tls_ctx_t *x = arg;
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, x->alpn, (unsigned)x->alpn_len,
                              in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* Asks for client certificates as o says, checked against o->client_ca.
 * Returns 1, or 0 (queue). */
static int use_client_ca(SSL_CTX *ssl, const lsv_tls_opts_t *o)
{
    if (SSL_CTX_load_verify_locations(ssl, o->client_ca, NULL) != 1)
        return 0;
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->client_ca);
    if (names == NULL) return 0;
    SSL_CTX_set_client_CA_list(ssl, names);
    int mode = SSL_VERIFY_PEER;
    if (o->verify != LSV_TLS_VERIFY_OPTIONAL)
        mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ssl, mode, NULL);
    return 1;
}

/* "tls: key KEY does not match certificate CERT"; frees ssl, NULL. */
static lsv_tls_ctx_t *key_mismatch(SSL_CTX *ssl, const lsv_tls_opts_t *o,
                                   char err[LSV_ERRLEN])
{
    char cert[64];
    snprintf(cert, sizeof cert, "%.60s",
             is_pem(o->cert) ? "(PEM text)" : o->cert);
    ERR_clear_error();
    SSL_CTX_free(ssl);
    snprintf(err, LSV_ERRLEN, "tls: key %.80s does not match certificate %s",
             is_pem(o->key) ? "(PEM text)" : o->key, cert);
    return NULL;
}

lsv_tls_ctx_t *lsv_tls_server_ctx(const lsv_tls_opts_t *o,
                                  char err[LSV_ERRLEN])
{
    static const unsigned char sid_ctx[] = "luaserv";
    if (o->cert == NULL || o->key == NULL) {
        snprintf(err, LSV_ERRLEN, "tls: a certificate and a key are needed");
        return NULL;
    }
    ERR_clear_error();
    errno = 0;
    SSL_CTX *ssl = ctx_new(TLS_server_method());
    if (ssl == NULL) return ctx_error(NULL, "cannot make a context", "", err);
    SSL_CTX_set_session_id_context(ssl, sid_ctx, sizeof sid_ctx - 1);
    SSL_CTX_set_session_cache_mode(ssl, SSL_SESS_CACHE_SERVER);
    if (!(is_pem(o->cert) ? use_chain_text(ssl, o->cert)
          : SSL_CTX_use_certificate_chain_file(ssl, o->cert) == 1))
        return ctx_error(ssl, "cannot load certificate", o->cert, err);
    if (!(is_pem(o->key) ? use_key_text(ssl, o->key)
          : SSL_CTX_use_PrivateKey_file(ssl, o->key, SSL_FILETYPE_PEM) == 1)) {
        /* Loading the key checks it against the certificate already. */
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_LIB(e) == ERR_LIB_X509 &&
            ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
            return key_mismatch(ssl, o, err);
        return ctx_error(ssl, "cannot load key", o->key, err);
    }
    if (SSL_CTX_check_private_key(ssl) != 1) return key_mismatch(ssl, o, err);
    if (o->client_ca && !use_client_ca(ssl, o))
        return ctx_error(ssl, "cannot load client CA", o->client_ca, err);
    SSL_CTX_set_tlsext_servername_callback(ssl, lsv_tls_sni_cb);
    lsv_tls_ctx_t *x = ctx_wrap(ssl, err);
    if (x == NULL) return NULL;
    x->alpn = o->alpn;
    x->alpn_len = o->alpn_len;
    if (o->alpn && o->alpn_len)
        SSL_CTX_set_alpn_select_cb(ssl, alpn_select_cb, x);
    return x;
}

lsv_tls_ctx_t *lsv_tls_client_ctx(int verify, const char *ca,
                                  const unsigned char *alpn, size_t alpn_len,
                                  char err[LSV_ERRLEN])
{
    ERR_clear_error();
    errno = 0;
    SSL_CTX *ssl = ctx_new(TLS_client_method());
    if (ssl == NULL) return ctx_error(NULL, "cannot make a context", "", err);
    SSL_CTX_set_session_cache_mode(ssl, SSL_SESS_CACHE_OFF);
    if (verify) {
        if (ca ? SSL_CTX_load_verify_locations(ssl, ca, NULL) != 1
               : SSL_CTX_set_default_verify_paths(ssl) != 1)
            return ctx_error(ssl, "cannot load CA", ca ? ca : "(system)",
                             err);
        SSL_CTX_set_verify(ssl, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ssl, SSL_VERIFY_NONE, NULL);
    }
    /* SSL_CTX_set_alpn_protos returns 0 on success. */
    if (alpn && alpn_len &&
        SSL_CTX_set_alpn_protos(ssl, alpn, (unsigned)alpn_len) != 0)
        return ctx_error(ssl, "bad ALPN list", "", err);
    /* OpenSSL copied the list; the caller's may be gone by the time a
     * handshake runs, so none is kept here (only a server's select
     * callback reads x->alpn). */
    lsv_tls_ctx_t *x = ctx_wrap(ssl, err);
    if (x == NULL) return NULL;
    x->alpn = NULL;
    x->alpn_len = 0;
    return x;
}

/* --- sessions and the transport ----------------------------------------- */

lsv_tls_session_t *lsv_tls_session_new(lsv_tls_ctx_t *ctx, int fd,
                                       int server)
{
    lsv_tls_session_t *s = calloc(1, sizeof *s);
    if (s == NULL) return NULL;
    s->ssl = SSL_new(ctx->ssl);
    if (s->ssl == NULL || SSL_set_fd(s->ssl, fd) != 1) {
        SSL_free(s->ssl);
        free(s);
        ERR_clear_error();
        return NULL;
    }
    s->vt = lsv_tls_transport;
    s->ctx = lsv_tls_ctx_ref(ctx);
    if (server) SSL_set_accept_state(s->ssl);
    else SSL_set_connect_state(s->ssl);
    return s;
}

void lsv_tls_session_free(lsv_tls_session_t *s)
{
    if (s == NULL) return;
    SSL_free(s->ssl);
    lsv_tls_ctx_unref(s->ctx);
    free(s->error);
    free(s);
}

/* A fatal error on s: nothing more goes to the peer, close_notify
 * included. Logs OpenSSL's reason at debug and clears its queue; sets
 * errno to err (ECONNRESET, EPIPE) unless the socket left one. */
static void session_failed(lsv_conn_t *c, lsv_tls_session_t *s, int ssl_err,
                           const char *op, int err)
{
    int saved = errno;
    unsigned long e = ERR_peek_error();
    if (LSV_LOG_DEBUG >= lsv_log_level)
        lsv_debug("conn %llu: TLS %s: %s", (unsigned long long)c->id, op,
                  e ? ERR_reason_error_string(e)
                    : saved ? strerror(saved) : "the peer went away");
    ERR_clear_error();
    SSL_set_quiet_shutdown(s->ssl, 1);
    errno = ssl_err == SSL_ERROR_SYSCALL && saved ? saved : err;
}

/* A write that waited for input (tls_write) may go on: input came. */
static void write_may_go(lsv_conn_t *c, lsv_tls_session_t *s)
{
    s->write_wants_read = 0;
    if (c->out.len) lsv_conn_watch_writable(c, 1);
}

/* As read(2): fills p with every whole record OpenSSL holds or the socket
 * had, up to n. A record needing a write first (a TLS 1.3 KeyUpdate's
 * answer to a peer that does not read) holds reading off as backpressure
 * does, so a readable socket cannot spin the loop: conn_out.c's flush
 * restarts it once the socket takes output again. */
static ssize_t tls_read(lsv_conn_t *c, char *p, size_t n)
{
    lsv_tls_session_t *s = lsv_tls_session_of(c);
    size_t got = 0;
    if (unlikely(s->write_wants_read)) lsv_conn_watch_writable(c, 0);
    for (;;) {
        size_t r = 0;
        ERR_clear_error();
        errno = 0;
        if (SSL_read_ex(s->ssl, p + got, n - got, &r) == 1) {
            if (unlikely(s->write_wants_read)) write_may_go(c, s);
            got += r;
            if (got == n || !SSL_has_pending(s->ssl)) return (ssize_t)got;
            continue;
        }
        int e = SSL_get_error(s->ssl, 0);
        if (got) {
            /* The bytes first; an end or a fault met after them (a
             * close_notify in the same TCP segment) is the next read's,
             * which no socket event will ask for. */
            ERR_clear_error();
            if (e != SSL_ERROR_WANT_READ) {
                s->end_held = 1;
                lsv_conn_schedule_read(c);
            }
            return (ssize_t)got;
        }
        s->end_held = 0;
        switch (e) {
        case SSL_ERROR_ZERO_RETURN:
            if (unlikely(s->write_wants_read)) write_may_go(c, s);
            return 0;
        case SSL_ERROR_WANT_READ:
            errno = EAGAIN;
            return -1;
        case SSL_ERROR_WANT_WRITE:
            c->flags |= LSV_CONN_BLOCKED;
            lsv_conn_stop_reading(c);
            lsv_conn_watch_writable(c, 1);
            errno = EAGAIN;
            return -1;
        default:
            if (e == SSL_ERROR_SYSCALL && errno == 0) return 0;  /* EOF */
            session_failed(c, s, e, "read", ECONNRESET);
            return -1;
        }
    }
}

/* As send(2): one record of at most n bytes (partial writes). A write
 * that needs a read first (none should: renegotiation is off) waits for
 * the socket's input, not for room: writing stops, and tls_read's next
 * progress restarts it, so a writable socket cannot spin the loop. */
static ssize_t tls_write(lsv_conn_t *c, const char *p, size_t n)
{
    lsv_tls_session_t *s = lsv_tls_session_of(c);
    size_t w = 0;
    ERR_clear_error();
    errno = 0;
    if (SSL_write_ex(s->ssl, p, n, &w) == 1) return (ssize_t)w;
    int e = SSL_get_error(s->ssl, 0);
    if (e == SSL_ERROR_WANT_WRITE) {
        errno = EAGAIN;
        return -1;
    }
    if (e == SSL_ERROR_WANT_READ) {
        s->write_wants_read = 1;
        lsv_conn_schedule_read(c);
        errno = EAGAIN;
        return -1;
    }
    session_failed(c, s, e, "write", EPIPE);
    return -1;
}

/* Decrypted bytes OpenSSL holds, or 1 for records read ahead and not
 * yet decrypted, or for an end a read met after its bytes: the socket's
 * readiness no longer says they are there. */
static size_t tls_pending(lsv_conn_t *c)
{
    lsv_tls_session_t *s = lsv_tls_session_of(c);
    int n = SSL_pending(s->ssl);
    if (n > 0) return (size_t)n;
    return SSL_has_pending(s->ssl) || s->end_held;
}

/* Sends close_notify once, without waiting for the peer's (a conn whose
 * session failed sends nothing: quiet shutdown), then frees the session
 * and closes the socket. */
static void tls_close(lsv_conn_t *c)
{
    lsv_tls_session_t *s = lsv_tls_session_of(c);
    int fd = c->io.fd;
    if (SSL_is_init_finished(s->ssl) &&
        !(SSL_get_shutdown(s->ssl) & SSL_SENT_SHUTDOWN)) {
        ERR_clear_error();
        SSL_shutdown(s->ssl);
        ERR_clear_error();
    }
    lsv_tls_session_free(s);
    close(fd);
}

/* A session that never became a conn's (lsv_accepted_drop). */
static void tls_discard(const lsv_transport_t *t)
{
    lsv_tls_session_free((lsv_tls_session_t *)(void *)t);
}

/* handshake stays NULL here: tls_client.c sets a client session's. */
const lsv_transport_t lsv_tls_transport = {
    .name = "tls",
    .read = tls_read,
    .write = tls_write,
    .close = tls_close,
    .sendfile = NULL,
    .pending = tls_pending,
    .handshake = NULL,
    .discard = tls_discard,
};

/* --- conn.tls ------------------------------------------------------------ */

/* Formats name as RFC 2253 into out (empty when it fails). */
static void name_text(const X509_NAME *name, char *out, size_t cap)
{
    out[0] = '\0';
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL) return;
    if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0) {
        int n = BIO_read(bio, out, (int)cap - 1);
        out[n > 0 ? n : 0] = '\0';
    }
    BIO_free(bio);
}

/* The peer's certificate into out: subject, issuer, SHA-256 hex pairs. */
static void peer_cert_info(SSL *ssl, lsv_tls_info_t *out)
{
    X509 *cert = SSL_get0_peer_certificate(ssl);
    if (cert == NULL) return;
    out->has_peer_cert = 1;
    out->peer_verified = SSL_get_verify_result(ssl) == X509_V_OK;
    name_text(X509_get_subject_name(cert), out->subject, sizeof out->subject);
    name_text(X509_get_issuer_name(cert), out->issuer, sizeof out->issuer);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (X509_digest(cert, EVP_sha256(), md, &mdlen) != 1) mdlen = 0;
    static const char hex[] = "0123456789ABCDEF";
    size_t k = 0;
    for (unsigned i = 0; i < mdlen && k + 3 < sizeof out->fingerprint; i++) {
        if (i) out->fingerprint[k++] = ':';
        out->fingerprint[k++] = hex[md[i] >> 4];
        out->fingerprint[k++] = hex[md[i] & 15];
    }
    out->fingerprint[k] = '\0';
}

int lsv_conn_tls_info(const lsv_conn_t *c, lsv_tls_info_t *out)
{
    const lsv_transport_t *vt = lsv_conn_transport(c);
    if (vt->read != tls_read) return 0;
    SSL *ssl = lsv_tls_session_of(c)->ssl;
    memset(out, 0, sizeof *out);
    out->version = SSL_get_version(ssl);
    out->cipher = SSL_get_cipher_name(ssl);
    out->sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    SSL_get0_alpn_selected(ssl, &out->alpn, &out->alpn_len);
    if (out->alpn_len == 0) out->alpn = NULL;
    out->resumed = SSL_session_reused(ssl);
    peer_cert_info(ssl, out);
    ERR_clear_error();
    return 1;
}

/* --- listeners ---------------------------------------------------------- */

static const lsv_listener_ops_t tls_listener_ops = {
    .free = lsv_tls_listener_free,
};

int lsv_tls_listener_setup(lsv_listener_t *l, char err[LSV_ERRLEN])
{
    const lsv_tls_opts_t *o = &l->opt.tls;
    if (o->cert == NULL || o->key == NULL) {
        snprintf(err, LSV_ERRLEN, "%s: a tls listener needs cert and key "
                 "(--tls-cert, --tls-key or listen{ cert =, key = })",
                 l->name);
        return LSV_ERR;
    }
    lsv_tls_ctx_t *x = lsv_tls_server_ctx(o, err);
    if (x == NULL) return LSV_ERR;
    lsv_tls_listener_adopt(l, x);
    return LSV_OK;
}

void lsv_tls_listener_adopt(lsv_listener_t *l, lsv_tls_ctx_t *x)
{
    lsv_tls_ctx_unref(l->tls);
    l->tls = x;
    /* A TCP listener has no kind's ops: these free its context. */
    if (l->ops == NULL) l->ops = &tls_listener_ops;
    /* After a PROXY stage, handshake.c hands on to the TLS stage itself
     * (it sees l->tls). */
    if (l->stage == NULL) l->stage = lsv_tls_stage_start;
}

int lsv_tls_listener_reload(lsv_listener_t *l, char err[LSV_ERRLEN])
{
    if (l->tls == NULL) return LSV_OK;
    lsv_tls_ctx_t *x = lsv_tls_server_ctx(&l->opt.tls, err);
    if (x == NULL) return LSV_ERR;
    lsv_tls_ctx_unref(l->tls);
    l->tls = x;
    return LSV_OK;
}

void lsv_tls_listener_free(lsv_listener_t *l)
{
    lsv_tls_ctx_unref(l->tls);
    l->tls = NULL;
}

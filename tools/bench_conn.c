/* bench_conn.c: luaserv-bench's connections, below every mode: counting
 * a bad reply, closing and failing a connection (with its retry),
 * writing its queued requests, one read. bench.c and bench_ws.c call it;
 * it calls neither (a retry goes through b->reopen). */
#include "bench_conn.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Counts a reply that failed the check; the first is kept for the report,
 * quoted, with CR and LF shown as \r and \n and other controls as '?'. */
void bench_bad_reply(bench_t *b, const char *p, size_t n)
{
    char *o = b->bad_sample, *end = o + sizeof b->bad_sample - 4;

    b->st.bad++;
    if (*o != '\0') return;
    *o++ = '"';
    for (size_t i = 0; i < n && o < end; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == '\r' || ch == '\n') *o++ = '\\';
        *o++ = ch == '\r' ? 'r' : ch == '\n' ? 'n'
               : ch < 32 || ch > 126 ? '?' : (char)ch;
    }
    *o++ = '"';
    *o = '\0';
}

/* Closes c's socket and forgets its requests; c is ST_OFF afterwards. */
void bench_conn_close(bench_t *b, bconn_t *c)
{
    ev_io_stop(b->loop, &c->rio);
    ev_io_stop(b->loop, &c->wio);
    if (c->ssl != NULL) bench_tls_close(c->ssl);
    c->ssl = NULL;
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    if (c->state == ST_OPEN) b->open--;
    if (c->state == ST_CONNECTING || c->state == ST_HANDSHAKE)
        b->connecting--;
    c->state = ST_OFF;
    c->head = c->inflight = c->nqueued = 0;
    c->hs = 0;
    lsv_buf_consume(&c->in, c->in.len);
    lsv_buf_consume(&c->out, c->out.len);
}

/* Closes c after a failure and counts it in *counter (err is an errno, or
 * 0 for a close by the server). A connection that had a good reply since
 * its last failure opens again at once; after that the sweep retries it
 * with a backoff that doubles, so a dead server is not hammered. */
void bench_conn_fail(bench_t *b, bconn_t *c, uint64_t *counter,
                     const char *what, int err)
{
    int64_t wait = c->backoff;

    bench_conn_close(b, c);
    (*counter)++;
    if (err == ETIMEDOUT)
        snprintf(b->last_err, sizeof b->last_err, "%s: no answer within "
                 "%g s", what, b->timeout);
    else
        snprintf(b->last_err, sizeof b->last_err, "%s: %s", what,
                 err ? strerror(err) : "closed by the server");
    c->backoff = wait == 0 ? BACKOFF_MIN_NS
                 : wait * 2 > BACKOFF_MAX_NS ? BACKOFF_MAX_NS : wait * 2;
    c->retry_at = now_ns() + wait;
    if (wait == 0) b->reopen(b, c);     /* fails once at most: backoff > 0 */
}

/* Writes what c->out holds; waits for EV_WRITE only after EAGAIN. Returns
 * LSV_OK, or LSV_ERR with errno set when the connection failed. */
int bench_stream_flush(bench_t *b, bconn_t *c)
{
    while (c->out.len > 0) {
        ssize_t n = c->ssl != NULL
            ? bench_tls_write(c->ssl, lsv_buf_head(&c->out), c->out.len)
            : send(c->fd, lsv_buf_head(&c->out), c->out.len, MSG_NOSIGNAL);
        if (likely(n > 0)) {
            lsv_buf_consume(&c->out, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!ev_is_active(&c->wio)) ev_io_start(b->loop, &c->wio);
            return LSV_OK;
        }
        return LSV_ERR;
    }
    if (ev_is_active(&c->wio)) ev_io_stop(b->loop, &c->wio);
    return LSV_OK;
}

/* Reads once into the shared buffer (TLS: the records there, and when
 * the buffer filled with more held in OpenSSL, another read event is fed
 * since epoll will not say). Returns the bytes, or 0 after the
 * connection failed (it is closed and counted) or had nothing. */
size_t bench_stream_read(bench_t *b, bconn_t *c)
{
    ssize_t n = c->ssl != NULL
        ? bench_tls_read(c->ssl, b->rbuf, b->rbuf_size)
        : recv(c->fd, b->rbuf, b->rbuf_size, 0);

    if (c->ssl != NULL && n > 0 && SSL_has_pending(c->ssl))
        ev_feed_event(b->loop, &c->rio, EV_READ);
    if (likely(n > 0)) return (size_t)n;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    bench_conn_fail(b, c, &b->st.closed, "read", n == 0 ? 0 : errno);
    return 0;
}

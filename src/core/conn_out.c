/* conn_out.c: queueing a stream connection's output under the output cap,
 * failing a conn whose output cannot be queued (the cap, a peer that
 * does not read, memory), and writing the queue out (the pending list,
 * a writable socket, an outbound connect's end, a watched write). Its
 * public functions are declared in conn.h. Layered between conn.c (the
 * lifecycle it calls) and conn_in.c (input, which calls it). */
#include "lsv.h"
#include "conn.h"
#include "conn_int.h"
#include "frame.h"
#include "listener.h"
#include "log.h"
#include "net.h"
#include "transport.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>

/* Queued output, in high-water marks, past which a conn whose peer has
 * read nothing for a while (LSV_OUTPUT_STALL) is dropped: writes from other
 * conns' handlers do not wait. A peer that reads is never dropped for
 * this; --max-output bounds what it may have queued. */
#define OUTPUT_CAP_FACTOR 8

/* Bookkeeping after output was added to c->out: the pending list and the
 * high-water mark. */
void lsv_conn_queued(lsv_conn_t *c)
{
    lsv_server_t *srv = lsv_conn_srv(c);
    if (unlikely(!(c->flags & LSV_CONN_PENDING))) {
        c->flags |= LSV_CONN_PENDING;
        c->next_pending = srv->pending;
        srv->pending = c;
        lsv_server_kick(srv);
    }
    if (unlikely(c->out.len > c->listener->opt.high_water) &&
        !(c->flags & LSV_CONN_BLOCKED)) {
        c->flags |= LSV_CONN_BLOCKED;
        lsv_conn_stop_reading(c);
        lsv_debug("conn %llu: %u bytes queued, reading paused",
                  (unsigned long long)c->id, c->out.len);
    }
}

/* Output for c cannot be queued: msg says why, truthfully. Logs it once,
 * drops c's queued output, tells the user (type->error), and closes c
 * with reason "overflow". c stays allocated while held (it is marked
 * aborting first, so the user's own writes then are dropped); otherwise
 * it is freed here. */
static void output_failed(lsv_conn_t *c, const char *msg)
{
    lsv_conn_log(LSV_LOG_WARN, c, "%s; dropping the connection", msg);
    if (!(c->flags & LSV_CONN_CLOSING)) c->close_reason = "overflow";
    c->flags |= LSV_CONN_CLOSING | LSV_CONN_ABORT;
    c->out.len = 0;
    lsv_conn_stop_reading(c);
    lsv_conn_report(c, msg);
    lsv_conn_abort(c, "overflow");     /* may free c */
}


int lsv_conn_check_room(lsv_conn_t *c, size_t n)
{
    char msg[LSV_ERRLEN];
    if (unlikely(c->flags & LSV_CONN_ABORT)) return LSV_ERR;   /* failed */
    size_t cap = lsv_conn_srv(c)->opt.max_output;
    if (unlikely(cap && n > cap - (cap > c->out.len ? c->out.len : cap))) {
        if (c->out.len)
            snprintf(msg, sizeof msg, "reply of %zu bytes exceeds the "
                     "output cap of %zu bytes (--max-output) with %u bytes "
                     "still queued", n, cap, (unsigned)c->out.len);
        else
            snprintf(msg, sizeof msg, "reply of %zu bytes exceeds the "
                     "output cap of %zu bytes (--max-output)", n, cap);
        output_failed(c, msg);
        return LSV_ERR;
    }
    if (unlikely(c->out.len + n >
                 OUTPUT_CAP_FACTOR * c->listener->opt.high_water) &&
        c->out.len > 0) {
        ev_tstamp stall = c->timeout > 0 ? c->timeout : LSV_OUTPUT_STALL;
        ev_tstamp idle = ev_now(lsv_conn_srv(c)->loop) - c->out_since;
        if (idle >= stall) {
            snprintf(msg, sizeof msg, "the peer has read nothing for %.1f s "
                     "and %u bytes are queued for it", idle,
                     (unsigned)c->out.len);
            output_failed(c, msg);
            return LSV_ERR;
        }
    }
    return LSV_OK;
}

int lsv_conn_append(lsv_conn_t *c, const char *p, size_t n)
{
    lsv_server_t *srv = lsv_conn_srv(c);
    if (unlikely(c->out.data == NULL)) lsv_conn_ensure_buf(srv, &c->out);
    if (c->out.len == 0) c->out_since = ev_now(srv->loop);
    int rc = lsv_buf_try_append(&c->out, p, n);
    if (unlikely(rc != LSV_OK)) {
        /* Garbage (Lua strings) may hold what we need: the layer above
         * frees what it can, and we retry once. p is the caller's and
         * stays put. */
        if (srv->hooks && srv->hooks->low_memory) {
            srv->hooks->low_memory(srv);
            rc = lsv_buf_try_append(&c->out, p, n);
        }
    }
    if (unlikely(rc != LSV_OK)) {
        char msg[LSV_ERRLEN];
        snprintf(msg, sizeof msg, "out of memory queueing %zu bytes of "
                 "output (%u already queued)", n, (unsigned)c->out.len);
        output_failed(c, msg);
        return LSV_ERR;
    }
    return LSV_OK;
}

char *lsv_conn_reserve(lsv_conn_t *c, size_t n)
{
    lsv_server_t *srv = lsv_conn_srv(c);
    if (unlikely(c->out.data == NULL)) lsv_conn_ensure_buf(srv, &c->out);
    if (c->out.len == 0) c->out_since = ev_now(srv->loop);
    if (likely(lsv_buf_avail(&c->out) >= n))
        return c->out.data + c->out.start + c->out.len;
    char *tail = lsv_buf_try_reserve(&c->out, n);
    if (unlikely(tail == NULL) && srv->hooks && srv->hooks->low_memory) {
        srv->hooks->low_memory(srv);      /* as lsv_conn_append */
        tail = lsv_buf_try_reserve(&c->out, n);
    }
    if (unlikely(tail == NULL)) {
        char msg[LSV_ERRLEN];
        snprintf(msg, sizeof msg, "out of memory queueing %zu bytes of "
                 "output (%u already queued)", n, (unsigned)c->out.len);
        output_failed(c, msg);
    }
    return tail;
}

void lsv_conn_commit(lsv_conn_t *c, size_t n)
{
    lsv_buf_commit(&c->out, n);
    lsv_conn_queued(c);
}

int lsv_conn_write(lsv_conn_t *c, const char *p, size_t n)
{
    if (c->flags & LSV_CONN_CLOSING) return LSV_ERR;
    if (n == 0) return LSV_OK;
    if (unlikely(lsv_conn_check_room(c, n) != LSV_OK) ||
        unlikely(lsv_conn_append(c, p, n) != LSV_OK))
        return LSV_ERR;
    lsv_conn_queued(c);
    return LSV_OK;
}

void lsv_conn_watch_write(lsv_conn_t *c)
{
    if (c->timeout <= 0 || (c->flags & (LSV_CONN_CLOSING | LSV_CONN_TIMER)) ||
        !(c->flags & LSV_CONN_PULL))
        return;
    c->flags |= LSV_CONN_WATCH;
    if (c->out.len == 0) c->out_since = ev_now(lsv_conn_srv(c)->loop);
    ev_tstamp left = c->out_since + c->timeout - ev_now(lsv_conn_srv(c)->loop);
    lsv_conn_arm_timer(c, left > 0.001 ? left : 0.001);
}

ssize_t lsv_conn_sendfile(lsv_conn_t *c, int fd, off_t *off, size_t n)
{
    if (c->flags & LSV_CONN_CLOSING) {
        errno = EPIPE;
        return LSV_ERR;
    }
    if (c->out.len) {
        errno = EBUSY;
        return LSV_ERR;
    }
    if (c->transport->sendfile == NULL) {
        errno = ENOTSUP;
        return LSV_ERR;
    }
    for (;;) {
        ssize_t r = c->transport->sendfile(c, fd, off, n);
        if (r >= 0) {
            c->listener->stats.bytes_out += (uint64_t)r;
            c->nout += (uint64_t)r;
            if (r > 0)
                c->last_active = c->out_since = ev_now(lsv_conn_srv(c)->loop);
            return r;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return LSV_AGAIN;
        return LSV_ERR;
    }
}

/* --- writing -------------------------------------------------------------- */

/* Writes as much queued output as the socket takes, in one send per call
 * unless the kernel took everything and more could fit. */
static void conn_flush(lsv_conn_t *c)
{
    lsv_server_t *srv = lsv_conn_srv(c);
    while (c->out.len) {
        ssize_t n = c->transport->write(c, lsv_buf_head(&c->out),
                                        c->out.len);
        if (n > 0) {
            lsv_buf_consume(&c->out, (size_t)n);
            c->listener->stats.bytes_out += (uint64_t)n;
            c->nout += (uint64_t)n;
            c->last_active = c->out_since = ev_now(srv->loop);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            lsv_conn_watch_writable(c, 1);
            break;
        }
        lsv_debug("conn %llu: send: %s", (unsigned long long)c->id,
                  strerror(errno));
        lsv_conn_abort(c, "reset");
        return;
    }
    if (c->type->drained) c->type->drained(c);
    if (c->out.len == 0) {
        lsv_conn_watch_writable(c, 0);
        lsv_conn_release_buf(srv, &c->out);
        if (c->flags & LSV_CONN_CLOSING) {
            lsv_conn_finish(c);
            return;
        }
    }
    if ((c->flags & LSV_CONN_BLOCKED) &&
        c->out.len <= c->listener->opt.low_water) {
        c->flags &= ~LSV_CONN_BLOCKED;
        lsv_conn_start_reading(c);
        if (c->in.len || (c->flags & LSV_CONN_EOF)) lsv_conn_schedule_read(c);
    }
}

void lsv_conn_flush_pending(lsv_server_t *srv)
{
    lsv_conn_t *c;
    while ((c = srv->pending) != NULL) {
        srv->pending = c->next_pending;
        c->flags &= ~LSV_CONN_PENDING;
        /* a handshake's conn writes once connected (connect_done) */
        if (!(c->flags & (LSV_CONN_WRITING | LSV_CONN_HANDSHAKE)))
            conn_flush(c);
    }
}

/* c's outbound connect is over, its handshake too if it has one: err 0
 * starts its input and output, and tells its user (type->connected);
 * otherwise c closes with reason. May free c. */
static void connect_done(lsv_conn_t *c, int err, const char *reason)
{
    c->flags &= ~(LSV_CONN_CONNECTING | LSV_CONN_HANDSHAKE);
    lsv_conn_io_update(c);          /* back to what READING/WRITING say */
    if (err == 0) {
        lsv_conn_start_reading(c);     /* also reads what TLS holds */
        if (c->out.len) conn_flush(c);
    }
    c->busy++;
    c->type->connected(c, err);
    c->busy--;
    if (err) lsv_conn_abort(c, reason);
}

/* Waits for the io events a handshake step asked for, and nothing else:
 * a step that wants to read is not woken by a writable socket, so the
 * wait does not spin. */
static void handshake_wait(lsv_conn_t *c, int events)
{
    struct ev_loop *loop = lsv_conn_srv(c)->loop;
    ev_io_stop(loop, &c->io);
    events &= EV_READ | EV_WRITE;
    ev_io_modify(&c->io, events ? events : EV_READ);
    ev_io_start(loop, &c->io);
}

void lsv_conn_handshake_step(lsv_conn_t *c)
{
    int events = 0;
    int rc = c->transport->handshake(c, &events);
    if (rc == LSV_AGAIN) {
        handshake_wait(c, events);
        return;
    }
    if (rc == LSV_OK) connect_done(c, 0, NULL);
    else connect_done(c, EPROTO, "handshake");
}

/* c's socket takes output, or its connect ended: then a transport with
 * a handshake (TLS) runs it before c counts as connected. */
void lsv_conn_writable(lsv_conn_t *c)
{
    if (unlikely(c->flags & LSV_CONN_CONNECTING)) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        c->flags &= ~LSV_CONN_CONNECTING;
        c->flags &= ~LSV_CONN_WRITING;    /* the connect's wait is over */
        if (err == 0) {
            int one = 1;
            setsockopt(c->io.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            if (c->transport->handshake) {
                c->flags |= LSV_CONN_HANDSHAKE;
                lsv_conn_handshake_step(c);      /* may free c */
                return;
            }
        }
        connect_done(c, err, "refused");
        return;
    }
    conn_flush(c);
}

/* c's timer fired while it watches a waiting write: reports a write that
 * has made no progress for the idle timeout, or re-arms for the rest. */
void lsv_conn_write_timer(lsv_conn_t *c)
{
    if (c->out.len == 0) {
        c->flags &= ~LSV_CONN_WATCH;
        return;
    }
    ev_tstamp stalled = ev_now(lsv_conn_srv(c)->loop) - c->out_since;
    if (stalled < c->timeout - 0.001) {
        lsv_conn_arm_timer(c, c->timeout - stalled);
        return;
    }
    c->flags &= ~LSV_CONN_WATCH;
    if (c->type->stalled) c->type->stalled(c, stalled);
}

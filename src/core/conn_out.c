/* conn_out.c: queueing a stream connection's output under the output cap,
 * and failing a conn whose output cannot be queued (the cap, a peer that
 * does not read, memory). Its functions are declared in conn.h; conn.c
 * writes the queue out. Also the replies a framer owes the peer: a
 * protocol error's, an interim 100 Continue. */
#include "lsv.h"
#include "conn.h"
#include "conn_int.h"
#include "frame.h"
#include "listener.h"
#include "log.h"
#include "net.h"
#include "transport.h"

#include <errno.h>
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

/* --- the replies a framer owes the peer ---------------------------------- */

void lsv_conn_reject(lsv_conn_t *c, const lsv_frame_spec_t *spec, ssize_t r)
{
    char reply[512];
    const char *why = "bad frame";
    size_t n = lsv_frame_reject(spec, r, lsv_buf_head(&c->in), c->in.len,
                                reply, sizeof reply, &why);
    lsv_conn_log(LSV_LOG_INFO, c, "%s (%s framing); closing", why,
                 lsv_frame_kind_name(spec->kind));
    c->in.len = 0;
    lsv_conn_hold(c);
    if (n > 0 && !(c->flags & LSV_CONN_CLOSING))
        lsv_conn_write(c, reply, n);
    lsv_conn_report(c, why);
    lsv_conn_close(c, r == LSV_FRAME_TOO_LONG ? "too long" : "protocol error");
    lsv_conn_release(c);                /* may free c */
}

void lsv_conn_send_interim(lsv_conn_t *c, const lsv_frame_spec_t *spec,
                           size_t *hint)
{
    char out[512];
    size_t n;
    if (c->flags & LSV_CONN_CLOSING) return;
    /* Each call moves *hint on, so the loop ends; what did not fit in out
     * comes on the next turn. */
    while ((n = lsv_frame_interim(spec, lsv_buf_head(&c->in), c->in.len,
                                  hint, out, sizeof out)) > 0) {
        lsv_conn_ensure_buf(lsv_conn_srv(c), &c->out);
        if (c->out.len == 0) c->out_since = ev_now(lsv_conn_srv(c)->loop);
        if (lsv_buf_try_append(&c->out, out, n) != LSV_OK) break;
        lsv_conn_queued(c);
    }
}

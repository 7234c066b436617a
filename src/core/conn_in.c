/* conn_in.c: a stream connection's input side and its watchers'
 * callbacks: creating a conn (its io and timer callbacks live here),
 * reading, the framing loop (push) or read-ahead (pull), lsv_conn_take,
 * the replies a framer owes the peer (a protocol error's, an interim 100
 * Continue), the idle timeout. The top of the conn's layers: it calls
 * conn_out.c and conn.c, which never call it. */
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

/* Frames handled per readiness event; more wait for the next loop turn so
 * one busy peer cannot starve the others. */
#define FRAMES_PER_EVENT 128

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void conn_input(lsv_conn_t *c);

/* --- creation ------------------------------------------------------------ */

static void init_conn(lsv_conn_t *c, lsv_server_t *srv, lsv_listener_t *l,
                      int fd, const struct sockaddr *sa, socklen_t salen)
{
    c->listener = l;
    c->transport = &lsv_transport_plain;
    c->id = ++srv->next_conn_id;
    if (sa) {
        if (salen > sizeof c->peer) salen = sizeof c->peer;
        memcpy(&c->peer, sa, salen);
        c->peer_len = (uint16_t)salen;
    }
    c->last_active = c->started = ev_now(srv->loop);
    ev_io_init(&c->io, conn_io_cb, fd, 0);
    ev_init(&c->timer, conn_timer_cb);
    l->stats.conns_total++;
    l->stats.conns_active++;
}

lsv_conn_t *lsv_conn_new(lsv_listener_t *l, int fd, const struct sockaddr *sa,
                         socklen_t salen, const lsv_frame_spec_t *framing,
                         const lsv_conn_type_t *type, lsv_accepted_t *acc)
{
    lsv_server_t *srv = l->srv;
    lsv_proxy_info_t *proxy = acc ? acc->proxy : NULL;
    lsv_conn_t *c = lsv_calloc(1, sizeof *c);
    /* With a header, sa is the one it names (or its socket_peer): the
     * info keeps it, and peer keeps the info. */
    init_conn(c, srv, l, fd, proxy ? NULL : sa, salen);
    if (proxy) {
        memcpy(c->peer.proxy, &proxy, sizeof proxy);
        c->flags |= LSV_CONN_PROXY;
    }
    if (acc && acc->transport) c->transport = acc->transport;
    c->framing = lsv_conn_share_framing(l, framing);
    c->timeout = lsv_conn_timeout_of(l->opt.idle_timeout);
    lsv_conn_set_type(c, type);
    if (l->addr.kind == LSV_NET_TCP) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    c->next = srv->conns;
    if (srv->conns) srv->conns->prev = c;
    srv->conns = c;
    return c;
}

void lsv_accepted_drop(lsv_accepted_t *acc)
{
    if (acc == NULL) return;
    free(acc->proxy);
    acc->proxy = NULL;
    if (acc->transport && acc->transport->discard)
        acc->transport->discard(acc->transport);
    acc->transport = NULL;
}

lsv_conn_t *lsv_conn_outbound(lsv_server_t *srv, int fd,
                              const struct sockaddr *sa, socklen_t salen,
                              const lsv_conn_type_t *type)
{
    lsv_conn_t *c = lsv_calloc(1, sizeof *c);
    init_conn(c, srv, srv->outbound_listener, fd, sa, salen);
    c->framing = lsv_conn_share_framing(c->listener,
                                        &c->listener->framing);
    c->flags = LSV_CONN_OUTBOUND | LSV_CONN_CONNECTING;
    lsv_conn_set_type(c, type);
    lsv_conn_watch_writable(c, 1);       /* the connect's end */
    c->next = srv->outbound;
    if (srv->outbound) srv->outbound->prev = c;
    srv->outbound = c;
    srv->stats.outbound_active++;
    return c;
}

/* --- input -------------------------------------------------------------- */

static void frame_error(lsv_conn_t *c, const char *err, const char *reason)
{
    const lsv_frame_spec_t *spec = &c->framing->spec;
    lsv_conn_log(LSV_LOG_WARN, c, "%s (%s framing, max %u); closing", err,
                 lsv_frame_kind_name(spec->kind), spec->max);
    c->in.len = 0;
    lsv_conn_report(c, err);
    lsv_conn_close(c, reason);
}

/* Pull mode: tells the user of new input, then stops at the read-ahead
 * while it wants none. */
static void pull_input(lsv_conn_t *c)
{
    c->busy++;
    c->type->input(c);
    c->busy--;
    if (!(c->flags & LSV_CONN_CLOSING) && c->type->room(c) == 0) {
        c->flags |= LSV_CONN_FULL;
        lsv_conn_stop_reading(c);
    }
    if (c->in.len == 0) lsv_conn_release_buf(lsv_conn_srv(c), &c->in);
    lsv_conn_settle(c);                     /* may free c */
}

/* Hands every complete buffered frame to type->frame, up to
 * FRAMES_PER_EVENT, then closes at end of stream (push mode; pull mode
 * goes to pull_input). drained says the last read found the socket empty:
 * a stopping server then closes an idle conn. */
static void process_input(lsv_conn_t *c, int drained)
{
    lsv_server_t *srv = lsv_conn_srv(c);
    int eof = (c->flags & LSV_CONN_EOF) != 0;
    int count = 0;

    if (c->flags & LSV_CONN_PULL) {
        pull_input(c);
        return;
    }

    double t0 = lsv_clock();
    c->busy++;
    if (c->type->begin) c->type->begin(c);
    while (!(c->flags & (LSV_CONN_CLOSING | LSV_CONN_PAUSED |
                         LSV_CONN_BLOCKED))) {
        if (c->in.len == 0 && !eof) break;
        if (unlikely(count == FRAMES_PER_EVENT)) {
            lsv_conn_schedule_read(c);
            break;
        }
        size_t hint = c->hint, off, mlen;
        ssize_t r = lsv_frame_next(&c->framing->spec, lsv_buf_head(&c->in),
                                   c->in.len, eof, &hint, &off, &mlen);
        if (r == LSV_FRAME_PARTIAL) {
            if (lsv_frame_is_proto(c->framing->spec.kind))
                lsv_conn_send_interim(c, &c->framing->spec, &hint);
            c->hint = hint;
            c->flags |= LSV_CONN_PARTIAL;
            if (eof) lsv_conn_close(c, "eof");
            break;
        }
        c->flags &= ~LSV_CONN_PARTIAL;
        if (unlikely(r < 0)) {
            if (lsv_frame_is_proto(c->framing->spec.kind) &&
                r != LSV_FRAME_TRUNCATED) {
                lsv_conn_reject(c, &c->framing->spec, r);
            } else if (r == LSV_FRAME_TOO_LONG) {
                frame_error(c, "frame too long", "too long");
            } else {
                lsv_conn_log(LSV_LOG_INFO, c, "frame cut off at end of "
                             "stream: %u bytes of an incomplete %s frame "
                             "dropped; closing", c->in.len,
                             lsv_frame_kind_name(c->framing->spec.kind));
                lsv_conn_close(c, "truncated");
            }
            break;
        }
        c->hint = 0;
        count++;
        c->listener->stats.messages++;
        c->nmsg++;
        /* Consuming leaves the bytes in place until the next read. */
        const char *frame = lsv_buf_head(&c->in) + off;
        lsv_buf_consume(&c->in, (size_t)r);
        c->type->frame(c, frame, mlen);
    }
    if (c->type->end) c->type->end(c);
    c->busy--;
    if (count) lsv_listener_observe(c->listener, lsv_clock() - t0,
                                    (uint64_t)count);

    if (c->in.len == 0) lsv_conn_release_buf(srv, &c->in);
    if ((c->flags & LSV_CONN_DRAIN) && !(c->flags & LSV_CONN_CLOSING) &&
        c->in.len == 0 && !c->busy) {
        /* Stopping: close once the peer's data is all answered. Until a
         * read finds the socket empty, look again next turn. */
        if (drained) {
            lsv_conn_close(c, "shutdown");   /* may free c */
            return;
        }
        if (c->flags & LSV_CONN_READING) lsv_conn_schedule_read(c);
    }
    lsv_conn_settle(c);
}

/* One large read. Returns LSV_OK (data or end of stream), LSV_AGAIN (the
 * socket had nothing, or a stream conn wants no more yet), or LSV_ERR
 * when the conn was aborted. */
static int read_some(lsv_conn_t *c)
{
    lsv_server_t *srv = lsv_conn_srv(c);
    size_t room = SIZE_MAX;
    if (c->flags & LSV_CONN_PULL) {
        room = c->type->room(c);
        if (room == 0) {
            c->flags |= LSV_CONN_FULL;
            lsv_conn_stop_reading(c);
            return LSV_AGAIN;
        }
    }
    lsv_conn_ensure_buf(srv, &c->in);
    if (lsv_buf_avail(&c->in) < LSV_READ_SIZE / 4 &&
        unlikely(lsv_buf_try_reserve(&c->in, LSV_READ_SIZE) == NULL)) {
        lsv_conn_log(LSV_LOG_WARN, c, "out of memory growing the input "
                     "buffer past %u bytes; dropping the connection",
                     (unsigned)c->in.len);
        lsv_conn_abort(c, "error");
        return LSV_ERR;
    }
    for (;;) {
        size_t avail = lsv_buf_avail(&c->in);
        size_t want = avail < room ? avail : room;
        ssize_t n = c->transport->read(c, c->in.data + c->in.start +
                                       c->in.len, want);
        if (likely(n > 0)) {
            /* A read that filled its room may have left bytes in the
             * transport (TLS records decrypted ahead), which no socket
             * event will announce. */
            if ((size_t)n == want && lsv_transport_holds(c->transport, c))
                lsv_conn_schedule_read(c);
            lsv_buf_commit(&c->in, (size_t)n);
            c->listener->stats.bytes_in += (uint64_t)n;
            c->nin += (uint64_t)n;
            c->last_active = ev_now(srv->loop);
            return LSV_OK;
        }
        if (n == 0) {
            c->flags |= LSV_CONN_EOF;
            lsv_conn_stop_reading(c);
            return LSV_OK;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return LSV_AGAIN;
        lsv_debug("conn %llu: read: %s", (unsigned long long)c->id,
                  strerror(errno));
        lsv_conn_abort(c, "reset");
        return LSV_ERR;
    }
}

/* c's socket is writable or readable or both: output first (a connect's
 * end comes this way), then input unless c closed meanwhile. While an
 * outbound conn's handshake runs, either event is the handshake's. */
static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    lsv_conn_t *c = container_of(w, lsv_conn_t, io);
    if (unlikely(c->flags & LSV_CONN_HANDSHAKE)) {
        lsv_conn_handshake_step(c);      /* may free c */
        return;
    }
    if (revents & EV_WRITE) {
        if (!(revents & EV_READ)) {
            lsv_conn_writable(c);
            return;
        }
        c->busy++;
        lsv_conn_writable(c);
        c->busy--;
        if (c->flags & LSV_CONN_CLOSING) {
            lsv_conn_settle(c);     /* may free c */
            return;
        }
    }
    if (c->flags & LSV_CONN_READING) conn_input(c);
}

/* Input work for c: read if there is room for it, then frame. A conn
 * holding at least a read's worth of complete frames is not read further
 * until they are handled, so its buffer stays bounded. A pull conn reads
 * whenever its watcher is on: it is on only while its user wants input or
 * the read-ahead has room (read_some), so a watcher left on with nothing
 * read cannot spin the loop. */
static void conn_input(lsv_conn_t *c)
{
    if (c->flags & (LSV_CONN_CLOSING | LSV_CONN_CONNECTING |
                    LSV_CONN_HANDSHAKE))
        return;
    int rc = LSV_AGAIN;
    if ((c->flags & LSV_CONN_READING) &&
        ((c->flags & LSV_CONN_PULL) || c->in.len < LSV_READ_SIZE ||
         (c->flags & LSV_CONN_PARTIAL))) {
        rc = read_some(c);
        if (rc == LSV_ERR) return;
    } else if ((c->flags & LSV_CONN_READING) &&
               lsv_transport_holds(c->transport, c)) {
        /* A full buffer skips the read; bytes the transport holds wait
         * for the pass after these frames, as the socket's would. */
        lsv_conn_schedule_read(c);
    }
    process_input(c, rc == LSV_AGAIN && (c->flags & LSV_CONN_READING));
}

void lsv_conn_run_again(lsv_server_t *srv)
{
    lsv_conn_t *c;
    srv->running_again = 1;     /* conns asking now wait for next turn */
    while ((c = srv->again) != NULL) {
        srv->again = c->next_again;
        c->flags &= ~LSV_CONN_AGAIN;
        conn_input(c);
    }
    srv->running_again = 0;
    srv->again = srv->again_next;
    srv->again_next = NULL;
    if (srv->again) lsv_server_kick(srv);
}

/* --- timeouts ----------------------------------------------------------- */

/* After a callback on c returned (c no longer held): closes c for
 * reason, or finishes the close the callback itself asked for. May free
 * c. */
static void close_after_call(lsv_conn_t *c, const char *reason)
{
    if (c->flags & LSV_CONN_CLOSING) lsv_conn_settle(c);
    else lsv_conn_close(c, reason);
}

/* c's one timer: a closing conn's linger ran out, a watched write
 * (conn_out.c), or the push mode's idle timeout. */
static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    lsv_conn_t *c = container_of(w, lsv_conn_t, timer);
    c->flags &= ~LSV_CONN_TIMER;
    if (c->flags & LSV_CONN_CLOSING) {
        lsv_debug("conn %llu: peer did not take its output; dropping it",
                  (unsigned long long)c->id);
        lsv_conn_abort(c, c->close_reason);
        return;
    }
    if (c->timeout <= 0) return;
    if (c->flags & LSV_CONN_WATCH) {
        /* Pull mode: reads time out in their user; this timer watches a
         * write waiting on output. */
        lsv_conn_write_timer(c);
        return;
    }
    if (c->flags & LSV_CONN_PULL) return;
    ev_tstamp left = c->last_active + c->timeout - ev_now(loop);
    if (left > 0.001) {
        lsv_conn_arm_timer(c, left);
        return;
    }
    c->busy++;
    int keep = c->type->timeout ? c->type->timeout(c) : 0;
    c->busy--;
    if (keep && !(c->flags & LSV_CONN_CLOSING)) {
        c->last_active = ev_now(loop);
        lsv_conn_arm_timer(c, c->timeout);
    } else {
        close_after_call(c, "timeout");
    }
}

/* --- pull mode ----------------------------------------------------------- */

ssize_t lsv_conn_take(lsv_conn_t *c, const lsv_frame_spec_t *want,
                      size_t *hint, const char **p, size_t *n)
{
    int eof = (c->flags & (LSV_CONN_EOF | LSV_CONN_CLOSING)) != 0;
    size_t off = 0, mlen = 0;
    ssize_t r = lsv_frame_next(want, lsv_buf_head(&c->in), c->in.len, eof,
                               hint, &off, &mlen);
    if (r == LSV_FRAME_TRUNCATED && want->kind == LSV_FRAME_FIXED) {
        /* read(n) at end of stream takes what is left, as Python does. */
        r = (ssize_t)c->in.len;
        off = 0;
        mlen = c->in.len;
    }
    if (r <= 0) {
        if (r == LSV_FRAME_PARTIAL) {
            c->flags |= LSV_CONN_PARTIAL;
            if (lsv_frame_is_proto(want->kind) && !eof)
                lsv_conn_send_interim(c, want, hint);
        }
        return r;
    }
    *p = lsv_buf_head(&c->in) + off;
    *n = mlen;
    lsv_buf_consume(&c->in, (size_t)r);
    *hint = 0;
    c->flags &= ~LSV_CONN_PARTIAL;
    if ((c->flags & LSV_CONN_FULL) && c->in.len < LSV_READ_AHEAD)
        lsv_conn_want_input(c);
    return r;
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


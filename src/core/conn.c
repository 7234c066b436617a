/* conn.c: stream connections: lifecycle, buffered input and the framing
 * loop, writing queued output, timeouts; conn_out.c queues output. */
#include "lsv.h"
#include "conn.h"
#include "conn_int.h"
#include "listener.h"
#include "log.h"
#include "net.h"
#include "transport.h"

#include <errno.h>
#include <float.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Frames handled per readiness event; more wait for the next loop turn so
 * one busy peer cannot starve the others. */
#define FRAMES_PER_EVENT 128

/* Seconds a closing conn waits for its peer to take queued output. */
#define CLOSE_LINGER 10.0

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void conn_writable(lsv_conn_t *c);
static void write_timer(lsv_conn_t *c);
static void conn_finish(lsv_conn_t *c);
static void conn_settle(lsv_conn_t *c);
static void conn_input(lsv_conn_t *c);

/* --- watchers ----------------------------------------------------------- */

/* Sets c's one io watcher to what its flags ask: readable while READING,
 * writable while WRITING (also a connect in progress), stopped for
 * neither. A change restarts it, which drops an event it had pending;
 * the level-triggered backend reports it again on the next turn. */
static void io_update(lsv_conn_t *c)
{
    int want = ((c->flags & LSV_CONN_READING) ? EV_READ : 0) |
               ((c->flags & LSV_CONN_WRITING) ? EV_WRITE : 0);
    struct ev_loop *loop = lsv_conn_srv(c)->loop;
    ev_io_stop(loop, &c->io);
    if (want == 0) return;
    ev_io_modify(&c->io, want);
    ev_io_start(loop, &c->io);
}

static void start_reading(lsv_conn_t *c)
{
    if (c->flags & (LSV_CONN_READING | LSV_CONN_CLOSING | LSV_CONN_PAUSED |
                    LSV_CONN_BLOCKED | LSV_CONN_EOF | LSV_CONN_FULL |
                    LSV_CONN_CONNECTING) || c->type == NULL)
        return;
    c->flags |= LSV_CONN_READING;
    io_update(c);
}

static void stop_reading(lsv_conn_t *c)
{
    if (!(c->flags & LSV_CONN_READING)) return;
    c->flags &= ~LSV_CONN_READING;
    io_update(c);
}

/* Watches for c's socket taking output (on) or stops (off). */
static void watch_writable(lsv_conn_t *c, int on)
{
    if (!!(c->flags & LSV_CONN_WRITING) == !!on) return;
    if (on) c->flags |= LSV_CONN_WRITING;
    else c->flags &= ~LSV_CONN_WRITING;
    io_update(c);
}

/* Asks for one more pass over c's input on the next loop turn: frames
 * left buffered after the per-event cap, a resume, a drain. The prepare
 * watcher runs the list (lsv_conn_run_again), so a busy conn takes one
 * turn per loop iteration like any other. */
static void schedule_read(lsv_conn_t *c)
{
    lsv_server_t *srv = lsv_conn_srv(c);
    if (c->flags & LSV_CONN_AGAIN) return;
    c->flags |= LSV_CONN_AGAIN;
    lsv_conn_t **list = srv->running_again ? &srv->again_next : &srv->again;
    c->next_again = *list;
    *list = c;
    lsv_server_kick(srv);
}

static void arm_timer(lsv_conn_t *c, ev_tstamp after)
{
    struct ev_loop *loop = lsv_conn_srv(c)->loop;
    if (c->flags & LSV_CONN_TIMER) ev_timer_stop(loop, &c->timer);
    ev_timer_set(&c->timer, after, 0.);
    ev_timer_start(loop, &c->timer);
    c->flags |= LSV_CONN_TIMER;
}

static void disarm_timer(lsv_conn_t *c)
{
    if (!(c->flags & LSV_CONN_TIMER)) return;
    ev_timer_stop(lsv_conn_srv(c)->loop, &c->timer);
    c->flags &= ~LSV_CONN_TIMER;
}

/* --- buffers ------------------------------------------------------------ */

/* Gives an empty buffer's memory back to the pool, so an idle connection
 * holds no buffers. */
static void release_buf(lsv_server_t *srv, lsv_buf_t *b)
{
    if (b->data == NULL || b->len) return;
    if (b->cap == LSV_READ_SIZE)
        lsv_server_put_buf(srv, b->data);
    else
        free(b->data);
    memset(b, 0, sizeof *b);
}

static void ensure_buf(lsv_server_t *srv, lsv_buf_t *b)
{
    if (b->data) return;
    b->data = lsv_server_get_buf(srv);
    b->cap = LSV_READ_SIZE;
    b->start = b->len = 0;
}

/* --- lifecycle ---------------------------------------------------------- */

/* A timeout in seconds as c->timeout keeps it (a float: 7 digits, as a
 * timer needs): 0 for none, and a positive one never rounds to 0. */
static float timeout_of(double seconds)
{
    if (!(seconds > 0)) return 0;
    if (seconds < FLT_MIN) return FLT_MIN;
    return seconds < FLT_MAX ? (float)seconds : FLT_MAX;
}

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
                         const lsv_conn_type_t *type,
                         lsv_proxy_info_t *proxy)
{
    lsv_server_t *srv = l->srv;
    lsv_conn_t *c = lsv_calloc(1, sizeof *c);
    /* With a header, sa is the one it names (or its socket_peer): the
     * info keeps it, and peer keeps the info. */
    init_conn(c, srv, l, fd, proxy ? NULL : sa, salen);
    if (proxy) {
        memcpy(c->peer.proxy, &proxy, sizeof proxy);
        c->flags |= LSV_CONN_PROXY;
    }
    c->framing = lsv_conn_share_framing(l, framing);
    c->timeout = timeout_of(l->opt.idle_timeout);
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

int lsv_conn_start(lsv_conn_t *c)
{
    if (c->flags & LSV_CONN_CLOSING) {
        conn_settle(c);
        return LSV_ERR;
    }
    /* In pull mode the timeout applies to each read instead. */
    if (c->timeout > 0 && !(c->flags & LSV_CONN_PULL))
        arm_timer(c, c->timeout);
    start_reading(c);
    return LSV_OK;
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
    watch_writable(c, 1);       /* the connect's end */
    c->next = srv->outbound;
    if (srv->outbound) srv->outbound->prev = c;
    srv->outbound = c;
    srv->stats.outbound_active++;
    return c;
}

void lsv_conn_set_type(lsv_conn_t *c, const lsv_conn_type_t *type)
{
    c->type = type;
    if (type->frame == NULL) c->flags |= LSV_CONN_PULL;
    else c->flags &= ~LSV_CONN_PULL;
}

void lsv_conn_hold(lsv_conn_t *c)
{
    c->busy++;
}

int lsv_conn_release(lsv_conn_t *c)
{
    if (--c->busy > 0 || !(c->flags & LSV_CONN_CLOSING)) return LSV_OK;
    conn_settle(c);     /* may free c */
    return LSV_ERR;
}

/* Reading ahead in pull mode: with nobody wanting input, a full
 * read-ahead stops reading so that a user busy elsewhere neither grows
 * the buffer nor, with the watcher level-triggered, spins the loop.
 * lsv_conn_want_input resumes. */
void lsv_conn_want_input(lsv_conn_t *c)
{
    if (c->type->room(c) > 0) c->flags &= ~LSV_CONN_FULL;
    start_reading(c);
}

void lsv_conn_report(lsv_conn_t *c, const char *msg)
{
    if (c->type->error == NULL) return;
    c->busy++;
    c->type->error(c, msg);
    c->busy--;
}

/* Frees c once nothing holds it: tells its user (type->closed), closes the
 * fd, logs the access line. Deferred while c is held. */
static void conn_finish(lsv_conn_t *c)
{
    lsv_server_t *srv = lsv_conn_srv(c);
    if (c->busy) return;
    const char *reason = c->close_reason ? c->close_reason : "closed";
    c->busy++;
    if (c->type && c->type->closed) c->type->closed(c, reason);
    c->busy--;
    lsv_debug("conn %llu closed (%s)", (unsigned long long)c->id, reason);
    if (srv->opt.access_log && !(c->flags & LSV_CONN_OUTBOUND)) {
        char peer[LSV_ADDRSTRLEN];
        socklen_t plen;
        const struct sockaddr *psa = lsv_conn_peer(c, &plen);
        lsv_log_access(c->listener->name,
                       lsv_net_format(psa, plen, peer), c->id,
                       ev_now(srv->loop) - c->started, c->nin, c->nout,
                       c->nmsg, reason);
    }

    c->flags &= ~(LSV_CONN_READING | LSV_CONN_WRITING);
    ev_io_stop(srv->loop, &c->io);  /* also clears a pending event */
    ev_timer_stop(srv->loop, &c->timer);
    c->transport->close(c);

    if (c->flags & LSV_CONN_PENDING) {
        lsv_conn_t **pp = &srv->pending;
        while (*pp != c) pp = &(*pp)->next_pending;
        *pp = c->next_pending;
    }
    if (c->flags & LSV_CONN_AGAIN) {
        lsv_conn_t **pp = &srv->again;
        while (*pp && *pp != c) pp = &(*pp)->next_again;
        if (*pp == NULL) {
            pp = &srv->again_next;
            while (*pp != c) pp = &(*pp)->next_again;
        }
        *pp = c->next_again;
    }
    lsv_conn_t **head = (c->flags & LSV_CONN_OUTBOUND) ? &srv->outbound
                                                        : &srv->conns;
    if (c->prev) c->prev->next = c->next;
    else *head = c->next;
    if (c->next) c->next->prev = c->prev;

    c->in.len = c->out.len = 0;
    release_buf(srv, &c->in);
    release_buf(srv, &c->out);
    lsv_frame_ref_drop(c->framing);
    free((void *)lsv_conn_proxy(c));
    if (c->flags & LSV_CONN_OUTBOUND) srv->stats.outbound_active--;
    c->listener->stats.conns_active--;
    free(c);
    lsv_server_maybe_done(srv);
}

/* After a call chain on c unwinds: finish a close it asked for. */
static void conn_settle(lsv_conn_t *c)
{
    if (c->busy || !(c->flags & LSV_CONN_CLOSING)) return;
    if ((c->flags & LSV_CONN_ABORT) || c->out.len == 0) conn_finish(c);
}

/* After a callback on c returned (c no longer held): closes c for
 * reason, or finishes the close the callback itself asked for. May free
 * c. */
static void close_after_call(lsv_conn_t *c, const char *reason)
{
    if (c->flags & LSV_CONN_CLOSING) conn_settle(c);
    else lsv_conn_close(c, reason);
}

void lsv_conn_close(lsv_conn_t *c, const char *reason)
{
    if (c->flags & LSV_CONN_CLOSING) return;
    c->flags |= LSV_CONN_CLOSING;
    c->close_reason = reason;
    stop_reading(c);
    if (c->type && c->type->closing) {
        c->busy++;
        c->type->closing(c, 0);
        c->busy--;
    }
    if (c->out.len == 0) {
        conn_finish(c);
        return;
    }
    arm_timer(c, CLOSE_LINGER);
}

void lsv_conn_abort(lsv_conn_t *c, const char *reason)
{
    if (!(c->flags & LSV_CONN_CLOSING)) c->close_reason = reason;
    c->flags |= LSV_CONN_CLOSING | LSV_CONN_ABORT;
    c->out.len = 0;
    stop_reading(c);
    conn_finish(c);
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
        stop_reading(c);
    }
    if (c->in.len == 0) release_buf(lsv_conn_srv(c), &c->in);
    conn_settle(c);                     /* may free c */
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
            schedule_read(c);
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

    if (c->in.len == 0) release_buf(srv, &c->in);
    if ((c->flags & LSV_CONN_DRAIN) && !(c->flags & LSV_CONN_CLOSING) &&
        c->in.len == 0 && !c->busy) {
        /* Stopping: close once the peer's data is all answered. Until a
         * read finds the socket empty, look again next turn. */
        if (drained) {
            lsv_conn_close(c, "shutdown");   /* may free c */
            return;
        }
        if (c->flags & LSV_CONN_READING) schedule_read(c);
    }
    conn_settle(c);
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
            stop_reading(c);
            return LSV_AGAIN;
        }
    }
    ensure_buf(srv, &c->in);
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
        ssize_t n = c->transport->read(c, c->in.data + c->in.start +
                                       c->in.len, avail < room ? avail : room);
        if (likely(n > 0)) {
            lsv_buf_commit(&c->in, (size_t)n);
            c->listener->stats.bytes_in += (uint64_t)n;
            c->nin += (uint64_t)n;
            c->last_active = ev_now(srv->loop);
            return LSV_OK;
        }
        if (n == 0) {
            c->flags |= LSV_CONN_EOF;
            stop_reading(c);
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
 * end comes this way), then input unless c closed meanwhile. */
static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    lsv_conn_t *c = container_of(w, lsv_conn_t, io);
    if (revents & EV_WRITE) {
        if (!(revents & EV_READ)) {
            conn_writable(c);
            return;
        }
        c->busy++;
        conn_writable(c);
        c->busy--;
        if (c->flags & LSV_CONN_CLOSING) {
            conn_settle(c);     /* may free c */
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
    if (c->flags & (LSV_CONN_CLOSING | LSV_CONN_CONNECTING)) return;
    int rc = LSV_AGAIN;
    if ((c->flags & LSV_CONN_READING) &&
        ((c->flags & LSV_CONN_PULL) || c->in.len < LSV_READ_SIZE ||
         (c->flags & LSV_CONN_PARTIAL))) {
        rc = read_some(c);
        if (rc == LSV_ERR) return;
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

/* --- timeouts, pause, framing ------------------------------------------- */

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
        write_timer(c);
        return;
    }
    if (c->flags & LSV_CONN_PULL) return;
    ev_tstamp left = c->last_active + c->timeout - ev_now(loop);
    if (left > 0.001) {
        arm_timer(c, left);
        return;
    }
    c->busy++;
    int keep = c->type->timeout ? c->type->timeout(c) : 0;
    c->busy--;
    if (keep && !(c->flags & LSV_CONN_CLOSING)) {
        c->last_active = ev_now(loop);
        arm_timer(c, c->timeout);
    } else {
        close_after_call(c, "timeout");
    }
}

void lsv_conn_set_timeout(lsv_conn_t *c, double seconds)
{
    c->timeout = timeout_of(seconds);
    /* Pull mode: the timeout applies to each read (its user's). */
    if (c->flags & (LSV_CONN_CLOSING | LSV_CONN_PULL)) return;
    if (c->timeout > 0) {
        c->last_active = ev_now(lsv_conn_srv(c)->loop);
        arm_timer(c, c->timeout);
    } else {
        disarm_timer(c);
    }
}

void lsv_conn_pause(lsv_conn_t *c)
{
    c->flags |= LSV_CONN_PAUSED;
    stop_reading(c);
}

void lsv_conn_resume(lsv_conn_t *c)
{
    if (!(c->flags & LSV_CONN_PAUSED)) return;
    c->flags &= ~LSV_CONN_PAUSED;
    start_reading(c);
    if (!(c->flags & LSV_CONN_CLOSING) &&
        (c->in.len || (c->flags & LSV_CONN_EOF)))
        schedule_read(c);
}

/* --- whole server ------------------------------------------------------- */

void lsv_conn_drain_all(lsv_server_t *srv)
{
    /* Each conn reads once more, answers what its peer already sent, and
     * closes when no partial frame is left (process_input). */
    for (lsv_conn_t *c = srv->conns; c; c = c->next) {
        c->flags |= LSV_CONN_DRAIN;
        if (!(c->flags & LSV_CONN_CLOSING)) schedule_read(c);
    }
}

void lsv_conn_abort_all(lsv_server_t *srv, const char *reason)
{
    while (srv->conns) lsv_conn_abort(srv->conns, reason);
    while (srv->outbound) lsv_conn_abort(srv->outbound, reason);
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

void lsv_conn_end_input(lsv_conn_t *c)
{
    lsv_buf_consume(&c->in, c->in.len);
    c->hint = 0;
    c->flags |= LSV_CONN_EOF;
    lsv_conn_pause(c);
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
            watch_writable(c, 1);
            break;
        }
        lsv_debug("conn %llu: send: %s", (unsigned long long)c->id,
                  strerror(errno));
        lsv_conn_abort(c, "reset");
        return;
    }
    if (c->type->drained) c->type->drained(c);
    if (c->out.len == 0) {
        watch_writable(c, 0);
        release_buf(srv, &c->out);
        if (c->flags & LSV_CONN_CLOSING) {
            conn_finish(c);
            return;
        }
    }
    if ((c->flags & LSV_CONN_BLOCKED) &&
        c->out.len <= c->listener->opt.low_water) {
        c->flags &= ~LSV_CONN_BLOCKED;
        start_reading(c);
        if (c->in.len || (c->flags & LSV_CONN_EOF)) schedule_read(c);
    }
}

void lsv_conn_flush_pending(lsv_server_t *srv)
{
    lsv_conn_t *c;
    while ((c = srv->pending) != NULL) {
        srv->pending = c->next_pending;
        c->flags &= ~LSV_CONN_PENDING;
        if (!(c->flags & LSV_CONN_WRITING)) conn_flush(c);
    }
}

/* c's socket takes output, or its connect ended. */
static void conn_writable(lsv_conn_t *c)
{
    if (unlikely(c->flags & LSV_CONN_CONNECTING)) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        c->flags &= ~LSV_CONN_CONNECTING;
        watch_writable(c, 0);
        if (err == 0) {
            int one = 1;
            setsockopt(c->io.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            start_reading(c);
            if (c->out.len) conn_flush(c);
        }
        c->busy++;
        c->type->connected(c, err);
        c->busy--;
        if (err) lsv_conn_abort(c, "refused");
        return;
    }
    conn_flush(c);
}

/* c's timer fired while it watches a waiting write: reports a write that
 * has made no progress for the idle timeout, or re-arms for the rest. */
static void write_timer(lsv_conn_t *c)
{
    if (c->out.len == 0) {
        c->flags &= ~LSV_CONN_WATCH;
        return;
    }
    ev_tstamp stalled = ev_now(lsv_conn_srv(c)->loop) - c->out_since;
    if (stalled < c->timeout - 0.001) {
        arm_timer(c, c->timeout - stalled);
        return;
    }
    c->flags &= ~LSV_CONN_WATCH;
    if (c->type->stalled) c->type->stalled(c, stalled);
}

/* --- for conn_out.c (conn_int.h) ---------------------------------------- */

void lsv_conn_stop_reading(lsv_conn_t *c) { stop_reading(c); }
void lsv_conn_arm_timer(lsv_conn_t *c, double after) { arm_timer(c, after); }

void lsv_conn_ensure_buf(lsv_server_t *srv, lsv_buf_t *b)
{
    ensure_buf(srv, b);
}

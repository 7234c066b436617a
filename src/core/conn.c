/* conn.c: stream connections' lifecycle: the io watcher and the timer,
 * buffers, hold and release, close, abort and the free, timeouts and
 * pause. Layered under conn_out.c (queueing and writing output) and
 * conn_in.c (creating a conn, reading and framing its input, its
 * watchers' callbacks), which call into it, never the other way. */
#include "lsv.h"
#include "conn.h"
#include "conn_int.h"
#include "listener.h"
#include "log.h"
#include "net.h"
#include "transport.h"

#include <string.h>

/* Seconds a closing conn waits for its peer to take queued output. */
#define CLOSE_LINGER 10.0

/* --- watchers ----------------------------------------------------------- */

/* Asks for one more pass over c's input on the next loop turn: frames
 * left buffered after the per-event cap, a resume, a drain. The prepare
 * watcher runs the list (lsv_conn_run_again), so a busy conn takes one
 * turn per loop iteration like any other. */
void lsv_conn_start_reading(lsv_conn_t *c)
{
    if (c->flags & (LSV_CONN_READING | LSV_CONN_CLOSING | LSV_CONN_PAUSED |
                    LSV_CONN_BLOCKED | LSV_CONN_EOF | LSV_CONN_FULL |
                    LSV_CONN_CONNECTING | LSV_CONN_HANDSHAKE) ||
        c->type == NULL)
        return;
    c->flags |= LSV_CONN_READING;
    lsv_conn_io_update(c);
    if (lsv_transport_holds(c->transport, c)) lsv_conn_schedule_read(c);
}

void lsv_conn_schedule_read(lsv_conn_t *c)
{
    lsv_server_t *srv = lsv_conn_srv(c);
    if (c->flags & LSV_CONN_AGAIN) return;
    c->flags |= LSV_CONN_AGAIN;
    lsv_conn_t **list = srv->running_again ? &srv->again_next : &srv->again;
    c->next_again = *list;
    *list = c;
    lsv_server_kick(srv);
}

void lsv_conn_arm_timer(lsv_conn_t *c, double after)
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

/* --- lifecycle ---------------------------------------------------------- */

/* After a call chain on c unwinds: finish a close it asked for. */
void lsv_conn_settle(lsv_conn_t *c)
{
    if (c->busy || !(c->flags & LSV_CONN_CLOSING)) return;
    if ((c->flags & LSV_CONN_ABORT) || c->out.len == 0) lsv_conn_finish(c);
}

int lsv_conn_start(lsv_conn_t *c)
{
    if (c->flags & LSV_CONN_CLOSING) {
        lsv_conn_settle(c);
        return LSV_ERR;
    }
    /* In pull mode the timeout applies to each read instead. */
    if (c->timeout > 0 && !(c->flags & LSV_CONN_PULL))
        lsv_conn_arm_timer(c, c->timeout);
    lsv_conn_start_reading(c);
    return LSV_OK;
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
    lsv_conn_settle(c);     /* may free c */
    return LSV_ERR;
}

/* Reading ahead in pull mode: with nobody wanting input, a full
 * read-ahead stops reading so that a user busy elsewhere neither grows
 * the buffer nor, with the watcher level-triggered, spins the loop.
 * lsv_conn_want_input resumes. */
void lsv_conn_want_input(lsv_conn_t *c)
{
    if (c->type->room(c) > 0) c->flags &= ~LSV_CONN_FULL;
    lsv_conn_start_reading(c);
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
void lsv_conn_finish(lsv_conn_t *c)
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
    lsv_conn_release_buf(srv, &c->in);
    lsv_conn_release_buf(srv, &c->out);
    lsv_frame_ref_drop(c->framing);
    free((void *)lsv_conn_proxy(c));
    if (c->flags & LSV_CONN_OUTBOUND) srv->stats.outbound_active--;
    c->listener->stats.conns_active--;
    free(c);
    lsv_conn_maybe_done(srv);
}

void lsv_conn_maybe_done(lsv_server_t *srv)
{
    if (!srv->stopping) return;
    /* The walk stops at the first conn that holds the stop; only health
     * conns come before it. */
    for (lsv_conn_t *c = srv->conns; c; c = c->next)
        if (!c->listener->health) return;
    ev_break(srv->loop, EVBREAK_ALL);
}

void lsv_conn_close(lsv_conn_t *c, const char *reason)
{
    if (c->flags & LSV_CONN_CLOSING) return;
    c->flags |= LSV_CONN_CLOSING;
    c->close_reason = reason;
    lsv_conn_stop_reading(c);
    if (c->type && c->type->closing) {
        c->busy++;
        c->type->closing(c, 0);
        c->busy--;
    }
    if (c->out.len == 0) {
        lsv_conn_finish(c);
        return;
    }
    lsv_conn_arm_timer(c, CLOSE_LINGER);
}

void lsv_conn_abort(lsv_conn_t *c, const char *reason)
{
    if (!(c->flags & LSV_CONN_CLOSING)) c->close_reason = reason;
    c->flags |= LSV_CONN_CLOSING | LSV_CONN_ABORT;
    c->out.len = 0;
    lsv_conn_stop_reading(c);
    lsv_conn_finish(c);
}

void lsv_conn_set_timeout(lsv_conn_t *c, double seconds)
{
    c->timeout = lsv_conn_timeout_of(seconds);
    /* Pull mode: the timeout applies to each read (its user's). */
    if (c->flags & (LSV_CONN_CLOSING | LSV_CONN_PULL)) return;
    if (c->timeout > 0) {
        c->last_active = ev_now(lsv_conn_srv(c)->loop);
        lsv_conn_arm_timer(c, c->timeout);
    } else {
        disarm_timer(c);
    }
}

void lsv_conn_pause(lsv_conn_t *c)
{
    c->flags |= LSV_CONN_PAUSED;
    lsv_conn_stop_reading(c);
}

void lsv_conn_resume(lsv_conn_t *c)
{
    if (!(c->flags & LSV_CONN_PAUSED)) return;
    c->flags &= ~LSV_CONN_PAUSED;
    lsv_conn_start_reading(c);
    if (!(c->flags & LSV_CONN_CLOSING) &&
        (c->in.len || (c->flags & LSV_CONN_EOF)))
        lsv_conn_schedule_read(c);
}

/* --- whole server ------------------------------------------------------- */

void lsv_conn_drain_all(lsv_server_t *srv)
{
    /* Each conn reads once more, answers what its peer already sent, and
     * closes when no partial frame is left (process_input). */
    for (lsv_conn_t *c = srv->conns; c; c = c->next) {
        c->flags |= LSV_CONN_DRAIN;
        if (!(c->flags & LSV_CONN_CLOSING)) lsv_conn_schedule_read(c);
    }
}

void lsv_conn_abort_all(lsv_server_t *srv, const char *reason)
{
    while (srv->conns) lsv_conn_abort(srv->conns, reason);
    while (srv->outbound) lsv_conn_abort(srv->outbound, reason);
}

/* --- pull mode ----------------------------------------------------------- */

void lsv_conn_end_input(lsv_conn_t *c)
{
    lsv_buf_consume(&c->in, c->in.len);
    c->hint = 0;
    c->flags |= LSV_CONN_EOF;
    lsv_conn_pause(c);
}

/* loop.c: the server's loop: the watcher that ends each turn (input
 * turns, the layer above's turn, output flushed), and the graceful stop. */
#include "lsv.h"
#include "loop.h"
#include "conn.h"
#include "handshake.h"
#include "listener.h"
#include "log.h"
#include "tls.h"

/* --- stopping ----------------------------------------------------------- */

static void shutdown_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)revents;
    lsv_server_t *srv = container_of(w, lsv_server_t, shutdown_timer);
    int n = 0;
    for (lsv_conn_t *c = lsv_conn_first(srv); c; c = lsv_conn_next(c)) n++;
    lsv_warn("shutdown timeout: closing %d connection%s that did not finish",
             n, n == 1 ? "" : "s");
    lsv_conn_abort_all(srv, "shutdown");
    lsv_conn_maybe_done(srv);
}

void lsv_loop_stop(lsv_server_t *srv)
{
    if (srv->stopping) return;
    ev_timer_stop(srv->loop, &srv->drain_timer);
    int told = srv->draining & LSV_DRAIN_STOP;   /* by lsv_loop_drain */
    srv->stopping = 1;
    srv->draining |= LSV_DRAIN_STOP;
    lsv_info("stopping: no new connections; finishing open ones "
             "(up to %.1f s)", srv->opt.shutdown_timeout);
    if (srv->hooks->notify && !told) srv->hooks->notify(srv, "STOPPING=1");
    lsv_listener_close_serving(srv);
    lsv_handshake_stop_all(srv, 1);
    lsv_tls_stop_all(srv);
    if (srv->hooks->stopping) srv->hooks->stopping(srv);
    ev_timer_set(&srv->shutdown_timer, srv->opt.shutdown_timeout, 0.);
    ev_timer_start(srv->loop, &srv->shutdown_timer);
    lsv_conn_drain_all(srv);
    lsv_conn_maybe_done(srv);
}

void lsv_loop_stop_now(lsv_server_t *srv)
{
    if (!srv->stopping && ev_is_active(&srv->drain_timer)) {
        /* A --drain-delay cut short: the stop's listeners close and its
         * hooks->stopping (on_stop) runs, as at every signal stop. */
        ev_timer_stop(srv->loop, &srv->drain_timer);
        srv->stopping = 1;
        lsv_listener_close_serving(srv);
        if (srv->hooks->stopping) srv->hooks->stopping(srv);
    }
    lsv_handshake_stop_all(srv, 0);
    lsv_tls_stop_all(srv);
    lsv_conn_abort_all(srv, "shutdown");
    ev_break(srv->loop, EVBREAK_ALL);
}

static void drain_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)revents;
    lsv_info("drain delay over");
    lsv_loop_stop(container_of(w, lsv_server_t, drain_timer));
}

void lsv_loop_drain(lsv_server_t *srv)
{
    if (srv->stopping || ev_is_active(&srv->drain_timer)) return;
    if (!(srv->opt.drain_delay > 0)) {
        lsv_loop_stop(srv);
        return;
    }
    srv->draining |= LSV_DRAIN_STOP;
    lsv_info("draining: health checks answer 503; serving as before for "
             "%.1f s (--drain-delay), then stopping", srv->opt.drain_delay);
    if (srv->hooks->notify) srv->hooks->notify(srv, "STOPPING=1");
    ev_timer_set(&srv->drain_timer, srv->opt.drain_delay, 0.);
    ev_timer_start(srv->loop, &srv->drain_timer);
}

int lsv_loop_is_draining(const lsv_server_t *srv)
{
    return srv->stopping || ev_is_active(&srv->drain_timer);
}

static void stop_soon_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)revents;
    lsv_loop_drain(container_of(w, lsv_server_t, stop_soon));
}

void lsv_loop_stop_soon(lsv_server_t *srv)
{
    if (lsv_loop_is_draining(srv) || ev_is_active(&srv->stop_soon)) return;
    ev_timer_set(&srv->stop_soon, 0., 0.);
    ev_timer_start(srv->loop, &srv->stop_soon);
}

/* --- the loop turn ------------------------------------------------------ */

/* Before the loop polls: give conns their input turn, run what the layer
 * above has ready (tasks), then write what everyone queued. Work queued
 * after this (by events libev runs later in the turn) kicks the idle
 * watcher, so the loop comes back here instead of blocking. */
static void flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    lsv_server_t *srv = container_of(w, lsv_server_t, flush_watcher);
    ev_idle_stop(loop, &srv->kick_watcher);
    lsv_conn_run_again(srv);
    if (srv->hooks->turn) srv->hooks->turn(srv);
    lsv_conn_flush_pending(srv);
}

static void kick_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)revents;
    ev_idle_stop(loop, w);   /* its being active was the point */
}

void lsv_loop_init(lsv_server_t *srv, struct ev_loop *loop)
{
    srv->loop = loop;
    ev_idle_init(&srv->kick_watcher, kick_cb);
    ev_prepare_init(&srv->flush_watcher, flush_cb);
    ev_prepare_start(loop, &srv->flush_watcher);
    ev_unref(loop);   /* flushing alone does not keep the loop up */
    ev_init(&srv->shutdown_timer, shutdown_timer_cb);
    ev_init(&srv->stop_soon, stop_soon_cb);
    ev_init(&srv->drain_timer, drain_timer_cb);
}

void lsv_loop_close(lsv_server_t *srv)
{
    /* Reached after a graceful stop: everything is closed or aborted. */
    lsv_handshake_stop_all(srv, 0);
    lsv_tls_stop_all(srv);
    lsv_conn_abort_all(srv, "shutdown");
    lsv_conn_flush_pending(srv);
    ev_timer_stop(srv->loop, &srv->shutdown_timer);
    ev_timer_stop(srv->loop, &srv->stop_soon);
    ev_timer_stop(srv->loop, &srv->drain_timer);
    ev_ref(srv->loop);
    ev_prepare_stop(srv->loop, &srv->flush_watcher);
    ev_idle_stop(srv->loop, &srv->kick_watcher);
}

/* listener.c: listening sockets; accepting stream connections. */
#include "lsv.h"
#include "listener.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Connections accepted per wakeup, so a flood of connects cannot starve
 * the connections already open. */
#define ACCEPTS_PER_EVENT 64

/* How long accepting pauses after an accept error other than a peer's
 * (out of descriptors or memory, or anything unexpected), and how often
 * that is logged. */
#define EMFILE_PAUSE 0.5
#define EMFILE_LOG_EVERY 10.0

static void listener_accept_cb(struct ev_loop *loop, ev_io *w, int revents);
static void listener_resume_cb(struct ev_loop *loop, ev_timer *w, int revents);

const double lsv_hist_bounds[LSV_HIST_BUCKETS] = {
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005,
    0.01, 0.05, 0.25, 1.0
};

void lsv_listener_observe(lsv_listener_t *l, double seconds, uint64_t n)
{
    if (n == 0) return;
    double each = seconds / (double)n;
    int b = 0;
    while (b < LSV_HIST_BUCKETS && each > lsv_hist_bounds[b]) b++;
    l->stats.hist[b] += n;
    l->stats.hist_count += n;
    l->stats.hist_sum += seconds;
}

/* Whether an inherited stream socket is listening. systemd's Accept=yes
 * (and systemd-socket-activate --accept) passes one accepted connection
 * instead; accept() on it fails with EINVAL forever. Fills err if not. */
static int inherited_listening(int fd, const lsv_addr_t *a,
                               char err[LSV_ERRLEN])
{
    int on = 0;
    socklen_t len = sizeof on;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) < 0) {
        snprintf(err, LSV_ERRLEN, "inherited socket (fd %d): SO_ACCEPTCONN: "
                 "%s", fd, strerror(errno));
        return 0;
    }
    if (on) return 1;
    snprintf(err, LSV_ERRLEN, "inherited socket (fd %d, %s) is not "
             "listening: it is one connection, as systemd's Accept=yes "
             "passes; luaserv accepts connections itself, so use Accept=no",
             fd, lsv_net_kind_name(a->kind));
    errno = EINVAL;
    return 0;
}

lsv_listener_t *lsv_listener_open(lsv_server_t *srv, const lsv_addr_t *a,
                                  int fd, char err[LSV_ERRLEN])
{
    int inherited = fd >= 0;
    if (!inherited) fd = lsv_net_listen(a, srv->opt.backlog, err);
    if (fd < 0) return NULL;
    if (inherited && (a->kind == LSV_NET_TCP || a->kind == LSV_NET_UNIX) &&
        !inherited_listening(fd, a, err))
        return NULL;
    lsv_listener_t *l = lsv_calloc(1, sizeof *l);
    l->srv = srv;
    l->addr = *a;
    l->fd = fd;
    l->inherited = inherited;
    lsv_frame_spec_init(&l->framing, LSV_FRAME_LINE);
    l->opt.idle_timeout = srv->opt.idle_timeout;
    l->opt.proxy_timeout = srv->opt.proxy_timeout;
    l->opt.high_water = srv->opt.high_water;
    l->opt.low_water = srv->opt.low_water;
    l->opt.rcvbuf = srv->opt.rcvbuf;
    l->opt.sndbuf = srv->opt.sndbuf;

    char local[LSV_ADDRSTRLEN];
    lsv_net_local(fd, local);
    if (a->kind == LSV_NET_TCP || a->kind == LSV_NET_UDP)
        snprintf(l->name, sizeof l->name, "%s://%s",
                 lsv_net_scheme(a), local);
    else
        snprintf(l->name, sizeof l->name, "%s:%s",
                 lsv_net_kind_name(a->kind), a->path);

    /* A datagram listener's watcher is udp.c's (lsv_udp_attach). */
    ev_io_init(&l->io, listener_accept_cb, fd, EV_READ);
    ev_init(&l->pause_timer, listener_resume_cb);

    lsv_listener_t **pp = &srv->listeners;   /* keep command-line order */
    while (*pp) pp = &(*pp)->next;
    *pp = l;
    return l;
}

void lsv_listener_start_all(lsv_server_t *srv)
{
    for (lsv_listener_t *l = srv->listeners; l; l = l->next) {
        if (l->ops && l->ops->start) l->ops->start(l);
        ev_io_start(srv->loop, &l->io);
    }
}

/* Stops and closes l, unlinking a unix socket file we bound; a graceful
 * stop first answers what the socket already holds. */
static void close_one(lsv_server_t *srv, lsv_listener_t *l)
{
    if (l->fd < 0) return;
    if (srv->stopping && l->ops && l->ops->drain) l->ops->drain(l);
    if (l->fd < 0) return;
    ev_io_stop(srv->loop, &l->io);
    ev_timer_stop(srv->loop, &l->pause_timer);
    close(l->fd);
    l->fd = -1;
    if ((l->addr.kind == LSV_NET_UNIX ||
         l->addr.kind == LSV_NET_UNIXGRAM) && !l->inherited)
        unlink(l->addr.path);
}

void lsv_listener_close_all(lsv_server_t *srv)
{
    for (lsv_listener_t *l = srv->listeners; l; l = l->next)
        close_one(srv, l);
}

void lsv_listener_close_serving(lsv_server_t *srv)
{
    for (lsv_listener_t *l = srv->listeners; l; l = l->next)
        if (!l->health) close_one(srv, l);
}

void lsv_listener_free_all(lsv_server_t *srv)
{
    lsv_listener_close_all(srv);
    while (srv->listeners) {
        lsv_listener_t *l = srv->listeners;
        srv->listeners = l->next;
        if (l->ops && l->ops->free) l->ops->free(l);
        lsv_frame_ref_drop(l->shared);
        free(l);
    }
}

/* Out of descriptors, or any other accept error that is not the peer's:
 * stop accepting for a moment instead of spinning on a listener that
 * stays readable (a listener in a bad state fails every accept at once).
 * Logged at most every EMFILE_LOG_EVERY. */
static void pause_accepting(lsv_listener_t *l, int err)
{
    struct ev_loop *loop = l->srv->loop;
    ev_io_stop(loop, &l->io);
    ev_timer_set(&l->pause_timer, EMFILE_PAUSE, 0.);
    ev_timer_start(loop, &l->pause_timer);
    l->paused_count++;
    if (ev_now(loop) - l->last_pause_log >= EMFILE_LOG_EVERY) {
        lsv_warn("%s: accept: %s; pausing accepts for %.1f s (%llu "
                 "pauses since last report)", l->name, strerror(err),
                 EMFILE_PAUSE, (unsigned long long)l->paused_count);
        l->last_pause_log = ev_now(loop);
        l->paused_count = 0;
    }
}

static void listener_resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    lsv_listener_t *l = container_of(w, lsv_listener_t, pause_timer);
    if (l->fd >= 0) ev_io_start(loop, &l->io);
}

/* Errors accept(2) reports about one pending connection (accept(2): "treat
 * them like EAGAIN by retrying"); the next accept may well succeed. */
static int peer_error(int err)
{
    switch (err) {
    case ECONNABORTED: case EPROTO: case EPERM: case ENETDOWN:
    case ENOPROTOOPT: case EHOSTDOWN: case ENONET: case EHOSTUNREACH:
    case EOPNOTSUPP: case ENETUNREACH:
        return 1;
    default:
        return 0;
    }
}

static void listener_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop; (void)revents;
    lsv_listener_t *l = container_of(w, lsv_listener_t, io);
    for (int i = 0; i < ACCEPTS_PER_EVENT && l->fd >= 0; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || peer_error(errno)) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            /* EMFILE, ENFILE, ENOBUFS, ENOMEM, and anything else (EINVAL
             * from a socket that stopped listening): back off rather than
             * retry at once. */
            pause_accepting(l, errno);
            return;
        }
        if (l->stage)
            l->stage(l, fd, (struct sockaddr *)&ss, len);
        else
            l->srv->hooks->accept(l, fd, (struct sockaddr *)&ss, len, NULL);
    }
}

/* udp.c: datagram listeners: each datagram handed to the layer above
 * (hooks->datagram), received and answered in batches with recvmmsg and
 * sendmmsg. */
#include "lsv.h"
#include "udp.h"
#include "listener.h"
#include "log.h"
#include "net.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* Datagrams received (and replies sent) per recvmmsg / sendmmsg. */
#define BATCH 32

/* Batches handled per wakeup before other watchers get a turn. */
#define BATCHES_PER_EVENT 4

/* One set of receive buffers per process: datagrams are copied (into Lua
 * strings) before any handler runs, so listeners can share them. Only the
 * pages datagrams touch become resident. */
static char recv_bufs[BATCH][LSV_DGRAM_MAX + 1];
static struct sockaddr_storage recv_peers[BATCH];

static void udp_free(lsv_listener_t *l)
{
    lsv_buf_free(&l->dgram->reply);
    free(l->dgram);
    l->dgram = NULL;
}

int lsv_udp_write(lsv_dgram_t *d, const char *p, size_t n)
{
    if (!d->in_call) return LSV_ERR;
    if (unlikely(d->reply.len - d->reply_start + n > LSV_DGRAM_MAX ||
                 lsv_buf_try_append(&d->reply, p, n) != LSV_OK))
        return LSV_ERR;
    d->has_reply = 1;
    return LSV_OK;
}

/* Hands datagram data[0, n) from d->peer to the layer above. Its reply,
 * if any, is left in d->reply from offset start on. Returns 1 if there is
 * a reply to send. */
static int handle_datagram(lsv_listener_t *l, const char *data, size_t n,
                           size_t start)
{
    lsv_dgram_t *d = l->dgram;
    l->srv->stats.datagrams++;
    l->stats.messages++;
    d->in_call = 1;
    d->has_reply = 0;
    d->reply_start = (uint32_t)start;
    int ok = l->srv->hooks->datagram(l, d, data, n);
    d->in_call = 0;
    if (!ok) d->reply.len = (uint32_t)start;   /* only this datagram's */
    return ok && d->has_reply;
}

/* Sends the batch's replies with sendmmsg, retrying the rest after a
 * partial send. A reply the kernel refuses is logged and dropped. */
static void send_replies(lsv_listener_t *l, struct mmsghdr *out, int n)
{
    int sent = 0;
    while (sent < n) {
        int r = sendmmsg(l->fd, out + sent, (unsigned)(n - sent),
                         MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                struct msghdr *h = &out[sent].msg_hdr;
                char peer[LSV_ADDRSTRLEN];
                lsv_log_ctx_t ctx = { l->name, lsv_net_format(
                    (struct sockaddr *)h->msg_name, h->msg_namelen, peer), 0 };
                lsv_log_writec(LSV_LOG_WARN, &ctx, "reply of %zu bytes to a "
                               "datagram not sent: %s%s", h->msg_iov[0].iov_len,
                               strerror(errno), errno == EMSGSIZE ? " (a UDP "
                               "datagram holds at most 65507 bytes over IPv4, "
                               "65527 over IPv6)" : "");
            }
            sent++;    /* drop the one that failed; go on with the rest */
            continue;
        }
        for (int i = sent; i < sent + r; i++) {
            l->stats.bytes_out += out[i].msg_len;
        }
        sent += r;
    }
}

/* Room for one SO_RXQ_OVFL control message per datagram. */
#define CMSG_ROOM CMSG_SPACE(sizeof(uint32_t))
static union {
    char buf[CMSG_ROOM];
    struct cmsghdr align;
} recv_cmsgs[BATCH];

/* Takes the kernel's drop count (SO_RXQ_OVFL: datagrams dropped on this
 * socket since it opened, a wrapping 32-bit count, sent with each
 * datagram received after a drop) from m, and counts the new drops. */
static void note_drops(lsv_listener_t *l, struct msghdr *m)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SO_RXQ_OVFL)
            continue;
        uint32_t seen;
        memcpy(&seen, CMSG_DATA(c), sizeof seen);
        uint32_t delta = seen - l->dgram->drops_seen;   /* mod 2^32 */
        l->dgram->drops_seen = seen;
        l->stats.udp_drops += delta;
    }
}

/* Receives one batch with recvmmsg, runs on_message for each datagram and
 * sends the replies. Returns the datagrams received, or -1 when the socket
 * had none (or failed). */
static int handle_batch(lsv_listener_t *l, uint64_t *handled)
{
    lsv_dgram_t *d = l->dgram;
    struct mmsghdr in[BATCH], out[BATCH];
    struct iovec iov_in[BATCH], iov_out[BATCH];
    size_t starts[BATCH];
    int owner[BATCH];

    memset(in, 0, sizeof in);
    for (int i = 0; i < BATCH; i++) {
        iov_in[i].iov_base = recv_bufs[i];
        iov_in[i].iov_len = sizeof recv_bufs[i];
        in[i].msg_hdr.msg_iov = &iov_in[i];
        in[i].msg_hdr.msg_iovlen = 1;
        in[i].msg_hdr.msg_name = &recv_peers[i];
        in[i].msg_hdr.msg_namelen = sizeof recv_peers[i];
        in[i].msg_hdr.msg_control = recv_cmsgs[i].buf;
        in[i].msg_hdr.msg_controllen = sizeof recv_cmsgs[i].buf;
    }
    int n;
    do n = recvmmsg(l->fd, in, BATCH, MSG_DONTWAIT, NULL);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            lsv_warn("%s: recvmmsg: %s", l->name, strerror(errno));
        return -1;
    }
    uint64_t drops = l->stats.udp_drops;
    d->reply.len = d->reply.start = 0;
    int nout = 0;
    for (int i = 0; i < n; i++) {
        size_t len = in[i].msg_len;
        note_drops(l, &in[i].msg_hdr);
        memcpy(&d->peer, &recv_peers[i], in[i].msg_hdr.msg_namelen);
        d->peer_len = in[i].msg_hdr.msg_namelen;
        l->stats.bytes_in += len;
        if (in[i].msg_hdr.msg_flags & MSG_TRUNC) {
            char peer[LSV_ADDRSTRLEN];
            lsv_log_ctx_t ctx = { l->name, lsv_net_format(
                (struct sockaddr *)&d->peer, d->peer_len, peer), 0 };
            if (LSV_LOG_WARN >= lsv_log_level)
                lsv_log_writec(LSV_LOG_WARN, &ctx, "datagram over %d "
                               "bytes; dropped", LSV_DGRAM_MAX);
            continue;
        }
        size_t start = d->reply.len;
        (*handled)++;
        if (!handle_datagram(l, recv_bufs[i], len, start)) continue;
        if (d->peer_len <= sizeof(sa_family_t)) {
            lsv_debug("%s: sender has no address; reply dropped", l->name);
            d->reply.len = (uint32_t)start;
            continue;
        }
        starts[nout] = start;
        owner[nout] = i;
        nout++;
    }
    if (unlikely(l->stats.udp_drops != drops) && LSV_LOG_WARN >= lsv_log_level) {
        lsv_log_ctx_t ctx = { l->name, NULL, 0 };
        lsv_log_writec(LSV_LOG_WARN, &ctx, "the kernel dropped %llu "
                       "datagrams (%llu in all): the receive buffer was "
                       "full; raise rcvbuf", (unsigned long long)
                       (l->stats.udp_drops - drops),
                       (unsigned long long)l->stats.udp_drops);
    }
    /* The reply buffer is final now: point the iovecs into it. */
    for (int k = 0; k < nout; k++) {
        size_t end = k + 1 < nout ? starts[k + 1] : d->reply.len;
        iov_out[k].iov_base = d->reply.data + starts[k];
        iov_out[k].iov_len = end - starts[k];
        memset(&out[k], 0, sizeof out[k]);
        out[k].msg_hdr.msg_iov = &iov_out[k];
        out[k].msg_hdr.msg_iovlen = 1;
        out[k].msg_hdr.msg_name = &recv_peers[owner[k]];
        out[k].msg_hdr.msg_namelen = in[owner[k]].msg_hdr.msg_namelen;
    }
    if (nout) send_replies(l, out, nout);
    return n;
}

static void udp_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop; (void)revents;
    lsv_listener_t *l = container_of(w, lsv_listener_t, io);
    double t0 = lsv_clock();
    uint64_t handled = 0;
    for (int round = 0; round < BATCHES_PER_EVENT && l->fd >= 0; round++)
        if (handle_batch(l, &handled) < BATCH) break;
    l->dgram->reply.len = l->dgram->reply.start = 0;
    if (handled) lsv_listener_observe(l, lsv_clock() - t0, handled);
}

static void udp_drain(lsv_listener_t *l)
{
    double t0 = lsv_clock();
    uint64_t handled = 0;
    while (l->fd >= 0 && lsv_clock() - t0 < LSV_UDP_DRAIN_SECONDS)
        if (handle_batch(l, &handled) < BATCH) break;
    l->dgram->reply.len = l->dgram->reply.start = 0;
    if (handled) {
        lsv_listener_observe(l, lsv_clock() - t0, handled);
        lsv_debug("%s: answered %llu queued datagrams before closing",
                  l->name, (unsigned long long)handled);
    }
}

/* Sets one buffer size: SO_*BUFFORCE first (it may pass the sysctl
 * maximum when we have CAP_NET_ADMIN), then the plain option. Logs what
 * the kernel granted when it is less than asked. */
static void set_buf(lsv_listener_t *l, int force, int plain, const char *what,
                    size_t want)
{
    int v = want > INT_MAX / 2 ? INT_MAX / 2 : (int)want;
    if (setsockopt(l->fd, SOL_SOCKET, force, &v, sizeof v) < 0 &&
        setsockopt(l->fd, SOL_SOCKET, plain, &v, sizeof v) < 0) {
        lsv_warn("%s: %s %zu: %s", l->name, what, want, strerror(errno));
        return;
    }
    int got = 0;
    socklen_t len = sizeof got;
    /* Linux reports twice the size set (the other half is bookkeeping). */
    if (getsockopt(l->fd, SOL_SOCKET, plain, &got, &len) == 0 &&
        (size_t)got / 2 < want)
        lsv_warn("%s: %s %zu asked, the kernel gave %d (see "
                 "net.core.%s_max)", l->name, what, want, got / 2,
                 plain == SO_RCVBUF ? "rmem" : "wmem");
}

static void udp_start(lsv_listener_t *l)
{
    int on = 1;
    if (setsockopt(l->fd, SOL_SOCKET, SO_RXQ_OVFL, &on, sizeof on) < 0)
        lsv_debug("%s: SO_RXQ_OVFL: %s (drops will not be counted)",
                  l->name, strerror(errno));
    if (l->opt.rcvbuf)
        set_buf(l, SO_RCVBUFFORCE, SO_RCVBUF, "rcvbuf", l->opt.rcvbuf);
    if (l->opt.sndbuf)
        set_buf(l, SO_SNDBUFFORCE, SO_SNDBUF, "sndbuf", l->opt.sndbuf);
}

void lsv_udp_attach(lsv_listener_t *l)
{
    static const lsv_listener_ops_t ops = { udp_start, udp_drain, udp_free };
    lsv_dgram_t *d = lsv_calloc(1, sizeof *d);
    d->listener = l;
    l->dgram = d;
    l->ops = &ops;
    ev_io_init(&l->io, udp_read_cb, l->fd, EV_READ);
}

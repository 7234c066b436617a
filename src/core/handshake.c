/* handshake.c: the stage that reads a PROXY header between accept and the
 * conn. */
#include "lsv.h"
#include "handshake.h"
#include "listener.h"
#include "log.h"
#include "net.h"
#include "proxy.h"
#include "tls_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Room inside the stage: v1's longest, and v2's with either family's
 * addresses and a few TLVs. A longer v2 header (its length says so after
 * 16 bytes) gets a buffer of its own, up to LSV_PROXY_V2_MAX. */
#define SMALL_HEADER 256

typedef struct lsv_handshake lsv_handshake_t;
struct lsv_handshake {
    lsv_handshake_t *prev, *next;   /* srv->stages */
    lsv_listener_t *l;
    ev_io io;
    ev_timer timer;
    struct sockaddr_storage peer;   /* the socket's: the balancer */
    socklen_t peer_len;
    size_t have;                    /* header bytes read (consumed) */
    size_t need;                    /* the parser's last "at least" */
    size_t cap;                     /* of buf */
    char *buf;                      /* small, or malloc'd */
    char small[SMALL_HEADER];
};

const char *const lsv_proxy_err_names[LSV_PROXY_ERR_COUNT] = {
    "bad", "timeout", "eof", "too_long"
};

static void stage_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void stage_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

/* What stage_read found. */
enum { STAGE_WAIT, STAGE_DONE };

/* Unlinks h, stops its watchers and frees it; closes its fd unless keep. */
static void stage_free(lsv_handshake_t *h, int keep_fd)
{
    lsv_server_t *srv = h->l->srv;
    ev_io_stop(srv->loop, &h->io);
    ev_timer_stop(srv->loop, &h->timer);
    if (h->prev) h->prev->next = h->next;
    else srv->stages = h->next;
    if (h->next) h->next->prev = h->prev;
    if (!keep_fd) close(h->io.fd);
    if (h->buf != h->small) free(h->buf);
    free(h);
}

/* Closes h for reason (an LSV_PROXY_ERR_*), counted, with one warn line
 * naming the listener, the balancer and the fault (rate-limited per
 * listener by the log). */
static void stage_fail(lsv_handshake_t *h, int reason, const char *fault)
{
    lsv_listener_t *l = h->l;
    l->stats.proxy_errors[reason]++;
    if (LSV_LOG_WARN >= lsv_log_level) {
        char peer[LSV_ADDRSTRLEN];
        lsv_log_ctx_t ctx = {
            l->name,
            lsv_net_format((struct sockaddr *)&h->peer, h->peer_len, peer), 0
        };
        lsv_log_writec(LSV_LOG_WARN, &ctx, "PROXY header: %s (%s); closed",
                       fault, lsv_proxy_err_names[reason]);
    }
    stage_free(h, 0);
}

/* The peer closed (or reset) before sending a byte: a balancer's TCP
 * check, not a fault. Counted apart; debug only. */
static void stage_empty(lsv_handshake_t *h)
{
    h->l->stats.proxy_empty++;
    if (LSV_LOG_DEBUG >= lsv_log_level) {
        char peer[LSV_ADDRSTRLEN];
        lsv_log_ctx_t ctx = {
            h->l->name,
            lsv_net_format((struct sockaddr *)&h->peer, h->peer_len, peer), 0
        };
        lsv_log_writec(LSV_LOG_DEBUG, &ctx, "closed before a PROXY header "
                       "(a health check?)");
    }
    stage_free(h, 0);
}

/* Whether a parser's fault is about length (the too_long reason). */
static int fault_is_length(const char *err)
{
    return strstr(err, "over ") || strstr(err, "too long") ||
           strstr(err, "too big");
}

/* Hands h's connection on: builds the info the conn will own (its size
 * is the peer's: a failed allocation closes this connection only), frees
 * the stage, then calls hooks->accept with the effective peer. */
static void stage_done(lsv_handshake_t *h, const lsv_proxy_hdr_t *hdr)
{
    lsv_listener_t *l = h->l;
    lsv_proxy_info_t *info = malloc(sizeof *info + hdr->tlv_len);
    if (unlikely(info == NULL)) {
        stage_fail(h, LSV_PROXY_ERR_BAD, "out of memory for its TLVs");
        return;
    }
    info->hdr = *hdr;
    info->hdr.tlv_off = 0;
    if (hdr->tlv_len) memcpy(info->tlv, h->buf + hdr->tlv_off, hdr->tlv_len);
    info->socket_peer = h->peer;
    info->socket_peer_len = h->peer_len;
    l->stats.proxy_headers[hdr->local ? 2 : hdr->version == 1 ? 0 : 1]++;

    struct sockaddr_storage sa;
    socklen_t salen = hdr->local ? h->peer_len : hdr->src_len;
    memcpy(&sa, hdr->local ? &h->peer : &hdr->src, sizeof sa);
    int fd = h->io.fd;
    stage_free(h, 1);
    if (l->tls) {               /* a tls:// listener: its handshake next */
        lsv_tls_stage_begin(l, fd, (struct sockaddr *)&sa, salen, info);
        return;
    }
    lsv_accepted_t acc = { info, NULL, 0 };
    l->srv->hooks->accept(l, fd, (struct sockaddr *)&sa, salen, &acc);
}

/* h's buffer is full of a v2 header longer than it: makes room for more,
 * at most 4 times what came so far and never past h->need (the header's
 * length), so a peer that declares 64 KiB and stalls costs little.
 * Returns LSV_OK, or LSV_ERR out of memory. */
static int stage_grow(lsv_handshake_t *h)
{
    size_t cap = h->need < 4 * h->cap ? h->need : 4 * h->cap;
    if (cap > LSV_PROXY_V2_MAX) cap = LSV_PROXY_V2_MAX;
    if (cap <= h->cap) return LSV_ERR;     /* the parser's need is wrong */
    char *p = malloc(cap);
    if (unlikely(p == NULL)) return LSV_ERR;
    memcpy(p, h->buf, h->have);
    if (h->buf != h->small) free(h->buf);
    h->buf = p;
    h->cap = cap;
    return LSV_OK;
}

/* Takes n bytes the last peek saw, all the header's, off the socket.
 * Returns LSV_OK, or LSV_ERR (the peer reset in between). */
static int stage_consume(lsv_handshake_t *h, size_t n)
{
    while (n) {
        ssize_t r = recv(h->io.fd, h->buf + h->have, n, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return LSV_ERR;
        h->have += (size_t)r;
        n -= (size_t)r;
    }
    return LSV_OK;
}

/* Reads what h's socket holds of the header. The parser says, for the
 * bytes so far, whether they begin a header (PARTIAL: every one of them
 * is the header's, so they are consumed) or make one (its length: only
 * that many are consumed, and what follows stays in the socket for the
 * conn). So it peeks, parses, then consumes what belongs to the header;
 * nothing it peeked stays unconsumed unless the header is complete,
 * which keeps a level-triggered watcher from spinning. Returns
 * STAGE_DONE once h is gone (handed on or closed), else STAGE_WAIT. */
static int stage_read(lsv_handshake_t *h)
{
    for (;;) {
        if (h->have == h->cap && stage_grow(h) != LSV_OK) {
            stage_fail(h, LSV_PROXY_ERR_BAD, "no room for its length");
            return STAGE_DONE;
        }
        ssize_t n = recv(h->io.fd, h->buf + h->have, h->cap - h->have,
                         MSG_PEEK);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return STAGE_WAIT;
        if (n <= 0 && h->have == 0) {
            stage_empty(h);
            return STAGE_DONE;
        }
        if (n <= 0) {
            stage_fail(h, LSV_PROXY_ERR_EOF, n == 0 ? "closed mid-header"
                                                    : strerror(errno));
            return STAGE_DONE;
        }
        lsv_proxy_hdr_t hdr;
        size_t need = 0;
        const char *err = "bad header";
        size_t seen = h->have + (size_t)n;
        ssize_t r = lsv_proxy_parse(h->buf, seen, &hdr, &need, &err);
        if ((r == LSV_PROXY_PARTIAL && need <= seen) ||
            (r > 0 && (size_t)r < h->have)) {
            r = LSV_PROXY_BAD;   /* the parser contradicts itself: a bug */
            err = "parser contradicts itself";
        }
        if (r < 0) {
            stage_fail(h, fault_is_length(err) ? LSV_PROXY_ERR_TOO_LONG
                                               : LSV_PROXY_ERR_BAD, err);
            return STAGE_DONE;
        }
        size_t take = r > 0 ? (size_t)r - h->have : (size_t)n;
        if (stage_consume(h, take) != LSV_OK) {
            stage_fail(h, LSV_PROXY_ERR_EOF, "reset mid-header");
            return STAGE_DONE;
        }
        if (r > 0) {
            stage_done(h, &hdr);
            return STAGE_DONE;
        }
        h->need = need;
    }
}

static void stage_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop; (void)revents;
    stage_read(container_of(w, lsv_handshake_t, io));
}

static void stage_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)revents;
    lsv_handshake_t *h = container_of(w, lsv_handshake_t, timer);
    char fault[96];
    snprintf(fault, sizeof fault, "none complete within %g s (%zu bytes "
             "came)", h->l->opt.proxy_timeout, h->have);
    stage_fail(h, LSV_PROXY_ERR_TIMEOUT, fault);
}

void lsv_handshake_start(lsv_listener_t *l, int fd, const struct sockaddr *sa,
                         socklen_t salen)
{
    lsv_server_t *srv = l->srv;
    lsv_handshake_t *h = lsv_malloc(sizeof *h);
    h->l = l;
    if (salen > sizeof h->peer) salen = sizeof h->peer;
    memcpy(&h->peer, sa, salen);
    h->peer_len = salen;
    h->have = 0;
    h->need = 0;
    h->cap = sizeof h->small;
    h->buf = h->small;
    h->prev = NULL;
    h->next = srv->stages;
    if (srv->stages) srv->stages->prev = h;
    srv->stages = h;
    ev_io_init(&h->io, stage_io_cb, fd, EV_READ);
    ev_init(&h->timer, stage_timer_cb);
    /* Most balancers send the header with the connection's first
     * segment: often it is here already. */
    if (stage_read(h) == STAGE_DONE) return;
    ev_io_start(srv->loop, &h->io);
    if (l->opt.proxy_timeout > 0) {
        ev_timer_set(&h->timer, l->opt.proxy_timeout, 0.);
        ev_timer_start(srv->loop, &h->timer);
    }
}

void lsv_handshake_attach(lsv_listener_t *l)
{
    l->stage = lsv_handshake_start;
}

void lsv_handshake_stop_all(lsv_server_t *srv, int finish)
{
    while (srv->stages) {
        lsv_handshake_t *h = srv->stages;
        if (!finish || stage_read(h) == STAGE_WAIT) {
            lsv_debug("%s: closing a connection still without its PROXY "
                      "header: stopping", h->l->name);
            stage_free(h, 0);
        }
    }
}

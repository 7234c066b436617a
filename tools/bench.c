/* bench.c: luaserv-bench, the load generator for luaserv servers. */
#include "bench.h"
#include "bench_ws.h"

#include <errno.h>
#include <ev.h>
#include <math.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* Past the end of the run (warmup + duration) this much, SIGALRM ends the
 * process whatever it was waiting for: a resolver, a full stdout pipe. */
#define HARD_STOP_GRACE 5

/* The first connection, made blocking through lsv_net_connect, tells a
 * server that is not there apart from one that is slow. */
#define PROBE_TIMEOUT 3.0

/* One read takes all a connection has (a pipelined batch of replies is a
 * few KiB); the buffer is shared, so connections hold none of their own
 * unless a reply was split between reads. */
#define READ_SIZE (256u << 10)

/* A reply line longer than this is a protocol error, not a reason to grow. */
#define REPLY_MAX (1u << 20)

/* Connects in progress at once while ramping up: enough to open thousands
 * a second, few enough not to overflow the server's listen backlog. */
#define CONNECT_WINDOW 256

/* How often timeouts and reconnects are looked at. One timer for all
 * connections, so no timer is touched per request. */
#define SWEEP_S 0.05

/* A request line ends with its number in this many hex digits (fewer when
 * the payload is shorter), so a reply can be matched to its request. */
#define SEQ_DIGITS 8

/* ---- requests and replies ---- */

/* Whether p starts like "[Tue Apr  8 20:55:49 2006] ". */
static inline int stamp_ok(const char *p)
{
    const char *t = p + 1;
    return p[0] == '[' && p[CTIME_LEN + 1] == ']' && p[CTIME_LEN + 2] == ' '
           && t[3] == ' ' && t[7] == ' ' && t[10] == ' ' && t[13] == ':'
           && t[16] == ':' && t[19] == ' ';
}

/* Whether the n bytes at p answer request seq, under --check. */
static inline int reply_ok(bench_t *b, const char *p, size_t n, uint32_t seq)
{
    switch (b->check) {
    case CHECK_LINE:
        return 1;
    case CHECK_ECHO:
        return n == b->line_len && is_request(b, p, seq);
    default:
        return n == STAMP_LEN + b->line_len && stamp_ok(p)
               && is_request(b, p + STAMP_LEN, seq);
    }
}

/* ---- connections ---- */

/* Appends n requests to c->out and to the ring of c's requests in flight,
 * all stamped now. One memcpy and a few digits each. */
static void stream_queue(bench_t *b, bconn_t *c, uint32_t n, int64_t now)
{
    char *p = lsv_buf_reserve(&c->out, (size_t)n * b->line_len);
    uint32_t i = c->head + c->inflight;

    for (uint32_t k = 0; k < n; k++, i++) {
        if (i >= b->pipeline) i -= b->pipeline;
        slot_t *s = &c->slots[i];
        s->seq = c->seq++;
        s->sent = now;
        memcpy(p, b->line, b->line_len);
        put_seq(p + b->size - b->digits, s->seq, b->digits);
        p += b->line_len;
    }
    c->inflight += n;
    lsv_buf_commit(&c->out, (size_t)n * b->line_len);
}

/* Sends c's queued datagrams, a sendmmsg per UDP_BATCH, each with a fresh
 * number. What the kernel refuses for now stays queued: EAGAIN waits for
 * EV_WRITE, other errors (a refused port) for the next sweep. */
static void udp_flush(bench_t *b, bconn_t *c)
{
    struct mmsghdr msg[UDP_BATCH];
    struct iovec iov[UDP_BATCH];

    while (c->nqueued > 0) {
        uint32_t n = c->nqueued < UDP_BATCH ? c->nqueued : UDP_BATCH;
        char *p = b->tbuf;
        int64_t now = now_ns();
        int sent;

        memset(msg, 0, sizeof msg[0] * n);
        for (uint32_t k = 0; k < n; k++, p += b->line_len) {
            slot_t *s = &c->slots[c->queued[c->nqueued - 1 - k]];
            s->seq = c->seq++;
            memcpy(p, b->line, b->line_len);
            put_seq(p + b->size - b->digits, s->seq, b->digits);
            iov[k].iov_base = p;
            iov[k].iov_len = b->line_len;
            msg[k].msg_hdr.msg_iov = &iov[k];
            msg[k].msg_hdr.msg_iovlen = 1;
        }
        sent = sendmmsg(c->fd, msg, n, MSG_DONTWAIT);
        if (sent < 0 && errno == EINTR) continue;
        if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK
            && errno != ENOBUFS) {
            b->st.connect++;
            snprintf(b->last_err, sizeof b->last_err, "send: %s",
                     strerror(errno));
            return;
        }
        for (int k = 0; k < sent; k++) {
            slot_t *s = &c->slots[c->queued[c->nqueued - 1 - k]];
            s->state = SLOT_INFLIGHT;
            s->sent = now;
        }
        if (sent > 0) c->nqueued -= (uint32_t)sent;
        if (sent < (int)n) {
            if (!ev_is_active(&c->wio)) ev_io_start(b->loop, &c->wio);
            return;
        }
    }
    if (ev_is_active(&c->wio)) ev_io_stop(b->loop, &c->wio);
}

static void udp_requeue(bconn_t *c, uint32_t i)
{
    c->slots[i].state = SLOT_QUEUED;
    c->queued[c->nqueued++] = i;
}

/* Matches a reply datagram to the oldest request in flight it answers,
 * found by the number it echoes (datagrams can come out of order; with
 * --check line any request will do). A well-formed reply that answers none
 * came after its timeout, already counted: it is late, not an error. A
 * malformed one is an error and retires c's oldest datagram, so a wrong
 * server costs one error per request. */
static void udp_reply(bench_t *b, bconn_t *c, const char *p, size_t n,
                      int trunc, int64_t now)
{
    size_t pre = b->check == CHECK_TIMESTAMP ? STAMP_LEN : 0;
    const char *req = p + pre, *d = req + b->size - b->digits;
    int any = b->check == CHECK_LINE, i = -1, oldest = -1;
    int form = !trunc && (any || (n == pre + b->line_len
                                  && (pre == 0 || stamp_ok(p))));
    uint32_t v = 0;

    for (int k = 0; form && !any && k < b->digits; k++) {
        int x = d[k] >= '0' && d[k] <= '9' ? d[k] - '0'
                : d[k] >= 'a' && d[k] <= 'f' ? d[k] - 'a' + 10 : -1;
        form = x >= 0;
        v = v << 4 | (uint32_t)(x & 15);
    }
    for (uint32_t k = 0; k < b->pipeline; k++) {
        slot_t *s = &c->slots[k];
        if (s->state != SLOT_INFLIGHT) continue;
        if (oldest < 0 || s->sent < c->slots[oldest].sent) oldest = (int)k;
        if (form && (i < 0 || s->sent < c->slots[i].sent)
            && (any || ((s->seq & b->seq_mask) == v
                        && is_request(b, req, s->seq))))
            i = (int)k;
    }
    if (i >= 0) {
        record(b, c, now - c->slots[i].sent);
        udp_requeue(c, (uint32_t)i);
    } else if (form && (any || is_request(b, req, v))) {
        b->st.late++;
    } else {
        bench_bad_reply(b, p, n);
        if (oldest >= 0) udp_requeue(c, (uint32_t)oldest);
    }
}

/* c is connected (and through its handshake, --tls): start its traffic
 * (nothing, for idle). */
static void conn_ready(bench_t *b, bconn_t *c)
{
    if (c->state == ST_CONNECTING || c->state == ST_HANDSHAKE)
        b->connecting--;
    c->state = ST_OPEN;
    b->open++;
    ev_io_stop(b->loop, &c->wio);
    ev_io_start(b->loop, &c->rio);
    switch (b->mode) {
    case MODE_PERSISTENT:
    case MODE_SHORT:
        stream_queue(b, c, b->mode == MODE_SHORT ? 1 : b->pipeline,
                     b->mode == MODE_SHORT ? c->since : now_ns());
        if (bench_stream_flush(b, c) != LSV_OK)
            bench_conn_fail(b, c, &b->st.closed, "send", errno);
        break;
    case MODE_UDP:
        for (uint32_t i = 0; i < b->pipeline; i++) udp_requeue(c, i);
        udp_flush(b, c);
        break;
    case MODE_WS:
        bench_ws_start(b, c);
        break;
    default:
        if (!b->ready && b->open == b->nconns) {
            b->ready = 1;
            b->ready_after = lsv_clock() - b->t_start;
            printf("ready %d\n", b->open);
            fflush(stdout);
        }
    }
}

/* One step of c's TLS handshake, on either of its io events: waits for
 * what OpenSSL wants, or counts it done (resumed or not) and starts the
 * traffic, or fails c (a connect error, with OpenSSL's reason). */
static void tls_step(bench_t *b, bconn_t *c)
{
    char err[LSV_ERRLEN];
    int events = 0, r = bench_tls_handshake(c->ssl, &events, err);

    if (r == LSV_AGAIN) {
        ev_io *on = events == EV_READ ? &c->rio : &c->wio;
        ev_io *off = events == EV_READ ? &c->wio : &c->rio;
        ev_io_stop(b->loop, off);
        if (!ev_is_active(on)) ev_io_start(b->loop, on);
        return;
    }
    if (r == LSV_OK) {
        b->st.handshakes++;
        b->st.resumed += (uint64_t)bench_tls_resumed(c->ssl);
        b->tls_version = SSL_get_version(c->ssl);
        conn_ready(b, c);
        return;
    }
    bench_conn_fail(b, c, &b->st.connect, "tls handshake", EPROTO);
    snprintf(b->last_err, sizeof b->last_err, "tls handshake: %.110s", err);
}

/* c's socket is connected: with --tls its handshake starts, else its
 * traffic. */
static void conn_connected(bench_t *b, bconn_t *c)
{
    if (b->tlsc == NULL) {
        conn_ready(b, c);
        return;
    }
    c->ssl = bench_tls_open(b->tlsc, c->fd, &c->sess);
    if (c->ssl == NULL) {
        bench_conn_fail(b, c, &b->st.connect, "tls", ENOMEM);
        return;
    }
    if (c->state != ST_CONNECTING) b->connecting++;
    c->state = ST_HANDSHAKE;
    tls_step(b, c);
}

/* Starts a non-blocking connect for c (a connected datagram socket in udp
 * mode, which is immediate). Failures are counted and retried later. */
static void conn_open(bench_t *b, bconn_t *c)
{
    int dgram = b->mode == MODE_UDP;
    int fd = socket(b->sa.ss_family, (dgram ? SOCK_DGRAM : SOCK_STREAM)
                    | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    c->since = now_ns();
    if (fd < 0) {
        bench_conn_fail(b, c, &b->st.connect, "socket", errno);
        return;
    }
    /* Batches of pipelined requests must not wait for an ACK. A short
     * exchange is one write, which Nagle never holds; over TLS it is the
     * handshake's Finished and then the request, which it would. */
    if ((b->mode == MODE_PERSISTENT || b->mode == MODE_WS || b->tls)
        && b->sa.ss_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    c->fd = fd;
    ev_io_set(&c->rio, fd, EV_READ);
    ev_io_set(&c->wio, fd, EV_WRITE);
    if (connect(fd, (struct sockaddr *)&b->sa, b->salen) == 0) {
        conn_connected(b, c);
    } else if (errno == EINPROGRESS) {
        c->state = ST_CONNECTING;
        b->connecting++;
        ev_io_start(b->loop, &c->wio);
    } else {
        /* EADDRNOTAVAIL when short mode ran out of ephemeral ports,
         * EAGAIN for a full unix backlog: back off and count it. */
        bench_conn_fail(b, c, &b->st.connect, "connect", errno);
    }
}

/* Opens never-tried connections while fewer than CONNECT_WINDOW are in
 * progress: the ramp at the start. */
static void open_more(bench_t *b)
{
    for (; b->cursor < b->nconns && b->connecting < CONNECT_WINDOW;
         b->cursor++) {
        bconn_t *c = &b->conns[b->cursor];
        if (c->state == ST_OFF && c->retry_at == 0) conn_open(b, c);
    }
}

static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    bench_t *b = ev_userdata(loop);
    bconn_t *c = container_of(w, bconn_t, wio);
    (void)revents;

    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err != 0)
            bench_conn_fail(b, c, &b->st.connect, "connect", err);
        else
            conn_connected(b, c);
        open_more(b);
    } else if (c->state == ST_HANDSHAKE) {
        tls_step(b, c);
    } else if (b->mode == MODE_UDP) {
        udp_flush(b, c);
    } else if (bench_stream_flush(b, c) != LSV_OK) {
        bench_conn_fail(b, c, &b->st.closed, "send", errno);
    }
}

/* Every complete line answers the oldest request in flight, so replies are
 * checked in order; then as many requests as were answered go out in one
 * write. Only a line split between reads is copied. In short mode the one
 * reply ends the exchange: the connection closes and the next one starts
 * on the spot. */
static void stream_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    bench_t *b = ev_userdata(loop);
    bconn_t *c = container_of(w, bconn_t, rio);
    size_t len, off = 0;
    const char *p = b->rbuf;
    int buffered = c->in.len > 0;
    uint32_t done = 0;
    int64_t now;
    (void)revents;

    if (c->state == ST_HANDSHAKE) {
        tls_step(b, c);
        return;
    }
    len = bench_stream_read(b, c);
    if (len == 0) return;
    now = now_ns();
    if (buffered) {
        lsv_buf_append(&c->in, p, len);
        p = lsv_buf_head(&c->in);
        len = c->in.len;
    }
    for (;;) {
        const char *nl = memchr(p + off, '\n', len - off);
        if (nl == NULL) break;
        size_t n = (size_t)(nl + 1 - (p + off));
        if (unlikely(c->inflight == 0)) {
            bench_bad_reply(b, p + off, n);           /* nothing was asked */
        } else {
            slot_t *s = &c->slots[c->head];
            if (likely(reply_ok(b, p + off, n, s->seq)))
                record(b, c, now - s->sent);
            else
                bench_bad_reply(b, p + off, n);
            if (++c->head == b->pipeline) c->head = 0;
            c->inflight--;
            done++;
        }
        off += n;
    }
    if (b->mode == MODE_SHORT && done > 0) {
        bench_conn_close(b, c);
        conn_open(b, c);
        return;
    }
    if (buffered)
        lsv_buf_consume(&c->in, off);
    else if (off < len)
        lsv_buf_append(&c->in, p + off, len - off);
    if (unlikely(c->in.len > REPLY_MAX)) {
        bench_bad_reply(b, lsv_buf_head(&c->in), 64);
        bench_conn_fail(b, c, &b->st.closed, "read", EMSGSIZE);
    } else if (done > 0) {
        stream_queue(b, c, done, now_ns());
        if (bench_stream_flush(b, c) != LSV_OK)
            bench_conn_fail(b, c, &b->st.closed, "send", errno);
    }
}

static void udp_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    bench_t *b = ev_userdata(loop);
    bconn_t *c = container_of(w, bconn_t, rio);
    int n = recvmmsg(c->fd, b->rmsg, UDP_BATCH, MSG_DONTWAIT, NULL);
    int64_t now;
    (void)revents;

    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            b->st.connect++;    /* ECONNREFUSED: nobody on that port */
            snprintf(b->last_err, sizeof b->last_err, "receive: %s",
                     strerror(errno));
        }
        return;
    }
    now = now_ns();
    for (int i = 0; i < n; i++)
        udp_reply(b, c, b->riov[i].iov_base, b->rmsg[i].msg_len,
                  (b->rmsg[i].msg_hdr.msg_flags & MSG_TRUNC) != 0, now);
    udp_flush(b, c);
}

/* Idle: anything read is ignored; a close by the server is counted, and the
 * connection is opened again after the backoff. */
static void idle_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    bench_t *b = ev_userdata(loop);
    bconn_t *c = container_of(w, bconn_t, rio);
    (void)revents;
    (void)bench_stream_read(b, c);
}

/* ---- the run ---- */

/* Every SWEEP_S: connects, exchanges and datagrams past the timeout, and
 * connections whose backoff is over. */
static void sweep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    bench_t *b = ev_userdata(loop);
    int64_t now = now_ns(), tmo = (int64_t)(b->timeout * 1e9);
    (void)w;
    (void)revents;

    for (int i = 0; i < b->nconns; i++) {
        bconn_t *c = &b->conns[i];
        switch (c->state) {
        case ST_OFF:
            if (c->retry_at != 0 && c->retry_at <= now
                && b->connecting < CONNECT_WINDOW)
                conn_open(b, c);
            break;
        case ST_CONNECTING:
        case ST_HANDSHAKE:
            if (now - c->since > tmo)
                bench_conn_fail(b, c, &b->st.connect,
                                c->state == ST_CONNECTING ? "connect"
                                : "tls handshake", ETIMEDOUT);
            break;
        default:
            if (b->mode == MODE_UDP) {
                for (uint32_t k = 0; k < b->pipeline; k++)
                    if (c->slots[k].state == SLOT_INFLIGHT
                        && now - c->slots[k].sent > tmo) {
                        b->st.timeout++;
                        snprintf(b->last_err, sizeof b->last_err,
                                 "datagram: no answer within %g s",
                                 b->timeout);
                        udp_requeue(c, k);
                    }
                if (c->nqueued > 0 && !ev_is_active(&c->wio))
                    udp_flush(b, c);
            } else if ((b->mode == MODE_SHORT && now - c->since > tmo)
                       || (b->mode != MODE_SHORT && c->inflight > 0
                           && now - c->slots[c->head].sent > tmo)) {
                bench_conn_fail(b, c, &b->st.timeout, "reply", ETIMEDOUT);
            } else if (c->hs && now - c->since > tmo) {
                bench_conn_fail(b, c, &b->st.timeout, "upgrade", ETIMEDOUT);
            }
        }
    }
    open_more(b);
}

static void measure_begin(bench_t *b)
{
    memset(&b->st, 0, sizeof b->st);
    b->last_err[0] = b->bad_sample[0] = '\0';
    getrusage(RUSAGE_SELF, &b->ru0);
    b->t_begin = lsv_clock();
    b->measuring = 1;
    ev_timer_set(&b->phase, b->duration, 0.);
    ev_timer_start(b->loop, &b->phase);
}

/* Freezes the figures: callbacks already pending in this loop iteration
 * still run after ev_break, and must not change them. */
static void measure_end(bench_t *b)
{
    b->measured = lsv_clock() - b->t_begin;
    getrusage(RUSAGE_SELF, &b->ru1);
    b->final = b->st;
    b->measuring = 0;
    ev_break(b->loop, EVBREAK_ALL);
}

static void phase_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    bench_t *b = ev_userdata(loop);
    (void)w;
    (void)revents;
    if (b->measuring)
        measure_end(b);
    else
        measure_begin(b);
}

/* SIGINT, SIGTERM: end the run now and report what was measured. */
static void stop_signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    bench_t *b = ev_userdata(loop);
    (void)w;
    (void)revents;
    b->interrupted = 1;
    if (!b->measuring) measure_begin(b);
    measure_end(b);
}

static void hard_stop(int sig)
{
    static const char msg[] =
        PROG ": hard stop: the run did not end in time\n";
    (void)sig;
    if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) _exit(1);
    _exit(1);
}

/* Raises the open-file limit to what the connections need. Returns LSV_OK,
 * or LSV_ERR after printing why not. */
static int raise_nofile(const bench_t *b)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)b->nconns + 32;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need)
        return LSV_OK;
    rl.rlim_cur = need;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0) return LSV_OK;
    fprintf(stderr, PROG ": %d connections need %lu file descriptors; the "
            "limit is %lu (ulimit -n)\n", b->nconns, (unsigned long)need,
            (unsigned long)rl.rlim_max);
    return LSV_ERR;
}

/* Connects once, blocking, through lsv_net_connect: a server that is not
 * there fails here with one clear line, and the address that answered is
 * the one every connection uses (no resolving per connect). For udp the
 * connect only resolves; an absent server shows as no replies. */
static int probe(bench_t *b)
{
    char err[LSV_ERRLEN], where[LSV_ADDRSTRLEN];
    int fd = lsv_net_connect(&b->addr, PROBE_TIMEOUT, err);

    if (fd < 0) {
        fprintf(stderr, PROG ": %s\n", err);
        return LSV_ERR;
    }
    b->salen = sizeof b->sa;
    if (getpeername(fd, (struct sockaddr *)&b->sa, &b->salen) != 0) {
        fprintf(stderr, PROG ": cannot connect to %s: %s\n", b->name,
                strerror(errno));
        close(fd);
        return LSV_ERR;
    }
    close(fd);
    if (b->sa.ss_family != AF_UNIX) {
        lsv_net_format((struct sockaddr *)&b->sa, b->salen, where);
        snprintf(b->name, sizeof b->name, "%s", where);
    }
    return LSV_OK;
}

/* The TLS client context (--tls), or exit 1 with why: a bad --tls-ca
 * is known before any connect. */
static void tls_setup(bench_t *b)
{
    char err[LSV_ERRLEN];

    b->tlsc = bench_tls_new(b->tls_ca, b->addr.host, b->tls_sni,
                            b->tls_resume, err);
    if (b->tlsc == NULL) {
        fprintf(stderr, PROG ": %s\n", err);
        exit(1);
    }
}

/* Allocates everything the run needs, so the run itself allocates nothing
 * but a buffer for a reply split between reads. */
static void setup(bench_t *b)
{
    static void (*const read_cbs[])(struct ev_loop *, ev_io *, int) = {
        stream_read_cb, stream_read_cb, udp_read_cb, idle_read_cb,
        bench_ws_read_cb
    };

    b->line_len = b->size + 2;
    b->line = lsv_malloc(b->line_len);
    memset(b->line, 'x', b->size);
    memcpy(b->line + b->size, "\r\n", 2);
    b->digits = b->size < SEQ_DIGITS ? (int)b->size : SEQ_DIGITS;
    b->seq_mask = b->digits == 8 ? 0xffffffffu
                                 : (1u << (4 * b->digits)) - 1;

    b->dgram_cap = b->line_len + STAMP_LEN + 4096;
    b->rbuf_size = READ_SIZE;
    if (b->mode == MODE_UDP && b->rbuf_size < UDP_BATCH * b->dgram_cap)
        b->rbuf_size = UDP_BATCH * b->dgram_cap;
    b->rbuf = lsv_malloc(b->rbuf_size);
    if (b->mode == MODE_UDP) {
        b->tbuf = lsv_malloc(UDP_BATCH * b->line_len);
        for (int i = 0; i < UDP_BATCH; i++) {
            b->riov[i].iov_base = b->rbuf + (size_t)i * b->dgram_cap;
            b->riov[i].iov_len = b->dgram_cap;
            b->rmsg[i].msg_hdr.msg_iov = &b->riov[i];
            b->rmsg[i].msg_hdr.msg_iovlen = 1;
        }
    }

    b->reopen = conn_open;
    if (b->tls) tls_setup(b);
    if (b->mode == MODE_WS) bench_ws_setup(b);
    b->conns = lsv_calloc((size_t)b->nconns, sizeof *b->conns);
    for (int i = 0; i < b->nconns; i++) {
        bconn_t *c = &b->conns[i];
        c->fd = -1;
        c->backoff = BACKOFF_MIN_NS;
        ev_io_init(&c->rio, read_cbs[b->mode], -1, EV_READ);
        ev_io_init(&c->wio, conn_write_cb, -1, EV_WRITE);
        if (b->mode != MODE_IDLE)
            c->slots = lsv_calloc(b->pipeline, sizeof *c->slots);
        if (b->mode == MODE_UDP)
            c->queued = lsv_calloc(b->pipeline, sizeof *c->queued);
    }

    b->loop = ev_default_loop(0);
    ev_set_userdata(b->loop, b);
    ev_timer_init(&b->phase, phase_cb, 0., 0.);
    ev_timer_init(&b->sweep, sweep_cb, SWEEP_S, SWEEP_S);
    ev_signal_init(&b->sigint, stop_signal_cb, SIGINT);
    ev_signal_init(&b->sigterm, stop_signal_cb, SIGTERM);
}

static void run(bench_t *b)
{
    ev_timer_start(b->loop, &b->sweep);
    ev_signal_start(b->loop, &b->sigint);
    ev_signal_start(b->loop, &b->sigterm);
    ev_now_update(b->loop);
    b->t_start = lsv_clock();
    if (b->warmup > 0) {
        ev_timer_set(&b->phase, b->warmup, 0.);
        ev_timer_start(b->loop, &b->phase);
    } else {
        measure_begin(b);
    }
    open_more(b);
    ev_run(b->loop, 0);
}

int main(int argc, char **argv)
{
    bench_t *b = lsv_calloc(1, sizeof *b);
    struct sigaction sa;

    bench_parse_args(b, argc, argv);
    signal(SIGPIPE, SIG_IGN);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = hard_stop;
    sigaction(SIGALRM, &sa, NULL);
    alarm((unsigned)ceil(b->warmup + b->duration) + HARD_STOP_GRACE);

    if (raise_nofile(b) != LSV_OK || probe(b) != LSV_OK) return 1;
    setup(b);
    run(b);
    return bench_report(b);
}

/* ref_libev.c: the timestamp server in bare C on libev: the bench's limit. */
/*
 * Build:  cc -O2 -o build/ref_libev bench/ref_libev.c -lev
 *         (also warning-free with -std=c11 -Wall -Wextra -Wshadow
 *         -Wstrict-prototypes -Wmissing-prototypes -Wwrite-strings)
 * Run:    build/ref_libev -l tcp://127.0.0.1:0 -l udp://127.0.0.1:0
 *         build/ref_libev 127.0.0.1:0 udp
 *
 * Listeners are named as luaserv's -l names them: tcp://HOST:PORT,
 * udp://HOST:PORT, HOST:PORT or :PORT (TCP), [::1]:PORT. A bare argument
 * "udp" adds a UDP listener on the first TCP listener's host and real port
 * (useful with port 0). An argument ending in ".lua" is ignored, so a
 * driver can hand this binary luaserv's own command line. Each listener is
 * announced on stdout exactly as luaserv does:
 *     luaserv: listening on tcp 127.0.0.1:PORT
 * SIGTERM and SIGINT exit 0 at once, without draining.
 *
 * The protocol: every line (LF or CRLF) is answered with "[" + ctime()
 * without its newline + "] " + the line as received, terminator included;
 * a trailing unterminated line is answered at end of stream, and a line
 * longer than luaserv's default frame limit (64 KiB) closes the connection,
 * as luaserv does. Each UDP datagram is answered with one datagram.
 *
 * Why it is shaped this way: one read per wakeup into the connection's
 * buffer, every complete line found with memchr, all replies built into one
 * shared output buffer and sent with one write. Only when the socket says
 * EAGAIN does the rest move into the connection's own queue and the write
 * watcher start; past HIGH_WATER queued bytes reading pauses until the
 * queue falls below a quarter of it. The "[ctime] " prefix is rebuilt once
 * a second. UDP moves batches with recvmmsg/sendmmsg and answers with a
 * two-part iovec, so a datagram is never copied.
 */
#define _GNU_SOURCE
#include <ev.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define container_of(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#define PROG "ref_libev"
#define READ_SIZE (16u * 1024)          /* a connection's read buffer */
#define MAX_LINE (64u * 1024)           /* luaserv's default frame limit */
#define HIGH_WATER (1024u * 1024)       /* queued output that pauses reading */
#define LOW_WATER (HIGH_WATER / 4)      /* ... and resumes it */
#define FREE_CONNS_MAX 1024             /* closed conns kept for reuse */
#define ACCEPTS_PER_EVENT 256
#define ACCEPT_RETRY 0.1                /* seconds after EMFILE */
#define BACKLOG 511                     /* luaserv's default */
#define UDP_BATCH 32
#define UDP_BATCHES_PER_EVENT 8
#define DGRAM_MAX 65536
#define PREFIX_MAX 64
#define MAX_LISTEN 16
#define NAMELEN 128

enum { KIND_TCP, KIND_UDP };

/* Bytes data[off, off + len) wait to be sent; cap is the allocation. */
typedef struct out_buf {
    char *data;
    size_t off, len, cap;
} out_buf_t;

typedef struct conn {
    ev_io rio, wio;
    int fd;
    int eof;                /* the peer has finished sending */
    char *in;               /* received bytes not yet a whole line */
    size_t in_len, in_cap;
    out_buf_t out;          /* replies the socket refused; empty normally */
    struct conn *next_free;
} conn_t;

typedef struct listener {
    ev_io io;
    ev_timer retry;         /* restarts accepting after EMFILE */
    int kind;
    char name[NAMELEN];     /* HOST:PORT as bound, for the ready line */
} listener_t;

/* The reply prefix "[<ctime>] " and the second it was built for. */
static char prefix[PREFIX_MAX];
static size_t prefix_len;
static time_t prefix_time = (time_t)-1;

/* Replies of the current wakeup, before they reach the socket. It keeps its
 * largest size: at most MAX_LINE bytes of empty lines' replies, ~1.8 MB. */
static out_buf_t scratch;

static conn_t *free_conns;
static int nfree_conns;

/* UDP batch state: one slot per datagram, reused for every batch. */
static char rx_buf[UDP_BATCH][DGRAM_MAX];
static struct sockaddr_storage rx_addr[UDP_BATCH];
static struct iovec rx_iov[UDP_BATCH];
static struct mmsghdr rx_msg[UDP_BATCH];
static struct iovec tx_iov[UDP_BATCH][2];
static struct mmsghdr tx_msg[UDP_BATCH];

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (unlikely(!q)) {
        fprintf(stderr, PROG ": out of memory (%zu bytes)\n", n);
        abort();
    }
    return q;
}

/* Rebuilds the prefix when the second has changed. time() is a vDSO call,
 * so asking once per wakeup costs next to nothing. */
static void prefix_refresh(void)
{
    time_t now = time(NULL);
    if (likely(now == prefix_time)) return;
    char tmp[PREFIX_MAX];
    if (!ctime_r(&now, tmp)) return;    /* a year past 9999: keep the old */
    size_t n = strcspn(tmp, "\n");
    prefix[0] = '[';
    memcpy(prefix + 1, tmp, n);
    memcpy(prefix + 1 + n, "] ", 2);
    prefix_len = n + 3;
    prefix_time = now;
}

/* Makes room for n more bytes after the queued ones, sliding them to the
 * front before growing. */
static char *out_reserve(out_buf_t *o, size_t n)
{
    if (unlikely(o->off + o->len + n > o->cap)) {
        if (o->off) {
            memmove(o->data, o->data + o->off, o->len);
            o->off = 0;
        }
        if (o->len + n > o->cap) {
            size_t cap = o->cap ? o->cap : 64 * 1024;
            while (cap < o->len + n) cap *= 2;
            o->data = xrealloc(o->data, cap);
            o->cap = cap;
        }
    }
    return o->data + o->off + o->len;
}

static void out_free(out_buf_t *o)
{
    free(o->data);
    memset(o, 0, sizeof *o);
}

/* Appends "[ctime] " + line (terminator included) to o. */
static inline void append_reply(out_buf_t *o, const char *line, size_t n)
{
    char *d = out_reserve(o, prefix_len + n);
    memcpy(d, prefix, prefix_len);
    memcpy(d + prefix_len, line, n);
    o->len += prefix_len + n;
}

/* Answers every complete line in p[0, len) into o. Returns the bytes
 * consumed: everything up to and including the last LF. */
static size_t answer_lines(const char *p, size_t len, out_buf_t *o)
{
    const char *start = p, *end = p + len;
    const char *nl;
    while ((nl = memchr(start, '\n', (size_t)(end - start))) != NULL) {
        append_reply(o, start, (size_t)(nl + 1 - start));
        start = nl + 1;
    }
    return (size_t)(start - p);
}

/* --- connections ------------------------------------------------------- */

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents);

/* Takes ownership of fd. Reuses a closed conn and its read buffer when one
 * is kept. */
static void conn_open(struct ev_loop *loop, int fd)
{
    conn_t *c = free_conns;
    if (c) {
        free_conns = c->next_free;
        nfree_conns--;
    } else {
        c = xrealloc(NULL, sizeof *c);
        memset(c, 0, sizeof *c);
        c->in = xrealloc(NULL, READ_SIZE);
        c->in_cap = READ_SIZE;
    }
    c->fd = fd;
    c->eof = 0;
    c->in_len = 0;
    ev_io_init(&c->rio, conn_read_cb, fd, EV_READ);
    ev_io_init(&c->wio, conn_write_cb, fd, EV_WRITE);
    ev_io_start(loop, &c->rio);
}

/* Closes the socket and keeps c for the next accept, its read buffer back
 * at READ_SIZE; past FREE_CONNS_MAX it is freed. */
static void conn_close(struct ev_loop *loop, conn_t *c)
{
    ev_io_stop(loop, &c->rio);
    ev_io_stop(loop, &c->wio);
    close(c->fd);
    c->fd = -1;
    out_free(&c->out);
    if (nfree_conns >= FREE_CONNS_MAX) {
        free(c->in);
        free(c);
        return;
    }
    if (c->in_cap != READ_SIZE) {
        c->in = xrealloc(c->in, READ_SIZE);
        c->in_cap = READ_SIZE;
    }
    c->next_free = free_conns;
    free_conns = c;
    nfree_conns++;
}

/* Sends the replies this wakeup built in scratch with one write. Whatever
 * the socket refuses moves to c's own queue and the write watcher starts.
 * Returns 0, or -1 when c was closed. */
static int conn_send(struct ev_loop *loop, conn_t *c)
{
    size_t done = 0;
    while (done < scratch.len) {
        ssize_t n = write(c->fd, scratch.data + done, scratch.len - done);
        if (likely(n > 0)) {
            done += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        scratch.len = 0;
        conn_close(loop, c);
        return -1;
    }
    if (done < scratch.len) {
        size_t rest = scratch.len - done;
        memcpy(out_reserve(&c->out, rest), scratch.data + done, rest);
        c->out.len += rest;
        ev_io_start(loop, &c->wio);
        if (c->out.len > HIGH_WATER) ev_io_stop(loop, &c->rio);
    }
    scratch.len = 0;
    return 0;
}

/* One read, then every complete line answered. While older replies are
 * still queued (write watcher running) new ones join that queue so order
 * holds; otherwise they go out at once. */
static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    conn_t *c = container_of(w, conn_t, rio);
    ssize_t n;
    (void)revents;

    do {
        n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    } while (unlikely(n < 0 && errno == EINTR));
    if (unlikely(n < 0)) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        conn_close(loop, c);
        return;
    }

    prefix_refresh();
    out_buf_t *o = c->out.len ? &c->out : &scratch;
    if (unlikely(n == 0)) {
        /* End of stream: a last unterminated line is still a line. */
        c->eof = 1;
        ev_io_stop(loop, &c->rio);
        if (c->in_len) append_reply(o, c->in, c->in_len);
        c->in_len = 0;
    } else {
        c->in_len += (size_t)n;
        size_t used = answer_lines(c->in, c->in_len, o);
        if (used) {
            c->in_len -= used;
            if (c->in_len) memmove(c->in, c->in + used, c->in_len);
        }
        /* What is left is part of one line. Give it room to grow up to
         * the limit (the buffer stays grown until the conn closes); a line
         * that outgrows the limit ends the connection. */
        if (unlikely(c->in_cap - c->in_len < READ_SIZE / 4)) {
            if (c->in_cap >= MAX_LINE) {
                if (c->in_len >= MAX_LINE) {
                    scratch.len = 0;
                    conn_close(loop, c);
                    return;
                }
            } else {
                c->in_cap *= 2;
                if (c->in_cap > MAX_LINE) c->in_cap = MAX_LINE;
                c->in = xrealloc(c->in, c->in_cap);
            }
        }
    }

    if (o == &scratch) {
        if (conn_send(loop, c) < 0) return;
    } else if (c->out.len > HIGH_WATER) {
        ev_io_stop(loop, &c->rio);
    }
    if (c->eof && c->out.len == 0) conn_close(loop, c);
}

static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    conn_t *c = container_of(w, conn_t, wio);
    (void)revents;

    while (c->out.len) {
        ssize_t n = write(c->fd, c->out.data + c->out.off, c->out.len);
        if (likely(n > 0)) {
            c->out.off += (size_t)n;
            c->out.len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        conn_close(loop, c);
        return;
    }
    if (c->out.len == 0) {
        ev_io_stop(loop, &c->wio);
        out_free(&c->out);
        if (c->eof) {
            conn_close(loop, c);
            return;
        }
    }
    if (!c->eof && !ev_is_active(&c->rio) && c->out.len < LOW_WATER)
        ev_io_start(loop, &c->rio);
}

/* --- listeners --------------------------------------------------------- */

/* Accepts until the queue is empty (or ACCEPTS_PER_EVENT). Out of file
 * descriptors, it stops watching the listener and retries from a timer
 * rather than spinning on a socket that stays readable. */
static void listener_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    listener_t *l = container_of(w, listener_t, io);
    static ev_tstamp last_warn;
    (void)revents;

    for (int i = 0; i < ACCEPTS_PER_EVENT; i++) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (unlikely(fd < 0)) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM) {
                if (ev_now(loop) - last_warn > 5.0) {
                    fprintf(stderr, PROG ": accept: %s\n", strerror(errno));
                    last_warn = ev_now(loop);
                }
                ev_io_stop(loop, &l->io);
                ev_timer_set(&l->retry, ACCEPT_RETRY, 0.0);
                ev_timer_start(loop, &l->retry);
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn_open(loop, fd);
    }
}

static void listener_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    listener_t *l = container_of(w, listener_t, retry);
    (void)revents;
    ev_io_start(loop, &l->io);
}

/* Receives up to UDP_BATCH datagrams per call and answers them with one
 * sendmmsg. A reply the socket will not take now is dropped, as UDP
 * allows; one it can never take (EMSGSIZE) is skipped. */
static void udp_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop; (void)revents;

    for (int b = 0; b < UDP_BATCHES_PER_EVENT; b++) {
        for (int i = 0; i < UDP_BATCH; i++)
            rx_msg[i].msg_hdr.msg_namelen = sizeof rx_addr[i];
        int n = recvmmsg(w->fd, rx_msg, UDP_BATCH, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        prefix_refresh();
        int m = 0;
        for (int i = 0; i < n; i++) {
            if (unlikely(rx_msg[i].msg_hdr.msg_flags & MSG_TRUNC)) continue;
            tx_iov[m][0].iov_base = prefix;
            tx_iov[m][0].iov_len = prefix_len;
            tx_iov[m][1].iov_base = rx_buf[i];
            tx_iov[m][1].iov_len = rx_msg[i].msg_len;
            tx_msg[m].msg_hdr.msg_name = &rx_addr[i];
            tx_msg[m].msg_hdr.msg_namelen = rx_msg[i].msg_hdr.msg_namelen;
            tx_msg[m].msg_hdr.msg_iov = tx_iov[m];
            tx_msg[m].msg_hdr.msg_iovlen = 2;
            m++;
        }
        for (int sent = 0; sent < m;) {
            int r = sendmmsg(w->fd, tx_msg + sent, (unsigned)(m - sent),
                             MSG_DONTWAIT);
            if (r > 0) {
                sent += r;
            } else if (r < 0 && errno == EINTR) {
                continue;
            } else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                break;
            } else {
                sent++;
            }
        }
        if (n < UDP_BATCH) return;
    }
}

static void udp_setup(void)
{
    for (int i = 0; i < UDP_BATCH; i++) {
        rx_iov[i].iov_base = rx_buf[i];
        rx_iov[i].iov_len = sizeof rx_buf[i];
        rx_msg[i].msg_hdr.msg_name = &rx_addr[i];
        rx_msg[i].msg_hdr.msg_iov = &rx_iov[i];
        rx_msg[i].msg_hdr.msg_iovlen = 1;
    }
}

/* Splits "tcp://HOST:PORT", "udp://HOST:PORT", "HOST:PORT", ":PORT" or
 * "[V6]:PORT" into kind, host (empty for any) and port, in place. Returns
 * 0, or -1 for a name it does not understand. */
static int parse_addr(char *s, int *kind, char **host, char **port)
{
    *kind = KIND_TCP;
    if (strncmp(s, "tcp://", 6) == 0) {
        s += 6;
    } else if (strncmp(s, "udp://", 6) == 0) {
        *kind = KIND_UDP;
        s += 6;
    } else if (strstr(s, "://")) {
        return -1;
    }
    char *colon;
    if (*s == '[') {
        char *close_br = strchr(s, ']');
        if (!close_br || close_br[1] != ':') return -1;
        *close_br = '\0';
        *host = s + 1;
        colon = close_br + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon) return -1;
        *colon = '\0';
        *host = s;
    }
    *port = colon + 1;
    return **port ? 0 : -1;
}

/* "HOST:PORT" of a bound socket, bracketing an IPv6 host. */
static void sock_name(int fd, char out[NAMELEN])
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
            port = ntohs(a->sin6_port);
            snprintf(out, NAMELEN, "[%s]:%d", host, port);
            return;
        }
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        port = ntohs(a->sin_port);
    }
    snprintf(out, NAMELEN, "%s:%d", host, port);
}

/* Binds a TCP (listening) or UDP socket on host:port. Returns the
 * non-blocking fd, or -1 after printing why. */
static int open_socket(int kind, const char *host, const char *port)
{
    struct addrinfo hints, *res, *ai;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = kind == KIND_TCP ? SOCK_STREAM : SOCK_DGRAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(*host ? host : NULL, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, PROG ": %s:%s: %s\n", host, port, gai_strerror(rc));
        return -1;
    }
    int fd = -1, saved = 0;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family,
                    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        int one = 1, zero = 0;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (ai->ai_family == AF_INET6 && !*host)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
            (kind == KIND_UDP || listen(fd, BACKLOG) == 0))
            break;
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        fprintf(stderr, PROG ": %s %s:%s: %s\n",
                kind == KIND_TCP ? "tcp" : "udp", host, port, strerror(saved));
    return fd;
}

static void listener_start(struct ev_loop *loop, listener_t *l, int kind,
                           int fd)
{
    l->kind = kind;
    sock_name(fd, l->name);
    if (kind == KIND_TCP) {
        ev_io_init(&l->io, listener_accept_cb, fd, EV_READ);
        ev_timer_init(&l->retry, listener_retry_cb, ACCEPT_RETRY, 0.0);
    } else {
        ev_io_init(&l->io, udp_read_cb, fd, EV_READ);
    }
    ev_io_start(loop, &l->io);
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w; (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void usage(FILE *f)
{
    fprintf(f,
"usage: " PROG " [-l ADDR]... [ADDR]... [udp]\n"
"ADDR: tcp://HOST:PORT, udp://HOST:PORT, HOST:PORT or :PORT (TCP),\n"
"[::1]:PORT. \"udp\" adds UDP on the first TCP listener's host and port.\n"
"Arguments ending in .lua are ignored. SIGTERM/SIGINT exit 0.\n");
}

int main(int argc, char **argv)
{
    static listener_t listeners[MAX_LISTEN];
    int nlisten = 0, want_udp_mirror = 0;
    char mirror_host[NAMELEN * 2];      /* the first TCP listener's host */
    int have_mirror_host = 0;
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    if (!loop) {
        fprintf(stderr, PROG ": cannot start libev\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    udp_setup();

    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "-l") == 0 || strcmp(a, "--listen") == 0) {
            if (++i == argc) {
                usage(stderr);
                return 2;
            }
            a = argv[i];
        } else if (strcmp(a, "udp") == 0) {
            want_udp_mirror = 1;
            continue;
        } else if (strlen(a) > 4 && strcmp(a + strlen(a) - 4, ".lua") == 0) {
            continue;
        }
        int kind;
        char *host, *port, spec[NAMELEN * 2];
        snprintf(spec, sizeof spec, "%s", a);   /* argv stays as ps shows it */
        if (parse_addr(spec, &kind, &host, &port) < 0 ||
            nlisten == MAX_LISTEN) {
            fprintf(stderr, PROG ": bad listener '%s'\n", a);
            usage(stderr);
            return 2;
        }
        int fd = open_socket(kind, host, port);
        if (fd < 0) return 1;
        if (kind == KIND_TCP && !have_mirror_host) {
            snprintf(mirror_host, sizeof mirror_host, "%s", host);
            have_mirror_host = 1;
        }
        listener_start(loop, &listeners[nlisten++], kind, fd);
    }
    if (want_udp_mirror) {
        listener_t *t = NULL;
        for (int i = 0; i < nlisten && !t; i++)
            if (listeners[i].kind == KIND_TCP) t = &listeners[i];
        if (!t || !have_mirror_host || nlisten == MAX_LISTEN) {
            fprintf(stderr, PROG ": \"udp\" needs a TCP listener first\n");
            return 2;
        }
        char port[16];
        snprintf(port, sizeof port, "%s", strrchr(t->name, ':') + 1);
        int fd = open_socket(KIND_UDP, mirror_host, port);
        if (fd < 0) return 1;
        listener_start(loop, &listeners[nlisten++], KIND_UDP, fd);
    }
    if (nlisten == 0) {
        usage(stderr);
        return 2;
    }

    static ev_signal sigterm_w, sigint_w;
    ev_signal_init(&sigterm_w, signal_cb, SIGTERM);
    ev_signal_init(&sigint_w, signal_cb, SIGINT);
    ev_signal_start(loop, &sigterm_w);
    ev_signal_start(loop, &sigint_w);

    for (int i = 0; i < nlisten; i++)
        fprintf(stdout, "luaserv: listening on %s %s\n",
                listeners[i].kind == KIND_TCP ? "tcp" : "udp",
                listeners[i].name);
    fflush(stdout);

    ev_run(loop, 0);
    return 0;
}

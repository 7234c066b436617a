/* bench_conn.h: luaserv-bench's shared state, and bench_conn.c: what
 * every mode does with a connection (write its queue, read once, fail and
 * retry it, count a bad reply). The bottom of the tool's layers: bench.c
 * (the run) and bench_ws.c (the websocket mode) call into it, it calls
 * neither; bench_args.c (the command line) and bench_report.c (the
 * result) read the state through bench.h.
 *
 * One bench_t holds everything: bench_parse_args() fills its options,
 * bench.c allocates the rest before the run and runs it, and
 * bench_report() prints what the measured window counted. Nothing here
 * is shared between threads; there is one loop. */
#ifndef LSV_BENCH_CONN_H
#define LSV_BENCH_CONN_H

#include "lsv.h"
#include "buf.h"
#include "net.h"
#include "hist.h"
#include "bench_tls.h"

#include <ev.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <sys/socket.h>

#define PROG "luaserv-bench"
#define DEFAULT_HOST "127.0.0.1"
#define DEFAULT_PORT 21567
#define DEFAULT_CONNS 50
#define DEFAULT_SHORT_CONNS 32

/* Datagrams per sendmmsg / recvmmsg. */
#define UDP_BATCH 64

/* "[" + ctime (24 chars) + "] " before the echoed line. */
#define CTIME_LEN 24
#define STAMP_LEN (CTIME_LEN + 3)

#define NAMELEN 300

/* A connection failing again before a good reply waits this long before
 * its next try, doubling up to the max. */
#define BACKOFF_MIN_NS 50000000LL
#define BACKOFF_MAX_NS 1000000000LL

enum { MODE_PERSISTENT, MODE_SHORT, MODE_UDP, MODE_IDLE, MODE_WS };
enum { CHECK_TIMESTAMP, CHECK_ECHO, CHECK_LINE };

/* NULL-ended, indexed by MODE_* and CHECK_* (bench_args.c). */
extern const char *const bench_mode_names[];
extern const char *const bench_check_names[];

/* ST_HANDSHAKE: --tls, connected, the handshake under way (counted in
 * b->connecting, as a connect is). */
enum { ST_OFF, ST_CONNECTING, ST_HANDSHAKE, ST_OPEN };
enum { SLOT_QUEUED, SLOT_INFLIGHT };

/* One request: when it went out and its number. */
typedef struct slot {
    int64_t sent;
    uint32_t seq;
    uint32_t state;     /* udp: SLOT_* */
} slot_t;

/* A connection (a datagram socket in udp mode). Stream modes keep slots
 * as a ring, oldest at head, since replies come in order; udp keeps them
 * as a set, each slot queued or in flight. */
typedef struct bconn {
    ev_io rio, wio;
    int fd;
    int state;              /* ST_* */
    int64_t since;          /* connect started; short: the exchange */
    int64_t retry_at;       /* ST_OFF: next try; 0 = never tried */
    int64_t backoff;
    uint32_t seq;           /* number of the next request */
    uint32_t head, inflight;
    slot_t *slots;          /* pipeline of them */
    uint32_t *queued;       /* udp: slot indices waiting to be sent */
    uint32_t nqueued;
    int hs;                 /* websocket: the upgrade's 101 not in yet */
    lsv_buf_t in;           /* a reply split between reads */
    lsv_buf_t out;          /* requests the kernel did not take yet */
    SSL *ssl;               /* --tls: this connection's, or NULL */
    SSL_SESSION *sess;      /* --tls-resume: the newest session sent */
} bconn_t;

/* What a measured window counted. */
typedef struct stats {
    uint64_t requests;      /* good replies */
    uint64_t bad;           /* replies that failed the check */
    uint64_t closed;        /* connections the server closed or reset */
    uint64_t connect;       /* failed connects (udp: refused sends) */
    uint64_t timeout;       /* requests unanswered within the timeout */
    uint64_t late;          /* udp: replies after their timeout */
    uint64_t handshakes;    /* --tls: handshakes done */
    uint64_t resumed;       /* ... of which resumed a session */
    lsv_hist_t lat;         /* latency of the good replies */
} stats_t;

typedef struct bench {
    /* options */
    int mode, check, nconns, json;
    uint32_t pipeline;
    size_t size;            /* line length without CRLF */
    double duration, warmup, timeout;
    lsv_addr_t addr;
    char name[NAMELEN];
    int tls, tls_resume;    /* --tls, --tls-resume */
    const char *tls_ca, *tls_sni;   /* --tls-ca, --tls-sni */
    bench_tls_t *tlsc;      /* the client context (--tls) */
    const char *tls_version;        /* the last handshake's */
    /* the server, as the probe connection found it */
    struct sockaddr_storage sa;
    socklen_t salen;
    /* the run */
    struct ev_loop *loop;
    ev_timer phase, sweep;
    ev_signal sigint, sigterm;
    bconn_t *conns;
    int cursor;             /* next never-opened connection */
    int connecting, open, ready, interrupted, measuring;
    double t_start, t_begin, measured, ready_after;
    struct rusage ru0, ru1;
    char *line;             /* request template: x...x, digits, CRLF */
    size_t line_len;        /* websocket: the payload, without the CRLF */
    char *ws_frame;         /* websocket: the masked frame template */
    size_t ws_frame_len, ws_hdr;    /* its length, its header's */
    char *ws_upgrade;       /* websocket: the upgrade request */
    size_t ws_upgrade_len;
    const char *ws_path;    /* its target (--path) */
    int digits;
    uint32_t seq_mask;
    char *rbuf;
    size_t rbuf_size, dgram_cap;
    char *tbuf;             /* udp: datagrams of one sendmmsg */
    struct mmsghdr rmsg[UDP_BATCH];
    struct iovec riov[UDP_BATCH];
    stats_t st, final;
    uint64_t requests_total;    /* good replies, warmup included */
    char last_err[128];
    char bad_sample[80];
    /* bench.c's connect (conn_open), which bench_conn_fail calls for a
     * retry at once: handed down by the run, so that bench_conn.c calls
     * up into no mode's code. */
    void (*reopen)(struct bench *b, bconn_t *c);
} bench_t;

/* ---- shared by bench.c and bench_ws.c (inline: the hot path) ---- */

static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Writes seq as the request's last digits (lowercase hex). */
static inline void put_seq(char *p, uint32_t seq, int digits)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = digits - 1; i >= 0; i--, seq >>= 4)
        p[i] = hex[seq & 15];
}

/* Whether p holds exactly request line seq (the template with its number):
 * b->line_len bytes. */
static inline int is_request(bench_t *b, const char *p, uint32_t seq)
{
    put_seq(b->line + b->size - b->digits, seq, b->digits);
    return memcmp(p, b->line, b->line_len) == 0;
}

/* Counts a good reply to a request sent ns ago. */
static inline void record(bench_t *b, bconn_t *c, int64_t ns)
{
    uint64_t v = ns > 0 ? (uint64_t)ns : 0;
    b->st.requests++;
    b->requests_total++;
    lsv_hist_record(&b->st.lat, v);
    c->backoff = 0;
}

/* bench_conn.c: a reply that failed the check (counted, the first
 * kept); closing c (ST_OFF after); a connection's failure (closed,
 * counted in *counter, retried); writing c->out (LSV_ERR with errno on
 * failure); one read into b->rbuf (0 when nothing came or the connection
 * failed and was closed). */
void bench_bad_reply(bench_t *b, const char *p, size_t n);
void bench_conn_close(bench_t *b, bconn_t *c);
void bench_conn_fail(bench_t *b, bconn_t *c, uint64_t *counter,
                     const char *what, int err);
int bench_stream_flush(bench_t *b, bconn_t *c);
size_t bench_stream_read(bench_t *b, bconn_t *c);

#endif

/* conn_int.h: the conn struct and what the conn's files share, layered
 * conn.c (lifecycle) under conn_out.c (output) under conn_in.c (creation,
 * input, callbacks); nothing outside src/core includes it. */
#ifndef LSV_CONN_INT_H
#define LSV_CONN_INT_H

#include "lsv.h"
#include "listener.h"
#include "server.h"

#include <float.h>
#include <netinet/in.h>
#include <string.h>

enum {
    LSV_CONN_PAUSED = 1 << 0,     /* lsv_conn_pause */
    LSV_CONN_BLOCKED = 1 << 1,    /* output over the high-water mark */
    LSV_CONN_EOF = 1 << 2,        /* the peer will send nothing more */
    LSV_CONN_CLOSING = 1 << 3,    /* no more input; closes once flushed */
    LSV_CONN_ABORT = 1 << 4,      /* closing without flushing */
    LSV_CONN_PENDING = 1 << 5,    /* on srv->pending */
    LSV_CONN_DRAIN = 1 << 7,      /* the server is stopping */
    LSV_CONN_READING = 1 << 8,    /* io watches for input */
    LSV_CONN_WRITING = 1 << 9,    /* io watches for output room */
    LSV_CONN_TIMER = 1 << 10,     /* timer armed */
    LSV_CONN_PULL = 1 << 11,      /* its type takes frames itself */
    LSV_CONN_OUTBOUND = 1 << 12,  /* made by lsv_conn_outbound */
    LSV_CONN_CONNECTING = 1 << 13,/* outbound connect in progress */
    LSV_CONN_FULL = 1 << 14,      /* pull read-ahead is full */
    LSV_CONN_AGAIN = 1 << 15,     /* on srv->again or srv->again_next */
    LSV_CONN_PARTIAL = 1 << 16,   /* the buffer ends in an incomplete frame */
    LSV_CONN_WATCH = 1 << 17,     /* the timer watches a waiting write */
    LSV_CONN_PROXY = 1 << 18,     /* peer.proxy holds the PROXY header's */
    LSV_CONN_HANDSHAKE = 1 << 19  /* outbound: connected, its transport's
                                   * handshake (TLS) in progress */
};

/* Ordered so that it packs: its size decides the allocator's chunk, what
 * every idle conn costs (bench/idle_mem.py). */
struct lsv_conn {
    lsv_listener_t *listener;     /* outbound: srv->outbound_listener */
    const struct lsv_conn_type *type;
    const struct lsv_transport *transport;   /* how bytes reach fd */
    void *data;                   /* the user's (lsv_conn_data) */
    lsv_conn_t *prev, *next;      /* srv->conns or srv->outbound */
    lsv_conn_t *next_pending;     /* srv->pending */
    lsv_conn_t *next_again;       /* srv->again */
    ev_io io;                     /* READING and WRITING's events */
    ev_timer timer;               /* idle timeout, write watch, linger */
    lsv_buf_t in;
    lsv_buf_t out;
    lsv_frame_ref_t *framing;     /* shared; its spec is c's framing */
    size_t hint;                  /* push: the framer's resume state */
    uint64_t id;
    ev_tstamp last_active;
    ev_tstamp started;
    uint64_t nin, nout;           /* bytes, for the access log and conns */
    uint64_t nmsg;
    ev_tstamp out_since;          /* last output progress: a send took
                                   * bytes, or output was queued onto none */
    const char *close_reason;     /* static string */
    float timeout;                /* idle timeout, 0 = none (timeout_of) */
    uint32_t flags;
    uint16_t busy;                /* holds (callbacks in progress) */
    uint16_t peer_len;            /* of peer (the fd is io's) */
    /* With LSV_CONN_PROXY the header's info (owned) names the peer, so
     * the room that would hold its address holds the pointer instead,
     * as bytes (lsv_conn_proxy): a pointer field of its own would cost
     * every conn 16 bytes of allocator chunk (bench/idle_mem.py). */
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
        unsigned char proxy[sizeof(lsv_proxy_info_t *)];
    } peer;
};

/* c's framing for a conn accepted on l with spec: a new reference to the
 * one l's last conns share when spec frames alike, else to a new one that
 * l's next conns share. Aborts out of memory, as the conn's own
 * allocation does. (conn_info.c) */
lsv_frame_ref_t *lsv_conn_share_framing(lsv_listener_t *l,
                                        const lsv_frame_spec_t *spec);

/* c's server. */
static inline lsv_server_t *lsv_conn_srv(const lsv_conn_t *c)
{
    return c->listener->srv;
}

/* --- conn.c: the lifecycle, under conn_out.c and conn_in.c ------------- */

/* The watcher helpers below are inline, as they were static in one
 * conn.c before it was layered: the hot path of every file calls them. */

/* Sets c's one io watcher to what its flags ask: readable while READING,
 * writable while WRITING (also a connect in progress), stopped for
 * neither. A change restarts it, which drops an event it had pending;
 * the level-triggered backend reports it again on the next turn. */
static inline void lsv_conn_io_update(lsv_conn_t *c)
{
    int want = ((c->flags & LSV_CONN_READING) ? EV_READ : 0) |
               ((c->flags & LSV_CONN_WRITING) ? EV_WRITE : 0);
    struct ev_loop *loop = lsv_conn_srv(c)->loop;
    ev_io_stop(loop, &c->io);
    if (want == 0) return;
    ev_io_modify(&c->io, want);
    ev_io_start(loop, &c->io);
}

/* Reads unless something holds reading off (pause, backpressure, EOF, a
 * full read-ahead, a connect or its handshake in progress, closing); a
 * read is scheduled at once for bytes the transport holds (TLS records
 * read ahead), which make the socket no readier. Out of line (conn.c):
 * it calls into conn.c, and nothing here may. */
void lsv_conn_start_reading(lsv_conn_t *c);

static inline void lsv_conn_stop_reading(lsv_conn_t *c)
{
    if (!(c->flags & LSV_CONN_READING)) return;
    c->flags &= ~LSV_CONN_READING;
    lsv_conn_io_update(c);
}

/* Watches for c's socket taking output (on) or stops (off). */
static inline void lsv_conn_watch_writable(lsv_conn_t *c, int on)
{
    if (!!(c->flags & LSV_CONN_WRITING) == !!on) return;
    if (on) c->flags |= LSV_CONN_WRITING;
    else c->flags &= ~LSV_CONN_WRITING;
    lsv_conn_io_update(c);
}

/* Asks for one more pass over c's input on the next loop turn (srv's
 * again list, run by lsv_conn_run_again in conn_in.c). */
void lsv_conn_schedule_read(lsv_conn_t *c);

/* (Re)arms c's one timer to fire after seconds. */
void lsv_conn_arm_timer(lsv_conn_t *c, double after);

/* Gives an empty buffer's memory back to the pool, so an idle connection
 * holds no buffers. */
static inline void lsv_conn_release_buf(lsv_server_t *srv, lsv_buf_t *b)
{
    if (b->data == NULL || b->len) return;
    if (b->cap == LSV_READ_SIZE)
        lsv_server_put_buf(srv, b->data);
    else
        free(b->data);
    memset(b, 0, sizeof *b);
}

/* Gives b a pooled buffer when it has none. */
static inline void lsv_conn_ensure_buf(lsv_server_t *srv, lsv_buf_t *b)
{
    if (b->data) return;
    b->data = lsv_server_get_buf(srv);
    b->cap = LSV_READ_SIZE;
    b->start = b->len = 0;
}

/* A timeout in seconds as c->timeout keeps it (a float: 7 digits, as a
 * timer needs): 0 for none, and a positive one never rounds to 0. */
static inline float lsv_conn_timeout_of(double seconds)
{
    if (!(seconds > 0)) return 0;
    if (seconds < FLT_MIN) return FLT_MIN;
    return seconds < FLT_MAX ? (float)seconds : FLT_MAX;
}

/* Frees c once nothing holds it: tells its user (type->closed), closes the
 * fd, logs the access line. Deferred while c is held. */
void lsv_conn_finish(lsv_conn_t *c);

/* After a call chain on c unwinds: finish a close it asked for (may free
 * c). */
void lsv_conn_settle(lsv_conn_t *c);

/* Tells c's user of a failure (type->error), with c held. */
void lsv_conn_report(lsv_conn_t *c, const char *msg);

/* --- conn_out.c: writing, for conn_in.c's callbacks ----------------------- */

/* c's socket takes output, or its outbound connect ended (may free c). */
void lsv_conn_writable(lsv_conn_t *c);

/* One step of c's outbound handshake (LSV_CONN_HANDSHAKE), on the io
 * event it waits for: waits for the next one, or ends the connect
 * (type->connected hears 0, or EPROTO and c closes). May free c. */
void lsv_conn_handshake_step(lsv_conn_t *c);

/* c's timer fired while it watches a waiting write: reports a write that
 * has made no progress for the idle timeout, or re-arms for the rest. */
void lsv_conn_write_timer(lsv_conn_t *c);

/* --- conn_in.c ------------------------------------------------------------ */

/* A partial frame may owe the peer interim replies (HTTP's 100 Continue,
 * WebSocket's pongs between fragments; lsv_frame_interim): queued past
 * the output cap and dropped if memory is short (the peer then sends its
 * body after its own wait), so it never fails or frees c. */
void lsv_conn_send_interim(lsv_conn_t *c, const lsv_frame_spec_t *spec,
                           size_t *hint);

#endif

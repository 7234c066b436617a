/* conn_int.h: the conn struct and what conn.c and conn_out.c share;
 * nothing outside src/core includes it. */
#ifndef LSV_CONN_INT_H
#define LSV_CONN_INT_H

#include "lsv.h"
#include "listener.h"
#include "server.h"

#include <netinet/in.h>

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
    LSV_CONN_PROXY = 1 << 18      /* peer.proxy holds the PROXY header's */
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

/* conn.c's watchers, buffers and lifecycle, for conn_out.c. */
void lsv_conn_stop_reading(lsv_conn_t *c);
void lsv_conn_arm_timer(lsv_conn_t *c, double after);
void lsv_conn_ensure_buf(lsv_server_t *srv, lsv_buf_t *b);
/* A partial frame may owe the peer interim replies (HTTP's 100 Continue,
 * WebSocket's pongs between fragments; lsv_frame_interim): queued past the output cap and dropped if memory
 * is short (the peer then sends its body after its own wait), so it
 * never fails or frees c. (conn_out.c) */
void lsv_conn_send_interim(lsv_conn_t *c, const lsv_frame_spec_t *spec,
                           size_t *hint);
/* Tells c's user of a failure (type->error), with c held. */
void lsv_conn_report(lsv_conn_t *c, const char *msg);

#endif

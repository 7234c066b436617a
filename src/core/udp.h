/* udp.h: datagram listeners (UDP and unix datagram). */
#ifndef LSV_UDP_H
#define LSV_UDP_H

#include "lsv.h"
#include "listener.h"

/* The light conn of a datagram listener: the current sender, and the
 * replies of the batch being handled (conn:write() output and returned
 * values append to it). */
struct lsv_dgram {
    lsv_listener_t *listener;
    int in_call;            /* on_message is running for `peer` */
    int ud_ref;             /* registry ref to the Lua userdata */
    lsv_buf_t reply;        /* replies of the current batch, back to back */
    int has_reply;          /* the current call wrote or returned a reply */
    uint32_t reply_start;   /* where the current call's reply begins */
    socklen_t peer_len;
    struct sockaddr_storage peer;
    uint32_t drops_seen;    /* the kernel's last SO_RXQ_OVFL count */
};

/* Seconds a graceful stop spends answering datagrams already queued on a
 * datagram listener before closing it. */
#define LSV_UDP_DRAIN_SECONDS 1.0

/* Sets up the datagram state of a listener (owned by it). */
void lsv_udp_init(lsv_listener_t *l);
void lsv_udp_free(lsv_listener_t *l);

/* Applies the listener's rcvbuf and sndbuf, and asks the kernel to report
 * its drop count (SO_RXQ_OVFL) with received datagrams. Logs problems. */
void lsv_udp_setup(lsv_listener_t *l);

/* Answers the datagrams already queued on l, until the socket has none
 * or LSV_UDP_DRAIN_SECONDS pass; for a graceful stop, before closing. */
void lsv_udp_drain(lsv_listener_t *l);

/* The read watcher callback of a datagram listener. */
void lsv_udp_read_cb(struct ev_loop *loop, ev_io *w, int revents);

/* The biggest datagram luaserv receives or replies with. */
#define LSV_DGRAM_MAX 65536

/* Appends to the reply of the datagram being handled. Returns LSV_ERR when
 * no call is running, or when the reply would pass LSV_DGRAM_MAX bytes or
 * memory runs out (nothing is appended then). */
int lsv_udp_write(lsv_dgram_t *d, const char *p, size_t n);

#endif

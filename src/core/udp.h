/* udp.h: datagram listeners (UDP and unix datagram). */
#ifndef LSV_UDP_H
#define LSV_UDP_H

#include "lsv.h"
#include "buf.h"
#include "server.h"

#include <sys/socket.h>

/* The light conn of a datagram listener: the current sender, and the
 * replies of the batch being handled (conn:write() output and returned
 * values append to it). */
struct lsv_dgram {
    lsv_listener_t *listener;
    int in_call;            /* hooks->datagram is running for `peer` */
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

/* Makes l (just opened, of a datagram kind) a datagram listener: its
 * state (owned by it), its read watcher, and its start (rcvbuf, sndbuf,
 * the kernel's drop count), graceful-stop drain (the datagrams already
 * queued, up to LSV_UDP_DRAIN_SECONDS) and free. */
void lsv_udp_attach(lsv_listener_t *l);

/* The biggest datagram luaserv receives or replies with. */
#define LSV_DGRAM_MAX 65536

/* Appends to the reply of the datagram being handled. Returns LSV_ERR when
 * no call is running, or when the reply would pass LSV_DGRAM_MAX bytes or
 * memory runs out (nothing is appended then). */
int lsv_udp_write(lsv_dgram_t *d, const char *p, size_t n);

#endif

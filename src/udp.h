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
    socklen_t peer_len;
    struct sockaddr_storage peer;
};

/* Sets up the datagram state of a listener (owned by it). */
void lsv_udp_init(lsv_listener_t *l);
void lsv_udp_free(lsv_listener_t *l);

/* The read watcher callback of a datagram listener. */
void lsv_udp_read_cb(struct ev_loop *loop, ev_io *w, int revents);

/* Appends to the reply of the datagram being handled. Returns LSV_ERR when
 * no call is running. */
int lsv_udp_write(lsv_dgram_t *d, const char *p, size_t n);

#endif

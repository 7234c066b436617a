/* listener.h: listening sockets, stream and datagram. */
#ifndef LSV_LISTENER_H
#define LSV_LISTENER_H

#include "lsv.h"
#include "net.h"
#include "server.h"


struct lsv_listener {
    lsv_listener_t *next;
    lsv_server_t *srv;
    lsv_addr_t addr;
    int fd;
    int handler_ref;            /* registry ref to the handler table */
    lsv_frame_spec_t framing;   /* the handler's default framing */
    char name[LSV_ADDRSTRLEN + 16];  /* "tcp://127.0.0.1:21567" */
    ev_io io;
    ev_timer pause_timer;       /* restarts accepting after EMFILE */
    ev_tstamp last_pause_log;
    uint64_t paused_count;      /* pauses not yet logged */
    lsv_dgram_t *dgram;         /* datagram kinds: the light conn state */
};

/* Binds a listener for a and links it into srv->listeners (not started).
 * Returns it, or NULL with a message in err (errno set). */
lsv_listener_t *lsv_listener_open(lsv_server_t *srv, const lsv_addr_t *a,
                                  char err[LSV_ERRLEN]);

/* Starts watching every listener. */
void lsv_listener_start_all(lsv_server_t *srv);

/* Stops and closes every listener (unlinking unix socket files) but keeps
 * the structs so in-flight state stays valid; lsv_listener_free_all frees. */
void lsv_listener_close_all(lsv_server_t *srv);
void lsv_listener_free_all(lsv_server_t *srv);

static inline int lsv_listener_is_dgram(const lsv_listener_t *l)
{
    return l->addr.kind == LSV_NET_UDP || l->addr.kind == LSV_NET_UNIXGRAM;
}

#endif

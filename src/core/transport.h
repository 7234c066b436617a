/* transport.h: how a conn's bytes reach its socket: a small table of
 * read, write and close functions. Plain TCP (and unix sockets) is the
 * one today; TLS and a PROXY-protocol header stage slot in here, under
 * the conn, without touching the callback or stream styles. */
#ifndef LSV_TRANSPORT_H
#define LSV_TRANSPORT_H

#include "lsv.h"
#include "server.h"

#include <sys/types.h>

typedef struct lsv_transport {
    const char *name;
    /* Reads up to n bytes into p, as read(2): > 0 bytes, 0 at the end
     * of the stream, -1 with errno (EAGAIN: nothing now). */
    ssize_t (*read)(lsv_conn_t *c, char *p, size_t n);
    /* Writes up to n bytes of p, as send(2) without SIGPIPE: bytes taken,
     * or -1 with errno (EAGAIN: the socket is full). */
    ssize_t (*write)(lsv_conn_t *c, const char *p, size_t n);
    /* The conn is being freed: ends the transport's session and closes
     * the socket. */
    void (*close)(lsv_conn_t *c);
    /* Sends up to n bytes of the open file fd from *off straight to the
     * socket, as sendfile(2): bytes taken (*off advanced), 0 at the
     * file's end, -1 with errno (EAGAIN: the socket is full). NULL for a
     * transport that must see the bytes (TLS): they go through write. */
    ssize_t (*sendfile)(lsv_conn_t *c, int fd, off_t *off, size_t n);
    /* Bytes the transport read from the socket and holds for read, not
     * returned yet (TLS records decrypted ahead): the conn reads again
     * without waiting for the socket. NULL: it never holds any. */
    size_t (*pending)(lsv_conn_t *c);
    /* An outbound conn's handshake, run after its connect until done:
     * LSV_OK, LSV_AGAIN with *events (EV_READ and/or EV_WRITE) to wait
     * for, or LSV_ERR (the transport keeps why). NULL: none. */
    int (*handshake)(lsv_conn_t *c, int *events);
    /* Frees a transport made for one connection (a TLS session's) that
     * never became a conn's: a refused accept (lsv_accepted_drop). The
     * fd is not closed. NULL: nothing to free (plain). */
    void (*discard)(const struct lsv_transport *t);
} lsv_transport_t;

/* Bytes as they are: the socket's own read, send and close. */
extern const lsv_transport_t lsv_transport_plain;

/* Whether t, c's transport, holds bytes read from the socket that c has
 * not read yet (TLS records read ahead): no socket event will announce
 * them, so the conn schedules a read itself. */
static inline int lsv_transport_holds(const lsv_transport_t *t,
                                      lsv_conn_t *c)
{
    return t->pending && t->pending(c);
}

/* c's transport (its session's, for TLS). */
const lsv_transport_t *lsv_conn_transport(const lsv_conn_t *c);

#endif

/* handshake.h: the transport stage between accept and the conn. On a
 * proxy_protocol listener an accepted connection waits here until its
 * PROXY header is read; only then does the layer above see it
 * (hooks->accept), as if accepted from the client the header names. TLS's
 * handshake would be the next such stage. */
#ifndef LSV_HANDSHAKE_H
#define LSV_HANDSHAKE_H

#include "lsv.h"
#include "server.h"

#include <sys/socket.h>

/* Why a connection left the stage without a header (lsv_lstats_t's
 * proxy_errors index; the metrics' reason label). */
enum {
    LSV_PROXY_ERR_BAD,        /* not a header, or a wrong one */
    LSV_PROXY_ERR_TIMEOUT,    /* none complete within proxy_timeout */
    LSV_PROXY_ERR_EOF,        /* the peer went away mid-header */
    LSV_PROXY_ERR_TOO_LONG,   /* over v1's 107 bytes or v2's own length */
    LSV_PROXY_ERR_COUNT
};

/* Names of the reasons above: "bad", "timeout", "eof", "too_long". */
extern const char *const lsv_proxy_err_names[LSV_PROXY_ERR_COUNT];

/* Makes l's accepted connections go through the stage first
 * (l->stage = lsv_handshake_start). */
void lsv_handshake_attach(lsv_listener_t *l);

/* Takes ownership of fd, accepted on l from sa (the balancer): reads the
 * PROXY header, consuming no byte past it, within l->opt.proxy_timeout,
 * then hands fd to l->srv->hooks->accept with the header's info. A bad
 * header, a stall or an EOF closes fd with one log line. Allocates the
 * stage (aborts out of memory, as a conn's allocation does). */
void lsv_handshake_start(lsv_listener_t *l, int fd, const struct sockaddr *sa,
                         socklen_t salen);

/* The stop: with finish, each waiting connection gets one last try at
 * the bytes it already sent (a header there becomes a conn, drained with
 * the rest); the others are closed. Stages never hold the stop. */
void lsv_handshake_stop_all(lsv_server_t *srv, int finish);

#endif

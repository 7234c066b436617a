/* dispatch.h: the callback style, and the server hooks through which
 * connections and datagrams reach the handlers (lsv_hooks_t). */
#ifndef LSV_DISPATCH_H
#define LSV_DISPATCH_H

#include "lsv.h"
#include "conn.h"
#include "listener.h"
#include "udp.h"

/* The callback style: each frame to on_message, whose return value is
 * the reply; on_timeout, on_error, on_close. */
extern const lsv_conn_type_t lsv_callback_type;

/* hooks->accept: asks on_accept, refuses near --lua-memory, makes the
 * conn with the handler's framing, runs on_connect, and serves it in the
 * stream style when the handler has handle(). Takes ownership of fd. */
/* hooks->admit: on_accept(peer, listener) for a connection about to cost
 * a TLS handshake; 1 to go on, 0 refused (logged). */
int lsv_dispatch_admit(lsv_listener_t *l, const struct sockaddr *sa,
                       socklen_t len);

void lsv_dispatch_accept(lsv_listener_t *l, int fd, const struct sockaddr *sa,
                         socklen_t salen, lsv_accepted_t *acc);

/* hooks->datagram: on_message(conn, datagram) for d's peer; its return
 * value and conn:write() calls make the reply. Returns 1 unless the call
 * failed (logged, counted, on_error called). */
int lsv_dispatch_datagram(lsv_listener_t *l, lsv_dgram_t *d, const char *data,
                          size_t n);

/* hooks->stopping: on_stop once per distinct handler table. */
void lsv_dispatch_stopping(lsv_server_t *srv);

/* hooks->low_memory: a full garbage collection. */
void lsv_dispatch_low_memory(lsv_server_t *srv);

#endif

/* sni_lua.h: on_sni, where a TLS listener's handler chooses the
 * certificate by the name the client asked for (hooks->sni). */
#ifndef LSV_SNI_LUA_H
#define LSV_SNI_LUA_H

#include "lsv.h"
#include "server.h"

#include <sys/socket.h>

/* hooks->sni: calls on_sni(info, name) of the handler serving l, if it
 * has one, with info = { peer = "ip:port", listener = "tls://...",
 * ["local"] = the listening address }, under the --handler-timeout budget
 * in a protected call. It returns cert, key (file names or PEM text) or
 * nil (l's own certificate: returns NULL). A context is built once per
 * (cert, key) and listener with l's other TLS settings, and cached
 * (tls_lua.h); returns it with a new reference. An error, a result of
 * the wrong shape or a certificate that does not load: one warn line
 * naming the name, *fail = 1, NULL (the handshake fails, reason "sni").
 * Never raises. */
struct lsv_tls_ctx *lsv_sni_select(lsv_listener_t *l, const char *name,
                                   const struct sockaddr *peer,
                                   socklen_t peer_len,
                                   const struct sockaddr *local,
                                   socklen_t local_len, int *fail);

#endif

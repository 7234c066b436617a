/* notify.h: systemd integration: sd_notify messages and socket activation,
 * spoken directly (no libsystemd): both are small documented protocols. */
#ifndef LSV_NOTIFY_H
#define LSV_NOTIFY_H

#include "lsv.h"
#include "net.h"
#include "server.h"

/* Sends state (e.g. "READY=1") to $NOTIFY_SOCKET if it is set; does
 * nothing otherwise. RELOADING=1 gets MONOTONIC_USEC added, as systemd's
 * Type=notify-reload wants. Failures are logged at debug level. */
void lsv_notify(lsv_server_t *srv, const char *state);

/* Takes the sockets systemd passed (LISTEN_PID, LISTEN_FDS) and clears
 * the variables. Returns how many. */
int lsv_notify_take_fds(lsv_server_t *srv);

/* Adds fd (a listening socket passed some other way: a binary upgrade)
 * to the pool the two below draw from. Returns LSV_OK, or LSV_ERR when
 * the pool is full. */
int lsv_notify_add_fd(lsv_server_t *srv, int fd);

/* Returns an inherited socket matching a (kind and address; port 0 or a
 * wildcard host in a match any), taking it out of the pool, or -1. */
int lsv_notify_match_fd(lsv_server_t *srv, const lsv_addr_t *a);

/* Returns the next inherited socket not matched yet (for a unit with no
 * -l: serve whatever systemd passed), filling *a; or -1. */
int lsv_notify_next_fd(lsv_server_t *srv, lsv_addr_t *a);

/* Closes, with a warning each, the passed sockets no listener took. */
void lsv_notify_close_unused(lsv_server_t *srv);

#endif

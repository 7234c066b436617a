/* resolve.h: name lookups on a pool of helper threads, so getaddrinfo
 * never blocks the event loop and one slow name never blocks another.
 * Results come back on the loop thread via ev_async. */
#ifndef LSV_RESOLVE_H
#define LSV_RESOLVE_H

#include "lsv.h"

#include <ev.h>
#include <netdb.h>

typedef struct lsv_resolver lsv_resolver_t;
typedef struct lsv_resolve_req lsv_resolve_req_t;

/* Called on the loop thread with the lookup's result. res is owned by the
 * resolver and freed after the callback returns; err is a getaddrinfo
 * error code (0 on success). */
typedef void (*lsv_resolve_cb)(void *data, const struct addrinfo *res,
                               int err);

/* Creates the resolver; threads start on demand (see resolve.c). */
lsv_resolver_t *lsv_resolver_new(struct ev_loop *loop);

/* Drops pending lookups without calling back and lets idle threads exit.
 * Does not wait for a thread stuck inside getaddrinfo: it frees what is
 * left when it returns, or dies with the process. */
void lsv_resolver_free(lsv_resolver_t *r);

/* Looks host up for socktype (SOCK_STREAM or SOCK_DGRAM) and port. The
 * callback runs later, never from inside this call. Returns a request
 * that lsv_resolve_cancel accepts until the callback has run. */
lsv_resolve_req_t *lsv_resolve(lsv_resolver_t *r, const char *host, int port,
                               int socktype, lsv_resolve_cb cb, void *data);

/* The callback of req will not run, and req is invalid from here on. A
 * lookup still queued is dropped; one already running no longer counts
 * against the pool, so a timed-out name does not hold a slot. Loop thread
 * only, and only before req's callback has run. */
void lsv_resolve_cancel(lsv_resolver_t *r, lsv_resolve_req_t *req);

#endif

/* server.h: the server: one event loop, its listeners and conns, the
 * read-buffer pool, the graceful stop; and the hooks through which the
 * layer above (src/lua) serves what arrives. */
#ifndef LSV_SERVER_H
#define LSV_SERVER_H

#include "lsv.h"
#include "buf.h"
#include "frame.h"

#include <ev.h>
#include <sys/socket.h>

typedef struct lsv_server lsv_server_t;
typedef struct lsv_listener lsv_listener_t;
typedef struct lsv_conn lsv_conn_t;
typedef struct lsv_dgram lsv_dgram_t;
typedef struct lsv_resolver lsv_resolver_t;
typedef struct lsv_proxy_info lsv_proxy_info_t;   /* proxy.h */

struct lsv_tls_ctx;
struct lsv_transport;

/* What the transport stages learned of an accepted connection before it
 * became a conn: the PROXY header's info (handshake.c) and the transport
 * its handshake made (a TLS session's, tls_stage.c), each NULL when the
 * listener has no such stage (NULL transport: plain). hooks->accept and
 * then lsv_conn_new take ownership of both; a connection refused before
 * it is a conn gives them back with lsv_accepted_drop. */
typedef struct lsv_accepted {
    lsv_proxy_info_t *proxy;
    const struct lsv_transport *transport;
    int admitted;               /* hooks->admit passed it already */
} lsv_accepted_t;

/* Frees what acc holds (acc may be NULL); closes no fd. */
void lsv_accepted_drop(lsv_accepted_t *acc);

/* What the server hands to the layer that serves it (src/lua), set once
 * before the loop runs. Core calls these; it never calls Lua itself. */
typedef struct lsv_hooks {
    /* A stream listener accepted fd (non-blocking) from sa: takes
     * ownership of fd, making a conn of it (lsv_conn_new) or closing it.
     * On a listener with stages (a PROXY header, a TLS handshake) this
     * comes once they are done: acc holds what they learned, and sa is
     * the client the PROXY header names (the socket's peer for a LOCAL
     * header). acc is NULL without stages; else the callee owns what it
     * holds (lsv_conn_new takes it, or lsv_accepted_drop). */
    void (*accept)(lsv_listener_t *l, int fd, const struct sockaddr *sa,
                   socklen_t salen, lsv_accepted_t *acc);
    /* Datagram p[0, n) (borrowed) arrived on l from d's peer; a reply is
     * appended with lsv_udp_write. Returns 1 to send what was appended. */
    int (*datagram)(lsv_listener_t *l, lsv_dgram_t *d, const char *p,
                    size_t n);
    /* Once a loop turn, after conns had their input turn and before
     * queued output is written: runs what became ready (tasks). */
    void (*turn)(lsv_server_t *srv);
    /* The graceful stop began; the listeners are closed already. */
    void (*stopping)(lsv_server_t *srv);
    /* An allocation a peer or script sized failed: free what can be
     * freed (a garbage collection) before the one retry. */
    void (*low_memory)(lsv_server_t *srv);
    /* A connection from sa (the client a PROXY header named) is about
     * to cost a TLS handshake on l: returns 1 to go on, 0 to close it
     * now (the handler's on_accept refused it; the callee logs). The
     * stage then sets acc->admitted so hooks->accept does not ask
     * twice. May be NULL. */
    int (*admit)(lsv_listener_t *l, const struct sockaddr *sa,
                 socklen_t salen);
    /* A TLS client on l asked for server `name` (SNI), the handler's
     * on_sni: returns a context for this handshake with a new reference,
     * or NULL to use l's own. Sets *fail (and logs why) to refuse the
     * handshake. peer is the client, local the address it connected to
     * (a PROXY header's dst); local_len 0 when unknown. May be NULL. */
    struct lsv_tls_ctx *(*sni)(lsv_listener_t *l, const char *name,
                               const struct sockaddr *peer,
                               socklen_t peer_len,
                               const struct sockaddr *local,
                               socklen_t local_len, int *fail);
    /* A state the service manager may want to hear ("RELOADING=1",
     * "READY=1", "STOPPING=1"); may be NULL. */
    void (*notify)(lsv_server_t *srv, const char *state);
} lsv_hooks_t;

/* Counters the core keeps for the whole server. Traffic and handler
 * errors are counted per listener only (lsv_lstats_t); luaserv.stats(),
 * admin stats and /metrics sum the listeners. */
typedef struct lsv_stats {
    uint64_t datagrams;
    uint64_t tasks_active;
    uint64_t outbound_active;
    uint64_t preemptions;     /* task runs the slice hook cut short */
} lsv_stats_t;

typedef struct lsv_options {
    double idle_timeout;      /* seconds, 0 = none */
    double proxy_timeout;     /* seconds to read a PROXY header, 0 = none */
    double shutdown_timeout;  /* seconds */
    size_t high_water;        /* output bytes that stop reading */
    size_t low_water;         /* output bytes that restart it */
    int backlog;
    int access_log;           /* a log line per closed connection */
    int watch;                /* reload when a script file changes */
    double handler_timeout;   /* seconds a handler call may run, 0 = any */
    size_t lua_memory;        /* bytes the Lua state may hold, 0 = any */
    size_t rcvbuf, sndbuf;    /* datagram listeners' buffers, 0 = kernel's */
    double load_timeout;      /* seconds on_load may run, 0 = any */
    int task_slice;           /* Lua instructions a task runs before it
                               * yields to the loop, 0 = never */
    size_t max_output;        /* bytes queued for one peer, 0 = any */
    int workers;              /* worker processes (src/ops/workers.c),
                               * 0 = one per online CPU ("auto") */
    double drain_delay;       /* seconds a stop stays draining (health
                               * 503, still serving) before it begins */
} lsv_options_t;

struct lsv_server {
    struct ev_loop *loop;
    const lsv_hooks_t *hooks;
    struct lsv_vm *vm;           /* the handler layer's (src/lua/vm.h) */
    lsv_options_t opt;
    lsv_stats_t stats;

    lsv_listener_t *listeners;   /* owned; singly linked */
    lsv_conn_t *conns;           /* open connections; doubly linked */
    lsv_conn_t *outbound;        /* luaserv.connect() conns; doubly linked */
    struct lsv_handshake *stages;  /* accepted, reading a PROXY header
                                    * (handshake.c); doubly linked */
    struct lsv_tls_stage *tls_stages;  /* accepted, in their TLS handshake
                                        * (tls_stage.c); doubly linked */
    lsv_listener_t *outbound_listener;  /* what outbound conns point at */
    lsv_listener_t *server_listener;    /* "server": counts what belongs to
                                         * no listener (on_load, a timer) */
    lsv_resolver_t *resolver;
    lsv_conn_t *pending;         /* conns with output to flush this turn */
    lsv_conn_t *again;           /* conns with input work for this turn */
    lsv_conn_t *again_next;      /* ... and for the next one */
    int running_again;
    uint64_t next_conn_id;

    ev_prepare flush_watcher;    /* writes pending output before polling */
    ev_idle kick_watcher;        /* active while work is queued: no blocking */
    ev_timer shutdown_timer;
    ev_timer stop_soon;          /* lsv_server_stop_soon: stops next turn */
    ev_timer drain_timer;        /* --drain-delay: the stop it holds back */
    int stopping;
    int draining;                /* LSV_DRAIN_* bits: a stop or an upgrade
                                  * began, so /healthz answers 503 */

    /* Spare read buffers given back by idle connections. */
    char *free_bufs[64];
    int nfree_bufs;
};

/* Why srv->draining is set: a stop began (lsv_loop_drain, a --workers
 * master's stop), which lasts until the exit; an upgrade is under way in
 * the old generation, which a failed upgrade clears again. */
#define LSV_DRAIN_STOP 1
#define LSV_DRAIN_UPGRADE 2

/* Read buffers are this big; the pool above holds only this size. */
#define LSV_READ_SIZE (16u * 1024)

/* Takes a pooled read buffer or allocates one (LSV_READ_SIZE bytes). */
char *lsv_server_get_buf(lsv_server_t *srv);
/* Gives back a buffer of LSV_READ_SIZE bytes; takes ownership. */
void lsv_server_put_buf(lsv_server_t *srv, char *p);

/* Work was queued (output to flush): make sure the loop does not block
 * before the prepare watcher has handled it, even when it was queued
 * after that watcher ran in this turn. */
static inline void lsv_server_kick(lsv_server_t *srv)
{
    if (!ev_is_active(&srv->kick_watcher))
        ev_idle_start(srv->loop, &srv->kick_watcher);
}

/* Frees the pooled read buffers (at exit). */
void lsv_server_free_bufs(lsv_server_t *srv);

#endif

/* server.h: the server: one event loop, one Lua state, listeners, conns. */
#ifndef LSV_SERVER_H
#define LSV_SERVER_H

#include "lsv.h"
#include "buf.h"
#include "frame.h"
#include "sched.h"

#include <ev.h>
#include <lua.h>
#include <time.h>

typedef struct lsv_listener lsv_listener_t;
typedef struct lsv_dgram lsv_dgram_t;
typedef struct lsv_resolver lsv_resolver_t;

/* Counters the core keeps for the whole server. Traffic is counted per
 * listener only (lsv_lstats_t); luaserv.stats() sums the listeners. */
typedef struct lsv_stats {
    uint64_t datagrams;
    uint64_t handler_errors;
    uint64_t tasks_active;
    uint64_t outbound_active;
    uint64_t preemptions;     /* task runs the slice hook cut short */
} lsv_stats_t;

typedef struct lsv_options {
    double idle_timeout;      /* seconds, 0 = none */
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
} lsv_options_t;

typedef struct lsv_server {
    struct ev_loop *loop;
    lua_State *L;
    lsv_options_t opt;
    lsv_stats_t stats;

    lsv_listener_t *listeners;   /* owned; singly linked */
    lsv_conn_t *conns;           /* open connections; doubly linked */
    lsv_conn_t *outbound;        /* luaserv.connect() conns; doubly linked */
    lsv_listener_t *outbound_listener;  /* what outbound conns point at */
    lsv_task_t main_task;        /* the main thread's extra space points here */
    lsv_task_t *tasks;           /* every live task; doubly linked */
    lsv_task_t *ready, *ready_tail;     /* tasks to resume this turn */
    lsv_resolver_t *resolver;
    lsv_conn_t *pending;         /* conns with output to flush this turn */
    lsv_conn_t *again;           /* conns with input work for this turn */
    lsv_conn_t *again_next;      /* ... and for the next one */
    int running_again;
    uint64_t next_conn_id;

    ev_prepare flush_watcher;    /* writes pending output before polling */
    ev_idle kick_watcher;        /* active while work is queued: no blocking */
    ev_signal sigterm_watcher;
    ev_signal sigint_watcher;
    ev_signal sighup_watcher;
    ev_timer reload_timer;       /* --watch: settles bursts of changes */
    struct lsv_script *scripts;  /* loaded handler scripts */
    ev_timer shutdown_timer;
    ev_timer stop_soon;          /* lsv_server_stop_soon: stops next turn */
    int stopping;

    /* Spare read buffers given back by idle connections. */
    char *free_bufs[64];
    int nfree_bufs;

    /* luaserv.ctime(): the second its cached string is for. */
    time_t ctime_sec;
} lsv_server_t;

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

/* Begins the graceful stop: listeners close, conns drain, then the loop
 * ends (see main.c). */
void lsv_server_stop(lsv_server_t *srv);

/* Asks for lsv_server_stop at the loop's next turn: for callers inside a
 * handler (core.shutdown), whose listener or conn the stop would close
 * under them. */
void lsv_server_stop_soon(lsv_server_t *srv);

/* Checks whether a stopping server has nothing left and ends the loop. */
void lsv_server_maybe_done(lsv_server_t *srv);

#endif

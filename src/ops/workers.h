/* workers.h: --workers N: a master process that opens the listeners,
 * forks N workers (each its own loop and Lua state) and keeps them alive.
 *
 * The master runs no handler code: it forks before any handler script is
 * loaded, so each worker loads the scripts, runs on_load and serves on its
 * own; the master only prints the ready lines once every worker is
 * serving, restarts a worker that dies, and passes SIGHUP and SIGTERM on.
 * TCP and UDP listeners are one SO_REUSEPORT socket per worker, bound to
 * the same address (the kernel spreads the load); a unix socket (and a
 * socket systemd passed) is one, shared by every worker. */
#ifndef LSV_WORKERS_H
#define LSV_WORKERS_H

#include "lsv.h"
#include "config.h"
#include "server.h"

/* How many worker processes o asks for: o->workers, or the online CPUs
 * for 0 ("auto"). 1 means the single process, with no master. */
int lsv_workers_count(const lsv_options_t *o);

/* What the master serves itself: main.c's, loading luaserv's own
 * handlers for plan's builtin entries (the admin socket, /metrics),
 * whose fds are the sockets the master opened, and starting them. */
typedef void (*lsv_workers_serve_fn)(lsv_server_t *srv, lsv_plan_t *plan);

/* Becomes the master of n >= 2 workers serving plan (listeners planned,
 * no script loaded yet). Opens every listener's sockets, then forks.
 *
 * In a worker it returns the worker's id (1..n) with plan's fds set to
 * that worker's sockets, the builtin entries replaced by the worker's
 * admin channel to the master (an internal listener), luaserv.worker
 * set, and the master's watchers and connections gone: the caller goes
 * on as the single-process server would (load the scripts, on_load,
 * open the listeners, serve), then calls lsv_workers_tell_ready.
 *
 * In the master it calls serve, runs the loop and never returns: it
 * exits 0 after a SIGTERM drained every worker, 1 when a listener cannot
 * be opened or no worker can be kept alive, 2 when a worker failed to
 * start (its script did not load: the worker said why). */
int lsv_workers_run(lsv_server_t *srv, lsv_plan_t *plan, int n,
                    lsv_workers_serve_fn serve);

/* In a worker, once it serves: tells the master (which prints the ready
 * lines once every worker has) and returns 1. In the single process it
 * does nothing and returns 0: the caller prints the ready lines. */
int lsv_workers_tell_ready(lsv_server_t *srv);

#endif

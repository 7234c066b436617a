/* loop.h: the server's loop: its per-turn watcher and the graceful stop. */
#ifndef LSV_LOOP_H
#define LSV_LOOP_H

#include "lsv.h"
#include "server.h"

/* Sets up srv's loop watchers on loop (the per-turn flush, the stop
 * timers); srv->opt and srv->hooks are the caller's. */
void lsv_loop_init(lsv_server_t *srv, struct ev_loop *loop);

/* After the loop ended: aborts what is left and stops the watchers. */
void lsv_loop_close(lsv_server_t *srv);

/* Begins the graceful stop: listeners close, hooks->stopping runs, conns
 * drain, then the loop ends; after --shutdown-timeout the rest are
 * aborted. */
void lsv_loop_stop(lsv_server_t *srv);

/* A second stop signal: aborts every conn and ends the loop now. */
void lsv_loop_stop_now(lsv_server_t *srv);

/* Asks for lsv_loop_stop at the loop's next turn: for callers inside a
 * handler (core.shutdown), whose listener or conn the stop would close
 * under them. */
void lsv_loop_stop_soon(lsv_server_t *srv);

#endif

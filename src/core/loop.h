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

/* Begins the graceful stop: listeners close (but the health ones,
 * l->health, which answer 503 until the exit), hooks->stopping runs, conns
 * drain, then the loop ends; after --shutdown-timeout the rest are
 * aborted. */
void lsv_loop_stop(lsv_server_t *srv);

/* A stop that waits --drain-delay first (SIGTERM, SIGINT, admin
 * shutdown): srv->draining is set at once, so health checks answer 503,
 * while listeners and conns go on serving for opt.drain_delay seconds;
 * then lsv_loop_stop. With no delay it is lsv_loop_stop. */
void lsv_loop_drain(lsv_server_t *srv);

/* Whether a stop began: stopping, or waiting out its drain delay (a
 * signal now is a second one). */
int lsv_loop_is_draining(const lsv_server_t *srv);

/* A second stop signal: aborts every conn and ends the loop now (during
 * a --drain-delay, after the stop's hooks->stopping). */
void lsv_loop_stop_now(lsv_server_t *srv);

/* Asks for lsv_loop_stop at the loop's next turn: for callers inside a
 * handler (core.shutdown), whose listener or conn the stop would close
 * under them. */
void lsv_loop_stop_soon(lsv_server_t *srv);

#endif

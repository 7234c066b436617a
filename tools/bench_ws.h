/* bench_ws.h: luaserv-bench's websocket mode (bench_ws.c), for the run
 * (bench.c). */
#ifndef LSV_BENCH_WS_H
#define LSV_BENCH_WS_H

#include "bench_conn.h"

/* Builds the upgrade request and the frame template (after setup() built
 * b->line); starts a connected c (sends the upgrade); reads c's replies
 * (the 101, then echoed frames). */
void bench_ws_setup(bench_t *b);
void bench_ws_start(bench_t *b, bconn_t *c);
void bench_ws_read_cb(struct ev_loop *loop, ev_io *w, int revents);

#endif

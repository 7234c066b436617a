/* conn_int.h: what conn.c and conn_out.c share; nothing else includes
 * it. */
#ifndef LSV_CONN_INT_H
#define LSV_CONN_INT_H

#include "lsv.h"
#include "conn.h"

#include <lua.h>

/* conn.c's watchers, buffers and lifecycle, for conn_out.c. */
void lsv_conn_start_reading(lsv_conn_t *c);
void lsv_conn_stop_reading(lsv_conn_t *c);
void lsv_conn_schedule_read(lsv_conn_t *c);
void lsv_conn_arm_timer(lsv_conn_t *c, double after);
void lsv_conn_ensure_buf(lsv_server_t *srv, lsv_buf_t *b);
void lsv_conn_release_buf(lsv_server_t *srv, lsv_buf_t *b);
/* Frees c once nothing uses it (calls on_close); deferred while busy. */
void lsv_conn_finish(lsv_conn_t *c);
/* Calls handler[fn](conn, ...) as call_handler does: LSV_OK with nres
 * results pushed, LSV_AGAIN with no such function, LSV_ERR after a
 * handler error (logged, on_error, close). */
int lsv_conn_call(lsv_conn_t *c, const char *fn, int nargs, int nres);
/* Calls on_error(conn, msg), if the handler has one. The string is made
 * inside a protected call, so running out of memory for it fails only
 * this call: it may run inside a task, where the main thread has no
 * error handler, or at the loop's level. */
void lsv_conn_on_error(lsv_conn_t *c, const char *msg);

/* conn_out.c, for conn.c. */
/* libev write readiness (and an outbound connect finishing) on c->wio. */
void lsv_conn_write_cb(struct ev_loop *loop, ev_io *w, int revents);
/* Queues what on_message returned above stack slot base (all popped).
 * Returns LSV_OK (queued, or c failed over its cap: handled), or LSV_ERR
 * with an error message in their place for a value of the wrong type. */
int lsv_conn_write_result(lsv_conn_t *c, lua_State *L, int base);
/* c's timer fired in stream style: fails a write that has made no
 * progress for the idle timeout, or re-arms for the rest. */
void lsv_conn_write_timer(lsv_conn_t *c);

#endif

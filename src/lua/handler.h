/* handler.h: calls into the handler table serving a conn, and what both
 * styles do alike: a failed call, on_error, on_close, the end of a
 * handle() task. */
#ifndef LSV_HANDLER_H
#define LSV_HANDLER_H

#include "lsv.h"
#include "conn.h"
#include "listener.h"
#include "sched.h"

#include <lua.h>

/* The registry ref of the handler table serving l (LUA_NOREF for none,
 * as for outbound conns). */
int lsv_handler_ref(const lsv_listener_t *l);

/* Calls handler[fn](conn, ...) with nargs arguments already pushed. c
 * must be held (every conn callback is). Returns LSV_OK with nres results
 * pushed, LSV_AGAIN if there is no such function (args popped), or
 * LSV_ERR after a handler error, which is handled (lsv_handler_failed).
 * Never raises. */
int lsv_handler_call(lsv_conn_t *c, const char *fn, int nargs, int nres);

/* A call of handler[fn] on c raised; its message (with traceback) is on
 * the stack and is popped. Counts it against c's listener and logs it
 * once; unless the failing function was on_error or on_close, or c is
 * closing already, passes it to on_error, then closes c. */
void lsv_handler_failed(lsv_conn_t *c, const char *fn);

/* Calls on_error(conn, msg), if the handler has one: type->error for
 * both styles. The string is made inside a protected call, so running
 * out of memory for it fails only this call. */
void lsv_handler_on_error(lsv_conn_t *c, const char *msg);

/* c is about to be freed: on_close(conn, reason) if on_connect ran, then
 * the userdata is cut off from c. The styles' type->closed call it last. */
void lsv_handler_closed(lsv_conn_t *c, const char *reason);

/* A handle() task's end (lsv_task_end_fn): forgets the task; when it
 * ended (not gone), logs an error and closes c. */
void lsv_handler_task_end(lsv_task_t *t, lsv_conn_t *c, const char *err,
                          int gone);

#endif

/* stream.h: the stream style: tasks reading and writing conns as if
 * blocking, and outbound connections (luaserv.connect). */
#ifndef LSV_STREAM_H
#define LSV_STREAM_H

#include "lsv.h"
#include "conn.h"

#include <lua.h>

/* The stream style: a pull conn whose handle(conn) task reads it with
 * conn:readline(), conn:read() and friends. */
extern const lsv_conn_type_t lsv_stream_type;

/* type->drained of both styles: c's output shrank, so a task waiting for
 * room or for the flush goes on. */
void lsv_stream_output(lsv_conn_t *c);

/* type->connected of outbound conns: wakes the task waiting in
 * luaserv.connect with the conn, or with nil, err. */
void lsv_stream_connected(lsv_conn_t *c, int err);

/* type->closing of both styles: c is closing (abort: dropping output
 * too): a waiting task gets nil, "closed" (readers always; writers only
 * on abort). */
void lsv_stream_closing(lsv_conn_t *c, int abort);

/* type->closed of both styles: a reader or writer still waiting gets
 * nil, "closed"; then on_close and the userdata cut off (handler.c). */
void lsv_stream_closed(lsv_conn_t *c, const char *reason);

/* conn:write's work, after its arguments (slots 2..top: strings, numbers
 * or tables of them) were checked: queues them on c. In a task that may
 * wait, a reply of any size streams out, queued up to the high-water mark
 * and waiting (yielding) for the peer to take it; elsewhere the whole
 * reply is queued at once, up to --max-output. Returns what conn:write
 * returns: the conn, or nil and "closed", "overflow" (c failed: over the
 * cap or out of memory) or "timeout" (no progress for the idle timeout).
 * May raise (memory) and yield. [-0, +(1|2), e] */
int lsv_stream_write(lua_State *L, lsv_conn_t *c);

/* Adds conn:write and the stream methods to the conn metatable. */
void lsv_stream_open_methods(lua_State *L);

#endif

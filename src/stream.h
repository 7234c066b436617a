/* stream.h: the stream style: tasks reading and writing conns as if
 * blocking, and outbound connections. */
#ifndef LSV_STREAM_H
#define LSV_STREAM_H

#include "lsv.h"
#include "server.h"

/* c has new input or reached end of stream: answer a waiting reader. */
void lsv_stream_input(lsv_conn_t *c);

/* How many bytes one read may add to c's input now; 0 means stop reading
 * until a task asks for input (lsv_conn_want_input). */
size_t lsv_stream_room(const lsv_conn_t *c);

/* c's output shrank: wake a writer waiting for room or for the flush. */
void lsv_stream_output(lsv_conn_t *c);

/* c is closing (abort: dropping output too): a waiting task gets
 * nil, "closed" (readers always; writers only on abort). */
void lsv_stream_closing(lsv_conn_t *c, int abort);

/* An outbound connect finished; err is 0 or an errno. */
void lsv_stream_connected(lsv_conn_t *c, int err);

/* After conn:write queued output: in a task, waits (yields) while c's
 * output is over the high-water mark. Returns what conn:write returns
 * (the conn, at the top of L's stack). [-0, +(0|1), v] */
int lsv_stream_write_wait(lua_State *L, lsv_conn_t *c);

/* Adds the stream methods to the conn method table at the top of the
 * stack, and luaserv.connect to the module table below it. */
void lsv_stream_open_methods(lua_State *L);
void lsv_stream_open_api(lua_State *L);

#endif

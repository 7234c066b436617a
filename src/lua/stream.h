/* stream.h: the stream style: tasks reading and writing conns as if
 * blocking, and outbound connections. */
#ifndef LSV_STREAM_H
#define LSV_STREAM_H

#include "lsv.h"
#include "server.h"

/* c has new input or reached end of stream: answer a waiting reader.
 * Returns LSV_OK, or LSV_ERR with the error on the main thread's stack
 * when its string could not be made (out of memory): the caller fails c. */
int lsv_stream_input(lsv_conn_t *c);

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

/* conn:write's work, after its arguments (slots 2..top: strings, numbers
 * or tables of them) were checked: queues them on c. In a task that may
 * wait, a reply of any size streams out, queued up to the high-water mark
 * and waiting (yielding) for the peer to take it; elsewhere the whole
 * reply is queued at once, up to --max-output. Returns what conn:write
 * returns: the conn, or nil and "closed", "overflow" (c failed: over the
 * cap or out of memory) or "timeout" (no progress for the idle timeout).
 * May raise (memory) and yield. [-0, +(1|2), e] */
int lsv_stream_write(lua_State *L, lsv_conn_t *c);

/* A write waiting on c made no progress for c's idle timeout: its task
 * gets nil, "timeout". */
void lsv_stream_write_timeout(lsv_conn_t *c);

/* Adds the stream methods to the conn method table at the top of the
 * stack, and luaserv.connect to the module table below it. */
void lsv_stream_open_methods(lua_State *L);
void lsv_stream_open_api(lua_State *L);

#endif

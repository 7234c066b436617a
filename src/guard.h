/* guard.h: limits on handler code: a time budget per call (a handler
 * stuck in a loop is stopped) and a memory cap for the Lua state (a
 * handler that allocates too much fails, the process does not). */
#ifndef LSV_GUARD_H
#define LSV_GUARD_H

#include "lsv.h"

#include <lua.h>

/* The Lua allocator: counts bytes and, inside a guarded call, refuses to
 * go over the cap (Lua then collects garbage and, failing that, raises
 * "not enough memory" in the call). ud is unused. */
void *lsv_guard_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

/* Sets the limits: seconds a call may run (0: none), bytes the Lua state
 * may hold (0: none). Starts the watchdog timer when a time limit is set. */
void lsv_guard_init(double handler_timeout, size_t lua_memory);

/* Bytes the Lua state holds now. */
size_t lsv_guard_memory(void);

/* The memory cap when the Lua state holds seven eighths of it or more,
 * else 0: the server then refuses new connections (new work) so that
 * the ones it has can finish, instead of failing everyone's calls. */
size_t lsv_guard_full(void);

/* Brackets a call into handler code running on thread L (lua_pcall,
 * lua_resume). Nested calls keep the outermost start time. */
void lsv_guard_enter(lua_State *L);
void lsv_guard_leave(lua_State *L);

#endif

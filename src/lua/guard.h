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

/* What a guarded call is, which picks its budget and its error message. */
enum {
    LSV_GUARD_HANDLER,   /* a handler call: --handler-timeout */
    LSV_GUARD_LOAD,      /* running a script's chunk: --handler-timeout */
    LSV_GUARD_ON_LOAD,   /* on_load: --load-timeout */
    LSV_GUARD_NKINDS
};

/* Seconds on_load may run (0: none). Call before lsv_guard_init. */
void lsv_guard_set_load_timeout(double load_timeout);

/* Sets the limits: seconds a call may run (0: none), bytes the Lua state
 * may hold (0: none). Starts the watchdog timer when a time limit is set.
 * Call once, before any script loads: loading is guarded too. */
void lsv_guard_init(double handler_timeout, size_t lua_memory);

/* In a process just forked (a worker): starts the watchdog again, since
 * a child does not inherit its parent's interval timer. */
void lsv_guard_after_fork(void);

/* Bytes the Lua state holds now. */
size_t lsv_guard_memory(void);

/* The memory cap when the Lua state holds seven eighths of it or more,
 * else 0: the server then refuses new connections (new work) so that
 * the ones it has can finish, instead of failing everyone's calls. */
size_t lsv_guard_full(void);

/* Brackets a call into handler code running on thread L (lua_pcall,
 * lua_resume). Nested calls keep the outermost start time and budget; the
 * watchdog watches the innermost thread. Once over budget, every Lua
 * instruction of L raises "handler timeout" until the outermost leave. */
void lsv_guard_enter(lua_State *L);
void lsv_guard_leave(lua_State *L);

/* A call with a budget of its own, whose timeout the caller catches and
 * goes on from: a script load inside an admin command, an eval, on_load.
 * Saves the enclosing call's state; stack allocated by the caller. */
#define LSV_GUARD_STACK 32   /* nesting levels whose threads are tracked */
typedef struct lsv_guard_scope {
    lua_State *L, *running;
    lua_State *stack[LSV_GUARD_STACK];
    int depth, kind, nested;
} lsv_guard_scope_t;

/* Starts a fresh budget of the given LSV_GUARD_* kind for a call on L
 * (lua_pcall right after). Inside a call already out of time, it nests
 * like lsv_guard_enter instead, so the timeout still reaches the caller. */
void lsv_guard_begin(lsv_guard_scope_t *sc, lua_State *L, int kind);

/* Ends the scope after the pcall returned: takes the timeout hook off and
 * gives the enclosing call back its state, with its clock restarted. */
void lsv_guard_end(lsv_guard_scope_t *sc);

#endif

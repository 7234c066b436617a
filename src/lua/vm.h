/* vm.h: the handler layer's state and the Lua state: opening, loading
 * scripts, calling handlers. */
#ifndef LSV_VM_H
#define LSV_VM_H

#include "lsv.h"
#include "server.h"

#include <lua.h>
#include <time.h>

/* What the handler layer (src/lua) keeps for a server: srv->vm. */
typedef struct lsv_vm lsv_vm_t;
struct lsv_vm {
    lua_State *L;
    struct lsv_sched *sched;     /* tasks (sched.h) */
    struct lsv_script *scripts;  /* loaded handler scripts (script.h) */
    ev_timer reload_timer;       /* --watch: settles bursts of changes */
    void (*ask_reload)(lsv_server_t *srv);  /* a reload asked here (a
                                  * --watch change, SIGHUP): what it does
                                  * instead of reloading (a worker asks
                                  * its master), or NULL */
    time_t ctime_sec;            /* luaserv.ctime(): its cached second */
    lsv_listener_t *listener;    /* whose handler runs on the main thread
                                  * now, or NULL: a spawned task's */
};

/* Counts one handler error against l, or, for code that serves no
 * listener (a task spawned at load, a timer, on_load, on_reload), against
 * the server's own "server". The one place handler errors are counted:
 * luaserv.stats(), admin stats and /metrics all sum these. */
void lsv_vm_count_error(lsv_server_t *srv, lsv_listener_t *l);

/* Stack slot of the message handler that adds a traceback; it stays at the
 * bottom of the main state's stack for the life of the state. */
#define LSV_VM_MSGH 1

/* Creates srv->vm and its Lua state with the standard libraries,
 * `luaserv` in package.preload, and package.path extended with the
 * script's folder and lua/. */
void lsv_vm_open(lsv_server_t *srv, const char *script);
void lsv_vm_close(lsv_server_t *srv);

/* Returns the server that owns L. Every thread's extra space points at a
 * struct whose first member is the server pointer: its task (sched.h),
 * the main thread's at the scheduler's main task. */
static inline lsv_server_t *lsv_vm_server(lua_State *L)
{
    return **(lsv_server_t ***)lua_getextraspace(L);
}

/* Loads and runs script, checks that it returned a valid handler table,
 * and parses its framing into *framing. On success returns LSV_OK and a
 * registry ref to the table in *ref. On failure returns LSV_ERR with
 * "file:line: message" in err; the Lua stack is unchanged either way. */
int lsv_vm_load(lsv_server_t *srv, const char *script, int *ref,
                lsv_frame_spec_t *framing, char *err, size_t errlen);

/* Parses the framing spec at idx (a kind name or a table). Returns LSV_OK,
 * or LSV_ERR with a message in err. Never raises. */
int lsv_vm_parse_framing(lua_State *L, int idx, lsv_frame_spec_t *spec,
                         char err[LSV_ERRLEN]);

/* Pushes handler[name] from the handler table ref and returns 1 if it is a
 * function; otherwise pushes nothing and returns 0. [-0, +(0|1), -] */
int lsv_vm_get_fn(lua_State *L, int ref, const char *name);

/* Pushes what a weak-keyed table in the registry (at key) keeps for the
 * object at idx (a conn's userdata), made by make(L, ud) on the first
 * ask: make pushes one value, or pushes nothing and returns 0 for nil
 * (not kept). So conn.proxy and conn.tls are built once per conn and
 * compare equal. [-0, +1, m] */
void lsv_vm_memo(lua_State *L, const void *key, int idx,
                 int (*make)(lua_State *L, const void *ud), const void *ud);

/* lua_pcall through the traceback handler. On error returns the status
 * and leaves the message (with traceback) on the stack for the caller to
 * log once, with its context, count (lsv_vm_count_error) and pop. */
int lsv_vm_pcall(lua_State *L, int nargs, int nresults);

/* lsv_vm_pcall with a time budget of its own, of LSV_GUARD_* kind (guard.h),
 * whose timeout comes back as this call's error even when it runs inside
 * another guarded call (an admin command's reload, on_load, on_reload).
 * Works on any thread (it brings its own message handler); the call
 * cannot yield. */
int lsv_vm_pcall_as(lua_State *L, int nargs, int nresults, int kind);

/* Strings up to this size that the core makes from a peer's bytes are
 * made outside a protected call, as the small fixed-size allocations are:
 * protecting one costs a C call level per message (about 200 ns, a fifth
 * of a callback echo's CPU), and a process that cannot find 4 KiB cannot
 * serve anyway. Bigger ones, whose size the peer chooses up to the frame
 * max, are made inside the call and fail it. */
#define LSV_VM_SMALL_STR 4096

/* lsv_vm_pcall of the function below nargs arguments with one more
 * argument, the string p[0, n) (borrowed; it must stay put until the
 * function runs). Over LSV_VM_SMALL_STR bytes it is made inside the
 * protected call: a peer's frame that does not fit in memory fails the
 * call ("not enough memory") instead of panicking outside it. */
int lsv_vm_pcall_str(lua_State *L, int nargs, const char *p, size_t n,
                     int nresults);

#endif

/* sched.h: tasks: Lua coroutines the loop resumes when what they wait for
 * happens (input, drained output, a timer, a connect, a name lookup). */
#ifndef LSV_SCHED_H
#define LSV_SCHED_H

#include "lsv.h"
#include "frame.h"
#include "vm.h"

#include <ev.h>
#include <lua.h>

typedef struct lsv_task lsv_task_t;

/* What a task waits for. */
enum {
    LSV_WAIT_NONE = 0,
    LSV_WAIT_READY,     /* queued to run */
    LSV_WAIT_SLEEP,
    LSV_WAIT_READ,      /* a conn's input (want says how much) */
    LSV_WAIT_WRITE,     /* a conn's output below the low-water mark */
    LSV_WAIT_FLUSH,     /* a conn's output empty */
    LSV_WAIT_CONNECT,   /* an outbound connect */
    LSV_WAIT_RESOLVE,   /* a name lookup */
    LSV_WAIT_DGRAM      /* a datagram on a luaserv.udp() socket */
};

/* Undoes a wait's registration with the object waited on (the conn, ...)
 * when the wait ends early: timeout or cancel. */
typedef void (*lsv_unwait_fn)(lsv_task_t *t);

/* How the end of a task that serves a conn reaches that conn's code
 * (src/lua/handler.c): err is its error with traceback, or NULL when it
 * returned; gone says it was stopped instead (cancelled, or freed at
 * exit), and nothing is reported. */
typedef void (*lsv_task_end_fn)(lsv_task_t *t, lsv_conn_t *c,
                                const char *err, int gone);

struct lsv_task {
    lsv_server_t *srv;         /* first: lsv_vm_server() reads it */
    lua_State *co;             /* the coroutine */
    int ref;                   /* registry ref anchoring co */
    /* One word: the task's size decides its allocator chunk, memory per
     * stream conn (bench/idle_mem.py). */
    unsigned nargs : 21;       /* values pushed on co for the next resume
                                * (a stack holds under 2^20, LUAI_MAXSTACK) */
    unsigned wait : 8;         /* LSV_WAIT_* */
    unsigned cancelled : 1;
    unsigned reusable : 1;     /* returned: its thread may serve again */
    lsv_conn_t *conn;          /* the conn this handle() task serves */
    lsv_task_end_fn on_end;    /* told when it ends, if conn is set */
    lsv_listener_t *listener;  /* whose errors it counts in (NULL: the
                                * server's): its conn's, its spawner's */
    void *wait_obj;            /* what it waits on */
    lsv_unwait_fn unwait;
    lsv_task_t *next_ready;    /* srv->vm->sched->ready queue */
    lsv_task_t *prev, *next;   /* srv->vm->sched->tasks */
    void *handle;              /* its Lua handle (spawn), or NULL */
    ev_timer timer;            /* sleep and wait timeouts */
    lsv_frame_spec_t want;     /* LSV_WAIT_READ: the read request */
};

/* Returns the task L runs in, or NULL when L is the main thread or a
 * coroutine the handler created itself. */
lsv_task_t *lsv_task_current(lua_State *L);

/* Raises a clear error unless L is a task that may wait; `what` names the
 * call ("conn:readline()"). Returns the task. [-0, +0, v] */
lsv_task_t *lsv_task_check(lua_State *L, const char *what);

/* Starts a task running the function on L's stack below nargs arguments
 * (all popped); L is srv->vm->L or a thread of it, the one running, since
 * the new thread is made there and running out of memory raises there. It
 * is queued; it first runs before the loop next polls. conn (may be NULL)
 * is the conn a handle() task serves; on_end hears of its end.
 * [-(nargs+1), +0, m] */
lsv_task_t *lsv_task_spawn(lsv_server_t *srv, lua_State *L, int nargs,
                           lsv_conn_t *conn, lsv_task_end_fn on_end);

/* The scheduler's state, srv->vm->sched. */
typedef struct lsv_sched {
    lsv_task_t main_task;      /* the main thread's extra space points here */
    lsv_task_t *tasks;         /* every live task; doubly linked */
    lsv_task_t *ready, *ready_tail;    /* tasks to resume this turn */
    /* Tasks that returned, kept with their threads (stack emptied, ref
     * kept) for the next spawns: a new thread, its registry ref and the
     * task's allocation cost more than the rest of a short connection's
     * task; linked by next. */
    lsv_task_t *spare;
    int nspare;
} lsv_sched_t;

/* Makes srv->vm->sched, after lsv_vm_open: lsv_vm_server works from then
 * on. */
void lsv_sched_init(lsv_server_t *srv);

/* Marks t as waiting on obj; a timeout > 0 wakes it with nil, "timeout"
 * after calling unwait. The caller then returns lua_yield(L, 0). */
void lsv_task_wait(lsv_task_t *t, int wait, void *obj, lsv_unwait_fn unwait,
                   double timeout);

/* Ends t's wait without waking it, so it can wait for the next step. */
void lsv_task_unwait(lsv_task_t *t);

/* Ends t's wait: the nargs values on top of t->co are what the waiting
 * call returns. t runs before the loop next polls. */
void lsv_task_wake(lsv_task_t *t, int nargs);

/* Stops t: it is never resumed again. Safe on a running task (it stops at
 * its next wait). */
void lsv_task_cancel(lsv_task_t *t);

/* Runs every queued task (the prepare watcher). */
void lsv_sched_run(lsv_server_t *srv);

/* Frees every task (at exit; lsv_vm_close frees the scheduler, after the
 * last finalizer ran). */
void lsv_sched_free_all(lsv_server_t *srv);

/* Registers luaserv.sleep, spawn, yield and timer in the module table at
 * the top of the stack. */
void lsv_sched_open(lua_State *L);

#endif

/* sched.c: tasks (coroutines the loop resumes), spawn, sleep, yield. */
#include "lsv.h"
#include "sched.h"
#include "conn.h"
#include "guard.h"
#include "log.h"
#include "server.h"
#include "vm.h"

#include <lauxlib.h>
#include <string.h>

#define TASK_MT "luaserv.task"

/* t->nargs's bits hold any count of values a stack can. */
_Static_assert(LUAI_MAXSTACK < (1 << 21), "lsv_task_t.nargs is 21 bits");

/* Returned tasks kept for reuse, at most (about 1.3 KiB each). */
#define SPARE_MAX 64

/* A task's Lua handle, returned by spawn: cleared when the task ends. */
typedef struct task_handle {
    lsv_task_t *t;
} task_handle_t;

static void task_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

lsv_task_t *lsv_task_current(lua_State *L)
{
    lsv_task_t *t = *(lsv_task_t **)lua_getextraspace(L);
    return t->co == L && t != &t->srv->vm->sched->main_task ? t : NULL;
}

lsv_task_t *lsv_task_check(lua_State *L, const char *what)
{
    lsv_task_t *t = lsv_task_current(L);
    if (unlikely(t == NULL)) {
        if (lua_pushthread(L))
            luaL_error(L, "%s waits, so it must run in a task (a handle() "
                       "function, luaserv.spawn or a timer callback), not in "
                       "a callback like on_message or at load", what);
        luaL_error(L, "%s waits, so it must run in a task (a handle() "
                   "function, luaserv.spawn or a timer callback), not in a "
                   "coroutine the handler created", what);
    }
    if (unlikely(!lua_isyieldable(L)))
        luaL_error(L, "%s cannot wait here (inside a metamethod or a C "
                   "call that cannot yield)", what);
    return t;
}

static void enqueue(lsv_server_t *srv, lsv_task_t *t)
{
    t->wait = LSV_WAIT_READY;
    t->next_ready = NULL;
    if (srv->vm->sched->ready_tail) srv->vm->sched->ready_tail->next_ready = t;
    else srv->vm->sched->ready = t;
    srv->vm->sched->ready_tail = t;
    lsv_server_kick(srv);
}

void lsv_sched_init(lsv_server_t *srv)
{
    lsv_sched_t *s = lsv_calloc(1, sizeof *s);
    s->main_task.srv = srv;
    s->main_task.co = srv->vm->L;
    *(lsv_task_t **)lua_getextraspace(srv->vm->L) = &s->main_task;
    srv->vm->sched = s;
}

lsv_task_t *lsv_task_spawn(lsv_server_t *srv, lua_State *L, int nargs,
                           lsv_conn_t *conn, lsv_task_end_fn on_end)
{
    lsv_sched_t *s = srv->vm->sched;
    lsv_task_t *t = s->spare;
    if (t != NULL) {
        /* A returned task's thread: its stack is empty, its hook is set
         * at each resume, and a thread holds no upvalues of its own, so
         * nothing of the last task (nor of a script since reloaded)
         * reaches this one. */
        lua_State *co = t->co;
        int ref = t->ref;
        s->spare = t->next;
        s->nspare--;
        memset(t, 0, sizeof *t);
        t->co = co;
        t->ref = ref;
    } else {
        /* The thread first: it may raise (memory) on L, and nothing is
         * held yet. L is the caller's thread, whose error handling covers
         * that: the main thread has none while a task runs. */
        lua_State *co = lua_newthread(L);
        int ref = luaL_ref(L, LUA_REGISTRYINDEX);
        t = lsv_calloc(1, sizeof *t);
        t->co = co;
        t->ref = ref;
    }
    t->srv = srv;
    *(lsv_task_t **)lua_getextraspace(t->co) = t;
    lua_xmove(L, t->co, nargs + 1);
    t->nargs = (unsigned)nargs;
    t->conn = conn;
    t->on_end = on_end;
    lsv_task_t *parent = lsv_task_current(L);
    t->listener = conn ? lsv_conn_listener(conn)
                : parent ? parent->listener : srv->vm->listener;
    ev_init(&t->timer, task_timer_cb);
    t->next = srv->vm->sched->tasks;
    if (srv->vm->sched->tasks) srv->vm->sched->tasks->prev = t;
    srv->vm->sched->tasks = t;
    srv->stats.tasks_active++;
    enqueue(srv, t);
    return t;
}

static void task_free(lsv_task_t *t)
{
    lsv_server_t *srv = t->srv;
    ev_timer_stop(srv->loop, &t->timer);
    if (t->handle) ((task_handle_t *)t->handle)->t = NULL;
    if (t->conn) t->on_end(t, t->conn, NULL, 1);
    /* The thread may outlive us in a user's table: point it back at the
     * main task so nothing reads freed memory through its extra space. */
    *(lsv_task_t **)lua_getextraspace(t->co) = &srv->vm->sched->main_task;
    if (t->prev) t->prev->next = t->next;
    else srv->vm->sched->tasks = t->next;
    if (t->next) t->next->prev = t->prev;
    srv->stats.tasks_active--;
    lsv_sched_t *s = srv->vm->sched;
    /* Only a task that returned: a failed or cancelled one's thread is
     * dead or stopped mid-call. (A thread the user kept from
     * coroutine.running() is then another task's; resuming a task's
     * thread by hand was never supported.) */
    if (t->reusable && s->nspare < SPARE_MAX &&
        lua_status(t->co) == LUA_OK) {
        lua_settop(t->co, 0);      /* its results: nothing is kept alive */
        t->next = s->spare;
        s->spare = t;
        s->nspare++;
        return;
    }
    luaL_unref(srv->vm->L, LUA_REGISTRYINDEX, t->ref);
    free(t);
}

void lsv_task_wait(lsv_task_t *t, int wait, void *obj, lsv_unwait_fn unwait,
                   double timeout)
{
    t->wait = (unsigned)wait;
    t->wait_obj = obj;
    t->unwait = unwait;
    if (timeout > 0) {
        ev_timer_set(&t->timer, timeout, 0.);
        ev_timer_start(t->srv->loop, &t->timer);
    }
}

void lsv_task_unwait(lsv_task_t *t)
{
    ev_timer_stop(t->srv->loop, &t->timer);
    t->wait = LSV_WAIT_NONE;
    t->wait_obj = NULL;
    t->unwait = NULL;
}

void lsv_task_wake(lsv_task_t *t, int nargs)
{
    lsv_task_unwait(t);
    t->nargs = (unsigned)nargs;
    enqueue(t->srv, t);
}

static void task_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)revents;
    lsv_task_t *t = container_of(w, lsv_task_t, timer);
    if (t->wait == LSV_WAIT_SLEEP) {
        lsv_task_wake(t, 0);
        return;
    }
    if (t->unwait) t->unwait(t);
    lua_pushnil(t->co);
    lua_pushliteral(t->co, "timeout");
    lsv_task_wake(t, 2);
}

void lsv_task_cancel(lsv_task_t *t)
{
    if (t->cancelled) return;
    t->cancelled = 1;
    if (t->wait == LSV_WAIT_READY || t->wait == LSV_WAIT_NONE) return;
    /* Waiting: undo the registration and let the run loop drop it. */
    if (t->unwait) t->unwait(t);
    lsv_task_wake(t, 0);
}

/* Under task_done's pcall: [co] -> the traceback of co's error. */
static int traceback_cb(lua_State *L)
{
    lua_State *co = lua_touserdata(L, 1);
    const char *msg = lua_tostring(co, -1);
    luaL_traceback(L, co, msg ? msg : "(error object is not a string)", 0);
    return 1;
}

/* A task finished (status LUA_OK) or failed: report, then free it. */
static void task_done(lsv_task_t *t, int status)
{
    lsv_server_t *srv = t->srv;
    lua_State *L = srv->vm->L;
    lsv_conn_t *c = t->conn;
    t->conn = NULL;          /* on_end may free the conn */
    if (status != LUA_OK) {
        if (c == NULL) lsv_vm_count_error(srv, t->listener);
        /* The traceback is made under a pcall: out of memory, the bare
         * message (already a string on the task's stack) goes instead. */
        const char *err;
        lua_pushcfunction(L, traceback_cb);
        lua_pushlightuserdata(L, t->co);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
            err = lua_tostring(L, -1);
        } else {
            lua_pop(L, 1);
            err = lua_tostring(t->co, -1);
            lua_pushnil(L);      /* what the pop below takes */
        }
        if (err == NULL) err = "(error object is not a string)";
        if (c)
            t->on_end(t, c, err, 0);
        else
            lsv_error("handler error in a task: %s", err);
        lua_pop(L, 1);
    } else if (c) {
        t->on_end(t, c, NULL, 0);
    }
    t->reusable = status == LUA_OK;
    task_free(t);
}

/* The count hook of a running task: every task_slice instructions it
 * hands the loop back, as HAProxy does every 10,000 Lua instructions, so
 * a CPU-bound task shares the loop instead of freezing it. The task goes
 * on at its next turn. A coroutine the task created inherits the hook
 * (lua_newthread copies it) but is not a task: yielding there would
 * return to the user's own resume, so it is left alone, as is a task
 * inside a call that cannot yield (a metamethod called from C, a
 * table.sort comparator), which the time budget still bounds. */
static void slice_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    if (lua_isyieldable(L) && lsv_task_current(L) != NULL) {
        lsv_task_current(L)->srv->stats.preemptions++;
        lua_yield(L, 0);
    }
}

void lsv_sched_run(lsv_server_t *srv)
{
    /* Only the tasks ready now run in this pass. Those that become ready
     * meanwhile (a sleep(0), a yield, a preempted task, one another task
     * woke) wait for the next turn, after a poll that does not block
     * (enqueue kicks the idle watcher): the loop polls between two runs
     * of a task, so I/O and signals always get through. */
    lsv_task_t *t, *batch = srv->vm->sched->ready;
    srv->vm->sched->ready = srv->vm->sched->ready_tail = NULL;
    int slice = srv->opt.task_slice;
    while ((t = batch) != NULL) {
        batch = t->next_ready;
        t->wait = LSV_WAIT_NONE;
        if (t->cancelled) {
            task_free(t);
            continue;
        }
        int nres, nargs = t->nargs;
        t->nargs = 0;
        lsv_guard_enter(t->co);
        /* Set every run, even to none: a thread inherits the hook of the
         * one that created it. */
        if (slice > 0) lua_sethook(t->co, slice_hook, LUA_MASKCOUNT, slice);
        else lua_sethook(t->co, NULL, 0, 0);
        int status = lua_resume(t->co, srv->vm->L, nargs, &nres);
        lsv_guard_leave(t->co);
        if (status == LUA_YIELD) {
            lua_pop(t->co, nres);
            /* A plain coroutine.yield() from the task, or the slice hook:
             * run it again on the next turn, as a cooperative yield. */
            if (t->wait == LSV_WAIT_NONE) enqueue(srv, t);
            else if (t->cancelled && t->wait != LSV_WAIT_READY) {
                if (t->unwait) t->unwait(t);
                lsv_task_wake(t, 0);
            }
            continue;
        }
        task_done(t, status);
    }
}

void lsv_sched_free_all(lsv_server_t *srv)
{
    while (srv->vm->sched->tasks) {
        lsv_task_t *t = srv->vm->sched->tasks;
        if (t->unwait) t->unwait(t);
        task_free(t);
    }
    srv->vm->sched->ready = srv->vm->sched->ready_tail = NULL;
    lsv_task_t *t;
    while ((t = srv->vm->sched->spare) != NULL) {
        srv->vm->sched->spare = t->next;
        luaL_unref(srv->vm->L, LUA_REGISTRYINDEX, t->ref);
        free(t);
    }
    srv->vm->sched->nspare = 0;
}

/* --- Lua API ------------------------------------------------------------ */

/* luaserv.sleep(seconds): waits in the current task. [-0, +0, v] */
static int api_sleep(lua_State *L)
{
    lua_Number s = luaL_checknumber(L, 1);
    luaL_argcheck(L, s >= 0, 1, "seconds must be >= 0");
    lsv_task_t *t = lsv_task_check(L, "luaserv.sleep()");
    if (s == 0) {
        lsv_task_wake(t, 0);      /* just let others run */
    } else {
        lsv_task_wait(t, LSV_WAIT_SLEEP, NULL, NULL, (double)s);
    }
    return lua_yield(L, 0);
}

/* luaserv.spawn(fn, ...) -> task. Runs fn(...) as a new task, before the
 * loop next polls. [-0, +1, v] */
static int api_spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lsv_server_t *srv = lsv_vm_server(L);
    lsv_task_t *t = lsv_task_spawn(srv, L, lua_gettop(L) - 1, NULL, NULL);
    task_handle_t *h = lua_newuserdatauv(L, sizeof *h, 0);
    h->t = t;
    t->handle = h;
    luaL_setmetatable(L, TASK_MT);
    return 1;
}

/* task:cancel(): the task never runs again. Returns true if it was
 * still alive. */
static int task_cancel(lua_State *L)
{
    task_handle_t *h = luaL_checkudata(L, 1, TASK_MT);
    int alive = h->t != NULL && !h->t->cancelled;
    if (alive) lsv_task_cancel(h->t);
    lua_pushboolean(L, alive);
    return 1;
}

/* task:status() -> "running" | "waiting" | "dead". */
static int task_status(lua_State *L)
{
    task_handle_t *h = luaL_checkudata(L, 1, TASK_MT);
    if (h->t == NULL || h->t->cancelled) lua_pushliteral(L, "dead");
    else if (h->t->co == L) lua_pushliteral(L, "running");
    else lua_pushliteral(L, "waiting");
    return 1;
}

static int task_gc(lua_State *L)
{
    task_handle_t *h = luaL_checkudata(L, 1, TASK_MT);
    if (h->t) h->t->handle = NULL;
    return 0;
}

void lsv_sched_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "cancel", task_cancel },
        { "status", task_status },
        { NULL, NULL }
    };
    if (luaL_newmetatable(L, TASK_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, task_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, api_sleep);
    lua_setfield(L, -2, "sleep");
    lua_pushcfunction(L, api_spawn);
    lua_setfield(L, -2, "spawn");
}

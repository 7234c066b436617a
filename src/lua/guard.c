/* guard.c: a time budget per handler call and a memory cap for Lua. */
#include "lsv.h"
#include "guard.h"

#include <lauxlib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

/* The watchdog is SIGALRM, a few times per budget. Its handler only reads
 * these and calls lua_sethook, which the Lua manual allows from a signal
 * handler (lua.c stops a script on Ctrl-C this way). */
static double budgets[LSV_GUARD_NKINDS];   /* seconds per kind, 0 = none */
static size_t mem_limit, mem_used;
static lua_State *volatile running;         /* innermost guarded thread */
static volatile int64_t started_ns;         /* outermost call's start */
static volatile sig_atomic_t depth;
static volatile int cur_kind;               /* LSV_GUARD_* of the scope */
static lua_State *volatile hooked;          /* thread the hook was set on */
/* The hook `hooked` had before ours (a task's slice hook), put back when
 * the call unwinds. */
static lua_Hook saved_hook;
static int saved_mask, saved_count;
/* The thread of each guarded nesting level, so an inner call on another
 * thread (a callback run from a task) hands the watchdog back on return. */
#define STACK_MAX LSV_GUARD_STACK
static lua_State *stack[STACK_MAX];
static int timer_on;

/* The coarse clock: every handler call reads it, and on this kind of
 * machine (kvm-clock) CLOCK_MONOTONIC costs about 45 ns a read against 5
 * for the coarse one, which only reads what the last tick stored. The
 * budget is checked a few times per budget anyway; a call is never cut
 * short for the clock's resolution (coarse_res_ns, added to the budget),
 * only late by up to a tick of it. */
static int64_t coarse_res_ns;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Runs at the next instruction of a call over its budget, and at every
 * one after (until the call unwinds), so a handler cannot pcall its way
 * past it. */
static void timeout_hook(lua_State *L, lua_Debug *ar)
{
    char msg[160];
    double b = budgets[cur_kind];
    switch (cur_kind) {
    case LSV_GUARD_LOAD:
        snprintf(msg, sizeof msg, "load timeout: loading the script took "
                 "over %g s (--handler-timeout; slow setup belongs in "
                 "on_load, see --load-timeout)", b);
        break;
    case LSV_GUARD_ON_LOAD:
        snprintf(msg, sizeof msg, "on_load timeout: still running after "
                 "%g s (--load-timeout)", b);
        break;
    default:
        snprintf(msg, sizeof msg, "handler timeout: still running after "
                 "%g s (--handler-timeout)", b);
    }
    /* Where it was: the script's line, as any error says. */
    if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0)
        luaL_error(L, "%s:%d: %s", ar->short_src, ar->currentline, msg);
    luaL_error(L, "%s", msg);
}

/* Sets the timeout hook on L, saving the hook it replaces. */
static void hook(lua_State *L)
{
    saved_hook = lua_gethook(L);
    saved_mask = lua_gethookmask(L);
    saved_count = lua_gethookcount(L);
    hooked = L;
    lua_sethook(L, timeout_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT,
                1);
}

static void alarm_handler(int sig)
{
    (void)sig;
    lua_State *L = running;
    if (L == NULL || depth == 0 || hooked != NULL) return;
    double b = budgets[cur_kind];
    if (b <= 0 ||
        (double)(now_ns() - started_ns - coarse_res_ns) / 1e9 < b) return;
    hook(L);
}

/* Takes our hook off the thread it was set on, putting back the one it
 * replaced. */
static void unhook(void)
{
    if (hooked == NULL) return;
    lua_sethook(hooked, saved_hook, saved_mask, saved_count);
    hooked = NULL;
}

/* The time is up already and a call on L begins (an on_close that a
 * timed-out task's conn:close() runs, say): the watchdog ignores calls
 * while a thread is hooked, so L gets the hook now, with SIGALRM held
 * off meanwhile. Also puts back a hook someone took off L. */
static void rehook(lua_State *L)
{
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGALRM);
    sigprocmask(SIG_BLOCK, &set, &old);
    unhook();
    hook(L);
    sigprocmask(SIG_SETMASK, &old, NULL);
}

/* Starts the watchdog ticking a few times per shortest budget. */
static void start_timer(void)
{
    double shortest = 0;
    for (int k = 0; k < LSV_GUARD_NKINDS; k++)
        if (budgets[k] > 0 && (shortest == 0 || budgets[k] < shortest))
            shortest = budgets[k];
    if (shortest <= 0 || timer_on) return;
    timer_on = 1;
    struct timespec res;
    if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0)
        coarse_res_ns = (int64_t)res.tv_sec * 1000000000 + res.tv_nsec;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = alarm_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    double tick = shortest / 4 < 0.01 ? 0.01 : shortest / 4;
    if (tick > 0.25) tick = 0.25;
    struct itimerval it;
    it.it_interval.tv_sec = (time_t)tick;
    it.it_interval.tv_usec = (suseconds_t)((tick - (double)(time_t)tick) * 1e6);
    it.it_value = it.it_interval;
    setitimer(ITIMER_REAL, &it, NULL);
}

void lsv_guard_set_load_timeout(double load_timeout)
{
    budgets[LSV_GUARD_ON_LOAD] = load_timeout;
}

void lsv_guard_init(double handler_timeout, size_t lua_memory)
{
    budgets[LSV_GUARD_HANDLER] = handler_timeout;
    budgets[LSV_GUARD_LOAD] = handler_timeout;
    mem_limit = lua_memory;
    start_timer();
}

void lsv_guard_after_fork(void)
{
    timer_on = 0;   /* a child does not inherit the interval timer */
    start_timer();
}

size_t lsv_guard_memory(void)
{
    return mem_used;
}

size_t lsv_guard_full(void)
{
    if (mem_limit == 0 || mem_used < mem_limit - mem_limit / 8) return 0;
    return mem_limit;
}

void lsv_guard_enter(lua_State *L)
{
    if (depth == 0) {
        cur_kind = LSV_GUARD_HANDLER;
        started_ns = now_ns();
    }
    if (depth < STACK_MAX) stack[depth] = L;
    running = L;
    depth++;
    if (unlikely(hooked != NULL)) rehook(L);
}

void lsv_guard_leave(lua_State *L)
{
    if (--depth > 0) {
        /* Back in the caller's thread: the watchdog watches it again, and
         * its next tick hooks that thread if the time is still up. */
        running = stack[depth < STACK_MAX ? depth - 1 : STACK_MAX - 1];
        if (hooked == L && running != L) unhook();
        return;
    }
    running = NULL;
    unhook();
}

void lsv_guard_begin(lsv_guard_scope_t *sc, lua_State *L, int kind)
{
    sc->nested = hooked != NULL;   /* the caller is out of time already */
    sc->L = L;
    sc->running = running;
    if (sc->nested) {
        lsv_guard_enter(L);
        return;
    }
    sc->depth = depth;
    sc->kind = cur_kind;
    depth = 0;                     /* the watchdog looks away meanwhile */
    memcpy(sc->stack, stack, sizeof stack);
    lsv_guard_enter(L);
    cur_kind = kind;
}

void lsv_guard_end(lsv_guard_scope_t *sc)
{
    if (sc->nested) {
        lsv_guard_leave(sc->L);
        return;
    }
    depth = 0;
    running = NULL;
    unhook();
    memcpy(stack, sc->stack, sizeof stack);
    cur_kind = sc->kind;
    running = sc->running;
    started_ns = now_ns();         /* the caller's clock starts over */
    depth = sc->depth;
}

void *lsv_guard_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        mem_used -= old;
        return NULL;
    }
    if (unlikely(mem_limit && depth > 0 && nsize > old &&
                 mem_used + (nsize - old) > mem_limit))
        return NULL;     /* Lua collects, retries, then raises */
    void *p = realloc(ptr, nsize);
    if (p == NULL) return NULL;
    mem_used = mem_used - old + nsize;
    return p;
}

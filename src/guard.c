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
static double budget;                       /* seconds, 0 = none */
static size_t mem_limit, mem_used;
static lua_State *volatile running;         /* innermost guarded thread */
static volatile int64_t started_ns;         /* outermost call's start */
static volatile sig_atomic_t depth;
static lua_State *volatile hooked;          /* thread the hook was set on */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Runs at the next instruction of a call over its budget, and at every
 * one after (until the call unwinds), so a handler cannot pcall its way
 * past it. */
static void timeout_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    char msg[128];
    snprintf(msg, sizeof msg, "handler timeout: still running after %g s "
             "(--handler-timeout)", budget);
    luaL_error(L, "%s", msg);
}

static void alarm_handler(int sig)
{
    (void)sig;
    lua_State *L = running;
    if (L == NULL || depth == 0 || hooked != NULL) return;
    if ((double)(now_ns() - started_ns) / 1e9 < budget) return;
    hooked = L;
    lua_sethook(L, timeout_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT,
                1);
}

void lsv_guard_init(double handler_timeout, size_t lua_memory)
{
    budget = handler_timeout;
    mem_limit = lua_memory;
    if (budget <= 0) return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = alarm_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    double tick = budget / 4 < 0.01 ? 0.01 : budget / 4;
    if (tick > 1) tick = 1;
    struct itimerval it;
    it.it_interval.tv_sec = (time_t)tick;
    it.it_interval.tv_usec = (suseconds_t)((tick - (double)(time_t)tick) * 1e6);
    it.it_value = it.it_interval;
    setitimer(ITIMER_REAL, &it, NULL);
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
    if (depth++ == 0) started_ns = budget > 0 ? now_ns() : 0;
    running = L;
}

void lsv_guard_leave(lua_State *L)
{
    (void)L;
    if (--depth > 0) return;
    running = NULL;
    if (hooked != NULL) {
        lua_sethook(hooked, NULL, 0, 0);
        hooked = NULL;
    }
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

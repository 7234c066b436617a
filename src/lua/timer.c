/* timer.c: luaserv.timer.after and luaserv.timer.every. */
#include "lsv.h"
#include "timer.h"
#include "sched.h"
#include "server.h"
#include "vm.h"

#include <lauxlib.h>

#define TIMER_MT "luaserv.timer"

/* A timer's state lives in its userdata. While armed, a registry ref
 * keeps the userdata (and through its user value, the function) alive, so
 * a handler need not keep the handle. */
typedef struct ltimer {
    ev_timer w;
    lsv_server_t *srv;
    int self_ref;       /* LUA_NOREF when not armed */
} ltimer_t;

static void disarm(ltimer_t *t)
{
    if (t->self_ref == LUA_NOREF) return;
    ev_timer_stop(t->srv->loop, &t->w);
    luaL_unref(t->srv->vm->L, LUA_REGISTRYINDEX, t->self_ref);
    t->self_ref = LUA_NOREF;
}

/* Each firing runs the function as a new task, so it may sleep, read
 * and connect like any task. */
static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)revents;
    ltimer_t *t = container_of(w, ltimer_t, w);
    lsv_server_t *srv = t->srv;
    lua_State *L = srv->vm->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->self_ref);
    lua_getiuservalue(L, -1, 1);
    lua_remove(L, -2);
    if (w->repeat == 0.) disarm(t);   /* may free nothing: fn is on stack */
    lsv_task_spawn(srv, L, 0, NULL, NULL);
}

/* Creates and arms a timer for the function at 2. [-0, +1, m] */
static int new_timer(lua_State *L, double after, double repeat)
{
    luaL_checktype(L, 2, LUA_TFUNCTION);
    ltimer_t *t = lua_newuserdatauv(L, sizeof *t, 1);
    t->srv = lsv_vm_server(L);
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, TIMER_MT);
    ev_timer_init(&t->w, timer_cb, after, repeat);
    ev_timer_start(t->srv->loop, &t->w);
    lua_pushvalue(L, -1);
    t->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

/* luaserv.timer.after(seconds, fn) -> timer: runs fn once. */
static int timer_after(lua_State *L)
{
    lua_Number s = luaL_checknumber(L, 1);
    luaL_argcheck(L, s >= 0, 1, "seconds must be >= 0");
    return new_timer(L, (double)s, 0.);
}

/* luaserv.timer.every(seconds, fn) -> timer: runs fn every seconds,
 * first after seconds. */
static int timer_every(lua_State *L)
{
    lua_Number s = luaL_checknumber(L, 1);
    luaL_argcheck(L, s > 0, 1, "seconds must be > 0");
    return new_timer(L, (double)s, (double)s);
}

/* timer:cancel() -> true if it was still armed. */
static int timer_cancel(lua_State *L)
{
    ltimer_t *t = luaL_checkudata(L, 1, TIMER_MT);
    int armed = t->self_ref != LUA_NOREF;
    disarm(t);
    lua_pushboolean(L, armed);
    return 1;
}

static int timer_gc(lua_State *L)
{
    ltimer_t *t = luaL_checkudata(L, 1, TIMER_MT);
    /* Only unarmed timers are collected; stop the watcher to be sure. */
    ev_timer_stop(t->srv->loop, &t->w);
    return 0;
}

/* Adds luaserv.timer to the module table at the top of the stack. */
void lsv_timer_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "cancel", timer_cancel },
        { NULL, NULL }
    };
    static const luaL_Reg funcs[] = {
        { "after", timer_after },
        { "every", timer_every },
        { NULL, NULL }
    };
    if (luaL_newmetatable(L, TIMER_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, timer_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    lua_setfield(L, -2, "timer");
}

/* lua_conn.h: the conn userdata Lua handlers see. */
#ifndef LSV_LUA_CONN_H
#define LSV_LUA_CONN_H

#include "lsv.h"
#include "conn.h"
#include "sched.h"

#include <lauxlib.h>
#include <lua.h>

#define LSV_CONN_MT "luaserv.conn"
#define LSV_DGRAM_MT "luaserv.dgram"

/* A conn as Lua sees it, and what the handler layer keeps per conn: the
 * C conn's data pointer (lsv_conn_data) points here. c is cleared when
 * the C conn goes away, so every method checks it, as liolib.c does for
 * closed files. */
typedef struct lsv_lconn {
    const void *tag;           /* lsv_lconn_check's mark (lua_conn.c) */
    lsv_conn_t *c;
    int ref;                   /* the registry's ref to this userdata (a
                                * weak table's for an outbound conn) */
    int connected;             /* on_connect ran, so on_close is due */
    /* The union keeps the userdata at 56 bytes, a smaller allocator chunk
     * (memory per idle conn, bench/idle_mem.py). The struct is read only
     * through lsv_lconn_of (so while c is set); lsv_lconn_detach then
     * overwrites it with c's id, which lsv_lconn_id reads. The waiting
     * read's framer position is c's own (lsv_conn_pull_hint). */
    union {
        struct {
            lsv_task_t *task;      /* the handle() task serving it */
            lsv_task_t *reader;    /* a task waiting for its input */
            lsv_task_t *writer;    /* a task waiting for its output to
                                    * drain */
            double msg_t0;         /* stream: a read returned a frame then */
        };
        lua_Integer closed_id;     /* once detached (c NULL) */
    };
} lsv_lconn_t;

/* u's conn id, also once its conn is gone. */
static inline lua_Integer lsv_lconn_id(const lsv_lconn_t *u)
{
    return u->c ? (lua_Integer)lsv_conn_id(u->c) : u->closed_id;
}

/* The handler layer's state for c (NULL once detached). */
static inline lsv_lconn_t *lsv_lconn_of(const lsv_conn_t *c)
{
    return lsv_conn_data(c);
}

/* Checks that the value at idx is a conn userdata. [-0, +0, v] */
lsv_lconn_t *lsv_lconn_check(lua_State *L, int idx);

/* Registers the conn and datagram metatables in L. */
void lsv_lconn_open(lua_State *L);

/* Pushes nil, err: a runtime failure's result (luaL_fileresult's
 * style). Returns 2. [-0, +2, m] */
static inline int lsv_push_fail(lua_State *L, const char *err)
{
    luaL_pushfail(L);
    lua_pushstring(L, err);
    return 2;
}

/* Pushes nil and errno err as a short lowercase message ("timeout" for
 * ETIMEDOUT). Returns 2. [-0, +2, m] */
int lsv_push_errno(lua_State *L, int err);

/* Raises a caller error naming `what` unless the values at 2..top are
 * strings, numbers or tables of them; checked before anything is written,
 * so a write is all or nothing. [-0, +0, v] */
void lsv_lconn_check_pieces(lua_State *L, const char *what);

/* Adds methods to the conn metatable's method table (the stream style's
 * own, from stream.c). [-0, +0, m] */
void lsv_lconn_add_methods(lua_State *L, const luaL_Reg *methods);

/* Makes c's userdata and binds the two: c's data points at it and the
 * registry keeps it (weakly for an outbound conn, which the garbage
 * collector then closes) until lsv_lconn_detach. Allocates: for c NULL
 * it makes the userdata only, for lsv_lconn_bind after the conn exists.
 * Leaves the userdata on the stack. [-0, +1, m] */
lsv_lconn_t *lsv_lconn_new(lua_State *L, lsv_conn_t *c, int outbound);
void lsv_lconn_bind(lsv_lconn_t *u, lsv_conn_t *c);

/* Pushes the userdata of c (made by lsv_lconn_new; nil if it is gone).
 * Allocates nothing. [-0, +1, -] */
void lsv_lconn_push(lua_State *L, lsv_conn_t *c);

/* Cuts the userdata off from c (its methods then return nil, "closed")
 * and drops c's ref to it. [-0, +0, -] */
void lsv_lconn_detach(lua_State *L, lsv_conn_t *c);

/* Pushes the light conn of a datagram listener, creating it on first use.
 * [-0, +1, m] */
void lsv_ldgram_push(lua_State *L, lsv_dgram_t *d);

#endif

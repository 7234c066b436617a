/* lua_conn.h: the conn userdata Lua handlers see. */
#ifndef LSV_LUA_CONN_H
#define LSV_LUA_CONN_H

#include "lsv.h"
#include "server.h"

#include <lua.h>

#define LSV_CONN_MT "luaserv.conn"
#define LSV_DGRAM_MT "luaserv.dgram"

/* A conn as Lua sees it. c is cleared when the C conn goes away, so every
 * method checks it, as liolib.c does for closed files. */
typedef struct lsv_lconn {
    lsv_conn_t *c;
    lua_Integer id;
} lsv_lconn_t;

/* Checks that the value at idx is a conn userdata. [-0, +0, v] */
lsv_lconn_t *lsv_lconn_check(lua_State *L, int idx);

/* Registers the conn and datagram metatables in L. */
void lsv_lconn_open(lua_State *L);

/* Pushes the userdata for c, creating it on first use; c keeps a registry
 * ref to it until lsv_lconn_detach. [-0, +1, m] */
void lsv_lconn_push(lua_State *L, lsv_conn_t *c);

/* Cuts the userdata off from c (its methods then return nil, "closed")
 * and drops c's ref to it. [-0, +0, -] */
void lsv_lconn_detach(lua_State *L, lsv_conn_t *c);

/* Pushes the light conn of a datagram listener, creating it on first use.
 * [-0, +1, m] */
void lsv_ldgram_push(lua_State *L, lsv_dgram_t *d);

#endif

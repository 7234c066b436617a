/* connect.h: luaserv.connect(host, port[, opts]): outbound stream
 * connections for tasks, served in the stream style. */
#ifndef LSV_CONNECT_H
#define LSV_CONNECT_H

#include <lua.h>

/* Adds luaserv.connect to the module table at the top of the stack.
 * [-0, +0, m] */
void lsv_connect_open_api(lua_State *L);

#endif

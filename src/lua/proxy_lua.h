/* proxy_lua.h: conn.proxy, what a PROXY header said, as a Lua table. */
#ifndef LSV_PROXY_LUA_H
#define LSV_PROXY_LUA_H

#include "lsv.h"
#include "proxy.h"

#include <lua.h>

/* Pushes conn.proxy for the conn userdata at idx whose header is p: a
 * table built on first access and kept (weakly, by the userdata) for the
 * next, so conn.proxy == conn.proxy. Pushes nil when p is NULL.
 * [-0, +1, m] */
void lsv_proxy_push(lua_State *L, int idx, const lsv_proxy_info_t *p);

#endif

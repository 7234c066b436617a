/* lua_api.h: the `luaserv` module handlers require, and the opening of
 * the whole handler layer. */
#ifndef LSV_LUA_API_H
#define LSV_LUA_API_H

#include "lsv.h"
#include "server.h"

#include <lua.h>

/* The module loader, for package.preload["luaserv"]. [-0, +1, m] */
int luaopen_luaserv(lua_State *L);

/* Opens the handler layer for srv: the Lua state (lsv_vm_open, with
 * script's folder on the module path), the scheduler, the conn
 * metatables, and `luaserv` and `luaserv.core` in package.preload. */
void lsv_lua_open(lsv_server_t *srv, const char *script);

/* Sets luaserv.worker.id and .count (1 and 1 unless set): the worker
 * process this is, 1..count, or 0 in a master, and how many there are.
 * Updates the module too if a script required it already. */
void lsv_lua_set_worker(lsv_server_t *srv, int id, int count);

#endif

/* core_module.h: luaserv.core, the server's own controls (stats per
 * listener, connections, reload, eval, log level, shutdown, the core
 * metrics) that the admin socket and the metrics endpoint, Lua handlers
 * in lua/luaserv, are written in. */
#ifndef LSV_CORE_MODULE_H
#define LSV_CORE_MODULE_H

#include <lua.h>

/* The module loader, for package.preload["luaserv.core"]. [-0, +1, m] */
int luaopen_luaserv_core(lua_State *L);

#endif

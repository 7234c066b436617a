/* ws_lua.h: the WebSocket handler layer's own module, luaserv.wscore (the
 * decoder, lsv_ws_push, is declared in decode.h). */
#ifndef LSV_WS_LUA_H
#define LSV_WS_LUA_H

#include <lua.h>

/* The loader for package.preload["luaserv.wscore"]: accept(key) gives
 * Sec-WebSocket-Accept for a Sec-WebSocket-Key; sha1(s) and base64(s).
 * lua/luaserv/websocket.lua builds on it. [-0, +1, m] */
int luaopen_luaserv_wscore(lua_State *L);

#endif

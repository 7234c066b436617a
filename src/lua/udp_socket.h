/* udp_socket.h: luaserv.udp(): outbound datagram sockets for tasks. */
#ifndef LSV_UDP_SOCKET_H
#define LSV_UDP_SOCKET_H

#include <lua.h>

/* Adds luaserv.udp to the module table at the top of the stack and
 * registers the socket metatable. [-0, +0, m] */
void lsv_udp_open_api(lua_State *L);

#endif

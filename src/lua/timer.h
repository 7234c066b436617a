/* timer.h: luaserv.timer.after and luaserv.timer.every: callbacks run as
 * tasks when a libev timer fires. */
#ifndef LSV_TIMER_H
#define LSV_TIMER_H

#include <lua.h>

/* Adds the `timer` table to the luaserv module table at the top of the
 * stack. [-0, +0, m] */
void lsv_timer_open(lua_State *L);

#endif

/* shared.h: luaserv.shared.NAME, the shared dicts (core/shdict.h) as Lua
 * objects with ngx.shared.DICT's methods and return conventions. */
#ifndef LSV_SHARED_H
#define LSV_SHARED_H

#include "lsv.h"
#include <lua.h>
#include <stddef.h>

/* At most this many dicts, each name at most LSV_SHARED_NAME_MAX bytes
 * of letters, digits and '_', not starting with a digit. */
#define LSV_SHARED_MAX 32
#define LSV_SHARED_NAME_MAX 63

/* Declares the dict name of size bytes: maps its region now, so call it
 * at start-up, before any script runs and before any fork. Returns LSV_OK,
 * or LSV_ERR with err filled (a bad or repeated name, too many dicts, a
 * size under the minimum, or the mapping failed). */
int lsv_shared_create(const char *name, size_t size, char err[LSV_ERRLEN]);

/* Whether name is a dict's name as lsv_shared_create wants it. */
int lsv_shared_name_ok(const char *name);

/* Adds `shared` (name -> dict; nil for an undeclared name) to the luaserv
 * module table at the top of the stack. [-0, +0, m] */
void lsv_shared_open(lua_State *L);

#endif

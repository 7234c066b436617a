/* ws_lua.c: placeholder, replaced by WebSocket decoding (issue 11). */
#include "lsv.h"
#include "decode.h"

int lsv_ws_push(lua_State *L, lsv_conn_t *c, const lsv_frame_spec_t *spec,
                const char *p, size_t n)
{
    (void)c; (void)spec;
    lua_pushlstring(L, p, n);
    return 1;
}

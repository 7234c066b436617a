/* resp_lua.c: placeholder, replaced by RESP decoding (issue 11). */
#include "lsv.h"
#include "decode.h"

int lsv_resp_push(lua_State *L, const lsv_frame_spec_t *spec, const char *p,
                  size_t n)
{
    (void)spec;
    lua_pushlstring(L, p, n);
    return 1;
}

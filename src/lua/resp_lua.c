/* resp_lua.c: RESP frames as Lua values: a command's arguments (server)
 * or a reply (client). The frames come from lsv_resp_frame (src/core),
 * complete and valid, and are walked once more with lsv_resp_item. */
#include "lsv.h"
#include "decode.h"
#include "resp.h"

#include <lauxlib.h>

/* The largest inline line decoded in a stack buffer; longer ones (up to
 * LSV_RESP_INLINE_MAX) use a scratch userdata. */
#define INLINE_STACK 512

/* An inline command: { args... }, or nothing for an empty line.
 * [-0, +(0|1), m] */
static int push_inline(lua_State *L, const char *p, size_t n)
{
    char small[INLINE_STACK];
    char *buf = n <= sizeof small ? small : lua_newuserdatauv(L, n, 0);
    int scratch = buf != small;
    size_t pos = 0, k;
    int argc = 0;
    lua_newtable(L);
    while (lsv_resp_inline_arg(p, n, &pos, buf, &k) == 1) {
        lua_pushlstring(L, buf, k);
        lua_rawseti(L, -2, ++argc);
    }
    if (argc == 0) {
        lua_pop(L, 1 + scratch);
        return 0;
    }
    if (scratch) lua_remove(L, -2);
    return 1;
}

/* A multibulk command: { args... } sized up front, or nothing for "*0"
 * and "*-1". [-0, +(0|1), m] */
static int push_command(lua_State *L, const char *p, size_t n)
{
    if (lsv_resp_is_inline(p, n))
        return push_inline(L, p, n);
    size_t pos = 0;
    lsv_resp_item_t it;
    if (!lsv_resp_item(p, n, &pos, &it) || it.num <= 0)
        return 0;
    int argc = (int)it.num;
    lua_createtable(L, argc, 0);
    for (int i = 1; i <= argc; i++) {
        if (unlikely(!lsv_resp_item(p, n, &pos, &it) || it.type != '$'))
            luaL_error(L, "resp: malformed command frame");
        lua_pushlstring(L, it.str, it.len);
        lua_rawseti(L, -2, i);
    }
    return 1;
}

/* The reply element at p[*pos], arrays recursively (depth is bounded by
 * the framer's LSV_RESP_MAX_DEPTH). [-0, +1, m] */
static void push_reply(lua_State *L, const char *p, size_t n, size_t *pos,
                       int depth)
{
    lsv_resp_item_t it;
    if (unlikely(depth > LSV_RESP_MAX_DEPTH || !lsv_resp_item(p, n, pos, &it)))
        luaL_error(L, "resp: malformed reply frame");
    luaL_checkstack(L, 3, "resp: reply nested too deeply");
    switch (it.type) {
    case '+':
        lua_pushlstring(L, it.str, it.len);
        break;
    case '-':
        lua_createtable(L, 0, 1);
        lua_pushlstring(L, it.str, it.len);
        lua_setfield(L, -2, "err");
        break;
    case ':':
        lua_pushinteger(L, (lua_Integer)it.num);
        break;
    case '$':
        if (it.num < 0)
            lua_pushlightuserdata(L, NULL);     /* luaserv.null */
        else
            lua_pushlstring(L, it.str, it.len);
        break;
    default:                                    /* '*' */
        if (it.num < 0) {
            lua_pushlightuserdata(L, NULL);
            break;
        }
        lua_createtable(L, (int)it.num, 0);
        for (long long i = 1; i <= it.num; i++) {
            push_reply(L, p, n, pos, depth + 1);
            lua_rawseti(L, -2, (lua_Integer)i);
        }
        break;
    }
}

/* See decode.h. Server: { "SET", "k", "v" }, or no value for an empty
 * command (the handler is not called). Client: one reply value. */
int lsv_resp_push(lua_State *L, const lsv_frame_spec_t *spec, const char *p,
                  size_t n)
{
    if (!spec->client)
        return push_command(L, p, n);
    size_t pos = 0;
    push_reply(L, p, n, &pos, 0);
    return 1;
}

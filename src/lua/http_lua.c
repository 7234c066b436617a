/* http_lua.c: an HTTP request frame (http.c) as the request table
 * handlers get (docs/handler-api.md "HTTP"). */
#include "lsv.h"
#include "decode.h"
#include "http.h"

#include <lauxlib.h>
#include <string.h>

/* The registry keys of the headers' and the requests' shared metatables. */
static char headers_mt_key, request_mt_key;

/* What lsv_http_push gathers from the headers besides the tables. */
typedef struct req_info {
    int chunked, close, keep_alive, upgrade_token;
    const char *upgrade;
    size_t upgrade_len;
} req_info_t;

/* headers.__index(t, k): a key with capitals looks up its lowercase form,
 * so req.headers["Content-Type"] finds "content-type".
 * [-0, +1, m] */
static int headers_index(lua_State *L)
{
    size_t n;
    const char *k = lua_tolstring(L, 2, &n);
    if (k == NULL || lua_type(L, 2) != LUA_TSTRING) return 0;
    size_t i = 0;
    while (i < n && !(k[i] >= 'A' && k[i] <= 'Z')) i++;
    if (i == n) return 0;               /* lowercase already: a real miss */
    luaL_Buffer b;
    char *d = luaL_buffinitsize(L, &b, n);
    for (i = 0; i < n; i++)
        d[i] = (char)(k[i] >= 'A' && k[i] <= 'Z' ? k[i] + 32 : k[i]);
    luaL_pushresultsize(&b, n);
    lua_rawget(L, 1);
    return 1;
}

/* Pushes the headers' metatable, made once per state.
 * [-0, +1, m] */
static void push_headers_mt(lua_State *L)
{
    if (likely(lua_rawgetp(L, LUA_REGISTRYINDEX, &headers_mt_key) ==
               LUA_TTABLE))
        return;
    lua_pop(L, 1);
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, headers_index);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "luaserv.http.headers");
    lua_setfield(L, -2, "__name");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &headers_mt_key);
}

/* Pushes name[0, n) lowercased; short names are lowercased on the C
 * stack, so a common name costs a string-table lookup, no allocation.
 * [-0, +1, m] */
static void push_lower(lua_State *L, const char *name, size_t n, char *tmp,
                       size_t cap)
{
    char *d = tmp;
    luaL_Buffer b;
    if (n > cap) d = luaL_buffinitsize(L, &b, n);
    for (size_t i = 0; i < n; i++)
        d[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32
                                                       : name[i]);
    if (n > cap) luaL_pushresultsize(&b, n);
    else lua_pushlstring(L, d, n);
}

/* Notes what a header means for the request (names compared ignoring
 * case, in C: no Lua string is made for a header here). */
static void note_header(const char *name, size_t nlen, const char *v,
                        size_t vlen, req_info_t *ri)
{
    if (nlen == 10 && lsv_http_ieq(name, nlen, "connection")) {
        if (lsv_http_has_token(v, vlen, "close")) ri->close = 1;
        if (lsv_http_has_token(v, vlen, "keep-alive")) ri->keep_alive = 1;
        if (lsv_http_has_token(v, vlen, "upgrade")) ri->upgrade_token = 1;
    } else if (nlen == 7 && lsv_http_ieq(name, nlen, "upgrade")) {
        ri->upgrade = v;
        ri->upgrade_len = vlen;
    } else if (nlen == 17 && lsv_http_ieq(name, nlen, "transfer-encoding")) {
        ri->chunked = 1;                /* the framer allows only chunked */
    }
}

/* Sets H[lname] = value, or appends ", " value to a repeated header's.
 * Stack: [..., H, ..., lname, value] -> [..., H, ..., lname, value].
 * [-0, +0, m] */
static void set_header(lua_State *L, int H)
{
    lua_pushvalue(L, -2);
    if (likely(lua_rawget(L, H) == LUA_TNIL)) {
        lua_pop(L, 1);
        lua_pushvalue(L, -2);
        lua_pushvalue(L, -2);
        lua_rawset(L, H);
        return;
    }
    lua_pushliteral(L, ", ");
    lua_pushvalue(L, -3);
    lua_concat(L, 3);
    lua_pushvalue(L, -3);
    lua_insert(L, -2);
    lua_rawset(L, H);
}

/* Builds req.headers and req.header_list from the head p[0, n) (request
 * line and header fields, as lsv_http_push stored them in req.head) and
 * sets both in req. Any string is safe: the walkers stop at its end.
 * [-0, +0, m] */
static void build_headers(lua_State *L, int req, const char *p, size_t n)
{
    const char *name, *v;
    size_t nlen, vlen;
    lsv_http_line_t rl;
    size_t i = lsv_http_request_line(p, n, &rl), j = i;
    int count = 0;
    if (i > 0)
        while (lsv_http_field(p, n, &j, &name, &nlen, &v, &vlen)) count++;
    luaL_checkstack(L, 8, "http headers");
    push_headers_mt(L);
    lua_createtable(L, 0, count);
    int H = lua_gettop(L);
    lua_insert(L, H - 1);               /* [H, mt] */
    lua_setmetatable(L, H - 1);
    H--;
    lua_createtable(L, count, 0);
    int list = lua_gettop(L);
    char tmp[64];
    for (int k = 1; k <= count &&
                    lsv_http_field(p, n, &i, &name, &nlen, &v, &vlen); k++) {
        lua_createtable(L, 2, 0);
        lua_pushlstring(L, name, nlen);
        lua_rawseti(L, -2, 1);
        push_lower(L, name, nlen, tmp, sizeof tmp);
        lua_pushlstring(L, v, vlen);
        lua_pushvalue(L, -1);
        lua_rawseti(L, -4, 2);          /* pair[2] = value */
        set_header(L, H);
        lua_pop(L, 2);
        lua_rawseti(L, list, k);        /* list[k] = pair */
    }
    lua_setfield(L, req, "header_list");
    lua_setfield(L, req, "headers");
}

/* request.__index(req, k): req.headers and req.header_list are built on
 * first use from req.head, then stored in req (later lookups are plain
 * table hits). Any other missing key is nil.
 * [-0, +1, m] */
static int request_index(lua_State *L)
{
    size_t kn, n;
    const char *k = lua_tolstring(L, 2, &kn);
    if (k == NULL || lua_type(L, 2) != LUA_TSTRING) return 0;
    if (!(kn == 7 && memcmp(k, "headers", 7) == 0) &&
        !(kn == 11 && memcmp(k, "header_list", 11) == 0))
        return 0;
    if (lua_getfield(L, 1, "head") != LUA_TSTRING) return 0;
    const char *p = lua_tolstring(L, -1, &n);
    build_headers(L, 1, p, n);
    lua_pushvalue(L, 2);
    lua_rawget(L, 1);
    return 1;
}

/* Pushes the requests' metatable, made once per state.
 * [-0, +1, m] */
static void push_request_mt(lua_State *L)
{
    if (likely(lua_rawgetp(L, LUA_REGISTRYINDEX, &request_mt_key) ==
               LUA_TTABLE))
        return;
    lua_pop(L, 1);
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, request_index);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "luaserv.http.request");
    lua_setfield(L, -2, "__name");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &request_mt_key);
}

/* Scans the header fields at *i for what the request needs at once
 * (keep-alive, upgrade, chunked); leaves *i at the body. */
static void scan_headers(const char *p, size_t n, size_t *i, req_info_t *ri)
{
    const char *name, *v;
    size_t nlen, vlen;
    while (lsv_http_field(p, n, i, &name, &nlen, &v, &vlen))
        note_header(name, nlen, v, vlen, ri);
}

/* Pushes the decoded chunked body that starts at p[i]: sized first, then
 * copied once.
 * [-0, +1, m] */
static void push_chunked(lua_State *L, const char *p, size_t n, size_t i)
{
    const char *d;
    size_t len, total = 0, j = i;
    while (lsv_http_chunk(p, n, &j, &d, &len)) total += len;
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, total);
    size_t at = 0;
    while (at < total && lsv_http_chunk(p, n, &i, &d, &len)) {
        memcpy(out + at, d, len);
        at += len;
    }
    luaL_pushresultsize(&b, at);
}

/* Sets req.target, req.path and req.query; path is target's own string
 * when there is no query.
 * [-0, +0, m] */
static void set_target(lua_State *L, int req, const lsv_http_line_t *rl,
                       const char *q)
{
    lua_pushlstring(L, rl->target, rl->target_len);
    if (q == NULL) {
        lua_pushvalue(L, -1);
        lua_setfield(L, req, "path");
        lua_setfield(L, req, "target");
        return;
    }
    lua_setfield(L, req, "target");
    size_t plen = (size_t)(q - rl->target);
    lua_pushlstring(L, rl->target, plen);
    lua_setfield(L, req, "path");
    lua_pushlstring(L, q + 1, rl->target_len - plen - 1);
    lua_setfield(L, req, "query");
}

/* The request table of the frame p[0, n) that lsv_http_frame accepted.
 * The head (request line and header fields) is kept whole in req.head;
 * req.headers and req.header_list are built from it on first use by the
 * request metatable (request_index), so a handler that reads no header
 * costs no table per header. The fields the request needs at once
 * (keep_alive, upgrade, a chunked body) are found by a scan in C.
 * The table is sized for its fields and the kit's req.params.
 * [-0, +1, m] */
int lsv_http_push(lua_State *L, const lsv_frame_spec_t *spec, const char *p,
                  size_t n)
{
    (void)spec;
    lsv_http_line_t rl;
    size_t i = lsv_http_request_line(p, n, &rl);
    if (unlikely(i == 0)) return luaL_error(L, "http: not a request frame");
    req_info_t ri = { 0 };
    scan_headers(p, n, &i, &ri);
    const char *q = memchr(rl.target, '?', rl.target_len);
    int upgrade = ri.upgrade_token && ri.upgrade != NULL;
    luaL_checkstack(L, 8, "http request");
    lua_createtable(L, 0, 8 + (q != NULL) + upgrade);
    int req = lua_gettop(L);
    lua_pushlstring(L, rl.method, rl.method_len);
    lua_setfield(L, req, "method");
    set_target(L, req, &rl, q);
    if (rl.minor) lua_pushliteral(L, "1.1");
    else lua_pushliteral(L, "1.0");
    lua_setfield(L, req, "version");
    lua_pushlstring(L, p, i);
    lua_setfield(L, req, "head");
    if (ri.chunked) push_chunked(L, p, n, i);
    else lua_pushlstring(L, p + i, n - i);
    lua_setfield(L, req, "body");
    lua_pushboolean(L, rl.minor ? !ri.close : ri.keep_alive && !ri.close);
    lua_setfield(L, req, "keep_alive");
    if (upgrade) {
        char tmp[64];
        push_lower(L, ri.upgrade, ri.upgrade_len, tmp, sizeof tmp);
        lua_setfield(L, req, "upgrade");
    }
    push_request_mt(L);
    lua_setmetatable(L, req);
    return 1;
}

/* shared.c: luaserv.shared.NAME, the dicts every worker shares, with
 * ngx.shared.DICT's methods: a failure is nil plus a short token ("not
 * found", "exists", "no memory", ...), a caller's bug raises. */
#include "lsv.h"
#include "shared.h"
#include "shdict.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#define SHARED_MT "luaserv.shared"
#define KEYS_DEFAULT 1024

/* The declared dicts; made before any fork, so every worker has them at
 * the same addresses, and never freed (the processes end with them). */
static struct {
    char name[LSV_SHARED_NAME_MAX + 1];
    lsv_shdict_t *d;
} dicts[LSV_SHARED_MAX];
static int ndicts;

/* A dict's userdata. */
typedef struct ldict {
    lsv_shdict_t *d;
    const char *name;
} ldict_t;

/* Where values read out of a dict land before Lua copies them: this
 * process's own, grown to the biggest value read (never past a dict's
 * size). Lua is not called while it is in use. */
static char scratch_small[4096];
static char *scratch = scratch_small;
static size_t scratch_size = sizeof scratch_small;

/* Makes the scratch buffer at least n bytes. Returns 0 when memory runs
 * out (the buffer stays as it was). */
static int scratch_grow(size_t n)
{
    if (n <= scratch_size) return 1;
    char *p = malloc(n);
    if (p == NULL) return 0;
    if (scratch != scratch_small) free(scratch);
    scratch = p;
    scratch_size = n;
    return 1;
}

int lsv_shared_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > LSV_SHARED_NAME_MAX) return 0;
    if (name[0] >= '0' && name[0] <= '9') return 0;
    return strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                        "0123456789_") == n;
}

int lsv_shared_create(const char *name, size_t size, char err[LSV_ERRLEN])
{
    if (!lsv_shared_name_ok(name)) {
        snprintf(err, LSV_ERRLEN, "shared dict name '%.80s' must be letters, "
                 "digits and _ (at most %d), not starting with a digit",
                 name, LSV_SHARED_NAME_MAX);
        return LSV_ERR;
    }
    for (int i = 0; i < ndicts; i++)
        if (strcmp(dicts[i].name, name) == 0) {
            snprintf(err, LSV_ERRLEN, "shared dict %s is declared twice",
                     name);
            return LSV_ERR;
        }
    if (ndicts == LSV_SHARED_MAX) {
        snprintf(err, LSV_ERRLEN, "too many shared dicts (at most %d)",
                 LSV_SHARED_MAX);
        return LSV_ERR;
    }
    char why[LSV_ERRLEN];
    lsv_shdict_t *d = lsv_shdict_new(size, why);
    if (d == NULL) {
        snprintf(err, LSV_ERRLEN, "shared dict %s: %.180s", name, why);
        return LSV_ERR;
    }
    snprintf(dicts[ndicts].name, sizeof dicts[ndicts].name, "%s", name);
    dicts[ndicts++].d = d;
    return LSV_OK;
}

/* --- arguments and results ---------------------------------------------- */

static lsv_shdict_t *check_dict(lua_State *L)
{
    return ((ldict_t *)luaL_checkudata(L, 1, SHARED_MT))->d;
}

/* The key at 2. [-0, +0, v] */
static const char *check_key(lua_State *L, size_t *klen)
{
    return luaL_checklstring(L, 2, klen);
}

/* The value at idx into *v (a string borrowed from the stack); nil only
 * when nil_ok. [-0, +0, v] */
static void check_value(lua_State *L, int idx, lsv_shdict_val_t *v,
                        int nil_ok)
{
    memset(v, 0, sizeof *v);
    switch (lua_type(L, idx)) {
    case LUA_TNONE:
    case LUA_TNIL:
        if (!nil_ok) break;
        v->type = LSV_SHDICT_NIL;
        return;
    case LUA_TBOOLEAN:
        v->type = LSV_SHDICT_BOOL;
        v->i = lua_toboolean(L, idx);
        return;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            v->type = LSV_SHDICT_INT;
            v->i = (int64_t)lua_tointeger(L, idx);
        } else {
            v->type = LSV_SHDICT_NUM;
            v->n = (double)lua_tonumber(L, idx);
        }
        return;
    case LUA_TSTRING:
        v->type = LSV_SHDICT_STR;
        v->s = lua_tolstring(L, idx, &v->len);
        return;
    }
    luaL_argerror(L, idx, nil_ok ? "string, number, boolean or nil expected"
                                 : "string, number or boolean expected");
}

/* A number of seconds at idx, >= 0; 0 when absent. [-0, +0, v] */
static double check_ttl(lua_State *L, int idx)
{
    lua_Number t = luaL_optnumber(L, idx, 0);
    luaL_argcheck(L, t >= 0, idx, "seconds >= 0 expected");
    return (double)t;
}

/* [-0, +1, m] */
static void push_value(lua_State *L, const lsv_shdict_val_t *v)
{
    switch (v->type) {
    case LSV_SHDICT_STR: lua_pushlstring(L, v->s, v->len); break;
    case LSV_SHDICT_INT: lua_pushinteger(L, (lua_Integer)v->i); break;
    case LSV_SHDICT_NUM: lua_pushnumber(L, (lua_Number)v->n); break;
    case LSV_SHDICT_BOOL: lua_pushboolean(L, (int)v->i); break;
    default: lua_pushnil(L);
    }
}

/* nil and rc's token; a bad key says which way it is bad. [-0, +2, m] */
static int fail(lua_State *L, int rc, size_t klen)
{
    lua_pushnil(L);
    if (rc == LSV_SHDICT_BAD_KEY)
        lua_pushstring(L, klen == 0 ? "empty key" : "key too long");
    else
        lua_pushstring(L, lsv_shdict_strerror(rc));
    return 2;
}

/* --- reading ------------------------------------------------------------ */

/* dict:get(key) -> value, flags? | nil | nil, "value is a list": the
 * flags only when not 0, as ngx.shared does. [-0, +(1|2), m] */
static int dict_get(lua_State *L)
{
    lsv_shdict_t *d = check_dict(L);
    size_t klen, need;
    const char *key = check_key(L, &klen);
    lsv_shdict_val_t v;
    int rc;
    while ((rc = lsv_shdict_get(d, key, klen, &v, scratch, scratch_size,
                                &need)) == LSV_SHDICT_TOO_BIG)
        if (!scratch_grow(need)) return fail(L, LSV_SHDICT_NO_MEMORY, klen);
    if (rc == LSV_SHDICT_NOT_FOUND) {
        lua_pushnil(L);
        return 1;
    }
    if (rc != LSV_SHDICT_OK) return fail(L, rc, klen);
    push_value(L, &v);
    if (v.flags == 0) return 1;
    lua_pushinteger(L, (lua_Integer)v.flags);
    return 2;
}

/* dict:lpop(key), dict:rpop(key) -> value | nil | nil, err. The upvalue
 * says which end. [-0, +(1|2), m] */
static int dict_pop(lua_State *L)
{
    lsv_shdict_t *d = check_dict(L);
    int left = lua_toboolean(L, lua_upvalueindex(1));
    size_t klen, need;
    const char *key = check_key(L, &klen);
    lsv_shdict_val_t v;
    int rc;
    while ((rc = lsv_shdict_pop(d, key, klen, left, &v, scratch,
                                scratch_size, &need)) == LSV_SHDICT_TOO_BIG)
        if (!scratch_grow(need)) return fail(L, LSV_SHDICT_NO_MEMORY, klen);
    if (rc == LSV_SHDICT_NOT_FOUND) {
        lua_pushnil(L);
        return 1;
    }
    if (rc != LSV_SHDICT_OK) return fail(L, rc, klen);
    push_value(L, &v);
    return 1;
}

/* dict:get_keys([max]) -> { key, ... }: live keys, most recently used
 * first; at most max (default 1024, 0 = all). The keys are read straight
 * into a userdata, so an allocation that raises holds nothing, and a
 * finalizer run by it cannot change them; when keys came in between, the
 * read is made again. [-0, +1, m] */
static int dict_get_keys(lua_State *L)
{
    lsv_shdict_t *d = check_dict(L);
    lua_Integer max = luaL_optinteger(L, 2, KEYS_DEFAULT);
    luaL_argcheck(L, max >= 0, 2, "a count >= 0 expected");
    size_t need, count, size = 0;
    char *keys = NULL;
    lua_settop(L, 2);
    while (lsv_shdict_keys(d, (size_t)max, keys, size, &need, &count) ==
           LSV_SHDICT_TOO_BIG) {
        lua_settop(L, 2);
        size = need + 1024;
        keys = lua_newuserdatauv(L, size, 0);
    }
    lua_createtable(L, count > INT32_MAX ? 0 : (int)count, 0);
    size_t off = 0;
    for (size_t i = 1; i <= count; i++) {
        uint32_t len;
        memcpy(&len, keys + off, 4);
        lua_pushlstring(L, keys + off + 4, len);
        lua_rawseti(L, -2, (lua_Integer)i);
        off += 4 + len;
    }
    return 1;
}

/* dict:ttl(key) -> seconds left (0 = no TTL) | nil, "not found". */
static int dict_ttl(lua_State *L)
{
    lsv_shdict_t *d = check_dict(L);
    size_t klen;
    const char *key = check_key(L, &klen);
    double ttl;
    int rc = lsv_shdict_ttl(d, key, klen, &ttl);
    if (rc != LSV_SHDICT_OK) return fail(L, rc, klen);
    lua_pushnumber(L, (lua_Number)ttl);
    return 1;
}

/* dict:llen(key) -> n (0 for an absent key) | nil, "value not a list". */
static int dict_llen(lua_State *L)
{
    lsv_shdict_t *d = check_dict(L);
    size_t klen, len;
    const char *key = check_key(L, &klen);
    int rc = lsv_shdict_llen(d, key, klen, &len);
    if (rc != LSV_SHDICT_OK) return fail(L, rc, klen);
    lua_pushinteger(L, (lua_Integer)len);
    return 1;
}

/* dict:capacity() -> bytes; dict:free_space() -> bytes. */
static int dict_capacity(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)lsv_shdict_capacity(check_dict(L)));
    return 1;
}

static int dict_free_space(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)lsv_shdict_free_space(check_dict(L)));
    return 1;
}

/* --- writing ------------------------------------------------------------ */

/* dict:set(key, value[, ttl[, flags]]) -> true, nil, forcible |
 * nil, err, false; add, replace and safe_set too (the upvalue is the
 * LSV_SHDICT_* op). A nil value deletes. forcible is true when live
 * entries were evicted to make room. [-0, +3, v] */
static int dict_store(lua_State *L)
{
    lsv_shdict_t *d = check_dict(L);
    int op = (int)lua_tointeger(L, lua_upvalueindex(1));
    size_t klen;
    const char *key = check_key(L, &klen);
    lsv_shdict_val_t v;
    check_value(L, 3, &v, 1);
    double ttl = check_ttl(L, 4);
    lua_Integer flags = luaL_optinteger(L, 5, 0);
    luaL_argcheck(L, flags >= 0 && flags <= UINT32_MAX, 5,
                  "flags from 0 to 2^32-1 expected");
    v.flags = (uint32_t)flags;
    int forcible;
    int rc = lsv_shdict_store(d, op, key, klen, &v, ttl, &forcible);
    if (rc != LSV_SHDICT_OK) {
        fail(L, rc, klen);
        lua_pushboolean(L, forcible);
        return 3;
    }
    lua_pushboolean(L, 1);
    lua_pushnil(L);
    lua_pushboolean(L, forcible);
    return 3;
}

/* dict:delete(key) -> true. */
static int dict_delete(lua_State *L)
{
    lsv_shdict_t *d = check_dict(L);
    size_t klen;
    const char *key = check_key(L, &klen);
    lsv_shdict_val_t v = { .type = LSV_SHDICT_NIL };
    int forcible;
    int rc = lsv_shdict_store(d, LSV_SHDICT_SET, key, klen, &v, 0, &forcible);
    if (rc != LSV_SHDICT_OK) return fail(L, rc, klen);
    lua_pushboolean(L, 1);
    return 1;
}

/* dict:incr(key, n[, init[, init_ttl]]) -> new value, nil, forcible |
 * nil, err: "not found" without init, "not a number". [-0, +3, v] */
static int dict_incr(lua_State *L)
{
    lsv_shdict_t *d = check_dict(L);
    size_t klen;
    const char *key = check_key(L, &klen);
    lsv_shdict_val_t by, init, out;
    luaL_checktype(L, 3, LUA_TNUMBER);
    check_value(L, 3, &by, 0);
    if (!lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TNUMBER);
        check_value(L, 4, &init, 0);
    }
    double init_ttl = check_ttl(L, 5);
    int forcible;
    int rc = lsv_shdict_incr(d, key, klen, &by,
                             lua_isnoneornil(L, 4) ? NULL : &init, init_ttl,
                             &out, &forcible);
    if (rc != LSV_SHDICT_OK) return fail(L, rc, klen);
    push_value(L, &out);
    lua_pushnil(L);
    lua_pushboolean(L, forcible);
    return 3;
}

/* dict:expire(key, ttl) -> true | nil, "not found": ttl seconds from now
 * (0 = none). */
static int dict_expire(lua_State *L)
{
    lsv_shdict_t *d = check_dict(L);
    size_t klen;
    const char *key = check_key(L, &klen);
    luaL_checktype(L, 3, LUA_TNUMBER);
    int rc = lsv_shdict_expire(d, key, klen, check_ttl(L, 3));
    if (rc != LSV_SHDICT_OK) return fail(L, rc, klen);
    lua_pushboolean(L, 1);
    return 1;
}

/* dict:lpush(key, value), dict:rpush(key, value) -> length |
 * nil, "value not a list" | nil, "no memory". [-0, +(1|2), v] */
static int dict_push(lua_State *L)
{
    lsv_shdict_t *d = check_dict(L);
    int left = lua_toboolean(L, lua_upvalueindex(1));
    size_t klen, len;
    const char *key = check_key(L, &klen);
    lsv_shdict_val_t v;
    check_value(L, 3, &v, 0);
    int rc = lsv_shdict_push(d, key, klen, left, &v, &len);
    if (rc != LSV_SHDICT_OK) return fail(L, rc, klen);
    lua_pushinteger(L, (lua_Integer)len);
    return 1;
}

/* dict:flush_all(); dict:flush_expired([max]) -> how many went. */
static int dict_flush_all(lua_State *L)
{
    lsv_shdict_flush_all(check_dict(L));
    return 0;
}

static int dict_flush_expired(lua_State *L)
{
    lsv_shdict_t *d = check_dict(L);
    lua_Integer max = luaL_optinteger(L, 2, 0);
    luaL_argcheck(L, max >= 0, 2, "a count >= 0 expected");
    lua_pushinteger(L, (lua_Integer)lsv_shdict_flush_expired(d, (size_t)max));
    return 1;
}

static int dict_tostring(lua_State *L)
{
    ldict_t *ld = luaL_checkudata(L, 1, SHARED_MT);
    lua_pushfstring(L, "luaserv.shared.%s", ld->name);
    return 1;
}

/* --- the module --------------------------------------------------------- */

static const luaL_Reg methods[] = {
    { "get", dict_get },
    { "get_keys", dict_get_keys },
    { "ttl", dict_ttl },
    { "llen", dict_llen },
    { "capacity", dict_capacity },
    { "free_space", dict_free_space },
    { "delete", dict_delete },
    { "incr", dict_incr },
    { "expire", dict_expire },
    { "flush_all", dict_flush_all },
    { "flush_expired", dict_flush_expired },
    { NULL, NULL }
};

/* The methods whose upvalue picks what they do. [-0, +0, m] */
static void add_variants(lua_State *L)
{
    static const struct { const char *name; int op; } stores[] = {
        { "set", LSV_SHDICT_SET }, { "add", LSV_SHDICT_ADD },
        { "replace", LSV_SHDICT_REPLACE }, { "safe_set", LSV_SHDICT_SAFE_SET }
    };
    for (size_t i = 0; i < sizeof stores / sizeof *stores; i++) {
        lua_pushinteger(L, stores[i].op);
        lua_pushcclosure(L, dict_store, 1);
        lua_setfield(L, -2, stores[i].name);
    }
    static const char *const ends[] = { "rpush", "lpush", "rpop", "lpop" };
    for (int i = 0; i < 4; i++) {
        lua_pushboolean(L, i % 2);
        lua_pushcclosure(L, i < 2 ? dict_push : dict_pop, 1);
        lua_setfield(L, -2, ends[i]);
    }
}

void lsv_shared_open(lua_State *L)
{
    if (luaL_newmetatable(L, SHARED_MT)) {
        luaL_newlib(L, methods);
        add_variants(L);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, dict_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    lua_createtable(L, 0, ndicts);
    for (int i = 0; i < ndicts; i++) {
        ldict_t *ld = lua_newuserdatauv(L, sizeof *ld, 0);
        ld->d = dicts[i].d;
        ld->name = dicts[i].name;
        luaL_setmetatable(L, SHARED_MT);
        lua_setfield(L, -2, dicts[i].name);
    }
    lua_setfield(L, -2, "shared");
}

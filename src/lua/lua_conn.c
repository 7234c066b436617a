/* lua_conn.c: the conn userdata (stream) and light conn (datagram) in Lua. */
#include "lsv.h"
#include "lua_conn.h"
#include "conn.h"
#include "listener.h"
#include "net.h"
#include "proxy_lua.h"
#include "tls_lua.h"
#include "udp.h"
#include "vm.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef lsv_lconn_t lconn_t;

/* The most one conn:sendfile call sends before it returns, so that one
 * fast reader of a big file does not hold the loop. */
#define SENDFILE_SLICE (1u << 20)

typedef struct ldgram {
    lsv_dgram_t *d;
} ldgram_t;

/* What lsv_lconn_new writes first in every conn userdata. Checking a
 * conn argument (on the hot path of every conn:write and conn:readline)
 * reads its length and this word instead of pushing, comparing and
 * popping its metatable (luaL_checkudata would also hash the name): only
 * lsv_lconn_new writes it, Lua code cannot write a userdata's bytes, and
 * a light userdata's length is 0. */
static const char lconn_tag = 'c';

lsv_lconn_t *lsv_lconn_check(lua_State *L, int idx)
{
    lconn_t *u = lua_touserdata(L, idx);
    if (likely(u != NULL) && likely(lua_rawlen(L, idx) == sizeof *u) &&
        likely(u->tag == &lconn_tag))
        return u;
    luaL_typeerror(L, idx, LSV_CONN_MT);
    return NULL;
}

static lconn_t *check_conn(lua_State *L)
{
    return lsv_lconn_check(L, 1);
}

int lsv_push_errno(lua_State *L, int err)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", strerror(err));
    buf[0] = (char)tolower((unsigned char)buf[0]);
    return lsv_push_fail(L, err == ETIMEDOUT ? "timeout" : buf);
}

static int closed_result(lua_State *L)
{
    luaL_pushfail(L);
    lua_pushliteral(L, "closed");
    return 2;
}

/* Pushes the address fields shared by both kinds of conn; returns 1 if key
 * was one of them. */
static int push_addr_field(lua_State *L, const char *k,
                           const struct sockaddr *sa, socklen_t len, int fd,
                           const lsv_listener_t *l)
{
    char buf[LSV_ADDRSTRLEN];
    if (strcmp(k, "peer") == 0) {
        lua_pushstring(L, lsv_net_format(sa, len, buf));
    } else if (strcmp(k, "peer_ip") == 0 || strcmp(k, "peer_port") == 0) {
        int port;
        lsv_net_split(sa, len, buf, &port);
        if (k[5] == 'i') lua_pushstring(L, buf);
        else if (port >= 0) lua_pushinteger(L, port);
        else lua_pushnil(L);
    } else if (strcmp(k, "local_addr") == 0 || strcmp(k, "local") == 0) {
        lua_pushstring(L, lsv_net_local(fd, buf));
    } else if (strcmp(k, "listener") == 0) {
        lua_pushstring(L, l->name);
    } else {
        return 0;
    }
    return 1;
}

/* Registry key of the weak-keyed table of conns' state tables. A user
 * value would cost every conn 24 bytes (its slot and Udata's longer
 * header: a 128-byte block instead of 112); this costs only the conns
 * whose handler uses conn.state. An ephemeron table keeps a state for as
 * long as its conn's userdata lives, even one that refers back to it. */
static const char states_key = 's';

/* Pushes the state table of the conn at 1, made on first use. [-0, +1, m] */
static void push_state(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &states_key);
    lua_pushvalue(L, 1);
    if (lua_rawget(L, -2) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, 1);
        lua_pushvalue(L, -2);
        lua_rawset(L, -4);
    }
    lua_remove(L, -2);
}

/* conn.field or conn:method. [-0, +1, -] */
static int conn_index(lua_State *L)
{
    lua_pushvalue(L, 2);      /* methods first: conn:write is the hot case */
    if (likely(lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)) return 1;
    lconn_t *u = lua_touserdata(L, 1);   /* only our metatable has this */
    const char *k = lua_tostring(L, 2);
    if (k == NULL) return 1;
    if (strcmp(k, "id") == 0) {
        lua_pushinteger(L, lsv_lconn_id(u));
    } else if (strcmp(k, "state") == 0) {
        push_state(L);
    } else if (strcmp(k, "proxy") == 0) {
        lsv_proxy_push(L, 1, u->c ? lsv_conn_proxy(u->c) : NULL);
    } else if (strcmp(k, "tls") == 0) {
        lsv_tls_push(L, 1, u->c);
    } else if (u->c && (strcmp(k, "local") == 0 ||
                        strcmp(k, "local_addr") == 0)) {
        char buf[LSV_ADDRSTRLEN];
        lua_pushstring(L, lsv_conn_local(u->c, buf));
    } else {
        socklen_t len = 0;
        const struct sockaddr *sa = u->c ? lsv_conn_peer(u->c, &len) : NULL;
        if (sa == NULL || !push_addr_field(L, k, sa, len, lsv_conn_fd(u->c),
                                           lsv_conn_listener(u->c)))
            lua_pushnil(L);
    }
    return 1;
}

static int conn_newindex(lua_State *L)
{
    return luaL_error(L, "conn fields are read-only (keep your own data in "
                      "conn.state)");
}

/* Raises a caller error naming `what` unless the values at 2..top are
 * strings, numbers or tables of them; checked before anything is written,
 * so a write is all or nothing. [-0, +0, v] */
void lsv_lconn_check_pieces(lua_State *L, const char *what)
{
    int n = lua_gettop(L);
    for (int i = 2; i <= n; i++) {
        int t = lua_type(L, i);
        if (likely(t == LUA_TSTRING || t == LUA_TNUMBER)) continue;
        if (t != LUA_TTABLE)
            luaL_error(L, "bad argument #%d to '%s' (string or table of "
                       "strings expected, got %s)", i - 1, what,
                       luaL_typename(L, i));
        lua_Integer len = (lua_Integer)lua_rawlen(L, i);
        for (lua_Integer k = 1; k <= len; k++) {
            int et = lua_rawgeti(L, i, k);
            lua_pop(L, 1);
            if (et != LUA_TSTRING && et != LUA_TNUMBER)
                luaL_error(L, "bad argument #%d to '%s' (element %d of the "
                           "table is a %s, not a string)", i - 1, what,
                           (int)k, lua_typename(L, et));
        }
    }
}

/* conn:close() -> true | nil, "closed" (already closed). Output queued
 * so far is still written. [-0, +(1|2), -] */
static int conn_close(lua_State *L)
{
    lconn_t *u = check_conn(L);
    if (u->c == NULL || lsv_conn_is_closing(u->c))
        return closed_result(L);
    lsv_conn_close(u->c, "closed");
    lua_pushboolean(L, 1);
    return 1;
}

/* conn:set_framing(spec) -> true | nil, "closed". [-0, +1, v] */
static int conn_set_framing(lua_State *L)
{
    lconn_t *u = check_conn(L);
    lsv_frame_spec_t spec;
    char err[LSV_ERRLEN];
    if (lsv_vm_parse_framing(L, 2, &spec, err) != LSV_OK)
        return luaL_argerror(L, 2, err);
    if (u->c == NULL) return closed_result(L);
    if (lsv_conn_set_framing(u->c, &spec) != LSV_OK)
        return luaL_error(L, "not enough memory");
    lua_pushboolean(L, 1);
    return 1;
}

/* conn:set_timeout(seconds) -> true | nil, "closed"; 0 turns it off. */
static int conn_set_timeout(lua_State *L)
{
    lconn_t *u = check_conn(L);
    lua_Number s = luaL_checknumber(L, 2);
    luaL_argcheck(L, s >= 0, 2, "timeout must be >= 0");
    if (u->c == NULL) return closed_result(L);
    lsv_conn_set_timeout(u->c, (double)s);
    lua_pushboolean(L, 1);
    return 1;
}

static int conn_pause(lua_State *L)
{
    lconn_t *u = check_conn(L);
    if (u->c == NULL) return closed_result(L);
    lsv_conn_pause(u->c);
    lua_pushboolean(L, 1);
    return 1;
}

static int conn_resume(lua_State *L)
{
    lconn_t *u = check_conn(L);
    if (u->c == NULL) return closed_result(L);
    lsv_conn_resume(u->c);
    lua_pushboolean(L, 1);
    return 1;
}

static int conn_is_closed(lua_State *L)
{
    lconn_t *u = check_conn(L);
    lua_pushboolean(L, u->c == NULL || lsv_conn_is_closing(u->c));
    return 1;
}

static int conn_tostring(lua_State *L)
{
    lconn_t *u = check_conn(L);
    char buf[LSV_ADDRSTRLEN];
    if (u->c) {
        socklen_t len;
        const struct sockaddr *sa = lsv_conn_peer(u->c, &len);
        lua_pushfstring(L, "conn %I (%s)", lsv_lconn_id(u),
                        lsv_net_format(sa, len, buf));
    } else
        lua_pushfstring(L, "conn %I (closed)", lsv_lconn_id(u));
    return 1;
}

/* Registry key of the conn methods table (__index's upvalue). */
static const char methods_key = 'm';

void lsv_lconn_add_methods(lua_State *L, const luaL_Reg *methods)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &methods_key);
    luaL_setfuncs(L, methods, 0);
    lua_pop(L, 1);
}

/* Registry key of the weak table holding outbound conns' userdata: the
 * core keeps an accepted conn's userdata alive, but an outbound conn the
 * handler dropped is closed by the garbage collector, like a file. */
static const char weak_key = 'w';

/* Pushes the table u's ref lives in. [-0, +1, -] */
static void push_ref_table(lua_State *L, int outbound)
{
    if (outbound)
        lua_rawgetp(L, LUA_REGISTRYINDEX, &weak_key);
    else
        lua_pushvalue(L, LUA_REGISTRYINDEX);
}

lsv_lconn_t *lsv_lconn_new(lua_State *L, lsv_conn_t *c, int outbound)
{
    lconn_t *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    u->tag = &lconn_tag;
    u->ref = LUA_NOREF;
    luaL_setmetatable(L, LSV_CONN_MT);
    push_ref_table(L, outbound);
    lua_pushvalue(L, -2);
    u->ref = luaL_ref(L, -2);
    lua_pop(L, 1);
    if (c) lsv_lconn_bind(u, c);
    return u;
}

void lsv_lconn_bind(lsv_lconn_t *u, lsv_conn_t *c)
{
    u->c = c;
    lsv_conn_set_data(c, u);
}

void lsv_lconn_push(lua_State *L, lsv_conn_t *c)
{
    lconn_t *u = lsv_lconn_of(c);
    if (likely(u != NULL) && !lsv_conn_is_outbound(c)) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, u->ref);
        return;
    }
    if (u == NULL) {
        lua_pushnil(L);
        return;
    }
    lua_rawgetp(L, LUA_REGISTRYINDEX, &weak_key);
    lua_rawgeti(L, -1, u->ref);
    lua_remove(L, -2);
}

void lsv_lconn_detach(lua_State *L, lsv_conn_t *c)
{
    lconn_t *u = lsv_lconn_of(c);
    if (u == NULL) return;
    lsv_conn_set_data(c, NULL);
    u->closed_id = (lua_Integer)lsv_conn_id(c);  /* task .. msg_t0 end */
    u->c = NULL;
    push_ref_table(L, lsv_conn_is_outbound(c));
    luaL_unref(L, -1, u->ref);
    lua_pop(L, 1);
    u->ref = LUA_NOREF;
}

/* An outbound conn nobody references any more is closed. */
static int conn_gc(lua_State *L)
{
    lconn_t *u = lua_touserdata(L, 1);
    lsv_conn_t *c = u->c;
    if (c == NULL || !lsv_conn_is_outbound(c)) return 0;
    lsv_lconn_detach(L, c);
    lsv_conn_abort(c, "closed");
    return 0;
}

/* conn:pending() -> bytes queued for the peer and not yet written. */
static int conn_pending(lua_State *L)
{
    lconn_t *u = check_conn(L);
    lua_pushinteger(L, u->c ? (lua_Integer)lsv_conn_pending(u->c) : 0);
    return 1;
}

/* conn:buffered() -> bytes received and not yet taken as a frame or read:
 * with a protocol framing, the part of a request still arriving (how
 * luaserv.http tells a stalled request from an idle keep-alive).
 * [-0, +1, -] */
static int conn_buffered(lua_State *L)
{
    lconn_t *u = check_conn(L);
    lua_pushinteger(L, u->c ? (lua_Integer)lsv_conn_buffered(u->c) : 0);
    return 1;
}

/* conn:sendfile(path, offset, count) -> bytes sent[, "again" | "eof"]
 * | nil, "pending" | "unsupported" | "closed" | err
 * Sends up to count bytes of the file from offset straight from the
 * kernel (sendfile(2)), past the output queue, which must be empty
 * (conn:flush() first): "pending" otherwise. Stops at 1 MiB, at "again"
 * (the socket is full: queue some bytes with conn:write and flush, then
 * call again) or at "eof" (the file is shorter). "unsupported": the
 * transport must see the bytes (TLS); copy them with conn:write.
 * [-0, +(1|2), -] */
static int conn_sendfile(lua_State *L)
{
    lconn_t *u = check_conn(L);
    const char *path = luaL_checkstring(L, 2);
    lua_Integer off = luaL_checkinteger(L, 3);
    lua_Integer count = luaL_checkinteger(L, 4);
    luaL_argcheck(L, off >= 0, 3, "offset must be >= 0");
    luaL_argcheck(L, count >= 0, 4, "count must be >= 0");
    if (u->c == NULL) return lsv_push_fail(L, "closed");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return luaL_fileresult(L, 0, path);
    off_t at = (off_t)off;
    size_t left = count > SENDFILE_SLICE ? SENDFILE_SLICE : (size_t)count;
    lua_Integer sent = 0;
    const char *stop = NULL;
    int err = 0;
    while (left > 0) {
        ssize_t r = lsv_conn_sendfile(u->c, fd, &at, left);
        if (r > 0) {
            sent += r;
            left -= (size_t)r;
        } else {
            if (r == 0) stop = "eof";
            else if (r == LSV_AGAIN) stop = "again";
            else err = errno;
            break;
        }
    }
    close(fd);
    if (err && sent == 0) {
        return lsv_push_fail(L, err == EBUSY ? "pending"
                              : err == ENOTSUP ? "unsupported"
                              : err == EPIPE ? "closed" : strerror(err));
    }
    lua_pushinteger(L, sent);
    if (err) stop = "again";            /* the next call reports it */
    if (stop == NULL) return 1;
    lua_pushstring(L, stop);
    return 2;
}

/* --- the light conn of a datagram listener ------------------------------ */

static lsv_dgram_t *check_dgram(lua_State *L)
{
    ldgram_t *u = luaL_checkudata(L, 1, LSV_DGRAM_MT);
    if (!u->d->in_call)
        luaL_error(L, "a datagram conn is valid only during its on_message "
                   "call");
    return u->d;
}

static int dgram_index(lua_State *L)
{
    lsv_dgram_t *d = check_dgram(L);
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
    const char *k = lua_tostring(L, 2);
    if (k == NULL) return 1;
    if (strcmp(k, "id") == 0)
        lua_pushinteger(L, 0);
    else if (!push_addr_field(L, k, (struct sockaddr *)&d->peer, d->peer_len,
                              d->listener->fd, d->listener))
        lua_pushnil(L);
    return 1;
}

/* conn:write(...) on a datagram conn: adds to the one reply datagram;
 * takes what a stream conn:write takes. [-0, +1, v] */
static int dgram_write(lua_State *L)
{
    lsv_dgram_t *d = check_dgram(L);
    lsv_lconn_check_pieces(L, "conn:write");
    int n = lua_gettop(L);
    size_t len;
    for (int i = 2; i <= n; i++) {
        int ok = LSV_OK;
        if (lua_type(L, i) != LUA_TTABLE) {
            const char *s = lua_tolstring(L, i, &len);
            ok = lsv_udp_write(d, s, len);
        } else {
            lua_Integer m = (lua_Integer)lua_rawlen(L, i);
            for (lua_Integer k = 1; k <= m && ok == LSV_OK; k++) {
                lua_rawgeti(L, i, k);
                const char *s = lua_tolstring(L, -1, &len);
                ok = lsv_udp_write(d, s, len);
                lua_pop(L, 1);
            }
        }
        if (unlikely(ok != LSV_OK) && d->in_call)
            luaL_error(L, "conn:write: the reply is over %d bytes, more "
                       "than one datagram holds", LSV_DGRAM_MAX);
    }
    lua_settop(L, 1);
    return 1;
}

static int dgram_true(lua_State *L)
{
    check_dgram(L);
    lua_pushboolean(L, 1);
    return 1;
}

static int dgram_false(lua_State *L)
{
    check_dgram(L);
    lua_pushboolean(L, 0);
    return 1;
}

static int dgram_tostring(lua_State *L)
{
    ldgram_t *u = luaL_checkudata(L, 1, LSV_DGRAM_MT);
    char buf[LSV_ADDRSTRLEN];
    if (u->d->in_call)
        lua_pushfstring(L, "datagram conn (%s)",
                        lsv_net_format((struct sockaddr *)&u->d->peer,
                                       u->d->peer_len, buf));
    else
        lua_pushliteral(L, "datagram conn (idle)");
    return 1;
}

void lsv_ldgram_push(lua_State *L, lsv_dgram_t *d)
{
    /* The registry keeps it under d's address. */
    if (likely(lua_rawgetp(L, LUA_REGISTRYINDEX, d) != LUA_TNIL)) return;
    lua_pop(L, 1);
    ldgram_t *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->d = d;
    luaL_setmetatable(L, LSV_DGRAM_MT);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, d);
}

static const luaL_Reg conn_methods[] = {
    { "close", conn_close },
    { "set_framing", conn_set_framing },
    { "set_timeout", conn_set_timeout },
    { "pause", conn_pause },
    { "resume", conn_resume },
    { "is_closed", conn_is_closed },
    { "pending", conn_pending },
    { "buffered", conn_buffered },
    { "sendfile", conn_sendfile },
    { NULL, NULL }
};

static const luaL_Reg dgram_methods[] = {
    { "write", dgram_write },
    { "close", dgram_true },
    { "is_closed", dgram_false },
    { NULL, NULL }
};

static void new_metatable(lua_State *L, const char *name, const luaL_Reg *m,
                          lua_CFunction index, lua_CFunction tostring)
{
    luaL_newmetatable(L, name);
    lua_newtable(L);
    luaL_setfuncs(L, m, 0);
    if (index == conn_index) {
        lua_pushvalue(L, -1);       /* the methods, for lsv_lconn_add_methods */
        lua_rawsetp(L, LUA_REGISTRYINDEX, &methods_key);
        lua_pushcfunction(L, conn_gc);
        lua_setfield(L, -3, "__gc");
    }
    lua_pushcclosure(L, index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, conn_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "luaserv.conn");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}

void lsv_lconn_open(lua_State *L)
{
    lua_newtable(L);
    lua_pushliteral(L, "v");
    lua_setfield(L, -2, "__mode");
    lua_pushvalue(L, -1);
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &weak_key);
    lua_newtable(L);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_pushvalue(L, -1);
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &states_key);
    new_metatable(L, LSV_CONN_MT, conn_methods, conn_index, conn_tostring);
    new_metatable(L, LSV_DGRAM_MT, dgram_methods, dgram_index,
                  dgram_tostring);
}

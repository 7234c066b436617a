/* dispatch.c: the callback style: a conn's frames, timeouts and close as
 * calls to its handler's on_message, on_timeout and on_close; accepting a
 * conn (on_accept, the memory guard, on_connect, and the style its
 * handler asks for); datagrams (one on_message each); on_stop. */
#include "lsv.h"
#include "dispatch.h"
#include "decode.h"
#include "conn.h"
#include "guard.h"
#include "handler.h"
#include "listener.h"
#include "log.h"
#include "lua_conn.h"
#include "net.h"
#include "sched.h"
#include "script.h"
#include "stream.h"
#include "udp.h"
#include "vm.h"

#include <lauxlib.h>
#include <string.h>
#include <unistd.h>

/* --- the callback style ------------------------------------------------- */

/* Pushes "FILE:LINE: " for handler[fn], to place an error the function
 * made without raising (a bad reply) at its definition. [-0, +1, m] */
static void push_fn_where(lsv_conn_t *c, const char *fn)
{
    lua_State *L = lsv_conn_server(c)->vm->L;
    lua_Debug ar;
    if (lsv_vm_get_fn(L, lsv_handler_ref(lsv_conn_listener(c)), fn) &&
        lua_getinfo(L, ">S", &ar) && ar.linedefined > 0)
        lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.linedefined);
    else
        lua_pushliteral(L, "");
}

/* Fails a reply at stack slot i (element k of a table there, or 0) of a
 * type that is not a string: an error message replaces the values above
 * base. Returns LSV_ERR. */
static int bad_result(lsv_conn_t *c, lua_State *L, int base, int i,
                      lua_Integer k)
{
    int t = k ? (lua_rawgeti(L, i, k), lua_type(L, -1)) : lua_type(L, i);
    lua_settop(L, base);
    push_fn_where(c, "on_message");
    if (k)
        lua_pushfstring(L, "%son_message returned a table whose element %I "
                        "is a %s, not a string", lua_tostring(L, -1), k,
                        lua_typename(L, t));
    else
        lua_pushfstring(L, "%son_message returned a %s; a reply is strings, "
                        "a table of strings or nil", lua_tostring(L, -1),
                        lua_typename(L, t));
    lua_remove(L, -2);
    return LSV_ERR;
}

/* Bytes a number in a reply table takes at most once formatted (its
 * string is made only when it is copied). */
#define NUMBER_LEN 64

/* Replies of up to this many values (none a table) take the one-copy
 * path of write_result (luaserv.http's replies are 9 values). */
#define REPLY_PIECES 12

/* Formats the integer x in decimal into out (at least 21 bytes), as Lua's
 * tostring would ("%lld"), without making a Lua string. Returns the
 * length. */
static size_t format_integer(lua_Integer x, char *out)
{
    char tmp[24];
    size_t n = 0, len = 0;
    unsigned long long u = x < 0 ? 0ULL - (unsigned long long)x
                                 : (unsigned long long)x;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (x < 0) out[len++] = '-';
    while (n > 0) out[len++] = tmp[--n];
    return len;
}

/* Writes what on_message returned: the values above stack slot base, each
 * a string (or number), a table of strings, or nil; all popped. Several
 * values are written in order, so `return "[", ctime(), "] ", line`
 * replies without building a string. A first pass checks the types and
 * adds up the size, so a reply is queued whole or not at all and the
 * output cap is checked before any memory is taken; the second copies the
 * pieces into the output buffer. For a value of the wrong type, returns
 * LSV_ERR with an error message in their place. A reply that cannot be
 * queued (over --max-output, out of memory) fails c (in core) and returns
 * LSV_OK: it was handled; so does one to a conn that failed already. */
static int write_result(lsv_conn_t *c, lua_State *L, int base)
{
    int top = lua_gettop(L);
    if (top == base) return LSV_OK;
    if (unlikely(lsv_conn_has_failed(c))) {
        lua_settop(L, base);
        return LSV_OK;
    }
    size_t total = 0, n;
    /* The common reply, a few strings, is copied from what the first pass
     * saw (the strings stay on the stack) into one reservation. */
    const char *piece[REPLY_PIECES];
    size_t piece_len[REPLY_PIECES];
    char nums[REPLY_PIECES][24];        /* integers formatted here */
    int pieces = top - base <= REPLY_PIECES;
    for (int i = base + 1; i <= top; i++) {
        const char *s;
        if (pieces && lua_isinteger(L, i)) {
            n = format_integer(lua_tointeger(L, i), nums[i - base - 1]);
            s = nums[i - base - 1];
        } else {
            s = lua_tolstring(L, i, &n);
        }
        if (pieces) {
            piece[i - base - 1] = s;
            piece_len[i - base - 1] = s ? n : 0;
        }
        if (likely(s != NULL)) {
            total += n;
            continue;
        }
        int t = lua_type(L, i);
        if (t == LUA_TTABLE) {
            pieces = 0;
            lua_Integer len = (lua_Integer)lua_rawlen(L, i);
            for (lua_Integer k = 1; k <= len; k++) {
                int et = lua_rawgeti(L, i, k);
                total += et == LUA_TSTRING ? lua_rawlen(L, -1) : NUMBER_LEN;
                lua_pop(L, 1);
                if (unlikely(et != LUA_TSTRING && et != LUA_TNUMBER))
                    return bad_result(c, L, base, i, k);
            }
        } else if (t != LUA_TNIL) {
            return bad_result(c, L, base, i, 0);
        }
    }
    if (total == 0 || lsv_conn_check_room(c, total) != LSV_OK) {
        lua_settop(L, base);
        return LSV_OK;
    }
    if (pieces) {
        char *dst = lsv_conn_reserve(c, total);
        if (likely(dst != NULL)) {
            for (int k = 0; k < top - base; k++) {
                if (piece_len[k] == 0) continue;     /* nil or "" */
                memcpy(dst, piece[k], piece_len[k]);
                dst += piece_len[k];
            }
            lsv_conn_commit(c, total);
        }
        lua_settop(L, base);
        return LSV_OK;
    }
    int rc = LSV_OK;
    for (int i = base + 1; i <= top && rc == LSV_OK; i++) {
        const char *s = lua_tolstring(L, i, &n);
        if (s != NULL) {
            rc = lsv_conn_append(c, s, n);
        } else if (lua_type(L, i) == LUA_TTABLE) {
            lua_Integer len = (lua_Integer)lua_rawlen(L, i);
            for (lua_Integer k = 1; k <= len && rc == LSV_OK; k++) {
                lua_rawgeti(L, i, k);
                s = lua_tolstring(L, -1, &n);
                rc = lsv_conn_append(c, s, n);
                lua_pop(L, 1);
            }
        }
    }
    lua_settop(L, base);
    if (rc == LSV_OK) lsv_conn_queued(c);
    return LSV_OK;
}


/* A run of frames keeps the handler table, the key "on_message" and the
 * conn on the stack; on_message is still looked up for every frame, so a
 * reload or an assignment takes effect at once, but with the key at hand
 * (lua_getfield would find the string "on_message" again every time). */
static void callback_begin(lsv_conn_t *c)
{
    lsv_server_t *srv = lsv_conn_server(c);
    lua_State *L = srv->vm->L;
    srv->vm->listener = lsv_conn_listener(c);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lsv_handler_ref(lsv_conn_listener(c)));
    lua_pushliteral(L, "on_message");
    lsv_lconn_push(L, c);
}

static void callback_end(lsv_conn_t *c)
{
    lsv_server_t *srv = lsv_conn_server(c);
    srv->vm->listener = NULL;
    lua_pop(srv->vm->L, 3);
}

/* One frame: on_message(conn, frame), its return value queued. */
static void callback_frame(lsv_conn_t *c, const char *p, size_t n)
{
    lsv_server_t *srv = lsv_conn_server(c);
    lua_State *L = srv->vm->L;
    int conn = lua_gettop(L), handler = conn - 2;
    lua_pushvalue(L, conn - 1);
    if (unlikely(lua_gettable(L, handler) != LUA_TFUNCTION)) {
        lua_pop(L, 1);
        return;
    }
    lua_pushvalue(L, conn);
    const lsv_frame_spec_t *spec = lsv_conn_framing(c);
    int rc = likely(!lsv_frame_is_proto(spec->kind))
           ? lsv_vm_pcall_str(L, 1, p, n, LUA_MULTRET)
           : lsv_decode_pcall(L, 1, c, spec, p, n, LUA_MULTRET);
    if (likely(rc == LUA_OK)) {
        if (unlikely(write_result(c, L, conn) != LSV_OK))
            lsv_handler_failed(c, "on_message");
        return;
    }
    lsv_handler_failed(c, "on_message");
}

/* The idle timeout passed: on_timeout(conn) returning true keeps it. */
static int callback_timeout(lsv_conn_t *c)
{
    lua_State *L = lsv_conn_server(c)->vm->L;
    int keep = 0;
    if (lsv_handler_call(c, "on_timeout", 0, 1) == LSV_OK) {
        keep = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    return keep;
}

const lsv_conn_type_t lsv_callback_type = {
    .style = "callback",
    .begin = callback_begin,
    .end = callback_end,
    .frame = callback_frame,
    .drained = lsv_stream_output,
    .timeout = callback_timeout,
    .error = lsv_handler_on_error,
    .closing = lsv_stream_closing,
    .closed = lsv_stream_closed,      /* a task may write to it too */
};

/* --- accepting ---------------------------------------------------------- */

/* Asks on_accept(peer, listener) whether to take the connection. Returns
 * nonzero to accept. An error in on_accept refuses. */
int lsv_dispatch_admit(lsv_listener_t *l, const struct sockaddr *sa,
                       socklen_t len)
{
    lua_State *L = l->srv->vm->L;
    if (!lsv_vm_get_fn(L, lsv_handler_ref(l), "on_accept")) return 1;
    char peer[LSV_ADDRSTRLEN];
    lsv_net_format(sa, len, peer);
    lua_pushstring(L, peer);
    lua_pushstring(L, l->name);
    l->srv->vm->listener = l;
    int rc = lsv_vm_pcall(L, 2, 2);
    l->srv->vm->listener = NULL;
    if (rc != LUA_OK) {
        lsv_vm_count_error(l->srv, l);
        lsv_error("handler error in on_accept (peer %s, %s): %s", peer,
                  l->name, lua_tostring(L, -1));
        lua_pop(L, 1);
        return 0;
    }
    int ok = !(lua_type(L, -2) == LUA_TBOOLEAN && !lua_toboolean(L, -2));
    if (!ok)
        lsv_info("%s: refused %s: %s", l->name, peer,
                 lua_isstring(L, -1) ? lua_tostring(L, -1) : "by on_accept");
    lua_pop(L, 2);
    return ok;
}

/* The Lua state is near --lua-memory: refuses the connection on fd
 * (closing it) with a log line, at most one a second with a count of the
 * rest. Returns 1 if it refused. */
static int refuse_when_full(lsv_listener_t *l, int fd)
{
    static ev_tstamp last_log, last_gc;
    static unsigned long refused;
    size_t cap = lsv_guard_full();
    if (likely(cap == 0)) return 0;
    ev_tstamp now = ev_now(l->srv->loop);
    if (now - last_gc >= 0.5) {
        /* Garbage may be most of it (a failed call's): collect, at most
         * twice a second, before turning anyone away. */
        last_gc = now;
        lua_gc(l->srv->vm->L, LUA_GCCOLLECT);
        if ((cap = lsv_guard_full()) == 0) return 0;
    }
    refused++;
    if (now - last_log >= 1.0) {
        lsv_warn("%s: refusing new connections: Lua memory is at %zu of "
                 "%zu bytes (--lua-memory); %lu refused", l->name,
                 lsv_guard_memory(), cap, refused);
        last_log = now;
        refused = 0;
    }
    close(fd);
    return 1;
}

/* listen{ max_frame } over the framing's own max, within the kind's hard
 * limit (the protocol framers pack their resume state for at most 1 GiB). */
static void apply_max_frame(const lsv_listener_t *l, lsv_frame_spec_t *out)
{
    uint32_t hard = lsv_frame_is_proto(out->kind) ? LSV_FRAME_PROTO_HARD_MAX
                                                   : LSV_FRAME_HARD_MAX;
    if (l->opt.max_frame)
        out->max = l->opt.max_frame < hard ? l->opt.max_frame : hard;
}

/* Reads handler.framing for a new connection, so assigning a new value
 * takes effect for the next one. A bad value is logged and the last good
 * one (kept in the listener) is used. */
static void read_framing(lsv_listener_t *l, lsv_frame_spec_t *out)
{
    lua_State *L = l->srv->vm->L;
    if (l->opt.has_framing) {       /* the config file's listen{} wins */
        *out = l->opt.framing;
        apply_max_frame(l, out);
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, lsv_handler_ref(l));
    if (lua_getfield(L, -1, "framing") == LUA_TNIL) {
        lsv_frame_spec_init(&l->framing, LSV_FRAME_LINE);
    } else {
        char err[LSV_ERRLEN];
        lsv_frame_spec_t spec;
        if (lsv_vm_parse_framing(L, -1, &spec, err) == LSV_OK)
            l->framing = spec;
        else
            lsv_error("%s: handler.%s; using the previous framing", l->name,
                      err);
    }
    lua_pop(L, 2);
    *out = l->framing;
    apply_max_frame(l, out);
}

/* Under lua_setup's pcall: makes c's userdata (and with it its registry
 * ref), so later pushes of it allocate nothing. */
static int userdata_cb(lua_State *L)
{
    lsv_lconn_new(L, lua_touserdata(L, 1), 0);
    return 0;
}

/* Under lua_setup's pcall: starts the task that runs handle(conn) (a
 * thread, a registry ref). */
static int spawn_cb(lua_State *L)
{
    lsv_conn_t *c = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lsv_vm_get_fn(L, lsv_handler_ref(lsv_conn_listener(c)), "handle");
    lsv_lconn_push(L, c);
    lsv_lconn_of(c)->task = lsv_task_spawn(lsv_conn_server(c), L, 1, c,
                                           lsv_handler_task_end);
    return 0;
}

/* Runs fn on c in a protected call: what a new conn needs from Lua is
 * allocated there, so running out of memory refuses this connection
 * instead of panicking. On failure logs it and returns LSV_ERR. */
static int lua_setup(lsv_conn_t *c, lua_CFunction fn)
{
    lua_State *L = lsv_conn_server(c)->vm->L;
    lua_pushcfunction(L, fn);
    lua_pushlightuserdata(L, c);
    if (likely(lsv_vm_pcall(L, 1, 0) == LUA_OK)) return LSV_OK;
    lsv_conn_log(LSV_LOG_WARN, c, "cannot set up the connection: %s; "
                 "closing it", lua_tostring(L, -1));
    lua_pop(L, 1);
    return LSV_ERR;
}

void lsv_dispatch_accept(lsv_listener_t *l, int fd, const struct sockaddr *sa,
                         socklen_t salen, lsv_accepted_t *acc)
{
    lua_State *L = l->srv->vm->L;
    if (!(acc && acc->admitted) && !lsv_dispatch_admit(l, sa, salen)) {
        close(fd);
        lsv_accepted_drop(acc);
        return;
    }
    if (unlikely(refuse_when_full(l, fd))) {
        lsv_accepted_drop(acc);
        return;
    }
    lsv_frame_spec_t framing;
    read_framing(l, &framing);
    lsv_conn_t *c = lsv_conn_new(l, fd, sa, salen, &framing,
                                 &lsv_callback_type, acc);
    if (unlikely(lua_setup(c, userdata_cb) != LSV_OK)) {
        lsv_conn_abort(c, "error");
        return;
    }
    lsv_lconn_of(c)->connected = 1;
    lsv_conn_hold(c);
    lsv_handler_call(c, "on_connect", 0, 0);
    if (!lsv_conn_is_closing(c) &&
        lsv_vm_get_fn(L, lsv_handler_ref(l), "handle")) {
        /* Stream style: handle(conn) runs as this conn's task. */
        lua_pop(L, 1);
        lsv_conn_set_type(c, &lsv_stream_type);
        if (lua_setup(c, spawn_cb) != LSV_OK) lsv_conn_close(c, "error");
    }
    if (lsv_conn_release(c) == LSV_OK) lsv_conn_start(c);
}

/* --- datagrams ---------------------------------------------------------- */

/* The error for a reply lsv_udp_write refused while in a call. */
static void reply_refused(lsv_dgram_t *d)
{
    lsv_error("on_message (%s): its reply is over %u bytes, more than one "
              "datagram holds; not sent", d->listener->name, LSV_DGRAM_MAX);
}
/* Appends the values above stack slot base (strings, numbers, tables of
 * them, nils) to the batch's reply buffer after what conn:write() put
 * there. Returns LSV_ERR for a value of the wrong type. */
static int add_reply(lsv_dgram_t *d, lua_State *L, int base)
{
    int top = lua_gettop(L);
    size_t n;
    for (int i = base + 1; i <= top; i++) {
        int t = lua_type(L, i);
        if (likely(t == LUA_TSTRING || t == LUA_TNUMBER)) {
            const char *s = lua_tolstring(L, i, &n);
            if (unlikely(lsv_udp_write(d, s, n) != LSV_OK)) {
                reply_refused(d);
                return LSV_ERR;
            }
        } else if (t == LUA_TTABLE) {
            lua_Integer len = (lua_Integer)lua_rawlen(L, i);
            for (lua_Integer k = 1; k <= len; k++) {
                int et = lua_rawgeti(L, i, k);
                if (et != LUA_TSTRING && et != LUA_TNUMBER) {
                    lsv_error("on_message (%s): reply element %lld is a %s, "
                              "not a string", d->listener->name,
                              (long long)k, lua_typename(L, et));
                    return LSV_ERR;
                }
                const char *s = lua_tolstring(L, -1, &n);
                if (unlikely(lsv_udp_write(d, s, n) != LSV_OK)) {
                    reply_refused(d);
                    return LSV_ERR;
                }
                lua_pop(L, 1);
            }
            d->has_reply = 1;
        } else if (t != LUA_TNIL) {
            lsv_error("on_message (%s): returned a %s; a reply is strings, "
                      "a table of strings or nil", d->listener->name,
                      lua_typename(L, t));
            return LSV_ERR;
        }
    }
    return LSV_OK;
}

int lsv_dispatch_datagram(lsv_listener_t *l, lsv_dgram_t *d, const char *data,
                          size_t n)
{
    lsv_server_t *srv = l->srv;
    lua_State *L = srv->vm->L;
    int top = lua_gettop(L);
    if (!lsv_vm_get_fn(L, lsv_handler_ref(l), "on_message")) return 0;
    lsv_ldgram_push(L, d);
    int ok = 0;
    srv->vm->listener = l;
    if (likely(lsv_vm_pcall_str(L, 1, data, n, LUA_MULTRET) == LUA_OK)) {
        ok = add_reply(d, L, top) == LSV_OK;
        if (unlikely(!ok)) lsv_vm_count_error(srv, l);
    } else {
        char peer[LSV_ADDRSTRLEN];
        lsv_vm_count_error(srv, l);
        lsv_log_ctx_t ctx = { l->name, lsv_net_format((struct sockaddr *)
                              &d->peer, d->peer_len, peer), 0 };
        lsv_log_writec(LSV_LOG_ERROR, &ctx, "handler error in on_message "
                       "(datagram): %s", lua_tostring(L, -1));
        if (lsv_vm_get_fn(L, lsv_handler_ref(l), "on_error")) {
            lsv_ldgram_push(L, d);
            lua_pushvalue(L, -3);
            if (lsv_vm_pcall(L, 2, 0) != LUA_OK) {
                lsv_vm_count_error(srv, l);
                lsv_error("handler error in on_error (%s): %s", l->name,
                          lua_tostring(L, -1));
            }
        }
    }
    srv->vm->listener = NULL;
    lua_settop(L, top);
    return ok;
}

/* --- the whole server --------------------------------------------------- */

void lsv_dispatch_stopping(lsv_server_t *srv)
{
    lua_State *L = srv->vm->L;
    for (lsv_listener_t *l = srv->listeners; l; l = l->next) {
        /* Each distinct handler table gets one call. */
        int seen = 0;
        for (lsv_listener_t *p = srv->listeners; p != l; p = p->next)
            if (lsv_handler_ref(p) == lsv_handler_ref(l)) seen = 1;
        if (seen || !lsv_vm_get_fn(L, lsv_handler_ref(l), "on_stop")) continue;
        if (lsv_vm_pcall(L, 0, 0) != LUA_OK) {
            lsv_vm_count_error(srv, l);
            lsv_error("handler error in on_stop: %s", lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    }
}

void lsv_dispatch_low_memory(lsv_server_t *srv)
{
    lua_gc(srv->vm->L, LUA_GCCOLLECT);
}

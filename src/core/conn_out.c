/* conn_out.c: a stream connection's output: queueing replies under the
 * output cap, writing them, and failing a conn whose output cannot be
 * queued (the cap, a peer that does not read, memory). */
#include "lsv.h"
#include "conn.h"
#include "conn_int.h"
#include "listener.h"
#include "log.h"
#include "net.h"
#include "stream.h"
#include "vm.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/tcp.h>

/* Queued output, in high-water marks, past which a conn whose peer has
 * read nothing for a while (LSV_OUTPUT_STALL) is dropped: writes from other
 * conns' handlers do not wait. A peer that reads is never dropped for
 * this; --max-output bounds what it may have queued. */
#define OUTPUT_CAP_FACTOR 8

/* Bookkeeping after output was added to c->out: the pending list and the
 * high-water mark. */
static void queued(lsv_conn_t *c)
{
    lsv_server_t *srv = c->srv;
    if (unlikely(!(c->flags & LSV_CONN_PENDING))) {
        c->flags |= LSV_CONN_PENDING;
        c->next_pending = srv->pending;
        srv->pending = c;
        lsv_server_kick(srv);
    }
    if (unlikely(c->out.len > c->listener->opt.high_water) &&
        !(c->flags & LSV_CONN_BLOCKED)) {
        c->flags |= LSV_CONN_BLOCKED;
        lsv_conn_stop_reading(c);
        lsv_debug("conn %llu: %u bytes queued, reading paused",
                  (unsigned long long)c->id, c->out.len);
    }
}

/* Under lsv_conn_on_error's pcall: [c, msg] -> on_error(conn, msg). */
static int on_error_cb(lua_State *L)
{
    lsv_conn_t *c = lua_touserdata(L, 1);
    const char *msg = lua_touserdata(L, 2);
    lua_settop(L, 0);
    lua_pushstring(L, msg);
    lsv_conn_call(c, "on_error", 1, 0);
    return 0;
}

void lsv_conn_on_error(lsv_conn_t *c, const char *msg)
{
    lua_State *L = c->srv->L;
    lua_pushcfunction(L, on_error_cb);
    lua_pushlightuserdata(L, c);
    lua_pushlightuserdata(L, (void *)msg);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) lua_pop(L, 1);
}

/* Output for c cannot be queued: msg says why, truthfully. Logs it once,
 * drops c's queued output, calls on_error(conn, msg), and closes c with
 * reason "overflow". c stays allocated while a Lua call on it runs (it
 * is marked aborting first, so on_error's own writes are dropped);
 * otherwise it is freed here. */
static void output_failed(lsv_conn_t *c, const char *msg)
{
    conn_log(LSV_LOG_WARN, c, "%s; dropping the connection", msg);
    if (!(c->flags & LSV_CONN_CLOSING)) c->close_reason = "overflow";
    c->flags |= LSV_CONN_CLOSING | LSV_CONN_ABORT;
    c->out.len = 0;
    lsv_conn_stop_reading(c);
    c->busy++;
    lsv_conn_on_error(c, msg);
    c->busy--;
    lsv_conn_abort(c, "overflow");     /* may free c */
}


int lsv_conn_check_room(lsv_conn_t *c, size_t n)
{
    char msg[LSV_ERRLEN];
    size_t cap = c->srv->opt.max_output;
    if (unlikely(cap && n > cap - (cap > c->out.len ? c->out.len : cap))) {
        if (c->out.len)
            snprintf(msg, sizeof msg, "reply of %zu bytes exceeds the "
                     "output cap of %zu bytes (--max-output) with %u bytes "
                     "still queued", n, cap, (unsigned)c->out.len);
        else
            snprintf(msg, sizeof msg, "reply of %zu bytes exceeds the "
                     "output cap of %zu bytes (--max-output)", n, cap);
        output_failed(c, msg);
        return LSV_ERR;
    }
    if (unlikely(c->out.len + n >
                 OUTPUT_CAP_FACTOR * c->listener->opt.high_water) &&
        c->out.len > 0) {
        ev_tstamp stall = c->timeout > 0 ? c->timeout : LSV_OUTPUT_STALL;
        ev_tstamp idle = ev_now(c->srv->loop) - c->out_since;
        if (idle >= stall) {
            snprintf(msg, sizeof msg, "the peer has read nothing for %.1f s "
                     "and %u bytes are queued for it", idle,
                     (unsigned)c->out.len);
            output_failed(c, msg);
            return LSV_ERR;
        }
    }
    return LSV_OK;
}

/* Appends n checked bytes to c's output. Returns LSV_ERR after failing c
 * when the buffer cannot grow (out of memory). */
static int append_output(lsv_conn_t *c, const char *p, size_t n)
{
    if (unlikely(c->out.data == NULL)) lsv_conn_ensure_buf(c->srv, &c->out);
    if (c->out.len == 0) c->out_since = ev_now(c->srv->loop);
    int rc = lsv_buf_try_append(&c->out, p, n);
    if (unlikely(rc != LSV_OK)) {
        /* Garbage Lua strings may hold what we need: collect, retry once.
         * p is on the Lua stack or in C memory, so it stays put. */
        lua_gc(c->srv->L, LUA_GCCOLLECT);
        rc = lsv_buf_try_append(&c->out, p, n);
    }
    if (unlikely(rc != LSV_OK)) {
        char msg[LSV_ERRLEN];
        snprintf(msg, sizeof msg, "out of memory queueing %zu bytes of "
                 "output (%u already queued)", n, (unsigned)c->out.len);
        output_failed(c, msg);
        return LSV_ERR;
    }
    return LSV_OK;
}

int lsv_conn_write(lsv_conn_t *c, const char *p, size_t n)
{
    if (c->flags & LSV_CONN_CLOSING) return LSV_ERR;
    if (n == 0) return LSV_OK;
    if (unlikely(lsv_conn_check_room(c, n) != LSV_OK) ||
        unlikely(append_output(c, p, n) != LSV_OK))
        return LSV_ERR;
    queued(c);
    return LSV_OK;
}

void lsv_conn_watch_write(lsv_conn_t *c)
{
    if (c->timeout <= 0 || (c->flags & (LSV_CONN_CLOSING | LSV_CONN_TIMER)) ||
        !(c->flags & LSV_CONN_STREAM))
        return;
    if (c->out.len == 0) c->out_since = ev_now(c->srv->loop);
    ev_tstamp left = c->out_since + c->timeout - ev_now(c->srv->loop);
    lsv_conn_arm_timer(c, left > 0.001 ? left : 0.001);
}

/* Writes as much queued output as the socket takes, in one send per call
 * unless the kernel took everything and more could fit. */
static void conn_flush(lsv_conn_t *c)
{
    lsv_server_t *srv = c->srv;
    while (c->out.len) {
        ssize_t n = send(c->fd, lsv_buf_head(&c->out), c->out.len,
                         MSG_NOSIGNAL);
        if (n > 0) {
            lsv_buf_consume(&c->out, (size_t)n);
            c->listener->stats.bytes_out += (uint64_t)n;
            c->nout += (uint64_t)n;
            c->last_active = c->out_since = ev_now(srv->loop);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!(c->flags & LSV_CONN_WRITING)) {
                ev_io_start(srv->loop, &c->wio);
                c->flags |= LSV_CONN_WRITING;
            }
            break;
        }
        lsv_debug("conn %llu: send: %s", (unsigned long long)c->id,
                  strerror(errno));
        lsv_conn_abort(c, "reset");
        return;
    }
    if (c->writer) lsv_stream_output(c);
    if (c->out.len == 0) {
        if (c->flags & LSV_CONN_WRITING) {
            ev_io_stop(srv->loop, &c->wio);
            c->flags &= ~LSV_CONN_WRITING;
        }
        lsv_conn_release_buf(srv, &c->out);
        if (c->flags & LSV_CONN_CLOSING) {
            lsv_conn_finish(c);
            return;
        }
    }
    if ((c->flags & LSV_CONN_BLOCKED) &&
        c->out.len <= c->listener->opt.low_water) {
        c->flags &= ~LSV_CONN_BLOCKED;
        lsv_conn_start_reading(c);
        if (c->in.len || (c->flags & LSV_CONN_EOF)) lsv_conn_schedule_read(c);
    }
}

void lsv_conn_flush_pending(lsv_server_t *srv)
{
    lsv_conn_t *c;
    while ((c = srv->pending) != NULL) {
        srv->pending = c->next_pending;
        c->flags &= ~LSV_CONN_PENDING;
        if (!(c->flags & LSV_CONN_WRITING)) conn_flush(c);
    }
}

void lsv_conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    lsv_conn_t *c = container_of(w, lsv_conn_t, wio);
    if (unlikely(c->flags & LSV_CONN_CONNECTING)) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        ev_io_stop(loop, &c->wio);
        c->flags &= ~(LSV_CONN_WRITING | LSV_CONN_CONNECTING);
        if (err == 0) {
            int one = 1;
            setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            lsv_conn_start_reading(c);
            if (c->out.len) conn_flush(c);
        }
        lsv_stream_connected(c, err);   /* on error, aborts c */
        return;
    }
    conn_flush(c);
}

void lsv_conn_write_timer(lsv_conn_t *c)
{
    if (c->writer == NULL || c->out.len == 0) return;
    ev_tstamp stalled = ev_now(c->srv->loop) - c->out_since;
    if (stalled < c->timeout - 0.001) {
        lsv_conn_arm_timer(c, c->timeout - stalled);
        return;
    }
    conn_log(LSV_LOG_WARN, c, "a write made no progress for %.1f s "
             "(idle timeout %g s): the peer is not reading and %u "
             "bytes are still queued; the write fails with "
             "\"timeout\"", stalled, c->timeout, (unsigned)c->out.len);
    lsv_stream_write_timeout(c);
}

/* Pushes "FILE:LINE: " for handler[fn], to place an error the function
 * made without raising (a bad reply) at its definition. [-0, +1, m] */
static void push_fn_where(lsv_conn_t *c, const char *fn)
{
    lua_State *L = c->srv->L;
    lua_Debug ar;
    if (lsv_vm_get_fn(L, c->listener->handler_ref, fn) &&
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

/* Writes what on_message returned: the values above stack slot base, each
 * a string (or number), a table of strings, or nil; all popped. Several
 * values are written in order, so `return "[", ctime(), "] ", line`
 * replies without building a string. A first pass checks the types and
 * adds up the size, so a reply is queued whole or not at all and the
 * output cap is checked before any memory is taken; the second copies the
 * pieces into the output buffer. For a value of the wrong type, returns
 * LSV_ERR with an error message in their place. A reply that cannot be
 * queued (over --max-output, out of memory) fails c (output_failed) and
 * returns LSV_OK: it was handled. */
int lsv_conn_write_result(lsv_conn_t *c, lua_State *L, int base)
{
    int top = lua_gettop(L);
    if (top == base) return LSV_OK;
    if (unlikely(c->flags & LSV_CONN_ABORT)) {
        lua_settop(L, base);
        return LSV_OK;
    }
    size_t total = 0, n;
    for (int i = base + 1; i <= top; i++) {
        if (likely(lua_tolstring(L, i, &n) != NULL)) {
            total += n;
            continue;
        }
        int t = lua_type(L, i);
        if (t == LUA_TTABLE) {
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
    uint32_t before = c->out.len;
    int rc = LSV_OK;
    for (int i = base + 1; i <= top && rc == LSV_OK; i++) {
        const char *s = lua_tolstring(L, i, &n);
        if (s != NULL) {
            rc = append_output(c, s, n);
        } else if (lua_type(L, i) == LUA_TTABLE) {
            lua_Integer len = (lua_Integer)lua_rawlen(L, i);
            for (lua_Integer k = 1; k <= len && rc == LSV_OK; k++) {
                lua_rawgeti(L, i, k);
                s = lua_tolstring(L, -1, &n);
                rc = append_output(c, s, n);
                lua_pop(L, 1);
            }
        }
    }
    lua_settop(L, base);
    if (rc == LSV_OK && c->out.len != before) queued(c);
    return LSV_OK;
}


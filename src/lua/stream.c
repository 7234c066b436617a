/* stream.c: the stream style: conn reads and writes that wait in a task,
 * and outbound connections (luaserv.connect). */
#include "lsv.h"
#include "stream.h"
#include "conn.h"
#include "connect_tls.h"
#include "decode.h"
#include "handler.h"
#include "listener.h"
#include "log.h"
#include "lua_conn.h"
#include "net.h"
#include "sched.h"
#include "vm.h"

#include <errno.h>
#include <limits.h>
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>



/* --- reading ------------------------------------------------------------ */

static void unwait_reader(lsv_task_t *t)
{
    lsv_conn_t *c = t->wait_obj;
    lsv_lconn_t *u = c ? lsv_lconn_of(c) : NULL;
    if (u && u->reader == t) u->reader = NULL;
}

static void unwait_writer(lsv_task_t *t)
{
    lsv_conn_t *c = t->wait_obj;
    lsv_lconn_t *u = c ? lsv_lconn_of(c) : NULL;
    if (u && u->writer == t) u->writer = NULL;
}

/* The high- and low-water marks of c's output. */
static size_t high_water(const lsv_conn_t *c)
{
    return lsv_conn_listener(c)->opt.high_water;
}

static size_t low_water(const lsv_conn_t *c)
{
    return lsv_conn_listener(c)->opt.low_water;
}

/* Request metrics. Each frame a read returns is a message; its handler
 * time runs from that return until the task next asks this conn for
 * input, or until the conn closes: what the task spent on the frame,
 * waits for its replies' output included. */
static void frame_returned(lsv_conn_t *c)
{
    lsv_conn_count_message(c);
    lsv_lconn_of(c)->msg_t0 = lsv_clock();
}

static void frame_done(lsv_conn_t *c)
{
    lsv_lconn_t *u = lsv_lconn_of(c);
    if (u == NULL || u->msg_t0 == 0) return;
    double d = lsv_clock() - u->msg_t0;
    u->msg_t0 = 0;
    lsv_listener_observe(lsv_conn_listener(c), d > 0 ? d : 0, 1);
}

/* The stream cannot be resynchronised (a frame over its max): its input
 * ends here, the rest of it unread; writing still works. */
static void end_input(lsv_conn_t *c)
{
    lsv_conn_end_input(c);         /* also resets the pull hint */
}

/* What a too-long frame of kind is called in the log. */
static const char *frame_noun(int kind)
{
    return kind == LSV_FRAME_LINE ? "line"
         : kind == LSV_FRAME_DELIM ? "record" : "frame";
}

/* Reading ahead is bounded: up to LSV_READ_AHEAD while no task waits;
 * for a waiting read, what it still needs (known for read(n); 0 for a
 * line or a record) plus at most LSV_READ_AHEAD. So the buffer stays
 * within what a reader asked for, itself capped by the frame max, plus
 * the read-ahead. */
static size_t stream_room(const lsv_conn_t *c)
{
    size_t len = lsv_conn_buffered(c);
    size_t ahead = len < LSV_READ_AHEAD ? LSV_READ_AHEAD - len : 0;
    const lsv_lconn_t *u = lsv_lconn_of(c);
    const lsv_task_t *t = u ? u->reader : NULL;
    if (t == NULL) return ahead;
    size_t need = 0;
    if (t->wait == LSV_WAIT_READ && t->want.kind == LSV_FRAME_FIXED &&
        t->want.size > len)
        need = t->want.size - len;
    return need + (ahead ? ahead : LSV_READ_AHEAD);
}

/* Returns all its arguments: what lsv_decode_pcall calls to leave the
 * decoded values on the stack. */
static int return_all(lua_State *L)
{
    return lua_gettop(L);
}

/* A protocol frame's values onto L (maybe a suspended task's thread,
 * where nothing may be called): decoded in a protected call on the
 * running state, then moved. Returns how many it pushed, or 0 when the
 * frame decoded to nothing for the task (a WebSocket ping, answered):
 * the read takes the next frame. A small WebSocket data frame is pushed
 * straight onto L. */
static int push_decoded(lsv_conn_t *c, const lsv_frame_spec_t *want,
                        const char *p, size_t n, lua_State *L)
{
    /* The common WebSocket frame needs no protected call (decode.h);
     * pushing onto a suspended thread is allowed, calling on it is not. */
    if (want->kind == LSV_FRAME_WS && lsv_ws_push_small(L, p, n) == 2) {
        frame_returned(c);
        return 2;
    }
    lua_State *D = lua_status(L) == LUA_OK ? L : lsv_conn_server(c)->vm->L;
    int base = lua_gettop(D);
    lua_pushcfunction(D, return_all);
    if (lsv_decode_pcall(D, 0, c, want, p, n, LUA_MULTRET) != LUA_OK) {
        lsv_conn_log(LSV_LOG_WARN, c, "decoding a %s frame failed: %s",
                     lsv_frame_kind_name(want->kind), lua_tostring(D, -1));
        lua_settop(D, base);
        end_input(c);
        lsv_push_fail(L, "out of memory");
        return 2;
    }
    int k = lua_gettop(D) - base;
    if (k == 0) return 0;
    frame_returned(c);
    if (D != L) {
        if (!lua_checkstack(L, k + 2)) {
            lua_settop(D, base);
            end_input(c);
            lsv_push_fail(L, "out of memory");
            return 2;
        }
        lua_xmove(D, L, k);
    }
    return k;
}

/* Answers the read request `want` from c's buffered input, pushing the
 * results onto L (which may be a suspended task's thread). Returns how
 * many values it pushed, or -1 when the request must wait for input. */
static int try_read(lsv_conn_t *c, const lsv_frame_spec_t *want, lua_State *L)
{
    lsv_lconn_t *u = lsv_lconn_of(c);
again:
    if (lsv_conn_buffered(c) == 0 && !lsv_conn_at_eof(c)) {
        /* A stopping server ends idle reads on its own connections. */
        if (lsv_conn_is_draining(c) && !lsv_conn_is_outbound(c)) {
            lsv_push_fail(L, "closed");
            return 2;
        }
        return -1;
    }
    const char *p;
    size_t n;
    ssize_t r = lsv_conn_take(c, want, lsv_conn_pull_hint(c), &p, &n);
    if (likely(r > 0) && likely(!lsv_frame_is_proto(want->kind))) {
        lua_pushlstring(L, p, n);
        frame_returned(c);
        return 1;
    }
    if (r > 0) {
        int k = push_decoded(c, want, p, n, L);
        if (k == 0) goto again;
        return k;
    }
    if (r == LSV_FRAME_PARTIAL) {
        if (!lsv_conn_at_eof(c)) return -1;
        lsv_push_fail(L, "closed");
        return 2;
    }
    if (lsv_frame_is_proto(want->kind) && r != LSV_FRAME_TRUNCATED) {
        /* The framer names the fault and the protocol's error reply (a
         * message cut off by the peer's end is "closed", below). The
         * reject closes c: a reader it answers must not also be woken
         * by the close (lsv_stream_closing), or it is queued twice. */
        u->reader = NULL;
        lsv_conn_hold(c);
        lsv_conn_reject(c, want, r);
        lsv_push_fail(L, r == LSV_FRAME_TOO_LONG ? "too long"
                                                 : "protocol error");
        lsv_conn_release(c);
        return 2;
    }
    if (r == LSV_FRAME_TOO_LONG)
        lsv_conn_log(LSV_LOG_WARN, c, "%s too long (%s framing, max %u); "
                     "its input ends here. Raise the max in the handler's "
                     "framing, conn:set_framing() or the config's "
                     "listen{ max_frame = }", frame_noun(want->kind),
                     lsv_frame_kind_name(want->kind), want->max);
    else
        lsv_conn_log(LSV_LOG_INFO, c, "frame cut off at end of stream: %zu "
                     "bytes of an incomplete %s frame dropped",
                     lsv_conn_buffered(c), lsv_frame_kind_name(want->kind));
    end_input(c);
    lsv_push_fail(L, r == LSV_FRAME_TOO_LONG ? "too long" : "closed");
    return 2;
}

/* Input came for t, waiting in a read it does not complete yet. The
 * timeout is on input, not on the whole read, so a big read from a slow
 * but live peer waits on. A restart costs two heap operations, small next
 * to the read that brought the bytes. */
static void input_came(lsv_conn_t *c, lsv_task_t *t)
{
    double timeout = lsv_conn_timeout(c);
    if (timeout > 0 && ev_is_active(&t->timer)) {
        struct ev_loop *loop = lsv_conn_server(c)->loop;
        ev_timer_stop(loop, &t->timer);
        ev_timer_set(&t->timer, timeout, 0.);
        ev_timer_start(loop, &t->timer);
    }
}

/* Under lsv_stream_input's pcall on the main thread: answers the waiting
 * reader. Its strings are made here and moved to the task's thread, so a
 * failed allocation raises into the pcall; made on the suspended thread,
 * it would kill the task or, with no protected call, the process. */
static int input_cb(lua_State *L)
{
    lsv_conn_t *c = lua_touserdata(L, 1);
    lsv_lconn_t *u = lsv_lconn_of(c);
    lsv_task_t *t = u->reader;
    lua_settop(L, 0);
    int n = try_read(c, &t->want, L);
    if (n < 0) {
        input_came(c, t);
        return 0;
    }
    if (t->wait != LSV_WAIT_READ) return 0;   /* woken by a close inside
                                               * the read: see below */
    if (!lua_checkstack(t->co, n)) return luaL_error(L, "stack overflow");
    lua_xmove(L, t->co, n);
    u->reader = NULL;
    lsv_task_wake(t, n);
    return 0;
}

/* type->input: c has new input or reached end of stream: answers a
 * waiting reader. A result too big to make (out of memory) fails c as a
 * handler error in handle. */
static void stream_input(lsv_conn_t *c)
{
    lsv_lconn_t *u = lsv_lconn_of(c);
    lsv_task_t *t = u ? u->reader : NULL;
    if (t == NULL || t->wait != LSV_WAIT_READ) return;
    if (likely(lsv_conn_buffered(c) <= LSV_VM_SMALL_STR)) {
        /* The fast path, for a small result (see LSV_VM_SMALL_STR). */
        int n = try_read(c, &t->want, t->co);
        if (n >= 0 && t->wait != LSV_WAIT_READ) {
            /* A decoder that closed c inside the read (a WebSocket close
             * frame) had the closing hook wake t already with nil,
             * "closed": waking it again would queue it twice. (A reject
             * detaches the reader first, so its caller answers.) */
            lua_pop(t->co, n);
            return;
        }
        if (n >= 0) {
            u->reader = NULL;
            lsv_task_wake(t, n);
        } else {
            input_came(c, t);
        }
        return;
    }
    lua_State *L = lsv_conn_server(c)->vm->L;
    lua_pushcfunction(L, input_cb);
    lua_pushlightuserdata(L, c);
    if (lsv_vm_pcall(L, 1, 0) != LUA_OK)
        lsv_handler_failed(c, "handle");    /* out of memory: closes c */
}

void lsv_stream_output(lsv_conn_t *c)
{
    lsv_lconn_t *u = lsv_lconn_of(c);
    lsv_task_t *t = u ? u->writer : NULL;
    if (t == NULL) return;
    if (t->wait == LSV_WAIT_WRITE && lsv_conn_pending(c) <= low_water(c)) {
        u->writer = NULL;
        lsv_lconn_push(t->co, c);
        lsv_task_wake(t, 1);
    } else if (t->wait == LSV_WAIT_FLUSH && lsv_conn_pending(c) == 0) {
        u->writer = NULL;
        lua_pushboolean(t->co, 1);
        lsv_task_wake(t, 1);
    }
}

void lsv_stream_closing(lsv_conn_t *c, int abort)
{
    lsv_lconn_t *u = lsv_lconn_of(c);
    if (u == NULL) return;
    frame_done(c);
    lsv_task_t *t = u->reader;
    if (t && (t->wait == LSV_WAIT_READ || t->wait == LSV_WAIT_CONNECT)) {
        u->reader = NULL;
        lsv_push_fail(t->co, "closed");
        lsv_task_wake(t, 2);
    }
    t = u->writer;
    if (t && abort) {
        u->writer = NULL;
        lsv_push_fail(t->co, "closed");
        lsv_task_wake(t, 2);
    }
}

/* Checks the conn at 1 for a stream read; returns it, or NULL after
 * pushing nil, "closed". [-0, +(0|2), v] */
static lsv_conn_t *stream_conn(lua_State *L, const char *what)
{
    lsv_lconn_t *u = lsv_lconn_check(L, 1);
    lsv_conn_t *c = u->c;
    lsv_task_check(L, what);
    if (c == NULL) {
        lsv_push_fail(L, "closed");
        return NULL;
    }
    if (lsv_conn_type(c) != &lsv_stream_type)
        luaL_error(L, "%s: this conn is in callback style (its handler has "
                   "no handle function), so its input goes to on_message",
                   what);
    if (lsv_lconn_of(c)->reader)
        luaL_error(L, "%s: another task is already reading this conn", what);
    return c;
}

/* Reads by want, waiting in the task if the input is not there yet. */
static int stream_read(lua_State *L, lsv_conn_t *c,
                       const lsv_frame_spec_t *want)
{
    frame_done(c);
    lsv_lconn_t *u = lsv_lconn_of(c);
    *lsv_conn_pull_hint(c) = 0;
    int n = try_read(c, want, L);
    if (n >= 0) return n;
    lsv_task_t *t = lsv_task_current(L);
    t->want = *want;
    u->reader = t;
    lsv_task_wait(t, LSV_WAIT_READ, c, unwait_reader, lsv_conn_timeout(c));
    lsv_conn_want_input(c);
    return lua_yield(L, 0);
}

/* The max of a text read (readline, read_until): the conn's own when its
 * framing is text too, so handler.framing or listen{ max_frame } raises
 * it; else the default. */
static uint32_t text_max(const lsv_conn_t *c)
{
    const lsv_frame_spec_t *f = lsv_conn_framing(c);
    if (f->kind == LSV_FRAME_LINE || f->kind == LSV_FRAME_DELIM)
        return f->max;
    return LSV_FRAME_DEFAULT_MAX;
}

/* conn:readline([keep_eol]) -> line | nil, "closed" | "timeout" |
 * "too long". The LF or CRLF is stripped unless keep_eol. [-0, +(1|2), v] */
static int conn_readline(lua_State *L)
{
    lsv_conn_t *c = stream_conn(L, "conn:readline()");
    if (c == NULL) return 2;
    lsv_frame_spec_t want;
    lsv_frame_spec_init(&want, LSV_FRAME_LINE);
    want.keep_eol = (uint8_t)lua_toboolean(L, 2);
    want.max = text_max(c);
    return stream_read(L, c, &want);
}

/* conn:read([n]) -> exactly n bytes (fewer only at end of stream), or
 * without n whatever has arrived (at most 64 KiB). An n over 64 MiB, the
 * cap on one frame, returns nil, "too long" and ends the input: n usually
 * comes from the peer. [-0, +(1|2), v] */
static int conn_read(lua_State *L)
{
    lsv_frame_spec_t want;
    lua_Integer n = 0;
    if (lua_isnoneornil(L, 2)) {
        lsv_frame_spec_init(&want, LSV_FRAME_RAW);
    } else {
        n = luaL_checkinteger(L, 2);
        luaL_argcheck(L, n >= 1, 2, "size must be at least 1");
        lsv_frame_spec_init(&want, LSV_FRAME_FIXED);
        want.size = n > LSV_FRAME_HARD_MAX ? 0 : (uint32_t)n;
    }
    lsv_conn_t *c = stream_conn(L, "conn:read()");
    if (c == NULL) return 2;
    if (unlikely(n > LSV_FRAME_HARD_MAX)) {
        lsv_conn_log(LSV_LOG_WARN, c, "read(%lld): over the %u-byte cap on "
                     "one read; its input ends here", (long long)n,
                     LSV_FRAME_HARD_MAX);
        frame_done(c);
        end_input(c);
        lsv_push_fail(L, "too long");
        return 2;
    }
    return stream_read(L, c, &want);
}

/* conn:read_until(delim[, keep]) -> the bytes before delim (with it if
 * keep). [-0, +(1|2), v] */
static int conn_read_until(lua_State *L)
{
    size_t n;
    const char *d = luaL_checklstring(L, 2, &n);
    luaL_argcheck(L, n >= 1 && n <= LSV_FRAME_DELIM_MAX, 2,
                  "delimiter must be 1 to 32 bytes");
    lsv_frame_spec_t want;
    lsv_frame_spec_init(&want, LSV_FRAME_DELIM);
    memcpy(want.delim, d, n);
    want.delim_len = (uint8_t)n;
    want.keep_eol = (uint8_t)lua_toboolean(L, 3);
    lsv_conn_t *c = stream_conn(L, "conn:read_until()");
    if (c == NULL) return 2;
    want.max = text_max(c);
    return stream_read(L, c, &want);
}

/* conn:read_frame() -> the next frame by the conn's framing. */
static int conn_read_frame(lua_State *L)
{
    lsv_conn_t *c = stream_conn(L, "conn:read_frame()");
    if (c == NULL) return 2;
    lsv_frame_spec_t want = *lsv_conn_framing(c);
    return stream_read(L, c, &want);
}

/* --- writing ------------------------------------------------------------ */

/* The task that may wait for c's output to drain, or NULL when the
 * running code cannot (a callback, a coroutine of the handler's own,
 * another task waiting on c already). A task waits on a callback-style
 * conn's output too: luaserv.spawn is how its handlers stream. */
static lsv_task_t *writer_task(lua_State *L, lsv_conn_t *c)
{
    lsv_task_t *t = lsv_task_current(L);
    if (t == NULL || !lua_isyieldable(L)) return NULL;
    lsv_task_t *w = lsv_lconn_of(c)->writer;
    if (w != NULL && w != t) return NULL;
    return t;
}

/* The pieces of a write are the values at 2..top, or, when a table is
 * among them, the elements of the one table at 2 (lsv_stream_write
 * flattens several). */
static lua_Integer count_pieces(lua_State *L, int top)
{
    return lua_type(L, 2) == LUA_TTABLE ? (lua_Integer)lua_rawlen(L, 2)
                                        : top - 1;
}

/* Pushes piece j and returns its bytes. [-0, +1, m] */
static const char *push_piece(lua_State *L, lua_Integer j, size_t *n)
{
    if (lua_type(L, 2) == LUA_TTABLE) lua_rawgeti(L, 2, j);
    else lua_pushvalue(L, (int)(1 + j));
    return lua_tolstring(L, -1, n);
}

static int write_from(lua_State *L, int top, lua_Integer j, size_t off);

/* Continues a write after its task waited for room. The stack holds the
 * conn, the pieces up to top, the position (j, off), then what woke the
 * task: the conn, or nil and an error ("closed", "timeout"). */
static int write_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    int top = (int)ctx;
    if (lua_gettop(L) >= top + 4 && lua_isnil(L, top + 3)) {
        lsv_conn_t *c = ((lsv_lconn_t *)lua_touserdata(L, 1))->c;
        const char *err = lua_tostring(L, top + 4);
        if (c && lsv_conn_type(c) != &lsv_stream_type && err &&
            strcmp(err, "timeout") == 0) {
            double timeout = lsv_conn_timeout(c);
            lsv_conn_log(LSV_LOG_WARN, c, "a write waited %g s and the peer "
                         "took too little of the %zu bytes queued for it: "
                         "it is not reading; the write fails with "
                         "\"timeout\"", timeout > 0 ? timeout
                                                   : LSV_OUTPUT_STALL,
                         lsv_conn_pending(c));
        }
        return 2;
    }
    lua_Integer j = lua_tointeger(L, top + 1);
    size_t off = (size_t)lua_tointeger(L, top + 2);
    lua_settop(L, top);
    return write_from(L, top, j, off);
}

/* Queues pieces j.. from byte off of piece j. A task queues up to the
 * high-water mark and waits for the peer to take it down to the low one,
 * so a reply of any size streams out in bounded memory; other callers
 * queue everything at once, up to --max-output. */
static int write_from(lua_State *L, int top, lua_Integer j, size_t off)
{
    lsv_lconn_t *u = lua_touserdata(L, 1);
    lsv_conn_t *c = u->c;
    if (c == NULL || lsv_conn_is_closing(c)) {
        lsv_push_fail(L, "closed");
        return 2;
    }
    lsv_task_t *t = writer_task(L, c);
    size_t hw = high_water(c);
    size_t cap = lsv_conn_server(c)->opt.max_output;
    if (cap && hw > cap) hw = cap;      /* a task's queue fits the cap */
    lua_Integer np = count_pieces(L, top);
    for (; j <= np; j++, off = 0) {
        size_t n;
        const char *s = push_piece(L, j, &n);
        while (off < n) {
            size_t chunk = n - off;
            size_t queued = lsv_conn_pending(c);
            if (t != NULL) {
                if (queued >= hw) {
                    lua_pop(L, 1);
                    lua_pushinteger(L, j);
                    lua_pushinteger(L, (lua_Integer)off);
                    lsv_lconn_of(c)->writer = t;
                    /* A stream conn's timer watches the write's progress;
                     * a callback-style conn's is its idle timer, so the
                     * wait itself times out: the peer took less than
                     * 3/4 of the queue in that long. */
                    double stall = 0;
                    if (lsv_conn_type(c) != &lsv_stream_type) {
                        stall = lsv_conn_timeout(c);
                        if (stall <= 0) stall = LSV_OUTPUT_STALL;
                    }
                    lsv_task_wait(t, LSV_WAIT_WRITE, c, unwait_writer, stall);
                    lsv_conn_watch_write(c);
                    return lua_yieldk(L, 0, (lua_KContext)top, write_k);
                }
                if (chunk > hw - queued) chunk = hw - queued;
            }
            if (lsv_conn_write(c, s + off, chunk) != LSV_OK) {
                /* c failed (and may be gone): it was logged */
                lsv_push_fail(L, "overflow");
                return 2;
            }
            off += chunk;
        }
        lua_pop(L, 1);
    }
    lua_settop(L, 1);
    return 1;
}

/* Replies of up to this many strings take write_whole's one copy. */
#define WRITE_PIECES 8

/* The common write, a few strings that fit (for a task, under the
 * high-water mark, so it would not wait): one check, one reservation and
 * one copy, not a lsv_conn_write per piece. The strings are still on the
 * stack. Returns what conn:write returns, or -1 when write_from must take
 * it. [-0, +(1|2), -] */
static int write_whole(lua_State *L, lsv_conn_t *c, const char **piece,
                       const size_t *len, int npieces, size_t total)
{
    if (writer_task(L, c) != NULL) {
        size_t hw = high_water(c);
        size_t cap = lsv_conn_server(c)->opt.max_output;
        if (cap && hw > cap) hw = cap;
        if (lsv_conn_pending(c) + total > hw) return -1;
    }
    if (lsv_conn_check_room(c, total) != LSV_OK) {
        lsv_push_fail(L, "overflow");           /* c failed; may be gone */
        return 2;
    }
    char *dst = lsv_conn_reserve(c, total);
    if (dst == NULL) {
        lsv_push_fail(L, "overflow");
        return 2;
    }
    for (int k = 0; k < npieces; k++) {
        if (len[k] == 0) continue;
        memcpy(dst, piece[k], len[k]);
        dst += len[k];
    }
    lsv_conn_commit(c, total);
    lua_settop(L, 1);
    return 1;
}

int lsv_stream_write(lua_State *L, lsv_conn_t *c)
{
    int top = lua_gettop(L);
    int tables = 0;
    size_t total = 0, n;
    const char *piece[WRITE_PIECES];
    size_t piece_len[WRITE_PIECES];
    for (int i = 2; i <= top; i++) {
        if (lua_type(L, i) != LUA_TTABLE) {
            const char *s = lua_tolstring(L, i, &n);
            if (i - 2 < WRITE_PIECES) {
                piece[i - 2] = s;
                piece_len[i - 2] = n;
            }
            total += n;
            continue;
        }
        tables++;
        lua_Integer len = (lua_Integer)lua_rawlen(L, i);
        for (lua_Integer k = 1; k <= len; k++) {
            lua_rawgeti(L, i, k);
            total += lua_type(L, -1) == LUA_TSTRING ? lua_rawlen(L, -1) : 64;
            lua_pop(L, 1);
        }
    }
    if (tables && !(tables == 1 && top == 2)) {
        /* Mixed: one flat table of every piece, in order. */
        lua_Integer m = 0;
        for (int i = 2; i <= top; i++)
            m += lua_type(L, i) == LUA_TTABLE ? (lua_Integer)lua_rawlen(L, i)
                                              : 1;
        lua_createtable(L, m < INT_MAX ? (int)m : 0, 0);
        m = 0;
        for (int i = 2; i <= top; i++) {
            if (lua_type(L, i) != LUA_TTABLE) {
                lua_pushvalue(L, i);
                lua_rawseti(L, -2, ++m);
                continue;
            }
            lua_Integer len = (lua_Integer)lua_rawlen(L, i);
            for (lua_Integer k = 1; k <= len; k++) {
                lua_rawgeti(L, i, k);
                lua_rawseti(L, -2, ++m);
            }
        }
        lua_replace(L, 2);
        lua_settop(L, 2);
        top = 2;
    }
    if (lsv_conn_is_closing(c)) {
        lsv_push_fail(L, "closed");
        return 2;
    }
    if (!tables && top - 1 <= WRITE_PIECES && total > 0) {
        int rc = write_whole(L, c, piece, piece_len, top - 1, total);
        if (rc >= 0) return rc;
    }
    /* A writer that cannot wait queues the whole reply or none of it. */
    if (writer_task(L, c) == NULL && lsv_conn_check_room(c, total) != LSV_OK) {
        lsv_push_fail(L, "overflow");
        return 2;
    }
    return write_from(L, top, 1, 0);
}

/* type->stalled: a write waiting on c made no progress for c's idle
 * timeout: its task gets nil, "timeout". */
static void stream_stalled(lsv_conn_t *c, double stalled)
{
    lsv_lconn_t *u = lsv_lconn_of(c);
    lsv_task_t *t = u ? u->writer : NULL;
    if (t == NULL) return;
    lsv_conn_log(LSV_LOG_WARN, c, "a write made no progress for %.1f s "
                 "(idle timeout %g s): the peer is not reading and %zu "
                 "bytes are still queued; the write fails with "
                 "\"timeout\"", stalled, lsv_conn_timeout(c),
                 lsv_conn_pending(c));
    u->writer = NULL;
    lsv_push_fail(t->co, "timeout");
    lsv_task_wake(t, 2);
}

/* conn:flush() -> true | nil, "closed": waits until every queued byte has
 * been handed to the kernel. [-0, +(1|2), v] */
static int conn_flush(lua_State *L)
{
    lsv_lconn_t *u = lsv_lconn_check(L, 1);
    lsv_task_t *t = lsv_task_check(L, "conn:flush()");
    lsv_conn_t *c = u->c;
    if (c == NULL) {
        lsv_push_fail(L, "closed");
        return 2;
    }
    if (lsv_conn_pending(c) == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lsv_lconn_t *w = lsv_lconn_of(c);
    if (w->writer)
        luaL_error(L, "conn:flush(): another task is already waiting to "
                   "write to this conn");
    w->writer = t;
    lsv_task_wait(t, LSV_WAIT_FLUSH, c, unwait_writer, 0);
    lsv_conn_watch_write(c);
    return lua_yield(L, 0);
}

void lsv_stream_connected(lsv_conn_t *c, int err)
{
    lsv_lconn_t *u = lsv_lconn_of(c);
    lsv_task_t *t = u ? u->reader : NULL;
    if (u) u->reader = NULL;
    if (t == NULL) return;
    if (err == 0) {
        lsv_lconn_push(t->co, c);
        lsv_task_wake(t, 1);
    } else {
        lsv_connect_push_error(t->co, c, err);   /* "tls: ..." for TLS */
        lsv_task_wake(t, 2);
    }
}

/* conn:write(...) -> conn | nil, "closed" | "overflow" | "timeout".
 * Strings, numbers and tables of them (as on_message returns), written in
 * order; in a task a big write streams out under backpressure (see
 * lsv_stream_write). [-0, +(1|2), e] */
static int conn_write(lua_State *L)
{
    lsv_lconn_t *u = lsv_lconn_check(L, 1);
    lsv_lconn_check_pieces(L, "conn:write");
    if (u->c == NULL) {
        lsv_push_fail(L, "closed");
        return 2;
    }
    return lsv_stream_write(L, u->c);
}

void lsv_stream_closed(lsv_conn_t *c, const char *reason)
{
    lsv_stream_closing(c, 1);
    lsv_handler_closed(c, reason);
}

const lsv_conn_type_t lsv_stream_type = {
    .style = "stream",
    .input = stream_input,
    .room = stream_room,
    .drained = lsv_stream_output,
    .stalled = stream_stalled,
    .error = lsv_handler_on_error,
    .connected = lsv_stream_connected,
    .closing = lsv_stream_closing,
    .closed = lsv_stream_closed,
};

void lsv_stream_open_methods(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "write", conn_write },
        { "readline", conn_readline },
        { "read", conn_read },
        { "read_until", conn_read_until },
        { "read_frame", conn_read_frame },
        { "flush", conn_flush },
        { NULL, NULL }
    };
    lsv_lconn_add_methods(L, methods);
}

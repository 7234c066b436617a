/* conn.c: stream connections: lifecycle, buffered I/O and the framing loop. */
#include "lsv.h"
#include "conn.h"
#include "conn_int.h"
#include "guard.h"
#include "listener.h"
#include "log.h"
#include "lua_conn.h"
#include "net.h"
#include "sched.h"
#include "stream.h"
#include "vm.h"

#include <errno.h>
#include <lauxlib.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Frames handled per readiness event; more wait for the next loop turn so
 * one busy peer cannot starve the others. */
#define FRAMES_PER_EVENT 128

/* Seconds a closing conn waits for its peer to take queued output. */
#define CLOSE_LINGER 10.0

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void conn_finish(lsv_conn_t *c);
static void conn_settle(lsv_conn_t *c);
static void close_after_call(lsv_conn_t *c, const char *reason);
static void conn_input(lsv_conn_t *c);

/* --- watchers ----------------------------------------------------------- */

static void start_reading(lsv_conn_t *c)
{
    if (c->flags & (LSV_CONN_READING | LSV_CONN_CLOSING | LSV_CONN_PAUSED |
                    LSV_CONN_BLOCKED | LSV_CONN_EOF | LSV_CONN_FULL |
                    LSV_CONN_CONNECTING))
        return;
    ev_io_start(c->srv->loop, &c->rio);
    c->flags |= LSV_CONN_READING;
}

static void stop_reading(lsv_conn_t *c)
{
    if (!(c->flags & LSV_CONN_READING)) return;
    ev_io_stop(c->srv->loop, &c->rio);
    c->flags &= ~LSV_CONN_READING;
}

/* Asks for one more pass over c's input on the next loop turn: frames
 * left buffered after the per-event cap, a resume, a drain. The prepare
 * watcher runs the list (lsv_conn_run_again), so a busy conn takes one
 * turn per loop iteration like any other. */
static void schedule_read(lsv_conn_t *c)
{
    lsv_server_t *srv = c->srv;
    if (c->flags & LSV_CONN_AGAIN) return;
    c->flags |= LSV_CONN_AGAIN;
    lsv_conn_t **list = srv->running_again ? &srv->again_next : &srv->again;
    c->next_again = *list;
    *list = c;
    lsv_server_kick(srv);
}

static void arm_timer(lsv_conn_t *c, ev_tstamp after)
{
    struct ev_loop *loop = c->srv->loop;
    if (c->flags & LSV_CONN_TIMER) ev_timer_stop(loop, &c->timer);
    ev_timer_set(&c->timer, after, 0.);
    ev_timer_start(loop, &c->timer);
    c->flags |= LSV_CONN_TIMER;
}

static void disarm_timer(lsv_conn_t *c)
{
    if (!(c->flags & LSV_CONN_TIMER)) return;
    ev_timer_stop(c->srv->loop, &c->timer);
    c->flags &= ~LSV_CONN_TIMER;
}

/* --- buffers ------------------------------------------------------------ */

/* Gives an empty buffer's memory back to the pool, so an idle connection
 * holds no buffers. */
static void release_buf(lsv_server_t *srv, lsv_buf_t *b)
{
    if (b->data == NULL || b->len) return;
    if (b->cap == LSV_READ_SIZE)
        lsv_server_put_buf(srv, b->data);
    else
        free(b->data);
    memset(b, 0, sizeof *b);
}

static void ensure_buf(lsv_server_t *srv, lsv_buf_t *b)
{
    if (b->data) return;
    b->data = lsv_server_get_buf(srv);
    b->cap = LSV_READ_SIZE;
    b->start = b->len = 0;
}

/* --- lifecycle ---------------------------------------------------------- */

static int call_handler(lsv_conn_t *c, const char *fn, int nargs, int nres);

/* A handler call on c raised; its message (with traceback) is on the
 * stack and is popped. Logs it once; unless the failing function was
 * on_error or on_close, passes it to on_error, then closes c. */
static void handler_failed(lsv_conn_t *c, const char *fn)
{
    lua_State *L = c->srv->L;
    c->listener->stats.handler_errors++;
    conn_log(LSV_LOG_ERROR, c, "handler error in %s: %s", fn,
             lua_tostring(L, -1));
    if (strcmp(fn, "on_error") == 0 || strcmp(fn, "on_close") == 0 ||
        (c->flags & LSV_CONN_CLOSING)) {
        lua_pop(L, 1);
        return;
    }
    call_handler(c, "on_error", 1, 0);
    lsv_conn_close(c, "error");
}

/* Calls handler[fn](conn, ...) with nargs arguments already pushed above
 * where the function and conn go. Returns LSV_OK with nres results pushed,
 * LSV_AGAIN if there is no such function (args popped), or LSV_ERR after a
 * handler error, which is logged and handled (on_error, close). */
static int call_handler(lsv_conn_t *c, const char *fn, int nargs, int nres)
{
    lua_State *L = c->srv->L;
    if (!lsv_vm_get_fn(L, c->listener->handler_ref, fn)) {
        lua_pop(L, nargs);
        return LSV_AGAIN;
    }
    lua_insert(L, -nargs - 1);
    lsv_lconn_push(L, c);
    lua_insert(L, -nargs - 1);
    c->busy++;
    int rc = lsv_vm_pcall(L, nargs + 1, nres);
    c->busy--;
    if (likely(rc == LUA_OK)) return LSV_OK;
    handler_failed(c, fn);
    return LSV_ERR;
}

/* Reads handler.framing for a new connection, so assigning a new value
 * takes effect for the next one. A bad value is logged and the last good
 * one (kept in the listener) is used. */
static void read_framing(lsv_listener_t *l, lsv_frame_spec_t *out)
{
    lua_State *L = l->srv->L;
    if (l->opt.has_framing) {       /* the config file's listen{} wins */
        *out = l->opt.framing;
        if (l->opt.max_frame) out->max = l->opt.max_frame;
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, l->handler_ref);
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
    if (l->opt.max_frame) out->max = l->opt.max_frame;
}

/* Under lua_setup's pcall: makes c's userdata (and with it its registry
 * ref), so later pushes of it allocate nothing. */
static int userdata_cb(lua_State *L)
{
    lsv_lconn_push(L, lua_touserdata(L, 1));
    return 0;
}

/* Under lua_setup's pcall, with handler.handle below: starts the task
 * that runs handle(conn) (a thread, a registry ref). */
static int spawn_cb(lua_State *L)
{
    lsv_conn_t *c = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lsv_vm_get_fn(L, c->listener->handler_ref, "handle");
    lsv_lconn_push(L, c);
    c->task = lsv_task_spawn(c->srv, L, 1, c);
    return 0;
}

/* Runs fn (default userdata_cb) on c in a protected call: what a new
 * conn needs from Lua is allocated there, so running out of memory
 * refuses this connection instead of panicking. On failure logs it and
 * returns LSV_ERR; a conn not yet connected is freed. */
static int lua_setup(lsv_conn_t *c, lua_CFunction fn)
{
    lua_State *L = c->srv->L;
    lua_pushcfunction(L, fn ? fn : userdata_cb);
    lua_pushlightuserdata(L, c);
    if (likely(lsv_vm_pcall(L, 1, 0) == LUA_OK)) return LSV_OK;
    conn_log(LSV_LOG_WARN, c, "cannot set up the connection: %s; closing it",
             lua_tostring(L, -1));
    lua_pop(L, 1);
    if (!(c->flags & LSV_CONN_CONNECTED)) lsv_conn_abort(c, "error");
    return LSV_ERR;
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
        lua_gc(l->srv->L, LUA_GCCOLLECT);
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

void lsv_conn_accept(lsv_listener_t *l, int fd, const struct sockaddr *sa,
                     socklen_t salen)
{
    lsv_server_t *srv = l->srv;
    if (unlikely(refuse_when_full(l, fd))) return;
    lsv_conn_t *c = lsv_calloc(1, sizeof *c);
    c->srv = srv;
    c->listener = l;
    c->fd = fd;
    c->ud_ref = LUA_NOREF;
    c->id = ++srv->next_conn_id;
    read_framing(l, &c->framing);
    if (salen > sizeof c->peer) salen = sizeof c->peer;
    memcpy(&c->peer, sa, salen);
    c->peer_len = salen;
    c->timeout = l->opt.idle_timeout;
    c->last_active = c->started = ev_now(srv->loop);
    ev_io_init(&c->rio, conn_read_cb, fd, EV_READ);
    ev_io_init(&c->wio, lsv_conn_write_cb, fd, EV_WRITE);
    ev_init(&c->timer, conn_timer_cb);

    if (l->addr.kind == LSV_NET_TCP) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }

    c->next = srv->conns;
    if (srv->conns) srv->conns->prev = c;
    srv->conns = c;
    l->stats.conns_total++;
    l->stats.conns_active++;

    if (unlikely(lua_setup(c, NULL) != LSV_OK)) return;
    c->flags |= LSV_CONN_CONNECTED;
    c->busy++;
    call_handler(c, "on_connect", 0, 0);
    if (!(c->flags & LSV_CONN_CLOSING) &&
        lsv_vm_get_fn(srv->L, l->handler_ref, "handle")) {
        /* Stream style: handle(conn) runs as this conn's task. */
        c->flags |= LSV_CONN_STREAM;
        if (lua_setup(c, spawn_cb) != LSV_OK)
            lsv_conn_close(c, "error");
    }
    c->busy--;
    if (c->flags & LSV_CONN_CLOSING) {
        conn_settle(c);
        return;
    }
    /* In stream style the timeout applies to each read instead. */
    if (c->timeout > 0 && !(c->flags & LSV_CONN_STREAM))
        arm_timer(c, c->timeout);
    start_reading(c);
}

lsv_conn_t *lsv_conn_outbound(lsv_server_t *srv, int fd,
                              const struct sockaddr *sa, socklen_t salen)
{
    lsv_conn_t *c = lsv_calloc(1, sizeof *c);
    c->srv = srv;
    c->listener = srv->outbound_listener;
    c->fd = fd;
    c->ud_ref = LUA_NOREF;
    c->id = ++srv->next_conn_id;
    c->framing = c->listener->framing;
    if (salen > sizeof c->peer) salen = sizeof c->peer;
    memcpy(&c->peer, sa, salen);
    c->peer_len = salen;
    c->last_active = ev_now(srv->loop);
    c->flags = LSV_CONN_STREAM | LSV_CONN_OUTBOUND | LSV_CONN_CONNECTING;
    c->started = c->last_active;
    c->listener->stats.conns_total++;
    c->listener->stats.conns_active++;
    ev_io_init(&c->rio, conn_read_cb, fd, EV_READ);
    ev_io_init(&c->wio, lsv_conn_write_cb, fd, EV_WRITE);
    ev_init(&c->timer, conn_timer_cb);
    ev_io_start(srv->loop, &c->wio);
    c->flags |= LSV_CONN_WRITING;
    c->next = srv->outbound;
    if (srv->outbound) srv->outbound->prev = c;
    srv->outbound = c;
    srv->stats.outbound_active++;
    return c;
}

/* A task waits for c's input (c->reader is set), or consumed some of it.
 * A waiting reader always restarts reading, however much is buffered: it
 * needs more than that, and nothing else would ever read it (see
 * lsv_stream_room for how far reading then goes). Without one, reading
 * resumes only below the read-ahead. */
void lsv_conn_want_input(lsv_conn_t *c)
{
    if (c->reader || c->in.len < LSV_READ_AHEAD) c->flags &= ~LSV_CONN_FULL;
    start_reading(c);
}

void lsv_conn_handle_done(lsv_conn_t *c, const char *err)
{
    c->task = NULL;
    if (err == NULL) {
        lsv_conn_close(c, "closed");
        return;
    }
    c->listener->stats.handler_errors++;
    conn_log(LSV_LOG_ERROR, c, "handler error in handle: %s", err);
    c->busy++;
    lsv_conn_on_error(c, err);
    c->busy--;
    close_after_call(c, "error");
}

void lsv_conn_task_gone(lsv_conn_t *c, lsv_task_t *t)
{
    if (c->task == t) c->task = NULL;
    if (c->reader == t) c->reader = NULL;
    if (c->writer == t) c->writer = NULL;
}

/* Frees c once nothing uses it: calls on_close, closes the fd, detaches
 * the userdata. Deferred while a Lua call on c is running. */
static void conn_finish(lsv_conn_t *c)
{
    lsv_server_t *srv = c->srv;
    if (c->busy) return;
    if (c->flags & LSV_CONN_CONNECTED) {
        c->flags &= ~LSV_CONN_CONNECTED;
        lua_pushstring(srv->L, c->close_reason ? c->close_reason : "closed");
        c->busy++;
        call_handler(c, "on_close", 1, 0);
        c->busy--;
    }
    lsv_debug("conn %llu closed (%s)", (unsigned long long)c->id,
              c->close_reason);
    if (srv->opt.access_log && !(c->flags & LSV_CONN_OUTBOUND)) {
        char peer[LSV_ADDRSTRLEN];
        lsv_log_access(c->listener->name,
                       lsv_net_format(&c->peer.sa, c->peer_len, peer), c->id,
                       ev_now(srv->loop) - c->started, c->nin, c->nout,
                       c->nmsg, c->close_reason ? c->close_reason : "closed");
    }
    /* A task waits on any conn's output (conn:write, conn:flush). */
    if ((c->flags & LSV_CONN_STREAM) || c->writer) lsv_stream_closing(c, 1);
    if (c->task) c->task->conn = NULL;

    stop_reading(c);
    ev_io_stop(srv->loop, &c->rio);  /* also clears a fed event */
    ev_io_stop(srv->loop, &c->wio);
    ev_timer_stop(srv->loop, &c->timer);
    close(c->fd);

    if (c->flags & LSV_CONN_PENDING) {
        lsv_conn_t **pp = &srv->pending;
        while (*pp != c) pp = &(*pp)->next_pending;
        *pp = c->next_pending;
    }
    if (c->flags & LSV_CONN_AGAIN) {
        lsv_conn_t **pp = &srv->again;
        while (*pp && *pp != c) pp = &(*pp)->next_again;
        if (*pp == NULL) {
            pp = &srv->again_next;
            while (*pp != c) pp = &(*pp)->next_again;
        }
        *pp = c->next_again;
    }
    lsv_conn_t **head = (c->flags & LSV_CONN_OUTBOUND) ? &srv->outbound
                                                        : &srv->conns;
    if (c->prev) c->prev->next = c->next;
    else *head = c->next;
    if (c->next) c->next->prev = c->prev;

    c->in.len = c->out.len = 0;
    release_buf(srv, &c->in);
    release_buf(srv, &c->out);
    lsv_lconn_detach(srv->L, c);
    if (c->flags & LSV_CONN_OUTBOUND) srv->stats.outbound_active--;
    c->listener->stats.conns_active--;
    free(c);
    lsv_server_maybe_done(srv);
}

/* After a Lua call chain on c unwinds: finish a close it asked for. */
static void conn_settle(lsv_conn_t *c)
{
    if (c->busy || !(c->flags & LSV_CONN_CLOSING)) return;
    if ((c->flags & LSV_CONN_ABORT) || c->out.len == 0) conn_finish(c);
}

/* After a Lua call on c returned (busy back to 0): closes c for reason,
 * or finishes the close the call itself asked for. May free c. */
static void close_after_call(lsv_conn_t *c, const char *reason)
{
    if (c->flags & LSV_CONN_CLOSING) conn_settle(c);
    else lsv_conn_close(c, reason);
}

void lsv_conn_close(lsv_conn_t *c, const char *reason)
{
    if (c->flags & LSV_CONN_CLOSING) return;
    c->flags |= LSV_CONN_CLOSING;
    c->close_reason = reason;
    stop_reading(c);
    if ((c->flags & LSV_CONN_STREAM) || c->writer) lsv_stream_closing(c, 0);
    if (c->out.len == 0) {
        conn_finish(c);
        return;
    }
    arm_timer(c, CLOSE_LINGER);
}

void lsv_conn_abort(lsv_conn_t *c, const char *reason)
{
    if (!(c->flags & LSV_CONN_CLOSING)) c->close_reason = reason;
    c->flags |= LSV_CONN_CLOSING | LSV_CONN_ABORT;
    c->out.len = 0;
    stop_reading(c);
    conn_finish(c);
}

/* --- input -------------------------------------------------------------- */

static void frame_error(lsv_conn_t *c, const char *err, const char *reason)
{
    conn_log(LSV_LOG_WARN, c, "%s (%s framing, max %u); closing", err,
             lsv_frame_kind_name(c->framing.kind), c->framing.max);
    c->in.len = 0;
    lsv_conn_on_error(c, err);
    lsv_conn_close(c, reason);
}

/* Hands every complete buffered frame to on_message, up to
 * FRAMES_PER_EVENT, then closes at end of stream. drained says the last
 * read found the socket empty: a stopping server then closes an idle
 * conn. */
static void process_input(lsv_conn_t *c, int drained)
{
    lsv_server_t *srv = c->srv;
    lua_State *L = srv->L;
    int eof = (c->flags & LSV_CONN_EOF) != 0;
    int count = 0;

    if (c->flags & LSV_CONN_STREAM) {
        if (c->reader && unlikely(lsv_stream_input(c) != LSV_OK)) {
            c->busy++;
            handler_failed(c, "handle");    /* out of memory: closes c */
            c->busy--;
            conn_settle(c);                 /* may free c */
            return;
        }
        /* Nobody reads: stop at the read-ahead, so that a task that is
         * busy elsewhere neither grows the buffer nor, with the watcher
         * level-triggered, spins the loop. lsv_conn_want_input resumes. */
        if (!c->reader && c->in.len >= LSV_READ_AHEAD) {
            c->flags |= LSV_CONN_FULL;
            stop_reading(c);
        }
        if (c->in.len == 0) release_buf(srv, &c->in);
        return;
    }

    double t0 = lsv_clock();
    c->busy++;
    /* The handler table and the conn stay on the stack for the batch;
     * on_message is still looked up for every frame. */
    int base = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->listener->handler_ref);
    lsv_lconn_push(L, c);
    int handler = base + 1, conn = base + 2;
    while (!(c->flags & (LSV_CONN_CLOSING | LSV_CONN_PAUSED |
                         LSV_CONN_BLOCKED))) {
        if (c->in.len == 0 && !eof) break;
        if (unlikely(count == FRAMES_PER_EVENT)) {
            schedule_read(c);
            break;
        }
        size_t hint = c->hint, off, mlen;
        ssize_t r = lsv_frame_next(&c->framing, lsv_buf_head(&c->in),
                                   c->in.len, eof, &hint, &off, &mlen);
        if (r == LSV_FRAME_PARTIAL) {
            c->hint = (uint32_t)hint;
            c->flags |= LSV_CONN_PARTIAL;
            if (eof) lsv_conn_close(c, "eof");
            break;
        }
        c->flags &= ~LSV_CONN_PARTIAL;
        if (unlikely(r < 0)) {
            if (r == LSV_FRAME_TOO_LONG) {
                frame_error(c, "frame too long", "too long");
            } else {
                conn_log(LSV_LOG_INFO, c, "frame cut off at end of stream: "
                         "%u bytes of an incomplete %s frame dropped; "
                         "closing", c->in.len,
                         lsv_frame_kind_name(c->framing.kind));
                lsv_conn_close(c, "truncated");
            }
            break;
        }
        c->hint = 0;
        count++;
        c->listener->stats.messages++;
        c->nmsg++;
        if (unlikely(lua_getfield(L, handler, "on_message") !=
                     LUA_TFUNCTION)) {
            lua_pop(L, 1);
            lsv_buf_consume(&c->in, (size_t)r);
            continue;
        }
        lua_pushvalue(L, conn);
        /* Consuming leaves the bytes in place until the next read. */
        const char *frame = lsv_buf_head(&c->in) + off;
        lsv_buf_consume(&c->in, (size_t)r);

        if (likely(lsv_vm_pcall_str(L, 1, frame, mlen, LUA_MULTRET) ==
                   LUA_OK)) {
            if (unlikely(lsv_conn_write_result(c, L, conn) != LSV_OK)) {
                srv->stats.handler_errors++;
                handler_failed(c, "on_message");
            }
            continue;
        }
        handler_failed(c, "on_message");
    }
    lua_settop(L, base);
    c->busy--;
    if (count) lsv_listener_observe(c->listener, lsv_clock() - t0,
                                    (uint64_t)count);

    if (c->in.len == 0) release_buf(srv, &c->in);
    if ((c->flags & LSV_CONN_DRAIN) && !(c->flags & LSV_CONN_CLOSING) &&
        c->in.len == 0 && !c->busy) {
        /* Stopping: close once the peer's data is all answered. Until a
         * read finds the socket empty, look again next turn. */
        if (drained) {
            lsv_conn_close(c, "shutdown");   /* may free c */
            return;
        }
        if (c->flags & LSV_CONN_READING) schedule_read(c);
    }
    conn_settle(c);
}

/* One large read. Returns LSV_OK (data or end of stream), LSV_AGAIN (the
 * socket had nothing, or a stream conn wants no more yet), or LSV_ERR
 * when the conn was aborted. */
static int read_some(lsv_conn_t *c)
{
    lsv_server_t *srv = c->srv;
    size_t room = SIZE_MAX;
    if (c->flags & LSV_CONN_STREAM) {
        room = lsv_stream_room(c);
        if (room == 0) {
            c->flags |= LSV_CONN_FULL;
            stop_reading(c);
            return LSV_AGAIN;
        }
    }
    ensure_buf(srv, &c->in);
    if (lsv_buf_avail(&c->in) < LSV_READ_SIZE / 4 &&
        unlikely(lsv_buf_try_reserve(&c->in, LSV_READ_SIZE) == NULL)) {
        conn_log(LSV_LOG_WARN, c, "out of memory growing the input buffer "
                 "past %u bytes; dropping the connection",
                 (unsigned)c->in.len);
        lsv_conn_abort(c, "error");
        return LSV_ERR;
    }
    for (;;) {
        size_t avail = lsv_buf_avail(&c->in);
        ssize_t n = read(c->fd, c->in.data + c->in.start + c->in.len,
                         avail < room ? avail : room);
        if (likely(n > 0)) {
            lsv_buf_commit(&c->in, (size_t)n);
            c->listener->stats.bytes_in += (uint64_t)n;
            c->nin += (uint64_t)n;
            c->last_active = ev_now(srv->loop);
            return LSV_OK;
        }
        if (n == 0) {
            c->flags |= LSV_CONN_EOF;
            stop_reading(c);
            return LSV_OK;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return LSV_AGAIN;
        lsv_debug("conn %llu: read: %s", (unsigned long long)c->id,
                  strerror(errno));
        lsv_conn_abort(c, "reset");
        return LSV_ERR;
    }
}

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop; (void)revents;
    conn_input(container_of(w, lsv_conn_t, rio));
}

/* Input work for c: read if there is room for it, then frame. A conn
 * holding at least a read's worth of complete frames is not read further
 * until they are handled, so its buffer stays bounded. A stream conn
 * reads whenever its watcher is on: it is on only while a task waits or
 * the read-ahead has room (read_some), so a watcher left on with nothing
 * read cannot spin the loop. */
static void conn_input(lsv_conn_t *c)
{
    if (c->flags & (LSV_CONN_CLOSING | LSV_CONN_CONNECTING)) return;
    int rc = LSV_AGAIN;
    if ((c->flags & LSV_CONN_READING) &&
        ((c->flags & LSV_CONN_STREAM) || c->in.len < LSV_READ_SIZE ||
         (c->flags & LSV_CONN_PARTIAL))) {
        rc = read_some(c);
        if (rc == LSV_ERR) return;
    }
    process_input(c, rc == LSV_AGAIN && (c->flags & LSV_CONN_READING));
}

void lsv_conn_run_again(lsv_server_t *srv)
{
    lsv_conn_t *c;
    srv->running_again = 1;     /* conns asking now wait for next turn */
    while ((c = srv->again) != NULL) {
        srv->again = c->next_again;
        c->flags &= ~LSV_CONN_AGAIN;
        conn_input(c);
    }
    srv->running_again = 0;
    srv->again = srv->again_next;
    srv->again_next = NULL;
    if (srv->again) lsv_server_kick(srv);
}

/* --- timeouts, pause, framing ------------------------------------------- */

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    lsv_conn_t *c = container_of(w, lsv_conn_t, timer);
    c->flags &= ~LSV_CONN_TIMER;
    if (c->flags & LSV_CONN_CLOSING) {
        lsv_debug("conn %llu: peer did not take its output; dropping it",
                  (unsigned long long)c->id);
        lsv_conn_abort(c, c->close_reason);
        return;
    }
    if (c->timeout <= 0) return;
    if (c->flags & LSV_CONN_STREAM) {
        /* Stream style: reads time out in their task; this timer watches
         * a task waiting on output. */
        lsv_conn_write_timer(c);
        return;
    }
    ev_tstamp left = c->last_active + c->timeout - ev_now(loop);
    if (left > 0.001) {
        arm_timer(c, left);
        return;
    }
    int keep = 0;
    c->busy++;
    if (call_handler(c, "on_timeout", 0, 1) == LSV_OK) {
        keep = lua_toboolean(c->srv->L, -1);
        lua_pop(c->srv->L, 1);
    }
    c->busy--;
    if (keep && !(c->flags & LSV_CONN_CLOSING)) {
        c->last_active = ev_now(loop);
        arm_timer(c, c->timeout);
    } else {
        close_after_call(c, "timeout");
    }
}

void lsv_conn_set_timeout(lsv_conn_t *c, double seconds)
{
    c->timeout = seconds > 0 ? seconds : 0;
    /* Stream style: the timeout applies to each read (see stream.c). */
    if (c->flags & (LSV_CONN_CLOSING | LSV_CONN_STREAM)) return;
    if (c->timeout > 0) {
        c->last_active = ev_now(c->srv->loop);
        arm_timer(c, c->timeout);
    } else {
        disarm_timer(c);
    }
}

void lsv_conn_pause(lsv_conn_t *c)
{
    c->flags |= LSV_CONN_PAUSED;
    stop_reading(c);
}

void lsv_conn_resume(lsv_conn_t *c)
{
    if (!(c->flags & LSV_CONN_PAUSED)) return;
    c->flags &= ~LSV_CONN_PAUSED;
    start_reading(c);
    if (!(c->flags & LSV_CONN_CLOSING) &&
        (c->in.len || (c->flags & LSV_CONN_EOF)))
        schedule_read(c);
}

void lsv_conn_set_framing(lsv_conn_t *c, const lsv_frame_spec_t *spec)
{
    c->framing = *spec;
    c->hint = 0;
}

/* --- whole server ------------------------------------------------------- */

void lsv_conn_drain_all(lsv_server_t *srv)
{
    /* Each conn reads once more, answers what its peer already sent, and
     * closes when no partial frame is left (process_input). */
    for (lsv_conn_t *c = srv->conns; c; c = c->next) {
        c->flags |= LSV_CONN_DRAIN;
        if (!(c->flags & LSV_CONN_CLOSING)) schedule_read(c);
    }
}

void lsv_conn_abort_all(lsv_server_t *srv, const char *reason)
{
    while (srv->conns) lsv_conn_abort(srv->conns, reason);
    while (srv->outbound) lsv_conn_abort(srv->outbound, reason);
}

/* --- for conn_out.c (conn_int.h) ---------------------------------------- */

void lsv_conn_start_reading(lsv_conn_t *c) { start_reading(c); }
void lsv_conn_stop_reading(lsv_conn_t *c) { stop_reading(c); }
void lsv_conn_schedule_read(lsv_conn_t *c) { schedule_read(c); }
void lsv_conn_arm_timer(lsv_conn_t *c, double after) { arm_timer(c, after); }
void lsv_conn_finish(lsv_conn_t *c) { conn_finish(c); }

void lsv_conn_ensure_buf(lsv_server_t *srv, lsv_buf_t *b)
{
    ensure_buf(srv, b);
}

void lsv_conn_release_buf(lsv_server_t *srv, lsv_buf_t *b)
{
    release_buf(srv, b);
}

int lsv_conn_call(lsv_conn_t *c, const char *fn, int nargs, int nres)
{
    return call_handler(c, fn, nargs, nres);
}

/* udp.c: datagram listeners: one on_message call per datagram. */
#include "lsv.h"
#include "udp.h"
#include "log.h"
#include "lua_conn.h"
#include "vm.h"

#include <errno.h>
#include <lauxlib.h>
#include <string.h>
#include <sys/uio.h>

/* Datagrams handled per wakeup before other watchers get a turn. */
#define DGRAMS_PER_EVENT 64

/* Largest datagram we accept; a bigger one is dropped and logged. */
#define DGRAM_MAX 65536

/* Reply pieces sent by one sendmsg; more are joined into one buffer. */
#define REPLY_IOV 64

/* One receive buffer per process: datagrams are copied into Lua strings
 * before any handler runs, so listeners can share it. */
static char recv_buf[DGRAM_MAX + 1];

void lsv_udp_init(lsv_listener_t *l)
{
    lsv_dgram_t *d = lsv_calloc(1, sizeof *d);
    d->listener = l;
    d->ud_ref = LUA_NOREF;
    l->dgram = d;
}

void lsv_udp_free(lsv_listener_t *l)
{
    lsv_buf_free(&l->dgram->reply);
    free(l->dgram);
    l->dgram = NULL;
}

int lsv_udp_write(lsv_dgram_t *d, const char *p, size_t n)
{
    if (!d->in_call) return LSV_ERR;
    lsv_buf_append(&d->reply, p, n);
    return LSV_OK;
}

/* Sends what was written during the call plus the reply on the stack top
 * (a string, a table of strings, or nil) as one datagram to the sender.
 * Returns LSV_ERR for a reply of the wrong type. */
static int send_reply(lsv_dgram_t *d, lua_State *L)
{
    struct iovec iov[REPLY_IOV];
    int niov = 0, have = d->reply.len > 0;
    size_t n;
    if (have) {
        iov[niov].iov_base = lsv_buf_head(&d->reply);
        iov[niov++].iov_len = d->reply.len;
    }
    int t = lua_type(L, -1);
    if (t == LUA_TSTRING || t == LUA_TNUMBER) {
        iov[niov].iov_base = (void *)lua_tolstring(L, -1, &n);
        iov[niov++].iov_len = n;
        have = 1;
    } else if (t == LUA_TTABLE) {
        lua_Integer len = (lua_Integer)lua_rawlen(L, -1);
        int tab = lua_gettop(L);
        /* Pieces go out as an iovec each, kept alive on the stack until
         * sendmsg; past the iovec limit they are joined in the buffer. */
        int join = len > REPLY_IOV - niov || !lua_checkstack(L, (int)len);
        for (lua_Integer i = 1; i <= len; i++) {
            int et = lua_rawgeti(L, tab, i);
            if (et != LUA_TSTRING && et != LUA_TNUMBER) {
                lsv_error("on_message (%s): reply element %lld is a %s, not "
                          "a string", d->listener->name, (long long)i,
                          lua_typename(L, et));
                lua_settop(L, tab);
                return LSV_ERR;
            }
            const char *s = lua_tolstring(L, -1, &n);
            if (join) {
                lsv_buf_append(&d->reply, s, n);
                lua_pop(L, 1);
            } else {
                iov[niov].iov_base = (void *)s;
                iov[niov++].iov_len = n;
            }
        }
        if (join) {
            iov[0].iov_base = lsv_buf_head(&d->reply);
            iov[0].iov_len = d->reply.len;
            niov = 1;
        }
        have = 1;
    } else if (t != LUA_TNIL) {
        lsv_error("on_message (%s): returned a %s; a reply is a string, a "
                  "table of strings or nil", d->listener->name,
                  lua_typename(L, t));
        return LSV_ERR;
    }
    if (!have) return LSV_OK;

    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_name = &d->peer;
    msg.msg_namelen = d->peer_len;
    msg.msg_iov = iov;
    msg.msg_iovlen = (size_t)niov;
    if (d->peer_len <= sizeof(sa_family_t)) {
        lsv_debug("%s: sender has no address; reply dropped",
                  d->listener->name);
        return LSV_OK;
    }
    ssize_t w;
    do w = sendmsg(d->listener->fd, &msg, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    if (w < 0) {
        lsv_warn("%s: reply to a datagram: %s", d->listener->name,
                 strerror(errno));
    } else {
        d->listener->srv->stats.bytes_out += (uint64_t)w;
        d->listener->stats.bytes_out += (uint64_t)w;
    }
    return LSV_OK;
}

/* Runs on_message for the datagram in recv_buf[0, n). */
static void handle_datagram(lsv_listener_t *l, size_t n)
{
    lsv_server_t *srv = l->srv;
    lua_State *L = srv->L;
    lsv_dgram_t *d = l->dgram;
    int top = lua_gettop(L);
    srv->stats.datagrams++;
    srv->stats.messages++;
    l->stats.messages++;
    if (!lsv_vm_get_fn(L, l->handler_ref, "on_message")) return;
    lsv_ldgram_push(L, d);
    lua_pushlstring(L, recv_buf, n);
    d->in_call = 1;
    d->reply.len = d->reply.start = 0;
    if (likely(lsv_vm_pcall(L, 2, 1) == LUA_OK)) {
        if (unlikely(send_reply(d, L) != LSV_OK)) {
            srv->stats.handler_errors++;
            l->stats.handler_errors++;
        }
    } else {
        char peer[LSV_ADDRSTRLEN];
        l->stats.handler_errors++;
        lsv_log_ctx_t ctx = { l->name, lsv_net_format((struct sockaddr *)
                              &d->peer, d->peer_len, peer), 0 };
        lsv_log_writec(LSV_LOG_ERROR, &ctx, "handler error in on_message "
                       "(datagram): %s", lua_tostring(L, -1));
        if (lsv_vm_get_fn(L, l->handler_ref, "on_error")) {
            lsv_ldgram_push(L, d);
            lua_pushvalue(L, -3);
            if (lsv_vm_pcall(L, 2, 0) != LUA_OK) {
                lsv_error("handler error in on_error (%s): %s", l->name,
                          lua_tostring(L, -1));
            }
        }
    }
    d->in_call = 0;
    d->reply.len = d->reply.start = 0;
    lua_settop(L, top);
}

void lsv_udp_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop; (void)revents;
    lsv_listener_t *l = container_of(w, lsv_listener_t, io);
    lsv_dgram_t *d = l->dgram;
    double t0 = lsv_clock();
    int handled = 0;
    for (int i = 0; i < DGRAMS_PER_EVENT && l->fd >= 0; i++) {
        d->peer_len = sizeof d->peer;
        ssize_t n = recvfrom(l->fd, recv_buf, sizeof recv_buf, MSG_TRUNC,
                             (struct sockaddr *)&d->peer, &d->peer_len);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                lsv_warn("%s: recvfrom: %s", l->name, strerror(errno));
            break;
        }
        l->srv->stats.bytes_in += (uint64_t)n;
        l->stats.bytes_in += (uint64_t)n;
        if ((size_t)n > DGRAM_MAX) {
            char peer[LSV_ADDRSTRLEN];
            lsv_warn("%s: datagram of %zd bytes from %s is over %d; dropped",
                     l->name, n, lsv_net_format((struct sockaddr *)&d->peer,
                                                d->peer_len, peer),
                     DGRAM_MAX);
            continue;
        }
        handle_datagram(l, (size_t)n);
        handled++;
    }
    if (handled) lsv_listener_observe(l, lsv_clock() - t0, (uint64_t)handled);
}

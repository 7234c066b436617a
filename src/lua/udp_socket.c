/* udp_socket.c: luaserv.udp(): outbound datagram sockets for tasks. */
#include "lsv.h"
#include "udp_socket.h"
#include "listener.h"
#include "log.h"
#include "net.h"
#include "resolve.h"
#include "sched.h"
#include "server.h"
#include "vm.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define UDP_MT "luaserv.udp"
#define UDP_MAX 65536

/* A datagram socket. Its fd is made on first use, for the family of the
 * first address. A task waiting in receive() keeps the userdata alive
 * through its own stack; an unreferenced socket is closed by the GC. */
typedef struct ludp {
    ev_io io;
    lsv_server_t *srv;
    int fd;
    int family;
    lsv_task_t *reader;
    lsv_resolve_req_t *rq;       /* setpeername lookup in flight */
} ludp_t;

static ludp_t *check_udp(lua_State *L)
{
    return luaL_checkudata(L, 1, UDP_MT);
}

static int push_errno(lua_State *L, int err)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", strerror(err));
    buf[0] = (char)tolower((unsigned char)buf[0]);
    luaL_pushfail(L);
    lua_pushstring(L, buf);
    return 2;
}

static int push_closed(lua_State *L)
{
    luaL_pushfail(L);
    lua_pushliteral(L, "closed");
    return 2;
}

/* Fills a from a numeric ip and port. Returns its length, or 0. */
static socklen_t numeric_addr(const char *ip, lua_Integer port,
                              struct sockaddr_storage *a)
{
    memset(a, 0, sizeof *a);
    struct sockaddr_in *in4 = (struct sockaddr_in *)a;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)a;
    if (inet_pton(AF_INET, ip, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        return sizeof *in4;
    }
    if (inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        return sizeof *in6;
    }
    return 0;
}

/* Makes the socket for family on first use. Returns LSV_OK or LSV_ERR
 * (errno set). */
static int ensure_fd(ludp_t *u, int family)
{
    if (u->fd >= 0) {
        if (u->family == family) return LSV_OK;
        errno = EAFNOSUPPORT;
        return LSV_ERR;
    }
    u->fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (u->fd < 0) return LSV_ERR;
    u->family = family;
    ev_io_set(&u->io, u->fd, EV_READ);
    return LSV_OK;
}

static void stop_reading(ludp_t *u)
{
    ev_io_stop(u->srv->loop, &u->io);
}

static void unwait_reader(lsv_task_t *t)
{
    ludp_t *u = t->wait_obj;
    if (u && u->reader == t) {
        u->reader = NULL;
        stop_reading(u);
    }
}

/* Receives one datagram onto L: data, ip, port. Returns the count pushed,
 * or -1 when nothing is waiting (EAGAIN). */
static int try_receive(ludp_t *u, lua_State *L)
{
    static char buf[UDP_MAX];
    struct sockaddr_storage from;
    socklen_t len = sizeof from;
    ssize_t n;
    do n = recvfrom(u->fd, buf, sizeof buf, 0, (struct sockaddr *)&from,
                    &len);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return -1;
        return push_errno(L, errno);
    }
    char ip[LSV_ADDRSTRLEN];
    int port;
    lsv_net_split((struct sockaddr *)&from, len, ip, &port);
    lua_pushlstring(L, buf, (size_t)n);
    lua_pushstring(L, ip);
    lua_pushinteger(L, port);
    return 3;
}

/* Under udp_read_cb's pcall on the main thread: receives for the waiting
 * task. The values are made here and moved to the task's thread, so a
 * failed allocation raises into the pcall (the datagram is dropped and
 * logged) instead of panicking outside any protected call. */
static int receive_cb(lua_State *L)
{
    ludp_t *u = lua_touserdata(L, 1);
    lsv_task_t *t = u->reader;
    lua_settop(L, 0);
    int n = try_receive(u, L);
    if (n < 0) return 0;
    if (!lua_checkstack(t->co, n)) return luaL_error(L, "stack overflow");
    lua_xmove(L, t->co, n);
    u->reader = NULL;
    stop_reading(u);
    lsv_task_wake(t, n);
    return 0;
}

static void udp_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop; (void)revents;
    ludp_t *u = container_of(w, ludp_t, io);
    lsv_task_t *t = u->reader;
    if (t == NULL) {
        stop_reading(u);
        return;
    }
    lua_State *L = u->srv->vm->L;
    lua_pushcfunction(L, receive_cb);
    lua_pushlightuserdata(L, u);
    if (unlikely(lsv_vm_pcall(L, 1, 0) != LUA_OK)) {
        lsv_warn("udp socket: dropped a datagram: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
}

/* u:receive([timeout]) -> data, ip, port | nil, "timeout" | nil, err.
 * Waits in the task for the next datagram. [-0, +(2|3), v] */
static int udp_receive(lua_State *L)
{
    ludp_t *u = check_udp(L);
    double timeout = (double)luaL_optnumber(L, 2, 0);
    lsv_task_t *t = lsv_task_check(L, "udp:receive()");
    if (u->family == -1) return push_closed(L);
    /* Never used yet: an IPv4 socket with an ephemeral port, so the wait
     * (and its timeout) works as on any other socket. */
    if (u->fd < 0 && ensure_fd(u, AF_INET) != LSV_OK)
        return push_errno(L, errno);
    if (u->reader) luaL_error(L, "udp:receive(): another task is already "
                              "receiving on this socket");
    int n = try_receive(u, L);
    if (n >= 0) return n;
    u->reader = t;
    ev_io_start(u->srv->loop, &u->io);
    lsv_task_wait(t, LSV_WAIT_DGRAM, u, unwait_reader, timeout);
    return lua_yield(L, 0);
}

static int send_to(lua_State *L, ludp_t *u, const struct sockaddr *a,
                   socklen_t alen)
{
    size_t n;
    const char *data = luaL_checklstring(L, 2, &n);
    ssize_t w;
    do w = sendto(u->fd, data, n, MSG_NOSIGNAL, a, alen);
    while (w < 0 && errno == EINTR);
    if (w < 0) return push_errno(L, errno);
    u->srv->outbound_listener->stats.bytes_out += (uint64_t)w;
    lua_pushboolean(L, 1);
    return 1;
}

/* u:sendto(data, ip, port) -> true | nil, err. ip is numeric; use
 * setpeername for names. [-0, +(1|2), v] */
static int udp_sendto(lua_State *L)
{
    ludp_t *u = check_udp(L);
    const char *ip = luaL_checkstring(L, 3);
    lua_Integer port = luaL_checkinteger(L, 4);
    luaL_argcheck(L, port >= 1 && port <= 65535, 4, "port out of range");
    struct sockaddr_storage a;
    socklen_t alen = numeric_addr(ip, port, &a);
    luaL_argcheck(L, alen > 0, 3, "a numeric IP address (use setpeername "
                  "for host names)");
    if (u->family == -1) return push_closed(L);
    if (ensure_fd(u, a.ss_family) != LSV_OK) return push_errno(L, errno);
    return send_to(L, u, (struct sockaddr *)&a, alen);
}

/* u:send(data) -> true | nil, err, to the peer set by setpeername. */
static int udp_send(lua_State *L)
{
    ludp_t *u = check_udp(L);
    luaL_checkstring(L, 2);
    if (u->fd < 0) return push_errno(L, EDESTADDRREQ);
    return send_to(L, u, NULL, 0);
}

static int do_connect(lua_State *L, ludp_t *u, const struct sockaddr *a,
                      socklen_t alen)
{
    if (ensure_fd(u, a->sa_family) != LSV_OK ||
        connect(u->fd, a, alen) < 0)
        return push_errno(L, errno);
    lua_pushboolean(L, 1);
    return 1;
}

static void unwait_resolve(lsv_task_t *t)
{
    ludp_t *u = t->wait_obj;
    if (u && u->rq) {
        lsv_resolve_cancel(u->srv->resolver, u->rq);
        u->rq = NULL;
    }
}

static void resolved_cb(void *data, const struct addrinfo *res, int err)
{
    lsv_task_t *t = data;
    ludp_t *u = t->wait_obj;
    u->rq = NULL;
    lsv_task_unwait(t);
    int n;
    if (err || res == NULL) {
        luaL_pushfail(t->co);
        lua_pushfstring(t->co, "cannot resolve: %s", gai_strerror(err));
        n = 2;
    } else {
        n = do_connect(t->co, u, res->ai_addr, res->ai_addrlen);
    }
    lsv_task_wake(t, n);
}

/* u:setpeername(host, port) -> true | nil, err. Later send() and
 * receive() talk to that peer only. A name waits for the resolver.
 * [-0, +(1|2), v] */
static int udp_setpeername(lua_State *L)
{
    ludp_t *u = check_udp(L);
    const char *host = luaL_checkstring(L, 2);
    lua_Integer port = luaL_checkinteger(L, 3);
    luaL_argcheck(L, port >= 1 && port <= 65535, 3, "port out of range");
    if (u->family == -1) return push_closed(L);
    struct sockaddr_storage a;
    socklen_t alen = numeric_addr(host, port, &a);
    if (alen > 0) return do_connect(L, u, (struct sockaddr *)&a, alen);
    lsv_task_t *t = lsv_task_check(L, "udp:setpeername() with a host name");
    u->rq = lsv_resolve(u->srv->resolver, host, (int)port, SOCK_DGRAM,
                        resolved_cb, t);
    lsv_task_wait(t, LSV_WAIT_RESOLVE, u, unwait_resolve, 10.0);
    return lua_yield(L, 0);
}

static void udp_shut(ludp_t *u)
{
    if (u->reader) {
        lsv_task_t *t = u->reader;
        unwait_reader(t);
        push_closed(t->co);
        lsv_task_wake(t, 2);
    }
    stop_reading(u);
    if (u->fd >= 0) close(u->fd);
    u->fd = -1;
    u->family = -1;
}

/* u:close() -> true. */
static int udp_close(lua_State *L)
{
    udp_shut(check_udp(L));
    lua_pushboolean(L, 1);
    return 1;
}

static int udp_gc(lua_State *L)
{
    udp_shut(check_udp(L));
    return 0;
}

/* luaserv.udp() -> a datagram socket. [-0, +1, m] */
static int api_udp(lua_State *L)
{
    ludp_t *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    u->srv = lsv_vm_server(L);
    u->fd = -1;
    u->family = 0;
    ev_init(&u->io, udp_read_cb);
    luaL_setmetatable(L, UDP_MT);
    return 1;
}

/* Adds luaserv.udp to the module table at the top of the stack. */
void lsv_udp_open_api(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "sendto", udp_sendto },
        { "send", udp_send },
        { "receive", udp_receive },
        { "setpeername", udp_setpeername },
        { "close", udp_close },
        { NULL, NULL }
    };
    if (luaL_newmetatable(L, UDP_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, udp_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, udp_close);
        lua_setfield(L, -2, "__close");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, api_udp);
    lua_setfield(L, -2, "udp");
}

/* connect.c: luaserv.connect: outbound stream connections, their name
 * lookup on the resolver threads and their connect, waited for in a
 * task. */
#include "lsv.h"
#include "connect.h"
#include "conn.h"
#include "lua_conn.h"
#include "net.h"
#include "resolve.h"
#include "sched.h"
#include "stream.h"
#include "vm.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <sys/un.h>
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CONNECT_TIMEOUT 10.0

static void unwait_connect(lsv_task_t *t)
{
    lsv_conn_t *c = t->wait_obj;
    if (c == NULL) return;
    if (lsv_lconn_of(c)) lsv_lconn_of(c)->reader = NULL;
    lsv_conn_abort(c, "timeout");
}

/* Starts a non-blocking connect for task t, whose conn will be u (made
 * in the task, which keeps it on its stack meanwhile). On success t waits
 * for it; otherwise t is woken with nil, err. */
static void start_connect(lsv_task_t *t, lsv_lconn_t *u,
                          const struct sockaddr *sa, socklen_t len,
                          double timeout)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    0);
    if (fd < 0 || (connect(fd, sa, len) < 0 && errno != EINPROGRESS)) {
        int err = errno;
        if (fd >= 0) close(fd);
        lsv_push_errno(t->co, err);
        lsv_task_wake(t, 2);
        return;
    }
    lsv_conn_t *c = lsv_conn_outbound(t->srv, fd, sa, len, &lsv_stream_type);
    lsv_lconn_bind(u, c);
    u->reader = t;
    lsv_task_wait(t, LSV_WAIT_CONNECT, c, unwait_connect, timeout);
}

/* A name lookup in flight for a task. */
typedef struct connect_req {
    lsv_task_t *t;
    lsv_lconn_t *u;
    lsv_resolve_req_t *rq;
    ev_tstamp deadline;
    char host[256];
} connect_req_t;

static void unwait_resolve(lsv_task_t *t)
{
    connect_req_t *req = t->wait_obj;
    lsv_resolve_cancel(t->srv->resolver, req->rq);
    free(req);
}

static void resolved_cb(void *data, const struct addrinfo *res, int err)
{
    connect_req_t *req = data;
    lsv_task_t *t = req->t;
    lsv_task_unwait(t);      /* the lookup is over; the connect follows */
    if (err || res == NULL) {
        char msg[512];
        snprintf(msg, sizeof msg, "cannot resolve %s: %s", req->host,
                 gai_strerror(err));
        lsv_push_fail(t->co, msg);
        lsv_task_wake(t, 2);
    } else {
        double left = req->deadline - ev_now(t->srv->loop);
        start_connect(t, req->u, res->ai_addr, res->ai_addrlen,
                      left > 0.001 ? left : 0.001);
    }
    free(req);
}

/* luaserv.connect(host, port[, { timeout = s }]) -> conn | nil, err;
 * or luaserv.connect("unix:/path"[, nil, { timeout = s }]), a unix
 * socket. Names are looked up on the resolver thread; the task waits
 * for the lookup and the connect, at most timeout seconds (default
 * 10). */
static int api_connect(lua_State *L)
{
    const char *host = luaL_checkstring(L, 1);
    int local = strncmp(host, "unix:", 5) == 0;
    lua_Integer port = local ? luaL_optinteger(L, 2, 0)
                             : luaL_checkinteger(L, 2);
    luaL_argcheck(L, local || (port >= 1 && port <= 65535), 2,
                  "port out of range");
    double timeout = CONNECT_TIMEOUT;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        if (lua_getfield(L, 3, "timeout") != LUA_TNIL) {
            timeout = (double)luaL_checknumber(L, -1);
            luaL_argcheck(L, timeout > 0, 3, "timeout must be > 0");
        }
        lua_pop(L, 1);
    }
    lsv_task_t *t = lsv_task_check(L, "luaserv.connect()");
    lsv_server_t *srv = t->srv;
    /* The conn's userdata first: it may raise (memory), and the task's
     * stack keeps it while the task waits. */
    lsv_lconn_t *u = lsv_lconn_new(L, NULL, 1);

    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
        struct sockaddr_un un;
    } a;
    memset(&a, 0, sizeof a);
    if (local) {
        size_t n = strlen(host + 5);
        if (n == 0 || n >= sizeof a.un.sun_path) {
            lsv_push_fail(L, "unix socket path empty or too long");
            return 2;
        }
        a.un.sun_family = AF_UNIX;
        memcpy(a.un.sun_path, host + 5, n);
        start_connect(t, u, &a.sa, (socklen_t)(offsetof(struct sockaddr_un,
                      sun_path) + n + 1), timeout);
    } else if (inet_pton(AF_INET, host, &a.in4.sin_addr) == 1) {
        a.in4.sin_family = AF_INET;
        a.in4.sin_port = htons((uint16_t)port);
        start_connect(t, u, &a.sa, sizeof a.in4, timeout);
    } else if (inet_pton(AF_INET6, host, &a.in6.sin6_addr) == 1) {
        a.in6.sin6_family = AF_INET6;
        a.in6.sin6_port = htons((uint16_t)port);
        start_connect(t, u, &a.sa, sizeof a.in6, timeout);
    } else {
        connect_req_t *req = lsv_calloc(1, sizeof *req);
        req->t = t;
        req->u = u;
        req->deadline = ev_now(srv->loop) + timeout;
        snprintf(req->host, sizeof req->host, "%s", host);
        req->rq = lsv_resolve(srv->resolver, host, (int)port, SOCK_STREAM,
                              resolved_cb, req);
        lsv_task_wait(t, LSV_WAIT_RESOLVE, req, unwait_resolve, timeout);
    }
    /* start_connect may have woken t already (an immediate failure): the
     * results are on L's stack and the yield hands them back. */
    return lua_yield(L, 0);
}


void lsv_connect_open_api(lua_State *L)
{
    lua_pushcfunction(L, api_connect);
    lua_setfield(L, -2, "connect");
}

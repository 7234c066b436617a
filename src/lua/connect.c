/* connect.c: luaserv.connect: outbound stream connections, their name
 * lookup on the resolver threads and their connect, waited for in a
 * task. */
#include "lsv.h"
#include "connect.h"
#include "connect_tls.h"
#include "conn.h"
#include "lua_conn.h"
#include "net.h"
#include "proxy.h"
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
 * in the task, which keeps it on its stack meanwhile), speaking TLS with
 * tls (the caller's reference; NULL: plain) and sending or checking sni.
 * On success t waits for the connect and its handshake; otherwise t is
 * woken with nil, err. */
static void start_connect(lsv_task_t *t, lsv_lconn_t *u,
                          const struct sockaddr *sa, socklen_t len,
                          double timeout, lsv_tls_ctx_t *tls,
                          const char *sni)
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
    if (tls && lsv_tls_connect(c, tls, sni) != LSV_OK) {
        lsv_conn_abort(c, "tls");        /* closes fd */
        lsv_push_fail(t->co, "tls: out of memory");
        lsv_task_wake(t, 2);
        return;
    }
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
    lsv_tls_ctx_t *tls;            /* a reference, or NULL */
    char host[256];
    char sni[256];                 /* "" for none */
} connect_req_t;

static void unwait_resolve(lsv_task_t *t)
{
    connect_req_t *req = t->wait_obj;
    lsv_resolve_cancel(t->srv->resolver, req->rq);
    lsv_tls_ctx_unref(req->tls);
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
                      left > 0.001 ? left : 0.001, req->tls, req->sni);
    }
    lsv_tls_ctx_unref(req->tls);
    free(req);
}

/* ---- the proxy_protocol option ---------------------------------------------
 * A PROXY header (v1 or v2) queued on the new conn before the task gets
 * it, so it goes out before anything the task writes: a luaserv proxy
 * passes its client on to the next hop as a balancer does. */

/* What the option asks for; src and dst, when not given, are the
 * socket's own local and peer addresses, read once it is connected. */
typedef struct proxy_out {
    int version;
    int has_src, has_dst;
    struct sockaddr_storage src, dst;
} proxy_out_t;

/* Parses a numeric "ip:port" or "[ipv6]:port" (as conn.peer gives them)
 * into ss. Returns 1, or 0 when s is not one. */
static int parse_ip_port(const char *s, struct sockaddr_storage *ss)
{
    char host[INET6_ADDRSTRLEN];
    const char *h = s, *colon;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || rb[1] != ':') return 0;
        h = s + 1;
        colon = rb + 1;
    } else if ((colon = strrchr(s, ':')) == NULL) {
        return 0;
    }
    size_t hl = (size_t)(colon - h) - (s[0] == '[' ? 1 : 0);
    const char *p = colon + 1;
    size_t pl = strlen(p);
    if (hl == 0 || hl >= sizeof host || pl == 0 || pl > 5) return 0;
    unsigned port = 0;
    for (size_t i = 0; i < pl; i++) {
        if (p[i] < '0' || p[i] > '9') return 0;
        port = port * 10 + (unsigned)(p[i] - '0');
    }
    if (port > 65535) return 0;
    memcpy(host, h, hl);
    host[hl] = '\0';
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        return 1;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        return 1;
    }
    return 0;
}

/* Reads the option table at index 3 into *po: proxy_protocol (1 or 2,
 * else a caller error), src and dst (strings). Returns NULL, or a
 * message for a src or dst that cannot go in a header. [-0, +0, v] */
static const char *proxy_opts(lua_State *L, proxy_out_t *po)
{
    memset(po, 0, sizeof *po);
    /* nil and false mean none, so a setting can be passed on as is */
    int t = lua_getfield(L, 3, "proxy_protocol");
    if (t != LUA_TNIL && !(t == LUA_TBOOLEAN && !lua_toboolean(L, -1))) {
        int exact;
        lua_Integer v = lua_tointegerx(L, -1, &exact);
        luaL_argcheck(L, exact && t == LUA_TNUMBER && (v == 1 || v == 2), 3,
                      "proxy_protocol must be 1 or 2");
        po->version = (int)v;
    }
    lua_pop(L, 1);
    static const char *const names[2] = { "src", "dst" };
    const char *err = NULL;
    for (int i = 0; i < 2; i++) {
        if (lua_getfield(L, 3, names[i]) != LUA_TNIL) {
            luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, 3,
                          i ? "dst must be a string" : "src must be a string");
            luaL_argcheck(L, po->version, 3, "src and dst need proxy_protocol");
            const char *a = lua_tostring(L, -1);
            int *has = i ? &po->has_dst : &po->has_src;
            *has = parse_ip_port(a, i ? &po->dst : &po->src);
            if (!*has && err == NULL)
                err = i ? "proxy_protocol: dst is not a numeric ip:port"
                        : "proxy_protocol: src is not a numeric ip:port";
        }
        lua_pop(L, 1);
    }
    if (err == NULL && po->has_src && po->has_dst &&
        po->src.ss_family != po->dst.ss_family)
        err = "proxy_protocol: src and dst are of different families";
    return err;
}

/* Queues po's header on the connected c. Returns NULL, or why not. */
static const char *send_header(lsv_conn_t *c, const proxy_out_t *po)
{
    struct sockaddr_storage src = po->src, dst = po->dst;
    socklen_t len = sizeof src;
    int fd = lsv_conn_fd(c);
    if (!po->has_src && getsockname(fd, (struct sockaddr *)&src, &len) != 0)
        return "proxy_protocol: cannot read the local address";
    len = sizeof dst;
    if (!po->has_dst && getpeername(fd, (struct sockaddr *)&dst, &len) != 0)
        return "proxy_protocol: cannot read the peer address";
    char hdr[LSV_PROXY_V2_HEAD + 216];
    ssize_t n = lsv_proxy_build(hdr, sizeof hdr, po->version,
                                (struct sockaddr *)&src,
                                (struct sockaddr *)&dst);
    /* v1 cannot name a unix socket's ends: it says UNKNOWN, as HAProxy
     * does */
    if (n < 0 && po->version == 1 && !po->has_src && !po->has_dst &&
        src.ss_family == AF_UNIX)
        n = lsv_proxy_build(hdr, sizeof hdr, 1, NULL, NULL);
    if (n < 0)
        return "proxy_protocol: src and dst are of different families";
    if (lsv_conn_write(c, hdr, (size_t)n) != LSV_OK) return "closed";
    return NULL;
}

/* connect's continuation with proxy_protocol: the results are above
 * base, the proxy_out_t at base. On a conn, queues the header first;
 * if it cannot, closes the conn and returns nil, err instead. */
static int connect_k(lua_State *L, int status, lua_KContext base)
{
    (void)status;
    int nres = lua_gettop(L) - (int)base;
    if (nres < 1 || lua_isnil(L, (int)base + 1)) return nres;
    const proxy_out_t *po = lua_touserdata(L, (int)base);
    lsv_lconn_t *u = lsv_lconn_check(L, (int)base + 1);
    const char *err = u->c ? send_header(u->c, po) : "closed";
    if (err == NULL) return nres;
    if (u->c) lsv_conn_abort(u->c, "proxy_protocol");
    return lsv_push_fail(L, err);
}

/* luaserv.connect(host, port[, { timeout = s, proxy_protocol = 1|2,
 * src = "ip:port", dst = "ip:port", tls = true, sni = name, verify =
 * bool, ca = file, alpn = { ... } }]) -> conn | nil, err; or
 * luaserv.connect("unix:/path"[, nil, opts]), a unix socket. Names are
 * looked up on the resolver thread; the task waits for the lookup and
 * the connect, at most timeout seconds (default 10), and with tls its
 * handshake in that time too: sni defaults to a host given by name
 * (sent and verified), an IP literal is verified as an address; verify
 * (default true) checks the chain against ca or the system store. A
 * failed handshake gives nil, "tls: ...". With proxy_protocol
 * the conn comes with a PROXY header queued (connect_k). [-0, +(1|2), e] */
static int api_connect(lua_State *L)
{
    const char *host = luaL_checkstring(L, 1);
    int local = strncmp(host, "unix:", 5) == 0;
    lua_Integer port = local ? luaL_optinteger(L, 2, 0)
                             : luaL_checkinteger(L, 2);
    luaL_argcheck(L, local || (port >= 1 && port <= 65535), 2,
                  "port out of range");
    double timeout = CONNECT_TIMEOUT;
    proxy_out_t po = { 0 };
    lsv_connect_tls_t tls = { 0 };
    const char *pp_err = NULL;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        if (lua_getfield(L, 3, "timeout") != LUA_TNIL) {
            timeout = (double)luaL_checknumber(L, -1);
            luaL_argcheck(L, timeout > 0, 3, "timeout must be > 0");
        }
        lua_pop(L, 1);
        pp_err = proxy_opts(L, &po);
        lsv_connect_tls_opts(L, 3, &tls);
        /* the header goes before the handshake, which the conn does not
         * do yet: refused rather than sent encrypted */
        luaL_argcheck(L, !(tls.on && po.version), 3,
                      "proxy_protocol cannot be combined with tls");
    }
    lsv_task_t *t = lsv_task_check(L, "luaserv.connect()");
    lsv_server_t *srv = t->srv;
    if (pp_err) return lsv_push_fail(L, pp_err);
    /* The conn's userdata first: it may raise (memory), and the task's
     * stack keeps it while the task waits; so does the header's
     * options, which the continuation finds at base. */
    lsv_lconn_t *u = lsv_lconn_new(L, NULL, 1);
    if (po.version) {
        proxy_out_t *keep = lua_newuserdatauv(L, sizeof *keep, 0);
        *keep = po;
    }
    int base = lua_gettop(L);
    lsv_tls_ctx_t *ctx = NULL;     /* a reference, dropped below */
    const char *sni = tls.sni ? tls.sni : local ? NULL : host;
    if (tls.on) {
        char err[LSV_ERRLEN];
        if ((ctx = lsv_connect_tls_ctx(&tls, err)) == NULL)
            return lsv_push_fail(L, err);
    }

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
            lsv_tls_ctx_unref(ctx);
            lsv_push_fail(L, "unix socket path empty or too long");
            return 2;
        }
        a.un.sun_family = AF_UNIX;
        memcpy(a.un.sun_path, host + 5, n);
        start_connect(t, u, &a.sa, (socklen_t)(offsetof(struct sockaddr_un,
                      sun_path) + n + 1), timeout, ctx, sni);
    } else if (inet_pton(AF_INET, host, &a.in4.sin_addr) == 1) {
        a.in4.sin_family = AF_INET;
        a.in4.sin_port = htons((uint16_t)port);
        start_connect(t, u, &a.sa, sizeof a.in4, timeout, ctx, sni);
    } else if (inet_pton(AF_INET6, host, &a.in6.sin6_addr) == 1) {
        a.in6.sin6_family = AF_INET6;
        a.in6.sin6_port = htons((uint16_t)port);
        start_connect(t, u, &a.sa, sizeof a.in6, timeout, ctx, sni);
    } else {
        connect_req_t *req = lsv_calloc(1, sizeof *req);
        req->t = t;
        req->u = u;
        req->deadline = ev_now(srv->loop) + timeout;
        snprintf(req->host, sizeof req->host, "%s", host);
        snprintf(req->sni, sizeof req->sni, "%s", sni ? sni : "");
        req->tls = ctx;            /* the request's reference now */
        ctx = NULL;
        req->rq = lsv_resolve(srv->resolver, host, (int)port, SOCK_STREAM,
                              resolved_cb, req);
        lsv_task_wait(t, LSV_WAIT_RESOLVE, req, unwait_resolve, timeout);
    }
    lsv_tls_ctx_unref(ctx);        /* the conn holds its own */
    /* start_connect may have woken t already (an immediate failure): the
     * results are on L's stack and the yield hands them back. Either way
     * they end up above base, where connect_k looks. */
    if (po.version) return lua_yieldk(L, 0, base, connect_k);
    return lua_yield(L, 0);
}


void lsv_connect_open_api(lua_State *L)
{
    lua_pushcfunction(L, api_connect);
    lua_setfield(L, -2, "connect");
}

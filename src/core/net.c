/* net.c: address parsing, listening and connecting sockets, formatting. */
#include "lsv.h"
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Room for "unixgram " or "tcp " plus a bracketed 255-byte host and port. */
#define DESCLEN 300

/* Writes "bad address 'SPEC': REASON" into err and returns LSV_ERR. */
static int bad_address(const char *spec, const char *reason,
                       char err[LSV_ERRLEN])
{
    snprintf(err, LSV_ERRLEN, "bad address '%.80s': %s", spec, reason);
    return LSV_ERR;
}

/* Parses a decimal port 0..65535 that must fill the whole of s. */
static int parse_port(const char *spec, const char *s, int *port,
                      char err[LSV_ERRLEN])
{
    char reason[96];
    long v = 0;

    if (*s == '\0') return bad_address(spec, "missing port", err);
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') {
            snprintf(reason, sizeof reason, "bad port '%.16s'", s);
            return bad_address(spec, reason, err);
        }
        if (v <= 65535) v = v * 10 + (*p - '0');
    }
    if (v > 65535) {
        snprintf(reason, sizeof reason,
                 "port %.16s out of range 0..65535", s);
        return bad_address(spec, reason, err);
    }
    *port = (int)v;
    return LSV_OK;
}

/* Parses HOST:PORT, [HOST]:PORT or :PORT into a; "*" as host means any. */
static int parse_host_port(const char *spec, const char *s, lsv_addr_t *a,
                           char err[LSV_ERRLEN])
{
    const char *host, *port;
    size_t hlen;

    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL) return bad_address(spec, "missing ']'", err);
        host = s + 1;
        hlen = (size_t)(close - host);
        if (hlen == 0) return bad_address(spec, "empty host in '[]'", err);
        if (close[1] != ':')
            return bad_address(spec, "expected [HOST]:PORT", err);
        port = close + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (colon == NULL) return bad_address(spec, "expected HOST:PORT", err);
        host = s;
        hlen = (size_t)(colon - s);
        if (memchr(host, ':', hlen) != NULL)
            return bad_address(spec,
                               "an IPv6 host needs brackets, as in [::1]:PORT",
                               err);
        port = colon + 1;
    }
    if (hlen >= sizeof a->host)
        return bad_address(spec, "host name too long", err);
    if (!(hlen == 1 && host[0] == '*')) {
        memcpy(a->host, host, hlen);
        a->host[hlen] = '\0';
    }
    return parse_port(spec, port, &a->port, err);
}

/* Copies a unix socket path; "unix:///p" is taken as "/p". */
static int parse_path(const char *spec, const char *s, lsv_addr_t *a,
                      char err[LSV_ERRLEN])
{
    char reason[64];

    if (s[0] == '/' && s[1] == '/' && s[2] == '/') s += 2;
    if (*s == '\0') return bad_address(spec, "expected a socket path", err);
    if (strlen(s) >= sizeof a->path) {
        snprintf(reason, sizeof reason, "path longer than %zu bytes",
                 sizeof a->path - 1);
        return bad_address(spec, reason, err);
    }
    strcpy(a->path, s);
    return LSV_OK;
}

/* Parses spec into a (zeroed first). Only the syntax is checked: names are
 * resolved when listening or connecting. Returns LSV_OK, or LSV_ERR with
 * "bad address 'SPEC': REASON" in err. */
int lsv_net_parse(const char *spec, lsv_addr_t *a, char err[LSV_ERRLEN])
{
    static const struct { const char *prefix; int kind; } schemes[] = {
        { "tcp://", LSV_NET_TCP },
        { "tls://", LSV_NET_TCP },
        { "udp://", LSV_NET_UDP },
        { "unix:", LSV_NET_UNIX },
        { "unixgram:", LSV_NET_UNIXGRAM },
    };
    const char *rest = spec;

    memset(a, 0, sizeof *a);
    a->kind = LSV_NET_TCP;
    if (spec == NULL || *spec == '\0') {
        snprintf(err, LSV_ERRLEN, "empty address: expected HOST:PORT");
        return LSV_ERR;
    }
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
        size_t n = strlen(schemes[i].prefix);
        if (strncmp(spec, schemes[i].prefix, n) == 0) {
            a->kind = schemes[i].kind;
            a->tls = strcmp(schemes[i].prefix, "tls://") == 0;
            rest = spec + n;
            break;
        }
    }
    if (rest == spec) {
        const char *sep = strstr(spec, "://");
        char reason[128];
        if (sep != NULL) {
            int n = sep - spec > 32 ? 32 : (int)(sep - spec);
            snprintf(reason, sizeof reason, "unknown scheme '%.*s' "
                     "(expected tcp, tls, udp, unix or unixgram)", n, spec);
            return bad_address(spec, reason, err);
        }
        /* "udp:host:port" would otherwise read as an unbracketed IPv6 host */
        if (strncmp(spec, "tcp:", 4) == 0 || strncmp(spec, "udp:", 4) == 0 ||
            strncmp(spec, "tls:", 4) == 0) {
            snprintf(reason, sizeof reason, "expected %.3s://HOST:PORT",
                     spec);
            return bad_address(spec, reason, err);
        }
    }
    if (a->kind == LSV_NET_UNIX || a->kind == LSV_NET_UNIXGRAM)
        return parse_path(spec, rest, a, err);
    return parse_host_port(spec, rest, a, err);
}

/* Returns a static string; "unknown" for a value outside the enum. */
const char *lsv_net_kind_name(int kind)
{
    switch (kind) {
    case LSV_NET_TCP: return "tcp";
    case LSV_NET_UDP: return "udp";
    case LSV_NET_UNIX: return "unix";
    case LSV_NET_UNIXGRAM: return "unixgram";
    default: return "unknown";
    }
}

const char *lsv_net_scheme(const lsv_addr_t *a)
{
    return a->tls ? "tls" : lsv_net_kind_name(a->kind);
}

/* "HOST:PORT" ("[HOST]:PORT" when HOST has a colon) or the path, for
 * messages; an empty host shows as any_host. */
static char *describe(const lsv_addr_t *a, const char *any_host,
                      char out[DESCLEN])
{
    const char *host = a->host[0] ? a->host : any_host;

    if (a->kind == LSV_NET_UNIX || a->kind == LSV_NET_UNIXGRAM)
        snprintf(out, DESCLEN, "%s", a->path);
    else if (strchr(host, ':') != NULL)
        snprintf(out, DESCLEN, "[%s]:%d", host, a->port);
    else
        snprintf(out, DESCLEN, "%s:%d", host, a->port);
    return out;
}

/* Builds the sockaddr for a unix-kind address; returns its length. */
static socklen_t unix_sockaddr(const lsv_addr_t *a, struct sockaddr_un *sun)
{
    memset(sun, 0, sizeof *sun);
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, a->path, strlen(a->path));
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path)
                       + strlen(a->path) + 1);
}

/* Writes "cannot listen on KIND ADDR: REASON", keeping errno. */
static int listen_failed(const lsv_addr_t *a, const char *reason,
                         char err[LSV_ERRLEN])
{
    char desc[DESCLEN];
    int saved = errno;

    snprintf(err, LSV_ERRLEN, "cannot listen on %s %.160s: %s",
             lsv_net_kind_name(a->kind), describe(a, "0.0.0.0", desc),
             reason ? reason : strerror(saved));
    errno = saved;
    return -1;
}

/* getaddrinfo failures are not errno values; report EAI_SYSTEM's errno and
 * call the rest EADDRNOTAVAIL so callers still get a sensible errno. */
static const char *resolve_error(int rc)
{
    if (rc == EAI_SYSTEM) return strerror(errno);
    errno = EADDRNOTAVAIL;
    return gai_strerror(rc);
}

static int listen_inet(const lsv_addr_t *a, int backlog, int flags,
                       char err[LSV_ERRLEN])
{
    struct addrinfo hints, *res, *ai;
    char port[8];
    int rc, fd = -1, saved = EADDRNOTAVAIL, one = 1;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = a->host[0] ? AF_UNSPEC : AF_INET;
    hints.ai_socktype = a->kind == LSV_NET_TCP ? SOCK_STREAM : SOCK_DGRAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(port, sizeof port, "%d", a->port);
    rc = getaddrinfo(a->host[0] ? a->host : NULL, port, &hints, &res);
    if (rc != 0) {
        const char *reason = resolve_error(rc);
        return listen_failed(a, reason, err);
    }
    /* The first address that binds wins, so "localhost" works whichever
     * family the resolver puts first. */
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family,
                    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0
            && (!(flags & LSV_NET_REUSEPORT)
                || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one,
                              sizeof one) == 0)
            && (ai->ai_family != AF_INET6
                || setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one,
                              sizeof one) == 0)
            && bind(fd, ai->ai_addr, ai->ai_addrlen) == 0
            && (a->kind != LSV_NET_TCP || listen(fd, backlog) == 0))
            break;
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        errno = saved;
        return listen_failed(a, NULL, err);
    }
    return fd;
}

/* A socket file at the path is either a live server's, which we must not
 * steal, or left over from one that died, which we replace. A non-blocking
 * connect tells them apart without waiting: refused means nobody is bound
 * there; success or a full backlog (EAGAIN) means a live server. Anything
 * else is left for bind to report. Any other kind of file is refused. */
static int clear_stale_path(const lsv_addr_t *a, int type,
                            char err[LSV_ERRLEN])
{
    struct sockaddr_un sun;
    socklen_t len = unix_sockaddr(a, &sun);
    struct stat st;
    int fd, rc;

    if (lstat(a->path, &st) != 0) return LSV_OK;
    if (!S_ISSOCK(st.st_mode)) {
        /* Somebody's file, not a socket a server left: never remove it. */
        errno = EEXIST;
        return listen_failed(a, S_ISDIR(st.st_mode)
                             ? "the path is a directory, not a socket"
                             : "the path exists and is not a socket (not "
                               "removing it)", err);
    }
    fd = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return listen_failed(a, NULL, err);
    rc = connect(fd, (struct sockaddr *)&sun, len);
    if (rc == 0 || errno == EAGAIN || errno == EINPROGRESS) {
        close(fd);
        errno = EADDRINUSE;
        return listen_failed(a, "Address already in use (a server is "
                             "answering there)", err);
    }
    rc = errno;
    close(fd);
    if (rc == ECONNREFUSED && unlink(a->path) != 0 && errno != ENOENT)
        return listen_failed(a, NULL, err);
    return LSV_OK;
}

static int listen_unix(const lsv_addr_t *a, int backlog, char err[LSV_ERRLEN])
{
    struct sockaddr_un sun;
    socklen_t len = unix_sockaddr(a, &sun);
    int type = a->kind == LSV_NET_UNIX ? SOCK_STREAM : SOCK_DGRAM;
    int fd;

    if (clear_stale_path(a, type, err) != LSV_OK) return -1;
    fd = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return listen_failed(a, NULL, err);
    if (bind(fd, (struct sockaddr *)&sun, len) != 0
        || (type == SOCK_STREAM && listen(fd, backlog) != 0)) {
        int saved = errno;
        close(fd);
        errno = saved;
        return listen_failed(a, NULL, err);
    }
    return fd;
}

/* Returns a new non-blocking fd the caller owns, or -1 with errno set and
 * "cannot listen on KIND ADDR: REASON" in err. An empty host listens on
 * IPv4 0.0.0.0 only; callers wanting IPv6 too add a "[::]" listener, which
 * IPV6_V6ONLY lets sit beside it. */
int lsv_net_listen(const lsv_addr_t *a, int backlog, char err[LSV_ERRLEN])
{
    return lsv_net_listen_flags(a, backlog, 0, err);
}

/* As lsv_net_listen; LSV_NET_REUSEPORT applies to TCP and UDP only (a
 * unix path cannot be bound twice). */
int lsv_net_listen_flags(const lsv_addr_t *a, int backlog, int flags,
                         char err[LSV_ERRLEN])
{
    if (a->kind == LSV_NET_UNIX || a->kind == LSV_NET_UNIXGRAM)
        return listen_unix(a, backlog, err);
    return listen_inet(a, backlog, flags, err);
}

/* Milliseconds on the monotonic clock. */
static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left before deadline for poll: -1 for no deadline (< 0),
 * 0 once it has passed. */
static int remaining_ms(int64_t deadline)
{
    int64_t left;

    if (deadline < 0) return -1;
    left = deadline - now_ms();
    if (left <= 0) return 0;
    return left > 0x7fffffff ? 0x7fffffff : (int)left;
}

/* Connects fd by a non-blocking connect and poll, so the wait is bounded,
 * then puts fd back in blocking mode. Returns LSV_OK, or LSV_ERR with errno
 * set (ETIMEDOUT when the deadline passes). */
static int connect_until(int fd, const struct sockaddr *sa, socklen_t len,
                         int64_t deadline)
{
    struct pollfd pfd = { .fd = fd, .events = POLLOUT };
    int soerr = 0, rc;
    socklen_t slen = sizeof soerr;

    if (lsv_net_nonblock(fd, 1) != LSV_OK) return LSV_ERR;
    /* A unix listener with a full backlog says EAGAIN rather than queueing
     * us, so retry briefly as a blocking connect would have waited. */
    while ((rc = connect(fd, sa, len)) != 0 && errno == EAGAIN
           && sa->sa_family == AF_UNIX) {
        int left = remaining_ms(deadline);
        if (left == 0) {
            errno = ETIMEDOUT;
            return LSV_ERR;
        }
        poll(NULL, 0, left < 0 || left > 10 ? 10 : left);
    }
    if (rc != 0) {
        if (errno != EINPROGRESS && errno != EINTR) return LSV_ERR;
        for (;;) {
            int left = remaining_ms(deadline);
            if (left == 0) {
                errno = ETIMEDOUT;
                return LSV_ERR;
            }
            rc = poll(&pfd, 1, left);
            if (rc > 0) break;
            if (rc < 0 && errno != EINTR) return LSV_ERR;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &slen) != 0)
            return LSV_ERR;
        if (soerr != 0) {
            errno = soerr;
            return LSV_ERR;
        }
    }
    return lsv_net_nonblock(fd, 0);
}

/* Writes "cannot connect to ADDR: REASON", keeping errno. */
static int connect_failed(const lsv_addr_t *a, const char *reason,
                          double timeout, char err[LSV_ERRLEN])
{
    char desc[DESCLEN];
    int saved = errno;

    describe(a, "localhost", desc);
    if (reason != NULL)
        snprintf(err, LSV_ERRLEN, "cannot connect to %.160s: %s", desc,
                 reason);
    else if (saved == ETIMEDOUT)
        snprintf(err, LSV_ERRLEN, "cannot connect to %.160s: timed out after "
                 "%g s", desc, timeout);
    else
        snprintf(err, LSV_ERRLEN, "cannot connect to %.160s: %s", desc,
                 strerror(saved));
    errno = saved;
    return -1;
}

static int connect_unix(const lsv_addr_t *a, int64_t deadline,
                        double timeout, char err[LSV_ERRLEN])
{
    struct sockaddr_un sun;
    socklen_t len = unix_sockaddr(a, &sun);
    int type = a->kind == LSV_NET_UNIX ? SOCK_STREAM : SOCK_DGRAM;
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);

    if (fd < 0) return connect_failed(a, NULL, timeout, err);
    /* An unnamed datagram socket cannot be answered; Linux autobinds it to
     * an abstract name when bound with only the family. */
    if (type == SOCK_DGRAM) {
        struct sockaddr_un self = { .sun_family = AF_UNIX };
        if (bind(fd, (struct sockaddr *)&self, sizeof(sa_family_t)) != 0)
            goto fail;
    }
    if (connect_until(fd, (struct sockaddr *)&sun, len, deadline) != LSV_OK)
        goto fail;
    return fd;
fail:
    {
        int saved = errno;
        close(fd);
        errno = saved;
    }
    return connect_failed(a, NULL, timeout, err);
}

static int connect_inet(const lsv_addr_t *a, int64_t deadline,
                        double timeout, char err[LSV_ERRLEN])
{
    struct addrinfo hints, *res, *ai;
    char port[8];
    int rc, fd = -1, saved = EADDRNOTAVAIL, tried = 0;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = a->kind == LSV_NET_TCP ? SOCK_STREAM : SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(port, sizeof port, "%d", a->port);
    rc = getaddrinfo(a->host[0] ? a->host : NULL, port, &hints, &res);
    if (rc != 0) {
        const char *reason = resolve_error(rc);
        return connect_failed(a, reason, timeout, err);
    }
    /* Try each address in the resolver's order ("localhost" may be ::1
     * first while the server only listens on 127.0.0.1). A connect error
     * beats a socket() error (say, no IPv6) as the one to report. */
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            if (!tried) saved = errno;
            continue;
        }
        tried = 1;
        if (connect_until(fd, ai->ai_addr, ai->ai_addrlen, deadline)
            == LSV_OK)
            break;
        saved = errno;
        close(fd);
        fd = -1;
        if (saved == ETIMEDOUT) break;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        errno = saved;
        return connect_failed(a, NULL, timeout, err);
    }
    return fd;
}

/* Returns a new blocking fd the caller owns, or -1 with errno set and
 * "cannot connect to ADDR: REASON" in err. The timeout (none if <= 0) covers
 * all addresses a name resolves to, tried in order. An empty host means the
 * local machine. A unixgram socket is autobound so the server can answer. */
int lsv_net_connect(const lsv_addr_t *a, double timeout,
                    char err[LSV_ERRLEN])
{
    int64_t deadline = timeout > 0 ? now_ms() + (int64_t)(timeout * 1000) : -1;

    if (a->kind == LSV_NET_UNIX || a->kind == LSV_NET_UNIXGRAM)
        return connect_unix(a, deadline, timeout, err);
    return connect_inet(a, deadline, timeout, err);
}

/* Fills ip with the numeric host (IPv6 with its %scope), a unix path, "@name"
 * for an abstract unix address, "unix" for an unnamed one, or "unknown";
 * port is -1 unless the family has ports. Never fails. */
void lsv_net_split(const struct sockaddr *sa, socklen_t len,
                   char ip[LSV_ADDRSTRLEN], int *port)
{
    *port = -1;
    /* Only unix sockets give empty addresses (an unnamed datagram peer). */
    if (len < sizeof(sa_family_t)) {
        snprintf(ip, LSV_ADDRSTRLEN, "unix");
        return;
    }
    switch (sa->sa_family) {
    case AF_INET: {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        if (len < sizeof *sin) break;
        inet_ntop(AF_INET, &sin->sin_addr, ip, LSV_ADDRSTRLEN);
        *port = ntohs(sin->sin_port);
        return;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        char scope[IF_NAMESIZE];
        size_t n;
        if (len < sizeof *sin6) break;
        inet_ntop(AF_INET6, &sin6->sin6_addr, ip, LSV_ADDRSTRLEN);
        n = strlen(ip);
        if (sin6->sin6_scope_id != 0) {
            if (if_indextoname(sin6->sin6_scope_id, scope) != NULL)
                snprintf(ip + n, LSV_ADDRSTRLEN - n, "%%%s", scope);
            else
                snprintf(ip + n, LSV_ADDRSTRLEN - n, "%%%u",
                         (unsigned)sin6->sin6_scope_id);
        }
        *port = ntohs(sin6->sin6_port);
        return;
    }
    case AF_UNIX: {
        const struct sockaddr_un *sun = (const struct sockaddr_un *)sa;
        size_t off = offsetof(struct sockaddr_un, sun_path);
        size_t n = len > off ? len - off : 0;
        if (n > sizeof sun->sun_path) n = sizeof sun->sun_path;
        if (n == 0)
            snprintf(ip, LSV_ADDRSTRLEN, "unix");
        else if (sun->sun_path[0] == '\0')     /* abstract, shown as @name */
            snprintf(ip, LSV_ADDRSTRLEN, "@%.*s", (int)(n - 1),
                     sun->sun_path + 1);
        else
            snprintf(ip, LSV_ADDRSTRLEN, "%.*s",
                     (int)strnlen(sun->sun_path, n), sun->sun_path);
        return;
    }
    default:
        break;
    }
    snprintf(ip, LSV_ADDRSTRLEN, "unknown");
}

/* Formats for logs and the Lua side; allocates nothing, so it is cheap
 * enough to call per accepted connection. Returns out. */
char *lsv_net_format(const struct sockaddr *sa, socklen_t len,
                     char out[LSV_ADDRSTRLEN])
{
    char ip[LSV_ADDRSTRLEN];
    int port;

    lsv_net_split(sa, len, ip, &port);
    if (port < 0)
        memcpy(out, ip, LSV_ADDRSTRLEN);
    else if (sa->sa_family == AF_INET6)
        snprintf(out, LSV_ADDRSTRLEN, "[%.100s]:%d", ip, port);
    else
        snprintf(out, LSV_ADDRSTRLEN, "%.100s:%d", ip, port);
    return out;
}

/* Returns out, holding "unknown" if getsockname fails. */
char *lsv_net_local(int fd, char out[LSV_ADDRSTRLEN])
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;

    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
        snprintf(out, LSV_ADDRSTRLEN, "unknown");
        return out;
    }
    return lsv_net_format((struct sockaddr *)&ss, len, out);
}

/* Returns LSV_OK, or LSV_ERR with errno from fcntl. */
int lsv_net_nonblock(int fd, int on)
{
    int flags = fcntl(fd, F_GETFL);

    if (flags < 0) return LSV_ERR;
    flags = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
    return fcntl(fd, F_SETFL, flags) == 0 ? LSV_OK : LSV_ERR;
}

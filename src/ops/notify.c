/* notify.c: sd_notify messages and systemd socket activation. */
#include "lsv.h"
#include "notify.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SD_LISTEN_FDS_START 3
#define MAX_INHERITED 64

/* Inherited sockets not yet given to a listener (-1 once taken). */
static int inherited[MAX_INHERITED];
static int ninherited;

void lsv_notify(lsv_server_t *srv, const char *state)
{
    (void)srv;
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || (path[0] != '/' && path[0] != '@')) return;
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    size_t n = strlen(path);
    if (n >= sizeof sun.sun_path) return;
    memcpy(sun.sun_path, path, n);
    if (path[0] == '@') sun.sun_path[0] = '\0';   /* abstract namespace */
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);

    char msg[256];
    if (strcmp(state, "RELOADING=1") == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%llu",
                 (unsigned long long)ts.tv_sec * 1000000ULL +
                 (unsigned long long)ts.tv_nsec / 1000);
    } else {
        snprintf(msg, sizeof msg, "%s", state);
    }
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sun,
               len) < 0)
        lsv_debug("sd_notify %s: %s", state, strerror(errno));
    close(fd);
}

int lsv_notify_take_fds(lsv_server_t *srv)
{
    (void)srv;
    const char *pid = getenv("LISTEN_PID");
    const char *fds = getenv("LISTEN_FDS");
    if (pid == NULL || fds == NULL || atol(pid) != (long)getpid()) return 0;
    int n = atoi(fds);
    if (n < 0) n = 0;
    if (n > MAX_INHERITED) n = MAX_INHERITED;
    for (int i = 0; i < n; i++) {
        int fd = SD_LISTEN_FDS_START + i;
        lsv_net_nonblock(fd, 1);
        fcntl(fd, F_SETFD, FD_CLOEXEC);   /* not for io.popen's children */
        inherited[ninherited++] = fd;
    }
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return n;
}

int lsv_notify_add_fd(lsv_server_t *srv, int fd)
{
    (void)srv;
    if (ninherited == MAX_INHERITED) return LSV_ERR;
    lsv_net_nonblock(fd, 1);
    inherited[ninherited++] = fd;
    return LSV_OK;
}

/* Describes fd as an address: kind and host/port or path. */
static int describe(int fd, lsv_addr_t *a)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int type;
    socklen_t tlen = sizeof type;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0)
        return LSV_ERR;
    memset(a, 0, sizeof *a);
    if (ss.ss_family == AF_UNIX) {
        a->kind = type == SOCK_DGRAM ? LSV_NET_UNIXGRAM : LSV_NET_UNIX;
        struct sockaddr_un *un = (struct sockaddr_un *)&ss;
        memcpy(a->path, un->sun_path, sizeof a->path - 1);
        a->path[sizeof a->path - 1] = '\0';
        return LSV_OK;
    }
    a->kind = type == SOCK_DGRAM ? LSV_NET_UDP : LSV_NET_TCP;
    char ip[LSV_ADDRSTRLEN];
    lsv_net_split((struct sockaddr *)&ss, len, ip, &a->port);
    snprintf(a->host, sizeof a->host, "%s", ip);
    return LSV_OK;
}

/* Whether a wanted address a is served by the inherited one have. */
static int matches(const lsv_addr_t *a, const lsv_addr_t *have)
{
    if (a->kind != have->kind) return 0;
    if (a->kind == LSV_NET_UNIX || a->kind == LSV_NET_UNIXGRAM)
        return strcmp(a->path, have->path) == 0;
    if (a->port != 0 && a->port != have->port) return 0;
    if (a->host[0] == '\0' || strcmp(a->host, have->host) == 0) return 1;
    /* "0.0.0.0" or "::" asked: any wildcard inherited will do. */
    return (strcmp(a->host, "0.0.0.0") == 0 || strcmp(a->host, "::") == 0) &&
           (strcmp(have->host, "0.0.0.0") == 0 || strcmp(have->host, "::") == 0);
}

/* The addresses of the sockets matched so far: a port-0 listener does
 * not take a socket bound where another listener's is (an upgrade passes
 * every worker's SO_REUSEPORT socket of one listener, all at one
 * address: they are that listener's, not another port-0 one's). */
static lsv_addr_t taken[MAX_INHERITED];
static int ntaken;

static int same_port(const lsv_addr_t *x, const lsv_addr_t *y)
{
    return x->kind == y->kind && x->port == y->port &&
           strcmp(x->host, y->host) == 0;
}

int lsv_notify_match_fd(lsv_server_t *srv, const lsv_addr_t *a)
{
    (void)srv;
    for (int i = 0; i < ninherited; i++) {
        lsv_addr_t have;
        if (inherited[i] < 0 || describe(inherited[i], &have) != LSV_OK ||
            !matches(a, &have))
            continue;
        int other = 0;
        for (int j = 0; j < ntaken && a->port == 0 && !have.path[0]; j++)
            other |= same_port(&taken[j], &have);
        if (other) continue;
        int fd = inherited[i];
        inherited[i] = -1;
        if (ntaken < MAX_INHERITED) taken[ntaken++] = have;
        return fd;
    }
    return -1;
}

int lsv_notify_next_fd(lsv_server_t *srv, lsv_addr_t *a)
{
    (void)srv;
    for (int i = 0; i < ninherited; i++) {
        if (inherited[i] < 0 || describe(inherited[i], a) != LSV_OK) continue;
        int fd = inherited[i];
        inherited[i] = -1;
        return fd;
    }
    return -1;
}

void lsv_notify_close_unused(lsv_server_t *srv)
{
    (void)srv;
    for (int i = 0; i < ninherited; i++) {
        lsv_addr_t a;
        if (inherited[i] < 0) continue;
        if (describe(inherited[i], &a) == LSV_OK && a.path[0])
            lsv_warn("systemd passed socket %s (%s), which no listener "
                     "asks for; closing it", a.path,
                     lsv_net_kind_name(a.kind));
        else if (describe(inherited[i], &a) == LSV_OK)
            lsv_warn("systemd passed socket %s %s:%d, which no listener "
                     "asks for; closing it", lsv_net_kind_name(a.kind),
                     a.host, a.port);
        close(inherited[i]);
        inherited[i] = -1;
    }
}

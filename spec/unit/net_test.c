/* net_test.c: TAP checks of address parsing, formatting and sockets. */
#include "lsv.h"
#include "net.h"
#include "tap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int check_str(const char *got, const char *want, const char *what)
{
    int ok = check(strcmp(got, want) == 0, "%s is '%s'", what, want);
    if (!ok) printf("#   got '%s'\n", got);
    return ok;
}

/* --- lsv_net_parse ---------------------------------------------------- */

static void parses(const char *spec, int kind, const char *host, int port,
                   const char *path)
{
    lsv_addr_t a;
    char err[LSV_ERRLEN] = "";
    int ok = lsv_net_parse(spec, &a, err) == LSV_OK;

    if (!check(ok, "parse accepts '%s'", spec)) {
        printf("#   err: %s\n", err);
        return;
    }
    if (path != NULL) {
        check(a.kind == kind && strcmp(a.path, path) == 0,
              "'%s' is %s path '%s'", spec, lsv_net_kind_name(kind), path);
        return;
    }
    ok = check(a.kind == kind && strcmp(a.host, host) == 0 && a.port == port,
               "'%s' is %s host '%s' port %d", spec, lsv_net_kind_name(kind),
               host, port);
    if (!ok)
        printf("#   got %s host '%s' port %d\n", lsv_net_kind_name(a.kind),
               a.host, a.port);
}

static void rejects(const char *spec, const char *want_in_err)
{
    lsv_addr_t a;
    char err[LSV_ERRLEN] = "";
    int rc = lsv_net_parse(spec, &a, err);

    check(rc == LSV_ERR && strstr(err, want_in_err) != NULL,
          "parse rejects '%.40s%s' saying '%s'", spec,
          strlen(spec) > 40 ? "..." : "", want_in_err);
    if (rc != LSV_ERR || strstr(err, want_in_err) == NULL)
        printf("#   rc %d, err '%s'\n", rc, err);
}

static void test_parse(void)
{
    char longpath[200];

    parses("tcp://127.0.0.1:80", LSV_NET_TCP, "127.0.0.1", 80, NULL);
    parses("udp://0.0.0.0:21567", LSV_NET_UDP, "0.0.0.0", 21567, NULL);
    parses("udp://example.org:53", LSV_NET_UDP, "example.org", 53, NULL);
    parses("unix:/run/luaserv.sock", LSV_NET_UNIX, NULL, 0,
           "/run/luaserv.sock");
    parses("unix:///run/luaserv.sock", LSV_NET_UNIX, NULL, 0,
           "/run/luaserv.sock");
    parses("unix:rel.sock", LSV_NET_UNIX, NULL, 0, "rel.sock");
    parses("unixgram:/tmp/g.sock", LSV_NET_UNIXGRAM, NULL, 0, "/tmp/g.sock");
    parses("localhost:8080", LSV_NET_TCP, "localhost", 8080, NULL);
    parses("127.0.0.1:0", LSV_NET_TCP, "127.0.0.1", 0, NULL);
    parses(":21567", LSV_NET_TCP, "", 21567, NULL);
    parses("*:21567", LSV_NET_TCP, "", 21567, NULL);
    parses("[::1]:80", LSV_NET_TCP, "::1", 80, NULL);
    parses("tcp://[::]:21567", LSV_NET_TCP, "::", 21567, NULL);
    parses("udp://[fe80::1%lo]:65535", LSV_NET_UDP, "fe80::1%lo", 65535,
           NULL);

    rejects("", "empty address");
    rejects("tcp://", "expected HOST:PORT");
    rejects("foo", "bad address 'foo': expected HOST:PORT");
    rejects("127.0.0.1:", "missing port");
    rejects("127.0.0.1:http", "bad port 'http'");
    rejects("127.0.0.1:-1", "bad port");
    rejects("127.0.0.1:80x", "bad port");
    rejects("127.0.0.1:70000", "out of range 0..65535");
    rejects("127.0.0.1:99999999999999999999", "out of range");
    rejects("http://127.0.0.1:80", "unknown scheme 'http'");
    rejects("udp:127.0.0.1:53", "expected udp://HOST:PORT");
    rejects("::1:80", "needs brackets");
    rejects("[::1]80", "expected [HOST]:PORT");
    rejects("[::1:80", "missing ']'");
    rejects("[]:80", "empty host");
    rejects("unix:", "expected a socket path");
    memset(longpath, 'x', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = '\0';
    memcpy(longpath, "unix:/", 6);
    rejects(longpath, "path longer than");

    check(strcmp(lsv_net_kind_name(LSV_NET_TCP), "tcp") == 0
          && strcmp(lsv_net_kind_name(LSV_NET_UDP), "udp") == 0
          && strcmp(lsv_net_kind_name(LSV_NET_UNIX), "unix") == 0
          && strcmp(lsv_net_kind_name(LSV_NET_UNIXGRAM), "unixgram") == 0,
          "kind names are tcp, udp, unix, unixgram");

    lsv_addr_t a;
    char err[LSV_ERRLEN] = "";
    parses("tls://127.0.0.1:7443", LSV_NET_TCP, "127.0.0.1", 7443, NULL);
    check(lsv_net_parse("tls://[::1]:443", &a, err) == LSV_OK && a.tls &&
          a.kind == LSV_NET_TCP && strcmp(lsv_net_scheme(&a), "tls") == 0,
          "tls:// is TCP with tls set, its scheme 'tls'");
    check(lsv_net_parse("tcp://127.0.0.1:80", &a, err) == LSV_OK && !a.tls &&
          strcmp(lsv_net_scheme(&a), "tcp") == 0,
          "tcp:// is not tls, its scheme 'tcp'");
    rejects("tls:127.0.0.1:443", "expected tls://HOST:PORT");
    rejects("ftp://127.0.0.1:80", "expected tcp, tls, udp, unix or unixgram");
}

/* --- lsv_net_format / lsv_net_split ------------------------------------ */

static void test_format(void)
{
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    struct sockaddr_un sun;
    char out[LSV_ADDRSTRLEN], ip[LSV_ADDRSTRLEN];
    int port;

    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons(80);
    inet_pton(AF_INET, "1.2.3.4", &sin.sin_addr);
    check_str(lsv_net_format((struct sockaddr *)&sin, sizeof sin, out),
              "1.2.3.4:80", "IPv4 format");
    lsv_net_split((struct sockaddr *)&sin, sizeof sin, ip, &port);
    check(strcmp(ip, "1.2.3.4") == 0 && port == 80,
          "IPv4 splits into '1.2.3.4' and 80");

    memset(&sin6, 0, sizeof sin6);
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(21567);
    inet_pton(AF_INET6, "::1", &sin6.sin6_addr);
    check_str(lsv_net_format((struct sockaddr *)&sin6, sizeof sin6, out),
              "[::1]:21567", "IPv6 format");
    lsv_net_split((struct sockaddr *)&sin6, sizeof sin6, ip, &port);
    check(strcmp(ip, "::1") == 0 && port == 21567,
          "IPv6 splits into '::1' and 21567");
    inet_pton(AF_INET6, "2001:db8::7", &sin6.sin6_addr);
    check_str(lsv_net_format((struct sockaddr *)&sin6, sizeof sin6, out),
              "[2001:db8::7]:21567", "IPv6 format of 2001:db8::7");

    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    strcpy(sun.sun_path, "/run/luaserv.sock");
    check_str(lsv_net_format((struct sockaddr *)&sun,
                             offsetof(struct sockaddr_un, sun_path)
                             + sizeof "/run/luaserv.sock", out),
              "/run/luaserv.sock", "unix path format");
    lsv_net_split((struct sockaddr *)&sun, sizeof sun, ip, &port);
    check(strcmp(ip, "/run/luaserv.sock") == 0 && port == -1,
          "unix splits into the path and -1");
    check_str(lsv_net_format((struct sockaddr *)&sun, sizeof(sa_family_t),
                             out),
              "unix", "unnamed unix format");
    check_str(lsv_net_format((struct sockaddr *)&sun, 0, out),
              "unix", "empty address format");
    memcpy(sun.sun_path, "\0abcde", 6);
    check_str(lsv_net_format((struct sockaddr *)&sun,
                             offsetof(struct sockaddr_un, sun_path) + 6, out),
              "@abcde", "abstract unix format");
}

/* --- sockets ----------------------------------------------------------- */

static int readable(int fd, int ms)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    return poll(&pfd, 1, ms) == 1;
}

static int is_nonblocking(int fd)
{
    return (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0;
}

static int is_cloexec(int fd)
{
    return (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0;
}

/* Connects to a stream listener, accepts, and sends a line both ways.
 * Returns 1 when the round trip worked. */
static int stream_round_trip(int lfd, const lsv_addr_t *to)
{
    char err[LSV_ERRLEN], got[16] = "";
    int cfd, afd, ok = 0;

    cfd = lsv_net_connect(to, 2.0, err);
    if (cfd < 0) {
        printf("#   connect: %s\n", err);
        return 0;
    }
    if (!readable(lfd, 2000) || (afd = accept(lfd, NULL, NULL)) < 0) {
        close(cfd);
        return 0;
    }
    if (!is_nonblocking(cfd)
        && send(cfd, "ping\n", 5, 0) == 5 && readable(afd, 2000)
        && recv(afd, got, sizeof got, 0) == 5 && memcmp(got, "ping\n", 5) == 0
        && send(afd, "pong\n", 5, 0) == 5 && readable(cfd, 2000)
        && recv(cfd, got, sizeof got, 0) == 5 && memcmp(got, "pong\n", 5) == 0)
        ok = 1;
    close(afd);
    close(cfd);
    return ok;
}

static void test_tcp(void)
{
    lsv_addr_t a, to;
    char err[LSV_ERRLEN], local[LSV_ADDRSTRLEN], want[LSV_ERRLEN];
    int lfd, fd2, cfd;

    lsv_net_parse("127.0.0.1:0", &a, err);
    lfd = lsv_net_listen(&a, 16, err);
    if (!check(lfd >= 0, "listens on tcp 127.0.0.1:0")) {
        printf("#   %s\n", err);
        return;
    }
    check(is_nonblocking(lfd) && is_cloexec(lfd),
          "the listener is non-blocking and close-on-exec");
    lsv_net_local(lfd, local);
    check(strncmp(local, "127.0.0.1:", 10) == 0 && atoi(local + 10) > 0,
          "local address '%s' shows the real port", local);
    check(lsv_net_parse(local, &to, err) == LSV_OK,
          "the local address parses back");
    check(stream_round_trip(lfd, &to),
          "connect gives a blocking socket and a line goes both ways");

    fd2 = lsv_net_listen(&to, 16, err);
    snprintf(want, sizeof want, "cannot listen on tcp %s: "
             "Address already in use", local);
    check(fd2 < 0 && errno == EADDRINUSE && strcmp(err, want) == 0,
          "a second listen on the port fails with EADDRINUSE");
    if (fd2 >= 0) close(fd2);
    else if (strcmp(err, want) != 0) printf("#   got '%s'\n", err);

    close(lfd);
    cfd = lsv_net_connect(&to, 2.0, err);
    snprintf(want, sizeof want, "cannot connect to %s: Connection refused",
             local);
    check(cfd < 0 && errno == ECONNREFUSED && strcmp(err, want) == 0,
          "connect to a closed port says '%s'", want);
    if (cfd >= 0) close(cfd);
    else if (strcmp(err, want) != 0) printf("#   got '%s'\n", err);
}

static void test_tcp6(void)
{
    lsv_addr_t a, to;
    char err[LSV_ERRLEN], local[LSV_ADDRSTRLEN];
    int lfd;

    lsv_net_parse("[::1]:0", &a, err);
    lfd = lsv_net_listen(&a, 16, err);
    if (lfd < 0 && (errno == EAFNOSUPPORT || errno == EADDRNOTAVAIL)) {
        skip("no IPv6 loopback here");
        return;
    }
    if (!check(lfd >= 0, "listens on tcp [::1]:0")) {
        printf("#   %s\n", err);
        return;
    }
    lsv_net_local(lfd, local);
    check(strncmp(local, "[::1]:", 6) == 0, "IPv6 local address is '%s'",
          local);
    lsv_net_parse(local, &to, err);
    check(stream_round_trip(lfd, &to), "IPv6 round trip");
    close(lfd);
}

static void test_udp(void)
{
    lsv_addr_t a, to;
    char err[LSV_ERRLEN], local[LSV_ADDRSTRLEN], peer[LSV_ADDRSTRLEN + 8];
    char got[16] = "";
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int sfd, cfd;

    lsv_net_parse("udp://127.0.0.1:0", &a, err);
    sfd = lsv_net_listen(&a, 16, err);
    if (!check(sfd >= 0, "listens on udp 127.0.0.1:0")) {
        printf("#   %s\n", err);
        return;
    }
    lsv_net_local(sfd, local);
    snprintf(peer, sizeof peer, "udp://%s", local);
    lsv_net_parse(peer, &to, err);
    cfd = lsv_net_connect(&to, 2.0, err);
    check(cfd >= 0 && send(cfd, "ping", 4, 0) == 4 && readable(sfd, 2000)
          && recvfrom(sfd, got, sizeof got, 0, (struct sockaddr *)&ss, &len)
             == 4
          && memcmp(got, "ping", 4) == 0,
          "a datagram reaches the udp listener");
    lsv_net_format((struct sockaddr *)&ss, len, peer);
    check(strncmp(peer, "127.0.0.1:", 10) == 0,
          "the datagram's peer formats as '%s'", peer);
    if (cfd >= 0) close(cfd);
    close(sfd);
}

/* Leaves a socket file with nobody behind it, as a killed server does. */
static int make_stale(const char *path, int type)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, type, 0);

    strcpy(sun.sun_path, path);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof sun) != 0)
        return -1;
    close(fd);
    return 0;
}

static void test_unix(const char *dir)
{
    lsv_addr_t a;
    char spec[256], err[LSV_ERRLEN], local[LSV_ADDRSTRLEN];
    struct stat st;
    int lfd, fd2;

    snprintf(spec, sizeof spec, "unix:%s/s.sock", dir);
    lsv_net_parse(spec, &a, err);
    check(make_stale(a.path, SOCK_STREAM) == 0 && stat(a.path, &st) == 0
          && S_ISSOCK(st.st_mode), "a stale socket file is in place");
    lfd = lsv_net_listen(&a, 16, err);
    if (!check(lfd >= 0, "listen replaces the stale socket file")) {
        printf("#   %s\n", err);
        return;
    }
    lsv_net_local(lfd, local);
    check_str(local, a.path, "unix local address");
    check(stream_round_trip(lfd, &a), "unix stream round trip");

    fd2 = lsv_net_listen(&a, 16, err);
    check(fd2 < 0 && errno == EADDRINUSE
          && strstr(err, "Address already in use") != NULL,
          "listen on a live server's path fails with EADDRINUSE");
    if (fd2 >= 0) close(fd2);
    /* The probe that found the server alive is a connection it accepts and
     * sees closed at once; take it off the queue before the next check. */
    if (readable(lfd, 1000)) {
        fd2 = accept(lfd, NULL, NULL);
        if (fd2 >= 0) close(fd2);
    }
    check(stream_round_trip(lfd, &a),
          "the live server still answers after that");
    close(lfd);
    unlink(a.path);

    /* A regular file is not ours to delete. */
    fd2 = open(a.path, O_CREAT | O_WRONLY, 0600);
    if (fd2 >= 0) close(fd2);
    fd2 = lsv_net_listen(&a, 16, err);
    check(fd2 < 0 && stat(a.path, &st) == 0 && S_ISREG(st.st_mode),
          "listen leaves a regular file at the path alone");
    if (fd2 >= 0) close(fd2);
    unlink(a.path);

    a.kind = LSV_NET_UNIX;
    lfd = lsv_net_connect(&a, 1.0, err);
    check(lfd < 0 && errno == ENOENT && strstr(err, "cannot connect to ")
          && strstr(err, "No such file or directory"),
          "connect to a missing path says so");
    if (lfd >= 0) close(lfd);
}

static void test_unixgram(const char *dir)
{
    lsv_addr_t a;
    char spec[256], err[LSV_ERRLEN], peer[LSV_ADDRSTRLEN], got[16] = "";
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int sfd, cfd;

    snprintf(spec, sizeof spec, "unixgram:%s/g.sock", dir);
    lsv_net_parse(spec, &a, err);
    make_stale(a.path, SOCK_DGRAM);
    sfd = lsv_net_listen(&a, 16, err);
    if (!check(sfd >= 0, "unixgram listen replaces a stale file")) {
        printf("#   %s\n", err);
        return;
    }
    cfd = lsv_net_connect(&a, 1.0, err);
    check(cfd >= 0 && send(cfd, "ping", 4, 0) == 4 && readable(sfd, 2000)
          && recvfrom(sfd, got, sizeof got, 0, (struct sockaddr *)&ss, &len)
             == 4,
          "a datagram reaches the unixgram listener");
    lsv_net_format((struct sockaddr *)&ss, len, peer);
    check(peer[0] == '@', "the client is autobound (peer '%s')", peer);
    check(sendto(sfd, "pong", 4, 0, (struct sockaddr *)&ss, len) == 4
          && cfd >= 0 && readable(cfd, 2000)
          && recv(cfd, got, sizeof got, 0) == 4
          && memcmp(got, "pong", 4) == 0,
          "the listener can answer the client");
    if (cfd >= 0) close(cfd);
    close(sfd);
    unlink(a.path);
}

int main(void)
{
    char dir[] = "/tmp/lsv-net-test-XXXXXX";

    setvbuf(stdout, NULL, _IOLBF, 0);
    test_parse();
    test_format();
    test_tcp();
    test_tcp6();
    test_udp();
    if (mkdtemp(dir) == NULL) {
        check(0, "mkdtemp: %s", strerror(errno));
    } else {
        test_unix(dir);
        test_unixgram(dir);
        rmdir(dir);
    }
    return tap_end();
}

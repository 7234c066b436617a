/* cli.c: luaserv-cli, the line client of the timestamp server. */
#include "lsv.h"
#include "args.h"
#include "buf.h"
#include "net.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PROG "luaserv-cli"
#define DEFAULT_HOST "localhost"
#define DEFAULT_PORT 21567
#define DEFAULT_TIMEOUT 5.0

/* Once part of a reply has come without its newline, this much quiet ends
 * it: a server that answers without a line ending is still shown. */
#define QUIET_MS 200

/* A reply that never ends is cut here rather than filling memory. */
#define REPLY_MAX (16u << 20)

/* The biggest datagram we accept as a reply. */
#define DGRAM_MAX 65536

/* A name like "localhost" can stand for several addresses; UDP cannot tell a
 * dead one until a datagram is refused, so we keep them to try in turn. */
#define MAX_CANDIDATES 8

/* "[host]:port" with a 255-byte host, or a unix path. */
#define NAMELEN 300

typedef struct cli {
    lsv_addr_t addr;
    char name[NAMELEN];     /* how messages name the server */
    double timeout;         /* seconds for connect and for a reply */
    int keep;               /* one connection for all lines */
    const char *exec;       /* one-shot text, or NULL */
    int admin;              /* --admin: the admin protocol */
    char *admin_cmd;        /* --admin PATH CMD...: the command, or NULL */
    int fd;                 /* open connection or datagram socket, or -1 */
    char cand[MAX_CANDIDATES][LSV_ADDRSTRLEN];  /* UDP: numeric hosts */
    int ncand, cur;         /* UDP: how many, and the one in use */
    lsv_buf_t out;          /* the request being sent */
    lsv_buf_t in;           /* the reply being read */
} cli_t;

#define USAGE \
"usage: " PROG " [-H HOST] [-p PORT] [--udp] [--keep] [-t SECS] [-e TEXT]\n" \
"       " PROG " --unix PATH | --unixgram PATH [--keep] [-t SECS] [-e TEXT]\n" \
"       " PROG " --admin PATH [CMD ARGS...]\n"

static void help(void)
{
    printf(USAGE
"Sends each line read from stdin to a luaserv server and prints the reply;\n"
"an empty line or end of input ends. Talks TCP, one connection a line,\n"
"unless told otherwise.\n"
"  -H, --host HOST       server host (default " DEFAULT_HOST ")\n"
"  -p, --port PORT       server port (default %d)\n"
"  -u, --udp             send each line as one UDP datagram\n"
"  -k, --keep            keep one connection open for all lines\n"
"  -t, --timeout SECS    give up on a connect or a reply after SECS "
"(default %g)\n"
"  -e, --exec TEXT       send TEXT, print the reply, exit\n"
"      --unix PATH       talk to a unix stream socket (e.g. the admin one)\n"
"      --unixgram PATH   talk to a unix datagram socket\n"
"      --admin PATH [CMD]  talk to luaserv's admin socket: run CMD (stats,\n"
"                        conns, reload, eval LUA, log-level LEVEL,\n"
"                        shutdown) or commands read from stdin\n"
"  -V, --version         print the version and exit\n"
"  -h, --help            print this help and exit\n"
"Exit status: 0 on success, 1 when the server cannot be reached or does\n"
"not answer, 2 on a bad option.\n",
           DEFAULT_PORT, DEFAULT_TIMEOUT);
}


/* What the options say about the server's address, for set_address. */
typedef struct addr_opts {
    const char *host, *path;
    int inet, udp, nunix;       /* --host/--port, --udp, unix sockets given */
} addr_opts_t;

/* Takes one option from getopt_long into c and o; exits 2 on a bad value,
 * 0 after --help or --version. */
static void take_option(cli_t *c, addr_opts_t *o, int opt, char *arg)
{
    char *end;

    switch (opt) {
    case 'H':
        o->host = arg;
        o->inet = 1;
        break;
    case 'p': {
        long v;
        errno = 0;
        v = strtol(arg, &end, 10);
        if (errno || end == arg || *end || v < 1 || v > 65535)
            args_bad_option("bad port '%s': expected 1..65535", arg);
        c->addr.port = (int)v;
        o->inet = 1;
        break;
    }
    case 'u':
        o->udp = 1;
        break;
    case 'k':
        c->keep = 1;
        break;
    case 't':
        errno = 0;
        c->timeout = strtod(arg, &end);
        if (errno || end == arg || *end || !(c->timeout > 0)
            || c->timeout > 1e6)
            args_bad_option("bad timeout '%s': expected seconds > 0", arg);
        break;
    case 'e':
        c->exec = arg;
        break;
    case 'A':
        c->admin = 1;
        /* The server's spelling, unix:/path, is accepted too; the admin
         * socket is never on the network. */
        if (strncmp(arg, "unix:", 5) == 0) arg += 5;
        else if (strstr(arg, "://") != NULL)
            args_bad_option("--admin takes the path of a unix socket, not "
                       "'%s'", arg);
        __attribute__((fallthrough));  /* a unix stream socket */
    case 'U':
    case 'G':
        c->addr.kind = opt == 'G' ? LSV_NET_UNIXGRAM : LSV_NET_UNIX;
        o->path = arg;
        o->nunix++;
        break;
    case 'V':
        printf(PROG " %s\n", LSV_VERSION);
        exit(0);
    case 'h':
        help();
        exit(0);
    default:        /* getopt has said what was wrong */
        args_usage_error();
    }
}

/* Fills c->addr and c->name from the options, or exits 2 when they do not
 * make one address. */
static void set_address(cli_t *c, const addr_opts_t *o)
{
    const char *host = o->host;

    if (o->nunix > 1)
        args_bad_option("%s", "give one of --unix and --unixgram");
    if (o->nunix && (o->udp || o->inet))
        args_bad_option("%s", "--unix and --unixgram take no --host, --port or "
                   "--udp");

    if (o->path != NULL) {
        if (*o->path == '\0' || strlen(o->path) >= sizeof c->addr.path)
            args_bad_option("bad socket path '%s'", o->path);
        strcpy(c->addr.path, o->path);
        snprintf(c->name, sizeof c->name, "%s", o->path);
        return;
    }
    c->addr.kind = o->udp ? LSV_NET_UDP : LSV_NET_TCP;
    /* Take "[::1]" as well as "::1". */
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
        host++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof c->addr.host)
        args_bad_option("bad host '%s'", host);
    memcpy(c->addr.host, host, n);
    c->addr.host[n] = '\0';
    snprintf(c->name, sizeof c->name,
             strchr(c->addr.host, ':') ? "[%s]:%d" : "%s:%d",
             c->addr.host, c->addr.port);
}

/* argv[from..argc) joined by spaces. Returns new; caller frees. */
static char *join_args(int argc, char **argv, int from)
{
    lsv_buf_t cmd = { 0 };
    char *joined;

    for (int i = from; i < argc; i++) {
        if (i > from) lsv_buf_append(&cmd, " ", 1);
        lsv_buf_append(&cmd, argv[i], strlen(argv[i]));
    }
    lsv_buf_append(&cmd, "", 1);
    joined = lsv_strdup(lsv_buf_head(&cmd));
    lsv_buf_free(&cmd);
    return joined;
}

static void parse_args(cli_t *c, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "host", required_argument, NULL, 'H' },
        { "port", required_argument, NULL, 'p' },
        { "udp", no_argument, NULL, 'u' },
        { "keep", no_argument, NULL, 'k' },
        { "timeout", required_argument, NULL, 't' },
        { "exec", required_argument, NULL, 'e' },
        { "unix", required_argument, NULL, 'U' },
        { "unixgram", required_argument, NULL, 'G' },
        { "admin", required_argument, NULL, 'A' },
        { "version", no_argument, NULL, 'V' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    args_init(PROG, USAGE);
    addr_opts_t o = { .host = DEFAULT_HOST };
    int opt;

    c->addr.port = DEFAULT_PORT;
    while ((opt = getopt_long(argc, argv, "+H:p:ukt:e:Vh", longopts, NULL))
           != -1)
        take_option(c, &o, opt, optarg);
    if (optind < argc && !c->admin)
        args_bad_option("unexpected argument '%s'", argv[optind]);
    if (optind < argc)      /* --admin PATH CMD ARGS...: one command */
        c->admin_cmd = join_args(argc, argv, optind);
    set_address(c, &o);
}

static int is_dgram(const cli_t *c)
{
    return c->addr.kind == LSV_NET_UDP || c->addr.kind == LSV_NET_UNIXGRAM;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until fd is readable or the deadline passes. Returns 1 readable,
 * 0 timed out, -1 on error. EINTR is retried with the time that is left. */
static int wait_readable(int fd, int64_t deadline)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };

    for (;;) {
        int64_t left = deadline - now_ms();
        int rc;
        if (left < 0) left = 0;
        rc = poll(&pfd, 1, left > 0x7fffffff ? 0x7fffffff : (int)left);
        if (rc >= 0) return rc > 0;
        if (errno != EINTR) return -1;
    }
}

/* Resolves the UDP host once into numeric candidates. Returns LSV_OK, or
 * LSV_ERR after printing why. */
static int resolve_candidates(cli_t *c)
{
    struct addrinfo hints, *res, *ai;
    int rc;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    rc = getaddrinfo(c->addr.host, NULL, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, PROG ": cannot connect to %s: %s\n", c->name,
                rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return LSV_ERR;
    }
    for (ai = res; ai != NULL && c->ncand < MAX_CANDIDATES; ai = ai->ai_next)
        if (getnameinfo(ai->ai_addr, ai->ai_addrlen, c->cand[c->ncand],
                        LSV_ADDRSTRLEN, NULL, 0, NI_NUMERICHOST) == 0)
            c->ncand++;
    freeaddrinfo(res);
    if (c->ncand == 0) {
        fprintf(stderr, PROG ": cannot connect to %s: no address\n", c->name);
        return LSV_ERR;
    }
    return LSV_OK;
}

/* Opens c->fd: a stream connection, or a connected datagram socket (for
 * UDP, to the candidate c->cur). Returns LSV_OK, or LSV_ERR after printing
 * one line. */
static int open_conn(cli_t *c)
{
    char err[LSV_ERRLEN];

    if (c->addr.kind != LSV_NET_UDP) {
        c->fd = lsv_net_connect(&c->addr, c->timeout, err);
        if (c->fd < 0) fprintf(stderr, PROG ": %s\n", err);
        return c->fd < 0 ? LSV_ERR : LSV_OK;
    }
    if (c->ncand == 0 && resolve_candidates(c) != LSV_OK) return LSV_ERR;
    for (; c->cur < c->ncand; c->cur++) {
        lsv_addr_t a = c->addr;
        snprintf(a.host, sizeof a.host, "%s", c->cand[c->cur]);
        c->fd = lsv_net_connect(&a, c->timeout, err);
        if (c->fd >= 0) return LSV_OK;
    }
    fprintf(stderr, PROG ": cannot connect to %s: %s\n", c->name,
            strerror(errno));
    return LSV_ERR;
}

static void close_conn(cli_t *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

/* Sends all of out; a datagram goes in one send. Returns 0 or errno. */
static int send_request(cli_t *c)
{
    const char *p = lsv_buf_head(&c->out);
    size_t left = c->out.len;

    while (left > 0) {
        ssize_t n = send(c->fd, p, left, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        p += n;
        left -= (size_t)n;
    }
    return 0;
}

/* Reads one reply into c->in: up to a newline, the peer's close, or, once
 * some bytes have come, QUIET_MS without more. A datagram reply is one
 * datagram. Returns 0, ETIMEDOUT when nothing came in time, EPIPE when the
 * peer closed without a byte, or another errno. */
static int read_reply(cli_t *c)
{
    int64_t deadline = now_ms() + (int64_t)(c->timeout * 1000);

    lsv_buf_consume(&c->in, c->in.len);
    for (;;) {
        int64_t until = c->in.len ? now_ms() + QUIET_MS : deadline;
        size_t room = is_dgram(c) ? DGRAM_MAX : 4096;
        char *tail;
        ssize_t n;
        int rc = wait_readable(c->fd, until);

        if (rc < 0) return errno;
        if (rc == 0) return c->in.len ? 0 : ETIMEDOUT;
        tail = lsv_buf_reserve(&c->in, room);
        n = recv(c->fd, tail, room, 0);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return c->in.len ? 0 : errno;
        }
        if (n == 0 && !is_dgram(c)) return c->in.len ? 0 : EPIPE;
        lsv_buf_commit(&c->in, (size_t)n);
        if (is_dgram(c) || memchr(tail, '\n', (size_t)n) != NULL
            || c->in.len >= REPLY_MAX)
            return 0;
    }
}

/* Prints the reply without surrounding whitespace, then a newline. */
static int print_reply(const cli_t *c)
{
    const char *p = lsv_buf_head(&c->in);
    size_t n = c->in.len;

    while (n > 0 && isspace((unsigned char)*p)) {
        p++;
        n--;
    }
    while (n > 0 && isspace((unsigned char)p[n - 1])) n--;
    fwrite(p, 1, n, stdout);
    fputc('\n', stdout);
    if (fflush(stdout) != 0) {
        fprintf(stderr, PROG ": cannot write output: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}

/* Prints the one line that says why an exchange failed. */
static void report(const cli_t *c, int e, int sending)
{
    if (e == ETIMEDOUT)
        fprintf(stderr, PROG ": no reply from %s within %g s\n", c->name,
                c->timeout);
    else if (e == EPIPE && !sending)
        fprintf(stderr, PROG ": %s closed the connection without a reply\n",
                c->name);
    else if (e == ECONNREFUSED)
        fprintf(stderr, PROG ": cannot connect to %s: %s\n", c->name,
                strerror(e));
    else
        fprintf(stderr, PROG ": cannot %s %s: %s\n",
                sending ? "send to" : "read from", c->name, strerror(e));
}

/* Sends line + "\r\n" and prints the reply, opening a connection first if
 * none is open and closing it after unless --keep (datagram sockets stay
 * open). Returns the exit status: 0, or 1 after printing one line. */
static int exchange(cli_t *c, const char *line, size_t len)
{
    int e, sending;

    lsv_buf_consume(&c->out, c->out.len);
    lsv_buf_append(&c->out, line, len);
    lsv_buf_append(&c->out, "\r\n", 2);
    for (;;) {
        if (c->fd < 0 && open_conn(c) != LSV_OK) return 1;
        sending = 1;
        e = send_request(c);
        if (e == 0) {
            sending = 0;
            e = read_reply(c);
        }
        /* A refused datagram means nobody listens at that address of the
         * name; the next one may be the server's. */
        if (e == ECONNREFUSED && c->addr.kind == LSV_NET_UDP
            && c->cur + 1 < c->ncand) {
            close_conn(c);
            c->cur++;
            continue;
        }
        break;
    }
    if (e != 0) {
        report(c, e, sending);
        close_conn(c);
        return 1;
    }
    if (!c->keep && !is_dgram(c)) close_conn(c);
    return print_reply(c);
}

/* Sends one admin command and prints the reply body (status "ok"), or the
 * error on stderr. The reply ends with a line ".", and body lines that
 * start with "." carry one more. Returns the exit status. */
static int admin_exchange(cli_t *c, const char *cmd)
{
    int64_t deadline = now_ms() + (int64_t)(c->timeout * 1000);
    if (c->fd < 0 && open_conn(c) != LSV_OK) return 1;
    lsv_buf_consume(&c->out, c->out.len);
    lsv_buf_append(&c->out, cmd, strlen(cmd));
    lsv_buf_append(&c->out, "\n", 1);
    int e = send_request(c);
    lsv_buf_consume(&c->in, c->in.len);
    while (e == 0) {
        const char *h = lsv_buf_head(&c->in);
        size_t n = c->in.len;
        if ((n == 2 && memcmp(h, ".\n", 2) == 0) ||
            (n >= 3 && memcmp(h + n - 3, "\n.\n", 3) == 0))
            break;
        int rc = wait_readable(c->fd, deadline);
        if (rc <= 0) {
            e = rc < 0 ? errno : ETIMEDOUT;
            break;
        }
        char *tail = lsv_buf_reserve(&c->in, 4096);
        ssize_t got = recv(c->fd, tail, 4096, 0);
        if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (got <= 0) {
            e = got == 0 ? EPIPE : errno;
            break;
        }
        lsv_buf_commit(&c->in, (size_t)got);
    }
    if (e != 0) {
        report(c, e, 0);
        return 1;
    }
    /* status line, body, "." */
    char *p = lsv_buf_head(&c->in), *end = p + c->in.len - 2;
    char *nl = memchr(p, '\n', (size_t)(end - p + 1));
    int ok = strncmp(p, "ok", 2) == 0;
    if (!ok) fprintf(stderr, PROG ": %.*s\n", (int)(nl - p), p);
    for (char *line = nl + 1; line < end; ) {
        char *eol = memchr(line, '\n', (size_t)(end - line));
        if (eol == NULL) eol = end;
        if (*line == '.') line++;
        fwrite(line, 1, (size_t)(eol - line), stdout);
        fputc('\n', stdout);
        line = eol + 1;
    }
    fflush(stdout);
    return ok ? 0 : 1;
}

/* --admin without a command: commands from stdin, one a line. */
static int run_admin(cli_t *c)
{
    int tty = isatty(STDIN_FILENO);
    char *line = NULL;
    size_t cap = 0;
    int status = 0;
    for (;;) {
        if (tty) {
            fputs("admin> ", stdout);
            fflush(stdout);
        }
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) break;
        if (n > 0 && line[n - 1] == '\n') line[--n] = '\0';
        if (n == 0) continue;
        status = admin_exchange(c, line);
        if (strcmp(line, "quit") == 0) break;
    }
    free(line);
    return status;
}

/* The reference client: prompt (on a terminal), read a line, exchange;
 * an empty line or end of input ends with status 0. */
static int run_lines(cli_t *c)
{
    int tty = isatty(STDIN_FILENO);
    char *line = NULL;
    size_t cap = 0;
    int status = 0;

    for (;;) {
        ssize_t n;
        if (tty) {
            fputs("> ", stdout);
            fflush(stdout);
        }
        n = getline(&line, &cap, stdin);
        if (n < 0) {
            if (tty) fputc('\n', stdout);
            break;
        }
        if (n > 0 && line[n - 1] == '\n') n--;
        if (n > 0 && line[n - 1] == '\r') n--;
        if (n == 0) break;
        status = exchange(c, line, (size_t)n);
        if (status != 0) break;
    }
    free(line);
    return status;
}

int main(int argc, char **argv)
{
    cli_t c;
    int status;

    memset(&c, 0, sizeof c);
    c.fd = -1;
    c.timeout = DEFAULT_TIMEOUT;
    parse_args(&c, argc, argv);
    /* A server that hangs up mid-send must give a message, not a kill. */
    signal(SIGPIPE, SIG_IGN);

    if (c.admin)
        status = c.admin_cmd ? admin_exchange(&c, c.admin_cmd)
                             : run_admin(&c);
    else if (c.exec != NULL)
        status = exchange(&c, c.exec, strlen(c.exec));
    else
        status = run_lines(&c);
    close_conn(&c);
    lsv_buf_free(&c.out);
    lsv_buf_free(&c.in);
    free(c.admin_cmd);
    fflush(stdout);
    return status;
}

/* bench_args.c: luaserv-bench's command line: --help, options, checks. */
#include "bench.h"
#include "args.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const bench_mode_names[] = {
    "persistent", "short", "udp", "idle", "websocket", NULL };
const char *const bench_check_names[] = { "timestamp", "echo", "line", NULL };

#define USAGE \
"usage: " PROG " [-m MODE] [-H HOST] [-p PORT | --unix PATH] [-c N] [-P N]\n" \
"       " "              [-s BYTES] [-d SECS] [--warmup SECS] [-t SECS]\n" \
"       " "              [--check timestamp|echo|line] [--path PATH]\n" \
"       " "              [--tls [--tls-ca FILE] [--tls-sni NAME]\n" \
"       " "              [--tls-resume]] [--json]\n"

static void help(void)
{
    printf(USAGE
"Loads a luaserv server with line requests and reports requests/s, latency\n"
"percentiles, errors, and its own CPU time, to tell whether the generator\n"
"was the limit. A request is \"x...x<hex number>\\r\\n\".\n"
"Modes:\n"
"  persistent  N connections, each keeping P requests in flight (default)\n"
"  short       a new TCP connection per request, N exchanges at a time;\n"
"              latency counts from connect to reply\n"
"  udp         N sockets, each keeping P datagrams in flight\n"
"  idle        opens N connections and sends nothing; prints \"ready N\"\n"
"              once all are open, holds them until the duration ends and\n"
"              reports how many are open\n"
"  websocket   N connections, each upgraded to WebSocket (GET --path), then\n"
"              keeping P masked text frames of -s bytes in flight, each\n"
"              checked when it comes back (echo, the default, or line: any\n"
"              data frame)\n"
"Options:\n"
"  -m, --mode MODE        persistent, short, udp, idle or websocket\n"
"  -H, --host HOST        server host (default " DEFAULT_HOST ")\n"
"  -p, --port PORT        server port (default %d)\n"
"      --unix PATH        a unix stream socket instead of TCP (not udp)\n"
"  -c, --connections N    connections or sockets (default %d; short %d)\n"
"  -P, --pipeline N       requests in flight per connection, for\n"
"                         persistent, udp and websocket (default 1)\n"
"  -s, --size BYTES       line length without CRLF (default 16)\n"
"  -d, --duration SECS    measured time (default 5); idle: from the start\n"
"      --warmup SECS      unmeasured load before it (default 1; not idle)\n"
"  -t, --timeout SECS     a connect, request or datagram unanswered this\n"
"                         long is an error (default 1)\n"
"      --check KIND       how a reply is checked: timestamp, \"[\" ctime \"] \"\n"
"                         and the request line (default); echo, the request\n"
"                         line; line, any line\n"
"      --path PATH        websocket: the upgrade's target (default /)\n"
"      --tls              persistent and short: speak TLS (OpenSSL, TLS 1.2\n"
"                         or 1.3), each handshake non-blocking in the loop;\n"
"                         the certificate is not checked (a bench measures,\n"
"                         it does not trust); the report counts handshakes\n"
"      --tls-ca FILE      check the server's certificate against this PEM\n"
"                         CA and the host (a failure is a connect error)\n"
"      --tls-sni NAME     the server_name sent (default the host, none for\n"
"                         an IP literal)\n"
"      --tls-resume       short: each connection offers the session (TLS 1.3\n"
"                         ticket) its previous one got; the report counts\n"
"                         how many resumed. Without it every handshake is\n"
"                         full\n"
"      --json             print one JSON object instead of the report\n"
"  -V, --version          print the version and exit\n"
"  -h, --help             print this help and exit\n"
"The run stops at warmup + duration, and hard at 5 s past that.\n"
"Exit status: 0 when requests succeeded (or, idle, all connections\n"
"opened), errors or not; 1 when the server cannot be reached, nothing\n"
"succeeded or the hard stop hit; 2 on a bad option.\n",
           DEFAULT_PORT, DEFAULT_CONNS, DEFAULT_SHORT_CONNS);
}


/* Parses a number in [min, max] (whole when whole), or exits 2 naming the
 * option. */
static double number(const char *s, double min, double max, int whole,
                     const char *what)
{
    char *end, msg[96];
    double v;

    errno = 0;
    v = whole ? (double)strtol(s, &end, 10) : strtod(s, &end);
    if (errno || end == s || *end || !(v >= min && v <= max)) {
        snprintf(msg, sizeof msg, "bad %s '%%s': expected %s%.15g..%.15g", what,
                 whole ? "" : "seconds ", min, max);
        args_bad_option(msg, s);
    }
    return v;
}

/* Index of s in the NULL-ended names, or exits 2. */
static int pick(const char *const *names, const char *s, const char *what)
{
    char msg[96];

    for (int i = 0; names[i] != NULL; i++)
        if (strcmp(names[i], s) == 0) return i;
    snprintf(msg, sizeof msg, "unknown %s '%%s'", what);
    args_bad_option(msg, s);
    return -1;
}

void bench_parse_args(bench_t *b, int argc, char **argv)
{
    enum { OPT_UNIX = 256, OPT_CHECK, OPT_WARMUP, OPT_JSON, OPT_PATH,
           OPT_TLS, OPT_TLS_CA, OPT_TLS_SNI, OPT_TLS_RESUME };
    static const struct option longopts[] = {
        { "mode", 1, NULL, 'm' }, { "host", 1, NULL, 'H' },
        { "port", 1, NULL, 'p' }, { "unix", 1, NULL, OPT_UNIX },
        { "connections", 1, NULL, 'c' }, { "pipeline", 1, NULL, 'P' },
        { "size", 1, NULL, 's' }, { "duration", 1, NULL, 'd' },
        { "warmup", 1, NULL, OPT_WARMUP }, { "timeout", 1, NULL, 't' },
        { "check", 1, NULL, OPT_CHECK }, { "json", 0, NULL, OPT_JSON },
        { "path", 1, NULL, OPT_PATH }, { "tls", 0, NULL, OPT_TLS },
        { "tls-ca", 1, NULL, OPT_TLS_CA }, { "tls-sni", 1, NULL, OPT_TLS_SNI },
        { "tls-resume", 0, NULL, OPT_TLS_RESUME },
        { "version", 0, NULL, 'V' }, { "help", 0, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    const char *host = DEFAULT_HOST, *path = NULL;
    int opt, port = DEFAULT_PORT, inet_opts = 0, check = -1;
    char spec[sizeof b->addr.host + sizeof b->addr.path + 16];
    char err[LSV_ERRLEN];

    args_init(PROG, USAGE);
    b->pipeline = 1;
    b->size = 16;
    b->duration = 5;
    b->warmup = 1;
    b->timeout = 1;
    while ((opt = getopt_long(argc, argv, "m:H:p:c:P:s:d:t:Vh", longopts,
                              NULL)) != -1) {
        switch (opt) {
        case 'm': b->mode = pick(bench_mode_names, optarg, "mode"); break;
        case 'H': host = optarg; inet_opts = 1; break;
        case 'p':
            port = (int)number(optarg, 1, 65535, 1, "port");
            inet_opts = 1;
            break;
        case OPT_UNIX: path = optarg; break;
        case 'c': b->nconns = (int)number(optarg, 1, 1e6, 1, "-c"); break;
        case 'P': b->pipeline = (uint32_t)number(optarg, 1, 65536, 1, "-P");
                  break;
        case 's': b->size = (size_t)number(optarg, 0, 1 << 20, 1, "size");
                  break;
        case 'd': b->duration = number(optarg, 1e-3, 1e6, 0, "duration");
                  break;
        case OPT_WARMUP: b->warmup = number(optarg, 0, 1e6, 0, "warmup");
                         break;
        case 't': b->timeout = number(optarg, 1e-3, 1e6, 0, "timeout"); break;
        case OPT_CHECK:
            check = pick(bench_check_names, optarg, "check");
            break;
        case OPT_PATH: b->ws_path = optarg; break;
        case OPT_JSON: b->json = 1; break;
        case OPT_TLS: b->tls = 1; break;
        case OPT_TLS_CA: b->tls_ca = optarg; break;
        case OPT_TLS_SNI: b->tls_sni = optarg; break;
        case OPT_TLS_RESUME: b->tls_resume = 1; break;
        case 'V': printf(PROG " %s\n", LSV_VERSION); exit(0);
        case 'h': help(); exit(0);
        default: args_usage_error();
        }
    }
    if (optind < argc)
        args_bad_option("unexpected argument '%s'", argv[optind]);
    b->check = check >= 0 ? check : b->mode == MODE_WS ? CHECK_ECHO
                                                       : CHECK_TIMESTAMP;
    if (b->mode == MODE_WS && b->check == CHECK_TIMESTAMP)
        args_bad_option("%s", "websocket checks echo or line, not timestamp");
    if (b->ws_path != NULL && b->mode != MODE_WS)
        args_bad_option("%s", "--path applies to websocket only");
    if (b->ws_path == NULL) b->ws_path = "/";
    if (b->ws_path[0] != '/' || strpbrk(b->ws_path, " \r\n") != NULL)
        args_bad_option("bad --path '%s': expected /... without blanks",
                        b->ws_path);
    if (b->nconns == 0)
        b->nconns = b->mode == MODE_SHORT ? DEFAULT_SHORT_CONNS
                                          : DEFAULT_CONNS;
    if (b->pipeline > 1 && (b->mode == MODE_SHORT || b->mode == MODE_IDLE))
        args_bad_option("-P applies to persistent and udp, not %s",
                   bench_mode_names[b->mode]);
    if ((uint64_t)b->pipeline * (b->size + STAMP_LEN + 2) > (64u << 20))
        args_bad_option("%s", "pipeline x size over 64 MiB in flight");
    if (b->mode == MODE_IDLE) b->warmup = 0;
    if (b->tls && b->mode != MODE_PERSISTENT && b->mode != MODE_SHORT)
        args_bad_option("--tls applies to persistent and short, not %s",
                        bench_mode_names[b->mode]);
    if (!b->tls && (b->tls_ca || b->tls_sni || b->tls_resume))
        args_bad_option("%s", "--tls-ca, --tls-sni and --tls-resume need "
                        "--tls");
    if (b->tls_resume && b->mode != MODE_SHORT)
        args_bad_option("%s", "--tls-resume applies to short mode only");
    if (path != NULL && (inet_opts || b->mode == MODE_UDP))
        args_bad_option("%s", "--unix takes no --host or --port, nor udp");

    /* lsv_net_parse checks the syntax; "::1" gets its brackets here. */
    if (path != NULL)
        snprintf(spec, sizeof spec, "unix:%s", path);
    else
        snprintf(spec, sizeof spec,
                 strchr(host, ':') && host[0] != '[' ? "%s://[%s]:%d"
                                                     : "%s://%s:%d",
                 b->mode == MODE_UDP ? "udp" : "tcp", host, port);
    if (lsv_net_parse(spec, &b->addr, err) != LSV_OK)
        args_bad_option("%s", err);
    snprintf(b->name, sizeof b->name, "%s",
             path != NULL ? path : strstr(spec, "//") + 2);
}

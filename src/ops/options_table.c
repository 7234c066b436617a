/* options_table.c: the table of every option, and what its action rows
 * do on the command line (-l, --shared, --help, --version, --list-options).
 * The checking, the configuration side and getopt are in options.c. */
#include "lsv.h"
#include "options_table.h"
#include "log.h"
#include "shared.h"
#include "shdict.h"

#include <errno.h>
#include <lua.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static void add_listen(const lsv_option_t *o, const char *arg,
                       lsv_flags_t *f);
static void add_shared(const lsv_option_t *o, const char *arg,
                       lsv_flags_t *f);
static void show_help(const lsv_option_t *o, const char *arg, lsv_flags_t *f);
static void show_version(const lsv_option_t *o, const char *arg,
                         lsv_flags_t *f);
static void list_options(const lsv_option_t *o, const char *arg,
                         lsv_flags_t *f);


static const char *const levels[] = { "debug", "info", "warn", "error", NULL };
static const char *const formats[] = { "text", "json", NULL };
static const char *const verifies[] = { "require", "optional", NULL };

/* The field a row writes: in lsv_options_t, lsv_flags_t, lsv_lopts_t. */
#define SRV(m) .dest = LSV_OPT_SERVER, .off = offsetof(lsv_options_t, m), \
               .size = sizeof(((lsv_options_t *)0)->m)
#define FLG(m) .dest = LSV_OPT_FLAGS, .off = offsetof(lsv_flags_t, m), \
               .size = sizeof(((lsv_flags_t *)0)->m)
#define LST(m) .lstore = 1, .loff = offsetof(lsv_lopts_t, m), \
               .lsize = sizeof(((lsv_lopts_t *)0)->m)

#define SETTING LSV_OPT_SETTING
#define CALL LSV_OPT_CALL
#define LISTEN LSV_OPT_LISTEN
#define TLS LSV_OPT_TLS

/* Every option, in --help order; configuration-only keys last. */
const lsv_option_t lsv_option_table[] = {
    { .name = "listen", .short_name = 'l', .key = "listen", .where = CALL,
      .type = LSV_OPT_ACTION, .action = add_listen, .arg = "ADDR",
      .help = "listen on ADDR (repeatable): tcp://HOST:PORT,\n"
              "tls://HOST:PORT (TLS, see --tls-cert),\n"
              "udp://HOST:PORT, unix:/PATH, unixgram:/PATH,\n"
              "HOST:PORT or :PORT (TCP), [::1]:PORT (IPv6)" },
    { .name = "idle-timeout", .key = "idle_timeout", .where = SETTING | LISTEN,
      .type = LSV_OPT_SECONDS, .def = "0", .arg = "SEC",
      .help = "close connections idle this long (0 = never)",
      SRV(idle_timeout), LST(idle_timeout) },
    { .name = "shutdown-timeout", .key = "shutdown_timeout", .where = SETTING,
      .type = LSV_OPT_SECONDS, .def = "10", .arg = "SEC",
      .help = "on SIGTERM/SIGINT, wait this long for\n"
              "connections to finish (default %D)",
      SRV(shutdown_timeout) },
    { .name = "drain-delay", .key = "drain_delay", .where = SETTING,
      .type = LSV_OPT_SECONDS, .def = "0", .arg = "SEC",
      .help = "on SIGTERM/SIGINT, first answer /healthz 503\n"
              "and go on serving for SEC seconds, so a\n"
              "balancer takes this instance out (default %D)",
      SRV(drain_delay) },
    { .name = "high-water", .key = "high_water", .where = SETTING | LISTEN,
      .type = LSV_OPT_BYTES, .min = 1024, .max = 1LL << 30,
      .def = "1048576", .arg = "BYTES",
      .help = "queued output that pauses reading from a peer\n"
              "(default %D; resumes below a quarter)",
      SRV(high_water), LST(high_water) },
    /* Output buffers count in uint32: at most 3 GiB. */
    { .name = "max-output", .key = "max_output", .where = SETTING,
      .type = LSV_OPT_BYTES, .min = 65536, .max = 3LL << 30,
      .def = "268435456", .arg = "BYTES",
      .help = "cap on output queued for one peer (default\n"
              "%D, 256 MiB; at most 3 GiB): a reply\n"
              "that would pass it fails that connection",
      SRV(max_output) },
    { .name = "backlog", .key = "backlog", .where = SETTING,
      .type = LSV_OPT_COUNT, .min = 1, .max = 65535, .def = "511",
      .arg = "N", .help = "listen backlog (default %D)", SRV(backlog) },
    { .name = "rcvbuf", .key = "rcvbuf", .where = LISTEN | LSV_OPT_DGRAM,
      .type = LSV_OPT_BYTES, .min = 1024, .max = 1LL << 30, .arg = "BYTES",
      .help = "receive buffer of udp:// and unixgram:\n"
              "listeners (default: the kernel's)",
      SRV(rcvbuf), LST(rcvbuf) },
    { .name = "sndbuf", .key = "sndbuf", .where = LISTEN | LSV_OPT_DGRAM,
      .type = LSV_OPT_BYTES, .min = 1024, .max = 1LL << 30, .arg = "BYTES",
      .help = "send buffer of udp:// and unixgram: listeners",
      SRV(sndbuf), LST(sndbuf) },
    { .name = "proxy-protocol", .key = "proxy_protocol",
      .where = LISTEN | LSV_OPT_STREAM, .type = LSV_OPT_FLAG,
      .help = "the -l tcp, tls and unix stream listeners\n"
              "read a PROXY protocol header (v1 or v2) from\n"
              "each connection first (before TLS): a\n"
              "balancer's client",
      FLG(proxy_protocol), LST(proxy_protocol) },
    { .name = "proxy-timeout", .key = "proxy_timeout",
      .where = SETTING | LISTEN | LSV_OPT_STREAM, .type = LSV_OPT_SECONDS,
      .def = "5", .arg = "SEC",
      .help = "close a connection whose PROXY header is not\n"
              "complete in SEC (default %D; 0 = never)",
      SRV(proxy_timeout), LST(proxy_timeout) },
    { .name = "tls-cert", .key = "cert", .where = LISTEN | TLS,
      .type = LSV_OPT_STRING, .arg = "FILE",
      .help = "certificate chain of the tls:// listeners\n"
              "(PEM, the leaf first); SIGHUP re-reads it",
      FLG(tls_cert), LST(tls.cert) },
    { .name = "tls-key", .key = "key", .where = LISTEN | TLS,
      .type = LSV_OPT_STRING, .arg = "FILE",
      .help = "its private key (PEM)", FLG(tls_key), LST(tls.key) },
    { .name = "tls-client-ca", .key = "client_ca", .where = LISTEN | TLS,
      .type = LSV_OPT_STRING, .arg = "FILE",
      .help = "ask TLS clients for a certificate issued by\n"
              "a CA in FILE (PEM): mutual TLS",
      FLG(tls_client_ca), LST(tls.client_ca) },
    { .name = "tls-verify", .key = "verify", .where = LISTEN | TLS,
      .type = LSV_OPT_ENUM, .choices = verifies, .def = "require",
      .arg = "MODE",
      .help = "with --tls-client-ca: require a client\n"
              "certificate, or optional (one sent must\n"
              "verify; default %D)",
      FLG(tls_verify) },
    { .name = "tls-alpn", .key = "alpn", .where = LISTEN | TLS,
      .type = LSV_OPT_ALPN, .arg = "LIST",
      .want = "a list of protocol names of 1 to 255 bytes, as in "
              "{ \"h2\", \"http/1.1\" }",
      .flag_want = "needs protocol names of 1 to 255 bytes, "
                   "comma-separated, as in h2,http/1.1",
      .help = "ALPN protocols the tls:// listeners agree\n"
              "to, in preference order: h2,http/1.1",
      FLG(tls_alpn) },
    { .name = "tls-handshake-timeout", .key = "handshake_timeout",
      .where = LISTEN | TLS, .type = LSV_OPT_SECONDS, .def = "10",
      .arg = "SEC",
      .help = "close a connection whose TLS handshake is\n"
              "not done in SEC (default %D; 0 = never)",
      FLG(tls_handshake_timeout), LST(tls.handshake_timeout) },
    { .name = "config", .short_name = 'c', .type = LSV_OPT_STRING,
      .arg = "FILE", .help = "read listeners and settings from FILE (Lua);\n"
                             "flags override it",
      FLG(config) },
    { .name = "log-level", .key = "log_level", .where = SETTING,
      .type = LSV_OPT_ENUM, .choices = levels, .def = "info", .arg = "LEVEL",
      .help = "debug, info, warn or error (default %D)",
      .dest = LSV_OPT_GLOBAL, .global = &lsv_log_level },
    { .name = "log-format", .key = "log_format", .where = SETTING,
      .type = LSV_OPT_ENUM, .choices = formats, .def = "text",
      .arg = "FORMAT", .help = "text (default) or json, one object a line",
      .dest = LSV_OPT_GLOBAL, .global = &lsv_log_format },
    { .name = "access-log", .key = "access_log", .where = SETTING,
      .type = LSV_OPT_FLAG, .help = "log a line per closed connection",
      SRV(access_log) },
    { .name = "admin", .key = "admin", .where = CALL, .type = LSV_OPT_STRING,
      .prefix = "unix:", .want = "a unix:/path address (eval over the "
      "network would give anyone the server)", .flag_want = "must be "
      "unix:/path (eval over the network would give anyone the server)",
      .arg = "unix:PATH",
      .help = "admin socket (mode 0600): stats, conns,\n"
              "reload, eval, metrics, log-level, upgrade,\n"
              "shutdown",
      FLG(admin) },
    { .name = "metrics", .key = "metrics", .where = CALL,
      .type = LSV_OPT_STRING, .arg = "HOST:PORT",
      .help = "serve Prometheus metrics at GET /metrics,\n"
              "and GET /healthz (see --health)", FLG(metrics) },
    { .name = "health", .key = "health", .where = SETTING | CALL,
      .type = LSV_OPT_STRING, .arg = "HOST:PORT",
      .help = "serve GET /healthz alone (--metrics has it\n"
              "too): 200 ok while serving, 503 draining\n"
              "once a stop or an upgrade begins",
      FLG(health) },
    { .name = "watch", .key = "watch", .where = SETTING, .type = LSV_OPT_FLAG,
      .help = "reload when the script or its modules change", SRV(watch) },
    { .name = "handler-timeout", .key = "handler_timeout", .where = SETTING,
      .type = LSV_OPT_SECONDS, .def = "1", .arg = "SEC",
      .help = "stop a handler call, or a script's load,\n"
              "running longer (default %D; 0 = never): it\n"
              "fails like a handler error",
      SRV(handler_timeout) },
    { .name = "load-timeout", .key = "load_timeout", .where = SETTING,
      .type = LSV_OPT_SECONDS, .def = "30", .arg = "SEC",
      .help = "the same for on_load (default %D; 0 = never)",
      SRV(load_timeout) },
    { .name = "task-slice", .key = "task_slice", .where = SETTING,
      .type = LSV_OPT_COUNT, .min = 0, .max = 1LL << 30, .def = "10000",
      .arg = "N", .help = "a task yields to the loop every N Lua\n"
                          "instructions (default %D; 0 = never)",
      SRV(task_slice) },
    { .name = "lua-memory", .key = "lua_memory",
      .where = SETTING | LSV_OPT_ZERO, .type = LSV_OPT_BYTES,
      .min = 1LL << 20, .max = 1LL << 40, .arg = "BYTES",
      .help = "cap on the Lua state's memory: an allocation\n"
              "over it fails that call (default: no cap)",
      SRV(lua_memory) },
    { .name = "shared", .key = "shared", .where = SETTING,
      .type = LSV_OPT_DICTS, .action = add_shared, .arg = "NAME=SIZE",
      .want = "a table of NAME = SIZE, as in { cache = \"64m\" } (a size "
              "is bytes, or a number and k, m or g; at least 16k)",
      .help = "a dict of SIZE bytes (64k, 64m, 1g) that every\n"
              "worker shares as luaserv.shared.NAME\n"
              "(repeatable); it survives a reload" },
    { .name = "workers", .key = "workers", .where = SETTING,
      .type = LSV_OPT_COUNT, .min = 1, .max = 1024, .word = "auto",
      .def = "1", .arg = "N|auto",
      .help = "worker processes, each with its own loop and\n"
              "Lua state, under a master (default %D: one\n"
              "process; auto = one per online CPU)",
      SRV(workers) },
    { .name = "pid-file", .key = "pid_file", .where = SETTING,
      .type = LSV_OPT_STRING, .arg = "PATH",
      .help = "write the server's pid (the master's) to PATH\n"
              "once it serves; removed at a clean exit",
      FLG(pid_file) },
    { .name = "check", .type = LSV_OPT_FLAG,
      .help = "load SCRIPT, report problems, and exit", FLG(check) },
    { .name = "help", .short_name = 'h', .type = LSV_OPT_ACTION,
      .action = show_help, .help = "show this help" },
    { .name = "version", .short_name = 'V', .type = LSV_OPT_ACTION,
      .action = show_version, .help = "show the version" },
    /* Not in --help: for the docs spec and tools (docs/operations.md). */
    { .name = "list-options", .type = LSV_OPT_ACTION, .action = list_options },
    /* Configuration file only. */
    { .key = "handler", .where = SETTING | LISTEN, .type = LSV_OPT_STRING },
    { .key = "framing", .where = LISTEN, .type = LSV_OPT_FRAMING },
    { .key = "max_frame", .where = LISTEN, .type = LSV_OPT_COUNT, .min = 1,
      .max = UINT32_MAX, LST(max_frame) },
};

const int lsv_option_count =
    (int)(sizeof lsv_option_table / sizeof *lsv_option_table);

_Static_assert(sizeof lsv_option_table / sizeof *lsv_option_table <=
               LSV_OPT_ROWS_MAX,
               "lsv_flags_t.given has a bit per row");

/* --- --help and --list-options ------------------------------------------ */

/* Writes len bytes of a help line, with %D as o's default. */
static void put_help(FILE *f, const lsv_option_t *o, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 1 < len && s[i + 1] == 'D') {
            fputs(o->def ? o->def : "none", f);
            i++;
        } else {
            fputc(s[i], f);
        }
    }
    fputc('\n', f);
}

void lsv_options_usage(FILE *f)
{
    fprintf(f,
"usage: luaserv [options] [SCRIPT]\n"
"Serves the Lua handler SCRIPT (default " LSV_DEFAULT_SCRIPT ").\n"
"With no -l it listens on TCP and UDP port %d, all interfaces.\n"
"\n", LSV_DEFAULT_PORT);
    for (int i = 0; i < lsv_option_count; i++) {
        const lsv_option_t *o = &lsv_option_table[i];
        if (o->name == NULL || o->help == NULL) continue;
        char flag[64], lead[8] = "    ";
        if (o->short_name) snprintf(lead, sizeof lead, "-%c, ", o->short_name);
        snprintf(flag, sizeof flag, "--%s%s%s", o->name, o->arg ? " " : "",
                 o->arg ? o->arg : "");
        if (strlen(flag) > 22)   /* too long: its help on the next line */
            fprintf(f, "  %s%s\n%29s", lead, flag, "");
        else
            fprintf(f, "  %s%-22s ", lead, flag);
        for (const char *s = o->help, *nl;; s = nl + 1) {
            nl = strchr(s, '\n');
            put_help(f, o, s, nl ? (size_t)(nl - s) : strlen(s));
            if (nl == NULL) break;
            fprintf(f, "%29s", "");
        }
    }
    fputs(
"\n"
"SIGHUP reloads the handler scripts; SIGTERM and SIGINT stop gracefully.\n"
"A ready line per listener goes to stdout once it accepts (JSON with\n"
"--log-format json); the log goes to stderr.\n"
"Exit status: 0 after a clean shutdown, 1 when a listener cannot be\n"
"opened, 2 for bad options or a script that fails to load.\n", f);
}

static const char *const type_names[] = {
    "seconds", "bytes", "count", "flag", "string", "enum", "framing", "action",
    "dicts", "list"
};

/* --list-options: a row a line, tab-separated: flag, short flag, config
 * key, where the key goes, type, range, default ("-" for none). */
static void list_options(const lsv_option_t *o, const char *arg,
                         lsv_flags_t *f)
{
    (void)o; (void)arg; (void)f;
    for (int i = 0; i < lsv_option_count; i++) {
        const lsv_option_t *r = &lsv_option_table[i];
        char w[64] = "", range[64] = "-";
        static const char *const wheres[] = { "setting", "call", "listen" };
        for (int b = 0; b < 3; b++)
            if (r->where & (1u << b))
                snprintf(w + strlen(w), sizeof w - strlen(w), "%s%s",
                         w[0] ? "," : "", wheres[b]);
        if (r->type == LSV_OPT_BYTES || r->type == LSV_OPT_COUNT) {
            int n = snprintf(range, sizeof range, "%s%lld..",
                             r->where & LSV_OPT_ZERO ? "0," : "", r->min);
            if (r->max) snprintf(range + n, sizeof range - (size_t)n, "%lld",
                                 r->max);
        }
        char shortf[4] = "-";
        if (r->short_name)
            snprintf(shortf, sizeof shortf, "-%c", r->short_name);
        printf("%s%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r->name ? "--" : "-",
               r->name ? r->name : "", shortf, r->key ? r->key : "-",
               w[0] ? w : "-", type_names[r->type], range,
               r->def ? r->def : "-");
    }
    exit(0);
}

static void show_help(const lsv_option_t *o, const char *arg, lsv_flags_t *f)
{
    (void)o; (void)arg; (void)f;
    lsv_options_usage(stdout);
    exit(0);
}

static void show_version(const lsv_option_t *o, const char *arg,
                         lsv_flags_t *f)
{
    (void)o; (void)arg; (void)f;
    printf("luaserv %s (%s, libev %d.%d)\n", LSV_VERSION, LUA_RELEASE,
           ev_version_major(), ev_version_minor());
    exit(0);
}

static void add_listen(const lsv_option_t *o, const char *arg, lsv_flags_t *f)
{
    (void)o;
    if (f->nlisten == LSV_MAX_LISTEN)
        lsv_options_fail("too many -l (max %d)", LSV_MAX_LISTEN);
    f->listen[f->nlisten++] = arg;
}

static void add_shared(const lsv_option_t *o, const char *arg,
                       lsv_flags_t *f)
{
    char name[LSV_SHARED_NAME_MAX + 1];
    uint64_t bytes;
    (void)o;
    if (!lsv_option_shared(arg, name, sizeof name, &bytes))
        lsv_options_fail("--shared needs NAME=SIZE, a name of letters, digits "
                         "and _ and a size such as 64k, 64m or 1g (at least "
                         "16k), not '%s'", arg);
    if (f->nshared == LSV_MAX_SHARED)
        lsv_options_fail("too many --shared (max %d)", LSV_MAX_SHARED);
    f->shared[f->nshared++] = arg;
}

/* --- what the actions use -------------------------------------------- */

void lsv_options_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "luaserv: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    lsv_options_usage(stderr);
    exit(2);
}

int lsv_option_parse_size(const char *s, uint64_t *out)
{
    char *end;
    if (*s < '0' || *s > '9') return 0;
    errno = 0;
    unsigned long long n = strtoull(s, &end, 10);
    int shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    }
    if (errno || *end || n > (UINT64_MAX >> shift)) return 0;
    *out = (uint64_t)n << shift;
    return 1;
}

/* Whether the size a dict asks for is one: a size string or a whole
 * number, at least the smallest dict and at most 1 TiB. */
int lsv_option_dict_size_ok(uint64_t n)
{
    return n >= LSV_SHDICT_MIN_SIZE && n <= (1ull << 40);
}

int lsv_option_shared(const char *arg, char *name, size_t size,
                      uint64_t *bytes)
{
    const char *eq = strchr(arg, '=');
    if (eq == NULL || (size_t)(eq - arg) >= size) return 0;
    memcpy(name, arg, (size_t)(eq - arg));
    name[eq - arg] = '\0';
    return lsv_shared_name_ok(name) && lsv_option_parse_size(eq + 1, bytes) &&
           lsv_option_dict_size_ok(*bytes);
}

/* addr_fuzz.c: libFuzzer target for the listen-address parser,
 * lsv_net_parse (src/core/net.c), as -l, listen and luaserv.connect use it.
 *
 * The input is the address text (cut at its first NUL), in a buffer of
 * exactly its size. Beyond memory safety it checks the parser's contract:
 * on success a valid kind, a port in 0..65535, host and path terminated
 * within their arrays; on failure a message that starts "bad address" or
 * "empty address"; and that an address printed back in canonical form
 * (kind://[host]:port, kind:path) parses to the same thing. */
#include "lsv.h"
#include "net.h"

#include <stdio.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t n);

static void fail(const char *what, const char *spec)
{
    fprintf(stderr, "addr_fuzz: %s: '%s'\n", what, spec);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t n)
{
    const uint8_t *nul = memchr(in, 0, n);
    size_t len = nul ? (size_t)(nul - in) : n;
    char *spec = malloc(len + 1);
    if (spec == NULL) abort();
    memcpy(spec, in, len);
    spec[len] = '\0';

    lsv_addr_t a, b;
    char err[LSV_ERRLEN];
    memset(err, 0x55, sizeof err);
    if (lsv_net_parse(spec, &a, err) != LSV_OK) {
        if (memchr(err, '\0', sizeof err) == NULL)
            fail("error message not terminated", spec);
        if (strncmp(err, "bad address", 11) != 0 &&
            strncmp(err, "empty address", 13) != 0)
            fail("odd error message", spec);
        free(spec);
        return 0;
    }
    if (memchr(a.host, '\0', sizeof a.host) == NULL ||
        memchr(a.path, '\0', sizeof a.path) == NULL)
        fail("host or path not terminated", spec);

    char canon[sizeof a.host + sizeof a.path + 32];
    switch (a.kind) {
    case LSV_NET_TCP:
    case LSV_NET_UDP:
        if (a.port < 0 || a.port > 65535) fail("port out of range", spec);
        if (a.path[0]) fail("a path on an IP address", spec);
        /* brackets round a host with a colon, or one that starts with
         * '[' (which would read as the opening of brackets) */
        snprintf(canon, sizeof canon,
                 strchr(a.host, ':') || a.host[0] == '[' ? "%s://[%s]:%d"
                 : "%s://%s:%d", lsv_net_scheme(&a), a.host, a.port);
        break;
    case LSV_NET_UNIX:
    case LSV_NET_UNIXGRAM:
        if (a.path[0] == '\0') fail("an empty path", spec);
        if (a.host[0] || a.port) fail("a host on a unix address", spec);
        /* "unix:///p" reads as "/p", so an absolute path is written
         * after "//", which the parser drops again. */
        snprintf(canon, sizeof canon, "%s:%s%s", lsv_net_kind_name(a.kind),
                 a.path[0] == '/' ? "//" : "", a.path);
        break;
    default:
        fail("unknown kind", spec);
    }
    if (lsv_net_parse(canon, &b, err) != LSV_OK)
        fail("its canonical form does not parse", canon);
    if (memcmp(&a, &b, sizeof a) != 0)
        fail("its canonical form parses to another address", canon);
    free(spec);
    return 0;
}

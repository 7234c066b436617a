/* proxy_fuzz.c: libFuzzer target for the PROXY protocol header's parser
 * and builder (src/core/proxy.c).
 *
 * The input is the first bytes of a connection. Every call sees an
 * exact-size heap copy, so a read past the input is a heap overflow
 * AddressSanitizer reports. Beyond memory safety it checks proxy.h's
 * contract:
 * - a result is a length within the input, PARTIAL with a need past the
 *   input and within 16 + 65535, or BAD with a message;
 * - a parsed header is sane: version 1 or 2, its TLVs inside it and
 *   walkable to their end, both addresses of one family unless local;
 * - prefixes agree with the whole: before a header's length every prefix
 *   is PARTIAL, and once a prefix is BAD or a header, every longer one
 *   says the same (so reading in any pieces gives one answer);
 * - a header's addresses built again (lsv_proxy_build, same version)
 *   parse back to the same addresses. */
#include "lsv.h"
#include "proxy.h"

#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t n);

static void fail(const char *what, size_t n, ssize_t r)
{
    fprintf(stderr, "proxy_fuzz: %s (%zu bytes, result %zd)\n", what, n, r);
    abort();
}

/* lsv_proxy_parse on a private, exact-size copy of in[0, n); checks the
 * result against the contract. */
static ssize_t parse(const uint8_t *in, size_t n, lsv_proxy_hdr_t *h,
                     const char **err)
{
    char *copy = malloc(n ? n : 1);
    if (copy == NULL) abort();
    if (n) memcpy(copy, in, n);
    size_t need = 0;
    *err = NULL;
    ssize_t r = lsv_proxy_parse(copy, n, h, &need, err);
    if (r > 0) {
        if ((size_t)r > n) fail("header longer than the input", n, r);
        if (h->version != 1 && h->version != 2) fail("bad version", n, r);
        if (h->tlv_off > (size_t)r || h->tlv_len > (size_t)r - h->tlv_off)
            fail("TLVs outside the header", n, r);
        if (h->version == 1 && (h->tlv_off || h->tlv_len))
            fail("TLVs in a v1 header", n, r);
        if (!h->local && (h->src.ss_family != h->dst.ss_family ||
                          h->src_len == 0 || h->dst_len == 0 ||
                          h->src_len > sizeof h->src ||
                          h->dst_len > sizeof h->dst))
            fail("bad addresses", n, r);
        if (h->local && (h->src_len || h->dst_len))
            fail("addresses on a local header", n, r);
        size_t off = 0, vlen;
        const char *v;
        int type, t;
        while ((t = lsv_proxy_next_tlv(copy + h->tlv_off, h->tlv_len, &off,
                                       &type, &v, &vlen)) == 1)
            ;
        if (t != 0 || off != h->tlv_len)
            fail("accepted TLVs that do not walk to their end", n, r);
    } else if (r == LSV_PROXY_PARTIAL) {
        if (need <= n || need > LSV_PROXY_V2_MAX)
            fail("PARTIAL with a need inside the input", n, r);
    } else if (r == LSV_PROXY_BAD) {
        if (*err == NULL || (*err)[0] == '\0')
            fail("BAD without a message", n, r);
    } else {
        fail("unknown result", n, r);
    }
    free(copy);
    return r;
}

/* The prefix in[0, k) must agree with the whole input's result r. */
static void check_prefix(const uint8_t *in, size_t k, ssize_t r,
                         const char *err)
{
    lsv_proxy_hdr_t h;
    const char *e;
    ssize_t p = parse(in, k, &h, &e);
    if (r > 0 && k < (size_t)r && p != LSV_PROXY_PARTIAL)
        fail("a prefix of a header is not PARTIAL", k, p);
    if (p == LSV_PROXY_PARTIAL) return;
    if (p != r) fail("a prefix decided otherwise than the whole", k, p);
    if (p == LSV_PROXY_BAD && strcmp(e, err) != 0)
        fail("a prefix is BAD for another reason", k, p);
}

/* Whether the addresses (and ports) x and y of family af are the same;
 * a UNIX path is carried up to its first NUL (an abstract name or one
 * with a NUL inside comes back shorter), so it is compared up to it. */
static int same_addr(int af, const struct sockaddr_storage *x,
                     const struct sockaddr_storage *y)
{
    if (af == AF_INET) {
        const struct sockaddr_in *a = (const void *)x, *b = (const void *)y;
        return memcmp(&a->sin_addr, &b->sin_addr, 4) == 0 &&
               a->sin_port == b->sin_port;
    }
    if (af == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)x, *b = (const void *)y;
        return memcmp(&a->sin6_addr, &b->sin6_addr, 16) == 0 &&
               a->sin6_port == b->sin6_port;
    }
    const struct sockaddr_un *a = (const void *)x, *b = (const void *)y;
    return strncmp(a->sun_path, b->sun_path, sizeof a->sun_path) == 0;
}

/* Builds h's addresses again at its version and parses them back. */
static void check_rebuild(const lsv_proxy_hdr_t *h)
{
    char out[LSV_PROXY_V2_HEAD + 216];
    const struct sockaddr *s = (const struct sockaddr *)&h->src;
    const struct sockaddr *d = (const struct sockaddr *)&h->dst;
    ssize_t n = lsv_proxy_build(out, sizeof out, h->version,
                                h->local ? NULL : s, h->local ? NULL : d);
    if (n <= 0) fail("cannot build a header that parsed", 0, n);
    lsv_proxy_hdr_t b;
    const char *err;
    if (parse((const uint8_t *)out, (size_t)n, &b, &err) != n)
        fail("a built header does not parse", (size_t)n, n);
    if (b.version != h->version || b.local != h->local)
        fail("rebuilt: another version or command", (size_t)n, n);
    if (!h->local && (b.src.ss_family != h->src.ss_family ||
                      !same_addr(h->src.ss_family, &h->src, &b.src) ||
                      !same_addr(h->src.ss_family, &h->dst, &b.dst)))
        fail("rebuilt addresses differ", (size_t)n, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t n)
{
    lsv_proxy_hdr_t h;
    const char *err;
    ssize_t r = parse(in, n, &h, &err);
    /* every prefix when short, else a spread of them (the inputs here
     * reach 64 KiB, and all of them would be quadratic) */
    size_t step = n <= 512 ? 1 : n / 256;
    for (size_t k = 0; k < n; k += step)
        check_prefix(in, k, r, err);
    if (r > 0) {
        check_prefix(in, (size_t)r - 1, r, err);
        check_prefix(in, (size_t)r, r, err);
        check_rebuild(&h);
    }
    return 0;
}

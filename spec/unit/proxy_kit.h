/* proxy_kit.h: helpers of proxy_test.c (the PROXY header's unit tests):
 * a checked parse, address checks, split and fault drivers, a v2 header
 * builder and a reference CRC32C. Header only, included once, after tap.h.
 */
#ifndef LSV_PROXY_KIT_H
#define LSV_PROXY_KIT_H

#include "lsv.h"
#include "proxy.h"
#include "tap.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#define S(lit) lit, sizeof(lit) - 1

/* lsv_proxy_parse on an exact-size heap copy of p[0, n), so that a read
 * past n is an overflow the ASan build reports; checks the contract every
 * result keeps. */
static inline ssize_t parse(const char *p, size_t n, lsv_proxy_hdr_t *h,
                            size_t *need, const char **err)
{
    char *copy = malloc(n ? n : 1);
    if (copy == NULL) abort();
    memcpy(copy, p, n);
    size_t nd = 12345;
    const char *e = "unset";
    lsv_proxy_hdr_t scratch;
    if (h == NULL) h = &scratch;
    ssize_t r = lsv_proxy_parse(copy, n, h, &nd, &e);
    free(copy);
    CHECKF(r >= LSV_PROXY_BAD && r <= (ssize_t)n,
           "result %zd for %zu bytes", r, n);
    if (r == LSV_PROXY_BAD)
        CHECKF(e != NULL && strlen(e) > 0, "BAD without a message");
    if (r == LSV_PROXY_PARTIAL)
        CHECKF(nd > n && nd <= LSV_PROXY_V2_MAX, "PARTIAL need %zu for %zu",
               nd, n);
    if (need) *need = nd;
    if (err) *err = e;
    return r;
}

static inline const char *ip_of(const struct sockaddr_storage *sa,
                                char *buf, size_t cap, unsigned *port)
{
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        *port = ntohs(in->sin_port);
        return inet_ntop(AF_INET, &in->sin_addr, buf, (socklen_t)cap);
    }
    if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        *port = ntohs(in6->sin6_port);
        return inet_ntop(AF_INET6, &in6->sin6_addr, buf, (socklen_t)cap);
    }
    *port = 0;
    return "?";
}

/* Checks that *h names src ip:port -> dst ip:port of family af. */
static inline void check_addrs(const lsv_proxy_hdr_t *h, int af,
                               const char *sip, unsigned sport,
                               const char *dip, unsigned dport)
{
    char a[64], b[64];
    unsigned sp, dp;
    CHECKF(h->src.ss_family == af && h->dst.ss_family == af,
           "families %d %d, want %d", h->src.ss_family, h->dst.ss_family, af);
    socklen_t want = af == AF_INET ? sizeof(struct sockaddr_in)
                                   : sizeof(struct sockaddr_in6);
    CHECK(h->src_len == want && h->dst_len == want);
    const char *s = ip_of(&h->src, a, sizeof a, &sp);
    const char *d = ip_of(&h->dst, b, sizeof b, &dp);
    CHECKF(s && strcmp(s, sip) == 0 && sp == sport, "src %s:%u, want %s:%u",
           s, sp, sip, sport);
    CHECKF(d && strcmp(d, dip) == 0 && dp == dport, "dst %s:%u, want %s:%u",
           d, dp, dip, dport);
}

/* Every proper prefix of the header hdr[0, n) is PARTIAL with a need in
 * (k, n] (exactly n once a v2 header's 16 bytes are in), the whole is n,
 * and the whole followed by client bytes is still n. */
static inline void check_prefixes(const char *hdr, size_t n)
{
    lsv_proxy_hdr_t h;
    size_t need;
    for (size_t k = 0; k < n; k++) {
        ssize_t r = parse(hdr, k, &h, &need, NULL);
        CHECKF(r == LSV_PROXY_PARTIAL, "prefix %zu of %zu: %zd", k, n, r);
        if (r != LSV_PROXY_PARTIAL) return;
        CHECKF(need > k && need <= n, "prefix %zu of %zu: need %zu", k, n,
               need);
        if (hdr[0] == '\r' && k >= LSV_PROXY_V2_HEAD)
            CHECKF(need == n, "v2 prefix %zu: need %zu, want %zu", k, need, n);
    }
    CHECKF(parse(hdr, n, &h, NULL, NULL) == (ssize_t)n, "whole of %zu", n);
    char *more = malloc(n + 300);
    if (more == NULL) abort();
    memcpy(more, hdr, n);
    memset(more + n, 'x', 300);
    memcpy(more + n, "\r\n\r\nPROXY TCP4", 14);
    CHECKF(parse(more, n + 300, &h, NULL, NULL) == (ssize_t)n,
           "with data after it, of %zu", n);
    free(more);
}

/* Appends a TLV to the header being built at b (length *n). */
static inline void tlv(unsigned char *b, size_t *n, int type,
                       const void *v, size_t len)
{
    b[(*n)++] = (unsigned char)type;
    b[(*n)++] = (unsigned char)(len >> 8);
    b[(*n)++] = (unsigned char)len;
    if (len) memcpy(b + *n, v, len);
    *n += len;
}

/* Starts a v2 header at b: signature, ver_cmd, fam, length 0 for now;
 * returns 16. v2_len() sets the length from the final size. */
static inline size_t v2_start(unsigned char *b, int ver_cmd, int fam)
{
    memcpy(b, "\r\n\r\n\0\r\nQUIT\n", 12);
    b[12] = (unsigned char)ver_cmd;
    b[13] = (unsigned char)fam;
    b[14] = b[15] = 0;
    return 16;
}

static inline void v2_len(unsigned char *b, size_t n)
{
    b[14] = (unsigned char)((n - 16) >> 8);
    b[15] = (unsigned char)(n - 16);
}

static inline size_t put_bytes(unsigned char *b, size_t n, const void *v,
                               size_t len)
{
    memcpy(b + n, v, len);
    return n + len;
}

/* An INET block 192.0.2.1:4660 -> 198.51.100.7:443 at b + n. */
static inline size_t inet_block(unsigned char *b, size_t n)
{
    static const unsigned char blk[12] = { 192, 0, 2, 1, 198, 51, 100, 7,
                                           0x12, 0x34, 0x01, 0xbb };
    return put_bytes(b, n, blk, sizeof blk);
}

/* A reference CRC32C, bit at a time (not the table proxy.c uses). */
static inline uint32_t ref_crc32c(const unsigned char *p, size_t n)
{
    uint32_t crc = 0xffffffff;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82f63b78 & (0u - (crc & 1)));
    }
    return ~crc;
}

/* Fills the 4 bytes at b + voff (zero now) with the CRC32C of b[0, n). */
static inline void set_crc(unsigned char *b, size_t n, size_t voff)
{
    uint32_t c = ref_crc32c(b, n);
    b[voff] = (unsigned char)(c >> 24);
    b[voff + 1] = (unsigned char)(c >> 16);
    b[voff + 2] = (unsigned char)(c >> 8);
    b[voff + 3] = (unsigned char)c;
}

/* The bad header in[0, n) is PARTIAL for each prefix shorter than at,
 * and BAD with the message want from at on, however much more arrives. */
static inline void check_bad(const char *in, size_t n, size_t at,
                             const char *want)
{
    for (size_t k = 0; k <= n; k++) {
        const char *err = NULL;
        ssize_t r = parse(in, k, NULL, NULL, &err);
        if (k < at)
            CHECKF(r == LSV_PROXY_PARTIAL, "%s: %zd (%s) at %zu, BAD only "
                   "at %zu", want, r, err ? err : "", k, at);
        else
            CHECKF(r == LSV_PROXY_BAD && err && strcmp(err, want) == 0,
                   "%zd (%s) at %zu, want BAD (%s)", r, err ? err : "", k,
                   want);
    }
}

#endif

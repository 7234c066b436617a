/* proxy.c: the PROXY protocol header, v1 and v2: parse and build; pure,
 * see proxy.h. */
#include "lsv.h"
#include "proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

/* v2's signature (proxy-protocol.txt 2.2), and the bytes after it. */
static const char v2_sig[12] = "\r\n\r\n\0\r\nQUIT\n";
#define V2_CMD_LOCAL 0x0
#define V2_CMD_PROXY 0x1
#define V2_UNIX_PATH 108                /* each path's bytes in a v2 block */
#define V1_MIN 15                       /* "PROXY UNKNOWN\r\n" */

static ssize_t bad(const char **err, const char *why)
{
    *err = why;
    return LSV_PROXY_BAD;
}

/* ---- CRC32C (Castagnoli, RFC 4960 appendix B) ------------------------------
 * v2's CRC32C TLV holds it over the whole header with the TLV's own value
 * zeroed. Four bits at a time from a 16-entry table: a header is checked
 * once per connection, so the small table is worth more than speed. */

static const uint32_t crc32c_nibble[16] = {
    0x00000000, 0x105ec76f, 0x20bd8ede, 0x30e349b1,
    0x417b1dbc, 0x5125dad3, 0x61c69362, 0x7198540d,
    0x82f63b78, 0x92a8fc17, 0xa24bb5a6, 0xb21572c9,
    0xc38d26c4, 0xd3d3e1ab, 0xe330a81a, 0xf36e6f75
};

static uint32_t crc32c_add(uint32_t crc, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        crc = (crc >> 4) ^ crc32c_nibble[crc & 15];
        crc = (crc >> 4) ^ crc32c_nibble[crc & 15];
    }
    return crc;
}

/* The CRC32C of the header p[0, n) with the four bytes at voff taken as
 * zeros (the checksum's own place). */
static uint32_t crc32c_header(const char *p, size_t n, size_t voff)
{
    static const unsigned char zeros[4];
    const unsigned char *u = (const unsigned char *)p;
    uint32_t crc = 0xffffffff;
    crc = crc32c_add(crc, u, voff);
    crc = crc32c_add(crc, zeros, 4);
    crc = crc32c_add(crc, u + voff + 4, n - voff - 4);
    return crc ^ 0xffffffff;
}

/* ---- v1 -------------------------------------------------------------------
 * "PROXY TCP4|TCP6 src dst sport dport\r\n" or "PROXY UNKNOWN...\r\n",
 * single spaces, at most 107 bytes. Fields are checked as they arrive, so
 * a prefix that no valid header starts with is refused at once: a field
 * still open is checked for its characters and length, a closed one in
 * full (inet_pton, port range). */

enum { F_PROTO, F_SRC, F_DST, F_SPORT, F_DPORT, F_COUNT };
enum { P_TCP4 = 1, P_TCP6, P_UNKNOWN };

/* Which protocol the field s[0, len) names; with open set (the field may
 * go on), 0 when it is a prefix of a name, -1 when it is none. */
static int v1_proto(const char *s, size_t len, int open)
{
    static const char *const names[] = { "TCP4", "TCP6", "UNKNOWN" };
    int prefix = 0;
    for (int k = 0; k < 3; k++) {
        size_t nl = strlen(names[k]);
        if (len <= nl && memcmp(s, names[k], len) == 0) {
            if (len == nl && !open) return k + 1;
            prefix = 1;
        }
    }
    return open && prefix ? 0 : -1;
}

/* Checks the address field s[0, len) of family af: 1 fine (*sa filled when
 * !open), 0 not an address. An open field is only checked for what may
 * still become one: its characters and its length. */
static int v1_addr(const char *s, size_t len, int open, int af,
                   struct sockaddr_storage *sa, socklen_t *salen)
{
    size_t max = af == AF_INET ? 15 : 45;       /* dotted quad, v6 + quad */
    if (len > max || (!open && len == 0)) return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        int ok = (c >= '0' && c <= '9') || c == '.' ||
                 (af == AF_INET6 && (c == ':' || (c >= 'a' && c <= 'f') ||
                                     (c >= 'A' && c <= 'F')));
        if (!ok) return 0;
    }
    if (open) return 1;
    char text[46];
    memcpy(text, s, len);
    text[len] = '\0';
    memset(sa, 0, sizeof *sa);
    if (af == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)sa;
        in->sin_family = AF_INET;
        *salen = sizeof *in;
        return inet_pton(AF_INET, text, &in->sin_addr) == 1;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
    in6->sin6_family = AF_INET6;
    *salen = sizeof *in6;
    return inet_pton(AF_INET6, text, &in6->sin6_addr) == 1;
}

/* Checks the port field s[0, len): 1 fine (*port set when !open), 0 not
 * a port: decimal 0..65535, no leading zero but in "0" itself. */
static int v1_port(const char *s, size_t len, int open, unsigned *port)
{
    if (len > 5 || (!open && len == 0)) return 0;
    if (len > 1 && s[0] == '0') return 0;
    unsigned v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535) return 0;
    *port = v;
    return 1;
}

static void set_port(struct sockaddr_storage *sa, unsigned port)
{
    if (sa->ss_family == AF_INET)
        ((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
}

/* UNKNOWN's rest, from p[i]: a space and any bytes but CR and LF, or
 * nothing; then CRLF. Returns the header's length, PARTIAL or BAD. */
static ssize_t v1_unknown(const char *p, size_t lim, size_t i,
                          lsv_proxy_hdr_t *h, const char **err)
{
    if (p[i] == ' ')
        while (++i < lim && p[i] != '\r' && p[i] != '\n')
            ;
    if (i < lim && p[i] != '\r') return bad(err, "v1: bad line ending");
    if (i + 1 >= lim) return LSV_PROXY_PARTIAL;
    if (p[i + 1] != '\n') return bad(err, "v1: bad line ending");
    memset(h, 0, sizeof *h);
    h->version = 1;
    h->local = 1;
    return (ssize_t)(i + 2);
}

/* Field f, s[0, len), open or closed: 1 fine, else BAD with *err set. */
static int v1_field(int f, const char *s, size_t len, int open, int *proto,
                    lsv_proxy_hdr_t *t, unsigned *ports, const char **err)
{
    int af = *proto == P_TCP4 ? AF_INET : AF_INET6;
    switch (f) {
    case F_PROTO:
        *proto = v1_proto(s, len, open);
        if (*proto < 0) *err = "v1: bad protocol";
        return *proto >= 0;
    case F_SRC:
    case F_DST:
        if (v1_addr(s, len, open, af, f == F_SRC ? &t->src : &t->dst,
                    f == F_SRC ? &t->src_len : &t->dst_len))
            return 1;
        *err = "v1: bad address";
        return 0;
    default:
        if (v1_port(s, len, open, &ports[f - F_SPORT])) return 1;
        *err = "v1: bad port";
        return 0;
    }
}

static ssize_t parse_v1(const char *p, size_t n, lsv_proxy_hdr_t *h,
                        size_t *need, const char **err)
{
    size_t lim = n < LSV_PROXY_V1_MAX ? n : LSV_PROXY_V1_MAX;
    size_t i = 0;
    for (; i < 6 && i < lim; i++)
        if (p[i] != "PROXY "[i]) return bad(err, "no PROXY header");
    lsv_proxy_hdr_t t;
    memset(&t, 0, sizeof t);
    unsigned ports[2] = { 0, 0 };
    int proto = 0;
    for (int f = 0; i < lim && f < F_COUNT; f++) {
        size_t start = i;
        while (i < lim && p[i] != ' ' && p[i] != '\r' && p[i] != '\n') i++;
        int open = i == lim;
        if (!v1_field(f, p + start, i - start, open, &proto, &t, ports, err))
            return LSV_PROXY_BAD;
        if (open) break;
        if (f == F_PROTO && proto == P_UNKNOWN) {
            ssize_t r = v1_unknown(p, lim, i, h, err);
            if (r != LSV_PROXY_PARTIAL) return r;
            break;
        }
        if (f < F_DPORT) {
            if (p[i] != ' ') return bad(err, "v1: too few fields");
            i++;
            continue;
        }
        if (p[i] == ' ') return bad(err, "v1: too many fields");
        if (p[i] != '\r') return bad(err, "v1: bad line ending");
        if (i + 1 == lim) break;
        if (p[i + 1] != '\n') return bad(err, "v1: bad line ending");
        set_port(&t.src, ports[0]);
        set_port(&t.dst, ports[1]);
        t.version = 1;
        *h = t;
        return (ssize_t)(i + 2);
    }
    if (n >= LSV_PROXY_V1_MAX) return bad(err, "v1: header over 107 bytes");
    *need = n + 1 > V1_MIN ? n + 1 : V1_MIN;
    return LSV_PROXY_PARTIAL;
}

/* ---- v2 -------------------------------------------------------------------
 * 16 bytes: the signature, version and command, family and transport, the
 * length of what follows (big endian); then the address block, then TLVs.
 */

/* The address block's length for v2's family byte fam, or -1 for a family
 * and transport the spec does not define (0x00, 0x11, 0x12, 0x21, 0x22,
 * 0x31 and 0x32 are). */
static int v2_addr_len(unsigned char fam)
{
    unsigned af = fam >> 4, tr = fam & 15;
    if (fam == 0x00) return 0;
    if (tr < 1 || tr > 2) return -1;
    switch (af) {
    case 1: return 12;
    case 2: return 36;
    case 3: return 2 * V2_UNIX_PATH;
    default: return -1;
    }
}

/* A v2 UNIX path: 108 bytes, NUL-padded; a first NUL with more after it is
 * an abstract name (Linux), kept up to its last non-NUL byte. */
static void v2_unix(const char *b, struct sockaddr_storage *sa,
                    socklen_t *salen)
{
    struct sockaddr_un *un = (struct sockaddr_un *)sa;
    size_t len = V2_UNIX_PATH;
    if (b[0] != '\0') {
        const char *z = memchr(b, '\0', V2_UNIX_PATH);
        if (z != NULL) len = (size_t)(z - b);
    } else {
        while (len > 0 && b[len - 1] == '\0') len--;
    }
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, b, V2_UNIX_PATH < sizeof un->sun_path
                            ? V2_UNIX_PATH : sizeof un->sun_path);
    *salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
}

/* Fills t's src and dst from the address block b of family af (1..3). */
static void v2_addrs(unsigned af, const char *b, lsv_proxy_hdr_t *t)
{
    if (af == 1) {
        struct sockaddr_in *s = (struct sockaddr_in *)&t->src;
        struct sockaddr_in *d = (struct sockaddr_in *)&t->dst;
        s->sin_family = d->sin_family = AF_INET;
        memcpy(&s->sin_addr, b, 4);
        memcpy(&d->sin_addr, b + 4, 4);
        memcpy(&s->sin_port, b + 8, 2);
        memcpy(&d->sin_port, b + 10, 2);
        t->src_len = t->dst_len = sizeof *s;
    } else if (af == 2) {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&t->src;
        struct sockaddr_in6 *d = (struct sockaddr_in6 *)&t->dst;
        s->sin6_family = d->sin6_family = AF_INET6;
        memcpy(&s->sin6_addr, b, 16);
        memcpy(&d->sin6_addr, b + 16, 16);
        memcpy(&s->sin6_port, b + 32, 2);
        memcpy(&d->sin6_port, b + 34, 2);
        t->src_len = t->dst_len = sizeof *s;
    } else {
        v2_unix(b, &t->src, &t->src_len);
        v2_unix(b + V2_UNIX_PATH, &t->dst, &t->dst_len);
    }
}

/* Walks the TLVs of the whole header p[0, total) at p[off, total): each
 * fits, a CRC32C is 4 bytes and matches, an SSL TLV has its 5 bytes and
 * well-formed sub-TLVs. Returns 0, or BAD with *err set. */
static ssize_t v2_tlvs(const char *p, size_t total, size_t off,
                       const char **err)
{
    const char *t = p + off, *v;
    size_t n = total - off, at = 0, vlen;
    int type, r;
    while ((r = lsv_proxy_next_tlv(t, n, &at, &type, &v, &vlen)) == 1) {
        if (type == LSV_PP2_TYPE_CRC32C) {
            if (vlen != 4) return bad(err, "v2: bad CRC32C TLV");
            const unsigned char *u = (const unsigned char *)v;
            uint32_t want = (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 |
                            (uint32_t)u[2] << 8 | u[3];
            if (crc32c_header(p, total, (size_t)(v - p)) != want)
                return bad(err, "v2: CRC32C mismatch");
        } else if (type == LSV_PP2_TYPE_SSL) {
            size_t sat = 0, slen;
            const char *sv;
            int st, sr;
            if (vlen < 5) return bad(err, "v2: bad SSL TLV");
            while ((sr = lsv_proxy_next_tlv(v + 5, vlen - 5, &sat, &st, &sv,
                                            &slen)) == 1)
                ;
            if (sr < 0) return bad(err, "v2: bad SSL TLV");
        }
    }
    return r < 0 ? bad(err, "v2: TLV past the header's end") : 0;
}

static ssize_t parse_v2(const char *p, size_t n, lsv_proxy_hdr_t *h,
                        size_t *need, const char **err)
{
    if (memcmp(p, v2_sig, n < 12 ? n : 12) != 0)
        return bad(err, "no PROXY header");
    const unsigned char *u = (const unsigned char *)p;
    if (n > 12 && u[12] >> 4 != 2) return bad(err, "v2: bad version");
    if (n > 12 && (u[12] & 15) > V2_CMD_PROXY)
        return bad(err, "v2: bad command");
    int cmd = n > 12 ? u[12] & 15 : 0;
    if (n > 13 && cmd == V2_CMD_PROXY && v2_addr_len(u[13]) < 0)
        return bad(err, "v2: bad address family");
    if (n < LSV_PROXY_V2_HEAD) {
        *need = LSV_PROXY_V2_HEAD;
        return LSV_PROXY_PARTIAL;
    }
    size_t len = (size_t)u[14] << 8 | u[15];
    size_t total = LSV_PROXY_V2_HEAD + len;
    int alen = v2_addr_len(u[13]);
    if (cmd == V2_CMD_PROXY && (size_t)alen > len)
        return bad(err, "v2: address block over the declared length");
    if (n < total) {
        *need = total;
        return LSV_PROXY_PARTIAL;
    }
    lsv_proxy_hdr_t t;
    memset(&t, 0, sizeof t);
    t.version = 2;
    t.local = cmd == V2_CMD_LOCAL || u[13] == 0x00;
    /* LOCAL: the block is the balancer's own business and its family is
     * ignored (2.2); its TLVs are read only when the family says where
     * they start. */
    if (alen < 0 || (size_t)alen > len) {
        *h = t;
        return (ssize_t)total;
    }
    t.dgram = (u[13] & 15) == 2;
    if (!t.local) v2_addrs(u[13] >> 4, p + LSV_PROXY_V2_HEAD, &t);
    t.tlv_off = LSV_PROXY_V2_HEAD + (size_t)alen;
    t.tlv_len = total - t.tlv_off;
    if (v2_tlvs(p, total, t.tlv_off, err) != 0) return LSV_PROXY_BAD;
    *h = t;
    return (ssize_t)total;
}

/* ---- the interface ------------------------------------------------------ */

ssize_t lsv_proxy_parse(const char *p, size_t n, lsv_proxy_hdr_t *h,
                        size_t *need, const char **err)
{
    *need = 0;
    *err = NULL;
    if (n == 0) {
        *need = V1_MIN;
        return LSV_PROXY_PARTIAL;
    }
    if (p[0] == 'P') return parse_v1(p, n, h, need, err);
    if (p[0] == '\r') return parse_v2(p, n, h, need, err);
    return bad(err, "no PROXY header");
}

int lsv_proxy_next_tlv(const char *t, size_t n, size_t *off, int *type,
                       const char **v, size_t *vlen)
{
    size_t at = *off;
    if (at >= n) return 0;
    if (n - at < 3) return -1;
    const unsigned char *u = (const unsigned char *)t + at;
    size_t len = (size_t)u[1] << 8 | u[2];
    if (len > n - at - 3) return -1;
    *type = u[0];
    *v = t + at + 3;
    *vlen = len;
    *off = at + 3 + len;
    return 1;
}

/* v1's line for src and dst, of one family (AF_INET or AF_INET6). */
static ssize_t build_v1(char *out, size_t cap, const struct sockaddr *src,
                        const struct sockaddr *dst)
{
    char a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];
    unsigned sp, dp;
    if (src->sa_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)src;
        const struct sockaddr_in *d = (const struct sockaddr_in *)dst;
        inet_ntop(AF_INET, &s->sin_addr, a, sizeof a);
        inet_ntop(AF_INET, &d->sin_addr, b, sizeof b);
        sp = ntohs(s->sin_port);
        dp = ntohs(d->sin_port);
    } else {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)src;
        const struct sockaddr_in6 *d = (const struct sockaddr_in6 *)dst;
        inet_ntop(AF_INET6, &s->sin6_addr, a, sizeof a);
        inet_ntop(AF_INET6, &d->sin6_addr, b, sizeof b);
        sp = ntohs(s->sin6_port);
        dp = ntohs(d->sin6_port);
    }
    char line[LSV_PROXY_V1_MAX + 32];       /* room for snprintf's NUL */
    int r = snprintf(line, sizeof line, "PROXY %s %s %s %u %u\r\n",
                     src->sa_family == AF_INET ? "TCP4" : "TCP6", a, b, sp,
                     dp);
    if (r < 0 || (size_t)r > cap || r > LSV_PROXY_V1_MAX) return -1;
    memcpy(out, line, (size_t)r);
    return r;
}

/* v2's address block for src and dst into b (room checked by the caller);
 * returns its length. */
static size_t build_v2_addrs(unsigned char *b, const struct sockaddr *src,
                             const struct sockaddr *dst)
{
    if (src->sa_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)src;
        const struct sockaddr_in *d = (const struct sockaddr_in *)dst;
        memcpy(b, &s->sin_addr, 4);
        memcpy(b + 4, &d->sin_addr, 4);
        memcpy(b + 8, &s->sin_port, 2);
        memcpy(b + 10, &d->sin_port, 2);
        return 12;
    }
    if (src->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)src;
        const struct sockaddr_in6 *d = (const struct sockaddr_in6 *)dst;
        memcpy(b, &s->sin6_addr, 16);
        memcpy(b + 16, &d->sin6_addr, 16);
        memcpy(b + 32, &s->sin6_port, 2);
        memcpy(b + 34, &d->sin6_port, 2);
        return 36;
    }
    const struct sockaddr_un *s = (const struct sockaddr_un *)src;
    const struct sockaddr_un *d = (const struct sockaddr_un *)dst;
    memset(b, 0, 2 * V2_UNIX_PATH);
    memcpy(b, s->sun_path, strnlen(s->sun_path, sizeof s->sun_path));
    memcpy(b + V2_UNIX_PATH, d->sun_path,
           strnlen(d->sun_path, sizeof d->sun_path));
    return 2 * V2_UNIX_PATH;
}

ssize_t lsv_proxy_build(char *out, size_t cap, int version,
                        const struct sockaddr *src, const struct sockaddr *dst)
{
    if (version != 1 && version != 2) return -1;
    if (src != NULL && (dst == NULL || src->sa_family != dst->sa_family))
        return -1;
    int af = src != NULL ? src->sa_family : AF_UNSPEC;
    if (af != AF_UNSPEC && af != AF_INET && af != AF_INET6 &&
        !(version == 2 && af == AF_UNIX))
        return -1;
    if (version == 1) {
        if (af != AF_UNSPEC) return build_v1(out, cap, src, dst);
        if (cap < V1_MIN) return -1;
        memcpy(out, "PROXY UNKNOWN\r\n", V1_MIN);
        return V1_MIN;
    }
    size_t alen = af == AF_INET ? 12 : af == AF_INET6 ? 36
                : af == AF_UNIX ? 2 * V2_UNIX_PATH : 0;
    if (cap < LSV_PROXY_V2_HEAD + alen) return -1;
    unsigned char *b = (unsigned char *)out;
    memcpy(b, v2_sig, 12);
    b[12] = af == AF_UNSPEC ? 0x20 | V2_CMD_LOCAL : 0x20 | V2_CMD_PROXY;
    b[13] = af == AF_INET ? 0x11 : af == AF_INET6 ? 0x21
          : af == AF_UNIX ? 0x31 : 0x00;
    b[14] = (unsigned char)(alen >> 8);
    b[15] = (unsigned char)alen;
    if (af != AF_UNSPEC) build_v2_addrs(b + LSV_PROXY_V2_HEAD, src, dst);
    return (ssize_t)(LSV_PROXY_V2_HEAD + alen);
}

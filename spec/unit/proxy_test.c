/* proxy_test.c: unit tests of the PROXY protocol header's parser and
 * builder (proxy.c), printed as TAP. */
#include "lsv.h"
#include "proxy.h"
#include "tap.h"
#include "guard.h"
#include "proxy_kit.h"

#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- v1 ----------------------------------------------------------------- */

static void test_v1_tcp4(void)
{
    static const char hdr[] = "PROXY TCP4 192.168.0.1 10.0.0.2 56324 443\r\n";
    lsv_proxy_hdr_t h;
    memset(&h, 0x55, sizeof h);
    CHECK(parse(S("PROXY TCP4 192.168.0.1 10.0.0.2 56324 443\r\nGET /"), &h,
                NULL, NULL) == (ssize_t)sizeof hdr - 1);
    CHECK(h.version == 1 && h.local == 0 && h.dgram == 0);
    CHECK(h.tlv_off == 0 && h.tlv_len == 0);
    check_addrs(&h, AF_INET, "192.168.0.1", 56324, "10.0.0.2", 443);
    CHECK(parse(S("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n"), &h, NULL,
                NULL) == 44);
    check_addrs(&h, AF_INET, "0.0.0.0", 0, "255.255.255.255", 65535);
    check_prefixes(hdr, sizeof hdr - 1);
    test_done("v1 TCP4: addresses, ports, length; every prefix is PARTIAL");
}

static void test_v1_tcp6(void)
{
    static const char hdr[] = "PROXY TCP6 2001:db8::1 ::1 65535 0\r\n";
    static const char longest[] =
        "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    static const char too_long[] =
        "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
        "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 65535 65535\r\n";
    lsv_proxy_hdr_t h;
    CHECK(parse(hdr, sizeof hdr - 1, &h, NULL, NULL) ==
          (ssize_t)sizeof hdr - 1);
    CHECK(h.version == 1 && h.local == 0);
    check_addrs(&h, AF_INET6, "2001:db8::1", 65535, "::1", 0);
    check_prefixes(hdr, sizeof hdr - 1);
    CHECK(sizeof longest - 1 == 104);
    CHECK(parse(longest, sizeof longest - 1, &h, NULL, NULL) == 104);
    check_addrs(&h, AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                65535, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
    check_prefixes(longest, sizeof longest - 1);
    const char *err;
    CHECK(parse(too_long, sizeof too_long - 1, &h, NULL, &err) ==
          LSV_PROXY_BAD && strcmp(err, "v1: header over 107 bytes") == 0);
    CHECK(parse(S("PROXY TCP6 ::ffff:10.0.0.1 ::ffff:10.0.0.2 1 2\r\n"), &h,
                NULL, NULL) > 0);
    check_addrs(&h, AF_INET6, "::ffff:10.0.0.1", 1, "::ffff:10.0.0.2", 2);
    test_done("v1 TCP6: addresses, ports; a 104-byte line, a 116-byte one BAD");
}

static void test_v1_unknown(void)
{
    static const char minimal[] = "PROXY UNKNOWN\r\n";
    static const char longest[] =
        "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    lsv_proxy_hdr_t h;
    memset(&h, 0x55, sizeof h);
    CHECK(parse(minimal, sizeof minimal - 1, &h, NULL, NULL) == 15);
    CHECK(h.version == 1 && h.local == 1 && h.src_len == 0 &&
          h.dst_len == 0 && h.tlv_len == 0);
    check_prefixes(minimal, sizeof minimal - 1);
    CHECK(sizeof longest - 1 == LSV_PROXY_V1_MAX);
    CHECK(parse(longest, sizeof longest - 1, &h, NULL, NULL) == 107);
    CHECK(h.local == 1);
    check_prefixes(longest, sizeof longest - 1);
    CHECK(parse(S("PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n"), &h, NULL, NULL)
          == 35);
    CHECK(parse(S("PROXY UNKNOWN \x01\xff\t \r\n"), &h, NULL, NULL) == 20);
    test_done("v1 UNKNOWN: no addresses, the rest of its line ignored");
}

/* A bad header, and the shortest prefix of it that is BAD already. */
typedef struct bad_case {
    const char *in;
    const char *bad_at;         /* its length is where BAD comes */
    const char *err;
} bad_case_t;

static const bad_case_t v1_bad[] = {
    { "GET / HTTP/1.1\r\n", "G", "no PROXY header" },
    { "SSH-2.0-OpenSSH\r\n", "S", "no PROXY header" },
    { "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "p", "no PROXY header" },
    { "PROXYX TCP4", "PROXYX", "no PROXY header" },
    { "PR0XY", "PR0", "no PROXY header" },
    { "PROXY TCP5 1.2.3.4", "PROXY TCP5", "v1: bad protocol" },
    { "PROXY tcp4 1.2.3.4", "PROXY t", "v1: bad protocol" },
    { "PROXY  TCP4", "PROXY  ", "v1: bad protocol" },
    { "PROXY TCP4\t1.2.3.4", "PROXY TCP4\t", "v1: bad protocol" },
    { "PROXY UNKNOWNX\r\n", "PROXY UNKNOWNX", "v1: bad protocol" },
    { "PROXY TCP4\r\n", "PROXY TCP4\r", "v1: too few fields" },
    { "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3.4  ",
      "v1: bad address" },
    { "PROXY TCP4 256.1.1.1 5.6.7.8 1 2\r\n", "PROXY TCP4 256.1.1.1 ",
      "v1: bad address" },
    { "PROXY TCP4 01.1.1.1 5.6.7.8 1 2\r\n", "PROXY TCP4 01.1.1.1 ",
      "v1: bad address" },
    { "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3 ",
      "v1: bad address" },
    { "PROXY TCP4 ::1 ::1 1 2\r\n", "PROXY TCP4 :", "v1: bad address" },
    { "PROXY TCP4 1.2.3.4.5.6.7.8.9 ", "PROXY TCP4 1.2.3.4.5.6.7.8.",
      "v1: bad address" },
    { "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY TCP6 1.2.3.4 ",
      "v1: bad address" },
    { "PROXY TCP6 ::1 ::g 1 2\r\n", "PROXY TCP6 ::1 ::g", "v1: bad address" },
    { "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "PROXY TCP6 fe80::1%",
      "v1: bad address" },
    { "PROXY TCP6 1:2:3:4:5:6:7:8:1:2:3:4:5:6:7:8:1:2:3:4:5:6:7: ",
      "PROXY TCP6 1:2:3:4:5:6:7:8:1:2:3:4:5:6:7:8:1:2:3:4:5:6:7:",
      "v1: bad address" },
    { "PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n",
      "PROXY TCP6 1:2:3:4:5:6:7:8:9 ", "v1: bad address" },
    { "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 01",
      "v1: bad port" },
    { "PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 00",
      "v1: bad port" },
    { "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 65536", "v1: bad port" },
    { "PROXY TCP4 1.2.3.4 5.6.7.8 123456 2\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 123456", "v1: bad port" },
    { "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 -",
      "v1: bad port" },
    { "PROXY TCP4 1.2.3.4 5.6.7.8 1 +2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 +",
      "v1: bad port" },
    { "PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8  ",
      "v1: bad port" },
    { "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r",
      "v1: too few fields" },
    { "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ", "v1: too many fields" },
    { "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
      "v1: bad line ending" },
    { "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "v1: bad line ending" },
    { "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r", "v1: bad line ending" },
    { "PROXY UNKNOWN\n", "PROXY UNKNOWN\n", "v1: bad line ending" },
    { "PROXY UNKNOWN foo\rbar\r\n", "PROXY UNKNOWN foo\rb",
      "v1: bad line ending" },
    { "PROXY UNKNOWN foo\nbar\r\n", "PROXY UNKNOWN foo\n",
      "v1: bad line ending" },
};

/* The 108-byte UNKNOWN line and one that never ends. */
static void test_v1_too_long(void)
{
    char line[300];
    memset(line, 'x', sizeof line);
    memcpy(line, "PROXY UNKNOWN ", 14);
    memcpy(line + 106, "\r\n", 2);          /* 108 bytes with its CRLF */
    const char *err;
    for (size_t k = 0; k < 107; k++)
        CHECKF(parse(line, k, NULL, NULL, NULL) == LSV_PROXY_PARTIAL,
               "108-byte line: prefix %zu", k);
    for (size_t k = 107; k <= sizeof line; k++) {
        CHECKF(parse(line, k, NULL, NULL, &err) == LSV_PROXY_BAD &&
               strcmp(err, "v1: header over 107 bytes") == 0,
               "108-byte line: %zu bytes", k);
    }
    memcpy(line + 105, "\r\n", 2);          /* 107: fine */
    CHECK(parse(line, sizeof line, NULL, NULL, NULL) == 107);
    test_done("v1: a line over 107 bytes is BAD at its 107th byte");
}

static void test_v1_bad(void)
{
    for (size_t c = 0; c < sizeof v1_bad / sizeof *v1_bad; c++) {
        size_t at = strlen(v1_bad[c].bad_at);
        CHECKF(strncmp(v1_bad[c].in, v1_bad[c].bad_at, at) == 0, "case %zu",
               c);
        check_bad(v1_bad[c].in, strlen(v1_bad[c].in), at, v1_bad[c].err);
    }
    test_done("v1 faults: each BAD at its first impossible byte, named");
}

/* ---- v2 ----------------------------------------------------------------- */

static void test_v2_inet(void)
{
    unsigned char b[64];
    lsv_proxy_hdr_t h;
    size_t n = inet_block(b, v2_start(b, 0x21, 0x11));
    v2_len(b, n);
    memset(&h, 0x55, sizeof h);
    CHECK(parse((char *)b, n, &h, NULL, NULL) == 28);
    CHECK(h.version == 2 && h.local == 0 && h.dgram == 0);
    CHECK(h.tlv_off == 28 && h.tlv_len == 0);
    check_addrs(&h, AF_INET, "192.0.2.1", 0x1234, "198.51.100.7", 443);
    check_prefixes((char *)b, n);
    b[13] = 0x12;
    CHECK(parse((char *)b, n, &h, NULL, NULL) == 28 && h.dgram == 1);
    check_addrs(&h, AF_INET, "192.0.2.1", 0x1234, "198.51.100.7", 443);

    static const unsigned char blk6[36] = {
        0x20, 0x01, 0x0d, 0xb8, [15] = 1,
        [31] = 1, [32] = 0xff, 0xff, 0, 80 };
    n = put_bytes(b, v2_start(b, 0x21, 0x21), blk6, sizeof blk6);
    v2_len(b, n);
    CHECK(parse((char *)b, n, &h, NULL, NULL) == 52);
    CHECK(h.version == 2 && h.local == 0 && h.tlv_off == 52);
    check_addrs(&h, AF_INET6, "2001:db8::1", 65535, "::1", 80);
    check_prefixes((char *)b, n);
    b[13] = 0x22;
    CHECK(parse((char *)b, n, &h, NULL, NULL) == 52 && h.dgram == 1);
    test_done("v2 PROXY INET and INET6, stream and datagram");
}

static void test_v2_unix(void)
{
    unsigned char b[300];
    lsv_proxy_hdr_t h;
    size_t n = v2_start(b, 0x21, 0x31);
    memset(b + n, 0, 216);
    memcpy(b + n, "/run/client.sock", 16);
    memcpy(b + n + 108, "/run/luaserv.sock", 17);
    n += 216;
    v2_len(b, n);
    CHECK(parse((char *)b, n, &h, NULL, NULL) == 232);
    const struct sockaddr_un *s = (const struct sockaddr_un *)&h.src;
    const struct sockaddr_un *d = (const struct sockaddr_un *)&h.dst;
    CHECK(h.local == 0 && s->sun_family == AF_UNIX &&
          d->sun_family == AF_UNIX);
    CHECK(strcmp(s->sun_path, "/run/client.sock") == 0);
    CHECK(strcmp(d->sun_path, "/run/luaserv.sock") == 0);
    CHECK(h.src_len == offsetof(struct sockaddr_un, sun_path) + 16);
    CHECK(h.dst_len == offsetof(struct sockaddr_un, sun_path) + 17);
    check_prefixes((char *)b, n);
    /* a 108-byte path without its NUL, and an abstract name */
    memset(b + 16, 'p', 108);
    memset(b + 124, 0, 108);
    memcpy(b + 124, "\0abstract", 9);
    CHECK(parse((char *)b, n, &h, NULL, NULL) == 232);
    CHECK(h.src_len == offsetof(struct sockaddr_un, sun_path) + 108);
    CHECK(memcmp(s->sun_path, b + 16, 108) == 0);
    CHECK(h.dst_len == offsetof(struct sockaddr_un, sun_path) + 9);
    CHECK(memcmp(d->sun_path, "\0abstract", 9) == 0);
    test_done("v2 PROXY UNIX: both paths, unterminated and abstract too");
}

static void test_v2_local(void)
{
    unsigned char b[128];
    lsv_proxy_hdr_t h;
    size_t n = v2_start(b, 0x20, 0x00);
    memset(&h, 0x55, sizeof h);
    CHECK(parse((char *)b, n, &h, NULL, NULL) == 16);
    CHECK(h.version == 2 && h.local == 1 && h.src_len == 0 &&
          h.dst_len == 0 && h.tlv_len == 0);
    check_prefixes((char *)b, n);
    /* LOCAL with an INET block and a TLV: no addresses, the TLV kept */
    n = inet_block(b, v2_start(b, 0x20, 0x11));
    tlv(b, &n, LSV_PP2_TYPE_UNIQUE_ID, "id-1", 4);
    v2_len(b, n);
    CHECK(parse((char *)b, n, &h, NULL, NULL) == (ssize_t)n);
    CHECK(h.local == 1 && h.src_len == 0 && h.tlv_off == 28 &&
          h.tlv_len == 7);
    /* LOCAL's family is ignored: an undefined one, a block too short */
    n = v2_start(b, 0x20, 0x77);
    n = put_bytes(b, n, "junk", 4);
    v2_len(b, n);
    CHECK(parse((char *)b, n, &h, NULL, NULL) == 20);
    CHECK(h.local == 1 && h.tlv_len == 0);
    n = put_bytes(b, v2_start(b, 0x20, 0x21), "short", 5);
    v2_len(b, n);
    CHECK(parse((char *)b, n, &h, NULL, NULL) == 21 && h.local == 1);
    /* PROXY with AF_UNSPEC: no addresses either */
    n = v2_start(b, 0x21, 0x00);
    CHECK(parse((char *)b, n, &h, NULL, NULL) == 16 && h.local == 1);
    test_done("v2 LOCAL and PROXY UNSPEC: local, no addresses");
}

/* A header with one TLV of each kind, walked back with next_tlv. */
static void test_v2_tlvs(void)
{
    static const unsigned char ssl[] = {
        0x07, 0, 0, 0, 0,
        0x21, 0, 7, 'T', 'L', 'S', 'v', '1', '.', '3',
        0x22, 0, 6, 'c', 'l', 'i', 'e', 'n', 't',
        0x23, 0, 22, 'T', 'L', 'S', '_', 'A', 'E', 'S', '_', '1', '2', '8',
        '_', 'G', 'C', 'M', '_', 'S', 'H', 'A', '2', '5', '6' };
    unsigned char b[256];
    size_t n = inet_block(b, v2_start(b, 0x21, 0x11));
    tlv(b, &n, LSV_PP2_TYPE_ALPN, "h2", 2);
    tlv(b, &n, LSV_PP2_TYPE_AUTHORITY, "example.com", 11);
    tlv(b, &n, LSV_PP2_TYPE_UNIQUE_ID, "\x01\x02\x03", 3);
    tlv(b, &n, LSV_PP2_TYPE_SSL, ssl, sizeof ssl);
    tlv(b, &n, LSV_PP2_TYPE_NETNS, "blue", 4);
    tlv(b, &n, LSV_PP2_TYPE_NOOP, NULL, 0);
    tlv(b, &n, 0xea, "vpce-1234", 9);
    v2_len(b, n);
    lsv_proxy_hdr_t h;
    CHECK(parse((char *)b, n, &h, NULL, NULL) == (ssize_t)n);
    CHECK(h.tlv_off == 28 && h.tlv_off + h.tlv_len == n);
    check_prefixes((char *)b, n);
    static const struct { int type; const char *v; size_t len; } want[] = {
        { 0x01, "h2", 2 }, { 0x02, "example.com", 11 },
        { 0x05, "\x01\x02\x03", 3 }, { 0x20, (const char *)ssl, sizeof ssl },
        { 0x30, "blue", 4 }, { 0x04, "", 0 }, { 0xea, "vpce-1234", 9 } };
    const char *t = (const char *)b + h.tlv_off, *v;
    size_t off = 0, vlen, k = 0;
    int type, r;
    while ((r = lsv_proxy_next_tlv(t, h.tlv_len, &off, &type, &v, &vlen))
           == 1) {
        CHECKF(k < 7 && type == want[k].type && vlen == want[k].len &&
               memcmp(v, want[k].v, vlen) == 0, "TLV %zu", k);
        if (type == LSV_PP2_TYPE_SSL) {
            size_t so = 0, sl, j = 0;
            const char *sv;
            int st;
            CHECK((unsigned char)v[0] == 7 && v[1] == 0 && v[4] == 0);
            while (lsv_proxy_next_tlv(v + 5, vlen - 5, &so, &st, &sv, &sl)
                   == 1) {
                CHECK(st == 0x21 + (int)j);
                CHECK(j != 1 || (sl == 6 && memcmp(sv, "client", 6) == 0));
                j++;
            }
            CHECK(j == 3);
        }
        k++;
    }
    CHECK(r == 0 && k == 7 && off == h.tlv_len);
    test_done("v2 TLVs: alpn, authority, unique id, ssl's sub-TLVs, "
              "netns, noop, a vendor's; next_tlv walks them");
}

static void test_next_tlv(void)
{
    size_t off = 0, vlen;
    int type;
    const char *v;
    CHECK(lsv_proxy_next_tlv("", 0, &off, &type, &v, &vlen) == 0);
    CHECK(lsv_proxy_next_tlv("\x01", 1, &off, &type, &v, &vlen) == -1);
    CHECK(lsv_proxy_next_tlv("\x01\x00", 2, &off, &type, &v, &vlen) == -1);
    CHECK(off == 0);
    CHECK(lsv_proxy_next_tlv("\x01\x00\x00", 3, &off, &type, &v, &vlen) == 1);
    CHECK(type == 1 && vlen == 0 && off == 3);
    CHECK(lsv_proxy_next_tlv("\x01\x00\x00", 3, &off, &type, &v, &vlen) == 0);
    off = 0;
    CHECK(lsv_proxy_next_tlv("\xff\x00\x02xy", 5, &off, &type, &v, &vlen)
          == 1 && type == 0xff && vlen == 2 && memcmp(v, "xy", 2) == 0);
    off = 0;
    CHECK(lsv_proxy_next_tlv("\x02\x00\x03xy", 5, &off, &type, &v, &vlen)
          == -1 && off == 0);
    off = 0;
    CHECK(lsv_proxy_next_tlv("\x02\x01\x00xy", 5, &off, &type, &v, &vlen)
          == -1);
    test_done("next_tlv: end, short header, overrun, empty value");
}

static void test_crc32c(void)
{
    CHECK(ref_crc32c((const unsigned char *)"123456789", 9) == 0xe3069283);
    unsigned char b[128];
    lsv_proxy_hdr_t h;
    const char *err;
    size_t n = inet_block(b, v2_start(b, 0x21, 0x11));
    tlv(b, &n, LSV_PP2_TYPE_ALPN, "http/1.1", 8);
    tlv(b, &n, LSV_PP2_TYPE_CRC32C, "\0\0\0\0", 4);
    size_t voff = n - 4;
    tlv(b, &n, LSV_PP2_TYPE_UNIQUE_ID, "abc", 3);
    v2_len(b, n);
    set_crc(b, n, voff);
    CHECK(parse((char *)b, n, &h, NULL, NULL) == (ssize_t)n);
    check_prefixes((char *)b, n);
    for (size_t i = 0; i < n; i++) {
        /* version, family, length; the CRC32C TLV's type (then it is
         * another TLV, and no checksum is asked for) */
        if ((i >= 12 && i < 16) || i == voff - 3) continue;
        b[i] ^= 0x01;
        ssize_t r = parse((char *)b, n, &h, NULL, &err);
        CHECKF(r == LSV_PROXY_BAD, "byte %zu flipped: %zd", i, r);
        CHECKF(i < 16 || i >= 28 || strcmp(err, "v2: CRC32C mismatch") == 0,
               "address byte %zu flipped: %s", i, err);
        b[i] ^= 0x01;
    }
    b[voff + 3] ^= 0x80;
    CHECK(parse((char *)b, n, &h, NULL, &err) == LSV_PROXY_BAD &&
          strcmp(err, "v2: CRC32C mismatch") == 0);
    /* a CRC32C TLV that is not 4 bytes */
    n = inet_block(b, v2_start(b, 0x21, 0x11));
    tlv(b, &n, LSV_PP2_TYPE_CRC32C, "\0\0\0", 3);
    v2_len(b, n);
    CHECK(parse((char *)b, n, &h, NULL, &err) == LSV_PROXY_BAD &&
          strcmp(err, "v2: bad CRC32C TLV") == 0);
    test_done("v2 CRC32C: verified; any flipped byte is BAD");
}

/* Headers HAProxy 2.6 sent (send-proxy, send-proxy-v2, with
 * proxy-v2-options crc32c,unique-id, and a check's LOCAL), captured. */
static void test_haproxy_made(void)
{
    static const char v1[] = "PROXY TCP4 127.0.0.1 127.0.0.1 43462 50115\r\n";
    static const char v2[] =
        "\x0d\x0a\x0d\x0a\x00\x0d\x0aQUIT\x0a!\x11\x00\x0c\x7f\x00\x00\x01\x7f"
        "\x00\x00\x01\xc5\x02\xb7s";
    static const char crc[] =
        "\x0d\x0a\x0d\x0a\x00\x0d\x0aQUIT\x0a!\x11\x00"
        "D\x7f\x00\x00\x01\x7f\x00\x00\x01\xda\xec\xdd=\x03\x00\x04\x0aW\xe4"
        "\x0b\x05\x00.7F000001:DAEC_7F000001:DD3D_6B0E2C33_0000:6562";
    static const char local[] = "\x0d\x0a\x0d\x0a\x00\x0d\x0aQUIT\x0a \x00"
                                "\x00\x00";
    lsv_proxy_hdr_t h;
    CHECK(parse(v1, sizeof v1 - 1, &h, NULL, NULL) == 44);
    check_addrs(&h, AF_INET, "127.0.0.1", 43462, "127.0.0.1", 50115);
    CHECK(parse(v2, sizeof v2 - 1, &h, NULL, NULL) == 28);
    check_addrs(&h, AF_INET, "127.0.0.1", 50434, "127.0.0.1", 46963);
    CHECK(parse(crc, sizeof crc - 1, &h, NULL, NULL) == 84);
    check_addrs(&h, AF_INET, "127.0.0.1", 56044, "127.0.0.1", 56637);
    CHECK(h.tlv_off == 28 && h.tlv_len == 56);
    check_prefixes(crc, sizeof crc - 1);
    CHECK(parse(local, sizeof local - 1, &h, NULL, NULL) == 16 && h.local);
    test_done("headers HAProxy 2.6 sent, its CRC32C and check's LOCAL too");
}

/* The longest v2 header: a declared length of 65535. */
static void test_v2_longest(void)
{
    unsigned char *b = calloc(1, LSV_PROXY_V2_MAX + 16);
    if (b == NULL) abort();
    size_t n = inet_block(b, v2_start(b, 0x21, 0x11));
    size_t fill = LSV_PROXY_V2_MAX - n - 3;
    b[n++] = LSV_PP2_TYPE_NOOP;
    b[n++] = (unsigned char)(fill >> 8);
    b[n++] = (unsigned char)fill;
    n += fill;
    v2_len(b, n);
    CHECK(n == LSV_PROXY_V2_MAX && b[14] == 0xff && b[15] == 0xff);
    lsv_proxy_hdr_t h;
    size_t need;
    CHECK(parse((char *)b, n + 16, &h, NULL, NULL) == LSV_PROXY_V2_MAX);
    CHECK(h.tlv_len == fill + 3);
    CHECK(parse((char *)b, 16, &h, &need, NULL) == LSV_PROXY_PARTIAL &&
          need == LSV_PROXY_V2_MAX);
    CHECK(parse((char *)b, n - 1, &h, &need, NULL) == LSV_PROXY_PARTIAL &&
          need == LSV_PROXY_V2_MAX);
    free(b);
    test_done("v2: the longest header (16 + 65535 bytes)");
}

static void test_v2_bad(void)
{
    unsigned char b[300];
    size_t n = inet_block(b, v2_start(b, 0x21, 0x11));
    v2_len(b, n);
    b[4] = 1;
    check_bad((char *)b, n, 5, "no PROXY header");
    b[4] = 0;
    b[1] = '\r';
    check_bad((char *)b, n, 2, "no PROXY header");
    b[1] = '\n';
    b[11] = '\r';
    check_bad((char *)b, n, 12, "no PROXY header");
    b[11] = '\n';
    static const unsigned char versions[] = { 0x11, 0x31, 0x01, 0xf1 };
    for (size_t i = 0; i < sizeof versions; i++) {
        b[12] = versions[i];
        check_bad((char *)b, n, 13, "v2: bad version");
    }
    static const unsigned char commands[] = { 0x22, 0x2f, 0x23 };
    for (size_t i = 0; i < sizeof commands; i++) {
        b[12] = commands[i];
        check_bad((char *)b, n, 13, "v2: bad command");
    }
    b[12] = 0x21;
    static const unsigned char fams[] = { 0x41, 0x13, 0x10, 0x01, 0x02,
                                          0x30, 0xff, 0x20 };
    for (size_t i = 0; i < sizeof fams; i++) {
        b[13] = fams[i];
        check_bad((char *)b, n, 14, "v2: bad address family");
    }
    static const struct { unsigned char fam; size_t len; } shorts[] = {
        { 0x11, 11 }, { 0x12, 0 }, { 0x21, 35 }, { 0x21, 12 },
        { 0x31, 215 } };
    memset(b + 16, 0, sizeof b - 16);
    for (size_t i = 0; i < sizeof shorts / sizeof *shorts; i++) {
        b[13] = shorts[i].fam;
        v2_len(b, 16 + shorts[i].len);
        check_bad((char *)b, 16 + shorts[i].len, 16,
                  "v2: address block over the declared length");
    }
    test_done("v2 faults in the fixed part: BAD at the byte that shows it");
}

static void test_v2_bad_tlvs(void)
{
    unsigned char b[128];
    size_t n = inet_block(b, v2_start(b, 0x21, 0x11));
    tlv(b, &n, LSV_PP2_TYPE_ALPN, "h2", 2);
    b[n - 4] = 0x10;                    /* ALPN says 4098 bytes */
    v2_len(b, n);
    check_bad((char *)b, n, n, "v2: TLV past the header's end");
    b[n - 4] = 0;
    b[n - 3] = 3;                       /* one byte too many */
    check_bad((char *)b, n, n, "v2: TLV past the header's end");
    for (size_t extra = 1; extra < 3; extra++) {
        n = inet_block(b, v2_start(b, 0x21, 0x11));
        tlv(b, &n, LSV_PP2_TYPE_ALPN, "h2", 2);
        n = put_bytes(b, n, "\x01\x00", extra);
        v2_len(b, n);
        check_bad((char *)b, n, n, "v2: TLV past the header's end");
    }
    n = inet_block(b, v2_start(b, 0x21, 0x11));
    tlv(b, &n, LSV_PP2_TYPE_SSL, "\x01\0\0\0", 4);
    v2_len(b, n);
    check_bad((char *)b, n, n, "v2: bad SSL TLV");
    n = inet_block(b, v2_start(b, 0x21, 0x11));
    tlv(b, &n, LSV_PP2_TYPE_SSL, "\x01\0\0\0\0\x21\x00\x05TLS", 11);
    v2_len(b, n);
    check_bad((char *)b, n, n, "v2: bad SSL TLV");
    /* the same faults after a LOCAL's INET block */
    n = inet_block(b, v2_start(b, 0x20, 0x11));
    tlv(b, &n, LSV_PP2_TYPE_AUTHORITY, "x", 1);
    b[n - 2] = 9;
    v2_len(b, n);
    check_bad((char *)b, n, n, "v2: TLV past the header's end");
    test_done("v2 TLV faults: overrun, leftover bytes, short SSL TLV");
}

/* ---- build -------------------------------------------------------------- */

static struct sockaddr_storage sa_ip(const char *ip, unsigned port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
    }
    return ss;
}

#define SA(ss) ((const struct sockaddr *)&(ss))

/* Builds version v from src, dst; checks it parses back to them and that
 * a buffer a byte short is refused. Returns the length. */
static ssize_t build_back(char *out, int v, const struct sockaddr *src,
                          const struct sockaddr *dst)
{
    ssize_t len = lsv_proxy_build(out, 300, v, src, dst);
    CHECKF(len > 0, "build v%d: %zd", v, len);
    if (len <= 0) return len;
    char tmp[300];
    CHECK(lsv_proxy_build(tmp, (size_t)len - 1, v, src, dst) == -1);
    CHECK(lsv_proxy_build(tmp, (size_t)len, v, src, dst) == len &&
          memcmp(tmp, out, (size_t)len) == 0);
    lsv_proxy_hdr_t h;
    CHECKF(parse(out, (size_t)len, &h, NULL, NULL) == len, "parse back v%d",
           v);
    CHECK(h.version == v && h.local == (src == NULL));
    return len;
}

static void test_build_ip(void)
{
    char out[300];
    struct sockaddr_storage s4 = sa_ip("192.0.2.1", 1234);
    struct sockaddr_storage d4 = sa_ip("198.51.100.2", 80);
    struct sockaddr_storage s6 = sa_ip("2001:db8::1", 1);
    struct sockaddr_storage d6 = sa_ip("2001:db8::2", 65535);
    lsv_proxy_hdr_t h;
    ssize_t n = build_back(out, 1, SA(s4), SA(d4));
    CHECK(n == 43 && memcmp(out, "PROXY TCP4 192.0.2.1 198.51.100.2 1234 "
                            "80\r\n", 43) == 0);
    n = build_back(out, 1, SA(s6), SA(d6));
    CHECK(n == 44 && memcmp(out, "PROXY TCP6 2001:db8::1 2001:db8::2 1 "
                            "65535\r\n", 44) == 0);
    n = build_back(out, 1, NULL, NULL);
    CHECK(n == 15 && memcmp(out, "PROXY UNKNOWN\r\n", 15) == 0);
    n = build_back(out, 2, SA(s4), SA(d4));
    static const unsigned char want4[28] = {
        '\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n',
        0x21, 0x11, 0, 12, 192, 0, 2, 1, 198, 51, 100, 2, 0x04, 0xd2, 0, 80 };
    CHECK(n == 28 && memcmp(out, want4, 28) == 0);
    parse(out, (size_t)n, &h, NULL, NULL);
    check_addrs(&h, AF_INET, "192.0.2.1", 1234, "198.51.100.2", 80);
    n = build_back(out, 2, SA(s6), SA(d6));
    CHECK(n == 52 && (unsigned char)out[13] == 0x21 && out[15] == 36);
    parse(out, (size_t)n, &h, NULL, NULL);
    check_addrs(&h, AF_INET6, "2001:db8::1", 1, "2001:db8::2", 65535);
    n = build_back(out, 2, NULL, NULL);
    CHECK(n == 16 && out[12] == 0x20 && out[13] == 0 && out[15] == 0);
    struct sockaddr_storage longest = sa_ip("ffff:ffff:ffff:ffff:ffff:ffff:"
                                            "ffff:ffff", 65535);
    CHECK(lsv_proxy_build(out, LSV_PROXY_V1_MAX, 1, SA(longest),
                          SA(longest)) > 0);
    test_done("build v1 and v2 for INET, INET6, UNKNOWN/LOCAL; parsed back");
}

static void test_build_unix_and_faults(void)
{
    char out[300];
    struct sockaddr_un su, du;
    memset(&su, 0, sizeof su);
    memset(&du, 0xaa, sizeof du);       /* garbage after the path */
    su.sun_family = du.sun_family = AF_UNIX;
    strcpy(su.sun_path, "/tmp/c.sock");
    strcpy(du.sun_path, "/tmp/luaserv.sock");
    ssize_t n = build_back(out, 2, (struct sockaddr *)&su,
                           (struct sockaddr *)&du);
    CHECK(n == 232 && (unsigned char)out[13] == 0x31);
    lsv_proxy_hdr_t h;
    parse(out, (size_t)n, &h, NULL, NULL);
    CHECK(strcmp(((struct sockaddr_un *)&h.src)->sun_path, "/tmp/c.sock")
          == 0);
    CHECK(strcmp(((struct sockaddr_un *)&h.dst)->sun_path,
                 "/tmp/luaserv.sock") == 0);
    struct sockaddr_storage s4 = sa_ip("192.0.2.1", 1);
    struct sockaddr_storage s6 = sa_ip("::1", 2);
    CHECK(lsv_proxy_build(out, 300, 1, (struct sockaddr *)&su,
                          (struct sockaddr *)&du) == -1);
    CHECK(lsv_proxy_build(out, 300, 1, SA(s4), SA(s6)) == -1);
    CHECK(lsv_proxy_build(out, 300, 2, SA(s6), SA(s4)) == -1);
    CHECK(lsv_proxy_build(out, 300, 2, SA(s4), (struct sockaddr *)&du) == -1);
    CHECK(lsv_proxy_build(out, 300, 2, SA(s4), NULL) == -1);
    CHECK(lsv_proxy_build(out, 300, 3, SA(s4), SA(s4)) == -1);
    CHECK(lsv_proxy_build(out, 300, 0, NULL, NULL) == -1);
    struct sockaddr_storage none;
    memset(&none, 0, sizeof none);
    none.ss_family = AF_NETLINK;
    CHECK(lsv_proxy_build(out, 300, 2, SA(none), SA(none)) == -1);
    CHECK(lsv_proxy_build(out, 14, 1, NULL, NULL) == -1);
    CHECK(lsv_proxy_build(out, 15, 2, NULL, NULL) == -1);
    test_done("build v2 UNIX; mixed, unknown families and short buffers "
              "refused");
}

/* ---- hostile input ------------------------------------------------------ */

/* BAD is final and a length is kept: once a prefix of in is BAD or a
 * header, every longer prefix says the same. */
static void check_stable(const char *in, size_t n)
{
    ssize_t first = LSV_PROXY_PARTIAL;
    const char *first_err = NULL;
    for (size_t k = 0; k <= n; k++) {
        const char *err = NULL;
        lsv_proxy_hdr_t h;
        ssize_t r = parse(in, k, &h, NULL, &err);
        if (first != LSV_PROXY_PARTIAL)
            CHECKF(r == first && (r != LSV_PROXY_BAD ||
                                  strcmp(err, first_err) == 0),
                   "prefix %zu: %zd after %zd", k, r, first);
        else if (r != LSV_PROXY_PARTIAL) {
            first = r;
            first_err = err;
        }
        if (r > 0) {
            CHECK(h.version == 1 || h.version == 2);
            CHECK(h.tlv_off + h.tlv_len <= (size_t)r);
            CHECK(h.local || (h.src_len > 0 && h.dst_len > 0 &&
                              h.src.ss_family == h.dst.ss_family));
        }
    }
}

/* Valid headers with bytes changed, dropped and inserted at random, and
 * random bytes after a signature; checked for the contract and stability
 * (and, in the ASan build, for reads outside the input). */
static void test_random(void)
{
    static const char *const seeds[] = {
        "PROXY TCP4 192.168.0.1 10.0.0.2 56324 443\r\n",
        "PROXY TCP6 2001:db8::1 ::ffff:1.2.3.4 1 65535\r\n",
        "PROXY UNKNOWN x\r\n",
    };
    unsigned char v2[128];
    size_t v2n = inet_block(v2, v2_start(v2, 0x21, 0x11));
    tlv(v2, &v2n, LSV_PP2_TYPE_SSL, "\x01\0\0\0\0\x22\0\x01x", 9);
    tlv(v2, &v2n, LSV_PP2_TYPE_CRC32C, "\0\0\0\0", 4);
    v2_len(v2, v2n);
    set_crc(v2, v2n, v2n - 4);
    char buf[160];
    int accepted = 0;
    for (int i = 0; i < 20000; i++) {
        int s = (int)(rng() % 4);
        size_t n = s < 3 ? strlen(seeds[s]) : v2n;
        memcpy(buf, s < 3 ? seeds[s] : (const char *)v2, n);
        for (int m = (int)(rng() % 4); m > 0; m--) {
            size_t at = rng() % (n + 1);
            unsigned op = (unsigned)(rng() % 3);
            if (op == 0 && at < n) {
                buf[at] = (char)(rng() % 4 ? "0123:. \r\nP"[rng() % 10]
                                           : (char)rng());
            } else if (op == 1 && at < n) {
                memmove(buf + at, buf + at + 1, n - at - 1);
                n--;
            } else if (op == 2 && n < sizeof buf - 1) {
                memmove(buf + at + 1, buf + at, n - at);
                buf[at] = (char)(rng() % 2 ? ' ' : (char)rng());
                n++;
            }
        }
        check_stable(buf, n);
        lsv_proxy_hdr_t h;
        accepted += parse(buf, n, &h, NULL, NULL) > 0;
    }
    CHECKF(accepted > 1000 && accepted < 19000, "accepted %d", accepted);
    test_done("20000 mutated headers: the contract holds, BAD is final");
}

/* Each input placed right before and right after a protected page, for
 * every prefix (as picohttpparser's tests do): no read outside it. */
static void test_guard_pages(void)
{
    unsigned char v2[64];
    size_t v2n = inet_block(v2, v2_start(v2, 0x21, 0x11));
    tlv(v2, &v2n, LSV_PP2_TYPE_CRC32C, "\0\0\0\0", 4);
    v2_len(v2, v2n);
    const struct { const char *p; size_t n; } inputs[] = {
        { S("PROXY TCP4 192.168.0.1 10.0.0.2 56324 443\r\n") },
        { S("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 65535 65535\r\n") },
        { S("PROXY UNKNOWN 1234567890\r\n") },
        { (const char *)v2, v2n },
    };
    guard_t g;
    if (!guard_open(&g, "PROXY parser"))
        return;
    char *lo = g.lo, *hi = g.hi;
    for (size_t c = 0; c < sizeof inputs / sizeof *inputs; c++) {
        for (size_t k = 0; k <= inputs[c].n; k++) {
            lsv_proxy_hdr_t h;
            size_t need;
            const char *err;
            memcpy(hi - k, inputs[c].p, k);
            lsv_proxy_parse(hi - k, k, &h, &need, &err);
            memcpy(lo, inputs[c].p, k);
            lsv_proxy_parse(lo, k, &h, &need, &err);
        }
    }
    guard_close(&g);
    test_done("guard page: no read outside the input for any prefix");
}

int main(void)
{
    rng_seed(0x9e3779b97f4a7c15u);
    test_v1_tcp4();
    test_v1_tcp6();
    test_v1_unknown();
    test_v1_too_long();
    test_v1_bad();
    test_v2_inet();
    test_v2_unix();
    test_v2_local();
    test_v2_tlvs();
    test_next_tlv();
    test_crc32c();
    test_v2_longest();
    test_haproxy_made();
    test_v2_bad();
    test_v2_bad_tlvs();
    test_build_ip();
    test_build_unix_and_faults();
    test_random();
    test_guard_pages();
    return tap_end();
}

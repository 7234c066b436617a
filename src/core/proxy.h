/* proxy.h: the PROXY protocol's header (HAProxy's proxy-protocol.txt):
 * v1 (text) and v2 (binary), told apart by their signatures. Parsed and
 * built by pure functions, as frame.c frames: no I/O, no allocation, no
 * Lua; fuzzed (fuzz/proxy_fuzz.c).
 *
 * A balancer sends the header first on each connection it opens to us; it
 * names the client's address (src) and the address the client connected to
 * (dst). The listener's handshake stage (handshake.c) reads it before the
 * conn exists, and the conn keeps what it said (lsv_proxy_info_t). */
#ifndef LSV_PROXY_H
#define LSV_PROXY_H

#include "lsv.h"
#include "server.h"

#include <sys/socket.h>
#include <sys/types.h>

#define LSV_PROXY_V1_MAX 107            /* v1's longest, CRLF included */
#define LSV_PROXY_V2_HEAD 16            /* v2's fixed part */
#define LSV_PROXY_V2_MAX (LSV_PROXY_V2_HEAD + 65535)

/* lsv_proxy_parse's results other than a length. */
#define LSV_PROXY_PARTIAL 0
#define LSV_PROXY_BAD (-1)

/* v2's TLV types (proxy-protocol.txt 2.2.x). */
enum {
    LSV_PP2_TYPE_ALPN = 0x01,
    LSV_PP2_TYPE_AUTHORITY = 0x02,
    LSV_PP2_TYPE_CRC32C = 0x03,
    LSV_PP2_TYPE_NOOP = 0x04,
    LSV_PP2_TYPE_UNIQUE_ID = 0x05,
    LSV_PP2_TYPE_SSL = 0x20,
    LSV_PP2_SUBTYPE_SSL_VERSION = 0x21,
    LSV_PP2_SUBTYPE_SSL_CN = 0x22,
    LSV_PP2_SUBTYPE_SSL_CIPHER = 0x23,
    LSV_PP2_SUBTYPE_SSL_SIG_ALG = 0x24,
    LSV_PP2_SUBTYPE_SSL_KEY_ALG = 0x25,
    LSV_PP2_TYPE_NETNS = 0x30
};

/* What one header says. */
typedef struct lsv_proxy_hdr {
    int version;                /* 1 or 2 */
    /* v2 LOCAL (the balancer's own connection, a health check), v1
     * UNKNOWN, or v2 PROXY with family AF_UNSPEC: no addresses; the
     * socket's own stand. */
    int local;
    int dgram;                  /* v2: the client's transport is datagram */
    /* unless local: AF_INET, AF_INET6 or AF_UNIX, both the same family */
    struct sockaddr_storage src, dst;
    socklen_t src_len, dst_len;
    /* v2: the TLVs are header bytes [tlv_off, tlv_off + tlv_len) */
    size_t tlv_off, tlv_len;
} lsv_proxy_hdr_t;

/* Parses the header at p[0, n), the first bytes of a connection.
 * - returns its length (> 0): *h is filled; what follows is the client's.
 * - returns LSV_PROXY_PARTIAL: p is a header's valid beginning; more
 *   bytes are needed. *need (> n) is then the header's whole length once
 *   n tells it (v2 after 16 bytes), else the least length it may have
 *   (v1: a lower bound only, so a reader peeks up to LSV_PROXY_V1_MAX).
 * - returns LSV_PROXY_BAD: *err is a static string naming the fault:
 *   "no PROXY header", "v1: bad protocol", "v1: bad address", "v1: bad
 *   port", "v1: too few fields", "v1: too many fields", "v1: bad line
 *   ending", "v1: header over 107 bytes", "v2: bad version", "v2: bad
 *   command", "v2: bad address family", "v2: address block over the
 *   declared length", "v2: TLV past the header's end", "v2: bad CRC32C
 *   TLV", "v2: CRC32C mismatch", "v2: bad SSL TLV".
 * BAD comes at the first byte no valid header can have there (a
 * plaintext client's first byte, "PROXYX"), and is final: more bytes do
 * not change it. A v2 LOCAL's family is ignored (proxy-protocol.txt
 * 2.2); its TLVs are checked and kept when the family says where they
 * start. *h is written only when a length is returned. Never reads
 * outside p[0, n); no I/O, no allocation. need and err may not be NULL. */
ssize_t lsv_proxy_parse(const char *p, size_t n, lsv_proxy_hdr_t *h,
                        size_t *need, const char **err);

/* Steps through v2 TLVs t[0, n): *off starts at 0. Returns 1 with *type,
 * *v, *vlen the next one, 0 at the end, -1 when a TLV runs past n. The SSL
 * TLV's value holds sub-TLVs after its 5 bytes of client and verify. */
int lsv_proxy_next_tlv(const char *t, size_t n, size_t *off, int *type,
                       const char **v, size_t *vlen);

/* Writes a header of version (1 or 2) into out (cap bytes): PROXY with
 * src and dst (the same family: AF_INET or AF_INET6; v2 also AF_UNIX), or
 * with src == NULL v1's UNKNOWN / v2's LOCAL. Returns its length, or -1
 * when the addresses cannot go in it (differing or unknown families) or
 * cap is too small (LSV_PROXY_V1_MAX and 16 + 216 always suffice). */
ssize_t lsv_proxy_build(char *out, size_t cap, int version,
                        const struct sockaddr *src, const struct sockaddr *dst);

/* What a conn keeps of the header it came with (conn.proxy), owned by the
 * conn: allocated by the handshake stage, freed with the conn. */
struct lsv_proxy_info {
    lsv_proxy_hdr_t hdr;        /* hdr.tlv_off is 0: the TLVs are tlv[] */
    struct sockaddr_storage socket_peer;   /* the balancer's address */
    socklen_t socket_peer_len;
    char tlv[];                 /* hdr.tlv_len bytes */
};

#endif

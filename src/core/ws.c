/* ws.c: the WebSocket framer (RFC 6455), pure; see ws.h. */
#include "lsv.h"
#include "ws.h"

#include <string.h>
#include <sys/random.h>

_Static_assert(sizeof(size_t) >= 8, "ws.c packs two 32-bit values in *hint");

/* Bit 63 of a resume hint marks it as ours (total stays under 2^31). */
#define HINT_TAG ((size_t)1 << 63)
#define HINT_TAG32 ((uint64_t)1 << 31)

size_t lsv_ws_head(const char *p, size_t n, lsv_ws_head_t *h)
{
    const unsigned char *u = (const unsigned char *)p;
    if (n < 2) return 0;
    h->fin = u[0] >> 7;
    h->opcode = u[0] & 0x0f;
    h->masked = u[1] >> 7;
    uint64_t len = u[1] & 0x7f;
    size_t at = 2;
    if (len >= 126) {
        size_t k = len == 126 ? 2 : 8;
        if (n < at + k) return 0;
        len = 0;
        for (size_t i = 0; i < k; i++) len = len << 8 | u[at + i];
        at += k;
    }
    if (h->masked) {
        if (n < at + 4) return 0;
        memcpy(h->mask, u + at, 4);
        at += 4;
    } else {
        memset(h->mask, 0, 4);
    }
    h->len = len;
    h->hlen = at;
    return at;
}

/* The fault in a header's first two bytes p[0..1], or NULL. `in_msg`:
 * a fragmented message is open. */
static const char *bad_head(const lsv_frame_spec_t *spec,
                            const unsigned char *p, int in_msg)
{
    unsigned op = p[0] & 0x0f, len7 = p[1] & 0x7f;
    if (unlikely(p[0] & 0x70)) return "reserved bits set";
    if (unlikely((op > LSV_WS_BINARY && op < LSV_WS_CLOSE) ||
                 op > LSV_WS_PONG))
        return "unknown opcode";
    if (unlikely(!(p[1] >> 7) != !!spec->client))
        return spec->client ? "masked server frame" : "unmasked client frame";
    if (op >= LSV_WS_CLOSE) {
        if (unlikely(!(p[0] >> 7))) return "fragmented control frame";
        if (unlikely(len7 > 125)) return "control frame over 125 bytes";
        if (unlikely(op == LSV_WS_CLOSE && len7 == 1))
            return "close frame of 1 byte";
        return NULL;
    }
    if (unlikely(op == LSV_WS_CONT && !in_msg))
        return "continuation outside a message";
    if (unlikely(op != LSV_WS_CONT && in_msg))
        return "new message inside a fragmented one";
    return NULL;
}

/* The framer proper; *why names a fault. Walks frame by frame from the
 * resume point in *hint: pos, the first frame not yet complete or the
 * first ping between fragments not yet answered (lsv_ws_interim answers
 * it and moves pos on), and total, the data payload before it. pos > 0
 * only inside a fragmented message (a lone frame before it would have
 * been returned). A close between fragments ends the message there: the
 * frame returned runs through the close, which the decoder answers. */
static ssize_t scan(const lsv_frame_spec_t *spec, const char *data,
                    size_t len, int eof, size_t *hint, size_t *mlen,
                    const char **why)
{
    size_t pos = (size_t)(uint32_t)*hint;
    uint64_t total = (*hint >> 32) & ~HINT_TAG32;
    uint64_t wire_max = LSV_WS_WIRE_MAX(spec->max);
    /* A hint without our tag is another framing's (a stream task that
     * switched framing mid-read): start over rather than trust it. */
    if (unlikely(pos > len || (*hint != 0 && !(*hint >> 63)))) {
        pos = 0;
        total = 0;
    }
    size_t keep = SIZE_MAX;     /* the first unanswered ping, if any */
    uint64_t keep_total = 0;
    for (;;) {
        lsv_ws_head_t h;
        if (len - pos >= 2) {
            *why = bad_head(spec, (const unsigned char *)data + pos, pos > 0);
            if (unlikely(*why != NULL)) return LSV_FRAME_BAD;
        }
        size_t hl = lsv_ws_head(data + pos, len - pos, &h);
        if (hl == 0) break;
        if (unlikely(h.len >> 63)) {
            *why = "64-bit length with its high bit set";
            return LSV_FRAME_BAD;
        }
        int control = h.opcode >= LSV_WS_CLOSE;
        if (!control && unlikely(total + h.len > spec->max)) {
            *why = "message over its max";
            return LSV_FRAME_TOO_LONG;
        }
        if (unlikely(pos + hl + h.len > wire_max)) {
            *why = "message spans too many bytes";
            return LSV_FRAME_TOO_LONG;
        }
        if (len - pos - hl < h.len) break;
        size_t end = pos + hl + (size_t)h.len;
        if (control && (pos == 0 || h.opcode == LSV_WS_CLOSE)) {
            *mlen = end;
            return (ssize_t)end;
        }
        if (h.opcode == LSV_WS_PING && keep == SIZE_MAX) {
            keep = pos;
            keep_total = total;
        }
        if (!control) {
            total += h.len;
            if (h.fin) {
                *mlen = end;
                return (ssize_t)end;
            }
        }
        pos = end;
    }
    if (eof) {
        *why = "frame cut off at end of stream";
        return LSV_FRAME_TRUNCATED;
    }
    if (keep != SIZE_MAX) {
        pos = keep;
        total = keep_total;
    }
    *hint = pos || total ? (size_t)pos | (size_t)total << 32 | HINT_TAG : 0;
    return LSV_FRAME_PARTIAL;
}

ssize_t lsv_ws_frame(const lsv_frame_spec_t *spec, const char *data,
                     size_t len, int eof, size_t *hint, size_t *mlen)
{
    const char *why;
    return scan(spec, data, len, eof, hint, mlen, &why);
}

void lsv_ws_mask_key(uint8_t key[4])
{
    if (getrandom(key, 4, GRND_NONBLOCK) != 4)
        memset(key, 0x5a, 4);           /* no entropy yet: still valid */
}

/* Walks on from the resume point in *hint over the complete frames of the
 * open message, answering each ping with a pong in out while the pong
 * fits; stops at the frame not yet complete (or a close, which the framer
 * returns with the message). An answered ping is rewritten in data into
 * a pong, which the decoder ignores, so it is answered once. */
size_t lsv_ws_interim(const lsv_frame_spec_t *spec, char *data, size_t len,
                      size_t *hint, char *out, size_t cap)
{
    size_t pos = (size_t)(uint32_t)*hint, n = 0;
    uint64_t total = (*hint >> 32) & ~HINT_TAG32;
    if (!(*hint >> 63) || pos == 0 || pos > len) return 0;
    for (;;) {
        lsv_ws_head_t h;
        size_t hl = lsv_ws_head(data + pos, len - pos, &h);
        if (hl == 0 || h.len > len - pos - hl || h.opcode == LSV_WS_CLOSE ||
            (h.opcode < LSV_WS_CLOSE && h.fin))
            break;
        size_t plen = (size_t)h.len;
        if (h.opcode == LSV_WS_PING) {
            if (plen > 125 || cap - n < LSV_WS_HEAD_MAX + plen) break;
            uint8_t key[4];
            if (spec->client) lsv_ws_mask_key(key);
            size_t at = n + lsv_ws_put_head(out + n, LSV_WS_PONG, plen,
                                            spec->client ? key : NULL);
            lsv_ws_unmask(out + at, data + pos + hl, plen, h.mask);
            if (spec->client) lsv_ws_unmask(out + at, out + at, plen, key);
            n = at + plen;
            data[pos] = (char)(0x80 | LSV_WS_PONG);
        } else if (h.opcode < LSV_WS_CLOSE) {
            total += h.len;
        }
        pos += hl + plen;
    }
    *hint = (size_t)pos | (size_t)total << 32 | HINT_TAG;
    return n;
}

size_t lsv_ws_put_head(char *out, int opcode, uint64_t len,
                       const uint8_t *mask)
{
    unsigned char *u = (unsigned char *)out;
    size_t at = 2;
    u[0] = (unsigned char)(0x80 | opcode);
    unsigned char m = mask ? 0x80 : 0;
    if (len < 126) {
        u[1] = m | (unsigned char)len;
    } else if (len <= 0xffff) {
        u[1] = m | 126;
        u[2] = (unsigned char)(len >> 8);
        u[3] = (unsigned char)len;
        at = 4;
    } else {
        u[1] = m | 127;
        for (int i = 0; i < 8; i++)
            u[2 + i] = (unsigned char)(len >> (56 - 8 * i));
        at = 10;
    }
    if (mask) {
        memcpy(u + at, mask, 4);
        at += 4;
    }
    return at;
}

/* Eight bytes at a time: the mask repeats every 4, so a 64-bit word of it
 * twice XORs any 8 aligned-to-the-frame bytes. */
void lsv_ws_unmask(char *dst, const char *src, size_t n,
                   const uint8_t mask[4])
{
    uint64_t m8;
    uint8_t m[8];
    memcpy(m, mask, 4);
    memcpy(m + 4, mask, 4);
    memcpy(&m8, m, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, 8);
        w ^= m8;
        memcpy(dst + i, &w, 8);
    }
    for (; i < n; i++) dst[i] = (char)(src[i] ^ mask[i & 3]);
}

/* Follows the table in RFC 3629 section 4: the second byte's range
 * depends on the first, which rules out overlongs, surrogates and code
 * points past U+10FFFF. ASCII runs go 8 bytes at a time. */
int lsv_ws_utf8_valid(const char *p, size_t n)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        unsigned lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) k = 1;
        else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            if (c == 0xe0) lo = 0xa0;
            if (c == 0xed) hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            if (c == 0xf0) lo = 0x90;
            if (c == 0xf4) hi = 0x8f;
        } else {
            return 0;
        }
        if (n - i <= k) return 0;
        if (s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (size_t j = 2; j <= k; j++)
            if ((s[i + j] & 0xc0) != 0x80) return 0;
        i += k + 1;
    }
    return 1;
}

int lsv_ws_close_code_valid(unsigned code)
{
    if (code >= 3000 && code <= 4999) return 1;
    return code >= 1000 && code <= 1014 && code != 1004 && code != 1005 &&
           code != 1006;
}

size_t lsv_ws_reject(const lsv_frame_spec_t *spec, ssize_t r,
                     const char *data, size_t len, char *out, size_t cap,
                     const char **why)
{
    size_t hint = 0, mlen;
    *why = r == LSV_FRAME_TOO_LONG ? "websocket message too long"
                                   : "websocket protocol error";
    /* Scanning again from the start names the fault for the log. */
    const char *w = NULL;
    if (scan(spec, data, len, r == LSV_FRAME_TRUNCATED, &hint, &mlen, &w) ==
            r && w != NULL)
        *why = w;
    if (r == LSV_FRAME_TRUNCATED) return 0;
    unsigned code = r == LSV_FRAME_TOO_LONG ? 1009 : 1002;
    static const uint8_t zero[4];
    if (cap < 2 + 4 + 2) return 0;
    size_t n = lsv_ws_put_head(out, LSV_WS_CLOSE, 2,
                               spec->client ? zero : NULL);
    out[n++] = (char)(code >> 8);
    out[n++] = (char)(code & 0xff);
    return n;
}

/* frame.c: splits a byte stream into frames; pure, see frame.h. */
#include "lsv.h"
#include "frame.h"
#include "http.h"
#include "resp.h"
#include "ws.h"

#include <assert.h>
#include <string.h>

/* Overwrites all of spec. Every field gets its default, not only the ones
 * this kind reads, so a spec whose kind is changed afterwards stays valid. */
void lsv_frame_spec_init(lsv_frame_spec_t *spec, lsv_frame_kind_t kind)
{
    memset(spec, 0, sizeof *spec);
    spec->kind = (uint8_t)kind;
    spec->max = kind == LSV_FRAME_PREFIX ? LSV_FRAME_PREFIX_DEFAULT_MAX
                                         : LSV_FRAME_DEFAULT_MAX;
    spec->size = 1;
    spec->prefix_len = 4;
    spec->big_endian = 1;
    spec->delim_len = 2;
    memcpy(spec->delim, "\r\n", 2);
    switch (kind) {
    case LSV_FRAME_RESP:
        spec->max = LSV_RESP_DEFAULT_MAX;
        spec->max_args = LSV_RESP_DEFAULT_MAX_ARGS;
        spec->max_bulk = LSV_RESP_DEFAULT_MAX_BULK;
        break;
    case LSV_FRAME_HTTP:
        spec->max = LSV_HTTP_DEFAULT_MAX_BODY;
        spec->max_args = LSV_HTTP_DEFAULT_MAX_HEADERS;
        spec->max_bulk = LSV_HTTP_DEFAULT_MAX_HEAD;
        break;
    case LSV_FRAME_WS:
        spec->max = LSV_WS_DEFAULT_MAX;
        break;
    default:
        break;
    }
}

/* Returns a static string; "?" for a kind out of range. */
const char *lsv_frame_kind_name(int kind)
{
    switch (kind) {
    case LSV_FRAME_LINE: return "line";
    case LSV_FRAME_DELIM: return "delim";
    case LSV_FRAME_FIXED: return "fixed";
    case LSV_FRAME_PREFIX: return "prefix";
    case LSV_FRAME_RAW: return "raw";
    case LSV_FRAME_RESP: return "resp";
    case LSV_FRAME_HTTP: return "http";
    case LSV_FRAME_WS: return "websocket";
    default: return "?";
    }
}

/* The length of the longest proper prefix of delim that data[0, len) ends
 * with: the bytes at the tail that may yet turn out to be a terminator. */
static size_t pending_delim(const char *data, size_t len, const char *delim,
                            size_t dlen)
{
    size_t k = dlen - 1 < len ? dlen - 1 : len;
    for (; k > 0; k--)
        if (memcmp(data + len - k, delim, k) == 0)
            return k;
    return 0;
}

/* LINE and DELIM when no terminator is in data[0, len). At eof the bytes
 * are the last record. Otherwise all but the last `pending` bytes (which
 * may start a terminator) are surely payload, so the frame is too long as
 * soon as they pass max, not when the terminator finally comes: a peer
 * cannot make the caller buffer more than max plus a partial terminator. */
static ssize_t terminated(const lsv_frame_spec_t *spec, size_t len, int eof,
                          size_t pending, size_t *mlen)
{
    if (eof) {
        /* No more bytes: the tail is the last record, and a partial
         * terminator in it (a lone "\r") is data. */
        if (unlikely(len > spec->max))
            return LSV_FRAME_TOO_LONG;
        *mlen = len;
        return (ssize_t)len;
    }
    if (unlikely(len - pending > spec->max))
        return LSV_FRAME_TOO_LONG;
    return LSV_FRAME_PARTIAL;
}

static ssize_t frame_line(const lsv_frame_spec_t *spec, const char *data,
                          size_t len, int eof, size_t *hint, size_t *mlen)
{
    const char *nl = memchr(data + *hint, '\n', len - *hint);
    if (nl == NULL) {
        size_t pending = data[len - 1] == '\r';
        ssize_t r = terminated(spec, len, eof, pending, mlen);
        if (r == LSV_FRAME_PARTIAL)
            *hint = len;
        return r;
    }
    size_t at = (size_t)(nl - data);
    size_t body = at > 0 && data[at - 1] == '\r' ? at - 1 : at;
    if (unlikely(body > spec->max))
        return LSV_FRAME_TOO_LONG;
    *mlen = spec->keep_eol ? at + 1 : body;
    return (ssize_t)(at + 1);
}

static ssize_t frame_delim(const lsv_frame_spec_t *spec, const char *data,
                           size_t len, int eof, size_t *hint, size_t *mlen)
{
    size_t dlen = spec->delim_len;
    const char *d = memmem(data + *hint, len - *hint, spec->delim, dlen);
    if (d == NULL) {
        size_t pending = pending_delim(data, len, spec->delim, dlen);
        ssize_t r = terminated(spec, len, eof, pending, mlen);
        /* A delimiter split across reads starts in the last dlen-1 bytes. */
        if (r == LSV_FRAME_PARTIAL)
            *hint = len >= dlen - 1 ? len - (dlen - 1) : 0;
        return r;
    }
    size_t at = (size_t)(d - data);
    if (unlikely(at > spec->max))
        return LSV_FRAME_TOO_LONG;
    *mlen = spec->keep_eol ? at + dlen : at;
    return (ssize_t)(at + dlen);
}

static ssize_t frame_fixed(const lsv_frame_spec_t *spec, size_t len, int eof,
                           size_t *mlen)
{
    if (len < spec->size)
        return eof ? LSV_FRAME_TRUNCATED : LSV_FRAME_PARTIAL;
    *mlen = spec->size;
    return (ssize_t)spec->size;
}

/* The length is decided as soon as the prefix is in, before any payload,
 * so a peer announcing 2^64-1 bytes is refused without buffering them.
 * Arithmetic is in uint64_t: the prefix is untrusted and may be 8 bytes
 * even where size_t is 4. */
static ssize_t frame_prefix(const lsv_frame_spec_t *spec,
                            const unsigned char *data, size_t len, int eof,
                            size_t *off, size_t *mlen)
{
    size_t plen = spec->prefix_len;
    if (len < plen)
        return eof ? LSV_FRAME_TRUNCATED : LSV_FRAME_PARTIAL;

    uint64_t n = 0;
    for (size_t i = 0; i < plen; i++)
        n = n << 8 | data[spec->big_endian ? i : plen - 1 - i];
    if (unlikely(n > spec->max))
        return LSV_FRAME_TOO_LONG;
    if ((uint64_t)len - plen < n)
        return eof ? LSV_FRAME_TRUNCATED : LSV_FRAME_PARTIAL;
    *off = plen;
    *mlen = (size_t)n;
    return (ssize_t)(plen + (size_t)n);
}

static ssize_t frame_raw(const lsv_frame_spec_t *spec, size_t len,
                         size_t *mlen)
{
    /* max 0 can never deliver a byte; closing beats spinning on PARTIAL. */
    if (unlikely(spec->max == 0))
        return LSV_FRAME_TOO_LONG;
    *mlen = len < spec->max ? len : spec->max;
    return (ssize_t)*mlen;
}

/* See the contract in frame.h. Beyond it: *off and *mlen are 0 unless a
 * frame is returned; *hint is 0 after a frame, and a *hint past len (a
 * caller that forgot to reset it) is treated as 0 rather than trusted.
 * The spec is trusted: whoever builds it checks delim_len in 1..32,
 * prefix_len in 1/2/4/8 and size >= 1 (asserted here), and max against
 * LSV_FRAME_HARD_MAX. */
ssize_t lsv_frame_next(const lsv_frame_spec_t *spec, const char *data,
                       size_t len, int eof, size_t *hint, size_t *off,
                       size_t *mlen)
{
    *off = 0;
    *mlen = 0;
    if (len == 0) {
        *hint = 0;
        return LSV_FRAME_PARTIAL;
    }
    if (unlikely(*hint > len) && !lsv_frame_is_proto(spec->kind))
        *hint = 0;

    ssize_t r;
    switch (spec->kind) {
    case LSV_FRAME_LINE:
        r = frame_line(spec, data, len, eof, hint, mlen);
        break;
    case LSV_FRAME_DELIM:
        assert(spec->delim_len >= 1 && spec->delim_len <= LSV_FRAME_DELIM_MAX);
        r = frame_delim(spec, data, len, eof, hint, mlen);
        break;
    case LSV_FRAME_FIXED:
        assert(spec->size >= 1);
        r = frame_fixed(spec, len, eof, mlen);
        break;
    case LSV_FRAME_PREFIX:
        assert(spec->prefix_len == 1 || spec->prefix_len == 2 ||
               spec->prefix_len == 4 || spec->prefix_len == 8);
        r = frame_prefix(spec, (const unsigned char *)data, len, eof, off,
                         mlen);
        break;
    case LSV_FRAME_RAW:
        r = frame_raw(spec, len, mlen);
        break;
    case LSV_FRAME_RESP:
        r = lsv_resp_frame(spec, data, len, eof, hint, mlen);
        break;
    case LSV_FRAME_HTTP:
        r = lsv_http_frame(spec, data, len, eof, hint, mlen);
        break;
    case LSV_FRAME_WS:
        r = lsv_ws_frame(spec, data, len, eof, hint, mlen);
        break;
    default:
        assert(!"unknown frame kind");
        r = LSV_FRAME_TOO_LONG;
        break;
    }
    if (r > 0)
        *hint = 0;
    return r;
}

size_t lsv_frame_reject(const lsv_frame_spec_t *spec, ssize_t r,
                        const char *data, size_t len, char *out, size_t cap,
                        const char **why)
{
    switch (spec->kind) {
    case LSV_FRAME_RESP:
        return lsv_resp_reject(spec, r, data, len, out, cap, why);
    case LSV_FRAME_HTTP:
        return lsv_http_reject(spec, r, data, len, out, cap, why);
    case LSV_FRAME_WS:
        return lsv_ws_reject(spec, r, data, len, out, cap, why);
    default:
        *why = r == LSV_FRAME_TOO_LONG ? "frame too long" : "bad frame";
        return 0;
    }
}

size_t lsv_frame_interim(const lsv_frame_spec_t *spec, char *data,
                         size_t len, size_t *hint, char *out, size_t cap)
{
    if (spec->kind == LSV_FRAME_HTTP)
        return lsv_http_interim(spec, data, len, hint, out, cap);
    if (spec->kind == LSV_FRAME_WS)
        return lsv_ws_interim(spec, data, len, hint, out, cap);
    return 0;
}

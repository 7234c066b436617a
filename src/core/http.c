/* http.c: the HTTP/1.1 request framer; pure, see http.h. */
#include "lsv.h"
#include "http.h"

#include <stdio.h>
#include <string.h>

_Static_assert(sizeof(size_t) >= 8, "the http framer's hint needs 64 bits");

/* ---- the hint -----------------------------------------------------------
 * Bit 63 C: the body is chunked (else the head or a body by length).
 * Bit 62 E: a 100 Continue is owed (lsv_http_interim clears it).
 * Head (C and L clear): bit 60 the request line's LF was seen, bits 0-31
 *   how far the head was scanned for its blank line.
 * Length (bit 61 L): bits 0-31 the whole frame's length.
 * Chunked: bit 61 T (in the trailers), bits 29-59 the body bytes decoded,
 *   bits 0-28 the bytes that are not body (leading empty lines, head,
 *   chunk lines, CRLFs, trailers) up to the next line to read, so that
 *   line starts at decoded + overhead. */
#define H_CHUNKED ((size_t)1 << 63)
#define H_CONTINUE ((size_t)1 << 62)
#define H_LENGTH ((size_t)1 << 61)
#define H_TRAILERS ((size_t)1 << 61)
#define H_LINE_SEEN ((size_t)1 << 60)
#define H_LOW32 ((size_t)0xffffffffu)
#define H_DEC_SHIFT 29
#define H_DEC_MASK ((size_t)0x7fffffffu)
#define H_OVER_MASK ((size_t)0x1fffffffu)

/* Leading empty lines a request may carry (RFC 9112 2.2), in bytes. */
#define MAX_LEADING 8

/* ---- faults ------------------------------------------------------------ */

enum {
    F_NONE, F_LEADING, F_METHOD, F_TARGET, F_VERSION, F_VERSION_UNSUP,
    F_LINE_LONG, F_HEAD_LONG, F_HEADERS_MANY, F_NAME, F_SPACE_COLON,
    F_FOLD, F_BARE_CR, F_VALUE, F_CL_TE, F_CL_DIFF, F_CL_BAD, F_TE_DUP,
    F_TE_10, F_TE, F_BODY_LONG, F_CHUNK_LINE, F_CHUNK_CRLF, F_TRAILER,
    F_OVERHEAD, F_COUNT
};

static const struct {
    int status;
    const char *why;
} faults[F_COUNT] = {
    [F_NONE] = { 400, "bad request" },
    [F_LEADING] = { 400, "empty lines before the request line" },
    [F_METHOD] = { 400, "bad method in the request line" },
    [F_TARGET] = { 400, "bad request target" },
    [F_VERSION] = { 400, "bad HTTP version in the request line" },
    [F_VERSION_UNSUP] = { 505, "HTTP version not supported" },
    [F_LINE_LONG] = { 414, "request line too long" },
    [F_HEAD_LONG] = { 431, "header section too long" },
    [F_HEADERS_MANY] = { 431, "too many headers" },
    [F_NAME] = { 400, "bad header name" },
    [F_SPACE_COLON] = { 400, "whitespace between header name and colon" },
    [F_FOLD] = { 400, "obs-fold (a header line starting with whitespace)" },
    [F_BARE_CR] = { 400, "bare CR in the head" },
    [F_VALUE] = { 400, "control character in a header value" },
    [F_CL_TE] = { 400, "Content-Length with Transfer-Encoding" },
    [F_CL_DIFF] = { 400, "differing Content-Length headers" },
    [F_CL_BAD] = { 400, "bad Content-Length" },
    [F_TE_DUP] = { 400, "repeated Transfer-Encoding" },
    [F_TE_10] = { 400, "Transfer-Encoding in an HTTP/1.0 request" },
    [F_TE] = { 501, "Transfer-Encoding other than chunked" },
    [F_BODY_LONG] = { 413, "body over max" },
    [F_CHUNK_LINE] = { 400, "bad chunk size line" },
    [F_CHUNK_CRLF] = { 400, "missing CRLF after chunk data" },
    [F_TRAILER] = { 400, "bad trailer line" },
    [F_OVERHEAD] = { 413, "chunked framing overhead over its limit" },
};

/* The result a fault gives lsv_frame_next's caller. */
static ssize_t fail(int f, int *fault)
{
    *fault = f;
    int st = faults[f].status;
    return st == 413 || st == 414 || st == 431 ? LSV_FRAME_TOO_LONG
                                               : LSV_FRAME_BAD;
}

/* ---- characters -------------------------------------------------------- */

/* RFC 9110 tchar: the characters of a method or a header name. */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1,
    ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1,
    ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1,
    ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,
    ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1,
    ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
    ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
    ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1,
    ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
    ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
};

#define U(c) ((unsigned char)(c))

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

int lsv_http_ieq(const char *a, size_t n, const char *lit)
{
    size_t i = 0;
    for (; i < n && lit[i]; i++)
        if (lower(U(a[i])) != U(lit[i])) return 0;
    return i == n && lit[i] == '\0';
}

int lsv_http_has_token(const char *v, size_t n, const char *token)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',') i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
        if (e > s && lsv_http_ieq(v + s, e - s, token)) return 1;
    }
    return 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = lower(c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* ---- the head ----------------------------------------------------------- */

/* What the head says about the body. */
typedef struct head {
    size_t len;            /* bytes from the frame's start to the body */
    uint64_t cl;           /* Content-Length */
    int has_cl, has_te, chunked, expect, minor;
} head_t;

#define ONES ((uint64_t)0x0101010101010101u)
#define HIGHS ((uint64_t)0x8080808080808080u)

/* Whether the 8 bytes at p may hold a control character or DEL. */
static int has_ctl(const char *p)
{
    uint64_t x, y;
    memcpy(&x, p, 8);
    y = x ^ (ONES * 0x7f);
    return (((x - ONES * 0x20) & ~x) | ((y - ONES) & ~y)) & HIGHS ? 1 : 0;
}

/* The offset of the first control character other than tab (CTL or DEL)
 * in p[i, n), or n. Eight bytes at a time: a word with a byte below 0x20
 * or equal to 0x7f (the usual has-less-than trick, which may flag a word
 * falsely but never misses) is looked at byte by byte. */
static size_t first_ctl(const char *p, size_t i, size_t n)
{
    if (n - i < 16 && n - i >= 8 && !has_ctl(p + n - 8) && !has_ctl(p + i))
        return n;                       /* two overlapping words */
    while (i < n) {
        if (n - i >= 8) {
            if (!has_ctl(p + i)) {
                i += 8;
                continue;
            }
        }
        size_t e = n - i >= 8 ? i + 8 : n;
        for (; i < e; i++) {
            unsigned char c = U(p[i]);
            if ((c < 0x20 && c != '\t') || c == 0x7f) return i;
        }
    }
    return n;
}

/* Checks the request line p[0, n) (without its line end). */
static int request_line(const char *p, size_t n, int *minor)
{
    size_t i = 0;
    while (i < n && tchar[U(p[i])]) i++;
    if (i == 0 || i == n || p[i] != ' ') return F_METHOD;
    size_t t = ++i;
    while (i < n && U(p[i]) > 0x20 && U(p[i]) != 0x7f) i++;
    if (i == t || i == n || p[i] != ' ') {
        if (i < n && p[i] == '\r') return F_BARE_CR;
        return F_TARGET;
    }
    i++;
    if (memchr(p + i, '\r', n - i)) return F_BARE_CR;
    if (n - i != 8 || memcmp(p + i, "HTTP/", 5) != 0 ||
        p[i + 5] < '0' || p[i + 5] > '9' || p[i + 6] != '.' ||
        p[i + 7] < '0' || p[i + 7] > '9')
        return F_VERSION;
    if (p[i + 5] != '1' || p[i + 7] > '1') return F_VERSION_UNSUP;
    *minor = p[i + 7] - '0';
    return F_NONE;
}

/* Checks the field line p[0, n) (without its line end: p[n], CR or LF, is
 * readable and stops the name's scan): a token, a colon right after it, a
 * value of visible characters, spaces and tabs. Sets the name's length
 * and the value's bounds, whitespace trimmed. */
static int field_line(const char *p, size_t n, size_t *nlen, size_t *vs,
                      size_t *ve)
{
    if (p[0] == ' ' || p[0] == '\t') return F_FOLD;
    size_t i = 0;
    while (tchar[U(p[i])]) i++;         /* p[n] is CR or LF: no tchar */
    if (i < n && (p[i] == ' ' || p[i] == '\t') && i > 0) return F_SPACE_COLON;
    if (i < n && p[i] == '\r') return F_BARE_CR;
    if (i == 0 || i == n || p[i] != ':') return F_NAME;
    *nlen = i++;
    while (i < n && (p[i] == ' ' || p[i] == '\t')) i++;
    *vs = i;
    i = first_ctl(p, i, n);
    if (unlikely(i < n)) return p[i] == '\r' ? F_BARE_CR : F_VALUE;
    while (i > *vs && (p[i - 1] == ' ' || p[i - 1] == '\t')) i--;
    *ve = i;
    return F_NONE;
}

/* Content-Length's value: digits only, no overflow. */
static int parse_cl(const char *v, size_t n, uint64_t *out)
{
    if (n == 0) return F_CL_BAD;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') return F_CL_BAD;
        unsigned d = (unsigned)(v[i] - '0');
        if (x > (UINT64_MAX - d) / 10) return F_CL_BAD;
        x = x * 10 + d;
    }
    *out = x;
    return F_NONE;
}

/* What one header means for the framing. */
static int field_meaning(const char *name, size_t nlen, const char *v,
                         size_t vlen, head_t *h)
{
    if (nlen == 14 && lsv_http_ieq(name, nlen, "content-length")) {
        uint64_t x;
        int f = parse_cl(v, vlen, &x);
        if (f) return f;
        if (h->has_cl && x != h->cl) return F_CL_DIFF;
        h->has_cl = 1;
        h->cl = x;
    } else if (nlen == 17 && lsv_http_ieq(name, nlen, "transfer-encoding")) {
        if (h->has_te) return F_TE_DUP;
        h->has_te = 1;
        h->chunked = lsv_http_ieq(v, vlen, "chunked");
    } else if (nlen == 6 && lsv_http_ieq(name, nlen, "expect")) {
        h->expect = lsv_http_ieq(v, vlen, "100-continue");
    }
    return F_NONE;
}

/* Checks the complete head p[0, n) (from the request line through the
 * blank line's LF) with at most max_headers fields and fills h. */
static int parse_head(const char *p, size_t n, uint32_t max_headers,
                      head_t *h)
{
    const char *lf = memchr(p, '\n', n);
    size_t e = (size_t)(lf - p);
    size_t le = e > 0 && p[e - 1] == '\r' ? e - 1 : e;
    int f = request_line(p, le, &h->minor);
    if (f) return f;
    size_t i = e + 1, count = 0;
    for (;;) {
        lf = memchr(p + i, '\n', n - i);
        e = (size_t)(lf - p);
        le = e > i && p[e - 1] == '\r' ? e - 1 : e;
        if (le == i) break;                     /* the blank line */
        if (++count > max_headers) return F_HEADERS_MANY;
        size_t nlen = 0, vs = 0, ve = 0;
        f = field_line(p + i, le - i, &nlen, &vs, &ve);
        if (f) return f;
        f = field_meaning(p + i, nlen, p + i + vs, ve - vs, h);
        if (f) return f;
        i = e + 1;
    }
    if (h->has_te) {
        if (h->has_cl) return F_CL_TE;
        if (h->minor == 0) return F_TE_10;
        if (!h->chunked) return F_TE;
    }
    if (h->minor == 0) h->expect = 0;
    return F_NONE;
}

/* Finds the end of the head, resuming at the scan position in *hint.
 * Returns the head's length from data[0] (leading empty lines included),
 * 0 while it is incomplete, or a fault result (< 0). */
static ssize_t scan_head(const lsv_frame_spec_t *spec, const char *data,
                         size_t len, size_t *hint, size_t *start,
                         int *fault)
{
    size_t s = 0;
    for (;;) {
        if (s < len && data[s] == '\n') s++;
        else if (s + 1 < len && data[s] == '\r' && data[s + 1] == '\n') s += 2;
        else break;
    }
    if (s > MAX_LEADING) return fail(F_LEADING, fault);
    *start = s;
    size_t max_head = spec->max_bulk < LSV_FRAME_HARD_MAX
                    ? spec->max_bulk : LSV_FRAME_HARD_MAX;
    size_t max_line = max_head < LSV_HTTP_MAX_LINE ? max_head
                                                   : LSV_HTTP_MAX_LINE;
    size_t pos = *hint & H_LOW32;
    int seen = (*hint & H_LINE_SEEN) != 0;
    if (pos < s || pos > len) pos = s;  /* a hint from another framing */
    size_t end = len - s < max_head ? len : s + max_head;
    while (pos < end) {
        const char *nl = memchr(data + pos, '\n', end - pos);
        if (nl == NULL) {
            pos = end;
            break;
        }
        size_t i = (size_t)(nl - data);
        if (!seen) {
            size_t ll = i - s - (i > s && data[i - 1] == '\r');
            if (ll > max_line) return fail(F_LINE_LONG, fault);
            seen = 1;
        }
        if (i + 1 < end && data[i + 1] == '\n') return (ssize_t)(i + 2);
        if (i + 2 < end && data[i + 1] == '\r' && data[i + 2] == '\n')
            return (ssize_t)(i + 3);
        if (i + 1 >= end || (data[i + 1] == '\r' && i + 2 >= end)) {
            pos = i;                            /* look again with more */
            break;
        }
        pos = i + 1;
    }
    /* No LF yet past the line's limit, or the head's limit reached with
     * the request line still unfinished: 414. */
    if (!seen && (len - s > max_line + 1 || len - s >= max_head))
        return fail(F_LINE_LONG, fault);
    if (len - s >= max_head) return fail(F_HEAD_LONG, fault);
    *hint = (seen ? H_LINE_SEEN : 0) | pos;
    return 0;
}

/* ---- the chunked body --------------------------------------------------- */

/* The most bytes of a chunked request that are not body: the head and as
 * much again, plus a quarter of the body's max, within the hint's field. */
static size_t overhead_max(const lsv_frame_spec_t *spec, size_t body_max)
{
    size_t m = 2 * (size_t)spec->max_bulk + body_max / 4 + MAX_LEADING;
    return m < H_OVER_MASK ? m : H_OVER_MASK;
}

/* A chunk size line p[0, n) (without its LF): hex digits, optional
 * whitespace and ;extensions, then CR. Sets *size (saturating past
 * limit + 1). */
static int chunk_line(const char *p, size_t n, uint64_t limit,
                      uint64_t *size)
{
    if (n < 2 || p[n - 1] != '\r') return F_CHUNK_LINE;
    n--;
    size_t i = 0;
    uint64_t x = 0;
    int d;
    while (i < n && (d = hexval(U(p[i]))) >= 0) {
        x = x * 16 + (uint64_t)d;
        if (x > limit) x = limit + 1;
        i++;
    }
    if (i == 0) return F_CHUNK_LINE;
    while (i < n && (p[i] == ' ' || p[i] == '\t')) i++;
    if (i < n && p[i] != ';') return F_CHUNK_LINE;
    for (; i < n; i++) {
        unsigned char c = U(p[i]);
        if ((c < 0x20 && c != '\t') || c == 0x7f) return F_CHUNK_LINE;
    }
    *size = x;
    return F_NONE;
}

/* A trailer line p[0, n) (without its LF): a field line ending in CR. */
static int trailer_line(const char *p, size_t n)
{
    if (n < 1 || p[n - 1] != '\r') return F_TRAILER;
    if (n == 1) return F_NONE;
    size_t nlen, vs, ve;
    return field_line(p, n - 1, &nlen, &vs, &ve) ? F_TRAILER : F_NONE;
}

/* Walks the chunked body from the state in *hint; returns the frame's
 * length once the last chunk and the trailers are in, 0 while more is
 * needed, or a fault result. */
static ssize_t scan_chunked(const lsv_frame_spec_t *spec, const char *data,
                            size_t len, size_t *hint, int *fault)
{
    size_t body_max = spec->max < LSV_FRAME_PROTO_HARD_MAX
                    ? spec->max : LSV_FRAME_PROTO_HARD_MAX;
    size_t over_max = overhead_max(spec, body_max);
    size_t h = *hint;
    size_t dec = (h >> H_DEC_SHIFT) & H_DEC_MASK, over = h & H_OVER_MASK;
    int trailers = (h & H_TRAILERS) != 0;
    for (;;) {
        size_t pos = dec + over;
        if (over > over_max) return fail(F_OVERHEAD, fault);
        if (unlikely(pos > len)) return fail(F_CHUNK_LINE, fault);
        size_t room = len - pos < LSV_HTTP_MAX_CHUNK_LINE
                    ? len - pos : LSV_HTTP_MAX_CHUNK_LINE;
        const char *nl = memchr(data + pos, '\n', room);
        if (nl == NULL) {
            if (room == LSV_HTTP_MAX_CHUNK_LINE)
                return fail(trailers ? F_TRAILER : F_CHUNK_LINE, fault);
            break;
        }
        size_t ll = (size_t)(nl - data) - pos, next = pos + ll + 1;
        if (trailers) {
            int f = trailer_line(data + pos, ll);
            if (f) return fail(f, fault);
            if (ll == 1) return (ssize_t)next;
            over += ll + 1;
            continue;
        }
        uint64_t size;
        int f = chunk_line(data + pos, ll, body_max - dec, &size);
        if (f) return fail(f, fault);
        if (size > body_max - dec) return fail(F_BODY_LONG, fault);
        if (size == 0) {
            trailers = 1;
            over += ll + 1;
            continue;
        }
        if (len - next < size + 2) break;
        if (data[next + size] != '\r' || data[next + size + 1] != '\n')
            return fail(F_CHUNK_CRLF, fault);
        dec += (size_t)size;
        over += ll + 1 + 2;
    }
    if (over > over_max) return fail(F_OVERHEAD, fault);
    *hint = (h & (H_CHUNKED | H_CONTINUE)) | (trailers ? H_TRAILERS : 0) |
            dec << H_DEC_SHIFT | over;
    return 0;
}

/* ---- the framer --------------------------------------------------------- */

/* lsv_http_frame's work; *fault names what made it fail. */
static ssize_t frame(const lsv_frame_spec_t *spec, const char *data,
                     size_t len, int eof, size_t *hint, size_t *mlen,
                     int *fault)
{
    size_t h = *hint;
    ssize_t r;
    if (h & H_CHUNKED) {
        r = scan_chunked(spec, data, len, hint, fault);
    } else if (h & H_LENGTH) {
        size_t total = h & H_LOW32;
        r = len >= total ? (ssize_t)total : 0;
    } else {
        size_t start = 0;
        r = scan_head(spec, data, len, hint, &start, fault);
        if (r <= 0) goto out;
        head_t hd = { 0 };
        int f = parse_head(data + start, (size_t)r - start,
                           spec->max_args, &hd);
        if (f) return fail(f, fault);
        size_t body_max = spec->max < LSV_FRAME_PROTO_HARD_MAX
                        ? spec->max : LSV_FRAME_PROTO_HARD_MAX;
        size_t cont = hd.expect ? H_CONTINUE : 0;
        if (hd.chunked) {
            *hint = H_CHUNKED | cont | (size_t)r;
            r = scan_chunked(spec, data, len, hint, fault);
        } else if (hd.has_cl && hd.cl > 0) {
            if (hd.cl > body_max) return fail(F_BODY_LONG, fault);
            size_t total = (size_t)r + (size_t)hd.cl;
            *hint = H_LENGTH | cont | total;
            r = len >= total ? (ssize_t)total : 0;
        }
    }
out:
    if (r > 0) {
        *mlen = (size_t)r;
        *hint = 0;
        return r;
    }
    if (r < 0) return r;
    return eof ? LSV_FRAME_TRUNCATED : LSV_FRAME_PARTIAL;
}

ssize_t lsv_http_frame(const lsv_frame_spec_t *spec, const char *data,
                       size_t len, int eof, size_t *hint, size_t *mlen)
{
    int fault = F_NONE;
    return frame(spec, data, len, eof, hint, mlen, &fault);
}

/* The reason phrase of the statuses the framer answers. */
static const char *reason(int status)
{
    switch (status) {
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    default: return "Bad Request";
    }
}

size_t lsv_http_reject(const lsv_frame_spec_t *spec, ssize_t r,
                       const char *data, size_t len, char *out, size_t cap,
                       const char **why)
{
    if (r == LSV_FRAME_TRUNCATED) {
        *why = "request cut off by the end of the stream";
        return 0;
    }
    /* Framing again from the start finds the same fault: the framer's
     * result does not depend on how the bytes arrived. */
    int fault = F_NONE;
    size_t hint = 0, mlen = 0;
    if (frame(spec, data, len, 0, &hint, &mlen, &fault) >= 0)
        fault = F_NONE;
    *why = faults[fault].why;
    int status = faults[fault].status;
    const char *rs = reason(status);
    int n = snprintf(out, cap, "HTTP/1.1 %d %s\r\nContent-Type: text/plain"
                     "\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n"
                     "%s\n", status, rs, strlen(rs) + 1, rs);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

size_t lsv_http_interim(const lsv_frame_spec_t *spec, const char *data,
                        size_t len, size_t *hint, char *out, size_t cap)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    (void)spec; (void)data; (void)len;
    if (!(*hint & H_CONTINUE) || cap < sizeof cont - 1) return 0;
    *hint &= ~H_CONTINUE;
    memcpy(out, cont, sizeof cont - 1);
    return sizeof cont - 1;
}

/* ---- walking a valid frame ---------------------------------------------- */

size_t lsv_http_request_line(const char *p, size_t n, lsv_http_line_t *rl)
{
    size_t s = 0;
    while (s < n && (p[s] == '\r' || p[s] == '\n')) s++;
    const char *lf = memchr(p + s, '\n', n - s);
    if (lf == NULL) return 0;
    size_t e = (size_t)(lf - p);
    const char *sp1 = memchr(p + s, ' ', e - s);
    if (sp1 == NULL) return 0;
    const char *t = sp1 + 1;
    const char *sp2 = memchr(t, ' ', (size_t)(p + e - t));
    if (sp2 == NULL || p + e - sp2 < 9) return 0;
    rl->method = p + s;
    rl->method_len = (size_t)(sp1 - (p + s));
    rl->target = t;
    rl->target_len = (size_t)(sp2 - t);
    rl->minor = sp2[8] - '0';
    return e + 1;
}

int lsv_http_field(const char *p, size_t n, size_t *i, const char **name,
                   size_t *nlen, const char **val, size_t *vlen)
{
    size_t at = *i;
    if (at >= n) return 0;
    const char *lf = memchr(p + at, '\n', n - at);
    size_t e = lf ? (size_t)(lf - p) : n;
    size_t le = e > at && p[e - 1] == '\r' ? e - 1 : e;
    *i = e + 1 < n ? e + 1 : n;
    if (le == at) return 0;
    const char *colon = memchr(p + at, ':', le - at);
    if (colon == NULL) return 0;
    size_t vs = (size_t)(colon - p) + 1, ve = le;
    while (vs < ve && (p[vs] == ' ' || p[vs] == '\t')) vs++;
    while (ve > vs && (p[ve - 1] == ' ' || p[ve - 1] == '\t')) ve--;
    *name = p + at;
    *nlen = (size_t)(colon - (p + at));
    *val = p + vs;
    *vlen = ve - vs;
    return 1;
}

int lsv_http_chunk(const char *p, size_t n, size_t *i, const char **data,
                   size_t *len)
{
    size_t at = *i;
    uint64_t x = 0;
    int d;
    while (at < n && (d = hexval(U(p[at]))) >= 0) {
        x = x * 16 + (uint64_t)d;
        if (x > n) x = n;
        at++;
    }
    const char *lf = at < n ? memchr(p + at, '\n', n - at) : NULL;
    if (lf == NULL || x == 0) return 0;
    size_t ds = (size_t)(lf - p) + 1;
    if (ds > n || n - ds < x) return 0;
    *data = p + ds;
    *len = (size_t)x;
    *i = ds + (size_t)x + 2 <= n ? ds + (size_t)x + 2 : n;
    return 1;
}

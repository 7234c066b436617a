/* resp.c: the RESP2 framer, commands (server) and replies (client); pure,
 * see resp.h. */
#include "lsv.h"
#include "resp.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

/* Why a frame was refused: the words after "Protocol error: ", Redis's
 * own where Redis has the case (networking.c), hiredis's for replies. */
enum {
    W_NONE, W_MBULK_LEN, W_BULK_LEN, W_DOLLAR, W_BULK_CRLF, W_INLINE_BIG,
    W_QUOTES, W_TYPE, W_INT, W_DEPTH
};

static const char *const WHY[] = {
    [W_NONE] = "bad frame",
    [W_MBULK_LEN] = "invalid multibulk length",
    [W_BULK_LEN] = "invalid bulk length",
    [W_DOLLAR] = "expected '$'",
    [W_BULK_CRLF] = "expected CRLF after bulk data",
    [W_INLINE_BIG] = "too big inline request",
    [W_QUOTES] = "unbalanced quotes in request",
    [W_TYPE] = "invalid reply type byte",
    [W_INT] = "invalid integer",
    [W_DEPTH] = "reply nested too deeply",
};

/* One scan of data[0, len): the input and, on LSV_FRAME_BAD, why and
 * where (lsv_resp_reject reports the byte for W_DOLLAR and W_TYPE). */
typedef struct scan {
    const lsv_frame_spec_t *spec;
    const char *p;
    size_t len;
    int why;
    size_t at;
} scan_t;

static ssize_t bad(scan_t *s, int why, size_t at)
{
    s->why = why;
    s->at = at;
    return LSV_FRAME_BAD;
}

/* A command's resume state: an element's offset and a count of elements
 * still expected, both under 2^32 (a frame is at most 1 GiB, a count at most
 * INT32_MAX). Where size_t cannot hold both, no resume: still correct,
 * only slower for frames that arrive in many reads. */
#if SIZE_MAX > 0xffffffffu
static size_t pack(size_t pos, uint32_t left)
{
    return ((size_t)left << 32) | pos;
}

/* Whether hint is a resume state that fits data of len bytes (min: the
 * least offset an element can have there); fills *pos and *left. */
static int unpack(size_t hint, size_t len, size_t min, size_t *pos,
                  uint32_t *left)
{
    *pos = hint & 0xffffffffu;
    *left = (uint32_t)(hint >> 32);
    return *left > 0 && *pos >= min && *pos <= len;
}
#else
static size_t pack(size_t pos, uint32_t left)
{
    (void)pos; (void)left;
    return 0;
}

static int unpack(size_t hint, size_t len, size_t min, size_t *pos,
                  uint32_t *left)
{
    (void)hint; (void)len; (void)min; (void)pos; (void)left;
    return 0;
}
#endif

/* Reads "<integer>\r\n" at p[*pos] (just after the type byte) as Redis's
 * string2ll does: an optional '-', digits with no leading zero, no
 * overflow. Returns 1 with *v set and *pos past the CRLF; 0 when the line
 * is not all in yet; -1 when it is not an integer. The digits are
 * checked as they come, so a line that cannot be one fails before its
 * CRLF: a partial length line is never more than 21 bytes. */
static int read_int(const char *p, size_t len, size_t *pos, long long *v)
{
    size_t i = *pos;
    int neg = i < len && p[i] == '-';
    i += (size_t)neg;
    size_t start = i;
    unsigned long long u = 0;
    const unsigned long long lim = (unsigned long long)LLONG_MAX + (unsigned)neg;
    for (; i < len; i++) {
        unsigned d = (unsigned)(unsigned char)p[i] - '0';
        if (d > 9)
            break;
        if (unlikely(i > start && u == 0))
            return -1;                  /* a leading zero */
        if (unlikely(u > (lim - d) / 10))
            return -1;
        u = u * 10 + d;
    }
    if (i == len)
        return 0;
    if (unlikely(i == start || p[i] != '\r'))
        return -1;
    if (i + 1 == len)
        return 0;
    if (unlikely(p[i + 1] != '\n'))
        return -1;
    *v = neg ? (u == 0 ? 0 : -(long long)(u - 1) - 1) : (long long)u;
    *pos = i + 2;
    return 1;
}

/* The offset of the first CRLF in p[from, len), or len when there is none
 * yet (a last '\r' may start one). A lone '\r' is data, as for hiredis. */
static size_t find_crlf(const char *p, size_t from, size_t len)
{
    while (from < len) {
        const char *r = memchr(p + from, '\r', len - from);
        if (r == NULL)
            return len;
        size_t i = (size_t)(r - p);
        if (i + 1 >= len)
            return len;
        if (p[i + 1] == '\n')
            return i;
        from = i + 1;
    }
    return len;
}

/* A bulk's "$<len>\r\n" at p[at] (its '$' checked by the caller) and its
 * payload. Returns 1 with *pos past the payload's CRLF (at + the header
 * when *bl is -1, a null, allowed only with null_ok); 0 while partial; else
 * an LSV_FRAME_* error. The payload is skipped by its length. */
static ssize_t bulk(scan_t *s, size_t at, int null_ok, size_t *pos,
                    long long *bl)
{
    const lsv_frame_spec_t *spec = s->spec;
    size_t i = at + 1;
    int k = read_int(s->p, s->len, &i, bl);
    if (k == 0)
        return 0;
    if (unlikely(k < 0 || *bl < -1 || (*bl == -1 && !null_ok) ||
                 *bl > (long long)spec->max_bulk))
        return bad(s, W_BULK_LEN, at);
    if (*bl == -1) {
        *pos = i;
        return i > spec->max ? LSV_FRAME_TOO_LONG : 1;
    }
    if (unlikely((uint64_t)i + (uint64_t)*bl + 2 > spec->max))
        return LSV_FRAME_TOO_LONG;
    size_t end = i + (size_t)*bl;
    if (end + 2 > s->len)
        return 0;
    if (unlikely(s->p[end] != '\r' || s->p[end + 1] != '\n'))
        return bad(s, W_BULK_CRLF, end);
    *pos = end + 2;
    return 1;
}

/* Server: "*N\r\n" then N bulks. *hint resumes at the next bulk. */
static ssize_t multibulk(scan_t *s, size_t *hint, size_t *mlen)
{
    const lsv_frame_spec_t *spec = s->spec;
    size_t pos;
    uint32_t left;
    if (!unpack(*hint, s->len, 4, &pos, &left)) {
        long long n;
        pos = 1;
        int k = read_int(s->p, s->len, &pos, &n);
        if (k == 0) {
            *hint = 0;
            return LSV_FRAME_PARTIAL;
        }
        if (unlikely(k < 0 || n > (long long)spec->max_args || n > INT32_MAX))
            return bad(s, W_MBULK_LEN, 0);
        if (unlikely(pos > spec->max))
            return LSV_FRAME_TOO_LONG;
        if (n <= 0) {                   /* "*0", "*-1": nothing, as Redis */
            *mlen = pos;
            return (ssize_t)pos;
        }
        left = (uint32_t)n;
    }
    while (left > 0) {
        if (pos >= s->len)
            break;
        if (unlikely(s->p[pos] != '$'))
            return bad(s, W_DOLLAR, pos);
        size_t next;
        long long bl;
        ssize_t r = bulk(s, pos, 0, &next, &bl);
        if (r == 0)
            break;
        if (r < 0)
            return r;
        pos = next;
        left--;
    }
    if (left > 0) {
        *hint = pack(pos, left);
        return LSV_FRAME_PARTIAL;
    }
    *mlen = pos;
    return (ssize_t)pos;
}

/* Server: an inline command, a line up to LF. *hint is how far it was
 * searched. The line's limit is Redis's 64 KiB, or max when smaller (then
 * the error is TOO_LONG): either way decided by the line's length alone,
 * so the verdict does not depend on how the bytes arrived. */
static ssize_t inline_cmd(scan_t *s, size_t *hint, size_t *mlen)
{
    const lsv_frame_spec_t *spec = s->spec;
    size_t lim = LSV_RESP_INLINE_MAX;
    int too_long = spec->max > 0 && (size_t)spec->max - 1 < lim;
    if (too_long)
        lim = (size_t)spec->max - 1;
    size_t from = *hint <= s->len ? *hint : 0;
    size_t upto = s->len < lim + 1 ? s->len : lim + 1;
    const char *nl = from < upto ? memchr(s->p + from, '\n', upto - from)
                                 : NULL;
    if (nl == NULL) {
        if (unlikely(s->len > lim))
            return too_long ? LSV_FRAME_TOO_LONG : bad(s, W_INLINE_BIG, 0);
        *hint = s->len;
        return LSV_FRAME_PARTIAL;
    }
    size_t n = (size_t)(nl - s->p) + 1;
    size_t pos = 0, argc = 0, olen;
    int k;
    while ((k = lsv_resp_inline_arg(s->p, n, &pos, NULL, &olen)) == 1)
        argc++;
    if (unlikely(k < 0))
        return bad(s, W_QUOTES, 0);
    if (unlikely(argc > spec->max_args))
        return bad(s, W_MBULK_LEN, 0);
    *mlen = n;
    return (ssize_t)n;
}

/* Client, a top-level simple string or error: *hint is how far the line
 * was searched. */
static ssize_t simple_reply(scan_t *s, size_t *hint, size_t *mlen)
{
    size_t from = *hint >= 1 && *hint <= s->len ? *hint : 1;
    size_t e = find_crlf(s->p, from, s->len);
    if (e >= s->len) {
        if (unlikely(s->len > s->spec->max))
            return LSV_FRAME_TOO_LONG;
        *hint = s->len > 1 ? s->len - 1 : 1;
        return LSV_FRAME_PARTIAL;
    }
    if (unlikely(e + 2 > s->spec->max))
        return LSV_FRAME_TOO_LONG;
    *mlen = e + 2;
    return (ssize_t)(e + 2);
}

/* Client: one element at p[pos]. Returns 1 with *pos past it (past the
 * header of an array of *count > 0 elements, which follow), 0 while
 * partial, or an LSV_FRAME_* error. */
static ssize_t element(scan_t *s, size_t *pos, long long *count)
{
    const lsv_frame_spec_t *spec = s->spec;
    size_t at = *pos, i = at + 1, e;
    long long v;
    int k;
    *count = 0;
    switch (s->p[at]) {
    case '+':
    case '-':
        e = find_crlf(s->p, i, s->len);
        if (e >= s->len)
            return s->len > spec->max ? LSV_FRAME_TOO_LONG : 0;
        *pos = e + 2;
        break;
    case ':':
        k = read_int(s->p, s->len, &i, &v);
        if (k <= 0)
            return k == 0 ? 0 : bad(s, W_INT, at);
        *pos = i;
        break;
    case '$':
        return bulk(s, at, 1, pos, &v);
    case '*':
        k = read_int(s->p, s->len, &i, &v);
        if (k == 0)
            return 0;
        if (unlikely(k < 0 || v < -1 || v > (long long)spec->max_args ||
                     v > INT32_MAX))
            return bad(s, W_MBULK_LEN, at);
        *count = v;
        *pos = i;
        break;
    default:
        return bad(s, W_TYPE, at);
    }
    return *pos > spec->max ? LSV_FRAME_TOO_LONG : 1;
}

/* A reply's resume state: the stack of counts still expected by the
 * arrays open at an anchor, the offset of the element the innermost of
 * them reads next. Levels are packed up to RESUME_LEVELS deep: the offset
 * in the low 32 bits (so a hint never points past the data), then 2 bits
 * for the level count k - 1, then 30 bits holding the outer k - 1 counts
 * in Elias gamma code (1 takes 1 bit, 2-3 take 3, 100 takes 13) and the
 * innermost count raw in the bits left. Counts are under 2^29 (each
 * element takes 3 bytes or more of a frame of at most 1 GiB, checked as
 * an array's header announces them), so one level always fits; deeper
 * stacks fit when their outer counts are small, as in the usual shapes
 * (an EXEC reply, SCAN's cursor and keys, XRANGE's entries). */
#define RESUME_LEVELS 4
#define RESUME_BITS 30

#if SIZE_MAX > 0xffffffffu
/* Packs the stack c[0, k) at offset pos; returns 0 when it does not fit. */
static size_t reply_pack(size_t pos, const uint32_t *c, int k)
{
    uint64_t bits = 0;
    int used = 0;
    if (pos > 0xffffffffu || k < 1 || k > RESUME_LEVELS)
        return 0;
    for (int i = 0; i < k - 1; i++) {
        int w = 32 - __builtin_clz(c[i]);   /* c[i] >= 1 */
        if (used + 2 * w - 1 > RESUME_BITS)
            return 0;
        used += w - 1;                      /* w - 1 zeros, a 1 (the top */
        bits |= (uint64_t)1 << used++;      /* bit), then the w - 1 below */
        bits |= (uint64_t)(c[i] & ((1u << (w - 1)) - 1)) << used;
        used += w - 1;
    }
    if (c[k - 1] >> (RESUME_BITS - used) != 0)
        return 0;
    bits |= (uint64_t)c[k - 1] << used;
    return (size_t)pos | (size_t)(k - 1) << 32 | (size_t)bits << 34;
}

/* Unpacks a hint into *pos and c[0, k), returning k; 0 when hint is not
 * a resume state that fits data of len bytes (a count of 0, an offset
 * before the first element or past len, a code that runs out). */
static int reply_unpack(size_t hint, size_t len, size_t *pos, uint32_t *c)
{
    int k = (int)(hint >> 32 & 3) + 1, used = 0;
    uint64_t bits = (uint64_t)hint >> 34;
    *pos = hint & 0xffffffffu;
    if (*pos < 4 || *pos > len)
        return 0;
    for (int i = 0; i < k - 1; i++) {
        uint64_t rest = bits >> used;
        if (rest == 0)
            return 0;
        int z = __builtin_ctzll(rest);      /* the code's w - 1 zeros */
        if (used + 2 * z + 1 > RESUME_BITS)
            return 0;
        c[i] = (uint32_t)(1ull << z | (rest >> (z + 1) & ((1ull << z) - 1)));
        used += 2 * z + 1;
    }
    c[k - 1] = (uint32_t)(bits >> used);
    return c[k - 1] > 0 ? k : 0;
}
#else
static size_t reply_pack(size_t pos, const uint32_t *c, int k)
{
    (void)pos; (void)c; (void)k;
    return 0;
}

static int reply_unpack(size_t hint, size_t len, size_t *pos, uint32_t *c)
{
    (void)hint; (void)len; (void)pos; (void)c;
    return 0;
}
#endif

/* The resume state to keep at a partial reply: the deepest anchor level
 * (at most RESUME_LEVELS, and not above low, the shallowest level whose
 * anchor at[] this scan saw) whose stack packs. */
static size_t reply_hint(const size_t *at, const uint32_t *stack, int depth,
                         int low)
{
    for (int k = depth < RESUME_LEVELS ? depth : RESUME_LEVELS; k >= 1 &&
         k >= low; k--) {
        size_t h = reply_pack(at[k], stack, k);
        if (h != 0)
            return h;
    }
    return 0;
}

/* Client: one reply, arrays nested up to LSV_RESP_MAX_DEPTH, walked with
 * a stack of the counts still expected per level. at[k] is where the
 * element the level-k array reads next begins (its anchor): *hint resumes
 * at the deepest anchor it can pack (see reply_pack), so only a partial
 * element nested deeper than that is scanned again on the next call. */
static ssize_t reply(scan_t *s, size_t *hint, size_t *mlen)
{
    uint32_t stack[LSV_RESP_MAX_DEPTH];
    size_t at[RESUME_LEVELS + 1] = { 0 };
    int depth = 0, low;
    size_t pos = 0;
    if (s->p[0] == '+' || s->p[0] == '-')
        return simple_reply(s, hint, mlen);
    if (s->p[0] == '*')
        depth = reply_unpack(*hint, s->len, &pos, stack);
    low = depth;
    for (;;) {
        if (depth <= RESUME_LEVELS)
            at[depth] = pos;
        if (depth < low)
            low = depth;
        if (pos >= s->len)
            break;
        long long count;
        ssize_t r = element(s, &pos, &count);
        if (r == 0)
            break;
        if (r < 0)
            return r;
        if (count > 0) {
            if (unlikely(depth == LSV_RESP_MAX_DEPTH))
                return bad(s, W_DEPTH, pos);
            /* Each element takes 3 bytes or more ("+\r\n"). */
            if (unlikely((uint64_t)pos + 3 * (uint64_t)count > s->spec->max))
                return LSV_FRAME_TOO_LONG;
            stack[depth++] = (uint32_t)count;
            continue;
        }
        while (depth > 0 && --stack[depth - 1] == 0)
            depth--;
        if (depth == 0) {
            *mlen = pos;
            return (ssize_t)pos;
        }
    }
    *hint = depth > 0 ? reply_hint(at, stack, depth, low) : 0;
    return LSV_FRAME_PARTIAL;
}

static ssize_t scan(scan_t *s, size_t *hint, size_t *mlen)
{
    if (s->spec->client)
        return reply(s, hint, mlen);
    return s->p[0] == '*' ? multibulk(s, hint, mlen)
                          : inline_cmd(s, hint, mlen);
}

ssize_t lsv_resp_frame(const lsv_frame_spec_t *spec, const char *data,
                       size_t len, int eof, size_t *hint, size_t *mlen)
{
    *mlen = 0;
    if (len == 0) {
        *hint = 0;
        return LSV_FRAME_PARTIAL;
    }
    scan_t s = { spec, data, len, W_NONE, 0 };
    ssize_t r = scan(&s, hint, mlen);
    if (r == LSV_FRAME_PARTIAL)
        return eof ? LSV_FRAME_TRUNCATED : LSV_FRAME_PARTIAL;
    *hint = 0;
    if (r < 0)
        *mlen = 0;
    return r;
}

size_t lsv_resp_reject(const lsv_frame_spec_t *spec, ssize_t r,
                       const char *data, size_t len, char *out, size_t cap,
                       const char **why)
{
    const char *what;
    char got = 0;
    if (r == LSV_FRAME_TRUNCATED) {
        *why = spec->client ? "reply cut off at end of stream"
                            : "connection closed in the middle of a command";
        return 0;
    }
    if (r == LSV_FRAME_TOO_LONG) {
        *why = spec->client ? "reply over the framing's max"
                            : "command over the framing's max";
        what = "too big command";
    } else {
        /* Find the fault again: the framer is deterministic, and a resumed
         * scan reaches the verdict a whole one does. */
        scan_t s = { spec, data, len, W_NONE, 0 };
        size_t hint = 0, mlen;
        if (len == 0 || scan(&s, &hint, &mlen) != LSV_FRAME_BAD)
            s.why = W_NONE;
        what = *why = WHY[s.why];
        if (s.why == W_DOLLAR || s.why == W_TYPE) {
            got = data[s.at];
            if (got == '\r' || got == '\n')
                got = ' ';              /* as Redis: the reply stays a line */
        }
    }
    if (spec->client || cap == 0)
        return 0;
    int n = got ? snprintf(out, cap, "-ERR Protocol error: %s, got '%c'\r\n",
                           what, got)
                : snprintf(out, cap, "-ERR Protocol error: %s\r\n", what);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

int lsv_resp_item(const char *p, size_t n, size_t *pos, lsv_resp_item_t *it)
{
    size_t i = *pos;
    if (i >= n)
        return 0;
    it->type = p[i];
    it->num = 0;
    it->str = NULL;
    it->len = 0;
    switch (p[i]) {
    case '+':
    case '-': {
        size_t e = find_crlf(p, i + 1, n);
        if (e >= n)
            return 0;
        it->str = p + i + 1;
        it->len = e - i - 1;
        *pos = e + 2;
        return 1;
    }
    case ':':
    case '$':
    case '*': {
        size_t j = i + 1;
        if (read_int(p, n, &j, &it->num) != 1)
            return 0;
        if (it->type == '$' && it->num >= 0) {
            if ((unsigned long long)it->num > n - j ||
                n - j - (size_t)it->num < 2)
                return 0;
            it->str = p + j;
            it->len = (size_t)it->num;
            j += it->len + 2;
        }
        *pos = j;
        return 1;
    }
    default:
        return 0;
    }
}

/* isspace() in the C locale, whatever the process's locale is. */
static int is_space(int c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

static int hex_value(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The byte at p[i] of a line ending at end, 0 past it: sdssplitargs reads
 * a C string, and a NUL in the line ends it there as it does in Redis. */
#define AT(i) ((i) < end ? (unsigned char)p[i] : 0)

/* Mirrors sdssplitargs (Redis's sds.c) argument by argument; see resp.h. */
int lsv_resp_inline_arg(const char *p, size_t n, size_t *pos, char *out,
                        size_t *olen)
{
    size_t end = n, i = *pos, k = 0;
    if (end > 0 && p[end - 1] == '\n') end--;
    if (end > 0 && p[end - 1] == '\r') end--;
    while (is_space(AT(i)))
        i++;
    *pos = i;
    *olen = 0;
    if (AT(i) == 0)
        return 0;
    int inq = 0, insq = 0, done = 0;
    while (!done) {
        int c = AT(i), put = -1;
        if (inq) {
            if (c == '\\' && AT(i + 1) == 'x' && hex_value(AT(i + 2)) >= 0 &&
                hex_value(AT(i + 3)) >= 0) {
                put = hex_value(AT(i + 2)) * 16 + hex_value(AT(i + 3));
                i += 3;
            } else if (c == '\\' && AT(i + 1)) {
                i++;
                c = AT(i);
                put = c == 'n' ? '\n' : c == 'r' ? '\r' : c == 't' ? '\t'
                    : c == 'b' ? '\b' : c == 'a' ? '\a' : c;
            } else if (c == '"') {
                if (AT(i + 1) && !is_space(AT(i + 1)))
                    return -1;          /* closing quote must end the arg */
                done = 1;
            } else if (c == 0) {
                return -1;              /* unterminated quotes */
            } else {
                put = c;
            }
        } else if (insq) {
            if (c == '\\' && AT(i + 1) == '\'') {
                i++;
                put = '\'';
            } else if (c == '\'') {
                if (AT(i + 1) && !is_space(AT(i + 1)))
                    return -1;
                done = 1;
            } else if (c == 0) {
                return -1;
            } else {
                put = c;
            }
        } else if (c == ' ' || c == '\n' || c == '\r' || c == '\t' ||
                   c == 0) {
            done = 1;
        } else if (c == '"') {
            inq = 1;
        } else if (c == '\'') {
            insq = 1;
        } else {
            put = c;
        }
        if (put >= 0) {
            if (out) out[k] = (char)put;
            k++;
        }
        if (AT(i)) i++;
    }
    *pos = i;
    *olen = k;
    return 1;
}

#undef AT

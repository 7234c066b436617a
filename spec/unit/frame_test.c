/* frame_test.c: unit tests of the framer (frame.c), printed as TAP. */
#include "lsv.h"
#include "frame.h"
#include "tap.h"
#include "guard.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* ---- specs ------------------------------------------------------------- */

static lsv_frame_spec_t line_spec(uint32_t max, int keep_eol)
{
    lsv_frame_spec_t s;
    lsv_frame_spec_init(&s, LSV_FRAME_LINE);
    s.max = max;
    s.keep_eol = (uint8_t)keep_eol;
    return s;
}

static lsv_frame_spec_t delim_spec(const char *d, size_t dlen, uint32_t max,
                                   int keep_eol)
{
    lsv_frame_spec_t s;
    lsv_frame_spec_init(&s, LSV_FRAME_DELIM);
    memcpy(s.delim, d, dlen);
    s.delim_len = (uint8_t)dlen;
    s.max = max;
    s.keep_eol = (uint8_t)keep_eol;
    return s;
}

static lsv_frame_spec_t fixed_spec(uint32_t size)
{
    lsv_frame_spec_t s;
    lsv_frame_spec_init(&s, LSV_FRAME_FIXED);
    s.size = size;
    return s;
}

static lsv_frame_spec_t prefix_spec(int prefix_len, int big_endian,
                                    uint32_t max)
{
    lsv_frame_spec_t s;
    lsv_frame_spec_init(&s, LSV_FRAME_PREFIX);
    s.prefix_len = (uint8_t)prefix_len;
    s.big_endian = (uint8_t)big_endian;
    s.max = max;
    return s;
}

static lsv_frame_spec_t raw_spec(uint32_t max)
{
    lsv_frame_spec_t s;
    lsv_frame_spec_init(&s, LSV_FRAME_RAW);
    s.max = max;
    return s;
}

/* The most bytes a caller may hold while the framer says PARTIAL: the
 * framer's promise that a peer cannot make the buffer grow without bound. */
static size_t partial_bound(const lsv_frame_spec_t *s)
{
    switch (s->kind) {
    case LSV_FRAME_LINE: return (size_t)s->max + 1;
    case LSV_FRAME_DELIM: return (size_t)s->max + s->delim_len - 1;
    case LSV_FRAME_FIXED: return (size_t)s->size - 1;
    case LSV_FRAME_PREFIX: return (size_t)s->prefix_len + s->max - 1;
    default: return 0;
    }
}

/* ---- the stream driver ---------------------------------------------------
 * Plays a connection: bytes arrive in chunks, the framer is called after
 * each arrival until it wants more, frames are consumed, the hint is carried
 * and reset as frame.h asks; then eof. The result is a transcript: each
 * payload escaped in brackets, then "!too long" or "!truncated" if the
 * stream ended so. RAW transcripts join payloads without brackets, since
 * RAW frames follow the arrival pattern by design.
 *
 * Every call also checks the contract: the framer sees an exact-size heap
 * copy (ASan catches an over-read), a call with a fresh hint agrees with
 * the carried one, the payload lies inside the frame, PARTIAL leaves the
 * hint inside the data and the buffer within partial_bound(), TRUNCATED
 * comes only at eof, and PARTIAL at eof only when nothing is left. */

typedef struct run {
    char out[8192];
    size_t outlen;
    int violations;
} run_t;

static void out_put(run_t *r, const char *s)
{
    size_t n = strlen(s);
    if (r->outlen + n >= sizeof r->out) {
        r->violations++;
        return;
    }
    memcpy(r->out + r->outlen, s, n + 1);
    r->outlen += n;
}

static void out_escaped(run_t *r, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        char tmp[8];
        if (c == '\r')
            out_put(r, "\\r");
        else if (c == '\n')
            out_put(r, "\\n");
        else if (c < 0x20 || c >= 0x7f || c == '\\' || c == '[' || c == ']') {
            snprintf(tmp, sizeof tmp, "\\x%02x", c);
            out_put(r, tmp);
        } else {
            tmp[0] = (char)c;
            tmp[1] = '\0';
            out_put(r, tmp);
        }
    }
}

static ssize_t call_checked(const lsv_frame_spec_t *s, const char *data,
                            size_t have, int eof, size_t *hint, size_t *off,
                            size_t *mlen, run_t *r)
{
    char *copy = malloc(have ? have : 1);
    if (copy == NULL) {
        perror("malloc");
        exit(2);
    }
    memcpy(copy, data, have);
    ssize_t n = lsv_frame_next(s, copy, have, eof, hint, off, mlen);

    size_t fresh_hint = 0, off0, mlen0;
    ssize_t n0 = lsv_frame_next(s, copy, have, eof, &fresh_hint, &off0,
                                &mlen0);
    free(copy);

    int ok = 1;
    ok &= n == n0 && (n <= 0 || (*off == off0 && *mlen == mlen0));
    if (n > 0)
        ok &= (size_t)n <= have && *off + *mlen <= (size_t)n;
    else
        ok &= *off == 0 && *mlen == 0;
    if (n == LSV_FRAME_PARTIAL) {
        ok &= *hint <= have;
        ok &= eof ? have == 0 : have <= partial_bound(s);
    }
    if (n == LSV_FRAME_TRUNCATED)
        ok &= eof && s->kind != LSV_FRAME_LINE && s->kind != LSV_FRAME_DELIM;
    ok &= n >= LSV_FRAME_TRUNCATED;
    if (!ok)
        r->violations++;
    return n;
}

/* Frames everything in data[*start, avail); returns 1 once the stream ended
 * in an error, which the caller then stops feeding. */
static int drain(const lsv_frame_spec_t *s, const char *in, size_t *start,
                 size_t avail, int eof, size_t *hint, run_t *r)
{
    for (;;) {
        size_t off, mlen;
        ssize_t n = call_checked(s, in + *start, avail - *start, eof, hint,
                                 &off, &mlen, r);
        if (n == LSV_FRAME_PARTIAL)
            return 0;
        if (n == LSV_FRAME_TOO_LONG) {
            out_put(r, "!too long");
            return 1;
        }
        if (n == LSV_FRAME_TRUNCATED) {
            out_put(r, "!truncated");
            return 1;
        }
        if (s->kind != LSV_FRAME_RAW)
            out_put(r, "[");
        out_escaped(r, in + *start + off, mlen);
        if (s->kind != LSV_FRAME_RAW)
            out_put(r, "]");
        *start += (size_t)n;
        *hint = 0;
    }
}

/* Delivers in[0, cuts[0]), then up to cuts[1], ..., then all n, then eof. */
static void run_stream(const lsv_frame_spec_t *s, const char *in, size_t n,
                       const size_t *cuts, size_t ncuts, run_t *r)
{
    size_t start = 0, hint = 0;
    r->outlen = 0;
    r->out[0] = '\0';
    r->violations = 0;
    for (size_t c = 0; c <= ncuts; c++) {
        size_t avail = c < ncuts ? cuts[c] : n;
        if (drain(s, in, &start, avail, 0, &hint, r))
            return;
    }
    drain(s, in, &start, n, 1, &hint, r);
}

/* Runs one schedule and compares with want; returns 0 on a mismatch. */
static int expect_run(const lsv_frame_spec_t *s, const char *in, size_t n,
                      const size_t *cuts, size_t ncuts, const char *want,
                      const char *what)
{
    static run_t r;
    run_stream(s, in, n, cuts, ncuts, &r);
    CHECKF(strcmp(r.out, want) == 0, "%s: got \"%s\", want \"%s\"", what,
           r.out, want);
    CHECKF(r.violations == 0, "%s: %d contract violations", what,
           r.violations);
    return strcmp(r.out, want) == 0 && r.violations == 0;
}

/* Random arrival points, increasing, inside (0, n). */
static size_t random_cuts(size_t n, size_t *cuts)
{
    size_t k = 0;
    for (size_t at = 1 + rng() % 4; at < n; at += 1 + rng() % 5)
        cuts[k++] = at;
    return k;
}

/* Every (spec, input) of a stream case, kept for the guard page test. */
#define MAX_CASES 128
#define MAX_INPUT 512
static struct {
    lsv_frame_spec_t spec;
    char in[MAX_INPUT];
    size_t n;
} cases[MAX_CASES];
static size_t ncases;

/* Checks that one input gives the same transcript however it arrives: all
 * at once, one byte at a time, and split in two at every point. */
static void stream_case(const char *desc, lsv_frame_spec_t s, const char *in,
                        size_t n, const char *want)
{
    static size_t cuts[MAX_INPUT];
    char what[64];

    CHECKF(n <= MAX_INPUT, "input of %zu bytes is over MAX_INPUT", n);
    if (n > MAX_INPUT) {
        test_done(desc);
        return;
    }

    if (ncases < MAX_CASES) {
        cases[ncases].spec = s;
        memcpy(cases[ncases].in, in, n);
        cases[ncases].n = n;
        ncases++;
    }

    expect_run(&s, in, n, NULL, 0, want, "all at once");
    for (size_t i = 1; i < n; i++)
        cuts[i - 1] = i;
    expect_run(&s, in, n, cuts, n ? n - 1 : 0, want, "a byte at a time");
    for (size_t i = 0; i <= n; i++) {
        cuts[0] = i;
        snprintf(what, sizeof what, "split at %zu", i);
        if (!expect_run(&s, in, n, cuts, 1, want, what))
            break;
    }
    for (int k = 0; k < 20; k++) {
        size_t nc = random_cuts(n, cuts);
        if (!expect_run(&s, in, n, cuts, nc, want, "random chunks"))
            break;
    }
    test_done(desc);
}

/* String literal and its length, NULs included. */
#define S(lit) (lit), (sizeof(lit) - 1)

/* ---- stream cases --------------------------------------------------------*/

static void test_line_streams(void)
{
    stream_case("line: LF-terminated lines", line_spec(64, 0),
                S("one\ntwo\n\nthree\n"), "[one][two][][three]");
    stream_case("line: CRLF stripped, LF and CRLF mixed", line_spec(64, 0),
                S("one\r\ntwo\n\r\nfour\r\n"), "[one][two][][four]");
    stream_case("line: keep_eol keeps LF or CRLF", line_spec(64, 1),
                S("a\r\nb\n\n\r\n"), "[a\\r\\n][b\\n][\\n][\\r\\n]");
    stream_case("line: a CR not before LF is data", line_spec(64, 0),
                S("a\rb\nc\r\r\n\r"), "[a\\rb][c\\r][\\r]");
    stream_case("line: partial line at eof is the last frame",
                line_spec(64, 0), S("a\nlast"), "[a][last]");
    stream_case("line: partial line at eof keeps a trailing CR",
                line_spec(64, 1), S("a\r\nlast\r"), "[a\\r\\n][last\\r]");
    stream_case("line: eof with nothing buffered gives no frame",
                line_spec(64, 0), S(""), "");
    stream_case("line: NUL bytes are data", line_spec(64, 0),
                S("a\0b\n\0\n"), "[a\\x00b][\\x00]");
    stream_case("line: payload of exactly max passes", line_spec(4, 0),
                S("abcd\r\nabcd\nabcd"), "[abcd][abcd][abcd]");
    stream_case("line: max ignores the kept terminator", line_spec(4, 1),
                S("abcd\r\n"), "[abcd\\r\\n]");
    stream_case("line: over max when the terminator arrives",
                line_spec(4, 0), S("ab\nabcde\nzz\n"), "[ab]!too long");
    stream_case("line: over max with CRLF", line_spec(4, 0),
                S("abcde\r\n"), "!too long");
    stream_case("line: over max, terminator never comes", line_spec(4, 0),
                S("ab\nabcdefghijklmnopqrstuvwxyz"), "[ab]!too long");
    stream_case("line: over max at eof, CR counted as data",
                line_spec(4, 0), S("abcd\r"), "!too long");
    stream_case("line: max 0 allows only empty lines", line_spec(0, 0),
                S("\n\r\n\nx\n"), "[][][]!too long");
}

static void test_delim_streams(void)
{
    stream_case("delim: multi-byte delimiter",
                delim_spec(S("\r\n\r\n"), 64, 0),
                S("GET /\r\nHost: x\r\n\r\nnext\r\n\r\n"),
                "[GET /\\r\\nHost: x][next]");
    stream_case("delim: keep_eol keeps the delimiter",
                delim_spec(S("||"), 64, 1), S("a||b||||"),
                "[a||][b||][||]");
    stream_case("delim: one-byte delimiter", delim_spec(S(";"), 64, 0),
                S("a;b;;c"), "[a][b][][c]");
    stream_case("delim: self-overlapping delimiter",
                delim_spec(S("aab"), 64, 0), S("xaaabaaaabaab"),
                "[xa][aa][]");
    stream_case("delim: NUL bytes in the delimiter",
                delim_spec(S("\0\0"), 64, 0), S("a\0b\0\0\0\0c\0"),
                "[a\\x00b][][c\\x00]");
    stream_case("delim: 32-byte delimiter",
                delim_spec(S("0123456789abcdef0123456789ABCDEF"), 64, 0),
                S("x0123456789abcdef0123456789ABCDEFy"
                  "0123456789abcdef0123456789ABCDE"),
                "[x][y0123456789abcdef0123456789ABCDE]");
    stream_case("delim: trailing record at eof",
                delim_spec(S("\r\n\r\n"), 64, 0), S("a\r\n\r\nb\r\n"),
                "[a][b\\r\\n]");
    stream_case("delim: max passes; a partial delimiter at eof is data",
                delim_spec(S("||"), 3, 0), S("abc||abc|"), "[abc]!too long");
    stream_case("delim: over max when the delimiter arrives",
                delim_spec(S("||"), 3, 0), S("abc||abcd||"), "[abc]!too long");
    stream_case("delim: over max, delimiter never comes",
                delim_spec(S("||"), 3, 0), S("abc||abcdefghijklmn"),
                "[abc]!too long");
    stream_case("delim: over max with a partial delimiter pending",
                delim_spec(S("<END>"), 3, 0), S("abc<EN!"), "!too long");
    stream_case("delim: eof with nothing buffered gives no frame",
                delim_spec(S("||"), 3, 0), S(""), "");
}

static void test_fixed_streams(void)
{
    stream_case("fixed: frames of exactly size", fixed_spec(3),
                S("abcdefghi"), "[abc][def][ghi]");
    stream_case("fixed: size 1", fixed_spec(1), S("x\ny"), "[x][\\n][y]");
    stream_case("fixed: truncated at eof", fixed_spec(3), S("abcdefgh"),
                "[abc][def]!truncated");
    stream_case("fixed: eof with nothing buffered gives no frame",
                fixed_spec(3), S(""), "");
}

static void test_prefix_streams(void)
{
    stream_case("prefix: 1 byte", prefix_spec(1, 1, 255),
                S("\x03" "abc" "\x00" "\x01" "z"), "[abc][][z]");
    stream_case("prefix: 2 bytes big endian", prefix_spec(2, 1, 1024),
                S("\x00\x03" "abc" "\x00\x00" "\x00\x01" "\n"),
                "[abc][][\\n]");
    stream_case("prefix: 2 bytes little endian", prefix_spec(2, 0, 1024),
                S("\x03\x00" "abc" "\x00\x00"), "[abc][]");
    stream_case("prefix: 4 bytes big endian", prefix_spec(4, 1, 1024),
                S("\0\0\0\x02" "hi" "\0\0\0\0"), "[hi][]");
    stream_case("prefix: 4 bytes little endian", prefix_spec(4, 0, 1024),
                S("\x02\0\0\0" "hi" "\0\0\0\0"), "[hi][]");
    stream_case("prefix: 8 bytes big endian", prefix_spec(8, 1, 1024),
                S("\0\0\0\0\0\0\0\x02" "hi" "\0\0\0\0\0\0\0\0"), "[hi][]");
    stream_case("prefix: 8 bytes little endian", prefix_spec(8, 0, 1024),
                S("\x02\0\0\0\0\0\0\0" "hi" "\0\0\0\0\0\0\0\0"), "[hi][]");
    stream_case("prefix: payload of exactly max passes",
                prefix_spec(1, 1, 3), S("\x03" "abc" "\x04" "abcd"),
                "[abc]!too long");
    stream_case("prefix: over max is refused at the header",
                prefix_spec(2, 1, 4), S("\x00\x05" "abcde"), "!too long");
    stream_case("prefix: 8-byte length 2^64-1 is too long",
                prefix_spec(8, 1, UINT32_MAX),
                S("\xff\xff\xff\xff\xff\xff\xff\xff" "x"), "!too long");
    stream_case("prefix: 8-byte length 2^32 is too long",
                prefix_spec(8, 0, UINT32_MAX),
                S("\0\0\0\0\x01\0\0\0" "x"), "!too long");
    stream_case("prefix: 8-byte length with the top bit set is too long",
                prefix_spec(8, 1, 16), S("\x80\0\0\0\0\0\0\x01" "x"),
                "!too long");
    stream_case("prefix: truncated payload at eof", prefix_spec(4, 1, 64),
                S("\0\0\0\x01" "a" "\0\0\0\x05" "ab"), "[a]!truncated");
    stream_case("prefix: truncated header at eof", prefix_spec(4, 1, 64),
                S("\0\0\0\x01" "a" "\0\0"), "[a]!truncated");
    stream_case("prefix: eof with nothing buffered gives no frame",
                prefix_spec(4, 1, 64), S(""), "");
}

/* Lengths over 255 show the byte order of every prefix byte. */
static void test_prefix_multibyte(void)
{
    static const struct {
        int plen, big;
        const char *hdr;
    } t[] = {
        { 2, 1, "\x01\x02" },
        { 2, 0, "\x02\x01" },
        { 4, 1, "\0\0\x01\x02" },
        { 4, 0, "\x02\x01\0\0" },
        { 8, 1, "\0\0\0\0\0\0\x01\x02" },
        { 8, 0, "\x02\x01\0\0\0\0\0\0" },
    };
    static char in[MAX_INPUT], want[MAX_INPUT];
    char desc[80];
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        size_t plen = (size_t)t[i].plen;
        memcpy(in, t[i].hdr, plen);
        memset(in + plen, 'p', 258);
        memcpy(in + plen + 258, t[i].hdr, plen);
        want[0] = '[';
        memset(want + 1, 'p', 258);
        strcpy(want + 259, "]!truncated");
        snprintf(desc, sizeof desc, "prefix: %zu bytes %s endian, length 258",
                 plen, t[i].big ? "big" : "little");
        stream_case(desc, prefix_spec(t[i].plen, t[i].big, 258), in,
                    2 * plen + 258, want);
    }
}

static void test_raw_streams(void)
{
    stream_case("raw: bytes pass through in order", raw_spec(4),
                S("abcdefghij\r\n\0"), "abcdefghij\\r\\n\\x00");
    stream_case("raw: eof with nothing buffered gives no frame", raw_spec(4),
                S(""), "");
}

/* ---- direct calls ------------------------------------------------------- */

static ssize_t next(const lsv_frame_spec_t *s, const char *data, size_t len,
                    int eof, size_t *hint, size_t *off, size_t *mlen)
{
    return lsv_frame_next(s, data, len, eof, hint, off, mlen);
}

static void test_spec_init(void)
{
    lsv_frame_spec_t s;
    lsv_frame_spec_init(&s, LSV_FRAME_LINE);
    CHECK(s.kind == LSV_FRAME_LINE && s.max == LSV_FRAME_DEFAULT_MAX);
    CHECK(s.keep_eol == 0);
    lsv_frame_spec_init(&s, LSV_FRAME_DELIM);
    CHECK(s.kind == LSV_FRAME_DELIM && s.max == LSV_FRAME_DEFAULT_MAX);
    CHECK(s.delim_len == 2 && memcmp(s.delim, "\r\n", 2) == 0);
    lsv_frame_spec_init(&s, LSV_FRAME_FIXED);
    CHECK(s.kind == LSV_FRAME_FIXED && s.size == 1);
    lsv_frame_spec_init(&s, LSV_FRAME_PREFIX);
    CHECK(s.kind == LSV_FRAME_PREFIX && s.max == LSV_FRAME_PREFIX_DEFAULT_MAX);
    CHECK(s.prefix_len == 4 && s.big_endian == 1);
    lsv_frame_spec_init(&s, LSV_FRAME_RAW);
    CHECK(s.kind == LSV_FRAME_RAW && s.max == LSV_FRAME_DEFAULT_MAX);
    test_done("spec_init fills each kind's defaults");
}

static void test_kind_name(void)
{
    CHECK(strcmp(lsv_frame_kind_name(LSV_FRAME_LINE), "line") == 0);
    CHECK(strcmp(lsv_frame_kind_name(LSV_FRAME_DELIM), "delim") == 0);
    CHECK(strcmp(lsv_frame_kind_name(LSV_FRAME_FIXED), "fixed") == 0);
    CHECK(strcmp(lsv_frame_kind_name(LSV_FRAME_PREFIX), "prefix") == 0);
    CHECK(strcmp(lsv_frame_kind_name(LSV_FRAME_RAW), "raw") == 0);
    CHECK(strcmp(lsv_frame_kind_name(LSV_FRAME_RESP), "resp") == 0);
    CHECK(strcmp(lsv_frame_kind_name(LSV_FRAME_HTTP), "http") == 0);
    CHECK(strcmp(lsv_frame_kind_name(LSV_FRAME_WS), "websocket") == 0);
    CHECK(strcmp(lsv_frame_kind_name(-1), "?") == 0);
    CHECK(strcmp(lsv_frame_kind_name(LSV_FRAME_LAST + 1), "?") == 0);
    test_done("kind_name names every kind, ? otherwise");
}

static void test_line_hint(void)
{
    lsv_frame_spec_t s = line_spec(64, 0);
    size_t hint = 0, off = 9, mlen = 9;
    CHECK(next(&s, "abc", 3, 0, &hint, &off, &mlen) == LSV_FRAME_PARTIAL);
    CHECK(hint == 3 && off == 0 && mlen == 0);
    CHECK(next(&s, "abcde\r", 6, 0, &hint, &off, &mlen) == LSV_FRAME_PARTIAL);
    CHECK(hint == 6);
    /* The CR before the hint still belongs to the terminator. */
    CHECK(next(&s, "abcde\r\nx", 8, 0, &hint, &off, &mlen) == 7);
    CHECK(off == 0 && mlen == 5 && hint == 0);
    /* A stale hint past the data is not trusted. */
    hint = 100;
    CHECK(next(&s, "a\n", 2, 0, &hint, &off, &mlen) == 2 && mlen == 1);
    /* The hint skips bytes already scanned: a newline before it is not
     * rescanned, which is why callers must reset it after consuming. */
    hint = 2;
    CHECK(next(&s, "a\nb", 3, 0, &hint, &off, &mlen) == LSV_FRAME_PARTIAL);
    test_done("line: PARTIAL sets hint to len; resumes from it");
}

static void test_delim_hint(void)
{
    lsv_frame_spec_t s = delim_spec(S("\r\n\r\n"), 64, 0);
    size_t hint = 0, off, mlen;
    CHECK(next(&s, "ab", 2, 0, &hint, &off, &mlen) == LSV_FRAME_PARTIAL);
    CHECK(hint == 0);
    CHECK(next(&s, "abcdef\r\n\r", 9, 0, &hint, &off, &mlen) ==
          LSV_FRAME_PARTIAL);
    CHECK(hint == 6);
    CHECK(next(&s, "abcdef\r\n\r\n", 10, 0, &hint, &off, &mlen) == 10);
    CHECK(off == 0 && mlen == 6 && hint == 0);
    test_done("delim: PARTIAL hint backs off delim_len - 1 bytes");
}

static void test_line_bound(void)
{
    static char buf[1024];
    lsv_frame_spec_t s = line_spec(100, 0);
    size_t hint = 0, off, mlen;
    ssize_t r = LSV_FRAME_PARTIAL;
    size_t len;
    memset(buf, 'x', sizeof buf);
    for (len = 1; len <= sizeof buf; len++) {
        r = next(&s, buf, len, 0, &hint, &off, &mlen);
        if (r != LSV_FRAME_PARTIAL)
            break;
    }
    CHECK(r == LSV_FRAME_TOO_LONG);
    CHECKF(len == 101, "too long at len %zu", len);

    /* max bytes then a CR may still be a line of exactly max. */
    buf[100] = '\r';
    hint = 0;
    CHECK(next(&s, buf, 101, 0, &hint, &off, &mlen) == LSV_FRAME_PARTIAL);
    CHECK(next(&s, buf, 102, 0, &hint, &off, &mlen) == LSV_FRAME_TOO_LONG);
    buf[101] = '\n';
    hint = 0;
    CHECK(next(&s, buf, 101, 0, &hint, &off, &mlen) == LSV_FRAME_PARTIAL);
    CHECK(next(&s, buf, 102, 0, &hint, &off, &mlen) == 102 && mlen == 100);
    test_done("line: without a newline, too long once len passes max");
}

static void test_delim_bound(void)
{
    static char buf[1024];
    lsv_frame_spec_t s = delim_spec(S("\r\n\r\n"), 100, 0);
    size_t hint = 0, off, mlen;
    ssize_t r = LSV_FRAME_PARTIAL;
    size_t len;
    memset(buf, 'x', sizeof buf);
    memcpy(buf + 100, "\r\n\r", 3);
    for (len = 1; len <= sizeof buf; len++) {
        r = next(&s, buf, len, 0, &hint, &off, &mlen);
        if (r != LSV_FRAME_PARTIAL)
            break;
    }
    CHECK(r == LSV_FRAME_TOO_LONG);
    CHECKF(len == 104, "too long at len %zu", len);
    CHECKF(len <= 100 + 4, "buffer grew to %zu", len);
    test_done("delim: without a delimiter, too long at max + delim_len - 1");
}

static void test_prefix_header(void)
{
    lsv_frame_spec_t s = prefix_spec(4, 1, 1000);
    size_t hint = 0, off, mlen;
    CHECK(next(&s, "\0\0\x03", 3, 0, &hint, &off, &mlen) == LSV_FRAME_PARTIAL);
    CHECK(next(&s, "\0\0\x03\xe9", 4, 0, &hint, &off, &mlen) ==
          LSV_FRAME_TOO_LONG);
    CHECK(next(&s, "\0\0\x03\xe8", 4, 0, &hint, &off, &mlen) ==
          LSV_FRAME_PARTIAL);
    CHECK(next(&s, "\0\0\0\x02" "hi!", 7, 0, &hint, &off, &mlen) == 6);
    CHECK(off == 4 && mlen == 2);
    CHECK(next(&s, "\0\0\0\0", 4, 0, &hint, &off, &mlen) == 4);
    CHECK(off == 4 && mlen == 0);
    s = prefix_spec(8, 1, UINT32_MAX);
    CHECK(next(&s, "\0\0\0\0\xff\xff\xff\xff", 8, 0, &hint, &off, &mlen) ==
          LSV_FRAME_PARTIAL);
    CHECK(next(&s, "\0\0\0\0\xff\xff\xff\xff", 8, 1, &hint, &off, &mlen) ==
          LSV_FRAME_TRUNCATED);
    CHECK(next(&s, "\xff\xff\xff\xff\xff\xff\xff\xff", 8, 0, &hint, &off,
               &mlen) == LSV_FRAME_TOO_LONG);
    test_done("prefix: max decided from the header; off skips the prefix");
}

static void test_fixed_direct(void)
{
    lsv_frame_spec_t s = fixed_spec(4);
    size_t hint = 0, off, mlen;
    CHECK(next(&s, "abc", 3, 0, &hint, &off, &mlen) == LSV_FRAME_PARTIAL);
    CHECK(next(&s, "abc", 3, 1, &hint, &off, &mlen) == LSV_FRAME_TRUNCATED);
    CHECK(next(&s, "abcdef", 6, 0, &hint, &off, &mlen) == 4);
    CHECK(off == 0 && mlen == 4);
    test_done("fixed: PARTIAL short of size, TRUNCATED at eof");
}

static void test_raw_direct(void)
{
    lsv_frame_spec_t s = raw_spec(4);
    size_t hint = 0, off, mlen;
    CHECK(next(&s, "abcdefghij", 10, 0, &hint, &off, &mlen) == 4);
    CHECK(off == 0 && mlen == 4);
    CHECK(next(&s, "ab", 2, 0, &hint, &off, &mlen) == 2 && mlen == 2);
    CHECK(next(&s, "ab", 2, 1, &hint, &off, &mlen) == 2 && mlen == 2);
    s.max = 0;
    CHECK(next(&s, "ab", 2, 0, &hint, &off, &mlen) == LSV_FRAME_TOO_LONG);
    test_done("raw: a frame is min(len, max) bytes");
}

static void test_eof_empty(void)
{
    lsv_frame_spec_t specs[5];
    specs[0] = line_spec(8, 0);
    specs[1] = delim_spec(S("||"), 8, 0);
    specs[2] = fixed_spec(3);
    specs[3] = prefix_spec(2, 1, 8);
    specs[4] = raw_spec(8);
    for (int i = 0; i < 5; i++) {
        size_t hint = 0, off, mlen;
        CHECKF(next(&specs[i], NULL, 0, 1, &hint, &off, &mlen) ==
                   LSV_FRAME_PARTIAL, "kind %d", i);
        CHECKF(next(&specs[i], "", 0, 0, &hint, &off, &mlen) ==
                   LSV_FRAME_PARTIAL, "kind %d", i);
    }
    test_done("every kind: len 0 is PARTIAL, with or without eof");
}

/* ---- random streams against a naive model ------------------------------ */

/* The LINE / DELIM transcript computed the slow, obvious way. */
static void model_terminated(const lsv_frame_spec_t *s, const char *in,
                             size_t n, run_t *r)
{
    int line = s->kind == LSV_FRAME_LINE;
    const char *d = line ? "\n" : s->delim;
    size_t dlen = line ? 1 : s->delim_len;
    size_t pos = 0;
    r->outlen = 0;
    r->out[0] = '\0';
    while (pos < n) {
        size_t at = pos;
        while (at + dlen <= n && memcmp(in + at, d, dlen) != 0)
            at++;
        int found = at + dlen <= n;
        size_t body = found ? at - pos : n - pos;
        size_t end = found ? at + dlen : n;
        if (found && line && body > 0 && in[at - 1] == '\r')
            body--;
        if (body > s->max) {
            out_put(r, "!too long");
            return;
        }
        size_t mlen = found && s->keep_eol ? end - pos : body;
        out_put(r, "[");
        out_escaped(r, in + pos, mlen);
        out_put(r, "]");
        pos = end;
    }
}

static void random_input(char *in, size_t n, const char *alphabet)
{
    size_t k = strlen(alphabet);
    for (size_t i = 0; i < n; i++)
        in[i] = alphabet[rng() % k];
}

static void random_terminated(const char *desc, lsv_frame_spec_t s,
                              const char *alphabet)
{
    static char in[64];
    static size_t cuts[64];
    static run_t want;
    for (int iter = 0; iter < 3000 && !cur_failed; iter++) {
        size_t n = rng() % sizeof in;
        random_input(in, n, alphabet);
        model_terminated(&s, in, n, &want);
        expect_run(&s, in, n, NULL, 0, want.out, "all at once");
        size_t nc = random_cuts(n, cuts);
        expect_run(&s, in, n, cuts, nc, want.out, "random chunks");
        for (size_t i = 1; i < n; i++)
            cuts[i - 1] = i;
        expect_run(&s, in, n, cuts, n ? n - 1 : 0, want.out,
                   "a byte at a time");
    }
    test_done(desc);
}

/* Random length-prefixed streams: the transcript must not depend on how
 * the bytes arrive. */
static void random_prefix(const char *desc, lsv_frame_spec_t s)
{
    static char in[64];
    static size_t cuts[64];
    static run_t want;
    for (int iter = 0; iter < 3000 && !cur_failed; iter++) {
        size_t n = rng() % sizeof in;
        for (size_t i = 0; i < n; i++)
            in[i] = (char)(rng() % 4 ? rng() % 6 : rng() % 256);
        run_stream(&s, in, n, NULL, 0, &want);
        CHECK(want.violations == 0);
        size_t nc = random_cuts(n, cuts);
        expect_run(&s, in, n, cuts, nc, want.out, "random chunks");
    }
    test_done(desc);
}

/* ---- guard pages -------------------------------------------------------
 * After picohttpparser's tests: the input sits flush against a PROT_NONE
 * page, so a read one byte past data[len-1] (or before data[0]) faults
 * even without ASan. Every prefix of every stream case is framed, with and
 * without eof, carrying the hint as a connection would. */

/* Frames data[*start, len) as a connection would, carrying *start and
 * *hint to the next call with more bytes. */
static void frame_all(const lsv_frame_spec_t *s, const char *data,
                      size_t len, int eof, size_t *start, size_t *hint)
{
    for (;;) {
        size_t off, mlen;
        ssize_t n = lsv_frame_next(s, data + *start, len - *start, eof, hint,
                                   &off, &mlen);
        if (n <= 0)
            return;
        *start += (size_t)n;
        *hint = 0;
    }
}

static void test_guard_pages(void)
{
    guard_t g;
    if (!guard_open(&g, "framer"))
        return;
    char *lo = g.lo, *hi = g.hi;

    for (size_t c = 0; c < ncases; c++) {
        const lsv_frame_spec_t *s = &cases[c].spec;
        const char *in = cases[c].in;
        size_t start_hi = 0, hint_hi = 0, start_lo = 0, hint_lo = 0;
        for (size_t k = 0; k <= cases[c].n; k++) {
            size_t start = 0, hint = 0;
            /* Flush against the guard after the data. */
            memcpy(hi - k, in, k);
            frame_all(s, hi - k, k, 0, &start_hi, &hint_hi);
            frame_all(s, hi - k, k, 1, &start, &hint);
            /* Flush against the guard before the data: a look-behind at
             * data[-1] (say, for a CR) faults. */
            memcpy(lo, in, k);
            frame_all(s, lo, k, 0, &start_lo, &hint_lo);
            start = hint = 0;
            frame_all(s, lo, k, 1, &start, &hint);
        }
    }
    guard_close(&g);
    test_done("guard page: no read outside the input for any prefix");
}

int main(void)
{
    rng_seed(0x9e3779b97f4a7c15u);
    test_spec_init();
    test_kind_name();
    test_line_streams();
    test_delim_streams();
    test_fixed_streams();
    test_prefix_streams();
    test_prefix_multibyte();
    test_raw_streams();
    test_line_hint();
    test_delim_hint();
    test_line_bound();
    test_delim_bound();
    test_prefix_header();
    test_fixed_direct();
    test_raw_direct();
    test_eof_empty();
    random_terminated("line: random LF/CRLF streams match a naive model",
                      line_spec(5, 0), "ab\r\n");
    random_terminated("line: random streams with keep_eol match the model",
                      line_spec(5, 1), "a\r\n");
    random_terminated("delim: random streams match a naive model",
                      delim_spec(S("aab"), 4, 0), "ab\n");
    random_terminated("delim: random CRLFCRLF streams with keep_eol",
                      delim_spec(S("\r\n\r\n"), 6, 1), "a\r\n");
    random_prefix("prefix: random 1-byte streams frame the same in chunks",
                  prefix_spec(1, 1, 4));
    random_prefix("prefix: random 2-byte little-endian streams",
                  prefix_spec(2, 0, 300));
    test_guard_pages();
    return tap_end();
}

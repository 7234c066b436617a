/* http_test.c: unit tests of the HTTP/1.1 request framer (http.c), through
 * lsv_frame_next, printed as TAP. */
#include "lsv.h"
#include "frame.h"
#include "http.h"
#include "tap.h"

#include <stdio.h>
#include <string.h>

static lsv_frame_spec_t http_spec(uint32_t max, uint32_t max_head,
                                  uint32_t max_headers)
{
    lsv_frame_spec_t s;
    lsv_frame_spec_init(&s, LSV_FRAME_HTTP);
    if (max) s.max = max;
    if (max_head) s.max_bulk = max_head;
    if (max_headers) s.max_args = max_headers;
    return s;
}

static const lsv_frame_spec_t *defaults(void)
{
    static lsv_frame_spec_t s;
    s = http_spec(0, 0, 0);
    return &s;
}

/* ---- the stream driver ---------------------------------------------------
 * Plays a connection as frame_test.c does: bytes arrive in chunks, the
 * framer is called after each arrival until it wants more, frames are
 * consumed, the hint is carried and reset; then eof. The transcript has
 * "[METHOD TARGET body]" per request (the body decoded with the walking
 * functions), "{100}" where lsv_frame_interim asked for a 100 Continue,
 * then "!STATUS" (lsv_http_reject's) or "!truncated" if the stream ended
 * so. Each call gets an exact-size heap copy (ASan catches an over-read)
 * and its result is checked against one with a fresh hint. */

typedef struct run {
    char out[8192];
    size_t outlen;
    int violations;
    int interim;           /* record {100} in the transcript */
} run_t;

static void out_put(run_t *r, const char *s, size_t n)
{
    if (r->outlen + n >= sizeof r->out) {
        r->violations++;
        return;
    }
    memcpy(r->out + r->outlen, s, n);
    r->outlen += n;
    r->out[r->outlen] = '\0';
}

static void out_str(run_t *r, const char *s)
{
    out_put(r, s, strlen(s));
}

/* The transcript entry of a frame p[0, n). */
static void out_frame(run_t *r, const char *p, size_t n)
{
    lsv_http_line_t rl;
    size_t i = lsv_http_request_line(p, n, &rl);
    if (i == 0) {
        out_str(r, "[?]");
        r->violations++;
        return;
    }
    out_str(r, "[");
    out_put(r, rl.method, rl.method_len);
    out_str(r, " ");
    out_put(r, rl.target, rl.target_len);
    out_str(r, " ");
    const char *name, *v, *d;
    size_t nlen, vlen, dlen;
    int chunked = 0;
    while (lsv_http_field(p, n, &i, &name, &nlen, &v, &vlen))
        if (lsv_http_ieq(name, nlen, "transfer-encoding")) chunked = 1;
    if (chunked) {
        while (lsv_http_chunk(p, n, &i, &d, &dlen)) out_put(r, d, dlen);
    } else {
        out_put(r, p + i, n - i);
    }
    out_str(r, "]");
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
    size_t fresh = 0, off0 = 0, mlen0 = 0;
    ssize_t n0 = lsv_frame_next(s, copy, have, eof, &fresh, &off0, &mlen0);
    int ok = n == n0 && (n <= 0 || (*mlen == mlen0 && *off == 0));
    if (n > 0) ok &= (size_t)n <= have && *mlen == (size_t)n && *hint == 0;
    if (n == LSV_FRAME_PARTIAL) ok &= !eof || have == 0;
    if (n == LSV_FRAME_TRUNCATED) ok &= eof;
    ok &= n >= LSV_FRAME_BAD;
    if (n == LSV_FRAME_PARTIAL && r->interim) {
        char buf[64];
        size_t k = lsv_frame_interim(s, copy, have, hint, buf, sizeof buf);
        if (k) {
            ok &= k == 25 && memcmp(buf, "HTTP/1.1 100 Continue\r\n\r\n",
                                    25) == 0;
            out_str(r, "{100}");
        }
    }
    free(copy);
    if (!ok) r->violations++;
    return n;
}

/* Frames everything in in[*start, avail); returns 1 once the stream ended
 * in an error. */
static int drain(const lsv_frame_spec_t *s, const char *in, size_t *start,
                 size_t avail, int eof, size_t *hint, run_t *r)
{
    for (;;) {
        size_t off = 0, mlen = 0;
        ssize_t n = call_checked(s, in + *start, avail - *start, eof, hint,
                                 &off, &mlen, r);
        if (n == LSV_FRAME_PARTIAL) return 0;
        if (n == LSV_FRAME_TRUNCATED) {
            out_str(r, "!truncated");
            return 1;
        }
        if (n < 0) {
            char reply[512], st[16];
            const char *why = NULL;
            size_t k = lsv_frame_reject(s, n, in + *start, avail - *start,
                                        reply, sizeof reply, &why);
            if (k < 13 || why == NULL) r->violations++;
            snprintf(st, sizeof st, "!%.3s", k >= 12 ? reply + 9 : "???");
            out_str(r, st);
            return 1;
        }
        out_frame(r, in + *start, mlen);
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
        if (drain(s, in, &start, avail, 0, &hint, r)) return;
    }
    drain(s, in, &start, n, 1, &hint, r);
}

static int expect_run(const lsv_frame_spec_t *s, const char *in, size_t n,
                      const size_t *cuts, size_t ncuts, const char *want,
                      const char *what)
{
    static run_t r;
    r.interim = 0;
    run_stream(s, in, n, cuts, ncuts, &r);
    CHECKF(strcmp(r.out, want) == 0, "%s: got \"%s\", want \"%s\"", what,
           r.out, want);
    CHECKF(r.violations == 0, "%s: %d contract violations", what,
           r.violations);
    return strcmp(r.out, want) == 0 && r.violations == 0;
}

#define MAX_INPUT 8192

/* One input gives the same transcript however it arrives: all at once, a
 * byte at a time, split in two at every point, in random chunks. */
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
    expect_run(&s, in, n, NULL, 0, want, "all at once");
    for (size_t i = 1; i < n; i++) cuts[i - 1] = i;
    expect_run(&s, in, n, cuts, n ? n - 1 : 0, want, "a byte at a time");
    for (size_t i = 0; i <= n; i++) {
        cuts[0] = i;
        snprintf(what, sizeof what, "split at %zu", i);
        if (!expect_run(&s, in, n, cuts, 1, want, what)) break;
    }
    for (int k = 0; k < 20; k++) {
        size_t nc = 0;
        for (size_t at = 1 + rng() % 4; at < n; at += 1 + rng() % 9)
            cuts[nc++] = at;
        if (!expect_run(&s, in, n, cuts, nc, want, "random chunks")) break;
    }
    test_done(desc);
}

#define S(lit) (lit), (sizeof(lit) - 1)

static lsv_frame_spec_t dflt(void)
{
    return http_spec(0, 0, 0);
}

/* ---- requests that frame ------------------------------------------------ */

static void test_good(void)
{
    stream_case("a GET without a body", dflt(),
                S("GET /a?b=1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"),
                "[GET /a?b=1 ]");
    stream_case("pipelined: GET, POST by length, POST chunked, GET", dflt(),
                S("GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
                  "POST /2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz"
                  "POST /3 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                  "GET /4 HTTP/1.0\r\n\r\n"),
                "[GET /1 ][POST /2 xyz][POST /3 abcde][GET /4 ]");
    stream_case("chunked: extensions ignored, trailers skipped", dflt(),
                S("POST /c HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"
                  "3;name=value;x\r\nabc\r\n"
                  "A ; q=\"a b\"\r\n0123456789\r\n"
                  "0;last\r\nExpires: never\r\nX-Sum: 1\r\n\r\n"
                  "GET /n HTTP/1.1\r\n\r\n"),
                "[POST /c abc0123456789][GET /n ]");
    stream_case("chunked: leading zeros, upper and lower hex", dflt(),
                S("PUT / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
                  "0001\r\na\r\nf\r\n0123456789abcde\r\n00\r\n\r\n"),
                "[PUT / a0123456789abcde]");
    stream_case("LF-only line ends in the head", dflt(),
                S("GET /lf HTTP/1.1\nHost: a\nContent-Length: 2\n\nokGET /x"
                  " HTTP/1.1\n\n"),
                "[GET /lf ok][GET /x ]");
    stream_case("empty lines before the request line are skipped", dflt(),
                S("\r\n\r\nGET /e HTTP/1.1\r\n\r\n\nGET /f HTTP/1.1\r\n\r\n"),
                "[GET /e ][GET /f ]");
    stream_case("identical duplicate Content-Length, OWS around values",
                dflt(),
                S("POST / HTTP/1.1\r\nContent-Length: 2\r\n"
                  "content-length:\t2 \r\nX:\r\n\r\nhi"),
                "[POST / hi]");
    stream_case("Content-Length 0 and a body-less 1.0 request", dflt(),
                S("POST /z HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
                  "HEAD /h HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
                "[POST /z ][HEAD /h ]");
    stream_case("header values may hold obs-text and tabs", dflt(),
                S("GET /\xc3\xa9 HTTP/1.1\r\nX: caf\xc3\xa9\ta\r\n\r\n"),
                "[GET /\xc3\xa9 ]");
    stream_case("eof mid-head is truncated, no reply", dflt(),
                S("GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\nHost"),
                "[GET /1 ]!truncated");
    stream_case("eof mid-body is truncated", dflt(),
                S("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"),
                "!truncated");
    stream_case("eof mid-chunk is truncated", dflt(),
                S("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "5\r\nab"),
                "!truncated");
    stream_case("eof in the trailers is truncated", dflt(),
                S("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "0\r\nX: 1\r\n"),
                "!truncated");
}

/* ---- limits ------------------------------------------------------------- */

static void test_limits(void)
{
    static char big[MAX_INPUT], want[MAX_INPUT];
    /* A request line of exactly 200 bytes with max_head 300: framed; 201
     * with a max_head of 200: 414 (the request line's limit is the
     * smaller of 8 KiB and max_head). */
    size_t n = (size_t)snprintf(big, sizeof big, "GET /%0*d HTTP/1.1\r\n\r\n",
                                200 - 14, 0);
    snprintf(want, sizeof want, "[GET /%0*d ]", 200 - 14, 0);
    stream_case("a request line within max_head", http_spec(0, 300, 0), big,
                n, want);
    n = (size_t)snprintf(big, sizeof big, "GET /%0*d HTTP/1.1\r\n\r\n",
                         201 - 14, 0);
    stream_case("a request line over max_head is 414", http_spec(0, 200, 0),
                big, n, "!414");
    n = (size_t)snprintf(big, sizeof big, "GET / HTTP/1.1\r\nA: %0*d\r\n\r\n",
                         300, 0);
    stream_case("a header section over max_head is 431",
                http_spec(0, 256, 0), big, n, "!431");
    stream_case("a head of exactly max_head frames", http_spec(0, 20, 0),
                S("GET / HTTP/1.1\r\n\r\nGET /ab HTTP/1.1\r\n\r\n"
                  "GET /abc HTTP/1.1\r\n\r\n"),
                "[GET / ][GET /ab ]!431");
    stream_case("more headers than max_headers is 431", http_spec(0, 0, 2),
                S("GET /a HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n"
                  "GET /b HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"),
                "[GET /a ]!431");
    stream_case("Content-Length over max is 413 before the body",
                http_spec(4, 0, 0),
                S("POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd"
                  "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
                "[POST / abcd]!413");
    stream_case("a huge numeric Content-Length is 413", dflt(),
                S("POST / HTTP/1.1\r\nContent-Length: 18446744073709551615"
                  "\r\n\r\n"), "!413");
    stream_case("chunks adding up past max are 413", http_spec(5, 0, 0),
                S("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                  "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "3\r\nabc\r\n3\r\n"),
                "[POST / abcde]!413");
    stream_case("a chunk size past 64 bits is 413", dflt(),
                S("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "fffffffffffffffffffffff\r\n"), "!413");
    /* 64 one-byte chunks: 6 bytes of framing per byte of body. */
    n = (size_t)snprintf(big, sizeof big, "POST / HTTP/1.1\r\nTransfer-"
                         "Encoding: chunked\r\n\r\n");
    for (size_t i = 0; i < 64; i++)
        memcpy(big + n + 6 * i, "1\r\nx\r\n", 6);
    n += 64 * 6;
    memcpy(big + n, "0\r\n\r\n", 5);
    n += 5;
    stream_case("chunk framing overhead over its limit is 413",
                http_spec(64, 64, 0), big, n, "!413");
    n = (size_t)snprintf(big, sizeof big, "POST / HTTP/1.1\r\nTransfer-"
                         "Encoding: chunked\r\n\r\n1;x=%0*d\r\na\r\n0\r\n\r\n",
                         4100, 0);
    stream_case("a chunk size line over 4 KiB is 400", dflt(), big, n,
                "!400");
    n = (size_t)snprintf(big, sizeof big, "POST / HTTP/1.1\r\nTransfer-"
                         "Encoding: chunked\r\n\r\n1;x=%0*d\r\na\r\n0\r\n\r\n",
                         4000, 0);
    stream_case("a chunk size line under 4 KiB frames", dflt(), big, n,
                "[POST / a]");
}

/* ---- refused shapes ----------------------------------------------------- */

static void bad(const char *desc, const char *in, size_t n, const char *want)
{
    stream_case(desc, dflt(), in, n, want);
}

static void test_smuggling(void)
{
    bad("Content-Length with Transfer-Encoding is 400",
        S("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: "
          "chunked\r\n\r\n0\r\n\r\n"), "!400");
    bad("Transfer-Encoding then Content-Length is 400",
        S("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length:"
          " 3\r\n\r\n0\r\n\r\n"), "!400");
    bad("differing Content-Length headers are 400",
        S("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"
          "abcd"), "!400");
    bad("a Content-Length list is 400",
        S("POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc"), "!400");
    bad("a signed Content-Length is 400",
        S("POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc"), "!400");
    bad("a hex Content-Length is 400",
        S("POST / HTTP/1.1\r\nContent-Length: 0x3\r\n\r\nabc"), "!400");
    bad("an empty Content-Length is 400",
        S("POST / HTTP/1.1\r\nContent-Length: \r\n\r\n"), "!400");
    bad("an overflowing Content-Length is 400",
        S("POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n"),
        "!400");
    bad("obs-fold is 400",
        S("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"), "!400");
    bad("obs-fold with a tab is 400",
        S("GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n"), "!400");
    bad("a bare CR in a value is 400",
        S("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"), "!400");
    bad("a bare CR ending a header line is 400",
        S("GET / HTTP/1.1\r\nX: a\r\rY: b\r\n\r\n"), "!400");
    bad("a bare CR in the request line is 400",
        S("GET /a\rb HTTP/1.1\r\n\r\n"), "!400");
    bad("a bare CR after the version is 400",
        S("GET / HTTP/1.1\r\r\n\r\n"), "!400");
    bad("whitespace before the colon is 400",
        S("GET / HTTP/1.1\r\nContent-Length : 3\r\n\r\nabc"), "!400");
    bad("a tab before the colon is 400",
        S("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n"), "!400");
    bad("an empty header name is 400",
        S("GET / HTTP/1.1\r\n: a\r\n\r\n"), "!400");
    bad("a header line without a colon is 400",
        S("GET / HTTP/1.1\r\nHost\r\n\r\n"), "!400");
    bad("a NUL in a value is 400",
        S("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n"), "!400");
    bad("a repeated Transfer-Encoding is 400",
        S("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-"
          "Encoding: chunked\r\n\r\n0\r\n\r\n"), "!400");
    bad("Transfer-Encoding in HTTP/1.0 is 400",
        S("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        "!400");
    bad("Transfer-Encoding other than chunked is 501",
        S("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        "!501");
    bad("a bad chunk size is 400",
        S("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
          "x\r\nabc\r\n0\r\n\r\n"), "!400");
    bad("a chunk size line ending in LF alone is 400",
        S("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
          "3\nabc\r\n0\r\n\r\n"), "!400");
    bad("a chunk size with junk after it is 400",
        S("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
          "3 x\r\nabc\r\n0\r\n\r\n"), "!400");
    bad("a chunk extension with a bare CR is 400",
        S("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
          "3;a\rb\r\nabc\r\n0\r\n\r\n"), "!400");
    bad("chunk data not followed by CRLF is 400",
        S("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
          "3\r\nabcd\r\n0\r\n\r\n"), "!400");
    bad("chunk data followed by LF alone is 400",
        S("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
          "3\r\nabc\n0\r\n\r\n"), "!400");
    bad("a bad trailer line is 400",
        S("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
          "0\r\nno colon\r\n\r\n"), "!400");
    bad("HTTP/2.0 is 505", S("GET / HTTP/2.0\r\n\r\n"), "!505");
    bad("HTTP/1.2 is 505", S("GET / HTTP/1.2\r\n\r\n"), "!505");
    bad("HTTP/0.9 is 505", S("GET / HTTP/0.9\r\n\r\n"), "!505");
    bad("a malformed version is 400", S("GET / HTTP/1.10\r\n\r\n"), "!400");
    bad("a lowercase version is 400", S("GET / http/1.1\r\n\r\n"), "!400");
    bad("a request line without a version is 400",
        S("GET /\r\n\r\n"), "!400");
    bad("two spaces after the method are 400",
        S("GET  / HTTP/1.1\r\n\r\n"), "!400");
    bad("a separator in the method is 400",
        S("GE(T / HTTP/1.1\r\n\r\n"), "!400");
    bad("too many empty lines before the request line are 400",
        S("\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n"), "!400");
    bad("a request after a good one fails alone",
        S("GET /ok HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nA : b\r\n\r\n"),
        "[GET /ok ]!400");
}

/* ---- direct checks ------------------------------------------------------ */

/* The reply lsv_http_reject writes, byte for byte, and its log line. */
static void test_reject_reply(void)
{
    static const char in[] = "POST / HTTP/1.1\r\nContent-Length: 1\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n";
    size_t hint = 0, off, mlen;
    ssize_t r = lsv_frame_next(defaults(), in, sizeof in - 1, 0, &hint, &off,
                               &mlen);
    CHECK(r == LSV_FRAME_BAD);
    char out[512];
    const char *why = NULL;
    size_t n = lsv_frame_reject(defaults(), r, in, sizeof in - 1, out,
                                sizeof out, &why);
    static const char want[] = "HTTP/1.1 400 Bad Request\r\nContent-Type: "
        "text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\n"
        "Bad Request\n";
    CHECKF(n == sizeof want - 1 && memcmp(out, want, n) == 0,
           "reply \"%.*s\"", (int)n, out);
    CHECK(why && strcmp(why, "Content-Length with Transfer-Encoding") == 0);
    n = lsv_frame_reject(defaults(), LSV_FRAME_TRUNCATED, in, 5, out,
                         sizeof out, &why);
    CHECK(n == 0 && why != NULL);
    n = lsv_frame_reject(defaults(), r, in, sizeof in - 1, out, 20, &why);
    CHECK(n == 0);                      /* no room: no half reply */
    test_done("reject: the 400 reply byte for byte, nothing at eof");
}

/* Feeds in[0, upto) to the framer with *hint; returns the result. */
static ssize_t feed(const lsv_frame_spec_t *s, const char *in, size_t upto,
                    size_t *hint)
{
    size_t off, mlen;
    return lsv_frame_next(s, in, upto, 0, hint, &off, &mlen);
}

static size_t interim(const lsv_frame_spec_t *s, const char *in, size_t n,
                      size_t *hint)
{
    char out[64], copy[256];
    if (n > sizeof copy) return 0;
    memcpy(copy, in, n);
    return lsv_frame_interim(s, copy, n, hint, out, sizeof out);
}

static void test_continue(void)
{
    static const char in[] = "POST /u HTTP/1.1\r\nExpect: 100-Continue\r\n"
                             "Content-Length: 5\r\n\r\nhello";
    size_t head = sizeof in - 1 - 5, hint = 0;
    CHECK(feed(defaults(), in, head - 1, &hint) == LSV_FRAME_PARTIAL);
    CHECK(interim(defaults(), in, head - 1, &hint) == 0);
    CHECK(feed(defaults(), in, head, &hint) == LSV_FRAME_PARTIAL);
    CHECK(interim(defaults(), in, head, &hint) == 25);
    CHECK(interim(defaults(), in, head, &hint) == 0);
    CHECK(feed(defaults(), in, head + 2, &hint) == LSV_FRAME_PARTIAL);
    CHECK(interim(defaults(), in, head + 2, &hint) == 0);
    CHECK(feed(defaults(), in, sizeof in - 1, &hint) == (ssize_t)sizeof in - 1);
    /* The whole request at once: no 100 owed. */
    hint = 0;
    CHECK(feed(defaults(), in, sizeof in - 1, &hint) == (ssize_t)sizeof in - 1);
    CHECK(interim(defaults(), in, sizeof in - 1, &hint) == 0);
    /* Chunked: owed until sent, kept across chunk progress. */
    static const char ch[] = "PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                             "Expect: 100-continue\r\n\r\n2\r\nab\r\n0\r\n\r\n";
    size_t chead = sizeof ch - 1 - 14;
    hint = 0;
    CHECK(feed(defaults(), ch, chead + 7, &hint) == LSV_FRAME_PARTIAL);
    CHECK(interim(defaults(), ch, chead + 7, &hint) == 25);
    CHECK(feed(defaults(), ch, chead + 9, &hint) == LSV_FRAME_PARTIAL);
    CHECK(interim(defaults(), ch, chead + 9, &hint) == 0);
    CHECK(feed(defaults(), ch, sizeof ch - 1, &hint) == (ssize_t)sizeof ch - 1);
    /* No body, HTTP/1.0, another expectation: none. */
    static const char nb[] = "POST / HTTP/1.1\r\nExpect: 100-continue\r\n"
                             "Content-Length: 0\r\n\r\n";
    hint = 0;
    CHECK(feed(defaults(), nb, sizeof nb - 1, &hint) == (ssize_t)sizeof nb - 1);
    static const char v10[] = "POST / HTTP/1.0\r\nExpect: 100-continue\r\n"
                              "Content-Length: 3\r\n\r\n";
    hint = 0;
    CHECK(feed(defaults(), v10, sizeof v10 - 1, &hint) == LSV_FRAME_PARTIAL);
    CHECK(interim(defaults(), v10, sizeof v10 - 1, &hint) == 0);
    static const char other[] = "POST / HTTP/1.1\r\nExpect: 200-ok\r\n"
                                "Content-Length: 3\r\n\r\n";
    hint = 0;
    CHECK(feed(defaults(), other, sizeof other - 1, &hint) ==
          LSV_FRAME_PARTIAL);
    CHECK(interim(defaults(), other, sizeof other - 1, &hint) == 0);
    /* Other kinds never owe anything. */
    lsv_frame_spec_t line;
    lsv_frame_spec_init(&line, LSV_FRAME_LINE);
    hint = 0;
    CHECK(interim(&line, in, head, &hint) == 0);
    test_done("Expect: 100-continue gets one 100 once the head is in");
}

/* Resuming does not look at bytes already accounted for: after the head
 * (body by length) or whole chunks were seen, overwriting them with junk
 * changes nothing, since body bytes are skipped by length and the state
 * is in the hint. */
static void test_resume(void)
{
    static char buf[300000];
    size_t n = (size_t)snprintf(buf, sizeof buf, "POST /big HTTP/1.1\r\n"
                                "Content-Length: 250000\r\n\r\n");
    size_t head = n, total = head + 250000, hint = 0;
    memset(buf + n, 'b', 250000);
    lsv_frame_spec_t s = http_spec(1u << 20, 0, 0);
    CHECK(feed(&s, buf, head + 10, &hint) == LSV_FRAME_PARTIAL);
    memset(buf, '\r', head);            /* the head is not read again */
    CHECK(feed(&s, buf, total - 1, &hint) == LSV_FRAME_PARTIAL);
    CHECK(feed(&s, buf, total, &hint) == (ssize_t)total);

    n = (size_t)snprintf(buf, sizeof buf, "POST /c HTTP/1.1\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n");
    size_t after_head = n;
    for (int i = 0; i < 100; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "400\r\n%01024d\r\n",
                              0);
    size_t mid = n;
    n += (size_t)snprintf(buf + n, sizeof buf - n, "0\r\n\r\n");
    hint = 0;
    CHECK(feed(&s, buf, mid + 2, &hint) == LSV_FRAME_PARTIAL);
    memset(buf, '\n', mid);             /* chunks passed are not reread */
    CHECK(feed(&s, buf, n, &hint) == (ssize_t)n);
    (void)after_head;

    /* A head arriving a byte at a time is scanned once: each call starts
     * at the last line end seen. Junk before it changes nothing until the
     * head completes (then the head is checked once, in full). */
    static const char h[] = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n";
    hint = 0;
    CHECK(feed(defaults(), h, sizeof h - 1, &hint) == LSV_FRAME_PARTIAL);
    CHECK((hint & 0xffffffffu) >= sizeof h - 2);
    test_done("resume: bytes behind the hint are not scanned again");
}

/* The walking functions stay inside their buffer on input the framer
 * never accepted (the decoder only sees valid frames, but they must not
 * read past n). */
static void test_walkers_bounded(void)
{
    static const char *junk[] = { "", "GET", "GET /", "GET / HTTP/1",
                                  "X: y", "\r\n", "5\r\nab", "fffffff\r\n" };
    for (size_t k = 0; k < sizeof junk / sizeof junk[0]; k++) {
        size_t n = strlen(junk[k]);
        char *p = malloc(n ? n : 1);
        memcpy(p, junk[k], n);
        lsv_http_line_t rl;
        (void)lsv_http_request_line(p, n, &rl);
        size_t i = 0, nl, vl;
        const char *a, *b;
        while (lsv_http_field(p, n, &i, &a, &nl, &b, &vl)) CHECK(i <= n);
        i = 0;
        while (lsv_http_chunk(p, n, &i, &a, &nl)) CHECK(i <= n);
        free(p);
    }
    CHECK(lsv_http_has_token(S("keep-alive, Upgrade"), "upgrade"));
    CHECK(!lsv_http_has_token(S("keep-alive, Upgrades"), "upgrade"));
    CHECK(lsv_http_has_token(S(" ,close ,"), "close"));
    test_done("walkers stay inside the buffer; token lists");
}

int main(void)
{
    rng_seed(0x5bd1e9955bd1e995u);
    test_good();
    test_limits();
    test_smuggling();
    test_reject_reply();
    test_continue();
    test_resume();
    test_walkers_bounded();
    return tap_end();
}

/* http_fuzz.c: libFuzzer target for the HTTP/1.1 request framer
 * (lsv_frame_next with framing "http", src/core/http.c) and the walking
 * functions the decoder uses on the frames it accepts.
 *
 * The first bytes of the input choose the limits, the rest is the stream:
 *   [0..1] max (body bytes, little endian)   [2..3] max_head - 1 (mod
 *   16384, at least 64)   [4] max_headers - 1 (mod 64)
 * Every call sees its bytes in a buffer of exactly that size, so a read
 * past len is a heap overflow AddressSanitizer reports. Beyond memory
 * safety it checks lsv_frame_next's contract (r <= len, the hint reset
 * after a frame, TRUNCATED only at eof), that a call with a fresh hint
 * agrees with the carried one, that the stream split in two (at a point
 * the input chooses) with the hint carried across gives the same frames
 * and the same final result as in one piece, that lsv_frame_reject
 * writes a whole response for each refusal, and that a frame decodes
 * (request line, fields, chunks) within its bounds. */
#include "lsv.h"
#include "frame.h"
#include "http.h"

#include <stdio.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t n);

#define MAX_FRAMES 1024

typedef struct {
    ssize_t r;
    size_t mlen;
} result_t;

static void fail(const char *what, ssize_t r)
{
    fprintf(stderr, "http_fuzz: %s (r %zd)\n", what, r);
    abort();
}

/* Walks an accepted frame as the decoder does. */
static void walk(const char *p, size_t n)
{
    lsv_http_line_t rl;
    size_t i = lsv_http_request_line(p, n, &rl);
    if (i == 0 || i > n) fail("an accepted frame has no request line", 0);
    if (rl.minor != 0 && rl.minor != 1) fail("version not 1.0 or 1.1", 0);
    const char *name, *v;
    size_t nlen, vlen;
    int chunked = 0;
    while (lsv_http_field(p, n, &i, &name, &nlen, &v, &vlen)) {
        if (i > n || name < p || v + vlen > p + n) fail("field outside", 0);
        if (lsv_http_ieq(name, nlen, "transfer-encoding")) chunked = 1;
    }
    if (chunked) {
        const char *d;
        size_t dlen;
        while (lsv_http_chunk(p, n, &i, &d, &dlen))
            if (i > n || d + dlen > p + n) fail("chunk outside", 0);
    }
}

/* One call on an exact-size copy of data[0, len), checked. */
static ssize_t next(const lsv_frame_spec_t *s, const uint8_t *data,
                    size_t len, int eof, size_t *hint, size_t *mlen)
{
    char *copy = malloc(len ? len : 1);
    if (copy == NULL) abort();
    if (len) memcpy(copy, data, len);
    size_t off = 0, fresh = 0, off0 = 0, mlen0 = 0;
    ssize_t r = lsv_frame_next(s, copy, len, eof, hint, &off, mlen);
    ssize_t r0 = lsv_frame_next(s, copy, len, eof, &fresh, &off0, &mlen0);
    if (r != r0 || (r > 0 && *mlen != mlen0))
        fail("a fresh hint disagrees with the carried one", r);
    if (r > 0) {
        if ((size_t)r > len) fail("frame longer than the input", r);
        if (off != 0 || *mlen != (size_t)r) fail("frame not [0, r)", r);
        if (*hint != 0) fail("hint not reset after a frame", r);
        walk(copy, (size_t)r);
    } else if (r == LSV_FRAME_PARTIAL) {
        if (eof && len) fail("partial at eof", r);
        char out[64];
        (void)lsv_frame_interim(s, copy, len, hint, out, sizeof out);
    } else if (r == LSV_FRAME_TRUNCATED) {
        if (!eof) fail("truncated before eof", r);
    } else if (r == LSV_FRAME_TOO_LONG || r == LSV_FRAME_BAD) {
        char out[512];
        const char *why = NULL;
        size_t k = lsv_frame_reject(s, r, copy, len, out, sizeof out, &why);
        if (why == NULL || k < 20 || memcmp(out, "HTTP/1.1 ", 9) != 0 ||
            memcmp(out + k - 1, "\n", 1) != 0)
            fail("a refusal without a whole response", r);
        int st = (out[9] - '0') * 100 + (out[10] - '0') * 10 + out[11] - '0';
        int big = st == 413 || st == 414 || st == 431;
        if (big != (r == LSV_FRAME_TOO_LONG)) fail("status and result", r);
    } else {
        fail("unknown result", r);
    }
    free(copy);
    return r;
}

/* Frames data[0, len) arriving as [0, cut) then the rest, then eof. */
static size_t run(const lsv_frame_spec_t *s, const uint8_t *data, size_t len,
                  size_t cut, result_t *out)
{
    size_t start = 0, avail = cut, k = 0, hint = 0;
    int eof = 0;
    for (;;) {
        size_t mlen = 0;
        ssize_t r = next(s, data + start, avail - start, eof, &hint, &mlen);
        if (r > 0) {
            if (k == MAX_FRAMES) return k;
            out[k++] = (result_t){ r, mlen };
            start += (size_t)r;
            continue;
        }
        if (r == LSV_FRAME_PARTIAL && avail < len) {
            avail = len;
            continue;
        }
        if (r == LSV_FRAME_PARTIAL && !eof) {
            eof = 1;
            continue;
        }
        out[k++] = (result_t){ r, 0 };
        return k;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t n)
{
    static result_t whole[MAX_FRAMES + 1], split[MAX_FRAMES + 1];
    if (n < 5) return 0;
    lsv_frame_spec_t s;
    lsv_frame_spec_init(&s, LSV_FRAME_HTTP);
    s.max = in[0] | (unsigned)in[1] << 8;
    unsigned mh = 1 + ((in[2] | (unsigned)in[3] << 8) % 16384);
    s.max_bulk = mh < 64 ? 64 : mh;
    s.max_args = 1 + in[4] % 64u;
    in += 5;
    n -= 5;
    size_t a = run(&s, in, n, n, whole);
    size_t cut = n ? (in[n - 1] * (size_t)131 + n / 2) % (n + 1) : 0;
    size_t b = run(&s, in, n, cut, split);
    if (a != b) fail("a split stream gave another number of frames", 0);
    for (size_t i = 0; i < a; i++)
        if (whole[i].r != split[i].r || whole[i].mlen != split[i].mlen)
            fail("a split stream gave other frames", whole[i].r);
    return 0;
}

/* resp_fuzz.c: libFuzzer target for the RESP framer (resp.c) and its
 * walkers, through lsv_frame_next.
 *
 * The first byte chooses the spec, the rest is the stream:
 *   [0] bit 0: client mode (replies), else server (commands);
 *       bit 1: small limits (max 300 bytes, 8 args, 40-byte bulks), so the
 *       limit paths are reached; bits 2-7: where a stream is cut in two.
 * Every call sees its bytes in a buffer of exactly that size, so a read
 * past len is a heap overflow AddressSanitizer reports. Checks:
 *   - the contract: r <= len, the frame's mlen is r, the hint is 0 after a
 *     frame, a partial hint lies within the data, TRUNCATED only at eof;
 *   - every frame decodes: the walkers (lsv_resp_item, inline args) read
 *     it to its last byte without a refusal;
 *   - the stream fed in two pieces (the hint carried across), and in
 *     reads of sizes taken from the stream, gives the same frames and the
 *     same final verdict as the stream in one piece;
 *   - a hint made of input bytes never makes the framer read outside. */
#include "lsv.h"
#include "frame.h"
#include "resp.h"

#include <stdio.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t n);

#define MAX_FRAMES 4096

typedef struct {
    ssize_t r;
    size_t mlen;
} result_t;

static void fail(const char *what, const lsv_frame_spec_t *s, ssize_t r)
{
    fprintf(stderr, "resp_fuzz: %s (client %d, max %u, r %zd)\n", what,
            s->client, s->max, r);
    abort();
}

/* A reply element at p[*pos] and, for an array, its elements. */
static int walk_reply(const char *p, size_t n, size_t *pos, int depth)
{
    lsv_resp_item_t it;
    if (depth > LSV_RESP_MAX_DEPTH || !lsv_resp_item(p, n, pos, &it))
        return 0;
    if (it.type == '*')
        for (long long i = 0; i < it.num; i++)
            if (!walk_reply(p, n, pos, depth + 1))
                return 0;
    return 1;
}

/* Whether the frame p[0, n) decodes to its last byte. */
static int decodes(const lsv_frame_spec_t *s, const char *p, size_t n)
{
    size_t pos = 0;
    if (s->client)
        return walk_reply(p, n, &pos, 0) && pos == n;
    if (lsv_resp_is_inline(p, n)) {
        char *arg = malloc(n);
        size_t k, argc = 0;
        int r;
        if (arg == NULL) abort();
        while ((r = lsv_resp_inline_arg(p, n, &pos, arg, &k)) == 1) {
            if (k > n) r = -1;
            argc++;
        }
        free(arg);
        return r == 0 && argc <= s->max_args;
    }
    lsv_resp_item_t it;
    if (!lsv_resp_item(p, n, &pos, &it) || it.type != '*')
        return 0;
    long long argc = it.num;
    if (argc > (long long)s->max_args) return 0;
    for (long long i = 0; i < argc; i++)
        if (!lsv_resp_item(p, n, &pos, &it) || it.type != '$' ||
            it.len > s->max_bulk)
            return 0;
    return pos == n;
}

/* One lsv_frame_next call on a private, exact-size copy of data[0, len),
 * checked against the contract. */
static ssize_t next(const lsv_frame_spec_t *s, const uint8_t *data,
                    size_t len, int eof, size_t *hint, size_t *mlen)
{
    char *copy = malloc(len ? len : 1);
    if (copy == NULL) abort();
    if (len) memcpy(copy, data, len);
    size_t off;
    ssize_t r = lsv_frame_next(s, copy, len, eof, hint, &off, mlen);
    if (r > 0) {
        if ((size_t)r > len) fail("frame longer than the input", s, r);
        if (off != 0 || *mlen != (size_t)r) fail("frame is not [0, r)", s, r);
        if (*hint != 0) fail("hint not reset after a frame", s, r);
        if ((size_t)r > s->max) fail("frame over max", s, r);
        if (!decodes(s, copy, (size_t)r)) fail("a frame does not decode", s, r);
    } else if (r == LSV_FRAME_PARTIAL) {
        if ((*hint & 0xffffffffu) > len) fail("hint past the input", s, r);
        if (eof && len) fail("partial at eof", s, r);
    } else if (r == LSV_FRAME_TRUNCATED) {
        if (!eof) fail("truncated before eof", s, r);
    } else if (r != LSV_FRAME_TOO_LONG && r != LSV_FRAME_BAD) {
        fail("unknown result", s, r);
    }
    free(copy);
    return r;
}

/* Frames data[0, len): first cut bytes, then in reads of the sizes steps
 * gives (or all at once), then eof. Fills out[]; returns the count. */
static size_t run(const lsv_frame_spec_t *s, const uint8_t *data, size_t len,
                  size_t cut, const uint8_t *steps, size_t nsteps,
                  result_t *out)
{
    size_t start = 0, k = 0, hint = 0, st = 0;
    size_t avail = cut ? cut : steps ? 0 : len;
    int eof = 0;
    for (;;) {
        size_t mlen;
        ssize_t r = next(s, data + start, avail - start, eof, &hint, &mlen);
        if (r > 0) {
            if (k == MAX_FRAMES) return k;
            out[k++] = (result_t){ r, mlen };
            start += (size_t)r;
            continue;
        }
        if (r == LSV_FRAME_PARTIAL && avail < len) {
            size_t step = steps ? 1 + steps[st++ % nsteps] % 64 : len;
            avail = avail + step < len ? avail + step : len;
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

static void same(const lsv_frame_spec_t *s, const result_t *a, size_t na,
                 const result_t *b, size_t nb, const char *what)
{
    if (na != nb) fail(what, s, 0);
    for (size_t i = 0; i < na; i++)
        if (a[i].r != b[i].r || a[i].mlen != b[i].mlen)
            fail(what, s, a[i].r);
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t n)
{
    static result_t whole[MAX_FRAMES + 1], other[MAX_FRAMES + 1];
    if (n < 1) return 0;
    lsv_frame_spec_t s;
    lsv_frame_spec_init(&s, LSV_FRAME_RESP);
    s.client = in[0] & 1;
    if (in[0] & 2) {
        s.max = 300;
        s.max_args = 8;
        s.max_bulk = 40;
    }
    size_t cut_at = in[0] >> 2;
    in++;
    n--;
    size_t a = run(&s, in, n, 0, NULL, 0, whole);
    if (n > 1) {
        size_t cut = 1 + (cut_at * 7919) % (n - 1);
        size_t b = run(&s, in, n, cut, NULL, 0, other);
        same(&s, whole, a, other, b, "a stream cut in two framed otherwise");
        b = run(&s, in, n, 0, in, n, other);
        same(&s, whole, a, other, b, "a stream in small reads framed otherwise");
    }
    /* Any hint at all: memory safety only. */
    if (n >= sizeof(size_t)) {
        size_t hint, mlen, off;
        memcpy(&hint, in, sizeof hint);
        char *copy = malloc(n);
        if (copy == NULL) abort();
        memcpy(copy, in, n);
        ssize_t r = lsv_frame_next(&s, copy, n, 0, &hint, &off, &mlen);
        free(copy);
        if (r > (ssize_t)n) fail("frame longer than the input (any hint)", &s, r);
    }
    return 0;
}

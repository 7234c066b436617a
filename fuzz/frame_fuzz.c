/* frame_fuzz.c: libFuzzer target for the framer, lsv_frame_next, in every
 * framing kind.
 *
 * The first bytes of the input choose the spec, the rest is the stream:
 *   [0] kind (mod 5)   [1] flags: bit 0 keep_eol, bit 1 big_endian,
 *                           bits 2-3 prefix_len 1/2/4/8
 *   [2..3] max (little endian; 0xffff means LSV_FRAME_HARD_MAX)
 *   [4..5] fixed size - 1 (mod 4096)   [6] delim_len - 1 (mod 32)
 *   [7..] the delimiter (delim_len bytes), then the stream.
 * Every call sees its bytes in a buffer of exactly that size, so a read
 * past len is a heap overflow AddressSanitizer reports. Beyond memory
 * safety it checks the contract in frame.h and that a stream split into
 * reads of any sizes yields the same frames as the stream in one piece
 * (raw framing excepted: it hands over whatever arrived). */
#include "lsv.h"
#include "frame.h"

#include <stdio.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t n);

#define MAX_FRAMES 4096

typedef struct {
    ssize_t r;
    size_t off, mlen;
} result_t;

static void fail(const char *what, const lsv_frame_spec_t *s, ssize_t r)
{
    fprintf(stderr, "frame_fuzz: %s (kind %d, max %u, size %u, r %zd)\n",
            what, s->kind, s->max, s->size, r);
    abort();
}

/* One lsv_frame_next call on a private, exact-size copy of data[0, len);
 * checks the result against the contract. */
static ssize_t next(const lsv_frame_spec_t *s, const uint8_t *data,
                    size_t len, int eof, size_t *hint, size_t *off,
                    size_t *mlen)
{
    char *copy = malloc(len ? len : 1);
    if (copy == NULL) abort();
    if (len) memcpy(copy, data, len);
    ssize_t r = lsv_frame_next(s, copy, len, eof, hint, off, mlen);
    free(copy);
    if (r > 0) {
        if ((size_t)r > len) fail("frame longer than the input", s, r);
        if (*off > (size_t)r || *mlen > (size_t)r - *off)
            fail("payload outside the frame", s, r);
        if (*hint != 0) fail("hint not reset after a frame", s, r);
        size_t slack = s->kind == LSV_FRAME_DELIM ? s->delim_len
                     : s->kind == LSV_FRAME_LINE ? 2 : 0;
        if (s->kind == LSV_FRAME_FIXED ? *mlen != s->size
                                       : *mlen > (size_t)s->max + slack)
            fail("payload over the limit", s, r);
    } else if (r == LSV_FRAME_PARTIAL) {
        if (*hint > len) fail("hint past the input", s, r);
        if (*off || *mlen) fail("payload set without a frame", s, r);
    } else if (r == LSV_FRAME_TRUNCATED) {
        if (!eof) fail("truncated before eof", s, r);
    } else if (r != LSV_FRAME_TOO_LONG) {
        fail("unknown result", s, r);
    }
    return r;
}

/* Frames data[0, len) delivered in reads of the sizes steps gives (all of
 * it at once when steps is NULL), then eof. Fills out[] with every frame
 * and the final result; returns how many entries. */
static size_t run(const lsv_frame_spec_t *s, const uint8_t *data, size_t len,
                  const uint8_t *steps, size_t nsteps, result_t *out)
{
    size_t start = 0, avail = steps ? 0 : len, k = 0, hint = 0, st = 0;
    int eof = 0;
    for (;;) {
        size_t off, mlen;
        ssize_t r = next(s, data + start, avail - start, eof, &hint, &off,
                         &mlen);
        if (r > 0) {
            if (k == MAX_FRAMES) return k;
            out[k++] = (result_t){ r, off, mlen };
            start += (size_t)r;
            continue;
        }
        if (r == LSV_FRAME_PARTIAL && avail < len) {
            size_t step = 1 + steps[st++ % nsteps] % 64;
            avail = avail + step < len ? avail + step : len;
            continue;
        }
        if (r == LSV_FRAME_PARTIAL && !eof) {
            eof = 1;
            continue;
        }
        out[k++] = (result_t){ r, 0, 0 };
        return k;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t n)
{
    static result_t whole[MAX_FRAMES + 1], split[MAX_FRAMES + 1];
    if (n < 7) return 0;
    lsv_frame_spec_t s;
    lsv_frame_spec_init(&s, (lsv_frame_kind_t)(in[0] % 5));
    s.keep_eol = in[1] & 1;
    s.big_endian = (in[1] >> 1) & 1;
    s.prefix_len = (uint8_t)(1u << ((in[1] >> 2) & 3));
    unsigned max = in[2] | (unsigned)in[3] << 8;
    s.max = max == 0xffff ? LSV_FRAME_HARD_MAX : max;
    s.size = 1 + ((in[4] | (unsigned)in[5] << 8) % 4096);
    s.delim_len = (uint8_t)(1 + in[6] % LSV_FRAME_DELIM_MAX);
    in += 7;
    n -= 7;
    if (s.kind == LSV_FRAME_DELIM) {
        if (n < s.delim_len) return 0;
        memcpy(s.delim, in, s.delim_len);
        in += s.delim_len;
        n -= s.delim_len;
    }
    size_t a = run(&s, in, n, NULL, 0, whole);
    if (s.kind == LSV_FRAME_RAW) return 0;
    /* The read sizes come from the stream itself, so each input tries
     * another split. */
    size_t b = run(&s, in, n, n ? in : (const uint8_t *)"\1", n ? n : 1,
                   split);
    if (a != b) fail("a split stream gave another number of frames", &s, 0);
    for (size_t i = 0; i < a; i++)
        if (whole[i].r != split[i].r || whole[i].off != split[i].off ||
            whole[i].mlen != split[i].mlen)
            fail("a split stream gave other frames", &s, whole[i].r);
    return 0;
}

/* ws_fuzz.c: libFuzzer target for the WebSocket framer (ws.c) through
 * lsv_frame_next.
 *
 * Input: [0] bit 0 client mode, bit 1 mask the stream's frames for the
 * mode (so most inputs get past the masking check); [1..2] max (little
 * endian, 0 means 1), then the stream. Each call sees an exact-size
 * copy, so a read past len is a heap overflow ASan reports. Beyond memory
 * safety it checks the contract in frame.h, that a stream split into
 * reads of any sizes gives the same frames as the stream in one piece,
 * that each frame walks again as whole frames (as the decoder walks it)
 * that lsv_ws_reject writes a well-formed close frame and that the
 * interim replies (pongs between fragments) are whole pongs. */
#include "lsv.h"
#include "frame.h"
#include "ws.h"

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
    fprintf(stderr, "ws_fuzz: %s (r %zd)\n", what, r);
    abort();
}

/* Walks the frame p[0, r) as lsv_ws_push does: whole headers and
 * payloads, ending exactly at r; a data payload within max. */
static void walk(const lsv_frame_spec_t *s, const char *p, size_t r)
{
    size_t at = 0;
    uint64_t total = 0;
    while (at < r) {
        lsv_ws_head_t h;
        size_t hl = lsv_ws_head(p + at, r - at, &h);
        if (hl == 0 || h.len > r - at - hl) fail("frame does not walk", 0);
        if (h.opcode < LSV_WS_CLOSE) total += h.len;
        else if (h.len > 125) fail("control frame over 125", 0);
        at += hl + (size_t)h.len;
    }
    if (total > s->max) fail("message over max", 0);
}

/* As the conn does after PARTIAL: the pongs owed, until none; each
 * output a run of whole pongs of at most 125 bytes, masked as a client. */
static void interim(const lsv_frame_spec_t *s, char *p, size_t len,
                    size_t *hint)
{
    char out[300];
    size_t n;
    int calls = 0;
    while ((n = lsv_frame_interim(s, p, len, hint, out, sizeof out)) > 0) {
        if (++calls > 100000) fail("interim does not end", 0);
        if ((uint32_t)*hint > len) fail("interim hint past the input", 0);
        for (size_t at = 0; at < n;) {
            lsv_ws_head_t h;
            size_t hl = lsv_ws_head(out + at, n - at, &h);
            if (hl == 0 || h.len > n - at - hl || h.opcode != LSV_WS_PONG ||
                h.len > 125 || h.masked != s->client)
                fail("interim wrote no pong", 0);
            at += hl + (size_t)h.len;
        }
    }
}

static ssize_t next(const lsv_frame_spec_t *s, const uint8_t *data,
                    size_t len, int eof, size_t *hint, size_t *mlen)
{
    char *copy = malloc(len ? len : 1);
    if (copy == NULL) abort();
    if (len) memcpy(copy, data, len);
    size_t off;
    ssize_t r = lsv_frame_next(s, copy, len, eof, hint, &off, mlen);
    if (r > 0) {
        if ((size_t)r > len || off != 0 || *mlen != (size_t)r)
            fail("frame outside the input", r);
        if (*hint != 0) fail("hint not reset after a frame", r);
        walk(s, copy, (size_t)r);
    } else if (r == LSV_FRAME_PARTIAL) {
        if ((uint32_t)*hint > len) fail("hint past the input", r);
        if (!eof) interim(s, copy, len, hint);
    } else if (r == LSV_FRAME_TRUNCATED) {
        if (!eof) fail("truncated before eof", r);
    } else if (r == LSV_FRAME_TOO_LONG || r == LSV_FRAME_BAD) {
        char out[64];
        const char *why = NULL;
        size_t k = lsv_ws_reject(s, r, copy, len, out, sizeof out, &why);
        lsv_ws_head_t h;
        if (why == NULL || k == 0 || lsv_ws_head(out, k, &h) == 0 ||
            h.opcode != LSV_WS_CLOSE || h.len != 2 || h.masked != s->client)
            fail("reject wrote no close frame", r);
    } else {
        fail("unknown result", r);
    }
    free(copy);
    return r;
}

static size_t run(const lsv_frame_spec_t *s, const uint8_t *data, size_t len,
                  const uint8_t *steps, size_t nsteps, result_t *out)
{
    size_t start = 0, avail = steps ? 0 : len, k = 0, hint = 0, st = 0;
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
            size_t step = 1 + steps[st++ % nsteps] % 64;
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

/* Sets the mask bit of every frame header it can find, so the masking
 * check passes in server mode and the fuzzer reaches the rest. */
static void fix_masks(uint8_t *p, size_t n, int mask)
{
    size_t at = 0;
    while (at + 2 <= n) {
        p[at + 1] = (uint8_t)(mask ? p[at + 1] | 0x80 : p[at + 1] & 0x7f);
        lsv_ws_head_t h;
        size_t hl = lsv_ws_head((const char *)p + at, n - at, &h);
        if (hl == 0 || h.len > n - at - hl) return;
        at += hl + (size_t)h.len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t n)
{
    static result_t whole[MAX_FRAMES + 1], split[MAX_FRAMES + 1];
    static uint8_t buf[1 << 20];
    if (n < 3 || n - 3 > sizeof buf) return 0;
    lsv_frame_spec_t s;
    lsv_frame_spec_init(&s, LSV_FRAME_WS);
    s.client = in[0] & 1;
    unsigned max = in[1] | (unsigned)in[2] << 8;
    s.max = max ? max : 1;
    int fix = (in[0] >> 1) & 1;
    in += 3;
    n -= 3;
    memcpy(buf, in, n);
    if (fix) fix_masks(buf, n, !s.client);
    size_t a = run(&s, buf, n, NULL, 0, whole);
    size_t b = run(&s, buf, n, n ? buf : (const uint8_t *)"\1", n ? n : 1,
                   split);
    if (a != b) fail("a split stream gave another number of frames", 0);
    for (size_t i = 0; i < a; i++)
        if (whole[i].r != split[i].r || whole[i].mlen != split[i].mlen)
            fail("a split stream gave other frames", whole[i].r);
    return 0;
}

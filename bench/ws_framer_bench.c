/* ws_framer_bench.c: our WebSocket framer (ws.c) against wslay's frame
 * layer (libwslay-dev) on the same bytes: N masked 64-byte binary frames
 * (and 64 KiB ones) in one buffer, framed and unmasked into a copy, as
 * the server's read path does. Prints ns per frame for each. Build and
 * run (not part of `make`; wslay is only needed here):
 *   cc -O2 -Isrc/core bench/ws_framer_bench.c src/core/ws.c \
 *      src/core/frame.c src/core/resp.c src/core/http.c -lwslay -o /tmp/wsb
 *   /tmp/wsb */
#include "lsv.h"
#include "frame.h"
#include "ws.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <wslay/wslay.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

typedef struct { const char *p; size_t len, at; } src_t;

static ssize_t recv_cb(uint8_t *buf, size_t len, int flags, void *ud)
{
    (void)flags;
    src_t *s = ud;
    size_t n = s->len - s->at < len ? s->len - s->at : len;
    if (n == 0) return -1;
    memcpy(buf, s->p + s->at, n);
    s->at += n;
    return (ssize_t)n;
}

static ssize_t send_cb(const uint8_t *d, size_t l, int f, void *u)
{
    (void)d; (void)f; (void)u;
    return (ssize_t)l;
}

static int genmask_cb(uint8_t *b, size_t l, void *u)
{
    (void)u;
    memset(b, 0, l);
    return 0;
}

static void run(size_t size, size_t count)
{
    static const uint8_t mask[4] = { 1, 2, 3, 4 };
    size_t flen = (size < 126 ? 2 : size < 65536 ? 4 : 10) + 4 + size;
    char *buf = malloc(flen * count), *out = malloc(size + 16);
    char *payload = malloc(size);
    memset(payload, 'a', size);
    for (size_t i = 0; i < count; i++) {
        size_t hl = lsv_ws_put_head(buf + i * flen, LSV_WS_BINARY, size, mask);
        lsv_ws_unmask(buf + i * flen + hl, payload, size, mask);
    }
    lsv_frame_spec_t spec;
    lsv_frame_spec_init(&spec, LSV_FRAME_WS);
    spec.max = 1u << 30;
    double t0 = now();
    size_t at = 0, frames = 0, sum = 0;
    while (at < flen * count) {
        size_t hint = 0, off, mlen;
        ssize_t r = lsv_frame_next(&spec, buf + at, flen * count - at, 0,
                                   &hint, &off, &mlen);
        if (r <= 0) abort();
        lsv_ws_head_t h;
        size_t hl = lsv_ws_head(buf + at, (size_t)r, &h);
        lsv_ws_unmask(out, buf + at + hl, (size_t)h.len, h.mask);
        sum += (unsigned char)out[0];
        at += (size_t)r;
        frames++;
    }
    double ours = (now() - t0) / (double)frames * 1e9;

    src_t s = { buf, flen * count, 0 };
    struct wslay_frame_callbacks cbs = { send_cb, recv_cb, genmask_cb };
    wslay_frame_context_ptr ctx;
    wslay_frame_context_init(&ctx, &cbs, &s);
    t0 = now();
    size_t got = 0;
    frames = 0;
    for (;;) {
        struct wslay_frame_iocb io;
        ssize_t r = wslay_frame_recv(ctx, &io);
        if (r < 0) break;
        memcpy(out, io.data, io.data_length);   /* wslay unmasked it */
        got += io.data_length;
        if (got == size) {
            sum += (unsigned char)out[0];
            got = 0;
            frames++;
        }
    }
    double theirs = (now() - t0) / (double)frames * 1e9;
    wslay_frame_context_free(ctx);
    printf("%7zu-byte frames x %zu: ours %.1f ns/frame, wslay %.1f "
           "ns/frame (%.2fx) [%zu]\n", size, count, ours, theirs,
           theirs / ours, sum & 1);
    free(buf);
    free(out);
    free(payload);
}

int main(void)
{
    run(64, 2000000);
    run(1024, 500000);
    run(65536, 4000);
    return 0;
}

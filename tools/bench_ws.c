/* bench_ws.c: luaserv-bench's websocket mode (-m websocket).
 *
 * Each connection sends an HTTP/1.1 upgrade request to --path, checks the
 * 101 answer and its Sec-WebSocket-Accept, then keeps -P masked text
 * frames in flight, each carrying a -s byte payload "x...x<hex number>",
 * and counts every echoed frame (unmasked, as a server sends them) that
 * carries the payload back, in order, like the line modes count replies.
 *
 * Every connection sends the same Sec-WebSocket-Key (RFC 6455's sample,
 * whose accept value is known), and every frame the same masking key: the
 * server does the same work as for random ones, and the generator spends
 * nothing on SHA-1 or on masking the payload but its number's digits. */
#include "bench_ws.h"

#include <errno.h>
#include <stdio.h>
#include <strings.h>

/* RFC 6455 section 1.3's example key and the accept value it gives. */
#define WS_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define WS_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

/* An upgrade answer's head longer than this is refused. */
#define WS_HEAD_MAX 16384

/* An echoed frame's payload longer than this is a protocol error. */
#define WS_PAYLOAD_MAX (1u << 20)

#define UPGRADE "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n" \
    "Connection: Upgrade\r\nSec-WebSocket-Key: " WS_KEY "\r\n" \
    "Sec-WebSocket-Version: 13\r\n\r\n"

static const unsigned char mask_key[4] = { 0x37, 0xfa, 0x21, 0x3d };

void bench_ws_setup(bench_t *b)
{
    size_t n = b->size, hdr = n < 126 ? 2 : n < 65536 ? 4 : 10;
    const char *host = b->sa.ss_family == AF_UNIX ? "localhost" : b->name;
    unsigned char *f;
    int len;

    b->line_len = b->size;      /* the payload: no CRLF */
    b->ws_hdr = hdr + 4;
    b->ws_frame_len = b->ws_hdr + n;
    b->ws_frame = lsv_malloc(b->ws_frame_len);
    f = (unsigned char *)b->ws_frame;
    f[0] = 0x81;                /* FIN, text */
    if (hdr == 2) {
        f[1] = (unsigned char)(0x80 | n);
    } else if (hdr == 4) {
        f[1] = 0x80 | 126;
        f[2] = (unsigned char)(n >> 8);
        f[3] = (unsigned char)n;
    } else {
        f[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            f[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
    }
    memcpy(f + hdr, mask_key, 4);
    for (size_t i = 0; i < n; i++)
        f[b->ws_hdr + i] = (unsigned char)b->line[i] ^ mask_key[i & 3];

    len = snprintf(NULL, 0, UPGRADE, b->ws_path, host);
    b->ws_upgrade = lsv_malloc((size_t)len + 1);
    snprintf(b->ws_upgrade, (size_t)len + 1, UPGRADE, b->ws_path, host);
    b->ws_upgrade_len = (size_t)len;
}

/* Appends n frames to c->out and to the ring of c's requests in flight,
 * all stamped now: a memcpy each, and its number's digits masked. */
static void ws_queue(bench_t *b, bconn_t *c, uint32_t n, int64_t now)
{
    size_t at = b->size - (size_t)b->digits;
    char *p = lsv_buf_reserve(&c->out, (size_t)n * b->ws_frame_len);
    uint32_t i = c->head + c->inflight;

    for (uint32_t k = 0; k < n; k++, i++) {
        if (i >= b->pipeline) i -= b->pipeline;
        slot_t *s = &c->slots[i];
        char *d = p + b->ws_hdr + at;
        s->seq = c->seq++;
        s->sent = now;
        memcpy(p, b->ws_frame, b->ws_frame_len);
        put_seq(d, s->seq, b->digits);
        for (int j = 0; j < b->digits; j++)
            d[j] = (char)(d[j] ^ mask_key[(at + (size_t)j) & 3]);
        p += b->ws_frame_len;
    }
    c->inflight += n;
    lsv_buf_commit(&c->out, (size_t)n * b->ws_frame_len);
}

void bench_ws_start(bench_t *b, bconn_t *c)
{
    c->hs = 1;
    lsv_buf_append(&c->out, b->ws_upgrade, b->ws_upgrade_len);
    if (bench_stream_flush(b, c) != LSV_OK)
        bench_conn_fail(b, c, &b->st.closed, "send", errno);
}

/* Whether the head [p, p + n) (through its empty line) is a 101 with the
 * expected Sec-WebSocket-Accept (name in any case, blanks around the
 * value). */
static int upgrade_ok(const char *p, size_t n)
{
    static const char name[] = "\r\nsec-websocket-accept:";
    const size_t nl = sizeof name - 1, al = sizeof WS_ACCEPT - 1;

    if (n < 13 || memcmp(p, "HTTP/1.1 101 ", 13) != 0) return 0;
    for (size_t i = 0; i + nl <= n; i++) {
        if (p[i] != '\r' || strncasecmp(p + i, name, nl) != 0) continue;
        const char *v = p + i + nl, *end = p + n;
        while (v < end && (*v == ' ' || *v == '\t')) v++;
        if ((size_t)(end - v) < al + 2 || memcmp(v, WS_ACCEPT, al) != 0)
            return 0;
        for (v += al; *v == ' ' || *v == '\t'; v++) {}
        return *v == '\r';
    }
    return 0;
}

/* The upgrade's answer in [p, p + len): the head's length once it is all
 * in and good; 0 while it is not all in; -1 after failing c (refused, or
 * a head over WS_HEAD_MAX), with the answer's first line as the error. */
static long handshake(bench_t *b, bconn_t *c, const char *p, size_t len)
{
    const char *end = memmem(p, len, "\r\n\r\n", 4);
    const char *eol;
    char why[sizeof b->last_err];
    size_t n;

    if (end == NULL && len <= WS_HEAD_MAX) return 0;
    n = end != NULL ? (size_t)(end + 4 - p) : len;
    if (end != NULL && upgrade_ok(p, n)) return (long)n;
    eol = memchr(p, '\r', n);
    n = eol != NULL ? (size_t)(eol - p) : n < 60 ? n : 60;
    if (end != NULL && len >= 13 && memcmp(p, "HTTP/1.1 101 ", 13) == 0)
        snprintf(why, sizeof why, "upgrade: a 101 without the expected "
                 "Sec-WebSocket-Accept");
    else
        snprintf(why, sizeof why, "upgrade refused: %.*s",
                 (int)(n < 80 ? n : 80), p);
    /* empties c->in, where p may point */
    bench_conn_fail(b, c, &b->st.connect, "upgrade", EPROTO);
    memcpy(b->last_err, why, sizeof why);
    return -1;
}

/* The frame at [p, p + len): its whole length (header and payload), 0
 * while it is not all in, or -1 for a frame no server sends (masked, or
 * a payload over WS_PAYLOAD_MAX). *hl gets the header's length. */
static long frame_len(const unsigned char *p, size_t len, size_t *hl)
{
    uint64_t n;

    if (len < 2) return 0;
    if (p[1] & 0x80) return -1;
    n = p[1] & 0x7f;
    *hl = n == 126 ? 4 : n == 127 ? 10 : 2;
    if (len < *hl) return 0;
    if (n == 126) n = (uint64_t)p[2] << 8 | p[3];
    else if (n == 127) {
        n = 0;
        for (int i = 0; i < 8; i++) n = n << 8 | p[2 + i];
    }
    if (n > WS_PAYLOAD_MAX) return -1;
    return len < *hl + n ? 0 : (long)(*hl + n);
}

/* Every whole frame answers the oldest frame in flight (a text or binary
 * frame with FIN; pings and pongs are skipped; a close ends the
 * connection); then as many frames as were answered go out in one write.
 * Before that, the upgrade's 101; once it is in, the first -P frames go. */
void bench_ws_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    bench_t *b = ev_userdata(loop);
    bconn_t *c = container_of(w, bconn_t, rio);
    size_t len = bench_stream_read(b, c), off = 0, hl = 0;
    const char *p = b->rbuf;
    int buffered = c->in.len > 0;
    uint32_t done = 0;
    int64_t now;
    long r;
    (void)revents;

    if (len == 0) return;
    now = now_ns();
    if (buffered) {
        lsv_buf_append(&c->in, p, len);
        p = lsv_buf_head(&c->in);
        len = c->in.len;
    }
    if (c->hs) {
        if ((r = handshake(b, c, p, len)) < 0) return;
        if (r > 0) {
            off = (size_t)r;
            c->hs = 0;
            ws_queue(b, c, b->pipeline, now);
            if (bench_stream_flush(b, c) != LSV_OK) {
                bench_conn_fail(b, c, &b->st.closed, "send", errno);
                return;
            }
        }
    }
    while (!c->hs
           && (r = frame_len((const unsigned char *)p + off, len - off,
                             &hl)) != 0) {
        int op = r > 0 ? p[off] & 0x0f : -1, fin = (p[off] & 0x80) != 0;
        if (r < 0 || op == 8) {
            if (r < 0)
                bench_bad_reply(b, p + off, len - off < 64 ? len - off : 64);
            bench_conn_fail(b, c, &b->st.closed,
                            op == 8 ? "close frame" : "read",
                            op == 8 ? 0 : EPROTO);
            return;
        }
        if (op != 9 && op != 10) {
            const char *d = p + off + hl;
            size_t n = (size_t)r - hl;
            if (unlikely(c->inflight == 0)) {
                bench_bad_reply(b, d, n);             /* nothing was asked */
            } else {
                slot_t *s = &c->slots[c->head];
                if (likely(fin && (op == 1 || op == 2)
                           && (b->check == CHECK_LINE
                               || (n == b->line_len
                                   && is_request(b, d, s->seq)))))
                    record(b, c, now - s->sent);
                else
                    bench_bad_reply(b, d, n);
                if (++c->head == b->pipeline) c->head = 0;
                c->inflight--;
                done++;
            }
        }
        off += (size_t)r;
    }
    if (buffered)
        lsv_buf_consume(&c->in, off);
    else if (off < len)
        lsv_buf_append(&c->in, p + off, len - off);
    if (done > 0) {
        ws_queue(b, c, done, now_ns());
        if (bench_stream_flush(b, c) != LSV_OK)
            bench_conn_fail(b, c, &b->st.closed, "send", errno);
    }
}

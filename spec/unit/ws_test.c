/* ws_test.c: unit tests of the WebSocket framer (ws.c), printed as TAP. */
#include "lsv.h"
#include "frame.h"
#include "ws.h"
#include "tap.h"

#include <stdio.h>
#include <string.h>

static const uint8_t MASK[4] = { 0x37, 0xfa, 0x21, 0x3d };

static lsv_frame_spec_t ws_spec(uint32_t max, int client)
{
    lsv_frame_spec_t s;
    lsv_frame_spec_init(&s, LSV_FRAME_WS);
    s.max = max;
    s.client = (uint8_t)client;
    return s;
}

/* Appends one frame to buf at *at: header byte0 as given (FIN, RSV,
 * opcode), the payload masked with MASK when masked. */
static void put(char *buf, size_t *at, unsigned b0, const char *payload,
                uint64_t n, int masked)
{
    char head[LSV_WS_HEAD_MAX];
    size_t hl = lsv_ws_put_head(head, 0, n, masked ? MASK : NULL);
    head[0] = (char)b0;
    memcpy(buf + *at, head, hl);
    *at += hl;
    if (payload) lsv_ws_unmask(buf + *at, payload, (size_t)n,
                               masked ? MASK : (const uint8_t[4]){ 0 });
    else memset(buf + *at, 0, (size_t)n);
    *at += (size_t)n;
}

/* Frames data[0, len) in one call (hint 0). */
static ssize_t one(const lsv_frame_spec_t *s, const char *data, size_t len,
                   int eof, size_t *mlen)
{
    size_t hint = 0, off;
    return lsv_frame_next(s, data, len, eof, &hint, &off, mlen);
}

/* The frame data[0, n) arrives in two reads split at every byte k, and
 * one byte at a time with the hint carried: PARTIAL until it is all in,
 * then n; the hint never points past the bytes seen. */
static void every_split(const lsv_frame_spec_t *s, const char *data,
                        size_t n, const char *what)
{
    size_t mlen, off;
    for (size_t k = 1; k < n; k++) {
        size_t hint = 0;
        ssize_t r = lsv_frame_next(s, data, k, 0, &hint, &off, &mlen);
        CHECKF(r == LSV_FRAME_PARTIAL, "%s: %zu of %zu bytes gave %zd", what,
               k, n, r);
        CHECKF((uint32_t)hint <= k, "%s: hint past the input", what);
        r = lsv_frame_next(s, data, n, 0, &hint, &off, &mlen);
        CHECKF(r == (ssize_t)n && mlen == n && off == 0,
               "%s: split at %zu gave %zd", what, k, r);
        hint = 0;
        r = lsv_frame_next(s, data, k, 1, &hint, &off, &mlen);
        CHECKF(r == LSV_FRAME_TRUNCATED, "%s: eof at %zu gave %zd", what,
               k, r);
    }
    size_t hint = 0;
    for (size_t k = 1; k <= n; k++) {
        ssize_t r = lsv_frame_next(s, data, k, 0, &hint, &off, &mlen);
        CHECKF(r == (k < n ? LSV_FRAME_PARTIAL : (ssize_t)n),
               "%s: byte by byte at %zu gave %zd", what, k, r);
    }
    test_done(what);
}

static void test_shapes(int client)
{
    lsv_frame_spec_t s = ws_spec(1024 * 1024, client);
    static char buf[200000], big[70000];
    char name[80];
    int m = !client;
    memset(big, 'x', sizeof big);
    struct { unsigned b0; uint64_t n; const char *what; } one_frame[] = {
        { 0x81, 5, "text" }, { 0x82, 0, "empty binary" },
        { 0x89, 4, "ping" }, { 0x8A, 0, "pong" }, { 0x88, 0, "empty close" },
        { 0x88, 6, "close with code" }, { 0x82, 125, "125 bytes" },
        { 0x82, 126, "126 bytes" }, { 0x82, 65535, "65535 bytes" },
        { 0x82, 65536, "65536 bytes" },
    };
    for (size_t i = 0; i < sizeof one_frame / sizeof one_frame[0]; i++) {
        size_t at = 0;
        put(buf, &at, one_frame[i].b0, big, one_frame[i].n, m);
        snprintf(name, sizeof name, "%s: %s frame at every split",
                 client ? "client" : "server", one_frame[i].what);
        every_split(&s, buf, at, name);
    }
    /* A fragmented text message with a ping and a pong between its
     * fragments: one frame, through the FIN fragment. */
    size_t at = 0;
    put(buf, &at, 0x01, "hel", 3, m);
    put(buf, &at, 0x89, "pi", 2, m);
    put(buf, &at, 0x00, "lo ", 3, m);
    put(buf, &at, 0x8A, NULL, 0, m);
    put(buf, &at, 0x80, "world", 5, m);
    size_t whole = at;
    put(buf, &at, 0x81, "next", 4, m);
    snprintf(name, sizeof name, "%s: fragmented message with a ping "
             "between fragments at every split", client ? "client" : "server");
    every_split(&s, buf, whole, name);
    size_t mlen;
    CHECK(one(&s, buf, at, 0, &mlen) == (ssize_t)whole && mlen == whole);
    CHECK(one(&s, buf + whole, at - whole, 0, &mlen) == (ssize_t)(at - whole));
    test_done(client ? "client: two messages in one read"
                     : "server: two messages in one read");
}

/* Each protocol error, and the close frame lsv_ws_reject answers. */
static void test_errors(void)
{
    lsv_frame_spec_t s = ws_spec(1000, 0), c = ws_spec(1000, 1);
    struct { const lsv_frame_spec_t *s; unsigned b0; uint64_t n; int masked;
             unsigned b0_2; ssize_t want; unsigned code; const char *what; }
    cases[] = {
        { &s, 0xC1, 1, 1, 0, LSV_FRAME_BAD, 1002, "RSV1 set" },
        { &s, 0xA1, 1, 1, 0, LSV_FRAME_BAD, 1002, "RSV2 set" },
        { &s, 0x91, 1, 1, 0, LSV_FRAME_BAD, 1002, "RSV3 set" },
        { &s, 0x83, 1, 1, 0, LSV_FRAME_BAD, 1002, "opcode 3" },
        { &s, 0x8B, 1, 1, 0, LSV_FRAME_BAD, 1002, "opcode 0xB" },
        { &s, 0x81, 1, 0, 0, LSV_FRAME_BAD, 1002, "unmasked client frame" },
        { &c, 0x81, 1, 1, 0, LSV_FRAME_BAD, 1002, "masked server frame" },
        { &s, 0x09, 1, 1, 0, LSV_FRAME_BAD, 1002, "fragmented ping" },
        { &s, 0x89, 126, 1, 0, LSV_FRAME_BAD, 1002, "126-byte ping" },
        { &s, 0x88, 1, 1, 0, LSV_FRAME_BAD, 1002, "1-byte close" },
        { &s, 0x80, 1, 1, 0, LSV_FRAME_BAD, 1002, "lone continuation" },
        { &s, 0x01, 1, 1, 0x81, LSV_FRAME_BAD, 1002,
          "text frame inside a message" },
        { &s, 0x82, 1001, 1, 0, LSV_FRAME_TOO_LONG, 1009,
          "one frame over max" },
        { &s, 0x02, 600, 1, 0x80, LSV_FRAME_TOO_LONG, 1009,
          "fragments over max" },
    };
    static char buf[4096], out[64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t at = 0, mlen;
        put(buf, &at, cases[i].b0, NULL, cases[i].n, cases[i].masked);
        if (cases[i].b0_2)
            put(buf, &at, cases[i].b0_2, NULL, 600, cases[i].masked);
        /* Decided as soon as the offending header is in. */
        size_t hl = at - 600;
        if (!cases[i].b0_2) {
            lsv_ws_head_t h;
            hl = lsv_ws_head(buf, at, &h);
        }
        ssize_t r = one(cases[i].s, buf, hl, 0, &mlen);
        const char *why = NULL;
        size_t n = lsv_ws_reject(cases[i].s, r, buf, hl, out, sizeof out,
                                 &why);
        lsv_ws_head_t h;
        size_t ohl = lsv_ws_head(out, n, &h);
        unsigned code = n >= ohl + 2 ? (unsigned char)out[ohl] << 8 |
                                       (unsigned char)out[ohl + 1] : 0;
        CHECKF(r == cases[i].want, "%s: gave %zd", cases[i].what, r);
        CHECKF(ohl > 0 && h.opcode == LSV_WS_CLOSE && h.fin &&
               h.masked == cases[i].s->client && code == cases[i].code,
               "%s: close %u", cases[i].what, code);
        CHECKF(why && strlen(why) > 0, "%s: no why", cases[i].what);
    }
    test_done("each protocol error: BAD or TOO_LONG, a close 1002 or 1009");

    /* A 64-bit length with the high bit set, and one over max. */
    char h64[10] = { (char)0x82, 127, (char)0x80, 0, 0, 0, 0, 0, 0, 1 };
    size_t mlen;
    lsv_frame_spec_t cl = ws_spec(1000, 1);
    CHECK(one(&cl, h64, 10, 0, &mlen) == LSV_FRAME_BAD);
    CHECK(one(&cl, h64, 9, 0, &mlen) == LSV_FRAME_PARTIAL);
    h64[2] = 0x7f;
    CHECK(one(&cl, h64, 10, 0, &mlen) == LSV_FRAME_TOO_LONG);
    const char *why;
    CHECK(lsv_ws_reject(&cl, LSV_FRAME_TRUNCATED, h64, 9, out, sizeof out,
                        &why) == 0);
    test_done("64-bit lengths: high bit set is an error, too big too long");
}

/* A message in 1000 fragments with pings between them, delivered 37
 * bytes at a time: the hint moves forward to each new fragment, so the
 * framer parses each header about once (no rescan from the start). */
static void test_resume(void)
{
    lsv_frame_spec_t s = ws_spec(1024 * 1024, 0);
    static char buf[1000 * 120];
    size_t at = 0;
    for (int i = 0; i < 1000; i++) {
        put(buf, &at, i == 0 ? 0x02 : i == 999 ? 0x80 : 0x00, NULL, 100, 1);
        if (i % 10 == 5) put(buf, &at, 0x89, "x", 1, 1);
    }
    size_t hint = 0, off, mlen, last = 0, pongs = 0;
    int monotone = 1;
    ssize_t r = 0;
    for (size_t k = 37; ; k += 37) {
        if (k > at) k = at;
        r = lsv_frame_next(&s, buf, k, 0, &hint, &off, &mlen);
        if (r != LSV_FRAME_PARTIAL) break;
        /* As the conn does: the pings between fragments answered. */
        char out[512];
        size_t n;
        while ((n = lsv_frame_interim(&s, buf, k, &hint, out, sizeof out)))
            pongs += n / 3;
        size_t pos = (uint32_t)hint;
        if (pos < last || pos > k || k - pos > 120 + 2) monotone = 0;
        last = pos;
    }
    CHECK(r == (ssize_t)at && mlen == at);
    CHECK(monotone);
    CHECKF(pongs == 100, "%zu pongs", pongs);
    test_done("a 1000-fragment message read 37 bytes at a time resumes");

    /* The payload cap counts every fragment, across resumes. */
    s.max = 50000;
    hint = 0;
    for (size_t k = 37; ; k += 37) {
        r = lsv_frame_next(&s, buf, k < at ? k : at, 0, &hint, &off, &mlen);
        if (r != LSV_FRAME_PARTIAL || k >= at) break;
    }
    CHECK(r == LSV_FRAME_TOO_LONG);
    /* Pings between fragments count against the wire cap. */
    s.max = 10;
    at = 0;
    put(buf, &at, 0x02, "a", 1, 1);
    for (int i = 0; i < 6000; i++) put(buf, &at, 0x89, NULL, 10, 1);
    CHECK(one(&s, buf, at, 0, &mlen) == LSV_FRAME_TOO_LONG);
    test_done("the caps hold across resumes and for pings between fragments");

    /* Another framing's hint (a line framer's offset, no tag) is not
     * trusted: the scan starts over and finds the real boundary. */
    s.max = 1000;
    at = 0;
    put(buf, &at, 0x01, "ab", 2, 1);
    put(buf, &at, 0x80, "cd", 2, 1);
    for (size_t stale = 1; stale <= at; stale++) {
        hint = stale;
        r = lsv_frame_next(&s, buf, at, 0, &hint, &off, &mlen);
        CHECKF(r == (ssize_t)at, "stale hint %zu gave %zd", stale, r);
    }
    test_done("a hint from another framing restarts the scan");
}

/* Unmasks the payload of the frame at p (n bytes there) into pl;
 * returns its opcode, -1 when p holds no whole frame. */
static int frame_at(const char *p, size_t n, char *pl, size_t *plen,
                    size_t *flen)
{
    lsv_ws_head_t h;
    size_t hl = lsv_ws_head(p, n, &h);
    if (hl == 0 || h.len > n - hl) return -1;
    lsv_ws_unmask(pl, p + hl, (size_t)h.len, h.mask);
    *plen = (size_t)h.len;
    *flen = hl + (size_t)h.len;
    return h.masked == 0 || h.mask[0] | h.mask[1] | h.mask[2] | h.mask[3] ?
           h.opcode : -2;
}

/* lsv_frame_interim on a fragmented message: each ping between its
 * fragments is answered once, as soon as it is whole, with its payload;
 * the answered ping reads as a pong. */
static void test_interim(int client)
{
    lsv_frame_spec_t s = ws_spec(1024, client);
    static char buf[4096];
    char out[512], pl[200], name[100];
    int m = !client;
    size_t at = 0, hint = 0, off, mlen, plen, flen;
    put(buf, &at, 0x01, "hel", 3, m);
    size_t ping_at = at;
    put(buf, &at, 0x89, "ping-1", 6, m);
    put(buf, &at, 0x00, "lo ", 3, m);
    size_t mid = at;
    put(buf, &at, 0x80, "world", 5, m);
    size_t whole = at;
    /* Before the ping is whole: nothing owed. */
    CHECK(lsv_frame_next(&s, buf, ping_at + 3, 0, &hint, &off, &mlen) ==
          LSV_FRAME_PARTIAL);
    CHECK(lsv_frame_interim(&s, buf, ping_at + 3, &hint, out, sizeof out) ==
          0);
    /* The ping whole, more fragments to come: its pong, once. */
    CHECK(lsv_frame_next(&s, buf, mid, 0, &hint, &off, &mlen) ==
          LSV_FRAME_PARTIAL);
    CHECK((uint32_t)hint == ping_at);
    size_t n = lsv_frame_interim(&s, buf, mid, &hint, out, sizeof out);
    CHECK(frame_at(out, n, pl, &plen, &flen) == LSV_WS_PONG && flen == n &&
          plen == 6 && memcmp(pl, "ping-1", 6) == 0);
    CHECK((out[1] & 0x80) == (client ? 0x80 : 0));
    CHECK((uint32_t)hint == mid);
    CHECK((unsigned char)buf[ping_at] == 0x8A);
    CHECK(lsv_frame_interim(&s, buf, mid, &hint, out, sizeof out) == 0);
    CHECK(lsv_frame_next(&s, buf, mid, 0, &hint, &off, &mlen) ==
          LSV_FRAME_PARTIAL);
    CHECK(lsv_frame_interim(&s, buf, mid, &hint, out, sizeof out) == 0);
    /* Resumed: the whole message, its payload intact. */
    CHECK(lsv_frame_next(&s, buf, whole, 0, &hint, &off, &mlen) ==
          (ssize_t)whole && mlen == whole);
    char msg[32];
    size_t got = 0;
    for (size_t p = 0; p < whole; p += flen) {
        int op = frame_at(buf + p, whole - p, pl, &plen, &flen);
        CHECK(op >= 0);
        if (op < LSV_WS_CLOSE) {
            memcpy(msg + got, pl, plen);
            got += plen;
        } else {
            CHECK(op == LSV_WS_PONG);
        }
    }
    CHECK(got == 11 && memcmp(msg, "hello world", 11) == 0);
    snprintf(name, sizeof name, "%s: a ping between fragments answered "
             "once, before the message ends", client ? "client" : "server");
    test_done(name);
}

/* Pings that do not fit the interim cap wait for the next call; a close
 * between fragments ends the frame. */
static void test_interim_more(int client)
{
    lsv_frame_spec_t s = ws_spec(1024, client);
    static char buf[4096];
    char out[512], pl[200], name[100];
    int m = !client;
    size_t at = 0, hint = 0, off, mlen, plen, flen, n;

    /* Five 125-byte pings in one read, a cap for three: three now, two
     * on the next call, in order. */
    at = 0;
    put(buf, &at, 0x02, "a", 1, m);
    for (int i = 0; i < 5; i++) {
        char p[125];
        memset(p, '0' + i, sizeof p);
        put(buf, &at, 0x89, p, 125, m);
    }
    hint = 0;
    CHECK(lsv_frame_next(&s, buf, at, 0, &hint, &off, &mlen) ==
          LSV_FRAME_PARTIAL);
    int seen = 0;
    size_t caps[] = { 3 * (LSV_WS_HEAD_MAX + 125), sizeof out };
    for (int call = 0; call < 2; call++) {
        n = lsv_frame_interim(&s, buf, at, &hint, out, caps[call]);
        for (size_t p = 0; p < n; p += flen) {
            CHECK(frame_at(out + p, n - p, pl, &plen, &flen) == LSV_WS_PONG &&
                  plen == 125 && pl[0] == '0' + seen && pl[124] == pl[0]);
            seen++;
        }
        CHECKF(seen == (call == 0 ? 3 : 5), "call %d: %d pongs", call, seen);
    }
    CHECK(lsv_frame_interim(&s, buf, at, &hint, out, sizeof out) == 0);
    CHECK((uint32_t)hint == at);
    snprintf(name, sizeof name, "%s: pings over the cap answered on the "
             "next call", client ? "client" : "server");
    test_done(name);

    /* A close between fragments: the frame ends with it. */
    at = 0;
    put(buf, &at, 0x01, "hel", 3, m);
    put(buf, &at, 0x89, "p", 1, m);
    put(buf, &at, 0x88, "\x03\xe8", 2, m);
    size_t through = at;
    put(buf, &at, 0x80, "lo", 2, m);
    hint = 0;
    CHECK(lsv_frame_next(&s, buf, through - 1, 0, &hint, &off, &mlen) ==
          LSV_FRAME_PARTIAL);
    CHECK(lsv_frame_interim(&s, buf, through - 1, &hint, out, sizeof out) ==
          LSV_WS_HEAD_MAX - 12 + (client ? 4 : 0) + 1);
    CHECK(lsv_frame_next(&s, buf, through, 0, &hint, &off, &mlen) ==
          (ssize_t)through);
    hint = 0;
    CHECK(lsv_frame_next(&s, buf, at, 0, &hint, &off, &mlen) ==
          (ssize_t)through);
    every_split(&s, buf, through, client ? "client: a close between "
                "fragments ends the frame at every split"
                : "server: a close between fragments ends the frame at "
                "every split");
}

static void test_helpers(void)
{
    CHECK(lsv_ws_utf8_valid("hello", 5));
    CHECK(lsv_ws_utf8_valid("", 0));
    CHECK(lsv_ws_utf8_valid("h\xc3\xa9llo w\xe2\x82\xac rld \xf0\x9f\x98\x80",
                            20));
    CHECK(!lsv_ws_utf8_valid("\xc3", 1));           /* cut off */
    CHECK(!lsv_ws_utf8_valid("\xc0\xaf", 2));       /* overlong */
    CHECK(!lsv_ws_utf8_valid("\xe0\x80\xaf", 3));   /* overlong */
    CHECK(!lsv_ws_utf8_valid("\xed\xa0\x80", 3));   /* surrogate */
    CHECK(!lsv_ws_utf8_valid("\xf4\x90\x80\x80", 4)); /* past U+10FFFF */
    CHECK(!lsv_ws_utf8_valid("\xff", 1));
    CHECK(!lsv_ws_utf8_valid("abcdefgh\x80", 9));
    CHECK(!lsv_ws_utf8_valid("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
                             "\xed\xa0\x80" "edited", 19));
    CHECK(lsv_ws_close_code_valid(1000) && lsv_ws_close_code_valid(4999));
    CHECK(!lsv_ws_close_code_valid(1005) && !lsv_ws_close_code_valid(999) &&
          !lsv_ws_close_code_valid(2000) && !lsv_ws_close_code_valid(5000));
    char a[19] = "abcdefghijklmnopq", b[19];
    lsv_ws_unmask(b, a, 17, MASK);
    int ok = 1;
    for (int i = 0; i < 17; i++)
        if ((unsigned char)b[i] != ((unsigned char)a[i] ^ MASK[i & 3])) ok = 0;
    CHECK(ok);
    test_done("UTF-8 check, close codes, unmasking");
}

int main(void)
{
    test_shapes(0);
    test_shapes(1);
    test_errors();
    test_resume();
    test_interim(0);
    test_interim(1);
    test_interim_more(0);
    test_interim_more(1);
    test_helpers();
    return tap_end();
}

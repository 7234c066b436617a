/* resp_test.c: unit tests of the RESP framer (resp.c) through
 * lsv_frame_next, and of its walkers, printed as TAP. */
#include "lsv.h"
#include "frame.h"
#include "resp.h"
#include "tap.h"
#include "guard.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define S(lit) lit, sizeof(lit) - 1

static lsv_frame_spec_t resp_spec(int client)
{
    lsv_frame_spec_t s;
    lsv_frame_spec_init(&s, LSV_FRAME_RESP);
    s.client = (uint8_t)client;
    return s;
}

/* ---- transcripts ---------------------------------------------------------
 * A stream's frames, decoded, as text: a command as [arg|arg] (args
 * escaped), a reply as its value (str "x", err "x", int 5, null, [a,b]);
 * then "!bad", "!too long" or "!truncated" if the stream ended so. */

typedef struct out {
    char *buf;
    size_t len, cap;
    int violations;
    size_t calls;           /* framer calls, to see resumption at work */
} out_t;

static void put(out_t *o, const char *s, size_t n)
{
    if (o->len + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 4096;
        while (cap < o->len + n + 1) cap *= 2;
        o->buf = realloc(o->buf, cap);
        if (o->buf == NULL) abort();
        o->cap = cap;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    o->buf[o->len] = '\0';
}

static void puts_(out_t *o, const char *s)
{
    put(o, s, strlen(s));
}

static void put_escaped(out_t *o, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        char tmp[8];
        if (c < 0x20 || c >= 0x7f || c == '\\' || c == '|' || c == '[' ||
            c == ']' || c == '"') {
            snprintf(tmp, sizeof tmp, "\\x%02x", c);
            puts_(o, tmp);
        } else {
            put(o, (const char *)&c, 1);
        }
    }
}

/* One reply value at p[*pos]; returns 0 when the walker refuses it. */
static int put_reply(out_t *o, const char *p, size_t n, size_t *pos)
{
    lsv_resp_item_t it;
    char tmp[32];
    if (!lsv_resp_item(p, n, pos, &it))
        return 0;
    switch (it.type) {
    case '+': puts_(o, "str \""); put_escaped(o, it.str, it.len);
              puts_(o, "\""); return 1;
    case '-': puts_(o, "err \""); put_escaped(o, it.str, it.len);
              puts_(o, "\""); return 1;
    case ':': snprintf(tmp, sizeof tmp, "int %lld", it.num);
              puts_(o, tmp); return 1;
    case '$':
        if (it.num < 0) { puts_(o, "null"); return 1; }
        puts_(o, "\""); put_escaped(o, it.str, it.len); puts_(o, "\"");
        return 1;
    default:
        if (it.num < 0) { puts_(o, "null"); return 1; }
        puts_(o, "[");
        for (long long i = 0; i < it.num; i++) {
            if (i) puts_(o, ",");
            if (!put_reply(o, p, n, pos)) return 0;
        }
        puts_(o, "]");
        return 1;
    }
}

/* The frame p[0, n) decoded into o. */
static void put_frame(out_t *o, const lsv_frame_spec_t *s, const char *p,
                      size_t n)
{
    size_t pos = 0;
    if (s->client) {
        if (!put_reply(o, p, n, &pos) || pos != n) o->violations++;
        puts_(o, ";");
        return;
    }
    puts_(o, "[");
    if (lsv_resp_is_inline(p, n)) {
        char *arg = malloc(n);
        size_t k;
        int argc = 0, r;
        while ((r = lsv_resp_inline_arg(p, n, &pos, arg, &k)) == 1) {
            if (argc++) puts_(o, "|");
            put_escaped(o, arg, k);
        }
        if (r < 0) o->violations++;
        free(arg);
    } else {
        lsv_resp_item_t it;
        if (!lsv_resp_item(p, n, &pos, &it) || it.type != '*')
            o->violations++;
        long long argc = it.num;
        for (long long i = 0; i < argc; i++) {
            if (!lsv_resp_item(p, n, &pos, &it) || it.type != '$') {
                o->violations++;
                break;
            }
            if (i) puts_(o, "|");
            put_escaped(o, it.str, it.len);
        }
        if (pos != n) o->violations++;
    }
    puts_(o, "]");
}

/* One framer call on an exact-size heap copy (ASan catches an over-read),
 * checked against the contract: a call with a fresh hint agrees. */
static ssize_t call(const lsv_frame_spec_t *s, const char *data, size_t have,
                    int eof, size_t *hint, size_t *mlen, out_t *o)
{
    char *copy = malloc(have ? have : 1);
    if (copy == NULL) abort();
    memcpy(copy, data, have);
    size_t off, fresh = 0, off0, mlen0;
    ssize_t n = lsv_frame_next(s, copy, have, eof, hint, &off, mlen);
    ssize_t n0 = lsv_frame_next(s, copy, have, eof, &fresh, &off0, &mlen0);
    free(copy);
    o->calls++;
    int ok = n == n0 && off == 0;
    if (n > 0)
        ok &= (size_t)n <= have && *mlen == (size_t)n && *hint == 0;
    else
        ok &= *mlen == 0;
    if (n == LSV_FRAME_PARTIAL)
        ok &= (*hint & 0xffffffffu) <= have && !(eof && have);
    if (n == LSV_FRAME_TRUNCATED)
        ok &= eof;
    ok &= n >= LSV_FRAME_BAD;
    if (!ok) o->violations++;
    return n;
}

/* Frames in[start, avail); returns 1 once the stream ended in an error. */
static int drain(const lsv_frame_spec_t *s, const char *in, size_t *start,
                 size_t avail, int eof, size_t *hint, out_t *o)
{
    for (;;) {
        size_t mlen;
        ssize_t n = call(s, in + *start, avail - *start, eof, hint, &mlen, o);
        if (n == LSV_FRAME_PARTIAL) return 0;
        if (n == LSV_FRAME_TOO_LONG) { puts_(o, "!too long"); return 1; }
        if (n == LSV_FRAME_TRUNCATED) { puts_(o, "!truncated"); return 1; }
        if (n == LSV_FRAME_BAD) { puts_(o, "!bad"); return 1; }
        put_frame(o, s, in + *start, mlen);
        *start += (size_t)n;
        *hint = 0;
    }
}

/* Delivers in[0, n) in reads of step bytes (all at once for step 0), or
 * split once at cut when step is 0 and cut > 0; then eof. */
static void feed(const lsv_frame_spec_t *s, const char *in, size_t n,
                 size_t step, size_t cut, out_t *o)
{
    size_t start = 0, hint = 0, avail = 0;
    o->len = 0;
    o->violations = 0;
    o->calls = 0;
    puts_(o, "");
    while (avail < n) {
        size_t next = step ? avail + step : cut > avail ? cut : n;
        avail = next < n ? next : n;
        if (drain(s, in, &start, avail, 0, &hint, o)) return;
    }
    drain(s, in, &start, n, 1, &hint, o);
}

/* Checks that in[0, n) gives want whole, split at every byte, and in
 * reads of 1, 2, 3 and 7 bytes. */
static void check_stream(const lsv_frame_spec_t *s, const char *in, size_t n,
                         const char *want)
{
    out_t o = { 0 };
    feed(s, in, n, 0, 0, &o);
    CHECKF(strcmp(o.buf, want) == 0 && o.violations == 0,
           "whole: got %s (violations %d), want %s", o.buf, o.violations,
           want);
    for (size_t cut = 1; cut < n; cut++) {
        feed(s, in, n, 0, cut, &o);
        CHECKF(strcmp(o.buf, want) == 0 && o.violations == 0,
               "split at %zu: got %s (violations %d), want %s", cut, o.buf,
               o.violations, want);
    }
    static const size_t steps[] = { 1, 2, 3, 7 };
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        feed(s, in, n, steps[i], 0, &o);
        CHECKF(strcmp(o.buf, want) == 0 && o.violations == 0,
               "reads of %zu: got %s (violations %d), want %s", steps[i],
               o.buf, o.violations, want);
    }
    free(o.buf);
}

/* ---- tests ----------------------------------------------------------------- */

static void test_spec_defaults(void)
{
    lsv_frame_spec_t s = resp_spec(0);
    CHECK(s.max == LSV_RESP_DEFAULT_MAX);
    CHECK(s.max_args == 1024u * 1024);
    CHECK(s.max_bulk == 512u * 1024 * 1024);
    CHECK(s.client == 0);
    test_done("resp spec defaults: 1M args, 512 MiB bulk, 64 MiB frame");
}

static void test_commands_split(void)
{
    lsv_frame_spec_t s = resp_spec(0);
    check_stream(&s, S("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n"),
                 "[SET|k|hello]");
    check_stream(&s, S("*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$0\r\n\r\n"),
                 "[PING][GET|]");
    /* A bulk's payload is skipped by its length: CRLF, '*' inside. */
    check_stream(&s, S("*2\r\n$4\r\nECHO\r\n$6\r\n*1\r\n$\n\r\n"),
                 "[ECHO|*1\\x0d\\x0a$\\x0a]");
    check_stream(&s, S("*0\r\n*-1\r\n*-10\r\n*1\r\n$1\r\nx\r\n"),
                 "[][][][x]");
    check_stream(&s, S("PING\r\nSET k v\nGET k\r\n"), "[PING][SET|k|v][GET|k]");
    check_stream(&s, S("\r\n\n   \r\nPING\r\n"), "[][][][PING]");
    check_stream(&s, S("PING\r\n*1\r\n$4\r\nPING\r\nECHO x\r\n"),
                 "[PING][PING][ECHO|x]");
    test_done("server: commands of every shape give the same frames split "
              "at every byte and in small reads");
}

static void test_replies_split(void)
{
    lsv_frame_spec_t s = resp_spec(1);
    check_stream(&s, S("+OK\r\n-ERR bad thing\r\n:42\r\n:-7\r\n"),
                 "str \"OK\";err \"ERR bad thing\";int 42;int -7;");
    check_stream(&s, S("$5\r\nhello\r\n$0\r\n\r\n$-1\r\n*-1\r\n*0\r\n"),
                 "\"hello\";\"\";null;null;[];");
    check_stream(&s, S("*3\r\n$1\r\na\r\n*2\r\n:1\r\n*1\r\n$-1\r\n+x\r\n"),
                 "[\"a\",[int 1,[null]],str \"x\"];");
    check_stream(&s, S("*2\r\n*0\r\n-WRONGTYPE no\r\n+a\rb\r\n"),
                 "[[],err \"WRONGTYPE no\"];str \"a\\x0db\";");
    check_stream(&s, S(":9223372036854775807\r\n:-9223372036854775808\r\n"),
                 "int 9223372036854775807;int -9223372036854775808;");
    test_done("client: replies of every type, nested, null, give the same "
              "frames split at every byte");
}

static void test_errors_split(void)
{
    lsv_frame_spec_t s = resp_spec(0);
    check_stream(&s, S("*1\r\n$1\r\nx\r\n*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n"),
                 "[x]!bad");
    check_stream(&s, S("*x\r\n"), "!bad");
    check_stream(&s, S("*1\r\n$-1\r\n"), "!bad");
    check_stream(&s, S("*1\r\n$01\r\nx\r\n"), "!bad");
    check_stream(&s, S("*1\r\n$1\r\nxy\r\n"), "!bad");
    check_stream(&s, S("*1\r\n$1\r\nx\n\r\n"), "!bad");
    check_stream(&s, S("*1\n$1\r\nx\r\n"), "!bad");
    check_stream(&s, S("PING\r\nSET \"a\r\n"), "[PING]!bad");
    check_stream(&s, S("SET 'a'b\r\n"), "!bad");
    check_stream(&s, S("*99999999999999999999\r\n"), "!bad");
    check_stream(&s, S("*2\r\n$3\r\nGET\r\n"), "!truncated");
    check_stream(&s, S("PING"), "!truncated");
    lsv_frame_spec_t c = resp_spec(1);
    check_stream(&c, S("+OK\r\n?x\r\n"), "str \"OK\";!bad");
    check_stream(&c, S(":12a\r\n"), "!bad");
    check_stream(&c, S("$-2\r\n"), "!bad");
    check_stream(&c, S("*-2\r\n"), "!bad");
    check_stream(&c, S("*2\r\n:1\r\n"), "!truncated");
    check_stream(&c, S(":99999999999999999999\r\n"), "!bad");
    test_done("protocol errors and truncation are found the same however "
              "the bytes arrive");
}

/* Feeds "*N" with nested arrays to the client framer. */
static ssize_t nested(int depth, size_t *mlen)
{
    static char buf[4096];
    size_t n = 0;
    for (int i = 0; i < depth; i++) n += (size_t)sprintf(buf + n, "*1\r\n");
    n += (size_t)sprintf(buf + n, ":1\r\n");
    lsv_frame_spec_t s = resp_spec(1);
    size_t hint = 0, off;
    return lsv_frame_next(&s, buf, n, 0, &hint, &off, mlen);
}

static void test_limits(void)
{
    lsv_frame_spec_t s = resp_spec(0);
    size_t hint = 0, off, mlen;
    s.max_args = 2;
    CHECK(lsv_frame_next(&s, S("*2\r\n$1\r\na\r\n$1\r\nb\r\n"), 0, &hint, &off,
                         &mlen) == 18);
    CHECK(lsv_frame_next(&s, S("*3\r\n"), 0, &hint, &off, &mlen) ==
          LSV_FRAME_BAD);
    CHECK(lsv_frame_next(&s, S("a b c\r\n"), 0, &hint, &off, &mlen) ==
          LSV_FRAME_BAD);
    s = resp_spec(0);
    s.max_bulk = 5;
    CHECK(lsv_frame_next(&s, S("*1\r\n$5\r\nabcde\r\n"), 0, &hint, &off,
                         &mlen) == 15);
    /* Refused at the header, before the payload comes. */
    CHECK(lsv_frame_next(&s, S("*1\r\n$6\r\n"), 0, &hint, &off, &mlen) ==
          LSV_FRAME_BAD);
    s = resp_spec(0);
    s.max = 20;
    CHECK(lsv_frame_next(&s, S("*1\r\n$5\r\nabcde\r\n"), 0, &hint, &off,
                         &mlen) == 15);
    hint = 0;
    CHECK(lsv_frame_next(&s, S("*1\r\n$11\r\n"), 0, &hint, &off, &mlen) ==
          LSV_FRAME_TOO_LONG);
    hint = 0;
    CHECK(lsv_frame_next(&s, S("PING PING PING PING\r\n"), 0, &hint, &off,
                         &mlen) == LSV_FRAME_TOO_LONG);
    /* The inline line: 64 KiB is fine, one byte more is not. */
    static char line[LSV_RESP_INLINE_MAX + 2];
    memset(line, 'a', sizeof line);
    s = resp_spec(0);
    line[LSV_RESP_INLINE_MAX] = '\n';
    hint = 0;
    CHECK(lsv_frame_next(&s, line, LSV_RESP_INLINE_MAX + 1, 0, &hint, &off,
                         &mlen) == LSV_RESP_INLINE_MAX + 1);
    line[LSV_RESP_INLINE_MAX] = 'a';
    line[LSV_RESP_INLINE_MAX + 1] = '\n';
    hint = 0;
    CHECK(lsv_frame_next(&s, line, LSV_RESP_INLINE_MAX + 2, 0, &hint, &off,
                         &mlen) == LSV_FRAME_BAD);
    hint = 0;
    CHECK(lsv_frame_next(&s, line, LSV_RESP_INLINE_MAX + 1, 0, &hint, &off,
                         &mlen) == LSV_FRAME_BAD);
    hint = 0;
    CHECK(lsv_frame_next(&s, line, LSV_RESP_INLINE_MAX, 0, &hint, &off,
                         &mlen) == LSV_FRAME_PARTIAL);
    CHECK(nested(LSV_RESP_MAX_DEPTH, &mlen) > 0);
    CHECK(nested(LSV_RESP_MAX_DEPTH + 1, &mlen) == LSV_FRAME_BAD);
    test_done("limits: max_args, max_bulk (at the header), max (as soon as "
              "a length announces it), 64 KiB inline, depth 128");
}

static const char *reject(const lsv_frame_spec_t *s, const char *in, size_t n)
{
    static char out[512];
    size_t hint = 0, off, mlen;
    const char *why = NULL;
    ssize_t r = lsv_frame_next(s, in, n, 1, &hint, &off, &mlen);
    size_t k = lsv_frame_reject(s, r, in, n, out, sizeof out, &why);
    out[k] = '\0';
    return why ? out : "(no why)";
}

static void test_reject(void)
{
    lsv_frame_spec_t s = resp_spec(0);
#define REJ(in, want) CHECKF(strcmp(reject(&s, S(in)), want) == 0, \
                             "%s: got %s", #in, reject(&s, S(in)))
    REJ("*x\r\n", "-ERR Protocol error: invalid multibulk length\r\n");
    REJ("*2000000\r\n", "-ERR Protocol error: invalid multibulk length\r\n");
    REJ("*1\r\n$-5\r\n", "-ERR Protocol error: invalid bulk length\r\n");
    REJ("*1\r\n$999999999999\r\n",
        "-ERR Protocol error: invalid bulk length\r\n");
    REJ("*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n",
        "-ERR Protocol error: expected '$', got 'f'\r\n");
    REJ("*1\r\n\r\n", "-ERR Protocol error: expected '$', got ' '\r\n");
    REJ("*1\r\n$1\r\nab\r\n",
        "-ERR Protocol error: expected CRLF after bulk data\r\n");
    REJ("GET \"k\r\n", "-ERR Protocol error: unbalanced quotes in request\r\n");
    REJ("*1\r\n$1\r\n", "");                     /* truncated: no reply */
    s.max = 10;
    REJ("*1\r\n$100\r\n", "-ERR Protocol error: too big command\r\n");
    s = resp_spec(1);
    REJ("?\r\n", "");                            /* a server gets no reply */
#undef REJ
    static char big[LSV_RESP_INLINE_MAX + 10];
    memset(big, 'x', sizeof big);
    s = resp_spec(0);
    CHECK(strcmp(reject(&s, big, sizeof big),
                 "-ERR Protocol error: too big inline request\r\n") == 0);
    const char *why = NULL;
    char out[512];
    size_t k = lsv_frame_reject(&s, LSV_FRAME_BAD, S("*1\r\n$x\r\n"), out,
                                sizeof out, &why);
    CHECK(k > 0 && why && strcmp(why, "invalid bulk length") == 0);
    k = lsv_frame_reject(&s, LSV_FRAME_BAD, S("*1\r\n$x\r\n"), out, 10, &why);
    CHECK(k == 0);                               /* no room: no half reply */
    test_done("reject writes Redis's -ERR Protocol error replies and names "
              "the fault");
}

/* Splits line as an inline command; returns the args joined by '|'. */
static const char *split(const char *line)
{
    static out_t o;
    lsv_frame_spec_t s = resp_spec(0);
    o.len = 0;
    puts_(&o, "");
    size_t n = strlen(line);
    size_t hint = 0, off, mlen;
    ssize_t r = lsv_frame_next(&s, line, n, 0, &hint, &off, &mlen);
    if (r == LSV_FRAME_BAD) return "!bad";
    if (r != (ssize_t)n) return "!not a frame";
    put_frame(&o, &s, line, n);
    return o.buf;
}

static void test_inline_quoting(void)
{
    static const char *const cases[][2] = {
        { "SET k v\r\n", "[SET|k|v]" },
        { "  SET\t k  \t v  \r\n", "[SET|k|v]" },
        { "SET k \"hello world\"\r\n", "[SET|k|hello world]" },
        { "SET k \"a\\n\\r\\t\\b\\a\\\\\\\"z\"\n",
          "[SET|k|a\\x0a\\x0d\\x09\\x08\\x07\\x5c\\x22z]" },
        { "SET k \"\\x41\\x7a\\xZZ\"\n", "[SET|k|AzxZZ]" },
        { "SET k 'it\\'s \"x\"'\n", "[SET|k|it's \\x22x\\x22]" },
        { "SET k 'a\\nb'\n", "[SET|k|a\\x5cnb]" },
        { "SET k \"\"\n", "[SET|k|]" },
        { "SET k ''\n", "[SET|k|]" },
        { "ab\"cd ef\"gh\n", "!bad" },
        { "ab\"cd ef\" gh\n", "[abcd ef|gh]" },
        { "SET k \"v\"x\n", "!bad" },
        { "SET k 'v'x\n", "!bad" },
        { "SET k \"v\n", "!bad" },
        { "SET k 'v\n", "!bad" },
        { "a\vb\n", "[a\\x0bb]" },
        { "\va b\n", "[a|b]" },
        { "\n", "[]" },
        { "\t \r\n", "[]" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *got = split(cases[i][0]);
        CHECKF(strcmp(got, cases[i][1]) == 0, "case %zu: got %s want %s", i,
               got, cases[i][1]);
    }
    /* A NUL ends the line for the splitter, as in Redis's C string. */
    lsv_frame_spec_t s = resp_spec(0);
    size_t hint = 0, off, mlen, pos = 0, k;
    char arg[16];
    CHECK(lsv_frame_next(&s, S("ab\0cd\n"), 0, &hint, &off, &mlen) == 6);
    CHECK(lsv_resp_inline_arg(S("ab\0cd\n"), &pos, arg, &k) == 1 && k == 2);
    CHECK(lsv_resp_inline_arg(S("ab\0cd\n"), &pos, arg, &k) == 0);
    test_done("inline commands split as Redis's sdssplitargs, quoting and "
              "escapes included");
}

/* The resume state after partial input points at the next element, and
 * the framer trusts it: bytes before it are not read again. */
static void test_resume(void)
{
    lsv_frame_spec_t s = resp_spec(0);
    char cmd[] = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
    size_t n = sizeof cmd - 1, hint = 0, off, mlen;
    CHECK(lsv_frame_next(&s, cmd, 25, 0, &hint, &off, &mlen) ==
          LSV_FRAME_PARTIAL);
    CHECK((hint & 0xffffffffu) == 20 && (hint >> 32) == 1);
    /* Spoil the bytes already framed: with the hint, they are not read. */
    char spoiled[sizeof cmd];
    memcpy(spoiled, cmd, sizeof cmd);
    memset(spoiled + 4, '#', 16);
    CHECK(lsv_frame_next(&s, spoiled, n, 0, &hint, &off, &mlen) == (ssize_t)n);
    hint = 0;
    CHECK(lsv_frame_next(&s, spoiled, n, 0, &hint, &off, &mlen) ==
          LSV_FRAME_BAD);
    /* A hint that does not fit the data starts over. */
    hint = ((size_t)7 << 32) | 1000;
    CHECK(lsv_frame_next(&s, cmd, n, 0, &hint, &off, &mlen) == (ssize_t)n);
    /* Inline: the hint is how far the line was searched. */
    hint = 0;
    CHECK(lsv_frame_next(&s, S("GET ke"), 0, &hint, &off, &mlen) ==
          LSV_FRAME_PARTIAL && hint == 6);
    /* Client: resumes at the innermost array's next element (":2" at
     * 19, two levels open); the bytes before it are not read again. */
    lsv_frame_spec_t c = resp_spec(1);
    char rep[] = "*3\r\n$1\r\na\r\n*2\r\n:1\r\n:2\r\n$3\r\nxyz\r\n";
    hint = 0;
    CHECK(lsv_frame_next(&c, rep, 22, 0, &hint, &off, &mlen) ==
          LSV_FRAME_PARTIAL);
    CHECK((hint & 0xffffffffu) == 19 && (hint >> 32 & 3) == 1);
    memset(rep + 1, '#', 18);
    CHECK(lsv_frame_next(&c, rep, sizeof rep - 1, 0, &hint, &off, &mlen) ==
          (ssize_t)sizeof rep - 1);
    /* Outer counts too big to pack with the inner one: the anchor is the
     * outermost array's next element (the inner array's header, at 7). */
    char wide[] = "*1000\r\n*1000000\r\n:1\r\n:2\r\n";
    hint = 0;
    CHECK(lsv_frame_next(&c, wide, sizeof wide - 1, 0, &hint, &off, &mlen) ==
          LSV_FRAME_PARTIAL);
    CHECK((hint & 0xffffffffu) == 7 && (hint >> 32 & 3) == 0);
    /* A count whose elements cannot fit in max is too long at once. */
    lsv_frame_spec_t small = c;
    small.max = 100;
    hint = 0;
    CHECK(lsv_frame_next(&small, S("*1\r\n*40\r\n"), 0, &hint, &off, &mlen) ==
          LSV_FRAME_TOO_LONG);
    test_done("the hint packs the next element and the count left, and "
              "resuming does not read framed bytes again");
}

/* A command of nargs one-byte arguments, "*N\r\n" then "$1\r\nx\r\n"s. */
static char *many_args(size_t nargs, size_t *n)
{
    char *buf = malloc(32 + nargs * 7);
    if (buf == NULL) abort();
    size_t k = (size_t)sprintf(buf, "*%zu\r\n", nargs);
    for (size_t i = 0; i < nargs; i++) {
        memcpy(buf + k, "$1\r\nx\r\n", 7);
        k += 7;
    }
    *n = k;
    return buf;
}

/* Frames in[0, n) arriving in reads of step bytes; returns the frame
 * length and the bytes the framer could have looked at, at most. */
static ssize_t arrive(const lsv_frame_spec_t *s, const char *in, size_t n,
                      size_t step, double *secs)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    size_t hint = 0, off, mlen;
    ssize_t r = LSV_FRAME_PARTIAL;
    for (size_t have = step; r == LSV_FRAME_PARTIAL; have += step)
        r = lsv_frame_next(s, in, have < n ? have : n, 0, &hint, &off, &mlen);
    clock_gettime(CLOCK_MONOTONIC, &b);
    *secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    return r;
}

static void test_big_arrivals(void)
{
    lsv_frame_spec_t s = resp_spec(0);
    size_t n;
    double t1, t2;
    /* 1M arguments arriving 64 KiB at a time: linear, not quadratic. With
     * a rescan from the start on every read this is ~110 reads over 3.5 MB
     * on average: 50x the one-read time; resumed, about the same. */
    char *cmd = many_args(1024 * 1024, &n);
    CHECK(arrive(&s, cmd, n, n, &t1) == (ssize_t)n);
    CHECK(arrive(&s, cmd, n, 64 * 1024, &t2) == (ssize_t)n);
    CHECKF(t2 < t1 * 8 + 0.01, "one read %.4f s, 64 KiB reads %.4f s", t1, t2);
    printf("# 1M args (%zu bytes): one read %.2f ms, 64 KiB reads %.2f ms\n",
           n, t1 * 1e3, t2 * 1e3);
    free(cmd);
    /* A 24 MiB bulk 64 KiB at a time: its payload is never scanned. */
    size_t blen = 24u * 1024 * 1024;
    char *big = malloc(blen + 64);
    if (big == NULL) abort();
    int h = sprintf(big, "*2\r\n$3\r\nSET\r\n$%zu\r\n", blen);
    memset(big + h, '\n', blen);
    memcpy(big + h + blen, "\r\n", 2);
    n = (size_t)h + blen + 2;
    CHECK(arrive(&s, big, n, n, &t1) == (ssize_t)n);
    CHECK(arrive(&s, big, n, 64 * 1024, &t2) == (ssize_t)n);
    CHECKF(t2 < 0.05, "24 MiB bulk in 64 KiB reads took %.4f s", t2);
    printf("# 24 MiB bulk in 384 reads: %.3f ms\n", t2 * 1e3);
    free(big);
    test_done("a 1M-argument command and a 24 MiB bulk arriving 64 KiB at a "
              "time are framed in linear time");
}

/* A reply of prefix, n one-byte bulks and suffix. */
static char *nested_reply(const char *prefix, size_t nb,
                          const char *suffix, size_t *n)
{
    size_t pl = strlen(prefix), sl = strlen(suffix);
    char *buf = malloc(pl + nb * 7 + sl);
    if (buf == NULL) abort();
    memcpy(buf, prefix, pl);
    for (size_t i = 0; i < nb; i++)
        memcpy(buf + pl + i * 7, "$1\r\nx\r\n", 7);
    memcpy(buf + pl + nb * 7, suffix, sl);
    *n = pl + nb * 7 + sl;
    return buf;
}

/* Feeds in[0, n) in reads of step bytes to a client framer, spoiling with
 * '#' every byte before the resume offset after each partial call: the
 * reply is still framed whole only if no call reads before its anchor.
 * Returns the result; *lag is the most bytes a call had to read again
 * (from the anchor to the end of the data it had), *calls the calls. */
static ssize_t arrive_spoiled(const char *in, size_t n, size_t step,
                              size_t *lag, size_t *calls)
{
    lsv_frame_spec_t s = resp_spec(1);
    char *work = malloc(n);
    if (work == NULL) abort();
    size_t hint = 0, off, mlen, have = 0;
    ssize_t r = LSV_FRAME_PARTIAL;
    *lag = 0;
    *calls = 0;
    while (r == LSV_FRAME_PARTIAL && have < n) {
        size_t next = have + step < n ? have + step : n;
        memcpy(work + have, in + have, next - have);
        have = next;
        r = lsv_frame_next(&s, work, have, 0, &hint, &off, &mlen);
        ++*calls;
        if (r != LSV_FRAME_PARTIAL)
            break;
        size_t at = hint & 0xffffffffu;
        if (at == 0 || at > have) { r = LSV_FRAME_BAD; break; }
        if (have - at > *lag)
            *lag = have - at;
        memset(work + 1, '#', at - 1);   /* byte 0 says "an array" */
    }
    free(work);
    return r;
}

/* Nested replies of 100k+ elements arriving 64 KiB at a time resume at
 * the innermost array: no call reads a framed byte again, and each reads
 * again at most the one partial element it stopped in. */
static void test_nested_resume(void)
{
    static const struct { const char *pre, *suf; size_t nb; } shapes[] = {
        { "*1\r\n*1000000\r\n", "", 1000000 },             /* depth 2 */
        { "*1\r\n*1\r\n*200000\r\n", "", 200000 },        /* depth 3 */
        { "*3\r\n+OK\r\n*150000\r\n", ":7\r\n", 150000 }, /* EXEC */
        { "*2\r\n$1\r\n0\r\n*120000\r\n", "", 120000 },  /* SCAN */
        { "*4\r\n:1\r\n*2\r\n*3\r\n:1\r\n:2\r\n*100000\r\n",
          ":5\r\n*1\r\n:1\r\n+end\r\n", 100000 },        /* depth 4 */
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        size_t n, lag, calls;
        char *in = nested_reply(shapes[i].pre, shapes[i].nb, shapes[i].suf,
                                &n);
        ssize_t r = arrive_spoiled(in, n, 64 * 1024, &lag, &calls);
        CHECKF(r == (ssize_t)n && lag <= 7 && calls > 10,
               "shape %zu: r %zd of %zu, lag %zu, %zu calls", i, r, n, lag,
               calls);
        free(in);
    }
    /* XRANGE-like: 100k entries { id, { field, value } }: the entries
     * are small, the anchor stays at the outer array; still one entry. */
    size_t cap = 64 + 100000 * 40, k, lag, calls;
    char *x = malloc(cap);
    if (x == NULL) abort();
    k = (size_t)sprintf(x, "*100000\r\n");
    for (int i = 0; i < 100000; i++)
        k += (size_t)sprintf(x + k, "*2\r\n$3\r\n%03d\r\n*2\r\n$1\r\nf\r\n"
                             "$1\r\nv\r\n", i % 1000);
    ssize_t r = arrive_spoiled(x, k, 64 * 1024, &lag, &calls);
    CHECKF(r == (ssize_t)k && lag < 40, "xrange: r %zd of %zu, lag %zu", r,
           k, lag);
    free(x);
    test_done("nested replies (depth 2 to 4, 100k+ elements) arriving 64 "
              "KiB at a time never read a framed byte again");
}

static void test_many_in_one(void)
{
    lsv_frame_spec_t s = resp_spec(0);
    out_t want = { 0 }, got = { 0 };
    char *buf = malloc(10000 * 64);
    size_t n = 0;
    puts_(&want, "");
    for (int i = 0; i < 10000; i++) {
        char key[32], one[64];
        int kl = sprintf(key, "key:%d", i);
        n += (size_t)sprintf(buf + n, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\nv\r\n",
                             kl, key);
        snprintf(one, sizeof one, "[SET|%s|v]", key);
        puts_(&want, one);
    }
    feed(&s, buf, n, 0, 0, &got);
    CHECK(strcmp(got.buf, want.buf) == 0 && got.violations == 0);
    feed(&s, buf, n, 4096, 0, &got);
    CHECK(strcmp(got.buf, want.buf) == 0 && got.violations == 0);
    free(buf);
    free(want.buf);
    free(got.buf);
    test_done("10,000 pipelined commands in one buffer and in 4 KiB reads");
}

/* Random streams of valid commands (or replies) mixed with junk: the
 * transcript is the same whole and in random reads. */
static void test_random(int client)
{
    lsv_frame_spec_t s = resp_spec(client);
    static const char *const pieces[2][8] = {
        { "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", "PING\r\n", "SET a \"b c\"\n",
          "*0\r\n", "\r\n", "*1\r\n$0\r\n\r\n", "*1\r\n$2\r\nab\r\n", "x" },
        { "+OK\r\n", ":12\r\n", "$3\r\nabc\r\n", "*2\r\n$-1\r\n*1\r\n:0\r\n",
          "-ERR x\r\n", "*-1\r\n", "*1\r\n*0\r\n", "?" },
    };
    out_t whole = { 0 }, parts = { 0 };
    char buf[512];
    int bad = 0;
    for (int iter = 0; iter < 2000; iter++) {
        size_t n = 0;
        int k = (int)(rng() % 8) + 1;
        for (int i = 0; i < k; i++) {
            const char *p = pieces[client][rng() % 8];
            size_t pl = strlen(p);
            if (rng() % 16 == 0 && pl > 1)
                pl = 1 + rng() % (pl - 1);      /* a cut-off piece */
            memcpy(buf + n, p, pl);
            n += pl;
        }
        feed(&s, buf, n, 0, 0, &whole);
        size_t step = 1 + rng() % 9;
        feed(&s, buf, n, step, 0, &parts);
        if (strcmp(whole.buf, parts.buf) != 0 || whole.violations ||
            parts.violations) {
            if (bad++ < 3)
                printf("# stream %.*s: whole %s, step %zu %s\n", (int)n, buf,
                       whole.buf, step, parts.buf);
        }
    }
    CHECKF(bad == 0, "%d streams differ", bad);
    free(whole.buf);
    free(parts.buf);
    test_done(client ? "client: random reply streams frame the same in "
                       "random reads"
                     : "server: random command streams frame the same in "
                       "random reads");
}

/* ---- guard pages ----------------------------------------------------------
 * Every prefix of some inputs placed flush against a PROT_NONE page, after
 * the data and before it: a read outside data[0, len) faults, which the
 * handler reports as a failed test before dying. Frames found are walked
 * by the decoders there too. */

/* Frames all of p[0, n) in place (no copy), with and without eof, and
 * walks every frame found with the decoders. */
static void frame_prefix(const lsv_frame_spec_t *s, const char *p, size_t n)
{
    out_t o = { 0 };
    for (int eof = 0; eof <= 1; eof++) {
        size_t start = 0, hint = 0, off, mlen;
        ssize_t r;
        while ((r = lsv_frame_next(s, p + start, n - start, eof, &hint, &off,
                                   &mlen)) > 0) {
            put_frame(&o, s, p + start, mlen);
            start += (size_t)r;
        }
    }
    free(o.buf);
}

static void test_guard_pages(void)
{
    static const char *const inputs[][2] = {
        { "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n", "s" },
        { "SET k \"a\\x4\" 'b\\'\r\nPING\r\n", "s" },
        { "GET \"\\x41\\", "s" },
        { "*1\r\n$-1\r\n*-12", "s" },
        { "*3\r\n$1\r\na\r\n*2\r\n:1\r\n*1\r\n$-1\r\n+x\r\n", "c" },
        { "-ERR a\rb\r\n:-922337203685477580\r\n$3\r\nab", "c" },
    };
    guard_t g;
    if (!guard_open(&g, "resp framer"))
        return;
    char *lo = g.lo, *hi = g.hi;
    for (size_t c = 0; c < sizeof inputs / sizeof *inputs; c++) {
        lsv_frame_spec_t s = resp_spec(inputs[c][1][0] == 'c');
        const char *in = inputs[c][0];
        size_t n = strlen(in);
        for (size_t k = 0; k <= n; k++) {
            memcpy(hi - k, in, k);
            frame_prefix(&s, hi - k, k);
            memcpy(lo, in, k);
            frame_prefix(&s, lo, k);
        }
    }
    guard_close(&g);
    test_done("guard page: no read outside the input for any prefix, "
              "decoders included");
}

int main(void)
{
    rng_seed(0x5eed2e5b1234567u);
    test_spec_defaults();
    test_commands_split();
    test_replies_split();
    test_errors_split();
    test_limits();
    test_reject();
    test_inline_quoting();
    test_resume();
    test_big_arrivals();
    test_nested_resume();
    test_many_in_one();
    test_random(0);
    test_random(1);
    test_guard_pages();
    return tap_end();
}

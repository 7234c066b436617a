/* buf_test.c: unit tests of the byte buffer (buf.c), printed as TAP. */
#include "lsv.h"
#include "buf.h"
#include "tap.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Fills the tail with n bytes counting up from seed and commits them. */
static void put(lsv_buf_t *b, size_t n, unsigned seed)
{
    char *p = lsv_buf_reserve(b, n);
    for (size_t i = 0; i < n; i++)
        p[i] = (char)(seed + i);
    lsv_buf_commit(b, n);
}

static int holds(const lsv_buf_t *b, size_t n, unsigned seed)
{
    if (b->len != n)
        return 0;
    const char *p = lsv_buf_head(b);
    for (size_t i = 0; i < n; i++)
        if (p[i] != (char)(seed + i))
            return 0;
    return 1;
}

static void test_zeroed(void)
{
    lsv_buf_t b = { 0 };
    CHECK(lsv_buf_avail(&b) == 0);
    char *p = lsv_buf_reserve(&b, 0);
    CHECK(p != NULL && b.data != NULL);
    CHECK(b.start == 0 && b.len == 0);
    lsv_buf_free(&b);
    CHECK(b.data == NULL && b.cap == 0);
    test_done("a zeroed buffer is empty; reserve(0) still gives a pointer");
}

static void test_reserve_commit(void)
{
    lsv_buf_t b = { 0 };
    char *p = lsv_buf_reserve(&b, 10);
    CHECK(p == b.data);
    CHECK(lsv_buf_avail(&b) >= 10 && b.cap >= 10);
    memcpy(p, "hello", 5);
    lsv_buf_commit(&b, 5);
    CHECK(b.len == 5 && b.start == 0);
    CHECK(memcmp(lsv_buf_head(&b), "hello", 5) == 0);
    CHECK(lsv_buf_avail(&b) == b.cap - 5u);
    p = lsv_buf_reserve(&b, 3);
    CHECK(p == b.data + 5);
    memcpy(p, "!!!", 3);
    lsv_buf_commit(&b, 3);
    CHECK(b.len == 8 && memcmp(lsv_buf_head(&b), "hello!!!", 8) == 0);
    lsv_buf_free(&b);
    test_done("reserve gives the tail; commit appends what was written");
}

static void test_consume(void)
{
    lsv_buf_t b = { 0 };
    lsv_buf_append(&b, "hello world", 11);
    lsv_buf_consume(&b, 6);
    CHECK(b.start == 6 && b.len == 5);
    CHECK(memcmp(lsv_buf_head(&b), "world", 5) == 0);
    lsv_buf_consume(&b, 5);
    CHECK(b.start == 0 && b.len == 0);
    CHECK(lsv_buf_reserve(&b, 1) == b.data);
    lsv_buf_free(&b);
    test_done("consume drops from the head; empty rewinds to offset 0");
}

static void test_no_move_when_room(void)
{
    lsv_buf_t b = { 0 };
    put(&b, 100, 1);
    lsv_buf_consume(&b, 40);
    char *data = b.data;
    uint32_t cap = b.cap;
    size_t avail = lsv_buf_avail(&b);
    char *p = lsv_buf_reserve(&b, avail);
    CHECK(b.data == data && b.cap == cap && b.start == 40);
    CHECK(p == b.data + 100);
    CHECK(holds(&b, 60, 41));
    lsv_buf_free(&b);
    test_done("reserve moves nothing while the tail has room");
}

static void test_compaction(void)
{
    lsv_buf_t b = { 0 };
    lsv_buf_reserve(&b, 1);
    uint32_t cap = b.cap;
    char *data = b.data;
    put(&b, cap, 7);
    CHECK(lsv_buf_avail(&b) == 0);
    lsv_buf_consume(&b, cap / 2);
    char *p = lsv_buf_reserve(&b, cap / 2);
    CHECK(b.data == data && b.cap == cap);
    CHECK(b.start == 0 && p == b.data + (cap - cap / 2));
    CHECK(holds(&b, cap - cap / 2, 7 + cap / 2));
    CHECK(lsv_buf_avail(&b) >= cap / 2);
    lsv_buf_free(&b);
    test_done("reserve compacts when that makes room, without realloc");
}

static void test_growth(void)
{
    lsv_buf_t b = { 0 };
    lsv_buf_reserve(&b, 1);
    uint32_t cap = b.cap;
    put(&b, cap, 3);
    lsv_buf_consume(&b, 10);
    lsv_buf_reserve(&b, 11);
    CHECKF(b.cap >= 2 * cap, "cap %u after %u", b.cap, cap);
    CHECK(b.start == 0);
    CHECK(holds(&b, cap - 10, 13));
    CHECK(lsv_buf_avail(&b) >= 11);

    /* A jump past double goes straight to a cap that holds it. */
    uint32_t before = b.cap;
    lsv_buf_reserve(&b, 10 * (size_t)before);
    CHECK(b.cap >= b.len + 10 * (size_t)before);
    CHECK(holds(&b, cap - 10, 13));
    lsv_buf_free(&b);

    lsv_buf_reserve(&b, 100000);
    CHECK(b.cap >= 100000 && b.len == 0);
    lsv_buf_free(&b);
    test_done("reserve grows to at least len + n, keeping the data");
}

static void test_geometric(void)
{
    lsv_buf_t b = { 0 };
    int grows = 0;
    uint32_t cap = 0;
    size_t total = 0;
    for (size_t i = 0; total < (1u << 20); i++) {
        size_t n = 1 + i % 37;
        put(&b, n, (unsigned)total);
        total += n;
        if (b.cap != cap) {
            grows++;
            cap = b.cap;
        }
    }
    CHECK(holds(&b, total, 0));
    CHECKF(grows <= 16, "%d reallocations for 1 MiB", grows);
    CHECK(b.cap < 4 * total);
    lsv_buf_free(&b);
    test_done("appends grow geometrically: few reallocations");
}

static void test_append(void)
{
    lsv_buf_t b = { 0 };
    lsv_buf_append(&b, NULL, 0);
    CHECK(b.data == NULL && b.len == 0);
    lsv_buf_append(&b, "abc", 3);
    lsv_buf_append(&b, "", 0);
    lsv_buf_append(&b, "defg", 4);
    CHECK(b.len == 7 && memcmp(lsv_buf_head(&b), "abcdefg", 7) == 0);
    static char big[5000];
    memset(big, 'z', sizeof big);
    lsv_buf_append(&b, big, sizeof big);
    CHECK(b.len == 7 + sizeof big);
    CHECK(memcmp(lsv_buf_head(&b) + 7, big, sizeof big) == 0);
    lsv_buf_free(&b);
    test_done("append copies to the tail; zero bytes allocate nothing");
}

static void test_free_reuse(void)
{
    lsv_buf_t b = { 0 };
    lsv_buf_free(&b);
    CHECK(b.data == NULL);
    lsv_buf_append(&b, "xyz", 3);
    lsv_buf_consume(&b, 1);
    lsv_buf_free(&b);
    CHECK(b.data == NULL && b.start == 0 && b.len == 0 && b.cap == 0);
    lsv_buf_append(&b, "again", 5);
    CHECK(b.len == 5 && memcmp(lsv_buf_head(&b), "again", 5) == 0);
    lsv_buf_free(&b);
    lsv_buf_free(&b);
    CHECK(b.data == NULL);
    test_done("free empties the buffer, which stays usable; twice is safe");
}

/* Random reserve / commit / consume / append against a flat model. */
static void test_random_ops(void)
{
    enum { MODEL = 1 << 16 };
    static char model[MODEL], tmp[4096];
    size_t mlen = 0;
    lsv_buf_t b = { 0 };
    rng_seed(0x2545f4914f6cdd1du);
    for (int i = 0; i < 200000 && !cur_failed; i++) {
        size_t n;
        switch (rng() % 4) {
        case 0: /* read-style: reserve, write part of it, commit */
            n = rng() % 3000;
            if (mlen + n > MODEL)
                break;
            char *p = lsv_buf_reserve(&b, n);
            CHECK(lsv_buf_avail(&b) >= n);
            size_t w = n ? rng() % (n + 1) : 0;
            for (size_t k = 0; k < w; k++)
                p[k] = model[mlen + k] = (char)rng();
            lsv_buf_commit(&b, w);
            mlen += w;
            break;
        case 1:
            n = rng() % sizeof tmp;
            if (mlen + n > MODEL)
                break;
            for (size_t k = 0; k < n; k++)
                tmp[k] = model[mlen + k] = (char)rng();
            lsv_buf_append(&b, tmp, n);
            mlen += n;
            break;
        default:
            n = mlen ? rng() % (mlen + 1) : 0;
            lsv_buf_consume(&b, n);
            memmove(model, model + n, mlen - n);
            mlen -= n;
            break;
        }
        CHECK(b.len == mlen);
        CHECK((uint64_t)b.start + b.len <= b.cap);
        if (mlen)
            CHECK(memcmp(lsv_buf_head(&b), model, mlen) == 0);
        else
            CHECK(b.start == 0);
    }
    lsv_buf_free(&b);
    test_done("random reserve/commit/consume/append match a flat model");
}

/* Growing past 4 GiB is a caller bug: the process aborts, it does not
 * wrap cap around. Runs in a child so the abort is observed. */
static void test_overflow_aborts(void)
{
    size_t sizes[2] = { (size_t)UINT32_MAX, (size_t)UINT32_MAX - 9 };
    for (int i = 0; i < 2; i++) {
        fflush(stdout);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            if (freopen("/dev/null", "w", stderr) == NULL)
                _exit(1);
            lsv_buf_t b = { 0 };
            lsv_buf_append(&b, "0123456789", 10);
            lsv_buf_reserve(&b, sizes[i]);
            _exit(0);
        }
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECKF(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
               "reserve(%zu) on 10 bytes: status %#x", sizes[i], status);
    }
    test_done("reserve past UINT32_MAX bytes aborts instead of wrapping");
}

/* The server's reserve fails instead: NULL, and the bytes stay as they
 * were, so the caller can fail one connection and carry on. */
static void test_try_reserve_fails(void)
{
    lsv_buf_t b = { 0 };
    lsv_buf_append(&b, "0123456789", 10);
    lsv_buf_consume(&b, 3);
    CHECK(lsv_buf_try_reserve(&b, (size_t)UINT32_MAX) == NULL);
    CHECK(lsv_buf_try_reserve(&b, (size_t)UINT32_MAX - 6) == NULL);
    CHECK(lsv_buf_try_append(&b, "x", (size_t)UINT32_MAX) == LSV_ERR);
    CHECK(b.len == 7 && memcmp(lsv_buf_head(&b), "3456789", 7) == 0);
    CHECK(lsv_buf_try_append(&b, "ab", 2) == LSV_OK);
    CHECK(b.len == 9 && memcmp(lsv_buf_head(&b), "3456789ab", 9) == 0);
    lsv_buf_free(&b);
    test_done("try_reserve past UINT32_MAX returns NULL, bytes intact");
}

int main(void)
{
    test_zeroed();
    test_reserve_commit();
    test_consume();
    test_no_move_when_room();
    test_compaction();
    test_growth();
    test_geometric();
    test_append();
    test_free_reuse();
    test_random_ops();
    test_overflow_aborts();
    test_try_reserve_fails();
    return tap_end();
}

/* shdict_test.c: unit tests of the shared dict (shdict.c), printed as
 * TAP: every operation, TTLs, eviction, lists, random use against the
 * region's invariants, and two forked processes sharing one dict,
 * including one killed while it holds the lock; and the shards of a
 * bigger dict: how many, the most one value may take, a crash that
 * empties one shard only, and reads without the lock racing writers;
 * a read without the lock that meets a wild link, a key read all along
 * while stores churn the LRU, and seq across a recovery. */
#include "lsv.h"
#include "shdict.h"
#include "shdict_int.h"
#include "tap.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define K(s) (s), strlen(s)

static char buf[1 << 20];

static lsv_shdict_val_t str(const char *s)
{
    return (lsv_shdict_val_t){ .type = LSV_SHDICT_STR, .s = s,
                               .len = strlen(s) };
}

static lsv_shdict_val_t num_i(int64_t i)
{
    return (lsv_shdict_val_t){ .type = LSV_SHDICT_INT, .i = i };
}

static lsv_shdict_t *make(size_t size)
{
    char err[LSV_ERRLEN];
    lsv_shdict_t *d = lsv_shdict_new(size, err);
    if (d == NULL) {
        printf("Bail out! %s\n", err);
        exit(1);
    }
    return d;
}

static int healthy(lsv_shdict_t *d)
{
    char err[LSV_ERRLEN];
    if (lsv_shdict_check(d, err) == LSV_OK) return 1;
    printf("#   check: %s\n", err);
    return 0;
}

/* get's status, with the value in *v. */
static int get(lsv_shdict_t *d, const char *key, lsv_shdict_val_t *v)
{
    size_t need;
    return lsv_shdict_get(d, K(key), v, buf, sizeof buf, &need);
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
    nanosleep(&ts, NULL);
}

static void test_store_get(void)
{
    lsv_shdict_t *d = make(64 * 1024);
    lsv_shdict_val_t v = str("hello"), out;
    int forcible;
    v.flags = 7;
    CHECK(lsv_shdict_store(d, LSV_SHDICT_SET, K("a"), &v, 0, &forcible) == 0);
    CHECK(get(d, "a", &out) == 0 && out.type == LSV_SHDICT_STR &&
          out.len == 5 && memcmp(out.s, "hello", 5) == 0 && out.flags == 7);
    CHECK(get(d, "b", &out) == LSV_SHDICT_NOT_FOUND);
    v = str("other");
    CHECK(lsv_shdict_store(d, LSV_SHDICT_ADD, K("a"), &v, 0, &forcible) ==
          LSV_SHDICT_EXISTS);
    CHECK(lsv_shdict_store(d, LSV_SHDICT_REPLACE, K("b"), &v, 0,
                           &forcible) == LSV_SHDICT_NOT_FOUND);
    CHECK(lsv_shdict_store(d, LSV_SHDICT_REPLACE, K("a"), &v, 0,
                           &forcible) == 0);
    CHECK(get(d, "a", &out) == 0 && memcmp(out.s, "other", 5) == 0 &&
          out.flags == 0);
    lsv_shdict_val_t f = { .type = LSV_SHDICT_NUM, .n = 2.5 };
    lsv_shdict_val_t b = { .type = LSV_SHDICT_BOOL, .i = 1 };
    CHECK(lsv_shdict_store(d, LSV_SHDICT_ADD, K("f"), &f, 0, &forcible) == 0);
    CHECK(lsv_shdict_store(d, LSV_SHDICT_SET, K("b"), &b, 0, &forcible) == 0);
    CHECK(get(d, "f", &out) == 0 && out.type == LSV_SHDICT_NUM &&
          out.n == 2.5);
    CHECK(get(d, "b", &out) == 0 && out.type == LSV_SHDICT_BOOL && out.i);
    lsv_shdict_val_t nil = { .type = LSV_SHDICT_NIL };
    CHECK(lsv_shdict_store(d, LSV_SHDICT_SET, K("b"), &nil, 0, &forcible)
          == 0 && get(d, "b", &out) == LSV_SHDICT_NOT_FOUND);
    /* A longer value moves the entry; a key of 64 KiB fits, 1 more not. */
    static char big[LSV_SHDICT_KEY_MAX + 1];
    memset(big, 'k', sizeof big);
    v = str("a longer value than before, so it needs a new block");
    CHECK(lsv_shdict_store(d, LSV_SHDICT_SET, K("a"), &v, 0, &forcible) == 0);
    CHECK(lsv_shdict_store(d, LSV_SHDICT_SET, big, LSV_SHDICT_KEY_MAX, &v, 0,
                           &forcible) == LSV_SHDICT_NO_MEMORY);
    CHECK(lsv_shdict_store(d, LSV_SHDICT_SET, big, sizeof big, &v, 0,
                           &forcible) == LSV_SHDICT_BAD_KEY);
    CHECK(lsv_shdict_store(d, LSV_SHDICT_SET, "", 0, &v, 0, &forcible) ==
          LSV_SHDICT_BAD_KEY);
    CHECK(healthy(d));
    lsv_shdict_free(d);
    d = make(256 * 1024);
    CHECK(lsv_shdict_store(d, LSV_SHDICT_SET, big, LSV_SHDICT_KEY_MAX, &v, 0,
                           &forcible) == 0);
    CHECK(lsv_shdict_get(d, big, LSV_SHDICT_KEY_MAX, &out, buf, sizeof buf,
                         &(size_t){ 0 }) == 0);
    size_t need = 0;
    CHECK(lsv_shdict_get(d, big, LSV_SHDICT_KEY_MAX, &out, buf, 3, &need) ==
          LSV_SHDICT_TOO_BIG && need == v.len);
    CHECK(healthy(d));
    lsv_shdict_free(d);
    test_done("set, add, replace, get, delete; typed values and flags");
}

static void test_incr(void)
{
    lsv_shdict_t *d = make(64 * 1024);
    lsv_shdict_val_t one = num_i(1), ten = num_i(10), out, s = str("x");
    lsv_shdict_val_t half = { .type = LSV_SHDICT_NUM, .n = 0.5 };
    int forcible;
    CHECK(lsv_shdict_incr(d, K("n"), &one, NULL, 0, &out, &forcible) ==
          LSV_SHDICT_NOT_FOUND);
    CHECK(lsv_shdict_incr(d, K("n"), &one, &ten, 0, &out, &forcible) == 0 &&
          out.type == LSV_SHDICT_INT && out.i == 11);
    CHECK(lsv_shdict_incr(d, K("n"), &one, &ten, 0, &out, &forcible) == 0 &&
          out.i == 12);
    CHECK(lsv_shdict_incr(d, K("n"), &half, NULL, 0, &out, &forcible) == 0 &&
          out.type == LSV_SHDICT_NUM && out.n == 12.5);
    lsv_shdict_store(d, LSV_SHDICT_SET, K("s"), &s, 0, &forcible);
    CHECK(lsv_shdict_incr(d, K("s"), &one, &ten, 0, &out, &forcible) ==
          LSV_SHDICT_NOT_NUMBER);
    lsv_shdict_val_t max = num_i(INT64_MAX);
    CHECK(lsv_shdict_incr(d, K("w"), &one, &max, 0, &out, &forcible) == 0 &&
          out.i == INT64_MIN);
    CHECK(healthy(d));
    lsv_shdict_free(d);
    test_done("incr: not found, init, integers, floats, not a number");
}

static void test_ttl(void)
{
    lsv_shdict_t *d = make(64 * 1024);
    lsv_shdict_val_t v = str("v"), out;
    int forcible;
    double ttl = -1;
    lsv_shdict_store(d, LSV_SHDICT_SET, K("t"), &v, 0.05, &forcible);
    lsv_shdict_store(d, LSV_SHDICT_SET, K("forever"), &v, 0, &forcible);
    CHECK(lsv_shdict_ttl(d, K("t"), &ttl) == 0 && ttl > 0 && ttl <= 0.05);
    CHECK(lsv_shdict_ttl(d, K("forever"), &ttl) == 0 && ttl == 0);
    CHECK(get(d, "t", &out) == 0);
    int waited = 0;
    while (get(d, "t", &out) == 0 && waited < 2000) {
        sleep_ms(5);
        waited += 5;
    }
    CHECK(get(d, "t", &out) == LSV_SHDICT_NOT_FOUND);
    CHECK(lsv_shdict_ttl(d, K("t"), &ttl) == LSV_SHDICT_NOT_FOUND);
    CHECK(lsv_shdict_expire(d, K("t"), 1) == LSV_SHDICT_NOT_FOUND);
    CHECK(lsv_shdict_expire(d, K("forever"), 100) == 0 &&
          lsv_shdict_ttl(d, K("forever"), &ttl) == 0 && ttl > 99);
    CHECK(lsv_shdict_expire(d, K("forever"), 0) == 0 &&
          lsv_shdict_ttl(d, K("forever"), &ttl) == 0 && ttl == 0);
    for (int i = 0; i < 10; i++) {
        char k[16];
        snprintf(k, sizeof k, "e%d", i);
        lsv_shdict_store(d, LSV_SHDICT_SET, K(k), &v, 0.01, &forcible);
    }
    size_t count, need;
    waited = 0;
    do {
        sleep_ms(5);
        waited += 5;
        lsv_shdict_keys(d, 0, buf, sizeof buf, &need, &count);
    } while (count > 1 && waited < 2000);
    CHECK(count == 1);
    CHECK(lsv_shdict_flush_expired(d, 3) == 3);
    CHECK(lsv_shdict_flush_expired(d, 0) == 7);
    CHECK(lsv_shdict_flush_expired(d, 0) == 0);
    CHECK(healthy(d));
    lsv_shdict_free(d);
    test_done("TTLs: expiry, ttl, expire, flush_expired");
}

/* Fills a 32 KiB dict with 1000-byte values until set evicts. */
static void test_eviction(void)
{
    lsv_shdict_t *d = make(32 * 1024);
    size_t empty = lsv_shdict_free_space(d);
    static char val[1000];
    memset(val, 'v', sizeof val);
    lsv_shdict_val_t v = { .type = LSV_SHDICT_STR, .s = val,
                           .len = sizeof val }, out;
    int forcible = 0, i;
    char k[16];
    for (i = 0; i < 100 && !forcible; i++) {
        snprintf(k, sizeof k, "k%d", i);
        CHECK(lsv_shdict_store(d, LSV_SHDICT_SET, K(k), &v, 0, &forcible)
              == 0);
    }
    CHECK(forcible);
    CHECK(i > 10 && i < 40);
    CHECK(get(d, "k0", &out) == LSV_SHDICT_NOT_FOUND);
    CHECK(get(d, k, &out) == 0);
    size_t before = lsv_shdict_free_space(d), count, need;
    CHECK(lsv_shdict_store(d, LSV_SHDICT_SAFE_SET, K("safe"), &v, 0,
                           &forcible) == LSV_SHDICT_NO_MEMORY && !forcible);
    CHECK(lsv_shdict_free_space(d) == before);
    lsv_shdict_keys(d, 0, buf, sizeof buf, &need, &count);
    static char huge[40 * 1024];
    lsv_shdict_val_t h = { .type = LSV_SHDICT_STR, .s = huge,
                           .len = sizeof huge };
    size_t count2;
    CHECK(lsv_shdict_store(d, LSV_SHDICT_SET, K("huge"), &h, 0, &forcible)
          == LSV_SHDICT_NO_MEMORY && !forcible);
    lsv_shdict_keys(d, 0, buf, sizeof buf, &need, &count2);
    CHECK(count2 == count);
    CHECK(lsv_shdict_capacity(d) == 32 * 1024);
    CHECK(healthy(d));
    lsv_shdict_flush_all(d);
    lsv_shdict_keys(d, 0, buf, sizeof buf, &need, &count);
    CHECK(count == 0 && healthy(d));
    CHECK(lsv_shdict_free_space(d) == empty && empty > 28 * 1024);
    lsv_shdict_free(d);
    test_done("eviction: LRU when full (forcible), safe_set, no memory");
}

static void test_lists(void)
{
    lsv_shdict_t *d = make(64 * 1024);
    lsv_shdict_val_t a = str("a"), b = str("bb"), n = num_i(3), out;
    size_t len, need;
    int forcible;
    CHECK(lsv_shdict_push(d, K("l"), 1, &a, &len) == 0 && len == 1);
    CHECK(lsv_shdict_push(d, K("l"), 0, &b, &len) == 0 && len == 2);
    CHECK(lsv_shdict_push(d, K("l"), 1, &n, &len) == 0 && len == 3);
    CHECK(lsv_shdict_llen(d, K("l"), &len) == 0 && len == 3);
    CHECK(get(d, "l", &out) == LSV_SHDICT_IS_LIST);
    CHECK(lsv_shdict_pop(d, K("l"), 0, &out, buf, 1, &need) ==
          LSV_SHDICT_TOO_BIG && need == 2);
    CHECK(lsv_shdict_pop(d, K("l"), 0, &out, buf, sizeof buf, &need) == 0 &&
          out.len == 2 && memcmp(out.s, "bb", 2) == 0);
    CHECK(lsv_shdict_pop(d, K("l"), 1, &out, buf, sizeof buf, &need) == 0 &&
          out.type == LSV_SHDICT_INT && out.i == 3);
    CHECK(lsv_shdict_pop(d, K("l"), 1, &out, buf, sizeof buf, &need) == 0 &&
          out.len == 1);
    CHECK(lsv_shdict_pop(d, K("l"), 1, &out, buf, sizeof buf, &need) ==
          LSV_SHDICT_NOT_FOUND);
    CHECK(lsv_shdict_llen(d, K("l"), &len) == 0 && len == 0);
    lsv_shdict_store(d, LSV_SHDICT_SET, K("s"), &a, 0, &forcible);
    CHECK(lsv_shdict_push(d, K("s"), 1, &a, &len) == LSV_SHDICT_NOT_LIST);
    CHECK(lsv_shdict_llen(d, K("s"), &len) == LSV_SHDICT_NOT_LIST);
    for (int i = 0; i < 100000; i++)
        if (lsv_shdict_push(d, K("full"), 0, &a, &len) != 0) break;
    CHECK(len > 100 && len < 100000);
    CHECK(lsv_shdict_push(d, K("full"), 0, &a, &len) == LSV_SHDICT_NO_MEMORY);
    CHECK(lsv_shdict_store(d, LSV_SHDICT_SET, K("full"), &a, 0, &forcible)
          == 0 && get(d, "full", &out) == 0);
    CHECK(healthy(d));
    lsv_shdict_free(d);
    test_done("lists: push, pop, llen, not a list, full");
}

/* Random stores, deletes, pushes and pops of random sizes in a small
 * dict, checking the region's invariants as it churns. */
static void test_random(void)
{
    lsv_shdict_t *d = make(64 * 1024);
    size_t empty = lsv_shdict_free_space(d);
    static char val[3000];
    memset(val, 'r', sizeof val);
    rng_seed(42);
    int ok = 1;
    for (int i = 0; i < 50000 && ok; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", (int)(rng() % 200));
        lsv_shdict_val_t v = { .type = LSV_SHDICT_STR, .s = val,
                               .len = rng() % sizeof val }, out;
        size_t len, need;
        int forcible;
        switch (rng() % 6) {
        case 0: case 1:
            lsv_shdict_store(d, (int)(rng() % 4), K(k), &v,
                             rng() % 8 ? 0 : 0.001, &forcible);
            break;
        case 2: v.type = LSV_SHDICT_NIL;
            lsv_shdict_store(d, LSV_SHDICT_SET, K(k), &v, 0, &forcible);
            break;
        case 3: lsv_shdict_push(d, K(k), (int)(rng() % 2), &v, &len); break;
        case 4: lsv_shdict_pop(d, K(k), (int)(rng() % 2), &out, buf,
                               sizeof buf, &need); break;
        case 5: get(d, k, &out); break;
        }
        if (i % 1000 == 0) ok = healthy(d);
    }
    CHECK(ok && healthy(d));
    lsv_shdict_flush_all(d);
    CHECK(lsv_shdict_free_space(d) == empty);
    lsv_shdict_free(d);
    test_done("random use keeps the region's invariants");
}

/* Two processes each incr the same key 100,000 times. */
static void test_fork_incr(void)
{
    lsv_shdict_t *d = make(1024 * 1024);
    lsv_shdict_val_t one = num_i(1), zero = num_i(0), out;
    int forcible;
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            for (int i = 0; i < 100000; i++)
                if (lsv_shdict_incr(d, K("n"), &one, &zero, 0, &out,
                                    &forcible) != 0)
                    _exit(1);
            _exit(0);
        }
    }
    int status, good = 1;
    for (int k = 0; k < 2; k++)
        if (waitpid(kids[k], &status, 0) != kids[k] || status != 0) good = 0;
    CHECK(good);
    CHECK(get(d, "n", &out) == 0 && out.type == LSV_SHDICT_INT);
    CHECKF(out.i == 200000, "n = %lld", (long long)out.i);
    CHECK(healthy(d));
    lsv_shdict_free(d);
    test_done("two processes, 100,000 incr each: exactly 200,000");
}

/* A child takes the lock and is killed with it held; the parent's next
 * operation gets it, the dict kept (the child changed nothing). Then a
 * child incrs in a loop and is killed wherever it is: the parent goes on
 * with a healthy dict. alarm() fails the test if anything hangs. */
static void test_kill_holder(void)
{
    lsv_shdict_t *d = make(1024 * 1024);
    lsv_shdict_val_t one = num_i(1), out;
    int forcible, fds[2];
    lsv_shdict_incr(d, K("n"), &one, &one, 0, &out, &forcible);
    if (pipe(fds) != 0) exit(1);
    pid_t kid = fork();
    if (kid == 0) {
        lsv_shdict_lock(d);
        if (write(fds[1], "x", 1) != 1) _exit(1);
        for (;;) pause();
    }
    char c;
    CHECK(read(fds[0], &c, 1) == 1);
    kill(kid, SIGKILL);
    waitpid(kid, NULL, 0);
    alarm(10);
    unsigned resets = 9;
    CHECK(lsv_shdict_incr(d, K("n"), &one, NULL, 0, &out, &forcible) == 0 &&
          out.i == 3);
    CHECK(lsv_shdict_recoveries(d, &resets) == 1 && resets == 0);
    for (int round = 0; round < 5; round++) {
        kid = fork();
        if (kid == 0) {
            for (;;) lsv_shdict_incr(d, K("n"), &one, &one, 0, &out,
                                     &forcible);
        }
        sleep_ms(20 + round * 7);
        kill(kid, SIGKILL);
        waitpid(kid, NULL, 0);
        CHECK(lsv_shdict_incr(d, K("n"), &one, &one, 0, &out, &forcible)
              == 0);
        CHECK(healthy(d));
    }
    alarm(0);
    unsigned n = lsv_shdict_recoveries(d, &resets);
    printf("# %u recoveries, %u of them emptied the dict\n", n, resets);
    CHECK(n >= 1);
    close(fds[0]);
    close(fds[1]);
    lsv_shdict_free(d);
    test_done("a process killed holding the lock does not wedge the rest");
}

/* The shard of key (by taking and dropping its lock). */
static shard_t *shard_of_key(lsv_shdict_t *d, const char *key)
{
    unsigned i = lsv_shdict_lock_key(d, K(key));
    lsv_shdict_unlock_key(d, K(key));
    return shard_at(d, i);
}

/* Shards: one per MiB, a power of two, at most 16; keys spread over all
 * of them; a value fits when it fits in one shard, and is "no memory"
 * (changing nothing) when it does not, even below the dict's size. */
static void test_shards(void)
{
    size_t each;
    lsv_shdict_t *d = make(1024 * 1024);
    CHECK(lsv_shdict_shards(d, &each) == 1);
    lsv_shdict_free(d);
    d = make(3 * 1024 * 1024);
    CHECK(lsv_shdict_shards(d, NULL) == 2);
    lsv_shdict_free(d);
    d = make(1024u * 1024 * 1024);
    CHECK(lsv_shdict_shards(d, NULL) == 16);
    lsv_shdict_free(d);
    d = make(4 * 1024 * 1024);
    CHECK(lsv_shdict_shards(d, &each) == 4 && each >= 1024 * 1024 - 64 &&
          each % 64 == 0);
    int seen[4] = { 0 }, forcible;
    char key[32];
    for (int i = 0; i < 64; i++) {
        snprintf(key, sizeof key, "k%d", i);
        seen[lsv_shdict_lock_key(d, K(key))]++;
        lsv_shdict_unlock_key(d, K(key));
        lsv_shdict_val_t v = num_i(i);
        CHECK(lsv_shdict_store(d, LSV_SHDICT_SET, K(key), &v, 0, &forcible)
              == 0);
    }
    CHECK(seen[0] && seen[1] && seen[2] && seen[3]);
    size_t count, need;
    CHECK(lsv_shdict_keys(d, 0, buf, sizeof buf, &need, &count) == 0 &&
          count == 64);
    CHECK(lsv_shdict_keys(d, 10, buf, sizeof buf, &need, &count) == 0 &&
          count == 10);
    static char big[2 * 1024 * 1024];
    memset(big, 'b', sizeof big);
    lsv_shdict_val_t v = { .type = LSV_SHDICT_STR, .s = big,
                           .len = each - 64 * 1024 };
    CHECK(lsv_shdict_store(d, LSV_SHDICT_SET, K("big"), &v, 0, &forcible)
          == 0);
    lsv_shdict_val_t out;
    CHECK(lsv_shdict_get(d, K("big"), &out, buf, sizeof buf, &need) == 0 &&
          out.len == each - 64 * 1024);
    v.len = each + 1;                   /* < the dict, > a shard */
    CHECK(lsv_shdict_store(d, LSV_SHDICT_SET, K("k1"), &v, 0, &forcible)
          == LSV_SHDICT_NO_MEMORY);
    CHECK(lsv_shdict_get(d, K("k1"), &out, buf, sizeof buf, &need) == 0 &&
          out.i == 1);
    CHECK(healthy(d));
    lsv_shdict_flush_all(d);
    CHECK(lsv_shdict_keys(d, 0, buf, sizeof buf, &need, &count) == 0 &&
          count == 0);
    CHECK(lsv_shdict_free_space(d) > 4 * (each - 64 * 1024));
    lsv_shdict_free(d);
    test_done("shards: how many, keys over all of them, a value per shard");
}

/* A child dies holding one shard's lock in the middle of a change: that
 * shard alone is emptied, the others keep every key. */
static void test_shard_recovery(void)
{
    lsv_shdict_t *d = make(4 * 1024 * 1024);
    char key[32];
    int forcible, n = 200;
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof key, "k%d", i);
        lsv_shdict_val_t v = num_i(i);
        lsv_shdict_store(d, LSV_SHDICT_SET, K(key), &v, 0, &forcible);
    }
    shard_t *broken = shard_of_key(d, "k0");
    pid_t kid = fork();
    if (kid == 0) {
        lsv_shdict_lock_key(d, K("k0"));
        broken->dirty = 1;              /* as writing() does */
        broken->seq++;
        kill(getpid(), SIGKILL);
    }
    waitpid(kid, NULL, 0);
    alarm(10);
    lsv_shdict_val_t out;
    size_t need;
    int kept = 0, lost = 0, good = 1;
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof key, "k%d", i);
        int rc = lsv_shdict_get(d, K(key), &out, buf, sizeof buf, &need);
        if (shard_of_key(d, key) == broken) {
            lost += rc == LSV_SHDICT_NOT_FOUND;
            good &= rc == LSV_SHDICT_NOT_FOUND;
        } else {
            kept += rc == 0 && out.i == i;
            good &= rc == 0 && out.i == i;
        }
    }
    alarm(0);
    CHECKF(good && lost > 0 && kept > 0 && kept + lost == n,
           "kept %d, lost %d", kept, lost);
    unsigned resets;
    CHECK(lsv_shdict_recoveries(d, &resets) == 1 && resets == 1);
    CHECK(healthy(d));
    lsv_shdict_free(d);
    test_done("a crash in one shard empties that shard only");
}

/* A child rewrites keys with values of changing length (every byte the
 * same letter, the length fixed by the letter) while the parent reads
 * them: a read without the lock never returns a torn value. */
static void test_read_race(void)
{
    lsv_shdict_t *d = make(2 * 1024 * 1024);
    static char val[4096];
    int forcible;
    char key[16];
    for (int i = 0; i < 200; i++) {      /* over LRU_EXACT a shard */
        snprintf(key, sizeof key, "r%d", i);
        lsv_shdict_val_t v = str("a");
        lsv_shdict_store(d, LSV_SHDICT_SET, K(key), &v, 0, &forcible);
    }
    pid_t kid = fork();
    if (kid == 0) {
        for (unsigned r = 0;; r++) {
            int c = 'a' + r % 26, len = 1 + (c - 'a') * 150;
            memset(val, c, (size_t)len);
            lsv_shdict_val_t v = { .type = LSV_SHDICT_STR, .s = val,
                                   .len = (size_t)len };
            snprintf(key, sizeof key, "r%u", r % 200);
            lsv_shdict_store(d, LSV_SHDICT_SET, K(key), &v, 0, &forcible);
            if (r % 13 == 0) {
                lsv_shdict_val_t nil = { .type = LSV_SHDICT_NIL };
                lsv_shdict_store(d, LSV_SHDICT_SET, K(key), &nil, 0,
                                 &forcible);
            }
        }
    }
    int bad = 0, reads = 0;
    lsv_shdict_val_t out;
    size_t need;
    for (int i = 0; i < 300000; i++) {
        snprintf(key, sizeof key, "r%d", i % 200);
        if (lsv_shdict_get(d, K(key), &out, buf, sizeof buf, &need) != 0)
            continue;
        reads++;
        int c = out.len ? out.s[0] : 0;
        if (out.type != LSV_SHDICT_STR || c < 'a' || c > 'z' ||
            out.len != (size_t)(1 + (c - 'a') * 150))
            bad++;
        else
            for (size_t j = 0; j < out.len; j++) bad += out.s[j] != c;
    }
    kill(kid, SIGKILL);
    waitpid(kid, NULL, 0);
    CHECKF(bad == 0 && reads > 1000, "%d torn of %d", bad, reads);
    CHECK(healthy(d));
    lsv_shdict_free(d);
    test_done("reads without the lock never see a value half written");
}

/* FNV-1a folded to 32 bits, as shdict.c hashes keys. */
static uint32_t fnv(const char *k)
{
    uint64_t h = 1469598103934665603ull;
    for (; *k; k++) {
        h ^= (unsigned char)*k;
        h *= 1099511628211ull;
    }
    return (uint32_t)(h ^ (h >> 32));
}

/* A bucket holds a link a read without the lock may meet mid-reuse (a
 * freed entry's bytes can be a value's): 2^64-80, 16-aligned and above
 * the heap, whose end plus an entry wraps past 2^64. The read must turn
 * to the lock, not follow it to before the region (a guard page there
 * makes that a crash). The read is in a child so a crash is a failure;
 * the region is shared, so the parent clears the link afterwards. */
static void test_read_wild_link(void)
{
    lsv_shdict_t *dict = make(64 * 1024);
    shard_t *d = shard_at(dict, 0);
    uint32_t hash = fnv("k");
    void *guard = mmap((char *)dict - 4096, 4096, PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                       -1, 0);
    if (guard != (char *)dict - 4096) printf("#   no guard page\n");
    pid_t kid = fork();
    if (kid == 0) {
        ((off_t64 *)AT(d, d->buckets))[hash & (d->nbuckets - 1)] =
            (off_t64)0 - 80;
        lsv_shdict_val_t out;
        char small[64];
        size_t need;
        int rc = lsv_shdict_read(d, "k", 1, hash, 1, &out, small,
                                 sizeof small, &need);
        _exit(rc == READ_LOCKED ? 0 : 1);
    }
    int status;
    waitpid(kid, &status, 0);
    CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0,
           "child status %#x", status);
    ((off_t64 *)AT(d, d->buckets))[hash & (d->nbuckets - 1)] = 0;
    CHECK(healthy(dict));
    if (guard != MAP_FAILED) munmap(guard, 4096);
    lsv_shdict_free(dict);
    test_done("a read without the lock does not follow a link that wraps");
}

/* Stores of new keys push entries to the LRU head faster than any hold
 * by time turns over; a key read after every store stays in the front
 * part of the list and is never evicted, while the cold keys are. */
static void test_lru_hot_key(void)
{
    lsv_shdict_t *d = make(64 * 1024);
    static char val[400];
    memset(val, 'x', sizeof val);
    lsv_shdict_val_t v = { .type = LSV_SHDICT_STR, .s = val,
                           .len = sizeof val }, out;
    int forcible, evicted = 0, lost = 0;
    char key[32];
    lsv_shdict_store(d, LSV_SHDICT_SET, K("hot"), &v, 0, &forcible);
    for (int i = 0; i < 5000 && !lost; i++) {
        snprintf(key, sizeof key, "cold%d", i);
        lsv_shdict_store(d, LSV_SHDICT_SET, K(key), &v, 0, &forcible);
        evicted += forcible;
        if (get(d, "hot", &out) != 0) lost = i + 1;
    }
    CHECKF(lost == 0 && evicted > 1000, "hot key lost after %d stores, "
           "%d evictions", lost, evicted);
    CHECK(get(d, "cold0", &out) == LSV_SHDICT_NOT_FOUND);
    CHECK(healthy(d));
    lsv_shdict_free(d);
    test_done("a key read all along survives stores churning the LRU");
}

/* An owner dies with the shard dirty but seq even (as between dirty = 1
 * and seq + 1, or seq + 1 and dirty = 0): the recovery empties the shard
 * with seq odd, so a read that started before it cannot validate, and
 * leaves it even. */
static void test_recovery_seq(void)
{
    lsv_shdict_t *d = make(64 * 1024);
    int forcible;
    lsv_shdict_val_t v = num_i(1), out;
    lsv_shdict_store(d, LSV_SHDICT_SET, K("a"), &v, 0, &forcible);
    shard_t *s = shard_at(d, 0);
    uint64_t before = s->seq;
    pid_t kid = fork();
    if (kid == 0) {
        lsv_shdict_lock_key(d, K("a"));
        s->dirty = 1;
        kill(getpid(), SIGKILL);
    }
    waitpid(kid, NULL, 0);
    lsv_shdict_lock_key(d, K("a"));     /* recovers, changes nothing */
    lsv_shdict_unlock_key(d, K("a"));
    CHECK(get(d, "a", &out) == LSV_SHDICT_NOT_FOUND);
    CHECKF(before % 2 == 0 && s->seq == before + 2 && s->dirty == 0,
           "seq %llu then %llu", (unsigned long long)before,
           (unsigned long long)s->seq);
    CHECK(healthy(d));
    lsv_shdict_free(d);
    test_done("a recovery resets a shard with seq odd, then even");
}

int main(void)
{
    test_store_get();
    test_incr();
    test_ttl();
    test_eviction();
    test_lists();
    test_random();
    test_fork_incr();
    test_kill_holder();
    test_shards();
    test_shard_recovery();
    test_read_race();
    test_read_wild_link();
    test_lru_hot_key();
    test_recovery_seq();
    return tap_end();
}

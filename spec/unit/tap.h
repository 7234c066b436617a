/* tap.h: the TAP harness the C unit tests share, header only.
 *
 * Each test program includes it once (after lsv.h) and prints TAP on
 * stdout, in one of two ways, or both:
 *   - grouped: a test makes any number of CHECK()/CHECKF() checks and ends
 *     with test_done("what it shows"), which prints one "ok N - ..." line;
 *     a failed check prints a "#" diagnostic first (a few per test, not
 *     thousands from a loop);
 *   - one line per check: check(cond, fmt, ...) prints "ok N - ..." or
 *     "not ok N - ..." at once and returns cond, so a caller can skip what
 *     depends on it; skip(why) prints a passing "# SKIP" line.
 * Randomized tests draw from rng(), seeded with rng_seed().
 * main() ends with "return tap_end();", which prints the plan last.
 *
 * The functions are static inline so that a program using only one way
 * builds without unused-function warnings. */
#ifndef LSV_TAP_H
#define LSV_TAP_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

/* Lines printed and lines that failed; the current grouped test's state. */
static int tests_run, tests_failed, cur_failed, cur_diags;

/* Records a grouped check at source line; on failure, marks the current
 * test failed and prints fmt as a diagnostic (the first 8 per test). */
static inline void check_at(int line, int cond, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline void check_at(int line, int cond, const char *fmt, ...)
{
    if (cond)
        return;
    cur_failed = 1;
    if (cur_diags++ >= 8)
        return;
    va_list ap;
    va_start(ap, fmt);
    printf("#   line %d: ", line);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

#define CHECK(cond) check_at(__LINE__, (cond), "%s", #cond)
#define CHECKF(cond, ...) check_at(__LINE__, (cond), __VA_ARGS__)

/* Ends a grouped test: prints its line and flushes, so that output stays
 * in order with a forked child or a signal handler's write(). */
static inline void test_done(const char *desc)
{
    tests_run++;
    if (cur_failed)
        tests_failed++;
    printf("%sok %d - %s\n", cur_failed ? "not " : "", tests_run, desc);
    fflush(stdout);
    cur_failed = 0;
    cur_diags = 0;
}

/* Prints one TAP line for cond; returns cond so callers can skip on. */
static inline int check(int cond, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline int check(int cond, const char *fmt, ...)
{
    va_list ap;

    printf("%s %d - ", cond ? "ok" : "not ok", ++tests_run);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    if (!cond) tests_failed++;
    return cond;
}

static inline void skip(const char *why)
{
    printf("ok %d - # SKIP %s\n", ++tests_run, why);
}

/* xorshift64: repeatable pseudo-random numbers, so that a randomized test
 * which fails fails the same way on every run. Each program seeds it
 * (nonzero) with rng_seed() before its first rng(). */
static uint64_t rng_state = 1;

static inline void rng_seed(uint64_t seed)
{
    rng_state = seed;
}

static inline uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Prints the plan ("1..N") and, when any failed, a count of them; returns
 * the exit status for main: 0 when all passed, else 1. */
static inline int tap_end(void)
{
    printf("1..%d\n", tests_run);
    if (tests_failed) printf("# %d of %d failed\n", tests_failed, tests_run);
    return tests_failed ? 1 : 0;
}

#endif

/* guard.h: guard pages for the C unit tests, header only, after tap.h.
 *
 * After picohttpparser's tests: an input copied flush against a PROT_NONE
 * page faults on a read one byte past its end (or before its start), even
 * without ASan. guard_open() maps [guard][data page][guard] and installs a
 * SIGSEGV/SIGBUS handler that prints "not ok N - guard page: the <what>
 * read outside its input" (N being the grouped test under way) and exits
 * 1, so a fault fails the test instead of only killing the program.
 *
 *     guard_t g;
 *     if (!guard_open(&g, "PROXY parser"))
 *         return;                       (test_done() already called)
 *     memcpy(g.hi - k, in, k);  parse(g.hi - k, k);   after the data
 *     memcpy(g.lo, in, k);      parse(g.lo, k);       before the data
 *     guard_close(&g);
 *     test_done("guard page: ...");
 */
#ifndef LSV_GUARD_H
#define LSV_GUARD_H

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The mapping; lo is the data page's start, hi its end (the first byte of
 * the guard after it). */
typedef struct {
    char *mem, *lo, *hi;
    size_t page;
} guard_t;

/* Written by the handler, so prepared before any fault can happen. */
static char guard_msg[128];

static void guard_segv(int sig)
{
    (void)sig;
    if (write(STDOUT_FILENO, guard_msg, strlen(guard_msg)) < 0)
        _exit(3);
    _exit(1);
}

/* Maps the three pages, protects the outer two and installs the handler,
 * naming what (say, "framer") in its message. Returns 1 when ready; 0 when
 * the pages could not be mapped, after ending the test as failed. A failed
 * mprotect fails the test but goes on (the reads are then unguarded). */
static inline int guard_open(guard_t *g, const char *what)
{
    g->page = (size_t)sysconf(_SC_PAGESIZE);
    g->mem = mmap(NULL, 3 * g->page, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(g->mem != MAP_FAILED);
    if (g->mem == MAP_FAILED) {
        test_done("guard page: no read outside the input");
        return 0;
    }
    CHECK(mprotect(g->mem, g->page, PROT_NONE) == 0);
    CHECK(mprotect(g->mem + 2 * g->page, g->page, PROT_NONE) == 0);
    g->lo = g->mem + g->page;
    g->hi = g->mem + 2 * g->page;

    snprintf(guard_msg, sizeof guard_msg, "not ok %d - guard page: the "
             "%s read outside its input\n", tests_run + 1, what);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = guard_segv;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    return 1;
}

/* Restores the default handlers and unmaps the pages. */
static inline void guard_close(guard_t *g)
{
    signal(SIGSEGV, SIG_DFL);
    signal(SIGBUS, SIG_DFL);
    munmap(g->mem, 3 * g->page);
}

#endif

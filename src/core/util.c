/* util.c: allocation wrappers that abort on out of memory. */
#include "lsv.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static void oom(size_t n)
{
    fprintf(stderr, "luaserv: out of memory allocating %zu bytes\n", n);
    abort();
}

void *lsv_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (unlikely(p == NULL)) oom(n);
    return p;
}

void *lsv_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (unlikely(p == NULL)) oom(n * size);
    return p;
}

void *lsv_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (unlikely(q == NULL)) oom(n);
    return q;
}

char *lsv_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(lsv_malloc(n), s, n);
}

double lsv_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* lsv.h: definitions every luaserv translation unit includes first. */
#ifndef LSV_H
#define LSV_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define LSV_VERSION "0.1.0"

/* Status codes returned by helpers; errno is left intact on LSV_ERR. */
#define LSV_OK 0
#define LSV_ERR -1
#define LSV_AGAIN -2

/* Size of the caller-provided buffer a helper fills with a message. */
#define LSV_ERRLEN 256

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#define container_of(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* Allocation that never returns NULL: out of memory prints a message and
 * aborts, since no caller can do anything useful about it. */
void *lsv_malloc(size_t n);
void *lsv_calloc(size_t n, size_t size);
void *lsv_realloc(void *p, size_t n);
char *lsv_strdup(const char *s);

/* Seconds on a monotonic clock, for measuring durations. */
double lsv_clock(void);

#endif

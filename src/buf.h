/* buf.h: a growable byte buffer with reserve / commit / consume. */
#ifndef LSV_BUF_H
#define LSV_BUF_H

#include "lsv.h"

#include <string.h>

/* Bytes live in data[start, start + len); cap is the allocation size.
 * A zeroed struct is a valid empty buffer with no allocation. */
typedef struct lsv_buf {
    char *data;
    uint32_t start;
    uint32_t len;
    uint32_t cap;
} lsv_buf_t;

/* Makes room for at least n more bytes after the data, compacting first and
 * growing geometrically if that is not enough. Returns the tail pointer; the
 * caller writes up to lsv_buf_avail() bytes there and then commits. Aborts
 * on out of memory (limits are the caller's job). */
char *lsv_buf_reserve(lsv_buf_t *b, size_t n);

static inline size_t lsv_buf_avail(const lsv_buf_t *b)
{
    return b->cap - b->start - b->len;
}

static inline char *lsv_buf_head(const lsv_buf_t *b)
{
    return b->data + b->start;
}

/* Marks n bytes written at the tail as data. */
static inline void lsv_buf_commit(lsv_buf_t *b, size_t n)
{
    b->len += (uint32_t)n;
}

/* Drops n bytes from the head; an emptied buffer rewinds to offset 0. */
static inline void lsv_buf_consume(lsv_buf_t *b, size_t n)
{
    b->len -= (uint32_t)n;
    b->start = b->len ? b->start + (uint32_t)n : 0;
}

/* Copies n bytes to the tail (the slow path grows the buffer). */
void lsv_buf_append_slow(lsv_buf_t *b, const void *p, size_t n);

static inline void lsv_buf_append(lsv_buf_t *b, const void *p, size_t n)
{
    if (likely(lsv_buf_avail(b) >= n && b->data != NULL)) {
        memcpy(b->data + b->start + b->len, p, n);
        b->len += (uint32_t)n;
        return;
    }
    lsv_buf_append_slow(b, p, n);
}

/* Frees the allocation; the buffer is empty and reusable afterwards. */
void lsv_buf_free(lsv_buf_t *b);

#endif

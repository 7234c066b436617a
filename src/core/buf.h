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
 * caller writes up to lsv_buf_avail() bytes there and then commits. Returns
 * NULL, with the buffer and its bytes unchanged, when len + n does not fit
 * in uint32 or the allocation fails: the server fails that connection, not
 * the process (a peer or a script chose n). */
char *lsv_buf_try_reserve(lsv_buf_t *b, size_t n);

/* lsv_buf_try_reserve for the tools (luaserv-cli, luaserv-bench), where
 * running out of memory may end the process: aborts instead of NULL. */
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

/* Copies n bytes to the tail; returns LSV_OK, or LSV_ERR (nothing copied,
 * the buffer unchanged) when it cannot grow. */
static inline int lsv_buf_try_append(lsv_buf_t *b, const void *p, size_t n)
{
    if (likely(lsv_buf_avail(b) >= n && b->data != NULL)) {
        memcpy(b->data + b->start + b->len, p, n);
        b->len += (uint32_t)n;
        return LSV_OK;
    }
    if (n == 0) return LSV_OK;
    char *tail = lsv_buf_try_reserve(b, n);
    if (unlikely(tail == NULL)) return LSV_ERR;
    memcpy(tail, p, n);
    b->len += (uint32_t)n;
    return LSV_OK;
}

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

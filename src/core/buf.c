/* buf.c: the growable byte buffer behind connection input and output. */
#include "lsv.h"
#include "buf.h"

#include <stdio.h>
#include <string.h>

/* The first allocation; small enough for idle buffers, big enough that a
 * short reply does not regrow. */
#define BUF_MIN_CAP 256u

/* Makes room for n more bytes at the tail and returns the tail pointer.
 * Order of preference: the room is already there; moving the data to offset
 * 0 makes enough room (a memmove of the unconsumed bytes, which a framer
 * keeps small, is cheaper than a realloc); otherwise compact and grow to the
 * next doubling of cap that holds len + n, so appends cost amortised O(1).
 * Never returns NULL for a buffer that can hold len + n, even for n == 0 on
 * an unallocated buffer, so callers can always hand the result to read().
 * Returns NULL when len + n does not fit in uint32 or realloc fails; the
 * buffer is then untouched, apart from a compaction that keeps its bytes.
 * Server code (conn.c, udp.c) checks caps first and fails the connection
 * on NULL: a peer's or a script's size must never abort the process. */
char *lsv_buf_try_reserve(lsv_buf_t *b, size_t n)
{
    if (likely(b->data != NULL && lsv_buf_avail(b) >= n))
        return b->data + b->start + b->len;

    if (unlikely(n > (size_t)UINT32_MAX - b->len))
        return NULL;
    size_t need = (size_t)b->len + n;

    if (b->start > 0) {
        memmove(b->data, b->data + b->start, b->len);
        b->start = 0;
        if (b->cap >= need)
            return b->data + b->len;
    }

    uint64_t cap = b->cap ? b->cap : BUF_MIN_CAP;
    while (cap < need)
        cap *= 2;
    if (cap > UINT32_MAX)
        cap = UINT32_MAX;
    char *p = realloc(b->data, (size_t)cap);
    if (unlikely(p == NULL))
        return NULL;
    b->data = p;
    b->cap = (uint32_t)cap;
    return b->data + b->len;
}

/* The tools' reserve: a buffer past 4 GiB or out of memory there is a bug
 * or a lost cause, so it aborts with a message. */
char *lsv_buf_reserve(lsv_buf_t *b, size_t n)
{
    char *tail = lsv_buf_try_reserve(b, n);
    if (unlikely(tail == NULL)) {
        fprintf(stderr, "luaserv: buffer of %u bytes cannot grow by %zu\n",
                (unsigned)b->len, n);
        abort();
    }
    return tail;
}

/* Copies n bytes from p (borrowed) to the tail, growing as reserve does. */
void lsv_buf_append_slow(lsv_buf_t *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    memcpy(lsv_buf_reserve(b, n), p, n);
    lsv_buf_commit(b, n);
}

/* Frees the allocation and zeroes the struct, which is then a valid empty
 * buffer again; safe on a buffer that never allocated. */
void lsv_buf_free(lsv_buf_t *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

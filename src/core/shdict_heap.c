/* shdict_heap.c: the allocator inside a shared dict's shard (boundary
 * tags, merging on free, free lists by power-of-two size class), and the
 * check of the region's invariants that the unit tests run. */
#include "lsv.h"
#include "shdict_int.h"

#include <stdio.h>
#include <string.h>

/* --- the allocator ------------------------------------------------------ */

static int bin_of(uint64_t size)
{
    return 63 - __builtin_clzll(size);
}

static void free_insert(shard_t *d, off_t64 b)
{
    int bin = bin_of(BSIZE(BLK(d, b)));
    fnode_t *f = AT(d, b + HDR);
    f->next = d->bins[bin];
    f->prev = 0;
    if (f->next) ((fnode_t *)AT(d, f->next + HDR))->prev = b;
    d->bins[bin] = b;
    d->binmap |= 1ull << bin;
}

static void free_remove(shard_t *d, off_t64 b)
{
    int bin = bin_of(BSIZE(BLK(d, b)));
    fnode_t *f = AT(d, b + HDR);
    if (f->prev) ((fnode_t *)AT(d, f->prev + HDR))->next = f->next;
    else d->bins[bin] = f->next;
    if (f->next) ((fnode_t *)AT(d, f->next + HDR))->prev = f->prev;
    if (d->bins[bin] == 0) d->binmap &= ~(1ull << bin);
}

/* Sets block b's size (and used bit), and the next block's prev. */
static void set_size(shard_t *d, off_t64 b, uint64_t size, int used)
{
    BLK(d, b)->size = size | (used ? USED : 0);
    BLK(d, b + size)->prev = size;
}

/* A free block of at least need bytes, taken off its list, or 0: first
 * fit among the first few of need's own class, else the first of the
 * smallest bigger class (every block there fits). */
static off_t64 find_free(shard_t *d, uint64_t need)
{
    int bin = bin_of(need), tries = 8;
    for (off_t64 b = d->bins[bin]; b && tries--;
         b = ((fnode_t *)AT(d, b + HDR))->next)
        if (BSIZE(BLK(d, b)) >= need) {
            free_remove(d, b);
            return b;
        }
    uint64_t more = bin == 63 ? 0 : d->binmap & ~((2ull << bin) - 1);
    if (more == 0) return 0;
    off_t64 b = d->bins[__builtin_ctzll(more)];
    free_remove(d, b);
    return b;
}

/* Allocates n payload bytes; returns the payload's offset, or 0. */
off_t64 lsv_shdict_heap_alloc(shard_t *d, uint64_t n)
{
    uint64_t need = (n + HDR + ALIGN - 1) & ~(uint64_t)(ALIGN - 1);
    if (need < MIN_BLOCK) need = MIN_BLOCK;
    if (need > d->max_block) return 0;
    off_t64 b = find_free(d, need);
    if (b == 0) return 0;
    uint64_t size = BSIZE(BLK(d, b));
    if (size - need >= MIN_BLOCK) {
        set_size(d, b + need, size - need, 0);
        free_insert(d, b + need);
        size = need;
    }
    set_size(d, b, size, 1);
    d->free_bytes -= size;
    return b + HDR;
}

/* Frees the payload at p, merging the block with free neighbours. */
void lsv_shdict_heap_free(shard_t *d, off_t64 p)
{
    off_t64 b = p - HDR;
    uint64_t size = BSIZE(BLK(d, b));
    d->free_bytes += size;
    blk_t *next = BLK(d, b + size);
    if (!(next->size & USED)) {
        free_remove(d, b + size);
        size += BSIZE(next);
    }
    uint64_t prev = BLK(d, b)->prev;
    if (prev && !(BLK(d, b - prev)->size & USED)) {
        b -= prev;
        free_remove(d, b);
        size += prev;
    }
    set_size(d, b, size, 0);
    free_insert(d, b);
}

/* The bytes a payload at p may hold. */
uint64_t lsv_shdict_heap_room(shard_t *d, off_t64 p)
{
    return BSIZE(BLK(d, p - HDR)) - HDR;
}

/* Empties the heap and the hash table: a used sentinel block at each
 * end (so merging never looks past them) and one free block between. */
void lsv_shdict_heap_reset(shard_t *d, int clear_buckets)
{
    if (clear_buckets)
        memset(AT(d, d->buckets), 0, d->nbuckets * sizeof(off_t64));
    memset(d->bins, 0, sizeof d->bins);
    d->binmap = 0;
    BLK(d, d->heap)->prev = 0;
    set_size(d, d->heap, MIN_BLOCK, 1);
    off_t64 first = d->heap + MIN_BLOCK, last = d->heap_end - HDR;
    set_size(d, first, last - first, 0);
    BLK(d, last)->size = HDR | USED;
    free_insert(d, first);
    d->free_bytes = last - first;
    d->max_block = last - first;
    d->lru_head = d->lru_tail = 0;
    d->count = 0;
}

/* --- checking ----------------------------------------------------------- */

/* Walks the blocks: sizes, prev links, no two free neighbours, and the
 * free bytes. */
static int check_heap(shard_t *d, char err[LSV_ERRLEN])
{
    uint64_t free_sum = 0, prev = 0, nfree = 0;
    int prev_free = 0;
    off_t64 b = d->heap, last = d->heap_end - HDR;
    while (b < last) {
        blk_t *k = BLK(d, b);
        uint64_t size = BSIZE(k);
        int is_free = !(k->size & USED);
        if (size < MIN_BLOCK || size % ALIGN || b + size > last ||
            k->prev != prev || (is_free && prev_free)) {
            snprintf(err, LSV_ERRLEN, "bad block at %llu (size %llu)",
                     (unsigned long long)b, (unsigned long long)size);
            return LSV_ERR;
        }
        if (is_free) free_sum += size, nfree++;
        prev = size;
        prev_free = is_free;
        b += size;
    }
    for (int i = 0; i < NBINS; i++)
        for (off_t64 f = d->bins[i]; f; f = ((fnode_t *)AT(d, f + HDR))->next)
            nfree--;
    if (b != last || free_sum != d->free_bytes || nfree != 0) {
        snprintf(err, LSV_ERRLEN, "heap ends at %llu, free %llu of %llu",
                 (unsigned long long)b, (unsigned long long)free_sum,
                 (unsigned long long)d->free_bytes);
        return LSV_ERR;
    }
    return LSV_OK;
}

int lsv_shdict_heap_check(shard_t *d, char err[LSV_ERRLEN])
{
    int rc = check_heap(d, err);
    uint64_t in_lru = 0, in_buckets = 0;
    for (off_t64 off = d->lru_head; off; off = ENT(d, off)->lnext) in_lru++;
    for (uint64_t i = 0; i < d->nbuckets; i++)
        for (off_t64 off = ((off_t64 *)AT(d, d->buckets))[i]; off;
             off = ENT(d, off)->hnext)
            in_buckets++;
    if (rc == LSV_OK && (in_lru != d->count || in_buckets != d->count)) {
        snprintf(err, LSV_ERRLEN, "%llu entries, %llu in the LRU, %llu in "
                 "the buckets", (unsigned long long)d->count,
                 (unsigned long long)in_lru, (unsigned long long)in_buckets);
        rc = LSV_ERR;
    }
    return rc;
}

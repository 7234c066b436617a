/* shdict_int.h: the layout of a shared dict's region, for shdict.c and
 * its allocator, shdict_heap.c, and the read without the lock,
 * shdict_read.c (and the unit tests). Nothing else includes it.
 *
 * The region is a small header (struct lsv_shdict, written once before
 * any fork, then only read) and then nshards shards of shard_size bytes
 * each, every one a dict of its own: its mutex, hash table, LRU list and
 * heap (struct shard at its start). A key lives in the shard its hash's
 * top bits name, so operations on keys of different shards never touch
 * the same lock or the same cache lines. */
#ifndef LSV_SHDICT_INT_H
#define LSV_SHDICT_INT_H

#include "lsv.h"

#include <pthread.h>
#include <time.h>
#include <stdint.h>

typedef struct lsv_shdict lsv_shdict_t;
typedef struct shard shard_t;

/* Everything in a shard is named by its offset from the shard's start,
 * never by a pointer, so the layout does not depend on where the
 * region is mapped; 0 is "none" (the header lives there). */
typedef uint64_t off_t64;

#define MAGIC 0x6c7376736864637aull
#define ALIGN 16u
#define MIN_BLOCK 32u
#define USED 1ull
#define NBINS 64
#define LRU_EXACT 32        /* a shard of this many entries or fewer ... */
#define LRU_HOLD 4          /* ... else one in its first 1/LRU_HOLD stays, */
#define LRU_HOLD_MS 100     /* or one moved this recently, while fewer */
#define LRU_HOLD_EVICT 8    /* than count/8 entries were evicted since */
#define KEY_OK(klen) ((klen) > 0 && (klen) <= LSV_SHDICT_KEY_MAX)
#define LOCK_PAUSES 128     /* lock: pauses spent trying before sleeping, */
#define LOCK_CHUNK 32       /* ... at most this many between two tries */
#define REAP_PER_STORE 2    /* expired LRU-tail entries reaped per store */
#define SHARD_MIN (1024u * 1024)  /* a dict gets a shard per this many bytes */
#define SHARDS_MAX 16             /* ... up to this many (a power of two) */
#define LINE 64u                  /* shards start on a cache line */

/* A block: header, then payload. size counts the header and is a
 * multiple of ALIGN; its low bit says used. prev is the size of the block
 * just before it in memory, so a freed block can merge with both. */
typedef struct blk {
    uint64_t size;
    uint64_t prev;
} blk_t;

/* A free block's payload: its links in its size class's list. */
typedef struct fnode {
    off_t64 next, prev;
} fnode_t;

/* An entry's payload: the key, then a string's bytes. */
typedef struct entry {
    off_t64 hnext;           /* next in its hash bucket */
    off_t64 lprev, lnext;    /* LRU list, most recent at the head */
    uint64_t expires;        /* CLOCK_MONOTONIC ms; 0 = never */
    uint32_t moved;          /* its shard's pushes when it last moved */
    uint32_t moved_ev;       /* and its evictions then */
    uint64_t moved_ms;       /* and when (CLOCK_MONOTONIC ms) */
    uint32_t hash, klen;
    uint32_t flags;
    uint32_t type;           /* LSV_SHDICT_*, or T_LIST */
    uint64_t vlen;           /* STR: bytes; T_LIST: items */
    union {
        int64_t i;
        double n;
        struct { off_t64 head, tail; } list;
    } u;
    char data[];
} entry_t;

/* An item of a list value. */
typedef struct lnode {
    off_t64 next, prev;
    uint64_t vlen;
    uint32_t type, pad;
    union { int64_t i; double n; } u;
    char data[];
} lnode_t;

#define T_LIST 9

/* The region's header: set before any fork, read-only afterwards. */
struct lsv_shdict {
    uint64_t magic;
    uint64_t size;               /* the whole region */
    uint64_t shard_size;         /* each shard's bytes, a multiple of LINE */
    uint32_t nshards;            /* a power of two, 1 to SHARDS_MAX */
    uint32_t shift;              /* log2(nshards) */
    uint64_t first;              /* the first shard's offset */
};

/* A shard's header, at its start, in cache lines by how they are used:
 * the first is written by every operation (the mutex, and what a read
 * checks to decide whether to move an entry in the LRU), the second is
 * only read after the shard is made, the rest are written when entries
 * come, go or move. */
struct shard {
    pthread_mutex_t lock;
    uint32_t dirty;              /* an operation is changing the links */
    uint64_t seq;                /* odd while they change (shdict_read.c) */
    uint64_t count;

    uint64_t magic __attribute__((aligned(64)));
    uint64_t size;               /* the whole shard */
    uint64_t nbuckets;           /* a power of two */
    off_t64 buckets;             /* off_t64[nbuckets] */
    off_t64 heap, heap_end;      /* [heap, heap_end): the blocks */
    uint64_t max_block;          /* the biggest block the heap can hold */

    off_t64 lru_head __attribute__((aligned(64)));
    off_t64 lru_tail;
    uint64_t pushes;             /* entries put at the LRU head, ever */
    uint64_t evictions;          /* entries taken from the tail for room */
    uint32_t recoveries, resets;
    uint64_t free_bytes;
    uint64_t binmap;             /* bit b: bins[b] is not empty */
    off_t64 bins[NBINS];         /* free blocks of [2^b, 2^(b+1)) bytes */
};

#define AT(d, off) ((void *)((char *)(d) + (off)))
#define BLK(d, off) ((blk_t *)AT(d, off))
#define ENT(d, off) ((entry_t *)AT(d, off))
#define NODE(d, off) ((lnode_t *)AT(d, off))
#define BSIZE(b) ((b)->size & ~USED)
#define HDR ((uint64_t)sizeof(blk_t))

/* The allocator (shdict_heap.c), within one shard; the caller holds the
 * shard's lock and has called writing(). */

/* Allocates n payload bytes; returns the payload's offset, or 0. */
off_t64 lsv_shdict_heap_alloc(shard_t *d, uint64_t n);
/* Frees the payload at p, merging the block with free neighbours. */
void lsv_shdict_heap_free(shard_t *d, off_t64 p);
/* The bytes the payload at p may hold. */
uint64_t lsv_shdict_heap_room(shard_t *d, off_t64 p);
/* Empties the heap, the LRU and (when clear_buckets) the hash table. */
void lsv_shdict_heap_reset(shard_t *d, int clear_buckets);
/* Walks the heap, the LRU and the buckets, with the lock held by the
 * caller (lsv_shdict_check). Returns LSV_OK, or LSV_ERR with what is
 * wrong in err. */
int lsv_shdict_heap_check(shard_t *d, char err[LSV_ERRLEN]);

/* Shard i of the dict. */
static inline shard_t *shard_at(const lsv_shdict_t *dict, uint32_t i)
{
    return (shard_t *)((char *)dict + dict->first + i * dict->shard_size);
}

/* The shard that holds keys of this hash: the top bits of the hash
 * times a large odd constant (Fibonacci hashing: FNV's own top bits
 * differ too little between short keys that differ at their end), while
 * the hash table in a shard uses the hash's low bits. */
static inline shard_t *shard_of(const lsv_shdict_t *dict, uint32_t hash)
{
    uint32_t mixed = hash * 0x9e3779b1u;
    return shard_at(dict, (uint32_t)((uint64_t)mixed >> (32 - dict->shift)));
}

/* CLOCK_MONOTONIC in milliseconds: TTLs and the LRU hold count in it. */
static inline uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Whether using the entry e at off leaves it where it is in the LRU
 * rather than moving it to the head: it is there already; or its shard
 * holds more than LRU_EXACT entries and either fewer than count /
 * LRU_HOLD entries were put at the head since it was (it is still in the
 * front part), or it moved within LRU_HOLD_MS and fewer than count /
 * LRU_HOLD_EVICT entries were evicted since (it cannot be near the tail
 * the evictions take). A move writes the entry, both its neighbours and
 * the head: cache lines every other process must then fetch back, so
 * moving a key on each read costs more than the read. Keys read in turn
 * (each move pushes the others back, so each is always at the back)
 * move about once per LRU_HOLD_MS; a key read all the time while stores
 * evict moves every count / 8 evictions, long before it could reach the
 * tail (a hold by time alone, as memcached's once a minute, lets it
 * drift there). */
static inline int lru_stays(const shard_t *d, const entry_t *e, off_t64 off,
                            uint64_t now)
{
    return d->lru_head == off ||
           (d->count > LRU_EXACT &&
            ((uint32_t)d->pushes - e->moved < d->count / LRU_HOLD ||
             (now - e->moved_ms < LRU_HOLD_MS &&
              (uint32_t)d->evictions - e->moved_ev <
                  d->count / LRU_HOLD_EVICT)));
}

/* get without the lock (shdict_read.c): a status as lsv_shdict_get's,
 * or READ_LOCKED when the caller must take the lock and do it there (a
 * writer is at work or came in between, the entry expired, or it must
 * move in the LRU). */
#define READ_LOCKED 1
#define READ_STEPS 4096     /* a bucket chain longer than this: lock */
struct lsv_shdict_val;    /* lsv_shdict_val_t, in shdict.h */
int lsv_shdict_read(shard_t *d, const char *key, size_t klen, uint32_t hash,
                    uint64_t now, struct lsv_shdict_val *out, char *buf,
                    size_t size, size_t *need);

#endif

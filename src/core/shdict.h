/* shdict.h: a dictionary in shared memory. Pure C: no Lua, no libev.
 *
 * A dict is one fixed-size region of memory (mmap MAP_SHARED |
 * MAP_ANONYMOUS) made before any fork, so the processes forked afterwards
 * all see the same one. The region is split into shards, one per MiB
 * (rounded down to a power of two, at most 16; a dict under 2 MiB is one
 * shard), so that processes working on different keys do not wait for
 * one another. A key's shard is fixed by its hash. Each shard holds: a
 * hash table of entries, an allocator (boundary tags, coalescing, free
 * lists by size class), a list of its entries in least-recently-used
 * order, and one mutex (PTHREAD_PROCESS_SHARED and robust). An operation
 * on a key takes its shard's mutex once, so each is atomic across the
 * processes (get, in the common case, reads without it and checks that
 * no writer came in between: a seqlock, shdict_read.c); eviction, when a
 * store needs room, takes the least recently used entries of that shard
 * (an entry used while in the front quarter of the LRU keeps its place:
 * shdict_int.h, lru_stays). An operation on the whole dict (keys,
 * flush_all, flush_expired, free_space) takes the shards one at a time:
 * it is atomic per shard, not across them. A value must fit in one
 * shard: key, value and about 100 bytes of overhead at most
 * capacity / shards (lsv_shdict_shards).
 *
 * Contract, for every operation below:
 *   - keys are byte strings of 1 to LSV_SHDICT_KEY_MAX bytes (otherwise
 *     LSV_SHDICT_BAD_KEY, nothing locked);
 *   - it returns LSV_SHDICT_OK (0) or one of the negative statuses below;
 *     lsv_shdict_strerror() names each as the Lua layer reports it;
 *   - it never allocates outside the region, never calls back into the
 *     caller while holding the mutex, and never aborts on anything a
 *     caller or a peer sized: a value that does not fit is
 *     LSV_SHDICT_NO_MEMORY;
 *   - an entry whose TTL has passed is absent: it is removed lazily when
 *     an operation meets it, from the LRU tail when room is needed, or by
 *     lsv_shdict_flush_expired();
 *   - a value read out (get, pop, keys) is copied into the caller's
 *     buf[0, size). When it does not fit, nothing changes, the result is
 *     LSV_SHDICT_TOO_BIG and *need says how many bytes would; the caller
 *     grows its buffer and calls again.
 * TTLs are seconds on CLOCK_MONOTONIC, which every process of one boot
 * shares; 0 means none.
 *
 * A process killed while it holds the mutex does not wedge the others:
 * the next locker gets EOWNERDEAD, and when the dead process was in the
 * middle of changing the shard (a flag in the shard says so) that shard
 * alone is emptied, since its links can no longer be trusted; otherwise
 * it is kept as it was. Either way the mutex is made consistent and the
 * operation goes on. lsv_shdict_recoveries() counts these. */
#ifndef LSV_SHDICT_H
#define LSV_SHDICT_H

#include "lsv.h"
#include <stddef.h>
#include <stdint.h>

/* Statuses. */
#define LSV_SHDICT_OK 0
#define LSV_SHDICT_NOT_FOUND -1   /* no such key (or it expired) */
#define LSV_SHDICT_EXISTS -2      /* add: the key is there */
#define LSV_SHDICT_NO_MEMORY -3   /* the value does not fit */
#define LSV_SHDICT_NOT_NUMBER -4  /* incr: the value is not a number */
#define LSV_SHDICT_NOT_LIST -5    /* push, pop, llen: the value is no list */
#define LSV_SHDICT_IS_LIST -6     /* get: the value is a list */
#define LSV_SHDICT_TOO_BIG -7     /* the caller's buffer is too small */
#define LSV_SHDICT_BAD_KEY -8     /* empty, or over LSV_SHDICT_KEY_MAX */

#define LSV_SHDICT_KEY_MAX 65536u
/* The smallest region lsv_shdict_new accepts. */
#define LSV_SHDICT_MIN_SIZE (16u * 1024)

/* Value types. */
#define LSV_SHDICT_NIL 0     /* no value: set deletes */
#define LSV_SHDICT_STR 1
#define LSV_SHDICT_INT 2     /* a Lua integer */
#define LSV_SHDICT_NUM 3     /* a Lua float */
#define LSV_SHDICT_BOOL 4

/* How lsv_shdict_store stores. */
#define LSV_SHDICT_SET 0       /* store; evict LRU entries when full */
#define LSV_SHDICT_ADD 1       /* only when absent (else EXISTS) */
#define LSV_SHDICT_REPLACE 2   /* only when present (else NOT_FOUND) */
#define LSV_SHDICT_SAFE_SET 3  /* as SET, but never evict a live entry */

typedef struct lsv_shdict lsv_shdict_t;

/* A value in or out. Going in, s is borrowed for the call; coming out, s
 * points into the caller's buffer. */
typedef struct lsv_shdict_val {
    int type;             /* LSV_SHDICT_NIL, _STR, _INT, _NUM, _BOOL */
    uint32_t flags;       /* the user's flags (store, get) */
    int64_t i;            /* _INT; _BOOL: 0 or 1 */
    double n;             /* _NUM */
    const char *s;        /* _STR */
    size_t len;           /* _STR */
} lsv_shdict_val_t;

/* Maps a region of size bytes (at least LSV_SHDICT_MIN_SIZE) and makes
 * an empty dict in it. Returns the dict, or NULL with err filled (mmap or
 * the mutex failed). Call before forking. */
lsv_shdict_t *lsv_shdict_new(size_t size, char err[LSV_ERRLEN]);
/* Unmaps the region (this process's mapping only). */
void lsv_shdict_free(lsv_shdict_t *d);

/* Stores v under key as op says (LSV_SHDICT_SET, ...), with ttl seconds
 * (0 = none) and v->flags. A v of type NIL deletes (SET, SAFE_SET,
 * REPLACE) or does nothing (ADD). *forcible is set to 1 when live entries
 * were evicted to make room, else 0. A value that could never fit, or
 * that does not fit without evicting under SAFE_SET, is NO_MEMORY; the
 * key's old value is gone then unless it was of the same size or
 * bigger (it is rewritten in place). */
int lsv_shdict_store(lsv_shdict_t *d, int op, const char *key, size_t klen,
                     const lsv_shdict_val_t *v, double ttl, int *forcible);

/* The value of key into *out (a string's bytes into buf); makes it the
 * most recently used. NOT_FOUND, IS_LIST, TOO_BIG. */
int lsv_shdict_get(lsv_shdict_t *d, const char *key, size_t klen,
                   lsv_shdict_val_t *out, char *buf, size_t size,
                   size_t *need);

/* Adds by (INT or NUM) to the number under key, into *out: integers
 * stay integers (wrapping as Lua's do), anything else is a float. An
 * absent key is NOT_FOUND, unless init (INT or NUM) is given: then the
 * key is created as init + by, with init_ttl, evicting as SET does
 * (*forcible). NOT_NUMBER when the value is not a number. */
int lsv_shdict_incr(lsv_shdict_t *d, const char *key, size_t klen,
                    const lsv_shdict_val_t *by, const lsv_shdict_val_t *init,
                    double init_ttl, lsv_shdict_val_t *out, int *forcible);

/* The seconds key has left in *ttl (0 = no TTL). NOT_FOUND. */
int lsv_shdict_ttl(lsv_shdict_t *d, const char *key, size_t klen,
                   double *ttl);
/* Gives key a TTL of ttl seconds from now (0 = none). NOT_FOUND. */
int lsv_shdict_expire(lsv_shdict_t *d, const char *key, size_t klen,
                      double ttl);

/* Live keys, shard by shard, each shard's most recently used first,
 * at most max (0 = all), into buf
 * as a 4-byte length (host order) then the bytes, each; *count says how
 * many. TOO_BIG. */
int lsv_shdict_keys(lsv_shdict_t *d, size_t max, char *buf, size_t size,
                    size_t *need, size_t *count);

/* Removes every entry. */
void lsv_shdict_flush_all(lsv_shdict_t *d);
/* Removes expired entries, at most max (0 = all); returns how many. */
size_t lsv_shdict_flush_expired(lsv_shdict_t *d, size_t max);

/* The region's size in bytes; the bytes now free in it (not all of
 * which one value can use, nor the per-entry overhead). */
size_t lsv_shdict_capacity(const lsv_shdict_t *d);
size_t lsv_shdict_free_space(lsv_shdict_t *d);

/* Pushes v (STR, INT, NUM or BOOL) at the head (left) or the tail of the
 * list under key, making the list when the key is absent; *len is its
 * new length. Evicts only expired entries: NO_MEMORY when full.
 * NOT_LIST. */
int lsv_shdict_push(lsv_shdict_t *d, const char *key, size_t klen, int left,
                    const lsv_shdict_val_t *v, size_t *len);
/* Pops the head (left) or the tail of the list under key into *out; a
 * list left empty is removed. NOT_FOUND (no key), NOT_LIST, TOO_BIG. */
int lsv_shdict_pop(lsv_shdict_t *d, const char *key, size_t klen, int left,
                   lsv_shdict_val_t *out, char *buf, size_t size,
                   size_t *need);
/* The length of the list under key in *len (0 for an absent key).
 * NOT_LIST. */
int lsv_shdict_llen(lsv_shdict_t *d, const char *key, size_t klen,
                    size_t *len);

/* The status's short name: "not found", "exists", "no memory", "not a
 * number", "value not a list", "value is a list", "buffer too small",
 * "bad key". */
const char *lsv_shdict_strerror(int status);

/* Every shard's mutex, in shard order, for tests (a process that dies
 * holding them) and for a caller that must hold the whole dict across a
 * batch of its own. Not re-entrant: an operation called while holding
 * them deadlocks. */
void lsv_shdict_lock(lsv_shdict_t *d);
void lsv_shdict_unlock(lsv_shdict_t *d);
/* Only the mutex of key's shard; returns the shard's index. For tests. */
unsigned lsv_shdict_lock_key(lsv_shdict_t *d, const char *key, size_t klen);
void lsv_shdict_unlock_key(lsv_shdict_t *d, const char *key, size_t klen);

/* How many shards the dict has; *shard_size (if not NULL) gets each
 * one's bytes, the most one entry can take. */
unsigned lsv_shdict_shards(const lsv_shdict_t *d, size_t *shard_size);

/* How many times a locker found a shard's mutex's owner dead, and how
 * many of those emptied that shard, summed over the shards. */
unsigned lsv_shdict_recoveries(lsv_shdict_t *d, unsigned *resets);

/* Walks the whole region and checks its invariants (block sizes and
 * links, free bytes, the LRU list against the hash table). Returns
 * LSV_OK, or LSV_ERR with err saying what is wrong. For tests. */
int lsv_shdict_check(lsv_shdict_t *d, char err[LSV_ERRLEN]);

#endif

/* shdict.c: a dictionary in one shared memory region (contract in
 * shdict.h): its shards, and in each the hash table, the LRU list, TTLs,
 * lists, and the robust process-shared mutex around each operation. The
 * allocator is in shdict_heap.c, get's read without the lock in
 * shdict_read.c. */
#include "lsv.h"
#include "shdict.h"
#include "shdict_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

/* The expiry time for ttl seconds from now; 0 for none. A TTL too small
 * to count in milliseconds is one, not "never". */
static uint64_t expiry(uint64_t now, double ttl)
{
    if (!(ttl > 0)) return 0;
    if (ttl > 1e12) ttl = 1e12;
    uint64_t ms = (uint64_t)(ttl * 1000.0);
    return now + (ms ? ms : 1);
}

static int expired(const entry_t *e, uint64_t now)
{
    return e->expires != 0 && e->expires <= now;
}

/* FNV-1a over the key, 64 bits folded to 32. */
static uint32_t hash_key(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 1099511628211ull;
    }
    return (uint32_t)(h ^ (h >> 32));
}

/* --- the lock ----------------------------------------------------------- */

/* Waits a little, politely to a sibling hyperthread. */
static void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Takes a shard's mutex; a dead owner's shard is kept or emptied (the
 * contract in shdict.h), with seq odd whatever the owner left it at, so
 * no reader trusts a read across the reset. A holder keeps the mutex for
 * a fraction of a microsecond, so a locker that finds it taken tries
 * again for a few microseconds (LOCK_PAUSES pauses, in growing chunks of
 * at most LOCK_CHUNK) before it sleeps in the kernel: sleeping, and the
 * wake-up the holder then owes, cost many times the usual wait. */
static void lock(shard_t *d)
{
    int rc = pthread_mutex_trylock(&d->lock);
    for (unsigned chunk = 1, spent = 0; rc == EBUSY && spent < LOCK_PAUSES;
         spent += chunk, chunk = chunk < LOCK_CHUNK ? chunk * 2 : chunk) {
        for (unsigned i = 0; i < chunk; i++) relax();
        rc = pthread_mutex_trylock(&d->lock);
    }
    if (rc == EBUSY) rc = pthread_mutex_lock(&d->lock);
    if (unlikely(rc == EOWNERDEAD)) {
        d->recoveries++;
        if (d->dirty) {
            d->resets++;
            __atomic_store_n(&d->seq, d->seq | 1, __ATOMIC_RELAXED);
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            lsv_shdict_heap_reset(d, 1);
            __atomic_store_n(&d->dirty, 0, __ATOMIC_RELEASE);
        }
        if (d->seq & 1)     /* readers wait for an even seq: give it */
            __atomic_store_n(&d->seq, d->seq + 1, __ATOMIC_RELEASE);
        pthread_mutex_consistent(&d->lock);
    } else if (unlikely(rc != 0)) {
        /* Only a bug gets here (the mutex is set up once, never left
         * inconsistent): stopping is all that is safe. */
        fprintf(stderr, "luaserv: shared dict lock: %s\n", strerror(rc));
        abort();
    }
}

/* dirty goes before seq turns even: never dirty with an even seq. */
static void unlock(shard_t *d)
{
    if (d->dirty) {
        __atomic_store_n(&d->dirty, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&d->seq, d->seq + 1, __ATOMIC_RELEASE);  /* even */
    }
    pthread_mutex_unlock(&d->lock);
}

/* About to change the links: a death from here to the unlock empties the
 * shard at the next lock. seq turns odd before dirty is set, and both
 * are ordered before the changes. */
static void writing(shard_t *d)
{
    if (d->dirty) return;
    __atomic_store_n(&d->seq, d->seq + 1, __ATOMIC_RELAXED);   /* odd */
    __atomic_store_n(&d->dirty, 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* --- entries ------------------------------------------------------------ */

static off_t64 *bucket(shard_t *d, uint32_t hash)
{
    return (off_t64 *)AT(d, d->buckets) + (hash & (d->nbuckets - 1));
}

static void lru_unlink(shard_t *d, entry_t *e)
{
    if (e->lprev) ENT(d, e->lprev)->lnext = e->lnext;
    else d->lru_head = e->lnext;
    if (e->lnext) ENT(d, e->lnext)->lprev = e->lprev;
    else d->lru_tail = e->lprev;
}

static void lru_push(shard_t *d, off_t64 off, uint64_t now)
{
    entry_t *e = ENT(d, off);
    e->lprev = 0;
    e->lnext = d->lru_head;
    e->moved = (uint32_t)++d->pushes;
    e->moved_ev = (uint32_t)d->evictions;
    e->moved_ms = now;
    if (d->lru_head) ENT(d, d->lru_head)->lprev = off;
    else d->lru_tail = off;
    d->lru_head = off;
}

/* Makes the entry at off the most recently used, unless lru_stays. */
static void touch(shard_t *d, off_t64 off, uint64_t now)
{
    if (lru_stays(d, ENT(d, off), off, now)) return;
    writing(d);
    lru_unlink(d, ENT(d, off));
    lru_push(d, off, now);
}

/* Frees a list value's items. */
static void free_items(shard_t *d, entry_t *e)
{
    for (off_t64 n = e->u.list.head, next; n; n = next) {
        next = NODE(d, n)->next;
        lsv_shdict_heap_free(d, n);
    }
    e->u.list.head = e->u.list.tail = 0;
    e->vlen = 0;
}

/* Removes the entry at off from its bucket and the LRU, and frees it. */
static void remove_entry(shard_t *d, off_t64 off)
{
    entry_t *e = ENT(d, off);
    writing(d);
    off_t64 *link = bucket(d, e->hash);
    while (*link != off) link = &ENT(d, *link)->hnext;
    *link = e->hnext;
    lru_unlink(d, e);
    if (e->type == T_LIST) free_items(d, e);
    lsv_shdict_heap_free(d, off);
    d->count--;
}

/* The live entry for key, or 0; an expired one met is removed. */
static off_t64 find(shard_t *d, const char *key, size_t klen,
                    uint32_t hash, uint64_t now)
{
    for (off_t64 off = *bucket(d, hash); off; off = ENT(d, off)->hnext) {
        entry_t *e = ENT(d, off);
        if (e->hash != hash || e->klen != klen ||
            memcmp(e->data, key, klen) != 0)
            continue;
        if (!expired(e, now)) return off;
        remove_entry(d, off);
        return 0;
    }
    return 0;
}

/* Removes up to max expired entries from the LRU tail, stopping at the
 * first live one. */
static void reap_tail(shard_t *d, uint64_t now, int max)
{
    while (max-- > 0 && d->lru_tail && expired(ENT(d, d->lru_tail), now))
        remove_entry(d, d->lru_tail);
}

/* Allocates n payload bytes, reaping expired entries at the LRU tail
 * first and, when evict is set, evicting from the tail until it fits
 * (*forcible = 1 if any live one went). Returns the offset, or 0. */
static off_t64 alloc_room(shard_t *d, uint64_t n, uint64_t now,
                          int evict, int *forcible)
{
    if (n + HDR > d->max_block) return 0;
    reap_tail(d, now, REAP_PER_STORE);
    off_t64 p;
    while ((p = lsv_shdict_heap_alloc(d, n)) == 0) {
        if (!evict || d->lru_tail == 0) return 0;
        if (!expired(ENT(d, d->lru_tail), now)) *forcible = 1;
        d->evictions++;
        remove_entry(d, d->lru_tail);
    }
    return p;
}

/* Writes a scalar value (not its string bytes) into type/u/vlen. */
static void put_scalar(uint32_t *type, uint64_t *vlen, int64_t *i, double *n,
                       const lsv_shdict_val_t *v)
{
    *type = (uint32_t)v->type;
    *vlen = v->type == LSV_SHDICT_STR ? v->len : 0;
    if (v->type == LSV_SHDICT_NUM) *n = v->n;
    else *i = v->i;
}

/* Reads a scalar value back into *out; a string's bytes go to buf. */
static void get_scalar(uint32_t type, uint64_t vlen, int64_t i, double n,
                       const char *bytes, lsv_shdict_val_t *out, char *buf)
{
    out->type = (int)type;
    out->i = i;
    out->n = n;
    out->s = NULL;
    out->len = 0;
    if (type == LSV_SHDICT_STR) {
        memcpy(buf, bytes, vlen);
        out->s = buf;
        out->len = vlen;
    }
}

/* Writes v into the entry at off (whose key is in place). */
static void fill_entry(shard_t *d, off_t64 off,
                       const lsv_shdict_val_t *v, uint64_t expires)
{
    entry_t *e = ENT(d, off);
    put_scalar(&e->type, &e->vlen, &e->u.i, &e->u.n, v);
    if (v->type == LSV_SHDICT_STR) memcpy(e->data + e->klen, v->s, v->len);
    e->flags = v->flags;
    e->expires = expires;
}

/* Makes a new entry for key holding v (type T_LIST: an empty list),
 * linked in; returns it, or 0 when it does not fit. */
static off_t64 new_entry(shard_t *d, const char *key, size_t klen,
                         uint32_t hash, const lsv_shdict_val_t *v,
                         uint64_t now, int evict, int *forcible)
{
    uint64_t vlen = v->type == LSV_SHDICT_STR ? v->len : 0;
    if (vlen > d->max_block) return 0;
    writing(d);
    off_t64 off = alloc_room(d, sizeof(entry_t) + klen + vlen, now, evict,
                             forcible);
    if (off == 0) return 0;
    entry_t *e = ENT(d, off);
    memset(e, 0, sizeof *e);
    e->hash = hash;
    e->klen = (uint32_t)klen;
    memcpy(e->data, key, klen);
    fill_entry(d, off, v, 0);
    off_t64 *b = bucket(d, hash);
    e->hnext = *b;
    *b = off;
    lru_push(d, off, now);
    d->count++;
    return off;
}

/* --- making one --------------------------------------------------------- */

static int init_lock(shard_t *d)
{
    pthread_mutexattr_t a;
    int rc = pthread_mutexattr_init(&a);
    if (rc == 0) rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (rc == 0) rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (rc == 0) rc = pthread_mutex_init(&d->lock, &a);
    pthread_mutexattr_destroy(&a);
    return rc;
}

/* Makes an empty shard of size bytes (a multiple of ALIGN) at d, in
 * zeroed memory. Returns 0, or the mutex's error. */
static int shard_init(shard_t *d, uint64_t size)
{
    d->magic = MAGIC;
    d->size = size;
    d->nbuckets = 16;
    while (d->nbuckets * 256 <= size) d->nbuckets *= 2;
    d->buckets = (sizeof *d + ALIGN - 1) & ~(uint64_t)(ALIGN - 1);
    d->heap = d->buckets + d->nbuckets * sizeof(off_t64);
    d->heap_end = size;
    lsv_shdict_heap_reset(d, 0);
    return init_lock(d);
}

/* How many shards a region of size bytes gets: one per SHARD_MIN bytes,
 * rounded down to a power of two, at most SHARDS_MAX. */
static uint32_t shard_count(size_t size, uint32_t *shift)
{
    uint32_t n = 1;
    *shift = 0;
    while (n < SHARDS_MAX && (size_t)n * 2 * SHARD_MIN <= size) {
        n *= 2;
        (*shift)++;
    }
    return n;
}

lsv_shdict_t *lsv_shdict_new(size_t size, char err[LSV_ERRLEN])
{
    if (size < LSV_SHDICT_MIN_SIZE) {
        snprintf(err, LSV_ERRLEN, "a shared dict needs at least %u bytes",
                 LSV_SHDICT_MIN_SIZE);
        return NULL;
    }
    size &= ~(size_t)(ALIGN - 1);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        snprintf(err, LSV_ERRLEN, "cannot map %zu bytes of shared memory: %s",
                 size, strerror(errno));
        return NULL;
    }
    lsv_shdict_t *dict = p;        /* mmap gave zeroes: buckets are empty */
    dict->magic = MAGIC;
    dict->size = size;
    dict->nshards = shard_count(size, &dict->shift);
    dict->first = (sizeof *dict + LINE - 1) & ~(uint64_t)(LINE - 1);
    dict->shard_size = ((size - dict->first) / dict->nshards) &
                       ~(uint64_t)(LINE - 1);
    for (uint32_t i = 0; i < dict->nshards; i++) {
        int rc = shard_init(shard_at(dict, i), dict->shard_size);
        if (rc != 0) {
            snprintf(err, LSV_ERRLEN, "shared dict mutex: %s", strerror(rc));
            munmap(p, size);
            return NULL;
        }
    }
    return dict;
}

void lsv_shdict_free(lsv_shdict_t *dict)
{
    if (dict) munmap(dict, dict->size);
}

size_t lsv_shdict_capacity(const lsv_shdict_t *dict)
{
    return dict->size;
}

unsigned lsv_shdict_shards(const lsv_shdict_t *dict, size_t *shard_size)
{
    if (shard_size) *shard_size = dict->shard_size;
    return dict->nshards;
}

size_t lsv_shdict_free_space(lsv_shdict_t *dict)
{
    size_t n = 0;
    for (uint32_t i = 0; i < dict->nshards; i++) {
        shard_t *d = shard_at(dict, i);
        lock(d);
        n += d->free_bytes;
        unlock(d);
    }
    return n;
}

unsigned lsv_shdict_recoveries(lsv_shdict_t *dict, unsigned *resets)
{
    unsigned n = 0, r = 0;
    for (uint32_t i = 0; i < dict->nshards; i++) {
        shard_t *d = shard_at(dict, i);
        lock(d);
        n += d->recoveries;
        r += d->resets;
        unlock(d);
    }
    if (resets) *resets = r;
    return n;
}

void lsv_shdict_lock(lsv_shdict_t *dict)
{
    for (uint32_t i = 0; i < dict->nshards; i++) lock(shard_at(dict, i));
}

void lsv_shdict_unlock(lsv_shdict_t *dict)
{
    for (uint32_t i = dict->nshards; i-- > 0;) unlock(shard_at(dict, i));
}

unsigned lsv_shdict_lock_key(lsv_shdict_t *dict, const char *key,
                             size_t klen)
{
    shard_t *d = shard_of(dict, hash_key(key, klen));
    lock(d);
    return (unsigned)(((char *)d - (char *)dict - dict->first) /
                      dict->shard_size);
}

void lsv_shdict_unlock_key(lsv_shdict_t *dict, const char *key, size_t klen)
{
    unlock(shard_of(dict, hash_key(key, klen)));
}

const char *lsv_shdict_strerror(int status)
{
    switch (status) {
    case LSV_SHDICT_OK: return "ok";
    case LSV_SHDICT_NOT_FOUND: return "not found";
    case LSV_SHDICT_EXISTS: return "exists";
    case LSV_SHDICT_NO_MEMORY: return "no memory";
    case LSV_SHDICT_NOT_NUMBER: return "not a number";
    case LSV_SHDICT_NOT_LIST: return "value not a list";
    case LSV_SHDICT_IS_LIST: return "value is a list";
    case LSV_SHDICT_TOO_BIG: return "buffer too small";
    case LSV_SHDICT_BAD_KEY: return "bad key";
    }
    return "unknown";
}

/* --- storing and reading ------------------------------------------------ */

/* store's work, under the lock. */
static int store_locked(shard_t *d, int op, const char *key,
                        size_t klen, uint32_t hash,
                        const lsv_shdict_val_t *v, double ttl, int *forcible)
{
    uint64_t vlen = v->type == LSV_SHDICT_STR ? v->len : 0;
    if (vlen >= d->max_block || sizeof(entry_t) + klen + vlen + HDR >
                                d->max_block)
        return LSV_SHDICT_NO_MEMORY;     /* could never fit: change nothing */
    uint64_t now = now_ms();
    off_t64 off = find(d, key, klen, hash, now);
    if (op == LSV_SHDICT_ADD && off) return LSV_SHDICT_EXISTS;
    if (op == LSV_SHDICT_REPLACE && !off) return LSV_SHDICT_NOT_FOUND;
    if (v->type == LSV_SHDICT_NIL) {
        if (off && op != LSV_SHDICT_ADD) remove_entry(d, off);
        return LSV_SHDICT_OK;
    }
    if (off) {
        entry_t *e = ENT(d, off);
        uint64_t room = lsv_shdict_heap_room(d, off);
        uint64_t want = sizeof *e + klen + vlen;
        if (e->type != T_LIST && room >= want && room <= 2 * want + 64) {
            writing(d);
            fill_entry(d, off, v, expiry(now, ttl));
            touch(d, off, now);
            return LSV_SHDICT_OK;
        }
        remove_entry(d, off);
    }
    off = new_entry(d, key, klen, hash, v, now, op != LSV_SHDICT_SAFE_SET,
                    forcible);
    if (off == 0) return LSV_SHDICT_NO_MEMORY;
    ENT(d, off)->expires = expiry(now, ttl);
    return LSV_SHDICT_OK;
}

int lsv_shdict_store(lsv_shdict_t *dict, int op, const char *key, size_t klen,
                     const lsv_shdict_val_t *v, double ttl, int *forcible)
{
    *forcible = 0;
    if (!KEY_OK(klen)) return LSV_SHDICT_BAD_KEY;
    uint32_t hash = hash_key(key, klen);
    shard_t *d = shard_of(dict, hash);
    lock(d);
    int rc = store_locked(d, op, key, klen, hash, v, ttl, forcible);
    unlock(d);
    return rc;
}

int lsv_shdict_get(lsv_shdict_t *dict, const char *key, size_t klen,
                   lsv_shdict_val_t *out, char *buf, size_t size,
                   size_t *need)
{
    if (!KEY_OK(klen)) return LSV_SHDICT_BAD_KEY;
    uint32_t hash = hash_key(key, klen);
    shard_t *d = shard_of(dict, hash);
    uint64_t now = now_ms();
    int rc = lsv_shdict_read(d, key, klen, hash, now, out, buf, size, need);
    if (rc != READ_LOCKED) return rc;
    rc = LSV_SHDICT_OK;
    lock(d);
    off_t64 off = find(d, key, klen, hash, now);
    entry_t *e = off ? ENT(d, off) : NULL;
    if (e == NULL) {
        rc = LSV_SHDICT_NOT_FOUND;
    } else if (e->type == T_LIST) {
        rc = LSV_SHDICT_IS_LIST;
    } else if (e->type == LSV_SHDICT_STR && e->vlen > size) {
        *need = e->vlen;
        rc = LSV_SHDICT_TOO_BIG;
    } else {
        get_scalar(e->type, e->vlen, e->u.i, e->u.n, e->data + e->klen, out,
                   buf);
        out->flags = e->flags;
        touch(d, off, now);
    }
    unlock(d);
    return rc;
}

/* *out = a + b, as Lua adds: integers wrap, else floats. */
static void add_numbers(const lsv_shdict_val_t *a, const lsv_shdict_val_t *b,
                        lsv_shdict_val_t *out)
{
    memset(out, 0, sizeof *out);
    if (a->type == LSV_SHDICT_INT && b->type == LSV_SHDICT_INT) {
        out->type = LSV_SHDICT_INT;
        out->i = (int64_t)((uint64_t)a->i + (uint64_t)b->i);
    } else {
        out->type = LSV_SHDICT_NUM;
        out->n = (a->type == LSV_SHDICT_INT ? (double)a->i : a->n) +
                 (b->type == LSV_SHDICT_INT ? (double)b->i : b->n);
    }
}

static int incr_locked(shard_t *d, const char *key, size_t klen, uint32_t hash,
                       const lsv_shdict_val_t *by,
                       const lsv_shdict_val_t *init, double init_ttl,
                       lsv_shdict_val_t *out, int *forcible)
{
    uint64_t now = now_ms();
    off_t64 off = find(d, key, klen, hash, now);
    if (off == 0) {
        if (init == NULL) return LSV_SHDICT_NOT_FOUND;
        add_numbers(init, by, out);
        off = new_entry(d, key, klen, hash, out, now, 1, forcible);
        if (off == 0) return LSV_SHDICT_NO_MEMORY;
        ENT(d, off)->expires = expiry(now, init_ttl);
        return LSV_SHDICT_OK;
    }
    entry_t *e = ENT(d, off);
    if (e->type != LSV_SHDICT_INT && e->type != LSV_SHDICT_NUM)
        return LSV_SHDICT_NOT_NUMBER;
    lsv_shdict_val_t cur = { .type = (int)e->type, .i = e->u.i, .n = e->u.n };
    add_numbers(&cur, by, out);
    writing(d);
    e->type = (uint32_t)out->type;
    if (out->type == LSV_SHDICT_INT) e->u.i = out->i;
    else e->u.n = out->n;
    touch(d, off, now);
    return LSV_SHDICT_OK;
}

int lsv_shdict_incr(lsv_shdict_t *dict, const char *key, size_t klen,
                    const lsv_shdict_val_t *by, const lsv_shdict_val_t *init,
                    double init_ttl, lsv_shdict_val_t *out, int *forcible)
{
    *forcible = 0;
    if (!KEY_OK(klen)) return LSV_SHDICT_BAD_KEY;
    uint32_t hash = hash_key(key, klen);
    shard_t *d = shard_of(dict, hash);
    lock(d);
    int rc = incr_locked(d, key, klen, hash, by, init, init_ttl, out,
                         forcible);
    unlock(d);
    return rc;
}

int lsv_shdict_ttl(lsv_shdict_t *dict, const char *key, size_t klen,
                   double *ttl)
{
    if (!KEY_OK(klen)) return LSV_SHDICT_BAD_KEY;
    uint32_t hash = hash_key(key, klen);
    shard_t *d = shard_of(dict, hash);
    lock(d);
    uint64_t now = now_ms();
    off_t64 off = find(d, key, klen, hash, now);
    if (off) {
        uint64_t x = ENT(d, off)->expires;
        *ttl = x ? (double)(x - now) / 1000.0 : 0;
    }
    unlock(d);
    return off ? LSV_SHDICT_OK : LSV_SHDICT_NOT_FOUND;
}

int lsv_shdict_expire(lsv_shdict_t *dict, const char *key, size_t klen,
                      double ttl)
{
    if (!KEY_OK(klen)) return LSV_SHDICT_BAD_KEY;
    uint32_t hash = hash_key(key, klen);
    shard_t *d = shard_of(dict, hash);
    lock(d);
    uint64_t now = now_ms();
    off_t64 off = find(d, key, klen, hash, now);
    if (off) {
        writing(d);
        ENT(d, off)->expires = expiry(now, ttl);
    }
    unlock(d);
    return off ? LSV_SHDICT_OK : LSV_SHDICT_NOT_FOUND;
}

/* --- the whole dict ----------------------------------------------------- */

/* keys' work in one shard: appends to buf[*used, size), counting in
 * *used and *n, up to max keys in all (0 = no limit). */
static void shard_keys(shard_t *d, size_t max, char *buf, size_t size,
                       size_t *used, size_t *n)
{
    lock(d);
    uint64_t now = now_ms();
    for (off_t64 off = d->lru_head; off && (max == 0 || *n < max);
         off = ENT(d, off)->lnext) {
        entry_t *e = ENT(d, off);
        if (expired(e, now)) continue;
        if (*used + 4 + e->klen <= size) {
            memcpy(buf + *used, &e->klen, 4);
            memcpy(buf + *used + 4, e->data, e->klen);
        }
        *used += 4 + e->klen;
        (*n)++;
    }
    unlock(d);
}

int lsv_shdict_keys(lsv_shdict_t *dict, size_t max, char *buf, size_t size,
                    size_t *need, size_t *count)
{
    size_t used = 0, n = 0;
    for (uint32_t i = 0; i < dict->nshards && (max == 0 || n < max); i++)
        shard_keys(shard_at(dict, i), max, buf, size, &used, &n);
    *count = n;
    *need = used;
    return used <= size ? LSV_SHDICT_OK : LSV_SHDICT_TOO_BIG;
}

void lsv_shdict_flush_all(lsv_shdict_t *dict)
{
    for (uint32_t i = 0; i < dict->nshards; i++) {
        shard_t *d = shard_at(dict, i);
        lock(d);
        while (d->lru_tail) remove_entry(d, d->lru_tail);
        unlock(d);
    }
}

size_t lsv_shdict_flush_expired(lsv_shdict_t *dict, size_t max)
{
    size_t n = 0;
    for (uint32_t i = 0; i < dict->nshards && (max == 0 || n < max); i++) {
        shard_t *d = shard_at(dict, i);
        lock(d);
        uint64_t now = now_ms();
        for (off_t64 off = d->lru_tail, prev; off && (max == 0 || n < max);
             off = prev) {
            prev = ENT(d, off)->lprev;
            if (!expired(ENT(d, off), now)) continue;
            remove_entry(d, off);
            n++;
        }
        unlock(d);
    }
    return n;
}

/* --- lists -------------------------------------------------------------- */

static int push_locked(shard_t *d, const char *key, size_t klen, uint32_t hash,
                       int left, const lsv_shdict_val_t *v, size_t *len)
{
    uint64_t now = now_ms();
    off_t64 off = find(d, key, klen, hash, now);
    if (off && ENT(d, off)->type != T_LIST) return LSV_SHDICT_NOT_LIST;
    uint64_t vlen = v->type == LSV_SHDICT_STR ? v->len : 0;
    if (vlen > d->max_block) return LSV_SHDICT_NO_MEMORY;
    int forcible = 0;
    writing(d);
    off_t64 n = alloc_room(d, sizeof(lnode_t) + vlen, now, 0, &forcible);
    if (n == 0) return LSV_SHDICT_NO_MEMORY;
    if (off == 0) {
        lsv_shdict_val_t lv = { .type = T_LIST };
        off = new_entry(d, key, klen, hash, &lv, now, 0, &forcible);
        if (off == 0) {
            lsv_shdict_heap_free(d, n);
            return LSV_SHDICT_NO_MEMORY;
        }
    }
    entry_t *e = ENT(d, off);
    lnode_t *node = NODE(d, n);
    put_scalar(&node->type, &node->vlen, &node->u.i, &node->u.n, v);
    if (v->type == LSV_SHDICT_STR) memcpy(node->data, v->s, v->len);
    off_t64 *end = left ? &e->u.list.head : &e->u.list.tail;
    off_t64 *other = left ? &e->u.list.tail : &e->u.list.head;
    node->next = left ? *end : 0;
    node->prev = left ? 0 : *end;
    if (*end == 0) *other = n;
    else if (left) NODE(d, *end)->prev = n;
    else NODE(d, *end)->next = n;
    *end = n;
    *len = ++e->vlen;
    touch(d, off, now);
    return LSV_SHDICT_OK;
}

int lsv_shdict_push(lsv_shdict_t *dict, const char *key, size_t klen, int left,
                    const lsv_shdict_val_t *v, size_t *len)
{
    if (!KEY_OK(klen)) return LSV_SHDICT_BAD_KEY;
    uint32_t hash = hash_key(key, klen);
    shard_t *d = shard_of(dict, hash);
    lock(d);
    int rc = push_locked(d, key, klen, hash, left, v, len);
    unlock(d);
    return rc;
}

static int pop_locked(shard_t *d, const char *key, size_t klen, uint32_t hash,
                      int left, lsv_shdict_val_t *out, char *buf,
                      size_t size, size_t *need)
{
    off_t64 off = find(d, key, klen, hash, now_ms());
    if (off == 0) return LSV_SHDICT_NOT_FOUND;
    entry_t *e = ENT(d, off);
    if (e->type != T_LIST) return LSV_SHDICT_NOT_LIST;
    off_t64 n = left ? e->u.list.head : e->u.list.tail;
    lnode_t *node = NODE(d, n);
    if (node->type == LSV_SHDICT_STR && node->vlen > size) {
        *need = node->vlen;
        return LSV_SHDICT_TOO_BIG;
    }
    get_scalar(node->type, node->vlen, node->u.i, node->u.n, node->data, out,
               buf);
    out->flags = 0;
    writing(d);
    if (left) {
        e->u.list.head = node->next;
        if (node->next) NODE(d, node->next)->prev = 0;
        else e->u.list.tail = 0;
    } else {
        e->u.list.tail = node->prev;
        if (node->prev) NODE(d, node->prev)->next = 0;
        else e->u.list.head = 0;
    }
    lsv_shdict_heap_free(d, n);
    if (--e->vlen == 0) remove_entry(d, off);
    return LSV_SHDICT_OK;
}

int lsv_shdict_pop(lsv_shdict_t *dict, const char *key, size_t klen, int left,
                   lsv_shdict_val_t *out, char *buf, size_t size,
                   size_t *need)
{
    if (!KEY_OK(klen)) return LSV_SHDICT_BAD_KEY;
    uint32_t hash = hash_key(key, klen);
    shard_t *d = shard_of(dict, hash);
    lock(d);
    int rc = pop_locked(d, key, klen, hash, left, out, buf, size, need);
    unlock(d);
    return rc;
}

int lsv_shdict_llen(lsv_shdict_t *dict, const char *key, size_t klen,
                    size_t *len)
{
    if (!KEY_OK(klen)) return LSV_SHDICT_BAD_KEY;
    uint32_t hash = hash_key(key, klen);
    shard_t *d = shard_of(dict, hash);
    int rc = LSV_SHDICT_OK;
    lock(d);
    off_t64 off = find(d, key, klen, hash, now_ms());
    *len = 0;
    if (off && ENT(d, off)->type != T_LIST) rc = LSV_SHDICT_NOT_LIST;
    else if (off) *len = ENT(d, off)->vlen;
    unlock(d);
    return rc;
}

int lsv_shdict_check(lsv_shdict_t *dict, char err[LSV_ERRLEN])
{
    int rc = LSV_OK;
    for (uint32_t i = 0; i < dict->nshards && rc == LSV_OK; i++) {
        shard_t *d = shard_at(dict, i);
        lock(d);
        rc = lsv_shdict_heap_check(d, err);
        unlock(d);
    }
    return rc;
}

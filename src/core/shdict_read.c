/* shdict_read.c: a shared dict's get without the lock, for the common
 * case (the key's shard is not being changed, and the entry need not move
 * in the LRU): it reads, then checks that no writer came in between. */
#include "lsv.h"
#include "shdict.h"
#include "shdict_int.h"

#include <string.h>

/* A field a writer may be changing: read once, never re-read by the
 * compiler after it was checked. */
#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

/* Checks that an entry of klen key bytes and vlen more at off lies
 * inside the shard's heap: a link read while a writer changed it may be
 * anything (a freed entry's bytes may be a value's), and must not be
 * followed out of the shard. Only subtractions of smaller from bigger:
 * a sum such as off + klen could wrap past 2^64 and pass. */
static int inside(const shard_t *d, off_t64 off, uint64_t klen,
                  uint64_t vlen)
{
    if (off < d->heap || off >= d->heap_end || off % ALIGN != 0)
        return 0;
    uint64_t room = d->heap_end - off;
    if (room < sizeof(entry_t)) return 0;
    room -= sizeof(entry_t);
    return klen <= room && vlen <= room - klen;
}

/* The seqlock protocol: a writer (with the mutex held) makes seq odd
 * before its first change and even again before it unlocks (shdict.c,
 * writing and unlock); a reader reads seq, reads what it needs, and
 * trusts what it read only when seq was even and has not changed. Every
 * link is bounds-checked before it is followed and the walk is bounded,
 * so a read racing with a writer is thrown away, never a crash. */
int lsv_shdict_read(shard_t *d, const char *key, size_t klen, uint32_t hash,
                    uint64_t now, lsv_shdict_val_t *out, char *buf,
                    size_t size, size_t *need)
{
    uint64_t seq = __atomic_load_n(&d->seq, __ATOMIC_ACQUIRE);
    if (seq & 1) return READ_LOCKED;
    off_t64 off = ((volatile off_t64 *)AT(d, d->buckets))
                  [hash & (d->nbuckets - 1)];
    unsigned steps = 0;
    entry_t *e = NULL;
    while (off) {
        if (!inside(d, off, klen, 0) || ++steps > READ_STEPS)
            return READ_LOCKED;
        e = ENT(d, off);
        if (LOAD(e->hash) == hash && LOAD(e->klen) == klen &&
            memcmp(e->data, key, klen) == 0)
            break;
        off = LOAD(e->hnext);
        e = NULL;
    }
    int rc = LSV_SHDICT_OK;
    uint32_t type = e ? LOAD(e->type) : 0;
    uint64_t expires = e ? LOAD(e->expires) : 0;
    if (e == NULL) {
        rc = LSV_SHDICT_NOT_FOUND;
    } else if (expires != 0 && expires <= now) {
        return READ_LOCKED;             /* the locked get removes it */
    } else if (type == T_LIST) {
        rc = LSV_SHDICT_IS_LIST;
    } else if (!lru_stays(d, e, off, now)) {
        return READ_LOCKED;             /* it moves in the LRU: a write */
    } else {
        uint64_t vlen = type == LSV_SHDICT_STR ? LOAD(e->vlen) : 0;
        out->type = (int)type;
        out->flags = e->flags;
        out->i = e->u.i;
        out->n = e->u.n;
        out->s = NULL;
        out->len = 0;
        if (vlen > size) {
            *need = vlen;
            rc = LSV_SHDICT_TOO_BIG;
        } else if (type == LSV_SHDICT_STR) {
            if (!inside(d, off, klen, vlen)) return READ_LOCKED;
            memcpy(buf, e->data + klen, vlen);
            out->s = buf;
            out->len = vlen;
        }
    }
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&d->seq, __ATOMIC_RELAXED) != seq) return READ_LOCKED;
    return rc;
}

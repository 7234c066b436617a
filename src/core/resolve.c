/* resolve.c: getaddrinfo on a small pool of helper threads, results back
 * through ev_async.
 *
 * getaddrinfo cannot be interrupted: a name whose nameserver never answers
 * holds its thread for the resolver's whole timeout (glibc: 5 s x 2
 * attempts, per family and search domain). So lookups run in parallel,
 * and a lookup its caller gave up on (lsv_resolve_cancel while it runs)
 * stops counting against the pool: its thread is "abandoned", finishes in
 * its own time, drops the result and goes back to work. New threads start
 * while fewer than SLOTS lookups that someone still waits for are running,
 * up to THREADS_MAX threads in all, stuck ones included.
 *
 * Threads are detached and share the resolver through a reference count:
 * lsv_resolver_free waits for idle threads to leave, never for one stuck
 * in getaddrinfo; the last thread out frees the struct. */
#include "lsv.h"
#include "resolve.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Lookups that run at once for callers still waiting. */
#define SLOTS 16

/* Threads alive at once, counting those stuck on abandoned lookups. Past
 * it, a new lookup waits in the queue for a thread to come back. */
#define THREADS_MAX 64

/* An idle thread exits after this many seconds without work. */
#define IDLE_EXIT 30

/* Stack of a helper thread: getaddrinfo and NSS need far less than the
 * default 8 MiB, and 64 of those would eat address space (prlimit --as). */
#define STACK_SIZE (512 * 1024)

enum { REQ_QUEUED, REQ_RUNNING, REQ_DONE };

struct lsv_resolve_req {
    lsv_resolve_req_t *next;
    char host[256];
    char port[8];
    int socktype;
    int state;              /* under lock */
    int cancelled;          /* under lock */
    int err;
    struct addrinfo *res;
    lsv_resolve_cb cb;
    void *data;
};

struct lsv_resolver {
    struct ev_loop *loop;
    ev_async done_watcher;
    pthread_mutex_t lock;
    pthread_cond_t work;    /* todo grew, or stopping */
    pthread_cond_t gone;    /* a thread left (lsv_resolver_free waits) */
    int refs;               /* the loop's, plus one per thread */
    int stopping;
    int nthreads;           /* alive */
    int nidle;              /* waiting for work */
    int nbusy;              /* inside getaddrinfo */
    int nabandoned;         /* ... on a lookup nobody waits for */
    int nqueued;
    lsv_resolve_req_t *todo, *todo_tail;
    lsv_resolve_req_t *done;
};

static void free_req(lsv_resolve_req_t *q)
{
    if (q->res) freeaddrinfo(q->res);
    free(q);
}

/* Drops a thread's reference; frees r when it was the last. Called with
 * the lock held; returns with it released. */
static void unref_unlock(lsv_resolver_t *r)
{
    int last = --r->refs == 0;
    pthread_mutex_unlock(&r->lock);
    if (last) {
        pthread_mutex_destroy(&r->lock);
        pthread_cond_destroy(&r->work);
        pthread_cond_destroy(&r->gone);
        free(r);
    }
}

/* Waits for work; returns the next request, or NULL when the thread
 * should exit (stopping, or idle for IDLE_EXIT). Lock held throughout. */
static lsv_resolve_req_t *next_req(lsv_resolver_t *r)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += IDLE_EXIT;
    while (r->todo == NULL && !r->stopping) {
        r->nidle++;
        int rc = pthread_cond_timedwait(&r->work, &r->lock, &until);
        r->nidle--;
        if (rc == ETIMEDOUT && r->todo == NULL) return NULL;
    }
    if (r->stopping) return NULL;
    lsv_resolve_req_t *q = r->todo;
    r->todo = q->next;
    if (r->todo == NULL) r->todo_tail = NULL;
    r->nqueued--;
    q->state = REQ_RUNNING;
    return q;
}

static void *resolver_main(void *arg)
{
    lsv_resolver_t *r = arg;
    lsv_resolve_req_t *q;
    pthread_mutex_lock(&r->lock);
    while ((q = next_req(r)) != NULL) {
        r->nbusy++;
        pthread_mutex_unlock(&r->lock);

        struct addrinfo hints;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = q->socktype;
        hints.ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG;
        q->err = getaddrinfo(q->host, q->port, &hints, &q->res);

        pthread_mutex_lock(&r->lock);
        r->nbusy--;
        if (q->cancelled) r->nabandoned--;
        if (q->cancelled || r->stopping) {
            free_req(q);
        } else {
            q->state = REQ_DONE;
            q->next = r->done;
            r->done = q;
            ev_async_send(r->loop, &r->done_watcher);
        }
    }
    r->nthreads--;
    pthread_cond_broadcast(&r->gone);
    unref_unlock(r);
    return NULL;
}

/* Starts threads while lookups wait for one and the bounds allow. Lock
 * held. A thread that cannot start leaves the lookup queued for the
 * threads there are; with none at all, lookups fail (see lsv_resolve). */
static void maybe_spawn(lsv_resolver_t *r)
{
    if (r->nqueued <= r->nidle || r->nthreads - r->nabandoned >= SLOTS ||
        r->nthreads >= THREADS_MAX)
        return;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, STACK_SIZE);
    /* Signals are for the loop thread (the watchdog's SIGALRM too). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_t th;
    int rc = pthread_create(&th, &attr, resolver_main, r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc == 0) {
        r->nthreads++;
        r->refs++;
    }
}

/* Runs the callbacks of finished lookups, on the loop thread. */
static void resolver_done_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop; (void)revents;
    lsv_resolver_t *r = container_of(w, lsv_resolver_t, done_watcher);
    pthread_mutex_lock(&r->lock);
    lsv_resolve_req_t *q = r->done;
    r->done = NULL;
    pthread_mutex_unlock(&r->lock);
    while (q) {
        lsv_resolve_req_t *next = q->next;
        /* cancelled is written only by the loop thread once DONE. */
        if (!q->cancelled) q->cb(q->data, q->err ? NULL : q->res, q->err);
        free_req(q);
        q = next;
    }
}

lsv_resolver_t *lsv_resolver_new(struct ev_loop *loop)
{
    lsv_resolver_t *r = lsv_calloc(1, sizeof *r);
    r->loop = loop;
    r->refs = 1;
    pthread_mutex_init(&r->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->work, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&r->gone, NULL);
    ev_async_init(&r->done_watcher, resolver_done_cb);
    ev_async_start(loop, &r->done_watcher);
    ev_unref(loop);     /* an idle resolver does not keep the loop alive */
    return r;
}

void lsv_resolver_free(lsv_resolver_t *r)
{
    if (r == NULL) return;
    ev_ref(r->loop);
    ev_async_stop(r->loop, &r->done_watcher);
    pthread_mutex_lock(&r->lock);
    r->stopping = 1;
    pthread_cond_broadcast(&r->work);
    /* Idle threads leave at once; one inside getaddrinfo may take
     * seconds, and the process must not wait for it: it drops its result
     * and the last thread out frees r. */
    while (r->nthreads > r->nbusy)
        pthread_cond_wait(&r->gone, &r->lock);
    lsv_resolve_req_t *lists[2] = { r->todo, r->done };
    r->todo = r->todo_tail = r->done = NULL;
    r->nqueued = 0;
    pthread_mutex_unlock(&r->lock);
    for (int i = 0; i < 2; i++) {
        for (lsv_resolve_req_t *q = lists[i], *next; q; q = next) {
            next = q->next;
            free_req(q);
        }
    }
    pthread_mutex_lock(&r->lock);
    unref_unlock(r);
}

lsv_resolve_req_t *lsv_resolve(lsv_resolver_t *r, const char *host, int port,
                               int socktype, lsv_resolve_cb cb, void *data)
{
    lsv_resolve_req_t *q = lsv_calloc(1, sizeof *q);
    snprintf(q->host, sizeof q->host, "%s", host);
    snprintf(q->port, sizeof q->port, "%d", port);
    q->socktype = socktype;
    q->cb = cb;
    q->data = data;
    q->state = REQ_QUEUED;
    pthread_mutex_lock(&r->lock);
    if (r->todo_tail) r->todo_tail->next = q;
    else r->todo = q;
    r->todo_tail = q;
    r->nqueued++;
    maybe_spawn(r);
    if (r->nthreads == 0) {
        /* No thread could start (out of memory or of threads): fail the
         * lookup, through the loop as always. */
        r->todo = r->todo_tail = NULL;
        r->nqueued = 0;
        q->state = REQ_DONE;
        q->err = EAI_AGAIN;
        q->next = r->done;
        r->done = q;
        ev_async_send(r->loop, &r->done_watcher);
    }
    pthread_cond_signal(&r->work);
    pthread_mutex_unlock(&r->lock);
    return q;
}

void lsv_resolve_cancel(lsv_resolver_t *r, lsv_resolve_req_t *req)
{
    pthread_mutex_lock(&r->lock);
    if (req->state == REQ_QUEUED) {
        lsv_resolve_req_t **pp = &r->todo, *prev = NULL;
        while (*pp != req) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        *pp = req->next;
        if (r->todo_tail == req) r->todo_tail = prev;
        r->nqueued--;
        free_req(req);
    } else if (req->state == REQ_RUNNING) {
        /* Its thread stays in getaddrinfo but no longer holds a slot. */
        req->cancelled = 1;
        r->nabandoned++;
        maybe_spawn(r);
        pthread_cond_signal(&r->work);
    } else {
        req->cancelled = 1;   /* done: resolver_done_cb skips it */
    }
    pthread_mutex_unlock(&r->lock);
}

/* resolve.c: getaddrinfo on a helper thread, results back through ev_async. */
#include "lsv.h"
#include "resolve.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

struct lsv_resolve_req {
    lsv_resolve_req_t *next;
    char host[256];
    char port[8];
    int socktype;
    int cancelled;          /* loop thread only */
    int err;
    struct addrinfo *res;
    lsv_resolve_cb cb;
    void *data;
};

struct lsv_resolver {
    struct ev_loop *loop;
    ev_async done_watcher;
    pthread_t thread;
    int started;
    int stopping;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    lsv_resolve_req_t *todo, *todo_tail;   /* under lock */
    lsv_resolve_req_t *done;               /* under lock */
};

static void *resolver_main(void *arg)
{
    lsv_resolver_t *r = arg;
    pthread_mutex_lock(&r->lock);
    for (;;) {
        while (r->todo == NULL && !r->stopping)
            pthread_cond_wait(&r->cond, &r->lock);
        if (r->stopping) break;
        lsv_resolve_req_t *q = r->todo;
        r->todo = q->next;
        if (r->todo == NULL) r->todo_tail = NULL;
        pthread_mutex_unlock(&r->lock);

        struct addrinfo hints;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = q->socktype;
        hints.ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG;
        q->err = getaddrinfo(q->host, q->port, &hints, &q->res);

        pthread_mutex_lock(&r->lock);
        q->next = r->done;
        r->done = q;
        ev_async_send(r->loop, &r->done_watcher);
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

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
        if (!q->cancelled) q->cb(q->data, q->err ? NULL : q->res, q->err);
        if (q->res) freeaddrinfo(q->res);
        free(q);
        q = next;
    }
}

lsv_resolver_t *lsv_resolver_new(struct ev_loop *loop)
{
    lsv_resolver_t *r = lsv_calloc(1, sizeof *r);
    r->loop = loop;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    ev_async_init(&r->done_watcher, resolver_done_cb);
    ev_async_start(loop, &r->done_watcher);
    ev_unref(loop);     /* an idle resolver does not keep the loop alive */
    return r;
}

void lsv_resolver_free(lsv_resolver_t *r)
{
    if (r == NULL) return;
    if (r->started) {
        pthread_mutex_lock(&r->lock);
        r->stopping = 1;
        pthread_cond_signal(&r->cond);
        pthread_mutex_unlock(&r->lock);
        /* A lookup in progress finishes first (getaddrinfo cannot be
         * interrupted); its result is dropped below. */
        pthread_join(r->thread, NULL);
    }
    ev_ref(r->loop);
    ev_async_stop(r->loop, &r->done_watcher);
    lsv_resolve_req_t *lists[2] = { r->todo, r->done };
    for (int i = 0; i < 2; i++) {
        for (lsv_resolve_req_t *q = lists[i], *next; q; q = next) {
            next = q->next;
            if (q->res) freeaddrinfo(q->res);
            free(q);
        }
    }
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    free(r);
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
    pthread_mutex_lock(&r->lock);
    if (!r->started) {
        /* The watchdog's SIGALRM is for the loop thread, not this one. */
        sigset_t block, old;
        sigemptyset(&block);
        sigaddset(&block, SIGALRM);
        pthread_sigmask(SIG_BLOCK, &block, &old);
        int rc = pthread_create(&r->thread, NULL, resolver_main, r);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rc != 0) {
            fprintf(stderr, "luaserv: cannot start the resolver thread\n");
            abort();
        }
        r->started = 1;
    }
    if (r->todo_tail) r->todo_tail->next = q;
    else r->todo = q;
    r->todo_tail = q;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    return q;
}

void lsv_resolve_cancel(lsv_resolver_t *r, lsv_resolve_req_t *req)
{
    (void)r;
    req->cancelled = 1;   /* read only on the loop thread */
}

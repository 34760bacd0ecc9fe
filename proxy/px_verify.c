/* px_verify: see px_verify.h. Owns the worker threads, each with its own
 * libfencelock client (made and used on that worker only: a struct
 * fl_client is not thread-safe), the job queue and the done list
 * (mutex-protected), the eventfd with its event, and the live-lease cache
 * (loop thread only). The workers block every signal for themselves
 * (hiredis writes without MSG_NOSIGNAL). Verdicts may come back in another
 * order than the checks were asked in; px_fence judges each on its own
 * (a HELD token is admitted again under S1, against the highest of then). */
#include "px_verify.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

#include "fc_hmap.h"
#include "fencelock.h"
#include "pol_route.h"
#include "px_fence.h"
#include "px_log.h"
#include "px_stats.h"

struct job {
    struct job *next;
    uint64_t token;
    px_verdict_cb cb;
    void *arg;
    enum px_verdict verdict;
    int64_t asked_ms; /* monotonic, before the call was sent */
    int64_t ttl_ms;   /* live checks: the lease's TTL left, -1 unknown */
    char err[256];    /* the backend's message for UNREACHABLE */
    char name[];      /* the lock name */
};

struct cached {
    struct fc_hmap_node node;
    uint64_t token;
    int64_t until_ms; /* monotonic */
    char name[];
};

struct px_verify {
    struct px_fence_verifier iface;
    const struct pol_route *route;
    char *url;
    pthread_t threads[PX_VERIFY_WORKERS];
    size_t started; /* threads[0..started) run */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *head, *tail; /* queued for the workers */
    size_t queued;
    struct job *done; /* verdicts for the loop (reversed) */
    int stop;
    int efd;
    struct event *ev;
    struct fc_hmap *cache;  /* lock name -> struct cached */
    int unreachable_logged; /* rate limit: one line per outage */
};

static void free_list(struct job *j)
{
    while (j != NULL) {
        struct job *next = j->next;
        free(j);
        j = next;
    }
}

static void cache_clear(struct px_verify *v)
{
    for (struct fc_hmap_node *n; v->cache != NULL && (n = fc_hmap_pop(v->cache)) != NULL;)
        free(FC_HMAP_ENTRY(n, struct cached, node));
}

/* One check on a worker: fl_verify, or fl_status for a live check (its
 * TTL bounds the cache). */
static void run_job(struct px_verify *v, struct fl_client *c, struct job *j)
{
    int rc, current = 0;

    j->ttl_ms = -1;
    j->asked_ms = fl_now_ms();
    if (v->iface.live) {
        struct fl_lock_status st;
        rc = fl_status(c, j->name, &st);
        current = rc == FL_OK && st.held && st.token == j->token;
        if (current)
            j->ttl_ms = st.ttl_ms;
    } else {
        rc = fl_verify(c, j->name, j->token, &current);
    }
    if (rc == FL_OK)
        j->verdict = current ? PX_VERDICT_HELD : PX_VERDICT_NOT_HELD;
    else if (rc == FL_ERR_INVALID)
        j->verdict = PX_VERDICT_NOT_HELD; /* a name no lock can have */
    else {
        j->verdict = PX_VERDICT_UNREACHABLE;
        snprintf(j->err, sizeof j->err, "%s", fl_client_error(c));
    }
}

static void *worker_main(void *arg)
{
    struct px_verify *v = arg;
    struct fl_client *c;
    char err[256];
    sigset_t set;

    sigfillset(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    c = fl_client_new(v->url, err, sizeof err); /* the URL was checked at load */
    if (c != NULL)
        fl_client_set_timeout(c, PX_VERIFY_TIMEOUT_MS);
    pthread_mutex_lock(&v->mu);
    for (;;) {
        struct job *j;
        while (v->head == NULL && !v->stop)
            pthread_cond_wait(&v->cv, &v->mu);
        if (v->stop)
            break;
        j = v->head;
        v->head = j->next;
        if (v->head == NULL)
            v->tail = NULL;
        v->queued--;
        pthread_mutex_unlock(&v->mu);
        if (c != NULL) {
            run_job(v, c, j);
        } else {
            j->verdict = PX_VERDICT_UNREACHABLE;
            snprintf(j->err, sizeof j->err, "%s", err);
        }
        pthread_mutex_lock(&v->mu);
        j->next = v->done;
        v->done = j;
        {
            uint64_t one = 1;
            ssize_t n = write(v->efd, &one, sizeof one); /* EAGAIN: readable anyway */
            (void)n;
        }
    }
    pthread_mutex_unlock(&v->mu);
    fl_client_free(&c);
    return NULL;
}

/* Remembers a HELD live check until min(live_lease_cache, TTL left) from
 * before it was asked: never past the lease. */
static void cache_put(struct px_verify *v, const struct job *j)
{
    uint64_t bound = v->route->live_lease_cache_ms;
    int64_t ttl = j->ttl_ms;
    struct fc_hmap_node *n;
    struct cached *e;
    size_t len = strlen(j->name);

    if (bound == 0 || ttl <= 0)
        return;
    /* etcd reports whole seconds, possibly rounded up: one second less. */
    if (ttl % 1000 == 0)
        ttl -= 1000;
    if (ttl <= 0)
        return;
    if ((uint64_t)ttl > bound)
        ttl = (int64_t)bound;
    if ((n = fc_hmap_find(v->cache, j->name, len)) != NULL) {
        fc_hmap_remove(v->cache, n);
        free(FC_HMAP_ENTRY(n, struct cached, node));
    }
    if (fc_hmap_count(v->cache) >= PX_VERIFY_CACHE_MAX)
        cache_clear(v);
    e = malloc(sizeof *e + len + 1);
    if (e == NULL)
        return;
    e->token = j->token;
    e->until_ms = j->asked_ms + ttl;
    memcpy(e->name, j->name, len + 1);
    fc_hmap_insert(v->cache, &e->node, e->name, len);
}

/* Whether a HELD answer for name and token is still cached. */
static int cache_hit(struct px_verify *v, const char *name, size_t len, uint64_t token)
{
    struct fc_hmap_node *n = fc_hmap_find(v->cache, name, len);
    struct cached *e;

    if (n == NULL)
        return 0;
    e = FC_HMAP_ENTRY(n, struct cached, node);
    if (e->token == token && fl_now_ms() < e->until_ms)
        return 1;
    fc_hmap_remove(v->cache, n);
    free(e);
    return 0;
}

/* Verdicts back on the loop: count, cache, log, call back. */
static void notify_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_verify *v = arg;
    struct job *list, *rev = NULL;
    uint64_t cnt;

    (void)what;
    while (read(fd, &cnt, sizeof cnt) == (ssize_t)sizeof cnt)
        ;
    pthread_mutex_lock(&v->mu);
    list = v->done;
    v->done = NULL;
    pthread_mutex_unlock(&v->mu);
    while (list != NULL) { /* back to the order they were answered in */
        struct job *next = list->next;
        list->next = rev;
        rev = list;
        list = next;
    }
    for (struct job *j = rev, *next; j != NULL; j = next) {
        next = j->next;
        px_stats_inc(PX_ST_VERIFY_CALLS);
        if (j->verdict == PX_VERDICT_UNREACHABLE) {
            px_stats_inc(PX_ST_VERIFY_ERRORS);
            if (!v->unreachable_logged)
                px_log_error("route %s: lock backend %s unreachable (%s): refusing advances "
                             "with 503",
                             v->route->name, v->url, j->err);
            v->unreachable_logged = 1;
        } else {
            if (v->unreachable_logged)
                px_log_info("route %s: lock backend %s answers again", v->route->name, v->url);
            v->unreachable_logged = 0;
        }
        if (j->verdict == PX_VERDICT_HELD && v->iface.live)
            cache_put(v, j);
        j->cb(j->arg, j->verdict);
        free(j);
    }
}

static int check(void *impl, const char *key, size_t klen, uint64_t token, px_verdict_cb cb,
                 void *arg)
{
    struct px_verify *v = impl;
    char name[FL_NAME_MAX + 1];
    long n = pol_route_lock_name(v->route, key, klen, name, sizeof name);
    struct job *j;
    int rc = -1;

    if (n <= 0) {
        /* A name longer than any lock's: no holder can have it. Answered
         * through the queue like any verdict (never from inside check). */
        n = 0;
        name[0] = '\0';
    } else if (v->iface.live && cache_hit(v, name, (size_t)n, token)) {
        px_stats_inc(PX_ST_VERIFY_CACHE_HITS);
        return 1;
    }
    j = calloc(1, sizeof *j + (size_t)n + 1);
    if (j == NULL)
        return -1;
    memcpy(j->name, name, (size_t)n + 1);
    j->token = token;
    j->cb = cb;
    j->arg = arg;
    pthread_mutex_lock(&v->mu);
    if (v->queued < PX_VERIFY_QUEUE) {
        if (v->tail != NULL)
            v->tail->next = j;
        else
            v->head = j;
        v->tail = j;
        v->queued++;
        j = NULL;
        rc = 0;
        pthread_cond_signal(&v->cv);
    }
    pthread_mutex_unlock(&v->mu);
    if (rc != 0) {
        px_stats_inc(PX_ST_VERIFY_ERRORS);
        px_log_warn("route %s: %d token checks already waiting for %s: refusing with 503",
                    v->route->name, PX_VERIFY_QUEUE, v->url);
    }
    free(j);
    return rc;
}

struct px_verify *px_verify_new(struct event_base *base, const struct pol_route *route, char *err,
                                size_t errlen)
{
    struct px_verify *v = calloc(1, sizeof *v);

    if (v == NULL || route == NULL || route->verify == NULL) {
        snprintf(err, errlen, "verifier: %s", v == NULL ? "out of memory" : "no verify URL");
        goto fail;
    }
    v->efd = -1;
    v->route = route;
    v->iface.check = check;
    v->iface.impl = v;
    v->iface.live = route->require_live_lease;
    pthread_mutex_init(&v->mu, NULL);
    pthread_cond_init(&v->cv, NULL);
    v->url = strdup(route->verify);
    v->cache = fc_hmap_new(64);
    v->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (v->url == NULL || v->cache == NULL || v->efd < 0) {
        snprintf(err, errlen, "route %s: verifier: %s", route->name,
                 v->efd < 0 ? strerror(errno) : "out of memory");
        goto fail;
    }
    v->ev = event_new(base, v->efd, EV_READ | EV_PERSIST, notify_cb, v);
    if (v->ev == NULL || event_add(v->ev, NULL) != 0) {
        snprintf(err, errlen, "route %s: verifier: cannot add its event", route->name);
        goto fail;
    }
    for (; v->started < PX_VERIFY_WORKERS; v->started++) {
        if (pthread_create(&v->threads[v->started], NULL, worker_main, v) != 0) {
            snprintf(err, errlen, "route %s: verifier: cannot start its threads", route->name);
            goto fail;
        }
    }
    return v;
fail:
    px_verify_free(&v);
    return NULL;
}

void px_verify_free(struct px_verify **vp)
{
    struct px_verify *v;

    if (vp == NULL || *vp == NULL)
        return;
    v = *vp;
    *vp = NULL;
    if (v->started > 0) {
        pthread_mutex_lock(&v->mu);
        v->stop = 1;
        pthread_cond_broadcast(&v->cv);
        pthread_mutex_unlock(&v->mu);
        for (size_t i = 0; i < v->started; i++)
            pthread_join(v->threads[i], NULL);
    }
    free_list(v->head);
    free_list(v->done);
    if (v->ev != NULL)
        event_free(v->ev);
    if (v->efd >= 0)
        close(v->efd);
    cache_clear(v);
    fc_hmap_free(&v->cache);
    pthread_cond_destroy(&v->cv);
    pthread_mutex_destroy(&v->mu);
    free(v->url);
    free(v);
}

const struct px_fence_verifier *px_verify_fence(struct px_verify *v)
{
    return &v->iface;
}

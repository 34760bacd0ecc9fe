/* st_store: the generic half of the token store. It turns each public call
 * into a request record for the backend (ops table in st_store_internal.h)
 * and owns what every backend shares: the completion queue (a mutex-protected
 * list that backends append to from any thread), the notify fd (a
 * non-blocking eventfd that is readable while completions wait) and the
 * failed state. Callbacks run only from st_store_dispatch(), on the loop
 * thread, outside the lock, so a callback may submit new requests. */
#include "st_store.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "st_store_internal.h"

struct st_store {
    const struct st_store_ops *ops;
    void *impl;
    pthread_mutex_t mu;            /* guards head/tail/signalled/error */
    struct st_store_req *head, *tail;
    int signalled;                 /* the eventfd was written since the last take */
    int efd;
    atomic_int failed;
    char error[256];               /* written once, before failed is set */
    st_store_commit_hook hook;
    void *hook_arg;
    _Atomic uint64_t used, max;    /* fill level, set by the backend */
    atomic_int full;
    int warned;                    /* st_store_fill_crossed()'s latch; loop thread */
    char unreach[256];             /* why the backend's server is unreachable, or ""; mu */
    st_store_ask_fn ask;
    void *ask_arg;
    _Atomic int64_t fence_at;      /* ownership deadline (st_store_fence_at) */
    _Atomic uint64_t owner_gen;
};

void st_store_set_impl(struct st_store *s, void *impl)
{
    s->impl = impl;
}

void *st_store_impl(const struct st_store *s)
{
    return s->impl;
}

static struct st_store_req *req_new(enum st_req_kind kind, const char *key, size_t klen,
                                     st_store_cb cb, void *arg)
{
    struct st_store_req *r;

    if (klen > SIZE_MAX - sizeof *r - 1)
        abort();
    r = calloc(1, sizeof *r + klen + 1);
    if (r == NULL) {
        /* A request that can neither be served nor answered would leave its
         * client hanging; like most daemons we stop rather than limp on. */
        fputs("st_store: out of memory\n", stderr);
        abort();
    }
    r->kind = kind;
    r->cb = cb;
    r->arg = arg;
    r->klen = klen;
    if (klen > 0 && key != NULL)
        memcpy(r->key, key, klen);
    r->key[klen] = '\0';
    return r;
}

struct st_store_req *st_store_req_new(enum st_req_kind kind, const char *key, size_t klen)
{
    return req_new(kind, key, klen, NULL, NULL);
}

struct st_store_req *st_store_req_commit(size_t batch, double seconds)
{
    struct st_store_req *r = calloc(1, sizeof *r + 1);
    if (r == NULL)
        return NULL;
    r->kind = ST_REQ_COMMIT;
    r->batch = batch;
    r->seconds = seconds;
    return r;
}

void st_store_list_reset(struct st_store_req *r)
{
    struct st_store_list_res *l = r->list;

    for (size_t i = 0; i < l->n; i++) {
        free((char *)l->e[i].key);
        free((char *)l->e[i].hash);
    }
    l->n = 0;
    l->bytes = 0;
    l->truncated = 0;
    free(l->next);
    l->next = NULL;
    l->next_len = 0;
}

int st_store_list_add(struct st_store_req *r, const char *key, size_t klen, uint64_t highest,
                      const char *hash)
{
    struct st_store_list_res *l = r->list;
    struct st_store_entry *e;
    char *k = NULL, *h = NULL;

    if (l->n == l->cap) {
        size_t nc = l->cap != 0 ? l->cap * 2 : 64;
        struct st_store_entry *ne = realloc(l->e, nc * sizeof *ne);
        if (ne == NULL)
            return -1;
        l->e = ne;
        l->cap = nc;
    }
    k = malloc(klen + 1);
    h = hash != NULL ? strdup(hash) : NULL;
    if (k == NULL || (hash != NULL && h == NULL)) {
        free(k);
        free(h);
        return -1;
    }
    if (klen > 0)
        memcpy(k, key, klen);
    k[klen] = '\0';
    e = &l->e[l->n++];
    e->key = k;
    e->klen = klen;
    e->highest = highest;
    e->hash = h;
    l->bytes += klen;
    return 0;
}

int st_store_list_full(const struct st_store_req *r)
{
    return r->list->n >= r->list->limit || r->list->bytes >= ST_STORE_LIST_BYTES;
}

int st_store_list_more(struct st_store_req *r, const char *next, size_t len)
{
    struct st_store_list_res *l = r->list;
    char *c = malloc(len + 1);

    if (c == NULL)
        return -1;
    if (len > 0)
        memcpy(c, next, len);
    c[len] = '\0';
    free(l->next);
    l->next = c;
    l->next_len = len;
    l->truncated = 1;
    return 0;
}

static void req_free(struct st_store_req *r)
{
    if (r->list != NULL) {
        st_store_list_reset(r);
        free(r->list->e);
        free(r->list);
    }
    free(r);
}

static void free_list(struct st_store_req *r)
{
    while (r != NULL) {
        struct st_store_req *next = r->next;
        req_free(r);
        r = next;
    }
}

void st_store_complete_list(struct st_store *s, struct st_store_req *head)
{
    struct st_store_req *tail = head;
    int wake = 0;

    if (head == NULL)
        return;
    while (tail->next != NULL)
        tail = tail->next;
    pthread_mutex_lock(&s->mu);
    if (s->tail != NULL)
        s->tail->next = head;
    else
        s->head = head;
    s->tail = tail;
    if (!s->signalled) {
        s->signalled = 1;
        wake = 1;
    }
    pthread_mutex_unlock(&s->mu);
    if (wake) {
        uint64_t one = 1;
        /* EAGAIN means the counter is already non-zero: readable anyway. */
        ssize_t n = write(s->efd, &one, sizeof one);
        (void)n;
    }
}

void st_store_complete(struct st_store *s, struct st_store_req *req)
{
    req->next = NULL;
    st_store_complete_list(s, req);
}

void st_store_fail(struct st_store *s, const char *fmt, ...)
{
    va_list ap;

    pthread_mutex_lock(&s->mu);
    if (!atomic_load(&s->failed)) {
        va_start(ap, fmt);
        vsnprintf(s->error, sizeof s->error, fmt, ap);
        va_end(ap);
        atomic_store(&s->failed, 1);
    }
    pthread_mutex_unlock(&s->mu);
}

int st_store_failed(const struct st_store *s)
{
    return s != NULL && atomic_load(&((struct st_store *)s)->failed);
}

const char *st_store_error(const struct st_store *s)
{
    /* error is complete before failed is set (seq_cst store) and never
     * changes afterwards, so no lock is needed to read it. */
    return st_store_failed(s) ? s->error : NULL;
}

struct st_store *st_store_open(const struct st_store_config *cfg, char *err, size_t errlen)
{
    struct st_store *s = NULL;
    int mu_ok = 0;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (cfg == NULL) {
        snprintf(err, errlen, "store: no config");
        goto fail;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "store: out of memory");
        goto fail;
    }
    s->efd = -1;
    atomic_init(&s->failed, 0);
    atomic_init(&s->fence_at, INT64_MAX);
    atomic_init(&s->owner_gen, 0);
    switch (cfg->backend) {
    case ST_STORE_MEMORY: s->ops = &st_store_memory_ops; break;
    case ST_STORE_FILE: s->ops = &st_store_lmdb_ops; break;
    case ST_STORE_ETCD: s->ops = &st_store_etcd_ops; break;
    default:
        snprintf(err, errlen, "store: unknown backend");
        goto fail;
    }
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        snprintf(err, errlen, "store: mutex init failed");
        goto fail;
    }
    mu_ok = 1;
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->efd < 0) {
        snprintf(err, errlen, "store: eventfd: %s", strerror(errno));
        goto fail;
    }
    if (s->ops->open(s, cfg, err, errlen) != 0)
        goto fail;
    return s;
fail:
    if (s != NULL) {
        if (s->efd >= 0)
            close(s->efd);
        if (mu_ok)
            pthread_mutex_destroy(&s->mu);
        free(s);
    }
    return NULL;
}

void st_store_close(struct st_store **sp)
{
    struct st_store *s;

    if (sp == NULL || *sp == NULL)
        return;
    s = *sp;
    *sp = NULL;
    if (s->ops->close(s) != 0) {
        /* The backend could not stop in time and may still post into s:
         * leaving it allocated is the only safe choice. */
        return;
    }
    free_list(s->head);
    close(s->efd);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int st_store_notify_fd(const struct st_store *s)
{
    return s->efd;
}

void st_store_dispatch(struct st_store *s)
{
    struct st_store_req *list, *next;
    uint64_t cnt;

    /* Drain first, then take: a completion posted after the take writes the
     * fd again, so no wakeup is lost. */
    while (read(s->efd, &cnt, sizeof cnt) == (ssize_t)sizeof cnt)
        ;
    pthread_mutex_lock(&s->mu);
    list = s->head;
    s->head = s->tail = NULL;
    s->signalled = 0;
    pthread_mutex_unlock(&s->mu);
    for (; list != NULL; list = next) {
        next = list->next;
        if (list->kind == ST_REQ_COMMIT) {
            if (s->hook != NULL)
                s->hook(s->hook_arg, list->batch, list->seconds);
        } else if (list->kind == ST_REQ_ASK) {
            if (s->ask != NULL)
                s->ask(s->ask_arg, list->key, list->klen);
        } else if (list->kind == ST_REQ_LIST) {
            struct st_store_list_res *l = list->list;
            struct st_store_page pg = {.e = l->e,
                                       .n = l->n,
                                       .truncated = l->truncated,
                                       .next = l->next,
                                       .next_len = l->next_len};
            l->cb(list->arg, list->rc, list->rc == 0 ? &pg : NULL);
        } else if (list->cb != NULL) {
            list->cb(list->arg, list->rc, list->rc == 0 ? list->highest : 0);
        }
        req_free(list);
    }
}

void st_store_get(struct st_store *s, const char *key, size_t klen, st_store_cb cb,
                   void *arg)
{
    struct st_store_req *r = req_new(ST_REQ_GET, key, klen, cb, arg);

    /* Fail closed: after an I/O error no answer is trusted, reads included. */
    if (st_store_failed(s)) {
        r->rc = -1;
        st_store_complete(s, r);
        return;
    }
    s->ops->submit(s, r);
}

void st_store_advance(struct st_store *s, const char *key, size_t klen, uint64_t token,
                       st_store_cb cb, void *arg)
{
    struct st_store_req *r = req_new(ST_REQ_ADVANCE, key, klen, cb, arg);

    r->token = token;
    if (st_store_failed(s)) {
        r->rc = -1;
        st_store_complete(s, r);
        return;
    }
    s->ops->submit(s, r);
}

void st_store_set(struct st_store *s, const char *key, size_t klen, uint64_t token,
                  st_store_cb cb, void *arg)
{
    struct st_store_req *r = req_new(ST_REQ_SET, key, klen, cb, arg);

    r->token = token;
    if (st_store_failed(s)) {
        r->rc = -1;
        st_store_complete(s, r);
        return;
    }
    s->ops->submit(s, r);
}

void st_store_list(struct st_store *s, const char *prefix, size_t plen, const char *after,
                   size_t alen, size_t limit, st_store_list_cb cb, void *arg)
{
    struct st_store_req *r;
    struct st_store_list_res *l;

    if (alen > SIZE_MAX / 2 || plen > SIZE_MAX / 2)
        abort();
    /* The cursor rides behind the prefix in the same allocation. */
    r = req_new(ST_REQ_LIST, NULL, plen + 1 + alen, NULL, arg);
    l = calloc(1, sizeof *l);
    if (l == NULL) {
        fputs("st_store: out of memory\n", stderr);
        abort();
    }
    r->klen = plen;
    if (plen > 0)
        memcpy(r->key, prefix, plen);
    r->key[plen] = '\0';
    if (alen > 0)
        memcpy(r->key + plen + 1, after, alen);
    r->key[plen + 1 + alen] = '\0';
    l->cb = cb;
    l->after = r->key + plen + 1;
    l->alen = alen;
    l->limit = limit < 1 ? 1 : limit > ST_STORE_LIST_MAX ? ST_STORE_LIST_MAX : limit;
    r->list = l;
    if (st_store_failed(s)) {
        r->rc = -1;
        st_store_complete(s, r);
        return;
    }
    s->ops->submit(s, r);
}

void st_store_release(struct st_store *s, const char *key, size_t klen, st_store_cb cb,
                      void *arg)
{
    struct st_store_req *r = req_new(ST_REQ_RELEASE, key, klen, cb, arg);

    if (!s->ops->owns || st_store_failed(s)) {
        st_store_complete(s, r); /* nothing to give up (rc 0) */
        return;
    }
    s->ops->submit(s, r);
}

int st_store_shared(const struct st_store *s)
{
    return s->ops->owns;
}

void st_store_set_ask_hook(struct st_store *s, st_store_ask_fn fn, void *arg)
{
    s->ask = fn;
    s->ask_arg = arg;
}

void st_store_set_owner(struct st_store *s, int64_t fence_at, uint64_t gen)
{
    atomic_store(&s->owner_gen, gen);
    atomic_store(&s->fence_at, fence_at);
}

int64_t st_store_fence_at(const struct st_store *s)
{
    return atomic_load(&((struct st_store *)s)->fence_at);
}

uint64_t st_store_owner_gen(const struct st_store *s)
{
    return atomic_load(&((struct st_store *)s)->owner_gen);
}

void st_store_set_commit_hook(struct st_store *s, st_store_commit_hook hook, void *arg)
{
    s->hook = hook;
    s->hook_arg = arg;
}

void st_store_set_unreachable(struct st_store *s, const char *why)
{
    pthread_mutex_lock(&s->mu);
    snprintf(s->unreach, sizeof s->unreach, "%s", why != NULL ? why : "");
    pthread_mutex_unlock(&s->mu);
}

int st_store_unreachable(const struct st_store *s, char *buf, size_t len)
{
    struct st_store *m = (struct st_store *)s;
    int on;

    pthread_mutex_lock(&m->mu);
    on = m->unreach[0] != '\0';
    if (buf != NULL && len > 0)
        snprintf(buf, len, "%s", m->unreach);
    pthread_mutex_unlock(&m->mu);
    return on;
}

void st_store_set_fill(struct st_store *s, uint64_t used, uint64_t max, int full)
{
    atomic_store(&s->used, used);
    atomic_store(&s->max, max);
    atomic_store(&s->full, full);
}

void st_store_fill(const struct st_store *s, uint64_t *used, uint64_t *max)
{
    struct st_store *m = (struct st_store *)s;
    *used = atomic_load(&m->used);
    *max = atomic_load(&m->max);
}

int st_store_full(const struct st_store *s)
{
    return atomic_load(&((struct st_store *)s)->full);
}

int st_store_fill_crossed(struct st_store *s)
{
    uint64_t used, max;
    int above;

    st_store_fill(s, &used, &max);
    above = max > 0 && used >= max / 100 * ST_STORE_FILL_WARN_PCT;
    if (above == s->warned)
        return 0;
    s->warned = above;
    return above ? 1 : -1;
}

int st_store_check(const struct st_store_config *cfg, FILE *out)
{
    if (cfg == NULL || cfg->backend != ST_STORE_FILE) {
        fprintf(out, "store check: only the file backend has a store to check\n");
        return -1;
    }
    return st_store_lmdb_check(cfg, out);
}

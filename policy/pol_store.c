/* pol_store: the generic half of the token store. It turns each public call
 * into a request record for the backend (ops table in pol_store_internal.h)
 * and owns what every backend shares: the completion queue (a mutex-protected
 * list that backends append to from any thread), the notify fd (a
 * non-blocking eventfd that is readable while completions wait) and the
 * failed state. Callbacks run only from pol_store_dispatch(), on the loop
 * thread, outside the lock, so a callback may submit new requests. */
#include "pol_store.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "pol_store_internal.h"

struct pol_store {
    const struct pol_store_ops *ops;
    void *impl;
    pthread_mutex_t mu;            /* guards head/tail/signalled/error */
    struct pol_store_req *head, *tail;
    int signalled;                 /* the eventfd was written since the last take */
    int efd;
    atomic_int failed;
    char error[256];               /* written once, before failed is set */
    pol_store_commit_hook hook;
    void *hook_arg;
};

void pol_store_set_impl(struct pol_store *s, void *impl)
{
    s->impl = impl;
}

void *pol_store_impl(const struct pol_store *s)
{
    return s->impl;
}

static struct pol_store_req *req_new(enum pol_req_kind kind, const char *key, size_t klen,
                                     pol_store_cb cb, void *arg)
{
    struct pol_store_req *r;

    if (klen > SIZE_MAX - sizeof *r - 1)
        abort();
    r = calloc(1, sizeof *r + klen + 1);
    if (r == NULL) {
        /* A request that can neither be served nor answered would leave its
         * client hanging; like most daemons we stop rather than limp on. */
        fputs("pol_store: out of memory\n", stderr);
        abort();
    }
    r->kind = kind;
    r->cb = cb;
    r->arg = arg;
    r->klen = klen;
    if (klen > 0)
        memcpy(r->key, key, klen);
    r->key[klen] = '\0';
    return r;
}

struct pol_store_req *pol_store_req_commit(size_t batch, double seconds)
{
    struct pol_store_req *r = calloc(1, sizeof *r + 1);
    if (r == NULL)
        return NULL;
    r->kind = POL_REQ_COMMIT;
    r->batch = batch;
    r->seconds = seconds;
    return r;
}

static void free_list(struct pol_store_req *r)
{
    while (r != NULL) {
        struct pol_store_req *next = r->next;
        free(r);
        r = next;
    }
}

void pol_store_complete_list(struct pol_store *s, struct pol_store_req *head)
{
    struct pol_store_req *tail = head;
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

void pol_store_complete(struct pol_store *s, struct pol_store_req *req)
{
    req->next = NULL;
    pol_store_complete_list(s, req);
}

void pol_store_fail(struct pol_store *s, const char *fmt, ...)
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

int pol_store_failed(const struct pol_store *s)
{
    return s != NULL && atomic_load(&((struct pol_store *)s)->failed);
}

const char *pol_store_error(const struct pol_store *s)
{
    /* error is complete before failed is set (seq_cst store) and never
     * changes afterwards, so no lock is needed to read it. */
    return pol_store_failed(s) ? s->error : NULL;
}

struct pol_store *pol_store_open(const struct pol_store_config *cfg, char *err, size_t errlen)
{
    struct pol_store *s = NULL;
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
    switch (cfg->backend) {
    case POL_STORE_MEMORY: s->ops = &pol_store_memory_ops; break;
    case POL_STORE_FILE: s->ops = &pol_store_lmdb_ops; break;
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

void pol_store_close(struct pol_store **sp)
{
    struct pol_store *s;

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

int pol_store_notify_fd(const struct pol_store *s)
{
    return s->efd;
}

void pol_store_dispatch(struct pol_store *s)
{
    struct pol_store_req *list, *next;
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
        if (list->kind == POL_REQ_COMMIT) {
            if (s->hook != NULL)
                s->hook(s->hook_arg, list->batch, list->seconds);
        } else if (list->cb != NULL) {
            list->cb(list->arg, list->rc, list->rc == 0 ? list->highest : 0);
        }
        free(list);
    }
}

void pol_store_get(struct pol_store *s, const char *key, size_t klen, pol_store_cb cb,
                   void *arg)
{
    struct pol_store_req *r = req_new(POL_REQ_GET, key, klen, cb, arg);

    /* Fail closed: after an I/O error no answer is trusted, reads included. */
    if (pol_store_failed(s)) {
        r->rc = -1;
        pol_store_complete(s, r);
        return;
    }
    s->ops->submit(s, r);
}

void pol_store_advance(struct pol_store *s, const char *key, size_t klen, uint64_t token,
                       pol_store_cb cb, void *arg)
{
    struct pol_store_req *r = req_new(POL_REQ_ADVANCE, key, klen, cb, arg);

    r->token = token;
    if (pol_store_failed(s)) {
        r->rc = -1;
        pol_store_complete(s, r);
        return;
    }
    s->ops->submit(s, r);
}

void pol_store_set_commit_hook(struct pol_store *s, pol_store_commit_hook hook, void *arg)
{
    s->hook = hook;
    s->hook_arg = arg;
}

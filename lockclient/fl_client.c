/* fl_client: the backend-independent half of libfencelock. Picks the backend
 * ops table from the URL scheme, makes owner ids (OpenSSL RAND_bytes),
 * validates arguments, retries a call once on a fresh connection, turns the
 * caller's wait into a deadline for the backend, keeps lease expiries on
 * CLOCK_MONOTONIC, and runs the watchdog thread that renews a lease and
 * reports its loss. Also the patterns built on the seam: leader election
 * (a lock whose proposed owner carries the candidate id) and semaphores
 * (slot locks NAME#i); read-write locks go to the backend's shared ops.
 * Knows no backend commands and has no code per backend (see fl_backend.h). */
#include "fencelock.h"

#include <errno.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fl_backend.h"

struct fl_client {
    const struct fl_backend_ops *ops;
    struct fl_backend *b;
    char *url;
    uint64_t timeout_ms;
    char err[512];
};

static const struct fl_backend_ops *const backends[] = {&fl_redis_ops, &fl_etcd_ops,
                                                        &fl_etcds_ops, &fl_zk_ops, &fl_redlock_ops};
#define SCHEMES "redis://, etcd://, etcds://, zk://, redlock://"

int64_t fl_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *fl_strerror(int result)
{
    switch (result) {
    case FL_OK:
        return "ok";
    case FL_ERR_NOT_ACQUIRED:
        return "lock not acquired";
    case FL_ERR_NOT_OWNER:
        return "not the owner";
    case FL_ERR_BACKEND:
        return "backend unreachable or failed";
    case FL_ERR_INVALID:
        return "invalid argument";
    default:
        return "internal error";
    }
}

struct fl_client *fl_client_new(const char *url, char *err, size_t errlen)
{
    char dummy[8];
    struct fl_client *c = NULL;
    const char *colon;

    if (err == NULL) {
        err = dummy;
        errlen = sizeof dummy;
    }
    if (url == NULL || (colon = strstr(url, "://")) == NULL) {
        snprintf(err, errlen, "bad backend URL '%s' (want scheme://...)", url ? url : "");
        goto fail;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL || (c->url = strdup(url)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    c->timeout_ms = 2000;
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++) {
        size_t n = strlen(backends[i]->scheme);

        if ((size_t)(colon - url) == n && strncmp(url, backends[i]->scheme, n) == 0)
            c->ops = backends[i];
    }
    if (c->ops == NULL) {
        snprintf(err, errlen, "unsupported backend scheme in '%s' (supported: " SCHEMES ")",
                 url);
        goto fail;
    }
    c->b = c->ops->open(url, err, errlen);
    if (c->b == NULL)
        goto fail;
    return c;
fail:
    fl_client_free(&c);
    return NULL;
}

void fl_client_free(struct fl_client **cp)
{
    struct fl_client *c;

    if (cp == NULL || (c = *cp) == NULL)
        return;
    if (c->ops && c->b)
        c->ops->free(c->b);
    free(c->url);
    free(c);
    *cp = NULL;
}

void fl_client_set_timeout(struct fl_client *c, uint64_t timeout_ms)
{
    if (timeout_ms > 0)
        c->timeout_ms = timeout_ms;
}

const char *fl_client_error(const struct fl_client *c)
{
    return c->err;
}

const char *fl_client_address(const struct fl_client *c)
{
    return c->ops->address(c->b);
}

static int valid_name(struct fl_client *c, const char *name)
{
    if (name == NULL || name[0] == '\0' || strlen(name) > FL_NAME_MAX) {
        snprintf(c->err, sizeof c->err, "lock name must be 1..%d bytes", FL_NAME_MAX);
        return 0;
    }
    return 1;
}

static int valid_owner(struct fl_client *c, const char *owner)
{
    if (owner == NULL || owner[0] == '\0' || strlen(owner) > FL_OWNER_MAX) {
        snprintf(c->err, sizeof c->err, "owner id must be 1..%d bytes", FL_OWNER_MAX);
        return 0;
    }
    return 1;
}

/* Redis PX takes up to about 2^63 ms; keep far below so additions to the
 * monotonic clock cannot overflow. */
static int valid_ttl(struct fl_client *c, uint64_t ttl_ms)
{
    if (ttl_ms == 0 || ttl_ms > (UINT64_C(1) << 40)) {
        snprintf(c->err, sizeof c->err, "ttl must be between 1 ms and 2^40 ms");
        return 0;
    }
    return 1;
}

static int connected(struct fl_client *c)
{
    c->err[0] = '\0';
    return c->ops->connect(c->b, c->timeout_ms, c->err, sizeof c->err);
}

static int make_owner(char out[FL_OWNER_HEX_LEN + 1])
{
    unsigned char raw[FL_OWNER_HEX_LEN / 2];

    if (RAND_bytes(raw, (int)sizeof raw) != 1)
        return -1;
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return 0;
}

/* fl_acquire with the proposed owner "ID.<hex>" when id is not NULL (an
 * election candidate), else "<hex>". */
static int acquire_as(struct fl_client *c, const char *name, const char *id, int shared,
                      uint64_t ttl_ms, uint64_t wait_ms, struct fl_lease **out)
{
    char hex[FL_OWNER_HEX_LEN + 1];
    struct fl_lease *l = NULL;
    struct fl_grant g;
    int64_t deadline;
    int rc = FL_ERR_INVALID;

    *out = NULL;
    memset(&g, 0, sizeof g);
    if (!valid_name(c, name) || !valid_ttl(c, ttl_ms))
        goto out;
    if (shared && c->ops->acquire_shared == NULL) {
        snprintf(c->err, sizeof c->err, "the %s backend has no read-write locks",
                 c->ops->scheme);
        goto out;
    }
    rc = FL_ERR_INTERNAL;
    l = calloc(1, sizeof *l);
    if (l == NULL || (l->name = strdup(name)) == NULL) {
        snprintf(c->err, sizeof c->err, "out of memory");
        goto out;
    }
    if (make_owner(hex) < 0) {
        snprintf(c->err, sizeof c->err, "RAND_bytes failed: no owner id");
        goto out;
    }
    if (id)
        snprintf(l->owner, sizeof l->owner, "%s.%s", id, hex);
    else
        snprintf(l->owner, sizeof l->owner, "%s", hex);
    deadline = fl_now_ms() + (int64_t)(wait_ms > (UINT64_C(1) << 40) ? UINT64_C(1) << 40 : wait_ms);
    /* The wait happens inside the backend (a queue waits on a watch, Redis
     * on its release notification); see RETRY_ONCE for the second try. */
    for (int tries = 0; tries < 2; tries++) {
        if ((rc = connected(c)) != FL_OK)
            break;
        rc = (shared ? c->ops->acquire_shared : c->ops->acquire)(c->b, name, l->owner, ttl_ms,
                                                                deadline, &g, c->err,
                                                                sizeof c->err);
        if (rc != FL_ERR_BACKEND)
            break;
    }
    if (rc == FL_ERR_BACKEND) {
        /* Leave no queued entry behind if the backend is still reachable. */
        char ignored[64];

        c->ops->cancel(c->b, name, l->owner, ignored, sizeof ignored);
    }
    if (rc == FL_ERR_NOT_ACQUIRED) {
        /* The backend's reason (a holder, or no validity left) is kept. */
        char why[sizeof c->err];

        snprintf(why, sizeof why, "%s", c->err);
        snprintf(c->err, sizeof c->err, "not acquired within %llu ms: %.400s",
                 (unsigned long long)wait_ms, why[0] ? why : "lock is held");
    }
    if (rc != FL_OK)
        goto out;
    l->token = g.token;
    l->shared = shared;
    l->ttl_ms = g.ttl_ms;
    l->expiry_ms = g.expiry_ms;
    *out = l;
    l = NULL;
out:
    fl_lease_free(&l);
    return rc;
}

int fl_acquire(struct fl_client *c, const char *name, uint64_t ttl_ms, uint64_t wait_ms,
               struct fl_lease **out)
{
    return acquire_as(c, name, NULL, 0, ttl_ms, wait_ms, out);
}

int fl_acquire_shared(struct fl_client *c, const char *name, uint64_t ttl_ms, uint64_t wait_ms,
                      struct fl_lease **out)
{
    return acquire_as(c, name, NULL, 1, ttl_ms, wait_ms, out);
}

#define PERMIT_SLICE_MS 200

int fl_acquire_permit(struct fl_client *c, const char *name, unsigned permits, uint64_t ttl_ms,
                      uint64_t wait_ms, struct fl_lease **out, unsigned *slot)
{
    int64_t deadline;
    unsigned char r[2];
    unsigned start;
    char *slotname = NULL;
    int rc = FL_ERR_INVALID;

    *out = NULL;
    if (permits == 0 || permits > FL_PERMITS_MAX) {
        snprintf(c->err, sizeof c->err, "permits must be 1..%d", FL_PERMITS_MAX);
        goto out;
    }
    if (!valid_name(c, name) || strlen(name) + 5 > FL_NAME_MAX) {
        snprintf(c->err, sizeof c->err, "semaphore name must be 1..%d bytes", FL_NAME_MAX - 5);
        goto out;
    }
    rc = FL_ERR_INTERNAL;
    if ((slotname = malloc(strlen(name) + 8)) == NULL || RAND_bytes(r, 2) != 1) {
        snprintf(c->err, sizeof c->err, "out of memory or no randomness");
        goto out;
    }
    /* A random first slot spreads contenders over the slots. */
    start = (unsigned)(r[0] << 8 | r[1]) % permits;
    deadline = fl_now_ms() + (int64_t)(wait_ms > (UINT64_C(1) << 40) ? UINT64_C(1) << 40 : wait_ms);
    for (unsigned round = 0;; round++) {
        int64_t left;

        for (unsigned k = 0; k < permits; k++) {
            unsigned i = (start + k) % permits;

            sprintf(slotname, "%s#%u", name, i);
            rc = fl_acquire(c, slotname, ttl_ms, 0, out);
            if (rc == FL_OK) {
                *slot = i;
                goto out;
            }
            if (rc != FL_ERR_NOT_ACQUIRED)
                goto out;
        }
        left = deadline - fl_now_ms();
        if (left <= 0)
            break;
        /* Every slot is held: wait on one (woken by its release), a
         * different one each round. */
        {
            unsigned i = (start + round) % permits;

            sprintf(slotname, "%s#%u", name, i);
            rc = fl_acquire(c, slotname, ttl_ms,
                            (uint64_t)(left < PERMIT_SLICE_MS ? left : PERMIT_SLICE_MS), out);
            if (rc == FL_OK) {
                *slot = i;
                goto out;
            }
            if (rc != FL_ERR_NOT_ACQUIRED)
                goto out;
        }
    }
    snprintf(c->err, sizeof c->err, "no permit of '%s' (%u) within %llu ms", name, permits,
             (unsigned long long)wait_ms);
    rc = FL_ERR_NOT_ACQUIRED;
out:
    free(slotname);
    return rc;
}

/* Candidate ids are safe in every backend's owner id (a ZooKeeper node
 * name, a Redis value, an etcd value) and contain no '.', which separates
 * the id from the random part. */
static int valid_id(struct fl_client *c, const char *id)
{
    size_t n = id ? strlen(id) : 0;

    if (n == 0 || n > FL_ID_MAX ||
        strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:@-") != n) {
        snprintf(c->err, sizeof c->err, "candidate id must be 1..%d of [A-Za-z0-9_:@-]",
                 FL_ID_MAX);
        return 0;
    }
    return 1;
}

int fl_campaign(struct fl_client *c, const char *name, const char *id, uint64_t ttl_ms,
                uint64_t wait_ms, struct fl_lease **out)
{
    *out = NULL;
    if (!valid_id(c, id))
        return FL_ERR_INVALID;
    return acquire_as(c, name, id, 0, ttl_ms, wait_ms, out);
}

int fl_leader(struct fl_client *c, const char *name, char id[FL_ID_MAX + 1], uint64_t *epoch)
{
    struct fl_lock_status st;
    const char *dot;
    int rc;

    id[0] = '\0';
    *epoch = 0;
    rc = fl_status(c, name, &st);
    if (rc != FL_OK || !st.held)
        return rc;
    /* The label is "ID.<hex>" for a campaigner; a plain lock holder's has no
     * '.' and names no leader. On Redis the status token is the last issued,
     * which is the holder's while the lock is held. */
    dot = strrchr(st.label, '.');
    if (dot == NULL || dot == st.label || (size_t)(dot - st.label) > FL_ID_MAX)
        return FL_OK;
    snprintf(id, FL_ID_MAX + 1, "%.*s", (int)(dot - st.label), st.label);
    *epoch = st.token;
    return FL_OK;
}

/* RETRY_ONCE: an operation that fails with a backend error is tried once
 * more on a fresh connection. A connection left idle across a server restart
 * fails on first use although the server is back; the second try (reconnect
 * included) tells a restart from an outage. Operations are safe to repeat:
 * acquire recognises its own owner, renew is idempotent, status and verify
 * only read; a repeated release
 * can only answer NOT_OWNER if the server died after deleting the key and
 * before replying. */
#define RETRY_ONCE(c, call)                                                                        \
    do {                                                                                           \
        for (int tries_ = 0; tries_ < 2; tries_++) {                                               \
            if ((rc = connected(c)) != FL_OK)                                                      \
                break;                                                                             \
            rc = (call);                                                                           \
            if (rc != FL_ERR_BACKEND)                                                              \
                break;                                                                             \
        }                                                                                          \
    } while (0)

/* Renews and reports what was granted (NULL: not wanted). */
static int renew_grant(struct fl_client *c, const char *name, const char *owner, int shared,
                       uint64_t ttl_ms, struct fl_grant *g)
{
    struct fl_grant dummy;
    int rc;

    if (g == NULL)
        g = &dummy;
    memset(g, 0, sizeof *g);
    if (!valid_name(c, name) || !valid_owner(c, owner) || !valid_ttl(c, ttl_ms))
        return FL_ERR_INVALID;
    if (shared && c->ops->renew_shared == NULL)
        return FL_ERR_INVALID;
    RETRY_ONCE(c, (shared ? c->ops->renew_shared : c->ops->renew)(c->b, name, owner, ttl_ms, g,
                                                                  c->err, sizeof c->err));
    return rc;
}

int fl_renew_owner(struct fl_client *c, const char *name, const char *owner, uint64_t ttl_ms)
{
    return renew_grant(c, name, owner, 0, ttl_ms, NULL);
}

int fl_release_owner(struct fl_client *c, const char *name, const char *owner)
{
    int rc;

    if (!valid_name(c, name) || !valid_owner(c, owner))
        return FL_ERR_INVALID;
    RETRY_ONCE(c, c->ops->release(c->b, name, owner, c->err, sizeof c->err));
    return rc;
}

int fl_renew(struct fl_client *c, struct fl_lease *lease, uint64_t ttl_ms)
{
    struct fl_grant g;
    int rc;

    if (ttl_ms == 0)
        ttl_ms = lease->ttl_ms;
    rc = renew_grant(c, lease->name, lease->owner, lease->shared, ttl_ms, &g);
    if (rc == FL_OK) {
        lease->ttl_ms = g.ttl_ms;
        lease->expiry_ms = g.expiry_ms;
    }
    return rc;
}

int fl_release(struct fl_client *c, const struct fl_lease *lease)
{
    int rc;

    if (!lease->shared)
        return fl_release_owner(c, lease->name, lease->owner);
    if (c->ops->release_shared == NULL)
        return FL_ERR_INVALID;
    RETRY_ONCE(c, c->ops->release_shared(c->b, lease->name, lease->owner, c->err, sizeof c->err));
    return rc;
}

int fl_status(struct fl_client *c, const char *name, struct fl_lock_status *st)
{
    int rc;

    memset(st, 0, sizeof *st);
    if (!valid_name(c, name))
        return FL_ERR_INVALID;
    RETRY_ONCE(c, c->ops->status(c->b, name, st, c->err, sizeof c->err));
    return rc;
}

int fl_verify(struct fl_client *c, const char *name, uint64_t token, int *current)
{
    int rc;

    *current = 0;
    if (!valid_name(c, name))
        return FL_ERR_INVALID;
    RETRY_ONCE(c, c->ops->verify(c->b, name, token, current, c->err, sizeof c->err));
    return rc;
}

void fl_lease_free(struct fl_lease **lp)
{
    if (lp == NULL || *lp == NULL)
        return;
    free((*lp)->name);
    free(*lp);
    *lp = NULL;
}

/* ---- watchdog ---- */

struct fl_watchdog {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC */
    int stop;          /* under mu */
    int64_t expiry_ms; /* under mu */
    uint64_t ttl_ms;
    atomic_int lost;     /* enum fl_loss, 0 while held */
    struct fl_client *c; /* the thread's own connection */
    char *name;
    char owner[FL_OWNER_MAX + 1];
    int shared; /* a read-write lock's shared hold */
    fl_lost_fn cb;
    void *arg;
};

static void wd_lost(struct fl_watchdog *w, enum fl_loss why)
{
    int expected = 0;

    if (atomic_compare_exchange_strong(&w->lost, &expected, (int)why) && w->cb)
        w->cb(w->name, why, w->arg);
}

static void *wd_main(void *arg)
{
    struct fl_watchdog *w = arg;
    uint64_t third = w->ttl_ms / 3, retry = w->ttl_ms / 10;
    int64_t next;

    if (retry > 200)
        retry = 200;
    if (retry < 5)
        retry = 5;
    pthread_mutex_lock(&w->mu);
    next = w->expiry_ms - (int64_t)w->ttl_ms + (int64_t)third;
    while (!w->stop) {
        int64_t now = fl_now_ms(), wake;
        struct fl_grant g;
        int rc;

        /* Checked first, before any renewal: after SIGSTOP/SIGCONT past the
         * TTL the clock alone proves the lease is gone. */
        if (now >= w->expiry_ms) {
            pthread_mutex_unlock(&w->mu);
            wd_lost(w, FL_LOST_EXPIRED);
            pthread_mutex_lock(&w->mu);
            break;
        }
        if (now < next) {
            struct timespec ts;

            wake = next < w->expiry_ms ? next : w->expiry_ms;
            ts.tv_sec = (time_t)(wake / 1000);
            ts.tv_nsec = (long)(wake % 1000) * 1000000L;
            pthread_cond_timedwait(&w->cv, &w->mu, &ts);
            continue;
        }
        pthread_mutex_unlock(&w->mu);
        rc = renew_grant(w->c, w->name, w->owner, w->shared, w->ttl_ms, &g);
        pthread_mutex_lock(&w->mu);
        if (rc == FL_OK) {
            /* The grant's expiry was taken before the request was sent. */
            w->expiry_ms = g.expiry_ms;
            w->ttl_ms = g.ttl_ms;
            third = g.ttl_ms / 3;
            next = g.expiry_ms - (int64_t)g.ttl_ms + (int64_t)third;
        } else if (rc == FL_ERR_NOT_OWNER || rc == FL_ERR_INVALID) {
            pthread_mutex_unlock(&w->mu);
            wd_lost(w, FL_LOST_NOT_OWNER);
            pthread_mutex_lock(&w->mu);
            break;
        } else {
            next = fl_now_ms() + (int64_t)retry; /* backend trouble: retry until expiry */
        }
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

struct fl_watchdog *fl_watchdog_start(struct fl_client *c, const struct fl_lease *lease,
                                      fl_lost_fn lost, void *arg)
{
    struct fl_watchdog *w = NULL;
    pthread_condattr_t ca;
    sigset_t all, old;
    int have_mu = 0, have_cv = 0;
    uint64_t tmo;

    w = calloc(1, sizeof *w);
    if (w == NULL || (w->name = strdup(lease->name)) == NULL)
        goto fail;
    snprintf(w->owner, sizeof w->owner, "%s", lease->owner);
    w->shared = lease->shared;
    w->ttl_ms = lease->ttl_ms;
    w->expiry_ms = lease->expiry_ms;
    w->cb = lost;
    w->arg = arg;
    atomic_init(&w->lost, 0);
    w->c = fl_client_new(c->url, NULL, 0);
    if (w->c == NULL)
        goto fail;
    /* A renewal must not block past the point where a retry could still save
     * the lease. */
    tmo = lease->ttl_ms / 4;
    if (tmo < 50)
        tmo = 50;
    if (tmo > c->timeout_ms)
        tmo = c->timeout_ms;
    fl_client_set_timeout(w->c, tmo);
    if (pthread_mutex_init(&w->mu, NULL) != 0)
        goto fail;
    have_mu = 1;
    if (pthread_condattr_init(&ca) != 0)
        goto fail;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    have_cv = pthread_cond_init(&w->cv, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!have_cv)
        goto fail;
    /* The thread inherits this mask: signals (SIGPIPE from a dead socket
     * included) go to the application's threads, never to ours. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    if (pthread_create(&w->thread, NULL, wd_main, w) != 0) {
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        goto fail;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return w;
fail:
    if (w) {
        if (have_cv)
            pthread_cond_destroy(&w->cv);
        if (have_mu)
            pthread_mutex_destroy(&w->mu);
        fl_client_free(&w->c);
        free(w->name);
        free(w);
    }
    return NULL;
}

int fl_watchdog_lost(struct fl_watchdog *w)
{
    int64_t expiry;
    int l = atomic_load(&w->lost);

    if (l != 0)
        return l;
    pthread_mutex_lock(&w->mu);
    expiry = w->expiry_ms;
    pthread_mutex_unlock(&w->mu);
    return fl_now_ms() >= expiry ? FL_LOST_EXPIRED : 0;
}

void fl_watchdog_stop(struct fl_watchdog **wp, struct fl_lease *lease)
{
    struct fl_watchdog *w;

    if (wp == NULL || (w = *wp) == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    if (lease) {
        lease->expiry_ms = w->expiry_ms;
        lease->ttl_ms = w->ttl_ms;
    }
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    fl_client_free(&w->c);
    free(w->name);
    free(w);
    *wp = NULL;
}

/* px_fence: see px_fence.h. Owns the resource table (an fc_hmap of
 * struct px_fence_res; beyond PX_FENCE_MAX_RESOURCES the least recently used
 * idle entries are dropped, their highest being durable in the store) and
 * the queues of waiting tickets. The invariants it enforces are named in docs/safety.md:
 * S1 (a token below the highest admitted is refused), S2 (an advance is
 * durable before a request carrying it is forwarded) and S3 (requests with
 * two different tokens are never in flight to the upstream for one resource). */
#include "px_fence.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fc_hmap.h"
#include "st_store.h"

enum ticket_state { T_NONE = 0, T_LOADING, T_WAITING, T_ACTIVE, T_VERIFYING, T_HELD };

TAILQ_HEAD(ticket_list, px_fence_ticket);

/* One check under way with the lock backend for a token of a resource;
 * every ticket with that token in the resource's verifying list waits for
 * it (concurrent advances to one token share one check). Freed by its
 * verdict, or by px_fence_free(). */
struct vjob {
    struct px_fence_res *res;
    uint64_t token;
    TAILQ_ENTRY(vjob) link;  /* in the fence's list */
};

/* The operator's reset of one resource, waiting for what was admitted
 * before it to drain, then for the store. */
struct set_op {
    uint64_t token;
    uint64_t old;
    int submitted;
    px_fence_set_cb cb;
    void *arg;
};

struct px_fence_res {
    struct fc_hmap_node node;  /* in the fence's table */
    struct px_fence *fence;
    int loaded;                 /* highest/durable are known */
    int reading;                /* a store read is under way */
    uint64_t highest;           /* highest admitted (S1 compares with it) */
    uint64_t durable;           /* highest the store acknowledged (S2) */
    uint64_t active_token;      /* token of the requests in flight */
    size_t active;              /* how many are in flight (S3) */
    struct ticket_list loading; /* admitted before the store answered */
    struct ticket_list waiting; /* admitted, waiting for S2/S3 */
    struct ticket_list inflight; /* in flight (GO, not done) */
    struct ticket_list verifying; /* waiting for the lock backend's verdict */
    struct ticket_list held;    /* admitted while a set was pending */
    struct set_op *set;         /* an operator reset under way, or NULL */
    uint64_t gen;               /* the store's ownership generation when loaded */
    int releasing;              /* ownership being given up: 1 draining, 2 submitted */
    int64_t used_ms;            /* last admission (idle release) */
    unsigned pending;           /* store calls whose callback has not run */
    int in_idle;                /* on the fence's idle list */
    TAILQ_ENTRY(px_fence_res) idle_link;
    size_t klen;
    char key[];
};

struct px_fence {
    struct st_store *store;
    struct fc_hmap *table;           /* key -> struct px_fence_res */
    size_t inflight;
    size_t max_res;                  /* cached resources before idle ones go */
    TAILQ_HEAD(, px_fence_res) idle; /* evictable, least recently used first */
    TAILQ_HEAD(, vjob) vjobs;        /* checks under way */
    int64_t own_idle_ms;             /* release an owned idle resource after; 0 never */
    uint64_t swept_gen;              /* the ownership generation of the last sweep */
};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_ask(void *arg, const char *key, size_t klen);

struct px_fence *px_fence_new(struct st_store *store)
{
    struct px_fence *f = calloc(1, sizeof(*f));

    if (f == NULL)
        goto fail;
    f->store = store;
    f->max_res = PX_FENCE_MAX_RESOURCES;
    TAILQ_INIT(&f->idle);
    TAILQ_INIT(&f->vjobs);
    f->table = fc_hmap_new(1024);
    if (f->table == NULL)
        goto fail;
    st_store_set_ask_hook(store, on_ask, f);
    return f;
fail:
    px_fence_free(f);
    return NULL;
}

void px_fence_free(struct px_fence *f)
{
    if (f == NULL)
        return;
    for (struct vjob *j; (j = TAILQ_FIRST(&f->vjobs)) != NULL;) {
        TAILQ_REMOVE(&f->vjobs, j, link);
        free(j);
    }
    if (f->store != NULL)
        st_store_set_ask_hook(f->store, NULL, NULL);
    for (struct fc_hmap_node *n; f->table != NULL && (n = fc_hmap_pop(f->table)) != NULL;) {
        struct px_fence_res *r = FC_HMAP_ENTRY(n, struct px_fence_res, node);
        /* A clean stop: what has nothing in flight is given up cleanly (its
         * next owner need not wait the lock-delay); the rest goes with the
         * lease when the store closes. */
        if (f->store != NULL && r->loaded && r->active == 0)
            st_store_release(f->store, r->key, r->klen, NULL, NULL);
        free(r->set);
        free(r);
    }
    fc_hmap_free(&f->table);
    free(f);
}

static struct px_fence_res *res_find(const struct px_fence *f, const char *key, size_t klen)
{
    struct fc_hmap_node *n = fc_hmap_find(f->table, key, klen);

    return n != NULL ? FC_HMAP_ENTRY(n, struct px_fence_res, node) : NULL;
}

static void on_loaded(void *arg, int rc, uint64_t highest);
static void on_advanced(void *arg, int rc, uint64_t highest);

static struct px_fence_res *res_get(struct px_fence *f, const char *key, size_t klen)
{
    struct px_fence_res *r = res_find(f, key, klen);

    if (r != NULL)
        return r;
    r = calloc(1, sizeof(*r) + klen + 1);
    if (r == NULL)
        return NULL;
    r->fence = f;
    r->klen = klen;
    memcpy(r->key, key, klen);
    TAILQ_INIT(&r->loading);
    TAILQ_INIT(&r->waiting);
    TAILQ_INIT(&r->inflight);
    TAILQ_INIT(&r->verifying);
    TAILQ_INIT(&r->held);
    fc_hmap_insert(f->table, &r->node, r->key, klen);
    return r;
}

/* Whether r holds nothing but its (durable) highest: no ticket, no request
 * in flight, no store call outstanding. Such an entry can be dropped from
 * the cache and loaded again later from the store, which has that highest. */
static int res_idle(const struct px_fence_res *r)
{
    return r->loaded && !r->reading && !r->releasing && r->pending == 0 && r->active == 0 &&
           r->durable == r->highest && TAILQ_EMPTY(&r->loading) && TAILQ_EMPTY(&r->waiting) &&
           TAILQ_EMPTY(&r->verifying) && TAILQ_EMPTY(&r->held) && r->set == NULL;
}

static void try_set(struct px_fence_res *r);
static void try_release(struct px_fence_res *r);

/* Keeps r's place on the idle list right after any change to r, then drops
 * the least recently used idle entries while the cache is over its size.
 * r itself may be freed: callers do not touch it afterwards. */
static void res_touch(struct px_fence_res *r)
{
    struct px_fence *f = r->fence;
    struct px_fence_res *old;

    if (r->set != NULL)
        try_set(r);
    else if (r->releasing == 1)
        try_release(r);
    if (r->in_idle) {
        TAILQ_REMOVE(&f->idle, r, idle_link);
        r->in_idle = 0;
    }
    if (res_idle(r)) {
        TAILQ_INSERT_TAIL(&f->idle, r, idle_link);
        r->in_idle = 1;
    }
    while (fc_hmap_count(f->table) > f->max_res && (old = TAILQ_FIRST(&f->idle)) != NULL) {
        TAILQ_REMOVE(&f->idle, old, idle_link);
        fc_hmap_remove(f->table, &old->node);
        /* Nothing of it is in flight: its ownership goes cleanly. */
        st_store_release(f->store, old->key, old->klen, NULL, NULL);
        free(old);
    }
}

/* Decides a ticket out of band: records the result and tells its owner. */
static void ticket_finish(struct px_fence_ticket *t, enum px_fence_result res)
{
    t->result = res;
    if (res == PX_FENCE_GO) {
        t->state = T_ACTIVE;
        TAILQ_INSERT_TAIL(&t->res->inflight, t, link);
        t->res->fence->inflight++;
    } else {
        t->state = T_NONE;
        t->res = NULL;
    }
    t->cb(t, t->arg);
}

/* Whether a ticket with token may be forwarded now: its token is the
 * highest admitted (S1), durable (S2), and nothing with another token is in
 * flight (S3). */
static int may_go(const struct px_fence_res *r, uint64_t token)
{
    return token == r->highest && r->durable >= token &&
           (r->active == 0 || r->active_token == token);
}

/* Lets through every waiting ticket that may go, and refuses those that a
 * higher token overtook while they waited (they never reached the upstream). */
static void release_waiting(struct px_fence_res *r)
{
    struct px_fence_ticket *t, *next;

    for (t = TAILQ_FIRST(&r->waiting); t != NULL; t = next) {
        next = TAILQ_NEXT(t, link);
        if (t->token < r->highest) {
            TAILQ_REMOVE(&r->waiting, t, link);
            t->highest = r->highest;
            ticket_finish(t, PX_FENCE_STALE);
        } else if (may_go(r, t->token)) {
            TAILQ_REMOVE(&r->waiting, t, link);
            r->active_token = t->token;
            r->active++;
            ticket_finish(t, PX_FENCE_GO);
        }
    }
}

/* S3 with preemption: a higher token was admitted while requests with a
 * lower one are in flight. Their owners are told; each aborts its request
 * if the upstream has not received all of it and ends its ticket, so that a
 * stale holder's slow upload cannot hold the next holder back. The owners
 * only schedule work here, so the list does not change under us. */
static void preempt_active(struct px_fence_res *r)
{
    struct px_fence_ticket *t;

    TAILQ_FOREACH(t, &r->inflight, link)
    {
        if (t->token < r->highest && t->preempt != NULL)
            t->preempt(t, t->arg);
    }
}

static enum px_fence_result admit_loaded(struct px_fence_res *r, struct px_fence_ticket *t);

/* Admits every ticket of list (taken off it first) again, in order, as
 * on_loaded does: GO and decided ones are told, the others wait. */
static void readmit(struct px_fence_res *r, struct ticket_list *list)
{
    struct ticket_list todo = TAILQ_HEAD_INITIALIZER(todo);
    struct px_fence_ticket *t;

    TAILQ_CONCAT(&todo, list, link);
    while ((t = TAILQ_FIRST(&todo)) != NULL) {
        enum px_fence_result res;
        TAILQ_REMOVE(&todo, t, link);
        t->state = T_NONE;
        res = admit_loaded(r, t);
        if (res == PX_FENCE_GO) {
            t->result = res; /* admit_loaded counted it in flight */
            t->cb(t, t->arg);
        } else if (res != PX_FENCE_WAIT) {
            ticket_finish(t, res);
        }
    }
}

/* The backend's verdict on job's token: the tickets with it that still
 * wait are admitted (HELD, as verified), refused (NOT_HELD) or failed
 * (UNREACHABLE). */
static void on_verdict(void *arg, enum px_verdict v)
{
    struct vjob *j = arg;
    struct px_fence_res *r = j->res;
    struct ticket_list mine = TAILQ_HEAD_INITIALIZER(mine);
    struct px_fence_ticket *t, *next;

    TAILQ_REMOVE(&r->fence->vjobs, j, link);
    r->pending--;
    for (t = TAILQ_FIRST(&r->verifying); t != NULL; t = next) {
        next = TAILQ_NEXT(t, link);
        if (t->token == j->token) {
            TAILQ_REMOVE(&r->verifying, t, link);
            TAILQ_INSERT_TAIL(&mine, t, link);
        }
    }
    free(j);
    if (v == PX_VERDICT_HELD) {
        TAILQ_FOREACH(t, &mine, link)
            t->verified = 1;
        readmit(r, &mine);
    } else {
        while ((t = TAILQ_FIRST(&mine)) != NULL) {
            TAILQ_REMOVE(&mine, t, link);
            t->unreachable = v == PX_VERDICT_UNREACHABLE;
            ticket_finish(t, v == PX_VERDICT_NOT_HELD ? PX_FENCE_UNVERIFIED : PX_FENCE_FAILED);
        }
    }
    res_touch(r);
}

/* Asks t's verifier about t's token, or joins the check already under way
 * for that token on r. Returns WAIT (t queued), FAILED (cannot ask), or
 * what admission gives when the verifier knows at once. */
static enum px_fence_result verify(struct px_fence_res *r, struct px_fence_ticket *t)
{
    struct px_fence *f = r->fence;
    struct vjob *j;
    int rc;

    TAILQ_FOREACH(j, &f->vjobs, link)
    {
        if (j->res == r && j->token == t->token)
            goto queue;
    }
    j = calloc(1, sizeof(*j));
    if (j == NULL)
        return PX_FENCE_FAILED;
    j->res = r;
    j->token = t->token;
    rc = t->verifier->check(t->verifier->impl, r->key, r->klen, t->token, on_verdict, j);
    if (rc != 0) {
        free(j);
        if (rc > 0) {
            t->verified = 1;
            return admit_loaded(r, t);
        }
        t->unreachable = 1;
        return PX_FENCE_FAILED;
    }
    TAILQ_INSERT_TAIL(&f->vjobs, j, link);
    r->pending++;
queue:
    t->state = T_VERIFYING;
    TAILQ_INSERT_TAIL(&r->verifying, t, link);
    return PX_FENCE_WAIT;
}

/* Admission once the resource is loaded. Returns GO/STALE/FAILED/UNVERIFIED
 * decided at once, or WAIT with t queued. */
static enum px_fence_result admit_loaded(struct px_fence_res *r, struct px_fence_ticket *t)
{
    struct px_fence *f = r->fence;

    if (st_store_failed(f->store))
        return PX_FENCE_FAILED;
    if (r->releasing || !r->loaded) {
        /* Ownership is being given up: taken again once it is. */
        t->state = T_LOADING;
        TAILQ_INSERT_TAIL(&r->loading, t, link);
        return PX_FENCE_WAIT;
    }
    if (t->token < r->highest) { /* S1 */
        t->highest = r->highest;
        return PX_FENCE_STALE;
    }
    if (t->verifier != NULL && !t->verified && (t->token > r->highest || t->verifier->live))
        return verify(r, t); /* S2: nothing is raised before the backend says HELD */
    if (TAILQ_EMPTY(&r->waiting) && may_go(r, t->token)) {
        r->active_token = t->token;
        r->active++;
        t->state = T_ACTIVE;
        TAILQ_INSERT_TAIL(&r->inflight, t, link);
        f->inflight++;
        return PX_FENCE_GO;
    }
    if (t->token > r->highest ||
        (t->token == r->highest && r->durable < t->token && r->pending == 0)) {
        /* S1: from here on lower tokens are refused; S2: the request waits
         * for the store to acknowledge the advance (again, when an earlier
         * advance of this token got no answer from the store). */
        r->highest = t->token;
        r->pending++;
        st_store_advance(f->store, r->key, r->klen, t->token, on_advanced, r);
        release_waiting(r); /* queued lower tokens are stale now */
        preempt_active(r);  /* and the stale ones in flight are told */
    }
    /* t cannot go yet (not durable, or another token in flight), so queuing
     * it after release_waiting() never calls back before we return. */
    t->state = T_WAITING;
    TAILQ_INSERT_TAIL(&r->waiting, t, link);
    return PX_FENCE_WAIT;
}

static void on_loaded(void *arg, int rc, uint64_t highest)
{
    struct px_fence_res *r = arg;
    struct px_fence_ticket *t;

    r->pending--;
    if (rc != 0) {
        /* Not loaded: refuse what waited, and a reset waiting for the load. */
        while ((t = TAILQ_FIRST(&r->loading)) != NULL) {
            TAILQ_REMOVE(&r->loading, t, link);
            t->busy = rc == ST_STORE_EBUSY; /* owned by another proxy */
            ticket_finish(t, PX_FENCE_FAILED);
        }
        if (r->set != NULL && !r->set->submitted) {
            struct set_op *op = r->set;
            r->set = NULL;
            op->cb(op->arg, -1, 0, 0);
            free(op);
            while ((t = TAILQ_FIRST(&r->held)) != NULL) {
                TAILQ_REMOVE(&r->held, t, link);
                ticket_finish(t, PX_FENCE_FAILED);
            }
        }
        r->reading = 0; /* the next request retries the read */
        res_touch(r);
        return;
    }
    r->reading = 0;
    r->loaded = 1;
    r->gen = st_store_owner_gen(r->fence->store);
    r->highest = highest > r->highest ? highest : r->highest;
    r->durable = highest;
    readmit(r, &r->loading);
    res_touch(r);
}

/* Ownership of r is gone (deposed, or the lease lapsed): what is in flight
 * is aborted whatever it sent (another proxy may own r now), and r is taken
 * again before anything more is admitted. */
static void lost(struct px_fence_res *r)
{
    struct px_fence_ticket *t;

    TAILQ_FOREACH(t, &r->inflight, link)
    {
        if (!t->lapsed && t->preempt != NULL) {
            t->lapsed = 1;
            t->preempt(t, t->arg);
        }
    }
    r->loaded = 0;
    TAILQ_CONCAT(&r->loading, &r->waiting, link);
    TAILQ_FOREACH(t, &r->loading, link)
        t->state = T_LOADING;
    if (!TAILQ_EMPTY(&r->loading) && !r->reading && !r->releasing) {
        /* What waited is admitted again once r is taken back. */
        r->reading = 1;
        r->pending++;
        st_store_get(r->fence->store, r->key, r->klen, on_loaded, r);
    }
}

static void on_advanced(void *arg, int rc, uint64_t highest)
{
    struct px_fence_res *r = arg;
    struct px_fence_ticket *t, *next;

    r->pending--;
    if (rc != 0) {
        /* Fail closed: nothing above the durable highest goes through. */
        for (t = TAILQ_FIRST(&r->waiting); t != NULL; t = next) {
            next = TAILQ_NEXT(t, link);
            if (t->token > r->durable) {
                TAILQ_REMOVE(&r->waiting, t, link);
                t->full = rc == ST_STORE_EFULL;
                t->lost = rc == ST_STORE_ELOST;
                ticket_finish(t, PX_FENCE_FAILED);
            }
        }
        /* A full store refused a new resource's advance and has not failed:
         * nothing above the durable highest went through, so the next
         * request may try again (S1 holds against the durable highest).
         * An unreachable store (ST_STORE_EUNAVAIL) is different: the
         * advance may have landed, so the highest stays raised (S1) and the
         * next request with that token asks the store again (admit_loaded). */
        if (rc == ST_STORE_EFULL && r->pending == 0)
            r->highest = r->durable;
        if (rc == ST_STORE_ELOST)
            lost(r);
        res_touch(r);
        return;
    }
    if (highest > r->durable)
        r->durable = highest;
    if (highest > r->highest)
        r->highest = highest; /* raised elsewhere: what waits below it is stale (S1) */
    release_waiting(r);
    res_touch(r);
}

enum px_fence_result px_fence_admit(struct px_fence *f, const char *key, size_t klen,
                                    uint64_t token, struct px_fence_ticket *t, px_fence_cb cb,
                                    void *arg)
{
    return px_fence_admit_verified(f, key, klen, token, NULL, t, cb, arg);
}

/* Whether the self-fencing deadline has passed at now (monotonic ms). */
static int lapsed_at(const struct px_fence *f, int64_t now)
{
    return now >= st_store_fence_at(f->store);
}

enum px_fence_result px_fence_admit_verified(struct px_fence *f, const char *key, size_t klen,
                                             uint64_t token, const struct px_fence_verifier *v,
                                             struct px_fence_ticket *t, px_fence_cb cb,
                                             void *arg)
{
    struct px_fence_res *r;
    int64_t now;

    memset(t, 0, sizeof(*t));
    t->token = token;
    t->cb = cb;
    t->arg = arg;
    t->verifier = v;
    now = now_ms(); /* one clock read per admission */
    if (st_store_failed(f->store) || lapsed_at(f, now))
        return PX_FENCE_FAILED; /* self-fenced: the lease may have lapsed */
    r = res_get(f, key, klen);
    if (r == NULL)
        return PX_FENCE_FAILED;
    t->res = r;
    r->used_ms = now;
    if (r->loaded && r->gen != st_store_owner_gen(f->store) && r->pending == 0)
        lost(r); /* every ownership was lost since it was loaded */
    if (r->set != NULL) {
        /* S3 for the operator's reset: decided against the new highest. */
        t->state = T_HELD;
        TAILQ_INSERT_TAIL(&r->held, t, link);
        res_touch(r);
        return PX_FENCE_WAIT;
    }
    if (!r->loaded || r->releasing) {
        t->state = T_LOADING;
        TAILQ_INSERT_TAIL(&r->loading, t, link);
        if (!r->reading && !r->releasing) {
            r->reading = 1;
            r->pending++;
            st_store_get(f->store, r->key, r->klen, on_loaded, r);
        }
        res_touch(r);
        return PX_FENCE_WAIT;
    }
    {
        enum px_fence_result res = admit_loaded(r, t);
        if (res == PX_FENCE_STALE || res == PX_FENCE_FAILED || res == PX_FENCE_UNVERIFIED)
            t->res = NULL;
        res_touch(r); /* every change of r ends here: an idle entry may go */
        return res;
    }
}

void px_fence_done(struct px_fence *f, struct px_fence_ticket *t)
{
    struct px_fence_res *r = t->res;

    if (r == NULL)
        return;
    switch (t->state) {
    case T_LOADING:
        TAILQ_REMOVE(&r->loading, t, link);
        break;
    case T_WAITING:
        TAILQ_REMOVE(&r->waiting, t, link);
        break;
    case T_VERIFYING:
        TAILQ_REMOVE(&r->verifying, t, link); /* its check still counts as pending */
        break;
    case T_HELD:
        TAILQ_REMOVE(&r->held, t, link);
        break;
    case T_ACTIVE:
        TAILQ_REMOVE(&r->inflight, t, link);
        r->active--;
        f->inflight--;
        break;
    default:
        break;
    }
    t->state = T_NONE;
    t->res = NULL;
    if (r->loaded)
        release_waiting(r); /* S3: the last lower-token request has ended */
    res_touch(r);
}

void px_fence_on_preempt(struct px_fence_ticket *t, px_fence_cb cb)
{
    t->preempt = cb;
}

void px_fence_set_max_resources(struct px_fence *f, size_t n)
{
    f->max_res = n > 0 ? n : 1;
}

int px_fence_peek(const struct px_fence *f, const char *key, size_t klen, uint64_t *highest)
{
    const struct px_fence_res *r = res_find(f, key, klen);

    if (r == NULL || !r->loaded)
        return -1;
    *highest = r->highest;
    return 0;
}

size_t px_fence_inflight(const struct px_fence *f)
{
    return f->inflight;
}

/* ---- the operator's reset ---------------------------------------------- */

static void on_set(void *arg, int rc, uint64_t highest)
{
    struct px_fence_res *r = arg;
    struct set_op *op = r->set;

    r->pending--;
    r->set = NULL;
    if (rc == 0) {
        /* S1 from now on against the new value; nothing admitted under the
         * old one is left (try_set waited for them). */
        r->highest = highest;
        r->durable = highest;
    }
    op->cb(op->arg, rc, op->old, rc == 0 ? highest : 0);
    free(op);
    readmit(r, &r->held);
    res_touch(r);
}

/* Applies r's pending set once everything admitted before it has drained:
 * nothing in flight, waiting, loading or being verified, no store call
 * outstanding. Loads the resource first when it is not cached. */
static void try_set(struct px_fence_res *r)
{
    struct px_fence *f = r->fence;
    struct set_op *op = r->set;

    if (op->submitted || r->releasing)
        return;
    if (!r->loaded) {
        if (!r->reading) {
            r->reading = 1;
            r->pending++;
            st_store_get(f->store, r->key, r->klen, on_loaded, r);
        }
        return;
    }
    if (r->reading || r->pending > 0 || r->active > 0 || !TAILQ_EMPTY(&r->loading) ||
        !TAILQ_EMPTY(&r->waiting) || !TAILQ_EMPTY(&r->verifying))
        return;
    op->submitted = 1;
    op->old = r->highest;
    r->pending++;
    st_store_set(f->store, r->key, r->klen, op->token, on_set, r);
}

int px_fence_set(struct px_fence *f, const char *key, size_t klen, uint64_t token,
                 px_fence_set_cb cb, void *arg)
{
    struct px_fence_res *r = res_get(f, key, klen);
    struct set_op *op;

    if (r == NULL || r->set != NULL)
        return -1;
    op = calloc(1, sizeof(*op));
    if (op == NULL) {
        res_touch(r);
        return -1;
    }
    op->token = token;
    op->cb = cb;
    op->arg = arg;
    r->set = op;
    res_touch(r); /* applies it now if nothing is admitted on r */
    return 0;
}

struct each_ctx {
    void (*fn)(const struct px_fence_view *v, void *arg);
    void *arg;
};

static void each_one(const struct fc_hmap_node *n, void *arg)
{
    const struct px_fence_res *r = (const struct px_fence_res *)(const void *)n;
    const struct each_ctx *e = arg;
    const struct px_fence_ticket *t;
    struct px_fence_view v;

    memset(&v, 0, sizeof(v));
    v.key = r->key;
    v.klen = r->klen;
    v.highest = r->highest;
    v.durable = r->durable;
    v.inflight = r->active;
    v.inflight_token = r->active_token;
    TAILQ_FOREACH(t, &r->waiting, link)
        v.waiting++;
    e->fn(&v, e->arg);
}

void px_fence_each(const struct px_fence *f, size_t limit,
                   void (*fn)(const struct px_fence_view *v, void *arg), void *arg)
{
    struct each_ctx e = {fn, arg};

    fc_hmap_each(f->table, limit, each_one, &e);
}

/* ---- ownership (several proxies over etcd) ------------------------------ */

static void on_released(void *arg, int rc, uint64_t highest)
{
    struct px_fence_res *r = arg;

    (void)rc; /* not through: the store keeps trying on its own */
    (void)highest;
    r->pending--;
    r->releasing = 0;
    r->loaded = 0;
    if (!TAILQ_EMPTY(&r->loading) && !r->reading) {
        /* Requests came meanwhile: take it again (behind the asker). */
        r->reading = 1;
        r->pending++;
        st_store_get(r->fence->store, r->key, r->klen, on_loaded, r);
    } else if (TAILQ_EMPTY(&r->loading) && r->active == 0 && r->pending == 0 &&
               TAILQ_EMPTY(&r->verifying) && TAILQ_EMPTY(&r->held) && r->set == NULL) {
        struct px_fence *f = r->fence;
        if (r->in_idle)
            TAILQ_REMOVE(&f->idle, r, idle_link);
        fc_hmap_remove(f->table, &r->node);
        free(r);
        return;
    }
    res_touch(r);
}

/* Gives r's ownership up once nothing of this proxy is in flight for it
 * (including requests of unknown outcome, bounded by upstream_timeout) and
 * no store call or verification is outstanding. */
static void try_release(struct px_fence_res *r)
{
    if (r->releasing != 1 || r->active > 0 || r->pending > 0 || r->reading ||
        !TAILQ_EMPTY(&r->verifying) || r->set != NULL)
        return;
    r->releasing = 2;
    r->pending++;
    st_store_release(r->fence->store, r->key, r->klen, on_released, r);
}

/* Starts giving r up: nothing more is admitted for it (what waited for
 * S2/S3 waits for it to be taken again), what is in flight finishes. */
static void start_release(struct px_fence_res *r)
{
    struct px_fence_ticket *t;

    if (r->releasing)
        return;
    r->releasing = 1;
    TAILQ_CONCAT(&r->loading, &r->waiting, link);
    TAILQ_FOREACH(t, &r->loading, link)
        t->state = T_LOADING;
    res_touch(r);
}

/* The store says another proxy asks for key. */
static void on_ask(void *arg, const char *key, size_t klen)
{
    struct px_fence *f = arg;
    struct px_fence_res *r = res_find(f, key, klen);

    if (r == NULL)
        st_store_release(f->store, key, klen, NULL, NULL); /* nothing of ours on it */
    else
        start_release(r);
}

int px_fence_lapsed(const struct px_fence *f)
{
    return lapsed_at(f, now_ms());
}

int px_fence_ticket_lapsed(const struct px_fence *f, const struct px_fence_ticket *t)
{
    /* The deadline first: a new lease's deadline is published after the
     * generation that says the old one is gone. */
    if (px_fence_lapsed(f) || t->lapsed)
        return 1;
    /* Admitted under a lease that is gone since (its keepalive heard "no
     * such lease"): the new lease's deadline does not cover it, another
     * proxy may own its resource now. */
    return t->res != NULL && t->res->gen != st_store_owner_gen(f->store);
}

void px_fence_set_own_idle(struct px_fence *f, uint64_t ms)
{
    f->own_idle_ms = (int64_t)ms;
}

static void abort_lapsed(const struct fc_hmap_node *n, void *arg)
{
    struct px_fence_res *r = FC_HMAP_ENTRY(n, struct px_fence_res, node);
    const struct px_fence *f = arg;
    struct px_fence_ticket *t;

    TAILQ_FOREACH(t, &r->inflight, link)
    {
        if (!t->lapsed && t->preempt != NULL && px_fence_ticket_lapsed(f, t)) {
            t->lapsed = 1;
            t->preempt(t, t->arg);
        }
    }
}

void px_fence_sweep(struct px_fence *f)
{
    int64_t now = now_ms();
    struct px_fence_res *r, *next;

    uint64_t gen = st_store_owner_gen(f->store);

    /* Past the deadline, or every ownership lost since the last sweep (a
     * new lease may already have a deadline to come): what was admitted
     * under the old one is aborted. */
    if (f->inflight > 0 && (px_fence_lapsed(f) || gen != f->swept_gen))
        fc_hmap_each(f->table, 0, abort_lapsed, f);
    f->swept_gen = gen;
    if (f->own_idle_ms <= 0 || !st_store_shared(f->store))
        return; /* a store of one proxy: nothing to give up */
    /* The idle list runs from the least recently used. */
    for (r = TAILQ_FIRST(&f->idle); r != NULL; r = next) {
        next = TAILQ_NEXT(r, idle_link);
        if (r->used_ms + f->own_idle_ms > now)
            break;
        start_release(r);
    }
}

/* st_store_etcd: the "etcd" token-store backend, a store that several
 * proxies share, with per-resource ownership (docs/safety.md, "Several
 * proxies"; model/fence.pml states the same protocol). Keys under PREFIX,
 * R being the resource key with '%' and NUL escaped as %25 and %00 (so the
 * mapping is one-to-one and the key a C string):
 *
 *   tok/R    R's highest token, a 20-digit zero-padded decimal so that
 *            etcd's bytewise value compare orders tokens numerically;
 *   own/R    R's owner, attached to the owner's lease; its create revision
 *            is the owner's epoch for R;
 *   clean/R  there iff the last owner released R with nothing in flight;
 *   want/R   a hand-over request of the one proxy waiting for R, attached
 *            to the waiter's lease.
 *
 * One worker thread owns the etcd client (etcd/ec_client, synchronous; the
 * loop never waits on the network) and this proxy's lease: granted fresh at
 * start, renewed by one keepalive POST every TTL/3 or margin/2. The deadline it
 * publishes (st_store_fence_at) is the send time of the last keepalive that
 * succeeded + TTL - margin: the proxy admits and relays nothing fenced
 * after it (self-fencing), because from then on its lease may have expired
 * and another proxy may own R. A keepalive answered "no such lease" loses
 * every resource at once (st_store_owner_gen changes) and a new lease is
 * granted.
 *
 * A get takes R (the acquire txn): own/R is created if absent and want/R is
 * absent or ours, clean/R is read and deleted, tok/R read. When clean/R was
 * absent and tok/R present, the last owner's lease expired with requests
 * perhaps still on their way to the storage: the get completes only after
 * the lock-delay (answer time + upstream_timeout + margin). When another
 * proxy owns R, this one puts want/R (if no one else has) and tries again
 * every poll interval, up to the hand-over wait, then answers
 * ST_STORE_EBUSY. The owner polls want/ at the same interval and tells its
 * loop (ST_REQ_ASK), which drains R and releases it (delete own/R, put
 * clean/R, if own/R still has our epoch).
 *
 * Group commit: the worker takes every queued request at once and serves
 * the gets of owned resources, advances and sets in txns of at most
 * max_txn_ops / 2 keys (up to 8 such txns at once). A txn of advances only
 * goes first flat (chunk_flat), two compares per key:
 *
 *   txn { create_revision(own/R) == EPOCH, value(tok/R) < V, ...
 *         ? put tok/R=V, ... }
 *
 * which raises every key or none; when any compare fails (a key never
 * written, a deposed owner) it goes again nested, which tells the keys
 * apart (etcd counts the operations of nested txns against the limit of
 * the levels above; ours nest four deep). Per key:
 *
 *   txn { create_revision(own/R) == EPOCH ?
 *           txn { create_revision(tok/R) == 0 ? put tok/R=V
 *                 : txn { value(tok/R) < V ? put tok/R=V : range tok/R } }
 *         : range own/R }
 *
 * (the nested txn covers the missing key: a value compare on a missing key
 * is false). A set puts V under the same epoch compare; a get ranges. A
 * failed epoch compare means this proxy was deposed: ST_STORE_ELOST,
 * nothing raised. Every txn is safe to repeat, which ec_client may do on
 * another member after one did not answer.
 *
 * Fail closed (S6): when no member answers in time, requests complete with
 * ST_STORE_EUNAVAIL, nothing is acknowledged and the next requests try
 * again; the proxy answers 503 meanwhile and never falls back to a local
 * highest. A stored value that is not a 20-digit token fails the store for
 * good (it cannot vouch for it). */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include "ec_client.h"
#include "fc_hmap.h"
#include "st_store_internal.h"
#include "st_worker.h"

#define ETCD_TOKEN_DIGITS          20
#define ETCD_DEFAULT_TXN_OPS       128
#define ETCD_NESTING               3 /* levels below the group txn */
#define ETCD_DEFAULT_TIMEOUT_MS    2000
#define ETCD_DEFAULT_TTL_MS        10000
#define ETCD_DEFAULT_MARGIN_MS     2000
#define ETCD_DEFAULT_LOCK_DELAY_MS 62000
#define ETCD_DEFAULT_HANDOVER_MS   5000
#define ETCD_DEFAULT_POLL_MS       50
#define ETCD_RETRY_MS              500 /* a failed grant or keepalive is tried again */
#define ETCD_CLOSE_EXTRA_S         10
#define ETCD_SENDERS               8   /* group txns in flight at once */
#define ETCD_ACQ_NESTING           11  /* the acquire txn's ops below the group level */
#define ETCD_ACQ_MAX               128 /* acquisitions per group txn at most */

/* One resource this proxy owns (worker thread). */
struct owned {
    struct fc_hmap_node node; /* in es->owned, keyed by the resource key */
    int64_t epoch;            /* own/R's create revision */
    int asked;                /* the loop was told another proxy wants R */
    int releasing;            /* a release did not get through: retried */
    int64_t delay_until;      /* the end of its lock-delay (0: none) */
    TAILQ_ENTRY(owned) rel_link;
    size_t klen;
    char key[];
};

/* A get of a resource not owned yet: waiting for it (WAITING) or owned and
 * waiting out the lock-delay (DELAYED). */
struct acq {
    TAILQ_ENTRY(acq) link;
    struct st_store_req *reqs;      /* the gets it answers, in order */
    char *own, *tok, *clean, *want; /* R's keys, owned */
    unsigned tried;                 /* the tick round it was last tried in */
    int delayed;
    int want_mine;    /* want/R was put by us */
    int64_t deadline; /* WAITING: the hand-over wait ends */
    int64_t due;      /* next try (WAITING) or the end of the lock-delay */
    uint64_t highest; /* DELAYED: what the get answers */
    uint64_t gen;     /* the lease it was taken under */
    /* The acquire txn (acq_build), pointing into the fields above. */
    struct ec_op take[6], look[2], mid_op, top_op;
    struct ec_cmp c_free[2], c_mine[2];
    struct ec_txn_req mid, top;
};

/* One operation of a group txn: an advance of one key (merging every advance
 * of that key in the chunk), a set or a get of an owned resource. */
struct slot {
    struct fc_hmap_node node; /* in the round's table, keyed by key */
    enum st_req_kind kind;
    char *key; /* tok/R, owned */
    char *own; /* own/R, owned */
    int64_t epoch;
    uint64_t token; /* advance: the largest requested */
    char value[ETCD_TOKEN_DIGITS + 1];
    struct st_store_req *reqs; /* the requests it answers, linked by next */
    struct ec_cmp cmp_epoch, cmp_create, cmp_value;
    struct ec_op put, range, range_own, inner_op, mid_op, work;
    struct ec_txn_req inner, mid, top;
};

struct etcd_store;

/* One group txn of a round; the chunks of a round are sent at once, each on
 * its own connection (one thread each), since a txn's latency (a Raft
 * commit: an fsync on a majority) and not etcd's throughput bounds the
 * advances per second. */
struct chunk {
    struct etcd_store *es;
    struct ec_client *ec; /* its own connection; owned */
    struct slot *slots;   /* max_slots of them; owned */
    struct ec_op *ops;
    struct ec_cmp *fcmp; /* the flat txn: 2 compares per slot; owned */
    struct ec_op *fput;  /* and one put per slot; owned */
    size_t n, n_adv;
    int erc;
    int flat; /* the flat txn raised every slot */
    struct ec_txn_result res;
    double secs;
    pthread_t th;
};

struct etcd_store {
    struct st_store *s;
    struct ec_client *ec;
    char *tok_prefix, *own_prefix, *clean_prefix, *want_prefix;
    char *owner_id;
    size_t max_slots; /* keys per chunk: fit both the flat txn (2 compares
                         each) and the nested one (ETCD_NESTING levels) */
    int64_t timeout_ms, ttl_ms, margin_ms, lock_delay_ms, handover_ms, poll_ms;
    struct chunk chunks[ETCD_SENDERS]; /* worker thread */
    struct fc_hmap *round;             /* the round's slots by key */
    size_t max_acq;                    /* acquisitions per group txn */
    unsigned round_no;                 /* acq_try_due's rounds */
    struct st_worker *worker;          /* the worker thread */
    /* Ownership, worker thread only. */
    int64_t lease;        /* 0: none yet (or lost) */
    int64_t lease_ttl_ms; /* as granted */
    int64_t next_keepalive, next_poll, fence_at;
    uint64_t gen;
    struct fc_hmap *owned;
    TAILQ_HEAD(, acq) acqs;
    TAILQ_HEAD(, owned) releasing;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* prefix + key with '%' and NUL escaped. Returns a malloc'd string or NULL. */
static char *etcd_key(const char *prefix, const char *key, size_t klen)
{
    size_t plen = strlen(prefix), n = plen;
    char *out, *p;

    for (size_t i = 0; i < klen; i++)
        n += (key[i] == '%' || key[i] == '\0') ? 3 : 1;
    if ((out = malloc(n + 1)) == NULL)
        return NULL;
    memcpy(out, prefix, plen);
    p = out + plen;
    for (size_t i = 0; i < klen; i++) {
        if (key[i] == '%' || key[i] == '\0') {
            *p++ = '%';
            *p++ = key[i] == '%' ? '2' : '0';
            *p++ = key[i] == '%' ? '5' : '0';
        } else {
            *p++ = key[i];
        }
    }
    *p = '\0';
    return out;
}

/* The resource key of an escaped etcd key suffix, into out (at least
 * strlen(esc) bytes): its length, or -1 when esc is not one we made. */
static long unescape(const char *esc, char *out)
{
    size_t n = 0;

    for (const char *p = esc; *p != '\0'; p++) {
        if (*p != '%') {
            out[n++] = *p;
        } else if (p[1] == '2' && p[2] == '5') {
            out[n++] = '%';
            p += 2;
        } else if (p[1] == '0' && p[2] == '0') {
            out[n++] = '\0';
            p += 2;
        } else {
            return -1;
        }
    }
    return (long)n;
}

/* A stored value: exactly 20 decimal digits. 0, or -1 when it is not one. */
static int decode_token(const char *v, size_t len, uint64_t *out)
{
    uint64_t t = 0;

    if (len != ETCD_TOKEN_DIGITS)
        return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned d;
        if (v[i] < '0' || v[i] > '9')
            return -1;
        d = (unsigned)(v[i] - '0');
        if (t > (UINT64_MAX - d) / 10)
            return -1;
        t = t * 10 + d;
    }
    *out = t;
    return 0;
}

/* Answers every request of list with rc and highest, onto *done. */
static void answer(struct st_store_req *list, int rc, uint64_t highest, struct st_store_req **done)
{
    struct st_store_req *r, *next;

    for (r = list; r != NULL; r = next) {
        next = r->next;
        r->rc = rc;
        r->highest = rc == 0 ? highest : 0;
        r->next = *done;
        *done = r;
    }
}

/* ---- ownership ---------------------------------------------------------- */

static struct owned *owned_find(const struct etcd_store *es, const char *key, size_t klen)
{
    struct fc_hmap_node *n = fc_hmap_find(es->owned, key, klen);
    return n != NULL ? FC_HMAP_ENTRY(n, struct owned, node) : NULL;
}

static void owned_drop(struct etcd_store *es, struct owned *o)
{
    fc_hmap_remove(es->owned, &o->node);
    if (o->releasing)
        TAILQ_REMOVE(&es->releasing, o, rel_link);
    free(o);
}

static struct owned *owned_add(struct etcd_store *es, const char *key, size_t klen, int64_t epoch)
{
    struct owned *o = owned_find(es, key, klen);

    if (o == NULL) {
        if ((o = calloc(1, sizeof *o + klen + 1)) == NULL)
            return NULL;
        memcpy(o->key, key, klen);
        o->klen = klen;
        fc_hmap_insert(es->owned, &o->node, o->key, klen);
    }
    o->epoch = epoch;
    o->asked = 0;
    return o;
}

static void owned_clear(struct etcd_store *es)
{
    struct fc_hmap_node *n;

    while ((n = fc_hmap_pop(es->owned)) != NULL)
        free(FC_HMAP_ENTRY(n, struct owned, node));
    TAILQ_INIT(&es->releasing);
}

static void publish(struct etcd_store *es)
{
    st_store_set_owner(es->s, es->fence_at, es->gen);
}

static void unreachable(struct etcd_store *es)
{
    char why[512];

    snprintf(why, sizeof why, "etcd: %s", ec_client_error(es->ec));
    st_store_set_unreachable(es->s, why);
}

/* The keepalive interval: TTL/3, and at most half the margin, so that a
 * lease that ends early (revoked by an operator: its keys vanish at once)
 * is noticed within the margin that the next owner's lock-delay adds. */
static int64_t keepalive_every(const struct etcd_store *es, int64_t ttl_ms)
{
    int64_t every = ttl_ms / 3;

    return every < es->margin_ms / 2 ? every : es->margin_ms / 2;
}

/* Grants or renews the lease when due. Worker thread. */
static void lease_tick(struct etcd_store *es, int64_t now)
{
    int64_t ttl = 0, t0 = now;
    int erc;

    if (now < es->next_keepalive)
        return;
    if (es->lease != 0) {
        erc = ec_lease_keepalive(es->ec, es->lease, t0 + es->timeout_ms, &ttl);
        if (erc == EC_OK && ttl > 0) {
            es->fence_at = t0 + ttl * 1000 - es->margin_ms;
            es->next_keepalive = t0 + keepalive_every(es, ttl * 1000);
            st_store_set_unreachable(es->s, NULL);
            publish(es);
            return;
        }
        if (erc != EC_OK &&
            !(erc == EC_ERR_SERVER && ec_client_code(es->ec) == EC_CODE_NOT_FOUND)) {
            unreachable(es); /* the deadline stays: it comes unless renewed */
            es->next_keepalive = now + ETCD_RETRY_MS;
            return;
        }
        /* The lease is gone: so is every resource it held. */
        es->lease = 0;
        es->gen++;
        es->fence_at = 0;
        owned_clear(es);
        publish(es);
    }
    t0 = ec_now_ms();
    erc = ec_lease_grant(es->ec, es->ttl_ms / 1000, t0 + es->timeout_ms, &es->lease, &ttl);
    if (erc != EC_OK || ttl <= 0) {
        es->lease = 0;
        unreachable(es);
        es->next_keepalive = t0 + ETCD_RETRY_MS;
        return;
    }
    st_store_set_unreachable(es->s, NULL);
    es->lease_ttl_ms = ttl * 1000;
    es->fence_at = t0 + es->lease_ttl_ms - es->margin_ms;
    es->next_keepalive = t0 + keepalive_every(es, es->lease_ttl_ms);
    publish(es);
}

/* Deletes want/R when it is ours (a waiter that gave up or got R). */
static void want_drop(struct etcd_store *es, const char *want)
{
    struct ec_cmp c = {.key = want, .target = EC_TARGET_LEASE, .op = EC_EQUAL, .n = es->lease};
    struct ec_op del = {.type = EC_OP_DELETE, .range = {.key = want}};
    struct ec_txn_result res;

    if (es->lease != 0)
        (void)ec_txn(es->ec, &c, 1, &del, 1, NULL, 0, ec_now_ms() + es->timeout_ms, &res);
    ec_txn_result_free(&res);
}

/* The acquire txn of a, built in a's own storage (the ops point into it):
 *
 *   txn { create(own/R) == 0 && create(want/R) == 0 ? TAKE
 *         : txn { create(own/R) == 0 && lease(want/R) == ours ? TAKE, delete want/R
 *                 : range own/R, range want/R } }
 *
 * TAKE = put own/R (our lease), range own/R (its create revision is the
 * epoch), range clean/R, delete clean/R, range tok/R. */
static void acq_build(struct etcd_store *es, struct acq *a)
{
    a->take[0] = (struct ec_op){.type = EC_OP_PUT,
                                .range = {.key = a->own},
                                .value = es->owner_id,
                                .value_len = strlen(es->owner_id),
                                .lease = es->lease};
    a->take[1] = (struct ec_op){.type = EC_OP_RANGE, .range = {.key = a->own}};
    a->take[2] = (struct ec_op){.type = EC_OP_RANGE, .range = {.key = a->clean}};
    a->take[3] = (struct ec_op){.type = EC_OP_DELETE, .range = {.key = a->clean}};
    a->take[4] = (struct ec_op){.type = EC_OP_RANGE, .range = {.key = a->tok}};
    a->take[5] = (struct ec_op){.type = EC_OP_DELETE, .range = {.key = a->want}};
    a->look[0] = (struct ec_op){.type = EC_OP_RANGE, .range = {.key = a->own}};
    a->look[1] = (struct ec_op){.type = EC_OP_RANGE, .range = {.key = a->want}};
    a->c_free[0] = (struct ec_cmp){.key = a->own, .target = EC_TARGET_CREATE, .op = EC_EQUAL};
    a->c_free[1] = (struct ec_cmp){.key = a->want, .target = EC_TARGET_CREATE, .op = EC_EQUAL};
    a->c_mine[0] = a->c_free[0];
    a->c_mine[1] =
        (struct ec_cmp){.key = a->want, .target = EC_TARGET_LEASE, .op = EC_EQUAL, .n = es->lease};
    a->mid = (struct ec_txn_req){
        .cmp = a->c_mine, .ncmp = 2, .then = a->take, .nthen = 6, .els = a->look, .nelse = 2};
    a->mid_op = (struct ec_op){.type = EC_OP_TXN, .txn = &a->mid};
    a->top = (struct ec_txn_req){
        .cmp = a->c_free, .ncmp = 2, .then = a->take, .nthen = 5, .els = &a->mid_op, .nelse = 1};
    a->top_op = (struct ec_op){.type = EC_OP_TXN, .txn = &a->top};
}

/* Answers a's requests with rc (no highest). */
static void acq_fail(struct acq *a, int rc, struct st_store_req **done)
{
    answer(a->reqs, rc, 0, done);
    a->reqs = NULL;
}

/* What a's acquire txn answered (top: its result in the group txn), at
 * time answered. Returns 1 owned (a->delayed, a->highest, a->due set), 0
 * still waiting, -1 with a answered (failed). Worker thread. */
static int acq_result(struct etcd_store *es, struct acq *a, const struct ec_txn_result *top,
                      int64_t answered, struct st_store_req **done)
{
    const struct st_store_req *r = a->reqs;
    const struct ec_txn_result *got = NULL;
    const struct ec_kvs *kown, *kclean, *ktok, *kwant;
    struct owned *o = NULL;
    uint64_t highest = 0;

    if (top != NULL && top->succeeded && top->n == 5)
        got = top;
    else if (top != NULL && !top->succeeded && top->n == 1 && top->res[0].txn != NULL)
        got = top->res[0].txn;
    if (got == NULL || (got->succeeded && got->n < 5) || (!got->succeeded && got->n != 2)) {
        st_store_fail(es->s, "etcd: the answer to an acquire txn does not match it");
        acq_fail(a, -1, done);
        return -1;
    }
    if (got->succeeded) {
        kown = &got->res[1].kvs;
        kclean = &got->res[2].kvs;
        ktok = &got->res[4].kvs;
        if (kown->n != 1 || (ktok->n == 1 && decode_token(ktok->kv[0].value, ktok->kv[0].value_len,
                                                          &highest) != 0)) {
            st_store_fail(es->s, "etcd: key %s holds no 20-digit token", a->tok);
            acq_fail(a, -1, done);
            return -1;
        }
        if ((o = owned_add(es, r->key, r->klen, kown->kv[0].create_revision)) == NULL) {
            acq_fail(a, ST_STORE_EUNAVAIL, done);
            return -1;
        }
        a->want_mine = 0;
        a->highest = highest;
        a->delayed = 1;
        /* The last owner did not say it was done with R (its lease
         * expired): what it let go may still reach the storage up to
         * upstream_timeout later. A resource never written needs no wait. */
        a->due = kclean->n == 0 && ktok->n == 1 ? answered + es->lock_delay_ms : answered;
        o->delay_until = a->due;
        return 1;
    }
    kown = &got->res[0].kvs;
    kwant = &got->res[1].kvs;
    if (kown->n == 1 && kown->kv[0].lease == es->lease) {
        /* Ours already: a release that did not get through, or an
         * acquire that landed but whose answer was lost. The latter may
         * have taken R from an owner whose lease expired (and deleted
         * clean/R): so the lock-delay, when R was ever written (model:
         * ORPHAN_OWN). */
        struct ec_range_req q = {.key = a->tok};
        struct ec_kvs kv = {0};
        int erc = ec_range(es->ec, &q, ec_now_ms() + es->timeout_ms, &kv, NULL);
        int written = erc == EC_OK && kv.n == 1;
        int bad = erc != EC_OK ||
                  (kv.n == 1 && decode_token(kv.kv[0].value, kv.kv[0].value_len, &highest) != 0) ||
                  (o = owned_add(es, r->key, r->klen, kown->kv[0].create_revision)) == NULL;
        ec_kvs_free(&kv);
        if (bad) {
            if (erc != EC_OK)
                unreachable(es);
            acq_fail(a, ST_STORE_EUNAVAIL, done);
            return -1;
        }
        a->highest = highest;
        a->delayed = 1;
        a->due = written ? ec_now_ms() + es->lock_delay_ms : answered;
        o->delay_until = a->due;
        return 1;
    }
    if (kwant->n == 0) {
        /* Ask the owner for R: want/R, if no other waiter has it. */
        struct ec_cmp c = {.key = a->want, .target = EC_TARGET_CREATE, .op = EC_EQUAL};
        struct ec_op put = {.type = EC_OP_PUT,
                            .range = {.key = a->want},
                            .value = es->owner_id,
                            .value_len = strlen(es->owner_id),
                            .lease = es->lease};
        struct ec_txn_result pr;
        if (ec_txn(es->ec, &c, 1, &put, 1, NULL, 0, ec_now_ms() + es->timeout_ms, &pr) == EC_OK &&
            pr.succeeded)
            a->want_mine = 1;
        ec_txn_result_free(&pr);
    }
    return 0;
}

static void acq_free(struct acq *a)
{
    struct st_store_req *r, *next;

    for (r = a->reqs; r != NULL; r = next) {
        next = r->next;
        free(r);
    }
    free(a->own);
    free(a->tok);
    free(a->clean);
    free(a->want);
    free(a);
}

/* Tries the acquisitions whose time has come, in group txns of at most
 * max_acq each (their ops nest deeper than an advance's). Worker thread. */
static void acq_try_due(struct etcd_store *es, struct st_store_req **done)
{
    struct acq *a, *batch[ETCD_ACQ_MAX];
    struct ec_op ops[ETCD_ACQ_MAX];
    int64_t now = ec_now_ms();
    size_t n = 0;
    int more = 1;

    while (more) {
        struct ec_txn_req outer;
        struct ec_txn_result res = {0};
        int64_t answered;
        int erc;

        n = 0;
        more = 0;
        TAILQ_FOREACH(a, &es->acqs, link)
        {
            if (a->reqs == NULL || a->delayed || a->due > now || a->tried == es->round_no)
                continue;
            if (n == es->max_acq) {
                more = 1;
                break;
            }
            a->tried = es->round_no;
            if (es->lease == 0 || now >= es->fence_at) {
                unreachable(es);
                acq_fail(a, ST_STORE_EUNAVAIL, done);
                continue;
            }
            acq_build(es, a);
            ops[n] = a->top_op;
            batch[n++] = a;
        }
        if (n == 0)
            break;
        outer = (struct ec_txn_req){.then = ops, .nthen = n};
        erc = ec_txn_nested(es->ec, &outer, ec_now_ms() + es->timeout_ms, &res);
        answered = ec_now_ms();
        if (erc == EC_OK && (!res.succeeded || res.n != n))
            erc = EC_ERR_INTERNAL;
        if (erc != EC_OK) {
            if (erc == EC_ERR_INTERNAL)
                st_store_fail(es->s, "etcd: the answer to an acquire txn does not match it");
            else
                unreachable(es);
            for (size_t i = 0; i < n; i++)
                acq_fail(batch[i], erc == EC_ERR_INTERNAL ? -1 : ST_STORE_EUNAVAIL, done);
            more = 0;
        } else {
            st_store_set_unreachable(es->s, NULL);
            for (size_t i = 0; i < n; i++) {
                a = batch[i];
                int rc = acq_result(es, a, res.res[i].txn, answered, done);
                if (rc > 0)
                    a->gen = es->gen;
                else if (rc == 0)
                    a->due = answered + es->poll_ms;
            }
        }
        ec_txn_result_free(&res);
    }
    es->round_no++;
}

/* Serves the acquisitions whose time has come; returns the ms until the
 * next one is due (or INT64_MAX). Worker thread. */
static int64_t acq_tick(struct etcd_store *es, struct st_store_req **done)
{
    struct acq *a, *next;
    int64_t now, soonest = INT64_MAX;

    acq_try_due(es, done);
    now = ec_now_ms();
    for (a = TAILQ_FIRST(&es->acqs); a != NULL; a = next) {
        next = TAILQ_NEXT(a, link);
        if (a->reqs != NULL && a->delayed && a->gen != es->gen) {
            acq_fail(a, ST_STORE_EUNAVAIL, done); /* taken under a lease gone since */
        } else if (a->reqs != NULL && a->delayed && now >= a->due) {
            answer(a->reqs, st_store_failed(es->s) ? -1 : 0, a->highest, done);
            a->reqs = NULL;
        } else if (a->reqs != NULL && !a->delayed && now >= a->deadline) {
            if (a->want_mine)
                want_drop(es, a->want);
            acq_fail(a, ST_STORE_EBUSY, done); /* not handed over in time */
        }
        if (a->reqs == NULL) {
            TAILQ_REMOVE(&es->acqs, a, link);
            acq_free(a);
            continue;
        }
        if (a->due - now < soonest)
            soonest = a->due - now;
    }
    return soonest;
}

/* Queues a get of a resource not owned: joins the acquisition under way
 * for the same key, or starts one (tried at once by the next tick). */
static int acq_add(struct etcd_store *es, struct st_store_req *r)
{
    struct acq *a;

    TAILQ_FOREACH(a, &es->acqs, link)
    {
        if (a->reqs->klen == r->klen && memcmp(a->reqs->key, r->key, r->klen) == 0) {
            struct st_store_req **pp = &a->reqs;
            while (*pp != NULL)
                pp = &(*pp)->next;
            r->next = NULL;
            *pp = r;
            return 0;
        }
    }
    if ((a = calloc(1, sizeof *a)) == NULL)
        return -1;
    a->own = etcd_key(es->own_prefix, r->key, r->klen);
    a->tok = etcd_key(es->tok_prefix, r->key, r->klen);
    a->clean = etcd_key(es->clean_prefix, r->key, r->klen);
    a->want = etcd_key(es->want_prefix, r->key, r->klen);
    if (a->own == NULL || a->tok == NULL || a->clean == NULL || a->want == NULL) {
        acq_free(a);
        return -1;
    }
    r->next = NULL;
    a->reqs = r;
    a->due = ec_now_ms();
    a->deadline = a->due + es->handover_ms;
    a->tried = es->round_no - 1;
    TAILQ_INSERT_TAIL(&es->acqs, a, link);
    return 0;
}

/* Gives R up: delete own/R and put clean/R if own/R still has our epoch.
 * Returns 0 (done, or not ours any more) or ST_STORE_EUNAVAIL. */
static int release_one(struct etcd_store *es, struct owned *o)
{
    char *own = etcd_key(es->own_prefix, o->key, o->klen);
    char *clean = etcd_key(es->clean_prefix, o->key, o->klen);
    struct ec_txn_result res = {0};
    int rc = ST_STORE_EUNAVAIL;

    if (own != NULL && clean != NULL) {
        struct ec_cmp c = {.key = own, .target = EC_TARGET_CREATE, .op = EC_EQUAL, .n = o->epoch};
        struct ec_op ops[2] = {
            {.type = EC_OP_DELETE, .range = {.key = own}},
            {.type = EC_OP_PUT, .range = {.key = clean}, .value = "", .value_len = 0}};
        /* clean/R only once the lock-delay is over: released during it, R
         * may still have the last owner's requests on their way, and the
         * next owner must wait for them (model: CLEAN_IN_DELAY). */
        size_t nops = ec_now_ms() >= o->delay_until ? 2 : 1;
        if (ec_txn(es->ec, &c, 1, ops, nops, NULL, 0, ec_now_ms() + es->timeout_ms, &res) == EC_OK)
            rc = 0;
        else
            unreachable(es);
    }
    ec_txn_result_free(&res);
    free(own);
    free(clean);
    return rc;
}

/* Looks for hand-over requests of other proxies for resources we own and
 * tells the loop (once per ownership). Worker thread. */
static void poll_wants(struct etcd_store *es, struct st_store_req **done)
{
    struct ec_range_req q = {.key = es->want_prefix, .prefix = 1};
    struct ec_kvs kvs = {0};
    size_t plen = strlen(es->want_prefix);

    if (fc_hmap_count(es->owned) == 0 ||
        ec_range(es->ec, &q, ec_now_ms() + es->timeout_ms, &kvs, NULL) != EC_OK)
        goto out;
    for (size_t i = 0; i < kvs.n; i++) {
        const struct ec_kv *kv = &kvs.kv[i];
        size_t elen = strlen(kv->key);
        char *raw;
        long n;
        struct owned *o;

        if (kv->lease == es->lease || elen < plen || (raw = malloc(elen - plen + 1)) == NULL)
            continue;
        n = unescape(kv->key + plen, raw);
        if (n >= 0 && (o = owned_find(es, raw, (size_t)n)) != NULL && !o->asked && !o->releasing) {
            struct st_store_req *ask = st_store_req_new(ST_REQ_ASK, raw, (size_t)n);
            o->asked = 1;
            ask->next = *done;
            *done = ask;
        }
        free(raw);
    }
out:
    ec_kvs_free(&kvs);
}

/* ---- the group txn ------------------------------------------------------- */

/* The highest a slot's answer reports: 0 and *highest, 1 when the epoch
 * compare failed (deposed), or -1 when the answer is not what the txn asks
 * for or the stored value is not a token. */
static int slot_result(const struct slot *sl, const struct ec_op_result *res, uint64_t *highest)
{
    const struct ec_txn_result *top = res->txn;
    const struct ec_kvs *kvs;

    if (top == NULL || top->n != 1)
        return -1;
    if (!top->succeeded)
        return 1;
    res = &top->res[0];
    kvs = &res->kvs;
    if (sl->kind == ST_REQ_SET) {
        *highest = sl->token;
        return 0;
    }
    if (sl->kind == ST_REQ_ADVANCE) {
        const struct ec_txn_result *mid = res->txn, *inner;
        if (mid == NULL)
            return -1;
        if (mid->succeeded) { /* created */
            *highest = sl->token;
            return 0;
        }
        if (mid->n != 1 || (inner = mid->res[0].txn) == NULL)
            return -1;
        if (inner->succeeded) { /* raised */
            *highest = sl->token;
            return 0;
        }
        if (inner->n != 1)
            return -1;
        kvs = &inner->res[0].kvs;
    }
    if (kvs->n == 0) {
        if (sl->kind == ST_REQ_ADVANCE)
            return -1; /* it existed a moment ago in this very txn */
        *highest = 0;
        return 0;
    }
    return decode_token(kvs->kv[0].value, kvs->kv[0].value_len, highest);
}

/* Fills the ops of slot i of a chunk. */
static void slot_build(struct chunk *c, size_t i)
{
    struct slot *sl = &c->slots[i];
    struct ec_op *op = &c->ops[i];

    snprintf(sl->value, sizeof sl->value, "%020" PRIu64, sl->token);
    sl->put = (struct ec_op){.type = EC_OP_PUT,
                             .range = {.key = sl->key},
                             .value = sl->value,
                             .value_len = ETCD_TOKEN_DIGITS};
    sl->range = (struct ec_op){.type = EC_OP_RANGE, .range = {.key = sl->key}};
    if (sl->kind == ST_REQ_ADVANCE) {
        sl->cmp_create =
            (struct ec_cmp){.key = sl->key, .target = EC_TARGET_CREATE, .op = EC_EQUAL};
        sl->cmp_value = (struct ec_cmp){.key = sl->key,
                                        .target = EC_TARGET_VALUE,
                                        .op = EC_LESS,
                                        .value = sl->value,
                                        .value_len = ETCD_TOKEN_DIGITS};
        sl->inner = (struct ec_txn_req){.cmp = &sl->cmp_value,
                                        .ncmp = 1,
                                        .then = &sl->put,
                                        .nthen = 1,
                                        .els = &sl->range,
                                        .nelse = 1};
        sl->inner_op = (struct ec_op){.type = EC_OP_TXN, .txn = &sl->inner};
        sl->mid = (struct ec_txn_req){.cmp = &sl->cmp_create,
                                      .ncmp = 1,
                                      .then = &sl->put,
                                      .nthen = 1,
                                      .els = &sl->inner_op,
                                      .nelse = 1};
        sl->work = (struct ec_op){.type = EC_OP_TXN, .txn = &sl->mid};
    } else {
        sl->work = sl->kind == ST_REQ_SET ? sl->put : sl->range;
    }
    /* Only while own/R still has our epoch (deposed: nothing raised). */
    sl->cmp_epoch =
        (struct ec_cmp){.key = sl->own, .target = EC_TARGET_CREATE, .op = EC_EQUAL, .n = sl->epoch};
    sl->range_own = (struct ec_op){.type = EC_OP_RANGE, .range = {.key = sl->own}};
    sl->top = (struct ec_txn_req){.cmp = &sl->cmp_epoch,
                                  .ncmp = 1,
                                  .then = &sl->work,
                                  .nthen = 1,
                                  .els = &sl->range_own,
                                  .nelse = 1};
    memset(op, 0, sizeof *op);
    op->type = EC_OP_TXN;
    op->txn = &sl->top;
}

/* The fast path of a chunk of advances only (the steady state: every key
 * owned and written before), one flat txn with two compares per key:
 *
 *   txn { create_revision(own/R1) == EPOCH1, value(tok/R1) < V1, ...
 *         ? put tok/R1=V1, ... : (nothing) }
 *
 * It raises every key or none. When any compare fails (a key never written,
 * a token already at V, a deposed owner), nothing was written and the chunk
 * goes again as the nested txn, which tells the keys apart. Safe to repeat
 * as the nested one is. Returns 1 when the chunk is answered (c->flat set:
 * all raised, or c->erc an error), 0 to send the nested txn. Any thread. */
static int chunk_flat(struct chunk *c)
{
    struct ec_txn_result res = {0};
    size_t n = c->n;
    int done = 0;

    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        struct slot *sl = &c->slots[i];
        if (sl->kind != ST_REQ_ADVANCE)
            return 0;
        c->fcmp[2 * i] = sl->cmp_epoch;
        c->fcmp[2 * i + 1] = sl->cmp_value;
        c->fput[i] = sl->put;
    }
    c->erc =
        ec_txn(c->ec, c->fcmp, 2 * n, c->fput, n, NULL, 0, ec_now_ms() + c->es->timeout_ms, &res);
    if (c->erc != EC_OK) {
        done = 1; /* no member answered: as the nested txn would have failed */
    } else if (res.succeeded) {
        c->erc = res.n == n ? EC_OK : EC_ERR_INTERNAL;
        c->flat = res.n == n;
        done = 1;
    }
    ec_txn_result_free(&res);
    return done;
}

/* Sends one chunk's group txn and waits for the answer. Any thread: it
 * touches only the chunk. */
static void chunk_send(struct chunk *c)
{
    struct ec_txn_req outer = {.then = c->ops, .nthen = c->n};
    double t0 = now_s();

    for (size_t i = 0; i < c->n; i++)
        slot_build(c, i);
    c->flat = 0;
    if (chunk_flat(c) != 0)
        goto out;
    c->erc = ec_txn_nested(c->ec, &outer, ec_now_ms() + c->es->timeout_ms, &c->res);
    if (c->erc == EC_OK && (!c->res.succeeded || c->res.n != c->n))
        c->erc = EC_ERR_INTERNAL;
out:
    c->secs = now_s() - t0;
}

static void *chunk_main(void *arg)
{
    chunk_send(arg);
    return NULL;
}

/* Answers a sent chunk's requests (onto *done) from its result. Returns
 * the ec_client result. Worker thread. */
static int chunk_answer(struct etcd_store *es, struct chunk *c, struct st_store_req **done)
{
    size_t n = c->n;

    if (c->erc != EC_OK) {
        char why[512];
        snprintf(why, sizeof why, "etcd: %s", ec_client_error(c->ec));
        st_store_set_unreachable(es->s, why);
        for (size_t i = 0; i < n; i++) {
            answer(c->slots[i].reqs, ST_STORE_EUNAVAIL, 0, done);
            c->slots[i].reqs = NULL;
        }
        goto out;
    }
    st_store_set_unreachable(es->s, NULL);
    for (size_t i = 0; i < n; i++) {
        struct slot *sl = &c->slots[i];
        uint64_t h = sl->token;
        int rc = c->flat ? 0 : slot_result(sl, &c->res.res[i], &h);

        if (rc < 0) {
            st_store_fail(es->s,
                          "etcd: key %s holds no 20-digit token or the answer does "
                          "not match the txn",
                          sl->key);
            answer(sl->reqs, -1, 0, done);
        } else if (rc > 0) {
            /* Deposed: own/R is not ours (any more) under this epoch. */
            struct st_store_req *r0 = sl->reqs;
            struct owned *o = owned_find(es, r0->key, r0->klen);
            if (o != NULL && o->epoch == sl->epoch)
                owned_drop(es, o);
            answer(sl->reqs, ST_STORE_ELOST, 0, done);
        } else {
            answer(sl->reqs, st_store_failed(es->s) ? -1 : 0, h, done);
        }
        sl->reqs = NULL;
    }
    if (c->n_adv > 0 && !st_store_failed(es->s)) {
        struct st_store_req *rep = st_store_req_commit(c->n_adv, c->secs);
        if (rep != NULL) {
            rep->next = *done;
            *done = rep;
        }
    }
out:
    ec_txn_result_free(&c->res);
    for (size_t i = 0; i < n; i++) {
        free(c->slots[i].key);
        free(c->slots[i].own);
        c->slots[i].key = c->slots[i].own = NULL;
    }
    c->n = c->n_adv = 0;
    return c->erc;
}

/* Sends the round's chunks 0..nch-1 at once and answers them. Returns 1
 * when one found no member (the rest of the batch is not tried). */
static int run_round(struct etcd_store *es, size_t nch, struct st_store_req **done)
{
    int started[ETCD_SENDERS] = {0}, unavailable = 0;

    for (size_t i = 1; i < nch; i++)
        started[i] = pthread_create(&es->chunks[i].th, NULL, chunk_main, &es->chunks[i]) == 0;
    chunk_send(&es->chunks[0]);
    for (size_t i = 1; i < nch; i++) {
        if (started[i])
            pthread_join(es->chunks[i].th, NULL);
        else
            chunk_send(&es->chunks[i]); /* no thread: in turn */
    }
    for (size_t i = 0; i < nch; i++)
        if (chunk_answer(es, &es->chunks[i], done) == EC_ERR_UNAVAILABLE)
            unavailable = 1;
    while (fc_hmap_pop(es->round) != NULL)
        ;
    return unavailable;
}

/* Appends r to the end of a slot's list (order kept for the callbacks). */
static void slot_add(struct slot *sl, struct st_store_req *r)
{
    struct st_store_req **pp = &sl->reqs;

    while (*pp != NULL)
        pp = &(*pp)->next;
    r->next = NULL;
    *pp = r;
}

/* Takes the requests that are not for the group txn off *batch (in order):
 * gets of resources not owned (to the acquisitions), releases (served
 * now), and requests for resources not owned (ELOST). Worker thread. */
static void sort_out(struct etcd_store *es, struct st_store_req **batch, struct st_store_req **done)
{
    struct st_store_req **pp = batch, *r;

    while ((r = *pp) != NULL) {
        struct owned *o = owned_find(es, r->key, r->klen);

        if (r->kind == ST_REQ_LIST) {
            pp = &r->next; /* no ownership needed: served in order below */
        } else if (r->kind == ST_REQ_RELEASE) {
            *pp = r->next;
            r->highest = 0;
            r->rc = 0;
            if (o != NULL && (r->rc = release_one(es, o)) == 0) {
                owned_drop(es, o);
            } else if (o != NULL && !o->releasing) {
                o->releasing = 1; /* retried by the tick */
                TAILQ_INSERT_TAIL(&es->releasing, o, rel_link);
            }
            r->next = *done;
            *done = r;
        } else if (r->kind == ST_REQ_GET && (o == NULL || o->releasing)) {
            *pp = r->next;
            if (o != NULL) /* a release under way: taken back as it is */
                owned_drop(es, o);
            if (acq_add(es, r) != 0) {
                r->rc = ST_STORE_EUNAVAIL;
                r->next = *done;
                *done = r;
            }
        } else if (o == NULL) {
            *pp = r->next;
            r->rc = ST_STORE_ELOST;
            r->highest = 0;
            r->next = *done;
            *done = r;
        } else {
            pp = &r->next;
        }
    }
}

/* The resource key of an etcd key under tok_prefix (the escapes undone),
 * in out (cap bytes at least strlen(ekey)). Its length, or -1 when ekey is
 * not one etcd_key() makes. */
static ssize_t resource_key(const struct etcd_store *es, const char *ekey, char *out)
{
    size_t plen = strlen(es->tok_prefix);

    if (strncmp(ekey, es->tok_prefix, plen) != 0)
        return -1;
    return (ssize_t)unescape(ekey + plen, out);
}

/* Serves one LIST (st_store_list) with one range over tok_prefix + the
 * escaped prefix, from the escaped cursor on (the cursor is a resource key:
 * the page's last), limit + 2 keys at most (the cursor itself may come back
 * first). Sets r->rc; a value that is not a token fails the store, as a
 * get's does. Returns the ec_client result. Worker thread. */
static int list_keys(struct etcd_store *es, struct st_store_req *r)
{
    const struct st_store_list_res *l = r->list;
    char *pfx = etcd_key(es->tok_prefix, r->key, r->klen), *end = NULL, *after = NULL, *rk = NULL;
    struct ec_range_req q = {0};
    struct ec_kvs kvs = {0};
    size_t i, elen;
    int erc = EC_ERR_INTERNAL;

    r->rc = ST_STORE_EUNAVAIL;
    if (pfx == NULL || (end = strdup(pfx)) == NULL ||
        (l->alen > 0 && (after = etcd_key(es->tok_prefix, l->after, l->alen)) == NULL))
        goto out;
    /* The end of the prefix range: its last byte below 0xff raised by one
     * (there is one: tok_prefix ends in '/'). */
    for (elen = strlen(end); elen > 0 && (unsigned char)end[elen - 1] == 0xff; elen--)
        ;
    end[elen - 1] = (char)((unsigned char)end[elen - 1] + 1);
    end[elen] = '\0';
    q.key = after != NULL && strcmp(after, pfx) > 0 ? after : pfx;
    q.range_end = end;
    q.limit = (int64_t)l->limit + 2;
    erc = ec_range(es->ec, &q, ec_now_ms() + es->timeout_ms, &kvs, NULL);
    if (erc != EC_OK) {
        char why[512];
        snprintf(why, sizeof why, "etcd: %s", ec_client_error(es->ec));
        if (erc == EC_ERR_UNAVAILABLE)
            st_store_set_unreachable(es->s, why);
        goto out;
    }
    st_store_set_unreachable(es->s, NULL);
    r->rc = 0;
    for (i = 0; i < kvs.n; i++) {
        const struct ec_kv *kv = &kvs.kv[i];
        ssize_t klen;
        uint64_t t;

        if (after != NULL && strcmp(kv->key, after) <= 0)
            continue;
        if (st_store_list_full(r))
            break;
        free(rk);
        if ((rk = malloc(strlen(kv->key) + 1)) == NULL) {
            r->rc = ST_STORE_EUNAVAIL;
            goto out;
        }
        if ((klen = resource_key(es, kv->key, rk)) < 0 ||
            decode_token(kv->value, kv->value_len, &t) != 0) {
            st_store_fail(es->s, "etcd: key %s holds no 20-digit token", kv->key);
            r->rc = -1;
            goto out;
        }
        if (st_store_list_add(r, rk, (size_t)klen, t, NULL) != 0) {
            r->rc = ST_STORE_EUNAVAIL;
            goto out;
        }
    }
    if ((i < kvs.n || kvs.more) && r->list->n > 0) {
        const struct st_store_entry *e = &r->list->e[r->list->n - 1];
        if (st_store_list_more(r, e->key, e->klen) != 0)
            r->rc = ST_STORE_EUNAVAIL;
    }
out:
    ec_kvs_free(&kvs);
    free(rk);
    free(after);
    free(end);
    free(pfx);
    return erc;
}

/* Serves one batch (owned) in chunks and completes it. Worker thread. */
static void run_batch(struct etcd_store *es, struct st_store_req *batch)
{
    struct st_store_req *done = NULL, *r, *next;
    int unavailable = 0;

    if (!st_store_failed(es->s))
        sort_out(es, &batch, &done);
    while (batch != NULL) {
        size_t nch = 0;

        if (st_store_failed(es->s) || unavailable) {
            /* Fail closed; after one unanswered txn the rest of this batch
             * (queued at the same moment) is not tried again, so a dead
             * cluster costs one timeout per batch, not per chunk. */
            for (r = batch; r != NULL; r = next) {
                next = r->next;
                r->rc = unavailable && !st_store_failed(es->s) ? ST_STORE_EUNAVAIL : -1;
                r->highest = 0;
                r->next = done;
                done = r;
            }
            break;
        }
        /* Take requests in order into the round's chunks until they are
         * full. One slot per key per round: the advances of a key merge
         * into one with the largest token, and a get joins the slot of its
         * key (it sees the advances before it). A set, or an advance after
         * a get, of a key already in the round waits for the next round,
         * since chunks are applied in no particular order. */
        while (batch != NULL) {
            struct slot *sl = NULL;
            struct fc_hmap_node *hn;
            struct owned *o;
            struct chunk *c;
            char *k, *own;

            r = batch;
            if (r->kind == ST_REQ_LIST) {
                /* After the advances before it; one range of its own. */
                if (nch > 0 || es->chunks[0].n > 0)
                    break;
                batch = r->next;
                if (list_keys(es, r) == EC_ERR_UNAVAILABLE)
                    unavailable = 1;
                r->next = done;
                done = r;
                if (unavailable)
                    break;
                continue;
            }
            o = owned_find(es, r->key, r->klen);
            k = etcd_key(es->tok_prefix, r->key, r->klen);
            own = etcd_key(es->own_prefix, r->key, r->klen);
            if (k == NULL || own == NULL || o == NULL) {
                free(k);
                free(own);
                batch = r->next;
                r->rc = o == NULL ? ST_STORE_ELOST : ST_STORE_EUNAVAIL;
                r->next = done;
                done = r;
                continue;
            }
            if ((hn = fc_hmap_find(es->round, k, strlen(k))) != NULL) {
                sl = FC_HMAP_ENTRY(hn, struct slot, node);
                free(k);
                free(own);
                if (r->kind == ST_REQ_SET || sl->kind == ST_REQ_SET ||
                    (r->kind == ST_REQ_ADVANCE && sl->kind == ST_REQ_GET))
                    break; /* next round */
                if (r->kind == ST_REQ_ADVANCE && r->token > sl->token)
                    sl->token = r->token;
            } else {
                if (es->chunks[nch].n == es->max_slots && ++nch == ETCD_SENDERS) {
                    free(k);
                    free(own);
                    break;
                }
                c = &es->chunks[nch];
                sl = &c->slots[c->n++];
                sl->kind = r->kind;
                sl->key = k;
                sl->own = own;
                sl->epoch = o->epoch;
                sl->token = r->token;
                sl->reqs = NULL;
                c->n_adv += sl->kind != ST_REQ_GET;
                fc_hmap_insert(es->round, &sl->node, sl->key, strlen(sl->key));
            }
            batch = r->next;
            slot_add(sl, r);
        }
        if (nch < ETCD_SENDERS && es->chunks[nch].n > 0)
            nch++;
        if (nch > 0 && run_round(es, nch, &done))
            unavailable = 1;
    }
    /* done is in reverse order; callbacks of one resource must keep the
     * order their requests were submitted in. */
    {
        struct st_store_req *rev = NULL;
        for (r = done; r != NULL; r = next) {
            next = r->next;
            r->next = rev;
            rev = r;
        }
        st_store_complete_list(es->s, rev);
    }
}

static void run_batch_cb(void *arg, struct st_store_req *batch)
{
    run_batch(arg, batch);
}

/* Timed work: the lease, hand-over polling, acquisitions, releases to
 * retry. Returns the ms until the next is due. Worker thread. */
static int64_t tick_cb(void *arg)
{
    struct etcd_store *es = arg;
    struct st_store_req *done = NULL, *rev = NULL, *r, *next;
    int64_t now = ec_now_ms(), wait, due;
    struct owned *o, *onext;

    if (st_store_failed(es->s))
        return -1;
    lease_tick(es, now);
    now = ec_now_ms();
    if (now >= es->next_poll) {
        poll_wants(es, &done);
        es->next_poll = ec_now_ms() + es->poll_ms;
    }
    for (o = TAILQ_FIRST(&es->releasing); o != NULL; o = onext) {
        onext = TAILQ_NEXT(o, rel_link);
        if (release_one(es, o) != 0)
            break; /* still unreachable: next tick */
        owned_drop(es, o);
    }
    wait = acq_tick(es, &done);
    for (r = done; r != NULL; r = next) {
        next = r->next;
        r->next = rev;
        rev = r;
    }
    st_store_complete_list(es->s, rev);
    now = ec_now_ms();
    due = es->next_keepalive - now;
    if (fc_hmap_count(es->owned) > 0 && es->next_poll - now < due)
        due = es->next_poll - now;
    if (!TAILQ_EMPTY(&es->releasing) && ETCD_RETRY_MS < due)
        due = ETCD_RETRY_MS;
    if (wait < due)
        due = wait;
    return due < 1 ? 1 : due;
}

static void etcd_submit(struct st_store *s, struct st_store_req *req)
{
    struct etcd_store *es = st_store_impl(s);

    st_worker_submit(es->worker, req);
}

static void es_free(struct etcd_store *es)
{
    struct acq *a;

    if (es == NULL)
        return;
    while ((a = TAILQ_FIRST(&es->acqs)) != NULL) {
        TAILQ_REMOVE(&es->acqs, a, link);
        acq_free(a);
    }
    if (es->owned != NULL)
        owned_clear(es);
    fc_hmap_free(&es->owned);
    ec_client_free(&es->ec);
    free(es->tok_prefix);
    free(es->own_prefix);
    free(es->clean_prefix);
    free(es->want_prefix);
    free(es->owner_id);
    for (size_t i = 0; i < ETCD_SENDERS; i++) {
        ec_client_free(&es->chunks[i].ec);
        free(es->chunks[i].slots);
        free(es->chunks[i].ops);
        free(es->chunks[i].fcmp);
        free(es->chunks[i].fput);
    }
    fc_hmap_free(&es->round);
    free(es);
}

static void note(const struct st_store_config *cfg, int level, const char *msg)
{
    if (cfg->log != NULL)
        cfg->log(cfg->log_arg, level, msg);
}

static int64_t or_default(uint64_t v, int64_t dflt)
{
    return v ? (int64_t)v : dflt;
}

static int etcd_open(struct st_store *s, const struct st_store_config *cfg, char *err,
                     size_t errlen)
{
    struct etcd_store *es = calloc(1, sizeof *es);
    unsigned ops = cfg->max_txn_ops ? cfg->max_txn_ops : ETCD_DEFAULT_TXN_OPS;
    const char *prefix = cfg->prefix != NULL ? cfg->prefix : "/fence/";
    char msg[768];

    if (es == NULL) {
        snprintf(err, errlen, "etcd store: out of memory");
        return -1;
    }
    es->s = s;
    TAILQ_INIT(&es->acqs);
    TAILQ_INIT(&es->releasing);
    es->timeout_ms = or_default(cfg->timeout_ms, ETCD_DEFAULT_TIMEOUT_MS);
    es->ttl_ms = or_default(cfg->lease_ttl_ms, ETCD_DEFAULT_TTL_MS);
    es->margin_ms = or_default(cfg->margin_ms, ETCD_DEFAULT_MARGIN_MS);
    es->lock_delay_ms = or_default(cfg->lock_delay_ms, ETCD_DEFAULT_LOCK_DELAY_MS);
    es->handover_ms = or_default(cfg->handover_wait_ms, ETCD_DEFAULT_HANDOVER_MS);
    es->poll_ms = or_default(cfg->poll_ms, ETCD_DEFAULT_POLL_MS);
    if (ops <= ETCD_ACQ_NESTING) {
        snprintf(err, errlen, "etcd store: max_txn_ops must be above %d", ETCD_ACQ_NESTING);
        goto fail;
    }
    if (es->ttl_ms < 2000 || es->margin_ms * 2 >= es->ttl_ms) {
        snprintf(err, errlen,
                 "etcd store: lease_ttl must be at least 2 s and above twice "
                 "the margin");
        goto fail;
    }
    es->max_slots = ops / 2 < ops - ETCD_NESTING ? ops / 2 : ops - ETCD_NESTING;
    es->max_acq = ops > ETCD_ACQ_NESTING + 1 ? ops - ETCD_ACQ_NESTING : 1;
    if (es->max_acq > ETCD_ACQ_MAX)
        es->max_acq = ETCD_ACQ_MAX;
    if (cfg->endpoints == NULL || cfg->endpoints[0] == '\0') {
        snprintf(err, errlen, "etcd store: no endpoints");
        goto fail;
    }
    if ((es->ec = ec_client_new(cfg->endpoints, err, errlen)) == NULL ||
        (cfg->tls &&
         ec_client_set_tls(es->ec, cfg->tls_ca, cfg->tls_cert, cfg->tls_key, err, errlen) < 0))
        goto fail;
    for (size_t i = 0; i < ETCD_SENDERS; i++) {
        struct chunk *c = &es->chunks[i];
        c->es = es;
        if ((c->ec = ec_client_new(cfg->endpoints, err, errlen)) == NULL ||
            (cfg->tls &&
             ec_client_set_tls(c->ec, cfg->tls_ca, cfg->tls_cert, cfg->tls_key, err, errlen) < 0))
            goto fail;
        c->slots = calloc(es->max_slots, sizeof *c->slots);
        c->ops = calloc(es->max_slots, sizeof *c->ops);
        c->fcmp = calloc(2 * es->max_slots, sizeof *c->fcmp);
        c->fput = calloc(es->max_slots, sizeof *c->fput);
        if (c->slots == NULL || c->ops == NULL || c->fcmp == NULL || c->fput == NULL) {
            snprintf(err, errlen, "etcd store: out of memory");
            goto fail;
        }
    }
    es->owned = fc_hmap_new(64);
    es->round = fc_hmap_new(1024);
    if (es->owned == NULL || es->round == NULL || asprintf(&es->tok_prefix, "%stok/", prefix) < 0 ||
        asprintf(&es->own_prefix, "%sown/", prefix) < 0 ||
        asprintf(&es->clean_prefix, "%sclean/", prefix) < 0 ||
        asprintf(&es->want_prefix, "%swant/", prefix) < 0 ||
        (es->owner_id = strdup(cfg->owner_id != NULL ? cfg->owner_id : "fenceproxy")) == NULL) {
        snprintf(err, errlen, "etcd store: out of memory");
        goto fail;
    }
    es->fence_at = 0; /* nothing is owned before the first lease */
    publish(es);
    {
        /* Not a refusal: the proxy starts and answers 503 until etcd is
         * reachable, but the operator hears of it now. */
        struct ec_range_req q = {.key = es->tok_prefix, .prefix = 1, .count_only = 1};
        struct ec_kvs kvs;
        int erc = ec_range(es->ec, &q, ec_now_ms() + es->timeout_ms, &kvs, NULL);

        if (erc == EC_OK)
            snprintf(msg, sizeof msg, "etcd token store at %s, prefix %s: %" PRId64 " resources",
                     cfg->endpoints, prefix, kvs.count);
        else
            snprintf(msg, sizeof msg,
                     "etcd token store at %s not reachable yet (fenced "
                     "requests get 503): %.500s",
                     cfg->endpoints, ec_client_error(es->ec));
        note(cfg, erc == EC_OK ? 2 : 1, msg);
        ec_kvs_free(&kvs);
        /* The lease now, before the proxy listens: a request that comes at
         * once would otherwise meet a deadline still at 0 (503, ownership
         * lapsed) until the worker's first grant is through (a Raft commit,
         * tens of ms on a loaded cluster). Unreachable: the worker keeps
         * trying. The worker thread does not run yet. */
        if (erc == EC_OK)
            lease_tick(es, ec_now_ms());
    }
    st_store_set_impl(s, es);
    es->worker = st_worker_start_ticking(run_batch_cb, tick_cb, es);
    if (es->worker == NULL) {
        st_store_set_impl(s, NULL);
        snprintf(err, errlen, "etcd store: cannot start worker thread");
        goto fail;
    }
    return 0;
fail:
    es_free(es);
    return -1;
}

static int etcd_close(struct st_store *s)
{
    struct etcd_store *es = st_store_impl(s);

    if (es == NULL)
        return 0;
    /* Bounded: one txn deadline per queued batch at most, plus slack. */
    if (st_worker_stop(&es->worker, (unsigned)(es->timeout_ms / 1000) + ETCD_CLOSE_EXTRA_S) < 0) {
        fprintf(stderr, "etcd store: worker did not stop in time; leaking it\n");
        return -1;
    }
    /* What was not released cleanly goes with the lease; its next owner
     * waits the lock-delay. */
    if (es->lease != 0)
        (void)ec_lease_revoke(es->ec, es->lease, ec_now_ms() + es->timeout_ms);
    es_free(es);
    st_store_set_impl(s, NULL);
    return 0;
}

const struct st_store_ops st_store_etcd_ops = {
    .name = "etcd",
    .open = etcd_open,
    .submit = etcd_submit,
    .owns = 1,
    .close = etcd_close,
};

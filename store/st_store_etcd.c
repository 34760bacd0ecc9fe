/* st_store_etcd: the "etcd" token-store backend, a store that several
 * proxies share. The highest token of resource R lives in etcd under
 * PREFIX "tok/" R (R with '%' and NUL escaped as %25 and %00, so the mapping
 * is one-to-one and the key a C string), as a 20-digit zero-padded decimal
 * so that etcd's bytewise value compare orders tokens numerically. Raft makes
 * an acknowledged txn durable on a majority of the members and linearizable.
 *
 * One worker thread owns the etcd client (etcd/ec_client, synchronous; the
 * loop never waits on the network). Group commit: the worker takes every
 * queued request at once and serves them in txns of at most max_txn_ops - 2
 * operations (etcd counts the operations of nested txns against the limit of
 * the levels above; ours nest three deep). One txn, no compare, holds per
 * advanced key (advances of one key in a batch merge into one with the
 * largest token):
 *
 *   txn { create_revision(K) == 0 ? put K=V
 *         : txn { value(K) < V ? put K=V : range K } }
 *
 * (the nested txn covers the missing key: a value compare on a missing key
 * is false), so an advance raises only a lower highest and answers the
 * highest after it, and per get one range, placed after the advances
 * submitted before it. A txn is safe to repeat, which ec_client may do on
 * another member after one did not answer.
 *
 * Fail closed (S6): when no member answers in time, the batch's requests
 * complete with ST_STORE_EUNAVAIL, nothing is acknowledged and the next
 * requests try again; the proxy answers 503 meanwhile and never falls back
 * to a local highest. A stored value that is not a 20-digit token fails the
 * store for good (it cannot vouch for it). */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ec_client.h"
#include "st_store_internal.h"
#include "st_worker.h"

#define ETCD_TOKEN_DIGITS 20
#define ETCD_DEFAULT_TXN_OPS 128
#define ETCD_NESTING 2 /* levels below the group txn */
#define ETCD_DEFAULT_TIMEOUT_MS 2000
#define ETCD_CLOSE_EXTRA_S 10

/* One operation of a group txn: an advance of one key (merging every advance
 * of that key in the chunk) or one get. */
struct slot {
    int advance;
    char *key;                      /* etcd key, owned */
    uint64_t token;                 /* advance: the largest requested */
    char value[ETCD_TOKEN_DIGITS + 1];
    struct st_store_req *reqs;      /* the requests it answers, linked by next */
    struct ec_cmp cmp_create, cmp_value;
    struct ec_op put, range, inner_op;
    struct ec_txn_req inner, mid;
};

struct etcd_store {
    struct st_store *s;
    struct ec_client *ec;
    char *tok_prefix;   /* PREFIX "tok/" */
    size_t max_ops;     /* operations per group txn */
    int64_t timeout_ms;
    struct slot *slots; /* max_ops of them; worker thread */
    struct ec_op *ops;
    struct st_worker *worker; /* the worker thread */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The etcd key of a resource key: tok_prefix + key with '%' and NUL
 * escaped. Returns a malloc'd string or NULL. */
static char *etcd_key(const struct etcd_store *es, const char *key, size_t klen)
{
    size_t plen = strlen(es->tok_prefix), n = plen;
    char *out, *p;

    for (size_t i = 0; i < klen; i++)
        n += (key[i] == '%' || key[i] == '\0') ? 3 : 1;
    if ((out = malloc(n + 1)) == NULL)
        return NULL;
    memcpy(out, es->tok_prefix, plen);
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

/* Completes every request of a slot with rc and highest. */
static void slot_answer(struct slot *sl, int rc, uint64_t highest, struct st_store_req **done)
{
    struct st_store_req *r, *next;

    for (r = sl->reqs; r != NULL; r = next) {
        next = r->next;
        r->rc = rc;
        r->highest = rc == 0 ? highest : 0;
        r->next = *done;
        *done = r;
    }
    sl->reqs = NULL;
}

/* The highest a slot's answer reports: 0 and *highest, or -1 when the
 * answer is not what the txn asks for or the stored value is not a token. */
static int slot_result(const struct slot *sl, const struct ec_op_result *res, uint64_t *highest)
{
    const struct ec_kvs *kvs = &res->kvs;

    if (sl->advance) {
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
        if (sl->advance)
            return -1; /* it existed a moment ago in this very txn */
        *highest = 0;
        return 0;
    }
    return decode_token(kvs->kv[0].value, kvs->kv[0].value_len, highest);
}

/* Fills the ops of slot i of a chunk. */
static void slot_build(struct etcd_store *es, size_t i)
{
    struct slot *sl = &es->slots[i];
    struct ec_op *op = &es->ops[i];

    memset(op, 0, sizeof *op);
    if (!sl->advance) {
        op->type = EC_OP_RANGE;
        op->range.key = sl->key;
        return;
    }
    snprintf(sl->value, sizeof sl->value, "%020" PRIu64, sl->token);
    sl->cmp_create = (struct ec_cmp){.key = sl->key, .target = EC_TARGET_CREATE, .op = EC_EQUAL};
    sl->cmp_value = (struct ec_cmp){.key = sl->key, .target = EC_TARGET_VALUE, .op = EC_LESS,
                                    .value = sl->value, .value_len = ETCD_TOKEN_DIGITS};
    sl->put = (struct ec_op){.type = EC_OP_PUT, .range = {.key = sl->key}, .value = sl->value,
                             .value_len = ETCD_TOKEN_DIGITS};
    sl->range = (struct ec_op){.type = EC_OP_RANGE, .range = {.key = sl->key}};
    sl->inner = (struct ec_txn_req){.cmp = &sl->cmp_value, .ncmp = 1, .then = &sl->put,
                                    .nthen = 1, .els = &sl->range, .nelse = 1};
    sl->inner_op = (struct ec_op){.type = EC_OP_TXN, .txn = &sl->inner};
    sl->mid = (struct ec_txn_req){.cmp = &sl->cmp_create, .ncmp = 1, .then = &sl->put,
                                  .nthen = 1, .els = &sl->inner_op, .nelse = 1};
    op->type = EC_OP_TXN;
    op->txn = &sl->mid;
}

/* Serves one chunk of n slots in one group txn; answered requests go to
 * *done. Returns the ec_client result. Worker thread. */
static int run_chunk(struct etcd_store *es, size_t n, size_t n_adv, struct st_store_req **done)
{
    struct ec_txn_req outer = {.then = es->ops, .nthen = n};
    struct ec_txn_result res;
    double t0 = now_s();
    int erc;

    for (size_t i = 0; i < n; i++)
        slot_build(es, i);
    erc = ec_txn_nested(es->ec, &outer, ec_now_ms() + es->timeout_ms, &res);
    if (erc == EC_OK && (!res.succeeded || res.n != n))
        erc = EC_ERR_INTERNAL;
    if (erc != EC_OK) {
        char why[512];

        snprintf(why, sizeof why, "etcd: %s", ec_client_error(es->ec));
        st_store_set_unreachable(es->s, why);
        for (size_t i = 0; i < n; i++)
            slot_answer(&es->slots[i], ST_STORE_EUNAVAIL, 0, done);
        goto out;
    }
    st_store_set_unreachable(es->s, NULL);
    for (size_t i = 0; i < n; i++) {
        uint64_t h = 0;

        if (slot_result(&es->slots[i], &res.res[i], &h) != 0) {
            st_store_fail(es->s, "etcd: key %s holds no 20-digit token or the answer does "
                                 "not match the txn", es->slots[i].key);
            slot_answer(&es->slots[i], -1, 0, done);
            continue;
        }
        slot_answer(&es->slots[i], st_store_failed(es->s) ? -1 : 0, h, done);
    }
    if (n_adv > 0 && !st_store_failed(es->s)) {
        struct st_store_req *rep = st_store_req_commit(n_adv, now_s() - t0);
        if (rep != NULL) {
            rep->next = *done;
            *done = rep;
        }
    }
out:
    ec_txn_result_free(&res);
    for (size_t i = 0; i < n; i++) {
        free(es->slots[i].key);
        es->slots[i].key = NULL;
    }
    return erc;
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

/* The resource key of an etcd key under tok_prefix (the escapes undone),
 * in out (cap bytes at least strlen(ekey)). Its length, or -1 when ekey is
 * not one etcd_key() makes. */
static ssize_t resource_key(const struct etcd_store *es, const char *ekey, char *out)
{
    size_t plen = strlen(es->tok_prefix), n = 0;

    if (strncmp(ekey, es->tok_prefix, plen) != 0)
        return -1;
    for (const char *p = ekey + plen; *p != '\0'; p++) {
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
    return (ssize_t)n;
}

/* Serves one LIST (st_store_list) with one range over tok_prefix + the
 * escaped prefix, from the escaped cursor on (the cursor is a resource key:
 * the page's last), limit + 2 keys at most (the cursor itself may come back
 * first). Sets r->rc; a value that is not a token fails the store, as a
 * get's does. Returns the ec_client result. Worker thread. */
static int list_keys(struct etcd_store *es, struct st_store_req *r)
{
    const struct st_store_list_res *l = r->list;
    char *pfx = etcd_key(es, r->key, r->klen), *end = NULL, *after = NULL, *rk = NULL;
    struct ec_range_req q = {0};
    struct ec_kvs kvs = {0};
    size_t i, elen;
    int erc = EC_ERR_INTERNAL;

    r->rc = ST_STORE_EUNAVAIL;
    if (pfx == NULL || (end = strdup(pfx)) == NULL ||
        (l->alen > 0 && (after = etcd_key(es, l->after, l->alen)) == NULL))
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

    while (batch != NULL) {
        size_t n = 0, n_adv = 0;

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
        /* Take requests in order until the txn is full. */
        while (batch != NULL) {
            struct slot *sl = NULL;
            char *k;

            r = batch;
            if (r->kind == ST_REQ_LIST) {
                /* After the advances before it; one range of its own. */
                if (n > 0)
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
            /* The operator's reset (ST_REQ_SET) is not done through the etcd
             * backend yet (etcdctl put is): refused, never taken for a get. */
            k = r->kind == ST_REQ_SET ? NULL : etcd_key(es, r->key, r->klen);
            if (k == NULL) {
                batch = r->next;
                r->rc = ST_STORE_EUNAVAIL;
                r->next = done;
                done = r;
                continue;
            }
            if (r->kind == ST_REQ_ADVANCE) {
                for (size_t i = 0; i < n && sl == NULL; i++)
                    if (es->slots[i].advance && strcmp(es->slots[i].key, k) == 0)
                        sl = &es->slots[i];
            }
            if (sl != NULL) {
                free(k);
                if (r->token > sl->token)
                    sl->token = r->token;
            } else {
                if (n == es->max_ops) {
                    free(k);
                    break;
                }
                sl = &es->slots[n++];
                sl->advance = r->kind == ST_REQ_ADVANCE;
                sl->key = k;
                sl->token = r->token;
                sl->reqs = NULL;
                n_adv += sl->advance;
            }
            batch = r->next;
            slot_add(sl, r);
        }
        if (n > 0 && run_chunk(es, n, n_adv, &done) == EC_ERR_UNAVAILABLE)
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

static void etcd_submit(struct st_store *s, struct st_store_req *req)
{
    struct etcd_store *es = st_store_impl(s);

    st_worker_submit(es->worker, req);
}

static void es_free(struct etcd_store *es)
{
    if (es == NULL)
        return;
    ec_client_free(&es->ec);
    free(es->tok_prefix);
    free(es->slots);
    free(es->ops);
    free(es);
}

static void note(const struct st_store_config *cfg, int level, const char *msg)
{
    if (cfg->log != NULL)
        cfg->log(cfg->log_arg, level, msg);
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
    es->timeout_ms = cfg->timeout_ms ? (int64_t)cfg->timeout_ms : ETCD_DEFAULT_TIMEOUT_MS;
    if (ops <= ETCD_NESTING) {
        snprintf(err, errlen, "etcd store: max_txn_ops must be above %d", ETCD_NESTING);
        goto fail;
    }
    es->max_ops = ops - ETCD_NESTING;
    if (cfg->endpoints == NULL || cfg->endpoints[0] == '\0') {
        snprintf(err, errlen, "etcd store: no endpoints");
        goto fail;
    }
    if ((es->ec = ec_client_new(cfg->endpoints, err, errlen)) == NULL)
        goto fail;
    es->slots = calloc(es->max_ops, sizeof *es->slots);
    es->ops = calloc(es->max_ops, sizeof *es->ops);
    if (es->slots == NULL || es->ops == NULL ||
        asprintf(&es->tok_prefix, "%stok/", prefix) < 0) {
        es->tok_prefix = NULL;
        snprintf(err, errlen, "etcd store: out of memory");
        goto fail;
    }
    {
        /* Not a refusal: the proxy starts and answers 503 until etcd is
         * reachable, but the operator hears of it now. */
        struct ec_range_req q = {.key = es->tok_prefix, .prefix = 1, .count_only = 1};
        struct ec_kvs kvs;
        int erc = ec_range(es->ec, &q, ec_now_ms() + es->timeout_ms, &kvs, NULL);

        if (erc == EC_OK)
            snprintf(msg, sizeof msg, "etcd token store at %s, prefix %s: %" PRId64
                     " resources", cfg->endpoints, prefix, kvs.count);
        else
            snprintf(msg, sizeof msg, "etcd token store at %s not reachable yet (fenced "
                     "requests get 503): %.500s", cfg->endpoints, ec_client_error(es->ec));
        note(cfg, erc == EC_OK ? 2 : 1, msg);
        ec_kvs_free(&kvs);
    }
    st_store_set_impl(s, es);
    es->worker = st_worker_start(run_batch_cb, es);
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
    es_free(es);
    st_store_set_impl(s, NULL);
    return 0;
}

const struct st_store_ops st_store_etcd_ops = {
    .name = "etcd",
    .open = etcd_open,
    .submit = etcd_submit,
    .close = etcd_close,
};

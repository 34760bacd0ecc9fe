/* The etcd token store (store/st_store_etcd.c) against real etcd members:
 * get/advance semantics and the 20-digit encoding as etcd holds it, keys with
 * '%' and NUL kept apart, an advance of a resource not owned refused,
 * ownership between two stores (two proxies): the hand-over when the owner
 * releases on request, the bounded wait (ST_STORE_EBUSY) when it does not,
 * the lock-delay after an owner that did not release cleanly, a deposed
 * owner's advance refused (ST_STORE_ELOST); group
 * commit (many advances in few txns, the nested txn within etcd's default
 * --max-txn-ops of 128, and one op more refused by etcd), a stored value
 * that is not a token failing the store, an unreachable cluster failing
 * every call (ST_STORE_EUNAVAIL, never a local answer), and on a 3-member
 * cluster the leader killed under load: every acknowledged advance is still
 * there afterwards and advances resume. */
#include <criterion/criterion.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "st_store.h"
#include "ts_etcd.h"

static struct ts_etcd E;
static char *DIR_;
static int in_dispatch;

static void start(int n)
{
    signal(SIGPIPE, SIG_IGN);
    DIR_ = ts_tempdir("storeetcd");
    cr_assert_not_null(DIR_);
    cr_assert_eq(ts_etcd_start(&E, DIR_, n), 0, "etcd fixture failed");
}

static void setup1(void)
{
    start(1);
}

static void setup3(void)
{
    start(3);
}

static void teardown(void)
{
    ts_etcd_stop(&E);
    if (DIR_)
        ts_rmrf(DIR_);
    free(DIR_);
    DIR_ = NULL;
}

TestSuite(etcdstore, .init = setup1, .fini = teardown, .timeout = 60);
TestSuite(etcdstore3, .init = setup3, .fini = teardown, .timeout = 90);

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct st_store *open_own(const char *eps, unsigned max_ops, uint64_t timeout_ms,
                                 uint64_t lock_delay_ms, uint64_t handover_ms)
{
    struct st_store_config cfg = {.backend = ST_STORE_ETCD,
                                  .endpoints = eps,
                                  .prefix = "/t/",
                                  .max_txn_ops = max_ops,
                                  .timeout_ms = timeout_ms,
                                  .lock_delay_ms = lock_delay_ms,
                                  .handover_wait_ms = handover_ms};
    char err[256] = "";
    struct st_store *s = st_store_open(&cfg, err, sizeof err);
    cr_assert_not_null(s, "open: %s", err);
    return s;
}

/* A store whose lock-delay is 1 ms: these tests are about the store's
 * answers, not about the wait (one test below measures that). */
static struct st_store *open_eps(const char *eps, unsigned max_ops, uint64_t timeout_ms)
{
    return open_own(eps, max_ops, timeout_ms, 1, 0);
}

static struct st_store *open_store(void)
{
    return open_eps(E.endpoints, 0, 0);
}

struct res {
    int calls;
    int rc;
    uint64_t highest;
};

static void on_done(void *arg, int rc, uint64_t highest)
{
    struct res *r = arg;
    cr_assert(in_dispatch, "callback outside st_store_dispatch()");
    r->calls++;
    r->rc = rc;
    r->highest = highest;
}

static void dispatch(struct st_store *s)
{
    in_dispatch = 1;
    st_store_dispatch(s);
    in_dispatch = 0;
}

static void run_until(struct st_store *s, const int *done, int want, double secs)
{
    double end = now() + secs;
    while (*done < want) {
        struct pollfd p = {.fd = st_store_notify_fd(s), .events = POLLIN};
        cr_assert_lt(now(), end, "timed out: %d of %d completions", *done, want);
        if (poll(&p, 1, 50) > 0)
            dispatch(s);
    }
}

static struct res get1(struct st_store *s, const char *k, size_t klen)
{
    struct res r = {0, 99, 99};
    st_store_get(s, k, klen, on_done, &r);
    run_until(s, &r.calls, 1, 20);
    return r;
}

static struct res adv1(struct st_store *s, const char *k, size_t klen, uint64_t t)
{
    struct res r = {0, 99, 99};
    st_store_advance(s, k, klen, t, on_done, &r);
    run_until(s, &r.calls, 1, 20);
    return r;
}

#define GET(s, k)    get1(s, k, strlen(k))
#define ADV(s, k, t) adv1(s, k, strlen(k), t)

static const char b64tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64(const char *in, char *out)
{
    size_t n = strlen(in), o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)in[i] << 16;
        if (i + 1 < n)
            v |= (unsigned char)in[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)in[i + 2];
        out[o++] = b64tab[(v >> 18) & 63];
        out[o++] = b64tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? b64tab[v & 63] : '=';
    }
    out[o] = '\0';
}

/* The raw value etcd holds for key, base64 as the gateway answers it, found
 * in the range answer: 1 if value_b64 is there. */
static int etcd_holds(const char *key, const char *value)
{
    char body[512], out[4096], kb[256], vb[256];

    b64(key, kb);
    b64(value, vb);
    snprintf(body, sizeof body, "{\"key\":\"%s\"}", kb);
    cr_assert_eq(ts_etcd_post(&E, 0, "/v3/kv/range", body, out, sizeof out), 200, "%s", out);
    return strstr(out, vb) != NULL;
}

Test(etcdstore, semantics_and_encoding)
{
    struct st_store *s = open_store();
    struct res r;

    r = ADV(s, "/k", 5); /* not owned yet: refused, nothing raised */
    cr_expect_eq(r.rc, ST_STORE_ELOST);
    cr_expect_not(etcd_holds("/t/tok//k", "00000000000000000005"));
    r = GET(s, "/never");
    cr_expect_eq(r.rc, 0);
    cr_expect_eq(r.highest, 0);
    r = GET(s, "/k"); /* takes it */
    cr_expect_eq(r.rc, 0);
    r = ADV(s, "/k", 5);
    cr_expect_eq(r.rc, 0);
    cr_expect_eq(r.highest, 5);
    r = ADV(s, "/k", 3); /* lower: stays */
    cr_expect_eq(r.rc, 0);
    cr_expect_eq(r.highest, 5);
    r = ADV(s, "/k", 5); /* equal: stays */
    cr_expect_eq(r.highest, 5);
    r = ADV(s, "/k", 10); /* "10" < "5" as text: the padding makes it numeric */
    cr_expect_eq(r.highest, 10);
    r = ADV(s, "/k", 9);
    cr_expect_eq(r.highest, 10);
    r = ADV(s, "/k", UINT64_MAX);
    cr_expect_eq(r.highest, UINT64_MAX);
    cr_expect(etcd_holds("/t/tok//k", "18446744073709551615"));
    r = GET(s, "/small");
    r = ADV(s, "/small", 7);
    cr_expect(etcd_holds("/t/tok//small", "00000000000000000007"), "20-digit value");
    /* '%' and NUL are escaped so that these keys stay apart. */
    r = get1(s, "/a\0b", 4);
    r = adv1(s, "/a\0b", 4, 11);
    cr_expect_eq(r.highest, 11);
    r = GET(s, "/a%00b");
    r = ADV(s, "/a%00b", 12);
    cr_expect_eq(r.highest, 12);
    r = get1(s, "/a\0b", 4);
    cr_expect_eq(r.highest, 11);
    r = GET(s, "/a");
    cr_expect_eq(r.highest, 0);
    r = GET(s, "/k");
    cr_expect_eq(r.highest, UINT64_MAX);
    cr_expect_eq(st_store_failed(s), 0);
    cr_expect_eq(st_store_unreachable(s, NULL, 0), 0);
    st_store_close(&s);
}

/* A's ask hook: gives the resource up at once (what px_fence does once
 * nothing of it is in flight), counting the asks. */
struct asker {
    struct st_store *s;
    int asks;
    int release;
};

static void on_ask(void *arg, const char *key, size_t klen)
{
    struct asker *k = arg;
    cr_assert(in_dispatch, "ask outside st_store_dispatch()");
    k->asks++;
    if (k->release)
        st_store_release(k->s, key, klen, NULL, NULL);
}

/* Runs a's and b's loops until b's request is answered. */
static void run_two(struct st_store *a, struct st_store *b, const struct res *r, double secs)
{
    double end = now() + secs;
    while (r->calls < 1) {
        struct pollfd p[2] = {{.fd = st_store_notify_fd(a), .events = POLLIN},
                              {.fd = st_store_notify_fd(b), .events = POLLIN}};
        cr_assert_lt(now(), end, "timed out");
        if (poll(p, 2, 20) > 0) {
            if (p[0].revents)
                dispatch(a);
            if (p[1].revents)
                dispatch(b);
        }
    }
}

Test(etcdstore, handover_between_two_stores)
{
    struct st_store *a = open_store(), *b = open_own(E.endpoints, 0, 0, 1, 3000);
    struct asker ka = {.s = a, .release = 1};
    struct res r = {0, 99, 99};
    double t0;

    st_store_set_ask_hook(a, on_ask, &ka);
    cr_assert_eq(GET(a, "/shared").rc, 0);
    cr_expect_eq(ADV(a, "/shared", 33).highest, 33);
    /* b asks; a is told, releases cleanly, b takes it with a's highest. */
    t0 = now();
    st_store_get(b, "/shared", 7, on_done, &r);
    run_two(a, b, &r, 10);
    cr_expect_eq(r.rc, 0);
    cr_expect_eq(r.highest, 33);
    cr_expect_eq(ka.asks, 1);
    fprintf(stderr, "hand-over between two stores: %.0f ms\n", (now() - t0) * 1000);
    cr_expect_eq(ADV(b, "/shared", 34).highest, 34);
    /* a no longer owns it: its advance raises nothing. */
    cr_expect_eq(ADV(a, "/shared", 35).rc, ST_STORE_ELOST);
    cr_expect(etcd_holds("/t/tok//shared", "00000000000000000034"));
    st_store_close(&a);
    st_store_close(&b);
}

Test(etcdstore, an_owner_that_does_not_hand_over_makes_the_wait_end_busy)
{
    struct st_store *a = open_store(), *b = open_own(E.endpoints, 0, 0, 1, 400);
    struct asker ka = {.s = a, .release = 0};
    struct res r = {0, 99, 99};
    double t0;

    st_store_set_ask_hook(a, on_ask, &ka);
    cr_assert_eq(GET(a, "/held").rc, 0);
    cr_expect_eq(ADV(a, "/held", 5).highest, 5);
    t0 = now();
    st_store_get(b, "/held", 5, on_done, &r);
    run_two(a, b, &r, 10);
    cr_expect_eq(r.rc, ST_STORE_EBUSY);
    cr_expect_geq(now() - t0, 0.39, "answered before the wait ended");
    cr_expect_eq(ka.asks, 1, "the owner was asked once");
    cr_expect_eq(ADV(a, "/held", 6).highest, 6, "the owner still owns it");
    cr_expect_eq(ADV(b, "/held", 7).rc, ST_STORE_ELOST);
    st_store_close(&a);
    st_store_close(&b);
}

/* An owner that goes without releasing (its lease revoked: the same keys
 * vanish as on expiry): the next owner's get waits the lock-delay; after a
 * clean release it does not. */
Test(etcdstore, lock_delay_after_an_unclean_end_only)
{
    struct st_store *a = open_store(), *b;
    struct res r;
    double t0, waited;

    cr_assert_eq(GET(a, "/ld").rc, 0);
    cr_expect_eq(ADV(a, "/ld", 9).highest, 9);
    st_store_close(&a); /* revokes the lease: own/R goes, no clean/R */
    b = open_own(E.endpoints, 0, 0, 1500, 0);
    t0 = now();
    r = GET(b, "/ld");
    waited = now() - t0;
    cr_expect_eq(r.rc, 0);
    cr_expect_eq(r.highest, 9);
    cr_expect_geq(waited, 1.5, "the lock-delay was not waited: %.3f s", waited);
    /* b releases cleanly; a third store takes it without the wait. */
    {
        struct res rel = {0, 99, 99};
        st_store_release(b, "/ld", 3, on_done, &rel);
        run_until(b, &rel.calls, 1, 10);
        cr_expect_eq(rel.rc, 0);
    }
    a = open_own(E.endpoints, 0, 0, 1500, 0);
    t0 = now();
    r = GET(a, "/ld");
    waited = now() - t0;
    cr_expect_eq(r.rc, 0);
    cr_expect_eq(r.highest, 9);
    cr_expect_lt(waited, 1.0, "waited %.3f s after a clean release", waited);
    /* A resource never written needs no wait either. */
    t0 = now();
    cr_expect_eq(GET(b, "/fresh").rc, 0);
    cr_expect_lt(now() - t0, 1.0);
    st_store_close(&a);
    st_store_close(&b);
}

struct commits {
    int n;
    size_t max_batch, total;
};

static void on_commit(void *arg, size_t batch, double seconds)
{
    struct commits *c = arg;
    (void)seconds;
    c->n++;
    c->total += batch;
    if (batch > c->max_batch)
        c->max_batch = batch;
}

struct many {
    int done, failed, bad;
    uint64_t want;
};

static void on_many(void *arg, int rc, uint64_t highest)
{
    struct many *m = arg;
    m->done++;
    if (rc != 0)
        m->failed++;
    else if (highest < m->want)
        m->bad++;
}

/* 1000 advances on 300 owned keys queued at once: a few txns of at most
 * 64 keys each (128 compares in the flat txn, two per key; the first ones,
 * of keys never written, go nested: 64 ops with three nested levels fit),
 * every answer right. */
Test(etcdstore, group_commit_within_max_txn_ops)
{
    struct st_store *s = open_store();
    struct commits c = {0};
    static struct many m[1000];
    char key[32];
    struct res r;

    for (int k = 0; k < 300; k++) {
        snprintf(key, sizeof key, "/g/%d", k);
        cr_assert_eq(GET(s, key).rc, 0);
    }
    st_store_set_commit_hook(s, on_commit, &c);
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "/g/%d", i % 300);
        m[i].want = (uint64_t)i + 1;
        st_store_advance(s, key, strlen(key), (uint64_t)i + 1, on_many, &m[i]);
    }
    {
        double end = now() + 30;
        int done = 0;
        while (done < 1000) {
            struct pollfd p = {.fd = st_store_notify_fd(s), .events = POLLIN};
            cr_assert_lt(now(), end, "timed out");
            if (poll(&p, 1, 50) > 0)
                dispatch(s);
            done = 0;
            for (int i = 0; i < 1000; i++)
                done += m[i].done;
        }
    }
    for (int i = 0; i < 1000; i++) {
        cr_expect_eq(m[i].failed, 0, "advance %d failed", i);
        cr_expect_eq(m[i].bad, 0, "advance %d answered below its token", i);
    }
    for (int k = 0; k < 300; k++) {
        snprintf(key, sizeof key, "/g/%d", k);
        r = GET(s, key);
        /* the largest i with i % 300 == k, plus one */
        cr_expect_eq(r.highest, (uint64_t)(k + 900 < 1000 ? k + 901 : k + 601), "%s", key);
    }
    cr_expect_leq(c.max_batch, 64, "a txn with %zu keys", c.max_batch);
    cr_expect_eq(c.max_batch, 64, "the first txn is full: %zu", c.max_batch);
    cr_expect_lt(c.n, 40, "%d txns for 1000 advances: no group commit", c.n);
    cr_expect_eq(st_store_failed(s), 0);
    st_store_close(&s);
}

/* The same with two ops more than etcd allows (65 keys per txn, 130
 * compares in the flat txn; 65 advances, one txn): etcd refuses the txn, the advances fail
 * (unavailable), nothing is acknowledged. This shows that the limit above
 * is etcd's and the compares are counted right. */
Test(etcdstore, one_op_over_etcds_limit_is_refused)
{
    struct st_store *s = open_eps(E.endpoints, 130, 5000);
    static struct many m[65];
    struct res first = {0, 99, 99};
    char key[32];
    int done = 0;
    double end = now() + 40;

    for (int i = 0; i < 65; i++) {
        snprintf(key, sizeof key, "/over/%d", i);
        cr_assert_eq(GET(s, key).rc, 0);
    }
    cr_assert_eq(GET(s, "/first").rc, 0);

    /* etcd stopped: the worker sits in the first request's txn while the
     * 65 queue up behind it, so they are one batch. */
    cr_assert_eq(ts_proc_signal(&E.m[0], SIGSTOP), 0);
    st_store_get(s, "/first", 6, on_done, &first);
    ts_sleep_ms(200);
    for (int i = 0; i < 65; i++) {
        snprintf(key, sizeof key, "/over/%d", i);
        m[i].want = 1;
        st_store_advance(s, key, strlen(key), 1, on_many, &m[i]);
    }
    cr_assert_eq(ts_proc_signal(&E.m[0], SIGCONT), 0);
    while (done < 65) {
        struct pollfd p = {.fd = st_store_notify_fd(s), .events = POLLIN};
        cr_assert_lt(now(), end, "timed out");
        if (poll(&p, 1, 50) > 0)
            dispatch(s);
        done = 0;
        for (int i = 0; i < 65; i++)
            done += m[i].done;
    }
    run_until(s, &first.calls, 1, 10);
    cr_expect_eq(first.rc, 0);
    for (int i = 0; i < 65; i++)
        cr_expect_eq(m[i].failed, 1, "advance %d acknowledged in an oversized txn", i);
    cr_expect(st_store_unreachable(s, NULL, 0));
    st_store_close(&s);
}

/* Advances queued while the worker waits on a stopped etcd (behind a get
 * of "/first"), so that they are one batch; run to their answers. */
static void one_batch(struct st_store *s, char keys[][32], uint64_t *tokens, struct res *m, int n)
{
    struct res first = {0, 99, 99};
    int done = 0;
    double end = now() + 30;

    cr_assert_eq(ts_proc_signal(&E.m[0], SIGSTOP), 0);
    st_store_get(s, "/first", 6, on_done, &first);
    ts_sleep_ms(200);
    for (int i = 0; i < n; i++) {
        m[i] = (struct res){0, 99, 99};
        st_store_advance(s, keys[i], strlen(keys[i]), tokens[i], on_done, &m[i]);
    }
    cr_assert_eq(ts_proc_signal(&E.m[0], SIGCONT), 0);
    while (done < n) {
        struct pollfd p = {.fd = st_store_notify_fd(s), .events = POLLIN};
        cr_assert_lt(now(), end, "timed out");
        if (poll(&p, 1, 50) > 0)
            dispatch(s);
        done = 0;
        for (int i = 0; i < n; i++)
            done += m[i].calls;
    }
    run_until(s, &first.calls, 1, 10);
    cr_assert_eq(first.rc, 0);
}

/* A batch of advances of keys written before (the flat txn) with one key
 * deposed behind the store's back (own/R deleted): the flat txn's compares
 * fail as a whole, nothing of it is written, and the nested txn raises the
 * others and refuses the deposed one (ELOST). Then a batch with a key never
 * written among written ones (its value compare fails the flat txn): all
 * raised, the new one created. */
Test(etcdstore, one_deposed_key_in_a_flat_batch_raises_the_others)
{
    struct st_store *s = open_store();
    static struct res m[11];
    char keys[11][32], tkey[48], body[256], out[1024], kb[64];
    uint64_t tok[11];

    for (int i = 0; i < 10; i++) {
        snprintf(keys[i], sizeof keys[i], "/mix/%d", i);
        cr_assert_eq(GET(s, keys[i]).rc, 0);
        cr_assert_eq(ADV(s, keys[i], 10).highest, 10);
        tok[i] = 20;
    }
    cr_assert_eq(GET(s, "/first").rc, 0);
    b64("/t/own//mix/3", kb);
    snprintf(body, sizeof body, "{\"key\":\"%s\"}", kb);
    cr_assert_eq(ts_etcd_post(&E, 0, "/v3/kv/deleterange", body, out, sizeof out), 200, "%s", out);
    one_batch(s, keys, tok, m, 10);
    for (int i = 0; i < 10; i++) {
        snprintf(tkey, sizeof tkey, "/t/tok//mix/%d", i);
        if (i == 3) {
            cr_expect_eq(m[i].rc, ST_STORE_ELOST, "the deposed key: rc %d", m[i].rc);
            cr_expect(etcd_holds(tkey, "00000000000000000010"), "the deposed key was raised");
            continue;
        }
        cr_expect_eq(m[i].rc, 0, "key %d: rc %d", i, m[i].rc);
        cr_expect_eq(m[i].highest, 20, "key %d", i);
        cr_expect(etcd_holds(tkey, "00000000000000000020"), "%s", tkey);
    }
    /* A key never written among written ones. */
    snprintf(keys[3], sizeof keys[3], "/mix/new");
    cr_assert_eq(GET(s, keys[3]).rc, 0);
    for (int i = 0; i < 10; i++)
        tok[i] = 30;
    one_batch(s, keys, tok, m, 10);
    for (int i = 0; i < 10; i++) {
        cr_expect_eq(m[i].rc, 0, "%s: rc %d", keys[i], m[i].rc);
        cr_expect_eq(m[i].highest, 30, "%s", keys[i]);
    }
    cr_expect(etcd_holds("/t/tok//mix/new", "00000000000000000030"));
    cr_expect(etcd_holds("/t/tok//mix/9", "00000000000000000030"));
    st_store_close(&s);
}

Test(etcdstore, a_value_that_is_no_token_fails_the_store)
{
    struct st_store *s = open_store();
    char body[256], out[1024], kb[64], vb[64];
    struct res r;

    b64("/t/tok//bad", kb);
    b64("12", vb);
    snprintf(body, sizeof body, "{\"key\":\"%s\",\"value\":\"%s\"}", kb, vb);
    cr_assert_eq(ts_etcd_post(&E, 0, "/v3/kv/put", body, out, sizeof out), 200, "%s", out);
    r = GET(s, "/bad");
    cr_expect_eq(r.rc, -1);
    cr_expect(st_store_failed(s));
    cr_expect_not_null(strstr(st_store_error(s), "/t/tok//bad"), "%s", st_store_error(s));
    r = ADV(s, "/other", 1); /* fail closed for good */
    cr_expect_eq(r.rc, -1);
    st_store_close(&s);
}

Test(etcdstore, unreachable_fails_every_call)
{
    char eps[64];
    struct st_store *s;
    struct res r;
    double t0;
    char why[256];

    snprintf(eps, sizeof eps, "127.0.0.1:%d", ts_free_port());
    s = open_eps(eps, 0, 500);
    t0 = now();
    r = GET(s, "/k");
    cr_expect_eq(r.rc, ST_STORE_EUNAVAIL);
    r = ADV(s, "/k", 1);
    cr_expect_eq(r.rc, ST_STORE_ELOST, "not owned: refused, not answered locally");
    cr_expect_lt(now() - t0, 3.0);
    cr_expect(st_store_unreachable(s, why, sizeof why));
    cr_expect_eq(st_store_failed(s), 0, "not failed for good");
    st_store_close(&s);

    /* A live store whose only member stops: calls fail, not answered from
     * anything local. */
    s = open_eps(E.endpoints, 0, 500);
    cr_assert_eq(GET(s, "/k").rc, 0);
    r = ADV(s, "/k", 8);
    cr_expect_eq(r.rc, 0);
    cr_assert_eq(ts_etcd_kill(&E, 0, SIGKILL), 0);
    r = ADV(s, "/k", 9);
    cr_expect_eq(r.rc, ST_STORE_EUNAVAIL);
    r = GET(s, "/k");
    cr_expect_eq(r.rc, ST_STORE_EUNAVAIL);
    st_store_close(&s);
}

/* Load on a 3-member cluster; the leader is killed with SIGKILL a moment
 * in. Each round advances 20 keys of its own (so that no later advance can
 * hide a lost one) and records which were acknowledged. Afterwards a fresh
 * store on the surviving members holds every acknowledged token, and
 * advances went on after the kill. */
#define LOAD_KEYS       20
#define LOAD_MAX_ROUNDS 4000

struct load_state {
    struct many m[LOAD_MAX_ROUNDS][LOAD_KEYS];
    struct res got[LOAD_MAX_ROUNDS][LOAD_KEYS];
};

Test(etcdstore3, leader_killed_under_load_loses_no_acknowledged_advance)
{
    struct st_store *s = open_eps(E.endpoints, 0, 1500);
    struct load_state *L = calloc(1, sizeof *L);
    int leader = -1, rounds = 0, after_ok = 0, failed = 0, acked = 0, lost = 0, got = 0;
    double t0 = now(), killed_at = 0;
    char key[48], eps[256] = "";

    cr_assert_not_null(L);
    while (now() - t0 < 5.0 && rounds < LOAD_MAX_ROUNDS) {
        int done = 0, r = rounds++;
        double end = now() + 10;

        if (killed_at == 0 && now() - t0 > 1.0) {
            leader = ts_etcd_leader(&E);
            cr_assert_geq(leader, 0, "no leader");
            cr_assert_eq(ts_etcd_kill(&E, leader, SIGKILL), 0);
            killed_at = now();
        }
        {
            /* Take the round's keys first, as the proxy does before it
             * advances (a key not owned yet is refused). */
            struct res took[LOAD_KEYS];
            int ntook = 0;
            memset(took, 0, sizeof took);
            for (int k = 0; k < LOAD_KEYS; k++) {
                snprintf(key, sizeof key, "/load/%d/%d", r, k);
                st_store_get(s, key, strlen(key), on_done, &took[k]);
            }
            while (ntook < LOAD_KEYS) {
                struct pollfd p = {.fd = st_store_notify_fd(s), .events = POLLIN};
                cr_assert_lt(now(), end, "timed out taking the keys");
                if (poll(&p, 1, 50) > 0)
                    dispatch(s);
                ntook = 0;
                for (int k = 0; k < LOAD_KEYS; k++)
                    ntook += took[k].calls;
            }
        }
        for (int k = 0; k < LOAD_KEYS; k++) {
            snprintf(key, sizeof key, "/load/%d/%d", r, k);
            L->m[r][k].want = (uint64_t)r + 1;
            st_store_advance(s, key, strlen(key), (uint64_t)r + 1, on_many, &L->m[r][k]);
        }
        while (done < LOAD_KEYS) {
            struct pollfd p = {.fd = st_store_notify_fd(s), .events = POLLIN};
            cr_assert_lt(now(), end, "timed out");
            if (poll(&p, 1, 50) > 0)
                dispatch(s);
            done = 0;
            for (int k = 0; k < LOAD_KEYS; k++)
                done += L->m[r][k].done;
        }
        for (int k = 0; k < LOAD_KEYS; k++) {
            cr_expect_eq(L->m[r][k].bad, 0);
            if (L->m[r][k].failed == 0) {
                acked++;
                after_ok += killed_at > 0;
            } else {
                failed++;
            }
        }
    }
    st_store_close(&s);
    cr_assert_gt(killed_at, 0);
    cr_expect_gt(after_ok, 10 * LOAD_KEYS, "advances did not resume after the kill (%d ok)",
                 after_ok);
    for (int i = 0; i < E.n; i++) {
        if (i == leader)
            continue;
        snprintf(eps + strlen(eps), sizeof eps - strlen(eps), "%s127.0.0.1:%d", eps[0] ? "," : "",
                 E.client_port[i]);
    }
    s = open_eps(eps, 0, 3000);
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < LOAD_KEYS; k++) {
            snprintf(key, sizeof key, "/load/%d/%d", r, k);
            st_store_get(s, key, strlen(key), on_done, &L->got[r][k]);
        }
    }
    {
        double end = now() + 30;
        while (got < rounds * LOAD_KEYS) {
            struct pollfd p = {.fd = st_store_notify_fd(s), .events = POLLIN};
            cr_assert_lt(now(), end, "timed out reading back");
            if (poll(&p, 1, 50) > 0)
                dispatch(s);
            got = 0;
            for (int r = 0; r < rounds; r++)
                for (int k = 0; k < LOAD_KEYS; k++)
                    got += L->got[r][k].calls;
        }
    }
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < LOAD_KEYS; k++) {
            cr_expect_eq(L->got[r][k].rc, 0);
            if (L->m[r][k].failed == 0 && L->got[r][k].highest != (uint64_t)r + 1)
                lost++;
        }
    }
    fprintf(stderr,
            "leader kill: %d rounds, %d advances acknowledged (%d after the kill), %d "
            "failed during the election, %d acknowledged ones lost\n",
            rounds, acked, after_ok, failed, lost);
    cr_expect_eq(lost, 0, "%d acknowledged advances are not in etcd", lost);
    st_store_close(&s);
    free(L);
}

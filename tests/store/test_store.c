/* The token store, both backends: get/advance semantics, callbacks only from
 * dispatch, odd keys, closing with work queued; for the file backend also
 * persistence across reopen, group commit, fail-closed on an LMDB error and
 * a throughput floor. Each test uses its own temp dir. */
#include <criterion/criterion.h>

#include "ts_proc.h"
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "st_store.h"

static char tmpdir[64];
static char dbdir[96];
static int in_dispatch;

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fence-store-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
    snprintf(dbdir, sizeof dbdir, "%s/db", tmpdir);
}

static void teardown(void)
{
    ts_rmrf(dbdir);
    ts_rmrf(tmpdir);
}

TestSuite(store, .init = setup, .fini = teardown, .timeout = 60);

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct st_store *open_store(enum st_store_backend b, size_t map_size)
{
    struct st_store_config cfg = {.backend = b, .path = dbdir, .map_size = map_size};
    char err[256] = "";
    struct st_store *s = st_store_open(&cfg, err, sizeof err);
    cr_assert_not_null(s, "open: %s", err);
    cr_assert_geq(st_store_notify_fd(s), 0);
    return s;
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

/* Polls the notify fd and dispatches until *done reaches want (bounded). */
static void run_until(struct st_store *s, const int *done, int want)
{
    double end = now() + 20;
    while (*done < want) {
        struct pollfd p = {.fd = st_store_notify_fd(s), .events = POLLIN};
        cr_assert_lt(now(), end, "timed out: %d of %d completions", *done, want);
        if (poll(&p, 1, 100) > 0)
            dispatch(s);
    }
}

/* Counts completions of many requests with one shared counter. */
struct many {
    int done;
    int failed;
    uint64_t max_seen;
};

static void on_many(void *arg, int rc, uint64_t highest)
{
    struct many *m = arg;
    cr_assert(in_dispatch, "callback outside st_store_dispatch()");
    m->done++;
    if (rc != 0)
        m->failed++;
    if (highest > m->max_seen)
        m->max_seen = highest;
}

static struct res get1(struct st_store *s, const char *k, size_t klen)
{
    struct res r = {0, 99, 99};
    st_store_get(s, k, klen, on_done, &r);
    run_until(s, &r.calls, 1);
    cr_expect_eq(r.calls, 1);
    return r;
}

static struct res adv1(struct st_store *s, const char *k, size_t klen, uint64_t t)
{
    struct res r = {0, 99, 99};
    st_store_advance(s, k, klen, t, on_done, &r);
    run_until(s, &r.calls, 1);
    cr_expect_eq(r.calls, 1);
    return r;
}

#define GET(s, k) get1(s, k, strlen(k))
#define ADV(s, k, t) adv1(s, k, strlen(k), t)

static void check_semantics(enum st_store_backend b)
{
    struct st_store *s = open_store(b, 0);
    struct res r;

    cr_expect_eq(st_store_failed(s), 0);
    cr_expect_null(st_store_error(s));
    r = GET(s, "/never");
    cr_expect_eq(r.rc, 0);
    cr_expect_eq(r.highest, 0);
    r = ADV(s, "/k", 5);
    cr_expect_eq(r.rc, 0);
    cr_expect_eq(r.highest, 5);
    r = ADV(s, "/k", 3); /* lower: the max is kept */
    cr_expect_eq(r.rc, 0);
    cr_expect_eq(r.highest, 5);
    r = ADV(s, "/k", 5);
    cr_expect_eq(r.highest, 5);
    r = GET(s, "/k");
    cr_expect_eq(r.highest, 5);
    r = ADV(s, "/k", UINT64_MAX);
    cr_expect_eq(r.highest, UINT64_MAX);
    r = GET(s, "/k");
    cr_expect_eq(r.highest, UINT64_MAX);
    r = GET(s, "/k2"); /* keys are independent */
    cr_expect_eq(r.highest, 0);
    r = ADV(s, "/k2", 0);
    cr_expect_eq(r.rc, 0);
    cr_expect_eq(r.highest, 0);
    r = GET(s, "/k/"); /* exact bytes, not prefixes */
    cr_expect_eq(r.highest, 0);
    st_store_close(&s);
    cr_expect_null(s);
}

Test(store, memory_semantics) { check_semantics(ST_STORE_MEMORY); }
Test(store, file_semantics) { check_semantics(ST_STORE_FILE); }

/* Nothing runs inside get/advance, even once the work is long done. */
static void check_no_inline_callbacks(enum st_store_backend b)
{
    struct st_store *s = open_store(b, 0);
    struct res r[4];
    memset(r, 0, sizeof r);
    st_store_advance(s, "/a", 2, 10, on_done, &r[0]);
    st_store_get(s, "/a", 2, on_done, &r[1]);
    st_store_advance(s, "/a", 2, 4, on_done, &r[2]);
    st_store_get(s, "/b", 2, on_done, &r[3]);
    usleep(100 * 1000);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(r[i].calls, 0, "callback %d ran before dispatch", i);
    /* The notify fd is readable now. */
    struct pollfd p = {.fd = st_store_notify_fd(s), .events = POLLIN};
    cr_expect_eq(poll(&p, 1, 5000), 1);
    int total = 0;
    double end = now() + 10;
    while (total < 4 && now() < end) {
        dispatch(s);
        total = r[0].calls + r[1].calls + r[2].calls + r[3].calls;
        if (total < 4)
            poll(&p, 1, 100);
    }
    cr_assert_eq(total, 4);
    /* Submission order is kept: the get after the advance sees it. */
    cr_expect_eq(r[0].highest, 10);
    cr_expect_eq(r[1].highest, 10);
    cr_expect_eq(r[2].highest, 10);
    cr_expect_eq(r[3].highest, 0);
    /* Drained: a dispatch with nothing queued runs nothing. */
    dispatch(s);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(r[i].calls, 1);
    cr_expect_eq(poll(&p, 1, 0), 0, "notify fd still readable after a drain");
    st_store_close(&s);
}

Test(store, memory_callbacks_only_from_dispatch) { check_no_inline_callbacks(ST_STORE_MEMORY); }
Test(store, file_callbacks_only_from_dispatch) { check_no_inline_callbacks(ST_STORE_FILE); }

/* Keys are bytes: NUL inside, empty, and longer than LMDB's key limit. Two
 * long keys differing only past the limit stay apart. */
static void check_odd_keys(enum st_store_backend b)
{
    struct st_store *s = open_store(b, 0);
    static char long1[10000], long2[10000], long3[600];
    memset(long1, 'x', sizeof long1);
    memcpy(long2, long1, sizeof long2);
    long2[sizeof long2 - 1] = 'y';
    memset(long3, 'x', sizeof long3);

    cr_expect_eq(adv1(s, "a\0b", 3, 7).highest, 7);
    cr_expect_eq(get1(s, "a\0c", 3).highest, 0);
    cr_expect_eq(get1(s, "a", 1).highest, 0);
    cr_expect_eq(adv1(s, "", 0, 3).highest, 3);
    cr_expect_eq(get1(s, "", 0).highest, 3);
    cr_expect_eq(adv1(s, long1, sizeof long1, 11).rc, 0);
    cr_expect_eq(get1(s, long1, sizeof long1).highest, 11);
    cr_expect_eq(get1(s, long2, sizeof long2).highest, 0);
    cr_expect_eq(get1(s, long1, sizeof long1 - 1).highest, 0);
    cr_expect_eq(get1(s, long3, sizeof long3).highest, 0);
    cr_expect_eq(adv1(s, long2, sizeof long2, 12).highest, 12);
    cr_expect_eq(get1(s, long1, sizeof long1).highest, 11);
    cr_expect_eq(get1(s, long1, 511).highest, 0);
    cr_expect_eq(adv1(s, long1, 511, 13).highest, 13);
    cr_expect_eq(get1(s, long1, 512).highest, 0);
    st_store_close(&s);
}

Test(store, memory_odd_keys) { check_odd_keys(ST_STORE_MEMORY); }
Test(store, file_odd_keys) { check_odd_keys(ST_STORE_FILE); }

/* A callback may submit more work; it completes in a later dispatch. */
struct chain {
    struct st_store *s;
    int steps;
    uint64_t last;
};

static void on_chain(void *arg, int rc, uint64_t highest)
{
    struct chain *c = arg;
    cr_assert(in_dispatch);
    cr_assert_eq(rc, 0);
    c->last = highest;
    if (++c->steps < 20)
        st_store_advance(c->s, "/chain", 6, (uint64_t)c->steps * 10, on_chain, c);
}

static void check_resubmit(enum st_store_backend b)
{
    struct chain c = {.s = open_store(b, 0)};
    st_store_advance(c.s, "/chain", 6, 1, on_chain, &c);
    run_until(c.s, &c.steps, 20);
    cr_expect_eq(c.last, 190);
    st_store_close(&c.s);
}

Test(store, memory_callback_may_resubmit) { check_resubmit(ST_STORE_MEMORY); }
Test(store, file_callback_may_resubmit) { check_resubmit(ST_STORE_FILE); }

/* Close with work queued: callbacks are dropped (ASan checks nothing
 * leaks), and the file backend still finishes the writes it had accepted. */
static void check_close_pending(enum st_store_backend b)
{
    struct st_store *s = open_store(b, 0);
    struct res r = {0, 0, 0};
    for (int i = 1; i <= 100; i++)
        st_store_advance(s, "/p", 2, (uint64_t)i, on_done, &r);
    st_store_close(&s);
    cr_expect_eq(r.calls, 0);
    st_store_close(&s); /* NULL is fine */
    st_store_close(NULL);
    if (b == ST_STORE_FILE) {
        s = open_store(b, 0);
        cr_expect_eq(GET(s, "/p").highest, 100);
        st_store_close(&s);
    }
}

Test(store, memory_close_with_work_queued) { check_close_pending(ST_STORE_MEMORY); }
Test(store, file_close_with_work_queued) { check_close_pending(ST_STORE_FILE); }

Test(store, file_persists_across_reopen)
{
    struct st_store *s = open_store(ST_STORE_FILE, 0);
    char key[32];
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof key, "/obj/%d", i);
        cr_assert_eq(ADV(s, key, (uint64_t)i * 1000 + 1).rc, 0);
    }
    cr_assert_eq(ADV(s, "/big", UINT64_MAX).rc, 0);
    st_store_close(&s);
    struct stat st;
    cr_assert_eq(stat(dbdir, &st), 0);
    cr_expect_eq(st.st_mode & 0777, 0700, "store dir mode %o", st.st_mode & 0777);

    s = open_store(ST_STORE_FILE, 0);
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof key, "/obj/%d", i);
        cr_expect_eq(GET(s, key).highest, (uint64_t)i * 1000 + 1, "%s", key);
    }
    cr_expect_eq(GET(s, "/big").highest, UINT64_MAX);
    cr_expect_eq(ADV(s, "/obj/3", 5).highest, 3001);
    st_store_close(&s);
}

struct hook_stats {
    int commits;
    size_t advances;
    size_t max_batch;
    double seconds;
};

static void on_commit(void *arg, size_t batch, double seconds)
{
    struct hook_stats *h = arg;
    cr_assert(in_dispatch, "commit hook outside dispatch");
    h->commits++;
    h->advances += batch;
    if (batch > h->max_batch)
        h->max_batch = batch;
    h->seconds += seconds;
    cr_expect_geq(seconds, 0.0);
}

Test(store, file_group_commit)
{
    struct st_store *s = open_store(ST_STORE_FILE, 0);
    struct hook_stats h = {0};
    struct many m = {0};
    char key[32];
    st_store_set_commit_hook(s, on_commit, &h);
    for (int i = 1; i <= 1000; i++) {
        snprintf(key, sizeof key, "/g/%d", i % 37);
        st_store_advance(s, key, strlen(key), (uint64_t)i, on_many, &m);
    }
    run_until(s, &m.done, 1000);
    cr_expect_eq(m.failed, 0);
    cr_expect_eq(m.max_seen, 1000);
    cr_expect_eq(h.advances, 1000, "hook saw %zu advances", h.advances);
    cr_expect_lt(h.commits, 1000, "no batching: %d commits", h.commits);
    cr_expect_gt(h.max_batch, 1);
    cr_log_info("1000 advances in %d commits, largest batch %zu", h.commits, h.max_batch);
    for (int k = 0; k < 37; k++) {
        uint64_t want = 0;
        for (int i = 1; i <= 1000; i++)
            if (i % 37 == k)
                want = (uint64_t)i;
        snprintf(key, sizeof key, "/g/%d", k);
        cr_expect_eq(GET(s, key).highest, want, "%s", key);
    }
    /* Gets alone commit nothing. */
    int before = h.commits;
    GET(s, "/g/1");
    cr_expect_eq(h.commits, before);
    st_store_set_commit_hook(s, NULL, NULL);
    ADV(s, "/g/1", 5000);
    cr_expect_eq(h.commits, before);
    st_store_close(&s);
}

/* MDB_MAP_FULL in a tiny map: the batch that hit it and every later call
 * fail, nothing is acknowledged, and the store says why. */
Test(store, file_fails_closed_when_full)
{
    struct st_store *s = open_store(ST_STORE_FILE, 64 * 1024);
    char key[300];
    int ok = 0, failed_at = -1;
    for (int i = 0; i < 2000 && failed_at < 0; i++) {
        memset(key, 'k', sizeof key);
        snprintf(key, 32, "/full/%d/", i);
        key[strlen(key)] = 'k';
        struct res r = adv1(s, key, sizeof key, (uint64_t)i + 1);
        if (r.rc == 0)
            ok++;
        else
            failed_at = i;
    }
    cr_assert_geq(failed_at, 1, "map never filled (%d ok)", ok);
    cr_expect_eq(st_store_failed(s), 1);
    cr_assert_not_null(st_store_error(s));
    cr_expect_not_null(strstr(st_store_error(s), "MDB_MAP_FULL"), "%s", st_store_error(s));
    /* Later calls fail too, gets included, and a batch fails as a whole. */
    struct res r = ADV(s, "/small", 1);
    cr_expect_eq(r.rc, -1);
    cr_expect_eq(r.highest, 0);
    cr_expect_eq(GET(s, "/full/0/").rc, -1);
    struct many m = {0};
    for (int i = 0; i < 50; i++)
        st_store_advance(s, "/x", 2, (uint64_t)i + 1, on_many, &m);
    run_until(s, &m.done, 50);
    cr_expect_eq(m.failed, 50);
    st_store_close(&s);

    /* What was acknowledged before the failure is durable. */
    s = open_store(ST_STORE_FILE, 64 * 1024);
    memset(key, 'k', sizeof key);
    snprintf(key, 32, "/full/%d/", 0);
    key[strlen(key)] = 'k';
    cr_expect_eq(get1(s, key, sizeof key).highest, 1);
    st_store_close(&s);
}

Test(store, file_open_errors)
{
    char err[256] = "";
    struct st_store_config cfg = {.backend = ST_STORE_FILE, .path = NULL};
    cr_expect_null(st_store_open(&cfg, err, sizeof err));
    cr_expect_neq(err[0], '\0');

    char file[128];
    snprintf(file, sizeof file, "%s/plainfile", tmpdir);
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fclose(f);
    cfg.path = file;
    err[0] = '\0';
    cr_expect_null(st_store_open(&cfg, err, sizeof err));
    cr_expect_neq(err[0], '\0');
    unlink(file);

    snprintf(file, sizeof file, "%s/no/such/dir", tmpdir);
    cfg.path = file;
    err[0] = '\0';
    cr_expect_null(st_store_open(&cfg, err, sizeof err));
    cr_expect_neq(err[0], '\0');
}

/* A floor, far under the 20,000/s target, so that a writer loop that sleeps
 * or commits one advance at a time shows up; the real figure is logged. */
Test(store, file_throughput, .timeout = 60)
{
    struct st_store *s = open_store(ST_STORE_FILE, 0);
    struct hook_stats h = {0};
    struct many m = {0};
    const int total = 20000, window = 256;
    char key[32];
    int sent = 0;
    st_store_set_commit_hook(s, on_commit, &h);
    double t0 = now(), end = t0 + 30;
    while (m.done < total) {
        while (sent < total && sent - m.done < window) {
            sent++;
            snprintf(key, sizeof key, "/t/%d", sent % 64);
            st_store_advance(s, key, strlen(key), (uint64_t)sent, on_many, &m);
        }
        struct pollfd p = {.fd = st_store_notify_fd(s), .events = POLLIN};
        cr_assert_lt(now(), end, "timed out at %d", m.done);
        if (poll(&p, 1, 100) > 0)
            dispatch(s);
    }
    double secs = now() - t0;
    cr_expect_eq(m.failed, 0);
    cr_log_info("%d advances in %.3f s: %.0f/s, %d commits, avg batch %.1f", total, secs,
                total / secs, h.commits, (double)h.advances / h.commits);
    fprintf(stderr, "file store: %.0f advances/s, %d commits, avg batch %.1f\n", total / secs,
            h.commits, (double)h.advances / h.commits);
    cr_expect_gt(total / secs, 2000.0);
    st_store_close(&s);
}

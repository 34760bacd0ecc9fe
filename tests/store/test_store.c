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

#include <lmdb.h>

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

static struct st_store *open_cfg(const struct st_store_config *c)
{
    char err[4096] = "";
    struct st_store *s = st_store_open(c, err, sizeof err);
    cr_assert_not_null(s, "open: %s", err);
    return s;
}

/* A long key for /full/i: distinct in its first bytes, 300 bytes long. */
static void long_key(char *key, size_t len, int i)
{
    memset(key, 'k', len);
    snprintf(key, 32, "/full/%d/", i);
    key[strlen(key)] = 'k';
}

/* The map starts small and grows on demand: 2,000 300-byte keys (about
 * 1 MB) in a map that starts at 64 KiB are all stored. */
Test(store, file_map_grows_on_demand)
{
    struct st_store_config c = {.backend = ST_STORE_FILE, .path = dbdir,
                                .map_size = 64 * 1024, .max_size = 64u << 20};
    struct st_store *s = open_cfg(&c);
    char key[300];
    uint64_t used, max;

    for (int i = 0; i < 2000; i++) {
        long_key(key, sizeof key, i);
        cr_assert_eq(adv1(s, key, sizeof key, (uint64_t)i + 1).rc, 0, "advance %d failed", i);
    }
    st_store_fill(s, &used, &max);
    cr_expect_gt(used, 512 * 1024, "used %llu", (unsigned long long)used);
    cr_expect_eq(max, 64u << 20);
    cr_expect_eq(st_store_failed(s), 0);
    cr_expect_eq(st_store_full(s), 0);
    st_store_close(&s);
    s = open_cfg(&c);
    long_key(key, sizeof key, 1999);
    cr_expect_eq(get1(s, key, sizeof key).highest, 2000);
    st_store_close(&s);
}

/* At max_size only advances of new keys are refused (ST_STORE_EFULL); the
 * store has not failed, known keys still advance and read, the fill level
 * crossed the warning line once, and everything acknowledged is durable. */
Test(store, file_full_refuses_only_new_keys)
{
    struct st_store_config c = {.backend = ST_STORE_FILE, .path = dbdir,
                                .map_size = 64 * 1024, .max_size = 256 * 1024};
    struct st_store *s = open_cfg(&c);
    char key[300];
    int ok = 0, full_at = -1, crossed = 0;
    uint64_t used, max;

    for (int i = 0; i < 5000 && full_at < 0; i++) {
        long_key(key, sizeof key, i);
        struct res r = adv1(s, key, sizeof key, (uint64_t)i + 1);
        if (st_store_fill_crossed(s) > 0)
            crossed++;
        if (r.rc == 0)
            ok++;
        else
            full_at = i;
        if (r.rc != 0)
            cr_assert_eq(r.rc, ST_STORE_EFULL, "advance %d: rc %d", i, r.rc);
    }
    cr_assert_geq(full_at, 100, "store full after %d keys", ok);
    cr_expect_eq(st_store_failed(s), 0, "a full store must not fail: %s",
                 st_store_error(s) != NULL ? st_store_error(s) : "");
    cr_expect_eq(st_store_full(s), 1);
    st_store_fill(s, &used, &max);
    cr_expect_eq(max, 256 * 1024);
    cr_expect_geq(used * 100, max * 80, "used %llu of %llu", (unsigned long long)used,
                  (unsigned long long)max);
    cr_expect_eq(crossed, 1, "the 80%% line is reported once, got %d", crossed);
    cr_expect_eq(st_store_fill_crossed(s), 0);
    /* Existing keys go on: advance and read. */
    for (int i = 0; i < ok; i += ok / 10 + 1) {
        long_key(key, sizeof key, i);
        struct res r = adv1(s, key, sizeof key, 100000 + (uint64_t)i);
        cr_expect_eq(r.rc, 0, "existing key %d refused (rc %d)", i, r.rc);
        cr_expect_eq(r.highest, 100000 + (uint64_t)i);
    }
    long_key(key, sizeof key, 0);
    cr_expect_eq(get1(s, key, sizeof key).rc, 0);
    /* New keys soon do not fit again (pages freed by the updates may take a
     * few); a get of an unknown key is fine. */
    int refused_again = 0;
    for (int i = 0; i < 500 && !refused_again; i++) {
        long_key(key, sizeof key, 1000000 + i);
        refused_again = adv1(s, key, sizeof key, 5).rc == ST_STORE_EFULL;
    }
    cr_expect(refused_again, "new keys kept fitting in a full store");
    cr_expect_eq(st_store_failed(s), 0);
    struct res g = GET(s, "/never");
    cr_expect_eq(g.rc, 0);
    cr_expect_eq(g.highest, 0);
    st_store_close(&s);

    /* What was acknowledged is durable; a larger max_size takes new keys. */
    c.max_size = 4u << 20;
    s = open_cfg(&c);
    long_key(key, sizeof key, 0);
    cr_expect_eq(get1(s, key, sizeof key).highest, 100000);
    long_key(key, sizeof key, ok - 1);
    cr_expect_geq(get1(s, key, sizeof key).highest, (uint64_t)ok);
    long_key(key, sizeof key, 999999);
    cr_expect_eq(adv1(s, key, sizeof key, 5).rc, 0);
    st_store_close(&s);
}

/* data.mdb removed under a running store: the next batch fails the store
 * (nothing written to a file nobody will find is acknowledged), for good,
 * gets included, a batch as a whole, and the store says why. */
Test(store, file_fails_closed_when_its_file_is_removed)
{
    struct st_store *s = open_store(ST_STORE_FILE, 0);
    char file[160];

    cr_assert_eq(ADV(s, "/a", 5).rc, 0);
    snprintf(file, sizeof file, "%s/data.mdb", dbdir);
    cr_assert_eq(unlink(file), 0);
    struct res r = ADV(s, "/a", 6);
    cr_expect_eq(r.rc, -1);
    cr_expect_eq(r.highest, 0);
    cr_expect_eq(st_store_failed(s), 1);
    cr_assert_not_null(st_store_error(s));
    cr_expect_not_null(strstr(st_store_error(s), "removed"), "%s", st_store_error(s));
    cr_expect_eq(GET(s, "/a").rc, -1);
    struct many m = {0};
    for (int i = 0; i < 50; i++)
        st_store_advance(s, "/x", 2, (uint64_t)i + 1, on_many, &m);
    run_until(s, &m.done, 50);
    cr_expect_eq(m.failed, 50);
    st_store_close(&s);
}

/* ---- identity, marker, floor ---------------------------------------- */

static char logbuf[8192];

static void capture(void *arg, int level, const char *msg)
{
    size_t n = strlen(logbuf);
    (void)arg;
    snprintf(logbuf + n, sizeof logbuf - n, "%d %s\n", level, msg);
}

static struct st_store_config marked(char *marker, size_t cap)
{
    snprintf(marker, cap, "%s/db.id", tmpdir);
    struct st_store_config c = {.backend = ST_STORE_FILE, .path = dbdir, .marker = marker,
                                .log = capture};
    return c;
}

static void refused(const struct st_store_config *c, const char *what)
{
    char err[4096] = "";
    struct st_store *s = st_store_open(c, err, sizeof err);
    cr_assert_null(s, "opened although %s", what);
    cr_expect_not_null(strstr(err, "refused"), "%s: %s", what, err);
    cr_expect_not_null(strstr(err, "floor"), "%s: no recovery steps: %s", what, err);
}

static void fill50(const struct st_store_config *c)
{
    struct st_store *s = open_cfg(c);
    char key[32];
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof key, "/res/%d", i);
        cr_assert_eq(ADV(s, key, 1000 + (uint64_t)i).rc, 0);
    }
    st_store_close(&s);
}

static int check_rc(const struct st_store_config *c, char *out, size_t cap)
{
    FILE *f = fmemopen(out, cap, "w");
    cr_assert_not_null(f);
    int rc = st_store_check(c, f);
    fclose(f);
    return rc;
}

/* A first start creates the store and its marker (logged); a store that was
 * there before and is gone, or emptied, refuses the open, as does one put
 * in its place; the operator floor starts a new store in which every
 * resource is at least the floor, kept across restarts. */
Test(store, file_identity_and_floor)
{
    char marker[160], file[160], out[4096];
    struct st_store_config c = marked(marker, sizeof marker);
    struct st_store *s;

    logbuf[0] = '\0';
    fill50(&c);
    cr_expect_not_null(strstr(logbuf, "first start"), "%s", logbuf);
    cr_expect_eq(access(marker, R_OK), 0, "no marker written");
    cr_expect_eq(check_rc(&c, out, sizeof out), 0, "%s", out);
    cr_expect_not_null(strstr(out, "50 records"), "%s", out);

    /* Removed before restart. */
    snprintf(file, sizeof file, "%s/data.mdb", dbdir);
    char saved[160];
    snprintf(saved, sizeof saved, "%s/saved.mdb", tmpdir);
    cr_assert_eq(rename(file, saved), 0);
    refused(&c, "data.mdb was removed");
    cr_expect_eq(check_rc(&c, out, sizeof out), 1, "%s", out);
    /* Truncated to 0 bytes. */
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fclose(f);
    refused(&c, "data.mdb is empty");
    /* Another store in its place. */
    unlink(file);
    struct st_store_config other = {.backend = ST_STORE_FILE, .path = dbdir};
    s = open_cfg(&other);
    st_store_close(&s);
    refused(&c, "another store was put in place");
    cr_expect_eq(check_rc(&c, out, sizeof out), 1, "%s", out);
    /* The original back: accepted again, highests intact. */
    cr_assert_eq(rename(saved, file), 0);
    s = open_cfg(&c);
    cr_expect_eq(GET(s, "/res/7").highest, 1007);
    st_store_close(&s);

    /* Lost for good: the floor makes a new store where nothing is lower. */
    ts_rmrf(dbdir);
    refused(&c, "the directory was deleted");
    logbuf[0] = '\0';
    c.floor = 5000;
    s = open_cfg(&c);
    cr_expect_not_null(strstr(logbuf, "floor 5000"), "%s", logbuf);
    cr_expect_eq(GET(s, "/res/7").highest, 5000);
    cr_expect_eq(GET(s, "/never/seen").highest, 5000);
    struct res r = ADV(s, "/res/7", 1007);
    cr_expect_eq(r.rc, 0);
    cr_expect_eq(r.highest, 5000, "a token under the floor must not become the highest");
    cr_expect_eq(ADV(s, "/res/7", 5001).highest, 5001);
    st_store_close(&s);
    c.floor = 0; /* the floor is kept in the store */
    s = open_cfg(&c);
    cr_expect_eq(GET(s, "/res/8").highest, 5000);
    cr_expect_eq(GET(s, "/res/7").highest, 5001);
    st_store_close(&s);
    /* Raising the floor of an existing store. */
    logbuf[0] = '\0';
    c.floor = 9000;
    s = open_cfg(&c);
    cr_expect_not_null(strstr(logbuf, "operator floor"), "%s", logbuf);
    cr_expect_eq(GET(s, "/res/7").highest, 9000);
    st_store_close(&s);
}

/* Flipped bytes in a record's value, or in its key: refused at open (never
 * served lowered), and the check names the damaged record. */
Test(store, file_bit_flips_are_refused)
{
    char marker[160], file[160], out[4096];
    struct st_store_config c = marked(marker, sizeof marker);
    size_t len;

    fill50(&c);
    snprintf(file, sizeof file, "%s/data.mdb", dbdir);
    char *data = ts_read_file(file, &len);
    cr_assert_not_null(data);
    /* The value follows its key in a leaf node: flip the token's low byte,
     * in every copy of the leaf (LMDB copies pages on write, older copies
     * stay in the file as free pages). */
    FILE *f = fopen(file, "r+");
    cr_assert_not_null(f);
    int flips = 0;
    for (char *hit = data; (hit = memmem(hit, len - (size_t)(hit - data), "/res/17", 7)) != NULL;
         hit += 7) {
        long off = (long)(hit - data) + 7 + 7;
        cr_assert_eq(fseek(f, off, SEEK_SET), 0);
        fputc(data[off] ^ 0x40, f);
        flips++;
    }
    fclose(f);
    free(data);
    cr_assert_gt(flips, 0, "key not found in the file");
    refused(&c, "a record was flipped");
    cr_expect_eq(check_rc(&c, out, sizeof out), 1, "%s", out);
    cr_expect_not_null(strstr(out, "/res/17"), "the damaged key is not named: %s", out);
    cr_expect_not_null(strstr(out, "1 of 50 records"), "%s", out);
}

/* INIT creates a store and refuses to overwrite one. */
Test(store, file_init)
{
    char marker[160], err[4096];
    struct st_store_config c = marked(marker, sizeof marker);
    c.mode = ST_OPEN_INIT;
    c.floor = 42;
    struct st_store *s = open_cfg(&c);
    cr_expect_eq(GET(s, "/x").highest, 42);
    st_store_close(&s);
    s = st_store_open(&c, err, sizeof err);
    cr_expect_null(s);
    cr_expect_not_null(strstr(err, "already exists"), "%s", err);
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

/* An environment LMDB initialised but the store never committed to (a
 * creation killed before its first commit): finished on the next open when
 * no store was created here before, refused as empty when one was. */
static void blank_env(void)
{
    MDB_env *env;
    mkdir(dbdir, 0700);
    cr_assert_eq(mdb_env_create(&env), 0);
    cr_assert_eq(mdb_env_open(env, dbdir, 0, 0600), 0);
    mdb_env_close(env);
}

Test(store, file_creation_killed_before_its_first_commit)
{
    char marker[160];
    struct st_store_config c = marked(marker, sizeof marker);

    blank_env();
    struct st_store *s = open_cfg(&c);
    cr_expect_eq(ADV(s, "/a", 3).rc, 0);
    st_store_close(&s);
    ts_rmrf(dbdir);
    blank_env();
    refused(&c, "an emptied store (blank environment)");
}

static struct res set1(struct st_store *s, const char *k, uint64_t t)
{
    struct res r = {0, 99, 99};
    st_store_set(s, k, strlen(k), t, on_done, &r);
    run_until(s, &r.calls, 1);
    cr_expect_eq(r.calls, 1);
    return r;
}

/* The operator's reset: a set lowers (or raises) a highest, in order with
 * advances, durably (the file store keeps it across a reopen, its record
 * checked like an advance's), and never below the operator floor. */
static void check_set(enum st_store_backend b)
{
    struct st_store *s = open_store(b, 0);
    struct res r;

    cr_assert_eq(ADV(s, "/poisoned", 999999999999999999ULL).rc, 0);
    r = set1(s, "/poisoned", 42);
    cr_expect_eq(r.rc, 0);
    cr_expect_eq(r.highest, 42);
    cr_expect_eq(GET(s, "/poisoned").highest, 42);
    cr_expect_eq(ADV(s, "/poisoned", 43).highest, 43, "an advance compares with the set value");
    cr_expect_eq(set1(s, "/new", 7).highest, 7);
    cr_expect_eq(set1(s, "/new", 7).highest, 7);
    /* Submitted back to back: served in order, the last one wins. */
    struct res a = {0, 99, 99}, c = {0, 99, 99};
    st_store_advance(s, "/order", 6, 100, on_done, &a);
    st_store_set(s, "/order", 6, 5, on_done, &c);
    run_until(s, &c.calls, 1);
    run_until(s, &a.calls, 1);
    cr_expect_eq(a.highest, 100);
    cr_expect_eq(c.highest, 5);
    cr_expect_eq(GET(s, "/order").highest, 5);
    st_store_close(&s);
    if (b != ST_STORE_FILE)
        return;
    s = open_store(b, 0);
    cr_expect_eq(GET(s, "/poisoned").highest, 43);
    cr_expect_eq(GET(s, "/new").highest, 7);
    cr_expect_eq(GET(s, "/order").highest, 5);
    st_store_close(&s);
}

Test(store, memory_set_lowers) { check_set(ST_STORE_MEMORY); }
Test(store, file_set_lowers_durably) { check_set(ST_STORE_FILE); }

Test(store, file_set_respects_the_floor)
{
    char marker[160];
    struct st_store_config c = marked(marker, sizeof marker);
    struct st_store *s;

    c.floor = 500;
    s = open_cfg(&c);
    cr_assert_not_null(s);
    cr_expect_eq(set1(s, "/f", 10).highest, 500, "a set below the floor gives the floor");
    cr_expect_eq(set1(s, "/f", 700).highest, 700);
    cr_expect_eq(set1(s, "/f", 600).highest, 600);
    st_store_close(&s);
    c.floor = 0;
    s = open_cfg(&c);
    cr_expect_eq(GET(s, "/f").highest, 600);
    st_store_close(&s);
}

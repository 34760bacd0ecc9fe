/* The token store's listing (st_store_list) on every backend: memory, file
 * (LMDB in a temp dir) and etcd (a real etcd member, tests/support/ts_etcd).
 * Prefix filter, key order, limit and the truncated page's cursor (paging
 * through returns every key exactly once, in order), submission order (a
 * listing sees the advances submitted just before it, durable), the
 * operator floor and the file backend's hashed long keys, a stored value
 * that is no token failing the etcd store, an unreachable etcd. */
#include <criterion/criterion.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "st_store.h"
#include "ts_etcd.h"
#include "ts_proc.h"

static char *dir;
static char dbdir[1100];
static struct ts_etcd etcd;
static int have_etcd;
static int in_dispatch;

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    dir = ts_tempdir("storelist");
    cr_assert_not_null(dir);
    snprintf(dbdir, sizeof dbdir, "%s/db", dir);
}

static void setup_etcd(void)
{
    setup();
    cr_assert_eq(ts_etcd_start(&etcd, dir, 1), 0, "etcd (etcd-server) must be installed");
    have_etcd = 1;
}

static void teardown(void)
{
    if (have_etcd)
        ts_etcd_stop(&etcd);
    have_etcd = 0;
    if (dir != NULL)
        ts_rmrf(dir);
    free(dir);
    dir = NULL;
}

TestSuite(list, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(list_etcd, .init = setup_etcd, .fini = teardown, .timeout = 60);

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct st_store *open_store(enum st_store_backend b, uint64_t floor)
{
    struct st_store_config cfg = {.backend = b,
                                  .path = dbdir,
                                  .floor = floor,
                                  .endpoints = etcd.endpoints,
                                  .prefix = "/l/",
                                  .timeout_ms = 2000};
    char err[4096] = "";
    struct st_store *s = st_store_open(&cfg, err, sizeof err);

    cr_assert_not_null(s, "open: %s", err);
    return s;
}

static void dispatch(struct st_store *s)
{
    in_dispatch = 1;
    st_store_dispatch(s);
    in_dispatch = 0;
}

static void run_until(struct st_store *s, const int *done, int want)
{
    double end = now() + 20;

    while (*done < want) {
        struct pollfd p = {.fd = st_store_notify_fd(s), .events = POLLIN};
        cr_assert_lt(now(), end, "timed out: %d of %d completions", *done, want);
        if (poll(&p, 1, 50) > 0)
            dispatch(s);
    }
}

struct res {
    int calls, rc;
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

static void adv(struct st_store *s, const char *k, size_t klen, uint64_t t)
{
    struct res r = {0, 99, 0};

    /* Take it first, as the proxy does (the etcd store refuses an advance
     * of a resource it does not own; the others own everything). */
    st_store_get(s, k, klen, on_done, &r);
    run_until(s, &r.calls, 1);
    cr_assert_eq(r.rc, 0, "get of %.*s", (int)(klen > 60 ? 60 : klen), k);
    r.calls = 0;
    st_store_advance(s, k, klen, t, on_done, &r);
    run_until(s, &r.calls, 1);
    cr_assert_eq(r.rc, 0, "advance of %.*s", (int)(klen > 60 ? 60 : klen), k);
}

/* One listed entry, copied out of the callback. */
struct ent {
    char *key;
    size_t klen;
    uint64_t highest;
    char hash[33];
};

/* One page, copied. */
struct page {
    int calls, rc, truncated;
    struct ent *e;
    size_t n;
    char *next;
    size_t next_len;
};

static void on_page(void *arg, int rc, const struct st_store_page *pg)
{
    struct page *p = arg;

    cr_assert(in_dispatch, "list callback outside st_store_dispatch()");
    p->calls++;
    p->rc = rc;
    if (rc != 0) {
        cr_assert_null(pg);
        return;
    }
    p->truncated = pg->truncated;
    p->n = pg->n;
    p->e = calloc(pg->n + 1, sizeof *p->e);
    cr_assert_not_null(p->e);
    for (size_t i = 0; i < pg->n; i++) {
        p->e[i].key = malloc(pg->e[i].klen + 1);
        memcpy(p->e[i].key, pg->e[i].key, pg->e[i].klen + 1);
        p->e[i].klen = pg->e[i].klen;
        p->e[i].highest = pg->e[i].highest;
        if (pg->e[i].hash != NULL)
            snprintf(p->e[i].hash, sizeof p->e[i].hash, "%s", pg->e[i].hash);
    }
    if (pg->truncated) {
        cr_assert_not_null(pg->next);
        p->next = malloc(pg->next_len + 1);
        memcpy(p->next, pg->next, pg->next_len);
        p->next_len = pg->next_len;
    }
}

static void page_free(struct page *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->e[i].key);
    free(p->e);
    free(p->next);
    memset(p, 0, sizeof *p);
}

static struct page list1(struct st_store *s, const char *prefix, const char *after, size_t alen,
                         size_t limit)
{
    struct page p = {0};

    st_store_list(s, prefix, strlen(prefix), after, alen, limit, on_page, &p);
    run_until(s, &p.calls, 1);
    return p;
}

static int ent_cmp(const struct ent *a, const struct ent *b)
{
    int c = memcmp(a->key, b->key, a->klen < b->klen ? a->klen : b->klen);

    if (c == 0)
        c = (a->klen > b->klen) - (a->klen < b->klen);
    /* Two hashed keys show the same kept bytes: their stored forms differ
     * in the hash, which orders them. */
    return c != 0 ? c : strcmp(a->hash, b->hash);
}

/* Pages through prefix with limit per page and returns every entry in one
 * page (the caller frees it); checks the order within and across pages,
 * that no page but the last is short of the limit, and that the walk ends
 * (bounded). *pages gets the number of pages. */
static struct page list_all(struct st_store *s, const char *prefix, size_t limit, int *pages)
{
    struct page all = {0};
    char *after = NULL;
    size_t alen = 0;

    all.e = calloc(1, sizeof *all.e);
    *pages = 0;
    for (int guard = 0; guard < 10000; guard++) {
        struct page p = list1(s, prefix, after, alen, limit);

        cr_assert_eq(p.rc, 0, "list page %d: rc %d", *pages, p.rc);
        (*pages)++;
        all.e = realloc(all.e, (all.n + p.n + 1) * sizeof *all.e);
        for (size_t i = 0; i < p.n; i++) {
            if (all.n > 0)
                cr_assert_lt(ent_cmp(&all.e[all.n - 1], &p.e[i]), 0,
                             "out of order or repeated: %s after %s", p.e[i].key,
                             all.e[all.n - 1].key);
            all.e[all.n++] = p.e[i];
            p.e[i].key = NULL;
        }
        free(after);
        after = NULL;
        if (!p.truncated) {
            page_free(&p);
            return all;
        }
        cr_assert_eq(p.n, limit, "a truncated page of %zu short of the limit %zu", p.n, limit);
        after = p.next;
        alen = p.next_len;
        p.next = NULL;
        page_free(&p);
    }
    cr_assert_fail("the listing did not end");
    return all;
}

/* The listing's semantics on one backend. */
static void check_list(enum st_store_backend b)
{
    struct st_store *s = open_store(b, 0);
    struct page p, all;
    char key[64];
    int pages;

    for (int i = 0; i < 25; i++) {
        snprintf(key, sizeof key, "/a/%02d", i);
        adv(s, key, strlen(key), (uint64_t)i * 10 + 1);
    }
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof key, "/b/%d", i);
        adv(s, key, strlen(key), 1000 + (uint64_t)i);
    }
    adv(s, "/a", 2, 7);
    adv(s, "/ab", 3, 8);
    adv(s, "/a/03", 5, 2); /* lower: kept at 31 */

    /* A prefix: its keys only, in order, with their highests. */
    p = list1(s, "/a/", NULL, 0, 1000);
    cr_assert_eq(p.rc, 0);
    cr_expect_eq(p.truncated, 0);
    cr_assert_eq(p.n, 25, "listed %zu", p.n);
    for (int i = 0; i < 25; i++) {
        snprintf(key, sizeof key, "/a/%02d", i);
        cr_expect_str_eq(p.e[i].key, key);
        cr_expect_eq(p.e[i].klen, strlen(key));
        cr_expect_eq(p.e[i].highest, (uint64_t)i * 10 + 1, "%s", key);
        cr_expect_eq(p.e[i].hash[0], '\0');
    }
    page_free(&p);
    /* Everything, and nothing. */
    p = list1(s, "", NULL, 0, 1000);
    cr_expect_eq(p.n, 32);
    cr_expect_str_eq(p.e[0].key, "/a");
    cr_expect_eq(p.e[0].highest, 7);
    cr_expect_str_eq(p.e[26].key, "/ab");
    cr_expect_str_eq(p.e[31].key, "/b/4");
    cr_expect_eq(p.e[31].highest, 1004);
    page_free(&p);
    p = list1(s, "/c", NULL, 0, 1000);
    cr_expect_eq(p.rc, 0);
    cr_expect_eq(p.n, 0);
    cr_expect_eq(p.truncated, 0);
    page_free(&p);
    /* A limit truncates with a cursor. */
    p = list1(s, "/a/", NULL, 0, 7);
    cr_expect_eq(p.n, 7);
    cr_expect_eq(p.truncated, 1);
    cr_expect_str_eq(p.e[6].key, "/a/06");
    page_free(&p);
    /* A page holding exactly the rest is not truncated... */
    p = list1(s, "/b/", NULL, 0, 5);
    cr_expect_eq(p.n, 5);
    cr_expect_eq(p.truncated, 0, "5 keys under /b/ and a limit of 5");
    page_free(&p);
    /* ...and paging loses and repeats nothing. */
    all = list_all(s, "", 7, &pages);
    cr_expect_eq(all.n, 32);
    cr_expect_eq(pages, 5);
    page_free(&all);
    all = list_all(s, "/a/", 1, &pages);
    cr_expect_eq(all.n, 25);
    cr_expect_eq(pages, 25);
    for (int i = 0; i < 25 && (size_t)i < all.n; i++)
        cr_expect_eq(all.e[i].highest, (uint64_t)i * 10 + 1);
    page_free(&all);
    /* Submission order: a listing sent right behind advances (no wait)
     * sees them. */
    {
        struct res r1 = {0, 99, 0}, r2 = {0, 99, 0}, g = {0, 99, 0};
        st_store_get(s, "/a/99", 5, on_done, &g); /* taken first, as the proxy does */
        run_until(s, &g.calls, 1);
        st_store_advance(s, "/a/00", 5, 500, on_done, &r1);
        st_store_advance(s, "/a/99", 5, 9, on_done, &r2);
        p = (struct page){0};
        st_store_list(s, "/a/", 3, NULL, 0, 1000, on_page, &p);
        run_until(s, &p.calls, 1);
        run_until(s, &r2.calls, 1);
        cr_expect_eq(r1.calls + r2.calls, 2);
        cr_assert_eq(p.n, 26);
        cr_expect_eq(p.e[0].highest, 500);
        cr_expect_str_eq(p.e[25].key, "/a/99");
        cr_expect_eq(p.e[25].highest, 9);
        page_free(&p);
    }
    st_store_close(&s);
    /* Durable (file and etcd): the values are there after a reopen. */
    if (b != ST_STORE_MEMORY) {
        s = open_store(b, 0);
        p = list1(s, "/a/0", NULL, 0, 3);
        cr_expect_eq(p.n, 3);
        cr_expect_eq(p.e[0].highest, 500);
        cr_expect_eq(p.e[1].highest, 11);
        page_free(&p);
        st_store_close(&s);
    }
}

Test(list, memory_prefix_limit_pages_and_order)
{
    check_list(ST_STORE_MEMORY);
}
Test(list, file_prefix_limit_pages_and_order)
{
    check_list(ST_STORE_FILE);
}
Test(list_etcd, etcd_prefix_limit_pages_and_order)
{
    check_list(ST_STORE_ETCD);
}

/* The file backend keeps keys over LMDB's 511-byte limit as their first 400
 * bytes and a hash: listed with those bytes and the hash, found under a
 * prefix longer than 400 bytes that matches them; the empty key lists as
 * the empty key; the operator floor raises what a listing reports. */
Test(list, file_long_keys_hashed_empty_key_and_floor)
{
    struct st_store *s = open_store(ST_STORE_FILE, 0);
    static char k1[600], k2[600], k511[511], pfx[451];
    struct page p, all;
    int pages;

    memset(k1, 'x', sizeof k1);
    memcpy(k1, "/long/", 6);
    memcpy(k2, k1, sizeof k2);
    k2[599] = 'y'; /* same first 400 bytes, another hash */
    memset(k511, 'x', sizeof k511);
    memcpy(k511, "/long/", 6);
    adv(s, k1, sizeof k1, 41);
    adv(s, k2, sizeof k2, 42);
    adv(s, k511, sizeof k511, 43);
    adv(s, "", 0, 44);
    adv(s, "/z", 2, 3);

    p = list1(s, "/long/", NULL, 0, 1000);
    cr_assert_eq(p.rc, 0);
    cr_assert_eq(p.n, 3);
    /* Sorted by stored form: the 400 kept bytes (with a NUL behind them)
     * come before the 511-byte plain key. */
    for (int i = 0; i < 2; i++) {
        cr_expect_eq(p.e[i].klen, ST_STORE_KEY_KEPT);
        cr_expect_eq(memcmp(p.e[i].key, k1, ST_STORE_KEY_KEPT), 0);
        cr_expect_eq(strlen(p.e[i].hash), 32, "hash %s", p.e[i].hash);
        cr_expect_eq(strspn(p.e[i].hash, "0123456789abcdef"), 32);
    }
    cr_expect_str_neq(p.e[0].hash, p.e[1].hash);
    cr_expect((p.e[0].highest == 41 && p.e[1].highest == 42) ||
              (p.e[0].highest == 42 && p.e[1].highest == 41));
    cr_expect_eq(p.e[2].klen, 511);
    cr_expect_eq(p.e[2].hash[0], '\0');
    cr_expect_eq(p.e[2].highest, 43);
    page_free(&p);
    /* Paging through hashed keys one at a time: the cursor is the stored
     * form, so nothing repeats. */
    all = list_all(s, "/long/", 1, &pages);
    cr_expect_eq(all.n, 3);
    page_free(&all);
    /* A prefix of 451 bytes: the plain key must match all of it, a hashed
     * key its first 400. */
    memcpy(pfx, k1, sizeof pfx);
    {
        struct page q = {0};
        st_store_list(s, pfx, sizeof pfx, NULL, 0, 1000, on_page, &q);
        run_until(s, &q.calls, 1);
        cr_expect_eq(q.n, 3, "2 hashed + the 511-byte key (all 'x' after /long/)");
        page_free(&q);
        pfx[450] = 'q';
        st_store_list(s, pfx, sizeof pfx, NULL, 0, 1000, on_page, &q);
        run_until(s, &q.calls, 1);
        cr_expect_eq(q.n, 2, "the plain key no longer matches; the hashed ones may");
        for (size_t i = 0; i < q.n; i++)
            cr_expect_eq(strlen(q.e[i].hash), 32);
        page_free(&q);
    }
    p = list1(s, "", NULL, 0, 1);
    cr_expect_eq(p.n, 1);
    cr_expect_eq(p.e[0].klen, 0, "the empty key comes first");
    cr_expect_eq(p.e[0].highest, 44);
    cr_expect_eq(p.truncated, 1);
    page_free(&p);
    st_store_close(&s);
    /* Reopened with an operator floor of 100: every listed highest is at
     * least 100. */
    s = open_store(ST_STORE_FILE, 100);
    p = list1(s, "/z", NULL, 0, 10);
    cr_expect_eq(p.n, 1);
    cr_expect_eq(p.e[0].highest, 100);
    page_free(&p);
    st_store_close(&s);
}

/* A page stops at ST_STORE_LIST_BYTES of keys (with a cursor), so one
 * answer stays bounded whatever the keys' lengths. */
static void check_byte_bound(enum st_store_backend b)
{
    struct st_store *s = open_store(b, 0);
    static char key[500];
    size_t n = ST_STORE_LIST_BYTES / sizeof key + 10;
    struct page all, p;
    int pages;
    struct res r = {0, 0, 0};

    memset(key, 'k', sizeof key);
    for (size_t i = 0; i < n; i++) {
        snprintf(key, 16, "/k/%06zu", i);
        key[strlen(key)] = 'k';
        st_store_advance(s, key, sizeof key, i + 1, on_done, &r);
    }
    run_until(s, &r.calls, (int)n);
    p = list1(s, "/k/", NULL, 0, ST_STORE_LIST_MAX);
    cr_assert_eq(p.rc, 0);
    cr_expect_eq(p.truncated, 1);
    cr_expect_eq(p.n, ST_STORE_LIST_BYTES / sizeof key + 1, "%zu entries", p.n);
    page_free(&p);
    all = list_all(s, "/k/", 2000, &pages);
    cr_expect_eq(all.n, n);
    cr_expect_eq(pages, 2, "2000 a page, 2107 keys");
    page_free(&all);
    st_store_close(&s);
}

Test(list, memory_page_bounded_in_bytes)
{
    check_byte_bound(ST_STORE_MEMORY);
}
Test(list, file_page_bounded_in_bytes)
{
    check_byte_bound(ST_STORE_FILE);
}

/* etcd: a value under tok/ that is no token fails the store, as a get
 * does; an unreachable cluster answers ST_STORE_EUNAVAIL. */
Test(list_etcd, a_value_that_is_no_token_fails_the_store)
{
    struct st_store *s = open_store(ST_STORE_ETCD, 0);
    char out[1024];
    struct page p;

    adv(s, "/ok", 3, 5);
    /* "/l/tok//bad" = "12" (base64 L2wvdG9rLy9iYWQ= / MTI=) */
    cr_assert_eq(ts_etcd_post(&etcd, 0, "/v3/kv/put",
                              "{\"key\":\"L2wvdG9rLy9iYWQ=\",\"value\":\"MTI=\"}", out, sizeof out),
                 200, "%s", out);
    p = list1(s, "/o", NULL, 0, 10);
    cr_expect_eq(p.rc, 0, "outside the bad key's prefix");
    cr_expect_eq(p.n, 1);
    page_free(&p);
    p = list1(s, "", NULL, 0, 10);
    cr_expect_eq(p.rc, -1);
    cr_expect(st_store_failed(s));
    page_free(&p);
    st_store_close(&s);
}

Test(list_etcd, unreachable_gives_eunavail)
{
    struct st_store *s = open_store(ST_STORE_ETCD, 0);
    struct page p;

    adv(s, "/u", 2, 5);
    ts_etcd_stop(&etcd);
    p = list1(s, "", NULL, 0, 10);
    cr_expect_eq(p.rc, ST_STORE_EUNAVAIL);
    cr_expect(st_store_unreachable(s, NULL, 0));
    cr_expect_eq(st_store_failed(s), 0);
    page_free(&p);
    st_store_close(&s);
}

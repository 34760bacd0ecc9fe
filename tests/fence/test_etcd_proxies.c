/* Several fenceproxy processes in front of one storage, sharing an etcd
 * token store with per-resource ownership (issue 14; docs/safety.md,
 * "Several proxies"): a real 3-member etcd cluster, 3 real fenceproxy
 * processes on loopback and the recording upstream, whose arrivals log
 * tells which requests were in flight at the storage at the same time.
 *
 * One cluster serves the whole binary (started by the runner before the
 * first test); each test has its own key prefix, upstream and proxies. The
 * tests that kill etcd members start a cluster of their own.
 *
 *  - the paused holder across proxies: A writes 33 through P1, B 34 through
 *    P2 (P1 hands the resource over), A's late write with 33 through P1
 *    (which had 33 cached) and through P3 is refused with 409 and audited;
 *  - the same story through nginx WebDAV (the file holds B's data);
 *  - contention: writers with rising tokens on random proxies; the
 *    upstream never has two tokens (nor two proxies) in flight for the
 *    resource at once and never receives a token below one it received;
 *  - kill -9 of the owner in the middle of a write, with another of its
 *    requests still unanswered by the storage: the next owner forwards
 *    only after the lock-delay (upstream_timeout + margin), so nothing of
 *    the dead owner is in flight at the storage with it;
 *  - SIGSTOP of the owner with a slow upload, past its lease, while another
 *    proxy takes the resource; after SIGCONT it fences itself: not one more
 *    byte of the upload reaches the upstream, its client gets 503 or a
 *    closed connection, and the audit log says ownership_lapsed;
 *  - the owner's lease revoked under a slow upload (its deadline not come
 *    yet, the lease renewed as a new one): the upload is aborted all the
 *    same before the next owner forwards;
 *  - a deposed owner (another proxy took the resource without it hearing
 *    of it) cannot advance: its epoch is not own/R's (503, audited);
 *  - the etcd leader killed under load; etcd fully down (503 everywhere,
 *    nothing forwarded) and back;
 *  - the hand-over latency (p50/p99, printed for docs/benchmarks.md).
 *
 * The logs of the proxies (and of a test's own cluster) are printed when a
 * test fails, or always with FENCE_TEST_DUMP=1.
 *
 * Timings are short so that the binary stays fast: lease_ttl 3 s, margin
 * 1 s (self-fencing 2 s after the last keepalive sent), handover_wait 2 s,
 * upstream_timeout 2 s (lock-delay 3 s; 5 s and 6 s in the kill -9 test). */
#include <criterion/criterion.h>
#include <criterion/hooks.h>

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ts_etcd.h"
#include "ts_proc.h"
#include "ts_proxy.h"
#include "ts_upstream.h"

#define NPX         3
#define RES         "/objects/user42" /* the resource of every write below */
#define TARGET      RES "/a.txt"
#define TTL_MS      3000
#define MARGIN_MS   1000
#define HANDOVER_MS 2000
/* The ownership keys of the proxies' [store] section. */
#define OWN_KEYS "lease_ttl = 3s\nmargin = 1s\nhandover_wait = 2s\n"

/* ---- the cluster shared by the binary ----------------------------------- */

static struct ts_etcd shared;
static char *shared_dir;

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    shared_dir = ts_tempdir("etcdown");
    if (shared_dir == NULL || ts_etcd_start(&shared, shared_dir, 3) < 0) {
        fprintf(stderr, "test_etcd_proxies: the 3-member etcd cluster did not start\n");
        return;
    }
    setenv("FENCE_TEST_ETCD_ENDPOINTS", shared.endpoints, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    ts_etcd_stop(&shared);
    if (shared_dir != NULL)
        ts_rmrf(shared_dir);
    free(shared_dir);
}

/* ---- per test ------------------------------------------------------------ */

static struct ts_etcd E; /* the shared cluster's ports, or a cluster of this test */
static int own_cluster;
static char *DIR_;
static struct ts_upstream *up;
static struct ts_proxy px[NPX];
static int started[NPX];
static char store_conf[1024];
static char PREFIX[64];
static int nbad, reached_end; /* the logs are dumped unless the test passed */

/* A check that counts its failure (for the log dump) and goes on. */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            char m_[1024];                                                                         \
            snprintf(m_, sizeof m_, __VA_ARGS__);                                                  \
            nbad++;                                                                                \
            cr_expect(0, "%s: %s", #cond, m_);                                                     \
        }                                                                                          \
    } while (0)

static void setup(void)
{
    const char *ep = getenv("FENCE_TEST_ETCD_ENDPOINTS");
    const char *p;

    signal(SIGPIPE, SIG_IGN);
    nbad = reached_end = own_cluster = 0;
    memset(started, 0, sizeof started);
    cr_assert_not_null(ep, "no shared etcd cluster (see the runner's output above)");
    memset(&E, 0, sizeof E);
    snprintf(E.endpoints, sizeof E.endpoints, "%s", ep);
    for (p = ep; p != NULL && *p != '\0' && E.n < TS_ETCD_MAX; E.n++) {
        const char *colon = strchr(p, ':');
        cr_assert_not_null(colon);
        E.client_port[E.n] = atoi(colon + 1);
        p = strchr(colon, ',');
        p = p != NULL ? p + 1 : NULL;
    }
    DIR_ = ts_tempdir("etcdownt");
    cr_assert_not_null(DIR_);
    snprintf(PREFIX, sizeof PREFIX, "/t%ld/", (long)getpid());
    up = ts_upstream_start();
    cr_assert_not_null(up, "recording upstream did not start");
}

static void teardown(void)
{
    int dump = nbad > 0 || !reached_end || getenv("FENCE_TEST_DUMP") != NULL;

    for (int i = 0; i < NPX; i++) {
        if (started[i] && px[i].proc.pid > 0)
            ts_proc_signal(&px[i].proc, SIGCONT); /* a test may have stopped it */
        if (started[i])
            ts_proxy_cleanup(&px[i], dump);
    }
    ts_upstream_stop(&up);
    if (own_cluster) {
        if (dump)
            ts_etcd_dump_logs(&E);
        ts_etcd_stop(&E);
    }
    if (DIR_)
        ts_rmrf(DIR_);
    free(DIR_);
    DIR_ = NULL;
}

TestSuite(etcdpx, .init = setup, .fini = teardown, .timeout = 60);

/* A 3-member cluster for this test alone (it kills members). */
static void use_own_cluster(void)
{
    cr_assert_eq(ts_etcd_start(&E, DIR_, 3), 0, "etcd fixture failed");
    own_cluster = 1;
}

/* Starts the 3 proxies on the cluster, upstream at port (0: the recording
 * upstream), with extra [proxy] keys (NULL: upstream_timeout = 2s). */
static void start_proxies(int port, const char *proxy_keys)
{
    char extra[1024];

    snprintf(store_conf, sizeof store_conf,
             "[store]\nbackend = etcd\nendpoints = %s\nprefix = %s\ntimeout = 1s\n" OWN_KEYS,
             E.endpoints, PREFIX);
    snprintf(extra, sizeof extra,
             "%s\n[route objects]\nprefix = /objects/\nresource = segments:2\n",
             proxy_keys != NULL ? proxy_keys : "upstream_timeout = 2s");
    for (int i = 0; i < NPX; i++) {
        char tag[16];
        snprintf(tag, sizeof tag, "etcdpx%d", i);
        cr_assert_eq(ts_proxy_init(&px[i], tag), 0);
        started[i] = 1;
        px[i].store_conf = store_conf;
        cr_assert_eq(ts_proxy_write_conf(&px[i], port ? port : ts_upstream_port(up), extra), 0);
        cr_assert_eq(ts_proxy_start(&px[i]), 0, "fenceproxy %d did not start", i);
    }
}

/* PUT TARGET with token through proxy i, marked "X-Via: p<i>"; the status
 * (-1: no response within timeout_ms). r may be NULL. */
static int put_t(int i, unsigned token, const char *body, struct ts_resp *r, int timeout_ms)
{
    char raw[1024];
    int n = snprintf(raw, sizeof raw,
                     "PUT " TARGET " HTTP/1.1\r\nHost: t\r\nFencing-Token: %u\r\nX-Via: p%d\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     token, i, strlen(body), body);
    return ts_http_raw(px[i].port, raw, (size_t)n, r, timeout_ms);
}

static int put(int i, unsigned token, const char *body, struct ts_resp *r)
{
    return put_t(i, token, body, r, 8000);
}

/* put() until it is not a 503, for up to ms; the last status, and how many
 * 503s came first in *n503 (may be NULL). */
static int put_retry(int i, unsigned token, const char *body, int ms, int *n503)
{
    long long end = ts_now_ms() + ms;
    int st;

    if (n503 != NULL)
        *n503 = 0;
    for (;;) {
        st = put_t(i, token, body, NULL, 12000);
        if (st != 503 || ts_now_ms() >= end)
            return st;
        if (n503 != NULL)
            (*n503)++;
        ts_sleep_ms(50);
    }
}

/* Whether a line of path holds every one of the NULL-terminated needles,
 * waiting up to 3 s for it (the audit log is written by a batch). */
static int file_has(const char *path, const char *const needles[])
{
    for (int tries = 0; tries < 60; tries++) {
        size_t len;
        char *text = ts_read_file(path, &len), *line, *save = NULL;
        int all = 0;
        for (line = text != NULL ? strtok_r(text, "\n", &save) : NULL; line != NULL && !all;
             line = strtok_r(NULL, "\n", &save)) {
            all = 1;
            for (int k = 0; all && needles[k] != NULL; k++)
                all = strstr(line, needles[k]) != NULL;
        }
        free(text);
        if (all)
            return 1;
        ts_sleep_ms(50);
    }
    return 0;
}

static double ms_between(uint64_t from_ns, uint64_t to_ns)
{
    return ((double)to_ns - (double)from_ns) / 1e6;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* ---- etcd, seen by the test ----------------------------------------------- */

static void b64(const char *in, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;

    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)in[i] << 16;
        if (i + 1 < n)
            v |= (unsigned char)in[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)in[i + 2];
        out[o++] = a[(v >> 18) & 63];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = i + 1 < n ? a[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? a[v & 63] : '=';
    }
    out[o] = '\0';
}

/* The owner key of RES: 1 with the owner's lease id in *lease and whether
 * its value is proxy i's id in *is_i, 0 when there is none, -1 when no
 * member answered. */
static int owner_of(int i, char *lease, size_t leaselen, int *is_i)
{
    char key[256], kb[400], body[512], out[8192], id[64], idb[128];
    const char *p;

    snprintf(key, sizeof key, "%sown/%s", PREFIX, RES);
    b64(key, strlen(key), kb);
    snprintf(body, sizeof body, "{\"key\":\"%s\"}", kb);
    for (int m = 0; m < E.n; m++) {
        if (own_cluster && E.m[m].pid == 0)
            continue;
        if (ts_etcd_post(&E, m, "/v3/kv/range", body, out, sizeof out) != 200)
            continue;
        if (strstr(out, "\"kvs\"") == NULL)
            return 0;
        snprintf(id, sizeof id, "fenceproxy pid %ld", i >= 0 ? (long)px[i].proc.pid : 0L);
        b64(id, strlen(id), idb);
        if (is_i != NULL)
            *is_i = strstr(out, idb) != NULL;
        if (lease != NULL && (p = strstr(out, "\"lease\":\"")) != NULL) {
            size_t k = 0;
            p += 9;
            while (p[k] != '"' && p[k] != '\0' && k + 1 < leaselen) {
                lease[k] = p[k];
                k++;
            }
            lease[k] = '\0';
        }
        return 1;
    }
    return -1;
}

/* ---- the upstream's history ----------------------------------------------- */

static struct ts_upstream_arrival arr; /* scratch */

/* The first arrival whose token is tok at or after index from: its index,
 * or -1. */
static long first_with_token(unsigned tok, size_t from)
{
    char want[32];

    snprintf(want, sizeof want, "%u", tok);
    for (size_t i = from; i < ts_upstream_arrivals(up); i++) {
        if (ts_upstream_arrival(up, i, "Fencing-Token", &arr) == 0 && strcmp(arr.field, want) == 0)
            return (long)i;
    }
    return -1;
}

/* Waits up to ms for an arrival with token tok; its index or -1. */
static long wait_token(unsigned tok, int ms)
{
    long long end = ts_now_ms() + ms;
    long i;

    while ((i = first_with_token(tok, 0)) < 0 && ts_now_ms() < end)
        ts_sleep_ms(10);
    return i;
}

/* What the storage saw, checked: no two tokens and no two proxies in flight
 * at once (S3N, and the exclusive ownership behind it), and the tokens, in
 * the order the heads arrived and in the order requests were received in
 * full, never going down (STALE, APPLY). Returns the number of hand-overs
 * (the proxy of a request differs from the one before). */
static int check_history(const char *what)
{
    static struct ts_upstream_req q;
    char why[512], via[sizeof arr.field] = "";
    size_t n = ts_upstream_arrivals(up), bad_order = 0, bad_applied = 0;
    unsigned long prev = 0, prev_done = 0;
    int handovers = 0;

    CHECK(ts_upstream_overlaps(up, "Fencing-Token", "/objects/", why, sizeof why) == 0,
          "%s: two tokens in flight at once: %s", what, why);
    CHECK(ts_upstream_overlaps(up, "X-Via", "/objects/", why, sizeof why) == 0,
          "%s: two proxies in flight at once: %s", what, why);
    for (size_t i = 0; i < n; i++) {
        unsigned long t;
        cr_assert_eq(ts_upstream_arrival(up, i, "Fencing-Token", &arr), 0);
        t = strtoul(arr.field, NULL, 10);
        if (t < prev && bad_order++ == 0)
            CHECK(0, "%s: arrival %zu has token %lu after %lu", what, i, t, prev);
        prev = t > prev ? t : prev;
        cr_assert_eq(ts_upstream_arrival(up, i, "X-Via", &arr), 0);
        if (via[0] != '\0' && strcmp(via, arr.field) != 0)
            handovers++;
        snprintf(via, sizeof via, "%s", arr.field);
    }
    for (size_t i = 0; i < ts_upstream_count(up); i++) {
        char v[32];
        unsigned long t;
        cr_assert_eq(ts_upstream_get(up, i, &q), 0);
        cr_assert_eq(ts_upstream_header(&q, "Fencing-Token", v, sizeof v), 1);
        t = strtoul(v, NULL, 10);
        if (t < prev_done && bad_applied++ == 0)
            CHECK(0, "%s: the storage received token %lu after %lu (request %zu)", what, t,
                  prev_done, i);
        prev_done = t > prev_done ? t : prev_done;
    }
    CHECK(bad_order == 0, "%s: %zu arrivals below an earlier token", what, bad_order);
    CHECK(bad_applied == 0, "%s: %zu received requests below an earlier token", what, bad_applied);
    return handovers;
}

/* ---- 1. the paused holder across proxies ---------------------------------- */

Test(etcdpx, paused_holder_across_proxies)
{
    struct ts_resp r;
    struct ts_upstream_req *q = malloc(sizeof *q);
    int mine = 0;
    char lease[64];

    cr_assert_not_null(q);
    start_proxies(0, NULL);
    cr_assert_eq(put(0, 33, "A1", NULL), 200);
    CHECK(owner_of(0, lease, sizeof lease, &mine) == 1 && mine, "P1 does not own %s", RES);
    cr_assert_eq(put(1, 34, "B1", NULL), 200);
    CHECK(owner_of(1, lease, sizeof lease, &mine) == 1 && mine, "P1 did not hand over to P2");
    /* P1 had 33 cached as its durable highest: it must take the resource
     * back (and learn 34) before it decides. */
    memset(&r, 0, sizeof r);
    CHECK(put(0, 33, "A2", &r) == 409, "A's late write through P1 got %d", r.status);
    CHECK(strstr(r.body ? r.body : "", "\"highest\":34") != NULL, "P1 answered %s", r.body);
    ts_resp_free(&r);
    memset(&r, 0, sizeof r);
    CHECK(put(2, 33, "A3", &r) == 409, "A's late write through P3 got %d", r.status);
    CHECK(strstr(r.body ? r.body : "", "\"highest\":34") != NULL, "P3 answered %s", r.body);
    ts_resp_free(&r);
    CHECK(ts_upstream_count(up) == 2, "%zu requests reached the upstream, not 2",
          ts_upstream_count(up));
    cr_assert_eq(ts_upstream_get(up, ts_upstream_count(up) - 1, q), 0);
    CHECK(q->body_len == 2 && memcmp(q->body, "B1", 2) == 0, "B's data is not the last");
    {
        const char *const need[] = {"stale_token", "\"token\":33", "\"highest\":34", NULL};
        CHECK(file_has(px[0].audit, need), "P1's audit log lacks the refusal");
        CHECK(file_has(px[2].audit, need), "P3's audit log lacks the refusal");
    }
    /* A fresh proxy process (P2 restarted with no local state) knows 34. */
    cr_assert_eq(ts_proxy_stop(&px[1], SIGKILL) >= 0, 1);
    cr_assert_eq(ts_proxy_start(&px[1]), 0);
    memset(&r, 0, sizeof r);
    CHECK(put(1, 33, "A4", &r) == 409, "A's write through a restarted P2 got %d %s", r.status,
          r.body ? r.body : "");
    ts_resp_free(&r);
    memset(&r, 0, sizeof r);
    CHECK(put(1, 35, "C1", &r) == 200, "C's write through a restarted P2 got %d %s", r.status,
          r.body ? r.body : "");
    ts_resp_free(&r);
    CHECK(ts_upstream_count(up) == 3, "%zu requests reached the upstream, not 3",
          ts_upstream_count(up));
    check_history("paused holder");
    free(q);
    reached_end = 1;
}

/* ---- the same story through nginx WebDAV ----------------------------------- */

Test(etcdpx, paused_holder_through_nginx_webdav)
{
    struct ts_proc ng = {0};
    int port = ts_free_port();
    char path[1200];
    size_t len = 0;
    char *data;

    cr_assert_eq(ts_nginx_start(&ng, DIR_, port), 0, "nginx did not start");
    start_proxies(port, NULL);
    CHECK(put(0, 33, "A1", NULL) == 201, "A's write through P1");
    CHECK(put(1, 34, "B1", NULL) == 204, "B's write through P2");
    CHECK(put(0, 33, "A2", NULL) == 409, "A's late write through P1");
    CHECK(put(2, 33, "A3", NULL) == 409, "A's late write through P3");
    snprintf(path, sizeof path, "%s/data" TARGET, DIR_);
    data = ts_read_file(path, &len);
    CHECK(data != NULL && len == 2 && memcmp(data, "B1", 2) == 0, "the file holds %.*s", (int)len,
          data ? data : "(nothing)");
    free(data);
    ts_proc_stop(&ng, SIGTERM, 5000);
    reached_end = 1;
}

/* ---- 2. contention, and 5. the etcd leader killed under load --------------- */

struct load {
    atomic_uint next_token; /* the simulated lock service */
    atomic_int ok, stale, busy, lapsed, unavail, other, ok_after_kill;
    atomic_llong kill_ms; /* 0: nothing killed (yet) */
    long long until;
};

struct writer {
    struct load *ld;
    unsigned seed;
};

/* One writer: takes the next token (a lock epoch), writes with it 2 to 4
 * times through random proxies, again and again; a holder whose epoch is
 * over keeps writing with its old token like a paused holder would. */
static void *writer_main(void *arg)
{
    struct writer *w = arg;
    struct load *ld = w->ld;

    for (int epochs = 0; ts_now_ms() < ld->until && epochs < 10000; epochs++) {
        unsigned t = atomic_fetch_add(&ld->next_token, 1);
        int k = 2 + (int)(rand_r(&w->seed) % 3);
        for (int j = 0; j < k && ts_now_ms() < ld->until; j++) {
            struct ts_resp r;
            int p = (int)(rand_r(&w->seed) % NPX), st;
            char body[64];
            snprintf(body, sizeof body, "t%u p%d", t, p);
            memset(&r, 0, sizeof r);
            st = put_t(p, t, body, &r, 10000);
            if (st == 200) {
                long long km = atomic_load(&ld->kill_ms);
                atomic_fetch_add(&ld->ok, 1);
                if (km != 0 && ts_now_ms() > km)
                    atomic_fetch_add(&ld->ok_after_kill, 1);
            } else if (st == 409) {
                atomic_fetch_add(&ld->stale, 1);
            } else if (st == 503 && r.body != NULL && strstr(r.body, "owned by another proxy")) {
                atomic_fetch_add(&ld->busy, 1);
            } else if (st == 503 && r.body != NULL && strstr(r.body, "ownership lapsed")) {
                atomic_fetch_add(&ld->lapsed, 1);
            } else if (st == 503) {
                atomic_fetch_add(&ld->unavail, 1);
            } else {
                atomic_fetch_add(&ld->other, 1);
            }
            ts_resp_free(&r);
            ts_sleep_ms((int)(rand_r(&w->seed) % 15));
        }
    }
    return NULL;
}

#define NWRITERS 6

/* Runs NWRITERS writers for ms; kill_at (>0) kills the etcd leader after
 * that many ms. */
static void run_load(struct load *ld, int ms, int kill_at)
{
    pthread_t th[NWRITERS];
    struct writer w[NWRITERS];
    long long t0 = ts_now_ms();

    atomic_init(&ld->next_token, 100);
    ld->until = t0 + ms;
    for (int i = 0; i < NWRITERS; i++) {
        w[i].ld = ld;
        w[i].seed = (unsigned)(getpid() * 31 + i);
        cr_assert_eq(pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
    }
    if (kill_at > 0) {
        int leader;
        ts_sleep_ms(kill_at);
        leader = ts_etcd_leader(&E);
        cr_expect_geq(leader, 0, "no etcd leader");
        if (leader >= 0) {
            atomic_store(&ld->kill_ms, ts_now_ms());
            cr_expect_eq(ts_etcd_kill(&E, leader, SIGKILL), 0);
            fprintf(stderr, "[etcdpx] killed etcd member %d (the leader) at +%lld ms\n", leader,
                    ts_now_ms() - t0);
        }
    }
    for (int i = 0; i < NWRITERS; i++)
        pthread_join(th[i], NULL);
}

static void report_load(const char *what, struct load *ld, int handovers)
{
    fprintf(stderr,
            "[etcdpx] %s: %u tokens, %d ok, %d stale (409), 503s: %d handover_timeout, %d "
            "ownership lapsed, %d store unavailable; %d other; %zu requests reached the "
            "upstream (%zu in full), %d hand-overs between proxies; %d ok after the kill\n",
            what, atomic_load(&ld->next_token) - 100, atomic_load(&ld->ok), atomic_load(&ld->stale),
            atomic_load(&ld->busy), atomic_load(&ld->lapsed), atomic_load(&ld->unavail),
            atomic_load(&ld->other), ts_upstream_arrivals(up), ts_upstream_count(up), handovers,
            atomic_load(&ld->ok_after_kill));
}

Test(etcdpx, contention_on_random_proxies)
{
    static struct load ld;
    int handovers;

    start_proxies(0, NULL);
    ts_upstream_set_delay_ms(up, 15); /* time in flight at the storage */
    run_load(&ld, 5000, 0);
    handovers = check_history("contention");
    report_load("contention", &ld, handovers);
    CHECK(atomic_load(&ld.ok) >= 20, "only %d writes went through", atomic_load(&ld.ok));
    CHECK(atomic_load(&ld.stale) > 0, "no stale holder was refused: no contention");
    CHECK(handovers > 0, "the resource never moved between proxies");
    CHECK(atomic_load(&ld.other) == 0, "%d answers were neither 200, 409 nor 503",
          atomic_load(&ld.other));
    CHECK((size_t)atomic_load(&ld.ok) <= ts_upstream_count(up), "%d ok but %zu received",
          atomic_load(&ld.ok), ts_upstream_count(up));
    reached_end = 1;
}

Test(etcdpx, etcd_leader_killed_under_load)
{
    static struct load ld;
    int handovers;

    use_own_cluster();
    start_proxies(0, NULL);
    ts_upstream_set_delay_ms(up, 15);
    run_load(&ld, 8000, 2000);
    handovers = check_history("leader killed");
    report_load("leader killed", &ld, handovers);
    CHECK(atomic_load(&ld.kill_ms) != 0, "the leader was not killed");
    CHECK(atomic_load(&ld.ok_after_kill) > 0, "no write went through after the kill");
    CHECK(atomic_load(&ld.other) == 0, "%d answers were neither 200, 409 nor 503",
          atomic_load(&ld.other));
    reached_end = 1;
}

/* ---- 3. kill -9 of the owner in the middle of a write ---------------------- */

/* A slow upload of len body bytes with token through proxy i: the head and
 * the first `first` bytes at once, then one byte every 100 ms; then the
 * response. */
struct slow {
    int i, fd;
    unsigned token;
    size_t len, first, sent;
    int status; /* 0: closed or reset without a response */
    int send_failed;
};

static void *slow_main(void *arg)
{
    struct slow *s = arg;
    struct ts_resp r;
    char head[512], body[4096];

    memset(body, 'x', sizeof body);
    snprintf(head, sizeof head,
             "PUT " TARGET " HTTP/1.1\r\nHost: t\r\nFencing-Token: %u\r\nX-Via: p%d\r\n"
             "X-Slow: 1\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
             s->token, s->i, s->len);
    if (ts_send_all(s->fd, head, strlen(head)) < 0 || ts_send_all(s->fd, body, s->first) < 0) {
        s->send_failed = 1;
        goto answer;
    }
    s->sent = s->first;
    while (s->sent < s->len) {
        ts_sleep_ms(100);
        if (ts_send_all(s->fd, body, 1) < 0) {
            s->send_failed = 1;
            break;
        }
        s->sent++;
    }
answer:
    memset(&r, 0, sizeof r);
    s->status = ts_http_read(s->fd, &r, 15000, 0) == 0 ? r.status : 0;
    ts_resp_free(&r);
    return NULL;
}

/* Starts a slow upload through proxy i and waits until the upstream has its
 * first bytes. Returns the upload's arrival index. */
static long start_slow(struct slow *s, pthread_t *th, int i, unsigned token, size_t len)
{
    long long end = ts_now_ms() + 10000;
    size_t n0 = ts_upstream_arrivals(up);

    memset(s, 0, sizeof *s);
    s->i = i;
    s->token = token;
    s->len = len;
    s->first = 16;
    s->fd = ts_connect(px[i].port);
    cr_assert_geq(s->fd, 0);
    cr_assert_eq(pthread_create(th, NULL, slow_main, s), 0);
    for (;;) {
        for (size_t k = n0; k < ts_upstream_arrivals(up); k++) {
            cr_assert_eq(ts_upstream_arrival(up, k, "X-Slow", &arr), 0);
            if (strcmp(arr.field, "1") == 0 && arr.body_got >= s->first)
                return (long)k;
        }
        cr_assert_lt(ts_now_ms(), end, "the slow upload did not reach the upstream");
        ts_sleep_ms(10);
    }
}

/* The rest of a write through proxy i, in a thread: retried while 503. */
struct bwrite {
    int i;
    unsigned token;
    int once; /* one try, no retry */
    int status, n503;
};

static void *bwrite_main(void *arg)
{
    struct bwrite *b = arg;
    b->status = b->once ? put_t(b->i, b->token, "B", NULL, 15000)
                        : put_retry(b->i, b->token, "B", 25000, &b->n503);
    return NULL;
}

Test(etcdpx, owner_killed_mid_write_next_owner_waits_the_lock_delay)
{
    /* upstream_timeout 5 s here, above the lease's 3 s: a request the
     * dead owner sent in full may be applied by the storage up to 5 s
     * later (the timing assumption), after its lease expired. */
    const int upstream_timeout_ms = 5000, lock_delay_ms = upstream_timeout_ms + MARGIN_MS;
    struct slow s;
    struct bwrite b = {.i = 1, .token = 51};
    pthread_t ts_, tb, tx;
    struct bwrite x = {.i = 0, .token = 50};
    long long t_kill, t_gone = 0, t_acq = 0, t_release = 0;
    uint64_t kill_ns, acq_ns = 0, first_ns;
    long slow_idx, first;

    start_proxies(0, "upstream_timeout = 5s");
    cr_assert_eq(put(0, 50, "warm", NULL), 200);
    /* An unanswered request of the owner (the storage is slow to apply it)
     * and a slow upload, both with token 50. */
    cr_assert_eq(ts_upstream_hold(up, "X-Via: p0"), 0);
    cr_assert_eq(pthread_create(&tx, NULL, bwrite_main, &x), 0);
    cr_assert_geq(wait_token(50, 5000), 0);
    cr_assert_eq(ts_upstream_wait_count(up, 2, 5000), 0, "the held request is not in");
    slow_idx = start_slow(&s, &ts_, 0, 50, 200);
    kill_ns = mono_ns();
    t_kill = ts_now_ms();
    cr_assert_eq(ts_proxy_stop(&px[0], SIGKILL) >= 0, 1);
    cr_assert_eq(pthread_create(&tb, NULL, bwrite_main, &b), 0);
    /* Watch own/R: gone with the dead owner's lease, then P2's. The held
     * request is applied 4 s after the kill, within its 5 s. */
    while (ts_now_ms() - t_kill < 20000 && t_acq == 0) {
        int mine = 0, rc = owner_of(1, NULL, 0, &mine);
        if (rc == 0 && t_gone == 0)
            t_gone = ts_now_ms();
        if (rc == 1 && mine) {
            t_acq = ts_now_ms();
            acq_ns = mono_ns();
        }
        if (t_release == 0 && ts_now_ms() - t_kill >= 4000) {
            ts_upstream_release(up, "X-Via: p0");
            t_release = ts_now_ms();
        }
        ts_sleep_ms(5);
    }
    if (t_release == 0) {
        long long left = 4000 - (ts_now_ms() - t_kill);
        if (left > 0)
            ts_sleep_ms((int)left);
        ts_upstream_release(up, "X-Via: p0");
    }
    pthread_join(tb, NULL);
    pthread_join(tx, NULL);
    pthread_join(ts_, NULL);
    close(s.fd);
    CHECK(t_acq != 0, "P2 never owned the resource");
    CHECK(b.status == 200, "B's write through P2 ended with %d", b.status);
    first = first_with_token(51, 0);
    cr_assert_geq(first, 0, "B's write never reached the upstream");
    cr_assert_eq(ts_upstream_arrival(up, (size_t)first, "X-Via", &arr), 0);
    first_ns = arr.head_ns;
    fprintf(stderr,
            "[etcdpx] kill -9 of the owner: own/R gone after %lld ms, P2 owns it after %lld ms, "
            "P2's first forward %.0f ms after the kill and %.0f ms after it owned R "
            "(lock-delay %d ms); %d 503s before\n",
            t_gone ? t_gone - t_kill : -1, t_acq ? t_acq - t_kill : -1,
            ms_between(kill_ns, first_ns), acq_ns ? ms_between(acq_ns, first_ns) : -1.0,
            lock_delay_ms, b.n503);
    /* The lock-delay: nothing before upstream_timeout + margin after P2 took
     * R (its answer came before the test saw the key; 200 ms for slack). */
    CHECK(ms_between(kill_ns, first_ns) >= lock_delay_ms, "P2 forwarded %.0f ms after the kill",
          ms_between(kill_ns, first_ns));
    CHECK(acq_ns != 0 && ms_between(acq_ns, first_ns) >= lock_delay_ms - 200,
          "P2 forwarded %.0f ms after it owned R", acq_ns ? ms_between(acq_ns, first_ns) : -1.0);
    /* Nothing of the dead owner reached the storage, or was in flight
     * there, after the new owner's first forward. */
    for (size_t k = 0; k < ts_upstream_arrivals(up); k++) {
        cr_assert_eq(ts_upstream_arrival(up, k, "X-Via", &arr), 0);
        if (strcmp(arr.field, "p0") == 0)
            CHECK(ts_upstream_inflight_end(&arr) < first_ns,
                  "P1's request %zu was in flight %.0f ms after P2's first forward", k,
                  ms_between(first_ns, ts_upstream_inflight_end(&arr)));
    }
    cr_assert_eq(ts_upstream_arrival(up, (size_t)slow_idx, NULL, &arr), 0);
    CHECK(!arr.complete, "the cut-off upload was received in full");
    check_history("owner killed");
    reached_end = 1;
}

/* ---- 4. SIGSTOP of the owner past its lease -------------------------------- */

Test(etcdpx, owner_stopped_past_its_lease_fences_itself)
{
    struct slow s;
    struct bwrite b = {.i = 1, .token = 41};
    pthread_t ts_, tb;
    long slow_idx, first;
    long long t_stop, t_cont;
    uint64_t first_ns, stop_ns;

    start_proxies(0, NULL);
    cr_assert_eq(put(0, 40, "warm", NULL), 200);
    /* 16 bytes now, then one every 100 ms: 48 more wait in P1's socket
     * while it is stopped. */
    slow_idx = start_slow(&s, &ts_, 0, 40, 64);
    cr_assert_eq(ts_proc_signal(&px[0].proc, SIGSTOP), 0);
    t_stop = ts_now_ms();
    stop_ns = mono_ns();
    /* B takes the resource through P2 (after P1's lease expired and the
     * lock-delay) and is kept in flight at the storage while P1 resumes. */
    cr_assert_eq(ts_upstream_hold(up, "Fencing-Token: 41"), 0);
    cr_assert_eq(pthread_create(&tb, NULL, bwrite_main, &b), 0);
    first = wait_token(41, 20000);
    if (ts_now_ms() - t_stop < TTL_MS + 1000)
        ts_sleep_ms((int)(TTL_MS + 1000 - (ts_now_ms() - t_stop)));
    cr_assert_eq(ts_proc_signal(&px[0].proc, SIGCONT), 0);
    t_cont = ts_now_ms();
    CHECK(first >= 0, "B's write did not reach the upstream while P1 was stopped");
    ts_sleep_ms(1500); /* P1 runs: whatever it would still relay, it does now */
    ts_upstream_release(up, "Fencing-Token: 41");
    pthread_join(tb, NULL);
    pthread_join(ts_, NULL);
    close(s.fd);
    cr_assert_geq(first, 0);
    cr_assert_eq(ts_upstream_arrival(up, (size_t)first, NULL, &arr), 0);
    first_ns = arr.head_ns;
    fprintf(stderr,
            "[etcdpx] SIGSTOP of the owner for %lld ms: P2 forwarded %.0f ms after the stop, "
            "%d 503s before; the slow upload's client got %d after %zu of %zu bytes\n",
            t_cont - t_stop, ms_between(stop_ns, first_ns), b.n503, s.status, s.sent, s.len);
    CHECK(b.status == 200, "B's write through P2 ended with %d", b.status);
    cr_assert_eq(ts_upstream_arrival(up, (size_t)slow_idx, NULL, &arr), 0);
    CHECK(!arr.complete, "P1 relayed the whole upload after SIGCONT");
    CHECK(arr.last_ns < first_ns, "P1 relayed bytes %.0f ms after P2's first request arrived",
          ms_between(first_ns, arr.last_ns));
    CHECK(arr.end_ns != 0, "P1 kept the upstream connection of its upload open");
    CHECK(s.status == 503 || s.status == 0, "the slow upload's client got %d", s.status);
    {
        const char *const need[] = {"ownership_lapsed", NULL};
        const char *const logged[] = {"ownership lapsed", NULL};
        CHECK(file_has(px[0].audit, need), "P1's audit log has no ownership_lapsed");
        CHECK(file_has(px[0].proc.log, logged), "P1's log does not say it");
    }
    check_history("owner stopped");
    /* P1 recovers: a new lease, and the resource back by a hand-over. */
    CHECK(put_retry(0, 42, "C", 15000, NULL) == 200, "P1 did not write again after SIGCONT");
    reached_end = 1;
}

/* The owner's lease is revoked (etcd lost it, an operator revoked it) while
 * its deadline has not come: its next keepalive hears "lease gone" and it
 * takes a new lease at once, which must not let the upload it admitted
 * under the old one go on. */
Test(etcdpx, owner_lease_lost_aborts_its_upload)
{
    struct slow s;
    struct bwrite b = {.i = 1, .token = 61};
    pthread_t ts_, tb;
    char lease[64] = "", body[128], out[1024];
    long slow_idx, first;
    uint64_t first_ns;
    int mine = 0;

    start_proxies(0, NULL);
    cr_assert_eq(put(0, 60, "warm", NULL), 200);
    /* 16 bytes, then 1 per 100 ms for 8 s: still going when P2 forwards. */
    slow_idx = start_slow(&s, &ts_, 0, 60, 96);
    cr_assert_eq(owner_of(0, lease, sizeof lease, &mine), 1);
    cr_assert(mine && lease[0] != '\0', "P1 does not own the resource");
    snprintf(body, sizeof body, "{\"ID\":\"%s\"}", lease);
    cr_assert_eq(ts_etcd_post(&E, 0, "/v3/lease/revoke", body, out, sizeof out), 200, "%s", out);
    cr_assert_eq(pthread_create(&tb, NULL, bwrite_main, &b), 0);
    pthread_join(tb, NULL);
    pthread_join(ts_, NULL);
    close(s.fd);
    CHECK(b.status == 200, "B's write through P2 ended with %d", b.status);
    first = first_with_token(61, 0);
    cr_assert_geq(first, 0);
    cr_assert_eq(ts_upstream_arrival(up, (size_t)first, NULL, &arr), 0);
    first_ns = arr.head_ns;
    cr_assert_eq(ts_upstream_arrival(up, (size_t)slow_idx, NULL, &arr), 0);
    fprintf(stderr,
            "[etcdpx] lease revoked: the upload's last byte %.0f ms before P2's first "
            "forward; its client got %d after %zu of %zu bytes\n",
            ms_between(arr.last_ns, first_ns), s.status, s.sent, s.len);
    CHECK(!arr.complete, "P1 relayed the whole upload under its new lease");
    CHECK(arr.last_ns < first_ns, "P1 relayed bytes %.0f ms after P2's first request arrived",
          ms_between(first_ns, arr.last_ns));
    CHECK(s.status == 503 || s.status == 0, "the slow upload's client got %d", s.status);
    {
        const char *const need[] = {"ownership_lapsed", NULL};
        CHECK(file_has(px[0].audit, need), "P1's audit log has no ownership_lapsed");
    }
    check_history("lease lost");
    reached_end = 1;
}

/* A deposed owner: P1's own/R goes away without P1 hearing of it (deleted
 * here; in the protocol, a lease that expired while P1's clock ran slow)
 * and P2 takes the resource. P1 still has it cached as owned, but its next
 * advance carries P1's epoch, which is not own/R's any more: refused (503,
 * audited as ownership_lapsed), nothing raised, and P1 takes the resource
 * again before it writes. */
Test(etcdpx, deposed_owner_cannot_advance)
{
    char key[256], kb[400], body[512], out[1024];
    struct ts_resp r;
    int mine = 0, n503 = 0;

    start_proxies(0, NULL);
    cr_assert_eq(put(0, 70, "warm", NULL), 200);
    cr_assert_eq(owner_of(0, NULL, 0, &mine), 1);
    cr_assert(mine, "P1 does not own the resource");
    snprintf(key, sizeof key, "%sown/%s", PREFIX, RES);
    b64(key, strlen(key), kb);
    snprintf(body, sizeof body, "{\"key\":\"%s\"}", kb);
    cr_assert_eq(ts_etcd_post(&E, 0, "/v3/kv/deleterange", body, out, sizeof out), 200, "%s", out);
    CHECK(put_retry(1, 71, "B", 15000, &n503) == 200, "P2 did not take the resource");
    CHECK(owner_of(1, NULL, 0, &mine) == 1 && mine, "P2 does not own the resource");
    memset(&r, 0, sizeof r);
    CHECK(put(0, 72, "Z", &r) == 503, "Z's advance on the deposed P1 got %d", r.status);
    CHECK(strstr(r.body ? r.body : "", "ownership lapsed") != NULL, "Z got %s", r.body);
    ts_resp_free(&r);
    {
        const char *const need[] = {"ownership_lapsed", "\"token\":72", NULL};
        CHECK(file_has(px[0].audit, need), "P1's audit log has no ownership_lapsed for 72");
    }
    CHECK(first_with_token(72, 0) < 0, "Z reached the upstream");
    /* P1 writes again once P2 has handed the resource back. */
    CHECK(put_retry(0, 73, "C", 15000, NULL) == 200, "P1 did not write again");
    check_history("deposed owner");
    reached_end = 1;
}

/* ---- 6. etcd fully down ----------------------------------------------------- */

Test(etcdpx, etcd_down_gives_503_and_nothing_forwarded)
{
    struct ts_resp r;
    size_t before, arrivals;
    long long t_kill;

    use_own_cluster();
    start_proxies(0, NULL);
    cr_assert_eq(put(0, 10, "x", NULL), 200);
    before = ts_upstream_count(up);
    arrivals = ts_upstream_arrivals(up);
    t_kill = ts_now_ms();
    for (int m = 0; m < E.n; m++)
        cr_assert_eq(ts_etcd_kill(&E, m, SIGKILL), 0);
    /* A new token needs etcd, on the owner as on the others. */
    for (int i = 0; i < NPX; i++) {
        memset(&r, 0, sizeof r);
        CHECK(put(i, 11 + (unsigned)i, "y", &r) == 503, "proxy %d answered %d", i, r.status);
        ts_resp_free(&r);
    }
    /* Past its deadline the owner forwards nothing, not even the token it
     * has durable in its cache (self-fencing: its lease may be gone). */
    if (ts_now_ms() - t_kill < TTL_MS)
        ts_sleep_ms((int)(TTL_MS - (ts_now_ms() - t_kill)));
    for (int i = 0; i < NPX; i++) {
        memset(&r, 0, sizeof r);
        CHECK(put(i, 10, "z", &r) == 503, "proxy %d answered %d for token 10", i, r.status);
        ts_resp_free(&r);
    }
    CHECK(ts_upstream_count(up) == before && ts_upstream_arrivals(up) == arrivals,
          "something was forwarded without etcd");
    memset(&r, 0, sizeof r);
    CHECK(ts_http_get(px[0].admin_port, "/healthz", &r) == 503, "healthz %d", r.status);
    CHECK(strstr(r.body ? r.body : "", "unreachable") != NULL, "healthz says %s", r.body);
    ts_resp_free(&r);
    {
        const char *const logged[] = {"token store unreachable", NULL};
        CHECK(file_has(px[0].proc.log, logged), "the proxy did not log it");
    }
    /* etcd back: every proxy passes again. */
    for (int m = 0; m < E.n; m++)
        cr_assert_eq(ts_etcd_restart(&E, m), 0, "member %d did not restart", m);
    for (int i = 0; i < NPX; i++) {
        int n503 = 0, st = put_retry(i, 20 + (unsigned)i, "back", 20000, &n503);
        CHECK(st == 200, "proxy %d answered %d after etcd came back (%d 503s)", i, st, n503);
    }
    check_history("etcd down");
    reached_end = 1;
}

/* ---- 7. hand-over latency -------------------------------------------------- */

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

static long long pct(const long long *v, int n, int p)
{
    int k = (n * p + 99) / 100 - 1;
    return v[k < 0 ? 0 : k >= n ? n - 1 : k];
}

Test(etcdpx, handover_latency)
{
    enum { N = 50, NOWN = 20 };
    long long ho[N], own[NOWN];
    int bad = 0;

    start_proxies(0, NULL);
    cr_assert_eq(put(0, 7, "warm", NULL), 200);
    for (int k = 0; k < NOWN; k++) { /* the owner, no hand-over */
        long long t0 = ts_now_ms();
        bad += put(0, 7, "o", NULL) != 200;
        own[k] = ts_now_ms() - t0;
    }
    for (int k = 0; k < N; k++) { /* P2, P1, P2, ...: the other one owns it, idle */
        long long t0 = ts_now_ms();
        bad += put(k % 2 == 0 ? 1 : 0, 7, "h", NULL) != 200;
        ho[k] = ts_now_ms() - t0;
    }
    qsort(ho, N, sizeof ho[0], cmp_ll);
    qsort(own, NOWN, sizeof own[0], cmp_ll);
    fprintf(stderr,
            "[etcdpx] hand-over latency over %d writes alternating between 2 proxies: p50 %lld "
            "ms, p99 %lld ms, max %lld ms (write on the owner: p50 %lld ms, p99 %lld ms; "
            "handover_poll 50 ms)\n",
            N, pct(ho, N, 50), pct(ho, N, 99), ho[N - 1], pct(own, NOWN, 50), pct(own, NOWN, 99));
    CHECK(bad == 0, "%d writes did not get 200", bad);
    CHECK(pct(ho, N, 99) < HANDOVER_MS, "p99 %lld ms is not below handover_wait", pct(ho, N, 99));
    CHECK(check_history("hand-over latency") >= N - 1, "fewer hand-overs than alternations");
    reached_end = 1;
}

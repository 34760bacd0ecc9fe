/* libfencelock against a real redis-server started per test: URL parsing,
 * mutual exclusion and token order under contention, compare-and-act on
 * renew/release, watchdog renewal and loss, waiting with backoff, and an
 * unreachable backend. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fencelock.h"
#include "lock_fixture.h"

static struct lf F;

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    cr_assert_eq(lf_setup(&F, "locklib", NULL), 0, "redis fixture failed");
}

static void teardown(void)
{
    lf_teardown(&F);
}

static struct fl_client *client(void)
{
    char err[256];
    struct fl_client *c = fl_client_new(F.url, err, sizeof err);

    cr_assert_not_null(c, "fl_client_new(%s): %s", F.url, err);
    return c;
}

/* ---- URLs (no server needed) ---- */

struct ucase {
    const char *url;
    int ok;
    const char *address;
};

static const struct ucase urls[] = {
    {"redis://127.0.0.1:6379", 1, "127.0.0.1:6379"},
    {"redis://localhost", 1, "localhost:6379"},
    {"redis://:secret@10.0.0.1:7000/3", 1, "10.0.0.1:7000"},
    {"redis://user:secret@h:1/", 1, "h:1"},
    {"redis://h:65535/0", 1, "h:65535"},
    {"redis://", 0, NULL},
    {"redis://:6379", 0, NULL},
    {"redis://h:0", 0, NULL},
    {"redis://h:65536", 0, NULL},
    {"redis://h:12x", 0, NULL},
    {"redis://h:1/abc", 0, NULL},
    {"redis://nocolon@h:1", 0, NULL},
    {"redis://:@h:1", 0, NULL},
    {"http://h:1", 0, NULL},
    {"etcd://h:2379", 1, "h:2379"},
    {"etcd://h:1,g:2", 1, "h:1,g:2"},
    {"etcd://", 0, NULL},
    {"etcd://h", 0, NULL},
    {"etcd://h:1/x", 0, NULL},
    {"zk://h:2181", 1, "h:2181"},
    {"zk://h:1,g:2,k:3/app/locks", 1, "h:1,g:2,k:3/app/locks"},
    {"zk://", 0, NULL},
    {"zk://h", 0, NULL},
    {"zk://h:0", 0, NULL},
    {"zk://h:1,", 0, NULL},
    {"zk://h:1/", 0, NULL},
    {"zk://h:1/a/", 0, NULL},
    {"redlock://h:1", 0, NULL},
    {"127.0.0.1:6379", 0, NULL},
    {"", 0, NULL},
};

Test(lockurl, table)
{
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        char err[256] = "";
        struct fl_client *c = fl_client_new(urls[i].url, err, sizeof err);

        cr_expect_eq(c != NULL, urls[i].ok, "'%s': got %s (%s)", urls[i].url,
                     c ? "accepted" : "refused", err);
        if (c && urls[i].address)
            cr_expect_str_eq(fl_client_address(c), urls[i].address);
        if (!urls[i].ok)
            cr_expect_neq(err[0], '\0', "'%s': refused without a message", urls[i].url);
        fl_client_free(&c);
        cr_expect_null(c);
    }
}

TestSuite(locklib, .init = setup, .fini = teardown, .timeout = 60);

Test(locklib, acquire_status_release_and_token_order)
{
    struct fl_client *c = client();
    struct fl_lease *a = NULL, *b = NULL;
    struct fl_lock_status st;

    cr_assert_eq(fl_status(c, "/objects/x", &st), FL_OK, "%s", fl_client_error(c));
    cr_expect_eq(st.held, 0);
    cr_expect_eq(st.token, 0);

    cr_assert_eq(fl_acquire(c, "/objects/x", 5000, 0, &a), FL_OK, "%s", fl_client_error(c));
    cr_expect_gt(a->token, 0);
    cr_expect_eq(strlen(a->owner), FL_OWNER_HEX_LEN);
    cr_expect_eq(strspn(a->owner, "0123456789abcdef"), FL_OWNER_HEX_LEN);
    cr_expect_gt(a->expiry_ms, fl_now_ms() + 4000);

    cr_assert_eq(fl_status(c, "/objects/x", &st), FL_OK);
    cr_expect_eq(st.held, 1);
    cr_expect_str_eq(st.owner, a->owner);
    cr_expect(st.ttl_ms > 4000 && st.ttl_ms <= 5000, "ttl %" PRId64, st.ttl_ms);
    cr_expect_eq(st.token, a->token);

    /* Held: a second acquire with no wait is refused and issues no token. */
    cr_expect_eq(fl_acquire(c, "/objects/x", 5000, 0, &b), FL_ERR_NOT_ACQUIRED);
    cr_expect_null(b);
    cr_assert_eq(fl_status(c, "/objects/x", &st), FL_OK);
    cr_expect_eq(st.token, a->token, "a refused attempt issued %" PRIu64, st.token);

    cr_assert_eq(fl_release(c, a), FL_OK, "%s", fl_client_error(c));
    cr_expect_eq(fl_release(c, a), FL_ERR_NOT_OWNER, "released twice");
    cr_assert_eq(fl_acquire(c, "/objects/x", 5000, 0, &b), FL_OK);
    cr_expect_gt(b->token, a->token, "token after a refused attempt: %" PRIu64, b->token);
    cr_expect_str_neq(a->owner, b->owner);
    cr_assert_eq(fl_release(c, b), FL_OK);
    cr_assert_eq(fl_status(c, "/objects/x", &st), FL_OK);
    cr_expect_eq(st.held, 0);
    cr_expect_eq(st.token, b->token);
    fl_lease_free(&a);
    fl_lease_free(&b);
    cr_expect_null(a);
    fl_client_free(&c);
}

Test(locklib, keys_carry_the_hash_tag)
{
    struct fl_client *c = client();
    struct fl_lease *l = NULL;
    char buf[128];
    char *get_lock[] = {"EXISTS", "fence:{res/1}:lock", NULL};
    char want[64];
    char *get_tok[] = {"EVAL", "return tonumber(redis.call('GET', KEYS[1]))", "1",
                       "fence:{res/1}:token", NULL};

    cr_assert_eq(fl_acquire(c, "res/1", 5000, 0, &l), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(lf_redis_cmd(&F, get_lock, buf, sizeof buf), 0);
    cr_expect_str_eq(buf, ":1");
    cr_assert_eq(lf_redis_cmd(&F, get_tok, buf, sizeof buf), 0);
    snprintf(want, sizeof want, ":%" PRIu64, l->token);
    cr_expect_str_eq(buf, want);
    fl_release(c, l);
    fl_lease_free(&l);
    fl_client_free(&c);
}

Test(locklib, expired_holder_cannot_renew_or_release_new_holders_lock)
{
    struct fl_client *c = client();
    struct fl_lease *old = NULL, *cur = NULL;
    struct fl_lock_status st;

    cr_assert_eq(fl_acquire(c, "L", 200, 0, &old), FL_OK, "%s", fl_client_error(c));
    ts_sleep_ms(350);
    cr_assert_eq(fl_acquire(c, "L", 5000, 0, &cur), FL_OK, "%s", fl_client_error(c));
    cr_expect_gt(cur->token, old->token);

    cr_expect_eq(fl_release(c, old), FL_ERR_NOT_OWNER);
    cr_expect_eq(fl_renew(c, old, 60000), FL_ERR_NOT_OWNER);
    cr_expect_eq(fl_release_owner(c, "L", old->owner), FL_ERR_NOT_OWNER);

    cr_assert_eq(fl_status(c, "L", &st), FL_OK);
    cr_expect_eq(st.held, 1);
    cr_expect_str_eq(st.owner, cur->owner, "new holder's lock was touched");
    cr_expect(st.ttl_ms > 4000 && st.ttl_ms <= 5000, "ttl changed to %" PRId64, st.ttl_ms);
    cr_expect_eq(st.token, cur->token);

    /* The new holder can still renew and release. */
    cr_expect_eq(fl_renew(c, cur, 0), FL_OK);
    cr_expect_eq(fl_release(c, cur), FL_OK);
    fl_lease_free(&old);
    fl_lease_free(&cur);
    fl_client_free(&c);
}

Test(locklib, renew_extends_only_for_owner)
{
    struct fl_client *c = client();
    struct fl_lease *l = NULL;
    struct fl_lock_status st;
    int64_t before;

    cr_assert_eq(fl_acquire(c, "R", 300, 0, &l), FL_OK);
    before = l->expiry_ms;
    ts_sleep_ms(100);
    cr_assert_eq(fl_renew(c, l, 2000), FL_OK, "%s", fl_client_error(c));
    cr_expect_gt(l->expiry_ms, before);
    cr_expect_eq(l->ttl_ms, 2000);
    ts_sleep_ms(400); /* past the first TTL */
    cr_assert_eq(fl_status(c, "R", &st), FL_OK);
    cr_expect_eq(st.held, 1);
    cr_expect_eq(fl_renew_owner(c, "R", "someone-else", 2000), FL_ERR_NOT_OWNER);
    cr_expect_eq(fl_release(c, l), FL_OK);
    fl_lease_free(&l);
    fl_client_free(&c);
}

struct lost_rec {
    atomic_int calls;
    atomic_int why;
};

static void on_lost(const char *name, enum fl_loss why, void *arg)
{
    struct lost_rec *r = arg;

    (void)name;
    atomic_store(&r->why, (int)why);
    atomic_fetch_add(&r->calls, 1);
}

Test(locklib, watchdog_keeps_lock_past_ttl)
{
    struct fl_client *c = client(), *other = client();
    struct fl_lease *l = NULL, *o = NULL;
    struct fl_watchdog *w;
    struct lost_rec rec;
    struct fl_lock_status st;

    atomic_init(&rec.calls, 0);
    atomic_init(&rec.why, 0);
    /* 600 ms: a renewal every 200 ms survives a stall of 400 ms, which a
     * loaded 2-core machine running the ASan tree next to this one shows
     * (a 300 ms TTL failed 1 of 2 full runs there). */
    cr_assert_eq(fl_acquire(c, "W", 600, 0, &l), FL_OK);
    w = fl_watchdog_start(c, l, on_lost, &rec);
    cr_assert_not_null(w);
    ts_sleep_ms(3000); /* five TTLs */
    cr_expect_eq(fl_watchdog_lost(w), 0);
    cr_expect_eq(atomic_load(&rec.calls), 0);
    cr_assert_eq(fl_status(other, "W", &st), FL_OK);
    lf_assert(&F, st.held == 1 && strcmp(st.owner, l->owner) == 0,
              "lock not held by the renewed owner after 5 TTLs");
    cr_expect_eq(fl_acquire(other, "W", 600, 0, &o), FL_ERR_NOT_ACQUIRED);
    fl_watchdog_stop(&w, l);
    cr_expect_null(w);
    cr_expect_gt(l->expiry_ms, fl_now_ms());
    cr_expect_eq(fl_release(c, l), FL_OK);
    fl_lease_free(&l);
    fl_client_free(&c);
    fl_client_free(&other);
}

Test(locklib, watchdog_reports_loss_when_key_is_taken)
{
    struct fl_client *c = client();
    struct fl_lease *l = NULL;
    struct fl_watchdog *w;
    struct lost_rec rec;
    char buf[64];
    char *del[] = {"DEL", "fence:{T}:lock", NULL};
    int64_t t0;

    atomic_init(&rec.calls, 0);
    atomic_init(&rec.why, 0);
    cr_assert_eq(fl_acquire(c, "T", 600, 0, &l), FL_OK);
    w = fl_watchdog_start(c, l, on_lost, &rec);
    cr_assert_not_null(w);
    cr_assert_eq(lf_redis_cmd(&F, del, buf, sizeof buf), 0);
    cr_expect_str_eq(buf, ":1");
    t0 = fl_now_ms();
    while (atomic_load(&rec.calls) == 0 && fl_now_ms() - t0 < 2000)
        ts_sleep_ms(5);
    cr_expect_eq(atomic_load(&rec.calls), 1, "loss not reported");
    cr_expect_eq(atomic_load(&rec.why), FL_LOST_NOT_OWNER);
    /* Reported at the next renewal (ttl/3), well before the TTL ran out. */
    cr_expect_lt(fl_now_ms() - t0, 500);
    cr_expect_eq(fl_watchdog_lost(w), FL_LOST_NOT_OWNER);
    ts_sleep_ms(300);
    cr_expect_eq(atomic_load(&rec.calls), 1, "callback called more than once");
    fl_watchdog_stop(&w, l);
    fl_lease_free(&l);
    fl_client_free(&c);
}

Test(locklib, watchdog_reports_expiry_when_backend_is_gone)
{
    struct fl_client *c = client();
    struct fl_lease *l = NULL;
    struct fl_watchdog *w;
    struct lost_rec rec;
    int64_t t0;

    atomic_init(&rec.calls, 0);
    atomic_init(&rec.why, 0);
    cr_assert_eq(fl_acquire(c, "E", 500, 0, &l), FL_OK);
    w = fl_watchdog_start(c, l, on_lost, &rec);
    cr_assert_not_null(w);
    ts_proc_stop(&F.redis, SIGKILL, 2000);
    t0 = fl_now_ms();
    while (atomic_load(&rec.calls) == 0 && fl_now_ms() - t0 < 3000)
        ts_sleep_ms(5);
    cr_expect_eq(atomic_load(&rec.calls), 1, "loss not reported");
    cr_expect_eq(atomic_load(&rec.why), FL_LOST_EXPIRED);
    /* Not before the lease ran out, and soon after. */
    cr_expect_geq(fl_now_ms(), l->expiry_ms);
    cr_expect_lt(fl_now_ms() - l->expiry_ms, 400);
    fl_watchdog_stop(&w, NULL);
    fl_lease_free(&l);
    fl_client_free(&c);
}

Test(locklib, wait_retries_until_holder_expires)
{
    struct fl_client *c = client();
    struct fl_lease *a = NULL, *b = NULL;
    int64_t t0;

    cr_assert_eq(fl_acquire(c, "B", 400, 0, &a), FL_OK);
    t0 = fl_now_ms();
    cr_expect_eq(fl_acquire(c, "B", 1000, 150, &b), FL_ERR_NOT_ACQUIRED);
    cr_expect_geq(fl_now_ms() - t0, 150);
    cr_expect_lt(fl_now_ms() - t0, 300, "wait overran");
    cr_assert_eq(fl_acquire(c, "B", 1000, 3000, &b), FL_OK, "%s", fl_client_error(c));
    cr_expect_geq(fl_now_ms() - t0, 350, "acquired while the first lease was live");
    cr_expect_lt(fl_now_ms() - t0, 1500, "backoff too slow");
    cr_expect_gt(b->token, a->token);
    fl_release(c, b);
    fl_lease_free(&a);
    fl_lease_free(&b);
    fl_client_free(&c);
}

Test(locklib, mutual_exclusion_under_contention)
{
    lf_exclusion(F.url, F.dir, "/objects/shared", 6, 40, 10000, 20000, 1, 60000);
}

Test(locklib, unreachable_backend_is_reported_with_address)
{
    char url[64];
    int port = ts_free_port();
    struct fl_client *c;
    struct fl_lease *l = NULL;
    struct fl_lock_status st;
    char addr[32];

    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    c = fl_client_new(url, NULL, 0);
    cr_assert_not_null(c);
    cr_expect_eq(fl_acquire(c, "x", 1000, 5000, &l), FL_ERR_BACKEND);
    cr_expect_null(l);
    cr_expect(strstr(fl_client_error(c), addr) != NULL, "message '%s' lacks %s", fl_client_error(c),
              addr);
    cr_expect_eq(fl_status(c, "x", &st), FL_ERR_BACKEND);
    cr_expect_eq(fl_release_owner(c, "x", "o"), FL_ERR_BACKEND);
    fl_client_free(&c);
}

Test(locklib, reconnects_after_server_restart)
{
    struct fl_client *c = client();
    struct fl_lock_status st;

    cr_assert_eq(fl_status(c, "z", &st), FL_OK);
    ts_proc_stop(&F.redis, SIGTERM, 5000);
    cr_expect_eq(fl_status(c, "z", &st), FL_ERR_BACKEND);
    cr_assert_eq(lf_restart_redis(&F, NULL), 0);
    /* A dropped context is reopened by the next call; NOSCRIPT is handled
     * since the new server has an empty script cache. */
    cr_expect_eq(fl_status(c, "z", &st), FL_OK, "%s", fl_client_error(c));
    fl_client_free(&c);
}

Test(locklib, invalid_arguments)
{
    struct fl_client *c = client();
    struct fl_lease *l = NULL;
    char big[FL_NAME_MAX + 2];

    memset(big, 'n', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    cr_expect_eq(fl_acquire(c, "", 1000, 0, &l), FL_ERR_INVALID);
    cr_expect_eq(fl_acquire(c, big, 1000, 0, &l), FL_ERR_INVALID);
    cr_expect_eq(fl_acquire(c, "x", 0, 0, &l), FL_ERR_INVALID);
    cr_expect_eq(fl_renew_owner(c, "x", "", 1000), FL_ERR_INVALID);
    cr_expect_null(l);
    fl_client_free(&c);
}

Test(locklib, verify_names_only_the_current_holders_token)
{
    struct fl_client *c = client();
    struct fl_lease *a = NULL, *b = NULL;
    int cur = -1;

    cr_assert_eq(fl_verify(c, "V", 1, &cur), FL_OK, "%s", fl_client_error(c));
    cr_expect_eq(cur, 0, "a never-taken lock has no holder");
    cr_assert_eq(fl_acquire(c, "V", 5000, 0, &a), FL_OK);
    cr_assert_eq(fl_verify(c, "V", a->token, &cur), FL_OK);
    cr_expect_eq(cur, 1, "holder's token");
    cr_assert_eq(fl_verify(c, "V", a->token + 1, &cur), FL_OK);
    cr_expect_eq(cur, 0, "unknown token");
    cr_assert_eq(fl_release(c, a), FL_OK);
    cr_assert_eq(fl_verify(c, "V", a->token, &cur), FL_OK);
    cr_expect_eq(cur, 0, "released token");
    cr_assert_eq(fl_acquire(c, "V", 5000, 0, &b), FL_OK);
    cr_assert_eq(fl_verify(c, "V", a->token, &cur), FL_OK);
    cr_expect_eq(cur, 0, "the previous holder's token");
    cr_assert_eq(fl_verify(c, "V", b->token, &cur), FL_OK);
    cr_expect_eq(cur, 1);
    cr_assert_eq(fl_verify(c, "other", b->token, &cur), FL_OK);
    cr_expect_eq(cur, 0, "another name");
    fl_release(c, b);
    fl_lease_free(&a);
    fl_lease_free(&b);
    fl_client_free(&c);
}

struct waiter_arg {
    const char *url;
    int64_t got_ms; /* CLOCK_MONOTONIC when the lock was acquired */
    int rc;
};

static void *waiter_main(void *arg)
{
    struct waiter_arg *w = arg;
    struct fl_client *c = fl_client_new(w->url, NULL, 0);
    struct fl_lease *l = NULL;

    w->rc = c ? fl_acquire(c, "H", 10000, 5000, &l) : FL_ERR_INTERNAL;
    w->got_ms = fl_now_ms();
    if (w->rc == FL_OK)
        fl_release(c, l);
    fl_lease_free(&l);
    fl_client_free(&c);
    return NULL;
}

/* A waiter blocked behind a 10 s lease gets the lock about one round trip
 * after the release, not after a backoff (which had grown to ~1 s after a
 * 700 ms wait) and not at the holder's expiry. */
Test(locklib, waiter_is_woken_by_release)
{
    struct fl_client *c = client();
    int64_t worst = 0;

    for (int round = 0; round < 3; round++) {
        struct fl_lease *l = NULL;
        struct waiter_arg w = {.url = F.url, .rc = -100};
        pthread_t t;
        int64_t released;

        cr_assert_eq(fl_acquire(c, "H", 10000, 2000, &l), FL_OK, "%s", fl_client_error(c));
        cr_assert_eq(pthread_create(&t, NULL, waiter_main, &w), 0);
        ts_sleep_ms(700);
        released = fl_now_ms();
        cr_assert_eq(fl_release(c, l), FL_OK);
        pthread_join(t, NULL);
        cr_assert_eq(w.rc, FL_OK, "waiter: %s", fl_strerror(w.rc));
        if (w.got_ms - released > worst)
            worst = w.got_ms - released;
        fl_lease_free(&l);
    }
    cr_expect_lt(worst, 100, "hand-over took %" PRId64 " ms", worst);
    fl_client_free(&c);
}

static struct lf P;

static void setup_pw(void)
{
    char *extra[] = {"--requirepass", "s3cret", NULL};

    signal(SIGPIPE, SIG_IGN);
    cr_assert_eq(lf_setup(&P, "lockpw", extra), 0);
}

static void teardown_pw(void)
{
    lf_teardown(&P);
}

Test(lockauth, password_and_database_from_url, .init = setup_pw, .fini = teardown_pw, .timeout = 30)
{
    char good[96], bad[96], buf[64];
    struct fl_client *c, *d;
    struct fl_lease *l = NULL, *m = NULL;
    char *auth[] = {"AUTH", "s3cret", NULL};

    snprintf(good, sizeof good, "redis://:s3cret@127.0.0.1:%d/5", P.port);
    snprintf(bad, sizeof bad, "redis://:wrong@127.0.0.1:%d", P.port);
    c = fl_client_new(good, NULL, 0);
    d = fl_client_new(bad, NULL, 0);
    cr_assert(c && d);
    cr_expect_eq(fl_acquire(c, "p", 5000, 0, &l), FL_OK, "%s", fl_client_error(c));
    cr_expect_eq(fl_acquire(d, "p", 5000, 0, &m), FL_ERR_BACKEND);
    cr_expect(strstr(fl_client_error(d), "AUTH") != NULL, "%s", fl_client_error(d));
    cr_assert_eq(lf_redis_cmd(&P, auth, buf, sizeof buf), 0);
    cr_expect_str_eq(buf, "+OK");
    fl_lease_free(&l);
    fl_client_free(&c);
    fl_client_free(&d);
}

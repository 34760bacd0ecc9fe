/* libfencelock and the fencelock CLI on the etcd backend, against a real
 * etcd: a single member for the lock recipe, a 3-member cluster for the
 * faults. Proves mutual exclusion with tokens rising in order of entry, FIFO
 * hand-over, a try-lock that leaves no waiter key, loss after SIGSTOP past
 * the lease (exit 75), the etcd 3.4 expired-waiter case refused, verify, a
 * killed leader that keeps lock and token, and all members down (exit 69). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fencelock.h"
#include "lock_fixture.h"
#include "ts_etcd.h"

static struct ts_etcd E;
static struct lf F; /* only its dir, for lf_cli's output files */

static void start(int members)
{
    signal(SIGPIPE, SIG_IGN);
    memset(&F, 0, sizeof F);
    F.dir = ts_tempdir("locketcd");
    cr_assert_not_null(F.dir);
    cr_assert_eq(ts_etcd_start(&E, F.dir, members), 0, "etcd fixture failed");
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
    if (F.dir)
        ts_rmrf(F.dir);
    free(F.dir);
    F.dir = NULL;
}

TestSuite(locketcd, .init = setup1, .fini = teardown, .timeout = 60);

static struct fl_client *client(void)
{
    char err[256];
    struct fl_client *c = fl_client_new(E.url, err, sizeof err);

    cr_assert_not_null(c, "fl_client_new(%s): %s", E.url, err);
    return c;
}

static char OUT[4096], ERR[4096];

#define CLI(...)                                                                                   \
    lf_cli(&F, (char *[]){"--backend", E.url, __VA_ARGS__, NULL}, NULL, OUT, sizeof OUT, ERR,      \
           sizeof ERR, 20000)

Test(locketcd, mutual_exclusion_tokens_rise_in_order_of_entry)
{
    lf_exclusion(E.url, F.dir, "/objects/shared", 5, 8, 5000, 30000, 2, 45000);
}

Test(locketcd, fifo_hand_over_and_status_lists_waiters_in_order)
{
    lf_fifo_handover(&F, E.url);
}

/* Keys under the lock prefix, counted by a raw range through the gateway. */
static int keys_under(const char *prefix_b64, const char *end_b64)
{
    char body[256], out[4096];
    const char *p;

    snprintf(body, sizeof body, "{\"key\":\"%s\",\"range_end\":\"%s\",\"count_only\":true}",
             prefix_b64, end_b64);
    cr_assert_eq(ts_etcd_post(&E, 0, "/v3/kv/range", body, out, sizeof out), 200, "%s", out);
    p = strstr(out, "\"count\":\"");
    return p ? atoi(p + 9) : 0;
}

Test(locketcd, try_lock_with_timeout_leaves_no_waiter_key)
{
    struct fl_client *c = client(), *d = client();
    struct fl_lease *h = NULL, *x = NULL;
    struct fl_lock_status st;
    int64_t t0;

    cr_assert_eq(fl_acquire(c, "T", 10000, 0, &h), FL_OK, "%s", fl_client_error(c));
    /* "fence/lock/" .. "fence/lock0": every lock key. */
    cr_assert_eq(keys_under("ZmVuY2UvbG9jay8=", "ZmVuY2UvbG9jazA="), 1);
    cr_expect_eq(fl_acquire(d, "T", 10000, 0, &x), FL_ERR_NOT_ACQUIRED);
    t0 = fl_now_ms();
    cr_expect_eq(fl_acquire(d, "T", 10000, 300, &x), FL_ERR_NOT_ACQUIRED);
    cr_expect_geq(fl_now_ms() - t0, 300);
    cr_expect_lt(fl_now_ms() - t0, 1500, "wait overran");
    cr_assert_eq(fl_status(c, "T", &st), FL_OK);
    cr_expect_eq(st.waiters, 0);
    cr_expect_eq(keys_under("ZmVuY2UvbG9jay8=", "ZmVuY2UvbG9jazA="), 1, "waiter key left behind");
    cr_assert_eq(fl_release(c, h), FL_OK);
    cr_expect_eq(keys_under("ZmVuY2UvbG9jay8=", "ZmVuY2UvbG9jazA="), 0);
    cr_assert_eq(fl_acquire(d, "T", 10000, 0, &x), FL_OK);
    cr_expect_gt(x->token, h->token);
    fl_release(d, x);
    fl_lease_free(&h);
    fl_lease_free(&x);
    fl_client_free(&c);
    fl_client_free(&d);
}

struct bg_acquire {
    const char *url;
    const char *name;
    int rc;
    uint64_t token;
    struct fl_client *c;
    struct fl_lease *l;
};

static void *bg_acquire_main(void *arg)
{
    struct bg_acquire *a = arg;

    a->c = fl_client_new(a->url, NULL, 0);
    a->rc = a->c ? fl_acquire(a->c, a->name, 5000, 15000, &a->l) : FL_ERR_INTERNAL;
    if (a->rc == FL_OK)
        a->token = a->l->token;
    return NULL;
}

Test(locketcd, verify_holder_waiter_released_and_unknown)
{
    struct fl_client *c = client();
    struct fl_lease *h = NULL;
    struct bg_acquire w = {.url = E.url, .name = "V", .rc = -100};
    struct fl_lock_status st;
    pthread_t t;
    uint64_t wt;
    int cur = -1;

    cr_assert_eq(fl_acquire(c, "V", 10000, 0, &h), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(pthread_create(&t, NULL, bg_acquire_main, &w), 0);
    lf_wait_waiters(c, "V", 1);
    cr_assert_eq(fl_status(c, "V", &st), FL_OK);
    wt = st.waiter[0].token;
    cr_assert_eq(fl_verify(c, "V", h->token, &cur), FL_OK, "%s", fl_client_error(c));
    cr_expect_eq(cur, 1, "holder");
    cr_assert_eq(fl_verify(c, "V", wt, &cur), FL_OK);
    cr_expect_eq(cur, 0, "a waiter's token is not the holder's");
    cr_assert_eq(fl_verify(c, "V", wt + 1000, &cur), FL_OK);
    cr_expect_eq(cur, 0, "unknown token");
    cr_assert_eq(fl_verify(c, "nobody", h->token, &cur), FL_OK);
    cr_expect_eq(cur, 0, "unknown name");
    cr_assert_eq(fl_release(c, h), FL_OK);
    pthread_join(t, NULL);
    cr_assert_eq(w.rc, FL_OK);
    cr_expect_eq(w.token, wt, "the waiter holds the token it queued with");
    cr_assert_eq(fl_verify(c, "V", h->token, &cur), FL_OK);
    cr_expect_eq(cur, 0, "released");
    cr_assert_eq(fl_verify(c, "V", wt, &cur), FL_OK);
    cr_expect_eq(cur, 1, "the new holder");
    fl_release(w.c, w.l);
    fl_lease_free(&w.l);
    fl_client_free(&w.c);
    fl_lease_free(&h);
    fl_client_free(&c);
}

static void start_cli(struct ts_proc *p, const char *tag, char *const args[])
{
    char log[1100];
    char *argv[32];
    int n = 0;

    argv[n++] = (char *)ts_build_path("lockclient/fencelock");
    cr_assert_not_null(argv[0]);
    argv[n++] = "--backend";
    argv[n++] = E.url;
    for (int i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    snprintf(log, sizeof log, "%s/%s.log", F.dir, tag);
    cr_assert_eq(ts_proc_start(p, tag, argv, NULL, log), 0);
}

static char *wait_file(const char *path, struct ts_proc *p)
{
    int64_t t0 = fl_now_ms();
    char *text = NULL;

    while (fl_now_ms() - t0 < 8000) {
        text = ts_read_file(path, NULL);
        if (text && strchr(text, '\n'))
            return text;
        free(text);
        text = NULL;
        ts_sleep_ms(10);
    }
    ts_proc_dump_log(p);
    cr_assert_fail("%s not written", path);
    return NULL;
}

/* etcd 3.4 (etcd-io/etcd#11456): a waiter whose lease expired while it
 * waited must not be told it holds the lock once the keys before it are
 * gone. The waiter is stopped past its 1 s lease; meanwhile the holder
 * releases and X takes the lock (its key is after the waiter's old one). */
Test(locketcd, expired_waiter_is_refused)
{
    struct fl_client *c = client(), *x = client();
    struct fl_lease *h = NULL, *xl = NULL;
    struct fl_lock_status st;
    struct ts_proc w;
    int status = 0;
    char *log;

    cr_assert_eq(fl_acquire(c, "X", 10000, 0, &h), FL_OK, "%s", fl_client_error(c));
    start_cli(&w, "waiter", (char *[]){"acquire", "X", "--ttl", "1s", "--wait", "8s", NULL});
    lf_wait_waiters(c, "X", 1);
    cr_assert_eq(ts_proc_signal(&w, SIGSTOP), 0);
    ts_sleep_ms(2500); /* the waiter's lease (1 s) expires, its key goes */
    cr_assert_eq(fl_status(c, "X", &st), FL_OK);
    cr_expect_eq(st.waiters, 0, "the stopped waiter's key outlived its lease");
    cr_assert_eq(fl_release(c, h), FL_OK);
    cr_assert_eq(fl_acquire(x, "X", 10000, 0, &xl), FL_OK, "%s", fl_client_error(x));
    cr_assert_eq(ts_proc_signal(&w, SIGCONT), 0);
    if (ts_proc_wait(&w, 12000, &status) < 0) {
        ts_proc_stop(&w, SIGKILL, 1000);
        cr_assert_fail("waiter did not finish");
    }
    log = ts_read_file(w.log, NULL);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 1, "waiter status %d: %s", status,
              log ? log : "");
    cr_expect(log && strstr(log, "token=") == NULL, "waiter claimed the lock: %s", log);
    free(log);
    cr_assert_eq(fl_status(c, "X", &st), FL_OK);
    cr_expect_eq(st.held, 1);
    cr_expect_str_eq(st.owner, xl->owner, "X lost the lock to the expired waiter");
    fl_release(x, xl);
    fl_lease_free(&h);
    fl_lease_free(&xl);
    fl_client_free(&c);
    fl_client_free(&x);
}

Test(locketcd, holder_stopped_past_lease_is_stopped_with_exit_75)
{
    struct fl_client *c = client();
    struct fl_lock_status st;
    struct ts_proc run;
    char script[2600], pidfile[1100], *text;
    pid_t child;
    int64_t t0;
    int status = 0;

    snprintf(pidfile, sizeof pidfile, "%s/child.pid", F.dir);
    snprintf(script, sizeof script, "echo $$ > %s; exec sleep 30", pidfile);
    start_cli(&run, "run",
              (char *[]){"run", "/objects/stopped", "--ttl", "1s", "--", "/bin/sh", "-c", script,
                         NULL});
    text = wait_file(pidfile, &run);
    child = (pid_t)atol(text);
    free(text);
    cr_assert_eq(fl_status(c, "/objects/stopped", &st), FL_OK);
    cr_expect_eq(st.held, 1);
    cr_assert_eq(ts_proc_signal(&run, SIGSTOP), 0);
    ts_sleep_ms(2600);
    cr_assert_eq(fl_status(c, "/objects/stopped", &st), FL_OK);
    cr_expect_eq(st.held, 0, "lease outlived its TTL while the holder was stopped");
    t0 = fl_now_ms();
    cr_assert_eq(ts_proc_signal(&run, SIGCONT), 0);
    if (ts_proc_wait(&run, 4000, &status) < 0) {
        ts_proc_dump_log(&run);
        ts_proc_stop(&run, SIGKILL, 1000);
        cr_assert_fail("fencelock kept running after SIGCONT past its lease");
    }
    cr_expect_lt(fl_now_ms() - t0, 1000);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 75, "status %d", status);
    cr_expect(kill(child, 0) < 0 && errno == ESRCH, "command still alive");
    fl_client_free(&c);
}

TestSuite(locketcd3, .init = setup3, .fini = teardown, .timeout = 60);

Test(locketcd3, killed_leader_keeps_lock_and_token)
{
    struct fl_client *c = client();
    struct fl_lock_status st;
    struct ts_proc run;
    char script[2600], tokfile[1100], done[1100], *text;
    uint64_t token;
    int leader, status = 0;

    snprintf(tokfile, sizeof tokfile, "%s/token", F.dir);
    snprintf(done, sizeof done, "%s/done", F.dir);
    snprintf(script, sizeof script, "echo $FENCE_TOKEN > %s; sleep 4; echo ok > %s", tokfile,
             done);
    start_cli(&run, "run",
              (char *[]){"run", "/objects/l", "--ttl", "3s", "--", "/bin/sh", "-c", script, NULL});
    text = wait_file(tokfile, &run);
    token = strtoull(text, NULL, 10);
    free(text);
    cr_assert_eq(fl_status(c, "/objects/l", &st), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(st.token, token);
    leader = ts_etcd_leader(&E);
    cr_assert_geq(leader, 0, "no leader");
    cr_assert_eq(ts_etcd_kill(&E, leader, SIGKILL), 0);
    ts_sleep_ms(1500); /* a new leader is elected in about one election timeout */
    cr_assert_eq(fl_status(c, "/objects/l", &st), FL_OK, "%s", fl_client_error(c));
    cr_expect_eq(st.held, 1);
    cr_expect_eq(st.token, token, "token changed across the leader's death");
    if (ts_proc_wait(&run, 10000, &status) < 0) {
        ts_proc_stop(&run, SIGKILL, 1000);
        cr_assert_fail("run did not finish");
    }
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        ts_proc_dump_log(&run);
        cr_assert_fail("run status %d, want 0 (the lock was kept)", status);
    }
    cr_expect_eq(access(done, F_OK), 0);
    fl_client_free(&c);
}

Test(locketcd3, all_members_down_exits_69_naming_them)
{
    char addr[3][32];
    int rc;

    for (int i = 0; i < 3; i++) {
        snprintf(addr[i], sizeof addr[i], "127.0.0.1:%d", E.client_port[i]);
        cr_assert_eq(ts_etcd_kill(&E, i, SIGKILL), 0);
    }
    rc = CLI("acquire", "x", "--wait", "1s");
    cr_expect_eq(rc, 69, "exit %d: %s", rc, ERR);
    for (int i = 0; i < 3; i++)
        cr_expect(strstr(ERR, addr[i]) != NULL, "message lacks %s: %s", addr[i], ERR);
    rc = CLI("status", "x");
    cr_expect_eq(rc, 69);
}

/* libfencelock and the fencelock CLI on the ZooKeeper backend, against a
 * real standalone ZooKeeper (Debian's zookeeper, started once for this
 * binary: a JVM takes seconds to start). Proves mutual exclusion with czxid
 * tokens rising in order of entry, FIFO hand-over with waiters listed in
 * order, a try-lock and a timed-out wait that leave no node, verify, the CLI's
 * lines and exit codes, a lock left to the session timeout by `fencelock
 * acquire`, loss after SIGSTOP past the session timeout (exit 75), and a
 * create whose connection is cut after the server got it (a fault-injecting
 * relay in this process) that finds its own node again instead of leaving an
 * orphan that blocks the queue. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fencelock.h"
#include "lock_fixture.h"
#include "ts_zk.h"

/* One server for the whole binary, started by the runner before any test
 * and stopped after the last; tests use their own lock names. */
static struct ts_zk Z;
static char *zdir;
static char ZURL[300];
static struct lf F; /* only its dir, for lf_cli's output files */

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    zdir = ts_tempdir("lockzk");
    if (zdir == NULL || ts_zk_start(&Z, zdir, 1) < 0) {
        fprintf(stderr, "test_lock_zk: ZooKeeper did not start\n");
        return;
    }
    setenv("FENCE_TEST_ZK_URL", Z.url, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    ts_zk_stop(&Z);
    if (zdir)
        ts_rmrf(zdir);
    free(zdir);
}

static void setup(void)
{
    const char *u = getenv("FENCE_TEST_ZK_URL");

    signal(SIGPIPE, SIG_IGN);
    cr_assert_not_null(u, "no ZooKeeper server (see the runner's output above)");
    snprintf(ZURL, sizeof ZURL, "%s", u);
    memset(&F, 0, sizeof F);
    F.dir = ts_tempdir("lockzkt");
    cr_assert_not_null(F.dir);
}

static void teardown(void)
{
    if (F.dir)
        ts_rmrf(F.dir);
    free(F.dir);
    F.dir = NULL;
}

TestSuite(lockzk, .init = setup, .fini = teardown, .timeout = 60);

static struct fl_client *client(void)
{
    char err[256];
    struct fl_client *c = fl_client_new(ZURL, err, sizeof err);

    cr_assert_not_null(c, "fl_client_new(%s): %s", ZURL, err);
    return c;
}

static char OUT[4096], ERR[4096];

#define CLI(...)                                                                                   \
    lf_cli(&F, (char *[]){"--backend", ZURL, __VA_ARGS__, NULL}, NULL, OUT, sizeof OUT, ERR,       \
           sizeof ERR, 20000)

Test(lockzk, mutual_exclusion_tokens_rise_in_order_of_entry)
{
    lf_exclusion(ZURL, F.dir, "/objects/shared", 5, 8, 5000, 30000, 2, 45000);
}

Test(lockzk, fifo_hand_over_and_status_lists_waiters_in_order)
{
    lf_fifo_handover(&F, ZURL);
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

Test(lockzk, verify_holder_waiter_released_and_unknown)
{
    struct fl_client *c = client();
    struct fl_lease *h = NULL;
    struct bg_acquire w = {.url = ZURL, .name = "V", .rc = -100};
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
    argv[n++] = ZURL;
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

Test(lockzk, holder_stopped_past_session_timeout_is_stopped_with_exit_75)
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
    start_cli(
        &run, "run",
        (char *[]){"run", "/objects/stopped", "--ttl", "1s", "--", "/bin/sh", "-c", script, NULL});
    text = wait_file(pidfile, &run);
    child = (pid_t)atol(text);
    free(text);
    cr_assert_eq(fl_status(c, "/objects/stopped", &st), FL_OK);
    cr_expect_eq(st.held, 1);
    cr_assert_eq(ts_proc_signal(&run, SIGSTOP), 0);
    ts_sleep_ms(2600);
    cr_assert_eq(fl_status(c, "/objects/stopped", &st), FL_OK);
    cr_expect_eq(st.held, 0, "the session outlived its timeout while the holder was stopped");
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

Test(lockzk, try_lock_and_timed_out_wait_leave_no_node)
{
    struct fl_client *c = client();
    struct fl_lease *h = NULL, *x = NULL;
    struct fl_lock_status st;
    int64_t t0;

    cr_assert_eq(fl_acquire(c, "T", 10000, 0, &h), FL_OK, "%s", fl_client_error(c));
    cr_expect_eq(fl_acquire(c, "T", 10000, 0, &x), FL_ERR_NOT_ACQUIRED);
    t0 = fl_now_ms();
    cr_expect_eq(fl_acquire(c, "T", 10000, 300, &x), FL_ERR_NOT_ACQUIRED);
    cr_expect_geq(fl_now_ms() - t0, 300);
    cr_expect_eq(CLI("acquire", "T", "--wait", "200ms"), 1, "%s", ERR);
    cr_assert_eq(fl_status(c, "T", &st), FL_OK);
    cr_expect_eq(st.held, 1);
    cr_expect_str_eq(st.owner, h->owner);
    cr_expect_eq(st.waiters, 0, "a withdrawn waiter left its node");
    cr_assert_eq(fl_release(c, h), FL_OK);
    cr_assert_eq(fl_status(c, "T", &st), FL_OK);
    cr_expect_eq(st.held, 0);
    fl_lease_free(&h);
    fl_client_free(&c);
}

/* The owner id is the node's name; the token its czxid. `fencelock acquire`
 * ends its process with the lock held: the session (and so the lock) lasts
 * until the session timeout, or until `release --owner` deletes the node. */
Test(lockzk, cli_lines_exit_codes_and_a_lock_left_to_the_session_timeout)
{
    char owner[FL_OWNER_MAX + 1], line[300];
    unsigned long long token, t2;
    int rc;

    rc = CLI("acquire", "/objects/user42", "--ttl", "5s", "--wait", "0");
    cr_assert_eq(rc, 0, "acquire exit %d: %s", rc, ERR);
    cr_assert_eq(sscanf(OUT, "token=%llu owner=%128s", &token, owner), 2, "'%s'", OUT);
    cr_expect_gt(token, 0);
    cr_expect_eq(strncmp(owner, "lock-", 5), 0, "owner '%s'", owner);
    cr_expect_eq(CLI("status", "/objects/user42"), 0);
    snprintf(line, sizeof line, "held owner=%s ttl_ms=-1 token=%llu\n", owner, token);
    cr_expect_str_eq(OUT, line);
    cr_expect_eq(CLI("acquire", "/objects/user42", "--wait", "0"), 1);
    cr_expect_eq(CLI("release", "/objects/user42", "--owner", "lock-0-0000000001"), 1);
    cr_expect(strstr(ERR, "does not hold") != NULL, "'%s'", ERR);
    cr_expect_eq(CLI("release", "/objects/user42", "--owner", owner), 0, "%s", ERR);
    cr_expect_eq(CLI("status", "/objects/user42"), 0);
    cr_expect_str_eq(OUT, "free token=0\n");
    cr_expect_eq(CLI("release", "/objects/user42", "--owner", owner), 1, "released twice");

    /* Left to the session: held after the process ended, free after ttl. */
    rc = CLI("acquire", "/objects/user42", "--ttl", "1s");
    cr_assert_eq(rc, 0, "%s", ERR);
    cr_assert_eq(sscanf(OUT, "token=%llu", &t2), 1);
    cr_expect_gt(t2, token);
    cr_expect_eq(CLI("status", "/objects/user42"), 0);
    cr_expect(strncmp(OUT, "held ", 5) == 0, "'%s'", OUT);
    ts_sleep_ms(2500);
    cr_expect_eq(CLI("status", "/objects/user42"), 0);
    cr_expect_str_eq(OUT, "free token=0\n", "the session outlived its timeout");

    rc =
        CLI("run", "/objects/user42", "--", "/bin/sh", "-c", "test \"$FENCE_TOKEN\" -gt 0; exit 3");
    cr_expect_eq(rc, 3, "run exit %d: %s", rc, ERR);
    cr_expect_eq(CLI("status", "/objects/user42"), 0);
    cr_expect_str_eq(OUT, "free token=0\n", "run did not release");
}

Test(lockzk, unreachable_server_exits_69_naming_it)
{
    char url[64], *args[] = {"--backend", url, "acquire", "x", "--wait", "0", NULL};
    int port = ts_free_port(), rc;

    snprintf(url, sizeof url, "zk://127.0.0.1:%d", port);
    rc = lf_cli(&F, args, NULL, OUT, sizeof OUT, ERR, sizeof ERR, 20000);
    cr_expect_eq(rc, 69, "exit %d: %s", rc, ERR);
    cr_expect(strstr(ERR, url + 5) != NULL, "message lacks the address: %s", ERR);
}

/* ---- a fault-injecting TCP relay between the client and ZooKeeper ----
 * One connection at a time (a ZooKeeper client has one). Client-to-server
 * bytes are parsed as ZooKeeper frames (4-byte length, then for every frame
 * after the connect request an xid and an op type). While armed, the first
 * create (op 1) or create2 (op 15) of a lock-* node is forwarded, the server's answer is
 * swallowed for 300 ms (the node exists on the server by then) and both
 * sockets are closed: the client sees a connection loss in the middle of
 * its create. Later connections are relayed untouched. */
struct relay {
    int lfd, port, upstream;
    atomic_int stop, armed, creates, cuts;
    pthread_t thread;
};

static int relay_pump(struct relay *r, int cfd, int sfd)
{
    unsigned char in[65536];
    size_t have = 0;
    int first = 1;

    while (!atomic_load(&r->stop)) {
        struct pollfd p[2] = {{cfd, POLLIN, 0}, {sfd, POLLIN, 0}};
        ssize_t n;

        if (poll(p, 2, 100) < 0)
            return -1;
        if (p[1].revents) {
            char buf[65536];

            n = recv(sfd, buf, sizeof buf, 0);
            if (n <= 0 || ts_send_all(cfd, buf, (size_t)n) < 0)
                return 0;
        }
        if (!p[0].revents)
            continue;
        n = recv(cfd, in + have, sizeof in - have, 0);
        if (n <= 0)
            return 0;
        have += (size_t)n;
        /* Forward whole frames only, so a cut falls right after one. */
        for (;;) {
            uint32_t len;
            size_t whole;

            if (have < 4)
                break;
            len = (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 | (uint32_t)in[2] << 8 | in[3];
            whole = 4 + (size_t)len;
            if (whole > sizeof in)
                return -1;
            if (have < whole)
                break;
            if (ts_send_all(sfd, in, whole) < 0)
                return 0;
            if (!first && len >= 8) {
                int op = (int)((uint32_t)in[8] << 24 | (uint32_t)in[9] << 16 |
                               (uint32_t)in[10] << 8 | in[11]);

                uint32_t plen = len >= 12 ? (uint32_t)in[12] << 24 | (uint32_t)in[13] << 16 |
                                                (uint32_t)in[14] << 8 | in[15]
                                          : 0;

                /* A create of a queue node (not of a parent). */
                if ((op == 1 || op == 15) && plen < len - 12 &&
                    memmem(in + 16, plen, "/lock-", 6) != NULL) {
                    atomic_fetch_add(&r->creates, 1);
                    if (atomic_exchange(&r->armed, 0)) {
                        char buf[4096];
                        int64_t t0 = fl_now_ms();

                        while (fl_now_ms() - t0 < 300) {
                            struct pollfd q = {sfd, POLLIN, 0};

                            if (poll(&q, 1, 50) > 0 && recv(sfd, buf, sizeof buf, 0) <= 0)
                                break;
                        }
                        atomic_fetch_add(&r->cuts, 1);
                        return 0;
                    }
                }
            }
            first = 0;
            memmove(in, in + whole, have - whole);
            have -= whole;
        }
    }
    return 0;
}

static void *relay_main(void *arg)
{
    struct relay *r = arg;

    while (!atomic_load(&r->stop)) {
        struct pollfd p = {r->lfd, POLLIN, 0};
        int cfd, sfd;

        if (poll(&p, 1, 100) <= 0)
            continue;
        cfd = accept(r->lfd, NULL, NULL);
        if (cfd < 0)
            continue;
        sfd = ts_connect(r->upstream);
        if (sfd >= 0)
            relay_pump(r, cfd, sfd);
        close(cfd);
        if (sfd >= 0)
            close(sfd);
    }
    return NULL;
}

static void relay_start(struct relay *r, int upstream)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;

    memset(r, 0, sizeof *r);
    r->upstream = upstream;
    r->lfd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(r->lfd, 0);
    cr_assert_eq(bind(r->lfd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(r->lfd, 4), 0);
    cr_assert_eq(getsockname(r->lfd, (struct sockaddr *)&a, &alen), 0);
    r->port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&r->thread, NULL, relay_main, r), 0);
}

static void relay_stop(struct relay *r)
{
    atomic_store(&r->stop, 1);
    pthread_join(r->thread, NULL);
    close(r->lfd);
}

Test(lockzk, connection_lost_during_create_finds_its_own_node_no_orphan)
{
    struct fl_client *direct = client(), *c;
    struct fl_lease *l = NULL, *next = NULL;
    struct fl_lock_status st;
    struct relay r;
    char url[64], err[256];
    int rc;

    /* The server was started by the runner: its port comes with the URL. */
    cr_assert_not_null(strrchr(ZURL, ':'));
    relay_start(&r, atoi(strrchr(ZURL, ':') + 1));
    snprintf(url, sizeof url, "zk://127.0.0.1:%d", r.port);
    c = fl_client_new(url, err, sizeof err);
    cr_assert_not_null(c, "%s", err);
    fl_client_set_timeout(c, 5000);
    /* A first lock sets up the session and the parents through the relay. */
    cr_assert_eq(fl_acquire(c, "warm", 10000, 0, &l), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(fl_release(c, l), FL_OK);
    fl_lease_free(&l);
    atomic_store(&r.creates, 0);
    atomic_store(&r.armed, 1);
    rc = fl_acquire(c, "P", 10000, 0, &l);
    cr_assert_eq(rc, FL_OK, "acquire after the cut: %s", fl_client_error(c));
    cr_expect_eq(atomic_load(&r.cuts), 1, "the relay did not cut the create");
    cr_expect_eq(atomic_load(&r.creates), 1, "a second create: the first node is an orphan");
    cr_assert_eq(fl_status(direct, "P", &st), FL_OK, "%s", fl_client_error(direct));
    cr_expect_eq(st.held, 1);
    cr_expect_str_eq(st.owner, l->owner, "the holder is not the node the cut create made");
    cr_expect_eq(st.token, l->token);
    cr_expect_eq(st.waiters, 0, "an orphan node waits behind the holder");
    cr_assert_eq(fl_release(c, l), FL_OK, "%s", fl_client_error(c));
    /* Nothing blocks the queue: another client gets the lock at once. */
    cr_expect_eq(fl_acquire(direct, "P", 10000, 0, &next), FL_OK, "%s", fl_client_error(direct));
    fl_release(direct, next);
    fl_lease_free(&next);
    fl_lease_free(&l);
    fl_client_free(&c);
    fl_client_free(&direct);
    relay_stop(&r);
}

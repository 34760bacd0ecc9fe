/* libfencelock and the fencelock CLI on the Redlock backend, against five
 * real redis-servers per test (own temp dirs and free loopback ports,
 * stopped by PID). Proves mutual exclusion under contention with tokens
 * strictly rising, that two nodes down still leave a working majority and
 * three down exit 69 naming them, that a TTL shorter than the acquisition
 * is refused and leaves no key, that the token rises past a node whose
 * counter ran ahead (the write-back; INCR-and-max fails this), what a node
 * restarted without persistence during a hold does (two holders, the later
 * token still higher), verify and status, and loss after SIGSTOP past the
 * TTL (exit 75). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fencelock.h"
#include "lock_fixture.h"

enum { N = 5 };

static struct lf R[N];
static char URL[600];
static char OUT[4096], ERR[8192];

/* DEBUG SLEEP for the validity test (Redis 7 refuses DEBUG by default). */
static char *node_args[] = {"--enable-debug-command", "local", NULL};

static void dump_all(void)
{
    for (int i = 0; i < N; i++)
        ts_proc_dump_log(&R[i].redis);
}

#define rl_assert(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            dump_all();                                                                            \
            cr_assert_fail(__VA_ARGS__);                                                           \
        }                                                                                          \
    } while (0)

static void setup(void)
{
    size_t off = 0;

    signal(SIGPIPE, SIG_IGN);
    memset(R, 0, sizeof R);
    off = (size_t)snprintf(URL, sizeof URL, "redlock://");
    for (int i = 0; i < N; i++) {
        cr_assert_eq(lf_setup(&R[i], "redlock", node_args), 0, "redis node %d did not start", i);
        off += (size_t)snprintf(URL + off, sizeof URL - off, "%s127.0.0.1:%d", i ? "," : "",
                                R[i].port);
    }
}

static void teardown(void)
{
    for (int i = 0; i < N; i++)
        lf_teardown(&R[i]);
}

TestSuite(redlock, .init = setup, .fini = teardown, .timeout = 60);

static struct fl_client *client(void)
{
    char err[512];
    struct fl_client *c = fl_client_new(URL, err, sizeof err);

    cr_assert_not_null(c, "fl_client_new(%s): %s", URL, err);
    return c;
}

#define CLI(...)                                                                                   \
    lf_cli(&R[0], (char *[]){"--backend", URL, __VA_ARGS__, NULL}, NULL, OUT, sizeof OUT, ERR,     \
           sizeof ERR, 20000)

/* GET key on node i into buf ("$-1" when missing, else the value). */
static void node_get(int i, const char *key, char *buf, size_t len)
{
    char line[256];
    int fd;
    ssize_t got;
    char req[512];

    snprintf(req, sizeof req, "*2\r\n$3\r\nGET\r\n$%zu\r\n%s\r\n", strlen(key), key);
    fd = ts_connect(R[i].port);
    cr_assert_geq(fd, 0, "node %d unreachable", i);
    cr_assert_eq(ts_send_all(fd, req, strlen(req)), 0);
    got = recv(fd, line, sizeof line - 1, 0);
    close(fd);
    cr_assert_gt(got, 0);
    line[got] = '\0';
    if (line[0] == '$' && line[1] != '-') {
        char *v = strstr(line, "\r\n");

        cr_assert_not_null(v);
        v += 2;
        v[strcspn(v, "\r\n")] = '\0';
        snprintf(buf, len, "%.60s", v);
    } else {
        line[strcspn(line, "\r\n")] = '\0';
        snprintf(buf, len, "%.60s", line);
    }
}

/* Runs procs contenders over the five nodes and checks the journal:
 * never two holders at once, every token above the one before. */
static void contend(int procs, int rounds)
{
    lf_exclusion(URL, R[0].dir, "/objects/shared", procs, rounds, 5000, 30000, 2, 45000);
}

Test(redlock, mutual_exclusion_under_contention_tokens_strictly_rise)
{
    contend(5, 8);
}

Test(redlock, two_nodes_killed_still_a_majority)
{
    ts_proc_stop(&R[1].redis, SIGKILL, 5000);
    ts_proc_stop(&R[3].redis, SIGKILL, 5000);
    contend(3, 5);
}

Test(redlock, three_nodes_killed_acquire_exits_69_naming_them)
{
    char want[64];
    int rc;

    for (int i = 0; i < 3; i++)
        ts_proc_stop(&R[i].redis, SIGKILL, 5000);
    rc = CLI("acquire", "x", "--wait", "0");
    cr_expect_eq(rc, 69, "exit %d: %s", rc, ERR);
    for (int i = 0; i < 3; i++) {
        snprintf(want, sizeof want, "127.0.0.1:%d", R[i].port);
        cr_expect(strstr(ERR, want) != NULL, "message lacks %s: %s", want, ERR);
    }
    cr_expect_eq(CLI("status", "x"), 69, "%s", ERR);
    /* Nothing left behind on the two live nodes. */
    {
        char v[64];

        node_get(3, "fence:{x}:lock", v, sizeof v);
        cr_expect_str_eq(v, "$-1");
        node_get(4, "fence:{x}:lock", v, sizeof v);
        cr_expect_str_eq(v, "$-1");
    }
}

/* Node 0 answers after 400 ms (DEBUG SLEEP): with a TTL of 200 ms the
 * round takes longer than the TTL, so a majority of grants (nodes 1-4) is
 * still refused, and the keys it set are deleted at once, not left to
 * expire. A longer TTL then succeeds on the same slow node. */
Test(redlock, ttl_shorter_than_the_acquisition_is_refused)
{
    struct fl_client *c = client();
    struct fl_lease *l = NULL;
    char *sleep_cmd[] = {"DEBUG", "SLEEP", "0.4", NULL}, buf[64], v[64];
    pid_t kid;
    int rc, st = 0;

    /* DEBUG SLEEP blocks the caller too: send it from a child. */
    kid = fork();
    cr_assert_geq(kid, 0);
    if (kid == 0)
        _exit(lf_redis_cmd(&R[0], sleep_cmd, buf, sizeof buf) == 0 ? 0 : 1);
    ts_sleep_ms(50);
    rc = fl_acquire(c, "short", 200, 0, &l);
    cr_expect_eq(rc, FL_ERR_NOT_ACQUIRED, "acquire: %s", fl_strerror(rc));
    cr_expect(strstr(fl_client_error(c), "leaving no validity") != NULL, "%s", fl_client_error(c));
    for (int i = 1; i < N; i++) {
        node_get(i, "fence:{short}:lock", v, sizeof v);
        cr_expect_str_eq(v, "$-1", "node %d kept the refused round's key", i);
    }
    waitpid(kid, &st, 0);
    /* A TTL within the drift allowance is refused before any I/O. */
    cr_expect_eq(fl_acquire(c, "short", 2, 0, &l), FL_ERR_INVALID);
    cr_expect_eq(CLI("acquire", "short", "--ttl", "2ms", "--wait", "0"), 2, "%s", ERR);
    rc = fl_acquire(c, "short", 5000, 2000, &l);
    cr_expect_eq(rc, FL_OK, "%s", fl_client_error(c));
    fl_release(c, l);
    fl_lease_free(&l);
    fl_client_free(&c);
}

/* The per-node counters disagree: node 4's is far ahead (its clock ran
 * ahead, or it issued many tokens while the others were down). A takes the
 * lock on all five and gets node 4's value; then node 4 is down and B takes
 * the lock on 0-3. "INCR everywhere and take the max" would give B a token
 * below A's; the write-back gave nodes 0-3 A's token, so B's is above it. */
Test(redlock, token_rises_past_a_node_whose_counter_ran_ahead)
{
    struct fl_client *c = client();
    struct fl_lease *a = NULL, *b = NULL;
    struct timeval tv;
    char ahead[32], buf[64];
    uint64_t far;

    gettimeofday(&tv, NULL);
    far = ((uint64_t)tv.tv_sec + 100000) * 1000000;
    snprintf(ahead, sizeof ahead, "%" PRIu64, far);
    cr_assert_eq(
        lf_redis_cmd(&R[4], (char *[]){"SET", "fence:{w}:token", ahead, NULL}, buf, sizeof buf), 0);
    cr_assert_eq(fl_acquire(c, "w", 5000, 0, &a), FL_OK, "%s", fl_client_error(c));
    cr_expect_eq(a->token, far + 1, "A's token is the maximum over its majority");
    cr_assert_eq(fl_release(c, a), FL_OK, "%s", fl_client_error(c));
    ts_proc_stop(&R[4].redis, SIGKILL, 5000);
    cr_assert_eq(fl_acquire(c, "w", 5000, 0, &b), FL_OK, "%s", fl_client_error(c));
    cr_expect_gt(b->token, a->token, "B's token %" PRIu64 " not above A's %" PRIu64, b->token,
                 a->token);
    fl_release(c, b);
    fl_lease_free(&a);
    fl_lease_free(&b);
    fl_client_free(&c);
}

/* The classic Redlock hazard: A holds 0-2 while 3 and 4 are down; node 2
 * restarts empty (no persistence) and 3, 4 come back empty; B then gets a
 * majority 2-4 while A still holds 0-1 and believes it holds the lock. Mutual
 * exclusion is gone; the tokens are not: B's nodes reseed from TIME, so B's
 * token is above A's and a fenced store refuses A once B has written. verify
 * names B as current. (This ordering rests on the clocks; see
 * docs/lockclient.md.) */
Test(redlock, node_restarted_without_persistence_gives_two_holders_later_token_higher)
{
    struct fl_client *c = client();
    struct fl_lease *a = NULL, *b = NULL;
    int cur = -1, rc;

    ts_proc_stop(&R[3].redis, SIGKILL, 5000);
    ts_proc_stop(&R[4].redis, SIGKILL, 5000);
    cr_assert_eq(fl_acquire(c, "h", 10000, 0, &a), FL_OK, "%s", fl_client_error(c));
    cr_assert_geq(ts_proc_stop(&R[2].redis, SIGKILL, 5000), 0);
    cr_assert_eq(lf_restart_redis(&R[2], node_args), 0);
    cr_assert_eq(lf_restart_redis(&R[3], node_args), 0);
    cr_assert_eq(lf_restart_redis(&R[4], node_args), 0);
    cr_assert_eq(fl_acquire(c, "h", 10000, 0, &b), FL_OK,
                 "B did not get nodes 2-4: %s (the hazard did not happen)", fl_client_error(c));
    cr_expect_gt(b->token, a->token);
    cr_assert_eq(fl_verify(c, "h", b->token, &cur), FL_OK);
    cr_expect_eq(cur, 1, "B is current");
    cr_assert_eq(fl_verify(c, "h", a->token, &cur), FL_OK);
    cr_expect_eq(cur, 0, "A holds only nodes 0-1");
    /* A's renewal now finds it holds a minority: it has lost the lock. */
    rc = fl_renew(c, a, 0);
    cr_expect_eq(rc, FL_ERR_NOT_OWNER, "renew %d: %s", rc, fl_client_error(c));
    fl_release(c, b);
    fl_lease_free(&a);
    fl_lease_free(&b);
    fl_client_free(&c);
}

Test(redlock, verify_status_and_cli_lines)
{
    struct fl_client *c = client();
    struct fl_lease *h = NULL, *x = NULL;
    struct fl_lock_status st;
    char owner[FL_OWNER_MAX + 1], line[400];
    unsigned long long token;
    int cur = -1, rc;

    cr_assert_eq(fl_acquire(c, "V", 10000, 0, &h), FL_OK, "%s", fl_client_error(c));
    cr_expect_eq(fl_acquire(c, "V", 10000, 0, &x), FL_ERR_NOT_ACQUIRED);
    cr_assert_eq(fl_status(c, "V", &st), FL_OK, "%s", fl_client_error(c));
    cr_expect_eq(st.held, 1);
    cr_expect_str_eq(st.owner, h->owner);
    cr_expect_eq(st.token, h->token);
    cr_expect(st.ttl_ms > 9000 && st.ttl_ms <= 10000, "ttl %" PRId64, st.ttl_ms);
    cr_assert_eq(fl_verify(c, "V", h->token, &cur), FL_OK);
    cr_expect_eq(cur, 1, "holder");
    cr_assert_eq(fl_verify(c, "V", h->token + 1, &cur), FL_OK);
    cr_expect_eq(cur, 0, "unknown token");
    cr_assert_eq(fl_renew(c, h, 20000), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(fl_release(c, h), FL_OK);
    cr_assert_eq(fl_verify(c, "V", h->token, &cur), FL_OK);
    cr_expect_eq(cur, 0, "released");
    cr_expect_eq(fl_release(c, h), FL_ERR_NOT_OWNER);

    rc = CLI("acquire", "/objects/user42", "--ttl", "5s", "--wait", "0");
    cr_assert_eq(rc, 0, "acquire exit %d: %s", rc, ERR);
    cr_assert_eq(sscanf(OUT, "token=%llu owner=%128s", &token, owner), 2, "'%s'", OUT);
    cr_expect_eq(CLI("status", "/objects/user42"), 0);
    cr_expect(strncmp(OUT, "held owner=", 11) == 0, "'%s'", OUT);
    snprintf(line, sizeof line, " token=%llu\n", token);
    cr_expect(strstr(OUT, line) != NULL, "'%s'", OUT);
    cr_expect_eq(CLI("acquire", "/objects/user42", "--wait", "0"), 1);
    cr_expect_eq(CLI("renew", "/objects/user42", "--owner", owner), 0, "%s", ERR);
    cr_expect_eq(CLI("release", "/objects/user42", "--owner", "nobody"), 1);
    cr_expect_eq(CLI("release", "/objects/user42", "--owner", owner), 0, "%s", ERR);
    cr_expect_eq(CLI("release", "/objects/user42", "--owner", owner), 1, "released twice");
    rc =
        CLI("run", "/objects/user42", "--", "/bin/sh", "-c", "test \"$FENCE_TOKEN\" -gt 0; exit 3");
    cr_expect_eq(rc, 3, "run exit %d: %s", rc, ERR);
    cr_expect_eq(CLI("status", "/objects/user42"), 0);
    cr_expect(strncmp(OUT, "free ", 5) == 0, "run did not release: '%s'", OUT);
    fl_lease_free(&h);
    fl_client_free(&c);
}

Test(redlock, bad_urls_are_refused)
{
    static const char *bad[] = {
        "redlock://127.0.0.1:1",                             /* one node: use redis:// */
        "redlock://127.0.0.1:1,127.0.0.1:2",                 /* even */
        "redlock://127.0.0.1:1,127.0.0.1:2,127.0.0.1:1",     /* a node twice */
        "redlock://127.0.0.1:1,,127.0.0.1:3",                /* empty entry */
        "redlock://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3/0",   /* a database */
        "redlock://127.0.0.1:1,127.0.0.1:2,127.0.0.1:99999", /* bad port */
    };
    char err[512];

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct fl_client *c = fl_client_new(bad[i], err, sizeof err);

        cr_expect_null(c, "accepted %s", bad[i]);
        fl_client_free(&c);
    }
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

Test(redlock, holder_stopped_past_ttl_exits_75_on_sigcont)
{
    struct fl_client *c = client();
    struct fl_lock_status st;
    struct fl_lease *other = NULL;
    struct ts_proc run;
    char script[2600], pidfile[1100], log[1100], *text;
    char *argv[16];
    pid_t child;
    int64_t t0;
    int status = 0, n = 0;

    snprintf(pidfile, sizeof pidfile, "%s/child.pid", R[0].dir);
    snprintf(script, sizeof script, "echo $$ > %s; exec sleep 30", pidfile);
    snprintf(log, sizeof log, "%s/run.log", R[0].dir);
    argv[n++] = (char *)ts_build_path("lockclient/fencelock");
    cr_assert_not_null(argv[0]);
    for (char *const *a = (char *[]){"--backend", URL, "run", "/objects/stopped", "--ttl", "500ms",
                                     "--", "/bin/sh", "-c", script, NULL};
         *a; a++)
        argv[n++] = *a;
    argv[n] = NULL;
    cr_assert_eq(ts_proc_start(&run, "run", argv, NULL, log), 0);
    text = wait_file(pidfile, &run);
    child = (pid_t)atol(text);
    free(text);
    cr_assert_eq(fl_status(c, "/objects/stopped", &st), FL_OK);
    cr_expect_eq(st.held, 1);
    cr_assert_eq(ts_proc_signal(&run, SIGSTOP), 0);
    ts_sleep_ms(1100);
    cr_assert_eq(fl_status(c, "/objects/stopped", &st), FL_OK);
    rl_assert(st.held == 0, "lock still held while its holder is stopped");
    cr_assert_eq(fl_acquire(c, "/objects/stopped", 10000, 0, &other), FL_OK, "%s",
                 fl_client_error(c));
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
    /* The stopped holder's exit did not delete the new holder's keys. */
    cr_assert_eq(fl_status(c, "/objects/stopped", &st), FL_OK);
    cr_expect_eq(st.held, 1);
    cr_expect_str_eq(st.owner, other->owner);
    fl_release(c, other);
    fl_lease_free(&other);
    fl_client_free(&c);
}

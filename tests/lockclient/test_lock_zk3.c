/* The ZooKeeper backend against a real 3-server ensemble on loopback: the
 * leader killed with SIGKILL while `fencelock run` holds a lock (the session
 * moves to another server, the lock and its token stay, the command
 * completes), and every server down (exit 69, each address named). */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fencelock.h"
#include "lock_fixture.h"
#include "ts_zk.h"

static struct ts_zk Z;
static struct lf F; /* only its dir, for lf_cli's output files */
static char OUT[4096], ERR[4096];

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    memset(&F, 0, sizeof F);
    F.dir = ts_tempdir("lockzk3");
    cr_assert_not_null(F.dir);
    cr_assert_eq(ts_zk_start(&Z, F.dir, 3), 0, "ZooKeeper ensemble did not start");
}

static void teardown(void)
{
    ts_zk_stop(&Z);
    if (F.dir)
        ts_rmrf(F.dir);
    free(F.dir);
    F.dir = NULL;
}

TestSuite(lockzk3, .init = setup, .fini = teardown, .timeout = 90);

static char *wait_file(const char *path, struct ts_proc *p)
{
    int64_t t0 = fl_now_ms();
    char *text = NULL;

    while (fl_now_ms() - t0 < 10000) {
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

Test(lockzk3, killed_leader_keeps_lock_and_token)
{
    struct fl_client *c = fl_client_new(Z.url, NULL, 0);
    struct fl_lock_status st;
    struct ts_proc run;
    char script[2600], tokfile[1100], done[1100], log[1100], *text;
    uint64_t token;
    int leader, status = 0, rc = -1;

    cr_assert_not_null(c);
    snprintf(tokfile, sizeof tokfile, "%s/token", F.dir);
    snprintf(done, sizeof done, "%s/done", F.dir);
    snprintf(log, sizeof log, "%s/run.log", F.dir);
    snprintf(script, sizeof script, "echo $FENCE_TOKEN > %s; sleep 6; echo ok > %s", tokfile, done);
    {
        char *argv[] = {(char *)ts_build_path("lockclient/fencelock"),
                        "--backend",
                        Z.url,
                        "run",
                        "/objects/l",
                        "--ttl",
                        "5s",
                        "--",
                        "/bin/sh",
                        "-c",
                        script,
                        NULL};

        cr_assert_not_null(argv[0]);
        cr_assert_eq(ts_proc_start(&run, "run", argv, NULL, log), 0);
    }
    text = wait_file(tokfile, &run);
    token = strtoull(text, NULL, 10);
    free(text);
    cr_assert_eq(fl_status(c, "/objects/l", &st), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(st.token, token);
    leader = ts_zk_leader(&Z);
    cr_assert_geq(leader, 0, "no leader");
    cr_assert_eq(ts_zk_kill(&Z, leader, SIGKILL), 0);
    if (ts_zk_wait_serving(&Z, 15000) < 0) {
        ts_zk_dump_logs(&Z);
        cr_assert_fail("the two survivors did not elect a leader");
    }
    for (int i = 0; i < 50 && rc != FL_OK; i++) {
        rc = fl_status(c, "/objects/l", &st);
        if (rc != FL_OK)
            ts_sleep_ms(100);
    }
    cr_assert_eq(rc, FL_OK, "%s", fl_client_error(c));
    cr_expect_eq(st.held, 1, "the lock did not survive the leader's death");
    cr_expect_eq(st.token, token, "token changed across the leader's death");
    if (ts_proc_wait(&run, 15000, &status) < 0) {
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

Test(lockzk3, all_servers_down_exits_69_naming_them)
{
    char addr[3][32], *args[] = {"--backend", Z.url, "acquire", "x", "--wait", "1s", NULL};
    int rc;

    for (int i = 0; i < 3; i++) {
        snprintf(addr[i], sizeof addr[i], "127.0.0.1:%d", Z.client_port[i]);
        cr_assert_eq(ts_zk_kill(&Z, i, SIGKILL), 0);
    }
    rc = lf_cli(&F, args, NULL, OUT, sizeof OUT, ERR, sizeof ERR, 20000);
    cr_expect_eq(rc, 69, "exit %d: %s", rc, ERR);
    for (int i = 0; i < 3; i++)
        cr_expect(strstr(ERR, addr[i]) != NULL, "message lacks %s: %s", addr[i], ERR);
}

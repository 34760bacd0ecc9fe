/* Leader election (`fencelock elect`, `fencelock leader`, fl_campaign,
 * fl_leader) against real servers: a redis-server, a one-member etcd or a
 * standalone ZooKeeper per test. Proves one leader at a time among 3 campaigners over 12
 * leaderships with epochs strictly increasing, and that a leader stopped
 * (SIGSTOP) past its TTL is replaced by a new leader with a higher epoch
 * while the old one, on SIGCONT, stops its command and exits 75 (failover
 * time printed). */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fencelock.h"
#include "lock_fixture.h"
#include "ts_etcd.h"
#include "ts_zk.h"

static struct lf F;      /* Redis tests: the server; etcd tests: only dir */
static struct ts_etcd E; /* etcd tests */
static struct ts_zk Z;   /* ZooKeeper tests */
static const char *URL;  /* the backend under test */

static void setup_redis(void)
{
    signal(SIGPIPE, SIG_IGN);
    memset(&F, 0, sizeof F);
    cr_assert_eq(lf_setup(&F, "elect", NULL), 0, "redis fixture failed");
    URL = F.url;
}

static void teardown_redis(void)
{
    lf_teardown(&F);
}

static void setup_etcd(void)
{
    signal(SIGPIPE, SIG_IGN);
    memset(&F, 0, sizeof F);
    memset(&E, 0, sizeof E);
    F.dir = ts_tempdir("electetcd");
    cr_assert_not_null(F.dir);
    cr_assert_eq(ts_etcd_start(&E, F.dir, 1), 0, "etcd fixture failed");
    URL = E.url;
}

static void teardown_etcd(void)
{
    ts_etcd_stop(&E);
    if (F.dir)
        ts_rmrf(F.dir);
    free(F.dir);
    F.dir = NULL;
}

static void setup_zk(void)
{
    signal(SIGPIPE, SIG_IGN);
    memset(&F, 0, sizeof F);
    memset(&Z, 0, sizeof Z);
    F.dir = ts_tempdir("electzk");
    cr_assert_not_null(F.dir);
    cr_assert_eq(ts_zk_start(&Z, F.dir, 1), 0, "zookeeper fixture failed");
    URL = Z.url;
}

static void teardown_zk(void)
{
    ts_zk_stop(&Z);
    if (F.dir)
        ts_rmrf(F.dir);
    free(F.dir);
    F.dir = NULL;
}

TestSuite(elect_redis, .init = setup_redis, .fini = teardown_redis, .timeout = 60);
TestSuite(elect_etcd, .init = setup_etcd, .fini = teardown_etcd, .timeout = 60);
TestSuite(elect_zk, .init = setup_zk, .fini = teardown_zk, .timeout = 90);

static const char *fencelock_bin(void)
{
    const char *bin = ts_build_path("lockclient/fencelock");

    cr_assert_not_null(bin, "FENCE_BUILD_DIR unset: cannot find fencelock");
    cr_assert_eq(access(bin, X_OK), 0, "fencelock not built at %s", bin);
    return bin;
}

/* Reads a whole small file into buf; 0 / -1 (missing). */
static int slurp(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    size_t n;

    if (f == NULL)
        return -1;
    n = fread(buf, 1, len - 1, f);
    buf[n] = '\0';
    fclose(f);
    return 0;
}

/* Waits (bounded) until path exists; the time waited in ms, or -1. */
static int64_t wait_file(const char *path, int timeout_ms)
{
    int64_t t0 = fl_now_ms();
    struct stat sb;

    while (fl_now_ms() - t0 < timeout_ms) {
        if (stat(path, &sb) == 0 && sb.st_size > 0)
            return fl_now_ms() - t0;
        usleep(20 * 1000);
    }
    return -1;
}

/* Three campaigners, each taking 4 leaderships in turn (elect exits when its
 * command ends, and a shell loop campaigns again): the command detects an
 * overlap with mkdir (atomic, fails if another leader is inside) and appends
 * "ID EPOCH" to a log, which is therefore in leadership order. */
static void one_leader_at_a_time(void)
{
    const char *bin = fencelock_bin();
    char script[2048], path[1100], log[1100], buf[8192];
    struct ts_proc p[3];
    uint64_t last = 0;
    int lines = 0;

    snprintf(script, sizeof script,
             "for i in 1 2 3 4; do \"%s\" --backend '%s' elect E --id \"$ID\" --ttl 2s "
             "--wait 30s -- sh -c 'if mkdir \"$D/in\"; then :; else echo overlap >> \"$D/bad\"; "
             "fi; echo \"$ID $FENCE_TOKEN\" >> \"$D/epochs\"; sleep 0.15; rmdir \"$D/in\"' "
             "|| exit 9; done",
             bin, URL);
    for (int i = 0; i < 3; i++) {
        char id[32], d[1100];

        snprintf(id, sizeof id, "ID=c%d", i);
        snprintf(d, sizeof d, "D=%s", F.dir);
        snprintf(log, sizeof log, "%s/camp%d.log", F.dir, i);
        cr_assert_eq(ts_proc_start(&p[i], "campaigner", (char *[]){"/bin/sh", "-c", script, NULL},
                                   (char *[]){id, d, NULL}, log),
                     0);
    }
    /* While they run, `leader` names one of them (or nobody between terms). */
    for (int k = 0; k < 10; k++) {
        char out[256], err[512];
        int rc = lf_cli(&F, (char *[]){"--backend", (char *)URL, "leader", "E", NULL}, NULL, out,
                        sizeof out, err, sizeof err, 10000);

        cr_assert(rc == 0 || rc == 1, "leader exit %d: %s", rc, err);
        if (rc == 0)
            cr_assert(strncmp(out, "leader id=c", 11) == 0 && strstr(out, " epoch="),
                      "leader printed '%s'", out);
        else
            cr_assert_str_eq(out, "none\n");
        usleep(100 * 1000);
    }
    for (int i = 0; i < 3; i++) {
        int st = 0;

        cr_assert_eq(ts_proc_wait(&p[i], 40000, &st), 0, "campaigner %d did not finish", i);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            ts_proc_dump_log(&p[i]);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "campaigner %d status %d", i, st);
    }
    snprintf(path, sizeof path, "%s/bad", F.dir);
    cr_assert_eq(access(path, F_OK), -1, "two leaders at once (%s exists)", path);
    snprintf(path, sizeof path, "%s/epochs", F.dir);
    cr_assert_eq(slurp(path, buf, sizeof buf), 0, "no epochs written");
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"), lines++) {
        char id[32];
        uint64_t e = 0;

        cr_assert_eq(sscanf(line, "%31s %" SCNu64, id, &e), 2, "bad line '%s'", line);
        cr_assert_gt(e, last, "epoch %" PRIu64 " of %s not above the previous %" PRIu64, e, id,
                     last);
        last = e;
    }
    cr_assert_eq(lines, 12, "%d leaderships, want 12", lines);
}

Test(elect_redis, one_leader_at_a_time_epochs_rise)
{
    one_leader_at_a_time();
}

Test(elect_etcd, one_leader_at_a_time_epochs_rise)
{
    one_leader_at_a_time();
}

/* Starts `elect E --id ID --ttl 1s -- sh -c 'echo $FENCE_TOKEN > DIR/ID.tok;
 * exec sleep 30'`. */
static void start_leader(struct ts_proc *p, const char *id)
{
    char cmd[1200], log[1100];

    snprintf(cmd, sizeof cmd, "echo $FENCE_TOKEN > '%s/%s.tok'; exec sleep 30", F.dir, id);
    snprintf(log, sizeof log, "%s/%s.log", F.dir, id);
    cr_assert_eq(
        ts_proc_start(p, id,
                      (char *[]){(char *)fencelock_bin(), "--backend", (char *)URL, "elect", "E",
                                 "--id", (char *)id, "--ttl", "1s", "--", "sh", "-c", cmd, NULL},
                      NULL, log),
        0);
}

static uint64_t token_of(const char *id)
{
    char path[1100], buf[64];

    snprintf(path, sizeof path, "%s/%s.tok", F.dir, id);
    cr_assert_eq(slurp(path, buf, sizeof buf), 0, "%s has no token file", id);
    return strtoull(buf, NULL, 10);
}

/* The leader is stopped past its TTL: the waiting campaigner takes over with
 * a higher epoch; `leader` names it; the old leader, continued, stops its
 * command and exits 75 without touching the new leadership. */
static void paused_leader_is_replaced(const char *backend)
{
    struct ts_proc a, b;
    char path[1100], out[256], err[512];
    int64_t t_stop, waited;
    uint64_t ea, eb;
    int st = 0, rc;

    start_leader(&a, "a");
    snprintf(path, sizeof path, "%s/a.tok", F.dir);
    cr_assert_neq(wait_file(path, 10000), -1, "a never led");
    ea = token_of("a");
    start_leader(&b, "b");
    usleep(300 * 1000);
    snprintf(path, sizeof path, "%s/b.tok", F.dir);
    cr_assert_eq(access(path, F_OK), -1, "b leads while a does");
    cr_assert_eq(ts_proc_signal(&a, SIGSTOP), 0);
    t_stop = fl_now_ms();
    waited = wait_file(path, 15000);
    cr_assert_neq(waited, -1, "no new leader after the leader was stopped");
    eb = token_of("b");
    cr_assert_gt(eb, ea, "new epoch %" PRIu64 " not above the old %" PRIu64, eb, ea);
    fprintf(stderr, "elect %s: failover after SIGSTOP of the leader (TTL 1 s): %" PRId64 " ms\n",
            backend, fl_now_ms() - t_stop);
    rc = lf_cli(&F, (char *[]){"--backend", (char *)URL, "leader", "E", NULL}, NULL, out,
                sizeof out, err, sizeof err, 10000);
    cr_assert_eq(rc, 0, "leader: %s", err);
    {
        char want[128];

        snprintf(want, sizeof want, "leader id=b epoch=%" PRIu64 "\n", eb);
        cr_assert_str_eq(out, want);
    }
    cr_assert_eq(ts_proc_signal(&a, SIGCONT), 0);
    cr_assert_eq(ts_proc_wait(&a, 10000, &st), 0, "old leader did not exit after SIGCONT");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 75)
        ts_proc_dump_log(&a);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 75, "old leader status %d, want exit 75", st);
    /* b still leads, with its epoch. */
    rc = lf_cli(&F, (char *[]){"--backend", (char *)URL, "leader", "E", NULL}, NULL, out,
                sizeof out, err, sizeof err, 10000);
    cr_assert_eq(rc, 0, "leader: %s", err);
    cr_assert(strncmp(out, "leader id=b ", 12) == 0, "after a's exit: %s", out);
    ts_proc_stop(&b, SIGTERM, 10000);
}

Test(elect_redis, paused_leader_replaced_with_higher_epoch_old_exits_75)
{
    paused_leader_is_replaced("redis");
}

Test(elect_etcd, paused_leader_replaced_with_higher_epoch_old_exits_75)
{
    paused_leader_is_replaced("etcd");
}

/* Starts `elect E --id ID --ttl 1s --again` whose command appends each
 * term's epoch to DIR/ID.tok and its pid to DIR/ID.pid. */
static void start_again(struct ts_proc *p, const char *id)
{
    char cmd[1400], log[1100];

    snprintf(cmd, sizeof cmd,
             "echo $$ >> '%s/%s.pid'; echo $FENCE_TOKEN >> '%s/%s.tok'; exec sleep 30", F.dir, id,
             F.dir, id);
    snprintf(log, sizeof log, "%s/%s.log", F.dir, id);
    cr_assert_eq(ts_proc_start(p, id,
                               (char *[]){(char *)fencelock_bin(), "--backend", (char *)URL,
                                          "elect", "E", "--id", (char *)id, "--ttl", "1s",
                                          "--again", "--", "sh", "-c", cmd, NULL},
                               NULL, log),
                 0);
}

/* The epochs in DIR/ID.tok, in order; their count. */
static int epochs_of(const char *id, uint64_t *e, int max)
{
    char path[1100], buf[1024];
    int n = 0;

    snprintf(path, sizeof path, "%s/%s.tok", F.dir, id);
    if (slurp(path, buf, sizeof buf) < 0)
        return 0;
    for (char *l = strtok(buf, "\n"); l && n < max; l = strtok(NULL, "\n"))
        e[n++] = strtoull(l, NULL, 10);
    return n;
}

/* Kills the command processes listed in DIR/ID.pid (they run in their own
 * process groups, so stopping fencelock's group does not reach them). */
static void kill_cmds(const char *id)
{
    char path[1100], buf[1024];

    snprintf(path, sizeof path, "%s/%s.pid", F.dir, id);
    if (slurp(path, buf, sizeof buf) < 0)
        return;
    for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n"))
        if (atoi(l) > 1)
            kill(-atoi(l), SIGKILL);
}

/* --again: a leader deposed by a pause campaigns again instead of exiting;
 * when the new leader is SIGKILLed it leads again within the TTL, with an
 * epoch above the killed leader's. */
static void again_after_pause_and_a_killed_leader(const char *backend)
{
    struct ts_proc a, b;
    char path[1100];
    uint64_t ea[4], eb[4];
    int64_t t_kill, waited = -1;
    int na;

    start_again(&a, "a");
    snprintf(path, sizeof path, "%s/a.tok", F.dir);
    cr_assert_neq(wait_file(path, 10000), -1, "a never led");
    start_again(&b, "b");
    usleep(300 * 1000);
    cr_assert_eq(ts_proc_signal(&a, SIGSTOP), 0);
    snprintf(path, sizeof path, "%s/b.tok", F.dir);
    cr_assert_neq(wait_file(path, 15000), -1, "no new leader after a was stopped");
    cr_assert_eq(ts_proc_signal(&a, SIGCONT), 0);
    usleep(1000 * 1000);
    if (!ts_proc_alive(&a))
        ts_proc_dump_log(&a);
    cr_assert(ts_proc_alive(&a), "a exited instead of campaigning again");
    cr_assert_eq(epochs_of("a", ea, 4), 1, "a led again while b leads");
    cr_assert_eq(epochs_of("b", eb, 4), 1);
    cr_assert_eq(ts_proc_stop(&b, SIGKILL, 5000) >= 0, 1);
    kill_cmds("b");
    t_kill = fl_now_ms();
    while (fl_now_ms() - t_kill < 10000) {
        if (epochs_of("a", ea, 4) == 2) {
            waited = fl_now_ms() - t_kill;
            break;
        }
        usleep(20 * 1000);
    }
    cr_assert_neq(waited, -1, "a did not lead again after b was killed");
    na = epochs_of("a", ea, 4);
    cr_assert_eq(na, 2);
    cr_assert_gt(ea[1], eb[0], "a's new epoch not above b's");
    cr_assert_gt(eb[0], ea[0]);
    fprintf(stderr, "elect %s: failover after SIGKILL of the leader (TTL 1 s): %" PRId64 " ms\n",
            backend, waited);
    ts_proc_stop(&a, SIGTERM, 10000);
    kill_cmds("a");
}

Test(elect_redis, again_campaigns_after_a_pause_and_leads_after_a_killed_leader)
{
    again_after_pause_and_a_killed_leader("redis");
}

Test(elect_etcd, again_campaigns_after_a_pause_and_leads_after_a_killed_leader)
{
    again_after_pause_and_a_killed_leader("etcd");
}

Test(elect_zk, again_campaigns_after_a_pause_and_leads_after_a_killed_leader)
{
    again_after_pause_and_a_killed_leader("zookeeper");
}

/* The library: fl_campaign refuses a bad id, a plain lock holder is no
 * leader, and fl_leader names the campaigner with its lease's token. */
static void library_api(void)
{
    char err[256], id[FL_ID_MAX + 1];
    struct fl_client *c = fl_client_new(URL, err, sizeof err);
    struct fl_lease *l = NULL;
    uint64_t epoch = 1;

    cr_assert_not_null(c, "%s", err);
    cr_assert_eq(fl_campaign(c, "L", "bad.id", 5000, 0, &l), FL_ERR_INVALID);
    cr_assert_eq(fl_campaign(c, "L", "", 5000, 0, &l), FL_ERR_INVALID);
    cr_assert_eq(fl_leader(c, "L", id, &epoch), FL_OK, "%s", fl_client_error(c));
    cr_assert_str_eq(id, "");
    cr_assert_eq(epoch, 0);
    cr_assert_eq(fl_acquire(c, "L", 5000, 0, &l), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(fl_leader(c, "L", id, &epoch), FL_OK);
    cr_assert_str_eq(id, "", "a plain lock holder was named leader '%s'", id);
    cr_assert_eq(fl_release(c, l), FL_OK);
    fl_lease_free(&l);
    cr_assert_eq(fl_campaign(c, "L", "node-1@x:7", 5000, 0, &l), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(fl_leader(c, "L", id, &epoch), FL_OK);
    cr_assert_str_eq(id, "node-1@x:7");
    cr_assert_eq(epoch, l->token);
    cr_assert_eq(fl_release(c, l), FL_OK);
    fl_lease_free(&l);
    cr_assert_eq(fl_leader(c, "L", id, &epoch), FL_OK);
    cr_assert_str_eq(id, "");
    fl_client_free(&c);
}

Test(elect_redis, library_campaign_and_leader)
{
    library_api();
}

Test(elect_etcd, library_campaign_and_leader)
{
    library_api();
}

Test(elect_zk, paused_leader_replaced_with_higher_epoch_old_exits_75)
{
    paused_leader_is_replaced("zookeeper");
}

Test(elect_zk, library_campaign_and_leader)
{
    library_api();
}

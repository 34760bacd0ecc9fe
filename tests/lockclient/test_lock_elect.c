/* Leader election (`fencelock elect`, `fencelock leader`, fl_campaign,
 * fl_leader) against a real redis-server, a real one-member etcd and a real
 * standalone ZooKeeper, each started once for this binary, every test run
 * on all three. Proves: one leader at a time among 3 campaigners over 12
 * leaderships with epochs strictly increasing; a leader stopped (SIGSTOP)
 * past its TTL is replaced by a new leader with a higher epoch while the
 * old one, on SIGCONT, stops its command and exits 75; over 8 rounds in
 * which the leader is SIGKILLed or SIGSTOPped past its TTL in turn, exactly
 * one new leader per round with a higher epoch, never two leaders' commands
 * running at once (a stopped one does not run; resumed, it stops its
 * command within a bounded time and campaigns again), `leader` naming each
 * leader with its epoch, and the failover times printed per round; the
 * library's campaign and leader calls. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fencelock.h"
#include "lock_fixture.h"

LF_BACKENDS_START()
LF_BACKENDS_STOP()

static struct lf F;         /* only its dir: this test's files */
static const char *URL;     /* the backend under test */
static const char *BK;      /* its name, for messages */
static struct ts_proc A, B; /* the paused-leader test's processes */

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    memset(&F, 0, sizeof F);
    F.dir = ts_tempdir("elect");
    cr_assert_not_null(F.dir);
}

static void stop_all(void);

static void teardown(void)
{
    stop_all(); /* also after a failed assertion: --again campaigns forever */
    if (F.dir)
        ts_rmrf(F.dir);
    free(F.dir);
    F.dir = NULL;
}

TestSuite(elect_redis, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(elect_etcd, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(elect_zk, .init = setup, .fini = teardown, .timeout = 60);

static void use(enum lf_kind k)
{
    URL = lf_backend_url(k);
    BK = lf_backend_name(k);
}

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

/* `fencelock leader NAME`: its exit code, the line in out. */
static int leader_cli(const char *name, char *out, size_t outlen)
{
    char err[512];
    int rc = lf_cli(&F, (char *[]){"--backend", (char *)URL, "leader", (char *)name, NULL}, NULL,
                    out, outlen, err, sizeof err, 10000);

    cr_assert(rc == 0 || rc == 1, "leader exit %d: %s", rc, err);
    return rc;
}

/* Three campaigners, each taking 4 leaderships in turn (elect exits when its
 * command ends, and a shell loop campaigns again): the command detects an
 * overlap with mkdir (atomic, fails if another leader is inside) and appends
 * "ID EPOCH" to a log, which is therefore in leadership order. */
static void one_leader_at_a_time(enum lf_kind k)
{
    char script[2048], path[1100], log[1100], buf[8192];
    struct ts_proc p[3];
    uint64_t last = 0;
    int lines = 0;

    use(k);
    snprintf(script, sizeof script,
             "for i in 1 2 3 4; do \"%s\" --backend '%s' elect el1 --id \"$ID\" --ttl 2s "
             "--wait 30s -- sh -c 'if mkdir \"$D/in\"; then :; else echo overlap >> \"$D/bad\"; "
             "fi; echo \"$ID $FENCE_TOKEN\" >> \"$D/epochs\"; sleep 0.15; rmdir \"$D/in\"' "
             "|| exit 9; done",
             fencelock_bin(), URL);
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
    for (int j = 0; j < 10; j++) {
        char out[256];

        if (leader_cli("el1", out, sizeof out) == 0)
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

LF_TEST_EACH(elect, one_leader_at_a_time_epochs_rise, one_leader_at_a_time)

/* Starts `elect NAME --id ID --ttl 1s -- sh -c 'echo $FENCE_TOKEN >
 * DIR/ID.tok; exec sleep 30'`. */
static void start_leader(struct ts_proc *p, const char *name, const char *id)
{
    char cmd[1200], log[1100];

    snprintf(cmd, sizeof cmd, "echo $FENCE_TOKEN > '%s/%s.tok'; exec sleep 30", F.dir, id);
    snprintf(log, sizeof log, "%s/%s.log", F.dir, id);
    cr_assert_eq(ts_proc_start(p, id,
                               (char *[]){(char *)fencelock_bin(), "--backend", (char *)URL,
                                          "elect", (char *)name, "--id", (char *)id, "--ttl", "1s",
                                          "--", "sh", "-c", cmd, NULL},
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
static void paused_leader_is_replaced(enum lf_kind k)
{
    struct ts_proc *a = &A, *b = &B;
    char path[1100], out[256];
    int64_t t_stop, waited;
    uint64_t ea, eb;
    int st = 0;

    use(k);
    start_leader(a, "el2", "a");
    snprintf(path, sizeof path, "%s/a.tok", F.dir);
    cr_assert_neq(wait_file(path, 10000), -1, "a never led");
    ea = token_of("a");
    start_leader(b, "el2", "b");
    usleep(300 * 1000);
    snprintf(path, sizeof path, "%s/b.tok", F.dir);
    cr_assert_eq(access(path, F_OK), -1, "b leads while a does");
    cr_assert_eq(ts_proc_signal(a, SIGSTOP), 0);
    t_stop = fl_now_ms();
    waited = wait_file(path, 15000);
    cr_assert_neq(waited, -1, "no new leader after the leader was stopped");
    eb = token_of("b");
    cr_assert_gt(eb, ea, "new epoch %" PRIu64 " not above the old %" PRIu64, eb, ea);
    fprintf(stderr, "elect %s: failover after SIGSTOP of the leader (TTL 1 s): %" PRId64 " ms\n",
            BK, fl_now_ms() - t_stop);
    cr_assert_eq(leader_cli("el2", out, sizeof out), 0);
    {
        char want[128];

        snprintf(want, sizeof want, "leader id=b epoch=%" PRIu64 "\n", eb);
        cr_assert_str_eq(out, want);
    }
    cr_assert_eq(ts_proc_signal(a, SIGCONT), 0);
    cr_assert_eq(ts_proc_wait(a, 10000, &st), 0, "old leader did not exit after SIGCONT");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 75)
        ts_proc_dump_log(a);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 75, "old leader status %d, want exit 75", st);
    /* b still leads, with its epoch. */
    cr_assert_eq(leader_cli("el2", out, sizeof out), 0);
    cr_assert(strncmp(out, "leader id=b ", 12) == 0, "after a's exit: %s", out);
    ts_proc_stop(b, SIGTERM, 10000);
}

LF_TEST_EACH(elect, paused_leader_replaced_with_higher_epoch_old_exits_75,
             paused_leader_is_replaced)

/* ---- rounds of kills and pauses ---- */

#define CANDS  3
#define ROUNDS 8
#define TERMS  (ROUNDS + 2)

/* One leadership as its command recorded it: "EPOCH PID" in DIR/cI.terms. */
struct term {
    int cand;
    uint64_t epoch;
    pid_t pid;   /* the command's; its own process group */
    int resumed; /* its candidate was stopped and continued */
    int64_t resumed_ms;
};

struct rounds {
    struct ts_proc cand[CANDS];
    struct term term[TERMS];
    int nterms;
    uint64_t leader_epoch; /* the highest epoch `leader` reported */
};

static struct rounds R; /* the rounds test's processes */

/* Stops every process a test started (candidates by their groups, the
 * commands by theirs). */
static void stop_all(void)
{
    for (int i = 0; i < CANDS; i++)
        ts_proc_stop(&R.cand[i], SIGKILL, 5000);
    for (int t = 0; t < R.nterms; t++)
        kill(-R.term[t].pid, SIGKILL);
    ts_proc_stop(&A, SIGKILL, 5000);
    ts_proc_stop(&B, SIGKILL, 5000);
}

/* Starts candidate i: `elect elR --id cI --ttl 1s --again` whose command
 * appends "$FENCE_TOKEN $$" to DIR/cI.terms and sleeps. */
static void start_candidate(struct rounds *r, int i)
{
    char cmd[1400], log[1100], id[16];

    snprintf(id, sizeof id, "c%d", i);
    snprintf(cmd, sizeof cmd, "echo \"$FENCE_TOKEN $$\" >> '%s/%s.terms'; exec sleep 60", F.dir,
             id);
    snprintf(log, sizeof log, "%s/%s.log", F.dir, id);
    cr_assert_eq(
        ts_proc_start(&r->cand[i], id,
                      (char *[]){(char *)fencelock_bin(), "--backend", (char *)URL, "elect", "elR",
                                 "--id", id, "--ttl", "1s", "--again", "--", "sh", "-c", cmd, NULL},
                      NULL, log),
        0);
}

/* Reads the terms files; appends terms not seen yet. Returns how many new. */
static int read_terms(struct rounds *r)
{
    int added = 0;

    for (int i = 0; i < CANDS; i++) {
        char path[1100], buf[2048];
        int seen = 0;

        snprintf(path, sizeof path, "%s/c%d.terms", F.dir, i);
        if (slurp(path, buf, sizeof buf) < 0)
            continue;
        for (int t = 0; t < r->nterms; t++)
            seen += r->term[t].cand == i;
        for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n"), seen--) {
            struct term *t;

            if (seen > 0)
                continue;
            cr_assert_lt(r->nterms, TERMS, "more leaderships than rounds");
            t = &r->term[r->nterms++];
            memset(t, 0, sizeof *t);
            t->cand = i;
            cr_assert_eq(sscanf(l, "%" SCNu64 " %d", &t->epoch, &t->pid), 2, "bad line '%s'", l);
            added++;
        }
    }
    return added;
}

/* The state letter of pid from /proc (R, S, T, Z...), or 0 if gone. */
static char proc_state(pid_t pid)
{
    char path[64], buf[512], *p;

    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (slurp(path, buf, sizeof buf) < 0 || (p = strrchr(buf, ')')) == NULL || p[1] != ' ')
        return 0;
    return p[2];
}

/* Waits (bounded: 2 s) until pid's state is one of states ("" + 0 for
 * gone); 0, or -1 at the bound. */
static int wait_state(pid_t pid, const char *states)
{
    int64_t t0 = fl_now_ms();

    while (fl_now_ms() - t0 < 2000) {
        char s = proc_state(pid);

        if (s == 0 || strchr(states, s))
            return 0;
        usleep(2 * 1000);
    }
    return -1;
}

/* Never two leaders' commands running: every command but the current
 * leader's (index cur, -1 for none) is gone, a zombie, or stopped with its
 * candidate; a resumed one is given 2 s to be stopped by its fencelock. */
static void check_one_running(struct rounds *r, int cur)
{
    for (int t = 0; t < r->nterms; t++) {
        char s = proc_state(r->term[t].pid);

        if (t == cur || s == 0 || s == 'Z' || s == 'T')
            continue;
        if (r->term[t].resumed && fl_now_ms() - r->term[t].resumed_ms < 2000)
            continue;
        cr_assert_fail("%s: the command of epoch %" PRIu64 " (c%d, pid %d, state %c) runs "
                       "beside the leader's",
                       BK, r->term[t].epoch, r->term[t].cand, (int)r->term[t].pid, s);
    }
}

/* Waits (bounded: 10 s) for the next leadership: exactly one new term,
 * with an epoch above the last, whose command runs, named by `leader`.
 * Checks on every poll that no other leader's command runs and that the
 * epochs `leader` reports never go down. Returns the new term's index. */
static int next_leader(struct rounds *r)
{
    int64_t t0 = fl_now_ms();
    int cur = r->nterms - 1, added = 0;

    while (fl_now_ms() - t0 < 10000 && added == 0) {
        char out[256];
        uint64_t e = 0;

        check_one_running(r, -1);
        added = read_terms(r);
        if (leader_cli("elR", out, sizeof out) == 0) {
            cr_assert(sscanf(out, "leader id=c%*d epoch=%" SCNu64, &e) == 1, "leader: %s", out);
            cr_assert_geq(e, r->leader_epoch, "%s: leader epoch went down", BK);
            r->leader_epoch = e;
        }
        if (added == 0)
            usleep(20 * 1000);
    }
    cr_assert_eq(added, 1, "%s: %d new leaderships in one round", BK, added);
    cur = r->nterms - 1;
    if (cur > 0)
        cr_assert_gt(r->term[cur].epoch, r->term[cur - 1].epoch,
                     "%s: epoch %" PRIu64 " not above the previous %" PRIu64, BK,
                     r->term[cur].epoch, r->term[cur - 1].epoch);
    check_one_running(r, cur);
    /* `leader` names it (the backend's view), within a second. */
    for (int j = 0; j < 50; j++) {
        char out[256], want[128];

        snprintf(want, sizeof want, "leader id=c%d epoch=%" PRIu64 "\n", r->term[cur].cand,
                 r->term[cur].epoch);
        if (leader_cli("elR", out, sizeof out) == 0 && strcmp(out, want) == 0) {
            r->leader_epoch = r->term[cur].epoch;
            return cur;
        }
        usleep(20 * 1000);
    }
    cr_assert_fail("%s: `leader` does not name c%d with epoch %" PRIu64, BK, r->term[cur].cand,
                   r->term[cur].epoch);
    return cur;
}

/* Wall-clock ms now, and when candidate c's terms file was last written
 * (its new leader's command starting): failover times are measured from
 * the signal to that write, not to the poll that saw it. */
static int64_t real_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t term_written_ms(int c)
{
    char path[1100];
    struct stat sb;

    snprintf(path, sizeof path, "%s/c%d.terms", F.dir, c);
    cr_assert_eq(stat(path, &sb), 0);
    return (int64_t)sb.st_mtim.tv_sec * 1000 + sb.st_mtim.tv_nsec / 1000000;
}

static void kill_and_pause_rounds(enum lf_kind k)
{
    struct rounds *rp = &R;
    int64_t kill_ms[ROUNDS / 2], stop_ms[ROUNDS / 2], resume_ms[ROUNDS / 2];
    int nk = 0, ns = 0, cur;

    use(k);
    memset(rp, 0, sizeof *rp);
    for (int i = 0; i < CANDS; i++)
        start_candidate(rp, i);
    cur = next_leader(rp);
    for (int round = 0; round < ROUNDS; round++) {
        struct term *t = &rp->term[cur];
        int c = t->cand, next;
        int64_t t0;

        if (round % 2 == 0) {
            /* SIGKILL: fencelock's group and the command's. */
            ts_proc_stop(&rp->cand[c], SIGKILL, 5000);
            kill(-t->pid, SIGKILL);
            t0 = real_ms();
            cr_assert_eq(wait_state(t->pid, "Z"), 0, "the killed command lives on");
            next = next_leader(rp);
            kill_ms[nk++] = term_written_ms(rp->term[next].cand) - t0;
            start_candidate(rp, c); /* back in the race */
        } else {
            /* SIGSTOP past the TTL: fencelock and its command. */
            cr_assert_eq(ts_proc_signal_group(&rp->cand[c], SIGSTOP), 0);
            kill(-t->pid, SIGSTOP);
            t0 = real_ms();
            cr_assert_eq(wait_state(t->pid, "TZ"), 0, "the command did not stop");
            next = next_leader(rp);
            stop_ms[ns] = term_written_ms(rp->term[next].cand) - t0;
            /* Resumed, the old leader finds its lease expired, stops its
             * command and campaigns again (--again). */
            t->resumed = 1;
            t->resumed_ms = fl_now_ms();
            kill(-t->pid, SIGCONT);
            ts_proc_signal_group(&rp->cand[c], SIGCONT);
            wait_state(t->pid, "Z");
            resume_ms[ns++] = fl_now_ms() - t->resumed_ms;
            if (proc_state(t->pid) != 0 && proc_state(t->pid) != 'Z')
                ts_proc_dump_log(&rp->cand[c]); /* what its fencelock did */
            cr_assert(proc_state(t->pid) == 0 || proc_state(t->pid) == 'Z',
                      "%s: the resumed old leader's command still runs after 2 s", BK);
            cr_assert(ts_proc_alive(&rp->cand[c]), "%s: the resumed candidate exited", BK);
        }
        cr_assert_neq(rp->term[next].cand, c, "%s: the %s leader led again at once", BK,
                      round % 2 ? "stopped" : "killed");
        cur = next;
    }
    fprintf(stderr, "elect %s rounds: failover after SIGKILL (TTL 1 s):", BK);
    for (int i = 0; i < nk; i++)
        fprintf(stderr, " %" PRId64, kill_ms[i]);
    fprintf(stderr, " ms; after SIGSTOP:");
    for (int i = 0; i < ns; i++)
        fprintf(stderr, " %" PRId64, stop_ms[i]);
    fprintf(stderr, " ms; resumed leader's command stopped after:");
    for (int i = 0; i < ns; i++)
        fprintf(stderr, " %" PRId64, resume_ms[i]);
    fprintf(stderr, " ms\n");
    for (int i = 0; i < CANDS; i++)
        ts_proc_stop(&rp->cand[i], SIGTERM, 10000);
}

LF_TEST_EACH(elect, kill_and_pause_rounds_one_leader_at_a_time_failover_timed,
             kill_and_pause_rounds)

/* The library: fl_campaign refuses a bad id, a plain lock holder is no
 * leader, and fl_leader names the campaigner with its lease's token. */
static void library_api(enum lf_kind k)
{
    char err[256], id[FL_ID_MAX + 1];
    struct fl_client *c;
    struct fl_lease *l = NULL;
    uint64_t epoch = 1;

    use(k);
    c = fl_client_new(URL, err, sizeof err);
    cr_assert_not_null(c, "%s", err);
    cr_assert_eq(fl_campaign(c, "el3", "bad.id", 5000, 0, &l), FL_ERR_INVALID);
    cr_assert_eq(fl_campaign(c, "el3", "", 5000, 0, &l), FL_ERR_INVALID);
    cr_assert_eq(fl_leader(c, "el3", id, &epoch), FL_OK, "%s", fl_client_error(c));
    cr_assert_str_eq(id, "");
    cr_assert_eq(epoch, 0);
    cr_assert_eq(fl_acquire(c, "el3", 5000, 0, &l), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(fl_leader(c, "el3", id, &epoch), FL_OK);
    cr_assert_str_eq(id, "", "a plain lock holder was named leader '%s'", id);
    cr_assert_eq(fl_release(c, l), FL_OK);
    fl_lease_free(&l);
    cr_assert_eq(fl_campaign(c, "el3", "node-1@x:7", 5000, 0, &l), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(fl_leader(c, "el3", id, &epoch), FL_OK);
    cr_assert_str_eq(id, "node-1@x:7");
    cr_assert_eq(epoch, l->token);
    cr_assert_eq(fl_release(c, l), FL_OK);
    fl_lease_free(&l);
    cr_assert_eq(fl_leader(c, "el3", id, &epoch), FL_OK);
    cr_assert_str_eq(id, "");
    fl_client_free(&c);
}

LF_TEST_EACH(elect, library_campaign_and_leader, library_api)

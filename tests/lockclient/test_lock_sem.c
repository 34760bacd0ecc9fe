/* Semaphores (`fencelock run NAME --permits N`, fl_acquire_permit) on a
 * real redis-server, a real one-member etcd and a real standalone
 * ZooKeeper, each started once for this binary, every test run on all
 * three: each permit is a slot, the lock NAME#i with its own token. Proves:
 * one client holds two permits as two slots, a full semaphore refuses, a
 * freed slot's next token is above its last; never more than N holders and
 * never two in one slot with 3x N contending processes, tokens strictly
 * increasing per slot, FENCE_SLOT and FENCE_LOCK set; a SIGKILLed holder's
 * permit is back within its TTL (time printed). */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
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

LF_BACKENDS_START()
LF_BACKENDS_STOP()

static struct lf F;     /* only its dir: this test's files */
static const char *URL; /* the backend under test */

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    memset(&F, 0, sizeof F);
    F.dir = ts_tempdir("sem");
    cr_assert_not_null(F.dir);
}

static void teardown(void)
{
    if (F.dir)
        ts_rmrf(F.dir);
    free(F.dir);
    F.dir = NULL;
}

TestSuite(sem_redis, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(sem_etcd, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(sem_zk, .init = setup, .fini = teardown, .timeout = 60);

static struct fl_client *client(void)
{
    char err[256];
    struct fl_client *c = fl_client_new(URL, err, sizeof err);

    cr_assert_not_null(c, "%s", err);
    return c;
}

static const char *fencelock_bin(void)
{
    const char *bin = ts_build_path("lockclient/fencelock");

    cr_assert_not_null(bin, "FENCE_BUILD_DIR unset: cannot find fencelock");
    cr_assert_eq(access(bin, X_OK), 0, "fencelock not built at %s", bin);
    return bin;
}

static void library_slots(enum lf_kind k)
{
    struct fl_client *c;
    struct fl_lease *a = NULL, *b = NULL, *x = NULL;
    unsigned sa = 9, sb = 9, sx = 9;

    URL = lf_backend_url(k);
    c = client();
    cr_assert_eq(fl_acquire_permit(c, "sem1", 0, 5000, 0, &x, &sx), FL_ERR_INVALID);
    cr_assert_eq(fl_acquire_permit(c, "sem1", FL_PERMITS_MAX + 1, 5000, 0, &x, &sx),
                 FL_ERR_INVALID);
    /* One client, two permits: two slots (on etcd one lease holds both). */
    cr_assert_eq(fl_acquire_permit(c, "sem1", 2, 5000, 0, &a, &sa), FL_OK, "%s",
                 fl_client_error(c));
    cr_assert_eq(fl_acquire_permit(c, "sem1", 2, 5000, 0, &b, &sb), FL_OK, "%s",
                 fl_client_error(c));
    cr_assert(sa < 2 && sb < 2 && sa != sb, "slots %u and %u", sa, sb);
    {
        char want[16];

        snprintf(want, sizeof want, "sem1#%u", sa);
        cr_assert_str_eq(a->name, want);
    }
    cr_assert_eq(fl_acquire_permit(c, "sem1", 2, 5000, 300, &x, &sx), FL_ERR_NOT_ACQUIRED,
                 "a third permit of 2");
    cr_assert_eq(fl_release(c, a), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(fl_acquire_permit(c, "sem1", 2, 5000, 0, &x, &sx), FL_OK, "%s",
                 fl_client_error(c));
    cr_assert_eq(sx, sa, "the freed slot");
    cr_assert_gt(x->token, a->token, "a slot's next token not above its last");
    cr_assert_eq(fl_release(c, x), FL_OK);
    cr_assert_eq(fl_release(c, b), FL_OK);
    fl_lease_free(&a);
    fl_lease_free(&b);
    fl_lease_free(&x);
    fl_client_free(&c);
}

LF_TEST_EACH(sem, library_slots_full_and_bad_count, library_slots)

static int slurp(const char *name, char *buf, size_t len)
{
    char path[1100];
    FILE *f;
    size_t n;

    snprintf(path, sizeof path, "%s/%s", F.dir, name);
    if ((f = fopen(path, "r")) == NULL)
        return -1;
    n = fread(buf, 1, len - 1, f);
    buf[n] = '\0';
    fclose(f);
    return 0;
}

#define N 2
#define BODY                                                                                       \
    "mkdir \"$D/slot.$FENCE_SLOT\" || echo slot-shared >> \"$D/bad\"; "                            \
    "[ \"$FENCE_LOCK\" = \"sem2#$FENCE_SLOT\" ] || echo bad-lock-$FENCE_LOCK >> \"$D/bad\"; "      \
    "[ $(ls \"$D\" | grep -c \"^slot\\.\") -gt 2 ] && echo over >> \"$D/bad\"; "                   \
    "echo \"$FENCE_SLOT $FENCE_TOKEN\" >> \"$D/log\"; sleep 0.1; "                                 \
    "[ $(ls \"$D\" | grep -c \"^slot\\.\") -eq 2 ] && echo x >> \"$D/full\"; "                     \
    "rmdir \"$D/slot.$FENCE_SLOT\""

static void never_exceeded(enum lf_kind k)
{
    struct ts_proc p[3 * N];
    static char buf[65536];
    uint64_t last[N] = {0};
    int lines = 0;
    int64_t t0 = fl_now_ms();

    URL = lf_backend_url(k);
    for (int i = 0; i < 3 * N; i++) {
        char script[2000], log[1100], d[1100], tag[16];

        snprintf(script, sizeof script,
                 "i=0; while [ $i -lt 5 ]; do i=$((i+1)); \"%s\" --backend '%s' run sem2 "
                 "--permits %d --ttl 5s --wait 20s -- sh -c '%s' || exit 9; done",
                 fencelock_bin(), URL, N, BODY);
        snprintf(tag, sizeof tag, "c%d", i);
        snprintf(log, sizeof log, "%s/%s.log", F.dir, tag);
        snprintf(d, sizeof d, "D=%s", F.dir);
        cr_assert_eq(ts_proc_start(&p[i], tag, (char *[]){"/bin/sh", "-c", script, NULL},
                                   (char *[]){d, NULL}, log),
                     0);
    }
    for (int i = 0; i < 3 * N; i++) {
        int st = 0;

        cr_assert_eq(ts_proc_wait(&p[i], 45000, &st), 0, "contender %d did not finish", i);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            ts_proc_dump_log(&p[i]);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "contender %d status %d", i, st);
    }
    if (slurp("bad", buf, sizeof buf) == 0)
        cr_assert_fail("semaphore broken: %s", buf);
    cr_assert_eq(slurp("full", buf, sizeof buf), 0, "never %d holders at once", N);
    cr_assert_eq(slurp("log", buf, sizeof buf), 0);
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"), lines++) {
        unsigned s = 99;
        uint64_t t = 0;

        cr_assert_eq(sscanf(line, "%u %" SCNu64, &s, &t), 2, "bad line '%s'", line);
        cr_assert_lt(s, N, "slot %u", s);
        cr_assert_gt(t, last[s], "slot %u token %" PRIu64 " not above %" PRIu64, s, t, last[s]);
        last[s] = t;
    }
    cr_assert_eq(lines, 3 * N * 5);
    fprintf(stderr, "sem %s: %d holds of %d permits by %d contenders took %" PRId64 " ms\n",
            lf_backend_name(k), 3 * N * 5, N, 3 * N, fl_now_ms() - t0);
}

LF_TEST_EACH(sem, permits_never_exceeded_with_3n_contenders, never_exceeded)

static void killed_holders(enum lf_kind k)
{
    struct ts_proc h[N];
    struct fl_client *c;
    struct fl_lease *x = NULL;
    unsigned slot = 0;
    int64_t t0, took;

    URL = lf_backend_url(k);
    c = client();
    for (int i = 0; i < N; i++) {
        char log[1100], tag[16], ready[1100], cmd[1200];

        snprintf(tag, sizeof tag, "h%d", i);
        snprintf(log, sizeof log, "%s/%s.log", F.dir, tag);
        snprintf(ready, sizeof ready, "%s/ready%d", F.dir, i);
        snprintf(cmd, sizeof cmd, "touch '%s'; exec sleep 30", ready);
        cr_assert_eq(ts_proc_start(&h[i], tag,
                                   (char *[]){(char *)fencelock_bin(), "--backend", (char *)URL,
                                              "run", "sem3", "--permits", "2", "--ttl", "1s", "--",
                                              "sh", "-c", cmd, NULL},
                                   NULL, log),
                     0);
        for (int j = 0; j < 500 && access(ready, F_OK) != 0; j++)
            usleep(20 * 1000);
        cr_assert_eq(access(ready, F_OK), 0, "holder %d never started", i);
    }
    cr_assert_eq(fl_acquire_permit(c, "sem3", N, 5000, 0, &x, &slot), FL_ERR_NOT_ACQUIRED,
                 "a permit while both are held");
    for (int i = 0; i < N; i++)
        ts_proc_stop(&h[i], SIGKILL, 5000); /* group: fencelock and its command */
    t0 = fl_now_ms();
    cr_assert_eq(fl_acquire_permit(c, "sem3", N, 5000, 5000, &x, &slot), FL_OK,
                 "no permit back within 5 s of killing the holders (TTL 1 s): %s",
                 fl_client_error(c));
    took = fl_now_ms() - t0;
    fprintf(stderr, "sem %s: a SIGKILLed holder's permit back after %" PRId64 " ms (TTL 1 s)\n",
            lf_backend_name(k), took);
    /* The lease was last renewed up to TTL/3 before the kill, so it ends
     * at most a TTL after it; the slack is the backend's expiry check
     * (etcd revokes expired leases every 500 ms) and a 200 ms wait slice. */
    cr_assert_leq(took, 1800, "permit back after %" PRId64 " ms, TTL 1 s", took);
    fl_release(c, x);
    fl_lease_free(&x);
    fl_client_free(&c);
}

LF_TEST_EACH(sem, killed_holders_permits_back_within_ttl, killed_holders)

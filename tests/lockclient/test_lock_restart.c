/* Redis backend tokens across a loss of the counter: a real redis-server
 * killed with SIGKILL and restarted on the same port and directory, once
 * without persistence (the counter is gone) and once with RDB snapshots only
 * (the counter rewinds to the last snapshot). Tokens must stay above every
 * token issued before the restart and never be issued twice (the design in
 * docs/lockclient.md, "Tokens across a Redis restart"). */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fencelock.h"
#include "lock_fixture.h"

static struct lf F;

/* Snapshots configured but never due during the test: the test takes the one
 * snapshot itself with SAVE, so what the restart loads is known. */
static char *rdb_args[] = {"--save", "3600 1", "--dbfilename", "dump.rdb", NULL};

static void setup_plain(void)
{
    signal(SIGPIPE, SIG_IGN);
    cr_assert_eq(lf_setup(&F, "lockrestart", NULL), 0, "redis fixture failed");
}

static void setup_rdb(void)
{
    signal(SIGPIPE, SIG_IGN);
    cr_assert_eq(lf_setup(&F, "lockrdb", rdb_args), 0, "redis fixture failed");
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

/* n acquire/release rounds on name; tokens appended to toks[*count]. Each
 * token must be above the one before. */
static void rounds(struct fl_client *c, const char *name, int n, uint64_t *toks, size_t *count)
{
    for (int i = 0; i < n; i++) {
        struct fl_lease *l = NULL;

        lf_assert(&F, fl_acquire(c, name, 5000, 0, &l) == FL_OK, "acquire %d: %s", i,
                  fl_client_error(c));
        if (*count > 0)
            cr_assert_gt(l->token, toks[*count - 1], "token %" PRIu64 " after %" PRIu64, l->token,
                         toks[*count - 1]);
        toks[(*count)++] = l->token;
        cr_assert_eq(fl_release(c, l), FL_OK, "%s", fl_client_error(c));
        fl_lease_free(&l);
    }
}

static void kill9_and_restart(char *const extra[])
{
    cr_assert_geq(ts_proc_stop(&F.redis, SIGKILL, 5000), 0, "redis did not die");
    cr_assert_eq(lf_restart_redis(&F, extra), 0, "redis did not restart on port %d", F.port);
}

TestSuite(lockrestart, .init = setup_plain, .fini = teardown, .timeout = 30);

/* No persistence: the counter and the lock key die with the process. The
 * holder killed with the server had the highest token a proxy has seen; the
 * next holder must get a higher one, or every fenced write would be refused
 * (409) until the counter caught up. */
Test(lockrestart, tokens_rise_across_a_restart_without_persistence)
{
    struct fl_client *c = client();
    struct fl_lease *held = NULL, *next = NULL;
    struct fl_lock_status st;
    uint64_t toks[32];
    size_t n = 0;

    rounds(c, "/objects/p", 10, toks, &n);
    cr_assert_eq(fl_acquire(c, "/objects/p", 60000, 0, &held), FL_OK, "%s", fl_client_error(c));
    cr_assert_gt(held->token, toks[n - 1]);
    kill9_and_restart(NULL);

    /* The premise: the restart really lost the counter and the lock. */
    cr_assert_eq(fl_status(c, "/objects/p", &st), FL_OK, "%s", fl_client_error(c));
    lf_assert(&F, st.held == 0 && st.token == 0, "state survived: held %d token %" PRIu64, st.held,
              st.token);

    lf_assert(&F, fl_acquire(c, "/objects/p", 5000, 0, &next) == FL_OK, "%s", fl_client_error(c));
    cr_expect_gt(next->token, held->token,
                 "token after the restart %" PRIu64 " not above the last holder's %" PRIu64,
                 next->token, held->token);
    cr_assert_eq(fl_release(c, next), FL_OK);
    fl_lease_free(&next);
    fl_lease_free(&held);
    fl_client_free(&c);
}

TestSuite(lockrdb, .init = setup_rdb, .fini = teardown, .timeout = 30);

/* RDB only: tokens issued after the last snapshot are forgotten by kill -9
 * and the counter rewinds to the snapshot. None of the tokens issued after
 * the restart may equal one issued before (two holders with one token would
 * both be accepted as equals by a proxy). */
Test(lockrdb, no_token_is_issued_twice_across_a_rewind_to_a_snapshot)
{
    enum { BEFORE = 10, AFTER_SNAP = 10, AFTER_RESTART = 20 };
    struct fl_client *c = client();
    struct fl_lock_status st;
    uint64_t before[BEFORE + AFTER_SNAP], after[AFTER_RESTART], snap;
    size_t nb = 0, na = 0, dup = 0;
    char buf[128];
    char *save[] = {"SAVE", NULL};

    rounds(c, "/objects/s", BEFORE, before, &nb);
    cr_assert_eq(lf_redis_cmd(&F, save, buf, sizeof buf), 0);
    lf_assert(&F, strcmp(buf, "+OK") == 0, "SAVE answered %s", buf);
    snap = before[nb - 1];
    rounds(c, "/objects/s", AFTER_SNAP, before, &nb);
    kill9_and_restart(rdb_args);

    /* The premise: the counter came back from the snapshot, rewound. */
    cr_assert_eq(fl_status(c, "/objects/s", &st), FL_OK, "%s", fl_client_error(c));
    lf_assert(&F, st.token == snap, "counter after restart %" PRIu64 ", snapshot had %" PRIu64,
              st.token, snap);

    rounds(c, "/objects/s", AFTER_RESTART, after, &na);
    for (size_t i = 0; i < na; i++)
        for (size_t j = 0; j < nb; j++)
            if (after[i] == before[j]) {
                fprintf(stderr, "token %" PRIu64 " issued before and after the restart\n",
                        after[i]);
                dup++;
            }
    cr_expect_eq(dup, 0, "%zu of %zu tokens issued twice", dup, na);
    cr_expect_gt(after[0], before[nb - 1],
                 "first token after the restart %" PRIu64 " not above the last before %" PRIu64,
                 after[0], before[nb - 1]);
    fl_client_free(&c);
}

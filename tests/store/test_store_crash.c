/* Crash safety of the file store: run store_crasher, SIGKILL it at a random
 * moment (50..300 ms after it is ready), reopen the store and check that
 * every advance it acknowledged is there (highest >= acked token). At least
 * 100 rounds on the same store directory, so each round also recovers from
 * the previous kill. */
#include <criterion/criterion.h>

#include "ts_proc.h"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "st_store.h"

#define NKEYS 16
#define ROUNDS 100 /* FENCE_CRASH_ROUNDS overrides it (bench/store_soak.sh: 1000) */

static char tmpdir[64];
static char dbdir[96];

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fence-crash-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
    snprintf(dbdir, sizeof dbdir, "%s/db", tmpdir);
}

static void teardown(void)
{
    ts_rmrf(dbdir);
    ts_rmrf(tmpdir);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct res {
    int calls, rc;
    uint64_t highest;
};

static void on_get(void *arg, int rc, uint64_t highest)
{
    struct res *r = arg;
    r->calls++;
    r->rc = rc;
    r->highest = highest;
}

/* Parses complete "ack /kN T" lines out of buf, raising acked[N]. Returns
 * how many bytes were consumed. */
static size_t parse_acks(const char *buf, size_t len, uint64_t *acked, int *ready,
                         long *nacks)
{
    size_t off = 0;
    for (;;) {
        const char *nl = memchr(buf + off, '\n', len - off);
        if (nl == NULL)
            return off;
        size_t n = (size_t)(nl - (buf + off));
        char line[128];
        cr_assert_lt(n, sizeof line, "long line from store_crasher");
        memcpy(line, buf + off, n);
        line[n] = '\0';
        int k;
        unsigned long long t;
        if (strcmp(line, "ready") == 0) {
            *ready = 1;
        } else {
            cr_assert_eq(sscanf(line, "ack /k%d %llu", &k, &t), 2, "bad line '%s'", line);
            cr_assert(k >= 0 && k < NKEYS);
            if (t > acked[k])
                acked[k] = t;
            (*nacks)++;
        }
        off += n + 1;
    }
}

static uint64_t crash_round(int round, uint64_t start, uint64_t *acked, long *nacks)
{
    int fds[2];
    char start_s[32], seed_s[32];
    char buf[65536];
    size_t have = 0;
    int ready = 0;

    cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
    snprintf(start_s, sizeof start_s, "%llu", (unsigned long long)start);
    snprintf(seed_s, sizeof seed_s, "%d", round * 7919 + 1);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        dup2(fds[1], 1);
        execl(STORE_CRASHER, "store_crasher", dbdir, start_s, seed_s, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    int delay_ms = 50 + rand() % 251;
    double kill_at = -1, end = now() + 20;
    int killed = 0;
    for (;;) {
        cr_assert_lt(now(), end, "round %d: store_crasher did not finish", round);
        if (ready && !killed && kill_at < 0)
            kill_at = now() + delay_ms / 1000.0;
        if (!killed && kill_at >= 0 && now() >= kill_at) {
            kill(pid, SIGKILL);
            killed = 1;
        }
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        int wait_ms = 100;
        if (!killed && kill_at >= 0) {
            wait_ms = (int)((kill_at - now()) * 1000) + 1;
            if (wait_ms < 0)
                wait_ms = 0;
        }
        if (poll(&p, 1, wait_ms) <= 0)
            continue;
        ssize_t n = read(fds[0], buf + have, sizeof buf - have);
        if (n < 0 && errno == EINTR)
            continue;
        cr_assert_geq(n, 0);
        if (n == 0)
            break; /* killed (or exited) and the pipe drained */
        have += (size_t)n;
        size_t used = parse_acks(buf, have, acked, &ready, nacks);
        memmove(buf, buf + used, have - used);
        have -= used;
    }
    close(fds[0]);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
              "round %d: store_crasher ended on its own (status %d)", round, status);
    uint64_t top = start;
    for (int k = 0; k < NKEYS; k++)
        if (acked[k] > top)
            top = acked[k];
    return top;
}

static void check_store(int round, const uint64_t *acked)
{
    char marker[128];
    snprintf(marker, sizeof marker, "%s.id", dbdir);
    struct st_store_config cfg = {.backend = ST_STORE_FILE, .path = dbdir, .marker = marker};
    char err[4096];
    struct st_store *s = st_store_open(&cfg, err, sizeof err);
    cr_assert_not_null(s, "round %d: reopen: %s", round, err);
    struct res r[NKEYS];
    memset(r, 0, sizeof r);
    for (int k = 0; k < NKEYS; k++) {
        char key[16];
        snprintf(key, sizeof key, "/k%d", k);
        st_store_get(s, key, strlen(key), on_get, &r[k]);
    }
    int done = 0;
    double end = now() + 10;
    while (done < NKEYS) {
        struct pollfd p = {.fd = st_store_notify_fd(s), .events = POLLIN};
        cr_assert_lt(now(), end);
        if (poll(&p, 1, 100) > 0)
            st_store_dispatch(s);
        done = 0;
        for (int k = 0; k < NKEYS; k++)
            done += r[k].calls;
    }
    for (int k = 0; k < NKEYS; k++) {
        cr_assert_eq(r[k].rc, 0);
        cr_assert_geq(r[k].highest, acked[k], "round %d: /k%d lost: highest %llu < acked %llu",
                      round, k, (unsigned long long)r[k].highest,
                      (unsigned long long)acked[k]);
    }
    st_store_close(&s);
}

Test(store_crash, kill9_never_loses_an_acked_advance, .init = setup, .fini = teardown,
     .timeout = 3000)
{
    uint64_t acked[NKEYS] = {0};
    uint64_t start = 0;
    long nacks = 0;
    const char *env = getenv("FENCE_CRASH_ROUNDS");
    int rounds = env != NULL && atoi(env) > 0 && atoi(env) <= 100000 ? atoi(env) : ROUNDS;
    double t0 = now();
    srand((unsigned)time(NULL));
    for (int round = 0; round < rounds; round++) {
        uint64_t top = crash_round(round, start, acked, &nacks);
        check_store(round, acked);
        /* Tokens keep increasing across rounds, above anything the killed
         * process may have written without acknowledging it. */
        start = top + 1000000;
    }
    cr_log_info("%d rounds, %ld acknowledged advances checked", rounds, nacks);
    fprintf(stderr, "store_crash: %d rounds, %ld acknowledged advances, %.0f s\n", rounds,
            nacks, now() - t0);
    cr_expect_gt(nacks, rounds, "too few acknowledgements to prove anything");
}

/* End to end, real parts only: 8 worker processes increment one counter
 * object, each round a `fencelock run /objects/counter --ttl 1s` around a
 * read-modify-write in curl (tests/e2e/rmw.sh; the read carries the token too,
 * so it claims the resource). Meanwhile the test freezes a worker (its
 * fencelock and its command) with SIGSTOP for longer than the TTL, right after
 * it read the counter, several times. Through fenceproxy no update is lost:
 * the counter equals the number of writes the proxy accepted, and every
 * refused write is in the audit log. The control runs the same workers and
 * pauses straight against nginx and asserts that updates are lost there, so
 * the test shows it can fail. */
#include <criterion/criterion.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e_fixture.h"

#define WORKERS    8
#define ITERATIONS 15    /* rounds per worker at most */
#define PAUSES     5     /* freezes injected per run */
#define PAUSE_MS   1500  /* TTL (1 s) + 0.5 s */
#define INJECT_MS  25000 /* the injector gives up after this long */
#define DRAIN_MS   30000 /* bound for the workers to finish after the stop file */

static struct e2e e;
static struct ts_proc workers[WORKERS];
static char *wdirs[WORKERS]; /* malloc'd worker directories */
static pid_t frozen;         /* the rmw group frozen right now, for the teardown */
static int passed;

/* Writes the path of file name in worker i's directory into out. */
static char *wfile(int i, const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", wdirs[i] ? wdirs[i] : "?", name);
    return out;
}

/* Reads the parent pid and process group of pid from /proc. 0 / -1. */
static int proc_ids(pid_t pid, pid_t *ppid, pid_t *pgrp)
{
    char path[64], buf[1024], *p;
    FILE *f;
    size_t n;
    int pp, pg;

    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if ((f = fopen(path, "r")) == NULL)
        return -1;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* "pid (comm) state ppid pgrp ...": comm may hold spaces and ')'. */
    if ((p = strrchr(buf, ')')) == NULL || sscanf(p + 1, " %*c %d %d", &pp, &pg) != 2)
        return -1;
    *ppid = pp;
    *pgrp = pg;
    return 0;
}

/* The pid of worker i's rmw.sh while it runs under that worker's fencelock
 * (checked in /proc, so a stale pid file never names another process), or 0. */
static pid_t current_rmw(int i)
{
    char path[1100], *s;
    pid_t pid, ppid, pgrp, pppid, ppgrp;

    wfile(i, "rmw.pid", path, sizeof path);
    if ((s = e2e_read_trimmed(path)) == NULL)
        return 0;
    pid = (pid_t)atoi(s);
    free(s);
    if (pid <= 1 || workers[i].pid <= 0 || proc_ids(pid, &ppid, &pgrp) < 0 || pgrp != pid ||
        proc_ids(ppid, &pppid, &ppgrp) < 0 || ppgrp != workers[i].pid)
        return 0;
    return pid;
}

static void setup(void)
{
    passed = 0;
    frozen = 0;
    memset(workers, 0, sizeof workers);
    /* A failed .init may skip .fini: clean up here first. */
    if (e2e_start(&e, "contention") < 0) {
        e2e_stop(&e, 1);
        cr_assert_fail("the servers did not start (see above)");
    }
}

static void teardown(void)
{
    if (frozen > 0) {
        kill(-frozen, SIGCONT);
        kill(-frozen, SIGKILL);
    }
    for (int i = 0; i < WORKERS; i++) {
        pid_t rmw;

        if (workers[i].pid <= 0)
            continue;
        ts_proc_signal_group(&workers[i], SIGCONT);
        if ((rmw = current_rmw(i)) > 0)
            kill(-rmw, SIGKILL);
        ts_proc_stop(&workers[i], SIGKILL, 2000);
    }
    if (!passed) {
        for (int i = 0; i < WORKERS; i++) {
            char path[1100], *s;

            wfile(i, "log", path, sizeof path);
            if (wdirs[i] != NULL && (s = ts_read_file(path, NULL)) != NULL) {
                fprintf(stderr, "----- worker %d log -----\n%s", i, s);
                free(s);
            }
            if (workers[i].log[0] != '\0')
                ts_proc_dump_log(&workers[i]);
        }
    }
    e2e_stop(&e, !passed);
    for (int i = 0; i < WORKERS; i++) {
        free(wdirs[i]);
        wdirs[i] = NULL;
    }
}

TestSuite(contention, .init = setup, .fini = teardown, .timeout = 120);

struct tally {
    int accepted, rejected, read_rejected, errors;
    int pauses;
    long counter; /* final value of the counter object */
    long long ms; /* wall time of the run */
};

/* Whether any worker is still running. */
static int any_worker_alive(void)
{
    for (int i = 0; i < WORKERS; i++)
        if (ts_proc_alive(&workers[i]))
            return 1;
    return 0;
}

/* Freezes one worker inside its read-modify-write window: waits (bounded)
 * until some worker has read and not yet written, then stops its command's
 * group and its own group (worker.sh and fencelock, whose watchdog then stops
 * renewing) for PAUSE_MS. Returns 1 when a pause was injected, else 0. */
static int inject_pause(void)
{
    long long until = ts_now_ms() + 2000;
    struct stat st;

    while (ts_now_ms() < until) {
        int start = rand() % WORKERS;

        for (int k = 0; k < WORKERS; k++) {
            int i = (start + k) % WORKERS;
            char path[1100];
            pid_t rmw;

            wfile(i, "window", path, sizeof path);
            if (stat(path, &st) != 0 || (rmw = current_rmw(i)) == 0)
                continue;
            kill(-rmw, SIGSTOP);
            frozen = rmw;
            ts_proc_signal_group(&workers[i], SIGSTOP);
            ts_sleep_ms(PAUSE_MS);
            ts_proc_signal_group(&workers[i], SIGCONT);
            kill(-rmw, SIGCONT);
            frozen = 0;
            return 1;
        }
        ts_sleep_ms(3);
    }
    return 0;
}

static void parse_log(const char *path, struct tally *t, const char *audit)
{
    char *text = ts_read_file(path, NULL), *line, *save = NULL;

    if (text == NULL)
        return; /* a worker that never got to write */
    for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        char what[32], tok[32], rid[64];

        if (sscanf(line, "%31s %31s %63s", what, tok, rid) != 3) {
            cr_log_error("bad worker log line: %s", line);
            t->errors++;
        } else if (strcmp(what, "accepted") == 0) {
            t->accepted++;
        } else if (strcmp(what, "rejected") == 0 || strcmp(what, "read_rejected") == 0) {
            int put = strcmp(what, "rejected") == 0;
            char tneedle[64], rneedle[128];
            const char *needles[] = {"\"event\":\"stale_token\"", tneedle, rneedle,
                                     put ? "\"method\":\"PUT\"" : "\"method\":\"GET\"", NULL};

            *(put ? &t->rejected : &t->read_rejected) += 1;
            if (audit != NULL) {
                snprintf(tneedle, sizeof tneedle, "\"token\":%s,", tok);
                snprintf(rneedle, sizeof rneedle, "\"request_id\":\"%s\"", rid);
                cr_expect_eq(e2e_count_lines(audit, needles), 1,
                             "refused request (%s) not in the audit log exactly once", line);
            }
        } else {
            cr_log_error("worker: %s", line);
            t->errors++;
        }
    }
    free(text);
}

/* Runs the workers against 127.0.0.1:port with the pauses, waits for them
 * and tallies their logs. */
static void contend(int port, const char *tag, struct tally *t)
{
    char base[900], stop[1100], url[256], worker[1024], iters[16], path[1100];
    long long t0 = ts_now_ms(), until;

    memset(t, 0, sizeof *t);
    srand((unsigned)getpid() ^ (unsigned)t0);
    e2e_path(&e, tag, base, sizeof base);
    cr_assert_eq(mkdir(base, 0755), 0);
    snprintf(stop, sizeof stop, "%s/stop", base);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/objects/counter/value", port);
    snprintf(worker, sizeof worker, "%s/tests/e2e/worker.sh", e.src);
    snprintf(iters, sizeof iters, "%d", ITERATIONS);
    for (int i = 0; i < WORKERS; i++) {
        char name[32];

        cr_assert_neq(asprintf(&wdirs[i], "%s/w%d", base, i), -1);
        cr_assert_eq(mkdir(wdirs[i], 0755), 0);
        wfile(i, "worker.log", path, sizeof path);
        snprintf(name, sizeof name, "worker %d", i);
        {
            char *argv[] = {
                "/bin/sh", worker, (char *)e.fencelock, e.backend, url, wdirs[i], iters, stop,
                E2E_CURL,  NULL};

            cr_assert_eq(ts_proc_start(&workers[i], name, argv, NULL, path), 0);
        }
    }
    while (t->pauses < PAUSES && ts_now_ms() - t0 < INJECT_MS && any_worker_alive()) {
        ts_sleep_ms(150 + rand() % 300);
        t->pauses += inject_pause();
    }
    cr_assert_eq(e2e_touch(stop), 0);
    until = ts_now_ms() + DRAIN_MS;
    for (int i = 0; i < WORKERS; i++) {
        long long left = until - ts_now_ms();
        int st;

        cr_assert_eq(ts_proc_wait(&workers[i], left > 0 ? (int)left : 0, &st), 0,
                     "worker %d did not finish in time", i);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker %d ended with status %d", i, st);
    }
    t->ms = ts_now_ms() - t0;
    for (int i = 0; i < WORKERS; i++) {
        wfile(i, "log", path, sizeof path);
        parse_log(path, t, NULL);
    }
    snprintf(path, sizeof path, "%s/data/objects/counter/value", e.dir);
    {
        char *s = e2e_read_trimmed(path);

        cr_assert_not_null(s, "no counter object at %s", path);
        t->counter = strtol(s, NULL, 10);
        free(s);
    }
    fprintf(stderr,
            "contention %s: %d pauses, %d writes accepted, %d refused, %d reads refused, "
            "counter %ld, %lld ms\n",
            tag, t->pauses, t->accepted, t->rejected, t->read_rejected, t->counter, t->ms);
    cr_assert_eq(t->errors, 0, "workers logged errors (see above)");
    cr_assert_eq(t->pauses, PAUSES, "only %d pauses landed inside a read-modify-write", t->pauses);
}

/* Counts the proxy's access log lines for the counter object: PUTs with the
 * given status. */
static int access_puts(const char *status)
{
    const char *needles[] = {"\"PUT /objects/counter/value HTTP/1.1\"", status, NULL};

    return e2e_count_lines(e.px.access, needles);
}

Test(contention, through_the_proxy_no_update_is_lost_and_every_refusal_is_audited)
{
    struct tally t;
    long long deadline;
    int fwd;

    contend(e.px.port, "proxy", &t);
    cr_assert_gt(t.accepted, 0);
    cr_assert_gt(t.rejected, 0,
                 "no write was refused: the pauses did not make any worker write late");
    cr_assert_eq(t.counter, t.accepted, "lost update: counter %ld, %d writes accepted", t.counter,
                 t.accepted);
    /* The proxy's own count of accepted writes, from its access log: one line
     * per response with method, target and status, written when the upstream
     * answered (201 or 204 for a forwarded PUT; a refusal is 409 and is never
     * forwarded). It is written asynchronously, so wait until every PUT the
     * workers saw answered is there. /metrics would count GETs too. */
    deadline = ts_now_ms() + 5000;
    while ((fwd = access_puts("\" 201 ") + access_puts("\" 204 ")) + access_puts("\" 409 ") <
               t.accepted + t.rejected &&
           ts_now_ms() < deadline)
        ts_sleep_ms(50);
    cr_assert_eq(fwd, t.accepted, "the proxy forwarded %d PUTs, the workers saw %d accepted", fwd,
                 t.accepted);
    cr_assert_eq(access_puts("\" 409 "), t.rejected);
    /* Every refusal the workers saw is in the audit log, found by its
     * request id and token; and the log holds no other refusals. The audit
     * writer is asynchronous too. */
    {
        const char *put[] = {"\"event\":\"stale_token\"", "\"method\":\"PUT\"", NULL};
        const char *get[] = {"\"event\":\"stale_token\"", "\"method\":\"GET\"", NULL};
        struct tally again;
        char path[1100];

        deadline = ts_now_ms() + 5000;
        while (e2e_count_lines(e.px.audit, put) + e2e_count_lines(e.px.audit, get) <
                   t.rejected + t.read_rejected &&
               ts_now_ms() < deadline)
            ts_sleep_ms(50);
        memset(&again, 0, sizeof again);
        for (int i = 0; i < WORKERS; i++) {
            wfile(i, "log", path, sizeof path);
            parse_log(path, &again, e.px.audit);
        }
        cr_assert_eq(e2e_count_lines(e.px.audit, put), t.rejected);
        cr_assert_eq(e2e_count_lines(e.px.audit, get), t.read_rejected);
    }
    cr_assert_eq(e2e_stop_proxy(&e), 0, "fenceproxy did not exit cleanly (see its log)");
    passed = 1;
}

Test(contention, control_without_the_proxy_updates_are_lost)
{
    struct tally t;

    contend(e.nginx_port, "direct", &t);
    cr_assert_eq(t.rejected + t.read_rejected, 0, "nginx refused a request");
    cr_assert_lt(t.counter, t.accepted,
                 "no update was lost without the proxy (counter %ld, %d writes): the control "
                 "does not show what the proxy prevents",
                 t.counter, t.accepted);
    cr_assert_eq(e2e_stop_proxy(&e), 0, "fenceproxy did not exit cleanly (see its log)");
    passed = 1;
}

/* The task-processing example (examples/taskqueue/worker.sh): 3 workers,
 * each running every task under `fencelock run` (real redis-server), write
 * results to a recording store. One worker pauses itself mid-task (before
 * its result write) and is stopped past its TTL; another worker takes the
 * task over; then the paused one resumes and writes. Through the real
 * fenceproxy its write is refused (409) and every task's result reaches the
 * store from exactly one worker; the same run without the proxy shows the
 * paused task's result written by two workers. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fencelock.h"
#include "lock_fixture.h"
#include "ts_proxy.h"
#include "ts_upstream.h"

#define TASKS   6
#define WORKERS 3

static struct lf F;
static struct ts_upstream *up;
static struct ts_proxy px;
static int with_proxy;

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    memset(&F, 0, sizeof F);
    memset(&px, 0, sizeof px);
    cr_assert_eq(lf_setup(&F, "taskq", NULL), 0, "redis fixture failed");
    up = ts_upstream_start();
    cr_assert_not_null(up, "recording upstream did not start");
}

static void teardown(void)
{
    if (with_proxy)
        ts_proxy_cleanup(&px, 1);
    ts_upstream_stop(&up);
    lf_teardown(&F);
}

TestSuite(taskqueue, .init = setup, .fini = teardown, .timeout = 90);

static int exists(const char *rel)
{
    char p[1200];
    struct stat sb;

    snprintf(p, sizeof p, "%s/q/%s", F.dir, rel);
    return stat(p, &sb) == 0;
}

static char *read_rel(const char *rel)
{
    char p[1200];
    size_t len;

    snprintf(p, sizeof p, "%s/q/%s", F.dir, rel);
    return ts_read_file(p, &len);
}

/* Results per task at the store: bitmask of workers whose result PUT of
 * task n reached it. */
static void results(unsigned mask[TASKS + 1])
{
    size_t n = ts_upstream_count(up);
    struct ts_upstream_req *q = malloc(sizeof *q);

    cr_assert_not_null(q);
    memset(mask, 0, sizeof(unsigned) * (TASKS + 1));
    for (size_t i = 0; i < n; i++) {
        int t = 0, w = -1;

        cr_assert_eq(ts_upstream_get(up, i, q), 0);
        /* sscanf would match the number alone: check the suffix too. */
        if (strcmp(q->method, "PUT") != 0 || sscanf(q->target, "/objects/task-%d/", &t) != 1 ||
            strstr(q->target, "/result") == NULL)
            continue;
        if (q->body_kept == 2 && q->body[0] == 'w')
            w = q->body[1] - '0';
        cr_assert(t >= 1 && t <= TASKS && w >= 0 && w < WORKERS, "odd result %s", q->target);
        mask[t] |= 1u << w;
    }
    free(q);
}

/* Runs the pool with worker w0 pausing once; returns the paused task. */
static int run_pool(void)
{
    const char *fl = ts_build_path("lockclient/fencelock");
    const char *script = FENCE_SOURCE_DIR "/examples/taskqueue/worker.sh";
    char store[128], qdir[1100], envb[1100], envf[1100], log[1300];
    struct ts_proc w[WORKERS];
    char *busy = NULL;
    int pid = 0, task = 0;

    cr_assert_not_null(fl);
    cr_assert_eq(access(script, R_OK), 0, "missing %s", script);
    snprintf(qdir, sizeof qdir, "%s/q", F.dir);
    cr_assert_eq(mkdir(qdir, 0700), 0);
    snprintf(log, sizeof log, "%s/todo", qdir);
    cr_assert_eq(mkdir(log, 0700), 0);
    for (int t = 1; t <= TASKS; t++) {
        char p[1200];
        FILE *f;

        snprintf(p, sizeof p, "%s/todo/%d", qdir, t);
        cr_assert_not_null(f = fopen(p, "w"));
        fclose(f);
    }
    snprintf(store, sizeof store, "http://127.0.0.1:%d",
             with_proxy ? px.port : ts_upstream_port(up));
    snprintf(envb, sizeof envb, "FENCE_BACKEND=%s", F.url);
    snprintf(envf, sizeof envf, "FENCELOCK=%s", fl);
    for (int i = 0; i < WORKERS; i++) {
        char id[8];

        snprintf(id, sizeof id, "w%d", i);
        snprintf(log, sizeof log, "%s/%s.log", F.dir, id);
        cr_assert_eq(
            ts_proc_start(&w[i], id, (char *[]){"/bin/sh", (char *)script, id, qdir, store, NULL},
                          (char *[]){envb, envf, "PAUSE_ONCE=w0", "WORK_SECONDS=0.2", NULL}, log),
            0);
    }
    /* w0 stops itself before a result write; stop its fencelock too (its
     * process group), so the lease runs out as in a whole-process pause. */
    for (int k = 0; k < 1000 && !(exists("paused") && exists("busy/w0")); k++)
        usleep(10 * 1000);
    cr_assert(exists("paused") && exists("busy/w0"), "w0 never reached its pause");
    cr_assert_eq(ts_proc_signal_group(&w[0], SIGSTOP), 0);
    busy = read_rel("busy/w0");
    cr_assert(busy && sscanf(busy, "%d %d", &pid, &task) == 2, "busy: %s", busy ? busy : "");
    free(busy);
    /* Another worker takes the task over after the TTL and finishes it. */
    for (int k = 0; k < 1000; k++) {
        char rel[32];

        snprintf(rel, sizeof rel, "done/%d", task);
        if (exists(rel))
            break;
        usleep(10 * 1000);
    }
    {
        char rel[32];

        snprintf(rel, sizeof rel, "done/%d", task);
        cr_assert(exists(rel), "task %d not taken over while w0 was paused", task);
    }
    /* w0's command resumes first and writes its result at once (the lock
     * client in the same paused process learns of the loss too late); then
     * its fencelock resumes. */
    cr_assert_eq(kill(-pid, SIGCONT), 0);
    for (int k = 0; k < 500; k++) {
        char *l = read_rel("worker.log");
        char want[32];
        int hit;

        snprintf(want, sizeof want, "w0 task %d ", task);
        hit = l && strstr(l, want);
        free(l);
        if (hit)
            break;
        usleep(10 * 1000);
    }
    cr_assert_eq(ts_proc_signal_group(&w[0], SIGCONT), 0);
    for (int i = 0; i < WORKERS; i++) {
        int st = 0;

        cr_assert_eq(ts_proc_wait(&w[i], 40000, &st), 0, "worker %d did not finish", i);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            ts_proc_dump_log(&w[i]);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker %d status %d", i, st);
    }
    return task;
}

Test(taskqueue, through_fenceproxy_no_result_written_by_two_workers)
{
    unsigned mask[TASKS + 1];
    char *l;
    int task;

    with_proxy = 1;
    cr_assert_eq(ts_proxy_init(&px, "taskq"), 0);
    cr_assert_eq(
        ts_proxy_write_conf(&px, ts_upstream_port(up),
                            "[route objects]\nprefix = /objects/\nresource = segments:2\n"),
        0);
    cr_assert_eq(ts_proxy_start(&px), 0, "fenceproxy did not start");
    task = run_pool();
    results(mask);
    for (int t = 1; t <= TASKS; t++)
        cr_assert(mask[t] != 0 && (mask[t] & (mask[t] - 1)) == 0,
                  "task %d: results from workers mask %#x", t, mask[t]);
    l = read_rel("worker.log");
    {
        char want[48];

        snprintf(want, sizeof want, "w0 task %d result 409", task);
        cr_assert(l && strstr(l, want), "the paused worker was not refused: %s", l ? l : "");
    }
    free(l);
}

Test(taskqueue, without_the_proxy_the_paused_task_is_written_twice)
{
    unsigned mask[TASKS + 1];
    int task, twice = 0;

    with_proxy = 0;
    task = run_pool();
    results(mask);
    for (int t = 1; t <= TASKS; t++) {
        cr_assert(mask[t] != 0, "task %d has no result", t);
        if (mask[t] & (mask[t] - 1))
            twice++;
    }
    cr_assert(mask[task] & 1u, "the paused worker's write did not reach the store");
    cr_assert(mask[task] & (mask[task] - 1), "task %d written by one worker only (mask %#x)", task,
              mask[task]);
    cr_assert_eq(twice, 1);
}

/* End to end, real parts only: the paused lock holder. Client A takes the lock
 * /objects/user42 with `fencelock run` (token T) and is frozen with SIGSTOP,
 * fencelock and its command both, past its 1 s lease. Client B, also
 * `fencelock run` around curl, takes the lock (T+1) and writes. A is resumed
 * and writes with T. Through fenceproxy that write gets 409, the file keeps
 * B's content and the audit log records the refusal with token T and highest
 * T+1. The control runs the same clients straight against nginx, where A's
 * late write lands: so this test shows it can fail. The story through the
 * proxy runs over each lock backend (Redis, Redlock over three
 * redis-servers, etcd, ZooKeeper: one parameterised test); the control runs
 * over Redis. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e_fixture.h"

static struct e2e e;
static struct ts_proc proc_a, proc_b;

static pid_t a_child; /* A's command: fencelock runs it in a process group of its own */
static int passed;

/* Starts `fencelock run /objects/user42 --ttl 1s --wait 10s -- sh -c SCRIPT
 * DIR URL` as a client named name, its output in DIR/TAG.log. */
static void start_client(struct ts_proc *p, const char *name, char *script, char *d, char *url,
                         const char *tag)
{
    char f[1200];
    char *argv[] = {(char *)e.fencelock,
                    "--backend",
                    e.backend,
                    "run",
                    "/objects/user42",
                    "--ttl",
                    "1s",
                    "--wait",
                    "10s",
                    "--",
                    "/bin/sh",
                    "-c",
                    script,
                    d,
                    url,
                    NULL};

    snprintf(f, sizeof f, "%s/%s.log", d, tag);
    cr_assert_eq(ts_proc_start(p, name, argv, NULL, f), 0);
}

static void start_servers(const char *lock)
{
    passed = 0;
    a_child = 0;
    memset(&proc_a, 0, sizeof proc_a);
    memset(&proc_b, 0, sizeof proc_b);
    /* A failed .init may skip .fini: clean up here first. */
    if (e2e_start_with(&e, "paused", lock) < 0) {
        e2e_stop(&e, 1);
        cr_assert_fail("the servers did not start with lock backend %s (see above)", lock);
    }
}

static void setup(void)
{
    start_servers("redis");
}

static void teardown(void)
{
    if (a_child > 0) {
        kill(-a_child, SIGCONT);
        kill(-a_child, SIGKILL);
    }
    ts_proc_stop(&proc_a, SIGKILL, 2000);
    ts_proc_stop(&proc_b, SIGKILL, 2000);
    if (!passed) {
        if (proc_a.log[0] != '\0')
            ts_proc_dump_log(&proc_a);
        if (proc_b.log[0] != '\0')
            ts_proc_dump_log(&proc_b);
    }
    e2e_stop(&e, !passed);
}

TestSuite(paused_holder, .init = setup, .fini = teardown, .timeout = 90);
/* The parameterised test starts its servers itself (an .init has no
 * parameter). */
TestSuite(paused_holder_over, .fini = teardown, .timeout = 90);

struct outcome {
    uint64_t tok_a, tok_b;
    int a_exit, b_exit;    /* fencelock exit codes */
    char *a_code, *b_code; /* HTTP status as curl printed it */
    char *a_body;
    char *file; /* what nginx stores at the object afterwards */
};

static void outcome_free(struct outcome *o)
{
    free(o->a_code);
    free(o->b_code);
    free(o->a_body);
    free(o->file);
}

static int exit_code(int st)
{
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

static char *must_read(const char *path)
{
    char *s = e2e_read_trimmed(path);

    cr_assert_not_null(s, "cannot read %s", path);
    return s;
}

/* The scenario against 127.0.0.1:port (the proxy or nginx itself), with the
 * client files in e.dir/tag. */
static void paused_holder(int port, const char *tag, struct outcome *o)
{
    char d[1024], f[1200], url[256];
    int st;
    long long stopped_at;

    memset(o, 0, sizeof *o);
    e2e_path(&e, tag, d, sizeof d);
    cr_assert_eq(mkdir(d, 0755), 0);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/objects/user42/data.txt", port);

    /* A's command reports its pid (= its process group) and token, waits
     * for the go file, then writes. It ignores SIGTERM: when A wakes up,
     * fencelock finds the lease gone and signals the command, but a signal
     * does not recall a write that is already under way when the process
     * froze, which is the case this stands for. What stops that write must
     * be the storage side. */
    {
        char script[] = "trap '' TERM\n"
                        "echo $$ >\"$0/a.pid\"\n"
                        "echo \"$FENCE_TOKEN\" >\"$0/a.token\"\n"
                        "n=0; while [ ! -e \"$0/a.go\" ] && [ $n -lt 1500 ]; do sleep 0.02; "
                        "n=$((n+1)); done\n"
                        "exec " E2E_CURL " -s --max-time 10 -o \"$0/a.body\" -w '%{http_code}' "
                        "-X PUT -H \"Fencing-Token: $FENCE_TOKEN\" --data-binary A-content \"$1\" "
                        ">\"$0/a.code\"\n";
        start_client(&proc_a, "client A (fencelock run)", script, d, url, "a");
    }
    snprintf(f, sizeof f, "%s/a.token", d);
    cr_assert_eq(e2e_wait_file(f, 10000), 0, "client A did not acquire the lock");
    snprintf(f, sizeof f, "%s/a.pid", d);
    cr_assert_eq(e2e_wait_file(f, 2000), 0);
    {
        char *s = must_read(f);
        a_child = (pid_t)atoi(s);
        free(s);
    }
    cr_assert_gt(a_child, 1);
    /* Freeze all of A: fencelock (so its watchdog stops renewing) and its
     * command. */
    cr_assert_eq(ts_proc_signal_group(&proc_a, SIGSTOP), 0);
    cr_assert_eq(kill(-a_child, SIGSTOP), 0);
    stopped_at = ts_now_ms();
    snprintf(f, sizeof f, "%s/a.token", d);
    {
        char *s = must_read(f);
        o->tok_a = strtoull(s, NULL, 10);
        free(s);
    }

    /* B waits for A's lease to run out in Redis, then writes. */
    {
        char script[] = "echo \"$FENCE_TOKEN\" >\"$0/b.token\"\n"
                        "exec " E2E_CURL " -s --max-time 10 -o /dev/null -w '%{http_code}' "
                        "-X PUT -H \"Fencing-Token: $FENCE_TOKEN\" --data-binary B-content \"$1\" "
                        ">\"$0/b.code\"\n";
        start_client(&proc_b, "client B (fencelock run)", script, d, url, "b");
    }
    cr_assert_eq(ts_proc_wait(&proc_b, 15000, &st), 0, "client B did not finish");
    o->b_exit = exit_code(st);
    snprintf(f, sizeof f, "%s/b.token", d);
    {
        char *s = must_read(f);
        o->tok_b = strtoull(s, NULL, 10);
        free(s);
    }
    snprintf(f, sizeof f, "%s/b.code", d);
    o->b_code = must_read(f);
    /* B could only get the lock once A's lease had expired: A was frozen
     * past its TTL. Keep A frozen a little longer than the TTL in any case. */
    while (ts_now_ms() - stopped_at < 1200)
        ts_sleep_ms(20);

    cr_assert_eq(kill(-a_child, SIGCONT), 0);
    cr_assert_eq(ts_proc_signal_group(&proc_a, SIGCONT), 0);
    snprintf(f, sizeof f, "%s/a.go", d);
    cr_assert_eq(e2e_touch(f), 0);
    cr_assert_eq(ts_proc_wait(&proc_a, 15000, &st), 0, "client A did not finish");
    o->a_exit = exit_code(st);
    a_child = 0;
    snprintf(f, sizeof f, "%s/a.code", d);
    cr_assert_eq(e2e_wait_file(f, 5000), 0, "client A's write did not complete");
    o->a_code = must_read(f);
    snprintf(f, sizeof f, "%s/a.body", d);
    o->a_body = e2e_read_trimmed(f);
    if (o->a_body == NULL)
        o->a_body = strdup("");
    snprintf(f, sizeof f, "%s/data/objects/user42/data.txt", e.dir);
    o->file = must_read(f);
}

/* Both clients took the lock in turn, B after A's lease ran out, and
 * fencelock A noticed on waking that it had lost the lock. */
static void assert_lock_story(const struct outcome *o)
{
    cr_assert_geq(o->tok_a, 1);
    cr_assert_gt(o->tok_b, o->tok_a, "B's token %" PRIu64 ", A's %" PRIu64, o->tok_b, o->tok_a);
    cr_assert_eq(o->b_exit, 0, "fencelock run for B exited %d", o->b_exit);
    cr_assert(strcmp(o->b_code, "201") == 0 || strcmp(o->b_code, "204") == 0, "B's write got %s",
              o->b_code);
    cr_assert_eq(o->a_exit, 75, "fencelock run for A exited %d, not 75 (lock lost)", o->a_exit);
}

/* Indexes, not pointers: parameters are copied into the test's process. */
static const char *const lock_backends[] = {"redis", "redlock", "etcd", "zk"};

ParameterizedTestParameters(paused_holder_over, stale_write_through_the_proxy_is_refused)
{
    static int idx[] = {0, 1, 2, 3};

    return cr_make_param_array(int, idx, sizeof idx / sizeof idx[0]);
}

ParameterizedTest(int *backend, paused_holder_over, stale_write_through_the_proxy_is_refused)
{
    struct outcome o;
    char want[512], tok[64], hi[64];
    const char *needles[] = {"\"event\":\"stale_token\"",
                             "\"route\":\"objects\"",
                             "\"resource\":\"/objects/user42\"",
                             tok,
                             hi,
                             "\"method\":\"PUT\"",
                             "\"path\":\"/objects/user42/data.txt\"",
                             NULL};
    long long deadline;
    int n = 0;

    start_servers(lock_backends[*backend]);
    paused_holder(e.px.port, "proxy", &o);
    assert_lock_story(&o);
    cr_assert_str_eq(o.a_code, "409", "A's stale write got %s, not 409", o.a_code);
    snprintf(want, sizeof want,
             "{\"error\":\"stale_token\",\"resource\":\"/objects/user42\",\"token\":%" PRIu64
             ",\"highest\":%" PRIu64 "}",
             o.tok_a, o.tok_b);
    cr_assert_str_eq(o.a_body, want);
    cr_assert_str_eq(o.file, "B-content", "the object holds '%s', not B's write", o.file);
    /* The audit writer flushes promptly but asynchronously. */
    snprintf(tok, sizeof tok, "\"token\":%" PRIu64 ",", o.tok_a);
    snprintf(hi, sizeof hi, "\"highest\":%" PRIu64 ",", o.tok_b);
    deadline = ts_now_ms() + 5000;
    while ((n = e2e_count_lines(e.px.audit, needles)) < 1 && ts_now_ms() < deadline)
        ts_sleep_ms(50);
    cr_assert_eq(n, 1, "the audit log %s holds %d records of A's refused write", e.px.audit, n);
    outcome_free(&o);
    cr_assert_eq(e2e_stop_proxy(&e), 0, "fenceproxy did not exit cleanly (see its log)");
    passed = 1;
}

Test(paused_holder, control_without_the_proxy_the_stale_write_lands)
{
    struct outcome o;

    paused_holder(e.nginx_port, "direct", &o);
    assert_lock_story(&o);
    cr_assert(strcmp(o.a_code, "204") == 0 || strcmp(o.a_code, "201") == 0,
              "A's late write straight to nginx got %s", o.a_code);
    cr_assert_str_eq(o.file, "A-content",
                     "without the proxy A's late write should have overwritten B's");
    outcome_free(&o);
    cr_assert_eq(e2e_stop_proxy(&e), 0, "fenceproxy did not exit cleanly (see its log)");
    passed = 1;
}

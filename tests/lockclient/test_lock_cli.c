/* The fencelock CLI (the real binary from the build tree) against a real
 * redis-server per test: output lines, exit codes 0/1/2/69/75, `run` with
 * its environment, exit status, signal forwarding, loss after SIGSTOP past
 * the TTL, and surviving a Redis restart. */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fencelock.h"
#include "lock_fixture.h"

static struct lf F;

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    cr_assert_eq(lf_setup(&F, "lockcli", NULL), 0, "redis fixture failed");
}

/* Persistent server: the lock key survives a restart as it would in a
 * deployment that follows docs/lockclient.md. */
static char *aof_args[] = {"--appendonly", "yes", "--appendfsync", "always", NULL};

static void setup_aof(void)
{
    signal(SIGPIPE, SIG_IGN);
    cr_assert_eq(lf_setup(&F, "lockcliaof", aof_args), 0, "redis fixture failed");
}

static void teardown(void)
{
    lf_teardown(&F);
}

TestSuite(lockcli, .init = setup, .fini = teardown, .timeout = 60);

static char OUT[4096], ERR[4096];

/* Runs fencelock --backend URL args... ; returns the exit code. */
#define CLI(...)                                                                                   \
    lf_cli(&F, (char *[]){"--backend", F.url, __VA_ARGS__, NULL}, NULL, OUT, sizeof OUT, ERR,      \
           sizeof ERR, 15000)

static int matches(const char *text, const char *re);

/* The token of a "free token=N" status line in OUT (asserts the line's
 * shape). */
static unsigned long long free_token(void)
{
    cr_assert(matches(OUT, "^free token=[0-9]+\n$"), "status line: '%s'", OUT);
    return strtoull(OUT + strlen("free token="), NULL, 10);
}

static int matches(const char *text, const char *re)
{
    regex_t r;
    int ok;

    cr_assert_eq(regcomp(&r, re, REG_EXTENDED | REG_NOSUB), 0, "bad regex %s", re);
    ok = regexec(&r, text, 0, NULL, 0) == 0;
    regfree(&r);
    return ok;
}

Test(lockcli, acquire_status_renew_release_lines_and_codes)
{
    char owner[FL_OWNER_MAX + 1], line[256];
    unsigned long long token;
    int rc;

    rc = CLI("acquire", "/objects/user42", "--ttl", "5s", "--wait", "0");
    lf_assert(&F, rc == 0, "acquire exit %d: %s", rc, ERR);
    cr_assert(matches(OUT, "^token=[1-9][0-9]* owner=[0-9a-f]{32} ttl_ms=5000\n$"), "line: '%s'",
              OUT);
    cr_assert_eq(sscanf(OUT, "token=%llu owner=%128s", &token, owner), 2);

    rc = CLI("status", "/objects/user42");
    cr_expect_eq(rc, 0);
    snprintf(line, sizeof line, "^held owner=%s ttl_ms=[0-9]+ token=%llu\n$", owner, token);
    cr_expect(matches(OUT, line), "status line: '%s'", OUT);

    /* Held: not acquired within --wait, exit 1 with a message. */
    rc = CLI("acquire", "/objects/user42", "--wait", "100ms");
    cr_expect_eq(rc, 1);
    cr_expect_str_eq(OUT, "");
    cr_expect(strstr(ERR, "/objects/user42") != NULL, "message: '%s'", ERR);

    /* Not the owner: exit 1, lock untouched. */
    cr_expect_eq(CLI("release", "/objects/user42", "--owner", "0123"), 1);
    cr_expect(strstr(ERR, "does not hold") != NULL, "message: '%s'", ERR);
    cr_expect_eq(CLI("renew", "/objects/user42", "--owner", "0123", "--ttl", "1m"), 1);

    /* Options may precede or follow the name; the owner renews and releases. */
    cr_expect_eq(CLI("renew", "--ttl", "60s", "/objects/user42", "--owner", owner), 0, "%s", ERR);
    cr_expect_eq(CLI("status", "/objects/user42"), 0);
    cr_expect(matches(OUT, "ttl_ms=(59|60)[0-9]{3} "), "renewed ttl: '%s'", OUT);
    cr_expect_eq(CLI("release", "/objects/user42", "--owner", owner), 0, "%s", ERR);
    cr_expect_str_eq(OUT, "");

    /* The refused acquire issued no token: the last one is still ours. */
    cr_expect_eq(CLI("status", "/objects/user42"), 0);
    snprintf(line, sizeof line, "free token=%llu\n", token);
    cr_expect_str_eq(OUT, line);
    cr_expect_eq(CLI("status", "/never/used"), 0);
    cr_expect_str_eq(OUT, "free token=0\n");

    cr_expect_eq(CLI("acquire", "/objects/user42", "--ttl=2s"), 0);
    cr_expect(matches(OUT, "^token=[1-9][0-9]* owner=[0-9a-f]{32} ttl_ms=2000\n$"), "line: '%s'",
              OUT);
    cr_expect_gt(strtoull(OUT + strlen("token="), NULL, 10), token, "not above %llu: '%s'", token,
                 OUT);
}

Test(lockcli, backend_from_environment)
{
    char env[96];
    char *envv[] = {env, NULL};
    int rc;

    snprintf(env, sizeof env, "FENCE_BACKEND=%s", F.url);
    rc = lf_cli(&F, (char *[]){"acquire", "envlock", "--ttl", "1s", NULL}, envv, OUT, sizeof OUT,
                ERR, sizeof ERR, 15000);
    cr_expect_eq(rc, 0, "exit %d: %s", rc, ERR);
    cr_expect(matches(OUT, "^token=[1-9][0-9]* owner="), "'%s'", OUT);
    /* --backend wins over the environment. */
    snprintf(env, sizeof env, "FENCE_BACKEND=redis://127.0.0.1:1");
    rc = lf_cli(&F, (char *[]){"--backend", F.url, "status", "envlock", NULL}, envv, OUT,
                sizeof OUT, ERR, sizeof ERR, 15000);
    cr_expect_eq(rc, 0, "exit %d: %s", rc, ERR);
}

struct usage_case {
    const char *why;
    char *args[8];
};

static const struct usage_case usage_cases[] = {
    {"no command", {NULL}},
    {"unknown command", {"grab", "x", NULL}},
    {"missing name", {"acquire", NULL}},
    {"two names", {"acquire", "a", "b", NULL}},
    {"bad duration", {"acquire", "x", "--ttl", "5 s", NULL}},
    {"duration with unknown unit", {"acquire", "x", "--wait", "3d", NULL}},
    {"zero ttl", {"acquire", "x", "--ttl", "0", NULL}},
    {"ttl without value", {"acquire", "x", "--ttl", NULL}},
    {"owner on acquire", {"acquire", "x", "--owner", "o", NULL}},
    {"renew without owner", {"renew", "x", NULL}},
    {"release without owner", {"release", "x", NULL}},
    {"wait on release", {"release", "x", "--owner", "o", "--wait", "1s", NULL}},
    {"status with ttl", {"status", "x", "--ttl", "1s", NULL}},
    {"run without --", {"run", "x", "true", NULL}},
    {"run with nothing after --", {"run", "x", "--", NULL}},
    {"unknown option", {"status", "x", "--frobnicate", NULL}},
};

Test(lockcli, usage_errors_exit_2)
{
    for (size_t i = 0; i < sizeof usage_cases / sizeof usage_cases[0]; i++) {
        char *args[12] = {"--backend", F.url};
        int n = 2, rc;

        for (int j = 0; usage_cases[i].args[j]; j++)
            args[n++] = usage_cases[i].args[j];
        args[n] = NULL;
        rc = lf_cli(&F, args, NULL, OUT, sizeof OUT, ERR, sizeof ERR, 15000);
        cr_expect_eq(rc, 2, "%s: exit %d", usage_cases[i].why, rc);
        cr_expect(strstr(ERR, "usage:") != NULL, "%s: no usage text: '%s'", usage_cases[i].why,
                  ERR);
    }
    cr_expect_eq(lf_cli(&F, (char *[]){"--backend", "memcached://h:1", "status", "x", NULL}, NULL,
                        OUT, sizeof OUT, ERR, sizeof ERR, 15000),
                 2, "unsupported scheme");
    cr_expect_eq(lf_cli(&F, (char *[]){"--bogus", "status", "x", NULL}, NULL, OUT, sizeof OUT, ERR,
                        sizeof ERR, 15000),
                 2);
    /* Nothing was acquired by any of these. */
    cr_expect_eq(CLI("status", "x"), 0);
    cr_expect_str_eq(OUT, "free token=0\n");
}

Test(lockcli, backend_down_exits_69_naming_the_address)
{
    char url[64], addr[32], marker[1100];
    int port = ts_free_port(), rc;

    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    snprintf(marker, sizeof marker, "%s/ran", F.dir);
    {
        const char *cmds[][3] = {{"acquire", "x", NULL}, {"status", "x", NULL}};

        for (int i = 0; i < 2; i++) {
            rc = lf_cli(&F, (char *[]){"--backend", url, (char *)cmds[i][0], "x", NULL}, NULL, OUT,
                        sizeof OUT, ERR, sizeof ERR, 15000);
            cr_expect_eq(rc, 69, "%s: exit %d", cmds[i][0], rc);
            cr_expect(strstr(ERR, addr) != NULL, "%s: message lacks %s: '%s'", cmds[i][0], addr,
                      ERR);
        }
    }
    rc = lf_cli(&F, (char *[]){"--backend", url, "release", "x", "--owner", "o", NULL}, NULL, OUT,
                sizeof OUT, ERR, sizeof ERR, 15000);
    cr_expect_eq(rc, 69);
    rc = lf_cli(&F, (char *[]){"--backend", url, "run", "x", "--", "/usr/bin/touch", marker, NULL},
                NULL, OUT, sizeof OUT, ERR, sizeof ERR, 15000);
    cr_expect_eq(rc, 69, "run: exit %d", rc);
    cr_expect(strstr(ERR, addr) != NULL, "run: '%s'", ERR);
    cr_expect_neq(access(marker, F_OK), 0, "command ran without the lock");
}

Test(lockcli, run_sets_environment_releases_and_passes_exit_status)
{
    char script[2600], envfile[1100], *text;
    unsigned long long tok = 0, t2;
    char lock[128], owner[128];
    int rc;

    snprintf(envfile, sizeof envfile, "%s/env", F.dir);
    snprintf(script, sizeof script, "echo \"$FENCE_TOKEN $FENCE_LOCK $FENCE_OWNER\" > %s; exit 3",
             envfile);
    rc = CLI("run", "/objects/r", "--ttl", "2s", "--", "/bin/sh", "-c", script);
    lf_assert(&F, rc == 3, "run exit %d, want 3: %s", rc, ERR);
    text = ts_read_file(envfile, NULL);
    cr_assert_not_null(text);
    cr_assert_eq(sscanf(text, "%llu %127s %127s", &tok, lock, owner), 3, "env: '%s'", text);
    cr_expect_gt(tok, 0);
    cr_expect_str_eq(lock, "/objects/r");
    cr_expect(matches(owner, "^[0-9a-f]{32}$"), "owner '%s'", owner);
    free(text);
    cr_expect_eq(CLI("status", "/objects/r"), 0);
    cr_expect_eq(free_token(), tok, "not released after run: '%s'", OUT);

    /* Killed by a signal: 128 + signal number. PATH lookup for the command.
     * Each run holds a token above the one before. */
    rc = CLI("run", "/objects/r", "--", "sh", "-c", "kill -KILL $$");
    cr_expect_eq(rc, 128 + SIGKILL, "exit %d", rc);
    cr_expect_eq(CLI("status", "/objects/r"), 0);
    t2 = free_token();
    cr_expect_gt(t2, tok);
    rc = CLI("run", "/objects/r", "--", "true");
    cr_expect_eq(rc, 0);
    cr_expect_eq(CLI("status", "/objects/r"), 0);
    cr_expect_gt(free_token(), t2, "'%s'", OUT);

    /* Held elsewhere with --wait 0: exit 1 and the command never runs. */
    cr_expect_eq(CLI("acquire", "/objects/r", "--ttl", "10s"), 0);
    rc = CLI("run", "/objects/r", "--wait", "0", "--", "/bin/sh", "-c", "exit 9");
    cr_expect_eq(rc, 1, "exit %d", rc);
    /* A missing command: 127 as in the shell, lock released. */
    rc = CLI("run", "/objects/other", "--", "/nonexistent/cmd");
    cr_expect_eq(rc, 127, "exit %d", rc);
    cr_expect_eq(CLI("status", "/objects/other"), 0);
    cr_expect_gt(free_token(), 0, "'%s'", OUT);
}

/* Starts `fencelock run NAME --ttl TTL -- sh -c SCRIPT` in the background. */
static void start_run(struct ts_proc *p, const char *name, const char *ttl, const char *script)
{
    char log[1100];
    char *argv[] = {(char *)ts_build_path("lockclient/fencelock"),
                    "--backend",
                    F.url,
                    "run",
                    (char *)name,
                    "--ttl",
                    (char *)ttl,
                    "--",
                    "/bin/sh",
                    "-c",
                    (char *)script,
                    NULL};

    cr_assert_not_null(argv[0]);
    snprintf(log, sizeof log, "%s/run.log", F.dir);
    cr_assert_eq(ts_proc_start(p, "fencelock-run", argv, NULL, log), 0);
}

/* Waits for a pid file written by the command; returns the pid. */
static pid_t wait_pidfile(const char *path, struct ts_proc *run)
{
    int64_t t0 = fl_now_ms();
    char *text = NULL;
    pid_t pid = 0;

    while (fl_now_ms() - t0 < 5000) {
        text = ts_read_file(path, NULL);
        if (text && strchr(text, '\n'))
            break;
        free(text);
        text = NULL;
        ts_sleep_ms(10);
    }
    if (text == NULL)
        ts_proc_dump_log(run);
    cr_assert_not_null(text, "command did not start");
    pid = (pid_t)atol(text);
    free(text);
    return pid;
}

static void sigstop_past_ttl(int other_takes_lock)
{
    struct ts_proc run;
    struct fl_client *c = fl_client_new(F.url, NULL, 0);
    struct fl_lease *other = NULL;
    struct fl_lock_status st;
    char script[2600], pidfile[1100];
    uint64_t first;
    int64_t t0;
    pid_t child;
    int status = 0;

    cr_assert_not_null(c);
    snprintf(pidfile, sizeof pidfile, "%s/child.pid", F.dir);
    snprintf(script, sizeof script, "echo $$ > %s; exec sleep 30", pidfile);
    start_run(&run, "/objects/stopped", "500ms", script);
    child = wait_pidfile(pidfile, &run);
    cr_assert_gt(child, 0);
    cr_assert_eq(fl_status(c, "/objects/stopped", &st), FL_OK);
    cr_expect_eq(st.held, 1);
    first = st.token;
    cr_expect_gt(first, 0);

    cr_assert_eq(ts_proc_signal(&run, SIGSTOP), 0);
    ts_sleep_ms(1100); /* more than two TTLs */
    cr_assert_eq(fl_status(c, "/objects/stopped", &st), FL_OK);
    lf_assert(&F, st.held == 0, "lock still held while its holder is stopped");
    if (other_takes_lock)
        cr_assert_eq(fl_acquire(c, "/objects/stopped", 10000, 0, &other), FL_OK);
    cr_expect_eq(kill(child, 0), 0, "command died while fencelock was stopped");

    t0 = fl_now_ms();
    cr_assert_eq(ts_proc_signal(&run, SIGCONT), 0);
    if (ts_proc_wait(&run, 4000, &status) < 0) {
        ts_proc_dump_log(&run);
        ts_proc_stop(&run, SIGKILL, 1000);
        cr_assert_fail("fencelock kept running after SIGCONT past its TTL");
    }
    /* At once: well before the 5 s grace and without waiting for a renewal. */
    cr_expect_lt(fl_now_ms() - t0, 1000, "took %" PRId64 " ms", fl_now_ms() - t0);
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 75)) {
        ts_proc_dump_log(&run);
        cr_assert_fail("status %d, want exit 75", status);
    }
    cr_expect(kill(child, 0) < 0 && errno == ESRCH, "command %d still alive", (int)child);
    cr_assert_eq(fl_status(c, "/objects/stopped", &st), FL_OK);
    if (other_takes_lock) {
        cr_expect_eq(st.held, 1);
        cr_expect_str_eq(st.owner, other->owner, "the new holder's lock was touched");
        cr_expect_eq(st.token, other->token);
        cr_expect_gt(other->token, first, "the stopped holder had %" PRIu64, first);
    } else {
        cr_expect_eq(st.held, 0);
    }
    {
        char *log = ts_read_file(run.log, NULL);

        cr_expect(log && strstr(log, "lost lock") != NULL, "no loss message: %s", log ? log : "");
        free(log);
    }
    fl_lease_free(&other);
    fl_client_free(&c);
}

Test(lockcli, run_stopped_past_ttl_kills_command_and_exits_75)
{
    sigstop_past_ttl(0);
}

Test(lockcli, run_stopped_past_ttl_while_another_owner_took_the_lock)
{
    sigstop_past_ttl(1);
}

Test(lockcli, run_forwards_sigterm_to_the_command)
{
    struct ts_proc run;
    char script[2600], pidfile[1100];
    int status = 0;

    snprintf(pidfile, sizeof pidfile, "%s/child.pid", F.dir);
    snprintf(script, sizeof script, "trap 'exit 7' TERM; echo $$ > %s; sleep 30 & wait", pidfile);
    start_run(&run, "/objects/fwd", "2s", script);
    wait_pidfile(pidfile, &run);
    cr_assert_eq(ts_proc_signal(&run, SIGTERM), 0);
    if (ts_proc_wait(&run, 5000, &status) < 0) {
        ts_proc_dump_log(&run);
        ts_proc_stop(&run, SIGKILL, 1000);
        cr_assert_fail("fencelock did not end after SIGTERM");
    }
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 7, "status %d", status);
    cr_expect_eq(CLI("status", "/objects/fwd"), 0);
    cr_expect_gt(free_token(), 0, "not released: '%s'", OUT);
}

Test(lockcli_aof, run_survives_redis_restart_within_ttl, .init = setup_aof, .fini = teardown,
     .timeout = 60)
{
    struct ts_proc run;
    char script[2600], pidfile[1100], done[1100], *text;
    unsigned long long held;
    int status = 0;

    snprintf(pidfile, sizeof pidfile, "%s/child.pid", F.dir);
    snprintf(done, sizeof done, "%s/done", F.dir);
    snprintf(script, sizeof script, "echo $$ > %s; sleep 2.5; echo $FENCE_TOKEN > %s", pidfile,
             done);
    start_run(&run, "/objects/restart", "1500ms", script);
    wait_pidfile(pidfile, &run);
    ts_sleep_ms(400);
    cr_assert_geq(ts_proc_stop(&F.redis, SIGTERM, 5000), 0);
    ts_sleep_ms(300); /* renewals fail meanwhile */
    cr_assert_eq(lf_restart_redis(&F, aof_args), 0);
    if (ts_proc_wait(&run, 10000, &status) < 0) {
        ts_proc_dump_log(&run);
        ts_proc_stop(&run, SIGKILL, 1000);
        cr_assert_fail("run did not finish");
    }
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        ts_proc_dump_log(&run);
        ts_proc_dump_log(&F.redis);
        cr_assert_fail("run status %d, want exit 0", status);
    }
    text = ts_read_file(done, NULL);
    cr_assert_not_null(text, "command did not complete");
    held = strtoull(text, NULL, 10);
    free(text);
    cr_expect_gt(held, 0);
    cr_expect_eq(CLI("status", "/objects/restart"), 0);
    cr_expect_eq(free_token(), held, "lock not released or token lost: %s", OUT);
}

/* fl_cli: the fencelock command line tool over libfencelock. Parses
 * `fencelock [--backend URL] COMMAND ARGS...`, maps results to exit codes
 * (0 ok, 1 not acquired / not owner, 2 usage, 69 backend unreachable, 70
 * internal error, 75 lock lost during run) and implements `run`: acquire
 * (exclusive, --shared or one of --permits N slots), run the command in its
 * own process group with FENCE_TOKEN/FENCE_LOCK/FENCE_OWNER (and FENCE_SLOT)
 * set, renew with the watchdog, and stop the command when the lock is lost;
 * `elect` does the same as a leader, campaigning again with --again, and
 * `leader` prints the current leader. The main thread waits for signals with sigtimedwait (all
 * handled signals stay blocked), so there are no signal handlers. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fc_duration.h"
#include "fencelock.h"
#include "fl_inject.h"

#define EX_OK           0
#define EX_NOLOCK       1
#define EX_USAGE_       2
#define EX_UNAVAILABLE_ 69
#define EX_SOFTWARE_    70
#define EX_LOST         75
#define DEFAULT_BACKEND "redis://127.0.0.1:6379"
#define GRACE_MS        5000

extern char **environ;

struct opts {
    const char *name;
    const char *owner;
    uint64_t ttl_ms;
    uint64_t wait_ms;
    int has_ttl, has_wait, has_owner;
    int http_proxy; /* run --http-proxy: the token injector */
    const char *id; /* elect --id: the candidate id */
    int again;      /* elect --again: campaign again after a loss */
    int shared;     /* run --shared: a read lock */
    unsigned permits; /* run --permits N: a semaphore slot (0: not) */
    char id_buf[FL_ID_MAX + 1];
    char **cmd;     /* run: after "--" */
};

static void usage(FILE *f)
{
    fprintf(f, "usage: fencelock [--backend URL] COMMAND ARGS...\n"
               "  acquire NAME [--ttl 30s] [--wait 10s]\n"
               "  renew NAME --owner ID [--ttl 30s]\n"
               "  release NAME --owner ID\n"
               "  status NAME\n"
               "  run NAME [--ttl 30s] [--wait 10s] [--shared] [--http-proxy] -- CMD ARGS...\n"
               "      --shared: a read lock (readers share; run without it is the write lock)\n"
               "      --permits N: one of N slots NAME#i (FENCE_SLOT=i, FENCE_LOCK=NAME#i)\n"
               "      --http-proxy: CMD's plain-HTTP requests go through a local proxy\n"
               "      that adds Fencing-Token (HTTP_PROXY and http_proxy are set)\n"
               "  elect NAME [--id ID] [--ttl 30s] [--wait T] [--again] [--http-proxy] -- CMD ARGS...\n"
               "      runs CMD while leader, FENCE_TOKEN = the leader's epoch\n"
               "  leader NAME\n"
               "backend: --backend URL, else $FENCE_BACKEND, else " DEFAULT_BACKEND "\n"
               "  redis://[[user]:password@]host[:port][/db], etcd://host:port[,...],\n"
               "  zk://host:port[,...][/chroot], redlock://host:port,host:port,host:port[,...]\n"
               "exit: 0 ok, 1 not acquired/not owner, 2 usage, 69 backend unreachable,\n"
               "      75 lock lost during run\n");
}

static int exit_for(int rc)
{
    switch (rc) {
    case FL_OK:
        return EX_OK;
    case FL_ERR_NOT_ACQUIRED:
    case FL_ERR_NOT_OWNER:
        return EX_NOLOCK;
    case FL_ERR_BACKEND:
        return EX_UNAVAILABLE_;
    case FL_ERR_INVALID:
        return EX_USAGE_;
    default:
        return EX_SOFTWARE_;
    }
}

/* Takes the value of option opt from "--opt=V" in arg or from the next word.
 * Returns the value (borrowed from argv) or NULL. */
static const char *opt_value(const char *opt, int argc, char **argv, int *i)
{
    size_t n = strlen(opt);
    const char *a = argv[*i];

    if (strncmp(a, opt, n) != 0)
        return NULL;
    if (a[n] == '=')
        return a + n + 1;
    if (a[n] != '\0' || *i + 1 >= argc)
        return NULL;
    (*i)++;
    return argv[*i];
}

static int parse_duration(const char *what, const char *v, uint64_t *out)
{
    if (v == NULL || fc_duration_parse(v, out) < 0) {
        fprintf(stderr, "fencelock: bad %s '%s' (want e.g. 500ms, 30s, 5m, 1h)\n", what,
                v ? v : "");
        return -1;
    }
    return 0;
}

/* Parses the words after COMMAND. allow is a set of letters: t ttl, w wait,
 * o owner, p --http-proxy, c command after "--". 0 / -1 (message printed). */
static int parse_args(int argc, char **argv, const char *allow, struct opts *o)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];

        if (strcmp(a, "--") == 0 && strchr(allow, 'c')) {
            o->cmd = argv + i + 1;
            if (argv[i + 1] == NULL) {
                fprintf(stderr, "fencelock: missing command after --\n");
                return -1;
            }
            break;
        }
        if (strncmp(a, "--ttl", 5) == 0 && strchr(allow, 't')) {
            if (parse_duration("--ttl", opt_value("--ttl", argc, argv, &i), &o->ttl_ms) < 0)
                return -1;
            if (o->ttl_ms == 0) {
                fprintf(stderr, "fencelock: --ttl must be more than 0\n");
                return -1;
            }
            o->has_ttl = 1;
        } else if (strncmp(a, "--wait", 6) == 0 && strchr(allow, 'w')) {
            if (parse_duration("--wait", opt_value("--wait", argc, argv, &i), &o->wait_ms) < 0)
                return -1;
            o->has_wait = 1;
        } else if (strncmp(a, "--owner", 7) == 0 && strchr(allow, 'o')) {
            if ((o->owner = opt_value("--owner", argc, argv, &i)) == NULL || o->owner[0] == '\0') {
                fprintf(stderr, "fencelock: --owner needs an id\n");
                return -1;
            }
            o->has_owner = 1;
        } else if (strncmp(a, "--id", 4) == 0 && strchr(allow, 'i')) {
            if ((o->id = opt_value("--id", argc, argv, &i)) == NULL || o->id[0] == '\0') {
                fprintf(stderr, "fencelock: --id needs an id\n");
                return -1;
            }
        } else if (strncmp(a, "--permits", 9) == 0 && strchr(allow, 's')) {
            const char *v = opt_value("--permits", argc, argv, &i);
            char *end = NULL;
            unsigned long n = v ? strtoul(v, &end, 10) : 0;

            if (v == NULL || *v == '\0' || *end != '\0' || n == 0 || n > FL_PERMITS_MAX) {
                fprintf(stderr, "fencelock: --permits needs a number 1..%d\n", FL_PERMITS_MAX);
                return -1;
            }
            o->permits = (unsigned)n;
        } else if (strcmp(a, "--shared") == 0 && strchr(allow, 's')) {
            o->shared = 1;
        } else if (strcmp(a, "--again") == 0 && strchr(allow, 'a')) {
            o->again = 1;
        } else if (strcmp(a, "--http-proxy") == 0 && strchr(allow, 'p')) {
            o->http_proxy = 1;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "fencelock: unknown or misplaced option '%s'\n", a);
            return -1;
        } else if (o->name == NULL) {
            o->name = a;
        } else {
            fprintf(stderr, "fencelock: unexpected argument '%s'\n", a);
            return -1;
        }
    }
    if (o->name == NULL || o->name[0] == '\0') {
        fprintf(stderr, "fencelock: missing lock name\n");
        return -1;
    }
    if (strchr(allow, 'o') && !o->has_owner) {
        fprintf(stderr, "fencelock: --owner ID is required\n");
        return -1;
    }
    if (strchr(allow, 'c') && o->cmd == NULL) {
        fprintf(stderr, "fencelock: this command needs -- CMD ARGS...\n");
        return -1;
    }
    return 0;
}

static int fail(struct fl_client *c, int rc)
{
    fprintf(stderr, "fencelock: %s\n",
            fl_client_error(c)[0] ? fl_client_error(c) : fl_strerror(rc));
    return exit_for(rc);
}

#define ENV_EXTRA 8

/* Whether the environment entry e is the variable name (any value). */
static int env_is(const char *e, const char *name)
{
    size_t n = strlen(name);

    return strncmp(e, name, n) == 0 && e[n] == '=';
}

/* Variables the command gets from us, replacing its own: the lease's, and
 * with --http-proxy the proxy settings (NO_PROXY too, so that no host,
 * loopback included, bypasses the injector). */
static int env_ours(const char *e, int proxy)
{
    static const char *const lease[] = {"FENCE_TOKEN", "FENCE_LOCK", "FENCE_OWNER", "FENCE_SLOT",
                                        NULL};
    static const char *const px[] = {"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy",
                                     "NO_PROXY",   "no_proxy",   "ALL_PROXY",   "all_proxy",
                                     NULL};

    for (int i = 0; lease[i]; i++)
        if (env_is(e, lease[i]))
            return 1;
    for (int i = 0; proxy && px[i]; i++)
        if (env_is(e, px[i]))
            return 1;
    return 0;
}

/* Builds the command's environment: ours minus the variables env_ours
 * names, plus the lease's and, when proxy_port > 0, HTTP_PROXY, http_proxy,
 * HTTPS_PROXY and https_proxy pointing at the injector (HTTPS goes there too
 * so that it is refused with a clear 501 instead of leaving unfenced).
 * Returns a malloc'd array of borrowed or malloc'd strings; the new ones are
 * in extra[] for freeing. Done before fork because the watchdog thread
 * already runs and the child may only call async-signal-safe functions. */
static char **build_env(const struct fl_lease *l, int proxy_port, int slot,
                        char *extra[ENV_EXTRA])
{
    static const char *const pvars[] = {"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"};
    size_t n = 0, k = 0, ne = 3;
    char **env;

    while (environ[n])
        n++;
    env = calloc(n + ENV_EXTRA + 1, sizeof *env);
    if (env == NULL)
        return NULL;
    if (asprintf(&extra[0], "FENCE_TOKEN=%" PRIu64, l->token) < 0)
        extra[0] = NULL;
    if (asprintf(&extra[1], "FENCE_LOCK=%s", l->name) < 0)
        extra[1] = NULL;
    if (asprintf(&extra[2], "FENCE_OWNER=%s", l->owner) < 0)
        extra[2] = NULL;
    if (slot >= 0 && asprintf(&extra[ne++], "FENCE_SLOT=%d", slot) < 0)
        extra[ne - 1] = NULL;
    for (size_t i = 0; proxy_port > 0 && i < 4; i++, ne++)
        if (asprintf(&extra[ne], "%s=http://127.0.0.1:%d", pvars[i], proxy_port) < 0)
            extra[ne] = NULL;
    for (size_t i = 0; i < ne; i++) {
        if (extra[i] == NULL) {
            free(env);
            return NULL;
        }
    }
    for (size_t i = 0; i < n; i++)
        if (!env_ours(environ[i], proxy_port > 0))
            env[k++] = environ[i];
    for (size_t i = 0; i < ne; i++)
        env[k++] = extra[i];
    env[k] = NULL;
    return env;
}

/* fl_inject's view of the lease: lost once the watchdog says so (which
 * includes the monotonic expiry). Thread-safe. */
static int inject_lost(void *arg)
{
    return fl_watchdog_lost(arg) != 0;
}

static void on_lost(const char *name, enum fl_loss why, void *arg)
{
    /* Wakes the main thread's sigtimedwait at once (kill is thread-safe). */
    (void)name;
    (void)why;
    (void)arg;
    kill(getpid(), SIGUSR1);
}

static int status_to_exit(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return EX_SOFTWARE_;
}

/* Sends SIGTERM to the child's group, waits up to GRACE_MS, then SIGKILL. */
static void terminate_child(pid_t child, const sigset_t *set)
{
    int64_t deadline = fl_now_ms() + GRACE_MS;
    struct timespec ts = {0, 50 * 1000000L};
    int st;

    kill(-child, SIGTERM);
    kill(child, SIGTERM);
    while (fl_now_ms() < deadline) {
        pid_t r = waitpid(child, &st, WNOHANG);

        if (r == child || (r < 0 && errno == ECHILD))
            goto reap_group;
        sigtimedwait(set, NULL, &ts);
    }
    fprintf(stderr, "fencelock: command ignored SIGTERM for %d s, sending SIGKILL\n",
            GRACE_MS / 1000);
    kill(-child, SIGKILL);
    kill(child, SIGKILL);
    while (waitpid(child, &st, 0) < 0 && errno == EINTR)
        ;
    return;
reap_group:
    kill(-child, SIGKILL); /* stragglers the command left in its group */
}

/* The signals the main loop waits for; blocked before any thread exists, so
 * every thread inherits the mask and the signals queue for sigtimedwait. */
static void block_signals(sigset_t *set, sigset_t *old)
{
    sigemptyset(set);
    sigaddset(set, SIGCHLD);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGUSR1);
    sigprocmask(SIG_BLOCK, set, old);
}

/* Runs o->cmd while lease l is held: the watchdog renews it, CMD is stopped
 * when it is lost (*lost = 1, EX_LOST, nothing released), else l is released
 * when CMD exits and CMD's status returned. l is borrowed (its expiry is
 * updated). set/old from block_signals. */
static int hold_and_run(struct fl_client *c, const struct opts *o, struct fl_lease *l,
                        const sigset_t *set_in, const sigset_t *old, int *lost_out, int slot)
{
    struct fl_watchdog *w = NULL;
    struct fl_inject *inj = NULL;
    char **env = NULL, *extra[ENV_EXTRA] = {NULL};
    char ierr[256];
    sigset_t set = *set_in;
    pid_t child = -1;
    int rc, ex = EX_SOFTWARE_, st = 0, lost = 0;

    w = fl_watchdog_start(c, l, on_lost, NULL);
    if (w == NULL) {
        fprintf(stderr, "fencelock: cannot start the renewal thread\n");
        goto release;
    }
    /* The injector asks the watchdog before each request, so it must stop
     * before the watchdog does (every path below stops it first). */
    if (o->http_proxy &&
        (inj = fl_inject_start(0, l->token, l->name, inject_lost, w, ierr, sizeof ierr)) == NULL) {
        fprintf(stderr, "fencelock: %s\n", ierr);
        goto release;
    }
    env = build_env(l, inj ? fl_inject_port(inj) : 0, slot, extra);
    if (env == NULL) {
        fprintf(stderr, "fencelock: out of memory\n");
        goto release;
    }
    child = fork();
    if (child < 0) {
        fprintf(stderr, "fencelock: fork: %s\n", strerror(errno));
        goto release;
    }
    if (child == 0) {
        /* Own process group, so a loss stops the whole command tree. */
        setpgid(0, 0);
        signal(SIGPIPE, SIG_DFL);
        sigprocmask(SIG_SETMASK, old, NULL);
        execvpe(o->cmd[0], o->cmd, env);
        dprintf(2, "fencelock: cannot run %s: %s\n", o->cmd[0], strerror(errno));
        _exit(errno == ENOENT ? 127 : 126);
    }
    setpgid(child, child);

    for (;;) {
        struct timespec ts = {0, 100 * 1000000L};
        siginfo_t si;
        int sig, why;
        pid_t r;

        r = waitpid(child, &st, WNOHANG);
        if (r == child)
            break;
        /* Watchdog first, then the clock: after SIGSTOP/SIGCONT past the TTL
         * the expiry alone decides, before any renewal is tried. */
        if ((why = fl_watchdog_lost(w)) != 0) {
            fprintf(stderr, "fencelock: lost lock '%s' (%s); stopping the command\n", o->name,
                    why == FL_LOST_NOT_OWNER ? "another owner or no key" : "lease expired");
            lost = 1;
            terminate_child(child, &set);
            child = -1;
            ex = EX_LOST;
            goto stop;
        }
        sig = sigtimedwait(&set, &si, &ts);
        if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
            kill(-child, sig);
            kill(child, sig);
        }
    }
    child = -1;
    ex = status_to_exit(st);
stop:
    fl_inject_stop(&inj);
    fl_watchdog_stop(&w, l);
    if (lost)
        goto out; /* not ours any more: nothing to release */
    rc = fl_release(c, l);
    if (rc != FL_OK)
        fprintf(stderr, "fencelock: warning: release of '%s' failed: %s\n", o->name,
                fl_client_error(c));
    goto out;
release:
    fl_inject_stop(&inj);
    fl_watchdog_stop(&w, l);
    fl_release(c, l);
out:
    *lost_out = lost;
    free(env);
    for (int i = 0; i < ENV_EXTRA; i++)
        free(extra[i]);
    return ex;
}

static int cmd_run(struct fl_client *c, const struct opts *o)
{
    struct fl_lease *l = NULL;
    sigset_t set, old;
    unsigned slot = 0;
    int rc, ex, lost = 0;

    block_signals(&set, &old);
    if (o->shared && o->permits) {
        fprintf(stderr, "fencelock: --shared and --permits exclude each other\n");
        return EX_USAGE_;
    }
    if (o->permits)
        rc = fl_acquire_permit(c, o->name, o->permits, o->ttl_ms, o->wait_ms, &l, &slot);
    else if (o->shared)
        rc = fl_acquire_shared(c, o->name, o->ttl_ms, o->wait_ms, &l);
    else
        rc = fl_acquire(c, o->name, o->ttl_ms, o->wait_ms, &l);
    if (rc != FL_OK)
        ex = fail(c, rc);
    else
        ex = hold_and_run(c, o, l, &set, &old, &lost, o->permits ? (int)slot : -1);
    fl_lease_free(&l);
    return ex;
}

#define CAMPAIGN_SLICE_MS 1000

/* Campaigns for o->name until elected, o->wait_ms has passed (only with
 * --wait) or SIGTERM/SIGINT/SIGHUP arrive (checked between slices of
 * CAMPAIGN_SLICE_MS, as the wait happens inside the backend). FL_OK with
 * *out, FL_ERR_NOT_ACQUIRED with *sig set when a signal ended it. */
static int campaign(struct fl_client *c, const struct opts *o, const sigset_t *set,
                    struct fl_lease **out, int *sig)
{
    int64_t deadline = fl_now_ms() + (int64_t)o->wait_ms;

    *sig = 0;
    for (;;) {
        struct timespec zero = {0, 0};
        int64_t left = o->has_wait ? deadline - fl_now_ms() : CAMPAIGN_SLICE_MS;
        int rc, s;

        if (left < 0)
            left = 0;
        rc = fl_campaign(c, o->name, o->id, o->ttl_ms,
                         (uint64_t)(left < CAMPAIGN_SLICE_MS ? left : CAMPAIGN_SLICE_MS), out);
        if (rc == FL_ERR_BACKEND && o->again) {
            /* A persistent campaigner outlives a backend error (an outage, a
             * ZooKeeper session that expired during a pause and is replaced
             * on the next call): it tries again a slice later. */
            struct timespec slice = {CAMPAIGN_SLICE_MS / 1000, 0};

            fprintf(stderr, "fencelock: %s; campaigning again in %d ms\n", fl_client_error(c),
                    CAMPAIGN_SLICE_MS);
            if ((s = sigtimedwait(set, NULL, &slice)) == SIGTERM || s == SIGINT || s == SIGHUP) {
                *sig = s;
                return FL_ERR_NOT_ACQUIRED;
            }
            rc = FL_ERR_NOT_ACQUIRED;
        }
        if (rc != FL_ERR_NOT_ACQUIRED || (o->has_wait && fl_now_ms() >= deadline))
            return rc;
        while ((s = sigtimedwait(set, NULL, &zero)) > 0) {
            if (s == SIGTERM || s == SIGINT || s == SIGHUP) {
                *sig = s;
                return FL_ERR_NOT_ACQUIRED;
            }
        }
    }
}

/* elect: campaign, run CMD as leader, stop it on loss (75) or, with
 * --again, campaign again and start CMD anew. */
static int cmd_elect(struct fl_client *c, const struct opts *o)
{
    sigset_t set, old;
    int ex = EX_SOFTWARE_;

    block_signals(&set, &old);
    for (;;) {
        struct fl_lease *l = NULL;
        int rc, lost = 0, sig = 0;

        rc = campaign(c, o, &set, &l, &sig);
        if (rc != FL_OK) {
            ex = sig ? 128 + sig : fail(c, rc);
            break;
        }
        fprintf(stderr, "fencelock: elected leader of '%s' as %s, epoch %" PRIu64 "\n", o->name,
                o->id, l->token);
        ex = hold_and_run(c, o, l, &set, &old, &lost, -1);
        fl_lease_free(&l);
        if (!lost || !o->again)
            break;
        fprintf(stderr, "fencelock: campaigning again for '%s'\n", o->name);
    }
    return ex;
}

int main(int argc, char **argv)
{
    const char *backend = getenv("FENCE_BACKEND"), *cmd;
    struct fl_client *c = NULL;
    struct opts o;
    char err[512];
    int i = 1, rc, ex = EX_USAGE_;

    memset(&o, 0, sizeof o);
    o.ttl_ms = 30000;
    o.wait_ms = 10000;
    if (backend == NULL || backend[0] == '\0')
        backend = DEFAULT_BACKEND;
    /* hiredis writes without MSG_NOSIGNAL: a dead socket must give EPIPE. */
    signal(SIGPIPE, SIG_IGN);

    while (i < argc && argv[i][0] == '-') {
        const char *v;

        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return EX_OK;
        }
        if ((v = opt_value("--backend", argc, argv, &i)) == NULL) {
            fprintf(stderr, "fencelock: unknown option '%s'\n", argv[i]);
            goto usage;
        }
        backend = v;
        i++;
    }
    if (i >= argc) {
        fprintf(stderr, "fencelock: missing command\n");
        goto usage;
    }
    cmd = argv[i++];
    {
        const char *allow;

        if (strcmp(cmd, "acquire") == 0)
            allow = "tw";
        else if (strcmp(cmd, "renew") == 0)
            allow = "to";
        else if (strcmp(cmd, "release") == 0)
            allow = "o";
        else if (strcmp(cmd, "status") == 0)
            allow = "";
        else if (strcmp(cmd, "run") == 0)
            allow = "twpcs";
        else if (strcmp(cmd, "elect") == 0)
            allow = "twiacp";
        else if (strcmp(cmd, "leader") == 0)
            allow = "";
        else {
            fprintf(stderr, "fencelock: unknown command '%s'\n", cmd);
            goto usage;
        }
        if (parse_args(argc - i, argv + i, allow, &o) < 0)
            goto usage;
    }
    c = fl_client_new(backend, err, sizeof err);
    if (c == NULL) {
        fprintf(stderr, "fencelock: %s\n", err);
        goto usage;
    }

    if (strcmp(cmd, "acquire") == 0) {
        struct fl_lease *l = NULL;

        rc = fl_acquire(c, o.name, o.ttl_ms, o.wait_ms, &l);
        if (rc == FL_OK)
            printf("token=%" PRIu64 " owner=%s ttl_ms=%" PRIu64 "\n", l->token, l->owner,
                   l->ttl_ms);
        fl_lease_free(&l);
        ex = rc == FL_OK ? EX_OK : fail(c, rc);
    } else if (strcmp(cmd, "renew") == 0) {
        rc = fl_renew_owner(c, o.name, o.owner, o.ttl_ms);
        ex = rc == FL_OK ? EX_OK : fail(c, rc);
    } else if (strcmp(cmd, "release") == 0) {
        rc = fl_release_owner(c, o.name, o.owner);
        ex = rc == FL_OK ? EX_OK : fail(c, rc);
    } else if (strcmp(cmd, "status") == 0) {
        struct fl_lock_status st;

        rc = fl_status(c, o.name, &st);
        if (rc == FL_OK && st.held)
            printf("held owner=%s ttl_ms=%" PRId64 " token=%" PRIu64 "\n", st.owner, st.ttl_ms,
                   st.token);
        else if (rc == FL_OK)
            printf("free token=%" PRIu64 "\n", st.token);
        /* Queue backends: the waiters in the order they will hold the lock. */
        for (size_t k = 0; rc == FL_OK && k < st.waiters && k < FL_STATUS_WAITERS; k++)
            printf("waiting owner=%s token=%" PRIu64 "\n", st.waiter[k].owner,
                   st.waiter[k].token);
        if (rc == FL_OK && st.waiters > FL_STATUS_WAITERS)
            printf("waiting more=%zu\n", st.waiters - FL_STATUS_WAITERS);
        ex = rc == FL_OK ? EX_OK : fail(c, rc);
    } else if (strcmp(cmd, "leader") == 0) {
        char id[FL_ID_MAX + 1];
        uint64_t epoch = 0;

        rc = fl_leader(c, o.name, id, &epoch);
        if (rc == FL_OK && id[0])
            printf("leader id=%s epoch=%" PRIu64 "\n", id, epoch);
        else if (rc == FL_OK)
            printf("none\n");
        ex = rc != FL_OK ? fail(c, rc) : id[0] ? EX_OK : EX_NOLOCK;
    } else if (strcmp(cmd, "elect") == 0) {
        if (o.id == NULL) {
            /* Default candidate id: host-pid, with characters ids refuse
             * replaced. */
            char host[48] = "host";

            gethostname(host, sizeof host - 1);
            host[sizeof host - 1] = '\0';
            for (char *p = host; *p; p++)
                if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", *p))
                    *p = '_';
            snprintf(o.id_buf, sizeof o.id_buf, "%s-%ld", host, (long)getpid());
            o.id = o.id_buf;
        }
        fflush(stdout);
        ex = cmd_elect(c, &o);
    } else {
        fflush(stdout);
        ex = cmd_run(c, &o);
    }
    fl_client_free(&c);
    if (fflush(stdout) != 0 && ex == EX_OK)
        ex = EX_SOFTWARE_;
    return ex;
usage:
    usage(stderr);
    fl_client_free(&c);
    return EX_USAGE_;
}

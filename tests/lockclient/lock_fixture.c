/* lock_fixture: see lock_fixture.h. */
#include "lock_fixture.h"

#include "fencelock.h"
#include "ts_etcd.h"
#include "ts_zk.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

int lf_setup(struct lf *f, const char *tag, char *const extra[])
{
    memset(f, 0, sizeof *f);
    f->dir = ts_tempdir(tag);
    if (f->dir == NULL)
        return -1;
    f->port = ts_free_port();
    if (f->port < 0)
        return -1;
    snprintf(f->url, sizeof f->url, "redis://127.0.0.1:%d", f->port);
    return ts_redis_start_args(&f->redis, f->dir, f->port, extra);
}

void lf_teardown(struct lf *f)
{
    ts_proc_stop(&f->redis, SIGTERM, 5000);
    if (f->dir) {
        ts_rmrf(f->dir);
        free(f->dir);
        f->dir = NULL;
    }
}

int lf_restart_redis(struct lf *f, char *const extra[])
{
    return ts_redis_start_args(&f->redis, f->dir, f->port, extra);
}

static void read_into(const char *path, char *buf, size_t len)
{
    size_t n = 0;
    char *s = ts_read_file(path, &n);

    if (len == 0)
        goto out;
    buf[0] = '\0';
    if (s)
        snprintf(buf, len, "%s", s);
out:
    free(s);
}

int lf_cli(struct lf *f, char *const args[], char *const env[], char *out, size_t outlen, char *err,
           size_t errlen, int timeout_ms)
{
    static int seq;
    const char *bin = ts_build_path("lockclient/fencelock");
    char opath[1000], epath[1000];
    char *argv[64];
    struct ts_proc p;
    int n = 0, st = 0, rc = -1;
    pid_t pid;

    if (bin == NULL)
        return -1;
    argv[n++] = (char *)bin;
    for (int i = 0; args[i] && n < 63; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    seq++;
    snprintf(opath, sizeof opath, "%s/cli-%d-%d.out", f->dir, (int)getpid(), seq);
    snprintf(epath, sizeof epath, "%s/cli-%d-%d.err", f->dir, (int)getpid(), seq);
    fflush(NULL);
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int o = open(opath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(epath, O_WRONLY | O_CREAT | O_TRUNC, 0644);

        if (o < 0 || e < 0)
            _exit(125);
        dup2(o, 1);
        dup2(e, 2);
        setpgid(0, 0);
        unsetenv("FENCE_BACKEND");
        for (int i = 0; env && env[i]; i++)
            putenv(env[i]);
        execv(argv[0], argv);
        _exit(124);
    }
    memset(&p, 0, sizeof p);
    p.pid = pid;
    snprintf(p.name, sizeof p.name, "fencelock");
    snprintf(p.log, sizeof p.log, "%s", epath);
    if (ts_proc_wait(&p, timeout_ms, &st) < 0) {
        fprintf(stderr, "lf_cli: fencelock did not exit within %d ms\n", timeout_ms);
        ts_proc_stop(&p, SIGKILL, 1000);
        goto out;
    }
    rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
out:
    if (out)
        read_into(opath, out, outlen);
    if (err)
        read_into(epath, err, errlen);
    return rc;
}

int lf_redis_cmd(struct lf *f, char *const argv[], char *buf, size_t len)
{
    char req[2048];
    size_t off = 0;
    int n = 0, fd, rc = -1;
    ssize_t got;

    while (argv[n])
        n++;
    off += (size_t)snprintf(req + off, sizeof req - off, "*%d\r\n", n);
    for (int i = 0; i < n && off < sizeof req; i++)
        off += (size_t)snprintf(req + off, sizeof req - off, "$%zu\r\n%s\r\n", strlen(argv[i]),
                                argv[i]);
    if (off >= sizeof req)
        return -1;
    fd = ts_connect(f->port);
    if (fd < 0)
        return -1;
    if (ts_send_all(fd, req, off) < 0)
        goto out;
    got = recv(fd, buf, len - 1, 0);
    if (got <= 0)
        goto out;
    buf[got] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    rc = 0;
out:
    close(fd);
    return rc;
}

/* One contender's loop (a forked child; its exit status). */
static int contender(const char *url, const char *name, const char *path, int rounds,
                     uint64_t ttl_ms, uint64_t wait_ms, int hold_ms)
{
    struct fl_client *c = fl_client_new(url, NULL, 0);
    int fd = open(path, O_WRONLY | O_APPEND);

    if (c == NULL || fd < 0)
        return 3;
    for (int i = 0; i < rounds; i++) {
        struct fl_lease *l = NULL;

        if (fl_acquire(c, name, ttl_ms, wait_ms, &l) != FL_OK) {
            fprintf(stderr, "contender %d: %s\n", (int)getpid(), fl_client_error(c));
            return 4;
        }
        dprintf(fd, "B %" PRIu64 " %d\n", l->token, (int)getpid());
        ts_sleep_ms(hold_ms);
        dprintf(fd, "E %" PRIu64 " %d\n", l->token, (int)getpid());
        if (fl_release(c, l) != FL_OK) {
            fprintf(stderr, "contender %d: release: %s\n", (int)getpid(), fl_client_error(c));
            return 5;
        }
        fl_lease_free(&l);
    }
    close(fd);
    fl_client_free(&c);
    return 0;
}

void lf_exclusion(const char *url, const char *dir, const char *name, int procs, int rounds,
                  uint64_t ttl_ms, uint64_t wait_ms, int hold_ms, int timeout_ms)
{
    char path[1100], *text, *line, *save = NULL;
    pid_t kids[64];
    uint64_t last = 0, open_token = 0;
    int fd, lines = 0, begins = 0, open_holder = 0;
    long open_pid = 0;

    cr_assert(procs > 0 && procs <= 64);
    snprintf(path, sizeof path, "%s/journal", dir);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert_geq(fd, 0);
    close(fd);
    for (int i = 0; i < procs; i++) {
        kids[i] = fork();
        cr_assert_geq(kids[i], 0);
        if (kids[i] == 0)
            _exit(contender(url, name, path, rounds, ttl_ms, wait_ms, hold_ms));
    }
    for (int i = 0; i < procs; i++) {
        struct ts_proc p = {.pid = kids[i], .name = "contender"};
        int st = -1;

        if (ts_proc_wait(&p, timeout_ms, &st) < 0)
            ts_proc_stop(&p, SIGKILL, 1000);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "contender %d failed: status %d", i, st);
    }
    text = ts_read_file(path, NULL);
    cr_assert_not_null(text);
    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char kind;
        uint64_t tok;
        long pid;

        cr_assert_eq(sscanf(line, "%c %" SCNu64 " %ld", &kind, &tok, &pid), 3, "bad line '%s'",
                     line);
        lines++;
        if (kind == 'B') {
            begins++;
            cr_assert(!open_holder, "two holders at once: token %" PRIu64 " began inside %" PRIu64,
                      tok, open_token);
            cr_assert_gt(tok, last, "token %" PRIu64 " not above %" PRIu64, tok, last);
            last = tok;
            open_holder = 1;
            open_token = tok;
            open_pid = pid;
        } else {
            cr_assert(open_holder && tok == open_token && pid == open_pid,
                      "end %" PRIu64 " without matching begin", tok);
            open_holder = 0;
        }
    }
    /* Every acquisition began once, each with a token above the one before
     * (checked above): procs * rounds distinct, strictly increasing tokens. */
    cr_expect_eq(lines, 2 * procs * rounds);
    cr_expect_eq(begins, procs * rounds, "every acquisition holds its own token");
    free(text);
}

void lf_wait_waiters(struct fl_client *c, const char *name, size_t n)
{
    struct fl_lock_status st;
    int64_t t0 = fl_now_ms();

    memset(&st, 0, sizeof st);
    while (fl_now_ms() - t0 < 5000) {
        cr_assert_eq(fl_status(c, name, &st), FL_OK, "%s", fl_client_error(c));
        if (st.waiters == n)
            return;
        ts_sleep_ms(5);
    }
    cr_assert_fail("%zu waiters, want %zu", st.waiters, n);
}

struct fifo_arg {
    const char *url;
    int idx;
    int *order; /* shared, under mu */
    int *n;
    pthread_mutex_t *mu;
    int rc;
};

static void *fifo_waiter(void *arg)
{
    struct fifo_arg *a = arg;
    struct fl_client *c = fl_client_new(a->url, NULL, 0);
    struct fl_lease *l = NULL;

    a->rc = c ? fl_acquire(c, "F", 5000, 15000, &l) : FL_ERR_INTERNAL;
    if (a->rc == FL_OK) {
        pthread_mutex_lock(a->mu);
        a->order[(*a->n)++] = a->idx;
        pthread_mutex_unlock(a->mu);
        ts_sleep_ms(20);
        fl_release(c, l);
    }
    fl_lease_free(&l);
    fl_client_free(&c);
    return NULL;
}

void lf_fifo_handover(struct lf *f, const char *url)
{
    enum { W = 4 };
    struct fl_client *c = fl_client_new(url, NULL, 0);
    struct fl_lease *h = NULL;
    struct fifo_arg a[W];
    pthread_t t[W];
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    struct fl_lock_status st;
    int order[W], n = 0;
    char want[256], out[4096], err[4096];

    cr_assert_not_null(c, "fl_client_new(%s)", url);
    cr_assert_eq(fl_acquire(c, "F", 10000, 0, &h), FL_OK, "%s", fl_client_error(c));
    for (int i = 0; i < W; i++) {
        a[i] = (struct fifo_arg){.url = url, .idx = i, .order = order, .n = &n, .mu = &mu};
        cr_assert_eq(pthread_create(&t[i], NULL, fifo_waiter, &a[i]), 0);
        lf_wait_waiters(c, "F", (size_t)i + 1);
    }
    cr_assert_eq(fl_status(c, "F", &st), FL_OK);
    cr_expect_eq(st.held, 1);
    cr_expect_str_eq(st.owner, h->owner);
    cr_expect_eq(st.token, h->token);
    for (int i = 0; i < W; i++)
        cr_expect_gt(st.waiter[i].token, i ? st.waiter[i - 1].token : h->token);
    /* The CLI prints the same: holder first, then the waiters in order. */
    cr_assert_eq(lf_cli(f, (char *[]){"--backend", (char *)url, "status", "F", NULL}, NULL, out,
                        sizeof out, err, sizeof err, 20000),
                 0, "%s", err);
    snprintf(want, sizeof want, "held owner=%s ttl_ms=", h->owner);
    cr_expect(strncmp(out, want, strlen(want)) == 0, "status: %s", out);
    snprintf(want, sizeof want, "\nwaiting owner=%s token=%" PRIu64 "\n", st.waiter[0].owner,
             st.waiter[0].token);
    cr_expect(strstr(out, want) != NULL, "status: %s", out);
    cr_assert_eq(fl_release(c, h), FL_OK);
    for (int i = 0; i < W; i++) {
        pthread_join(t[i], NULL);
        cr_expect_eq(a[i].rc, FL_OK, "waiter %d: %s", i, fl_strerror(a[i].rc));
    }
    cr_assert_eq(n, W);
    for (int i = 0; i < W; i++)
        cr_expect_eq(order[i], i, "hand-over %d went to waiter %d", i, order[i]);
    fl_lease_free(&h);
    fl_client_free(&c);
}

/* ---- backends started once per binary ---- */

static char *bk_dir;
static struct ts_proc bk_redis;
static struct ts_etcd bk_etcd;
static struct ts_zk bk_zk;
static const char *const bk_env[LF_KINDS] = {"FENCE_TEST_LF_REDIS", "FENCE_TEST_LF_ETCD",
                                             "FENCE_TEST_LF_ZK"};

void lf_backends_start(void)
{
    char url[300];
    int port;

    bk_dir = ts_tempdir("lfbk");
    if (bk_dir == NULL) {
        fprintf(stderr, "lock_fixture: no temp dir for the backends\n");
        return;
    }
    port = ts_free_port();
    if (port > 0 && ts_redis_start_args(&bk_redis, bk_dir, port, NULL) == 0) {
        snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
        setenv(bk_env[LF_REDIS], url, 1);
    } else {
        fprintf(stderr, "lock_fixture: redis-server did not start\n");
    }
    if (ts_etcd_start(&bk_etcd, bk_dir, 1) == 0)
        setenv(bk_env[LF_ETCD], bk_etcd.url, 1);
    else
        fprintf(stderr, "lock_fixture: etcd did not start\n");
    if (ts_zk_start(&bk_zk, bk_dir, 1) == 0)
        setenv(bk_env[LF_ZK], bk_zk.url, 1);
    else
        fprintf(stderr, "lock_fixture: ZooKeeper did not start\n");
}

void lf_backends_stop(void)
{
    ts_zk_stop(&bk_zk);
    ts_etcd_stop(&bk_etcd);
    ts_proc_stop(&bk_redis, SIGTERM, 5000);
    if (bk_dir)
        ts_rmrf(bk_dir);
    free(bk_dir);
    bk_dir = NULL;
}

const char *lf_backend_name(enum lf_kind k)
{
    static const char *const names[LF_KINDS] = {"redis", "etcd", "zookeeper"};

    return k < LF_KINDS ? names[k] : "?";
}

const char *lf_backend_url(enum lf_kind k)
{
    const char *u = k < LF_KINDS ? getenv(bk_env[k]) : NULL;

    cr_assert_not_null(u, "no %s server for this binary (see the runner's output above)",
                       lf_backend_name(k));
    return u;
}

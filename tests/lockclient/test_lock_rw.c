/* Read-write locks (fl_acquire_shared and `fencelock run NAME --shared`;
 * fl_acquire / run without --shared is the write lock) on a real
 * redis-server, a real one-member etcd and a real standalone ZooKeeper,
 * each started once for this binary, every test run on all three. Proves:
 * readers hold together and share the token of their read epoch, a new
 * epoch (a new token) once no reader holds; a writer excludes readers and
 * writers; status shows the writer only; a waiting writer keeps new
 * readers out, and readers queued behind a writer that gives up join the
 * holding readers' epoch; under contention of reader and writer processes never a
 * writer together with anyone, and the tokens follow the rule (a writer's
 * above every earlier token, a reader's above every earlier writer's); a
 * writer gets the lock within a bounded time under a steady stream of
 * overlapping readers (time printed); Redlock refuses read locks. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fencelock.h"
#include "lock_fixture.h"

LF_BACKENDS_START()
LF_BACKENDS_STOP()

static struct lf F;     /* only its dir: this test's files */
static const char *URL; /* the backend under test */
static enum lf_kind K;

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    memset(&F, 0, sizeof F);
    F.dir = ts_tempdir("rw");
    cr_assert_not_null(F.dir);
}

static void teardown(void)
{
    if (F.dir)
        ts_rmrf(F.dir);
    free(F.dir);
    F.dir = NULL;
}

TestSuite(rw_redis, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(rw_etcd, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(rw_zk, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(rw_redlock, .init = setup, .fini = teardown, .timeout = 60);

static void use(enum lf_kind k)
{
    K = k;
    URL = lf_backend_url(k);
}

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

/* Readers of one client and writers of two others (on etcd a client's
 * lease is its session: two write holds need two clients). */
static void readers_share_writer_excludes(enum lf_kind k)
{
    struct fl_client *c, *cw, *cw2;
    struct fl_lease *r1 = NULL, *r2 = NULL, *w = NULL, *r3 = NULL, *r4 = NULL, *r5 = NULL,
                    *x = NULL;
    struct fl_lock_status st;

    use(k);
    c = client();
    cw = client();
    cw2 = client();
    cr_assert_eq(fl_acquire_shared(c, "rw1", 5000, 0, &r1), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(fl_acquire_shared(c, "rw1", 5000, 0, &r2), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(r1->token, r2->token, "readers of one epoch: %" PRIu64 " vs %" PRIu64, r1->token,
                 r2->token);
    cr_assert(r1->shared && r2->shared);
    cr_assert_str_neq(r1->owner, r2->owner, "two read holds of one client are one");
    cr_assert_eq(fl_status(c, "rw1", &st), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(st.held, 0, "status shows readers as the write holder %s", st.owner);
    cr_assert_eq(fl_acquire(cw, "rw1", 5000, 0, &x), FL_ERR_NOT_ACQUIRED, "writer among readers");
    cr_assert_eq(fl_renew(c, r1, 0), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(fl_release(c, r1), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(fl_acquire(cw, "rw1", 5000, 0, &x), FL_ERR_NOT_ACQUIRED, "writer with a reader");
    cr_assert_eq(fl_release(c, r2), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(fl_release(c, r2), FL_ERR_NOT_OWNER, "a reader released twice");
    cr_assert_eq(fl_acquire(cw, "rw1", 5000, 0, &w), FL_OK, "%s", fl_client_error(cw));
    cr_assert_gt(w->token, r1->token, "writer token not above the readers'");
    cr_assert_eq(fl_status(c, "rw1", &st), FL_OK, "%s", fl_client_error(c));
    cr_assert(st.held && st.token == w->token, "status: held %d token %" PRIu64 ", writer %" PRIu64,
              st.held, st.token, w->token);
    cr_assert_eq(fl_acquire_shared(c, "rw1", 5000, 0, &x), FL_ERR_NOT_ACQUIRED,
                 "reader while a writer holds");
    cr_assert_eq(fl_acquire(cw2, "rw1", 5000, 0, &x), FL_ERR_NOT_ACQUIRED, "two writers");
    cr_assert_eq(fl_release(cw, w), FL_OK, "%s", fl_client_error(cw));
    cr_assert_eq(fl_acquire_shared(c, "rw1", 5000, 0, &r3), FL_OK, "%s", fl_client_error(c));
    cr_assert_gt(r3->token, w->token, "reader token not above the earlier writer's");
    cr_assert_eq(fl_acquire_shared(c, "rw1", 5000, 0, &r4), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(r4->token, r3->token);
    cr_assert_eq(fl_release(c, r3), FL_OK);
    /* r4 still holds: a reader entering now joins its epoch. */
    cr_assert_eq(fl_acquire_shared(c, "rw1", 5000, 0, &r5), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(r5->token, r4->token, "a reader joining a holding reader has another token");
    cr_assert_eq(fl_release(c, r4), FL_OK);
    cr_assert_eq(fl_release(c, r5), FL_OK);
    fl_lease_free(&r5);
    /* No reader holds: the next one opens a new epoch. */
    cr_assert_eq(fl_acquire_shared(c, "rw1", 5000, 0, &r5), FL_OK, "%s", fl_client_error(c));
    cr_assert_gt(r5->token, r4->token, "no new epoch after every reader left");
    cr_assert_eq(fl_release(c, r5), FL_OK);
    fl_lease_free(&r1);
    fl_lease_free(&r2);
    fl_lease_free(&w);
    fl_lease_free(&r3);
    fl_lease_free(&r4);
    fl_lease_free(&r5);
    fl_client_free(&c);
    fl_client_free(&cw);
    fl_client_free(&cw2);
}

LF_TEST_EACH(rw, readers_share_an_epoch_writer_excludes_tokens_rise, readers_share_writer_excludes)

struct writer_arg {
    const char *url;
    int rc;
    uint64_t token;
};

static void *writer_thread(void *p)
{
    struct writer_arg *a = p;
    struct fl_client *c = fl_client_new(a->url, NULL, 0);
    struct fl_lease *l = NULL;

    a->rc = c ? fl_acquire(c, "rw2", 5000, 8000, &l) : FL_ERR_INTERNAL;
    if (a->rc == FL_OK) {
        a->token = l->token;
        usleep(100 * 1000);
        fl_release(c, l);
    }
    fl_lease_free(&l);
    fl_client_free(&c);
    return NULL;
}

static void waiting_writer_keeps_readers_out(enum lf_kind k)
{
    struct fl_client *c;
    struct fl_lease *r1 = NULL, *x = NULL;
    struct writer_arg a = {.rc = 99};
    pthread_t t;

    use(k);
    c = client();
    a.url = URL;
    cr_assert_eq(fl_acquire_shared(c, "rw2", 5000, 0, &r1), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(pthread_create(&t, NULL, writer_thread, &a), 0);
    if (k == LF_REDIS)
        usleep(300 * 1000); /* Redis lists no waiters; the writer registers at once */
    else
        lf_wait_waiters(c, "rw2", 1);
    cr_assert_eq(fl_acquire_shared(c, "rw2", 5000, 0, &x), FL_ERR_NOT_ACQUIRED,
                 "a new reader entered while a writer waits");
    cr_assert_eq(fl_release(c, r1), FL_OK);
    /* This reader waits for the writer, then enters above its token. */
    cr_assert_eq(fl_acquire_shared(c, "rw2", 5000, 8000, &x), FL_OK, "%s", fl_client_error(c));
    pthread_join(t, NULL);
    cr_assert_eq(a.rc, FL_OK, "writer: %s", fl_strerror(a.rc));
    cr_assert_gt(a.token, r1->token);
    cr_assert_gt(x->token, a.token, "the reader behind the writer is not above its token");
    fl_release(c, x);
    fl_lease_free(&x);
    fl_lease_free(&r1);
    fl_client_free(&c);
}

LF_TEST_EACH(rw, waiting_writer_keeps_new_readers_out, waiting_writer_keeps_readers_out)

struct try_arg {
    const char *url;
    const char *name;
    int shared;
    uint64_t wait_ms;
    int rc;
    uint64_t token;
    struct fl_client *c; /* kept with the lease for the test to release */
    struct fl_lease *l;
};

static void *try_thread(void *p)
{
    struct try_arg *a = p;

    a->c = fl_client_new(a->url, NULL, 0);
    a->rc = a->c == NULL ? FL_ERR_INTERNAL
            : a->shared  ? fl_acquire_shared(a->c, a->name, 5000, a->wait_ms, &a->l)
                         : fl_acquire(a->c, a->name, 5000, a->wait_ms, &a->l);
    if (a->rc == FL_OK)
        a->token = a->l->token;
    return NULL;
}

/* A writer waits behind a reader, a second reader behind the writer; the
 * writer gives up: the second reader enters beside the first, with its
 * token (one epoch for readers that hold together). */
static void writer_gives_up(enum lf_kind k)
{
    struct fl_client *c;
    struct fl_lease *r1 = NULL;
    struct try_arg w = {.name = "rw6", .wait_ms = 700},
                   r2 = {.name = "rw6", .shared = 1, .wait_ms = 8000};
    pthread_t tw, tr;

    use(k);
    c = client();
    w.url = r2.url = URL;
    cr_assert_eq(fl_acquire_shared(c, "rw6", 5000, 0, &r1), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(pthread_create(&tw, NULL, try_thread, &w), 0);
    if (k == LF_REDIS)
        usleep(200 * 1000);
    else
        lf_wait_waiters(c, "rw6", 1);
    cr_assert_eq(pthread_create(&tr, NULL, try_thread, &r2), 0);
    pthread_join(tw, NULL);
    cr_assert_eq(w.rc, FL_ERR_NOT_ACQUIRED, "the writer got in among a reader: %s",
                 fl_strerror(w.rc));
    pthread_join(tr, NULL);
    cr_assert_eq(r2.rc, FL_OK, "the reader behind the writer: %s", fl_strerror(r2.rc));
    cr_assert_eq(r2.token, r1->token,
                 "two readers holding together with tokens %" PRIu64 " and %" PRIu64, r1->token,
                 r2.token);
    cr_assert_eq(fl_release(r2.c, r2.l), FL_OK);
    cr_assert_eq(fl_release(c, r1), FL_OK);
    fl_lease_free(&r2.l);
    fl_client_free(&r2.c);
    fl_client_free(&w.c);
    fl_lease_free(&r1);
    fl_client_free(&c);
}

LF_TEST_EACH(rw, readers_behind_a_writer_that_gave_up_join_the_holding_epoch, writer_gives_up)

/* A shell loop of `fencelock run NAME [--shared]` holders, each command
 * checking the others through files in the test dir. */
static void start_loop(struct ts_proc *p, const char *tag, const char *name, int n, int shared,
                       const char *body)
{
    char script[3000], log[1100], d[1100];

    snprintf(script, sizeof script,
             "i=0; while [ $i -lt %d ]; do i=$((i+1)); \"%s\" --backend '%s' run %s --ttl 5s "
             "--wait 20s %s -- sh -c '%s' || exit 9; done",
             n, fencelock_bin(), URL, name, shared ? "--shared" : "", body);
    snprintf(log, sizeof log, "%s/%s.log", F.dir, tag);
    snprintf(d, sizeof d, "D=%s", F.dir);
    cr_assert_eq(
        ts_proc_start(p, tag, (char *[]){"/bin/sh", "-c", script, NULL}, (char *[]){d, NULL}, log),
        0);
}

#define READER_BODY                                                                                \
    "[ -d \"$D/w\" ] && echo reader-with-writer >> \"$D/bad\"; touch \"$D/r.$$\"; "                \
    "echo \"R $FENCE_TOKEN\" >> \"$D/log\"; sleep 0.1; "                                           \
    "[ $(ls \"$D\" | grep -c \"^r\\.\") -ge 2 ] && echo x >> \"$D/together\"; "                    \
    "[ -d \"$D/w\" ] && echo reader-with-writer >> \"$D/bad\"; rm -f \"$D/r.$$\""
#define WRITER_BODY                                                                                \
    "mkdir \"$D/w\" || echo two-writers >> \"$D/bad\"; "                                           \
    "ls \"$D\" | grep -q \"^r\\.\" && echo writer-with-reader >> \"$D/bad\"; "                     \
    "echo \"W $FENCE_TOKEN\" >> \"$D/log\"; sleep 0.05; "                                          \
    "ls \"$D\" | grep -q \"^r\\.\" && echo writer-with-reader >> \"$D/bad\"; rmdir \"$D/w\""

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

static void contention(enum lf_kind k)
{
    struct ts_proc p[5];
    static char buf[65536];
    uint64_t max_all = 0, max_w = 0;
    int nr = 0, nw = 0;
    int64_t t0 = fl_now_ms();

    use(k);
    for (int i = 0; i < 3; i++) {
        char tag[16];

        snprintf(tag, sizeof tag, "reader%d", i);
        start_loop(&p[i], tag, "rw3", 8, 1, READER_BODY);
    }
    start_loop(&p[3], "writer0", "rw3", 6, 0, WRITER_BODY);
    start_loop(&p[4], "writer1", "rw3", 6, 0, WRITER_BODY);
    for (int i = 0; i < 5; i++) {
        int st = 0;

        cr_assert_eq(ts_proc_wait(&p[i], 45000, &st), 0, "loop %d did not finish", i);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            ts_proc_dump_log(&p[i]);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "loop %d status %d", i, st);
    }
    if (slurp("bad", buf, sizeof buf) == 0)
        cr_assert_fail("exclusion broken: %s", buf);
    cr_assert_eq(slurp("together", buf, sizeof buf), 0, "readers never held together");
    cr_assert_eq(slurp("log", buf, sizeof buf), 0);
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        char kind = 0;
        uint64_t t = 0;

        cr_assert_eq(sscanf(line, "%c %" SCNu64, &kind, &t), 2, "bad line '%s'", line);
        if (kind == 'W') {
            cr_assert_gt(t, max_all, "writer token %" PRIu64 " not above every earlier one", t);
            max_w = t;
            nw++;
        } else {
            cr_assert_gt(t, max_w, "reader token %" PRIu64 " not above the earlier writer's", t);
            cr_assert_geq(t, max_all, "reader token %" PRIu64 " below an earlier epoch", t);
            nr++;
        }
        if (t > max_all)
            max_all = t;
    }
    cr_assert_eq(nr, 24);
    cr_assert_eq(nw, 12);
    fprintf(stderr, "rw %s: 24 reads and 12 writes in contention took %" PRId64 " ms\n",
            lf_backend_name(k), fl_now_ms() - t0);
}

LF_TEST_EACH(rw, contention_never_a_writer_with_anyone_tokens_follow_the_rule, contention)

static void writer_not_starved(enum lf_kind k)
{
    struct ts_proc p[3], w;
    char log[1100], d[1100];
    int64_t t0, waited;
    int st = 0;

    use(k);
    /* Three loops of 300 ms readers, started 100 ms apart: at every moment
     * some reader holds the lock. The writer's bound (3 s, ten readers'
     * holds) leaves room for a loaded machine; the readers inside when it
     * arrives hold for 300 ms. */
    for (int i = 0; i < 3; i++) {
        char tag[16];

        snprintf(tag, sizeof tag, "stream%d", i);
        start_loop(&p[i], tag, "rw4", 12, 1, "sleep 0.3");
        usleep(100 * 1000);
    }
    usleep(400 * 1000);
    snprintf(log, sizeof log, "%s/writer.log", F.dir);
    snprintf(d, sizeof d, "D=%s", F.dir);
    t0 = fl_now_ms();
    cr_assert_eq(ts_proc_start(&w, "writer",
                               (char *[]){(char *)fencelock_bin(), "--backend", (char *)URL, "run",
                                          "rw4", "--wait", "3s", "--", "true", NULL},
                               (char *[]){d, NULL}, log),
                 0);
    cr_assert_eq(ts_proc_wait(&w, 10000, &st), 0, "writer hung");
    waited = fl_now_ms() - t0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        ts_proc_dump_log(&w);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "writer starved: status %d after %" PRId64 " ms", st, waited);
    fprintf(stderr, "rw %s: writer under a stream of readers got the lock in %" PRId64 " ms\n",
            lf_backend_name(k), waited);
    /* The readers were still streaming while the writer waited. */
    for (int i = 0; i < 3; i++)
        cr_assert(ts_proc_alive(&p[i]), "reader loop %d ended before the writer", i);
    for (int i = 0; i < 3; i++)
        ts_proc_stop(&p[i], SIGTERM, 5000);
}

LF_TEST_EACH(rw, writer_not_starved_by_a_stream_of_readers, writer_not_starved)

/* Redlock has no read-write locks: the library and the CLI say so (the
 * refusal comes before any I/O, so the nodes need not run). */
Test(rw_redlock, refused_with_a_clear_error)
{
    const char *url = "redlock://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3";
    struct fl_client *c = fl_client_new(url, NULL, 0);
    struct fl_lease *l = NULL;
    char out[512], err[1024];
    int rc;

    cr_assert_not_null(c);
    cr_assert_eq(fl_acquire_shared(c, "rw5", 5000, 0, &l), FL_ERR_INVALID);
    cr_assert(strstr(fl_client_error(c), "no read-write locks"), "%s", fl_client_error(c));
    fl_client_free(&c);
    rc = lf_cli(&F,
                (char *[]){"--backend", (char *)url, "run", "rw5", "--shared", "--", "true", NULL},
                NULL, out, sizeof out, err, sizeof err, 10000);
    cr_assert_eq(rc, 2, "exit %d: %s", rc, err);
    cr_assert(strstr(err, "no read-write locks"), "%s", err);
}

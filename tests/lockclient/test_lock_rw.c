/* Read-write locks on a real redis-server (fl_acquire_shared and
 * `fencelock run NAME --shared`; fl_acquire / run without --shared is the
 * write lock). Proves: readers hold together and share the token of their
 * read epoch; a writer excludes readers and writers; a waiting writer keeps
 * new readers out and gets the lock within a bounded time under a steady
 * stream of overlapping readers; under contention of reader and writer
 * processes never a writer together with anyone, and the tokens follow the
 * rule (a writer's above every earlier token, a reader's above every
 * earlier writer's). */
#include <criterion/criterion.h>
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

static struct lf F;

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    memset(&F, 0, sizeof F);
    cr_assert_eq(lf_setup(&F, "rw", NULL), 0, "redis fixture failed");
}

static void teardown(void)
{
    lf_teardown(&F);
}

TestSuite(rw_redis, .init = setup, .fini = teardown, .timeout = 60);

static struct fl_client *client(void)
{
    char err[256];
    struct fl_client *c = fl_client_new(F.url, err, sizeof err);

    cr_assert_not_null(c, "%s", err);
    return c;
}

Test(rw_redis, readers_share_an_epoch_writer_excludes_tokens_rise)
{
    struct fl_client *c = client();
    struct fl_lease *r1 = NULL, *r2 = NULL, *w = NULL, *r3 = NULL, *r4 = NULL, *x = NULL;

    cr_assert_eq(fl_acquire_shared(c, "L", 5000, 0, &r1), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(fl_acquire_shared(c, "L", 5000, 0, &r2), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(r1->token, r2->token, "readers of one epoch: %" PRIu64 " vs %" PRIu64, r1->token,
                 r2->token);
    cr_assert(r1->shared && r2->shared);
    cr_assert_eq(fl_acquire(c, "L", 5000, 0, &x), FL_ERR_NOT_ACQUIRED, "writer among readers");
    cr_assert_eq(fl_renew(c, r1, 0), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(fl_release(c, r1), FL_OK);
    cr_assert_eq(fl_acquire(c, "L", 5000, 0, &x), FL_ERR_NOT_ACQUIRED, "writer with a reader");
    cr_assert_eq(fl_release(c, r2), FL_OK);
    cr_assert_eq(fl_release(c, r2), FL_ERR_NOT_OWNER, "a reader released twice");
    cr_assert_eq(fl_acquire(c, "L", 5000, 0, &w), FL_OK, "%s", fl_client_error(c));
    cr_assert_gt(w->token, r1->token, "writer token not above the readers'");
    cr_assert_eq(fl_acquire_shared(c, "L", 5000, 0, &x), FL_ERR_NOT_ACQUIRED,
                 "reader while a writer holds");
    cr_assert_eq(fl_acquire(c, "L", 5000, 0, &x), FL_ERR_NOT_ACQUIRED, "two writers");
    cr_assert_eq(fl_release(c, w), FL_OK);
    cr_assert_eq(fl_acquire_shared(c, "L", 5000, 0, &r3), FL_OK, "%s", fl_client_error(c));
    cr_assert_gt(r3->token, w->token, "reader token not above the earlier writer's");
    cr_assert_eq(fl_acquire_shared(c, "L", 5000, 0, &r4), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(r4->token, r3->token);
    cr_assert_eq(fl_release(c, r3), FL_OK);
    cr_assert_eq(fl_release(c, r4), FL_OK);
    fl_lease_free(&r1);
    fl_lease_free(&r2);
    fl_lease_free(&w);
    fl_lease_free(&r3);
    fl_lease_free(&r4);
    fl_client_free(&c);
}

struct writer_arg {
    const char *url;
    int rc;
    uint64_t token;
    int64_t waited_ms;
};

static void *writer_thread(void *p)
{
    struct writer_arg *a = p;
    struct fl_client *c = fl_client_new(a->url, NULL, 0);
    struct fl_lease *l = NULL;
    int64_t t0 = fl_now_ms();

    a->rc = c ? fl_acquire(c, "L", 5000, 5000, &l) : FL_ERR_INTERNAL;
    a->waited_ms = fl_now_ms() - t0;
    if (a->rc == FL_OK) {
        a->token = l->token;
        fl_release(c, l);
    }
    fl_lease_free(&l);
    fl_client_free(&c);
    return NULL;
}

Test(rw_redis, waiting_writer_keeps_new_readers_out)
{
    struct fl_client *c = client();
    struct fl_lease *r1 = NULL, *x = NULL;
    struct writer_arg a = {.url = F.url, .rc = 99};
    pthread_t t;

    cr_assert_eq(fl_acquire_shared(c, "L", 5000, 0, &r1), FL_OK, "%s", fl_client_error(c));
    cr_assert_eq(pthread_create(&t, NULL, writer_thread, &a), 0);
    usleep(300 * 1000);
    cr_assert_eq(fl_acquire_shared(c, "L", 5000, 0, &x), FL_ERR_NOT_ACQUIRED,
                 "a new reader entered while a writer waits");
    cr_assert_eq(fl_release(c, r1), FL_OK);
    pthread_join(t, NULL);
    cr_assert_eq(a.rc, FL_OK, "writer: %s", fl_strerror(a.rc));
    cr_assert_gt(a.token, r1->token);
    /* The writer gone, readers enter again, above its token. */
    cr_assert_eq(fl_acquire_shared(c, "L", 5000, 0, &x), FL_OK, "%s", fl_client_error(c));
    cr_assert_gt(x->token, a.token);
    fl_release(c, x);
    fl_lease_free(&x);
    fl_lease_free(&r1);
    fl_client_free(&c);
}

/* A shell loop of `fencelock run L [--shared]` holders, each command
 * checking the others through files in the test dir. */
static void start_loop(struct ts_proc *p, const char *tag, int n, int shared, const char *body)
{
    char script[3000], log[1100], d[1100];

    snprintf(script, sizeof script,
             "i=0; while [ $i -lt %d ]; do i=$((i+1)); \"%s\" --backend '%s' run L --ttl 5s "
             "--wait 20s %s -- sh -c '%s' || exit 9; done",
             n, ts_build_path("lockclient/fencelock"), F.url, shared ? "--shared" : "", body);
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

Test(rw_redis, contention_never_a_writer_with_anyone_tokens_follow_the_rule)
{
    struct ts_proc p[5];
    static char buf[65536];
    uint64_t max_all = 0, max_w = 0;
    int nr = 0, nw = 0;

    cr_assert_not_null(ts_build_path("lockclient/fencelock"));
    for (int i = 0; i < 3; i++) {
        char tag[16];

        snprintf(tag, sizeof tag, "reader%d", i);
        start_loop(&p[i], tag, 8, 1, READER_BODY);
    }
    start_loop(&p[3], "writer0", 6, 0, WRITER_BODY);
    start_loop(&p[4], "writer1", 6, 0, WRITER_BODY);
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
}

Test(rw_redis, writer_not_starved_by_a_stream_of_readers)
{
    struct ts_proc p[3], w;
    char log[1100], d[1100];
    int64_t t0, waited;
    int st = 0;

    cr_assert_not_null(ts_build_path("lockclient/fencelock"));
    /* Three loops of 300 ms readers, started 100 ms apart: at every moment
     * some reader holds the lock. */
    for (int i = 0; i < 3; i++) {
        char tag[16];

        snprintf(tag, sizeof tag, "stream%d", i);
        start_loop(&p[i], tag, 12, 1, "sleep 0.3");
        usleep(100 * 1000);
    }
    usleep(400 * 1000);
    snprintf(log, sizeof log, "%s/writer.log", F.dir);
    snprintf(d, sizeof d, "D=%s", F.dir);
    t0 = fl_now_ms();
    cr_assert_eq(
        ts_proc_start(&w, "writer",
                      (char *[]){(char *)ts_build_path("lockclient/fencelock"), "--backend", F.url,
                                 "run", "L", "--wait", "4s", "--", "true", NULL},
                      (char *[]){d, NULL}, log),
        0);
    cr_assert_eq(ts_proc_wait(&w, 10000, &st), 0, "writer hung");
    waited = fl_now_ms() - t0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        ts_proc_dump_log(&w);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "writer starved: status %d after %" PRId64 " ms", st, waited);
    fprintf(stderr, "rw redis: writer under a stream of readers got the lock in %" PRId64 " ms\n",
            waited);
    /* The readers were still streaming while the writer waited. */
    for (int i = 0; i < 3; i++)
        cr_assert(ts_proc_alive(&p[i]), "reader loop %d ended before the writer", i);
    for (int i = 0; i < 3; i++)
        ts_proc_stop(&p[i], SIGTERM, 5000);
}

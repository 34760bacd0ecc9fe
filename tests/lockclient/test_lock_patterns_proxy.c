/* The token rules of the lock patterns checked through the real fenceproxy
 * (recording upstream) with tokens from a real redis-server, a real
 * one-member etcd and a real standalone ZooKeeper (each started once for
 * this binary; every test runs on all three): a deposed leader's write is
 * refused 409 and audited as stale_token once the next leader wrote; a
 * preempted reader is refused once a later writer wrote; a preempted
 * writer is refused once a later reader wrote; a reader of an older epoch
 * once a later writer wrote; readers of one epoch pass together; a
 * semaphore slot's preempted holder is refused on that slot's resource
 * while another slot's holder passes on its own. A preempted holder is a
 * process of its own (tests/fl_holder) that took its hold with a TTL of
 * 1 s, wrote through the proxy, and was then stopped (SIGSTOP) past its
 * TTL, as a paused process is: on ZooKeeper its session expires because
 * its client stops pinging. Continued, it sends its late write itself. */
#include <criterion/criterion.h>

#include <criterion/hooks.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fencelock.h"
#include "lock_fixture.h"
#include "ts_proxy.h"
#include "ts_upstream.h"

LF_BACKENDS_START()
LF_BACKENDS_STOP()

static struct ts_upstream *up;
static struct ts_proxy px;
static struct fl_client *C; /* the test's own holds */
static const char *URL;

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    up = ts_upstream_start();
    cr_assert_not_null(up, "recording upstream did not start");
    cr_assert_eq(ts_proxy_init(&px, "patpx"), 0);
    cr_assert_eq(
        ts_proxy_write_conf(&px, ts_upstream_port(up),
                            "[route objects]\nprefix = /objects/\nresource = segments:2\n"),
        0);
    cr_assert_eq(ts_proxy_start(&px), 0, "fenceproxy did not start");
}

static void teardown(void)
{
    fl_client_free(&C);
    ts_proxy_cleanup(&px, 1);
    ts_upstream_stop(&up);
}

TestSuite(patterns_proxy_redis, .init = setup, .fini = teardown, .timeout = 120);
TestSuite(patterns_proxy_etcd, .init = setup, .fini = teardown, .timeout = 120);
TestSuite(patterns_proxy_zk, .init = setup, .fini = teardown, .timeout = 120);

static void use(enum lf_kind k)
{
    char err[256];

    URL = lf_backend_url(k);
    C = fl_client_new(URL, err, sizeof err);
    cr_assert_not_null(C, "%s", err);
}

static int put(const char *path, uint64_t token)
{
    int st = ts_http_put_token(px.port, path, token, "ok", 5000);

    cr_assert_neq(st, -1, "no answer to PUT %s", path);
    return st;
}

/* The audit log has a stale_token entry for token. */
static void audited_stale(uint64_t token)
{
    char want[64];
    size_t len = 0;
    char *a = NULL;

    snprintf(want, sizeof want, "\"token\":%" PRIu64 ",", token);
    for (int i = 0; i < 50; i++) {
        free(a);
        a = ts_read_file(px.audit, &len);
        if (a && strstr(a, "\"stale_token\"") && strstr(a, want))
            break;
        usleep(20 * 1000);
    }
    cr_assert(a && strstr(a, "\"stale_token\"") && strstr(a, want),
              "no stale_token audit for %" PRIu64 ": %s", token, a ? a : "(none)");
    free(a);
}

/* ---- a holder in a child process ---- */

enum hold_kind { HOLD_LEADER, HOLD_READ, HOLD_WRITE, HOLD_PERMIT };

struct holder {
    pid_t pid;
    int cmd, res; /* pipes: paths to PUT, to the child; answers, from it */
    uint64_t token;
    unsigned slot;
};

/* read(2) from the child, bounded: a child that never answers fails the
 * test instead of hanging the binary. */
static ssize_t read_child(int fd, char *buf, size_t len)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};

    if (poll(&p, 1, 20000) != 1)
        return -1;
    return read(fd, buf, len);
}

static const char *const kind_arg[] = {"leader", "read", "write", "permit"};

/* Starts tests/fl_holder (fork, then exec at once: only async-signal-safe
 * calls between the two in this multithreaded process) with pipes for its
 * stdin and stdout, and reads its "token slot" line. */
static void hold_in_child(struct holder *h, enum hold_kind kind, const char *name)
{
    const char *bin = ts_build_path("tests/fl_holder");
    int cmd[2], res[2];
    char buf[64], port[16];
    ssize_t n;

    cr_assert_not_null(bin);
    cr_assert_eq(access(bin, X_OK), 0, "%s: %s (build the fl_holder target)", bin, strerror(errno));
    snprintf(port, sizeof port, "%d", px.port);
    char *const argv[] = {(char *)bin,  (char *)URL, (char *)kind_arg[kind],
                          (char *)name, port,        NULL};
    cr_assert_eq(pipe(cmd), 0);
    cr_assert_eq(pipe(res), 0);
    fflush(NULL);
    h->pid = fork();
    cr_assert_geq(h->pid, 0);
    if (h->pid == 0) {
        if (dup2(cmd[0], STDIN_FILENO) < 0 || dup2(res[1], STDOUT_FILENO) < 0)
            _exit(127);
        close(cmd[0]);
        close(cmd[1]);
        close(res[0]);
        close(res[1]);
        execv(bin, argv);
        _exit(127);
    }
    close(cmd[0]);
    close(res[1]);
    h->cmd = cmd[1];
    h->res = res[0];
    n = read_child(h->res, buf, sizeof buf - 1);
    if (n <= 0)
        kill(h->pid, SIGKILL);
    cr_assert_gt(n, 0, "the holder child died or did not answer in 20 s");
    buf[n] = '\0';
    cr_assert_eq(sscanf(buf, "%" SCNu64 " %u", &h->token, &h->slot), 2);
    cr_assert_gt(h->token, 0, "the holder child got no hold of %s", name);
}

/* The child PUTs path with its token; the status. */
static int holder_put(struct holder *h, const char *path)
{
    char buf[32];
    ssize_t n;

    cr_assert_eq(write(h->cmd, path, strlen(path)), (ssize_t)strlen(path));
    n = read_child(h->res, buf, sizeof buf - 1);
    if (n <= 0)
        kill(h->pid, SIGKILL);
    cr_assert_gt(n, 0, "the holder child died or did not answer in 20 s");
    buf[n] = '\0';
    return atoi(buf);
}

static void holder_pause(struct holder *h)
{
    cr_assert_eq(kill(h->pid, SIGSTOP), 0);
}

static void holder_resume(struct holder *h)
{
    cr_assert_eq(kill(h->pid, SIGCONT), 0);
}

static void holder_end(struct holder *h)
{
    kill(h->pid, SIGKILL);
    waitpid(h->pid, NULL, 0);
    close(h->cmd);
    close(h->res);
}

static void deposed_leader(enum lf_kind k)
{
    struct holder a;
    struct fl_lease *b = NULL;

    use(k);
    hold_in_child(&a, HOLD_LEADER, "/objects/E");
    cr_assert_eq(holder_put(&a, "/objects/E/state"), 200, "leader a's write");
    holder_pause(&a);
    /* b is elected once a's lease (or session) is gone. */
    cr_assert_eq(fl_campaign(C, "/objects/E", "b", 5000, 8000, &b), FL_OK, "%s",
                 fl_client_error(C));
    cr_assert_gt(b->token, a.token);
    cr_assert_eq(put("/objects/E/state", b->token), 200, "leader b's write");
    holder_resume(&a);
    cr_assert_eq(holder_put(&a, "/objects/E/state"), 409, "the deposed leader's write passed");
    audited_stale(a.token);
    holder_end(&a);
    fl_release(C, b);
    fl_lease_free(&b);
}

LF_TEST_EACH(patterns_proxy, deposed_leader_refused_after_the_next_leader_wrote, deposed_leader)

static void rw_rules(enum lf_kind k)
{
    struct holder r1, w;
    struct fl_lease *r2 = NULL, *r3 = NULL, *w2 = NULL;

    use(k);
    /* Two readers of one epoch pass together. */
    hold_in_child(&r1, HOLD_READ, "/objects/R");
    cr_assert_eq(fl_acquire_shared(C, "/objects/R", 5000, 0, &r2), FL_OK, "%s", fl_client_error(C));
    cr_assert_eq(r1.token, r2->token, "readers holding together, tokens differ");
    cr_assert_eq(holder_put(&r1, "/objects/R/a"), 200);
    cr_assert_eq(put("/objects/R/b", r2->token), 200, "a reader of the same epoch refused");
    cr_assert_eq(fl_release(C, r2), FL_OK);
    /* r1 is paused; a writer gets in after its TTL and writes. */
    holder_pause(&r1);
    hold_in_child(&w, HOLD_WRITE, "/objects/R");
    cr_assert_gt(w.token, r1.token);
    cr_assert_eq(holder_put(&w, "/objects/R/a"), 200, "the writer's write");
    holder_resume(&r1);
    cr_assert_eq(holder_put(&r1, "/objects/R/a"), 409, "the preempted reader's write passed");
    audited_stale(r1.token);
    /* w is paused; a reader gets in after its TTL and writes. */
    holder_pause(&w);
    cr_assert_eq(fl_acquire_shared(C, "/objects/R", 5000, 8000, &r3), FL_OK, "%s",
                 fl_client_error(C));
    cr_assert_gt(r3->token, w.token);
    cr_assert_eq(put("/objects/R/a", r3->token), 200);
    holder_resume(&w);
    cr_assert_eq(holder_put(&w, "/objects/R/a"), 409, "the preempted writer's write passed");
    audited_stale(w.token);
    /* A later writer's token is above that reader epoch too. */
    cr_assert_eq(fl_release(C, r3), FL_OK);
    cr_assert_eq(fl_acquire(C, "/objects/R", 5000, 0, &w2), FL_OK, "%s", fl_client_error(C));
    cr_assert_eq(put("/objects/R/a", w2->token), 200);
    cr_assert_eq(put("/objects/R/b", r3->token), 409, "an older epoch's reader passed");
    holder_end(&r1);
    holder_end(&w);
    fl_release(C, w2);
    fl_lease_free(&r2);
    fl_lease_free(&r3);
    fl_lease_free(&w2);
}

LF_TEST_EACH(patterns_proxy, rw_rules_preempted_reader_and_writer_refused_one_epoch_together,
             rw_rules)

static void semaphore_slots(enum lf_kind k)
{
    struct holder p0;
    struct fl_lease *p1 = NULL, *q = NULL;
    unsigned s1 = 0, sq = 0;
    char path0[64], path1[64];

    use(k);
    hold_in_child(&p0, HOLD_PERMIT, "S");
    cr_assert_eq(fl_acquire_permit(C, "S", 2, 60000, 0, &p1, &s1), FL_OK, "%s", fl_client_error(C));
    cr_assert_neq(s1, p0.slot);
    snprintf(path0, sizeof path0, "/objects/S-%u/x", p0.slot);
    snprintf(path1, sizeof path1, "/objects/S-%u/x", s1);
    cr_assert_eq(holder_put(&p0, path0), 200);
    cr_assert_eq(put(path1, p1->token), 200, "two slots' holders write together");
    /* p0 is paused; the next holder gets its slot after the TTL. */
    holder_pause(&p0);
    cr_assert_eq(fl_acquire_permit(C, "S", 2, 5000, 8000, &q, &sq), FL_OK, "%s",
                 fl_client_error(C));
    cr_assert_eq(sq, p0.slot, "the lapsed slot");
    cr_assert_eq(put(path0, q->token), 200);
    holder_resume(&p0);
    cr_assert_eq(holder_put(&p0, path0), 409, "the slot's preempted holder passed");
    audited_stale(p0.token);
    cr_assert_eq(put(path1, p1->token), 200, "the other slot's holder refused");
    holder_end(&p0);
    fl_release(C, q);
    fl_release(C, p1);
    fl_lease_free(&p1);
    fl_lease_free(&q);
}

LF_TEST_EACH(patterns_proxy, semaphore_slot_fenced_per_slot_resource, semaphore_slots)

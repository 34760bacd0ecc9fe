/* The token rules of the lock patterns checked through the real fenceproxy
 * (recording upstream), with tokens from a real redis-server (and the
 * leader case from a real etcd too): a deposed leader's write is refused
 * 409 and audited as stale_token once the next leader wrote; a preempted
 * reader is refused once a later writer wrote; a preempted writer is
 * refused once a later reader wrote; readers of one epoch pass together; a
 * semaphore slot's preempted holder is refused on that slot's resource
 * while another slot's holder passes on its own. "Preempted" here is a
 * lease that ran out (TTL 1 s, never renewed), as a paused process's would. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fencelock.h"
#include "lock_fixture.h"
#include "ts_etcd.h"
#include "ts_proxy.h"
#include "ts_upstream.h"

static struct lf F;
static struct ts_upstream *up;
static struct ts_proxy px;
static struct fl_client *C;
static struct ts_etcd E;
static int on_etcd;

static void start_proxy(const char *url)
{
    char err[256];

    up = ts_upstream_start();
    cr_assert_not_null(up, "recording upstream did not start");
    cr_assert_eq(ts_proxy_init(&px, "patpx"), 0);
    cr_assert_eq(
        ts_proxy_write_conf(&px, ts_upstream_port(up),
                            "[route objects]\nprefix = /objects/\nresource = segments:2\n"),
        0);
    cr_assert_eq(ts_proxy_start(&px), 0, "fenceproxy did not start");
    C = fl_client_new(url, err, sizeof err);
    cr_assert_not_null(C, "%s", err);
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    memset(&F, 0, sizeof F);
    cr_assert_eq(lf_setup(&F, "patpx", NULL), 0, "redis fixture failed");
    start_proxy(F.url);
}

static void setup_etcd(void)
{
    signal(SIGPIPE, SIG_IGN);
    memset(&F, 0, sizeof F);
    memset(&E, 0, sizeof E);
    on_etcd = 1;
    F.dir = ts_tempdir("patpxetcd");
    cr_assert_not_null(F.dir);
    cr_assert_eq(ts_etcd_start(&E, F.dir, 1), 0, "etcd fixture failed");
    start_proxy(E.url);
}

static void teardown(void)
{
    fl_client_free(&C);
    ts_proxy_cleanup(&px, 1);
    ts_upstream_stop(&up);
    if (on_etcd) {
        ts_etcd_stop(&E);
        if (F.dir)
            ts_rmrf(F.dir);
        free(F.dir);
        F.dir = NULL;
    } else {
        lf_teardown(&F);
    }
}

TestSuite(patterns_proxy, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(patterns_proxy_etcd, .init = setup_etcd, .fini = teardown, .timeout = 60);

/* PUT path with token through the proxy; the status. */
static int put(const char *path, uint64_t token)
{
    char req[1024];
    int n, st;

    n = snprintf(req, sizeof req,
                 "PUT %s HTTP/1.1\r\nHost: t\r\nFencing-Token: %" PRIu64
                 "\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                 path, token);
    st = ts_http_raw(px.port, req, (size_t)n, NULL, 5000);
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

Test(patterns_proxy, deposed_leader_refused_after_the_next_leader_wrote)
{
    struct fl_lease *a = NULL, *b = NULL;

    cr_assert_eq(fl_campaign(C, "/objects/E", "a", 1000, 0, &a), FL_OK, "%s", fl_client_error(C));
    cr_assert_eq(put("/objects/E/state", a->token), 200, "leader a's write");
    /* a stops renewing (as if paused); b is elected after a's TTL. */
    cr_assert_eq(fl_campaign(C, "/objects/E", "b", 5000, 3000, &b), FL_OK, "%s",
                 fl_client_error(C));
    cr_assert_gt(b->token, a->token);
    cr_assert_eq(put("/objects/E/state", b->token), 200, "leader b's write");
    cr_assert_eq(put("/objects/E/state", a->token), 409, "the deposed leader's write passed");
    audited_stale(a->token);
    fl_release(C, b);
    fl_lease_free(&a);
    fl_lease_free(&b);
}

/* On etcd a client's lease covers all its locks, so the deposed leader and
 * its successor use two clients; the first one's lease runs out unrenewed. */
Test(patterns_proxy_etcd, deposed_leader_refused_after_the_next_leader_wrote)
{
    struct fl_client *c2 = fl_client_new(E.url, NULL, 0);
    struct fl_lease *a = NULL, *b = NULL;

    cr_assert_not_null(c2);
    cr_assert_eq(fl_campaign(C, "/objects/E", "a", 1000, 0, &a), FL_OK, "%s", fl_client_error(C));
    cr_assert_eq(put("/objects/E/state", a->token), 200, "leader a's write");
    cr_assert_eq(fl_campaign(c2, "/objects/E", "b", 5000, 5000, &b), FL_OK, "%s",
                 fl_client_error(c2));
    cr_assert_gt(b->token, a->token);
    cr_assert_eq(put("/objects/E/state", b->token), 200, "leader b's write");
    cr_assert_eq(put("/objects/E/state", a->token), 409, "the deposed leader's write passed");
    audited_stale(a->token);
    fl_release(c2, b);
    fl_lease_free(&a);
    fl_lease_free(&b);
    fl_client_free(&c2);
}

Test(patterns_proxy, rw_rules_preempted_reader_and_writer_refused_one_epoch_together)
{
    struct fl_lease *r1 = NULL, *r2 = NULL, *w = NULL, *r3 = NULL, *w2 = NULL;

    /* Two readers of one epoch pass together. */
    cr_assert_eq(fl_acquire_shared(C, "/objects/R", 1000, 0, &r1), FL_OK, "%s", fl_client_error(C));
    cr_assert_eq(fl_acquire_shared(C, "/objects/R", 5000, 0, &r2), FL_OK);
    cr_assert_eq(r1->token, r2->token);
    cr_assert_eq(put("/objects/R/a", r1->token), 200);
    cr_assert_eq(put("/objects/R/b", r2->token), 200, "a reader of the same epoch refused");
    cr_assert_eq(fl_release(C, r2), FL_OK);
    /* r1 stops renewing; a writer gets in after its TTL and writes. */
    cr_assert_eq(fl_acquire(C, "/objects/R", 1000, 3000, &w), FL_OK, "%s", fl_client_error(C));
    cr_assert_gt(w->token, r1->token);
    cr_assert_eq(put("/objects/R/a", w->token), 200, "the writer's write");
    cr_assert_eq(put("/objects/R/a", r1->token), 409, "the preempted reader's write passed");
    audited_stale(r1->token);
    /* w stops renewing; a reader gets in after its TTL and writes. */
    cr_assert_eq(fl_acquire_shared(C, "/objects/R", 5000, 3000, &r3), FL_OK, "%s",
                 fl_client_error(C));
    cr_assert_gt(r3->token, w->token);
    cr_assert_eq(put("/objects/R/a", r3->token), 200);
    cr_assert_eq(put("/objects/R/a", w->token), 409, "the preempted writer's write passed");
    audited_stale(w->token);
    /* A later writer's token is above that reader epoch too. */
    cr_assert_eq(fl_release(C, r3), FL_OK);
    cr_assert_eq(fl_acquire(C, "/objects/R", 5000, 0, &w2), FL_OK);
    cr_assert_eq(put("/objects/R/a", w2->token), 200);
    cr_assert_eq(put("/objects/R/b", r3->token), 409);
    fl_release(C, w2);
    fl_lease_free(&r1);
    fl_lease_free(&r2);
    fl_lease_free(&w);
    fl_lease_free(&r3);
    fl_lease_free(&w2);
}

Test(patterns_proxy, semaphore_slot_fenced_per_slot_resource)
{
    struct fl_lease *p0 = NULL, *p1 = NULL, *q = NULL;
    unsigned s0 = 0, s1 = 0, sq = 0;
    char path0[64], path1[64], pathq[64];

    cr_assert_eq(fl_acquire_permit(C, "S", 2, 1000, 0, &p0, &s0), FL_OK, "%s", fl_client_error(C));
    cr_assert_eq(fl_acquire_permit(C, "S", 2, 60000, 0, &p1, &s1), FL_OK);
    snprintf(path0, sizeof path0, "/objects/S-%u/x", s0);
    snprintf(path1, sizeof path1, "/objects/S-%u/x", s1);
    cr_assert_eq(put(path0, p0->token), 200);
    cr_assert_eq(put(path1, p1->token), 200, "two slots' holders write together");
    /* p0 stops renewing; the next holder gets its slot after the TTL. */
    cr_assert_eq(fl_acquire_permit(C, "S", 2, 5000, 3000, &q, &sq), FL_OK, "%s",
                 fl_client_error(C));
    cr_assert_eq(sq, s0, "the lapsed slot");
    snprintf(pathq, sizeof pathq, "/objects/S-%u/x", sq);
    cr_assert_eq(put(pathq, q->token), 200);
    cr_assert_eq(put(path0, p0->token), 409, "the slot's preempted holder passed");
    audited_stale(p0->token);
    cr_assert_eq(put(path1, p1->token), 200, "the other slot's holder refused");
    fl_release(C, q);
    fl_release(C, p1);
    fl_lease_free(&p0);
    fl_lease_free(&p1);
    fl_lease_free(&q);
}

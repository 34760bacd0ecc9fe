/* Every resource a WebDAV request writes is fenced: a COPY or MOVE is
 * checked against its target and its Destination, through the real
 * fenceproxy with a recording upstream that shows what reached the store.
 * The bypass these close: a stale holder copying data from an unrouted path
 * onto a fenced object, or moving a fenced object away without a token. */
#include <criterion/criterion.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ts_proc.h"
#include "ts_proxy.h"
#include "ts_upstream.h"

static struct ts_upstream *up;
static struct ts_proxy px;

static void setup(void)
{
    up = ts_upstream_start();
    cr_assert_not_null(up, "recording upstream did not start");
    cr_assert_eq(ts_proxy_init(&px, "dest"), 0);
    cr_assert_eq(ts_proxy_write_conf(&px, ts_upstream_port(up),
                                     "[route objects]\nprefix = /objects/\nresource = segments:2\n"),
                 0);
    cr_assert_eq(ts_proxy_start(&px), 0, "fenceproxy did not start");
}

static void teardown(void)
{
    ts_proxy_cleanup(&px, 1);
    ts_upstream_stop(&up);
}

TestSuite(destination, .init = setup, .fini = teardown, .timeout = 60);

/* One request (method, target, Destination or NULL, token or 0); returns
 * the status. */
static int req(const char *method, const char *target, const char *dest, uint64_t token)
{
    char raw[1024], d[512] = "", t[64] = "";
    struct ts_resp r;
    int n, st;

    if (dest != NULL)
        snprintf(d, sizeof(d), "Destination: %s\r\n", dest);
    if (token > 0)
        snprintf(t, sizeof(t), "Fencing-Token: %" PRIu64 "\r\n", token);
    n = snprintf(raw, sizeof(raw), "%s %s HTTP/1.1\r\nHost: px.test\r\n%s%sContent-Length: %d\r\n\r\n%s",
                 method, target, d, t, strcmp(method, "PUT") == 0 ? 4 : 0,
                 strcmp(method, "PUT") == 0 ? "data" : "");
    st = ts_http_raw(px.port, raw, (size_t)n, &r, 10000);
    ts_resp_free(&r);
    return st;
}

static uint64_t highest(const char *enc)
{
    char path[256];
    struct ts_resp r;
    const char *h;
    uint64_t v = UINT64_MAX;

    snprintf(path, sizeof(path), "/tokens/%s", enc);
    if (ts_http_get(px.admin_port, path, &r) == 200 && (h = strstr(r.body, "\"highest\":")))
        v = strtoull(h + 10, NULL, 10);
    ts_resp_free(&r);
    return v;
}

static char *audit_log(void)
{
    size_t len;

    ts_sleep_ms(300); /* the audit writer flushes promptly */
    return ts_read_file(px.audit, &len);
}

Test(destination, stale_copy_from_an_unrouted_path_onto_a_fenced_object_is_refused_and_audited)
{
    char *a;

    cr_assert_eq(req("PUT", "/objects/user42/a.txt", NULL, 5), 200);
    cr_assert_eq(req("PUT", "/objects/user42/a.txt", NULL, 4), 409);
    cr_assert_eq(req("PUT", "/scratch/a.txt", NULL, 0), 200);
    cr_assert_eq(ts_upstream_count(up), 2);
    /* the bypass: absolute and path-form Destinations */
    cr_assert_eq(req("COPY", "/scratch/a.txt", "http://px.test/objects/user42/a.txt", 4), 409);
    cr_assert_eq(req("COPY", "/scratch/a.txt", "/objects/user42/a.txt", 4), 409);
    cr_assert_eq(req("MOVE", "/scratch/a.txt", "http://px.test/objects/user42/a.txt", 4), 409);
    /* other spellings of the same object are refused too, never forwarded */
    cr_expect_eq(req("COPY", "/scratch/a.txt", "/objects/user%34%32/a.txt", 4), 409);
    cr_expect_eq(req("COPY", "/scratch/a.txt", "/scratch/../objects/user42/a.txt", 4), 400);
    cr_assert_eq(ts_upstream_count(up), 2, "a stale COPY/MOVE reached the store");
    a = audit_log();
    cr_assert_not_null(a);
    cr_assert(strstr(a, "\"event\":\"stale_token\",\"route\":\"objects\",\"resource\":\"/objects/user42\","
                        "\"token\":4,\"highest\":5,\"method\":\"COPY\"") != NULL,
              "audit: %s", a);
    cr_assert(strstr(a, "\"method\":\"MOVE\"") != NULL, "audit: %s", a);
    free(a);
    /* the current holder's COPY goes through */
    cr_assert_eq(req("COPY", "/scratch/a.txt", "/objects/user42/a.txt", 5), 200);
    cr_assert_eq(ts_upstream_count(up), 3);
    /* another host in the Destination: refused before the store */
    cr_assert_eq(req("COPY", "/scratch/a.txt", "http://elsewhere/objects/user42/a.txt", 5), 400);
    cr_assert_eq(ts_upstream_count(up), 3);
}

Test(destination, moving_a_fenced_object_away_needs_a_current_token)
{
    char *a;

    cr_assert_eq(req("PUT", "/objects/user42/a.txt", NULL, 5), 200);
    cr_assert_eq(req("MOVE", "/objects/user42/a.txt", "/scratch/b.txt", 0), 428);
    cr_assert_eq(req("MOVE", "/objects/user42/a.txt", "/scratch/b.txt", 4), 409);
    cr_assert_eq(req("DELETE", "/objects/user42/a.txt", NULL, 0), 428);
    cr_assert_eq(ts_upstream_count(up), 1);
    a = audit_log();
    cr_assert(strstr(a, "\"event\":\"missing_token\"") != NULL, "audit: %s", a);
    free(a);
    cr_assert_eq(req("MOVE", "/objects/user42/a.txt", "/scratch/b.txt", 5), 200);
    cr_assert_eq(ts_upstream_count(up), 2);
}

Test(destination, copy_between_two_fenced_resources_checks_both)
{
    cr_assert_eq(req("PUT", "/objects/u1/a", NULL, 5), 200);
    cr_assert_eq(req("PUT", "/objects/u2/a", NULL, 8), 200);
    /* current for the source, stale for the destination */
    cr_assert_eq(req("COPY", "/objects/u1/a", "/objects/u2/a", 6), 409);
    /* stale for the source, current for the destination */
    cr_assert_eq(req("COPY", "/objects/u2/a", "/objects/u1/a", 4), 409);
    cr_assert_eq(ts_upstream_count(up), 2);
    /* current for both: both advance */
    cr_assert_eq(req("MOVE", "/objects/u1/a", "/objects/u2/b", 9), 200);
    cr_assert_eq(ts_upstream_count(up), 3);
    cr_assert_eq(highest("%2Fobjects%2Fu1"), 9);
    cr_assert_eq(highest("%2Fobjects%2Fu2"), 9);
}

struct call {
    const char *method, *target, *dest;
    uint64_t token;
    int status;
};

static void *call_thread(void *arg)
{
    struct call *c = arg;

    c->status = req(c->method, c->target, c->dest, c->token);
    return NULL;
}

/* R0 holds B at the store with token 9; R1 (MOVE a -> b, token 10) and R2
 * (MOVE b -> a, token 10) cross. Gates taken in a fixed order (a, then b)
 * never leave each holding one resource and waiting for the other: both
 * complete once R0 does, and never two tokens were in flight at once. */
Test(destination, crossing_moves_complete)
{
    struct call r0 = {"PUT", "/objects/b/z", NULL, 9, 0};
    struct call r1 = {"MOVE", "/objects/a/x", "/objects/b/x", 10, 0};
    struct call r2 = {"MOVE", "/objects/b/y", "/objects/a/y", 10, 0};
    pthread_t t0, t1, t2;

    cr_assert_eq(ts_upstream_hold(up, "PUT /objects/b/z"), 0);
    cr_assert_eq(pthread_create(&t0, NULL, call_thread, &r0), 0);
    cr_assert_eq(ts_upstream_wait_count(up, 1, 5000), 0);
    cr_assert_eq(pthread_create(&t1, NULL, call_thread, &r1), 0);
    cr_assert_eq(pthread_create(&t2, NULL, call_thread, &r2), 0);
    ts_sleep_ms(500);
    cr_assert_eq(ts_upstream_count(up), 1, "a MOVE reached the store while token 9 held b");
    ts_upstream_release(up, "PUT /objects/b/z");
    pthread_join(t0, NULL);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    cr_assert_eq(r0.status, 200);
    cr_assert_eq(r1.status, 200);
    cr_assert_eq(r2.status, 200);
    cr_assert_eq(ts_upstream_count(up), 3);
}

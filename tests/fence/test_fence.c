/* Fencing through the real fenceproxy binary, with a recording upstream that
 * shows exactly what reached it: stale tokens refused, the ordering rule
 * (S3), equal tokens in parallel, a token on a GET advancing the highest,
 * exact rejection responses and their audit records, and durability across
 * a restart. */
#include <criterion/criterion.h>

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ts_proc.h"
#include "ts_proxy.h"
#include "ts_upstream.h"

static struct ts_upstream *up;
static struct ts_proxy px;

static const char *routes = "[route objects]\nprefix = /objects/\nresource = segments:2\n"
                            "[route open]\nprefix = /open/\nmissing_token = allow\n";

static void setup(void)
{
    up = ts_upstream_start();
    cr_assert_not_null(up, "recording upstream did not start");
    cr_assert_eq(ts_proxy_init(&px, "fence"), 0);
    cr_assert_eq(ts_proxy_write_conf(&px, ts_upstream_port(up), routes), 0);
    cr_assert_eq(ts_proxy_start(&px), 0, "fenceproxy did not start");
}

static void teardown(void)
{
    ts_proxy_cleanup(&px, 1); /* ctest shows it only when the test fails */
    ts_upstream_stop(&up);
}

/* Sends a PUT with token (0 = no token header) on a new connection and
 * returns the fd without reading the response. */
static int send_put(const char *path, uint64_t token, const char *body)
{
    char req[1024];
    char tok[64] = "";
    int fd = ts_connect(px.port), n;

    cr_assert_geq(fd, 0, "cannot connect to the proxy");
    if (token > 0)
        snprintf(tok, sizeof(tok), "Fencing-Token: %" PRIu64 "\r\n", token);
    n = snprintf(req, sizeof(req),
                 "PUT %s HTTP/1.1\r\nHost: t\r\n%sContent-Length: %zu\r\n\r\n%s", path, tok,
                 strlen(body), body);
    cr_assert_eq(ts_send_all(fd, req, (size_t)n), 0);
    return fd;
}

static int put_status(const char *path, uint64_t token, const char *body, struct ts_resp *r)
{
    struct ts_resp tmp;
    int fd = send_put(path, token, body), st;

    if (r == NULL)
        r = &tmp;
    st = ts_http_read(fd, r, 10000, 0) == 0 ? r->status : -1;
    close(fd);
    if (r == &tmp)
        ts_resp_free(&tmp);
    return st;
}

static uint64_t admin_highest(const char *resource_enc)
{
    char path[512];
    struct ts_resp r;
    const char *h;
    uint64_t v = UINT64_MAX;

    snprintf(path, sizeof(path), "/tokens/%s", resource_enc);
    if (ts_http_get(px.admin_port, path, &r) == 200 && (h = strstr(r.body, "\"highest\":")))
        v = strtoull(h + 10, NULL, 10);
    ts_resp_free(&r);
    return v;
}

TestSuite(fence, .init = setup, .fini = teardown, .timeout = 60);

Test(fence, stale_token_is_refused_with_exact_response_and_never_forwarded)
{
    struct ts_resp r;
    char v[128];

    cr_assert_eq(put_status("/objects/user42/a.txt", 5, "hello", NULL), 200);
    cr_assert_eq(ts_upstream_count(up), 1);
    cr_assert_eq(put_status("/objects/user42/b.txt", 4, "stale", &r), 409);
    cr_assert_str_eq(r.body,
                     "{\"error\":\"stale_token\",\"resource\":\"/objects/user42\",\"token\":4,"
                     "\"highest\":5}");
    cr_assert(ts_resp_header(&r, "Fencing-Token-Highest", v, sizeof(v)));
    cr_assert_str_eq(v, "5");
    cr_assert(ts_resp_header(&r, "Content-Type", v, sizeof(v)));
    cr_assert_str_eq(v, "application/json");
    ts_resp_free(&r);
    ts_sleep_ms(100);
    cr_assert_eq(ts_upstream_count(up), 1, "the stale write reached the upstream");
    /* equal token accepted, and forwarded with the token */
    cr_assert_eq(put_status("/objects/user42/c.txt", 5, "again", NULL), 200);
    cr_assert_eq(ts_upstream_count(up), 2);
    {
        struct ts_upstream_req *q = malloc(sizeof(*q));
        cr_assert_eq(ts_upstream_get(up, 1, q), 0);
        cr_assert_eq(ts_upstream_header(q, "Fencing-Token", v, sizeof(v)), 1);
        cr_assert_str_eq(v, "5");
        free(q);
    }
    cr_assert_eq(admin_highest("%2Fobjects%2Fuser42"), 5);
    cr_assert_eq(admin_highest("%2Fobjects%2Fnever"), 0);
}

Test(fence, missing_and_malformed_tokens_get_exact_bodies_and_audit_records)
{
    struct ts_resp r;
    char *audit;
    size_t alen;
    static const char *malformed[] = {"+5", "05", "5 6", "5,6", "abc", "18446744073709551616"};
    char req[512];

    cr_assert_eq(put_status("/objects/u1/a", 0, "x", &r), 428);
    cr_assert_str_eq(r.body, "{\"error\":\"missing_token\",\"resource\":\"/objects/u1\"}");
    ts_resp_free(&r);
    for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
        int n = snprintf(req, sizeof(req),
                         "PUT /objects/u1/a HTTP/1.1\r\nHost: t\r\nFencing-Token: %s\r\n"
                         "Content-Length: 1\r\n\r\nx",
                         malformed[i]);
        cr_assert_eq(ts_http_raw(px.port, req, (size_t)n, &r, 5000), 400, "token '%s'",
                     malformed[i]);
        cr_assert_str_eq(r.body, "{\"error\":\"malformed_token\",\"resource\":\"/objects/u1\"}");
        ts_resp_free(&r);
    }
    /* two token fields */
    {
        const char two[] = "PUT /objects/u1/a HTTP/1.1\r\nHost: t\r\nFencing-Token: 5\r\n"
                           "Fencing-Token: 5\r\nContent-Length: 1\r\n\r\nx";
        cr_assert_eq(ts_http_raw(px.port, two, sizeof(two) - 1, NULL, 5000), 400);
    }
    /* a GET without a token is not fenced; missing_token = allow lets a PUT by */
    cr_assert_eq(ts_http_get(px.port, "/objects/u1/a", &r), 200);
    ts_resp_free(&r);
    cr_assert_eq(put_status("/open/x", 0, "x", NULL), 200);
    cr_assert_eq(ts_upstream_count(up), 2, "only the GET and the allowed PUT are forwarded");
    ts_sleep_ms(300); /* the audit writer flushes promptly */
    audit = ts_read_file(px.audit, &alen);
    cr_assert_not_null(audit, "no audit log at %s", px.audit);
    cr_assert(strstr(audit, "\"event\":\"missing_token\",\"route\":\"objects\","
                            "\"resource\":\"/objects/u1\",\"token\":null") != NULL,
              "audit: %s", audit);
    cr_assert(strstr(audit, "\"event\":\"malformed_token\"") != NULL);
    cr_assert(strstr(audit, "\"token\":\"+5\"") != NULL, "raw malformed token kept: %s", audit);
    {
        unsigned lines = 0;
        for (size_t i = 0; i < alen; i++)
            lines += audit[i] == '\n';
        cr_assert_eq(lines, 1 + 6 + 1, "one record per rejection, got %u", lines);
    }
    free(audit);
}

Test(fence, higher_token_waits_for_lower_in_flight_and_other_resources_are_not_delayed)
{
    struct ts_resp ra, rb, rc, rd;
    struct ts_upstream_req *qa = malloc(sizeof(*qa)), *qb = malloc(sizeof(*qb));
    int fa, fb, fc;
    size_t ia = SIZE_MAX, ib = SIZE_MAX;

    cr_assert_eq(ts_upstream_hold(up, "Fencing-Token: 5\r\n"), 0);
    fa = send_put("/objects/r1/a", 5, "five");
    cr_assert_eq(ts_upstream_wait_count(up, 1, 5000), 0, "token 5 not forwarded");
    fb = send_put("/objects/r1/b", 6, "six");
    ts_sleep_ms(400);
    cr_assert_eq(ts_upstream_count(up), 1, "token 6 reached the upstream while 5 was in flight");
    /* 6 is admitted already: a late 5 is stale now */
    cr_assert_eq(put_status("/objects/r1/c", 5, "late", &rd), 409);
    ts_resp_free(&rd);
    /* another resource flows meanwhile */
    fc = send_put("/objects/r2/x", 1, "other");
    cr_assert_eq(ts_http_read(fc, &rc, 5000, 0), 0);
    cr_assert_eq(rc.status, 200, "other resource delayed or refused");
    ts_resp_free(&rc);
    close(fc);
    cr_assert_eq(ts_upstream_count(up), 2);
    ts_upstream_release(up, "Fencing-Token: 5\r\n");
    cr_assert_eq(ts_http_read(fa, &ra, 5000, 0), 0);
    cr_assert_eq(ra.status, 200);
    cr_assert_eq(ts_http_read(fb, &rb, 5000, 0), 0);
    cr_assert_eq(rb.status, 200);
    cr_assert_eq(ts_upstream_count(up), 3);
    for (size_t i = 0; i < 3; i++) {
        struct ts_upstream_req *q = malloc(sizeof(*q));
        cr_assert_eq(ts_upstream_get(up, i, q), 0);
        if (strcmp(q->target, "/objects/r1/a") == 0)
            ia = i;
        if (strcmp(q->target, "/objects/r1/b") == 0)
            ib = i;
        free(q);
    }
    cr_assert(ia != SIZE_MAX && ib != SIZE_MAX);
    cr_assert_eq(ts_upstream_get(up, ia, qa), 0);
    cr_assert_eq(ts_upstream_get(up, ib, qb), 0);
    cr_assert_gt(qb->recv_ns, qa->resp_ns, "token 6 arrived before token 5 completed");
    ts_resp_free(&ra);
    ts_resp_free(&rb);
    close(fa);
    close(fb);
    free(qa);
    free(qb);
}

Test(fence, equal_tokens_flow_concurrently)
{
    int f1, f2;
    struct ts_resp r1, r2;

    cr_assert_eq(put_status("/objects/r3/init", 7, "x", NULL), 200);
    cr_assert_eq(ts_upstream_hold(up, "Fencing-Token: 7\r\n"), 0);
    f1 = send_put("/objects/r3/a", 7, "a");
    f2 = send_put("/objects/r3/b", 7, "b");
    cr_assert_eq(ts_upstream_wait_count(up, 3, 5000), 0,
                 "two requests with the same token were not in flight together");
    ts_upstream_release(up, "Fencing-Token: 7\r\n");
    cr_assert_eq(ts_http_read(f1, &r1, 5000, 0), 0);
    cr_assert_eq(ts_http_read(f2, &r2, 5000, 0), 0);
    cr_assert_eq(r1.status, 200);
    cr_assert_eq(r2.status, 200);
    ts_resp_free(&r1);
    ts_resp_free(&r2);
    close(f1);
    close(f2);
}

Test(fence, token_on_a_get_advances_the_highest)
{
    const char get[] = "GET /objects/r4/x HTTP/1.1\r\nHost: t\r\nFencing-Token: 10\r\n\r\n";

    cr_assert_eq(ts_http_raw(px.port, get, sizeof(get) - 1, NULL, 5000), 200);
    cr_assert_eq(admin_highest("%2Fobjects%2Fr4"), 10);
    cr_assert_eq(put_status("/objects/r4/x", 9, "old", NULL), 409);
    cr_assert_eq(ts_upstream_count(up), 1);
}

Test(fence, highest_survives_a_restart_and_a_crash)
{
    cr_assert_eq(put_status("/objects/r5/x", 20, "x", NULL), 200);
    cr_assert_eq(ts_proxy_stop(&px, SIGTERM), 0, "clean stop should exit 0");
    cr_assert_eq(ts_proxy_start(&px), 0);
    cr_assert_eq(put_status("/objects/r5/x", 19, "x", NULL), 409);
    cr_assert_eq(put_status("/objects/r5/x", 21, "x", NULL), 200);
    ts_proxy_stop(&px, SIGKILL);
    cr_assert_eq(ts_proxy_start(&px), 0);
    cr_assert_eq(admin_highest("%2Fobjects%2Fr5"), 21);
    cr_assert_eq(put_status("/objects/r5/x", 20, "x", NULL), 409);
}

Test(fence, a_forwarded_request_without_an_answer_is_audited_as_unknown_outcome)
{
    char *audit;
    size_t alen;
    struct ts_resp r;

    /* The upstream takes the request and closes without a response. */
    cr_assert_eq(ts_upstream_set_response(up, ""), 0);
    ts_upstream_set_close_after_response(up, 1);
    cr_assert_eq(put_status("/objects/r6/x", 30, "x", &r), 502);
    ts_resp_free(&r);
    cr_assert_eq(ts_upstream_count(up), 1);
    /* The advance stands even though the upstream failed. */
    cr_assert_eq(put_status("/objects/r6/x", 29, "x", NULL), 409);
    ts_sleep_ms(300);
    audit = ts_read_file(px.audit, &alen);
    cr_assert_not_null(audit);
    cr_assert(strstr(audit, "\"event\":\"inflight_timeout\",\"route\":\"objects\","
                            "\"resource\":\"/objects/r6\",\"token\":30") != NULL,
              "audit: %s", audit);
    free(audit);
}

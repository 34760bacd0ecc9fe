/* Observability through the real proxy: metric values after a scripted
 * sequence of requests, the admin endpoints, and the audit chain across a
 * SIGHUP rotation checked with `fenceproxy audit verify` and read with
 * `fenceproxy audit tail`. */
#include <criterion/criterion.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ts_proc.h"
#include "ts_proxy.h"
#include "ts_upstream.h"

static struct ts_upstream *up;
static struct ts_proxy px;

static void setup(void)
{
    up = ts_upstream_start();
    cr_assert_not_null(up);
    cr_assert_eq(ts_proxy_init(&px, "admin"), 0);
    cr_assert_eq(ts_proxy_write_conf(&px, ts_upstream_port(up),
                                     "[route objects]\nprefix = /objects/\nresource = segments:2\n"),
                 0);
    cr_assert_eq(ts_proxy_start(&px), 0);
}

static void teardown(void)
{
    ts_proxy_cleanup(&px, 1);
    ts_upstream_stop(&up);
}

TestSuite(admin, .init = setup, .fini = teardown, .timeout = 60);

static int send_raw(const char *raw)
{
    return ts_http_raw(px.port, raw, strlen(raw), NULL, 5000);
}

static int put(const char *path, const char *token)
{
    char req[512];

    if (token != NULL)
        snprintf(req, sizeof(req),
                 "PUT %s HTTP/1.1\r\nHost: t\r\nFencing-Token: %s\r\nContent-Length: 1\r\n\r\nx",
                 path, token);
    else
        snprintf(req, sizeof(req), "PUT %s HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx",
                 path);
    return send_raw(req);
}

/* The value of one exact metric line ("name{labels}"), or -1. */
static double metric(const char *text, const char *series)
{
    size_t n = strlen(series);
    const char *p = text;

    while ((p = strstr(p, series)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p += n;
    }
    return -1;
}

Test(admin, metrics_after_a_scripted_sequence)
{
    struct ts_resp m;

    cr_assert_eq(put("/objects/u1/a", "5"), 200);
    cr_assert_eq(put("/objects/u1/a", "6"), 200);
    cr_assert_eq(put("/objects/u1/a", "6"), 200);
    cr_assert_eq(put("/objects/u1/a", "4"), 409);
    cr_assert_eq(put("/objects/u1/a", "5"), 409);
    cr_assert_eq(put("/objects/u1/a", NULL), 428);
    cr_assert_eq(put("/objects/u1/a", "x"), 400);
    cr_assert_eq(send_raw("GET /other HTTP/1.1\r\nHost: t\r\n\r\n"), 200);
    cr_assert_eq(send_raw("PUT /other HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n"),
                 400);
    ts_sleep_ms(200);
    cr_assert_eq(ts_http_get(px.admin_port, "/metrics", &m), 200);
    cr_assert_eq(metric(m.body, "fence_requests_total{route=\"objects\",outcome=\"forwarded\"}"), 3);
    cr_assert_eq(metric(m.body, "fence_requests_total{route=\"objects\",outcome=\"stale_token\"}"), 2);
    cr_assert_eq(metric(m.body, "fence_requests_total{route=\"objects\",outcome=\"missing_token\"}"), 1);
    cr_assert_eq(metric(m.body, "fence_requests_total{route=\"objects\",outcome=\"malformed_token\"}"),
                 1);
    cr_assert_eq(metric(m.body, "fence_requests_total{route=\"-\",outcome=\"forwarded\"}"), 1);
    cr_assert_eq(metric(m.body, "fence_requests_total{route=\"-\",outcome=\"bad_request\"}"), 1);
    cr_assert_eq(metric(m.body, "fence_rejections_total{reason=\"stale_token\"}"), 2);
    cr_assert_eq(metric(m.body, "fence_rejections_total{reason=\"missing_token\"}"), 1);
    cr_assert_eq(metric(m.body, "fence_rejections_total{reason=\"malformed_token\"}"), 1);
    cr_assert_eq(metric(m.body, "fence_rejections_total{reason=\"bad_request\"}"), 1);
    cr_assert_eq(metric(m.body, "fence_store_advances_total"), 2, "5 then 6: two advances");
    cr_assert_geq(metric(m.body, "fence_store_commit_batch_size_count"), 1);
    cr_assert_eq(metric(m.body, "fence_upstream_duration_seconds_count"), 4);
    cr_assert_eq(metric(m.body, "fence_inflight_requests"), 0);
    cr_assert_eq(metric(m.body, "fence_audit_records_total"), 4);
    cr_assert_eq(metric(m.body, "fence_audit_dropped_total"), 0);
    cr_assert_eq(metric(m.body, "fence_store_up"), 1);
    cr_assert(strstr(m.body, "# TYPE fence_upstream_duration_seconds histogram") != NULL);
    cr_assert(strstr(m.body, "fence_upstream_duration_seconds_bucket{le=\"+Inf\"} 4") != NULL);
    ts_resp_free(&m);
    cr_assert_eq(ts_upstream_count(up), 4, "only accepted requests reach the upstream");
}

Test(admin, healthz_tokens_and_unknown_paths)
{
    struct ts_resp r;

    cr_assert_eq(ts_http_get(px.admin_port, "/healthz", &r), 200);
    cr_assert_str_eq(r.body, "ok\n");
    ts_resp_free(&r);
    cr_assert_eq(put("/objects/user%2042/a", "9"), 200);
    cr_assert_eq(ts_http_get(px.admin_port, "/tokens/%2Fobjects%2Fuser%252042", &r), 200);
    cr_assert_str_eq(r.body, "{\"resource\":\"/objects/user%2042\",\"highest\":9}\n");
    ts_resp_free(&r);
    cr_assert_eq(ts_http_get(px.admin_port, "/tokens/%2Fobjects%2Fnobody", &r), 200);
    cr_assert_str_eq(r.body, "{\"resource\":\"/objects/nobody\",\"highest\":0}\n");
    ts_resp_free(&r);
    cr_assert_eq(ts_http_get(px.admin_port, "/nothing", &r), 404);
    ts_resp_free(&r);
    /* the data port does not serve admin paths: they go upstream */
    cr_assert_eq(ts_http_get(px.port, "/metrics", &r), 200);
    ts_resp_free(&r);
    cr_assert_eq(ts_upstream_count(up), 2);
}

/* Runs `fenceproxy ARGS` and returns its exit status; stdout into out. */
static int run_cli(const char *args, char *out, size_t cap)
{
    char cmd[4096], path[1100];
    FILE *f;
    size_t n;
    int st;

    snprintf(path, sizeof(path), "%s/cli.out", px.dir);
    snprintf(cmd, sizeof(cmd), "%s %s > %s 2>&1", ts_build_path("proxy/fenceproxy"), args, path);
    st = system(cmd);
    f = fopen(path, "r");
    cr_assert_not_null(f);
    n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    fclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(admin, audit_chain_survives_sighup_rotation)
{
    char rotated[1100], args[3000], out[8192];

    cr_assert_eq(put("/objects/r/a", "10"), 200);
    cr_assert_eq(put("/objects/r/a", "3"), 409);
    cr_assert_eq(put("/objects/r/a", NULL), 428);
    ts_sleep_ms(200);
    snprintf(rotated, sizeof(rotated), "%s.1", px.audit);
    cr_assert_eq(rename(px.audit, rotated), 0);
    cr_assert_eq(ts_proc_signal(&px.proc, SIGHUP), 0);
    ts_sleep_ms(200);
    cr_assert_eq(put("/objects/r/a", "7"), 409);
    cr_assert_eq(put("/objects/r/b", "8"), 409);
    ts_sleep_ms(300);
    cr_assert_eq(access(px.audit, F_OK), 0, "SIGHUP did not reopen the audit log");

    snprintf(args, sizeof(args), "audit verify %s %s", rotated, px.audit);
    cr_assert_eq(run_cli(args, out, sizeof(out)), 0, "verify: %s", out);
    cr_assert_str_eq(out, "ok 4 records\n");
    snprintf(args, sizeof(args), "audit verify %s %s", px.audit, rotated);
    cr_assert_eq(run_cli(args, out, sizeof(out)), 1, "reversed order must fail: %s", out);
    cr_assert(strstr(out, ":1: chain broken") != NULL, "%s", out);

    snprintf(args, sizeof(args), "audit tail -n 10 --resource /objects/r %s", px.audit);
    cr_assert_eq(run_cli(args, out, sizeof(out)), 0, "tail: %s", out);
    cr_assert(strstr(out, "stale_token") != NULL && strstr(out, "/objects/r") != NULL, "%s", out);
    cr_assert(strstr(out, "7") != NULL && strstr(out, "10") != NULL, "%s", out);
}

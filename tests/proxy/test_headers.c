/* Header rewriting (issue 3): hop-by-hop fields never reach the upstream,
 * X-Forwarded-For / X-Forwarded-Proto / Via are added, X-Request-Id is made
 * when absent (the same value goes upstream and back to the client) and kept
 * when the client sent one; the access log has one line per request. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pxt.h"

TestSuite(headers, .fini = pxt_teardown, .timeout = 60);

Test(headers, hop_by_hop_not_forwarded)
{
    static const char raw[] =
        "GET /hop HTTP/1.1\r\nHost: a\r\n"
        "Connection: close, X-Secret, x-other\r\n"
        "Keep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: websocket\r\n"
        "Proxy-Connection: keep-alive\r\nX-Secret: s3cret\r\nX-Other: o\r\nX-Kept: yes\r\n\r\n";
    static const char *const gone[] = {"Connection", "Keep-Alive", "TE",     "Trailer",
                                       "Upgrade",    "Proxy-Connection", "X-Secret", "X-Other"};
    struct ts_resp r;
    struct ts_upstream_req *q;
    char val[256];

    pxt_setup(NULL);
    cr_assert_eq(ts_http_raw(pxt.px.port, raw, sizeof(raw) - 1, &r, 5000), 200);
    ts_resp_free(&r);
    pxt_wait_count(1, 3000);
    q = pxt_get(0);
    for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++)
        cr_assert_eq(ts_upstream_header(q, gone[i], NULL, 0), 0, "%s forwarded:\n%s", gone[i],
                     q->head);
    cr_assert_null(strstr(q->head, "s3cret"), "a field named by Connection leaked:\n%s", q->head);
    cr_assert_eq(ts_upstream_header(q, "X-Kept", val, sizeof(val)), 1);
    cr_assert_str_eq(val, "yes");
    cr_assert_eq(ts_upstream_header(q, "Host", val, sizeof(val)), 1);
    cr_assert_str_eq(val, "a");
    free(q);
    pxt_pass();
}

/* Hop-by-hop fields in the upstream's response do not reach the client. */
Test(headers, hop_by_hop_not_returned)
{
    struct ts_resp r;
    char val[64];

    pxt_setup(NULL);
    ts_upstream_set_response(pxt.up, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                     "Connection: X-Up-Secret\r\nX-Up-Secret: 1\r\n"
                                     "Keep-Alive: timeout=9\r\nX-Up-Kept: 1\r\n\r\nok");
    cr_assert_eq(ts_http_get(pxt.px.port, "/r", &r), 200);
    cr_assert_not(ts_resp_header(&r, "X-Up-Secret", val, sizeof(val)), "%s", r.head);
    cr_assert_not(ts_resp_header(&r, "Keep-Alive", val, sizeof(val)), "%s", r.head);
    cr_assert(ts_resp_header(&r, "X-Up-Kept", val, sizeof(val)), "%s", r.head);
    cr_assert_str_eq(r.body, "ok");
    ts_resp_free(&r);
    pxt_pass();
}

Test(headers, forwarding_fields_added)
{
    static const char first[] = "GET /f HTTP/1.1\r\nHost: a\r\n\r\n";
    static const char second[] = "GET /g HTTP/1.0\r\nHost: a\r\n"
                                 "X-Forwarded-For: 203.0.113.7\r\nVia: 1.1 edge\r\n"
                                 "X-Forwarded-Proto: https\r\n\r\n";
    struct ts_resp r;
    struct ts_upstream_req *q;
    char val[256];

    pxt_setup(NULL);
    cr_assert_eq(ts_http_raw(pxt.px.port, first, sizeof(first) - 1, &r, 5000), 200);
    ts_resp_free(&r);
    cr_assert_eq(ts_http_raw(pxt.px.port, second, sizeof(second) - 1, &r, 5000), 200);
    ts_resp_free(&r);
    pxt_wait_count(2, 3000);
    q = pxt_get(0);
    cr_assert_eq(ts_upstream_header(q, "X-Forwarded-For", val, sizeof(val)), 1, "%s", q->head);
    cr_assert_str_eq(val, "127.0.0.1");
    cr_assert_eq(ts_upstream_header(q, "X-Forwarded-Proto", val, sizeof(val)), 1);
    cr_assert_str_eq(val, pxt.px.tls ? "https" : "http");
    cr_assert_eq(ts_upstream_header(q, "Via", val, sizeof(val)), 1);
    cr_assert_not_null(strstr(val, "1.1"), "Via: %s", val);
    free(q);
    q = pxt_get(1);
    cr_assert_eq(ts_upstream_header(q, "X-Forwarded-For", val, sizeof(val)), 1, "%s", q->head);
    cr_assert_str_eq(val, "203.0.113.7, 127.0.0.1");
    cr_assert_eq(ts_upstream_header(q, "X-Forwarded-Proto", val, sizeof(val)), 1,
                 "the client's X-Forwarded-Proto passed through:\n%s", q->head);
    cr_assert_str_eq(val, pxt.px.tls ? "https" : "http");
    cr_assert_eq(ts_upstream_header(q, "Via", val, sizeof(val)), 1);
    cr_assert_not_null(strstr(val, "1.1 edge, 1.0 "), "Via: %s", val);
    /* The upstream always gets HTTP/1.1 from the proxy. */
    cr_assert_not_null(strstr(q->head, "GET /g HTTP/1.1\r\n"), "%s", q->head);
    free(q);
    pxt_pass();
}

Test(headers, request_id_added_and_kept)
{
    static const char with_id[] = "GET /mine HTTP/1.1\r\nHost: a\r\nX-Request-Id: client-id-42\r\n"
                                  "Connection: close\r\n\r\n";
    struct ts_resp r;
    struct ts_upstream_req *q;
    char got[128], up[128];

    pxt_setup(NULL);
    /* The upstream's own X-Request-Id must not replace ours. */
    ts_upstream_set_response(pxt.up, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                     "X-Request-Id: from-upstream\r\n\r\nok");
    cr_assert_eq(ts_http_get(pxt.px.port, "/made", &r), 200);
    cr_assert(ts_resp_header(&r, "X-Request-Id", got, sizeof(got)), "no id returned:\n%s",
              r.head);
    ts_resp_free(&r);
    cr_assert_gt(strlen(got), 8, "id too short: %s", got);
    cr_assert_str_neq(got, "from-upstream");
    pxt_wait_count(1, 3000);
    q = pxt_get(0);
    cr_assert_eq(ts_upstream_header(q, "X-Request-Id", up, sizeof(up)), 1, "%s", q->head);
    cr_assert_str_eq(up, got, "upstream saw %s, client got %s", up, got);
    free(q);

    cr_assert_eq(ts_http_raw(pxt.px.port, with_id, sizeof(with_id) - 1, &r, 5000), 200);
    cr_assert(ts_resp_header(&r, "X-Request-Id", got, sizeof(got)));
    ts_resp_free(&r);
    cr_assert_str_eq(got, "client-id-42");
    pxt_wait_count(2, 3000);
    q = pxt_get(1);
    cr_assert_eq(ts_upstream_header(q, "X-Request-Id", up, sizeof(up)), 1, "%s", q->head);
    cr_assert_str_eq(up, "client-id-42");
    free(q);

    /* Two requests get two different ids. */
    cr_assert_eq(ts_http_get(pxt.px.port, "/made2", &r), 200);
    cr_assert(ts_resp_header(&r, "X-Request-Id", up, sizeof(up)));
    ts_resp_free(&r);
    cr_assert_str_neq(up, got);
    pxt_pass();
}

/* Local answers (errors) carry the request id too, once a head was parsed. */
Test(headers, access_log_one_line_per_request)
{
    static const char put[] = "PUT /obj/one HTTP/1.1\r\nHost: a\r\nX-Request-Id: rid-put-1\r\n"
                              "Content-Length: 3\r\nConnection: close\r\n\r\nabc";
    struct ts_resp r;
    char rid[128], line[1024];
    char *log, *l1, *l2;

    pxt_setup(NULL);
    cr_assert_eq(ts_http_get(pxt.px.port, "/obj/get?x=1", &r), 200);
    cr_assert(ts_resp_header(&r, "X-Request-Id", rid, sizeof(rid)));
    ts_resp_free(&r);
    ts_upstream_set_response(pxt.up, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    cr_assert_eq(ts_http_raw(pxt.px.port, put, sizeof(put) - 1, NULL, 5000), 201);
    log = pxt_access_log(2);
    cr_assert_not_null(log, "no access log");
    l1 = log;
    l2 = strchr(l1, '\n');
    cr_assert_not_null(l2, "log: %s", log);
    *l2++ = '\0';
    cr_assert_not_null(strstr(l1, "\"GET /obj/get?x=1 HTTP/1.1\" 200 "), "line 1: %s", l1);
    cr_assert_not_null(strstr(l1, rid), "line 1 lacks the id %s: %s", rid, l1);
    cr_assert_not_null(strstr(l1, "127.0.0.1:"), "line 1 lacks the client: %s", l1);
    snprintf(line, sizeof(line), "%s", l2);
    cr_assert_not_null(strstr(line, "\"PUT /obj/one HTTP/1.1\" 201 "), "line 2: %s", line);
    cr_assert_not_null(strstr(line, "rid-put-1"), "line 2: %s", line);
    cr_assert_null(strchr(strchr(line, '\n') + 1, '\n'), "more than two lines:\n%s", line);
    free(log);
    pxt_pass();
}

/* access_log_format = json: one JSON object a line, which python3's json
 * module reads back with the same fields the text line has; a target with
 * quotes and control bytes stays one valid line. */
Test(headers, access_log_as_json_lines)
{
    const char odd[] = "GET /obj/%22q%22?a=\"b\" HTTP/1.1\r\nHost: a\r\nX-Request-Id: rid-j\r\n\r\n";
    char path[1100], cmd[2048];
    struct ts_resp r;
    char *log;
    FILE *f;
    int rc;

    pxt_setup("access_log_format = json\n");
    cr_assert_eq(ts_http_get(pxt.px.port, "/obj/j", &r), 200);
    ts_resp_free(&r);
    ts_http_raw(pxt.px.port, odd, sizeof(odd) - 1, NULL, 5000);
    log = pxt_access_log(2);
    cr_assert_not_null(log, "no access log");
    snprintf(path, sizeof(path), "%s.copy", pxt.px.access);
    f = fopen(path, "w");
    cr_assert(f != NULL);
    fputs(log, f);
    fclose(f);
    free(log);
    snprintf(cmd, sizeof(cmd),
             "/usr/bin/python3 -c 'import json,sys\n"
             "ls=[json.loads(l) for l in open(sys.argv[1])]\n"
             "assert len(ls)==2, ls\n"
             "a,b=ls\n"
             "assert a[\"method\"]==\"GET\" and a[\"target\"]==\"/obj/j\" and a[\"status\"]==200, a\n"
             "assert a[\"version\"]==\"1.1\" and a[\"client\"].startswith(\"127.0.0.1:\"), a\n"
             "assert isinstance(a[\"bytes\"], int) and isinstance(a[\"upstream_ms\"], float), a\n"
             "assert b[\"request_id\"]==\"rid-j\", b\n"
             "' %s",
             path);
    cr_assert(access("/usr/bin/python3", X_OK) == 0, "python3 is needed to read the JSON log");
    rc = system(cmd);
    cr_assert_eq(rc, 0, "the JSON access log did not parse or lacks fields (see above)");
    pxt_pass();
}

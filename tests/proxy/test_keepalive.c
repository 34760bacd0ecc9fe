/* Keep-alive on both sides and pipelining (issue 3): several requests on one
 * client connection ride one upstream connection; a later client connection
 * reuses the pooled upstream connection; pipelined requests sent in one write
 * are answered in order. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pxt.h"

TestSuite(keepalive, .fini = pxt_teardown, .timeout = 60);

static void get_on(int fd, const char *target, int close_it)
{
    char req[256];
    struct ts_resp r;

    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: a\r\n%s\r\n", target,
             close_it ? "Connection: close\r\n" : "");
    pxt_sends(fd, req);
    cr_assert_eq(ts_http_read(fd, &r, 5000, 0), 0, "%s: no response", target);
    cr_assert_eq(r.status, 200, "%s: %d", target, r.status);
    cr_assert_str_eq(r.body, "ok");
    if (!close_it)
        cr_assert_null(strstr(r.head, "Connection: close"), "%s:\n%s", target, r.head);
    ts_resp_free(&r);
}

Test(keepalive, reuse_on_both_sides)
{
    int fd;
    struct ts_upstream_req *q;

    pxt_setup(NULL);
    fd = pxt_connect();
    for (int i = 0; i < 5; i++) {
        char t[32];
        snprintf(t, sizeof(t), "/one/%d", i);
        get_on(fd, t, 0);
    }
    close(fd);
    /* A second client connection, later: the pooled upstream one is reused. */
    fd = pxt_connect();
    get_on(fd, "/two/0", 0);
    get_on(fd, "/two/1", 1);
    cr_assert(ts_wait_closed(fd, 3000), "Connection: close not honoured");
    close(fd);
    pxt_wait_count(7, 3000);
    for (size_t i = 0; i < 7; i++) {
        q = pxt_get(i);
        cr_assert_eq(q->conn, 0, "request %zu (%s) came on upstream connection %zu", i,
                     q->target, q->conn);
        free(q);
    }
    cr_assert_eq(ts_upstream_connections(pxt.up), 1);
    pxt_pass();
}

/* HTTP/1.0 clients get keep-alive only when they ask for it. */
Test(keepalive, http10_keep_alive)
{
    struct ts_resp r;
    char val[64];
    int fd;

    pxt_setup(NULL);
    fd = pxt_connect();
    pxt_sends(fd, "GET /k1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    cr_assert_eq(ts_http_read(fd, &r, 5000, 0), 0);
    cr_assert_eq(r.status, 200);
    cr_assert(ts_resp_header(&r, "Connection", val, sizeof(val)), "%s", r.head);
    cr_assert_str_eq(val, "keep-alive");
    ts_resp_free(&r);
    pxt_sends(fd, "GET /k2 HTTP/1.0\r\n\r\n");
    cr_assert_eq(ts_http_read(fd, &r, 5000, 0), 0);
    cr_assert_eq(r.status, 200);
    ts_resp_free(&r);
    cr_assert(ts_wait_closed(fd, 3000), "HTTP/1.0 without keep-alive left open");
    close(fd);
    pxt_pass();
}

/* Parses the next response (Content-Length framing) at *p; returns its
 * status and copies its X-Request-Id. */
static int next_response(const char **p, const char *end, char *rid, size_t cap)
{
    const char *eoh = strstr(*p, "\r\n\r\n");
    const char *f;
    int status = 0;
    size_t cl = 0;

    cr_assert_not_null(eoh, "incomplete response: %s", *p);
    cr_assert_eq(sscanf(*p, "HTTP/1.1 %d", &status), 1);
    f = strstr(*p, "Content-Length: ");
    cr_assert(f != NULL && f < eoh);
    cl = strtoul(f + 16, NULL, 10);
    f = strstr(*p, "X-Request-Id: ");
    cr_assert(f != NULL && f < eoh);
    f += 14;
    snprintf(rid, cap, "%.*s", (int)(strstr(f, "\r\n") - f), f);
    *p = eoh + 4 + cl;
    cr_assert(*p <= end);
    return status;
}

Test(keepalive, pipelined_answered_in_order)
{
    static const char three[] = "GET /p/a HTTP/1.1\r\nHost: a\r\nX-Request-Id: pipe-1\r\n\r\n"
                                "PUT /p/b HTTP/1.1\r\nHost: a\r\nX-Request-Id: pipe-2\r\n"
                                "Content-Length: 4\r\n\r\nbody"
                                "GET /p/c HTTP/1.1\r\nHost: a\r\nX-Request-Id: pipe-3\r\n"
                                "Connection: close\r\n\r\n";
    static const char *const want[] = {"/p/a", "/p/b", "/p/c"};
    char rid[64], exp[64];
    const char *p;
    size_t len;
    char *all;
    int fd;

    pxt_setup(NULL);
    /* A slow first answer must not let the later ones overtake it. */
    ts_upstream_set_delay_ms(pxt.up, 50);
    fd = pxt_connect();
    pxt_send(fd, three, sizeof(three) - 1);
    all = pxt_read_until_close(fd, &len, 5000);
    close(fd);
    p = all;
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(next_response(&p, all + len, rid, sizeof(rid)), 200, "response %d", i);
        snprintf(exp, sizeof(exp), "pipe-%d", i + 1);
        cr_assert_str_eq(rid, exp, "response %d is for %s", i, rid);
    }
    cr_assert_eq(p, all + len, "extra bytes after three responses: %s", p);
    free(all);
    pxt_wait_count(3, 3000);
    for (size_t i = 0; i < 3; i++) {
        struct ts_upstream_req *q = pxt_get(i);
        cr_assert_str_eq(q->target, want[i]);
        cr_assert_eq(q->conn, 0);
        if (i == 1)
            cr_assert_eq(q->body_len, 4);
        free(q);
    }
    pxt_pass();
}

/* Pipelined requests split across writes at awkward places. */
Test(keepalive, pipelined_split_writes)
{
    static const char two[] = "GET /s/1 HTTP/1.1\r\nHost: a\r\nX-Request-Id: s-1\r\n\r\n"
                              "GET /s/2 HTTP/1.1\r\nHost: a\r\nX-Request-Id: s-2\r\n"
                              "Connection: close\r\n\r\n";
    char rid[64];
    const char *p;
    size_t len, cut = 60;
    char *all;
    int fd;

    pxt_setup(NULL);
    fd = pxt_connect();
    pxt_send(fd, two, cut);
    ts_sleep_ms(30);
    pxt_send(fd, two + cut, sizeof(two) - 1 - cut);
    all = pxt_read_until_close(fd, &len, 5000);
    close(fd);
    p = all;
    cr_assert_eq(next_response(&p, all + len, rid, sizeof(rid)), 200);
    cr_assert_str_eq(rid, "s-1");
    cr_assert_eq(next_response(&p, all + len, rid, sizeof(rid)), 200);
    cr_assert_str_eq(rid, "s-2");
    free(all);
    pxt_pass();
}

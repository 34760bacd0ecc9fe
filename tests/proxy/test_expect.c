/* Expect: 100-continue (issue 3): the proxy answers 100 Continue itself once
 * it accepted the head, and the client sends its body only then; a request
 * the proxy refuses from its head (bad framing, a fencing rejection) gets the
 * final status without a 100, and nothing reaches the upstream. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pxt.h"

TestSuite(expect, .fini = pxt_teardown, .timeout = 60);

Test(expect, continue_then_body)
{
    struct ts_resp r;
    struct ts_upstream_req *q;
    int fd;

    pxt_setup(NULL);
    fd = pxt_connect();
    pxt_sends(fd, "PUT /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                  "Content-Length: 11\r\n\r\n");
    cr_assert_eq(ts_http_read(fd, &r, 5000, 1), 0, "no 100 Continue");
    cr_assert_eq(r.status, 100);
    cr_assert_not_null(strstr(r.head, "HTTP/1.1 100 Continue\r\n"), "%s", r.head);
    ts_resp_free(&r);
    cr_assert_eq(ts_upstream_count(pxt.up), 0);
    pxt_sends(fd, "hello world");
    cr_assert_eq(ts_http_read(fd, &r, 5000, 1), 0);
    cr_assert_eq(r.status, 200, "after the body: %d", r.status);
    cr_assert_str_eq(r.body, "ok");
    ts_resp_free(&r);
    close(fd);
    pxt_wait_count(1, 3000);
    q = pxt_get(0);
    cr_assert_eq(q->body_len, 11);
    cr_assert_eq(q->body_hash, ts_upstream_hash("hello world", 11));
    /* The proxy answered Expect itself: the upstream is not asked again. */
    cr_assert_eq(ts_upstream_header(q, "Expect", NULL, 0), 0, "%s", q->head);
    free(q);
    pxt_pass();
}

Test(expect, continue_chunked)
{
    struct ts_resp r;
    struct ts_upstream_req *q;
    int fd;

    pxt_setup(NULL);
    fd = pxt_connect();
    pxt_sends(fd, "POST /ec HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n");
    cr_assert_eq(ts_http_read(fd, &r, 5000, 1), 0, "no 100 Continue");
    cr_assert_eq(r.status, 100);
    ts_resp_free(&r);
    pxt_sends(fd, "3\r\nabc\r\n0\r\n\r\n");
    cr_assert_eq(ts_http_read(fd, &r, 5000, 1), 0);
    cr_assert_eq(r.status, 200);
    ts_resp_free(&r);
    close(fd);
    pxt_wait_count(1, 3000);
    q = pxt_get(0);
    cr_assert_eq(q->body_len, 3);
    free(q);
    pxt_pass();
}

/* Refused heads with Expect: the final status comes first, no 100. */
static void refused_with_expect(const char *name, const char *head, int status)
{
    struct ts_resp r;
    int fd = pxt_connect();

    pxt_sends(fd, head);
    cr_assert_eq(ts_http_read(fd, &r, 5000, 1), 0, "%s: no response", name);
    cr_assert_eq(r.status, status, "%s: got %d first", name, r.status);
    cr_assert_not_null(strstr(r.head, "Connection: close"), "%s:\n%s", name, r.head);
    ts_resp_free(&r);
    cr_assert(ts_wait_closed(fd, 3000), "%s: left open", name);
    close(fd);
    cr_assert_eq(ts_upstream_connections(pxt.up), 0, "%s: upstream connected", name);
    cr_assert_eq(ts_upstream_bytes(pxt.up), 0, "%s: bytes reached the upstream", name);
}

Test(expect, framing_rejection_without_100)
{
    pxt_setup(NULL);
    refused_with_expect("bad Host",
                        "PUT /x HTTP/1.1\r\nHost: a/b\r\nExpect: 100-continue\r\n"
                        "Content-Length: 5\r\n\r\n",
                        400);
    refused_with_expect("CL and TE",
                        "PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                        400);
    refused_with_expect("unknown expectation",
                        "PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n"
                        "Content-Length: 5\r\n\r\n",
                        417);
    pxt_pass();
}

Test(expect, fencing_rejection_without_100)
{
    pxt_setup("[route objects]\nprefix = /objects/\nresource = segments:2\n");
    refused_with_expect("missing token",
                        "PUT /objects/u1/a HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                        "Content-Length: 5\r\n\r\n",
                        428);
    refused_with_expect("malformed token",
                        "PUT /objects/u1/a HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                        "Fencing-Token: 07\r\nContent-Length: 5\r\n\r\n",
                        400);
    pxt_pass();
}

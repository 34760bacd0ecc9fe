/* Peers that go away mid-exchange: a client that hangs up while its request
 * is at the upstream, during its upload or while a large response is
 * streaming; an upstream that closes in the middle of a response. The proxy
 * must survive (these are the paths ASan watches for use-after-free), never
 * hand the upstream a partial request as complete, and never reuse an
 * upstream connection left in an unknown state. Also HEAD and a pipelined
 * bad request behind a good one. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pxt.h"

TestSuite(abort, .fini = pxt_teardown, .timeout = 60);

/* A later request is served, on an upstream connection other than conn
 * (SIZE_MAX: any connection). */
static void next_on_new_connection(size_t conn)
{
    struct ts_resp r;
    struct ts_upstream_req *q;
    size_t n;

    ts_upstream_set_response(pxt.up, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    cr_assert_eq(ts_http_get(pxt.px.port, "/next", &r), 200, "proxy broken afterwards");
    ts_resp_free(&r);
    n = ts_upstream_count(pxt.up);
    q = pxt_get(n - 1);
    cr_assert_str_eq(q->target, "/next");
    if (conn != SIZE_MAX)
        cr_assert_neq(q->conn, conn, "an upstream connection in an unknown state was reused");
    free(q);
}

/* EOF after a complete request reads as a half-close: the exchange with the
 * upstream completes (so its connection may be pooled again); writing the
 * response to the gone client fails and only the client side is closed. */
Test(abort, client_leaves_while_upstream_holds)
{
    int fd;

    pxt_setup(NULL);
    ts_upstream_hold(pxt.up, "/held");
    fd = pxt_connect();
    pxt_sends(fd, "GET /held HTTP/1.1\r\nHost: a\r\n\r\n");
    pxt_wait_count(1, 3000);
    close(fd);
    ts_sleep_ms(100);
    ts_upstream_release(pxt.up, "/held");
    ts_sleep_ms(100);
    next_on_new_connection(SIZE_MAX);
    pxt_pass();
}

Test(abort, half_close_still_answered)
{
    struct ts_resp r;
    int fd;

    pxt_setup(NULL);
    ts_upstream_set_delay_ms(pxt.up, 100);
    fd = pxt_connect();
    pxt_sends(fd, "PUT /hc HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
    cr_assert_eq(shutdown(fd, SHUT_WR), 0);
    cr_assert_eq(ts_http_read(fd, &r, 3000, 0), 0, "no response after a half-close");
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "ok");
    ts_resp_free(&r);
    cr_assert(ts_wait_closed(fd, 2000), "left open after the client's EOF");
    close(fd);
    pxt_pass();
}

Test(abort, client_leaves_mid_upload)
{
    static char chunk[65536];
    int fd;

    pxt_setup(NULL);
    fd = pxt_connect();
    pxt_sends(fd, "PUT /partial HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\n");
    for (int i = 0; i < 4; i++)
        pxt_send(fd, chunk, sizeof(chunk));
    ts_sleep_ms(100);
    close(fd);
    ts_sleep_ms(200);
    cr_assert_eq(ts_upstream_count(pxt.up), 0, "a partial upload reached the upstream as whole");
    next_on_new_connection(0);
    pxt_pass();
}

Test(abort, client_leaves_mid_chunked_upload)
{
    static char chunk[65536];
    int fd;

    pxt_setup(NULL);
    fd = pxt_connect();
    pxt_sends(fd, "PUT /partialc HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 4; i++) {
        pxt_sends(fd, "10000\r\n");
        pxt_send(fd, chunk, sizeof(chunk));
        pxt_sends(fd, "\r\n");
    }
    ts_sleep_ms(100);
    close(fd);
    ts_sleep_ms(200);
    cr_assert_eq(ts_upstream_count(pxt.up), 0, "a partial upload reached the upstream as whole");
    next_on_new_connection(0);
    pxt_pass();
}

Test(abort, client_stops_reading_large_response)
{
    size_t n = 16u * 1024 * 1024;
    char *raw = malloc(n + 128);
    int h = sprintf(raw, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", n);
    int fd;

    memset(raw + h, 'b', n);
    raw[h + n] = '\0';
    pxt_setup(NULL);
    cr_assert_eq(ts_upstream_set_response(pxt.up, raw), 0);
    free(raw);
    fd = pxt_connect();
    pxt_sends(fd, "GET /huge HTTP/1.1\r\nHost: a\r\n\r\n");
    ts_sleep_ms(300); /* both sides' buffers fill; the proxy pauses */
    close(fd);
    ts_sleep_ms(100);
    next_on_new_connection(0);
    pxt_pass();
}

Test(abort, upstream_closes_mid_response)
{
    struct ts_resp r;
    int fd;

    pxt_setup(NULL);
    /* Promises 10 bytes, sends 2, closes. */
    ts_upstream_set_response(pxt.up, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n"
                                      "\r\nok");
    fd = pxt_connect();
    pxt_sends(fd, "GET /short HTTP/1.1\r\nHost: a\r\n\r\n");
    cr_assert_neq(ts_http_read(fd, &r, 3000, 0), 0, "a truncated body was passed as complete");
    ts_resp_free(&r);
    cr_assert(ts_wait_closed(fd, 2000), "client connection not cut");
    close(fd);
    next_on_new_connection(0);
    pxt_pass();
}

Test(abort, upstream_closes_before_response)
{
    struct ts_resp r;

    pxt_setup(NULL);
    ts_upstream_set_response(pxt.up, "");
    ts_upstream_set_close_after_response(pxt.up, 1);
    cr_assert_eq(ts_http_get(pxt.px.port, "/nothing", &r), 502, "status %d", r.status);
    ts_resp_free(&r);
    ts_upstream_set_close_after_response(pxt.up, 0);
    next_on_new_connection(0);
    pxt_pass();
}

Test(abort, head_request_keeps_connection)
{
    struct ts_resp r;
    char val[32];
    int fd;

    pxt_setup(NULL);
    ts_upstream_set_response(pxt.up, "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");
    fd = pxt_connect();
    pxt_sends(fd, "HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n");
    /* ts_http_read would wait for 1234 bytes: read the head only. */
    {
        size_t len;
        char buf[4096] = "";
        long long t0 = ts_now_ms();
        len = 0;
        while (strstr(buf, "\r\n\r\n") == NULL && ts_now_ms() - t0 < 3000) {
            ssize_t k = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
            cr_assert_gt(k, 0);
            len += (size_t)k;
            buf[len] = '\0';
        }
        cr_assert_not_null(strstr(buf, "HTTP/1.1 200 "), "%s", buf);
        cr_assert_not_null(strstr(buf, "Content-Length: 1234\r\n"), "%s", buf);
        cr_assert_eq(strlen(strstr(buf, "\r\n\r\n")), 4, "HEAD response carried a body");
    }
    ts_upstream_set_response(pxt.up, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    pxt_sends(fd, "GET /g HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    cr_assert_eq(ts_http_read(fd, &r, 3000, 0), 0);
    cr_assert_eq(r.status, 200);
    cr_assert(ts_resp_header(&r, "Content-Length", val, sizeof(val)));
    cr_assert_str_eq(r.body, "ok");
    ts_resp_free(&r);
    close(fd);
    pxt_pass();
}

Test(abort, pipelined_bad_request_behind_good_one)
{
    static const char two[] = "GET /good HTTP/1.1\r\nHost: a\r\nX-Request-Id: g-1\r\n\r\n"
                              "GET /bad HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    size_t len;
    char *all;
    int fd;

    pxt_setup(NULL);
    fd = pxt_connect();
    pxt_send(fd, two, sizeof(two) - 1);
    all = pxt_read_until_close(fd, &len, 5000);
    close(fd);
    cr_assert_not_null(strstr(all, "HTTP/1.1 200 OK\r\n"), "%s", all);
    cr_assert_not_null(strstr(all, "g-1"), "%s", all);
    cr_assert_not_null(strstr(all, "HTTP/1.1 400 "), "%s", all);
    cr_assert_lt(strstr(all, "HTTP/1.1 200"), strstr(all, "HTTP/1.1 400"));
    free(all);
    cr_assert_eq(ts_upstream_count(pxt.up), 1, "the smuggled request reached the upstream");
    pxt_pass();
}

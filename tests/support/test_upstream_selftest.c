/* ts_upstream, the recording upstream the integration tests rely on, checked
 * with raw sockets: what it records, keep-alive, both body framings, hold and
 * release across connections, the behaviour switches, and a bounded stop. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ts_upstream.h"

#define OK_RESP "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

static struct ts_upstream *up;
static struct ts_upstream_req req; /* large: not on the stack */

static void start(void)
{
    up = ts_upstream_start();
    cr_assert_not_null(up);
    cr_assert_gt(ts_upstream_port(up), 0);
}

static void stop(void)
{
    ts_upstream_stop(&up);
}

static uint64_t ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int dial(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)ts_upstream_port(up)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    cr_assert(fd >= 0);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void put(int fd, const char *s)
{
    size_t n = strlen(s);
    cr_assert_eq(send(fd, s, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Reads exactly n bytes (or until EOF / timeout). Returns bytes read. */
static size_t get_n(int fd, char *buf, size_t n, int timeout_ms)
{
    size_t got = 0;
    uint64_t end = ms_now() + (uint64_t)timeout_ms;

    while (got < n) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        uint64_t now = ms_now();
        if (now >= end || poll(&p, 1, (int)(end - now)) <= 0)
            break;
        ssize_t k = recv(fd, buf + got, n - got, 0);
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    buf[got] = '\0';
    return got;
}

static void expect_ok(int fd)
{
    char buf[256];
    cr_assert_eq(get_n(fd, buf, strlen(OK_RESP), 3000), strlen(OK_RESP), "got '%s'", buf);
    cr_assert_str_eq(buf, OK_RESP);
}

/* 1 when the peer has closed (EOF within timeout_ms). */
static int closed_by_peer(int fd, int timeout_ms)
{
    char c;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, timeout_ms) == 1 && recv(fd, &c, 1, 0) == 0;
}

static int wait_connections(size_t n)
{
    for (int i = 0; i < 300; i++) {
        if (ts_upstream_connections(up) >= n)
            return 0;
        usleep(10000);
    }
    return -1;
}

TestSuite(upstream, .init = start, .fini = stop, .timeout = 30);

Test(upstream, nothing_recorded_before_a_request)
{
    cr_expect_eq(ts_upstream_count(up), 0);
    cr_expect_eq(ts_upstream_connections(up), 0);
    cr_expect_eq(ts_upstream_bytes(up), 0);
    cr_expect_eq(ts_upstream_get(up, 0, &req), -1);

    int fd = dial();
    cr_assert_eq(wait_connections(1), 0);
    close(fd);
    cr_expect_eq(ts_upstream_count(up), 0);
    cr_expect_eq(ts_upstream_bytes(up), 0);
    cr_expect_eq(ts_upstream_wait_count(up, 1, 100), -1);
}

Test(upstream, keep_alive_two_requests_one_connection)
{
    const char *r1 = "GET /a?x=1 HTTP/1.1\r\nHost: h\r\nX-Two: 1\r\nx-two: 2\r\n\r\n";
    const char *r2 = "DELETE /b HTTP/1.1\r\nHost: h\r\n\r\n";
    char v[64];
    int fd = dial();

    put(fd, r1);
    expect_ok(fd);
    put(fd, r2);
    expect_ok(fd);
    cr_assert_eq(ts_upstream_wait_count(up, 2, 3000), 0);
    cr_expect_eq(ts_upstream_count(up), 2);
    cr_expect_eq(ts_upstream_connections(up), 1);
    cr_expect_eq(ts_upstream_bytes(up), strlen(r1) + strlen(r2));

    cr_assert_eq(ts_upstream_get(up, 0, &req), 0);
    cr_expect_str_eq(req.method, "GET");
    cr_expect_str_eq(req.target, "/a?x=1");
    cr_expect_str_eq(req.head, r1);
    cr_expect_eq(req.head_len, strlen(r1));
    cr_expect_eq(req.body_len, 0);
    cr_expect_eq(req.body_hash, ts_upstream_hash("", 0));
    cr_expect_eq(req.conn, 0);
    cr_expect_gt(req.recv_ns, 0);
    cr_expect_geq(req.resp_ns, req.recv_ns);
    cr_expect_eq(ts_upstream_header(&req, "x-TWO", v, sizeof v), 2);
    cr_expect_str_eq(v, "1");
    cr_expect_eq(ts_upstream_header(&req, "host", NULL, 0), 1);
    cr_expect_eq(ts_upstream_header(&req, "X-Tw", v, sizeof v), 0);
    cr_expect_eq(ts_upstream_header(&req, "GET /a?x=1 HTTP/1.1\r\nHost", v, sizeof v), 0);

    uint64_t first_resp = req.resp_ns;
    cr_assert_eq(ts_upstream_get(up, 1, &req), 0);
    cr_expect_str_eq(req.method, "DELETE");
    cr_expect_str_eq(req.target, "/b");
    cr_expect_eq(req.conn, 0);
    cr_expect_gt(req.recv_ns, first_resp);
    close(fd);
}

Test(upstream, pipelined_requests_answered_in_order)
{
    int fd = dial();
    char buf[256];

    put(fd, "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_assert_eq(get_n(fd, buf, 2 * strlen(OK_RESP), 3000), 2 * strlen(OK_RESP));
    cr_assert_eq(ts_upstream_get(up, 1, &req), 0);
    cr_expect_str_eq(req.target, "/2");
    close(fd);
}

Test(upstream, content_length_body)
{
    int fd = dial();

    put(fd, "PUT /o HTTP/1.1\r\nHost: h\r\nContent-Length: 011\r\n\r\nhello");
    usleep(50000); /* the body arrives in two pieces */
    put(fd, " world");
    expect_ok(fd);
    cr_assert_eq(ts_upstream_get(up, 0, &req), 0);
    cr_expect_eq(req.body_len, 11);
    cr_expect_eq(req.body_kept, 11);
    cr_expect_eq(memcmp(req.body, "hello world", 11), 0);
    cr_expect_eq(req.body_hash, ts_upstream_hash("hello world", 11));
    cr_expect_eq(req.chunked, 0);
    close(fd);
}

Test(upstream, chunked_body_is_decoded)
{
    int fd = dial();

    put(fd, "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer-Field: x\r\n\r\n");
    expect_ok(fd);
    cr_assert_eq(ts_upstream_get(up, 0, &req), 0);
    cr_expect_eq(req.chunked, 1);
    cr_expect_eq(req.body_len, 11);
    cr_expect_eq(memcmp(req.body, "hello world", 11), 0);
    cr_expect_eq(req.body_hash, ts_upstream_hash("hello world", 11));
    /* And the connection is still good for the next request. */
    put(fd, "GET /after HTTP/1.1\r\nHost: h\r\n\r\n");
    expect_ok(fd);
    cr_assert_eq(ts_upstream_get(up, 1, &req), 0);
    cr_expect_str_eq(req.target, "/after");
    close(fd);
}

Test(upstream, hold_and_release_across_connections)
{
    static struct ts_upstream_req breq;
    struct ts_upstream_req *b = &breq;
    char buf[256];

    cr_assert_eq(ts_upstream_hold(up, "Fencing-Token: 5"), 0);
    int fa = dial(), fb = dial();
    put(fa, "PUT /r HTTP/1.1\r\nHost: h\r\nFencing-Token: 5\r\nContent-Length: 1\r\n\r\nA");
    cr_assert_eq(ts_upstream_wait_count(up, 1, 3000), 0);
    put(fb, "PUT /r HTTP/1.1\r\nHost: h\r\nFencing-Token: 6\r\nContent-Length: 1\r\n\r\nB");
    expect_ok(fb); /* served while the other connection is held */
    cr_expect_eq(get_n(fa, buf, 1, 200), 0, "held request was answered");
    ts_upstream_release(up, "Fencing-Token: 5");
    expect_ok(fa);

    cr_assert_eq(ts_upstream_get(up, 0, &req), 0);
    cr_assert_eq(ts_upstream_get(up, 1, b), 0);
    cr_expect_eq(req.body[0], 'A');
    cr_expect_eq(b->body[0], 'B');
    cr_expect_neq(req.conn, b->conn);
    cr_expect_lt(req.recv_ns, b->recv_ns);
    cr_expect_lt(b->resp_ns, req.resp_ns, "the held response went out first");
    close(fa);
    close(fb);
}

Test(upstream, custom_response_and_close_after)
{
    const char *raw = "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n";
    char buf[256];
    int fd = dial();

    cr_assert_eq(ts_upstream_set_response(up, raw), 0);
    ts_upstream_set_close_after_response(up, 1);
    put(fd, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_expect_eq(get_n(fd, buf, strlen(raw), 3000), strlen(raw));
    cr_expect_str_eq(buf, raw);
    cr_expect(closed_by_peer(fd, 3000));
    close(fd);
}

Test(upstream, connection_close_in_response_closes)
{
    const char *raw = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    char buf[256];
    int fd = dial();

    cr_assert_eq(ts_upstream_set_response(up, raw), 0);
    put(fd, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_expect_eq(get_n(fd, buf, strlen(raw), 3000), strlen(raw));
    cr_expect(closed_by_peer(fd, 3000));
    close(fd);
}

Test(upstream, head_gets_no_body)
{
    char buf[256];
    int fd = dial();
    size_t headlen = strlen(OK_RESP) - 2;

    put(fd, "HEAD / HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_expect_eq(get_n(fd, buf, headlen, 3000), headlen);
    cr_expect_eq(get_n(fd, buf, 1, 200), 0, "a body followed a HEAD response");
    close(fd);
}

Test(upstream, delay)
{
    int fd = dial();
    uint64_t t0 = ms_now();

    ts_upstream_set_delay_ms(up, 300);
    put(fd, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    expect_ok(fd);
    cr_expect_geq(ms_now() - t0, 300);
    close(fd);
}

Test(upstream, expect_100_continue)
{
    char buf[256];
    const char *cont = "HTTP/1.1 100 Continue\r\n\r\n";
    int fd = dial();

    put(fd, "PUT /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
    cr_expect_eq(get_n(fd, buf, strlen(cont), 3000), strlen(cont));
    cr_expect_str_eq(buf, cont);
    put(fd, "hi");
    expect_ok(fd);
    close(fd);
}

Test(upstream, sink_keeps_length_and_hash_only)
{
    static char body[300000];
    char head[128];
    int fd = dial();

    for (size_t i = 0; i < sizeof body; i++)
        body[i] = (char)('a' + i % 26);
    ts_upstream_set_sink(up, 1);
    snprintf(head, sizeof head, "PUT /big HTTP/1.1\r\nHost: h\r\nContent-Length: %zu\r\n\r\n",
             sizeof body);
    put(fd, head);
    for (size_t off = 0; off < sizeof body;) {
        ssize_t k = send(fd, body + off, sizeof body - off, MSG_NOSIGNAL);
        cr_assert_gt(k, 0);
        off += (size_t)k;
    }
    expect_ok(fd);
    cr_assert_eq(ts_upstream_get(up, 0, &req), 0);
    cr_expect_eq(req.body_len, sizeof body);
    cr_expect_eq(req.body_kept, 0);
    cr_expect_eq(req.body_hash, ts_upstream_hash(body, sizeof body));
    cr_expect_eq(ts_upstream_bytes(up), strlen(head) + sizeof body);
    close(fd);
}

Test(upstream, unparsable_request_closes_and_is_counted)
{
    int fd = dial();

    put(fd, "PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n");
    cr_expect(closed_by_peer(fd, 3000));
    cr_expect_eq(ts_upstream_count(up), 0);
    cr_expect_eq(ts_upstream_parse_errors(up), 1);
    close(fd);
}

Test(upstream, stop_with_held_request_is_bounded, .fini = NULL)
{
    int fd = dial();
    uint64_t t0;

    cr_assert_eq(ts_upstream_hold(up, "/held"), 0);
    put(fd, "GET /held HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_assert_eq(ts_upstream_wait_count(up, 1, 3000), 0);
    t0 = ms_now();
    ts_upstream_stop(&up);
    cr_expect_null(up);
    cr_expect_lt(ms_now() - t0, 2000);
    cr_expect(closed_by_peer(fd, 3000));
    close(fd);
}

/* Waits until the arrivals log holds n requests (3 s). */
static int wait_arrivals(size_t n)
{
    for (int i = 0; i < 300; i++) {
        if (ts_upstream_arrivals(up) >= n)
            return 0;
        usleep(10000);
    }
    return -1;
}

Test(upstream, arrivals_log_a_cut_off_request)
{
    struct ts_upstream_arrival a;
    char why[512];
    int fd = dial();

    /* A head and 3 of 10 body bytes, then the connection goes away. */
    put(fd, "PUT /r/x HTTP/1.1\r\nHost: h\r\nFencing-Token: 7\r\nContent-Length: 10\r\n\r\nabc");
    cr_assert_eq(wait_arrivals(1), 0);
    for (int i = 0; i < 300; i++) {
        cr_assert_eq(ts_upstream_arrival(up, 0, "Fencing-Token", &a), 0);
        if (a.body_got == 3)
            break;
        usleep(10000);
    }
    cr_expect_eq(a.body_got, 3);
    cr_expect_eq(a.complete, 0);
    cr_expect_eq(a.end_ns, 0, "its connection is still open");
    cr_expect_eq(ts_upstream_inflight_end(&a), UINT64_MAX, "still in flight");
    cr_expect_str_eq(a.field, "7");
    cr_expect_str_eq(a.target, "/r/x");
    close(fd);
    for (int i = 0; i < 300 && a.end_ns == 0; i++) {
        usleep(10000);
        cr_assert_eq(ts_upstream_arrival(up, 0, "Fencing-Token", &a), 0);
    }
    cr_expect_gt(a.end_ns, 0, "the close was not noticed");
    cr_expect_eq(ts_upstream_inflight_end(&a), a.last_ns, "cut off: in flight until its last byte");
    cr_expect_geq(a.last_ns, a.head_ns);
    cr_expect_eq(ts_upstream_count(up), 0, "a cut-off request is not a received one");
    cr_expect_eq(ts_upstream_overlaps(up, "Fencing-Token", NULL, why, sizeof why), 0, "%s", why);
    cr_expect_eq(ts_upstream_arrival(up, 1, NULL, &a), -1);
}

Test(upstream, overlaps_of_two_tokens_in_flight)
{
    char why[512];
    int fa = dial(), fb = dial(), fc;

    /* One after the other: no overlap, whatever the tokens. */
    put(fa, "PUT /r/a HTTP/1.1\r\nHost: h\r\nFencing-Token: 5\r\nContent-Length: 1\r\n\r\nA");
    expect_ok(fa);
    put(fb, "PUT /r/a HTTP/1.1\r\nHost: h\r\nFencing-Token: 6\r\nContent-Length: 1\r\n\r\nB");
    expect_ok(fb);
    cr_expect_eq(ts_upstream_overlaps(up, "Fencing-Token", "/r/", why, sizeof why), 0, "%s", why);
    /* Token 6 held while 7 arrives: one pair. The same token twice at once
     * is no overlap, nor is a request for another target prefix. */
    cr_assert_eq(ts_upstream_hold(up, "Fencing-Token: 6"), 0);
    put(fa, "PUT /r/a HTTP/1.1\r\nHost: h\r\nFencing-Token: 6\r\nContent-Length: 1\r\n\r\nC");
    cr_assert_eq(wait_arrivals(3), 0);
    fc = dial();
    put(fc, "PUT /other HTTP/1.1\r\nHost: h\r\nFencing-Token: 9\r\nContent-Length: 1\r\n\r\nX");
    expect_ok(fc);
    cr_expect_eq(ts_upstream_overlaps(up, "Fencing-Token", "/r/", why, sizeof why), 0, "%s", why);
    cr_expect_eq(ts_upstream_overlaps(up, "Fencing-Token", NULL, NULL, 0), 1, "/other overlaps");
    put(fb, "PUT /r/a HTTP/1.1\r\nHost: h\r\nFencing-Token: 7\r\nContent-Length: 1\r\n\r\nD");
    expect_ok(fb);
    cr_expect_eq(ts_upstream_overlaps(up, "Fencing-Token", "/r/", why, sizeof why), 1);
    cr_expect_neq(strstr(why, "\"6\""), NULL, "%s", why);
    ts_upstream_release(up, "Fencing-Token: 6");
    expect_ok(fa);
    cr_expect_eq(ts_upstream_overlaps(up, "Fencing-Token", "/r/", NULL, 0), 1);
    close(fa);
    close(fb);
    close(fc);
}

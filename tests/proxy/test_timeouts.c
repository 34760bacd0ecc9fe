/* Timeouts, limits and upstream errors (issue 3), with short timeouts in the
 * config: 408 for a head that does not finish by its deadline (even while
 * bytes keep coming), idle keep-alive connections closed, 502 when the
 * upstream refuses or answers with bad framing (and that connection is not
 * reused), 504 when it does not answer or cannot be reached in time, 503
 * beyond max_connections. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pxt.h"

#define SHORT "header_timeout = 500ms\nidle_timeout = 1s\nupstream_connect_timeout = 300ms\n" \
              "upstream_timeout = 500ms\n"

TestSuite(timeouts, .fini = pxt_teardown, .timeout = 60);

Test(timeouts, slowloris_head_gets_408_at_deadline)
{
    static const char head[] = "GET /slow HTTP/1.1\r\nHost: a\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaa"
                               "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    struct ts_resp r;
    long long t0, waited;
    size_t i = 0;
    int fd;

    pxt_setup(SHORT);
    fd = pxt_connect();
    t0 = ts_now_ms();
    /* One byte per 100 ms: far from finishing before the deadline. */
    for (;;) {
        struct pollfd pfd = {fd, POLLIN, 0};
        cr_assert_lt(i, sizeof(head) - 1, "the whole head went out without a 408");
        (void)ts_send_all(fd, head + i++, 1);
        if (poll(&pfd, 1, 100) > 0)
            break;
    }
    waited = ts_now_ms() - t0;
    cr_assert_eq(ts_http_read(fd, &r, 2000, 0), 0);
    cr_assert_eq(r.status, 408);
    ts_resp_free(&r);
    cr_assert(ts_wait_closed(fd, 2000));
    close(fd);
    cr_assert(waited >= 400 && waited <= 1200, "408 after %lld ms, deadline 500 ms", waited);
    cr_assert_eq(ts_upstream_connections(pxt.up), 0);
    pxt_pass();
}

/* A connection that sends nothing is also closed at the head deadline. */
Test(timeouts, silent_connection_closed)
{
    long long t0;
    int fd;

    pxt_setup(SHORT);
    fd = pxt_connect();
    t0 = ts_now_ms();
    cr_assert(ts_wait_closed(fd, 3000), "silent connection left open");
    cr_assert_lt(ts_now_ms() - t0, 1500);
    close(fd);
    pxt_pass();
}

Test(timeouts, idle_keepalive_closed)
{
    struct ts_resp r;
    long long t0, took;
    int fd;

    pxt_setup(SHORT);
    fd = pxt_connect();
    pxt_sends(fd, "GET /idle HTTP/1.1\r\nHost: a\r\n\r\n");
    cr_assert_eq(ts_http_read(fd, &r, 3000, 0), 0);
    cr_assert_eq(r.status, 200);
    ts_resp_free(&r);
    t0 = ts_now_ms();
    cr_assert(ts_wait_closed(fd, 4000), "idle connection left open");
    took = ts_now_ms() - t0;
    close(fd);
    /* Idle is 1 s, longer than the 500 ms head deadline: it is the idle
     * timer that runs between requests. */
    cr_assert(took >= 800 && took <= 2000, "closed after %lld ms, idle_timeout 1 s", took);
    pxt_pass();
}

Test(timeouts, refused_upstream_502)
{
    struct ts_resp r;
    int port = ts_free_port(); /* nothing listens there */

    cr_assert_gt(port, 0);
    pxt_setup_port(port, SHORT);
    cr_assert_eq(ts_http_get(pxt.px.port, "/refused", &r), 502);
    ts_resp_free(&r);
    pxt_pass();
}

Test(timeouts, silent_upstream_504)
{
    struct ts_resp r;
    long long t0, took;

    pxt_setup(SHORT);
    ts_upstream_hold(pxt.up, "/held");
    t0 = ts_now_ms();
    cr_assert_eq(ts_http_get(pxt.px.port, "/held", &r), 504);
    took = ts_now_ms() - t0;
    ts_resp_free(&r);
    ts_upstream_release(pxt.up, "/held");
    cr_assert(took >= 400 && took <= 2000, "504 after %lld ms, upstream_timeout 500 ms", took);
    /* The timed-out upstream connection is not reused. */
    cr_assert_eq(ts_http_get(pxt.px.port, "/next", &r), 200);
    ts_resp_free(&r);
    pxt_wait_count(2, 3000);
    {
        struct ts_upstream_req *q = pxt_get(1);
        cr_assert_str_eq(q->target, "/next");
        cr_assert_eq(q->conn, 1, "a timed-out upstream connection was reused");
        free(q);
    }
    pxt_pass();
}

/* A slow upload is not an upstream timeout: the response timer starts once
 * the request body is complete. */
Test(timeouts, slow_upload_not_504)
{
    struct ts_resp r;
    int fd;

    pxt_setup(SHORT);
    fd = pxt_connect();
    pxt_sends(fd, "PUT /slowup HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\n");
    for (int i = 0; i < 8; i++) {
        ts_sleep_ms(100);
        pxt_sends(fd, "x");
    }
    cr_assert_eq(ts_http_read(fd, &r, 3000, 0), 0);
    cr_assert_eq(r.status, 200);
    ts_resp_free(&r);
    close(fd);
    pxt_pass();
}

/* On loopback a connect hangs when the listener's accept queue is full and
 * SYNs are dropped: a listener with backlog 0, filled by our own clients. */
Test(timeouts, connect_timeout_504)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    int lfd = socket(AF_INET, SOCK_STREAM, 0), fill[8], nfill = 0;
    struct ts_resp r;
    long long t0, took;

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(lfd, 0), 0);
    cr_assert_eq(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    for (int i = 0; i < 8; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS) {
            close(fd);
            break;
        }
        fill[nfill++] = fd;
    }
    ts_sleep_ms(50);
    pxt_setup_port(ntohs(a.sin_port), SHORT);
    t0 = ts_now_ms();
    cr_assert_eq(ts_http_get(pxt.px.port, "/connect", &r), 504, "status %d", r.status);
    took = ts_now_ms() - t0;
    ts_resp_free(&r);
    cr_assert(took >= 250 && took <= 2000, "504 after %lld ms, connect timeout 300 ms", took);
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    close(lfd);
    pxt_pass();
}

static void bad_response(const char *name, const char *raw)
{
    struct ts_resp r;
    struct ts_upstream_req *q;
    size_t before = ts_upstream_count(pxt.up), bad_conn;

    ts_upstream_set_response(pxt.up, raw);
    cr_assert_eq(ts_http_get(pxt.px.port, "/bad", &r), 502, "%s: status %d", name, r.status);
    ts_resp_free(&r);
    ts_upstream_set_response(pxt.up, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    cr_assert_eq(ts_http_get(pxt.px.port, "/good", &r), 200, "%s: then %d", name, r.status);
    ts_resp_free(&r);
    pxt_wait_count(before + 2, 3000);
    q = pxt_get(before);
    bad_conn = q->conn;
    free(q);
    q = pxt_get(before + 1);
    cr_assert_neq(q->conn, bad_conn, "%s: the upstream connection with bad framing was reused",
                  name);
    free(q);
}

Test(timeouts, malformed_response_502_and_dropped)
{
    pxt_setup(SHORT);
    bad_response("CL and TE", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n");
    bad_response("two CL", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok");
    bad_response("bad status line", "HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok");
    bad_response("not HTTP", "HTTQ/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    bad_response("obs-fold", "HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 2\r\n\r\nok");
    bad_response("bare LF", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok");
    bad_response("TE gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx");
    pxt_pass();
}

/* A bad chunk in a response already started: the client's connection is cut
 * (the only way to tell it), and the next request uses a new connection. */
Test(timeouts, malformed_chunked_response_cut)
{
    struct ts_resp r;
    struct ts_upstream_req *q;

    pxt_setup(SHORT);
    ts_upstream_set_response(pxt.up, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     "2\r\nok\r\nzz\r\n");
    cr_assert_neq(ts_http_get(pxt.px.port, "/cut", &r), 200, "a broken body passed as complete");
    ts_resp_free(&r);
    ts_upstream_set_response(pxt.up, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    cr_assert_eq(ts_http_get(pxt.px.port, "/after", &r), 200);
    ts_resp_free(&r);
    pxt_wait_count(2, 3000);
    q = pxt_get(1);
    cr_assert_eq(q->conn, 1);
    free(q);
    pxt_pass();
}

Test(timeouts, max_connections_503)
{
    struct ts_resp r;
    int a, b, c;

    pxt_setup("max_connections = 2\n");
    /* Let the proxy reap the fixture's readiness probe first. */
    ts_sleep_ms(200);
    a = pxt_connect();
    b = pxt_connect();
    /* A request on each proves both are accepted and counted. */
    pxt_sends(a, "GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
    cr_assert_eq(ts_http_read(a, &r, 3000, 0), 0);
    cr_assert_eq(r.status, 200);
    ts_resp_free(&r);
    pxt_sends(b, "GET /b HTTP/1.1\r\nHost: a\r\n\r\n");
    cr_assert_eq(ts_http_read(b, &r, 3000, 0), 0);
    cr_assert_eq(r.status, 200, "second connection: %d", r.status);
    ts_resp_free(&r);
    if (pxt.px.tls) {
        /* Over TLS a plaintext 503 would be unreadable: the connection over
         * the limit is closed unanswered and its handshake fails. */
        c = ts_connect(pxt.px.port);
        cr_assert_lt(c, 0, "a TLS connection over max_connections was served");
    } else {
        c = pxt_connect();
        (void)ts_send_all(c, "GET /c HTTP/1.1\r\nHost: a\r\n\r\n", 29);
        cr_assert_eq(ts_http_read(c, &r, 3000, 0), 0);
        cr_assert_eq(r.status, 503);
        ts_resp_free(&r);
        cr_assert(ts_wait_closed(c, 3000));
        close(c);
    }
    cr_assert_eq(ts_upstream_count(pxt.up), 2, "the third request was forwarded");
    /* Once one goes, a new connection is served again. */
    close(a);
    ts_sleep_ms(100);
    cr_assert_eq(ts_http_get(pxt.px.port, "/d", &r), 200);
    ts_resp_free(&r);
    close(b);
    pxt_pass();
}

static int count_fds(pid_t pid)
{
    char path[64];
    struct dirent *e;
    DIR *d;
    int n = 0;

    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    d = opendir(path);
    cr_assert_not_null(d);
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* Out of descriptors, accept() fails with EMFILE: the proxy pauses accepting
 * and goes on; once descriptors free up, it serves again. */
Test(timeouts, emfile_does_not_kill_the_loop)
{
    struct rlimit lim, old;
    struct ts_resp r;
    int fds[40], n = 0, served = 0;

    pxt_setup(NULL);
    ts_sleep_ms(100);
    cr_assert_eq(prlimit(pxt.px.proc.pid, RLIMIT_NOFILE, NULL, &old), 0, "prlimit");
    lim = old;
    lim.rlim_cur = (rlim_t)count_fds(pxt.px.proc.pid) + 4; /* the soft limit only */
    cr_assert_eq(prlimit(pxt.px.proc.pid, RLIMIT_NOFILE, &lim, NULL), 0, "prlimit");
    /* Plain TCP also over TLS: no handshake completes while the proxy
     * cannot accept, and accepting is what this test is about. */
    for (; n < 40; n++) {
        fds[n] = ts_connect_tcp(pxt.px.port);
        cr_assert_geq(fds[n], 0);
        (void)ts_send_all(fds[n], "GET /e HTTP/1.1\r\nHost: a\r\n\r\n", 29);
    }
    ts_sleep_ms(300);
    cr_assert(ts_proc_alive(&pxt.px.proc), "the proxy died of EMFILE");
    {
        char *log = ts_read_file(pxt.px.proc.log, NULL);
        cr_assert(log != NULL && strstr(log, "accept: ") != NULL,
                  "no accept failure logged: the limit was not reached");
        free(log);
    }
    for (int i = 0; i < n; i++)
        close(fds[i]);
    cr_assert_eq(prlimit(pxt.px.proc.pid, RLIMIT_NOFILE, &old, NULL), 0, "prlimit");
    /* The kernel's queue still holds closed connections; serve until ours. */
    for (int i = 0; i < 20 && !served; i++) {
        if (ts_http_get(pxt.px.port, "/after", &r) == 200)
            served = 1;
        ts_resp_free(&r);
    }
    cr_assert(served, "not serving after descriptors were freed");
    cr_assert(ts_proc_alive(&pxt.px.proc));
    pxt_pass();
}

/* An upstream that accepts but never reads: the upload stalls once the
 * buffers are full. The proxy must give up after upstream_timeout (504)
 * rather than hold the client and the connection forever. */
Test(timeouts, upstream_not_reading_body_504)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    int lfd = socket(AF_INET, SOCK_STREAM, 0), fd, flags;
    static char chunk[65536];
    struct ts_resp r;
    long long t0;
    size_t sent = 0;

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(lfd, 8), 0); /* the kernel completes the handshake; nobody reads */
    cr_assert_eq(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    pxt_setup_port(ntohs(a.sin_port), SHORT);
    fd = pxt_connect();
    pxt_sends(fd, "PUT /stall HTTP/1.1\r\nHost: a\r\nContent-Length: 1073741824\r\n\r\n");
    flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    t0 = ts_now_ms();
    /* Push until nothing more goes out for a while (or a response comes). */
    for (long long idle_since = ts_now_ms(); ts_now_ms() - idle_since < 300;) {
        struct pollfd pfd = {fd, POLLIN, 0};
        ssize_t k = send(fd, chunk, sizeof(chunk), MSG_NOSIGNAL);
        if (k > 0) {
            sent += (size_t)k;
            idle_since = ts_now_ms();
        } else {
            ts_sleep_ms(10);
        }
        if (poll(&pfd, 1, 0) > 0 || ts_now_ms() - t0 > 20000)
            break;
    }
    cr_assert_eq(ts_http_read(fd, &r, 5000, 0), 0, "no answer %lld ms after the upload stalled"
                 " (%zu bytes sent)", ts_now_ms() - t0, sent);
    cr_assert_eq(r.status, 504, "status %d", r.status);
    ts_resp_free(&r);
    close(fd);
    close(lfd);
    pxt_pass();
}

/* Graceful shutdown (issue 3): on SIGTERM the proxy stops accepting, lets the
 * request in flight finish with its response, and exits 0; a request that
 * never finishes is cut at shutdown_grace and the proxy still exits 0. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pxt.h"

TestSuite(shutdown, .fini = pxt_teardown, .timeout = 60);

static int start_held(const char *target)
{
    char req[256];
    int fd = pxt_connect();

    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", target);
    pxt_sends(fd, req);
    pxt_wait_count(ts_upstream_count(pxt.up) + 1, 3000);
    return fd;
}

Test(shutdown, in_flight_request_completes)
{
    struct ts_resp r;
    int fd, idle, status, late;

    pxt_setup("shutdown_grace = 10s\n");
    ts_upstream_hold(pxt.up, "/held");
    /* An idle keep-alive connection is closed at once on SIGTERM. */
    idle = pxt_connect();
    fd = start_held("/held");
    cr_assert_eq(ts_proc_signal(&pxt.px.proc, SIGTERM), 0);
    cr_assert(ts_wait_closed(idle, 2000), "idle connection kept open while stopping");
    close(idle);
    /* New connections are refused (not left waiting in the backlog). */
    ts_sleep_ms(100);
    late = ts_connect(pxt.px.port);
    cr_assert_lt(late, 0, "a connection was accepted into the listen queue while stopping");
    cr_assert(ts_proc_alive(&pxt.px.proc), "exited with a request in flight");
    ts_upstream_release(pxt.up, "/held");
    cr_assert_eq(ts_http_read(fd, &r, 3000, 0), 0, "in-flight response lost");
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "ok");
    cr_assert_not_null(strstr(r.head, "Connection: close"), "%s", r.head);
    ts_resp_free(&r);
    close(fd);
    cr_assert_eq(ts_proc_wait(&pxt.px.proc, 3000, &status), 0, "did not exit after draining");
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "wait status %d", status);
    cr_assert_eq(ts_upstream_count(pxt.up), 1, "the late request was forwarded");
    pxt_pass();
}

Test(shutdown, grace_bounds_the_wait)
{
    int fd, status;
    long long t0, took;

    pxt_setup("shutdown_grace = 500ms\n");
    ts_upstream_hold(pxt.up, "/forever");
    fd = start_held("/forever");
    t0 = ts_now_ms();
    cr_assert_eq(ts_proc_signal(&pxt.px.proc, SIGTERM), 0);
    cr_assert_eq(ts_proc_wait(&pxt.px.proc, 5000, &status), 0, "did not exit");
    took = ts_now_ms() - t0;
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "wait status %d", status);
    cr_assert(took >= 400 && took <= 1500, "exited after %lld ms, grace 500 ms", took);
    cr_assert(ts_wait_closed(fd, 1000), "client connection not closed");
    close(fd);
    ts_upstream_release(pxt.up, "/forever");
    pxt_pass();
}

/* SIGINT stops the same way. */
Test(shutdown, sigint_idle_exits_0)
{
    int status;

    pxt_setup(NULL);
    cr_assert_eq(ts_proc_signal(&pxt.px.proc, SIGINT), 0);
    cr_assert_eq(ts_proc_wait(&pxt.px.proc, 3000, &status), 0, "did not exit");
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "wait status %d", status);
    pxt_pass();
}

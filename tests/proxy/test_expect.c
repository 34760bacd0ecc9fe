/* Expect: 100-continue: the proxy relays the expectation to the store and
 * the store's 100 (or its early final answer) to the client, so the store can
 * refuse before the body; the body goes only after a 100, or after a moment
 * of silence from the store, as curl does. A request the proxy refuses from
 * its head (bad framing, a fencing rejection) gets the final status without
 * a 100, and nothing reaches the upstream. */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
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
    /* The store was asked, and its 100 went to the client. */
    cr_assert_eq(ts_upstream_header(q, "Expect", NULL, 0), 1, "%s", q->head);
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

/* A one-connection store that answers a request head at once, without a
 * 100 (refuse set: "413 Content Too Large", body never read) or after
 * reading a body of want bytes without sending a 100 (a silent store); it
 * counts the body bytes that reached it and records whether the head
 * carried Expect. */
struct raw_store {
    int lfd, port;
    int refuse;
    size_t want;
    size_t body_bytes;
    int saw_expect;
    pthread_t th;
};

static void *raw_store_run(void *arg)
{
    struct raw_store *s = arg;
    char buf[65536];
    size_t have = 0;
    char *end = NULL;
    long long deadline = ts_now_ms() + 10000;
    int fd = accept(s->lfd, NULL, NULL);

    if (fd < 0)
        return NULL;
    while (end == NULL && have < sizeof(buf) - 1 && ts_now_ms() < deadline) {
        struct pollfd p = {fd, POLLIN, 0};
        ssize_t n;
        if (poll(&p, 1, 100) <= 0)
            continue;
        n = recv(fd, buf + have, sizeof(buf) - 1 - have, 0);
        if (n <= 0)
            goto out;
        have += (size_t)n;
        buf[have] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    if (end == NULL)
        goto out;
    s->saw_expect = strstr(buf, "\r\nExpect: 100-continue\r\n") != NULL;
    s->body_bytes = have - (size_t)(end + 4 - buf);
    if (s->refuse) {
        static const char no[] = "HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n"
                                 "Connection: close\r\n\r\n";
        (void)send(fd, no, sizeof(no) - 1, MSG_NOSIGNAL);
        /* count what the proxy still sends for a moment */
        for (long long t = ts_now_ms() + 1500; ts_now_ms() < t;) {
            struct pollfd p = {fd, POLLIN, 0};
            ssize_t n;
            if (poll(&p, 1, 100) <= 0)
                continue;
            n = recv(fd, buf, sizeof(buf), 0);
            if (n <= 0)
                break;
            s->body_bytes += (size_t)n;
        }
    } else {
        static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        while (s->body_bytes < s->want && ts_now_ms() < deadline) {
            struct pollfd p = {fd, POLLIN, 0};
            ssize_t n;
            if (poll(&p, 1, 100) <= 0)
                continue;
            n = recv(fd, buf, sizeof(buf), 0);
            if (n <= 0)
                break;
            s->body_bytes += (size_t)n;
        }
        (void)send(fd, ok, sizeof(ok) - 1, MSG_NOSIGNAL);
        ts_sleep_ms(200);
    }
out:
    close(fd);
    return NULL;
}

static void raw_store_start(struct raw_store *s)
{
    s->lfd = ts_listen(&s->port);
    cr_assert_geq(s->lfd, 0, "cannot listen on loopback");
    cr_assert_eq(pthread_create(&s->th, NULL, raw_store_run, s), 0);
}

static void raw_store_stop(struct raw_store *s)
{
    pthread_join(s->th, NULL);
    close(s->lfd);
}

/* The store refuses a 20 MB upload from its head: the client gets the
 * store's 413 before it sends a byte of the body, and no body byte reaches
 * the store. */
Test(expect, store_refuses_before_the_body)
{
    struct raw_store st = {.refuse = 1};
    struct ts_resp r;
    int fd;

    raw_store_start(&st);
    pxt_setup_port(st.port, NULL);
    fd = pxt_connect();
    pxt_sends(fd, "PUT /big HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                  "Content-Length: 20000000\r\n\r\n");
    cr_assert_eq(ts_http_read(fd, &r, 5000, 1), 0, "no answer before the body");
    cr_assert_eq(r.status, 413, "got %d, not the store's early refusal", r.status);
    ts_resp_free(&r);
    close(fd);
    raw_store_stop(&st);
    cr_assert(st.saw_expect, "the store was not asked to expect the body");
    cr_assert_eq(st.body_bytes, 0, "%zu body bytes reached the store", st.body_bytes);
    pxt_pass();
}

/* A store that says nothing to Expect: after a moment the proxy sends the
 * client its own 100, and the body goes through. */
Test(expect, silent_store_gets_the_body_after_a_moment)
{
    struct raw_store st = {.refuse = 0, .want = 11};
    struct ts_resp r;
    long long t0;
    int fd;

    raw_store_start(&st);
    pxt_setup_port(st.port, NULL);
    fd = pxt_connect();
    t0 = ts_now_ms();
    pxt_sends(fd, "PUT /s HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                  "Content-Length: 11\r\n\r\n");
    cr_assert_eq(ts_http_read(fd, &r, 5000, 1), 0, "no 100 Continue");
    cr_assert_eq(r.status, 100);
    cr_assert_geq(ts_now_ms() - t0, 800, "the proxy did not wait for the store's 100");
    ts_resp_free(&r);
    pxt_sends(fd, "hello world");
    cr_assert_eq(ts_http_read(fd, &r, 5000, 1), 0);
    cr_assert_eq(r.status, 200);
    ts_resp_free(&r);
    close(fd);
    raw_store_stop(&st);
    cr_assert_eq(st.body_bytes, 11);
    pxt_pass();
}

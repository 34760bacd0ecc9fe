/* What a relay must carry as it is (RFC 9110/9112), through the real
 * fenceproxy: trailers both ways, interim 1xx responses, a response head
 * larger than the request limit, OPTIONS *, absolute-form targets, and
 * object-store keys on an `opaque` route with S3-format rejections. */
#include <criterion/criterion.h>

#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pxt.h"
#include "ts_proc.h"

TestSuite(fidelity, .fini = pxt_teardown, .timeout = 60);

/* Reads from fd until the peer closes or `until` appears or 5 s pass; the
 * bytes go to a malloc'd NUL-terminated buffer (caller frees). */
static char *read_all(int fd, const char *until, size_t *len)
{
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap + 1);
    long long deadline = ts_now_ms() + 5000;

    cr_assert(buf);
    buf[0] = '\0';
    while (n < cap && ts_now_ms() < deadline) {
        struct pollfd p = {fd, POLLIN, 0};
        ssize_t k;
        if (poll(&p, 1, 100) <= 0)
            continue;
        k = recv(fd, buf + n, cap - n, 0);
        if (k <= 0)
            break;
        n += (size_t)k;
        buf[n] = '\0';
        if (until != NULL && memmem(buf, n, until, strlen(until)) != NULL)
            break;
    }
    *len = n;
    return buf;
}

/* A one-connection store that keeps every byte it received until the end
 * of a chunked body, then answers resp. */
struct capture {
    int lfd, port;
    const char *resp;
    char *got;
    size_t got_len;
    pthread_t th;
};

static void *capture_run(void *arg)
{
    struct capture *s = arg;
    int fd = accept(s->lfd, NULL, NULL);

    if (fd < 0)
        return NULL;
    s->got = read_all(fd, "\r\n0\r\n", &s->got_len);
    if (strstr(s->got, "\r\n0\r\n") != NULL && strstr(strstr(s->got, "\r\n0\r\n"), "\r\n\r\n") == NULL) {
        size_t more;
        char *rest = read_all(fd, "\r\n\r\n", &more);
        char *t = realloc(s->got, s->got_len + more + 1);
        cr_assert(t);
        memcpy(t + s->got_len, rest, more + 1);
        s->got = t;
        s->got_len += more;
        free(rest);
    }
    (void)send(fd, s->resp, strlen(s->resp), MSG_NOSIGNAL);
    ts_sleep_ms(200);
    close(fd);
    return NULL;
}

static void capture_start(struct capture *s, const char *resp)
{
    memset(s, 0, sizeof(*s));
    s->resp = resp;
    s->lfd = ts_listen(&s->port);
    cr_assert_geq(s->lfd, 0, "cannot listen on loopback");
    cr_assert_eq(pthread_create(&s->th, NULL, capture_run, s), 0);
}

Test(fidelity, request_trailers_reach_the_store_framing_ones_do_not)
{
    struct capture st;
    struct ts_resp r;
    const char *tail;
    int fd;

    capture_start(&st, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    pxt_setup_port(st.port, NULL);
    fd = pxt_connect();
    pxt_sends(fd, "PUT /t HTTP/1.1\r\nHost: a\r\nTrailer: X-Checksum\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: sha256=abc\r\n"
                  "Content-Length: 5\r\nX-Other: 1\r\n\r\n");
    cr_assert_eq(ts_http_read(fd, &r, 5000, 0), 0);
    cr_assert_eq(r.status, 201);
    ts_resp_free(&r);
    close(fd);
    pthread_join(st.th, NULL);
    close(st.lfd);
    cr_assert_not_null(strstr(st.got, "\r\nTrailer: X-Checksum\r\n"), "%s", st.got);
    tail = strstr(st.got, "\r\n0\r\n");
    cr_assert_not_null(tail, "no last chunk: %s", st.got);
    cr_assert_str_eq(tail, "\r\n0\r\nX-Checksum: sha256=abc\r\nX-Other: 1\r\n\r\n");
    free(st.got);
    pxt_pass();
}

Test(fidelity, response_trailers_reach_the_client)
{
    size_t len;
    char *got;
    int fd;

    pxt_setup(NULL);
    cr_assert_eq(ts_upstream_set_response(pxt.up, "HTTP/1.1 200 OK\r\nTrailer: X-Checksum\r\n"
                                                  "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
                                                  "0\r\nX-Checksum: 99\r\nTransfer-Encoding: x\r\n\r\n"),
                 0);
    fd = pxt_connect();
    pxt_sends(fd, "GET /r HTTP/1.1\r\nHost: a\r\n\r\n");
    got = read_all(fd, "\r\n0\r\nX-Checksum: 99\r\n\r\n", &len);
    cr_assert_not_null(strstr(got, "\r\nTrailer: X-Checksum\r\n"), "%s", got);
    cr_assert_not_null(strstr(got, "3\r\nabc\r\n0\r\nX-Checksum: 99\r\n\r\n"), "%s", got);
    free(got);
    /* an HTTP/1.0 client gets the data alone: no chunks, no trailers */
    close(fd);
    fd = pxt_connect();
    pxt_sends(fd, "GET /r HTTP/1.0\r\n\r\n");
    got = read_all(fd, NULL, &len);
    cr_assert_null(strstr(got, "Trailer"), "%s", got);
    cr_assert_not_null(strstr(got, "\r\n\r\nabc"), "%s", got);
    free(got);
    close(fd);
    pxt_pass();
}

Test(fidelity, interim_responses_are_relayed)
{
    size_t len;
    char *got;
    int fd;

    pxt_setup(NULL);
    cr_assert_eq(ts_upstream_set_response(pxt.up, "HTTP/1.1 103 Early Hints\r\n"
                                                  "Link: </s.css>; rel=preload\r\n\r\n"
                                                  "HTTP/1.1 102 Processing\r\n\r\n"
                                                  "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
                 0);
    fd = pxt_connect();
    pxt_sends(fd, "GET /i HTTP/1.1\r\nHost: a\r\n\r\n");
    got = read_all(fd, "\r\n\r\nok", &len);
    cr_assert(strncmp(got, "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n", 55) == 0,
              "%s", got);
    cr_assert_not_null(strstr(got, "\r\n\r\nHTTP/1.1 102 Processing\r\n"), "%s", got);
    cr_assert_not_null(strstr(got, "\r\n\r\nHTTP/1.1 200 OK\r\n"), "%s", got);
    free(got);
    close(fd);
    pxt_pass();
}

/* A response head of size bytes: ten fields of equal length. */
static char *big_head(size_t size)
{
    char *h = malloc(size + 256);
    size_t n = (size_t)sprintf(h, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n");

    for (int i = 0; i < 10; i++) {
        n += (size_t)sprintf(h + n, "X-Big-%d: ", i);
        memset(h + n, 'v', size / 10);
        n += size / 10;
        n += (size_t)sprintf(h + n, "\r\n");
    }
    sprintf(h + n, "\r\nok");
    return h;
}

Test(fidelity, a_40_kib_response_head_passes_over_64_kib_is_502)
{
    struct ts_resp r;
    char *h = big_head(40 * 1024);

    pxt_setup(NULL);
    cr_assert_eq(ts_upstream_set_response(pxt.up, h), 0);
    free(h);
    cr_assert_eq(ts_http_get(pxt.px.port, "/big", &r), 200);
    cr_assert_str_eq(r.body, "ok");
    ts_resp_free(&r);
    h = big_head(70 * 1024);
    cr_assert_eq(ts_upstream_set_response(pxt.up, h), 0);
    free(h);
    cr_assert_eq(ts_http_get(pxt.px.port, "/big", &r), 502);
    ts_resp_free(&r);
    pxt_pass();
}

Test(fidelity, options_asterisk_and_absolute_form)
{
    const char opt[] = "OPTIONS * HTTP/1.1\r\nHost: px.test\r\n\r\n";
    const char abs_ok[] = "GET http://px.test/a/b?c HTTP/1.1\r\nHost: px.test\r\n\r\n";
    const char abs_other[] = "GET http://elsewhere/a HTTP/1.1\r\nHost: px.test\r\n\r\n";
    struct ts_upstream_req *q;
    struct ts_resp r;

    pxt_setup(NULL);
    cr_assert_eq(ts_http_raw(pxt.px.port, opt, sizeof(opt) - 1, &r, 5000), 200);
    ts_resp_free(&r);
    cr_assert_eq(ts_http_raw(pxt.px.port, abs_ok, sizeof(abs_ok) - 1, &r, 5000), 200);
    ts_resp_free(&r);
    cr_assert_eq(ts_http_raw(pxt.px.port, abs_other, sizeof(abs_other) - 1, &r, 5000), 400);
    ts_resp_free(&r);
    cr_assert_eq(ts_upstream_count(pxt.up), 2);
    q = pxt_get(0);
    cr_assert_str_eq(q->method, "OPTIONS");
    cr_assert_str_eq(q->target, "*");
    free(q);
    q = pxt_get(1);
    cr_assert_str_eq(q->target, "/a/b?c", "absolute-form not sent as origin-form");
    free(q);
    pxt_pass();
}

static const char *s3_routes = "[route s3]\nprefix = /bucket/\nresource = segments:2\n"
                               "path_semantics = opaque\nerror_format = s3\n"
                               "[route dav]\nprefix = /dav/\nresource = segments:2\n";

static int put(const char *target, int token, struct ts_resp *r)
{
    char raw[512];
    int n = snprintf(raw, sizeof(raw),
                     "PUT %s HTTP/1.1\r\nHost: a\r\nFencing-Token: %d\r\nContent-Length: 1\r\n\r\nx",
                     target, token);

    return ts_http_raw(pxt.px.port, raw, (size_t)n, r, 5000);
}

Test(fidelity, opaque_route_keeps_object_keys_and_answers_in_s3_xml)
{
    static const char *keys[] = {"/bucket/u1/a/./b", "/bucket/u1/k//c", "/bucket/u1/x%5Cy",
                                 "/bucket/u1/x\\y", "/bucket/u1/a/../b"};
    struct ts_resp r;
    char v[128];

    pxt_setup(s3_routes);
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        struct ts_upstream_req *q;
        cr_assert_eq(put(keys[i], 5, &r), 200, "%s refused", keys[i]);
        ts_resp_free(&r);
        q = pxt_get(i);
        cr_assert_str_eq(q->target, keys[i], "the key was rewritten on its way");
        free(q);
    }
    /* the same spellings on a normalized route are refused */
    cr_assert_eq(put("/dav/u1/a/./b", 5, &r), 400);
    ts_resp_free(&r);
    /* unrouted paths are never refused for a route's rule */
    cr_assert_eq(ts_http_get(pxt.px.port, "/scratch/a//b/./c", &r), 200);
    ts_resp_free(&r);
    /* a stale token, as S3 clients parse it */
    cr_assert_eq(put("/bucket/u1/obj", 4, &r), 409);
    cr_assert(ts_resp_header(&r, "Content-Type", v, sizeof(v)));
    cr_assert_str_eq(v, "application/xml");
    cr_assert_not_null(strstr(r.body, "<Error><Code>StaleFencingToken</Code>"), "%s", r.body);
    cr_assert_not_null(strstr(r.body, "<Resource>/bucket/u1</Resource><FencingToken>4</FencingToken>"
                                      "<HighestToken>5</HighestToken>"),
                       "%s", r.body);
    ts_resp_free(&r);
    cr_assert_eq(ts_upstream_count(pxt.up), sizeof(keys) / sizeof(keys[0]) + 1);
    pxt_pass();
}

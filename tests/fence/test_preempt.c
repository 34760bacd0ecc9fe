/* A stale holder's slow upload cannot hold the next holder back: when a
 * higher token is admitted, a lower-token request still sending its body is
 * cut before its last byte (the store never gets a complete request),
 * answered 409 and audited as preempted. Real fenceproxy, recording
 * upstream. */
#include <criterion/criterion.h>

#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ts_proc.h"
#include "ts_proxy.h"
#include "ts_upstream.h"

static struct ts_upstream *up;
static struct ts_proxy px;

static void setup(void)
{
    up = ts_upstream_start();
    cr_assert_not_null(up, "recording upstream did not start");
    cr_assert_eq(ts_proxy_init(&px, "preempt"), 0);
    cr_assert_eq(ts_proxy_write_conf(&px, ts_upstream_port(up),
                                     "upstream_timeout = 5s\n"
                                     "[route objects]\nprefix = /objects/\nresource = segments:2\n"),
                 0);
    cr_assert_eq(ts_proxy_start(&px), 0, "fenceproxy did not start");
}

static void teardown(void)
{
    ts_proxy_cleanup(&px, 1);
    ts_upstream_stop(&up);
}

TestSuite(preempt, .init = setup, .fini = teardown, .timeout = 60);

Test(preempt, a_stale_trickling_upload_yields_to_the_next_holder)
{
    const char head200[] = "PUT /objects/u/a HTTP/1.1\r\nHost: t\r\nFencing-Token: 200\r\n"
                           "Content-Length: 100\r\n\r\n0123456789";
    const char put201[] = "PUT /objects/u/a HTTP/1.1\r\nHost: t\r\nFencing-Token: 201\r\n"
                          "Content-Length: 5\r\n\r\nfresh";
    struct ts_resp r;
    long long t0, took;
    size_t alen;
    char *audit, *got;
    int fd200, fd201, st201;

    fd200 = ts_connect(px.port);
    cr_assert_geq(fd200, 0);
    cr_assert_eq(ts_send_all(fd200, head200, sizeof(head200) - 1), 0);
    /* holder 200 trickles: its head and 10 bytes are at the store now */
    for (long long until = ts_now_ms() + 1000; ts_now_ms() < until;) {
        ts_sleep_ms(250);
        cr_assert_eq(ts_send_all(fd200, "x", 1), 0);
    }
    cr_assert_eq(ts_upstream_connections(up), 1, "holder 200's request did not start");
    t0 = ts_now_ms();
    fd201 = ts_connect(px.port);
    cr_assert_eq(ts_send_all(fd201, put201, sizeof(put201) - 1), 0);
    /* holder 200 keeps trickling while 201 waits for its answer */
    st201 = -1;
    while (ts_now_ms() - t0 < 8000) {
        struct pollfd p = {fd201, POLLIN, 0};
        if (poll(&p, 1, 250) == 1) {
            st201 = ts_http_read(fd201, &r, 5000, 0) == 0 ? r.status : -1;
            break;
        }
        (void)send(fd200, "x", 1, MSG_NOSIGNAL);
    }
    took = ts_now_ms() - t0;
    cr_assert_eq(st201, 200, "holder 201 got %d after %lld ms", st201, took);
    ts_resp_free(&r);
    cr_log_info("holder 201 answered after %lld ms while 200 trickled", took);
    cr_assert_lt(took, 5000, "holder 201 waited %lld ms: longer than upstream_timeout", took);
    /* holder 200 was told, and its request never completed at the store */
    cr_assert_eq(ts_http_read(fd200, &r, 5000, 0), 0, "holder 200 got no answer");
    cr_assert_eq(r.status, 409);
    cr_assert_not_null(strstr(r.body, "\"token\":200,\"highest\":201"), "%s", r.body);
    ts_resp_free(&r);
    close(fd200);
    close(fd201);
    ts_sleep_ms(300);
    cr_assert_eq(ts_upstream_count(up), 1, "only 201's request may complete at the store");
    {
        struct ts_upstream_req *q = malloc(sizeof(*q));
        char v[32];
        cr_assert_eq(ts_upstream_get(up, 0, q), 0);
        cr_assert_eq(ts_upstream_header(q, "Fencing-Token", v, sizeof(v)), 1);
        cr_assert_str_eq(v, "201");
        free(q);
    }
    audit = ts_read_file(px.audit, &alen);
    cr_assert_not_null(audit);
    got = strstr(audit, "\"event\":\"preempted\"");
    cr_assert_not_null(got, "audit: %s", audit);
    cr_assert_not_null(strstr(got, "\"token\":200,\"highest\":201"), "audit: %s", audit);
    free(audit);
}

/* A lower-token request whose whole body reached the store is not cut: the
 * next holder waits for its answer (S3), as before. */
Test(preempt, a_complete_request_is_waited_for)
{
    const char put200[] = "PUT /objects/u/b HTTP/1.1\r\nHost: t\r\nFencing-Token: 200\r\n"
                          "Content-Length: 3\r\n\r\nold";
    const char put201[] = "PUT /objects/u/b HTTP/1.1\r\nHost: t\r\nFencing-Token: 201\r\n"
                          "Content-Length: 3\r\n\r\nnew";
    struct ts_resp r;
    int fd200, fd201;

    cr_assert_eq(ts_upstream_hold(up, "Fencing-Token: 200"), 0);
    fd200 = ts_connect(px.port);
    cr_assert_eq(ts_send_all(fd200, put200, sizeof(put200) - 1), 0);
    cr_assert_eq(ts_upstream_wait_count(up, 1, 5000), 0);
    fd201 = ts_connect(px.port);
    cr_assert_eq(ts_send_all(fd201, put201, sizeof(put201) - 1), 0);
    ts_sleep_ms(500);
    cr_assert_eq(ts_upstream_count(up), 1, "201 went out while 200 was in flight");
    ts_upstream_release(up, "Fencing-Token: 200");
    cr_assert_eq(ts_http_read(fd200, &r, 5000, 0), 0);
    cr_assert_eq(r.status, 200, "a complete request was cut");
    ts_resp_free(&r);
    cr_assert_eq(ts_http_read(fd201, &r, 5000, 0), 0);
    cr_assert_eq(r.status, 200);
    ts_resp_free(&r);
    close(fd200);
    close(fd201);
}

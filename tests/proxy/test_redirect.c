/* Location fields that point at the upstream itself are rewritten to a path
 * on the proxy, so that no response sends a client around the fencing
 * check; any other Location passes unchanged. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "pxt.h"

TestSuite(redirect, .fini = pxt_teardown, .timeout = 30);

static void expect_location(const char *sent, const char *want)
{
    char resp[512], got[256];
    struct ts_resp r;
    const char req[] = "GET /a HTTP/1.1\r\nHost: t\r\n\r\n";

    snprintf(resp, sizeof(resp),
             "HTTP/1.1 201 Created\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n", sent);
    cr_assert_eq(ts_upstream_set_response(pxt.up, resp), 0);
    cr_assert_eq(ts_http_raw(pxt.px.port, req, sizeof(req) - 1, &r, 5000), 201);
    cr_assert(ts_resp_header(&r, "Location", got, sizeof(got)), "no Location in %s", r.head);
    cr_assert_str_eq(got, want, "Location %s became %s, want %s", sent, got, want);
    ts_resp_free(&r);
}

Test(redirect, location_at_the_upstream_becomes_a_path_on_the_proxy)
{
    char own[128], own_root[128], other_port[128];

    pxt_setup(NULL);
    snprintf(own, sizeof(own), "http://127.0.0.1:%d/objects/user42/a.txt",
             ts_upstream_port(pxt.up));
    snprintf(own_root, sizeof(own_root), "http://127.0.0.1:%d", ts_upstream_port(pxt.up));
    snprintf(other_port, sizeof(other_port), "http://127.0.0.1:%d/x",
             ts_upstream_port(pxt.up) + 1);
    expect_location(own, "/objects/user42/a.txt");
    expect_location(own_root, "/");
    expect_location(other_port, other_port);
    expect_location("https://elsewhere.invalid/x", "https://elsewhere.invalid/x");
    expect_location("/already/relative", "/already/relative");
    pxt_pass();
}

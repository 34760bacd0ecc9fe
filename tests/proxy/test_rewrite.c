/* px_rewrite from tables: a raw head is parsed with the real parser, then
 * rewritten, and the bytes must be exactly the expected head. Each case also
 * checks that the head fits the bound px_rw_*_max() gives (the connection
 * reserves exactly that much), with a canary after it. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px_http1.h"
#include "px_rewrite.h"

static const struct px_h1_limits lim = {16384, 8192, 100};

static void parse(const char *raw, int is_req, struct px_h1_head *h)
{
    struct px_h1_parser p;

    px_h1_parser_init(&p, is_req, 0, &lim);
    cr_assert_eq(px_h1_parse_head(&p, raw, strlen(raw), h), PX_H1_DONE, "does not parse: %s", raw);
}

/* Runs a writer into a buffer of exactly max bytes plus a canary. */
static char *run(size_t max, size_t (*wr)(const void *, char *), const void *arg, size_t *len)
{
    char *buf = malloc(max + 8);

    cr_assert(buf);
    memset(buf + max, 0x5a, 8);
    *len = wr(arg, buf);
    cr_assert_leq(*len, max, "head of %zu bytes over its bound %zu", *len, max);
    for (int i = 0; i < 8; i++)
        cr_assert_eq((unsigned char)buf[max + i], 0x5a, "canary overwritten");
    return buf;
}

static size_t wr_req(const void *a, char *o)
{
    return px_rw_request_head(a, o);
}

static size_t wr_resp(const void *a, char *o)
{
    return px_rw_response_head(a, o);
}

struct req_case {
    const char *name;
    const char *raw;
    int checked;
    uint64_t token;
    const char *want;
    int relay_expect;
};

static const struct req_case req_cases[] = {
    {"plain GET: our fields appended", "GET /a HTTP/1.1\r\nHost: s\r\n\r\n", 0, 0,
     "GET /a HTTP/1.1\r\nHost: s\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n"
     "Via: 1.1 fenceproxy\r\nX-Request-Id: rid1\r\n\r\n", 0},
    {"hop-by-hop and framing replaced by ours",
     "PUT /a HTTP/1.1\r\nHost: s\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\n"
     "Content-Length: 3\r\nTE: trailers\r\n\r\n",
     0, 0,
     "PUT /a HTTP/1.1\r\nHost: s\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n"
     "Via: 1.1 fenceproxy\r\nX-Request-Id: rid1\r\nContent-Length: 3\r\n\r\n", 0},
    {"chunked stays chunked", "POST /a HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\n", 0,
     0,
     "POST /a HTTP/1.1\r\nHost: s\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n"
     "Via: 1.1 fenceproxy\r\nX-Request-Id: rid1\r\nTransfer-Encoding: chunked\r\n\r\n", 0},
    {"checked token written canonically once",
     "PUT /a HTTP/1.1\r\nHost: s\r\nfencing-token:  007 \r\nContent-Length: 0\r\n\r\n", 1, 7,
     "PUT /a HTTP/1.1\r\nHost: s\r\nFencing-Token: 7\r\nX-Forwarded-For: 10.0.0.9\r\n"
     "X-Forwarded-Proto: http\r\nVia: 1.1 fenceproxy\r\nX-Request-Id: rid1\r\n"
     "Content-Length: 0\r\n\r\n", 0},
    {"unchecked token passes as sent", "GET /a HTTP/1.1\r\nHost: s\r\nFencing-Token: x\r\n\r\n", 0, 0,
     "GET /a HTTP/1.1\r\nHost: s\r\nFencing-Token: x\r\nX-Forwarded-For: 10.0.0.9\r\n"
     "X-Forwarded-Proto: http\r\nVia: 1.1 fenceproxy\r\nX-Request-Id: rid1\r\n\r\n", 0},
    {"X-Forwarded-For and Via extended, theirs dropped",
     "GET /a HTTP/1.0\r\nHost: s\r\nX-Forwarded-For: 1.2.3.4\r\nVia: 1.1 lb\r\n"
     "X-Forwarded-Proto: https\r\nX-Request-Id: abc\r\nExpect: 100-continue\r\n\r\n",
     0, 0,
     "GET /a HTTP/1.1\r\nHost: s\r\nX-Forwarded-For: 1.2.3.4, 10.0.0.9\r\n"
     "X-Forwarded-Proto: http\r\nVia: 1.1 lb, 1.0 fenceproxy\r\nX-Request-Id: rid1\r\n\r\n", 0},
    {"every X-Forwarded-For and Via field joined in order",
     "GET /a HTTP/1.1\r\nHost: s\r\nX-Forwarded-For: 1.1.1.1\r\nVia: 1.1 a\r\n"
     "X-Forwarded-For: 2.2.2.2, 3.3.3.3\r\nVia: 1.0 b\r\n\r\n",
     0, 0,
     "GET /a HTTP/1.1\r\nHost: s\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9\r\n"
     "X-Forwarded-Proto: http\r\nVia: 1.1 a, 1.0 b, 1.1 fenceproxy\r\nX-Request-Id: rid1\r\n\r\n", 0},
    {"Expect relayed when asked",
     "PUT /a HTTP/1.1\r\nHost: s\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", 0, 0,
     "PUT /a HTTP/1.1\r\nHost: s\r\nExpect: 100-continue\r\nX-Forwarded-For: 10.0.0.9\r\n"
     "X-Forwarded-Proto: http\r\nVia: 1.1 fenceproxy\r\nX-Request-Id: rid1\r\nContent-Length: 1\r\n"
     "\r\n",
     1},
    {"absolute-form goes on as origin-form",
     "GET http://px.test/a?b HTTP/1.1\r\nHost: px.test\r\n\r\n", 0, 0,
     "GET /a?b HTTP/1.1\r\nHost: px.test\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n"
     "Via: 1.1 fenceproxy\r\nX-Request-Id: rid1\r\n\r\n", 0},
    {"OPTIONS * as it is", "OPTIONS * HTTP/1.1\r\nHost: px.test\r\n\r\n", 0, 0,
     "OPTIONS * HTTP/1.1\r\nHost: px.test\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n"
     "Via: 1.1 fenceproxy\r\nX-Request-Id: rid1\r\n\r\n", 0},
    {"fields without a space gain one and fit the bound",
     "GET /a HTTP/1.1\r\nHost:s\r\na:1\r\nb:2\r\nc:3\r\nd:4\r\ne:5\r\nf:6\r\ng:7\r\nh:8\r\n\r\n", 0, 0,
     "GET /a HTTP/1.1\r\nHost: s\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\ne: 5\r\nf: 6\r\ng: 7\r\n"
     "h: 8\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\nVia: 1.1 fenceproxy\r\n"
     "X-Request-Id: rid1\r\n\r\n", 0},
};

Test(rewrite, request_heads)
{
    for (size_t i = 0; i < sizeof(req_cases) / sizeof(req_cases[0]); i++) {
        const struct req_case *tc = &req_cases[i];
        struct px_h1_head h;
        struct px_rw_request rq;
        size_t len;
        char *out;

        parse(tc->raw, 1, &h);
        memset(&rq, 0, sizeof(rq));
        rq.h = &h;
        rq.token_field = "Fencing-Token";
        rq.token_field_len = 13;
        rq.token_checked = tc->checked;
        rq.token = tc->token;
        rq.peer_ip = "10.0.0.9";
        rq.request_id = "rid1";
        rq.relay_expect = tc->relay_expect;
        out = run(px_rw_request_max(&rq), wr_req, &rq, &len);
        cr_expect(len == strlen(tc->want) && memcmp(out, tc->want, len) == 0,
                  "%s:\n got: %.*s\nwant: %s", tc->name, (int)len, out, tc->want);
        free(out);
    }
}

/* 100 fields of 3 bytes each (the parser's limit), each gaining a space,
 * with the longest values of what the proxy adds. */
Test(rewrite, request_bound_holds_for_the_densest_head)
{
    char raw[2048];
    size_t n = (size_t)snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost:s\r\n");
    struct px_h1_head h;
    struct px_rw_request rq;
    size_t len;

    for (int i = 0; i < 99; i++) /* with Host, the limit of 100 */
        n += (size_t)snprintf(raw + n, sizeof(raw) - n, "%c:%c\r\n", 'a' + i % 26, 'x');
    n += (size_t)snprintf(raw + n, sizeof(raw) - n, "\r\n");
    parse(raw, 1, &h);
    memset(&rq, 0, sizeof(rq));
    rq.h = &h;
    rq.token_field = "Fencing-Token";
    rq.token_field_len = 13;
    rq.token_checked = 1;
    rq.token = UINT64_MAX;
    rq.peer_ip = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
    rq.request_id = "0123456789012345678901234567890123456789012345678901234567890123456789012345678";
    free(run(px_rw_request_max(&rq), wr_req, &rq, &len));
}

struct resp_case {
    const char *name;
    const char *raw;
    int chunked_out, close, client_11;
    const char *want;
};

static const struct resp_case resp_cases[] = {
    {"length body, keep-alive 1.1", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nETag: x\r\n\r\n", 0, 0, 1,
     "HTTP/1.1 200 OK\r\nETag: x\r\nX-Request-Id: rid1\r\nContent-Length: 2\r\n\r\n"},
    {"1.0 client told keep-alive", "HTTP/1.1 204 No Content\r\n\r\n", 0, 0, 0,
     "HTTP/1.1 204 No Content\r\nX-Request-Id: rid1\r\nConnection: keep-alive\r\n\r\n"},
    {"close said", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 0, 1, 1,
     "HTTP/1.1 200 OK\r\nX-Request-Id: rid1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"},
    {"chunked re-chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 1, 0, 1,
     "HTTP/1.1 200 OK\r\nX-Request-Id: rid1\r\nTransfer-Encoding: chunked\r\n\r\n"},
    {"their request id replaced", "HTTP/1.1 200 OK\r\nX-Request-Id: up\r\nContent-Length: 0\r\n\r\n",
     0, 0, 1, "HTTP/1.1 200 OK\r\nX-Request-Id: rid1\r\nContent-Length: 0\r\n\r\n"},
    {"Location at the upstream becomes a path",
     "HTTP/1.1 201 Created\r\nLocation: HTTP://127.0.0.1:8000/o/a\r\n"
     "Content-Location: http://127.0.0.1:8000\r\nContent-Length: 0\r\n\r\n",
     0, 0, 1,
     "HTTP/1.1 201 Created\r\nLocation: /o/a\r\nContent-Location: /\r\nX-Request-Id: rid1\r\n"
     "Content-Length: 0\r\n\r\n"},
    {"other Locations unchanged",
     "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:80001/x\r\nContent-Length: 0\r\n\r\n", 0, 0, 1,
     "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:80001/x\r\nX-Request-Id: rid1\r\n"
     "Content-Length: 0\r\n\r\n"},
};

Test(rewrite, response_heads)
{
    for (size_t i = 0; i < sizeof(resp_cases) / sizeof(resp_cases[0]); i++) {
        const struct resp_case *tc = &resp_cases[i];
        struct px_h1_head h;
        struct px_rw_response rs;
        size_t len;
        char *out;

        parse(tc->raw, 0, &h);
        memset(&rs, 0, sizeof(rs));
        rs.h = &h;
        rs.request_id = "rid1";
        rs.upstream_origin = "http://127.0.0.1:8000";
        rs.upstream_origin_len = strlen(rs.upstream_origin);
        rs.chunked_out = tc->chunked_out;
        rs.close = tc->close;
        rs.client_11 = tc->client_11;
        out = run(px_rw_response_max(&rs), wr_resp, &rs, &len);
        cr_expect(len == strlen(tc->want) && memcmp(out, tc->want, len) == 0,
                  "%s:\n got: %.*s\nwant: %s", tc->name, (int)len, out, tc->want);
        free(out);
    }
}

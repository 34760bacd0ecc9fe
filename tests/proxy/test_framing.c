/* Strict framing at the proxy's front door (issue 3): every malformed or
 * ambiguous request is answered with an error and a closed connection, and
 * the recording upstream proves that not one byte reached it. For chunked
 * bodies, where the head has already been forwarded, the upstream must never
 * see a complete request. The accepted edge cases (leading zeros, "Chunked",
 * chunk extensions) reach the upstream in canonical framing with the right
 * body. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pxt.h"

struct bad {
    const char *name;
    const char *raw;
    int status;
    int alt; /* also accepted, or 0 */
};

#define H "Host: a\r\n"

static void run_table(const struct bad *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        pxt_reject(t[i].name, t[i].raw, strlen(t[i].raw), t[i].status, t[i].alt);
}

TestSuite(framing, .init = NULL, .fini = pxt_teardown, .timeout = 60);

Test(framing, content_length_rejections)
{
    static const struct bad t[] = {
        {"CL and TE", "POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400, 0},
        {"TE and CL", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400, 0},
        {"two differing CL", "POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, 0},
        {"two equal CL", "POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400, 0},
        {"CL list", "POST / HTTP/1.1\r\n" H "Content-Length: 5, 5\r\n\r\nhello", 400, 0},
        {"CL plus sign", "POST / HTTP/1.1\r\n" H "Content-Length: +5\r\n\r\nhello", 400, 0},
        {"CL minus sign", "POST / HTTP/1.1\r\n" H "Content-Length: -5\r\n\r\nhello", 400, 0},
        {"CL hex", "POST / HTTP/1.1\r\n" H "Content-Length: 0x5\r\n\r\nhello", 400, 0},
        {"CL inner space", "POST / HTTP/1.1\r\n" H "Content-Length: 5 5\r\n\r\nhello", 400, 0},
        {"CL empty", "POST / HTTP/1.1\r\n" H "Content-Length: \r\n\r\nhello", 400, 0},
        {"CL overflow", "POST / HTTP/1.1\r\n" H "Content-Length: 123456789012345678901234567890\r\n\r\nhello", 400, 0},
        {"CL 2^64", "POST / HTTP/1.1\r\n" H "Content-Length: 18446744073709551616\r\n\r\nhello", 400, 0},
    };

    pxt_setup(NULL);
    run_table(t, sizeof(t) / sizeof(t[0]));
    pxt_pass();
}

Test(framing, transfer_encoding_rejections)
{
    static const struct bad t[] = {
        {"TE gzip", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip\r\n\r\nxxxxx", 400, 501},
        {"TE chunked, gzip", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400, 501},
        {"TE chunked twice (list)", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400, 0},
        {"TE chunked twice (fields)", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, 0},
        {"TE on HTTP/1.0", "POST / HTTP/1.0\r\n" H "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, 0},
        {"TE unknown coding", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: frobnicate, chunked\r\n\r\n0\r\n\r\n", 501, 0},
        {"TE unknown alone", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: x-custom\r\n\r\n0\r\n\r\n", 501, 0},
        {"TE empty", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: \r\n\r\n0\r\n\r\n", 400, 501},
    };

    pxt_setup(NULL);
    run_table(t, sizeof(t) / sizeof(t[0]));
    pxt_pass();
}

Test(framing, header_syntax_rejections)
{
    static const struct bad t[] = {
        {"space before colon", "GET / HTTP/1.1\r\n" H "X-A : 1\r\n\r\n", 400, 0},
        {"tab before colon", "GET / HTTP/1.1\r\n" H "X-A\t: 1\r\n\r\n", 400, 0},
        {"obs-fold", "GET / HTTP/1.1\r\n" H "X-A: 1\r\n  continued\r\n\r\n", 400, 0},
        {"obs-fold tab", "GET / HTTP/1.1\r\n" H "X-A: 1\r\n\tcontinued\r\n\r\n", 400, 0},
        {"bare CR in field", "GET / HTTP/1.1\r\n" H "X-A: 1\rX-B: 2\r\n\r\n", 400, 0},
        {"bare LF line ends", "GET / HTTP/1.1\n" "Host: a\n\n", 400, 0},
        {"bare LF in fields", "GET / HTTP/1.1\r\n" H "X-A: 1\nX-B: 2\r\n\r\n", 400, 0},
        {"control byte in value", "GET / HTTP/1.1\r\n" H "X-A: a\x01" "b\r\n\r\n", 400, 0},
        {"DEL in value", "GET / HTTP/1.1\r\n" H "X-A: a\x7f" "b\r\n\r\n", 400, 0},
        {"ESC in value", "GET / HTTP/1.1\r\n" H "X-A: \x1b[31m\r\n\r\n", 400, 0},
        {"bad name byte", "GET / HTTP/1.1\r\n" H "X(A): 1\r\n\r\n", 400, 0},
        {"name with slash", "GET / HTTP/1.1\r\n" H "X/A: 1\r\n\r\n", 400, 0},
        {"name with 8-bit byte", "GET / HTTP/1.1\r\n" H "X\xc3\xa9: 1\r\n\r\n", 400, 0},
        {"empty name", "GET / HTTP/1.1\r\n" H ": 1\r\n\r\n", 400, 0},
        {"no colon", "GET / HTTP/1.1\r\n" H "X-A 1\r\n\r\n", 400, 0},
        /* RFC 9112 2.2: one is ignored (accepted_edge_cases), two are not. */
        {"two leading empty lines", "\r\n\r\nGET / HTTP/1.1\r\n" H "\r\n", 400, 0},
        {"leading bare LF", "\nGET / HTTP/1.1\r\n" H "\r\n", 400, 0},
    };

    pxt_setup(NULL);
    run_table(t, sizeof(t) / sizeof(t[0]));
    pxt_pass();
}

/* A NUL byte cannot live in a C string literal table: sent with its length. */
Test(framing, nul_in_value)
{
    static const char raw[] = "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n";
    static const char raw_name[] = "GET / HTTP/1.1\r\nHost: a\r\nX-\0A: 1\r\n\r\n";
    static const char raw_line[] = "GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n";

    pxt_setup(NULL);
    pxt_reject("NUL in value", raw, sizeof(raw) - 1, 400, 0);
    pxt_reject("NUL in name", raw_name, sizeof(raw_name) - 1, 400, 0);
    pxt_reject("NUL in target", raw_line, sizeof(raw_line) - 1, 400, 0);
    pxt_pass();
}

Test(framing, host_rejections)
{
    static const struct bad t[] = {
        {"missing Host (1.1)", "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400, 0},
        {"duplicate Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400, 0},
        {"differing Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, 0},
        {"Host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, 0},
        {"Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, 0},
        {"Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400, 0},
        {"Host list", "GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", 400, 0},
    };

    pxt_setup(NULL);
    run_table(t, sizeof(t) / sizeof(t[0]));
    pxt_pass();
}

Test(framing, request_line_rejections)
{
    static const struct bad t[] = {
        {"HTTP/2.0", "GET / HTTP/2.0\r\n" H "\r\n", 400, 505},
        {"HTTP/1.2", "GET / HTTP/1.2\r\n" H "\r\n", 400, 505},
        {"HTTP/0.9", "GET /\r\n\r\n", 400, 0},
        {"double space", "GET  / HTTP/1.1\r\n" H "\r\n", 400, 0},
        {"double space after target", "GET /  HTTP/1.1\r\n" H "\r\n", 400, 0},
        {"tab separator", "GET\t/ HTTP/1.1\r\n" H "\r\n", 400, 0},
        {"space in target", "GET /a b HTTP/1.1\r\n" H "\r\n", 400, 0},
        {"lowercase version", "GET / http/1.1\r\n" H "\r\n", 400, 0},
        {"trailing space", "GET / HTTP/1.1 \r\n" H "\r\n", 400, 0},
        {"leading space", " GET / HTTP/1.1\r\n" H "\r\n", 400, 0},
        {"control in target", "GET /a\x01 HTTP/1.1\r\n" H "\r\n", 400, 0},
    };

    pxt_setup(NULL);
    run_table(t, sizeof(t) / sizeof(t[0]));
    pxt_pass();
}

Test(framing, limits_431_414)
{
    char *big = malloc(64 * 1024);
    size_t n;

    pxt_setup(NULL);
    /* A head over 16 KiB: 431. */
    n = (size_t)sprintf(big, "GET / HTTP/1.1\r\n" H);
    for (int i = 0; i < 20; i++) {
        n += (size_t)sprintf(big + n, "X-Pad-%d: ", i);
        memset(big + n, 'a', 1000);
        n += 1000;
        n += (size_t)sprintf(big + n, "\r\n");
    }
    n += (size_t)sprintf(big + n, "\r\n");
    pxt_reject("head over 16 KiB", big, n, 431, 0);
    /* 101 header fields (Host + 100): 431. */
    n = (size_t)sprintf(big, "GET / HTTP/1.1\r\n" H);
    for (int i = 0; i < 100; i++)
        n += (size_t)sprintf(big + n, "X-F%d: v\r\n", i);
    n += (size_t)sprintf(big + n, "\r\n");
    pxt_reject("101 fields", big, n, 431, 0);
    /* A request line over 8 KiB: 414. */
    n = (size_t)sprintf(big, "GET /");
    memset(big + n, 'a', 9000);
    n += 9000;
    n += (size_t)sprintf(big + n, " HTTP/1.1\r\n" H "\r\n");
    pxt_reject("request line over 8 KiB", big, n, 414, 0);
    /* 100 fields in all is still fine (checked last: it reaches the upstream). */
    n = (size_t)sprintf(big, "GET /hundred HTTP/1.1\r\n" H);
    for (int i = 0; i < 98; i++)
        n += (size_t)sprintf(big + n, "X-F%d: v\r\n", i);
    n += (size_t)sprintf(big + n, "Connection: close\r\n\r\n");
    cr_assert_eq(ts_http_raw(pxt.px.port, big, n, NULL, 5000), 200, "100 fields refused");
    free(big);
    pxt_pass();
}

/* A bad chunk line arrives after the head was forwarded: the client gets 400,
 * and the upstream connection is closed without a complete request. */
static void bad_chunk(const char *name, const char *body)
{
    char raw[8192];
    struct ts_resp r;
    int fd, n;

    n = snprintf(raw, sizeof(raw),
                 "PUT /bad HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n%s", body);
    fd = pxt_connect();
    (void)ts_send_all(fd, raw, (size_t)n);
    cr_assert_eq(ts_http_read(fd, &r, 5000, 0), 0, "%s: no response", name);
    cr_assert_eq(r.status, 400, "%s: status %d", name, r.status);
    ts_resp_free(&r);
    cr_assert(ts_wait_closed(fd, 3000), "%s: connection left open", name);
    close(fd);
    cr_assert_eq(ts_upstream_count(pxt.up), 0, "%s: upstream got a complete request", name);
}

Test(framing, bad_chunk_lines)
{
    static const char *const t[][2] = {
        {"sign", "+5\r\nhello\r\n0\r\n\r\n"},
        {"minus", "-5\r\nhello\r\n0\r\n\r\n"},
        {"0x prefix", "0x5\r\nhello\r\n0\r\n\r\n"},
        {"leading space", " 5\r\nhello\r\n0\r\n\r\n"},
        {"leading tab", "\t5\r\nhello\r\n0\r\n\r\n"},
        {"junk", "5z\r\nhello\r\n0\r\n\r\n"},
        {"no digits", "\r\nhello\r\n0\r\n\r\n"},
        {"overflow 17 hex digits", "10000000000000005\r\nhello\r\n0\r\n\r\n"},
        {"bare LF", "5\nhello\r\n0\r\n\r\n"},
        {"bare CR", "5\rhello\r\n0\r\n\r\n"},
        {"trailing space without ext", "5 \r\nhello\r\n0\r\n\r\n"},
        {"missing CRLF after data", "5\r\nhelloX0\r\n\r\n"},
        {"ext with control byte", "5;a=\x01\r\nhello\r\n0\r\n\r\n"},
        {"ext with DEL", "5;a\x7f\r\nhello\r\n0\r\n\r\n"},
        {"bad trailer", "5\r\nhello\r\n0\r\nX-T : 1\r\n\r\n"},
        {"obs-fold in trailer", "5\r\nhello\r\n0\r\nX-T: 1\r\n 2\r\n\r\n"},
    };

    pxt_setup(NULL);
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        bad_chunk(t[i][0], t[i][1]);
    pxt_pass();
}

Test(framing, chunk_extension_over_4k)
{
    char body[6000];
    size_t n = 0;

    pxt_setup(NULL);
    body[n++] = '5';
    body[n++] = ';';
    memset(body + n, 'e', 4200);
    n += 4200;
    strcpy(body + n, "\r\nhello\r\n0\r\n\r\n");
    bad_chunk("extension over 4 KiB", body);
    pxt_pass();
}

/* With the head on the upstream before the bad line arrives, the upstream
 * sees its connection closed mid-body (its parser counts that as an error)
 * and the next request goes out on a fresh connection. */
Test(framing, bad_chunk_after_head_closes_upstream_connection)
{
    struct ts_resp r;
    struct ts_upstream_req *q;
    long long t0;
    int fd;

    pxt_setup(NULL);
    fd = pxt_connect();
    pxt_sends(fd, "PUT /split HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    t0 = ts_now_ms();
    while (ts_upstream_bytes(pxt.up) == 0 && ts_now_ms() - t0 < 3000)
        ts_sleep_ms(5);
    cr_assert_gt(ts_upstream_bytes(pxt.up), 0, "head not forwarded before the body ended");
    pxt_sends(fd, "zz\r\n");
    cr_assert_eq(ts_http_read(fd, &r, 5000, 0), 0);
    cr_assert_eq(r.status, 400);
    ts_resp_free(&r);
    cr_assert(ts_wait_closed(fd, 3000));
    close(fd);
    t0 = ts_now_ms();
    while (ts_upstream_parse_errors(pxt.up) == 0 && ts_now_ms() - t0 < 3000)
        ts_sleep_ms(5);
    cr_assert_eq(ts_upstream_parse_errors(pxt.up), 1, "upstream connection not closed");
    cr_assert_eq(ts_upstream_count(pxt.up), 0);
    cr_assert_eq(ts_http_get(pxt.px.port, "/after", &r), 200);
    ts_resp_free(&r);
    q = pxt_get(0);
    cr_assert_str_eq(q->target, "/after");
    cr_assert_eq(q->conn, 1, "reused the upstream connection that held a partial request");
    free(q);
    pxt_pass();
}

/* Sends raw (with Connection: close) and checks what the upstream received. */
static void accepted(const char *name, const char *raw, const char *want_framing,
                     const char *body)
{
    struct ts_resp r;
    struct ts_upstream_req *q;
    size_t before = ts_upstream_count(pxt.up);
    char val[64];

    cr_assert_eq(ts_http_raw(pxt.px.port, raw, strlen(raw), &r, 5000), 200, "%s: status %d",
                 name, r.status);
    ts_resp_free(&r);
    pxt_wait_count(before + 1, 3000);
    q = pxt_get(before);
    cr_assert_eq(q->body_len, strlen(body), "%s: body length %llu", name,
                 (unsigned long long)q->body_len);
    cr_assert_eq(q->body_hash, ts_upstream_hash(body, strlen(body)), "%s: body differs", name);
    if (strcmp(want_framing, "chunked") == 0) {
        cr_assert_eq(ts_upstream_header(q, "Transfer-Encoding", val, sizeof(val)), 1, "%s", name);
        cr_assert_str_eq(val, "chunked", "%s", name);
        cr_assert_eq(ts_upstream_header(q, "Content-Length", NULL, 0), 0, "%s", name);
        cr_assert_null(strstr(q->head, ";"), "%s: extension in head?", name);
    } else {
        cr_assert_eq(ts_upstream_header(q, "Content-Length", val, sizeof(val)), 1, "%s", name);
        cr_assert_str_eq(val, want_framing, "%s", name);
        cr_assert_eq(ts_upstream_header(q, "Transfer-Encoding", NULL, 0), 0, "%s", name);
    }
    free(q);
}

Test(framing, accepted_edge_cases)
{
    char ext[8192];

    pxt_setup(NULL);
    accepted("CL leading zeros",
             "PUT /z HTTP/1.1\r\n" H "Content-Length: 0005\r\nConnection: close\r\n\r\nhello", "5",
             "hello");
    accepted("CL all zeros", "PUT /z HTTP/1.1\r\n" H "Content-Length: 000\r\nConnection: close\r\n\r\n",
             "0", "");
    accepted("Chunked capitalised",
             "PUT /c HTTP/1.1\r\n" H "Transfer-Encoding: Chunked\r\nConnection: close\r\n\r\n"
             "5\r\nhello\r\n0\r\n\r\n",
             "chunked", "hello");
    accepted("CHUNKED upper case",
             "PUT /c HTTP/1.1\r\n" H "Transfer-Encoding: CHUNKED\r\nConnection: close\r\n\r\n"
             "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
             "chunked", "abcde");
    accepted("chunk extensions and BWS",
             "PUT /e HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
             "5;name=value\r\nhello\r\n6 ;a=\"q s\";b\r\n world\r\n0;last\r\n\r\n",
             "chunked", "hello world");
    accepted("upper-case hex and leading zeros in size",
             "PUT /h HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
             "000A\r\n0123456789\r\n0\r\n\r\n",
             "chunked", "0123456789");
    accepted("one leading empty line",
             "\r\nPUT /l HTTP/1.1\r\n" H "Content-Length: 2\r\nConnection: close\r\n\r\nok", "2",
             "ok");
    accepted("trailer fields dropped",
             "PUT /t HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
             "2\r\nhi\r\n0\r\nX-Trailer: 1\r\n\r\n",
             "chunked", "hi");
    snprintf(ext, sizeof(ext),
             "PUT /x HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
             "5;%.*s\r\nhello\r\n0\r\n\r\n",
             4000,
             "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
             "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk");
    accepted("short bounded extension", ext, "chunked", "hello");
    {
        /* An extension just under the 4 KiB bound. */
        size_t n = (size_t)sprintf(ext, "PUT /x4 HTTP/1.1\r\n" H
                                        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5;");
        memset(ext + n, 'k', 4000);
        n += 4000;
        strcpy(ext + n, "\r\nhello\r\n0\r\n\r\n");
        accepted("4000-byte extension", ext, "chunked", "hello");
    }
    pxt_pass();
}

/* px_http1 from tables: request heads, response heads and chunked bodies,
 * good and bad, each fed whole and one byte at a time (a fresh buffer of
 * exactly the bytes received so far for every call, so a read past the end
 * shows up under ASan); both ways must agree. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px_http1.h"

#define S(x) x, sizeof(x) - 1

static const struct px_h1_limits lim_default = {16384, 8192, 100};

struct run {
    enum px_h1_status st;
    struct px_h1_head h;
    char *buf;     /* the buffer the slices in h point into (owned) */
    size_t err_at; /* bytes fed when the result was decided */
};

static void run_whole(struct run *r, int is_req, int head_req, const struct px_h1_limits *lim,
                      const char *in, size_t len)
{
    struct px_h1_parser p;

    memset(r, 0, sizeof *r);
    r->buf = malloc(len ? len : 1);
    cr_assert(r->buf);
    memcpy(r->buf, in, len);
    px_h1_parser_init(&p, is_req, head_req, lim);
    r->st = px_h1_parse_head(&p, r->buf, len, &r->h);
    r->err_at = len;
}

static void run_bytes(struct run *r, int is_req, int head_req, const struct px_h1_limits *lim,
                      const char *in, size_t len)
{
    struct px_h1_parser p;
    size_t k;

    memset(r, 0, sizeof *r);
    px_h1_parser_init(&p, is_req, head_req, lim);
    r->st = PX_H1_NEED_MORE;
    for (k = 1; k <= len && r->st == PX_H1_NEED_MORE; k++) {
        free(r->buf);
        r->buf = malloc(k);
        cr_assert(r->buf);
        memcpy(r->buf, in, k);
        r->st = px_h1_parse_head(&p, r->buf, k, &r->h);
        r->err_at = k;
    }
}

/* Slices of h must match between the two runs at the same offsets. */
static void expect_same(const char *name, const struct run *a, const struct run *b)
{
    unsigned i;

    cr_expect_eq(a->st, b->st, "%s: whole %d, bytewise %d", name, a->st, b->st);
    if (a->st != b->st)
        return;
    if (a->st == PX_H1_ERROR) {
        cr_expect_eq(a->h.error_status, b->h.error_status, "%s: status %d vs %d", name,
                     a->h.error_status, b->h.error_status);
        cr_expect_str_eq(a->h.error, b->h.error, "%s", name);
    }
    if (a->st != PX_H1_DONE)
        return;
    cr_expect_eq(a->h.head_len, b->h.head_len, "%s", name);
    cr_expect_eq(a->h.target_form, b->h.target_form, "%s", name);
    cr_expect_eq(a->h.target ? a->h.target - a->buf : -1, b->h.target ? b->h.target - b->buf : -1,
                 "%s", name);
    cr_expect_eq(a->h.authority ? a->h.authority - a->buf : -1,
                 b->h.authority ? b->h.authority - b->buf : -1, "%s", name);
    cr_expect_eq(a->h.authority_len, b->h.authority_len, "%s", name);
    cr_expect_eq(a->h.origin ? a->h.origin - a->buf : -1, b->h.origin ? b->h.origin - b->buf : -1,
                 "%s", name);
    cr_expect_eq(a->h.origin_len, b->h.origin_len, "%s", name);
    cr_expect_eq(a->h.body, b->h.body, "%s", name);
    cr_expect_eq(a->h.content_length, b->h.content_length, "%s", name);
    cr_expect_eq(a->h.keep_alive, b->h.keep_alive, "%s", name);
    cr_expect_eq(a->h.n_fields, b->h.n_fields, "%s", name);
    for (i = 0; i < a->h.n_fields && i < b->h.n_fields; i++) {
        cr_expect_eq(a->h.fields[i].name - a->buf, b->h.fields[i].name - b->buf, "%s", name);
        cr_expect_eq(a->h.fields[i].value_len, b->h.fields[i].value_len, "%s", name);
        cr_expect_eq(a->h.fields[i].flags, b->h.fields[i].flags, "%s", name);
    }
}

static int slice_is(const char *s, size_t n, const char *want)
{
    return want == NULL ? s == NULL : (s != NULL && strlen(want) == n && memcmp(s, want, n) == 0);
}

static const struct px_h1_field *find_field(const struct px_h1_head *h, const char *name)
{
    unsigned i;
    for (i = 0; i < h->n_fields; i++)
        if (px_h1_name_is(&h->fields[i], name))
            return &h->fields[i];
    return NULL;
}

/* ---- requests ---- */

struct fl { const char *name; unsigned flags; };

struct rq {
    const char *name;
    const char *in; size_t len;
    int status; /* 0: DONE, else the error_status */
    const char *method, *target;
    int minor;
    enum px_h1_body body;
    uint64_t cl;
    int ka, ec;
    const char *host;
    struct fl fl[3];
};

#define H "Host: a\r\n"
#define GET11 "GET / HTTP/1.1\r\n"
#define BAD(n, s, st) {n, S(s), st, NULL, NULL, 0, PX_H1_BODY_NONE, 0, 0, 0, NULL, {{0}}}

static const struct rq reqs[] = {
    /* good */
    {"simple", S(GET11 H "\r\n"), 0, "GET", "/", 1, PX_H1_BODY_NONE, 0, 1, 0, "a", {{0}}},
    {"http10 no host", S("GET /x?y=1 HTTP/1.0\r\n\r\n"), 0, "GET", "/x?y=1", 0,
     PX_H1_BODY_NONE, 0, 0, 0, NULL, {{0}}},
    {"http10 keep-alive", S("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), 0, "GET", "/", 0,
     PX_H1_BODY_NONE, 0, 1, 0, NULL, {{"connection", PX_H1_F_HOP}}},
    {"http10 close wins", S("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"), 0, "GET",
     "/", 0, PX_H1_BODY_NONE, 0, 0, 0, NULL, {{0}}},
    {"http11 close", S(GET11 H "Connection: close\r\n\r\n"), 0, "GET", "/", 1, PX_H1_BODY_NONE, 0,
     0, 0, "a", {{"connection", PX_H1_F_HOP}, {"host", 0}}},
    {"content-length", S("PUT /o HTTP/1.1\r\n" H "Content-Length: 5\r\n\r\nhello"), 0, "PUT", "/o",
     1, PX_H1_BODY_LENGTH, 5, 1, 0, "a", {{"content-length", PX_H1_F_FRAMING}}},
    {"content-length zero", S("PUT /o HTTP/1.1\r\n" H "Content-Length: 0\r\n\r\n"), 0, "PUT", "/o",
     1, PX_H1_BODY_LENGTH, 0, 1, 0, "a", {{0}}},
    {"leading zeros", S("PUT /o HTTP/1.1\r\n" H "Content-Length: 0005\r\n\r\n"), 0, "PUT", "/o", 1,
     PX_H1_BODY_LENGTH, 5, 1, 0, "a", {{0}}},
    {"max content-length", S("PUT /o HTTP/1.1\r\n" H "Content-Length: 18446744073709551615\r\n\r\n"),
     0, "PUT", "/o", 1, PX_H1_BODY_LENGTH, UINT64_MAX, 1, 0, "a", {{0}}},
    {"chunked", S("POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n"), 0, "POST", "/", 1,
     PX_H1_BODY_CHUNKED, 0, 1, 0, "a", {{"transfer-encoding", PX_H1_F_FRAMING}}},
    {"Chunked any case", S("POST / HTTP/1.1\r\n" H "Transfer-Encoding: ChUnKeD\r\n\r\n"), 0, "POST",
     "/", 1, PX_H1_BODY_CHUNKED, 0, 1, 0, "a", {{0}}},
    {"chunked OWS and empty elements",
     S("POST / HTTP/1.1\r\n" H "Transfer-Encoding: \t, chunked ,\t\r\n\r\n"), 0, "POST", "/", 1,
     PX_H1_BODY_CHUNKED, 0, 1, 0, "a", {{0}}},
    {"expect 100-continue",
     S("PUT /o HTTP/1.1\r\n" H "Expect: 100-Continue\r\nContent-Length: 3\r\n\r\n"), 0, "PUT",
     "/o", 1, PX_H1_BODY_LENGTH, 3, 1, 1, "a", {{"expect", PX_H1_F_EXPECT}}},
    {"expect ignored on 1.0", S("PUT /o HTTP/1.0\r\nExpect: 100-continue\r\n\r\n"), 0, "PUT", "/o",
     0, PX_H1_BODY_NONE, 0, 0, 0, NULL, {{"expect", PX_H1_F_EXPECT}}},
    {"connection names fields",
     S(GET11 H "Connection: X-Foo, close\r\nX-Foo: 1\r\nX-Bar: 2\r\n\r\n"), 0, "GET", "/", 1,
     PX_H1_BODY_NONE, 0, 0, 0, "a",
     {{"x-foo", PX_H1_F_HOP}, {"x-bar", 0}, {"connection", PX_H1_F_HOP}}},
    {"hop fields",
     S(GET11 H "Keep-Alive: 5\r\nTE: trailers\r\nTrailer: X\r\nUpgrade: h2c\r\n"
               "Proxy-Connection: x\r\n\r\n"),
     0, "GET", "/", 1, PX_H1_BODY_NONE, 0, 1, 0, "a",
     {{"keep-alive", PX_H1_F_HOP}, {"te", PX_H1_F_HOP}, {"upgrade", PX_H1_F_HOP}}},
    {"hop fields 2", S(GET11 H "Trailer: X\r\nProxy-Connection: x\r\n\r\n"), 0, "GET", "/", 1,
     PX_H1_BODY_NONE, 0, 1, 0, "a", {{"trailer", PX_H1_F_TRAILER}, {"proxy-connection", PX_H1_F_HOP}}},
    {"host port", S(GET11 "Host: Example.COM:8080\r\n\r\n"), 0, "GET", "/", 1, PX_H1_BODY_NONE, 0,
     1, 0, "Example.COM:8080", {{0}}},
    {"host ipv4", S(GET11 "Host: 127.0.0.1:80\r\n\r\n"), 0, "GET", "/", 1, PX_H1_BODY_NONE, 0, 1,
     0, "127.0.0.1:80", {{0}}},
    {"host ipv6", S(GET11 "Host: [::1]:8080\r\n\r\n"), 0, "GET", "/", 1, PX_H1_BODY_NONE, 0, 1, 0,
     "[::1]:8080", {{0}}},
    {"host ipv6 no port", S(GET11 "Host: [fe80::1]\r\n\r\n"), 0, "GET", "/", 1, PX_H1_BODY_NONE, 0,
     1, 0, "[fe80::1]", {{0}}},
    {"host pct and subdelims", S(GET11 "Host: a%20b_c~d!e\r\n\r\n"), 0, "GET", "/", 1,
     PX_H1_BODY_NONE, 0, 1, 0, "a%20b_c~d!e", {{0}}},
    {"host OWS trimmed", S(GET11 "Host:  \ta \t\r\n\r\n"), 0, "GET", "/", 1, PX_H1_BODY_NONE, 0, 1,
     0, "a", {{0}}},
    {"obs-text value", S(GET11 H "X: caf\xc3\xa9\r\n\r\n"), 0, "GET", "/", 1, PX_H1_BODY_NONE, 0, 1,
     0, "a", {{0}}},
    {"empty value", S(GET11 H "X:\r\nY: \r\n\r\n"), 0, "GET", "/", 1, PX_H1_BODY_NONE, 0, 1, 0, "a",
     {{0}}},
    {"absolute form", S("GET http://a/b?c HTTP/1.1\r\n" H "\r\n"), 0, "GET", "http://a/b?c", 1,
     PX_H1_BODY_NONE, 0, 1, 0, "a", {{0}}},
    {"asterisk form", S("OPTIONS * HTTP/1.1\r\n" H "\r\n"), 0, "OPTIONS", "*", 1, PX_H1_BODY_NONE,
     0, 1, 0, "a", {{0}}},
    {"token method", S("M-SEARCH /%7E HTTP/1.1\r\n" H "\r\n"), 0, "M-SEARCH", "/%7E", 1,
     PX_H1_BODY_NONE, 0, 1, 0, "a", {{0}}},
    {"body bytes follow", S(GET11 H "\r\nGET / HTTP/1.1\r\n"), 0, "GET", "/", 1, PX_H1_BODY_NONE, 0,
     1, 0, "a", {{0}}},
    /* RFC 9112 2.2: one empty line before the request line is ignored. */
    {"one empty line first", S("\r\nPUT /o HTTP/1.1\r\n" H "Content-Length: 2\r\n\r\nok"), 0,
     "PUT", "/o", 1, PX_H1_BODY_LENGTH, 2, 1, 0, "a", {{"content-length", PX_H1_F_FRAMING}}},

    /* line endings */
    BAD("bare LF in request line", "GET / HTTP/1.1\n" H "\r\n", 400),
    BAD("bare LF after field", GET11 "Host: a\n\r\n", 400),
    BAD("bare LF final line", GET11 H "\n", 400),
    BAD("bare CR in request line", "GET / HTTP/1.1\rHost: a\r\n\r\n", 400),
    BAD("bare CR in value", GET11 "Host: a\rb\r\n\r\n", 400),
    BAD("bare CR final line", GET11 H "\rX", 400),
    BAD("LF CR", GET11 H "\n\r", 400),
    BAD("two empty lines first", "\r\n\r\nGET / HTTP/1.1\r\n" H "\r\n", 400),
    BAD("three empty lines first", "\r\n\r\n\r\nGET / HTTP/1.1\r\n" H "\r\n", 400),
    BAD("bare LF first", "\nGET / HTTP/1.1\r\n" H "\r\n", 400),
    BAD("CRLF then bare LF first", "\r\n\nGET / HTTP/1.1\r\n" H "\r\n", 400),
    BAD("CRLF then space first", "\r\n GET / HTTP/1.1\r\n" H "\r\n", 400),
    BAD("empty line only", "\r\n\r\n", 400),
    /* field lines */
    BAD("obs-fold SP", GET11 H "X: a\r\n b\r\n\r\n", 400),
    BAD("obs-fold HTAB", GET11 H "X: a\r\n\tb\r\n\r\n", 400),
    BAD("space first field", GET11 " Host: a\r\n\r\n", 400),
    BAD("space before colon", GET11 "Host : a\r\n\r\n", 400),
    BAD("tab before colon", GET11 H "X\t: a\r\n\r\n", 400),
    BAD("empty name", GET11 H ": a\r\n\r\n", 400),
    BAD("non-token name", GET11 H "X(y): a\r\n\r\n", 400),
    BAD("space in name", GET11 H "X y: a\r\n\r\n", 400),
    BAD("obs-text in name", GET11 H "X\xc3\xa9: a\r\n\r\n", 400),
    BAD("no colon", GET11 H "Foo\r\n\r\n", 400),
    BAD("NUL in value", GET11 H "X: a\0b\r\n\r\n", 400),
    BAD("control in value", GET11 H "X: a\x01\r\n\r\n", 400),
    BAD("ESC in value", GET11 H "X: \x1b[0m\r\n\r\n", 400),
    BAD("DEL in value", GET11 H "X: a\x7f\r\n\r\n", 400),
    /* request line */
    BAD("double space", "GET  / HTTP/1.1\r\n" H "\r\n", 400),
    BAD("double space before version", "GET /  HTTP/1.1\r\n" H "\r\n", 400),
    BAD("tab separator", "GET\t/ HTTP/1.1\r\n" H "\r\n", 400),
    BAD("tab in target", "GET /a\tb HTTP/1.1\r\n" H "\r\n", 400),
    BAD("space in target", "GET /a b HTTP/1.1\r\n" H "\r\n", 400),
    BAD("control in target", "GET /a\x01 HTTP/1.1\r\n" H "\r\n", 400),
    BAD("obs-text in target", "GET /\xc3\xa9 HTTP/1.1\r\n" H "\r\n", 400),
    BAD("HTTP/0.9", "GET /\r\n\r\n", 400),
    BAD("no version", "GET / \r\n" H "\r\n", 400),
    BAD("HTTP/2.0", "GET / HTTP/2.0\r\n" H "\r\n", 400),
    BAD("HTTP/1.2", "GET / HTTP/1.2\r\n" H "\r\n", 400),
    BAD("HTTP/1.10", "GET / HTTP/1.10\r\n" H "\r\n", 400),
    BAD("lowercase http", "GET / http/1.1\r\n" H "\r\n", 400),
    BAD("trailing space", "GET / HTTP/1.1 \r\n" H "\r\n", 400),
    BAD("leading space", " GET / HTTP/1.1\r\n" H "\r\n", 400),
    BAD("empty method", " / HTTP/1.1\r\n" H "\r\n", 400),
    BAD("non-token method", "G(T / HTTP/1.1\r\n" H "\r\n", 400),
    BAD("only method", "GET\r\n\r\n", 400),
    /* request-target forms (RFC 9112 3.2; more in target_form_table) */
    BAD("asterisk with GET", "GET * HTTP/1.1\r\n" H "\r\n", 400),
    BAD("asterisk lowercase options", "options * HTTP/1.1\r\n" H "\r\n", 400),
    BAD("asterisk plus path", "OPTIONS */x HTTP/1.1\r\n" H "\r\n", 400),
    BAD("authority-form", "CONNECT a:443 HTTP/1.1\r\n" H "\r\n", 400),
    BAD("relative target", "GET a/b HTTP/1.1\r\n" H "\r\n", 400),
    BAD("other scheme", "GET ftp://a/b HTTP/1.1\r\n" H "\r\n", 400),
    BAD("scheme without slashes", "GET http:a/b HTTP/1.1\r\n" H "\r\n", 400),
    BAD("absolute empty path", "GET http://a HTTP/1.1\r\n" H "\r\n", 400),
    BAD("absolute query no path", "GET http://a?x HTTP/1.1\r\n" H "\r\n", 400),
    BAD("absolute empty authority", "GET http:///x HTTP/1.1\r\n" H "\r\n", 400),
    BAD("absolute userinfo", "GET http://u@a/x HTTP/1.1\r\n" H "\r\n", 400),
    BAD("absolute userinfo pass", "GET http://u:p@a/x HTTP/1.1\r\n" H "\r\n", 400),
    BAD("absolute bad port", "GET http://a:x/ HTTP/1.1\r\n" H "\r\n", 400),
    BAD("absolute fragment", "GET http://a#f HTTP/1.1\r\n" H "\r\n", 400),
    BAD("absolute only scheme", "GET http:// HTTP/1.1\r\n" H "\r\n", 400),
    /* Host */
    BAD("missing host", GET11 "\r\n", 400),
    BAD("duplicate host", GET11 H H "\r\n", 400),
    BAD("duplicate host differing", GET11 H "HOST: b\r\n\r\n", 400),
    BAD("empty host", GET11 "Host:\r\n\r\n", 400),
    BAD("host with space", GET11 "Host: a b\r\n\r\n", 400),
    BAD("host with slash", GET11 "Host: a/b\r\n\r\n", 400),
    BAD("host with userinfo", GET11 "Host: u@a\r\n\r\n", 400),
    BAD("host empty port", GET11 "Host: a:\r\n\r\n", 400),
    BAD("host long port", GET11 "Host: a:123456\r\n\r\n", 400),
    BAD("host bad port", GET11 "Host: a:8x\r\n\r\n", 400),
    BAD("host two colons", GET11 "Host: a:1:2\r\n\r\n", 400),
    BAD("host ipv6 open", GET11 "Host: [::1\r\n\r\n", 400),
    BAD("host ipv6 empty", GET11 "Host: []\r\n\r\n", 400),
    BAD("host ipv6 junk after", GET11 "Host: [::1]x\r\n\r\n", 400),
    BAD("host bad pct", GET11 "Host: a%2\r\n\r\n", 400),
    BAD("host only port", GET11 "Host: :80\r\n\r\n", 400),
    BAD("invalid host on 1.0", "GET / HTTP/1.0\r\nHost: a b\r\n\r\n", 400),
    /* Content-Length */
    BAD("cl plus", GET11 H "Content-Length: +5\r\n\r\n", 400),
    BAD("cl minus", GET11 H "Content-Length: -5\r\n\r\n", 400),
    BAD("cl hex", GET11 H "Content-Length: 0x5\r\n\r\n", 400),
    BAD("cl hex digit", GET11 H "Content-Length: 5a\r\n\r\n", 400),
    BAD("cl space inside", GET11 H "Content-Length: 5 5\r\n\r\n", 400),
    BAD("cl empty", GET11 H "Content-Length:\r\n\r\n", 400),
    BAD("cl empty OWS", GET11 H "Content-Length:  \r\n\r\n", 400),
    BAD("cl list same", GET11 H "Content-Length: 5, 5\r\n\r\n", 400),
    BAD("cl list", GET11 H "Content-Length: 5,6\r\n\r\n", 400),
    BAD("cl decimal", GET11 H "Content-Length: 5.0\r\n\r\n", 400),
    BAD("cl overflow", GET11 H "Content-Length: 18446744073709551616\r\n\r\n", 400),
    BAD("cl overflow long", GET11 H "Content-Length: 99999999999999999999999\r\n\r\n", 400),
    BAD("cl two differing", GET11 H "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
    BAD("cl two identical", GET11 H "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", 400),
    BAD("cl and te", GET11 H "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    BAD("te and cl", GET11 H "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400),
    /* Transfer-Encoding */
    BAD("te on 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    BAD("te final gzip", GET11 H "Transfer-Encoding: gzip\r\n\r\n", 400),
    BAD("te chunked then gzip", GET11 H "Transfer-Encoding: chunked, gzip\r\n\r\n", 400),
    BAD("te chunked twice", GET11 H "Transfer-Encoding: chunked, chunked\r\n\r\n", 400),
    BAD("te chunked twice fields",
        GET11 H "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    BAD("te chunked then gzip fields",
        GET11 H "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    BAD("te empty", GET11 H "Transfer-Encoding:\r\n\r\n", 400),
    BAD("te only commas", GET11 H "Transfer-Encoding: , ,\r\n\r\n", 400),
    BAD("te chunked params", GET11 H "Transfer-Encoding: chunked;q=1\r\n\r\n", 400),
    BAD("te junk after coding", GET11 H "Transfer-Encoding: chunked x\r\n\r\n", 400),
    BAD("te non-token", GET11 H "Transfer-Encoding: \"chunked\"\r\n\r\n", 400),
    BAD("te unknown", GET11 H "Transfer-Encoding: foo\r\n\r\n", 501),
    BAD("te unknown then chunked", GET11 H "Transfer-Encoding: foo, chunked\r\n\r\n", 501),
    BAD("te gzip then chunked", GET11 H "Transfer-Encoding: gzip, chunked\r\n\r\n", 501),
    BAD("te deflate then chunked", GET11 H "Transfer-Encoding: deflate, chunked\r\n\r\n", 501),
    BAD("te compress then chunked", GET11 H "Transfer-Encoding: compress, chunked\r\n\r\n", 501),
    BAD("te identity then chunked", GET11 H "Transfer-Encoding: identity, chunked\r\n\r\n", 501),
    BAD("te gzip params then chunked",
        GET11 H "Transfer-Encoding: gzip;level=1, chunked\r\n\r\n", 501),
    /* other fields */
    BAD("connection non-token", GET11 H "Connection: close, a b\r\n\r\n", 400),
    BAD("expect other", GET11 H "Expect: foo\r\n\r\n", 417),
    BAD("expect list", GET11 H "Expect: 100-continue, foo\r\n\r\n", 417),
    BAD("expect 101", GET11 H "Expect: 101-continue\r\n\r\n", 417),
};

static void check_request(const struct rq *t)
{
    struct run w, b;
    const struct px_h1_head *h = &w.h;
    const char *eoh;
    unsigned i;

    run_whole(&w, 1, 0, &lim_default, t->in, t->len);
    run_bytes(&b, 1, 0, &lim_default, t->in, t->len);
    expect_same(t->name, &w, &b);
    if (t->status) {
        cr_expect_eq(w.st, PX_H1_ERROR, "%s: want error, got %d", t->name, w.st);
        cr_expect_eq(h->error_status, t->status, "%s: status %d, want %d (%s)", t->name,
                     h->error_status, t->status, h->error ? h->error : "");
        cr_expect(h->error != NULL, "%s", t->name);
        goto out;
    }
    cr_expect_eq(w.st, PX_H1_DONE, "%s: got %d (%d %s)", t->name, w.st, h->error_status,
                 h->error ? h->error : "");
    if (w.st != PX_H1_DONE)
        goto out;
    eoh = memmem(t->in, t->len, "\r\n\r\n", 4);
    cr_expect_eq(h->head_len, (size_t)(eoh - t->in) + 4, "%s", t->name);
    cr_expect(slice_is(h->method, h->method_len, t->method), "%s: method", t->name);
    cr_expect(slice_is(h->target, h->target_len, t->target), "%s: target", t->name);
    cr_expect_eq(h->minor, t->minor, "%s", t->name);
    cr_expect_eq(h->body, t->body, "%s: body %d", t->name, h->body);
    cr_expect_eq(h->content_length, t->cl, "%s", t->name);
    cr_expect_eq(h->keep_alive, t->ka, "%s: keep_alive", t->name);
    cr_expect_eq(h->expect_continue, t->ec, "%s: expect_continue", t->name);
    cr_expect(slice_is(h->host, h->host_len, t->host), "%s: host", t->name);
    for (i = 0; i < 3 && t->fl[i].name; i++) {
        const struct px_h1_field *f = find_field(h, t->fl[i].name);
        cr_expect(f != NULL, "%s: no field %s", t->name, t->fl[i].name);
        if (f)
            cr_expect_eq(f->flags, t->fl[i].flags, "%s: %s flags %u", t->name, t->fl[i].name,
                         f->flags);
    }
out:
    free(w.buf);
    free(b.buf);
}

Test(http1, request_table)
{
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++)
        check_request(&reqs[i]);
}

Test(http1, request_fields_trimmed)
{
    struct run w;
    static const char in[] = GET11 H "X:\t a\tb \t\r\nY:z\r\n\r\n";

    run_whole(&w, 1, 0, NULL, in, sizeof in - 1);
    cr_assert_eq(w.st, PX_H1_DONE);
    cr_assert_eq(w.h.n_fields, 3);
    cr_expect(slice_is(w.h.fields[1].name, w.h.fields[1].name_len, "X"));
    cr_expect(slice_is(w.h.fields[1].value, w.h.fields[1].value_len, "a\tb"));
    cr_expect(slice_is(w.h.fields[2].value, w.h.fields[2].value_len, "z"));
    free(w.buf);
}

/* The three accepted target forms and the slices the caller classifies:
 * the authority of an absolute-form target, and its origin-form part. */
struct tf {
    const char *name;
    const char *in; size_t len;
    enum px_h1_target_form form;
    const char *authority, *origin;
};

static const struct tf tforms[] = {
    {"origin", S("GET /a/b?c HTTP/1.1\r\n" H "\r\n"), PX_H1_TARGET_ORIGIN, NULL, "/a/b?c"},
    {"origin root", S(GET11 H "\r\n"), PX_H1_TARGET_ORIGIN, NULL, "/"},
    {"absolute", S("GET http://a/b?c HTTP/1.1\r\n" H "\r\n"), PX_H1_TARGET_ABSOLUTE, "a",
     "/b?c"},
    {"absolute root", S("PUT http://a/ HTTP/1.1\r\n" H "\r\n"), PX_H1_TARGET_ABSOLUTE, "a", "/"},
    {"absolute port any case", S("GET HtTp://Proxy.Example:8080/o/k HTTP/1.1\r\n" H "\r\n"),
     PX_H1_TARGET_ABSOLUTE, "Proxy.Example:8080", "/o/k"},
    {"absolute https", S("GET https://a:443/x HTTP/1.1\r\n" H "\r\n"), PX_H1_TARGET_ABSOLUTE,
     "a:443", "/x"},
    {"absolute ipv6", S("GET http://[::1]:8080/x HTTP/1.1\r\n" H "\r\n"), PX_H1_TARGET_ABSOLUTE,
     "[::1]:8080", "/x"},
    {"absolute double slash path", S("GET http://a//x HTTP/1.1\r\n" H "\r\n"),
     PX_H1_TARGET_ABSOLUTE, "a", "//x"},
    {"absolute OPTIONS", S("OPTIONS http://a/ HTTP/1.1\r\n" H "\r\n"), PX_H1_TARGET_ABSOLUTE, "a",
     "/"},
    {"absolute after empty line", S("\r\nGET http://a/x HTTP/1.1\r\n" H "\r\n"),
     PX_H1_TARGET_ABSOLUTE, "a", "/x"},
    {"asterisk", S("OPTIONS * HTTP/1.1\r\n" H "\r\n"), PX_H1_TARGET_ASTERISK, NULL, NULL},
    {"asterisk 1.0", S("OPTIONS * HTTP/1.0\r\n\r\n"), PX_H1_TARGET_ASTERISK, NULL, NULL},
};

Test(http1, target_form_table)
{
    for (size_t i = 0; i < sizeof tforms / sizeof tforms[0]; i++) {
        const struct tf *t = &tforms[i];
        struct run w, b;

        run_whole(&w, 1, 0, &lim_default, t->in, t->len);
        run_bytes(&b, 1, 0, &lim_default, t->in, t->len);
        expect_same(t->name, &w, &b);
        cr_expect_eq(w.st, PX_H1_DONE, "%s: %d (%s)", t->name, w.st, w.h.error ? w.h.error : "");
        if (w.st == PX_H1_DONE) {
            cr_expect_eq(w.h.target_form, t->form, "%s: form %d", t->name, w.h.target_form);
            cr_expect(slice_is(w.h.authority, w.h.authority_len, t->authority), "%s: authority",
                      t->name);
            cr_expect(slice_is(w.h.origin, w.h.origin_len, t->origin), "%s: origin %.*s", t->name,
                      (int)w.h.origin_len, w.h.origin ? w.h.origin : "");
            /* Every slice lies inside the target. */
            if (w.h.origin)
                cr_expect(w.h.origin >= w.h.target &&
                              w.h.origin + w.h.origin_len == w.h.target + w.h.target_len,
                          "%s", t->name);
        }
        free(w.buf);
        free(b.buf);
    }
}

/* The ignored empty line is part of the head: head_len counts it, the slices
 * point past it, and the next request on the connection starts after it. */
Test(http1, leading_empty_line_is_in_head_len)
{
    static const char in[] = "\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    struct run w;

    run_whole(&w, 1, 0, NULL, in, sizeof in - 1);
    cr_assert_eq(w.st, PX_H1_DONE);
    cr_expect_eq(w.h.head_len, sizeof in - 1);
    cr_expect_eq(w.h.method, w.buf + 2);
    cr_expect(slice_is(w.h.target, w.h.target_len, "/x"));
    cr_expect_eq(w.h.n_fields, 1);
    cr_expect(slice_is(w.h.host, w.h.host_len, "a"));
    free(w.buf);
}

/* Errors are reported at the byte that decides them, not at the end. */
struct early { const char *name; const char *in; size_t len; size_t at; int status; };

static const struct early earlies[] = {
    {"bare LF", S("GET / HTTP/1.1\nHost: a\r\n\r\n"), 15, 400},
    {"bare CR", S("GET / HTTP/1.1\rHost: a\r\n\r\n"), 16, 400},
    {"bare CR in field", S(GET11 "Ho\rst: a\r\n\r\n"), 16 + 4, 400},
    {"bad request line", S("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), 17, 400},
    {"bad field line", S(GET11 "Host : a\r\nX: y\r\n\r\n"), 16 + 10, 400},
    {"second empty line", S("\r\n\r\nGET / HTTP/1.1\r\n"), 4, 400},
    {"asterisk without OPTIONS", S("GET * HTTP/1.1\r\nHost: a\r\n\r\n"), 16, 400},
};

Test(http1, errors_are_early)
{
    for (size_t i = 0; i < sizeof earlies / sizeof earlies[0]; i++) {
        const struct early *t = &earlies[i];
        struct run b;
        run_bytes(&b, 1, 0, NULL, t->in, t->len);
        cr_expect_eq(b.st, PX_H1_ERROR, "%s", t->name);
        cr_expect_eq(b.h.error_status, t->status, "%s", t->name);
        cr_expect_eq(b.err_at, t->at, "%s: decided at %zu, want %zu", t->name, b.err_at, t->at);
        free(b.buf);
    }
}

Test(http1, incomplete_is_need_more)
{
    static const char in[] = "PUT /o HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n";
    struct px_h1_parser p;
    struct px_h1_head h;

    for (size_t k = 0; k < sizeof in - 1; k++) {
        px_h1_parser_init(&p, 1, 0, NULL);
        cr_expect_eq(px_h1_parse_head(&p, in, k, &h), PX_H1_NEED_MORE, "prefix %zu", k);
    }
}

/* ---- limits ---- */

/* A request whose request line is line_len bytes (CRLF excluded). */
static char *long_line(size_t line_len, size_t *len)
{
    static const char pre[] = "GET /", post[] = " HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t fill = line_len - (sizeof pre - 1) - 9;
    char *s = malloc(line_len + sizeof post);

    cr_assert(s);
    memcpy(s, pre, sizeof pre - 1);
    memset(s + sizeof pre - 1, 'a', fill);
    memcpy(s + sizeof pre - 1 + fill, post, sizeof post);
    *len = strlen(s);
    return s;
}

Test(http1, request_line_limit)
{
    size_t len;
    struct run w, b;
    char *s = long_line(8192, &len);

    run_whole(&w, 1, 0, &lim_default, s, len);
    run_bytes(&b, 1, 0, &lim_default, s, len);
    cr_expect_eq(w.st, PX_H1_DONE);
    expect_same("8192", &w, &b);
    free(s), free(w.buf), free(b.buf);

    s = long_line(8193, &len);
    run_whole(&w, 1, 0, &lim_default, s, len);
    run_bytes(&b, 1, 0, &lim_default, s, len);
    cr_expect_eq(w.st, PX_H1_ERROR);
    cr_expect_eq(w.h.error_status, 414);
    expect_same("8193", &w, &b);
    /* Known as soon as byte 8193 arrives, before the line ends. */
    cr_expect_eq(b.err_at, 8193);
    free(w.buf), free(b.buf);

    free(s);

    /* The ignored empty line does not count towards the line limit. */
    s = long_line(8192, &len);
    {
        char *s2 = malloc(len + 2);
        cr_assert(s2);
        memcpy(s2, "\r\n", 2);
        memcpy(s2 + 2, s, len);
        run_whole(&w, 1, 0, &lim_default, s2, len + 2);
        run_bytes(&b, 1, 0, &lim_default, s2, len + 2);
        cr_expect_eq(w.st, PX_H1_DONE);
        expect_same("8192 after CRLF", &w, &b);
        free(w.buf), free(b.buf), free(s2);
    }
    free(s);

    /* A longer line in a buffer that stops before its end. */
    s = long_line(9000, &len);
    run_whole(&w, 1, 0, &lim_default, s, 8500);
    cr_expect_eq(w.st, PX_H1_ERROR);
    cr_expect_eq(w.h.error_status, 414);
    free(s), free(w.buf);
}

/* A request head of exactly total bytes, padded with one X-Pad field. */
static char *sized_head(size_t total, size_t *len)
{
    static const char pre[] = GET11 H "X-Pad: ";
    char *s = malloc(total + 1);
    size_t fill = total - (sizeof pre - 1) - 4;

    cr_assert(s);
    memcpy(s, pre, sizeof pre - 1);
    memset(s + sizeof pre - 1, 'p', fill);
    memcpy(s + sizeof pre - 1 + fill, "\r\n\r\n", 5);
    *len = total;
    return s;
}

Test(http1, head_size_limit)
{
    size_t len;
    struct run w, b;
    char *s = sized_head(16384, &len);

    run_whole(&w, 1, 0, &lim_default, s, len);
    run_bytes(&b, 1, 0, &lim_default, s, len);
    cr_expect_eq(w.st, PX_H1_DONE);
    cr_expect_eq(w.h.head_len, 16384);
    expect_same("16384", &w, &b);
    free(s), free(w.buf), free(b.buf);

    s = sized_head(16385, &len);
    run_whole(&w, 1, 0, &lim_default, s, len);
    run_bytes(&b, 1, 0, &lim_default, s, len);
    cr_expect_eq(w.st, PX_H1_ERROR);
    cr_expect_eq(w.h.error_status, 431);
    expect_same("16385", &w, &b);
    cr_expect_eq(b.err_at, 16385);
    free(s), free(w.buf), free(b.buf);

    /* An endless field line is cut at the limit. */
    s = sized_head(20000, &len);
    run_whole(&w, 1, 0, &lim_default, s, 17000);
    cr_expect_eq(w.st, PX_H1_ERROR);
    cr_expect_eq(w.h.error_status, 431);
    free(s), free(w.buf);
}

/* A request with n fields: Host and n - 1 others. */
static char *many_fields(unsigned n, size_t *len)
{
    char *s = malloc(64 + (size_t)n * 16);
    size_t o;

    cr_assert(s);
    o = (size_t)sprintf(s, GET11 H);
    for (unsigned i = 1; i < n; i++)
        o += (size_t)sprintf(s + o, "X-%u: v\r\n", i);
    o += (size_t)sprintf(s + o, "\r\n");
    *len = o;
    return s;
}

Test(http1, field_count_limit)
{
    size_t len;
    struct run w, b;
    char *s = many_fields(100, &len);
    struct px_h1_limits big = {1 << 20, 8192, 1000};

    run_whole(&w, 1, 0, &lim_default, s, len);
    run_bytes(&b, 1, 0, &lim_default, s, len);
    cr_expect_eq(w.st, PX_H1_DONE);
    cr_expect_eq(w.h.n_fields, 100);
    expect_same("100 fields", &w, &b);
    free(s), free(w.buf), free(b.buf);

    s = many_fields(101, &len);
    run_whole(&w, 1, 0, &lim_default, s, len);
    run_bytes(&b, 1, 0, &lim_default, s, len);
    cr_expect_eq(w.st, PX_H1_ERROR);
    cr_expect_eq(w.h.error_status, 431);
    expect_same("101 fields", &w, &b);
    free(s), free(w.buf), free(b.buf);

    /* max_fields above the array size is capped to it. */
    s = many_fields(PX_H1_MAX_FIELDS_CAP, &len);
    run_whole(&w, 1, 0, &big, s, len);
    cr_expect_eq(w.st, PX_H1_DONE);
    free(s), free(w.buf);
    s = many_fields(PX_H1_MAX_FIELDS_CAP + 1, &len);
    run_whole(&w, 1, 0, &big, s, len);
    cr_expect_eq(w.st, PX_H1_ERROR);
    cr_expect_eq(w.h.error_status, 431);
    free(s), free(w.buf);
}

/* ---- responses ---- */

struct rs {
    const char *name;
    const char *in; size_t len;
    int head_req;
    int status; /* 0: DONE, else the error_status */
    int code, minor;
    enum px_h1_body body;
    uint64_t cl;
    int ka;
    const char *reason;
};

#define RBAD(n, s) {n, S(s), 0, 502, 0, 0, PX_H1_BODY_NONE, 0, 0, NULL}

static const struct rs resps[] = {
    {"length", S("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"), 0, 0, 200, 1,
     PX_H1_BODY_LENGTH, 5, 1, "OK"},
    {"chunked", S("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n"), 0, 0, 200, 1,
     PX_H1_BODY_CHUNKED, 0, 1, "OK"},
    {"eof", S("HTTP/1.1 200 OK\r\nServer: x\r\n\r\n"), 0, 0, 200, 1, PX_H1_BODY_EOF, 0, 0, "OK"},
    {"eof 1.0", S("HTTP/1.0 200 OK\r\n\r\n"), 0, 0, 200, 0, PX_H1_BODY_EOF, 0, 0, "OK"},
    {"1.0 length", S("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"), 0, 0, 200, 0,
     PX_H1_BODY_LENGTH, 0, 0, "OK"},
    {"1.0 keep-alive", S("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n"),
     0, 0, 200, 0, PX_H1_BODY_LENGTH, 2, 1, "OK"},
    {"close", S("HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 2\r\n\r\n"), 0, 0,
     404, 1, PX_H1_BODY_LENGTH, 2, 0, "Not Found"},
    {"204", S("HTTP/1.1 204 No Content\r\n\r\n"), 0, 0, 204, 1, PX_H1_BODY_NONE, 0, 1,
     "No Content"},
    {"304 with length", S("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"), 0, 0, 304, 1,
     PX_H1_BODY_NONE, 10, 1, "Not Modified"},
    {"100 continue", S("HTTP/1.1 100 Continue\r\n\r\n"), 0, 0, 100, 1, PX_H1_BODY_NONE, 0, 1,
     "Continue"},
    {"head response", S("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"), 1, 0, 200, 1,
     PX_H1_BODY_NONE, 100, 1, "OK"},
    {"head response chunked", S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), 1, 0,
     200, 1, PX_H1_BODY_NONE, 0, 1, "OK"},
    {"head response eof", S("HTTP/1.1 200 OK\r\n\r\n"), 1, 0, 200, 1, PX_H1_BODY_NONE, 0, 1, "OK"},
    {"empty reason", S("HTTP/1.1 201 \r\nContent-Length: 0\r\n\r\n"), 0, 0, 201, 1,
     PX_H1_BODY_LENGTH, 0, 1, ""},
    {"reason with spaces", S("HTTP/1.1 599 Some thing\tx\r\nContent-Length: 0\r\n\r\n"), 0, 0, 599,
     1, PX_H1_BODY_LENGTH, 0, 1, "Some thing\tx"},
    {"no host needed", S("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nExpect: foo\r\n\r\n"), 0, 0, 200,
     1, PX_H1_BODY_LENGTH, 0, 1, "OK"},

    RBAD("no reason SP", "HTTP/1.1 200\r\n\r\n"),
    RBAD("two digit status", "HTTP/1.1 20 OK\r\n\r\n"),
    RBAD("status 600", "HTTP/1.1 600 X\r\n\r\n"),
    RBAD("status 099", "HTTP/1.1 099 X\r\n\r\n"),
    RBAD("status letters", "HTTP/1.1 2x0 X\r\n\r\n"),
    RBAD("HTTP/2", "HTTP/2 200 OK\r\n\r\n"),
    RBAD("HTTP/1.2", "HTTP/1.2 200 OK\r\n\r\n"),
    RBAD("lowercase", "http/1.1 200 OK\r\n\r\n"),
    RBAD("control in reason", "HTTP/1.1 200 O\x01K\r\n\r\n"),
    RBAD("bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n"),
    RBAD("bare CR", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\r\n"),
    RBAD("obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"),
    RBAD("space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n"),
    RBAD("cl plus", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n"),
    RBAD("cl list", "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"),
    RBAD("cl twice", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
    RBAD("cl and te", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
    RBAD("te gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
    RBAD("te gzip chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
    RBAD("te unknown", "HTTP/1.1 200 OK\r\nTransfer-Encoding: foo, chunked\r\n\r\n"),
    RBAD("te chunked twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
    RBAD("te on 1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
    RBAD("cl bad on 204", "HTTP/1.1 204 No Content\r\nContent-Length: x\r\n\r\n"),
};

Test(http1, response_table)
{
    for (size_t i = 0; i < sizeof resps / sizeof resps[0]; i++) {
        const struct rs *t = &resps[i];
        struct run w, b;
        const struct px_h1_head *h = &w.h;

        run_whole(&w, 0, t->head_req, &lim_default, t->in, t->len);
        run_bytes(&b, 0, t->head_req, &lim_default, t->in, t->len);
        expect_same(t->name, &w, &b);
        if (t->status) {
            cr_expect_eq(w.st, PX_H1_ERROR, "%s: got %d", t->name, w.st);
            cr_expect_eq(h->error_status, 502, "%s", t->name);
        } else {
            cr_expect_eq(w.st, PX_H1_DONE, "%s: got %d (%s)", t->name, w.st,
                         h->error ? h->error : "");
            if (w.st == PX_H1_DONE) {
                const char *eoh = memmem(t->in, t->len, "\r\n\r\n", 4);
                cr_expect_eq(h->head_len, (size_t)(eoh - t->in) + 4, "%s", t->name);
                cr_expect_eq(h->status, t->code, "%s", t->name);
                cr_expect_eq(h->minor, t->minor, "%s", t->name);
                cr_expect_eq(h->body, t->body, "%s: body %d", t->name, h->body);
                cr_expect_eq(h->content_length, t->cl, "%s", t->name);
                cr_expect_eq(h->keep_alive, t->ka, "%s: keep_alive", t->name);
                cr_expect(slice_is(h->reason, h->reason_len, t->reason), "%s: reason", t->name);
            }
        }
        free(w.buf);
        free(b.buf);
    }
}

Test(http1, status_line_limit_is_502)
{
    struct px_h1_limits lim = {16384, 64, 100};
    char s[200];
    struct run w;

    memset(s, 'x', sizeof s);
    memcpy(s, "HTTP/1.1 200 ", 13);
    run_whole(&w, 0, 0, &lim, s, sizeof s);
    cr_expect_eq(w.st, PX_H1_ERROR);
    cr_expect_eq(w.h.error_status, 502);
    free(w.buf);
}

/* A response head of exactly total bytes: 1000-byte X-Pad fields and one
 * shorter last field, so no single line comes near the line limit. */
static char *sized_response(size_t total, size_t *len)
{
    static const char pre[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n";
    char *s = malloc(total + 1);
    size_t o = sizeof pre - 1;

    cr_assert(s);
    memcpy(s, pre, o);
    while (total - o - 2 > 1000 + 12) {
        memcpy(s + o, "X-Pad: ", 7);
        memset(s + o + 7, 'p', 1000 - 9);
        memcpy(s + o + 998, "\r\n", 2);
        o += 1000;
    }
    memcpy(s + o, "X-End: ", 7);
    memset(s + o + 7, 'e', total - o - 2 - 7 - 2);
    o = total - 4;
    memcpy(s + o, "\r\n\r\n", 5);
    *len = total;
    return s;
}

/* Response heads have their own limit: 64 KiB by default, so a 40 KiB head
 * of an upstream passes while the same head as a request is 431. */
Test(http1, response_head_limit)
{
    struct px_h1_limits small = {16384, 8192, 100}, big = {65536, 8192, 100};
    size_t len;
    struct run w, b;
    char *s = sized_response(40 * 1024, &len);

    run_whole(&w, 0, 0, NULL, s, len);
    run_bytes(&b, 0, 0, NULL, s, len);
    cr_expect_eq(w.st, PX_H1_DONE, "40 KiB: %d (%s)", w.st, w.h.error ? w.h.error : "");
    cr_expect_eq(w.h.head_len, 40 * 1024);
    expect_same("40 KiB", &w, &b);
    free(w.buf), free(b.buf);
    /* The request limit applied to it would refuse it. */
    run_whole(&w, 0, 0, &small, s, len);
    cr_expect_eq(w.st, PX_H1_ERROR);
    cr_expect_eq(w.h.error_status, 502);
    free(w.buf), free(s);

    s = sized_response(65536, &len);
    run_whole(&w, 0, 0, NULL, s, len);
    cr_expect_eq(w.st, PX_H1_DONE, "64 KiB: %s", w.h.error ? w.h.error : "");
    free(w.buf);
    run_whole(&w, 0, 0, &big, s, len);
    cr_expect_eq(w.st, PX_H1_DONE);
    free(w.buf), free(s);

    s = sized_response(65537, &len);
    run_whole(&w, 0, 0, NULL, s, len);
    run_bytes(&b, 0, 0, NULL, s, len);
    cr_expect_eq(w.st, PX_H1_ERROR);
    cr_expect_eq(w.h.error_status, 502);
    expect_same("64 KiB + 1", &w, &b);
    cr_expect_eq(b.err_at, 65537);
    free(w.buf), free(b.buf), free(s);

    /* Requests keep 16 KiB by default. */
    s = sized_head(16385, &len);
    run_whole(&w, 1, 0, NULL, s, len);
    cr_expect_eq(w.st, PX_H1_ERROR);
    cr_expect_eq(w.h.error_status, 431);
    free(w.buf), free(s);
}

/* A leading empty line is a request-only leniency. */
Test(http1, response_leading_empty_line_is_502)
{
    static const char in[] = "\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    struct run w, b;

    run_whole(&w, 0, 0, NULL, in, sizeof in - 1);
    run_bytes(&b, 0, 0, NULL, in, sizeof in - 1);
    cr_expect_eq(w.st, PX_H1_ERROR);
    cr_expect_eq(w.h.error_status, 502);
    expect_same("leading CRLF", &w, &b);
    free(w.buf), free(b.buf);
}

/* ---- chunked bodies ---- */

struct ck {
    const char *name;
    const char *in; size_t len;
    enum px_h1_status st;
    const char *data; size_t data_len;
    size_t consumed; /* bytes of the body (the rest is left); 0: all */
    const char *trailer; /* the trailer section handed back; NULL: none */
    unsigned n_trailers;  /* fields px_h1_trailer_next() walks in it */
};

#define CK_OK(n, s, d, c) {n, S(s), PX_H1_DONE, S(d), c, NULL, 0}
#define CK_BAD(n, s) {n, S(s), PX_H1_ERROR, S(""), 0, NULL, 0}

static const struct ck cks[] = {
    CK_OK("one chunk", "5\r\nhello\r\n0\r\n\r\n", "hello", 0),
    CK_OK("empty body", "0\r\n\r\n", "", 0),
    CK_OK("multi", "5\r\nhello\r\n6\r\n world\r\n1\r\n!\r\n0\r\n\r\n", "hello world!", 0),
    CK_OK("hex sizes", "a\r\n0123456789\r\nB\r\n0123456789A\r\n0\r\n\r\n",
          "01234567890123456789A", 0),
    CK_OK("leading zeros", "0005\r\nhello\r\n000\r\n\r\n", "hello", 0),
    CK_OK("16 digits", "0000000000000005\r\nhello\r\n0\r\n\r\n", "hello", 0),
    CK_OK("extensions", "5;a=b\r\nhello\r\n0;last\r\n\r\n", "hello", 0),
    CK_OK("ext quoted", "5;a=\"x y\";b\r\nhello\r\n0\r\n\r\n", "hello", 0),
    CK_OK("ext BWS", "5 \t; a = b\r\nhello\r\n0\r\n\r\n", "hello", 0),
    {"trailers", S("5\r\nhello\r\n0\r\nX-Sum: 1\r\nY:\t2 \xff\r\n\r\n"), PX_H1_DONE, S("hello"), 0,
     "X-Sum: 1\r\nY:\t2 \xff\r\n", 2},
    {"one trailer", S("0\r\nx-checksum-crc32: AAAAAA==\r\n\r\n"), PX_H1_DONE, S(""), 0,
     "x-checksum-crc32: AAAAAA==\r\n", 1},
    {"trailer empty value", S("1\r\na\r\n0;e=1\r\nX:\r\n\r\n"), PX_H1_DONE, S("a"), 0, "X:\r\n",
     1},
    {"trailer then next message", S("0\r\nT: v\r\n\r\nGET / HTTP/1.1\r\n"), PX_H1_DONE, S(""), 11,
     "T: v\r\n", 1},
    {"framing trailer flagged", S("0\r\nContent-Length: 5\r\nTE: x\r\n\r\n"), PX_H1_DONE, S(""),
     0, "Content-Length: 5\r\nTE: x\r\n", 2},
    CK_OK("data with CRLF inside", "4\r\n\r\n\r\n\r\n0\r\n\r\n", "\r\n\r\n", 0),
    CK_OK("next message left", "0\r\n\r\nGET / HTTP/1.1\r\n", "", 5),
    CK_OK("binary data", "3\r\n\0\n\r\r\n0\r\n\r\n", "\0\n\r", 0),
    {"incomplete data", S("5\r\nhel"), PX_H1_NEED_MORE, S("hel"), 0, NULL, 0},
    {"incomplete trailer", S("0\r\nX: 1\r\n"), PX_H1_NEED_MORE, S(""), 0, "X: 1\r\n", 0},
    {"huge size waits", S("FFFFFFFFFFFFFFFF\r\nab"), PX_H1_NEED_MORE, S("ab"), 0, NULL, 0},

    CK_BAD("plus", "+5\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("minus", "-5\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("0x", "0x5\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("leading space", " 5\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("leading tab", "\t5\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("trailing space", "5 \r\nhello\r\n0\r\n\r\n"),
    CK_BAD("junk", "5x\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("junk after space", "5 x\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("empty size", "\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("17 digits", "00000000000000005\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("overflow", "10000000000000000\r\n"),
    CK_BAD("bare LF size", "5\nhello\r\n0\r\n\r\n"),
    CK_BAD("bare CR size", "5\rhello\r\n0\r\n\r\n"),
    CK_BAD("bare LF ext", "5;a\nhello\r\n0\r\n\r\n"),
    CK_BAD("ext control", "5;a\x01\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("ext NUL", "5;a=\0\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("ext DEL", "5;a=\x7f\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("no CRLF after data", "5\r\nhelloX\r\n0\r\n\r\n"),
    CK_BAD("bare LF after data", "5\r\nhello\n0\r\n\r\n"),
    CK_BAD("bare CR after data", "5\r\nhello\r0\r\n\r\n"),
    CK_BAD("data too long", "5\r\nhello!\r\n0\r\n\r\n"),
    CK_BAD("last chunk bare LF", "0\n\r\n"),
    CK_BAD("final bare LF", "0\r\n\n"),
    CK_BAD("final bare CR", "0\r\n\rX"),
    CK_BAD("trailer obs-fold", "0\r\nX: a\r\n b\r\n\r\n"),
    CK_BAD("trailer no colon", "0\r\nX\r\n\r\n"),
    CK_BAD("trailer empty name", "0\r\n: a\r\n\r\n"),
    CK_BAD("trailer space before colon", "0\r\nX : a\r\n\r\n"),
    CK_BAD("trailer control", "0\r\nX: a\x01\r\n\r\n"),
    CK_BAD("trailer bare LF", "0\r\nX: a\n\r\n"),
    CK_BAD("trailer bare CR", "0\r\nX: a\rb\r\n\r\n"),
};

struct ck_out {
    enum px_h1_status st;
    char data[64];
    size_t data_len;
    char trailer[128];
    size_t trailer_len;
    size_t consumed;
    int calls;
};

/* Feeds in[0..avail) starting at *pos until it is used up or the decoder
 * stops; checks every returned run lies within the consumed bytes. With
 * use_feed, through px_h1_chunked_feed() (no trailers), else through
 * px_h1_chunked_step(). */
static void ck_step(struct px_h1_chunked *c, const char *in, size_t avail, int use_feed,
                    struct ck_out *o)
{
    while (o->st == PX_H1_NEED_MORE && o->consumed < avail) {
        size_t used = 99, off = 99, dl = 99;
        if (use_feed) {
            o->st = px_h1_chunked_feed(c, in + o->consumed, avail - o->consumed, &used, &off, &dl);
        } else {
            struct px_h1_chunk_run run;
            memset(&run, 0x5a, sizeof run);
            o->st = px_h1_chunked_step(c, in + o->consumed, avail - o->consumed, &run);
            used = run.consumed, off = run.data_off, dl = run.data_len;
            if (run.trailer_len) {
                cr_assert_eq(dl, 0, "data and trailer bytes in one call");
                cr_assert(o->st != PX_H1_ERROR);
                cr_assert(run.trailer_off + run.trailer_len <= used);
                cr_assert(o->trailer_len + run.trailer_len <= sizeof o->trailer);
                memcpy(o->trailer + o->trailer_len, in + o->consumed + run.trailer_off,
                       run.trailer_len);
                o->trailer_len += run.trailer_len;
            }
        }
        o->calls++;
        cr_assert(used <= avail - o->consumed);
        if (dl) {
            cr_assert_eq(o->st, PX_H1_NEED_MORE, "data only with NEED_MORE");
            cr_assert(off + dl <= used);
            cr_assert(o->data_len + dl <= sizeof o->data);
            memcpy(o->data + o->data_len, in + o->consumed + off, dl);
            o->data_len += dl;
        }
        if (o->st == PX_H1_ERROR)
            cr_assert(c->error != NULL);
        else if (o->st == PX_H1_NEED_MORE)
            cr_assert(used > 0 || o->consumed == avail, "no progress");
        o->consumed += used;
        cr_assert(o->calls < 100000);
    }
}

static void ck_run(const struct ck *t, int bytewise, int use_feed, struct ck_out *o)
{
    struct px_h1_chunked c;
    char *buf = malloc(t->len + 1);

    cr_assert(buf);
    memcpy(buf, t->in, t->len);
    memset(o, 0, sizeof *o);
    o->st = PX_H1_NEED_MORE;
    px_h1_chunked_init(&c);
    if (!bytewise) {
        ck_step(&c, buf, t->len, use_feed, o);
    } else {
        for (size_t k = 1; k <= t->len && o->st == PX_H1_NEED_MORE; k++)
            ck_step(&c, buf, k, use_feed, o);
    }
    free(buf);
}

Test(http1, chunked_table)
{
    for (size_t i = 0; i < sizeof cks / sizeof cks[0]; i++) {
        const struct ck *t = &cks[i];
        struct ck_out w, b, f;
        const char *tr = t->trailer ? t->trailer : "";
        size_t want, tl = strlen(tr);

        ck_run(t, 0, 0, &w);
        ck_run(t, 1, 0, &b);
        ck_run(t, 1, 1, &f);
        cr_expect_eq(w.st, t->st, "%s: whole %d, want %d", t->name, w.st, t->st);
        cr_expect_eq(b.st, t->st, "%s: bytewise %d, want %d", t->name, b.st, t->st);
        cr_expect_eq(f.st, t->st, "%s: feed %d, want %d", t->name, f.st, t->st);
        if (t->st == PX_H1_ERROR)
            continue;
        cr_expect_eq(f.consumed, b.consumed, "%s", t->name);
        cr_expect_eq(f.data_len, b.data_len, "%s", t->name);
        cr_expect_eq(f.trailer_len, 0, "%s", t->name);
        cr_expect(w.trailer_len == tl && memcmp(w.trailer, tr, tl) == 0,
                  "%s: trailer '%.*s'", t->name, (int)w.trailer_len, w.trailer);
        cr_expect(b.trailer_len == tl && memcmp(b.trailer, tr, tl) == 0,
                  "%s: bytewise trailer '%.*s'", t->name, (int)b.trailer_len, b.trailer);
        if (t->st == PX_H1_DONE) {
            struct px_h1_field fld;
            size_t pos = 0;
            unsigned n = 0;
            int r;
            while ((r = px_h1_trailer_next(w.trailer, w.trailer_len, &pos, &fld)) == 1) {
                cr_expect(fld.name_len > 0 && fld.name + fld.name_len < w.trailer + w.trailer_len);
                if (px_h1_name_is(&fld, "content-length"))
                    cr_expect_eq(fld.flags, PX_H1_F_FRAMING, "%s", t->name);
                if (px_h1_name_is(&fld, "te"))
                    cr_expect_eq(fld.flags, PX_H1_F_HOP, "%s", t->name);
                n++;
            }
            cr_expect_eq(r, 0, "%s", t->name);
            cr_expect_eq(n, t->n_trailers, "%s: %u trailer fields", t->name, n);
        }
        want = t->consumed ? t->consumed : t->len;
        cr_expect_eq(w.consumed, want, "%s: consumed %zu", t->name, w.consumed);
        cr_expect_eq(b.consumed, want, "%s: consumed %zu", t->name, b.consumed);
        cr_expect_eq(w.data_len, t->data_len, "%s", t->name);
        cr_expect_eq(b.data_len, t->data_len, "%s", t->name);
        cr_expect(w.data_len == t->data_len && memcmp(w.data, t->data, t->data_len) == 0, "%s",
                  t->name);
        cr_expect(b.data_len == t->data_len && memcmp(b.data, t->data, t->data_len) == 0, "%s",
                  t->name);
    }
}

Test(http1, chunked_limits)
{
    struct ck t = {"ext", NULL, 0, PX_H1_DONE, S("hello"), 0, NULL, 0};
    struct ck_out o;
    char *s = malloc(40000);
    size_t n;

    cr_assert(s);
    /* An extension of exactly 4096 bytes (';' included) passes. */
    n = (size_t)sprintf(s, "5;");
    memset(s + n, 'e', 4095);
    n += 4095;
    n += (size_t)sprintf(s + n, "\r\nhello\r\n0\r\n\r\n");
    t.in = s, t.len = n, t.consumed = n;
    ck_run(&t, 0, 0, &o);
    cr_expect_eq(o.st, PX_H1_DONE);
    ck_run(&t, 1, 0, &o);
    cr_expect_eq(o.st, PX_H1_DONE);
    /* One more byte does not. */
    n = (size_t)sprintf(s, "5;");
    memset(s + n, 'e', 4096);
    n += 4096;
    n += (size_t)sprintf(s + n, "\r\nhello\r\n0\r\n\r\n");
    t.len = n;
    ck_run(&t, 0, 0, &o);
    cr_expect_eq(o.st, PX_H1_ERROR);
    ck_run(&t, 1, 0, &o);
    cr_expect_eq(o.st, PX_H1_ERROR);

    /* A trailer section over 16 KiB. */
    n = (size_t)sprintf(s, "0\r\n");
    for (int i = 0; i < 2000; i++)
        n += (size_t)sprintf(s + n, "X-%04d: v\r\n", i);
    n += (size_t)sprintf(s + n, "\r\n");
    t.len = n;
    ck_run(&t, 0, 1, &o);
    cr_expect_eq(o.st, PX_H1_ERROR);
    free(s);
}

Test(http1, chunked_large_body)
{
    /* A chunk bigger than any buffer comes back in runs, in order. */
    static char buf[3 * 1000 + 64];
    struct px_h1_chunked c;
    size_t n = (size_t)sprintf(buf, "BB8\r\n"), pos = 0, got = 0;
    enum px_h1_status st = PX_H1_NEED_MORE;

    for (int i = 0; i < 3000; i++)
        buf[n + (size_t)i] = (char)('a' + i % 26);
    n += 3000;
    n += (size_t)sprintf(buf + n, "\r\n0\r\n\r\n");
    px_h1_chunked_init(&c);
    /* Feed in windows of 700 bytes, as reads would deliver them. */
    for (int calls = 0; st == PX_H1_NEED_MORE && pos < n && calls < 1000; calls++) {
        size_t win = n - pos < 700 ? n - pos : 700, used, off, dl;
        st = px_h1_chunked_feed(&c, buf + pos, win, &used, &off, &dl);
        for (size_t k = 0; k < dl; k++, got++)
            cr_assert_eq(buf[pos + off + k], (char)('a' + got % 26));
        pos += used;
    }
    cr_expect_eq(st, PX_H1_DONE);
    cr_expect_eq(got, 3000);
    cr_expect_eq(pos, n);
    /* DONE is sticky and consumes nothing more. */
    {
        size_t used, off, dl;
        cr_expect_eq(px_h1_chunked_feed(&c, "0\r\n", 3, &used, &off, &dl), PX_H1_DONE);
        cr_expect_eq(used, 0);
    }
}

Test(http1, reasons)
{
    static const struct { int code; const char *r; } t[] = {
        {100, "Continue"}, {200, "OK"}, {201, "Created"}, {204, "No Content"},
        {206, "Partial Content"}, {301, "Moved Permanently"}, {302, "Found"},
        {304, "Not Modified"}, {400, "Bad Request"}, {401, "Unauthorized"}, {403, "Forbidden"},
        {404, "Not Found"}, {405, "Method Not Allowed"}, {408, "Request Timeout"},
        {409, "Conflict"}, {411, "Length Required"}, {412, "Precondition Failed"},
        {413, "Content Too Large"}, {414, "URI Too Long"}, {415, "Unsupported Media Type"},
        {417, "Expectation Failed"}, {428, "Precondition Required"},
        {429, "Too Many Requests"}, {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"}, {501, "Not Implemented"}, {502, "Bad Gateway"},
        {503, "Service Unavailable"}, {504, "Gateway Timeout"},
        {505, "HTTP Version Not Supported"}, {299, "Unknown"}, {0, "Unknown"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        cr_expect_str_eq(px_h1_reason(t[i].code), t[i].r, "%d", t[i].code);
}

Test(http1, name_is)
{
    struct px_h1_field f = {"Content-Length", 14, "5", 1, 0};
    cr_expect(px_h1_name_is(&f, "content-length"));
    cr_expect(px_h1_name_is(&f, "CONTENT-LENGTH"));
    cr_expect(!px_h1_name_is(&f, "content-lengt"));
    cr_expect(!px_h1_name_is(&f, "content-length2"));
}

Test(http1, results_are_sticky)
{
    static const char ok[] = GET11 H "\r\nGET /next HTTP/1.1\r\nHost: b\r\n\r\n";
    static const char bad[] = GET11 "Host : a\r\n\r\n";
    struct px_h1_parser p;
    struct px_h1_head h, h2;

    px_h1_parser_init(&p, 1, 0, NULL);
    cr_assert_eq(px_h1_parse_head(&p, ok, 27, &h), PX_H1_DONE);
    cr_expect_eq(h.head_len, 27);
    /* More bytes (the next request) do not move the answer. */
    cr_assert_eq(px_h1_parse_head(&p, ok, sizeof ok - 1, &h2), PX_H1_DONE);
    cr_expect_eq(h2.head_len, 27);
    cr_expect(slice_is(h2.target, h2.target_len, "/"));
    cr_expect(slice_is(h2.host, h2.host_len, "a"));

    px_h1_parser_init(&p, 1, 0, NULL);
    cr_assert_eq(px_h1_parse_head(&p, bad, sizeof bad - 1, &h), PX_H1_ERROR);
    memset(&h2, 0, sizeof h2);
    cr_assert_eq(px_h1_parse_head(&p, bad, sizeof bad - 1, &h2), PX_H1_ERROR);
    cr_expect_eq(h2.error_status, 400);
    cr_expect_str_eq(h2.error, h.error);
}

Test(http1, interim_response_ends_at_its_head)
{
    static const char in[] = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    struct px_h1_parser p;
    struct px_h1_head h;

    px_h1_parser_init(&p, 0, 0, NULL);
    cr_assert_eq(px_h1_parse_head(&p, in, sizeof in - 1, &h), PX_H1_DONE);
    cr_expect_eq(h.status, 100);
    cr_expect_eq(h.head_len, 25);
    cr_expect_eq(h.body, PX_H1_BODY_NONE);
    px_h1_parser_init(&p, 0, 0, NULL);
    cr_assert_eq(px_h1_parse_head(&p, in + 25, sizeof in - 1 - 25, &h), PX_H1_DONE);
    cr_expect_eq(h.status, 200);
    cr_expect_eq(h.body, PX_H1_BODY_LENGTH);
    cr_expect_eq(h.content_length, 2);
}

/* Every byte value at every offset of a value long enough to fill three
 * words of the word-at-a-time check (and a tail): accepted exactly when it
 * is HTAB, SP or a visible byte or obs-text, whole and byte by byte. */
Test(http1, value_bytes_every_offset)
{
    for (unsigned b = 0; b < 256; b++) {
        for (size_t k = 0; k < 27; k++) {
            char in[128], val[28];
            struct run w, y;
            int n, ok = b == '\t' || (b >= 0x20 && b != 0x7f);

            memset(val, 'v', 27);
            val[27] = '\0';
            n = snprintf(in, sizeof in, "GET / HTTP/1.1\r\nHost: a\r\nX-V: %s\r\n\r\n", val);
            cr_assert(n > 0 && (size_t)n < sizeof in);
            in[(size_t)n - 4 - 27 + k] = (char)b; /* NUL too: n is the length */
            run_whole(&w, 1, 0, &lim_default, in, (size_t)n);
            run_bytes(&y, 1, 0, &lim_default, in, (size_t)n);
            cr_expect_eq(w.st, ok ? PX_H1_DONE : PX_H1_ERROR, "byte 0x%02x at %zu: %d", b, k, w.st);
            expect_same("value byte", &w, &y);
            free(w.buf);
            free(y.buf);
        }
    }
}

/* A DONE writes the fixed part and fields[0..n_fields) only: the slots past
 * n_fields keep whatever the caller had there. */
Test(http1, unused_field_slots_untouched)
{
    static const char in[] = "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\n";
    struct px_h1_parser p;
    struct px_h1_head *h = malloc(sizeof *h);
    const unsigned char *u;

    cr_assert(h);
    memset(h, 0xab, sizeof *h);
    px_h1_parser_init(&p, 1, 0, NULL);
    cr_assert_eq(px_h1_parse_head(&p, in, sizeof in - 1, h), PX_H1_DONE);
    cr_assert_eq(h->n_fields, 2);
    cr_expect(slice_is(h->fields[1].name, h->fields[1].name_len, "X-A"));
    cr_expect_eq(h->fields[1].flags, 0);
    cr_expect_eq(PX_H1_HEAD_USED(h), (size_t)((const char *)&h->fields[2] - (const char *)h));
    u = (const unsigned char *)&h->fields[2];
    for (size_t i = 0; i < sizeof *h - PX_H1_HEAD_USED(h); i++)
        cr_expect_eq(u[i], 0xab, "byte %zu past the used fields", i);
    free(h);
}

/* Decisions: every verdict from a table of request facts, the exact
 * rejection responses (status, reason, highest header, body bytes), and JSON
 * string escaping of hostile resource names. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pol_decide.h"
#include "pol_route.h"

static struct pol_routes *table(void)
{
    static const struct { const char *prefix, *mode, *methods; int allow; } rs[] = {
        {"/objects", "segments:2", NULL, 0},
        {"/open", "path", NULL, 1},
        {"/puts", "prefix", "PUT", 0},
    };
    struct pol_routes *rt = pol_routes_new();
    cr_assert_not_null(rt);
    for (size_t i = 0; i < sizeof rs / sizeof rs[0]; i++) {
        struct pol_route r;
        char err[128];
        pol_route_defaults(&r);
        r.prefix = (char *)rs[i].prefix;
        cr_assert_eq(pol_route_parse_mode(&r, rs[i].mode), 0);
        if (rs[i].methods)
            cr_assert_eq(pol_route_parse_methods(&r, rs[i].methods), 0);
        r.missing_allow = rs[i].allow;
        cr_assert_eq(pol_routes_add(rt, &r, err, sizeof err), 0, "%s", err);
    }
    return rt;
}

struct ccase {
    const char *method, *path;
    unsigned fields;
    const char *token;
    enum pol_verdict verdict;
    const char *resource;  /* NULL for PASS */
    uint64_t tok;
};

static const struct ccase ccases[] = {
    {"PUT", "/elsewhere/x", 1, "junk", POL_PASS, NULL, 0},      /* token not parsed */
    {"PUT", "/elsewhere/x", 2, "5", POL_PASS, NULL, 0},
    {"PUT", "/elsewhere/x", 0, NULL, POL_PASS, NULL, 0},
    {"PUT", "/objects/u1/a", 1, "5", POL_CHECK, "/objects/u1", 5},
    {"GET", "/objects/u1/a", 1, "5", POL_CHECK, "/objects/u1", 5},   /* any method */
    {"HEAD", "/objects/u1/a", 1, " 0 ", POL_CHECK, "/objects/u1", 0},
    {"GET", "/objects/u1/a", 0, NULL, POL_UNFENCED, "/objects/u1", 0},
    {"PUT", "/objects/u1/a", 0, NULL, POL_MISSING, "/objects/u1", 0},
    {"POST", "/objects/u1/a", 0, NULL, POL_MISSING, "/objects/u1", 0},
    {"PATCH", "/objects/u1/a", 0, NULL, POL_MISSING, "/objects/u1", 0},
    {"DELETE", "/objects/u1/a", 0, NULL, POL_MISSING, "/objects/u1", 0},
    {"put", "/objects/u1/a", 0, NULL, POL_UNFENCED, "/objects/u1", 0},
    {"PUT", "/objects/u1/a", 1, "5, 6", POL_MALFORMED, "/objects/u1", 0},
    {"PUT", "/objects/u1/a", 1, "", POL_MALFORMED, "/objects/u1", 0},
    {"PUT", "/objects/u1/a", 1, "-1", POL_MALFORMED, "/objects/u1", 0},
    {"GET", "/objects/u1/a", 1, "01", POL_MALFORMED, "/objects/u1", 0},
    {"PUT", "/objects/u1/a", 2, "5", POL_MALFORMED, "/objects/u1", 0},
    {"GET", "/objects/u1/a", 3, "5", POL_MALFORMED, "/objects/u1", 0},
    {"PUT", "/open/f", 0, NULL, POL_UNFENCED, "/open/f", 0},     /* missing_token = allow */
    {"PUT", "/open/f", 1, "9", POL_CHECK, "/open/f", 9},
    {"PUT", "/open/f", 1, "x", POL_MALFORMED, "/open/f", 0},
    {"PUT", "/puts/a", 0, NULL, POL_MISSING, "/puts", 0},
    {"DELETE", "/puts/a", 0, NULL, POL_UNFENCED, "/puts", 0},    /* not in this route's list */
    {"DELETE", "/puts/a", 1, "18446744073709551615", POL_CHECK, "/puts", UINT64_MAX},
};

Test(decide, classify_table)
{
    struct pol_routes *rt = table();
    for (size_t i = 0; i < sizeof ccases / sizeof ccases[0]; i++) {
        const struct ccase *c = &ccases[i];
        struct pol_facts f = {
            .method = c->method, .method_len = strlen(c->method),
            .path = c->path, .path_len = strlen(c->path),
            .token_fields = c->fields,
            .token = c->token, .token_len = c->token ? strlen(c->token) : 0,
        };
        struct pol_decision d;
        memset(&d, 0x77, sizeof d);
        pol_decide_classify(rt, &f, &d);
        cr_expect_eq(d.verdict, c->verdict, "case %zu: verdict %d, want %d", i, d.verdict,
                     c->verdict);
        if (c->resource == NULL) {
            cr_expect_null(d.route, "case %zu", i);
            cr_expect_null(d.resource, "case %zu", i);
            continue;
        }
        cr_expect_not_null(d.route, "case %zu", i);
        cr_expect(d.resource_len == strlen(c->resource) &&
                      memcmp(d.resource, c->resource, d.resource_len) == 0,
                  "case %zu: resource '%.*s'", i, (int)d.resource_len, d.resource);
        if (c->verdict == POL_CHECK)
            cr_expect_eq(d.token, c->tok, "case %zu", i);
    }
    pol_routes_free(rt);
}

struct kcase { uint64_t token, highest; enum pol_verdict verdict; };

static const struct kcase kcases[] = {
    {5, 0, POL_ADVANCE},  {5, 4, POL_ADVANCE},  {5, 5, POL_ACCEPT},  {5, 6, POL_STALE},
    {0, 0, POL_ACCEPT},   {0, 1, POL_STALE},    {UINT64_MAX, UINT64_MAX, POL_ACCEPT},
    {UINT64_MAX - 1, UINT64_MAX, POL_STALE},    {UINT64_MAX, 0, POL_ADVANCE},
};

Test(decide, check_table)
{
    for (size_t i = 0; i < sizeof kcases / sizeof kcases[0]; i++) {
        struct pol_decision d = {.verdict = POL_CHECK, .token = kcases[i].token};
        pol_decide_check(&d, kcases[i].highest);
        cr_expect_eq(d.verdict, kcases[i].verdict, "case %zu", i);
        cr_expect_eq(d.highest, kcases[i].highest, "case %zu", i);
        cr_expect_eq(d.token, kcases[i].token, "case %zu", i);
    }
}

struct rcase {
    enum pol_verdict verdict;
    const char *resource;
    uint64_t token, highest;
    int status;
    const char *reason;
    int has_highest;
    const char *body;
};

static const struct rcase rcases[] = {
    {POL_STALE, "/objects/u1", 5, 6, 409, "Conflict", 1,
     "{\"error\":\"stale_token\",\"resource\":\"/objects/u1\",\"token\":5,\"highest\":6}"},
    {POL_STALE, "/r", 0, UINT64_MAX, 409, "Conflict", 1,
     "{\"error\":\"stale_token\",\"resource\":\"/r\",\"token\":0,"
     "\"highest\":18446744073709551615}"},
    {POL_MISSING, "/objects/u1", 0, 0, 428, "Precondition Required", 0,
     "{\"error\":\"missing_token\",\"resource\":\"/objects/u1\"}"},
    {POL_MALFORMED, "/objects/u1", 0, 0, 400, "Bad Request", 0,
     "{\"error\":\"malformed_token\",\"resource\":\"/objects/u1\"}"},
    {POL_MALFORMED, "/a\"b\\c", 0, 0, 400, "Bad Request", 0,
     "{\"error\":\"malformed_token\",\"resource\":\"/a\\\"b\\\\c\"}"},
};

Test(decide, responses)
{
    for (size_t i = 0; i < sizeof rcases / sizeof rcases[0]; i++) {
        const struct rcase *c = &rcases[i];
        struct pol_decision d = {
            .verdict = c->verdict, .resource = c->resource,
            .resource_len = strlen(c->resource), .token = c->token, .highest = c->highest,
        };
        struct pol_response r;
        cr_assert_eq(pol_decide_response(&d, &r), 0, "case %zu", i);
        cr_expect_eq(r.status, c->status, "case %zu", i);
        cr_expect_str_eq(r.reason, c->reason, "case %zu", i);
        cr_expect_eq(r.has_highest, c->has_highest, "case %zu", i);
        if (c->has_highest)
            cr_expect_eq(r.highest, c->highest, "case %zu", i);
        cr_expect_eq(r.body_len, strlen(c->body), "case %zu: %s", i, r.body);
        cr_expect_str_eq(r.body, c->body, "case %zu", i);
        pol_response_clear(&r);
        cr_expect_null(r.body);
        cr_expect_eq(r.status, 0);
    }
}

Test(decide, response_refuses_non_rejections)
{
    enum pol_verdict vs[] = {POL_PASS, POL_UNFENCED, POL_CHECK, POL_ACCEPT, POL_ADVANCE};
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) {
        struct pol_decision d = {.verdict = vs[i], .resource = "/x", .resource_len = 2};
        struct pol_response r;
        cr_expect_eq(pol_decide_response(&d, &r), -1, "verdict %d", vs[i]);
        cr_expect_null(r.body);
    }
    struct pol_response z;
    memset(&z, 0, sizeof z);
    pol_response_clear(&z);
    pol_response_clear(NULL);
}

/* The whole pipeline from facts to bytes, for each rejection. */
Test(decide, end_to_end_stale)
{
    struct pol_routes *rt = table();
    struct pol_facts f = {.method = "PUT", .method_len = 3, .path = "/objects/user42/a.txt",
                          .path_len = 21, .token_fields = 1, .token = "7", .token_len = 1};
    struct pol_decision d;
    struct pol_response r;
    pol_decide_classify(rt, &f, &d);
    cr_assert_eq(d.verdict, POL_CHECK);
    pol_decide_check(&d, 9);
    cr_assert_eq(d.verdict, POL_STALE);
    cr_assert_eq(pol_decide_response(&d, &r), 0);
    cr_expect_eq(r.status, 409);
    cr_expect_str_eq(r.body, "{\"error\":\"stale_token\",\"resource\":\"/objects/user42\","
                             "\"token\":7,\"highest\":9}");
    pol_response_clear(&r);
    pol_routes_free(rt);
}

struct jcase { const char *in; size_t len; const char *out; };

#define L(s) s, sizeof(s) - 1

static const struct jcase jcases[] = {
    {L(""), ""},
    {L("plain /path-_.~"), "plain /path-_.~"},
    {L("\""), "\\\""},
    {L("\\"), "\\\\"},
    {L("\n\r\t\b\f"), "\\n\\r\\t\\b\\f"},
    {L("\x01\x1f"), "\\u0001\\u001f"},
    {L("\0"), "\\u0000"},
    {L("a\0b"), "a\\u0000b"},
    {L("\x7f"), "\\u007f"},
    {L("/"), "/"},
    {L("\xc3\xa9"), "\xc3\xa9"},                         /* U+00E9 */
    {L("\xe2\x82\xac"), "\xe2\x82\xac"},                 /* U+20AC */
    {L("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80"},         /* U+1F600 */
    {L("\xf4\x8f\xbf\xbf"), "\xf4\x8f\xbf\xbf"},         /* U+10FFFF */
    {L("\xed\x9f\xbf"), "\xed\x9f\xbf"},                 /* U+D7FF */
    {L("\xee\x80\x80"), "\xee\x80\x80"},                 /* U+E000 */
    {L("\xc3"), "\\u00c3"},                              /* truncated */
    {L("\xc3" "a"), "\\u00c3a"},
    {L("\xe2\x82"), "\\u00e2\\u0082"},
    {L("\x80"), "\\u0080"},                              /* lone continuation */
    {L("\xbf\x80"), "\\u00bf\\u0080"},
    {L("\xc0\xaf"), "\\u00c0\\u00af"},                   /* overlong '/' */
    {L("\xc1\xbf"), "\\u00c1\\u00bf"},
    {L("\xe0\x80\xaf"), "\\u00e0\\u0080\\u00af"},        /* overlong 3-byte */
    {L("\xf0\x80\x80\xaf"), "\\u00f0\\u0080\\u0080\\u00af"},
    {L("\xed\xa0\x80"), "\\u00ed\\u00a0\\u0080"},        /* surrogate D800 */
    {L("\xed\xbf\xbf"), "\\u00ed\\u00bf\\u00bf"},        /* surrogate DFFF */
    {L("\xf4\x90\x80\x80"), "\\u00f4\\u0090\\u0080\\u0080"}, /* U+110000 */
    {L("\xf5\x80\x80\x80"), "\\u00f5\\u0080\\u0080\\u0080"},
    {L("\xff\xfe"), "\\u00ff\\u00fe"},
    {L("\xc3\xa9\xc3"), "\xc3\xa9\\u00c3"},
    {L("\"},\"x\":\"\n"), "\\\"},\\\"x\\\":\\\"\\n"},      /* injection attempt */
    {L("</script>\xe2\x80\xa8"), "</script>\xe2\x80\xa8"}, /* U+2028 is valid JSON */
};

Test(json, escape_table)
{
    for (size_t i = 0; i < sizeof jcases / sizeof jcases[0]; i++) {
        const struct jcase *c = &jcases[i];
        char *buf = NULL;
        size_t blen = 0, bcap = 0;
        cr_assert_eq(pol_json_append_escaped(&buf, &blen, &bcap, c->in, c->len), 0);
        cr_assert_not_null(buf, "case %zu", i);
        cr_expect_eq(blen, strlen(c->out), "case %zu: '%s'", i, buf);
        cr_expect_str_eq(buf, c->out, "case %zu", i);
        free(buf);
    }
}

/* Appending keeps what is there, and long inputs grow the buffer. */
Test(json, appends_and_grows)
{
    char *buf = NULL;
    size_t blen = 0, bcap = 0;
    cr_assert_eq(pol_json_append_escaped(&buf, &blen, &bcap, "ab", 2), 0);
    cr_assert_eq(pol_json_append_escaped(&buf, &blen, &bcap, "\"", 1), 0);
    cr_expect_str_eq(buf, "ab\\\"");
    char big[5000];
    memset(big, 1, sizeof big);
    cr_assert_eq(pol_json_append_escaped(&buf, &blen, &bcap, big, sizeof big), 0);
    cr_expect_eq(blen, 4 + 6 * sizeof big);
    cr_expect_lt(blen, bcap);
    cr_expect_eq(buf[blen], '\0');
    free(buf);
}

/* Every byte string of length 1 and 2 escapes to output with no raw control
 * byte, no raw quote and no lone backslash. */
Test(json, all_short_inputs_are_safe)
{
    for (unsigned a = 0; a < 256; a++) {
        for (unsigned b = 0; b < 257; b++) {
            char in[2] = {(char)a, (char)b};
            size_t n = b == 256 ? 1 : 2;
            char *buf = NULL;
            size_t blen = 0, bcap = 0;
            cr_assert_eq(pol_json_append_escaped(&buf, &blen, &bcap, in, n), 0);
            for (size_t i = 0; i < blen; i++) {
                unsigned char c = (unsigned char)buf[i];
                cr_assert(c >= 0x20 && c != 0x7f, "%02x %02x: raw control", a, b);
                cr_assert(c != '"', "%02x %02x: raw quote", a, b);
                if (c == '\\') {
                    cr_assert(i + 1 < blen && strchr("\"\\nrtbfu", buf[i + 1]) != NULL,
                              "%02x %02x: bad escape", a, b);
                    i++;
                }
            }
            free(buf);
        }
    }
}

/* Rejection bodies per route: error_format = json keeps the bytes of earlier
 * releases; s3 gives the XML <Error> that S3 SDKs parse, with the same status
 * codes. Exact bytes from a table, hostile resources and request ids escaped,
 * and every body parsed by a real XML parser (Debian's python3 xml.etree):
 * a missing python3 fails the test. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pol_decide.h"
#include "pol_route.h"

#define XHEAD "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>"

static struct pol_route route_with(enum pol_error_format fmt)
{
    struct pol_route r;
    pol_route_defaults(&r);
    r.prefix = "/o/";
    r.error_format = fmt;
    return r;
}

struct ecase {
    enum pol_error_format fmt;
    enum pol_verdict verdict;
    const char *resource;
    uint64_t token, highest;
    const char *rid;
    int status;
    const char *ctype;
    const char *body;
};

#define J POL_ERRFMT_JSON
#define X POL_ERRFMT_S3
#define AJ "application/json"
#define AX "application/xml"

static const struct ecase ecases[] = {
    {J, POL_STALE, "/o/u42", 4, 5, "rid1", 409, AJ,
     "{\"error\":\"stale_token\",\"resource\":\"/o/u42\",\"token\":4,\"highest\":5}"},
    {J, POL_MISSING, "/o/u42", 0, 0, "rid1", 428, AJ,
     "{\"error\":\"missing_token\",\"resource\":\"/o/u42\"}"},
    {J, POL_MALFORMED, "/o/u42", 0, 0, NULL, 400, AJ,
     "{\"error\":\"malformed_token\",\"resource\":\"/o/u42\"}"},
    {J, POL_BAD_TARGET, "/o/", 0, 0, NULL, 400, AJ,
     "{\"error\":\"ambiguous_path\",\"resource\":\"/o/\"}"},
    {X, POL_STALE, "/o/u42", 4, 5, "0123456789abcdef", 409, AX,
     XHEAD "<Code>StaleFencingToken</Code><Message>The fencing token is lower than the highest "
           "token already admitted for this resource</Message><Resource>/o/u42</Resource>"
           "<FencingToken>4</FencingToken><HighestToken>5</HighestToken>"
           "<RequestId>0123456789abcdef</RequestId></Error>"},
    {X, POL_STALE, "/o/u42", 0, UINT64_MAX, NULL, 409, AX,
     XHEAD "<Code>StaleFencingToken</Code><Message>The fencing token is lower than the highest "
           "token already admitted for this resource</Message><Resource>/o/u42</Resource>"
           "<FencingToken>0</FencingToken><HighestToken>18446744073709551615</HighestToken>"
           "</Error>"},
    {X, POL_MISSING, "/o/u42", 0, 0, "r", 428, AX,
     XHEAD "<Code>MissingFencingToken</Code><Message>This request must carry a fencing token"
           "</Message><Resource>/o/u42</Resource><RequestId>r</RequestId></Error>"},
    {X, POL_MALFORMED, "/o/u42", 0, 0, "r", 400, AX,
     XHEAD "<Code>InvalidFencingToken</Code><Message>The fencing token is not one decimal "
           "number from 0 to 18446744073709551615</Message><Resource>/o/u42</Resource>"
           "<RequestId>r</RequestId></Error>"},
    {X, POL_BAD_TARGET, "/o/", 0, 0, "r", 400, AX,
     XHEAD "<Code>InvalidURI</Code><Message>The path could name more than one object on this "
           "route (dot or empty segment, escaped slash, backslash or control byte)</Message>"
           "<Resource>/o/</Resource><RequestId>r</RequestId></Error>"},
    {X, POL_MISSING, "/o/<a&b>\"c'", 0, 0, "<x&y>", 428, AX,
     XHEAD "<Code>MissingFencingToken</Code><Message>This request must carry a fencing token"
           "</Message><Resource>/o/&lt;a&amp;b&gt;&quot;c&apos;</Resource>"
           "<RequestId>&lt;x&amp;y&gt;</RequestId></Error>"},
    {X, POL_MISSING, "/o/\x01\x7f\xff\xc3\xa9\t", 0, 0, NULL, 428, AX,
     XHEAD "<Code>MissingFencingToken</Code><Message>This request must carry a fencing token"
           "</Message><Resource>/o/%01%7F%FF\xc3\xa9%09</Resource></Error>"},
};

static void render(const struct ecase *c, struct pol_response *r)
{
    struct pol_route rt = route_with(c->fmt);
    struct pol_decision d = {.verdict = c->verdict, .route = &rt, .resource = c->resource,
                             .resource_len = strlen(c->resource), .token = c->token,
                             .highest = c->highest};
    cr_assert_eq(pol_decide_response_for(&d, c->rid, c->rid ? strlen(c->rid) : 0, r), 0);
}

Test(errfmt, exact_bodies)
{
    for (size_t i = 0; i < sizeof ecases / sizeof ecases[0]; i++) {
        const struct ecase *c = &ecases[i];
        struct pol_response r;

        render(c, &r);
        cr_expect_eq(r.status, c->status, "case %zu", i);
        cr_expect_str_eq(r.content_type, c->ctype, "case %zu", i);
        cr_expect_eq(r.has_highest, c->verdict == POL_STALE, "case %zu", i);
        cr_expect_eq(r.body_len, strlen(c->body), "case %zu: %s", i, r.body);
        cr_expect_str_eq(r.body, c->body, "case %zu", i);
        pol_response_clear(&r);
    }
}

/* No route (unrouted code paths) and the old entry point: JSON as before. */
Test(errfmt, json_without_route)
{
    struct pol_decision d = {.verdict = POL_STALE, .resource = "/r", .resource_len = 2,
                             .token = 1, .highest = 2};
    struct pol_response r;

    cr_assert_eq(pol_decide_response(&d, &r), 0);
    cr_expect_str_eq(r.content_type, "application/json");
    cr_expect_str_eq(r.body, "{\"error\":\"stale_token\",\"resource\":\"/r\",\"token\":1,"
                             "\"highest\":2}");
    pol_response_clear(&r);
    cr_assert_eq(pol_decide_response_for(&d, "id", 2, &r), 0);
    cr_expect_str_eq(r.body, "{\"error\":\"stale_token\",\"resource\":\"/r\",\"token\":1,"
                             "\"highest\":2}");
    pol_response_clear(&r);
    d.verdict = POL_ACCEPT;
    cr_expect_eq(pol_decide_response_for(&d, NULL, 0, &r), -1);
    cr_expect_null(r.body);
}

/* Every S3 body, parsed by python3's xml.etree: well-formed, root <Error>,
 * and the text of each element is what was escaped into it. */
Test(errfmt, s3_bodies_parse_as_xml)
{
    static const char script[] =
        "import sys, xml.etree.ElementTree as ET\n"
        "data = open(sys.argv[1], 'rb').read().split(b'\\0\\n')\n"
        "for body in data[:-1]:\n"
        "    e = ET.fromstring(body)\n"
        "    assert e.tag == 'Error', e.tag\n"
        "    out = [(c.tag, c.text or '') for c in e]\n"
        "    sys.stdout.buffer.write(repr(out).encode('ascii', 'backslashreplace') + b'\\n')\n";
    static const char *const want[] = {
        "[('Code', 'StaleFencingToken'), ('Message', 'The fencing token is lower than the "
        "highest token already admitted for this resource'), ('Resource', '/o/u42'), "
        "('FencingToken', '4'), ('HighestToken', '5'), ('RequestId', '0123456789abcdef')]",
        NULL, NULL, NULL, NULL,
        "[('Code', 'MissingFencingToken'), ('Message', 'This request must carry a fencing "
        "token'), ('Resource', '/o/<a&b>\"c\\''), ('RequestId', '<x&y>')]",
        "[('Code', 'MissingFencingToken'), ('Message', 'This request must carry a fencing "
        "token'), ('Resource', '/o/%01%7F%FF\\xe9%09')]",
    };
    char path[] = "/tmp/fence-errfmt-XXXXXX", cmd[256], line[1024];
    int fd = mkstemp(path);
    size_t k = 0, n_s3 = 0;
    FILE *in, *p;

    cr_assert(fd >= 0);
    in = fdopen(fd, "wb");
    cr_assert_not_null(in);
    for (size_t i = 0; i < sizeof ecases / sizeof ecases[0]; i++) {
        struct pol_response r;
        if (ecases[i].fmt != X)
            continue;
        render(&ecases[i], &r);
        fwrite(r.body, 1, r.body_len, in);
        fwrite("\0\n", 1, 2, in);
        pol_response_clear(&r);
        n_s3++;
    }
    fclose(in);
    cr_assert(access("/usr/bin/python3", X_OK) == 0,
              "/usr/bin/python3 is missing (Debian package python3, scripts/deps.sh)");
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 -c \"$FENCE_XML_SCRIPT\" %s", path);
    cr_assert_eq(setenv("FENCE_XML_SCRIPT", script, 1), 0);
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    while (fgets(line, sizeof line, p) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (k < sizeof want / sizeof want[0] && want[k] != NULL)
            cr_expect_str_eq(line, want[k], "body %zu", k);
        cr_expect(strncmp(line, "[('Code', '", 11) == 0, "body %zu: %s", k, line);
        k++;
    }
    int st = pclose(p);
    unlink(path);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "python3 failed to parse (status %d)", st);
    cr_expect_eq(k, n_s3, "parsed %zu of %zu bodies", k, n_s3);
}

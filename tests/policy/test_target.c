/* Routing raw targets under per-route path semantics (S5): opaque routes keep
 * S3 keys such as "a/./b", "k//c", "%5C" and a backslash as they are, with the
 * key taken from the decoded bytes; normalized routes refuse those spellings
 * as before, and also every spelling that a file-system store could resolve
 * into them from outside ("/scratch/../objects/..."); a path under no route is
 * never refused for a rule that only a route has. Then the one-step
 * classification (pol_decide_target) and the opaque key spelling. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pol_decide.h"
#include "pol_route.h"

static struct pol_routes *table(void)
{
    static const struct {
        const char *name, *prefix, *mode;
        enum pol_path_semantics sem;
    } rs[] = {
        {"dav", "/dav/", "path", POL_PATH_NORMALIZED},
        {"objects", "/objects/", "segments:2", POL_PATH_NORMALIZED},
        {"data", "/data", "prefix", POL_PATH_NORMALIZED},
        {"bucket", "/bucket/", "path", POL_PATH_OPAQUE},
        {"s3", "/s3/", "segments:2", POL_PATH_OPAQUE},
        {"davs3", "/dav/s3/", "path", POL_PATH_OPAQUE}, /* opaque inside normalized */
    };
    struct pol_routes *rt = pol_routes_new();
    cr_assert_not_null(rt);
    for (size_t i = 0; i < sizeof rs / sizeof rs[0]; i++) {
        struct pol_route r;
        char err[128];
        pol_route_defaults(&r);
        snprintf(r.name, sizeof r.name, "%s", rs[i].name);
        r.prefix = (char *)rs[i].prefix;
        r.semantics = rs[i].sem;
        cr_assert_eq(pol_route_parse_mode(&r, rs[i].mode), 0);
        cr_assert_eq(pol_routes_add(rt, &r, err, sizeof err), 0, "%s", err);
    }
    return rt;
}

#define OK POL_TARGET_OK
#define AMB POL_TARGET_AMBIGUOUS
#define BAD POL_TARGET_MALFORMED

struct tcase {
    const char *in;
    size_t len;                  /* 0: strlen(in) */
    enum pol_target_result res;
    const char *route;           /* route name; NULL: none */
    const char *path;            /* for OK: the key path */
    const char *key;             /* for OK on a route: the resource key */
};

static const struct tcase tcases[] = {
    /* One spelling: matched as normalised, whatever the semantics. */
    {"/bucket/a/b", 0, OK, "bucket", "/bucket/a/b", "/bucket/a/b"},
    {"/bucket/a%62?x=%zz", 0, OK, "bucket", "/bucket/ab", "/bucket/ab"},
    {"/dav/x?y", 0, OK, "dav", "/dav/x", "/dav/x"},
    {"/objects/u%34%32/a.txt", 0, OK, "objects", "/objects/u42/a.txt", "/objects/u42"},
    {"/s3/u%34%32/k", 0, OK, "s3", "/s3/u42/k", "/s3/u42"},
    {"/elsewhere/x", 0, OK, NULL, "/elsewhere/x", NULL},
    {"/bucket/a%20b", 0, OK, "bucket", "/bucket/a%20b", "/bucket/a%20b"},
    {"/bucket/caf%c3%a9", 0, OK, "bucket", "/bucket/caf%C3%A9", "/bucket/caf%C3%A9"},

    /* Opaque: S3 keys that normalized semantics refuse are keys. */
    {"/bucket/a/./b", 0, OK, "bucket", "/bucket/a/./b", "/bucket/a/./b"},
    {"/bucket/k//c", 0, OK, "bucket", "/bucket/k//c", "/bucket/k//c"},
    {"/bucket/k/", 0, OK, "bucket", "/bucket/k/", "/bucket/k/"},
    {"/bucket/a%5Cb", 0, OK, "bucket", "/bucket/a\\b", "/bucket/a\\b"},
    {"/bucket/a%5cb", 0, OK, "bucket", "/bucket/a\\b", "/bucket/a\\b"},
    {"/bucket/a\\b", 0, OK, "bucket", "/bucket/a\\b", "/bucket/a\\b"}, /* = %5C */
    {"/bucket/a%2Fb", 0, OK, "bucket", "/bucket/a/b", "/bucket/a/b"},  /* = a/b */
    {"/bucket/..", 0, OK, "bucket", "/bucket/..", "/bucket/.."},
    {"/bucket/a/../b", 0, OK, "bucket", "/bucket/a/../b", "/bucket/a/../b"},
    {"/bucket/%2e%2E/x", 0, OK, "bucket", "/bucket/../x", "/bucket/../x"},
    {"/bucket/../x", 0, OK, "bucket", "/bucket/../x", "/bucket/../x"},
    {"/bucket/a%00b", 0, OK, "bucket", "/bucket/a%00b", "/bucket/a%00b"},
    {"/bucket/a%7f%0A", 0, OK, "bucket", "/bucket/a%7F%0A", "/bucket/a%7F%0A"},
    {"/bucket/%25%3f%23", 0, OK, "bucket", "/bucket/%25%3F%23", "/bucket/%25%3F%23"},
    {"/bucket/a/.?x", 0, OK, "bucket", "/bucket/a/.", "/bucket/a/."},
    {"/s3/u42/../u43/k", 0, OK, "s3", "/s3/u42/../u43/k", "/s3/u42"},
    {"/s3//u42/k", 0, OK, "s3", "/s3//u42/k", "/s3/"},   /* another object: key "/u42/k" */
    {"/s3/u42%2Fk", 0, OK, "s3", "/s3/u42/k", "/s3/u42"},
    {"/dav/s3/a//b", 0, OK, "davs3", "/dav/s3/a//b", "/dav/s3/a//b"},
    {"/dav/s3/a\\b", 0, OK, "davs3", "/dav/s3/a\\b", "/dav/s3/a\\b"},

    /* Normalized: the spellings refused today stay refused. */
    {"/dav/a/./b", 0, AMB, "dav", NULL, NULL},
    {"/dav/a//b", 0, AMB, "dav", NULL, NULL},
    {"/dav/a/", 0, OK, "dav", "/dav/a/", "/dav/a/"},
    {"/dav/a%2Fb", 0, AMB, "dav", NULL, NULL},
    {"/dav/a\\b", 0, AMB, "dav", NULL, NULL},
    {"/dav/a%5Cb", 0, AMB, "dav", NULL, NULL},
    {"/dav/a%00", 0, AMB, "dav", NULL, NULL},
    {"/dav/a%0a", 0, AMB, "dav", NULL, NULL},
    {"/dav/..", 0, AMB, "dav", NULL, NULL},
    {"/objects/u42/../u43/a", 0, AMB, "objects", NULL, NULL},
    {"/objects/u42/%2e%2e/u43/a", 0, AMB, "objects", NULL, NULL},
    {"/data/.", 0, AMB, "data", NULL, NULL},

    /* Normalized: no escape into the route by a spelling the store resolves. */
    {"/scratch/../objects/u42/a.txt", 0, AMB, "objects", NULL, NULL},
    {"/scratch/%2e%2e/objects/u42/a", 0, AMB, "objects", NULL, NULL},
    {"/scratch/.%2E/objects/u42/a", 0, AMB, "objects", NULL, NULL},
    {"/scratch%2F..%2F..%2Fobjects/u42/a", 0, AMB, "objects", NULL, NULL},
    {"/scratch\\..\\objects/u42/a", 0, AMB, "objects", NULL, NULL},
    {"/scratch%5C..%5Cobjects/u42/a", 0, AMB, "objects", NULL, NULL},
    {"//objects/u42/a", 0, AMB, "objects", NULL, NULL},
    {"/./objects/u42", 0, AMB, "objects", NULL, NULL},
    {"/x/y/../../objects/u42", 0, AMB, "objects", NULL, NULL},
    {"/../../objects/u42", 0, AMB, "objects", NULL, NULL},   /* never above the root */
    {"/a//../objects/u42", 0, AMB, "objects", NULL, NULL},   /* merged first: /objects */
    {"/objects/u42//../../dav/x", 0, AMB, "objects", NULL, NULL},
    {"/data%00/x", 0, AMB, "data", NULL, NULL},               /* cut at NUL: /data */
    {"/scratch/x%00/../../data", 0, AMB, "data", NULL, NULL},
    {"/bucket/../dav/x", 0, AMB, "dav", NULL, NULL},          /* opaque, unless it resolves */
    {"/dav/s3/x/../../y", 0, AMB, "dav", NULL, NULL},
    {"/dav/./s3/k", 0, AMB, "dav", NULL, NULL},                /* as sent it is under /dav/ */
    {"/s3/..%2F..%2Fdav/x", 0, AMB, "dav", NULL, NULL},

    /* Unrouted: never refused for a route's rule. */
    {"/scratch/a/./b", 0, OK, NULL, "/scratch/a/./b", NULL},
    {"/scratch//x", 0, OK, NULL, "/scratch//x", NULL},
    {"/scratch/a%2Fb", 0, OK, NULL, "/scratch/a/b", NULL},
    {"/scratch/a\\b", 0, OK, NULL, "/scratch/a\\b", NULL},
    {"/scratch/%5C", 0, OK, NULL, "/scratch/\\", NULL},
    {"/scratch/%00", 0, OK, NULL, "/scratch/%00", NULL},
    {"/scratch/../x", 0, OK, NULL, "/scratch/../x", NULL},
    {"/..", 0, OK, NULL, "/..", NULL},
    {"/objectsX/../y", 0, OK, NULL, "/objectsX/../y", NULL},
    {"/database/./x", 0, OK, NULL, "/database/./x", NULL},    /* "/data" ends at a segment */

    /* Malformed for every route. */
    {"", 0, BAD, NULL, NULL, NULL},
    {"a", 0, BAD, NULL, NULL, NULL},
    {"*", 0, BAD, NULL, NULL, NULL},
    {"http://h/bucket/x", 0, BAD, NULL, NULL, NULL},
    {"?x", 0, BAD, NULL, NULL, NULL},
    {"/bucket/a%zz", 0, BAD, NULL, NULL, NULL},
    {"/bucket/a%4", 0, BAD, NULL, NULL, NULL},
    {"/bucket/a%", 0, BAD, NULL, NULL, NULL},
    {"/bucket/a%?x", 0, BAD, NULL, NULL, NULL},
    {"/scratch/a%G0/./", 0, BAD, NULL, NULL, NULL},
    {"/bucket/a#f", 0, BAD, NULL, NULL, NULL},
    {"/scratch/a?b#f", 0, BAD, NULL, NULL, NULL},
};

Test(target, route_table)
{
    struct pol_routes *rt = table();

    for (size_t i = 0; i < sizeof tcases / sizeof tcases[0]; i++) {
        const struct tcase *c = &tcases[i];
        size_t len = c->len ? c->len : strlen(c->in), n = 99;
        const struct pol_route *r = (const struct pol_route *)1;
        char out[256];
        enum pol_target_result res;

        memset(out, 'Z', sizeof out);
        res = pol_routes_route_target(rt, c->in, len, out, len + 1, &n, &r);
        cr_expect_eq(res, c->res, "%s: result %d, want %d", c->in, res, c->res);
        if (c->route == NULL)
            cr_expect_null(r, "%s: routed to %s", c->in, r ? r->name : "");
        else
            cr_expect(r != NULL && strcmp(r->name, c->route) == 0, "%s: route %s, want %s",
                      c->in, r ? r->name : "(none)", c->route);
        if (res != OK || c->res != OK)
            continue;
        cr_expect_eq(n, strlen(c->path), "%s: length %zu", c->in, n);
        cr_expect_str_eq(out, c->path, "%s", c->in);
        if (c->key != NULL && r != NULL) {
            const char *key;
            size_t klen;
            pol_route_resource(r, out, n, &key, &klen);
            cr_expect(klen == strlen(c->key) && memcmp(key, c->key, klen) == 0,
                      "%s: key %.*s, want %s", c->in, (int)klen, key, c->key);
        }
    }
    pol_routes_free(rt);
}

/* Without any route nothing is refused but malformed URIs. */
Test(target, no_routes_refuse_nothing)
{
    struct pol_routes *rt = pol_routes_new();

    for (size_t i = 0; i < sizeof tcases / sizeof tcases[0]; i++) {
        const struct tcase *c = &tcases[i];
        size_t len = c->len ? c->len : strlen(c->in), n;
        const struct pol_route *r;
        char out[256];
        enum pol_target_result res = pol_routes_route_target(rt, c->in, len, out, sizeof out, &n,
                                                             &r);
        cr_expect_eq(res, c->res == BAD ? BAD : OK, "%s", c->in);
        cr_expect_null(r);
    }
    pol_routes_free(rt);
}

/* Only the normalized routes' rules refuse: the same table with every route
 * opaque accepts every well-formed target. */
Test(target, all_opaque_accepts_every_uri)
{
    struct pol_routes *rt = pol_routes_new();
    static const char *const prefixes[] = {"/dav/", "/objects/", "/data", "/bucket/"};

    for (size_t i = 0; i < 4; i++) {
        struct pol_route r;
        char err[128];
        pol_route_defaults(&r);
        r.prefix = (char *)prefixes[i];
        r.semantics = POL_PATH_OPAQUE;
        cr_assert_eq(pol_routes_add(rt, &r, err, sizeof err), 0, "%s", err);
    }
    for (size_t i = 0; i < sizeof tcases / sizeof tcases[0]; i++) {
        const struct tcase *c = &tcases[i];
        size_t len = c->len ? c->len : strlen(c->in), n;
        const struct pol_route *r;
        char out[256];
        enum pol_target_result res = pol_routes_route_target(rt, c->in, len, out, sizeof out, &n,
                                                             &r);
        cr_expect_eq(res, c->res == BAD ? BAD : OK, "%s", c->in);
    }
    pol_routes_free(rt);
}

/* For every target that has one spelling, the opaque key path is the
 * normalised path, so matching either way gives one route and one key. */
Test(target, opaque_equals_normalized_where_both_accept)
{
    static const char *const ins[] = {
        "/", "/a", "/a/", "/a%62", "/%41%7a%30%2D%2e%5F%7E", "/a%2e%2e", "/...", "/%20",
        "/%c3%a9", "/%25", "/%25%32%46", "/%3a", "/%22%3C%7B%5b%5D%7c", "/%3F%3f", "/%23",
        "/a:b@c!$&'()*+,;=", "/a%3Ab%40c%21%24%26%27%28%29%2A%2B%2C%3B%3D", "/{x}[y]",
        "/a?b/../c//d", "/objects/user42/a.txt?x",
    };
    for (size_t i = 0; i < sizeof ins / sizeof ins[0]; i++) {
        char a[128], b[128];
        long na = pol_path_normalize(ins[i], strlen(ins[i]), a, sizeof a);
        long nb = pol_path_opaque(ins[i], strlen(ins[i]), b, sizeof b);
        cr_assert_geq(na, 0, "%s", ins[i]);
        cr_expect_eq(na, nb, "%s", ins[i]);
        cr_expect_str_eq(a, b, "%s", ins[i]);
    }
}

/* The opaque spelling is canonical: feeding it back changes nothing, and
 * the escaped and raw spellings of a byte meet. */
Test(target, opaque_is_canonical)
{
    static const struct { const char *in, *out; } t[] = {
        {"/k//c/./d/../e", "/k//c/./d/../e"}, {"/a%5C", "/a\\"}, {"/a\\", "/a\\"},
        {"/a%2f%2F", "/a//"}, {"/%00%1f%7F%80%ff", "/%00%1F%7F%80%FF"}, {"/%61", "/a"},
        {"/a%25", "/a%25"}, {"/a%3F?q", "/a%3F"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char a[64], b[64];
        long na = pol_path_opaque(t[i].in, strlen(t[i].in), a, sizeof a);
        cr_assert_geq(na, 0, "%s", t[i].in);
        cr_expect_str_eq(a, t[i].out, "%s", t[i].in);
        long nb = pol_path_opaque(a, (size_t)na, b, sizeof b);
        cr_expect_eq(na, nb, "%s", t[i].in);
        cr_expect_str_eq(a, b, "%s: not idempotent", t[i].in);
    }
    {
        char small[4];
        cr_expect_eq(pol_path_opaque("/abcd", 5, small, sizeof small), -1);
        cr_expect_eq(pol_path_opaque("/%00", 4, small, sizeof small), -1); /* needs 5 */
        cr_expect_eq(pol_path_opaque(NULL, 0, small, sizeof small), -1);
    }
}

/* The caller's buffer: len + 1 suffices for every printable target; the
 * result never runs past outcap. */
Test(target, output_never_overflows)
{
    struct pol_routes *rt = table();
    static const char *const ins[] = {"/scratch/../objects/u42/a", "/bucket/k//c%5C",
                                      "/scratch/a/./b", "/dav/a%2Fb"};

    for (size_t i = 0; i < sizeof ins / sizeof ins[0]; i++) {
        size_t len = strlen(ins[i]);
        for (size_t cap = 1; cap <= len + 1; cap++) {
            char out[128];
            size_t n;
            const struct pol_route *r;
            memset(out, 'Z', sizeof out);
            enum pol_target_result res =
                pol_routes_route_target(rt, ins[i], len, out, cap, &n, &r);
            for (size_t k = cap; k < sizeof out; k++)
                cr_assert_eq(out[k], 'Z', "%s cap %zu: wrote at %zu", ins[i], cap, k);
            if (cap == len + 1)
                cr_expect_neq(res, BAD, "%s", ins[i]);
        }
    }
    pol_routes_free(rt);
}

/* pol_decide_target: routing and classification in one call. */
Test(target, decide_target)
{
    struct pol_routes *rt = table();
    struct pol_facts f;
    struct pol_decision d;
    char buf[128];

    memset(&f, 0, sizeof f);
    f.method = "PUT";
    f.method_len = 3;
    f.path = "/ignored";
    f.path_len = 8;

    /* An S3 key with a dot segment, fenced: missing token. */
    cr_assert_eq(pol_decide_target(rt, "/s3/u42/a/./b", 13, buf, sizeof buf, &f, &d), 0);
    cr_expect_eq(d.verdict, POL_MISSING);
    cr_expect_str_eq(d.route->name, "s3");
    cr_expect(d.resource_len == 7 && memcmp(d.resource, "/s3/u42", 7) == 0);
    cr_expect(d.resource >= buf && d.resource < buf + sizeof buf);

    /* With a token: CHECK on the raw-byte key. */
    f.token_fields = 1;
    f.token = "7";
    f.token_len = 1;
    cr_assert_eq(pol_decide_target(rt, "/bucket/k//c", 12, buf, sizeof buf, &f, &d), 0);
    cr_expect_eq(d.verdict, POL_CHECK);
    cr_expect_eq(d.token, 7);
    cr_expect(d.resource_len == 12 && memcmp(d.resource, "/bucket/k//c", 12) == 0);

    /* Escaping into a normalized route: BAD_TARGET with that route. */
    cr_assert_eq(pol_decide_target(rt, "/scratch/../objects/u1/x", 24, buf, sizeof buf, &f, &d),
                 0);
    cr_expect_eq(d.verdict, POL_BAD_TARGET);
    cr_expect_str_eq(d.route->name, "objects");
    cr_expect(d.resource_len == 9 && memcmp(d.resource, "/objects/", 9) == 0);

    /* Unrouted with an odd spelling: PASS, the token not even parsed. */
    f.token = "junk";
    f.token_len = 4;
    cr_assert_eq(pol_decide_target(rt, "/scratch/a//b", 13, buf, sizeof buf, &f, &d), 0);
    cr_expect_eq(d.verdict, POL_PASS);
    cr_expect_null(d.route);

    /* Malformed: -1. */
    cr_expect_eq(pol_decide_target(rt, "/a%zz", 5, buf, sizeof buf, &f, &d), -1);
    cr_expect_eq(d.verdict, POL_PASS);
    cr_expect_null(d.route);
    pol_routes_free(rt);
}

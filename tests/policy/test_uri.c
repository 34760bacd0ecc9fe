/* pol_uri: the WebDAV Destination field and absolute-form targets. A URI
 * that names this proxy (the request's Host) gives its path; another host or
 * port, userinfo, another scheme, a network-path reference or a byte that is
 * not URI syntax is refused (400). The path is then routed and classified
 * like a target: %-escapes and dot segments cannot slip a COPY or MOVE past
 * a fenced route. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "pol_decide.h"
#include "pol_route.h"
#include "pol_uri.h"

struct dcase {
    const char *self;   /* the Host field value; NULL: none */
    const char *in;
    const char *path;   /* NULL: refused */
};

#define SELF "proxy.example:8080"

static const struct dcase dcases[] = {
    /* absolute, naming this proxy */
    {SELF, "http://proxy.example:8080/objects/u42/a.txt", "/objects/u42/a.txt"},
    {SELF, "HTTP://PROXY.Example:8080/x?y=1", "/x?y=1"},
    {SELF, "https://proxy.example:8080/x", "/x"},
    {SELF, "http://proxy.example:08080/x", "/x"},              /* the same port number */
    {SELF, "http://proxy.example:8080/", "/"},
    {SELF, "http://proxy.example:8080//x", "//x"},             /* routed as a path later */
    {SELF, "http://proxy.example:8080/a%2Fb/%2e%2e/c", "/a%2Fb/%2e%2e/c"},
    {"proxy.example", "http://proxy.example/x", "/x"},
    {"proxy.example", "http://proxy.example:80/x", "/x"},
    {"proxy.example:80", "http://proxy.example/x", "/x"},
    {"proxy.example", "https://proxy.example/x", "/x"},        /* behind a TLS terminator */
    {"proxy.example:443", "https://proxy.example/x", "/x"},
    {"[::1]:8080", "http://[::1]:8080/x", "/x"},
    {"[::1]:8080", "http://[::1]/x", NULL},
    {"127.0.0.1:8080", "http://127.0.0.1:8080/x", "/x"},
    /* absolute, naming something else */
    {SELF, "http://other.example:8080/x", NULL},
    {SELF, "http://proxy.example/x", NULL},                    /* port 80 */
    {SELF, "http://proxy.example:8081/x", NULL},
    {SELF, "https://proxy.example/x", NULL},                   /* port 443 */
    {"proxy.example", "http://proxy.example:81/x", NULL},
    {"proxy.example", "https://proxy.example:80/x", NULL},
    {"localhost:8080", "http://127.0.0.1:8080/x", NULL},       /* no guessing */
    {SELF, "http://proxy.example.:8080/x", NULL},
    {SELF, "http://proxy%2Eexample:8080/x", NULL},
    {SELF, "http://u@proxy.example:8080/x", NULL},
    {SELF, "http://u:p@proxy.example:8080/x", NULL},
    {SELF, "http://proxy.example:8080@other/x", NULL},
    {SELF, "http://proxy.example:0/x", NULL},
    {SELF, "http://proxy.example:65536/x", NULL},
    {SELF, "http://proxy.example:/x", NULL},
    {SELF, "http://:8080/x", NULL},
    {SELF, "http:///x", NULL},
    {SELF, "http://proxy.example:8080", NULL},                 /* no path */
    {SELF, "http://proxy.example:8080?x", NULL},
    {SELF, "ftp://proxy.example:8080/x", NULL},
    {SELF, "http:/x", NULL},
    {SELF, "http:x", NULL},
    {NULL, "http://proxy.example:8080/x", NULL},               /* no Host to compare */
    /* path form */
    {SELF, "/objects/u42/a.txt", "/objects/u42/a.txt"},
    {SELF, "/a%20b?c", "/a%20b?c"},
    {SELF, "/", "/"},
    {NULL, "/x", "/x"},
    {SELF, "//proxy.example:8080/x", NULL},                    /* network-path reference */
    {SELF, "//other/x", NULL},
    /* garbage */
    {SELF, "", NULL},
    {SELF, "objects/x", NULL},
    {SELF, "../objects/x", NULL},
    {SELF, "*", NULL},
    {SELF, "/a b", NULL},
    {SELF, "/a\tb", NULL},
    {SELF, "/a#f", NULL},
    {SELF, "http://proxy.example:8080/a#f", NULL},
    {SELF, "/a\\b", NULL},
    {SELF, "/caf\xc3\xa9", NULL},
    {SELF, "/a\x01", NULL},
    {SELF, "/a\x7f", NULL},
    {SELF, "</x>", NULL},
    {SELF, "\"http://proxy.example:8080/x\"", NULL},
    {SELF, "http://proxy.example:8080/x y", NULL},
    {SELF, "/a{b}", NULL},
};

Test(uri, destination_table)
{
    for (size_t i = 0; i < sizeof dcases / sizeof dcases[0]; i++) {
        const struct dcase *c = &dcases[i];
        const char *p = (const char *)1;
        size_t n = 99;
        int rc = pol_uri_destination(c->in, strlen(c->in), c->self,
                                     c->self ? strlen(c->self) : 0, &p, &n);
        if (c->path == NULL) {
            cr_expect_eq(rc, -1, "'%s' (Host %s): accepted as %.*s", c->in,
                         c->self ? c->self : "-", rc == 0 ? (int)n : 0, rc == 0 ? p : "");
            cr_expect_null(p);
            continue;
        }
        cr_expect_eq(rc, 0, "'%s' (Host %s) refused", c->in, c->self ? c->self : "-");
        if (rc == 0) {
            cr_expect(n == strlen(c->path) && memcmp(p, c->path, n) == 0, "'%s': %.*s", c->in,
                      (int)n, p);
            cr_expect(p >= c->in && p + n == c->in + strlen(c->in), "'%s': not a slice", c->in);
        }
    }
}

Test(uri, absolute_target)
{
    const char *p;
    size_t n;

    cr_expect_eq(pol_uri_absolute_target("http://a:1/x?q", 14, "a:1", 3, &p, &n), 0);
    cr_expect(n == 4 && memcmp(p, "/x?q", 4) == 0);
    cr_expect_eq(pol_uri_absolute_target("HTTP://A/", 9, "a", 1, &p, &n), 0);
    cr_expect(n == 1 && p[0] == '/');
    cr_expect_eq(pol_uri_absolute_target("http://b/x", 10, "a", 1, &p, &n), -1);
    cr_expect_eq(pol_uri_absolute_target("http://a:2/x", 12, "a:1", 3, &p, &n), -1);
    /* A path-form value is a Destination's, not an absolute-form target. */
    cr_expect_eq(pol_uri_absolute_target("/x", 2, "a", 1, &p, &n), -1);
    cr_expect_eq(pol_uri_absolute_target("http://a/x", 10, NULL, 0, &p, &n), -1);
}

Test(uri, authority_is)
{
    static const struct { const char *a; unsigned def; const char *self; int want; } t[] = {
        {"a", 80, "a", 1}, {"A", 80, "a", 1}, {"a:80", 80, "a", 1}, {"a", 80, "a:80", 1},
        {"a:81", 80, "a", 0}, {"a", 443, "a:443", 1}, {"a", 443, "a:80", 0},
        {"b", 80, "a", 0}, {"ab", 80, "a", 0}, {"a", 80, "ab", 0}, {"[::1]", 80, "[::1]:80", 1},
        {"[::1", 80, "[::1", 0}, {"", 80, "a", 0}, {"a", 80, "", 0}, {"a:", 80, "a", 0},
        {"a:1x", 80, "a:1x", 0}, {"u@a", 80, "u@a", 0}, {"a:123456", 80, "a:123456", 0},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        cr_expect_eq(pol_uri_authority_is(t[i].a, strlen(t[i].a), t[i].def, t[i].self,
                                          strlen(t[i].self)),
                     t[i].want, "'%s' vs '%s' (default %u)", t[i].a, t[i].self, t[i].def);
}

/* The caller's path for COPY/MOVE: Destination -> pol_decide_target, the
 * same classification as a target, %-escapes and dot segments included. */
Test(uri, destination_classified_like_target)
{
    static const struct {
        const char *dest;
        enum pol_verdict v;
        const char *resource;
    } t[] = {
        {"http://" SELF "/objects/user42/a.txt", POL_CHECK, "/objects/user42"},
        {"http://" SELF "/objects/user%34%32/a.txt", POL_CHECK, "/objects/user42"},
        {"http://" SELF "/objects/%75ser42/a.txt", POL_CHECK, "/objects/user42"},
        {"/objects/user42/a.txt", POL_CHECK, "/objects/user42"},
        {"http://" SELF "/scratch/../objects/user42/a.txt", POL_BAD_TARGET, "/objects/"},
        {"http://" SELF "/objects/user42/./a.txt", POL_BAD_TARGET, "/objects/"},
        {"http://" SELF "/scratch/a.txt", POL_PASS, NULL},
        {"http://" SELF "/scratch//a.txt", POL_PASS, NULL},
    };
    struct pol_routes *rt = pol_routes_new();
    struct pol_route r;
    char err[128], buf[256];

    pol_route_defaults(&r);
    r.prefix = "/objects/";
    cr_assert_eq(pol_route_parse_mode(&r, "segments:2"), 0);
    cr_assert_eq(pol_routes_add(rt, &r, err, sizeof err), 0, "%s", err);
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct pol_facts f = {.method = "COPY", .method_len = 4, .token_fields = 1,
                              .token = "4", .token_len = 1};
        struct pol_decision d;
        const char *p;
        size_t n;

        cr_assert_eq(pol_uri_destination(t[i].dest, strlen(t[i].dest), SELF, strlen(SELF), &p,
                                         &n),
                     0, "%s", t[i].dest);
        cr_assert_eq(pol_decide_target(rt, p, n, buf, sizeof buf, &f, &d), 0, "%s", t[i].dest);
        cr_expect_eq(d.verdict, t[i].v, "%s: verdict %d", t[i].dest, d.verdict);
        if (t[i].resource != NULL)
            cr_expect(d.resource_len == strlen(t[i].resource) &&
                          memcmp(d.resource, t[i].resource, d.resource_len) == 0,
                      "%s: resource %.*s", t[i].dest, (int)d.resource_len, d.resource);
        /* Without a token COPY is refused on the route: the default methods. */
        f.token_fields = 0;
        cr_assert_eq(pol_decide_target(rt, p, n, buf, sizeof buf, &f, &d), 0);
        if (t[i].v == POL_CHECK)
            cr_expect_eq(d.verdict, POL_MISSING, "%s", t[i].dest);
    }
    pol_routes_free(rt);
}

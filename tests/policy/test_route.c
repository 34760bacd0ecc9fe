/* Routes and paths: request-path normalisation (decoding, refusals), the
 * resource-mode and method-list parsers, the route table (deep copy,
 * duplicates, longest-prefix match at segment boundaries) and resource keys. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "pol_route.h"

struct ncase {
    const char *in;
    size_t len;       /* 0: strlen(in) */
    const char *out;  /* NULL: refused */
};

#define L(s) s, sizeof(s) - 1

static const struct ncase ncases[] = {
    {"/", 0, "/"},
    {"/a", 0, "/a"},
    {"/a/", 0, "/a/"},
    {"/a/b.txt", 0, "/a/b.txt"},
    {"/objects/user42/a.txt", 0, "/objects/user42/a.txt"},
    {"/a?x=1", 0, "/a"},
    {"/a?", 0, "/a"},
    {"/?q", 0, "/"},
    {"/a?b/../c//d", 0, "/a"},          /* the query is not part of the path */
    {"/a%62", 0, "/ab"},                /* unreserved escapes are decoded */
    {"/%41%7a%30%2D%2e%5F%7E", 0, "/Az0-._~"},
    {"/a%2e%2e", 0, "/a.."},            /* ".." inside a segment is a name */
    {"/...", 0, "/..."},
    {"/.a", 0, "/.a"},
    {"/a.", 0, "/a."},
    {"/%20", 0, "/%20"},                /* other escapes stay, hex upper-cased */
    {"/%c3%a9", 0, "/%C3%A9"},
    {"/%C3%A9", 0, "/%C3%A9"},
    {"/%25", 0, "/%25"},
    {"/%25%32%46", 0, "/%252F"},        /* "%25" then decoded "2F": no double decode */
    {"/%3a", 0, "/:"},                  /* printable escapes decode too */
    {"/%22%3C%7B%5b%5D%7c", 0, "/\"<{[]|"},
    {"/%3F%3f", 0, "/%3F%3F"},           /* but not the structural ones */
    {"/%23", 0, "/%23"},
    {"/%7F", 0, NULL},
    {"/a b", 0, "/a%20b"},              /* raw bytes outside unreserved are escaped */
    {"/\xc3\xa9", 0, "/%C3%A9"},        /* so raw and escaped spellings meet */
    {"/a:b@c!$&'()*+,;=", 0, "/a:b@c!$&'()*+,;="},
    {"/a%3Ab%40c%21%24%26%27%28%29%2A%2B%2C%3B%3D", 0, "/a:b@c!$&'()*+,;="},
    {"/{x}[y]", 0, "/{x}[y]"},
    {"/a%3Ab", 0, "/a:b"},
    {"/a%20b", 0, "/a%20b"},
    {"", 0, NULL},
    {"a", 0, NULL},
    {"*", 0, NULL},
    {"http://h/a", 0, NULL},            /* absolute-form: refused here */
    {"?a", 0, NULL},
    {"//", 0, NULL},
    {"//a", 0, NULL},
    {"/a//b", 0, NULL},
    {"/a//", 0, NULL},
    {"/.", 0, NULL},
    {"/..", 0, NULL},
    {"/./a", 0, NULL},
    {"/a/./b", 0, NULL},
    {"/a/../b", 0, NULL},
    {"/a/..", 0, NULL},
    {"/a/.", 0, NULL},
    {"/a/./", 0, NULL},
    {"/%2e", 0, NULL},                  /* dot segments produced by decoding */
    {"/%2e%2E/", 0, NULL},
    {"/a/.%2e/b", 0, NULL},
    {"/a%2Fb", 0, NULL},                /* escaped separators */
    {"/a%2fb", 0, NULL},
    {"/a%5Cb", 0, NULL},
    {"/a%5cb", 0, NULL},
    {"/a\\b", 0, NULL},
    {"/a%00", 0, NULL},
    {"/a%0a", 0, NULL},
    {"/a%1F", 0, NULL},
    {"/a%7f", 0, NULL},
    {"/a\x01", 0, NULL},
    {"/a\x7f", 0, NULL},
    {"/a\tb", 0, NULL},
    {L("/a\0b"), NULL},
    {"/a%G1", 0, NULL},                 /* bad escapes */
    {"/a%1G", 0, NULL},
    {"/a%4", 0, NULL},
    {"/a%", 0, NULL},
    {"/a%?x", 0, NULL},
    {"/a%4?x", 0, NULL},
    {"/a#f", 0, NULL},                  /* fragments */
    {"/a?x#f", 0, NULL},
    {"/#", 0, NULL},
};

Test(path, normalize_table)
{
    for (size_t i = 0; i < sizeof ncases / sizeof ncases[0]; i++) {
        const struct ncase *c = &ncases[i];
        size_t len = c->len ? c->len : strlen(c->in);
        char out[256];
        memset(out, 'Z', sizeof out);
        long n = pol_path_normalize(c->in, len, out, sizeof out);
        if (c->out == NULL) {
            cr_expect_eq(n, -1, "case %zu (%s): accepted as '%s'", i, c->in,
                         n >= 0 ? out : "");
        } else {
            cr_expect_eq(n, (long)strlen(c->out), "case %zu (%s): rc %ld", i, c->in, n);
            if (n >= 0)
                cr_expect_str_eq(out, c->out, "case %zu", i);
        }
    }
}

/* Normalising a normalised path changes nothing. */
Test(path, idempotent)
{
    for (size_t i = 0; i < sizeof ncases / sizeof ncases[0]; i++) {
        const struct ncase *c = &ncases[i];
        char a[256], b[256];
        if (c->out == NULL)
            continue;
        long n = pol_path_normalize(c->out, strlen(c->out), a, sizeof a);
        cr_assert_geq(n, 0, "%s", c->out);
        long m = pol_path_normalize(a, (size_t)n, b, sizeof b);
        cr_expect_eq(m, n);
        cr_expect_str_eq(a, b);
        cr_expect_str_eq(a, c->out);
    }
}

Test(path, output_capacity)
{
    char out[8];
    /* "/abcdef" needs 7 bytes + NUL. */
    cr_expect_eq(pol_path_normalize("/abcdef", 7, out, 8), 7);
    cr_expect_eq(pol_path_normalize("/abcdefg", 8, out, 8), -1);
    cr_expect_eq(pol_path_normalize("/ab cd", 6, out, 8), -1); /* "/ab%20cd" is 8 */
    cr_expect_eq(pol_path_normalize("/", 1, out, 1), -1);
    cr_expect_eq(pol_path_normalize("/", 1, out, 2), 1);
}

/* Only len bytes are read: the same bytes followed by anything normalise
 * the same way. */
Test(path, length_is_respected)
{
    char out[64];
    cr_expect_eq(pol_path_normalize("/ab/../x", 3, out, sizeof out), 3);
    cr_expect_str_eq(out, "/ab");
    cr_expect_eq(pol_path_normalize("/a%41", 3, out, sizeof out), -1); /* "/a%" */
}

/* The proxy sizes the output as len + 1: for any printable-ASCII target
 * (all its HTTP parser lets through) the output is never longer. */
Test(path, never_longer_for_printable_targets)
{
    static const char hex[] = "0123456789ABCDEF";
    for (unsigned c = 0x21; c < 0x7F; c++) {
        char t[2][16];
        snprintf(t[0], sizeof t[0], "/a%cb/c", (char)c);
        snprintf(t[1], sizeof t[1], "/a%%%c%cb", hex[c >> 4], hex[c & 15]);
        for (int k = 0; k < 2; k++) {
            size_t len = strlen(t[k]);
            char big[64], small[16];
            long n = pol_path_normalize(t[k], len, big, sizeof big);
            long m = pol_path_normalize(t[k], len, small, len + 1);
            cr_expect_eq(n, m, "%s: %ld with room, %ld with len + 1", t[k], n, m);
            if (n >= 0)
                cr_expect_leq((size_t)n, len, "%s", t[k]);
        }
    }
}

struct mcase { const char *in; int rc; enum pol_resource_mode mode; unsigned n; };

static const struct mcase mcases[] = {
    {"prefix", 0, POL_RES_PREFIX, 0},   {"path", 0, POL_RES_PATH, 0},
    {"segments:1", 0, POL_RES_SEGMENTS, 1}, {"segments:2", 0, POL_RES_SEGMENTS, 2},
    {"segments:12", 0, POL_RES_SEGMENTS, 12},
    {"segments:0", -1, 0, 0},  {"segments:x", -1, 0, 0},  {"segments:", -1, 0, 0},
    {"segments:-1", -1, 0, 0}, {"segments:+1", -1, 0, 0}, {"segments:01", -1, 0, 0},
    {"segments:2 ", -1, 0, 0}, {"segments: 2", -1, 0, 0}, {"segments:2x", -1, 0, 0},
    {"segments:99999999999999999999", -1, 0, 0},
    {"segments", -1, 0, 0},    {"Prefix", -1, 0, 0},      {"", -1, 0, 0},
    {"path ", -1, 0, 0},       {"prefixes", -1, 0, 0},
};

Test(route, parse_mode)
{
    for (size_t i = 0; i < sizeof mcases / sizeof mcases[0]; i++) {
        struct pol_route r;
        pol_route_defaults(&r);
        r.mode = POL_RES_PATH;
        int rc = pol_route_parse_mode(&r, mcases[i].in);
        cr_expect_eq(rc, mcases[i].rc, "'%s'", mcases[i].in);
        if (rc == 0) {
            cr_expect_eq(r.mode, mcases[i].mode, "'%s'", mcases[i].in);
            if (r.mode == POL_RES_SEGMENTS)
                cr_expect_eq(r.segments, mcases[i].n, "'%s'", mcases[i].in);
        } else {
            cr_expect_eq(r.mode, POL_RES_PATH, "'%s' changed the route", mcases[i].in);
        }
    }
}

Test(route, defaults)
{
    struct pol_route r;
    memset(&r, 0x5a, sizeof r);
    pol_route_defaults(&r);
    cr_expect_eq(r.mode, POL_RES_PREFIX);
    cr_expect_eq(r.missing_allow, 0);
    cr_expect_eq(r.prefix, NULL);
    cr_expect_str_eq(r.name, "");
    cr_expect_eq(r.semantics, POL_PATH_NORMALIZED);
    cr_expect_eq(r.error_format, POL_ERRFMT_JSON);
    /* Every method that writes, WebDAV's included (COPY and MOVE write their
     * Destination, LOCK/UNLOCK change what later writes may do), and none
     * that only reads. */
    static const char *const fenced[] = {"PUT", "POST", "PATCH", "DELETE", "MKCOL",
                                         "COPY", "MOVE", "PROPPATCH", "LOCK", "UNLOCK"};
    static const char *const unfenced[] = {"GET", "HEAD", "OPTIONS", "PROPFIND", "TRACE",
                                           "SEARCH", "REPORT", "copy", "Move"};
    cr_assert_eq(r.n_methods, 10);
    for (size_t i = 0; i < 10; i++) {
        cr_expect_str_eq(r.methods[i], fenced[i]);
        cr_expect(pol_route_is_fenced(&r, fenced[i], strlen(fenced[i])), "%s", fenced[i]);
    }
    for (size_t i = 0; i < sizeof unfenced / sizeof unfenced[0]; i++)
        cr_expect(!pol_route_is_fenced(&r, unfenced[i], strlen(unfenced[i])), "%s", unfenced[i]);
    {
        /* The macro is the list, in the config's syntax. */
        struct pol_route q;
        memset(&q, 0, sizeof q);
        cr_assert_eq(pol_route_parse_methods(&q, POL_ROUTE_DEFAULT_METHODS), 0);
        cr_expect_eq(memcmp(q.methods, r.methods, sizeof q.methods), 0);
    }
    cr_expect(!pol_route_is_fenced(&r, "GET", 3));
    cr_expect(!pol_route_is_fenced(&r, "put", 3));
    cr_expect(!pol_route_is_fenced(&r, "PU", 2));
    cr_expect(!pol_route_is_fenced(&r, "PUTX", 4));
    cr_expect(!pol_route_is_fenced(&r, "PUT", 4));
}

struct lcase { const char *in; int rc; unsigned n; const char *first, *last; };

static const struct lcase lcases[] = {
    {"PUT", 0, 1, "PUT", "PUT"},
    {"PUT POST", 0, 2, "PUT", "POST"},
    {"  GET\tPUT  ", 0, 2, "GET", "PUT"},
    {"PUT PUT", 0, 1, "PUT", "PUT"},
    {"M-SEARCH X_Y", 0, 2, "M-SEARCH", "X_Y"},
    {"", -1, 0, NULL, NULL},
    {"   ", -1, 0, NULL, NULL},
    {"PUT,POST", -1, 0, NULL, NULL},
    {"PUT;", -1, 0, NULL, NULL},
    {"P(T", -1, 0, NULL, NULL},
    {"PUT\x01", -1, 0, NULL, NULL},
    {"\xc3\xa9", -1, 0, NULL, NULL},
    {"ABCDEFGHIJKLMNOPQRSTUVWXYZABCDE", 0, 1, "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDE", NULL}, /* 31 */
    {"ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEF", -1, 0, NULL, NULL},                        /* 32 */
    {"A B C D E F G H I J K L M N O P", 0, 16, "A", "P"},
    {"A B C D E F G H I J K L M N O P Q", -1, 0, NULL, NULL},
};

Test(route, parse_methods)
{
    for (size_t i = 0; i < sizeof lcases / sizeof lcases[0]; i++) {
        const struct lcase *c = &lcases[i];
        struct pol_route r;
        pol_route_defaults(&r);
        int rc = pol_route_parse_methods(&r, c->in);
        cr_expect_eq(rc, c->rc, "'%s'", c->in);
        if (rc == 0) {
            cr_expect_eq(r.n_methods, c->n, "'%s'", c->in);
            cr_expect_str_eq(r.methods[0], c->first);
            if (c->last != NULL)
                cr_expect_str_eq(r.methods[r.n_methods - 1], c->last);
        } else {
            cr_expect_eq(r.n_methods, 10, "'%s': failed parse changed the route", c->in);
        }
    }
}

static struct pol_routes *table(void)
{
    static const struct { const char *name, *prefix, *mode; } rs[] = {
        {"root", "/", "path"},
        {"objects", "/objects", "segments:2"},
        {"deep", "/objects/special", "prefix"},
        {"slash", "/dir/", "segments:3"},
        {"a", "/a", "prefix"},
    };
    struct pol_routes *rt = pol_routes_new();
    cr_assert_not_null(rt);
    for (size_t i = 0; i < sizeof rs / sizeof rs[0]; i++) {
        struct pol_route r;
        char err[128];
        pol_route_defaults(&r);
        snprintf(r.name, sizeof r.name, "%s", rs[i].name);
        r.prefix = (char *)rs[i].prefix;
        cr_assert_eq(pol_route_parse_mode(&r, rs[i].mode), 0);
        cr_assert_eq(pol_routes_add(rt, &r, err, sizeof err), 0, "%s", err);
    }
    return rt;
}

struct rcase { const char *path; const char *route; const char *key; };

static const struct rcase rcases[] = {
    {"/objects/user42/a.txt", "objects", "/objects/user42"},
    {"/objects/user42/dir/a.txt", "objects", "/objects/user42"},
    {"/objects/user42/", "objects", "/objects/user42"},
    {"/objects/user42", "objects", "/objects/user42"},
    {"/objects/", "objects", "/objects/"},                 /* fewer segments: whole path */
    {"/objects", "objects", "/objects"},
    {"/objectsX/a", "root", "/objectsX/a"},                /* not a segment boundary */
    {"/objects/special", "deep", "/objects/special"},      /* longest prefix wins */
    {"/objects/special/x/y", "deep", "/objects/special"},
    {"/objects/specialist/x", "objects", "/objects/specialist"},
    {"/dir/a/b/c/d", "slash", "/dir/a/b"},                 /* prefix ending in '/' */
    {"/dir/", "slash", "/dir/"},
    {"/dir", "root", "/dir"},                               /* "/dir/" does not match "/dir" */
    {"/dirx", "root", "/dirx"},
    {"/a", "a", "/a"},
    {"/a/b", "a", "/a"},
    {"/ab", "root", "/ab"},
    {"/", "root", "/"},
    {"/zzz/yyy", "root", "/zzz/yyy"},
};

Test(route, match_and_resource)
{
    struct pol_routes *rt = table();
    cr_expect_eq(pol_routes_count(rt), 5);
    for (size_t i = 0; i < sizeof rcases / sizeof rcases[0]; i++) {
        const struct rcase *c = &rcases[i];
        const struct pol_route *r = pol_routes_match(rt, c->path, strlen(c->path));
        cr_assert_not_null(r, "%s: no route", c->path);
        cr_expect_str_eq(r->name, c->route, "%s", c->path);
        const char *key;
        size_t klen;
        pol_route_resource(r, c->path, strlen(c->path), &key, &klen);
        cr_expect_eq(klen, strlen(c->key), "%s: key '%.*s'", c->path, (int)klen, key);
        cr_expect(klen == strlen(c->key) && memcmp(key, c->key, klen) == 0, "%s: key '%.*s'",
                  c->path, (int)klen, key);
    }
    pol_routes_free(rt);
}

Test(route, no_match_without_root)
{
    struct pol_routes *rt = pol_routes_new();
    struct pol_route r;
    char err[128];
    pol_route_defaults(&r);
    r.prefix = "/data";
    cr_assert_eq(pol_routes_add(rt, &r, err, sizeof err), 0);
    cr_expect_null(pol_routes_match(rt, "/", 1));
    cr_expect_null(pol_routes_match(rt, "/dat", 4));
    cr_expect_null(pol_routes_match(rt, "/datax", 6));
    cr_expect_not_null(pol_routes_match(rt, "/data", 5));
    cr_expect_not_null(pol_routes_match(rt, "/data/x", 7));
    /* Only len bytes count. */
    cr_expect_null(pol_routes_match(rt, "/data", 4));
    pol_routes_free(rt);
}

Test(route, add_copies_deeply)
{
    struct pol_routes *rt = pol_routes_new();
    struct pol_route r;
    char prefix[32] = "/objects";
    char err[128];
    pol_route_defaults(&r);
    snprintf(r.name, sizeof r.name, "obj");
    r.prefix = prefix;
    cr_assert_eq(pol_route_parse_methods(&r, "PUT"), 0);
    cr_assert_eq(pol_routes_add(rt, &r, err, sizeof err), 0);
    /* Scribble over the caller's copy: the table must not notice. */
    strcpy(prefix, "/changed");
    memset(&r, 0, sizeof r);
    const struct pol_route *g = pol_routes_get(rt, 0);
    cr_assert_not_null(g);
    cr_expect_str_eq(g->prefix, "/objects");
    cr_expect_str_eq(g->name, "obj");
    cr_expect_eq(g->n_methods, 1);
    cr_expect_str_eq(g->methods[0], "PUT");
    cr_expect_null(pol_routes_get(rt, 1));
    pol_routes_free(rt);
}

struct acase { const char *prefix; const char *mode; int rc; };

Test(route, add_rejects)
{
    static const struct acase cs[] = {
        {NULL, "prefix", -1},         {"", "prefix", -1},        {"objects", "prefix", -1},
        {"/a//b", "prefix", -1},      {"/a/../b", "prefix", -1}, {"/a?x", "prefix", -1},
        {"/a%2Fb", "prefix", -1},     {"/ok", "prefix", 0},      {"/ok", "path", -1},
        {"/o%6B", "prefix", -1},      /* the same prefix once normalised */
        {"/ok/", "prefix", 0},        /* "/ok/" differs from "/ok" */
    };
    struct pol_routes *rt = pol_routes_new();
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        struct pol_route r;
        char err[128] = "";
        pol_route_defaults(&r);
        snprintf(r.name, sizeof r.name, "r%zu", i);
        r.prefix = (char *)cs[i].prefix;
        cr_assert_eq(pol_route_parse_mode(&r, cs[i].mode), 0);
        int rc = pol_routes_add(rt, &r, err, sizeof err);
        cr_expect_eq(rc, cs[i].rc, "case %zu (%s): %s", i, cs[i].prefix ? cs[i].prefix : "NULL",
                     err);
        if (rc != 0)
            cr_expect_neq(err[0], '\0', "case %zu: no message", i);
    }
    cr_expect_eq(pol_routes_count(rt), 2);
    /* A stored prefix is the normalised one. */
    struct pol_route r;
    char err[128];
    pol_route_defaults(&r);
    r.prefix = "/%7eu%3a";
    cr_assert_eq(pol_routes_add(rt, &r, err, sizeof err), 0, "%s", err);
    cr_expect_str_eq(pol_routes_get(rt, 2)->prefix, "/~u:");
    /* segments:0 set by hand is refused too. */
    pol_route_defaults(&r);
    r.prefix = "/seg";
    r.mode = POL_RES_SEGMENTS;
    r.segments = 0;
    cr_expect_eq(pol_routes_add(rt, &r, err, sizeof err), -1);
    pol_routes_free(rt);
}

Test(route, free_accepts_null)
{
    pol_routes_free(NULL);
    cr_expect_eq(pol_routes_count(NULL), 0);
    cr_expect_null(pol_routes_get(NULL, 0));
    cr_expect_null(pol_routes_match(NULL, "/", 1));
}

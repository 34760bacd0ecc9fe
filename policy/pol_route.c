/* pol_route: the route table, resource keys and request-path normalisation.
 * The table owns deep copies of the configured routes. Normalisation turns
 * every spelling of a path that a decoding upstream would treat as the same
 * object into one string, and refuses spellings that could name two objects
 * (dot segments, empty segments, escaped slashes, backslashes, controls), so
 * that a stale writer cannot slip past the check by writing the same object
 * under another name. Pure: no I/O. */
#include "pol_route.h"

#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "pol_chars.h"

struct pol_routes {
    struct pol_route *v;  /* each v[i].prefix is owned */
    size_t n, cap;
};

struct pol_routes *pol_routes_new(void)
{
    return calloc(1, sizeof(struct pol_routes));
}

void pol_routes_free(struct pol_routes *rt)
{
    if (rt == NULL)
        return;
    for (size_t i = 0; i < rt->n; i++)
        pol_route_release(&rt->v[i]);
    free(rt->v);
    free(rt);
}

void pol_route_defaults(struct pol_route *r)
{
    memset(r, 0, sizeof *r);
    r->mode = POL_RES_PREFIX;
    r->segments = 0;
    r->missing_allow = 0;
    r->semantics = POL_PATH_NORMALIZED;
    r->error_format = POL_ERRFMT_JSON;
    (void)pol_route_parse_methods(r, POL_ROUTE_DEFAULT_METHODS);
}

void pol_route_release(struct pol_route *r)
{
    if (r == NULL)
        return;
    free(r->prefix);
    free(r->verify);
    free(r->lock_name);
    r->prefix = r->verify = r->lock_name = NULL;
}

int pol_route_check_lock_name(const char *tmpl, char *err, size_t errlen)
{
    const char *at = strstr(tmpl, POL_LOCK_NAME_VAR);
    size_t vl = strlen(POL_LOCK_NAME_VAR);

    if (at == NULL || strstr(at + vl, POL_LOCK_NAME_VAR) != NULL) {
        snprintf(err, errlen, "must hold %s exactly once", POL_LOCK_NAME_VAR);
        return -1;
    }
    for (const char *p = tmpl; *p != '\0'; p++) {
        if (p == at) {
            p += vl - 1;
            continue;
        }
        if (*p == '{' || *p == '}') {
            snprintf(err, errlen, "only %s may be in braces", POL_LOCK_NAME_VAR);
            return -1;
        }
    }
    return 0;
}

long pol_route_lock_name(const struct pol_route *r, const char *key, size_t klen, char *out,
                         size_t cap)
{
    const char *t = r != NULL ? r->lock_name : NULL;
    const char *at;
    size_t pre, post, vl = strlen(POL_LOCK_NAME_VAR);

    if (t == NULL || (at = strstr(t, POL_LOCK_NAME_VAR)) == NULL) {
        pre = post = 0;
        at = t = "";
    } else {
        pre = (size_t)(at - t);
        post = strlen(at + vl);
    }
    if (klen > (size_t)LONG_MAX / 2 || pre + klen + post >= cap)
        return -1;
    memcpy(out, t, pre);
    memcpy(out + pre, key, klen);
    if (post > 0)
        memcpy(out + pre + klen, at + vl, post);
    out[pre + klen + post] = '\0';
    return (long)(pre + klen + post);
}

int pol_route_parse_mode(struct pol_route *r, const char *text)
{
    unsigned long n = 0;

    if (r == NULL || text == NULL)
        return -1;
    if (strcmp(text, "prefix") == 0) {
        r->mode = POL_RES_PREFIX;
        r->segments = 0;
        return 0;
    }
    if (strcmp(text, "path") == 0) {
        r->mode = POL_RES_PATH;
        r->segments = 0;
        return 0;
    }
    if (strncmp(text, "segments:", 9) != 0)
        return -1;
    text += 9;
    /* 1*DIGIT without leading zeros, N >= 1, bounded so it fits an unsigned. */
    if (text[0] < '1' || text[0] > '9')
        return -1;
    for (const char *p = text; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        n = n * 10 + (unsigned long)(*p - '0');
        if (n > 65535)
            return -1;
    }
    r->mode = POL_RES_SEGMENTS;
    r->segments = (unsigned)n;
    return 0;
}

int pol_route_parse_methods(struct pol_route *r, const char *text)
{
    char methods[POL_ROUTE_METHODS_MAX][POL_METHOD_MAX];
    unsigned n = 0;
    const char *p = text;

    if (r == NULL || text == NULL)
        return -1;
    memset(methods, 0, sizeof methods);
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            break;
        const char *b = p;
        while (*p != '\0' && *p != ' ' && *p != '\t') {
            if (!pol_chars_is_tchar((unsigned char)*p))
                return -1;
            p++;
        }
        size_t len = (size_t)(p - b);
        if (len >= POL_METHOD_MAX)
            return -1;
        int dup = 0;
        for (unsigned i = 0; i < n; i++)
            if (strlen(methods[i]) == len && memcmp(methods[i], b, len) == 0)
                dup = 1;
        if (dup)
            continue;
        if (n == POL_ROUTE_METHODS_MAX)
            return -1;
        memcpy(methods[n], b, len);
        n++;
    }
    if (n == 0)
        return -1;
    memcpy(r->methods, methods, sizeof methods);
    r->n_methods = n;
    return 0;
}

static int route_valid(const struct pol_route *r, char *err, size_t errlen)
{
    if (memchr(r->name, '\0', sizeof r->name) == NULL) {
        snprintf(err, errlen, "route name too long");
        return -1;
    }
    if (r->prefix == NULL || r->prefix[0] != '/') {
        snprintf(err, errlen, "route %s: prefix missing or not starting with '/'", r->name);
        return -1;
    }
    if (r->mode != POL_RES_PREFIX && r->mode != POL_RES_PATH && r->mode != POL_RES_SEGMENTS) {
        snprintf(err, errlen, "route %s: bad resource mode", r->name);
        return -1;
    }
    if (r->semantics != POL_PATH_NORMALIZED && r->semantics != POL_PATH_OPAQUE) {
        snprintf(err, errlen, "route %s: bad path semantics", r->name);
        return -1;
    }
    if (r->error_format != POL_ERRFMT_JSON && r->error_format != POL_ERRFMT_S3) {
        snprintf(err, errlen, "route %s: bad error format", r->name);
        return -1;
    }
    if (r->mode == POL_RES_SEGMENTS && r->segments < 1) {
        snprintf(err, errlen, "route %s: segments must be >= 1", r->name);
        return -1;
    }
    if (r->n_methods > POL_ROUTE_METHODS_MAX) {
        snprintf(err, errlen, "route %s: too many methods", r->name);
        return -1;
    }
    for (unsigned i = 0; i < r->n_methods; i++) {
        if (memchr(r->methods[i], '\0', POL_METHOD_MAX) == NULL || r->methods[i][0] == '\0') {
            snprintf(err, errlen, "route %s: bad method", r->name);
            return -1;
        }
    }
    if (r->lock_name != NULL) {
        char why[96];
        if (pol_route_check_lock_name(r->lock_name, why, sizeof why) != 0) {
            snprintf(err, errlen, "route %s: lock_name %s", r->name, why);
            return -1;
        }
    }
    if ((r->require_live_lease || r->lock_name != NULL) && r->verify == NULL) {
        snprintf(err, errlen, "route %s: %s needs verify = URL", r->name,
                 r->require_live_lease ? "require_live_lease" : "lock_name");
        return -1;
    }
    return 0;
}

int pol_routes_add(struct pol_routes *rt, const struct pol_route *r, char *err, size_t errlen)
{
    char *prefix = NULL;
    size_t plen;
    long nl;
    int rc = -1;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (rt == NULL || r == NULL) {
        snprintf(err, errlen, "no route");
        goto out;
    }
    if (route_valid(r, err, errlen) != 0)
        goto out;
    /* Stored normalised so that it compares with normalised request paths;
     * a prefix that could not be a request path could never match. */
    plen = strlen(r->prefix);
    prefix = malloc(plen * 3 + 1);
    if (prefix == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    nl = pol_path_normalize(r->prefix, plen, prefix, plen * 3 + 1);
    if (nl < 0 || memchr(r->prefix, '?', plen) != NULL) {
        snprintf(err, errlen, "route %s: prefix '%s' is not a valid path", r->name, r->prefix);
        goto out;
    }
    for (size_t i = 0; i < rt->n; i++) {
        if (strcmp(rt->v[i].prefix, prefix) == 0) {
            snprintf(err, errlen, "route %s: duplicate prefix '%s' (route %s)", r->name,
                     prefix, rt->v[i].name);
            goto out;
        }
    }
    if (rt->n == rt->cap) {
        size_t ncap = rt->cap ? rt->cap * 2 : 8;
        struct pol_route *nv = realloc(rt->v, ncap * sizeof *nv);
        if (nv == NULL) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        rt->v = nv;
        rt->cap = ncap;
    }
    rt->v[rt->n] = *r;
    rt->v[rt->n].prefix = prefix;
    rt->v[rt->n].verify = r->verify != NULL ? strdup(r->verify) : NULL;
    rt->v[rt->n].lock_name = r->lock_name != NULL ? strdup(r->lock_name) : NULL;
    prefix = NULL;
    if ((r->verify != NULL && rt->v[rt->n].verify == NULL) ||
        (r->lock_name != NULL && rt->v[rt->n].lock_name == NULL)) {
        pol_route_release(&rt->v[rt->n]);
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    rt->n++;
    rc = 0;
out:
    free(prefix);
    return rc;
}

size_t pol_routes_count(const struct pol_routes *rt)
{
    return rt ? rt->n : 0;
}

const struct pol_route *pol_routes_get(const struct pol_routes *rt, size_t i)
{
    return (rt != NULL && i < rt->n) ? &rt->v[i] : NULL;
}

static int prefix_matches(const char *prefix, size_t plen, const char *path, size_t len)
{
    if (plen > len || memcmp(prefix, path, plen) != 0)
        return 0;
    /* Segment boundary: "/a" must not match "/ab". */
    return plen == len || prefix[plen - 1] == '/' || path[plen] == '/';
}

const struct pol_route *pol_routes_match(const struct pol_routes *rt, const char *path, size_t len)
{
    const struct pol_route *best = NULL;
    size_t best_len = 0;

    if (rt == NULL || path == NULL)
        return NULL;
    for (size_t i = 0; i < rt->n; i++) {
        size_t plen = strlen(rt->v[i].prefix);
        if ((best == NULL || plen > best_len) && prefix_matches(rt->v[i].prefix, plen, path, len)) {
            best = &rt->v[i];
            best_len = plen;
        }
    }
    return best;
}

int pol_route_is_fenced(const struct pol_route *r, const char *method, size_t len)
{
    if (r == NULL || method == NULL)
        return 0;
    for (unsigned i = 0; i < r->n_methods && i < POL_ROUTE_METHODS_MAX; i++)
        if (strlen(r->methods[i]) == len && memcmp(r->methods[i], method, len) == 0)
            return 1;
    return 0;
}

void pol_route_resource(const struct pol_route *r, const char *path, size_t len,
                        const char **key, size_t *keylen)
{
    switch (r->mode) {
    case POL_RES_PREFIX:
        *key = r->prefix;
        *keylen = strlen(r->prefix);
        return;
    case POL_RES_SEGMENTS: {
        /* The key ends before the slash that opens segment N+1, so
         * "/o/u/" and "/o/u/a" share the key "/o/u" under segments:2. */
        unsigned seen = 0;
        for (size_t i = 0; i < len; i++) {
            if (path[i] == '/' && seen++ == r->segments) {
                *key = path;
                *keylen = i;
                return;
            }
        }
        break;
    }
    case POL_RES_PATH:
        break;
    }
    *key = path;
    *keylen = len;
}

/* Whether the escape of c is decoded. Every printable ASCII byte is, except
 * the ones whose escaped and raw forms mean different things to any URI
 * parser ('%', '?', '#'; '/' and '\\' are refused before this). Decoding more
 * than the unreserved set of RFC 3986 is deliberate: storage upstreams
 * (nginx, S3, WebDAV) decode the whole path, so "/a:b" and "/a%3Ab" are one
 * object and must be one resource key. Decoding never lengthens the path. */
static int decodes(unsigned char c)
{
    return c > 0x20 && c < 0x7F && c != '%' && c != '?' && c != '#';
}

/* Ends the segment that started at out[seg]: refuses "", "." and "..". The
 * final segment of the path may be empty (a single trailing slash). */
static int segment_ok(const char *out, size_t seg, size_t end, int last)
{
    size_t n = end - seg;
    if (n == 0)
        return last;
    if (n == 1 && out[seg] == '.')
        return 0;
    if (n == 2 && out[seg] == '.' && out[seg + 1] == '.')
        return 0;
    return 1;
}

long pol_path_normalize(const char *target, size_t len, char *out, size_t outcap)
{
    const char *hex = pol_chars_hex_upper;
    size_t plen, o = 0, seg = 1;

    if (target == NULL || out == NULL || outcap == 0 || len == 0 || target[0] != '/')
        return -1;
    for (plen = 0; plen < len && target[plen] != '?'; plen++)
        ;
    /* A fragment never belongs in a request target. */
    if (memchr(target, '#', len) != NULL)
        return -1;
    if (outcap < 2)
        return -1;
    out[o++] = '/';
    for (size_t i = 1; i < plen; i++) {
        unsigned char c = (unsigned char)target[i];
        if (c == '/') {
            if (!segment_ok(out, seg, o, 0))
                return -1;
            if (o + 1 >= outcap)
                return -1;
            out[o++] = '/';
            seg = o;
            continue;
        }
        int raw = 1;
        if (c == '%') {
            int h, l;
            if (i + 2 >= plen)
                return -1;
            h = pol_chars_hex((unsigned char)target[i + 1]);
            l = pol_chars_hex((unsigned char)target[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            c = (unsigned char)(h * 16 + l);
            i += 2;
            /* An escaped '/' or '\\' could be a separator upstream, NUL and
             * controls could cut or bend the path: refuse them. */
            if (c == '/' || c == '\\' || c < 0x20 || c == 0x7F)
                return -1;
            raw = 0;
        } else if (c == '\\' || c < 0x20 || c == 0x7F || c == '#') {
            return -1;
        }
        /* Kept as one byte: raw printable ASCII and decodable escapes. Raw
         * space and raw bytes >= 0x80 (not valid in a target, but possible
         * in a configured prefix) become escapes so they meet their
         * escaped spellings; only they make the output longer. */
        if ((raw && c > 0x20 && c < 0x7F) || (!raw && decodes(c))) {
            if (o + 1 >= outcap)
                return -1;
            out[o++] = (char)c;
        } else {
            if (o + 3 >= outcap)
                return -1;
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    if (!segment_ok(out, seg, o, 1))
        return -1;
    out[o] = '\0';
    return (long)o;
}

/* ---- routing raw targets (S5) ---- */

/* How resolve() reads a path: the ways a store may resolve one. */
#define RV_SLASH     0x01u /* %2F separates segments */
#define RV_BACKSLASH 0x02u /* '\\' and %5C separate segments */
#define RV_NUL       0x04u /* the path ends at a decoded NUL (C strings) */
#define RV_COLLAPSE  0x08u /* empty segments are merged before dot segments go */
#define RV_RESOLVE   0x10u /* file-system resolution: dot segments removed
                              (".." never above the root), then empty
                              segments merged, as the kernel would */
#define RV_READINGS  0x10u /* RV_RESOLVE with every subset of the four above */

/* Appends byte c as it appears in a key path: printable ASCII raw except the
 * bytes whose raw form means something else ('%', '?', '#', '/'), the rest
 * as upper-case %XX. The same spelling as pol_path_normalize()'s output. */
static int put_byte(char *out, size_t *o, size_t cap, unsigned char c)
{
    if (c > 0x20 && c < 0x7F && c != '%' && c != '?' && c != '#' && c != '/') {
        if (*o + 1 >= cap)
            return -1;
        out[(*o)++] = (char)c;
        return 0;
    }
    if (*o + 3 >= cap)
        return -1;
    out[(*o)++] = '%';
    out[(*o)++] = pol_chars_hex_upper[c >> 4];
    out[(*o)++] = pol_chars_hex_upper[c & 15];
    return 0;
}

/* Ends the segment out[*seg..*o) at a separator (last = 0) or at the end of
 * the path (last = 1), resolving dot and empty segments per how. */
static int end_segment(char *out, size_t *o, size_t *seg, size_t cap, unsigned how, int last)
{
    size_t n = *o - *seg;

    if (how & RV_RESOLVE) {
        if (n == 1 && out[*seg] == '.') {
            *o = *seg; /* "." goes; its separator stays */
            return 0;
        }
        if (n == 2 && out[*seg] == '.' && out[*seg + 1] == '.') {
            /* ".." takes the previous segment with it; the root stays. */
            *o = *seg;
            if (*seg > 1) {
                *o = *seg - 1;
                while (*o > 0 && out[*o - 1] != '/')
                    (*o)--;
            }
            *seg = *o;
            return 0;
        }
        if (n == 0 && (how & RV_COLLAPSE))
            return 0;
    }
    if (last)
        return 0;
    if (*o + 1 >= cap)
        return -1;
    out[(*o)++] = '/';
    *seg = *o;
    return 0;
}

/* Reads the path t[0..plen) (t[0] == '/', no query) the way how says into
 * out. Returns the length, or -1 for a bad escape or no room. */
static long resolve(const char *t, size_t plen, unsigned how, char *out, size_t cap)
{
    size_t o = 1, seg = 1;

    if (cap < 2)
        return -1;
    out[0] = '/';
    for (size_t i = 1; i < plen; i++) {
        unsigned char c = (unsigned char)t[i];
        int sep;

        if (c == '%') {
            int h, l;
            if (i + 2 >= plen)
                return -1;
            h = pol_chars_hex((unsigned char)t[i + 1]);
            l = pol_chars_hex((unsigned char)t[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            c = (unsigned char)(h * 16 + l);
            i += 2;
            if (c == 0 && (how & RV_NUL))
                break;
            sep = (c == '/' && (how & RV_SLASH)) || (c == '\\' && (how & RV_BACKSLASH));
        } else {
            sep = c == '/' || (c == '\\' && (how & RV_BACKSLASH));
        }
        if (sep ? end_segment(out, &o, &seg, cap, how, 0) != 0 : put_byte(out, &o, cap, c) != 0)
            return -1;
    }
    if (end_segment(out, &o, &seg, cap, how, 1) != 0)
        return -1;
    if (how & RV_RESOLVE) {
        /* What is left of empty segments merges, as in the kernel. */
        size_t w = 1;
        for (size_t r = 1; r < o; r++)
            if (!(out[r] == '/' && out[w - 1] == '/'))
                out[w++] = out[r];
        o = w;
    }
    out[o] = '\0';
    return (long)o;
}

static size_t path_len(const char *target, size_t len)
{
    size_t plen;

    for (plen = 0; plen < len && target[plen] != '?'; plen++)
        ;
    return plen;
}

long pol_path_opaque(const char *target, size_t len, char *out, size_t outcap)
{
    if (target == NULL || out == NULL || len == 0 || target[0] != '/' ||
        memchr(target, '#', len) != NULL)
        return -1;
    return resolve(target, path_len(target, len), RV_SLASH, out, outcap);
}

enum pol_target_result pol_routes_route_target(const struct pol_routes *rt, const char *target,
                                               size_t len, char *out, size_t outcap,
                                               size_t *out_len, const struct pol_route **route)
{
    const struct pol_route *r;
    size_t plen;
    long n;

    *route = NULL;
    *out_len = 0;
    if (target == NULL || out == NULL || len == 0 || target[0] != '/' ||
        memchr(target, '#', len) != NULL)
        return POL_TARGET_MALFORMED;
    plen = path_len(target, len);
    /* S5, both modes: a path with one spelling is matched as it is. */
    n = pol_path_normalize(target, len, out, outcap);
    if (n >= 0) {
        *route = pol_routes_match(rt, out, (size_t)n);
        *out_len = (size_t)n;
        return POL_TARGET_OK;
    }
    /* S5, normalized routes: a spelling a file-system store could resolve
     * into one of them is refused there, in whichever way it resolves. */
    for (unsigned how = 0; how < RV_READINGS; how++) {
        n = resolve(target, plen, how | RV_RESOLVE, out, outcap);
        if (n < 0)
            return POL_TARGET_MALFORMED;
        r = pol_routes_match(rt, out, (size_t)n);
        if (r != NULL && r->semantics == POL_PATH_NORMALIZED) {
            *route = r;
            return POL_TARGET_AMBIGUOUS;
        }
    }
    /* S5, opaque routes: the store resolves nothing but %-escapes. */
    n = pol_path_opaque(target, len, out, outcap);
    if (n < 0)
        return POL_TARGET_MALFORMED;
    r = pol_routes_match(rt, out, (size_t)n);
    if (r != NULL && r->semantics == POL_PATH_NORMALIZED) {
        *route = r;
        return POL_TARGET_AMBIGUOUS;
    }
    *route = r;
    *out_len = (size_t)n;
    return POL_TARGET_OK;
}

/* pol_route: the route table. A route maps a path prefix to a way of naming
 * the fenced resource, the methods that must carry a token and what to do when
 * none is given. Also owns request-path normalisation, so that the resource
 * key the proxy checks is the object the upstream will write. Pure: no I/O. */
#ifndef POL_ROUTE_H
#define POL_ROUTE_H

#include <stddef.h>

#define POL_ROUTE_NAME_MAX 64
#define POL_ROUTE_METHODS_MAX 16
#define POL_METHOD_MAX 32

enum pol_resource_mode {
    POL_RES_PREFIX,   /* the key is the route prefix */
    POL_RES_PATH,     /* the key is the whole (normalised) path */
    POL_RES_SEGMENTS  /* the key is the first N path segments */
};

/* One route as configured. Plain data: pol_routes_add() copies it. */
struct pol_route {
    char name[POL_ROUTE_NAME_MAX];
    char *prefix;                 /* normalised path prefix, starts with '/' */
    enum pol_resource_mode mode;
    unsigned segments;            /* N for POL_RES_SEGMENTS, >= 1 */
    unsigned n_methods;
    char methods[POL_ROUTE_METHODS_MAX][POL_METHOD_MAX]; /* fenced methods */
    int missing_allow;            /* 1: missing_token = allow */
};

struct pol_routes; /* opaque table */

/* Returns an empty table, or NULL on allocation failure. Free with
 * pol_routes_free(). */
struct pol_routes *pol_routes_new(void);

/* Frees the table and every route in it. Accepts NULL. */
void pol_routes_free(struct pol_routes *rt);

/* Sets r (borrowed) to defaults: mode prefix, methods PUT POST PATCH DELETE,
 * missing_token reject; name and prefix empty. */
void pol_route_defaults(struct pol_route *r);

/* Parses "prefix" | "path" | "segments:N" into r. Returns 0 or -1. */
int pol_route_parse_mode(struct pol_route *r, const char *text);

/* Parses a space-separated method list ("PUT POST") into r. Returns 0 or -1
 * (empty list, a method that is not an RFC 9110 token, too many). */
int pol_route_parse_methods(struct pol_route *r, const char *text);

/* Adds a deep copy of r (borrowed). Returns 0, or -1 with a message in err
 * (prefix missing or not starting with '/', duplicate prefix, no memory). */
int pol_routes_add(struct pol_routes *rt, const struct pol_route *r,
                   char *err, size_t errlen);

/* Number of routes, and route i (borrowed; valid while rt lives). */
size_t pol_routes_count(const struct pol_routes *rt);
const struct pol_route *pol_routes_get(const struct pol_routes *rt, size_t i);

/* Longest-prefix match of a normalised path. A prefix matches when the path
 * equals it or continues it at a segment boundary ("/a" matches "/a" and
 * "/a/b", not "/ab"; a prefix ending in '/' matches anything below it).
 * Returns the route (borrowed) or NULL. */
const struct pol_route *pol_routes_match(const struct pol_routes *rt,
                                         const char *path, size_t len);

/* Whether method (len bytes) is one of r's fenced methods (exact, case-sensitive). */
int pol_route_is_fenced(const struct pol_route *r, const char *method, size_t len);

/* The resource key of a normalised path under route r: sets *key and *keylen to a
 * slice of path or of r->prefix (borrowed). With segments:N and a path of
 * fewer segments, the key is the whole path. */
void pol_route_resource(const struct pol_route *r, const char *path, size_t len,
                        const char **key, size_t *keylen);

/* Normalises the path part of an origin-form request target (target up to the
 * first '?' or end) into out (outcap bytes, NUL-terminated): percent-escapes of
 * unreserved characters are decoded so that "/a%62" and "/ab" name the same
 * resource. So are escapes of every other printable ASCII byte but '%', '?'
 * and '#' ("/a%3Ab" is "/a:b": storage upstreams decode the whole path);
 * the escapes kept (%25, %3F, %23, %20, bytes >= 0x80) get upper-case hex.
 * Raw SP and raw bytes >= 0x80 are written as escapes; for any other input
 * the output is never longer than the input, so outcap = len + 1 is enough
 * for a target of printable ASCII. Returns the length, or -1 when the target
 * must be refused as ambiguous: not starting with '/', an empty segment
 * ("//"; a single trailing '/' is fine), a dot segment ("." or ".." after
 * decoding), an escaped '/', '\\', NUL or control byte (raw or escaped), a
 * bad escape, a '#' anywhere, or no room in out. */
long pol_path_normalize(const char *target, size_t len, char *out, size_t outcap);

#endif

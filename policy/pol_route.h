/* pol_route: the route table. A route maps a path prefix to a way of naming
 * the fenced resource, the methods that must carry a token, what to do when
 * none is given, how the store resolves paths (normalized or opaque) and the
 * format of rejection bodies. Also owns request-path normalisation and the
 * routing of raw targets (pol_routes_route_target), so that the resource key
 * the proxy checks is the object the upstream will write (S5). Pure: no I/O. */
#ifndef POL_ROUTE_H
#define POL_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#define POL_ROUTE_NAME_MAX 64
#define POL_ROUTE_METHODS_MAX 16
#define POL_METHOD_MAX 32

enum pol_resource_mode {
    POL_RES_PREFIX,   /* the key is the route prefix */
    POL_RES_PATH,     /* the key is the whole (normalised) path */
    POL_RES_SEGMENTS  /* the key is the first N path segments */
};

/* How the store behind a route resolves a path (config: path_semantics). */
enum pol_path_semantics {
    POL_PATH_NORMALIZED, /* a file-system store (WebDAV, nginx): it removes dot
                            segments, merges slashes, may read '\' or %2F as
                            separators; spellings that could resolve two ways
                            are refused (pol_path_normalize) */
    POL_PATH_OPAQUE      /* an object store (S3): the decoded path is the key,
                            byte for byte; nothing is resolved or refused */
};

/* The format of the rejection bodies of a route (config: error_format). */
enum pol_error_format {
    POL_ERRFMT_JSON, /* application/json, {"error":...} */
    POL_ERRFMT_S3    /* application/xml, <Error><Code>... as S3 SDKs parse */
};

/* The fenced_methods default: every method that writes, WebDAV's included. */
#define POL_ROUTE_DEFAULT_METHODS "PUT POST PATCH DELETE MKCOL COPY MOVE PROPPATCH LOCK UNLOCK"

/* One route as configured. Plain data: pol_routes_add() copies it. */
struct pol_route {
    char name[POL_ROUTE_NAME_MAX];
    char *prefix;                 /* normalised path prefix, starts with '/' */
    enum pol_resource_mode mode;
    unsigned segments;            /* N for POL_RES_SEGMENTS, >= 1 */
    unsigned n_methods;
    char methods[POL_ROUTE_METHODS_MAX][POL_METHOD_MAX]; /* fenced methods */
    int missing_allow;            /* 1: missing_token = allow */
    enum pol_path_semantics semantics; /* normalized (default) or opaque */
    enum pol_error_format error_format; /* json (default) or s3 */
    /* Token verification (config: verify, require_live_lease, lock_name,
     * live_lease_cache). Plain data here: the proxy does the asking. */
    char *verify;                 /* lock backend URL, or NULL: tokens not verified */
    char *lock_name;              /* template with {resource}, or NULL: the key itself */
    int require_live_lease;       /* 1: T == H also needs the lock held now */
    uint64_t live_lease_cache_ms; /* how long a live check may be reused (0: never) */
};

/* The placeholder a lock_name template must hold once. */
#define POL_LOCK_NAME_VAR "{resource}"

struct pol_routes; /* opaque table */

/* Returns an empty table, or NULL on allocation failure. Free with
 * pol_routes_free(). */
struct pol_routes *pol_routes_new(void);

/* Frees the table and every route in it. Accepts NULL. */
void pol_routes_free(struct pol_routes *rt);

/* Sets r (borrowed) to defaults: mode prefix, methods
 * POL_ROUTE_DEFAULT_METHODS, missing_token reject, normalized paths, JSON
 * errors; name and prefix empty. */
void pol_route_defaults(struct pol_route *r);

/* Frees the strings r owns (prefix, verify, lock_name) and NULLs them; for a
 * route being filled in by a parser. Accepts NULL. */
void pol_route_release(struct pol_route *r);

/* Checks a lock_name template: POL_LOCK_NAME_VAR exactly once, no other
 * '{' or '}'. Returns 0, or -1 with the reason in err. */
int pol_route_check_lock_name(const char *tmpl, char *err, size_t errlen);

/* The lock name for resource key (klen bytes) under r: r->lock_name with
 * POL_LOCK_NAME_VAR replaced by the key, or the key itself. Written to out
 * (cap bytes, NUL-terminated). Returns its length, or -1 when it does not
 * fit. */
long pol_route_lock_name(const struct pol_route *r, const char *key, size_t klen, char *out,
                         size_t cap);

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

/* The key path of target (up to '?' or len) on an opaque route: every
 * %-escape decoded once, %2F to '/', nothing else resolved; printable ASCII
 * but '%', '?', '#' and '/' written raw, every other byte as upper-case %XX
 * (so "%5C" and "\\" meet, as they do in the store). For a target that
 * pol_path_normalize() accepts, the same string. Returns the length, or -1
 * (no leading '/', a bad escape, a '#', no room: len + 1 is enough for
 * printable ASCII). */
long pol_path_opaque(const char *target, size_t len, char *out, size_t outcap);

enum pol_target_result {
    POL_TARGET_OK,        /* *route is the route (NULL: unrouted, pass) and
                             out[0..*out_len) the path its key comes from */
    POL_TARGET_MALFORMED, /* not an origin-form path (no leading '/', a bad
                             %-escape, a '#', out too small): 400 whatever
                             the routes say; *route is NULL */
    POL_TARGET_AMBIGUOUS  /* a spelling that normalized route *route refuses
                             (dot or empty segment, %2F, '\', %5C, control
                             byte) and that could resolve into it: 400 */
};

/* Routes the raw origin-form target (path and query, len bytes, as sent:
 * px_h1's origin slice or a Destination's path) and writes the path the
 * resource key is taken from to out (outcap bytes, NUL-terminated; len + 1 is
 * enough for a target of printable ASCII, 3 * len + 1 for any bytes). The
 * query never takes part. The rule (S5, docs/safety.md):
 *  - A target that pol_path_normalize() accepts is matched on its normalised
 *    form, longest prefix over all routes, whatever their semantics: for such
 *    a path the normalised and the opaque spelling are the same string.
 *  - Any other target is tried in every way a file-system store could
 *    resolve it (%2F a separator or not, '\' and %5C separators or not, the
 *    path cut at a decoded NUL or not, empty segments merged before or after
 *    dot segments are removed, and also not resolved at all): if one of those
 *    readings falls under a normalized route (longest prefix), the target is
 *    AMBIGUOUS for that route. Otherwise it is matched in its opaque form
 *    (%-escapes decoded, %2F as '/', nothing else changed; printable bytes but
 *    '%', '?', '#' and '/' written raw, the rest as upper-case %XX): an opaque
 *    route keeps it as the key path, and a path under no route passes, never
 *    refused for a rule that only a route has.
 * Returns the result; *out_len is set for OK. */
enum pol_target_result pol_routes_route_target(const struct pol_routes *rt, const char *target,
                                               size_t len, char *out, size_t outcap,
                                               size_t *out_len, const struct pol_route **route);

#endif

/* pol_uri: the URIs a request carries besides its origin-form target: the
 * WebDAV Destination field (RFC 4918 10.3) of COPY and MOVE, and the
 * absolute-form target (RFC 9112 3.2.2). Both must name this proxy; what is
 * left is an origin-form path that the caller routes and classifies like a
 * target (pol_routes_route_target). Pure: no I/O, no allocation. */
#ifndef POL_URI_H
#define POL_URI_H

#include <stddef.h>

/* Whether authority (host[":" port], len bytes, from a URI whose scheme has
 * default_port) names the same server as self, a Host field value (the name
 * the client used for this proxy; a missing port there also means
 * default_port). Hosts compare case-insensitively and byte for byte
 * otherwise (no DNS, no %-decoding: another spelling of the same host is
 * "not this proxy", which the callers refuse); ports compare as numbers.
 * Returns 1 or 0 (0 as well for a malformed authority or self). */
int pol_uri_authority_is(const char *authority, size_t len, unsigned default_port,
                         const char *self, size_t self_len);

/* Parses a Destination field value (v, n bytes, OWS already trimmed; borrowed)
 * of a request whose Host field value is self. Accepted:
 *  - an absolute URI "http://" or "https://" (scheme in any case) whose
 *    authority names self (pol_uri_authority_is, default port 80 or 443),
 *    with a non-empty path;
 *  - a path-absolute ("/a/b", not "//..."), with or without "?query".
 * Refused (-1, answer 400): another host or port, userinfo, another scheme, a
 * relative or network-path reference, a fragment, an empty value, and any
 * byte that cannot be in a URI (SP, controls, bytes >= 0x80, '"<>\\^`{|}').
 * On 0, *path and *path_len are the origin-form part ("/path?query"), a
 * slice of v, to be routed and classified like a request target. */
int pol_uri_destination(const char *v, size_t n, const char *self, size_t self_len,
                        const char **path, size_t *path_len);

/* The same check for an absolute-form request target t (n bytes, as px_h1
 * accepted it: "http[s]://authority/path?query"): 0 and the origin-form part
 * when the authority names self, else -1 (answer 400). */
int pol_uri_absolute_target(const char *t, size_t n, const char *self, size_t self_len,
                            const char **path, size_t *path_len);

#endif

/* px_rewrite: the heads the proxy sends, rebuilt from parsed heads. Pure:
 * no I/O, no libevent, no connection state; it takes plain data and writes
 * into a caller's buffer of at least the size its *_max() function gives,
 * so it is tested from tables (tests/proxy/test_rewrite.c). What it owns is
 * the rewrite policy: hop-by-hop and framing fields replaced by the proxy's
 * own, X-Forwarded-For and Via (every field of a list joined, then ours),
 * X-Forwarded-Proto, X-Request-Id, the fencing
 * token in canonical form once it has been checked, and a Location that
 * points at the upstream turned into a path on the proxy. */
#ifndef PX_REWRITE_H
#define PX_REWRITE_H

#include <stddef.h>
#include <stdint.h>

struct px_h1_head;

/* What the request head sent upstream is made of. Every pointer is
 * borrowed for the call. */
struct px_rw_request {
    const struct px_h1_head *h;    /* the client's parsed head */
    const char *token_field;       /* the configured token field name */
    size_t token_field_len;
    int token_checked;             /* the token passed the fence: write it canonically */
    uint64_t token;
    const char *peer_ip;           /* appended to X-Forwarded-For */
    const char *request_id;        /* X-Request-Id */
    const char *proto;             /* X-Forwarded-Proto; NULL: "http" */
    int relay_expect;              /* pass Expect on (the upstream answers it) */
};

/* What the response head sent to the client is made of. */
struct px_rw_response {
    const struct px_h1_head *h;    /* the upstream's parsed head */
    const char *request_id;
    const char *upstream_origin;   /* "http://host:port", for Location */
    size_t upstream_origin_len;
    int chunked_out;               /* the body is re-chunked for the client */
    int close;                     /* say Connection: close */
    int client_11;                 /* the client speaks HTTP/1.1 */
};

/* Upper bounds of the bytes the writers below produce. */
size_t px_rw_request_max(const struct px_rw_request *rq);
size_t px_rw_response_max(const struct px_rw_response *rs);

/* Write the head into out (at least the bound above) and return its length. */
size_t px_rw_request_head(const struct px_rw_request *rq, char *out);
size_t px_rw_response_head(const struct px_rw_response *rs, char *out);

/* The Location rule alone: the value a Location or Content-Location field
 * of v (vlen bytes) gets, as a slice into v (or "/"), through out and outlen. */
void px_rw_location(const char *origin, size_t olen, const char *v, size_t vlen, const char **out,
                    size_t *outlen);

#endif

/* pol_decide: the fencing decision. Pure functions over the request facts, the
 * route table and the current highest token of the resource; they say whether
 * to pass, check, accept, advance or reject, and build the exact rejection
 * response. No I/O, no clock. */
#ifndef POL_DECIDE_H
#define POL_DECIDE_H

#include <stddef.h>
#include <stdint.h>

struct pol_routes;
struct pol_route;

enum pol_verdict {
    POL_PASS,       /* no route matches: forward unchecked */
    POL_UNFENCED,   /* routed, no token, not required: forward unchecked */
    POL_CHECK,      /* routed, a well-formed token: compare with the highest */
    POL_MISSING,    /* fenced method without a token, missing_token = reject: 428 */
    POL_MALFORMED,  /* bad token, or several token fields: 400 */
    POL_STALE,      /* token < highest: 409 */
    POL_ACCEPT,     /* token == highest: forward */
    POL_ADVANCE,    /* token > highest: record, then forward */
    POL_BAD_TARGET, /* the target (or Destination) is a spelling that its
                       normalized route refuses (POL_TARGET_AMBIGUOUS): 400 */
    POL_UNVERIFIED  /* token > highest (or, require_live_lease, == highest) that the
                       route's lock backend does not confirm as the holder's: 403 */
};

/* What the proxy knows of a request once its head is parsed. Borrowed. */
struct pol_facts {
    const char *method;  size_t method_len;
    const char *path;    size_t path_len;   /* the key path: pol_path_normalize()'s
                                               or pol_routes_route_target()'s output */
    unsigned token_fields;                  /* how many token header fields */
    const char *token;   size_t token_len;  /* the first one's value, if any */
};

struct pol_decision {
    enum pol_verdict verdict;
    const struct pol_route *route;  /* NULL for POL_PASS; borrowed from the table */
    const char *resource;           /* borrowed slice of facts->path or route prefix */
    size_t resource_len;
    uint64_t token;                 /* valid for CHECK, STALE, ACCEPT, ADVANCE */
    uint64_t highest;               /* valid once pol_decide_check() ran */
};

/* First step, from the head alone: route, resource, token grammar. Sets
 * d->verdict to PASS, UNFENCED, CHECK, MISSING or MALFORMED. Matches f->path
 * in rt (pol_routes_match): for paths from pol_path_normalize(). */
void pol_decide_classify(const struct pol_routes *rt, const struct pol_facts *f,
                         struct pol_decision *d);

/* The same with the route already chosen (route may be NULL: PASS), for a
 * path that pol_routes_route_target() returned with that route. */
void pol_decide_classify_route(const struct pol_route *route, const struct pol_facts *f,
                               struct pol_decision *d);

/* Routes and classifies in one step from a raw origin-form target (or a
 * Destination's path: pol_uri_destination), target[0..len): f->path is
 * ignored; the key path is written to buf (cap bytes: len + 1 is enough for
 * printable ASCII) and d->resource points into buf or into the route's
 * prefix, so buf must outlive d. Returns 0 with d->verdict PASS, UNFENCED,
 * CHECK, MISSING, MALFORMED or BAD_TARGET (d->route the normalized route that
 * refuses the spelling, d->resource its prefix); or -1 when the target is
 * malformed for any route (POL_TARGET_MALFORMED: answer 400 as a framing
 * error; d->verdict is PASS and d->route NULL). See
 * pol_routes_route_target() for the S5 rule. */
int pol_decide_target(const struct pol_routes *rt, const char *target, size_t len, char *buf,
                      size_t cap, const struct pol_facts *f, struct pol_decision *d);

/* Second step for a CHECK: compares d->token with highest and sets
 * d->verdict to STALE, ACCEPT or ADVANCE and d->highest. */
void pol_decide_check(struct pol_decision *d, uint64_t highest);

/* The response for a rejection (MISSING, MALFORMED, STALE, BAD_TARGET, UNVERIFIED). */
struct pol_response {
    int status;                 /* 409, 428, 400 */
    const char *reason;         /* "Conflict", ... (static) */
    const char *content_type;   /* "application/json" or "application/xml" (static) */
    int has_highest;            /* add "Fencing-Token-Highest: <highest>" */
    uint64_t highest;
    char *body;                 /* NUL-terminated; owned: pol_response_clear() */
    size_t body_len;
};

/* Builds the rejection for d into r (overwritten), in the format of
 * d->route (JSON when d->route is NULL). The status codes are the same in
 * every format. JSON (request_id unused, the body of earlier releases):
 *   {"error":"stale_token","resource":"/o/u","token":4,"highest":5}
 *   {"error":"missing_token"|"malformed_token"|"ambiguous_path"|"unverified_token",
 *    "resource":"..."} (unverified_token also carries "token":T)
 * S3 (application/xml; what S3 SDKs parse as an error):
 *   <?xml version="1.0" encoding="UTF-8"?>
<Error><Code>C</Code>
 *   <Message>M</Message><Resource>R</Resource>[<FencingToken>T</FencingToken>
 *   <HighestToken>H</HighestToken>][<RequestId>I</RequestId>]</Error>
 * (one line), C = StaleFencingToken (409; the token elements only here),
 * MissingFencingToken (428), InvalidFencingToken (400), InvalidURI (400,
 * BAD_TARGET) or UnverifiedFencingToken (403, UNVERIFIED); RequestId when request_id is not NULL. Both formats escape
 * the resource and the request id for any byte they may hold (XML: the five
 * entities, and bytes XML cannot carry as %XX). Returns 0, or -1 when d is
 * not a rejection or on allocation failure. request_id is borrowed. */
int pol_decide_response_for(const struct pol_decision *d, const char *request_id,
                            size_t request_id_len, struct pol_response *r);

/* pol_decide_response_for() without a request id. */
int pol_decide_response(const struct pol_decision *d, struct pol_response *r);

/* Frees r->body and zeroes r. Accepts a zeroed r. */
void pol_response_clear(struct pol_response *r);

/* Appends s (len bytes, any bytes) to the growing buffer *buf, *blen, *bcap as
 * the inside of a JSON string: quotes, backslashes and control bytes escaped,
 * invalid UTF-8 bytes written as \u00XX of the byte (so a line never breaks and
 * the JSON stays valid). Returns 0 or -1 (no memory; *buf stays valid).
 * Owned by the caller; free(*buf). Shared with the audit log. */
int pol_json_append_escaped(char **buf, size_t *blen, size_t *bcap,
                            const char *s, size_t len);

/* Length of the valid multi-byte UTF-8 sequence at s (at most n bytes), or
 * 0 when it is not one (ASCII included: callers handle it first). Overlong
 * forms, surrogates and code points past U+10FFFF count as invalid. Sets
 * *cp_out (may be NULL) to the code point. */
size_t pol_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp_out);

#endif

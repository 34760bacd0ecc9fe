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
    POL_ADVANCE     /* token > highest: record, then forward */
};

/* What the proxy knows of a request once its head is parsed. Borrowed. */
struct pol_facts {
    const char *method;  size_t method_len;
    const char *path;    size_t path_len;   /* normalised (pol_path_normalize) */
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
 * d->verdict to PASS, UNFENCED, CHECK, MISSING or MALFORMED. */
void pol_decide_classify(const struct pol_routes *rt, const struct pol_facts *f,
                         struct pol_decision *d);

/* Second step for a CHECK: compares d->token with highest and sets
 * d->verdict to STALE, ACCEPT or ADVANCE and d->highest. */
void pol_decide_check(struct pol_decision *d, uint64_t highest);

/* The response for a rejection (MISSING, MALFORMED, STALE). */
struct pol_response {
    int status;                 /* 409, 428, 400 */
    const char *reason;         /* "Conflict", ... (static) */
    int has_highest;            /* add "Fencing-Token-Highest: <highest>" */
    uint64_t highest;
    char *body;                 /* JSON, NUL-terminated; owned: pol_response_clear() */
    size_t body_len;
};

/* Builds the rejection for d into r (overwritten). The JSON body escapes the
 * resource for any byte it may hold. Returns 0, or -1 when d is not a
 * rejection or on allocation failure. */
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

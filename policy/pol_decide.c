/* pol_decide: the fencing decision and the exact rejection responses of the
 * contract (409 stale, 428 missing, 400 malformed), plus the JSON string
 * escaping shared with the audit log. Pure: the store lookup happens between
 * pol_decide_classify() and pol_decide_check(), in the caller. */
#include "pol_decide.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pol_chars.h"
#include "pol_route.h"
#include "pol_token.h"

void pol_decide_classify(const struct pol_routes *rt, const struct pol_facts *f,
                         struct pol_decision *d)
{
    pol_decide_classify_route(pol_routes_match(rt, f->path, f->path_len), f, d);
}

int pol_decide_target(const struct pol_routes *rt, const char *target, size_t len, char *buf,
                      size_t cap, const struct pol_facts *f, struct pol_decision *d)
{
    const struct pol_route *route;
    struct pol_facts g = *f;
    size_t n;

    memset(d, 0, sizeof *d);
    switch (pol_routes_route_target(rt, target, len, buf, cap, &n, &route)) {
    case POL_TARGET_OK:
        g.path = buf;
        g.path_len = n;
        pol_decide_classify_route(route, &g, d);
        return 0;
    case POL_TARGET_AMBIGUOUS:
        d->verdict = POL_BAD_TARGET;
        d->route = route;
        d->resource = route->prefix;
        d->resource_len = strlen(route->prefix);
        return 0;
    case POL_TARGET_MALFORMED:
        break;
    }
    d->verdict = POL_PASS;
    return -1;
}

void pol_decide_classify_route(const struct pol_route *route, const struct pol_facts *f,
                               struct pol_decision *d)
{
    memset(d, 0, sizeof *d);
    d->route = route;
    if (d->route == NULL) {
        /* Unrouted traffic is not ours to judge: the token is not even parsed. */
        d->verdict = POL_PASS;
        return;
    }
    pol_route_resource(d->route, f->path, f->path_len, &d->resource, &d->resource_len);
    if (f->token_fields > 1) {
        d->verdict = POL_MALFORMED;
        return;
    }
    if (f->token_fields == 1) {
        d->verdict = pol_token_parse(f->token, f->token_len, &d->token) == 0 ? POL_CHECK
                                                                             : POL_MALFORMED;
        return;
    }
    if (pol_route_is_fenced(d->route, f->method, f->method_len) && !d->route->missing_allow)
        d->verdict = POL_MISSING;
    else
        d->verdict = POL_UNFENCED;
}

void pol_decide_check(struct pol_decision *d, uint64_t highest)
{
    d->highest = highest;
    if (d->token < highest)
        d->verdict = POL_STALE;
    else if (d->token == highest)
        d->verdict = POL_ACCEPT;
    else
        d->verdict = POL_ADVANCE;
}

static int buf_reserve(char **buf, size_t *blen, size_t *bcap, size_t more)
{
    if (*bcap - *blen > more)
        return 0;
    size_t ncap = *bcap ? *bcap : 64;
    while (ncap - *blen <= more) {
        if (ncap > SIZE_MAX / 2)
            return -1;
        ncap *= 2;
    }
    char *nb = realloc(*buf, ncap);
    if (nb == NULL)
        return -1;
    *buf = nb;
    *bcap = ncap;
    return 0;
}

static int buf_append(char **buf, size_t *blen, size_t *bcap, const char *s, size_t len)
{
    if (buf_reserve(buf, blen, bcap, len) != 0)
        return -1;
    memcpy(*buf + *blen, s, len);
    *blen += len;
    (*buf)[*blen] = '\0';
    return 0;
}

size_t pol_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp_out)
{
    size_t need;
    uint32_t cp, min;

    if (s[0] >= 0xC2 && s[0] <= 0xDF) {
        need = 2; cp = s[0] & 0x1F; min = 0x80;
    } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        need = 3; cp = s[0] & 0x0F; min = 0x800;
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        need = 4; cp = s[0] & 0x07; min = 0x10000;
    } else {
        return 0;
    }
    if (n < need)
        return 0;
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    if (cp_out != NULL)
        *cp_out = cp;
    return need;
}

int pol_json_append_escaped(char **buf, size_t *blen, size_t *bcap, const char *s, size_t len)
{
    const char *hex = pol_chars_hex_lower;
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    if (buf_reserve(buf, blen, bcap, 0) != 0)
        return -1;
    (*buf)[*blen] = '\0';
    while (i < len) {
        size_t run = i;
        /* Copy runs of plain printable ASCII at once. */
        while (run < len && p[run] >= 0x20 && p[run] < 0x7F && p[run] != '"' && p[run] != '\\')
            run++;
        if (run > i) {
            if (buf_append(buf, blen, bcap, s + i, run - i) != 0)
                return -1;
            i = run;
            continue;
        }
        unsigned char c = p[i];
        char esc[7];
        const char *out = esc;
        size_t olen = 2;
        esc[0] = '\\';
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            if (c >= 0x80) {
                size_t u = pol_utf8_decode(p + i, len - i, NULL);
                if (u > 0) {
                    out = s + i;
                    olen = u;
                    break;
                }
            }
            /* Controls, DEL and each byte of an invalid sequence. */
            esc[1] = 'u'; esc[2] = '0'; esc[3] = '0';
            esc[4] = hex[c >> 4]; esc[5] = hex[c & 15];
            olen = 6;
            break;
        }
        if (buf_append(buf, blen, bcap, out, olen) != 0)
            return -1;
        i += (out == esc) ? 1 : olen;
    }
    return 0;
}

/* Appends s as XML character data: the five predefined entities, and %XX for
 * every byte XML 1.0 cannot carry (controls, DEL, invalid UTF-8) - the
 * resource is a URI path, where %XX is its own spelling of the byte. */
static int xml_append_escaped(char **buf, size_t *blen, size_t *bcap, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    if (buf_reserve(buf, blen, bcap, 0) != 0)
        return -1;
    (*buf)[*blen] = '\0';
    while (i < len) {
        unsigned char c = p[i];
        const char *out = NULL;
        char esc[4];
        size_t olen = 1;

        switch (c) {
        case '&': out = "&amp;"; olen = 5; break;
        case '<': out = "&lt;"; olen = 4; break;
        case '>': out = "&gt;"; olen = 4; break;
        case '"': out = "&quot;"; olen = 6; break;
        case '\'': out = "&apos;"; olen = 6; break;
        default:
            if (c >= 0x20 && c < 0x7F) {
                out = s + i;
            } else if (c >= 0x80 && (olen = pol_utf8_decode(p + i, len - i, NULL)) > 0) {
                out = s + i;
            } else {
                esc[0] = '%';
                esc[1] = pol_chars_hex_upper[c >> 4];
                esc[2] = pol_chars_hex_upper[c & 15];
                out = esc;
                olen = 3;
            }
            break;
        }
        if (buf_append(buf, blen, bcap, out, olen) != 0)
            return -1;
        i += (out == s + i) ? olen : 1;
    }
    return 0;
}

/* One rejection per verdict: HTTP status, JSON error id, S3 code, message. */
struct reject_kind {
    int status;
    const char *reason, *json, *s3, *message;
};

static const struct reject_kind *reject_kind(enum pol_verdict v)
{
    static const struct reject_kind stale = {
        409, "Conflict", "stale_token", "StaleFencingToken",
        "The fencing token is lower than the highest token already admitted for this resource"};
    static const struct reject_kind missing = {
        428, "Precondition Required", "missing_token", "MissingFencingToken",
        "This request must carry a fencing token"};
    static const struct reject_kind malformed = {
        400, "Bad Request", "malformed_token", "InvalidFencingToken",
        "The fencing token is not one decimal number from 0 to 18446744073709551615"};
    static const struct reject_kind bad_target = {
        400, "Bad Request", "ambiguous_path", "InvalidURI",
        "The path could name more than one object on this route (dot or empty segment, "
        "escaped slash, backslash or control byte)"};

    static const struct reject_kind unverified = {
        403, "Forbidden", "unverified_token", "UnverifiedFencingToken",
        "The lock service does not confirm this fencing token as the current holder's"};

    switch (v) {
    case POL_UNVERIFIED: return &unverified;
    case POL_STALE: return &stale;
    case POL_MISSING: return &missing;
    case POL_MALFORMED: return &malformed;
    case POL_BAD_TARGET: return &bad_target;
    default: return NULL;
    }
}

static int json_body(const struct pol_decision *d, const struct reject_kind *k, char **buf,
                     size_t *blen, size_t *bcap)
{
    char num[96];

    if (buf_append(buf, blen, bcap, "{\"error\":\"", 10) != 0 ||
        buf_append(buf, blen, bcap, k->json, strlen(k->json)) != 0 ||
        buf_append(buf, blen, bcap, "\",\"resource\":\"", 14) != 0 ||
        pol_json_append_escaped(buf, blen, bcap, d->resource ? d->resource : "",
                                d->resource ? d->resource_len : 0) != 0)
        return -1;
    if (d->verdict == POL_STALE) {
        int n = snprintf(num, sizeof num, "\",\"token\":%" PRIu64 ",\"highest\":%" PRIu64 "}",
                         d->token, d->highest);
        return buf_append(buf, blen, bcap, num, (size_t)n);
    }
    if (d->verdict == POL_UNVERIFIED) {
        int n = snprintf(num, sizeof num, "\",\"token\":%" PRIu64 "}", d->token);
        return buf_append(buf, blen, bcap, num, (size_t)n);
    }
    return buf_append(buf, blen, bcap, "\"}", 2);
}

#define APPEND_LIT(lit) buf_append(buf, blen, bcap, lit, sizeof(lit) - 1)

static int s3_body(const struct pol_decision *d, const struct reject_kind *k, const char *rid,
                   size_t rid_len, char **buf, size_t *blen, size_t *bcap)
{
    char num[128];

    if (APPEND_LIT("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>") != 0 ||
        buf_append(buf, blen, bcap, k->s3, strlen(k->s3)) != 0 ||
        APPEND_LIT("</Code><Message>") != 0 ||
        buf_append(buf, blen, bcap, k->message, strlen(k->message)) != 0 ||
        APPEND_LIT("</Message><Resource>") != 0 ||
        xml_append_escaped(buf, blen, bcap, d->resource ? d->resource : "",
                           d->resource ? d->resource_len : 0) != 0 ||
        APPEND_LIT("</Resource>") != 0)
        return -1;
    if (d->verdict == POL_STALE) {
        int n = snprintf(num, sizeof num,
                         "<FencingToken>%" PRIu64 "</FencingToken><HighestToken>%" PRIu64
                         "</HighestToken>",
                         d->token, d->highest);
        if (buf_append(buf, blen, bcap, num, (size_t)n) != 0)
            return -1;
    }
    if (rid != NULL && (APPEND_LIT("<RequestId>") != 0 ||
                        xml_append_escaped(buf, blen, bcap, rid, rid_len) != 0 ||
                        APPEND_LIT("</RequestId>") != 0))
        return -1;
    return APPEND_LIT("</Error>");
}

int pol_decide_response_for(const struct pol_decision *d, const char *request_id,
                            size_t request_id_len, struct pol_response *r)
{
    const struct reject_kind *k = reject_kind(d->verdict);
    int s3 = d->route != NULL && d->route->error_format == POL_ERRFMT_S3;
    char *buf = NULL;
    size_t blen = 0, bcap = 0;
    int rc = -1;

    memset(r, 0, sizeof *r);
    if (k == NULL)
        goto out;
    if (s3 ? s3_body(d, k, request_id, request_id_len, &buf, &blen, &bcap) != 0
           : json_body(d, k, &buf, &blen, &bcap) != 0)
        goto out;
    r->status = k->status;
    r->reason = k->reason;
    r->content_type = s3 ? "application/xml" : "application/json";
    if (d->verdict == POL_STALE) {
        r->has_highest = 1;
        r->highest = d->highest;
    }
    r->body = buf;
    r->body_len = blen;
    buf = NULL;
    rc = 0;
out:
    free(buf);
    if (rc != 0)
        memset(r, 0, sizeof *r);
    return rc;
}

int pol_decide_response(const struct pol_decision *d, struct pol_response *r)
{
    return pol_decide_response_for(d, NULL, 0, r);
}

void pol_response_clear(struct pol_response *r)
{
    if (r == NULL)
        return;
    free(r->body);
    memset(r, 0, sizeof *r);
}

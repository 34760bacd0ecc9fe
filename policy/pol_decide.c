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
    memset(d, 0, sizeof *d);
    d->route = pol_routes_match(rt, f->path, f->path_len);
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

int pol_decide_response(const struct pol_decision *d, struct pol_response *r)
{
    char *buf = NULL;
    size_t blen = 0, bcap = 0;
    const char *err;
    char num[96];
    int rc = -1;

    memset(r, 0, sizeof *r);
    switch (d->verdict) {
    case POL_STALE:
        r->status = 409; r->reason = "Conflict"; err = "stale_token";
        r->has_highest = 1; r->highest = d->highest;
        break;
    case POL_MISSING:
        r->status = 428; r->reason = "Precondition Required"; err = "missing_token";
        break;
    case POL_MALFORMED:
        r->status = 400; r->reason = "Bad Request"; err = "malformed_token";
        break;
    default:
        goto out;
    }
    if (buf_append(&buf, &blen, &bcap, "{\"error\":\"", 10) != 0 ||
        buf_append(&buf, &blen, &bcap, err, strlen(err)) != 0 ||
        buf_append(&buf, &blen, &bcap, "\",\"resource\":\"", 14) != 0 ||
        pol_json_append_escaped(&buf, &blen, &bcap, d->resource ? d->resource : "",
                                d->resource ? d->resource_len : 0) != 0)
        goto out;
    if (d->verdict == POL_STALE) {
        int n = snprintf(num, sizeof num, "\",\"token\":%" PRIu64 ",\"highest\":%" PRIu64 "}",
                         d->token, d->highest);
        if (buf_append(&buf, &blen, &bcap, num, (size_t)n) != 0)
            goto out;
    } else if (buf_append(&buf, &blen, &bcap, "\"}", 2) != 0) {
        goto out;
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

void pol_response_clear(struct pol_response *r)
{
    if (r == NULL)
        return;
    free(r->body);
    memset(r, 0, sizeof *r);
}

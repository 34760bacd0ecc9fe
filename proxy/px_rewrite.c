/* px_rewrite: see px_rewrite.h. A head is written straight into reserved
 * space: one copy, no formatting, no per-field buffer calls. Everything
 * copied comes from the parsed head (at most head_len bytes); the rest is
 * bounded, hence the *_max() bounds. */
#include "px_rewrite.h"

#include <string.h>
#include <strings.h>

#include "px_http1.h"

struct out {
    char *p;
    size_t len;
};

static void add(struct out *b, const char *s, size_t n)
{
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

#define LIT(b, lit) add((b), (lit), sizeof(lit) - 1)

static void add_u64(struct out *b, uint64_t v)
{
    char tmp[20];
    size_t n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    while (n > 0)
        b->p[b->len++] = tmp[--n];
}

static void add_field(struct out *b, const char *name, size_t nlen, const char *value, size_t vlen)
{
    add(b, name, nlen);
    LIT(b, ": ");
    add(b, value, vlen);
    LIT(b, "\r\n");
}

/* Whether field f is named lit (a string literal), comparing lengths first. */
#define NAME_IS(f, lit) ((f)->name_len == sizeof(lit) - 1 && px_h1_name_is((f), (lit)))

/* Room for what is not copied from the head: the fields we add, their
 * values (request id, peer address, a 20-digit token) and framing; and per
 * copied field, the ": " that a field sent as "name:value" gains. */
#define RW_EXTRA 512

size_t px_rw_request_max(const struct px_rw_request *rq)
{
    return rq->h->head_len + 4 * (size_t)rq->h->n_fields + rq->token_field_len +
           strlen(rq->peer_ip) + strlen(rq->request_id) + RW_EXTRA;
}

size_t px_rw_response_max(const struct px_rw_response *rs)
{
    return rs->h->head_len + 2 * (size_t)rs->h->n_fields + strlen(rs->request_id) + RW_EXTRA;
}

/* Appends the values of every field named lit, in order, joined by ", ":
 * a list field sent as several lines is one list (RFC 9110 5.3). */
static void add_joined(struct out *b, const struct px_h1_head *h, const char *lit, size_t litlen)
{
    for (unsigned i = 0; i < h->n_fields; i++) {
        const struct px_h1_field *f = &h->fields[i];
        if (f->name_len == litlen && px_h1_name_is(f, lit)) {
            add(b, f->value, f->value_len);
            LIT(b, ", ");
        }
    }
}

size_t px_rw_request_head(const struct px_rw_request *rq, char *o)
{
    const struct px_h1_head *h = rq->h;
    struct out b = {o, 0};

    add(&b, h->method, h->method_len);
    LIT(&b, " ");
    if (h->origin != NULL) /* absolute-form goes on as origin-form */
        add(&b, h->origin, h->origin_len);
    else
        add(&b, h->target, h->target_len); /* "*" */
    LIT(&b, " HTTP/1.1\r\n");
    for (unsigned i = 0; i < h->n_fields; i++) {
        const struct px_h1_field *f = &h->fields[i];
        if (f->flags & (PX_H1_F_HOP | PX_H1_F_FRAMING))
            continue;
        if ((f->flags & PX_H1_F_EXPECT) && !rq->relay_expect)
            continue;
        if ((f->flags & PX_H1_F_TRAILER) && h->body != PX_H1_BODY_CHUNKED)
            continue; /* trailers travel only with chunked framing */
        if (NAME_IS(f, "X-Forwarded-For") || NAME_IS(f, "Via") ||
            NAME_IS(f, "X-Forwarded-Proto") || NAME_IS(f, "X-Request-Id"))
            continue; /* written below */
        if (rq->token_checked && f->name_len == rq->token_field_len &&
            px_h1_name_is(f, rq->token_field))
            continue; /* written below in canonical form */
        add_field(&b, f->name, f->name_len, f->value, f->value_len);
    }
    if (rq->token_checked) {
        add(&b, rq->token_field, rq->token_field_len);
        LIT(&b, ": ");
        add_u64(&b, rq->token);
        LIT(&b, "\r\n");
    }
    LIT(&b, "X-Forwarded-For: ");
    add_joined(&b, h, "X-Forwarded-For", 15);
    add(&b, rq->peer_ip, strlen(rq->peer_ip));
    LIT(&b, "\r\nX-Forwarded-Proto: ");
    if (rq->proto != NULL)
        add(&b, rq->proto, strlen(rq->proto));
    else
        LIT(&b, "http");
    LIT(&b, "\r\nVia: ");
    add_joined(&b, h, "Via", 3);
    add(&b, h->minor == 1 ? "1.1" : "1.0", 3);
    LIT(&b, " fenceproxy\r\nX-Request-Id: ");
    add(&b, rq->request_id, strlen(rq->request_id));
    LIT(&b, "\r\n");
    if (h->body == PX_H1_BODY_LENGTH) {
        LIT(&b, "Content-Length: ");
        add_u64(&b, h->content_length);
        LIT(&b, "\r\n");
    } else if (h->body == PX_H1_BODY_CHUNKED) {
        LIT(&b, "Transfer-Encoding: chunked\r\n");
    }
    LIT(&b, "\r\n");
    return b.len;
}

/* A Location that points at the upstream itself ("http://host:port/...",
 * the configured upstream) would send clients around the proxy, past the
 * fencing check: it becomes the path alone, which the client resolves
 * against the proxy (as nginx's "proxy_redirect default" does). Other
 * values pass unchanged. */
void px_rw_location(const char *origin, size_t olen, const char *v, size_t vlen, const char **out,
                    size_t *outlen)
{
    if (vlen >= olen && strncasecmp(v, origin, olen) == 0 && (vlen == olen || v[olen] == '/')) {
        if (vlen == olen) {
            *out = "/";
            *outlen = 1;
        } else {
            *out = v + olen;
            *outlen = vlen - olen;
        }
        return;
    }
    *out = v;
    *outlen = vlen;
}

size_t px_rw_response_head(const struct px_rw_response *rs, char *o)
{
    const struct px_h1_head *h = rs->h;
    struct out b = {o, 0};
    char status[3];

    status[0] = (char)('0' + h->status / 100);
    status[1] = (char)('0' + h->status / 10 % 10);
    status[2] = (char)('0' + h->status % 10);
    LIT(&b, "HTTP/1.1 ");
    add(&b, status, 3);
    LIT(&b, " ");
    add(&b, h->reason, h->reason_len);
    LIT(&b, "\r\n");
    for (unsigned i = 0; i < h->n_fields; i++) {
        const struct px_h1_field *f = &h->fields[i];
        if (f->flags & PX_H1_F_HOP)
            continue;
        if ((f->flags & PX_H1_F_TRAILER) && !rs->chunked_out)
            continue; /* trailers travel only with chunked framing */
        /* A bodiless response keeps its Content-Length (HEAD, 304). */
        if ((f->flags & PX_H1_F_FRAMING) &&
            !(h->body == PX_H1_BODY_NONE && NAME_IS(f, "Content-Length")))
            continue;
        if (NAME_IS(f, "X-Request-Id"))
            continue;
        if (NAME_IS(f, "Location") || NAME_IS(f, "Content-Location")) {
            const char *v;
            size_t vlen;
            px_rw_location(rs->upstream_origin, rs->upstream_origin_len, f->value, f->value_len,
                           &v, &vlen);
            add_field(&b, f->name, f->name_len, v, vlen);
            continue;
        }
        add_field(&b, f->name, f->name_len, f->value, f->value_len);
    }
    LIT(&b, "X-Request-Id: ");
    add(&b, rs->request_id, strlen(rs->request_id));
    LIT(&b, "\r\n");
    if (h->body == PX_H1_BODY_LENGTH) {
        LIT(&b, "Content-Length: ");
        add_u64(&b, h->content_length);
        LIT(&b, "\r\n");
    } else if (rs->chunked_out) {
        LIT(&b, "Transfer-Encoding: chunked\r\n");
    }
    if (rs->close)
        LIT(&b, "Connection: close\r\n");
    else if (!rs->client_11)
        LIT(&b, "Connection: keep-alive\r\n");
    LIT(&b, "\r\n");
    return b.len;
}

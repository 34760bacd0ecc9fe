/* Checks shared by the px_http1 fuzz harnesses: each input is parsed whole,
 * split in two at a point derived from its bytes, and one byte at a time;
 * the runs must agree and every slice must lie inside the input. A broken
 * invariant aborts, which libFuzzer reports as a crash. */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px_http1.h"

#define CHECK(x)                                                                     \
    do {                                                                             \
        if (!(x)) {                                                                  \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #x); \
            abort();                                                                 \
        }                                                                            \
    } while (0)

/* A split point that depends on the input, so the fuzzer explores it. */
static size_t fuzz_split(const uint8_t *d, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ d[i]) * 16777619u;
    return n ? h % (n + 1) : 0;
}

static int in_buf(const char *p, size_t n, const char *buf, size_t len)
{
    return p >= buf && n <= len && (size_t)(p - buf) <= len - n;
}

struct head_run {
    enum px_h1_status st;
    struct px_h1_head h;
    size_t decided_at; /* bytes given when the result was final */
};

static void head_check(const struct px_h1_parser *p, const char *buf, size_t len,
                       const struct head_run *r)
{
    const struct px_h1_head *h = &r->h;

    if (r->st == PX_H1_ERROR) {
        CHECK(h->error != NULL);
        if (p->is_request)
            CHECK(h->error_status == 400 || h->error_status == 414 || h->error_status == 417 ||
                  h->error_status == 431 || h->error_status == 501);
        else
            CHECK(h->error_status == 502);
        return;
    }
    if (r->st != PX_H1_DONE)
        return;
    CHECK(h->head_len >= 4 && h->head_len <= len && h->head_len <= p->lim.max_head);
    CHECK(memcmp(buf + h->head_len - 4, "\r\n\r\n", 4) == 0);
    CHECK(h->n_fields <= p->lim.max_fields);
    CHECK(h->minor == 0 || h->minor == 1);
    CHECK(h->keep_alive == 0 || h->keep_alive == 1);
    CHECK(h->body >= PX_H1_BODY_NONE && h->body <= PX_H1_BODY_EOF);
    if (p->is_request) {
        CHECK(in_buf(h->method, h->method_len, buf, h->head_len) && h->method_len > 0);
        CHECK(in_buf(h->target, h->target_len, buf, h->head_len) && h->target_len > 0);
        CHECK(h->body != PX_H1_BODY_EOF);
        CHECK(h->host == NULL || in_buf(h->host, h->host_len, buf, h->head_len));
        CHECK(h->minor == 0 || h->host != NULL);
    } else {
        CHECK(h->status >= 100 && h->status <= 599);
        CHECK(in_buf(h->reason, h->reason_len, buf, h->head_len));
        CHECK(h->body != PX_H1_BODY_EOF || h->keep_alive == 0);
        CHECK(!p->head_request || h->body == PX_H1_BODY_NONE);
        CHECK(h->expect_continue == 0);
    }
    for (unsigned i = 0; i < h->n_fields; i++) {
        const struct px_h1_field *f = &h->fields[i];
        CHECK(f->name_len > 0 && in_buf(f->name, f->name_len, buf, h->head_len));
        CHECK(in_buf(f->value, f->value_len, buf, h->head_len));
        CHECK(memchr(f->value, '\r', f->value_len) == NULL);
        CHECK(memchr(f->value, '\n', f->value_len) == NULL);
        CHECK(memchr(f->value, '\0', f->value_len) == NULL);
        CHECK(f->value_len == 0 || (f->value[0] != ' ' && f->value[f->value_len - 1] != ' '));
        CHECK(f->name[f->name_len] == ':');
    }
}

/* Parses in[0..len) three ways and checks they agree. Returns the whole run
 * in *out (slices point into in). */
static void head_all(int is_req, int head_req, const struct px_h1_limits *lim, const char *in,
                     size_t len, struct head_run *out)
{
    struct px_h1_parser pw, ps, pb;
    struct head_run s, b;
    size_t split = fuzz_split((const uint8_t *)in, len);
    char *pre = malloc(split ? split : 1);

    CHECK(pre != NULL);
    memset(out, 0, sizeof *out);
    memset(&s, 0, sizeof s);
    memset(&b, 0, sizeof b);

    px_h1_parser_init(&pw, is_req, head_req, lim);
    out->st = px_h1_parse_head(&pw, in, len, &out->h);
    head_check(&pw, in, len, out);
    if (out->st != PX_H1_NEED_MORE) {
        /* A decided parser repeats its answer. */
        struct px_h1_head again;
        CHECK(px_h1_parse_head(&pw, in, len, &again) == out->st);
        CHECK(out->st != PX_H1_DONE || again.head_len == out->h.head_len);
        CHECK(out->st != PX_H1_ERROR || again.error_status == out->h.error_status);
    }

    /* Split: the prefix in its own exactly sized buffer, so reading past
     * the bytes received so far is caught by ASan. */
    px_h1_parser_init(&ps, is_req, head_req, lim);
    memcpy(pre, in, split);
    s.st = px_h1_parse_head(&ps, pre, split, &s.h);
    if (s.st == PX_H1_NEED_MORE)
        s.st = px_h1_parse_head(&ps, in, len, &s.h);
    CHECK(s.st == out->st);

    px_h1_parser_init(&pb, is_req, head_req, lim);
    b.st = PX_H1_NEED_MORE;
    for (size_t k = 1; k <= len && b.st == PX_H1_NEED_MORE; k++) {
        b.st = px_h1_parse_head(&pb, in, k, &b.h);
        b.decided_at = k;
    }
    if (len == 0)
        b.st = px_h1_parse_head(&pb, in, 0, &b.h);
    CHECK(b.st == out->st);
    if (out->st == PX_H1_ERROR) {
        CHECK(s.h.error_status == out->h.error_status && b.h.error_status == out->h.error_status);
        CHECK(strcmp(s.h.error, out->h.error) == 0 && strcmp(b.h.error, out->h.error) == 0);
    }
    if (out->st == PX_H1_DONE) {
        /* DONE comes exactly when the final LF arrives. */
        CHECK(b.decided_at == out->h.head_len);
        CHECK(s.h.head_len == out->h.head_len && b.h.head_len == out->h.head_len);
        CHECK(s.h.body == out->h.body && b.h.body == out->h.body);
        CHECK(s.h.content_length == out->h.content_length);
        CHECK(b.h.content_length == out->h.content_length);
        CHECK(s.h.keep_alive == out->h.keep_alive && b.h.keep_alive == out->h.keep_alive);
        CHECK(s.h.n_fields == out->h.n_fields && b.h.n_fields == out->h.n_fields);
        CHECK(s.h.expect_continue == out->h.expect_continue);
        for (unsigned i = 0; i < out->h.n_fields; i++)
            CHECK(s.h.fields[i].flags == out->h.fields[i].flags &&
                  b.h.fields[i].flags == out->h.fields[i].flags);
    }
    free(pre);
}

struct ck_run {
    enum px_h1_status st;
    size_t pos;     /* bytes consumed */
    char *data;     /* decoded data (malloc'd, at most len bytes) */
    size_t data_len;
};

/* Feeds in[0..avail) from r->pos on until it is used up or the decoder
 * stops, checking each call's contract. */
static void ck_feed(struct px_h1_chunked *c, const char *in, size_t avail, struct ck_run *r)
{
    unsigned calls = 0;

    while (r->st == PX_H1_NEED_MORE && r->pos < avail) {
        size_t used = 7, off = 7, dl = 7;
        r->st = px_h1_chunked_feed(c, in + r->pos, avail - r->pos, &used, &off, &dl);
        CHECK(used <= avail - r->pos);
        CHECK(off + dl <= used || dl == 0);
        CHECK(dl == 0 || r->st == PX_H1_NEED_MORE);
        CHECK(r->st != PX_H1_ERROR || (used == 0 && c->error != NULL));
        CHECK(r->st != PX_H1_NEED_MORE || used > 0);
        memcpy(r->data + r->data_len, in + r->pos + off, dl);
        r->data_len += dl;
        r->pos += used;
        CHECK(++calls <= avail + 1);
    }
}

static void ck_init_run(struct ck_run *r, size_t len)
{
    r->st = PX_H1_NEED_MORE;
    r->pos = 0;
    r->data_len = 0;
    r->data = malloc(len ? len : 1);
    CHECK(r->data != NULL);
}

/* Decodes in[0..len) as a chunked body whole, split and byte by byte. */
static void chunked_all(const char *in, size_t len)
{
    struct px_h1_chunked cw, cs, cb;
    struct ck_run w, s, b;
    size_t split = fuzz_split((const uint8_t *)in, len) / 2;

    ck_init_run(&w, len);
    ck_init_run(&s, len);
    ck_init_run(&b, len);
    px_h1_chunked_init(&cw);
    px_h1_chunked_init(&cs);
    px_h1_chunked_init(&cb);

    ck_feed(&cw, in, len, &w);
    ck_feed(&cs, in, split, &s);
    ck_feed(&cs, in, len, &s);
    for (size_t k = 1; k <= len; k++)
        ck_feed(&cb, in, k, &b);

    CHECK(w.st == s.st && w.st == b.st);
    CHECK(w.data_len == s.data_len && w.data_len == b.data_len);
    CHECK(memcmp(w.data, s.data, w.data_len) == 0 && memcmp(w.data, b.data, w.data_len) == 0);
    CHECK(w.data_len <= w.pos || w.st == PX_H1_ERROR);
    if (w.st != PX_H1_ERROR)
        CHECK(w.pos == s.pos && w.pos == b.pos);
    if (w.st == PX_H1_NEED_MORE)
        CHECK(w.pos == len);
    if (w.st == PX_H1_DONE)
        CHECK(w.pos >= 5 && memcmp(in + w.pos - 2, "\r\n", 2) == 0);
    free(w.data);
    free(s.data);
    free(b.data);
}

#endif

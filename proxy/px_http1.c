/* px_http1: strict incremental HTTP/1.1 parsing (RFC 9112) for the proxy.
 * The head parser scans for CRLF line ends as bytes arrive, checks each line
 * when it is complete (so bad bytes are refused without waiting for the rest),
 * and only when the empty line arrives does it fill the px_h1_head and decide
 * the framing. The chunked decoder is a byte state machine that hands back
 * data runs in place. Neither allocates nor does I/O. Every ambiguity is an
 * error on purpose: a proxy that is more lenient than its upstream is how
 * requests get smuggled. */
#include "px_http1.h"

#include <stddef.h>
#include <string.h>

#include "pol_chars.h"

#define PX_H1_EXT_MAX     4096u  /* chunk extension bytes per size line */
#define PX_H1_TRAILER_MAX 16384u /* whole trailer section */

/* ---- character classes (ASCII only, never the C locale) ---- */

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* field-vchar, SP or HTAB: what a field value may hold. obs-text is allowed
 * because it is legal and opaque to us; controls (NUL, DEL, ...) are not. */
static int is_value_byte(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* Whether every byte of s[0..n) is_value_byte(): eight at a time. A word
 * with no byte below 0x20 and none equal to 0x7f passes whole (the two
 * tests are exact for "some byte is", not for which); any other word, a
 * HTAB included, and the tail go byte by byte. */
static int all_value_bytes(const char *s, size_t n)
{
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        uint64_t w, del;

        memcpy(&w, s + i, 8);
        del = w ^ (0x7f * ones);
        if ((((w - 0x20 * ones) & ~w) | ((del - ones) & ~del)) & highs) {
            for (size_t k = i; k < i + 8; k++)
                if (!is_value_byte((unsigned char)s[k]))
                    return 0;
        }
    }
    for (; i < n; i++)
        if (!is_value_byte((unsigned char)s[i]))
            return 0;
    return 1;
}

static unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static int ieq_n(const char *a, size_t an, const char *b, size_t bn)
{
    size_t i;
    if (an != bn)
        return 0;
    for (i = 0; i < an; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return 0;
    return 1;
}

static int ieq(const char *s, size_t n, const char *name)
{
    return ieq_n(s, n, name, strlen(name));
}

/* ieq() against a string literal: the length is known, so a field of
 * another length costs one comparison. */
#define IEQ_LIT(s, n, lit) ieq_n((s), (n), (lit), sizeof(lit) - 1)

int px_h1_name_is(const struct px_h1_field *f, const char *name)
{
    return ieq(f->name, f->name_len, name);
}

/* ---- head parser ---- */

static enum px_h1_status fail(struct px_h1_parser *p, struct px_h1_head *h, int status,
                              const char *why)
{
    /* Whatever the upstream got wrong, the client only learns "bad gateway". */
    p->final = PX_H1_ERROR;
    p->error_status = h->error_status = p->is_request ? status : 502;
    p->error = h->error = why;
    return PX_H1_ERROR;
}

void px_h1_parser_init(struct px_h1_parser *p, int is_request, int head_request,
                       const struct px_h1_limits *lim)
{
    static const struct px_h1_limits req_def = {PX_H1_DEFAULT_MAX_HEAD, PX_H1_DEFAULT_MAX_LINE,
                                                PX_H1_DEFAULT_MAX_FIELDS};
    static const struct px_h1_limits resp_def = {PX_H1_DEFAULT_MAX_RESPONSE_HEAD,
                                                 PX_H1_DEFAULT_MAX_LINE, PX_H1_DEFAULT_MAX_FIELDS};

    memset(p, 0, sizeof *p);
    p->is_request = is_request;
    p->head_request = head_request;
    p->lim = lim ? *lim : is_request ? req_def : resp_def;
    if (p->lim.max_fields > PX_H1_MAX_FIELDS_CAP)
        p->lim.max_fields = PX_H1_MAX_FIELDS_CAP;
}

/* "HTTP/1.0" or "HTTP/1.1" exactly: the name is case-sensitive (RFC 9112
 * 2.3) and other versions are refused rather than guessed at. */
static int parse_version(const char *s, size_t n, int *minor)
{
    if (n != 8 || memcmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1'))
        return -1;
    *minor = s[7] - '0';
    return 0;
}

static int valid_host(const char *s, size_t n);

/* The request-target forms of RFC 9112 3.2 that a server accepts: origin-form
 * ("/path?query"), absolute-form ("http://authority/path?query", the scheme
 * http or https in any case, an authority that is a valid Host value and a
 * path that is not empty) and asterisk-form ("*", with OPTIONS only).
 * authority-form (CONNECT) and anything else is refused. Sets h->target_form,
 * h->authority and h->origin. */
static const char *parse_target(struct px_h1_head *h)
{
    const char *t = h->target;
    size_t n = h->target_len, a, e;

    h->authority = h->origin = NULL;
    h->authority_len = h->origin_len = 0;
    if (t[0] == '/') {
        h->target_form = PX_H1_TARGET_ORIGIN;
        h->origin = t;
        h->origin_len = n;
        return NULL;
    }
    if (n == 1 && t[0] == '*') {
        /* RFC 9112 3.2.4: only OPTIONS applies to the server as a whole. */
        if (h->method_len != 7 || memcmp(h->method, "OPTIONS", 7) != 0)
            return "asterisk-form target without OPTIONS";
        h->target_form = PX_H1_TARGET_ASTERISK;
        return NULL;
    }
    if (n > 7 && IEQ_LIT(t, 7, "http://"))
        a = 7;
    else if (n > 8 && IEQ_LIT(t, 8, "https://"))
        a = 8;
    else
        return "unsupported request-target form";
    for (e = a; e < n && t[e] != '/' && t[e] != '?' && t[e] != '#'; e++)
        ;
    /* No userinfo (RFC 9110 4.2.4: "@" is not a Host byte) and a real path:
     * "http://a?q" would need a "/" that is not in the buffer. */
    if (!valid_host(t + a, e - a))
        return "invalid authority in absolute-form target";
    if (e == n || t[e] != '/')
        return "absolute-form target without a path";
    h->target_form = PX_H1_TARGET_ABSOLUTE;
    h->authority = t + a;
    h->authority_len = e - a;
    h->origin = t + e;
    h->origin_len = n - e;
    return NULL;
}

/* method SP request-target SP HTTP-version, nothing more, nothing less. */
static const char *parse_request_line(const char *s, size_t n, struct px_h1_head *h)
{
    const char *why;
    size_t i = 0, t;

    while (i < n && pol_chars_is_tchar((unsigned char)s[i]))
        i++;
    if (i == 0 || i == n || s[i] != ' ')
        return "malformed method";
    h->method = s;
    h->method_len = i;
    t = ++i;
    /* Printable ASCII only: no SP, HTAB, controls or obs-text in a target. */
    while (i < n && (unsigned char)s[i] > 0x20 && (unsigned char)s[i] < 0x7f)
        i++;
    if (i == t || i == n || s[i] != ' ')
        return "malformed request target";
    h->target = s + t;
    h->target_len = i - t;
    i++;
    if (parse_version(s + i, n - i, &h->minor) != 0)
        return "unsupported HTTP version";
    why = parse_target(h);
    return why;
}

/* HTTP-version SP 3DIGIT SP reason-phrase; the second SP is required even
 * with an empty reason (nginx always sends one). */
static const char *parse_status_line(const char *s, size_t n, struct px_h1_head *h)
{
    size_t i;

    if (n < 13 || parse_version(s, 8, &h->minor) != 0 || s[8] != ' ' || s[12] != ' ')
        return "malformed status line";
    if (s[9] < '1' || s[9] > '5' || !is_digit((unsigned char)s[10]) ||
        !is_digit((unsigned char)s[11]))
        return "malformed status code";
    h->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    for (i = 13; i < n; i++)
        if (!is_value_byte((unsigned char)s[i]))
            return "control byte in reason phrase";
    h->reason = s + 13;
    h->reason_len = n - 13;
    return NULL;
}

/* name ":" OWS value OWS. Whitespace before the colon and obs-fold are
 * refused (RFC 9112 5.1, 5.2): both are classic smuggling vectors. */
static const char *parse_field_line(const char *s, size_t n, struct px_h1_field *f)
{
    size_t i = 0, v, e;

    if (s[0] == ' ' || s[0] == '\t')
        return "obs-fold or leading whitespace in field line";
    while (i < n && pol_chars_is_tchar((unsigned char)s[i]))
        i++;
    if (i == n)
        return "field line without colon";
    if (s[i] != ':') {
        if (s[i] == ' ' || s[i] == '\t')
            return "whitespace before colon";
        return i == 0 ? "empty field name" : "invalid byte in field name";
    }
    if (i == 0)
        return "empty field name";
    if (!all_value_bytes(s + i + 1, n - i - 1))
        return "control byte in field value";
    v = i + 1;
    e = n;
    while (v < e && (s[v] == ' ' || s[v] == '\t'))
        v++;
    while (e > v && (s[e - 1] == ' ' || s[e - 1] == '\t'))
        e--;
    f->name = s;
    f->name_len = i;
    f->value = s + v;
    f->value_len = e - v;
    f->flags = 0;
    return NULL;
}

/* One element of a comma-separated list (RFC 9110 5.6.1): walks *pos over
 * s[0..n), returns the next element trimmed of OWS; empty elements are
 * returned as length 0 so the caller can decide. Returns 0 at the end. */
static int next_element(const char *s, size_t n, size_t *pos, const char **el, size_t *el_len)
{
    size_t i = *pos, b, e;

    if (i > n)
        return 0;
    b = i;
    while (i < n && s[i] != ',')
        i++;
    e = i;
    while (b < e && (s[b] == ' ' || s[b] == '\t'))
        b++;
    while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t'))
        e--;
    *el = s + b;
    *el_len = e - b;
    *pos = i + 1;
    return 1;
}

static int is_token(const char *s, size_t n)
{
    size_t i;
    if (n == 0)
        return 0;
    for (i = 0; i < n; i++)
        if (!pol_chars_is_tchar((unsigned char)s[i]))
            return 0;
    return 1;
}

/* 1*DIGIT into a uint64_t; anything else (sign, hex, spaces, a list,
 * overflow) is -1. Leading zeros are fine. */
static int parse_content_length(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    if (n == 0)
        return -1;
    for (i = 0; i < n; i++) {
        unsigned d;
        if (!is_digit((unsigned char)s[i]))
            return -1;
        d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* uri-host [":" port] (RFC 9110 7.2). reg-name covers IPv4 too; an IP literal
 * is "[" hex digits, ':' and '.' "]". A port, when there is a colon, is
 * 1 to 5 digits: an empty port is legal but useless, so it is refused. */
static int valid_host(const char *s, size_t n)
{
    size_t i = 0;

    if (n == 0)
        return 0;
    if (s[0] == '[') {
        for (i = 1; i < n && s[i] != ']'; i++)
            if (pol_chars_hex((unsigned char)s[i]) < 0 && s[i] != ':' && s[i] != '.')
                return 0;
        if (i == n || i == 1)
            return 0;
        i++;
    } else {
        for (; i < n && s[i] != ':'; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c == '%') {
                if (i + 2 >= n || pol_chars_hex((unsigned char)s[i + 1]) < 0 ||
                    pol_chars_hex((unsigned char)s[i + 2]) < 0)
                    return 0;
                i += 2;
            } else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) ||
                         strchr("-._~!$&'()*+,;=", c) != NULL)) {
                return 0;
            }
        }
        if (i == 0)
            return 0;
    }
    if (i == n)
        return 1;
    if (s[i] != ':' || n - i - 1 < 1 || n - i - 1 > 5)
        return 0;
    for (i++; i < n; i++)
        if (!is_digit((unsigned char)s[i]))
            return 0;
    return 1;
}

static unsigned field_flags(const struct px_h1_field *f)
{
    const char *n = f->name;
    size_t l = f->name_len;

    if (IEQ_LIT(n, l, "connection") || IEQ_LIT(n, l, "keep-alive") || IEQ_LIT(n, l, "te") ||
        IEQ_LIT(n, l, "upgrade") || IEQ_LIT(n, l, "proxy-connection"))
        return PX_H1_F_HOP;
    if (IEQ_LIT(n, l, "trailer"))
        return PX_H1_F_TRAILER;
    if (IEQ_LIT(n, l, "content-length") || IEQ_LIT(n, l, "transfer-encoding"))
        return PX_H1_F_FRAMING;
    if (IEQ_LIT(n, l, "expect"))
        return PX_H1_F_EXPECT;
    return 0;
}

/* Transfer-Encoding fields, combined as one list (RFC 9112 6.1). Returns 0
 * when the final (and only) coding is chunked, else an error status with
 * *why set. Unknown codings are 501 before anything else so that a coding
 * we cannot even name is never reported as a framing mistake; known codings
 * other than chunked are 501 too, since we do not decode them. */
static int check_te(const struct px_h1_head *h, const char **why)
{
    unsigned n_chunked = 0, n_codings = 0, unknown = 0, other = 0, bad = 0;
    int last_chunked = 0;
    unsigned k;

    for (k = 0; k < h->n_fields; k++) {
        const struct px_h1_field *f = &h->fields[k];
        const char *el;
        size_t el_len, pos = 0, t;

        if (!IEQ_LIT(f->name, f->name_len, "transfer-encoding"))
            continue;
        while (next_element(f->value, f->value_len, &pos, &el, &el_len)) {
            int params;

            if (el_len == 0)
                continue; /* empty list elements are ignored (RFC 9110 5.6.1) */
            for (t = 0; t < el_len && pol_chars_is_tchar((unsigned char)el[t]); t++)
                ;
            params = 0;
            if (t < el_len) {
                size_t r = t;
                while (r < el_len && (el[r] == ' ' || el[r] == '\t'))
                    r++;
                if (r < el_len && el[r] == ';')
                    params = 1;
                else
                    bad = 1;
            }
            if (t == 0)
                bad = 1;
            n_codings++;
            last_chunked = 0;
            if (IEQ_LIT(el, t, "chunked")) {
                if (params)
                    bad = 1; /* chunked takes no parameters */
                n_chunked++;
                last_chunked = 1;
            } else if (IEQ_LIT(el, t, "gzip") || IEQ_LIT(el, t, "x-gzip") ||
                       IEQ_LIT(el, t, "deflate") || IEQ_LIT(el, t, "compress") ||
                       IEQ_LIT(el, t, "x-compress") || IEQ_LIT(el, t, "identity")) {
                other = 1;
            } else {
                unknown = 1;
            }
        }
    }
    if (bad || n_codings == 0) {
        *why = n_codings == 0 ? "empty Transfer-Encoding" : "malformed Transfer-Encoding";
        return 400;
    }
    if (unknown) {
        *why = "unknown transfer coding";
        return 501;
    }
    if (n_chunked > 1) {
        *why = "chunked applied twice";
        return 400;
    }
    if (!last_chunked) {
        *why = "final transfer coding is not chunked";
        return 400;
    }
    if (other) {
        *why = "unsupported transfer coding";
        return 501;
    }
    return 0;
}

/* The empty line has arrived: buf[0..head_len) is a complete head whose
 * lines were already checked one by one. Fill h from scratch (so the caller
 * may hand a fresh h to each call) and apply the rules that need every field:
 * Host, framing, Connection, Expect. */
static enum px_h1_status finish_head(struct px_h1_parser *p, const char *buf, size_t head_len,
                                     struct px_h1_head *h)
{
    const char *why = NULL;
    size_t pos, end = head_len - 2; /* the final empty line's CRLF */
    unsigned k, n_host = 0, n_cl = 0, n_te = 0, conn_close = 0, conn_ka = 0;
    int expect_other = 0, expect_100 = 0, st;

    /* The fixed part only: parse_field_line sets every member of a slot it
     * fills, and n_fields says how many are filled. */
    memset(h, 0, offsetof(struct px_h1_head, fields));
    h->head_len = head_len;
    why = p->is_request ? parse_request_line(buf + p->first_line_start, p->first_line_len, h)
                        : parse_status_line(buf + p->first_line_start, p->first_line_len, h);
    if (why)
        return fail(p, h, 400, why); /* cannot happen: checked when it ended */

    for (pos = p->first_line_start + p->first_line_len + 2; pos < end;) {
        const char *eol = memchr(buf + pos, '\r', end - pos);
        size_t n = (size_t)(eol - (buf + pos));
        struct px_h1_field *f = &h->fields[h->n_fields++];

        if (parse_field_line(buf + pos, n, f) != NULL)
            return fail(p, h, 400, "field line changed under the parser");
        f->flags = field_flags(f);
        pos += n + 2;
    }

    for (k = 0; k < h->n_fields; k++) {
        struct px_h1_field *f = &h->fields[k];

        if (IEQ_LIT(f->name, f->name_len, "host")) {
            n_host++;
            h->host = f->value;
            h->host_len = f->value_len;
        } else if (IEQ_LIT(f->name, f->name_len, "content-length")) {
            n_cl++;
            if (parse_content_length(f->value, f->value_len, &h->content_length) != 0)
                return fail(p, h, 400, "invalid Content-Length");
        } else if (IEQ_LIT(f->name, f->name_len, "transfer-encoding")) {
            n_te++;
        } else if (IEQ_LIT(f->name, f->name_len, "expect")) {
            if (IEQ_LIT(f->value, f->value_len, "100-continue"))
                expect_100 = 1;
            else
                expect_other = 1;
        } else if (IEQ_LIT(f->name, f->name_len, "connection")) {
            const char *el;
            size_t el_len, lp = 0;
            unsigned j;

            while (next_element(f->value, f->value_len, &lp, &el, &el_len)) {
                if (el_len == 0)
                    continue;
                if (!is_token(el, el_len))
                    return fail(p, h, 400, "invalid Connection option");
                if (IEQ_LIT(el, el_len, "close"))
                    conn_close = 1;
                else if (IEQ_LIT(el, el_len, "keep-alive"))
                    conn_ka = 1;
                /* Fields named by Connection are for this hop only. */
                for (j = 0; j < h->n_fields; j++)
                    if (ieq_n(h->fields[j].name, h->fields[j].name_len, el, el_len))
                        h->fields[j].flags |= PX_H1_F_HOP;
            }
        }
    }

    /* Framing (RFC 9112 6.1, 6.3). Several Content-Length fields are refused
     * even when identical: simpler than comparing, and nothing legitimate
     * sends them. */
    if (n_cl > 1)
        return fail(p, h, 400, "several Content-Length fields");
    if (n_cl && n_te)
        return fail(p, h, 400, "Content-Length with Transfer-Encoding");
    if (n_te) {
        if (h->minor == 0)
            return fail(p, h, 400, "Transfer-Encoding on HTTP/1.0");
        st = check_te(h, &why);
        if (st)
            return fail(p, h, st, why);
    }

    h->keep_alive = h->minor == 1 ? !conn_close : (conn_ka && !conn_close);

    if (p->is_request) {
        if (n_host > 1)
            return fail(p, h, 400, "duplicate Host");
        if (n_host == 0 && h->minor == 1)
            return fail(p, h, 400, "missing Host");
        if (n_host == 1 && !valid_host(h->host, h->host_len))
            return fail(p, h, 400, "invalid Host");
        if (expect_other)
            return fail(p, h, 417, "unsupported Expect");
        /* RFC 9110 10.1.1: 100-continue in an HTTP/1.0 request is ignored. */
        h->expect_continue = expect_100 && h->minor == 1;
        h->body = n_te ? PX_H1_BODY_CHUNKED : n_cl ? PX_H1_BODY_LENGTH : PX_H1_BODY_NONE;
    } else if (h->status < 200 || h->status == 204 || h->status == 304 || p->head_request) {
        h->body = PX_H1_BODY_NONE; /* content_length stays set for HEAD */
    } else if (n_te) {
        h->body = PX_H1_BODY_CHUNKED;
    } else if (n_cl) {
        h->body = PX_H1_BODY_LENGTH;
    } else {
        h->body = PX_H1_BODY_EOF;
        h->keep_alive = 0; /* the body ends when the connection does */
    }
    p->final = PX_H1_DONE;
    return PX_H1_DONE;
}

enum px_h1_status px_h1_parse_head(struct px_h1_parser *p, const char *buf, size_t len,
                                   struct px_h1_head *h)
{
    size_t i = p->scanned;

    if (p->final == PX_H1_ERROR)
        return fail(p, h, p->error_status, p->error);
    if (p->final == PX_H1_DONE)
        return finish_head(p, buf, p->scanned, h);

    while (i < len) {
        unsigned char c;
        const char *why;
        size_t stop = len < p->lim.max_head ? len : p->lim.max_head;

        /* Skip to the next CR or LF at once (memchr), but not past a limit:
         * the bytes skipped are those the checks below would pass one by
         * one, and the byte stopped at goes through them as before. */
        if (p->first_line_len == 0 && stop > p->line_start &&
            stop - p->line_start > p->lim.max_line)
            stop = p->line_start + p->lim.max_line;
        if (i < stop) {
            const char *cr = memchr(buf + i, '\r', stop - i);
            const char *end = cr != NULL ? cr : buf + stop;
            const char *lf = memchr(buf + i, '\n', (size_t)(end - (buf + i)));

            i = (size_t)((lf != NULL ? lf : end) - buf);
            if (i == len)
                break;
        }
        c = (unsigned char)buf[i];

        /* Limits first, byte by byte, so an endless line is cut short. */
        if (p->first_line_len == 0 && c != '\r' && i - p->line_start >= p->lim.max_line)
            return fail(p, h, 414, "request line too long");
        if (i >= p->lim.max_head)
            return fail(p, h, 431, "head too large");
        if (c == '\n')
            return fail(p, h, 400, "bare LF");
        if (c != '\r') {
            i++;
            continue;
        }
        if (i + 1 == len)
            break; /* CR is the last byte: rescan it when more arrives */
        if (buf[i + 1] != '\n')
            return fail(p, h, 400, "bare CR");
        if (i + 1 >= p->lim.max_head)
            return fail(p, h, 431, "head too large");

        if (p->first_line_len == 0 && i == p->line_start) {
            /* RFC 9112 2.2: one empty line before a request line is
             * ignored (a client's stray CRLF after a body); a second one, or
             * one before a status line, is refused. */
            if (!p->is_request || i != 0)
                return fail(p, h, 400, "empty start line");
            p->first_line_start = i + 2;
        } else if (p->first_line_len == 0) {
            struct px_h1_head tmp_h;
            /* tmp_h: the caller's h is only written on DONE or ERROR. */
            why = p->is_request ? parse_request_line(buf + p->line_start, i - p->line_start, &tmp_h)
                                : parse_status_line(buf + p->line_start, i - p->line_start, &tmp_h);
            if (why)
                return fail(p, h, 400, why);
            p->first_line_len = i - p->line_start;
        } else if (i == p->line_start) {
            p->scanned = i + 2;
            return finish_head(p, buf, i + 2, h);
        } else {
            struct px_h1_field f;
            why = parse_field_line(buf + p->line_start, i - p->line_start, &f);
            if (why)
                return fail(p, h, 400, why);
            if (++p->lines > p->lim.max_fields)
                return fail(p, h, 431, "too many header fields");
        }
        i += 2;
        p->line_start = i;
    }
    p->scanned = i;
    return PX_H1_NEED_MORE;
}

/* ---- chunked body decoder (RFC 9112 7.1) ---- */

enum {
    CK_SIZE,    /* hex digits of a chunk size */
    CK_SIZE_WS, /* BWS after the digits: only ';' may follow */
    CK_EXT,     /* chunk extension, up to CR */
    CK_SIZE_LF, /* CR seen at the end of a size line */
    CK_DATA,    /* chunk data */
    CK_DATA_CR, /* CRLF after chunk data */
    CK_DATA_LF,
    CK_TR_START, /* start of a trailer line, or the final CRLF */
    CK_TR_NAME,
    CK_TR_VALUE,
    CK_TR_LF,
    CK_END_LF, /* CR of the final empty line seen */
    CK_DONE,
    CK_ERROR
};

void px_h1_chunked_init(struct px_h1_chunked *c)
{
    memset(c, 0, sizeof *c);
    c->state = CK_SIZE;
}

static enum px_h1_status ck_fail(struct px_h1_chunked *c, const char *why)
{
    c->state = CK_ERROR;
    c->error = why;
    return PX_H1_ERROR;
}

enum px_h1_status px_h1_chunked_feed(struct px_h1_chunked *c, const char *in, size_t len,
                                     size_t *consumed, size_t *data_off, size_t *data_len)
{
    struct px_h1_chunk_run run;
    enum px_h1_status st = px_h1_chunked_step(c, in, len, &run);

    *consumed = run.consumed;
    *data_off = run.data_off;
    *data_len = run.data_len;
    return st;
}

/* Ends a step: the trailer bytes seen in this call are in[tr_first..tr_end). */
static enum px_h1_status ck_end(struct px_h1_chunk_run *run, size_t consumed, size_t tr_first,
                                size_t tr_end, enum px_h1_status st)
{
    run->consumed = consumed;
    if (tr_end > tr_first) {
        run->trailer_off = tr_first;
        run->trailer_len = tr_end - tr_first;
    }
    return st;
}

enum px_h1_status px_h1_chunked_step(struct px_h1_chunked *c, const char *in, size_t len,
                                     struct px_h1_chunk_run *run)
{
    size_t i = 0, tr_first = 0, tr_end = 0;

    memset(run, 0, sizeof *run);
    if (c->state == CK_DONE)
        return PX_H1_DONE;
    if (c->state == CK_ERROR)
        return PX_H1_ERROR;

    while (i < len) {
        unsigned char b = (unsigned char)in[i];

        if (c->state == CK_DATA) {
            size_t n = len - i;
            if ((uint64_t)n > c->remaining)
                n = (size_t)c->remaining;
            run->data_off = i;
            run->data_len = n;
            c->remaining -= n;
            if (c->remaining == 0)
                c->state = CK_DATA_CR;
            /* One data run per call, and data only with NEED_MORE: the
             * caller never has to both forward data and act on an end. */
            run->consumed = i + n;
            return PX_H1_NEED_MORE;
        }
        if (c->state >= CK_TR_START && c->state <= CK_END_LF &&
            ++c->trailer_len > PX_H1_TRAILER_MAX)
            return ck_fail(c, "trailer section too large");
        /* Trailer bytes are every byte of the section but the final CRLF;
         * they are contiguous in one call (nothing follows them but that
         * CRLF), so one run describes them. */
        if ((c->state == CK_TR_START && b != '\r') ||
            (c->state >= CK_TR_NAME && c->state <= CK_TR_LF)) {
            if (tr_end == tr_first)
                tr_first = i;
            tr_end = i + 1;
        }

        switch (c->state) {
        case CK_SIZE: {
            int v = pol_chars_hex(b);
            if (v >= 0) {
                /* 16 hex digits fill 64 bits exactly, so no overflow check. */
                if (++c->digits > 16)
                    return ck_fail(c, "chunk size too long");
                c->remaining = (c->remaining << 4) | (uint64_t)v;
            } else if (c->digits == 0) {
                return ck_fail(c, "chunk size without digits");
            } else if (b == '\r') {
                c->state = CK_SIZE_LF;
            } else if (b == ';') {
                c->state = CK_EXT;
            } else if (b == ' ' || b == '\t') {
                c->state = CK_SIZE_WS;
            } else {
                return ck_fail(c, "junk in chunk size");
            }
            break;
        }
        case CK_SIZE_WS:
            if (b == ';')
                c->state = CK_EXT;
            else if (b != ' ' && b != '\t')
                return ck_fail(c, "whitespace after chunk size");
            break;
        case CK_EXT:
            if (b == '\r')
                c->state = CK_SIZE_LF;
            else if (b != '\t' && (b < 0x20 || b > 0x7e))
                return ck_fail(c, "invalid byte in chunk extension");
            break;
        case CK_SIZE_LF:
            if (b != '\n')
                return ck_fail(c, "bare CR in chunk size line");
            c->line_len = 0;
            c->digits = 0;
            c->state = c->remaining ? CK_DATA : CK_TR_START;
            break;
        case CK_DATA_CR:
            if (b != '\r')
                return ck_fail(c, "chunk data not followed by CRLF");
            c->state = CK_DATA_LF;
            break;
        case CK_DATA_LF:
            if (b != '\n')
                return ck_fail(c, "chunk data not followed by CRLF");
            c->state = CK_SIZE;
            break;
        case CK_TR_START:
            if (b == '\r')
                c->state = CK_END_LF;
            else if (pol_chars_is_tchar(b))
                c->state = CK_TR_NAME;
            else
                return ck_fail(c, "malformed trailer field");
            break;
        case CK_TR_NAME:
            if (b == ':')
                c->state = CK_TR_VALUE;
            else if (!pol_chars_is_tchar(b))
                return ck_fail(c, "malformed trailer field");
            break;
        case CK_TR_VALUE:
            if (b == '\r')
                c->state = CK_TR_LF;
            else if (!is_value_byte(b))
                return ck_fail(c, "control byte in trailer field");
            break;
        case CK_TR_LF:
            if (b != '\n')
                return ck_fail(c, "bare CR in trailer");
            c->state = CK_TR_START;
            break;
        case CK_END_LF:
            if (b != '\n')
                return ck_fail(c, "bare CR in trailer");
            c->state = CK_DONE;
            return ck_end(run, i + 1, tr_first, tr_end, PX_H1_DONE);
        default:
            return ck_fail(c, "decoder state corrupt");
        }
        if (c->state == CK_EXT || c->state == CK_SIZE_WS) {
            if (++c->line_len > PX_H1_EXT_MAX)
                return ck_fail(c, "chunk extension too long");
        }
        i++;
    }
    return ck_end(run, i, tr_first, tr_end, PX_H1_NEED_MORE);
}

int px_h1_trailer_next(const char *sec, size_t len, size_t *pos, struct px_h1_field *f)
{
    const char *eol;
    size_t n;

    if (*pos >= len)
        return 0;
    eol = memchr(sec + *pos, '\r', len - *pos);
    if (eol == NULL || eol == sec + *pos || (size_t)(eol - sec) + 1 >= len || eol[1] != '\n')
        return -1;
    n = (size_t)(eol - (sec + *pos));
    if (parse_field_line(sec + *pos, n, f) != NULL)
        return -1;
    f->flags = field_flags(f);
    *pos += n + 2;
    return 1;
}

const char *px_h1_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 428:
        return "Precondition Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

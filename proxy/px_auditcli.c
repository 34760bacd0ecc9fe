/* px_auditcli: `fenceproxy audit verify` and `fenceproxy audit tail`. verify
 * recomputes the chain: each line's "prev" must equal the SHA-256 of the
 * line before it (of the empty string for the first line of the first file),
 * and any line that is not a flat JSON object with a "prev" string breaks
 * the chain. tail reads a file once, keeps the last N matching records and
 * prints them as a table; every value shown passes through a sanitizer, so
 * a hostile path in the log cannot drive the operator's terminal. */
#include "px_auditcli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pol_chars.h"
#include "pol_decide.h"
#include "px_audit.h"

#define MAX_FIELDS 32
#define TAIL_MAX_N 1000000

/* ---- flat JSON ---------------------------------------------------------- */

struct jp {
    const unsigned char *s;
    size_t i, n;
};

static int peek(const struct jp *p)
{
    return p->i < p->n ? p->s[p->i] : -1;
}

static void skip_ws(struct jp *p)
{
    while (p->i < p->n &&
           (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\r' || p->s[p->i] == '\n'))
        p->i++;
}

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

/* Length of the valid UTF-8 sequence at s (n bytes available), ASCII
 * included, or 0 if none (see pol_utf8_decode). */
static size_t utf8_seq(const unsigned char *s, size_t n, unsigned long *cp_out)
{
    uint32_t cp = s[0];
    size_t k = s[0] < 0x80 ? 1 : pol_utf8_decode(s, n, &cp);

    if (k > 0 && cp_out != NULL)
        *cp_out = cp;
    return k;
}

static int parse_string(struct jp *p, const char **raw, size_t *len)
{
    size_t start;

    if (peek(p) != '"')
        return -1;
    start = ++p->i;
    while (p->i < p->n) {
        unsigned char c = p->s[p->i];
        if (c == '"') {
            *raw = (const char *)p->s + start;
            *len = p->i - start;
            p->i++;
            return 0;
        }
        if (c < 0x20)
            return -1;
        if (c == '\\') {
            if (p->i + 1 >= p->n)
                return -1;
            c = p->s[p->i + 1];
            if (c == 'u') {
                if (p->i + 6 > p->n)
                    return -1;
                for (size_t k = 2; k < 6; k++)
                    if (pol_chars_hex((unsigned char)p->s[p->i + k]) < 0)
                        return -1;
                p->i += 6;
            } else if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' ||
                       c == 'r' || c == 't') {
                p->i += 2;
            } else {
                return -1;
            }
            continue;
        }
        size_t u = utf8_seq(p->s + p->i, p->n - p->i, NULL);
        if (u == 0)
            return -1;
        p->i += u;
    }
    return -1;
}

static int parse_number(struct jp *p)
{
    if (peek(p) == '-')
        p->i++;
    if (peek(p) == '0') {
        p->i++;
    } else if (is_digit(peek(p))) {
        while (is_digit(peek(p)))
            p->i++;
    } else {
        return -1;
    }
    if (peek(p) == '.') {
        p->i++;
        if (!is_digit(peek(p)))
            return -1;
        while (is_digit(peek(p)))
            p->i++;
    }
    if (peek(p) == 'e' || peek(p) == 'E') {
        p->i++;
        if (peek(p) == '+' || peek(p) == '-')
            p->i++;
        if (!is_digit(peek(p)))
            return -1;
        while (is_digit(peek(p)))
            p->i++;
    }
    return 0;
}

static int parse_literal(struct jp *p, const char *lit)
{
    size_t l = strlen(lit);

    if (p->n - p->i < l || memcmp(p->s + p->i, lit, l) != 0)
        return -1;
    p->i += l;
    return 0;
}

static int parse_value(struct jp *p, struct px_jfield *f)
{
    size_t start = p->i;
    int c = peek(p);

    if (c == '"') {
        f->type = PX_J_STRING;
        return parse_string(p, &f->val, &f->val_len);
    }
    if (c == 'n') {
        f->type = PX_J_NULL;
        if (parse_literal(p, "null") != 0)
            return -1;
    } else if (c == 't' || c == 'f') {
        f->type = PX_J_BOOL;
        if (parse_literal(p, c == 't' ? "true" : "false") != 0)
            return -1;
    } else {
        f->type = PX_J_NUMBER;
        if (parse_number(p) != 0)
            return -1;
    }
    f->val = (const char *)p->s + start;
    f->val_len = p->i - start;
    return 0;
}

/* Does the raw key of f read key once unescaped? */
static int key_is(const struct px_jfield *f, const char *key, size_t klen)
{
    char *k = NULL;
    size_t kl = 0;
    int eq;

    if (memchr(f->key, '\\', f->key_len) == NULL)
        return f->key_len == klen && memcmp(f->key, key, klen) == 0;
    if (px_auditcli_json_unescape(f->key, f->key_len, &k, &kl) != 0)
        return 0;
    eq = kl == klen && memcmp(k, key, klen) == 0;
    free(k);
    return eq;
}

int px_auditcli_json_parse(const char *s, size_t len, struct px_jfield *f, size_t max, size_t *n)
{
    struct jp p = {(const unsigned char *)s, 0, len};
    size_t cnt = 0;

    skip_ws(&p);
    if (peek(&p) != '{')
        return -1;
    p.i++;
    skip_ws(&p);
    if (peek(&p) == '}') {
        p.i++;
        goto end;
    }
    for (;;) {
        if (cnt == max)
            return -1;
        skip_ws(&p);
        if (parse_string(&p, &f[cnt].key, &f[cnt].key_len) != 0)
            return -1;
        skip_ws(&p);
        if (peek(&p) != ':')
            return -1;
        p.i++;
        skip_ws(&p);
        if (parse_value(&p, &f[cnt]) != 0)
            return -1;
        cnt++;
        skip_ws(&p);
        if (peek(&p) == ',') {
            p.i++;
            continue;
        }
        if (peek(&p) != '}')
            return -1;
        p.i++;
        break;
    }
end:
    skip_ws(&p);
    if (p.i != p.n)
        return -1;
    for (size_t i = 0; i < cnt; i++) {
        char *k = NULL;
        size_t kl = 0;
        if (px_auditcli_json_unescape(f[i].key, f[i].key_len, &k, &kl) != 0)
            return -1;
        for (size_t j = i + 1; j < cnt; j++)
            if (key_is(&f[j], k, kl)) {
                free(k);
                return -1;
            }
        free(k);
    }
    *n = cnt;
    return 0;
}

static size_t put_utf8(char *o, unsigned long cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static unsigned long hex4(const char *s)
{
    unsigned long v = 0;

    for (int k = 0; k < 4; k++)
        v = (v << 4) | (unsigned long)pol_chars_hex((unsigned char)s[k]);
    return v;
}

int px_auditcli_json_unescape(const char *raw, size_t len, char **out, size_t *out_len)
{
    /* Never longer than the input: \uXXXX (6 bytes) gives at most 3, a
     * surrogate pair (12) gives 4, the other escapes 2 -> 1. */
    char *o = malloc(len + 1);
    size_t i = 0, k = 0;

    if (o == NULL)
        return -1;
    while (i < len) {
        if (raw[i] != '\\' || i + 1 >= len) {
            o[k++] = raw[i++];
            continue;
        }
        char c = raw[i + 1];
        if (c != 'u' || i + 6 > len) {
            switch (c) {
            case 'b':
                o[k++] = '\b';
                break;
            case 'f':
                o[k++] = '\f';
                break;
            case 'n':
                o[k++] = '\n';
                break;
            case 'r':
                o[k++] = '\r';
                break;
            case 't':
                o[k++] = '\t';
                break;
            default:
                o[k++] = c;
                break; /* " \ / */
            }
            i += 2;
            continue;
        }
        unsigned long cp = hex4(raw + i + 2);
        i += 6;
        if (cp >= 0xD800 && cp <= 0xDBFF && i + 6 <= len && raw[i] == '\\' && raw[i + 1] == 'u') {
            unsigned long lo = hex4(raw + i + 2);
            if (lo >= 0xDC00 && lo <= 0xDFFF) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                i += 6;
            }
        }
        if (cp >= 0xD800 && cp <= 0xDFFF)
            cp = 0xFFFD;
        k += put_utf8(o + k, cp);
    }
    o[k] = '\0';
    *out = o;
    *out_len = k;
    return 0;
}

const struct px_jfield *px_auditcli_json_get(const struct px_jfield *f, size_t n, const char *key)
{
    size_t kl = strlen(key);

    for (size_t i = 0; i < n; i++)
        if (key_is(&f[i], key, kl))
            return &f[i];
    return NULL;
}

/* ---- verify ------------------------------------------------------------- */

/* Is line a flat object whose "prev" is the hash expected? For a gap record
 * (a number "lost"), *lost gets that number, else 0 and *is_gap 0. */
static int line_chains(const char *line, size_t len, const char expect[65], int *is_gap,
                       uint64_t *lost)
{
    struct px_jfield f[MAX_FIELDS];
    const struct px_jfield *prev, *ev, *nl;
    size_t n;

    *is_gap = 0;
    *lost = 0;
    if (px_auditcli_json_parse(line, len, f, MAX_FIELDS, &n) != 0)
        return 0;
    prev = px_auditcli_json_get(f, n, "prev");
    if (!(prev != NULL && prev->type == PX_J_STRING && prev->val_len == 64 &&
          memcmp(prev->val, expect, 64) == 0))
        return 0;
    ev = px_auditcli_json_get(f, n, "event");
    nl = px_auditcli_json_get(f, n, "lost");
    if (ev != NULL && ev->type == PX_J_STRING && ev->val_len == 3 &&
        memcmp(ev->val, "gap", 3) == 0) {
        /* A gap record without a plain count is not one the proxy wrote. */
        if (nl == NULL || nl->type != PX_J_NUMBER || nl->val_len > 19 || nl->val[0] == '-')
            return 0;
        for (size_t i = 0; i < nl->val_len; i++) {
            if (!is_digit((unsigned char)nl->val[i]))
                return 0;
            *lost = *lost * 10 + (uint64_t)(nl->val[i] - '0');
        }
        *is_gap = 1;
    }
    return 1;
}

int px_auditcli_verify(const char *const *files, size_t n, struct px_auditcli_verdict *v)
{
    return px_auditcli_verify_gaps(files, n, v, NULL, NULL);
}

int px_auditcli_verify_gaps(const char *const *files, size_t n, struct px_auditcli_verdict *v,
                            px_auditcli_gap_fn gap, void *arg)
{
    char expect[65];
    char *line = NULL;
    size_t cap = 0;
    FILE *f = NULL;
    int rc = 0;

    memset(v, 0, sizeof *v);
    px_audit_sha256_hex("", 0, expect);
    for (size_t k = 0; k < n; k++) {
        uint64_t lineno = 0;
        ssize_t r;

        v->bad_file = k;
        f = fopen(files[k], "rb");
        if (f == NULL) {
            rc = 2;
            goto out;
        }
        while ((r = getline(&line, &cap, f)) >= 0) {
            size_t len = (size_t)r;
            lineno++;
            if (len > 0 && line[len - 1] == '\n')
                len--;
            int is_gap;
            uint64_t lost;
            if (!line_chains(line, len, expect, &is_gap, &lost)) {
                v->bad_line = lineno;
                rc = 1;
                goto out;
            }
            if (is_gap) {
                v->gaps++;
                v->lost += lost;
                if (gap != NULL)
                    gap(arg, k, lineno, line, len);
            }
            px_audit_sha256_hex(line, len, expect);
            v->records++;
        }
        if (ferror(f)) {
            if (errno == 0)
                errno = EIO;
            rc = 2;
            goto out;
        }
        fclose(f);
        f = NULL;
    }
out:
    if (f != NULL) {
        int e = errno;
        fclose(f);
        errno = e;
    }
    free(line);
    return rc;
}

static char *sanitize(const char *s, size_t len, size_t *width);

/* The text of member key of the record rec, or "?" (into out). */
static void gap_field(const struct px_jfield *f, size_t n, const char *key, char *out, size_t cap)
{
    const struct px_jfield *m = px_auditcli_json_get(f, n, key);
    char *raw = NULL, *clean;
    size_t rl = 0, w;

    snprintf(out, cap, "?");
    if (m == NULL)
        return;
    if (m->type != PX_J_STRING) {
        snprintf(out, cap, "%.*s", (int)m->val_len, m->val);
        return;
    }
    if (px_auditcli_json_unescape(m->val, m->val_len, &raw, &rl) != 0)
        return;
    clean = sanitize(raw, rl, &w);
    if (clean != NULL)
        snprintf(out, cap, "%s", clean);
    free(clean);
    free(raw);
}

static void print_gap(void *arg, size_t file, uint64_t line, const char *rec, size_t len)
{
    char **names = arg;
    struct px_jfield f[MAX_FIELDS];
    char lost[32], from[80], to[80], why[200];
    size_t n = 0;

    if (px_auditcli_json_parse(rec, len, f, MAX_FIELDS, &n) != 0)
        n = 0;
    gap_field(f, n, "lost", lost, sizeof lost);
    gap_field(f, n, "from", from, sizeof from);
    gap_field(f, n, "to", to, sizeof to);
    gap_field(f, n, "reason", why, sizeof why);
    printf("%s:%llu: gap: %s record(s) lost from %s to %s (%s)\n", names[file],
           (unsigned long long)line, lost, from, to, why);
}

static int cmd_verify(int argc, char **argv)
{
    struct px_auditcli_verdict v;
    int rc;

    if (argc < 2) {
        fprintf(stderr, "usage: fenceproxy audit verify FILE...\n");
        return 2;
    }
    errno = 0;
    rc = px_auditcli_verify_gaps((const char *const *)argv + 1, (size_t)argc - 1, &v, print_gap,
                                 argv + 1);
    if (rc == 0 && v.gaps > 0)
        printf("ok %llu records; %llu gap record(s): %llu record(s) lost, not tampered with\n",
               (unsigned long long)v.records, (unsigned long long)v.gaps,
               (unsigned long long)v.lost);
    else if (rc == 0)
        printf("ok %llu records\n", (unsigned long long)v.records);
    else if (rc == 1)
        printf("%s:%llu: chain broken\n", argv[1 + v.bad_file], (unsigned long long)v.bad_line);
    else
        fprintf(stderr, "%s: %s\n", argv[1 + v.bad_file], strerror(errno));
    fflush(stdout);
    return rc;
}

/* ---- tail --------------------------------------------------------------- */

enum {
    COL_TIME,
    COL_EVENT,
    COL_RESOURCE,
    COL_TOKEN,
    COL_HIGHEST,
    COL_METHOD,
    COL_PATH,
    COL_CLIENT,
    COL_REQUEST_ID,
    NCOLS
};

static const char *const col_head[NCOLS] = {"TIME",   "EVENT", "RESOURCE", "TOKEN",     "HIGHEST",
                                            "METHOD", "PATH",  "CLIENT",   "REQUEST_ID"};
static const char *const col_key[NCOLS] = {"ts",     "event", "resource", "token",     "highest",
                                           "method", "path",  "client",   "request_id"};
#define COL_MAX_WIDTH 60

/* Is cp a code point that must not reach a terminal as is? Controls (C0,
 * DEL, C1) and the bidirectional overrides that reorder what is shown. */
static int cp_hidden(unsigned long cp)
{
    return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || cp == 0x200E || cp == 0x200F ||
           (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
}

/* A printable copy of s (len bytes): hidden code points as \uXXXX, bytes of
 * invalid UTF-8 as \xNN, cut to COL_MAX_WIDTH code points. *width gets its
 * width in code points. Returns a malloc'd string or NULL. */
static char *sanitize(const char *s, size_t len, size_t *width)
{
    char *o = malloc(len * 6 + 8);
    size_t i = 0, k = 0, w = 0;

    if (o == NULL)
        return NULL;
    while (i < len) {
        unsigned long cp = 0;
        size_t u = utf8_seq((const unsigned char *)s + i, len - i, &cp);
        if (u == 0) {
            k += (size_t)sprintf(o + k, "\\x%02x", (unsigned char)s[i]);
            w += 4;
            i++;
        } else if (cp_hidden(cp)) {
            k += (size_t)sprintf(o + k, "\\u%04lx", cp);
            w += 6;
            i += u;
        } else {
            memcpy(o + k, s + i, u);
            k += u;
            w++;
            i += u;
        }
    }
    if (w > COL_MAX_WIDTH) {
        /* Keep COL_MAX_WIDTH - 3 code points, then "...". The output is
         * valid UTF-8, so counting lead bytes counts code points. */
        size_t j = 0, cps = 0;
        for (; j < k; j++) {
            if (((unsigned char)o[j] & 0xC0) != 0x80 && cps++ == COL_MAX_WIDTH - 3)
                break;
        }
        memcpy(o + j, "...", 3);
        k = j + 3;
        w = COL_MAX_WIDTH;
    }
    o[k] = '\0';
    *width = w;
    return o;
}

/* The text to show for member key of a record ("-" when absent or null). */
static char *cell(const struct px_jfield *f, size_t n, const char *key, size_t *width)
{
    const struct px_jfield *m = px_auditcli_json_get(f, n, key);
    char *raw = NULL, *res;
    size_t rlen = 0;

    if (m == NULL || m->type == PX_J_NULL)
        return sanitize("-", 1, width);
    if (m->type != PX_J_STRING)
        return sanitize(m->val, m->val_len, width);
    if (px_auditcli_json_unescape(m->val, m->val_len, &raw, &rlen) != 0)
        return NULL;
    if (strcmp(key, "token") == 0) {
        /* A malformed token is text: quote it so it is not read as a number. */
        char *q = malloc(rlen + 3);
        if (q == NULL) {
            free(raw);
            return NULL;
        }
        q[0] = '"';
        memcpy(q + 1, raw, rlen);
        q[rlen + 1] = '"';
        free(raw);
        raw = q;
        rlen += 2;
    }
    res = sanitize(raw, rlen, width);
    free(raw);
    return res;
}

static int resource_is(const char *line, size_t len, const char *want)
{
    struct px_jfield f[MAX_FIELDS];
    const struct px_jfield *m;
    char *r = NULL;
    size_t n, rl = 0;
    int eq;

    if (px_auditcli_json_parse(line, len, f, MAX_FIELDS, &n) != 0)
        return 0;
    if (want == NULL)
        return 1;
    m = px_auditcli_json_get(f, n, "resource");
    if (m == NULL || m->type != PX_J_STRING ||
        px_auditcli_json_unescape(m->val, m->val_len, &r, &rl) != 0)
        return 0;
    eq = rl == strlen(want) && memcmp(r, want, rl) == 0;
    free(r);
    return eq;
}

static int parse_count(const char *s, long *out)
{
    char *end;
    long v;

    if (s == NULL || !is_digit((unsigned char)s[0]))
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 1 || v > TAIL_MAX_N)
        return -1;
    *out = v;
    return 0;
}

static void tail_usage(void)
{
    fprintf(stderr, "usage: fenceproxy audit tail [-n N] [--resource R] FILE\n");
}

static int print_table(char **lines, size_t count)
{
    struct px_jfield f[MAX_FIELDS];
    char **cells = calloc(count * NCOLS + 1, sizeof *cells);
    size_t *widths = calloc(count * NCOLS + 1, sizeof *widths);
    size_t colw[NCOLS];
    int rc = 2;

    if (cells == NULL || widths == NULL)
        goto out;
    for (size_t c = 0; c < NCOLS; c++)
        colw[c] = strlen(col_head[c]);
    for (size_t r = 0; r < count; r++) {
        size_t n = 0;
        if (px_auditcli_json_parse(lines[r], strlen(lines[r]), f, MAX_FIELDS, &n) != 0)
            n = 0;
        for (size_t c = 0; c < NCOLS; c++) {
            size_t i = r * NCOLS + c;
            cells[i] = cell(f, n, col_key[c], &widths[i]);
            if (cells[i] == NULL)
                goto out;
            if (widths[i] > colw[c])
                colw[c] = widths[i];
        }
    }
    for (size_t c = 0; c < NCOLS; c++)
        printf("%s%*s", col_head[c], c + 1 < NCOLS ? (int)(colw[c] - strlen(col_head[c]) + 2) : 0,
               "");
    printf("\n");
    for (size_t r = 0; r < count; r++) {
        for (size_t c = 0; c < NCOLS; c++) {
            size_t i = r * NCOLS + c;
            printf("%s%*s", cells[i], c + 1 < NCOLS ? (int)(colw[c] - widths[i] + 2) : 0, "");
        }
        printf("\n");
    }
    rc = 0;
out:
    for (size_t i = 0; cells != NULL && i < count * NCOLS; i++)
        free(cells[i]);
    free(cells);
    free(widths);
    if (rc != 0)
        fprintf(stderr, "audit tail: out of memory\n");
    return rc;
}

static int cmd_tail(int argc, char **argv)
{
    const char *file = NULL, *resource = NULL;
    long want = 20;
    char **ring = NULL, *line = NULL;
    size_t cap = 0, count = 0, head = 0;
    FILE *f = NULL;
    ssize_t r;
    int rc = 2;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-n") == 0) {
            if (parse_count(i + 1 < argc ? argv[++i] : NULL, &want) != 0) {
                fprintf(stderr, "audit tail: -n wants a number from 1 to %d\n", TAIL_MAX_N);
                goto out;
            }
        } else if (strcmp(argv[i], "--resource") == 0) {
            if (i + 1 >= argc) {
                tail_usage();
                goto out;
            }
            resource = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            tail_usage();
            goto out;
        } else if (file == NULL) {
            file = argv[i];
        } else {
            tail_usage();
            goto out;
        }
    }
    if (file == NULL) {
        tail_usage();
        goto out;
    }
    f = fopen(file, "rb");
    if (f == NULL) {
        fprintf(stderr, "%s: %s\n", file, strerror(errno));
        goto out;
    }
    ring = calloc((size_t)want, sizeof *ring);
    if (ring == NULL)
        goto out;
    /* One pass over the file, keeping the last `want` matching lines. */
    while ((r = getline(&line, &cap, f)) >= 0) {
        size_t len = (size_t)r;
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        if (memchr(line, '\0', len) != NULL || !resource_is(line, len, resource))
            continue;
        free(ring[head]);
        ring[head] = line;
        line = NULL;
        cap = 0;
        head = (head + 1) % (size_t)want;
        if (count < (size_t)want)
            count++;
    }
    if (ferror(f)) {
        fprintf(stderr, "%s: %s\n", file, strerror(errno));
        goto out;
    }
    /* Oldest first: rotate the ring into order. */
    char **ordered = calloc(count + 1, sizeof *ordered);
    if (ordered == NULL)
        goto out;
    for (size_t i = 0; i < count; i++)
        ordered[i] = ring[(head + (size_t)want - count + i) % (size_t)want];
    rc = print_table(ordered, count);
    free(ordered);
out:
    if (f != NULL)
        fclose(f);
    for (long i = 0; ring != NULL && i < want; i++)
        free(ring[i]);
    free(ring);
    free(line);
    fflush(stdout);
    return rc;
}

int px_auditcli_main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "verify") == 0)
        return cmd_verify(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "tail") == 0)
        return cmd_tail(argc - 1, argv + 1);
    fprintf(stderr, "usage: fenceproxy audit verify FILE...\n"
                    "       fenceproxy audit tail [-n N] [--resource R] FILE\n");
    return 2;
}

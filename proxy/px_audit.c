/* px_audit: builds the audit records, keeps the hash chain and hands the
 * lines to a px_logw writer. It owns the writer, the chain head (prev) and a
 * line buffer reused across records. It is the only proxy file that uses
 * OpenSSL's digests. The chain head advances only when the writer accepted
 * the line, so a dropped record leaves no gap in the chain: the next line
 * written chains to the last line written. */
#include "px_audit.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pol_chars.h"
#include "pol_decide.h"
#include "px_logw.h"

#define AUDIT_DEFAULT_BUFFER (1u << 20)
/* A last line longer than this is not ours: refuse to start on the file. */
#define AUDIT_MAX_LINE (16u << 20)

struct px_audit {
    struct px_logw *w;
    char prev[65];
    char *buf; /* reused line buffer */
    size_t cap;
    uint64_t dropped;
};

void px_audit_sha256_hex(const char *data, size_t len, char out[65])
{
    const char *hex = pol_chars_hex_lower;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    /* EVP_Digest only fails without memory; an all-zero hash then breaks
     * the chain visibly instead of crashing the proxy. */
    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32) {
        memset(md, 0, sizeof md);
        mdlen = 32;
    }
    for (unsigned int i = 0; i < mdlen; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

static int put(char **b, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*cap - *len <= n) {
        size_t ncap = *cap ? *cap : 512;
        while (ncap - *len <= n)
            ncap *= 2;
        char *nb = realloc(*b, ncap);
        if (nb == NULL)
            return -1;
        *b = nb;
        *cap = ncap;
    }
    memcpy(*b + *len, s, n);
    *len += n;
    (*b)[*len] = '\0';
    return 0;
}

/* Writes ,"key": and the value as a JSON string (escaped), or null. */
static int put_field(char **b, size_t *len, size_t *cap, const char *key, const char *s, size_t n)
{
    if (put(b, len, cap, ",\"", 2) != 0 || put(b, len, cap, key, strlen(key)) != 0 ||
        put(b, len, cap, "\":", 2) != 0)
        return -1;
    if (s == NULL)
        return put(b, len, cap, "null", 4);
    if (put(b, len, cap, "\"", 1) != 0 || pol_json_append_escaped(b, len, cap, s, n) != 0)
        return -1;
    return put(b, len, cap, "\"", 1);
}

static size_t cstrlen(const char *s)
{
    return s ? strlen(s) : 0;
}

/* The record for ev chained to prev, into *b (*len bytes, no newline). */
static int format_into(const struct px_audit_event *ev, const char *prev, char **b, size_t *len,
                       size_t *cap)
{
    char tmp[128];
    struct tm tm;
    time_t sec = (time_t)(ev->ts_ms / 1000);
    int n;

    *len = 0;
    if (gmtime_r(&sec, &tm) == NULL)
        memset(&tm, 0, sizeof tm);
    n = snprintf(tmp, sizeof tmp, "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03uZ\"",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 (unsigned)(ev->ts_ms % 1000));
    if (put(b, len, cap, tmp, (size_t)n) != 0 ||
        put_field(b, len, cap, "event", ev->event, cstrlen(ev->event)) != 0 ||
        put_field(b, len, cap, "route", ev->route, cstrlen(ev->route)) != 0 ||
        put_field(b, len, cap, "resource", ev->resource, ev->resource_len) != 0)
        return -1;
    if (!ev->token_present) {
        if (put(b, len, cap, ",\"token\":null", 13) != 0)
            return -1;
    } else if (ev->token_is_number) {
        n = snprintf(tmp, sizeof tmp, ",\"token\":%" PRIu64, ev->token);
        if (put(b, len, cap, tmp, (size_t)n) != 0)
            return -1;
    } else if (put_field(b, len, cap, "token", ev->token_raw ? ev->token_raw : "",
                         ev->token_raw ? ev->token_raw_len : 0) != 0) {
        return -1;
    }
    n = snprintf(tmp, sizeof tmp, ",\"highest\":%" PRIu64, ev->highest);
    if (put(b, len, cap, tmp, (size_t)n) != 0 ||
        put_field(b, len, cap, "method", ev->method, ev->method_len) != 0 ||
        put_field(b, len, cap, "path", ev->path, ev->path_len) != 0 ||
        put_field(b, len, cap, "client", ev->client, cstrlen(ev->client)) != 0)
        return -1;
    if (ev->forwarded_for != NULL &&
        put_field(b, len, cap, "forwarded_for", ev->forwarded_for, ev->forwarded_for_len) != 0)
        return -1;
    if (put_field(b, len, cap, "request_id", ev->request_id, ev->request_id_len) != 0 ||
        put_field(b, len, cap, "prev", prev, 64) != 0 || put(b, len, cap, "}", 1) != 0)
        return -1;
    return 0;
}

int px_audit_format(const struct px_audit_event *ev, const char prev[65], char **out, size_t *len)
{
    char *b = NULL;
    size_t blen = 0, cap = 0;

    if (format_into(ev, prev, &b, &blen, &cap) != 0) {
        free(b);
        return -1;
    }
    *out = b;
    *len = blen;
    return 0;
}

/* Reads the last line of the open file fd (size bytes) into *line and *len,
 * without its newline; *torn tells that the file does not end with one. */
static int read_last_line(int fd, off_t size, char **line, size_t *len, int *torn)
{
    char chunk[65536];
    off_t end = size, start = 0, pos;
    char last;
    int rc = -1;

    *line = NULL;
    if (pread(fd, &last, 1, size - 1) != 1)
        goto out;
    *torn = last != '\n';
    if (!*torn)
        end = size - 1;
    /* Scan backwards for the newline that ends the line before. */
    for (pos = end; pos > 0 && start == 0;) {
        size_t n = (size_t)(pos < (off_t)sizeof chunk ? pos : (off_t)sizeof chunk);
        if (pread(fd, chunk, n, pos - (off_t)n) != (ssize_t)n)
            goto out;
        for (size_t i = n; i > 0; i--)
            if (chunk[i - 1] == '\n') {
                start = pos - (off_t)n + (off_t)i;
                break;
            }
        pos -= (off_t)n;
        if (start == 0 && end - pos > (off_t)AUDIT_MAX_LINE) {
            errno = EFBIG;
            goto out;
        }
    }
    *len = (size_t)(end - start);
    *line = malloc(*len + 1);
    if (*line == NULL)
        goto out;
    if (*len > 0 && pread(fd, *line, *len, start) != (ssize_t)*len) {
        free(*line);
        *line = NULL;
        goto out;
    }
    rc = 0;
out:
    if (rc != 0 && errno == 0)
        errno = EIO;
    return rc;
}

/* Sets a->prev from the file's last line; closes a torn last line. */
static int seed_chain(struct px_audit *a, const char *path, char *err, size_t errlen)
{
    struct stat sb;
    char *line = NULL;
    size_t len = 0;
    int torn = 0, rc = -1;
    int fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0640);

    if (fd < 0 || fstat(fd, &sb) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto out;
    }
    if (sb.st_size == 0) {
        px_audit_sha256_hex("", 0, a->prev);
        rc = 0;
        goto out;
    }
    errno = 0;
    if (read_last_line(fd, sb.st_size, &line, &len, &torn) != 0) {
        snprintf(err, errlen, "%s: reading the last line: %s", path, strerror(errno));
        goto out;
    }
    if (torn && write(fd, "\n", 1) != 1) {
        snprintf(err, errlen, "%s: closing a torn last line: %s", path, strerror(errno));
        goto out;
    }
    px_audit_sha256_hex(line, len, a->prev);
    rc = 0;
out:
    free(line);
    if (fd >= 0)
        close(fd);
    return rc;
}

struct px_audit *px_audit_open_sized(const char *path, size_t max_buffered_bytes, char *err,
                                     size_t errlen)
{
    struct px_audit *a = calloc(1, sizeof *a);

    if (errlen > 0)
        err[0] = '\0';
    if (a == NULL) {
        snprintf(err, errlen, "audit: out of memory");
        goto fail;
    }
    if (seed_chain(a, path, err, errlen) != 0)
        goto fail;
    a->w = px_logw_open(path, max_buffered_bytes, err, errlen);
    if (a->w == NULL)
        goto fail;
    return a;
fail:
    free(a);
    return NULL;
}

struct px_audit *px_audit_open(const char *path, char *err, size_t errlen)
{
    return px_audit_open_sized(path, AUDIT_DEFAULT_BUFFER, err, errlen);
}

int px_audit_record(struct px_audit *a, const struct px_audit_event *ev)
{
    size_t len = 0;

    if (format_into(ev, a->prev, &a->buf, &len, &a->cap) != 0 ||
        put(&a->buf, &len, &a->cap, "\n", 1) != 0)
        goto drop;
    if (px_logw_write(a->w, a->buf, len) != 0)
        goto drop;
    /* Queued: the next record chains to this one (newline excluded). */
    px_audit_sha256_hex(a->buf, len - 1, a->prev);
    return 0;
drop:
    a->dropped++;
    return -1;
}

void px_audit_reopen(struct px_audit *a)
{
    px_logw_reopen(a->w);
}

int px_audit_flush(struct px_audit *a, int timeout_ms)
{
    return px_logw_flush(a->w, timeout_ms);
}

uint64_t px_audit_dropped(const struct px_audit *a)
{
    return a->dropped;
}

uint64_t px_audit_errors(const struct px_audit *a)
{
    return px_logw_errors(a->w);
}

const char *px_audit_prev(const struct px_audit *a)
{
    return a->prev;
}

void px_audit_close(struct px_audit **ap)
{
    if (ap == NULL || *ap == NULL)
        return;
    px_logw_close(&(*ap)->w);
    free((*ap)->buf);
    free(*ap);
    *ap = NULL;
}

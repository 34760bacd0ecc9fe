/* px_audit: builds the audit records, keeps the hash chain and hands the
 * lines to a px_logw writer. It owns the writer, the chain head (prev), the
 * account of records lost and not yet told (the pending gap) and a line
 * buffer reused across records. It is the only proxy file that uses
 * OpenSSL's digests.
 *
 * S7, nothing lost silently: the chain is computed on the writer thread, as
 * lines reach the file (the loop queues each record with a placeholder
 * prev, which the sink fills in), so the chain always runs through what is
 * on disk. A record that cannot be written (the writer's buffer full, a
 * write error such as ENOSPC, the file removed and not creatable) is counted
 * and its time kept; a partly written batch is truncated back to its last
 * whole line. Before the next line reaches the file the sink writes a `gap`
 * record (how many, from when to when, why), chained like any other, so
 * `audit verify` reports the loss and still catches an edit. Locking: the
 * chain head is the writer's; the pending gap and the writable flag are
 * shared with the loop under mu, which is never held across a write. */
#include "px_audit.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pol_chars.h"
#include "pol_decide.h"
#include "px_log.h"
#include "px_logw.h"

#define AUDIT_DEFAULT_BUFFER (1u << 20)
/* A last line longer than this is not ours: refuse to start on the file. */
#define AUDIT_MAX_LINE (16u << 20)

#define TS_LEN 24 /* 2024-01-02T03:04:05.678Z */
static const char zero_prev[65] =
    "0000000000000000000000000000000000000000000000000000000000000000";

/* Records lost and not yet told by a gap record. */
struct loss {
    uint64_t n;
    char from[TS_LEN + 1], to[TS_LEN + 1]; /* times of the first and last */
    const char *reason;                    /* static text of the first cause */
};

struct px_audit {
    struct px_logw *w;
    char prev[65]; /* writer thread: hash of the last line in the file */
    char *buf;     /* loop: reused line buffer */
    size_t cap;
    uint64_t dropped; /* loop: records that could not be queued */

    pthread_mutex_t mu;
    struct loss loss; /* under mu */
    atomic_int writable;
    atomic_uint_fast64_t lost; /* queued, then not written */
    atomic_uint_fast64_t gaps; /* gap records written */
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

/* ms since the epoch as the records' time text (TS_LEN chars). */
static void fmt_ts(uint64_t ms, char out[TS_LEN + 1])
{
    struct tm tm;
    time_t sec = (time_t)(ms / 1000);
    char tmp[96];

    if (gmtime_r(&sec, &tm) == NULL)
        memset(&tm, 0, sizeof tm);
    snprintf(tmp, sizeof tmp, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (unsigned)(ms % 1000));
    memcpy(out, tmp, TS_LEN);
    out[TS_LEN] = '\0';
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
    if (ev->has_old)
        n += snprintf(tmp + n, sizeof tmp - (size_t)n, ",\"old\":%" PRIu64, ev->old);
    if (put(b, len, cap, tmp, (size_t)n) != 0 ||
        put_field(b, len, cap, "method", ev->method, ev->method_len) != 0 ||
        put_field(b, len, cap, "path", ev->path, ev->path_len) != 0 ||
        put_field(b, len, cap, "client", ev->client, cstrlen(ev->client)) != 0)
        return -1;
    if (ev->client_subject != NULL &&
        put_field(b, len, cap, "client_subject", ev->client_subject,
                  cstrlen(ev->client_subject)) != 0)
        return -1;
    if (ev->forwarded_for != NULL &&
        put_field(b, len, cap, "forwarded_for", ev->forwarded_for, ev->forwarded_for_len) != 0)
        return -1;
    if ((ev->reason != NULL &&
         put_field(b, len, cap, "reason", ev->reason, strlen(ev->reason)) != 0) ||
        (ev->operator_id != NULL &&
         put_field(b, len, cap, "operator", ev->operator_id, strlen(ev->operator_id)) != 0))
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

/* Adds n records, timed from..to, to the pending gap; they count as lost
 * (queued, then not written) when queued is set. Any thread. */
static void add_loss(struct px_audit *a, uint64_t n, const char *from, const char *to,
                     const char *reason, int queued)
{
    uint64_t pending;

    if (n == 0)
        return;
    pthread_mutex_lock(&a->mu);
    if (a->loss.n == 0 || strcmp(from, a->loss.from) < 0)
        memcpy(a->loss.from, from, TS_LEN + 1);
    if (a->loss.n == 0 || strcmp(to, a->loss.to) > 0)
        memcpy(a->loss.to, to, TS_LEN + 1);
    if (a->loss.n == 0)
        a->loss.reason = reason;
    a->loss.n += n;
    pending = a->loss.n;
    atomic_store(&a->writable, 0);
    pthread_mutex_unlock(&a->mu);
    if (queued)
        atomic_fetch_add(&a->lost, n);
    px_log_error("audit: %" PRIu64 " record(s) could not be written (%s); %" PRIu64
                 " pending in the next gap record",
                 n, reason, pending);
}

/* The time text of a line we wrote, or "?" padded when it has none. */
static void line_ts(const char *line, size_t len, char out[TS_LEN + 1])
{
    if (len >= 7 + TS_LEN && memcmp(line, "{\"ts\":\"", 7) == 0)
        memcpy(out, line + 7, TS_LEN);
    else
        memset(out, '?', TS_LEN);
    out[TS_LEN] = '\0';
}

/* Counts the lines of p (n bytes of whole lines) as lost. Writer thread. */
static void lose_lines(struct px_audit *a, const char *p, size_t n, const char *reason)
{
    char from[TS_LEN + 1], to[TS_LEN + 1];
    const char *last = p;
    uint64_t cnt = 0;

    if (n == 0)
        return;
    line_ts(p, n, from);
    for (const char *q = p; q < p + n;) {
        const char *nl = memchr(q, '\n', (size_t)(p + n - q));
        const char *end = nl != NULL ? nl + 1 : p + n;
        last = q;
        cnt++;
        q = end;
    }
    line_ts(last, (size_t)(p + n - last), to);
    add_loss(a, cnt, from, to, reason, 1);
}

/* The position of the placeholder prev in a line we formatted (len bytes
 * with its '\n'), or NULL. */
static char *prev_slot(char *line, size_t len)
{
    if (len < 64 + 12 || memcmp(line + len - 3, "\"}\n", 3) != 0 ||
        memcmp(line + len - 3 - 64 - 9, ",\"prev\":\"", 9) != 0)
        return NULL;
    return line + len - 3 - 64;
}

/* Writes p (n bytes of whole lines) at the end of fd. On a short write the
 * file is cut back to the last whole line; returns the bytes kept. */
static size_t write_lines(int fd, const char *p, size_t n, int *err)
{
    off_t start = lseek(fd, 0, SEEK_END);
    size_t done = px_logw_write_fd(fd, p, n), keep = done;

    *err = 0;
    if (done == n)
        return n;
    *err = errno;
    while (keep > 0 && p[keep - 1] != '\n')
        keep--;
    /* A torn line would read as tampering: cut it off (ftruncate frees
     * space, so it works on a full disk). */
    if (keep != done && start >= 0 && ftruncate(fd, start + (off_t)keep) != 0)
        px_log_error("audit: cannot cut a partial line off the file: %s", strerror(errno));
    return keep;
}

static const char *io_reason(int err)
{
    switch (err) {
    case ENOSPC:
        return "no space left on the device";
    case EDQUOT:
        return "disk quota exceeded";
    case EIO:
        return "I/O error";
    case EFBIG:
        return "file too large";
    default:
        return "write error";
    }
}

/* The px_logw sink, on the writer thread: the pending gap record first, then
 * the batch with each line's prev filled in. See the file comment. */
static int audit_sink(void *arg, int fd, char *batch, size_t n)
{
    struct px_audit *a = arg;
    struct loss snap;
    char gap[512], now[TS_LEN + 1];
    struct timespec ts;
    size_t kept;
    int err, glen, rc = -1, wrote_gap = 0;

    if (fd < 0) {
        atomic_store(&a->writable, 0);
        lose_lines(a, batch, n, "the audit file was removed and cannot be created");
        return -1;
    }
    pthread_mutex_lock(&a->mu);
    snap = a->loss;
    memset(&a->loss, 0, sizeof a->loss);
    pthread_mutex_unlock(&a->mu);
    if (snap.n > 0) {
        clock_gettime(CLOCK_REALTIME, &ts);
        fmt_ts((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000, now);
        glen = snprintf(gap, sizeof gap,
                        "{\"ts\":\"%s\",\"event\":\"gap\",\"lost\":%" PRIu64
                        ",\"from\":\"%s\",\"to\":\"%s\",\"reason\":\"%s\",\"prev\":\"%s\"}\n",
                        now, snap.n, snap.from, snap.to, snap.reason ? snap.reason : "?",
                        a->prev);
        kept = write_lines(fd, gap, (size_t)glen, &err);
        if (kept != (size_t)glen) {
            add_loss(a, snap.n, snap.from, snap.to, snap.reason, 0);
            lose_lines(a, batch, n, io_reason(err));
            return -1;
        }
        px_audit_sha256_hex(gap, (size_t)glen - 1, a->prev);
        wrote_gap = 1; /* counted at the end, once writable says how the batch went */
        px_log_warn("audit: writing again; gap record for %" PRIu64
                    " lost record(s) from %s to %s (%s)",
                    snap.n, snap.from, snap.to, snap.reason ? snap.reason : "?");
    }
    for (char *q = batch; q < batch + n;) {
        char *nl = memchr(q, '\n', (size_t)(batch + n - q));
        size_t len = nl != NULL ? (size_t)(nl + 1 - q) : (size_t)(batch + n - q);
        char *slot = prev_slot(q, len);
        if (slot != NULL) {
            memcpy(slot, a->prev, 64);
            px_audit_sha256_hex(q, len - 1, a->prev);
        }
        q += len;
    }
    kept = n > 0 ? write_lines(fd, batch, n, &err) : 0;
    if (kept != n) {
        /* The chain goes back to the last line in the file: the prev of
         * the first line that did not make it. */
        char *first = batch + kept, *nl = memchr(first, '\n', n - kept);
        char *slot = nl != NULL ? prev_slot(first, (size_t)(nl + 1 - first)) : NULL;
        if (slot != NULL) {
            memcpy(a->prev, slot, 64);
            a->prev[64] = '\0';
        }
        lose_lines(a, batch + kept, n - kept, io_reason(err));
        goto out;
    }
    pthread_mutex_lock(&a->mu);
    if (a->loss.n == 0)
        atomic_store(&a->writable, 1);
    rc = a->loss.n == 0 ? 0 : -1;
    pthread_mutex_unlock(&a->mu);
out:
    if (wrote_gap)
        atomic_fetch_add(&a->gaps, 1);
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
    if (pthread_mutex_init(&a->mu, NULL) != 0) {
        free(a);
        a = NULL;
        snprintf(err, errlen, "audit: out of memory");
        goto fail;
    }
    atomic_init(&a->writable, 1);
    atomic_init(&a->lost, 0);
    atomic_init(&a->gaps, 0);
    if (seed_chain(a, path, err, errlen) != 0)
        goto fail;
    a->w = px_logw_open_sink(path, max_buffered_bytes, audit_sink, a, err, errlen);
    if (a->w == NULL)
        goto fail;
    return a;
fail:
    if (a != NULL)
        pthread_mutex_destroy(&a->mu);
    free(a);
    return NULL;
}

struct px_audit *px_audit_open(const char *path, char *err, size_t errlen)
{
    return px_audit_open_sized(path, AUDIT_DEFAULT_BUFFER, err, errlen);
}

int px_audit_record(struct px_audit *a, const struct px_audit_event *ev)
{
    char ts[TS_LEN + 1];
    size_t len = 0;
    const char *why = "out of memory";

    /* The writer fills in prev as the line reaches the file. */
    if (format_into(ev, zero_prev, &a->buf, &len, &a->cap) != 0 ||
        put(&a->buf, &len, &a->cap, "\n", 1) != 0)
        goto drop;
    why = "the audit writer's buffer is full";
    if (px_logw_write(a->w, a->buf, len) != 0)
        goto drop;
    return 0;
drop:
    a->dropped++;
    fmt_ts(ev->ts_ms, ts);
    add_loss(a, 1, ts, ts, why, 0);
    px_logw_kick(a->w); /* the gap record does not wait for the next record */
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

uint64_t px_audit_lost(const struct px_audit *a)
{
    return atomic_load(&((struct px_audit *)a)->lost);
}

uint64_t px_audit_gaps(const struct px_audit *a)
{
    return atomic_load(&((struct px_audit *)a)->gaps);
}

int px_audit_writable(const struct px_audit *a)
{
    return atomic_load(&((struct px_audit *)a)->writable);
}

uint64_t px_audit_errors(const struct px_audit *a)
{
    return px_logw_errors(a->w);
}

void px_audit_prev(struct px_audit *a, char out[65])
{
    /* The writer owns prev; a flush waits until it is idle. */
    px_audit_flush(a, 1000);
    memcpy(out, a->prev, 65);
}

void px_audit_close(struct px_audit **ap)
{
    if (ap == NULL || *ap == NULL)
        return;
    px_logw_close(&(*ap)->w);
    pthread_mutex_destroy(&(*ap)->mu);
    free((*ap)->buf);
    free(*ap);
    *ap = NULL;
}

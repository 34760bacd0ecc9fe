/* px_audit: the tamper-evident audit log. One JSON object per line for every
 * rejected request on a route and every in-flight request whose outcome
 * became unknown. Each line carries "prev", the SHA-256 (lowercase hex) of
 * the previous line's bytes without the newline (of the empty string for the
 * very first line), so an edit, deletion, insertion or reordering breaks the
 * chain; `fenceproxy audit verify` (px_auditcli) checks it. Lines go through
 * px_logw, so recording never waits on the disk. S7: a record that cannot be
 * written is never lost silently: it is counted, logged (rate-limited), and
 * before the next line reaches the file a `gap` record says how many records
 * were lost, from when to when and why, chained like any other:
 *   {"ts":T,"event":"gap","lost":N,"from":T1,"to":T2,"reason":"...","prev":H} */
#ifndef PX_AUDIT_H
#define PX_AUDIT_H

#include <stddef.h>
#include <stdint.h>

struct px_audit;

/* One record. Every pointer is borrowed for the duration of the call; a NULL
 * string is written as null. Strings with a _len are any bytes (escaped);
 * the others are NUL-terminated. */
struct px_audit_event {
    const char *event; /* "stale_token", "missing_token", "malformed_token",
                          "inflight_timeout", "unverified_token", "operator_set", ... */
    const char *route; /* the route's name */
    const char *resource;
    size_t resource_len;
    int token_present;   /* 0: "token":null */
    int token_is_number; /* 1: token below; 0: token_raw as a string */
    uint64_t token;
    const char *token_raw;
    size_t token_raw_len;
    uint64_t highest;
    const char *method;
    size_t method_len;
    const char *path;
    size_t path_len;
    const char *client;        /* "ip:port" */
    const char *client_subject; /* TLS client certificate; NULL: left out */
    const char *forwarded_for; /* NULL: the field is left out */
    size_t forwarded_for_len;
    const char *request_id;
    size_t request_id_len;
    uint64_t ts_ms; /* wall clock, ms since the epoch, from the caller */
    /* operator_set only (fenceproxy tokens set): "old":N after "highest",
     * then "reason" and "operator" after "client"; left out when unset. */
    int has_old;
    uint64_t old;
    const char *reason;      /* NUL-terminated, or NULL */
    const char *operator_id; /* who asked: the CLI's user@host, or NULL */
};

/* Opens path for appending (created 0640) behind a writer buffer of 1 MiB.
 * A non-empty file's last line seeds the chain, so a restart continues it; a
 * last line without its newline (a torn write) is closed with one first and
 * still seeds the chain (verify then reports that line). Returns the log
 * (free with px_audit_close()), or NULL with a message in err (errlen bytes).
 * Call from the loop's thread before serving. */
struct px_audit *px_audit_open(const char *path, char *err, size_t errlen);

/* The same with a chosen writer buffer size (bytes, > 0). */
struct px_audit *px_audit_open_sized(const char *path, size_t max_buffered_bytes, char *err,
                                     size_t errlen);

/* Formats ev as one line and queues it; the writer chains it as it reaches
 * the file. Returns 0, or -1 when the line was dropped (writer buffer full,
 * or no memory): the drop is counted in px_audit_dropped() and goes into the
 * next gap record; the caller counts fence_audit_dropped_total and logs.
 * Loop thread only. */
int px_audit_record(struct px_audit *a, const struct px_audit_event *ev);

/* Builds the line for ev chained to prev (64 hex chars) into *out (malloc'd,
 * NUL-terminated, without '\n'; the caller frees it) and its length into
 * *len. Pure: for tests and px_audit_record(). Returns 0 or -1 (no memory). */
int px_audit_format(const struct px_audit_event *ev, const char prev[65], char **out, size_t *len);

/* Reopens the path after the lines queued so far (SIGHUP, after logrotate
 * renamed the file). The chain continues into the new file. */
void px_audit_reopen(struct px_audit *a);

/* Waits up to timeout_ms for the queued lines to reach the file. 0 or -1. */
int px_audit_flush(struct px_audit *a, int timeout_ms);

/* Records dropped since open before they were queued (buffer full or no
 * memory). Loop thread. */
uint64_t px_audit_dropped(const struct px_audit *a);

/* Records queued and then not written (write error such as ENOSPC, the file
 * removed and not creatable). They are not in px_audit_dropped(); the
 * metrics add them to fence_audit_dropped_total. Any thread. */
uint64_t px_audit_lost(const struct px_audit *a);

/* Gap records written since open. Any thread. */
uint64_t px_audit_gaps(const struct px_audit *a);

/* 1 while records reach the file; 0 from the first record that could not be
 * written (or the file found unwritable) until a later write, its gap
 * record first, succeeded. The writer probes every PX_LOGW_RETRY_MS while
 * it is 0, so it recovers without new records. Any thread; cheap. */
int px_audit_writable(const struct px_audit *a);

/* Failed sink calls in the writer thread (see px_logw_errors()). */
uint64_t px_audit_errors(const struct px_audit *a);

/* The current chain head (the hash of the last line in the file) into out,
 * after waiting (1 s at most) for the queued lines. For tests. */
void px_audit_prev(struct px_audit *a, char out[65]);

/* Flushes (bounded), closes and frees *a; sets *a = NULL. Accepts NULL. */
void px_audit_close(struct px_audit **a);

/* SHA-256 of data (len bytes) as 64 lowercase hex chars plus NUL. */
void px_audit_sha256_hex(const char *data, size_t len, char out[65]);

#endif

/* ts_upstream: a recording HTTP/1.1 upstream for integration tests. It runs
 * in the test process (a listener thread plus one thread per connection, at
 * most TS_UPSTREAM_MAX_CONNS at once) on 127.0.0.1 and a port the kernel
 * picks, serves keep-alive connections, and records every request it fully
 * receives: the raw head, method, target, body length and FNV-1a hash, the
 * body's first 64 KiB, the connection it came on and when it arrived and was
 * answered; and, in an arrivals log, every request whose head it read, with
 * when its bytes came and when it ended, so a test can tell which requests
 * were in flight at the same time (ts_upstream_overlaps). Totals of
 * connections and raw bytes let a test prove that nothing reached it. Its
 * parsing is simple on purpose (it is the thing under observation, not
 * under test); a request it cannot parse closes that connection and is
 * counted in ts_upstream_parse_errors(). Every function is thread-safe. No
 * Criterion here: errors are returned and printed. */
#ifndef TS_UPSTREAM_H
#define TS_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

#define TS_UPSTREAM_MAX_CONNS 256
#define TS_UPSTREAM_HEAD_MAX 65536  /* longer heads close the connection */
#define TS_UPSTREAM_BODY_KEEP 65536 /* body bytes kept per request */

struct ts_upstream;

/* One recorded request, copied out by ts_upstream_get(). Strings are
 * NUL-terminated (head may be cut at TS_UPSTREAM_HEAD_MAX). */
struct ts_upstream_req {
    char method[32];
    char target[8200];
    char head[TS_UPSTREAM_HEAD_MAX + 1]; /* request line and fields, with the final CRLFCRLF */
    size_t head_len;
    uint64_t body_len;                   /* decoded length for chunked */
    uint64_t body_hash;                  /* ts_upstream_hash() of the whole decoded body */
    unsigned char body[TS_UPSTREAM_BODY_KEEP]; /* first bytes of the body (not in sink mode) */
    size_t body_kept;
    int chunked;                         /* 1: body came chunked */
    size_t conn;                         /* 0-based index of the connection, in accept order */
    uint64_t recv_ns;                    /* CLOCK_MONOTONIC when fully received */
    uint64_t resp_ns;                    /* CLOCK_MONOTONIC when the response was sent (stamped
                                          * just before its first byte); 0: not yet */
};

/* Starts listening on 127.0.0.1:0. Returns the upstream, or NULL (message on
 * stderr). Stop with ts_upstream_stop(). */
struct ts_upstream *ts_upstream_start(void);

/* Its port. */
int ts_upstream_port(const struct ts_upstream *u);

/* Closes the listener and every connection, wakes held and delayed requests
 * (they get no response), joins all threads, frees, NULLs *u. Bounded: every
 * thread waits in poll/cond calls that the stop interrupts. Accepts NULL. */
void ts_upstream_stop(struct ts_upstream **u);

/* Raw bytes of every later response (copied). Default:
 * "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok". A HEAD request gets the
 * part up to the blank line only. When the raw head says "Connection: close",
 * the connection is closed after it. Returns 0 or -1. */
int ts_upstream_set_response(struct ts_upstream *u, const char *raw);

/* Requests whose raw head contains substr (copied; up to 16 at once, 255
 * bytes each) are recorded as usual but not answered until
 * ts_upstream_release() with the same text. Other connections keep being
 * served meanwhile. Returns 0 or -1. */
int ts_upstream_hold(struct ts_upstream *u, const char *substr);
void ts_upstream_release(struct ts_upstream *u, const char *substr);

/* Waits ms before every later response. */
void ts_upstream_set_delay_ms(struct ts_upstream *u, int ms);

/* on != 0: close each connection right after its response. */
void ts_upstream_set_close_after_response(struct ts_upstream *u, int on);

/* on != 0: keep no body bytes (length and hash only), for huge bodies. */
void ts_upstream_set_sink(struct ts_upstream *u, int on);

/* Requests fully received so far. */
size_t ts_upstream_count(struct ts_upstream *u);
/* Connections accepted so far. */
size_t ts_upstream_connections(struct ts_upstream *u);
/* Raw bytes received so far on all connections. */
uint64_t ts_upstream_bytes(struct ts_upstream *u);
/* Requests it could not parse (each closed its connection). */
size_t ts_upstream_parse_errors(struct ts_upstream *u);

/* Waits until at least n requests have been fully received. Returns 0, or -1
 * after timeout_ms. */
int ts_upstream_wait_count(struct ts_upstream *u, size_t n, int timeout_ms);

/* Copies request i (0-based, in order of full receipt) to *out. Returns 0,
 * or -1 when there is no such request. out is large (~140 KiB): prefer a
 * static or heap one. */
int ts_upstream_get(struct ts_upstream *u, size_t i, struct ts_upstream_req *out);

/* Finds header fields called name (case-insensitive) in req's head. Copies
 * the first one's value (surrounding blanks trimmed) into out (cap bytes,
 * cut if needed) when out is non-NULL. Returns how many such fields there
 * are (0: none). */
int ts_upstream_header(const struct ts_upstream_req *req, const char *name, char *out,
                       size_t cap);

/* The arrivals log: every request whose head was read, whether or not its
 * body ever came in full (a request cut off by its proxy is there, never
 * in ts_upstream_get()), in order of head arrival. It tells what was in
 * flight at the storage when: a request is in flight from its head's
 * arrival until its response was sent (complete), or until its last byte
 * arrived (cut off: nothing more of it can come), or still (its connection
 * is open, or it was fully received and not answered). */
struct ts_upstream_arrival {
    char method[32];
    char target[1024];   /* cut if longer */
    char field[128];     /* the value of the field asked for ("" without) */
    uint64_t head_ns;    /* CLOCK_MONOTONIC when its head was read */
    uint64_t last_ns;    /* when the last byte of it was read */
    uint64_t done_ns;    /* when fully received; 0: not (yet) */
    uint64_t resp_ns;    /* when its response was stamped; 0: none */
    uint64_t end_ns;     /* when it ended (answered, or its connection closed); 0: not yet */
    uint64_t body_got;   /* body bytes read so far */
    size_t conn;
    int complete;
    unsigned char body[256]; /* first body bytes of a complete request (not in sink mode) */
    size_t body_kept;
};

/* Requests whose head was read so far. */
size_t ts_upstream_arrivals(struct ts_upstream *u);

/* Copies arrival i (0-based) to *out, with the value of header field
 * (case-insensitive; NULL for none) in out->field. 0 / -1. */
int ts_upstream_arrival(struct ts_upstream *u, size_t i, const char *field,
                        struct ts_upstream_arrival *out);

/* The end of a's time in flight (see above); UINT64_MAX: still. */
uint64_t ts_upstream_inflight_end(const struct ts_upstream_arrival *a);

/* Counts the pairs of requests whose targets start with prefix (NULL: all)
 * and whose values of header field differ (a missing field is the value
 * "") that were in flight at the same time, e.g. two different fencing
 * tokens for one resource at once (S3 across proxies). The first pair is
 * described in why (may be NULL). Returns the count, or (size_t)-1 when out
 * of memory. */
size_t ts_upstream_overlaps(struct ts_upstream *u, const char *field, const char *prefix,
                            char *why, size_t whylen);

/* FNV-1a 64: ts_upstream_hash_update(TS_FNV_OFFSET, buf, len) over a body's
 * pieces gives the same value as body_hash. */
#define TS_FNV_OFFSET 0xcbf29ce484222325ULL
uint64_t ts_upstream_hash_update(uint64_t h, const void *buf, size_t len);
uint64_t ts_upstream_hash(const void *buf, size_t len);

#endif

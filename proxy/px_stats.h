/* px_stats: the proxy's metrics. One X-macro table (PX_STATS_TABLE) lists
 * every plain counter, gauge and histogram with its Prometheus name and help
 * text; it generates the enums, the storage and the /metrics text. The two
 * labelled families, fence_requests_total{route,outcome} and
 * fence_rejections_total{reason}, take their label values from the
 * PX_OUTCOMES table. The storage is one global object, used
 * from the event loop's thread only (threads hand their numbers to the loop
 * first), so nothing here locks. */
#ifndef PX_STATS_H
#define PX_STATS_H

#include <stddef.h>
#include <stdint.h>

/* The outcome table: how a request (or a connection refused before it had
 * one) ended. X(enum suffix, label, request, rejection, audited):
 * label is the value of fence_requests_total{outcome} when request is 1 and
 * of fence_rejections_total{reason} when rejection is 1, and the audit
 * event (and log word) when audited is 1. px_report reports from it. */
#define PX_OUTCOMES(X)                                        \
    X(FORWARDED, "forwarded", 1, 0, 0)                        \
    X(STALE_TOKEN, "stale_token", 1, 1, 1)                    \
    X(MISSING_TOKEN, "missing_token", 1, 1, 1)                \
    X(MALFORMED_TOKEN, "malformed_token", 1, 1, 1)            \
    X(BAD_REQUEST, "bad_request", 1, 1, 0)                    \
    X(UPSTREAM_ERROR, "upstream_error", 1, 0, 0)              \
    X(STORE_FAILED, "store_failed", 1, 1, 0)                  \
    X(STORE_FULL, "store_full", 1, 1, 1)                      \
    X(PREEMPTED, "preempted", 1, 1, 1)                        \
    X(UPSTREAM_BUSY, "upstream_busy", 1, 1, 0)                \
    X(AUDIT_UNAVAILABLE, "audit_unavailable", 1, 1, 0)        \
    X(UNVERIFIED_TOKEN, "unverified_token", 1, 1, 1)          \
    X(LOCK_BACKEND_FAILED, "lock_backend_unavailable", 1, 1, 1) \
    X(HANDOVER_TIMEOUT, "handover_timeout", 1, 1, 1)          \
    X(OWNERSHIP_LAPSED, "ownership_lapsed", 1, 1, 1)          \
    X(TOO_MANY_CONNECTIONS, "too_many_connections", 0, 1, 0)  \
    X(HEADER_TIMEOUT, "header_timeout", 0, 1, 0)

/* The table. C(enum, name, help) a counter, G(enum, name, help) a gauge,
 * H(enum, name, help, buckets) a histogram whose bucket bounds are one of
 * the arrays named in px_stats.c (DURATION or BATCH). */
#define PX_STATS_TABLE(C, G, H)                                                       \
    G(CONNECTIONS, "fence_connections", "Open client connections.")                  \
    G(INFLIGHT, "fence_inflight_requests",                                            \
      "Requests forwarded to the upstream and not yet completed.")                   \
    G(UPSTREAM_IDLE, "fence_upstream_idle_connections",                              \
      "Idle keep-alive connections in the upstream pool.")                           \
    G(UPSTREAM_OPEN, "fence_upstream_connections",                                   \
      "Connections to the upstream, idle and in use (max_upstream_connections).")    \
    G(UPSTREAM_QUEUED, "fence_upstream_queued_requests",                             \
      "Requests waiting for an upstream connection.")                                 \
    G(STORE_UP, "fence_store_up",                                                     \
      "1 while the token store works, 0 after it failed (the proxy then rejects).")  \
    C(CONNECTIONS_ACCEPTED, "fence_connections_accepted_total",                       \
      "Client connections accepted.")                                                 \
    C(BYTES_IN, "fence_bytes_in_total", "Bytes read from clients.")                   \
    C(BYTES_OUT, "fence_bytes_out_total", "Bytes written to clients.")                \
    C(UPSTREAM_OPENED, "fence_upstream_connections_opened_total",                     \
      "Connections opened to the upstream.")                                          \
    C(UPSTREAM_REUSED, "fence_upstream_connections_reused_total",                     \
      "Requests sent on a pooled upstream connection.")                               \
    C(STORE_ADVANCES, "fence_store_advances_total",                                   \
      "Highest-token advances committed to the token store.")                        \
    C(INFLIGHT_TIMEOUTS, "fence_inflight_timeouts_total",                             \
      "Forwarded requests whose outcome became unknown (audited).")                  \
    C(AUDIT_RECORDS, "fence_audit_records_total",                                     \
      "Records queued to the audit log.")                                             \
    C(AUDIT_DROPPED, "fence_audit_dropped_total",                                     \
      "Audit records not written (buffer full, write error, file removed).")         \
    C(ACCESS_LOG_DROPPED, "fence_access_log_dropped_total",                           \
      "Access log lines dropped because the writer's buffer was full.")              \
    C(LOG_REOPENS, "fence_log_reopens_total", "Log reopen requests (SIGHUP, SIGUSR1).") \
    C(CONFIG_RELOADS, "fence_config_reloads_total",                                   \
      "Configuration reloads applied (SIGHUP, POST /reload).")                       \
    C(CONFIG_RELOAD_FAILURES, "fence_config_reload_failures_total",                   \
      "Configuration reloads refused (invalid file, or a key that needs a restart).") \
    G(CONFIG_GENERATION, "fence_config_generation",                                   \
      "The configuration in effect: 1 at start, +1 per applied reload.")             \
    C(VERIFY_CALLS, "fence_verify_calls_total",                                       \
      "Token checks sent to a route's lock backend (verify = URL).")                 \
    C(VERIFY_CACHE_HITS, "fence_verify_cache_hits_total",                             \
      "Live-lease checks answered from the lease-bounded cache.")                   \
    C(VERIFY_ERRORS, "fence_verify_errors_total",                                     \
      "Token checks the lock backend did not answer (the request got 503).")        \
    C(ADMIN_AUTH_FAILURES, "fence_admin_auth_failures_total",                         \
      "Admin writes refused for a missing or wrong bearer secret (403).")           \
    C(OPERATOR_SETS, "fence_operator_sets_total",                                     \
      "Highest tokens set by an operator (fenceproxy tokens set).")                 \
    C(PIPELINE_PAUSES, "fence_pipeline_pauses_total",                                 \
      "Times a pipelined request waited for the client to read earlier responses.")  \
    C(TLS_HANDSHAKES, "fence_tls_handshakes_total",                                   \
      "TLS handshakes completed with clients (data and admin listeners).")           \
    C(TLS_RESUMED, "fence_tls_resumed_total",                                         \
      "Client TLS handshakes that resumed a session.")                               \
    C(TLS_FAILED, "fence_tls_handshake_failures_total",                               \
      "Client TLS handshakes that failed (plaintext on the TLS port included).")     \
    C(UPSTREAM_TLS_HANDSHAKES, "fence_upstream_tls_handshakes_total",                 \
      "TLS handshakes completed with the upstream.")                                  \
    C(UPSTREAM_TLS_RESUMED, "fence_upstream_tls_resumed_total",                       \
      "Upstream TLS handshakes that resumed a session.")                             \
    C(UPSTREAM_TLS_FAILED, "fence_upstream_tls_failures_total",                       \
      "Upstream TLS handshakes that failed (certificate refused included).")         \
    C(TLS_RELOADS, "fence_tls_reloads_total",                                         \
      "Certificate and key reloads that took effect (SIGHUP, POST /reload).")        \
    C(TLS_RELOAD_FAILURES, "fence_tls_reload_failures_total",                         \
      "Reloads refused (bad file): the previous certificate stays.")                 \
    C(TLS_TICKET_ROTATIONS, "fence_tls_ticket_key_rotations_total",                   \
      "Session ticket key changes (schedule and reloads).")                          \
    C(TLS_OCSP_STAPLED, "fence_tls_ocsp_stapled_total",                               \
      "Handshakes in which the OCSP response was stapled.")                          \
    H(UPSTREAM_DURATION, "fence_upstream_duration_seconds",                           \
      "Time from forwarding a request to the end of the upstream response.",         \
      DURATION)                                                                       \
    H(STORE_COMMIT_DURATION, "fence_store_commit_duration_seconds",                   \
      "Duration of one token store commit, fsync included.", DURATION)               \
    H(STORE_COMMIT_BATCH, "fence_store_commit_batch_size",                            \
      "Advances committed together in one store commit.", BATCH)                     \
    G(STORE_USED_BYTES, "fence_store_used_bytes",                                     \
      "Bytes of the file store in use (up to its last page).")                      \
    G(STORE_MAX_BYTES, "fence_store_max_bytes",                                       \
      "The file store's max_size: new resources are refused beyond it.")            \
    G(STORE_FILL_PERCENT, "fence_store_fill_percent",                                 \
      "fence_store_used_bytes as a percentage of fence_store_max_bytes.")           \
    G(STORE_FULL, "fence_store_full",                                                 \
      "1 while advances of new resources are refused for lack of room, else 0.")

#define PX_STATS_NONE(...)
#define PX_STATS_ENUM(e, ...) PX_ST_##e,
enum px_stat { PX_STATS_TABLE(PX_STATS_ENUM, PX_STATS_NONE, PX_STATS_NONE) PX_ST_COUNT };
#undef PX_STATS_ENUM
#define PX_STATS_ENUM(e, ...) PX_G_##e,
enum px_gauge { PX_STATS_TABLE(PX_STATS_NONE, PX_STATS_ENUM, PX_STATS_NONE) PX_G_COUNT };
#undef PX_STATS_ENUM
#define PX_STATS_ENUM(e, ...) PX_H_##e,
enum px_hist { PX_STATS_TABLE(PX_STATS_NONE, PX_STATS_NONE, PX_STATS_ENUM) PX_H_COUNT };
#undef PX_STATS_ENUM
#define PX_STATS_ENUM(e, ...) PX_OUT_##e,
enum px_outcome { PX_OUTCOMES(PX_STATS_ENUM) PX_OUT_COUNT };
#undef PX_STATS_ENUM

/* Route index for requests that match no route (label route="-"). */
#define PX_STATS_NO_ROUTE SIZE_MAX

/* Sets the route label values (names copied; index i of later
 * px_stats_request() calls is route_names[i]). The first call zeroes every
 * metric; a later call (config reload) keeps all values and carries each
 * route's counts over by name. Returns 0, or -1 (no memory; the old routes
 * stay). */
int px_stats_init(const char *const *route_names, size_t n_routes);

void px_stats_inc(enum px_stat s);
void px_stats_add(enum px_stat s, uint64_t v);
void px_stats_gauge_add(enum px_gauge g, int64_t d);
void px_stats_gauge_set(enum px_gauge g, int64_t v);

/* Counts one finished request under route route_idx (or PX_STATS_NO_ROUTE)
 * and outcome o (a row with request = 1). An index out of range is ignored. */
void px_stats_request(size_t route_idx, enum px_outcome o);
/* Counts one refusal under reason o (a row with rejection = 1). */
void px_stats_reject(enum px_outcome o);

/* The outcome's label and flags (see PX_OUTCOMES). */
const char *px_stats_outcome_label(enum px_outcome o);
int px_stats_outcome_audited(enum px_outcome o);

/* Records one observation (seconds, or a count for batch sizes). NaN and
 * negative values are ignored. */
void px_stats_observe(enum px_hist h, double v);

/* Accessors, for tests and the admin API. */
uint64_t px_stats_get(enum px_stat s);
int64_t px_stats_gauge_get(enum px_gauge g);
uint64_t px_stats_request_get(size_t route_idx, enum px_outcome o);
uint64_t px_stats_reject_get(enum px_outcome o);
/* Finished requests over every route and outcome. */
uint64_t px_stats_requests_total(void);
uint64_t px_stats_hist_count(enum px_hist h);
double px_stats_hist_sum(enum px_hist h);

/* Renders every metric in the Prometheus text exposition format 0.0.4.
 * Returns a NUL-terminated malloc'd string (the caller frees it) and its
 * length in *len, or NULL when out of memory. */
char *px_stats_render(size_t *len);

/* Frees the route names and zeroes everything. */
void px_stats_free(void);

#endif

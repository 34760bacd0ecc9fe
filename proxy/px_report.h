/* px_report: what the proxy tells about an exchange once it ends: the
 * access log line, the audit record, and the metrics of its outcome (one
 * row of PX_OUTCOMES in px_stats.h decides which counters and whether the
 * refusal is audited). It takes plain data, not a connection, so every
 * caller reports the same way. Loop thread only. */
#ifndef PX_REPORT_H
#define PX_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "pol_decide.h"
#include "px_stats.h"

struct px_audit;
struct px_logw;
struct px_h1_head;

/* One exchange as reporting sees it. Everything is borrowed for the call. */
struct px_report {
    uint64_t conn_id;
    const char *peer;                /* "ip:port" */
    const char *subject;             /* client certificate's subject, or NULL */
    const struct px_h1_head *h;      /* NULL: refused before its head parsed */
    const struct pol_decision *dec;  /* NULL when it was never classified */
    const char *token_field;         /* the configured token field name */
    const char *request_id;          /* "" when none was assigned */
    int status;
    uint64_t bytes;                  /* body bytes sent to the client */
    double upstream_s;               /* seconds at the upstream; 0 when local */
    int json;                        /* access_log_format = json */
};

/* The outcome of a token decision that refuses (MISSING, MALFORMED,
 * STALE), for the table. */
enum px_outcome px_report_verdict_outcome(enum pol_verdict v);

/* One access log line (nothing when access is NULL), as text or, with
 * x->json, one JSON object: {"ts","client","method","target","version",
 * "status","bytes","upstream_ms","request_id"} (method, target and request
 * id null when the request was refused before its head parsed). A line the
 * writer cannot take is counted as dropped. */
void px_report_access(struct px_logw *access, const struct px_report *x);

/* One audit record of event with the given highest (nothing when audit is
 * NULL or x has no head); a record the writer cannot take is counted and
 * logged. */
void px_report_audit(struct px_audit *audit, const struct px_report *x, const char *event,
                     uint64_t highest);

/* The last audited events (newest first), for the status page: copies,
 * cut to the field sizes. Kept with the metrics (one loop thread). */
#define PX_REPORT_RECENT 32
struct px_report_recent {
    uint64_t ts_ms;
    char event[32];
    char route[64];
    char resource[256];
    char token[32];  /* the number, the raw text, or "" when absent */
    uint64_t highest;
    char method[16];
    char path[256];
    char client[64];
};

/* Copies up to max of the last audited events into out, newest first;
 * returns how many. */
size_t px_report_recent(struct px_report_recent *out, size_t max);

/* Counts outcome o for route route_idx in the metrics its row names
 * (fence_requests_total, fence_rejections_total). */
void px_report_outcome(size_t route_idx, enum px_outcome o);

#endif

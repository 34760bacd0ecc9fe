/* px_report: see px_report.h. */
#include "px_report.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pol_route.h"
#include "px_audit.h"
#include "px_clock.h"
#include "px_http1.h"
#include "px_log.h"
#include "px_logw.h"

enum px_outcome px_report_verdict_outcome(enum pol_verdict v)
{
    switch (v) {
    case POL_STALE:
        return PX_OUT_STALE_TOKEN;
    case POL_MISSING:
        return PX_OUT_MISSING_TOKEN;
    case POL_UNVERIFIED:
        return PX_OUT_UNVERIFIED_TOKEN;
    default:
        return PX_OUT_MALFORMED_TOKEN;
    }
}

void px_report_outcome(size_t route_idx, enum px_outcome o)
{
    px_stats_request(route_idx, o);
    px_stats_reject(o);
}

/* The first value of the header field named name, or NULL. */
static const struct px_h1_field *find_field(const struct px_h1_head *h, const char *name)
{
    size_t len = strlen(name);

    for (unsigned i = 0; i < h->n_fields; i++)
        if (h->fields[i].name_len == len && px_h1_name_is(&h->fields[i], name))
            return &h->fields[i];
    return NULL;
}

/* Appends len bytes of s to the growing buffer. 0 or -1 (no memory). */
static int add_raw(char **buf, size_t *blen, size_t *bcap, const char *s, size_t len)
{
    if (*blen + len + 1 > *bcap) {
        size_t cap = (*bcap ? *bcap * 2 : 256) + len;
        char *nb = realloc(*buf, cap);
        if (nb == NULL)
            return -1;
        *buf = nb;
        *bcap = cap;
    }
    memcpy(*buf + *blen, s, len);
    *blen += len;
    (*buf)[*blen] = '\0';
    return 0;
}

/* The JSON form of the access log line, into a malloc'd buffer (*len);
 * NULL when out of memory. */
static char *access_json(const struct px_report *x, const char *ts, unsigned ms, size_t *len)
{
    const struct px_h1_head *h = x->h;
    char *b = NULL, num[160];
    size_t n = 0, cap = 0;
    int k;

    k = snprintf(num, sizeof(num), "{\"ts\":\"%s.%03uZ\",\"client\":\"", ts, ms);
    if (add_raw(&b, &n, &cap, num, (size_t)k) < 0 ||
        pol_json_append_escaped(&b, &n, &cap, x->peer, strlen(x->peer)) < 0)
        goto fail;
    if (h != NULL) {
        if (add_raw(&b, &n, &cap, "\",\"method\":\"", 12) < 0 ||
            pol_json_append_escaped(&b, &n, &cap, h->method, h->method_len) < 0 ||
            add_raw(&b, &n, &cap, "\",\"target\":\"", 12) < 0 ||
            pol_json_append_escaped(&b, &n, &cap, h->target, h->target_len) < 0 ||
            add_raw(&b, &n, &cap, "\",\"version\":\"", 13) < 0 ||
            add_raw(&b, &n, &cap, h->minor == 1 ? "1.1" : "1.0", 3) < 0)
            goto fail;
        k = snprintf(num, sizeof(num),
                     "\",\"status\":%d,\"bytes\":%" PRIu64 ",\"upstream_ms\":%.3f,\"request_id\":\"",
                     x->status, x->bytes, x->upstream_s * 1000.0);
        if (add_raw(&b, &n, &cap, num, (size_t)k) < 0 ||
            pol_json_append_escaped(&b, &n, &cap, x->request_id, strlen(x->request_id)) < 0 ||
            add_raw(&b, &n, &cap, "\"}\n", 3) < 0)
            goto fail;
    } else {
        k = snprintf(num, sizeof(num),
                     "\",\"method\":null,\"target\":null,\"version\":null,\"status\":%d,"
                     "\"bytes\":%" PRIu64 ",\"upstream_ms\":0,\"request_id\":null}\n",
                     x->status, x->bytes);
        if (add_raw(&b, &n, &cap, num, (size_t)k) < 0)
            goto fail;
    }
    *len = n;
    return b;
fail:
    free(b);
    return NULL;
}

void px_report_access(struct px_logw *access, const struct px_report *x)
{
    char line[1024];
    char ts[40];
    uint64_t now = px_clock_wall_ms();
    time_t secs = (time_t)(now / 1000);
    const struct px_h1_head *h = x->h;
    struct tm tm;
    int n;

    if (access == NULL)
        return;
    gmtime_r(&secs, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    if (x->json) {
        size_t len;
        char *j = access_json(x, ts, (unsigned)(now % 1000), &len);
        if (j == NULL || px_logw_write(access, j, len) < 0)
            px_stats_inc(PX_ST_ACCESS_LOG_DROPPED);
        free(j);
        return;
    }
    if (h != NULL)
        n = snprintf(line, sizeof(line),
                     "%s.%03uZ %s \"%.*s %.*s HTTP/1.%d\" %d %" PRIu64 " %.3f %s\n", ts,
                     (unsigned)(now % 1000), x->peer, (int)h->method_len, h->method,
                     (int)(h->target_len > 512 ? 512 : h->target_len), h->target, h->minor,
                     x->status, x->bytes, x->upstream_s * 1000.0, x->request_id);
    else
        n = snprintf(line, sizeof(line), "%s.%03uZ %s \"-\" %d %" PRIu64 " 0.000 -\n", ts,
                     (unsigned)(now % 1000), x->peer, x->status, x->bytes);
    /* The client certificate's subject, when there is one, ends the line
     * (RFC 2253 escapes quotes and control bytes). */
    if (n > 0 && x->subject != NULL && (size_t)n < sizeof(line))
        n = snprintf(line + n - 1, sizeof(line) - (size_t)n + 1, " subject=\"%.400s\"\n",
                     x->subject) + n - 1;
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line)) {
        n = sizeof(line) - 1;
        line[n - 1] = '\n';
    }
    if (px_logw_write(access, line, (size_t)n) < 0)
        px_stats_inc(PX_ST_ACCESS_LOG_DROPPED);
}

static struct {
    struct px_report_recent ring[PX_REPORT_RECENT];
    size_t next, n;
} recent;

/* a slice into a fixed buffer, cut */
static void put(char *dst, size_t cap, const char *s, size_t len)
{
    if (len >= cap)
        len = cap - 1;
    memcpy(dst, s != NULL ? s : "", s != NULL ? len : 0);
    dst[s != NULL ? len : 0] = '\0';
}

static void remember(const struct px_audit_event *ev)
{
    struct px_report_recent *e = &recent.ring[recent.next];

    memset(e, 0, sizeof(*e));
    e->ts_ms = ev->ts_ms;
    put(e->event, sizeof(e->event), ev->event, strlen(ev->event));
    put(e->route, sizeof(e->route), ev->route, strlen(ev->route));
    put(e->resource, sizeof(e->resource), ev->resource, ev->resource_len);
    if (ev->token_present && ev->token_is_number)
        snprintf(e->token, sizeof(e->token), "%" PRIu64, ev->token);
    else if (ev->token_present)
        put(e->token, sizeof(e->token), ev->token_raw, ev->token_raw_len);
    e->highest = ev->highest;
    put(e->method, sizeof(e->method), ev->method, ev->method_len);
    put(e->path, sizeof(e->path), ev->path, ev->path_len);
    put(e->client, sizeof(e->client), ev->client, strlen(ev->client));
    recent.next = (recent.next + 1) % PX_REPORT_RECENT;
    if (recent.n < PX_REPORT_RECENT)
        recent.n++;
}

size_t px_report_recent(struct px_report_recent *out, size_t max)
{
    size_t k = 0;

    for (size_t i = 0; i < recent.n && k < max; i++)
        out[k++] = recent.ring[(recent.next + PX_REPORT_RECENT - 1 - i) % PX_REPORT_RECENT];
    return k;
}

void px_report_audit(struct px_audit *audit, const struct px_report *x, const char *event,
                     uint64_t highest)
{
    const struct pol_decision *d = x->dec;
    const struct px_h1_head *h = x->h;
    struct px_audit_event ev;
    const struct px_h1_field *xff;

    if (audit == NULL || h == NULL || d == NULL)
        return;
    memset(&ev, 0, sizeof(ev));
    ev.event = event;
    ev.route = d->route != NULL ? d->route->name : "";
    ev.resource = d->resource;
    ev.resource_len = d->resource_len;
    if (d->verdict == POL_MALFORMED) {
        const struct px_h1_field *tf = find_field(h, x->token_field);
        ev.token_present = tf != NULL;
        if (tf != NULL) {
            ev.token_raw = tf->value;
            ev.token_raw_len = tf->value_len;
        }
    } else if (d->verdict != POL_MISSING) {
        ev.token_present = 1;
        ev.token_is_number = 1;
        ev.token = d->token;
    }
    ev.highest = highest;
    ev.method = h->method;
    ev.method_len = h->method_len;
    ev.path = h->target;
    ev.path_len = h->target_len;
    ev.client = x->peer;
    ev.client_subject = x->subject;
    xff = find_field(h, "X-Forwarded-For");
    if (xff != NULL) {
        ev.forwarded_for = xff->value;
        ev.forwarded_for_len = xff->value_len;
    }
    ev.request_id = x->request_id;
    ev.request_id_len = strlen(x->request_id);
    ev.ts_ms = px_clock_wall_ms();
    remember(&ev);
    if (px_audit_record(audit, &ev) < 0) {
        px_stats_inc(PX_ST_AUDIT_DROPPED);
        px_clog_error(x->conn_id, x->peer, "audit record dropped (writer buffer full): %s %s",
                      event, x->request_id);
    } else {
        px_stats_inc(PX_ST_AUDIT_RECORDS);
    }
}

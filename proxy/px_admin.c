/* px_admin: see px_admin.h. A small HTTP/1.1 server of its own on
 * bufferevents, under the same discipline as the data listener: at most
 * PX_ADMIN_MAX_CONNS connections (the next one gets 503 and is closed), a
 * deadline of PX_ADMIN_HEAD_MS from accept for the whole head (bytes
 * trickled one at a time do not extend it) and as much again to write the
 * answer, one request per connection (Connection: close), heads parsed by
 * the data path's strict parser (px_http1), no bodies. accept() errors
 * (EMFILE) pause the listener for PX_ADMIN_ACCEPT_PAUSE_MS instead of
 * spinning; their log line is rate-limited by px_log. px_server reserves
 * PX_ADMIN_MAX_CONNS descriptors for it (px_server_fit_fds), so a full data
 * plane never locks the operator out. /tokens/R answers from the fence's
 * cache when the resource is cached (the highest the proxy enforces), else
 * from the store; the listing /tokens?prefix=P answers from the store alone
 * (durable values, st_store_list), one bounded page per request. A /tokens
 * query that outlives its connection (the client left, or the admin was
 * freed) is orphaned and freed by its callback. */
#include "px_admin.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "pol_decide.h"
#include "st_store.h"
#include "px_audit.h"
#include "px_clock.h"
#include "px_config.h"
#include "px_ctx.h"
#include "px_fence.h"
#include "px_http1.h"
#include "px_log.h"
#include "px_stats.h"
#include "px_status.h"
#include "px_transport.h"

#define ADMIN_MAX_HEAD     8192
#define ADMIN_LIST_DEFAULT 1000 /* entries of a /tokens page without limit= */

struct admin_conn;

/* A /tokens request waiting for the store. c is NULL once orphaned. */
struct token_query {
    struct admin_conn *c;
    char *key;
    size_t klen;
    int head_only;
};

/* A GET /tokens?prefix=... waiting for the store. c is NULL once orphaned. */
struct list_query {
    struct admin_conn *c;
    int head_only;
};

/* A PUT /tokens/RESOURCE waiting for the fence (drain, then the store).
 * c is NULL once orphaned; the fence's callback frees it. */
struct set_query {
    struct admin_conn *c;
    struct px_admin *a; /* for the audit record; the admin outlives the fence's callbacks */
    char *key;
    size_t klen;
    uint64_t token;
    char *reason;
    char *operator_id;
    char peer[64];
    char target[256];
};

struct admin_conn {
    struct px_admin *a;
    struct set_query *sq; /* pending set, or NULL */
    char peer[64];        /* "ip:port" */
    struct bufferevent *bev;
    struct event *timer;
    struct token_query *q; /* pending /tokens, or NULL */
    struct list_query *lq; /* pending /tokens?prefix=, or NULL */
    int replied;           /* the answer is queued: close once written */
    TAILQ_ENTRY(admin_conn) link;
};

struct px_admin {
    struct px_ctx *ctx;
    struct evconnlistener *listener;
    struct event *retry;
    TAILQ_HEAD(, admin_conn) conns;
    size_t n_conns;
    uint64_t audit_lost_seen; /* px_audit_lost() already in the metrics */
};

static void conn_free(struct admin_conn *c)
{
    TAILQ_REMOVE(&c->a->conns, c, link);
    c->a->n_conns--;
    if (c->q != NULL)
        c->q->c = NULL; /* its callback frees it */
    if (c->lq != NULL)
        c->lq->c = NULL; /* its callback frees it */
    if (c->sq != NULL)
        c->sq->c = NULL; /* the fence's callback frees it */
    if (c->bev != NULL)
        bufferevent_free(c->bev);
    if (c->timer != NULL)
        event_free(c->timer);
    free(c);
}

/* Queues a complete response and closes once it is written. */
static void reply(struct admin_conn *c, int code, int head_only, const char *ctype,
                  const char *body, size_t len)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    struct timeval tv = {PX_ADMIN_HEAD_MS / 1000, (PX_ADMIN_HEAD_MS % 1000) * 1000};

    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                        "Connection: close\r\n\r\n",
                        code, px_h1_reason(code), ctype, len);
    if (!head_only)
        evbuffer_add(out, body, len);
    c->replied = 1;
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_enable(c->bev, EV_WRITE);
    evtimer_add(c->timer, &tv); /* a fresh deadline to write the answer */
}

static void reply_text(struct admin_conn *c, int code, int head_only, const char *text)
{
    reply(c, code, head_only, "text/plain", text, strlen(text));
}

static void reply_token(struct admin_conn *c, int head_only, const char *key, size_t klen,
                        uint64_t highest)
{
    char *esc = NULL, *body = NULL;
    size_t elen = 0, ecap = 0;
    int n;

    if (pol_json_append_escaped(&esc, &elen, &ecap, key, klen) < 0 ||
        (n = asprintf(&body, "{\"resource\":\"%.*s\",\"highest\":%" PRIu64 "}\n", (int)elen,
                      esc != NULL ? esc : "", highest)) < 0) {
        body = NULL;
        reply_text(c, 500, head_only, "out of memory\n");
        goto out;
    }
    reply(c, 200, head_only, "application/json", body, (size_t)n);
out:
    free(esc);
    free(body);
}

static void token_loaded(void *arg, int rc, uint64_t highest)
{
    struct token_query *q = arg;

    if (q->c != NULL) {
        q->c->q = NULL;
        if (rc != 0)
            reply_text(q->c, 503, q->head_only, "token store failed\n");
        else
            reply_token(q->c, q->head_only, q->key, q->klen, highest);
    }
    free(q->key);
    free(q);
}

static void handle_tokens(struct admin_conn *c, int head_only, const char *rest)
{
    struct px_ctx *ctx = c->a->ctx;
    size_t klen = 0;
    char *key = evhttp_uridecode(rest, 0, &klen);
    uint64_t highest;
    struct token_query *q = NULL;

    if (key == NULL || klen == 0) {
        reply_text(c, 400, head_only, "resource missing\n");
        goto out;
    }
    if (px_fence_peek(ctx->fence, key, klen, &highest) == 0) {
        reply_token(c, head_only, key, klen, highest);
        goto out;
    }
    q = calloc(1, sizeof(*q));
    if (q == NULL) {
        reply_text(c, 500, head_only, "out of memory\n");
        goto out;
    }
    q->c = c;
    q->key = key;
    q->klen = klen;
    q->head_only = head_only;
    key = NULL;
    c->q = q;
    st_store_get(ctx->store, q->key, q->klen, token_loaded, q);
out:
    free(key);
}

/* One page of the listing as JSON, one resource a line:
 *   {"resources":[
 *   {"resource":"R","highest":H},
 *   {"resource":"first 400 bytes","key_hash":"32 hex","highest":H}
 *   ],"truncated":true,"next":"HEX"}
 * (next, the cursor in hex, only when truncated). Keys are JSON-escaped, so
 * no line break falls inside an entry (the CLI reads it line by line). */
static void list_loaded(void *arg, int rc, const struct st_store_page *pg)
{
    struct list_query *q = arg;
    struct evbuffer *b = NULL;
    char *esc = NULL;
    size_t ecap = 0;

    if (q->c == NULL)
        goto out;
    q->c->lq = NULL;
    if (rc != 0) {
        reply_text(q->c, 503, q->head_only,
                   rc == ST_STORE_EUNAVAIL ? "token store unreachable\n" : "token store failed\n");
        goto out;
    }
    if ((b = evbuffer_new()) == NULL || evbuffer_add_printf(b, "{\"resources\":[\n") < 0)
        goto oom;
    for (size_t i = 0; i < pg->n; i++) {
        const struct st_store_entry *e = &pg->e[i];
        size_t elen = 0;
        if (pol_json_append_escaped(&esc, &elen, &ecap, e->key, e->klen) < 0 ||
            evbuffer_add_printf(b, "{\"resource\":\"%.*s\"%s%s%s,\"highest\":%" PRIu64 "}%s\n",
                                (int)elen, esc, e->hash != NULL ? ",\"key_hash\":\"" : "",
                                e->hash != NULL ? e->hash : "", e->hash != NULL ? "\"" : "",
                                e->highest, i + 1 < pg->n ? "," : "") < 0)
            goto oom;
    }
    if (evbuffer_add_printf(b, "],\"truncated\":%s", pg->truncated ? "true" : "false") < 0)
        goto oom;
    if (pg->truncated) {
        if (evbuffer_add_printf(b, ",\"next\":\"") < 0)
            goto oom;
        for (size_t i = 0; i < pg->next_len; i++)
            if (evbuffer_add_printf(b, "%02x", (unsigned char)pg->next[i]) < 0)
                goto oom;
        if (evbuffer_add_printf(b, "\"") < 0)
            goto oom;
    }
    if (evbuffer_add_printf(b, "}\n") < 0)
        goto oom;
    reply(q->c, 200, q->head_only, "application/json", (const char *)evbuffer_pullup(b, -1),
          evbuffer_get_length(b));
    goto out;
oom:
    reply_text(q->c, 500, q->head_only, "out of memory\n");
out:
    if (b != NULL)
        evbuffer_free(b);
    free(esc);
    free(q);
}

static char *query_param(const char *q, const char *name);

/* GET /tokens[?prefix=P][&limit=N][&after=HEX]: one page of the stored
 * resources whose key starts with P, from the store (durable values; the
 * fence's cache is not read), at most N (1..ST_STORE_LIST_MAX, default
 * ADMIN_LIST_DEFAULT), after the cursor a truncated page gave. qs is the
 * query string or NULL. */
static void handle_list(struct admin_conn *c, int head_only, const char *qs)
{
    struct px_ctx *ctx = c->a->ctx;
    char *prefix = query_param(qs, "prefix"), *lim = query_param(qs, "limit");
    char *hex = query_param(qs, "after"), *after = NULL, *end = NULL;
    size_t alen = 0, limit = ADMIN_LIST_DEFAULT;
    struct list_query *q = NULL;

    if (lim != NULL) {
        unsigned long long v = 0;
        errno = 0;
        if (lim[0] >= '0' && lim[0] <= '9')
            v = strtoull(lim, &end, 10);
        if (end == NULL || *end != '\0' || errno != 0 || v < 1 || v > ST_STORE_LIST_MAX) {
            char msg[80];
            snprintf(msg, sizeof msg, "limit=N wants 1..%d\n", ST_STORE_LIST_MAX);
            reply_text(c, 400, head_only, msg);
            goto out;
        }
        limit = (size_t)v;
    }
    if (hex != NULL && hex[0] != '\0') {
        size_t hl = strlen(hex);
        if (hl % 2 != 0 || hl > ADMIN_MAX_HEAD || (after = malloc(hl / 2 + 1)) == NULL ||
            strspn(hex, "0123456789abcdefABCDEF") != hl) {
            reply_text(c, 400, head_only, "after=HEX wants the next of a truncated page\n");
            goto out;
        }
        for (size_t i = 0; i < hl / 2; i++) {
            unsigned int byte;
            sscanf(hex + 2 * i, "%2x", &byte);
            after[alen++] = (char)byte;
        }
    }
    if ((q = calloc(1, sizeof *q)) == NULL) {
        reply_text(c, 500, head_only, "out of memory\n");
        goto out;
    }
    q->c = c;
    q->head_only = head_only;
    c->lq = q;
    st_store_list(ctx->store, prefix != NULL ? prefix : "", prefix != NULL ? strlen(prefix) : 0,
                  after, alen, limit, list_loaded, q);
out:
    free(after);
    free(hex);
    free(lim);
    free(prefix);
}

/* Records lost on the audit writer's thread join fence_audit_dropped_total
 * here (the stats belong to the loop's thread). */
static void sync_audit_stats(struct px_admin *a)
{
    uint64_t lost;

    if (a->ctx->audit == NULL)
        return;
    lost = px_audit_lost(a->ctx->audit);
    if (lost > a->audit_lost_seen) {
        px_stats_add(PX_ST_AUDIT_DROPPED, lost - a->audit_lost_seen);
        a->audit_lost_seen = lost;
    }
}

/* Whether the request carries "Authorization: Bearer <the secret>". The
 * comparison takes the same time whatever the given value holds: it runs
 * over the whole secret and never stops early. */
static int authorized(const struct px_config *cfg, const struct px_h1_head *h)
{
    const char *secret = cfg->admin_token;
    size_t slen, glen = 0;
    const char *given = "";
    unsigned char diff;

    if (secret == NULL)
        return 0;
    for (unsigned i = 0; i < h->n_fields; i++) {
        const struct px_h1_field *f = &h->fields[i];
        if (f->name_len == 13 && px_h1_name_is(f, "Authorization") && f->value_len > 7 &&
            strncasecmp(f->value, "Bearer ", 7) == 0) {
            given = f->value + 7;
            glen = f->value_len - 7;
            break;
        }
    }
    slen = strlen(secret);
    diff = glen != slen;
    for (size_t i = 0; i < slen; i++)
        diff |=
            (unsigned char)((i < glen ? (unsigned char)given[i] : 0) ^ (unsigned char)secret[i]);
    return diff == 0;
}

static void set_done(void *arg, int rc, uint64_t old, uint64_t highest)
{
    struct set_query *q = arg;
    struct px_ctx *ctx = q->a->ctx;
    char *esc = NULL, *body = NULL;
    size_t elen = 0, ecap = 0;
    int n = -1;

    if (rc == 0) {
        struct px_audit_event ev;
        memset(&ev, 0, sizeof ev);
        ev.event = "operator_set";
        ev.route = "";
        ev.resource = q->key;
        ev.resource_len = q->klen;
        ev.token_present = ev.token_is_number = 1;
        ev.token = q->token;
        ev.highest = highest;
        ev.has_old = 1;
        ev.old = old;
        ev.method = "PUT";
        ev.method_len = 3;
        ev.path = q->target;
        ev.path_len = strlen(q->target);
        ev.client = q->peer;
        ev.request_id = "";
        ev.reason = q->reason;
        ev.operator_id = q->operator_id;
        ev.ts_ms = px_clock_wall_ms();
        if (ctx->audit != NULL) {
            if (px_audit_record(ctx->audit, &ev) == 0)
                px_stats_inc(PX_ST_AUDIT_RECORDS);
            else
                px_stats_inc(PX_ST_AUDIT_DROPPED);
        }
        px_stats_inc(PX_ST_OPERATOR_SETS);
        px_log_warn("operator %s from %s set the highest of %.*s from %" PRIu64 " to %" PRIu64
                    ": %s",
                    q->operator_id, q->peer, (int)q->klen, q->key, old, highest, q->reason);
    }
    if (q->c != NULL) {
        q->c->sq = NULL;
        if (rc == 0 && pol_json_append_escaped(&esc, &elen, &ecap, q->key, q->klen) == 0)
            n = asprintf(&body,
                         "{\"resource\":\"%.*s\",\"old\":%" PRIu64 ",\"highest\":%" PRIu64 "}\n",
                         (int)elen, esc != NULL ? esc : "", old, highest);
        if (rc == 0 && n >= 0)
            reply(q->c, 200, 0, "application/json", body, (size_t)n);
        else if (rc == 0)
            reply_text(q->c, 500, 0, "out of memory\n");
        else if (rc == ST_STORE_EFULL)
            reply_text(q->c, 503, 0, "token store full\n");
        else
            reply_text(q->c, 503, 0, "token store failed: nothing was set\n");
        if (n < 0)
            body = NULL;
    }
    free(esc);
    free(body);
    free(q->key);
    free(q->reason);
    free(q->operator_id);
    free(q);
}

/* The value of query parameter name in q (after '?'), %-decoded, or NULL.
 * The caller frees it. */
static char *query_param(const char *q, const char *name)
{
    size_t nl = strlen(name);

    while (q != NULL && *q != '\0') {
        const char *end = strchr(q, '&');
        size_t len = end != NULL ? (size_t)(end - q) : strlen(q);
        if (len > nl && strncmp(q, name, nl) == 0 && q[nl] == '=') {
            char *raw = strndup(q + nl + 1, len - nl - 1), *v;
            if (raw == NULL)
                return NULL;
            v = evhttp_uridecode(raw, 1, NULL);
            free(raw);
            return v;
        }
        q = end != NULL ? end + 1 : NULL;
    }
    return NULL;
}

/* PUT /tokens/RESOURCE?token=N&reason=TEXT[&operator=WHO]: the operator's
 * reset (px_fence_set: atomic with respect to requests, durable before the
 * answer), audited as operator_set. rest is after "/tokens/". */
static void handle_set(struct admin_conn *c, const char *uri, const char *rest)
{
    struct px_ctx *ctx = c->a->ctx;
    const char *qs = strchr(rest, '?');
    char *path = strndup(rest, qs != NULL ? (size_t)(qs - rest) : strlen(rest));
    char *tok = query_param(qs != NULL ? qs + 1 : NULL, "token");
    struct set_query *q = calloc(1, sizeof(*q));
    char *end = NULL;
    unsigned long long v = 0;

    if (path == NULL || q == NULL) {
        reply_text(c, 500, 0, "out of memory\n");
        goto out;
    }
    q->key = evhttp_uridecode(path, 0, &q->klen);
    q->reason = query_param(qs != NULL ? qs + 1 : NULL, "reason");
    q->operator_id = query_param(qs != NULL ? qs + 1 : NULL, "operator");
    if (q->key == NULL || q->klen == 0) {
        reply_text(c, 400, 0, "resource missing\n");
        goto out;
    }
    errno = 0;
    if (tok != NULL && tok[0] >= '0' && tok[0] <= '9')
        v = strtoull(tok, &end, 10);
    if (tok == NULL || end == NULL || *end != '\0' || errno != 0) {
        reply_text(c, 400, 0, "token=N (0..18446744073709551615) is required\n");
        goto out;
    }
    if (q->reason == NULL || q->reason[0] == '\0' || strlen(q->reason) > 1024) {
        reply_text(c, 400, 0, "reason=TEXT (1..1024 bytes) is required\n");
        goto out;
    }
    if (q->operator_id == NULL && (q->operator_id = strdup("unknown")) == NULL) {
        reply_text(c, 500, 0, "out of memory\n");
        goto out;
    }
    q->token = v;
    q->a = c->a;
    q->c = c;
    snprintf(q->peer, sizeof q->peer, "%s", c->peer);
    snprintf(q->target, sizeof q->target, "%.*s", (int)strcspn(uri, "?"), uri);
    if (px_fence_set(ctx->fence, q->key, q->klen, v, set_done, q) != 0) {
        reply_text(c, 409, 0, "a set of this resource is already under way\n");
        goto out;
    }
    c->sq = q;
    q = NULL;
out:
    if (q != NULL) {
        free(q->key);
        free(q->reason);
        free(q->operator_id);
        free(q);
    }
    free(tok);
    free(path);
}

static void dispatch(struct admin_conn *c, const struct px_h1_head *h)
{
    struct px_ctx *ctx = c->a->ctx;
    char uri[ADMIN_MAX_HEAD + 1];
    int head_only = h->method_len == 4 && memcmp(h->method, "HEAD", 4) == 0;
    int post = h->method_len == 4 && memcmp(h->method, "POST", 4) == 0;
    int put = post || (h->method_len == 3 && memcmp(h->method, "PUT", 3) == 0); /* a write */
    char *text;
    size_t len;

    if (!head_only && !put && !(h->method_len == 3 && memcmp(h->method, "GET", 3) == 0)) {
        reply_text(c, 405, 0, "only GET, HEAD, PUT /tokens/RESOURCE and POST /reload\n");
        return;
    }
    if (put && !authorized(ctx->cfg, h)) {
        /* Reads stay open; every write needs the secret. */
        px_stats_inc(PX_ST_ADMIN_AUTH_FAILURES);
        px_log_warn("admin: %.*s %.*s from %s refused: %s", (int)h->method_len, h->method,
                    (int)(h->target_len > 200 ? 200 : h->target_len), h->target, c->peer,
                    ctx->cfg->admin_token == NULL ? "no admin_token_file is configured"
                                                  : "missing or wrong bearer secret");
        reply_text(c, 403, 0,
                   ctx->cfg->admin_token == NULL
                       ? "admin writes are disabled: no admin_token_file\n"
                       : "forbidden: Authorization: Bearer <admin secret> required\n");
        return;
    }
    if (h->body != PX_H1_BODY_NONE && !(h->body == PX_H1_BODY_LENGTH && h->content_length == 0)) {
        reply_text(c, 400, head_only, "no bodies here\n");
        return;
    }
    memcpy(uri, h->target, h->target_len);
    uri[h->target_len] = '\0';
    if (post) {
        char err[2048];
        if (strcmp(uri, "/reload") != 0) {
            reply_text(c, 404, 0, "not found\n");
        } else if (ctx->reload(ctx, err, sizeof(err)) < 0) {
            char msg[2100];
            px_log_error("reload (POST /reload from %s) refused: %s", c->peer, err);
            snprintf(msg, sizeof(msg), "reload refused: %s\n", err);
            reply_text(c, 400, 0, msg);
        } else {
            char msg[64];
            px_log_info("reload (POST /reload from %s) applied", c->peer);
            snprintf(msg, sizeof(msg), "reloaded: generation %llu\n",
                     (unsigned long long)ctx->cfg_generation);
            reply_text(c, 200, 0, msg);
        }
    } else if (strcmp(uri, "/") == 0 || strcmp(uri, "/status.json") == 0) {
        int html = uri[1] == '\0';
        text = html ? px_status_html(ctx, &len) : px_status_json(ctx, &len);
        if (text == NULL) {
            reply_text(c, 500, head_only, "out of memory\n");
            return;
        }
        reply(c, 200, head_only, html ? "text/html; charset=utf-8" : "application/json", text, len);
        free(text);
    } else if (strcmp(uri, "/healthz") == 0) {
        if (st_store_failed(ctx->store))
            reply_text(c, 503, head_only, "store failed\n");
        else if (st_store_unreachable(ctx->store, NULL, 0))
            reply_text(c, 503, head_only, "store unreachable\n");
        else if (ctx->shutting_down)
            reply_text(c, 503, head_only, "shutting down\n");
        else if (ctx->audit != NULL && !px_audit_writable(ctx->audit))
            /* S7: degraded; unavailable when fenced requests are refused. */
            reply_text(c, ctx->cfg->audit_required ? 503 : 200, head_only,
                       "degraded: audit records cannot be written\n");
        else
            reply_text(c, 200, head_only, "ok\n");
    } else if (strcmp(uri, "/metrics") == 0) {
        px_stats_gauge_set(PX_G_STORE_UP, st_store_failed(ctx->store) ? 0 : 1);
        sync_audit_stats(c->a);
        text = px_stats_render(&len);
        if (text == NULL) {
            reply_text(c, 500, head_only, "out of memory\n");
            return;
        }
        reply(c, 200, head_only, "text/plain; version=0.0.4", text, len);
        free(text);
    } else if (put && strncmp(uri, "/tokens/", 8) == 0) {
        handle_set(c, uri, uri + 8);
    } else if (put) {
        reply_text(c, 404, 0, "not found\n");
    } else if (strncmp(uri, "/tokens/", 8) == 0) {
        handle_tokens(c, head_only, uri + 8);
    } else if (strcmp(uri, "/tokens") == 0 || strncmp(uri, "/tokens?", 8) == 0) {
        handle_list(c, head_only, uri[7] == '?' ? uri + 8 : NULL);
    } else {
        reply_text(c, 404, head_only, "not found\n");
    }
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct admin_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct px_h1_limits lim = {ADMIN_MAX_HEAD, ADMIN_MAX_HEAD, 64};
    struct px_h1_parser p;
    struct px_h1_head h;
    size_t n = evbuffer_get_length(in);
    const char *buf;

    if (c->replied || c->q != NULL || c->sq != NULL || c->lq != NULL)
        return;
    if (n > ADMIN_MAX_HEAD)
        n = ADMIN_MAX_HEAD;
    buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
    px_h1_parser_init(&p, 1, 0, &lim);
    switch (px_h1_parse_head(&p, buf, n, &h)) {
    case PX_H1_DONE:
        dispatch(c, &h);
        break;
    case PX_H1_ERROR:
        reply_text(c, h.error_status, 0, "bad request\n");
        break;
    default:
        if (n >= ADMIN_MAX_HEAD)
            reply_text(c, 431, 0, "head too large\n");
        break;
    }
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    struct admin_conn *c = arg;

    if (c->replied && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        conn_free(c);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what == BEV_EVENT_CONNECTED)
        return;     /* a TLS transport's handshake finished */
    conn_free(arg); /* EOF or error: nothing more to say */
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_free(arg); /* the head deadline (or the write deadline) passed */
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                               "Content-Length: 26\r\nConnection: close\r\n\r\n"
                               "too many admin connections";
    struct px_admin *a = arg;
    struct admin_conn *c = NULL;
    struct timeval tv = {PX_ADMIN_HEAD_MS / 1000, (PX_ADMIN_HEAD_MS % 1000) * 1000};

    (void)l;
    if (a->n_conns >= PX_ADMIN_MAX_CONNS) {
        if (a->ctx->client_tr->ops->refuse(fd, busy, sizeof(busy) - 1) < 0)
            px_log_debug("admin: 503 over the limit not sent: %s", strerror(errno));
        px_log_warn("admin: %d connections open; refusing more", PX_ADMIN_MAX_CONNS);
        close(fd);
        return;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        return;
    }
    c->a = a;
    {
        char host[48] = "?", serv[8] = "?"; /* numeric: an IPv6 address and a port fit */
        if (sa != NULL)
            getnameinfo(sa, (socklen_t)salen, host, sizeof host, serv, sizeof serv,
                        NI_NUMERICHOST | NI_NUMERICSERV);
        snprintf(c->peer, sizeof c->peer, "%s:%s", host, serv);
    }
    TAILQ_INSERT_TAIL(&a->conns, c, link);
    a->n_conns++;
    c->bev = px_transport_accept(a->ctx->client_tr, a->ctx->base, fd); /* owns fd now */
    c->timer = evtimer_new(a->ctx->base, timer_cb, c);
    if (c->bev == NULL || c->timer == NULL) {
        conn_free(c);
        return;
    }
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, ADMIN_MAX_HEAD + 1);
    bufferevent_enable(c->bev, EV_READ);
    evtimer_add(c->timer, &tv); /* from accept: a deadline, not an inactivity timer */
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_admin *a = arg;

    (void)fd;
    (void)what;
    if (a->listener != NULL)
        evconnlistener_enable(a->listener);
}

/* accept() failed (EMFILE, ENFILE, ENOBUFS...): pause instead of spinning. */
static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    struct px_admin *a = arg;
    struct timeval tv = {0, PX_ADMIN_ACCEPT_PAUSE_MS * 1000};
    int err = EVUTIL_SOCKET_ERROR();

    px_log_warn("admin accept: %s; pausing admin accepts for %d ms",
                evutil_socket_error_to_string(err), PX_ADMIN_ACCEPT_PAUSE_MS);
    evconnlistener_disable(l);
    event_add(a->retry, &tv);
}

struct px_admin *px_admin_new(struct px_ctx *ctx, const char *host, int port, char *err,
                              size_t errlen)
{
    struct px_admin *a = calloc(1, sizeof(*a));
    struct addrinfo hints, *res = NULL;
    char portstr[16];
    int gai;

    if (a == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    a->ctx = ctx;
    TAILQ_INIT(&a->conns);
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    snprintf(portstr, sizeof(portstr), "%d", port);
    gai = getaddrinfo(host, portstr, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "admin_listen %s:%d: %s", host, port, gai_strerror(gai));
        goto fail;
    }
    a->retry = evtimer_new(ctx->base, retry_cb, a);
    a->listener = evconnlistener_new_bind(
        ctx->base, accept_cb, a, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
        PX_ADMIN_BACKLOG, res->ai_addr, (int)res->ai_addrlen);
    if (a->retry == NULL || a->listener == NULL) {
        snprintf(err, errlen, "admin_listen %s:%d: cannot listen: %s", host, port, strerror(errno));
        goto fail;
    }
    evconnlistener_set_error_cb(a->listener, accept_error_cb);
    freeaddrinfo(res);
    return a;
fail:
    if (res != NULL)
        freeaddrinfo(res);
    px_admin_free(a);
    return NULL;
}

size_t px_admin_conn_count(const struct px_admin *a)
{
    return a != NULL ? a->n_conns : 0;
}

void px_admin_free(struct px_admin *a)
{
    if (a == NULL)
        return;
    while (!TAILQ_EMPTY(&a->conns))
        conn_free(TAILQ_FIRST(&a->conns));
    if (a->listener != NULL)
        evconnlistener_free(a->listener);
    if (a->retry != NULL)
        event_free(a->retry);
    free(a);
}

/* px_admin: see px_admin.h. /tokens answers from the fence's cache when the
 * resource is cached (the highest the proxy enforces), else from the store. */
#include "px_admin.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "pol_decide.h"
#include "st_store.h"
#include "px_audit.h"
#include "px_config.h"
#include "px_fence.h"
#include "px_log.h"
#include "px_ctx.h"
#include "px_stats.h"

struct px_admin {
    struct px_ctx *ctx;
    struct evhttp *http;
    uint64_t audit_lost_seen; /* px_audit_lost() already in the metrics */
};

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

/* A /tokens request waiting for the store. evhttp keeps req alive until we
 * reply (if the client left, the reply frees it). */
struct token_query {
    struct evhttp_request *req;
    char *key;
    size_t klen;
};

static void reply(struct evhttp_request *req, int code, const char *ctype, const char *body,
                  size_t len)
{
    struct evbuffer *b = evbuffer_new();

    if (b == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add(b, body, len);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
    evhttp_send_reply(req, code, code == 200 ? "OK" : "Error", b);
    evbuffer_free(b);
}

static void reply_token(struct evhttp_request *req, const char *key, size_t klen, uint64_t highest)
{
    char *esc = NULL;
    size_t elen = 0, ecap = 0;
    struct evbuffer *b = evbuffer_new();

    if (b == NULL || pol_json_append_escaped(&esc, &elen, &ecap, key, klen) < 0) {
        evhttp_send_error(req, 500, NULL);
        goto out;
    }
    evbuffer_add_printf(b, "{\"resource\":\"%.*s\",\"highest\":%" PRIu64 "}\n", (int)elen,
                        esc != NULL ? esc : "", highest);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, 200, "OK", b);
out:
    if (b != NULL)
        evbuffer_free(b);
    free(esc);
}

static void token_loaded(void *arg, int rc, uint64_t highest)
{
    struct token_query *q = arg;

    if (rc != 0)
        reply(q->req, 503, "text/plain", "token store failed\n", 19);
    else
        reply_token(q->req, q->key, q->klen, highest);
    free(q->key);
    free(q);
}

static void handle_tokens(struct px_admin *a, struct evhttp_request *req, const char *rest)
{
    size_t klen = 0;
    char *key = evhttp_uridecode(rest, 0, &klen);
    uint64_t highest;
    struct token_query *q = NULL;

    if (key == NULL || klen == 0) {
        reply(req, 400, "text/plain", "resource missing\n", 17);
        goto out;
    }
    if (px_fence_peek(a->ctx->fence, key, klen, &highest) == 0) {
        reply_token(req, key, klen, highest);
        goto out;
    }
    q = calloc(1, sizeof(*q));
    if (q == NULL) {
        evhttp_send_error(req, 500, NULL);
        goto out;
    }
    q->req = req;
    q->key = key;
    q->klen = klen;
    key = NULL;
    st_store_get(a->ctx->store, q->key, q->klen, token_loaded, q);
out:
    free(key);
}

static void admin_cb(struct evhttp_request *req, void *arg)
{
    struct px_admin *a = arg;
    const char *uri = evhttp_request_get_uri(req);
    char *text;
    size_t len;

    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
        reply(req, 405, "text/plain", "only GET\n", 9);
        return;
    }
    if (strcmp(uri, "/healthz") == 0) {
        if (st_store_failed(a->ctx->store))
            reply(req, 503, "text/plain", "store failed\n", 13);
        else if (a->ctx->shutting_down)
            reply(req, 503, "text/plain", "shutting down\n", 14);
        else if (a->ctx->audit != NULL && !px_audit_writable(a->ctx->audit))
            /* S7: degraded; unavailable when fenced requests are refused. */
            reply(req, a->ctx->cfg->audit_required ? 503 : 200, "text/plain",
                  "degraded: audit records cannot be written\n", 42);
        else
            reply(req, 200, "text/plain", "ok\n", 3);
    } else if (strcmp(uri, "/metrics") == 0) {
        px_stats_gauge_set(PX_G_STORE_UP, st_store_failed(a->ctx->store) ? 0 : 1);
        sync_audit_stats(a);
        text = px_stats_render(&len);
        if (text == NULL) {
            evhttp_send_error(req, 500, NULL);
            return;
        }
        reply(req, 200, "text/plain; version=0.0.4", text, len);
        free(text);
    } else if (strncmp(uri, "/tokens/", 8) == 0) {
        handle_tokens(a, req, uri + 8);
    } else {
        reply(req, 404, "text/plain", "not found\n", 10);
    }
}

struct px_admin *px_admin_new(struct px_ctx *ctx, const char *host, int port, char *err,
                              size_t errlen)
{
    struct px_admin *a = calloc(1, sizeof(*a));

    if (a == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    a->ctx = ctx;
    a->http = evhttp_new(ctx->base);
    if (a->http == NULL) {
        snprintf(err, errlen, "admin: cannot create the HTTP server");
        goto fail;
    }
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_max_headers_size(a->http, 8192);
    evhttp_set_max_body_size(a->http, 0);
    evhttp_set_timeout(a->http, 10);
    evhttp_set_gencb(a->http, admin_cb, a);
    if (evhttp_bind_socket(a->http, host, (ev_uint16_t)port) != 0) {
        snprintf(err, errlen, "admin_listen %s:%d: cannot listen", host, port);
        goto fail;
    }
    return a;
fail:
    px_admin_free(a);
    return NULL;
}

void px_admin_free(struct px_admin *a)
{
    if (a == NULL)
        return;
    if (a->http != NULL)
        evhttp_free(a->http);
    free(a);
}

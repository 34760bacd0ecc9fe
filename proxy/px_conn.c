/* px_conn: see px_conn.h. This module is the client connection's state
 * machine; the work of each phase lives in its own module: the head is
 * parsed by px_http1, decided by policy/ and px_fence, rewritten by
 * px_rewrite, the bodies move through px_body, the upstream exchange is a
 * px_uclient, and px_report says what happened. Every socket call goes
 * through px_transport.
 *
 * A connection serves one request at a time (pipelined requests wait in its
 * input buffer, so responses go out in order). Nothing reaches the upstream
 * before the whole head has been parsed and accepted (S4 in
 * docs/safety.md). Objects are never freed inside their own callbacks: a
 * closing connection becomes C_DEAD and is reaped from its kick event. */
#include "px_conn.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "pol_decide.h"
#include "pol_route.h"
#include "pol_uri.h"
#include "px_audit.h"
#include "px_body.h"
#include "px_clock.h"
#include "px_config.h"
#include "px_ctx.h"
#include "px_fence.h"
#include "px_http1.h"
#include "px_log.h"
#include "px_report.h"
#include "px_rewrite.h"
#include "px_stats.h"
#include "px_transport.h"
#include "px_uclient.h"
#include "px_upstream.h"

/* Backpressure: stop reading a side while the other side's output holds
 * more than HIGH bytes; resume below LOW. Bounds memory per connection. */
#define PX_BUF_HIGH (256 * 1024)
#define PX_BUF_LOW  (64 * 1024)
/* After a response that ends a connection with unread input, the proxy
 * discards what the client still sends for PX_LINGER_MS (px_ctx.h) or up
 * to this many bytes, so that the client's stack does not reset the
 * connection before it read our response. */
#define PX_LINGER_BYTES (1024 * 1024)

/* The states (px_conn.h says what holds in each) and the legal changes:
 * legal[from] is the set of states a connection may go to from `from`. */
#define TO(s) (1u << (s))
static const unsigned legal[C_COUNT] = {
    [C_HEAD] = TO(C_HEAD) | TO(C_DECIDE) | TO(C_CLOSING) | TO(C_DEAD),
    [C_DECIDE] = TO(C_HEAD) | TO(C_CONNECT) | TO(C_FORWARD) | TO(C_CLOSING) | TO(C_DEAD),
    [C_CONNECT] = TO(C_CONNECT) | TO(C_FORWARD) | TO(C_CLOSING) | TO(C_DEAD),
    [C_FORWARD] = TO(C_HEAD) | TO(C_CLOSING) | TO(C_DEAD),
    [C_CLOSING] = TO(C_LINGER) | TO(C_DEAD),
    [C_LINGER] = TO(C_DEAD),
    [C_DEAD] = 0,
};
#undef TO

static const char *const state_names[C_COUNT] = {"HEAD",    "DECIDE", "CONNECT", "FORWARD",
                                                 "CLOSING", "LINGER", "DEAD"};

int px_conn_state_legal(enum px_conn_state from, enum px_conn_state to)
{
    return (unsigned)from < C_COUNT && (unsigned)to < C_COUNT && (legal[from] & (1u << to)) != 0;
}

const char *px_conn_state_name(enum px_conn_state s)
{
    return (unsigned)s < C_COUNT ? state_names[s] : "?";
}

int px_conn_state_check(uint64_t id, const char *peer, enum px_conn_state from,
                        enum px_conn_state to)
{
    if (px_conn_state_legal(from, to))
        return 0;
    px_clog_error(id, peer, "illegal state change %s -> %s", px_conn_state_name(from),
                  px_conn_state_name(to));
#ifndef NDEBUG
    abort();
#endif
    return -1;
}

/* What the connection's one timer does when it fires. */
enum tmode {
    T_OFF,
    T_IDLE, /* no byte of a head yet: close quietly */
    T_HEAD, /* a head is arriving: 408 */
    T_EXPECT, /* the upstream has not answered Expect: send the body anyway */
    T_QUEUE,  /* queued for an upstream connection too long: 503 */
    T_END   /* closing or lingering: close */
};

/* One resource a request writes, at the fence and its ordering gate. */
struct px_gate {
    struct pol_decision *dec;     /* the request's or its Destination's */
    struct px_fence_ticket ticket;
    int fenced;                   /* holds the ticket (px_fence_done() owed) */
};

struct px_req {
    struct px_config *cfg; /* the snapshot it started under (held): a reload
                              changes the next request, not this one */
    struct px_upool *pool; /* the pool it queued on or borrowed from */
    char *buf;           /* copy of the head bytes; owned */
    char *path;          /* the target's key path (pol_decide_target); owned */
    char *dpath;         /* the Destination's (COPY, MOVE); owned */
    struct pol_decision dec;  /* the target's; what is reported */
    struct pol_decision ddec; /* the Destination's, when there is one */
    size_t route_idx;         /* of dec; SIZE_MAX when no route */
    /* The resources to admit, in a fixed order (resource key bytes), so
     * that two requests that write the same two resources cannot each hold
     * one and wait for the other; gate_at is the one being admitted. */
    struct px_gate gates[2];
    unsigned n_gates, gate_at;
    struct px_uclient uc; /* the upstream exchange */
    struct px_upool_waiter qw; /* queued for an upstream connection */
    int queue_ready;           /* the pool granted qw a connection */
    char rid[80];         /* X-Request-Id */
    struct px_body body;  /* the request body, client to upstream */
    int expect_wait;      /* the body waits for the upstream's 100 Continue */
    int preempted;        /* a higher token was admitted meanwhile (S3) */
    int lapsed;           /* this proxy's ownership of a resource lapsed or was lost */
    int sent_100;         /* a 100 Continue went to the client */
    int status;
    uint64_t bytes_out;      /* a local response's body bytes */
    struct timespec t_start; /* head parsed */
    struct timespec t_fwd;   /* forwarding started */
    double upstream_s;
    /* Last: a new request zeroes what comes before it and gets only the used
     * prefix of the parsed head (PX_H1_HEAD_USED), not all 128 field slots. */
    struct px_h1_head h; /* slices of buf */
};

struct px_conn {
    struct px_ctx *ctx;
    uint64_t id;
    struct bufferevent *bev;
    char peer[64]; /* ip:port */
    char peer_ip[48];
    TAILQ_ENTRY(px_conn) link;
    enum px_conn_state state; /* changed by set_state() only */
    struct event *timer;
    enum tmode tmode;
    struct event *kick; /* deferred work: next request, fence answer, reaping */
    struct px_h1_parser parser;
    struct px_req *req;  /* NULL in C_HEAD, C_CLOSING, C_LINGER, C_DEAD */
    int keep_alive;      /* the current request allows reuse */
    int paused_client;   /* client reading paused for the upstream */
    size_t linger_bytes;
    int client_eof;      /* the client half-closed */
    int upload_deadline; /* the client read deadline is armed */
    int output_full;     /* C_HEAD: the next request waits for the output to drain */
    unsigned served;     /* request heads parsed on this connection */
};

TAILQ_HEAD(px_conn_list, px_conn);

struct px_conn_set {
    struct px_conn_list list;
    size_t n;
};

static void client_read_cb(struct bufferevent *bev, void *arg);
static void client_write_cb(struct bufferevent *bev, void *arg);
static void client_event_cb(struct bufferevent *bev, short what, void *arg);
static void timer_cb(evutil_socket_t fd, short what, void *arg);
static void respond_bad_body(struct px_conn *c);
static void start_head(struct px_conn *c);
static void process_head(struct px_conn *c);
static void set_client_read_timeout(struct px_conn *c, int on);
static void fence_decided(struct px_conn *c);
static void flush_all(struct px_conn *c);
static void start_body(struct px_conn *c);
static void preempt(struct px_conn *c);
static void abort_lapsed(struct px_conn *c);
static void forward(struct px_conn *c);

/* Performs every state change and checks it against the table: an illegal
 * one is a bug (debug builds abort; release builds log it and go on). */
static void set_state(struct px_conn *c, enum px_conn_state to)
{
    (void)px_conn_state_check(c->id, c->peer, c->state, to);
    c->state = to;
}

static size_t route_index(const struct pol_routes *rt, const struct pol_route *route)
{
    size_t n = pol_routes_count(rt);

    for (size_t i = 0; route != NULL && i < n; i++)
        if (pol_routes_get(rt, i) == route)
            return i;
    return SIZE_MAX;
}

/* Arms the connection's timer for mode with tv (one of ctx->tv), or stops
 * it (T_OFF, tv NULL). */
static void set_timer(struct px_conn *c, enum tmode mode, const struct timeval *tv)
{
    c->tmode = mode;
    if (mode == T_OFF)
        event_del(c->timer);
    else
        event_add(c->timer, tv);
}

/* Lets the fence go: the S3 ticket ends once the upstream connection is
 * idle or closed, so callers finish the uclient first. */
static void release_fence(struct px_conn *c)
{
    struct px_req *r = c->req;

    for (unsigned i = 0; i < r->n_gates; i++)
        if (r->gates[i].fenced) {
            px_fence_done(c->ctx->fence, &r->gates[i].ticket);
            r->gates[i].fenced = 0;
        }
}

/* Self-fencing: whether this proxy's ownership of a resource the request
 * writes may have lapsed or is gone (px_fence_ticket_lapsed). */
static int req_lapsed(const struct px_conn *c)
{
    const struct px_req *r = c->req;

    if (r->n_gates == 0)
        return 0;
    if (px_fence_lapsed(c->ctx->fence))
        return 1;
    for (unsigned i = 0; i < r->n_gates; i++)
        if (r->gates[i].fenced && px_fence_ticket_lapsed(c->ctx->fence, &r->gates[i].ticket))
            return 1;
    return 0;
}

static void req_free(struct px_conn *c)
{
    struct px_req *r = c->req;

    if (r == NULL)
        return;
    px_uclient_finish(&r->uc, 0);
    if (r->pool != NULL)
        px_upool_cancel(r->pool, &r->qw);
    release_fence(c);
    px_body_clear(&r->body);
    px_body_clear(&r->uc.body);
    free(r->buf);
    free(r->path);
    free(r->dpath);
    px_config_free(&r->cfg);
    free(r);
    c->req = NULL;
}

/* Marks the connection dead and lets the kick event free it: safe from any
 * callback, including the connection's own. A second call is a no-op. */
static void conn_close(struct px_conn *c)
{
    if (c->state == C_DEAD)
        return;
    if (c->req != NULL && px_uclient_active(&c->req->uc) && c->req->status == 0 &&
        c->req->n_gates > 0)
        px_clog_debug(c->id, c->peer, "closing with a request in flight");
    set_state(c, C_DEAD);
    req_free(c);
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    set_timer(c, T_OFF, NULL);
    event_active(c->kick, EV_TIMEOUT, 0);
}

static void conn_free(struct px_conn *c)
{
    struct px_ctx *ctx = c->ctx;

    req_free(c);
    TAILQ_REMOVE(&ctx->conns->list, c, link);
    ctx->conns->n--;
    px_stats_gauge_add(PX_G_CONNECTIONS, -1);
    bufferevent_free(c->bev);
    event_free(c->timer);
    event_free(c->kick);
    free(c);
    if (ctx->conns->n == 0 && ctx->conns_gone != NULL)
        ctx->conns_gone(ctx);
}

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_conn *c = arg;

    if (c->state == C_DEAD) {
        conn_free(c);
        return;
    }
    if (c->state == C_HEAD && c->req == NULL)
        process_head(c);
    else if (c->state == C_DECIDE &&
             c->req->gates[c->req->gate_at].ticket.result != PX_FENCE_WAIT)
        fence_decided(c);
    else if ((c->state == C_CONNECT || c->state == C_FORWARD) && c->req->preempted)
        preempt(c);
    else if (c->state == C_CONNECT && c->req->queue_ready)
        forward(c); /* the pool kept a connection for us */
    flush_all(c);
}

/* After the output drains: shut the write side and keep discarding input
 * for a moment so the client reads the response before the connection goes
 * (lingering close). */
static void finish_close(struct px_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);

    if (evbuffer_get_length(bufferevent_get_output(c->bev)) > 0)
        return;
    c->ctx->client_tr->ops->shutdown_write(c->bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    set_state(c, C_LINGER);
    c->linger_bytes = 0;
    bufferevent_enable(c->bev, EV_READ);
    set_timer(c, T_END, &c->ctx->tv.linger);
}

/* Ends the connection once what is queued for the client has been written. */
static void close_after_write(struct px_conn *c)
{
    set_state(c, C_CLOSING);
    req_free(c);
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    bufferevent_enable(c->bev, EV_WRITE);
    set_timer(c, T_END, &c->ctx->tv.idle);
    finish_close(c);
}

/* The exchange as reporting sees it (r may be NULL). */
static void report_of(const struct px_conn *c, const struct px_req *r, int status,
                      uint64_t bytes, struct px_report *x)
{
    memset(x, 0, sizeof(*x));
    x->conn_id = c->id;
    x->peer = c->peer;
    x->subject = c->ctx->client_tr->ops->subject(c->bev);
    x->token_field = r != NULL ? r->cfg->token_header : c->ctx->cfg->token_header;
    x->json = (r != NULL ? r->cfg : c->ctx->cfg)->access_log_json;
    x->request_id = "";
    x->status = status;
    x->bytes = bytes;
    if (r != NULL) {
        x->h = &r->h;
        x->dec = &r->dec;
        x->request_id = r->rid;
        x->upstream_s = r->upstream_s;
    }
}

/* An audit record of event for decision d of the current request. */
static void audit(struct px_conn *c, const struct pol_decision *d, const char *event,
                  uint64_t highest)
{
    struct px_report x;

    report_of(c, c->req, 0, 0, &x);
    x.dec = d;
    px_report_audit(c->ctx->audit, &x, event, highest);
}

static void access_log(struct px_conn *c, int status, uint64_t bytes)
{
    struct px_report x;

    report_of(c, c->req, status, bytes, &x);
    px_report_access(c->ctx->access, &x);
}

/* Writes a complete local response. close: the connection ends after it. */
static void respond_local(struct px_conn *c, int status, const char *ctype, const char *extra,
                          const char *body, size_t blen, int close)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    struct px_req *r = c->req;

    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n",
                        status, px_h1_reason(status), ctype, blen);
    if (r != NULL && r->rid[0] != '\0')
        evbuffer_add_printf(out, "X-Request-Id: %s\r\n", r->rid);
    if (extra != NULL)
        evbuffer_add(out, extra, strlen(extra));
    if (close)
        evbuffer_add(out, "Connection: close\r\n", 19);
    evbuffer_add(out, "\r\n", 2);
    if (r == NULL || r->h.method_len != 4 || memcmp(r->h.method, "HEAD", 4) != 0)
        evbuffer_add(out, body, blen);
    if (r != NULL) {
        r->status = status;
        r->bytes_out = blen;
    }
    access_log(c, status, blen);
    px_stats_add(PX_ST_BYTES_OUT, blen);
    if (close) {
        close_after_write(c);
    } else {
        req_free(c);
        start_head(c);
    }
}

static void respond_text(struct px_conn *c, int status, const char *text, int close)
{
    char body[256];
    int n = snprintf(body, sizeof(body), "%s\n", text);

    respond_local(c, status, "text/plain", NULL, body, (size_t)n, close);
}

/* Whether the request declared a body we have not read (so the connection
 * cannot carry another request after a local answer). */
static int has_unread_body(const struct px_req *r)
{
    return r != NULL && ((r->h.body == PX_H1_BODY_LENGTH && r->h.content_length > 0) ||
                         r->h.body == PX_H1_BODY_CHUNKED);
}

/* A rejection of decision d (MISSING, MALFORMED, STALE or BAD_TARGET),
 * decided from the head alone: answered in the route's error format without
 * reading the body; the connection closes when a body was declared. */
static void respond_refusal(struct px_conn *c, const struct pol_decision *d, enum px_outcome o,
                            int close);

static void respond_rejection(struct px_conn *c, const struct pol_decision *d)
{
    respond_refusal(c, d, px_report_verdict_outcome(d->verdict), 0);
}

/* The refusal of decision d reported as outcome o; close: the connection
 * ends after it whatever the request declared. */
static void respond_refusal(struct px_conn *c, const struct pol_decision *d, enum px_outcome o,
                            int close)
{
    struct px_req *r = c->req;
    const char *reason = px_stats_outcome_label(o);
    uint64_t highest = d->highest;
    struct pol_response resp;
    char extra[96] = "";

    memset(&resp, 0, sizeof(resp));
    if (pol_decide_response_for(d, r->rid, strlen(r->rid), &resp) < 0) {
        respond_text(c, 500, "internal error", 1);
        return;
    }
    if (resp.has_highest)
        snprintf(extra, sizeof(extra), "Fencing-Token-Highest: %" PRIu64 "\r\n", resp.highest);
    if ((d->verdict == POL_MISSING || d->verdict == POL_MALFORMED) &&
        px_fence_peek(c->ctx->fence, d->resource, d->resource_len, &highest) < 0)
        highest = 0; /* not cached: never looked up for a request refused from its head */
    if (px_stats_outcome_audited(o))
        audit(c, d, reason, highest);
    px_report_outcome(route_index(r->cfg->routes, d->route), o);
    px_clog_info(c->id, c->peer, "%s %.*s %.*s resource=%.*s token=%" PRIu64 " highest=%" PRIu64,
                 reason, (int)r->h.method_len, r->h.method, (int)r->h.target_len, r->h.target,
                 (int)d->resource_len, d->resource, d->token, d->highest);
    respond_local(c, resp.status, resp.content_type, extra, resp.body, resp.body_len,
                  close || has_unread_body(r) || !c->keep_alive);
    pol_response_clear(&resp);
}

/* A framing or limits error on the client side: 4xx/5xx and close. */
static void respond_bad(struct px_conn *c, int status, const char *why)
{
    px_clog_info(c->id, c->peer, "refused %d: %s", status, why);
    px_report_outcome(c->req != NULL ? c->req->route_idx : SIZE_MAX, PX_OUT_BAD_REQUEST);
    respond_text(c, status, px_h1_reason(status), 1);
}

/* ---- the request body --------------------------------------------------- */

static void request_body_done(struct px_conn *c)
{
    struct px_req *r = c->req;

    if (c->paused_client) {
        c->paused_client = 0;
        bufferevent_enable(c->bev, EV_READ); /* pipelined bytes may follow */
    }
    if (c->upload_deadline) {
        set_client_read_timeout(c, 0);
        c->upload_deadline = 0;
    }
    px_uclient_request_done(&r->uc);
}

/* Moves request body bytes from the client to the upstream until the input
 * is empty, the body is complete or the upstream's output is full (then the
 * client is not read until it drains). Returns -1 when the body is
 * malformed (the caller answers 400 and closes). */
static int pump_request_body(struct px_conn *c)
{
    struct px_req *r = c->req;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct evbuffer *out;
    uint64_t before = r->body.wire;
    enum px_body_status st;

    if (r->body.done || c->paused_client || r->expect_wait || !px_uclient_active(&r->uc))
        return 0;
    if (req_lapsed(c)) {
        /* Self-fencing: not one more body byte once ownership may have
         * lapsed (a pause, SIGSTOP, can end with client bytes waiting) or
         * is gone. */
        abort_lapsed(c);
        return 0;
    }
    out = px_uclient_output(&r->uc);
    st = px_body_relay(&r->body, in, out, PX_BUF_HIGH);
    px_stats_add(PX_ST_BYTES_IN, r->body.wire - before);
    if (st == PX_BODY_ERROR)
        return -1;
    if (st == PX_BODY_DONE) {
        request_body_done(c);
    } else if (evbuffer_get_length(out) >= PX_BUF_HIGH) {
        bufferevent_disable(c->bev, EV_READ);
        c->paused_client = 1;
    }
    return 0;
}

/* The client's chunked body turned out malformed after forwarding began: the
 * upstream holds a partial request, so its connection is closed. */
static void respond_bad_body(struct px_conn *c)
{
    px_uclient_finish(&c->req->uc, 0);
    release_fence(c);
    if (c->req->uc.started)
        conn_close(c);
    else
        respond_bad(c, 400, "malformed chunked body");
}

/* ---- the upstream exchange's callbacks ----------------------------------- */

static void response_done(struct px_conn *c)
{
    struct px_req *r = c->req;
    struct timespec now;
    int close;

    clock_gettime(CLOCK_MONOTONIC, &now);
    r->upstream_s = px_clock_diff(&r->t_fwd, &now);
    px_stats_observe(PX_H_UPSTREAM_DURATION, r->upstream_s);
    px_report_outcome(r->route_idx, PX_OUT_FORWARDED);
    px_stats_add(PX_ST_BYTES_OUT, r->uc.body.data);
    px_uclient_finish(&r->uc, r->uc.reusable && r->body.done);
    release_fence(c);
    access_log(c, r->status, r->uc.body.data);
    close = !c->keep_alive || !r->body.done || c->ctx->shutting_down ||
            r->uc.body.framing == PX_H1_BODY_EOF;
    if (close) {
        close_after_write(c);
        return;
    }
    req_free(c);
    start_head(c);
}

static void uc_connected(void *arg)
{
    set_state(arg, C_FORWARD);
}

/* Writes the response head for the client; the body goes to the client's
 * output, re-chunked when the client speaks HTTP/1.1. */
static int uc_head(void *arg, const struct px_h1_head *h, struct evbuffer **sink, int *rechunk)
{
    struct px_conn *c = arg;
    struct px_req *r = c->req;
    struct evbuffer *o = bufferevent_get_output(c->bev);
    struct px_rw_response rs;
    struct evbuffer_iovec v;
    size_t max;

    r->status = h->status;
    if (h->body == PX_H1_BODY_EOF || (h->body == PX_H1_BODY_CHUNKED && r->h.minor != 1))
        c->keep_alive = 0; /* the end of the body is the end of the connection */
    memset(&rs, 0, sizeof(rs));
    rs.h = h;
    rs.request_id = r->rid;
    rs.upstream_origin = c->ctx->upstream_origin;
    rs.upstream_origin_len = c->ctx->upstream_origin_len;
    rs.chunked_out = h->body == PX_H1_BODY_CHUNKED && r->h.minor == 1;
    rs.close = !c->keep_alive || c->ctx->shutting_down;
    rs.client_11 = r->h.minor == 1;
    max = px_rw_response_max(&rs);
    if (evbuffer_reserve_space(o, (ev_ssize_t)max, &v, 1) < 1 || v.iov_len < max)
        return -1;
    v.iov_len = px_rw_response_head(&rs, v.iov_base);
    evbuffer_commit_space(o, &v, 1);
    *sink = o;
    *rechunk = rs.chunked_out;
    return 0;
}

/* An interim response: relayed to an HTTP/1.1 client (HTTP/1.0 has none);
 * a 100 Continue lets the request body go. */
static void uc_info(void *arg, const struct px_h1_head *h)
{
    struct px_conn *c = arg;
    struct px_req *r = c->req;
    struct evbuffer *o = bufferevent_get_output(c->bev);
    struct px_rw_response rs;
    struct evbuffer_iovec v;
    size_t max;

    if (h->status == 100 && (!r->h.expect_continue || r->sent_100))
        return; /* not asked for, or answered already */
    if (r->h.minor == 1) {
        memset(&rs, 0, sizeof(rs));
        rs.h = h;
        rs.request_id = r->rid;
        rs.upstream_origin = c->ctx->upstream_origin;
        rs.upstream_origin_len = c->ctx->upstream_origin_len;
        rs.client_11 = 1;
        max = px_rw_response_max(&rs);
        if (evbuffer_reserve_space(o, (ev_ssize_t)max, &v, 1) == 1 && v.iov_len >= max) {
            v.iov_len = px_rw_response_head(&rs, v.iov_base);
            evbuffer_commit_space(o, &v, 1);
        }
        r->sent_100 |= h->status == 100;
    }
    if (h->status == 100 && r->expect_wait)
        event_active(c->timer, EV_TIMEOUT, 0); /* T_EXPECT: the body goes, from the loop */
}

static void uc_done(void *arg)
{
    response_done(arg);
}

/* The upstream failed before or during the response. */
static void uc_failed(void *arg, int status, const char *why, int unknown)
{
    struct px_conn *c = arg;
    struct px_req *r = c->req;

    px_clog_warn(c->id, c->peer, "upstream: %s", why);
    px_report_outcome(r->route_idx, PX_OUT_UPSTREAM_ERROR);
    if (unknown && r->n_gates > 0) {
        /* The request went out and no answer came (timeout, reset, close):
         * whether the upstream applied it is unknown (S3, S7). */
        px_stats_inc(PX_ST_INFLIGHT_TIMEOUTS);
        for (unsigned i = 0; i < r->n_gates; i++)
            audit(c, r->gates[i].dec, "inflight_timeout", r->gates[i].dec->highest);
    }
    release_fence(c);
    if (!r->uc.started)
        respond_text(c, status, px_h1_reason(status), 1);
    else
        conn_close(c); /* a response is half sent: only closing tells */
}

static void uc_writable(void *arg)
{
    struct px_conn *c = arg;

    if (!c->paused_client)
        return;
    c->paused_client = 0;
    bufferevent_enable(c->bev, EV_READ);
    /* Bytes already buffered raise no read event: move them now. */
    if (pump_request_body(c) < 0)
        respond_bad_body(c);
}

static void uc_after(void *arg)
{
    flush_all(arg);
}

static const struct px_uclient_cbs uc_cbs = {
    .connected = uc_connected,
    .head = uc_head,
    .info = uc_info,
    .done = uc_done,
    .failed = uc_failed,
    .writable = uc_writable,
    .after = uc_after,
};

/* ---- forwarding ------------------------------------------------------------ */

/* The client's inactivity deadlines: idle_timeout for writing always (a
 * client that stops reading its response), and for reading while on is set
 * (a stalled upload). */
static void set_client_read_timeout(struct px_conn *c, int on)
{
    bufferevent_set_timeouts(c->bev, on ? &c->ctx->tv.idle : NULL, &c->ctx->tv.idle);
}

/* Queues the request head on the upstream output: rebuilt by px_rewrite.
 * Returns 0 or -1 (no memory). */
static int write_request_head(struct px_conn *c, struct px_req *r)
{
    struct evbuffer *o = px_uclient_output(&r->uc);
    struct px_rw_request rq;
    struct evbuffer_iovec v;
    size_t max;

    memset(&rq, 0, sizeof(rq));
    rq.h = &r->h;
    rq.token_field = r->cfg->token_header;
    rq.token_field_len = r->cfg->token_header_len;
    rq.token_checked = r->n_gates > 0; /* every gate passed: forwarding now */
    rq.token = r->n_gates > 0 ? r->gates[0].dec->token : 0;
    rq.peer_ip = c->peer_ip;
    rq.request_id = r->rid;
    rq.proto = c->ctx->client_proto;
    rq.relay_expect = r->expect_wait;
    max = px_rw_request_max(&rq);
    if (evbuffer_reserve_space(o, (ev_ssize_t)max, &v, 1) < 1 || v.iov_len < max)
        return -1;
    v.iov_len = px_rw_request_head(&rq, v.iov_base);
    evbuffer_commit_space(o, &v, 1);
    return 0;
}

/* The pool kept a connection for this request (called from inside the pool:
 * only schedule). */
static void queue_granted(void *arg)
{
    struct px_conn *c = arg;

    c->req->queue_ready = 1;
    event_active(c->kick, EV_TIMEOUT, 0);
}

/* Sends the accepted request upstream: starts the exchange, writes the
 * head, and starts the body. */
static void forward(struct px_conn *c)
{
    struct px_ctx *ctx = c->ctx;
    struct px_req *r = c->req;
    struct px_uclient_cfg ucfg;
    int rc;

    memset(&ucfg, 0, sizeof(ucfg));
    ucfg.lim = &ctx->rlim;
    ucfg.connect_tv = &ctx->tv.connect;
    ucfg.upstream_tv = &ctx->tv.upstream;
    ucfg.high = PX_BUF_HIGH;
    ucfg.low = PX_BUF_LOW;
    ucfg.head_request = r->h.method_len == 4 && !memcmp(r->h.method, "HEAD", 4);
    if (r->pool == NULL)
        r->pool = ctx->upool; /* a reload's new pool serves the next requests */
    rc = px_uclient_start(&r->uc, r->pool, &ucfg, &uc_cbs, c, r->queue_ready ? &r->qw : NULL);
    r->queue_ready = 0;
    if (rc == PX_UC_BUSY) {
        /* max_upstream_connections: queue, first come first served, under
         * upstream_queue_timeout (the fence ticket is held meanwhile). */
        if (c->state != C_CONNECT) {
            set_state(c, C_CONNECT);
            set_timer(c, T_QUEUE, &ctx->tv.queue);
        }
        r->qw.cb = queue_granted;
        r->qw.arg = c;
        px_upool_wait(r->pool, &r->qw);
        return;
    }
    if (c->tmode == T_QUEUE)
        set_timer(c, T_OFF, NULL);
    if (rc < 0) {
        uc_failed(c, 502, "cannot open a connection", 0);
        return;
    }
    set_state(c, r->uc.connecting ? C_CONNECT : C_FORWARD);
    clock_gettime(CLOCK_MONOTONIC, &r->t_fwd);
    px_body_init(&r->body, r->h.body, r->h.content_length, 1);
    /* Expect: 100-continue goes to the store, which may refuse before the
     * body (auth, quota, 413, a missing collection); the body waits for its
     * 100 or, as curl does, for a moment of silence. The proxy's own
     * refusals came before anything went upstream (S4). */
    r->expect_wait = r->h.expect_continue && r->h.minor == 1 && !r->body.done;
    if (req_lapsed(c)) {
        /* Admitted, then ownership lapsed before anything went upstream
         * (a wait for an upstream connection, a pause). */
        px_uclient_finish(&r->uc, 0);
        release_fence(c);
        px_report_outcome(r->route_idx, PX_OUT_OWNERSHIP_LAPSED);
        audit(c, r->gates[0].dec, "ownership_lapsed", 0);
        respond_text(c, 503, "ownership lapsed", 1);
        return;
    }
    if (write_request_head(c, r) < 0) {
        px_uclient_finish(&r->uc, 0);
        uc_failed(c, 502, "out of memory", 0);
        return;
    }
    if (r->body.done) {
        request_body_done(c);
        return;
    }
    if (r->expect_wait) {
        set_timer(c, T_EXPECT, &c->ctx->tv.expect);
        return;
    }
    start_body(c);
}

/* Starts relaying the request body (at once, or once the upstream said 100
 * Continue or was silent for a moment). */
static void start_body(struct px_conn *c)
{
    struct px_req *r = c->req;

    if (r->expect_wait) {
        r->expect_wait = 0;
        set_timer(c, T_OFF, NULL);
        if (!r->sent_100) { /* the upstream was silent: tell the client to go on */
            evbuffer_add(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
            r->sent_100 = 1;
        }
    }
    if (!c->client_eof)
        bufferevent_enable(c->bev, EV_READ);
    if (pump_request_body(c) < 0) {
        respond_bad_body(c);
    } else if (c->client_eof && !r->body.done) {
        conn_close(c); /* the upstream never gets a complete request */
    } else if (!r->body.done) {
        /* The body is still coming: a deadline for a stalled client (the
         * uclient has one for an upstream that stops taking bytes). A body
         * that was already buffered, the common case for small requests,
         * needs none. */
        set_client_read_timeout(c, 1);
        c->upload_deadline = 1;
    }
}

/* ---- the decision ------------------------------------------------------ */

static void fence_cb(struct px_fence_ticket *t, void *arg)
{
    struct px_conn *c = arg;

    /* Called from inside px_fence, maybe for another connection's call:
     * only schedule our own work. */
    event_active(c->kick, EV_TIMEOUT, 0);
}

static void admit_next(struct px_conn *c);

/* A higher token was admitted for a resource this request holds: like
 * fence_cb, only schedule. */
static void fence_preempt_cb(struct px_fence_ticket *t, void *arg)
{
    struct px_conn *c = arg;

    c->req->preempted = 1;
    if (t->lapsed)
        c->req->lapsed = 1;
    event_active(c->kick, EV_TIMEOUT, 0);
}

/* Self-fencing (several proxies): this proxy's ownership of a resource the
 * request writes may have lapsed, so another proxy may own it now. Unless
 * the store already answered (the request is done there), the upstream
 * connection is closed whatever it received, so nothing more of it reaches
 * the storage; a request whose whole body went out may still be applied
 * there within upstream_timeout, which the next owner's lock-delay waits
 * out (docs/safety.md, "Several proxies"). */
static void abort_lapsed(struct px_conn *c)
{
    struct px_req *r = c->req;
    struct px_gate *g = &r->gates[0];

    r->lapsed = 0;
    if (r->uc.started)
        return; /* answered: done at the store */
    px_uclient_finish(&r->uc, 0);
    release_fence(c);
    px_clog_warn(c->id, c->peer, "ownership lapsed: aborting %.*s %.*s (token %" PRIu64 ")",
                 (int)r->h.method_len, r->h.method, (int)r->h.target_len, r->h.target,
                 g->dec->token);
    if (c->upload_deadline) {
        set_client_read_timeout(c, 0);
        c->upload_deadline = 0;
    }
    px_report_outcome(r->route_idx, PX_OUT_OWNERSHIP_LAPSED);
    audit(c, g->dec, "ownership_lapsed", 0);
    respond_text(c, 503, "ownership lapsed", 1);
}

/* S3 with preemption: a stale request still sending its body never
 * completes at the store. Its last byte was never relayed (the body relay
 * holds it back until the body is done), so closing the upstream
 * connection now leaves the store a cut request, as for a malformed chunked
 * body; the client gets 409 and the refusal is audited as preempted. A
 * request whose whole body went out is waited for (the uclient's response
 * deadline bounds it). */
static void preempt(struct px_conn *c)
{
    struct px_req *r = c->req;
    struct px_gate *g = NULL;
    uint64_t highest = 0;

    r->preempted = 0;
    if (r->lapsed) {
        abort_lapsed(c);
        return;
    }
    if (r->body.done)
        return; /* the store has the whole request: its answer is waited for */
    for (unsigned i = 0; i < r->n_gates; i++)
        if (px_fence_peek(c->ctx->fence, r->gates[i].dec->resource,
                          r->gates[i].dec->resource_len, &highest) == 0 &&
            highest > r->gates[i].dec->token) {
            g = &r->gates[i];
            break;
        }
    if (g == NULL)
        return;
    px_uclient_finish(&r->uc, 0);
    release_fence(c);
    px_clog_info(c->id, c->peer, "preempted %.*s %.*s: token %" PRIu64 " < %" PRIu64
                 " while its body was still coming",
                 (int)r->h.method_len, r->h.method, (int)r->h.target_len, r->h.target,
                 g->dec->token, highest);
    if (c->upload_deadline) {
        set_client_read_timeout(c, 0);
        c->upload_deadline = 0;
    }
    pol_decide_check(g->dec, highest); /* STALE, with the highest */
    if (r->uc.started) {
        px_report_outcome(r->route_idx, PX_OUT_PREEMPTED);
        audit(c, g->dec, "preempted", highest);
        conn_close(c); /* a response was under way: only closing tells */
        return;
    }
    respond_refusal(c, g->dec, PX_OUT_PREEMPTED, 1);
}

/* Acts on the fence's answer for the gate being admitted. */
static void fence_decided(struct px_conn *c)
{
    struct px_req *r = c->req;
    struct px_gate *g = &r->gates[r->gate_at];

    switch (g->ticket.result) {
    case PX_FENCE_GO:
        g->dec->verdict = POL_ACCEPT;
        g->dec->highest = g->dec->token;
        r->gate_at++;
        admit_next(c);
        break;
    case PX_FENCE_STALE:
        g->fenced = 0;
        release_fence(c); /* the gates already passed */
        pol_decide_check(g->dec, g->ticket.highest); /* STALE, with the highest */
        respond_rejection(c, g->dec);
        break;
    case PX_FENCE_UNVERIFIED:
        g->fenced = 0;
        release_fence(c);
        g->dec->verdict = POL_UNVERIFIED; /* 403, audited, nothing raised */
        respond_rejection(c, g->dec);
        break;
    case PX_FENCE_FAILED:
        g->fenced = 0;
        release_fence(c);
        if (g->ticket.unreachable) {
            /* The route's lock backend did not answer: fail closed. */
            px_report_outcome(r->route_idx, PX_OUT_LOCK_BACKEND_FAILED);
            audit(c, g->dec, "lock_backend_unavailable", 0);
            respond_text(c, 503, "lock backend unavailable", 1);
            break;
        }
        if (g->ticket.busy) {
            /* Another proxy owns the resource and did not hand it over
             * within handover_wait. */
            px_report_outcome(r->route_idx, PX_OUT_HANDOVER_TIMEOUT);
            audit(c, g->dec, "handover_timeout", 0);
            px_clog_warn(c->id, c->peer, "resource %.*s is owned by another proxy: no "
                         "hand-over within handover_wait", (int)g->dec->resource_len,
                         g->dec->resource);
            respond_local(c, 503, "text/plain", "Retry-After: 1\r\n",
                          "resource owned by another proxy\n", 32, 1);
            break;
        }
        if (g->ticket.lost || px_fence_lapsed(c->ctx->fence)) {
            /* Deposed (the advance found another owner's epoch), or past
             * the deadline: not a store failure. */
            px_report_outcome(r->route_idx, PX_OUT_OWNERSHIP_LAPSED);
            audit(c, g->dec, "ownership_lapsed", 0);
            respond_text(c, 503, "ownership lapsed", 1);
            break;
        }
        if (g->ticket.full) {
            /* The store is at its maximum size: only new resources are
             * refused, and each refusal is audited. */
            px_report_outcome(r->route_idx, PX_OUT_STORE_FULL);
            audit(c, g->dec, "store_full", 0);
            px_clog_warn(c->id, c->peer, "token store full: refusing new resource %.*s",
                         (int)g->dec->resource_len, g->dec->resource);
            respond_text(c, 503, "token store full", 1);
            break;
        }
        px_report_outcome(r->route_idx, PX_OUT_STORE_FAILED);
        px_clog_error(c->id, c->peer, "token store failed: refusing %.*s %.*s",
                      (int)r->h.method_len, r->h.method, (int)r->h.target_len, r->h.target);
        respond_text(c, 503, "token store unavailable", 1);
        break;
    case PX_FENCE_WAIT:
        break; /* fence_cb kicks us */
    }
}

/* The verifier of d's route (verify = URL), or NULL. Verifiers belong to
 * the routes of the snapshot the proxy started with (a reload cannot change
 * them): found by the route's name. */
static const struct px_fence_verifier *gate_verifier(struct px_conn *c,
                                                     const struct pol_decision *d)
{
    const struct pol_routes *rt;

    if (c->ctx->verifiers == NULL || d->route == NULL || d->route->verify == NULL)
        return NULL;
    rt = c->ctx->verify_cfg->routes;
    for (size_t i = 0; i < pol_routes_count(rt); i++)
        if (strcmp(pol_routes_get(rt, i)->name, d->route->name) == 0)
            return c->ctx->verifiers[i];
    return NULL;
}

/* Admits the gates in order; forwards once every one has let the request
 * through (S1-S3 hold for each resource it writes). */
static void admit_next(struct px_conn *c)
{
    struct px_req *r = c->req;
    struct px_gate *g;
    enum px_fence_result fr;

    if (r->gate_at == r->n_gates) {
        forward(c);
        return;
    }
    g = &r->gates[r->gate_at];
    fr = px_fence_admit_verified(c->ctx->fence, g->dec->resource, g->dec->resource_len,
                                 g->dec->token, gate_verifier(c, g->dec), &g->ticket, fence_cb,
                                 c);
    g->ticket.result = fr;
    g->fenced = fr == PX_FENCE_GO || fr == PX_FENCE_WAIT;
    if (g->fenced)
        px_fence_on_preempt(&g->ticket, fence_preempt_cb);
    fence_decided(c);
}

static void make_request_id(struct px_conn *c, struct px_req *r)
{
    struct px_ctx *ctx = c->ctx;
    uint64_t v = ctx->rid_base + (++ctx->rid_counter) * 0x9e3779b97f4a7c15ULL;

    snprintf(r->rid, sizeof(r->rid), "%016" PRIx64 "%08" PRIx64, v, ctx->rid_counter & 0xffffffffu);
}

/* Takes the client's X-Request-Id when it is short and plain, else makes one. */
static void pick_request_id(struct px_conn *c, struct px_req *r)
{
    for (unsigned i = 0; i < r->h.n_fields; i++) {
        const struct px_h1_field *f = &r->h.fields[i];
        int plain = 1;
        if (f->name_len != 12 || !px_h1_name_is(f, "X-Request-Id"))
            continue;
        if (f->value_len == 0 || f->value_len >= sizeof(r->rid))
            break;
        for (size_t j = 0; j < f->value_len; j++)
            if ((unsigned char)f->value[j] <= 0x20 || (unsigned char)f->value[j] >= 0x7f)
                plain = 0;
        if (!plain)
            break;
        memcpy(r->rid, f->value, f->value_len);
        r->rid[f->value_len] = '\0';
        return;
    }
    make_request_id(c, r);
}

/* Whether a route fences the request (anything but PASS and UNFENCED). */
static int fenced(enum pol_verdict v)
{
    return v != POL_PASS && v != POL_UNFENCED;
}

/* Whether the decision refuses the request from its head alone. */
static int is_rejection(enum pol_verdict v)
{
    return v == POL_MISSING || v == POL_MALFORMED || v == POL_BAD_TARGET;
}

/* Routes and classifies one origin-form path (the target, or a
 * Destination's) into d; the key path goes to *buf (allocated; owned by the
 * request). Returns 0, or -1 when the path is malformed for any route. */
static int classify(struct px_conn *c, const char *path, size_t len, char **buf,
                    struct pol_decision *d)
{
    struct px_req *r = c->req;
    const struct px_config *cfg = r->cfg;
    size_t tlen = cfg->token_header_len;
    struct pol_facts facts;
    size_t cap = 3 * len + 1; /* a byte may be re-written as %XX */

    *buf = malloc(cap);
    if (*buf == NULL)
        return -1;
    memset(&facts, 0, sizeof(facts));
    facts.method = r->h.method;
    facts.method_len = r->h.method_len;
    for (unsigned i = 0; i < r->h.n_fields; i++) {
        const struct px_h1_field *f = &r->h.fields[i];
        if (f->name_len == tlen && px_h1_name_is(f, cfg->token_header)) {
            if (facts.token_fields++ == 0) {
                facts.token = f->value;
                facts.token_len = f->value_len;
            }
        }
    }
    /* S5: the resource key is computed under the route's path semantics;
     * spellings a normalized route's store could resolve into it otherwise
     * are refused rather than guessed. */
    return pol_decide_target(cfg->routes, path, len, *buf, cap, &facts, d);
}

/* The Destination of a COPY or MOVE: 1 and its path, 0 when the request
 * has none, -1 when it is malformed or names another host (400). */
static int destination(const struct px_req *r, const char **path, size_t *len)
{
    const struct px_h1_head *h = &r->h;
    int copy = h->method_len == 4 && memcmp(h->method, "COPY", 4) == 0;
    int move = h->method_len == 4 && memcmp(h->method, "MOVE", 4) == 0;
    const struct px_h1_field *d = NULL;

    if (!copy && !move)
        return 0;
    for (unsigned i = 0; i < h->n_fields; i++)
        if (h->fields[i].name_len == 11 && px_h1_name_is(&h->fields[i], "Destination")) {
            if (d != NULL)
                return -1; /* two destinations: which one would the store use? */
            d = &h->fields[i];
        }
    if (d == NULL)
        return 0; /* the store answers 400 itself; nothing is written */
    return pol_uri_destination(d->value, d->value_len, h->host, h->host_len, path, len) < 0 ? -1
                                                                                           : 1;
}

/* Orders the checked decisions into gates (by resource key, one gate per
 * resource). */
static void set_gates(struct px_req *r)
{
    struct pol_decision *ds[2];
    unsigned n = 0;

    if (r->dec.verdict == POL_CHECK)
        ds[n++] = &r->dec;
    if (r->dpath != NULL && r->ddec.verdict == POL_CHECK)
        ds[n++] = &r->ddec;
    if (n == 2) {
        size_t la = ds[0]->resource_len, lb = ds[1]->resource_len;
        int cmp = memcmp(ds[0]->resource, ds[1]->resource, la < lb ? la : lb);
        if (cmp == 0 && la == lb) {
            n = 1; /* one resource: one gate */
            ds[1]->verdict = POL_CHECK;
        } else if (cmp > 0 || (cmp == 0 && la > lb)) {
            struct pol_decision *t = ds[0];
            ds[0] = ds[1];
            ds[1] = t;
        }
    }
    for (unsigned i = 0; i < n; i++)
        r->gates[i].dec = ds[i];
    r->n_gates = n;
    r->gate_at = 0;
}

static void decide(struct px_conn *c)
{
    struct px_ctx *ctx = c->ctx;
    struct px_req *r = c->req;
    const struct px_config *cfg = r->cfg;
    const char *path = r->h.origin, *dpath;
    size_t len = r->h.origin_len, dlen;
    int dest;

    c->keep_alive = r->h.keep_alive && !ctx->shutting_down;
    pick_request_id(c, r);
    clock_gettime(CLOCK_MONOTONIC, &r->t_start);
    r->route_idx = SIZE_MAX;
    if (r->h.target_form == PX_H1_TARGET_ASTERISK) {
        forward(c); /* OPTIONS *: about the server, no resource */
        return;
    }
    if (r->h.target_form == PX_H1_TARGET_ABSOLUTE &&
        pol_uri_absolute_target(r->h.target, r->h.target_len, r->h.host, r->h.host_len, &path,
                                &len) < 0) {
        respond_bad(c, 400, "absolute-form target names another host");
        return;
    }
    if (classify(c, path, len, &r->path, &r->dec) < 0) {
        respond_bad(c, 400, "malformed request target");
        return;
    }
    r->route_idx = route_index(cfg->routes, r->dec.route);
    dest = destination(r, &dpath, &dlen);
    if (dest < 0 || (dest > 0 && classify(c, dpath, dlen, &r->dpath, &r->ddec) < 0)) {
        respond_bad(c, 400, "malformed Destination");
        return;
    }
    /* S7 ([audit] required = on): no fenced request, admitted or refused,
     * while its record could not be written. */
    if ((fenced(r->dec.verdict) || (r->dpath != NULL && fenced(r->ddec.verdict))) &&
        ctx->audit != NULL && cfg->audit_required && !px_audit_writable(ctx->audit)) {
        px_report_outcome(r->route_idx, PX_OUT_AUDIT_UNAVAILABLE);
        respond_text(c, 503, "audit log unavailable", 1);
        return;
    }
    if (is_rejection(r->dec.verdict)) {
        respond_rejection(c, &r->dec);
        return;
    }
    if (r->dpath != NULL && is_rejection(r->ddec.verdict)) {
        respond_rejection(c, &r->ddec);
        return;
    }
    set_gates(r);
    admit_next(c);
}

/* Points every slice of h from the old buffer into the copy at base. */
static void head_rebase(struct px_h1_head *h, const char *old, char *base)
{
#define REBASE(p) ((p) = (p) != NULL ? base + ((p)-old) : NULL)
    REBASE(h->method);
    REBASE(h->target);
    REBASE(h->reason);
    REBASE(h->host);
    REBASE(h->authority);
    REBASE(h->origin);
    for (unsigned i = 0; i < h->n_fields; i++) {
        REBASE(h->fields[i].name);
        REBASE(h->fields[i].value);
    }
#undef REBASE
}

/* Parses what the client sent so far as a request head. C_HEAD only. */
static void process_head(struct px_conn *c)
{
    struct px_ctx *ctx = c->ctx;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t len = evbuffer_get_length(in);
    size_t want;
    const char *p;
    struct px_h1_head h;
    struct px_req *r;

    if (len == 0)
        return;
    /* A client that pipelines requests but does not read the responses:
     * the next request waits until the output drains below the low mark,
     * so memory per connection stays within the watermarks whatever the
     * client sends. The write deadline (idle_timeout) ends a client that
     * never reads; the head deadline does not run meanwhile. */
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) >= PX_BUF_HIGH) {
        if (!c->output_full) {
            c->output_full = 1;
            bufferevent_disable(c->bev, EV_READ); /* nothing to do with more input */
            set_timer(c, T_OFF, NULL);
            px_stats_inc(PX_ST_PIPELINE_PAUSES);
        }
        return;
    }
    if (c->output_full) {
        c->output_full = 0;
        if (!c->client_eof)
            bufferevent_enable(c->bev, EV_READ);
        set_timer(c, T_HEAD, &ctx->tv.header);
    }
    if (c->tmode == T_IDLE)
        set_timer(c, T_HEAD, &ctx->tv.header); /* the deadline starts */
    want = len < ctx->lim.max_head + 1 ? len : ctx->lim.max_head + 1;
    p = (const char *)evbuffer_pullup(in, (ssize_t)want);
    switch (px_h1_parse_head(&c->parser, p, want, &h)) {
    case PX_H1_NEED_MORE:
        if (want > ctx->lim.max_head)
            respond_bad(c, 431, "request head too large");
        else if (c->client_eof)
            conn_close(c); /* the client closed in the middle of a head */
        return;
    case PX_H1_ERROR:
        respond_bad(c, h.error_status, h.error != NULL ? h.error : "malformed request");
        return;
    case PX_H1_DONE:
        break;
    }
    /* Zeroed up to the head, which gets the bytes the parser wrote: the
     * field slots past h.n_fields (most of its 6 KiB) are never read. */
    r = malloc(sizeof(*r));
    if (r != NULL) {
        memset(r, 0, offsetof(struct px_req, h));
        r->buf = malloc(h.head_len);
    }
    if (r == NULL || r->buf == NULL) {
        free(r);
        respond_text(c, 500, "out of memory", 1);
        return;
    }
    memcpy(r->buf, p, h.head_len);
    r->cfg = px_config_hold(ctx->cfg);
    memcpy(&r->h, &h, PX_H1_HEAD_USED(&h));
    head_rebase(&r->h, p, r->buf);
    evbuffer_drain(in, h.head_len);
    px_stats_add(PX_ST_BYTES_IN, h.head_len);
    c->req = r;
    c->served++;
    set_state(c, C_DECIDE);
    set_timer(c, T_OFF, NULL);
    /* The client stays readable (no epoll change per request): what it sends
     * meanwhile, body or pipelined requests, waits in the input buffer, which
     * the read watermark bounds. Nothing of it moves before the decision. */
    decide(c);
}

/* Gets ready for the next request on a kept-alive connection. */
static void start_head(struct px_conn *c)
{
    struct px_ctx *ctx = c->ctx;

    set_state(c, C_HEAD);
    c->keep_alive = 1;
    c->paused_client = 0;
    px_h1_parser_init(&c->parser, 1, 0, &ctx->lim);
    if (ctx->shutting_down ||
        (c->client_eof && evbuffer_get_length(bufferevent_get_input(c->bev)) == 0)) {
        close_after_write(c);
        return;
    }
    bufferevent_enable(c->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
        set_timer(c, T_HEAD, &ctx->tv.header);
        event_active(c->kick, EV_TIMEOUT, 0); /* pipelined: parse from the loop */
    } else {
        set_timer(c, T_IDLE, &ctx->tv.idle);
    }
}

/* ---- client callbacks --------------------------------------------------- */

static void client_read_run(struct bufferevent *bev, struct px_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(bev);

    switch (c->state) {
    case C_HEAD:
        process_head(c);
        break;
    case C_CONNECT:
    case C_FORWARD:
        if (pump_request_body(c) < 0)
            respond_bad_body(c);
        break;
    case C_LINGER:
        c->linger_bytes += evbuffer_get_length(in);
        evbuffer_drain(in, evbuffer_get_length(in));
        if (c->linger_bytes > PX_LINGER_BYTES)
            conn_close(c);
        break;
    case C_DECIDE:
    case C_CLOSING:
    case C_DEAD:
    case C_COUNT:
        break; /* pipelined bytes wait for their turn */
    }
    /* Input at the read watermark that nothing consumes now (a request
     * held at the fence or the upstream, with more pipelined behind it):
     * libevent's watermark suspension leaves the socket in the poll set,
     * where the loop would wake for it again and again, so reading is
     * switched off here; a request that starts (start_head, forward)
     * switches it on again. */
    if (c->state != C_DEAD && evbuffer_get_length(in) >= PX_BUF_HIGH)
        bufferevent_disable(bev, EV_READ);
}

static void client_write_run(struct bufferevent *bev, struct px_conn *c)
{
    struct px_req *r = c->req;

    if (c->state == C_CLOSING) {
        finish_close(c);
        return;
    }
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        bufferevent_disable(bev, EV_WRITE); /* see px_transport's flush */
    if (r != NULL)
        px_uclient_resume(&r->uc); /* the response may flow again */
    else if (c->state == C_HEAD && c->output_full &&
             evbuffer_get_length(bufferevent_get_output(bev)) <= PX_BUF_LOW)
        process_head(c); /* the next pipelined request may start */
}

static void client_event_run(struct bufferevent *bev, short what, struct px_conn *c)
{
    struct px_req *r = c->req;

    if (what == BEV_EVENT_CONNECTED)
        return; /* a TLS transport's handshake finished; bytes come next */
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && c->state != C_LINGER &&
        c->state != C_CLOSING &&
        (r != NULL || evbuffer_get_length(bufferevent_get_input(bev)) > 0 ||
         evbuffer_get_length(bufferevent_get_output(bev)) > 0)) {
        /* Half-close: everything the client sent is in the input buffer.
         * Answer what it asked for, then close. libevent stops reading. */
        c->client_eof = 1;
        c->keep_alive = 0;
        if (r != NULL && (c->state == C_CONNECT || c->state == C_FORWARD) && !r->body.done) {
            if (pump_request_body(c) < 0) {
                respond_bad_body(c);
                return;
            }
            if (!r->body.done)
                goto abort; /* the body was cut short */
        }
        if (c->state == C_HEAD) {
            if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
                process_head(c); /* a final request, or a cut one (closed) */
            else
                close_after_write(c); /* deliver the last response, then close */
        }
        return;
    }
abort:
    if (r != NULL && px_uclient_active(&r->uc))
        px_clog_info(c->id, c->peer, "client went away during %.*s %.*s", (int)r->h.method_len,
                     r->h.method, (int)r->h.target_len, r->h.target);
    conn_close(c);
}

static void timer_run(struct px_conn *c)
{
    if (c->tmode == T_EXPECT) {
        c->tmode = T_OFF;
        start_body(c);
        return;
    }
    if (c->tmode == T_QUEUE) {
        c->tmode = T_OFF;
        px_upool_cancel(c->req->pool, &c->req->qw);
        release_fence(c);
        px_report_outcome(c->req->route_idx, PX_OUT_UPSTREAM_BUSY);
        px_clog_warn(c->id, c->peer, "no upstream connection within upstream_queue_timeout");
        respond_local(c, 503, "text/plain", "Retry-After: 1\r\n", "upstream busy\n", 14, 1);
        return;
    }
    if (c->tmode == T_HEAD) {
        c->tmode = T_OFF;
        px_stats_reject(PX_OUT_HEADER_TIMEOUT);
        px_clog_info(c->id, c->peer, "request head deadline passed");
        respond_text(c, 408, "Request Timeout", 1);
        return;
    }
    conn_close(c);
}

/* ---- writing ------------------------------------------------------------ */

/* Every libevent callback of a connection ends here: what was queued is
 * written at once when nothing is pending (px_transport's flush). */
static void flush_all(struct px_conn *c)
{
    if (c->state == C_DEAD)
        return;
    c->ctx->client_tr->ops->flush(c->bev);
    if (c->req != NULL)
        px_uclient_flush(&c->req->uc);
}

/* A callback of a closed connection can still be queued in the loop
 * iteration that closed it; nothing runs for it but the reaping. */
static void client_read_cb(struct bufferevent *bev, void *arg)
{
    struct px_conn *c = arg;

    if (c->state == C_DEAD)
        return;
    client_read_run(bev, c);
    flush_all(c);
}

static void client_write_cb(struct bufferevent *bev, void *arg)
{
    struct px_conn *c = arg;

    if (c->state == C_DEAD)
        return;
    client_write_run(bev, c);
    flush_all(c);
}

static void client_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct px_conn *c = arg;

    if (c->state == C_DEAD)
        return;
    client_event_run(bev, what, c);
    flush_all(c);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_conn *c = arg;

    if (c->state == C_DEAD)
        return;
    timer_run(c);
    flush_all(c);
}

/* ---- accepting and stopping ----------------------------------------------- */

static void format_peer(struct px_conn *c, const struct sockaddr *sa)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        port = ntohs(in->sin_port);
        snprintf(c->peer, sizeof(c->peer), "%s:%d", ip, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        port = ntohs(in6->sin6_port);
        snprintf(c->peer, sizeof(c->peer), "[%s]:%d", ip, port);
    } else {
        snprintf(c->peer, sizeof(c->peer), "unix");
    }
    snprintf(c->peer_ip, sizeof(c->peer_ip), "%s", ip);
}

void px_conn_accept(struct px_ctx *ctx, int fd, const struct sockaddr *sa, socklen_t salen)
{
    static const char busy[] =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
        "Content-Length: 20\r\nConnection: close\r\n\r\ntoo many connections";
    struct px_conn *c = NULL;

    if (ctx->conns->n >= ctx->cfg->max_connections || ctx->shutting_down) {
        px_stats_reject(PX_OUT_TOO_MANY_CONNECTIONS);
        if (ctx->client_tr->ops->refuse(fd, busy, sizeof(busy) - 1) < 0)
            px_log_debug("503 to a connection over the limit not sent");
        goto fail;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        goto fail;
    c->ctx = ctx;
    c->id = ++ctx->next_conn_id;
    format_peer(c, sa);
    c->timer = evtimer_new(ctx->base, timer_cb, c);
    c->kick = event_new(ctx->base, -1, 0, kick_cb, c);
    if (c->timer == NULL || c->kick == NULL)
        goto fail;
    c->bev = px_transport_accept(ctx->client_tr, ctx->base, fd);
    fd = -1; /* the transport owns it now, closed on failure */
    if (c->bev == NULL)
        goto fail;
    bufferevent_setcb(c->bev, client_read_cb, client_write_cb, client_event_cb, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, PX_BUF_LOW, 0);
    bufferevent_setwatermark(c->bev, EV_READ, 0, PX_BUF_HIGH); /* bounds read-ahead */
    bufferevent_disable(c->bev, EV_WRITE);                     /* writes: flush_all() */
    set_client_read_timeout(c, 0);
    TAILQ_INSERT_TAIL(&ctx->conns->list, c, link);
    ctx->conns->n++;
    px_stats_gauge_add(PX_G_CONNECTIONS, 1);
    start_head(c);
    set_timer(c, T_HEAD, &ctx->tv.header); /* the deadline runs from accept */
    return;
fail:
    if (fd >= 0)
        close(fd);
    if (c != NULL) {
        if (c->timer != NULL)
            event_free(c->timer);
        if (c->kick != NULL)
            event_free(c->kick);
        free(c);
    }
}

struct px_conn_set *px_conn_set_new(void)
{
    struct px_conn_set *set = calloc(1, sizeof(*set));

    if (set != NULL)
        TAILQ_INIT(&set->list);
    return set;
}

void px_conn_set_free(struct px_conn_set **set)
{
    if (set == NULL || *set == NULL)
        return;
    free(*set);
    *set = NULL;
}

size_t px_conn_count(const struct px_ctx *ctx)
{
    return ctx->conns->n;
}

void px_conn_drain_all(struct px_ctx *ctx)
{
    struct px_conn *c;

    TAILQ_FOREACH(c, &ctx->conns->list, link)
    {
        if (c->state == C_DEAD)
            continue;
        c->keep_alive = 0;
        /* An idle keep-alive connection goes now (its client opens a new
         * one); a fresh one that has sent nothing yet gets a moment
         * (PX_LINGER_MS) for the request it was opened for, so a restart
         * does not drop a client that connected just before the stop. */
        if (c->state != C_HEAD || evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
            continue;
        if (c->served > 0)
            conn_close(c);
        else
            set_timer(c, T_IDLE, &ctx->tv.linger); /* bytes switch it to the head deadline */
    }
}

void px_conn_close_all(struct px_ctx *ctx)
{
    struct px_conn *c, *next;

    for (c = TAILQ_FIRST(&ctx->conns->list); c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        conn_close(c);
    }
}

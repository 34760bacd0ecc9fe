/* px_conn: see px_conn.h. A client connection serves one request at a time
 * (pipelined requests wait in its input buffer, so responses go out in
 * order). A request goes through: HEAD (reading the head under a deadline),
 * DECIDE (fencing: waiting for the store or the ordering gate), CONNECT
 * (borrowing an upstream connection), FORWARD (head sent, bodies streaming
 * both ways), and ends in a response; local responses (errors, rejections)
 * skip the upstream. Nothing reaches the upstream before the whole head has
 * been parsed and accepted (S4 in docs/safety.md). Objects are never freed
 * inside their own callbacks: a closing connection is reaped from its kick
 * event. */
#include "px_conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "pol_decide.h"
#include "pol_route.h"
#include "px_audit.h"
#include "px_config.h"
#include "px_fence.h"
#include "px_http1.h"
#include "px_log.h"
#include "px_logw.h"
#include "px_clock.h"
#include "px_ctx.h"
#include "px_stats.h"
#include "px_upstream.h"

/* Backpressure: stop reading a side while the other side's output holds
 * more than HIGH bytes; resume below LOW. Bounds memory per connection. */
#define PX_BUF_HIGH (256 * 1024)
#define PX_BUF_LOW  (64 * 1024)
/* Most bytes decoded from one pulled-up run of a chunked body. */
#define PX_CHUNK_RUN (64 * 1024)
/* After a response that ends a connection with unread input, the proxy
 * discards what the client still sends for PX_LINGER_MS (px_server.h) or up
 * to this many bytes, so that the client's stack does not reset the
 * connection before it read our response. */
#define PX_LINGER_BYTES (1024 * 1024)

enum cstate { C_HEAD, C_DECIDE, C_CONNECT, C_FORWARD, C_CLOSING, C_LINGER };
enum tmode { T_OFF, T_HEAD, T_IDLE, T_LINGER };

struct px_req {
    struct px_h1_head h; /* slices of buf */
    char *buf;           /* copy of the head bytes; owned */
    char *path;          /* normalised path; owned */
    size_t path_len;
    struct pol_decision dec;
    size_t route_idx; /* SIZE_MAX when no route */
    int fenced;       /* ticket admitted */
    struct px_fence_ticket ticket;
    struct px_uconn *up; /* borrowed from the pool */
    char rid[80];        /* X-Request-Id */
    /* request body */
    uint64_t body_left;
    struct px_h1_chunked chunk;
    int body_done;
    /* response */
    struct px_h1_parser rp;
    int resp_started; /* head written to the client */
    enum px_h1_body rbody;
    uint64_t rbody_left;
    struct px_h1_chunked rchunk;
    int rchunked_out; /* re-chunk to the client */
    int resp_keepalive;
    int status;
    uint64_t bytes_out;
    struct timespec t_start; /* head parsed */
    struct timespec t_fwd;   /* forwarding started */
    double upstream_s;
};

struct px_conn {
    struct px_ctx *ctx;
    uint64_t id;
    struct bufferevent *bev;
    char peer[64]; /* ip:port */
    char peer_ip[48];
    TAILQ_ENTRY(px_conn) link;
    enum cstate state;
    struct event *timer;
    enum tmode tmode;
    struct event *kick; /* deferred work: next request, reaping */
    struct px_h1_parser parser;
    struct px_req *req;
    int keep_alive;    /* the current request allows reuse */
    int dead;          /* to be reaped by the kick event */
    int paused_up;     /* upstream reading paused for us */
    int paused_client; /* client reading paused for the upstream */
    size_t linger_bytes;
    int client_eof;      /* the client half-closed */
    int upload_deadline; /* the client read deadline is armed */
};

TAILQ_HEAD(px_conn_list, px_conn);

struct px_conn_set {
    struct px_conn_list list;
    size_t n;
};

static void client_read_cb(struct bufferevent *bev, void *arg);
static void client_write_cb(struct bufferevent *bev, void *arg);
static void client_event_cb(struct bufferevent *bev, short what, void *arg);
static void up_read_cb(struct bufferevent *bev, void *arg);
static void up_write_cb(struct bufferevent *bev, void *arg);
static void up_read_run(struct bufferevent *bev, void *arg);
static void respond_bad_body(struct px_conn *c);
static void up_event_cb(struct bufferevent *bev, short what, void *arg);
static void timer_cb(evutil_socket_t fd, short what, void *arg);
static void start_head(struct px_conn *c);
static void process_head(struct px_conn *c);
static void set_client_read_timeout(struct px_conn *c, int on);
static void fence_decided(struct px_conn *c);

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

static void req_free(struct px_conn *c)
{
    struct px_req *r = c->req;

    if (r == NULL)
        return;
    if (r->up != NULL) {
        px_upool_close(r->up);
        r->up = NULL;
    }
    if (r->fenced) {
        px_fence_done(c->ctx->fence, &r->ticket);
        r->fenced = 0;
    }
    free(r->buf);
    free(r->path);
    free(r);
    c->req = NULL;
}

/* Marks the connection dead and lets the kick event free it: safe from any
 * callback, including the connection's own. */
static void conn_close(struct px_conn *c)
{
    if (c->dead)
        return;
    c->dead = 1;
    if (c->req != NULL && c->req->up != NULL && c->req->status == 0 && c->req->fenced)
        px_clog_debug(c->id, c->peer, "closing with a request in flight");
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

static void flush_all(struct px_conn *c);

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_conn *c = arg;

    if (c->dead) {
        conn_free(c);
        return;
    }
    if (c->state == C_HEAD && c->req == NULL)
        process_head(c);
    else if (c->state == C_DECIDE && c->req != NULL && c->req->ticket.result != PX_FENCE_WAIT)
        fence_decided(c);
    flush_all(c);
}

/* After the output drains: close, or keep discarding input for a moment so
 * the client reads the response before the connection goes (lingering close). */
static void finish_close(struct px_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);

    if (evbuffer_get_length(bufferevent_get_output(c->bev)) > 0)
        return;
    shutdown(bufferevent_getfd(c->bev), SHUT_WR);
    evbuffer_drain(in, evbuffer_get_length(in));
    c->state = C_LINGER;
    c->linger_bytes = 0;
    bufferevent_enable(c->bev, EV_READ);
    set_timer(c, T_LINGER, &c->ctx->tv.linger);
}

/* Ends the connection once what is queued for the client has been written. */
static void close_after_write(struct px_conn *c)
{
    c->state = C_CLOSING;
    req_free(c);
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    bufferevent_enable(c->bev, EV_WRITE);
    set_timer(c, T_LINGER, &c->ctx->tv.idle);
    finish_close(c);
}

static void make_request_id(struct px_conn *c, struct px_req *r)
{
    struct px_ctx *ctx = c->ctx;
    uint64_t v = ctx->rid_base + (++ctx->rid_counter) * 0x9e3779b97f4a7c15ULL;

    snprintf(r->rid, sizeof(r->rid), "%016" PRIx64 "%08" PRIx64, v, ctx->rid_counter & 0xffffffffu);
}

/* One access log line. r is NULL for a request refused before its head
 * could be parsed: its request line is logged as "-". */
static void access_log(struct px_conn *c, struct px_req *r, int status, uint64_t bytes)
{
    char line[1024];
    char ts[40];
    uint64_t now = px_clock_wall_ms();
    time_t secs = (time_t)(now / 1000);
    struct tm tm;
    int n;

    if (c->ctx->access == NULL)
        return;
    gmtime_r(&secs, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    if (r != NULL)
        n = snprintf(line, sizeof(line),
                     "%s.%03uZ %s \"%.*s %.*s HTTP/1.%d\" %d %" PRIu64 " %.3f %s\n", ts,
                     (unsigned)(now % 1000), c->peer, (int)r->h.method_len, r->h.method,
                     (int)(r->h.target_len > 512 ? 512 : r->h.target_len), r->h.target, r->h.minor,
                     status, bytes, r->upstream_s * 1000.0, r->rid);
    else
        n = snprintf(line, sizeof(line), "%s.%03uZ %s \"-\" %d %" PRIu64 " 0.000 -\n", ts,
                     (unsigned)(now % 1000), c->peer, status, bytes);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line)) {
        n = sizeof(line) - 1;
        line[n - 1] = '\n';
    }
    if (px_logw_write(c->ctx->access, line, (size_t)n) < 0)
        px_stats_inc(PX_ST_ACCESS_LOG_DROPPED);
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

static void audit(struct px_conn *c, struct px_req *r, const char *event)
{
    struct px_audit_event ev;
    const struct px_h1_field *xff;

    if (c->ctx->audit == NULL || r == NULL)
        return;
    memset(&ev, 0, sizeof(ev));
    ev.event = event;
    ev.route = r->dec.route != NULL ? r->dec.route->name : "";
    ev.resource = r->dec.resource;
    ev.resource_len = r->dec.resource_len;
    if (r->dec.verdict == POL_MALFORMED) {
        const struct px_h1_field *tf = find_field(&r->h, c->ctx->cfg->token_header);
        ev.token_present = tf != NULL;
        if (tf != NULL) {
            ev.token_raw = tf->value;
            ev.token_raw_len = tf->value_len;
        }
    } else if (r->dec.verdict != POL_MISSING) {
        ev.token_present = 1;
        ev.token_is_number = 1;
        ev.token = r->dec.token;
    }
    ev.highest = r->dec.highest;
    if ((r->dec.verdict == POL_MISSING || r->dec.verdict == POL_MALFORMED) &&
        px_fence_peek(c->ctx->fence, r->dec.resource, r->dec.resource_len, &ev.highest) < 0)
        ev.highest = 0; /* not cached: never looked up for a request refused from its head */
    ev.method = r->h.method;
    ev.method_len = r->h.method_len;
    ev.path = r->h.target;
    ev.path_len = r->h.target_len;
    ev.client = c->peer;
    xff = find_field(&r->h, "X-Forwarded-For");
    if (xff != NULL) {
        ev.forwarded_for = xff->value;
        ev.forwarded_for_len = xff->value_len;
    }
    ev.request_id = r->rid;
    ev.request_id_len = strlen(r->rid);
    ev.ts_ms = px_clock_wall_ms();
    if (px_audit_record(c->ctx->audit, &ev) < 0) {
        px_stats_inc(PX_ST_AUDIT_DROPPED);
        px_clog_error(c->id, c->peer, "audit record dropped (writer buffer full): %s %s", event,
                      r->rid);
    } else {
        px_stats_inc(PX_ST_AUDIT_RECORDS);
    }
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
    access_log(c, r, status, blen);
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

/* A fencing rejection, decided from the head alone: answered without reading
 * the body; the connection closes when a body was declared. */
static void respond_rejection(struct px_conn *c, const char *reason)
{
    struct px_req *r = c->req;
    struct pol_response resp;
    char extra[96] = "";

    memset(&resp, 0, sizeof(resp));
    if (pol_decide_response(&r->dec, &resp) < 0) {
        respond_text(c, 500, "internal error", 1);
        return;
    }
    if (resp.has_highest)
        snprintf(extra, sizeof(extra), "Fencing-Token-Highest: %" PRIu64 "\r\n", resp.highest);
    audit(c, r, reason);
    px_stats_request(r->route_idx, r->dec.verdict == POL_STALE     ? PX_OUT_STALE_TOKEN
                                   : r->dec.verdict == POL_MISSING ? PX_OUT_MISSING_TOKEN
                                                                   : PX_OUT_MALFORMED_TOKEN);
    px_stats_reject(r->dec.verdict == POL_STALE     ? PX_RSN_STALE_TOKEN
                    : r->dec.verdict == POL_MISSING ? PX_RSN_MISSING_TOKEN
                                                    : PX_RSN_MALFORMED_TOKEN);
    px_clog_info(c->id, c->peer, "%s %.*s %.*s resource=%.*s token=%" PRIu64 " highest=%" PRIu64,
                 reason, (int)r->h.method_len, r->h.method, (int)r->h.target_len, r->h.target,
                 (int)r->dec.resource_len, r->dec.resource, r->dec.token, r->dec.highest);
    respond_local(c, resp.status, "application/json", extra, resp.body, resp.body_len,
                  has_unread_body(r) || !c->keep_alive);
    pol_response_clear(&resp);
}

/* A framing or limits error on the client side: 4xx/5xx and close. */
static void respond_bad(struct px_conn *c, int status, const char *why)
{
    px_clog_info(c->id, c->peer, "refused %d: %s", status, why);
    px_stats_reject(PX_RSN_BAD_REQUEST);
    px_stats_request(c->req != NULL ? c->req->route_idx : SIZE_MAX, PX_OUT_BAD_REQUEST);
    respond_text(c, status, px_h1_reason(status), 1);
}

/* ---- upstream side ---------------------------------------------------- */

/* A head being written straight into reserved space of an output buffer:
 * one copy, no formatting, no per-field buffer calls. The caller reserves
 * an upper bound of what it will write. */
struct head_out {
    char *p;
    size_t len;
};

static void ho_add(struct head_out *b, const char *s, size_t n)
{
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

#define HO_LIT(b, lit) ho_add((b), (lit), sizeof(lit) - 1)

static void ho_u64(struct head_out *b, uint64_t v)
{
    char tmp[20];
    size_t n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    while (n > 0)
        b->p[b->len++] = tmp[--n];
}

static void ho_field(struct head_out *b, const char *name, size_t nlen, const char *value,
                     size_t vlen)
{
    ho_add(b, name, nlen);
    HO_LIT(b, ": ");
    ho_add(b, value, vlen);
    HO_LIT(b, "\r\n");
}

/* Reserves room for at most max bytes at the end of o. 0 or -1. */
static int ho_begin(struct head_out *b, struct evbuffer *o, size_t max, struct evbuffer_iovec *v)
{
    if (evbuffer_reserve_space(o, (ev_ssize_t)max, v, 1) < 1 || v->iov_len < max)
        return -1;
    b->p = v->iov_base;
    b->len = 0;
    return 0;
}

static void ho_end(struct head_out *b, struct evbuffer *o, struct evbuffer_iovec *v)
{
    v->iov_len = b->len;
    evbuffer_commit_space(o, v, 1);
}

/* Whether field f is named lit (a string literal), comparing lengths first. */
#define NAME_IS(f, lit) ((f)->name_len == sizeof(lit) - 1 && px_h1_name_is((f), (lit)))

/* Appends the request head as the upstream will see it: re-serialised from
 * the parsed fields, hop-by-hop and framing fields replaced by our own.
 * Everything copied comes from the parsed head (at most head_len bytes), the
 * rest is bounded, hence the reservation. Returns 0 or -1 (no memory). */
static int write_request_head(struct px_conn *c, struct px_req *r, struct evbuffer *o)
{
    const struct px_h1_head *h = &r->h;
    const struct px_config *cfg = c->ctx->cfg;
    const struct px_h1_field *xff = NULL, *via = NULL;
    int checked = r->dec.verdict == POL_ACCEPT || r->dec.verdict == POL_ADVANCE;
    size_t tlen = c->ctx->token_header_len;
    struct evbuffer_iovec v;
    struct head_out b;

    if (ho_begin(&b, o, h->head_len + tlen + sizeof(c->peer_ip) + sizeof(r->rid) + 256, &v) < 0)
        return -1;
    ho_add(&b, h->method, h->method_len);
    HO_LIT(&b, " ");
    ho_add(&b, h->target, h->target_len);
    HO_LIT(&b, " HTTP/1.1\r\n");
    for (unsigned i = 0; i < h->n_fields; i++) {
        const struct px_h1_field *f = &h->fields[i];
        if (f->flags & (PX_H1_F_HOP | PX_H1_F_FRAMING | PX_H1_F_EXPECT))
            continue;
        if (NAME_IS(f, "X-Forwarded-For")) {
            if (xff == NULL)
                xff = f;
            continue;
        }
        if (NAME_IS(f, "Via")) {
            if (via == NULL)
                via = f;
            continue;
        }
        if (NAME_IS(f, "X-Forwarded-Proto") || NAME_IS(f, "X-Request-Id"))
            continue;
        if (checked && f->name_len == tlen && px_h1_name_is(f, cfg->token_header))
            continue; /* written below in canonical form */
        ho_field(&b, f->name, f->name_len, f->value, f->value_len);
    }
    if (checked) {
        ho_add(&b, cfg->token_header, tlen);
        HO_LIT(&b, ": ");
        ho_u64(&b, r->dec.token);
        HO_LIT(&b, "\r\n");
    }
    HO_LIT(&b, "X-Forwarded-For: ");
    if (xff != NULL) {
        ho_add(&b, xff->value, xff->value_len);
        HO_LIT(&b, ", ");
    }
    ho_add(&b, c->peer_ip, strlen(c->peer_ip));
    HO_LIT(&b, "\r\nX-Forwarded-Proto: http\r\nVia: ");
    if (via != NULL) {
        ho_add(&b, via->value, via->value_len);
        HO_LIT(&b, ", ");
    }
    ho_add(&b, h->minor == 1 ? "1.1" : "1.0", 3);
    HO_LIT(&b, " fenceproxy\r\nX-Request-Id: ");
    ho_add(&b, r->rid, strlen(r->rid));
    HO_LIT(&b, "\r\n");
    if (h->body == PX_H1_BODY_LENGTH) {
        HO_LIT(&b, "Content-Length: ");
        ho_u64(&b, h->content_length);
        HO_LIT(&b, "\r\n");
    } else if (h->body == PX_H1_BODY_CHUNKED) {
        HO_LIT(&b, "Transfer-Encoding: chunked\r\n");
    }
    HO_LIT(&b, "\r\n");
    ho_end(&b, o, &v);
    return 0;
}

/* Pauses reading src while dst's output is above the high-water mark. */
static void pause_if_full(struct bufferevent *src, struct bufferevent *dst, int *paused)
{
    if (!*paused && evbuffer_get_length(bufferevent_get_output(dst)) >= PX_BUF_HIGH) {
        bufferevent_disable(src, EV_READ);
        *paused = 1;
    }
}

static void set_up_timeout(struct px_conn *c)
{
    bufferevent_set_timeouts(c->req->up->bev, &c->ctx->tv.upstream, NULL);
}

/* While the request body streams: no response deadline yet, but an upstream
 * that stops taking bytes for upstream_timeout fails the exchange (504);
 * otherwise a stalled upload would hold both connections forever, since the
 * paused client side has no timer running. */
static void set_up_send_timeout(struct px_conn *c)
{
    bufferevent_set_timeouts(c->req->up->bev, NULL, &c->ctx->tv.upstream);
}

static void request_body_done(struct px_conn *c)
{
    struct px_req *r = c->req;

    r->body_done = 1;
    if (c->paused_client) {
        c->paused_client = 0;
        bufferevent_enable(c->bev, EV_READ); /* pipelined bytes may follow */
    }
    if (c->upload_deadline) {
        set_client_read_timeout(c, 0);
        c->upload_deadline = 0;
    }
    if (r->up != NULL)
        set_up_timeout(c);
}

/* Decodes up to PX_CHUNK_RUN bytes of a chunked body from in and appends
 * the data to out, as chunks again when rechunk is set (the framing the
 * other side sees is always our own). Sets *used to the bytes drained from in
 * and *data to the body bytes passed on. Returns the decoder's status: DONE
 * after the last chunk (the terminating chunk is written when rechunk), or
 * ERROR (nothing more may be relayed). */
static enum px_h1_status relay_chunked(struct px_h1_chunked *dec, struct evbuffer *in,
                                       struct evbuffer *out, int rechunk, size_t *used,
                                       uint64_t *data)
{
    size_t avail = evbuffer_get_length(in);
    size_t n = avail < PX_CHUNK_RUN ? avail : PX_CHUNK_RUN;
    const char *p = (const char *)evbuffer_pullup(in, (ssize_t)n);
    size_t consumed, off, dlen;
    enum px_h1_status st = PX_H1_NEED_MORE;

    *used = 0;
    *data = 0;
    while (*used < n) {
        st = px_h1_chunked_feed(dec, p + *used, n - *used, &consumed, &off, &dlen);
        if (st == PX_H1_ERROR)
            return st;
        if (dlen > 0) {
            if (rechunk)
                evbuffer_add_printf(out, "%zx\r\n", dlen);
            evbuffer_add(out, p + *used + off, dlen);
            if (rechunk)
                evbuffer_add(out, "\r\n", 2);
            *data += dlen;
        }
        *used += consumed;
        if (st == PX_H1_DONE)
            break;
    }
    evbuffer_drain(in, *used);
    if (st == PX_H1_DONE && rechunk)
        evbuffer_add(out, "0\r\n\r\n", 5);
    return st;
}

/* Moves request body bytes from the client to the upstream until the input
 * is empty, the body is complete or the upstream's output is full. Each round
 * consumes at least one byte, so the loop is bounded by the input. Returns
 * -1 when the body is malformed (the caller answers 400 and closes). */
static int pump_request_body(struct px_conn *c)
{
    struct px_req *r = c->req;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct evbuffer *out = bufferevent_get_output(r->up->bev);
    size_t avail;

    while (!r->body_done && !c->paused_client && (avail = evbuffer_get_length(in)) > 0) {
        if (r->h.body == PX_H1_BODY_LENGTH) {
            size_t n = avail < r->body_left ? avail : (size_t)r->body_left;
            evbuffer_remove_buffer(in, out, n);
            r->body_left -= n;
            px_stats_add(PX_ST_BYTES_IN, n);
            if (r->body_left == 0)
                request_body_done(c);
        } else {
            size_t used;
            uint64_t data;
            enum px_h1_status st = relay_chunked(&r->chunk, in, out, 1, &used, &data);
            if (st == PX_H1_ERROR)
                return -1;
            px_stats_add(PX_ST_BYTES_IN, used);
            if (st == PX_H1_DONE)
                request_body_done(c);
        }
        if (!r->body_done)
            pause_if_full(c->bev, r->up->bev, &c->paused_client);
    }
    return 0;
}

/* The exchange is over from the upstream's point of view: return or close
 * the upstream connection, then release the fencing ticket (S3: the ticket
 * ends only once the upstream connection is idle or closed). */
static void release_upstream(struct px_conn *c, int reusable)
{
    struct px_req *r = c->req;

    if (r->up != NULL) {
        if (reusable && evbuffer_get_length(bufferevent_get_input(r->up->bev)) == 0 &&
            evbuffer_get_length(bufferevent_get_output(r->up->bev)) == 0)
            px_upool_put(r->up);
        else
            px_upool_close(r->up);
        r->up = NULL;
        px_stats_gauge_add(PX_G_INFLIGHT, -1);
    }
    if (r->fenced) {
        px_fence_done(c->ctx->fence, &r->ticket);
        r->fenced = 0;
    }
}

static void response_done(struct px_conn *c)
{
    struct px_req *r = c->req;
    struct timespec now;
    int close;

    clock_gettime(CLOCK_MONOTONIC, &now);
    r->upstream_s = px_clock_diff(&r->t_fwd, &now);
    px_stats_observe(PX_H_UPSTREAM_DURATION, r->upstream_s);
    px_stats_request(r->route_idx, PX_OUT_FORWARDED);
    px_stats_add(PX_ST_BYTES_OUT, r->bytes_out);
    release_upstream(c, r->resp_keepalive && r->body_done);
    access_log(c, r, r->status, r->bytes_out);
    close = !c->keep_alive || !r->body_done || c->ctx->shutting_down || r->rbody == PX_H1_BODY_EOF;
    if (close) {
        close_after_write(c);
        return;
    }
    req_free(c);
    start_head(c);
}

/* The upstream failed before or during the response. */
static void upstream_failed(struct px_conn *c, int status, const char *why)
{
    struct px_req *r = c->req;

    px_clog_warn(c->id, c->peer, "upstream: %s", why);
    px_stats_request(r->route_idx, PX_OUT_UPSTREAM_ERROR);
    if (c->state == C_FORWARD && r->fenced && r->up != NULL && !r->resp_started) {
        /* The request went out and no answer came (timeout, reset, close):
         * whether the upstream applied it is unknown (S3, S7). */
        px_stats_inc(PX_ST_INFLIGHT_TIMEOUTS);
        audit(c, r, "inflight_timeout");
    }
    release_upstream(c, 0);
    if (!r->resp_started)
        respond_text(c, status, px_h1_reason(status), 1);
    else
        conn_close(c); /* a response is half sent: only closing tells */
}

/* Writes the response head for the client from the parsed upstream head. */
/* A Location that points at the upstream itself ("http://host:port/...",
 * the configured upstream) would send clients around the proxy, past the
 * fencing check: it is rewritten to the path alone, which the client
 * resolves against the proxy (as nginx's "proxy_redirect default" does).
 * Other values pass unchanged. */
static void write_location(struct px_conn *c, struct head_out *b, const struct px_h1_field *f)
{
    const char *o = c->ctx->upstream_origin;
    size_t olen = c->ctx->upstream_origin_len;

    if (f->value_len >= olen && strncasecmp(f->value, o, olen) == 0 &&
        (f->value_len == olen || f->value[olen] == '/')) {
        if (f->value_len == olen)
            ho_field(b, f->name, f->name_len, "/", 1);
        else
            ho_field(b, f->name, f->name_len, f->value + olen, f->value_len - olen);
        return;
    }
    ho_field(b, f->name, f->name_len, f->value, f->value_len);
}

static int write_response_head(struct px_conn *c, struct px_req *r, const struct px_h1_head *h)
{
    struct evbuffer *o = bufferevent_get_output(c->bev);
    int client_11 = r->h.minor == 1;
    struct evbuffer_iovec v;
    struct head_out b;
    char status[4];

    r->rbody = h->body;
    r->resp_keepalive = h->keep_alive;
    r->status = h->status;
    if (h->body == PX_H1_BODY_EOF || (h->body == PX_H1_BODY_CHUNKED && !client_11))
        c->keep_alive = 0; /* the end of the body is the end of the connection */
    r->rchunked_out = h->body == PX_H1_BODY_CHUNKED && client_11;
    if (ho_begin(&b, o, h->head_len + sizeof(r->rid) + 256, &v) < 0)
        return -1;
    status[0] = (char)('0' + h->status / 100);
    status[1] = (char)('0' + h->status / 10 % 10);
    status[2] = (char)('0' + h->status % 10);
    HO_LIT(&b, "HTTP/1.1 ");
    ho_add(&b, status, 3);
    HO_LIT(&b, " ");
    ho_add(&b, h->reason, h->reason_len);
    HO_LIT(&b, "\r\n");
    for (unsigned i = 0; i < h->n_fields; i++) {
        const struct px_h1_field *f = &h->fields[i];
        if (f->flags & PX_H1_F_HOP)
            continue;
        /* A bodiless response keeps its Content-Length (HEAD, 304). */
        if ((f->flags & PX_H1_F_FRAMING) &&
            !(h->body == PX_H1_BODY_NONE && NAME_IS(f, "Content-Length")))
            continue;
        if (NAME_IS(f, "X-Request-Id"))
            continue;
        if (NAME_IS(f, "Location") || NAME_IS(f, "Content-Location")) {
            write_location(c, &b, f);
            continue;
        }
        ho_field(&b, f->name, f->name_len, f->value, f->value_len);
    }
    HO_LIT(&b, "X-Request-Id: ");
    ho_add(&b, r->rid, strlen(r->rid));
    HO_LIT(&b, "\r\n");
    if (h->body == PX_H1_BODY_LENGTH) {
        HO_LIT(&b, "Content-Length: ");
        ho_u64(&b, h->content_length);
        HO_LIT(&b, "\r\n");
    } else if (r->rchunked_out) {
        HO_LIT(&b, "Transfer-Encoding: chunked\r\n");
    }
    if (!c->keep_alive || c->ctx->shutting_down)
        HO_LIT(&b, "Connection: close\r\n");
    else if (!client_11)
        HO_LIT(&b, "Connection: keep-alive\r\n");
    HO_LIT(&b, "\r\n");
    ho_end(&b, o, &v);
    r->rbody_left = h->content_length;
    px_h1_chunked_init(&r->rchunk);
    r->resp_started = 1;
    return 0;
}

/* Parses the response head. Returns 1 when the head was handled, 0 for
 * more input, -1 after the exchange was failed. */
static int read_response_head(struct px_conn *c)
{
    struct px_req *r = c->req;
    struct evbuffer *in = bufferevent_get_input(r->up->bev);
    size_t len = evbuffer_get_length(in);
    size_t want = len < c->ctx->lim.max_head + 1 ? len : c->ctx->lim.max_head + 1;
    const char *p = (const char *)evbuffer_pullup(in, (ssize_t)want);
    struct px_h1_head head, *h = &head;
    enum px_h1_status st;
    int rc = -1;

    st = px_h1_parse_head(&r->rp, p, want, h);
    if (st == PX_H1_NEED_MORE) {
        rc = 0;
        if (want > c->ctx->lim.max_head) {
            upstream_failed(c, 502, "response head too large");
            rc = -1;
        }
        goto out;
    }
    if (st == PX_H1_ERROR) {
        upstream_failed(c, 502, h->error != NULL ? h->error : "malformed response");
        goto out;
    }
    if (h->status >= 100 && h->status < 200) {
        /* Interim responses (we answered Expect ourselves) are dropped; a
         * switch of protocols is not something we can relay. */
        evbuffer_drain(in, h->head_len);
        px_h1_parser_init(&r->rp, 0, r->h.method_len == 4 && !memcmp(r->h.method, "HEAD", 4),
                          &c->ctx->lim);
        if (h->status == 101) {
            upstream_failed(c, 502, "upstream switched protocols");
            goto out;
        }
        rc = 1;
        goto out;
    }
    if (write_response_head(c, r, h) < 0) {
        upstream_failed(c, 502, "out of memory");
        goto out;
    }
    evbuffer_drain(in, h->head_len);
    rc = 1;
out:
    return rc;
}

/* Moves response body bytes to the client until the input is empty, the
 * body is complete or the client's output is full. Returns 1 when the
 * response is complete, 0 when more is expected, -1 after a failure. */
static int pump_response_body(struct px_conn *c)
{
    struct px_req *r = c->req;
    struct evbuffer *in = bufferevent_get_input(r->up->bev);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t avail;

    if (r->rbody == PX_H1_BODY_NONE)
        return 1;
    if (r->rbody == PX_H1_BODY_LENGTH && r->rbody_left == 0)
        return 1;
    while (!c->paused_up && (avail = evbuffer_get_length(in)) > 0) {
        if (r->rbody == PX_H1_BODY_LENGTH) {
            size_t n = avail < r->rbody_left ? avail : (size_t)r->rbody_left;
            evbuffer_remove_buffer(in, out, n);
            r->rbody_left -= n;
            r->bytes_out += n;
            if (r->rbody_left == 0)
                return 1;
        } else if (r->rbody == PX_H1_BODY_EOF) {
            r->bytes_out += avail;
            evbuffer_remove_buffer(in, out, avail);
        } else {
            size_t used;
            uint64_t data;
            enum px_h1_status st =
                relay_chunked(&r->rchunk, in, out, r->rchunked_out, &used, &data);
            r->bytes_out += data;
            if (st == PX_H1_ERROR) {
                upstream_failed(c, 502, "malformed chunked response body");
                return -1;
            }
            if (st == PX_H1_DONE)
                return 1;
        }
        pause_if_full(r->up->bev, c->bev, &c->paused_up);
    }
    return 0;
}

static void up_read_run(struct bufferevent *bev, void *arg)
{
    struct px_conn *c = arg;
    struct px_req *r = c->req;
    unsigned rounds = 0;
    int rc;

    if (c->dead || r == NULL || r->up == NULL)
        return;
    while (!r->resp_started && rounds++ < 8) {
        rc = read_response_head(c);
        if (rc <= 0)
            return;
    }
    if (!r->resp_started)
        return;
    rc = pump_response_body(c);
    if (rc == 1)
        response_done(c);
}

static void up_write_run(struct bufferevent *bev, void *arg)
{
    struct px_conn *c = arg;

    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        bufferevent_disable(bev, EV_WRITE); /* see out_flush() */
    if (c->dead || c->req == NULL || !c->paused_client)
        return;
    if (evbuffer_get_length(bufferevent_get_output(bev)) <= PX_BUF_LOW) {
        c->paused_client = 0;
        bufferevent_enable(c->bev, EV_READ);
        /* Bytes already buffered raise no read event: move them now. */
        if (c->req->up != NULL && pump_request_body(c) < 0)
            respond_bad_body(c);
    }
}

static void up_event_run(struct bufferevent *bev, short what, void *arg)
{
    struct px_conn *c = arg;
    struct px_req *r = c->req;

    if (c->dead || r == NULL || r->up == NULL)
        return;
    if (what & BEV_EVENT_CONNECTED) {
        c->state = C_FORWARD;
        set_timer(c, T_OFF, NULL);
        /* The connect deadline ends here: the response deadline starts once
         * the request body is complete, as on a pooled connection. */
        if (r->body_done)
            set_up_timeout(c);
        else
            set_up_send_timeout(c);
        return; /* forwarding was queued before the connect finished */
    }
    if (what & BEV_EVENT_TIMEOUT) {
        upstream_failed(c, 504, c->state == C_CONNECT ? "connect timed out" : "response timed out");
        return;
    }
    if ((what & BEV_EVENT_EOF) && r->resp_started && r->rbody == PX_H1_BODY_EOF) {
        /* The body ends with the connection. */
        up_read_run(bev, c);
        if (c->req == r && !c->dead) {
            r->resp_keepalive = 0;
            response_done(c);
        }
        return;
    }
    upstream_failed(c, 502,
                    (what & BEV_EVENT_EOF) ? "upstream closed the connection"
                                           : "upstream connection failed");
}

/* The client's chunked body turned out malformed after forwarding began: the
 * upstream holds a partial request, so its connection is closed. */
static void respond_bad_body(struct px_conn *c)
{
    release_upstream(c, 0);
    if (c->req->resp_started)
        conn_close(c);
    else
        respond_bad(c, 400, "malformed chunked body");
}

/* The client's inactivity deadlines: idle_timeout for writing always (a
 * client that stops reading its response), and for reading while on is set
 * (a stalled upload). */
static void set_client_read_timeout(struct px_conn *c, int on)
{
    bufferevent_set_timeouts(c->bev, on ? &c->ctx->tv.idle : NULL, &c->ctx->tv.idle);
}

/* Sends the accepted request upstream: borrows or opens a connection,
 * writes the head, and starts the body. */
static void forward(struct px_conn *c)
{
    struct px_req *r = c->req;
    struct px_uconn *u = px_upool_take(c->ctx->upool);
    const struct timeval *ctv = &c->ctx->tv.connect;

    c->state = C_FORWARD;
    if (u == NULL) {
        u = px_upool_connect(c->ctx->upool);
        if (u == NULL) {
            upstream_failed(c, 502, "cannot open a connection");
            return;
        }
        c->state = C_CONNECT;
        bufferevent_set_timeouts(u->bev, ctv, ctv);
    }
    r->up = u;
    u->requests++;
    px_stats_gauge_add(PX_G_INFLIGHT, 1);
    clock_gettime(CLOCK_MONOTONIC, &r->t_fwd);
    bufferevent_setcb(u->bev, up_read_cb, up_write_cb, up_event_cb, c);
    bufferevent_setwatermark(u->bev, EV_WRITE, PX_BUF_LOW, 0);
    bufferevent_enable(u->bev, EV_READ); /* writes: out_flush() */
    px_h1_parser_init(&r->rp, 0, r->h.method_len == 4 && !memcmp(r->h.method, "HEAD", 4),
                      &c->ctx->lim);
    if (write_request_head(c, r, bufferevent_get_output(u->bev)) < 0) {
        upstream_failed(c, 502, "out of memory");
        return;
    }
    if (r->h.body == PX_H1_BODY_NONE ||
        (r->h.body == PX_H1_BODY_LENGTH && r->h.content_length == 0)) {
        request_body_done(c);
        if (c->state == C_CONNECT) /* the connect timeout stays until connected */
            bufferevent_set_timeouts(u->bev, ctv, ctv);
        return;
    }
    if (r->h.expect_continue && r->h.minor == 1)
        evbuffer_add(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
    r->body_left = r->h.content_length;
    px_h1_chunked_init(&r->chunk);
    if (!c->client_eof)
        bufferevent_enable(c->bev, EV_READ);
    if (pump_request_body(c) < 0) {
        respond_bad_body(c);
    } else if (c->client_eof && !r->body_done) {
        conn_close(c); /* the upstream never gets a complete request */
    } else if (!r->body_done) {
        /* The body is still coming: deadlines for a stalled client and for
         * an upstream that stops taking bytes (a new connection gets its
         * own once connected). A body that was already buffered, the
         * common case for small requests, needs neither. */
        set_client_read_timeout(c, 1);
        c->upload_deadline = 1;
        if (c->state == C_FORWARD)
            set_up_send_timeout(c);
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

/* Acts on the fence's answer for the current request. */
static void fence_decided(struct px_conn *c)
{
    struct px_req *r = c->req;

    switch (r->ticket.result) {
    case PX_FENCE_GO:
        r->dec.verdict = POL_ACCEPT;
        r->dec.highest = r->dec.token;
        forward(c);
        break;
    case PX_FENCE_STALE:
        r->fenced = 0;
        pol_decide_check(&r->dec, r->ticket.highest); /* STALE, with the highest */
        respond_rejection(c, "stale_token");
        break;
    case PX_FENCE_FAILED:
        r->fenced = 0;
        px_stats_reject(PX_RSN_STORE_FAILED);
        px_stats_request(r->route_idx, PX_OUT_STORE_FAILED);
        px_clog_error(c->id, c->peer, "token store failed: refusing %.*s %.*s",
                      (int)r->h.method_len, r->h.method, (int)r->h.target_len, r->h.target);
        respond_text(c, 503, "token store unavailable", 1);
        break;
    case PX_FENCE_WAIT:
        c->state = C_DECIDE;
        break;
    }
}

static size_t route_index(const struct pol_routes *rt, const struct pol_route *route)
{
    size_t n = pol_routes_count(rt);

    for (size_t i = 0; route != NULL && i < n; i++)
        if (pol_routes_get(rt, i) == route)
            return i;
    return SIZE_MAX;
}

/* Takes the client's X-Request-Id when it is short and plain, else makes one. */
static void pick_request_id(struct px_conn *c, struct px_req *r)
{
    const struct px_h1_field *f = find_field(&r->h, "X-Request-Id");

    if (f != NULL && f->value_len > 0 && f->value_len < sizeof(r->rid)) {
        int plain = 1;
        for (size_t i = 0; i < f->value_len; i++)
            if ((unsigned char)f->value[i] <= 0x20 || (unsigned char)f->value[i] >= 0x7f)
                plain = 0;
        if (plain) {
            memcpy(r->rid, f->value, f->value_len);
            r->rid[f->value_len] = '\0';
            return;
        }
    }
    make_request_id(c, r);
}

static void decide(struct px_conn *c)
{
    struct px_ctx *ctx = c->ctx;
    struct px_req *r = c->req;
    const struct px_config *cfg = ctx->cfg;
    struct pol_facts facts;
    enum px_fence_result fr;
    long n;

    c->keep_alive = r->h.keep_alive && !ctx->shutting_down;
    pick_request_id(c, r);
    clock_gettime(CLOCK_MONOTONIC, &r->t_start);
    r->route_idx = SIZE_MAX;
    r->path = malloc(r->h.target_len + 1);
    if (r->path == NULL) {
        respond_text(c, 500, "out of memory", 1);
        return;
    }
    /* S5: the resource key is computed on the path the upstream will
     * resolve; ambiguous spellings are refused rather than guessed. */
    n = pol_path_normalize(r->h.target, r->h.target_len, r->path, r->h.target_len + 1);
    if (n < 0) {
        respond_bad(c, 400, "ambiguous or unsupported request target");
        return;
    }
    r->path_len = (size_t)n;
    memset(&facts, 0, sizeof(facts));
    facts.method = r->h.method;
    facts.method_len = r->h.method_len;
    facts.path = r->path;
    facts.path_len = r->path_len;
    for (unsigned i = 0; i < r->h.n_fields; i++) {
        const struct px_h1_field *f = &r->h.fields[i];
        if (f->name_len == ctx->token_header_len && px_h1_name_is(f, cfg->token_header)) {
            if (facts.token_fields++ == 0) {
                facts.token = f->value;
                facts.token_len = f->value_len;
            }
        }
    }
    pol_decide_classify(cfg->routes, &facts, &r->dec);
    r->route_idx = route_index(cfg->routes, r->dec.route);
    /* S7 ([audit] required = on): no fenced request while its record could not be written. */
    if (r->dec.verdict != POL_PASS && r->dec.verdict != POL_UNFENCED && ctx->audit != NULL &&
        cfg->audit_required && !px_audit_writable(ctx->audit)) {
        respond_text(c, 503, "audit log unavailable", 1);
        return;
    }
    switch (r->dec.verdict) {
    case POL_PASS:
    case POL_UNFENCED:
        forward(c);
        return;
    case POL_MISSING:
        respond_rejection(c, "missing_token");
        return;
    case POL_MALFORMED:
        respond_rejection(c, "malformed_token");
        return;
    default:
        break;
    }
    fr = px_fence_admit(ctx->fence, r->dec.resource, r->dec.resource_len, r->dec.token, &r->ticket,
                        fence_cb, c);
    r->ticket.result = fr;
    r->fenced = fr == PX_FENCE_GO || fr == PX_FENCE_WAIT;
    fence_decided(c);
}

/* Points every slice of h from the old buffer into the copy at base. */
static void head_rebase(struct px_h1_head *h, const char *old, char *base)
{
#define REBASE(p) ((p) = (p) != NULL ? base + ((p)-old) : NULL)
    REBASE(h->method);
    REBASE(h->target);
    REBASE(h->reason);
    REBASE(h->host);
    for (unsigned i = 0; i < h->n_fields; i++) {
        REBASE(h->fields[i].name);
        REBASE(h->fields[i].value);
    }
#undef REBASE
}

/* Parses what the client sent so far as a request head. */
static void process_head(struct px_conn *c)
{
    struct px_ctx *ctx = c->ctx;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t len = evbuffer_get_length(in);
    size_t want;
    const char *p;
    struct px_h1_head h;
    struct px_req *r;

    if (len == 0 || c->dead)
        return;
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
    r = calloc(1, sizeof(*r));
    if (r == NULL || (r->buf = malloc(h.head_len)) == NULL) {
        free(r);
        respond_text(c, 500, "out of memory", 1);
        return;
    }
    memcpy(r->buf, p, h.head_len);
    r->h = h;
    head_rebase(&r->h, p, r->buf);
    evbuffer_drain(in, h.head_len);
    px_stats_add(PX_ST_BYTES_IN, h.head_len);
    c->req = r;
    c->state = C_DECIDE;
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

    c->state = C_HEAD;
    c->keep_alive = 1;
    c->paused_up = c->paused_client = 0;
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

static void client_read_run(struct bufferevent *bev, void *arg)
{
    struct px_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    if (c->dead)
        return;
    switch (c->state) {
    case C_HEAD:
        if (c->req == NULL)
            process_head(c);
        break;
    case C_CONNECT:
    case C_FORWARD:
        if (c->req != NULL && !c->req->body_done && c->req->up != NULL && pump_request_body(c) < 0)
            respond_bad_body(c);
        break;
    case C_LINGER:
        c->linger_bytes += evbuffer_get_length(in);
        evbuffer_drain(in, evbuffer_get_length(in));
        if (c->linger_bytes > PX_LINGER_BYTES)
            conn_close(c);
        break;
    default:
        break; /* pipelined bytes wait for their turn */
    }
}

static void client_write_run(struct bufferevent *bev, void *arg)
{
    struct px_conn *c = arg;
    struct px_req *r = c->req;

    if (c->dead)
        return;
    if (c->state == C_CLOSING) {
        finish_close(c);
        return;
    }
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        bufferevent_disable(bev, EV_WRITE); /* see out_flush() */
    if (c->paused_up && r != NULL && r->up != NULL &&
        evbuffer_get_length(bufferevent_get_output(bev)) <= PX_BUF_LOW) {
        c->paused_up = 0;
        bufferevent_enable(r->up->bev, EV_READ);
        up_read_run(r->up->bev, c); /* bytes already buffered raise no read event */
    }
}

static void client_event_run(struct bufferevent *bev, short what, void *arg)
{
    struct px_conn *c = arg;
    struct px_req *r = c->req;

    if (c->dead)
        return;
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && c->state != C_LINGER &&
        c->state != C_CLOSING &&
        (r != NULL || evbuffer_get_length(bufferevent_get_input(bev)) > 0 ||
         evbuffer_get_length(bufferevent_get_output(bev)) > 0)) {
        /* Half-close: everything the client sent is in the input buffer.
         * Answer what it asked for, then close. libevent stops reading. */
        c->client_eof = 1;
        c->keep_alive = 0;
        if (r != NULL && (c->state == C_CONNECT || c->state == C_FORWARD) && !r->body_done) {
            if (r->up != NULL && pump_request_body(c) < 0) {
                respond_bad_body(c);
                return;
            }
            if (!r->body_done)
                goto abort; /* the body was cut short */
        }
        if (r == NULL && c->state == C_HEAD) {
            if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
                process_head(c); /* a final request, or a cut one (closed) */
            else
                close_after_write(c); /* deliver the last response, then close */
        }
        return;
    }
abort:
    if (r != NULL && r->up != NULL)
        px_clog_info(c->id, c->peer, "client went away during %.*s %.*s", (int)r->h.method_len,
                     r->h.method, (int)r->h.target_len, r->h.target);
    conn_close(c);
}

static void timer_run(evutil_socket_t fd, short what, void *arg)
{
    struct px_conn *c = arg;

    if (c->dead)
        return;
    switch (c->tmode) {
    case T_HEAD:
        c->tmode = T_OFF;
        px_stats_reject(PX_RSN_HEADER_TIMEOUT);
        px_clog_info(c->id, c->peer, "request head deadline passed");
        respond_text(c, 408, "Request Timeout", 1);
        break;
    default:
        conn_close(c);
        break;
    }
}

/* ---- writing ------------------------------------------------------------ */

/* Writes what is queued on bev at once when nothing is pending, and asks the
 * loop for write readiness only for what the socket did not take. Write
 * interest is dropped again when the output drains (the write callbacks), so
 * a small exchange costs no epoll_ctl at all; libevent would otherwise add
 * and remove EPOLLOUT around every response. Errors are left for the
 * bufferevent to find on its next write. */
static void out_flush(struct bufferevent *bev)
{
    struct evbuffer *out = bufferevent_get_output(bev);

    if (evbuffer_get_length(out) == 0 || (bufferevent_get_enabled(bev) & EV_WRITE))
        return;
    /* A socket bufferevent keeps the front of its output frozen against
     * outside drains; its own write path thaws it the same way. */
    evbuffer_unfreeze(out, 1);
    (void)evbuffer_write(out, bufferevent_getfd(bev));
    evbuffer_freeze(out, 1);
    if (evbuffer_get_length(out) > 0)
        bufferevent_enable(bev, EV_WRITE);
}

/* Every libevent callback of a connection ends here. */
static void flush_all(struct px_conn *c)
{
    if (c->dead)
        return;
    out_flush(c->bev);
    if (c->req != NULL && c->req->up != NULL)
        out_flush(c->req->up->bev);
}

static void client_read_cb(struct bufferevent *bev, void *arg)
{
    client_read_run(bev, arg);
    flush_all(arg);
}

static void client_write_cb(struct bufferevent *bev, void *arg)
{
    client_write_run(bev, arg);
    flush_all(arg);
}

static void client_event_cb(struct bufferevent *bev, short what, void *arg)
{
    client_event_run(bev, what, arg);
    flush_all(arg);
}

static void up_read_cb(struct bufferevent *bev, void *arg)
{
    up_read_run(bev, arg);
    flush_all(arg);
}

static void up_write_cb(struct bufferevent *bev, void *arg)
{
    up_write_run(bev, arg);
    flush_all(arg);
}

static void up_event_cb(struct bufferevent *bev, short what, void *arg)
{
    up_event_run(bev, what, arg);
    flush_all(arg);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    timer_run(fd, what, arg);
    flush_all(arg);
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
    int one = 1;

    if (ctx->conns->n >= ctx->cfg->max_connections || ctx->shutting_down) {
        px_stats_reject(PX_RSN_TOO_MANY_CONNECTIONS);
        if (send(fd, busy, sizeof(busy) - 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
            px_log_debug("503 to a connection over the limit not sent: %s", strerror(errno));
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
    c->bev = bufferevent_socket_new(ctx->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (c->timer == NULL || c->kick == NULL || c->bev == NULL)
        goto fail;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    bufferevent_setcb(c->bev, client_read_cb, client_write_cb, client_event_cb, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, PX_BUF_LOW, 0);
    bufferevent_setwatermark(c->bev, EV_READ, 0, PX_BUF_HIGH); /* bounds read-ahead */
    bufferevent_disable(c->bev, EV_WRITE);                     /* writes: out_flush() */
    set_client_read_timeout(c, 0);
    TAILQ_INSERT_TAIL(&ctx->conns->list, c, link);
    ctx->conns->n++;
    px_stats_gauge_add(PX_G_CONNECTIONS, 1);
    start_head(c);
    set_timer(c, T_HEAD, &ctx->tv.header); /* the deadline runs from accept */
    return;
fail:
    if (c != NULL) {
        if (c->bev != NULL)
            bufferevent_free(c->bev); /* closes fd */
        else
            close(fd);
        if (c->timer != NULL)
            event_free(c->timer);
        if (c->kick != NULL)
            event_free(c->kick);
        free(c);
    } else {
        close(fd);
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
        if (c->dead)
            continue;
        c->keep_alive = 0;
        if (c->state == C_HEAD && c->req == NULL &&
            evbuffer_get_length(bufferevent_get_input(c->bev)) == 0)
            conn_close(c);
    }
}

void px_conn_close_all(struct px_ctx *ctx)
{
    struct px_conn *c, *next;

    for (c = TAILQ_FIRST(&ctx->conns->list); c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        if (!c->dead)
            conn_close(c);
    }
}

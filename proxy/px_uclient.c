/* px_uclient: see px_uclient.h. */
#include "px_uclient.h"

#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "px_stats.h"
#include "px_transport.h"
#include "px_upstream.h"

static void uc_read_cb(struct bufferevent *bev, void *arg);
static void uc_write_cb(struct bufferevent *bev, void *arg);
static void uc_event_cb(struct bufferevent *bev, short what, void *arg);

void px_uclient_finish(struct px_uclient *uc, int reusable)
{
    struct px_uconn *u = uc->up;

    if (u == NULL)
        return;
    uc->up = NULL;
    if (reusable && evbuffer_get_length(bufferevent_get_input(u->bev)) == 0 &&
        evbuffer_get_length(bufferevent_get_output(u->bev)) == 0)
        px_upool_put(u);
    else
        px_upool_close(u);
    px_stats_gauge_add(PX_G_INFLIGHT, -1);
}

/* Closes the connection and reports; the last thing a caller does. */
static void fail(struct px_uclient *uc, int status, const char *why)
{
    int unknown = !uc->connecting && !uc->started;

    px_uclient_finish(uc, 0);
    uc->cbs->failed(uc->arg, status, why, unknown);
}

/* Arms the deadline that fits the exchange's phase: while the request is
 * still being sent, an upstream that stops taking bytes; after it, the
 * response. (While connecting, the connect deadline stays.) */
static void set_deadline(struct px_uclient *uc)
{
    if (uc->connecting)
        return;
    if (uc->request_done)
        bufferevent_set_timeouts(uc->up->bev, uc->cfg.upstream_tv, NULL);
    else
        bufferevent_set_timeouts(uc->up->bev, NULL, uc->cfg.upstream_tv);
}

int px_uclient_start(struct px_uclient *uc, struct px_upool *pool, const struct px_uclient_cfg *cfg,
                     const struct px_uclient_cbs *cbs, void *arg, struct px_upool_waiter *w)
{
    struct px_uconn *u;

    memset(uc, 0, sizeof(*uc));
    if (!px_upool_may_start(pool, w))
        return PX_UC_BUSY;
    u = px_upool_take(pool);
    uc->cfg = *cfg;
    uc->cbs = cbs;
    uc->arg = arg;
    if (u == NULL) {
        u = px_upool_connect(pool);
        if (u == NULL)
            return -1;
        uc->connecting = 1;
        bufferevent_set_timeouts(u->bev, cfg->connect_tv, cfg->connect_tv);
    }
    uc->up = u;
    u->requests++;
    px_stats_gauge_add(PX_G_INFLIGHT, 1);
    bufferevent_setcb(u->bev, uc_read_cb, uc_write_cb, uc_event_cb, uc);
    bufferevent_setwatermark(u->bev, EV_WRITE, cfg->low, 0);
    bufferevent_enable(u->bev, EV_READ); /* writes: px_uclient_flush() */
    px_h1_parser_init(&uc->rp, 0, cfg->head_request, cfg->lim);
    set_deadline(uc);
    return 0;
}

struct evbuffer *px_uclient_output(const struct px_uclient *uc)
{
    return bufferevent_get_output(uc->up->bev);
}

void px_uclient_request_done(struct px_uclient *uc)
{
    uc->request_done = 1;
    set_deadline(uc);
}

void px_uclient_flush(struct px_uclient *uc)
{
    if (uc->up != NULL)
        uc->up->tr->ops->flush(uc->up->bev);
}

/* Parses the response head. Returns 1 when a head was handled (a final one
 * sets started), 0 for more input, -1 after the exchange was failed. */
static int read_head(struct px_uclient *uc)
{
    struct evbuffer *in = bufferevent_get_input(uc->up->bev);
    size_t max = uc->cfg.lim->max_head;
    size_t len = evbuffer_get_length(in);
    size_t want = len < max + 1 ? len : max + 1;
    const char *p = (const char *)evbuffer_pullup(in, (ssize_t)want);
    struct px_h1_head head;
    int rechunk = 0;

    switch (px_h1_parse_head(&uc->rp, p, want, &head)) {
    case PX_H1_NEED_MORE:
        if (want > max) {
            fail(uc, 502, "response head too large");
            return -1;
        }
        return 0;
    case PX_H1_ERROR:
        fail(uc, 502, head.error != NULL ? head.error : "malformed response");
        return -1;
    case PX_H1_DONE:
        break;
    }
    if (head.status >= 100 && head.status < 200) {
        /* Interim responses go to the caller (RFC 9110 15.2: a proxy
         * forwards them); a switch of protocols is not something we can
         * relay. */
        if (head.status == 101) {
            fail(uc, 502, "upstream switched protocols");
            return -1;
        }
        uc->cbs->info(uc->arg, &head);
        evbuffer_drain(in, head.head_len);
        px_h1_parser_init(&uc->rp, 0, uc->cfg.head_request, uc->cfg.lim);
        return 1;
    }
    uc->reusable = head.keep_alive;
    if (uc->cbs->head(uc->arg, &head, &uc->sink, &rechunk) < 0) {
        fail(uc, 502, "out of memory");
        return -1;
    }
    px_body_init(&uc->body, head.body, head.content_length, rechunk);
    evbuffer_drain(in, head.head_len);
    uc->started = 1;
    return 1;
}

/* Relays what the upstream sent: the head, then the body into the sink
 * until it is full. Ends in done() or failed() when the exchange ends. */
static void relay(struct px_uclient *uc, size_t high)
{
    struct evbuffer *in = bufferevent_get_input(uc->up->bev);

    /* Each interim head handled drains its bytes: bounded by the input. */
    while (!uc->started)
        if (read_head(uc) <= 0)
            return;
    switch (px_body_relay(&uc->body, in, uc->sink, high)) {
    case PX_BODY_DONE:
        uc->cbs->done(uc->arg);
        return;
    case PX_BODY_ERROR:
        fail(uc, 502, "malformed chunked response body");
        return;
    case PX_BODY_MORE:
        break;
    }
    if (!uc->paused && evbuffer_get_length(uc->sink) >= high) {
        bufferevent_disable(uc->up->bev, EV_READ);
        uc->paused = 1;
    }
}

void px_uclient_resume(struct px_uclient *uc)
{
    if (uc->up == NULL || !uc->paused || evbuffer_get_length(uc->sink) > uc->cfg.low)
        return;
    uc->paused = 0;
    bufferevent_enable(uc->up->bev, EV_READ);
    relay(uc, uc->cfg.high); /* bytes already buffered raise no read event */
}

static void read_run(struct bufferevent *bev, struct px_uclient *uc)
{
    relay(uc, uc->cfg.high);
}

static void write_run(struct bufferevent *bev, struct px_uclient *uc)
{
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        bufferevent_disable(bev, EV_WRITE); /* see px_transport's flush */
    if (evbuffer_get_length(bufferevent_get_output(bev)) <= uc->cfg.low)
        uc->cbs->writable(uc->arg);
}

static void event_run(struct bufferevent *bev, short what, struct px_uclient *uc)
{
    if (what & BEV_EVENT_CONNECTED) {
        uc->connecting = 0;
        set_deadline(uc); /* the connect deadline ends here */
        uc->cbs->connected(uc->arg);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        fail(uc, 504, uc->connecting ? "connect timed out" : "response timed out");
        return;
    }
    if ((what & BEV_EVENT_EOF) && uc->started && uc->body.framing == PX_H1_BODY_EOF) {
        /* The body ends with the connection: relay all that is left. */
        (void)px_body_relay(&uc->body, bufferevent_get_input(bev), uc->sink, SIZE_MAX);
        px_uclient_finish(uc, 0);
        uc->cbs->done(uc->arg);
        return;
    }
    fail(uc, 502,
         (what & BEV_EVENT_EOF) ? "upstream closed the connection" : "upstream connection failed");
}

/* The libevent callbacks: each runs its part, then the owner's after()
 * with values saved first (the struct may be freed by then). */
static void uc_read_cb(struct bufferevent *bev, void *arg)
{
    struct px_uclient *uc = arg;
    const struct px_uclient_cbs *cbs = uc->cbs;
    void *owner = uc->arg;

    read_run(bev, uc);
    cbs->after(owner);
}

static void uc_write_cb(struct bufferevent *bev, void *arg)
{
    struct px_uclient *uc = arg;
    const struct px_uclient_cbs *cbs = uc->cbs;
    void *owner = uc->arg;

    write_run(bev, uc);
    cbs->after(owner);
}

static void uc_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct px_uclient *uc = arg;
    const struct px_uclient_cbs *cbs = uc->cbs;
    void *owner = uc->arg;

    event_run(bev, what, uc);
    cbs->after(owner);
}

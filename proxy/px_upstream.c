/* px_upstream: see px_upstream.h. Idle connections sit on a doubly linked
 * list, newest first (the warmest socket is reused first); the pool watches
 * them with its own callbacks: any byte or EOF from an idle upstream
 * connection means it can no longer be used, so it is closed. */
#include "px_upstream.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "px_stats.h"
#include "px_transport.h"

struct px_upool {
    struct event_base *base;
    const struct px_transport *tr;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint64_t idle_ms;
    uint64_t next_id;
    struct px_uconn *idle_head;
    size_t n_idle;
    size_t n_open;                 /* idle and lent */
    size_t max_conns;              /* 0: no bound */
    size_t n_granted;              /* waiters a connection is kept for */
    size_t n_waiting;
    TAILQ_HEAD(, px_upool_waiter) waiters;
    int retired;                   /* replaced by a reload: drains, then frees itself */
};

/* A retired pool goes once nothing refers to it. */
static void maybe_free(struct px_upool *p)
{
    if (p->retired && p->n_open == 0 && p->n_waiting == 0 && p->n_granted == 0)
        free(p);
}

/* Connections a new exchange could have now: idle ones plus room. */
static size_t free_slots(const struct px_upool *p)
{
    size_t room = p->max_conns == 0 ? SIZE_MAX / 2
                  : p->n_open < p->max_conns ? p->max_conns - p->n_open
                                             : 0;

    return p->n_idle + room;
}

/* Grants freed connections to the first waiters, one each. */
static void grant(struct px_upool *p)
{
    struct px_upool_waiter *w;

    while (p->n_granted < free_slots(p) && (w = TAILQ_FIRST(&p->waiters)) != NULL) {
        TAILQ_REMOVE(&p->waiters, w, link);
        p->n_waiting--;
        w->queued = 0;
        w->granted = 1;
        p->n_granted++;
        px_stats_gauge_set(PX_G_UPSTREAM_QUEUED, (int64_t)p->n_waiting);
        w->cb(w->arg);
    }
}

int px_upool_may_start(struct px_upool *p, struct px_upool_waiter *w)
{
    if (w != NULL && w->granted) {
        w->granted = 0;
        p->n_granted--;
        return 1;
    }
    return p->n_waiting == 0 && free_slots(p) > p->n_granted;
}

void px_upool_wait(struct px_upool *p, struct px_upool_waiter *w)
{
    w->queued = 1;
    w->granted = 0;
    TAILQ_INSERT_TAIL(&p->waiters, w, link);
    p->n_waiting++;
    px_stats_gauge_set(PX_G_UPSTREAM_QUEUED, (int64_t)p->n_waiting);
    grant(p); /* a slot may be free already (a grant withdrawn meanwhile) */
}

void px_upool_cancel(struct px_upool *p, struct px_upool_waiter *w)
{
    if (w->queued) {
        TAILQ_REMOVE(&p->waiters, w, link);
        p->n_waiting--;
        w->queued = 0;
        px_stats_gauge_set(PX_G_UPSTREAM_QUEUED, (int64_t)p->n_waiting);
    } else if (w->granted) {
        w->granted = 0;
        p->n_granted--;
        grant(p);
    } else {
        return; /* neither: p may be gone (a retired pool), do not touch it */
    }
    maybe_free(p);
}

void px_upool_retire(struct px_upool *p)
{
    while (p->idle_head != NULL)
        px_upool_close(p->idle_head); /* not retired yet: p stays */
    p->retired = 1;
    maybe_free(p);
}

void px_upool_set_max(struct px_upool *p, size_t max_conns)
{
    p->max_conns = max_conns;
    grant(p);
}

size_t px_upool_open(const struct px_upool *p)
{
    return p->n_open;
}

size_t px_upool_waiting(const struct px_upool *p)
{
    return p->n_waiting;
}

struct px_upool *px_upool_new(struct event_base *base, const struct px_transport *tr,
                              const char *host, int port, size_t max_conns, uint64_t idle_ms,
                              char *err, size_t errlen)
{
    struct px_upool *p = NULL;
    struct addrinfo hints, *res = NULL;
    char portstr[16];
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(portstr, sizeof(portstr), "%d", port);
    rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "upstream %s:%d: %s", host, port, gai_strerror(rc));
        goto out;
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    p->base = base;
    p->tr = tr;
    p->max_conns = max_conns;
    TAILQ_INIT(&p->waiters);
    p->idle_ms = idle_ms;
    memcpy(&p->addr, res->ai_addr, res->ai_addrlen);
    p->addrlen = res->ai_addrlen;
out:
    if (res != NULL)
        freeaddrinfo(res);
    return p;
}

static void idle_unlink(struct px_uconn *u)
{
    struct px_upool *p = u->pool;

    if (!u->idle)
        return;
    if (u->prev != NULL)
        u->prev->next = u->next;
    else
        p->idle_head = u->next;
    if (u->next != NULL)
        u->next->prev = u->prev;
    u->next = u->prev = NULL;
    u->idle = 0;
    p->n_idle--;
    px_stats_gauge_set(PX_G_UPSTREAM_IDLE, (int64_t)p->n_idle);
}

void px_upool_close(struct px_uconn *u)
{
    struct px_upool *p;

    if (u == NULL)
        return;
    p = u->pool;
    idle_unlink(u);
    if (u->bev != NULL) {
        bufferevent_free(u->bev);
        p->n_open--;
        px_stats_gauge_set(PX_G_UPSTREAM_OPEN, (int64_t)p->n_open);
    }
    free(u);
    grant(p); /* room for a queued request */
    maybe_free(p);
}

void px_upool_free(struct px_upool *p)
{
    if (p == NULL)
        return;
    while (p->idle_head != NULL)
        px_upool_close(p->idle_head);
    free(p);
}

/* An idle connection spoke or closed: it cannot carry another request. */
static void idle_read_cb(struct bufferevent *bev, void *arg)
{
    px_upool_close(arg);
}

static void idle_event_cb(struct bufferevent *bev, short what, void *arg)
{
    px_upool_close(arg);
}

struct px_uconn *px_upool_take(struct px_upool *p)
{
    struct px_uconn *u;

    struct timeval now;

    event_base_gettimeofday_cached(p->base, &now);
    while ((u = p->idle_head) != NULL) {
        idle_unlink(u);
        /* A connection idle for a moment is alive (upstreams close idle
         * connections after seconds); only an older one is worth a peek for
         * a close the loop has not processed yet. */
        if (now.tv_sec - u->idle_since <= 1 || p->tr->ops->alive(u->bev)) {
            bufferevent_set_timeouts(u->bev, NULL, NULL);
            px_stats_inc(PX_ST_UPSTREAM_REUSED);
            return u;
        }
        px_upool_close(u);
    }
    return NULL;
}

struct px_uconn *px_upool_connect(struct px_upool *p)
{
    struct px_uconn *u = calloc(1, sizeof(*u));

    if (u == NULL)
        goto fail;
    u->pool = p;
    u->tr = p->tr;
    u->id = ++p->next_id;
    u->bev = px_transport_connect(p->tr, p->base, (struct sockaddr *)&p->addr, p->addrlen);
    if (u->bev == NULL)
        goto fail;
    p->n_open++;
    px_stats_gauge_set(PX_G_UPSTREAM_OPEN, (int64_t)p->n_open);
    px_stats_inc(PX_ST_UPSTREAM_OPENED);
    return u;
fail:
    px_upool_close(u);
    return NULL;
}

void px_upool_put(struct px_uconn *u)
{
    struct px_upool *p = u->pool;
    struct timeval tv, now;

    if (p->retired) {
        px_upool_close(u); /* the reload's new pool serves from now on */
        return;
    }
    event_base_gettimeofday_cached(p->base, &now);
    tv.tv_sec = (time_t)(p->idle_ms / 1000);
    tv.tv_usec = (suseconds_t)(p->idle_ms % 1000) * 1000;
    bufferevent_setcb(u->bev, idle_read_cb, NULL, idle_event_cb, u);
    bufferevent_setwatermark(u->bev, EV_READ | EV_WRITE, 0, 0);
    bufferevent_disable(u->bev, EV_WRITE); /* nothing to write while idle */
    bufferevent_set_timeouts(u->bev, &tv, NULL);
    bufferevent_enable(u->bev, EV_READ);
    u->idle = 1;
    u->idle_since = now.tv_sec;
    u->prev = NULL;
    u->next = p->idle_head;
    if (p->idle_head != NULL)
        p->idle_head->prev = u;
    p->idle_head = u;
    p->n_idle++;
    px_stats_gauge_set(PX_G_UPSTREAM_IDLE, (int64_t)p->n_idle);
    grant(p); /* an idle connection for a queued request */
}

size_t px_upool_idle(const struct px_upool *p)
{
    return p->n_idle;
}

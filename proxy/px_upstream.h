/* px_upstream: the pool of keep-alive connections to the upstream. It owns
 * idle connections (watching them for a close from the upstream or an idle
 * timeout) and opens new ones; while a connection is lent out for a request
 * (between px_upool_take/px_upool_connect and px_upool_put/px_upool_close) the
 * borrower drives its bufferevent callbacks. Loop thread only. */
#ifndef PX_UPSTREAM_H
#define PX_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <time.h>

struct event_base;
struct bufferevent;
struct px_upool;
struct px_transport;

/* A connection to the upstream. The borrower may read and set bev's
 * callbacks and timeouts while it holds the connection. */
struct px_uconn {
    struct bufferevent *bev;
    struct px_upool *pool;
    const struct px_transport *tr; /* the pool's; borrowed */
    uint64_t id;
    unsigned requests;      /* requests sent on it so far */
    int idle;               /* internal: in the idle list */
    time_t idle_since;      /* internal: when it went idle (s) */
    struct px_uconn *next;  /* internal: idle list */
    struct px_uconn *prev;
};

/* Creates a pool for host:port (resolved now, blocking; call at startup)
 * whose connections speak through tr, at most max_conns of them at once
 * (idle and lent; 0: no bound). idle_ms is how long an idle connection is
 * kept. Returns NULL with a message in err. Free with px_upool_free(). base
 * and tr are borrowed and outlive the pool. */
struct px_upool *px_upool_new(struct event_base *base, const struct px_transport *tr,
                              const char *host, int port, size_t max_conns, uint64_t idle_ms,
                              char *err, size_t errlen);

/* A request queued for a connection while the pool is at its bound,
 * embedded in the caller's state. First come, first served: when a
 * connection becomes idle or one closes, the first waiter is granted it and
 * its cb runs (from inside px_upool_put/close: record and schedule only);
 * the granted waiter then calls px_upool_may_start() with granted set. */
struct px_upool_waiter {
    TAILQ_ENTRY(px_upool_waiter) link;
    void (*cb)(void *arg);
    void *arg;
    int queued;   /* internal */
    int granted;  /* a connection is kept for it */
};

/* Whether an exchange may start now (an idle connection, or room for a new
 * one, and no earlier request queued); w is the caller's waiter when it was
 * granted (its grant is used up), else NULL. */
int px_upool_may_start(struct px_upool *p, struct px_upool_waiter *w);

/* Queues w (cb and arg set by the caller). */
void px_upool_wait(struct px_upool *p, struct px_upool_waiter *w);

/* Withdraws w, queued or granted (a grant passes to the next waiter).
 * Accepts a waiter never queued or already served, and then does not touch
 * p (which may be a retired pool that is gone). */
void px_upool_cancel(struct px_upool *p, struct px_upool_waiter *w);

/* A reload replaced the pool: idle connections close now, lent ones close
 * when they come back, queued requests are still served by it, and the
 * pool frees itself once nothing is open, queued or granted. The caller
 * must not use p after this except through connections and waiters it
 * already holds. */
void px_upool_retire(struct px_upool *p);

/* Changes the bound (a reload); queued requests are granted what it frees. */
void px_upool_set_max(struct px_upool *p, size_t max_conns);

/* Connections open now (idle and lent) and requests queued. */
size_t px_upool_open(const struct px_upool *p);
size_t px_upool_waiting(const struct px_upool *p);

/* Closes every idle connection and frees the pool. Lent connections must
 * have been returned or closed first. Accepts NULL. */
void px_upool_free(struct px_upool *p);

/* Takes an idle connection that still looks alive, or returns NULL. The
 * caller owns it until px_upool_put() or px_upool_close(). */
struct px_uconn *px_upool_take(struct px_upool *p);

/* Starts a new connection; the caller owns it at once and learns the outcome
 * through the bufferevent's event callback (BEV_EVENT_CONNECTED or an error),
 * which the caller must set right after this returns. Returns NULL when the
 * connection could not even be started (errno set). */
struct px_uconn *px_upool_connect(struct px_upool *p);

/* Returns a connection that finished a response cleanly to the idle list.
 * Its callbacks are replaced by the pool's. Takes ownership. */
void px_upool_put(struct px_uconn *u);

/* Closes and frees a connection (idle or lent). Accepts NULL. */
void px_upool_close(struct px_uconn *u);

/* Idle connections now, and connections opened/reused since start. */
size_t px_upool_idle(const struct px_upool *p);

#endif

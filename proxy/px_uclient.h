/* px_uclient: the upstream side of one exchange, as a client that reports
 * back through callbacks. It borrows a connection from the pool (or opens
 * one under the connect deadline), gives the caller the output buffer for
 * the request head and body, runs the send and response deadlines, parses
 * the response head with the strict parser (interim 1xx handed to the
 * caller, 101 and malformed heads failed), relays the response body into the buffer the
 * caller names with one px_body, and pauses reading the upstream while that
 * buffer is above the high-water mark. The caller owns the struct (embedded
 * in its request) and every buffer; the uclient owns the borrowed upstream
 * connection between px_uclient_start() and px_uclient_finish(). Loop
 * thread only.
 *
 * Callbacks are always the last thing a uclient function does, so the
 * caller may finish the uclient, and free the struct, from inside any of
 * them except head() and info(), which must not end the exchange. */
#ifndef PX_UCLIENT_H
#define PX_UCLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#include "px_body.h"
#include "px_http1.h"

struct evbuffer;
struct px_upool;
struct px_upool_waiter;
struct px_uconn;

struct px_uclient_cbs {
    /* A new connection is up (one taken from the pool never reports this). */
    void (*connected)(void *arg);
    /* The final response head h (borrowed until return). Sets *sink to the
     * buffer the body goes to and *rechunk; returns 0, or -1 to fail the
     * exchange with 502. Must not finish the uclient. */
    int (*head)(void *arg, const struct px_h1_head *h, struct evbuffer **sink, int *rechunk);
    /* An interim response (1xx but 101) h, borrowed until return; more
     * heads follow. Must not finish the uclient. */
    void (*info)(void *arg, const struct px_h1_head *h);
    /* The response is complete (its body relayed into the sink). */
    void (*done)(void *arg);
    /* The exchange failed and the upstream connection is closed: status is
     * what to answer when no response head was passed on yet (502, 504);
     * unknown says the request may have reached the upstream without an
     * answer (its outcome there is unknown). */
    void (*failed)(void *arg, int status, const char *why, int unknown);
    /* The request output drained below the low-water mark. */
    void (*writable)(void *arg);
    /* Called at the end of every libevent callback of the uclient, after
     * the others, so the owner can write what they queued. The owner (arg)
     * outlives the uclient struct; the struct may be gone by then. */
    void (*after)(void *arg);
};

struct px_uclient_cfg {
    const struct px_h1_limits *lim;    /* response head limits; borrowed */
    const struct timeval *connect_tv;  /* borrowed: libevent common timeouts */
    const struct timeval *upstream_tv;
    size_t high, low;                  /* watermarks of sink and output */
    int head_request;                  /* the request was HEAD: no response body */
};

struct px_uclient {
    struct px_uconn *up;               /* NULL when not active */
    const struct px_uclient_cbs *cbs;
    void *arg;
    struct px_uclient_cfg cfg;
    struct px_h1_parser rp;
    struct px_body body;               /* the response body */
    struct evbuffer *sink;             /* the caller's, once head() set it */
    int connecting;                    /* a new connection, not yet up */
    int request_done;                  /* the request's last byte is queued */
    int started;                       /* a final head was passed on */
    int reusable;                      /* the response allows reuse */
    int paused;                        /* reading paused for the sink */
};

/* px_uclient_start() found every upstream connection busy. */
#define PX_UC_BUSY 1

/* Starts an exchange on a pooled connection or a new one. cbs and arg are
 * borrowed for the exchange; w is the caller's waiter if the pool granted
 * it a connection (px_upool_wait), else NULL. Returns 0; PX_UC_BUSY when the
 * pool is at max_upstream_connections or others queue first (queue w and
 * call again once granted); or -1 when no connection could even be started
 * (nothing to finish then). */
int px_uclient_start(struct px_uclient *uc, struct px_upool *pool, const struct px_uclient_cfg *cfg,
                     const struct px_uclient_cbs *cbs, void *arg, struct px_upool_waiter *w);

/* The buffer the request head and body are written to. Active only. */
struct evbuffer *px_uclient_output(const struct px_uclient *uc);

/* The request's last byte is queued: the response deadline starts. */
void px_uclient_request_done(struct px_uclient *uc);

/* The sink drained below the low-water mark: resume reading the upstream
 * and relay what is already buffered (may call done() or failed()). */
void px_uclient_resume(struct px_uclient *uc);

/* Writes queued output now (see px_transport's flush). */
void px_uclient_flush(struct px_uclient *uc);

/* Ends the exchange: the connection goes back to the pool when reusable is
 * set and nothing is left in either direction, else it is closed. Accepts
 * an inactive uclient (no-op). Never calls back. */
void px_uclient_finish(struct px_uclient *uc, int reusable);

static inline int px_uclient_active(const struct px_uclient *uc)
{
    return uc->up != NULL;
}

#endif

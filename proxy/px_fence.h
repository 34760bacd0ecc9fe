/* px_fence: the per-resource fencing state of a running proxy and the
 * ordering gate in front of the upstream. It caches each resource's highest
 * admitted token and its durable highest (from the token store), admits or
 * refuses requests, records advances through the store, and lets a request
 * through only when no request with a different token on the same resource is
 * in flight (S3 in docs/safety.md). Runs on the loop thread; no libevent. */
#ifndef PX_FENCE_H
#define PX_FENCE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

/* Resources kept in the cache. Beyond it, the least recently used idle ones
 * (no request, no store call, highest durable) are dropped; the next request
 * for one loads its highest from the store again. */
#define PX_FENCE_MAX_RESOURCES ((size_t)1 << 20)

struct st_store;
struct px_fence;
struct px_fence_res;

enum px_fence_result {
    PX_FENCE_GO,           /* forward now; call px_fence_done() when finished */
    PX_FENCE_STALE,        /* refuse with 409; ticket->highest says why */
    PX_FENCE_FAILED,       /* the store failed (or is full: ticket->full): 503 */
    PX_FENCE_WAIT,         /* ticket queued: the callback will say */
    PX_FENCE_UNVERIFIED    /* the route's lock backend does not confirm the token
                            * as the holder's: refuse (403), nothing was raised */
};

/* What a lock backend says about a token (px_fence_verifier). */
enum px_verdict {
    PX_VERDICT_HELD,        /* the token is the current holder's */
    PX_VERDICT_NOT_HELD,    /* free, or held with another token */
    PX_VERDICT_UNREACHABLE  /* no answer: fail closed (503) */
};

/* Called once with the verdict of a check that returned 0; on the loop
 * thread, never from inside check(). */
typedef void (*px_verdict_cb)(void *arg, enum px_verdict v);

/* How px_fence asks a route's lock backend whether a token is the current
 * holder's, without knowing the backend (px_verify implements it; its
 * worker thread does the blocking calls). Borrowed by every ticket admitted
 * with it; must outlive them. */
struct px_fence_verifier {
    /* Asks about token for resource key (klen bytes, copied). Returns 1 when
     * the answer is HELD at once (a live check still cached; cb not called),
     * 0 when asked (cb runs later), -1 when it cannot ask now (queue full:
     * treated as unreachable). */
    int (*check)(void *impl, const char *key, size_t klen, uint64_t token, px_verdict_cb cb,
                 void *arg);
    void *impl;
    int live; /* require_live_lease: T == H is checked too, not only an advance */
};

struct px_fence_ticket;
/* Called when a queued ticket is decided (GO, STALE or FAILED). Runs on the
 * loop thread, possibly from inside another connection's call into px_fence:
 * the callee must only record the result and schedule its own work. */
typedef void (*px_fence_cb)(struct px_fence_ticket *t, void *arg);

/* One request's place at a resource. Embedded in the caller's request state;
 * px_fence never frees it. */
struct px_fence_ticket {
    struct px_fence_res *res;
    uint64_t token;
    uint64_t highest;              /* for STALE: the highest that refused it */
    enum px_fence_result result;
    int full;                      /* for FAILED: the store is full and refused a new
                                    * resource; it has not failed (store_full) */
    int unreachable;               /* for FAILED: the lock backend gave no answer */
    int busy;                      /* for FAILED: another proxy owns the resource and
                                    * did not hand it over within the wait (503,
                                    * Retry-After) */
    int lapsed;                    /* in flight: this proxy's ownership lapsed or was
                                    * lost; preempt was called: abort whatever the
                                    * upstream received */
    int lost;                      /* for FAILED: the store refused the advance because
                                    * another proxy owns the resource now (deposed;
                                    * nothing was raised) */
    const struct px_fence_verifier *verifier; /* NULL: tokens not verified */
    int verified;                  /* internal: the backend confirmed token */
    int state;                     /* internal */
    px_fence_cb cb;
    px_fence_cb preempt;           /* NULL: never told (px_fence_on_preempt) */
    void *arg;
    TAILQ_ENTRY(px_fence_ticket) link;
};

/* Creates the fence over store (borrowed; must outlive the fence). Returns
 * NULL on allocation failure. Free with px_fence_free(). */
struct px_fence *px_fence_new(struct st_store *store);

/* Frees the fence and its resource table; tickets still queued are dropped
 * without callbacks. Free the verifiers first (no verdict may arrive
 * afterwards); pending sets are dropped without callbacks. Accepts NULL. */
void px_fence_free(struct px_fence *f);

/* Admits token for resource key (klen bytes, copied). On GO/STALE/FAILED the
 * ticket is decided at once and cb is not called; on WAIT cb runs later.
 * A token above the highest is recorded at once (later lower tokens are
 * refused from now on) and made durable before any request carrying it is
 * let through (S2). */
enum px_fence_result px_fence_admit(struct px_fence *f, const char *key, size_t klen,
                                    uint64_t token, struct px_fence_ticket *t,
                                    px_fence_cb cb, void *arg);

/* px_fence_admit() on a route whose tokens are verified (v borrowed; NULL:
 * not verified). S2 with verification: a token above the highest is asked
 * about first (tickets with the same token share one check) and raises
 * nothing until v says HELD; NOT_HELD decides UNVERIFIED, UNREACHABLE
 * decides FAILED with ticket->unreachable. With v->live a token equal to
 * the highest is asked about too. */
enum px_fence_result px_fence_admit_verified(struct px_fence *f, const char *key, size_t klen,
                                             uint64_t token, const struct px_fence_verifier *v,
                                             struct px_fence_ticket *t, px_fence_cb cb,
                                             void *arg);

/* Operator reset done: rc 0 with the highest before (old) and after (the
 * set token, or the store's floor), ST_STORE_EFULL or -1 (store failed).
 * Loop thread, from the store's dispatch. */
typedef void (*px_fence_set_cb)(void *arg, int rc, uint64_t old, uint64_t highest);

/* Sets key's highest to token, lower or higher (`fenceproxy tokens set`).
 * Atomic with respect to requests (S3): requests admitted before it
 * (in flight, waiting, being loaded or verified) drain first, requests
 * admitted after it wait and are then decided against the new highest;
 * the value is durable in the store before cb runs. Returns 0 (cb runs
 * later), or -1 when a set of key is already under way or on allocation
 * failure (cb never runs). arg is borrowed until cb. */
int px_fence_set(struct px_fence *f, const char *key, size_t klen, uint64_t token,
                 px_fence_set_cb cb, void *arg);

/* Asks to be told, through cb (same rules as the decision callback: record
 * and schedule only; do not call px_fence_done() from inside), when a higher
 * token is admitted for the resource while this ticket's request is in
 * flight (preemption, S3): the owner then aborts the request if the upstream
 * has not received all of it, and ends the ticket. Call after admit. */
void px_fence_on_preempt(struct px_fence_ticket *t, px_fence_cb cb);

/* Ends a ticket: a GO ticket's request has completed or failed and its
 * upstream connection is closed or idle again; a WAIT ticket is withdrawn.
 * Accepts a ticket never admitted or already done (res == NULL). May release
 * waiting tickets (their callbacks run from here). */
void px_fence_done(struct px_fence *f, struct px_fence_ticket *t);

/* The highest token admitted for key if the resource is cached: returns 0
 * and sets *highest, or -1 when it is not in the cache. */
int px_fence_peek(const struct px_fence *f, const char *key, size_t klen,
                  uint64_t *highest);

/* Changes the cache size (default PX_FENCE_MAX_RESOURCES; at least 1). */
void px_fence_set_max_resources(struct px_fence *f, size_t n);

/* What the status page shows of one cached resource. */
struct px_fence_view {
    const char *key; /* borrowed for the callback */
    size_t klen;
    uint64_t highest, durable;
    uint64_t inflight_token; /* valid when inflight > 0 */
    size_t inflight, waiting;
};

/* Calls fn for up to limit cached resources (no particular order). fn must
 * not call into the fence. */
void px_fence_each(const struct px_fence *f, size_t limit,
                   void (*fn)(const struct px_fence_view *v, void *arg), void *arg);

/* Ownership (several proxies over etcd; see st_store.h). Whether this
 * proxy's ownership may have lapsed (st_store_fence_at has come): nothing
 * fenced may be admitted or relayed to the upstream. Loop thread. */
int px_fence_lapsed(const struct px_fence *f);

/* Whether the request of t (admitted, in flight) must stop (self-fencing):
 * px_fence_lapsed(), or every ownership was lost since t's resource was
 * taken (its lease is gone; the deadline of a new lease does not cover t),
 * or t was told so. Nothing more of it may be relayed. Loop thread. */
int px_fence_ticket_lapsed(const struct px_fence *f, const struct px_fence_ticket *t);

/* Periodic work, called every 100 ms or so from the loop: once ownership
 * lapsed or was lost, every request in flight it covered is told through
 * its preempt callback with ticket->lapsed set (the owner aborts it,
 * whatever the upstream received); resources not used for the idle time
 * are given up. */
void px_fence_sweep(struct px_fence *f);

/* Gives an owned resource up after ms without a request (0: never). */
void px_fence_set_own_idle(struct px_fence *f, uint64_t ms);

/* Requests in flight (GO, not done) across all resources. */
size_t px_fence_inflight(const struct px_fence *f);

#endif

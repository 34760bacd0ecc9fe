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
    PX_FENCE_WAIT          /* ticket queued: the callback will say */
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
 * without callbacks. Accepts NULL. */
void px_fence_free(struct px_fence *f);

/* Admits token for resource key (klen bytes, copied). On GO/STALE/FAILED the
 * ticket is decided at once and cb is not called; on WAIT cb runs later.
 * A token above the highest is recorded at once (later lower tokens are
 * refused from now on) and made durable before any request carrying it is
 * let through (S2). */
enum px_fence_result px_fence_admit(struct px_fence *f, const char *key, size_t klen,
                                    uint64_t token, struct px_fence_ticket *t,
                                    px_fence_cb cb, void *arg);

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

/* Requests in flight (GO, not done) across all resources. */
size_t px_fence_inflight(const struct px_fence *f);

#endif

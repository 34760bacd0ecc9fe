/* px_verify: a route's token verifier (verify = URL), the proxy's one user
 * of libfencelock (fencelock.h). It implements px_fence's verifier
 * interface: px_fence asks whether a token is the current holder's of the
 * lock named after the resource (pol_route_lock_name), one of the route's
 * PX_VERIFY_WORKERS worker threads (each with its own connection to the
 * backend, so checks of different resources do not wait for each other)
 * makes the blocking libfencelock call (fl_verify; fl_status with
 * require_live_lease, for the lease's remaining TTL) and hands the verdict
 * back to the loop through an eventfd, so the loop never waits on the lock
 * backend. The queue is bounded (PX_VERIFY_QUEUE): beyond it a check is
 * refused at once (503, fail closed). With require_live_lease and
 * live_lease_cache > 0, a HELD answer is reused for at most
 * min(live_lease_cache, the lease's TTL left when it was asked), measured
 * from before the call was sent, so a cached answer never outlives the
 * lease. Loop thread except for the workers. */
#ifndef PX_VERIFY_H
#define PX_VERIFY_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct pol_route;
struct px_verify;
struct px_fence_verifier;

#define PX_VERIFY_QUEUE      4096  /* checks waiting for a worker */
#define PX_VERIFY_WORKERS    4     /* threads (backend connections) per route */
#define PX_VERIFY_TIMEOUT_MS 1000  /* per backend round trip */
#define PX_VERIFY_CACHE_MAX  65536 /* cached live checks; then the cache is emptied */

/* Makes the verifier of route (borrowed; route->verify must be set; must
 * outlive the verifier) and starts its workers, whose notify event is added
 * to base (borrowed). Does no I/O to the backend: the first check connects.
 * Returns NULL with a message in err. Free with px_verify_free(). */
struct px_verify *px_verify_new(struct event_base *base, const struct pol_route *route, char *err,
                                size_t errlen);

/* Stops and joins the workers (calls under way finish first, bounded by
 * the round-trip timeout), drops queued checks and verdicts without calling
 * back, frees v and NULLs *v. Accepts NULL. */
void px_verify_free(struct px_verify **v);

/* The px_fence interface of v, borrowed for v's life. */
const struct px_fence_verifier *px_verify_fence(struct px_verify *v);

#endif

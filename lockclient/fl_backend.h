/* fl_backend.h: the seam (v2) between libfencelock's generic client
 * (fl_client.c) and one lock backend. A backend is one .c file exporting one
 * ops table; nothing else knows which backend is in use, and fl_client.c has
 * no code per backend.
 *
 * The shape fits a try-lock store with an atomic script (Redis) as well as a
 * queue (etcd, ZooKeeper): acquire gets a deadline and waits inside the
 * backend (a queue backend enqueues once and waits on a watch; Redis retries
 * its script when woken by a release), so first-come-first-served order and
 * revisions are the backend's business.
 *
 * Session: every hold belongs to a session the backend keeps alive through
 * renew(). Its id is the hold's owner string: Redis uses the random owner id
 * the client proposes (one "session" per lock, kept alive by PEXPIRE); etcd
 * replaces it with the client's lease id in hex (one lease per client, kept
 * alive by one keepalive POST per renew, covering every lock of the client).
 * The watchdog (fl_client.c) calls renew at TTL/3 from its own backend state,
 * so renew must work from the owner string alone. A loss is reported by
 * renew as FL_ERR_NOT_OWNER (the session or the key is gone) and turned into
 * fl_lost_fn by the watchdog; running out of time is the client's clock.
 *
 * Every call is synchronous, does a bounded number of round trips (each at
 * most the connect timeout, or until deadline_ms for acquire), reconnects
 * lazily after an I/O error, and reports an enum fl_result plus a message in
 * err that names the address(es). */
#ifndef FL_BACKEND_H
#define FL_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "fencelock.h"

struct fl_backend; /* backend-private state */

/* What a successful acquire or renew grants. expiry_ms is on CLOCK_MONOTONIC
 * and taken before the request that started or last extended the session was
 * sent, so the local view never outlives the backend's. */
struct fl_grant {
    uint64_t token;    /* acquire only: the fencing token, > 0 */
    uint64_t ttl_ms;   /* the TTL in force (etcd rounds up to whole seconds) */
    int64_t expiry_ms; /* CLOCK_MONOTONIC ms */
};

struct fl_backend_ops {
    const char *scheme; /* URL scheme, e.g. "redis" */

    /* Parses url (borrowed) and returns new state without doing I/O, or NULL
     * with a message in err. */
    struct fl_backend *(*open)(const char *url, char *err, size_t errlen);

    /* Sets the per round trip timeout for later calls and connects if the
     * backend keeps a connection. FL_OK or FL_ERR_BACKEND. */
    int (*connect)(struct fl_backend *b, uint64_t timeout_ms, char *err, size_t errlen);

    /* Takes name for a session of ttl_ms, waiting until deadline_ms
     * (CLOCK_MONOTONIC; a deadline in the past means one try). owner holds a
     * fresh random id on entry; the backend may replace it with its session
     * id (at most FL_OWNER_MAX bytes). On FL_OK fills *g. FL_ERR_NOT_ACQUIRED
     * when still held at the deadline: the backend has withdrawn whatever it
     * queued. A resend after a lost reply must be safe. */
    int (*acquire)(struct fl_backend *b, const char *name, char owner[FL_OWNER_MAX + 1],
                   uint64_t ttl_ms, int64_t deadline_ms, struct fl_grant *g, char *err,
                   size_t errlen);

    /* Withdraws owner's place for name if it is still queued or held (after
     * an acquire that failed with a backend error, say). Idempotent; FL_OK
     * when there was nothing to withdraw. */
    int (*cancel)(struct fl_backend *b, const char *name, const char *owner, char *err,
                  size_t errlen);

    /* Keeps owner's session alive for name (ttl_ms may be ignored by a
     * backend whose session TTL is fixed; g->ttl_ms says what is in force).
     * FL_ERR_NOT_OWNER when the session or the hold is gone. */
    int (*renew)(struct fl_backend *b, const char *name, const char *owner, uint64_t ttl_ms,
                 struct fl_grant *g, char *err, size_t errlen);

    /* Deletes owner's hold of name: FL_OK or FL_ERR_NOT_OWNER (nothing
     * touched). Waiters are woken by the backend. */
    int (*release)(struct fl_backend *b, const char *name, const char *owner, char *err,
                   size_t errlen);

    /* Holder, token, TTL and waiters of name (one consistent read). */
    int (*status)(struct fl_backend *b, const char *name, struct fl_lock_status *st, char *err,
                  size_t errlen);

    /* *current = 1 if token is the token of the current holder of name,
     * else 0. One round trip. */
    int (*verify)(struct fl_backend *b, const char *name, uint64_t token, int *current, char *err,
                  size_t errlen);

    /* The backend's address(es) for messages, borrowed for the life of b. */
    const char *(*address)(const struct fl_backend *b);

    /* Closes and frees b (a session with no holds may be ended). Accepts NULL. */
    void (*free)(struct fl_backend *b);

    /* Read-write locks; NULL in a backend without them. acquire above is
     * the write (exclusive) lock of the same name: it waits for readers, and
     * a waiting writer keeps new readers out (writer preference). A shared
     * hold has a token per the read-write rule (docs/lockclient.md): a
     * reader entering while no reader holds gets a new token, one entering
     * while readers hold gets theirs, so readers holding together share a
     * token, above every earlier writer's and below every later one's. The
     * owner id identifies the one hold (a client may hold several reads of
     * a name). Same contracts as acquire, renew and release. */
    int (*acquire_shared)(struct fl_backend *b, const char *name, char owner[FL_OWNER_MAX + 1],
                          uint64_t ttl_ms, int64_t deadline_ms, struct fl_grant *g, char *err,
                          size_t errlen);
    int (*renew_shared)(struct fl_backend *b, const char *name, const char *owner,
                        uint64_t ttl_ms, struct fl_grant *g, char *err, size_t errlen);
    int (*release_shared)(struct fl_backend *b, const char *name, const char *owner, char *err,
                          size_t errlen);
};

/* The Redis backend (fl_redis.c). */
extern const struct fl_backend_ops fl_redis_ops;
/* The etcd backend (fl_etcd.c). */
extern const struct fl_backend_ops fl_etcd_ops;
extern const struct fl_backend_ops fl_etcds_ops; /* etcds://: the same over https */
/* The ZooKeeper backend (fl_zk.c). */
extern const struct fl_backend_ops fl_zk_ops;
/* The Redlock backend over N Redis masters (fl_redlock.c). */
extern const struct fl_backend_ops fl_redlock_ops;

#endif

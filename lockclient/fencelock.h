/* fencelock.h: the public API of libfencelock. A client talks to one lock
 * backend given by URL
 * (redis://[user:password@|:password@]host[:port][/db] or
 * etcd://host:port[,host:port...] or zk://host:port[,host:port...][/chroot]
 * or redlock://host:port,host:port,... with an odd number >= 3 of Redis
 * masters),
 * takes named locks as leases, each with a fencing token that strictly
 * increases per lock name, renews them (by hand or with a watchdog thread)
 * and releases them. Storage servers compare those tokens (see fenceproxy) so
 * a writer that lost its lock without noticing is refused.
 *
 * Threads: a struct fl_client is not thread-safe; use one per thread. The
 * watchdog runs its own thread with its own connection. Calls on a client
 * block for at most the client's timeout per network round trip (default
 * 2000 ms), except fl_acquire, which also waits up to wait_ms for a held lock.
 * SIGPIPE: the backend library writes to sockets without MSG_NOSIGNAL, so a
 * program calling this API from its own threads should ignore SIGPIPE (the
 * watchdog thread blocks it for itself). */
#ifndef FENCELOCK_H
#define FENCELOCK_H

#include <stddef.h>
#include <stdint.h>

/* Results. Callers that map to exit codes need to tell these apart. */
enum fl_result {
    FL_OK = 0,
    FL_ERR_NOT_ACQUIRED = -1, /* lock held by someone else for all of wait_ms */
    FL_ERR_NOT_OWNER = -2,    /* the lock is not (or no longer) held by this owner */
    FL_ERR_BACKEND = -3,      /* backend unreachable, timed out or answered an error */
    FL_ERR_INVALID = -4,      /* bad argument (name, owner, ttl, URL) */
    FL_ERR_INTERNAL = -5,     /* out of memory, no randomness */
};

#define FL_OWNER_HEX_LEN 32   /* 128 random bits as lowercase hex */
#define FL_OWNER_MAX     128  /* longest owner id accepted (from the CLI, say) */
#define FL_NAME_MAX      1024 /* longest lock name accepted */

/* A held lock. Returned by fl_acquire; free with fl_lease_free().
 * expiry_ms is on CLOCK_MONOTONIC (fl_now_ms()): the time taken just before
 * the acquire or last renew request was sent, plus the TTL, so the local
 * view of the lease never outlives the backend's. */
struct fl_lease {
    char *name;                   /* owned by the lease */
    char owner[FL_OWNER_MAX + 1]; /* NUL-terminated */
    uint64_t token;               /* fencing token, > 0 */
    uint64_t ttl_ms;              /* TTL of the last acquire/renew */
    int64_t expiry_ms;            /* CLOCK_MONOTONIC ms */
    int shared;                   /* 1: a read-write lock's shared (read) hold */
};

#define FL_STATUS_WAITERS 16 /* waiters listed by fl_status (the first ones) */

/* What fl_status reports about a lock name. */
struct fl_lock_status {
    int held;                     /* 1 if some owner holds it */
    char owner[FL_OWNER_MAX + 1]; /* holder if held, else "" */
    char label[FL_OWNER_MAX + 1]; /* the owner id the holder proposed when it acquired
                                   * (before an etcd or ZooKeeper backend replaced it with
                                   * its session id), "" if free: carries an election
                                   * candidate's id (fl_campaign) */
    int64_t ttl_ms;               /* remaining TTL if held (-1: no expiry or unknown) */
    uint64_t token;               /* Redis: last token issued for this name, 0 if none;
                                   * queue backends: the holder's token, 0 if free */
    size_t waiters;               /* queue backends: how many wait, in order below */
    struct {
        char owner[FL_OWNER_MAX + 1];
        uint64_t token; /* the token the waiter will hold */
    } waiter[FL_STATUS_WAITERS];  /* the first min(waiters, FL_STATUS_WAITERS) */
};

struct fl_client;
struct fl_watchdog;

/* Monotonic clock in milliseconds (the clock lease expiries use). */
int64_t fl_now_ms(void);

/* Short English text for a result code (static string). */
const char *fl_strerror(int result);

/* Makes a client for the backend at url (copied). Parses the URL but does not
 * connect: the first call connects, and a call after an I/O error reconnects.
 * Returns NULL on a bad URL or unknown scheme with a message in err (if not
 * NULL). Free with fl_client_free(). */
struct fl_client *fl_client_new(const char *url, char *err, size_t errlen);

/* Frees c and closes its connection; sets *c to NULL. Accepts NULL. */
void fl_client_free(struct fl_client **c);

/* Sets the per round trip timeout (connect, send, receive) in ms, > 0. */
void fl_client_set_timeout(struct fl_client *c, uint64_t timeout_ms);

/* Message for the last failed call on c, naming the backend address where it
 * matters. Borrowed: valid until the next call on c. */
const char *fl_client_error(const struct fl_client *c);

/* "host:port" of the backend, borrowed for the life of c. */
const char *fl_client_address(const struct fl_client *c);

/* Takes lock name for ttl_ms (> 0) with a new token. The owner id is a fresh
 * random id (Redis) or the client's session id (etcd: its lease in hex). If
 * the lock is held, waits inside the backend until wait_ms has passed (0: one
 * try): Redis waiters are woken by the release, etcd waiters queue in order
 * of arrival. A backend error is returned at once (after one retry on a
 * fresh connection). On FL_OK *out is a new lease the caller owns
 * (fl_lease_free). name is borrowed. */
int fl_acquire(struct fl_client *c, const char *name, uint64_t ttl_ms, uint64_t wait_ms,
               struct fl_lease **out);

/* Takes a shared (read) hold of read-write lock name: many readers hold it
 * together, fl_acquire's exclusive lock of the same name is its write lock
 * (it waits for the readers, and once a writer waits no new reader enters:
 * writers are not starved). The token is the read epoch: a reader that
 * enters while no reader holds gets a new token, above every earlier
 * one; a reader that enters while readers hold gets theirs; a writer's is
 * above every earlier reader's (docs/lockclient.md). Renew, watch and
 * release the lease as any other. Redis, etcd and ZooKeeper; FL_ERR_INVALID
 * on Redlock, which has no read-write locks. *out as fl_acquire's. */
int fl_acquire_shared(struct fl_client *c, const char *name, uint64_t ttl_ms, uint64_t wait_ms,
                      struct fl_lease **out);

/* Semaphore: at most permits (1..FL_PERMITS_MAX) holders of name. Each
 * permit is a slot, the lock "NAME#i" (0 <= i < permits) with its own
 * fencing token, so the proxy fences each slot as its own resource. Tries
 * the slots in a random order, then waits on one slot at a time (slices of
 * at most 200 ms) until wait_ms has passed. On FL_OK *out is the slot's
 * lease (lease->name is "NAME#i"; free with fl_lease_free) and *slot its
 * index. A dead holder's slot comes back when its TTL runs out. Works on
 * every backend (it is built on fl_acquire). */
#define FL_PERMITS_MAX 1000
int fl_acquire_permit(struct fl_client *c, const char *name, unsigned permits, uint64_t ttl_ms,
                      uint64_t wait_ms, struct fl_lease **out, unsigned *slot);

/* Extends lease to ttl_ms from now (0: the lease's ttl_ms; etcd keeps its
 * lease's TTL) if its owner still holds it; updates lease->expiry_ms and
 * ttl_ms. FL_ERR_NOT_OWNER if the lock
 * expired or has another owner. lease is borrowed. */
int fl_renew(struct fl_client *c, struct fl_lease *lease, uint64_t ttl_ms);

/* Deletes the lock if lease's owner still holds it; FL_ERR_NOT_OWNER if not
 * (then nothing is touched). lease is borrowed (free it afterwards). */
int fl_release(struct fl_client *c, const struct fl_lease *lease);

/* The same two by name and owner id (for a CLI that gets the owner from the
 * user). Borrowed arguments. */
int fl_renew_owner(struct fl_client *c, const char *name, const char *owner, uint64_t ttl_ms);
int fl_release_owner(struct fl_client *c, const char *name, const char *owner);

/* Reads the state of lock name into *st (one round trip). */
int fl_status(struct fl_client *c, const char *name, struct fl_lock_status *st);

/* Whether token is the token of the current holder of name: FL_OK with
 * *current = 1 (held, and by that token) or 0 (free, or held with another
 * token). One round trip. name is borrowed. */
int fl_verify(struct fl_client *c, const char *name, uint64_t token, int *current);

/* Leader election. A leader of election name is the holder of lock name
 * that acquired it through fl_campaign; its epoch is the lease's token (Redis:
 * the lock token; etcd: the create revision of its key; ZooKeeper: the czxid
 * of its node), so epochs strictly increase from one leader to the next and
 * fenceproxy refuses a deposed leader's writes like a stale lock holder's.
 * Renew, watch (fl_watchdog_start) and resign (fl_release) the lease as a
 * lock's. */
#define FL_ID_MAX 64 /* longest candidate id: [A-Za-z0-9_:@-], 1..64 bytes */

/* Campaigns as candidate id (borrowed) for up to wait_ms: like fl_acquire,
 * with the lease's proposed owner "ID.<random hex>" so fl_leader can name
 * the leader. On FL_OK *out is the leadership (free with fl_lease_free),
 * (*out)->token its epoch. FL_ERR_INVALID for a bad id. */
int fl_campaign(struct fl_client *c, const char *name, const char *id, uint64_t ttl_ms,
                uint64_t wait_ms, struct fl_lease **out);

/* The current leader of election name: FL_OK with id (caller's buffer of
 * FL_ID_MAX + 1 bytes) and *epoch, or with id "" and *epoch 0 when nobody
 * leads (or the holder of lock name did not campaign). One consistent read. */
int fl_leader(struct fl_client *c, const char *name, char id[FL_ID_MAX + 1], uint64_t *epoch);

/* Frees a lease and sets *lease to NULL. Accepts NULL. Does not release it. */
void fl_lease_free(struct fl_lease **lease);

/* Why a watchdog gave up a lease. */
enum fl_loss {
    FL_LOST_NOT_OWNER = 1, /* a renewal found another owner or no key */
    FL_LOST_EXPIRED = 2,   /* renewals failed (or the process was stopped) until
                            * the lease ran out on the monotonic clock */
};

/* Called once, on the watchdog thread, when the lease is lost. name is
 * borrowed until the callback returns. Must not call fl_watchdog_stop. */
typedef void (*fl_lost_fn)(const char *name, enum fl_loss why, void *arg);

/* Starts a thread that renews lease every ttl/3 on its own connection to c's
 * backend (c itself is not used by the thread and may be used meanwhile).
 * After a failed renewal it retries every min(ttl/10, 200 ms) until the
 * lease's expiry; then, or at once when a renewal finds it is no longer the
 * owner, it calls lost(name, why, arg) and stops renewing. The thread starts
 * with all signals blocked. lease is copied (the caller keeps ownership).
 * Returns NULL on error. Stop with fl_watchdog_stop(). */
struct fl_watchdog *fl_watchdog_start(struct fl_client *c, const struct fl_lease *lease,
                                      fl_lost_fn lost, void *arg);

/* 0 while the lease is believed held; else the enum fl_loss reason. Also
 * reports FL_LOST_EXPIRED as soon as the monotonic clock passes the expiry,
 * even before the watchdog thread has run (after SIGSTOP/SIGCONT, say).
 * Thread-safe. */
int fl_watchdog_lost(struct fl_watchdog *w);

/* Stops and joins the thread, frees w, sets *w to NULL. If lease is not NULL
 * its expiry_ms and ttl_ms are updated from the last renewal. Accepts NULL. */
void fl_watchdog_stop(struct fl_watchdog **w, struct fl_lease *lease);

#endif

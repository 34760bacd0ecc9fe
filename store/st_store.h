/* st_store: the per-resource highest-token store. One small asynchronous
 * interface with backends behind an ops table (st_store_internal.h):
 * "memory" (tests, no durability), "file" (LMDB on local disk, durable,
 * group commit on a writer thread) and "etcd" (a shared store for several
 * proxies, group commit in etcd txns on a worker thread). The store never calls back from inside a request function: every
 * completion is queued, the store's notify fd becomes readable, and the
 * owner's event loop calls st_store_dispatch(), which runs the callbacks on
 * the loop thread. So the store needs no event library and never blocks the
 * loop on disk. Single owner thread: all functions but the backend's own
 * worker are called from the loop thread. */
#ifndef ST_STORE_H
#define ST_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct st_store;

enum st_store_backend { ST_STORE_MEMORY, ST_STORE_FILE, ST_STORE_ETCD };

/* How st_store_open() treats a file store that is not there (see
 * docs/operations.md, "Token store faults"):
 * RUN: a store that is missing or empty is created only when the marker
 *      file does not exist (a first start) or when cfg->floor is set; when
 *      the marker says a store was created before, the open is refused.
 * INIT: creates a new store; refused when one exists at path. */
enum st_store_mode { ST_OPEN_RUN, ST_OPEN_INIT };

/* Messages st_store_open() has for the operator's log (creation, floor
 * raised, marker written). level: 0 error, 1 warn, 2 info. Called from
 * st_store_open() only, on the caller's thread. */
typedef void (*st_store_log_fn)(void *arg, int level, const char *msg);

struct st_store_config {
    enum st_store_backend backend;
    const char *path;          /* directory for ST_STORE_FILE; borrowed during open */
    size_t map_size;           /* initial LMDB map in bytes; 0 = default (16 MiB) */
    size_t max_size;           /* the map grows up to this; 0 = default (64 GiB) */
    const char *marker;        /* file that remembers the store's identity (the
                                * proxy: "<path>.id" by default); NULL: none, a
                                * missing store is then always created */
    enum st_store_mode mode;
    uint64_t floor;            /* operator floor: every highest is at least this */
    const char *endpoints;     /* ST_STORE_ETCD: "host:port,..." (borrowed during open) */
    const char *prefix;        /* ST_STORE_ETCD: key prefix, e.g. "/fence/" (borrowed) */
    unsigned max_txn_ops;      /* ST_STORE_ETCD: etcd's --max-txn-ops; 0 = 128 */
    uint64_t timeout_ms;       /* ST_STORE_ETCD: deadline of one etcd call; 0 = 2000 */
    /* ST_STORE_ETCD, per-resource ownership (docs/safety.md, "Several
     * proxies"); 0 = the default in brackets. */
    uint64_t lease_ttl_ms;     /* the proxy's lease [10 s] */
    uint64_t margin_ms;        /* self-fencing and lock-delay margin [2 s] */
    uint64_t lock_delay_ms;    /* a new owner's wait when the last owner did not
                                * release cleanly: upstream_timeout + margin [62 s] */
    uint64_t handover_wait_ms; /* bounded wait for another proxy's resource [5 s] */
    uint64_t poll_ms;          /* hand-over polling interval [50 ms] */
    int tls;                   /* ST_STORE_ETCD: https to every member */
    const char *tls_ca, *tls_cert, *tls_key; /* PEM files (NULL: system store, no client
                                * certificate); borrowed during open */
    const char *owner_id;      /* shown as the owner in etcd (borrowed during open);
                                * NULL: "fenceproxy" */
    st_store_log_fn log;       /* may be NULL */
    void *log_arg;
};

/* Default map sizes of the file backend. */
#define ST_STORE_MAP_INITIAL ((size_t)16 << 20)
#define ST_STORE_MAP_MAX ((size_t)64 << 30)

/* The warning level of the fill ratio (used / max_size), in percent. */
#define ST_STORE_FILL_WARN_PCT 80

/* rc of an advance refused because the store is at its max_size and the
 * advance would add a new key: nothing changed, the store has not failed,
 * and advances of keys already stored go on. */
#define ST_STORE_EFULL (-2)

/* rc of a request the store could not serve now (etcd: no member answered
 * in time, no leader): nothing was acknowledged, the store has not failed
 * for good, and later requests try again. Callers answer 503 (fail closed,
 * never a local fallback). */
#define ST_STORE_EUNAVAIL (-3)

/* rc of a get that waited for a resource owned by another proxy (several
 * proxies over etcd) longer than the bounded hand-over wait: nothing
 * changed; callers answer 503 with Retry-After. */
#define ST_STORE_EBUSY (-4)

/* rc of an advance or set refused because this proxy no longer owns the
 * resource (its ownership was taken over or expired): nothing was raised.
 * Callers stop using their cached highest and get (take) the resource
 * again before admitting more. */
#define ST_STORE_ELOST (-5)

/* Completion: rc 0 and the resource's highest token after the operation, or
 * rc -1 when the store failed (nothing was made durable; fail closed), or
 * rc ST_STORE_EFULL (advance of a new key in a full store), or
 * rc ST_STORE_EUNAVAIL (the store is unreachable for now). arg is
 * the caller's, passed back untouched. Called from st_store_dispatch() only. */
typedef void (*st_store_cb)(void *arg, int rc, uint64_t highest);

/* Called from st_store_dispatch() once per finished commit: how many advances
 * it held and how long the commit (write + fsync) took. */
typedef void (*st_store_commit_hook)(void *arg, size_t batch, double seconds);

/* Opens a store. Returns it, or NULL with a message in err. Free with
 * st_store_close(). */
struct st_store *st_store_open(const struct st_store_config *cfg,
                                 char *err, size_t errlen);

/* Waits for queued work to finish (bounded), stops the worker, frees the
 * store and NULLs *s. Callbacks still queued are dropped without being
 * called. Accepts NULL and *s == NULL. */
void st_store_close(struct st_store **s);

/* A file descriptor that is readable when completions are waiting; the loop
 * watches it and then calls st_store_dispatch(). Owned by the store. */
int st_store_notify_fd(const struct st_store *s);

/* Runs every completion callback queued when it starts (ones queued by those
 * callbacks wait for the next call; the fd is readable again). Call on the
 * loop thread. A callback may call st_store_get/advance, not
 * st_store_close. */
void st_store_dispatch(struct st_store *s);

/* Reads the highest token of key (klen bytes, copied). cb runs later from
 * dispatch with highest = 0 for a key never seen. Requests are served in
 * submission order: a get sees every advance submitted before it, and the
 * highest it reports is durable (file backend: the get runs on the writer
 * thread, in the batch of the advances before it). Keys are any bytes; the
 * file backend stores keys over its 511-byte limit under a hashed form.
 * Aborts the process if it cannot allocate the request (a request that can
 * be neither served nor answered would hang its client). */
void st_store_get(struct st_store *s, const char *key, size_t klen,
                   st_store_cb cb, void *arg);

/* Raises the highest token of key to max(stored, token), durably for the file
 * backend (fsync'd before cb runs with rc 0); cb gets the highest after the
 * advance, which is > token when a higher one was already stored. Advances that arrive while a
 * commit is under way are committed together in the next one (group commit).
 * An I/O error fails the store for good: this and every later call complete
 * with rc -1. */
void st_store_advance(struct st_store *s, const char *key, size_t klen,
                       uint64_t token, st_store_cb cb, void *arg);

/* Ownership (several proxies sharing one etcd store; the memory and file
 * backends always own everything, so release completes at once, the
 * deadline never comes and the generation never changes).
 *
 * A get takes ownership of key first: it completes once this proxy owns key
 * (and, when the last owner did not release it cleanly, after the
 * lock-delay), or with ST_STORE_EBUSY after the bounded hand-over wait.
 * While it owns key the caller's cached highest is authoritative, as long as
 * the generation has not changed and the deadline has not come. */

/* Whether other proxies may share the store (ownership is real: etcd). */
int st_store_shared(const struct st_store *s);

/* Gives key's ownership up cleanly; call only when nothing of this proxy is
 * in flight for key (the next owner then need not wait the lock-delay). cb
 * (may be NULL) runs from dispatch with rc 0, or ST_STORE_EUNAVAIL (the
 * store keeps trying in the background). */
void st_store_release(struct st_store *s, const char *key, size_t klen, st_store_cb cb,
                      void *arg);

/* Called from dispatch when another proxy asks for key, which this proxy
 * owns: the owner stops admitting for key, lets what is in flight finish,
 * then calls st_store_release(). Asked once per ownership. */
typedef void (*st_store_ask_fn)(void *arg, const char *key, size_t klen);

/* Registers the hand-over hook (one; NULL to remove). arg is borrowed. */
void st_store_set_ask_hook(struct st_store *s, st_store_ask_fn fn, void *arg);

/* The CLOCK_MONOTONIC time in ms (ec_now_ms's clock) at which this proxy's
 * ownership may lapse: at or after it nothing fenced may be admitted or
 * relayed (self-fencing: last keepalive sent + lease TTL - margin).
 * INT64_MAX when the backend has no ownership. Any thread. */
int64_t st_store_fence_at(const struct st_store *s);

/* A number that changes whenever this proxy lost every ownership at once
 * (its lease expired): what was loaded before must be got again. Any
 * thread. */
uint64_t st_store_owner_gen(const struct st_store *s);

/* Sets the highest token of key to exactly token, lower or higher than the
 * stored one (the operator's reset: `fenceproxy tokens set`), with the same
 * durability as an advance (fsync'd before cb runs with rc 0) and the same
 * record checksum. cb gets the highest after the set: token, or the store's
 * operator floor when token is below it (the floor still holds). Served in
 * submission order with gets and advances (an advance submitted after it
 * compares with the new value). A new key in a full store completes with
 * ST_STORE_EFULL; an I/O error fails the store like an advance's. */
void st_store_set(struct st_store *s, const char *key, size_t klen, uint64_t token,
                  st_store_cb cb, void *arg);

/* One resource of a listing (st_store_list). Borrowed until the callback
 * returns. */
struct st_store_entry {
    const char *key; /* klen bytes, then a NUL */
    size_t klen;
    uint64_t highest; /* durable, at least the operator floor */
    const char *hash; /* NULL; or, file backend, a key over its 511-byte
                       * limit stored in its shortened form: key holds only
                       * its first ST_STORE_KEY_KEPT bytes and hash the 32
                       * hex digits of the two FNV-1a hashes of the whole key */
};

/* A page of a listing: entries in the backend's key order (bytewise on the
 * stored key: the memory and file backends order raw key bytes; etcd orders
 * the escaped key, the same order for keys without NUL). */
struct st_store_page {
    const struct st_store_entry *e;
    size_t n;
    int truncated;    /* more keys may follow: ask again with after = next */
    const char *next; /* when truncated: the cursor (next_len opaque bytes,
                       * the stored form of the last key looked at) */
    size_t next_len;
};

/* Listing completion: rc 0 and the page (borrowed until it returns), or rc
 * -1 (the store failed; page NULL) or ST_STORE_EUNAVAIL (unreachable, or
 * out of memory for this listing; page NULL). Called from dispatch only. */
typedef void (*st_store_list_cb)(void *arg, int rc, const struct st_store_page *page);

/* Bounds of one listing: entries (a larger limit is lowered to it), key
 * bytes (a page stops once its keys hold this many; at least one entry),
 * records looked at (file backend: keys past the prefix's first
 * ST_STORE_KEY_KEPT bytes that do not match it). A page cut by a bound is
 * truncated with a cursor, so paging on loses nothing. */
#define ST_STORE_LIST_MAX   10000
#define ST_STORE_LIST_BYTES ((size_t)1 << 20)
#define ST_STORE_LIST_SCAN  100000

/* The key bytes the file backend keeps of a key over its limit. */
#define ST_STORE_KEY_KEPT 400

/* Lists the stored resources whose key starts with prefix (plen bytes,
 * copied; 0: all), in key order, after the cursor after (alen bytes, copied;
 * a page's next, or NULL / 0 from the start), at most limit (1..
 * ST_STORE_LIST_MAX) of them, with their durable highest tokens. Served in
 * submission order with gets and advances: it sees every advance submitted
 * before it, committed (file backend: on the writer thread, in the batch of
 * the advances before it; etcd: one range on the worker after them). A key
 * the store never saw is not listed (its highest is the floor). A file
 * store's key stored hashed is listed when its kept bytes match the
 * prefix's first ST_STORE_KEY_KEPT bytes (the rest cannot be compared).
 * Pages taken one after another are consistent per key, not one snapshot. */
void st_store_list(struct st_store *s, const char *prefix, size_t plen, const char *after,
                   size_t alen, size_t limit, st_store_list_cb cb, void *arg);

/* Whether the store has failed (an I/O error happened). */
int st_store_failed(const struct st_store *s);

/* The first error that failed the store, as text for the log (owned by the
 * store, valid until st_store_close()), or NULL while it has not failed. */
const char *st_store_error(const struct st_store *s);

/* The file store's fill level: bytes in use and the maximum (max_size);
 * both 0 for the memory backend. Any thread. */
void st_store_fill(const struct st_store *s, uint64_t *used, uint64_t *max);

/* Why the store could not be reached the last time it tried (etcd: no
 * member answered), as text copied into buf; returns 1 while unreachable,
 * 0 once a request succeeded again (buf then ""). Any thread. */
int st_store_unreachable(const struct st_store *s, char *buf, size_t len);

/* Whether the last advance of a new key was refused for lack of room. */
int st_store_full(const struct st_store *s);

/* Tells the owner when the fill level crossed ST_STORE_FILL_WARN_PCT: returns
 * 1 the first time it is called after the level rose to or above it, -1 the
 * first time after it fell below again, else 0 (a latch, so the warning is
 * logged once per crossing). Loop thread. */
int st_store_fill_crossed(struct st_store *s);

/* Checks the file store described by cfg (opened read-only; never changes
 * it) and writes a report to out: the marker, the header, the file size
 * against the header, every record's checksum. Returns 0 when clean, 1 when
 * damaged or missing, -1 when the check itself could not run (message on
 * out). Safe to run while a proxy uses the store. */
int st_store_check(const struct st_store_config *cfg, FILE *out);

/* Registers the commit hook (one; NULL to remove). arg is borrowed. */
void st_store_set_commit_hook(struct st_store *s, st_store_commit_hook hook,
                               void *arg);

#endif

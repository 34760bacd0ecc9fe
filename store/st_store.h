/* st_store: the per-resource highest-token store. One small asynchronous
 * interface with backends behind an ops table (st_store_internal.h):
 * "memory" (tests, no durability) and "file" (LMDB on local disk, durable,
 * group commit on a writer thread). Later backends (Redis, etcd) plug in the
 * same way. The store never calls back from inside a request function: every
 * completion is queued, the store's notify fd becomes readable, and the
 * owner's event loop calls st_store_dispatch(), which runs the callbacks on
 * the loop thread. So the store needs no event library and never blocks the
 * loop on disk. Single owner thread: all functions but the backend's own
 * worker are called from the loop thread. */
#ifndef ST_STORE_H
#define ST_STORE_H

#include <stddef.h>
#include <stdint.h>

struct st_store;

enum st_store_backend { ST_STORE_MEMORY, ST_STORE_FILE };

struct st_store_config {
    enum st_store_backend backend;
    const char *path;          /* directory for ST_STORE_FILE; borrowed during open */
    size_t map_size;           /* LMDB map size in bytes; 0 = default (1 GiB) */
};

/* Completion: rc 0 and the resource's highest token after the operation, or
 * rc -1 when the store failed (nothing was made durable; fail closed). arg is
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

/* Whether the store has failed (an I/O error happened). */
int st_store_failed(const struct st_store *s);

/* The first error that failed the store, as text for the log (owned by the
 * store, valid until st_store_close()), or NULL while it has not failed. */
const char *st_store_error(const struct st_store *s);

/* Registers the commit hook (one; NULL to remove). arg is borrowed. */
void st_store_set_commit_hook(struct st_store *s, st_store_commit_hook hook,
                               void *arg);

#endif

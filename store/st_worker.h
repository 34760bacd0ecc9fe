/* st_worker: the one thread a store backend serves its requests on. The
 * loop appends requests; the thread takes everything queued at once (the
 * group commit: advances that arrive while a batch is being served go
 * together into the next one) and hands the batch to the backend's run
 * function, which completes every request of it. Used by the file and etcd
 * backends. */
#ifndef ST_WORKER_H
#define ST_WORKER_H

#include <stdint.h>

struct st_store_req;
struct st_worker;

/* Serves one batch (a list linked by next; owned) and completes it.
 * Worker thread. */
typedef void (*st_worker_run_fn)(void *arg, struct st_store_req *batch);

/* Timed work of the backend between batches (lease keepalives, retries):
 * called on the worker thread after every batch and whenever the time it
 * asked for has come; returns the milliseconds until it wants to be called
 * again, or -1 for "only after the next batch". */
typedef int64_t (*st_worker_tick_fn)(void *arg);

/* Starts the thread; run, tick (may be NULL) and arg are borrowed until
 * st_worker_stop(). NULL when the thread cannot start. */
struct st_worker *st_worker_start(st_worker_run_fn run, void *arg);
struct st_worker *st_worker_start_ticking(st_worker_run_fn run, st_worker_tick_fn tick,
                                          void *arg);

/* Queues req (owned by the worker from now on). Loop thread. */
void st_worker_submit(struct st_worker *w, struct st_store_req *req);

/* Serves what is queued, stops the thread and frees the worker within
 * wait_s seconds: 0 and *w NULL. -1 when it did not stop in time: the
 * thread is left running (detached, leaked), so run's arg must stay alive.
 * Accepts NULL and *w NULL. */
int st_worker_stop(struct st_worker **w, unsigned wait_s);

#endif

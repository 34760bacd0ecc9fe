/* pol_store_internal: the seam between the generic store (pol_store.c) and
 * its backends. pol_store.c turns each public call into one request record
 * and hands it to the backend's submit op; the backend answers by handing the
 * record back through pol_store_complete*(), from any thread. The generic part
 * owns the completion queue and the notify fd, so a backend never calls a
 * user callback itself. Only pol_store*.c include this file. */
#ifndef POL_STORE_INTERNAL_H
#define POL_STORE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "pol_store.h"

enum pol_req_kind {
    POL_REQ_GET,
    POL_REQ_ADVANCE,
    POL_REQ_COMMIT  /* a commit report for the hook; no key, no cb */
};

/* One request, from submission to its callback. The backend owns it between
 * submit and complete; the generic part owns it before and after. */
struct pol_store_req {
    struct pol_store_req *next;
    enum pol_req_kind kind;
    pol_store_cb cb;
    void *arg;
    int rc;            /* result: 0 or -1 */
    uint64_t token;    /* ADVANCE: the requested token */
    uint64_t highest;  /* result: the highest after the operation */
    size_t batch;      /* COMMIT: advances in the commit */
    double seconds;    /* COMMIT: write + fsync time */
    size_t klen;
    char key[];        /* klen bytes, then a NUL */
};

struct pol_store_ops {
    const char *name;
    /* Sets up the backend (pol_store_set_impl()). Returns 0, or -1 with a
     * message in err. Called once, from pol_store_open(). */
    int (*open)(struct pol_store *s, const struct pol_store_config *cfg, char *err,
                size_t errlen);
    /* Takes ownership of req (GET or ADVANCE) and completes it later or at
     * once through pol_store_complete*(). Must not call back. Loop thread. */
    void (*submit)(struct pol_store *s, struct pol_store_req *req);
    /* Finishes submitted work (bounded), completes it, frees the backend.
     * Returns 0, or -1 when work could not be finished in time: the backend
     * then keeps its state alive (leaked) and the store must not be freed. */
    int (*close)(struct pol_store *s);
};

extern const struct pol_store_ops pol_store_memory_ops;
extern const struct pol_store_ops pol_store_lmdb_ops;

/* The backend's private state. */
void pol_store_set_impl(struct pol_store *s, void *impl);
void *pol_store_impl(const struct pol_store *s);

/* Hands req (owned by the caller until now) to the completion queue; its
 * callback runs from the next pol_store_dispatch(). Any thread. */
void pol_store_complete(struct pol_store *s, struct pol_store_req *req);

/* Same for a NULL-terminated list linked by next: one lock, one wakeup. */
void pol_store_complete_list(struct pol_store *s, struct pol_store_req *head);

/* Marks the store failed for good; the first message is kept for
 * pol_store_error(). Any thread. */
void pol_store_fail(struct pol_store *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A commit report for the hook, or NULL when out of memory (the report is
 * only statistics, so it may be dropped). Any thread. */
struct pol_store_req *pol_store_req_commit(size_t batch, double seconds);

#endif

/* st_store_internal: the seam between the generic store (st_store.c) and
 * its backends. st_store.c turns each public call into one request record
 * and hands it to the backend's submit op; the backend answers by handing the
 * record back through st_store_complete*(), from any thread. The generic part
 * owns the completion queue and the notify fd, so a backend never calls a
 * user callback itself. Only st_store*.c include this file. */
#ifndef ST_STORE_INTERNAL_H
#define ST_STORE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "st_store.h"

enum st_req_kind {
    ST_REQ_GET,
    ST_REQ_ADVANCE,
    ST_REQ_SET,    /* the operator's reset: token replaces the stored value */
    ST_REQ_LIST,   /* st_store_list: key is the prefix; list_cb, not cb */
    ST_REQ_COMMIT, /* a commit report for the hook; no key, no cb */
    ST_REQ_RELEASE, /* give up the ownership of key (st_store_release) */
    ST_REQ_ASK     /* from the backend: another proxy asks for key (the ask hook) */
};

/* One request, from submission to its callback. The backend owns it between
 * submit and complete; the generic part owns it before and after. */
struct st_store_req {
    struct st_store_req *next;
    enum st_req_kind kind;
    st_store_cb cb;
    void *arg;
    int rc;            /* result: 0, -1, ST_STORE_EFULL or ST_STORE_EUNAVAIL */
    uint64_t token;    /* ADVANCE, SET: the requested token */
    uint64_t highest;  /* result: the highest after the operation */
    size_t batch;      /* COMMIT: advances in the commit */
    double seconds;    /* COMMIT: write + fsync time */
    struct st_store_list_res *list; /* LIST: the request and its page */
    size_t klen;
    char key[];        /* klen bytes, then a NUL */
};

/* A LIST request's arguments and result (owned by its request; the generic
 * part frees it). The backend fills it with st_store_list_add() and
 * st_store_list_more(). */
struct st_store_list_res {
    st_store_list_cb cb;
    const char *after;        /* alen bytes (then a NUL) */
    size_t alen;
    size_t limit;             /* 1..ST_STORE_LIST_MAX */
    struct st_store_entry *e; /* keys and hashes malloc'd */
    size_t n, cap, bytes;
    int truncated;
    char *next;
    size_t next_len;
};

struct st_store_ops {
    const char *name;
    /* Sets up the backend (st_store_set_impl()). Returns 0, or -1 with a
     * message in err. Called once, from st_store_open(). */
    int (*open)(struct st_store *s, const struct st_store_config *cfg, char *err,
                size_t errlen);
    /* Takes ownership of req (GET, ADVANCE, SET or LIST) and completes it later or at
     * once through st_store_complete*(). Must not call back. Loop thread. */
    void (*submit)(struct st_store *s, struct st_store_req *req);
    /* Non-zero when the backend has ownership (ST_REQ_RELEASE goes to
     * submit); otherwise st_store_release() completes at once. */
    int owns;
    /* Finishes submitted work (bounded), completes it, frees the backend.
     * Returns 0, or -1 when work could not be finished in time: the backend
     * then keeps its state alive (leaked) and the store must not be freed. */
    int (*close)(struct st_store *s);
};

extern const struct st_store_ops st_store_memory_ops;
extern const struct st_store_ops st_store_lmdb_ops;
extern const struct st_store_ops st_store_etcd_ops;

/* The backend's private state. */
void st_store_set_impl(struct st_store *s, void *impl);
void *st_store_impl(const struct st_store *s);

/* Hands req (owned by the caller until now) to the completion queue; its
 * callback runs from the next st_store_dispatch(). Any thread. */
void st_store_complete(struct st_store *s, struct st_store_req *req);

/* Same for a NULL-terminated list linked by next: one lock, one wakeup. */
void st_store_complete_list(struct st_store *s, struct st_store_req *head);

/* Marks the store failed for good; the first message is kept for
 * st_store_error(). Any thread. */
void st_store_fail(struct st_store *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The backend reports whether it reaches its server: why not (copied), or
 * NULL once it does again. Any thread. */
void st_store_set_unreachable(struct st_store *s, const char *why);

/* The backend reports its fill level and whether it is full. Any thread. */
void st_store_set_fill(struct st_store *s, uint64_t used, uint64_t max, int full);

/* The backend reports its ownership deadline and generation
 * (st_store_fence_at, st_store_owner_gen). Any thread. */
void st_store_set_owner(struct st_store *s, int64_t fence_at, uint64_t gen);

/* A request record of kind for key (copied), for a backend that tells the
 * loop something (ST_REQ_ASK). Aborts when out of memory. */
struct st_store_req *st_store_req_new(enum st_req_kind kind, const char *key, size_t klen);

/* Appends an entry to a LIST request's page (key and hash copied; hash may
 * be NULL). Returns 0, or -1 out of memory. Worker or loop thread. */
int st_store_list_add(struct st_store_req *r, const char *key, size_t klen, uint64_t highest,
                      const char *hash);

/* Whether the page is full (limit entries, or ST_STORE_LIST_BYTES of keys):
 * the backend then stops and calls st_store_list_more() if a key follows. */
int st_store_list_full(const struct st_store_req *r);

/* Marks the page truncated with the cursor next (len bytes, copied: the
 * stored form of the last key looked at). Returns 0 or -1 out of memory. */
int st_store_list_more(struct st_store_req *r, const char *next, size_t len);

/* Empties the page (a batch served again after a failed attempt). */
void st_store_list_reset(struct st_store_req *r);

/* The file backend's check (st_store_check()). */
int st_store_lmdb_check(const struct st_store_config *cfg, FILE *out);

/* A commit report for the hook, or NULL when out of memory (the report is
 * only statistics, so it may be dropped). Any thread. */
struct st_store_req *st_store_req_commit(size_t batch, double seconds);

#endif

/* fl_backend.h: the seam between libfencelock's generic client (fl_client.c)
 * and one lock backend. A backend is one .c file exporting one ops table;
 * nothing else knows which backend is in use. Backends do one round trip per
 * operation, reconnect lazily after an I/O error, and report through
 * enum fl_result plus a message in err (which names the address). */
#ifndef FL_BACKEND_H
#define FL_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "fencelock.h"

struct fl_backend; /* backend-private state */

struct fl_backend_ops {
    const char *scheme; /* URL scheme, e.g. "redis" */

    /* Parses url (borrowed) and returns new state without doing I/O, or NULL
     * with a message in err. */
    struct fl_backend *(*open)(const char *url, char *err, size_t errlen);

    /* Connects if not connected, using timeout_ms for connect and later
     * commands. FL_OK or FL_ERR_BACKEND. */
    int (*connect)(struct fl_backend *b, uint64_t timeout_ms, char *err, size_t errlen);

    /* Atomically: if name is free, hold it for owner for ttl_ms and issue the
     * next token into *token; FL_ERR_NOT_ACQUIRED if held. */
    int (*acquire)(struct fl_backend *b, const char *name, const char *owner, uint64_t ttl_ms,
                   uint64_t *token, char *err, size_t errlen);

    /* Compare-and-act on owner: FL_OK or FL_ERR_NOT_OWNER. */
    int (*renew)(struct fl_backend *b, const char *name, const char *owner, uint64_t ttl_ms,
                 char *err, size_t errlen);
    int (*release)(struct fl_backend *b, const char *name, const char *owner, char *err,
                   size_t errlen);

    int (*status)(struct fl_backend *b, const char *name, struct fl_lock_status *st, char *err,
                  size_t errlen);

    /* "host:port", borrowed for the life of b. */
    const char *(*address)(const struct fl_backend *b);

    /* Closes and frees b. Accepts NULL. */
    void (*free)(struct fl_backend *b);
};

/* The Redis backend (fl_redis.c). */
extern const struct fl_backend_ops fl_redis_ops;

#endif

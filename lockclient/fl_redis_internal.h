/* fl_redis_internal.h: one Redis server as a node of a Redlock, for
 * fl_redlock.c only. The functions are fl_redis.c's own (same keys, same
 * scripts, same lazy reconnect), so hiredis stays in fl_redis.c. A node is
 * opened from a redis:// URL; free it with fl_redis_node_free(). Every call
 * is one round trip of at most the timeout given to fl_redis_node_connect()
 * (fl_redis_node_wait: plus its wait) and returns an enum fl_result with a
 * message naming the node in err. */
#ifndef FL_REDIS_INTERNAL_H
#define FL_REDIS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

struct fl_redis_node;
struct fl_lock_status;

/* Parses url (borrowed), no I/O. NULL with a message in err. */
struct fl_redis_node *fl_redis_node_open(const char *url, char *err, size_t errlen);
/* Closes and frees n. Accepts NULL. */
void fl_redis_node_free(struct fl_redis_node *n);
/* Sets the round trip timeout and connects if not connected. */
int fl_redis_node_connect(struct fl_redis_node *n, uint64_t timeout_ms, char *err, size_t errlen);
/* "host:port", borrowed for the life of n. */
const char *fl_redis_node_address(const struct fl_redis_node *n);
/* 1 (once) if the last call failed because the server had closed the
 * connection (a restart): a retry on a fresh connection may succeed. A
 * timeout is not stale: a retry would only wait again. */
int fl_redis_node_stale(struct fl_redis_node *n);
/* One SET NX PX with the per-node token max(last + 1, TIME in us): FL_OK
 * with *token, or FL_ERR_NOT_ACQUIRED with the holder's *pttl_ms (0 if none). */
int fl_redis_node_try(struct fl_redis_node *n, const char *name, const char *owner, uint64_t ttl_ms,
                      uint64_t *token, int64_t *pttl_ms, char *err, size_t errlen);
/* Raises the node's token for name to token if owner holds name there:
 * FL_OK, or FL_ERR_NOT_OWNER (nothing written). */
int fl_redis_node_raise(struct fl_redis_node *n, const char *name, const char *owner,
                        uint64_t token, char *err, size_t errlen);
/* PEXPIRE if owner holds name: FL_OK or FL_ERR_NOT_OWNER. */
int fl_redis_node_renew(struct fl_redis_node *n, const char *name, const char *owner,
                        uint64_t ttl_ms, char *err, size_t errlen);
/* DEL (and wake one waiter) if owner holds name: FL_OK or FL_ERR_NOT_OWNER. */
int fl_redis_node_release(struct fl_redis_node *n, const char *name, const char *owner, char *err,
                          size_t errlen);
/* Owner, PTTL and last token of name on this node. */
int fl_redis_node_status(struct fl_redis_node *n, const char *name, struct fl_lock_status *st,
                         char *err, size_t errlen);
/* Blocks until a release on this node wakes it or wait_ms (> 0) passed. */
int fl_redis_node_wait(struct fl_redis_node *n, const char *name, int64_t wait_ms, char *err,
                       size_t errlen);

#endif

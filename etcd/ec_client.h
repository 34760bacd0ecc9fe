/* ec_client: a small synchronous client for etcd's v3 JSON gateway
 * (/v3/kv/range, put, deleterange, txn, /v3/lease/grant, keepalive, revoke,
 * timetolive, /v3/watch) over HTTP/1.1. The only module in the project that
 * includes libcurl or json-c. It hides the gateway's encoding: keys and
 * values are base64 on the wire and plain bytes here, 64-bit integers travel
 * as strings, and a field missing from an answer means zero/false.
 *
 * Threads: an ec_client is confined to one thread (one per thread; it owns
 * two curl handles, one for requests and one for a watch, each keeping its
 * connection alive). Different clients may be used from different threads at
 * once. Calls block until their deadline (CLOCK_MONOTONIC ms, see
 * ec_now_ms) at most.
 *
 * Members: the client is given a list of endpoints and tries them in turn
 * when one does not answer (connection refused, reset, timed out, or an
 * "unavailable" answer such as no leader), starting from the last one that
 * worked; each endpoint is tried at most once per call. A call that timed out
 * may still have been applied: callers send requests that are safe to repeat
 * (compare-and-put on create revision, say). */
#ifndef EC_CLIENT_H
#define EC_CLIENT_H

#include <stddef.h>
#include <stdint.h>

/* Results. */
enum ec_result {
    EC_OK = 0,
    EC_ERR_SERVER = -1,      /* a member answered with an error (ec_client_code) */
    EC_ERR_UNAVAILABLE = -2, /* no member answered before the deadline */
    EC_ERR_INTERNAL = -3,    /* out of memory, malformed answer, bad argument */
};

/* gRPC codes etcd answers with (ec_client_code). */
#define EC_CODE_NOT_FOUND 5 /* e.g. "requested lease not found" */

struct ec_client;

/* One key-value pair. key and value are NUL-terminated copies (value may
 * hold NULs; value_len counts them), owned by the containing ec_kvs. */
struct ec_kv {
    char *key;
    char *value;
    size_t value_len;
    int64_t create_revision, mod_revision, version, lease;
};

/* The result of a range. Free with ec_kvs_free. */
struct ec_kvs {
    struct ec_kv *kv;
    size_t n;
    int64_t count; /* keys in the range (may exceed n with a limit) */
    int more;
};

/* A range (also the key part of a delete or a put). With prefix set,
 * range_end is ignored and every key starting with key is meant. */
struct ec_range_req {
    const char *key;
    const char *range_end; /* NULL: key alone */
    int prefix;
    int64_t limit;               /* 0: no limit */
    int sort_create;             /* 0 none, 1 ascending, -1 descending create revision */
    int64_t max_create_revision; /* 0: no bound */
    int count_only, keys_only;
};

enum ec_cmp_target {
    EC_TARGET_CREATE,
    EC_TARGET_MOD,
    EC_TARGET_VERSION,
    EC_TARGET_LEASE,
    EC_TARGET_VALUE /* bytewise against value; false on a missing key */
};
enum ec_cmp_op { EC_EQUAL, EC_GREATER, EC_LESS, EC_NOT_EQUAL };

/* One compare of a txn: target(key) op n (or op value for EC_TARGET_VALUE). */
struct ec_cmp {
    const char *key;
    enum ec_cmp_target target;
    enum ec_cmp_op op;
    int64_t n;
    const void *value; /* EC_TARGET_VALUE: value_len bytes */
    size_t value_len;
};

enum ec_op_type { EC_OP_RANGE, EC_OP_PUT, EC_OP_DELETE, EC_OP_TXN };

struct ec_txn_req;

/* One operation of a txn. Put uses range.key, value and lease; a nested txn
 * (EC_OP_TXN) uses txn (borrowed). etcd limits the ops of each level to its
 * --max-txn-ops minus the ops of the levels above (128 by default). */
struct ec_op {
    enum ec_op_type type;
    struct ec_range_req range;
    const void *value;
    size_t value_len;
    int64_t lease;
    const struct ec_txn_req *txn;
};

/* A txn as data, for nesting (ec_txn_nested). Arrays borrowed. */
struct ec_txn_req {
    const struct ec_cmp *cmp;
    size_t ncmp;
    const struct ec_op *then, *els;
    size_t nthen, nelse;
};

struct ec_txn_result;

struct ec_op_result {
    struct ec_kvs kvs;           /* EC_OP_RANGE */
    int64_t deleted;             /* EC_OP_DELETE */
    struct ec_txn_result *txn;   /* EC_OP_TXN: the nested result (owned by the
                                  * containing result) */
};

/* The result of a txn: the responses of the branch taken. Free with
 * ec_txn_result_free. */
struct ec_txn_result {
    int succeeded;
    int64_t revision; /* header revision */
    struct ec_op_result *res;
    size_t n;
};

/* Monotonic clock in ms (the clock of every deadline here). */
int64_t ec_now_ms(void);

/* A client for endpoints "host:port[,host:port...]" (copied). Does no I/O.
 * NULL with a message in err on a bad list or no memory. Free with
 * ec_client_free. */
struct ec_client *ec_client_new(const char *endpoints, char *err, size_t errlen);

/* Speaks https to every member from now on, verifying each against ca (a
 * PEM file; NULL: the system store) and its name, showing cert and key
 * (PEM files, both or neither) when a member asks for a client
 * certificate. Paths are copied; the files are read by each connection.
 * Returns 0, or -1 with a message in err (a file not readable). */
int ec_client_set_tls(struct ec_client *c, const char *ca, const char *cert, const char *key,
                      char *err, size_t errlen);

/* Closes the connections, frees c, sets *c to NULL. Accepts NULL. */
void ec_client_free(struct ec_client **c);

/* Message of the last failed call (names the member(s) tried). Borrowed until
 * the next call on c. */
const char *ec_client_error(const struct ec_client *c);

/* gRPC code of the last EC_ERR_SERVER answer, 0 otherwise. */
int ec_client_code(const struct ec_client *c);

/* The endpoint list as given, "host:port,..." (borrowed for the life of c). */
const char *ec_client_endpoints(const struct ec_client *c);

/* Range. *out is filled (free with ec_kvs_free, also after an error);
 * *revision (if not NULL) gets the header revision. */
int ec_range(struct ec_client *c, const struct ec_range_req *q, int64_t deadline_ms,
             struct ec_kvs *out, int64_t *revision);
void ec_kvs_free(struct ec_kvs *r);

/* Puts key = value (value_len bytes) with lease (0: none). *revision (if not
 * NULL) gets the revision of the put. */
int ec_put(struct ec_client *c, const char *key, const void *value, size_t value_len,
           int64_t lease, int64_t deadline_ms, int64_t *revision);

/* Deletes the keys of q (key, range_end, prefix). *deleted if not NULL. */
int ec_delete(struct ec_client *c, const struct ec_range_req *q, int64_t deadline_ms,
              int64_t *deleted);

/* Txn: if all of cmp hold, runs then[], else els[]. *out is filled (free with
 * ec_txn_result_free, also after an error). */
int ec_txn(struct ec_client *c, const struct ec_cmp *cmp, size_t ncmp, const struct ec_op *then,
           size_t nthen, const struct ec_op *els, size_t nelse, int64_t deadline_ms,
           struct ec_txn_result *out);
void ec_txn_result_free(struct ec_txn_result *r);

/* The same txn given as one ec_txn_req (whose ops may be nested txns). */
int ec_txn_nested(struct ec_client *c, const struct ec_txn_req *q, int64_t deadline_ms,
                  struct ec_txn_result *out);

/* Grants a lease of ttl_s seconds: *id and *ttl_out (what the server
 * granted, it may raise a small TTL). */
int ec_lease_grant(struct ec_client *c, int64_t ttl_s, int64_t deadline_ms, int64_t *id,
                   int64_t *ttl_out);

/* One keepalive (one POST; a streaming keepalive over HTTP/1.1 does not
 * work). *ttl_out is the renewed TTL in seconds, or 0 when the lease no
 * longer exists (the answer then has no TTL). */
int ec_lease_keepalive(struct ec_client *c, int64_t id, int64_t deadline_ms, int64_t *ttl_out);

/* Revokes the lease (its keys are deleted). EC_ERR_SERVER with code
 * EC_CODE_NOT_FOUND if it is gone already. */
int ec_lease_revoke(struct ec_client *c, int64_t id, int64_t deadline_ms);

/* Remaining TTL of the lease in whole seconds (0: less than one), -1 if
 * expired or unknown. */
int ec_lease_timetolive(struct ec_client *c, int64_t id, int64_t deadline_ms, int64_t *ttl_out);

#define EC_WATCH_PUT    1
#define EC_WATCH_DELETE 2

/* Watches key from start_rev (> 0: events since then are replayed, so
 * nothing between a read at start_rev - 1 and the watch is missed) for the
 * event kinds in mask. Returns EC_OK with *fired = 1 when an event arrived
 * (or the server cancelled the watch, e.g. after a compaction: re-read the
 * state), or EC_OK with *fired = 0 at the deadline. A member that drops the
 * connection is replaced by the next one, same start_rev. Uses the client's
 * watch connection (one watch per connection), closed after each event. */
int ec_watch(struct ec_client *c, const char *key, int64_t start_rev, int mask,
             int64_t deadline_ms, int *fired);

#endif

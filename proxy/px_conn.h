/* px_conn: one client connection and the request it is serving: parsing the
 * head, the fencing decision, borrowing an upstream connection, streaming the
 * body both ways with backpressure, and the response. Loop thread only. */
#ifndef PX_CONN_H
#define PX_CONN_H

#include <sys/socket.h>

#include <stddef.h>
#include <stdint.h>

struct px_ctx;

/* A connection's states. What holds in each: */
enum px_conn_state {
    /* Reading a request head: no request. The timer runs the idle
     * deadline until the first byte, then the head deadline. */
    C_HEAD,
    /* A parsed request waits for the fence (the store or the ordering
     * gate); nothing of it has gone upstream, the client is not read. */
    C_DECIDE,
    /* Admitted; queued for an upstream connection (max_upstream_connections,
     * under upstream_queue_timeout), or a new one is being opened under the
     * connect deadline with the head queued on it. */
    C_CONNECT,
    /* The exchange runs: the request body goes up, the response comes
     * down. The upstream client owns the upstream deadlines. */
    C_FORWARD,
    /* The last response is being written; then the write side is shut. No
     * request. */
    C_CLOSING,
    /* Write side shut; input is discarded for a moment (lingering close). */
    C_LINGER,
    /* Closed: nothing runs but the kick event, which frees it. */
    C_DEAD,
    C_COUNT
};

/* The transition table: 1 when a connection may go from `from` to `to`. */
int px_conn_state_legal(enum px_conn_state from, enum px_conn_state to);
const char *px_conn_state_name(enum px_conn_state s);

/* Checks one transition as every state change does: 0 when legal; an
 * illegal one is logged for connection id/peer and, in debug builds
 * (no NDEBUG), aborts the process; release builds return -1. */
int px_conn_state_check(uint64_t id, const char *peer, enum px_conn_state from,
                        enum px_conn_state to);
struct px_conn_set;

/* The set of client connections of a context (ctx->conns). Free with
 * px_conn_set_free() once every connection is gone (px_conn_close_all() and
 * one loop iteration); it NULLs *set. */
struct px_conn_set *px_conn_set_new(void);
void px_conn_set_free(struct px_conn_set **set);

/* Client connections open now (closing ones until reaped included). */
size_t px_conn_count(const struct px_ctx *ctx);

/* Serves a freshly accepted socket; takes ownership of fd (closed on every
 * path). Over max_connections it answers 503 and closes. */
void px_conn_accept(struct px_ctx *ctx, int fd, const struct sockaddr *sa, socklen_t salen);

/* Graceful stop: closes idle connections now and makes the busy ones close
 * after their current response. */
void px_conn_drain_all(struct px_ctx *ctx);

/* Closes every connection at once (end of the grace period). */
void px_conn_close_all(struct px_ctx *ctx);

#endif

/* px_conn: one client connection and the request it is serving: parsing the
 * head, the fencing decision, borrowing an upstream connection, streaming the
 * body both ways with backpressure, and the response. Loop thread only. */
#ifndef PX_CONN_H
#define PX_CONN_H

#include <sys/socket.h>

#include <stddef.h>

struct px_ctx;
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

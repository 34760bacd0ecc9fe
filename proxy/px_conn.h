/* px_conn: one client connection and the request it is serving: parsing the
 * head, the fencing decision, borrowing an upstream connection, streaming the
 * body both ways with backpressure, and the response. Loop thread only. */
#ifndef PX_CONN_H
#define PX_CONN_H

#include <sys/socket.h>

struct px_ctx;

/* Serves a freshly accepted socket; takes ownership of fd (closed on every
 * path). Over max_connections it answers 503 and closes. */
void px_conn_accept(struct px_ctx *ctx, int fd, const struct sockaddr *sa, socklen_t salen);

/* Graceful stop: closes idle connections now and makes the busy ones close
 * after their current response. */
void px_conn_drain_all(struct px_ctx *ctx);

/* Closes every connection at once (end of the grace period). */
void px_conn_close_all(struct px_ctx *ctx);

#endif

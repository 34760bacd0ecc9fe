/* px_transport: how bytes reach a peer. Every socket call of the data path
 * goes through one ops table: wrapping an accepted socket or opening a
 * connection in a bufferevent, writing queued output at once, half-closing,
 * a liveness peek for pooled connections, and the last words to a client
 * refused before it got a bufferevent, the peer's certificate subject. The
 * plain TCP transport is here; TLS is one more ops table (px_tls.c), chosen
 * once per listener or upstream, never an `if` on the per-request path.
 * Loop thread only. */
#ifndef PX_TRANSPORT_H
#define PX_TRANSPORT_H

#include <stddef.h>
#include <sys/socket.h>

struct bufferevent;
struct event_base;

struct px_transport_ops {
    const char *name;
    /* Wraps an accepted socket; takes ownership of fd (closed on failure).
     * Returns the bufferevent (free with bufferevent_free()) or NULL. */
    struct bufferevent *(*accept)(void *impl, struct event_base *base, int fd);
    /* Starts a connection to sa; the outcome arrives as BEV_EVENT_CONNECTED
     * or an error on the bufferevent's event callback. NULL when it could
     * not even start. */
    struct bufferevent *(*connect)(void *impl, struct event_base *base, const struct sockaddr *sa,
                                   socklen_t salen);
    /* Writes what is queued on bev now, when its write interest is off;
     * asks the loop for writability only for what the peer did not take. */
    void (*flush)(struct bufferevent *bev);
    /* Ends our direction of the stream once the output is written. */
    void (*shutdown_write)(struct bufferevent *bev);
    /* 1 when an idle connection has seen neither a byte nor a close that
     * the loop has not processed yet, else 0. */
    int (*alive)(struct bufferevent *bev);
    /* Best-effort final bytes to an accepted socket that gets no
     * bufferevent (a connection over the limit); never blocks. The caller
     * closes fd. 0, or -1 with errno set. */
    int (*refuse)(int fd, const char *msg, size_t len);
    /* The subject of the peer's verified certificate (RFC 2253), or NULL
     * (plain TCP, or no certificate). Borrowed: lives as long as bev. */
    const char *(*subject)(struct bufferevent *bev);
};

/* A transport: its ops and their private state (NULL for plain TCP).
 * Borrowed by every connection that uses it; outlives them. */
struct px_transport {
    const struct px_transport_ops *ops;
    void *impl;
};

/* Plain TCP (TCP_NODELAY on every connection). */
extern const struct px_transport px_transport_tcp;

static inline struct bufferevent *px_transport_accept(const struct px_transport *t,
                                                      struct event_base *base, int fd)
{
    return t->ops->accept(t->impl, base, fd);
}

static inline struct bufferevent *px_transport_connect(const struct px_transport *t,
                                                       struct event_base *base,
                                                       const struct sockaddr *sa, socklen_t salen)
{
    return t->ops->connect(t->impl, base, sa, salen);
}

#endif

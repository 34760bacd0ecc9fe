/* px_transport: see px_transport.h. The plain TCP transport: the only file
 * of proxy/ that calls send, recv, shutdown or setsockopt on a connection, or
 * creates a socket bufferevent. */
#include "px_transport.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

static void nodelay(int fd)
{
    int one = 1;

    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static struct bufferevent *tcp_accept(void *impl, struct event_base *base, int fd)
{
    struct bufferevent *bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);

    if (bev == NULL) {
        close(fd);
        return NULL;
    }
    nodelay(fd);
    return bev;
}

static struct bufferevent *tcp_connect(void *impl, struct event_base *base,
                                       const struct sockaddr *sa, socklen_t salen)
{
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);

    if (bev == NULL)
        return NULL;
    if (bufferevent_socket_connect(bev, sa, (int)salen) < 0) {
        bufferevent_free(bev);
        return NULL;
    }
    nodelay(bufferevent_getfd(bev));
    return bev;
}

/* Write interest is dropped again by the owner's write callback when the
 * output drains, so a small exchange costs no epoll_ctl at all; libevent
 * would otherwise add and remove EPOLLOUT around every response. Errors are
 * left for the bufferevent to find on its next write. */
static void tcp_flush(struct bufferevent *bev)
{
    struct evbuffer *out = bufferevent_get_output(bev);

    if (evbuffer_get_length(out) == 0 || (bufferevent_get_enabled(bev) & EV_WRITE))
        return;
    /* A socket bufferevent keeps the front of its output frozen against
     * outside drains; its own write path thaws it the same way. */
    evbuffer_unfreeze(out, 1);
    (void)evbuffer_write(out, bufferevent_getfd(bev));
    evbuffer_freeze(out, 1);
    if (evbuffer_get_length(out) > 0)
        bufferevent_enable(bev, EV_WRITE);
}

static void tcp_shutdown_write(struct bufferevent *bev)
{
    (void)shutdown(bufferevent_getfd(bev), SHUT_WR);
}

static int tcp_alive(struct bufferevent *bev)
{
    char c;
    ssize_t n = recv(bufferevent_getfd(bev), &c, 1, MSG_PEEK | MSG_DONTWAIT);

    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* After the answer, the write side is shut and what the client already
 * sent is drained: a close with unread input makes the kernel send a reset,
 * which can destroy the answer in the client's receive queue before the
 * client reads it. Bounded: a few non-blocking reads. */
static int tcp_refuse(int fd, const char *msg, size_t len)
{
    char sink[4096];
    int rc = send(fd, msg, len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 ? -1 : 0;

    (void)shutdown(fd, SHUT_WR);
    for (int i = 0; i < 16 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
        ;
    return rc;
}

static const char *tcp_subject(struct bufferevent *bev)
{
    return NULL;
}

static const struct px_transport_ops tcp_ops = {
    .name = "tcp",
    .accept = tcp_accept,
    .connect = tcp_connect,
    .flush = tcp_flush,
    .shutdown_write = tcp_shutdown_write,
    .alive = tcp_alive,
    .refuse = tcp_refuse,
    .subject = tcp_subject,
};

const struct px_transport px_transport_tcp = {&tcp_ops, NULL};

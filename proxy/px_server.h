/* px_server: the proxy's context and lifecycle. struct px_ctx owns the event
 * base, the listeners, the upstream pool, the token store and fence, the
 * audit and access logs and the list of client connections; px_server_run()
 * runs the loop until SIGTERM/SIGINT and a graceful drain. One thread. */
#ifndef PX_SERVER_H
#define PX_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/time.h>

#include "px_http1.h"

struct event_base;
struct event;
struct evconnlistener;
struct px_config;
struct px_upool;
struct px_fence;
struct st_store;
struct px_audit;
struct px_logw;
struct px_admin;
struct px_conn;

TAILQ_HEAD(px_conn_list, px_conn);

/* After a response that ends a connection with unread input, how long the
 * proxy keeps discarding what the client still sends (lingering close). */
#define PX_LINGER_MS 1000

struct px_ctx {
    const struct px_config *cfg;     /* borrowed; outlives the ctx */
    struct event_base *base;
    struct evconnlistener *listener;
    struct event *listener_retry;    /* re-enables accept after EMFILE */
    struct px_upool *upool;
    struct st_store *store;
    struct event *store_ev;
    struct px_fence *fence;
    struct px_audit *audit;          /* NULL when audit is off */
    struct px_logw *access;          /* NULL when the access log is off */
    struct px_admin *admin;          /* NULL when admin_listen = off */
    struct event *sig_int, *sig_term, *sig_hup;
    struct event *grace_timer;
    struct px_conn_list conns;
    size_t n_conns;
    uint64_t next_conn_id;
    uint64_t rid_base;               /* random, for X-Request-Id */
    uint64_t rid_counter;
    int shutting_down;
    struct px_h1_limits lim;
    struct {                         /* libevent common timeouts: O(1) timers */
        struct timeval header, idle, upstream, connect, linger;
    } tv;
    size_t token_header_len;
    char upstream_origin[320];       /* "http://host:port", for Location */
    size_t upstream_origin_len;
};

/* Builds the context from cfg (borrowed), opening listeners, store, logs and
 * the upstream pool. Returns NULL with a message in err. */
struct px_ctx *px_server_new(const struct px_config *cfg, char *err, size_t errlen);

/* Runs the loop until a stop signal and the drain. Returns 0 on a clean
 * stop, -1 on a fatal error. */
int px_server_run(struct px_ctx *ctx);

/* Frees everything the context owns. Accepts NULL. */
void px_server_free(struct px_ctx *ctx);

/* Called by px_conn when a connection is gone: lets a draining server stop. */
void px_server_conn_gone(struct px_ctx *ctx);

/* Wall-clock milliseconds since the epoch (for logs and audit records). */
uint64_t px_server_now_ms(void);

#endif

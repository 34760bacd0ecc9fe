/* px_ctx: the proxy's shared context, one per process, passed explicitly to
 * every module of the data path. It holds borrowed pointers to the parts
 * that px_server builds and frees (event base, store, fence, pool, logs) and
 * the few derived values the per-request path reads (limits, timeouts).
 * Only types here: no function of this header exists. Loop thread only. */
#ifndef PX_CTX_H
#define PX_CTX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#include "px_http1.h"

struct event_base;
struct event;
struct evconnlistener;
struct px_config;
struct px_upool;
struct px_fence;
struct px_fence_verifier;
struct px_verify;
struct st_store;
struct px_audit;
struct px_logw;
struct px_admin;
struct px_conn_set;
struct px_transport;

/* After a response that ends a connection with unread input, how long the
 * proxy keeps discarding what the client still sends (lingering close). */
#define PX_LINGER_MS 1000
/* How long a request with Expect: 100-continue waits for the upstream's
 * 100 before its body is sent anyway (curl waits 1 s too). */
#define PX_EXPECT_MS 1000

struct px_ctx {
    struct px_config *cfg;           /* the current snapshot (held); a reload swaps it */
    char *cfg_path;                  /* the file it came from; owned */
    uint64_t cfg_generation;         /* 1 at start, +1 per applied reload */
    char reload_result[256];         /* "ok" or the last failed reload's message */
    struct event_base *base;
    struct evconnlistener *listener;
    const struct px_transport *client_tr; /* how accepted clients speak */
    struct px_transport *tls_listen; /* owned: client_tr when [tls] cert is set */
    const char *client_proto;        /* "https" with tls_listen, else "http" */
    struct px_transport *tls_upstream; /* owned: the pool's for an https upstream */
    struct event *listener_retry;    /* re-enables accept after EMFILE */
    struct px_upool *upool;
    struct st_store *store;
    struct event *store_ev;
    int store_unreachable;        /* last seen st_store_unreachable(), for the log */
    struct px_fence *fence;
    /* Per route index: the route's token verifier (verify = URL), or NULL;
     * the array is NULL when no route verifies. Built by px_server. */
    const struct px_fence_verifier *const *verifiers;
    struct px_verify **verify_owned; /* the same, owned: one per route (NULL entries) */
    struct px_config *verify_cfg;    /* the snapshot verifiers[] is indexed by (held):
                                        the one the proxy started with */
    struct px_audit *audit;          /* NULL when audit is off */
    struct px_logw *access;          /* NULL when the access log is off */
    struct px_admin *admin;          /* NULL when admin_listen = off */
    struct event *sig_int, *sig_term, *sig_hup, *sig_usr1;
    struct event *grace_timer;
    struct event *sweep_timer;   /* px_fence_sweep every 100 ms */
    struct px_conn_set *conns;       /* owned by px_conn (px_conn_set_new) */
    /* Called by px_conn when its last connection is gone (a draining
     * server stops then). Set by px_server. */
    void (*conns_gone)(struct px_ctx *ctx);
    /* What SIGHUP reloads (the configuration, then the certificates and
     * keys), for the admin listener's POST /reload (set by px_server, so
     * px_admin need not include it). 0, or -1 with what was refused. */
    int (*reload)(struct px_ctx *ctx, char *err, size_t errlen);
    uint64_t next_conn_id;
    uint64_t rid_base;               /* random, for X-Request-Id */
    uint64_t rid_counter;
    int shutting_down;
    struct px_h1_limits lim;         /* request heads */
    struct px_h1_limits rlim;        /* response heads */
    struct {                         /* libevent common timeouts: O(1) timers */
        struct timeval header, idle, upstream, connect, linger, expect, queue;
    } tv;
    char upstream_origin[320];       /* "http://host:port", for Location */
    size_t upstream_origin_len;
};

#endif

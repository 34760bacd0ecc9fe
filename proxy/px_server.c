/* px_server: see px_server.h. Owns the loop's lifecycle: building every
 * part from the config snapshot, the listener (with a pause after EMFILE so
 * that running out of descriptors never kills the loop), signals (SIGHUP
 * reopens logs; SIGTERM/SIGINT drain for up to shutdown_grace) and teardown. */
#include "px_server.h"

#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <time.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "pol_route.h"
#include "st_store.h"
#include "px_admin.h"
#include "px_audit.h"
#include "px_config.h"
#include "px_conn.h"
#include "px_ctx.h"
#include "px_fence.h"
#include "px_log.h"
#include "px_logw.h"
#include "px_sd.h"
#include "px_stats.h"
#include "px_tls.h"
#include "px_transport.h"
#include "px_upstream.h"
#include "px_verify.h"

#define PX_LOG_BUFFER       (4u * 1024 * 1024) /* per log writer */
#define PX_UPSTREAM_IDLE_MS 30000              /* below common upstream keep-alives */

static void tv_from_ms(struct timeval *tv, uint64_t ms)
{
    tv->tv_sec = (time_t)(ms / 1000);
    tv->tv_usec = (suseconds_t)(ms % 1000) * 1000;
}

/* A duration as a libevent common timeout: every connection uses the same
 * few durations, so their timers sit in O(1) queues instead of the heap. */
static void common_tv(struct event_base *base, uint64_t ms, struct timeval *out)
{
    const struct timeval *ct;

    tv_from_ms(out, ms);
    ct = event_base_init_common_timeout(base, out);
    if (ct != NULL)
        *out = *ct;
}

/* The store's fill level into the gauges; the warning once per crossing of
 * ST_STORE_FILL_WARN_PCT, and a line when new resources start or stop being
 * refused. */
static void store_fill(struct px_ctx *ctx)
{
    uint64_t used, max;
    int full = st_store_full(ctx->store), crossed = st_store_fill_crossed(ctx->store);

    st_store_fill(ctx->store, &used, &max);
    px_stats_gauge_set(PX_G_STORE_USED_BYTES, (int64_t)used);
    px_stats_gauge_set(PX_G_STORE_MAX_BYTES, (int64_t)max);
    px_stats_gauge_set(PX_G_STORE_FILL_PERCENT, max > 0 ? (int64_t)(used * 100 / max) : 0);
    if (crossed > 0)
        px_log_warn("token store is %llu%% full (%llu of max_size %llu bytes): raise [store] "
                    "max_size before new resources are refused",
                    (unsigned long long)(used * 100 / max), (unsigned long long)used,
                    (unsigned long long)max);
    else if (crossed < 0)
        px_log_info("token store below %d%% full again", ST_STORE_FILL_WARN_PCT);
    if (full != (int)px_stats_gauge_get(PX_G_STORE_FULL)) {
        if (full)
            px_log_error("token store full (max_size %llu bytes): new resources get 503 "
                         "(store_full); existing ones go on", (unsigned long long)max);
        else
            px_log_info("token store accepts new resources again");
        px_stats_gauge_set(PX_G_STORE_FULL, full);
    }
}

/* Logs once per change whether a networked store (etcd) is reachable; while
 * it is not, fenced requests get 503 (S6). */
static void store_reach(struct px_ctx *ctx)
{
    char why[256];
    int now = st_store_unreachable(ctx->store, why, sizeof why);

    if (now && !ctx->store_unreachable)
        px_log_error("token store unreachable, refusing fenced requests: %s", why);
    else if (!now && ctx->store_unreachable)
        px_log_info("token store reachable again");
    ctx->store_unreachable = now;
}

static void store_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_ctx *ctx = arg;

    st_store_dispatch(ctx->store);
    /* The gauge is the latch: the writer marks the store failed before it
     * posts the completions, so "failed before dispatch" would miss it. */
    if (st_store_failed(ctx->store) && px_stats_gauge_get(PX_G_STORE_UP) != 0) {
        const char *e = st_store_error(ctx->store);
        px_log_error("token store failed, refusing fenced requests: %s", e != NULL ? e : "?");
        px_stats_gauge_set(PX_G_STORE_UP, 0);
    }
    store_reach(ctx);
    store_fill(ctx);
}

/* st_store_open()'s messages for the operator (creation, floor). */
static void store_log(void *arg, int level, const char *msg)
{
    if (level == 0)
        px_log_error("%s", msg);
    else if (level == 1)
        px_log_warn("%s", msg);
    else
        px_log_info("%s", msg);
}

static void commit_hook(void *arg, size_t batch, double seconds)
{
    px_stats_observe(PX_H_STORE_COMMIT_DURATION, seconds);
    px_stats_observe(PX_H_STORE_COMMIT_BATCH, (double)batch);
    px_stats_add(PX_ST_STORE_ADVANCES, batch);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    struct px_ctx *ctx = arg;

    px_stats_inc(PX_ST_CONNECTIONS_ACCEPTED);
    px_conn_accept(ctx, fd, sa, (socklen_t)salen);
}

static void listener_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_ctx *ctx = arg;

    if (!ctx->shutting_down)
        evconnlistener_enable(ctx->listener);
}

/* accept() failed: out of descriptors (or similar). Pause accepting for a
 * moment instead of spinning or exiting; established connections go on.
 * The log line is rate-limited (px_log, per call site). */
static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    struct px_ctx *ctx = arg;
    struct timeval tv = {0, 100 * 1000};
    int err = EVUTIL_SOCKET_ERROR();

    px_log_warn("accept: %s; pausing accepts for 100 ms", evutil_socket_error_to_string(err));
    evconnlistener_disable(l);
    event_add(ctx->listener_retry, &tv);
}

/* px_conn's hook: the last connection is gone. */
static void conns_gone(struct px_ctx *ctx)
{
    if (ctx->shutting_down)
        event_base_loopexit(ctx->base, NULL);
}

/* Self-fencing and idle release of owned resources (px_fence_sweep). */
static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_ctx *ctx = arg;

    (void)fd;
    (void)what;
    px_fence_sweep(ctx->fence);
}

static void grace_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_ctx *ctx = arg;

    px_log_warn("shutdown grace over: closing %zu connection(s)", px_conn_count(ctx));
    px_conn_close_all(ctx);
    if (px_conn_count(ctx) == 0)
        event_base_loopexit(ctx->base, NULL);
}

static void stop_cb(evutil_socket_t sig, short what, void *arg)
{
    struct px_ctx *ctx = arg;
    struct timeval tv;

    if (ctx->shutting_down)
        return;
    px_log_info("signal %d: stopping; draining %zu connection(s) for up to %llu ms", (int)sig,
                px_conn_count(ctx), (unsigned long long)ctx->cfg->shutdown_grace_ms);
    ctx->shutting_down = 1;
    /* Close the socket rather than only stop accepting: the kernel would
     * keep completing handshakes into the backlog, and those clients would
     * wait for the whole drain before a reset. Closed, they are refused. */
    evconnlistener_free(ctx->listener);
    ctx->listener = NULL;
    px_admin_free(ctx->admin);
    ctx->admin = NULL;
    px_conn_drain_all(ctx);
    tv_from_ms(&tv, ctx->cfg->shutdown_grace_ms);
    event_add(ctx->grace_timer, &tv);
    if (px_conn_count(ctx) == 0)
        event_base_loopexit(ctx->base, NULL);
}

static int init_stats(const struct px_config *cfg);

static int same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Verifiers (their worker threads and lock clients) are made at start, one
 * per route that has `verify`: a reload may not add or change one (it would
 * need a new client), only drop a route. */
static int verify_reload_check(const struct px_ctx *ctx, const struct px_config *cfg, char *err,
                               size_t errlen)
{
    for (size_t i = 0; i < pol_routes_count(cfg->routes); i++) {
        const struct pol_route *nr = pol_routes_get(cfg->routes, i), *or = NULL;
        const struct pol_routes *old = ctx->verify_cfg != NULL ? ctx->verify_cfg->routes : NULL;
        for (size_t j = 0; old != NULL && j < pol_routes_count(old); j++)
            if (strcmp(pol_routes_get(old, j)->name, nr->name) == 0)
                or = pol_routes_get(old, j);
        if (nr->verify == NULL && (or == NULL || or->verify == NULL))
            continue;
        if (or == NULL || !same_str(or->verify, nr->verify) ||
            !same_str(or->lock_name, nr->lock_name) ||
            or->require_live_lease != nr->require_live_lease ||
            or->live_lease_cache_ms != nr->live_lease_cache_ms) {
            snprintf(err, errlen,
                     "%s: [route %s] verify, lock_name, require_live_lease and "
                     "live_lease_cache cannot change on a reload (restart instead)",
                     ctx->cfg_path, nr->name);
            return -1;
        }
    }
    return 0;
}

/* SIGUSR1: reopen the logs (after logrotate moved them). */
static void reopen_logs(struct px_ctx *ctx)
{
    px_stats_inc(PX_ST_LOG_REOPENS);
    if (ctx->audit != NULL)
        px_audit_reopen(ctx->audit);
    if (ctx->access != NULL)
        px_logw_reopen(ctx->access);
}

static void usr1_cb(evutil_socket_t sig, short what, void *arg)
{
    px_log_info("SIGUSR1: reopening logs");
    reopen_logs(arg);
}

/* A reload as SIGHUP and POST /reload make it: the configuration, then the
 * certificates and keys, which are reread even when the configuration is
 * refused or did not change (new connections use them, open ones keep
 * their session; a bad file keeps the old ones, logged by px_tls).
 * Returns 0, or -1 with what was refused in err (both parts when both
 * were). Loop thread. */
static int reload_all(struct px_ctx *ctx, char *err, size_t errlen)
{
    char cfg_err[1024], tls_err[2][768];
    int rc = 0, n = 0;

    cfg_err[0] = '\0';
    if (px_server_reload(ctx, cfg_err, sizeof(cfg_err)) < 0)
        rc = -1;
    tls_err[0][0] = tls_err[1][0] = '\0';
    if (ctx->tls_listen != NULL &&
        px_tls_reload(ctx->tls_listen, tls_err[n], sizeof tls_err[n]) < 0)
        n++;
    if (ctx->tls_upstream != NULL &&
        px_tls_reload(ctx->tls_upstream, tls_err[n], sizeof tls_err[n]) < 0)
        n++;
    if (n > 0)
        rc = -1;
    if (rc < 0)
        snprintf(err, errlen, "%s%s%s%s%s%s", cfg_err[0] != '\0' ? cfg_err : "",
                 cfg_err[0] != '\0' && n > 0 ? "; " : "",
                 cfg_err[0] == '\0' && n > 0 ? "configuration applied, but " : "", tls_err[0],
                 n > 1 ? "; " : "", tls_err[1]);
    return rc;
}

/* SIGHUP: reload the configuration and the certificates, and reopen the
 * logs (as before reloads existed, so rotation scripts that send SIGHUP
 * keep working). */
static void hup_cb(evutil_socket_t sig, short what, void *arg)
{
    struct px_ctx *ctx = arg;
    char err[2048];

    px_log_info("SIGHUP: reloading %s and reopening logs", ctx->cfg_path);
    if (reload_all(ctx, err, sizeof(err)) < 0)
        px_log_error("reload (SIGHUP) refused: %s", err);
    reopen_logs(ctx);
}

/* Timeouts and limits of a snapshot, into the context (common timeouts:
 * the same few durations for every connection). */
static void apply_limits(struct px_ctx *ctx, const struct px_config *cfg)
{
    ctx->lim.max_head = cfg->max_header_bytes;
    ctx->lim.max_line = 8192;
    ctx->lim.max_fields = 100;
    ctx->rlim = ctx->lim;
    ctx->rlim.max_head = cfg->max_response_header_bytes;
    snprintf(ctx->upstream_origin, sizeof(ctx->upstream_origin), "%s://%s:%d",
             cfg->upstream_tls ? "https" : "http", cfg->upstream_host, cfg->upstream_port);
    ctx->upstream_origin_len = strlen(ctx->upstream_origin);
    common_tv(ctx->base, cfg->header_timeout_ms, &ctx->tv.header);
    common_tv(ctx->base, cfg->idle_timeout_ms, &ctx->tv.idle);
    common_tv(ctx->base, cfg->upstream_timeout_ms, &ctx->tv.upstream);
    common_tv(ctx->base, cfg->upstream_connect_timeout_ms, &ctx->tv.connect);
    common_tv(ctx->base, PX_LINGER_MS, &ctx->tv.linger);
    common_tv(ctx->base, PX_EXPECT_MS, &ctx->tv.expect);
    common_tv(ctx->base, cfg->upstream_queue_timeout_ms, &ctx->tv.queue);
}

int px_server_reload(struct px_ctx *ctx, char *err, size_t errlen)
{
    struct px_config *cfg = px_config_load(ctx->cfg_path, err, errlen);
    struct px_upool *pool = NULL;
    struct px_logw *access = NULL;
    enum px_log_level level;
    int rc = -1;

    if (cfg == NULL)
        goto out;
    if (px_config_reload_check(ctx->cfg, cfg, ctx->cfg_path, err, errlen) < 0 ||
        verify_reload_check(ctx, cfg, err, errlen) < 0 ||
        px_server_fit_fds(cfg, 0, err, errlen) < 0)
        goto out;
    err[0] = '\0';
    /* Everything that can fail comes first; then nothing is left half done. */
    /* The TLS client transport was made for the upstream's name (SNI and
     * the certificate check); an https upstream changes with a restart. */
    if (strcmp(cfg->upstream, ctx->cfg->upstream) != 0 && (cfg->upstream_tls || ctx->cfg->upstream_tls)) {
        snprintf(err, errlen, "%s: an https upstream cannot change on a reload (restart instead)",
                 ctx->cfg_path);
        goto out;
    }
    if (strcmp(cfg->upstream, ctx->cfg->upstream) != 0) {
        pool = px_upool_new(ctx->base, &px_transport_tcp, cfg->upstream_host, cfg->upstream_port,
                            cfg->max_upstream_connections, PX_UPSTREAM_IDLE_MS, err, errlen);
        if (pool == NULL)
            goto out;
    }
    if (cfg->access_log != NULL &&
        (ctx->cfg->access_log == NULL || strcmp(cfg->access_log, ctx->cfg->access_log) != 0)) {
        access = px_logw_open(cfg->access_log, PX_LOG_BUFFER, err, errlen);
        if (access == NULL)
            goto out;
    }
    if (init_stats(cfg) < 0) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (pool != NULL) {
        px_upool_retire(ctx->upool); /* lent connections finish their exchanges */
        ctx->upool = pool;
        pool = NULL;
        px_log_info("reload: upstream is now %s", cfg->upstream);
    } else {
        px_upool_set_max(ctx->upool, cfg->max_upstream_connections);
    }
    if (access != NULL || cfg->access_log == NULL) {
        px_logw_close(&ctx->access);
        ctx->access = access;
        access = NULL;
    }
    apply_limits(ctx, cfg);
    px_fence_set_max_resources(ctx->fence, (size_t)cfg->resource_cache);
    if (px_log_level_parse(cfg->log_level, &level) == 0)
        px_log_init(level);
    for (const char *w = cfg->warnings; w != NULL && *w != '\0'; w += strcspn(w, "\n") + 1)
        px_log_warn("%.*s", (int)strcspn(w, "\n"), w);
    px_config_free(&ctx->cfg); /* requests still under it keep their hold */
    ctx->cfg = cfg;
    cfg = NULL;
    ctx->cfg_generation++;
    px_stats_gauge_set(PX_G_CONFIG_GENERATION, (int64_t)ctx->cfg_generation);
    px_stats_inc(PX_ST_CONFIG_RELOADS);
    snprintf(ctx->reload_result, sizeof(ctx->reload_result), "ok");
    px_log_info("reload: configuration generation %llu in effect",
                (unsigned long long)ctx->cfg_generation);
    rc = 0;
out:
    if (rc < 0) {
        px_stats_inc(PX_ST_CONFIG_RELOAD_FAILURES);
        snprintf(ctx->reload_result, sizeof(ctx->reload_result), "%s", err);
    }
    px_upool_free(pool);
    px_logw_close(&access);
    px_config_free(&cfg);
    return rc;
}

static int open_listener(struct px_ctx *ctx, char *err, size_t errlen)
{
    char *host = NULL;
    int port, rc = -1, gai, fd;
    struct addrinfo hints, *res = NULL;
    char portstr[16];

    /* A socket a service manager holds for us (systemd socket activation):
     * while the proxy restarts, connections wait in its backlog. */
    fd = px_sd_listen_fd(err, errlen);
    if (fd == -2)
        goto out;
    if (fd >= 0) {
        ctx->listener = evconnlistener_new(ctx->base, accept_cb, ctx,
                                           LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
        if (ctx->listener == NULL) {
            snprintf(err, errlen, "socket activation: descriptor %d: %s", fd, strerror(errno));
            goto out;
        }
        px_log_info("listening on descriptor %d from the service manager (socket activation)",
                    fd);
        evconnlistener_set_error_cb(ctx->listener, accept_error_cb);
        rc = 0;
        goto out;
    }
    err[0] = '\0';
    if (px_config_split_hostport(ctx->cfg->listen, &host, &port) < 0) {
        snprintf(err, errlen, "listen %s: expected host:port", ctx->cfg->listen);
        goto out;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    snprintf(portstr, sizeof(portstr), "%d", port);
    gai = getaddrinfo(host, portstr, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "listen %s: %s", ctx->cfg->listen, gai_strerror(gai));
        goto out;
    }
    ctx->listener =
        evconnlistener_new_bind(ctx->base, accept_cb, ctx,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                                1024, res->ai_addr, (int)res->ai_addrlen);
    if (ctx->listener == NULL) {
        snprintf(err, errlen, "listen %s: %s", ctx->cfg->listen, strerror(errno));
        goto out;
    }
    evconnlistener_set_error_cb(ctx->listener, accept_error_cb);
    rc = 0;
out:
    if (res != NULL)
        freeaddrinfo(res);
    free(host);
    return rc;
}

static int open_admin(struct px_ctx *ctx, char *err, size_t errlen)
{
    char *host = NULL;
    int port, rc = -1;

    if (ctx->cfg->admin_listen == NULL || strcmp(ctx->cfg->admin_listen, "off") == 0)
        return 0;
    if (px_config_split_hostport(ctx->cfg->admin_listen, &host, &port) < 0) {
        snprintf(err, errlen, "admin_listen %s: expected host:port", ctx->cfg->admin_listen);
        goto out;
    }
    ctx->admin = px_admin_new(ctx, host, port, err, errlen);
    if (ctx->admin != NULL)
        rc = 0;
out:
    free(host);
    return rc;
}

/* One verifier per route with verify = URL (px_verify), as an array by
 * route index for px_conn. */
static int open_verifiers(struct px_ctx *ctx, char *err, size_t errlen)
{
    size_t n = pol_routes_count(ctx->cfg->routes), used = 0;
    const struct px_fence_verifier **ifs = NULL;

    for (size_t i = 0; i < n; i++)
        used += pol_routes_get(ctx->cfg->routes, i)->verify != NULL;
    if (used == 0)
        return 0;
    ifs = calloc(n, sizeof(*ifs));
    ctx->verify_owned = calloc(n, sizeof(*ctx->verify_owned));
    ctx->verifiers = ifs;
    ctx->verify_cfg = px_config_hold(ctx->cfg); /* the routes the verifiers borrow */
    if (ifs == NULL || ctx->verify_owned == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const struct pol_route *r = pol_routes_get(ctx->cfg->routes, i);
        if (r->verify == NULL)
            continue;
        ctx->verify_owned[i] = px_verify_new(ctx->base, r, err, errlen);
        if (ctx->verify_owned[i] == NULL)
            return -1;
        ifs[i] = px_verify_fence(ctx->verify_owned[i]);
        px_log_info("route %s: tokens verified with %s (lock name %s%s)", r->name, r->verify,
                    r->lock_name != NULL ? r->lock_name : POL_LOCK_NAME_VAR,
                    r->require_live_lease ? ", live lease required" : "");
    }
    return 0;
}

static void close_verifiers(struct px_ctx *ctx)
{
    size_t n = ctx->verify_cfg != NULL ? pol_routes_count(ctx->verify_cfg->routes) : 0;

    for (size_t i = 0; ctx->verify_owned != NULL && i < n; i++)
        px_verify_free(&ctx->verify_owned[i]);
    free(ctx->verify_owned);
    free((void *)ctx->verifiers);
    ctx->verify_owned = NULL;
    ctx->verifiers = NULL;
    px_config_free(&ctx->verify_cfg);
}

static int init_stats(const struct px_config *cfg)
{
    size_t n = pol_routes_count(cfg->routes);
    const char **names = calloc(n + 1, sizeof(*names));
    int rc;

    if (names == NULL)
        return -1;
    for (size_t i = 0; i < n; i++)
        names[i] = pol_routes_get(cfg->routes, i)->name;
    rc = px_stats_init(names, n);
    free(names);
    return rc;
}

int px_server_fit_fds(struct px_config *cfg, int dry_run, char *msg, size_t cap)
{
    struct rlimit rl;
    unsigned long long need, fit, have;

    msg[0] = '\0';
    need = 2ULL * cfg->max_connections + PX_ADMIN_MAX_CONNS + PX_FD_RESERVE;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        snprintf(msg, cap, "getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
        return -1;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        struct rlimit nl = rl;
        nl.rlim_cur = rl.rlim_max;
        if (!dry_run && setrlimit(RLIMIT_NOFILE, &nl) == 0)
            rl = nl;
        else if (dry_run)
            rl = nl; /* what the start would do */
    }
    have = rl.rlim_cur == RLIM_INFINITY ? need : (unsigned long long)rl.rlim_cur;
    if (have >= need)
        return 0;
    if (have < 2ULL + PX_ADMIN_MAX_CONNS + PX_FD_RESERVE) {
        snprintf(msg, cap,
                 "RLIMIT_NOFILE %llu leaves no descriptor for a client (%d admin + %d reserved "
                 "needed first); raise it (ulimit -n, LimitNOFILE=)",
                 have, PX_ADMIN_MAX_CONNS, PX_FD_RESERVE);
        return -1;
    }
    fit = (have - PX_ADMIN_MAX_CONNS - PX_FD_RESERVE) / 2;
    snprintf(msg, cap,
             "max_connections %llu needs %llu descriptors (2 per client + %d admin + %d "
             "reserved) but RLIMIT_NOFILE is %llu (hard limit): max_connections lowered to %llu; "
             "raise the limit (ulimit -n, LimitNOFILE=) or lower max_connections",
             (unsigned long long)cfg->max_connections, need, PX_ADMIN_MAX_CONNS, PX_FD_RESERVE,
             have, fit);
    if (!dry_run)
        cfg->max_connections = fit;
    return 0;
}

struct px_ctx *px_server_new(const struct px_config *cfg, const char *path, char *err,
                             size_t errlen)
{
    struct px_ctx *ctx = calloc(1, sizeof(*ctx));
    struct st_store_config scfg;
    static const struct timeval sweep_tv = {0, 100 * 1000};
    char owner_id[64];
    struct event_config *ecfg;

    if (ctx == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    ctx->cfg = px_config_hold(cfg);
    ctx->cfg_path = strdup(path != NULL ? path : "");
    ctx->cfg_generation = 1;
    snprintf(ctx->reload_result, sizeof(ctx->reload_result), "none yet");
    ctx->client_tr = &px_transport_tcp;
    ctx->client_proto = "http";
    ctx->conns_gone = conns_gone;
    ctx->reload = reload_all;
    ctx->conns = px_conn_set_new();
    if (ctx->conns == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (getrandom(&ctx->rid_base, sizeof(ctx->rid_base), 0) != sizeof(ctx->rid_base))
        ctx->rid_base = (uint64_t)time(NULL) * 2654435761u;
    if (init_stats(cfg) < 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    px_stats_gauge_set(PX_G_CONFIG_GENERATION, 1);
    ecfg = event_config_new();
    if (ecfg != NULL)
        /* Coalesce the read/write interest changes of one loop iteration
         * into one epoll_ctl per descriptor: bufferevents toggle write
         * interest for every response. */
        event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    ctx->base = ecfg != NULL ? event_base_new_with_config(ecfg) : NULL;
    if (ecfg != NULL)
        event_config_free(ecfg);
    if (ctx->base == NULL) {
        snprintf(err, errlen, "cannot create the event loop");
        goto fail;
    }
    apply_limits(ctx, cfg);
    memset(&scfg, 0, sizeof(scfg));
    scfg.backend = cfg->store_backend;
    scfg.path = cfg->store_path;
    scfg.max_size = (size_t)cfg->store_max_size;
    scfg.marker = cfg->store_marker;
    scfg.floor = cfg->store_floor;
    scfg.endpoints = cfg->store_endpoints;
    scfg.prefix = cfg->store_prefix;
    scfg.max_txn_ops = (unsigned)cfg->store_max_txn_ops;
    scfg.timeout_ms = cfg->store_timeout_ms;
    scfg.tls = cfg->store_etcd_tls;
    scfg.tls_ca = cfg->store_etcd_ca;
    scfg.tls_cert = cfg->store_etcd_cert;
    scfg.tls_key = cfg->store_etcd_key;
    scfg.lease_ttl_ms = cfg->store_lease_ttl_ms;
    scfg.margin_ms = cfg->store_margin_ms;
    /* A new owner after a lease expiry: what the last owner let go reaches
     * the storage within upstream_timeout (the timing assumption). */
    scfg.lock_delay_ms = cfg->upstream_timeout_ms + cfg->store_margin_ms;
    scfg.handover_wait_ms = cfg->store_handover_wait_ms;
    scfg.poll_ms = cfg->store_handover_poll_ms;
    snprintf(owner_id, sizeof owner_id, "fenceproxy pid %ld", (long)getpid());
    scfg.owner_id = owner_id;
    scfg.log = store_log;
    /* S6: a missing, damaged or replaced store refuses the start here. */
    ctx->store = st_store_open(&scfg, err, errlen);
    if (ctx->store == NULL)
        goto fail;
    store_fill(ctx);
    st_store_set_commit_hook(ctx->store, commit_hook, ctx);
    px_stats_gauge_set(PX_G_STORE_UP, 1);
    ctx->store_ev =
        event_new(ctx->base, st_store_notify_fd(ctx->store), EV_READ | EV_PERSIST, store_cb, ctx);
    ctx->fence = px_fence_new(ctx->store);
    if (ctx->fence != NULL) {
        px_fence_set_max_resources(ctx->fence, (size_t)cfg->resource_cache);
        px_fence_set_own_idle(ctx->fence, cfg->store_own_idle_ms);
    }
    if (open_verifiers(ctx, err, errlen) != 0)
        goto fail;
    ctx->listener_retry = evtimer_new(ctx->base, listener_retry_cb, ctx);
    ctx->grace_timer = evtimer_new(ctx->base, grace_cb, ctx);
    ctx->sweep_timer = event_new(ctx->base, -1, EV_PERSIST, sweep_cb, ctx);
    ctx->sig_int = evsignal_new(ctx->base, SIGINT, stop_cb, ctx);
    ctx->sig_term = evsignal_new(ctx->base, SIGTERM, stop_cb, ctx);
    ctx->sig_hup = evsignal_new(ctx->base, SIGHUP, hup_cb, ctx);
    ctx->sig_usr1 = evsignal_new(ctx->base, SIGUSR1, usr1_cb, ctx);
    if (ctx->store_ev == NULL || ctx->fence == NULL || ctx->listener_retry == NULL ||
        ctx->grace_timer == NULL || ctx->sweep_timer == NULL ||
        event_add(ctx->sweep_timer, &sweep_tv) < 0 || ctx->sig_int == NULL || ctx->sig_term == NULL ||
        ctx->sig_hup == NULL || ctx->sig_usr1 == NULL || event_add(ctx->sig_usr1, NULL) < 0 ||
        event_add(ctx->store_ev, NULL) < 0 ||
        event_add(ctx->sig_int, NULL) < 0 || event_add(ctx->sig_term, NULL) < 0 ||
        event_add(ctx->sig_hup, NULL) < 0) {
        snprintf(err, errlen, "cannot set up events");
        goto fail;
    }
    /* The transports are chosen here, once: nothing per request asks. */
    if (cfg->tls_cert != NULL) {
        ctx->tls_listen = px_tls_server_new(cfg, err, errlen);
        if (ctx->tls_listen == NULL)
            goto fail;
        ctx->client_tr = ctx->tls_listen;
        ctx->client_proto = "https";
    }
    if (cfg->upstream_tls) {
        ctx->tls_upstream = px_tls_client_new(cfg, err, errlen);
        if (ctx->tls_upstream == NULL)
            goto fail;
    }
    ctx->upool = px_upool_new(ctx->base,
                              ctx->tls_upstream != NULL ? ctx->tls_upstream : &px_transport_tcp,
                              cfg->upstream_host, cfg->upstream_port,
                              cfg->max_upstream_connections, PX_UPSTREAM_IDLE_MS, err, errlen);
    if (ctx->upool == NULL)
        goto fail;
    if (cfg->audit_path != NULL) {
        ctx->audit = px_audit_open(cfg->audit_path, err, errlen);
        if (ctx->audit == NULL)
            goto fail;
    }
    if (cfg->access_log != NULL) {
        ctx->access = px_logw_open(cfg->access_log, PX_LOG_BUFFER, err, errlen);
        if (ctx->access == NULL)
            goto fail;
    }
    if (open_listener(ctx, err, errlen) < 0 || open_admin(ctx, err, errlen) < 0)
        goto fail;
    return ctx;
fail:
    px_server_free(ctx);
    return NULL;
}

int px_server_run(struct px_ctx *ctx)
{
    px_log_info("fenceproxy listening on %s, upstream %s, admin %s", ctx->cfg->listen,
                ctx->cfg->upstream, ctx->admin != NULL ? ctx->cfg->admin_listen : "off");
    if (event_base_dispatch(ctx->base) < 0)
        return -1;
    px_log_info("stopped");
    return 0;
}

void px_server_free(struct px_ctx *ctx)
{
    if (ctx == NULL)
        return;
    if (ctx->base != NULL) {
        /* Reap what the last iteration left, then nothing refers to us. */
        px_conn_close_all(ctx);
        event_base_loop(ctx->base, EVLOOP_NONBLOCK);
    }
    px_conn_set_free(&ctx->conns);
    px_admin_free(ctx->admin);
    if (ctx->listener != NULL)
        evconnlistener_free(ctx->listener);
    px_upool_free(ctx->upool);
    px_tls_free(&ctx->tls_listen);
    px_tls_free(&ctx->tls_upstream);
    close_verifiers(ctx); /* before the fence: no verdict arrives afterwards */
    px_fence_free(ctx->fence);
    st_store_close(&ctx->store);
    px_audit_close(&ctx->audit);
    px_logw_close(&ctx->access);
    if (ctx->store_ev != NULL)
        event_free(ctx->store_ev);
    if (ctx->listener_retry != NULL)
        event_free(ctx->listener_retry);
    if (ctx->grace_timer != NULL)
        event_free(ctx->grace_timer);
    if (ctx->sweep_timer != NULL)
        event_free(ctx->sweep_timer);
    if (ctx->sig_int != NULL)
        event_free(ctx->sig_int);
    if (ctx->sig_term != NULL)
        event_free(ctx->sig_term);
    if (ctx->sig_hup != NULL)
        event_free(ctx->sig_hup);
    if (ctx->sig_usr1 != NULL)
        event_free(ctx->sig_usr1);
    if (ctx->base != NULL)
        event_base_free(ctx->base);
    px_stats_free();
    px_config_free(&ctx->cfg);
    free(ctx->cfg_path);
    free(ctx);
}

/* px_server: the proxy's lifecycle. px_server_new() builds the context
 * (px_ctx.h) from a config snapshot: the event base, the listeners, the
 * upstream pool, the token store and fence, the audit and access logs;
 * px_server_run() runs the loop until SIGTERM/SIGINT and a graceful drain.
 * One thread. */
#ifndef PX_SERVER_H
#define PX_SERVER_H

#include <stddef.h>

struct px_config;
struct px_ctx;

/* Descriptors the proxy keeps besides two per client connection (the
 * client's and its upstream connection): the admin listener's share
 * (PX_ADMIN_MAX_CONNS) and this reserve for listeners, the event loop, the
 * store, the logs and stdio. */
#define PX_FD_RESERVE 64

/* Descriptor arithmetic, before px_server_new(): 2 * max_connections +
 * PX_ADMIN_MAX_CONNS + PX_FD_RESERVE against RLIMIT_NOFILE. When the soft
 * limit is too low and the hard limit is enough, the soft limit is raised to
 * the hard limit. When even the hard limit is too low, max_connections is
 * lowered to what fits (clamped, so client N+1 gets the documented 503
 * rather than a hang) and a warning is put into msg; when not even one
 * client fits, returns -1 with the reason in msg. dry_run (for -t): nothing
 * is changed, the same message is produced. msg gets "" when all is well.
 * Returns 0 or -1. */
int px_server_fit_fds(struct px_config *cfg, int dry_run, char *msg, size_t cap);

/* Builds the context from cfg (held: the context keeps its own reference;
 * path is copied, for reloads), opening listeners, store, logs and the
 * upstream pool. Returns NULL with a message in err. */
struct px_ctx *px_server_new(const struct px_config *cfg, const char *path, char *err,
                             size_t errlen);

/* Reloads the configuration from the file the proxy started with: parses
 * and validates a new snapshot (as `-t` does), refuses a change of a key
 * that needs a restart, and otherwise swaps it in: requests in flight finish
 * under the snapshot they started with, the next requests use the new one.
 * The fence state, the store and the audit chain are untouched. Returns 0,
 * or -1 with the reason (FILE:LINE: message) in err; the old snapshot then
 * stays. Loop thread. */
int px_server_reload(struct px_ctx *ctx, char *err, size_t errlen);

/* Runs the loop until a stop signal and the drain. Returns 0 on a clean
 * stop, -1 on a fatal error. */
int px_server_run(struct px_ctx *ctx);

/* Frees everything the context owns. Accepts NULL. */
void px_server_free(struct px_ctx *ctx);

#endif

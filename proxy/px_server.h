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

/* Builds the context from cfg (borrowed), opening listeners, store, logs and
 * the upstream pool. Returns NULL with a message in err. */
struct px_ctx *px_server_new(const struct px_config *cfg, char *err, size_t errlen);

/* Runs the loop until a stop signal and the drain. Returns 0 on a clean
 * stop, -1 on a fatal error. */
int px_server_run(struct px_ctx *ctx);

/* Frees everything the context owns. Accepts NULL. */
void px_server_free(struct px_ctx *ctx);

#endif

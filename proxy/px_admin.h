/* px_admin: the admin listener (never the data port): GET /healthz,
 * GET /metrics (Prometheus text), GET /tokens/RESOURCE. It uses libevent's
 * evhttp, which is fine for this small, trusted, bodiless interface; the data
 * path has its own strict parser. Loop thread only. */
#ifndef PX_ADMIN_H
#define PX_ADMIN_H

#include <stddef.h>

struct px_ctx;
struct px_admin;

/* Listens on host:port. ctx is borrowed and must outlive the admin.
 * Returns NULL with a message in err. Free with px_admin_free(). */
struct px_admin *px_admin_new(struct px_ctx *ctx, const char *host, int port, char *err,
                              size_t errlen);

/* Stops listening and frees. Accepts NULL. */
void px_admin_free(struct px_admin *a);

#endif

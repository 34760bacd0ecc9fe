/* px_admin: the admin listener (never the data port): GET /healthz,
 * GET /metrics (Prometheus text), GET /tokens/RESOURCE, the listing
 * GET /tokens?prefix=P&limit=N&after=CURSOR, and with the bearer secret
 * PUT /tokens/RESOURCE and POST /reload. A small server of its
 * own under the data listener's discipline: a connection limit, a head
 * deadline from accept, one request per connection, accept errors that
 * pause instead of spinning, the strict px_http1 parser. Loop thread only. */
#ifndef PX_ADMIN_H
#define PX_ADMIN_H

#include <stddef.h>

struct px_ctx;
struct px_admin;

#define PX_ADMIN_MAX_CONNS 64   /* open admin connections; then 503 */
#define PX_ADMIN_HEAD_MS   5000 /* from accept to a whole head; then closed */
/* Listen backlog: a burst of connections past PX_ADMIN_MAX_CONNS waits in the
 * kernel's accept queue to be refused; a full queue drops SYNs and leaves the
 * clients retrying for seconds, taking slots as they free up instead of a 503. */
#define PX_ADMIN_BACKLOG         1024
#define PX_ADMIN_ACCEPT_PAUSE_MS 100 /* after an accept() error */

/* Listens on host:port. ctx is borrowed and must outlive the admin.
 * Returns NULL with a message in err. Free with px_admin_free(). */
struct px_admin *px_admin_new(struct px_ctx *ctx, const char *host, int port, char *err,
                              size_t errlen);

/* Open admin connections (for tests and logs). Accepts NULL. */
size_t px_admin_conn_count(const struct px_admin *a);

/* Stops listening, closes its connections and frees. Accepts NULL. */
void px_admin_free(struct px_admin *a);

#endif

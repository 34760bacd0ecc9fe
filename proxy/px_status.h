/* px_status: the admin listener's status page and its data. GET / is one
 * self-contained HTML page (no external asset) that the proxy renders with
 * the current state, so it reads without JavaScript, and that refreshes
 * itself from GET /status.json every 2 s: resources with their highest
 * token and what is in flight or waiting, the recent rejections from the
 * audit trail, request and rejection rates, store commit latency, the
 * upstream pool, the config generation and the last reload's result. Loop
 * thread; reads the context, changes nothing. */
#ifndef PX_STATUS_H
#define PX_STATUS_H

#include <stddef.h>

struct px_ctx;

/* The documents, malloc'd (the caller frees), length in *len; NULL when
 * out of memory. */
char *px_status_json(const struct px_ctx *ctx, size_t *len);
char *px_status_html(const struct px_ctx *ctx, size_t *len);

#endif

/* px_tls: the TLS transport, one more ops table of the transport seam
 * (px_transport.h) and the only file of the proxy that speaks TLS (OpenSSL
 * through libevent's bufferevent_openssl). A server transport serves the
 * data and admin listeners ([tls] cert, key, versions, ciphers, ALPN
 * http/1.1, a session cache and rotated session tickets for resumption,
 * client certificates, OCSP stapling from a file); a client
 * transport connects to an https upstream (verification against upstream_ca
 * or the system store, SNI and the name check, an optional client
 * certificate, the last session reused for the next connection). Which
 * transport a listener or the pool uses is chosen once at start. Loop
 * thread only. */
#ifndef PX_TLS_H
#define PX_TLS_H

#include <stddef.h>

struct px_config;
struct px_transport;

/* A server transport from cfg's [tls] section (cfg->tls_cert set). The
 * files are read now. Returns NULL with a message in err. What it needs of
 * cfg is copied (a reload may free cfg). Free with px_tls_free(). */
struct px_transport *px_tls_server_new(const struct px_config *cfg, char *err, size_t errlen);

/* A client transport to cfg's https upstream (cfg->upstream_tls set):
 * upstream_ca, upstream_cert/upstream_key, [tls] min_version; SNI and the
 * certificate's name are cfg->upstream_host. NULL with a message in err.
 * cfg is copied. Free with px_tls_free(). */
struct px_transport *px_tls_client_new(const struct px_config *cfg, char *err, size_t errlen);

/* Rereads the certificates, keys and CA files (SIGHUP, POST /reload), from
 * the paths of the config the transport was made with ([tls] and the
 * upstream_* keys cannot change on a reload; the files behind them can).
 * New connections use them; established ones keep their session. When a
 * file is bad the old ones stay and the error is logged. Returns 0, or -1
 * (kept the old) with the logged message in err. */
int px_tls_reload(struct px_transport *t, char *err, size_t errlen);

/* Frees the transport (connections still open keep what they use until
 * they close) and NULLs *t. Accepts NULL and *t == NULL. */
void px_tls_free(struct px_transport **t);

#endif

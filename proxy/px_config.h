/* px_config: the proxy's configuration. An INI file (inih) parsed through one
 * declarative table of keys (section, name, type, offset, default) into an
 * immutable snapshot; unknown sections or keys and bad values are errors
 * reported as "FILE:LINE: message". The same table drives defaults,
 * validation and `fenceproxy -t`. */
#ifndef PX_CONFIG_H
#define PX_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "st_store.h"

struct pol_routes;

enum { PX_TLS_1_2 = 0, PX_TLS_1_3 = 1 };
enum { PX_VERIFY_OFF = 0, PX_VERIFY_OPTIONAL = 1, PX_VERIFY_ON = 2 };

struct px_config {
    /* [proxy] */
    char *listen;                 /* "127.0.0.1:8080" */
    char *upstream;               /* "http://127.0.0.1:8000" as written */
    char *upstream_host;          /* parsed from upstream */
    int upstream_port;
    int upstream_tls;             /* 1: upstream = https://... */
    char *upstream_ca;            /* "system" (default store) or a PEM file */
    char *upstream_cert;          /* client certificate to the upstream, or NULL */
    char *upstream_key;           /* its key; NULL when upstream_cert is */
    char *admin_listen;           /* "127.0.0.1:8081"; "off" disables */
    char *access_log;             /* path, or NULL for off */
    char *token_header;           /* "Fencing-Token" */
    uint64_t max_connections;     /* 10000 */
    uint64_t max_header_bytes;    /* 16384 */
    uint64_t max_response_header_bytes; /* 65536 */
    uint64_t header_timeout_ms;   /* 10 s: deadline for a whole head */
    uint64_t idle_timeout_ms;     /* 60 s: client keep-alive idle */
    uint64_t upstream_connect_timeout_ms; /* 5 s */
    uint64_t upstream_timeout_ms; /* 60 s: upstream response */
    uint64_t max_upstream_connections; /* 1024 */
    uint64_t upstream_queue_timeout_ms; /* 5 s */
    uint64_t shutdown_grace_ms;   /* 10 s */
    char *log_level;              /* "info": error|warn|info|debug */
    uint64_t resource_cache;      /* 1048576: resources cached by the fence */
    char *access_log_format;      /* "text" or "json" */
    char *admin_token_file;       /* NULL: admin writes are refused (403) */
    int admin_insecure;           /* on: a non-loopback admin_listen without a secret */
    char *admin_token;            /* the secret read from admin_token_file (trailing
                                   * newline removed), or NULL; owned */
    /* [store] */
    enum st_store_backend store_backend; /* file */
    char *store_path;             /* "/var/lib/fence" */
    uint64_t store_max_size;      /* 64 GiB: the file store's map grows up to it */
    uint64_t store_floor;         /* 0: none; else every highest is at least this */
    char *store_marker;           /* "auto" (the default) becomes "<store_path>.id" */
    char *store_endpoints;        /* etcd: "127.0.0.1:2379" */
    char *store_prefix;           /* etcd: "/fence/" */
    uint64_t store_lease_ttl_ms;  /* etcd: 10 s, the proxy's lease (ownership) */
    uint64_t store_max_txn_ops;   /* etcd: 128 (etcd's --max-txn-ops) */
    int store_etcd_tls;           /* etcd: https to the members */
    char *store_etcd_ca, *store_etcd_cert, *store_etcd_key; /* NULL: off */
    uint64_t store_margin_ms;     /* etcd: 2 s, self-fencing and lock-delay margin */
    uint64_t store_handover_wait_ms; /* etcd: 5 s, wait for another proxy's resource */
    uint64_t store_handover_poll_ms; /* etcd: 50 ms */
    uint64_t store_own_idle_ms;   /* etcd: 30 s, idle owned resources are given up */
    uint64_t store_timeout_ms;    /* etcd: 2 s per request */
    /* [audit] */
    char *audit_path;             /* NULL: audit off */
    int audit_required;           /* on: 503 to fenced requests while records cannot be written */
    /* [tls]: the listeners (data and admin) speak TLS when cert is set */
    char *tls_cert;               /* PEM chain, or NULL: plaintext listeners */
    char *tls_key;                /* PEM key; required with cert */
    int tls_min_version;          /* PX_TLS_1_2 (default) or PX_TLS_1_3 */
    char *tls_ciphers;            /* OpenSSL cipher list for TLS 1.2 */
    char *tls_ciphersuites;       /* TLS 1.3 suites */
    char *tls_client_ca;          /* CA file for client certificates, or NULL */
    int tls_verify_client;        /* PX_VERIFY_OFF, _OPTIONAL, _ON */
    uint64_t tls_session_cache;   /* sessions kept for resumption (0: none) */
    uint64_t tls_session_timeout_ms; /* lifetime of a cached session */
    int tls_session_tickets;      /* 1 (default): stateless tickets as well */
    uint64_t tls_ticket_rotate_ms; /* ticket key period (1 h); previous key one more */
    char *tls_ocsp_file;          /* DER OCSP response to staple, or NULL */
    /* [route NAME] ... */
    struct pol_routes *routes;    /* owned */
    /* "FILE:LINE: warning: ...\n" lines (escaped), or NULL; owned. */
    char *warnings;
    size_t token_header_len;      /* derived: strlen(token_header) */
    int access_log_json;          /* derived: access_log_format is json */
    unsigned refs;                /* holders (px_config_hold); not configuration */
};

/* Loads and validates path. Returns a new snapshot, or NULL with
 * "PATH:LINE: message" (or "PATH: message") in err. Free with
 * px_config_free(). */
struct px_config *px_config_load(const char *path, char *err, size_t errlen);

/* Resolves every host name of cfg (listen, admin_listen, upstream). Returns
 * 0, or -1 with "PATH: KEY: host 'NAME' does not resolve: ..." in err.
 * Blocking (getaddrinfo): for `-t` and start only. */
int px_config_resolve(const struct px_config *cfg, const char *path, char *err, size_t errlen);

/* Drops one hold on the snapshot (the loader's, or one of
 * px_config_hold()'s), frees it with the last, and NULLs *cfg. Accepts NULL
 * and *cfg == NULL. */
void px_config_free(struct px_config **cfg);

/* Takes one more hold on cfg (a request that started under it, the
 * running proxy); drop it with px_config_free(). Loop thread only. */
struct px_config *px_config_hold(const struct px_config *cfg);

/* What a reload checks beyond px_config_load(): that no key that cannot
 * change without a restart (listen, admin_listen, the store, the audit
 * path) differs between old and new. Returns 0, or -1 with "PATH: [SECT]
 * KEY cannot change on a reload (restart instead)" in err. */
int px_config_reload_check(const struct px_config *old, const struct px_config *new,
                           const char *path, char *err, size_t errlen);

/* Splits "host:port" (IPv4, name, or [v6]:port) into host (malloc'd, caller
 * frees) and port. Returns 0 or -1. */
int px_config_split_hostport(const char *text, char **host, int *port);

/* The key table, for `-t` output, docs and tests. Strings are static. */
struct px_config_key_info {
    const char *section;  /* "proxy", "store", "audit" or "route" ([route NAME]) */
    const char *name;
    const char *def;      /* default as written in the file; NULL: none */
    const char *help;
    int required;
    int reloadable;       /* may change without a restart */
};

/* Number of keys, and key i (0 <= i < count) into *out. Returns 0 or -1. */
size_t px_config_key_count(void);
int px_config_key_info(size_t i, struct px_config_key_info *out);

#endif

/* px_config: loads the INI file into a struct px_config snapshot. One table of
 * keys (keys[] below) gives each key's section, type, place in the struct
 * (or in a struct pol_route for [route NAME] keys), default, reloadability
 * and help; defaults, parsing, duplicate detection, required keys and
 * freeing are all driven by it. The file is read by our own line parser
 * with inih's syntax (name = value or name : value, ';' and '#' comment
 * lines, an inline comment after whitespace and ';'), because Debian's inih
 * (r55) is built with INI_MAX_LINE 200 and a stack buffer: a line of more
 * than 199 bytes (a long route prefix) cannot reach a handler, and neither
 * ini_parse_stream nor ini_parse_string can be given a larger buffer. Lines
 * of up to CONFIG_MAX_LINE bytes are accepted. The parser counts lines so
 * that every message says FILE:LINE, refuses indented continuation lines
 * (inih would glue them onto the previous value) and stops at the first
 * error. Messages escape every byte that is not printable ASCII as \xNN, so
 * a binary file cannot drive the operator's terminal. Checks that need the
 * network (host names that do not resolve) are in px_config_resolve(), for
 * `-t` and start. Warnings (a non-loopback admin address) go to
 * cfg->warnings as "FILE:LINE: warning: ..." lines. */
#include "px_config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include "fc_duration.h"
#include "fencelock.h"
#include "pol_chars.h"
#include "pol_route.h"

#define ERR_MAX 512
#define CONFIG_MAX_LINE 65536 /* bytes per line, newline excluded */
#define DAY_MS (24ULL * 3600 * 1000)

enum key_type {
    K_STRING,        /* non-empty text */
    K_PATH_OFF,      /* a path, or "off" stored as NULL */
    K_HOSTPORT,      /* host:port */
    K_HOSTPORT_OFF,  /* host:port, or "off" kept as "off" */
    K_URL,           /* http://host:port[/]; also sets upstream_host/port */
    K_TOKEN,         /* an RFC 9110 token (a header name) */
    K_UINT,          /* decimal, within [min, max] */
    K_SIZE,          /* bytes, decimal with an optional KiB|MiB|GiB|TiB, within [min, max] */
    K_DURATION,      /* fc_duration_parse, milliseconds within [min, max] */
    K_ENUM,          /* one of choices, stored as its int value */
    K_WORD,          /* one of choices, stored as the text */
    K_ROUTE_MODE,    /* pol_route_parse_mode */
    K_ROUTE_METHODS, /* pol_route_parse_methods */
    K_LOCK_URL,      /* a lock backend URL that libfencelock accepts */
    K_LOCK_NAME      /* a lock_name template (pol_route_check_lock_name) */
};

enum sect { S_NONE, S_PROXY, S_STORE, S_AUDIT, S_TLS, S_ROUTE };

static const char *const sect_names[] = {"", "proxy", "store", "audit", "tls", "route"};

struct choice {
    const char *name;
    int value;
};

#define KF_REQUIRED 1u
#define KF_RELOAD 2u

struct key {
    enum sect sect;
    const char *name;
    enum key_type type;
    size_t off; /* into struct px_config, or struct pol_route for S_ROUTE */
    const char *def; /* parsed like a value from the file; NULL: none */
    uint64_t min, max;
    const struct choice *choices; /* K_ENUM, K_WORD: ends with a NULL name */
    unsigned flags;
    const char *help;
};

static const struct choice backend_choices[] = {
    {"file", ST_STORE_FILE}, {"memory", ST_STORE_MEMORY}, {"etcd", ST_STORE_ETCD}, {NULL, 0}};
static const struct choice level_choices[] = {
    {"error", 0}, {"warn", 0}, {"info", 0}, {"debug", 0}, {NULL, 0}};
static const struct choice missing_choices[] = {{"reject", 0}, {"allow", 1}, {NULL, 0}};
static const struct choice semantics_choices[] = {
    {"normalized", POL_PATH_NORMALIZED}, {"opaque", POL_PATH_OPAQUE}, {NULL, 0}};
static const struct choice errfmt_choices[] = {
    {"json", POL_ERRFMT_JSON}, {"s3", POL_ERRFMT_S3}, {NULL, 0}};
static const struct choice on_off_choices[] = {{"off", 0}, {"on", 1}, {NULL, 0}};
static const struct choice tls_version_choices[] = {
    {"TLS1.2", PX_TLS_1_2}, {"TLS1.3", PX_TLS_1_3}, {NULL, 0}};
static const struct choice verify_choices[] = {
    {"off", PX_VERIFY_OFF}, {"optional", PX_VERIFY_OPTIONAL}, {"on", PX_VERIFY_ON}, {NULL, 0}};
static const struct choice access_format_choices[] = {{"text", 0}, {"json", 0}, {NULL, 0}};

_Static_assert(sizeof(enum st_store_backend) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum pol_path_semantics) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum pol_error_format) == sizeof(int), "enum stored as int");

#define PC(f) offsetof(struct px_config, f)
#define RT(f) offsetof(struct pol_route, f)

static const struct key keys[] = {
    {S_PROXY, "listen", K_HOSTPORT, PC(listen), "127.0.0.1:8080", 0, 0, NULL, 0,
     "address the proxy serves clients on (host:port, [v6]:port)"},
    {S_PROXY, "upstream", K_URL, PC(upstream), NULL, 0, 0, NULL, KF_REQUIRED | KF_RELOAD,
     "the storage server, http://host:port or https://host:port"},
    {S_PROXY, "upstream_ca", K_STRING, PC(upstream_ca), "system", 0, 0, NULL, 0,
     "CA file (PEM) that verifies an https upstream, or system (the system store)"},
    {S_PROXY, "upstream_cert", K_PATH_OFF, PC(upstream_cert), "off", 0, 0, NULL, 0,
     "client certificate (PEM) the proxy shows an https upstream (mTLS), or off"},
    {S_PROXY, "upstream_key", K_PATH_OFF, PC(upstream_key), "off", 0, 0, NULL, 0,
     "key of upstream_cert (PEM), or off"},
    {S_PROXY, "admin_listen", K_HOSTPORT_OFF, PC(admin_listen), "127.0.0.1:8081", 0, 0, NULL,
     0, "admin API address (healthz, metrics, tokens), or off; never the data port"},
    {S_PROXY, "access_log", K_PATH_OFF, PC(access_log), "off", 0, 0, NULL, KF_RELOAD,
     "file for one line per request, or off"},
    {S_PROXY, "token_header", K_TOKEN, PC(token_header), "Fencing-Token", 0, 0, NULL,
     KF_RELOAD, "request header that carries the fencing token"},
    {S_PROXY, "max_connections", K_UINT, PC(max_connections), "10000", 1, 1000000, NULL,
     KF_RELOAD, "client connections at once; beyond it 503 and close"},
    {S_PROXY, "max_header_bytes", K_UINT, PC(max_header_bytes), "16384", 1024, 1048576, NULL,
     KF_RELOAD, "largest request head in bytes; beyond it 431"},
    {S_PROXY, "max_response_header_bytes", K_UINT, PC(max_response_header_bytes), "65536", 1024,
     1048576, NULL, KF_RELOAD, "largest response head in bytes; beyond it 502"},
    {S_PROXY, "header_timeout", K_DURATION, PC(header_timeout_ms), "10s", 1, DAY_MS, NULL,
     KF_RELOAD, "deadline for a whole request head; then 408 and close"},
    {S_PROXY, "idle_timeout", K_DURATION, PC(idle_timeout_ms), "60s", 1, DAY_MS, NULL,
     KF_RELOAD, "how long an idle keep-alive client connection is kept"},
    {S_PROXY, "upstream_connect_timeout", K_DURATION, PC(upstream_connect_timeout_ms), "5s",
     1, DAY_MS, NULL, KF_RELOAD, "upstream connect deadline; then 504"},
    {S_PROXY, "upstream_timeout", K_DURATION, PC(upstream_timeout_ms), "60s", 1, DAY_MS,
     NULL, KF_RELOAD, "wait for the upstream's response; then 504"},
    {S_PROXY, "max_upstream_connections", K_UINT, PC(max_upstream_connections), "1024", 1,
     1000000, NULL, KF_RELOAD, "connections to the upstream at once; beyond it requests queue"},
    {S_PROXY, "upstream_queue_timeout", K_DURATION, PC(upstream_queue_timeout_ms), "5s", 1,
     DAY_MS, NULL, KF_RELOAD, "how long a request queues for an upstream connection; then 503"},
    {S_PROXY, "shutdown_grace", K_DURATION, PC(shutdown_grace_ms), "10s", 0, DAY_MS, NULL,
     KF_RELOAD, "on SIGTERM/SIGINT, time in-flight requests get to finish"},
    {S_PROXY, "resource_cache", K_UINT, PC(resource_cache), "1048576", 1, 1ULL << 32, NULL,
     KF_RELOAD, "resources whose highest token is kept in memory; beyond it idle ones go"},
    {S_PROXY, "access_log_format", K_WORD, PC(access_log_format), "text", 0, 0,
     access_format_choices, KF_RELOAD, "access log lines: text or json (one object a line)"},
    {S_PROXY, "log_level", K_WORD, PC(log_level), "info", 0, 0, level_choices, KF_RELOAD,
     "diagnostic log level: error, warn, info or debug"},
    {S_PROXY, "admin_token_file", K_PATH_OFF, PC(admin_token_file), "off", 0, 0, NULL, 0,
     "file holding the bearer secret admin writes need (mode 0600 or stricter), or off"},
    {S_PROXY, "admin_insecure", K_ENUM, PC(admin_insecure), "off", 0, 0, on_off_choices, 0,
     "on: allow a non-loopback admin_listen without admin_token_file"},
    {S_STORE, "backend", K_ENUM, PC(store_backend), "file", 0, 0, backend_choices, 0,
     "token store: file (durable, LMDB), etcd (shared by several proxies) or memory (tests)"},
    {S_STORE, "path", K_STRING, PC(store_path), "/var/lib/fence", 0, 0, NULL, 0,
     "directory of the file store"},
    {S_STORE, "marker", K_STRING, PC(store_marker), "auto", 0, 0, NULL, 0,
     "file that remembers the store's identity; auto: the store path + \".id\""},
    {S_STORE, "max_size", K_SIZE, PC(store_max_size), "64GiB", 1ULL << 20, 1ULL << 44, NULL, 0,
     "largest size of the file store; beyond it new resources get 503 (store_full)"},
    {S_STORE, "floor", K_UINT, PC(store_floor), "0", 0, UINT64_MAX, NULL, 0,
     "operator floor: every resource's highest is raised to it at start (recovery; 0 none)"},
    {S_STORE, "endpoints", K_STRING, PC(store_endpoints), "127.0.0.1:2379", 0, 0, NULL, 0,
     "etcd store: the members' client addresses, host:port,host:port,..."},
    {S_STORE, "prefix", K_STRING, PC(store_prefix), "/fence/", 0, 0, NULL, 0,
     "etcd store: prefix of every key the proxy writes (tokens under PREFIX tok/)"},
    {S_STORE, "lease_ttl", K_DURATION, PC(store_lease_ttl_ms), "10s", 2000, 3600000, NULL, 0,
     "etcd store: TTL of the proxy's etcd lease (resource ownership)"},
    {S_STORE, "etcd_tls", K_ENUM, PC(store_etcd_tls), "off", 0, 0, on_off_choices, 0,
     "etcd store: on: https to every member, verified against etcd_ca and its name"},
    {S_STORE, "etcd_ca", K_PATH_OFF, PC(store_etcd_ca), "off", 0, 0, NULL, 0,
     "etcd store: CA bundle (PEM) the members are verified against; off: the system store"},
    {S_STORE, "etcd_cert", K_PATH_OFF, PC(store_etcd_cert), "off", 0, 0, NULL, 0,
     "etcd store: client certificate (PEM) shown to members that ask for one"},
    {S_STORE, "etcd_key", K_PATH_OFF, PC(store_etcd_key), "off", 0, 0, NULL, 0,
     "etcd store: the client certificate's private key (PEM)"},
    {S_STORE, "margin", K_DURATION, PC(store_margin_ms), "2s", 100, 600000, NULL, 0,
     "etcd store: self-fencing margin (stop at last keepalive + lease_ttl - margin) and the "
     "new owner's extra wait; lease_ttl must be above twice it"},
    {S_STORE, "handover_wait", K_DURATION, PC(store_handover_wait_ms), "5s", 10, 600000, NULL, 0,
     "etcd store: how long a request waits for another proxy to hand its resource over; "
     "then 503 with Retry-After"},
    {S_STORE, "handover_poll", K_DURATION, PC(store_handover_poll_ms), "50ms", 5, 10000, NULL, 0,
     "etcd store: how often hand-over requests are looked for and retried"},
    {S_STORE, "own_idle", K_DURATION, PC(store_own_idle_ms), "30s", 0, DAY_MS, NULL, 0,
     "etcd store: an owned resource without requests for this long is given up (0: never)"},
    {S_STORE, "max_txn_ops", K_UINT, PC(store_max_txn_ops), "128", 12, 65536, NULL, 0,
     "etcd store: etcd's --max-txn-ops; a group commit holds up to this minus 3 advances"},
    {S_STORE, "timeout", K_DURATION, PC(store_timeout_ms), "2s", 100, 60000, NULL, 0,
     "etcd store: deadline of one etcd request; then 503 (fail closed)"},
    {S_AUDIT, "path", K_PATH_OFF, PC(audit_path), "off", 0, 0, NULL, 0,
     "audit log file (JSON lines, hash-chained), or off"},
    {S_AUDIT, "required", K_ENUM, PC(audit_required), "off", 0, 0, on_off_choices, 0,
     "on: fenced requests get 503 while audit records cannot be written"},
    {S_TLS, "cert", K_PATH_OFF, PC(tls_cert), "off", 0, 0, NULL, 0,
     "certificate chain (PEM) of the data and admin listeners; off: plaintext"},
    {S_TLS, "key", K_PATH_OFF, PC(tls_key), "off", 0, 0, NULL, 0,
     "private key (PEM) of cert; reread with cert on SIGHUP"},
    {S_TLS, "min_version", K_ENUM, PC(tls_min_version), "TLS1.2", 0, 0, tls_version_choices, 0,
     "oldest protocol accepted (and offered upstream): TLS1.2 or TLS1.3"},
    {S_TLS, "ciphers", K_STRING, PC(tls_ciphers), "HIGH:!aNULL:!kRSA:!MD5:!RC4:!3DES", 0, 0,
     NULL, 0, "OpenSSL cipher list for TLS 1.2"},
    {S_TLS, "ciphersuites", K_STRING, PC(tls_ciphersuites),
     "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256", 0, 0, NULL,
     0, "TLS 1.3 cipher suites"},
    {S_TLS, "client_ca", K_PATH_OFF, PC(tls_client_ca), "off", 0, 0, NULL, 0,
     "CA file (PEM) that client certificates must chain to, or off"},
    {S_TLS, "verify_client", K_ENUM, PC(tls_verify_client), "off", 0, 0, verify_choices, 0,
     "client certificates: off, optional (verified when sent) or on (required)"},
    {S_TLS, "session_cache", K_UINT, PC(tls_session_cache), "20480", 0, 10000000, NULL, 0,
     "TLS sessions kept for resumption (0: none)"},
    {S_TLS, "session_timeout", K_DURATION, PC(tls_session_timeout_ms), "5m", 1000, DAY_MS,
     NULL, 0, "how long a session can be resumed"},
    {S_TLS, "session_tickets", K_ENUM, PC(tls_session_tickets), "on", 0, 0, on_off_choices, 0,
     "on: resumption by session tickets too (a key in memory, rotated); off: the cache only"},
    {S_TLS, "ticket_key_rotate", K_DURATION, PC(tls_ticket_rotate_ms), "1h", 1000, DAY_MS, NULL,
     0, "the ticket key changes this often and on every reload; the previous one is accepted "
        "one period more"},
    {S_TLS, "ocsp_file", K_PATH_OFF, PC(tls_ocsp_file), "off", 0, 0, NULL, 0,
     "OCSP response (DER) for cert, stapled for clients that ask; reread on reload; or off"},
    {S_ROUTE, "prefix", K_STRING, RT(prefix), NULL, 0, 0, NULL, KF_REQUIRED | KF_RELOAD,
     "path prefix the route covers; the longest match wins"},
    {S_ROUTE, "resource", K_ROUTE_MODE, 0, "prefix", 0, 0, NULL, KF_RELOAD,
     "resource key: prefix, path or segments:N"},
    {S_ROUTE, "fenced_methods", K_ROUTE_METHODS, 0, POL_ROUTE_DEFAULT_METHODS, 0, 0, NULL,
     KF_RELOAD, "methods that must carry a token (space separated)"},
    {S_ROUTE, "missing_token", K_ENUM, RT(missing_allow), "reject", 0, 0, missing_choices,
     KF_RELOAD, "a fenced method without a token: reject (428) or allow"},
    {S_ROUTE, "path_semantics", K_ENUM, RT(semantics), "normalized", 0, 0, semantics_choices,
     KF_RELOAD, "how the store resolves paths: normalized (file system) or opaque (S3 keys)"},
    {S_ROUTE, "error_format", K_ENUM, RT(error_format), "json", 0, 0, errfmt_choices,
     KF_RELOAD, "rejection bodies: json or s3 (XML <Error> as S3 clients parse)"},
    {S_ROUTE, "verify", K_LOCK_URL, RT(verify), "off", 0, 0, NULL, 0,
     "lock backend URL (as fencelock --backend), or off: an advance is verified first"},
    {S_ROUTE, "require_live_lease", K_ENUM, RT(require_live_lease), "off", 0, 0, on_off_choices,
     0, "on: a token equal to the highest is also checked to be held now (needs verify)"},
    {S_ROUTE, "live_lease_cache", K_DURATION, RT(live_lease_cache_ms), "0ms", 0, DAY_MS, NULL, 0,
     "with require_live_lease: reuse a check for up to this long, never past the lease"},
    {S_ROUTE, "lock_name", K_LOCK_NAME, RT(lock_name), POL_LOCK_NAME_VAR, 0, 0, NULL, 0,
     "lock name for a resource, with {resource}; default: the resource key itself"},
};

#define NKEYS (sizeof keys / sizeof keys[0])
/* A bit per keys[] index. */
#define SEEN_WORDS 3
_Static_assert(NKEYS <= SEEN_WORDS * 64, "seen masks are too small");
#define SEEN(m, i) (((m)[(i) / 64] >> ((i) % 64)) & 1u)
#define SEEN_SET(m, i) ((m)[(i) / 64] |= 1ULL << ((i) % 64))

struct load {
    const char *path;
    FILE *fp;
    char *buf;
    size_t bufcap;
    unsigned lineno;        /* line last handed to inih */
    struct px_config *cfg;
    int failed;
    unsigned err_line;      /* 0: file-level message */
    char err[ERR_MAX];
    enum sect sect;
    unsigned sects_seen;    /* bit per enum sect, for duplicates */
    uint64_t seen[SEEN_WORDS]; /* bit per keys[] index, non-route keys */
    unsigned key_line[NKEYS];
    /* the [route NAME] section being read */
    int route_open;
    struct pol_route route;
    unsigned route_line;
    unsigned route_prefix_line;
    uint64_t route_seen[SEEN_WORDS];
};

static void fail(struct load *ld, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records the first error only: later ones are usually its consequences. */
/* Copies s into out (cap bytes) with every byte outside printable ASCII as
 * \xNN: config values reach the terminal in messages. */
static void escape_into(const char *s, char *out, size_t cap)
{
    size_t k = 0;

    for (; *s != '\0' && k + 5 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c < 0x7f)
            out[k++] = (char)c;
        else
            k += (size_t)snprintf(out + k, cap - k, "\\x%02x", c);
    }
    out[k] = '\0';
}

static void fail(struct load *ld, unsigned line, const char *fmt, ...)
{
    char raw[ERR_MAX];
    va_list ap;

    if (ld->failed)
        return;
    ld->failed = 1;
    ld->err_line = line;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    escape_into(raw, ld->err, sizeof ld->err);
}

/* Adds "PATH:LINE: warning: message" to cfg->warnings. */
static void warn(struct load *ld, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void warn(struct load *ld, unsigned line, const char *fmt, ...)
{
    char raw[ERR_MAX], msg[ERR_MAX], path[256], *w = NULL;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    escape_into(raw, msg, sizeof msg);
    escape_into(ld->path, path, sizeof path);
    if (asprintf(&w, "%s%s:%u: warning: %s\n", ld->cfg->warnings ? ld->cfg->warnings : "", path,
                 line, msg) < 0)
        return;
    free(ld->cfg->warnings);
    ld->cfg->warnings = w;
}

static int parse_port(const char *s, int *port)
{
    unsigned long v = 0;

    if (*s == '\0' || strlen(s) > 5)
        return -1;
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (unsigned long)(*p - '0');
    }
    if (v < 1 || v > 65535)
        return -1;
    *port = (int)v;
    return 0;
}

int px_config_split_hostport(const char *text, char **host, int *port)
{
    const char *colon, *hs, *he;
    char *h = NULL;
    int p, rc = -1;

    if (text == NULL || host == NULL || port == NULL)
        goto out;
    if (text[0] == '[') {
        /* [v6]:port: the brackets are what tells the port's colon apart. */
        he = strchr(text, ']');
        if (he == NULL || he == text + 1 || he[1] != ':')
            goto out;
        hs = text + 1;
        colon = he + 1;
        for (const char *c = hs; c < he; c++)
            if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f') ||
                  (*c >= 'A' && *c <= 'F') || *c == ':' || *c == '.'))
                goto out;
    } else {
        colon = strrchr(text, ':');
        if (colon == NULL || colon == text)
            goto out;
        hs = text;
        he = colon;
        for (const char *c = hs; c < he; c++)
            if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') ||
                  (*c >= 'A' && *c <= 'Z') || *c == '.' || *c == '-' || *c == '_'))
                goto out; /* also rejects an unbracketed v6 address */
    }
    if (parse_port(colon + 1, &p) != 0)
        goto out;
    h = strndup(hs, (size_t)(he - hs));
    if (h == NULL)
        goto out;
    *host = h;
    *port = p;
    rc = 0;
out:
    return rc;
}

/* Is host (from px_config_split_hostport) a valid IPv4 address, IPv6
 * address or DNS name? A dotted quad must be one (256.1.1.1 is refused, not
 * resolved as a name). msg says why not. */
static int check_host(const char *host, char *msg, size_t cap)
{
    unsigned char a[16];
    size_t len = strlen(host), label = 0;
    int numeric = 1;

    if (strchr(host, ':') != NULL) {
        if (inet_pton(AF_INET6, host, a) != 1) {
            snprintf(msg, cap, "'%s' is not an IPv6 address", host);
            return -1;
        }
        return 0;
    }
    for (const char *c = host; *c != '\0'; c++)
        if (!((*c >= '0' && *c <= '9') || *c == '.'))
            numeric = 0;
    if (numeric) {
        if (inet_pton(AF_INET, host, a) != 1) {
            snprintf(msg, cap, "'%s' is not an IPv4 address", host);
            return -1;
        }
        return 0;
    }
    if (len > 253)
        goto bad;
    for (size_t i = 0; i <= len; i++) {
        if (host[i] == '.' || host[i] == '\0') {
            if (label == 0 || label > 63 || host[i - 1] == '-')
                goto bad;
            label = 0;
        } else {
            if (label == 0 && host[i] == '-')
                goto bad;
            label++;
        }
    }
    return 0;
bad:
    snprintf(msg, cap, "'%s' is not a valid host name", host);
    return -1;
}

/* Parses an upstream URL into host and port. msg says why not. */
static int parse_url(const char *v, char **host, int *port, int *tls, char *msg, size_t cap)
{
    char *hp = NULL;
    const char *rest;
    size_t n;
    int rc = -1;

    *tls = strncasecmp(v, "https://", 8) == 0;
    if (!*tls && strncasecmp(v, "http://", 7) != 0) {
        snprintf(msg, cap, "must be http://host:port or https://host:port");
        goto out;
    }
    rest = v + (*tls ? 8 : 7);
    n = strcspn(rest, "/?#@");
    if (rest[n] == '@' || rest[n] == '?' || rest[n] == '#' ||
        (rest[n] == '/' && rest[n + 1] != '\0')) {
        snprintf(msg, cap, "must be http://host:port (no user, path or query)");
        goto out;
    }
    hp = strndup(rest, n);
    if (hp == NULL) {
        snprintf(msg, cap, "out of memory");
        goto out;
    }
    if (px_config_split_hostport(hp, host, port) != 0) {
        snprintf(msg, cap, "must be http://host:port with a port 1..65535");
        goto out;
    }
    if (check_host(*host, msg, cap) != 0) {
        free(*host);
        *host = NULL;
        goto out;
    }
    rc = 0;
out:
    free(hp);
    return rc;
}

static int parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;

    if (*s == '\0')
        return -1;
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' || v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *out = v;
    return 0;
}

static const struct choice *find_choice(const struct choice *c, const char *v)
{
    for (; c->name != NULL; c++)
        if (strcmp(c->name, v) == 0)
            return c;
    return NULL;
}

static void choice_list(const struct choice *c, char *out, size_t cap)
{
    size_t n = 0;

    out[0] = '\0';
    for (; c->name != NULL && n < cap; c++) {
        int k = snprintf(out + n, cap - n, "%s%s", n ? ", " : "", c->name);
        if (k < 0)
            break;
        n += (size_t)k;
    }
}

/* A size: digits, then nothing (bytes) or KiB, MiB, GiB, TiB. */
static int parse_size(const char *s, uint64_t *out)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
    char num[32];
    size_t n = strspn(s, "0123456789");
    uint64_t v, mul = 1;

    if (n == 0 || n >= sizeof num)
        return -1;
    memcpy(num, s, n);
    num[n] = '\0';
    if (parse_u64(num, &v) != 0)
        return -1;
    if (s[n] != '\0') {
        size_t i;
        for (i = 0; i < 4 && strcmp(s + n, units[i]) != 0; i++)
            ;
        if (i == 4)
            return -1;
        mul = 1ULL << (10 * (i + 1));
    }
    if (v > UINT64_MAX / mul)
        return -1;
    *out = v * mul;
    return 0;
}

static int set_string(void *base, size_t off, const char *v, char *msg, size_t cap)
{
    char **field = (char **)((char *)base + off);
    char *copy = NULL;

    if (v != NULL && (copy = strdup(v)) == NULL) {
        snprintf(msg, cap, "out of memory");
        return -1;
    }
    free(*field);
    *field = copy;
    return 0;
}

/* Method names are case-sensitive (RFC 9110 9.1) and matched exactly, so
 * "put" is not PUT: a route with it would leave PUT unfenced. A name that
 * is a standard method in the wrong case is therefore refused, not warned
 * about. msg says which. */
static int check_methods(const char *v, char *msg, size_t cap)
{
    static const char *const std[] = {"GET",     "HEAD",     "POST",      "PUT",   "DELETE",
                                      "CONNECT", "OPTIONS",  "TRACE",     "PATCH", "PROPFIND",
                                      "PROPPATCH", "MKCOL",  "COPY",      "MOVE",  "LOCK",
                                      "UNLOCK",  "SEARCH",   NULL};

    for (const char *p = v; *p != '\0';) {
        size_t n;
        while (*p == ' ' || *p == '\t')
            p++;
        n = strcspn(p, " \t");
        if (n == 0)
            break;
        for (size_t i = 0; i < n; i++)
            if (!pol_chars_is_tchar((unsigned char)p[i])) {
                snprintf(msg, cap, "'%.*s' is not a method name (an HTTP token)", (int)n, p);
                return -1;
            }
        for (size_t k = 0; std[k] != NULL; k++)
            if (strlen(std[k]) == n && strncasecmp(std[k], p, n) == 0 &&
                strncmp(std[k], p, n) != 0) {
                snprintf(msg, cap,
                         "'%.*s' is not %s: method names are case-sensitive and matched "
                         "exactly, so this would leave %s unfenced",
                         (int)n, p, std[k], std[k]);
                return -1;
            }
        p += n;
    }
    return 0;
}

/* Applies value v of key k to base (cfg or the open route). Returns 0, or
 * -1 with the reason in msg. Used for defaults and for the file alike. */
static int apply(const struct key *k, void *base, struct px_config *cfg, const char *v,
                 char *msg, size_t cap)
{
    char *host = NULL, names[128];
    int port, rc = -1;
    uint64_t u;
    const struct choice *c;

    if (*v == '\0') {
        snprintf(msg, cap, "empty value");
        goto out;
    }
    switch (k->type) {
    case K_STRING:
        rc = set_string(base, k->off, v, msg, cap);
        break;
    case K_PATH_OFF:
        rc = set_string(base, k->off, strcmp(v, "off") == 0 ? NULL : v, msg, cap);
        break;
    case K_HOSTPORT:
    case K_HOSTPORT_OFF:
        if (k->type == K_HOSTPORT_OFF && strcmp(v, "off") == 0) {
            rc = set_string(base, k->off, v, msg, cap);
            break;
        }
        if (px_config_split_hostport(v, &host, &port) != 0) {
            snprintf(msg, cap, "'%s' is not host:port (port 1..65535; [addr]:port for IPv6)", v);
            break;
        }
        if (check_host(host, msg, cap) != 0)
            break;
        rc = set_string(base, k->off, v, msg, cap);
        break;
    case K_URL:
        if (parse_url(v, &host, &port, &cfg->upstream_tls, msg, cap) != 0)
            break;
        if (set_string(base, k->off, v, msg, cap) != 0)
            break;
        free(cfg->upstream_host);
        cfg->upstream_host = host;
        cfg->upstream_port = port;
        host = NULL;
        rc = 0;
        break;
    case K_TOKEN:
        for (const char *p = v; *p != '\0'; p++) {
            if (!pol_chars_is_tchar((unsigned char)*p)) {
                snprintf(msg, cap, "'%s' is not a valid header name", v);
                goto out;
            }
        }
        rc = set_string(base, k->off, v, msg, cap);
        break;
    case K_UINT:
    case K_SIZE:
    case K_DURATION:
        if (k->type == K_SIZE ? parse_size(v, &u) != 0
            : k->type == K_UINT ? parse_u64(v, &u) != 0 : fc_duration_parse(v, &u) != 0) {
            snprintf(msg, cap, k->type == K_UINT ? "'%s' is not a number"
                     : k->type == K_SIZE ? "'%s' is not a size (like 512MiB, 64GiB)"
                     : "'%s' is not a duration (like 250ms, 5s, 2m, 1h)", v);
            break;
        }
        if (u < k->min || u > k->max) {
            snprintf(msg, cap, "%s out of range (%llu..%llu%s)", v,
                     (unsigned long long)k->min, (unsigned long long)k->max,
                     k->type == K_DURATION ? " ms" : "");
            break;
        }
        *(uint64_t *)((char *)base + k->off) = u;
        rc = 0;
        break;
    case K_ENUM:
    case K_WORD:
        c = find_choice(k->choices, v);
        if (c == NULL) {
            choice_list(k->choices, names, sizeof names);
            snprintf(msg, cap, "'%s' is not one of: %s", v, names);
            break;
        }
        if (k->type == K_ENUM) {
            *(int *)((char *)base + k->off) = c->value;
            rc = 0;
        } else {
            rc = set_string(base, k->off, v, msg, cap);
        }
        break;
    case K_ROUTE_MODE:
        rc = pol_route_parse_mode(base, v);
        if (rc != 0)
            snprintf(msg, cap, "'%s' is not prefix, path or segments:N (N >= 1)", v);
        break;
    case K_LOCK_URL: {
        char why[200];
        struct fl_client *lc;
        if (strcmp(v, "off") == 0) {
            rc = set_string(base, k->off, NULL, msg, cap);
            break;
        }
        lc = fl_client_new(v, why, sizeof why);
        if (lc == NULL) {
            snprintf(msg, cap, "'%s' is not a lock backend URL: %s", v, why);
            break;
        }
        fl_client_free(&lc);
        rc = set_string(base, k->off, v, msg, cap);
        break;
    }
    case K_LOCK_NAME:
        if (pol_route_check_lock_name(v, names, sizeof names) != 0) {
            snprintf(msg, cap, "'%s' %s", v, names);
            break;
        }
        /* The key itself is stored as NULL: no template to apply. */
        rc = set_string(base, k->off, strcmp(v, POL_LOCK_NAME_VAR) == 0 ? NULL : v, msg, cap);
        break;
    case K_ROUTE_METHODS:
        if (check_methods(v, msg, cap) != 0)
            break;
        rc = pol_route_parse_methods(base, v);
        if (rc != 0)
            snprintf(msg, cap, "'%s' is not a list of at most %d method names", v,
                     POL_ROUTE_METHODS_MAX);
        break;
    }
out:
    free(host);
    return rc;
}

static int key_index(enum sect s, const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (keys[i].sect == s && strcmp(keys[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* Applies the table's defaults for section s to base. A default that does
 * not parse is a bug in the table; it is reported like a config error. */
static int apply_defaults(struct load *ld, enum sect s, void *base)
{
    char msg[256];

    for (size_t i = 0; i < NKEYS; i++) {
        if (keys[i].sect != s || keys[i].def == NULL)
            continue;
        if (apply(&keys[i], base, ld->cfg, keys[i].def, msg, sizeof msg) != 0) {
            fail(ld, 0, "default of %s: %s", keys[i].name, msg);
            return -1;
        }
    }
    return 0;
}

/* Ends the open [route NAME] section: checks required keys and adds a copy
 * to the table. */
static void route_close(struct load *ld)
{
    char msg[256];

    if (!ld->route_open)
        return;
    ld->route_open = 0;
    if (!ld->failed) {
        for (size_t i = 0; i < NKEYS; i++) {
            if (keys[i].sect == S_ROUTE && (keys[i].flags & KF_REQUIRED) &&
                !SEEN(ld->route_seen, i)) {
                fail(ld, ld->route_line, "[route %s]: %s is required", ld->route.name,
                     keys[i].name);
                goto out;
            }
        }
        if (pol_routes_add(ld->cfg->routes, &ld->route, msg, sizeof msg) != 0)
            fail(ld, ld->route_prefix_line, "%s", msg);
    }
out:
    pol_route_release(&ld->route);
}

static int valid_route_name(const char *s)
{
    if (*s == '\0' || strlen(s) >= POL_ROUTE_NAME_MAX)
        return 0;
    for (; *s != '\0'; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '_' || *s == '.' || *s == '-'))
            return 0;
    return 1;
}

/* A line whose first non-blank byte is '[' opens a section. p points at the
 * '['. Sets ld->sect, or records an error. */
static void section_header(struct load *ld, const char *p)
{
    const char *end = strchr(p, ']'), *tail;
    char name[256];
    size_t n;

    route_close(ld);
    if (ld->failed)
        return;
    if (end == NULL) {
        fail(ld, ld->lineno, "unterminated section header");
        return;
    }
    for (tail = end + 1; *tail == ' ' || *tail == '\t' || *tail == '\r' || *tail == '\n';
         tail++)
        ;
    if (*tail != '\0' && *tail != ';' && *tail != '#') {
        fail(ld, ld->lineno, "unexpected text after section header");
        return;
    }
    n = (size_t)(end - p - 1);
    if (n >= sizeof name) {
        fail(ld, ld->lineno, "section name too long");
        return;
    }
    memcpy(name, p + 1, n);
    name[n] = '\0';
    for (enum sect s = S_PROXY; s <= S_TLS; s++) {
        if (strcmp(name, sect_names[s]) == 0) {
            if (ld->sects_seen & (1u << s)) {
                fail(ld, ld->lineno, "duplicate section [%s]", name);
                return;
            }
            ld->sects_seen |= 1u << s;
            ld->sect = s;
            return;
        }
    }
    if (strncmp(name, "route", 5) == 0 && (name[5] == '\0' || name[5] == ' ')) {
        const char *rn = name + 5;
        while (*rn == ' ')
            rn++;
        if (!valid_route_name(rn)) {
            fail(ld, ld->lineno,
                 "a route section is [route NAME], NAME of 1..%d characters A-Z a-z 0-9 _ . -",
                 POL_ROUTE_NAME_MAX - 1);
            return;
        }
        for (size_t i = 0; i < pol_routes_count(ld->cfg->routes); i++) {
            if (strcmp(pol_routes_get(ld->cfg->routes, i)->name, rn) == 0) {
                fail(ld, ld->lineno, "duplicate section [route %s]", rn);
                return;
            }
        }
        pol_route_defaults(&ld->route);
        memcpy(ld->route.name, rn, strlen(rn) + 1);
        ld->route_open = 1;
        ld->route_line = ld->lineno;
        ld->route_prefix_line = ld->lineno;
        memset(ld->route_seen, 0, sizeof ld->route_seen);
        ld->sect = S_ROUTE;
        apply_defaults(ld, S_ROUTE, &ld->route);
        return;
    }
    fail(ld, ld->lineno, "unknown section [%s]", name);
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static int handler(struct load *ld, const char *name, const char *value);

/* Reads the file line by line (inih's syntax, see the file comment) and
 * hands each name = value pair to handler(). Stops at the first error. */
static void parse_file(struct load *ld)
{
    ssize_t n;

    while (!ld->failed) {
        char *p, *sep, *end, *value;

        errno = 0;
        n = getline(&ld->buf, &ld->bufcap, ld->fp);
        if (n < 0) {
            if (ferror(ld->fp))
                fail(ld, 0, "read error: %s", strerror(errno));
            return;
        }
        ld->lineno++;
        p = ld->buf;
        if (strlen(p) != (size_t)n) {
            fail(ld, ld->lineno, "NUL byte in line");
            return;
        }
        if ((size_t)n > CONFIG_MAX_LINE + 1 ||
            ((size_t)n == CONFIG_MAX_LINE + 1 && p[n - 1] != '\n')) {
            fail(ld, ld->lineno, "line too long (at most %d bytes)", CONFIG_MAX_LINE);
            return;
        }
        if (ld->lineno == 1 && strncmp(p, "\xEF\xBB\xBF", 3) == 0)
            p += 3; /* UTF-8 byte order mark */
        const char *start = p;
        while (*p == ' ' || *p == '\t')
            p++;
        for (end = p + strlen(p); end > p && is_space(end[-1]);)
            *--end = '\0';
        if (*p == '\0' || *p == ';' || *p == '#')
            continue;
        if (*p == '[') {
            section_header(ld, p);
            continue;
        }
        sep = strpbrk(p, "=:");
        if (p != start && sep == NULL) {
            /* inih would append this to the previous value. */
            fail(ld, ld->lineno, "continuation lines are not supported");
            return;
        }
        if (sep == NULL || sep == p) {
            fail(ld, ld->lineno, "syntax error (expected [section] or name = value)");
            return;
        }
        for (end = sep; end > p && is_space(end[-1]);)
            end--;
        *end = '\0';
        value = sep + 1;
        while (is_space(*value))
            value++;
        /* An inline comment: ';' after whitespace, as inih has it. */
        for (char *q = value; *q != '\0'; q++)
            if (*q == ';' && q > value && is_space(q[-1])) {
                *q = '\0';
                break;
            }
        for (end = value + strlen(value); end > value && is_space(end[-1]);)
            *--end = '\0';
        handler(ld, p, value);
    }
}

/* One name=value pair of the line ld->lineno. Returns 1, or 0 after an
 * error. */
static int handler(struct load *ld, const char *name, const char *value)
{
    char msg[256];
    int i;
    uint64_t *seen;
    void *base;

    if (ld->failed)
        return 0;
    if (ld->sect == S_NONE) {
        fail(ld, ld->lineno, "'%s' outside of a section", name);
        return 0;
    }
    i = key_index(ld->sect, name);
    if (i < 0) {
        if (ld->sect == S_ROUTE)
            fail(ld, ld->lineno, "unknown key '%s' in [route %s]", name, ld->route.name);
        else
            fail(ld, ld->lineno, "unknown key '%s' in [%s]", name, sect_names[ld->sect]);
        return 0;
    }
    seen = ld->sect == S_ROUTE ? ld->route_seen : ld->seen;
    if (SEEN(seen, i)) {
        fail(ld, ld->lineno, "duplicate key '%s'", name);
        return 0;
    }
    SEEN_SET(seen, i);
    base = ld->sect == S_ROUTE ? (void *)&ld->route : (void *)ld->cfg;
    if (apply(&keys[i], base, ld->cfg, value, msg, sizeof msg) != 0) {
        fail(ld, ld->lineno, "%s: %s", name, msg);
        return 0;
    }
    if (ld->sect == S_ROUTE && strcmp(name, "prefix") == 0)
        ld->route_prefix_line = ld->lineno;
    else if (ld->sect != S_ROUTE)
        ld->key_line[i] = ld->lineno;
    return 1;
}

static int is_loopback(const char *h)
{
    unsigned char a[16];

    if (strcmp(h, "localhost") == 0)
        return 1;
    if (inet_pton(AF_INET, h, a) == 1)
        return a[0] == 127;
    if (inet_pton(AF_INET6, h, a) == 1) {
        static const unsigned char one[16] = {[15] = 1};
        return memcmp(a, one, 16) == 0;
    }
    return 0;
}

static int is_wildcard(const char *h)
{
    return strcmp(h, "0.0.0.0") == 0 || strcmp(h, "::") == 0 || strcmp(h, "*") == 0;
}

/* The line of key name in sect, or 0 when it was not in the file. */
static unsigned line_of(const struct load *ld, enum sect sect, const char *name)
{
    int i = key_index(sect, name);

    return i < 0 ? 0 : ld->key_line[i];
}

/* TLS keys that only make sense together. */
static void check_tls(struct load *ld)
{
    const struct px_config *cfg = ld->cfg;

    if (ld->failed)
        return;
    if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL))
        fail(ld, line_of(ld, S_TLS, cfg->tls_cert != NULL ? "cert" : "key"),
             "[tls] cert and key go together");
    else if (cfg->tls_cert == NULL && (cfg->tls_client_ca != NULL || cfg->tls_verify_client))
        fail(ld, line_of(ld, S_TLS, cfg->tls_client_ca != NULL ? "client_ca" : "verify_client"),
             "client certificates need [tls] cert and key");
    else if (cfg->tls_verify_client != PX_VERIFY_OFF && cfg->tls_client_ca == NULL)
        fail(ld, line_of(ld, S_TLS, "verify_client"), "verify_client needs client_ca");
    else if (cfg->tls_client_ca != NULL && cfg->tls_verify_client == PX_VERIFY_OFF)
        fail(ld, line_of(ld, S_TLS, "client_ca"),
             "client_ca without verify_client = optional or on would be ignored");
    else if (cfg->tls_cert == NULL && cfg->tls_ocsp_file != NULL)
        fail(ld, line_of(ld, S_TLS, "ocsp_file"), "ocsp_file needs [tls] cert and key");
    else if ((cfg->upstream_cert == NULL) != (cfg->upstream_key == NULL))
        fail(ld, line_of(ld, S_PROXY, cfg->upstream_cert != NULL ? "upstream_cert" : "upstream_key"),
             "upstream_cert and upstream_key go together");
    else if (!cfg->upstream_tls && (cfg->upstream_cert != NULL ||
                                    strcmp(cfg->upstream_ca, "system") != 0))
        fail(ld, line_of(ld, S_PROXY, cfg->upstream_cert != NULL ? "upstream_cert" : "upstream_ca"),
             "upstream_ca, upstream_cert and upstream_key need upstream = https://...");
}

/* [store] endpoints with backend = etcd: given, and a list of host:port. */
static void check_endpoints(struct load *ld)
{
    int i = key_index(S_STORE, "endpoints");
    const char *p = ld->cfg->store_endpoints;

    if (!SEEN(ld->seen, i)) {
        fail(ld, ld->key_line[key_index(S_STORE, "backend")],
             "[store] endpoints is required with backend = etcd");
        return;
    }
    while (!ld->failed) {
        size_t n = strcspn(p, ",");
        char *one = strndup(p, n), *host = NULL;
        int port;

        if (one == NULL) {
            fail(ld, 0, "out of memory");
            return;
        }
        if (px_config_split_hostport(one, &host, &port) != 0)
            fail(ld, ld->key_line[i], "endpoints: '%s' is not host:port", one);
        free(one);
        free(host);
        if (p[n] == '\0')
            break;
        p += n + 1;
    }
}

/* Reads the admin secret from admin_token_file: a regular file that only
 * its owner may read (refused when group or others have any access), one
 * line of 16..4096 bytes without control bytes. */
static void read_admin_token(struct load *ld)
{
    struct px_config *cfg = ld->cfg;
    unsigned line = ld->key_line[key_index(S_PROXY, "admin_token_file")];
    char buf[4098];
    struct stat st;
    ssize_t n = -1;
    size_t len;
    int fd = open(cfg->admin_token_file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

    if (fd < 0 || fstat(fd, &st) != 0) {
        fail(ld, line, "admin_token_file %s: %s", cfg->admin_token_file, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        fail(ld, line, "admin_token_file %s is not a regular file", cfg->admin_token_file);
        goto out;
    }
    if ((st.st_mode & 077) != 0) {
        fail(ld, line, "admin_token_file %s is accessible to group or others (mode %03o): "
             "chmod 600 it", cfg->admin_token_file, (unsigned)(st.st_mode & 0777));
        goto out;
    }
    n = read(fd, buf, sizeof buf - 1);
    if (n < 0) {
        fail(ld, line, "admin_token_file %s: %s", cfg->admin_token_file, strerror(errno));
        goto out;
    }
    len = (size_t)n;
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    buf[len] = '\0';
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)buf[i] < 0x21 || (unsigned char)buf[i] > 0x7e) {
            len = 0; /* refused below */
            break;
        }
    if (len < 16 || (size_t)n >= sizeof buf - 1) {
        fail(ld, line, "admin_token_file %s must hold one line of 16..4096 printable "
             "characters (no spaces)", cfg->admin_token_file);
        goto out;
    }
    cfg->admin_token = strdup(buf);
    if (cfg->admin_token == NULL)
        fail(ld, line, "out of memory");
out:
    explicit_bzero(buf, sizeof buf);
    if (fd >= 0)
        close(fd);
}

/* Checks that need the whole file: required keys and keys that depend on
 * each other. */
static void check_whole(struct load *ld)
{
    struct px_config *cfg = ld->cfg;
    char *lh = NULL, *ah = NULL;
    int lp, ap;

    for (size_t i = 0; i < NKEYS && !ld->failed; i++) {
        if (keys[i].sect != S_ROUTE && (keys[i].flags & KF_REQUIRED) &&
            !SEEN(ld->seen, i))
            fail(ld, 0, "[%s] %s is required", sect_names[keys[i].sect], keys[i].name);
    }
    check_tls(ld);
    if (!ld->failed && cfg->store_backend == ST_STORE_ETCD)
        check_endpoints(ld);
    if (!ld->failed && cfg->admin_token_file != NULL)
        read_admin_token(ld);
    if (ld->failed || strcmp(cfg->admin_listen, "off") == 0)
        goto out;
    if (px_config_split_hostport(cfg->listen, &lh, &lp) != 0 ||
        px_config_split_hostport(cfg->admin_listen, &ah, &ap) != 0) {
        fail(ld, 0, "out of memory");
        goto out;
    }
    if (!is_loopback(ah)) {
        int i = key_index(S_PROXY, "admin_listen");
        if (cfg->admin_token == NULL && !cfg->admin_insecure) {
            fail(ld, ld->key_line[i],
                 "admin_listen %s is not a loopback address: set admin_token_file (admin "
                 "writes then need its secret), or admin_insecure = on",
                 cfg->admin_listen);
            goto out;
        }
        warn(ld, ld->key_line[i],
             "admin_listen %s is not a loopback address: /metrics and /tokens answer reads "
             "from anyone who can reach it%s",
             cfg->admin_listen,
             cfg->admin_token == NULL ? ", and writes are refused (no admin_token_file)" : "");
    }
    /* Same port on the same or a wildcard address would collide at bind. */
    if (lp == ap && (strcmp(lh, ah) == 0 || is_wildcard(lh) || is_wildcard(ah))) {
        int i = key_index(S_PROXY, "admin_listen"), j = key_index(S_PROXY, "listen");
        unsigned line = ld->key_line[i] ? ld->key_line[i] : ld->key_line[j];
        fail(ld, line, "admin_listen must differ from listen (%s)", cfg->listen);
    }
out:
    free(lh);
    free(ah);
}

struct px_config *px_config_load(const char *path, char *err, size_t errlen)
{
    struct load ld;
    struct px_config *cfg = NULL;

    memset(&ld, 0, sizeof ld);
    ld.path = path;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    cfg = calloc(1, sizeof *cfg);
    if (cfg != NULL)
        cfg->refs = 1;
    if (cfg == NULL || (cfg->routes = pol_routes_new()) == NULL) {
        fail(&ld, 0, "out of memory");
        goto out;
    }
    ld.cfg = cfg;
    for (enum sect s = S_PROXY; s <= S_TLS; s++)
        if (apply_defaults(&ld, s, cfg) != 0)
            goto out;
    ld.fp = fopen(path, "re");
    if (ld.fp == NULL) {
        fail(&ld, 0, "cannot open: %s", strerror(errno));
        goto out;
    }
    parse_file(&ld);
    route_close(&ld);
    if (!ld.failed)
        check_whole(&ld);
    /* The store's marker lives beside the store directory by default
     * (docs/operations.md, "Token store faults"). */
    if (!ld.failed && strcmp(cfg->store_marker, "auto") == 0) {
        free(cfg->store_marker);
        if (asprintf(&cfg->store_marker, "%s.id", cfg->store_path) < 0) {
            cfg->store_marker = NULL;
            fail(&ld, 0, "out of memory");
        }
    }
    if (!ld.failed) {
        /* Derived once here, read on every request. */
        cfg->token_header_len = strlen(cfg->token_header);
        cfg->access_log_json = strcmp(cfg->access_log_format, "json") == 0;
    }
out:
    if (ld.fp != NULL)
        fclose(ld.fp);
    free(ld.buf);
    pol_route_release(&ld.route);
    if (ld.failed) {
        if (err != NULL && errlen > 0) {
            if (ld.err_line > 0)
                snprintf(err, errlen, "%s:%u: %s", path, ld.err_line, ld.err);
            else
                snprintf(err, errlen, "%s: %s", path, ld.err);
        }
        px_config_free(&cfg);
    }
    return cfg;
}

void px_config_free(struct px_config **cfgp)
{
    struct px_config *cfg;

    if (cfgp == NULL || *cfgp == NULL)
        return;
    cfg = *cfgp;
    *cfgp = NULL;
    if (--cfg->refs > 0)
        return;
    for (size_t i = 0; i < NKEYS; i++) {
        enum key_type t = keys[i].type;
        if (keys[i].sect != S_ROUTE && (t == K_STRING || t == K_PATH_OFF ||
            t == K_HOSTPORT || t == K_HOSTPORT_OFF || t == K_URL || t == K_TOKEN ||
            t == K_WORD))
            free(*(char **)((char *)cfg + keys[i].off));
    }
    free(cfg->upstream_host);
    free(cfg->warnings);
    if (cfg->admin_token != NULL)
        explicit_bzero(cfg->admin_token, strlen(cfg->admin_token));
    free(cfg->admin_token);
    pol_routes_free(cfg->routes);
    free(cfg);
}

struct px_config *px_config_hold(const struct px_config *cfg)
{
    struct px_config *c = (struct px_config *)cfg; /* the count is not part of the snapshot */

    c->refs++;
    return c;
}

/* Whether key k has the same value in a and b. */
static int same_value(const struct key *k, const struct px_config *a, const struct px_config *b)
{
    const char *pa = (const char *)a + k->off, *pb = (const char *)b + k->off;

    switch (k->type) {
    case K_STRING:
    case K_PATH_OFF:
    case K_HOSTPORT:
    case K_HOSTPORT_OFF:
    case K_URL:
    case K_TOKEN:
    case K_WORD: {
        const char *sa = *(char *const *)pa, *sb = *(char *const *)pb;
        return (sa == NULL && sb == NULL) || (sa != NULL && sb != NULL && strcmp(sa, sb) == 0);
    }
    case K_UINT:
    case K_SIZE:
    case K_DURATION:
        return *(const uint64_t *)pa == *(const uint64_t *)pb;
    case K_ENUM:
        return *(const int *)pa == *(const int *)pb;
    default:
        return 1; /* route keys: always reloadable */
    }
}

int px_config_reload_check(const struct px_config *old, const struct px_config *new,
                           const char *path, char *err, size_t errlen)
{
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        if (k->sect == S_ROUTE || (k->flags & KF_RELOAD) || same_value(k, old, new))
            continue;
        snprintf(err, errlen, "%s: [%s] %s cannot change on a reload (restart instead)", path,
                 sect_names[k->sect], k->name);
        return -1;
    }
    return 0;
}

/* Resolves host of the key named key (text "host:port"); a failure goes
 * into err as "PATH: key NAME: host 'H' does not resolve: ...". */
static int resolve_one(const char *path, const char *key, const char *host, int port, char *err,
                       size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    char portstr[16], h[300];
    int gai;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(portstr, sizeof portstr, "%d", port);
    gai = getaddrinfo(host, portstr, &hints, &res);
    if (res != NULL)
        freeaddrinfo(res);
    if (gai == 0)
        return 0;
    escape_into(host, h, sizeof h);
    snprintf(err, errlen, "%s: %s: host '%s' does not resolve: %s", path, key, h,
             gai_strerror(gai));
    return -1;
}

int px_config_resolve(const struct px_config *cfg, const char *path, char *err, size_t errlen)
{
    char *host = NULL;
    int port, rc = -1;

    if (px_config_split_hostport(cfg->listen, &host, &port) != 0 ||
        resolve_one(path, "listen", host, port, err, errlen) != 0)
        goto out;
    free(host);
    host = NULL;
    if (strcmp(cfg->admin_listen, "off") != 0 &&
        (px_config_split_hostport(cfg->admin_listen, &host, &port) != 0 ||
         resolve_one(path, "admin_listen", host, port, err, errlen) != 0))
        goto out;
    if (resolve_one(path, "upstream", cfg->upstream_host, cfg->upstream_port, err, errlen) != 0)
        goto out;
    rc = 0;
out:
    free(host);
    return rc;
}

size_t px_config_key_count(void)
{
    return NKEYS;
}

int px_config_key_info(size_t i, struct px_config_key_info *out)
{
    if (i >= NKEYS || out == NULL)
        return -1;
    out->section = sect_names[keys[i].sect];
    out->name = keys[i].name;
    out->def = keys[i].def;
    out->help = keys[i].help;
    out->required = (keys[i].flags & KF_REQUIRED) != 0;
    out->reloadable = (keys[i].flags & KF_RELOAD) != 0;
    return 0;
}

/* px_config: defaults, every key, the error messages with their FILE:LINE,
 * host:port splitting, and the shipped conf/fenceproxy.conf (it loads and
 * documents every key of the table with its default). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pol_route.h"
#include "px_config.h"

/* Writes text to a new temp file; returns its malloc'd path. */
static char *write_conf(const char *text)
{
    char *path = strdup("/tmp/fence-cfg-XXXXXX");
    int fd;

    cr_assert_not_null(path);
    fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static struct px_config *load_text(const char *text, char **pathp, char *err, size_t cap)
{
    char *path = write_conf(text);
    struct px_config *cfg = px_config_load(path, err, cap);
    unlink(path);
    if (pathp != NULL)
        *pathp = path;
    else
        free(path);
    return cfg;
}

#define MIN "[proxy]\nupstream = http://127.0.0.1:9000\n"

Test(config, defaults)
{
    char err[512];
    struct px_config *cfg = load_text(MIN, NULL, err, sizeof err);

    cr_assert_not_null(cfg, "%s", err);
    cr_expect_str_eq(cfg->listen, "127.0.0.1:8080");
    cr_expect_str_eq(cfg->upstream, "http://127.0.0.1:9000");
    cr_expect_str_eq(cfg->upstream_host, "127.0.0.1");
    cr_expect_eq(cfg->upstream_port, 9000);
    cr_expect_str_eq(cfg->admin_listen, "127.0.0.1:8081");
    cr_expect_null(cfg->access_log);
    cr_expect_str_eq(cfg->token_header, "Fencing-Token");
    cr_expect_eq(cfg->max_connections, 10000);
    cr_expect_eq(cfg->max_header_bytes, 16384);
    cr_expect_eq(cfg->header_timeout_ms, 10000);
    cr_expect_eq(cfg->idle_timeout_ms, 60000);
    cr_expect_eq(cfg->upstream_connect_timeout_ms, 5000);
    cr_expect_eq(cfg->upstream_timeout_ms, 60000);
    cr_expect_eq(cfg->shutdown_grace_ms, 10000);
    cr_expect_str_eq(cfg->log_level, "info");
    cr_expect_eq(cfg->store_backend, ST_STORE_FILE);
    cr_expect_str_eq(cfg->store_path, "/var/lib/fence");
    cr_expect_null(cfg->audit_path);
    cr_expect_eq(pol_routes_count(cfg->routes), 0);
    px_config_free(&cfg);
    cr_expect_null(cfg);
    px_config_free(&cfg);
    px_config_free(NULL);
}

Test(config, every_key)
{
    char err[512];
    struct px_config *cfg = load_text(
        "; a comment\n"
        "# another\n"
        "[proxy]\n"
        "  listen = [::1]:18080   ; inline comment\n"
        "upstream = HTTP://storage.example:81/\n"
        "admin_listen = off\n"
        "access_log = /tmp/a.log\n"
        "token_header = X-Token\n"
        "max_connections = 7\n"
        "max_header_bytes = 1024\n"
        "header_timeout = 250ms\n"
        "idle_timeout = 2m\n"
        "upstream_connect_timeout = 3\n"
        "upstream_timeout = 1h\n"
        "shutdown_grace = 0\n"
        "log_level = debug\n"
        "\n"
        "[store]\nbackend = memory\npath = rel/dir\n"
        "[audit]\npath = /tmp/audit.log\n"
        "[route a]\nprefix = /a/\n"
        "[route b.2-x_]\nprefix = /b\nresource = segments:3\n"
        "fenced_methods = PUT  MKCOL\nmissing_token = allow\n"
        "path_semantics = opaque\nerror_format = s3\n",
        NULL, err, sizeof err);

    cr_assert_not_null(cfg, "%s", err);
    cr_expect_str_eq(cfg->listen, "[::1]:18080");
    cr_expect_str_eq(cfg->upstream_host, "storage.example");
    cr_expect_eq(cfg->upstream_port, 81);
    cr_expect_str_eq(cfg->admin_listen, "off");
    cr_expect_str_eq(cfg->access_log, "/tmp/a.log");
    cr_expect_str_eq(cfg->token_header, "X-Token");
    cr_expect_eq(cfg->max_connections, 7);
    cr_expect_eq(cfg->max_header_bytes, 1024);
    cr_expect_eq(cfg->header_timeout_ms, 250);
    cr_expect_eq(cfg->idle_timeout_ms, 120000);
    cr_expect_eq(cfg->upstream_connect_timeout_ms, 3000);
    cr_expect_eq(cfg->upstream_timeout_ms, 3600000);
    cr_expect_eq(cfg->shutdown_grace_ms, 0);
    cr_expect_str_eq(cfg->log_level, "debug");
    cr_expect_eq(cfg->store_backend, ST_STORE_MEMORY);
    cr_expect_str_eq(cfg->store_path, "rel/dir");
    cr_expect_str_eq(cfg->audit_path, "/tmp/audit.log");
    cr_assert_eq(pol_routes_count(cfg->routes), 2);

    const struct pol_route *a = pol_routes_get(cfg->routes, 0);
    const struct pol_route *b = pol_routes_get(cfg->routes, 1);
    cr_expect_str_eq(a->name, "a");
    cr_expect_str_eq(a->prefix, "/a/");
    cr_expect_eq(a->mode, POL_RES_PREFIX);
    cr_expect_eq(a->n_methods, 10);
    cr_expect_eq(a->missing_allow, 0);
    cr_expect_eq(a->semantics, POL_PATH_NORMALIZED);
    cr_expect_eq(a->error_format, POL_ERRFMT_JSON);
    cr_expect(pol_route_is_fenced(a, "DELETE", 6));
    cr_expect(pol_route_is_fenced(a, "MOVE", 4));
    cr_expect(pol_route_is_fenced(a, "UNLOCK", 6));
    cr_expect(!pol_route_is_fenced(a, "GET", 3));
    cr_expect_str_eq(b->name, "b.2-x_");
    cr_expect_str_eq(b->prefix, "/b");
    cr_expect_eq(b->mode, POL_RES_SEGMENTS);
    cr_expect_eq(b->segments, 3);
    cr_expect_eq(b->n_methods, 2);
    cr_expect(pol_route_is_fenced(b, "MKCOL", 5));
    cr_expect(!pol_route_is_fenced(b, "DELETE", 6));
    cr_expect_eq(b->missing_allow, 1);
    cr_expect_eq(b->semantics, POL_PATH_OPAQUE);
    cr_expect_eq(b->error_format, POL_ERRFMT_S3);
    px_config_free(&cfg);
}

/* Each bad file and the exact message after "PATH:" (line included). */
struct ecase {
    const char *text;
    const char *msg;
};

static const struct ecase ecases[] = {
    {"[proxy]\nupstream = http://h:1\nbogus = 1\n", "3: unknown key 'bogus' in [proxy]"},
    {"[proxy]\nupstream = http://h:1\n[nope]\n", "3: unknown section [nope]"},
    {"[proxy]\nupstream = http://h:1\n[nope]\nx = 1\n", "3: unknown section [nope]"},
    {"[proxy]\nupstream = http://h:1\n[Proxy]\n", "3: unknown section [Proxy]"},
    {"upstream = http://h:1\n", "1: 'upstream' outside of a section"},
    {"[proxy]\nupstream = http://h:1\nlisten = 1.2.3.4:5\nlisten = 1.2.3.4:6\n",
     "4: duplicate key 'listen'"},
    {"[proxy]\nupstream = http://h:1\n[proxy]\n", "3: duplicate section [proxy]"},
    {"[proxy]\nupstream = ftp://h:1\n",
     "2: upstream: must be http://host:port or https://host:port"},
    {"[proxy]\nupstream = http://h:1\nupstream_ca = /x.pem\n",
     "3: upstream_ca, upstream_cert and upstream_key need upstream = https://..."},
    {"[proxy]\nupstream = https://h:1\nupstream_cert = /c.pem\n",
     "3: upstream_cert and upstream_key go together"},
    {"[proxy]\nupstream = http://h:1\n[tls]\ncert = /c.pem\n", "4: [tls] cert and key go together"},
    {"[proxy]\nupstream = http://h:1\n[tls]\ncert = /c\nkey = /k\nverify_client = on\n",
     "6: verify_client needs client_ca"},
    {"[proxy]\nupstream = http://h:1\n[tls]\nclient_ca = /ca\n",
     "4: client certificates need [tls] cert and key"},
    {"[proxy]\nupstream = http://h:1\n[tls]\nmin_version = TLS1.1\n",
     "4: min_version: 'TLS1.1' is not one of: TLS1.2, TLS1.3"},
    {"[proxy]\nupstream = http://h:1\n[tls]\nocsp_file = /o.der\n",
     "4: ocsp_file needs [tls] cert and key"},
    {"[proxy]\nupstream = http://h:1\n[tls]\nsession_tickets = yes\n",
     "4: session_tickets: 'yes' is not one of: off, on"},
    {"[proxy]\nupstream = http://h:1/x\n",
     "2: upstream: must be http://host:port (no user, path or query)"},
    {"[proxy]\nupstream = http://u@h:1\n",
     "2: upstream: must be http://host:port (no user, path or query)"},
    {"[proxy]\nupstream = http://h:0\n",
     "2: upstream: must be http://host:port with a port 1..65535"},
    {"[proxy]\nupstream = http://h:1\nlisten = 1.2.3.4\n",
     "3: listen: '1.2.3.4' is not host:port (port 1..65535; [addr]:port for IPv6)"},
    {"[proxy]\nupstream = http://h:1\nlisten = ::1:80\n",
     "3: listen: '::1:80' is not host:port (port 1..65535; [addr]:port for IPv6)"},
    {"[proxy]\nupstream = http://h:1\nlisten = a:65536\n",
     "3: listen: 'a:65536' is not host:port (port 1..65535; [addr]:port for IPv6)"},
    {"[proxy]\nupstream = http://h:1\nlisten =\n", "3: listen: empty value"},
    {"[proxy]\nupstream = http://h:1\nadmin_listen = 127.0.0.1:8080\n",
     "3: admin_listen must differ from listen (127.0.0.1:8080)"},
    {"[proxy]\nupstream = http://h:1\nlisten = 0.0.0.0:9\nadmin_listen = 127.0.0.1:9\n",
     "4: admin_listen must differ from listen (0.0.0.0:9)"},
    {"[proxy]\nupstream = http://h:1\nlisten = 127.0.0.1:8081\n",
     "3: admin_listen must differ from listen (127.0.0.1:8081)"},
    {"[proxy]\nupstream = http://h:1\ntoken_header = Fencing Token\n",
     "3: token_header: 'Fencing Token' is not a valid header name"},
    {"[proxy]\nupstream = http://h:1\ntoken_header = X:Y\n",
     "3: token_header: 'X:Y' is not a valid header name"},
    {"[proxy]\nupstream = http://h:1\nmax_header_bytes = 1023\n",
     "3: max_header_bytes: 1023 out of range (1024..1048576)"},
    {"[proxy]\nupstream = http://h:1\nmax_connections = -1\n",
     "3: max_connections: '-1' is not a number"},
    {"[proxy]\nupstream = http://h:1\nmax_connections = 0x10\n",
     "3: max_connections: '0x10' is not a number"},
    {"[proxy]\nupstream = http://h:1\nheader_timeout = 1.5s\n",
     "3: header_timeout: '1.5s' is not a duration (like 250ms, 5s, 2m, 1h)"},
    {"[proxy]\nupstream = http://h:1\nidle_timeout = 0\n",
     "3: idle_timeout: 0 out of range (1..86400000 ms)"},
    {"[proxy]\nupstream = http://h:1\nlog_level = trace\n",
     "3: log_level: 'trace' is not one of: error, warn, info, debug"},
    {"[proxy]\nupstream = http://h:1\n[store]\nbackend = redis\n",
     "4: backend: 'redis' is not one of: file, memory, etcd"},
    {"[proxy]\nupstream = http://h:1\n[store]\nbackend = etcd\n",
     "4: [store] endpoints is required with backend = etcd"},
    {"[proxy]\nupstream = http://h:1\n[store]\nbackend = etcd\nendpoints = 127.0.0.1:1,x\n",
     "5: endpoints: 'x' is not host:port"},
    {"[proxy]\nupstream = http://h:1\n[store]\nbackend = etcd\nendpoints = a:1,,b:2\n",
     "5: endpoints: '' is not host:port"},
    {"[proxy]\nupstream = http://h:1\n[store]\nmax_txn_ops = 2\n",
     "4: max_txn_ops: 2 out of range (12..65536)"},
    {"[proxy]\nupstream = http://h:1\n[store]\nlease_ttl = 1s\n",
     "4: lease_ttl: 1s out of range (2000..3600000 ms)"},
    {"[proxy]\nupstream = http://h:1\n[store]\npath =\n", "4: path: empty value"},
    {"[proxy]\nlisten = 127.0.0.1:1\n", "[proxy] upstream is required"},
    {"", "[proxy] upstream is required"},
    {"[proxy]\nupstream = http://h:1\n[route]\nprefix = /a\n",
     "3: a route section is [route NAME], NAME of 1..63 characters A-Z a-z 0-9 _ . -"},
    {"[proxy]\nupstream = http://h:1\n[route a/b]\nprefix = /a\n",
     "3: a route section is [route NAME], NAME of 1..63 characters A-Z a-z 0-9 _ . -"},
    {"[proxy]\nupstream = http://h:1\n[route r]\nresource = path\n[route s]\nprefix = /s\n",
     "3: [route r]: prefix is required"},
    {"[proxy]\nupstream = http://h:1\n[route r]\nresource = path\n",
     "3: [route r]: prefix is required"},
    {"[proxy]\nupstream = http://h:1\n[route r]\nprefix = /a\n[route r]\nprefix = /b\n",
     "5: duplicate section [route r]"},
    {"[proxy]\nupstream = http://h:1\n[route r]\nprefix = /a\n[route s]\nprefix = /a\n",
     "6: route s: duplicate prefix '/a' (route r)"},
    {"[proxy]\nupstream = http://h:1\n[route r]\nprefix = /a\nresource = segments:0\n",
     "5: resource: 'segments:0' is not prefix, path or segments:N (N >= 1)"},
    {"[proxy]\nupstream = http://h:1\n[route r]\nprefix = /a\nmissing_token = maybe\n",
     "5: missing_token: 'maybe' is not one of: reject, allow"},
    {"[proxy]\nupstream = http://h:1\n[route r]\nprefix = /a\npath_semantics = raw\n",
     "5: path_semantics: 'raw' is not one of: normalized, opaque"},
    {"[proxy]\nupstream = http://h:1\n[route r]\nprefix = /a\npath_semantics =\n",
     "5: path_semantics: empty value"},
    {"[proxy]\nupstream = http://h:1\n[route r]\nprefix = /a\nerror_format = xml\n",
     "5: error_format: 'xml' is not one of: json, s3"},
    {"[proxy]\nupstream = http://h:1\n[route r]\nprefix = /a\nerror_format = S3\n",
     "5: error_format: 'S3' is not one of: json, s3"},
    {"[proxy]\nupstream = http://h:1\n[route r]\nprefix = /a\nerror_format = s3\n"
     "error_format = json\n", "6: duplicate key 'error_format'"},
    {"[proxy]\nupstream = http://h:1\npath_semantics = opaque\n",
     "3: unknown key 'path_semantics' in [proxy]"},
    {"[proxy]\nupstream = http://h:1\n[route r]\nprefix = /a\nlisten = 1.2.3.4:5\n",
     "5: unknown key 'listen' in [route r]"},
    {"[proxy]\nupstream = http://h:1\n[route r]\nprefix = /a\nprefix = /b\n",
     "5: duplicate key 'prefix'"},
    {"[proxy]\nupstream = http://h:1\nlisten = 1.2.3.4:5\n  6\n",
     "4: continuation lines are not supported"},
    {"[proxy]\nupstream = http://h:1\njunk line\n",
     "3: syntax error (expected [section] or name = value)"},
    {"[proxy]\nupstream = http://h:1\n[store\n", "3: unterminated section header"},
    {"[proxy]\nupstream = http://h:1\n[store] x\n", "3: unexpected text after section header"},
    /* config that cannot silently weaken protection */
    {"[proxy]\nupstream = http://h:1\n[route r]\nprefix = /a\nfenced_methods = put\n",
     "5: fenced_methods: 'put' is not PUT: method names are case-sensitive and matched exactly, "
     "so this would leave PUT unfenced"},
    {"[proxy]\nupstream = http://h:1\n[route r]\nprefix = /a\nfenced_methods = PUT Delete\n",
     "5: fenced_methods: 'Delete' is not DELETE: method names are case-sensitive and matched "
     "exactly, so this would leave DELETE unfenced"},
    {"[proxy]\nupstream = http://h:1\n[route r]\nprefix = /a\nfenced_methods = PUT P(ST\n",
     "5: fenced_methods: 'P(ST' is not a method name (an HTTP token)"},
    {"[proxy]\nupstream = http://256.1.1.1:1\n",
     "2: upstream: '256.1.1.1' is not an IPv4 address"},
    {"[proxy]\nupstream = http://h:1\nlisten = 256.1.1.1:80\n",
     "3: listen: '256.1.1.1' is not an IPv4 address"},
    {"[proxy]\nupstream = http://h:1\nadmin_listen = 1.2.3:80\n",
     "3: admin_listen: '1.2.3' is not an IPv4 address"},
    {"[proxy]\nupstream = http://h:1\nlisten = [::g]:80\n",
     "3: listen: '[::g]:80' is not host:port (port 1..65535; [addr]:port for IPv6)"},
    {"[proxy]\nupstream = http://h:1\nlisten = [1::2::3]:80\n",
     "3: listen: '1::2::3' is not an IPv6 address"},
    {"[proxy]\nupstream = http://-h:1\n", "2: upstream: '-h' is not a valid host name"},
    {"[proxy]\nupstream = http://a..b:1\n", "2: upstream: 'a..b' is not a valid host name"},
    /* non-printable bytes are escaped in messages */
    {"[proxy]\nupstream = http://h:1\nlog_level = \x1b[2J\x7f\n",
     "3: log_level: '\\x1b[2J\\x7f' is not one of: error, warn, info, debug"},
    {"[proxy]\nupstream = http://h:1\n\xff\xfe = 1\n", "3: unknown key '\\xff\\xfe' in [proxy]"},
};

Test(config, errors)
{
    for (size_t i = 0; i < sizeof ecases / sizeof ecases[0]; i++) {
        char err[512], want[640], *path = NULL;
        struct px_config *cfg = load_text(ecases[i].text, &path, err, sizeof err);

        cr_expect_null(cfg, "case %zu loaded", i);
        if (ecases[i].msg[0] >= '0' && ecases[i].msg[0] <= '9')
            snprintf(want, sizeof want, "%s:%s", path, ecases[i].msg);
        else
            snprintf(want, sizeof want, "%s: %s", path, ecases[i].msg);
        cr_expect_str_eq(err, want, "case %zu", i);
        px_config_free(&cfg);
        free(path);
    }
}

Test(config, missing_file)
{
    char err[512];
    struct px_config *cfg = px_config_load("/nonexistent/fence.conf", err, sizeof err);

    cr_expect_null(cfg);
    cr_expect_str_eq(err, "/nonexistent/fence.conf: cannot open: No such file or directory");
}

Test(config, long_lines_up_to_64k_and_then_an_error_not_a_split)
{
    static char text[80000];
    char err[512], *path = NULL;
    struct px_config *cfg;

    /* Debian's inih stops at 199 bytes; a real route prefix can be longer. */
    memset(text, 0, sizeof text);
    strcpy(text, MIN "[route long]\nprefix = /");
    memset(text + strlen(text), 'p', 5000);
    strcat(text, "/\nfenced_methods = PUT\n");
    cfg = load_text(text, &path, err, sizeof err);
    cr_assert_not_null(cfg, "%s", err);
    const struct pol_route *r = pol_routes_get(cfg->routes, 0);
    cr_expect_eq(strlen(r->prefix), 5002);
    px_config_free(&cfg);
    free(path);

    /* beyond the limit: an error at the line, never two keys */
    memset(text, 0, sizeof text);
    strcpy(text, MIN "access_log = /");
    memset(text + strlen(text), 'a', 70000);
    strcat(text, "\n");
    cfg = load_text(text, &path, err, sizeof err);
    cr_expect_null(cfg);
    cr_expect(strncmp(err + strlen(path), ":3: line too long (at most 65536 bytes)", 39) == 0,
              "%s", err);
    free(path);
}

Test(config, inline_comments_and_colons_as_inih_has_them)
{
    char err[512];
    struct px_config *cfg = load_text("[proxy]\nupstream : http://h:2 ; the store\n"
                                      "access_log = /var/log/a;b\n",
                                      NULL, err, sizeof err);

    cr_assert_not_null(cfg, "%s", err);
    cr_expect_str_eq(cfg->upstream, "http://h:2");
    cr_expect_str_eq(cfg->access_log, "/var/log/a;b", "';' without a space before is a value byte");
    px_config_free(&cfg);
}

Test(config, a_non_loopback_admin_address_needs_a_secret_or_admin_insecure)
{
    char err[512], want[700], *path = NULL;
    struct px_config *cfg =
        load_text(MIN "listen = 127.0.0.1:80\nadmin_listen = 0.0.0.0:81\n", &path, err, sizeof err);

    cr_assert_null(cfg, "a non-loopback admin without admin_token_file must be refused");
    snprintf(want, sizeof want,
             "%s:4: admin_listen 0.0.0.0:81 is not a loopback address: set admin_token_file "
             "(admin writes then need its secret), or admin_insecure = on",
             path);
    cr_expect_str_eq(err, want);
    free(path);
    path = NULL;
    cfg = load_text(MIN "listen = 127.0.0.1:80\nadmin_listen = 0.0.0.0:81\nadmin_insecure = on\n",
                    &path, err, sizeof err);
    cr_assert_not_null(cfg, "%s", err);
    cr_assert_not_null(cfg->warnings);
    snprintf(want, sizeof want,
             "%s:4: warning: admin_listen 0.0.0.0:81 is not a loopback address: /metrics and "
             "/tokens answer reads from anyone who can reach it, and writes are refused (no "
             "admin_token_file)\n",
             path);
    cr_expect_str_eq(cfg->warnings, want);
    px_config_free(&cfg);
    free(path);
    cfg = load_text(MIN "admin_listen = [::1]:81\n", NULL, err, sizeof err);
    cr_assert_not_null(cfg, "%s", err);
    cr_expect_null(cfg->warnings, "loopback: no warning");
    px_config_free(&cfg);
}

Test(config, verify_keys_are_checked_with_their_line)
{
    char err[512];
    struct px_config *cfg;

    cfg = load_text(MIN "[route r]\nprefix = /r/\nverify = ftp://x:1\n", NULL, err, sizeof err);
    cr_expect_null(cfg);
    cr_expect(strstr(err, ":5: verify: 'ftp://x:1' is not a lock backend URL") != NULL, "%s", err);
    cfg = load_text(MIN "[route r]\nprefix = /r/\nverify = redis://127.0.0.1:1\n"
                        "lock_name = locks/{key}\n",
                    NULL, err, sizeof err);
    cr_expect_null(cfg);
    cr_expect(strstr(err, ":6: lock_name:") != NULL, "%s", err);
    cfg = load_text(MIN "[route r]\nprefix = /r/\nrequire_live_lease = on\n", NULL, err,
                    sizeof err);
    cr_expect_null(cfg);
    cr_expect(strstr(err, "require_live_lease needs verify = URL") != NULL, "%s", err);
    cfg = load_text(MIN "[route r]\nprefix = /r/\nverify = etcd://127.0.0.1:2379\n"
                        "require_live_lease = on\nlive_lease_cache = 500ms\n"
                        "lock_name = locks{resource}/w\n",
                    NULL, err, sizeof err);
    cr_assert_not_null(cfg, "%s", err);
    px_config_free(&cfg);
}

Test(config, unresolvable_hosts_are_named_by_resolve)
{
    char err[512], want[700], *path = NULL;
    struct px_config *cfg = load_text("[proxy]\nupstream = http://no-such-host.invalid:80\n",
                                      &path, err, sizeof err);

    cr_assert_not_null(cfg, "%s", err);
    cr_expect_eq(px_config_resolve(cfg, path, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s: upstream: host 'no-such-host.invalid' does not resolve", path);
    cr_expect(strncmp(err, want, strlen(want)) == 0, "%s", err);
    px_config_free(&cfg);
    cfg = load_text("[proxy]\nupstream = http://localhost:80\n", NULL, err, sizeof err);
    cr_assert_not_null(cfg, "%s", err);
    cr_expect_eq(px_config_resolve(cfg, "x", err, sizeof err), 0, "%s", err);
    px_config_free(&cfg);
    free(path);
}

Test(config, bom_and_crlf_are_accepted)
{
    char err[512];
    struct px_config *cfg = load_text("\xEF\xBB\xBF[proxy]\r\nupstream = http://h:2\r\n"
                                      "[store]\r\nbackend = memory\r\n",
                                      NULL, err, sizeof err);

    cr_assert_not_null(cfg, "%s", err);
    cr_expect_eq(cfg->upstream_port, 2);
    cr_expect_eq(cfg->store_backend, ST_STORE_MEMORY);
    px_config_free(&cfg);
}

Test(config, nul_byte_is_refused)
{
    static const char text[] = "[proxy]\nupstream = http://h:1\nlisten = a\0b:1\n";
    char path[] = "/tmp/fence-cfg-XXXXXX", err[512], want[600];
    int fd = mkstemp(path);
    struct px_config *cfg;

    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    cfg = px_config_load(path, err, sizeof err);
    unlink(path);
    cr_expect_null(cfg);
    snprintf(want, sizeof want, "%s:3: NUL byte in line", path);
    cr_expect_str_eq(err, want);
}

struct hcase {
    const char *in;
    int rc;
    const char *host;
    int port;
};

static const struct hcase hcases[] = {
    {"127.0.0.1:8080", 0, "127.0.0.1", 8080}, {"localhost:1", 0, "localhost", 1},
    {"[::1]:65535", 0, "::1", 65535},          {"[fe80::1]:80", 0, "fe80::1", 80},
    {"h:0", -1, NULL, 0},                      {"h:65536", -1, NULL, 0},
    {"h:", -1, NULL, 0},                       {":80", -1, NULL, 0},
    {"h", -1, NULL, 0},                        {"h:+80", -1, NULL, 0},
    {"h:8 0", -1, NULL, 0},                    {"::1:80", -1, NULL, 0},
    {"[::1]80", -1, NULL, 0},                  {"[]:80", -1, NULL, 0},
    {"[::1]:", -1, NULL, 0},                   {"h/x:80", -1, NULL, 0},
    {"h:000080", -1, NULL, 0},                 {"", -1, NULL, 0},
};

Test(config, split_hostport)
{
    for (size_t i = 0; i < sizeof hcases / sizeof hcases[0]; i++) {
        char *host = NULL;
        int port = -7;
        int rc = px_config_split_hostport(hcases[i].in, &host, &port);

        cr_expect_eq(rc, hcases[i].rc, "'%s'", hcases[i].in);
        if (rc == 0 && hcases[i].rc == 0) {
            cr_expect_str_eq(host, hcases[i].host);
            cr_expect_eq(port, hcases[i].port);
        }
        if (rc != 0)
            cr_expect_null(host, "'%s'", hcases[i].in);
        free(host);
    }
}

static char *shipped_path(void)
{
    const char *src = getenv("FENCE_SOURCE_DIR");
    char *path = NULL;

    cr_assert_not_null(src, "FENCE_SOURCE_DIR is not set");
    cr_assert(asprintf(&path, "%s/conf/fenceproxy.conf", src) > 0);
    return path;
}

Test(config, shipped_conf_loads)
{
    char err[512], *path = shipped_path();
    struct px_config *cfg = px_config_load(path, err, sizeof err);

    cr_assert_not_null(cfg, "%s", err);
    cr_expect_str_eq(cfg->listen, "127.0.0.1:8080");
    cr_expect_str_eq(cfg->upstream_host, "127.0.0.1");
    cr_expect_eq(cfg->upstream_port, 8000);
    cr_expect_str_eq(cfg->admin_listen, "127.0.0.1:8081");
    cr_expect_str_eq(cfg->access_log, "./run/access.log");
    cr_expect_eq(cfg->store_backend, ST_STORE_FILE);
    cr_expect_str_eq(cfg->store_path, "./run/store");
    cr_expect_str_eq(cfg->audit_path, "./run/audit.log");
    cr_assert_eq(pol_routes_count(cfg->routes), 1);
    const struct pol_route *r = pol_routes_get(cfg->routes, 0);
    cr_expect_str_eq(r->name, "objects");
    cr_expect_str_eq(r->prefix, "/objects/");
    cr_expect_eq(r->mode, POL_RES_SEGMENTS);
    cr_expect_eq(r->segments, 2);
    px_config_free(&cfg);
    free(path);
}

/* Every key of the table appears in the shipped file in its section, as
 * "name = ..." or "; name = ...", right after a "; default: DEF" line (or,
 * for a required key, after a line saying it has no default). */
Test(config, shipped_conf_documents_every_key)
{
    char *path = shipped_path(), *line = NULL, prev[512] = "", sect[64] = "";
    size_t cap = 0;
    FILE *f = fopen(path, "r");
    struct found {
        char sect[64], name[64], def[128];
    } found[128];
    size_t nfound = 0;

    cr_assert_not_null(f);
    while (getline(&line, &cap, f) > 0 && nfound < 128) {
        char name[64], *p = line;
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '[') {
            snprintf(sect, sizeof sect, "%.*s", (int)strcspn(line + 1, " ]"), line + 1);
        } else {
            if (strncmp(p, "; ", 2) == 0)
                p += 2;
            if (sscanf(p, "%63[a-z_] =", name) == 1 && strstr(p, " =") != NULL) {
                snprintf(found[nfound].sect, sizeof found[nfound].sect, "%s", sect);
                snprintf(found[nfound].name, sizeof found[nfound].name, "%s", name);
                snprintf(found[nfound].def, sizeof found[nfound].def, "%.127s",
                         strncmp(prev, "; default: ", 11) == 0 ? prev + 11
                         : strstr(prev, "no default") ? "(none)" : "(undocumented)");
                nfound++;
            }
        }
        snprintf(prev, sizeof prev, "%s", line);
    }
    fclose(f);
    free(line);

    cr_assert_gt(px_config_key_count(), 15);
    for (size_t i = 0; i < px_config_key_count(); i++) {
        struct px_config_key_info k;
        size_t j;
        cr_assert_eq(px_config_key_info(i, &k), 0);
        for (j = 0; j < nfound; j++)
            if (strcmp(found[j].sect, k.section) == 0 && strcmp(found[j].name, k.name) == 0)
                break;
        cr_expect_lt(j, nfound, "[%s] %s is not in %s", k.section, k.name, path);
        if (j < nfound)
            cr_expect_str_eq(found[j].def, k.def ? k.def : "(none)", "[%s] %s", k.section,
                             k.name);
        cr_expect_eq(k.required, k.def == NULL, "[%s] %s", k.section, k.name);
    }
    cr_expect_eq(px_config_key_info(px_config_key_count(), &(struct px_config_key_info){0}), -1);
    free(path);
}

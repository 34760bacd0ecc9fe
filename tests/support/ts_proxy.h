/* ts_proxy: a real fenceproxy for integration tests. Writes a config into the
 * fixture's temp dir (free loopback ports for the data and admin listeners,
 * the store and audit log inside the dir), starts the built binary, waits for
 * it, and stops it by PID. Also a tiny raw HTTP/1.1 client for tests that must
 * control every byte. No Criterion inside: errors are printed and returned. */
#ifndef TS_PROXY_H
#define TS_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include "ts_proc.h"

struct ts_proxy {
    struct ts_proc proc;
    char *dir;         /* owned temp dir (removed by ts_proxy_cleanup) */
    char conf[1024];   /* path of the written config */
    char audit[1024];  /* path of the audit log */
    char access[1024]; /* path of the access log */
    char store[1024];  /* store directory */
    int port;          /* data listener */
    int admin_port;
    int upstream_port; /* as given to ts_proxy_write_conf */
    char *extra;       /* copy of its extra text; owned */
    /* Set before ts_proxy_write_conf: the upstream's scheme and host
     * ("https://localhost"); NULL means "http://127.0.0.1". Borrowed. */
    const char *upstream_base;
    /* TLS mode (FENCE_TEST_TLS=1, see ts_tls.h): the listeners get a [tls]
     * section with certificates made in tls_dir, and ts_connect() to port
     * and admin_port speaks TLS. 0 otherwise. */
    int tls;
    char tls_dir[1024];
    const char *store_conf; /* NULL: [store] file at store; else the whole [store]
                             * section written instead (borrowed; set before
                             * ts_proxy_write_conf) */
};

/* Creates the temp dir (tag names it) and picks ports. 0 / -1. */
int ts_proxy_init(struct ts_proxy *px, const char *tag);

/* Writes the config: [proxy] listen/admin_listen/access_log/upstream (port
 * upstream_port on 127.0.0.1), [store] file at px->store (or px->store_conf),
 * [audit] at px->audit,
 * then extra (more keys or sections, verbatim; may be NULL). The [proxy]
 * section stays open at the end of the generated part, so extra may start
 * with more [proxy] keys before its own sections. 0 / -1. */
int ts_proxy_write_conf(struct ts_proxy *px, int upstream_port, const char *extra);

/* Starts fenceproxy -c px->conf and waits until its port accepts (5 s).
 * If a port was taken meanwhile by another test, picks new ports, rewrites
 * the config and tries again (a few times). 0 / -1 (log dumped). */
int ts_proxy_start(struct ts_proxy *px);

/* Stops it with sig (SIGTERM for a clean stop, SIGKILL for a crash) and
 * returns the raw wait status, or -1. */
int ts_proxy_stop(struct ts_proxy *px, int sig);

/* Stops if running, dumps the log when dump is set, removes the dir. */
void ts_proxy_cleanup(struct ts_proxy *px, int dump);

/* One HTTP response as read by ts_http_read. */
struct ts_resp {
    int status;       /* 0 when nothing could be read */
    char head[16384]; /* status line and fields, NUL-terminated */
    char *body;       /* malloc'd, NUL-terminated; free with ts_resp_free */
    size_t body_len;
    int closed; /* the server closed the connection after it */
};

/* Reads one response from fd (Content-Length, chunked or until close),
 * waiting at most timeout_ms overall. Skips 100 Continue unless keep_100.
 * Returns 0 or -1 (timeout, EOF before a status line, malformed). */
int ts_http_read(int fd, struct ts_resp *r, int timeout_ms, int keep_100);

/* Case-insensitive header lookup in r->head: copies the value. 1 / 0. */
int ts_resp_header(const struct ts_resp *r, const char *name, char *out, size_t cap);

void ts_resp_free(struct ts_resp *r);

/* Connects to port, sends raw (len bytes), reads one response, closes.
 * Returns the status or -1. r may be NULL. */
int ts_http_raw(int port, const char *raw, size_t len, struct ts_resp *r, int timeout_ms);

/* PUT path with "Fencing-Token: token" and body (a C string) on a new
 * connection (Connection: close). The status, or -1 with no answer within
 * timeout_ms. */
int ts_http_put_token(int port, const char *path, uint64_t token, const char *body, int timeout_ms);

/* Whether the peer closed fd within timeout_ms (reads and discards data). */
int ts_wait_closed(int fd, int timeout_ms);

/* GET http://127.0.0.1:port/path into r; status or -1. */
int ts_http_get(int port, const char *path, struct ts_resp *r);

#endif

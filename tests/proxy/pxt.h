/* pxt: the fixture shared by the proxy integration tests. Each Criterion test
 * runs in its own process and gets its own recording upstream, its own real
 * fenceproxy (own ports, own temp dir) and a raw socket client, so tests can
 * run in parallel. pxt_teardown() (the tests' .fini) stops both and dumps the
 * proxy's log unless the test reached pxt_pass(). Helpers assert with
 * Criterion, so they may only be called from a test body. */
#ifndef PXT_H
#define PXT_H

#include <stddef.h>
#include <stdint.h>

#include "ts_proxy.h"
#include "ts_upstream.h"

struct pxt {
    struct ts_upstream *up; /* NULL when the test runs without one */
    struct ts_proxy px;
    int passed;
};

extern struct pxt pxt;

/* Starts a recording upstream and a proxy in front of it; extra is appended
 * to the [proxy] section of the config (more keys, then other sections). */
void pxt_setup(const char *extra);

/* Starts only a proxy whose upstream is 127.0.0.1:upstream_port. */
void pxt_setup_port(int upstream_port, const char *extra);

/* .fini: stops the proxy and the upstream; dumps the log unless passed. */
void pxt_teardown(void);

/* Marks the test as passed (call as its last statement). */
void pxt_pass(void);

/* A connected client socket to the proxy (asserts). */
int pxt_connect(void);

/* Sends all of s (asserts). */
void pxt_send(int fd, const void *s, size_t len);
void pxt_sends(int fd, const char *s);

/* Sends raw on a new connection and asserts: the response has status (or
 * alt when alt != 0), the proxy closes the connection, and nothing at all
 * reached the upstream (no connection, no byte). name labels failures. */
void pxt_reject(const char *name, const char *raw, size_t len, int status, int alt);

/* Waits up to ms for ts_upstream_count() to reach n (asserts). */
void pxt_wait_count(size_t n, int ms);

/* Copies upstream request i into a heap record (free it). Asserts. */
struct ts_upstream_req *pxt_get(size_t i);

/* Reads from fd until EOF or timeout into a malloc'd NUL-terminated buffer;
 * *len gets its size. Returns the buffer (caller frees). */
char *pxt_read_until_close(int fd, size_t *len, int timeout_ms);

/* Fills buf with a deterministic pattern starting at offset off. */
void pxt_pattern(unsigned char *buf, size_t len, uint64_t off);

/* Reads the access log file (waits until it has at least lines lines, up
 * to 3 s). Returns a malloc'd copy (caller frees) or NULL. */
char *pxt_access_log(int lines);

#endif

/* e2e_fixture: the real parts of the end-to-end tests, per test: a temp dir,
 * the lock backend (redis-server by default; or three redis-servers for
 * Redlock, an etcd member, a ZooKeeper server), nginx as a WebDAV file store and fenceproxy
 * in front of it with the embedded file store and the route
 * `[route objects] prefix = /objects/ resource = segments:2`, each on its own
 * free loopback port. Clients are the built `fencelock` around /usr/bin/curl.
 * Everything is stopped by PID in e2e_stop. No Criterion inside: functions
 * print a clear message and return -1; the tests assert. */
#ifndef E2E_FIXTURE_H
#define E2E_FIXTURE_H

#include <stddef.h>

#include "ts_etcd.h"
#include "ts_proc.h"
#include "ts_proxy.h"
#include "ts_zk.h"

#define E2E_CURL "/usr/bin/curl"

struct e2e {
    char *dir; /* owned temp dir: redis, nginx (data under dir/data), client files */
    struct ts_proc redis;
    struct ts_proc redlock[3]; /* lock backend "redlock": its nodes */
    int redlock_port[3];
    struct ts_etcd etcd; /* lock backend "etcd" */
    struct ts_zk zk;     /* lock backend "zk" */
    struct ts_proc nginx;
    struct ts_proxy px; /* its own temp dir; audit log at px.audit */
    int redis_port;
    int nginx_port;
    char backend[300];     /* the fencelock URL, e.g. redis://127.0.0.1:PORT */
    const char *fencelock; /* built binary (owned by ts_build_path's cache) */
    const char *src;       /* $FENCE_SOURCE_DIR (environment, borrowed) */
};

/* Checks the binaries and starts redis-server, nginx and fenceproxy. On
 * failure what did start is left for e2e_stop. 0 / -1 with a message. */
int e2e_start(struct e2e *e, const char *tag);

/* The same with the lock backend named by lock: "redis", "redlock" (three
 * redis-servers), "etcd" (one member) or "zk" (a standalone ZooKeeper). */
int e2e_start_with(struct e2e *e, const char *tag, const char *lock);

/* Stops the three servers by PID (dumping their logs when dump is set) and
 * removes the temp dirs. Safe on a partly started or already stopped e. */
void e2e_stop(struct e2e *e, int dump);

/* Stops fenceproxy with SIGTERM (a clean shutdown) and returns its exit
 * code, 128+N if a signal N ended it, or -1 if it was not running. Sanitizer
 * reports at exit show up here as a non-zero code. */
int e2e_stop_proxy(struct e2e *e);

/* Writes "e->dir/rel" into out (cap bytes). Returns out. */
char *e2e_path(const struct e2e *e, const char *rel, char *out, size_t cap);

/* Waits up to timeout_ms for the file at path to exist with a size > 0.
 * 0 / -1. */
int e2e_wait_file(const char *path, int timeout_ms);

/* Reads a whole file (see ts_read_file) with trailing newlines stripped.
 * malloc'd (caller frees) or NULL. */
char *e2e_read_trimmed(const char *path);

/* Creates an empty file at path. 0 / -1. */
int e2e_touch(const char *path);

/* Counts the lines of the file at path that contain every one of the
 * NULL-terminated needles. -1 when the file cannot be read. */
int e2e_count_lines(const char *path, const char *const needles[]);

#endif

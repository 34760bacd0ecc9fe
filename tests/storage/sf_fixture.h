/* sf_fixture: the real servers and clients of the storage tests, per test:
 * a temp dir, redis-server (lock backend), Apache httpd with mod_dav as a
 * WebDAV store, s3rver (an S3 server that checks SigV4, installed
 * project-locally by scripts/deps.sh) and fenceproxy in front of one of
 * them, each on its own free loopback port; client programs run to
 * completion with their output in a file. Everything is stopped by PID in
 * sf_stop. No Criterion inside: functions print a clear message (naming the
 * package to install when a binary is missing) and return -1. */
#ifndef SF_FIXTURE_H
#define SF_FIXTURE_H

#include <stddef.h>

#include "ts_proc.h"
#include "ts_proxy.h"

#define SF_BUCKET "bkt"
#define SF_S3_KEY "S3RVER" /* s3rver's built-in access key id and secret */

struct sf {
    char *dir; /* owned temp dir */
    struct ts_proc redis, apache, s3;
    struct ts_proxy px; /* its own temp dir; audit log at px.audit */
    int redis_port, apache_port, s3_port;
    char backend[64];      /* redis://127.0.0.1:PORT */
    const char *fencelock; /* built binary (ts_build_path's cache) */
    const char *src;       /* $FENCE_SOURCE_DIR */
};

/* Temp dir and checks of FENCE_SOURCE_DIR and the fencelock binary. */
int sf_init(struct sf *s, const char *tag);
int sf_redis_start(struct sf *s);
/* Apache httpd (event MPM, foreground, own config in the temp dir, no system
 * config) serving dir/dav as a DAV tree at /: /dav/, /fdav/ and /tdav/ exist. */
int sf_apache_start(struct sf *s);
/* s3rver on dir/s3 with bucket SF_BUCKET. */
int sf_s3rver_start(struct sf *s);
/* fenceproxy in front of upstream_port with routes (config text). */
int sf_proxy_start(struct sf *s, int upstream_port, const char *routes);

/* Stops everything by PID (logs dumped when dump), removes the temp dirs. */
void sf_stop(struct sf *s, int dump);

/* Runs argv (argv[0] a path) with extra_env added,
 * output (stdout+stderr) to s->dir/TAG.log, for at most
 * timeout_ms (then killed). Returns the exit code, 128+N for signal N, -1 on
 * a fixture error or timeout. *out (if not NULL) gets the output, malloc'd. */
int sf_run(struct sf *s, const char *tag, char *const argv[], char *const extra_env[],
           int timeout_ms, char **out);

/* Path of a client binary, or NULL with "install Debian package PKG". */
const char *sf_need(const char *path, const char *pkg);

/* Writes dir/rel into out. Returns out. */
char *sf_path(const struct sf *s, const char *rel, char *out, size_t cap);

/* Writes a file of len pseudo-random bytes (seeded) at path. 0 / -1. */
int sf_write_file(const char *path, size_t len, unsigned seed);

/* Lines of the file at path containing every needle (NULL-terminated);
 * -1 when unreadable. */
int sf_count_lines(const char *path, const char *const needles[]);

/* Sends one RESP command to the fixture's redis and returns the first line
 * of the reply in buf. 0 / -1. */
int sf_redis(struct sf *s, char *const argv[], char *buf, size_t len);

#endif

/* ts_proc: fixtures for integration tests. Free loopback ports, temp dirs,
 * child processes in their own process group with their output in a log file,
 * and real servers (redis-server, nginx as a WebDAV store) started on a given
 * loopback port and polled until ready. No Criterion here: every function
 * returns an error and prints a clear message to stderr; the test asserts.
 * Not thread-safe (tests call it from one thread per process). */
#ifndef TS_PROC_H
#define TS_PROC_H

#include <stddef.h>
#include <sys/types.h>

/* Binds 127.0.0.1:0, reads the port the kernel chose, closes. Another process
 * may take the port before the caller binds it; tests start their server at
 * once and fail loudly if it does not come up. Returns the port or -1. */
int ts_free_port(void);

/* Creates "$TMPDIR/fence-TAG-XXXXXX" (or under /tmp). Returns a malloc'd path
 * (caller frees) or NULL. */
char *ts_tempdir(const char *tag);

/* Deletes path and everything below it without following symlinks. Refuses
 * "/", relative paths and paths with fewer than two components, and stops
 * after 100000 entries. Returns 0, or -1 (also when path does not exist). */
int ts_rmrf(const char *path);

/* Finds an executable called name in $PATH, then /usr/sbin, /usr/local/sbin,
 * /sbin. Returns a path owned by this module (valid until exit, do not free),
 * or NULL with a message naming the Debian package to install. */
const char *ts_find_binary(const char *name);

/* Returns "$FENCE_BUILD_DIR/rel" (FENCE_BUILD_DIR is set by ctest). The string
 * is owned by this module (cached per rel, valid until exit, do not free).
 * NULL with a message if FENCE_BUILD_DIR is unset. */
const char *ts_build_path(const char *rel);

struct ts_proc {
    pid_t pid;      /* 0 when not running / already reaped */
    char name[64];  /* for messages */
    char log[1024]; /* file receiving the child's stdout and stderr */
};

/* Forks and execs argv[0] (a path, not searched in PATH) with argv, in a new
 * process group whose id is the child's pid, stdin from /dev/null, stdout and
 * stderr appended to logpath (created if missing). extra_env is a
 * NULL-terminated list of "K=V" added to the inherited environment, or NULL.
 * argv, extra_env and logpath are borrowed for the call. Returns 0 (p->pid
 * set) or -1. An exec failure shows as exit status 127 plus a line in the log. */
int ts_proc_start(struct ts_proc *p, const char *name, char *const argv[], char *const extra_env[],
                  const char *logpath);

/* Sends sig to the process (not its group). 0 / -1 (also if pid is 0). */
int ts_proc_signal(struct ts_proc *p, int sig);

/* Sends sig to the whole process group of p. 0 / -1. */
int ts_proc_signal_group(struct ts_proc *p, int sig);

/* Returns 1 if p is running (or stopped) and not yet reaped, else 0. Reaps
 * it (and sets pid to 0) if it has exited. */
int ts_proc_alive(struct ts_proc *p);

/* Waits up to timeout_ms (polling every few ms) for p to exit. On exit reaps
 * it, stores the raw wait status in *status (if not NULL), sets p->pid to 0
 * and returns 0. Returns -1 on timeout (p untouched) or error. */
int ts_proc_wait(struct ts_proc *p, int timeout_ms, int *status);

/* Sends sig, waits up to timeout_ms, then SIGKILLs the process group and
 * waits again. Once the process has exited, SIGKILLs what is left of its
 * group (e.g. nginx workers), then reaps it. Returns the raw wait status, or
 * -1 if pid is 0 or on error. Sets p->pid to 0. Safe on pid 0. */
int ts_proc_stop(struct ts_proc *p, int sig, int timeout_ms);

/* Prints p's log file to stderr between header lines (first 64 KiB). */
void ts_proc_dump_log(const struct ts_proc *p);

/* Tries connect() to 127.0.0.1:port until it succeeds or timeout_ms passes.
 * 0 / -1. */
int ts_wait_port(int port, int timeout_ms);

/* Starts redis-server on 127.0.0.1:port with dir as working dir and without
 * persistence (save "", appendonly no), log in dir/redis.log, and waits (up
 * to 10 s) until it answers PING with PONG. 0, or -1 with a message and the
 * log dumped. Stop with ts_proc_stop(p, SIGTERM, ...). */
int ts_redis_start(struct ts_proc *p, const char *dir, int port);

/* The same with extra redis-server arguments appended (they override the
 * defaults), e.g. {"--appendonly", "yes", "--appendfsync", "always", NULL}
 * for a server whose data survives a restart in the same dir, or
 * {"--requirepass", "pw", NULL}. extra is borrowed; NULL for none. */
int ts_redis_start_args(struct ts_proc *p, const char *dir, int port, char *const extra[]);

/* Starts nginx as a WebDAV file store on 127.0.0.1:port: writes
 * dir/nginx.conf (single process, master_process off, so the same process
 * that runs as the caller writes dir/data whether root or not), files
 * under dir/data, temp files under dir/tmp, errors in dir/nginx-error.log.
 * Waits until the port accepts. 0, or -1 with a message and the log dumped. */
int ts_nginx_start(struct ts_proc *p, const char *dir, int port);

/* The same nginx speaking TLS with cert and key (PEM paths; a session
 * cache on), requiring client certificates from client_ca unless NULL. */
int ts_nginx_start_ssl(struct ts_proc *p, const char *dir, int port, const char *cert,
                       const char *key, const char *client_ca);

/* Blocking TCP connect to 127.0.0.1:port with 10 s send/receive timeouts.
 * Returns the fd (caller closes) or -1. */
int ts_connect(int port);

/* The same, but plain TCP also to a port registered for TLS (ts_tls): for
 * tests of what happens below the TLS layer (accepting, refusing). */
int ts_connect_tcp(int port);

/* A listening socket on 127.0.0.1 at a port the kernel picks (*port set),
 * for a small upstream a test plays itself. Returns the fd (caller closes)
 * or -1. */
int ts_listen(int *port);

/* Writes all len bytes (MSG_NOSIGNAL, retries EINTR). 0 / -1. */
int ts_send_all(int fd, const void *buf, size_t len);

/* Reads a whole file into a malloc'd NUL-terminated buffer (caller frees);
 * *len (if not NULL) gets its size. NULL on error. Limit 64 MiB. */
char *ts_read_file(const char *path, size_t *len);

/* Monotonic clock in milliseconds. */
long long ts_now_ms(void);

/* Sleeps ms milliseconds (restarting on EINTR). */
void ts_sleep_ms(int ms);

#endif

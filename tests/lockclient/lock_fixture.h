/* lock_fixture: per-test Redis server and CLI runner for the lockclient
 * tests. Each test gets its own temp dir, free port and redis-server, stopped
 * by PID in the suite's .fini. */
#ifndef LOCK_FIXTURE_H
#define LOCK_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "ts_proc.h"

struct lf {
    char *dir; /* malloc'd temp dir */
    int port;
    struct ts_proc redis;
    char url[64]; /* redis://127.0.0.1:PORT */
};

/* Temp dir, free port, redis-server (extra args appended, may be NULL).
 * 0 / -1 with a message. */
int lf_setup(struct lf *f, const char *tag, char *const extra[]);

/* Stops redis, removes the temp dir. Safe to call twice. */
void lf_teardown(struct lf *f);

/* Restarts redis on the same port and dir (after lf_stop_redis). 0 / -1. */
int lf_restart_redis(struct lf *f, char *const extra[]);

/* Runs the fencelock CLI with args (NULL-terminated, without argv[0]) and
 * FENCE_BACKEND unset unless env sets it; stdout and stderr go to
 * files and are returned NUL-terminated in out/err (truncated). Waits at most
 * timeout_ms. Returns the exit code, 128+sig if killed, or -1 on a fixture
 * error or timeout (the process is then killed). */
int lf_cli(struct lf *f, char *const args[], char *const env[], char *out, size_t outlen, char *err,
           size_t errlen, int timeout_ms);

/* Sends one RESP command (argv, NULL-terminated) to redis and returns the
 * first reply line in buf ("+OK", ":1", "$-1", ...). 0 / -1. */
int lf_redis_cmd(struct lf *f, char *const argv[], char *buf, size_t len);

/* Mutual exclusion under contention, on any backend: forks procs processes
 * that each take lock name at url rounds times (ttl_ms, waiting up to
 * wait_ms), log "B token pid" on entry and "E token pid" on exit to a
 * journal in dir around a hold of hold_ms, and release; then asserts that
 * every process succeeded (within timeout_ms each), that no entry fell
 * inside another hold, that tokens rose strictly in order of entry, and that
 * every acquisition is in the journal. */
void lf_exclusion(const char *url, const char *dir, const char *name, int procs, int rounds,
                  uint64_t ttl_ms, uint64_t wait_ms, int hold_ms, int timeout_ms);

/* Waits until lock name has n waiters (bounded: 5 s), or fails the test. */
struct fl_client;
void lf_wait_waiters(struct fl_client *c, const char *name, size_t n);

/* First come, first served on a queue backend (etcd, ZooKeeper): a holder,
 * four waiters queued one after another; status (the library's and the
 * CLI's, run with f's dir) lists the holder then the waiters in order with
 * rising tokens, and the lock is handed over in that order. */
void lf_fifo_handover(struct lf *f, const char *url);

/* The single-server backends a parametrised test binary runs its tests on,
 * each started once for the whole binary: LF_BACKENDS_START() and _STOP() define the
 * runner's hooks that start a redis-server, a one-member etcd and a
 * standalone ZooKeeper in one temp dir before the first test and stop them
 * by PID after the last; the tests (each in its own process, possibly two
 * at once) find them with lf_backend_url and must use lock names of their
 * own. */
enum lf_kind { LF_REDIS, LF_ETCD, LF_ZK, LF_KINDS };

/* Starts the three servers (the runner's PRE_ALL hook); a server that does
 * not start is reported on stderr and fails every test that asks for it. */
void lf_backends_start(void);

/* Stops them and removes the temp dir (the runner's POST_ALL hook). */
void lf_backends_stop(void);

/* The URL of backend k (asserts that it started). */
const char *lf_backend_url(enum lf_kind k);

/* "redis", "etcd" or "zookeeper". */
const char *lf_backend_name(enum lf_kind k);

/* ReportHook names its function after the line: the two hooks go on two
 * lines of the test file, LF_BACKENDS_START() then LF_BACKENDS_STOP(). */
#define LF_BACKENDS_START()                                                                        \
    ReportHook(PRE_ALL)(struct criterion_test_set * set_)                                          \
    {                                                                                              \
        (void)set_;                                                                                \
        lf_backends_start();                                                                       \
    }
#define LF_BACKENDS_STOP()                                                                         \
    ReportHook(POST_ALL)(struct criterion_global_stats * stats_)                                   \
    {                                                                                              \
        (void)stats_;                                                                              \
        lf_backends_stop();                                                                        \
    }

/* One test per backend, body(kind) in each: suite_redis, suite_etcd and
 * suite_zk (TestSuites the file declares), all named name. */
#define LF_TEST_EACH(suite, name, body)                                                            \
    Test(suite##_redis, name)                                                                      \
    {                                                                                              \
        body(LF_REDIS);                                                                            \
    }                                                                                              \
    Test(suite##_etcd, name)                                                                       \
    {                                                                                              \
        body(LF_ETCD);                                                                             \
    }                                                                                              \
    Test(suite##_zk, name)                                                                         \
    {                                                                                              \
        body(LF_ZK);                                                                               \
    }

/* Assert that dumps the redis log first, so a failure shows the server side. */
#define lf_assert(f, cond, ...)                                                                    \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            ts_proc_dump_log(&(f)->redis);                                                         \
            cr_assert_fail(__VA_ARGS__);                                                           \
        }                                                                                          \
    } while (0)

#endif

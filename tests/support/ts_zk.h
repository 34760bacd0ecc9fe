/* ts_zk: a real ZooKeeper (Debian's zookeeper package, run with its jar and
 * the system java) for integration tests: one standalone server or an
 * ensemble of up to 3 on free loopback ports, each with its own zoo.cfg and
 * data under a test's temp dir, each a ts_proc stopped by PID. Short ticks
 * (100 ms; sessions of 200 ms to 60 s) so session expiry and leader loss are
 * tested in seconds. Readiness and roles come from the "srvr" four-letter
 * command over raw TCP on loopback. Same conventions as ts_proc.h. */
#ifndef TS_ZK_H
#define TS_ZK_H

#include <stddef.h>

#include "ts_proc.h"

#define TS_ZK_MAX 3

struct ts_zk {
    int n;
    char dir[900];
    struct ts_proc m[TS_ZK_MAX];
    int client_port[TS_ZK_MAX], peer_port[TS_ZK_MAX], elect_port[TS_ZK_MAX];
    char hosts[256]; /* "127.0.0.1:P1,127.0.0.1:P2,..." */
    char url[270];   /* "zk://" + hosts */
};

/* Starts n servers (1: standalone, 3: an ensemble) with configs and data in
 * dir/zkN and logs in dir/zkN.log, and waits (up to 40 s) until every one
 * serves (srvr names a mode). 0, or -1 with a message and the logs dumped. */
int ts_zk_start(struct ts_zk *z, const char *dir, int n);

/* Stops every running server (SIGTERM, then SIGKILL). Safe to call twice. */
void ts_zk_stop(struct ts_zk *z);

/* Stops server i with sig (SIGKILL for a crash). 0 / -1. */
int ts_zk_kill(struct ts_zk *z, int i, int sig);

/* Index of the server whose mode is leader (or standalone), or -1. */
int ts_zk_leader(struct ts_zk *z);

/* Waits up to timeout_ms until the running servers serve again and one of
 * them leads. 0 / -1. */
int ts_zk_wait_serving(struct ts_zk *z, int timeout_ms);

/* Sends a four-letter command (e.g. "srvr", "cons") to server i; the answer
 * goes to out (NUL-terminated, truncated). 0 / -1. */
int ts_zk_4lw(struct ts_zk *z, int i, const char *cmd, char *out, size_t outlen);

/* Dumps every server's log to stderr. */
void ts_zk_dump_logs(const struct ts_zk *z);

#endif

/* ts_etcd: a real etcd (Debian's etcd-server) for integration tests: one
 * member or a cluster of up to 5 on free loopback ports, data under a test's
 * temp dir, each member a ts_proc stopped by PID. Fast elections (50 ms
 * heartbeat, 500 ms election timeout) so leader loss and 1 s leases can be
 * tested in seconds. Talks to etcd only over raw HTTP on loopback (no curl or
 * JSON library here). Same conventions as ts_proc.h. */
#ifndef TS_ETCD_H
#define TS_ETCD_H

#include <stddef.h>

#include "ts_proc.h"

#define TS_ETCD_MAX 5

struct ts_etcd {
    int n;
    char dir[900];
    struct ts_proc m[TS_ETCD_MAX];
    int client_port[TS_ETCD_MAX], peer_port[TS_ETCD_MAX];
    char endpoints[256]; /* "127.0.0.1:P1,127.0.0.1:P2,..." */
    char url[270];       /* "etcd://" + endpoints */
};

/* Starts n members (1..TS_ETCD_MAX) with data in dir/etcdN and logs in
 * dir/etcdN.log, and waits (up to 20 s) until a write through member 0
 * commits. 0, or -1 with a message and the logs dumped. */
int ts_etcd_start(struct ts_etcd *e, const char *dir, int n);

/* Stops every running member (SIGTERM, then SIGKILL). Safe to call twice. */
void ts_etcd_stop(struct ts_etcd *e);

/* Stops member i with sig (SIGKILL for a crash). 0 / -1. */
int ts_etcd_kill(struct ts_etcd *e, int i, int sig);

/* Starts member i again (stopped by ts_etcd_kill) on its ports with its data
 * dir, and waits (10 s) until its client port accepts; a quorum may still be
 * missing then. 0 / -1. */
int ts_etcd_restart(struct ts_etcd *e, int i);

/* Index of the member that is leader now, or -1 (asks each running member). */
int ts_etcd_leader(struct ts_etcd *e);

/* POSTs body (JSON) to path on member i's client port; the response body
 * goes to out (NUL-terminated, truncated). Returns the HTTP status or -1. */
int ts_etcd_post(struct ts_etcd *e, int i, const char *path, const char *body, char *out,
                 size_t outlen);

/* Dumps every member's log to stderr. */
void ts_etcd_dump_logs(const struct ts_etcd *e);

#endif

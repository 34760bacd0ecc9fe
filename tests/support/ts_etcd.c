/* ts_etcd: see ts_etcd.h. */
#include "ts_etcd.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int ts_etcd_post(struct ts_etcd *e, int i, const char *path, const char *body, char *out,
                 size_t outlen)
{
    char req[4096], resp[65536];
    size_t got = 0;
    int fd, n, status = -1;
    ssize_t r;

    if (outlen)
        out[0] = '\0';
    n = snprintf(req, sizeof req,
                 "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                 path, strlen(body), body);
    if (n < 0 || (size_t)n >= sizeof req)
        return -1;
    fd = ts_connect(e->client_port[i]);
    if (fd < 0)
        return -1;
    if (ts_send_all(fd, req, (size_t)n) < 0)
        goto out;
    while (got < sizeof resp - 1 && (r = recv(fd, resp + got, sizeof resp - 1 - got, 0)) > 0)
        got += (size_t)r;
    resp[got] = '\0';
    if (sscanf(resp, "HTTP/1.1 %d", &status) != 1)
        status = -1;
    {
        char *b = strstr(resp, "\r\n\r\n");

        if (b && outlen)
            snprintf(out, outlen, "%s", b + 4);
    }
out:
    close(fd);
    return status;
}

static int start_member(struct ts_etcd *e, int i, const char *cluster, const char *bin)
{
    char name[16], data[1000], log[1000], cl[64], pe[64];
    char *argv[] = {(char *)bin,
                    "--name",
                    name,
                    "--data-dir",
                    data,
                    "--listen-client-urls",
                    cl,
                    "--advertise-client-urls",
                    cl,
                    "--listen-peer-urls",
                    pe,
                    "--initial-advertise-peer-urls",
                    pe,
                    "--initial-cluster",
                    (char *)cluster,
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    "fence-test",
                    "--heartbeat-interval",
                    "50",
                    "--election-timeout",
                    "500",
                    NULL};

    snprintf(name, sizeof name, "m%d", i);
    snprintf(data, sizeof data, "%s/etcd%d", e->dir, i);
    snprintf(log, sizeof log, "%s/etcd%d.log", e->dir, i);
    snprintf(cl, sizeof cl, "http://127.0.0.1:%d", e->client_port[i]);
    snprintf(pe, sizeof pe, "http://127.0.0.1:%d", e->peer_port[i]);
    return ts_proc_start(&e->m[i], name, argv, NULL, log);
}

int ts_etcd_start(struct ts_etcd *e, const char *dir, int n)
{
    const char *bin = ts_find_binary("etcd");
    char cluster[1024] = "", out[4096];
    size_t off = 0, eoff = 0;
    long long t0;

    memset(e, 0, sizeof *e);
    if (bin == NULL) {
        fprintf(stderr, "ts_etcd: etcd not found (apt install etcd-server)\n");
        return -1;
    }
    if (n < 1 || n > TS_ETCD_MAX)
        return -1;
    e->n = n;
    snprintf(e->dir, sizeof e->dir, "%s", dir);
    for (int i = 0; i < n; i++) {
        e->client_port[i] = ts_free_port();
        e->peer_port[i] = ts_free_port();
        if (e->client_port[i] < 0 || e->peer_port[i] < 0)
            return -1;
        off += (size_t)snprintf(cluster + off, sizeof cluster - off, "%sm%d=http://127.0.0.1:%d",
                                i ? "," : "", i, e->peer_port[i]);
        eoff += (size_t)snprintf(e->endpoints + eoff, sizeof e->endpoints - eoff,
                                 "%s127.0.0.1:%d", i ? "," : "", e->client_port[i]);
    }
    snprintf(e->url, sizeof e->url, "etcd://%s", e->endpoints);
    for (int i = 0; i < n; i++) {
        if (start_member(e, i, cluster, bin) < 0)
            goto fail;
    }
    /* Ready when a write commits (needs a leader and a quorum). */
    t0 = ts_now_ms();
    while (ts_now_ms() - t0 < 20000) {
        if (ts_etcd_post(e, 0, "/v3/kv/put", "{\"key\":\"cmVhZHk=\",\"value\":\"\"}", out,
                         sizeof out) == 200 &&
            strstr(out, "\"revision\"") != NULL)
            return 0;
        for (int i = 0; i < n; i++) {
            if (!ts_proc_alive(&e->m[i])) {
                fprintf(stderr, "ts_etcd: member %d exited at start\n", i);
                goto fail;
            }
        }
        ts_sleep_ms(50);
    }
    fprintf(stderr, "ts_etcd: cluster of %d not ready within 20 s\n", n);
fail:
    ts_etcd_dump_logs(e);
    ts_etcd_stop(e);
    return -1;
}

void ts_etcd_stop(struct ts_etcd *e)
{
    for (int i = 0; i < e->n; i++)
        ts_proc_stop(&e->m[i], SIGTERM, 5000);
}

int ts_etcd_restart(struct ts_etcd *e, int i)
{
    const char *bin = ts_find_binary("etcd");
    char cluster[1024] = "";
    size_t off = 0;

    if (bin == NULL || i < 0 || i >= e->n || e->m[i].pid != 0)
        return -1;
    for (int k = 0; k < e->n; k++)
        off += (size_t)snprintf(cluster + off, sizeof cluster - off, "%sm%d=http://127.0.0.1:%d",
                                k ? "," : "", k, e->peer_port[k]);
    /* Its data dir holds its membership: the --initial-* flags are ignored. */
    if (start_member(e, i, cluster, bin) < 0)
        return -1;
    return ts_wait_port(e->client_port[i], 10000);
}

int ts_etcd_kill(struct ts_etcd *e, int i, int sig)
{
    if (i < 0 || i >= e->n)
        return -1;
    return ts_proc_stop(&e->m[i], sig, 5000) < 0 ? -1 : 0;
}

/* Reads the decimal string value of "field":"N" from text. */
static unsigned long long field(const char *text, const char *name)
{
    char pat[64];
    const char *p;

    snprintf(pat, sizeof pat, "\"%s\":\"", name);
    p = strstr(text, pat);
    return p ? strtoull(p + strlen(pat), NULL, 10) : 0;
}

int ts_etcd_leader(struct ts_etcd *e)
{
    char out[4096];

    for (int i = 0; i < e->n; i++) {
        if (e->m[i].pid == 0)
            continue;
        if (ts_etcd_post(e, i, "/v3/maintenance/status", "{}", out, sizeof out) != 200)
            continue;
        if (field(out, "leader") != 0 && field(out, "leader") == field(out, "member_id"))
            return i;
    }
    return -1;
}

void ts_etcd_dump_logs(const struct ts_etcd *e)
{
    for (int i = 0; i < e->n; i++)
        ts_proc_dump_log(&e->m[i]);
}

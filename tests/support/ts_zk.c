/* ts_zk: see ts_zk.h. */
#include "ts_zk.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define ZK_JAR     "/usr/share/java/zookeeper.jar"
#define ZK_LOG_JAR "/usr/share/java/slf4j-simple.jar"

int ts_zk_4lw(struct ts_zk *z, int i, const char *cmd, char *out, size_t outlen)
{
    size_t off = 0;
    int fd, rc = -1;

    out[0] = '\0';
    fd = ts_connect(z->client_port[i]);
    if (fd < 0)
        return -1;
    if (ts_send_all(fd, cmd, strlen(cmd)) < 0)
        goto out;
    while (off + 1 < outlen) {
        ssize_t got = recv(fd, out + off, outlen - 1 - off, 0);

        if (got <= 0)
            break;
        off += (size_t)got;
    }
    out[off] = '\0';
    rc = off > 0 ? 0 : -1;
out:
    close(fd);
    return rc;
}

static int serving(struct ts_zk *z, int i, int *leader)
{
    char buf[2048];

    *leader = 0;
    if (z->m[i].pid == 0 || ts_zk_4lw(z, i, "srvr", buf, sizeof buf) < 0)
        return 0;
    if (strstr(buf, "Mode: leader") || strstr(buf, "Mode: standalone"))
        *leader = 1;
    return strstr(buf, "Mode: ") != NULL;
}

int ts_zk_leader(struct ts_zk *z)
{
    for (int i = 0; i < z->n; i++) {
        int leader;

        if (serving(z, i, &leader) && leader)
            return i;
    }
    return -1;
}

int ts_zk_wait_serving(struct ts_zk *z, int timeout_ms)
{
    long long deadline = ts_now_ms() + timeout_ms;

    while (ts_now_ms() < deadline) {
        int all = 1, leaders = 0;

        for (int i = 0; i < z->n; i++) {
            int leader;

            if (z->m[i].pid == 0)
                continue;
            if (!ts_proc_alive(&z->m[i])) {
                fprintf(stderr, "ts_zk: server %d exited\n", i);
                return -1;
            }
            if (!serving(z, i, &leader))
                all = 0;
            leaders += leader;
        }
        if (all && leaders == 1)
            return 0;
        ts_sleep_ms(100);
    }
    fprintf(stderr, "ts_zk: not serving within %d ms\n", timeout_ms);
    return -1;
}

static int write_config(struct ts_zk *z, int i)
{
    char path[1000], sub[960];
    FILE *f;

    snprintf(sub, sizeof sub, "%s/zk%d", z->dir, i);
    if (mkdir(sub, 0755) < 0)
        return -1;
    snprintf(path, sizeof path, "%s/myid", sub);
    if ((f = fopen(path, "w")) == NULL)
        return -1;
    fprintf(f, "%d\n", i + 1);
    fclose(f);
    snprintf(path, sizeof path, "%s/zoo.cfg", sub);
    if ((f = fopen(path, "w")) == NULL)
        return -1;
    fprintf(f,
            "tickTime=100\ninitLimit=50\nsyncLimit=20\ndataDir=%s\n"
            "clientPort=%d\nclientPortAddress=127.0.0.1\n"
            "minSessionTimeout=200\nmaxSessionTimeout=60000\n"
            "admin.enableServer=false\n4lw.commands.whitelist=*\n"
            "electionPortBindRetry=3\n",
            sub, z->client_port[i]);
    if (z->n > 1)
        for (int j = 0; j < z->n; j++)
            fprintf(f, "server.%d=127.0.0.1:%d:%d\n", j + 1, z->peer_port[j], z->elect_port[j]);
    fclose(f);
    return 0;
}

int ts_zk_start(struct ts_zk *z, const char *dir, int n)
{
    const char *java = ts_find_binary("java");
    char cp[300], cfg[1000], log[1000];
    size_t off = 0;

    memset(z, 0, sizeof *z);
    if (n < 1 || n > TS_ZK_MAX || java == NULL)
        return -1;
    if (access(ZK_JAR, R_OK) != 0) {
        fprintf(stderr, "ts_zk: %s missing: install the Debian package zookeeper\n", ZK_JAR);
        return -1;
    }
    z->n = n;
    snprintf(z->dir, sizeof z->dir, "%s", dir);
    for (int i = 0; i < n; i++) {
        z->client_port[i] = ts_free_port();
        z->peer_port[i] = n > 1 ? ts_free_port() : 0;
        z->elect_port[i] = n > 1 ? ts_free_port() : 0;
        if (z->client_port[i] < 0 || z->peer_port[i] < 0 || z->elect_port[i] < 0)
            return -1;
        off += (size_t)snprintf(z->hosts + off, sizeof z->hosts - off, "%s127.0.0.1:%d",
                                i ? "," : "", z->client_port[i]);
    }
    snprintf(z->url, sizeof z->url, "zk://%s", z->hosts);
    snprintf(cp, sizeof cp, "%s%s%s", ZK_JAR, access(ZK_LOG_JAR, R_OK) == 0 ? ":" : "",
             access(ZK_LOG_JAR, R_OK) == 0 ? ZK_LOG_JAR : "");
    for (int i = 0; i < n; i++) {
        char *argv[] = {(char *)java,
                        "-Xmx128m",
                        "-XX:+UseSerialGC",
                        "-XX:TieredStopAtLevel=1",
                        "-Dzookeeper.jmx.log4j.disable=true",
                        "-cp",
                        cp,
                        n > 1 ? "org.apache.zookeeper.server.quorum.QuorumPeerMain"
                              : "org.apache.zookeeper.server.ZooKeeperServerMain",
                        cfg,
                        NULL};

        if (write_config(z, i) < 0) {
            fprintf(stderr, "ts_zk: cannot write the config of server %d in %s\n", i, dir);
            goto fail;
        }
        snprintf(cfg, sizeof cfg, "%s/zk%d/zoo.cfg", dir, i);
        snprintf(log, sizeof log, "%s/zk%d.log", dir, i);
        if (ts_proc_start(&z->m[i], "zookeeper", argv, NULL, log) < 0)
            goto fail;
    }
    if (ts_zk_wait_serving(z, 40000) < 0)
        goto fail;
    return 0;
fail:
    ts_zk_dump_logs(z);
    ts_zk_stop(z);
    return -1;
}

void ts_zk_stop(struct ts_zk *z)
{
    for (int i = 0; i < z->n; i++)
        ts_proc_stop(&z->m[i], SIGTERM, 5000);
}

int ts_zk_kill(struct ts_zk *z, int i, int sig)
{
    if (i < 0 || i >= z->n)
        return -1;
    return ts_proc_stop(&z->m[i], sig, 5000) < 0 ? -1 : 0;
}

void ts_zk_dump_logs(const struct ts_zk *z)
{
    for (int i = 0; i < z->n; i++)
        ts_proc_dump_log(&z->m[i]);
}

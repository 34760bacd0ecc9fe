/* e2e_fixture: starts and stops the real servers of the end-to-end tests
 * (redis-server, nginx WebDAV, fenceproxy) and small file helpers shared by
 * the tests. Owns nothing beyond the struct e2e it is given. */
#include "e2e_fixture.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char routes[] = "[route objects]\nprefix = /objects/\nresource = segments:2\n";

/* ts_free_port hands out a port from the kernel's ephemeral range, which an
 * outgoing connection of a test running in parallel (these tests make many)
 * may take before the server binds it. So each server gets a few tries, each
 * on a new port. */
#define START_TRIES 4

/* Starts the lock backend named lock and sets e->backend. 0 / -1. */
static int start_lock(struct e2e *e, const char *lock)
{
    char sub[1100];
    size_t off;
    int rc = -1;

    if (strcmp(lock, "redis") == 0) {
        for (int i = 0; rc < 0 && i < START_TRIES; i++)
            if ((e->redis_port = ts_free_port()) >= 0)
                rc = ts_redis_start(&e->redis, e->dir, e->redis_port);
        if (rc == 0)
            snprintf(e->backend, sizeof e->backend, "redis://127.0.0.1:%d", e->redis_port);
        return rc;
    }
    if (strcmp(lock, "redlock") == 0) {
        off = (size_t)snprintf(e->backend, sizeof e->backend, "redlock://");
        for (int n = 0; n < 3; n++) {
            snprintf(sub, sizeof sub, "%s/redlock%d", e->dir, n);
            if (mkdir(sub, 0755) != 0)
                return -1;
            rc = -1;
            for (int i = 0; rc < 0 && i < START_TRIES; i++)
                if ((e->redlock_port[n] = ts_free_port()) >= 0)
                    rc = ts_redis_start(&e->redlock[n], sub, e->redlock_port[n]);
            if (rc < 0)
                return -1;
            off += (size_t)snprintf(e->backend + off, sizeof e->backend - off, "%s127.0.0.1:%d",
                                    n ? "," : "", e->redlock_port[n]);
        }
        return 0;
    }
    if (strcmp(lock, "etcd") == 0) {
        if (ts_etcd_start(&e->etcd, e->dir, 1) < 0)
            return -1;
        snprintf(e->backend, sizeof e->backend, "%s", e->etcd.url);
        return 0;
    }
    if (strcmp(lock, "zk") == 0) {
        if (ts_zk_start(&e->zk, e->dir, 1) < 0)
            return -1;
        snprintf(e->backend, sizeof e->backend, "%s", e->zk.url);
        return 0;
    }
    fprintf(stderr, "e2e: unknown lock backend '%s'\n", lock);
    return -1;
}

int e2e_start(struct e2e *e, const char *tag)
{
    return e2e_start_with(e, tag, "redis");
}

int e2e_start_with(struct e2e *e, const char *tag, const char *lock)
{
    char rtag[64];
    int rc = -1;

    memset(e, 0, sizeof *e);
    if (access(E2E_CURL, X_OK) != 0) {
        fprintf(stderr, "e2e: %s not found: the clients are curl (apt-get install curl)\n",
                E2E_CURL);
        return -1;
    }
    e->src = getenv("FENCE_SOURCE_DIR");
    if (e->src == NULL || e->src[0] == '\0') {
        fprintf(stderr, "e2e: FENCE_SOURCE_DIR is not set (run the test through ctest)\n");
        return -1;
    }
    e->fencelock = ts_build_path("lockclient/fencelock");
    if (e->fencelock == NULL || access(e->fencelock, X_OK) != 0) {
        fprintf(stderr, "e2e: fencelock not found at %s (build the fencelock target)\n",
                e->fencelock ? e->fencelock : "?");
        return -1;
    }
    snprintf(rtag, sizeof rtag, "e2e-%s", tag);
    if ((e->dir = ts_tempdir(rtag)) == NULL)
        return -1;
    if (start_lock(e, lock) < 0)
        return -1;
    for (int i = 0; rc < 0 && i < START_TRIES; i++)
        if ((e->nginx_port = ts_free_port()) >= 0)
            rc = ts_nginx_start(&e->nginx, e->dir, e->nginx_port);
    if (rc < 0)
        return -1;
    rc = -1;
    for (int i = 0; rc < 0 && i < START_TRIES; i++) {
        if (e->px.dir != NULL)
            ts_proxy_cleanup(&e->px, 0);
        memset(&e->px, 0, sizeof e->px);
        if (ts_proxy_init(&e->px, rtag) < 0 ||
            ts_proxy_write_conf(&e->px, e->nginx_port, routes) < 0)
            return -1;
        rc = ts_proxy_start(&e->px);
    }
    return rc;
}

void e2e_stop(struct e2e *e, int dump)
{
    if (e->px.dir != NULL)
        ts_proxy_cleanup(&e->px, dump);
    e->px.dir = NULL;
    ts_proc_stop(&e->nginx, SIGTERM, 3000);
    ts_proc_stop(&e->redis, SIGTERM, 3000);
    for (int i = 0; i < 3; i++)
        ts_proc_stop(&e->redlock[i], SIGTERM, 3000);
    if (dump) {
        ts_etcd_dump_logs(&e->etcd);
        ts_zk_dump_logs(&e->zk);
        for (int i = 0; i < 3; i++)
            if (e->redlock[i].log[0] != '\0')
                ts_proc_dump_log(&e->redlock[i]);
    }
    ts_etcd_stop(&e->etcd);
    ts_zk_stop(&e->zk);
    if (dump) {
        if (e->nginx.log[0] != '\0')
            ts_proc_dump_log(&e->nginx);
        if (e->redis.log[0] != '\0')
            ts_proc_dump_log(&e->redis);
    }
    if (e->dir != NULL) {
        if (dump)
            fprintf(stderr, "e2e: removing %s\n", e->dir);
        ts_rmrf(e->dir);
        free(e->dir);
        e->dir = NULL;
    }
}

int e2e_stop_proxy(struct e2e *e)
{
    int st = ts_proxy_stop(&e->px, SIGTERM);

    if (st < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

char *e2e_path(const struct e2e *e, const char *rel, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", e->dir, rel);
    return out;
}

int e2e_wait_file(const char *path, int timeout_ms)
{
    long long deadline = ts_now_ms() + timeout_ms;
    struct stat st;

    for (;;) {
        if (stat(path, &st) == 0 && st.st_size > 0)
            return 0;
        if (ts_now_ms() >= deadline)
            return -1;
        ts_sleep_ms(10);
    }
}

char *e2e_read_trimmed(const char *path)
{
    size_t n = 0;
    char *s = ts_read_file(path, &n);

    while (s != NULL && n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

int e2e_touch(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);

    if (fd < 0) {
        fprintf(stderr, "e2e: cannot create %s: %s\n", path, strerror(errno));
        return -1;
    }
    close(fd);
    return 0;
}

int e2e_count_lines(const char *path, const char *const needles[])
{
    char *text = ts_read_file(path, NULL), *line, *save = NULL;
    int count = 0;

    if (text == NULL)
        return -1;
    for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        size_t i;

        for (i = 0; needles[i] != NULL && strstr(line, needles[i]) != NULL; i++)
            ;
        count += needles[i] == NULL;
    }
    free(text);
    return count;
}

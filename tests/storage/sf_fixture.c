/* sf_fixture: starts and stops the real servers of the storage tests and
 * runs their clients (see sf_fixture.h). Owns nothing beyond the struct sf
 * it is given. */
#include "sf_fixture.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ts_free_port can lose a race with a parallel test: each server gets a few
 * tries, each on a new port. */
#define START_TRIES 4

char *sf_path(const struct sf *s, const char *rel, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", s->dir, rel);
    return out;
}

const char *sf_need(const char *path, const char *pkg)
{
    if (access(path, X_OK) != 0) {
        fprintf(stderr, "storage tests: %s not found: apt-get install %s (scripts/deps.sh)\n",
                path, pkg);
        return NULL;
    }
    return path;
}

int sf_init(struct sf *s, const char *tag)
{
    char t[64];

    memset(s, 0, sizeof *s);
    s->src = getenv("FENCE_SOURCE_DIR");
    if (s->src == NULL || s->src[0] == '\0') {
        fprintf(stderr, "storage tests: FENCE_SOURCE_DIR is not set (run through ctest)\n");
        return -1;
    }
    s->fencelock = ts_build_path("lockclient/fencelock");
    if (s->fencelock == NULL || access(s->fencelock, X_OK) != 0) {
        fprintf(stderr, "storage tests: fencelock not found at %s (build the fencelock target)\n",
                s->fencelock ? s->fencelock : "?");
        return -1;
    }
    snprintf(t, sizeof t, "st-%s", tag);
    if ((s->dir = ts_tempdir(t)) == NULL)
        return -1;
    /* Apache drops root for www-data, which must reach its files below. */
    chmod(s->dir, 0755);
    return 0;
}

int sf_redis_start(struct sf *s)
{
    int rc = -1;

    for (int i = 0; rc < 0 && i < START_TRIES; i++)
        if ((s->redis_port = ts_free_port()) >= 0)
            rc = ts_redis_start(&s->redis, s->dir, s->redis_port);
    snprintf(s->backend, sizeof s->backend, "redis://127.0.0.1:%d", s->redis_port);
    return rc;
}

/* Polls port until it accepts, p exits, or 10 s pass. 0 / -1. */
static int wait_up(struct ts_proc *p, int port)
{
    long long deadline = ts_now_ms() + 10000;

    while (ts_now_ms() < deadline) {
        if (ts_wait_port(port, 50) == 0)
            return 0;
        if (!ts_proc_alive(p)) {
            fprintf(stderr, "storage tests: %s on port %d exited early\n", p->name, port);
            ts_proc_dump_log(p);
            return -1;
        }
    }
    fprintf(stderr, "storage tests: %s: port %d not accepting within 10 s\n", p->name, port);
    ts_proc_dump_log(p);
    ts_proc_stop(p, SIGKILL, 1000);
    return -1;
}

static int apache_once(struct sf *s, const char *bin, int port)
{
    static const char *const mods[][2] = {
        {"mpm_event_module", "mod_mpm_event.so"}, {"authz_core_module", "mod_authz_core.so"},
        {"dav_module", "mod_dav.so"},             {"dav_fs_module", "mod_dav_fs.so"}};
    char conf[1100], log[1100], root[1100], run[1100], sub[1200];
    struct passwd *pw = geteuid() == 0 ? getpwnam("www-data") : NULL;
    FILE *f;

    sf_path(s, "httpd.conf", conf, sizeof conf);
    sf_path(s, "apache.log", log, sizeof log);
    sf_path(s, "dav", root, sizeof root);
    sf_path(s, "apache-run", run, sizeof run);
    mkdir(root, 0755);
    mkdir(run, 0755);
    for (int i = 0; i < 3; i++) {
        snprintf(sub, sizeof sub, "%s/%s", root, (const char *[]){"dav", "fdav", "tdav"}[i]);
        mkdir(sub, 0755);
        if (pw != NULL && chown(sub, pw->pw_uid, pw->pw_gid) < 0)
            return -1;
    }
    if (pw != NULL && (chown(root, pw->pw_uid, pw->pw_gid) < 0 ||
                       chown(run, pw->pw_uid, pw->pw_gid) < 0))
        return -1;
    if ((f = fopen(conf, "w")) == NULL)
        return -1;
    fprintf(f, "ServerRoot \"%s\"\nListen 127.0.0.1:%d\nServerName 127.0.0.1\n", s->dir, port);
    for (size_t i = 0; i < sizeof mods / sizeof mods[0]; i++)
        fprintf(f, "LoadModule %s /usr/lib/apache2/modules/%s\n", mods[i][0], mods[i][1]);
    if (pw != NULL)
        fprintf(f, "User www-data\nGroup www-data\n");
    fprintf(f,
            "PidFile %s/httpd.pid\nErrorLog %s\nLogLevel crit\nDavLockDB %s/davlock\n"
            "StartServers 1\nServerLimit 1\nThreadsPerChild 16\nMaxRequestWorkers 16\n"
            "DocumentRoot %s\n<Directory %s>\n  Dav On\n  Require all granted\n</Directory>\n",
            run, log, run, root, root);
    if (fclose(f) != 0)
        return -1;
    {
        char *argv[] = {(char *)bin, "-DFOREGROUND", "-f", conf, NULL};

        if (ts_proc_start(&s->apache, "apache2", argv, NULL, log) < 0)
            return -1;
    }
    return wait_up(&s->apache, port);
}

int sf_apache_start(struct sf *s)
{
    const char *bin = sf_need("/usr/sbin/apache2", "apache2");
    int rc = -1;

    if (bin == NULL)
        return -1;
    if (access("/usr/lib/apache2/modules/mod_dav_fs.so", R_OK) != 0) {
        fprintf(stderr, "storage tests: mod_dav_fs not found: apt-get install apache2\n");
        return -1;
    }
    for (int i = 0; rc < 0 && i < START_TRIES; i++)
        if ((s->apache_port = ts_free_port()) >= 0)
            rc = apache_once(s, bin, s->apache_port);
    return rc;
}

int sf_s3rver_start(struct sf *s)
{
    const char *node = sf_need("/usr/bin/node", "nodejs");
    char js[1100], data[1100], log[1100], port[16];
    int rc = -1;

    snprintf(js, sizeof js, "%s/tests/storage/node/node_modules/s3rver/bin/s3rver.js", s->src);
    if (node == NULL)
        return -1;
    if (access(js, R_OK) != 0) {
        fprintf(stderr, "storage tests: %s not found: run scripts/deps.sh (npm ci in "
                        "tests/storage/node)\n", js);
        return -1;
    }
    sf_path(s, "s3", data, sizeof data);
    sf_path(s, "s3rver.log", log, sizeof log);
    mkdir(data, 0755);
    for (int i = 0; rc < 0 && i < START_TRIES; i++) {
        if ((s->s3_port = ts_free_port()) < 0)
            continue;
        snprintf(port, sizeof port, "%d", s->s3_port);
        {
            char *argv[] = {(char *)node, js,    "-d", data, "-a", "127.0.0.1", "-p", port,
                            "--no-vhost-buckets", "--configure-bucket", SF_BUCKET, NULL};

            if (ts_proc_start(&s->s3, "s3rver", argv, NULL, log) < 0)
                return -1;
        }
        rc = wait_up(&s->s3, s->s3_port);
    }
    return rc;
}

int sf_proxy_start(struct sf *s, int upstream_port, const char *routes)
{
    int rc = -1;

    for (int i = 0; rc < 0 && i < START_TRIES; i++) {
        if (s->px.dir != NULL)
            ts_proxy_cleanup(&s->px, 0);
        memset(&s->px, 0, sizeof s->px);
        if (ts_proxy_init(&s->px, "st-proxy") < 0 ||
            ts_proxy_write_conf(&s->px, upstream_port, routes) < 0)
            return -1;
        rc = ts_proxy_start(&s->px);
    }
    return rc;
}

void sf_stop(struct sf *s, int dump)
{
    if (s->px.dir != NULL)
        ts_proxy_cleanup(&s->px, dump);
    s->px.dir = NULL;
    if (dump) {
        ts_proc_dump_log(&s->apache);
        ts_proc_dump_log(&s->s3);
    }
    ts_proc_stop(&s->apache, SIGTERM, 3000);
    ts_proc_stop(&s->s3, SIGTERM, 3000);
    ts_proc_stop(&s->redis, SIGTERM, 3000);
    if (s->dir != NULL && !dump)
        ts_rmrf(s->dir);
    else if (s->dir != NULL)
        fprintf(stderr, "storage tests: files kept in %s\n", s->dir);
    free(s->dir);
    s->dir = NULL;
}

int sf_run(struct sf *s, const char *tag, char *const argv[], char *const extra_env[],
           int timeout_ms, char **out)
{
    struct ts_proc p;
    char log[1100];
    int st = 0;

    if (out)
        *out = NULL;
    snprintf(log, sizeof log, "%s/%s.log", s->dir, tag);
    unlink(log);
    if (ts_proc_start(&p, tag, argv, extra_env, log) < 0)
        return -1;
    if (ts_proc_wait(&p, timeout_ms, &st) < 0) {
        fprintf(stderr, "storage tests: %s still running after %d ms; killed\n", tag, timeout_ms);
        ts_proc_stop(&p, SIGKILL, 1000);
        ts_proc_dump_log(&p);
        return -1;
    }
    if (out)
        *out = ts_read_file(log, NULL);
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    return WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1;
}

int sf_write_file(const char *path, size_t len, unsigned seed)
{
    unsigned char buf[8192];
    unsigned x = seed * 2654435761u + 1;
    FILE *f = fopen(path, "w");
    int rc = 0;

    if (f == NULL)
        return -1;
    while (len > 0 && rc == 0) {
        size_t n = len < sizeof buf ? len : sizeof buf;

        for (size_t i = 0; i < n; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            buf[i] = (unsigned char)x;
        }
        if (fwrite(buf, 1, n, f) != n)
            rc = -1;
        len -= n;
    }
    if (fclose(f) != 0)
        rc = -1;
    return rc;
}

int sf_count_lines(const char *path, const char *const needles[])
{
    char *txt = ts_read_file(path, NULL), *line, *save = NULL;
    int n = 0;

    if (txt == NULL)
        return -1;
    for (line = strtok_r(txt, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        int all = 1;

        for (size_t i = 0; needles[i] && all; i++)
            all = strstr(line, needles[i]) != NULL;
        n += all;
    }
    free(txt);
    return n;
}

int sf_redis(struct sf *s, char *const argv[], char *buf, size_t len)
{
    char req[4096];
    size_t n = 0, argc = 0;
    int fd, rc = -1;
    ssize_t r;

    while (argv[argc])
        argc++;
    n += (size_t)snprintf(req + n, sizeof req - n, "*%zu\r\n", argc);
    for (size_t i = 0; i < argc && n < sizeof req; i++)
        n += (size_t)snprintf(req + n, sizeof req - n, "$%zu\r\n%s\r\n", strlen(argv[i]), argv[i]);
    if (n >= sizeof req || (fd = ts_connect(s->redis_port)) < 0)
        return -1;
    if (ts_send_all(fd, req, n) == 0 && (r = read(fd, buf, len - 1)) > 0) {
        buf[r] = '\0';
        buf[strcspn(buf, "\r\n")] = '\0';
        rc = 0;
    }
    close(fd);
    return rc;
}

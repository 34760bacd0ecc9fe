/* lock_fixture: see lock_fixture.h. */
#include "lock_fixture.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

int lf_setup(struct lf *f, const char *tag, char *const extra[])
{
    memset(f, 0, sizeof *f);
    f->dir = ts_tempdir(tag);
    if (f->dir == NULL)
        return -1;
    f->port = ts_free_port();
    if (f->port < 0)
        return -1;
    snprintf(f->url, sizeof f->url, "redis://127.0.0.1:%d", f->port);
    return ts_redis_start_args(&f->redis, f->dir, f->port, extra);
}

void lf_teardown(struct lf *f)
{
    ts_proc_stop(&f->redis, SIGTERM, 5000);
    if (f->dir) {
        ts_rmrf(f->dir);
        free(f->dir);
        f->dir = NULL;
    }
}

int lf_restart_redis(struct lf *f, char *const extra[])
{
    return ts_redis_start_args(&f->redis, f->dir, f->port, extra);
}

static void read_into(const char *path, char *buf, size_t len)
{
    size_t n = 0;
    char *s = ts_read_file(path, &n);

    if (len == 0)
        goto out;
    buf[0] = '\0';
    if (s)
        snprintf(buf, len, "%s", s);
out:
    free(s);
}

int lf_cli(struct lf *f, char *const args[], char *const env[], char *out, size_t outlen, char *err,
           size_t errlen, int timeout_ms)
{
    static int seq;
    const char *bin = ts_build_path("lockclient/fencelock");
    char opath[1000], epath[1000];
    char *argv[64];
    struct ts_proc p;
    int n = 0, st = 0, rc = -1;
    pid_t pid;

    if (bin == NULL)
        return -1;
    argv[n++] = (char *)bin;
    for (int i = 0; args[i] && n < 63; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    seq++;
    snprintf(opath, sizeof opath, "%s/cli-%d-%d.out", f->dir, (int)getpid(), seq);
    snprintf(epath, sizeof epath, "%s/cli-%d-%d.err", f->dir, (int)getpid(), seq);
    fflush(NULL);
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int o = open(opath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(epath, O_WRONLY | O_CREAT | O_TRUNC, 0644);

        if (o < 0 || e < 0)
            _exit(125);
        dup2(o, 1);
        dup2(e, 2);
        setpgid(0, 0);
        unsetenv("FENCE_BACKEND");
        for (int i = 0; env && env[i]; i++)
            putenv(env[i]);
        execv(argv[0], argv);
        _exit(124);
    }
    memset(&p, 0, sizeof p);
    p.pid = pid;
    snprintf(p.name, sizeof p.name, "fencelock");
    snprintf(p.log, sizeof p.log, "%s", epath);
    if (ts_proc_wait(&p, timeout_ms, &st) < 0) {
        fprintf(stderr, "lf_cli: fencelock did not exit within %d ms\n", timeout_ms);
        ts_proc_stop(&p, SIGKILL, 1000);
        goto out;
    }
    rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
out:
    if (out)
        read_into(opath, out, outlen);
    if (err)
        read_into(epath, err, errlen);
    return rc;
}

int lf_redis_cmd(struct lf *f, char *const argv[], char *buf, size_t len)
{
    char req[2048];
    size_t off = 0;
    int n = 0, fd, rc = -1;
    ssize_t got;

    while (argv[n])
        n++;
    off += (size_t)snprintf(req + off, sizeof req - off, "*%d\r\n", n);
    for (int i = 0; i < n && off < sizeof req; i++)
        off += (size_t)snprintf(req + off, sizeof req - off, "$%zu\r\n%s\r\n", strlen(argv[i]),
                                argv[i]);
    if (off >= sizeof req)
        return -1;
    fd = ts_connect(f->port);
    if (fd < 0)
        return -1;
    if (ts_send_all(fd, req, off) < 0)
        goto out;
    got = recv(fd, buf, len - 1, 0);
    if (got <= 0)
        goto out;
    buf[got] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    rc = 0;
out:
    close(fd);
    return rc;
}

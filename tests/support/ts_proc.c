/* ts_proc: see ts_proc.h. Owns small caches of found binaries and build paths
 * (kept reachable in static tables so leak checkers stay quiet). Every loop is
 * bounded by a deadline or a count, because a hung fixture would hide the
 * real failure behind a ctest timeout. */
#include "ts_proc.h"
#include "ts_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TS_CACHE_MAX 64

struct ts_cache_entry {
    char *key;
    char *val;
};

static struct ts_cache_entry bin_cache[TS_CACHE_MAX];
static struct ts_cache_entry path_cache[TS_CACHE_MAX];

long long ts_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ts_sleep_ms(int ms)
{
    struct timespec req = {ms / 1000, (long)(ms % 1000) * 1000000L}, rem;

    while (nanosleep(&req, &rem) == -1 && errno == EINTR)
        req = rem;
}

/* Returns the cached value for key, or stores val (taking ownership of it)
 * and returns it. On a full cache val is still returned but leaks. */
static const char *cache_put(struct ts_cache_entry *c, const char *key, char *val)
{
    for (int i = 0; i < TS_CACHE_MAX; i++) {
        if (c[i].key == NULL) {
            c[i].key = strdup(key);
            c[i].val = val;
            return val;
        }
    }
    return val;
}

static const char *cache_get(struct ts_cache_entry *c, const char *key)
{
    for (int i = 0; i < TS_CACHE_MAX && c[i].key != NULL; i++)
        if (strcmp(c[i].key, key) == 0)
            return c[i].val;
    return NULL;
}

/* Ports come from below the kernel's ephemeral range (32768-60999 by
 * default), so that no outgoing connection takes one between this check and
 * the server's bind. Each test process (Criterion forks one per test) walks
 * its own block of 8 ports chosen by its pid, so concurrent tests do not pick
 * the same ports; each candidate is also checked by binding it. */
int ts_free_port(void)
{
    enum { LOW = 20000, SPAN = 12736, BLOCK = 8 };
    static pid_t owner;
    static unsigned next;
    struct sockaddr_in sa;
    int port = -1;

    if (owner != getpid()) {
        owner = getpid();
        next = ((unsigned)owner % (SPAN / BLOCK)) * BLOCK;
    }
    for (int tries = 0; tries < 256 && port < 0; tries++) {
        int candidate = LOW + (int)(next++ % SPAN);
        int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) {
            fprintf(stderr, "ts_free_port: socket: %s\n", strerror(errno));
            break;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sa.sin_port = htons((uint16_t)candidate);
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
            port = candidate;
        close(fd);
    }
    if (port < 0)
        fprintf(stderr, "ts_free_port: no free port found in %d-%d\n", LOW, LOW + SPAN - 1);
    return port;
}

char *ts_tempdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char *path = NULL;
    size_t n;

    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    n = strlen(base) + strlen(tag ? tag : "x") + 32;
    path = malloc(n);
    if (path == NULL)
        goto fail;
    snprintf(path, n, "%s/fence-%s-XXXXXX", base, tag ? tag : "x");
    if (mkdtemp(path) == NULL) {
        fprintf(stderr, "ts_tempdir: mkdtemp %s: %s\n", path, strerror(errno));
        goto fail;
    }
    return path;
fail:
    free(path);
    return NULL;
}

static int rmrf_count;

static int rmrf_one(const char *fpath, const struct stat *sb, int flag, struct FTW *ftw)
{
    if (++rmrf_count > 100000) {
        fprintf(stderr, "ts_rmrf: more than 100000 entries, stopping\n");
        return -1;
    }
    if (remove(fpath) < 0 && errno != ENOENT) {
        fprintf(stderr, "ts_rmrf: remove %s: %s\n", fpath, strerror(errno));
        return -1;
    }
    return 0;
}

int ts_rmrf(const char *path)
{
    int slashes = 0;

    if (path == NULL || path[0] != '/' || strcmp(path, "/") == 0) {
        fprintf(stderr, "ts_rmrf: refusing path '%s'\n", path ? path : "(null)");
        return -1;
    }
    for (const char *c = path; *c; c++)
        if (*c == '/' && c[1] != '\0' && c[1] != '/')
            slashes++;
    if (slashes < 2) {
        fprintf(stderr, "ts_rmrf: refusing shallow path '%s'\n", path);
        return -1;
    }
    rmrf_count = 0;
    return nftw(path, rmrf_one, 32, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

static const char *package_hint(const char *name)
{
    if (strcmp(name, "redis-server") == 0)
        return "redis-server";
    if (strcmp(name, "nginx") == 0)
        return "nginx (with the http_dav module)";
    if (strcmp(name, "curl") == 0)
        return "curl";
    if (strcmp(name, "wrk") == 0)
        return "wrk";
    return NULL;
}

static char *try_dir(const char *dir, size_t dlen, const char *name)
{
    size_t n = dlen + strlen(name) + 2;
    char *p = malloc(n);

    if (p == NULL)
        return NULL;
    snprintf(p, n, "%.*s/%s", (int)dlen, dir, name);
    if (access(p, X_OK) == 0)
        return p;
    free(p);
    return NULL;
}

const char *ts_find_binary(const char *name)
{
    static const char *const extra[] = {"/usr/sbin", "/usr/local/sbin", "/sbin"};
    const char *path = getenv("PATH"), *hit;
    char *found = NULL;

    if ((hit = cache_get(bin_cache, name)) != NULL)
        return hit;
    if (path == NULL)
        path = "/usr/local/bin:/usr/bin:/bin";
    for (const char *s = path; found == NULL && *s;) {
        const char *e = strchr(s, ':');
        size_t len = e ? (size_t)(e - s) : strlen(s);

        if (len > 0)
            found = try_dir(s, len, name);
        s += len;
        if (*s == ':')
            s++;
    }
    for (size_t i = 0; found == NULL && i < sizeof extra / sizeof extra[0]; i++)
        found = try_dir(extra[i], strlen(extra[i]), name);
    if (found == NULL) {
        const char *pkg = package_hint(name);

        fprintf(stderr,
                "ts_find_binary: '%s' not found in PATH, /usr/sbin, /usr/local/sbin "
                "or /sbin; install the Debian package %s\n",
                name, pkg ? pkg : "that provides it (apt-file search)");
        return NULL;
    }
    return cache_put(bin_cache, name, found);
}

const char *ts_build_path(const char *rel)
{
    const char *dir = getenv("FENCE_BUILD_DIR"), *hit;
    size_t n;
    char *p;

    if (dir == NULL || dir[0] == '\0') {
        fprintf(stderr, "ts_build_path: FENCE_BUILD_DIR is not set (run the test via ctest)\n");
        return NULL;
    }
    if ((hit = cache_get(path_cache, rel)) != NULL)
        return hit;
    n = strlen(dir) + strlen(rel) + 2;
    p = malloc(n);
    if (p == NULL)
        return NULL;
    snprintf(p, n, "%s/%s", dir, rel);
    return cache_put(path_cache, rel, p);
}

int ts_proc_start(struct ts_proc *p, const char *name, char *const argv[], char *const extra_env[],
                  const char *logpath)
{
    pid_t pid;

    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    snprintf(p->log, sizeof p->log, "%s", logpath);
    if (argv == NULL || argv[0] == NULL) {
        fprintf(stderr, "ts_proc_start(%s): empty argv\n", name);
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0) {
        fprintf(stderr, "ts_proc_start(%s): fork: %s\n", name, strerror(errno));
        return -1;
    }
    if (pid == 0) {
        int fd;

        setpgid(0, 0);
        fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0)
            _exit(126);
        dup2(fd, 1);
        dup2(fd, 2);
        fd = open("/dev/null", O_RDONLY);
        if (fd >= 0)
            dup2(fd, 0);
        /* Restore default dispositions the test runner may have changed. */
        signal(SIGPIPE, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        {
            sigset_t none;

            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, NULL);
        }
        for (int i = 0; extra_env && extra_env[i]; i++)
            putenv(extra_env[i]);
        execv(argv[0], argv);
        dprintf(2, "ts_proc_start(%s): exec %s: %s\n", name, argv[0], strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid); /* both sides set it, so signals to the group never race the exec */
    p->pid = pid;
    return 0;
}

int ts_proc_signal(struct ts_proc *p, int sig)
{
    if (p == NULL || p->pid <= 0)
        return -1;
    return kill(p->pid, sig);
}

int ts_proc_signal_group(struct ts_proc *p, int sig)
{
    if (p == NULL || p->pid <= 0)
        return -1;
    return kill(-p->pid, sig);
}

/* Returns 1 if pid has exited (left as a zombie: WNOWAIT keeps the pid and
 * thus the group id reserved), 0 if not, -1 on error. */
static int exited_nowait(pid_t pid)
{
    siginfo_t si;

    memset(&si, 0, sizeof si);
    if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0)
        return -1;
    return si.si_pid == pid ? 1 : 0;
}

static int reap(struct ts_proc *p, int *status)
{
    int st = 0;
    pid_t r;

    do
        r = waitpid(p->pid, &st, 0);
    while (r < 0 && errno == EINTR);
    p->pid = 0;
    if (r < 0)
        return -1;
    if (status)
        *status = st;
    return 0;
}

int ts_proc_alive(struct ts_proc *p)
{
    int e;

    if (p == NULL || p->pid <= 0)
        return 0;
    e = exited_nowait(p->pid);
    if (e == 0)
        return 1;
    reap(p, NULL);
    return 0;
}

int ts_proc_wait(struct ts_proc *p, int timeout_ms, int *status)
{
    long long deadline = ts_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);

    if (p == NULL || p->pid <= 0)
        return -1;
    for (;;) {
        int e = exited_nowait(p->pid);

        if (e < 0) {
            fprintf(stderr, "ts_proc_wait(%s): waitid: %s\n", p->name, strerror(errno));
            return -1;
        }
        if (e == 1)
            return reap(p, status);
        if (ts_now_ms() >= deadline)
            return -1;
        ts_sleep_ms(5);
    }
}

int ts_proc_stop(struct ts_proc *p, int sig, int timeout_ms)
{
    long long deadline;
    int st = -1, e = 0;

    if (p == NULL || p->pid <= 0)
        return -1;
    kill(p->pid, sig);
    /* A stopped process only acts on the signal once continued. */
    kill(p->pid, SIGCONT);
    deadline = ts_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    while ((e = exited_nowait(p->pid)) == 0 && ts_now_ms() < deadline)
        ts_sleep_ms(5);
    if (e == 0) {
        fprintf(stderr, "ts_proc_stop(%s): pid %d ignored signal %d for %d ms, killing\n", p->name,
                (int)p->pid, sig, timeout_ms);
        kill(-p->pid, SIGKILL);
        kill(p->pid, SIGKILL);
        deadline = ts_now_ms() + 5000;
        while ((e = exited_nowait(p->pid)) == 0 && ts_now_ms() < deadline)
            ts_sleep_ms(5);
    }
    if (e == 1)
        kill(-p->pid, SIGKILL); /* leftovers in the group; the zombie keeps the id ours */
    if (reap(p, &st) < 0)
        return -1;
    return st;
}

void ts_proc_dump_log(const struct ts_proc *p)
{
    char buf[4096];
    size_t total = 0, n;
    FILE *f;

    if (p == NULL)
        return;
    fprintf(stderr, "----- log of %s (%s) -----\n", p->name, p->log);
    f = fopen(p->log, "r");
    if (f == NULL) {
        fprintf(stderr, "(cannot open: %s)\n", strerror(errno));
    } else {
        while (total < 65536 && (n = fread(buf, 1, sizeof buf, f)) > 0) {
            fwrite(buf, 1, n, stderr);
            total += n;
        }
        fclose(f);
    }
    fprintf(stderr, "----- end of log of %s -----\n", p->name);
}

static int connect_once(int port, int timeout_s)
{
    struct sockaddr_in sa;
    struct timeval tv = {timeout_s, 0};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int ts_wait_port(int port, int timeout_ms)
{
    long long deadline = ts_now_ms() + timeout_ms;

    for (;;) {
        int fd = connect_once(port, 1);

        if (fd >= 0) {
            close(fd);
            return 0;
        }
        if (ts_now_ms() >= deadline) {
            fprintf(stderr, "ts_wait_port: 127.0.0.1:%d not accepting after %d ms\n", port,
                    timeout_ms);
            return -1;
        }
        ts_sleep_ms(10);
    }
}

int ts_connect(int port)
{
    int fd = ts_tls_connect_registered(port); /* a TLS fixture's port */

    if (fd == -2) {
        fd = connect_once(port, 10);
    } else if (fd >= 0) {
        struct timeval tv = {10, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }

    if (fd < 0)
        fprintf(stderr, "ts_connect: 127.0.0.1:%d: %s\n", port, strerror(errno));
    return fd;
}

int ts_connect_tcp(int port)
{
    int fd = connect_once(port, 10);

    if (fd < 0)
        fprintf(stderr, "ts_connect_tcp: 127.0.0.1:%d: %s\n", port, strerror(errno));
    return fd;
}

int ts_listen(int *port)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) < 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

int ts_send_all(int fd, const void *buf, size_t len)
{
    const char *b = buf;

    while (len > 0) {
        ssize_t n = send(fd, b, len, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        b += n;
        len -= (size_t)n;
    }
    return 0;
}

char *ts_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0, r;

    if (f == NULL)
        return NULL;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            char *nb;

            if (cap > 64u << 20)
                goto fail;
            cap = cap ? cap * 2 : 8192;
            nb = realloc(buf, cap);
            if (nb == NULL)
                goto fail;
            buf = nb;
        }
        r = fread(buf + n, 1, 4096, f);
        n += r;
        if (r == 0)
            break;
    }
    if (ferror(f))
        goto fail;
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
fail:
    fclose(f);
    free(buf);
    return NULL;
}

/* One PING over a raw socket: 1 if the server is ready, else 0. */
static int redis_ping(int port)
{
    static const char ping[] = "*1\r\n$4\r\nPING\r\n";
    char buf[64];
    ssize_t n;
    int fd = connect_once(port, 1), ok = 0;

    if (fd < 0)
        return 0;
    if (ts_send_all(fd, ping, sizeof ping - 1) == 0) {
        n = recv(fd, buf, sizeof buf - 1, 0);
        if (n > 0) {
            buf[n] = '\0';
            /* NOAUTH: up, but protected by requirepass. */
            ok = strncmp(buf, "+PONG", 5) == 0 || strncmp(buf, "-NOAUTH", 7) == 0;
        }
    }
    close(fd);
    return ok;
}

int ts_redis_start(struct ts_proc *p, const char *dir, int port)
{
    return ts_redis_start_args(p, dir, port, NULL);
}

int ts_redis_start_args(struct ts_proc *p, const char *dir, int port, char *const extra[])
{
    const char *bin = ts_find_binary("redis-server");
    char portstr[16], log[1024];
    char *argv[64];
    long long deadline;
    int n = 0;

    memset(p, 0, sizeof *p);
    if (bin == NULL)
        return -1;
    snprintf(portstr, sizeof portstr, "%d", port);
    snprintf(log, sizeof log, "%s/redis.log", dir);
    {
        char *base[] = {(char *)bin, "--port",       portstr,     "--bind",
                        "127.0.0.1", "--dir",        (char *)dir, "--save",
                        "",          "--appendonly", "no",        "--daemonize",
                        "no",        "--logfile",    "",          NULL};

        for (int i = 0; base[i]; i++)
            argv[n++] = base[i];
    }
    /* Later options override earlier ones in redis-server's command line. */
    for (int i = 0; extra && extra[i]; i++) {
        if (n >= 63) {
            fprintf(stderr, "ts_redis_start: too many extra arguments\n");
            return -1;
        }
        argv[n++] = extra[i];
    }
    argv[n] = NULL;
    if (ts_proc_start(p, "redis-server", argv, NULL, log) < 0)
        return -1;
    deadline = ts_now_ms() + 10000;
    while (!redis_ping(port)) {
        if (!ts_proc_alive(p)) {
            fprintf(stderr, "ts_redis_start: redis-server on port %d exited early\n", port);
            ts_proc_dump_log(p);
            return -1;
        }
        if (ts_now_ms() >= deadline) {
            fprintf(stderr, "ts_redis_start: no PONG on port %d within 10 s\n", port);
            ts_proc_dump_log(p);
            ts_proc_stop(p, SIGKILL, 1000);
            return -1;
        }
        ts_sleep_ms(10);
    }
    return 0;
}

int ts_nginx_start(struct ts_proc *p, const char *dir, int port)
{
    return ts_nginx_start_ssl(p, dir, port, NULL, NULL, NULL);
}

int ts_nginx_start_ssl(struct ts_proc *p, const char *dir, int port, const char *cert,
                       const char *key, const char *client_ca)
{
    char ssl[3200] = "";
    const char *bin = ts_find_binary("nginx");
    char conf[1024], log[1024], sub[1024];
    long long deadline;
    FILE *f;

    memset(p, 0, sizeof *p);
    if (bin == NULL)
        return -1;
    snprintf(sub, sizeof sub, "%s/data", dir);
    if (mkdir(sub, 0755) < 0 && errno != EEXIST)
        goto mkfail;
    snprintf(sub, sizeof sub, "%s/tmp", dir);
    if (mkdir(sub, 0755) < 0 && errno != EEXIST)
        goto mkfail;
    snprintf(conf, sizeof conf, "%s/nginx.conf", dir);
    snprintf(log, sizeof log, "%s/nginx-error.log", dir);
    f = fopen(conf, "w");
    if (f == NULL) {
        fprintf(stderr, "ts_nginx_start: cannot write %s: %s\n", conf, strerror(errno));
        return -1;
    }
    /* master_process off: one process, running as the caller, so the process
     * writing dir/data is the owner of dir whether the test runs as root or
     * not (no user directive needed). */
    if (cert != NULL)
        snprintf(ssl, sizeof ssl,
                 "    ssl_certificate %s;\n    ssl_certificate_key %s;\n"
                 "    ssl_session_cache shared:SSL:1m;\n%s%s%s",
                 cert, key, client_ca != NULL ? "    ssl_verify_client on;\n"
                                              "    ssl_client_certificate " : "",
                 client_ca != NULL ? client_ca : "", client_ca != NULL ? ";\n" : "");
    fprintf(f,
            "daemon off;\n"
            "master_process off;\n"
            "worker_processes 1;\n"
            "pid %s/nginx.pid;\n"
            "error_log %s/nginx-error.log warn;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            "  access_log off;\n"
            "  client_body_temp_path %s/tmp/body;\n"
            "  proxy_temp_path %s/tmp/proxy;\n"
            "  fastcgi_temp_path %s/tmp/fastcgi;\n"
            "  uwsgi_temp_path %s/tmp/uwsgi;\n"
            "  scgi_temp_path %s/tmp/scgi;\n"
            "  keepalive_requests 100000;\n"
            "  server {\n"
            "    listen 127.0.0.1:%d%s;\n%s"
            "    root %s/data;\n"
            "    location / {\n"
            "      dav_methods PUT DELETE MKCOL COPY MOVE;\n"
            "      create_full_put_path on;\n"
            "      client_max_body_size 0;\n"
            "      client_body_temp_path %s/tmp;\n"
            "    }\n"
            "  }\n"
            "}\n",
            dir, dir, dir, dir, dir, dir, dir, port, cert != NULL ? " ssl" : "", ssl, dir, dir);
    if (fclose(f) != 0) {
        fprintf(stderr, "ts_nginx_start: write %s failed\n", conf);
        return -1;
    }
    {
        char *argv[] = {(char *)bin, "-p", (char *)dir, "-c", conf, "-e", log, NULL};

        if (ts_proc_start(p, "nginx", argv, NULL, log) < 0)
            return -1;
    }
    deadline = ts_now_ms() + 10000;
    for (;;) {
        int fd = connect_once(port, 1);

        if (fd >= 0) {
            close(fd);
            return 0;
        }
        if (!ts_proc_alive(p)) {
            fprintf(stderr, "ts_nginx_start: nginx on port %d exited early\n", port);
            ts_proc_dump_log(p);
            return -1;
        }
        if (ts_now_ms() >= deadline) {
            fprintf(stderr, "ts_nginx_start: port %d not accepting within 10 s\n", port);
            ts_proc_dump_log(p);
            ts_proc_stop(p, SIGKILL, 1000);
            return -1;
        }
        ts_sleep_ms(10);
    }
mkfail:
    fprintf(stderr, "ts_nginx_start: mkdir %s: %s\n", sub, strerror(errno));
    return -1;
}

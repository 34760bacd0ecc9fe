/* The admin listener and descriptors under abuse, through the real proxy:
 * 1,100 slow admin connections are held to the admin's limit and closed at
 * the head deadline while data-plane clients are served; with the
 * descriptor table exhausted (prlimit on the running proxy) neither
 * listener spins (CPU and log lines measured over 5 s) and a waiting
 * /metrics scrape is answered once descriptors are free again; with
 * RLIMIT_NOFILE 256 at start, max_connections is clamped with a warning and
 * the client past the limit gets 503 at once, never a hang. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "ts_proc.h"
#include "ts_proxy.h"
#include "ts_upstream.h"

#define PX_ADMIN_MAX_CONNS 64 /* proxy/px_admin.h */
#define PX_ADMIN_HEAD_MS 5000

static struct ts_upstream *up;
static struct ts_proxy px;
static int fds[1200];
static int nfds;

static void teardown(void)
{
    for (int i = 0; i < nfds; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    nfds = 0;
    ts_proxy_cleanup(&px, 1);
    ts_upstream_stop(&up);
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void start(const char *tag, const char *extra)
{
    char conf[2048];

    up = ts_upstream_start();
    cr_assert_not_null(up);
    cr_assert_eq(ts_proxy_init(&px, tag), 0);
    snprintf(conf, sizeof conf, "%s[route objects]\nprefix = /objects/\n", extra ? extra : "");
    cr_assert_eq(ts_proxy_write_conf(&px, ts_upstream_port(up), conf), 0);
    cr_assert_eq(ts_proxy_start(&px), 0);
}

static int connect_to(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0, "connect: %s",
                 strerror(errno));
    return fd;
}

/* Reads fd until EOF or timeout_ms; returns 1 at EOF (closed by the peer),
 * 0 on timeout. The first bytes go into out (cap), NUL-terminated. */
static int last_reset; /* wait_eof's last read failed with ECONNRESET */

static int wait_eof(int fd, int timeout_ms, char *out, size_t cap)
{
    int64_t end = now_ms() + timeout_ms;
    size_t n = 0;

    if (cap > 0)
        out[0] = '\0';
    last_reset = 0;
    while (now_ms() < end) {
        struct pollfd p = {fd, POLLIN, 0};
        char buf[512];
        if (poll(&p, 1, (int)(end - now_ms())) <= 0)
            continue;
        ssize_t k = read(fd, buf, sizeof buf);
        if (k <= 0) {
            last_reset = k < 0 && errno == ECONNRESET;
            return 1;
        }
        if (n + 1 < cap) {
            size_t c = (size_t)k < cap - 1 - n ? (size_t)k : cap - 1 - n;
            memcpy(out + n, buf, c);
            n += c;
            out[n] = '\0';
        }
    }
    return 0;
}

static int get_ok(int port, const char *path)
{
    struct ts_resp r;
    int st = ts_http_get(port, path, &r);

    if (st > 0)
        ts_resp_free(&r);
    return st;
}

/* utime + stime of pid in clock ticks. */
static long cpu_ticks(pid_t pid)
{
    char path[64], buf[2048], *p;
    long ut = 0, st = 0;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    cr_assert_not_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    p = strrchr(buf, ')');
    cr_assert_not_null(p);
    /* fields after ")": state(3) ... utime(14) stime(15) */
    cr_assert_eq(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &ut, &st),
                 2);
    return ut + st;
}

static long log_lines(void)
{
    FILE *f = fopen(px.proc.log, "r");
    long n = 0;
    int c;

    cr_assert_not_null(f);
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

static int64_t t_conn[1100]; /* when fds[i] was connected */

/* Reads every readable connection of fds[] to EOF; counts 503s into
 * *refused and closes them, and counts into *at_deadline the others that
 * closed no earlier than a moment before their own head deadline (on a
 * loaded machine the 1,100 connects take long enough for the first ones'
 * deadlines to pass while the last are refused). Returns how many others
 * were closed: before their deadline, which is a failure. */
static int reap(int *refused, int *at_deadline)
{
    char buf[256];
    int n = 0;

    for (int i = 0; i < nfds; i++) {
        struct pollfd p = {fds[i], POLLIN, 0};
        if (fds[i] < 0 || poll(&p, 1, 0) != 1)
            continue;
        /* A refusal is the 503 and a close; a reset before anything was
         * read is one too: the client's byte can reach the closed socket
         * after the 503, and the kernel's reset then discards the 503. */
        if (wait_eof(fds[i], 2000, buf, sizeof buf) &&
            (strncmp(buf, "HTTP/1.1 503", 12) == 0 || (last_reset && buf[0] == '\0')))
            (*refused)++;
        else if (now_ms() >= t_conn[i] + PX_ADMIN_HEAD_MS - 300)
            (*at_deadline)++;
        else
            n++;
        close(fds[i]);
        fds[i] = -1;
    }
    return n;
}

Test(admin_limits, slow_admin_connections_closed_at_the_head_deadline, .fini = teardown,
     .timeout = 60)
{
    char buf[256];
    int refused = 0, closed = 0, held = 0;

    start("adminslow", NULL);
    int64_t t0 = now_ms();
    for (nfds = 0; nfds < 1100; nfds++) {
        t_conn[nfds] = now_ms();
        fds[nfds] = connect_to(px.admin_port);
        cr_assert_eq(send(fds[nfds], "G", 1, MSG_NOSIGNAL), 1);
    }
    /* Over the limit: 503 and closed at once (the backlog drains in a
     * moment, several seconds on a loaded machine under ASan: reap() tells
     * the held ones' deadline closes apart from early ones). */
    int64_t tr = now_ms();
    while (now_ms() - tr < 10000 && refused < 1100 - PX_ADMIN_MAX_CONNS) {
        cr_assert_eq(reap(&refused, &closed), 0, "closed without a 503 before the deadline");
        usleep(50 * 1000);
    }
    cr_expect_eq(refused, 1100 - PX_ADMIN_MAX_CONNS, "refused %d", refused);
    /* The data plane is served while the slow ones trickle a byte a second,
     * up to a moment before the first held one's deadline. */
    int64_t first = INT64_MAX;
    for (int i = 0; i < nfds; i++)
        if (fds[i] >= 0 && t_conn[i] < first)
            first = t_conn[i];
    for (int round = 0;
         round == 0 || (first != INT64_MAX && now_ms() < first + PX_ADMIN_HEAD_MS - 500);
         round++) {
        cr_assert_eq(get_ok(px.port, "/objects/a"), 200, "data plane, round %d", round);
        cr_assert_eq(reap(&refused, &closed), 0,
                     "a slow connection was closed before the deadline");
        for (int i = 0; i < nfds; i++)
            if (fds[i] >= 0)
                cr_assert_eq(send(fds[i], "E", 1, MSG_NOSIGNAL), 1, "connection %d: %s", i,
                             strerror(errno));
        usleep(500 * 1000);
    }
    for (int i = 0; i < nfds; i++)
        held += fds[i] >= 0;
    held += closed; /* already closed at their deadline */
    cr_expect_eq(held, PX_ADMIN_MAX_CONNS);
    /* The deadline runs from accept: the trickle did not extend it. */
    for (int i = 0; i < nfds; i++) {
        if (fds[i] < 0)
            continue;
        int64_t left = t_conn[i] + PX_ADMIN_HEAD_MS + 2000 - now_ms();
        cr_assert(wait_eof(fds[i], left > 0 ? (int)left : 1, buf, sizeof buf),
                  "slow admin connection %d still open %lld ms after connect", i,
                  (long long)(now_ms() - t_conn[i]));
        closed++;
        close(fds[i]);
        fds[i] = -1;
    }
    cr_expect_eq(closed, held);
    fprintf(stderr, "slow admin: %d refused (503, or a reset that ate it), %d held and closed by %lld ms\n", refused,
            closed, (long long)(now_ms() - t0));
    cr_expect_eq(get_ok(px.admin_port, "/healthz"), 200, "the admin answers again");
}

Test(admin_limits, descriptor_exhaustion_does_not_spin, .fini = teardown, .timeout = 60)
{
    struct rlimit lim = {100, 100};
    char buf[4096];
    struct ts_resp r;

    start("fdspin", "header_timeout = 60s\n");
    /* Exhaust the running proxy's descriptor table. */
    cr_assert_eq(prlimit(px.proc.pid, RLIMIT_NOFILE, &lim, NULL), 0, "prlimit: %s",
                 strerror(errno));
    for (nfds = 0; nfds < 150; nfds++)
        fds[nfds] = connect_to(px.port); /* the kernel completes them into the backlog */
    int scrape = connect_to(px.admin_port);
    const char *req = "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n";
    cr_assert_eq(write(scrape, req, strlen(req)), (ssize_t)strlen(req));
    usleep(500 * 1000);

    long c0 = cpu_ticks(px.proc.pid), l0 = log_lines();
    int64_t t0 = now_ms();
    usleep(5000 * 1000);
    long ticks = cpu_ticks(px.proc.pid) - c0, lines = log_lines() - l0;
    double secs = (double)(now_ms() - t0) / 1000.0;
    double cpu = (double)ticks / (double)sysconf(_SC_CLK_TCK);
    fprintf(stderr, "descriptor exhaustion: %.2f s CPU in %.2f s, %ld log lines\n", cpu, secs,
            lines);
    cr_expect_lt(cpu, 0.5, "%.2f s of CPU in %.1f s: the accept loop spins", cpu, secs);
    cr_expect_lt(lines, 60, "%ld log lines in %.1f s", lines, secs);

    /* Descriptors free again: the paused admin listener takes the scrape. */
    for (int i = 0; i < nfds; i++) {
        close(fds[i]);
        fds[i] = -1;
    }
    cr_expect(wait_eof(scrape, 5000, buf, sizeof buf), "the waiting scrape was never answered");
    cr_expect(strncmp(buf, "HTTP/1.1 200", 12) == 0, "%.80s", buf);
    close(scrape);
    cr_expect_eq(ts_http_get(px.admin_port, "/healthz", &r), 200);
    ts_resp_free(&r);
}

/* Starts fenceproxy -c px.conf like ts_proxy_start, but with
 * RLIMIT_NOFILE set to nofile in the child before exec (own process group,
 * output to px.proc.log, so ts_proxy_cleanup stops it by PID). */
static void start_with_nofile(rlim_t nofile)
{
    const char *bin = ts_build_path("proxy/fenceproxy");
    pid_t pid;

    cr_assert_not_null(bin);
    snprintf(px.proc.name, sizeof px.proc.name, "fenceproxy");
    snprintf(px.proc.log, sizeof px.proc.log, "%s/fenceproxy.log", px.dir);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        struct rlimit rl = {nofile, nofile};
        int fd = open(px.proc.log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        setpgid(0, 0);
        if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0 || setrlimit(RLIMIT_NOFILE, &rl) != 0)
            _exit(126);
        execl(bin, bin, "-c", px.conf, (char *)NULL);
        _exit(127);
    }
    px.proc.pid = pid;
    cr_assert_eq(ts_wait_port(px.port, 5000), 0, "fenceproxy with nofile %llu did not start",
                 (unsigned long long)nofile);
}

Test(admin_limits, nofile_256_clamps_and_answers_503_past_the_limit, .fini = teardown,
     .timeout = 60)
{
    char buf[512], *log;
    size_t len = 0;
    int clamp = (256 - PX_ADMIN_MAX_CONNS - 64) / 2;

    up = ts_upstream_start();
    cr_assert_not_null(up);
    cr_assert_eq(ts_proxy_init(&px, "nofile"), 0);
    cr_assert_eq(ts_proxy_write_conf(&px, ts_upstream_port(up),
                                     "max_connections = 1000\nheader_timeout = 60s\n"
                                     "[route objects]\nprefix = /objects/\n"),
                 0);
    start_with_nofile(256);
    usleep(200 * 1000);
    log = NULL;
    FILE *f = fopen(px.proc.log, "r");
    cr_assert_not_null(f);
    cr_assert_geq(getdelim(&log, &len, '\0', f), 0);
    fclose(f);
    snprintf(buf, sizeof buf, "max_connections lowered to %d", clamp);
    cr_expect(strstr(log, buf) != NULL, "no clamp warning '%s' in:\n%s", buf, log);
    free(log);

    for (nfds = 0; nfds < clamp; nfds++)
        fds[nfds] = connect_to(px.port);
    usleep(300 * 1000);
    /* Client N+1 onwards: 503 at once, never a hang. */
    for (int i = 0; i < 20; i++) {
        int fd = connect_to(px.port);
        int64_t t = now_ms();
        cr_assert(wait_eof(fd, 3000, buf, sizeof buf), "client %d past the limit hangs",
                  clamp + 1 + i);
        cr_expect(strncmp(buf, "HTTP/1.1 503", 12) == 0, "client %d: %.40s", clamp + 1 + i, buf);
        cr_expect_lt(now_ms() - t, 1000);
        close(fd);
    }
    /* The operator is not locked out, and a held client is still served. */
    cr_expect_eq(get_ok(px.admin_port, "/metrics"), 200);
    const char *req = "GET /objects/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    cr_assert_eq(write(fds[0], req, strlen(req)), (ssize_t)strlen(req));
    cr_expect(wait_eof(fds[0], 5000, buf, sizeof buf));
    cr_expect(strncmp(buf, "HTTP/1.1 200", 12) == 0, "%.40s", buf);
}

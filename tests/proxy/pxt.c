/* pxt: see pxt.h. */
#include "pxt.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct pxt pxt;

static void start_proxy(int upstream_port, const char *extra)
{
    cr_assert_eq(ts_proxy_init(&pxt.px, "pxt"), 0, "proxy fixture init");
    cr_assert_eq(ts_proxy_write_conf(&pxt.px, upstream_port, extra), 0, "write config");
    cr_assert_eq(ts_proxy_start(&pxt.px), 0, "fenceproxy did not start");
}

void pxt_setup(const char *extra)
{
    signal(SIGPIPE, SIG_IGN);
    pxt.up = ts_upstream_start();
    cr_assert_not_null(pxt.up, "recording upstream did not start");
    start_proxy(ts_upstream_port(pxt.up), extra);
}

void pxt_setup_port(int upstream_port, const char *extra)
{
    signal(SIGPIPE, SIG_IGN);
    start_proxy(upstream_port, extra);
}

/* Whether the proxy's log shows a sanitizer report. */
static int log_has_sanitizer_report(void)
{
    char *s = pxt.px.proc.log[0] != '\0' ? ts_read_file(pxt.px.proc.log, NULL) : NULL;
    int bad = s != NULL && (strstr(s, "Sanitizer") != NULL || strstr(s, "runtime error:") != NULL);

    free(s);
    return bad;
}

void pxt_teardown(void)
{
    int status = 0, stopped = pxt.px.proc.pid > 0, sanitizer;

    if (stopped)
        status = ts_proc_stop(&pxt.px.proc, SIGTERM, 15000); /* > the 10 s default grace */
    sanitizer = log_has_sanitizer_report();
    if (sanitizer || (stopped && status != 0))
        pxt.passed = 0;
    ts_proxy_cleanup(&pxt.px, !pxt.passed);
    ts_upstream_stop(&pxt.up);
    cr_assert_not(sanitizer, "the proxy's log has a sanitizer report (see above)");
    cr_assert(!stopped || status == 0, "the proxy did not exit 0 on SIGTERM (wait status %d)",
              status);
}

void pxt_pass(void)
{
    pxt.passed = 1;
}

int pxt_connect(void)
{
    int fd = ts_connect(pxt.px.port);

    cr_assert_geq(fd, 0, "cannot connect to the proxy on %d", pxt.px.port);
    return fd;
}

void pxt_send(int fd, const void *s, size_t len)
{
    cr_assert_eq(ts_send_all(fd, s, len), 0, "send failed: %s", strerror(errno));
}

void pxt_sends(int fd, const char *s)
{
    pxt_send(fd, s, strlen(s));
}

void pxt_reject(const char *name, const char *raw, size_t len, int status, int alt)
{
    struct ts_resp r;
    int fd = pxt_connect();

    /* The proxy may refuse before everything is sent; the rest is dropped. */
    (void)ts_send_all(fd, raw, len);
    cr_assert_eq(ts_http_read(fd, &r, 5000, 1), 0, "%s: no response", name);
    if (alt != 0)
        cr_assert(r.status == status || r.status == alt, "%s: status %d, want %d or %d", name,
                  r.status, status, alt);
    else
        cr_assert_eq(r.status, status, "%s: status %d, want %d", name, r.status, status);
    cr_assert_not_null(strstr(r.head, "Connection: close"), "%s: no Connection: close", name);
    ts_resp_free(&r);
    cr_assert(ts_wait_closed(fd, 3000), "%s: connection left open", name);
    close(fd);
    if (pxt.up != NULL) {
        cr_assert_eq(ts_upstream_connections(pxt.up), 0, "%s: upstream was connected", name);
        cr_assert_eq(ts_upstream_bytes(pxt.up), 0, "%s: bytes reached the upstream", name);
    }
}

void pxt_wait_count(size_t n, int ms)
{
    cr_assert_eq(ts_upstream_wait_count(pxt.up, n, ms), 0, "upstream saw %zu requests, want %zu",
                 ts_upstream_count(pxt.up), n);
}

struct ts_upstream_req *pxt_get(size_t i)
{
    struct ts_upstream_req *q = malloc(sizeof(*q));

    cr_assert_not_null(q);
    cr_assert_eq(ts_upstream_get(pxt.up, i, q), 0, "no upstream request %zu", i);
    return q;
}

char *pxt_read_until_close(int fd, size_t *len, int timeout_ms)
{
    long long deadline = ts_now_ms() + timeout_ms;
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap + 1);

    cr_assert_not_null(buf);
    for (;;) {
        struct pollfd pfd = {fd, POLLIN, 0};
        long long left = deadline - ts_now_ms();
        ssize_t k;
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            break;
        if (cap - n < 16384) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            cr_assert_not_null(buf);
        }
        k = recv(fd, buf + n, cap - n, 0);
        if (k <= 0)
            break;
        n += (size_t)k;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

void pxt_pattern(unsigned char *buf, size_t len, uint64_t off)
{
    for (size_t i = 0; i < len; i++) {
        uint64_t x = off + i;
        buf[i] = (unsigned char)((x * 2654435761u) >> 13 ^ (x >> 8));
    }
}

char *pxt_access_log(int lines)
{
    long long deadline = ts_now_ms() + 3000;

    for (;;) {
        char *s = ts_read_file(pxt.px.access, NULL);
        int n = 0;
        for (const char *p = s; p != NULL && (p = strchr(p, '\n')) != NULL; p++)
            n++;
        if (s != NULL && n >= lines)
            return s;
        if (ts_now_ms() > deadline)
            return s;
        free(s);
        ts_sleep_ms(20);
    }
}

/* Memory bounds that do not depend on what clients send: a client that keeps
 * pipelining while its first request is held at the upstream is read ahead
 * only up to the read watermark, so the proxy's memory stays flat. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pxt.h"
#include "ts_proc.h"

TestSuite(limits, .fini = pxt_teardown, .timeout = 60);

/* The proxy's resident set in KiB, from /proc. */
static long proxy_rss_kib(void)
{
    char path[64], *status, *p;
    size_t len;
    long kib = -1;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pxt.px.proc.pid);
    status = ts_read_file(path, &len);
    if (status != NULL && (p = strstr(status, "VmRSS:")) != NULL)
        kib = strtol(p + 6, NULL, 10);
    free(status);
    return kib;
}

Test(limits, pipelining_behind_a_held_request_is_read_ahead_only_to_the_watermark)
{
    static char chunk[64 * 1024];
    const char first[] = "GET /held HTTP/1.1\r\nHost: t\r\n\r\n";
    const char next[] = "GET /next HTTP/1.1\r\nHost: t\r\n\r\n";
    size_t pushed = 0, filled = 0;
    long rss_before, rss_after;
    long long deadline;
    int fd;

    pxt_setup(NULL);
    cr_assert_eq(ts_upstream_hold(pxt.up, "GET /held"), 0);
    rss_before = proxy_rss_kib();
    cr_assert_gt(rss_before, 0);
    fd = pxt_connect();
    pxt_send(fd, first, sizeof(first) - 1);
    pxt_wait_count(1, 5000);
    while (filled + sizeof(next) - 1 <= sizeof(chunk)) {
        memcpy(chunk + filled, next, sizeof(next) - 1);
        filled += sizeof(next) - 1;
    }
    /* Push pipelined requests for 2 s without blocking: once the proxy
     * stops reading, only the kernel's socket buffers take more. */
    cr_assert_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
    deadline = ts_now_ms() + 2000;
    while (ts_now_ms() < deadline && pushed < (size_t)512 * 1024 * 1024) {
        ssize_t n = send(fd, chunk, filled, MSG_NOSIGNAL);
        if (n > 0) {
            pushed += (size_t)n;
        } else {
            struct pollfd pfd = {fd, POLLOUT, 0};
            cr_assert(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK), "send: %s",
                      strerror(errno));
            poll(&pfd, 1, 50);
        }
    }
    rss_after = proxy_rss_kib();
    cr_log_info("pushed %zu bytes; proxy RSS %ld -> %ld KiB", pushed, rss_before, rss_after);
    cr_assert_lt(pushed, (size_t)64 * 1024 * 1024,
                 "the proxy kept reading: %zu bytes accepted", pushed);
    cr_assert_lt(rss_after - rss_before, 8 * 1024, "proxy RSS grew by %ld KiB",
                 rss_after - rss_before);
    cr_assert_eq(ts_upstream_count(pxt.up), 1, "pipelined requests went upstream early");
    ts_upstream_release(pxt.up, "GET /held");
    close(fd);
    pxt_pass();
}

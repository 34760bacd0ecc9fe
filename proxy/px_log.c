/* px_log: see px_log.h. Lines are built in a stack buffer and written with
 * one write(2); a message too long for the buffer is cut and ends in "...". */
#include "px_log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PX_LOG_LINE_MAX 4096

_Atomic int px_log_threshold = PX_LOG_INFO;
static _Atomic int log_fd = 2;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void px_log_init(enum px_log_level level)
{
    atomic_store_explicit(&px_log_threshold, (int)level, memory_order_relaxed);
}

void px_log_set_fd(int fd)
{
    atomic_store_explicit(&log_fd, fd, memory_order_relaxed);
}

int px_log_level_parse(const char *text, enum px_log_level *out)
{
    if (text == NULL)
        return -1;
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcmp(text, level_names[i]) == 0) {
            *out = (enum px_log_level)i;
            return 0;
        }
    }
    return -1;
}

const char *px_log_level_name(enum px_log_level level)
{
    if ((int)level < 0 || (size_t)level >= sizeof level_names / sizeof level_names[0])
        return "?";
    return level_names[level];
}

/* Appends the RFC 3339 UTC time with milliseconds; returns bytes written. */
static size_t put_time(char *buf, size_t cap)
{
    struct timespec ts;
    struct tm tm;
    size_t n;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    int k = snprintf(buf + n, cap - n, ".%03ldZ ", ts.tv_nsec / 1000000);
    return n + (k > 0 ? (size_t)k : 0);
}

void px_log_write(enum px_log_level level, const char *file, int line,
                  uint64_t conn_id, const char *peer, const char *fmt, ...)
{
    char buf[PX_LOG_LINE_MAX];
    const char *base = strrchr(file, '/');
    size_t n, cap = sizeof buf - 1; /* keep room for the newline */
    int k, saved_errno = errno;     /* callers often log strerror(errno) after */
    va_list ap;

    n = put_time(buf, cap);
    if (peer != NULL)
        k = snprintf(buf + n, cap - n, "%-5s %s:%d [c%llu %s] ", px_log_level_name(level),
                     base ? base + 1 : file, line, (unsigned long long)conn_id, peer);
    else
        k = snprintf(buf + n, cap - n, "%-5s %s:%d ", px_log_level_name(level),
                     base ? base + 1 : file, line);
    if (k > 0)
        n += (size_t)k < cap - n ? (size_t)k : cap - n - 1;
    va_start(ap, fmt);
    k = vsnprintf(buf + n, cap - n, fmt, ap);
    va_end(ap);
    if (k > 0 && (size_t)k >= cap - n) {
        n = cap - 1;
        memcpy(buf + n - 3, "...", 3);
    } else if (k > 0) {
        n += (size_t)k;
    }
    buf[n++] = '\n';
    /* Best effort: a failed diagnostic write has nowhere to be reported. */
    ssize_t w = write(atomic_load_explicit(&log_fd, memory_order_relaxed), buf, n);
    (void)w;
    errno = saved_errno;
}

/* px_log: see px_log.h. Lines are built in a stack buffer and written with
 * one write(2); a message too long for the buffer is cut and ends in "...".
 * The limiter keeps one slot per call site (file pointer and line) in a
 * small open-addressed table; a site that finds the table full is not
 * limited (the table is far larger than the number of warn/error sites). */
#include "px_log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PX_LOG_LINE_MAX 4096

_Atomic int px_log_threshold = PX_LOG_INFO;
static _Atomic int log_fd = 2;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

#define RL_SLOTS 256

struct rl_slot {
    const char *file; /* NULL: free */
    int line;
    uint64_t window_start_ms;
    unsigned in_window;
    uint64_t suppressed; /* since the last line written from this site */
};

static pthread_mutex_t rl_mu = PTHREAD_MUTEX_INITIALIZER;
static struct rl_slot rl_table[RL_SLOTS];
static _Atomic uint64_t rl_total;

uint64_t px_log_suppressed(void)
{
    return atomic_load(&rl_total);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* May the site file:line write a line now? Returns 1 (and in *suppressed how
 * many lines of the site were held back before it) or 0. */
static int rl_admit(const char *file, int line, uint64_t *suppressed)
{
    size_t h = (((uintptr_t)file >> 3) ^ ((size_t)line * 2654435761u)) % RL_SLOTS;
    uint64_t now = mono_ms();
    int ok = 1;

    *suppressed = 0;
    pthread_mutex_lock(&rl_mu);
    for (size_t k = 0; k < RL_SLOTS; k++) {
        struct rl_slot *s = &rl_table[(h + k) % RL_SLOTS];
        if (s->file == NULL) {
            s->file = file;
            s->line = line;
            s->window_start_ms = now;
        } else if (s->file != file || s->line != line) {
            continue;
        }
        if (now - s->window_start_ms >= PX_LOG_WINDOW_MS) {
            s->window_start_ms = now;
            s->in_window = 0;
        }
        if (s->in_window >= PX_LOG_BURST) {
            s->suppressed++;
            atomic_fetch_add(&rl_total, 1);
            ok = 0;
        } else {
            s->in_window++;
            *suppressed = s->suppressed;
            s->suppressed = 0;
        }
        break;
    }
    pthread_mutex_unlock(&rl_mu);
    return ok;
}

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
    uint64_t suppressed = 0;
    va_list ap;

    if (level <= PX_LOG_WARN && !rl_admit(file, line, &suppressed)) {
        errno = saved_errno;
        return;
    }
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
    if (suppressed > 0) {
        k = snprintf(buf + n, cap - n, " (%llu similar line(s) suppressed)",
                     (unsigned long long)suppressed);
        if (k > 0 && (size_t)k < cap - n)
            n += (size_t)k;
    }
    buf[n++] = '\n';
    /* Best effort: a failed diagnostic write has nowhere to be reported. */
    ssize_t w = write(atomic_load_explicit(&log_fd, memory_order_relaxed), buf, n);
    (void)w;
    errno = saved_errno;
}

/* px_log: the daemon's diagnostic log. One line per message on stderr (or
 * another fd), "TIME LEVEL file.c:LINE [c<id> <peer>] message", with TIME in
 * RFC 3339 UTC with milliseconds. The macros check the level before their
 * arguments are evaluated or formatted, so a disabled debug line costs one
 * load. Each line goes out in one write(2), so lines from several threads do
 * not interleave. Warnings and errors are rate-limited per call site (file
 * and line): at most PX_LOG_BURST lines per PX_LOG_WINDOW_MS window each; the
 * first line after a suppressed stretch says how many were suppressed, so a
 * condition that repeats at line rate (accept failing, a full disk) cannot
 * flood the log. Owns the level threshold, the target fd and the limiter's
 * small table (under its own mutex). */
#ifndef PX_LOG_H
#define PX_LOG_H

#include <stdatomic.h>
#include <stdint.h>

enum px_log_level { PX_LOG_ERROR, PX_LOG_WARN, PX_LOG_INFO, PX_LOG_DEBUG };

/* The limiter for warn and error lines, per call site. */
#define PX_LOG_BURST     10
#define PX_LOG_WINDOW_MS 5000

/* Messages at levels above this are dropped. Read through px_log_on();
 * written by px_log_init(). */
extern _Atomic int px_log_threshold;

/* Sets the threshold (messages with level <= level are written). May be
 * called again at any time (e.g. after a config reload). */
void px_log_init(enum px_log_level level);

/* Sends later lines to fd (borrowed; not closed). Default 2 (stderr). */
void px_log_set_fd(int fd);

/* Parses "error" | "warn" | "info" | "debug" into *out. Returns 0 or -1. */
int px_log_level_parse(const char *text, enum px_log_level *out);

/* The name of a level ("error" ...), or "?" for an unknown value. */
const char *px_log_level_name(enum px_log_level level);

static inline int px_log_on(enum px_log_level level)
{
    return (int)level <= atomic_load_explicit(&px_log_threshold, memory_order_relaxed);
}

/* Lines suppressed by the limiter since start (any thread). */
uint64_t px_log_suppressed(void);

/* Formats and writes one line. conn_id/peer: when peer is non-NULL the
 * line carries "[c<conn_id> <peer>]". Use the macros below instead. */
void px_log_write(enum px_log_level level, const char *file, int line,
                  uint64_t conn_id, const char *peer, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

#define PX_LOG_AT(lvl, ...)                                                  \
    do {                                                                     \
        if (px_log_on(lvl))                                                  \
            px_log_write((lvl), __FILE__, __LINE__, 0, NULL, __VA_ARGS__);   \
    } while (0)

#define PX_CLOG_AT(lvl, id, peer, ...)                                       \
    do {                                                                     \
        if (px_log_on(lvl))                                                  \
            px_log_write((lvl), __FILE__, __LINE__, (uint64_t)(id),          \
                         (peer) ? (peer) : "-", __VA_ARGS__);                \
    } while (0)

#define px_log_error(...) PX_LOG_AT(PX_LOG_ERROR, __VA_ARGS__)
#define px_log_warn(...)  PX_LOG_AT(PX_LOG_WARN, __VA_ARGS__)
#define px_log_info(...)  PX_LOG_AT(PX_LOG_INFO, __VA_ARGS__)
#define px_log_debug(...) PX_LOG_AT(PX_LOG_DEBUG, __VA_ARGS__)

/* Per-connection variants: id is the connection's number, peer its
 * "ip:port" text (borrowed for the call; NULL prints "-"). */
#define px_clog_error(id, peer, ...) PX_CLOG_AT(PX_LOG_ERROR, id, peer, __VA_ARGS__)
#define px_clog_warn(id, peer, ...)  PX_CLOG_AT(PX_LOG_WARN, id, peer, __VA_ARGS__)
#define px_clog_info(id, peer, ...)  PX_CLOG_AT(PX_LOG_INFO, id, peer, __VA_ARGS__)
#define px_clog_debug(id, peer, ...) PX_CLOG_AT(PX_LOG_DEBUG, id, peer, __VA_ARGS__)

#endif

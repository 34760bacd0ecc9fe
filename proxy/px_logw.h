/* px_logw: an asynchronous append-only line writer for one file, shared by
 * the access log and the audit log. The event loop hands it complete lines;
 * a writer thread appends them to the file in batches, so the loop never
 * waits on the disk. The buffer is bounded: when it is full a line is
 * dropped and counted, never silently and never by blocking. */
#ifndef PX_LOGW_H
#define PX_LOGW_H

#include <stddef.h>
#include <stdint.h>

struct px_logw;

/* Opens (creates, mode 0640) path for appending and starts the writer thread.
 * max_buffered_bytes bounds the bytes queued and not yet handed to write(2).
 * path is copied. Returns the writer (free with px_logw_close()), or NULL
 * with a message in err (errlen bytes, may be 0). */
struct px_logw *px_logw_open(const char *path, size_t max_buffered_bytes, char *err, size_t errlen);

/* A sink writes one batch of whole lines (n bytes, may be 0: a probe) to fd
 * on the writer thread, in place of the plain write. It may rewrite the
 * bytes of the batch in place (it owns them for the call). fd is -1 when the
 * file cannot be written at all (it was removed and could not be created
 * again). Returns 0, or -1 when something was not written: the writer then
 * calls it again with n = 0 every PX_LOGW_RETRY_MS until it returns 0, and
 * once more (n = 0) before it stops. */
typedef int (*px_logw_sink_fn)(void *arg, int fd, char *batch, size_t n);

#define PX_LOGW_RETRY_MS 200

/* px_logw_open() with a sink (arg is borrowed and must outlive the writer).
 * The audit log uses this to chain lines as they reach the file. */
struct px_logw *px_logw_open_sink(const char *path, size_t max_buffered_bytes,
                                  px_logw_sink_fn sink, void *arg, char *err, size_t errlen);

/* Wakes the writer for a probe (the sink runs with n = 0) without a line.
 * Any thread. */
void px_logw_kick(struct px_logw *w);

/* Writes n bytes to fd, retrying short writes and EINTR. Returns the bytes
 * written (n, or fewer on an error, errno then set). For sinks. */
size_t px_logw_write_fd(int fd, const char *p, size_t n);

/* Queues a copy of line (len bytes; the caller includes the '\n'). Never
 * blocks on the disk. Returns 0, or -1 when the line does not fit in the
 * buffer: it is dropped and counted in px_logw_dropped(). Any thread, but
 * lines from one thread keep their order. */
int px_logw_write(struct px_logw *w, const char *line, size_t len);

/* Asks the writer to reopen the path (logrotate renames the file, then sends
 * SIGHUP). Lines queued before the call go to the old file, later ones to
 * the new. If the open fails, lines keep going to the old file as long as it
 * still has a name; a file that was removed (no link left) is reopened
 * before every batch, and while that fails a sink gets fd -1. Does not wait.
 * Safe from the loop thread. */
void px_logw_reopen(struct px_logw *w);

/* Waits up to timeout_ms for every line queued before the call to be
 * written (or to fail). Returns 0 when done, -1 on timeout. For tests and
 * shutdown; not for the event loop's hot path. */
int px_logw_flush(struct px_logw *w, int timeout_ms);

/* Lines dropped because the buffer was full. Any thread. */
uint64_t px_logw_dropped(const struct px_logw *w);

/* Failed open(2)/write(2) calls in the writer (not fatal; the batch is lost
 * and the writer tries again with the next one). Any thread. */
uint64_t px_logw_errors(const struct px_logw *w);

/* Writes everything queued (waits up to 5 s for the disk, then discards what
 * is left), stops the thread, closes the file, frees *w and sets *w = NULL.
 * Accepts NULL and *w == NULL. */
void px_logw_close(struct px_logw **w);

#endif

/* px_logw: the asynchronous line writer behind the access and audit logs. It
 * owns one file descriptor, two buffers of max_buffered_bytes each and one
 * writer thread. Producers append to the front buffer under a mutex; the
 * writer swaps the buffers and writes the back one with write(2) outside the
 * lock, so a slow disk only ever fills the front buffer (and then lines are
 * dropped and counted) but never stalls the event loop. A reopen request
 * remembers the front buffer's length at the time of the call, so the writer
 * splits that batch: the bytes before go to the old file, the rest to the
 * newly opened path. Before each batch the writer checks that the file still
 * has a name (st_nlink > 0): writing to a removed file would lose the lines
 * without an error, so it is reopened first. With a sink (px_logw_open_sink)
 * the writer hands each batch to it instead of write(2), and keeps calling it
 * with empty probes while it reports failure. */
#include "px_logw.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LOGW_CLOSE_WAIT_MS 5000

struct px_logw {
    char *path;
    int fd;            /* writer thread only after open */
    int reopen_failed; /* writer: retry the reopen before the next batch */
    px_logw_sink_fn sink; /* NULL: plain write(2) */
    void *sink_arg;
    int sink_failing; /* writer: the sink asked to be probed again */

    pthread_mutex_t mu;
    pthread_cond_t cv_work; /* writer waits for lines, reopen or stop */
    pthread_cond_t cv_done; /* flush waits for progress (CLOCK_MONOTONIC) */
    pthread_t thread;

    /* Guarded by mu. */
    char *front; /* producers append here */
    char *back;  /* the writer's batch */
    size_t len, cap;
    int reopen;       /* a reopen is pending ... */
    size_t reopen_at; /* ... after this many bytes of front */
    int stop, discard, busy, kick;
    uint64_t bytes_queued, bytes_done; /* totals, to tell when a flush is done */
    uint64_t reopens_asked, reopens_done;

    atomic_uint_fast64_t dropped;
    atomic_uint_fast64_t errors;
};

static int open_path(const char *path)
{
    int fd;

    do {
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    } while (fd < 0 && errno == EINTR);
    return fd;
}

size_t px_logw_write_fd(int fd, const char *p, size_t n)
{
    size_t done = 0;

    while (done < n) {
        ssize_t r = write(fd, p + done, n - done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0)
                errno = EIO;
            break;
        }
        done += (size_t)r;
    }
    return done;
}

/* Writes n bytes, or counts one error and gives the rest up (a log that
 * cannot be written must not stop the proxy); a sink decides for itself. */
static void write_all(struct px_logw *w, char *p, size_t n)
{
    if (w->sink != NULL) {
        int fd = w->fd;
        struct stat sb;
        if (fd >= 0 && fstat(fd, &sb) == 0 && sb.st_nlink == 0)
            fd = -1; /* removed, and could not be created again */
        if (w->sink(w->sink_arg, fd, p, n) != 0) {
            atomic_fetch_add(&w->errors, 1);
            w->sink_failing = 1;
        } else {
            w->sink_failing = 0;
        }
        return;
    }
    if (n > 0 && px_logw_write_fd(w->fd, p, n) != n)
        atomic_fetch_add(&w->errors, 1);
}

/* Opens the path anew and only then closes the old descriptor: if the open
 * fails, lines keep going to the old (renamed) file rather than nowhere, and
 * the reopen is tried again before the next batch. */
static void do_reopen(struct px_logw *w)
{
    int fd = open_path(w->path);

    if (fd < 0) {
        atomic_fetch_add(&w->errors, 1);
        w->reopen_failed = 1;
        return;
    }
    close(w->fd);
    w->fd = fd;
    w->reopen_failed = 0;
}

/* A file removed while open (its directory deleted, say) is reopened before
 * the next batch, and again before each batch while that fails. */
static void check_removed(struct px_logw *w)
{
    struct stat sb;

    if (!w->reopen_failed && fstat(w->fd, &sb) == 0 && sb.st_nlink == 0)
        do_reopen(w);
}

/* Waits for work; with a failing sink, for PX_LOGW_RETRY_MS at most. */
static void wait_work(struct px_logw *w)
{
    struct timespec dl;

    if (!w->sink_failing) {
        pthread_cond_wait(&w->cv_work, &w->mu);
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_nsec += PX_LOGW_RETRY_MS * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    if (pthread_cond_timedwait(&w->cv_work, &w->mu, &dl) == ETIMEDOUT)
        w->kick = 1;
}

static void *writer_main(void *arg)
{
    struct px_logw *w = arg;

    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->len == 0 && !w->reopen && !w->stop && !w->kick)
            wait_work(w);
        if (w->len == 0 && !w->reopen && !w->kick)
            break; /* stop, and nothing left */

        char *batch = w->front;
        size_t n = w->len, cut = w->reopen ? w->reopen_at : n;
        int reopen = w->reopen, discard = w->discard;
        uint64_t asked = w->reopens_asked;

        w->front = w->back;
        w->back = batch;
        w->len = 0;
        w->reopen = 0;
        w->kick = 0;
        w->busy = 1;
        pthread_mutex_unlock(&w->mu);

        if (!discard) {
            if (w->reopen_failed)
                do_reopen(w);
            check_removed(w);
            if (cut > 0 || !reopen)
                write_all(w, batch, cut);
            if (reopen) {
                do_reopen(w);
                write_all(w, batch + cut, n - cut); /* n == cut: a sink's probe */
            }
        }

        pthread_mutex_lock(&w->mu);
        w->busy = 0;
        w->bytes_done += n;
        w->reopens_done = asked;
        pthread_cond_broadcast(&w->cv_done);
    }
    pthread_mutex_unlock(&w->mu);
    if (w->sink != NULL && !w->discard) {
        /* A last probe: a pending gap record gets its chance. */
        if (w->reopen_failed)
            do_reopen(w);
        check_removed(w);
        write_all(w, NULL, 0);
    }
    return NULL;
}

struct px_logw *px_logw_open_sink(const char *path, size_t max_buffered_bytes,
                                  px_logw_sink_fn sink, void *arg, char *err, size_t errlen)
{
    struct px_logw *w = NULL;
    pthread_condattr_t ca;
    int have_mu = 0, have_work = 0, have_done = 0, have_ca = 0;
    sigset_t all, old;

    if (errlen > 0)
        err[0] = '\0';
    if (path == NULL || max_buffered_bytes == 0) {
        snprintf(err, errlen, "log writer: no path or zero buffer");
        goto fail;
    }
    w = calloc(1, sizeof *w);
    if (w == NULL)
        goto nomem;
    w->fd = -1;
    w->sink = sink;
    w->sink_arg = arg;
    w->cap = max_buffered_bytes;
    w->path = strdup(path);
    w->front = malloc(max_buffered_bytes);
    w->back = malloc(max_buffered_bytes);
    if (w->path == NULL || w->front == NULL || w->back == NULL)
        goto nomem;
    atomic_init(&w->dropped, 0);
    atomic_init(&w->errors, 0);

    w->fd = open_path(path);
    if (w->fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (pthread_mutex_init(&w->mu, NULL) != 0)
        goto nomem;
    have_mu = 1;
    if (pthread_condattr_init(&ca) != 0)
        goto nomem;
    have_ca = 1;
    if (pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&w->cv_work, &ca) != 0)
        goto nomem;
    have_work = 1;
    if (pthread_cond_init(&w->cv_done, &ca) != 0)
        goto nomem;
    have_done = 1;

    /* The writer takes no signals: they belong to the event loop's thread. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&w->thread, NULL, writer_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "log writer: thread: %s", strerror(rc));
        goto fail;
    }
    pthread_condattr_destroy(&ca);
    return w;

nomem:
    snprintf(err, errlen, "log writer: out of memory");
fail:
    if (have_ca)
        pthread_condattr_destroy(&ca);
    if (w != NULL) {
        if (have_done)
            pthread_cond_destroy(&w->cv_done);
        if (have_work)
            pthread_cond_destroy(&w->cv_work);
        if (have_mu)
            pthread_mutex_destroy(&w->mu);
        if (w->fd >= 0)
            close(w->fd);
        free(w->front);
        free(w->back);
        free(w->path);
        free(w);
    }
    return NULL;
}

struct px_logw *px_logw_open(const char *path, size_t max_buffered_bytes, char *err, size_t errlen)
{
    return px_logw_open_sink(path, max_buffered_bytes, NULL, NULL, err, errlen);
}

void px_logw_kick(struct px_logw *w)
{
    pthread_mutex_lock(&w->mu);
    w->kick = 1;
    pthread_cond_signal(&w->cv_work);
    pthread_mutex_unlock(&w->mu);
}

int px_logw_write(struct px_logw *w, const char *line, size_t len)
{
    int rc = -1;

    pthread_mutex_lock(&w->mu);
    if (w->stop || len > w->cap - w->len) {
        atomic_fetch_add(&w->dropped, 1);
        goto out;
    }
    memcpy(w->front + w->len, line, len);
    w->len += len;
    w->bytes_queued += len;
    /* Wake the writer only on the first line of a batch: later ones ride
     * along with the batch it is about to take. */
    if (w->len == len)
        pthread_cond_signal(&w->cv_work);
    rc = 0;
out:
    pthread_mutex_unlock(&w->mu);
    return rc;
}

void px_logw_reopen(struct px_logw *w)
{
    pthread_mutex_lock(&w->mu);
    w->reopen = 1;
    w->reopen_at = w->len;
    w->reopens_asked++;
    pthread_cond_signal(&w->cv_work);
    pthread_mutex_unlock(&w->mu);
}

int px_logw_flush(struct px_logw *w, int timeout_ms)
{
    struct timespec dl;
    int rc = 0;

    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->mu);
    uint64_t bytes = w->bytes_queued, reopens = w->reopens_asked;
    while (w->bytes_done < bytes || w->reopens_done < reopens) {
        if (pthread_cond_timedwait(&w->cv_done, &w->mu, &dl) == ETIMEDOUT) {
            rc = w->bytes_done < bytes || w->reopens_done < reopens ? -1 : 0;
            break;
        }
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

uint64_t px_logw_dropped(const struct px_logw *w)
{
    return atomic_load(&((struct px_logw *)w)->dropped);
}

uint64_t px_logw_errors(const struct px_logw *w)
{
    return atomic_load(&((struct px_logw *)w)->errors);
}

void px_logw_close(struct px_logw **wp)
{
    struct px_logw *w;

    if (wp == NULL || *wp == NULL)
        return;
    w = *wp;
    *wp = NULL;

    int drained = px_logw_flush(w, LOGW_CLOSE_WAIT_MS) == 0;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    if (!drained) /* the disk is stuck: give up what is still queued */
        w->discard = 1;
    pthread_cond_signal(&w->cv_work);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);

    pthread_cond_destroy(&w->cv_done);
    pthread_cond_destroy(&w->cv_work);
    pthread_mutex_destroy(&w->mu);
    if (w->fd >= 0)
        close(w->fd);
    free(w->front);
    free(w->back);
    free(w->path);
    free(w);
}

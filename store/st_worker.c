/* st_worker: see st_worker.h. */
#include "st_worker.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "st_store_internal.h"

struct st_worker {
    st_worker_run_fn run;
    st_worker_tick_fn tick;
    void *arg;
    pthread_t thread;
    pthread_mutex_t mu; /* guards head, tail, stop */
    pthread_cond_t cv;
    struct st_store_req *head, *tail;
    int stop;
};

/* The tick's "call me again in ms" as an absolute CLOCK_MONOTONIC time. */
static struct timespec after_ms(int64_t ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static void *worker_main(void *arg)
{
    struct st_worker *w = arg;
    int64_t next = w->tick != NULL ? w->tick(w->arg) : -1;

    pthread_mutex_lock(&w->mu);
    for (;;) {
        struct st_store_req *batch;
        struct timespec due = after_ms(next < 0 ? 0 : next);
        int timed_out = 0;

        while (w->head == NULL && !w->stop && !timed_out) {
            if (next < 0)
                pthread_cond_wait(&w->cv, &w->mu);
            else
                timed_out = pthread_cond_timedwait(&w->cv, &w->mu, &due) != 0;
        }
        if (w->head == NULL && w->stop)
            break; /* stop requested and everything served */
        batch = w->head;
        w->head = w->tail = NULL;
        pthread_mutex_unlock(&w->mu);
        if (batch != NULL)
            w->run(w->arg, batch);
        if (w->tick != NULL)
            next = w->tick(w->arg);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void worker_free(struct st_worker *w)
{
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

struct st_worker *st_worker_start(st_worker_run_fn run, void *arg)
{
    return st_worker_start_ticking(run, NULL, arg);
}

struct st_worker *st_worker_start_ticking(st_worker_run_fn run, st_worker_tick_fn tick,
                                          void *arg)
{
    struct st_worker *w = calloc(1, sizeof(*w));
    pthread_condattr_t ca;

    if (w == NULL)
        return NULL;
    w->run = run;
    w->tick = tick;
    w->arg = arg;
    pthread_mutex_init(&w->mu, NULL);
    /* Timed waits on the monotonic clock: a wall-clock step must not stretch
     * a keepalive interval. */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        worker_free(w);
        return NULL;
    }
    return w;
}

void st_worker_submit(struct st_worker *w, struct st_store_req *req)
{
    int was_empty;

    req->next = NULL;
    pthread_mutex_lock(&w->mu);
    was_empty = w->head == NULL;
    if (w->tail != NULL)
        w->tail->next = req;
    else
        w->head = req;
    w->tail = req;
    pthread_mutex_unlock(&w->mu);
    /* The worker only sleeps on an empty queue. */
    if (was_empty)
        pthread_cond_signal(&w->cv);
}

int st_worker_stop(struct st_worker **wp, unsigned wait_s)
{
    struct st_worker *w;
    struct timespec dl;

    if (wp == NULL || *wp == NULL)
        return 0;
    w = *wp;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_mutex_unlock(&w->mu);
    pthread_cond_signal(&w->cv);
    /* Bounded: a disk or a cluster that never answers must not hang the
     * shutdown forever. */
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += (time_t)wait_s;
    if (pthread_timedjoin_np(w->thread, NULL, &dl) != 0) {
        pthread_detach(w->thread);
        return -1;
    }
    worker_free(w);
    *wp = NULL;
    return 0;
}

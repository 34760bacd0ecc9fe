/* st_worker: see st_worker.h. */
#include "st_worker.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "st_store_internal.h"

struct st_worker {
    st_worker_run_fn run;
    void *arg;
    pthread_t thread;
    pthread_mutex_t mu; /* guards head, tail, stop */
    pthread_cond_t cv;
    struct st_store_req *head, *tail;
    int stop;
};

static void *worker_main(void *arg)
{
    struct st_worker *w = arg;

    pthread_mutex_lock(&w->mu);
    for (;;) {
        struct st_store_req *batch;
        while (w->head == NULL && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->head == NULL)
            break; /* stop requested and everything served */
        batch = w->head;
        w->head = w->tail = NULL;
        pthread_mutex_unlock(&w->mu);
        w->run(w->arg, batch);
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
    struct st_worker *w = calloc(1, sizeof(*w));

    if (w == NULL)
        return NULL;
    w->run = run;
    w->arg = arg;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
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

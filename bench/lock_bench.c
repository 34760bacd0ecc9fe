/* lock_bench: load generator for libfencelock. N threads, each with its own
 * client (connection), run acquire+release pairs for a fixed time, and the
 * program prints pairs/s and p50/p99/max latency of a pair (and of a single
 * acquire). What a pair takes: the mutex on distinct lock names (default)
 * or on one shared name (--shared); a read hold of one read-write lock
 * (--read: fl_acquire_shared, every client on the same name, so the readers
 * share it); or a permit of one semaphore of N permits (--permits N:
 * fl_acquire_permit).
 * Usage: lock_bench --url redis://127.0.0.1:6379 [--clients 8]
 *        [--duration 5s] [--shared | --read | --permits N] [--ttl 10s] */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fc_duration.h"
#include "fencelock.h"

struct worker {
    pthread_t thread;
    int id;
    const char *url;
    int shared;       /* the mutex on one name */
    int read;         /* read holds of one read-write lock */
    unsigned permits; /* permits of one semaphore (0: not) */
    uint64_t ttl_ms;
    int64_t end_ns;
    uint64_t pairs, busy, errors;
    uint32_t *pair_us, *acq_us; /* latency samples, microseconds */
    size_t n, cap;
};

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int push(struct worker *w, uint32_t pair, uint32_t acq)
{
    if (w->n == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 65536;
        uint32_t *a = realloc(w->pair_us, nc * sizeof *a);

        if (a == NULL)
            return -1;
        w->pair_us = a;
        a = realloc(w->acq_us, nc * sizeof *a);
        if (a == NULL)
            return -1;
        w->acq_us = a;
        w->cap = nc;
    }
    w->pair_us[w->n] = pair;
    w->acq_us[w->n] = acq;
    w->n++;
    return 0;
}

static void *run(void *arg)
{
    struct worker *w = arg;
    struct fl_client *c = fl_client_new(w->url, NULL, 0);
    char name[64];

    if (c == NULL) {
        w->errors++;
        return NULL;
    }
    if (w->shared)
        snprintf(name, sizeof name, "bench/shared");
    else if (w->read)
        snprintf(name, sizeof name, "bench/rw");
    else if (w->permits)
        snprintf(name, sizeof name, "bench/sem");
    else
        snprintf(name, sizeof name, "bench/%d", w->id);
    while (now_ns() < w->end_ns) {
        struct fl_lease *l = NULL;
        int64_t t0 = now_ns(), t1, t2;
        unsigned slot;
        int rc;

        if (w->read)
            rc = fl_acquire_shared(c, name, w->ttl_ms, 1000, &l);
        else if (w->permits)
            rc = fl_acquire_permit(c, name, w->permits, w->ttl_ms, 1000, &l, &slot);
        else
            rc = fl_acquire(c, name, w->ttl_ms, w->shared ? 1000 : 0, &l);

        t1 = now_ns();
        if (rc == FL_ERR_NOT_ACQUIRED) {
            w->busy++;
            continue;
        }
        if (rc != FL_OK) {
            if (w->errors++ == 0)
                fprintf(stderr, "lock_bench: %s\n", fl_client_error(c));
            break;
        }
        rc = fl_release(c, l);
        t2 = now_ns();
        fl_lease_free(&l);
        if (rc != FL_OK) {
            w->errors++;
            continue;
        }
        w->pairs++;
        if (push(w, (uint32_t)((t2 - t0) / 1000), (uint32_t)((t1 - t0) / 1000)) < 0)
            break;
    }
    fl_client_free(&c);
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

static uint32_t pct(const uint32_t *v, size_t n, double p)
{
    size_t i;

    if (n == 0)
        return 0;
    i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i];
}

int main(int argc, char **argv)
{
    const char *url = "redis://127.0.0.1:6379";
    uint64_t dur_ms = 5000, ttl_ms = 10000, pairs = 0, busy = 0, errors = 0;
    int clients = 8, shared = 0, read = 0, ex = 1;
    unsigned permits = 0;
    const char *what;
    struct worker *ws = NULL;
    uint32_t *all_pair = NULL, *all_acq = NULL;
    size_t total = 0;
    int64_t t0, t1;

    signal(SIGPIPE, SIG_IGN);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "--shared") == 0) {
            shared = 1;
        } else if (strcmp(a, "--read") == 0) {
            read = 1;
        } else if (strcmp(a, "--permits") == 0 && v && atoi(v) > 0 && atoi(v) <= FL_PERMITS_MAX) {
            permits = (unsigned)atoi(v);
            i++;
        } else if (strcmp(a, "--url") == 0 && v) {
            url = v;
            i++;
        } else if (strcmp(a, "--clients") == 0 && v && atoi(v) > 0 && atoi(v) <= 1024) {
            clients = atoi(v);
            i++;
        } else if (strcmp(a, "--duration") == 0 && v && fc_duration_parse(v, &dur_ms) == 0) {
            i++;
        } else if (strcmp(a, "--ttl") == 0 && v && fc_duration_parse(v, &ttl_ms) == 0 &&
                   ttl_ms > 0) {
            i++;
        } else {
            fprintf(stderr, "usage: lock_bench [--url URL] [--clients N] [--duration 5s] "
                            "[--ttl 10s] [--shared | --read | --permits N]\n");
            return 2;
        }
    }
    if (shared + read + (permits > 0) > 1) {
        fprintf(stderr, "lock_bench: --shared, --read and --permits exclude each other\n");
        return 2;
    }
    ws = calloc((size_t)clients, sizeof *ws);
    if (ws == NULL)
        goto out;
    t0 = now_ns();
    for (int i = 0; i < clients; i++) {
        ws[i].id = i;
        ws[i].url = url;
        ws[i].shared = shared;
        ws[i].read = read;
        ws[i].permits = permits;
        ws[i].ttl_ms = ttl_ms;
        ws[i].end_ns = t0 + (int64_t)dur_ms * 1000000;
        if (pthread_create(&ws[i].thread, NULL, run, &ws[i]) != 0) {
            clients = i;
            break;
        }
    }
    for (int i = 0; i < clients; i++) {
        pthread_join(ws[i].thread, NULL);
        pairs += ws[i].pairs;
        busy += ws[i].busy;
        errors += ws[i].errors;
        total += ws[i].n;
    }
    t1 = now_ns();
    all_pair = malloc((total + 1) * sizeof *all_pair);
    all_acq = malloc((total + 1) * sizeof *all_acq);
    if (all_pair == NULL || all_acq == NULL)
        goto out;
    total = 0;
    for (int i = 0; i < clients; i++) {
        memcpy(all_pair + total, ws[i].pair_us, ws[i].n * sizeof *all_pair);
        memcpy(all_acq + total, ws[i].acq_us, ws[i].n * sizeof *all_acq);
        total += ws[i].n;
    }
    qsort(all_pair, total, sizeof *all_pair, cmp_u32);
    qsort(all_acq, total, sizeof *all_acq, cmp_u32);
    {
        static char buf[64];

        if (read) {
            what = "read";
        } else if (permits) {
            snprintf(buf, sizeof buf, "permits%u", permits);
            what = buf;
        } else {
            what = shared ? "shared" : "distinct";
        }
    }
    printf("clients=%d names=%s duration_s=%.2f pairs=%" PRIu64 " busy=%" PRIu64 " errors=%" PRIu64
           "\n",
           clients, what, (double)(t1 - t0) / 1e9, pairs, busy, errors);
    printf("pairs_per_s=%.0f\n", (double)pairs / ((double)(t1 - t0) / 1e9));
    printf("pair_latency_us p50=%u p99=%u max=%u\n", pct(all_pair, total, 0.50),
           pct(all_pair, total, 0.99), total ? all_pair[total - 1] : 0);
    printf("acquire_latency_us p50=%u p99=%u max=%u\n", pct(all_acq, total, 0.50),
           pct(all_acq, total, 0.99), total ? all_acq[total - 1] : 0);
    ex = errors == 0 && pairs > 0 ? 0 : 1;
out:
    for (int i = 0; ws && i < clients; i++) {
        free(ws[i].pair_us);
        free(ws[i].acq_us);
    }
    free(ws);
    free(all_pair);
    free(all_acq);
    return ex;
}

/* Crash safety of the embedded store through the real proxy (S2): rounds of
 * advancing writes with `kill -9` of fenceproxy at a random moment; after
 * each restart, every token that reached the upstream must be at most the
 * recorded highest of its resource. The recording upstream is the witness of
 * what was forwarded. */
#include <criterion/criterion.h>

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ts_proc.h"
#include "ts_proxy.h"
#include "ts_upstream.h"

#define ROUNDS 100
#define RESOURCES 8 /* one writer thread each: the store always has a batch queued */
#define MAX_REQUESTS_PER_ROUND 5000

static struct ts_upstream *up;
static struct ts_proxy px;

struct killer {
    pthread_t th;
    int delay_ms;
};

static void *killer_main(void *arg)
{
    struct killer *k = arg;

    pid_t pid = px.proc.pid;

    ts_sleep_ms(k->delay_ms);
    if (pid > 0) /* never kill(0): that is our own process group */
        kill(pid, SIGKILL);
    return NULL;
}

static uint64_t admin_highest(int r)
{
    char path[128];
    struct ts_resp resp;
    const char *h;
    uint64_t v = 0;

    snprintf(path, sizeof(path), "/tokens/%%2Fobjects%%2Fr%d", r);
    cr_assert_eq(ts_http_get(px.admin_port, path, &resp), 200, "admin /tokens failed");
    h = strstr(resp.body, "\"highest\":");
    cr_assert_not_null(h);
    v = strtoull(h + 10, NULL, 10);
    ts_resp_free(&resp);
    return v;
}

struct writer {
    pthread_t th;
    int resource;
    uint64_t next_token;   /* kept across rounds: tokens only grow */
    unsigned acked;
};

/* Sends advancing PUTs for one resource on one keep-alive connection until
 * the proxy dies. */
static void *writer_main(void *arg)
{
    struct writer *w = arg;
    int fd = ts_connect(px.port);

    if (fd < 0)
        return NULL;
    for (unsigned i = 0; i < MAX_REQUESTS_PER_ROUND; i++) {
        char req[256];
        struct ts_resp r;
        uint64_t t = w->next_token++;
        int n = snprintf(req, sizeof(req),
                         "PUT /objects/r%d/f HTTP/1.1\r\nHost: t\r\nFencing-Token: %" PRIu64
                         "\r\nContent-Length: 1\r\n\r\nx",
                         w->resource, t);
        if (ts_send_all(fd, req, (size_t)n) < 0 || ts_http_read(fd, &r, 3000, 0) < 0)
            break;
        w->acked += r.status == 200;
        ts_resp_free(&r);
    }
    close(fd);
    return NULL;
}

static void teardown(void)
{
    ts_proxy_cleanup(&px, 1); /* ctest shows the log only when the test fails */
    ts_upstream_stop(&up);
}

Test(crash, kill9_at_random_moments_loses_no_forwarded_advance, .fini = teardown,
     .timeout = 280)
{
    struct writer w[RESOURCES];
    size_t seen = 0;
    unsigned acked_total = 0;
    struct ts_upstream_req *q = malloc(sizeof(*q));
    uint64_t forwarded_max[RESOURCES] = {0};

    cr_assert_not_null(q);
    for (int i = 0; i < RESOURCES; i++) {
        w[i].resource = i;
        w[i].next_token = 1;
        w[i].acked = 0;
    }
    up = ts_upstream_start();
    cr_assert_not_null(up);
    ts_upstream_set_sink(up, 1);
    cr_assert_eq(ts_proxy_init(&px, "crash"), 0);
    cr_assert_eq(ts_proxy_write_conf(&px, ts_upstream_port(up),
                                     "[route objects]\nprefix = /objects/\nresource = segments:2\n"),
                 0);
    srand((unsigned)getpid());
    for (int round = 0; round < ROUNDS; round++) {
        struct killer k;
        int status;
        size_t count;

        cr_assert_eq(ts_proxy_start(&px), 0, "round %d: proxy did not start", round);
        /* After the restart the store must hold every forwarded advance. */
        for (int r = 0; r < RESOURCES; r++) {
            uint64_t h = admin_highest(r);
            cr_assert_geq(h, forwarded_max[r],
                          "round %d: resource r%d highest %" PRIu64
                          " after restart, but token %" PRIu64 " was forwarded",
                          round, r, h, forwarded_max[r]);
        }
        k.delay_ms = 5 + rand() % 120;
        cr_assert_eq(pthread_create(&k.th, NULL, killer_main, &k), 0);
        for (int i = 0; i < RESOURCES; i++)
            cr_assert_eq(pthread_create(&w[i].th, NULL, writer_main, &w[i]), 0);
        for (int i = 0; i < RESOURCES; i++)
            pthread_join(w[i].th, NULL);
        pthread_join(k.th, NULL);
        cr_assert_eq(ts_proc_wait(&px.proc, 5000, &status), 0, "round %d: proxy not dead", round);
        /* What reached the upstream this round. */
        ts_sleep_ms(20);
        count = ts_upstream_count(up);
        for (; seen < count; seen++) {
            char tok[64];
            unsigned res;
            uint64_t t;
            cr_assert_eq(ts_upstream_get(up, seen, q), 0);
            cr_assert_eq(sscanf(q->target, "/objects/r%u/f", &res), 1);
            cr_assert_eq(ts_upstream_header(q, "Fencing-Token", tok, sizeof(tok)), 1);
            t = strtoull(tok, NULL, 10);
            cr_assert_lt(res, RESOURCES);
            if (t > forwarded_max[res])
                forwarded_max[res] = t;
        }
    }
    /* final check after the last crash */
    cr_assert_eq(ts_proxy_start(&px), 0);
    for (int r = 0; r < RESOURCES; r++)
        cr_assert_geq(admin_highest(r), forwarded_max[r], "final: r%d lost an advance", r);
    for (int i = 0; i < RESOURCES; i++)
        acked_total += w[i].acked;
    cr_log_info("%d kill -9 rounds, %u writes acknowledged, %zu forwarded", ROUNDS, acked_total,
                seen);
    cr_assert_gt(seen, (size_t)ROUNDS, "too few writes to prove anything");
    free(q);
}

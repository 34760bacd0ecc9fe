/* bench/etcd_alone.c: what etcd alone does for the etcd token store's
 * workload (issue 14's peer figure), through the same client module the
 * store uses (etcd/ec_client, the v3 JSON gateway). Two measurements on the
 * cluster at ENDPOINTS, each for SECONDS:
 *
 *   txn  THREADS threads, each with its own connection, each committing one
 *        advance-shaped txn at a time (compare the value, put a 20-digit
 *        token) on a key of its own: raw txns/s, one key per txn;
 *   store  the etcd token store (store/st_store_etcd.c) alone, no proxy:
 *        KEYS owned keys, every key advanced again as soon as its last
 *        advance was acknowledged (group commit): advances/s and the
 *        average keys per txn.
 *
 * Usage: etcd_alone ENDPOINTS SECONDS THREADS KEYS [txn|store]  (default: both)
 * Built and run by bench/etcd_owners.sh. */
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ec_client.h"
#include "st_store.h"

static const char *eps;
static double secs;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct worker {
    pthread_t th;
    int id;
    long ok, failed;
};

static void *txn_main(void *arg)
{
    struct worker *w = arg;
    char err[256], key[64], val[24];
    struct ec_client *c = ec_client_new(eps, err, sizeof err);
    double end = now() + secs;
    uint64_t t = 0;

    if (c == NULL) {
        fprintf(stderr, "etcd_alone: %s\n", err);
        return NULL;
    }
    snprintf(key, sizeof key, "/bench-alone/%d", w->id);
    while (now() < end) {
        struct ec_cmp cmp;
        struct ec_op put;
        struct ec_txn_result res;

        snprintf(val, sizeof val, "%020" PRIu64, ++t);
        cmp = (struct ec_cmp){.key = key, .target = EC_TARGET_VALUE, .op = EC_LESS,
                              .value = val, .value_len = 20};
        put = (struct ec_op){.type = EC_OP_PUT, .range = {.key = key}, .value = val,
                             .value_len = 20};
        if (ec_txn(c, &cmp, 1, &put, 1, &put, 1, ec_now_ms() + 5000, &res) == EC_OK)
            w->ok++;
        else
            w->failed++;
        ec_txn_result_free(&res);
    }
    ec_client_free(&c);
    return NULL;
}

struct key_state {
    struct st_store *s;
    char key[32];
    uint64_t token;
    long *acked, *failed;
    int busy;
};

static void on_adv(void *arg, int rc, uint64_t highest)
{
    struct key_state *k = arg;
    (void)highest;
    k->busy = 0;
    if (rc == 0)
        (*k->acked)++;
    else
        (*k->failed)++;
}

static void on_get(void *arg, int rc, uint64_t highest)
{
    struct key_state *k = arg;
    k->busy = 0;
    k->token = highest;
    if (rc != 0)
        (*k->failed)++;
}

struct commits {
    long n;
    size_t total;
};

static void on_commit(void *arg, size_t batch, double seconds)
{
    struct commits *c = arg;
    (void)seconds;
    c->n++;
    c->total += batch;
}

static void pump(struct st_store *s, double until, struct key_state *ks, int n, int advancing)
{
    while (now() < until) {
        struct pollfd p = {.fd = st_store_notify_fd(s), .events = POLLIN};
        int idle = 1;
        if (poll(&p, 1, 10) > 0)
            st_store_dispatch(s);
        for (int i = 0; i < n; i++) {
            if (ks[i].busy)
                idle = 0;
            else if (advancing) {
                ks[i].busy = 1;
                st_store_advance(s, ks[i].key, strlen(ks[i].key), ++ks[i].token, on_adv, &ks[i]);
                idle = 0;
            }
        }
        if (!advancing && idle)
            return;
    }
}

int main(int argc, char **argv)
{
    int threads, nkeys;
    long ok = 0, failed = 0, acked = 0, afailed = 0;
    struct worker *ws;
    struct key_state *ks;
    struct commits cm = {0};
    double t0;
    char err[256];

    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: etcd_alone ENDPOINTS SECONDS THREADS KEYS [txn|store]\n");
        return 2;
    }
    eps = argv[1];
    secs = atof(argv[2]);
    threads = argc == 6 && strcmp(argv[5], "store") == 0 ? 0 : atoi(argv[3]);
    nkeys = atoi(argv[4]);
    if (secs <= 0 || threads < 0 || threads > 1024 || nkeys < 1 || nkeys > 100000)
        return 2;
    ws = calloc((size_t)threads + 1, sizeof *ws);
    ks = calloc((size_t)nkeys, sizeof *ks);
    if (ws == NULL || ks == NULL)
        return 1;
    t0 = now();
    for (int i = 0; i < threads; i++) {
        ws[i].id = i;
        pthread_create(&ws[i].th, NULL, txn_main, &ws[i]);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(ws[i].th, NULL);
        ok += ws[i].ok;
        failed += ws[i].failed;
    }
    if (threads > 0)
        printf("etcd alone: %d connections, one txn each at a time: %.0f txns/s (%ld failed)\n",
           threads, (double)ok / (now() - t0), failed);

    if (argc != 6 || strcmp(argv[5], "store") == 0) {
        struct st_store_config cfg = {.backend = ST_STORE_ETCD, .endpoints = eps,
                                      .prefix = "/bench-store/", .lock_delay_ms = 1};
        struct st_store *s = st_store_open(&cfg, err, sizeof err);
        if (s == NULL) {
            fprintf(stderr, "etcd_alone: %s\n", err);
            return 1;
        }
        for (int i = 0; i < nkeys; i++) {
            ks[i].s = s;
            snprintf(ks[i].key, sizeof ks[i].key, "/k/%d", i);
            ks[i].acked = &acked;
            ks[i].failed = &afailed;
            ks[i].busy = 1;
            st_store_get(s, ks[i].key, strlen(ks[i].key), on_get, &ks[i]); /* take it */
        }
        pump(s, now() + 60, ks, nkeys, 0);
        st_store_set_commit_hook(s, on_commit, &cm);
        t0 = now();
        pump(s, t0 + secs, ks, nkeys, 1);
        printf("etcd token store alone: %d keys: %.0f advances/s in %.0f txns/s (%.1f keys per "
               "txn, %ld failed)\n",
               nkeys, (double)acked / (now() - t0), (double)cm.n / (now() - t0),
               cm.n ? (double)cm.total / (double)cm.n : 0.0, afailed);
        pump(s, now() + 10, ks, nkeys, 0);
        st_store_close(&s);
    }
    free(ws);
    free(ks);
    return 0;
}

/* store_grow: the "capacity without a cliff" bench of issue 20. Opens a file
 * token store at DIR with the default map (starts at 16 MiB, grows up to
 * [store] max_size, default 64 GiB) and advances N distinct long keys (each
 * KEYLEN bytes, in hashed order, so that B-tree pages split as they do with
 * real resource paths), keeping WINDOW advances in flight. Prints the bytes
 * in use every 10% and at the end; exits 1 if any advance failed or was
 * refused. Built and run by bench/store_grow.sh. */
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "st_store.h"

#define WINDOW 512

static long done, failed;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_done(void *arg, int rc, uint64_t highest)
{
    (void)arg;
    (void)highest;
    done++;
    if (rc != 0)
        failed++;
}

int main(int argc, char **argv)
{
    struct st_store_config cfg = {.backend = ST_STORE_FILE};
    char err[4096], key[512];
    long n, sent = 0, next_report;
    size_t klen;
    uint64_t used, max;

    if (argc != 4) {
        fprintf(stderr, "usage: store_grow DIR N KEYLEN\n");
        return 2;
    }
    cfg.path = argv[1];
    n = atol(argv[2]);
    klen = (size_t)atol(argv[3]);
    if (n <= 0 || klen < 32 || klen > sizeof key) {
        fprintf(stderr, "store_grow: N > 0, 32 <= KEYLEN <= %zu\n", sizeof key);
        return 2;
    }
    struct st_store *s = st_store_open(&cfg, err, sizeof err);
    if (s == NULL) {
        fprintf(stderr, "store_grow: %s\n", err);
        return 2;
    }
    double t0 = now();
    next_report = n / 10;
    while (done < n) {
        while (sent < n && sent - done < WINDOW) {
            /* A 64-bit mix of the index spreads the keys over the tree. */
            uint64_t h = (uint64_t)sent * 0x9e3779b97f4a7c15ULL;
            h ^= h >> 31;
            memset(key, 'x', klen);
            int m = snprintf(key, klen, "/objects/%016" PRIx64 "/%ld/", h, sent);
            key[m] = 'x';
            st_store_advance(s, key, klen, 1, on_done, NULL);
            sent++;
        }
        struct pollfd p = {.fd = st_store_notify_fd(s), .events = POLLIN};
        if (poll(&p, 1, 1000) > 0)
            st_store_dispatch(s);
        if (now() - t0 > 3600) {
            fprintf(stderr, "store_grow: over an hour, giving up at %ld\n", done);
            break;
        }
        if (done >= next_report) {
            st_store_fill(s, &used, &max);
            fprintf(stderr, "%ld keys: %.3f GiB in use, %.0f s\n", done,
                    (double)used / (1 << 30), now() - t0);
            next_report += n / 10;
        }
    }
    st_store_fill(s, &used, &max);
    printf("%ld keys of %zu bytes: %" PRIu64 " bytes in use (%.2f GiB) of max %.0f GiB, "
           "%ld failed or refused, %.1f s, store failed: %s\n",
           done, klen, used, (double)used / (1 << 30), (double)max / (1 << 30), failed,
           now() - t0, st_store_failed(s) ? st_store_error(s) : "no");
    int rc = failed == 0 && done == n ? 0 : 1;
    st_store_close(&s);
    return rc;
}

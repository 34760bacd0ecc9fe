/* store_crasher: a helper for the kill -9 test of the file store. It opens
 * the store at argv[1] and advances random keys with increasing tokens
 * (starting above argv[2]), keeping many advances in flight so that group
 * commit is exercised, and prints "ack KEY TOKEN" on stdout, unbuffered,
 * only after the advance's callback reported rc 0. It runs until killed (or
 * for at most 30 s). A line it printed is a promise the test then checks
 * against the reopened store. */
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "st_store.h"

#define NKEYS 16
#define WINDOW 64

struct op {
    int key;
    uint64_t token;
    int busy;
};

static struct op ops[WINDOW];
static int inflight;

static void write_all(const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(1, buf, n);
        if (w <= 0)
            exit(3);
        buf += w;
        n -= (size_t)w;
    }
}

static void on_done(void *arg, int rc, uint64_t highest)
{
    struct op *o = arg;
    char line[64];
    if (rc != 0) {
        fprintf(stderr, "store_crasher: advance failed\n");
        exit(2);
    }
    if (highest < o->token) {
        fprintf(stderr, "store_crasher: highest %llu < token %llu\n",
                (unsigned long long)highest, (unsigned long long)o->token);
        exit(2);
    }
    int n = snprintf(line, sizeof line, "ack /k%d %llu\n", o->key, (unsigned long long)o->token);
    write_all(line, (size_t)n);
    o->busy = 0;
    inflight--;
}

int main(int argc, char **argv)
{
    struct st_store_config cfg = {.backend = ST_STORE_FILE};
    char err[256];
    uint64_t next;
    time_t end = time(NULL) + 30;

    if (argc != 4) {
        fprintf(stderr, "usage: store_crasher DIR START_TOKEN SEED\n");
        return 2;
    }
    cfg.path = argv[1];
    /* The marker too, so every restart after a kill goes through the whole
     * identity check (a false refusal would show as exit 2). */
    char marker[4200];
    snprintf(marker, sizeof marker, "%s.id", argv[1]);
    cfg.marker = marker;
    next = strtoull(argv[2], NULL, 10);
    srand((unsigned)strtoul(argv[3], NULL, 10));
    struct st_store *s = st_store_open(&cfg, err, sizeof err);
    if (s == NULL) {
        fprintf(stderr, "store_crasher: %s\n", err);
        return 2;
    }
    write_all("ready\n", 6);
    while (time(NULL) < end) {
        for (int i = 0; i < WINDOW && inflight < WINDOW; i++) {
            if (ops[i].busy)
                continue;
            char key[16];
            ops[i].key = rand() % NKEYS;
            ops[i].token = ++next;
            ops[i].busy = 1;
            inflight++;
            snprintf(key, sizeof key, "/k%d", ops[i].key);
            st_store_advance(s, key, strlen(key), ops[i].token, on_done, &ops[i]);
        }
        struct pollfd p = {.fd = st_store_notify_fd(s), .events = POLLIN};
        if (poll(&p, 1, 1000) > 0)
            st_store_dispatch(s);
    }
    st_store_close(&s);
    return 0;
}

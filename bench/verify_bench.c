/* verify_bench: load generator for fenceproxy's verified routes (issue 16).
 * N threads, each with its own lock client (libfencelock) and one keep-alive
 * HTTP/1.1 connection to the proxy, on its own resource PREFIX TAG-tI
 * (lock name = resource key, the route's default lock_name).
 *   advance mode (default): each cycle acquires the lock, PUTs
 *     PREFIX TAG-tI/o with the lease's token (a new, higher token: one
 *     advance, and on a verified route one backend check), releases it.
 *   fixed mode (--fixed): acquires once, then PUTs with that token again and
 *     again (T == H after the first: no check), releases at the end.
 * Runs for --duration, or --count cycles per thread. Prints one RESULT line
 * (cycles/s, PUT latency p50/p99 in us, the lock calls' p50, non-2xx and
 * errors) that bench/verify.sh parses. Every PUT must answer 2xx; anything
 * else is counted (and makes the exit status 1).
 * Usage: verify_bench --url LOCKURL --port PROXYPORT --prefix /v/ [--tag T]
 *        [--clients 1] [--duration 5s | --count N] [--fixed] [--body 1024] */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "fc_duration.h"
#include "fencelock.h"

#define IO_TIMEOUT_MS 10000
#define LOCK_TTL_MS 30000

struct opts {
    const char *url, *prefix, *tag;
    int port, fixed;
    size_t body;
    uint64_t count;
    int64_t end_ns;
};

struct worker {
    pthread_t thread;
    int id;
    const struct opts *o;
    uint64_t cycles, non2xx, errors;
    uint32_t *put_us, *lock_us; /* samples, microseconds */
    size_t n, cap;
};

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int push(struct worker *w, uint32_t put, uint32_t lock)
{
    if (w->n == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 65536;
        uint32_t *a = realloc(w->put_us, nc * sizeof *a);

        if (a == NULL)
            return -1;
        w->put_us = a;
        a = realloc(w->lock_us, nc * sizeof *a);
        if (a == NULL)
            return -1;
        w->lock_us = a;
        w->cap = nc;
    }
    w->put_us[w->n] = put;
    w->lock_us[w->n] = lock;
    w->n++;
    return 0;
}

static int dial(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0)
        return -1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads one response (a head with Content-Length or none: the proxy and
 * nginx answer the PUT with 204 or a sized body) within IO_TIMEOUT_MS.
 * Returns the status, or -1. buf holds cap bytes; leftovers are not kept
 * (one request in flight per connection). */
static int read_resp(int fd, char *buf, size_t cap)
{
    size_t n = 0, need = 0, head = 0;
    int64_t end = now_ns() + (int64_t)IO_TIMEOUT_MS * 1000000;
    int status = -1;

    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int64_t left = (end - now_ns()) / 1000000;
        ssize_t r;

        if (head > 0 && n >= head + need)
            return status;
        if (left <= 0 || poll(&p, 1, (int)left) <= 0 || n + 1 >= cap)
            return -1;
        r = recv(fd, buf + n, cap - n - 1, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        n += (size_t)r;
        buf[n] = '\0';
        if (head == 0) {
            char *e = strstr(buf, "\r\n\r\n"), *cl;
            if (e == NULL)
                continue;
            head = (size_t)(e - buf) + 4;
            if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
                return -1;
            cl = strcasestr(buf, "\r\ncontent-length:");
            if (cl != NULL && cl < e)
                need = (size_t)strtoull(cl + 17, NULL, 10);
        }
    }
}

static uint32_t us_since(int64_t t0)
{
    return (uint32_t)((now_ns() - t0) / 1000);
}

static void *run(void *arg)
{
    struct worker *w = arg;
    const struct opts *o = w->o;
    struct fl_client *c = fl_client_new(o->url, NULL, 0);
    struct fl_lease *l = NULL;
    char name[256], *req = NULL, resp[4096];
    size_t hlen, body = o->body;
    int fd = dial(o->port);

    snprintf(name, sizeof name, "%s%s-t%d", o->prefix, o->tag, w->id);
    req = malloc(512 + body);
    if (c == NULL || fd < 0 || req == NULL) {
        fprintf(stderr, "verify_bench: thread %d: %s\n", w->id,
                c == NULL ? "lock client" : fd < 0 ? "connect to the proxy" : "memory");
        w->errors++;
        goto out;
    }
    for (uint64_t i = 0; o->count == 0 || i < o->count; i++) {
        int64_t t0 = now_ns(), t1;
        uint32_t lock_us = 0;
        int st;

        if (o->count == 0 && t0 >= o->end_ns)
            break;
        if (l == NULL) {
            if (fl_acquire(c, name, LOCK_TTL_MS, 2000, &l) != FL_OK) {
                if (w->errors++ == 0)
                    fprintf(stderr, "verify_bench: acquire %s: %s\n", name, fl_client_error(c));
                break;
            }
            lock_us = us_since(t0);
        }
        hlen = (size_t)snprintf(req, 512,
                                "PUT %s/o HTTP/1.1\r\nHost: bench\r\nFencing-Token: %" PRIu64
                                "\r\nContent-Type: application/octet-stream\r\n"
                                "Content-Length: %zu\r\n\r\n",
                                name, l->token, body);
        memset(req + hlen, 'x', body);
        t1 = now_ns();
        if (send_all(fd, req, hlen + body) != 0 || (st = read_resp(fd, resp, sizeof resp)) < 0) {
            if (w->errors++ == 0)
                fprintf(stderr, "verify_bench: PUT %s/o: no answer\n", name);
            break;
        }
        if (st < 200 || st > 299) {
            if (w->non2xx++ == 0)
                fprintf(stderr, "verify_bench: PUT %s/o token %" PRIu64 ": %d\n", name, l->token,
                        st);
        }
        if (push(w, us_since(t1), 0) < 0)
            break;
        if (!o->fixed) {
            int64_t t2 = now_ns();
            if (fl_release(c, l) != FL_OK)
                w->errors++;
            fl_lease_free(&l);
            lock_us += us_since(t2);
        }
        w->lock_us[w->n - 1] = lock_us;
        w->cycles++;
    }
out:
    if (l != NULL) {
        fl_release(c, l);
        fl_lease_free(&l);
    }
    if (fd >= 0)
        close(fd);
    free(req);
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
    return n == 0 ? 0 : v[(size_t)(p * (double)(n - 1) + 0.5)];
}

int main(int argc, char **argv)
{
    struct opts o = {.url = NULL, .prefix = NULL, .tag = "run", .body = 1024};
    uint64_t dur_ms = 5000, cycles = 0, non2xx = 0, errors = 0;
    int clients = 1, ex = 1;
    struct worker *ws = NULL;
    uint32_t *put = NULL, *lock = NULL;
    size_t total = 0, nlock = 0;
    int64_t t0, t1;

    signal(SIGPIPE, SIG_IGN);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int more = v != NULL;

        if (strcmp(a, "--fixed") == 0)
            o.fixed = 1, more = 0;
        else if (strcmp(a, "--url") == 0 && v)
            o.url = v;
        else if (strcmp(a, "--prefix") == 0 && v)
            o.prefix = v;
        else if (strcmp(a, "--tag") == 0 && v)
            o.tag = v;
        else if (strcmp(a, "--port") == 0 && v && atoi(v) > 0 && atoi(v) < 65536)
            o.port = atoi(v);
        else if (strcmp(a, "--clients") == 0 && v && atoi(v) > 0 && atoi(v) <= 256)
            clients = atoi(v);
        else if (strcmp(a, "--body") == 0 && v && atoi(v) >= 0 && atoi(v) <= (1 << 20))
            o.body = (size_t)atoi(v);
        else if (strcmp(a, "--count") == 0 && v && strtoull(v, NULL, 10) > 0)
            o.count = strtoull(v, NULL, 10);
        else if (strcmp(a, "--duration") == 0 && v && fc_duration_parse(v, &dur_ms) == 0)
            ;
        else
            goto usage;
        i += more;
    }
    if (o.url == NULL || o.prefix == NULL || o.port == 0)
        goto usage;
    ws = calloc((size_t)clients, sizeof *ws);
    if (ws == NULL)
        goto out;
    t0 = now_ns();
    o.end_ns = t0 + (int64_t)dur_ms * 1000000;
    for (int i = 0; i < clients; i++) {
        ws[i].id = i;
        ws[i].o = &o;
        if (pthread_create(&ws[i].thread, NULL, run, &ws[i]) != 0) {
            clients = i;
            break;
        }
    }
    for (int i = 0; i < clients; i++) {
        pthread_join(ws[i].thread, NULL);
        cycles += ws[i].cycles;
        non2xx += ws[i].non2xx;
        errors += ws[i].errors;
        total += ws[i].n;
    }
    t1 = now_ns();
    put = malloc((total + 1) * sizeof *put);
    lock = malloc((total + 1) * sizeof *lock);
    if (put == NULL || lock == NULL)
        goto out;
    total = 0;
    for (int i = 0; i < clients; i++) {
        memcpy(put + total, ws[i].put_us, ws[i].n * sizeof *put);
        for (size_t k = 0; k < ws[i].n; k++)
            if (!o.fixed || k == 0)
                lock[nlock++] = ws[i].lock_us[k];
        total += ws[i].n;
    }
    qsort(put, total, sizeof *put, cmp_u32);
    qsort(lock, nlock, sizeof *lock, cmp_u32);
    printf("RESULT mode=%s clients=%d cycles=%" PRIu64 " duration_us=%.0f rps=%.1f put_p50_us=%u "
           "put_p99_us=%u lock_p50_us=%u non2xx=%" PRIu64 " errors=%" PRIu64 "\n",
           o.fixed ? "fixed" : "advance", clients, cycles, (double)(t1 - t0) / 1e3,
           (double)cycles / ((double)(t1 - t0) / 1e9), pct(put, total, 0.50),
           pct(put, total, 0.99), pct(lock, nlock, 0.50), non2xx, errors);
    ex = errors == 0 && non2xx == 0 && cycles > 0 ? 0 : 1;
    goto out;
usage:
    fprintf(stderr, "usage: verify_bench --url LOCKURL --port PROXYPORT --prefix /v/ [--tag T] "
                    "[--clients N] [--duration 5s | --count N] [--fixed] [--body BYTES]\n");
    ex = 2;
out:
    for (int i = 0; ws != NULL && i < clients; i++) {
        free(ws[i].put_us);
        free(ws[i].lock_us);
    }
    free(ws);
    free(put);
    free(lock);
    return ex;
}

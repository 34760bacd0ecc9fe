/* ts_upstream: see ts_upstream.h. One listener thread accepts; each
 * connection gets its own thread that reads requests with blocking recv
 * behind poll() on the socket and a wake pipe. ts_upstream_stop() writes the
 * wake pipe, shuts every socket down and broadcasts the condition variable,
 * so no thread can stay blocked; then it joins them all. Recorded requests
 * live in an array of pointers, so a connection thread can fill in resp_ns
 * of its own record after the array has grown. Every request is put in
 * the arrivals log (which owns the records) as soon as its head is read,
 * and in the list of complete ones once its body is in. One mutex guards
 * all shared state. */
#include "ts_upstream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HOLDS_MAX 16
#define HOLD_LEN 256
#define RBUF_CAP (TS_UPSTREAM_HEAD_MAX + 8192)
#define CHUNK_LINE_MAX 8192
#define JOIN_LIMIT_S 10

enum slot_state { SLOT_FREE, SLOT_RUNNING, SLOT_DONE };

struct slot {
    pthread_t th;
    int fd;
    enum slot_state state;
    size_t index;
    struct ts_upstream *u;
};

struct rec {
    char method[32];
    char *target;
    char *head;
    size_t head_len;
    uint64_t body_len, body_hash;
    unsigned char *body;
    size_t body_kept;
    int chunked;
    size_t conn;
    uint64_t recv_ns, resp_ns;
    /* The arrivals log: every request whose head was read, complete or not;
     * updated under mu by its connection thread. */
    uint64_t head_ns, last_ns, end_ns;
    uint64_t got; /* body bytes read so far */
    int complete; /* fully received (also in recs) */
};

struct ts_upstream {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int lfd, port;
    int wake[2];
    pthread_t listener;
    int stopping;
    struct slot slots[TS_UPSTREAM_MAX_CONNS];
    struct rec **recs; /* fully received, in order (borrowed from arr) */
    size_t nrecs, caprecs;
    struct rec **arr; /* every request whose head was read (owned) */
    size_t narr, caparr;
    size_t nconns, parse_errors;
    uint64_t bytes;
    char *resp;
    size_t resp_len;
    char holds[HOLDS_MAX][HOLD_LEN]; /* "" = unused */
    int delay_ms, close_after, sink;
};

/* What a connection thread has buffered: bytes [off, off+len) of buf. */
struct rconn {
    struct ts_upstream *u;
    struct slot *slot;
    int fd;
    char *buf;
    size_t off, len;
    struct rec *cur; /* the request being read, once in the arrivals log */
};

static const char default_resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t ts_upstream_hash_update(uint64_t h, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

uint64_t ts_upstream_hash(const void *buf, size_t len)
{
    return ts_upstream_hash_update(TS_FNV_OFFSET, buf, len);
}

/* Looks up header name in a raw head (request line first). Copies the first
 * value into out when out is non-NULL; returns the number of such fields. */
static int head_field(const char *head, size_t len, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    const char *end = head + len, *p = memchr(head, '\n', len);
    int count = 0;

    if (out != NULL && cap > 0)
        out[0] = '\0';
    while (p != NULL && ++p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *le = eol ? eol : end;
        if ((size_t)(le - p) > nlen && p[nlen] == ':' && strncasecmp(p, name, nlen) == 0) {
            const char *v = p + nlen + 1, *ve = le;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            if (count == 0 && out != NULL && cap > 0) {
                size_t n = (size_t)(ve - v) < cap - 1 ? (size_t)(ve - v) : cap - 1;
                memcpy(out, v, n);
                out[n] = '\0';
            }
            count++;
        }
        p = eol;
    }
    return count;
}

int ts_upstream_header(const struct ts_upstream_req *req, const char *name, char *out,
                       size_t cap)
{
    return head_field(req->head, req->head_len, name, out, cap);
}

/* Reads more bytes into rc's buffer. Returns 0, or -1 on EOF, error, a full
 * buffer or stop. */
static int read_more(struct rconn *rc)
{
    struct pollfd pfd[2] = {{.fd = rc->fd, .events = POLLIN},
                            {.fd = rc->u->wake[0], .events = POLLIN}};
    ssize_t n;

    if (rc->off > 0) {
        memmove(rc->buf, rc->buf + rc->off, rc->len);
        rc->off = 0;
    }
    if (rc->len >= RBUF_CAP)
        return -1;
    for (;;) {
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (pfd[1].revents != 0)
            return -1;
        n = recv(rc->fd, rc->buf + rc->len, RBUF_CAP - rc->len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        pthread_mutex_lock(&rc->u->mu);
        rc->u->bytes += (uint64_t)n;
        if (rc->cur != NULL)
            rc->cur->last_ns = now_ns();
        pthread_mutex_unlock(&rc->u->mu);
        rc->len += (size_t)n;
        return 0;
    }
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Takes n body bytes from the connection into rec's hash and kept prefix. */
static int take_body(struct rconn *rc, struct rec *r, uint64_t n, int sink)
{
    while (n > 0) {
        if (rc->len == 0 && read_more(rc) != 0)
            return -1;
        size_t m = rc->len < n ? rc->len : (size_t)n;
        const char *p = rc->buf + rc->off;
        r->body_hash = ts_upstream_hash_update(r->body_hash, p, m);
        if (!sink && r->body_kept < TS_UPSTREAM_BODY_KEEP) {
            size_t k = TS_UPSTREAM_BODY_KEEP - r->body_kept;
            k = k < m ? k : m;
            memcpy(r->body + r->body_kept, p, k);
            r->body_kept += k;
        }
        r->body_len += m;
        pthread_mutex_lock(&rc->u->mu);
        r->got = r->body_len;
        pthread_mutex_unlock(&rc->u->mu);
        rc->off += m;
        rc->len -= m;
        n -= m;
    }
    return 0;
}

/* Reads one CRLF-terminated line (returned without CRLF, in line). */
static int take_line(struct rconn *rc, char *line, size_t cap)
{
    for (;;) {
        char *p = rc->buf + rc->off;
        char *nl = memchr(p, '\n', rc->len);
        if (nl != NULL) {
            size_t n = (size_t)(nl - p);
            if (n == 0 || p[n - 1] != '\r' || n >= cap)
                return -1;
            memcpy(line, p, n - 1);
            line[n - 1] = '\0';
            rc->off += n + 1;
            rc->len -= n + 1;
            return 0;
        }
        if (rc->len >= cap || read_more(rc) != 0)
            return -1;
    }
}

static int take_chunked(struct rconn *rc, struct rec *r, int sink)
{
    char line[CHUNK_LINE_MAX];

    for (;;) {
        uint64_t size = 0;
        const char *p;
        if (take_line(rc, line, sizeof line) != 0)
            return -1;
        for (p = line; *p != '\0' && *p != ';'; p++) {
            int d = (*p >= '0' && *p <= '9') ? *p - '0'
                    : (*p >= 'a' && *p <= 'f') ? *p - 'a' + 10
                    : (*p >= 'A' && *p <= 'F') ? *p - 'A' + 10 : -1;
            if (d < 0 || size > (UINT64_MAX >> 4))
                return -1;
            size = size * 16 + (uint64_t)d;
        }
        if (p == line)
            return -1;
        if (size == 0)
            break;
        if (take_body(rc, r, size, sink) != 0 || take_line(rc, line, sizeof line) != 0 ||
            line[0] != '\0')
            return -1;
    }
    do { /* trailer fields until the empty line */
        if (take_line(rc, line, sizeof line) != 0)
            return -1;
    } while (line[0] != '\0');
    return 0;
}

static void rec_free(struct rec *r)
{
    if (r == NULL)
        return;
    free(r->target);
    free(r->head);
    free(r->body);
    free(r);
}

static int held(struct ts_upstream *u, const struct rec *r)
{
    for (int i = 0; i < HOLDS_MAX; i++)
        if (u->holds[i][0] != '\0' && memmem(r->head, r->head_len, u->holds[i],
                                             strlen(u->holds[i])) != NULL)
            return 1;
    return 0;
}

/* Reads one request and answers it. Returns 1 to keep the connection, 0 to
 * close it, -1 on a parse error. */
static int serve_one(struct rconn *rc)
{
    struct ts_upstream *u = rc->u;
    struct rec *r = NULL;
    char *hend, *resp = NULL, val[256], clval[64];
    size_t hlen, resp_len;
    uint64_t cl = 0;
    int ret = -1, sink, keep = 1, stop;

    /* The head: up to the first CRLFCRLF. */
    while ((hend = memmem(rc->buf + rc->off, rc->len, "\r\n\r\n", 4)) == NULL) {
        if (rc->len >= TS_UPSTREAM_HEAD_MAX) {
            goto out;
        }
        if (read_more(rc) != 0) {
            ret = 0;
            goto out;
        }
    }
    hlen = (size_t)(hend - (rc->buf + rc->off)) + 4;
    r = calloc(1, sizeof *r);
    if (r == NULL || (r->head = malloc(hlen + 1)) == NULL)
        goto out;
    memcpy(r->head, rc->buf + rc->off, hlen);
    r->head[hlen] = '\0';
    r->head_len = hlen;
    rc->off += hlen;
    rc->len -= hlen;

    /* Request line: METHOD SP TARGET SP VERSION. */
    const char *sp1 = memchr(r->head, ' ', hlen), *sp2, *eol = strstr(r->head, "\r\n");
    if (sp1 == NULL || sp1 > eol || (size_t)(sp1 - r->head) >= sizeof r->method)
        goto out;
    sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
    if (sp2 == NULL)
        goto out;
    memcpy(r->method, r->head, (size_t)(sp1 - r->head));
    r->target = strndup(sp1 + 1, (size_t)(sp2 - sp1 - 1));
    if (r->target == NULL)
        goto out;
    if (strncmp(sp2 + 1, "HTTP/1.0", 8) == 0)
        keep = 0;

    int ncl = head_field(r->head, hlen, "Content-Length", clval, sizeof clval);
    if (head_field(r->head, hlen, "Transfer-Encoding", val, sizeof val) > 0) {
        if (strcasestr(val, "chunked") == NULL)
            goto out;
        r->chunked = 1;
    } else if (ncl > 1) {
        goto out;
    } else if (ncl == 1) {
        char *e;
        if (clval[0] < '0' || clval[0] > '9')
            goto out;
        errno = 0;
        cl = strtoull(clval, &e, 10);
        if (*e != '\0' || errno != 0)
            goto out;
    }
    if (head_field(r->head, hlen, "Connection", val, sizeof val) > 0 &&
        strcasestr(val, "close") != NULL)
        keep = 0;
    /* Into the arrivals log (which owns it from now on). */
    pthread_mutex_lock(&u->mu);
    if (u->narr == u->caparr) {
        size_t ncap = u->caparr ? u->caparr * 2 : 64;
        struct rec **nv = realloc(u->arr, ncap * sizeof *nv);
        if (nv == NULL) {
            pthread_mutex_unlock(&u->mu);
            goto out;
        }
        u->arr = nv;
        u->caparr = ncap;
    }
    r->head_ns = r->last_ns = now_ns();
    r->conn = rc->slot->index;
    u->arr[u->narr++] = r;
    rc->cur = r;
    pthread_mutex_unlock(&u->mu);
    if (head_field(r->head, hlen, "Expect", val, sizeof val) > 0 &&
        strcasecmp(val, "100-continue") == 0 &&
        send_all(rc->fd, "HTTP/1.1 100 Continue\r\n\r\n", 25) != 0) {
        ret = 0;
        goto out;
    }

    pthread_mutex_lock(&u->mu);
    sink = u->sink;
    pthread_mutex_unlock(&u->mu);
    r->body_hash = TS_FNV_OFFSET;
    if (!sink && (r->body = malloc(TS_UPSTREAM_BODY_KEEP)) == NULL)
        goto out;
    if (r->chunked ? take_chunked(rc, r, sink) != 0 : take_body(rc, r, cl, sink) != 0)
        goto out; /* a short body is a framing problem, as is a bad chunk */
    r->conn = rc->slot->index;

    /* Fully received: publish, then hold and delay as told. */
    pthread_mutex_lock(&u->mu);
    if (u->nrecs == u->caprecs) {
        size_t ncap = u->caprecs ? u->caprecs * 2 : 64;
        struct rec **nv = realloc(u->recs, ncap * sizeof *nv);
        if (nv == NULL) {
            pthread_mutex_unlock(&u->mu);
            goto out;
        }
        u->recs = nv;
        u->caprecs = ncap;
    }
    r->recv_ns = now_ns();
    r->complete = 1;
    u->recs[u->nrecs++] = r;
    struct rec *mine = r;
    r = NULL;
    rc->cur = NULL;
    pthread_cond_broadcast(&u->cond);
    while (!u->stopping && held(u, mine))
        pthread_cond_wait(&u->cond, &u->mu);
    if (u->delay_ms > 0 && !u->stopping) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += u->delay_ms / 1000;
        dl.tv_nsec += (long)(u->delay_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        while (!u->stopping && pthread_cond_timedwait(&u->cond, &u->mu, &dl) == 0)
            ;
    }
    stop = u->stopping;
    resp_len = u->resp_len;
    resp = malloc(resp_len);
    if (resp != NULL)
        memcpy(resp, u->resp, resp_len);
    if (u->close_after)
        keep = 0;
    pthread_mutex_unlock(&u->mu);
    if (stop || resp == NULL) {
        pthread_mutex_lock(&u->mu);
        mine->end_ns = now_ns(); /* closed without a response */
        pthread_mutex_unlock(&u->mu);
        ret = 0;
        goto out;
    }

    const char *rhend = memmem(resp, resp_len, "\r\n\r\n", 4);
    if (rhend != NULL) {
        size_t rh = (size_t)(rhend - resp) + 4;
        char *copy = strndup(resp, rh);
        if (copy != NULL && head_field(copy, rh, "Connection", val, sizeof val) > 0 &&
            strcasestr(val, "close") != NULL)
            keep = 0;
        free(copy);
        if (strcmp(mine->method, "HEAD") == 0)
            resp_len = rh;
    }
    /* Stamped before the first byte leaves, so a peer that has read the
     * response always finds resp_ns set. */
    pthread_mutex_lock(&u->mu);
    mine->resp_ns = mine->end_ns = now_ns();
    pthread_cond_broadcast(&u->cond);
    pthread_mutex_unlock(&u->mu);
    if (send_all(rc->fd, resp, resp_len) != 0) {
        ret = 0;
        goto out;
    }
    ret = keep;
out:
    if (ret < 0) {
        pthread_mutex_lock(&u->mu);
        u->parse_errors++;
        pthread_mutex_unlock(&u->mu);
    }
    if (rc->cur != NULL) {
        /* Ended before it was fully received: nothing more of it comes. */
        pthread_mutex_lock(&u->mu);
        rc->cur->end_ns = now_ns();
        pthread_mutex_unlock(&u->mu);
        rc->cur = NULL;
        r = NULL; /* the arrivals log owns it */
    }
    rec_free(r);
    free(resp);
    return ret;
}

static void *conn_main(void *arg)
{
    struct slot *s = arg;
    struct ts_upstream *u = s->u;
    struct rconn rc = {.u = u, .slot = s, .fd = s->fd};

    rc.buf = malloc(RBUF_CAP);
    while (rc.buf != NULL && serve_one(&rc) == 1)
        ;
    free(rc.buf);
    pthread_mutex_lock(&u->mu);
    s->fd = -1; /* from here stop() no longer touches this descriptor */
    s->state = SLOT_DONE;
    pthread_mutex_unlock(&u->mu);
    shutdown(rc.fd, SHUT_RDWR);
    close(rc.fd);
    return NULL;
}

static void join_bounded(pthread_t th, const char *what)
{
    struct timespec dl;

    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += JOIN_LIMIT_S;
    if (pthread_timedjoin_np(th, NULL, &dl) != 0) {
        fprintf(stderr, "ts_upstream: %s thread did not stop within %d s\n", what,
                JOIN_LIMIT_S);
        abort(); /* a hung fixture must fail the test, not hang it */
    }
}

static void *listen_main(void *arg)
{
    struct ts_upstream *u = arg;
    struct pollfd pfd[2] = {{.fd = u->lfd, .events = POLLIN},
                            {.fd = u->wake[0], .events = POLLIN}};

    for (;;) {
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pfd[1].revents != 0)
            break;
        int fd = accept4(u->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        struct slot *s = NULL;
        pthread_mutex_lock(&u->mu);
        size_t index = u->nconns++;
        for (int i = 0; i < TS_UPSTREAM_MAX_CONNS && !u->stopping; i++) {
            if (u->slots[i].state == SLOT_DONE) {
                join_bounded(u->slots[i].th, "connection");
                u->slots[i].state = SLOT_FREE;
            }
            if (u->slots[i].state == SLOT_FREE) {
                s = &u->slots[i];
                break;
            }
        }
        if (s != NULL) {
            s->fd = fd;
            s->index = index;
            s->u = u;
            s->state = SLOT_RUNNING;
            if (pthread_create(&s->th, NULL, conn_main, s) != 0) {
                s->state = SLOT_FREE;
                s->fd = -1;
                s = NULL;
            }
        }
        pthread_mutex_unlock(&u->mu);
        if (s == NULL) {
            fprintf(stderr, "ts_upstream: connection %zu refused (limit or stopping)\n", index);
            close(fd);
        }
    }
    return NULL;
}

struct ts_upstream *ts_upstream_start(void)
{
    struct ts_upstream *u = calloc(1, sizeof *u);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    int ok = 0, mu_ok = 0, cond_ok = 0;

    if (u == NULL)
        goto out;
    u->lfd = -1;
    u->wake[0] = u->wake[1] = -1;
    for (int i = 0; i < TS_UPSTREAM_MAX_CONNS; i++)
        u->slots[i].fd = -1;
    mu_ok = pthread_mutex_init(&u->mu, NULL) == 0;
    cond_ok = pthread_cond_init(&u->cond, NULL) == 0;
    if (!mu_ok || !cond_ok || ts_upstream_set_response(u, default_resp) != 0)
        goto out;
    if (pipe2(u->wake, O_CLOEXEC) != 0)
        goto out;
    u->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (u->lfd < 0 || bind(u->lfd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(u->lfd, 512) != 0 || getsockname(u->lfd, (struct sockaddr *)&sa, &sl) != 0)
        goto out;
    u->port = ntohs(sa.sin_port);
    if (pthread_create(&u->listener, NULL, listen_main, u) != 0)
        goto out;
    ok = 1;
out:
    if (!ok) {
        fprintf(stderr, "ts_upstream: cannot start: %s\n", strerror(errno));
        if (u != NULL) {
            if (u->lfd >= 0)
                close(u->lfd);
            if (u->wake[0] >= 0) {
                close(u->wake[0]);
                close(u->wake[1]);
            }
            if (mu_ok)
                pthread_mutex_destroy(&u->mu);
            if (cond_ok)
                pthread_cond_destroy(&u->cond);
            free(u->resp);
            free(u);
        }
        u = NULL;
    }
    return u;
}

int ts_upstream_port(const struct ts_upstream *u)
{
    return u->port;
}

void ts_upstream_stop(struct ts_upstream **up)
{
    struct ts_upstream *u;
    ssize_t w;

    if (up == NULL || *up == NULL)
        return;
    u = *up;
    pthread_mutex_lock(&u->mu);
    u->stopping = 1;
    for (int i = 0; i < TS_UPSTREAM_MAX_CONNS; i++)
        if (u->slots[i].state == SLOT_RUNNING && u->slots[i].fd >= 0)
            shutdown(u->slots[i].fd, SHUT_RDWR);
    pthread_cond_broadcast(&u->cond);
    pthread_mutex_unlock(&u->mu);
    w = write(u->wake[1], "x", 1);
    (void)w;
    join_bounded(u->listener, "listener");
    /* The listener is gone: no slot changes from FREE any more. */
    for (int i = 0; i < TS_UPSTREAM_MAX_CONNS; i++)
        if (u->slots[i].state != SLOT_FREE)
            join_bounded(u->slots[i].th, "connection");
    close(u->lfd);
    close(u->wake[0]);
    close(u->wake[1]);
    for (size_t i = 0; i < u->narr; i++)
        rec_free(u->arr[i]);
    free(u->arr);
    free(u->recs);
    free(u->resp);
    pthread_cond_destroy(&u->cond);
    pthread_mutex_destroy(&u->mu);
    free(u);
    *up = NULL;
}

int ts_upstream_set_response(struct ts_upstream *u, const char *raw)
{
    size_t n = strlen(raw);
    char *copy = malloc(n > 0 ? n : 1);

    if (copy == NULL)
        return -1;
    memcpy(copy, raw, n);
    pthread_mutex_lock(&u->mu);
    free(u->resp);
    u->resp = copy;
    u->resp_len = n;
    pthread_mutex_unlock(&u->mu);
    return 0;
}

int ts_upstream_hold(struct ts_upstream *u, const char *substr)
{
    int rc = -1;

    if (substr == NULL || substr[0] == '\0' || strlen(substr) >= HOLD_LEN)
        return -1;
    pthread_mutex_lock(&u->mu);
    for (int i = 0; i < HOLDS_MAX; i++) {
        if (u->holds[i][0] == '\0') {
            memcpy(u->holds[i], substr, strlen(substr) + 1);
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&u->mu);
    return rc;
}

void ts_upstream_release(struct ts_upstream *u, const char *substr)
{
    pthread_mutex_lock(&u->mu);
    for (int i = 0; i < HOLDS_MAX; i++)
        if (strcmp(u->holds[i], substr) == 0)
            u->holds[i][0] = '\0';
    pthread_cond_broadcast(&u->cond);
    pthread_mutex_unlock(&u->mu);
}

void ts_upstream_set_delay_ms(struct ts_upstream *u, int ms)
{
    pthread_mutex_lock(&u->mu);
    u->delay_ms = ms > 0 ? ms : 0;
    pthread_mutex_unlock(&u->mu);
}

void ts_upstream_set_close_after_response(struct ts_upstream *u, int on)
{
    pthread_mutex_lock(&u->mu);
    u->close_after = on != 0;
    pthread_mutex_unlock(&u->mu);
}

void ts_upstream_set_sink(struct ts_upstream *u, int on)
{
    pthread_mutex_lock(&u->mu);
    u->sink = on != 0;
    pthread_mutex_unlock(&u->mu);
}

size_t ts_upstream_count(struct ts_upstream *u)
{
    pthread_mutex_lock(&u->mu);
    size_t n = u->nrecs;
    pthread_mutex_unlock(&u->mu);
    return n;
}

size_t ts_upstream_connections(struct ts_upstream *u)
{
    pthread_mutex_lock(&u->mu);
    size_t n = u->nconns;
    pthread_mutex_unlock(&u->mu);
    return n;
}

uint64_t ts_upstream_bytes(struct ts_upstream *u)
{
    pthread_mutex_lock(&u->mu);
    uint64_t n = u->bytes;
    pthread_mutex_unlock(&u->mu);
    return n;
}

size_t ts_upstream_parse_errors(struct ts_upstream *u)
{
    pthread_mutex_lock(&u->mu);
    size_t n = u->parse_errors;
    pthread_mutex_unlock(&u->mu);
    return n;
}

int ts_upstream_wait_count(struct ts_upstream *u, size_t n, int timeout_ms)
{
    struct timespec dl;
    int rc = 0;

    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&u->mu);
    while (u->nrecs < n && rc == 0)
        rc = pthread_cond_timedwait(&u->cond, &u->mu, &dl);
    rc = u->nrecs >= n ? 0 : -1;
    pthread_mutex_unlock(&u->mu);
    return rc;
}

int ts_upstream_get(struct ts_upstream *u, size_t i, struct ts_upstream_req *out)
{
    int rc = -1;

    pthread_mutex_lock(&u->mu);
    if (i < u->nrecs) {
        const struct rec *r = u->recs[i];
        memset(out, 0, sizeof *out);
        snprintf(out->method, sizeof out->method, "%s", r->method);
        snprintf(out->target, sizeof out->target, "%s", r->target);
        out->head_len = r->head_len < TS_UPSTREAM_HEAD_MAX ? r->head_len : TS_UPSTREAM_HEAD_MAX;
        memcpy(out->head, r->head, out->head_len);
        out->head[out->head_len] = '\0';
        out->body_len = r->body_len;
        out->body_hash = r->body_hash;
        out->body_kept = r->body_kept;
        if (r->body_kept > 0)
            memcpy(out->body, r->body, r->body_kept);
        out->chunked = r->chunked;
        out->conn = r->conn;
        out->recv_ns = r->recv_ns;
        out->resp_ns = r->resp_ns;
        rc = 0;
    }
    pthread_mutex_unlock(&u->mu);
    return rc;
}

size_t ts_upstream_arrivals(struct ts_upstream *u)
{
    pthread_mutex_lock(&u->mu);
    size_t n = u->narr;
    pthread_mutex_unlock(&u->mu);
    return n;
}

/* Copies rec r into out (mu held). */
static void arrival_copy(const struct rec *r, const char *field, struct ts_upstream_arrival *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->method, sizeof out->method, "%s", r->method);
    snprintf(out->target, sizeof out->target, "%s", r->target != NULL ? r->target : "");
    if (field != NULL)
        head_field(r->head, r->head_len, field, out->field, sizeof out->field);
    out->head_ns = r->head_ns;
    out->last_ns = r->last_ns;
    out->done_ns = r->complete ? r->recv_ns : 0;
    out->resp_ns = r->resp_ns;
    out->end_ns = r->end_ns;
    out->body_got = r->got;
    out->conn = r->conn;
    out->complete = r->complete;
    if (r->complete && r->body != NULL) {
        /* Its body is no longer written once it is complete. */
        out->body_kept = r->body_kept < sizeof out->body ? r->body_kept : sizeof out->body;
        memcpy(out->body, r->body, out->body_kept);
    }
}

int ts_upstream_arrival(struct ts_upstream *u, size_t i, const char *field,
                        struct ts_upstream_arrival *out)
{
    int rc = -1;

    pthread_mutex_lock(&u->mu);
    if (i < u->narr) {
        arrival_copy(u->arr[i], field, out);
        rc = 0;
    }
    pthread_mutex_unlock(&u->mu);
    return rc;
}

uint64_t ts_upstream_inflight_end(const struct ts_upstream_arrival *a)
{
    if (a->complete)
        return a->resp_ns != 0 ? a->resp_ns : a->end_ns != 0 ? a->end_ns : UINT64_MAX;
    return a->end_ns != 0 ? a->last_ns : UINT64_MAX;
}

size_t ts_upstream_overlaps(struct ts_upstream *u, const char *field, const char *prefix, char *why,
                            size_t whylen)
{
    struct ts_upstream_arrival *v = NULL;
    size_t n, found = 0, plen = prefix != NULL ? strlen(prefix) : 0;

    if (why != NULL && whylen > 0)
        why[0] = '\0';
    pthread_mutex_lock(&u->mu);
    n = u->narr;
    v = n > 0 ? calloc(n, sizeof *v) : NULL;
    for (size_t i = 0; v != NULL && i < n; i++)
        arrival_copy(u->arr[i], field, &v[i]);
    pthread_mutex_unlock(&u->mu);
    if (n > 0 && v == NULL) {
        if (why != NULL)
            snprintf(why, whylen, "out of memory");
        return (size_t)-1;
    }
    for (size_t i = 0; i < n; i++) {
        if (plen > 0 && strncmp(v[i].target, prefix, plen) != 0)
            continue;
        for (size_t j = i + 1; j < n; j++) {
            if ((plen > 0 && strncmp(v[j].target, prefix, plen) != 0) ||
                strcmp(v[i].field, v[j].field) == 0)
                continue;
            /* Arrivals are in head order: j began after i; they overlap
             * when j's head came before i ended. */
            if (v[j].head_ns < ts_upstream_inflight_end(&v[i])) {
                if (found == 0 && why != NULL) {
                    uint64_t end = ts_upstream_inflight_end(&v[i]), t0 = v[0].head_ns;
                    snprintf(why, whylen,
                             "request %zu (%s \"%s\", %s, head at +%.1f ms) in flight until "
                             "%s%.1f ms, request %zu (\"%s\") began at +%.1f ms",
                             i, field != NULL ? field : "field", v[i].field,
                             v[i].complete ? "complete" : "cut off",
                             (double)(v[i].head_ns - t0) / 1e6, end == UINT64_MAX ? "now, +" : "+",
                             (double)((end == UINT64_MAX ? v[n - 1].last_ns : end) - t0) / 1e6, j,
                             v[j].field, (double)(v[j].head_ns - t0) / 1e6);
                }
                found++;
            }
        }
    }
    free(v);
    return found;
}

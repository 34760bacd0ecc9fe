/* fl_inject: a forward HTTP/1.1 proxy that adds the lease's Fencing-Token to
 * every request (see fl_inject.h). Owns its listener, the accept thread and
 * one thread per client connection with that connection's two sockets and
 * two fixed buffers, so memory is bounded by FL_INJECT_MAX_CONNS times about
 * 200 KiB whatever the bodies are. Bodies are relayed as they come, in their
 * own framing (chunked is passed through chunk by chunk, trailers included),
 * never stored whole. All sockets are non-blocking and every wait is a poll()
 * of at most SLICE_MS that also looks at the stop flag (and, while a request
 * body streams, at the lock), so every loop is bounded in time; the byte
 * loops are bounded by the framing they follow.
 *
 * What it does to a request: an absolute-form target (http://host[:port]/p)
 * is sent to host:port as origin-form /p; Fencing-Token fields are dropped
 * and one `Fencing-Token: T` is added; Proxy-Connection, Proxy-Authorization
 * and Keep-Alive are dropped; a Host field is added when the client sent
 * none. Everything else, and the response, passes through byte for byte. */
#include "fl_inject.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>

#define SLICE_MS       200
#define IDLE_MS        60000  /* a keep-alive client may stay quiet this long */
#define IO_MS          120000 /* longest wait for a byte once a request is under way */
#define CONNECT_MS     10000
#define EXPECT_MS      1000   /* how long a 100-continue waits for the upstream (as curl) */
#define LINGER_MS      1000
#define BUF_SIZE       65536  /* per direction; also the longest head accepted */
#define LINE_MAX_      4096   /* chunk-size and trailer lines */
#define MAX_1XX        32     /* interim responses relayed before a final one */
#define AUTH_MAX       256

enum io { IO_OK = 0, IO_ERR = -1, IO_EARLY = -2, IO_LOST = -3 };

/* One side's receive buffer: bytes [off, len) are read but not consumed. */
struct rd {
    int fd;
    size_t off, len;
    int eof;
    char buf[BUF_SIZE];
};

struct slot {
    pthread_t th;
    int used;         /* a thread was started and not yet joined */
    atomic_int done;  /* the thread has finished */
    int fd;           /* client socket, owned by the thread */
    struct fl_inject *inj;
};

struct fl_inject {
    int lfd;
    int port;
    uint64_t token;
    char *name;
    fl_inject_lost_fn lost;
    void *arg;
    atomic_int stop;
    pthread_t accept_th;
    int accept_started;
    struct slot slots[FL_INJECT_MAX_CONNS];
};

/* Per connection state; heap-allocated by the connection's thread. */
struct conn {
    struct fl_inject *inj;
    struct rd c;                 /* client */
    struct rd u;                 /* upstream; u.fd -1 when not connected */
    char authority[AUTH_MAX];    /* of the open upstream connection */
    char out[BUF_SIZE + 512];    /* the request head as sent upstream */
};

/* What one request head says. Pointers into the client buffer. */
struct req {
    const char *method;
    size_t method_len;
    char authority[AUTH_MAX];
    const char *path; /* origin-form target */
    size_t path_len;
    int head;         /* HEAD: the response has no body */
    int chunked;
    int has_len;
    uint64_t len;
    int expect;       /* Expect: 100-continue */
    int close;        /* the client said it closes after this exchange */
};

static int is_lost(struct fl_inject *inj)
{
    return inj->lost != NULL && inj->lost(inj->arg) != 0;
}

/* Waits until fd is ready for ev (and, if watch >= 0, for watch readable:
 * IO_EARLY), at most timeout_ms, in slices that look at the stop flag and,
 * with check_lost, at the lock. Returns IO_OK, IO_EARLY, IO_LOST or IO_ERR
 * (timeout, stop, poll error). */
static int wait_io(struct fl_inject *inj, int fd, short ev, int watch, int check_lost,
                   int timeout_ms)
{
    int waited = 0;

    while (waited < timeout_ms) {
        struct pollfd p[2] = {{.fd = fd, .events = ev}, {.fd = watch, .events = POLLIN}};
        int n, slice = timeout_ms - waited < SLICE_MS ? timeout_ms - waited : SLICE_MS;

        if (atomic_load(&inj->stop))
            return IO_ERR;
        if (check_lost && is_lost(inj))
            return IO_LOST;
        n = poll(p, watch >= 0 ? 2 : 1, slice);
        if (n < 0 && errno != EINTR)
            return IO_ERR;
        if (n > 0 && watch >= 0 && p[1].revents)
            return IO_EARLY;
        if (n > 0 && p[0].revents)
            return IO_OK;
        waited += slice;
    }
    return IO_ERR;
}

static int send_all(struct fl_inject *inj, int fd, const char *b, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);

        if (w > 0) {
            b += w;
            n -= (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_io(inj, fd, POLLOUT, -1, 0, IO_MS) != IO_OK)
                return IO_ERR;
        } else {
            return IO_ERR;
        }
    }
    return IO_OK;
}

/* Reads more into r (compacting first). Returns IO_OK (something read or
 * EOF: r->eof set), IO_ERR when the buffer is full or on error/timeout, or
 * what wait_io returned. */
static int rd_fill(struct fl_inject *inj, struct rd *r, int watch, int check_lost, int timeout_ms)
{
    int rc;

    if (r->off > 0) {
        memmove(r->buf, r->buf + r->off, r->len - r->off);
        r->len -= r->off;
        r->off = 0;
    }
    if (r->len == sizeof r->buf || r->eof)
        return IO_ERR;
    for (;;) {
        ssize_t n = recv(r->fd, r->buf + r->len, sizeof r->buf - r->len, 0);

        if (n > 0) {
            r->len += (size_t)n;
            return IO_OK;
        }
        if (n == 0) {
            r->eof = 1;
            return IO_OK;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return IO_ERR;
        if ((rc = wait_io(inj, r->fd, POLLIN, watch, check_lost, timeout_ms)) != IO_OK)
            return rc;
    }
}

/* Finds the end of a head ("\r\n\r\n") in r, reading as needed; one empty
 * line before a request line is skipped (RFC 9112 2.2). *hlen gets the head's
 * length from r->off. IO_OK, IO_ERR (also EOF: *hlen 0 when nothing came). */
static int read_head(struct fl_inject *inj, struct rd *r, int timeout_ms, size_t *hlen)
{
    *hlen = 0;
    for (int i = 0; i < BUF_SIZE + 16; i++) {
        char *s = r->buf + r->off, *e;
        size_t have = r->len - r->off;

        if (have >= 2 && s[0] == '\r' && s[1] == '\n') {
            r->off += 2;
            continue;
        }
        if ((e = memmem(s, have, "\r\n\r\n", 4)) != NULL) {
            *hlen = (size_t)(e - s) + 4;
            return IO_OK;
        }
        if (r->eof || rd_fill(inj, r, -1, 0, timeout_ms) != IO_OK || (r->eof && r->len == r->off))
            return IO_ERR;
    }
    return IO_ERR;
}

/* Reads one line (up to and including LF) into r's buffer; *llen its length
 * from r->off. IO_OK or an error. */
static int read_line(struct fl_inject *inj, struct rd *r, int watch, int check_lost, size_t *llen)
{
    for (int i = 0; i < LINE_MAX_; i++) {
        char *s = r->buf + r->off, *e;
        size_t have = r->len - r->off;
        int rc;

        if ((e = memchr(s, '\n', have)) != NULL) {
            *llen = (size_t)(e - s) + 1;
            return IO_OK;
        }
        if (have > LINE_MAX_ || r->eof)
            return IO_ERR;
        if ((rc = rd_fill(inj, r, watch, check_lost, IO_MS)) != IO_OK)
            return rc;
    }
    return IO_ERR;
}

/* Copies n bytes from r (buffered first) to fd. */
static int relay_len(struct fl_inject *inj, struct rd *r, int fd, uint64_t n, int watch,
                     int check_lost)
{
    while (n > 0) {
        size_t have = r->len - r->off, k;
        int rc;

        if (have == 0) {
            if ((rc = rd_fill(inj, r, watch, check_lost, IO_MS)) != IO_OK)
                return rc;
            if (r->eof && r->len == r->off)
                return IO_ERR;
            continue;
        }
        k = have < n ? have : (size_t)n;
        if (send_all(inj, fd, r->buf + r->off, k) != IO_OK)
            return IO_ERR;
        r->off += k;
        n -= k;
        if (check_lost && is_lost(inj))
            return IO_LOST;
    }
    return IO_OK;
}

/* Passes a chunked body through as it is (sizes, extensions, data, trailer
 * section), checking its framing as it goes so that it knows where it ends. */
static int relay_chunked(struct fl_inject *inj, struct rd *r, int fd, int watch, int check_lost)
{
    for (;;) {
        uint64_t size = 0;
        size_t llen, i, digits = 0;
        int rc;

        if ((rc = read_line(inj, r, watch, check_lost, &llen)) != IO_OK)
            return rc;
        for (i = 0; i < llen; i++) {
            char ch = r->buf[r->off + i];
            int v = ch >= '0' && ch <= '9'   ? ch - '0'
                    : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                    : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                             : -1;
            if (v < 0)
                break;
            if (++digits > 15)
                return IO_ERR;
            size = size * 16 + (uint64_t)v;
        }
        if (digits == 0)
            return IO_ERR;
        if (send_all(inj, fd, r->buf + r->off, llen) != IO_OK)
            return IO_ERR;
        r->off += llen;
        if (size == 0)
            break;
        if ((rc = relay_len(inj, r, fd, size, watch, check_lost)) != IO_OK)
            return rc;
        if ((rc = read_line(inj, r, watch, check_lost, &llen)) != IO_OK)
            return rc;
        if (llen != 2 || r->buf[r->off] != '\r')
            return IO_ERR;
        if (send_all(inj, fd, "\r\n", 2) != IO_OK)
            return IO_ERR;
        r->off += 2;
    }
    /* Trailer section: fields until an empty line, bounded by the head size. */
    for (size_t total = 0; total < BUF_SIZE;) {
        size_t llen;
        int rc;

        if ((rc = read_line(inj, r, watch, check_lost, &llen)) != IO_OK)
            return rc;
        if (send_all(inj, fd, r->buf + r->off, llen) != IO_OK)
            return IO_ERR;
        r->off += llen;
        total += llen;
        if (llen <= 2)
            return IO_OK;
    }
    return IO_ERR;
}

/* Copies everything from r to fd until r's peer closes (bounded by IO_MS
 * between reads). */
static int relay_to_close(struct fl_inject *inj, struct rd *r, int fd)
{
    for (;;) {
        size_t have = r->len - r->off;

        if (have > 0) {
            if (send_all(inj, fd, r->buf + r->off, have) != IO_OK)
                return IO_ERR;
            r->off += have;
        }
        if (r->eof)
            return IO_OK;
        if (rd_fill(inj, r, -1, 0, IO_MS) != IO_OK)
            return IO_ERR;
    }
}

/* Answers with the injector's own plain-text refusal. */
static void answer(struct conn *cn, int status, const char *reason, const char *msg)
{
    char b[2048];
    int n = snprintf(b, sizeof b,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\nfencelock --http-proxy: %s\n",
                     status, reason, strlen(msg) + 25, msg);

    if (n > 0 && (size_t)n < sizeof b)
        send_all(cn->inj, cn->c.fd, b, (size_t)n);
}

/* Closes fd after the peer has had a chance to read what was sent: shuts
 * the write side, then drains the peer's input for a short while, so unread
 * request bytes do not turn the close into a reset that destroys the answer. */
static void linger_close(int fd)
{
    char junk[4096];
    int waited = 0;

    shutdown(fd, SHUT_WR);
    while (waited < LINGER_MS) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t n;

        if (poll(&p, 1, 100) > 0) {
            n = recv(fd, junk, sizeof junk, 0);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                break;
        }
        waited += 100;
    }
    close(fd);
}

static int field_is(const char *name, size_t nlen, const char *want)
{
    return nlen == strlen(want) && strncasecmp(name, want, nlen) == 0;
}

/* Whether the comma-separated list v (vlen bytes) has token tok. */
static int list_has(const char *v, size_t vlen, const char *tok)
{
    size_t tl = strlen(tok);

    for (size_t i = 0; i < vlen;) {
        size_t j = i, s, e;

        while (j < vlen && v[j] != ',')
            j++;
        s = i;
        e = j;
        while (s < e && (v[s] == ' ' || v[s] == '\t'))
            s++;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
            return 1;
        i = j + 1;
    }
    return 0;
}

/* The last transfer coding in v is chunked. */
static int ends_chunked(const char *v, size_t vlen)
{
    while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
        vlen--;
    return vlen >= 7 && strncasecmp(v + vlen - 7, "chunked", 7) == 0 &&
           (vlen == 7 || v[vlen - 8] == ',' || v[vlen - 8] == ' ' || v[vlen - 8] == '\t');
}

static int parse_u64(const char *v, size_t n, uint64_t *out)
{
    uint64_t x = 0;

    if (n == 0 || n > 18)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    *out = x;
    return 0;
}

/* Walks the fields of the head h (hlen bytes, starting after the start line
 * at h + start). For each field calls back with name and trimmed value.
 * Returns 0, or -1 on a malformed line (obs-fold, no colon, space before
 * the colon, bare LF). */
typedef int (*field_fn)(void *ctx, const char *line, size_t llen, const char *name, size_t nlen,
                        const char *val, size_t vlen);

static int walk_fields(const char *h, size_t hlen, size_t start, field_fn fn, void *ctx)
{
    size_t i = start;

    while (i + 2 <= hlen) {
        const char *line = h + i, *eol = memmem(line, hlen - i, "\r\n", 2), *colon;
        size_t llen, nlen, vs, ve;

        if (eol == NULL)
            return -1;
        llen = (size_t)(eol - line);
        if (llen == 0)
            return 0; /* the final empty line */
        if (line[0] == ' ' || line[0] == '\t' || memchr(line, '\n', llen) != NULL)
            return -1;
        colon = memchr(line, ':', llen);
        if (colon == NULL || colon == line || colon[-1] == ' ' || colon[-1] == '\t')
            return -1;
        nlen = (size_t)(colon - line);
        vs = nlen + 1;
        ve = llen;
        while (vs < ve && (line[vs] == ' ' || line[vs] == '\t'))
            vs++;
        while (ve > vs && (line[ve - 1] == ' ' || line[ve - 1] == '\t'))
            ve--;
        if (fn(ctx, line, llen + 2, line, nlen, line + vs, ve - vs) < 0)
            return -1;
        i += llen + 2;
    }
    return -1;
}

struct req_walk {
    struct conn *cn;
    struct req *rq;
    size_t olen;   /* bytes of cn->out used */
    int has_host;
    int has_te;
};

static int out_add(struct req_walk *w, const char *b, size_t n)
{
    if (w->olen + n > sizeof w->cn->out)
        return -1;
    memcpy(w->cn->out + w->olen, b, n);
    w->olen += n;
    return 0;
}

static int req_field(void *ctx, const char *line, size_t llen, const char *name, size_t nlen,
                     const char *val, size_t vlen)
{
    struct req_walk *w = ctx;
    struct req *rq = w->rq;

    if (field_is(name, nlen, "fencing-token") || field_is(name, nlen, "proxy-connection") ||
        field_is(name, nlen, "proxy-authorization") || field_is(name, nlen, "keep-alive")) {
        if (field_is(name, nlen, "proxy-connection") && list_has(val, vlen, "close"))
            rq->close = 1;
        return 0;
    }
    if (field_is(name, nlen, "host"))
        w->has_host = 1;
    if (field_is(name, nlen, "content-length")) {
        uint64_t v;

        if (parse_u64(val, vlen, &v) < 0 || (rq->has_len && v != rq->len))
            return -1;
        rq->has_len = 1;
        rq->len = v;
    }
    if (field_is(name, nlen, "transfer-encoding")) {
        w->has_te = 1;
        rq->chunked = ends_chunked(val, vlen);
    }
    if (field_is(name, nlen, "expect") && vlen == 12 && strncasecmp(val, "100-continue", 12) == 0)
        rq->expect = 1;
    if (field_is(name, nlen, "connection") && list_has(val, vlen, "close"))
        rq->close = 1;
    return out_add(w, line, llen);
}

/* Parses the request head (hlen bytes at cn->c.buf + cn->c.off) and builds
 * the head to send in cn->out. Returns its length, or -1 with the refusal
 * already sent (status in *status for the caller's log). */
static long build_request(struct conn *cn, size_t hlen, struct req *rq)
{
    const char *h = cn->c.buf + cn->c.off, *sp1, *sp2, *eol, *t, *auth_end;
    struct req_walk w = {.cn = cn, .rq = rq};
    size_t tlen, alen, start;
    char tok[64];
    int n;

    memset(rq, 0, sizeof *rq);
    eol = memmem(h, hlen, "\r\n", 2);
    sp1 = eol ? memchr(h, ' ', (size_t)(eol - h)) : NULL;
    sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (sp2 == NULL || sp1 == h || (size_t)(eol - sp2 - 1) != 8 || strncmp(sp2 + 1, "HTTP/1.", 7)) {
        answer(cn, 400, "Bad Request", "malformed request line");
        return -1;
    }
    rq->method = h;
    rq->method_len = (size_t)(sp1 - h);
    rq->head = rq->method_len == 4 && memcmp(h, "HEAD", 4) == 0;
    if (sp2[8] == '0')
        rq->close = 1; /* HTTP/1.0: no keep-alive promised */
    t = sp1 + 1;
    tlen = (size_t)(sp2 - t);
    if (rq->method_len == 7 && memcmp(h, "CONNECT", 7) == 0) {
        answer(cn, 501, "Not Implemented",
               "CONNECT (HTTPS) refused: a Fencing-Token cannot be added inside TLS; "
               "use an http:// endpoint");
        return -1;
    }
    if (tlen >= 8 && strncasecmp(t, "https://", 8) == 0) {
        answer(cn, 501, "Not Implemented",
               "https:// refused: a Fencing-Token cannot be added inside TLS");
        return -1;
    }
    if (tlen < 8 || strncasecmp(t, "http://", 7) != 0) {
        answer(cn, 400, "Bad Request",
               "a forward proxy needs an absolute-form target (http://host/path)");
        return -1;
    }
    t += 7;
    tlen -= 7;
    auth_end = t;
    while (auth_end < t + tlen && *auth_end != '/' && *auth_end != '?' && *auth_end != '#')
        auth_end++;
    alen = (size_t)(auth_end - t);
    if (alen == 0 || alen >= AUTH_MAX || memchr(t, '@', alen) != NULL) {
        answer(cn, 400, "Bad Request", "bad authority in the target");
        return -1;
    }
    memcpy(rq->authority, t, alen);
    rq->authority[alen] = '\0';
    rq->path = auth_end;
    rq->path_len = tlen - alen;
    /* The request line, origin-form ("/" when the target had no path). */
    if (out_add(&w, h, rq->method_len + 1) < 0 ||
        (rq->path_len == 0 || rq->path[0] != '/' ? out_add(&w, "/", 1) : 0) < 0 ||
        out_add(&w, rq->path, rq->path_len) < 0 || out_add(&w, sp2, 11) < 0)
        goto too_big;
    start = (size_t)(eol - h) + 2;
    if (walk_fields(h, hlen, start, req_field, &w) < 0 || (w.has_te && rq->has_len) ||
        (w.has_te && !rq->chunked)) {
        answer(cn, 400, "Bad Request", "malformed or ambiguous header fields");
        return -1;
    }
    if (!w.has_host && (out_add(&w, "Host: ", 6) < 0 || out_add(&w, rq->authority, alen) < 0 ||
                        out_add(&w, "\r\n", 2) < 0))
        goto too_big;
    n = snprintf(tok, sizeof tok, "Fencing-Token: %" PRIu64 "\r\n\r\n", cn->inj->token);
    if (out_add(&w, tok, (size_t)n) < 0)
        goto too_big;
    return (long)w.olen;
too_big:
    answer(cn, 431, "Request Header Fields Too Large", "request head too large");
    return -1;
}

static void upstream_close(struct conn *cn)
{
    if (cn->u.fd >= 0)
        close(cn->u.fd);
    cn->u.fd = -1;
    cn->u.off = cn->u.len = 0;
    cn->u.eof = 0;
    cn->authority[0] = '\0';
}

/* Connects to authority ("host[:port]" or "[v6]:port"), non-blocking, trying
 * each address for at most CONNECT_MS. 0 / -1. */
static int upstream_connect(struct conn *cn, const char *authority)
{
    char host[AUTH_MAX], port[8] = "80";
    const char *colon;
    struct addrinfo hints, *res = NULL, *ai;
    int fd = -1, one = 1;

    if (authority[0] == '[') {
        const char *rb = strchr(authority, ']');

        if (rb == NULL || (size_t)(rb - authority - 1) >= sizeof host)
            return -1;
        memcpy(host, authority + 1, (size_t)(rb - authority - 1));
        host[rb - authority - 1] = '\0';
        colon = rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = strrchr(authority, ':');
        size_t hl = colon ? (size_t)(colon - authority) : strlen(authority);

        if (hl >= sizeof host)
            return -1;
        memcpy(host, authority, hl);
        host[hl] = '\0';
    }
    if (colon != NULL) {
        if (strlen(colon + 1) == 0 || strlen(colon + 1) >= sizeof port)
            return -1;
        strcpy(port, colon + 1);
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return -1;
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        int err = 0;
        socklen_t el = sizeof err;

        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ||
            (errno == EINPROGRESS && wait_io(cn->inj, fd, POLLOUT, -1, 0, CONNECT_MS) == IO_OK &&
             getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0))
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return -1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    cn->u.fd = fd;
    cn->u.off = cn->u.len = 0;
    cn->u.eof = 0;
    snprintf(cn->authority, sizeof cn->authority, "%s", authority);
    return 0;
}

/* Whether an idle upstream connection is still usable: nothing to read
 * (no close, no stray bytes). */
static int upstream_idle_ok(struct conn *cn)
{
    struct pollfd p = {.fd = cn->u.fd, .events = POLLIN};

    return poll(&p, 1, 0) == 0;
}

struct resp {
    int status;
    int chunked;
    int has_len;
    uint64_t len;
    int close;
};

static int resp_field(void *ctx, const char *line, size_t llen, const char *name, size_t nlen,
                      const char *val, size_t vlen)
{
    struct resp *rs = ctx;

    (void)line;
    (void)llen;
    if (field_is(name, nlen, "content-length")) {
        uint64_t v;

        if (parse_u64(val, vlen, &v) < 0 || (rs->has_len && v != rs->len))
            return -1;
        rs->has_len = 1;
        rs->len = v;
    } else if (field_is(name, nlen, "transfer-encoding")) {
        rs->chunked = ends_chunked(val, vlen) ? 1 : -1; /* -1: until close */
    } else if (field_is(name, nlen, "connection") && list_has(val, vlen, "close")) {
        rs->close = 1;
    }
    return 0;
}

/* Reads one response head from the upstream, relays it to the client and
 * parses it into *rs. first_ms bounds the wait for its first byte. */
static int relay_resp_head(struct conn *cn, struct resp *rs, int first_ms)
{
    size_t hlen;
    const char *h;

    memset(rs, 0, sizeof *rs);
    if (cn->u.len == cn->u.off && !cn->u.eof &&
        wait_io(cn->inj, cn->u.fd, POLLIN, -1, 0, first_ms) != IO_OK)
        return IO_ERR;
    if (read_head(cn->inj, &cn->u, IO_MS, &hlen) != IO_OK)
        return IO_ERR;
    h = cn->u.buf + cn->u.off;
    if (hlen < 16 || strncmp(h, "HTTP/1.", 7) != 0 || h[8] != ' ' || h[9] < '1' || h[9] > '5' ||
        h[10] < '0' || h[10] > '9' || h[11] < '0' || h[11] > '9')
        return IO_ERR;
    rs->status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
    if (h[7] == '0')
        rs->close = 1;
    if (walk_fields(h, hlen, (size_t)((char *)memmem(h, hlen, "\r\n", 2) - h) + 2, resp_field,
                    rs) < 0 ||
        (rs->chunked && rs->has_len))
        return IO_ERR;
    if (send_all(cn->inj, cn->c.fd, h, hlen) != IO_OK)
        return IO_ERR;
    cn->u.off += hlen;
    return IO_OK;
}

/* Relays the upstream's answer to the request rq: interim 1xx responses,
 * then the final head and its body. Sets *close when the client connection
 * must close afterwards. expect_wait: the request body is still held back
 * for a 100-continue (returns after a 100 with *got_100 set). */
static int relay_response(struct conn *cn, const struct req *rq, int expect_wait, int *got_100,
                          int *close_after)
{
    struct resp rs;
    int rc;

    for (int i = 0; i < MAX_1XX; i++) {
        if (relay_resp_head(cn, &rs, expect_wait ? EXPECT_MS : IO_MS) != IO_OK)
            return expect_wait && cn->u.len == cn->u.off && !cn->u.eof ? IO_EARLY : IO_ERR;
        if (rs.status == 101)
            return IO_ERR; /* no upgrades through the injector */
        if (rs.status >= 200)
            break;
        if (rs.status == 100 && expect_wait) {
            *got_100 = 1;
            return IO_OK;
        }
    }
    if (rs.status < 200)
        return IO_ERR;
    if (rs.close)
        *close_after = 1;
    if (rq->head || rs.status == 204 || rs.status == 304)
        return IO_OK;
    if (rs.chunked == 1)
        rc = relay_chunked(cn->inj, &cn->u, cn->c.fd, -1, 0);
    else if (rs.has_len)
        rc = relay_len(cn->inj, &cn->u, cn->c.fd, rs.len, -1, 0);
    else {
        *close_after = 1;
        rc = relay_to_close(cn->inj, &cn->u, cn->c.fd);
    }
    return rc;
}

/* Serves one request whose head (hlen bytes) is in the client buffer.
 * Returns 0 to keep the connection for the next request, -1 to close it
 * (linger_close when *polite). */
static int serve_one(struct conn *cn, size_t hlen, int *polite)
{
    struct req rq;
    long olen;
    int got_100 = 0, close_after = 0, rc, reused = 0;

    *polite = 1;
    if (is_lost(cn->inj)) {
        /* Checked before anything goes upstream: a lost lock forwards nothing. */
        char m[512];

        snprintf(m, sizeof m, "lock '%.200s' is lost; request not forwarded", cn->inj->name);
        answer(cn, 503, "Service Unavailable", m);
        return -1;
    }
    if ((olen = build_request(cn, hlen, &rq)) < 0)
        return -1;
    cn->c.off += hlen;
    if (cn->u.fd >= 0 && (strcasecmp(cn->authority, rq.authority) != 0 || !upstream_idle_ok(cn)))
        upstream_close(cn);
    reused = cn->u.fd >= 0;
    if (cn->u.fd < 0 && upstream_connect(cn, rq.authority) < 0) {
        answer(cn, 502, "Bad Gateway", "cannot connect to the target");
        return -1;
    }
    if (send_all(cn->inj, cn->u.fd, cn->out, (size_t)olen) != IO_OK) {
        if (!reused || upstream_connect(cn, rq.authority) < 0 ||
            send_all(cn->inj, cn->u.fd, cn->out, (size_t)olen) != IO_OK) {
            answer(cn, 502, "Bad Gateway", "cannot send to the target");
            return -1;
        }
    }
    if (rq.chunked || (rq.has_len && rq.len > 0)) {
        if (rq.expect) {
            rc = relay_response(cn, &rq, 1, &got_100, &close_after);
            if (rc == IO_OK && !got_100) {
                /* A final answer before the body (S4 of the store: it refused
                 * early): the body is never sent, both connections close. */
                upstream_close(cn);
                return -1;
            }
            if (rc == IO_ERR) {
                *polite = 0;
                return -1;
            }
        }
        /* The body streams up while the upstream is watched: if it answers
         * early, the answer is relayed and the connection closes after. */
        rc = rq.chunked ? relay_chunked(cn->inj, &cn->c, cn->u.fd, cn->u.fd, 1)
                        : relay_len(cn->inj, &cn->c, cn->u.fd, rq.len, cn->u.fd, 1);
        if (rc == IO_LOST) {
            /* The upstream sees a cut body (no final chunk or short length)
             * and discards it. */
            *polite = 0;
            return -1;
        }
        if (rc == IO_EARLY) {
            close_after = 1;
        } else if (rc != IO_OK) {
            /* The upstream may have answered and closed while the body was
             * still coming: relay that answer if it can be read. */
            if (cn->u.fd < 0 || relay_response(cn, &rq, 0, &got_100, &close_after) != IO_OK)
                *polite = 0;
            upstream_close(cn);
            return -1;
        }
    }
    rc = relay_response(cn, &rq, 0, &got_100, &close_after);
    if (rc != IO_OK) {
        *polite = 0;
        return -1;
    }
    if (close_after)
        upstream_close(cn);
    return close_after || rq.close ? -1 : 0;
}

static void *conn_main(void *arg)
{
    struct slot *sl = arg;
    struct conn *cn = calloc(1, sizeof *cn);
    int polite = 1;

    if (cn == NULL)
        goto out;
    cn->inj = sl->inj;
    cn->c.fd = sl->fd;
    cn->u.fd = -1;
    /* Bounded: each request needs new bytes from the client, and each wait
     * for them is bounded by IDLE_MS and the stop flag. */
    for (;;) {
        size_t hlen;

        if (read_head(cn->inj, &cn->c, IDLE_MS, &hlen) != IO_OK) {
            if (hlen == 0 && cn->c.len - cn->c.off >= sizeof cn->c.buf)
                answer(cn, 431, "Request Header Fields Too Large", "request head too large");
            polite = 0;
            break;
        }
        if (serve_one(cn, hlen, &polite) < 0)
            break;
    }
out:
    if (cn != NULL) {
        upstream_close(cn);
        free(cn);
    }
    if (polite && !atomic_load(&sl->inj->stop))
        linger_close(sl->fd);
    else
        close(sl->fd);
    atomic_store(&sl->done, 1);
    return NULL;
}

/* Joins finished connection threads; returns a free slot or NULL. */
static struct slot *free_slot(struct fl_inject *inj)
{
    struct slot *free_one = NULL;

    for (int i = 0; i < FL_INJECT_MAX_CONNS; i++) {
        struct slot *s = &inj->slots[i];

        if (s->used && atomic_load(&s->done)) {
            pthread_join(s->th, NULL);
            s->used = 0;
        }
        if (!s->used && free_one == NULL)
            free_one = s;
    }
    return free_one;
}

static void *accept_main(void *arg)
{
    struct fl_inject *inj = arg;
    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                               "Connection: close\r\n\r\n";

    while (!atomic_load(&inj->stop)) {
        struct pollfd p = {.fd = inj->lfd, .events = POLLIN};
        struct slot *s;
        int fd, one = 1;

        if (poll(&p, 1, SLICE_MS) <= 0)
            continue;
        fd = accept4(inj->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                poll(NULL, 0, 100);
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if ((s = free_slot(inj)) == NULL) {
            (void)!send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL);
            close(fd);
            continue;
        }
        s->fd = fd;
        s->inj = inj;
        atomic_store(&s->done, 0);
        if (pthread_create(&s->th, NULL, conn_main, s) != 0) {
            close(fd);
            continue;
        }
        s->used = 1;
    }
    return NULL;
}

struct fl_inject *fl_inject_start(int port, uint64_t token, const char *name, fl_inject_lost_fn lost,
                                  void *arg, char *err, size_t errlen)
{
    struct fl_inject *inj = calloc(1, sizeof *inj);
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    int one = 1;

    if (inj != NULL)
        inj->lfd = -1;
    if (inj == NULL || (inj->name = strdup(name)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    inj->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    inj->token = token;
    inj->lost = lost;
    inj->arg = arg;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    if (inj->lfd < 0 || setsockopt(inj->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(inj->lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(inj->lfd, 64) < 0 ||
        getsockname(inj->lfd, (struct sockaddr *)&sa, &sl) < 0) {
        snprintf(err, errlen, "--http-proxy: cannot listen on 127.0.0.1:%d: %s", port,
                 strerror(errno));
        goto fail;
    }
    inj->port = ntohs(sa.sin_port);
    /* The threads inherit the caller's signal mask (fl_cli blocks all it
     * waits for before starting any thread). */
    if (pthread_create(&inj->accept_th, NULL, accept_main, inj) != 0) {
        snprintf(err, errlen, "--http-proxy: cannot start a thread");
        goto fail;
    }
    inj->accept_started = 1;
    return inj;
fail:
    fl_inject_stop(&inj);
    return NULL;
}

int fl_inject_port(const struct fl_inject *inj)
{
    return inj->port;
}

void fl_inject_stop(struct fl_inject **injp)
{
    struct fl_inject *inj = injp ? *injp : NULL;

    if (inj == NULL)
        return;
    atomic_store(&inj->stop, 1);
    if (inj->accept_started)
        pthread_join(inj->accept_th, NULL);
    /* Every connection thread sees the flag within SLICE_MS. */
    for (int i = 0; i < FL_INJECT_MAX_CONNS; i++)
        if (inj->slots[i].used)
            pthread_join(inj->slots[i].th, NULL);
    if (inj->lfd >= 0)
        close(inj->lfd);
    free(inj->name);
    free(inj);
    *injp = NULL;
}

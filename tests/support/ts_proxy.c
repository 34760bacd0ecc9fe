/* ts_proxy: see ts_proxy.h. */
#include "ts_proxy.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ts_tls.h"

int ts_proxy_init(struct ts_proxy *px, const char *tag)
{
    memset(px, 0, sizeof(*px));
    px->dir = ts_tempdir(tag);
    if (px->dir == NULL)
        return -1;
    px->port = ts_free_port();
    px->admin_port = ts_free_port();
    while (px->admin_port == px->port)
        px->admin_port = ts_free_port();
    snprintf(px->conf, sizeof(px->conf), "%s/fenceproxy.conf", px->dir);
    snprintf(px->audit, sizeof(px->audit), "%s/audit.log", px->dir);
    snprintf(px->access, sizeof(px->access), "%s/access.log", px->dir);
    snprintf(px->store, sizeof(px->store), "%s/store", px->dir);
    snprintf(px->tls_dir, sizeof(px->tls_dir), "%s/tls", px->dir);
    if (ts_tls_mode()) {
        px->tls = 1;
        if (mkdir(px->tls_dir, 0700) < 0 || ts_tls_make_certs(px->tls_dir) < 0)
            return -1;
    }
    return px->port > 0 && px->admin_port > 0 ? 0 : -1;
}

int ts_proxy_write_conf(struct ts_proxy *px, int upstream_port, const char *extra)
{
    FILE *f;

    if (extra != px->extra) {
        free(px->extra);
        px->extra = extra != NULL ? strdup(extra) : NULL;
    }
    px->upstream_port = upstream_port;
    f = fopen(px->conf, "w");

    if (f == NULL) {
        fprintf(stderr, "ts_proxy: %s: %s\n", px->conf, strerror(errno));
        return -1;
    }
    if (px->store_conf != NULL)
        fprintf(f, "%s\n", px->store_conf);
    else
        fprintf(f, "[store]\nbackend = file\npath = %s\n", px->store);
    fprintf(f,
            "[audit]\npath = %s\n"
            "[proxy]\nlisten = 127.0.0.1:%d\nadmin_listen = 127.0.0.1:%d\n"
            "upstream = %s:%d\naccess_log = %s\nlog_level = debug\n%s\n",
            px->audit, px->port, px->admin_port,
            px->upstream_base != NULL ? px->upstream_base : "http://127.0.0.1", upstream_port,
            px->access, extra != NULL ? extra : "");
    /* TLS mode: the same test over TLS listeners, unless it sets its own. */
    if (px->tls && (extra == NULL || strstr(extra, "[tls]") == NULL))
        fprintf(f, "[tls]\ncert = %s/server.pem\nkey = %s/server.key\n", px->tls_dir, px->tls_dir);
    return fclose(f) == 0 ? 0 : -1;
}

/* Whether the proxy's log says a listener's port was taken. */
static int port_was_taken(const struct ts_proxy *px)
{
    size_t len;
    char *log = ts_read_file(px->proc.log, &len);
    int taken = log != NULL && strstr(log, "Address already in use") != NULL;

    free(log);
    return taken;
}

int ts_proxy_start(struct ts_proxy *px)
{
    const char *bin = ts_build_path("proxy/fenceproxy");
    char log[1100];
    char *argv[] = {(char *)bin, "-c", px->conf, NULL};

    if (bin == NULL || access(bin, X_OK) != 0) {
        fprintf(stderr, "ts_proxy: fenceproxy binary not found at %s (build first)\n",
                bin != NULL ? bin : "?");
        return -1;
    }
    snprintf(log, sizeof(log), "%s/fenceproxy.log", px->dir);
    for (int attempt = 0; attempt < 5; attempt++) {
        if (ts_proc_start(&px->proc, "fenceproxy", argv, NULL, log) < 0)
            return -1;
        if (ts_wait_port(px->port, 5000) == 0 && ts_wait_port(px->admin_port, 5000) == 0 &&
            ts_proc_alive(&px->proc)) {
            if (px->tls) {
                char ca[1100];
                snprintf(ca, sizeof ca, "%s/ca.pem", px->tls_dir);
                ts_tls_port_del(px->port);
                ts_tls_port_del(px->admin_port);
                ts_tls_port_add(px->port, ca, NULL, NULL);
                ts_tls_port_add(px->admin_port, ca, NULL, NULL);
            }
            return 0;
        }
        ts_proc_stop(&px->proc, SIGKILL, 2000);
        if (!port_was_taken(px))
            break;
        fprintf(stderr, "ts_proxy: port %d or %d was taken, trying other ports\n", px->port,
                px->admin_port);
        if (truncate(log, 0) < 0)
            fprintf(stderr, "ts_proxy: cannot truncate %s\n", log);
        px->port = ts_free_port();
        px->admin_port = ts_free_port();
        if (ts_proxy_write_conf(px, px->upstream_port, px->extra) < 0)
            return -1;
    }
    fprintf(stderr, "ts_proxy: fenceproxy did not listen on %d\n", px->port);
    ts_proc_dump_log(&px->proc);
    return -1;
}

int ts_proxy_stop(struct ts_proxy *px, int sig)
{
    return ts_proc_stop(&px->proc, sig, 10000);
}

void ts_proxy_cleanup(struct ts_proxy *px, int dump)
{
    if (px->proc.pid > 0)
        ts_proc_stop(&px->proc, SIGTERM, 5000);
    if (px->tls) {
        ts_tls_port_del(px->port);
        ts_tls_port_del(px->admin_port);
    }
    if (dump && px->proc.log[0] != '\0')
        ts_proc_dump_log(&px->proc);
    if (px->dir != NULL) {
        ts_rmrf(px->dir);
        free(px->dir);
        px->dir = NULL;
    }
    free(px->extra);
    px->extra = NULL;
}

/* Reads more bytes into *buf (growing), waiting until deadline. Returns bytes
 * read, 0 on EOF, -1 on timeout or error. */
static ssize_t read_more(int fd, char **buf, size_t *len, size_t *cap, long long deadline)
{
    struct pollfd pfd = {fd, POLLIN, 0};
    long long left = deadline - ts_now_ms();
    ssize_t n;

    if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
        return -1;
    if (*cap - *len < 65536) {
        size_t ncap = *cap * 2 + 65536;
        char *nb = realloc(*buf, ncap + 1);
        if (nb == NULL)
            return -1;
        *buf = nb;
        *cap = ncap;
    }
    n = recv(fd, *buf + *len, *cap - *len, 0);
    if (n > 0)
        *len += (size_t)n;
    return n < 0 ? -1 : n;
}

/* Decodes a chunked body from b[0..len) into o (len bytes of room). Returns
 * the decoded length and sets *used to the bytes consumed, or -1 when
 * incomplete or malformed. */
static long dechunk(const char *b, size_t len, char *o, size_t *used)
{
    size_t in = 0, out = 0;

    for (int guard = 0; guard < 1000000; guard++) {
        char *end;
        unsigned long sz;
        const char *crlf = memmem(b + in, len - in, "\r\n", 2);
        if (crlf == NULL)
            return -1;
        sz = strtoul(b + in, &end, 16);
        in = (size_t)(crlf - b) + 2;
        if (sz == 0) {
            const char *fin = memmem(b + in - 2, len - (in - 2), "\r\n\r\n", 4);
            if (fin == NULL)
                return -1;
            *used = (size_t)(fin - b) + 4;
            return (long)out;
        }
        if (len - in < sz + 2)
            return -1;
        memcpy(o + out, b + in, sz);
        out += sz;
        in += sz + 2;
    }
    return -1;
}

int ts_http_read(int fd, struct ts_resp *r, int timeout_ms, int keep_100)
{
    long long deadline = ts_now_ms() + timeout_ms;
    char *buf = NULL;
    size_t len = 0, cap = 0, hlen;
    char *eoh, val[64];
    int rc = -1;

    memset(r, 0, sizeof(*r));
    for (;;) {
        ssize_t n;
        eoh = buf != NULL ? memmem(buf, len, "\r\n\r\n", 4) : NULL;
        if (eoh != NULL) {
            hlen = (size_t)(eoh - buf) + 4;
            if (sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1)
                goto out;
            if (r->status == 100 && !keep_100) {
                memmove(buf, buf + hlen, len - hlen);
                len -= hlen;
                r->status = 0;
                continue;
            }
            break;
        }
        n = read_more(fd, &buf, &len, &cap, deadline);
        if (n <= 0)
            goto out;
    }
    memcpy(r->head, buf, hlen < sizeof(r->head) - 1 ? hlen : sizeof(r->head) - 1);
    memmove(buf, buf + hlen, len - hlen);
    len -= hlen;
    if (r->status == 100 || r->status == 204 || r->status == 304) {
        /* no body */
    } else if (ts_resp_header(r, "Content-Length", val, sizeof(val))) {
        size_t want = strtoull(val, NULL, 10);
        while (len < want)
            if (read_more(fd, &buf, &len, &cap, deadline) <= 0)
                goto out;
        r->body_len = want;
    } else if (ts_resp_header(r, "Transfer-Encoding", val, sizeof(val))) {
        long d;
        size_t used;
        char *o = NULL;
        for (;;) {
            free(o);
            o = malloc(len + 1);
            if (o == NULL)
                goto out;
            if ((d = dechunk(buf, len, o, &used)) >= 0)
                break;
            if (read_more(fd, &buf, &len, &cap, deadline) <= 0) {
                free(o);
                goto out;
            }
        }
        memcpy(buf, o, (size_t)d);
        free(o);
        r->body_len = (size_t)d;
    } else {
        ssize_t n;
        while ((n = read_more(fd, &buf, &len, &cap, deadline)) > 0)
            ;
        if (n < 0)
            goto out;
        r->closed = 1;
        r->body_len = len;
    }
    r->body = malloc(r->body_len + 1);
    if (r->body == NULL)
        goto out;
    if (r->body_len > 0)
        memcpy(r->body, buf, r->body_len);
    r->body[r->body_len] = '\0';
    rc = 0;
out:
    free(buf);
    return rc;
}

int ts_resp_header(const struct ts_resp *r, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = strstr(r->head, "\r\n");

    while (p != NULL && p[2] != '\r' && p[2] != '\0') {
        const char *line = p + 2, *eol = strstr(line, "\r\n");
        if (eol == NULL)
            break;
        if ((size_t)(eol - line) > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1;
            size_t vl;
            while (*v == ' ' || *v == '\t')
                v++;
            vl = (size_t)(eol - v);
            if (vl >= cap)
                vl = cap - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return 1;
        }
        p = eol;
    }
    return 0;
}

void ts_resp_free(struct ts_resp *r)
{
    free(r->body);
    r->body = NULL;
}

int ts_http_raw(int port, const char *raw, size_t len, struct ts_resp *r, int timeout_ms)
{
    struct ts_resp tmp;
    int fd = ts_connect(port), rc = -1;

    if (r == NULL)
        r = &tmp;
    memset(r, 0, sizeof(*r));
    if (fd < 0)
        return -1;
    if (ts_send_all(fd, raw, len) == 0 && ts_http_read(fd, r, timeout_ms, 0) == 0)
        rc = r->status;
    close(fd);
    if (r == &tmp)
        ts_resp_free(&tmp);
    return rc;
}

int ts_http_put_token(int port, const char *path, uint64_t token, const char *body, int timeout_ms)
{
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "PUT %s HTTP/1.1\r\nHost: t\r\nFencing-Token: %" PRIu64
                     "\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     path, token, strlen(body), body);

    if (n < 0 || (size_t)n >= sizeof req)
        return -1;
    return ts_http_raw(port, req, (size_t)n, NULL, timeout_ms);
}

int ts_wait_closed(int fd, int timeout_ms)
{
    long long deadline = ts_now_ms() + timeout_ms;
    char b[4096];

    for (;;) {
        struct pollfd pfd = {fd, POLLIN, 0};
        long long left = deadline - ts_now_ms();
        ssize_t n;
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            return 0;
        n = recv(fd, b, sizeof(b), 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return 1;
        if (n < 0 && errno != EINTR && errno != EAGAIN)
            return 1;
    }
}

int ts_http_get(int port, const char *path, struct ts_resp *r)
{
    char req[2048];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);

    return ts_http_raw(port, req, (size_t)n, r, 10000);
}

/* ts_tls: see ts_tls.h. */
#include "ts_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define PUMP_BUF (64 * 1024)
#define PUMP_MAX_S 600

int ts_tls_mode(void)
{
    const char *v = getenv("FENCE_TEST_TLS");

    return v != NULL && strcmp(v, "1") == 0;
}

/* Runs cmd (in dir); on failure its output goes to stderr. */
static int sh(const char *dir, const char *cmd)
{
    char full[8192];
    int rc;

    snprintf(full, sizeof full, "(%s) >'%s/openssl.out' 2>&1 || { cat '%s/openssl.out' >&2; exit 1; }",
             cmd, dir, dir);
    rc = system(full);
    if (rc != 0)
        fprintf(stderr, "ts_tls: failed (%d): %s\n", rc, cmd);
    return rc == 0 ? 0 : -1;
}

/* A P-256 key and a certificate signed by ca (NULL: self-signed CA). */
static int make_cert(const char *dir, const char *name, const char *subj, const char *san,
                     const char *ca, int days)
{
    char cmd[4096];

    if (ca == NULL) {
        snprintf(cmd, sizeof cmd,
                 "cd '%s' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
                 "-nodes -keyout %s.key -out %s.pem -days 3 -subj '%s'",
                 dir, name, name, subj);
        return sh(dir, cmd);
    }
    snprintf(cmd, sizeof cmd,
             "cd '%s' && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout %s.key -out %s.csr -subj '%s' && printf '%s\\n' > %s.ext && "
             "openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key -set_serial %ld -out %s.pem "
             "-days %d -extfile %s.ext",
             dir, name, name, subj, san, name, name, ca, ca, (long)random() & 0xffffff, name,
             days, name);
    return sh(dir, cmd);
}

int ts_tls_make_certs(const char *dir)
{
    static const char server_san[] =
        "subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth,clientAuth";

    if (make_cert(dir, "ca", "/CN=fence test CA", NULL, NULL, 3) < 0 ||
        make_cert(dir, "server", "/CN=localhost", server_san, "ca", 3) < 0 ||
        make_cert(dir, "client", "/O=fence/CN=fence test client", "extendedKeyUsage=clientAuth",
                  "ca", 3) < 0 ||
        make_cert(dir, "expired", "/CN=localhost", server_san, "ca", -1) < 0 ||
        make_cert(dir, "wrong", "/CN=wrong.example",
                  "subjectAltName=DNS:wrong.example\\nextendedKeyUsage=serverAuth", "ca", 3) < 0 ||
        make_cert(dir, "other-ca", "/CN=untrusted CA", NULL, NULL, 3) < 0 ||
        make_cert(dir, "other-client", "/CN=stranger", "extendedKeyUsage=clientAuth", "other-ca",
                  3) < 0)
        return -1;
    return 0;
}

struct pump {
    SSL_CTX *ctx;
    SSL *ssl;
    int net;   /* TCP to the server, carrying TLS */
    int local; /* our end of the plaintext pair */
};

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Moves bytes both ways until both directions ended. A reset from one side
 * becomes a reset on the other (SO_LINGER 0), so tests that expect one see
 * it. Bounded by PUMP_MAX_S. */
static void *pump_main(void *arg)
{
    struct pump *p = arg;
    char *up = malloc(PUMP_BUF), *down = malloc(PUMP_BUF);
    size_t up_len = 0, down_len = 0;
    int local_eof = 0, net_eof = 0, want_write = 0, reset = 0;
    long long deadline = now_ms() + PUMP_MAX_S * 1000LL;

    if (up == NULL || down == NULL)
        goto out;
    while (now_ms() < deadline && !reset) {
        struct pollfd pf[2] = {{p->local, 0, 0}, {p->net, 0, 0}};
        if (!local_eof && up_len < PUMP_BUF)
            pf[0].events |= POLLIN;
        if (down_len > 0)
            pf[0].events |= POLLOUT;
        if (!net_eof && down_len < PUMP_BUF)
            pf[1].events |= POLLIN;
        if (up_len > 0 && want_write)
            pf[1].events |= POLLOUT;
        if (local_eof && net_eof && down_len == 0)
            break;
        if (SSL_pending(p->ssl) == 0 && poll(pf, 2, 200) < 0 && errno != EINTR)
            break;
        /* local -> up */
        if (!local_eof && up_len < PUMP_BUF && (pf[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t n = recv(p->local, up + up_len, PUMP_BUF - up_len, MSG_DONTWAIT);
            if (n > 0)
                up_len += (size_t)n;
            else if (n == 0)
                local_eof = 1;
            else if (errno != EAGAIN && errno != EINTR)
                reset = 1;
        }
        /* up -> TLS */
        if (up_len > 0) {
            int n = SSL_write(p->ssl, up, (int)up_len);
            want_write = 0;
            if (n > 0) {
                memmove(up, up + n, up_len - (size_t)n);
                up_len -= (size_t)n;
            } else {
                int e = SSL_get_error(p->ssl, n);
                if (e == SSL_ERROR_WANT_WRITE)
                    want_write = 1;
                else if (e != SSL_ERROR_WANT_READ)
                    reset = 1;
            }
        }
        if (local_eof && up_len == 0 && !(SSL_get_shutdown(p->ssl) & SSL_SENT_SHUTDOWN)) {
            (void)SSL_shutdown(p->ssl); /* close_notify: the client's half-close */
            (void)shutdown(p->net, SHUT_WR);
        }
        /* TLS -> down */
        if (!net_eof && down_len < PUMP_BUF) {
            int n = SSL_read(p->ssl, down + down_len, (int)(PUMP_BUF - down_len));
            if (n > 0) {
                down_len += (size_t)n;
            } else {
                int e = SSL_get_error(p->ssl, n);
                if (e == SSL_ERROR_ZERO_RETURN)
                    net_eof = 1;
                else if (e == SSL_ERROR_SYSCALL && errno == ECONNRESET)
                    net_eof = reset = 1;
                else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                    net_eof = 1; /* a close without close_notify, an alert */
            }
        }
        /* down -> local */
        if (down_len > 0) {
            ssize_t n = send(p->local, down, down_len, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) {
                memmove(down, down + n, down_len - (size_t)n);
                down_len -= (size_t)n;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                reset = 1;
            }
        }
        if (net_eof && down_len == 0)
            (void)shutdown(p->local, SHUT_WR);
    }
out:
    if (reset) {
        struct linger lg = {1, 0};
        (void)setsockopt(p->net, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        (void)setsockopt(p->local, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    free(up);
    free(down);
    SSL_free(p->ssl);
    SSL_CTX_free(p->ctx);
    close(p->net);
    close(p->local);
    free(p);
    return NULL;
}

static int tcp_to(int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* A connected loopback TCP pair: *a is the test's end. */
static int tcp_pair(int *a, int *b)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), rc = -1, one = 1;

    *a = *b = -1;
    if (l < 0)
        return -1;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(l, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(l, 1) < 0 ||
        getsockname(l, (struct sockaddr *)&sa, &len) < 0)
        goto out;
    *a = tcp_to(ntohs(sa.sin_port));
    if (*a < 0)
        goto out;
    *b = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    if (*b < 0) {
        close(*a);
        *a = -1;
        goto out;
    }
    (void)setsockopt(*b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    rc = 0;
out:
    close(l);
    return rc;
}

int ts_tls_connect(int port, const char *ca, const char *cert, const char *key)
{
    struct pump *p = calloc(1, sizeof(*p));
    struct timeval tv = {10, 0};
    int mine = -1, rc;
    pthread_t th;
    char e[256];

    if (p == NULL)
        return -1;
    p->net = p->local = -1;
    p->ctx = SSL_CTX_new(TLS_client_method());
    if (p->ctx == NULL || SSL_CTX_load_verify_locations(p->ctx, ca, NULL) != 1 ||
        (cert != NULL && (SSL_CTX_use_certificate_chain_file(p->ctx, cert) != 1 ||
                          SSL_CTX_use_PrivateKey_file(p->ctx, key, SSL_FILETYPE_PEM) != 1))) {
        ERR_error_string_n(ERR_get_error(), e, sizeof e);
        fprintf(stderr, "ts_tls: client context: %s\n", e);
        goto fail;
    }
    SSL_CTX_set_verify(p->ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(p->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    p->net = tcp_to(port);
    if (p->net < 0) {
        fprintf(stderr, "ts_tls: connect 127.0.0.1:%d: %s\n", port, strerror(errno));
        goto fail;
    }
    p->ssl = SSL_new(p->ctx);
    if (p->ssl == NULL ||
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(p->ssl), "127.0.0.1") != 1 ||
        SSL_set_fd(p->ssl, p->net) != 1)
        goto fail;
    setsockopt(p->net, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(p->net, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    rc = SSL_connect(p->ssl);
    if (rc != 1) {
        ERR_error_string_n(ERR_get_error(), e, sizeof e);
        fprintf(stderr, "ts_tls: handshake with 127.0.0.1:%d failed: %s\n", port, e);
        goto fail;
    }
    (void)fcntl(p->net, F_SETFL, fcntl(p->net, F_GETFL) | O_NONBLOCK);
    if (tcp_pair(&mine, &p->local) < 0)
        goto fail;
    if (pthread_create(&th, NULL, pump_main, p) != 0) {
        close(mine);
        goto fail;
    }
    pthread_detach(th);
    return mine;
fail:
    ERR_clear_error();
    if (p->ssl != NULL)
        SSL_free(p->ssl);
    if (p->ctx != NULL)
        SSL_CTX_free(p->ctx);
    if (p->net >= 0)
        close(p->net);
    if (p->local >= 0)
        close(p->local);
    free(p);
    return -1;
}

struct reg {
    int port;
    char *ca, *cert, *key;
};

static struct reg regs[16];
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;

static char *dup_or_null(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}

void ts_tls_port_add(int port, const char *ca, const char *cert, const char *key)
{
    pthread_mutex_lock(&reg_lock);
    for (size_t i = 0; i < sizeof regs / sizeof regs[0]; i++) {
        if (regs[i].port == 0) {
            regs[i].port = port;
            regs[i].ca = dup_or_null(ca);
            regs[i].cert = dup_or_null(cert);
            regs[i].key = dup_or_null(key);
            break;
        }
    }
    pthread_mutex_unlock(&reg_lock);
}

void ts_tls_port_del(int port)
{
    pthread_mutex_lock(&reg_lock);
    for (size_t i = 0; i < sizeof regs / sizeof regs[0]; i++) {
        if (regs[i].port == port) {
            free(regs[i].ca);
            free(regs[i].cert);
            free(regs[i].key);
            memset(&regs[i], 0, sizeof regs[i]);
        }
    }
    pthread_mutex_unlock(&reg_lock);
}

int ts_tls_connect_registered(int port)
{
    char *ca = NULL, *cert = NULL, *key = NULL;
    int found = 0, fd;

    pthread_mutex_lock(&reg_lock);
    for (size_t i = 0; i < sizeof regs / sizeof regs[0] && !found; i++) {
        if (regs[i].port == port && port != 0) {
            found = 1;
            ca = dup_or_null(regs[i].ca);
            cert = dup_or_null(regs[i].cert);
            key = dup_or_null(regs[i].key);
        }
    }
    pthread_mutex_unlock(&reg_lock);
    if (!found)
        return -2;
    fd = ts_tls_connect(port, ca, cert, key);
    free(ca);
    free(cert);
    free(key);
    return fd;
}

/* px_tokencli: see px_tokencli.h. Blocking HTTP/1.1 requests to the
 * configured admin_listen (Connection: close, the answer read until the
 * server closes), with deadlines on connect and on the answer: one for get
 * and set, one per page for list (GET /tokens?prefix=P&limit=N&after=C,
 * following the page's next cursor until a page is not truncated). Owns
 * nothing beyond the call. */
#include "px_tokencli.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "px_config.h"

#define CLI_CONNECT_MS 3000
#define CLI_ANSWER_MS 60000 /* a set waits for the requests in flight to drain */
#define CLI_MAX_ANSWER (16u << 20)
#define CLI_PAGE       1000    /* entries asked for per list page */
#define CLI_MAX_PAGES  1000000 /* a bound on the pages of one list */

static void usage(void)
{
    fprintf(stderr, "usage: fenceproxy tokens -c FILE list [PREFIX] [--limit N]\n"
                    "       fenceproxy tokens -c FILE get RESOURCE\n"
                    "       fenceproxy tokens -c FILE set RESOURCE TOKEN --reason TEXT\n");
}

/* Appends s %-encoded (everything but unreserved bytes; '/' kept when
 * keep_slash) to out (cap bytes). Returns 0 or -1 when it does not fit. */
static int pct(char *out, size_t cap, const char *s, int keep_slash)
{
    size_t n = strlen(out);

    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        int plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' ||
                    ch == '~' || (keep_slash && ch == '/');
        if (n + 4 >= cap)
            return -1;
        if (plain)
            out[n++] = (char)ch;
        else
            n += (size_t)snprintf(out + n, cap - n, "%%%02X", ch);
    }
    out[n] = '\0';
    return 0;
}

/* Connects to host:port within CLI_CONNECT_MS. Returns the fd or -1. */
static int dial(const char *host, int port)
{
    struct addrinfo hints, *res = NULL;
    char ps[16];
    int fd = -1;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(ps, sizeof ps, "%d", port);
    if (getaddrinfo(host, ps, &hints, &res) != 0)
        return -1;
    for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        struct timeval tv = {CLI_CONNECT_MS / 1000, 0};
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

/* Sends req and reads the whole answer into *out (malloc'd, NUL-terminated).
 * Returns 0, or -1 when the connection failed or the deadline passed. */
static int exchange(int fd, const char *req, char **out)
{
    size_t len = strlen(req), off = 0, n = 0, cap = 4096;
    char *buf = malloc(cap);
    struct timeval t0, now;

    if (buf == NULL)
        return -1;
    while (off < len) {
        ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            goto fail;
        off += (size_t)w;
    }
    gettimeofday(&t0, NULL);
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        long ms;
        ssize_t r;
        gettimeofday(&now, NULL);
        ms = CLI_ANSWER_MS - ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_usec - t0.tv_usec) / 1000);
        if (ms <= 0 || poll(&p, 1, (int)ms) <= 0)
            goto fail;
        if (n + 1 >= cap) {
            char *nb = cap < CLI_MAX_ANSWER ? realloc(buf, cap * 2) : NULL;
            if (nb == NULL)
                goto fail;
            buf = nb;
            cap *= 2;
        }
        r = recv(fd, buf + n, cap - n - 1, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            goto fail;
        if (r == 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    *out = buf;
    return 0;
fail:
    free(buf);
    return -1;
}

/* One request: method and target to the admin at host:port (listen is the
 * configured admin_listen, for the Host field and messages), auth an extra
 * header line or "". Returns 0 with the status and the answer (*ans,
 * malloc'd; *body points into it), or -1 when the admin API cannot be
 * reached or gave no HTTP answer (message on stderr). */
static int ask(const char *cmd, const char *host, int port, const char *listen, const char *method,
               const char *target, const char *auth, int *status, char **ans, char **body)
{
    char *req = NULL, *b;
    int fd = -1, rc = -1;

    *ans = NULL;
    if (asprintf(&req,
                 "%s %s HTTP/1.1\r\nHost: %s\r\n%sContent-Length: 0\r\nConnection: close\r\n\r\n",
                 method, target, listen, auth) < 0) {
        req = NULL;
        fprintf(stderr, "tokens %s: out of memory\n", cmd);
        goto out;
    }
    errno = 0;
    fd = dial(strcmp(host, "0.0.0.0") == 0 ? "127.0.0.1"
              : strcmp(host, "::") == 0    ? "::1"
                                           : host,
              port);
    if (fd < 0 || exchange(fd, req, ans) != 0) {
        fprintf(stderr, "tokens %s: admin API at %s unreachable or silent: %s\n", cmd, listen,
                errno != 0 ? strerror(errno) : "no answer");
        goto out;
    }
    if (sscanf(*ans, "HTTP/1.%*d %d", status) != 1) {
        fprintf(stderr, "tokens %s: not an HTTP answer from %s\n", cmd, listen);
        goto out;
    }
    b = strstr(*ans, "\r\n\r\n");
    *body = b != NULL ? b + 4 : *ans + strlen(*ans);
    rc = 0;
out:
    if (req != NULL)
        explicit_bzero(req, strlen(req));
    free(req);
    if (fd >= 0)
        close(fd);
    if (rc != 0) {
        free(*ans);
        *ans = NULL;
    }
    return rc;
}

/* Prints the entries of one list page (body as px_admin's list_loaded
 * writes it) to stdout, one JSON object a line, at most *left of them
 * (decremented). Sets *more to 1 when it held entries past *left, else to 2
 * when the page is truncated (then the next cursor, hex, is copied into
 * next, cap bytes), else to 0. Returns 0, or -1 when the body
 * is not such a page. */
static int print_page(char *body, size_t *left, int *more, char *next, size_t cap)
{
    char *line = body, *nl;

    static const char head[] = "{\"resources\":[\n", entry[] = "{\"resource\":",
                      tail[] = "],\"truncated\":", next_field[] = "\"next\":\"";

    if (strncmp(line, head, sizeof head - 1) != 0)
        return -1;
    line += sizeof head - 1;
    *more = 0;
    for (; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        size_t len = (size_t)(nl - line);
        if (strncmp(line, entry, sizeof entry - 1) == 0) {
            if (len > 0 && line[len - 1] == ',')
                len--;
            if (len == 0 || line[len - 1] != '}')
                return -1;
            if (*left == 0) {
                *more = 1; /* entries past --limit */
                continue;
            }
            fwrite(line, 1, len, stdout);
            fputc('\n', stdout);
            (*left)--;
        } else if (strncmp(line, tail, sizeof tail - 1) == 0) {
            const char *t = line + sizeof tail - 1, *c = strstr(t, next_field);
            if (strncmp(t, "true", 4) == 0) {
                size_t hl;
                if (c == NULL)
                    return -1;
                c += sizeof next_field - 1;
                hl = strspn(c, "0123456789abcdef");
                if (hl == 0 || hl >= cap || c[hl] != '"')
                    return -1;
                memcpy(next, c, hl);
                next[hl] = '\0';
                if (*more == 0)
                    *more = 2;
            } else if (strncmp(t, "false", 5) != 0) {
                return -1;
            }
            return 0;
        } else {
            return -1;
        }
    }
    return -1;
}

/* `tokens list [PREFIX] [--limit N]`: pages until one is not truncated
 * (bounded by CLI_MAX_PAGES and by limit entries, 0: none). Returns the exit
 * status. */
static int list_all(const char *host, int port, const char *listen, const char *prefix,
                    size_t limit)
{
    char target[16384], next[2 * 8192 + 1] = "", *ans = NULL, *body;
    size_t left = limit != 0 ? limit : SIZE_MAX;
    int status = 0, more = 0, rc = 1;

    for (unsigned long page = 0; page < CLI_MAX_PAGES; page++) {
        size_t want = left < CLI_PAGE ? left + 1 : CLI_PAGE; /* +1: are there more? */
        snprintf(target, sizeof target, "/tokens?limit=%zu&prefix=", want);
        if (pct(target, sizeof target, prefix != NULL ? prefix : "", 0) != 0 ||
            (next[0] != '\0' &&
             snprintf(target + strlen(target), sizeof target - strlen(target), "&after=%s", next) >=
                 (int)(sizeof target - strlen(target)))) {
            fprintf(stderr, "tokens list: PREFIX too long\n");
            goto out;
        }
        free(ans);
        if (ask("list", host, port, listen, "GET", target, "", &status, &ans, &body) != 0) {
            rc = PX_TOKENCLI_UNREACHABLE;
            goto out;
        }
        if (status != 200) {
            fprintf(stderr, "tokens list: refused (%d): %s", status, body);
            if (body[0] == '\0' || body[strlen(body) - 1] != '\n')
                fputc('\n', stderr);
            goto out;
        }
        {
            char prev[sizeof next];
            memcpy(prev, next, sizeof next);
            if (print_page(body, &left, &more, next, sizeof next) != 0) {
                fprintf(stderr, "tokens list: not a listing from %s: %.200s\n", listen, body);
                goto out;
            }
            if (more == 2 && strcmp(prev, next) == 0) {
                fprintf(stderr, "tokens list: the admin API gave the same page twice\n");
                goto out;
            }
        }
        if (more == 0) {
            rc = 0;
            goto out;
        }
        if (left == 0) {
            fflush(stdout);
            fprintf(stderr, "tokens list: stopped at --limit %zu; more resources %s\n", limit,
                    more == 1 ? "follow" : "may follow");
            rc = 0;
            goto out;
        }
    }
    fprintf(stderr, "tokens list: stopped after %d pages\n", CLI_MAX_PAGES);
out:
    fflush(stdout);
    free(ans);
    return rc;
}

/* user@host of the caller, for the audit record. */
static void identity(char *out, size_t cap)
{
    struct passwd *pw = getpwuid(getuid());
    char host[256] = "?";

    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    snprintf(out, cap, "%s@%s (uid %u)", pw != NULL ? pw->pw_name : "?", host,
             (unsigned)getuid());
}

int px_tokencli_main(int argc, char **argv)
{
    const char *conf = NULL, *reason = NULL, *cmd = NULL, *limit_arg = NULL;
    const char *pos[3] = {NULL, NULL, NULL};
    int npos = 0, rc = 1, port, status = 0;
    unsigned long long limit = 0;
    struct px_config *cfg = NULL;
    char err[4096], target[16384] = "", auth[4200] = "", who[400], *host = NULL;
    char *ans = NULL, *body;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
            conf = argv[++i];
        else if (strcmp(argv[i], "--reason") == 0 && i + 1 < argc)
            reason = argv[++i];
        else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc)
            limit_arg = argv[++i];
        else if (cmd == NULL)
            cmd = argv[i];
        else if (npos < 3)
            pos[npos++] = argv[i];
        else
            goto bad_usage;
    }
    if (conf == NULL || cmd == NULL || (limit_arg != NULL && strcmp(cmd, "list") != 0))
        goto bad_usage;
    if (strcmp(cmd, "list") == 0 && npos <= 1 && reason == NULL) {
        char *end;
        errno = 0;
        if (limit_arg != NULL &&
            (limit_arg[0] < '1' || limit_arg[0] > '9' ||
             (limit = strtoull(limit_arg, &end, 10), errno != 0) || *end != '\0')) {
            fprintf(stderr, "tokens list: --limit wants a number above 0\n");
            goto out;
        }
    } else if (strcmp(cmd, "get") == 0 && npos == 1 && reason == NULL) {
        snprintf(target, sizeof target, "/tokens/");
        if (pct(target, sizeof target, pos[0], 0) != 0)
            goto bad_usage;
    } else if (strcmp(cmd, "set") == 0 && npos == 2) {
        char *end;
        if (reason == NULL || reason[0] == '\0') {
            fprintf(stderr, "tokens set: --reason TEXT is required (it goes into the audit log)\n");
            goto out;
        }
        errno = 0;
        if (pos[1][0] < '0' || pos[1][0] > '9' || (strtoull(pos[1], &end, 10), errno != 0) ||
            *end != '\0') {
            fprintf(stderr, "tokens set: TOKEN must be a number 0..18446744073709551615\n");
            goto out;
        }
        identity(who, sizeof who);
        snprintf(target, sizeof target, "/tokens/");
        if (pct(target, sizeof target, pos[0], 0) != 0 ||
            snprintf(target + strlen(target), sizeof target - strlen(target), "?token=%s&reason=",
                     pos[1]) < 0 ||
            pct(target, sizeof target, reason, 0) != 0 ||
            (strlen(target) + 10 < sizeof target && strcat(target, "&operator=") == NULL) ||
            pct(target, sizeof target, who, 0) != 0)
            goto bad_usage;
    } else {
        goto bad_usage;
    }
    cfg = px_config_load(conf, err, sizeof err);
    if (cfg == NULL) {
        fprintf(stderr, "%s\n", err);
        goto out;
    }
    if (strcmp(cfg->admin_listen, "off") == 0 ||
        px_config_split_hostport(cfg->admin_listen, &host, &port) != 0) {
        fprintf(stderr, "%s: admin_listen is off: there is no admin API to ask\n", conf);
        rc = PX_TOKENCLI_UNREACHABLE;
        goto out;
    }
    if (strcmp(cmd, "set") == 0) {
        if (cfg->admin_token == NULL) {
            fprintf(stderr, "%s: no admin_token_file: the admin API refuses writes\n", conf);
            goto out;
        }
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", cfg->admin_token);
    }
    if (strcmp(cmd, "list") == 0) {
        rc = list_all(host, port, cfg->admin_listen, npos == 1 ? pos[0] : NULL, (size_t)limit);
        goto out;
    }
    if (ask(cmd, host, port, cfg->admin_listen, strcmp(cmd, "set") == 0 ? "PUT" : "GET", target,
            auth, &status, &ans, &body) != 0) {
        rc = PX_TOKENCLI_UNREACHABLE;
        goto out;
    }
    if (status == 200) {
        fputs(body, stdout);
        rc = 0;
    } else {
        fprintf(stderr, "tokens %s: refused (%d): %s", cmd, status, body);
        if (body[0] == '\0' || body[strlen(body) - 1] != '\n')
            fputc('\n', stderr);
        rc = 1;
    }
    goto out;
bad_usage:
    usage();
out:
    if (auth[0] != '\0')
        explicit_bzero(auth, sizeof auth);
    free(ans);
    free(host);
    px_config_free(&cfg);
    return rc;
}

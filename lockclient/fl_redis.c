/* fl_redis: the Redis lock backend, the only file that includes hiredis or
 * knows Redis commands. Each operation is one Lua script run by EVALSHA (the
 * SHA1 is computed here, so no SCRIPT LOAD round trip), falling back to EVAL
 * when the server answers NOSCRIPT (after a restart or SCRIPT FLUSH). Keys are
 * fence:{NAME}:lock (value: owner id, with a PX expiry) and fence:{NAME}:token
 * (the counter, no expiry); the {NAME} hash tag keeps both in one cluster slot
 * so a script may touch both. Owns one hiredis context, dropped after any I/O
 * error and reopened by the next call. */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "fl_backend.h"

/* SET NX PX then INCR, only on success: the token is issued atomically with
 * the lock, so tokens strictly increase per name across owners. Returns the
 * token, or 0 if the lock is held by another owner. If this very owner
 * already holds it (a retry after the reply to the first try was lost; owner
 * ids are unique per acquisition) it returns the token already issued, so
 * the client may resend an acquire safely. */
static const char script_acquire[] =
    "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then\n"
    "  return redis.call('INCR', KEYS[2])\n"
    "end\n"
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "  return tonumber(redis.call('GET', KEYS[2]) or '0')\n"
    "end\n"
    "return 0\n";

/* Compare-and-act: only the current owner may extend or delete. */
static const char script_renew[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                   "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                                   "end\n"
                                   "return 0\n";

static const char script_release[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                     "  return redis.call('DEL', KEYS[1])\n"
                                     "end\n"
                                     "return 0\n";

/* One consistent snapshot: {owner or '', pttl, last token or '0'}. */
static const char script_status[] = "local o = redis.call('GET', KEYS[1])\n"
                                    "local t = redis.call('GET', KEYS[2])\n"
                                    "local p = redis.call('PTTL', KEYS[1])\n"
                                    "if not o then o = '' end\n"
                                    "if not t then t = '0' end\n"
                                    "return {o, p, t}\n";

enum { SCRIPT_ACQUIRE, SCRIPT_RENEW, SCRIPT_RELEASE, SCRIPT_STATUS, SCRIPT_COUNT };

static const char *const scripts[SCRIPT_COUNT] = {script_acquire, script_renew, script_release,
                                                  script_status};

struct fl_backend {
    redisContext *ctx; /* NULL when not connected */
    char *host;
    int port;
    int db;
    char *user;     /* NULL unless given */
    char *password; /* NULL unless given */
    char address[300];
    char sha[SCRIPT_COUNT][41];
    uint64_t timeout_ms;
};

static void redis_free(struct fl_backend *b)
{
    if (b == NULL)
        return;
    if (b->ctx)
        redisFree(b->ctx);
    free(b->host);
    free(b->user);
    if (b->password) {
        memset(b->password, 0, strlen(b->password));
        free(b->password);
    }
    free(b);
}

static int sha1_hex(const char *text, char out[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;

    if (EVP_Digest(text, strlen(text), md, &len, EVP_sha1(), NULL) != 1 || len != 20)
        return -1;
    for (unsigned int i = 0; i < len; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return 0;
}

/* Parses a decimal in [lo, hi] from s[0..n). 0 / -1. */
static int parse_int(const char *s, size_t n, long lo, long hi, long *out)
{
    long v = 0;

    if (n == 0 || n > 9)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* redis://[[user]:password@]host[:port][/db] */
static struct fl_backend *redis_open(const char *url, char *err, size_t errlen)
{
    static const char prefix[] = "redis://";
    struct fl_backend *b = NULL;
    const char *auth, *at, *hostp, *slash, *colon, *end;
    long v;

    if (strncmp(url, prefix, sizeof prefix - 1) != 0) {
        snprintf(err, errlen, "not a redis:// URL: %s", url);
        goto fail;
    }
    b = calloc(1, sizeof *b);
    if (b == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    b->port = 6379;
    b->timeout_ms = 2000;
    auth = url + sizeof prefix - 1;
    slash = strchr(auth, '/');
    end = slash ? slash : auth + strlen(auth);
    at = NULL;
    for (const char *p = auth; p < end; p++)
        if (*p == '@')
            at = p;
    hostp = auth;
    if (at) {
        const char *sep = memchr(auth, ':', (size_t)(at - auth));

        if (sep == NULL || sep + 1 == at) {
            snprintf(err, errlen, "bad credentials in URL (want [user]:password@): %s", url);
            goto fail;
        }
        if (sep > auth && (b->user = strndup(auth, (size_t)(sep - auth))) == NULL)
            goto oom;
        if ((b->password = strndup(sep + 1, (size_t)(at - sep - 1))) == NULL)
            goto oom;
        hostp = at + 1;
    }
    colon = NULL;
    for (const char *p = hostp; p < end; p++)
        if (*p == ':')
            colon = p;
    if (colon) {
        if (parse_int(colon + 1, (size_t)(end - colon - 1), 1, 65535, &v) < 0) {
            snprintf(err, errlen, "bad port in URL: %s", url);
            goto fail;
        }
        b->port = (int)v;
    } else {
        colon = end;
    }
    if (colon == hostp) {
        snprintf(err, errlen, "missing host in URL: %s", url);
        goto fail;
    }
    if ((b->host = strndup(hostp, (size_t)(colon - hostp))) == NULL)
        goto oom;
    if (slash && slash[1] != '\0') {
        if (parse_int(slash + 1, strlen(slash + 1), 0, 1000000, &v) < 0) {
            snprintf(err, errlen, "bad database number in URL: %s", url);
            goto fail;
        }
        b->db = (int)v;
    }
    snprintf(b->address, sizeof b->address, "%s:%d", b->host, b->port);
    for (int i = 0; i < SCRIPT_COUNT; i++) {
        if (sha1_hex(scripts[i], b->sha[i]) < 0) {
            snprintf(err, errlen, "SHA1 unavailable");
            goto fail;
        }
    }
    return b;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    redis_free(b);
    return NULL;
}

static void drop(struct fl_backend *b)
{
    if (b->ctx) {
        redisFree(b->ctx);
        b->ctx = NULL;
    }
}

/* Runs a command on the connected context. Returns the reply (caller frees)
 * or NULL after an I/O error (context dropped, message in err). */
static redisReply *command(struct fl_backend *b, int argc, const char **argv, const size_t *lens,
                           char *err, size_t errlen)
{
    redisReply *r = redisCommandArgv(b->ctx, argc, argv, lens);

    if (r == NULL) {
        snprintf(err, errlen, "redis at %s: %s", b->address,
                 b->ctx->errstr[0] ? b->ctx->errstr : "I/O error");
        drop(b);
    }
    return r;
}

static int redis_connect(struct fl_backend *b, uint64_t timeout_ms, char *err, size_t errlen)
{
    struct timeval tv;
    redisReply *r = NULL;
    int rc = FL_ERR_BACKEND;

    if (b->ctx && b->timeout_ms == timeout_ms)
        return FL_OK;
    b->timeout_ms = timeout_ms;
    tv.tv_sec = (time_t)(timeout_ms / 1000);
    tv.tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000;
    if (b->ctx) {
        if (redisSetTimeout(b->ctx, tv) != REDIS_OK)
            drop(b);
        else
            return FL_OK;
    }
    b->ctx = redisConnectWithTimeout(b->host, b->port, tv);
    if (b->ctx == NULL || b->ctx->err) {
        snprintf(err, errlen, "cannot connect to redis at %s: %s", b->address,
                 b->ctx ? b->ctx->errstr : "out of memory");
        goto out;
    }
    if (redisSetTimeout(b->ctx, tv) != REDIS_OK) {
        snprintf(err, errlen, "redis at %s: cannot set timeout", b->address);
        goto out;
    }
    if (b->password) {
        const char *argv[3] = {"AUTH", b->user ? b->user : b->password, b->password};
        int argc = b->user ? 3 : 2;

        if ((r = command(b, argc, argv, NULL, err, errlen)) == NULL)
            goto out;
        if (r->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "redis at %s refused AUTH: %s", b->address, r->str);
            goto out;
        }
        freeReplyObject(r);
        r = NULL;
    }
    if (b->db != 0) {
        char dbs[16];
        const char *argv[2] = {"SELECT", dbs};

        snprintf(dbs, sizeof dbs, "%d", b->db);
        if ((r = command(b, 2, argv, NULL, err, errlen)) == NULL)
            goto out;
        if (r->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "redis at %s refused SELECT %d: %s", b->address, b->db, r->str);
            goto out;
        }
    }
    rc = FL_OK;
out:
    if (r)
        freeReplyObject(r);
    if (rc != FL_OK)
        drop(b);
    return rc;
}

/* Runs script idx on the keys of name with args. On FL_OK *out is the reply
 * (caller frees), never an error reply. */
static int run_script(struct fl_backend *b, int idx, const char *name, int nargs,
                      const char *const *args, redisReply **out, char *err, size_t errlen)
{
    const char *argv[8];
    char *lock = NULL, *tok = NULL;
    redisReply *r = NULL;
    int rc = FL_ERR_INTERNAL, argc = 0;

    *out = NULL;
    if (b->ctx == NULL && redis_connect(b, b->timeout_ms, err, errlen) != FL_OK)
        return FL_ERR_BACKEND;
    if (asprintf(&lock, "fence:{%s}:lock", name) < 0) {
        lock = NULL;
        goto out;
    }
    if (asprintf(&tok, "fence:{%s}:token", name) < 0) {
        tok = NULL;
        goto out;
    }
    argv[argc++] = "EVALSHA";
    argv[argc++] = b->sha[idx];
    argv[argc++] = "2";
    argv[argc++] = lock;
    argv[argc++] = tok;
    for (int i = 0; i < nargs && argc < 8; i++)
        argv[argc++] = args[i];
    rc = FL_ERR_BACKEND;
    if ((r = command(b, argc, argv, NULL, err, errlen)) == NULL)
        goto out;
    if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        /* The server lost its script cache; EVAL sends the text and caches it. */
        freeReplyObject(r);
        argv[0] = "EVAL";
        argv[1] = scripts[idx];
        if ((r = command(b, argc, argv, NULL, err, errlen)) == NULL)
            goto out;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "redis at %s answered: %s", b->address, r->str);
        goto out;
    }
    *out = r;
    r = NULL;
    rc = FL_OK;
out:
    if (r)
        freeReplyObject(r);
    free(lock);
    free(tok);
    return rc;
}

static int want_integer(struct fl_backend *b, redisReply *r, char *err, size_t errlen)
{
    if (r->type != REDIS_REPLY_INTEGER) {
        snprintf(err, errlen, "redis at %s: unexpected reply type %d", b->address, r->type);
        return -1;
    }
    return 0;
}

static int redis_acquire(struct fl_backend *b, const char *name, const char *owner, uint64_t ttl_ms,
                         uint64_t *token, char *err, size_t errlen)
{
    char ttl[24];
    const char *args[2] = {owner, ttl};
    redisReply *r = NULL;
    int rc;

    snprintf(ttl, sizeof ttl, "%" PRIu64, ttl_ms);
    rc = run_script(b, SCRIPT_ACQUIRE, name, 2, args, &r, err, errlen);
    if (rc != FL_OK)
        return rc;
    if (want_integer(b, r, err, errlen) < 0) {
        rc = FL_ERR_BACKEND;
    } else if (r->integer <= 0) {
        snprintf(err, errlen, "lock '%s' is held by another owner", name);
        rc = FL_ERR_NOT_ACQUIRED;
    } else {
        *token = (uint64_t)r->integer;
    }
    freeReplyObject(r);
    return rc;
}

static int compare_and_act(struct fl_backend *b, int idx, const char *name, const char *owner,
                           const char *ttl, char *err, size_t errlen)
{
    const char *args[2] = {owner, ttl};
    redisReply *r = NULL;
    int rc;

    rc = run_script(b, idx, name, ttl ? 2 : 1, args, &r, err, errlen);
    if (rc != FL_OK)
        return rc;
    if (want_integer(b, r, err, errlen) < 0) {
        rc = FL_ERR_BACKEND;
    } else if (r->integer != 1) {
        snprintf(err, errlen, "owner %s does not hold lock '%s'", owner, name);
        rc = FL_ERR_NOT_OWNER;
    }
    freeReplyObject(r);
    return rc;
}

static int redis_renew(struct fl_backend *b, const char *name, const char *owner, uint64_t ttl_ms,
                       char *err, size_t errlen)
{
    char ttl[24];

    snprintf(ttl, sizeof ttl, "%" PRIu64, ttl_ms);
    return compare_and_act(b, SCRIPT_RENEW, name, owner, ttl, err, errlen);
}

static int redis_release(struct fl_backend *b, const char *name, const char *owner, char *err,
                         size_t errlen)
{
    return compare_and_act(b, SCRIPT_RELEASE, name, owner, NULL, err, errlen);
}

static int redis_status(struct fl_backend *b, const char *name, struct fl_lock_status *st,
                        char *err, size_t errlen)
{
    redisReply *r = NULL, *o, *p, *t;
    char *endp;
    int rc;

    memset(st, 0, sizeof *st);
    rc = run_script(b, SCRIPT_STATUS, name, 0, NULL, &r, err, errlen);
    if (rc != FL_OK)
        return rc;
    rc = FL_ERR_BACKEND;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3)
        goto bad;
    o = r->element[0];
    p = r->element[1];
    t = r->element[2];
    if (o->type != REDIS_REPLY_STRING || p->type != REDIS_REPLY_INTEGER ||
        t->type != REDIS_REPLY_STRING)
        goto bad;
    errno = 0;
    st->token = strtoull(t->str, &endp, 10);
    if (errno || *endp != '\0' || t->str[0] == '-')
        goto bad;
    if (o->len > 0) {
        st->held = 1;
        snprintf(st->owner, sizeof st->owner, "%.*s", (int)o->len, o->str);
        st->ttl_ms = p->integer;
    }
    rc = FL_OK;
    goto out;
bad:
    snprintf(err, errlen, "redis at %s: malformed status reply", b->address);
out:
    freeReplyObject(r);
    return rc;
}

static const char *redis_address(const struct fl_backend *b)
{
    return b->address;
}

const struct fl_backend_ops fl_redis_ops = {
    .scheme = "redis",
    .open = redis_open,
    .connect = redis_connect,
    .acquire = redis_acquire,
    .renew = redis_renew,
    .release = redis_release,
    .status = redis_status,
    .address = redis_address,
    .free = redis_free,
};

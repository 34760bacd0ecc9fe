/* fl_redis: the Redis lock backend, the only file that includes hiredis or
 * knows Redis commands. Each operation is one Lua script run by EVALSHA (the
 * SHA1 is computed here, so no SCRIPT LOAD round trip), falling back to EVAL
 * when the server answers NOSCRIPT (after a restart or SCRIPT FLUSH). Keys are
 * fence:{NAME}:lock (value: owner id, with a PX expiry), fence:{NAME}:token
 * (the last token issued, no expiry) and fence:{NAME}:wake (a list that release pushes
 * one element to, so a waiter blocked in BLPOP wakes at once), and for
 * read-write locks fence:{NAME}:rw:readers, :rw:wwait (sorted sets owner ->
 * expiry ms) and :rw:kind; the {NAME} hash tag keeps them all in one
 * cluster slot so a script may touch them.
 * The session of a hold is its owner id, kept alive per lock by PEXPIRE.
 * Owns one hiredis context, dropped after any I/O error and reopened by the
 * next call. Also serves fl_redlock.c one node at a time through
 * fl_redis_internal.h, so hiredis stays in this file. */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "fl_backend.h"
#include "fl_redis_internal.h"

/* SET NX PX then the next token, only on success: the token is issued
 * atomically with the lock, so tokens strictly increase per name across
 * owners. The next token is max(counter + 1, Redis TIME in microseconds):
 * a counter lost with a restart without persistence, or rewound to an RDB
 * snapshot by kill -9, restarts above every token issued before, as long as
 * Redis's wall clock has not stepped back by more than the time the restart
 * took, and no name is acquired more than once per microsecond on average
 * (one script per acquire and one per release keep far below that); A3 in
 * docs/safety.md, the design in docs/lockclient.md. Lua numbers are doubles:
 * exact below 2^53 us, i.e. until the year 2255. Returns the
 * token (> 0), or -1 - PTTL if the lock is held by another owner (so a
 * waiter knows how long to block at most). If this very owner already holds
 * it (a retry after the reply to the first try was lost; owner ids are unique
 * per acquisition) it returns the token already issued, so the client may
 * resend an acquire safely. A winner clears the wake list: a wake-up pushed
 * for an earlier release is not for the waiters behind it. */
#define LUA_NOW                                                                                    \
    "local tm = redis.call('TIME')\n"                                                              \
    "local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)\n"                    \
    "redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)\n"                                       \
    "redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)\n"
/* Keeps a set's key at least as long as the entry just added (ARGV[2] ms),
 * so a set whose members all died disappears without another script. */
#define LUA_KEEP(k)                                                                                \
    "if redis.call('PTTL', " k ") < tonumber(ARGV[2]) then redis.call('PEXPIRE', " k                \
    ", ARGV[2]) end\n"
#define LUA_NEXT_TOKEN                                                                             \
    "local function next_token()\n"                                                                \
    "  local t = redis.call('TIME')\n"                                                             \
    "  local us = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"                                     \
    "  local n = tonumber(redis.call('GET', KEYS[2]) or '0') + 1\n"                                \
    "  if us > n then n = us end\n"                                                                \
    "  redis.call('SET', KEYS[2], string.format('%.0f', n))\n"                                     \
    "  return n\n"                                                                                 \
    "end\n"

/* The exclusive (write) lock. Keys 4-6 are the read-write lock's: readers
 * (a sorted set owner -> expiry in Redis ms), waiting writers (the same
 * shape) and the kind of the last token issued ('w' or 'r'); entries past
 * their expiry are dropped first. SET NX PX, only when no reader holds, then
 * the next token: the token is issued atomically with the lock, so tokens
 * strictly increase per name across owners, readers' included. The next
 * token is max(counter + 1, Redis TIME in microseconds):
 * a counter lost with a restart without persistence, or rewound to an RDB
 * snapshot by kill -9, restarts above every token issued before, as long as
 * Redis's wall clock has not stepped back by more than the time the restart
 * took, and no name is acquired more than once per microsecond on average
 * (one script per acquire and one per release keep far below that); A3 in
 * docs/safety.md, the design in docs/lockclient.md. Lua numbers are doubles:
 * exact below 2^53 us, i.e. until the year 2255. Returns the
 * token (> 0), or -1 - W if the lock is held by another owner or by readers,
 * W the ms until the holder's key or the first reader expires (so a waiter
 * knows how long to block at most); a blocked writer is then listed as
 * waiting until now + TTL, which keeps new readers out (writer preference;
 * it refreshes the entry on every retry). If this very owner already holds
 * it (a retry after the reply to the first try was lost; owner ids are unique
 * per acquisition) it returns the token already issued, so the client may
 * resend an acquire safely. A winner clears the wake list: a wake-up pushed
 * for an earlier release is not for the waiters behind it. */
static const char script_acquire[] =
    LUA_NOW LUA_NEXT_TOKEN
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "  return tonumber(redis.call('GET', KEYS[2]) or '0')\n"
    "end\n"
    "local nr = redis.call('ZCARD', KEYS[4])\n"
    "if nr == 0 and redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then\n"
    "  redis.call('DEL', KEYS[3])\n"
    "  redis.call('ZREM', KEYS[5], ARGV[1])\n"
    "  local n = next_token()\n"
    "  redis.call('SET', KEYS[6], 'w')\n"
    "  return n\n"
    "end\n"
    "redis.call('ZADD', KEYS[5], now + tonumber(ARGV[2]), ARGV[1])\n"
    LUA_KEEP("KEYS[5]")
    "local p = redis.call('PTTL', KEYS[1])\n"
    "if nr > 0 then\n"
    "  local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')\n"
    "  p = tonumber(first[2]) - now\n"
    "end\n"
    "if p < 0 then p = 0 end\n"
    "return -1 - p\n";

/* A shared (read) hold: enters only when no writer holds and none waits
 * (writer preference), as a member of the readers set with expiry now +
 * TTL. Its token is the read epoch: a reader that enters while no other
 * reader holds (the set is empty once expired entries are dropped) takes
 * the next token and marks it 'r'; a reader that enters while readers hold
 * shares their token (the last issued, an 'r' one: no writer came in
 * between, it would have needed the set empty). So a writer's token is
 * above every earlier reader's, a reader's above every earlier writer's,
 * and readers holding together share one token: the same rule as the etcd
 * and ZooKeeper backends (docs/lockclient.md). Returns the token,
 * or -1 - PTTL of the writer (0 when only a writer waits). A resend by a
 * holding reader returns its token. */
static const char script_acquire_shared[] =
    LUA_NOW LUA_NEXT_TOKEN
    "if redis.call('ZSCORE', KEYS[4], ARGV[1]) then\n"
    "  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[2]), ARGV[1])\n"
    LUA_KEEP("KEYS[4]")
    "  return tonumber(redis.call('GET', KEYS[2]) or '0')\n"
    "end\n"
    "if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('ZCARD', KEYS[5]) > 0 then\n"
    "  local p = redis.call('PTTL', KEYS[1])\n"
    "  if p < 0 then p = 0 end\n"
    "  return -1 - p\n"
    "end\n"
    "local n\n"
    "if redis.call('GET', KEYS[6]) ~= 'r' or redis.call('ZCARD', KEYS[4]) == 0 then\n"
    "  n = next_token()\n"
    "  redis.call('SET', KEYS[6], 'r')\n"
    "else\n"
    "  n = tonumber(redis.call('GET', KEYS[2]))\n"
    "end\n"
    "redis.call('ZADD', KEYS[4], now + tonumber(ARGV[2]), ARGV[1])\n"
    LUA_KEEP("KEYS[4]")
    "return n\n";

/* A reader's renewal: only while its entry has not expired. */
static const char script_renew_shared[] =
    LUA_NOW
    "if redis.call('ZSCORE', KEYS[4], ARGV[1]) then\n"
    "  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[2]), ARGV[1])\n"
    LUA_KEEP("KEYS[4]")
    "  return 1\n"
    "end\n"
    "return 0\n";

/* A reader's release wakes one waiter, as the writer's does. */
static const char script_release_shared[] = LUA_NOW
    "if redis.call('ZREM', KEYS[4], ARGV[1]) == 1 then\n"
    "  redis.call('LPUSH', KEYS[3], '1')\n"
    "  redis.call('LTRIM', KEYS[3], 0, 0)\n"
    "  redis.call('PEXPIRE', KEYS[3], 60000)\n"
    "  return 1\n"
    "end\n"
    "return 0\n";

/* A writer that gave up waiting (or failed) stops keeping readers out. */
static const char script_withdraw[] = "redis.call('ZREM', KEYS[5], ARGV[1])\n"
                                      "return 1\n";

/* Compare-and-act: only the current owner may extend or delete. */
static const char script_renew[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                   "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                                   "end\n"
                                   "return 0\n";

/* Release wakes one waiter: BLPOP serves the longest-blocked client first.
 * At most one wake-up is pending (LTRIM), and it expires if nobody waits. */
static const char script_release[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                     "  redis.call('DEL', KEYS[1])\n"
                                     "  redis.call('LPUSH', KEYS[3], '1')\n"
                                     "  redis.call('LTRIM', KEYS[3], 0, 0)\n"
                                     "  redis.call('PEXPIRE', KEYS[3], 60000)\n"
                                     "  return 1\n"
                                     "end\n"
                                     "return 0\n";

/* The holder's token is the last token issued while the lock key exists:
 * acquire writes a new one only when it sets the key. */
static const char script_verify[] = "if not redis.call('GET', KEYS[1]) then return 0 end\n"
                                    "if redis.call('GET', KEYS[2]) == ARGV[1] then return 1 end\n"
                                    "return 0\n";

/* One consistent snapshot: {owner or '', pttl, last token or '0'}. */
static const char script_status[] = "local o = redis.call('GET', KEYS[1])\n"
                                    "local t = redis.call('GET', KEYS[2])\n"
                                    "local p = redis.call('PTTL', KEYS[1])\n"
                                    "if not o then o = '' end\n"
                                    "if not t then t = '0' end\n"
                                    "return {o, p, t}\n";

/* Redlock's second phase (fl_redlock.c): while this owner still holds the
 * lock on this node, raise the token to ARGV[2] (the maximum the holder saw
 * over its majority), so the next holder's acquire on this node issues a
 * token above it. 1 if raised or already there, 0 if the lock has another
 * owner or none. */
static const char script_raise[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end\n"
    "local t = tonumber(redis.call('GET', KEYS[2]) or '0')\n"
    "local w = tonumber(ARGV[2])\n"
    "if w > t then redis.call('SET', KEYS[2], string.format('%.0f', w)) end\n"
    "return 1\n";

enum {
    SCRIPT_ACQUIRE,
    SCRIPT_RENEW,
    SCRIPT_RELEASE,
    SCRIPT_STATUS,
    SCRIPT_VERIFY,
    SCRIPT_RAISE,
    SCRIPT_ACQUIRE_SHARED,
    SCRIPT_RENEW_SHARED,
    SCRIPT_RELEASE_SHARED,
    SCRIPT_WITHDRAW,
    SCRIPT_COUNT
};

static const char *const scripts[SCRIPT_COUNT] = {
    script_acquire,        script_renew,          script_release,        script_status,
    script_verify,         script_raise,          script_acquire_shared, script_renew_shared,
    script_release_shared, script_withdraw};

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
    int stale; /* the last I/O error was a closed connection, not a timeout */
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
        b->stale = b->ctx->err == REDIS_ERR_EOF ||
                   (b->ctx->err == REDIS_ERR_IO && (errno == ECONNRESET || errno == EPIPE));
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
    static const char *const kind[] = {"readers", "wwait", "kind"};
    const char *argv[13];
    char *lock = NULL, *tok = NULL, *wake = NULL, *rw[3] = {NULL, NULL, NULL};
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
    if (asprintf(&wake, "fence:{%s}:wake", name) < 0) {
        wake = NULL;
        goto out;
    }
    for (int i = 0; i < 3; i++) {
        if (asprintf(&rw[i], "fence:{%s}:rw:%s", name, kind[i]) < 0) {
            rw[i] = NULL;
            goto out;
        }
    }
    argv[argc++] = "EVALSHA";
    argv[argc++] = b->sha[idx];
    argv[argc++] = "6";
    argv[argc++] = lock;
    argv[argc++] = tok;
    argv[argc++] = wake;
    for (int i = 0; i < 3; i++)
        argv[argc++] = rw[i];
    for (int i = 0; i < nargs && argc < 13; i++)
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
    free(wake);
    for (int i = 0; i < 3; i++)
        free(rw[i]);
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

/* Blocks in BLPOP on name's wake list for up to wait_ms (> 0): returns when
 * a release pushes, at the timeout, or FL_ERR_BACKEND. The socket timeout is
 * raised for the call so the client does not give up before the server. */
static int wait_wake(struct fl_backend *b, const char *name, int64_t wait_ms, char *err,
                     size_t errlen)
{
    char secs[32];
    const char *argv[3] = {"BLPOP", NULL, secs};
    struct timeval tv;
    uint64_t total = (uint64_t)wait_ms + b->timeout_ms;
    redisReply *r = NULL;
    char *wake = NULL;
    int rc = FL_ERR_INTERNAL;

    if (asprintf(&wake, "fence:{%s}:wake", name) < 0) {
        wake = NULL;
        goto out;
    }
    argv[1] = wake;
    snprintf(secs, sizeof secs, "%" PRId64 ".%03d", wait_ms / 1000, (int)(wait_ms % 1000));
    rc = FL_ERR_BACKEND;
    tv.tv_sec = (time_t)(total / 1000);
    tv.tv_usec = (suseconds_t)(total % 1000) * 1000;
    if (redisSetTimeout(b->ctx, tv) != REDIS_OK) {
        snprintf(err, errlen, "redis at %s: cannot set timeout", b->address);
        drop(b);
        goto out;
    }
    if ((r = command(b, 3, argv, NULL, err, errlen)) == NULL)
        goto out;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "redis at %s answered: %s", b->address, r->str);
        goto out;
    }
    tv.tv_sec = (time_t)(b->timeout_ms / 1000);
    tv.tv_usec = (suseconds_t)(b->timeout_ms % 1000) * 1000;
    if (redisSetTimeout(b->ctx, tv) != REDIS_OK) {
        drop(b);
        goto out;
    }
    rc = FL_OK;
out:
    if (r)
        freeReplyObject(r);
    free(wake);
    return rc;
}

/* The acquire script idx (exclusive or shared), then (while held and
 * before deadline_ms) a BLPOP on the wake list bounded by the holder's PTTL,
 * so a waiter retries at once after a release and right when an abandoned
 * lock expires. A waiting writer retries at least every TTL/3 (its waiting
 * entry, which keeps new readers out, lasts a TTL); a waiting reader polls
 * every 50 ms without BLPOP (one release wakes one waiter, a writer's
 * release may let many readers in, and a wake-up taken by a reader would
 * be lost to the writer it was meant for). A writer that gives up
 * withdraws its waiting entry. */
static int acquire_with(struct fl_backend *b, int idx, const char *name, const char *owner,
                        uint64_t ttl_ms, int64_t deadline_ms, struct fl_grant *g, char *err,
                        size_t errlen)
{
    char ttl[24];
    const char *args[2] = {owner, ttl};
    int64_t cap = idx == SCRIPT_ACQUIRE_SHARED ? 50 : (int64_t)(ttl_ms / 3 > 0 ? ttl_ms / 3 : 1);
    int rc;

    snprintf(ttl, sizeof ttl, "%" PRIu64, ttl_ms);
    for (;;) {
        redisReply *r = NULL;
        int64_t t0 = fl_now_ms(), left, wait;
        long long v;

        rc = run_script(b, idx, name, 2, args, &r, err, errlen);
        if (rc != FL_OK)
            return rc;
        if (want_integer(b, r, err, errlen) < 0) {
            freeReplyObject(r);
            return FL_ERR_BACKEND;
        }
        v = r->integer;
        freeReplyObject(r);
        if (v > 0) {
            g->token = (uint64_t)v;
            g->ttl_ms = ttl_ms;
            g->expiry_ms = t0 + (int64_t)ttl_ms;
            return FL_OK;
        }
        left = deadline_ms - fl_now_ms();
        if (left <= 0) {
            if (idx == SCRIPT_ACQUIRE) {
                redisReply *w = NULL;

                if (run_script(b, SCRIPT_WITHDRAW, name, 1, args, &w, err, errlen) == FL_OK)
                    freeReplyObject(w);
            }
            snprintf(err, errlen, "lock '%s' is held by another owner", name);
            return FL_ERR_NOT_ACQUIRED;
        }
        /* -1 - PTTL: wake one ms after the holder's key expires at the
         * latest; a key without expiry (PTTL 0 here) is polled every 50 ms. */
        wait = v == -1 ? 50 : -1 - v + 1;
        if (wait > cap)
            wait = cap;
        if (wait > left)
            wait = left;
        if (idx == SCRIPT_ACQUIRE_SHARED) {
            /* A reader polls without BLPOP: a release pushes one wake-up,
             * and a reader that popped it while a writer waits would leave
             * the writer asleep until the holder's expiry. */
            struct timespec ts = {(time_t)(wait / 1000), (long)(wait % 1000) * 1000000L};

            nanosleep(&ts, NULL);
        } else if ((rc = wait_wake(b, name, wait, err, errlen)) != FL_OK) {
            return rc;
        }
    }
}

static int redis_acquire(struct fl_backend *b, const char *name, char owner[FL_OWNER_MAX + 1],
                         uint64_t ttl_ms, int64_t deadline_ms, struct fl_grant *g, char *err,
                         size_t errlen)
{
    return acquire_with(b, SCRIPT_ACQUIRE, name, owner, ttl_ms, deadline_ms, g, err, errlen);
}

static int redis_acquire_shared(struct fl_backend *b, const char *name,
                                char owner[FL_OWNER_MAX + 1], uint64_t ttl_ms,
                                int64_t deadline_ms, struct fl_grant *g, char *err,
                                size_t errlen)
{
    return acquire_with(b, SCRIPT_ACQUIRE_SHARED, name, owner, ttl_ms, deadline_ms, g, err,
                        errlen);
}

/* Nothing is queued on Redis but a writer's waiting entry. */
static int redis_cancel(struct fl_backend *b, const char *name, const char *owner, char *err,
                        size_t errlen)
{
    const char *args[1] = {owner};
    redisReply *r = NULL;
    int rc = run_script(b, SCRIPT_WITHDRAW, name, 1, args, &r, err, errlen);

    if (r)
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
                       struct fl_grant *g, char *err, size_t errlen)
{
    int64_t t0 = fl_now_ms();
    char ttl[24];
    int rc;

    snprintf(ttl, sizeof ttl, "%" PRIu64, ttl_ms);
    rc = compare_and_act(b, SCRIPT_RENEW, name, owner, ttl, err, errlen);
    if (rc == FL_OK) {
        g->ttl_ms = ttl_ms;
        g->expiry_ms = t0 + (int64_t)ttl_ms;
    }
    return rc;
}

static int redis_release(struct fl_backend *b, const char *name, const char *owner, char *err,
                         size_t errlen)
{
    return compare_and_act(b, SCRIPT_RELEASE, name, owner, NULL, err, errlen);
}

static int redis_renew_shared(struct fl_backend *b, const char *name, const char *owner,
                              uint64_t ttl_ms, struct fl_grant *g, char *err, size_t errlen)
{
    int64_t t0 = fl_now_ms();
    char ttl[24];
    int rc;

    snprintf(ttl, sizeof ttl, "%" PRIu64, ttl_ms);
    rc = compare_and_act(b, SCRIPT_RENEW_SHARED, name, owner, ttl, err, errlen);
    if (rc == FL_OK) {
        g->ttl_ms = ttl_ms;
        g->expiry_ms = t0 + (int64_t)ttl_ms;
    }
    return rc;
}

static int redis_release_shared(struct fl_backend *b, const char *name, const char *owner,
                                char *err, size_t errlen)
{
    return compare_and_act(b, SCRIPT_RELEASE_SHARED, name, owner, NULL, err, errlen);
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
        snprintf(st->label, sizeof st->label, "%s", st->owner); /* Redis keeps the owner */
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

static int redis_verify(struct fl_backend *b, const char *name, uint64_t token, int *current,
                        char *err, size_t errlen)
{
    char tok[24];
    const char *args[1] = {tok};
    redisReply *r = NULL;
    int rc;

    snprintf(tok, sizeof tok, "%" PRIu64, token);
    rc = run_script(b, SCRIPT_VERIFY, name, 1, args, &r, err, errlen);
    if (rc != FL_OK)
        return rc;
    if (want_integer(b, r, err, errlen) < 0)
        rc = FL_ERR_BACKEND;
    else
        *current = r->integer == 1;
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
    .cancel = redis_cancel,
    .renew = redis_renew,
    .release = redis_release,
    .status = redis_status,
    .verify = redis_verify,
    .address = redis_address,
    .free = redis_free,
    .acquire_shared = redis_acquire_shared,
    .renew_shared = redis_renew_shared,
    .release_shared = redis_release_shared,
};

/* ---- one node of a Redlock (fl_redis_internal.h) ---- */

#define NODE(n) ((struct fl_backend *)(n))

struct fl_redis_node *fl_redis_node_open(const char *url, char *err, size_t errlen)
{
    return (struct fl_redis_node *)redis_open(url, err, errlen);
}

void fl_redis_node_free(struct fl_redis_node *n)
{
    redis_free(NODE(n));
}

int fl_redis_node_connect(struct fl_redis_node *n, uint64_t timeout_ms, char *err, size_t errlen)
{
    return redis_connect(NODE(n), timeout_ms, err, errlen);
}

const char *fl_redis_node_address(const struct fl_redis_node *n)
{
    return ((const struct fl_backend *)n)->address;
}

int fl_redis_node_stale(struct fl_redis_node *n)
{
    int s = NODE(n)->stale;

    NODE(n)->stale = 0;
    return s;
}

int fl_redis_node_try(struct fl_redis_node *n, const char *name, const char *owner,
                      uint64_t ttl_ms, uint64_t *token, int64_t *pttl_ms, char *err,
                      size_t errlen)
{
    struct fl_backend *b = NODE(n);
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
    } else if (r->integer > 0) {
        *token = (uint64_t)r->integer;
    } else {
        *pttl_ms = -1 - r->integer;
        rc = FL_ERR_NOT_ACQUIRED;
    }
    freeReplyObject(r);
    return rc;
}

int fl_redis_node_raise(struct fl_redis_node *n, const char *name, const char *owner,
                        uint64_t token, char *err, size_t errlen)
{
    char tok[24];

    snprintf(tok, sizeof tok, "%" PRIu64, token);
    return compare_and_act(NODE(n), SCRIPT_RAISE, name, owner, tok, err, errlen);
}

int fl_redis_node_renew(struct fl_redis_node *n, const char *name, const char *owner,
                        uint64_t ttl_ms, char *err, size_t errlen)
{
    struct fl_grant g;

    return redis_renew(NODE(n), name, owner, ttl_ms, &g, err, errlen);
}

int fl_redis_node_release(struct fl_redis_node *n, const char *name, const char *owner, char *err,
                          size_t errlen)
{
    return redis_release(NODE(n), name, owner, err, errlen);
}

int fl_redis_node_status(struct fl_redis_node *n, const char *name, struct fl_lock_status *st,
                         char *err, size_t errlen)
{
    return redis_status(NODE(n), name, st, err, errlen);
}

int fl_redis_node_wait(struct fl_redis_node *n, const char *name, int64_t wait_ms, char *err,
                       size_t errlen)
{
    struct fl_backend *b = NODE(n);

    if (b->ctx == NULL && redis_connect(b, b->timeout_ms, err, errlen) != FL_OK)
        return FL_ERR_BACKEND;
    return wait_wake(b, name, wait_ms, err, errlen);
}

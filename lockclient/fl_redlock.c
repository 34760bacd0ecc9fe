/* fl_redlock: the Redlock backend (redlock://host:port,host:port,...): N
 * independent Redis masters (N odd, 3..15), a lock held when a majority
 * Q = N/2 + 1 holds the same key with the same random value, as specified on
 * redis.io. Each node is driven through fl_redis.c (fl_redis_internal.h):
 * the same keys and scripts as the single-Redis backend, so a node's own
 * token for a name is max(last + 1, its TIME in us), issued with its SET NX.
 *
 * Token (the design and its limits are in docs/lockclient.md, "Redlock"):
 * after a majority granted, the client takes T = the maximum of the grants'
 * per-node tokens and writes T back (raise) to every node that granted, each
 * write conditional on still holding the key there; T is used only once a
 * majority took it. Any two holders that both got a token share a node X
 * (two majorities intersect); on X the earlier one's raise came before the
 * later one's SET NX (it needed the key still held), so the later one's
 * per-node token on X, and with it its T, is above the earlier T. So tokens
 * are unique and rise in order of acquisition without any clock assumption,
 * as long as no node forgets its keys (persistence with appendfsync always).
 * A node that restarts empty reseeds from TIME: then only the clock keeps the
 * order (A3 in docs/safety.md).
 *
 * Time: validity = TTL - elapsed - drift (drift = TTL/100 + 2 ms); the grant's
 * expiry is start + TTL - drift on CLOCK_MONOTONIC, start taken before the
 * first SET was sent. Owns its node handles. Not thread-safe. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fl_backend.h"
#include "fl_redis_internal.h"

#define RL_MAX_NODES 15

struct fl_backend {
    size_t n;
    struct fl_redis_node *node[RL_MAX_NODES];
    char address[RL_MAX_NODES * 64];
    uint64_t timeout_ms;
    uint64_t rng; /* xorshift state for the retry delay */
};

static size_t quorum(const struct fl_backend *b)
{
    return b->n / 2 + 1;
}

static int64_t drift_ms(uint64_t ttl_ms)
{
    return (int64_t)(ttl_ms / 100) + 2;
}

static void rl_free(struct fl_backend *b)
{
    if (b == NULL)
        return;
    for (size_t i = 0; i < b->n; i++)
        fl_redis_node_free(b->node[i]);
    free(b);
}

/* redlock://ENTRY,ENTRY,... where each ENTRY is what redis:// takes after
 * its scheme without a database ([[user]:password@]host[:port]). */
static struct fl_backend *rl_open(const char *url, char *err, size_t errlen)
{
    static const char prefix[] = "redlock://";
    struct fl_backend *b = NULL;
    const char *p, *end;
    char one[600];
    size_t off = 0;

    if (strncmp(url, prefix, sizeof prefix - 1) != 0) {
        snprintf(err, errlen, "not a redlock:// URL: %s", url);
        goto fail;
    }
    b = calloc(1, sizeof *b);
    if (b == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    b->timeout_ms = 2000;
    b->rng = (uint64_t)fl_now_ms() * 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid();
    for (p = url + sizeof prefix - 1;; p = end + 1) {
        const char *addr;

        end = strchr(p, ',');
        if (end == NULL)
            end = p + strlen(p);
        if (end == p || memchr(p, '/', (size_t)(end - p)) != NULL) {
            snprintf(err, errlen, "bad node list in URL (want host:port,host:port,...): %s", url);
            goto fail;
        }
        if (b->n == RL_MAX_NODES) {
            snprintf(err, errlen, "more than %d nodes in URL: %s", RL_MAX_NODES, url);
            goto fail;
        }
        snprintf(one, sizeof one, "redis://%.*s", (int)(end - p), p);
        b->node[b->n] = fl_redis_node_open(one, err, errlen);
        if (b->node[b->n] == NULL)
            goto fail;
        addr = fl_redis_node_address(b->node[b->n]);
        /* The same server twice would count twice towards a majority. */
        for (size_t i = 0; i < b->n; i++) {
            if (strcmp(fl_redis_node_address(b->node[i]), addr) == 0) {
                snprintf(err, errlen, "node %s given twice in URL: %s", addr, url);
                b->n++;
                goto fail;
            }
        }
        b->n++;
        off += (size_t)snprintf(b->address + off, sizeof b->address - off, "%s%s", off ? "," : "",
                                addr);
        if (*end == '\0')
            break;
    }
    if (b->n < 3 || b->n % 2 == 0) {
        snprintf(err, errlen,
                 "redlock needs an odd number of nodes, at least 3 (got %zu; one node: use "
                 "redis://): %s",
                 b->n, url);
        goto fail;
    }
    return b;
fail:
    rl_free(b);
    return NULL;
}

/* NODE_CALL: connects node i with timeout tmo and runs call into rc, once
 * more on a fresh connection when the server had closed the old one (a
 * restart), as RETRY_ONCE does for a whole call in fl_client.c. A timeout is
 * not retried: the node is slow, and the round's validity is ticking. */
#define NODE_CALL(rc, b, i, tmo, one, call)                                                        \
    do {                                                                                           \
        for (int t_ = 0; t_ < 2; t_++) {                                                           \
            (rc) = fl_redis_node_connect((b)->node[i], (tmo), (one), sizeof(one));                 \
            if ((rc) == FL_OK)                                                                     \
                (rc) = (call);                                                                     \
            if ((rc) != FL_ERR_BACKEND || !fl_redis_node_stale((b)->node[i]))                      \
                break;                                                                             \
        }                                                                                          \
    } while (0)

/* Appends "; msg" (or msg) to the failure list in buf. */
static void note(char *buf, size_t len, const char *msg)
{
    size_t used = strlen(buf);

    if (used + 3 < len)
        snprintf(buf + used, len - used, "%s%s", used ? "; " : "", msg);
}

/* Connects every node; FL_OK when at least a majority is reachable, else
 * FL_ERR_BACKEND naming the nodes that are not. */
static int rl_connect(struct fl_backend *b, uint64_t timeout_ms, char *err, size_t errlen)
{
    char fails[1500] = "", one[512];
    size_t ok = 0;

    b->timeout_ms = timeout_ms;
    for (size_t i = 0; i < b->n; i++) {
        if (fl_redis_node_connect(b->node[i], timeout_ms, one, sizeof one) == FL_OK)
            ok++;
        else
            note(fails, sizeof fails, one);
    }
    if (ok >= quorum(b))
        return FL_OK;
    snprintf(err, errlen, "redlock: %zu of %zu nodes reachable, a majority of %zu needed: %s", ok,
             b->n, quorum(b), fails);
    return FL_ERR_BACKEND;
}

/* Deletes owner's key on every node (errors ignored: a node that missed it
 * lets the key expire). Returns how many nodes deleted it. */
static size_t release_all(struct fl_backend *b, const char *name, const char *owner,
                          size_t *not_owner, char *fails, size_t flen)
{
    char one[512];
    size_t ok = 0;

    *not_owner = 0;
    for (size_t i = 0; i < b->n; i++) {
        int rc;

        NODE_CALL(rc, b, i, b->timeout_ms, one,
                  fl_redis_node_release(b->node[i], name, owner, one, sizeof one));

        if (rc == FL_OK)
            ok++;
        else if (rc == FL_ERR_NOT_OWNER)
            (*not_owner)++;
        else if (fails)
            note(fails, flen, one);
    }
    return ok;
}

static uint64_t next_random(struct fl_backend *b)
{
    b->rng ^= b->rng << 13;
    b->rng ^= b->rng >> 7;
    b->rng ^= b->rng << 17;
    return b->rng;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

    if (ms > 0)
        nanosleep(&ts, NULL);
}

/* One Redlock round. FL_OK with *g; FL_ERR_NOT_ACQUIRED (held elsewhere, a
 * split vote, or no validity left: *why says which, *holder is a node that
 * reported a holder or -1, *pttl its PTTL); FL_ERR_BACKEND when more than
 * N - Q nodes failed. Every key this round set is deleted unless FL_OK. */
static int round_once(struct fl_backend *b, const char *name, const char *owner, uint64_t ttl_ms,
                      struct fl_grant *g, int *holder, int64_t *pttl, char *why, size_t whylen,
                      char *err, size_t errlen)
{
    char fails[1500] = "", one[512];
    uint64_t tok[RL_MAX_NODES], t = 0;
    int granted[RL_MAX_NODES];
    size_t ngrant = 0, nfail = 0, nraised = 0, ignored;
    int64_t t0 = fl_now_ms(), drift = drift_ms(ttl_ms), elapsed;
    uint64_t tmo = b->timeout_ms < ttl_ms ? b->timeout_ms : ttl_ms;
    int rc = FL_ERR_NOT_ACQUIRED;

    *holder = -1;
    *pttl = 0;
    why[0] = '\0';
    for (size_t i = 0; i < b->n; i++) {
        int64_t p = 0;

        granted[i] = 0;
        /* A node slower than the TTL is of no use to this round. */
        NODE_CALL(rc, b, i, tmo, one,
                  fl_redis_node_try(b->node[i], name, owner, ttl_ms, &tok[i], &p, one, sizeof one));
        if (rc == FL_OK) {
            granted[i] = 1;
            ngrant++;
            if (tok[i] > t)
                t = tok[i];
        } else if (rc == FL_ERR_NOT_ACQUIRED) {
            if (*holder < 0) {
                *holder = (int)i;
                *pttl = p;
            }
        } else {
            nfail++;
            note(fails, sizeof fails, one);
        }
    }
    elapsed = fl_now_ms() - t0;
    rc = FL_ERR_NOT_ACQUIRED;
    if (ngrant >= quorum(b) && elapsed + drift < (int64_t)ttl_ms) {
        /* Phase two: the token is T only once a majority has T. */
        for (size_t i = 0; i < b->n; i++) {
            if (!granted[i])
                continue;
            NODE_CALL(rc, b, i, tmo, one,
                      fl_redis_node_raise(b->node[i], name, owner, t, one, sizeof one));
            if (rc == FL_OK)
                nraised++;
        }
        rc = FL_ERR_NOT_ACQUIRED;
        elapsed = fl_now_ms() - t0;
        if (nraised >= quorum(b) && elapsed + drift < (int64_t)ttl_ms) {
            g->token = t;
            g->ttl_ms = ttl_ms;
            g->expiry_ms = t0 + (int64_t)ttl_ms - drift;
            return FL_OK;
        }
    }
    if (ngrant >= quorum(b) && elapsed + drift >= (int64_t)ttl_ms)
        snprintf(why, whylen,
                 "a majority granted lock '%s' but it took %" PRId64 " ms, leaving no validity "
                 "of the TTL of %" PRIu64 " ms (clock drift allowance %" PRId64 " ms)",
                 name, elapsed, ttl_ms, drift);
    else if (ngrant >= quorum(b))
        snprintf(why, whylen, "lock '%s': the token reached only %zu of %zu nodes", name, nraised,
                 b->n);
    else
        snprintf(why, whylen, "lock '%s' is held by another owner (%zu of %zu nodes granted)", name,
                 ngrant, b->n);
    /* Released on all nodes, the unreachable ones included (they may have
     * set the key before the reply was lost). */
    release_all(b, name, owner, &ignored, NULL, 0);
    if (nfail > b->n - quorum(b)) {
        snprintf(err, errlen,
                 "redlock: %zu of %zu nodes failed, a majority of %zu is out of reach: %s", nfail,
                 b->n, quorum(b), fails);
        rc = FL_ERR_BACKEND;
    }
    return rc;
}

/* Rounds until one succeeds or deadline_ms. Between rounds a waiter blocks
 * on a node's wake list (a release there wakes it) for at most the holder's
 * PTTL there; a split vote or a failed raise sleeps a random 1..20 ms so
 * competing clients fall out of step. */
static int rl_acquire(struct fl_backend *b, const char *name, char owner[FL_OWNER_MAX + 1],
                      uint64_t ttl_ms, int64_t deadline_ms, struct fl_grant *g, char *err,
                      size_t errlen)
{
    char why[512];
    int rc;

    if ((int64_t)ttl_ms <= drift_ms(ttl_ms)) {
        snprintf(err, errlen,
                 "ttl %" PRIu64 " ms leaves no validity after the clock drift allowance of %" PRId64
                 " ms",
                 ttl_ms, drift_ms(ttl_ms));
        return FL_ERR_INVALID;
    }
    for (;;) {
        int holder;
        int64_t pttl, left, wait;

        rc = round_once(b, name, owner, ttl_ms, g, &holder, &pttl, why, sizeof why, err, errlen);
        if (rc != FL_ERR_NOT_ACQUIRED)
            return rc;
        left = deadline_ms - fl_now_ms();
        if (left <= 0) {
            snprintf(err, errlen, "%s", why);
            return FL_ERR_NOT_ACQUIRED;
        }
        wait = 1 + (int64_t)(next_random(b) % 20);
        if (holder >= 0) {
            char one[512];

            /* 50 ms at most: the holder's key on this node may outlive its
             * majority. */
            wait = pttl > 0 && pttl + 1 < 50 ? pttl + 1 : 50;
            if (wait > left)
                wait = left;
            if (fl_redis_node_wait(b->node[holder], name, wait, one, sizeof one) == FL_OK)
                continue;
        }
        sleep_ms(wait < left ? wait : left);
    }
}

static int rl_cancel(struct fl_backend *b, const char *name, const char *owner, char *err,
                     size_t errlen)
{
    size_t ignored;

    (void)err;
    (void)errlen;
    release_all(b, name, owner, &ignored, NULL, 0);
    return FL_OK;
}

/* PEXPIRE on every node: FL_OK when a majority extended within the new
 * validity, FL_ERR_NOT_OWNER when so many nodes no longer hold it that a
 * majority cannot, else FL_ERR_BACKEND (the watchdog retries until expiry). */
static int rl_renew(struct fl_backend *b, const char *name, const char *owner, uint64_t ttl_ms,
                    struct fl_grant *g, char *err, size_t errlen)
{
    char fails[1500] = "", one[512];
    size_t ok = 0, lost = 0;
    int64_t t0 = fl_now_ms(), drift = drift_ms(ttl_ms);

    if ((int64_t)ttl_ms <= drift) {
        snprintf(err, errlen, "ttl %" PRIu64 " ms leaves no validity", ttl_ms);
        return FL_ERR_INVALID;
    }
    for (size_t i = 0; i < b->n; i++) {
        int rc;

        NODE_CALL(rc, b, i, b->timeout_ms, one,
                  fl_redis_node_renew(b->node[i], name, owner, ttl_ms, one, sizeof one));
        if (rc == FL_OK)
            ok++;
        else if (rc == FL_ERR_NOT_OWNER)
            lost++;
        else
            note(fails, sizeof fails, one);
    }
    if (ok >= quorum(b) && fl_now_ms() - t0 + drift < (int64_t)ttl_ms) {
        g->ttl_ms = ttl_ms;
        g->expiry_ms = t0 + (int64_t)ttl_ms - drift;
        return FL_OK;
    }
    if (lost > b->n - quorum(b)) {
        snprintf(err, errlen, "owner %s holds lock '%s' on only %zu of %zu nodes", owner, name, ok,
                 b->n);
        return FL_ERR_NOT_OWNER;
    }
    snprintf(err, errlen, "redlock: renewed on %zu of %zu nodes, a majority of %zu needed: %s", ok,
             b->n, quorum(b), fails[0] ? fails : "too slow for the TTL");
    return FL_ERR_BACKEND;
}

/* Deletes on all nodes: FL_OK when a majority deleted, FL_ERR_NOT_OWNER
 * when a majority answered that owner does not hold it. */
static int rl_release(struct fl_backend *b, const char *name, const char *owner, char *err,
                      size_t errlen)
{
    char fails[1500] = "";
    size_t not_owner, ok = release_all(b, name, owner, &not_owner, fails, sizeof fails);

    if (ok >= quorum(b))
        return FL_OK;
    if (not_owner + ok >= quorum(b)) {
        snprintf(err, errlen, "owner %s does not hold lock '%s' (deleted on %zu of %zu nodes)",
                 owner, name, ok, b->n);
        return FL_ERR_NOT_OWNER;
    }
    snprintf(err, errlen, "redlock: released on %zu of %zu nodes, a majority of %zu needed: %s", ok,
             b->n, quorum(b), fails);
    return FL_ERR_BACKEND;
}

/* Reads name on every node into st[] (ok[i] says which answered). FL_OK
 * when a majority answered. */
static int read_all(struct fl_backend *b, const char *name, struct fl_lock_status *st, int *ok,
                    char *err, size_t errlen)
{
    char fails[1500] = "", one[512];
    size_t n = 0;

    for (size_t i = 0; i < b->n; i++) {
        int rc;

        NODE_CALL(rc, b, i, b->timeout_ms, one,
                  fl_redis_node_status(b->node[i], name, &st[i], one, sizeof one));
        ok[i] = rc == FL_OK;
        if (ok[i])
            n++;
        else
            note(fails, sizeof fails, one);
    }
    if (n >= quorum(b))
        return FL_OK;
    snprintf(err, errlen, "redlock: %zu of %zu nodes answered, a majority of %zu needed: %s", n,
             b->n, quorum(b), fails);
    return FL_ERR_BACKEND;
}

static int cmp_desc(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, c = *(const int64_t *)y;

    return a < c ? 1 : a > c ? -1 : 0;
}

/* Held when a majority has the same owner; ttl_ms is how long a majority
 * still has it (the Q-th largest PTTL); token the highest on any node. */
static int rl_status(struct fl_backend *b, const char *name, struct fl_lock_status *out, char *err,
                     size_t errlen)
{
    struct fl_lock_status *st = calloc(RL_MAX_NODES, sizeof *st);
    int ok[RL_MAX_NODES];
    int rc = FL_ERR_INTERNAL;

    memset(out, 0, sizeof *out);
    if (st == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if ((rc = read_all(b, name, st, ok, err, errlen)) != FL_OK)
        goto out;
    for (size_t i = 0; i < b->n; i++) {
        int64_t p[RL_MAX_NODES];
        size_t same = 0;

        if (ok[i] && st[i].token > out->token)
            out->token = st[i].token;
        if (!ok[i] || !st[i].held || out->held)
            continue;
        for (size_t j = 0; j < b->n; j++)
            if (ok[j] && st[j].held && strcmp(st[j].owner, st[i].owner) == 0)
                p[same++] = st[j].ttl_ms;
        if (same >= quorum(b)) {
            qsort(p, same, sizeof p[0], cmp_desc);
            out->held = 1;
            snprintf(out->owner, sizeof out->owner, "%s", st[i].owner);
            snprintf(out->label, sizeof out->label, "%s", st[i].owner);
            out->ttl_ms = p[quorum(b) - 1];
        }
    }
out:
    free(st);
    return rc;
}

/* Current when a majority holds the key with token as its last token (the
 * holder's raise wrote it there). */
static int rl_verify(struct fl_backend *b, const char *name, uint64_t token, int *current,
                     char *err, size_t errlen)
{
    struct fl_lock_status *st = calloc(RL_MAX_NODES, sizeof *st);
    int ok[RL_MAX_NODES];
    size_t n = 0;
    int rc = FL_ERR_INTERNAL;

    *current = 0;
    if (st == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if ((rc = read_all(b, name, st, ok, err, errlen)) != FL_OK)
        goto out;
    for (size_t i = 0; i < b->n; i++)
        if (ok[i] && st[i].held && st[i].token == token)
            n++;
    *current = n >= quorum(b);
out:
    free(st);
    return rc;
}

static const char *rl_address(const struct fl_backend *b)
{
    return b->address;
}

const struct fl_backend_ops fl_redlock_ops = {
    .scheme = "redlock",
    .open = rl_open,
    .connect = rl_connect,
    .acquire = rl_acquire,
    .cancel = rl_cancel,
    .renew = rl_renew,
    .release = rl_release,
    .status = rl_status,
    .verify = rl_verify,
    .address = rl_address,
    .free = rl_free,
};

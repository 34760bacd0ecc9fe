/* fl_etcd: the etcd lock backend (etcd://host:port[,host:port...]), a queue
 * lock after etcd's own concurrency.Mutex, spoken through fenceetcd
 * (etcd/ec_client.h; this file knows the recipe, not HTTP or JSON).
 *
 * Keys: PREFIX/NAME/<lease id in hex>, with PREFIX "fence/lock" and NAME
 * escaped ('%' and '/' as %25 and %2F) so one name's keys are never under
 * another name's prefix. A client has one lease (its session, granted on the
 * first acquire, TTL = the acquire's TTL rounded up to seconds); the owner id
 * of every hold is that lease in hex. A key is created with the lease if
 * absent (txn on create revision 0) and its create revision is the fencing
 * token (the value `etcdctl lock` exports as ETCD_LOCK_REV); the holder is
 * the key with the lowest create revision under PREFIX/NAME/; a waiter
 * watches the deletion of the key just before its own. Tokens are
 * linearizable (Raft) and increase with every write to the cluster. A read
 * hold of a read-write lock is the key PREFIX/NAME/r-<lease>-<guid> in the
 * same queue ("Shared Locks", as on ZooKeeper): it waits for the write keys
 * before it only, and its value is its token once settled (see
 * etcd_acquire_shared).
 *
 * etcd 3.4 (Debian 12) still has etcd-io/etcd#11456: a waiter whose lease
 * expired while it waited is told it holds the lock. So after every acquire
 * this backend checks that its own key still exists with its revision and
 * lease, and that the lease is alive, and treats anything else as not
 * acquired (see confirm()). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ec_client.h"
#include "fl_backend.h"

#define PREFIX "fence/lock/"

struct fl_backend {
    struct ec_client *ec;
    char address[300]; /* the endpoint list, for messages */
    uint64_t timeout_ms;
    int64_t lease;     /* this client's session, 0 if none */
    int64_t lease_ttl; /* seconds, as granted */
    int64_t lease_t0;  /* CLOCK_MONOTONIC before the last grant/keepalive */
    int holds;         /* acquisitions not yet released through this state */
    char **held;       /* the write keys among them (owned), for enqueue() */
    size_t nheld, capheld;
};

static int64_t rt_deadline(const struct fl_backend *b)
{
    return fl_now_ms() + (int64_t)b->timeout_ms;
}

/* The TLS files of an etcds:// query: ca=, cert=, key= (each at most
 * once, '&'-separated, no escapes) into tls[0..2] (malloc'd). 0 / -1. */
static int tls_query(const char *q, char *tls[3], char *err, size_t errlen)
{
    static const char *const names[3] = {"ca", "cert", "key"};

    while (*q != '\0') {
        size_t n = strcspn(q, "&"), k;
        const char *eq = memchr(q, '=', n);
        for (k = 0; k < 3 && eq != NULL; k++)
            if ((size_t)(eq - q) == strlen(names[k]) && strncmp(q, names[k], eq - q) == 0)
                break;
        if (eq == NULL || k == 3 || tls[k] != NULL || eq + 1 == q + n) {
            snprintf(err, errlen, "etcds URL query takes ca=FILE, cert=FILE and key=FILE: %.*s",
                     (int)n, q);
            return -1;
        }
        tls[k] = strndup(eq + 1, (size_t)(q + n - eq - 1));
        if (tls[k] == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        q += n + (q[n] == '&');
    }
    return 0;
}

/* etcd://h:p[,h:p...], or etcds://h:p[,h:p...][?ca=F&cert=F&key=F] for
 * https to every member (ca: the system store when left out). */
static struct fl_backend *open_url(const char *url, int tls, char *err, size_t errlen)
{
    const char *scheme = tls ? "etcds://" : "etcd://";
    struct fl_backend *b = NULL;
    char *eps = NULL, *files[3] = {NULL, NULL, NULL}, *q;

    if (strncmp(url, scheme, strlen(scheme)) != 0) {
        snprintf(err, errlen, "not an %s URL: %s", scheme, url);
        goto fail;
    }
    eps = strdup(url + strlen(scheme));
    if (eps == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    q = tls ? strchr(eps, '?') : NULL;
    if (q != NULL)
        *q++ = '\0';
    if (strchr(eps, '/') || strchr(eps, '@') || strchr(eps, '?')) {
        snprintf(err, errlen, "%s URL takes host:port[,host:port...]%s only: %s",
                 tls ? "etcds" : "etcd", tls ? "[?ca=F&cert=F&key=F]" : "", url);
        goto fail;
    }
    if (q != NULL && tls_query(q, files, err, errlen) < 0)
        goto fail;
    b = calloc(1, sizeof *b);
    if (b == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    b->timeout_ms = 2000;
    if ((b->ec = ec_client_new(eps, err, errlen)) == NULL)
        goto fail;
    if (tls && ec_client_set_tls(b->ec, files[0], files[1], files[2], err, errlen) < 0)
        goto fail;
    snprintf(b->address, sizeof b->address, "%s", eps);
    goto out;
fail:
    if (b) {
        ec_client_free(&b->ec);
        free(b);
    }
    b = NULL;
out:
    free(eps);
    for (int i = 0; i < 3; i++)
        free(files[i]);
    return b;
}

static struct fl_backend *etcd_open(const char *url, char *err, size_t errlen)
{
    return open_url(url, 0, err, errlen);
}

static struct fl_backend *etcds_open(const char *url, char *err, size_t errlen)
{
    return open_url(url, 1, err, errlen);
}

static int etcd_connect(struct fl_backend *b, uint64_t timeout_ms, char *err, size_t errlen)
{
    b->timeout_ms = timeout_ms; /* connections are opened by each call */
    return FL_OK;
}

/* Maps an ec_client failure to a result with a message naming the members. */
static int fail_ec(struct fl_backend *b, int ecrc, char *err, size_t errlen)
{
    snprintf(err, errlen, "etcd at %s: %s", b->address, ec_client_error(b->ec));
    return ecrc == EC_ERR_INTERNAL ? FL_ERR_INTERNAL : FL_ERR_BACKEND;
}

/* "fence/lock/" + escaped name + "/" into a malloc'd string, or NULL. */
static char *name_prefix(const char *name)
{
    size_t n = strlen(name);
    char *p = malloc(sizeof PREFIX + 3 * n + 2), *o;

    if (p == NULL)
        return NULL;
    o = p + snprintf(p, sizeof PREFIX, "%s", PREFIX);
    for (size_t i = 0; i < n; i++) {
        if (name[i] == '%' || name[i] == '/')
            o += sprintf(o, "%%%02X", (unsigned char)name[i]);
        else
            *o++ = name[i];
    }
    *o++ = '/';
    *o = '\0';
    return p;
}

static char *own_key(const char *pfx, const char *owner)
{
    char *k = NULL;

    if (asprintf(&k, "%s%s", pfx, owner) < 0)
        return NULL;
    return k;
}

/* Owner ids: a write hold's is its lease id in hex (16 digits); a read
 * hold's is "r-<lease hex>-<guid>" (READER_TAG, the lease, the random id
 * the client proposed), so one client may hold several reads of a name.
 * The owner is also the key's last segment. *lease gets the lease; 0 / -1. */
#define READER_TAG "r-"

static int parse_owner(const char *owner, int64_t *lease)
{
    char hex[17], *end;
    unsigned long long v;

    if (strncmp(owner, READER_TAG, 2) == 0) {
        owner += 2;
        if (strlen(owner) < 18 || owner[16] != '-' || strchr(owner, '/'))
            return -1;
    } else if (strlen(owner) != 16) {
        return -1;
    }
    memcpy(hex, owner, 16);
    hex[16] = '\0';
    if (strspn(hex, "0123456789abcdef") != 16)
        return -1;
    v = strtoull(hex, &end, 16);
    if (*end != '\0' || v == 0)
        return -1;
    *lease = (int64_t)v;
    return 0;
}

/* Whether the key (under a name's prefix pfx) is a read hold's. */
static int is_reader_key(const char *key, const char *pfx)
{
    size_t n = strlen(pfx);

    return strncmp(key, pfx, n) == 0 && strncmp(key + n, READER_TAG, 2) == 0;
}

/* The session is gone (its lease expired): so are its keys and holds. */
static void forget_lease(struct fl_backend *b)
{
    b->lease = 0;
    b->holds = 0;
    for (size_t i = 0; i < b->nheld; i++)
        free(b->held[i]);
    b->nheld = 0;
}

static void fill_grant(struct fl_backend *b, struct fl_grant *g)
{
    g->ttl_ms = (uint64_t)b->lease_ttl * 1000;
    g->expiry_ms = b->lease_t0 + b->lease_ttl * 1000;
}

/* Makes sure this client has a live lease: grants one (TTL ttl_ms rounded up
 * to seconds) or refreshes the current one with a keepalive, which also
 * gives a fresh expiry. A lease found gone is replaced. */
static int ensure_lease(struct fl_backend *b, uint64_t ttl_ms, char *err, size_t errlen)
{
    int64_t t0 = fl_now_ms(), ttl = 0;
    int rc;

    if (b->lease) {
        rc = ec_lease_keepalive(b->ec, b->lease, rt_deadline(b), &ttl);
        if (rc != EC_OK)
            return fail_ec(b, rc, err, errlen);
        if (ttl > 0) {
            b->lease_t0 = t0;
            b->lease_ttl = ttl;
            return FL_OK;
        }
        forget_lease(b); /* expired: its keys are gone, start a new session */
    }
    t0 = fl_now_ms();
    rc = ec_lease_grant(b->ec, (int64_t)((ttl_ms + 999) / 1000), rt_deadline(b), &b->lease, &ttl);
    if (rc != EC_OK) {
        b->lease = 0;
        return fail_ec(b, rc, err, errlen);
    }
    b->lease_t0 = t0;
    b->lease_ttl = ttl;
    return FL_OK;
}

/* The last key before create revision rev in the range [key, range_end)
 * (range_end NULL: every key under the prefix key): *found, its key and, if
 * value is not NULL, its value (copies, caller frees), and the header
 * revision *hdr. */
static int last_before(struct fl_backend *b, const char *key, const char *range_end, int64_t rev,
                       int *found, char **out_key, char **value, int64_t *hdr, char *err,
                       size_t errlen)
{
    struct ec_range_req q = {.key = key,
                             .range_end = range_end,
                             .prefix = range_end == NULL,
                             .limit = 1,
                             .sort_create = -1,
                             .max_create_revision = rev - 1,
                             .keys_only = value == NULL};
    struct ec_kvs r;
    int rc;

    *found = 0;
    *out_key = NULL;
    if (value)
        *value = NULL;
    rc = ec_range(b->ec, &q, rt_deadline(b), &r, hdr);
    if (rc != EC_OK) {
        ec_kvs_free(&r);
        return fail_ec(b, rc, err, errlen);
    }
    rc = FL_OK;
    if (r.n > 0) {
        *found = 1;
        if ((*out_key = strdup(r.kv[0].key)) == NULL)
            rc = FL_ERR_INTERNAL;
        if (value &&
            (*value = strndup(r.kv[0].value ? r.kv[0].value : "", r.kv[0].value_len)) == NULL)
            rc = FL_ERR_INTERNAL;
    }
    ec_kvs_free(&r);
    if (rc != FL_OK) {
        free(*out_key);
        *out_key = NULL;
        if (value) {
            free(*value);
            *value = NULL;
        }
        snprintf(err, errlen, "out of memory");
    }
    return rc;
}

/* etcd-io/etcd#11456 (etcd 3.4): no key before ours is not proof that we
 * hold the lock; our own key may have gone with an expired lease. Holds only
 * if our key exists with our revision and lease, and the lease is alive
 * (the keepalive also refreshes the expiry reported to the caller). */
static int confirm(struct fl_backend *b, const char *key, int64_t rev, char *err, size_t errlen)
{
    struct ec_range_req q = {.key = key};
    struct ec_kvs r;
    int64_t t0 = fl_now_ms(), ttl = 0;
    int rc, ok;

    rc = ec_lease_keepalive(b->ec, b->lease, rt_deadline(b), &ttl);
    if (rc != EC_OK)
        return fail_ec(b, rc, err, errlen);
    if (ttl > 0) {
        b->lease_t0 = t0;
        b->lease_ttl = ttl;
    }
    rc = ec_range(b->ec, &q, rt_deadline(b), &r, NULL);
    if (rc != EC_OK) {
        ec_kvs_free(&r);
        return fail_ec(b, rc, err, errlen);
    }
    ok = ttl > 0 && r.n == 1 && r.kv[0].create_revision == rev && r.kv[0].lease == b->lease;
    ec_kvs_free(&r);
    if (!ok) {
        snprintf(err, errlen,
                 "etcd at %s: our waiter key %s (revision %" PRId64 ") or its lease expired "
                 "while waiting; not acquired",
                 b->address, key, rev);
        forget_lease(b);
        return FL_ERR_NOT_ACQUIRED;
    }
    return FL_OK;
}

static void withdraw(struct fl_backend *b, const char *key)
{
    struct ec_range_req q = {.key = key};

    ec_delete(b->ec, &q, rt_deadline(b), NULL);
}

/* Waits for an event of mask on key after header revision hdr, at most a
 * third of the lease's TTL and never past deadline_ms; keeps the lease
 * alive when nothing fired (a waiter's lease must outlive its wait). */
static int wait_key(struct fl_backend *b, const char *key, int64_t hdr, int mask,
                    int64_t deadline_ms, char *err, size_t errlen)
{
    int64_t slice = fl_now_ms() + b->lease_ttl * 1000 / 3, t0, ttl = 0;
    int fired = 0, erc;

    if (slice > deadline_ms)
        slice = deadline_ms;
    erc = ec_watch(b->ec, key, hdr + 1, mask, slice, &fired);
    if (erc != EC_OK)
        return fail_ec(b, erc, err, errlen);
    if (fired || fl_now_ms() >= deadline_ms)
        return FL_OK;
    t0 = fl_now_ms();
    erc = ec_lease_keepalive(b->ec, b->lease, rt_deadline(b), &ttl);
    if (erc != EC_OK)
        return fail_ec(b, erc, err, errlen);
    if (ttl > 0) {
        b->lease_t0 = t0;
        b->lease_ttl = ttl;
    }
    return FL_OK;
}

/* Whether this client holds the write key (through an acquisition not yet
 * released); its index in b->held, or -1. */
static int held_index(const struct fl_backend *b, const char *key)
{
    for (size_t i = 0; i < b->nheld; i++)
        if (strcmp(b->held[i], key) == 0)
            return (int)i;
    return -1;
}

/* Records key (copied) as held. 0 / -1 (no memory). */
static int held_add(struct fl_backend *b, const char *key)
{
    char **n, *k = strdup(key);

    if (k == NULL)
        return -1;
    if (b->nheld == b->capheld) {
        size_t cap = b->capheld ? b->capheld * 2 : 8;

        if ((n = realloc(b->held, cap * sizeof *n)) == NULL) {
            free(k);
            return -1;
        }
        b->held = n;
        b->capheld = cap;
    }
    b->held[b->nheld++] = k;
    return 0;
}

static void held_remove(struct fl_backend *b, const char *key)
{
    int i = held_index(b, key);

    if (i < 0)
        return;
    free(b->held[i]);
    b->held[i] = b->held[--b->nheld];
}

/* Parses a settled reader's value (a decimal token > 0); 0 if unsettled. */
static uint64_t settled_token(const char *v)
{
    char *e;
    unsigned long long n;

    if (v == NULL || v[0] < '1' || v[0] > '9')
        return 0;
    errno = 0;
    n = strtoull(v, &e, 10);
    return errno || *e ? 0 : (uint64_t)n;
}

/* Puts our key with the lease and value label if absent (txn on create
 * revision 0) and returns its create revision in *rev (*created = 1 when
 * this call made it). A key that exists with our label, or at all when the
 * key is unique to this acquisition (a reader's), is a resend: its
 * revision, and in *settled the token a reader's value holds (0: none).
 * A key of this lease with another label belongs to another
 * acquisition: if this client holds it (a second write hold of the same
 * name, as a second permit of a semaphore tries), waits for its deletion
 * until deadline_ms (FL_ERR_NOT_ACQUIRED then), like any holder's; if not
 * (a key left by an acquire whose withdrawal failed), takes it over with
 * our label. */
static int enqueue(struct fl_backend *b, const char *name, const char *key, const char *label,
                   int unique, int64_t deadline_ms, int64_t *rev, int *created, uint64_t *settled,
                   char *err, size_t errlen)
{
    *rev = 0;
    *created = 0;
    *settled = 0;
    for (;;) {
        struct ec_cmp cmp = {.key = key, .target = EC_TARGET_CREATE, .op = EC_EQUAL, .n = 0};
        struct ec_op put = {.type = EC_OP_PUT,
                            .range = {.key = key},
                            .value = label,
                            .value_len = strlen(label),
                            .lease = b->lease};
        struct ec_op get = {.type = EC_OP_RANGE, .range = {.key = key}};
        struct ec_txn_result t;
        const struct ec_kv *kv;
        int erc, rc = FL_OK, mine;

        memset(&t, 0, sizeof t);
        erc = ec_txn(b->ec, &cmp, 1, &put, 1, &get, 1, rt_deadline(b), &t);
        if (erc != EC_OK) {
            ec_txn_result_free(&t);
            return fail_ec(b, erc, err, errlen);
        }
        if (t.succeeded) {
            *created = 1;
            *rev = t.revision;
            ec_txn_result_free(&t);
            return FL_OK;
        }
        if (t.n != 1 || t.res[0].kvs.n != 1) {
            ec_txn_result_free(&t); /* deleted in between: put again */
            continue;
        }
        kv = &t.res[0].kvs.kv[0];
        mine = unique ||
               (kv->value_len == strlen(label) && memcmp(kv->value, label, kv->value_len) == 0);
        if (unique)
            *settled = settled_token(kv->value);
        if (mine || held_index(b, key) < 0) {
            struct ec_cmp same = {
                .key = key, .target = EC_TARGET_CREATE, .op = EC_EQUAL, .n = kv->create_revision};
            struct ec_txn_result u;

            *rev = kv->create_revision;
            memset(&u, 0, sizeof u);
            if (!mine) {
                erc = ec_txn(b->ec, &same, 1, &put, 1, NULL, 0, rt_deadline(b), &u);
                if (erc != EC_OK)
                    rc = fail_ec(b, erc, err, errlen);
                else if (!u.succeeded)
                    *rev = 0; /* gone meanwhile: put again */
                ec_txn_result_free(&u);
            }
            ec_txn_result_free(&t);
            if (rc != FL_OK || *rev > 0)
                return rc;
            continue;
        }
        if (fl_now_ms() >= deadline_ms) {
            ec_txn_result_free(&t);
            snprintf(err, errlen, "lock '%s' is held by another acquisition of this client", name);
            return FL_ERR_NOT_ACQUIRED;
        }
        rc = wait_key(b, key, t.revision, EC_WATCH_DELETE, deadline_ms, err, errlen);
        ec_txn_result_free(&t);
        if (rc != FL_OK)
            return rc;
    }
}

static int etcd_acquire(struct fl_backend *b, const char *name, char owner[FL_OWNER_MAX + 1],
                        uint64_t ttl_ms, int64_t deadline_ms, struct fl_grant *g, char *err,
                        size_t errlen)
{
    char *pfx = name_prefix(name), *key = NULL, *pred = NULL, label[FL_OWNER_MAX + 1];
    uint64_t token = 0; /* unused: a write key holds no token */
    int64_t rev = 0;
    int rc = FL_ERR_INTERNAL, created = 0;

    /* The owner the client proposed is the key's value (status's label: an
     * election candidate's id); the owner becomes our lease id. */
    snprintf(label, sizeof label, "%s", owner);
    if (pfx == NULL)
        goto nomem;
    if ((rc = ensure_lease(b, ttl_ms, err, errlen)) != FL_OK)
        goto out;
    snprintf(owner, FL_OWNER_MAX + 1, "%016" PRIx64, (uint64_t)b->lease);
    if ((key = own_key(pfx, owner)) == NULL)
        goto nomem;
    if ((rc = enqueue(b, name, key, label, 0, deadline_ms, &rev, &created, &token, err, errlen)) !=
        FL_OK)
        goto out;
    /* Wait in line: watch the deletion of the key just before ours (of
     * either kind: a writer waits for everything before it). Bounded by
     * deadline_ms; the list is looked at once more after it. */
    for (;;) {
        int found = 0;
        int64_t hdr = 0;

        free(pred);
        pred = NULL;
        if ((rc = last_before(b, pfx, NULL, rev, &found, &pred, NULL, &hdr, err, errlen)) != FL_OK)
            goto out;
        if (!found) {
            rc = confirm(b, key, rev, err, errlen);
            goto out;
        }
        if (fl_now_ms() >= deadline_ms) {
            snprintf(err, errlen, "lock '%s' is held (waiting behind %s)", name, pred);
            rc = FL_ERR_NOT_ACQUIRED;
            goto out;
        }
        if ((rc = wait_key(b, pred, hdr, EC_WATCH_DELETE, deadline_ms, err, errlen)) != FL_OK)
            goto out;
    }
nomem:
    snprintf(err, errlen, "out of memory");
    rc = FL_ERR_INTERNAL;
out:
    if (rc == FL_OK && held_add(b, key) < 0) {
        snprintf(err, errlen, "out of memory");
        rc = FL_ERR_INTERNAL;
        withdraw(b, key);
    } else if (rc == FL_OK) {
        b->holds++;
        g->token = (uint64_t)rev;
        fill_grant(b, g);
    } else if (created && rc == FL_ERR_NOT_ACQUIRED) {
        withdraw(b, key); /* try-lock and timeouts leave no waiter key */
    }
    free(pred);
    free(key);
    free(pfx);
    return rc;
}

/* A read hold: the "Shared Locks" recipe on keys ordered by create
 * revision. Our key PREFIX/NAME/r-<lease>-<guid> is put with the lease and
 * an empty value (unsettled). We hold when no write key is before ours (we
 * watch the deletion of the last one before ours): a reader waits for
 * writers only, and queues behind a waiting writer (writers are not
 * starved). The token (docs/lockclient.md): the key just before ours is
 * then a holding reader's, and we take its token once it is settled (we
 * watch it until it is, or goes); with no key before ours, our own create
 * revision (a new read epoch). The token is written as our key's value
 * (settled) with a txn on our create revision, then the #11456 check. */
static int etcd_acquire_shared(struct fl_backend *b, const char *name, char owner[FL_OWNER_MAX + 1],
                               uint64_t ttl_ms, int64_t deadline_ms, struct fl_grant *g, char *err,
                               size_t errlen)
{
    char *pfx = name_prefix(name), *key = NULL, *wend = NULL, guid[FL_OWNER_MAX + 1];
    uint64_t token = 0;
    int64_t rev = 0;
    int rc = FL_ERR_INTERNAL, created = 0;

    snprintf(guid, sizeof guid, "%s", owner);
    if (pfx == NULL || asprintf(&wend, "%sr", pfx) < 0) {
        wend = NULL;
        goto nomem;
    }
    if ((rc = ensure_lease(b, ttl_ms, err, errlen)) != FL_OK)
        goto out;
    if ((size_t)snprintf(owner, FL_OWNER_MAX + 1, READER_TAG "%016" PRIx64 "-%s",
                         (uint64_t)b->lease, guid) > FL_OWNER_MAX) {
        snprintf(err, errlen, "owner id too long for a read hold");
        rc = FL_ERR_INVALID;
        goto out;
    }
    if ((key = own_key(pfx, owner)) == NULL)
        goto nomem;
    /* The owner id is new per acquisition: an existing key is a resend,
     * and if it settled already its token stays. */
    if ((rc = enqueue(b, name, key, "", 1, deadline_ms, &rev, &created, &token, err, errlen)) !=
        FL_OK)
        goto out;
    while (token == 0) {
        char *w = NULL, *pred = NULL, *val = NULL;
        int found = 0;
        int64_t hdr = 0;

        /* Write keys end in hex digits, all below 'r': [pfx, pfx "r"). */
        rc = last_before(b, pfx, wend, rev, &found, &w, NULL, &hdr, err, errlen);
        if (rc == FL_OK && !found) {
            rc = last_before(b, pfx, NULL, rev, &found, &pred, &val, &hdr, err, errlen);
            if (rc == FL_OK && !found)
                token = (uint64_t)rev;
            else if (rc == FL_OK && is_reader_key(pred, pfx))
                token = settled_token(val);
        }
        if (rc == FL_OK && token == 0 && fl_now_ms() >= deadline_ms) {
            snprintf(err, errlen, "lock '%s' is held (waiting behind %s)", name, w ? w : pred);
            rc = FL_ERR_NOT_ACQUIRED;
        } else if (rc == FL_OK && token == 0) {
            rc = w ? wait_key(b, w, hdr, EC_WATCH_DELETE, deadline_ms, err, errlen)
                   : wait_key(b, pred, hdr, EC_WATCH_PUT | EC_WATCH_DELETE, deadline_ms, err,
                              errlen);
        }
        free(w);
        free(pred);
        free(val);
        if (rc != FL_OK || token > 0)
            break;
    }
    if (rc == FL_OK) {
        /* Settle: our token as our key's value, only while the key is ours. */
        char num[24];
        struct ec_cmp same = {.key = key, .target = EC_TARGET_CREATE, .op = EC_EQUAL, .n = rev};
        struct ec_op put = {.type = EC_OP_PUT, .range = {.key = key}, .lease = b->lease};
        struct ec_txn_result t;
        int erc;

        snprintf(num, sizeof num, "%" PRIu64, token);
        put.value = num;
        put.value_len = strlen(num);
        memset(&t, 0, sizeof t);
        erc = ec_txn(b->ec, &same, 1, &put, 1, NULL, 0, rt_deadline(b), &t);
        if (erc != EC_OK) {
            rc = fail_ec(b, erc, err, errlen);
        } else if (!t.succeeded) {
            snprintf(err, errlen, "etcd at %s: our reader key %s is gone; not acquired", b->address,
                     key);
            rc = FL_ERR_NOT_ACQUIRED;
        }
        ec_txn_result_free(&t);
    }
    if (rc == FL_OK)
        rc = confirm(b, key, rev, err, errlen);
    goto out;
nomem:
    snprintf(err, errlen, "out of memory");
    rc = FL_ERR_INTERNAL;
out:
    if (rc == FL_OK) {
        b->holds++;
        g->token = token;
        fill_grant(b, g);
    } else if (created && rc == FL_ERR_NOT_ACQUIRED) {
        withdraw(b, key);
    }
    free(wend);
    free(key);
    free(pfx);
    return rc;
}

static int etcd_cancel(struct fl_backend *b, const char *name, const char *owner, char *err,
                       size_t errlen)
{
    char *pfx = name_prefix(name), *key = pfx ? own_key(pfx, owner) : NULL;
    int64_t lease;
    int rc = FL_OK;

    if (key && parse_owner(owner, &lease) == 0) {
        struct ec_range_req q = {.key = key};
        int erc = ec_delete(b->ec, &q, rt_deadline(b), NULL);

        if (erc != EC_OK)
            rc = fail_ec(b, erc, err, errlen);
    }
    free(key);
    free(pfx);
    return rc;
}

/* One keepalive for the session (owner = lease), then a read of the key: a
 * lease without TTL or a missing key is a loss. */
static int etcd_renew(struct fl_backend *b, const char *name, const char *owner, uint64_t ttl_ms,
                      struct fl_grant *g, char *err, size_t errlen)
{
    char *pfx = NULL, *key = NULL;
    struct ec_range_req q;
    struct ec_kvs r;
    int64_t lease, t0 = fl_now_ms(), ttl = 0;
    int rc, erc;

    memset(&r, 0, sizeof r);
    if (parse_owner(owner, &lease) < 0) {
        snprintf(err, errlen, "'%s' is not an etcd lease id (16 hex digits)", owner);
        return FL_ERR_NOT_OWNER;
    }
    erc = ec_lease_keepalive(b->ec, lease, rt_deadline(b), &ttl);
    if (erc != EC_OK)
        return fail_ec(b, erc, err, errlen);
    if (ttl <= 0) {
        snprintf(err, errlen, "etcd lease %s of lock '%s' expired", owner, name);
        return FL_ERR_NOT_OWNER;
    }
    rc = FL_ERR_INTERNAL;
    if ((pfx = name_prefix(name)) == NULL || (key = own_key(pfx, owner)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    memset(&q, 0, sizeof q);
    q.key = key;
    q.count_only = 1;
    erc = ec_range(b->ec, &q, rt_deadline(b), &r, NULL);
    if (erc != EC_OK) {
        rc = fail_ec(b, erc, err, errlen);
        goto out;
    }
    if (r.count != 1) {
        snprintf(err, errlen, "lock '%s' has no key for owner %s", name, owner);
        rc = FL_ERR_NOT_OWNER;
        goto out;
    }
    if (lease == b->lease) {
        b->lease_t0 = t0;
        b->lease_ttl = ttl;
    }
    g->ttl_ms = (uint64_t)ttl * 1000;
    g->expiry_ms = t0 + ttl * 1000;
    rc = FL_OK;
out:
    ec_kvs_free(&r);
    free(key);
    free(pfx);
    return rc;
}

static int etcd_release(struct fl_backend *b, const char *name, const char *owner, char *err,
                        size_t errlen)
{
    char *pfx = name_prefix(name), *key = pfx ? own_key(pfx, owner) : NULL;
    struct ec_range_req q = {.key = key};
    int64_t deleted = 0;
    int rc = FL_ERR_INTERNAL, erc;

    if (key == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    erc = ec_delete(b->ec, &q, rt_deadline(b), &deleted);
    if (erc != EC_OK) {
        rc = fail_ec(b, erc, err, errlen);
        goto out;
    }
    if (deleted != 1) {
        snprintf(err, errlen, "owner %s does not hold lock '%s'", owner, name);
        rc = FL_ERR_NOT_OWNER;
        goto out;
    }
    if (b->holds > 0)
        b->holds--;
    held_remove(b, key);
    rc = FL_OK;
out:
    free(key);
    free(pfx);
    return rc;
}

/* The suffix of key after pfx (the owner id). */
static const char *suffix(const char *key, const char *pfx)
{
    size_t n = strlen(pfx);

    return strncmp(key, pfx, n) == 0 ? key + n : key;
}

/* The write lock's holder and waiting writers (readers are not listed, as
 * on Redis: a writer waiting behind readers is a waiter of a free lock), in
 * one consistent read: a txn without compares reading the first key of
 * either kind and the first write keys, by create revision. */
static int etcd_status(struct fl_backend *b, const char *name, struct fl_lock_status *st, char *err,
                       size_t errlen)
{
    char *pfx = name_prefix(name), *wend = NULL;
    struct ec_txn_result t;
    const struct ec_kvs *first, *w;
    int rc = FL_ERR_INTERNAL, erc, holder;

    memset(st, 0, sizeof *st);
    memset(&t, 0, sizeof t);
    if (pfx == NULL || asprintf(&wend, "%sr", pfx) < 0) {
        wend = NULL;
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    {
        struct ec_op ops[2] = {
            {.type = EC_OP_RANGE,
             .range = {.key = pfx, .prefix = 1, .sort_create = 1, .limit = 1, .keys_only = 1}},
            {.type = EC_OP_RANGE,
             .range = {
                 .key = pfx, .range_end = wend, .sort_create = 1, .limit = 1 + FL_STATUS_WAITERS}}};

        erc = ec_txn(b->ec, NULL, 0, ops, 2, NULL, 0, rt_deadline(b), &t);
    }
    if (erc != EC_OK) {
        rc = fail_ec(b, erc, err, errlen);
        goto out;
    }
    rc = FL_ERR_BACKEND;
    if (!t.succeeded || t.n != 2) {
        snprintf(err, errlen, "etcd at %s: malformed status answer", b->address);
        goto out;
    }
    first = &t.res[0].kvs;
    w = &t.res[1].kvs;
    /* A writer holds only when its key is the first of all. */
    holder = w->n > 0 && first->n == 1 && strcmp(first->kv[0].key, w->kv[0].key) == 0;
    if (holder) {
        int64_t ttl = -1;

        st->held = 1;
        snprintf(st->owner, sizeof st->owner, "%s", suffix(w->kv[0].key, pfx));
        snprintf(st->label, sizeof st->label, "%.*s", (int)w->kv[0].value_len,
                 w->kv[0].value ? w->kv[0].value : "");
        st->token = (uint64_t)w->kv[0].create_revision;
        st->ttl_ms = -1;
        if (ec_lease_timetolive(b->ec, w->kv[0].lease, rt_deadline(b), &ttl) == EC_OK && ttl >= 0)
            st->ttl_ms = ttl * 1000;
    }
    st->waiters = w->count > holder ? (size_t)(w->count - holder) : 0;
    for (size_t i = (size_t)holder; i < w->n && i - (size_t)holder < FL_STATUS_WAITERS; i++) {
        size_t k = i - (size_t)holder;

        snprintf(st->waiter[k].owner, sizeof st->waiter[k].owner, "%s", suffix(w->kv[i].key, pfx));
        st->waiter[k].token = (uint64_t)w->kv[i].create_revision;
    }
    rc = FL_OK;
out:
    ec_txn_result_free(&t);
    free(wend);
    free(pfx);
    return rc;
}

/* The write holder is the lowest create revision under the name's prefix,
 * if that key is a write key. */
static int etcd_verify(struct fl_backend *b, const char *name, uint64_t token, int *current,
                       char *err, size_t errlen)
{
    char *pfx = name_prefix(name);
    struct ec_range_req q;
    struct ec_kvs r;
    int rc = FL_ERR_INTERNAL, erc;

    *current = 0;
    memset(&r, 0, sizeof r);
    if (pfx == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    memset(&q, 0, sizeof q);
    q.key = pfx;
    q.prefix = 1;
    q.sort_create = 1;
    q.limit = 1;
    q.keys_only = 1;
    erc = ec_range(b->ec, &q, rt_deadline(b), &r, NULL);
    if (erc != EC_OK) {
        rc = fail_ec(b, erc, err, errlen);
        goto out;
    }
    *current =
        r.n == 1 && !is_reader_key(r.kv[0].key, pfx) && (uint64_t)r.kv[0].create_revision == token;
    rc = FL_OK;
out:
    ec_kvs_free(&r);
    free(pfx);
    return rc;
}

static const char *etcd_address(const struct fl_backend *b)
{
    return b->address;
}

/* A session that holds nothing is ended (its lease revoked, best effort);
 * one that still holds a lock (`fencelock acquire`) lives until its TTL. */
static void etcd_free(struct fl_backend *b)
{
    if (b == NULL)
        return;
    if (b->lease && b->holds == 0)
        ec_lease_revoke(b->ec, b->lease, fl_now_ms() + 500);
    forget_lease(b);
    free(b->held);
    ec_client_free(&b->ec);
    free(b);
}

const struct fl_backend_ops fl_etcd_ops = {
    .scheme = "etcd",
    .open = etcd_open,
    .connect = etcd_connect,
    .acquire = etcd_acquire,
    .cancel = etcd_cancel,
    .renew = etcd_renew,
    .release = etcd_release,
    .status = etcd_status,
    .verify = etcd_verify,
    .address = etcd_address,
    .free = etcd_free,
    .acquire_shared = etcd_acquire_shared,
    .renew_shared = etcd_renew, /* a reader's key is renewed and released as a writer's */
    .release_shared = etcd_release,
};

/* The same backend over https (etcd's --cert-file, --client-cert-auth). */
const struct fl_backend_ops fl_etcds_ops = {
    .scheme = "etcds",
    .open = etcds_open,
    .connect = etcd_connect,
    .acquire = etcd_acquire,
    .cancel = etcd_cancel,
    .renew = etcd_renew,
    .release = etcd_release,
    .status = etcd_status,
    .verify = etcd_verify,
    .address = etcd_address,
    .free = etcd_free,
    .acquire_shared = etcd_acquire_shared,
    .renew_shared = etcd_renew, /* a reader's key is renewed and released as a writer's */
    .release_shared = etcd_release,
};

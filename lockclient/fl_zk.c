/* fl_zk: the ZooKeeper lock backend, the only file that includes the
 * ZooKeeper C client (libzookeeper_mt). The recipe is ZooKeeper's lock recipe
 * in Curator's protected mode: a waiter creates
 * /fence/locks/NAME/lock-<guid>-<seq> (ZOO_EPHEMERAL_SEQUENTIAL; NAME with
 * every byte outside [A-Za-z0-9_-] percent-encoded, under a container node
 * the server removes once empty), the lowest sequence holds the lock, and a
 * waiter watches only its predecessor with zoo_wget. The token is the node's
 * czxid (64-bit, increasing across the whole ensemble), never the sequence
 * suffix (a signed 32-bit counter of the parent that restarts with it). The
 * owner id is the node's name. Read-write locks follow ZooKeeper's "Shared
 * Locks" recipe in the same queue: a read hold is a read-<guid>-<seq> node,
 * waiting only for the write (lock-) nodes before it, and carries its
 * token (the read epoch, see queue_acquire) in its data.
 *
 * Sessions: one ZooKeeper session per connect string per process, shared by
 * every struct fl_backend on it (the client's and its watchdog's, each on its
 * own thread: the mt client is thread-safe). The C client keeps the session
 * alive with its own pings; renew checks that the session is still connected
 * (a connection "connecting" for longer than the session timeout is a lost
 * lock: a partitioned client is never told that its session expired) and
 * that the node is still there and still ours. Session expiry deletes the
 * node: a lost lock. The session's timeout is the first acquire's TTL (the
 * server may bound it; the grant says what is in force).
 *
 * Watchers never call ZooKeeper: the one watcher function records the
 * session state, bumps a generation and wakes waiters, who then call from
 * their own thread. A session is closed when its last backend is freed and it
 * holds no lock; otherwise it stays (reachable from the registry) and ends
 * with the process, so `fencelock acquire` leaves the lock to the session
 * timeout as other backends leave it to their TTL. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define THREADED /* the synchronous calls of the multi-threaded client */
#include <zookeeper/zookeeper.h>

#include "fl_backend.h"

#define ZK_DEFAULT_SESSION_MS 10000
#define ZK_ROOT               "/fence/locks"
#define ZK_TRIES              5 /* bounded retries of one call across connection losses */

struct zk_session {
    struct zk_session *next; /* registry list, under reg_mu */
    char *hosts;             /* connect string, owned */
    zhandle_t *zh;
    int refs;  /* backends using it, under reg_mu */
    int holds; /* locks held through it, under reg_mu */
    int timeout_req;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC; signalled on every watcher call */
    int state;         /* last session state, under mu */
    int expired;       /* under mu */
    int64_t lost_ms;   /* when the connection was lost (0: connected), under mu */
    uint64_t gen;      /* bumped by every watcher call, under mu */
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct zk_session *registry;

struct fl_backend {
    char *hosts; /* connect string (host:port,...[/chroot]) */
    char address[300];
    uint64_t timeout_ms;
    struct zk_session *s; /* a reference, or NULL */
};

/* The one watcher (session events and zoo_wget watches alike): records the
 * state and wakes waiters. Runs on the client's completion thread; never
 * calls ZooKeeper. */
static void zk_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    struct zk_session *s = ctx;

    (void)zh;
    (void)path;
    pthread_mutex_lock(&s->mu);
    if (type == ZOO_SESSION_EVENT) {
        s->state = state;
        if (state == ZOO_CONNECTED_STATE)
            s->lost_ms = 0;
        else if (state == ZOO_EXPIRED_SESSION_STATE || state == ZOO_AUTH_FAILED_STATE)
            s->expired = 1;
        else if (s->lost_ms == 0)
            s->lost_ms = fl_now_ms();
    }
    s->gen++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void session_destroy(struct zk_session *s)
{
    if (s == NULL)
        return;
    if (s->zh)
        zookeeper_close(s->zh); /* joins the client's threads: no callback after this */
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s->hosts);
    free(s);
}

/* A new session on hosts (not yet in the registry). NULL on error. */
static struct zk_session *session_new(const char *hosts, int timeout_ms)
{
    struct zk_session *s = calloc(1, sizeof *s);
    pthread_condattr_t ca;

    if (s == NULL)
        return NULL;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    s->timeout_req = timeout_ms;
    s->lost_ms = fl_now_ms();
    s->state = ZOO_CONNECTING_STATE;
    if ((s->hosts = strdup(hosts)) == NULL)
        goto fail;
    s->zh = zookeeper_init(hosts, zk_watcher, timeout_ms, NULL, s, 0);
    if (s->zh == NULL)
        goto fail;
    return s;
fail:
    session_destroy(s);
    return NULL;
}

static void registry_unlink(struct zk_session *s)
{
    for (struct zk_session **p = &registry; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            return;
        }
}

/* Drops b's reference; closes the session when nobody uses it and it holds
 * no lock (or is dead). */
static void session_unref(struct fl_backend *b)
{
    struct zk_session *s = b->s, *close = NULL;
    int expired;

    if (s == NULL)
        return;
    b->s = NULL;
    pthread_mutex_lock(&s->mu);
    expired = s->expired;
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_lock(&reg_mu);
    if (--s->refs == 0 && (s->holds == 0 || expired)) {
        registry_unlink(s);
        close = s;
    }
    pthread_mutex_unlock(&reg_mu);
    session_destroy(close);
}

/* Waits until s is connected or deadline_ms. FL_OK, or FL_ERR_BACKEND. */
static int wait_connected(struct fl_backend *b, int64_t deadline_ms, char *err, size_t errlen)
{
    struct zk_session *s = b->s;
    int rc = FL_ERR_BACKEND;

    pthread_mutex_lock(&s->mu);
    while (!s->expired && s->state != ZOO_CONNECTED_STATE) {
        int64_t left = deadline_ms - fl_now_ms(), at = fl_now_ms() + (left > 100 ? 100 : left);
        struct timespec ts = {.tv_sec = (time_t)(at / 1000),
                              .tv_nsec = (long)(at % 1000) * 1000000L};

        if (left <= 0)
            break;
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    if (s->state == ZOO_CONNECTED_STATE && !s->expired)
        rc = FL_OK;
    else if (s->expired)
        snprintf(err, errlen, "zookeeper at %s: session expired", b->address);
    else
        snprintf(err, errlen, "cannot connect to zookeeper at %s", b->address);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* Makes sure b has a live session, wanting timeout_ms for a new one (a
 * session that holds nothing and has another timeout is replaced when b is
 * its only user), and waits for it to connect. */
static int ensure_session(struct fl_backend *b, int timeout_ms, char *err, size_t errlen)
{
    struct zk_session *s;
    int dead = 0;

    if (b->s) {
        pthread_mutex_lock(&b->s->mu);
        dead = b->s->expired;
        pthread_mutex_unlock(&b->s->mu);
        pthread_mutex_lock(&reg_mu);
        if (!dead && b->s->timeout_req != timeout_ms && b->s->holds == 0 && b->s->refs == 1)
            dead = 1;
        if (dead)
            registry_unlink(b->s);
        pthread_mutex_unlock(&reg_mu);
        if (dead)
            session_unref(b); /* unlinked already: closes once unused */
    }
    if (b->s == NULL) {
        pthread_mutex_lock(&reg_mu);
        for (s = registry; s; s = s->next) {
            int gone;

            pthread_mutex_lock(&s->mu);
            gone = s->expired;
            pthread_mutex_unlock(&s->mu);
            if (!gone && strcmp(s->hosts, b->hosts) == 0)
                break;
        }
        if (s == NULL && (s = session_new(b->hosts, timeout_ms)) != NULL) {
            s->next = registry;
            registry = s;
        }
        if (s)
            s->refs++;
        pthread_mutex_unlock(&reg_mu);
        if (s == NULL) {
            snprintf(err, errlen, "zookeeper at %s: cannot start a client (%s)", b->address,
                     strerror(errno));
            return FL_ERR_BACKEND;
        }
        b->s = s;
    }
    return wait_connected(b, fl_now_ms() + (int64_t)b->timeout_ms, err, errlen);
}

static int zk_is_conn_error(int zrc)
{
    return zrc == ZCONNECTIONLOSS || zrc == ZOPERATIONTIMEOUT || zrc == ZSESSIONMOVED;
}

/* After a connection error: waits for the session to come back (bounded by
 * the round trip timeout). FL_OK to retry, else FL_ERR_BACKEND. */
static int recover(struct fl_backend *b, int zrc, const char *what, char *err, size_t errlen)
{
    if (!zk_is_conn_error(zrc)) {
        snprintf(err, errlen, "zookeeper at %s: %s: %s", b->address, what, zerror(zrc));
        return FL_ERR_BACKEND;
    }
    if (wait_connected(b, fl_now_ms() + (int64_t)b->timeout_ms, err, errlen) != FL_OK)
        return FL_ERR_BACKEND;
    return FL_OK;
}

static void zk_free(struct fl_backend *b)
{
    if (b == NULL)
        return;
    session_unref(b);
    free(b->hosts);
    free(b);
}

/* A forked child has none of the parent's client threads: its sessions are
 * unusable there and are forgotten (not closed: closing would end the
 * parent's sessions). */
static void forget_sessions(void)
{
    registry = NULL;
    pthread_mutex_init(&reg_mu, NULL);
}

static void once_init(void)
{
    zoo_set_debug_level((ZooLogLevel)0); /* 0: no log at all */
    pthread_atfork(NULL, NULL, forget_sessions);
}

/* zk://host:port[,host:port...][/chroot] */
static struct fl_backend *zk_open(const char *url, char *err, size_t errlen)
{
    static const char prefix[] = "zk://";
    static pthread_once_t quiet = PTHREAD_ONCE_INIT;
    struct fl_backend *b = NULL;
    const char *rest, *slash, *p;

    if (strncmp(url, prefix, sizeof prefix - 1) != 0) {
        snprintf(err, errlen, "not a zk:// URL: %s", url);
        goto fail;
    }
    rest = url + sizeof prefix - 1;
    slash = strchr(rest, '/');
    p = rest;
    for (;;) {
        const char *end = strchr(p, ',');
        const char *colon;
        char *e;
        long port;

        if (end == NULL || (slash && end > slash))
            end = slash ? slash : p + strlen(p);
        colon = memrchr(p, ':', (size_t)(end - p));
        if (colon == NULL || colon == p || colon + 1 == end) {
            snprintf(err, errlen, "bad host:port in URL: %s", url);
            goto fail;
        }
        errno = 0;
        port = strtol(colon + 1, &e, 10);
        if (errno || e != end || port < 1 || port > 65535) {
            snprintf(err, errlen, "bad port in URL: %s", url);
            goto fail;
        }
        if (*end != ',')
            break;
        p = end + 1; /* an empty entry after a comma is refused above */
    }
    if (slash && (slash[1] == '\0' || slash[strlen(slash) - 1] == '/')) {
        snprintf(err, errlen, "bad chroot in URL (want /path without a trailing /): %s", url);
        goto fail;
    }
    b = calloc(1, sizeof *b);
    if (b == NULL || (b->hosts = strdup(rest)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    b->timeout_ms = 2000;
    snprintf(b->address, sizeof b->address, "%s", rest);
    /* The C client logs to stderr by default; a CLI's stderr is for its own
     * messages (errors come back as return codes). */
    pthread_once(&quiet, once_init);
    return b;
fail:
    zk_free(b);
    return NULL;
}

static int zk_connect(struct fl_backend *b, uint64_t timeout_ms, char *err, size_t errlen)
{
    b->timeout_ms = timeout_ms;
    if (b->s == NULL)
        return FL_OK; /* the first call that needs a session makes it */
    return ensure_session(b, b->s->timeout_req, err, errlen);
}

/* "/fence/locks/" + NAME percent-encoded (bytes outside [A-Za-z0-9_-]), so
 * a name is one node whatever it contains. Caller frees. */
static char *lock_dir(const char *name)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(name);
    char *d = malloc(sizeof ZK_ROOT + 1 + 3 * n + 1), *o;

    if (d == NULL)
        return NULL;
    o = d + snprintf(d, sizeof ZK_ROOT + 1, "%s/", ZK_ROOT);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '_' || c == '-') {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o = '\0';
    return d;
}

/* dir/child into out (malloc'd). */
static char *child_path(const char *dir, const char *child)
{
    char *p = NULL;

    if (asprintf(&p, "%s/%s", dir, child) < 0)
        return NULL;
    return p;
}

/* Node kinds. A write (exclusive) hold, the mutex's, is
 * "lock-<guid>-<seq>"; a read (shared) hold of a read-write lock is
 * "read-<guid>-<seq>". Both prefixes are KIND_LEN bytes; the sequence
 * comes from the parent's one counter, so the two kinds form one queue. */
#define KIND_LEN   5
#define KIND_WRITE 'w'
#define KIND_READ  'r'

/* KIND_WRITE, KIND_READ, or 0 for a name of neither kind. */
static int child_kind(const char *c)
{
    if (strncmp(c, "lock-", KIND_LEN) == 0)
        return KIND_WRITE;
    if (strncmp(c, "read-", KIND_LEN) == 0)
        return KIND_READ;
    return 0;
}

/* The sequence of a "lock-<guid>-<seq>" or "read-<guid>-<seq>" child, or
 * -1 for a foreign child. */
static long long child_seq(const char *c)
{
    const char *dash = strrchr(c, '-');
    char *e;
    long long v;

    if (child_kind(c) == 0 || dash == NULL || dash < c + KIND_LEN || dash[1] == '\0')
        return -1;
    errno = 0;
    v = strtoll(dash + 1, &e, 10);
    return errno || *e ? -1 : v;
}

/* Whether child c (of either kind) carries guid. */
static int child_has_guid(const char *c, const char *guid)
{
    size_t n = strlen(guid);

    return child_kind(c) != 0 && strncmp(c + KIND_LEN, guid, n) == 0 && c[KIND_LEN + n] == '-' &&
           child_seq(c) >= 0;
}

static int by_seq(const void *a, const void *b)
{
    long long x = child_seq(*(char *const *)a), y = child_seq(*(char *const *)b);

    return x < y ? -1 : x > y;
}

/* Lists dir's lock children sorted by sequence, foreign ones dropped.
 * *v must be deallocated with deallocate_String_vector. ZOK, ZNONODE, or a
 * ZooKeeper error after the retries. */
static int list_sorted(struct fl_backend *b, const char *dir, struct String_vector *v, char *err,
                       size_t errlen)
{
    int zrc = ZOK;

    for (int t = 0; t < ZK_TRIES; t++) {
        memset(v, 0, sizeof *v);
        zrc = zoo_get_children(b->s->zh, dir, 0, v);
        if (zrc == ZOK || zrc == ZNONODE || recover(b, zrc, "list", err, errlen) != FL_OK)
            break;
    }
    if (zrc != ZOK)
        return zrc;
    for (int i = 0; i < v->count;) {
        if (child_seq(v->data[i]) < 0) {
            free(v->data[i]);
            v->data[i] = v->data[--v->count];
        } else {
            i++;
        }
    }
    qsort(v->data, (size_t)v->count, sizeof v->data[0], by_seq);
    return ZOK;
}

/* Deletes every child of dir that carries guid (our node after a failed
 * acquire or release). Best effort, bounded. */
static void delete_own(struct fl_backend *b, const char *dir, const char *guid)
{
    struct String_vector v;
    char ignored[128];

    if (list_sorted(b, dir, &v, ignored, sizeof ignored) != ZOK)
        return;
    for (int i = 0; i < v.count; i++) {
        if (child_has_guid(v.data[i], guid)) {
            char *p = child_path(dir, v.data[i]);

            for (int t = 0; p && t < ZK_TRIES; t++) {
                int zrc = zoo_delete(b->s->zh, p, -1);

                if (!zk_is_conn_error(zrc) ||
                    recover(b, zrc, "delete", ignored, sizeof ignored) != FL_OK)
                    break;
            }
            free(p);
        }
    }
    deallocate_String_vector(&v);
}

/* Creates /fence, /fence/locks (persistent) and dir (a container: the server
 * removes it once its last child is gone). */
static int ensure_parents(struct fl_backend *b, const char *dir, char *err, size_t errlen)
{
    const char *paths[3] = {"/fence", ZK_ROOT, dir};

    for (int i = 0; i < 3; i++) {
        int zrc = ZOK;

        for (int t = 0; t < ZK_TRIES; t++) {
            zrc = zoo_create(b->s->zh, paths[i], NULL, -1, &ZOO_OPEN_ACL_UNSAFE,
                             i == 2 ? ZOO_CONTAINER : ZOO_PERSISTENT, NULL, 0);
            if (zrc == ZOK || zrc == ZNODEEXISTS)
                break;
            if (recover(b, zrc, "create parent", err, errlen) != FL_OK)
                return FL_ERR_BACKEND;
        }
        if (zrc != ZOK && zrc != ZNODEEXISTS) {
            snprintf(err, errlen, "zookeeper at %s: create %s: %s", b->address, paths[i],
                     zerror(zrc));
            return FL_ERR_BACKEND;
        }
    }
    return FL_OK;
}

/* Protected create: our node if one with guid exists already (a create whose
 * reply was lost, or a resend), else a new one of kind (KIND_WRITE or
 * KIND_READ, without data). mine gets its name (malloc'd) and *czxid its
 * czxid. */
static int create_own(struct fl_backend *b, const char *dir, int kind, const char *guid,
                      char **mine, int64_t *czxid, char *err, size_t errlen)
{
    char *prefix = NULL, created[4200];
    struct String_vector v;
    struct Stat st;
    int rc = FL_ERR_BACKEND;

    *mine = NULL;
    if (asprintf(&prefix, "%s/%s%s-", dir, kind == KIND_READ ? "read-" : "lock-", guid) < 0) {
        prefix = NULL;
        return FL_ERR_INTERNAL;
    }
    for (int t = 0; t < ZK_TRIES && *mine == NULL; t++) {
        int zrc;

        /* Look first: after a connection loss the create may have happened. */
        zrc = list_sorted(b, dir, &v, err, errlen);
        if (zrc == ZOK) {
            for (int i = 0; i < v.count && *mine == NULL; i++)
                if (child_has_guid(v.data[i], guid))
                    *mine = strdup(v.data[i]);
            deallocate_String_vector(&v);
        } else if (zrc == ZNONODE) {
            if (ensure_parents(b, dir, err, errlen) != FL_OK)
                goto out;
        } else {
            snprintf(err, errlen, "zookeeper at %s: list %s: %s", b->address, dir, zerror(zrc));
            goto out;
        }
        if (*mine)
            break;
        memset(&st, 0, sizeof st);
        zrc = zoo_create2(b->s->zh, prefix, NULL, -1, &ZOO_OPEN_ACL_UNSAFE,
                          ZOO_EPHEMERAL_SEQUENTIAL, created, (int)sizeof created, &st);
        if (zrc == ZOK) {
            const char *base = strrchr(created, '/');

            if ((*mine = strdup(base ? base + 1 : created)) == NULL)
                goto out;
            *czxid = st.czxid;
            rc = FL_OK;
            goto out;
        }
        if (zrc == ZNONODE) {
            if (ensure_parents(b, dir, err, errlen) != FL_OK)
                goto out;
            continue; /* the container was removed under us */
        }
        if (recover(b, zrc, "create", err, errlen) != FL_OK)
            goto out;
    }
    if (*mine) {
        char *p = child_path(dir, *mine);
        int zrc = p ? zoo_exists(b->s->zh, p, 0, &st) : ZSYSTEMERROR;

        free(p);
        if (zrc == ZOK) {
            *czxid = st.czxid;
            rc = FL_OK;
        } else {
            snprintf(err, errlen, "zookeeper at %s: stat own node: %s", b->address, zerror(zrc));
        }
    } else {
        snprintf(err, errlen, "zookeeper at %s: cannot create the queue node", b->address);
    }
out:
    if (rc != FL_OK) {
        free(*mine);
        *mine = NULL;
    }
    free(prefix);
    return rc;
}

/* Whether the session may still hold locks: not expired, and not
 * disconnected for longer than its timeout (the server has expired it, or
 * will before we can tell). */
static int session_alive(struct zk_session *s, char *why, size_t whylen)
{
    int ok = 1;

    pthread_mutex_lock(&s->mu);
    if (s->expired) {
        snprintf(why, whylen, "session expired");
        ok = 0;
    } else if (s->lost_ms && fl_now_ms() - s->lost_ms > zoo_recv_timeout(s->zh)) {
        snprintf(why, whylen, "disconnected for longer than the session timeout (%d ms)",
                 zoo_recv_timeout(s->zh));
        ok = 0;
    }
    pthread_mutex_unlock(&s->mu);
    return ok;
}

/* Sets a watch on path with zoo_wget (not zoo_wexists: no watch is left on
 * a node that is already gone), recording the session's generation first
 * in *gen0 so a watcher call after it is not missed. The node's data goes
 * to buf (up to *len bytes; *len gets its length, -1 for none). ZOK,
 * ZNONODE or a ZooKeeper error. */
static int watch_node(struct fl_backend *b, const char *path, char *buf, int *len, uint64_t *gen0)
{
    struct Stat st;

    pthread_mutex_lock(&b->s->mu);
    *gen0 = b->s->gen;
    pthread_mutex_unlock(&b->s->mu);
    return zoo_wget(b->s->zh, path, zk_watcher, b->s, buf, len, &st);
}

/* Waits for any watcher call after gen0 (a watched node's change or
 * deletion, a session event) or deadline_ms, in slices of 100 ms. */
static void wait_watcher(struct fl_backend *b, uint64_t gen0, int64_t deadline_ms)
{
    pthread_mutex_lock(&b->s->mu);
    while (b->s->gen == gen0 && fl_now_ms() < deadline_ms) {
        int64_t at = fl_now_ms() + 100;
        struct timespec ts;

        if (at > deadline_ms)
            at = deadline_ms;
        ts.tv_sec = (time_t)(at / 1000);
        ts.tv_nsec = (long)(at % 1000) * 1000000L;
        pthread_cond_timedwait(&b->s->cv, &b->s->mu, &ts);
    }
    pthread_mutex_unlock(&b->s->mu);
}

/* Writes a reader's token into its node (the token "settles"), so readers
 * behind it can copy it. FL_OK, FL_ERR_NOT_ACQUIRED if the node is gone
 * (the session expired), FL_ERR_BACKEND. */
static int settle(struct fl_backend *b, const char *dir, const char *mine, uint64_t token,
                  char *err, size_t errlen)
{
    char *p = child_path(dir, mine), num[24];
    int zrc = ZSYSTEMERROR, rc = FL_ERR_BACKEND;

    snprintf(num, sizeof num, "%" PRIu64, token);
    for (int t = 0; p && t < ZK_TRIES; t++) {
        zrc = zoo_set(b->s->zh, p, num, (int)strlen(num), -1);
        if (!zk_is_conn_error(zrc) || recover(b, zrc, "set", err, errlen) != FL_OK)
            break;
    }
    if (p == NULL)
        rc = FL_ERR_INTERNAL;
    else if (zrc == ZOK)
        rc = FL_OK;
    else if (zrc == ZNONODE)
        rc = FL_ERR_NOT_ACQUIRED;
    if (rc != FL_OK && p != NULL)
        snprintf(err, errlen, "zookeeper at %s: settle %s: %s", b->address, p, zerror(zrc));
    free(p);
    return rc;
}

/* Parses a settled reader's data (a decimal token > 0); 0 if unsettled. */
static uint64_t settled_token(const char *buf, int len)
{
    char num[24], *e;
    unsigned long long v;

    if (len <= 0 || len >= (int)sizeof num)
        return 0;
    memcpy(num, buf, (size_t)len);
    num[len] = '\0';
    errno = 0;
    v = strtoull(num, &e, 10);
    return errno || *e || num[0] == '-' ? 0 : (uint64_t)v;
}

/* The queue acquire of both kinds (ZooKeeper's lock and "Shared Locks"
 * recipes). Our node in the sorted queue decides:
 * - a writer (kind KIND_WRITE) holds when its node is first, else it
 *   watches the node just before it (of any kind): it waits for everything
 *   before it;
 * - a reader holds when no write node is before it, else it watches the
 *   last write node before it: it waits for writers only, and a reader
 *   that arrives after a waiting writer queues behind it, so writers are
 *   not starved. Its token (the read-write rule, docs/lockclient.md): if a
 *   reader holds before it (the node just before it, since only readers
 *   are before it), that reader's token, read from its node once settled
 *   (else it watches that node until it settles or goes); if no node is
 *   before it, its own czxid (a new read epoch). It then writes the token
 *   into its own node (settle) before returning.
 * The list is looked at once more after the deadline, then the node is
 * deleted (NOT_ACQUIRED). The owner becomes the node's name. */
static int queue_acquire(struct fl_backend *b, int kind, const char *name,
                         char owner[FL_OWNER_MAX + 1], uint64_t ttl_ms, int64_t deadline_ms,
                         struct fl_grant *g, char *err, size_t errlen)
{
    char *dir = lock_dir(name), *mine = NULL, guid[FL_OWNER_MAX + 1];
    int64_t czxid = 0;
    int rc = FL_ERR_INTERNAL;

    if (dir == NULL)
        goto out;
    snprintf(guid, sizeof guid, "%s", owner);
    if ((rc = ensure_session(b, ttl_ms > INT32_MAX ? INT32_MAX : (int)ttl_ms, err, errlen)) !=
        FL_OK)
        goto out;
    if ((rc = create_own(b, dir, kind, guid, &mine, &czxid, err, errlen)) != FL_OK)
        goto fail;
    for (;;) {
        struct String_vector v;
        int64_t t0 = fl_now_ms();
        uint64_t gen0 = 0, token = 0;
        int zrc, idx = -1, watch = -1, len = -1;
        char *path = NULL, data[24];

        rc = FL_ERR_BACKEND;
        zrc = list_sorted(b, dir, &v, err, errlen);
        if (zrc != ZOK) {
            snprintf(err, errlen, "zookeeper at %s: list %s: %s", b->address, dir, zerror(zrc));
            goto fail;
        }
        for (int i = 0; i < v.count; i++)
            if (strcmp(v.data[i], mine) == 0)
                idx = i;
        if (idx < 0) {
            deallocate_String_vector(&v);
            snprintf(err, errlen, "zookeeper at %s: our queue node %s/%s is gone", b->address, dir,
                     mine);
            goto fail;
        }
        if (idx == 0) {
            token = (uint64_t)czxid;
        } else if (kind == KIND_WRITE) {
            watch = idx - 1;
        } else {
            for (int i = 0; i < idx; i++)
                if (child_kind(v.data[i]) == KIND_WRITE)
                    watch = i; /* the last writer before us */
            if (watch < 0)
                watch = idx - 1; /* a holding reader: its token once settled */
        }
        if (watch >= 0 && (path = child_path(dir, v.data[watch])) == NULL) {
            deallocate_String_vector(&v);
            rc = FL_ERR_INTERNAL;
            goto fail;
        }
        if (watch >= 0) {
            /* A reader watching a reader wants its token. */
            int copy = kind == KIND_READ && child_kind(v.data[watch]) == KIND_READ;

            len = copy ? (int)sizeof data : 0;
            zrc = watch_node(b, path, data, &len, &gen0);
            if (zrc == ZOK && copy)
                token = settled_token(data, len);
        }
        deallocate_String_vector(&v);
        free(path);
        if (token > 0) {
            if (kind == KIND_READ && (rc = settle(b, dir, mine, token, err, errlen)) != FL_OK)
                goto fail;
            snprintf(owner, FL_OWNER_MAX + 1, "%s", mine);
            g->token = token;
            g->ttl_ms = (uint64_t)zoo_recv_timeout(b->s->zh);
            g->expiry_ms = t0 + (int64_t)g->ttl_ms;
            pthread_mutex_lock(&reg_mu);
            b->s->holds++;
            pthread_mutex_unlock(&reg_mu);
            rc = FL_OK;
            goto out;
        }
        if (zrc == ZNONODE)
            continue; /* gone between the list and the watch: look again */
        if (zrc != ZOK) {
            if (recover(b, zrc, "watch", err, errlen) != FL_OK)
                goto fail;
            continue;
        }
        if (fl_now_ms() >= deadline_ms) {
            delete_own(b, dir, guid);
            snprintf(err, errlen, "lock '%s' is held by another owner", name);
            rc = FL_ERR_NOT_ACQUIRED;
            goto out;
        }
        /* The watched node's deletion (or a reader's settling), a session
         * event, or the deadline; then the list is looked at again. */
        wait_watcher(b, gen0, deadline_ms);
        if (!session_alive(b->s, err, errlen))
            goto fail;
    }
fail:
    /* After any error: our node must not stay in the queue. */
    if (b->s && dir)
        delete_own(b, dir, guid);
out:
    free(mine);
    free(dir);
    return rc;
}

static int zk_acquire(struct fl_backend *b, const char *name, char owner[FL_OWNER_MAX + 1],
                      uint64_t ttl_ms, int64_t deadline_ms, struct fl_grant *g, char *err,
                      size_t errlen)
{
    return queue_acquire(b, KIND_WRITE, name, owner, ttl_ms, deadline_ms, g, err, errlen);
}

static int zk_acquire_shared(struct fl_backend *b, const char *name, char owner[FL_OWNER_MAX + 1],
                             uint64_t ttl_ms, int64_t deadline_ms, struct fl_grant *g, char *err,
                             size_t errlen)
{
    return queue_acquire(b, KIND_READ, name, owner, ttl_ms, deadline_ms, g, err, errlen);
}

static int zk_cancel(struct fl_backend *b, const char *name, const char *owner, char *err,
                     size_t errlen)
{
    char *dir = lock_dir(name), guid[FL_OWNER_MAX + 1];
    int rc = FL_ERR_INTERNAL;

    if (dir == NULL)
        return rc;
    /* owner is the guid (before a grant) or a node name
     * lock-<guid>-<seq> or read-<guid>-<seq>. */
    if (child_seq(owner) >= 0)
        snprintf(guid, sizeof guid, "%.*s", (int)(strrchr(owner, '-') - owner - KIND_LEN),
                 owner + KIND_LEN);
    else
        snprintf(guid, sizeof guid, "%s", owner);
    rc = ensure_session(b, b->s ? b->s->timeout_req : ZK_DEFAULT_SESSION_MS, err, errlen);
    if (rc == FL_OK)
        delete_own(b, dir, guid);
    free(dir);
    return rc;
}

/* Stat of dir/owner into *st: ZOK, ZNONODE or an error after retries. */
static int stat_node(struct fl_backend *b, const char *dir, const char *node, struct Stat *st,
                     char *err, size_t errlen)
{
    char *p = child_path(dir, node);
    int zrc = ZSYSTEMERROR;

    for (int t = 0; p && t < ZK_TRIES; t++) {
        zrc = zoo_exists(b->s->zh, p, 0, st);
        if (zrc == ZOK || zrc == ZNONODE || recover(b, zrc, "stat", err, errlen) != FL_OK)
            break;
    }
    free(p);
    return zrc;
}

static int valid_node(const char *owner)
{
    return child_seq(owner) >= 0 && !strchr(owner, '/');
}

static int zk_renew(struct fl_backend *b, const char *name, const char *owner, uint64_t ttl_ms,
                    struct fl_grant *g, char *err, size_t errlen)
{
    char *dir = NULL, why[128];
    struct Stat st;
    int64_t t0;
    int zrc, rc;

    (void)ttl_ms; /* the session's timeout is fixed at its creation */
    if (!valid_node(owner)) {
        snprintf(err, errlen, "owner %s does not hold lock '%s'", owner, name);
        return FL_ERR_NOT_OWNER;
    }
    if (b->s && !session_alive(b->s, why, sizeof why)) {
        snprintf(err, errlen, "zookeeper at %s: lock '%s' lost: %s", b->address, name, why);
        return FL_ERR_NOT_OWNER;
    }
    rc = ensure_session(b, b->s ? b->s->timeout_req : ZK_DEFAULT_SESSION_MS, err, errlen);
    if (rc != FL_OK)
        return rc;
    if ((dir = lock_dir(name)) == NULL)
        return FL_ERR_INTERNAL;
    t0 = fl_now_ms();
    zrc = stat_node(b, dir, owner, &st, err, errlen);
    if (zrc == ZNONODE) {
        snprintf(err, errlen, "owner %s does not hold lock '%s'", owner, name);
        rc = FL_ERR_NOT_OWNER;
    } else if (zrc != ZOK) {
        rc = FL_ERR_BACKEND;
    } else if (st.ephemeralOwner != zoo_client_id(b->s->zh)->client_id) {
        /* Another process's session: only that process keeps it alive. */
        snprintf(err, errlen,
                 "zookeeper at %s: lock '%s' belongs to session %" PRIx64
                 " of another process; only that process can keep it",
                 b->address, name, (uint64_t)st.ephemeralOwner);
        rc = FL_ERR_BACKEND;
    } else if (!session_alive(b->s, why, sizeof why)) {
        snprintf(err, errlen, "zookeeper at %s: lock '%s' lost: %s", b->address, name, why);
        rc = FL_ERR_NOT_OWNER;
    } else {
        g->ttl_ms = (uint64_t)zoo_recv_timeout(b->s->zh);
        g->expiry_ms = t0 + (int64_t)g->ttl_ms;
        rc = FL_OK;
    }
    free(dir);
    return rc;
}

static int zk_release(struct fl_backend *b, const char *name, const char *owner, char *err,
                      size_t errlen)
{
    char *dir = NULL, *p = NULL;
    int rc, zrc = ZOK, lost = 0;

    if (!valid_node(owner)) {
        snprintf(err, errlen, "owner %s does not hold lock '%s'", owner, name);
        return FL_ERR_NOT_OWNER;
    }
    rc = ensure_session(b, b->s ? b->s->timeout_req : ZK_DEFAULT_SESSION_MS, err, errlen);
    if (rc != FL_OK)
        return rc;
    rc = FL_ERR_INTERNAL;
    if ((dir = lock_dir(name)) == NULL || (p = child_path(dir, owner)) == NULL)
        goto out;
    rc = FL_ERR_BACKEND;
    for (int t = 0; t < ZK_TRIES; t++) {
        zrc = zoo_delete(b->s->zh, p, -1);
        if (!zk_is_conn_error(zrc))
            break;
        lost = 1;
        if (recover(b, zrc, "delete", err, errlen) != FL_OK)
            goto out;
    }
    if (zrc == ZOK || (zrc == ZNONODE && lost)) {
        /* ZNONODE after a lost reply: the first delete went through. */
        pthread_mutex_lock(&reg_mu);
        if (b->s->holds > 0)
            b->s->holds--;
        pthread_mutex_unlock(&reg_mu);
        rc = FL_OK;
    } else if (zrc == ZNONODE) {
        snprintf(err, errlen, "owner %s does not hold lock '%s'", owner, name);
        rc = FL_ERR_NOT_OWNER;
    } else {
        snprintf(err, errlen, "zookeeper at %s: delete %s: %s", b->address, p, zerror(zrc));
    }
out:
    free(p);
    free(dir);
    return rc;
}

/* The write lock's holder and waiting writers in queue order, each with its
 * czxid (readers are not listed, as on Redis: a writer waiting behind
 * readers is a waiter of a free lock). A child that goes away between the
 * list and its stat makes the read start over. */
static int zk_status(struct fl_backend *b, const char *name, struct fl_lock_status *st, char *err,
                     size_t errlen)
{
    char *dir = lock_dir(name);
    int rc;

    if (dir == NULL)
        return FL_ERR_INTERNAL;
    rc = ensure_session(b, b->s ? b->s->timeout_req : ZK_DEFAULT_SESSION_MS, err, errlen);
    for (int t = 0; rc == FL_OK && t < ZK_TRIES; t++) {
        struct String_vector v;
        int zrc = list_sorted(b, dir, &v, err, errlen), again = 0, holder;

        memset(st, 0, sizeof *st);
        st->ttl_ms = -1;
        if (zrc == ZNONODE)
            break;
        if (zrc != ZOK) {
            snprintf(err, errlen, "zookeeper at %s: list %s: %s", b->address, dir, zerror(zrc));
            rc = FL_ERR_BACKEND;
            break;
        }
        /* A writer holds only when first in the whole queue. */
        holder = v.count > 0 && child_kind(v.data[0]) == KIND_WRITE;
        {
            int k = 0;

            for (int i = 0; i < v.count; i++) {
                if (child_kind(v.data[i]) == KIND_WRITE)
                    v.data[k++] = v.data[i];
                else
                    free(v.data[i]);
            }
            v.count = k;
        }
        for (int i = 0; i < v.count && i < FL_STATUS_WAITERS + holder && !again; i++) {
            struct Stat s;
            int w = i - holder; /* index among the waiters, -1: the holder */

            zrc = stat_node(b, dir, v.data[i], &s, err, errlen);
            if (zrc == ZNONODE) {
                again = 1;
            } else if (zrc != ZOK) {
                rc = FL_ERR_BACKEND;
            } else if (w < 0) {
                st->held = 1;
                snprintf(st->owner, sizeof st->owner, "%s", v.data[0]);
                /* The label is the guid the holder proposed: lock-<guid>-<seq>. */
                snprintf(st->label, sizeof st->label, "%.*s",
                         (int)(strrchr(v.data[0], '-') - v.data[0] - KIND_LEN),
                         v.data[0] + KIND_LEN);
                st->token = (uint64_t)s.czxid;
            } else {
                snprintf(st->waiter[w].owner, sizeof st->waiter[w].owner, "%s", v.data[i]);
                st->waiter[w].token = (uint64_t)s.czxid;
            }
            if (rc != FL_OK)
                break;
        }
        st->waiters = (size_t)(v.count - (v.count > 0 ? holder : 0));
        deallocate_String_vector(&v);
        if (!again)
            break;
    }
    free(dir);
    return rc;
}

static int zk_verify(struct fl_backend *b, const char *name, uint64_t token, int *current,
                     char *err, size_t errlen)
{
    struct fl_lock_status st;
    int rc = zk_status(b, name, &st, err, errlen);

    if (rc == FL_OK)
        *current = st.held && st.token == token;
    return rc;
}

static const char *zk_address(const struct fl_backend *b)
{
    return b->address;
}

const struct fl_backend_ops fl_zk_ops = {
    .scheme = "zk",
    .open = zk_open,
    .connect = zk_connect,
    .acquire = zk_acquire,
    .cancel = zk_cancel,
    .renew = zk_renew,
    .release = zk_release,
    .status = zk_status,
    .verify = zk_verify,
    .address = zk_address,
    .free = zk_free,
    .acquire_shared = zk_acquire_shared,
    .renew_shared = zk_renew, /* a reader's node is renewed and released as a writer's */
    .release_shared = zk_release,
};

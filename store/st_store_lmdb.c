/* st_store_lmdb: the "file" token-store backend, the durable default. LMDB
 * (the only file that includes lmdb.h) holds key bytes -> 8-byte big-endian
 * token in the unnamed database of an environment at cfg->path, with LMDB's
 * full durability (a commit returns after fsync). One writer thread does all
 * LMDB work: the loop thread only queues requests, so it never waits on disk.
 * Group commit: the writer takes every queued request at once and serves the
 * whole batch in one write transaction and one commit; requests that arrive
 * meanwhile wait for the next batch. Gets travel the same queue, so a get
 * sees every advance submitted before it, and the highest it reports is
 * already durable. Any LMDB error fails the store for good (fail closed).
 * Keys longer than LMDB's key limit are stored under a shortened form: the
 * first 400 bytes, a NUL, and two 64-bit FNV-1a hashes of the whole key in
 * hex. Two long keys that collide would share one highest token, which can
 * only cause extra rejections, never accept a stale token. */
#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "st_store_internal.h"

#define LMDB_DEFAULT_MAP ((size_t)1 << 30)
#define LMDB_KEY_KEEP 400
#define LMDB_CLOSE_WAIT_S 10

struct lmdb_store {
    struct st_store *s;
    MDB_env *env;
    MDB_dbi dbi;
    size_t maxkey;
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;  /* guards head, tail, stop */
    pthread_cond_t cv;
    struct st_store_req *head, *tail;
    int stop;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t fnv1a(const char *k, size_t n, uint64_t h)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* The LMDB key for req: the key itself, or "\0" for the empty key (LMDB
 * refuses empty keys; request paths never hold NUL), or the hashed form. */
static void map_key(const struct lmdb_store *ls, const struct st_store_req *req, char *buf,
                    MDB_val *k)
{
    if (req->klen == 0) {
        buf[0] = '\0';
        k->mv_data = buf;
        k->mv_size = 1;
    } else if (req->klen <= ls->maxkey) {
        k->mv_data = (void *)req->key;
        k->mv_size = req->klen;
    } else {
        uint64_t h1 = fnv1a(req->key, req->klen, 0xcbf29ce484222325ULL);
        uint64_t h2 = fnv1a(req->key, req->klen, 0x84222325cbf29ce4ULL ^ req->klen);
        memcpy(buf, req->key, LMDB_KEY_KEEP);
        buf[LMDB_KEY_KEEP] = '\0';
        snprintf(buf + LMDB_KEY_KEEP + 1, 33, "%016llx%016llx", (unsigned long long)h1,
                 (unsigned long long)h2);
        k->mv_data = buf;
        k->mv_size = LMDB_KEY_KEEP + 1 + 32;
    }
}

static void put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)(v & 0xff);
}

static uint64_t get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Reads key into *out (0 when absent). Returns 0 or an LMDB error code. */
static int read_token(struct lmdb_store *ls, MDB_txn *txn, MDB_val *k, uint64_t *out)
{
    MDB_val v;
    int rc = mdb_get(txn, ls->dbi, k, &v);
    if (rc == MDB_NOTFOUND) {
        *out = 0;
        return 0;
    }
    if (rc != 0)
        return rc;
    if (v.mv_size != 8)
        return MDB_CORRUPTED;
    *out = get_be64(v.mv_data);
    return 0;
}

/* Serves one batch (owned) and completes it. Runs on the writer thread. */
static void run_batch(struct lmdb_store *ls, struct st_store_req *batch)
{
    char kbuf[LMDB_KEY_KEEP + 1 + 33];
    MDB_txn *txn = NULL;
    size_t n_adv = 0;
    const char *what = "txn_begin";
    int rc = 0;
    double t0 = now_s();

    for (struct st_store_req *r = batch; r != NULL; r = r->next)
        if (r->kind == ST_REQ_ADVANCE)
            n_adv++;
    if (st_store_failed(ls->s)) {
        rc = -1;
        goto done;
    }
    /* Reads alone need no write transaction and no fsync. */
    rc = mdb_txn_begin(ls->env, NULL, n_adv > 0 ? 0 : MDB_RDONLY, &txn);
    if (rc != 0)
        goto done;
    for (struct st_store_req *r = batch; r != NULL; r = r->next) {
        MDB_val k;
        uint64_t cur;
        map_key(ls, r, kbuf, &k);
        what = "get";
        rc = read_token(ls, txn, &k, &cur);
        if (rc != 0)
            goto done;
        if (r->kind == ST_REQ_ADVANCE && r->token > cur) {
            unsigned char be[8];
            MDB_val v = {.mv_size = 8, .mv_data = be};
            put_be64(be, r->token);
            what = "put";
            rc = mdb_put(txn, ls->dbi, &k, &v, 0);
            if (rc != 0)
                goto done;
            cur = r->token;
        }
        r->highest = cur;
    }
    /* S2: the commit (write + fsync) returns before any completion is
     * posted, so no advance is acknowledged before it is durable. */
    what = "commit";
    if (n_adv > 0)
        rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    txn = NULL;
done:
    if (txn != NULL)
        mdb_txn_abort(txn);
    if (rc != 0) {
        if (rc != -1)
            st_store_fail(ls->s, "lmdb %s: %s", what, mdb_strerror(rc));
        for (struct st_store_req *r = batch; r != NULL; r = r->next) {
            r->rc = -1;
            r->highest = 0;
        }
    } else if (n_adv > 0) {
        struct st_store_req *rep = st_store_req_commit(n_adv, now_s() - t0);
        if (rep != NULL) {
            struct st_store_req *last = batch;
            while (last->next != NULL)
                last = last->next;
            last->next = rep;
        }
    }
    st_store_complete_list(ls->s, batch);
}

static void *writer_main(void *arg)
{
    struct lmdb_store *ls = arg;

    pthread_mutex_lock(&ls->mu);
    for (;;) {
        while (ls->head == NULL && !ls->stop)
            pthread_cond_wait(&ls->cv, &ls->mu);
        if (ls->head == NULL)
            break; /* stop requested and everything served */
        struct st_store_req *batch = ls->head;
        ls->head = ls->tail = NULL;
        pthread_mutex_unlock(&ls->mu);
        run_batch(ls, batch);
        pthread_mutex_lock(&ls->mu);
    }
    pthread_mutex_unlock(&ls->mu);
    return NULL;
}

static void lmdb_submit(struct st_store *s, struct st_store_req *req)
{
    struct lmdb_store *ls = st_store_impl(s);
    int was_empty;

    req->next = NULL;
    pthread_mutex_lock(&ls->mu);
    was_empty = ls->head == NULL;
    if (ls->tail != NULL)
        ls->tail->next = req;
    else
        ls->head = req;
    ls->tail = req;
    pthread_mutex_unlock(&ls->mu);
    /* The writer only sleeps on an empty queue. */
    if (was_empty)
        pthread_cond_signal(&ls->cv);
}

static void lmdb_free(struct lmdb_store *ls)
{
    if (ls->env != NULL)
        mdb_env_close(ls->env);
    pthread_cond_destroy(&ls->cv);
    pthread_mutex_destroy(&ls->mu);
    free(ls);
}

static int lmdb_open(struct st_store *s, const struct st_store_config *cfg, char *err,
                     size_t errlen)
{
    struct lmdb_store *ls = NULL;
    MDB_txn *txn = NULL;
    struct stat st;
    int rc, dead;

    if (cfg->path == NULL || cfg->path[0] == '\0') {
        snprintf(err, errlen, "file store: no path");
        return -1;
    }
    if (mkdir(cfg->path, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "file store: mkdir %s: %s", cfg->path, strerror(errno));
        return -1;
    }
    if (stat(cfg->path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "file store: %s is not a directory", cfg->path);
        return -1;
    }
    ls = calloc(1, sizeof *ls);
    if (ls == NULL) {
        snprintf(err, errlen, "file store: out of memory");
        return -1;
    }
    ls->s = s;
    pthread_mutex_init(&ls->mu, NULL);
    pthread_cond_init(&ls->cv, NULL);
    rc = mdb_env_create(&ls->env);
    if (rc != 0) {
        ls->env = NULL;
        goto lmdb_fail;
    }
    rc = mdb_env_set_mapsize(ls->env, cfg->map_size ? cfg->map_size : LMDB_DEFAULT_MAP);
    if (rc != 0)
        goto lmdb_fail;
    /* No MDB_NOSYNC / MDB_NOMETASYNC: a commit is durable when it returns.
     * MDB_NOTLS: read transactions are not tied to a thread's slot. */
    rc = mdb_env_open(ls->env, cfg->path, MDB_NOTLS, 0600);
    if (rc != 0)
        goto lmdb_fail;
    /* Free reader slots left by a process that was killed. */
    (void)mdb_reader_check(ls->env, &dead);
    ls->maxkey = (size_t)mdb_env_get_maxkeysize(ls->env);
    if (ls->maxkey < LMDB_KEY_KEEP + 1 + 32) {
        snprintf(err, errlen, "file store: LMDB key limit %zu too small", ls->maxkey);
        goto fail;
    }
    rc = mdb_txn_begin(ls->env, NULL, 0, &txn);
    if (rc != 0)
        goto lmdb_fail;
    rc = mdb_dbi_open(txn, NULL, 0, &ls->dbi);
    if (rc != 0)
        goto lmdb_fail;
    rc = mdb_txn_commit(txn);
    txn = NULL;
    if (rc != 0)
        goto lmdb_fail;
    st_store_set_impl(s, ls);
    if (pthread_create(&ls->thread, NULL, writer_main, ls) != 0) {
        st_store_set_impl(s, NULL);
        snprintf(err, errlen, "file store: cannot start writer thread");
        goto fail;
    }
    ls->thread_started = 1;
    return 0;
lmdb_fail:
    snprintf(err, errlen, "file store %s: %s", cfg->path, mdb_strerror(rc));
fail:
    if (txn != NULL)
        mdb_txn_abort(txn);
    lmdb_free(ls);
    return -1;
}

static int lmdb_close(struct st_store *s)
{
    struct lmdb_store *ls = st_store_impl(s);
    struct timespec dl;

    if (ls == NULL)
        return 0;
    pthread_mutex_lock(&ls->mu);
    ls->stop = 1;
    pthread_mutex_unlock(&ls->mu);
    pthread_cond_signal(&ls->cv);
    /* Bounded: a disk that never answers must not hang shutdown forever. */
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += LMDB_CLOSE_WAIT_S;
    if (pthread_timedjoin_np(ls->thread, NULL, &dl) != 0) {
        fprintf(stderr, "file store: writer did not stop in %d s; leaking it\n",
                LMDB_CLOSE_WAIT_S);
        pthread_detach(ls->thread);
        return -1;
    }
    lmdb_free(ls);
    st_store_set_impl(s, NULL);
    return 0;
}

const struct st_store_ops st_store_lmdb_ops = {
    .name = "file",
    .open = lmdb_open,
    .submit = lmdb_submit,
    .close = lmdb_close,
};

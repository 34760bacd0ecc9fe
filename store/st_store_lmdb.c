/* st_store_lmdb: the "file" token-store backend, the durable default. LMDB
 * (the only file that includes lmdb.h) holds, in an environment at
 * cfg->path with LMDB's full durability (a commit returns after fsync), two
 * named databases: "fence.meta" with one header record (magic, format
 * version, the store's random identity, its generation, the operator floor,
 * its own checksum) and "fence.tokens" with key bytes -> 8-byte big-endian
 * token + 8-byte checksum over the store identity, the key and the token.
 * The store vouches for itself (S6 in docs/safety.md): at open the file's
 * size is checked against the size LMDB's header says before any data page
 * is touched (a short file would raise SIGBUS), the header and every record
 * are verified, and the identity is compared with the marker file
 * (st_marker) that says whether a store existed here before; any mismatch
 * refuses the open with the recovery steps. Each read checks its record's
 * checksum again, and each batch first checks that the file is still the
 * one opened and not shorter than used; SIGBUS while LMDB reads the map is
 * caught on the thread that caused it and fails the store instead of
 * killing the process. The map starts small and doubles on MDB_MAP_FULL up
 * to max_size (on the writer thread, between transactions); at max_size (or
 * ENOSPC) advances that would add a new key are refused with ST_STORE_EFULL
 * and those of existing keys go on. One writer thread does all
 * LMDB work: the loop thread only queues requests, so it never waits on disk.
 * Group commit: the writer takes every queued request at once and serves the
 * whole batch in one write transaction and one commit; requests that arrive
 * meanwhile wait for the next batch. Gets travel the same queue, so a get
 * sees every advance submitted before it, and the highest it reports is
 * already durable; a listing (st_store_list) walks a cursor in the same
 * transaction, so it does too. Any LMDB error fails the store for good
 * (fail closed).
 * Keys longer than LMDB's key limit are stored under a shortened form: the
 * first 400 bytes, a NUL, and two 64-bit FNV-1a hashes of the whole key in
 * hex. Two long keys that collide would share one highest token, which can
 * only cause extra rejections, never accept a stale token. A listing shows
 * such a key as its first 400 bytes and the 32 hex digits. */
#include <errno.h>
#include <inttypes.h>
#include <lmdb.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "st_marker.h"
#include "st_store_internal.h"
#include "st_worker.h"

#define LMDB_KEY_KEEP 400
#define LMDB_CLOSE_WAIT_S 10
#define LMDB_MIN_FILE 8192    /* two meta pages */
#define META_SIZE 64
#define META_VERSION 1
#define REC_SIZE 16
#define GUARD_SIGBUS (-31999) /* not an LMDB or errno code */
#define SHOW_BAD 10           /* damaged keys named in a report */

struct meta {
    unsigned char id[16];
    uint64_t generation;
    uint64_t floor;
    uint64_t created;
};

struct lmdb_store {
    struct st_store *s;
    MDB_env *env;
    MDB_dbi tok, mdbi;
    size_t maxkey;
    struct meta meta;
    char file[4096];     /* path of data.mdb */
    dev_t dev;           /* data.mdb as opened */
    ino_t ino;
    size_t map, max;     /* current map size, max_size */
    size_t psize;
    uint64_t used;       /* bytes up to the last page in use; writer thread */
    int full;            /* the last new-key advance did not fit; writer thread */
    int poisoned;        /* SIGBUS inside LMDB: never call it again */
    struct st_worker *worker; /* the writer thread */
};

/* ---- SIGBUS guard ------------------------------------------------------ */

/* A store file that is shorter than LMDB believes (truncated, damaged)
 * raises SIGBUS when a page beyond its end is read. The size checks avoid
 * that; this guard is the last line: the thread that reads the map marks
 * the work it does, and a SIGBUS inside it returns GUARD_SIGBUS from
 * guarded() instead of killing the process. Elsewhere the default action
 * stays. */
static _Thread_local sigjmp_buf *bus_jmp;
static pthread_once_t bus_once = PTHREAD_ONCE_INIT;

static void on_sigbus(int sig)
{
    if (bus_jmp != NULL)
        siglongjmp(*bus_jmp, 1);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void bus_install(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigbus;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
}

/* Runs fn(arg) and returns its result, or GUARD_SIGBUS when it raised
 * SIGBUS (the LMDB environment is then unusable). */
static int guarded(int (*fn)(void *), void *arg)
{
    sigjmp_buf jb;
    sigjmp_buf *volatile prev = bus_jmp;
    int rc;

    pthread_once(&bus_once, bus_install);
    if (sigsetjmp(jb, 1) != 0) {
        bus_jmp = prev;
        return GUARD_SIGBUS;
    }
    bus_jmp = &jb;
    rc = fn(arg);
    bus_jmp = prev;
    return rc;
}

static const char *lmdb_err(int rc)
{
    return rc == GUARD_SIGBUS ? "SIGBUS reading the store file (shorter than its header says)"
                              : mdb_strerror(rc);
}

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

/* The checksum of a record: FNV-1a over the store's identity, the stored
 * key and the token, from a seed of its own. Any single changed byte
 * changes it (each FNV step is a bijection of the state). */
static uint64_t rec_check(const unsigned char id[16], const void *key, size_t klen,
                          const unsigned char be[8])
{
    uint64_t h = fnv1a((const char *)id, 16, 0x6a09e667f3bcc908ULL);
    h = fnv1a(key, klen, h);
    return fnv1a((const char *)be, 8, h);
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

/* ---- records and header ---------------------------------------------- */

static void encode_rec(const struct lmdb_store *ls, const MDB_val *k, uint64_t token,
                       unsigned char out[REC_SIZE])
{
    put_be64(out, token);
    put_be64(out + 8, rec_check(ls->meta.id, k->mv_data, k->mv_size, out));
}

/* Decodes a record value: 0 and *token, or MDB_CORRUPTED when its size or
 * checksum is wrong. */
static int decode_rec(const unsigned char id[16], const MDB_val *k, const MDB_val *v,
                      uint64_t *token)
{
    const unsigned char *p = v->mv_data;

    if (v->mv_size != REC_SIZE || get_be64(p + 8) != rec_check(id, k->mv_data, k->mv_size, p))
        return MDB_CORRUPTED;
    *token = get_be64(p);
    return 0;
}

static void encode_meta(const struct meta *m, unsigned char out[META_SIZE])
{
    memset(out, 0, META_SIZE);
    memcpy(out, "FENCEST1", 8);
    out[11] = META_VERSION;
    memcpy(out + 16, m->id, 16);
    put_be64(out + 32, m->generation);
    put_be64(out + 40, m->floor);
    put_be64(out + 48, m->created);
    put_be64(out + 56, fnv1a((const char *)out, 56, 0xcbf29ce484222325ULL));
}

/* Decodes the header: 0, or -1 with the reason in why. */
static int decode_meta(const MDB_val *v, struct meta *m, const char **why)
{
    const unsigned char *p = v->mv_data;

    if (v->mv_size != META_SIZE || memcmp(p, "FENCEST1", 8) != 0) {
        *why = "the header record is not a fence store header";
        return -1;
    }
    if (get_be64(p + 56) != fnv1a((const char *)p, 56, 0xcbf29ce484222325ULL)) {
        *why = "the header record fails its checksum";
        return -1;
    }
    if (p[8] != 0 || p[9] != 0 || p[10] != 0 || p[11] != META_VERSION) {
        *why = "the header has an unknown format version";
        return -1;
    }
    memcpy(m->id, p + 16, 16);
    m->generation = get_be64(p + 32);
    m->floor = get_be64(p + 40);
    m->created = get_be64(p + 48);
    return 0;
}

static int put_meta(struct lmdb_store *ls, MDB_txn *txn)
{
    unsigned char buf[META_SIZE];
    MDB_val k = {.mv_size = 5, .mv_data = "store"}, v = {.mv_size = META_SIZE, .mv_data = buf};

    encode_meta(&ls->meta, buf);
    return mdb_put(txn, ls->mdbi, &k, &v, 0);
}

/* Reads key into *out (0 when absent), raised to the operator floor; *found
 * says whether a record exists. Returns 0 or an LMDB error code
 * (MDB_CORRUPTED for a record that fails its check). */
static int read_token(struct lmdb_store *ls, MDB_txn *txn, MDB_val *k, uint64_t *out,
                      int *found)
{
    MDB_val v;
    uint64_t t = 0;
    int rc = mdb_get(txn, ls->tok, k, &v);

    *found = rc == 0;
    if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;
    if (rc == 0 && (rc = decode_rec(ls->meta.id, k, &v, &t)) != 0)
        return rc;
    *out = t > ls->meta.floor ? t : ls->meta.floor;
    return 0;
}

/* The token of the record at k as stored, without the floor (0 when
 * absent or unreadable: then a set writes it anyway). */
static uint64_t raw_token(struct lmdb_store *ls, MDB_txn *txn, MDB_val *k)
{
    MDB_val v;
    uint64_t t = 0;

    if (mdb_get(txn, ls->tok, k, &v) != 0 || decode_rec(ls->meta.id, k, &v, &t) != 0)
        return 0;
    return t;
}

/* Refreshes the map size and the bytes in use (pages up to the last one). */
static void update_fill(struct lmdb_store *ls)
{
    MDB_envinfo info;

    if (mdb_env_info(ls->env, &info) == 0) {
        ls->map = info.me_mapsize;
        ls->used = ((uint64_t)info.me_last_pgno + 1) * ls->psize;
    }
    st_store_set_fill(ls->s, ls->used, ls->max, ls->full);
}

/* ---- listing ----------------------------------------------------------- */

/* Bytewise order with the shorter key first on a tie: LMDB's default key
 * order. */
static int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);

    return c != 0 ? c : alen < blen ? -1 : alen > blen;
}

/* Serves a LIST in txn (the batch's, so it sees the advances before it):
 * the records whose key matches the prefix, after the cursor (a stored
 * key), into the request's page. Stored keys map back as map_key() made
 * them: "\0" is the empty key, the hashed form gives its kept bytes and its
 * hash. Returns 0 or an LMDB error (MDB_CORRUPTED for a record that fails
 * its check, as a get would); out of memory sets rc ST_STORE_EUNAVAIL.
 * Writer thread, under guarded(). */
static int list_records(struct lmdb_store *ls, MDB_txn *txn, struct st_store_req *r)
{
    const struct st_store_list_res *l = r->list;
    size_t pk = r->klen < LMDB_KEY_KEEP ? r->klen : LMDB_KEY_KEEP, scanned = 0;
    MDB_cursor *cur = NULL;
    MDB_val k, v, last = {0, NULL};
    int rc, skip = 0;

    st_store_list_reset(r);
    r->rc = 0;
    rc = mdb_cursor_open(txn, ls->tok, &cur);
    if (rc != 0)
        return rc;
    if (l->alen > 0 && key_cmp(l->after, l->alen, r->key, pk) > 0) {
        k.mv_data = (void *)l->after;
        k.mv_size = l->alen < ls->maxkey ? l->alen : ls->maxkey;
        skip = 1;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    } else if (pk > 0) {
        k.mv_data = r->key;
        k.mv_size = pk;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    } else {
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    }
    for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        const char *key = k.mv_data;
        size_t klen = k.mv_size;
        char hash[33];
        uint64_t t;
        int hashed = 0;

        /* Sorted: past the prefix's kept bytes no key can match. */
        if (k.mv_size < pk || memcmp(k.mv_data, r->key, pk) != 0)
            break;
        if (skip && key_cmp(k.mv_data, k.mv_size, l->after, l->alen) <= 0) {
            last = k;
            continue;
        }
        skip = 0;
        if (++scanned > ST_STORE_LIST_SCAN || st_store_list_full(r)) {
            /* Bounded: the next page starts after the last key looked at. */
            if (st_store_list_more(r, last.mv_data, last.mv_size) != 0)
                r->rc = ST_STORE_EUNAVAIL;
            break;
        }
        if (klen == 1 && key[0] == '\0') {
            klen = 0;
        } else if (klen == LMDB_KEY_KEEP + 1 + 32 && key[LMDB_KEY_KEEP] == '\0') {
            memcpy(hash, key + LMDB_KEY_KEEP + 1, 32);
            hash[32] = '\0';
            klen = LMDB_KEY_KEEP;
            hashed = 1;
        }
        last = k;
        /* A hashed key's kept bytes matched the prefix's above; the rest of
         * it cannot be compared. */
        if (!hashed && (klen < r->klen || memcmp(key, r->key, r->klen) != 0))
            continue;
        if ((rc = decode_rec(ls->meta.id, &k, &v, &t)) != 0)
            break;
        if (st_store_list_add(r, key, klen, t > ls->meta.floor ? t : ls->meta.floor,
                              hashed ? hash : NULL) != 0) {
            r->rc = ST_STORE_EUNAVAIL;
            break;
        }
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ---- the writer -------------------------------------------------------- */

struct batch_try {
    struct lmdb_store *ls;
    struct st_store_req *batch;
    size_t n_adv;
    int full_mode;    /* advances of new keys are refused with EFULL */
    const char *what;
};

/* One attempt at a batch in one transaction. Sets each request's rc and
 * highest. Returns 0 or an LMDB error (the transaction is then aborted and
 * nothing is durable). Writer thread, under guarded(). */
static int batch_try(void *arg)
{
    struct batch_try *bt = arg;
    struct lmdb_store *ls = bt->ls;
    char kbuf[LMDB_KEY_KEEP + 1 + 33];
    MDB_txn *txn = NULL;
    size_t puts = 0;
    int rc;

    bt->what = "txn_begin";
    /* Reads alone need no write transaction and no fsync. */
    rc = mdb_txn_begin(ls->env, NULL, bt->n_adv > 0 ? 0 : MDB_RDONLY, &txn);
    if (rc != 0)
        goto out;
    for (struct st_store_req *r = bt->batch; r != NULL; r = r->next) {
        MDB_val k;
        uint64_t cur;
        int found;
        if (r->kind == ST_REQ_LIST) {
            bt->what = "list";
            if ((rc = list_records(ls, txn, r)) != 0)
                goto out;
            continue;
        }
        map_key(ls, r, kbuf, &k);
        bt->what = "get";
        rc = read_token(ls, txn, &k, &cur, &found);
        if (rc != 0)
            goto out;
        r->rc = 0;
        /* A set writes its token whatever the stored one (the operator's
         * reset); reading still raises it to the floor. */
        if ((r->kind == ST_REQ_ADVANCE && r->token > cur) ||
            (r->kind == ST_REQ_SET && (!found || r->token != raw_token(ls, txn, &k)))) {
            unsigned char rec[REC_SIZE];
            MDB_val v = {.mv_size = REC_SIZE, .mv_data = rec};
            if (!found && bt->full_mode) {
                r->rc = ST_STORE_EFULL;
                r->highest = cur;
                continue;
            }
            encode_rec(ls, &k, r->token, rec);
            bt->what = "put";
            rc = mdb_put(txn, ls->tok, &k, &v, 0);
            if (rc != 0)
                goto out;
            puts++;
            cur = r->token > ls->meta.floor ? r->token : ls->meta.floor;
        }
        r->highest = cur;
    }
    /* S2: the commit (write + fsync) returns before any completion is
     * posted, so no advance is acknowledged before it is durable. */
    bt->what = "commit";
    if (bt->n_adv > 0 && puts > 0)
        rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    txn = NULL;
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    return rc;
}

/* Whether data.mdb is still the file opened and not shorter than the pages
 * in use: a removed, replaced or truncated file fails the store before LMDB
 * reads it (and acknowledges advances written to a file nobody will find). */
static int file_ok(struct lmdb_store *ls)
{
    struct stat st, now;
    int fd;

    if (mdb_env_get_fd(ls->env, &fd) != 0 || fstat(fd, &st) != 0) {
        st_store_fail(ls->s, "file store: cannot stat the open store file");
        return 0;
    }
    if (st.st_nlink == 0 || stat(ls->file, &now) != 0 || now.st_ino != ls->ino ||
        now.st_dev != ls->dev) {
        st_store_fail(ls->s, "file store: %s was removed or replaced while in use", ls->file);
        return 0;
    }
    if ((uint64_t)st.st_size < ls->used) {
        st_store_fail(ls->s, "file store: %s shrank to %lld bytes while in use (%" PRIu64
                      " in use)", ls->file, (long long)st.st_size, ls->used);
        return 0;
    }
    return 1;
}

/* Serves one batch (owned) and completes it. Runs on the writer thread. */
static void run_batch(struct lmdb_store *ls, struct st_store_req *batch)
{
    struct batch_try bt = {.ls = ls, .batch = batch, .what = "txn_begin"};
    int rc = 0, efull = 0;
    double t0 = now_s();

    for (struct st_store_req *r = batch; r != NULL; r = r->next)
        if (r->kind == ST_REQ_ADVANCE || r->kind == ST_REQ_SET)
            bt.n_adv++;
    if (st_store_failed(ls->s) || ls->poisoned || !file_ok(ls)) {
        rc = -1;
        goto done;
    }
    /* Bounded: each retry either doubles the map or enters full mode. */
    for (int attempt = 0; attempt < 64; attempt++) {
        rc = guarded(batch_try, &bt);
        if (rc != MDB_MAP_FULL && rc != ENOSPC)
            break;
        if (rc == MDB_MAP_FULL && ls->map < ls->max) {
            size_t grow = ls->map > ls->max / 2 ? ls->max : ls->map * 2;
            /* No transaction is open: this thread runs them all. */
            int src = mdb_env_set_mapsize(ls->env, grow);
            if (src != 0) {
                rc = src;
                bt.what = "set_mapsize";
                break;
            }
            update_fill(ls);
            continue;
        }
        if (bt.full_mode) {
            /* Not even updates of existing keys fit: refuse the advances,
             * the store itself is still sound. */
            efull = 1;
            rc = 0;
            break;
        }
        bt.full_mode = 1;
    }
done:
    if (rc == GUARD_SIGBUS)
        ls->poisoned = 1;
    if (rc != 0) {
        if (rc != -1)
            st_store_fail(ls->s, "lmdb %s: %s", bt.what, lmdb_err(rc));
        for (struct st_store_req *r = batch; r != NULL; r = r->next) {
            r->rc = -1;
            r->highest = 0;
        }
    } else {
        int refused = 0;
        for (struct st_store_req *r = batch; r != NULL; r = r->next) {
            if (efull) {
                r->rc = ST_STORE_EFULL;
                r->highest = 0;
            }
            refused |= r->rc == ST_STORE_EFULL;
        }
        if (bt.n_adv > 0) {
            ls->full = refused;
            update_fill(ls);
        }
        if (bt.n_adv > 0 && !efull) {
            struct st_store_req *rep = st_store_req_commit(bt.n_adv, now_s() - t0);
            if (rep != NULL) {
                struct st_store_req *last = batch;
                while (last->next != NULL)
                    last = last->next;
                last->next = rep;
            }
        }
    }
    st_store_complete_list(ls->s, batch);
}

static void run_batch_cb(void *arg, struct st_store_req *batch)
{
    run_batch(arg, batch);
}

static void lmdb_submit(struct st_store *s, struct st_store_req *req)
{
    struct lmdb_store *ls = st_store_impl(s);

    st_worker_submit(ls->worker, req);
}

/* ---- opening and checking --------------------------------------------- */

enum file_state { F_ABSENT, F_EMPTY, F_SHORT, F_PRESENT };

/* What is at the store path, without opening it: no directory or no
 * data.mdb (absent), a data.mdb of 0 bytes (empty), one shorter than its two
 * header pages (short), or a file to open. */
static enum file_state probe(const char *file, off_t *size)
{
    struct stat st;

    *size = 0;
    if (stat(file, &st) != 0)
        return F_ABSENT;
    *size = st.st_size;
    if (st.st_size == 0)
        return F_EMPTY;
    return st.st_size < LMDB_MIN_FILE ? F_SHORT : F_PRESENT;
}

static void lmdb_free(struct lmdb_store *ls)
{
    if (ls == NULL)
        return;
    /* After SIGBUS inside LMDB its state is unknown: leave it to exit. */
    if (ls->env != NULL && !ls->poisoned)
        mdb_env_close(ls->env);
    free(ls);
}

static void note(const struct st_store_config *cfg, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void note(const struct st_store_config *cfg, int level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if (cfg->log == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cfg->log(cfg->log_arg, level, msg);
}

/* Opens the environment (read-only for a check) and checks the file's size
 * against LMDB's header before anything reads a data page. Returns 0, or
 * -1 with a message in err (*damaged set when the file is the problem). */
static int env_open(struct lmdb_store *ls, const struct st_store_config *cfg, int rdonly,
                    size_t fsize, char *err, size_t errlen, int *damaged)
{
    MDB_envinfo info;
    MDB_stat st;
    size_t map = cfg->map_size != 0 ? cfg->map_size : ST_STORE_MAP_INITIAL;
    int rc, dead;

    if (map > ls->max)
        map = ls->max;
    if (fsize > map)
        map = fsize; /* LMDB also raises it to the pages in use */
    rc = mdb_env_create(&ls->env);
    if (rc != 0) {
        ls->env = NULL;
        goto lmdb_fail;
    }
    if ((rc = mdb_env_set_maxdbs(ls->env, 2)) != 0 ||
        (rc = mdb_env_set_mapsize(ls->env, map)) != 0)
        goto lmdb_fail;
    /* No MDB_NOSYNC / MDB_NOMETASYNC: a commit is durable when it returns.
     * MDB_NOTLS: read transactions are not tied to a thread's slot. */
    rc = mdb_env_open(ls->env, cfg->path, MDB_NOTLS | (rdonly ? MDB_RDONLY : 0), 0600);
    if (rc != 0) {
        *damaged = rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH || rc == MDB_CORRUPTED;
        goto lmdb_fail;
    }
    if (!rdonly)
        (void)mdb_reader_check(ls->env, &dead); /* slots of killed processes */
    if ((rc = mdb_env_info(ls->env, &info)) != 0 || (rc = mdb_env_stat(ls->env, &st)) != 0)
        goto lmdb_fail;
    ls->psize = st.ms_psize;
    ls->map = info.me_mapsize;
    ls->used = ((uint64_t)info.me_last_pgno + 1) * ls->psize;
    if (fsize != 0 && (uint64_t)fsize < ls->used) {
        /* S6: a page beyond the end would raise SIGBUS: refuse first. */
        snprintf(err, errlen, "%s is %zu bytes but its header says %" PRIu64
                 " are in use: the file was truncated", ls->file, fsize, ls->used);
        *damaged = 1;
        return -1;
    }
    ls->maxkey = (size_t)mdb_env_get_maxkeysize(ls->env);
    if (ls->maxkey < LMDB_KEY_KEEP + 1 + 32) {
        snprintf(err, errlen, "LMDB key limit %zu too small", ls->maxkey);
        return -1;
    }
    return 0;
lmdb_fail:
    snprintf(err, errlen, "%s: %s", cfg->path, lmdb_err(rc));
    return -1;
}

struct verify {
    struct lmdb_store *ls;
    MDB_txn *txn;
    FILE *out;        /* the check's report, or NULL */
    size_t records, bad;
    const char *why;  /* header problem */
    int nodb;         /* the named databases are not there */
    int blank;        /* ... and the environment holds nothing at all */
};

static void show_key(FILE *out, const MDB_val *k)
{
    const unsigned char *p = k->mv_data;
    size_t n = k->mv_size < 120 ? k->mv_size : 120;

    fputs("  damaged record: key \"", out);
    for (size_t i = 0; i < n; i++)
        fprintf(out, p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' ? "%c" : "\\x%02x", p[i]);
    fprintf(out, "%s\"\n", n < k->mv_size ? "..." : "");
}

/* Reads the header and checks every record (under guarded()). Returns 0 or
 * an LMDB error; a bad header sets why, bad records count in bad. */
static int verify_all(void *arg)
{
    struct verify *vf = arg;
    struct lmdb_store *ls = vf->ls;
    MDB_val k = {.mv_size = 5, .mv_data = "store"}, v;
    MDB_cursor *cur = NULL;
    uint64_t t;
    int rc;

    /* Opening the databases reads the main root page: under the guard. */
    rc = mdb_txn_begin(ls->env, NULL, MDB_RDONLY, &vf->txn);
    if (rc == MDB_MAP_RESIZED && mdb_env_set_mapsize(ls->env, 0) == 0)
        rc = mdb_txn_begin(ls->env, NULL, MDB_RDONLY, &vf->txn); /* a running proxy grew it */
    if (rc != 0)
        return rc;
    rc = mdb_dbi_open(vf->txn, "fence.meta", 0, &ls->mdbi);
    if (rc == 0)
        rc = mdb_dbi_open(vf->txn, "fence.tokens", 0, &ls->tok);
    if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE) {
        MDB_dbi main_dbi;
        MDB_stat ms;
        vf->nodb = 1;
        /* An environment LMDB initialised but we never wrote to: a creation
         * killed before its first commit. */
        vf->blank = mdb_dbi_open(vf->txn, NULL, 0, &main_dbi) == 0 &&
                    mdb_stat(vf->txn, main_dbi, &ms) == 0 && ms.ms_entries == 0;
        return 0;
    }
    if (rc != 0)
        return rc;
    rc = mdb_get(vf->txn, ls->mdbi, &k, &v);
    if (rc == MDB_NOTFOUND) {
        vf->why = "the header record is missing";
        return 0;
    }
    if (rc != 0)
        return rc;
    if (decode_meta(&v, &ls->meta, &vf->why) != 0)
        return 0;
    rc = mdb_cursor_open(vf->txn, ls->tok, &cur);
    if (rc != 0)
        return rc;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        vf->records++;
        if (decode_rec(ls->meta.id, &k, &v, &t) != 0) {
            if (vf->out != NULL && vf->bad < SHOW_BAD)
                show_key(vf->out, &k);
            vf->bad++;
        }
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static const char *const recovery =
    "Recovery (docs/operations.md, \"Token store faults\"): restore a copy of the store "
    "directory and start with `[store] floor = N`, or move the damaged store away and "
    "start with `[store] floor = N` (a new store in which every resource starts at N); "
    "N must be above every token your lock service has issued. "
    "`fenceproxy store check -c FILE` reports the damage.";

/* Opens the databases and verifies the store (header, identity against the
 * marker, every record). Returns 0, or -1 with the reason in err. */
static int open_existing(struct lmdb_store *ls, const struct st_store_config *cfg,
                         const struct st_marker *mk, int rdonly, FILE *out, char *err,
                         size_t errlen, int *damaged, int *blank)
{
    struct verify vf = {.ls = ls, .out = out};
    char want[33], have[33];
    int rc;

    rc = guarded(verify_all, &vf);
    if (rc == GUARD_SIGBUS) {
        ls->poisoned = 1;
        vf.txn = NULL;
    }
    if (rc != 0) {
        *damaged = rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == GUARD_SIGBUS ||
                   rc == MDB_BAD_TXN;
        goto lmdb_fail;
    }
    if (vf.blank && blank != NULL) {
        *blank = 1;
        mdb_txn_abort(vf.txn);
        return 0;
    }
    if (vf.nodb) {
        snprintf(err, errlen, "%s is not a fence token store of this format (no header; "
                 "a store from before version 0.2, or another LMDB file)", ls->file);
        *damaged = 1;
        goto fail;
    }
    if (vf.why != NULL) {
        snprintf(err, errlen, "%s: %s", ls->file, vf.why);
        *damaged = 1;
        goto fail;
    }
    if (vf.bad > 0) {
        snprintf(err, errlen, "%s: %zu of %zu records fail their checksum", ls->file, vf.bad,
                 vf.records);
        *damaged = 1;
        goto fail;
    }
    if (mk != NULL && memcmp(mk->id, ls->meta.id, 16) != 0) {
        st_marker_hex(mk->id, want);
        st_marker_hex(ls->meta.id, have);
        snprintf(err, errlen, "%s holds store %s, but the marker %s says store %s was used "
                 "here: another store was put in its place", ls->file, have, cfg->marker,
                 want);
        *damaged = 1;
        goto fail;
    }
    if (mk != NULL && mk->generation > ls->meta.generation &&
        !(cfg->floor > ls->meta.floor && !rdonly)) {
        snprintf(err, errlen, "%s is generation %" PRIu64 " but the marker %s says %" PRIu64
                 ": an older copy of this store (its highests predate a floor raise)",
                 ls->file, ls->meta.generation, cfg->marker, mk->generation);
        *damaged = 1;
        goto fail;
    }
    if (out != NULL) {
        st_marker_hex(ls->meta.id, have);
        fprintf(out, "%s: store %s, generation %" PRIu64 ", floor %" PRIu64 ", %zu records, "
                "%" PRIu64 " bytes in use\n", ls->file, have, ls->meta.generation,
                ls->meta.floor, vf.records, ls->used);
    }
    /* Committing (not aborting) keeps the database handles opened in it. */
    rc = mdb_txn_commit(vf.txn);
    vf.txn = NULL;
    if (rc != 0)
        goto lmdb_fail;
    return 0;
lmdb_fail:
    snprintf(err, errlen, "%s: %s", ls->file, lmdb_err(rc));
fail:
    if (vf.txn != NULL && !ls->poisoned)
        mdb_txn_abort(vf.txn);
    return -1;
}

/* Creates the databases and the header of a new store in an open env. */
static int create_store(struct lmdb_store *ls, const struct st_store_config *cfg,
                        const struct st_marker *mk, char *err, size_t errlen)
{
    MDB_txn *txn = NULL;
    int rc;

    if (getrandom(ls->meta.id, sizeof ls->meta.id, 0) != (ssize_t)sizeof ls->meta.id) {
        snprintf(err, errlen, "file store: getrandom: %s", strerror(errno));
        return -1;
    }
    ls->meta.generation = mk != NULL ? mk->generation + 1 : 1;
    ls->meta.floor = cfg->floor;
    ls->meta.created = (uint64_t)time(NULL);
    rc = mdb_txn_begin(ls->env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "fence.meta", MDB_CREATE, &ls->mdbi);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "fence.tokens", MDB_CREATE, &ls->tok);
    if (rc == 0)
        rc = put_meta(ls, txn);
    if (rc == 0) {
        rc = mdb_txn_commit(txn);
        txn = NULL;
    }
    if (txn != NULL)
        mdb_txn_abort(txn);
    if (rc != 0) {
        snprintf(err, errlen, "file store %s: creating: %s", cfg->path, mdb_strerror(rc));
        return -1;
    }
    return 0;
}

/* Writes the raised floor and a new generation (above the store's and the
 * marker's, mk may be NULL) into the header. */
static int raise_floor(struct lmdb_store *ls, uint64_t floor, const struct st_marker *mk,
                       char *err, size_t errlen)
{
    MDB_txn *txn = NULL;
    struct meta old = ls->meta;
    int rc;

    ls->meta.floor = floor;
    if (mk != NULL && mk->generation > ls->meta.generation)
        ls->meta.generation = mk->generation;
    ls->meta.generation++;
    rc = mdb_txn_begin(ls->env, NULL, 0, &txn);
    if (rc == 0)
        rc = put_meta(ls, txn);
    if (rc == 0) {
        rc = mdb_txn_commit(txn);
        txn = NULL;
    }
    if (txn != NULL)
        mdb_txn_abort(txn);
    if (rc != 0) {
        ls->meta = old;
        snprintf(err, errlen, "file store %s: raising the floor: %s", ls->file,
                 mdb_strerror(rc));
        return -1;
    }
    return 0;
}

static struct lmdb_store *ls_new(struct st_store *s, const struct st_store_config *cfg,
                                 char *err, size_t errlen)
{
    struct lmdb_store *ls = calloc(1, sizeof *ls);

    if (ls == NULL) {
        snprintf(err, errlen, "file store: out of memory");
        return NULL;
    }
    ls->s = s;
    ls->max = cfg->max_size != 0 ? cfg->max_size : ST_STORE_MAP_MAX;
    snprintf(ls->file, sizeof ls->file, "%s/data.mdb", cfg->path);
    return ls;
}

static int lmdb_open(struct st_store *s, const struct st_store_config *cfg, char *err,
                     size_t errlen)
{
    struct lmdb_store *ls = NULL;
    struct st_marker mk, *mkp = NULL;
    enum file_state fs;
    struct stat st;
    off_t fsize;
    char msg[8192] = "", hex[33];
    int damaged = 0, creating = 0, blank = 0, mrc = 1;

    if (cfg->path == NULL || cfg->path[0] == '\0') {
        snprintf(err, errlen, "file store: no path");
        return -1;
    }
    if (strlen(cfg->path) > 4000) {
        snprintf(err, errlen, "file store: path too long");
        return -1;
    }
    if (cfg->marker != NULL) {
        mrc = st_marker_read(cfg->marker, &mk, msg, sizeof msg);
        if (mrc < 0)
            goto refuse;
        if (mrc == 0)
            mkp = &mk;
    }
    ls = ls_new(s, cfg, msg, sizeof msg);
    if (ls == NULL)
        goto refuse;
    fs = probe(ls->file, &fsize);
    if (fs == F_SHORT) {
        snprintf(msg, sizeof msg, "%s is %lld bytes, shorter than its own header: the file "
                 "was truncated", ls->file, (long long)fsize);
        damaged = 1;
        goto refuse;
    }
    if (fs == F_PRESENT) {
        if (env_open(ls, cfg, 0, (size_t)fsize, msg, sizeof msg, &damaged) != 0 ||
            open_existing(ls, cfg, mkp, 0, NULL, msg, sizeof msg, &damaged, &blank) != 0)
            goto refuse;
        if (!blank && cfg->mode == ST_OPEN_INIT) {
            snprintf(msg, sizeof msg, "a store already exists at %s; to replace it, move "
                     "the directory away first", cfg->path);
            goto refuse;
        }
    }
    if (fs != F_PRESENT || blank) {
        /* Missing or empty. S6: a store that existed before is never
         * silently replaced by an empty one (every highest would be 0). */
        if (mkp != NULL && cfg->mode != ST_OPEN_INIT && cfg->floor == 0) {
            st_marker_hex(mk.id, hex);
            snprintf(msg, sizeof msg, "it is %s, but store %s (generation %"
                     PRIu64 ") was created here before (marker %s): starting empty would "
                     "forget every highest token",
                     fs == F_ABSENT ? "missing" : "empty", hex, mk.generation, cfg->marker);
            damaged = 1;
            goto refuse;
        }
        if (fs == F_EMPTY && unlink(ls->file) != 0) {
            snprintf(msg, sizeof msg, "unlink %s: %s", ls->file, strerror(errno));
            goto refuse;
        }
        if (mkdir(cfg->path, 0700) != 0 && errno != EEXIST) {
            snprintf(msg, sizeof msg, "mkdir %s: %s", cfg->path, strerror(errno));
            goto refuse;
        }
        if (stat(cfg->path, &st) != 0 || !S_ISDIR(st.st_mode)) {
            snprintf(msg, sizeof msg, "%s is not a directory", cfg->path);
            goto refuse;
        }
        if (!blank && env_open(ls, cfg, 0, 0, msg, sizeof msg, &damaged) != 0)
            goto refuse;
        if (create_store(ls, cfg, mkp, msg, sizeof msg) != 0)
            goto refuse;
        creating = 1;
        st_marker_hex(ls->meta.id, hex);
        if (cfg->mode == ST_OPEN_INIT)
            note(cfg, 2, "created token store %s at %s (generation %" PRIu64 ", floor %"
                 PRIu64 ")", hex, cfg->path, ls->meta.generation, ls->meta.floor);
        else if (mkp != NULL)
            note(cfg, 1, "token store %s was missing: created store %s with the operator "
                 "floor %" PRIu64 " (every resource's highest starts there)", cfg->path, hex,
                 cfg->floor);
        else
            note(cfg, 1, "no token store at %s and none was configured before: created "
                 "store %s (first start)%s", cfg->path, hex,
                 cfg->marker != NULL ? "" : " [no marker file]");
    } else if (cfg->floor > ls->meta.floor) {
        uint64_t was = ls->meta.floor;
        if (raise_floor(ls, cfg->floor, mkp, msg, sizeof msg) != 0)
            goto refuse;
        note(cfg, 1, "operator floor: every resource's highest in %s raised to at least %"
             PRIu64 " (was %" PRIu64 "; generation now %" PRIu64 ")", cfg->path,
             cfg->floor, was, ls->meta.generation);
    }
    if (stat(ls->file, &st) != 0) {
        snprintf(msg, sizeof msg, "stat %s: %s", ls->file, strerror(errno));
        goto refuse;
    }
    ls->dev = st.st_dev;
    ls->ino = st.st_ino;
    if (cfg->marker != NULL &&
        (mkp == NULL || memcmp(mk.id, ls->meta.id, 16) != 0 ||
         mk.generation != ls->meta.generation)) {
        struct st_marker now;
        memcpy(now.id, ls->meta.id, 16);
        now.generation = ls->meta.generation;
        if (st_marker_write(cfg->marker, &now, cfg->path, msg, sizeof msg) != 0)
            goto refuse;
        if (mkp == NULL && !creating)
            note(cfg, 1, "token store %s had no marker: wrote %s", cfg->path, cfg->marker);
    }
    update_fill(ls);
    st_store_set_impl(s, ls);
    ls->worker = st_worker_start(run_batch_cb, ls);
    if (ls->worker == NULL) {
        st_store_set_impl(s, NULL);
        snprintf(msg, sizeof msg, "cannot start writer thread");
        goto refuse;
    }
    return 0;
refuse:
    snprintf(err, errlen, "token store %s refused: %s.%s%s", cfg->path, msg,
             damaged ? " " : "", damaged ? recovery : "");
    lmdb_free(ls);
    return -1;
}

int st_store_lmdb_check(const struct st_store_config *cfg, FILE *out)
{
    struct lmdb_store *ls = NULL;
    struct st_marker mk, *mkp = NULL;
    off_t fsize;
    enum file_state fs;
    char msg[8192] = "", hex[33];
    int damaged = 0, rc = -1;

    if (cfg->path == NULL || strlen(cfg->path) > 4000) {
        fprintf(out, "store check: bad store path\n");
        return -1;
    }
    if (cfg->marker != NULL) {
        int mrc = st_marker_read(cfg->marker, &mk, msg, sizeof msg);
        if (mrc < 0) {
            fprintf(out, "DAMAGED: %s\n", msg);
            return 1;
        }
        if (mrc == 0) {
            mkp = &mk;
            st_marker_hex(mk.id, hex);
            fprintf(out, "marker %s: store %s, generation %" PRIu64 "\n", cfg->marker, hex,
                    mk.generation);
        } else {
            fprintf(out, "marker %s: none (no store was created with this configuration)\n",
                    cfg->marker);
        }
    }
    ls = ls_new(NULL, cfg, msg, sizeof msg);
    if (ls == NULL) {
        fprintf(out, "store check: %s\n", msg);
        return -1;
    }
    fs = probe(ls->file, &fsize);
    if (fs == F_ABSENT || fs == F_EMPTY) {
        fprintf(out, "%s: %s\n", ls->file, fs == F_EMPTY ? "empty (0 bytes)" : "missing");
        fprintf(out, mkp != NULL ? "DAMAGED: the store was created before and is gone\n"
                                 : "MISSING: no store yet (`fenceproxy store init`)\n");
        rc = 1;
        goto out;
    }
    if (fs == F_SHORT) {
        fprintf(out, "DAMAGED: %s is %lld bytes, shorter than its own header\n", ls->file,
                (long long)fsize);
        rc = 1;
        goto out;
    }
    if (env_open(ls, cfg, 1, (size_t)fsize, msg, sizeof msg, &damaged) != 0 ||
        open_existing(ls, cfg, mkp, 1, out, msg, sizeof msg, &damaged, NULL) != 0) {
        fprintf(out, "%s: %s\n", damaged ? "DAMAGED" : "ERROR", msg);
        rc = damaged ? 1 : -1;
        goto out;
    }
    fprintf(out, "clean\n");
    rc = 0;
out:
    lmdb_free(ls);
    return rc;
}

static int lmdb_close(struct st_store *s)
{
    struct lmdb_store *ls = st_store_impl(s);

    if (ls == NULL)
        return 0;
    if (st_worker_stop(&ls->worker, LMDB_CLOSE_WAIT_S) < 0) {
        fprintf(stderr, "file store: writer did not stop in %d s; leaking it\n",
                LMDB_CLOSE_WAIT_S);
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

/* st_store_memory: the "memory" token-store backend, for tests and for
 * setups that accept losing every token on restart. A chained hash map from
 * key bytes to the highest token; requests are answered at once, but still
 * through the completion queue so callers see the same asynchronous contract
 * as with the durable backends. Loop thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_store_internal.h"

struct mem_entry {
    struct mem_entry *next;
    uint64_t hash;
    uint64_t highest;
    size_t klen;
    char key[];
};

struct mem_store {
    struct mem_entry **b;
    size_t nb, n;
};

static uint64_t fnv1a(const char *k, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static int mem_open(struct st_store *s, const struct st_store_config *cfg, char *err,
                    size_t errlen)
{
    struct mem_store *m = calloc(1, sizeof *m);
    if (m != NULL) {
        m->nb = 64;
        m->b = calloc(m->nb, sizeof *m->b);
    }
    if (m == NULL || m->b == NULL) {
        free(m);
        snprintf(err, errlen, "memory store: out of memory");
        return -1;
    }
    st_store_set_impl(s, m);
    return 0;
}

static void mem_grow(struct mem_store *m)
{
    size_t nb = m->nb * 2;
    struct mem_entry **b = calloc(nb, sizeof *b);
    if (b == NULL)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < m->nb; i++) {
        struct mem_entry *e = m->b[i], *next;
        for (; e != NULL; e = next) {
            next = e->next;
            e->next = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
        }
    }
    free(m->b);
    m->b = b;
    m->nb = nb;
}

static struct mem_entry *mem_find(struct mem_store *m, const char *key, size_t klen, uint64_t h)
{
    for (struct mem_entry *e = m->b[h & (m->nb - 1)]; e != NULL; e = e->next)
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0)
            return e;
    return NULL;
}

static void mem_submit(struct st_store *s, struct st_store_req *req)
{
    struct mem_store *m = st_store_impl(s);
    uint64_t h = fnv1a(req->key, req->klen);
    struct mem_entry *e = mem_find(m, req->key, req->klen, h);

    req->rc = 0;
    if (req->kind == ST_REQ_ADVANCE && (e == NULL || e->highest < req->token)) {
        if (e == NULL) {
            e = calloc(1, sizeof *e + req->klen);
            if (e == NULL) {
                /* Not recorded, so not acknowledged. */
                req->rc = -1;
                st_store_complete(s, req);
                return;
            }
            e->hash = h;
            e->klen = req->klen;
            memcpy(e->key, req->key, req->klen);
            e->next = m->b[h & (m->nb - 1)];
            m->b[h & (m->nb - 1)] = e;
            if (++m->n > m->nb)
                mem_grow(m);
        }
        e->highest = req->token;
    }
    req->highest = e != NULL ? e->highest : 0;
    st_store_complete(s, req);
}

static int mem_close(struct st_store *s)
{
    struct mem_store *m = st_store_impl(s);
    if (m == NULL)
        return 0;
    for (size_t i = 0; i < m->nb; i++) {
        struct mem_entry *e = m->b[i], *next;
        for (; e != NULL; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(m->b);
    free(m);
    st_store_set_impl(s, NULL);
    return 0;
}

const struct st_store_ops st_store_memory_ops = {
    .name = "memory",
    .open = mem_open,
    .submit = mem_submit,
    .close = mem_close,
};

/* st_store_memory: the "memory" token-store backend, for tests and for
 * setups that accept losing every token on restart. A hash map (fc_hmap) from
 * key bytes to the highest token; requests are answered at once, but still
 * through the completion queue so callers see the same asynchronous contract
 * as with the durable backends. A listing walks the whole map once (on the
 * loop thread: this backend has no worker) and keeps the limit + 1 smallest
 * matching keys in a bounded heap, so it costs O(entries x log limit) and
 * limit + 1 pointers. Loop thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_hmap.h"
#include "st_store_internal.h"

struct mem_entry {
    struct fc_hmap_node node;
    uint64_t highest;
    char key[];
};

static int mem_open(struct st_store *s, const struct st_store_config *cfg, char *err,
                    size_t errlen)
{
    struct fc_hmap *m = fc_hmap_new(64);

    (void)cfg;
    if (m == NULL) {
        snprintf(err, errlen, "memory store: out of memory");
        return -1;
    }
    st_store_set_impl(s, m);
    return 0;
}

/* Bytewise order with the shorter key first on a tie (memcmp, then length). */
static int key_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);

    return c != 0 ? c : alen < blen ? -1 : alen > blen;
}

static int node_cmp(const struct fc_hmap_node *a, const struct fc_hmap_node *b)
{
    return key_cmp(a->key, a->klen, b->key, b->klen);
}

/* A max-heap of the smallest matching keys seen so far (at most cap). */
struct mem_list {
    const struct st_store_req *req;
    const struct fc_hmap_node **heap;
    size_t n, cap;
};

static void heap_down(struct mem_list *ml, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const struct fc_hmap_node *t;
        if (l < ml->n && node_cmp(ml->heap[l], ml->heap[m]) > 0)
            m = l;
        if (r < ml->n && node_cmp(ml->heap[r], ml->heap[m]) > 0)
            m = r;
        if (m == i)
            return;
        t = ml->heap[i];
        ml->heap[i] = ml->heap[m];
        ml->heap[m] = t;
        i = m;
    }
}

static void list_visit(const struct fc_hmap_node *n, void *arg)
{
    struct mem_list *ml = arg;
    const struct st_store_req *r = ml->req;
    const struct st_store_list_res *l = r->list;

    if (n->klen < r->klen || memcmp(n->key, r->key, r->klen) != 0)
        return;
    if (l->alen > 0 && key_cmp(n->key, n->klen, l->after, l->alen) <= 0)
        return;
    if (ml->n < ml->cap) {
        size_t i = ml->n++;
        ml->heap[i] = n;
        while (i > 0 && node_cmp(ml->heap[(i - 1) / 2], ml->heap[i]) < 0) {
            const struct fc_hmap_node *t = ml->heap[i];
            ml->heap[i] = ml->heap[(i - 1) / 2];
            ml->heap[(i - 1) / 2] = t;
            i = (i - 1) / 2;
        }
    } else if (node_cmp(n, ml->heap[0]) < 0) {
        ml->heap[0] = n;
        heap_down(ml, 0);
    }
}

static int heap_sort_cmp(const void *a, const void *b)
{
    return node_cmp(*(const struct fc_hmap_node *const *)a, *(const struct fc_hmap_node *const *)b);
}

/* Serves a LIST at once: 0, or -1 out of memory. */
static int mem_list(struct fc_hmap *m, struct st_store_req *req)
{
    struct mem_list ml = {.req = req, .cap = req->list->limit + 1};
    size_t i;
    int rc = -1;

    ml.heap = calloc(ml.cap, sizeof *ml.heap);
    if (ml.heap == NULL)
        return -1;
    fc_hmap_each(m, 0, list_visit, &ml);
    qsort(ml.heap, ml.n, sizeof *ml.heap, heap_sort_cmp);
    for (i = 0; i < ml.n && !st_store_list_full(req); i++) {
        const struct mem_entry *e = FC_HMAP_ENTRY(ml.heap[i], struct mem_entry, node);
        if (st_store_list_add(req, e->key, ml.heap[i]->klen, e->highest, NULL) != 0)
            goto out;
    }
    if (i < ml.n && st_store_list_more(req, ml.heap[i - 1]->key, ml.heap[i - 1]->klen) != 0)
        goto out;
    rc = 0;
out:
    free(ml.heap);
    return rc;
}

static void mem_submit(struct st_store *s, struct st_store_req *req)
{
    struct fc_hmap *m = st_store_impl(s);
    struct fc_hmap_node *n;
    struct mem_entry *e;

    if (req->kind == ST_REQ_LIST) {
        req->rc = mem_list(m, req) == 0 ? 0 : ST_STORE_EUNAVAIL;
        st_store_complete(s, req);
        return;
    }
    n = fc_hmap_find(m, req->key, req->klen);
    e = n != NULL ? FC_HMAP_ENTRY(n, struct mem_entry, node) : NULL;
    req->rc = 0;
    if ((req->kind == ST_REQ_ADVANCE && (e == NULL || e->highest < req->token)) ||
        req->kind == ST_REQ_SET) {
        if (e == NULL) {
            e = calloc(1, sizeof *e + req->klen);
            if (e == NULL) {
                /* Not recorded, so not acknowledged. */
                req->rc = -1;
                st_store_complete(s, req);
                return;
            }
            memcpy(e->key, req->key, req->klen);
            fc_hmap_insert(m, &e->node, e->key, req->klen);
        }
        e->highest = req->token;
    }
    req->highest = e != NULL ? e->highest : 0;
    st_store_complete(s, req);
}

static int mem_close(struct st_store *s)
{
    struct fc_hmap *m = st_store_impl(s);
    struct fc_hmap_node *n;

    if (m == NULL)
        return 0;
    while ((n = fc_hmap_pop(m)) != NULL)
        free(FC_HMAP_ENTRY(n, struct mem_entry, node));
    fc_hmap_free(&m);
    st_store_set_impl(s, NULL);
    return 0;
}

const struct st_store_ops st_store_memory_ops = {
    .name = "memory",
    .open = mem_open,
    .submit = mem_submit,
    .close = mem_close,
};

/* st_store_memory: the "memory" token-store backend, for tests and for
 * setups that accept losing every token on restart. A hash map (fc_hmap) from
 * key bytes to the highest token; requests are answered at once, but still
 * through the completion queue so callers see the same asynchronous contract
 * as with the durable backends. Loop thread only. */
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

static void mem_submit(struct st_store *s, struct st_store_req *req)
{
    struct fc_hmap *m = st_store_impl(s);
    struct fc_hmap_node *n = fc_hmap_find(m, req->key, req->klen);
    struct mem_entry *e = n != NULL ? FC_HMAP_ENTRY(n, struct mem_entry, node) : NULL;

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

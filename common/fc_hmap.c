/* fc_hmap: see fc_hmap.h. Owns the bucket array only; entries are the
 * caller's, linked through the fc_hmap_node they embed. */
#include "fc_hmap.h"

#include <stdlib.h>
#include <string.h>

struct fc_hmap {
    struct fc_hmap_node **b;
    size_t nb; /* a power of two */
    size_t n;
    size_t scan; /* fc_hmap_pop(): buckets below this one are empty */
};

uint64_t fc_hmap_hash(const char *key, size_t klen)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < klen; i++) {
        h ^= (unsigned char)key[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

struct fc_hmap *fc_hmap_new(size_t buckets)
{
    struct fc_hmap *m = calloc(1, sizeof *m);
    size_t nb = 1;

    if (m == NULL)
        goto fail;
    while (nb < buckets && nb <= SIZE_MAX / 2 / sizeof *m->b)
        nb *= 2;
    m->nb = nb;
    m->b = calloc(nb, sizeof *m->b);
    if (m->b == NULL)
        goto fail;
    return m;
fail:
    fc_hmap_free(&m);
    return NULL;
}

void fc_hmap_free(struct fc_hmap **mp)
{
    if (mp == NULL || *mp == NULL)
        return;
    free((*mp)->b);
    free(*mp);
    *mp = NULL;
}

struct fc_hmap_node *fc_hmap_find(const struct fc_hmap *m, const char *key, size_t klen)
{
    uint64_t h = fc_hmap_hash(key, klen);

    for (struct fc_hmap_node *n = m->b[h & (m->nb - 1)]; n != NULL; n = n->next)
        if (n->hash == h && n->klen == klen && (klen == 0 || memcmp(n->key, key, klen) == 0))
            return n;
    return NULL;
}

/* Doubles the bucket array once the map holds more entries than buckets. */
static void grow(struct fc_hmap *m)
{
    size_t nb = m->nb * 2;
    struct fc_hmap_node **b;

    if (m->n <= m->nb || m->nb > SIZE_MAX / 2 / sizeof *b)
        return;
    b = calloc(nb, sizeof *b);
    if (b == NULL)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < m->nb; i++) {
        struct fc_hmap_node *n = m->b[i], *next;
        for (; n != NULL; n = next) {
            next = n->next;
            n->next = b[n->hash & (nb - 1)];
            b[n->hash & (nb - 1)] = n;
        }
    }
    free(m->b);
    m->b = b;
    m->nb = nb;
    m->scan = 0;
}

void fc_hmap_insert(struct fc_hmap *m, struct fc_hmap_node *n, const char *key, size_t klen)
{
    size_t i;

    n->hash = fc_hmap_hash(key, klen);
    n->key = key;
    n->klen = klen;
    i = n->hash & (m->nb - 1);
    n->next = m->b[i];
    m->b[i] = n;
    if (i < m->scan)
        m->scan = i;
    m->n++;
    grow(m);
}

void fc_hmap_remove(struct fc_hmap *m, struct fc_hmap_node *n)
{
    struct fc_hmap_node **pp = &m->b[n->hash & (m->nb - 1)];

    while (*pp != n)
        pp = &(*pp)->next;
    *pp = n->next;
    n->next = NULL;
    m->n--;
}

struct fc_hmap_node *fc_hmap_pop(struct fc_hmap *m)
{
    struct fc_hmap_node *n;

    if (m->n == 0)
        return NULL;
    while (m->b[m->scan] == NULL)
        m->scan++;
    n = m->b[m->scan];
    m->b[m->scan] = n->next;
    n->next = NULL;
    m->n--;
    return n;
}

size_t fc_hmap_count(const struct fc_hmap *m)
{
    return m->n;
}

size_t fc_hmap_buckets(const struct fc_hmap *m)
{
    return m->nb;
}

void fc_hmap_each(const struct fc_hmap *m, size_t limit,
                  void (*fn)(const struct fc_hmap_node *n, void *arg), void *arg)
{
    size_t calls = 0;

    for (size_t i = 0; i < m->nb; i++)
        for (const struct fc_hmap_node *n = m->b[i]; n != NULL; n = n->next) {
            if (limit != 0 && calls++ >= limit)
                return;
            fn(n, arg);
        }
}

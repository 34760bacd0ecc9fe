/* The hash map shared by the fence cache and the memory store: keys are any
 * bytes (embedded NULs, the empty key, prefixes of each other), lookups
 * survive growth, removal and draining leave the map consistent. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_hmap.h"

struct ent {
    int value;
    struct fc_hmap_node node;
    size_t klen;
    char key[];
};

static struct ent *ent_new(const char *key, size_t klen, int value)
{
    struct ent *e = calloc(1, sizeof *e + klen + 1);
    cr_assert_not_null(e);
    memcpy(e->key, key, klen);
    e->klen = klen;
    e->value = value;
    return e;
}

static struct ent *lookup(struct fc_hmap *m, const char *key, size_t klen)
{
    struct fc_hmap_node *n = fc_hmap_find(m, key, klen);
    return n != NULL ? FC_HMAP_ENTRY(n, struct ent, node) : NULL;
}

static void drain(struct fc_hmap **m)
{
    struct fc_hmap_node *n;
    while ((n = fc_hmap_pop(*m)) != NULL)
        free(FC_HMAP_ENTRY(n, struct ent, node));
    cr_expect_eq(fc_hmap_count(*m), 0);
    fc_hmap_free(m);
    cr_expect_null(*m);
}

/* Keys that differ only in ways a C-string map would miss. */
static const struct { const char *k; size_t n; } keys[] = {
    {"", 0},        {"a", 1},        {"ab", 2},      {"abc", 3},
    {"a\0b", 3},    {"a\0c", 3},     {"\0", 1},      {"\0\0", 2},
    {"/r/1", 4},    {"/r/10", 5},    {"/R/1", 4},    {"/r/1 ", 5},
};
#define NKEYS (sizeof keys / sizeof keys[0])

Test(hmap, byte_keys_are_distinct)
{
    struct fc_hmap *m = fc_hmap_new(4);
    cr_assert_not_null(m);
    for (size_t i = 0; i < NKEYS; i++) {
        cr_expect_null(lookup(m, keys[i].k, keys[i].n), "key %zu found before insert", i);
        struct ent *e = ent_new(keys[i].k, keys[i].n, (int)i);
        fc_hmap_insert(m, &e->node, e->key, e->klen);
    }
    cr_expect_eq(fc_hmap_count(m), NKEYS);
    for (size_t i = 0; i < NKEYS; i++) {
        struct ent *e = lookup(m, keys[i].k, keys[i].n);
        cr_assert_not_null(e, "key %zu not found", i);
        cr_expect_eq(e->value, (int)i, "key %zu maps to %d", i, e->value);
        cr_expect_eq(e->node.klen, keys[i].n);
        cr_expect_eq(e->node.key, e->key, "node key must point into the entry");
    }
    cr_expect_null(lookup(m, "abcd", 4));
    cr_expect_null(lookup(m, "a\0", 2));
    drain(&m);
}

Test(hmap, grows_and_keeps_every_key)
{
    enum { N = 20000 };
    struct fc_hmap *m = fc_hmap_new(1);
    char buf[32];

    cr_assert_not_null(m);
    cr_expect_eq(fc_hmap_buckets(m), 1);
    for (int i = 0; i < N; i++) {
        int len = snprintf(buf, sizeof buf, "/res/%d", i);
        struct ent *e = ent_new(buf, (size_t)len, i);
        fc_hmap_insert(m, &e->node, e->key, e->klen);
        /* Growth policy: never more entries than buckets (load factor <= 1). */
        cr_assert_leq(fc_hmap_count(m), fc_hmap_buckets(m), "at %d: %zu entries, %zu buckets",
                      i, fc_hmap_count(m), fc_hmap_buckets(m));
    }
    cr_expect_eq(fc_hmap_count(m), N);
    for (int i = 0; i < N; i++) {
        int len = snprintf(buf, sizeof buf, "/res/%d", i);
        struct ent *e = lookup(m, buf, (size_t)len);
        cr_assert_not_null(e, "%s lost after growth", buf);
        cr_expect_eq(e->value, i);
    }
    drain(&m);
}

Test(hmap, bucket_count_rounds_up_to_power_of_two)
{
    static const size_t in[] = {0, 1, 2, 3, 64, 65, 1000, 1024};
    static const size_t want[] = {1, 1, 2, 4, 64, 128, 1024, 1024};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        struct fc_hmap *m = fc_hmap_new(in[i]);
        cr_assert_not_null(m);
        cr_expect_eq(fc_hmap_buckets(m), want[i], "new(%zu): %zu buckets", in[i],
                     fc_hmap_buckets(m));
        fc_hmap_free(&m);
    }
}

Test(hmap, remove_keeps_the_others)
{
    enum { N = 500 };
    struct fc_hmap *m = fc_hmap_new(8);
    struct ent *all[N];
    char buf[32];

    cr_assert_not_null(m);
    for (int i = 0; i < N; i++) {
        int len = snprintf(buf, sizeof buf, "k%d", i);
        all[i] = ent_new(buf, (size_t)len, i);
        fc_hmap_insert(m, &all[i]->node, all[i]->key, all[i]->klen);
    }
    /* Remove every third one, heads and middles of chains alike. */
    for (int i = 0; i < N; i += 3) {
        fc_hmap_remove(m, &all[i]->node);
        free(all[i]);
        all[i] = NULL;
    }
    for (int i = 0; i < N; i++) {
        int len = snprintf(buf, sizeof buf, "k%d", i);
        struct ent *e = lookup(m, buf, (size_t)len);
        if (i % 3 == 0)
            cr_expect_null(e, "%s still found after remove", buf);
        else
            cr_expect(e != NULL && e->value == i, "%s lost by another's remove", buf);
    }
    cr_expect_eq(fc_hmap_count(m), N - (N + 2) / 3);
    /* A removed key can be inserted again. */
    all[0] = ent_new("k0", 2, 7);
    fc_hmap_insert(m, &all[0]->node, all[0]->key, all[0]->klen);
    cr_expect_eq(lookup(m, "k0", 2)->value, 7);
    drain(&m);
}

Test(hmap, pop_returns_each_node_once)
{
    enum { N = 300 };
    struct fc_hmap *m = fc_hmap_new(16);
    static int seen[N];
    char buf[32];
    struct fc_hmap_node *n;
    int popped = 0;

    cr_assert_not_null(m);
    cr_expect_null(fc_hmap_pop(m));
    for (int i = 0; i < N; i++) {
        int len = snprintf(buf, sizeof buf, "p%d", i);
        struct ent *e = ent_new(buf, (size_t)len, i);
        fc_hmap_insert(m, &e->node, e->key, e->klen);
        if (i == N / 2) {
            /* Pop part way, then insert more: pop must still find them. */
            n = fc_hmap_pop(m);
            struct ent *pe = FC_HMAP_ENTRY(n, struct ent, node);
            seen[pe->value]++;
            popped++;
            free(pe);
        }
    }
    while ((n = fc_hmap_pop(m)) != NULL) {
        struct ent *e = FC_HMAP_ENTRY(n, struct ent, node);
        seen[e->value]++;
        popped++;
        free(e);
    }
    cr_expect_eq(popped, N);
    for (int i = 0; i < N; i++)
        cr_expect_eq(seen[i], 1, "p%d popped %d times", i, seen[i]);
    cr_expect_eq(fc_hmap_count(m), 0);
    fc_hmap_free(&m);
    fc_hmap_free(&m); /* NULL is accepted */
    fc_hmap_free(NULL);
}

Test(hmap, hash_is_fnv1a)
{
    /* Published FNV-1a 64 vectors: the store's on-disk hashed keys and the
     * fence cache used this function before the map was shared. */
    cr_expect_eq(fc_hmap_hash("", 0), 0xcbf29ce484222325ULL);
    cr_expect_eq(fc_hmap_hash("a", 1), 0xaf63dc4c8601ec8cULL);
    cr_expect_eq(fc_hmap_hash("foobar", 6), 0x85944171f73967e8ULL);
}

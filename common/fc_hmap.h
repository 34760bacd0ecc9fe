/* fc_hmap: a chained hash map keyed by byte strings, shared by the proxy's
 * fence cache and the memory token store. Intrusive: the caller embeds a
 * struct fc_hmap_node in its own entry (next to the key bytes it owns) and
 * gets the entry back with FC_HMAP_ENTRY(); the map owns only its bucket
 * array, never the nodes or the keys. The table doubles when it holds more
 * entries than buckets; a failed resize keeps the old table, which is still
 * correct (longer chains). Not thread-safe: one owner thread. */
#ifndef FC_HMAP_H
#define FC_HMAP_H

#include <stddef.h>
#include <stdint.h>

struct fc_hmap;

/* Embedded in the caller's entry; the fields are the map's while the node is
 * in a map (the caller reads key/klen, never writes them). */
struct fc_hmap_node {
    struct fc_hmap_node *next;
    uint64_t hash;
    const char *key; /* borrowed from the entry: valid while inserted */
    size_t klen;
};

/* The entry of type `type` whose member `member` is node n. */
#define FC_HMAP_ENTRY(n, type, member) \
    ((type *)(void *)((char *)(n) - offsetof(type, member)))

/* The 64-bit FNV-1a hash of klen bytes of key (the map's hash). */
uint64_t fc_hmap_hash(const char *key, size_t klen);

/* Creates an empty map with about `buckets` buckets (rounded up to a power
 * of two, at least 1). Returns NULL on allocation failure. Free with
 * fc_hmap_free(). */
struct fc_hmap *fc_hmap_new(size_t buckets);

/* Frees the bucket array and the map, and NULLs *m; the nodes still in it
 * are the caller's (drain them first with fc_hmap_pop()). Accepts NULL and
 * *m == NULL. */
void fc_hmap_free(struct fc_hmap **m);

/* The node whose key equals klen bytes of key, or NULL. */
struct fc_hmap_node *fc_hmap_find(const struct fc_hmap *m, const char *key, size_t klen);

/* Inserts n under key (klen bytes, borrowed: they must stay valid and
 * unchanged while n is in the map, so point into the entry). The caller
 * makes sure no node with that key is in the map (fc_hmap_find() first). */
void fc_hmap_insert(struct fc_hmap *m, struct fc_hmap_node *n, const char *key, size_t klen);

/* Removes n, which must be in m. The node is the caller's again. */
void fc_hmap_remove(struct fc_hmap *m, struct fc_hmap_node *n);

/* Removes and returns some node, or NULL when the map is empty: the way to
 * drain a map before freeing it. */
struct fc_hmap_node *fc_hmap_pop(struct fc_hmap *m);

/* Entries in the map. */
size_t fc_hmap_count(const struct fc_hmap *m);

/* Calls fn(node, arg) for every entry, in no particular order; fn must not
 * change the map. At most limit calls (0: no limit). */
void fc_hmap_each(const struct fc_hmap *m, size_t limit,
                  void (*fn)(const struct fc_hmap_node *n, void *arg), void *arg);

/* Buckets of the table (for tests of the growth policy). */
size_t fc_hmap_buckets(const struct fc_hmap *m);

#endif

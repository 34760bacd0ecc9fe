/* st_marker: the file that remembers which token store a configuration
 * used, so that a store that disappears (directory deleted, data.mdb emptied
 * or removed) is told apart from a first start. A small text file, written
 * atomically (temp file, fsync, rename, fsync of the directory) when a store
 * is created or its generation changes, read at every open. Plain file I/O,
 * no LMDB. Only st_store_lmdb.c uses it. */
#ifndef ST_MARKER_H
#define ST_MARKER_H

#include <stddef.h>
#include <stdint.h>

struct st_marker {
    unsigned char id[16];  /* the store's identity */
    uint64_t generation;   /* the store's generation when last written */
};

/* Reads path into *m. Returns 0, 1 when the file does not exist, or -1 with
 * a message in err (unreadable or not a marker). */
int st_marker_read(const char *path, struct st_marker *m, char *err, size_t errlen);

/* Writes *m (and store_path, for the operator's eyes) to path atomically.
 * Returns 0, or -1 with a message in err. */
int st_marker_write(const char *path, const struct st_marker *m, const char *store_path,
                    char *err, size_t errlen);

/* The identity as 32 lowercase hex digits and a NUL (buf >= 33 bytes). */
void st_marker_hex(const unsigned char id[16], char *buf);

#endif

/* st_marker: see st_marker.h. The format, one "name value" per line:
 *   fence-store-marker 1
 *   id <32 hex digits>
 *   generation <decimal>
 *   path <the store directory, informational>
 * Unknown lines are ignored; id and generation are required. */
#include "st_marker.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void st_marker_hex(const unsigned char id[16], char *buf)
{
    static const char hx[] = "0123456789abcdef";

    for (int i = 0; i < 16; i++) {
        buf[2 * i] = hx[id[i] >> 4];
        buf[2 * i + 1] = hx[id[i] & 15];
    }
    buf[32] = '\0';
}

static int unhex(const char *s, unsigned char id[16])
{
    for (int i = 0; i < 32; i++) {
        char c = s[i];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0)
            return -1;
        if (i % 2 == 0)
            id[i / 2] = (unsigned char)(v << 4);
        else
            id[i / 2] |= (unsigned char)v;
    }
    return s[32] == '\0' || s[32] == '\n' ? 0 : -1;
}

int st_marker_read(const char *path, struct st_marker *m, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    int have_magic = 0, have_id = 0, have_gen = 0, rc = -1;

    if (f == NULL) {
        if (errno == ENOENT)
            return 1;
        snprintf(err, errlen, "store marker %s: %s", path, strerror(errno));
        return -1;
    }
    memset(m, 0, sizeof *m);
    while (fgets(line, sizeof line, f) != NULL) {
        char *nl = strchr(line, '\n');
        if (nl != NULL)
            *nl = '\0';
        if (strcmp(line, "fence-store-marker 1") == 0)
            have_magic = 1;
        else if (strncmp(line, "id ", 3) == 0 && unhex(line + 3, m->id) == 0)
            have_id = 1;
        else if (strncmp(line, "generation ", 11) == 0) {
            char *end;
            errno = 0;
            m->generation = strtoull(line + 11, &end, 10);
            have_gen = errno == 0 && end != line + 11 && *end == '\0';
        }
    }
    if (ferror(f)) {
        snprintf(err, errlen, "store marker %s: read error", path);
        goto out;
    }
    if (!have_magic || !have_id || !have_gen) {
        snprintf(err, errlen, "store marker %s is not a fence store marker (damaged?)", path);
        goto out;
    }
    rc = 0;
out:
    fclose(f);
    return rc;
}

int st_marker_write(const char *path, const struct st_marker *m, const char *store_path,
                    char *err, size_t errlen)
{
    char tmp[4200], hex[33], dir[4200], *slash;
    FILE *f = NULL;
    int dfd = -1, rc = -1;

    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        snprintf(err, errlen, "store marker %s: path too long", path);
        goto out;
    }
    st_marker_hex(m->id, hex);
    f = fopen(tmp, "w");
    if (f == NULL)
        goto syserr;
    fprintf(f,
            "fence-store-marker 1\n"
            "# Written by fenceproxy: the token store this configuration uses.\n"
            "# A store missing or different at its path makes the proxy refuse to\n"
            "# start (docs/operations.md, \"Token store faults\"). Do not edit.\n"
            "id %s\ngeneration %" PRIu64 "\npath %s\n",
            hex, m->generation, store_path != NULL ? store_path : "");
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        goto syserr;
    if (fclose(f) != 0) {
        f = NULL;
        goto syserr;
    }
    f = NULL;
    if (rename(tmp, path) != 0)
        goto syserr;
    snprintf(dir, sizeof dir, "%s", path);
    slash = strrchr(dir, '/');
    if (slash == NULL)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0)
        goto syserr;
    rc = 0;
    goto out;
syserr:
    snprintf(err, errlen, "store marker %s: %s", path, strerror(errno));
    if (f != NULL)
        (void)unlink(tmp);
out:
    if (f != NULL)
        fclose(f);
    if (dfd >= 0)
        close(dfd);
    return rc;
}

/* px_storecli: see px_storecli.h. Loads the config like the proxy does and
 * hands the [store] section to st_store_open() (mode INIT) or
 * st_store_check(); owns nothing beyond the call. */
#include "px_storecli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px_config.h"
#include "st_store.h"

static void usage(void)
{
    fprintf(stderr, "usage: fenceproxy store init -c FILE [--floor N]\n"
                    "       fenceproxy store check -c FILE\n");
}

static void print_note(void *arg, int level, const char *msg)
{
    (void)arg;
    printf("%s%s\n", level == 0 ? "error: " : level == 1 ? "warning: " : "", msg);
}

static int parse_floor(const char *s, unsigned long long *out)
{
    char *end;

    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    *out = strtoull(s, &end, 10);
    return errno == 0 && *end == '\0' ? 0 : -1;
}

int px_storecli_main(int argc, char **argv)
{
    const char *conf = NULL, *cmd = argc >= 2 ? argv[1] : "";
    unsigned long long floor = 0;
    struct px_config *cfg = NULL;
    struct st_store_config scfg;
    struct st_store *s = NULL;
    char err[4096] = "";
    int rc = 2;

    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            conf = argv[++i];
        } else if (strcmp(argv[i], "--floor") == 0 && i + 1 < argc &&
                   strcmp(cmd, "init") == 0) {
            if (parse_floor(argv[++i], &floor) != 0) {
                fprintf(stderr, "store init: --floor needs a number\n");
                goto out;
            }
        } else {
            usage();
            goto out;
        }
    }
    if (conf == NULL || (strcmp(cmd, "init") != 0 && strcmp(cmd, "check") != 0)) {
        usage();
        goto out;
    }
    cfg = px_config_load(conf, err, sizeof err);
    if (cfg == NULL) {
        fprintf(stderr, "%s\n", err);
        goto out;
    }
    if (cfg->store_backend != ST_STORE_FILE) {
        fprintf(stderr, "%s: [store] backend is not file: there is no store to %s\n", conf,
                cmd);
        goto out;
    }
    memset(&scfg, 0, sizeof scfg);
    scfg.backend = ST_STORE_FILE;
    scfg.path = cfg->store_path;
    scfg.max_size = (size_t)cfg->store_max_size;
    scfg.marker = cfg->store_marker;
    scfg.log = print_note;
    if (strcmp(cmd, "check") == 0) {
        int c = st_store_check(&scfg, stdout);
        rc = c == 0 ? 0 : 1;
        goto out;
    }
    scfg.mode = ST_OPEN_INIT;
    scfg.floor = floor;
    s = st_store_open(&scfg, err, sizeof err);
    if (s == NULL) {
        fprintf(stderr, "%s\n", err);
        rc = 1;
        goto out;
    }
    printf("marker: %s\n", cfg->store_marker);
    rc = 0;
out:
    st_store_close(&s);
    px_config_free(&cfg);
    return rc;
}

/* fenceproxy: command line. `fenceproxy -c FILE` runs the proxy,
 * `fenceproxy -t -c FILE` checks a config, `fenceproxy audit ...` works on
 * audit logs, `fenceproxy store ...` creates and checks the token store, `fenceproxy tokens ...`
 * reads and sets highest tokens through the admin API. Everything else lives in the px_* modules. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "px_auditcli.h"
#include "px_config.h"
#include "px_log.h"
#include "px_server.h"
#include "px_storecli.h"
#include "px_tokencli.h"

#define FENCEPROXY_VERSION "0.1.0"

static void usage(FILE *f)
{
    fprintf(f, "usage: fenceproxy -c FILE        run the proxy\n"
               "       fenceproxy -t -c FILE     check the configuration and exit\n"
               "       fenceproxy audit verify FILE...\n"
               "       fenceproxy audit tail [-n N] [--resource R] FILE\n"
               "       fenceproxy store init -c FILE [--floor N]\n"
               "       fenceproxy store check -c FILE\n"
               "       fenceproxy tokens -c FILE list [PREFIX] [--limit N] | get RESOURCE |\n"
               "                         set RESOURCE TOKEN --reason TEXT\n"
               "       fenceproxy -v             print the version\n");
}

int main(int argc, char **argv)
{
    const char *conf = NULL;
    int test_only = 0, opt, rc = 1;
    char err[4096] = ""; /* a refused store explains the recovery steps */
    struct px_config *cfg = NULL;
    struct px_ctx *ctx = NULL;
    enum px_log_level level;

    if (argc >= 2 && strcmp(argv[1], "audit") == 0)
        return px_auditcli_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "store") == 0)
        return px_storecli_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "tokens") == 0)
        return px_tokencli_main(argc - 1, argv + 1);
    while ((opt = getopt(argc, argv, "c:thv")) != -1) {
        switch (opt) {
        case 'c':
            conf = optarg;
            break;
        case 't':
            test_only = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'v':
            printf("fenceproxy %s\n", FENCEPROXY_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (conf == NULL || optind != argc) {
        usage(stderr);
        return 2;
    }
    cfg = px_config_load(conf, err, sizeof(err));
    if (cfg == NULL) {
        fprintf(stderr, "%s\n", err);
        goto out;
    }
    if (test_only) {
        if (cfg->warnings != NULL)
            fputs(cfg->warnings, stderr);
        if (px_config_resolve(cfg, conf, err, sizeof(err)) != 0 ||
            px_server_fit_fds(cfg, 1, err, sizeof(err)) != 0) {
            fprintf(stderr, "%s\n", err);
            goto out;
        }
        if (err[0] != '\0')
            fprintf(stderr, "%s: warning: %s\n", conf, err);
        printf("%s: configuration ok\n", conf);
        rc = 0;
        goto out;
    }
    if (px_log_level_parse(cfg->log_level, &level) == 0)
        px_log_init(level);
    for (const char *w = cfg->warnings; w != NULL && *w != '\0'; w += strcspn(w, "\n") + 1)
        px_log_warn("%.*s", (int)strcspn(w, "\n"), w);
    if (px_server_fit_fds(cfg, 0, err, sizeof(err)) != 0) {
        px_log_error("%s", err);
        goto out;
    }
    if (err[0] != '\0')
        px_log_warn("%s", err);
    signal(SIGPIPE, SIG_IGN);
    ctx = px_server_new(cfg, conf, err, sizeof(err));
    if (ctx == NULL) {
        px_log_error("%s", err);
        goto out;
    }
    rc = px_server_run(ctx) == 0 ? 0 : 1;
out:
    px_server_free(ctx);
    px_config_free(&cfg);
    return rc;
}

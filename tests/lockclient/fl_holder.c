/* fl_holder: a lock holder in a process of its own, for the tests that pause
 * a holder (SIGSTOP) past its TTL and then let it send its late write.
 *
 *   fl_holder URL KIND NAME PROXY_PORT
 *
 * KIND is leader, read, write or permit (2 permits). Takes the hold with a
 * TTL of 1 s, never renewed, and writes "TOKEN SLOT\n" to stdout (token 0:
 * no hold, then exit 3). Then, for each path read from stdin (one per
 * read), PUTs "ok" to 127.0.0.1:PROXY_PORT with its token and writes the
 * status ("-1": no answer). Exits 0 at end of input.
 *
 * The test starts it with fork and exec: a child of the multithreaded test
 * process that used libfencelock without exec could block for good on a lock
 * another thread (a ZooKeeper client's, the allocator's) held at the fork. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fencelock.h"
#include "ts_proxy.h"

int main(int argc, char **argv)
{
    struct fl_client *c = NULL;
    struct fl_lease *l = NULL;
    unsigned slot = 0;
    char path[256], err[256] = "";
    int rc = FL_ERR_INTERNAL, port, code = 3;
    ssize_t n;

    if (argc != 5) {
        fprintf(stderr, "usage: fl_holder URL leader|read|write|permit NAME PROXY_PORT\n");
        return 2;
    }
    port = atoi(argv[4]);
    c = fl_client_new(argv[1], err, sizeof err);
    if (c == NULL)
        fprintf(stderr, "fl_holder: %s\n", err);
    else if (strcmp(argv[2], "leader") == 0)
        rc = fl_campaign(c, argv[3], "a", 1000, 5000, &l);
    else if (strcmp(argv[2], "read") == 0)
        rc = fl_acquire_shared(c, argv[3], 1000, 5000, &l);
    else if (strcmp(argv[2], "write") == 0)
        rc = fl_acquire(c, argv[3], 1000, 5000, &l);
    else if (strcmp(argv[2], "permit") == 0)
        rc = fl_acquire_permit(c, argv[3], 2, 1000, 5000, &l, &slot);
    if (c != NULL && rc != FL_OK)
        fprintf(stderr, "fl_holder: no hold of %s: %s\n", argv[3], fl_client_error(c));
    printf("%" PRIu64 " %u\n", rc == FL_OK ? l->token : 0, slot);
    fflush(stdout);
    if (rc != FL_OK)
        goto out;
    while ((n = read(STDIN_FILENO, path, sizeof path - 1)) > 0) {
        path[n] = '\0';
        printf("%d\n", ts_http_put_token(port, path, l->token, "ok", 5000));
        fflush(stdout);
    }
    code = 0;
out:
    fl_lease_free(&l);
    fl_client_free(&c);
    return code;
}

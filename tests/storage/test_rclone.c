/* rclone (Debian) copies a small tree to Apache mod_dav through a fenced
 * WebDAV route with `--header "Fencing-Token: N"` (not --header-upload: its
 * cleanup DELETE and MKCOLs need the token too), then `rclone check` finds
 * source and copy the same. Without the header the same copy is refused. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sf_fixture.h"

static struct sf S;
static int passed;

static void setup(void)
{
    cr_assert_eq(sf_init(&S, "rclone"), 0);
    cr_assert_eq(sf_redis_start(&S), 0);
    cr_assert_eq(sf_apache_start(&S), 0);
    cr_assert_eq(sf_proxy_start(&S, S.apache_port,
                                "[route tdav]\nprefix = /tdav/\nresource = segments:2\n"),
                 0);
}

static void teardown(void)
{
    sf_stop(&S, !passed);
}

/* One timeout for the suite (a per-test one leaks in Criterion's runner). */
TestSuite(rclone, .init = setup, .fini = teardown, .timeout = 60);

Test(rclone, copy_and_check_a_tree_through_a_fenced_route)
{
    const char *rclone = sf_need("/usr/bin/rclone", "rclone");
    char src[1100], p[1200], script[4096], url[64], *out = NULL;
    int rc, ok = 1;

    cr_assert_not_null(rclone);
    sf_path(&S, "tree", src, sizeof src);
    mkdir(src, 0755);
    snprintf(p, sizeof p, "%s/sub", src);
    mkdir(p, 0755);
    for (int i = 0; i < 6; i++) {
        snprintf(p, sizeof p, "%s/%sf%d", src, i % 2 ? "sub/" : "", i);
        cr_assert_eq(sf_write_file(p, (size_t)(1000 + i * 70000), (unsigned)i), 0);
    }
    snprintf(url, sizeof url, "http://127.0.0.1:%d", S.px.port);
    /* rclone, a Go program, skips HTTP_PROXY for loopback targets: it adds
     * the token itself. */
    snprintf(script, sizeof script,
             "set -e; R='%s --config /dev/null --retries 1 --low-level-retries 1 "
             "--webdav-url %s --webdav-vendor other'; "
             "$R copy %s :webdav:/tdav/job1 --header \"Fencing-Token: $FENCE_TOKEN\"; "
             "$R check %s :webdav:/tdav/job1 --header \"Fencing-Token: $FENCE_TOKEN\"; echo all-ok",
             rclone, url, src, src);
    {
        char *argv[] = {(char *)S.fencelock, "--backend", S.backend, "run", "/tdav/job1", "--",
                        "/bin/sh", "-c", script, NULL};

        rc = sf_run(&S, "rclone", argv, NULL, 40000, &out);
    }
    cr_expect(rc == 0 && out && strstr(out, "all-ok"), "rclone copy/check failed (%d):\n%s", rc,
              out ? out : "");
    ok &= rc == 0 && out && strstr(out, "all-ok") != NULL;
    free(out);
    {
        const char *const n[] = {"\"PUT /tdav/job1/sub/f5 ", "201", NULL};

        cr_expect_eq(sf_count_lines(S.px.access, n), 1, "sub/f5 not written through the proxy");
        ok &= sf_count_lines(S.px.access, n) == 1;
    }
    /* The route is fenced: the same copy without the header is refused. */
    snprintf(script, sizeof script,
             "%s --config /dev/null --retries 1 --low-level-retries 1 --webdav-url %s "
             "--webdav-vendor other copy %s :webdav:/tdav/job2",
             rclone, url, src);
    {
        char *argv[] = {"/bin/sh", "-c", script, NULL};

        rc = sf_run(&S, "rclone-no-token", argv, NULL, 40000, &out);
    }
    cr_expect(rc != 0, "a copy without a token succeeded:\n%s", out ? out : "");
    ok &= rc != 0;
    free(out);
    {
        const char *const n[] = {"/tdav/job2/", " 428 ", NULL};

        cr_expect_geq(sf_count_lines(S.px.access, n), 1, "no 428 for the tokenless copy");
        ok &= sf_count_lines(S.px.access, n) >= 1;
    }
    passed = ok;
}

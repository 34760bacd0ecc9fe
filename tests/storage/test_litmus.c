/* litmus (the WebDAV conformance suite) against Apache mod_dav, directly and
 * through fenceproxy: on a path under no route, on a fenced route with
 * missing_token = allow, and on a fenced route that requires a token, with
 * litmus (which cannot add one) run under `fencelock run --http-proxy`. Every
 * test's result (pass, FAIL, SKIPPED, warnings) must be the same as directly. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sf_fixture.h"

static struct sf S;
static int passed;

static void setup(void)
{
    cr_assert_eq(sf_init(&S, "litmus"), 0);
    cr_assert_eq(sf_redis_start(&S), 0);
    cr_assert_eq(sf_apache_start(&S), 0);
    cr_assert_eq(sf_proxy_start(&S, S.apache_port,
                                "[route fdav]\nprefix = /fdav/\nresource = segments:1\n"
                                "missing_token = allow\n"
                                "[route tdav]\nprefix = /tdav/\nresource = segments:1\n"),
                 0);
}

static void teardown(void)
{
    sf_stop(&S, !passed);
}

/* One timeout for the suite (a per-test one leaks in Criterion's runner). */
TestSuite(litmus, .init = setup, .fini = teardown, .timeout = 120);

/* Reduces litmus's output to one line per test, "suite/name result", in
 * order, into out (malloc'd). Progress output repeats the test's name on the
 * same line, and a warning puts the result on a later line, so: the suite
 * comes from "-> running `S'", the name from the last "N. name" seen, the
 * result from the first of pass/FAIL/SKIPPED after it (with the rest of that
 * line, e.g. "(with 1 warning)"). Returns the number of tests. */
static int litmus_results(const char *txt, char **out)
{
    size_t cap = strlen(txt) + 1, n = 0;
    char *o = calloc(1, cap), suite[64] = "?", name[128] = "";
    int tests = 0;
    const char *p = txt;

    cr_assert_not_null(o);
    while (*p) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        char line[2048];
        const char *q, *res = NULL;

        snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line - 1 ? len : sizeof line - 1),
                 p);
        if ((q = strstr(line, "-> running `")) != NULL)
            sscanf(q + 12, "%63[^']", suite);
        for (q = line; *q; q++) {
            int num, used = 0;
            char nm[128];

            if ((q == line || q[-1] == ' ') && sscanf(q, "%d. %127[a-z0-9_]%n", &num, nm, &used) == 2 &&
                used > 0)
                snprintf(name, sizeof name, "%s", nm);
        }
        if (name[0] && ((res = strstr(line, ". pass")) || (res = strstr(line, ". FAIL")) ||
                        (res = strstr(line, ". SKIPPED")) || (res = strstr(line, " pass (")))) {
            res += 2;
            while (*res == ' ' || *res == '.')
                res++;
            n += (size_t)snprintf(o + n, cap - n, "%s/%s %s\n", suite, name, res);
            name[0] = '\0';
            tests++;
        }
        p += len + (eol != NULL);
    }
    *out = o;
    return tests;
}

/* Runs litmus at url (through proxy when not NULL) and returns its results. */
static char *run_litmus(const char *tag, const char *url, int under_fencelock, int *tests)
{
    const char *litmus = sf_need("/usr/bin/litmus", "litmus");
    char *out = NULL, *res = NULL, script[1024];
    int rc;

    cr_assert_not_null(litmus);
    /* litmus writes debug.log and child.log into its working directory. */
    if (under_fencelock) {
        /* The injector's address is only known inside the run. */
        snprintf(script, sizeof script, "cd %s && exec %s --proxy=\"$http_proxy\" %s", S.dir,
                 litmus, url);
        char *argv[] = {(char *)S.fencelock, "--backend", S.backend, "run", "/tdav", "--ttl", "30s",
                        "--http-proxy", "--", "/bin/sh", "-c", script, NULL};
        rc = sf_run(&S, tag, argv, NULL, 60000, &out);
    } else {
        snprintf(script, sizeof script, "cd %s && exec %s %s", S.dir, litmus, url);
        char *argv[] = {"/bin/sh", "-c", script, NULL};
        rc = sf_run(&S, tag, argv, NULL, 60000, &out);
    }
    cr_assert_not_null(out, "%s: no output", tag);
    /* litmus exits 1 when a test fails; that is for the comparison to judge. */
    cr_assert(rc == 0 || rc == 1, "%s: litmus exit %d:\n%s", tag, rc, out);
    *tests = litmus_results(out, &res);
    free(out);
    return res;
}

Test(litmus, same_results_direct_and_through_the_proxy)
{
    char url[256], *direct, *via;
    int n_direct, n, ok = 1;
    struct {
        const char *tag, *path;
        int fencelock;
    } runs[] = {
        {"unrouted", "/dav/", 0},
        {"fenced-allow", "/fdav/", 0},
        {"fenced-token", "/tdav/", 1},
    };

    snprintf(url, sizeof url, "http://127.0.0.1:%d/dav/", S.apache_port);
    direct = run_litmus("direct", url, 0, &n_direct);
    /* All five suites ran (basic copymove props locks http: 104 tests with
     * litmus 0.13), so a comparison of two empty lists proves nothing. */
    cr_assert_geq(n_direct, 100, "litmus ran only %d tests:\n%s", n_direct, direct);
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        snprintf(url, sizeof url, "http://127.0.0.1:%d%s", S.px.port, runs[i].path);
        via = run_litmus(runs[i].tag, url, runs[i].fencelock, &n);
        ok &= strcmp(via, direct) == 0;
        cr_expect_str_eq(via, direct, "%s: results differ from Apache's own.\n--- direct:\n%s"
                                      "--- through fenceproxy:\n%s",
                         runs[i].tag, direct, via);
        free(via);
    }
    free(direct);
    {
        /* The token run went through the fenced route with a token: the
         * route's highest for /tdav is the lease's token, and a write
         * without one is refused there. */
        char raw[256];
        int st;

        snprintf(raw, sizeof raw, "PUT /tdav/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                  "Content-Length: 1\r\nConnection: close\r\n\r\nx");
        st = ts_http_raw(S.px.port, raw, strlen(raw), NULL, 5000);
        cr_expect_eq(st, 428, "a tokenless PUT on the fenced route got %d", st);
        ok &= st == 428;
    }
    passed = ok;
}

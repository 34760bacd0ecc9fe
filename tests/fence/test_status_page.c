/* The admin listener's status page, through the real fenceproxy: the
 * server-rendered page (readable without JavaScript) and status.json show
 * the resources, their tokens and the rejection the test caused; then a
 * real browser (headless Chromium) loads the page, runs its script, and the
 * rendered DOM shows the same, refreshed from status.json; a screenshot at a
 * phone's width is taken. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ts_proc.h"
#include "ts_proxy.h"
#include "ts_upstream.h"

static struct ts_upstream *up;
static struct ts_proxy px;

static void setup(void)
{
    up = ts_upstream_start();
    cr_assert_not_null(up);
    cr_assert_eq(ts_proxy_init(&px, "status"), 0);
    cr_assert_eq(ts_proxy_write_conf(&px, ts_upstream_port(up),
                                     "[route objects]\nprefix = /objects/\nresource = segments:2\n"),
                 0);
    cr_assert_eq(ts_proxy_start(&px), 0, "fenceproxy did not start");
}

static void teardown(void)
{
    ts_proxy_cleanup(&px, 1);
    ts_upstream_stop(&up);
}

TestSuite(status_page, .init = setup, .fini = teardown, .timeout = 120);

static int put(const char *path, int token)
{
    char raw[256], tok[48] = "";
    struct ts_resp r;
    int n, st;

    if (token > 0)
        snprintf(tok, sizeof(tok), "Fencing-Token: %d\r\n", token);
    n = snprintf(raw, sizeof(raw), "PUT %s HTTP/1.1\r\nHost: t\r\n%sContent-Length: 1\r\n\r\nx",
                 path, tok);
    st = ts_http_raw(px.port, raw, (size_t)n, &r, 5000);
    ts_resp_free(&r);
    return st;
}

static void traffic(void)
{
    cr_assert_eq(put("/objects/user42/a.txt", 7), 200);
    cr_assert_eq(put("/objects/user42/a.txt", 6), 409);
    cr_assert_eq(put("/objects/team<b>/x", 3), 200); /* a name the page must escape */
    ts_sleep_ms(200);
}

Test(status_page, the_page_and_its_data_without_javascript)
{
    struct ts_resp r;

    traffic();
    cr_assert_eq(ts_http_get(px.admin_port, "/status.json", &r), 200);
    cr_assert_not_null(strstr(r.body, "{\"resource\":\"/objects/user42\",\"highest\":7,"), "%s",
                       r.body);
    cr_assert_not_null(strstr(r.body, "\"event\":\"stale_token\""), "%s", r.body);
    cr_assert_not_null(strstr(r.body, "\"token\":\"6\",\"highest\":7"), "%s", r.body);
    ts_resp_free(&r);
    cr_assert_eq(ts_http_get(px.admin_port, "/", &r), 200);
    cr_assert_not_null(strstr(r.body, "<td class=k>/objects/user42</td><td>7</td>"), "%s", r.body);
    cr_assert_not_null(strstr(r.body, "<td class=bad>stale_token</td>"), "%s", r.body);
    cr_assert_not_null(strstr(r.body, "/objects/team&lt;b&gt;"), "not escaped: %s", r.body);
    cr_assert_null(strstr(r.body, "team<b>"), "an unescaped name in the page");
    cr_assert_null(strstr(r.body, "src=\"http"), "the page loads an external asset");
    ts_resp_free(&r);
}

Test(status_page, rendered_by_a_real_browser)
{
    const char *chromium = "/usr/bin/chromium";
    char cmd[4096], url[128], shot[1100], dom[1100], prof[1100];
    struct stat stt;
    char *out;
    int rc;

    cr_assert(access(chromium, X_OK) == 0,
              "%s is missing: scripts/deps.sh installs Debian's chromium", chromium);
    traffic();
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", px.admin_port);
    snprintf(shot, sizeof(shot), "%s/status.png", px.dir);
    snprintf(dom, sizeof(dom), "%s/dom.html", px.dir);
    snprintf(prof, sizeof(prof), "%s/chromium-profile", px.dir);
    /* The flags the machine's notes give for a closed network: no
     * background connections, a fresh profile. */
    snprintf(cmd, sizeof(cmd),
             "%s --headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
             "--disable-background-networking --disable-component-update --disable-sync "
             "--user-data-dir=%s --virtual-time-budget=5000 --dump-dom %s > %s 2>/dev/null",
             chromium, prof, url, dom);
    rc = system(cmd);
    cr_assert_eq(rc, 0, "chromium --dump-dom failed (%d)", rc);
    out = ts_read_file(dom, NULL);
    cr_assert_not_null(out, "no DOM");
    /* The script ran (it replaces the footer) and rebuilt the tables from
     * status.json: the resource, its token, the rejection. */
    cr_assert_not_null(strstr(out, "updated "), "the page's script did not run:\n%s", out);
    cr_assert_not_null(strstr(out, "<td class=\"k\">/objects/user42</td><td>7</td>"),
                       "the resource is not in the rendered DOM:\n%s", out);
    cr_assert_not_null(strstr(out, "<td class=\"bad\">stale_token</td>"),
                       "the rejection is not in the rendered DOM:\n%s", out);
    cr_assert_not_null(strstr(out, "/objects/team&lt;b&gt;"), "a name rendered as markup");
    free(out);
    snprintf(cmd, sizeof(cmd),
             "%s --headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
             "--disable-background-networking --disable-component-update --disable-sync "
             "--user-data-dir=%s --hide-scrollbars --window-size=412,915 "
             "--virtual-time-budget=5000 --screenshot=%s %s > /dev/null 2>&1",
             chromium, prof, shot, url);
    rc = system(cmd);
    cr_assert_eq(rc, 0, "chromium --screenshot failed (%d)", rc);
    cr_assert_eq(stat(shot, &stt), 0, "no screenshot");
    cr_assert_gt(stt.st_size, 10000, "the screenshot is %lld bytes: blank?", (long long)stt.st_size);
    if (getenv("FENCE_STATUS_SHOT") != NULL) { /* to refresh the one in docs/ */
        snprintf(cmd, sizeof(cmd), "cp %s %s", shot, getenv("FENCE_STATUS_SHOT"));
        cr_assert_eq(system(cmd), 0);
    }
}

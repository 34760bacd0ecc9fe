/* Configuration reload under load, through the real fenceproxy: a client
 * loop runs through a reload that changes a route and the upstream, a
 * broken config, and a change of a key that needs a restart. No request
 * fails or goes to the wrong store, the broken config changes nothing, and
 * the counters show what happened. */
#include <criterion/criterion.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ts_proc.h"
#include "ts_proxy.h"
#include "ts_upstream.h"

static struct ts_upstream *up_a, *up_b;
static struct ts_proxy px;

static const char *routes1 = "[route objects]\nprefix = /objects/\nresource = segments:2\n";
static const char *routes2 = "[route objects]\nprefix = /objects/\nresource = segments:2\n"
                             "[route other]\nprefix = /other/\n";

static void setup(void)
{
    up_a = ts_upstream_start();
    up_b = ts_upstream_start();
    cr_assert(up_a != NULL && up_b != NULL, "recording upstreams did not start");
    cr_assert_eq(ts_upstream_set_response(up_b, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nB"), 0);
    cr_assert_eq(ts_upstream_set_response(up_a, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA"), 0);
    cr_assert_eq(ts_proxy_init(&px, "reload"), 0);
    cr_assert_eq(ts_proxy_write_conf(&px, ts_upstream_port(up_a), routes1), 0);
    cr_assert_eq(ts_proxy_start(&px), 0, "fenceproxy did not start");
}

static void teardown(void)
{
    ts_proxy_cleanup(&px, 1);
    ts_upstream_stop(&up_a);
    ts_upstream_stop(&up_b);
}

TestSuite(reload, .init = setup, .fini = teardown, .timeout = 90);

static atomic_int stop, failures, total, seen_b, wrong;
static atomic_int phase; /* 0: only A may answer; 1: B, once the reload is in; 2: only B */

/* Requests in a loop, each on a keep-alive connection that is kept across
 * the reloads (and a new one when the proxy closes it). */
static void *client_loop(void *arg)
{
    char body[8];
    int fd = -1;

    while (!atomic_load(&stop)) {
        const char get[] = "GET /x HTTP/1.1\r\nHost: t\r\n\r\n";
        struct ts_resp r;
        if (fd < 0)
            fd = ts_connect(px.port);
        if (fd < 0 || ts_send_all(fd, get, sizeof(get) - 1) != 0 || ts_http_read(fd, &r, 5000, 0) != 0) {
            atomic_fetch_add(&failures, 1);
            if (fd >= 0)
                close(fd);
            fd = -1;
            continue;
        }
        atomic_fetch_add(&total, 1);
        snprintf(body, sizeof(body), "%s", r.body != NULL ? r.body : "");
        if (r.status != 200)
            atomic_fetch_add(&failures, 1);
        else if (strcmp(body, "B") == 0)
            atomic_fetch_add(&seen_b, 1);
        if ((strcmp(body, "B") == 0 && atomic_load(&phase) == 0) ||
            (strcmp(body, "A") == 0 && atomic_load(&phase) == 2))
            atomic_fetch_add(&wrong, 1);
        if (r.closed) {
            close(fd);
            fd = -1;
        }
        ts_resp_free(&r);
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static int metric(const char *name)
{
    struct ts_resp r;
    char want[128];
    const char *p;
    int v = -1;

    snprintf(want, sizeof(want), "\n%s ", name);
    if (ts_http_get(px.admin_port, "/metrics", &r) == 200 && (p = strstr(r.body, want)) != NULL)
        v = atoi(p + strlen(want));
    ts_resp_free(&r);
    return v;
}

static int put_status(const char *path)
{
    char raw[256];
    struct ts_resp r;
    int n = snprintf(raw, sizeof(raw), "PUT %s HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx", path);
    int st = ts_http_raw(px.port, raw, (size_t)n, &r, 5000);

    ts_resp_free(&r);
    return st;
}

static void hup_and_wait(int gen_or_failures, const char *metric_name)
{
    cr_assert_eq(kill(px.proc.pid, SIGHUP), 0);
    for (int i = 0; i < 100 && metric(metric_name) < gen_or_failures; i++)
        ts_sleep_ms(50);
    cr_assert_geq(metric(metric_name), gen_or_failures, "%s did not reach %d", metric_name,
                  gen_or_failures);
}

Test(reload, routes_and_upstream_change_under_load_and_bad_configs_change_nothing)
{
    pthread_t th[3];
    char *log;
    int before;

    cr_assert_eq(put_status("/other/x"), 200, "/other/ is unrouted before the reload");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, client_loop, NULL), 0);
    ts_sleep_ms(500);
    /* 1: a new route and another upstream */
    cr_assert_eq(ts_proxy_write_conf(&px, ts_upstream_port(up_b), routes2), 0);
    atomic_store(&phase, 1);
    hup_and_wait(2, "fence_config_generation");
    ts_sleep_ms(300); /* requests that started before the reload finish on A */
    atomic_store(&phase, 2);
    before = atomic_load(&seen_b);
    ts_sleep_ms(500);
    cr_assert_gt(atomic_load(&seen_b), before, "nothing reached the new upstream");
    cr_assert_eq(put_status("/other/x"), 428, "the new route is not in effect");
    /* 2: a broken file */
    {
        FILE *f = fopen(px.conf, "a");
        cr_assert(f != NULL);
        fprintf(f, "[proxy\nthis is not a key\n");
        fclose(f);
    }
    hup_and_wait(1, "fence_config_reload_failures_total");
    /* 3: a key that needs a restart */
    cr_assert_eq(ts_proxy_write_conf(&px, ts_upstream_port(up_b), routes2), 0);
    {
        FILE *f = fopen(px.conf, "a");
        cr_assert(f != NULL);
        fprintf(f, "[store]\n"); /* a second [store] would be a syntax error: edit the path */
        fclose(f);
    }
    cr_assert_eq(ts_proxy_write_conf(&px, ts_upstream_port(up_b), routes2), 0);
    {
        /* the same file with the store path changed */
        size_t len;
        char *conf = ts_read_file(px.conf, &len);
        char *p = strstr(conf, "path = ");
        FILE *f;
        cr_assert(p != NULL);
        f = fopen(px.conf, "w");
        fprintf(f, "%.*spath = /elsewhere-%d\n%s", (int)(p - conf), conf, (int)getpid(),
                strchr(p, '\n') + 1);
        fclose(f);
        free(conf);
    }
    hup_and_wait(2, "fence_config_reload_failures_total");
    ts_sleep_ms(500);
    atomic_store(&stop, 1);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    cr_log_info("%d requests through three reloads, %d to the new upstream", atomic_load(&total),
                atomic_load(&seen_b));
    cr_assert_gt(atomic_load(&total), 50, "the client loop hardly ran");
    cr_assert_eq(atomic_load(&failures), 0, "%d requests failed", atomic_load(&failures));
    cr_assert_eq(atomic_load(&wrong), 0, "%d requests went to the wrong upstream",
                 atomic_load(&wrong));
    cr_assert_eq(metric("fence_config_generation"), 2, "a refused reload changed the generation");
    cr_assert_eq(metric("fence_config_reloads_total"), 1);
    cr_assert_eq(metric("fence_config_reload_failures_total"), 2);
    cr_assert_eq(put_status("/other/x"), 428, "a refused reload undid the route");
    log = ts_read_file(px.proc.log, NULL);
    cr_assert_not_null(strstr(log, "[store] path cannot change on a reload"), "%s", log);
    cr_assert_not_null(strstr(log, px.conf), "the refusal does not name the file");
    free(log);
}

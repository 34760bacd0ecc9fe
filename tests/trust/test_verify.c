/* Trust (issue 16) through the real fenceproxy binary: tokens verified with
 * a real lock backend (redis-server, etcd), the operator's reset through
 * `fenceproxy tokens`, and the authenticated admin API. Locks are taken with
 * libfencelock, as a client of the proxy would. */
#include <criterion/criterion.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fencelock.h"
#include "ts_etcd.h"
#include "ts_proc.h"
#include "ts_proxy.h"
#include "ts_upstream.h"

#define SECRET "s3cret-for-tests-0123456789"
#define FORGED "999999999999999999"

static struct ts_upstream *up;
static struct ts_proxy px;
static struct ts_proc redis;
static struct ts_etcd etcd;
static int use_etcd;
static char lock_url[300];
static char *bdir;

/* Writes the admin secret into the fixture's dir (mode 0600); its path into
 * out. */
static void write_secret(char *out, size_t cap)
{
    FILE *f;

    snprintf(out, cap, "%s/admin.secret", px.dir);
    f = fopen(out, "w");
    cr_assert_not_null(f);
    fputs(SECRET "\n", f);
    fclose(f);
    cr_assert_eq(chmod(out, 0600), 0);
}

/* The proxy in front of the recording upstream with three routes: /objects/
 * verified, /live/ verified with require_live_lease, /plain/ not verified. */
static void start_proxy(void)
{
    char extra[4096], tokfile[1100];

    cr_assert_eq(ts_proxy_init(&px, "verify"), 0);
    write_secret(tokfile, sizeof tokfile);
    snprintf(extra, sizeof extra,
             "admin_token_file = %s\n"
             "[route objects]\nprefix = /objects/\nresource = segments:2\nverify = %s\n"
             "[route live]\nprefix = /live/\nresource = segments:2\nverify = %s\n"
             "require_live_lease = on\n"
             "[route named]\nprefix = /named/\nresource = segments:2\nverify = %s\n"
             "lock_name = locks{resource}\n"
             "[route plain]\nprefix = /plain/\nresource = segments:2\n",
             tokfile, lock_url, lock_url, lock_url);
    cr_assert_eq(ts_proxy_write_conf(&px, ts_upstream_port(up), extra), 0);
    cr_assert_eq(ts_proxy_start(&px), 0);
}

static void setup_redis(void)
{
    int port = ts_free_port();

    use_etcd = 0;
    bdir = ts_tempdir("verify-redis");
    cr_assert_not_null(bdir);
    cr_assert_eq(ts_redis_start(&redis, bdir, port), 0, "redis-server must be installed");
    snprintf(lock_url, sizeof lock_url, "redis://127.0.0.1:%d", port);
    up = ts_upstream_start();
    cr_assert_not_null(up);
    start_proxy();
}

static void setup_etcd(void)
{
    use_etcd = 1;
    bdir = ts_tempdir("verify-etcd");
    cr_assert_not_null(bdir);
    cr_assert_eq(ts_etcd_start(&etcd, bdir, 1), 0, "etcd (etcd-server) must be installed");
    snprintf(lock_url, sizeof lock_url, "%s", etcd.url);
    up = ts_upstream_start();
    cr_assert_not_null(up);
    start_proxy();
}

static void teardown(void)
{
    ts_proxy_cleanup(&px, 1);
    ts_upstream_stop(&up);
    if (use_etcd)
        ts_etcd_stop(&etcd);
    else
        ts_proc_stop(&redis, SIGTERM, 5000);
    if (bdir != NULL)
        ts_rmrf(bdir);
    free(bdir);
    bdir = NULL;
}

TestSuite(verify_redis, .init = setup_redis, .fini = teardown, .timeout = 90);
TestSuite(verify_etcd, .init = setup_etcd, .fini = teardown, .timeout = 90);
TestSuite(operator, .init = setup_redis, .fini = teardown, .timeout = 90);

static int put_resp(const char *path, const char *token, struct ts_resp *r)
{
    char req[512];

    snprintf(req, sizeof req,
             "PUT %s HTTP/1.1\r\nHost: t\r\nFencing-Token: %s\r\nContent-Length: 1\r\n\r\nx", path,
             token);
    return ts_http_raw(px.port, req, strlen(req), r, 10000);
}

static int put_tok(const char *path, uint64_t token)
{
    char t[32];

    snprintf(t, sizeof t, "%llu", (unsigned long long)token);
    return put_resp(path, t, NULL);
}

static double metric(const char *series)
{
    struct ts_resp m;
    size_t n = strlen(series);
    double v = -1;

    cr_assert_eq(ts_http_get(px.admin_port, "/metrics", &m), 200);
    for (const char *p = m.body; (p = strstr(p, series)) != NULL; p += n)
        if ((p == m.body || p[-1] == '\n') && p[n] == ' ') {
            v = strtod(p + n + 1, NULL);
            break;
        }
    ts_resp_free(&m);
    return v;
}

/* The highest the admin API reports for resource, or -1. */
static long long highest(const char *resource)
{
    struct ts_resp r;
    char path[512];
    long long h = -1;
    const char *p;

    snprintf(path, sizeof path, "/tokens/");
    for (const char *c = resource; *c != '\0'; c++)
        snprintf(path + strlen(path), sizeof path - strlen(path), *c == '/' ? "%%2F" : "%c", *c);
    if (ts_http_get(px.admin_port, path, &r) == 200 && (p = strstr(r.body, "\"highest\":")))
        h = atoll(p + 10);
    ts_resp_free(&r);
    return h;
}

static struct fl_lease *take(const char *name, uint64_t ttl_ms)
{
    char err[256];
    struct fl_client *c = fl_client_new(lock_url, err, sizeof err);
    struct fl_lease *l = NULL;

    cr_assert_not_null(c, "%s", err);
    cr_assert_eq(fl_acquire(c, name, ttl_ms, 2000, &l), FL_OK, "%s", fl_client_error(c));
    fl_client_free(&c);
    return l;
}

static void give_back(struct fl_lease **l)
{
    char err[256];
    struct fl_client *c = fl_client_new(lock_url, err, sizeof err);

    cr_assert_not_null(c);
    cr_assert_eq(fl_release(c, *l), FL_OK, "%s", fl_client_error(c));
    fl_client_free(&c);
    fl_lease_free(l);
}

static int audit_has(const char *a, const char *b)
{
    char *log = NULL;
    int found = 0;

    for (int i = 0; i < 50 && !found; i++) {
        free(log);
        log = ts_read_file(px.audit, NULL);
        for (char *line = log; line != NULL && *line != '\0' && !found;) {
            char *nl = strchr(line, '\n');
            if (nl != NULL)
                *nl = '\0';
            found = strstr(line, a) != NULL && (b == NULL || strstr(line, b) != NULL);
            line = nl != NULL ? nl + 1 : NULL;
        }
        if (!found)
            ts_sleep_ms(50);
    }
    free(log);
    return found;
}

/* The scenario of the issue: a forged huge token on a verified route is
 * refused (403, unverified_token, audited), raises nothing, and the real
 * holder keeps writing. */
static void forged_token_refused(void)
{
    struct fl_lease *l = take("/objects/user42", 10000);
    struct ts_resp r;

    cr_assert_eq(put_resp("/objects/user42/a.txt", FORGED, &r), 403, "%s", r.head);
    cr_expect(strstr(r.body, "\"error\":\"unverified_token\"") != NULL, "%s", r.body);
    ts_resp_free(&r);
    cr_expect_eq(ts_upstream_count(up), 0, "the forged write must not reach the store");
    cr_expect_lt(highest("/objects/user42"), 1000000, "the forged token raised the highest");
    cr_assert_eq(put_tok("/objects/user42/a.txt", l->token), 200);
    cr_assert_eq(put_tok("/objects/user42/a.txt", l->token), 200);
    cr_expect_eq(highest("/objects/user42"), (long long)l->token);
    cr_expect_eq(ts_upstream_count(up), 2);
    cr_expect(audit_has("\"event\":\"unverified_token\"", "\"token\":" FORGED));
    cr_expect_eq(metric("fence_requests_total{route=\"objects\",outcome=\"unverified_token\"}"), 1);
    fl_lease_free(&l);
}

/* A token whose lock was released, or expired, is refused. */
static void released_and_expired_refused(void)
{
    struct fl_lease *l = take("/objects/r1", 10000);
    uint64_t t = l->token;

    give_back(&l);
    cr_expect_eq(put_tok("/objects/r1/a", t), 403, "a released lock's token");
    l = take("/objects/r2", use_etcd ? 1000 : 300);
    t = l->token;
    fl_lease_free(&l);
    ts_sleep_ms(use_etcd ? 3500 : 700);
    cr_expect_eq(put_tok("/objects/r2/a", t), 403, "an expired lock's token");
    cr_expect_eq(ts_upstream_count(up), 0);
}

/* The holder's token costs one backend call at its first write; the next
 * writes with it make none. */
static void one_call_per_acquisition(void)
{
    struct fl_lease *l = take("/objects/c1", 10000);
    double before = metric("fence_verify_calls_total");

    for (int i = 0; i < 5; i++)
        cr_assert_eq(put_tok("/objects/c1/a", l->token), 200);
    cr_expect_eq(metric("fence_verify_calls_total") - before, 1, "one check for five writes");
    fl_lease_free(&l);
}

Test(verify_redis, forged_huge_token_refused_holder_keeps_writing) { forged_token_refused(); }
Test(verify_redis, released_or_expired_token_refused) { released_and_expired_refused(); }
Test(verify_redis, holder_accepted_after_one_backend_call) { one_call_per_acquisition(); }
Test(verify_etcd, forged_huge_token_refused_holder_keeps_writing) { forged_token_refused(); }
Test(verify_etcd, released_or_expired_token_refused) { released_and_expired_refused(); }
Test(verify_etcd, holder_accepted_after_one_backend_call) { one_call_per_acquisition(); }

/* Concurrent advances to one token share one check. */
Test(verify_redis, concurrent_advances_share_one_check)
{
    struct fl_lease *l = take("/objects/s1", 10000);
    char req[256];
    int fds[8];
    double before = metric("fence_verify_calls_total");

    snprintf(req, sizeof req,
             "PUT /objects/s1/a HTTP/1.1\r\nHost: t\r\nFencing-Token: %llu\r\n"
             "Content-Length: 1\r\n\r\nx",
             (unsigned long long)l->token);
    for (int i = 0; i < 8; i++) {
        fds[i] = ts_connect(px.port);
        cr_assert_geq(fds[i], 0);
    }
    for (int i = 0; i < 8; i++)
        cr_assert_eq(ts_send_all(fds[i], req, strlen(req)), 0);
    for (int i = 0; i < 8; i++) {
        struct ts_resp r;
        cr_assert_eq(ts_http_read(fds[i], &r, 10000, 0), 0);
        cr_expect_eq(r.status, 200);
        ts_resp_free(&r);
        close(fds[i]);
    }
    /* Sent together they meet in one check; on a loaded machine some may
     * arrive after it ended (then they need none at all). */
    cr_expect_eq(metric("fence_verify_calls_total") - before, 1);
    fl_lease_free(&l);
}

/* A lock name template: the route's lock names are "locks" + the key. */
Test(verify_redis, lock_name_template)
{
    struct fl_lease *right = take("locks/named/u1", 10000), *wrong = take("/named/u1", 10000);

    give_back(&wrong); /* so that its token differs from right's */
    wrong = take("/named/u1", 10000);
    cr_assert_neq(wrong->token, right->token);

    cr_expect_eq(put_tok("/named/u1/a", wrong->token), 403, "the lock under the key's name");
    cr_expect_eq(put_tok("/named/u1/a", right->token), 200, "the lock the template names");
    fl_lease_free(&wrong);
    fl_lease_free(&right);
}

static void backend_down(void)
{
    if (use_etcd)
        ts_etcd_stop(&etcd);
    else
        ts_proc_stop(&redis, SIGKILL, 5000);
}

/* The lock backend unreachable: 503, fail closed, nothing raised. */
static void unreachable_503(void)
{
    struct fl_lease *l = take("/objects/u9", 10000);
    struct ts_resp r;

    cr_assert_eq(put_tok("/objects/u9/a", l->token), 200);
    backend_down();
    cr_expect_eq(put_tok("/objects/u9/a", l->token), 200, "T == H needs no backend call");
    cr_expect_eq(put_resp("/objects/u9/a", FORGED, &r), 503, "%s", r.head);
    ts_resp_free(&r);
    cr_expect_eq(highest("/objects/u9"), (long long)l->token);
    cr_expect_eq(put_tok("/live/u9/a", l->token), 503, "a live route fails closed too");
    cr_expect_geq(metric("fence_verify_errors_total"), 2);
    cr_expect_eq(ts_upstream_count(up), 2);
    fl_lease_free(&l);
}

Test(verify_redis, backend_unreachable_gives_503) { unreachable_503(); }
Test(verify_etcd, backend_unreachable_gives_503) { unreachable_503(); }

/* require_live_lease: the holder's writes pass while it holds the lock and
 * are refused once it lapsed (or was released), even at T == H. */
static void live_lease(void)
{
    uint64_t ttl = use_etcd ? 1000 : 400;
    struct fl_lease *l = take("/live/h1", ttl);
    double before = metric("fence_verify_calls_total");

    cr_assert_eq(put_tok("/live/h1/a", l->token), 200);
    cr_assert_eq(put_tok("/live/h1/a", l->token), 200);
    cr_expect_eq(metric("fence_verify_calls_total") - before, 2, "one check per write");
    ts_sleep_ms(use_etcd ? 3500 : 800);
    cr_expect_eq(put_tok("/live/h1/a", l->token), 403, "a lapsed holder at T == H");
    cr_expect_eq(ts_upstream_count(up), 2);
    cr_expect_eq(put_tok("/objects/h1/a", l->token), 403, "and on the verified route T > H");
    fl_lease_free(&l);
    l = take("/live/h2", 10000);
    cr_assert_eq(put_tok("/live/h2/a", l->token), 200);
    give_back(&l);
    cr_expect_eq(ts_upstream_count(up), 3);
}

Test(verify_redis, require_live_lease_refuses_a_lapsed_holder) { live_lease(); }
Test(verify_etcd, require_live_lease_refuses_a_lapsed_holder) { live_lease(); }

Test(verify_redis, require_live_lease_refuses_a_released_holder)
{
    struct fl_lease *l = take("/live/h3", 10000);
    uint64_t t = l->token;

    cr_assert_eq(put_tok("/live/h3/a", t), 200);
    give_back(&l);
    cr_expect_eq(put_tok("/live/h3/a", t), 403);
}

/* ---- the operator's reset and the admin API ---------------------------- */

static int run_tokens(const char *conf, const char *const *args, char *out, size_t cap)
{
    char cmd[4096];
    FILE *p;
    size_t n = 0;
    int st;

    snprintf(cmd, sizeof cmd, "'%s' tokens -c '%s'", ts_build_path("proxy/fenceproxy"), conf);
    for (; *args != NULL; args++)
        snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), " '%s'", *args);
    strcat(cmd, " 2>&1");
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    if (out != NULL) {
        n = fread(out, 1, cap - 1, p);
        out[n] = '\0';
    } else {
        char sink[4096];
        while (fread(sink, 1, sizeof sink, p) > 0)
            ;
    }
    st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A poisoned unverified route recovered with `tokens set`: audited with the
 * old and new values, the reason and the caller; durable at once (kill -9
 * right after the answer loses nothing). */
Test(operator, tokens_set_recovers_a_poisoned_route_and_survives_kill_9)
{
    char out[4096];
    const char *set0[] = {"set", "/plain/user42", "0", "--reason", "poisoned by a test run", NULL};
    const char *set3[] = {"set", "/plain/user42", "3", "--reason", "again", NULL};
    const char *get[] = {"get", "/plain/user42", NULL};

    cr_assert_eq(put_resp("/plain/user42/a.txt", FORGED, NULL), 200, "unverified: accepted");
    cr_assert_eq(put_tok("/plain/user42/a.txt", 7), 409, "poisoned");
    cr_assert_eq(run_tokens(px.conf, set0, out, sizeof out), 0, "%s", out);
    cr_expect(strstr(out, "\"old\":" FORGED) != NULL, "%s", out);
    cr_expect(strstr(out, "\"highest\":0") != NULL, "%s", out);
    cr_expect_eq(put_tok("/plain/user42/a.txt", 7), 200, "the holder writes again");
    cr_expect(audit_has("\"event\":\"operator_set\"", "\"reason\":\"poisoned by a test run\""));
    cr_expect(audit_has("\"event\":\"operator_set\"", "\"old\":" FORGED));
    cr_expect(audit_has("\"event\":\"operator_set\"", "\"operator\":\""));
    cr_expect(audit_has("\"event\":\"operator_set\"", "\"highest\":0"));
    cr_expect_eq(metric("fence_operator_sets_total"), 1);
    /* Lower it below the holder's 7, then crash at once. */
    cr_assert_eq(run_tokens(px.conf, set3, out, sizeof out), 0, "%s", out);
    cr_assert_eq(ts_proxy_stop(&px, SIGKILL) >= 0, 1);
    cr_assert_eq(ts_proxy_start(&px), 0);
    cr_assert_eq(run_tokens(px.conf, get, out, sizeof out), 0, "%s", out);
    cr_expect(strstr(out, "\"highest\":3") != NULL, "after kill -9: %s", out);
    cr_expect_eq(put_tok("/plain/user42/a.txt", 2), 409);
    cr_expect_eq(put_tok("/plain/user42/a.txt", 3), 200);
    /* Audit chain intact across all of it. */
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "'%s' audit verify '%s' >/dev/null 2>&1",
             ts_build_path("proxy/fenceproxy"), px.audit);
    cr_expect_eq(system(cmd), 0, "audit verify");
}

/* A set waits for a request admitted under the old highest (S3): it is
 * answered only after that request completed. */
Test(operator, tokens_set_waits_for_requests_in_flight)
{
    const char *set[] = {"set", "/plain/w1", "1", "--reason", "drain test", NULL};
    char req[256], out[2048];
    struct ts_resp r;
    int fd;
    long long t0, t1;

    ts_upstream_set_delay_ms(up, 1500);
    snprintf(req, sizeof req, "PUT /plain/w1/a HTTP/1.1\r\nHost: t\r\nFencing-Token: 9\r\n"
                              "Content-Length: 1\r\n\r\nx");
    fd = ts_connect(px.port);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ts_send_all(fd, req, strlen(req)), 0);
    cr_assert_eq(ts_upstream_wait_count(up, 0, 100) >= 0, 1);
    ts_sleep_ms(300);
    t0 = ts_now_ms();
    cr_assert_eq(run_tokens(px.conf, set, out, sizeof out), 0, "%s", out);
    t1 = ts_now_ms();
    cr_assert_eq(ts_http_read(fd, &r, 10000, 0), 0);
    cr_expect_eq(r.status, 200, "the request admitted under 9 completed");
    ts_resp_free(&r);
    close(fd);
    cr_expect_geq(t1 - t0, 700, "the set was answered before the request drained (%lld ms)",
                  t1 - t0);
    cr_expect(strstr(out, "\"old\":9") != NULL, "%s", out);
    ts_upstream_set_delay_ms(up, 0);
    cr_expect_eq(put_tok("/plain/w1/a", 1), 200);
}

static int admin_put(const char *path, const char *auth)
{
    char req[1024];

    snprintf(req, sizeof req, "PUT %s HTTP/1.1\r\nHost: a\r\n%s%sContent-Length: 0\r\n\r\n", path,
             auth != NULL ? auth : "", auth != NULL ? "\r\n" : "");
    return ts_http_raw(px.admin_port, req, strlen(req), NULL, 5000);
}

/* Writes without the secret, or with a wrong one, get 403 and change
 * nothing; each is counted and logged; reads stay open. */
Test(operator, unauthenticated_writes_get_403)
{
    cr_assert_eq(put_tok("/plain/a1/x", 50), 200);
    cr_expect_eq(admin_put("/tokens/%2Fplain%2Fa1?token=1&reason=x", NULL), 403);
    cr_expect_eq(admin_put("/tokens/%2Fplain%2Fa1?token=1&reason=x", "Authorization: Bearer wrong"),
                 403);
    cr_expect_eq(admin_put("/tokens/%2Fplain%2Fa1?token=1&reason=x",
                           "Authorization: Bearer " SECRET "x"),
                 403);
    cr_expect_eq(admin_put("/tokens/%2Fplain%2Fa1?token=1&reason=x", "Authorization: Basic " SECRET),
                 403);
    cr_expect_eq(highest("/plain/a1"), 50, "nothing changed");
    cr_expect_eq(metric("fence_admin_auth_failures_total"), 4);
    cr_expect_eq(metric("fence_operator_sets_total"), 0);
    cr_expect_eq(admin_put("/tokens/%2Fplain%2Fa1?token=1", "Authorization: Bearer " SECRET), 400,
                 "no reason");
    cr_expect_eq(admin_put("/tokens/%2Fplain%2Fa1?token=1&reason=ok", "Authorization: Bearer " SECRET),
                 200);
    cr_expect_eq(highest("/plain/a1"), 1);
    char *log = ts_read_file(px.proc.log, NULL);
    cr_expect(log != NULL && strstr(log, "missing or wrong bearer secret") != NULL);
    free(log);
}

/* Exit codes of the CLI: 1 refused (a config whose secret is wrong), 69
 * when the admin API does not answer. */
Test(operator, tokens_cli_exit_codes)
{
    char conf[1200], tok[1200], out[2048], *text;
    const char *set[] = {"set", "/plain/e1", "5", "--reason", "r", NULL};
    const char *get[] = {"get", "/plain/e1", NULL};
    FILE *f;

    snprintf(tok, sizeof tok, "%s/wrong.secret", px.dir);
    f = fopen(tok, "w");
    fputs("not-the-secret-at-all-0000\n", f);
    fclose(f);
    chmod(tok, 0600);
    text = ts_read_file(px.conf, NULL);
    cr_assert_not_null(text);
    snprintf(conf, sizeof conf, "%s/wrong.conf", px.dir);
    f = fopen(conf, "w");
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n"))
        fprintf(f, "%s\n", strncmp(line, "admin_token_file", 16) == 0 ? "" : line);
    fclose(f);
    free(text);
    /* admin_token_file is in [proxy]: append it there by rewriting. */
    text = ts_read_file(conf, NULL);
    f = fopen(conf, "w");
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        fprintf(f, "%s\n", line);
        if (strcmp(line, "[proxy]") == 0)
            fprintf(f, "admin_token_file = %s\n", tok);
    }
    fclose(f);
    free(text);
    cr_expect_eq(run_tokens(conf, set, out, sizeof out), 1, "%s", out);
    cr_expect_eq(run_tokens(px.conf, set, out, sizeof out), 0, "%s", out);
    cr_expect_eq(run_tokens(px.conf, get, out, sizeof out), 0, "%s", out);
    ts_proxy_stop(&px, SIGTERM);
    cr_expect_eq(run_tokens(px.conf, get, out, sizeof out), 69, "%s", out);
    cr_expect_eq(run_tokens(px.conf, set, out, sizeof out), 69, "%s", out);
}

/* A secret file others may read refuses the start (and -t). */
Test(operator, admin_token_file_readable_by_others_is_refused)
{
    char tokfile[1100], cmd[3000], out[2048];
    FILE *p;
    size_t n;
    int st;

    snprintf(tokfile, sizeof tokfile, "%s/admin.secret", px.dir);
    cr_assert_eq(chmod(tokfile, 0640), 0);
    snprintf(cmd, sizeof cmd, "'%s' -t -c '%s' 2>&1", ts_build_path("proxy/fenceproxy"), px.conf);
    p = popen(cmd, "r");
    n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    st = pclose(p);
    cr_expect_neq(WEXITSTATUS(st), 0);
    cr_expect(strstr(out, "accessible to group or others") != NULL, "%s", out);
    cr_expect(strstr(out, px.conf) != NULL, "file:line names the config: %s", out);
    chmod(tokfile, 0600);
}

/* ---- `fenceproxy tokens list` on the memory, file and etcd stores ------- */

static int list_etcd_up;

/* A proxy with one unverified route /plain/ on the given [store] section
 * (NULL: the file store in the fixture's dir). */
static void start_list_proxy(const char *store_conf)
{
    char extra[2048], tokfile[1100];

    up = ts_upstream_start();
    cr_assert_not_null(up);
    cr_assert_eq(ts_proxy_init(&px, "list"), 0);
    write_secret(tokfile, sizeof tokfile);
    px.store_conf = store_conf;
    snprintf(extra, sizeof extra,
             "admin_token_file = %s\n[route plain]\nprefix = /plain/\nresource = segments:2\n",
             tokfile);
    cr_assert_eq(ts_proxy_write_conf(&px, ts_upstream_port(up), extra), 0);
    cr_assert_eq(ts_proxy_start(&px), 0);
}

static void setup_list_file(void)
{
    start_list_proxy(NULL);
}

static void setup_list_memory(void)
{
    start_list_proxy("[store]\nbackend = memory\n");
}

static char list_store_conf[600];

static void setup_list_etcd(void)
{
    bdir = ts_tempdir("list-etcd");
    cr_assert_not_null(bdir);
    cr_assert_eq(ts_etcd_start(&etcd, bdir, 1), 0, "etcd (etcd-server) must be installed");
    list_etcd_up = 1;
    snprintf(list_store_conf, sizeof list_store_conf,
             "[store]\nbackend = etcd\nendpoints = %s\nprefix = /list/\ntimeout = 1s\n",
             etcd.endpoints);
    start_list_proxy(list_store_conf);
}

static void teardown_list(void)
{
    ts_proxy_cleanup(&px, 1);
    ts_upstream_stop(&up);
    if (list_etcd_up)
        ts_etcd_stop(&etcd);
    list_etcd_up = 0;
    if (bdir != NULL)
        ts_rmrf(bdir);
    free(bdir);
    bdir = NULL;
}

TestSuite(list_file, .init = setup_list_file, .fini = teardown_list, .timeout = 90);
TestSuite(list_memory, .init = setup_list_memory, .fini = teardown_list, .timeout = 90);
TestSuite(list_etcd, .init = setup_list_etcd, .fini = teardown_list, .timeout = 90);

/* Lines of out that are listed resources. */
static int count_entries(const char *out)
{
    int n = 0;

    for (const char *p = out; (p = strstr(p, "{\"resource\":")) != NULL; p++)
        n++;
    return n;
}

/* Whether out has the line {"resource":"R","highest":H}. */
static int has_entry(const char *out, const char *resource, unsigned long long h)
{
    char want[600];

    snprintf(want, sizeof want, "{\"resource\":\"%s\",\"highest\":%llu}\n", resource, h);
    return strstr(out, want) != NULL;
}

/* Advances, then lists: every resource with its highest, a prefix filter,
 * --limit, and the admin API's own paging (limit, truncated, next). */
static void list_after_advances(void)
{
    static char out[65536];
    char path[64];
    const char *all[] = {"list", NULL};
    const char *pfx[] = {"list", "/plain/r0", NULL};
    const char *lim[] = {"list", "/plain/r", "--limit", "5", NULL};
    const char *none[] = {"list", "/nothing/", NULL};
    struct ts_resp r;
    char next[2048] = "";
    int seen = 0;

    for (int i = 1; i <= 12; i++) {
        snprintf(path, sizeof path, "/plain/r%02d/o", i);
        cr_assert_eq(put_tok(path, (uint64_t)i * 3 + 1), 200, "%s", path);
    }
    cr_assert_eq(put_tok("/plain/r05/o", 100), 200);
    cr_assert_eq(put_tok("/plain/r05/o", 50), 409);
    cr_assert_eq(put_tok("/plain/x/o", 2), 200);

    cr_assert_eq(run_tokens(px.conf, all, out, sizeof out), 0, "%s", out);
    cr_expect_eq(count_entries(out), 13, "%s", out);
    cr_expect(has_entry(out, "/plain/r01", 4), "%s", out);
    cr_expect(has_entry(out, "/plain/r05", 100), "%s", out);
    cr_expect(has_entry(out, "/plain/r12", 37), "%s", out);
    cr_expect(has_entry(out, "/plain/x", 2), "%s", out);
    cr_expect(strstr(out, "/plain/r01") < strstr(out, "/plain/r02"), "in key order: %s", out);

    cr_assert_eq(run_tokens(px.conf, pfx, out, sizeof out), 0, "%s", out);
    cr_expect_eq(count_entries(out), 9, "r01..r09: %s", out);
    cr_expect(strstr(out, "/plain/r10") == NULL && strstr(out, "/plain/x") == NULL, "%s", out);

    cr_assert_eq(run_tokens(px.conf, lim, out, sizeof out), 0, "%s", out);
    cr_expect_eq(count_entries(out), 5, "%s", out);
    cr_expect(has_entry(out, "/plain/r05", 100), "%s", out);
    cr_expect(strstr(out, "stopped at --limit 5; more resources follow") != NULL, "%s", out);

    cr_assert_eq(run_tokens(px.conf, none, out, sizeof out), 0, "%s", out);
    cr_expect_eq(count_entries(out), 0, "%s", out);

    /* The admin API pages: 5 at a time with the cursor, 13 in 3 pages. */
    for (int page = 0; page < 10; page++) {
        char q[2200];
        const char *t, *n;
        snprintf(q, sizeof q, "/tokens?prefix=%%2Fplain%%2F&limit=5%s%s", next[0] ? "&after=" : "",
                 next);
        cr_assert_eq(ts_http_get(px.admin_port, q, &r), 200, "%s", r.body);
        seen += count_entries(r.body);
        t = strstr(r.body, "\"truncated\":");
        cr_assert_not_null(t, "%s", r.body);
        if (strncmp(t + 12, "false", 5) == 0) {
            ts_resp_free(&r);
            cr_expect_eq(page, 2, "13 in pages of 5");
            break;
        }
        cr_expect_eq(count_entries(r.body), 5);
        n = strstr(r.body, "\"next\":\"");
        cr_assert_not_null(n, "%s", r.body);
        snprintf(next, sizeof next, "%.*s", (int)strcspn(n + 8, "\""), n + 8);
        ts_resp_free(&r);
    }
    cr_expect_eq(seen, 13);
    cr_expect_eq(ts_http_get(px.admin_port, "/tokens?limit=0", &r), 400);
    ts_resp_free(&r);
    cr_expect_eq(ts_http_get(px.admin_port, "/tokens?limit=10001", &r), 400);
    ts_resp_free(&r);
    cr_expect_eq(ts_http_get(px.admin_port, "/tokens?after=zz", &r), 400);
    ts_resp_free(&r);
    cr_expect_eq(ts_http_get(px.admin_port, "/tokens", &r), 200);
    cr_expect_eq(count_entries(r.body), 13, "%s", r.body);
    ts_resp_free(&r);
}

/* Exit codes: 0 listed, 1 a bad argument, 69 the admin API not running. */
static void list_exit_codes(void)
{
    char out[4096];
    const char *all[] = {"list", NULL};
    const char *bad[] = {"list", "--limit", "0", NULL};

    cr_assert_eq(put_tok("/plain/e1/o", 3), 200);
    cr_expect_eq(run_tokens(px.conf, all, out, sizeof out), 0, "%s", out);
    cr_expect_eq(run_tokens(px.conf, bad, out, sizeof out), 1, "%s", out);
    ts_proxy_stop(&px, SIGTERM);
    cr_expect_eq(run_tokens(px.conf, all, out, sizeof out), 69, "%s", out);
    cr_expect(strstr(out, "unreachable") != NULL, "%s", out);
}

Test(list_file, list_after_advances_prefix_limit_pages) { list_after_advances(); }
Test(list_memory, list_after_advances_prefix_limit_pages) { list_after_advances(); }
Test(list_etcd, list_after_advances_prefix_limit_pages) { list_after_advances(); }
Test(list_file, exit_codes_0_1_69) { list_exit_codes(); }
Test(list_memory, exit_codes_0_1_69) { list_exit_codes(); }
Test(list_etcd, exit_codes_0_1_69) { list_exit_codes(); }

/* More than one CLI page (1000 a page): the CLI follows the cursor and
 * prints every resource exactly once. */
Test(list_memory, cli_pages_through_more_than_1000)
{
    static char out[1 << 20];
    const char *all[] = {"list", "/plain/", NULL};
    char path[64];

    for (int i = 0; i < 1003; i++) {
        snprintf(path, sizeof path, "/plain/p%04d/o", i);
        cr_assert_eq(put_tok(path, (uint64_t)i + 1), 200, "%s", path);
    }
    cr_assert_eq(run_tokens(px.conf, all, out, sizeof out), 0, "%.300s", out);
    cr_expect_eq(count_entries(out), 1003);
    cr_expect(has_entry(out, "/plain/p0000", 1));
    cr_expect(has_entry(out, "/plain/p0999", 1000));
    cr_expect(has_entry(out, "/plain/p1000", 1001));
    cr_expect(has_entry(out, "/plain/p1002", 1003));
    cr_expect(strstr(out, "/plain/p0999") < strstr(out, "/plain/p1000"));
}

/* The store unreachable: the admin API answers 503 and the CLI exits 1
 * (refused), nothing printed as a resource. */
Test(list_etcd, store_unreachable_is_refused)
{
    char out[4096];
    const char *all[] = {"list", NULL};

    cr_assert_eq(put_tok("/plain/u1/o", 3), 200);
    ts_etcd_stop(&etcd);
    cr_expect_eq(run_tokens(px.conf, all, out, sizeof out), 1, "%s", out);
    cr_expect(strstr(out, "refused (503)") != NULL, "%s", out);
    cr_expect_eq(count_entries(out), 0, "%s", out);
}

/* A key over the file store's 511-byte limit is listed as its first 400
 * bytes with "key_hash" (the store keeps no more of it). */
Test(list_file, long_key_listed_with_its_hash)
{
    static char path[800], out[8192], want[512], req[1024];
    const char *lst[] = {"list", "/plain/L", NULL};
    const char *h;

    memset(path, 'L', 620);
    memcpy(path, "/plain/", 7);
    strcpy(path + 620, "/o");
    snprintf(req, sizeof req,
             "PUT %s HTTP/1.1\r\nHost: t\r\nFencing-Token: 9\r\nContent-Length: 1\r\n\r\nx", path);
    cr_assert_eq(ts_http_raw(px.port, req, strlen(req), NULL, 10000), 200);
    cr_assert_eq(run_tokens(px.conf, lst, out, sizeof out), 0, "%s", out);
    cr_expect_eq(count_entries(out), 1, "%s", out);
    snprintf(want, sizeof want, "{\"resource\":\"%.*s\",\"key_hash\":\"", 400, path);
    cr_expect(strncmp(out, want, strlen(want)) == 0, "%s", out);
    h = strstr(out, "\"key_hash\":\"");
    cr_assert_not_null(h);
    cr_expect_eq(strspn(h + 12, "0123456789abcdef"), 32, "%s", out);
    cr_expect(strstr(out, "\",\"highest\":9}\n") != NULL, "%s", out);
}

/* The operator's reset on the etcd store: the owning proxy sets the value
 * in one txn guarded by its epoch for the resource; the listing shows it
 * and the lowered highest admits the token it refused before. */
Test(list_etcd, tokens_set_lowers_the_highest)
{
    char out[4096];
    const char *set[] = {"set", "/plain/s1", "1", "--reason", "etcd", NULL};
    const char *lst[] = {"list", "/plain/s1", NULL};

    cr_assert_eq(put_tok("/plain/s1/o", 8), 200);
    cr_assert_eq(put_tok("/plain/s1/o", 7), 409);
    cr_expect_eq(run_tokens(px.conf, set, out, sizeof out), 0, "%s", out);
    cr_expect(strstr(out, "\"old\":8") != NULL && strstr(out, "\"highest\":1") != NULL, "%s",
              out);
    cr_assert_eq(run_tokens(px.conf, lst, out, sizeof out), 0, "%s", out);
    cr_expect(has_entry(out, "/plain/s1", 1), "%s", out);
    cr_expect_eq(put_tok("/plain/s1/o", 7), 200);
}

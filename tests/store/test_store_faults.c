/* Store faults through the real fenceproxy binary, each on a store of 50
 * resources: the store directory deleted, data.mdb truncated to 0, removed,
 * flipped bytes in its leaf pages, truncated to 8 KiB. Each must refuse the
 * start with a message that says what and how to recover (never start
 * empty, never serve lowered highests, never die of a signal), and
 * `fenceproxy store check` must report it (exit 1). Then recovery with the
 * operator floor; a small max_size that fills (new resources 503, existing
 * ones go on, the fill metric and the warning); the store on a small tmpfs
 * that fills up; write and fsync errors injected with an LD_PRELOAD shim
 * (fail closed, never acknowledged, nothing forwarded). */
#include <criterion/criterion.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ts_proc.h"
#include "ts_proxy.h"
#include "ts_upstream.h"

static struct ts_upstream *up;
static struct ts_proxy px;
static char datafile[1100];
static int mounted;

static const char *routes = "[route objects]\nprefix = /objects/\nresource = path\n";

static void setup(void)
{
    up = ts_upstream_start();
    cr_assert_not_null(up, "recording upstream did not start");
    cr_assert_eq(ts_proxy_init(&px, "storefault"), 0);
    cr_assert_eq(ts_proxy_write_conf(&px, ts_upstream_port(up), routes), 0);
    snprintf(datafile, sizeof datafile, "%s/data.mdb", px.store);
}

static void teardown(void)
{
    if (px.proc.pid > 0)
        ts_proc_stop(&px.proc, SIGTERM, 5000);
    if (mounted)
        umount2(px.store, MNT_DETACH);
    mounted = 0;
    ts_proxy_cleanup(&px, 1);
    ts_upstream_stop(&up);
}

TestSuite(faults, .init = setup, .fini = teardown, .timeout = 120);

static int put(const char *path, uint64_t token)
{
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "PUT %s HTTP/1.1\r\nHost: t\r\nFencing-Token: %" PRIu64
                     "\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                     path, token);
    return ts_http_raw(px.port, req, (size_t)n, NULL, 10000);
}

static void res_path(char *buf, size_t cap, int i)
{
    snprintf(buf, cap, "/objects/r%d", i);
}

/* Starts the proxy on a store of 50 resources (tokens 100+i) and stops it. */
static void make_store50(void)
{
    char p[64];
    cr_assert_eq(ts_proxy_start(&px), 0, "fenceproxy did not start");
    for (int i = 0; i < 50; i++) {
        res_path(p, sizeof p, i);
        cr_assert_eq(put(p, 100 + (uint64_t)i), 200, "PUT %s", p);
    }
    int st = ts_proxy_stop(&px, SIGTERM);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "clean stop, status %d", st);
}

/* Runs `fenceproxy store check -c conf` and returns its exit status. */
static int store_check(void)
{
    const char *bin = ts_build_path("proxy/fenceproxy");
    char log[1100];
    char *argv[] = {(char *)bin, "store", "check", "-c", px.conf, NULL};
    struct ts_proc p;
    int st = -1;

    snprintf(log, sizeof log, "%s/check.log", px.dir);
    cr_assert_eq(ts_proc_start(&p, "store-check", argv, NULL, log), 0);
    cr_assert_eq(ts_proc_wait(&p, 20000, &st), 0, "store check hung");
    cr_assert(WIFEXITED(st), "store check died of signal %d", WTERMSIG(st));
    return WEXITSTATUS(st);
}

/* Runs `fenceproxy store ARGS... -c conf` (extra may be NULL) and returns its
 * exit status; output in dir/cli.log. */
static int store_cli(const char *sub, const char *extra1, const char *extra2)
{
    const char *bin = ts_build_path("proxy/fenceproxy");
    char log[1100];
    char *argv[] = {(char *)bin, "store", (char *)sub, "-c", px.conf, (char *)extra1,
                    (char *)extra2, NULL};
    struct ts_proc p;
    int st = -1;

    snprintf(log, sizeof log, "%s/cli.log", px.dir);
    cr_assert_eq(ts_proc_start(&p, "store-cli", argv, NULL, log), 0);
    cr_assert_eq(ts_proc_wait(&p, 20000, &st), 0, "fenceproxy store %s hung", sub);
    cr_assert(WIFEXITED(st), "fenceproxy store %s died of signal %d", sub, WTERMSIG(st));
    return WEXITSTATUS(st);
}

/* `store init` creates a store once and refuses to overwrite it; `store
 * check` says 0 on it, 1 when it is gone, 2 on a usage error; a proxy
 * starts on the initialised store. */
Test(faults, store_init_and_check_commands)
{
    cr_expect_eq(store_cli("check", NULL, NULL), 1, "check before init must say missing");
    cr_expect_eq(store_cli("init", "--floor", "77"), 0);
    cr_expect_eq(store_cli("init", NULL, NULL), 1, "init must not overwrite a store");
    cr_expect_eq(store_cli("check", NULL, NULL), 0);
    cr_expect_eq(store_cli("check", "--bogus", NULL), 2);
    cr_expect_eq(store_cli("frobnicate", NULL, NULL), 2);
    cr_assert_eq(ts_proxy_start(&px), 0, "fenceproxy did not start on an initialised store");
    cr_expect_eq(put("/objects/x", 76), 409, "the floor given to init was not applied");
    cr_expect_eq(put("/objects/x", 78), 200);
    ts_proxy_stop(&px, SIGTERM);
    cr_assert_eq(ts_rmrf(px.store), 0);
    cr_expect_eq(store_cli("check", NULL, NULL), 1);
    cr_expect_eq(store_cli("init", NULL, NULL), 0, "init after the store was lost");
    cr_assert_eq(ts_proxy_start(&px), 0);
}

/* Starts the proxy and expects it to refuse: it exits by itself (no signal)
 * with status 1 and logs the refusal with the recovery steps. */
static void expect_refused(const char *what, const char *reason)
{
    const char *bin = ts_build_path("proxy/fenceproxy");
    char log[1100];
    char *argv[] = {(char *)bin, "-c", px.conf, NULL};
    size_t len;
    int st = -1;

    cr_assert(bin != NULL && access(bin, X_OK) == 0, "fenceproxy binary not built");
    snprintf(log, sizeof log, "%s/fenceproxy.log", px.dir);
    cr_assert_eq(ts_proc_start(&px.proc, "fenceproxy", argv, NULL, log), 0);
    if (ts_proc_wait(&px.proc, 10000, &st) != 0)
        cr_assert_fail("%s: fenceproxy started instead of refusing", what);
    cr_assert(!WIFSIGNALED(st), "%s: fenceproxy died of signal %d", what, WTERMSIG(st));
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "%s: exit status %d", what, st);
    char *text = ts_read_file(log, &len);
    cr_assert_not_null(text);
    cr_expect_not_null(strstr(text, "refused"), "%s: no refusal in the log", what);
    cr_expect_not_null(strstr(text, reason), "%s: the log does not say '%s'", what, reason);
    cr_expect_not_null(strstr(text, "[store] floor = N"), "%s: no recovery steps", what);
    free(text);
    cr_expect_eq(store_check(), 1, "%s: store check must report damage", what);
}

Test(faults, directory_deleted_refuses_the_start)
{
    make_store50();
    cr_assert_eq(ts_rmrf(px.store), 0);
    expect_refused("directory deleted", "missing");
}

Test(faults, data_file_truncated_to_zero_refuses_the_start)
{
    make_store50();
    cr_assert_eq(truncate(datafile, 0), 0);
    expect_refused("truncated to 0", "empty");
}

Test(faults, data_file_removed_refuses_the_start)
{
    make_store50();
    cr_assert_eq(unlink(datafile), 0);
    expect_refused("removed", "missing");
}

Test(faults, data_file_truncated_to_8k_refuses_without_sigbus)
{
    make_store50();
    cr_assert_eq(truncate(datafile, 8192), 0);
    expect_refused("truncated to 8 KiB", "truncated");
}

/* Flips a byte of the token in every copy of the leaf of 5 resources. */
Test(faults, bit_flips_in_leaf_pages_refuse_the_start)
{
    size_t len;
    int flips = 0;

    make_store50();
    char *data = ts_read_file(datafile, &len);
    cr_assert_not_null(data);
    FILE *f = fopen(datafile, "r+");
    cr_assert_not_null(f);
    for (int i = 10; i < 15; i++) {
        char key[64];
        res_path(key, sizeof key, i);
        size_t kl = strlen(key);
        for (char *hit = data; (hit = memmem(hit, len - (size_t)(hit - data), key, kl)) != NULL;
             hit += kl) {
            /* Leaf node: key, then the 8-byte token; flip a high byte so
             * the highest would read lower or higher, never the same. */
            long off = (long)(hit - data) + (long)kl + 6;
            cr_assert_eq(fseek(f, off, SEEK_SET), 0);
            fputc(data[off] ^ 0x01, f);
            flips++;
        }
    }
    fclose(f);
    free(data);
    cr_assert_geq(flips, 5);
    expect_refused("bit flips", "checksum");
}

/* Rewrites the [store] section of the config with extra keys. */
static void store_keys(const char *keys)
{
    size_t len;
    char *text = ts_read_file(px.conf, &len);
    cr_assert_not_null(text);
    char *at = strstr(text, "[audit]");
    cr_assert_not_null(at);
    FILE *f = fopen(px.conf, "w");
    cr_assert_not_null(f);
    fprintf(f, "%.*s%s\n%s", (int)(at - text), text, keys, at);
    fclose(f);
    free(text);
}

/* The documented way back after the store is lost: the operator floor. The
 * start is logged with the floor; tokens the old store had seen are stale,
 * a token above the floor goes through, and the floor is kept without the
 * key on the next start. */
Test(faults, floor_recovers_a_lost_store)
{
    size_t len;

    make_store50();
    cr_assert_eq(ts_rmrf(px.store), 0);
    store_keys("floor = 1000");
    cr_assert_eq(ts_proxy_start(&px), 0, "fenceproxy did not start with a floor");
    char *log = ts_read_file(px.proc.log, &len);
    cr_assert_not_null(log);
    cr_expect_not_null(strstr(log, "operator floor 1000"), "floor not logged");
    free(log);
    cr_expect_eq(put("/objects/r7", 107), 409, "a token of the lost store must be stale");
    cr_expect_eq(put("/objects/new", 999), 409, "a token under the floor must be stale");
    cr_expect_eq(ts_upstream_count(up), 50);
    cr_expect_eq(put("/objects/r7", 1001), 200);
    ts_proxy_stop(&px, SIGTERM);
    cr_assert_eq(ts_proxy_write_conf(&px, ts_upstream_port(up), routes), 0);
    cr_assert_eq(ts_proxy_start(&px), 0);
    cr_expect_eq(put("/objects/r8", 999), 409, "the floor was not kept");
    cr_expect_eq(store_check(), 0);
}

static long long metric(const char *name)
{
    struct ts_resp r;
    long long v = -1;
    char pat[128];

    snprintf(pat, sizeof pat, "\n%s ", name);
    if (ts_http_get(px.admin_port, "/metrics", &r) == 200) {
        const char *p = strstr(r.body, pat);
        if (p != NULL)
            v = strtoll(p + strlen(pat), NULL, 10);
    }
    ts_resp_free(&r);
    return v;
}

static void long_path(char *buf, size_t cap, int i)
{
    int n = snprintf(buf, cap, "/objects/%d/", i);
    memset(buf + n, 'x', cap - (size_t)n - 1);
    buf[cap - 1] = '\0';
}

static int count_in_log(const char *what)
{
    size_t len;
    int n = 0;
    char *log = ts_read_file(px.proc.log, &len);
    for (char *p = log; p != NULL && (p = strstr(p, what)) != NULL; p++)
        n++;
    free(log);
    return n;
}

/* Fills the store with new resources with long keys until one gets 503;
 * returns how many got 200. */
static int fill_until_503(int max)
{
    char p[300];
    int ok = 0;
    for (int i = 0; i < max; i++) {
        long_path(p, sizeof p, i);
        int st = put(p, 7);
        if (st == 503)
            return ok;
        cr_assert_eq(st, 200, "PUT %d: %d", i, st);
        ok++;
    }
    cr_assert_fail("no 503 after %d new resources", max);
    return ok;
}

/* Capacity without a cliff: at max_size new resources get 503, existing ones
 * keep advancing; the fill metric, the full gauge and one 80% warning. */
Test(faults, small_max_size_refuses_only_new_resources)
{
    char p[300];

    store_keys("max_size = 1MiB");
    cr_assert_eq(ts_proxy_start(&px), 0);
    cr_expect_eq(metric("fence_store_max_bytes"), 1 << 20);
    int ok = fill_until_503(20000);
    cr_assert_gt(ok, 500, "only %d resources fit in 1 MiB", ok);
    cr_expect_geq(metric("fence_store_fill_percent"), 80);
    cr_expect_eq(metric("fence_store_full"), 1);
    cr_expect_eq(metric("fence_store_up"), 1, "a full store must not count as failed");
    cr_expect_eq(count_in_log("% full ("), 1, "the 80%% warning must be logged once");
    cr_expect_geq(count_in_log("token store full"), 1);
    /* Existing resources go on. */
    for (int i = 0; i < ok; i += ok / 20 + 1) {
        long_path(p, sizeof p, i);
        cr_expect_eq(put(p, 8), 200, "existing resource %d refused", i);
        cr_expect_eq(put(p, 7), 409, "resource %d: its advance was lost", i);
    }
    /* The refused resource asks again with the same token: refused again at
     * once (it must not wait for an advance nobody makes). */
    long_path(p, sizeof p, ok);
    cr_expect_eq(put(p, 7), 503, "a retried new resource must get 503 again");
    /* Short new keys are refused too once it is full (try a few). */
    int refused = 0;
    for (int i = 0; i < 200 && !refused; i++) {
        long_path(p, sizeof p, 100000 + i);
        refused = put(p, 1) == 503;
    }
    cr_expect(refused, "new resources kept fitting");
}

/* The store's file system fills up (a 2 MiB tmpfs under a 64 GiB max_size):
 * new resources get 503, no crash, existing ones go on, and after a restart
 * every acknowledged advance is there and the store checks clean. */
Test(faults, store_on_a_full_tmpfs)
{
    char p[300];

    cr_assert_eq(mkdir(px.store, 0700), 0);
    cr_assert_eq(mount("tmpfs", px.store, "tmpfs", 0, "size=2m,mode=0700"), 0,
                 "cannot mount a tmpfs (the test needs root): %s", strerror(errno));
    mounted = 1;
    cr_assert_eq(ts_proxy_start(&px), 0);
    int ok = fill_until_503(40000);
    cr_assert_gt(ok, 500, "only %d resources fit", ok);
    cr_expect_eq(metric("fence_store_full"), 1);
    for (int i = 0; i < ok; i += ok / 20 + 1) {
        long_path(p, sizeof p, i);
        int st = put(p, 9);
        cr_expect(st == 200 || st == 503, "existing resource %d: %d", i, st);
    }
    int st = ts_proxy_stop(&px, SIGTERM);
    cr_expect(WIFEXITED(st), "fenceproxy died: status %d", st);
    cr_expect_eq(store_check(), 0, "the store is damaged after the disk filled");
    cr_assert_eq(ts_proxy_start(&px), 0, "no restart after the disk filled");
    for (int i = 0; i < ok; i += ok / 20 + 1) {
        long_path(p, sizeof p, i);
        cr_expect_eq(put(p, 6), 409, "resource %d lost its acknowledged advance", i);
    }
}

static const char *shim_path(void)
{
    const char *p = ts_build_path("tests/libfence_fault_shim.so");
    cr_assert(p != NULL && access(p, R_OK) == 0, "fault shim not built at %s",
              p != NULL ? p : "?");
    return p;
}

/* Starts fenceproxy with the fault shim preloaded. */
static void start_with_shim(const char *ops, const char *flag)
{
    const char *bin = ts_build_path("proxy/fenceproxy");
    char log[1100], pre[1200], fl[1200], op[64], asan[512];
    const char *old = getenv("ASAN_OPTIONS");
    char *argv[] = {(char *)bin, "-c", px.conf, NULL};
    /* ASan must come first among the libraries unless told not to check. */
    snprintf(asan, sizeof asan, "ASAN_OPTIONS=%s%sverify_asan_link_order=0",
             old != NULL ? old : "", old != NULL && *old ? ":" : "");
    snprintf(pre, sizeof pre, "LD_PRELOAD=%s", shim_path());
    snprintf(fl, sizeof fl, "FENCE_FAULT_FLAG=%s", flag);
    snprintf(op, sizeof op, "FENCE_FAULT_OPS=%s", ops);
    char *env[] = {pre, fl, op, asan, NULL};

    snprintf(log, sizeof log, "%s/fenceproxy.log", px.dir);
    cr_assert_eq(ts_proc_start(&px.proc, "fenceproxy", argv, env, log), 0);
    cr_assert_eq(ts_wait_port(px.port, 5000), 0, "fenceproxy (shim) did not listen");
    cr_assert_eq(ts_wait_port(px.admin_port, 5000), 0);
}

/* An I/O error of the store: the advance is not acknowledged and its
 * request is not forwarded (503), the store stays failed after the disk
 * recovers (no later advance is trusted), and after a restart the store is
 * intact with every acknowledged advance. */
static void check_io_fault(const char *ops)
{
    char flag[1100];
    snprintf(flag, sizeof flag, "%s/fault-on", px.dir);

    start_with_shim(ops, flag);
    cr_assert_eq(put("/objects/a", 5), 200);
    cr_assert_eq(ts_upstream_count(up), 1);
    FILE *f = fopen(flag, "w");
    cr_assert_not_null(f);
    fclose(f);
    cr_expect_eq(put("/objects/a", 6), 503);
    cr_expect_eq(put("/objects/b", 1), 503);
    cr_expect_eq(ts_upstream_count(up), 1, "a request was forwarded without a durable advance");
    unlink(flag);
    cr_expect_eq(put("/objects/a", 7), 503, "the store must stay failed");
    cr_expect_eq(metric("fence_store_up"), 0);
    cr_expect_eq(count_in_log("token store failed, refusing fenced requests"), 1);
    cr_expect_eq(ts_upstream_count(up), 1);
    int st = ts_proxy_stop(&px, SIGTERM);
    cr_expect(WIFEXITED(st), "fenceproxy died: status %d", st);
    cr_expect_eq(store_check(), 0);
    cr_assert_eq(ts_proxy_start(&px), 0);
    cr_expect_eq(put("/objects/a", 4), 409, "the acknowledged advance to 5 was lost");
    cr_expect_eq(put("/objects/a", 8), 200);
}

Test(faults, write_errors_fail_closed)
{
    check_io_fault("write");
}

Test(faults, fsync_errors_fail_closed)
{
    check_io_fault("fsync");
}

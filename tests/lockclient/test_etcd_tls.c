/* etcds://: the etcd lock backend over https against a real etcd member
 * started with --cert-file, --key-file, --trusted-ca-file and
 * --client-cert-auth, certificates made at test time (ts_tls). With the CA
 * and a client certificate locks are taken with rising tokens; without a
 * client certificate, with an untrusted one, or without the CA (the system
 * store does not know it) every call fails, and plain etcd:// to the same
 * member fails too. The proxy's etcd token store over https to the same
 * member ([store] etcd_tls, etcd_ca, etcd_cert, etcd_key): a fenced write
 * passes with the client certificate and gets 503 without one, nothing
 * forwarded. */
#include <criterion/criterion.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ec_client.h"
#include "fencelock.h"
#include "ts_proc.h"
#include "ts_proxy.h"
#include "ts_upstream.h"
#include "ts_tls.h"

static char *dir;
static struct ts_proc etcd;
static int port, passed;
static char certs[1100];

static const char *f(const char *name)
{
    static char buf[8][1300];
    static int k;

    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", certs, name);
    return buf[k];
}

static void setup(void)
{
    const char *bin = ts_find_binary("etcd");
    char data[1200], log[1200], curls[64], purls[64], cluster[96];
    int peer;

    dir = ts_tempdir("etcdtls");
    cr_assert_not_null(dir);
    snprintf(certs, sizeof certs, "%s/tls", dir);
    cr_assert_eq(mkdir(certs, 0700), 0);
    cr_assert_eq(ts_tls_make_certs(certs), 0);
    cr_assert_not_null(bin, "etcd not found (apt-get install etcd-server)");
    port = ts_free_port();
    peer = ts_free_port();
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(log, sizeof log, "%s/etcd.log", dir);
    snprintf(curls, sizeof curls, "https://127.0.0.1:%d", port);
    snprintf(purls, sizeof purls, "http://127.0.0.1:%d", peer);
    snprintf(cluster, sizeof cluster, "m0=%s", purls);
    {
        char *argv[] = {(char *)bin, "--name", "m0", "--data-dir", data,
                        "--listen-client-urls", curls, "--advertise-client-urls", curls,
                        "--listen-peer-urls", purls, "--initial-advertise-peer-urls", purls,
                        "--initial-cluster", cluster, "--cert-file", (char *)f("server.pem"),
                        "--key-file", (char *)f("server.key"), "--trusted-ca-file",
                        (char *)f("ca.pem"), "--client-cert-auth", NULL};
        char *env[] = {"ETCD_UNSUPPORTED_ARCH=", NULL};
        cr_assert_eq(ts_proc_start(&etcd, "etcd", argv, env, log), 0);
    }
    cr_assert_eq(ts_wait_port(port, 20000), 0);
}

static void teardown(void)
{
    if (etcd.pid > 0) {
        if (!passed)
            ts_proc_dump_log(&etcd);
        ts_proc_stop(&etcd, SIGTERM, 5000);
    }
    if (dir != NULL)
        ts_rmrf(dir);
    free(dir);
}

TestSuite(etcdtls, .init = setup, .fini = teardown, .timeout = 60);

/* An etcds:// URL for the member with a query (may be ""). */
static const char *url(const char *query)
{
    static char u[4200];

    snprintf(u, sizeof u, "etcds://127.0.0.1:%d%s", port, query);
    return u;
}

/* Acquires name once, with a deadline for etcd's first election. */
static int acquire(const char *u, const char *name, uint64_t *token, char *why, size_t cap)
{
    char err[512];
    struct fl_client *c = fl_client_new(u, err, sizeof err);
    struct fl_lease *l = NULL;
    int rc = -1;

    if (c == NULL) {
        snprintf(why, cap, "fl_client_new: %s", err);
        return -1;
    }
    fl_client_set_timeout(c, 3000);
    for (int i = 0; i < 20; i++) {
        rc = fl_acquire(c, name, 10000, 0, &l);
        if (rc == FL_OK)
            break;
        snprintf(why, cap, "%s", fl_client_error(c));
        ts_sleep_ms(250);
    }
    if (rc == FL_OK) {
        *token = l->token;
        fl_release(c, l);
        fl_lease_free(&l);
    }
    fl_client_free(&c);
    return rc == FL_OK ? 0 : -1;
}

Test(etcdtls, locks_over_https_with_a_client_certificate)
{
    char q[4096], why[1024] = "";
    uint64_t t1 = 0, t2 = 0;

    snprintf(q, sizeof q, "?ca=%s&cert=%s&key=%s", f("ca.pem"), f("client.pem"),
             f("client.key"));
    cr_assert_eq(acquire(url(q), "res", &t1, why, sizeof why), 0, "%s", why);
    cr_assert_eq(acquire(url(q), "res", &t2, why, sizeof why), 0, "%s", why);
    cr_assert_gt(t2, t1, "tokens %llu then %llu", (unsigned long long)t1,
                 (unsigned long long)t2);
    passed = 1;
}

/* Once the member serves (checked with the right credentials), a client
 * with these credentials gets nothing. */
static void refused(const char *u, const char *what)
{
    char q[4096], why[1024] = "", query[4200];
    uint64_t t = 0;
    struct fl_client *c;
    struct fl_lease *l = NULL;
    char err[512];

    snprintf(query, sizeof query, "%s", u); /* url() reuses its buffer */
    snprintf(q, sizeof q, "?ca=%s&cert=%s&key=%s", f("ca.pem"), f("client.pem"),
             f("client.key"));
    cr_assert_eq(acquire(url(q), "warm", &t, why, sizeof why), 0, "%s", why);
    c = fl_client_new(query, err, sizeof err);
    cr_assert_not_null(c, "%s", err);
    fl_client_set_timeout(c, 2000);
    cr_assert_neq(fl_acquire(c, "res", 10000, 0, &l), FL_OK, "%s: a lock was granted", what);
    cr_log_info("%s: %s", what, fl_client_error(c));
    fl_client_free(&c);
    passed = 1;
}

Test(etcdtls, refused_without_a_client_certificate)
{
    char q[2048];

    snprintf(q, sizeof q, "?ca=%s", f("ca.pem"));
    refused(url(q), "no client certificate");
}

Test(etcdtls, refused_with_an_untrusted_client_certificate)
{
    char q[4096];

    snprintf(q, sizeof q, "?ca=%s&cert=%s&key=%s", f("ca.pem"), f("other-client.pem"),
             f("other-client.key"));
    refused(url(q), "untrusted client certificate");
}

Test(etcdtls, refused_when_the_member_is_not_trusted)
{
    char q[4096];

    /* The system store does not know the test CA. */
    snprintf(q, sizeof q, "?cert=%s&key=%s", f("client.pem"), f("client.key"));
    refused(url(q), "member not trusted");
}

Test(etcdtls, plain_etcd_url_to_a_tls_member_refused)
{
    char u[128];

    snprintf(u, sizeof u, "etcd://127.0.0.1:%d", port);
    refused(u, "plaintext");
}

Test(etcdtls, bad_etcds_urls)
{
    char err[512];

    cr_assert_null(fl_client_new("etcds://127.0.0.1:1?bogus=1", err, sizeof err));
    cr_assert(strstr(err, "ca=FILE, cert=FILE and key=FILE") != NULL, "%s", err);
    cr_assert_null(fl_client_new("etcds://127.0.0.1:1?cert=/etc/hostname", err, sizeof err));
    cr_assert(strstr(err, "needs its key") != NULL, "%s", err);
    cr_assert_null(fl_client_new("etcds://127.0.0.1:1?ca=/nonexistent", err, sizeof err));
    cr_assert(strstr(err, "/nonexistent") != NULL, "%s", err);
    cr_assert_null(fl_client_new("etcd://127.0.0.1:1?ca=/x", err, sizeof err));
    passed = 1;
}

/* A fenceproxy whose etcd token store speaks https to the member; cert:
 * show the client certificate. Returns the status of one fenced PUT. */
static int proxy_put(struct ts_upstream *up, int cert, const char *tag)
{
    struct ts_proxy px;
    struct ts_resp r;
    char store[4200], req[256];
    int status = -1;

    snprintf(store, sizeof store,
             "[store]\nbackend = etcd\nendpoints = 127.0.0.1:%d\nprefix = /tlspx/\n"
             "timeout = 2s\netcd_tls = on\netcd_ca = %s\n%s%s%s%s%s",
             port, f("ca.pem"), cert ? "etcd_cert = " : "", cert ? f("client.pem") : "",
             cert ? "\netcd_key = " : "", cert ? f("client.key") : "", cert ? "\n" : "");
    cr_assert_eq(ts_proxy_init(&px, tag), 0);
    px.store_conf = store;
    cr_assert_eq(ts_proxy_write_conf(&px, ts_upstream_port(up),
                                     "[route objects]\nprefix = /objects/\nresource = segments:2\n"),
                 0);
    cr_assert_eq(ts_proxy_start(&px), 0, "fenceproxy did not start");
    snprintf(req, sizeof req,
             "PUT /objects/u1/a HTTP/1.1\r\nHost: x\r\nFencing-Token: 7\r\n"
             "Content-Length: 2\r\nConnection: close\r\n\r\nhi");
    /* The first election of a fresh member may still be under way. */
    for (int i = 0; i < 20; i++) {
        status = ts_http_raw(px.port, req, strlen(req), &r, 5000);
        ts_resp_free(&r);
        if (status > 0 && (status != 503 || !cert))
            break;
        ts_sleep_ms(250);
    }
    ts_proxy_stop(&px, SIGTERM);
    ts_proxy_cleanup(&px, status != (cert ? 200 : 503));
    return status;
}

Test(etcdtls, proxy_token_store_over_https)
{
    struct ts_upstream *up = ts_upstream_start();
    size_t before;

    cr_assert_not_null(up);
    cr_expect_eq(proxy_put(up, 1, "etcdtlspx"), 200, "fenced PUT through the TLS store");
    cr_expect_eq(ts_upstream_count(up), 1);
    before = ts_upstream_count(up);
    cr_expect_eq(proxy_put(up, 0, "etcdtlsnocert"), 503, "no client certificate: fail closed");
    cr_expect_eq(ts_upstream_count(up), before, "forwarded without the store");
    ts_upstream_stop(&up);
    passed = 1;
}

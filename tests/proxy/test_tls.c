/* TLS on the proxy's hops, against the real fenceproxy binary, certificates
 * made at test time by openssl (ts_tls): curl and openssl s_client through
 * the TLS listener, plaintext on the TLS port answered 400, client
 * certificates required/optional with the subject in the access and audit
 * logs, an https upstream (nginx with ssl) verified by CA and name with
 * expired and wrong-name certificates refused (502 and a log line), mTLS to
 * the upstream, session reuse in the pool, certificate reload under a
 * client loop without a failed request (SIGHUP) and by POST /reload,
 * session tickets resumed by openssl s_client across key rotations (on
 * schedule and on reload), and OCSP stapling from a response made by
 * `openssl ocsp`, checked with s_client -status and reread on reload. */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ts_proc.h"
#include "ts_proxy.h"
#include "ts_tls.h"
#include "ts_upstream.h"

static struct ts_proxy px;
static struct ts_upstream *up;
static struct ts_proc ngx;
static char ngx_dir[1200];
static int passed;

static void teardown(void)
{
    if (ngx.pid > 0) {
        if (!passed)
            ts_proc_dump_log(&ngx);
        ts_proc_stop(&ngx, SIGTERM, 3000);
    }
    ts_proxy_cleanup(&px, !passed);
    ts_upstream_stop(&up);
}

TestSuite(tls, .fini = teardown, .timeout = 90);

static const char *certs(const char *name)
{
    static char buf[8][1300];
    static int k;

    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", px.tls_dir, name);
    return buf[k];
}

/* A proxy dir with certificates; the config is written by start(). */
static void init(void)
{
    if (px.dir != NULL)
        return;
    cr_assert_eq(ts_proxy_init(&px, "tls"), 0);
    if (!px.tls) {
        cr_assert_eq(mkdir(px.tls_dir, 0700), 0);
        cr_assert_eq(ts_tls_make_certs(px.tls_dir), 0, "openssl could not make certificates");
    }
}

static void start(int upstream_port, const char *extra)
{
    cr_assert_eq(ts_proxy_write_conf(&px, upstream_port, extra), 0);
    cr_assert_eq(ts_proxy_start(&px), 0, "fenceproxy did not start");
}

/* The [tls] cert of start_listener (a file in the tls dir). */
static const char *listener_cert = "server.pem";

/* Listener tests: a recording upstream, [tls] with the server certificate
 * plus more (tls_more: more [tls] keys). */
static void start_listener(const char *proxy_more, const char *tls_more)
{
    char extra[4096];

    init();
    up = ts_upstream_start();
    cr_assert_not_null(up);
    snprintf(extra, sizeof extra, "%s\n[route objects]\nprefix = /objects/\n"
             "[tls]\ncert = %s\nkey = %s\n%s\n",
             proxy_more != NULL ? proxy_more : "", certs(listener_cert), certs("server.key"),
             tls_more != NULL ? tls_more : "");
    start(ts_upstream_port(up), extra);
}

/* Sends raw over a TLS connection with the given client certificate
 * (NULL: none) and reads one response; its status, 0 when none came. */
static int tls_request(const char *cert, const char *key, const char *raw, struct ts_resp *r)
{
    struct ts_resp tmp;
    int fd = ts_tls_connect(px.port, certs("ca.pem"), cert, key), st = 0;

    if (r == NULL)
        r = &tmp;
    memset(r, 0, sizeof(*r));
    if (fd < 0)
        return 0;
    if (ts_send_all(fd, raw, strlen(raw)) == 0 && ts_http_read(fd, r, 5000, 0) == 0)
        st = r->status;
    close(fd);
    if (r == &tmp)
        ts_resp_free(r);
    return st;
}

/* Runs cmd, returns its output (malloc'd). */
static char *run(const char *cmd)
{
    FILE *p = popen(cmd, "r");
    char *out = calloc(1, 65536);
    size_t n = 0, k;

    cr_assert_not_null(p);
    while (n < 65535 && (k = fread(out + n, 1, 65535 - n, p)) > 0)
        n += k;
    pclose(p);
    return out;
}

static char *file_text(const char *path, int wait_ms, const char *want)
{
    long long deadline = ts_now_ms() + wait_ms;
    size_t len;

    for (;;) {
        char *t = ts_read_file(path, &len);
        if (t != NULL && (want == NULL || strstr(t, want) != NULL))
            return t;
        if (ts_now_ms() >= deadline)
            return t;
        free(t);
        ts_sleep_ms(50);
    }
}

static int metric(const char *name)
{
    /* The admin listener has the data listener's TLS options: a client
     * certificate goes with the request for the tests that require one. */
    int fd = ts_tls_connect(px.admin_port, certs("ca.pem"), certs("client.pem"),
                            certs("client.key"));
    struct ts_resp r;
    const char *p;
    char pat[200];
    int v = -1;

    cr_assert_geq(fd, 0, "admin listener does not speak TLS");
    ts_send_all(fd, "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 54);
    cr_assert_eq(ts_http_read(fd, &r, 5000, 0), 0);
    close(fd);
    snprintf(pat, sizeof pat, "\n%s ", name);
    p = strstr(r.body, pat);
    if (p != NULL)
        v = atoi(p + strlen(pat));
    ts_resp_free(&r);
    return v;
}

Test(tls, curl_and_s_client_through_the_tls_listener)
{
    char cmd[4096], *out;

    start_listener(NULL, NULL);
    snprintf(cmd, sizeof cmd,
             "curl -sS --cacert %s -o /dev/null -o /dev/null -w '%%{http_code} %%{http_version} %%{ssl_verify_result}' "
             "https://127.0.0.1:%d/a https://localhost:%d/b 2>&1",
             certs("ca.pem"), px.port, px.port);
    out = run(cmd);
    cr_assert_str_eq(out, "200 1.1 0200 1.1 0", "curl: %s", out);
    free(out);
    snprintf(cmd, sizeof cmd,
             "printf 'GET /c HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n' | timeout 10 "
             "openssl s_client -connect 127.0.0.1:%d -CAfile %s -verify_return_error "
             "-alpn h2,http/1.1 -ign_eof 2>&1",
             px.port, certs("ca.pem"));
    out = run(cmd);
    cr_assert(strstr(out, "ALPN protocol: http/1.1") != NULL, "s_client: %s", out);
    cr_assert(strstr(out, "Verify return code: 0 (ok)") != NULL, "s_client: %s", out);
    cr_assert(strstr(out, "HTTP/1.1 200") != NULL, "s_client: %s", out);
    free(out);
    /* TLS 1.1 is below min_version. */
    snprintf(cmd, sizeof cmd,
             "timeout 10 openssl s_client -connect 127.0.0.1:%d -tls1_1 </dev/null 2>&1; echo rc=$?",
             px.port);
    out = run(cmd);
    cr_assert(strstr(out, "rc=0") == NULL, "TLS 1.1 accepted: %s", out);
    free(out);
    for (int i = 0; i < 100 && ts_upstream_count(up) < 3; i++)
        ts_sleep_ms(20);
    cr_assert_eq(ts_upstream_count(up), 3);
    {
        struct ts_upstream_req req;
        cr_assert_eq(ts_upstream_get(up, 0, &req), 0);
        cr_assert(strstr(req.head, "X-Forwarded-Proto: https\r\n") != NULL, "%s", req.head);
    }
    cr_assert_geq(metric("fence_tls_handshakes_total"), 3);
    passed = 1;
}

Test(tls, plaintext_on_the_tls_port_gets_400)
{
    static const char raw[] = "GET /objects/a HTTP/1.1\r\nHost: a\r\n\r\n";
    struct ts_resp r;
    int before;

    start_listener(NULL, NULL);
    before = metric("fence_tls_handshake_failures_total");
    cr_assert_eq(ts_http_raw(px.port, raw, sizeof(raw) - 1, &r, 5000), 400);
    cr_assert(strstr(r.body, "plain HTTP request sent to the TLS port") != NULL, "%s", r.body);
    ts_resp_free(&r);
    cr_assert_eq(ts_upstream_connections(up), 0);
    cr_assert_eq(metric("fence_tls_handshake_failures_total"), before + 1);
    passed = 1;
}

Test(tls, client_certificate_required_and_its_subject_logged)
{
    static const char put5[] = "PUT /objects/r/x HTTP/1.1\r\nHost: a\r\nFencing-Token: 5\r\n"
                               "Content-Length: 0\r\n\r\n";
    static const char put3[] = "PUT /objects/r/x HTTP/1.1\r\nHost: a\r\nFencing-Token: 3\r\n"
                               "Content-Length: 0\r\n\r\n";
    char tls_more[1400];
    char *log;

    init();
    snprintf(tls_more, sizeof tls_more, "client_ca = %s\nverify_client = on\n",
             certs("ca.pem"));
    start_listener(NULL, tls_more);
    /* No certificate, or one from a CA nobody trusts: no request gets in. */
    cr_assert_eq(tls_request(NULL, NULL, put5, NULL), 0, "answered without a certificate");
    cr_assert_eq(tls_request(certs("other-client.pem"), certs("other-client.key"), put5, NULL), 0,
                 "answered with an untrusted certificate");
    cr_assert_eq(ts_upstream_count(up), 0);
    cr_assert_geq(metric("fence_tls_handshake_failures_total"), 2);
    /* The right one: served, and the subject is in both logs. */
    cr_assert_eq(tls_request(certs("client.pem"), certs("client.key"), put5, NULL), 200);
    cr_assert_eq(tls_request(certs("client.pem"), certs("client.key"), put3, NULL), 409);
    log = file_text(px.access, 3000, "409");
    cr_assert(log != NULL && strstr(log, "subject=\"CN=fence test client,O=fence\"") != NULL,
              "access log: %s", log);
    free(log);
    log = file_text(px.audit, 3000, "stale_token");
    cr_assert(log != NULL &&
                  strstr(log, "\"client_subject\":\"CN=fence test client,O=fence\"") != NULL,
              "audit log: %s", log);
    free(log);
    passed = 1;
}

Test(tls, client_certificate_optional)
{
    static const char get[] = "GET /objects/r/x HTTP/1.1\r\nHost: a\r\n\r\n";
    char tls_more[1400];
    char *log;

    init();
    snprintf(tls_more, sizeof tls_more, "client_ca = %s\nverify_client = optional\n",
             certs("ca.pem"));
    start_listener(NULL, tls_more);
    cr_assert_eq(tls_request(NULL, NULL, get, NULL), 200);
    cr_assert_eq(tls_request(certs("other-client.pem"), certs("other-client.key"), get, NULL), 0,
                 "an untrusted certificate was accepted");
    cr_assert_eq(tls_request(certs("client.pem"), certs("client.key"), get, NULL), 200);
    log = file_text(px.access, 3000, "subject=");
    cr_assert(log != NULL, "no access log");
    {
        int lines = 0, with = 0;
        for (char *p = log; (p = strchr(p, '\n')) != NULL; p++)
            lines++;
        for (char *p = log; (p = strstr(p, "subject=")) != NULL; p++)
            with++;
        cr_assert_eq(lines, 2, "%s", log);
        cr_assert_eq(with, 1, "only the request with a certificate has a subject: %s", log);
    }
    free(log);
    passed = 1;
}

/* An https upstream: nginx with cert (a file name in the tls dir). */
static void start_https(const char *cert, const char *key, int upstream_mtls,
                        const char *proxy_more)
{
    int port = ts_free_port();
    char extra[4096];

    init();
    snprintf(ngx_dir, sizeof ngx_dir, "%s/nginx", px.dir);
    cr_assert_eq(mkdir(ngx_dir, 0755), 0);
    cr_assert_eq(ts_nginx_start_ssl(&ngx, ngx_dir, port, certs(cert), certs(key),
                                    upstream_mtls ? certs("ca.pem") : NULL),
                 0);
    {
        char path[1400];
        FILE *f;
        snprintf(path, sizeof path, "%s/data/f", ngx_dir);
        f = fopen(path, "w");
        cr_assert_not_null(f);
        fputs("over tls\n", f);
        fclose(f);
        snprintf(path, sizeof path, "%s/data/big", ngx_dir);
        f = fopen(path, "w");
        cr_assert_not_null(f);
        for (int i = 0; i < 4096; i++)
            fprintf(f, "%01023d\n", i);
        fclose(f);
    }
    px.upstream_base = "https://localhost";
    snprintf(extra, sizeof extra, "upstream_ca = %s\n%s\n", certs("ca.pem"),
             proxy_more != NULL ? proxy_more : "");
    start(port, extra);
}

static int plain_get(const char *path, struct ts_resp *r)
{
    return ts_http_get(px.port, path, r);
}

Test(tls, https_upstream_verified_and_sessions_reused)
{
    struct ts_resp r;

    start_https("server.pem", "server.key", 0, NULL);
    cr_assert_eq(plain_get("/f", &r), 200);
    cr_assert_str_eq(r.body, "over tls\n");
    ts_resp_free(&r);
    /* A client that leaves mid-response costs the pooled connection; the
     * next one resumes the session. */
    for (int i = 0; i < 3; i++) {
        int fd = ts_connect(px.port);
        char buf[256];
        cr_assert_geq(fd, 0);
        ts_send_all(fd, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n", 30);
        cr_assert_gt(recv(fd, buf, sizeof buf, 0), 0);
        close(fd);
        ts_sleep_ms(100);
        cr_assert_eq(plain_get("/f", &r), 200);
        ts_resp_free(&r);
    }
    {
        int fd = ts_connect(px.admin_port);
        ts_send_all(fd, "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 54);
        cr_assert_eq(ts_http_read(fd, &r, 5000, 0), 0);
        close(fd);
        const char *h = strstr(r.body, "\nfence_upstream_tls_handshakes_total ");
        const char *s = strstr(r.body, "\nfence_upstream_tls_resumed_total ");
        cr_assert(h != NULL && s != NULL);
        cr_assert_geq(atoi(h + 37), 2, "%s", h);
        cr_assert_geq(atoi(s + 34), 1, "no session was resumed: %.300s", s);
        ts_resp_free(&r);
    }
    passed = 1;
}

/* A refused upstream certificate: 502 and a log line naming the reason. */
static void refused(const char *cert, const char *key, const char *why)
{
    struct ts_resp r;
    char *log;

    start_https(cert, key, 0, NULL);
    cr_assert_eq(plain_get("/f", &r), 502);
    ts_resp_free(&r);
    log = file_text(px.proc.log, 3000, why);
    cr_assert(log != NULL && strstr(log, why) != NULL, "no '%s' in the log: %s", why, log);
    free(log);
    passed = 1;
}

Test(tls, expired_upstream_certificate_refused)
{
    refused("expired.pem", "expired.key", "TLS certificate refused: certificate has expired");
}

Test(tls, wrong_name_upstream_certificate_refused)
{
    refused("wrong.pem", "wrong.key", "TLS certificate refused: hostname mismatch");
}

Test(tls, mtls_to_the_upstream)
{
    struct ts_resp r;
    char more[2800];

    init();
    snprintf(more, sizeof more, "upstream_cert = %s\nupstream_key = %s\n", certs("client.pem"),
             certs("client.key"));
    start_https("server.pem", "server.key", 1, more);
    cr_assert_eq(plain_get("/f", &r), 200, "nginx refused our client certificate");
    ts_resp_free(&r);
    passed = 1;
}

Test(tls, mtls_to_the_upstream_without_a_certificate_refused_by_it)
{
    struct ts_resp r;

    start_https("server.pem", "server.key", 1, NULL);
    cr_assert_eq(plain_get("/f", &r), 400, "nginx served without a client certificate");
    cr_assert(strstr(r.body, "No required SSL certificate was sent") != NULL, "%s", r.body);
    ts_resp_free(&r);
    passed = 1;
}

/* The reload test's client loop: a new TLS connection per request. */
struct loop {
    volatile int stop;
    int ok, failed;
    char first_failure[256];
};

static void *client_loop(void *arg)
{
    struct loop *l = arg;
    static const char get[] = "GET /objects/r/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

    for (int i = 0; i < 5000 && !l->stop; i++) {
        int st = tls_request(NULL, NULL, get, NULL);
        if (st == 200) {
            l->ok++;
        } else {
            if (l->failed++ == 0)
                snprintf(l->first_failure, sizeof l->first_failure, "request %d: %d", i, st);
        }
    }
    return NULL;
}

/* A new server certificate (O=rotated) and key, moved over server.pem and
 * server.key. */
static void rotate_cert_files(void)
{
    char cmd[4096], *s;

    snprintf(cmd, sizeof cmd,
             "cd %s && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout new.key -out new.csr -subj '/O=rotated/CN=localhost' 2>/dev/null && "
             "openssl x509 -req -in new.csr -CA ca.pem -CAkey ca.key -set_serial 77 -days 2 "
             "-extfile server.ext -out new.pem 2>/dev/null && mv new.pem server.pem && "
             "mv new.key server.key && echo ok",
             px.tls_dir);
    s = run(cmd);
    cr_assert_str_eq(s, "ok\n", "%s", s);
    free(s);
}

static char *served_subject(void)
{
    char cmd[2048];

    snprintf(cmd, sizeof cmd,
             "timeout 10 openssl s_client -connect 127.0.0.1:%d -CAfile %s </dev/null 2>/dev/null"
             " | openssl x509 -noout -subject",
             px.port, certs("ca.pem"));
    return run(cmd);
}

Test(tls, certificates_reload_on_sighup_without_a_failed_request)
{
    static const char get[] = "GET /objects/r/x HTTP/1.1\r\nHost: a\r\n\r\n";
    struct loop l;
    pthread_t th;
    char cmd[4096], *s, *log;
    struct ts_resp r;
    int kept;

    start_listener(NULL, NULL);
    memset(&l, 0, sizeof l);
    kept = ts_tls_connect(px.port, certs("ca.pem"), NULL, NULL);
    cr_assert_geq(kept, 0);
    ts_send_all(kept, get, sizeof(get) - 1);
    cr_assert_eq(ts_http_read(kept, &r, 5000, 0), 0);
    cr_assert_eq(r.status, 200);
    ts_resp_free(&r);
    s = served_subject();
    cr_assert(strstr(s, "CN = localhost") != NULL && strstr(s, "rotated") == NULL, "%s", s);
    free(s);
    cr_assert_eq(pthread_create(&th, NULL, client_loop, &l), 0);
    ts_sleep_ms(300);
    /* A new certificate and key, moved into place, then SIGHUP. */
    rotate_cert_files();
    cr_assert_eq(ts_proc_signal(&px.proc, SIGHUP), 0);
    ts_sleep_ms(500);
    s = served_subject();
    cr_assert(strstr(s, "O = rotated") != NULL, "new connections do not get the new cert: %s", s);
    free(s);
    /* A bad key: the reload is refused, the rotated certificate stays. */
    snprintf(cmd, sizeof cmd, "cd %s && cp server.key good.key && echo garbage > server.key",
             px.tls_dir);
    free(run(cmd));
    cr_assert_eq(ts_proc_signal(&px.proc, SIGHUP), 0);
    log = file_text(px.proc.log, 3000, "keeping the previous certificates");
    cr_assert(log != NULL && strstr(log, "keeping the previous certificates") != NULL, "%s", log);
    free(log);
    ts_sleep_ms(300);
    s = served_subject();
    cr_assert(strstr(s, "O = rotated") != NULL, "bad key not refused: %s", s);
    free(s);
    l.stop = 1;
    pthread_join(th, NULL);
    cr_assert_eq(l.failed, 0, "%d of %d requests failed (first: %s)", l.failed, l.ok + l.failed,
                 l.first_failure);
    cr_assert_gt(l.ok, 20, "the client loop hardly ran (%d)", l.ok);
    /* The connection from before the reload still works. */
    ts_send_all(kept, get, sizeof(get) - 1);
    cr_assert_eq(ts_http_read(kept, &r, 5000, 0), 0, "the old connection was dropped");
    cr_assert_eq(r.status, 200);
    ts_resp_free(&r);
    close(kept);
    cr_assert_eq(metric("fence_tls_reloads_total"), 1);
    cr_assert_eq(metric("fence_tls_reload_failures_total"), 1);
    passed = 1;
}

/* ---- certificates reread on POST /reload ---------------------------------- */

/* POST /reload on the admin listener (over TLS, as the data one); returns
 * the status, the body in body (malloc'd) when not NULL. */
static int post_reload(char **body)
{
    int fd = ts_tls_connect(px.admin_port, certs("ca.pem"), NULL, NULL);
    struct ts_resp r;
    char req[512];
    int st = 0;

    cr_assert_geq(fd, 0, "admin listener does not speak TLS");
    snprintf(req, sizeof req,
             "POST /reload HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\n"
             "Content-Length: 0\r\nConnection: close\r\n\r\n",
             "fence-test-admin-secret");
    ts_send_all(fd, req, strlen(req));
    if (ts_http_read(fd, &r, 10000, 0) == 0) {
        st = r.status;
        if (body != NULL)
            *body = strdup(r.body != NULL ? r.body : "");
        ts_resp_free(&r);
    }
    close(fd);
    return st;
}

/* The admin secret POST /reload needs, in the proxy dir; the [proxy] line. */
static const char *admin_secret_conf(void)
{
    static char line[1400];
    char path[1300];
    FILE *f;

    snprintf(path, sizeof path, "%s/admin.secret", px.dir);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("fence-test-admin-secret\n", f);
    fclose(f);
    cr_assert_eq(chmod(path, 0600), 0);
    snprintf(line, sizeof line, "admin_token_file = %s\n", path);
    return line;
}

Test(tls, certificates_reread_on_post_reload_and_a_bad_key_keeps_the_old)
{
    char cmd[2048], *s, *body = NULL, *log;

    init();
    start_listener(admin_secret_conf(), NULL);
    s = served_subject();
    cr_assert(strstr(s, "CN = localhost") != NULL && strstr(s, "rotated") == NULL, "%s", s);
    free(s);
    rotate_cert_files();
    cr_assert_eq(post_reload(&body), 200, "%s", body);
    cr_assert(strstr(body, "reloaded: generation 2") != NULL, "%s", body);
    free(body);
    s = served_subject();
    cr_assert(strstr(s, "O = rotated") != NULL, "POST /reload did not reread the certificate: %s",
              s);
    free(s);
    /* A bad key: refused with the reason, the rotated certificate stays. */
    snprintf(cmd, sizeof cmd, "cd %s && echo garbage > server.key", px.tls_dir);
    free(run(cmd));
    cr_assert_eq(post_reload(&body), 400, "%s", body);
    cr_assert(strstr(body, "configuration applied, but TLS reload (listeners): key ") != NULL &&
                  strstr(body, "keeping the previous certificates") != NULL,
              "%s", body);
    free(body);
    log = file_text(px.proc.log, 3000, "keeping the previous certificates");
    cr_assert(log != NULL && strstr(log, "keeping the previous certificates") != NULL, "%s", log);
    free(log);
    s = served_subject();
    cr_assert(strstr(s, "O = rotated") != NULL, "bad key not refused: %s", s);
    free(s);
    cr_assert_eq(metric("fence_tls_reloads_total"), 1);
    cr_assert_eq(metric("fence_tls_reload_failures_total"), 1);
    cr_assert_eq(metric("fence_config_generation"), 3, "the configuration part was not applied");
    passed = 1;
}

/* ---- resumption by session tickets ---------------------------------------- */

/* openssl s_client to the data port with protocol ver ("-tls1_3" or
 * "-tls1_2"), sending one request; sess_out/sess_in are file names in the
 * tls dir or NULL. Returns 1 when the session was resumed ("Reused,"), 0
 * when it was a new one ("New,"), -1 when neither line came. */
static int s_client_session(const char *ver, const char *sess_out, const char *sess_in)
{
    char cmd[4096], opt[2600] = "", *out;
    int rc = -1;

    if (sess_out != NULL)
        snprintf(opt, sizeof opt, "-sess_out %s", certs(sess_out));
    if (sess_in != NULL)
        snprintf(opt + strlen(opt), sizeof opt - strlen(opt), " -sess_in %s", certs(sess_in));
    /* -ign_eof: s_client reads until the proxy closes, so the TLS 1.3
     * tickets that follow the handshake are in the saved session. */
    snprintf(cmd, sizeof cmd,
             "printf 'GET /objects/a HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n' | "
             "timeout 10 openssl s_client %s -connect 127.0.0.1:%d -CAfile %s %s -ign_eof 2>&1",
             ver, px.port, certs("ca.pem"), opt);
    out = run(cmd);
    if (strstr(out, "\nReused, TLSv1.") != NULL)
        rc = 1;
    else if (strstr(out, "\nNew, TLSv1.") != NULL)
        rc = 0;
    if (rc < 0 || strstr(out, "HTTP/1.1 200") == NULL)
        cr_log_error("s_client: %s", out);
    free(out);
    return rc;
}

/* Polls the rotation counter until it reaches want (each poll is a TLS
 * handshake to the admin listener, which makes a ticket: the key is brought
 * to the current period then). Returns the value reached. */
static int wait_rotations(int want, int wait_ms)
{
    long long deadline = ts_now_ms() + wait_ms;
    int v;

    while ((v = metric("fence_tls_ticket_key_rotations_total")) < want && ts_now_ms() < deadline)
        ts_sleep_ms(100);
    return v;
}

/* With the session cache off, a resumption can only come from a ticket. */
Test(tls, session_tickets_resume_and_the_previous_key_is_accepted_one_period)
{
    int resumed;

    start_listener(NULL, "session_cache = 0\nticket_key_rotate = 4s\n");
    cr_assert_eq(s_client_session("-tls1_3", "t13", NULL), 0);
    cr_assert_eq(s_client_session("-tls1_2", "t12", NULL), 0);
    cr_assert_eq(s_client_session("-tls1_3", NULL, "t13"), 1, "TLS 1.3 ticket not resumed");
    cr_assert_eq(s_client_session("-tls1_2", NULL, "t12"), 1, "TLS 1.2 ticket not resumed");
    resumed = metric("fence_tls_resumed_total");
    cr_assert_eq(resumed, 2);
    /* The key made at the first ticket; its period ends within 4 s. */
    cr_assert_eq(wait_rotations(1, 0), 1);
    cr_assert_eq(wait_rotations(2, 8000), 2, "no rotation on schedule");
    /* Now the tickets' key is the previous one: still accepted. */
    cr_assert_eq(s_client_session("-tls1_3", NULL, "t13"), 1, "previous key refused (1.3)");
    cr_assert_eq(s_client_session("-tls1_2", NULL, "t12"), 1, "previous key refused (1.2)");
    /* One period later it is gone: a full handshake. */
    cr_assert_eq(wait_rotations(3, 8000), 3, "no second rotation on schedule");
    cr_assert_eq(s_client_session("-tls1_3", NULL, "t13"), 0, "a ticket two keys old resumed");
    cr_assert_eq(s_client_session("-tls1_2", NULL, "t12"), 0, "a ticket two keys old resumed");
    cr_assert_eq(metric("fence_tls_resumed_total"), resumed + 2);
    passed = 1;
}

/* A client that resumes with the session of its last connection (wrk,
 * browsers) resumes every time: a TLS 1.3 resumption carries a new ticket
 * (RFC 8446 C.4: tickets are for one use), else every other handshake is a
 * full one. */
Test(tls, a_resumed_tls13_session_gets_a_new_ticket)
{
    start_listener(NULL, "session_cache = 0\n");
    cr_assert_eq(s_client_session("-tls1_3", "r0", NULL), 0);
    cr_assert_eq(s_client_session("-tls1_3", "r1", "r0"), 1, "first resumption");
    cr_assert_eq(s_client_session("-tls1_3", "r2", "r1"), 1,
                 "the resumed session carried no ticket to resume again");
    cr_assert_eq(s_client_session("-tls1_3", NULL, "r2"), 1, "third resumption");
    cr_assert_eq(metric("fence_tls_resumed_total"), 3);
    passed = 1;
}

Test(tls, ticket_key_rotates_on_every_reload)
{
    init();
    start_listener(admin_secret_conf(), "session_cache = 0\nticket_key_rotate = 1h\n");
    cr_assert_eq(s_client_session("-tls1_3", "before", NULL), 0);
    cr_assert_eq(s_client_session("-tls1_3", NULL, "before"), 1);
    cr_assert_eq(ts_proc_signal(&px.proc, SIGHUP), 0);
    cr_assert_eq(wait_rotations(2, 5000), 2, "SIGHUP did not rotate the ticket key");
    /* The key from before the reload is the previous one: accepted. */
    cr_assert_eq(s_client_session("-tls1_3", NULL, "before"), 1, "ticket refused after 1 reload");
    cr_assert_eq(s_client_session("-tls1_3", "between", NULL), 0);
    cr_assert_eq(post_reload(NULL), 200);
    cr_assert_eq(wait_rotations(3, 5000), 3, "POST /reload did not rotate the ticket key");
    cr_assert_eq(s_client_session("-tls1_3", NULL, "before"), 0,
                 "a ticket from two reloads ago resumed");
    cr_assert_eq(s_client_session("-tls1_3", NULL, "between"), 1,
                 "the ticket from between the reloads was refused");
    passed = 1;
}

Test(tls, session_tickets_off_leaves_the_cache)
{
    start_listener(NULL, "session_tickets = off\n");
    cr_assert_eq(s_client_session("-tls1_3", "c13", NULL), 0);
    cr_assert_eq(s_client_session("-tls1_2", "c12", NULL), 0);
    cr_assert_eq(s_client_session("-tls1_3", NULL, "c13"), 1, "stateful TLS 1.3 ticket");
    cr_assert_eq(s_client_session("-tls1_2", NULL, "c12"), 1, "TLS 1.2 session id");
    cr_assert_eq(metric("fence_tls_ticket_key_rotations_total"), 0, "a ticket key was made");
    passed = 1;
}

/* ---- OCSP stapling ------------------------------------------------------------ */

/* An OCSP response (DER) into the tls dir as out, made by `openssl ocsp`
 * as the CA's responder, for the certificate cert ("server" or "wrong"):
 * good, or revoked when revoked is set. Written under a temporary name and
 * moved into place. */
static void make_ocsp(const char *cert, int revoked, const char *out)
{
    char cmd[4096], *s;

    snprintf(cmd, sizeof cmd,
             "cd %s && ser=$(openssl x509 -in %s.pem -noout -serial | cut -d= -f2) && "
             "end=$(date -u -d \"$(openssl x509 -in %s.pem -noout -enddate | cut -d= -f2)\" "
             "+%%y%%m%%d%%H%%M%%SZ) && rev=%s && "
             "printf '%%s\\t%%s\\t%%s\\t%%s\\tunknown\\t/CN=x\\n' %s \"$end\" \"$rev\" \"$ser\" "
             "> ocsp-index.txt && "
             "openssl ocsp -issuer ca.pem -cert %s.pem -no_nonce -reqout ocsp-req.der 2>&1 && "
             "openssl ocsp -index ocsp-index.txt -rsigner ca.pem -rkey ca.key -CA ca.pem "
             "-reqin ocsp-req.der -respout %s.tmp -ndays 1 >/dev/null 2>&1 && mv %s.tmp %s && "
             "echo ok",
             px.tls_dir, cert, cert, revoked ? "$(date -u +%y%m%d%H%M%SZ)" : "''",
             revoked ? "R" : "V", cert, out, out, out);
    s = run(cmd);
    cr_assert(strstr(s, "ok\n") != NULL, "openssl ocsp: %s", s);
    free(s);
}

/* Waits until the metric reaches want; returns 1, or 0 at the deadline. */
static int wait_metric_ge(const char *name, int want, int wait_ms)
{
    long long deadline = ts_now_ms() + wait_ms;

    while (metric(name) < want) {
        if (ts_now_ms() >= deadline)
            return 0;
        ts_sleep_ms(50);
    }
    return 1;
}

/* s_client with -status (ver: "-tls1_3" or "-tls1_2"): its output. */
static char *s_client_status(const char *ver, int ask)
{
    char cmd[2048];

    snprintf(cmd, sizeof cmd,
             "timeout 10 openssl s_client %s -connect 127.0.0.1:%d -CAfile %s %s </dev/null 2>&1",
             ver, px.port, certs("ca.pem"), ask ? "-status" : "");
    return run(cmd);
}

Test(tls, ocsp_response_stapled_and_reread_on_reload)
{
    char more[1400], cmd[2048], *out, *log;

    init();
    make_ocsp("server", 0, "ocsp.der");
    /* The chain file carries the issuer: the response is matched by the
     * issuer's name and key and the serial (the other test: serial only). */
    snprintf(cmd, sizeof cmd, "cd %s && cat server.pem ca.pem > chain.pem", px.tls_dir);
    free(run(cmd));
    listener_cert = "chain.pem";
    snprintf(more, sizeof more, "ocsp_file = %s\n", certs("ocsp.der"));
    start_listener(NULL, more);
    for (int v = 0; v < 2; v++) {
        out = s_client_status(v == 0 ? "-tls1_3" : "-tls1_2", 1);
        cr_assert(strstr(out, "OCSP Response Status: successful") != NULL &&
                      strstr(out, "Cert Status: good") != NULL,
                  "no good staple (%s): %s", v == 0 ? "TLS 1.3" : "TLS 1.2", out);
        free(out);
    }
    /* A client that does not ask gets none. */
    out = s_client_status("-tls1_3", 0);
    cr_assert(strstr(out, "Verify return code: 0 (ok)") != NULL, "%s", out);
    free(out);
    cr_assert_eq(metric("fence_tls_ocsp_stapled_total"), 2);
    /* A new response (revoked), moved into place: stapled after SIGHUP. */
    make_ocsp("server", 1, "ocsp.der");
    cr_assert_eq(ts_proc_signal(&px.proc, SIGHUP), 0);
    cr_assert_eq(wait_metric_ge("fence_tls_reloads_total", 1, 5000), 1);
    out = s_client_status("-tls1_3", 1);
    cr_assert(strstr(out, "Cert Status: revoked") != NULL, "the new response is not stapled: %s",
              out);
    free(out);
    /* A broken file: refused, the last good response stays. */
    snprintf(cmd, sizeof cmd, "cd %s && echo garbage > ocsp.der", px.tls_dir);
    free(run(cmd));
    cr_assert_eq(ts_proc_signal(&px.proc, SIGHUP), 0);
    log = file_text(px.proc.log, 5000, "not a DER OCSP response; keeping the previous");
    cr_assert(log != NULL && strstr(log, "not a DER OCSP response; keeping the previous") != NULL,
              "%s", log);
    free(log);
    out = s_client_status("-tls1_3", 1);
    cr_assert(strstr(out, "Cert Status: revoked") != NULL, "the staple was lost: %s", out);
    free(out);
    passed = 1;
}

/* A response for another certificate (or none at all) is not stapled in
 * its place: the proxy does not start, and says why. */
Test(tls, ocsp_response_for_another_certificate_refused_at_start)
{
    char more[1400], cmd[4096], *out;
    const char *bin = ts_build_path("proxy/fenceproxy");

    init();
    make_ocsp("wrong", 0, "wrong-ocsp.der");
    up = ts_upstream_start();
    cr_assert_not_null(up);
    snprintf(more, sizeof more, "[tls]\ncert = %s\nkey = %s\nocsp_file = %s\n", certs("server.pem"),
             certs("server.key"), certs("wrong-ocsp.der"));
    cr_assert_eq(ts_proxy_write_conf(&px, ts_upstream_port(up), more), 0);
    snprintf(cmd, sizeof cmd, "timeout 20 %s -c %s 2>&1; echo rc=$?", bin, px.conf);
    out = run(cmd);
    cr_assert(strstr(out, "no status for the serial number of [tls] cert") != NULL &&
                  strstr(out, "rc=0") == NULL && strstr(out, "rc=124") == NULL,
              "%s", out);
    free(out);
    passed = 1;
}

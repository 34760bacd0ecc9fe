/* The audit trail under faults, through the real proxy (S7): on a full file
 * system (a small tmpfs mounted by the test) and with its directory removed
 * before a SIGHUP, every refusal is either a record in the file or counted
 * in a gap record, fence_audit_dropped_total equals the gap records' sum,
 * `fenceproxy audit verify` accepts the gaps and still catches an edit, and
 * the proxy's log stays small. With [audit] required = on, fenced requests
 * get 503 while records cannot be written, and are served again after. The
 * tests mount tmpfs and so must run as root: a failed mount fails the test. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ts_proc.h"
#include "ts_proxy.h"
#include "ts_upstream.h"

static struct ts_upstream *up;
static struct ts_proxy px;
static char mnt[1100];
static int mounted;

static void teardown(void)
{
    if (px.proc.pid > 0)
        ts_proxy_stop(&px, SIGTERM);
    if (mounted && umount2(mnt, MNT_DETACH) != 0)
        fprintf(stderr, "umount %s: %s\n", mnt, strerror(errno));
    mounted = 0;
    ts_proxy_cleanup(&px, 1);
    ts_upstream_stop(&up);
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Mounts a tmpfs of size bytes at px.dir/NAME. */
static void mount_tmpfs(const char *name, size_t size)
{
    char opts[64];

    snprintf(mnt, sizeof mnt, "%s/%s", px.dir, name);
    cr_assert_eq(mkdir(mnt, 0755), 0);
    snprintf(opts, sizeof opts, "size=%zu,mode=0755", size);
    if (mount("tmpfs", mnt, "tmpfs", 0, opts) != 0)
        cr_assert_fail("mount -t tmpfs -o %s %s: %s (this test needs root and mount(2))", opts,
                       mnt, strerror(errno));
    mounted = 1;
}

/* A fenced PUT without a token: 428 and one missing_token record. */
static int refuse(int i)
{
    char req[256];

    snprintf(req, sizeof req,
             "PUT /objects/r/f%d HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx", i);
    return ts_http_raw(px.port, req, strlen(req), NULL, 5000);
}

static int put_token(const char *token)
{
    char req[256];

    snprintf(req, sizeof req,
             "PUT /objects/r/a HTTP/1.1\r\nHost: t\r\nFencing-Token: %s\r\nContent-Length: 1\r\n"
             "\r\nx",
             token);
    return ts_http_raw(px.port, req, strlen(req), NULL, 5000);
}

static int healthz(char *body, size_t cap)
{
    struct ts_resp r;
    int st = ts_http_get(px.admin_port, "/healthz", &r);

    snprintf(body, cap, "%s", st > 0 && r.body != NULL ? r.body : "");
    if (st > 0)
        ts_resp_free(&r);
    return st;
}

/* Polls /healthz until its body starts with want (10 s). */
static void wait_health(const char *want)
{
    char body[256] = "";
    int64_t end = now_ms() + 10000;

    while (now_ms() < end) {
        healthz(body, sizeof body);
        if (strncmp(body, want, strlen(want)) == 0)
            return;
        usleep(20 * 1000);
    }
    cr_assert_fail("healthz never said '%s' (last: '%s')", want, body);
}

static double metric(const char *series);

/* Polls a metric until it is at least want (10 s): the writer thread
 * accounts for a record when it tries to write it, a moment later. */
static double wait_metric(const char *series, double want)
{
    int64_t end = now_ms() + 10000;
    double v;

    while ((v = metric(series)) < want && now_ms() < end)
        usleep(20 * 1000);
    return v;
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

/* Fills the file system of dir until a write fails; returns the filler. */
static void fill(const char *path)
{
    static char block[4096];
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int rounds = 0;

    cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
    memset(block, 'f', sizeof block);
    while (write(fd, block, sizeof block) > 0 && rounds++ < 100000)
        ;
    /* the tail of a block still fits in the page cache's last page */
    while (write(fd, block, 1) > 0 && rounds++ < 200000)
        ;
    cr_assert_eq(errno, ENOSPC, "filling %s: %s", path, strerror(errno));
    close(fd);
}

/* Counts the records of file(s): non-gap lines into *records, the sum of the
 * gap records' "lost" into *lost, the gap records into *gaps. */
static void count(const char *path, long *records, long *lost, long *gaps)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;

    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    while (getline(&line, &cap, f) > 0) {
        const char *g = strstr(line, "\"event\":\"gap\",\"lost\":");
        if (g != NULL) {
            *lost += strtol(g + 21, NULL, 10);
            (*gaps)++;
        } else {
            (*records)++;
        }
    }
    free(line);
    fclose(f);
}

/* Runs `fenceproxy audit verify ARGS`; output into out. Exit status. */
static int verify(const char *args, char *out, size_t cap)
{
    char cmd[4096], path[1100];
    FILE *f;
    size_t n;
    int st;

    snprintf(path, sizeof path, "%s/verify.out", px.dir);
    snprintf(cmd, sizeof cmd, "%s audit verify %s > %s 2>&1", ts_build_path("proxy/fenceproxy"),
             args, path);
    st = system(cmd);
    f = fopen(path, "r");
    cr_assert_not_null(f);
    n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    fclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Lines of the proxy's log that mention the audit. */
static long audit_log_lines(void)
{
    FILE *f = fopen(px.proc.log, "r");
    char *line = NULL;
    size_t cap = 0;
    long n = 0;

    cr_assert_not_null(f);
    while (getline(&line, &cap, f) > 0)
        n += strstr(line, "audit") != NULL;
    free(line);
    fclose(f);
    return n;
}

/* Replaces the first "f<digit>" path of a non-gap record in src with another
 * digit, into dst: an edit the chain must catch. */
static void edit_copy(const char *src, const char *dst)
{
    FILE *in = fopen(src, "r"), *out = fopen(dst, "w");
    char *line = NULL;
    size_t cap = 0;
    int done = 0, lineno = 0;

    cr_assert(in != NULL && out != NULL);
    while (getline(&line, &cap, in) > 0) {
        char *p = strstr(line, "/objects/r/f");
        lineno++;
        if (!done && lineno > 3 && p != NULL) {
            p[12] = p[12] == '9' ? '8' : (char)(p[12] + 1);
            done = 1;
        }
        fputs(line, out);
    }
    cr_assert(done, "no record to edit in %s", src);
    free(line);
    fclose(in);
    fclose(out);
}

Test(audit_faults, full_disk_loses_nothing_silently, .fini = teardown, .timeout = 120)
{
    char audit[1200], filler[1200], edited[1200], out[8192], body[256];
    long records = 0, lost = 0, gaps = 0, sent = 0;

    /* the mount must exist before the proxy opens the file: mount in a dir
     * made by ts_proxy_init, then start */
    up = NULL;
    cr_assert_eq(ts_proxy_init(&px, "auditfull"), 0);
    mount_tmpfs("fs", 256 * 1024);
    snprintf(audit, sizeof audit, "%s/audit.log", mnt);
    snprintf(px.audit, sizeof px.audit, "%.1000s", audit);
    up = ts_upstream_start();
    cr_assert_not_null(up);
    cr_assert_eq(ts_proxy_write_conf(&px, ts_upstream_port(up),
                                     "[route objects]\nprefix = /objects/\nresource = segments:2\n"),
                 0);
    cr_assert_eq(ts_proxy_start(&px), 0);

    for (int i = 0; i < 20; i++, sent++)
        cr_assert_eq(refuse(i), 428);
    wait_health("ok");
    snprintf(filler, sizeof filler, "%s/filler", mnt);
    usleep(300 * 1000); /* the 20 records reach the file before the disk fills */
    fill(filler);

    for (int i = 0; i < 1100; i++, sent++)
        cr_assert_eq(refuse(i), 428, "refusal %d", i);
    char want[256];
    cr_assert_eq(healthz(body, sizeof body), 200, "required = off: degraded, still 200");
    snprintf(want, sizeof want, "degraded: audit records cannot be written\n");
    cr_expect_str_eq(body, want);
    cr_expect_gt(wait_metric("fence_audit_dropped_total", 1001), 1000,
                 "the refusals on a full disk are counted");

    cr_assert_eq(unlink(filler), 0);
    wait_health("ok"); /* the writer's probe writes the gap record by itself */
    for (int i = 0; i < 10; i++, sent++)
        cr_assert_eq(refuse(i), 428);
    usleep(300 * 1000);
    double dropped = metric("fence_audit_dropped_total");
    cr_assert_eq(metric("fence_audit_records_total"), (double)sent);
    int st = ts_proxy_stop(&px, SIGTERM);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    count(audit, &records, &lost, &gaps);
    cr_expect_geq(gaps, 1);
    cr_expect_gt(lost, 1000);
    cr_expect_eq(records + lost, sent, "records %ld + lost %ld != sent %ld", records, lost, sent);
    cr_expect_eq((long)dropped, lost, "metric %.0f, gap records %ld", dropped, lost);
    cr_expect_leq(audit_log_lines(), 60, "the log about the loss is rate-limited");

    cr_expect_eq(verify(audit, out, sizeof out), 0, "%s", out);
    cr_expect(strstr(out, ": gap: ") != NULL, "%s", out);
    snprintf(want, sizeof want, "ok %ld records; %ld gap record(s): %ld record(s) lost",
             records + gaps, gaps, lost);
    cr_expect(strstr(out, want) != NULL, "want '%s' in:\n%s", want, out);

    snprintf(edited, sizeof edited, "%s/edited.log", px.dir);
    edit_copy(audit, edited);
    cr_expect_eq(verify(edited, out, sizeof out), 1, "an edit is still caught: %s", out);
    cr_expect(strstr(out, "chain broken") != NULL, "%s", out);
}

Test(audit_faults, removed_directory_then_sighup, .fini = teardown, .timeout = 120)
{
    char dir[1200], audit[1300], archived[1200], args[4000], out[8192], body[256];
    long records = 0, lost = 0, gaps = 0, sent = 0;

    up = NULL;
    cr_assert_eq(ts_proxy_init(&px, "auditrm"), 0);
    snprintf(dir, sizeof dir, "%s/auditdir", px.dir);
    cr_assert_eq(mkdir(dir, 0755), 0);
    snprintf(audit, sizeof audit, "%s/audit.log", dir);
    snprintf(px.audit, sizeof px.audit, "%.1000s", audit);
    up = ts_upstream_start();
    cr_assert_not_null(up);
    cr_assert_eq(ts_proxy_write_conf(&px, ts_upstream_port(up),
                                     "[route objects]\nprefix = /objects/\nresource = segments:2\n"),
                 0);
    cr_assert_eq(ts_proxy_start(&px), 0);

    for (int i = 0; i < 5; i++, sent++)
        cr_assert_eq(refuse(i), 428);
    usleep(300 * 1000);
    /* the operator keeps a copy, then the directory goes */
    snprintf(archived, sizeof archived, "%s/audit.archived", px.dir);
    snprintf(args, sizeof args, "cp %s %s && rm -r %s", audit, archived, dir);
    cr_assert_eq(system(args), 0);
    cr_assert_eq(ts_proc_signal(&px.proc, SIGHUP), 0);
    wait_health("degraded");
    for (int i = 0; i < 300; i++, sent++)
        cr_assert_eq(refuse(i), 428);
    cr_assert_eq(healthz(body, sizeof body), 200);
    cr_assert_eq(wait_metric("fence_audit_dropped_total", 300), 300);

    cr_assert_eq(mkdir(dir, 0755), 0);
    wait_health("ok");
    for (int i = 0; i < 5; i++, sent++)
        cr_assert_eq(refuse(i), 428);
    usleep(300 * 1000);
    int st = ts_proxy_stop(&px, SIGTERM);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    count(archived, &records, &lost, &gaps);
    count(audit, &records, &lost, &gaps);
    cr_expect_eq(gaps, 1);
    cr_expect_eq(lost, 300);
    cr_expect_eq(records + lost, sent, "records %ld + lost %ld != sent %ld", records, lost, sent);
    snprintf(args, sizeof args, "%s %s", archived, audit);
    cr_expect_eq(verify(args, out, sizeof out), 0, "%s", out);
    cr_expect(strstr(out, "gap: 300 record(s) lost") != NULL, "%s", out);
    cr_expect(strstr(out, "removed") != NULL, "the reason is told: %s", out);
}

Test(audit_faults, required_refuses_fenced_requests_while_unwritable, .fini = teardown,
     .timeout = 120)
{
    char audit[1200], filler[1200], body[256];
    struct ts_resp r;

    up = NULL;
    cr_assert_eq(ts_proxy_init(&px, "auditreq"), 0);
    mount_tmpfs("fs", 128 * 1024);
    snprintf(audit, sizeof audit, "%s/audit.log", mnt);
    snprintf(px.audit, sizeof px.audit, "%.1000s", audit);
    up = ts_upstream_start();
    cr_assert_not_null(up);
    /* ts_proxy_write_conf writes [audit] itself: add required to it */
    cr_assert_eq(ts_proxy_write_conf(&px, ts_upstream_port(up),
                                     "[route objects]\nprefix = /objects/\n"
                                     "resource = segments:2\n"),
                 0);
    FILE *f = fopen(px.conf, "r");
    cr_assert_not_null(f);
    static char text[16384];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    char *a = strstr(text, "[audit]\n");
    cr_assert_not_null(a);
    f = fopen(px.conf, "w");
    fprintf(f, "%.*s[audit]\nrequired = on\n%s", (int)(a - text), text, a + 8);
    fclose(f);
    cr_assert_eq(ts_proxy_start(&px), 0);

    cr_assert_eq(put_token("10"), 200);
    cr_assert_eq(put_token("3"), 409); /* audited */
    usleep(300 * 1000);
    snprintf(filler, sizeof filler, "%s/filler", mnt);
    fill(filler);
    /* the next record cannot be written: from then on, 503 */
    for (int i = 0; i < 20 && healthz(body, sizeof body) != 503; i++)
        cr_assert(put_token("4") == 409 || put_token("4") == 503);
    cr_assert_eq(healthz(body, sizeof body), 503, "required = on: healthz 503: %s", body);
    cr_expect_eq(put_token("11"), 503, "a fenced write is refused, not served unaudited");
    cr_expect_eq(refuse(1), 503);
    cr_assert_eq(ts_http_get(px.port, "/objects/r/a", &r), 200, "unfenced reads still pass");
    ts_resp_free(&r);
    cr_assert_eq(unlink(filler), 0);
    wait_health("ok");
    cr_expect_eq(put_token("11"), 200);
    cr_expect_eq(put_token("5"), 409);
}

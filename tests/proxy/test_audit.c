/* px_audit and px_auditcli: the exact record format, escaping of hostile
 * bytes (every line stays one line of valid JSON), the hash chain across
 * restarts and rotations, `audit verify` catching edits, deletions,
 * insertions and reordering at the right line, drops that leave no gap in
 * the chain, and `audit tail`. */
#include <criterion/criterion.h>

#include "ts_proc.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "px_audit.h"
#include "px_auditcli.h"

#define EMPTY_SHA "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static char dir[64];

static void setup(void)
{
    strcpy(dir, "/tmp/fence-audit-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}

static void in_dir(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

/* The whole file (caller frees), asserting that it can be read. */
static char *slurp(const char *path, size_t *len)
{
    size_t n;
    char *buf = ts_read_file(path, &n);

    cr_assert_not_null(buf, "%s: cannot read", path);
    if (len != NULL)
        *len = n;
    return buf;
}

static void spit(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");

    cr_assert_not_null(f);
    cr_assert_eq(fwrite(text, 1, strlen(text), f), strlen(text));
    cr_assert_eq(fclose(f), 0);
}

/* Runs px_auditcli_main(argv) with stdout captured into out (NUL-ended). */
static int run_cli(char *out, size_t outlen, int argc, const char **argv)
{
    char cap[128], errp[128];
    int saved, saved_err, fd, efd, rc;

    /* stderr goes to a file too, to keep the test output readable. */
    in_dir(cap, sizeof cap, "cli.out");
    in_dir(errp, sizeof errp, "cli.err");
    fflush(stdout);
    fflush(stderr);
    saved = dup(1);
    saved_err = dup(2);
    fd = open(cap, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    efd = open(errp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    cr_assert(saved >= 0 && saved_err >= 0 && fd >= 0 && efd >= 0);
    cr_assert_eq(dup2(fd, 1), 1);
    cr_assert_eq(dup2(efd, 2), 2);
    close(fd);
    close(efd);
    rc = px_auditcli_main(argc, (char **)argv);
    fflush(stdout);
    fflush(stderr);
    dup2(saved, 1);
    dup2(saved_err, 2);
    close(saved);
    close(saved_err);

    size_t n;
    char *text = slurp(cap, &n);
    cr_assert_lt(n, outlen);
    memcpy(out, text, n + 1);
    free(text);
    return rc;
}

static int verify(char *out, size_t outlen, const char *f1, const char *f2)
{
    const char *argv[] = {"audit", "verify", f1, f2, NULL};
    return run_cli(out, outlen, f2 ? 4 : 3, argv);
}

static struct px_audit_event simple_event(void)
{
    struct px_audit_event ev = {
        .event = "stale_token",
        .route = "objects",
        .resource = "/objects/user42", .resource_len = 15,
        .token_present = 1, .token_is_number = 1, .token = 7,
        .highest = 8,
        .method = "PUT", .method_len = 3,
        .path = "/objects/user42/a.txt", .path_len = 21,
        .client = "127.0.0.1:50312",
        .request_id = "r-1", .request_id_len = 3,
        .ts_ms = 1795741323456ULL,
    };
    return ev;
}

static char *format(const struct px_audit_event *ev, const char *prev)
{
    char *line = NULL;
    size_t len = 0;

    cr_assert_eq(px_audit_format(ev, prev, &line, &len), 0);
    cr_assert_eq(strlen(line), len);
    return line;
}

/* ---- format ------------------------------------------------------------- */

Test(audit_format, exact_line_for_a_stale_write)
{
    struct px_audit_event ev = simple_event();
    char *line = format(&ev, EMPTY_SHA);

    cr_expect_str_eq(line,
        "{\"ts\":\"2026-11-27T01:02:03.456Z\",\"event\":\"stale_token\",\"route\":\"objects\","
        "\"resource\":\"/objects/user42\",\"token\":7,\"highest\":8,\"method\":\"PUT\","
        "\"path\":\"/objects/user42/a.txt\",\"client\":\"127.0.0.1:50312\","
        "\"request_id\":\"r-1\",\"prev\":\"" EMPTY_SHA "\"}");
    free(line);
}

Test(audit_format, missing_malformed_and_forwarded_for)
{
    struct px_audit_event ev = simple_event();
    char *line;

    ev.event = "missing_token";
    ev.token_present = 0;
    ev.ts_ms = 5; /* the epoch, 5 ms in: zero-padded milliseconds */
    line = format(&ev, EMPTY_SHA);
    cr_expect_neq(strstr(line, "{\"ts\":\"1970-01-01T00:00:00.005Z\",\"event\":\"missing_token\""),
                  NULL, "%s", line);
    cr_expect_neq(strstr(line, ",\"token\":null,\"highest\":8,"), NULL, "%s", line);
    cr_expect_null(strstr(line, "forwarded_for"));
    free(line);

    ev.event = "malformed_token";
    ev.token_present = 1;
    ev.token_is_number = 0;
    ev.token_raw = "007";
    ev.token_raw_len = 3;
    ev.forwarded_for = "10.0.0.1, 10.0.0.2";
    ev.forwarded_for_len = 18;
    line = format(&ev, EMPTY_SHA);
    cr_expect_neq(strstr(line, ",\"token\":\"007\",\"highest\":8,"), NULL, "%s", line);
    cr_expect_neq(strstr(line, "\"client\":\"127.0.0.1:50312\",\"forwarded_for\":\"10.0.0.1, "
                               "10.0.0.2\",\"request_id\":\"r-1\",\"prev\":"),
                  NULL, "%s", line);
    free(line);

    ev.event = "inflight_timeout";
    ev.token_is_number = 1;
    ev.token = UINT64_MAX;
    ev.highest = UINT64_MAX;
    line = format(&ev, EMPTY_SHA);
    cr_expect_neq(strstr(line, "\"token\":18446744073709551615,\"highest\":18446744073709551615"),
                  NULL, "%s", line);
    free(line);
}

/* Checks that line is one line of valid flat JSON with the fields in the
 * contract's order, and returns the decoded value of key. */
static char *decoded(const char *line, const char *key, size_t *len)
{
    struct px_jfield f[32];
    size_t n;
    char *v;

    for (const unsigned char *p = (const unsigned char *)line; *p; p++)
        cr_assert(*p >= 0x20 && *p != 0x7F, "raw byte 0x%02x in %s", *p, line);
    cr_assert_eq(px_auditcli_json_parse(line, strlen(line), f, 32, &n), 0, "not JSON: %s", line);
    const struct px_jfield *m = px_auditcli_json_get(f, n, key);
    cr_assert_not_null(m, "no %s in %s", key, line);
    cr_assert_eq(m->type, PX_J_STRING);
    cr_assert_eq(px_auditcli_json_unescape(m->val, m->val_len, &v, len), 0);
    return v;
}

struct hostile {
    const char *s;
    size_t len;
    int valid_utf8; /* decodes back to the same bytes */
};

#define H(lit, ok) {lit, sizeof lit - 1, ok}
static const struct hostile hostile[] = {
    H("/a\"b", 1),
    H("/a\\b\\", 1),
    H("/a\nb", 1),
    H("/a\r\nb", 1),
    H("\"},\"event\":\"forged\",\"x\":\"", 1),
    H("/\x01\x02\x1b[31mred\x1f", 1),
    H("/del\x7f", 1),
    H("/tab\there", 1),
    H("/caf\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x98\x80", 1),
    H("/bad\xff\xfe", 0),
    H("/lone\xc3", 0),
    H("/overlong\xc0\xaf", 0),
    H("/surrogate\xed\xa0\x80", 0),
    H("/toobig\xf4\x90\x80\x80", 0),
    H("/cut\xe2\x82", 0),
    H("\\u0000\\", 1),
    H("", 1),
};
#undef H

Test(audit_format, hostile_bytes_stay_one_valid_json_line)
{
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        const struct hostile *h = &hostile[i];
        struct px_audit_event ev = simple_event();
        ev.path = h->s;
        ev.path_len = h->len;
        ev.resource = h->s;
        ev.resource_len = h->len;
        ev.method = h->s;
        ev.method_len = h->len;
        ev.request_id = h->s;
        ev.request_id_len = h->len;
        ev.forwarded_for = h->s;
        ev.forwarded_for_len = h->len;
        ev.token_is_number = 0;
        ev.token_raw = h->s;
        ev.token_raw_len = h->len;

        char *line = format(&ev, EMPTY_SHA);
        cr_expect_null(strchr(line, '\n'), "case %zu", i);
        const char *keys[] = {"path", "resource", "method", "request_id", "forwarded_for",
                              "token"};
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
            size_t len;
            char *v = decoded(line, keys[k], &len);
            if (h->valid_utf8) {
                cr_expect_eq(len, h->len, "case %zu %s", i, keys[k]);
                cr_expect_eq(memcmp(v, h->s, h->len), 0, "case %zu %s", i, keys[k]);
            }
            free(v);
        }
        /* The injected text stays inside its string: one event field only. */
        size_t elen;
        char *event = decoded(line, "event", &elen);
        cr_expect_str_eq(event, "stale_token", "case %zu", i);
        free(event);
        char *prev = decoded(line, "prev", &elen);
        cr_expect_str_eq(prev, EMPTY_SHA);
        free(prev);
        free(line);
    }
}

/* ---- the JSON reader used by verify and the tests ------------------------ */

Test(audit_json, accepts_and_refuses)
{
    static const struct { const char *s; int ok; } cases[] = {
        {"{}", 1},
        {" {\"a\":1} ", 1},
        {"{\"a\":-0.5e+3,\"b\":null,\"c\":true,\"d\":\"x\\u00e9\\n\"}", 1},
        {"{\"a\":1,}", 0},
        {"{\"a\":01}", 0},
        {"{\"a\":+1}", 0},
        {"{\"a\":1.}", 0},
        {"{\"a\":\"\x01\"}", 0},
        {"{\"a\":\"\\x\"}", 0},
        {"{\"a\":\"\\u12\"}", 0},
        {"{\"a\":\"\xff\"}", 0},
        {"{\"a\":[1]}", 0},
        {"{\"a\":{}}", 0},
        {"{\"a\":1,\"a\":2}", 0},
        {"{\"a\":1,\"\\u0061\":2}", 0},
        {"{\"a\":1}x", 0},
        {"{\"a\" 1}", 0},
        {"", 0},
        {"{", 0},
        {"nul", 0},
    };
    struct px_jfield f[8];
    size_t n;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = px_auditcli_json_parse(cases[i].s, strlen(cases[i].s), f, 8, &n);
        cr_expect_eq(rc == 0, cases[i].ok, "'%s': rc %d", cases[i].s, rc);
    }
}

Test(audit_json, unescapes_to_utf8)
{
    const char *raw = "a\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\u20ac\\ud83d\\ude00\\ud800x\\u0000";
    const char want[] = "a\"\\/\b\f\n\r\t\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xef\xbf\xbdx";
    char *out;
    size_t len;

    cr_assert_eq(px_auditcli_json_unescape(raw, strlen(raw), &out, &len), 0);
    cr_expect_eq(len, sizeof want); /* the trailing \u0000 is one NUL byte */
    cr_expect_eq(memcmp(out, want, sizeof want), 0);
    free(out);
}

/* ---- chain ------------------------------------------------------------- */

/* Writes n records to path through px_audit; events differ by token. */
static void write_records(const char *path, int first, int n)
{
    char err[256], p[64];
    struct px_audit *a = px_audit_open(path, err, sizeof err);

    cr_assert_not_null(a, "%s", err);
    for (int i = first; i < first + n; i++) {
        struct px_audit_event ev = simple_event();
        snprintf(p, sizeof p, "/objects/user42/f%d", i);
        ev.path = p;
        ev.path_len = strlen(p);
        ev.token = (uint64_t)i;
        ev.ts_ms += (uint64_t)i;
        cr_assert_eq(px_audit_record(a, &ev), 0);
    }
    cr_expect_eq(px_audit_dropped(a), 0);
    px_audit_close(&a);
    cr_expect_null(a);
}

/* Splits text into lines (in place); returns how many. */
static size_t split_lines(char *text, char **lines, size_t max)
{
    size_t n = 0;

    for (char *p = text; *p && n < max;) {
        char *nl = strchr(p, '\n');
        cr_assert_not_null(nl, "last line without newline");
        *nl = '\0';
        lines[n++] = p;
        p = nl + 1;
    }
    return n;
}

static void write_lines(const char *path, char **lines, size_t n)
{
    FILE *f = fopen(path, "wb");

    cr_assert_not_null(f);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s\n", lines[i]);
    cr_assert_eq(fclose(f), 0);
}

Test(audit_chain, records_chain_and_verify, .init = setup, .fini = teardown)
{
    char path[128], out[512], *lines[16];

    in_dir(path, sizeof path, "audit.log");
    write_records(path, 1, 10);

    char *text = slurp(path, NULL);
    size_t n = split_lines(text, lines, 16);
    cr_assert_eq(n, 10);
    char expect[65] = EMPTY_SHA;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        char *prev = decoded(lines[i], "prev", &len);
        cr_expect_str_eq(prev, expect, "line %zu", i + 1);
        free(prev);
        px_audit_sha256_hex(lines[i], strlen(lines[i]), expect);
    }
    free(text);

    cr_expect_eq(verify(out, sizeof out, path, NULL), 0);
    cr_expect_str_eq(out, "ok 10 records\n");

    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_expect_eq(sb.st_mode & 0777, 0640, "mode %o", sb.st_mode & 0777);
}

/* One tampering of a good 10-line log and the line verify must name. */
struct tamper {
    const char *name;
    int kind;       /* 0 edit a field, 1 delete, 2 insert a copy, 3 swap, 4 edit prev, 5 junk */
    size_t at;      /* 0-based line acted on */
    uint64_t bad;   /* the line verify reports */
};

static const struct tamper tampers[] = {
    {"edited line 4 (caught by line 5)", 0, 3, 5},
    {"edited last-but-one line", 0, 8, 10},
    {"deleted line 4", 1, 3, 4},
    {"deleted line 1", 1, 0, 1},
    {"inserted a copy of line 2 as line 6", 2, 5, 6},
    {"swapped lines 3 and 4", 3, 2, 3},
    {"swapped lines 9 and 10", 3, 8, 9},
    {"forged prev on line 7", 4, 6, 7},
    {"junk line 5", 5, 4, 5},
};

Test(audit_chain, verify_catches_tampering, .init = setup, .fini = teardown)
{
    char path[128], bad[128], out[512], want[256], *lines[16], *copy[17];

    in_dir(path, sizeof path, "audit.log");
    write_records(path, 1, 10);
    char *text = slurp(path, NULL);
    size_t n = split_lines(text, lines, 16);
    cr_assert_eq(n, 10);

    for (size_t t = 0; t < sizeof tampers / sizeof tampers[0]; t++) {
        const struct tamper *tp = &tampers[t];
        size_t m = 0;
        char edited[1024], *tmp;

        snprintf(bad, sizeof bad, "%s/tampered-%zu.log", dir, t);
        for (size_t i = 0; i < n; i++)
            copy[m++] = lines[i];
        switch (tp->kind) {
        case 0: /* edit: the stale token 4 becomes 5 */
            snprintf(edited, sizeof edited, "%s", lines[tp->at]);
            tmp = strstr(edited, "\"token\":");
            cr_assert_not_null(tmp);
            tmp[8] = tmp[8] == '9' ? '8' : (char)(tmp[8] + 1);
            copy[tp->at] = edited;
            break;
        case 1:
            memmove(&copy[tp->at], &copy[tp->at + 1], (m - tp->at - 1) * sizeof copy[0]);
            m--;
            break;
        case 2:
            memmove(&copy[tp->at + 1], &copy[tp->at], (m - tp->at) * sizeof copy[0]);
            copy[tp->at] = lines[1];
            m++;
            break;
        case 3:
            tmp = copy[tp->at];
            copy[tp->at] = copy[tp->at + 1];
            copy[tp->at + 1] = tmp;
            break;
        case 4:
            snprintf(edited, sizeof edited, "%s", lines[tp->at]);
            tmp = strstr(edited, "\"prev\":\"");
            cr_assert_not_null(tmp);
            tmp[8] = tmp[8] == '0' ? '1' : '0';
            copy[tp->at] = edited;
            break;
        case 5:
            copy[tp->at] = "not json";
            break;
        }
        write_lines(bad, copy, m);
        cr_expect_eq(verify(out, sizeof out, bad, NULL), 1, "%s", tp->name);
        snprintf(want, sizeof want, "%s:%llu: chain broken\n", bad, (unsigned long long)tp->bad);
        cr_expect_str_eq(out, want, "%s", tp->name);

        struct px_auditcli_verdict v;
        const char *files[] = {bad};
        cr_expect_eq(px_auditcli_verify(files, 1, &v), 1);
        cr_expect_eq(v.bad_line, tp->bad, "%s", tp->name);
        cr_expect_eq(v.records, tp->bad - 1, "%s", tp->name);
    }
    free(text);
}

Test(audit_chain, rotation_continues_the_chain, .init = setup, .fini = teardown)
{
    char path[128], old[128], out[512], err[256], want[256];

    in_dir(path, sizeof path, "audit.log");
    in_dir(old, sizeof old, "audit.log.1");
    struct px_audit *a = px_audit_open(path, err, sizeof err);
    cr_assert_not_null(a, "%s", err);
    struct px_audit_event ev = simple_event();
    for (int i = 0; i < 5; i++)
        cr_assert_eq(px_audit_record(a, &ev), 0);
    /* logrotate: rename, then SIGHUP; no flush in between. */
    cr_assert_eq(rename(path, old), 0);
    px_audit_reopen(a);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(px_audit_record(a, &ev), 0);
    px_audit_close(&a);

    cr_expect_eq(verify(out, sizeof out, old, path), 0);
    cr_expect_str_eq(out, "ok 8 records\n");
    /* The new file alone does not start the chain; the wrong order fails. */
    cr_expect_eq(verify(out, sizeof out, path, NULL), 1);
    snprintf(want, sizeof want, "%s:1: chain broken\n", path);
    cr_expect_str_eq(out, want);
    cr_expect_eq(verify(out, sizeof out, path, old), 1);
    cr_expect_str_eq(out, want);
    cr_expect_eq(verify(out, sizeof out, old, old), 1);
    snprintf(want, sizeof want, "%s:1: chain broken\n", old);
    cr_expect_str_eq(out, want);
}

Test(audit_chain, restart_continues_the_chain, .init = setup, .fini = teardown)
{
    char path[128], out[512], err[256], want[65];

    in_dir(path, sizeof path, "audit.log");
    write_records(path, 1, 3);
    char *text = slurp(path, NULL);
    char *last = strrchr(text, '\n');
    *last = '\0';
    last = strrchr(text, '\n') + 1;
    px_audit_sha256_hex(last, strlen(last), want);
    free(text);

    struct px_audit *a = px_audit_open(path, err, sizeof err);
    cr_assert_not_null(a, "%s", err);
    char got[65];
    px_audit_prev(a, got);
    cr_expect_str_eq(got, want);
    px_audit_close(&a);

    write_records(path, 4, 3);
    cr_expect_eq(verify(out, sizeof out, path, NULL), 0);
    cr_expect_str_eq(out, "ok 6 records\n");
}

Test(audit_chain, torn_last_line_is_closed_and_reported, .init = setup, .fini = teardown)
{
    char path[128], out[512], err[256], want[256];

    in_dir(path, sizeof path, "audit.log");
    write_records(path, 1, 2);
    int fd = open(path, O_WRONLY | O_APPEND);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, "{\"ts\":\"2026", 11), 11);
    close(fd);

    struct px_audit *a = px_audit_open(path, err, sizeof err);
    cr_assert_not_null(a, "%s", err);
    char h[65];
    px_audit_sha256_hex("{\"ts\":\"2026", 11, h);
    char got[65];
    px_audit_prev(a, got);
    cr_expect_str_eq(got, h);
    struct px_audit_event ev = simple_event();
    cr_assert_eq(px_audit_record(a, &ev), 0);
    px_audit_close(&a);

    cr_expect_eq(verify(out, sizeof out, path, NULL), 1);
    snprintf(want, sizeof want, "%s:3: chain broken\n", path);
    cr_expect_str_eq(out, want);
}

Test(audit_chain, a_dropped_record_becomes_a_gap_record, .init = setup, .fini = teardown)
{
    char path[128], out[2048], err[256];
    static char huge[8192];

    in_dir(path, sizeof path, "audit.log");
    struct px_audit *a = px_audit_open_sized(path, 4096, err, sizeof err);
    cr_assert_not_null(a, "%s", err);
    struct px_audit_event ev = simple_event();
    cr_assert_eq(px_audit_record(a, &ev), 0);
    cr_assert_eq(px_audit_flush(a, 5000), 0);
    cr_expect_eq(px_audit_writable(a), 1);

    /* A record larger than the whole buffer is always dropped. */
    memset(huge, 'x', sizeof huge);
    struct px_audit_event big = simple_event();
    big.path = huge;
    big.path_len = sizeof huge;
    big.ts_ms += 7;
    cr_expect_eq(px_audit_record(a, &big), -1);
    cr_expect_eq(px_audit_dropped(a), 1);

    /* The writer tells the loss at once (no need for a next record). */
    for (int i = 0; i < 200 && px_audit_gaps(a) == 0; i++)
        usleep(10 * 1000);
    cr_expect_eq(px_audit_gaps(a), 1);
    cr_expect_eq(px_audit_writable(a), 1);
    cr_assert_eq(px_audit_record(a, &ev), 0);
    px_audit_close(&a);

    char *text = slurp(path, NULL), *lines[8];
    size_t n = split_lines(text, lines, 8);
    cr_assert_eq(n, 3);
    size_t len;
    char *v = decoded(lines[1], "event", &len);
    cr_expect_str_eq(v, "gap");
    free(v);
    v = decoded(lines[1], "from", &len);
    cr_expect_str_eq(v, "2026-11-27T01:02:03.463Z", "the lost record's own time");
    free(v);
    cr_expect(strstr(lines[1], "\"lost\":1,") != NULL, "%s", lines[1]);
    free(text);
    cr_expect_eq(verify(out, sizeof out, path, NULL), 0);
    cr_expect(strstr(out, ":2: gap: 1 record(s) lost from 2026-11-27T01:02:03.463Z") != NULL,
              "%s", out);
    cr_expect(strstr(out, "ok 3 records; 1 gap record(s): 1 record(s) lost") != NULL, "%s", out);
}

/* ---- cli ---------------------------------------------------------------- */

Test(audit_cli, usage_and_unreadable, .init = setup, .fini = teardown)
{
    char out[512], path[128], empty[128];
    const char *a1[] = {"audit", NULL};
    const char *a2[] = {"audit", "verify", NULL};
    const char *a3[] = {"audit", "frobnicate", NULL};
    const char *a4[] = {"audit", "tail", "-n", "0", "x", NULL};
    const char *a5[] = {"audit", "tail", NULL};

    cr_expect_eq(run_cli(out, sizeof out, 1, a1), 2);
    cr_expect_eq(run_cli(out, sizeof out, 2, a2), 2);
    cr_expect_eq(run_cli(out, sizeof out, 2, a3), 2);
    cr_expect_eq(run_cli(out, sizeof out, 5, a4), 2);
    cr_expect_eq(run_cli(out, sizeof out, 2, a5), 2);
    in_dir(path, sizeof path, "missing.log");
    cr_expect_eq(verify(out, sizeof out, path, NULL), 2);
    cr_expect_str_eq(out, "");
    cr_expect_eq(verify(out, sizeof out, dir, NULL), 2, "a directory is unreadable");
    in_dir(empty, sizeof empty, "empty.log");
    spit(empty, "");
    cr_expect_eq(verify(out, sizeof out, empty, NULL), 0);
    cr_expect_str_eq(out, "ok 0 records\n");
}

Test(audit_cli, tail_shows_the_latest_records_as_a_table, .init = setup, .fini = teardown)
{
    char path[128], err[256], out[8192];

    in_dir(path, sizeof path, "audit.log");
    struct px_audit *a = px_audit_open(path, err, sizeof err);
    cr_assert_not_null(a, "%s", err);
    for (int i = 1; i <= 6; i++) {
        struct px_audit_event ev = simple_event();
        ev.token = (uint64_t)i;
        if (i % 2 == 0) {
            ev.resource = "/objects/other";
            ev.resource_len = 14;
        }
        if (i == 5) {
            /* A terminal escape sequence and a bidi override in the path. */
            ev.path = "/objects/user42/\x1b[2J\xe2\x80\xae" "evil";
            ev.path_len = strlen(ev.path);
            ev.event = "malformed_token";
            ev.token_is_number = 0;
            ev.token_raw = "12a";
            ev.token_raw_len = 3;
        }
        cr_assert_eq(px_audit_record(a, &ev), 0);
    }
    px_audit_close(&a);

    const char *argv[] = {"audit", "tail", "-n", "2", "--resource", "/objects/user42", path,
                          NULL};
    cr_assert_eq(run_cli(out, sizeof out, 7, argv), 0);
    char *lines[8];
    size_t n = split_lines(out, lines, 8);
    cr_assert_eq(n, 3, "header and two rows");
    cr_expect_eq(strncmp(lines[0], "TIME", 4), 0, "%s", lines[0]);
    const char *heads[] = {"EVENT", "RESOURCE", "TOKEN", "HIGHEST", "METHOD", "PATH", "CLIENT",
                           "REQUEST_ID"};
    for (size_t i = 0; i < 8; i++)
        cr_expect_neq(strstr(lines[0], heads[i]), NULL, "%s", heads[i]);
    /* Rows 3 and 5 of user42, oldest first, columns aligned with the header. */
    size_t col_event = (size_t)(strstr(lines[0], "EVENT") - lines[0]);
    size_t col_token = (size_t)(strstr(lines[0], "TOKEN") - lines[0]);
    cr_expect_eq(strncmp(lines[1] + col_event, "stale_token ", 12), 0, "%s", lines[1]);
    cr_expect_eq(strncmp(lines[2] + col_event, "malformed_token", 15), 0, "%s", lines[2]);
    cr_expect_eq(strncmp(lines[1] + col_token, "3 ", 2), 0, "%s", lines[1]);
    cr_expect_eq(strncmp(lines[2] + col_token, "\"12a\"", 5), 0, "%s", lines[2]);
    cr_expect_eq(strncmp(lines[1], "2026-11-27T01:02:03.456Z", 24), 0);
    cr_expect_neq(strstr(lines[2], "/objects/user42/\\u001b[2J\\u202eevil"), NULL, "%s",
                  lines[2]);
    for (const unsigned char *p = (const unsigned char *)out; p < (const unsigned char *)lines[2] + strlen(lines[2]); p++)
        cr_expect(*p >= 0x20 || *p == '\0', "raw control byte 0x%02x in the table", *p);

    const char *all[] = {"audit", "tail", path, NULL};
    char out2[8192];
    cr_assert_eq(run_cli(out2, sizeof out2, 3, all), 0);
    cr_expect_eq(split_lines(out2, lines, 8), 7, "default N=20 shows all 6 records");
}

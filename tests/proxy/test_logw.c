/* px_logw: lines arrive whole and in order, a reopen after a rename splits
 * them between the two files without loss, a full buffer drops and counts,
 * and write errors are counted, not fatal. */
#include <criterion/criterion.h>

#include "ts_proc.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "px_logw.h"

static char dir[64];

static void setup(void)
{
    strcpy(dir, "/tmp/fence-logw-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
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

/* Checks that text holds exactly the lines "line <from>" .. "line <to-1>". */
static void expect_lines(const char *text, int from, int to)
{
    const char *p = text;
    char want[32];

    for (int i = from; i < to; i++) {
        int n = snprintf(want, sizeof want, "line %07d\n", i);
        cr_assert_eq(strncmp(p, want, (size_t)n), 0, "at line %d: got '%.16s'", i, p);
        p += n;
    }
    cr_assert_eq(*p, '\0', "extra bytes after line %d: '%.16s'", to - 1, p);
}

/* Queues "line <i>" for i in [from, to). When the buffer is full it waits
 * for the writer (flush) and retries, so nothing is lost; bounded. */
static void produce(struct px_logw *w, int from, int to)
{
    char line[32];

    for (int i = from; i < to; i++) {
        int n = snprintf(line, sizeof line, "line %07d\n", i);
        int tries = 0;
        while (px_logw_write(w, line, (size_t)n) != 0) {
            cr_assert_lt(++tries, 1000, "writer makes no progress");
            cr_assert_eq(px_logw_flush(w, 5000), 0);
        }
    }
}

Test(logw, many_lines_arrive_in_order, .init = setup, .fini = teardown)
{
    char path[128], err[256];
    size_t len;

    snprintf(path, sizeof path, "%s/access.log", dir);
    struct px_logw *w = px_logw_open(path, 64 * 1024, err, sizeof err);
    cr_assert_not_null(w, "%s", err);
    produce(w, 0, 200000);
    uint64_t dropped = px_logw_dropped(w);
    cr_expect_eq(px_logw_errors(w), 0);
    px_logw_close(&w);
    cr_expect_null(w);

    char *text = slurp(path, &len);
    expect_lines(text, 0, 200000);
    free(text);

    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_expect_eq(sb.st_mode & 0777, 0640 & ~(mode_t)0, "mode %o", sb.st_mode & 0777);
    (void)dropped; /* retried lines count as drops; none is missing */
}

Test(logw, appends_to_an_existing_file, .init = setup, .fini = teardown)
{
    char path[128], err[256];
    size_t len;

    snprintf(path, sizeof path, "%s/a.log", dir);
    for (int round = 0; round < 3; round++) {
        struct px_logw *w = px_logw_open(path, 4096, err, sizeof err);
        cr_assert_not_null(w, "%s", err);
        produce(w, round * 10, round * 10 + 10);
        px_logw_close(&w);
    }
    char *text = slurp(path, &len);
    expect_lines(text, 0, 30);
    free(text);
}

Test(logw, reopen_after_rename_splits_without_loss, .init = setup, .fini = teardown)
{
    char path[128], old[140], err[256];
    size_t len;

    snprintf(path, sizeof path, "%s/audit.log", dir);
    struct px_logw *w = px_logw_open(path, 1 << 20, err, sizeof err);
    cr_assert_not_null(w, "%s", err);
    for (int round = 0; round < 3; round++) {
        int base = round * 7000;
        snprintf(old, sizeof old, "%s.%d", path, round);
        /* No flush between the last line and the reopen: lines queued before
         * the call must still go to the old file. */
        produce(w, base, base + 5000);
        cr_assert_eq(rename(path, old), 0);
        px_logw_reopen(w);
        produce(w, base + 5000, base + 7000);
        cr_assert_eq(px_logw_flush(w, 5000), 0);

        char *a = slurp(old, &len);
        expect_lines(a, round == 0 ? 0 : base - 2000, base + 5000);
        free(a);
    }
    px_logw_close(&w);
    char *b = slurp(path, &len);
    expect_lines(b, 19000, 21000);
    free(b);
    cr_expect_eq(len, 2000 * 13);
}

Test(logw, full_buffer_drops_and_counts, .init = setup, .fini = teardown)
{
    char path[128], err[256], line[32];
    char *got = NULL;
    size_t got_len = 0;

    /* A FIFO whose reader does not read yet: the writer blocks in write(2)
     * once the pipe is full, so the buffer fills deterministically. */
    snprintf(path, sizeof path, "%s/fifo", dir);
    cr_assert_eq(mkfifo(path, 0600), 0);
    int rfd = open(path, O_RDONLY | O_NONBLOCK);
    cr_assert_geq(rfd, 0);
    struct px_logw *w = px_logw_open(path, 4096, err, sizeof err);
    cr_assert_not_null(w, "%s", err);

    /* A line longer than the whole buffer never fits. */
    char big[5000];
    memset(big, 'x', sizeof big);
    cr_expect_eq(px_logw_write(w, big, sizeof big), -1);
    cr_expect_eq(px_logw_dropped(w), 1);

    /* Fill pipe and buffer; count what was accepted and what was refused. */
    int accepted = 0, refused = 0;
    for (int i = 0; i < 1000000 && refused < 100; i++) {
        int n = snprintf(line, sizeof line, "line %07d\n", accepted);
        if (px_logw_write(w, line, (size_t)n) == 0)
            accepted++;
        else
            refused++;
    }
    cr_assert_eq(refused, 100, "the buffer never filled");
    cr_expect_eq(px_logw_dropped(w), 101);

    /* Drain the pipe; every accepted line comes out, in order, none of the
     * refused ones. */
    int fl = fcntl(rfd, F_GETFL);
    cr_assert_eq(fcntl(rfd, F_SETFL, fl & ~O_NONBLOCK), 0);
    size_t want = (size_t)accepted * 13, cap = want + 1;
    got = malloc(cap);
    cr_assert_not_null(got);
    while (got_len < want) {
        ssize_t r = read(rfd, got + got_len, cap - 1 - got_len);
        cr_assert_gt(r, 0, "pipe closed early after %zu of %zu bytes", got_len, want);
        got_len += (size_t)r;
    }
    got[got_len] = '\0';
    px_logw_close(&w);
    close(rfd);
    expect_lines(got, 0, accepted);
    free(got);
}

Test(logw, write_errors_are_counted, .init = setup, .fini = teardown)
{
    char err[256];
    struct px_logw *w = px_logw_open("/dev/full", 4096, err, sizeof err);

    cr_assert_not_null(w, "%s", err);
    cr_expect_eq(px_logw_write(w, "x\n", 2), 0);
    cr_expect_eq(px_logw_flush(w, 5000), 0);
    cr_expect_geq(px_logw_errors(w), 1);
    cr_expect_eq(px_logw_write(w, "y\n", 2), 0, "still accepting after an error");
    px_logw_close(&w);
}

Test(logw, open_failure_reports_the_path, .init = setup, .fini = teardown)
{
    char path[128], err[256];

    snprintf(path, sizeof path, "%s/no/such/dir/x.log", dir);
    cr_expect_null(px_logw_open(path, 4096, err, sizeof err));
    cr_expect_neq(strstr(err, path), NULL, "%s", err);
    px_logw_close(NULL);
}

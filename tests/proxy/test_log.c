/* px_log: level parsing, the line format, and that a disabled level neither
 * writes nor evaluates its arguments. */
#include <criterion/criterion.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "px_log.h"

static int fds[2];

static void setup(void)
{
    cr_assert_eq(pipe(fds), 0);
    px_log_set_fd(fds[1]);
}

static void teardown(void)
{
    px_log_set_fd(2);
    close(fds[0]);
    if (fds[1] >= 0)
        close(fds[1]);
}

/* Reads everything logged so far: closes the write end, reads to EOF. */
static void drain(char *out, size_t cap)
{
    size_t n = 0;
    ssize_t k;

    px_log_set_fd(2);
    close(fds[1]);
    fds[1] = -1;
    while (n < cap - 1 && (k = read(fds[0], out + n, cap - 1 - n)) > 0)
        n += (size_t)k;
    out[n] = '\0';
}

Test(log, levels)
{
    enum px_log_level l;

    cr_expect_eq(px_log_level_parse("error", &l), 0);
    cr_expect_eq(l, PX_LOG_ERROR);
    cr_expect_eq(px_log_level_parse("debug", &l), 0);
    cr_expect_eq(l, PX_LOG_DEBUG);
    cr_expect_eq(px_log_level_parse("INFO", &l), -1);
    cr_expect_eq(px_log_level_parse("", &l), -1);
    cr_expect_eq(px_log_level_parse(NULL, &l), -1);
    cr_expect_str_eq(px_log_level_name(PX_LOG_WARN), "warn");
    cr_expect_str_eq(px_log_level_name((enum px_log_level)9), "?");
}

static int evaluated;

static int side_effect(void)
{
    evaluated++;
    return 42;
}

Test(log, threshold_and_format, .init = setup, .fini = teardown)
{
    char out[4096];
    regex_t re;

    px_log_init(PX_LOG_INFO);
    px_log_debug("hidden %d", side_effect());
    cr_expect_eq(evaluated, 0, "a disabled level evaluated its arguments");
    px_log_info("shown %d", side_effect());
    cr_expect_eq(evaluated, 1);
    px_clog_warn(7, "127.0.0.1:5555", "conn %s", "x");
    px_clog_error(8, NULL, "nopeer");
    px_log_init(PX_LOG_ERROR);
    px_log_warn("hidden too");
    drain(out, sizeof out);

    cr_assert_eq(regcomp(&re,
                         "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "
                         "info  test_log\\.c:[0-9]+ shown 42\n"
                         "[0-9T:.Z-]+ warn  test_log\\.c:[0-9]+ \\[c7 127\\.0\\.0\\.1:5555\\] conn x\n"
                         "[0-9T:.Z-]+ error test_log\\.c:[0-9]+ \\[c8 -\\] nopeer\n$",
                         REG_EXTENDED),
              0);
    cr_expect_eq(regexec(&re, out, 0, NULL, 0), 0, "got:\n%s", out);
    regfree(&re);
}

Test(log, long_message_is_cut_to_one_line, .init = setup, .fini = teardown)
{
    char out[16384], *big = malloc(10000);

    cr_assert_not_null(big);
    memset(big, 'x', 9999);
    big[9999] = '\0';
    px_log_init(PX_LOG_INFO);
    px_log_info("%s", big);
    drain(out, sizeof out);
    cr_expect_lt(strlen(out), 4097);
    cr_expect(strstr(out, "xxx...\n") != NULL);
    cr_expect_eq(strchr(out, '\n'), out + strlen(out) - 1);
    free(big);
}

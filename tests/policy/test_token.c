/* The fencing-token grammar: every edge of the contract, from a table, and
 * each accepted value also fed in pieces of growing length. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "pol_token.h"

struct tcase {
    const char *in;
    size_t len;  /* 0: strlen(in) */
    int rc;
    uint64_t v;
};

#define L(s) s, sizeof(s) - 1

static const struct tcase cases[] = {
    {"0", 0, 0, 0},
    {"1", 0, 0, 1},
    {"42", 0, 0, 42},
    {"18446744073709551615", 0, 0, UINT64_MAX},
    {"18446744073709551614", 0, 0, UINT64_MAX - 1},
    {"18446744073709551616", 0, -1, 0},
    {"18446744073709551620", 0, -1, 0},
    {"99999999999999999999", 0, -1, 0},
    {"10000000000000000000000000", 0, -1, 0}, /* 1 followed by 25 digits */
    {"01", 0, -1, 0},
    {"00", 0, -1, 0},
    {"007", 0, -1, 0},
    {"+1", 0, -1, 0},
    {"-1", 0, -1, 0},
    {"-0", 0, -1, 0},
    {"1a", 0, -1, 0},
    {"a1", 0, -1, 0},
    {"0x1", 0, -1, 0},
    {"1e3", 0, -1, 0},
    {" 5 ", 0, 0, 5},
    {"\t5\t", 0, 0, 5},
    {" \t 5\t \t", 0, 0, 5},
    {"5 6", 0, -1, 0},
    {"5,6", 0, -1, 0},
    {"5, 6", 0, -1, 0},
    {"5,", 0, -1, 0},
    {"", 0, -1, 0},
    {"   ", 0, -1, 0},
    {"\t", 0, -1, 0},
    {"1.0", 0, -1, 0},
    {"1.", 0, -1, 0},
    {"5\r", 0, -1, 0},
    {"\n5", 0, -1, 0},
    {"5\v", 0, -1, 0},
    {"\xc2\xa0" "5", 0, -1, 0},       /* NBSP is not whitespace here */
    {"\xef\xbc\x95", 0, -1, 0},       /* FULLWIDTH DIGIT FIVE */
    {"5\xff", 0, -1, 0},
    {"\x80", 0, -1, 0},
    {L("5\0"), -1, 0},                /* embedded NUL */
    {L("\0" "5"), -1, 0},
    {L("1\0" "2"), -1, 0},
    {L("\0"), -1, 0},
};

Test(token, table)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct tcase *c = &cases[i];
        size_t len = c->len ? c->len : strlen(c->in);
        uint64_t v = 777;
        int rc = pol_token_parse(c->in, len, &v);
        cr_expect_eq(rc, c->rc, "case %zu: rc %d, want %d", i, rc, c->rc);
        if (c->rc == 0)
            cr_expect_eq(v, c->v, "case %zu: %llu, want %llu", i, (unsigned long long)v,
                         (unsigned long long)c->v);
        else
            cr_expect_eq(v, 777, "case %zu: output written on error", i);
    }
}

/* The length bounds the parse: a value is never read past len, so a valid
 * prefix of a longer buffer parses to the prefix's value. */
Test(token, length_bounds_the_value)
{
    const char *s = "123456789";
    for (size_t n = 1; n <= 9; n++) {
        uint64_t v = 0, want = 0;
        for (size_t i = 0; i < n; i++)
            want = want * 10 + (uint64_t)(s[i] - '0');
        cr_expect_eq(pol_token_parse(s, n, &v), 0);
        cr_expect_eq(v, want);
    }
    uint64_t v;
    cr_expect_eq(pol_token_parse(s, 0, &v), -1);
}

Test(token, every_u64_boundary_roundtrips)
{
    uint64_t vals[] = {0, 9, 10, 99, 100, 4294967295ULL, 4294967296ULL,
                       1844674407370955161ULL, UINT64_MAX};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        char buf[32];
        uint64_t v;
        int n = snprintf(buf, sizeof buf, "%llu", (unsigned long long)vals[i]);
        cr_expect_eq(pol_token_parse(buf, (size_t)n, &v), 0, "%s", buf);
        cr_expect_eq(v, vals[i], "%s", buf);
    }
}

Test(token, null_is_refused)
{
    uint64_t v;
    cr_expect_eq(pol_token_parse(NULL, 3, &v), -1);
    cr_expect_eq(pol_token_parse("5", 1, NULL), -1);
}

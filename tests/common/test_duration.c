/* Durations as written in configs and on command lines. */
#include <criterion/criterion.h>

#include "fc_duration.h"

struct dcase { const char *in; int rc; uint64_t ms; };

static const struct dcase cases[] = {
    {"0", 0, 0},           {"5", 0, 5000},          {"5s", 0, 5000},
    {"250ms", 0, 250},     {"2m", 0, 120000},       {"1h", 0, 3600000},
    {"007s", 0, 7000},     {"", -1, 0},             {"s", -1, 0},
    {"-1s", -1, 0},        {"+1s", -1, 0},          {"1.5s", -1, 0},
    {" 1s", -1, 0},        {"1s ", -1, 0},          {"1 s", -1, 0},
    {"1d", -1, 0},         {"1S", -1, 0},           {"1sm", -1, 0},
    {"18446744073709551615ms", 0, UINT64_MAX},
    {"18446744073709551616ms", -1, 0},
    {"18446744073709551615s", -1, 0},
};

Test(duration, table)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t ms = 12345;
        int rc = fc_duration_parse(cases[i].in, &ms);
        cr_expect_eq(rc, cases[i].rc, "'%s': rc %d, want %d", cases[i].in, rc, cases[i].rc);
        if (rc == 0)
            cr_expect_eq(ms, cases[i].ms, "'%s': %lu ms", cases[i].in, (unsigned long)ms);
    }
}

Test(duration, null_is_refused)
{
    uint64_t ms;
    cr_expect_eq(fc_duration_parse(NULL, &ms), -1);
}

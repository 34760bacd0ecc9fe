/* fc_duration: see fc_duration.h. */
#include "fc_duration.h"

#include <string.h>

int fc_duration_parse(const char *s, uint64_t *out_ms)
{
    uint64_t v = 0, mult;
    const char *p = s;
    int rc = -1;

    if (s == NULL || *p < '0' || *p > '9')
        goto out;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
            goto out;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (*p == '\0' || strcmp(p, "s") == 0)
        mult = 1000;
    else if (strcmp(p, "ms") == 0)
        mult = 1;
    else if (strcmp(p, "m") == 0)
        mult = 60 * 1000;
    else if (strcmp(p, "h") == 0)
        mult = 3600 * 1000;
    else
        goto out;
    if (v > UINT64_MAX / mult)
        goto out;
    *out_ms = v * mult;
    rc = 0;
out:
    return rc;
}

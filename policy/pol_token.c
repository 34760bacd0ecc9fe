/* pol_token: parses the fencing-token header value. The grammar is strict on
 * purpose: any spelling the proxy accepts must mean exactly one number, so no
 * sign, no hex, no leading zeros, no lists and no overflow wrap-around. Only
 * SP and HTAB may surround the digits (the optional whitespace of a field
 * value). Pure: no allocation, no I/O. */
#include "pol_token.h"

static int is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

int pol_token_parse(const char *value, size_t len, uint64_t *out)
{
    size_t b = 0, e = len;
    uint64_t v = 0;

    if (value == NULL || out == NULL)
        return -1;
    while (b < e && is_ows((unsigned char)value[b]))
        b++;
    while (e > b && is_ows((unsigned char)value[e - 1]))
        e--;
    if (b == e)
        return -1;
    /* "0" is the only spelling of zero; "01" or "00" could be read two ways. */
    if (value[b] == '0' && e - b > 1)
        return -1;
    for (size_t i = b; i < e; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c < '0' || c > '9')
            return -1;
        unsigned d = (unsigned)(c - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

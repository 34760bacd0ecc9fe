/* pol_chars: every entry of the shared tables against the definitions they
 * were written from (RFC 9110 tchar, hex digits). */
#include <criterion/criterion.h>
#include <string.h>

#include "pol_chars.h"

Test(chars, tchar_table_is_rfc9110)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";

    for (int c = 0; c < 256; c++) {
        int want = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   (c != 0 && memchr(extra, c, sizeof extra - 1) != NULL);
        cr_expect_eq(pol_chars_is_tchar((unsigned char)c), want, "byte 0x%02x", c);
    }
}

Test(chars, hex_table)
{
    for (int c = 0; c < 256; c++) {
        int want = c >= '0' && c <= '9' ? c - '0'
                 : c >= 'a' && c <= 'f' ? c - 'a' + 10
                 : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                        : -1;
        cr_expect_eq(pol_chars_hex((unsigned char)c), want, "byte 0x%02x", c);
    }
    for (int v = 0; v < 16; v++) {
        cr_expect_eq(pol_chars_hex((unsigned char)pol_chars_hex_upper[v]), v);
        cr_expect_eq(pol_chars_hex((unsigned char)pol_chars_hex_lower[v]), v);
    }
    cr_expect_str_eq(pol_chars_hex_upper, "0123456789ABCDEF");
    cr_expect_str_eq(pol_chars_hex_lower, "0123456789abcdef");
}

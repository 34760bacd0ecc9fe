/* pol_chars: the character classes the proxy and the policy share, ASCII
 * only and never the C locale: RFC 9110 token characters and hexadecimal
 * digits, each in one 256-entry table so that a per-byte test is one load,
 * plus the two hex alphabets used to write escapes. Pure data. */
#ifndef POL_CHARS_H
#define POL_CHARS_H

#define POL_CHARS_TCHAR 0x01u /* RFC 9110 tchar */

/* Class bits per byte value (POL_CHARS_TCHAR; more classes may follow). */
extern const unsigned char pol_chars_class[256];
/* The value of a hex digit per byte value, or -1. */
extern const signed char pol_chars_hexval[256];
/* "0123456789ABCDEF" and "0123456789abcdef" (NUL-terminated, static). */
extern const char pol_chars_hex_upper[17];
extern const char pol_chars_hex_lower[17];

/* Whether c is an RFC 9110 tchar ("!#$%&'*+-.^_`|~", digits, letters). */
static inline int pol_chars_is_tchar(unsigned char c)
{
    return (pol_chars_class[c] & POL_CHARS_TCHAR) != 0;
}

/* The value 0..15 of the hex digit c, or -1 when c is not one. */
static inline int pol_chars_hex(unsigned char c)
{
    return pol_chars_hexval[c];
}

#endif

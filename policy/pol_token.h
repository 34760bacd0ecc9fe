/* pol_token: the fencing-token grammar. A token is an unsigned 64-bit decimal:
 * 1*DIGIT, no sign, no leading zero except "0" itself, at most 2^64-1, with
 * optional SP/HTAB around the field value and nothing else. Pure. */
#ifndef POL_TOKEN_H
#define POL_TOKEN_H

#include <stddef.h>
#include <stdint.h>

/* Parses one header field value of len bytes (not NUL-terminated; may hold any
 * byte). Returns 0 and sets *out, or -1 when the value is malformed. */
int pol_token_parse(const char *value, size_t len, uint64_t *out);

#endif

/* fc_duration: parsing of durations as written in configs and on command lines
 * ("250ms", "5s", "2m", "1h"; a bare number is seconds). Pure, no allocation. */
#ifndef FC_DURATION_H
#define FC_DURATION_H

#include <stdint.h>

/* Parses the NUL-terminated text s into milliseconds in *out_ms.
 * Accepts 1*DIGIT followed by an optional unit ms|s|m|h; nothing else (no sign,
 * no spaces, no fractions). Returns 0, or -1 on bad syntax or overflow. */
int fc_duration_parse(const char *s, uint64_t *out_ms);

#endif

/* px_clock: the proxy's clock reads, in one place so that every module asks
 * the same question the same way. Any thread. */
#ifndef PX_CLOCK_H
#define PX_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Wall-clock milliseconds since the epoch (for logs and audit records). */
uint64_t px_clock_wall_ms(void);

/* Seconds from a to b (both CLOCK_MONOTONIC readings). */
double px_clock_diff(const struct timespec *a, const struct timespec *b);

#endif

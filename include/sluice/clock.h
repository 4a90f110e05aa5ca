/*
 * Clocks: a monotonic clock for intervals and the wall clock for logs and
 * enqueue times. Pure logic modules take a clock argument instead of calling
 * these, so tests can drive time.
 *
 * @thread any
 */
#ifndef SLUICE_CLOCK_H
#define SLUICE_CLOCK_H

#include <stdint.h>

/* Monotonic time in nanoseconds. */
uint64_t sl_clock_mono_ns(void);

/* Wall-clock time in milliseconds since the Unix epoch. */
uint64_t sl_clock_wall_ms(void);

#endif

/*
 * Clocks: a monotonic clock for intervals and the wall clock for logs and
 * enqueue times. Pure logic modules take a clock argument instead of calling
 * these, so tests can drive time.
 *
 * @thread any
 */
#ifndef SLUICE_CLOCK_H
#define SLUICE_CLOCK_H

#include <stdbool.h>
#include <stdint.h>

/* Monotonic time in nanoseconds. */
uint64_t sl_clock_mono_ns(void);

/* Wall-clock time in milliseconds since the Unix epoch. */
uint64_t sl_clock_wall_ms(void);

/* Room for any time sl_clock_format() writes, the terminating NUL included. */
#define SL_CLOCK_RFC3339_LEN 32

/*
 * Writes wall-clock time <ms> (milliseconds since the Unix epoch) as RFC 3339
 * in UTC into <out> (at least SL_CLOCK_RFC3339_LEN bytes), with milliseconds
 * when <millis> ("2026-11-26T03:24:49.120Z") or without ("...:49Z"). Returns
 * <out>, so that it can stand in an argument list. The one formatter of the
 * times sluice shows (status URLs, admin API, logs of the drain).
 */
const char *sl_clock_format(uint64_t ms, bool millis, char *out);

#endif

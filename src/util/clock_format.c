/*
 * RFC 3339 formatting of wall-clock times. In a file of its own, apart from
 * the clock readings of clock.c, so that a test that supplies its own readings
 * (a driven clock) still links against the rest of the library.
 */
#include "sluice/clock.h"

#include <stdio.h>
#include <time.h>

const char *sl_clock_format(uint64_t ms, bool millis, char *out) {
  time_t secs = (time_t)(ms / 1000);
  struct tm tm;
  size_t n;

  gmtime_r(&secs, &tm);
  n = strftime(out, SL_CLOCK_RFC3339_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
  if (millis)
    snprintf(out + n, SL_CLOCK_RFC3339_LEN - n, ".%03uZ", (unsigned)(ms % 1000));
  else
    snprintf(out + n, SL_CLOCK_RFC3339_LEN - n, "Z");
  return out;
}

/*
 * Sizes and durations as people write them: "64KiB", "8MiB", "30s", "250ms",
 * "1h30m".
 *
 * Both parsers work in unsigned integer arithmetic so that every result is
 * exact and every overflow is detected: a number is read as an integer part
 * plus at most FRAC_DIGITS fraction digits, and the fraction is scaled by the
 * unit before it is divided, which rounds down to a whole byte or
 * millisecond. Fraction digits beyond FRAC_DIGITS must still be digits but no
 * longer change the result (a millionth of a unit is below what either unit
 * can hold once rounded).
 *
 * The duration parser also reads request headers (X-Sluice-Delay), so it
 * treats its input as untrusted: it never reads past the NUL and never
 * overflows.
 *
 * @thread any (pure functions, no state)
 */
#include "sluice/units.h"

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "sluice/util.h"

/* 10^FRAC_DIGITS times the largest unit (1 TiB = 2^40 bytes, 1 d = 8.64e7 ms)
 * stays far below 2^64, so scaling a fraction by its unit cannot overflow. */
#define FRAC_DIGITS 6

struct number {
  uint64_t whole;
  uint64_t frac; /* numerator over den */
  uint64_t den;  /* 10^(fraction digits kept), 1 when there is no fraction */
};

static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_blank(char c) { return c == ' ' || c == '\t'; }

static const char *skip_blanks(const char *p) {
  while (is_blank(*p))
    p++;
  return p;
}

/*
 * Reads "<digits>[.<digits>]" at <*pp> into <n> and advances <*pp> past it.
 * At least one digit must come before the point and one after it. Returns 0,
 * or -1 when there is no number or the integer part overflows.
 */
static int read_number(const char **pp, struct number *n) {
  const char *p = *pp;
  unsigned kept = 0;

  if (!is_digit(*p))
    return -1;
  n->whole = 0;
  n->frac = 0;
  n->den = 1;
  for (; is_digit(*p); p++) {
    uint64_t d = (uint64_t)(*p - '0');

    if (n->whole > (UINT64_MAX - d) / 10)
      return -1;
    n->whole = n->whole * 10 + d;
  }
  if (*p == '.') {
    p++;
    if (!is_digit(*p))
      return -1;
    for (; is_digit(*p); p++) {
      if (kept < FRAC_DIGITS) {
        n->frac = n->frac * 10 + (uint64_t)(*p - '0');
        n->den *= 10;
        kept++;
      }
    }
  }
  *pp = p;
  return 0;
}

/* Stores <n> times <unit> in <out>, rounded down. Returns 0, or -1 on overflow. */
static int scale(const struct number *n, uint64_t unit, uint64_t *out) {
  uint64_t whole, frac;

  if (unit != 0 && n->whole > UINT64_MAX / unit)
    return -1;
  whole = n->whole * unit;
  frac = n->frac * unit / n->den;
  if (whole > UINT64_MAX - frac)
    return -1;
  *out = whole + frac;
  return 0;
}

struct unit {
  const char *name;
  uint64_t factor;
};

#define KI 1024ull
#define KD 1000ull

/* Compared case-insensitively: "64kb", "64KB" and "64Kb" all mean 64000. */
static const struct unit size_units[] = {
    {"", 1},
    {"b", 1},
    {"k", KI},
    {"kib", KI},
    {"kb", KD},
    {"m", KI *KI},
    {"mib", KI *KI},
    {"mb", KD *KD},
    {"g", KI *KI *KI},
    {"gib", KI *KI *KI},
    {"gb", KD *KD *KD},
    {"t", KI *KI *KI *KI},
    {"tib", KI *KI *KI *KI},
    {"tb", KD *KD *KD *KD},
};

int sl_size_parse(const char *s, uint64_t *out) {
  struct number n;
  const char *p, *unit;
  size_t unit_len;

  if (s == NULL)
    return -1;
  p = skip_blanks(s);
  if (read_number(&p, &n) != 0)
    return -1;
  p = skip_blanks(p);
  unit = p;
  while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))
    p++;
  unit_len = (size_t)(p - unit);
  if (*skip_blanks(p) != '\0')
    return -1;
  for (size_t i = 0; i < sl_countof(size_units); i++) {
    if (strlen(size_units[i].name) == unit_len &&
        strncasecmp(size_units[i].name, unit, unit_len) == 0)
      return scale(&n, size_units[i].factor, out);
  }
  return -1;
}

/*
 * Reads a duration unit at <*pp> (lower case only, so that "1M" is not taken
 * for a month or a minute by accident) into <factor_ms>. "ms" is tried before
 * "m". Returns 0, or -1 when no unit is there.
 */
static int read_duration_unit(const char **pp, uint64_t *factor_ms) {
  const char *p = *pp;

  switch (*p) {
  case 'm':
    if (p[1] == 's') {
      *factor_ms = 1;
      *pp = p + 2;
    } else {
      *factor_ms = 60ull * 1000;
      *pp = p + 1;
    }
    return 0;
  case 's':
    *factor_ms = 1000;
    break;
  case 'h':
    *factor_ms = 3600ull * 1000;
    break;
  case 'd':
    *factor_ms = 86400ull * 1000;
    break;
  default:
    return -1;
  }
  *pp = p + 1;
  return 0;
}

int sl_duration_parse(const char *s, uint64_t *out_ms) {
  const char *p;
  uint64_t total = 0;
  bool first = true;

  if (s == NULL)
    return -1;
  p = skip_blanks(s);
  if (*p == '\0')
    return -1;
  while (*p != '\0') {
    struct number n;
    uint64_t factor, part;

    if (read_number(&p, &n) != 0)
      return -1;
    p = skip_blanks(p);
    if (read_duration_unit(&p, &factor) != 0) {
      /* A bare number is seconds, but only alone: "1h30" is more likely a
       * typo for "1h30m" than a request for 1 h and 30 s. */
      if (!first || *p != '\0')
        return -1;
      factor = 1000;
    }
    /* A unit must not run on into letters: "5sec" and "5mins" are errors. */
    if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))
      return -1;
    if (scale(&n, factor, &part) != 0 || total > UINT64_MAX - part)
      return -1;
    total += part;
    p = skip_blanks(p);
    first = false;
  }
  *out_ms = total;
  return 0;
}

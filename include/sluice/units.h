/*
 * Sizes and durations as written in the config file: "64KiB", "8MiB", "30s",
 * "250ms", "1h30m".
 *
 * @thread any (pure functions)
 */
#ifndef SLUICE_UNITS_H
#define SLUICE_UNITS_H

#include <stdint.h>

/*
 * Parses a size: a decimal number followed by an optional unit B, K/KB/KiB,
 * M/MB/MiB, G/GB/GiB or T/TB/TiB. Decimal units (KB) are powers of 1000,
 * binary ones (K, KiB) powers of 1024, as in IEC. Stores the byte count in
 * <out>. Returns 0, or -1 for empty input, a bad unit or an overflow.
 */
int sl_size_parse(const char *s, uint64_t *out);

/*
 * Parses a duration: one or more "<number><unit>" parts with units ms, s, m,
 * h, d ("1h30m", "250ms", "1.5s"). A bare number is seconds. Stores
 * milliseconds in <out>. Returns 0, or -1 for empty input, a bad unit or an
 * overflow.
 */
int sl_duration_parse(const char *s, uint64_t *out_ms);

#endif

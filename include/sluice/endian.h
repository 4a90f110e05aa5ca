/*
 * Little-endian accessors for the on-disk formats (spool segments and
 * checkpoints, the ledger journal) and for hashing input.
 *
 * Every file sluice writes is little-endian on every host, so these read and
 * write one byte at a time with shifts: no alignment is needed and no memcpy
 * (GCC -O2 merges the byte loads into one load on x86; the stores stay a
 * byte loop, as they were in each copy this header replaces).
 *
 * @thread any (pure functions)
 */
#ifndef SLUICE_ENDIAN_H
#define SLUICE_ENDIAN_H

#include <stdint.h>

/* Stores <v> into the 2, 4 or 8 bytes at <p>, least significant byte first. */
static inline void sl_le_put16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}
static inline void sl_le_put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}
static inline void sl_le_put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

/* Loads the 2, 4 or 8 bytes at <p>, least significant byte first. */
static inline uint16_t sl_le_get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t sl_le_get32(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t sl_le_get64(const uint8_t *p) {
  return (uint64_t)sl_le_get32(p) | ((uint64_t)sl_le_get32(p + 4) << 32);
}

#endif

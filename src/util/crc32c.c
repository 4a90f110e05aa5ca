/*
 * CRC32C: slicing-by-8 tables, and the SSE4.2 crc32 instruction on x86-64
 * when cpuid says it is there.
 *
 * The hardware path is compiled with a target attribute so the rest of the
 * build needs no -msse4.2; the dispatch is decided once with pthread_once.
 */
#include "sluice/crc32c.h"

#include <pthread.h>
#include <string.h>

#define POLY 0x82F63B78u

static uint32_t table[8][256];
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int have_hw;

static void crc_init(void) {
  for (uint32_t n = 0; n < 256; n++) {
    uint32_t c = n;
    for (int k = 0; k < 8; k++)
      c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
    table[0][n] = c;
  }
  for (uint32_t n = 0; n < 256; n++) {
    uint32_t c = table[0][n];
    for (int k = 1; k < 8; k++) {
      c = table[0][c & 0xff] ^ (c >> 8);
      table[k][n] = c;
    }
  }
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  have_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
}

uint32_t sl_crc32c_sw(uint32_t crc, const void *data, size_t len) {
  const unsigned char *p = data;

  pthread_once(&init_once, crc_init);
  crc = ~crc;
  while (len >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    /* The tables assume little-endian word order, true on every target we build for. */
    uint32_t lo = (uint32_t)w ^ crc;
    uint32_t hi = (uint32_t)(w >> 32);
    crc = table[7][lo & 0xff] ^ table[6][(lo >> 8) & 0xff] ^ table[5][(lo >> 16) & 0xff] ^
          table[4][lo >> 24] ^ table[3][hi & 0xff] ^ table[2][(hi >> 8) & 0xff] ^
          table[1][(hi >> 16) & 0xff] ^ table[0][hi >> 24];
    p += 8;
    len -= 8;
  }
  while (len--)
    crc = table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return ~crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const void *data,
                                                         size_t len) {
  const unsigned char *p = data;
  uint64_t c = ~crc;

  while (len >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    c = __builtin_ia32_crc32di(c, w);
    p += 8;
    len -= 8;
  }
  uint32_t c32 = (uint32_t)c;
  while (len--)
    c32 = __builtin_ia32_crc32qi(c32, *p++);
  return ~c32;
}
#endif

uint32_t sl_crc32c(uint32_t crc, const void *data, size_t len) {
  pthread_once(&init_once, crc_init);
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (have_hw)
    return crc_hw(crc, data, len);
#endif
  return sl_crc32c_sw(crc, data, len);
}

int sl_crc32c_hw_available(void) {
  pthread_once(&init_once, crc_init);
  return have_hw;
}

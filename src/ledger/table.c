/*
 * The ledger module's shared pieces: the open-addressing index (layout and
 * invariants in ledger_int.h), SipHash-2-4 for client-chosen keys, and the
 * random seeds.
 *
 * @thread any (no shared state); each table is used by its owner only
 */
#include "ledger/ledger_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "sluice/endian.h"

static uint32_t cell_node(uint64_t cell) { return (uint32_t)cell - 1; }
static uint32_t cell_hash(uint64_t cell) { return (uint32_t)(cell >> 32); }

int sl__ledger_table_init(struct sl__ledger_table *t, size_t nodes) {
  size_t n = 16;

  while (n < nodes * 2)
    n *= 2;
  uint64_t *cells = calloc(n, sizeof(*cells));
  if (cells == NULL)
    return -ENOMEM;
  t->cells = cells;
  t->mask = (uint32_t)(n - 1);
  return 0;
}

int sl__ledger_table_resize(struct sl__ledger_table *t, size_t nodes) {
  struct sl__ledger_table n;

  if (sl__ledger_table_init(&n, nodes) != 0)
    return -ENOMEM;
  /* The cells carry their hash, so moving them needs no look at the nodes. */
  for (size_t i = 0; i <= t->mask; i++) {
    uint64_t cell = t->cells[i];
    if (cell == 0)
      continue;
    size_t j = cell_hash(cell) & n.mask;
    while (n.cells[j] != 0)
      j = (j + 1) & n.mask;
    n.cells[j] = cell;
  }
  sl__ledger_table_dispose(t);
  *t = n;
  return 0;
}

void sl__ledger_table_dispose(struct sl__ledger_table *t) {
  free(t->cells);
  t->cells = NULL;
  t->mask = 0;
}

void sl__ledger_table_insert(struct sl__ledger_table *t, uint32_t hash, uint32_t node) {
  size_t i = hash & t->mask;

  while (t->cells[i] != 0)
    i = (i + 1) & t->mask;
  t->cells[i] = ((uint64_t)hash << 32) | ((uint64_t)node + 1);
}

uint32_t sl__ledger_table_find(const struct sl__ledger_table *t, uint32_t hash,
                               int (*eq)(const void *ctx, uint32_t node), const void *ctx,
                               size_t *cell_out) {
  size_t i = hash & t->mask;
  uint64_t cell;

  /* The load is at most one half, so an empty cell always ends the probe. */
  while ((cell = t->cells[i]) != 0) {
    if (cell_hash(cell) == hash && eq(ctx, cell_node(cell))) {
      if (cell_out != NULL)
        *cell_out = i;
      return cell_node(cell);
    }
    i = (i + 1) & t->mask;
  }
  return SL__LEDGER_NONE;
}

void sl__ledger_table_remove_at(struct sl__ledger_table *t, size_t cell) {
  size_t hole = cell, i = cell;

  /*
   * Backward shift: a later cell in the same run may move into the hole if
   * its home is not inside (hole, i], i.e. if a probe from its home passes
   * the hole. Moving it keeps every cell reachable from its home without a
   * tombstone.
   */
  for (;;) {
    i = (i + 1) & t->mask;
    if (t->cells[i] == 0)
      break;
    size_t home = cell_hash(t->cells[i]) & t->mask;
    size_t dist_home = (i - home) & t->mask; /* probe length of cell i */
    size_t dist_hole = (i - hole) & t->mask; /* how far back the hole is */
    if (dist_home >= dist_hole) {
      t->cells[hole] = t->cells[i];
      hole = i;
    }
  }
  t->cells[hole] = 0;
}

size_t sl__ledger_table_count(const struct sl__ledger_table *t) {
  size_t n = 0;

  if (t->cells == NULL)
    return 0;
  for (size_t i = 0; i <= t->mask; i++)
    n += t->cells[i] != 0;
  return n;
}

uint64_t sl__ledger_mix64(uint64_t x) {
  /* splitmix64's finaliser: every input bit affects every output bit. */
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

void sl__ledger_seed(uint8_t seed[16]) {
  size_t got = 0;

  while (got < 16) {
    ssize_t n = getrandom(seed + got, 16 - got, GRND_NONBLOCK);
    if (n <= 0)
      break;
    got += (size_t)n;
  }
  if (got == 16)
    return;
  /*
   * No entropy yet (early boot) or no getrandom: fall back to values an
   * outside client cannot observe well. Weaker, but the index still works;
   * the seed only makes collisions hard to craft.
   */
  struct timespec rt, mt;
  clock_gettime(CLOCK_REALTIME, &rt);
  clock_gettime(CLOCK_MONOTONIC, &mt);
  uint64_t a = sl__ledger_mix64((uint64_t)rt.tv_sec * 1000000000ull + (uint64_t)rt.tv_nsec);
  uint64_t b = sl__ledger_mix64(a ^ ((uint64_t)mt.tv_sec * 1000000000ull + (uint64_t)mt.tv_nsec) ^
                                (uint64_t)(uintptr_t)seed ^ (uint64_t)(uintptr_t)&rt);
  memcpy(seed, &a, 8);
  memcpy(seed + 8, &b, 8);
}

static uint64_t rotl(uint64_t x, unsigned b) { return (x << b) | (x >> (64 - b)); }

#define SIPROUND                                                                                   \
  do {                                                                                             \
    v0 += v1;                                                                                      \
    v1 = rotl(v1, 13);                                                                             \
    v1 ^= v0;                                                                                      \
    v0 = rotl(v0, 32);                                                                             \
    v2 += v3;                                                                                      \
    v3 = rotl(v3, 16);                                                                             \
    v3 ^= v2;                                                                                      \
    v0 += v3;                                                                                      \
    v3 = rotl(v3, 21);                                                                             \
    v3 ^= v0;                                                                                      \
    v2 += v1;                                                                                      \
    v1 = rotl(v1, 17);                                                                             \
    v1 ^= v2;                                                                                      \
    v2 = rotl(v2, 32);                                                                             \
  } while (0)

uint64_t sl__ledger_siphash(const uint8_t key[16], const void *data, size_t len) {
  const uint8_t *p = data;
  uint64_t k0 = sl_le_get64(key), k1 = sl_le_get64(key + 8);
  uint64_t v0 = k0 ^ 0x736f6d6570736575ull;
  uint64_t v1 = k1 ^ 0x646f72616e646f6dull;
  uint64_t v2 = k0 ^ 0x6c7967656e657261ull;
  uint64_t v3 = k1 ^ 0x7465646279746573ull;
  size_t words = len / 8;

  for (size_t w = 0; w < words; w++, p += 8) {
    uint64_t m = sl_le_get64(p);
    v3 ^= m;
    SIPROUND;
    SIPROUND;
    v0 ^= m;
  }
  /* The last block: the remaining bytes, with the length's low byte on top. */
  uint64_t b = (uint64_t)len << 56;
  for (size_t r = 0; r < (len & 7); r++)
    b |= (uint64_t)p[r] << (8 * r);
  v3 ^= b;
  SIPROUND;
  SIPROUND;
  v0 ^= b;
  v2 ^= 0xff;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}

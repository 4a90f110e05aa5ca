/*
 * Idempotency keys: (scope, key) -> first request id, for a time window,
 * bounded by a capacity.
 *
 * Layout (ledger_int.h): a FIFO ring of fixed-size slots in put order, which
 * is time order, so both expiry and eviction take from the head in O(1); an
 * open-addressing index maps the key's hash to its slot. A key that is
 * replaced, removed or found expired in the middle of the ring leaves a
 * tombstone (its bytes are freed at once) that the head drops when it gets
 * there. Tombstones never make up more than half of a full ring: when the
 * ring is full and half of it is tombstones, it is compacted in place
 * (amortised O(1) per put, and no allocation, so it cannot fail).
 *
 * Keys are client data. They are hashed with SipHash-2-4 under a random
 * per-index seed, with the scope in front, so a client cannot build keys that
 * collide in the index without seeing its layout; they are compared byte for
 * byte, so a hash collision never returns the wrong id.
 *
 * @thread owner only
 */
#include "sluice/ledger.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ledger/ledger_int.h"
#include "sluice/endian.h"

#define NONE SL__LEDGER_NONE

static int bad_key(const char *key, size_t len) {
  return key == NULL || len == 0 || len > SL_DEDUPE_KEY_MAX;
}

static uint32_t key_hash(const struct sl_dedupe *d, uint16_t scope, const char *key, size_t len) {
  uint8_t buf[2 + SL_DEDUPE_KEY_MAX];

  sl_le_put16(buf, scope);
  memcpy(buf + 2, key, len);
  return (uint32_t)(sl__ledger_siphash(d->seed, buf, 2 + len) >> 32);
}

struct key_query {
  const struct sl_dedupe *d;
  const char *key;
  size_t len;
  uint16_t scope;
};

static int key_eq(const void *ctx, uint32_t slot) {
  const struct key_query *q = ctx;
  const struct sl__dedupe_node *node = &q->d->ring[slot];

  return node->scope == q->scope && node->key_len == q->len && node->key != NULL &&
         memcmp(node->key, q->key, q->len) == 0;
}

static uint32_t find(const struct sl_dedupe *d, uint16_t scope, const char *key, size_t len,
                     uint32_t hash, size_t *cell) {
  struct key_query q = {d, key, len, scope};

  return sl__ledger_table_find(&d->table, hash, key_eq, &q, cell);
}

static int slot_eq(const void *ctx, uint32_t slot) { return *(const uint32_t *)ctx == slot; }

static uint32_t ring_pos(const struct sl_dedupe *d, uint32_t i) {
  uint64_t p = (uint64_t)d->head + i;

  return (uint32_t)(p < d->ring_alloc ? p : p - d->ring_alloc);
}

static int expired(const struct sl_dedupe *d, const struct sl__dedupe_node *node, uint64_t now) {
  if (d->window_ms == 0)
    return 1;
  if (now < node->t_ms)
    return 0; /* the wall clock stepped back: count it as fresh */
  return now - node->t_ms >= d->window_ms;
}

/* Turns live slot <slot>, whose index cell is <cell>, into a tombstone. */
static void kill_slot(struct sl_dedupe *d, uint32_t slot, size_t cell) {
  sl__ledger_table_remove_at(&d->table, cell);
  free(d->ring[slot].key);
  d->ring[slot].key = NULL;
  d->live--;
}

/* Drops the oldest slot, live or not. */
static void pop_head(struct sl_dedupe *d) {
  uint32_t slot = d->head;
  struct sl__dedupe_node *node = &d->ring[slot];
  size_t cell;

  if (node->key != NULL) {
    sl__ledger_table_find(&d->table, node->hash, slot_eq, &slot, &cell);
    kill_slot(d, slot, cell);
  }
  d->head = ring_pos(d, 1);
  d->len--;
}

/* Drops tombstones and expired keys from the old end. */
static void collect(struct sl_dedupe *d, uint64_t now) {
  while (d->len > 0) {
    const struct sl__dedupe_node *node = &d->ring[d->head];
    if (node->key != NULL && !expired(d, node, now))
      break;
    pop_head(d);
  }
}

/* Squeezes the tombstones out of the ring, keeping the order, and rebuilds
 * the index in place. */
static void compact(struct sl_dedupe *d) {
  uint32_t kept = 0;

  for (uint32_t i = 0; i < d->len; i++) {
    uint32_t from = ring_pos(d, i);
    if (d->ring[from].key == NULL)
      continue;
    /* <kept> <= <i>: the destination has been read already. */
    d->ring[ring_pos(d, kept)] = d->ring[from];
    kept++;
  }
  d->len = kept;
  memset(d->table.cells, 0, ((size_t)d->table.mask + 1) * sizeof(*d->table.cells));
  for (uint32_t i = 0; i < d->len; i++) {
    uint32_t slot = ring_pos(d, i);
    sl__ledger_table_insert(&d->table, d->ring[slot].hash, slot);
  }
}

/* Doubles the ring (up to the capacity), unrolling it to start at 0, and
 * rebuilds the index for the new size. Returns 0 or -ENOMEM (no change). */
static int grow(struct sl_dedupe *d) {
  size_t n = (size_t)d->ring_alloc * 2;
  struct sl__ledger_table t;

  if (n > d->capacity)
    n = d->capacity;
  struct sl__dedupe_node *ring = malloc(n * sizeof(*ring));
  if (ring == NULL)
    return -ENOMEM;
  if (sl__ledger_table_init(&t, n) != 0) {
    free(ring);
    return -ENOMEM;
  }
  for (uint32_t i = 0; i < d->len; i++) {
    ring[i] = d->ring[ring_pos(d, i)];
    if (ring[i].key != NULL)
      sl__ledger_table_insert(&t, ring[i].hash, i);
  }
  free(d->ring);
  sl__ledger_table_dispose(&d->table);
  d->ring = ring;
  d->ring_alloc = (uint32_t)n;
  d->head = 0;
  d->table = t;
  return 0;
}

struct sl_dedupe *sl_dedupe_create(size_t capacity, uint64_t window_ms) {
  struct sl_dedupe *d = NULL;

  if (capacity == 0 || capacity > SL_LEDGER_CAPACITY_MAX)
    goto fail;
  d = calloc(1, sizeof(*d));
  if (d == NULL)
    goto fail;
  d->capacity = capacity;
  d->window_ms = window_ms;
  d->ring_alloc = (uint32_t)(capacity < 16 ? capacity : 16);
  d->ring = malloc((size_t)d->ring_alloc * sizeof(*d->ring));
  if (d->ring == NULL)
    goto fail;
  if (sl__ledger_table_init(&d->table, d->ring_alloc) != 0)
    goto fail;
  sl__ledger_seed(d->seed);
  return d;

fail:
  sl_dedupe_destroy(d);
  return NULL;
}

void sl_dedupe_destroy(struct sl_dedupe *d) {
  if (d == NULL)
    return;
  if (d->ring != NULL) {
    for (uint32_t i = 0; i < d->len; i++)
      free(d->ring[ring_pos(d, i)].key);
  }
  free(d->ring);
  sl__ledger_table_dispose(&d->table);
  free(d);
}

void sl_dedupe_set_window(struct sl_dedupe *d, uint64_t window_ms) { d->window_ms = window_ms; }

int sl_dedupe_get(struct sl_dedupe *d, uint16_t scope, const char *key, size_t key_len,
                  uint64_t now_ms, uint8_t id_out[16]) {
  size_t cell;

  if (bad_key(key, key_len))
    return SL_ELEDGER_BADKEY;
  collect(d, now_ms);
  uint32_t slot = find(d, scope, key, key_len, key_hash(d, scope, key, key_len), &cell);
  if (slot == NONE)
    return 0;
  if (expired(d, &d->ring[slot], now_ms)) {
    kill_slot(d, slot, cell);
    return 0;
  }
  memcpy(id_out, d->ring[slot].id, 16);
  return 1;
}

static int put_key(struct sl_dedupe *d, uint16_t scope, const char *key, size_t key_len,
                   const uint8_t id[16], uint64_t now_ms) {
  size_t cell;
  char *copy;

  if (bad_key(key, key_len))
    return SL_ELEDGER_BADKEY;
  copy = malloc(key_len);
  if (copy == NULL)
    return -ENOMEM;
  memcpy(copy, key, key_len);
  collect(d, now_ms);
  if (d->len == d->ring_alloc) {
    if ((d->len - d->live) * 2 >= d->len) {
      compact(d);
    } else if (d->ring_alloc < d->capacity) {
      if (grow(d) != 0) {
        free(copy);
        return -ENOMEM;
      }
    } else {
      pop_head(d); /* full: the oldest key goes, even inside its window */
    }
  }

  uint32_t hash = key_hash(d, scope, key, key_len);
  uint32_t old = find(d, scope, key, key_len, hash, &cell);
  if (old != NONE)
    kill_slot(d, old, cell);
  uint32_t slot = ring_pos(d, d->len);
  struct sl__dedupe_node *node = &d->ring[slot];
  memcpy(node->id, id, 16);
  node->t_ms = now_ms;
  node->key = copy;
  node->hash = hash;
  node->scope = scope;
  node->key_len = (uint16_t)key_len;
  sl__ledger_table_insert(&d->table, hash, slot);
  d->len++;
  d->live++;
  return 0;
}

uint64_t sl_dedupe_window(const struct sl_dedupe *d) { return d->window_ms; }

size_t sl_dedupe_capacity(const struct sl_dedupe *d) { return d->capacity; }

int sl_dedupe_put(struct sl_dedupe *d, uint16_t scope, const char *key, size_t key_len,
                  const uint8_t id[16], uint64_t now_ms) {
  int rc = put_key(d, scope, key, key_len, id, now_ms);

  /* Here rather than in each caller, so that no change can skip the journal. */
  if (rc == 0 && d->journal != NULL)
    sl__journal_key(d->journal, scope, key, key_len, id, now_ms);
  return rc;
}

static int remove_key(struct sl_dedupe *d, uint16_t scope, const char *key, size_t key_len) {
  size_t cell;

  if (bad_key(key, key_len))
    return SL_ELEDGER_BADKEY;
  uint32_t slot = find(d, scope, key, key_len, key_hash(d, scope, key, key_len), &cell);
  if (slot == NONE)
    return SL_ELEDGER_NOTFOUND;
  kill_slot(d, slot, cell);
  return 0;
}

int sl_dedupe_remove(struct sl_dedupe *d, uint16_t scope, const char *key, size_t key_len) {
  int rc = remove_key(d, scope, key, key_len);

  if (rc == 0 && d->journal != NULL)
    sl__journal_key(d->journal, scope, key, key_len, NULL, 0);
  return rc;
}

size_t sl_dedupe_count(const struct sl_dedupe *d) { return d->live; }

/* ------------------------------------------------------------------------ */

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond))                                                                                   \
      return -__LINE__;                                                                            \
  } while (0)

int sl__dedupe_check(const struct sl_dedupe *d) {
  size_t live = 0;

  CHECK(d->ring_alloc >= 1 && d->ring_alloc <= d->capacity);
  CHECK(d->head < d->ring_alloc && d->len <= d->ring_alloc);
  CHECK((size_t)d->ring_alloc * 2 <= (size_t)d->table.mask + 1);
  for (uint32_t i = 0; i < d->len; i++) {
    uint32_t slot = ring_pos(d, i);
    const struct sl__dedupe_node *node = &d->ring[slot];
    if (node->key == NULL)
      continue;
    CHECK(node->key_len >= 1 && node->key_len <= SL_DEDUPE_KEY_MAX);
    CHECK(node->hash == key_hash(d, node->scope, node->key, node->key_len));
    CHECK(find(d, node->scope, node->key, node->key_len, node->hash, NULL) == slot);
    live++;
  }
  CHECK(live == d->live);
  CHECK(sl__ledger_table_count(&d->table) == d->live);
  return 0;
}

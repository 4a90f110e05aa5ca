/*
 * Status ledger: request id -> status entry, bounded by a capacity.
 *
 * Layout (ledger_int.h): entries live in a node array that doubles up to the
 * capacity; an open-addressing index maps the id's hash to the node. Every
 * node in use is on exactly one of two doubly linked lists that give the
 * eviction order: PENDING (queued, in flight, cancelled while the spool still
 * holds the record) in insertion order and SETTLED (delivered, dead, purged,
 * lost, cancelled and settled) in the order they settled. Eviction takes the head of
 * SETTLED, else the head of PENDING, so it is O(1). Error texts are the bulky
 * part of an entry and most entries have none, so they live in a separate
 * pool of fixed slots, allocated only for entries that carry one.
 *
 * Ids are random (16 bytes from the proxy), so a cheap mix of them with a
 * per-ledger seed is a good hash; the seed still keeps the layout
 * unpredictable should ids ever come from outside.
 *
 * Every put either succeeds or leaves the ledger unchanged: all allocation
 * happens before the first change.
 *
 * @thread owner only
 */
#include "sluice/ledger.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ledger/ledger_int.h"

#define NONE SL__LEDGER_NONE

const char *sl_ledger_state_name(enum sl_ledger_state state) {
  switch (state) {
  case SL_LEDGER_QUEUED:
    return "queued";
  case SL_LEDGER_INFLIGHT:
    return "in_flight";
  case SL_LEDGER_DELIVERED:
    return "delivered";
  case SL_LEDGER_DEAD:
    return "dead";
  case SL_LEDGER_PURGED:
    return "purged";
  case SL_LEDGER_CANCELLED:
    return "cancelled";
  case SL_LEDGER_LOST:
    return "lost";
  case SL_LEDGER_EXPIRED:
    return "expired";
  }
  return "unknown";
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

int sl_ledger_id_parse(const char *hex, size_t len, uint8_t id[16]) {
  if (hex == NULL || len != SL_LEDGER_ID_HEX)
    return -1;
  for (size_t i = 0; i < 16; i++) {
    int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return -1;
    id[i] = (uint8_t)(hi << 4 | lo);
  }
  return 0;
}

void sl_ledger_id_format(const uint8_t id[16], char out[33]) {
  static const char digits[] = "0123456789abcdef";

  for (size_t i = 0; i < 16; i++) {
    out[2 * i] = digits[id[i] >> 4];
    out[2 * i + 1] = digits[id[i] & 15];
  }
  out[32] = '\0';
}

/* ------------------------------------------------------------------------ */

static uint32_t id_hash(const struct sl_ledger *l, const uint8_t id[16]) {
  uint64_t a, b;

  /* Both halves count, so ids that share a prefix (say, from a future id
   * scheme with a timestamp in front) still spread over the index. */
  memcpy(&a, id, 8);
  memcpy(&b, id + 8, 8);
  return (uint32_t)(sl__ledger_mix64(sl__ledger_mix64(a ^ l->seed[0]) ^ b ^ l->seed[1]) >> 32);
}

struct id_query {
  const struct sl_ledger *l;
  const uint8_t *id;
};

static int id_eq(const void *ctx, uint32_t node) {
  const struct id_query *q = ctx;

  return memcmp(q->l->nodes[node].id, q->id, 16) == 0;
}

static uint32_t find(const struct sl_ledger *l, const uint8_t id[16], size_t *cell) {
  struct id_query q = {l, id};

  return sl__ledger_table_find(&l->table, id_hash(l, id), id_eq, &q, cell);
}

/* The eviction class of an entry in <state> with <flags>: a held cancellation
 * stays pending, since forgetting it would let its record be delivered. */
static int class_of(uint8_t state, uint8_t flags) {
  if (state == SL_LEDGER_CANCELLED && (flags & SL_LEDGER_F_HELD))
    return SL__LEDGER_PENDING;
  return state >= SL_LEDGER_DELIVERED ? SL__LEDGER_SETTLED : SL__LEDGER_PENDING;
}

static void list_append(struct sl_ledger *l, int which, uint32_t n) {
  struct sl__ledger_list *list = &l->lists[which];

  l->nodes[n].prev = list->tail;
  l->nodes[n].next = NONE;
  if (list->tail != NONE)
    l->nodes[list->tail].next = n;
  else
    list->head = n;
  list->tail = n;
  list->len++;
}

static void list_unlink(struct sl_ledger *l, int which, uint32_t n) {
  struct sl__ledger_list *list = &l->lists[which];
  struct sl__ledger_node *node = &l->nodes[n];

  if (node->prev != NONE)
    l->nodes[node->prev].next = node->next;
  else
    list->head = node->next;
  if (node->next != NONE)
    l->nodes[node->next].prev = node->prev;
  else
    list->tail = node->prev;
  list->len--;
}

static uint32_t err_link(const struct sl_ledger *l, uint32_t slot) {
  uint32_t next;

  memcpy(&next, l->errs[slot], sizeof(next));
  return next;
}

/*
 * Makes sure one error slot can be taken without allocating. The pool may
 * hold capacity + 1 slots: a put into a full ledger whose entries all carry
 * an error reserves its slot before the eviction that frees one.
 */
static int err_reserve(struct sl_ledger *l) {
  if (l->errs_free != NONE || l->errs_top < l->errs_alloc)
    return 0;
  size_t limit = l->capacity + 1;
  size_t n = l->errs_alloc == 0 ? 16 : (size_t)l->errs_alloc * 2;
  if (n > limit)
    n = limit;
  void *p = realloc(l->errs, n * SL_LEDGER_ERROR_MAX);
  if (p == NULL)
    return -ENOMEM;
  l->errs = p;
  l->errs_alloc = (uint32_t)n;
  return 0;
}

/* Takes a slot; err_reserve() has made sure there is one. */
static uint32_t err_take(struct sl_ledger *l) {
  uint32_t slot;

  if (l->errs_free != NONE) {
    slot = l->errs_free;
    l->errs_free = err_link(l, slot);
  } else {
    slot = l->errs_top++;
  }
  l->errs_used++;
  return slot;
}

static void err_release(struct sl_ledger *l, uint32_t slot) {
  memcpy(l->errs[slot], &l->errs_free, sizeof(l->errs_free));
  l->errs_free = slot;
  l->errs_used--;
}

/* Removes node <n>, whose index cell is <cell>, and puts it on the free list. */
static void remove_node(struct sl_ledger *l, uint32_t n, size_t cell) {
  struct sl__ledger_node *node = &l->nodes[n];

  sl__ledger_table_remove_at(&l->table, cell);
  list_unlink(l, class_of(node->state, node->flags), n);
  if (node->err != NONE)
    err_release(l, node->err);
  node->err = NONE;
  node->used = 0;
  node->next = l->free_head;
  l->free_head = n;
  l->count--;
}

static void evict_one(struct sl_ledger *l) {
  uint32_t victim = l->lists[SL__LEDGER_SETTLED].head;
  size_t cell = 0;

  if (victim == NONE)
    victim = l->lists[SL__LEDGER_PENDING].head;
  uint32_t found = find(l, l->nodes[victim].id, &cell);
  assert(found == victim); /* every node in use is indexed */
  (void)found;
  remove_node(l, victim, cell);
}

/* Makes sure a node can be taken from the free list or the array's top. */
static int nodes_reserve(struct sl_ledger *l) {
  if (l->free_head != NONE || l->nodes_top < l->nodes_alloc)
    return 0;
  size_t n = (size_t)l->nodes_alloc * 2;
  if (n > l->capacity)
    n = l->capacity;
  void *p = realloc(l->nodes, n * sizeof(*l->nodes));
  if (p == NULL)
    return -ENOMEM;
  l->nodes = p;
  l->nodes_alloc = (uint32_t)n;
  return 0;
}

/* Makes sure the index stays at or below half load with <count> entries. */
static int table_reserve(struct sl_ledger *l, size_t count) {
  if (count * 2 <= (size_t)l->table.mask + 1)
    return 0;
  return sl__ledger_table_resize(&l->table, count > l->nodes_alloc ? count : l->nodes_alloc);
}

struct sl_ledger *sl_ledger_create(size_t capacity) {
  struct sl_ledger *l = NULL;
  uint8_t seed[16];

  if (capacity == 0 || capacity > SL_LEDGER_CAPACITY_MAX)
    goto fail;
  l = calloc(1, sizeof(*l));
  if (l == NULL)
    goto fail;
  l->capacity = capacity;
  l->nodes_alloc = (uint32_t)(capacity < 16 ? capacity : 16);
  l->nodes = malloc((size_t)l->nodes_alloc * sizeof(*l->nodes));
  if (l->nodes == NULL)
    goto fail;
  if (sl__ledger_table_init(&l->table, l->nodes_alloc) != 0)
    goto fail;
  l->free_head = NONE;
  l->errs_free = NONE;
  for (int i = 0; i < 2; i++)
    l->lists[i] = (struct sl__ledger_list){NONE, NONE, 0};
  sl__ledger_seed(seed);
  memcpy(l->seed, seed, sizeof(l->seed));
  return l;

fail:
  sl_ledger_destroy(l);
  return NULL;
}

void sl_ledger_destroy(struct sl_ledger *l) {
  if (l == NULL)
    return;
  sl__ledger_table_dispose(&l->table);
  free(l->nodes);
  free(l->errs);
  free(l);
}

static int put_entry(struct sl_ledger *l, const struct sl_ledger_entry *e) {
  size_t cell;
  uint32_t n = find(l, e->id, &cell);
  int want_err = e->error[0] != '\0';
  int rc;

  if ((unsigned)e->state > SL_LEDGER_STATE_MAX || (e->flags & ~SL_LEDGER_F_HELD) != 0 ||
      ((e->flags & SL_LEDGER_F_HELD) && e->state != SL_LEDGER_CANCELLED))
    return -EINVAL;
  /* Reserve everything first, so that a failure changes nothing. */
  if (want_err && (n == NONE || l->nodes[n].err == NONE) && (rc = err_reserve(l)) != 0)
    return rc;
  if (n == NONE) {
    if (l->count < l->capacity) {
      if ((rc = nodes_reserve(l)) != 0 || (rc = table_reserve(l, l->count + 1)) != 0)
        return rc;
    } else {
      evict_one(l);
    }
    if (l->free_head != NONE) {
      n = l->free_head;
      l->free_head = l->nodes[n].next;
    } else {
      n = l->nodes_top++;
    }
    l->nodes[n].used = 1;
    l->nodes[n].err = NONE;
    l->nodes[n].state = (uint8_t)e->state;
    l->nodes[n].flags = e->flags;
    memcpy(l->nodes[n].id, e->id, 16);
    sl__ledger_table_insert(&l->table, id_hash(l, e->id), n);
    list_append(l, class_of(l->nodes[n].state, l->nodes[n].flags), n);
    l->count++;
  } else if (class_of(l->nodes[n].state, l->nodes[n].flags) !=
             class_of((uint8_t)e->state, e->flags)) {
    list_unlink(l, class_of(l->nodes[n].state, l->nodes[n].flags), n);
    list_append(l, class_of((uint8_t)e->state, e->flags), n);
  }

  struct sl__ledger_node *node = &l->nodes[n];
  node->state = (uint8_t)e->state;
  node->flags = e->flags;
  node->upstream = e->upstream;
  node->status = e->status;
  node->attempts = e->attempts;
  node->seq = e->seq;
  node->enqueued_ms = e->enqueued_ms;
  node->updated_ms = e->updated_ms;
  node->not_before_ms = e->not_before_ms;
  if (want_err) {
    if (node->err == NONE)
      node->err = err_take(l);
    size_t len = strnlen(e->error, SL_LEDGER_ERROR_MAX - 1);
    memcpy(l->errs[node->err], e->error, len);
    l->errs[node->err][len] = '\0';
  } else if (node->err != NONE) {
    err_release(l, node->err);
    node->err = NONE;
  }
  return 0;
}

void sl__ledger_node_entry(const struct sl_ledger *l, uint32_t n, struct sl_ledger_entry *out) {
  const struct sl__ledger_node *node = &l->nodes[n];

  memcpy(out->id, node->id, 16);
  out->state = (enum sl_ledger_state)node->state;
  out->flags = node->flags;
  out->upstream = node->upstream;
  out->status = node->status;
  out->attempts = node->attempts;
  out->seq = node->seq;
  out->enqueued_ms = node->enqueued_ms;
  out->updated_ms = node->updated_ms;
  out->not_before_ms = node->not_before_ms;
  if (node->err != NONE)
    memcpy(out->error, l->errs[node->err], SL_LEDGER_ERROR_MAX);
  else
    out->error[0] = '\0';
}

void sl_ledger_each_pending(const struct sl_ledger *l,
                            void (*cb)(void *arg, const struct sl_ledger_entry *e), void *arg) {
  struct sl_ledger_entry e;

  for (uint32_t n = l->lists[SL__LEDGER_PENDING].head; n != NONE; n = l->nodes[n].next) {
    sl__ledger_node_entry(l, n, &e);
    cb(arg, &e);
  }
}

int sl_ledger_get(const struct sl_ledger *l, const uint8_t id[16], struct sl_ledger_entry *out) {
  uint32_t n = find(l, id, NULL);

  if (n == NONE)
    return 0;
  sl__ledger_node_entry(l, n, out);
  return 1;
}

int sl_ledger_put(struct sl_ledger *l, const struct sl_ledger_entry *e) {
  int rc = put_entry(l, e);

  /* Here rather than in each caller, so that no change can skip the journal. */
  if (rc == 0 && l->journal != NULL)
    sl__journal_entry(l->journal, e);
  return rc;
}

int sl_ledger_remove(struct sl_ledger *l, const uint8_t id[16]) {
  size_t cell;
  uint32_t n = find(l, id, &cell);

  if (n == NONE)
    return SL_ELEDGER_NOTFOUND;
  remove_node(l, n, cell);
  if (l->journal != NULL)
    sl__journal_entry_removed(l->journal, id);
  return 0;
}

size_t sl_ledger_count(const struct sl_ledger *l) { return l->count; }

size_t sl_ledger_capacity(const struct sl_ledger *l) { return l->capacity; }

/* ------------------------------------------------------------------------ */

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond))                                                                                   \
      return -__LINE__;                                                                            \
  } while (0)

int sl__ledger_check(const struct sl_ledger *l) {
  size_t with_err = 0, free_len = 0, errs_free_len = 0;

  CHECK(l->count <= l->capacity);
  CHECK(l->nodes_alloc <= l->capacity && l->nodes_top <= l->nodes_alloc);
  CHECK(l->errs_alloc <= l->capacity + 1 && l->errs_top <= l->errs_alloc);
  CHECK(l->count * 2 <= (size_t)l->table.mask + 1);
  CHECK(sl__ledger_table_count(&l->table) == l->count);
  CHECK(l->lists[0].len + l->lists[1].len == l->count);
  for (int which = 0; which < 2; which++) {
    uint32_t prev = NONE;
    size_t len = 0;
    for (uint32_t n = l->lists[which].head; n != NONE; n = l->nodes[n].next) {
      CHECK(n < l->nodes_top && len < l->count);
      const struct sl__ledger_node *node = &l->nodes[n];
      CHECK(node->used && node->prev == prev && class_of(node->state, node->flags) == which);
      CHECK(find(l, node->id, NULL) == n);
      if (node->err != NONE) {
        CHECK(node->err < l->errs_top);
        CHECK(memchr(l->errs[node->err], '\0', SL_LEDGER_ERROR_MAX) != NULL);
        with_err++;
      }
      prev = n;
      len++;
    }
    CHECK(len == l->lists[which].len && prev == l->lists[which].tail);
  }
  for (uint32_t n = l->free_head; n != NONE; n = l->nodes[n].next) {
    CHECK(n < l->nodes_top && free_len < l->nodes_top && !l->nodes[n].used);
    free_len++;
  }
  CHECK(free_len + l->count == l->nodes_top);
  CHECK(with_err == l->errs_used);
  for (uint32_t s = l->errs_free; s != NONE; s = err_link(l, s)) {
    CHECK(s < l->errs_top && errs_free_len < l->errs_top);
    errs_free_len++;
  }
  CHECK(errs_free_len + l->errs_used == l->errs_top);
  return 0;
}

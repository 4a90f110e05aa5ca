/*
 * Ledger internals: the layouts of struct sl_ledger and struct sl_dedupe, the
 * open-addressing index both use, and the hashes. For the module's own files
 * and its tests.
 *
 * The index (struct sl__ledger_table) maps a 32-bit hash to a 32-bit slot
 * number in the owner's node array. Each table cell is one uint64_t:
 * (hash << 32) | (node + 1), 0 meaning empty. Keeping the hash in the cell
 * lets a probe skip non-matching cells without touching the node, and lets a
 * removal find each cell's home without rehashing its key. Probing is linear;
 * removal shifts the following cells back (no tombstones), so the table never
 * degrades however many inserts and removals it sees. The owner keeps the
 * load at or below one half.
 *
 * @thread owner only
 */
#ifndef SLUICE_LEDGER_INT_H
#define SLUICE_LEDGER_INT_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/ledger.h"

#define SL__LEDGER_NONE UINT32_MAX /* "no node" in links and lookups */

struct sl_ledger_journal;

struct sl__ledger_table {
  uint64_t *cells;
  uint32_t mask; /* cell count - 1; the count is a power of two */
};

/* Makes <t> an empty table with room for at least <nodes> nodes at half load.
 * Returns 0 or -ENOMEM (<t> untouched). The caller disposes of the old one. */
int sl__ledger_table_init(struct sl__ledger_table *t, size_t nodes);

/* Moves every cell of <t> into a new table with room for at least <nodes>
 * nodes at half load. Returns 0 or -ENOMEM (<t> untouched). */
int sl__ledger_table_resize(struct sl__ledger_table *t, size_t nodes);

/* Frees the cells of <t>. Accepts a zeroed <t>. */
void sl__ledger_table_dispose(struct sl__ledger_table *t);

/* Adds <node> under <hash>. The caller has checked that the node is not in
 * <t> yet and that the load stays at or below one half. */
void sl__ledger_table_insert(struct sl__ledger_table *t, uint32_t hash, uint32_t node);

/*
 * Finds the node under <hash> for which <eq>(<ctx>, node) returns nonzero.
 * Returns the node, or SL__LEDGER_NONE. If <cell_out> is not NULL, stores
 * the cell's position there, for sl__ledger_table_remove_at().
 */
uint32_t sl__ledger_table_find(const struct sl__ledger_table *t, uint32_t hash,
                               int (*eq)(const void *ctx, uint32_t node), const void *ctx,
                               size_t *cell_out);

/* Empties cell <cell> (a position from sl__ledger_table_find) and shifts back
 * the cells after it that would otherwise become unreachable. */
void sl__ledger_table_remove_at(struct sl__ledger_table *t, size_t cell);

/* Returns the number of occupied cells (a full scan: for tests). */
size_t sl__ledger_table_count(const struct sl__ledger_table *t);

/* Fills <seed> with random bytes from getrandom(2), or, if that fails, with a
 * mix of the clock and addresses (weaker, but never fails). */
void sl__ledger_seed(uint8_t seed[16]);

/* A fast bijective 64-bit mix (splitmix64's finaliser), for ids that are
 * random already. */
uint64_t sl__ledger_mix64(uint64_t x);

/* SipHash-2-4 of the <len> bytes at <data> under the 128-bit key <key>. */
uint64_t sl__ledger_siphash(const uint8_t key[16], const void *data, size_t len);

/* ------------------------------------------------------------------------ */

/* One ledger entry as stored: 64 bytes; the error text lives apart. */
struct sl__ledger_node {
  uint8_t id[16];
  uint64_t seq;
  uint64_t enqueued_ms;
  uint64_t updated_ms;
  uint64_t not_before_ms;
  uint32_t attempts;
  uint32_t prev, next; /* eviction list links (next also links the free list) */
  uint32_t err;        /* slot in the error pool, or SL__LEDGER_NONE */
  uint16_t upstream;
  uint16_t status;
  uint8_t state; /* enum sl_ledger_state */
  uint8_t used;  /* 0 on the free list */
  uint8_t flags; /* SL_LEDGER_F_* */
};

/* An eviction-order list: head is the next to go. */
struct sl__ledger_list {
  uint32_t head, tail;
  size_t len;
};

enum { SL__LEDGER_PENDING, SL__LEDGER_SETTLED };

struct sl_ledger {
  size_t capacity;
  size_t count;
  struct sl__ledger_node *nodes;
  uint32_t nodes_alloc;            /* nodes allocated; every one below is used or free */
  uint32_t nodes_top;              /* nodes below this have been handed out at least once */
  uint32_t free_head;              /* removed nodes, linked by next */
  struct sl__ledger_list lists[2]; /* indexed by SL__LEDGER_PENDING / SETTLED */
  struct sl__ledger_table table;
  char (*errs)[SL_LEDGER_ERROR_MAX]; /* error texts; free slots link via their first 4 bytes */
  uint32_t errs_alloc, errs_top, errs_free, errs_used;
  uint64_t seed[2];
  struct sl_ledger_journal *journal; /* records changes (journal.c); NULL if none */
};

/* Copies node <n> of <l> out as an entry (sl_ledger_get, and the journal's snapshots). */
void sl__ledger_node_entry(const struct sl_ledger *l, uint32_t n, struct sl_ledger_entry *out);

/* Checks every invariant of <l> (lists, index, free lists, counts). Returns 0
 * or a negative line number that names the failed check. For tests. */
int sl__ledger_check(const struct sl_ledger *l);

/* One idempotency key as stored. A tombstone (<key> NULL) is a slot whose key
 * was replaced or removed; it stays in the ring until the head passes it. */
struct sl__dedupe_node {
  uint8_t id[16];
  uint64_t t_ms;
  char *key; /* malloc'd, <key_len> bytes; NULL for a tombstone */
  uint32_t hash;
  uint16_t scope;
  uint16_t key_len;
};

struct sl_dedupe {
  size_t capacity;
  uint64_t window_ms;
  struct sl__dedupe_node *ring; /* FIFO in put order; <len> slots from <head> */
  uint32_t ring_alloc;
  uint32_t head, len;
  size_t live; /* non-tombstone slots */
  struct sl__ledger_table table;
  uint8_t seed[16];
  struct sl_ledger_journal *journal; /* records changes (journal.c); NULL if none */
};

/* As sl__ledger_check, for <d>. */
int sl__dedupe_check(const struct sl_dedupe *d);

/*
 * journal.c: records a change just made to a ledger or key index in journal <j>, which
 * is attached to it (<journal> above). sl_ledger_put, sl_dedupe_put and sl_dedupe_remove
 * call them, so no change can skip the journal; the journal's own load and its snapshots
 * work on structures it is not attached to. In-flight entries are not recorded (after a
 * restart such a record is queued again). A key with <id> NULL was removed.
 */
void sl__journal_entry(struct sl_ledger_journal *j, const struct sl_ledger_entry *e);
void sl__journal_entry_removed(struct sl_ledger_journal *j, const uint8_t id[16]);
void sl__journal_key(struct sl_ledger_journal *j, uint16_t scope, const char *key, size_t key_len,
                     const uint8_t *id, uint64_t t_ms);

#endif

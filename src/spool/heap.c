/*
 * The due heap: delayed records whose time bucket has come due, as a binary min-heap
 * ordered by due time (then segment and ordinal, so equal times keep their write order).
 * The writer pushes (sl__bucket_index, appends to an indexed bucket), the owner pops
 * (take) and pushes back a record it could not read.
 *
 * Layer: the bottom, beside format.c; depends on nothing else of the spool. Entries hold
 * no reference on their segment: a record in the heap is unsettled, so its segment stays.
 *
 * @thread any, the caller holds spool->mu
 */
#include "spool_int.h"

#include <stdlib.h>

#include "sluice/log.h"

static bool due_less(const struct sl__due *a, const struct sl__due *b) {
  if (a->due_ms != b->due_ms)
    return a->due_ms < b->due_ms;
  if (a->seg->seq != b->seg->seq)
    return a->seg->seq < b->seg->seq;
  return a->ord < b->ord;
}

void sl__heap_push(struct sl_spool *spool, const struct sl__due *d) {
  size_t i;

  if (spool->heap_n == spool->heap_cap) {
    size_t cap = spool->heap_cap ? spool->heap_cap * 2 : 256;
    struct sl__due *h = realloc(spool->heap, cap * sizeof(*h));
    if (h == NULL) {
      /* Not indexed now; the record is delivered after the next open. */
      sl_log_error("spool %s: out of memory for the delayed index", spool->name);
      return;
    }
    spool->heap = h;
    spool->heap_cap = cap;
  }
  i = spool->heap_n++;
  while (i > 0 && due_less(d, &spool->heap[(i - 1) / 2])) {
    spool->heap[i] = spool->heap[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  spool->heap[i] = *d;
}

struct sl__due sl__heap_pop(struct sl_spool *spool) {
  struct sl__due top = spool->heap[0], last = spool->heap[--spool->heap_n];
  size_t i = 0, n = spool->heap_n;

  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n)
      break;
    if (c + 1 < n && due_less(&spool->heap[c + 1], &spool->heap[c]))
      c++;
    if (!due_less(&spool->heap[c], &last))
      break;
    spool->heap[i] = spool->heap[c];
    i = c;
  }
  if (n > 0)
    spool->heap[i] = last;
  return top;
}

/* Counts the entries of the subtree at <i> due by <now> into <n>, their oldest enqueue time
 * into <oldest>. An entry not yet due has none due below it (the heap property), so the walk
 * stops there: depth log2(heap_n), cost O(due). */
static void due_walk(const struct sl_spool *spool, size_t i, uint64_t now, uint64_t *n,
                     uint64_t *oldest) {
  if (i >= spool->heap_n || spool->heap[i].due_ms > now)
    return;
  ++*n;
  if (spool->heap[i].enqueue_ms < *oldest)
    *oldest = spool->heap[i].enqueue_ms;
  due_walk(spool, 2 * i + 1, now, n, oldest);
  due_walk(spool, 2 * i + 2, now, n, oldest);
}

uint64_t sl__heap_due(const struct sl_spool *spool, uint64_t now, uint64_t *oldest) {
  uint64_t n = 0;

  *oldest = UINT64_MAX;
  due_walk(spool, 0, now, &n, oldest);
  return n;
}

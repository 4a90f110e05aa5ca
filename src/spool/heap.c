/*
 * The due index of delayed records, and a set of times that knows its minimum.
 *
 * Delayed records whose time bucket has come due are indexed in memory in two binary
 * min-heaps, both ordered by due time (then segment and ordinal, so equal times keep their
 * write order): <due_pending>, the records whose due time is still ahead, and <due_set>, those
 * whose due time has passed, which take() hands out in that order. A record moves from the
 * first to the second once, when a take or a stats call finds its time passed (O(log n));
 * the due set keeps the enqueue times of its records in a minset (<due_enq>), so the number of
 * due records and the oldest of them are read in O(1) (sl_spool_stats). A record once found
 * due stays due, even if the wall clock steps back. The writer pushes (sl__bucket_index,
 * appends to an indexed bucket), the owner takes and pushes back a record it could not read.
 *
 * Room in the due set is reserved when a record is pushed, so moving records there never
 * allocates and never fails: a record is either indexed in full or left out (logged) at its
 * push, as before.
 *
 * A minset (struct sl__minset) is a multiset of times with its minimum in O(1): a heap of the
 * times added and a heap of the times removed, which are dropped from both as they reach the
 * top together. It also keeps the oldest record given back to the owner (reader.c).
 *
 * Layer: the bottom, beside format.c; depends on nothing else of the spool. Entries hold
 * no reference on their segment: a record in the index is unsettled, so its segment stays.
 *
 * @thread the due index: any, the caller holds spool->mu; a minset: its owner's
 */
#include "spool_int.h"

#include <errno.h>
#include <stdlib.h>

#include "sluice/log.h"

/* ---- binary min-heaps of fixed-size elements ------------------------------------------ */

struct heap_kind {
  size_t size; /* of an element, at most ELEM_MAX */
  bool (*less)(const void *a, const void *b);
};

#define ELEM_MAX 64

static bool due_less(const void *pa, const void *pb) {
  const struct sl__due *a = pa, *b = pb;

  if (a->due_ms != b->due_ms)
    return a->due_ms < b->due_ms;
  if (a->seg->seq != b->seg->seq)
    return a->seg->seq < b->seg->seq;
  return a->ord < b->ord;
}

static bool time_less(const void *a, const void *b) {
  return *(const uint64_t *)a < *(const uint64_t *)b;
}

_Static_assert(sizeof(struct sl__due) <= ELEM_MAX, "a due entry fits heap_swap's buffer");
static const struct heap_kind due_kind = {sizeof(struct sl__due), due_less};
static const struct heap_kind time_kind = {sizeof(uint64_t), time_less};

static void *heap_at(const struct sl__heap *h, const struct heap_kind *k, size_t i) {
  return (char *)h->v + i * k->size;
}

static void heap_swap(struct sl__heap *h, const struct heap_kind *k, size_t i, size_t j) {
  unsigned char t[ELEM_MAX];

  memcpy(t, heap_at(h, k, i), k->size);
  memcpy(heap_at(h, k, i), heap_at(h, k, j), k->size);
  memcpy(heap_at(h, k, j), t, k->size);
}

/* Makes room for <n> elements; 0 or -ENOMEM (the heap is unchanged then). */
static int heap_reserve(struct sl__heap *h, const struct heap_kind *k, size_t n) {
  size_t cap = h->cap ? h->cap : 64;
  void *v;

  if (n <= h->cap)
    return 0;
  while (cap < n)
    cap *= 2;
  v = realloc(h->v, cap * k->size);
  if (v == NULL)
    return -ENOMEM;
  h->v = v;
  h->cap = cap;
  return 0;
}

/* Adds <e>, for which the caller reserved room. */
static void heap_push(struct sl__heap *h, const struct heap_kind *k, const void *e) {
  size_t i = h->n++;

  memcpy(heap_at(h, k, i), e, k->size);
  while (i > 0 && k->less(heap_at(h, k, i), heap_at(h, k, (i - 1) / 2))) {
    heap_swap(h, k, i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
}

/* Removes the least element into <out>; the heap must not be empty. */
static void heap_pop(struct sl__heap *h, const struct heap_kind *k, void *out) {
  size_t i = 0;

  memcpy(out, h->v, k->size);
  if (--h->n == 0)
    return;
  memcpy(h->v, heap_at(h, k, h->n), k->size);
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->n)
      break;
    if (c + 1 < h->n && k->less(heap_at(h, k, c + 1), heap_at(h, k, c)))
      c++;
    if (!k->less(heap_at(h, k, c), heap_at(h, k, i)))
      break;
    heap_swap(h, k, i, c);
    i = c;
  }
}

static void heap_dispose(struct sl__heap *h) {
  free(h->v);
  *h = (struct sl__heap){0};
}

/* ---- minsets --------------------------------------------------------------------------- */

static uint64_t time_top(const struct sl__heap *h) { return *(const uint64_t *)h->v; }

int sl__minset_reserve(struct sl__minset *s, size_t more) {
  /* The removed times are among the added ones, so <gone> needs no more room than <live>. */
  size_t n = s->live.n + more;

  if (heap_reserve(&s->live, &time_kind, n) != 0 || heap_reserve(&s->gone, &time_kind, n) != 0)
    return -ENOMEM;
  return 0;
}

void sl__minset_add(struct sl__minset *s, uint64_t t) { heap_push(&s->live, &time_kind, &t); }

void sl__minset_del(struct sl__minset *s, uint64_t t) {
  heap_push(&s->gone, &time_kind, &t);
  /* Once the top of <live> is not among the removed, it is the minimum. */
  while (s->gone.n > 0 && time_top(&s->gone) == time_top(&s->live)) {
    heap_pop(&s->gone, &time_kind, &t);
    heap_pop(&s->live, &time_kind, &t);
  }
}

uint64_t sl__minset_min(const struct sl__minset *s) {
  return s->live.n > 0 ? time_top(&s->live) : UINT64_MAX;
}

void sl__minset_dispose(struct sl__minset *s) {
  heap_dispose(&s->live);
  heap_dispose(&s->gone);
}

/* ---- the due index ---------------------------------------------------------------------- */

void sl__heap_push(struct sl_spool *spool, const struct sl__due *d) {
  size_t all = spool->due_pending.n + spool->due_set.n + 1;

  if (heap_reserve(&spool->due_pending, &due_kind, spool->due_pending.n + 1) != 0 ||
      heap_reserve(&spool->due_set, &due_kind, all) != 0 ||
      sl__minset_reserve(&spool->due_enq, spool->due_pending.n + 1) != 0) {
    /* Not indexed now; the record is delivered after the next open. */
    sl_log_error("spool %s: out of memory for the delayed index", spool->name);
    return;
  }
  heap_push(&spool->due_pending, &due_kind, d);
}

static uint64_t due_top_ms(const struct sl__heap *h) {
  return h->n > 0 ? ((const struct sl__due *)h->v)->due_ms : UINT64_MAX;
}

/* Moves the records due by <now> into the due set (room was reserved at their push). */
static void promote(struct sl_spool *spool, uint64_t now) {
  while (spool->due_pending.n > 0 && due_top_ms(&spool->due_pending) <= now) {
    struct sl__due d;

    heap_pop(&spool->due_pending, &due_kind, &d);
    heap_push(&spool->due_set, &due_kind, &d);
    sl__minset_add(&spool->due_enq, d.enqueue_ms);
  }
}

bool sl__due_take(struct sl_spool *spool, uint64_t now, struct sl__due *out) {
  promote(spool, now);
  if (spool->due_set.n == 0)
    return false;
  heap_pop(&spool->due_set, &due_kind, out);
  sl__minset_del(&spool->due_enq, out->enqueue_ms);
  return true;
}

uint64_t sl__due_count(struct sl_spool *spool, uint64_t now, uint64_t *oldest) {
  promote(spool, now);
  *oldest = sl__minset_min(&spool->due_enq);
  return spool->due_set.n;
}

uint64_t sl__due_next_ms(const struct sl_spool *spool) {
  uint64_t a = due_top_ms(&spool->due_set), b = due_top_ms(&spool->due_pending);

  return a < b ? a : b;
}

void sl__due_dispose(struct sl_spool *spool) {
  heap_dispose(&spool->due_pending);
  heap_dispose(&spool->due_set);
  sl__minset_dispose(&spool->due_enq);
}

/*
 * Reading the spool: the ready-log cursor, the due index of delayed records,
 * and the items handed to the caller.
 *
 * The ready log is read by one cursor (segment, offset of the next unit, the
 * decompressed current unit): no per-record index exists for it, so memory
 * does not grow with the backlog. Records already settled (acked before a
 * restart) are skipped by their ack bit; a unit whose records are all settled
 * is skipped without being decompressed. Delayed records are indexed only
 * once their time bucket comes due; the index orders them by due time so
 * they become ready in due order, and take() serves due delayed records
 * before the ready log, so neither kind waits behind the other.
 *
 * The cursor holds a unit with records to hand out whenever the log has one
 * (the open reads the first, the take that uses one up reads the next); when
 * it has read all that is committed, the writer's next commit tells it the
 * enqueue time of the record it will hand out next. So the stats know the
 * next ready record without reading.
 *
 * Layer: above segment.c and heap.c; called by spool.c (the owner's API).
 *
 * @thread owner (the due index is shared with the writer under spool->mu)
 */
#include "spool_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <unistd.h>

#include "sluice/log.h"

/* ---- shared helpers ------------------------------------------------------------------ */

static int seg_rfd(struct sl__seg *seg) {
  if (seg->rfd < 0)
    seg->rfd = open(seg->path, O_RDONLY | O_CLOEXEC);
  return seg->rfd < 0 ? -errno : seg->rfd;
}

static struct sl_spool_item *make_item(const uint8_t *p, size_t len, struct sl__seg *seg,
                                       uint32_t ord) {
  struct sl_spool_item *it = malloc(sizeof(*it) + len);

  if (it == NULL)
    return NULL;
  memcpy(it->data, p, len);
  it->len = len;
  if (sl__record_decode(it->data, len, &it->rec) != 0) {
    free(it);
    return NULL;
  }
  it->seg = seg;
  it->ord = ord;
  it->next = it->prev = NULL;
  return it;
}

/* ---- delayed records ----------------------------------------------------------------- */

/* Reads record <d> through the one-unit cache. Returns 0 with an item, or an error. */
static int read_due(struct sl_spool *spool, const struct sl__due *d, struct sl_spool_item **out) {
  const uint8_t *rp = NULL;
  size_t rl = 0, at = 0;
  struct sl__unit u;
  int fd, r;

  *out = NULL;
  if (spool->cache_seg != d->seg || spool->cache_off != d->unit_off) {
    uint64_t end;
    fd = seg_rfd(d->seg);
    if (fd < 0)
      return fd;
    pthread_mutex_lock(&spool->mu);
    end = d->seg->committed;
    d->seg->refs++;
    if (spool->cache_seg)
      sl__seg_unref(spool->cache_seg);
    spool->cache_seg = d->seg;
    spool->cache_off = d->unit_off;
    spool->cache_n = 0;
    pthread_mutex_unlock(&spool->mu);
    r = sl__unit_read(spool, spool->dctx, fd, d->unit_off, end, &u, &spool->rbuf, &spool->cache);
    if (r != 0) {
      spool->cache_off = UINT64_MAX;
      return r;
    }
    spool->cache_first = u.first_ord;
    spool->cache_n = u.nrec;
  }
  if (d->ord < spool->cache_first || d->ord >= spool->cache_first + spool->cache_n)
    return SL_ESPOOL_CORRUPT;
  for (uint32_t k = spool->cache_first; k <= d->ord; k++)
    if (sl__block_next((const uint8_t *)spool->cache.base, spool->cache.len, &at, &rp, &rl) != 0)
      return SL_ESPOOL_CORRUPT;
  *out = make_item(rp, rl, d->seg, d->ord);
  return *out == NULL ? SL_ESPOOL_CORRUPT : 0;
}

static int take_due(struct sl_spool *spool, uint64_t now, struct sl_spool_item **out) {
  for (;;) {
    struct sl__due d;
    int r;

    pthread_mutex_lock(&spool->mu);
    if (!sl__due_take(spool, now, &d)) {
      pthread_mutex_unlock(&spool->mu);
      return 0;
    }
    d.seg->refs++;
    spool->inflight_delay++;
    pthread_mutex_unlock(&spool->mu);
    r = read_due(spool, &d, out);
    if (r == 0)
      return 0;
    pthread_mutex_lock(&spool->mu);
    spool->inflight_delay--;
    if (r == SL_ESPOOL_CORRUPT) {
      spool->st.corrupt_units++;
      sl__seg_lose_locked(spool, d.seg, d.ord, d.ord + 1);
    } else {
      sl__heap_push(spool, &d); /* an I/O error: keep the record for the next take */
    }
    sl__seg_unref(d.seg);
    pthread_mutex_unlock(&spool->mu);
    if (r != SL_ESPOOL_CORRUPT)
      return r;
    sl_log_error("spool %s: delayed record %" PRIu32 " of %s is unreadable: skipped", spool->name,
                 d.ord, d.seg->path);
  }
}

/* ---- the ready log ------------------------------------------------------------------- */

/* Moves the cursor to the segment after the current one; false if there is none. */
static bool cursor_next_seg(struct sl_spool *spool) {
  struct sl__seg *next = NULL;
  uint64_t after = spool->cur ? spool->cur->seq : 0;
  bool have_cur = spool->cur != NULL;

  pthread_mutex_lock(&spool->mu);
  for (size_t i = 0; i < spool->ready.n; i++) {
    struct sl__seg *s = spool->ready.v[i];
    if (!have_cur || s->seq > after) {
      next = s;
      break;
    }
  }
  if (next != NULL) {
    next->refs++;
    if (spool->cur)
      sl__seg_unref(spool->cur);
  }
  pthread_mutex_unlock(&spool->mu);
  if (next == NULL)
    return false;
  /* Items hold their record's bytes, not the file: the descriptor can go. */
  sl__walk_dispose(&spool->cwalk);
  spool->cur = next;
  sl__walk_init(&spool->cwalk, spool, next, -1, spool->dctx, &spool->rbuf, &spool->blk,
                SL__WALK_SETTLE | SL__WALK_FOLLOW | SL__WALK_SKIP_SETTLED);
  return true;
}

/*
 * Whether the cursor has read everything committed to the ready log, decided under mu, where
 * the writer commits: if so the cursor waits, and the writer's next commit to the ready log
 * keeps the enqueue time of its first record (sl__seg_commit_locked) for the stats. False if
 * more was committed since the walk looked: the caller reads on.
 */
static bool cursor_wait(struct sl_spool *spool) {
  const struct sl__seg *cur = spool->cur;
  const struct sl__segvec *v = &spool->ready;
  bool end;

  pthread_mutex_lock(&spool->mu);
  if (cur == NULL)
    end = v->n == 0;
  else /* at the committed end of a segment still written, or of the last one */
    end = cur->committed <= spool->cwalk.off &&
          (!cur->sealed || v->n == 0 || v->v[v->n - 1]->seq <= cur->seq);
  if (end && !spool->rtail_wait) {
    spool->rtail_wait = true;
    spool->rtail_set = false;
  }
  pthread_mutex_unlock(&spool->mu);
  return end;
}

/* The cursor read a unit, or failed to: it no longer waits at the end of the ready log. */
static void cursor_unwait(struct sl_spool *spool) {
  if (!spool->rtail_wait) /* only the owner writes it */
    return;
  pthread_mutex_lock(&spool->mu);
  spool->rtail_wait = false;
  pthread_mutex_unlock(&spool->mu);
}

/* Loads the next unit at the cursor, going on to the next segment once the current one is
 * sealed and walked. Returns 1 if loaded, 0 if nothing more now (the cursor waits), or <0. */
static int cursor_load(struct sl_spool *spool) {
  for (;;) {
    struct sl__seg *seg;
    int r;

    if (spool->cur == NULL && !cursor_next_seg(spool)) {
      if (cursor_wait(spool))
        return 0;
      continue;
    }
    seg = spool->cur;
    r = sl__walk_unit(&spool->cwalk);
    if (r != 0) {
      cursor_unwait(spool);
      return r;
    }
    if (spool->cwalk.sealed && cursor_next_seg(spool) && spool->cur != seg)
      continue;
    if (cursor_wait(spool))
      return 0;
  }
}

void sl__cursor_start(struct sl_spool *spool) { (void)cursor_load(spool); }

static int take_main(struct sl_spool *spool, struct sl_spool_item **out) {
  for (;;) {
    const uint8_t *rp;
    size_t rl;
    uint32_t ord;

    while (spool->cur != NULL && sl__walk_record(&spool->cwalk, &ord, &rp, &rl, NULL) > 0) {
      *out = make_item(rp, rl, spool->cur, ord);
      pthread_mutex_lock(&spool->mu);
      if (*out == NULL) {
        spool->st.corrupt_units++;
        sl__seg_lose_locked(spool, spool->cur, ord, ord + 1);
      } else {
        spool->cur->refs++;
        spool->inflight_main++;
      }
      pthread_mutex_unlock(&spool->mu);
      if (*out == NULL)
        continue;
      /* The unit is used up: read the next one now, as the next take would, so that stats
       * know its first record without reading. An error here is the next take's. */
      if (spool->cwalk.k >= spool->cwalk.u.nrec)
        (void)cursor_load(spool);
      return 0;
    }
    int r = cursor_load(spool);
    if (r <= 0)
      return r;
  }
}

static void inflight_link(struct sl_spool *spool, struct sl_spool_item *it) {
  it->prev = NULL;
  it->next = spool->inflight;
  if (spool->inflight)
    spool->inflight->prev = it;
  spool->inflight = it;
}

void sl__inflight_unlink(struct sl_spool *spool, struct sl_spool_item *it) {
  if (it->prev)
    it->prev->next = it->next;
  else if (spool->inflight == it)
    spool->inflight = it->next;
  if (it->next)
    it->next->prev = it->prev;
  it->next = it->prev = NULL;
}

void sl__returned_push(struct sl_spool *spool, struct sl_spool_item *it) {
  it->next = NULL;
  if (spool->returned_tail)
    spool->returned_tail->next = it;
  else
    spool->returned_head = it;
  spool->returned_tail = it;
  if (it->seg->store != SL__STORE_READY)
    spool->returned_delayed++;
  /* Without memory for its time, the stats leave it out of the oldest ready record. */
  it->in_returned_enq = sl__minset_reserve(&spool->returned_enq, 1) == 0;
  if (it->in_returned_enq)
    sl__minset_add(&spool->returned_enq, it->rec.enqueue_ms);
}

/* Takes the first item given back off the list. */
static struct sl_spool_item *returned_pop(struct sl_spool *spool) {
  struct sl_spool_item *it = spool->returned_head;

  spool->returned_head = it->next;
  if (spool->returned_head == NULL)
    spool->returned_tail = NULL;
  if (it->seg->store != SL__STORE_READY)
    spool->returned_delayed--;
  if (it->in_returned_enq)
    sl__minset_del(&spool->returned_enq, it->rec.enqueue_ms);
  return it;
}

int sl_spool_take(struct sl_spool *spool, struct sl_spool_item **out) {
  struct sl_spool_item *it = NULL;
  int r;

  *out = NULL;
  if (spool->returned_head != NULL) {
    it = returned_pop(spool);
    pthread_mutex_lock(&spool->mu);
    if (it->seg->store == SL__STORE_READY)
      spool->inflight_main++;
    else
      spool->inflight_delay++;
    pthread_mutex_unlock(&spool->mu);
  } else {
    r = take_due(spool, sl__now_ms(spool), &it);
    if (r == 0 && it == NULL)
      r = take_main(spool, &it);
    if (r != 0)
      return r;
  }
  if (it != NULL)
    inflight_link(spool, it);
  *out = it;
  return 0;
}

const struct sl_spool_record *sl_spool_item_record(const struct sl_spool_item *item) {
  return &item->rec;
}

uint64_t sl_spool_next_due_ms(struct sl_spool *spool) {
  uint64_t due = UINT64_MAX;

  pthread_mutex_lock(&spool->mu);
  due = sl__due_next_ms(spool);
  for (size_t i = 0; i < spool->delay.n; i++) {
    struct sl__seg *s = spool->delay.v[i];
    if (!s->indexed && s->nacked < s->nrec && s->start_ms < due)
      due = s->start_ms;
  }
  pthread_mutex_unlock(&spool->mu);
  return due;
}

/*
 * The cursor holds a unit with records left while it has any to hand out (the take that uses
 * one up reads the next: take_main), or waits at the end of the ready log, where the writer
 * tells it the next record's time; only after an error reading the log does it hold neither.
 * Then the next record is normally in the segment the cursor reads (an error leaves the
 * cursor before the unit it could not read), so the oldest enqueue time recorded for that
 * segment (its settled records included) stands in: a lower bound for its records.
 */
uint64_t sl__ready_oldest_locked(struct sl_spool *spool) {
  struct sl__walk *w = &spool->cwalk;
  const uint8_t *rp;
  size_t rl, at = w->at;

  if (spool->cur != NULL && w->k < w->u.nrec) {
    if (sl__block_next((const uint8_t *)w->blk->base, w->blk->len, &at, &rp, &rl) == 0 &&
        rl >= SL__REC_HDR)
      return sl_le_get64(rp + 24);
    return 0;
  }
  if (spool->rtail_wait)
    return spool->rtail_set ? spool->rtail_enq : 0;
  if (spool->cur != NULL && spool->cur->min_enqueue_ms != UINT64_MAX)
    return spool->cur->min_enqueue_ms;
  return 0;
}

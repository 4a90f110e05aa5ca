/*
 * Reading the spool: the ready-log cursor, the due heap of delayed records,
 * and the items handed to the caller.
 *
 * The ready log is read by one cursor (segment, offset of the next unit, the
 * decompressed current unit): no per-record index exists for it, so memory
 * does not grow with the backlog. Records already settled (acked before a
 * restart) are skipped by their ack bit; a unit whose records are all settled
 * is skipped without being decompressed. Delayed records are indexed only
 * once their time bucket comes due; the heap orders them by due time so
 * they become ready in due order, and take() serves due delayed records
 * before the ready log, so neither kind waits behind the other.
 *
 * @thread owner (the heap is shared with the writer under spool->mu)
 */
#include "spool_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <unistd.h>

#include "sluice/log.h"

/* ---- due heap (caller holds mu) ------------------------------------------------------ */

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

static struct sl__due heap_pop(struct sl_spool *spool) {
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

/* ---- shared helpers ------------------------------------------------------------------ */

static int seg_rfd(struct sl__seg *seg) {
  if (seg->rfd < 0)
    seg->rfd = open(seg->path, O_RDONLY | O_CLOEXEC);
  return seg->rfd < 0 ? -errno : seg->rfd;
}

/* Settles ordinals [from, to) of <seg> as lost (caller holds mu). Only ordinals below
 * seg->nrec count: in a damaged segment the reader can come upon the intact header of a
 * unit whose payload is bad and that recovery, resyncing past it, never counted among the
 * segment's records; settling its ordinals would take from counts they were never added
 * to (the ready count wrapped around to 2^64 - 1). */
static void lose_locked(struct sl_spool *spool, struct sl__seg *seg, uint32_t from, uint32_t to) {
  bool any = false;

  if (to > seg->nrec)
    to = seg->nrec;
  for (uint32_t o = from; o < to; o++) {
    if (sl__ack_set(seg, o)) {
      any = true;
      seg->nacked++;
      spool->st.lost_records++;
      if (seg->store == SL__STORE_READY)
        spool->main_unacked--;
      else if (seg->store == SL__STORE_DELAY)
        spool->delay_unacked--;
      else
        spool->dead_unacked--;
    }
  }
  if (!any)
    return; /* all settled already: nothing for the checkpoint (the cursor passes such ranges) */
  spool->ack_dirty = true;
  sl__seg_account_done(spool, seg);
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

int sl__bucket_index(struct sl_spool *spool, struct sl__seg *seg, ZSTD_DCtx *dctx,
                     struct sl_buf *tmp, struct sl_buf *blk) {
  struct sl__due *found = NULL;
  size_t nfound = 0, cap = 0;
  uint64_t off = SL__SEG_HDR, end;
  /* Ordinals only go forward, as recovery reads them: a valid unit whose ordinals go back
   * (a stray copy of an earlier one) is skipped, and a damaged one loses only ordinals past
   * those already read. Otherwise one record could be put in the heap twice, or be settled
   * as lost while indexed, and the heap, whose entries hold no reference, would keep
   * pointing at the segment after it was settled in full and deleted. The ordinals it passes
   * without indexing them are lost, as the ready cursor settles them (cursor_pass_locked). */
  uint32_t next_ord = 0, nrec;
  int fd = open(seg->path, O_RDONLY | O_CLOEXEC);

  if (fd < 0)
    return -errno;
  pthread_mutex_lock(&spool->mu);
  end = seg->committed;
  nrec = seg->nrec; /* the ordinals of the units below <end> */
  pthread_mutex_unlock(&spool->mu);
  while (off < end) {
    struct sl__unit u;
    size_t at = 0;
    int r = sl__unit_read(spool, dctx, fd, off, end, &u, tmp, blk);
    if (r != 0 && r != SL_ESPOOL_CORRUPT) {
      /* An I/O error is not damage: leave the bucket unindexed and try again later. */
      close(fd);
      free(found);
      return r;
    }
    if (r != 0) {
      uint64_t next = u.type ? off + SL__UNIT_HDR + u.payload_len : sl__unit_resync(fd, off, end);
      sl_log_error("spool %s: CORRUPT unit in %s at offset %" PRIu64 ": skipped", spool->name,
                   seg->path, off);
      pthread_mutex_lock(&spool->mu);
      spool->st.corrupt_units++;
      if (u.type && u.first_ord + u.nrec > next_ord) {
        lose_locked(spool, seg, next_ord, u.first_ord + u.nrec);
        next_ord = u.first_ord + u.nrec;
      }
      pthread_mutex_unlock(&spool->mu);
      if (next == 0 || next <= off)
        break;
      off = next;
      continue;
    }
    if (u.type != SL__UNIT_BLOCK || u.first_ord < next_ord) {
      off += SL__UNIT_HDR + u.payload_len;
      continue;
    }
    if (u.first_ord > next_ord) {
      pthread_mutex_lock(&spool->mu);
      lose_locked(spool, seg, next_ord, u.first_ord);
      pthread_mutex_unlock(&spool->mu);
    }
    next_ord = u.first_ord + u.nrec;
    for (uint32_t k = 0; k < u.nrec; k++) {
      const uint8_t *rp;
      size_t rl;
      struct sl_spool_record rec;
      uint32_t ord = u.first_ord + k;
      bool acked;

      if (sl__block_next((const uint8_t *)blk->base, blk->len, &at, &rp, &rl) != 0 ||
          sl__record_decode(rp, rl, &rec) != 0) {
        pthread_mutex_lock(&spool->mu);
        lose_locked(spool, seg, ord, u.first_ord + u.nrec);
        pthread_mutex_unlock(&spool->mu);
        break;
      }
      pthread_mutex_lock(&spool->mu);
      acked = sl__ack_test(seg, ord);
      pthread_mutex_unlock(&spool->mu);
      if (acked)
        continue;
      if (nfound == cap) {
        size_t ncap = cap ? cap * 2 : 64;
        struct sl__due *v = realloc(found, ncap * sizeof(*v));
        if (v == NULL) {
          close(fd);
          free(found);
          return -ENOMEM;
        }
        found = v;
        cap = ncap;
      }
      found[nfound++] = (struct sl__due){rec.not_before_ms, rec.enqueue_ms, seg, off, ord};
    }
    off += SL__UNIT_HDR + u.payload_len;
  }
  close(fd);
  pthread_mutex_lock(&spool->mu);
  lose_locked(spool, seg, next_ord, nrec); /* what the walk did not reach (none of <found>) */
  for (size_t i = 0; i < nfound; i++)
    sl__heap_push(spool, &found[i]);
  seg->indexed = true;
  pthread_mutex_unlock(&spool->mu);
  free(found);
  return 0;
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
    if (spool->heap_n == 0 || spool->heap[0].due_ms > now) {
      pthread_mutex_unlock(&spool->mu);
      return 0;
    }
    d = heap_pop(spool);
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
      lose_locked(spool, d.seg, d.ord, d.ord + 1);
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
    if (spool->cur) {
      /* Items hold their record's bytes, not the file: the descriptor can go. */
      if (spool->cur->rfd >= 0) {
        close(spool->cur->rfd);
        spool->cur->rfd = -1;
      }
      sl__seg_unref(spool->cur);
    }
    spool->cur = next;
    spool->cur_off = SL__SEG_HDR;
    spool->blk_n = spool->blk_pos = 0;
    spool->blk_first = 0;
  }
  pthread_mutex_unlock(&spool->mu);
  return next != NULL;
}

/* Moves the cursor's next ordinal forward to <to>, settling as lost those it passes without
 * having handed them out (caller holds mu). Ordinals only go forward, and every one below
 * seg->nrec that recovery did not mark lost is counted as unacked: the cursor must hand it
 * out or settle it. Its walk, trusting a damaged unit's header for its extent, can step
 * over a unit that recovery counted (one inside that extent, which recovery resyncs into);
 * left unsettled, such a record would stay "ready" with no take ever returning it. <nrec>:
 * the ordinals of the units below the committed end walked; the next ordinal stays at most
 * there, since the writer's next unit starts there (going past it would skip that unit). */
static void cursor_pass_locked(struct sl_spool *spool, struct sl__seg *seg, uint32_t to,
                               uint32_t nrec) {
  if (to > nrec)
    to = nrec;
  if (to > spool->blk_first) {
    lose_locked(spool, seg, spool->blk_first, to);
    spool->blk_first = to;
  }
}

/* Loads the next unit at the cursor. Returns 1 if loaded, 0 if nothing more now, or <0. */
static int cursor_load(struct sl_spool *spool) {
  for (;;) {
    struct sl__seg *seg;
    struct sl__unit u;
    uint64_t end;
    uint32_t nrec;
    bool sealed, all_acked;
    uint8_t h[SL__UNIT_HDR];
    int fd, r;

    if (spool->cur == NULL && !cursor_next_seg(spool))
      return 0;
    seg = spool->cur;
    pthread_mutex_lock(&spool->mu);
    end = seg->committed;
    nrec = seg->nrec; /* the ordinals of the units below <end>, which the writer sets with it */
    sealed = seg->sealed;
    pthread_mutex_unlock(&spool->mu);
    if (spool->cur_off >= end) {
      /* Walked to the end of what is committed: what it did not reach is lost. */
      pthread_mutex_lock(&spool->mu);
      cursor_pass_locked(spool, seg, nrec, nrec);
      pthread_mutex_unlock(&spool->mu);
      if (sealed && cursor_next_seg(spool) && spool->cur != seg)
        continue;
      return 0;
    }
    fd = seg_rfd(seg);
    if (fd < 0)
      return fd;
    /* A unit whose records are all settled is skipped on its header alone (only worth a
     * read when the segment has settled records: after a restart, or out-of-order acks). */
    pthread_mutex_lock(&spool->mu);
    bool some_acked = seg->nacked > 0;
    pthread_mutex_unlock(&spool->mu);
    if (some_acked && pread(fd, h, sizeof(h), (off_t)spool->cur_off) == (ssize_t)sizeof(h) &&
        sl__unit_decode(h, &u) == 0 && u.type == SL__UNIT_BLOCK &&
        spool->cur_off + SL__UNIT_HDR + u.payload_len <= end) {
      all_acked = true;
      pthread_mutex_lock(&spool->mu);
      for (uint32_t o = u.first_ord; o < u.first_ord + u.nrec && all_acked; o++)
        all_acked = sl__ack_test(seg, o);
      pthread_mutex_unlock(&spool->mu);
      if (all_acked) {
        spool->cur_off += SL__UNIT_HDR + u.payload_len;
        pthread_mutex_lock(&spool->mu);
        cursor_pass_locked(spool, seg, u.first_ord + u.nrec, nrec);
        pthread_mutex_unlock(&spool->mu);
        continue;
      }
    }
    r = sl__unit_read(spool, spool->dctx, fd, spool->cur_off, end, &u, &spool->rbuf, &spool->blk);
    if (r == 0 && u.type == SL__UNIT_BLOCK && u.first_ord >= spool->blk_first) {
      if (u.first_ord > spool->blk_first) {
        pthread_mutex_lock(&spool->mu);
        cursor_pass_locked(spool, seg, u.first_ord, nrec);
        pthread_mutex_unlock(&spool->mu);
      }
      spool->blk_first = u.first_ord;
      spool->blk_n = u.nrec;
      spool->blk_pos = 0;
      spool->blk_at = 0;
      spool->cur_off += SL__UNIT_HDR + u.payload_len;
      return 1;
    }
    if (r == 0) {
      /* A valid unit with nothing to hand out: a footer amid the data (damage put it there:
       * a sealed segment's data ends before its own footer) or a stray copy of a unit already
       * read, its ordinals going back (handing them out again would deliver records twice).
       * Recovery resyncs past both and counts the units after them, as sl__bucket_index and
       * the scan step over them: so does the cursor. */
      spool->cur_off += SL__UNIT_HDR + u.payload_len;
      continue;
    }
    if (r != SL_ESPOOL_CORRUPT)
      return r;
    /* Corrupted: skip it (trusting its header if that checks out), count, log. */
    uint64_t next = u.type ? spool->cur_off + SL__UNIT_HDR + u.payload_len
                           : sl__unit_resync(fd, spool->cur_off, end);
    uint32_t lost_to = u.type ? u.first_ord + u.nrec : 0;
    if (!u.type && next != 0) {
      struct sl__unit nu;
      if (pread(fd, h, sizeof(h), (off_t)next) == (ssize_t)sizeof(h) &&
          sl__unit_decode(h, &nu) == 0)
        lost_to = nu.first_ord;
    }
    if (next == 0 || next > end)
      next = end;
    if ((next == end && lost_to == 0) || lost_to > nrec)
      lost_to = nrec; /* see cursor_pass_locked */
    pthread_mutex_lock(&spool->mu);
    spool->st.corrupt_units++;
    if (lost_to > spool->blk_first)
      lose_locked(spool, seg, spool->blk_first, lost_to);
    pthread_mutex_unlock(&spool->mu);
    sl_log_error("spool %s: CORRUPT unit in %s at offset %" PRIu64 ": skipped %" PRIu64
                 " bytes, records %" PRIu32 "..%" PRIu32 " lost",
                 spool->name, seg->path, spool->cur_off, next - spool->cur_off, spool->blk_first,
                 lost_to);
    if (lost_to > spool->blk_first)
      spool->blk_first = lost_to;
    spool->cur_off = next;
  }
}

static int take_main(struct sl_spool *spool, struct sl_spool_item **out) {
  for (;;) {
    while (spool->blk_pos < spool->blk_n) {
      const uint8_t *rp;
      size_t rl;
      uint32_t ord = spool->blk_first + spool->blk_pos;
      bool acked;

      if (sl__block_next((const uint8_t *)spool->blk.base, spool->blk.len, &spool->blk_at, &rp,
                         &rl) != 0) {
        pthread_mutex_lock(&spool->mu);
        spool->st.corrupt_units++;
        lose_locked(spool, spool->cur, ord, spool->blk_first + spool->blk_n);
        pthread_mutex_unlock(&spool->mu);
        spool->blk_pos = spool->blk_n;
        break;
      }
      spool->blk_pos++;
      pthread_mutex_lock(&spool->mu);
      acked = sl__ack_test(spool->cur, ord);
      pthread_mutex_unlock(&spool->mu);
      if (acked)
        continue;
      *out = make_item(rp, rl, spool->cur, ord);
      pthread_mutex_lock(&spool->mu);
      if (*out == NULL) {
        spool->st.corrupt_units++;
        lose_locked(spool, spool->cur, ord, ord + 1);
      } else {
        spool->cur->refs++;
        spool->inflight_main++;
      }
      pthread_mutex_unlock(&spool->mu);
      if (*out != NULL)
        return 0;
    }
    if (spool->blk_n > 0) {
      spool->blk_first += spool->blk_n;
      spool->blk_n = spool->blk_pos = 0;
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

int sl_spool_take(struct sl_spool *spool, struct sl_spool_item **out) {
  struct sl_spool_item *it = NULL;
  int r;

  *out = NULL;
  if (spool->returned_head != NULL) {
    it = spool->returned_head;
    spool->returned_head = it->next;
    if (spool->returned_head == NULL)
      spool->returned_tail = NULL;
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
  if (spool->heap_n > 0)
    due = spool->heap[0].due_ms;
  for (size_t i = 0; i < spool->delay.n; i++) {
    struct sl__seg *s = spool->delay.v[i];
    if (!s->indexed && s->nacked < s->nrec && s->start_ms < due)
      due = s->start_ms;
  }
  pthread_mutex_unlock(&spool->mu);
  return due;
}

/* The enqueue time of the next record the ready cursor would return; 0 if none. */
uint64_t sl__peek_oldest(struct sl_spool *spool) {
  uint64_t oldest = 0;

  if (spool->blk_pos >= spool->blk_n) {
    if (spool->blk_n > 0) {
      spool->blk_first += spool->blk_n;
      spool->blk_n = spool->blk_pos = 0;
    }
    if (cursor_load(spool) <= 0)
      return 0;
  }
  size_t at = spool->blk_at;
  const uint8_t *rp;
  size_t rl;
  if (sl__block_next((const uint8_t *)spool->blk.base, spool->blk.len, &at, &rp, &rl) == 0 &&
      rl >= SL__REC_HDR)
    oldest = sl_le_get64(rp + 24);
  return oldest;
}

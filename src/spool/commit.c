/*
 * The group commit, on the writer thread (and its syncer): every write and fdatasync of a
 * segment's records.
 *
 * The writer takes the whole queue at once (one group), encodes the group's records into
 * compressed units per target segment and writes each segment's units with one pwrite.
 * Durability: under `batch` the syncer thread runs one fdatasync per touched file while the
 * writer compresses the next group (a group is written only after the previous one's sync
 * returned, so at most one group is unsynced on disk); under `always` every append is written
 * and synced alone; under `off` nothing is synced. Then the group is published to readers and
 * its operations are handed back through the completion queue and sl__notify().
 *
 * Choosing a copy's target segment and sealing a segment (the footer, the end of its
 * descriptor) are here too, not with the making of segments in alloc.c: a seal must first
 * finish the group whose fdatasync may still be running on that descriptor
 * (sl__pipeline_flush), and a full segment is rolled while a group is being built.
 *
 * Layer: above alloc.c (new segments), dict.c (samples, the small-unit level), segment.c
 * and heap.c (the due index of an indexed bucket); called by dead.c (sl__write_copies) and
 * writer.c. The completion queue (sl__complete_locked, sl__notify)
 * lives here because a group completes its appends; writer.c completes acks through it.
 *
 * Errors: a failed write or fdatasync fails only the operations of that group (and of a
 * group already built behind it for the same file); the file is cut back to its last good
 * unit (or, if that fails too, sealed and its cancelled ordinals marked settled) so the spool
 * stays consistent and the next group tries again: appends succeed again once space returns.
 * The last error is kept in the stats until a write succeeds.
 *
 * @thread writer; the syncer (sl__syncer_main) runs only group_sync() on the group it is given
 */
#include "spool_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>

#include "sluice/clock.h"
#include "sluice/crc32c.h"
#include "sluice/log.h"
#include "sluice/util.h"

#define DELAY_BASE_MS 1024u

/* The records of one group that go to one segment. */
struct stage {
  struct sl__seg *seg;
  uint64_t off; /* where the units start */
  uint32_t ord0, nrec;
  uint64_t min_enq, max_enq;
  struct sl_buf out; /* encoded units */
  struct sl_buf raw; /* the block being filled */
  uint32_t blk_first, blk_n;
  uint64_t blk_min;
  int err;      /* building or writing failed */
  int sync_err; /* fdatasync failed */
};

void sl__complete_locked(struct sl_spool *spool, struct sl__op *op) {
  op->next = NULL;
  if (spool->c_tail)
    spool->c_tail->next = op;
  else
    __atomic_store_n(&spool->c_head, op, __ATOMIC_RELEASE);
  spool->c_tail = op;
}

void sl__notify(struct sl_spool *spool) {
  sl_spool_notify_cb cb;
  void *arg;

  pthread_mutex_lock(&spool->mu); /* the owner may set them after open: sl_spool_set_notify */
  cb = spool->opts.notify;
  arg = spool->opts.notify_arg;
  pthread_mutex_unlock(&spool->mu);
  pthread_cond_broadcast(&spool->icond);
  if (cb)
    cb(arg);
}

/* Completes appends and moves retries/dead letters on to wait for the checkpoint. */
static void finish_copies(struct sl_spool *spool, struct sl__op **copies, size_t ncopies) {
  pthread_mutex_lock(&spool->mu);
  for (size_t i = 0; i < ncopies; i++) {
    struct sl__op *o = copies[i];
    spool->q_bytes -= o->len < spool->q_bytes ? o->len : spool->q_bytes;
    if (o->type == SL__OP_APPEND) {
      spool->st.raw_bytes_written += o->status == 0 ? o->len : 0;
      sl__complete_locked(spool, o);
      spool->ops_done++;
    } else {
      /* The copy is durable: settle the original, then complete with the checkpoint. */
      if (o->status == 0) {
        spool->st.raw_bytes_written += o->len;
        sl__settle_locked(spool, o->origin, o->origin_ord);
        if (o->origin->store == SL__STORE_READY)
          spool->inflight_main--;
        else
          spool->inflight_delay--;
      }
      o->next = spool->ack_waiters;
      spool->ack_waiters = o;
    }
  }
  pthread_mutex_unlock(&spool->mu);
  sl__notify(spool);
}

/* Writes the footer and closes the segment for appends. */
void sl__seal(struct sl_spool *spool, struct sl__seg *seg, bool footer) {
  uint8_t f[SL__FOOTER_SIZE];
  struct sl__unit u = {0};

  /* The syncer may be syncing this file: let it finish before the descriptor goes. */
  sl__pipeline_flush(spool);

  if (seg->wfd >= 0 && seg->zero_end > 0) {
    /* Cut the unused zeros first, durably: a sealed file ends with its footer, and a crash
     * must not leave a footer with zeros after it. */
    if (spool->io.ftruncate(seg->wfd, (off_t)seg->wsize) == 0 &&
        (spool->opts.fsync == SL_SPOOL_FSYNC_OFF || spool->io.fdatasync(seg->wfd) == 0))
      seg->zero_end = 0;
    else
      footer = false; /* recovery will scan the file and cut its zero tail */
  }
  if (seg->wfd >= 0 && footer && seg->store != SL__STORE_DELAY) {
    uint8_t *p = f + SL__UNIT_HDR;
    sl_le_put32(p, seg->wnrec);
    sl_le_put32(p + 4, seg->wunits);
    sl_le_put64(p + 8, seg->wsize);
    sl_le_put64(p + 16, seg->wmin_enq == UINT64_MAX ? 0 : seg->wmin_enq);
    sl_le_put64(p + 24, seg->wmax_enq);
    u.type = SL__UNIT_FOOTER;
    u.payload_len = SL__FOOTER_PAYLOAD;
    u.raw_len = SL__FOOTER_PAYLOAD;
    u.payload_crc = sl_crc32c(0, p, SL__FOOTER_PAYLOAD);
    sl__unit_encode(f, &u);
    /* A footer that does not make it is harmless: recovery scans the file. */
    if (sl_io_pwrite_all(&spool->io, seg->wfd, f, sizeof(f), seg->wsize) == 0 &&
        spool->io.fdatasync(seg->wfd) == 0) {
      pthread_mutex_lock(&spool->mu);
      seg->file_bytes += sizeof(f);
      spool->disk_bytes += sizeof(f);
      pthread_mutex_unlock(&spool->mu);
    } else if (spool->io.ftruncate(seg->wfd, (off_t)seg->wsize) != 0) {
      /* The footer's bytes may be half there; a scan will cut them. */
    }
  }
  if (seg->wfd >= 0)
    spool->io.close(seg->wfd);
  seg->wfd = -1;
  pthread_mutex_lock(&spool->mu);
  seg->sealed = true;
  sl__seg_account_zeros(spool, seg);
  sl__seg_account_done(spool, seg);
  pthread_mutex_unlock(&spool->mu);
}

/* Picks (creating or rolling as needed) the segment a new copy of <len> bytes goes to. */
static int target_seg(struct sl_spool *spool, struct sl__op *op, struct sl__seg **out) {
  struct sl__segvec *vec;
  struct sl__seg *seg = NULL;

  if (op->store == SL__STORE_DELAY) {
    uint64_t now = sl__now_ms(spool);
    uint64_t dist = op->due_ms > now ? op->due_ms - now : 0;
    uint64_t width = DELAY_BASE_MS, start;
    /* Buckets widen with distance (about 64 per doubling), so far-future schedules need few
     * files while near-term ones stay fine-grained. */
    while (width * 64 < dist && width < (1ull << 40))
      width *= 2;
    start = op->due_ms - op->due_ms % width;
    for (size_t i = 0; i < spool->delay.n; i++) {
      struct sl__seg *s = spool->delay.v[i];
      if (s->start_ms == start && s->width_ms == width && !s->sealed)
        seg = s;
    }
    if (seg == NULL)
      return sl__create_seg(spool, SL__STORE_DELAY, start, width, out);
    if (seg->wfd < 0) {
      seg->wfd = spool->io.open(seg->path, O_RDWR | O_CLOEXEC, 0);
      if (seg->wfd < 0)
        return -errno;
    }
    *out = seg;
    return 0;
  }
  vec = op->store == SL__STORE_READY ? &spool->ready : &spool->dead;
  if (vec->n > 0) {
    seg = vec->v[vec->n - 1];
    if (seg->wfd < 0 || seg->sealed)
      seg = NULL;
    else if (seg->wsize >= spool->opts.segment_bytes) {
      sl__seal(spool, seg, true);
      seg = NULL;
    }
  }
  if (seg == NULL)
    return sl__create_seg(spool, op->store, 0, 0, out);
  *out = seg;
  return 0;
}

#define SMALL_UNIT_BYTES 16384

static int flush_block(struct sl_spool *spool, struct stage *st) {
  struct sl__unit u = {0};
  size_t bound, hdr_at, n;
  int level = spool->opts.compression_level;

  if (st->blk_n == 0)
    return 0;
  u.type = SL__UNIT_BLOCK;
  u.raw_len = (uint32_t)st->raw.len;
  u.first_ord = st->blk_first;
  u.nrec = st->blk_n;
  u.min_enqueue_ms = st->blk_min;
  hdr_at = st->out.len;
  bound = ZSTD_compressBound(st->raw.len);
  if (sl_buf_reserve(&st->out, SL__UNIT_HDR + bound) != 0)
    return -ENOMEM;
  n = 0;
  if (level > 0) {
    uint8_t *dst = (uint8_t *)st->out.base + hdr_at + SL__UNIT_HDR;
    bool small = st->raw.len < SMALL_UNIT_BYTES;
    if (spool->cdict != NULL)
      n = ZSTD_compress_usingCDict(spool->cctx, dst, bound, st->raw.base, st->raw.len,
                                   small ? spool->cdict_small : spool->cdict);
    else
      n = ZSTD_compressCCtx(spool->cctx, dst, bound, st->raw.base, st->raw.len,
                            small ? sl__small_level(spool) : level);
    if (ZSTD_isError(n) || n >= st->raw.len)
      n = 0;
  }
  if (n > 0) {
    u.codec = SL__CODEC_ZSTD;
    u.dict_id = spool->cdict != NULL ? spool->cdict_id : 0;
  } else {
    u.codec = SL__CODEC_RAW;
    n = st->raw.len;
    memcpy(st->out.base + hdr_at + SL__UNIT_HDR, st->raw.base, n);
  }
  u.payload_len = (uint32_t)n;
  u.payload_crc = sl_crc32c(0, st->out.base + hdr_at + SL__UNIT_HDR, n);
  sl__unit_encode((uint8_t *)st->out.base + hdr_at, &u);
  st->out.len = hdr_at + SL__UNIT_HDR + n;
  st->raw.len = 0;
  st->blk_first += st->blk_n;
  st->blk_n = 0;
  st->blk_min = UINT64_MAX;
  return 0;
}

static int stage_add(struct sl_spool *spool, struct stage *st, struct sl__op *op) {
  uint8_t lenbuf[4];
  int err;

  if (st->raw.len > 0 && st->raw.len + 4 + op->len > spool->opts.block_bytes) {
    err = flush_block(spool, st);
    if (err != 0)
      return err;
  }
  sl_le_put32(lenbuf, (uint32_t)op->len);
  if (sl_buf_append(&st->raw, lenbuf, 4) != 0 || sl_buf_append(&st->raw, op->data, op->len) != 0)
    return -ENOMEM;
  op->seg = st->seg;
  op->ord = st->ord0 + st->nrec;
  op->unit_off = st->off + st->out.len; /* fixed when the block is flushed: see below */
  st->nrec++;
  st->blk_n++;
  if (op->enqueue_ms < st->blk_min)
    st->blk_min = op->enqueue_ms;
  if (op->enqueue_ms < st->min_enq)
    st->min_enq = op->enqueue_ms;
  if (op->enqueue_ms > st->max_enq)
    st->max_enq = op->enqueue_ms;
  sl__dict_add_sample(spool, op->data, op->len);
  return 0;
}

/* Pushes the due-index entries of ops written into an indexed delay bucket. */
static void index_ops_locked(struct sl_spool *spool, struct stage *st, struct sl__op **ops,
                             size_t n) {
  for (size_t i = 0; i < n; i++) {
    struct sl__op *op = ops[i];
    if (op->stage != st)
      continue;
    struct sl__due d = {op->due_ms, op->enqueue_ms, st->seg, op->unit_off, op->ord};
    sl__heap_push(spool, &d);
  }
}

/*
 * A group of copies on its way to disk. The writer compresses a group while
 * the syncer thread runs the fdatasync of the group before it (batch
 * policy), so compression and the disk's sync latency overlap. At most one
 * group is written and not yet synced at any time: a group is written only
 * after the previous one finished, so a failed fdatasync can always cut the
 * file back to where that group started.
 */
struct group {
  struct stage stages[16];
  size_t nst;
  struct sl__op **ops;
  size_t nops;
  bool complete_ops; /* false for internal copies (redrive): the caller reads their status */
  bool owns_ops;
};

/* Stage buffers are reused from group to group: big, short-lived allocations would otherwise
 * cost page faults on every group. Writer thread only. */
static void buf_get(struct sl_spool *spool, struct sl_buf *b) {
  if (spool->nwpool > 0) {
    *b = spool->wpool[--spool->nwpool];
    b->len = 0;
  } else {
    sl_buf_init(b);
  }
}

static void buf_put(struct sl_spool *spool, struct sl_buf *b) {
  if (spool->nwpool < sl_countof(spool->wpool) && b->cap <= (4u << 20))
    spool->wpool[spool->nwpool++] = *b;
  else
    sl_buf_dispose(b);
  sl_buf_init(b);
}

/* Puts the ops (up to 16 target segments) into <g>; returns how many were taken. */
static size_t group_build(struct sl_spool *spool, struct group *g, struct sl__op **ops,
                          size_t nops) {
  size_t k;

  for (k = 0; k < nops; k++) {
    struct sl__op *op = ops[k];
    struct sl__seg *seg = NULL;
    struct stage *st = NULL;
    int err;

    op->stage = NULL;
    op->status = 0;
    err = target_seg(spool, op, &seg);
    if (err == 0) {
      for (size_t i = 0; i < g->nst; i++)
        if (g->stages[i].seg == seg)
          st = &g->stages[i];
      if (st == NULL && g->nst == sl_countof(g->stages))
        break; /* many targets: the rest goes into the next group */
      if (st == NULL) {
        st = &g->stages[g->nst++];
        memset(st, 0, sizeof(*st));
        st->seg = seg;
        st->off = seg->wsize;
        st->ord0 = seg->wnrec;
        st->blk_first = st->ord0;
        st->min_enq = UINT64_MAX;
        st->blk_min = UINT64_MAX;
        buf_get(spool, &st->out);
        buf_get(spool, &st->raw);
      }
      err = stage_add(spool, st, op);
      if (err == 0)
        op->stage = st;
    }
    if (err != 0) {
      op->status = err;
      op->seg = NULL;
      pthread_mutex_lock(&spool->mu);
      spool->st.last_error = err;
      pthread_mutex_unlock(&spool->mu);
    }
  }
  g->ops = ops;
  g->nops = k;
  for (size_t i = 0; i < g->nst; i++)
    if (flush_block(spool, &g->stages[i]) != 0)
      g->stages[i].err = -ENOMEM;
  return k;
}

/*
 * A stage's write or fdatasync failed with <err>: cut the file back to where the stage
 * started. After a failed fdatasync the kernel may have dropped the dirty pages, so a cut
 * that fails means this file is no longer trusted: seal it and settle the ordinals the
 * stage gave out, so its records are never delivered.
 */
static void stage_fail(struct sl_spool *spool, struct stage *st, int err) {
  struct sl__seg *seg = st->seg;
  bool cut = false, cut_durable = false;

  st->err = err;
  sl_log_error("spool %s: writing %zu bytes to %s failed: %s", spool->name, st->out.len, seg->path,
               sl_strerror(err));
  if (seg->wfd >= 0) {
    cut = spool->io.ftruncate(seg->wfd, (off_t)st->off) == 0;
    if (cut)
      seg->zero_end = 0; /* the cut took the preallocated zeros too */
    cut_durable =
        cut && (spool->opts.fsync == SL_SPOOL_FSYNC_OFF || spool->io.fdatasync(seg->wfd) == 0);
  }
  if (seg->wfd >= 0 && !cut_durable) {
    /* The stage's bytes are still there, or may come back after a crash: its ordinals are
     * used up and settled, and the file takes no more appends. */
    uint64_t end = cut ? st->off : st->off + st->out.len;
    seg->wsize = end;
    seg->wnrec = st->ord0 + st->nrec;
    pthread_mutex_lock(&spool->mu);
    seg->committed = end;
    seg->nrec = seg->wnrec;
    spool->disk_bytes += end > seg->file_bytes ? end - seg->file_bytes : 0;
    seg->file_bytes = end > seg->file_bytes ? end : seg->file_bytes;
    for (uint32_t o = st->ord0; o < st->ord0 + st->nrec; o++)
      if (sl__ack_set(seg, o))
        seg->nacked++;
    sl__seg_account_backlog(spool, seg);
    if (!spool->ack_dirty)
      spool->ack_dirty_ns = sl_clock_mono_ns();
    spool->ack_dirty = true;
    pthread_mutex_unlock(&spool->mu);
    sl__seal(spool, seg, false);
  } else {
    seg->wsize = st->off;
    seg->wnrec = st->ord0;
    if (err == -EIO && seg->store != SL__STORE_DELAY && seg->wfd >= 0)
      sl__seal(spool, seg, true); /* roll to a fresh file rather than trust this one's pages */
  }
  pthread_mutex_lock(&spool->mu);
  sl__seg_account_zeros(spool, seg);
  spool->st.last_error = err;
  pthread_mutex_unlock(&spool->mu);
}

/* Writes every stage of <g> (no sync). A stage whose segment changed meanwhile fails. */
static void group_write(struct sl_spool *spool, struct group *g) {
  for (size_t i = 0; i < g->nst; i++) {
    struct stage *st = &g->stages[i];
    struct sl__seg *seg = st->seg;
    int err = st->err;

    if (err != 0)
      continue;
    if (seg->wfd < 0 || st->off != seg->wsize || st->ord0 != seg->wnrec) {
      /* The group before this one failed on the same file and cut or sealed it. */
      pthread_mutex_lock(&spool->mu);
      st->err = spool->st.last_error ? spool->st.last_error : -EIO;
      pthread_mutex_unlock(&spool->mu);
      continue;
    }
    err = sl_io_pwrite_all(&spool->io, seg->wfd, st->out.base, st->out.len, st->off);
    if (err != 0) {
      stage_fail(spool, st, err);
      continue;
    }
    seg->wsize = st->off + st->out.len;
    seg->wnrec = st->ord0 + st->nrec;
  }
}

/* fdatasync of every written stage; errors go to st->sync_err. Runs on either thread. */
static void group_sync(struct sl_spool *spool, struct group *g) {
  void (*on_fsync)(void *, uint64_t);
  void *fsync_arg;

  pthread_mutex_lock(&spool->mu); /* see sl__notify() */
  on_fsync = spool->opts.on_fsync;
  fsync_arg = spool->opts.fsync_arg;
  pthread_mutex_unlock(&spool->mu);
  for (size_t i = 0; i < g->nst; i++) {
    struct stage *st = &g->stages[i];
    if (st->err == 0) {
      uint64_t t0 = sl_clock_mono_ns();

      errno = 0;
      if (spool->io.fdatasync(st->seg->wfd) != 0)
        st->sync_err = sl__sys_err(-EIO);
      if (on_fsync != NULL)
        on_fsync(fsync_arg, sl_clock_mono_ns() - t0);
    }
  }
}

/* Keeps the ids of the ops written in <st> while the owner tracks commits
 * (sl_spool_track_begin); caller holds mu. */
static void track_ops_locked(struct sl_spool *spool, struct stage *st, struct sl__op **ops,
                             size_t n) {
  for (size_t i = 0; i < n && !spool->track_oom; i++) {
    if (ops[i]->stage != st)
      continue;
    if (spool->ntracked == spool->track_cap) {
      size_t cap = spool->track_cap ? spool->track_cap * 2 : 256;
      uint8_t(*grown)[16] = realloc(spool->tracked, cap * sizeof(*grown));
      if (grown == NULL) {
        spool->track_oom = true;
        break;
      }
      spool->tracked = grown;
      spool->track_cap = cap;
    }
    memcpy(spool->tracked[spool->ntracked++], ops[i]->data + SL__REC_ID_OFF, 16);
  }
}

/* After the sync: publishes the stages that made it, cuts back those that did not. */
static void group_finish(struct sl_spool *spool, struct group *g) {
  uint64_t nsync = 0;

  for (size_t i = 0; i < g->nst; i++) {
    struct stage *st = &g->stages[i];
    struct sl__seg *seg = st->seg;

    if (st->err == 0 && spool->opts.fsync != SL_SPOOL_FSYNC_OFF)
      nsync++;
    if (st->err == 0 && st->sync_err != 0)
      stage_fail(spool, st, st->sync_err);
    if (st->err != 0)
      continue;
    seg->wunits++;
    if (st->min_enq < seg->wmin_enq)
      seg->wmin_enq = st->min_enq;
    if (st->max_enq > seg->wmax_enq)
      seg->wmax_enq = st->max_enq;
    pthread_mutex_lock(&spool->mu);
    uint64_t end = st->off + st->out.len;
    spool->disk_bytes += end > seg->file_bytes ? end - seg->file_bytes : 0;
    seg->file_bytes = end > seg->file_bytes ? end : seg->file_bytes;
    sl__seg_account_zeros(spool, seg);
    seg->committed = end;
    seg->nrec = st->ord0 + st->nrec;
    sl__seg_commit_locked(spool, seg, st, g->ops, g->nops);
    if (st->min_enq < seg->min_enqueue_ms)
      seg->min_enqueue_ms = st->min_enq;
    if (seg->store == SL__STORE_READY)
      spool->main_unacked += st->nrec;
    else if (seg->store == SL__STORE_DELAY)
      spool->delay_unacked += st->nrec;
    else
      spool->dead_unacked += st->nrec;
    if (seg->store == SL__STORE_DELAY && seg->indexed)
      index_ops_locked(spool, st, g->ops, g->nops);
    if (spool->tracking)
      track_ops_locked(spool, st, g->ops, g->nops);
    spool->st.appends += st->nrec;
    spool->st.compressed_bytes_written += st->out.len;
    spool->st.last_error = 0;
    pthread_mutex_unlock(&spool->mu);
  }
  for (size_t k = 0; k < g->nops; k++) {
    struct stage *st = g->ops[k]->stage;
    if (st != NULL) {
      g->ops[k]->status = st->err;
      g->ops[k]->stage = NULL;
    }
  }
  pthread_mutex_lock(&spool->mu);
  spool->st.fsyncs += nsync;
  pthread_mutex_unlock(&spool->mu);
  for (size_t i = 0; i < g->nst; i++) {
    buf_put(spool, &g->stages[i].out);
    buf_put(spool, &g->stages[i].raw);
  }
}

/* Finishes the group whose fdatasync is running on the syncer, waiting for it. */
void sl__pipeline_flush(struct sl_spool *spool) {
  struct group *g = spool->pending;

  if (g == NULL)
    return;
  spool->pending = NULL;
  pthread_mutex_lock(&spool->mu);
  while (spool->sync_job != NULL)
    pthread_cond_wait(&spool->sdone, &spool->mu); /* not wcond: appends signal that one */
  pthread_mutex_unlock(&spool->mu);
  group_finish(spool, g);
  if (g->complete_ops)
    finish_copies(spool, g->ops, g->nops);
  if (g->owns_ops)
    free(g->ops);
  free(g);
}

void *sl__syncer_main(void *arg) {
  struct sl_spool *spool = arg;

  pthread_setname_np(pthread_self(), "spool-syncer");

  pthread_mutex_lock(&spool->mu);
  for (;;) {
    while (spool->sync_job == NULL && !spool->sync_stop)
      pthread_cond_wait(&spool->scond, &spool->mu);
    if (spool->sync_job == NULL)
      break;
    struct group *g = spool->sync_job;
    pthread_mutex_unlock(&spool->mu);
    group_sync(spool, g);
    pthread_mutex_lock(&spool->mu);
    spool->sync_job = NULL;
    pthread_cond_signal(&spool->sdone);
    pthread_cond_signal(&spool->wcond);
  }
  pthread_mutex_unlock(&spool->mu);
  return NULL;
}

/*
 * Writes <ops> (copies: APPEND, RETRY, DEAD or internal redrive copies). With <wait>, or
 * under the always/off policies, each group is synced and finished before returning and
 * the caller reads each op's status; otherwise the last group's fdatasync is left running
 * on the syncer (spool->pending) and its ops complete when it is flushed.
 */
void sl__write_copies(struct sl_spool *spool, struct sl__op **ops, size_t nops, bool wait,
                      bool complete_ops) {
  size_t at = 0;

  while (at < nops) {
    struct group *g = calloc(1, sizeof(*g));
    bool async = spool->opts.fsync == SL_SPOOL_FSYNC_BATCH && !wait;
    size_t k;

    if (g == NULL) {
      for (size_t i = at; i < nops; i++)
        ops[i]->status = -ENOMEM;
      if (complete_ops)
        finish_copies(spool, ops + at, nops - at);
      return;
    }
    k = group_build(spool, g, ops + at, nops - at);
    g->complete_ops = complete_ops;
    if (async) {
      /* The group outlives this call: it keeps its own list of ops. */
      struct sl__op **own = malloc(k * sizeof(*own));
      if (own == NULL) {
        async = false;
      } else {
        memcpy(own, ops + at, k * sizeof(*own));
        g->ops = own;
        g->owns_ops = true;
      }
    }
    at += k;
    sl__pipeline_flush(spool); /* the previous group's sync ran while this one was compressed */
    group_write(spool, g);
    if (async) {
      pthread_mutex_lock(&spool->mu);
      spool->sync_job = g;
      pthread_cond_signal(&spool->scond);
      pthread_mutex_unlock(&spool->mu);
      spool->pending = g;
      continue;
    }
    if (spool->opts.fsync != SL_SPOOL_FSYNC_OFF)
      group_sync(spool, g);
    group_finish(spool, g);
    if (complete_ops)
      finish_copies(spool, g->ops, g->nops);
    if (g->owns_ops)
      free(g->ops);
    free(g);
  }
}

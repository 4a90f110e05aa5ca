/*
 * The spool's writer thread (and its syncer): every write-side system call.
 *
 * The writer takes the whole queue at once (one group), encodes the group's
 * records into compressed units per target segment and writes each
 * segment's units with one pwrite. Durability: under `batch` the syncer
 * thread runs one fdatasync per touched file while the writer compresses
 * the next group (a group is written only after the previous one's sync
 * returned, so at most one group is unsynced on disk); under `always` every
 * append is written and synced alone; under `off` nothing is synced. Then
 * the group is published to readers and its operations are handed back
 * through the completion queue and <notify>. Acks are made durable by
 * rewriting the checkpoint at most once per ack_interval; fully settled
 * segments are unlinked only after a checkpoint that calls them done is on
 * disk. The writer also seals and rolls segments, indexes delay buckets as
 * they come due, and has the compression dictionary trained (dict.c, on a helper
 * thread, so a training run never holds up a group commit).
 *
 * Layer: above segment.c, heap.c and ckpt.c; with dead.c (its dead-letter jobs, which
 * write through sl__write_copies) one layer; called by spool.c.
 *
 * Errors: a failed write or fdatasync fails only the operations of that
 * group (and of a group already built behind it for the same file); the
 * file is cut back to its last good unit (or, if that fails too, sealed and
 * its cancelled ordinals marked settled) so the spool stays consistent and
 * the next group tries again: appends succeed again once space returns. The
 * last error is kept in the stats until a write succeeds.
 *
 * @thread writer; the syncer runs only group_sync() on the group it is given
 */
#include "spool_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "sluice/clock.h"
#include "sluice/crc32c.h"
#include "sluice/log.h"
#include "sluice/util.h"

#define DELAY_BASE_MS 1024u
#define DELAY_LOOKAHEAD_MS 1000u
#define MAX_BUCKET_FDS 64
#define SPARE_BACKOFF_NS (60ull * 1000000000) /* after a spare could not be prepared */

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

static void complete_locked(struct sl_spool *spool, struct sl__op *op) {
  op->next = NULL;
  if (spool->c_tail)
    spool->c_tail->next = op;
  else
    __atomic_store_n(&spool->c_head, op, __ATOMIC_RELEASE);
  spool->c_tail = op;
}

static void notify(struct sl_spool *spool) {
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

static int sys_err(int fallback) { return errno ? -errno : fallback; }

static int write_all(struct sl_spool *spool, int fd, const void *buf, size_t len, uint64_t off) {
  size_t done = 0;

  while (done < len) {
    errno = 0;
    ssize_t n = spool->io.pwrite(fd, (const char *)buf + done, len - done, (off_t)(off + done));
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return sys_err(-EIO);
    }
    if (n == 0)
      return -EIO;
    done += (size_t)n;
  }
  return 0;
}

/*
 * Writes zeros over [from, to) of <fd> and syncs them, for a spare segment. It goes in small
 * synced steps with pauses, about 100 MB/s at most: one big write and fdatasync would fill
 * the disk's queue, and every group commit waiting behind it would see its latency jump by
 * tens of milliseconds. Gives up with -ECANCELED when the spool is closing.
 */
#define ZERO_STEP (256u << 10)
#define ZERO_PAUSE_NS 2000000L

static int zero_fill(struct sl_spool *spool, int fd, uint64_t from, uint64_t to) {
  static const uint8_t zeros[1u << 16];
  const struct timespec pause = {0, ZERO_PAUSE_NS};
  int err = 0;

  for (uint64_t step = from; step < to && err == 0; step += ZERO_STEP) {
    uint64_t end = to - step < ZERO_STEP ? to : step + ZERO_STEP;
    bool stopping;

    for (uint64_t off = step; off < end && err == 0; off += sizeof(zeros)) {
      size_t n = end - off < sizeof(zeros) ? (size_t)(end - off) : sizeof(zeros);
      err = write_all(spool, fd, zeros, n, off);
    }
    if (err == 0 && spool->io.fdatasync(fd) != 0)
      err = sys_err(-EIO);
    pthread_mutex_lock(&spool->mu);
    stopping = spool->stopping;
    pthread_mutex_unlock(&spool->mu);
    if (err == 0 && stopping)
      err = -ECANCELED;
    if (err == 0)
      nanosleep(&pause, NULL);
  }
  return err;
}

static void pipeline_flush(struct sl_spool *spool);

/* Writes the footer and closes the segment for appends. */
static void seal(struct sl_spool *spool, struct sl__seg *seg, bool footer) {
  uint8_t f[SL__FOOTER_SIZE];
  struct sl__unit u = {0};

  /* The syncer may be syncing this file: let it finish before the descriptor goes. */
  pipeline_flush(spool);

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
    if (write_all(spool, seg->wfd, f, sizeof(f), seg->wsize) == 0 &&
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

static uint64_t take_seq(struct sl_spool *spool) {
  uint64_t seq;

  pthread_mutex_lock(&spool->mu);
  seq = spool->next_seq++;
  pthread_mutex_unlock(&spool->mu);
  return seq;
}

/*
 * Creates segment file <seq> with its header, zero-filled and synced up to <prealloc> bytes
 * when that is above the header, and makes its name durable. The segment is in no list yet.
 */
static int open_seg_file(struct sl_spool *spool, int store, uint64_t seq, uint64_t start,
                         uint64_t width, uint64_t prealloc, struct sl__seg **out) {
  uint8_t h[SL__SEG_HDR];
  struct sl__seg *seg;
  int err;

  seg = sl__seg_new(store, seq, start, width, spool->dir);
  if (seg == NULL)
    return -ENOMEM;
  seg->wfd = spool->io.open(seg->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (seg->wfd < 0) {
    err = -errno;
    goto fail;
  }
  sl__seg_header_encode(h, store, seq, start, width);
  err = write_all(spool, seg->wfd, h, sizeof(h), 0);
  if (err == 0 && prealloc > SL__SEG_HDR)
    err = zero_fill(spool, seg->wfd, SL__SEG_HDR, prealloc);
  if (err != 0)
    goto fail;
  /* The name must survive a crash before any append in this file completes. */
  if (spool->io.fsync(spool->dirfd) != 0) {
    err = sys_err(-EIO);
    goto fail;
  }
  seg->wsize = SL__SEG_HDR;
  seg->committed = SL__SEG_HDR;
  seg->file_bytes = SL__SEG_HDR;
  seg->zero_end = prealloc > SL__SEG_HDR ? prealloc : 0;
  *out = seg;
  return 0;

fail:
  if (seg->wfd >= 0) {
    spool->io.close(seg->wfd);
    seg->wfd = -1;
    spool->io.unlink(seg->path);
  }
  sl__seg_unref(seg);
  return err;
}

static void add_seg(struct sl_spool *spool, struct sl__seg *seg) {
  if (seg->store == SL__STORE_READY && seg->seq > spool->ready_seq_max)
    spool->ready_seq_max = seg->seq;
  pthread_mutex_lock(&spool->mu);
  sl__segvec_push(seg->store == SL__STORE_READY  ? &spool->ready
                  : seg->store == SL__STORE_DEAD ? &spool->dead
                                                 : &spool->delay,
                  seg);
  spool->disk_bytes += SL__SEG_HDR;
  spool->st.segments++;
  pthread_mutex_unlock(&spool->mu);
}

/* ---- preallocated ready segments ------------------------------------------------------ */

/*
 * Ready segments are written into files zero-filled and synced in advance: a spare is
 * prepared on a helper thread while the current segment fills, and taken when it rolls.
 * Overwriting blocks that are already allocated changes neither the file's size nor its
 * block map, so a group's fdatasync flushes data pages only instead of also writing the
 * inode: on ext4 this cut the sync latency every spilled request waits for by about a
 * third (`spool_bench disk` measures both). A roll also no longer creates a file and syncs the
 * directory in the middle of a group commit. The zero tail is cut when the segment is sealed, and
 * recovery cuts an all-zero tail quietly (it is not a torn write).
 */
static uint64_t prealloc_bytes(const struct sl_spool *spool) {
  if (!spool->opts.preallocate || spool->opts.fsync == SL_SPOOL_FSYNC_OFF)
    return 0; /* nothing is synced: there is no sync latency to save */
  /* A group may run past segment_bytes before the segment rolls. */
  return spool->opts.segment_bytes + spool->opts.segment_bytes / 8;
}

static void *preparer_main(void *arg) {
  struct sl_spool *spool = arg;
  struct sl__seg *seg = NULL;
  int err =
      open_seg_file(spool, SL__STORE_READY, spool->spare_seq, 0, 0, prealloc_bytes(spool), &seg);

  if (err != 0 && err != -ECANCELED)
    sl_log_warn("spool %s: preparing the next segment failed (%s): it will be created when needed",
                spool->name, sl_strerror(err));
  pthread_mutex_lock(&spool->mu);
  if (err == 0)
    sl__seg_account_zeros(spool, seg);
  spool->spare = err == 0 ? seg : NULL;
  spool->spare_ready = true;
  pthread_cond_signal(&spool->wcond);
  pthread_mutex_unlock(&spool->mu);
  return NULL;
}

/* Deletes a spare that was never used (its sequence number is simply skipped). */
static void drop_spare(struct sl_spool *spool, struct sl__seg *seg) {
  spool->io.close(seg->wfd);
  seg->wfd = -1;
  spool->io.unlink(seg->path);
  seg->zero_end = 0;
  pthread_mutex_lock(&spool->mu);
  sl__seg_account_zeros(spool, seg);
  pthread_mutex_unlock(&spool->mu);
  sl__seg_unref(seg);
}

/* Joins a preparer that finished; returns its spare (NULL if none, or if it is still busy). */
static struct sl__seg *collect_spare(struct sl_spool *spool, bool wait) {
  struct sl__seg *seg;
  bool ready;

  if (!spool->preparer_running)
    return NULL;
  pthread_mutex_lock(&spool->mu);
  ready = spool->spare_ready;
  pthread_mutex_unlock(&spool->mu);
  if (!ready && !wait)
    return NULL;
  pthread_join(spool->preparer, NULL);
  spool->preparer_running = false;
  pthread_mutex_lock(&spool->mu);
  seg = spool->spare;
  spool->spare = NULL;
  spool->spare_ready = false;
  pthread_mutex_unlock(&spool->mu);
  if (seg == NULL) /* it failed (a full disk?): do not try again at every roll */
    spool->spare_after_ns = sl_clock_mono_ns() + SPARE_BACKOFF_NS;
  return seg;
}

/* Starts preparing the next ready segment unless one is being prepared or is waiting. */
static void prepare_spare(struct sl_spool *spool) {
  uint64_t bytes = prealloc_bytes(spool);
  struct statvfs fs;
  bool stopping;

  if (spool->preparer_running || bytes == 0 || sl_clock_mono_ns() < spool->spare_after_ns)
    return;
  /* Zeros must not take the last free space from appends, acks and the ledger journal. */
  if (fstatvfs(spool->dirfd, &fs) == 0 && (uint64_t)fs.f_bavail * fs.f_frsize < 4 * bytes) {
    spool->spare_after_ns = sl_clock_mono_ns() + SPARE_BACKOFF_NS;
    return;
  }
  pthread_mutex_lock(&spool->mu);
  stopping = spool->stopping;
  pthread_mutex_unlock(&spool->mu);
  if (stopping)
    return;
  /* Its number is taken now, so any segment the writer creates before the spare is ready
   * comes after it in the ready log (and makes it unusable, see create_seg). */
  spool->spare_seq = take_seq(spool);
  if (pthread_create(&spool->preparer, NULL, preparer_main, spool) == 0)
    spool->preparer_running = true;
}

static int create_seg(struct sl_spool *spool, int store, uint64_t start, uint64_t width,
                      struct sl__seg **out) {
  struct sl__seg *seg = NULL;
  int err;

  if (store == SL__STORE_READY) {
    /* Never waits: without a spare ready (the first segment of a fresh spool) the
     * segment is created as before, and only its successor is preallocated. */
    seg = collect_spare(spool, false);
    if (seg != NULL && seg->seq < spool->ready_seq_max) {
      /* Prepared before a segment created without it: the reader goes through the ready
       * log by sequence number and may have passed this one already (even if that other
       * segment is deleted by now). */
      drop_spare(spool, seg);
      seg = NULL;
    }
  }
  if (seg == NULL) {
    err = open_seg_file(spool, store, take_seq(spool), start, width, 0, &seg);
    if (err != 0)
      return err;
  }
  add_seg(spool, seg);
  if (store == SL__STORE_READY)
    prepare_spare(spool);
  *out = seg;
  return 0;
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
      return create_seg(spool, SL__STORE_DELAY, start, width, out);
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
      seal(spool, seg, true);
      seg = NULL;
    }
  }
  if (seg == NULL)
    return create_seg(spool, op->store, 0, 0, out);
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

static void pipeline_flush(struct sl_spool *spool);

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
    seal(spool, seg, false);
  } else {
    seg->wsize = st->off;
    seg->wnrec = st->ord0;
    if (err == -EIO && seg->store != SL__STORE_DELAY && seg->wfd >= 0)
      seal(spool, seg, true); /* roll to a fresh file rather than trust this one's pages */
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
    err = write_all(spool, seg->wfd, st->out.base, st->out.len, st->off);
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

  pthread_mutex_lock(&spool->mu); /* see notify() */
  on_fsync = spool->opts.on_fsync;
  fsync_arg = spool->opts.fsync_arg;
  pthread_mutex_unlock(&spool->mu);
  for (size_t i = 0; i < g->nst; i++) {
    struct stage *st = &g->stages[i];
    if (st->err == 0) {
      uint64_t t0 = sl_clock_mono_ns();

      errno = 0;
      if (spool->io.fdatasync(st->seg->wfd) != 0)
        st->sync_err = sys_err(-EIO);
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

static void finish_copies(struct sl_spool *spool, struct sl__op **copies, size_t ncopies);

/* Finishes the group whose fdatasync is running on the syncer, waiting for it. */
static void pipeline_flush(struct sl_spool *spool) {
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
    pipeline_flush(spool); /* the previous group's sync ran while this one was compressed */
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

/* ---- housekeeping: buckets, checkpoint, deletion ------------------------------------- */

/* Seals delay buckets whose window has passed and indexes those coming due. */
static void buckets_step(struct sl_spool *spool, uint64_t now) {
  struct sl_buf tmp, blk;
  struct sl__segvec todo = {0};

  pthread_mutex_lock(&spool->mu);
  for (size_t i = 0; i < spool->delay.n; i++) {
    struct sl__seg *seg = spool->delay.v[i];
    if (!seg->indexed && seg->start_ms <= now + DELAY_LOOKAHEAD_MS) {
      seg->refs++;
      sl__segvec_push(&todo, seg);
    }
  }
  pthread_mutex_unlock(&spool->mu);
  sl_buf_init(&tmp);
  sl_buf_init(&blk);
  for (size_t i = 0; i < todo.n; i++) {
    sl__bucket_index(spool, todo.v[i], spool->wdctx, &tmp, &blk);
  }
  sl_buf_dispose(&tmp);
  sl_buf_dispose(&blk);
  for (size_t i = 0; i < spool->delay.n; i++) {
    struct sl__seg *seg = spool->delay.v[i];
    if (!seg->sealed && seg->start_ms + seg->width_ms <= now)
      seal(spool, seg, false);
  }
  /* Keep few bucket descriptors open: close those due last (reopened when written to). */
  for (;;) {
    struct sl__seg *far = NULL;
    size_t open_fds = 0;
    for (size_t i = 0; i < spool->delay.n; i++) {
      struct sl__seg *seg = spool->delay.v[i];
      if (seg->wfd < 0)
        continue;
      open_fds++;
      if (far == NULL || seg->start_ms > far->start_ms)
        far = seg;
    }
    if (open_fds <= MAX_BUCKET_FDS || far == NULL)
      break;
    pipeline_flush(spool); /* the syncer may be syncing it */
    spool->io.close(far->wfd);
    far->wfd = -1;
  }
  pthread_mutex_lock(&spool->mu);
  for (size_t i = 0; i < todo.n; i++)
    sl__seg_unref(todo.v[i]);
  pthread_mutex_unlock(&spool->mu);
  free(todo.v);
}

/*
 * Seals the segment still open for appends (ready or dead) once every record in it is
 * settled and its space matters: it holds 1 MiB or more, or the spool is at least half
 * full. Without this, the last segment of a drained backlog would keep its bytes (and a
 * full spool would stay full) until the next append rolled it; with it, a quiet spool that
 * keeps up with its traffic still does not create and delete a file per request.
 */
static void roll_settled_step(struct sl_spool *spool) {
  struct sl__segvec *vecs[2] = {&spool->ready, &spool->dead};

  for (int v = 0; v < 2; v++) {
    struct sl__seg *seg;
    bool roll;

    if (vecs[v]->n == 0)
      continue;
    seg = vecs[v]->v[vecs[v]->n - 1];
    if (seg->sealed || seg->wfd < 0 || seg->wnrec == 0)
      continue;
    pthread_mutex_lock(&spool->mu);
    /* A preallocated file keeps its size whatever it holds: rolling it early would free no
     * disk and cost the zero-fill of another spare. Only the spool's own byte count
     * (max_bytes) makes it worth it. */
    roll = seg->nacked >= seg->nrec && seg->nrec == seg->wnrec && seg->committed == seg->wsize &&
           ((seg->wsize >= (1u << 20) && seg->zero_end == 0) ||
            (spool->opts.max_bytes > 0 &&
             (spool->disk_bytes + spool->q_bytes) * 2 >= spool->opts.max_bytes));
    pthread_mutex_unlock(&spool->mu);
    if (!roll)
      continue;
    seal(spool, seg, true);
    pthread_mutex_lock(&spool->mu);
    if (seg->done) {
      if (!spool->ack_dirty)
        spool->ack_dirty_ns = sl_clock_mono_ns();
      spool->ack_dirty = true; /* the checkpoint that calls it done lets gc_step delete it */
    }
    pthread_mutex_unlock(&spool->mu);
  }
}

/* Unlinks segments whose "done" is durable, then makes the unlinks durable. */
static void gc_step(struct sl_spool *spool) {
  struct sl__segvec *vecs[3] = {&spool->ready, &spool->delay, &spool->dead};
  struct sl__segvec gone = {0};

  pthread_mutex_lock(&spool->mu);
  for (int v = 0; v < 3; v++)
    for (size_t i = 0; i < vecs[v]->n; i++) {
      struct sl__seg *seg = vecs[v]->v[i];
      if (seg->done && seg->done_ckpt && !seg->removed) {
        seg->refs++;
        sl__segvec_push(&gone, seg);
      }
    }
  pthread_mutex_unlock(&spool->mu);
  if (gone.n == 0)
    return;
  for (size_t i = 0; i < gone.n; i++) {
    struct sl__seg *seg = gone.v[i];
    if (seg->wfd >= 0) {
      spool->io.close(seg->wfd);
      seg->wfd = -1;
    }
    if (spool->io.unlink(seg->path) != 0 && errno != ENOENT) {
      sl_log_warn("spool %s: cannot delete %s: %s", spool->name, seg->path, sl_strerror(-errno));
      gone.v[i] = NULL;
      pthread_mutex_lock(&spool->mu);
      sl__seg_unref(seg);
      pthread_mutex_unlock(&spool->mu);
    }
  }
  /* Until the directory is synced a deleted file may come back after a crash; the
   * checkpoint keeps calling it done, so the next open deletes it again. */
  (void)spool->io.fsync(spool->dirfd);
  pthread_mutex_lock(&spool->mu);
  for (size_t i = 0; i < gone.n; i++) {
    struct sl__seg *seg = gone.v[i];
    if (seg == NULL)
      continue;
    seg->removed = true;
    spool->disk_bytes -= seg->file_bytes < spool->disk_bytes ? seg->file_bytes : spool->disk_bytes;
    spool->prealloc_bytes -= seg->zeros;
    seg->zeros = 0;
    spool->st.segments--;
    sl__segvec_remove(seg->store == SL__STORE_READY  ? &spool->ready
                      : seg->store == SL__STORE_DEAD ? &spool->dead
                                                     : &spool->delay,
                      seg);
    sl__seg_unref(seg); /* the list's reference */
    sl__seg_unref(seg); /* ours */
  }
  pthread_mutex_unlock(&spool->mu);
  free(gone.v);
}

/* Writes the checkpoint if acks are waiting and it is time; completes the waiters. */
static void ckpt_step(struct sl_spool *spool, bool force) {
  struct sl__op *waiters;
  bool dirty;
  uint64_t since;
  int err;

  pthread_mutex_lock(&spool->mu);
  dirty = spool->ack_dirty;
  since = spool->ack_dirty_ns;
  pthread_mutex_unlock(&spool->mu);
  if (!dirty && spool->ack_waiters == NULL)
    return;
  if (!force && sl_clock_mono_ns() - since < spool->opts.ack_interval_us * 1000)
    return;
  err = sl__ckpt_write(spool);
  if (err != 0)
    sl_log_error("spool %s: writing the ack checkpoint failed: %s (acks stay in memory and "
                 "are written again)",
                 spool->name, sl_strerror(err));
  /* The list was built newest first: complete in the order the ops came. */
  waiters = NULL;
  while (spool->ack_waiters != NULL) {
    struct sl__op *o = spool->ack_waiters;
    spool->ack_waiters = o->next;
    o->next = waiters;
    waiters = o;
  }
  pthread_mutex_lock(&spool->mu);
  if (err != 0)
    spool->st.last_error = err;
  while (waiters != NULL) {
    struct sl__op *next = waiters->next;
    if (waiters->status == 0)
      waiters->status = err;
    complete_locked(spool, waiters);
    spool->ops_done++;
    waiters = next;
  }
  pthread_mutex_unlock(&spool->mu);
  notify(spool);
  if (err == 0)
    gc_step(spool);
}

/* ---- the thread ---------------------------------------------------------------------- */

static void add_waiter(struct sl_spool *spool, struct sl__op *op) {
  op->next = spool->ack_waiters;
  spool->ack_waiters = op;
}

/* Completes appends and moves retries/dead letters on to wait for the checkpoint. */
static void finish_copies(struct sl_spool *spool, struct sl__op **copies, size_t ncopies) {
  pthread_mutex_lock(&spool->mu);
  for (size_t i = 0; i < ncopies; i++) {
    struct sl__op *o = copies[i];
    spool->q_bytes -= o->len < spool->q_bytes ? o->len : spool->q_bytes;
    if (o->type == SL__OP_APPEND) {
      spool->st.raw_bytes_written += o->status == 0 ? o->len : 0;
      complete_locked(spool, o);
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
  notify(spool);
}

/* Runs one batch of ops taken from the queue. */
static void run_ops(struct sl_spool *spool, struct sl__op *list) {
  struct sl__op **copies = NULL, **done = NULL;
  size_t ncopies = 0, ndone = 0, n = 0;

  for (struct sl__op *o = list; o != NULL; o = o->next)
    n++;
  copies = malloc(n * sizeof(*copies));
  done = malloc(n * sizeof(*done));
  if (copies == NULL || done == NULL) {
    /* Fail everything rather than lose track of it. */
    pthread_mutex_lock(&spool->mu);
    while (list != NULL) {
      struct sl__op *next = list->next;
      list->status = -ENOMEM;
      complete_locked(spool, list);
      spool->ops_done++;
      list = next;
    }
    pthread_mutex_unlock(&spool->mu);
    free(copies);
    free(done);
    notify(spool);
    return;
  }
  for (struct sl__op *o = list, *next; o != NULL; o = next) {
    next = o->next;
    o->next = NULL;
    switch (o->type) {
    case SL__OP_APPEND:
    case SL__OP_RETRY:
    case SL__OP_DEAD:
      copies[ncopies++] = o;
      break;
    case SL__OP_ACK:
      add_waiter(spool, o);
      break;
    case SL__OP_REDRIVE:
    case SL__OP_PURGE:
    case SL__OP_BARRIER:
      done[ndone++] = o;
      break;
    }
  }
  if (spool->opts.fsync == SL_SPOOL_FSYNC_ALWAYS) {
    /* Each append alone, completed as soon as its own fdatasync returned. */
    for (size_t i = 0; i < ncopies; i++) {
      sl__write_copies(spool, &copies[i], 1, true, true);
      if (i % 64 == 63)
        sl__dict_step(spool); /* a long run of single appends must not hold the dictionary up */
    }
  } else if (ncopies > 0) {
    sl__write_copies(spool, copies, ncopies, false, true);
  }
  if (ndone > 0)
    pipeline_flush(spool); /* barriers and dead-letter moves come after every append */
  for (size_t i = 0; i < ndone; i++) {
    struct sl__op *o = done[i];
    if (o->type == SL__OP_BARRIER) {
      /* Completes after everything queued before it, including pending acks. */
      add_waiter(spool, o);
      continue;
    }
    o->status = sl__dead_move(spool, o);
    add_waiter(spool, o);
  }
  free(copies);
  free(done);
}

/* The next time housekeeping must run, as a monotonic deadline in ns. */
static uint64_t next_wake_ns(struct sl_spool *spool, uint64_t now_ns, uint64_t now_ms) {
  uint64_t wake_ms = now_ms + 1000;

  for (size_t i = 0; i < spool->delay.n; i++) {
    struct sl__seg *seg = spool->delay.v[i];
    if (!seg->indexed && seg->start_ms < wake_ms + DELAY_LOOKAHEAD_MS)
      wake_ms = seg->start_ms > DELAY_LOOKAHEAD_MS ? seg->start_ms - DELAY_LOOKAHEAD_MS : 0;
    if (!seg->sealed && seg->start_ms + seg->width_ms < wake_ms)
      wake_ms = seg->start_ms + seg->width_ms;
  }
  uint64_t wake = now_ns + (wake_ms > now_ms ? wake_ms - now_ms : 0) * 1000000;
  if (spool->ack_dirty || spool->ack_waiters != NULL) {
    uint64_t t = spool->ack_dirty_ns + spool->opts.ack_interval_us * 1000;
    if (!spool->ack_dirty)
      t = now_ns;
    if (t < wake)
      wake = t;
  }
  return wake;
}

static void timed_wait(struct sl_spool *spool, uint64_t deadline_ns) {
  struct timespec ts;

  ts.tv_sec = (time_t)(deadline_ns / 1000000000u);
  ts.tv_nsec = (long)(deadline_ns % 1000000000u);
  pthread_cond_timedwait(&spool->wcond, &spool->mu, &ts);
}

void *sl__writer_main(void *arg) {
  struct sl_spool *spool = arg;

  pthread_setname_np(pthread_self(), "spool-writer");
  pthread_mutex_lock(&spool->mu);
  for (size_t i = 0; i < spool->ready.n; i++)
    if (spool->ready.v[i]->seq > spool->ready_seq_max)
      spool->ready_seq_max = spool->ready.v[i]->seq;
  pthread_mutex_unlock(&spool->mu);
  prepare_spare(spool); /* for the first roll, or the first segment of a fresh spool */

  for (;;) {
    struct sl__op *list;
    bool stopping;
    uint64_t now_ns, now_ms;

    pthread_mutex_lock(&spool->mu);
    for (;;) {
      now_ns = sl_clock_mono_ns();
      now_ms = sl__now_ms(spool);
      if (spool->q_head != NULL || spool->stopping)
        break;
      if (spool->pending != NULL && spool->sync_job == NULL)
        break; /* the syncer finished: complete that group */
      uint64_t wake = next_wake_ns(spool, now_ns, now_ms);
      if (wake <= now_ns || (spool->trained_ready && spool->trainer_running))
        break;
      timed_wait(spool, wake);
    }
    if (spool->opts.fsync == SL_SPOOL_FSYNC_BATCH && spool->opts.sync_delay_us > 0 &&
        spool->q_head != NULL && !spool->stopping) {
      /* Let the group grow for up to sync_delay_us after its first op, or until it is big. */
      uint64_t until = spool->q_head->queued_ns + spool->opts.sync_delay_us * 1000;
      while (!spool->stopping && spool->q_bytes < spool->opts.batch_bytes &&
             sl_clock_mono_ns() < until)
        timed_wait(spool, until);
    }
    list = spool->q_head;
    spool->q_head = spool->q_tail = NULL;
    stopping = spool->stopping;
    pthread_mutex_unlock(&spool->mu);

    if (list != NULL)
      run_ops(spool, list);
    else
      pipeline_flush(spool);
    sl__dict_step(spool);
    buckets_step(spool, sl__now_ms(spool));
    roll_settled_step(spool);
    ckpt_step(spool, stopping);
    if (stopping) {
      pipeline_flush(spool);
      ckpt_step(spool, true);
      pthread_mutex_lock(&spool->mu);
      bool empty = spool->q_head == NULL;
      pthread_mutex_unlock(&spool->mu);
      if (empty && spool->ack_waiters == NULL && spool->pending == NULL)
        break;
    }
  }
  struct sl__seg *spare = collect_spare(spool, true);
  if (spare != NULL)
    drop_spare(spool, spare);
  if (spool->trainer_running) {
    pthread_join(spool->trainer, NULL);
    spool->trainer_running = false;
    free(spool->trained);
    spool->trained = NULL;
  }
  return NULL;
}

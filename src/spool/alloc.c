/*
 * New segment files: sequence numbers, creating a segment (its header written, its name made
 * durable) and adding it to its store's list, and the preallocated spare of the ready log,
 * zero-filled on a helper thread while the current segment fills, so that a roll finds its
 * next file ready. (Every write of the spool goes through sl_io_pwrite_all(), sluice/io.h:
 * one pwrite loop for the spool, the journal and the durable-file helper.)
 *
 * Layer: above segment.c (and format.c); below commit.c, which asks it for a segment to
 * write into (sl__create_seg), and writer.c, which starts the first spare and drops the last
 * one at exit. It calls nothing above it: a segment made here is in no group yet, so the
 * commit pipeline has nothing to flush for it.
 *
 * @thread writer; the preparer thread runs preparer_main() only (a file under a number the
 *         writer took for it) and hands its spare over under spool->mu
 */
#include "spool_int.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/statvfs.h>
#include <time.h>

#include "sluice/clock.h"
#include "sluice/log.h"

#define SPARE_BACKOFF_NS (60ull * 1000000000) /* after a spare could not be prepared */

int sl__sys_err(int fallback) { return errno ? -errno : fallback; }

/*
 * Writes zeros over [from, to) of <fd> and syncs them, for a spare segment. It goes in small
 * synced steps with pauses, about 100 MB/s at most: one big write and fdatasync would fill
 * the disk's queue, and every group commit waiting behind it would see its latency jump by
 * tens of milliseconds. Gives up with -ECANCELED when the spool is closing.
 */
#define ZERO_STEP (256u << 10)
#define ZERO_PAUSE_NS 2000000L

static int zero_fill(struct sl_spool *spool, int fd, uint64_t from, uint64_t to) {
  const struct timespec pause = {0, ZERO_PAUSE_NS};
  int err = 0;

  for (uint64_t step = from; step < to && err == 0; step += ZERO_STEP) {
    uint64_t end = to - step < ZERO_STEP ? to : step + ZERO_STEP;
    bool stopping;

    err = sl_io_pwrite_zeros(&spool->io, fd, step, end);
    if (err == 0 && spool->io.fdatasync(fd) != 0)
      err = sl__sys_err(-EIO);
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
  err = sl_io_pwrite_all(&spool->io, seg->wfd, h, sizeof(h), 0);
  if (err == 0 && prealloc > SL__SEG_HDR)
    err = zero_fill(spool, seg->wfd, SL__SEG_HDR, prealloc);
  if (err != 0)
    goto fail;
  /* The name must survive a crash before any append in this file completes. */
  if (spool->io.fsync(spool->dirfd) != 0) {
    err = sl__sys_err(-EIO);
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
void sl__drop_spare(struct sl_spool *spool, struct sl__seg *seg) {
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
struct sl__seg *sl__collect_spare(struct sl_spool *spool, bool wait) {
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
void sl__prepare_spare(struct sl_spool *spool) {
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
   * comes after it in the ready log (and makes it unusable, see sl__create_seg). */
  spool->spare_seq = take_seq(spool);
  if (pthread_create(&spool->preparer, NULL, preparer_main, spool) == 0)
    spool->preparer_running = true;
}

int sl__create_seg(struct sl_spool *spool, int store, uint64_t start, uint64_t width,
                   struct sl__seg **out) {
  struct sl__seg *seg = NULL;
  int err;

  if (store == SL__STORE_READY) {
    /* Never waits: without a spare ready (the first segment of a fresh spool) the
     * segment is created as before, and only its successor is preallocated. */
    seg = sl__collect_spare(spool, false);
    if (seg != NULL && seg->seq < spool->ready_seq_max) {
      /* Prepared before a segment created without it: the reader goes through the ready
       * log by sequence number and may have passed this one already (even if that other
       * segment is deleted by now). */
      sl__drop_spare(spool, seg);
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
    sl__prepare_spare(spool);
  *out = seg;
  return 0;
}

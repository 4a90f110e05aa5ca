/*
 * The spool's writer thread: its loop and the steps it runs between groups.
 *
 * The writer sleeps until ops are queued, the syncer has finished a group, or housekeeping is
 * due (next_wake_ns); under `batch` it lets a group grow for up to sync_delay_us. Then it runs
 * the ops it took (run_ops: copies go to the group commit in commit.c, acks and barriers wait
 * for the next checkpoint, dead-letter moves go to dead.c) and its periodic steps: the
 * compression dictionary (dict.c), delay buckets indexed as they come due and sealed once
 * their window has passed, the open segment rolled once everything in it is settled, and the
 * acks made durable by rewriting the checkpoint at most once per ack_interval. Fully settled
 * segments are unlinked only after a checkpoint that calls them done is on disk.
 *
 * Layer: the top of the write side: above dead.c, commit.c, alloc.c, dict.c, ckpt.c and
 * segment.c; called by spool.c only, which starts sl__writer_main.
 *
 * @thread writer
 */
#include "spool_int.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "sluice/clock.h"
#include "sluice/log.h"

#define DELAY_LOOKAHEAD_MS 1000u
#define MAX_BUCKET_FDS 64

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
      sl__seal(spool, seg, false);
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
    sl__pipeline_flush(spool); /* the syncer may be syncing it */
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
    sl__seal(spool, seg, true);
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
    sl__complete_locked(spool, waiters);
    spool->ops_done++;
    waiters = next;
  }
  pthread_mutex_unlock(&spool->mu);
  sl__notify(spool);
  if (err == 0)
    gc_step(spool);
}

/* ---- the thread ---------------------------------------------------------------------- */

static void add_waiter(struct sl_spool *spool, struct sl__op *op) {
  op->next = spool->ack_waiters;
  spool->ack_waiters = op;
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
      sl__complete_locked(spool, list);
      spool->ops_done++;
      list = next;
    }
    pthread_mutex_unlock(&spool->mu);
    free(copies);
    free(done);
    sl__notify(spool);
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
    sl__pipeline_flush(spool); /* barriers and dead-letter moves come after every append */
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
  sl__prepare_spare(spool); /* for the first roll, or the first segment of a fresh spool */

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
      sl__pipeline_flush(spool);
    sl__dict_step(spool);
    buckets_step(spool, sl__now_ms(spool));
    roll_settled_step(spool);
    ckpt_step(spool, stopping);
    if (stopping) {
      sl__pipeline_flush(spool);
      ckpt_step(spool, true);
      pthread_mutex_lock(&spool->mu);
      bool empty = spool->q_head == NULL;
      pthread_mutex_unlock(&spool->mu);
      if (empty && spool->ack_waiters == NULL && spool->pending == NULL)
        break;
    }
  }
  struct sl__seg *spare = sl__collect_spare(spool, true);
  if (spare != NULL)
    sl__drop_spare(spool, spare);
  if (spool->trainer_running) {
    pthread_join(spool->trainer, NULL);
    spool->trainer_running = false;
    free(spool->trained);
    spool->trained = NULL;
  }
  return NULL;
}

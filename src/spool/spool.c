/*
 * The spool's public API: open and recovery, the owner-side operations that
 * queue work for the writer thread, completions, stats and dead letters.
 *
 * Invariants: every queued op completes exactly once (through the completion
 * queue, run by sl_spool_poll_completions on the owner thread); every item
 * handed out is on the in-flight list until settled; a segment is freed only
 * when its reference count drops to zero (the list, the cursor, the delayed
 * cache and items each hold one), always under spool->mu.
 *
 * Layer: the top, the public API (sluice/spool.h); calls every file below, none calls it.
 *
 * @thread owner, except the notify callback (writer thread)
 */
#include "spool_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sluice/clock.h"
#include "sluice/durable.h"
#include "sluice/log.h"
#include "sluice/util.h"

void sl_spool_opts_init(struct sl_spool_opts *o) {
  memset(o, 0, sizeof(*o));
  o->name = "spool";
  o->fsync = SL_SPOOL_FSYNC_BATCH;
  o->batch_bytes = 1u << 20;
  o->segment_bytes = 64u << 20;
  o->preallocate = true;
  o->block_bytes = 64u << 10;
  o->compression_level = 1;
  o->dict_train_records = 2000;
  o->dict_bytes = 32u << 10;
  o->ack_interval_us = 2000;
}

static int seg_cmp(const void *a, const void *b) {
  const struct sl__seg *x = *(struct sl__seg *const *)a, *y = *(struct sl__seg *const *)b;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void sort_vec(struct sl__segvec *v) {
  if (v->n > 1)
    qsort(v->v, v->n, sizeof(*v->v), seg_cmp);
}

static uint32_t popcount_bits(const struct sl__seg *seg, uint32_t n) {
  uint32_t c = 0;
  for (uint32_t o = 0; o < n; o++)
    c += sl__ack_test(seg, o);
  return c;
}

static int load_dicts_and_list(struct sl_spool *spool) {
  DIR *d = opendir(spool->dir);
  struct dirent *e;
  int err = 0;

  if (d == NULL)
    return -errno;
  while ((e = readdir(d)) != NULL) {
    int store;
    uint64_t seq, start, width;
    unsigned id;
    char tail[8];

    if (sl__seg_parse_name(e->d_name, &store, &seq, &start, &width) == 0) {
      struct sl__seg *seg = sl__seg_new(store, seq, start, width, spool->dir);
      if (seg == NULL) {
        err = -ENOMEM;
        break;
      }
      sl__segvec_push(store == SL__STORE_READY  ? &spool->ready
                      : store == SL__STORE_DEAD ? &spool->dead
                                                : &spool->delay,
                      seg);
      if (seq >= spool->next_seq)
        spool->next_seq = seq + 1;
    } else if (sscanf(e->d_name, "dict-%8x%7s", &id, tail) == 2 && strcmp(tail, ".zdict") == 0) {
      char path[4096];
      struct stat sb;
      void *buf = NULL;
      int fd;
      snprintf(path, sizeof(path), "%s/%s", spool->dir, e->d_name);
      fd = open(path, O_RDONLY | O_CLOEXEC);
      if (fd >= 0 && fstat(fd, &sb) == 0 && sb.st_size > 0 && (buf = malloc((size_t)sb.st_size)) &&
          pread(fd, buf, (size_t)sb.st_size, 0) == sb.st_size) {
        ZSTD_DDict *dd = ZSTD_createDDict(buf, (size_t)sb.st_size);
        struct sl__dict *v = realloc(spool->dicts, (spool->ndicts + 1) * sizeof(*v));
        if (dd != NULL && v != NULL && ZSTD_getDictID_fromDDict(dd) == id) {
          spool->dicts = v;
          v[spool->ndicts].id = id;
          v[spool->ndicts].ddict = dd;
          spool->ndicts++;
          spool->disk_bytes += (uint64_t)sb.st_size;
          /* Keep compressing with the dictionary already trained for this spool. */
          if (sl__cdicts_set(spool, buf, (size_t)sb.st_size, id) == 0)
            spool->dict_done = true;
        } else {
          if (v != NULL)
            spool->dicts = v;
          ZSTD_freeDDict(dd);
          sl_log_error("spool %s: dictionary %s is unreadable", spool->name, path);
        }
      }
      free(buf);
      if (fd >= 0)
        close(fd);
    } else if (strlen(e->d_name) > 4 && strcmp(e->d_name + strlen(e->d_name) - 4, ".tmp") == 0) {
      char path[4096];
      snprintf(path, sizeof(path), "%s/%s", spool->dir, e->d_name);
      spool->io.unlink(path); /* an interrupted atomic write: the old file is still valid */
    }
  }
  closedir(d);
  sort_vec(&spool->ready);
  sort_vec(&spool->dead);
  sort_vec(&spool->delay);
  return err;
}

static int recover_vec(struct sl_spool *spool, struct sl__segvec *v) {
  for (size_t i = 0; i < v->n;) {
    struct sl__seg *seg = v->v[i];
    int r = sl__seg_recover(spool, seg, i + 1 == v->n);
    if (r == 1) {
      spool->io.unlink(seg->path);
      sl__segvec_remove(v, seg);
      sl__seg_unref(seg);
      continue;
    }
    if (r == SL_ESPOOL_CORRUPT) {
      /* Keep the file for a human; leave it out of the spool. */
      spool->st.corrupt_units++;
      sl__segvec_remove(v, seg);
      sl__seg_unref(seg);
      continue;
    }
    if (r != 0)
      return r;
    i++;
  }
  return 0;
}

int sl_spool_open(const char *dir, const struct sl_spool_opts *opts, struct sl_spool **out) {
  struct sl_spool *spool;
  struct sl_spool_opts defaults;
  pthread_condattr_t ca;
  uint64_t t0 = sl_clock_mono_ns();
  char opened[192];
  int err;

  *out = NULL;
  if (opts == NULL) {
    sl_spool_opts_init(&defaults);
    opts = &defaults;
  }
  spool = calloc(1, sizeof(*spool));
  if (spool == NULL)
    return -ENOMEM;
  spool->opts = *opts;
  sl_io_fill(&spool->io, opts->io);
  if (spool->opts.block_bytes == 0)
    spool->opts.block_bytes = 64u << 10;
  if (spool->opts.segment_bytes == 0)
    spool->opts.segment_bytes = 64u << 20;
  if (spool->opts.dict_bytes == 0)
    spool->opts.dict_bytes = 32u << 10;
  snprintf(spool->name, sizeof(spool->name), "%s", opts->name ? opts->name : "spool");
  spool->opts.name = spool->name;
  spool->dirfd = spool->lockfd = -1;
  spool->next_seq = 1;
  pthread_mutex_init(&spool->mu, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&spool->wcond, &ca);
  pthread_cond_init(&spool->icond, &ca);
  pthread_cond_init(&spool->scond, &ca);
  pthread_cond_init(&spool->sdone, &ca);
  pthread_condattr_destroy(&ca);
  sl_buf_init(&spool->wraw);
  sl_buf_init(&spool->wcomp);
  sl_buf_init(&spool->wout);
  sl_buf_init(&spool->samples);
  sl_buf_init(&spool->blk);
  sl_buf_init(&spool->cache);
  sl_buf_init(&spool->rbuf);
  spool->dir = strdup(dir);
  spool->cctx = ZSTD_createCCtx();
  spool->dctx = ZSTD_createDCtx();
  spool->wdctx = ZSTD_createDCtx();
  if (spool->dir == NULL || spool->cctx == NULL || spool->dctx == NULL || spool->wdctx == NULL) {
    err = -ENOMEM;
    goto fail;
  }
  /* Every level created here, and the spool directory's own name, must be durable before an
   * append into it can complete: sl_durable_mkdir_p fsyncs each parent. */
  err = sl_durable_mkdir_p(&spool->io, dir, 0755);
  if (err != 0)
    goto fail;
  spool->dirfd = spool->io.open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (spool->dirfd < 0) {
    err = -errno;
    goto fail;
  }
  {
    char path[4096];
    snprintf(path, sizeof(path), "%s/LOCK", dir);
    err = sl_durable_create(&spool->io, path, O_RDWR, 0644, &spool->lockfd);
    if (err < 0)
      goto fail;
    if (flock(spool->lockfd, LOCK_EX | LOCK_NB) != 0) {
      err = errno == EWOULDBLOCK ? SL_ESPOOL_LOCKED : -errno;
      goto fail;
    }
  }
  err = load_dicts_and_list(spool);
  if (err == 0)
    err = recover_vec(spool, &spool->ready);
  if (err == 0)
    err = recover_vec(spool, &spool->dead);
  if (err == 0)
    err = recover_vec(spool, &spool->delay);
  if (err == 0)
    err = sl__ckpt_load(spool);
  if (err != 0)
    goto fail;
  {
    struct sl__segvec *vecs[3] = {&spool->ready, &spool->delay, &spool->dead};
    for (int v = 0; v < 3; v++)
      for (size_t i = 0; i < vecs[v]->n; i++) {
        struct sl__seg *seg = vecs[v]->v[i];
        uint32_t unacked;
        seg->nacked = seg->done ? seg->nrec : popcount_bits(seg, seg->nrec);
        unacked = seg->nrec - seg->nacked;
        if (seg->store == SL__STORE_READY)
          spool->main_unacked += unacked;
        else if (seg->store == SL__STORE_DELAY)
          spool->delay_unacked += unacked;
        else
          spool->dead_unacked += unacked;
        spool->disk_bytes += seg->file_bytes;
        sl__seg_account_zeros(spool, seg); /* the zeros of the one the writer goes on with */
        sl__seg_account_backlog(spool, seg);
        spool->st.segments++;
        if (seg->store == SL__STORE_DELAY && seg->start_ms + seg->width_ms <= sl__now_ms(spool))
          seg->sealed = true; /* its window has passed: no append can target it */
        sl__seg_account_done(spool, seg);
        if (seg->done && !seg->done_ckpt)
          spool->ack_dirty = true;
      }
  }
  /* Recovery may have unlinked files, and a segment created just before a crash may have
   * a name that never reached the disk: make the directory as found durable before any
   * append goes into it. */
  if (spool->io.fsync(spool->dirfd) != 0) {
    err = errno ? -errno : -EIO;
    goto fail;
  }
  /* Logged from what recovery found, before the writer may change it (its GC, under mu). */
  snprintf(opened, sizeof(opened),
           "%.1f ms: %" PRIu64 " ready, %" PRIu64 " delayed, %" PRIu64 " dead, %" PRIu64
           " bytes in %" PRIu64 " segments",
           (double)(sl_clock_mono_ns() - t0) / 1e6, spool->main_unacked, spool->delay_unacked,
           spool->dead_unacked, spool->disk_bytes, spool->st.segments);
  /* Reads the first ready unit now, as the first take would: stats never read. */
  sl__cursor_start(spool);
  if (pthread_create(&spool->syncer, NULL, sl__syncer_main, spool) != 0) {
    err = -EAGAIN;
    goto fail;
  }
  spool->syncer_started = true;
  if (pthread_create(&spool->writer, NULL, sl__writer_main, spool) != 0) {
    err = -EAGAIN;
    goto fail;
  }
  spool->writer_started = true;
  sl_log_info("spool %s: opened %s in %s", spool->name, dir, opened);
  *out = spool;
  return 0;

fail:
  sl_spool_close(spool);
  return err;
}

static void free_vec(struct sl__segvec *v) {
  for (size_t i = 0; i < v->n; i++)
    sl__seg_unref(v->v[i]);
  free(v->v);
  v->v = NULL;
  v->n = v->cap = 0;
}

void sl_spool_close(struct sl_spool *spool) {
  if (spool == NULL)
    return;
  if (spool->writer_started) {
    pthread_mutex_lock(&spool->mu);
    spool->stopping = true;
    pthread_cond_signal(&spool->wcond);
    pthread_mutex_unlock(&spool->mu);
    pthread_join(spool->writer, NULL);
    spool->writer_started = false;
  }
  if (spool->syncer_started) {
    pthread_mutex_lock(&spool->mu);
    spool->sync_stop = true;
    pthread_cond_signal(&spool->scond);
    pthread_mutex_unlock(&spool->mu);
    pthread_join(spool->syncer, NULL);
    spool->syncer_started = false;
  }
  sl_spool_poll_completions(spool);
  /* Items still out are released: their records stay unsettled on disk. */
  while (spool->inflight != NULL) {
    struct sl_spool_item *it = spool->inflight;
    sl__inflight_unlink(spool, it);
    sl__seg_unref(it->seg);
    free(it);
  }
  while (spool->returned_head != NULL) {
    struct sl_spool_item *it = spool->returned_head;
    spool->returned_head = it->next;
    sl__seg_unref(it->seg);
    free(it);
  }
  sl__walk_dispose(&spool->cwalk);
  sl__seg_unref(spool->cur);
  sl__seg_unref(spool->cache_seg);
  free_vec(&spool->ready);
  free_vec(&spool->dead);
  free_vec(&spool->delay);
  sl__due_dispose(spool);
  sl__minset_dispose(&spool->returned_enq);
  free(spool->tracked);
  for (size_t i = 0; i < spool->ndicts; i++)
    ZSTD_freeDDict(spool->dicts[i].ddict);
  free(spool->dicts);
  ZSTD_freeCDict(spool->cdict);
  ZSTD_freeCDict(spool->cdict_small);
  ZSTD_freeCCtx(spool->cctx);
  ZSTD_freeDCtx(spool->dctx);
  ZSTD_freeDCtx(spool->wdctx);
  for (unsigned i = 0; i < spool->nwpool; i++)
    sl_buf_dispose(&spool->wpool[i]);
  sl_buf_dispose(&spool->wraw);
  sl_buf_dispose(&spool->wcomp);
  sl_buf_dispose(&spool->wout);
  sl_buf_dispose(&spool->samples);
  sl_buf_dispose(&spool->blk);
  sl_buf_dispose(&spool->cache);
  sl_buf_dispose(&spool->rbuf);
  free(spool->sample_sizes);
  if (spool->dirfd >= 0)
    spool->io.close(spool->dirfd);
  if (spool->lockfd >= 0)
    spool->io.close(spool->lockfd); /* drops the flock */
  free(spool->dir);
  pthread_mutex_destroy(&spool->mu);
  pthread_cond_destroy(&spool->wcond);
  pthread_cond_destroy(&spool->icond);
  pthread_cond_destroy(&spool->scond);
  pthread_cond_destroy(&spool->sdone);
  free(spool);
}

/* Queues <op> for the writer (caller holds mu). */
static void enqueue_locked(struct sl_spool *spool, struct sl__op *op) {
  op->next = NULL;
  op->queued_ns = sl_clock_mono_ns();
  if (spool->q_tail)
    spool->q_tail->next = op;
  else
    spool->q_head = op;
  spool->q_tail = op;
  spool->ops_queued++;
  if (op->type == SL__OP_APPEND && spool->opts.batch_appends)
    return; /* the owner wakes the writer once for the batch: sl_spool_flush() */
  pthread_cond_signal(&spool->wcond);
}

void sl_spool_set_notify(struct sl_spool *spool, sl_spool_notify_cb notify, void *notify_arg,
                         void (*on_fsync)(void *arg, uint64_t ns), void *fsync_arg) {
  pthread_mutex_lock(&spool->mu);
  spool->opts.notify = notify;
  spool->opts.notify_arg = notify_arg;
  spool->opts.on_fsync = on_fsync;
  spool->opts.fsync_arg = fsync_arg;
  pthread_mutex_unlock(&spool->mu);
}

void sl_spool_set_max_bytes(struct sl_spool *spool, uint64_t max_bytes) {
  pthread_mutex_lock(&spool->mu);
  spool->opts.max_bytes = max_bytes;
  pthread_mutex_unlock(&spool->mu);
}

void sl_spool_flush(struct sl_spool *spool) {
  pthread_mutex_lock(&spool->mu);
  if (spool->q_head != NULL)
    pthread_cond_signal(&spool->wcond);
  pthread_mutex_unlock(&spool->mu);
}

static struct sl__op *op_new(const struct sl_spool_record *rec, size_t *len_out) {
  size_t len = sl__record_size(rec);
  struct sl__op *op;

  if (len > SL_SPOOL_RECORD_MAX || rec->method_len > UINT16_MAX)
    return NULL;
  op = malloc(sizeof(*op) + len);
  if (op == NULL)
    return NULL;
  memset(op, 0, sizeof(*op));
  op->data = (uint8_t *)(op + 1);
  op->len = len;
  op->enqueue_ms = rec->enqueue_ms;
  sl__record_encode(rec, op->data);
  *len_out = len;
  return op;
}

int sl_spool_append(struct sl_spool *spool, const struct sl_spool_record *rec, sl_spool_done_cb cb,
                    void *arg) {
  struct sl__op *op;
  size_t len = sl__record_size(rec);
  uint64_t now = sl__now_ms(spool);
  int err = 0;

  if (len > SL_SPOOL_RECORD_MAX || rec->method_len > UINT16_MAX)
    return SL_ESPOOL_TOOBIG;
  /* Encode outside the lock: the writer thread contends for it. */
  op = op_new(rec, &len);
  if (op == NULL)
    return -ENOMEM;
  op->type = SL__OP_APPEND;
  op->cb = cb;
  op->arg = arg;
  op->store = rec->not_before_ms > now ? SL__STORE_DELAY : SL__STORE_READY;
  op->due_ms = rec->not_before_ms;
  pthread_mutex_lock(&spool->mu);
  if (spool->stopping) {
    err = SL_ESPOOL_CLOSED;
  } else if (spool->opts.max_bytes > 0 &&
             spool->disk_bytes + spool->q_bytes + len + SL__UNIT_HDR > spool->opts.max_bytes) {
    /* Queued records count at their raw size: they cannot take more than that on disk. */
    err = SL_ESPOOL_FULL;
  } else {
    spool->q_bytes += len;
    enqueue_locked(spool, op);
  }
  pthread_mutex_unlock(&spool->mu);
  if (err != 0)
    free(op);
  return err;
}

/* Takes <it> off the in-flight books (caller holds mu). */
static void uncount_inflight_locked(struct sl_spool *spool, struct sl_spool_item *it) {
  if (it->seg->store == SL__STORE_READY)
    spool->inflight_main--;
  else
    spool->inflight_delay--;
}

int sl_spool_poll_completions(struct sl_spool *spool) {
  struct sl__op *list;
  int n = 0;

  /* The common case after a spurious wake-up: nothing to do, and no lock taken. */
  if (__atomic_load_n(&spool->c_head, __ATOMIC_ACQUIRE) == NULL)
    return 0;
  pthread_mutex_lock(&spool->mu);
  list = spool->c_head;
  __atomic_store_n(&spool->c_head, NULL, __ATOMIC_RELAXED);
  spool->c_tail = NULL;
  pthread_mutex_unlock(&spool->mu);
  while (list != NULL) {
    struct sl__op *op = list;
    list = op->next;
    if (op->item != NULL) {
      /* RETRY/DEAD: the original is settled on success, given back on failure. */
      struct sl_spool_item *it = op->item;
      if (op->status == 0) {
        pthread_mutex_lock(&spool->mu);
        sl__seg_unref(it->seg);
        pthread_mutex_unlock(&spool->mu);
        free(it);
      } else {
        pthread_mutex_lock(&spool->mu);
        uncount_inflight_locked(spool, it);
        pthread_mutex_unlock(&spool->mu);
        sl__returned_push(spool, it);
      }
    }
    if (op->cb)
      op->cb(op->arg, op->status);
    free(op);
    n++;
  }
  return n;
}

void sl_spool_wait_idle(struct sl_spool *spool) {
  struct sl__op *op = calloc(1, sizeof(*op));
  uint64_t target;

  pthread_mutex_lock(&spool->mu);
  if (op != NULL) {
    op->type = SL__OP_BARRIER;
    enqueue_locked(spool, op);
  }
  target = spool->ops_queued;
  while (spool->ops_done < target && spool->writer_started)
    pthread_cond_wait(&spool->icond, &spool->mu);
  pthread_mutex_unlock(&spool->mu);
}

int sl_spool_ack(struct sl_spool *spool, struct sl_spool_item *item, sl_spool_done_cb cb,
                 void *arg) {
  struct sl__op *op = NULL;
  struct sl__seg *seg = item->seg;

  if (cb != NULL) {
    op = calloc(1, sizeof(*op));
    if (op == NULL)
      return -ENOMEM;
    op->type = SL__OP_ACK;
    op->cb = cb;
    op->arg = arg;
  }
  sl__inflight_unlink(spool, item);
  pthread_mutex_lock(&spool->mu);
  uncount_inflight_locked(spool, item);
  sl__settle_locked(spool, seg, item->ord);
  if (op != NULL)
    enqueue_locked(spool, op);
  else
    pthread_cond_signal(&spool->wcond);
  sl__seg_unref(seg);
  pthread_mutex_unlock(&spool->mu);
  free(item);
  return 0;
}

static int move_item(struct sl_spool *spool, struct sl_spool_item *item, int type, int store,
                     uint64_t due, const char *error, sl_spool_done_cb cb, void *arg) {
  struct sl_spool_record rec = item->rec;
  struct sl__op *op;
  size_t len;

  if (type == SL__OP_RETRY)
    rec.attempts++;
  rec.not_before_ms = due;
  if (error != NULL) {
    rec.error = error;
    rec.error_len = strlen(error);
  } else {
    rec.error_len = 0;
  }
  op = op_new(&rec, &len);
  if (op == NULL)
    return -ENOMEM;
  op->type = type;
  op->cb = cb;
  op->arg = arg;
  op->store = store;
  op->due_ms = due;
  op->item = item;
  op->origin = item->seg;
  op->origin_ord = item->ord;
  sl__inflight_unlink(spool, item);
  pthread_mutex_lock(&spool->mu);
  spool->q_bytes += len;
  enqueue_locked(spool, op);
  pthread_mutex_unlock(&spool->mu);
  return 0;
}

int sl_spool_retry(struct sl_spool *spool, struct sl_spool_item *item, uint64_t not_before_ms,
                   sl_spool_done_cb cb, void *arg) {
  int store = not_before_ms > sl__now_ms(spool) ? SL__STORE_DELAY : SL__STORE_READY;
  return move_item(spool, item, SL__OP_RETRY, store, not_before_ms, NULL, cb, arg);
}

int sl_spool_dead(struct sl_spool *spool, struct sl_spool_item *item, const char *error,
                  sl_spool_done_cb cb, void *arg) {
  return move_item(spool, item, SL__OP_DEAD, SL__STORE_DEAD, 0, error ? error : "", cb, arg);
}

void sl_spool_release(struct sl_spool *spool, struct sl_spool_item *item) {
  sl__inflight_unlink(spool, item);
  pthread_mutex_lock(&spool->mu);
  uncount_inflight_locked(spool, item);
  pthread_mutex_unlock(&spool->mu);
  sl__returned_push(spool, item);
}

static int dead_op(struct sl_spool *spool, int type, const uint8_t *id, sl_spool_done_cb cb,
                   void *arg) {
  struct sl__op *op = calloc(1, sizeof(*op));

  if (op == NULL)
    return -ENOMEM;
  op->type = type;
  op->cb = cb;
  op->arg = arg;
  op->all = id == NULL;
  if (id != NULL)
    memcpy(op->id, id, 16);
  pthread_mutex_lock(&spool->mu);
  if (spool->stopping) {
    pthread_mutex_unlock(&spool->mu);
    free(op);
    return SL_ESPOOL_CLOSED;
  }
  enqueue_locked(spool, op);
  pthread_mutex_unlock(&spool->mu);
  return 0;
}

int sl_spool_dead_redrive(struct sl_spool *spool, const uint8_t *id, sl_spool_done_cb cb,
                          void *arg) {
  return dead_op(spool, SL__OP_REDRIVE, id, cb, arg);
}

int sl_spool_dead_purge(struct sl_spool *spool, const uint8_t *id, sl_spool_done_cb cb, void *arg) {
  return dead_op(spool, SL__OP_PURGE, id, cb, arg);
}

/*
 * Calls <cb>(<arg>, rec) for every record not yet settled in the segments
 * <segs> (pinned by the caller, unpinned here), in their order, until <cb>
 * returns non-zero. Damaged units are skipped. Returns 0 or the first I/O
 * error. <dctx> belongs to the calling thread. Safe beside the writer, the
 * syncer and the owner: it reads each file through its own descriptor up to
 * the committed end it saw under mu (bytes the writer no longer changes;
 * files are never rewritten in place, and a file unlinked meanwhile stays
 * readable through the descriptor), tests ack bits under mu, and the pins
 * keep each segment's path alive.
 */
static int scan_segs(struct sl_spool *spool, ZSTD_DCtx *dctx, struct sl__segvec *segs,
                     int (*cb)(void *arg, const struct sl_spool_record *rec), void *arg) {
  struct sl_buf tmp, blk;
  int err = 0, stop = 0;

  sl_buf_init(&tmp);
  sl_buf_init(&blk);
  for (size_t i = 0; i < segs->n && !stop; i++) {
    /* The walk the readers take: a record listed is one a take can hand out, and only once. */
    struct sl__walk w;
    const uint8_t *rp;
    size_t rl;
    struct sl_spool_record rec;
    uint32_t ord;
    int r = 0, fd = open(segs->v[i]->path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
      continue; /* deleted meanwhile: everything in it settled */
    sl__walk_init(&w, spool, segs->v[i], fd, dctx, &tmp, &blk, 0);
    while (!stop && (r = sl__walk_next(&w, &ord, &rp, &rl, &rec)) > 0)
      stop = cb(arg, &rec);
    if (!stop && r < 0)
      err = r;
    close(fd);
  }
  pthread_mutex_lock(&spool->mu);
  for (size_t i = 0; i < segs->n; i++)
    sl__seg_unref(segs->v[i]);
  pthread_mutex_unlock(&spool->mu);
  free(segs->v);
  sl_buf_dispose(&tmp);
  sl_buf_dispose(&blk);
  return err;
}

int sl_spool_dead_list(struct sl_spool *spool,
                       int (*cb)(void *arg, const struct sl_spool_record *rec), void *arg) {
  struct sl__segvec segs = {0};

  sl__dead_pin(spool, &segs);
  return scan_segs(spool, spool->dctx, &segs, cb, arg);
}

int sl_spool_scan(struct sl_spool *spool, int (*cb)(void *arg, const struct sl_spool_record *rec),
                  void *arg) {
  struct sl__segvec segs = {0};
  const struct sl__segvec *stores[] = {&spool->ready, &spool->delay, &spool->dead};
  /* Not the owner's context: this may run on another thread while the owner reads. */
  ZSTD_DCtx *dctx = ZSTD_createDCtx();
  int err;

  if (dctx == NULL)
    return -ENOMEM;
  pthread_mutex_lock(&spool->mu);
  for (size_t s = 0; s < sl_countof(stores); s++)
    for (size_t i = 0; i < stores[s]->n; i++) {
      stores[s]->v[i]->refs++;
      sl__segvec_push(&segs, stores[s]->v[i]);
    }
  pthread_mutex_unlock(&spool->mu);
  err = scan_segs(spool, dctx, &segs, cb, arg);
  ZSTD_freeDCtx(dctx);
  return err;
}

void sl_spool_track_begin(struct sl_spool *spool) {
  pthread_mutex_lock(&spool->mu);
  spool->tracking = true;
  spool->track_oom = false;
  spool->ntracked = 0;
  pthread_mutex_unlock(&spool->mu);
}

int sl_spool_track_end(struct sl_spool *spool, void (*cb)(void *arg, const uint8_t id[16]),
                       void *arg) {
  uint8_t(*ids)[16];
  size_t n;
  bool oom;

  pthread_mutex_lock(&spool->mu);
  ids = spool->tracked;
  n = spool->ntracked;
  oom = spool->track_oom;
  spool->tracked = NULL;
  spool->ntracked = spool->track_cap = 0;
  spool->tracking = false;
  spool->track_oom = false;
  pthread_mutex_unlock(&spool->mu);
  /* Outside mu: <cb> may take its time without holding up the writer. */
  for (size_t i = 0; cb != NULL && i < n; i++)
    cb(arg, ids[i]);
  free(ids);
  return oom ? -ENOMEM : 0;
}

uint64_t sl_spool_lost_records(struct sl_spool *spool) {
  uint64_t n;

  pthread_mutex_lock(&spool->mu);
  n = spool->st.lost_records;
  pthread_mutex_unlock(&spool->mu);
  return n;
}

/* The older of two enqueue times, 0 standing for none. */
static uint64_t older(uint64_t a, uint64_t b) { return a == 0 || (b != 0 && b < a) ? b : a; }

void sl_spool_stats(struct sl_spool *spool, struct sl_spool_stats *st) {
  uint64_t now = sl__now_ms(spool), due, due_oldest, oldest, main_ready, moved;

  pthread_mutex_lock(&spool->mu);
  *st = spool->st;
  oldest = sl__ready_oldest_locked(spool);
  due = sl__due_count(spool, now, &due_oldest);
  if (due > 0)
    oldest = older(oldest, due_oldest);
  main_ready =
      spool->main_unacked -
      (spool->inflight_main < spool->main_unacked ? spool->inflight_main : spool->main_unacked);
  st->ready = main_ready + due;
  st->delayed = spool->delay_unacked - spool->inflight_delay - due;
  st->inflight = spool->inflight_main + spool->inflight_delay;
  st->dead = spool->dead_unacked;
  st->disk_bytes = spool->disk_bytes;
  st->prealloc_bytes = spool->prealloc_bytes;
  st->backlog_bytes = spool->backlog_bytes;
  pthread_mutex_unlock(&spool->mu);
  /* Given-back items are not in flight: a ready-log one is already counted as ready, a
   * delayed one (taken once due) still sits among the delayed ones and moves over. */
  moved = spool->returned_delayed < st->delayed ? spool->returned_delayed : st->delayed;
  st->delayed -= moved;
  st->ready += moved;
  if (spool->returned_head != NULL)
    oldest = older(oldest, sl__minset_min(&spool->returned_enq));
  st->oldest_ready_ms = st->ready > 0 && oldest != UINT64_MAX ? oldest : 0;
}

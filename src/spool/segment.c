/*
 * Segment files: naming, recovery on open (torn tails and corrupted units),
 * reading one unit, and the per-segment ack bitmap.
 *
 * Recovery trusts nothing it reads: a unit counts only if its header CRC and
 * payload CRC match and it fits in the file. A bad unit followed by a valid
 * one is a corrupted unit: skipped, logged, counted, its records marked lost
 * (acked) so the segment can still be deleted. A bad unit followed by nothing
 * valid is a torn tail (a crash in the middle of a write): the file is cut
 * there with a loud log line.
 *
 * Also here, for every file above: the record walk (struct sl__walk) that each reader of
 * a segment uses, settling and the accounting of commits (the backlog bytes), the sets of
 * segments (segvecs), the spool's clock, and the indexing of a delay bucket that has come
 * due into the due index.
 *
 * Layer: above format.c and heap.c, below everything else of the spool. The spool's
 * files call one way: format, heap < segment < ckpt, alloc (new segment files) < dict <
 * commit (the group commit) < dead (dead-letter moves) < writer (the writer's loop) <
 * spool.c (the public API); reader sits beside the write side, above segment and heap,
 * and only spool.c calls it.
 *
 * @thread sl__seg_recover runs in sl_spool_open before the writer starts;
 *         sl__unit_read on whichever thread owns <fd>; ack bits under spool->mu.
 */
#include "spool_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice/clock.h"
#include "sluice/crc32c.h"
#include "sluice/log.h"

char *sl__seg_path(const char *dir, int store, uint64_t seq, uint64_t start_ms, uint64_t width_ms) {
  char name[96];
  char *path;
  size_t n;

  if (store == SL__STORE_DELAY)
    snprintf(name, sizeof(name), "delay-%016" PRIx64 "-%" PRIu64 "-%" PRIu64 ".seg", seq, start_ms,
             width_ms);
  else
    snprintf(name, sizeof(name), "%s-%016" PRIx64 ".seg",
             store == SL__STORE_READY ? "ready" : "dead", seq);
  n = strlen(dir) + strlen(name) + 2;
  path = malloc(n);
  if (path != NULL)
    snprintf(path, n, "%s/%s", dir, name);
  return path;
}

int sl__seg_parse_name(const char *name, int *store, uint64_t *seq, uint64_t *start_ms,
                       uint64_t *width_ms) {
  char tail[8];
  size_t len = strlen(name);

  if (len < 5 || strcmp(name + len - 4, ".seg") != 0)
    return -1;
  *start_ms = 0;
  *width_ms = 0;
  if (sscanf(name, "ready-%16" SCNx64 "%4s", seq, tail) == 2 && strcmp(tail, ".seg") == 0) {
    *store = SL__STORE_READY;
    return 0;
  }
  if (sscanf(name, "dead-%16" SCNx64 "%4s", seq, tail) == 2 && strcmp(tail, ".seg") == 0) {
    *store = SL__STORE_DEAD;
    return 0;
  }
  if (sscanf(name, "delay-%16" SCNx64 "-%" SCNu64 "-%" SCNu64 "%4s", seq, start_ms, width_ms,
             tail) == 4 &&
      strcmp(tail, ".seg") == 0 && *width_ms > 0) {
    *store = SL__STORE_DELAY;
    return 0;
  }
  return -1;
}

struct sl__seg *sl__seg_new(int store, uint64_t seq, uint64_t start_ms, uint64_t width_ms,
                            const char *dir) {
  struct sl__seg *seg = calloc(1, sizeof(*seg));

  if (seg == NULL)
    return NULL;
  seg->path = sl__seg_path(dir, store, seq, start_ms, width_ms);
  if (seg->path == NULL) {
    free(seg);
    return NULL;
  }
  seg->store = store;
  seg->seq = seq;
  seg->start_ms = start_ms;
  seg->width_ms = width_ms;
  seg->refs = 1;
  seg->wfd = -1;
  seg->rfd = -1;
  seg->min_enqueue_ms = UINT64_MAX;
  seg->wmin_enq = UINT64_MAX;
  return seg;
}

void sl__seg_unref(struct sl__seg *seg) {
  if (seg == NULL || --seg->refs > 0)
    return;
  if (seg->wfd >= 0)
    close(seg->wfd);
  if (seg->rfd >= 0)
    close(seg->rfd);
  free(seg->ackbits);
  free(seg->path);
  free(seg);
}

static int pread_full(int fd, void *buf, size_t len, uint64_t off) {
  size_t done = 0;

  while (done < len) {
    ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    if (n == 0)
      return SL_ESPOOL_CORRUPT; /* the file is shorter than a header said */
    done += (size_t)n;
  }
  return 0;
}

ZSTD_DDict *sl__dict_find(struct sl_spool *spool, uint32_t id) {
  ZSTD_DDict *d = NULL;

  pthread_mutex_lock(&spool->mu);
  for (size_t i = 0; i < spool->ndicts; i++)
    if (spool->dicts[i].id == id)
      d = spool->dicts[i].ddict;
  pthread_mutex_unlock(&spool->mu);
  return d;
}

int sl__unit_read(struct sl_spool *spool, ZSTD_DCtx *dctx, int fd, uint64_t off, uint64_t end,
                  struct sl__unit *u, struct sl_buf *tmp, struct sl_buf *out) {
  /* One pread gets the header and, for the small units of quiet times, the payload too. */
  uint8_t first[SL__UNIT_HDR + 4096];
  size_t want, have;
  size_t r;
  int err;

  u->type = 0;
  if (off + SL__UNIT_HDR > end)
    return SL_ESPOOL_CORRUPT;
  want = end - off < sizeof(first) ? (size_t)(end - off) : sizeof(first);
  err = pread_full(fd, first, want, off);
  if (err == SL_ESPOOL_CORRUPT) {
    /* Shorter than expected: settle for the header alone and let the checks below decide. */
    want = SL__UNIT_HDR;
    err = pread_full(fd, first, want, off);
  }
  if (err != 0)
    return err;
  if (sl__unit_decode(first, u) != 0 || off + SL__UNIT_HDR + u->payload_len > end) {
    u->type = 0; /* the header itself cannot be trusted */
    return SL_ESPOOL_CORRUPT;
  }
  sl_buf_reset(tmp);
  if (sl_buf_reserve(tmp, u->payload_len) != 0)
    return -ENOMEM;
  have = want - SL__UNIT_HDR < u->payload_len ? want - SL__UNIT_HDR : u->payload_len;
  if (have > 0) /* an empty payload (its CRC then decides) leaves a new buffer's base NULL */
    memcpy(tmp->base, first + SL__UNIT_HDR, have);
  if (have < u->payload_len) {
    err = pread_full(fd, tmp->base + have, u->payload_len - have, off + SL__UNIT_HDR + have);
    if (err != 0)
      return err;
  }
  tmp->len = u->payload_len;
  if (sl_crc32c(0, tmp->base, tmp->len) != u->payload_crc)
    return SL_ESPOOL_CORRUPT;
  if (out == NULL || u->type != SL__UNIT_BLOCK)
    return 0;
  sl_buf_reset(out);
  if (sl_buf_reserve(out, u->raw_len) != 0)
    return -ENOMEM;
  if (u->codec == SL__CODEC_RAW) {
    memcpy(out->base, tmp->base, tmp->len);
    out->len = tmp->len;
    return 0;
  }
  if (u->dict_id != 0) {
    ZSTD_DDict *dd = sl__dict_find(spool, u->dict_id);
    if (dd == NULL) {
      sl_log_error("spool %s: unit at %" PRIu64 " needs dictionary %08x, which is missing",
                   spool->name, off, u->dict_id);
      return SL_ESPOOL_CORRUPT;
    }
    r = ZSTD_decompress_usingDDict(dctx, out->base, u->raw_len, tmp->base, tmp->len, dd);
  } else {
    r = ZSTD_decompressDCtx(dctx, out->base, u->raw_len, tmp->base, tmp->len);
  }
  if (ZSTD_isError(r) || r != u->raw_len)
    return SL_ESPOOL_CORRUPT;
  out->len = r;
  return 0;
}

/* Checks that a complete, valid unit starts at <off>. */
static bool unit_valid_at(int fd, uint64_t off, uint64_t end, struct sl__unit *u,
                          struct sl_buf *tmp) {
  uint8_t h[SL__UNIT_HDR];

  if (off + SL__UNIT_HDR > end || pread_full(fd, h, sizeof(h), off) != 0)
    return false;
  if (sl__unit_decode(h, u) != 0 || off + SL__UNIT_HDR + u->payload_len > end)
    return false;
  sl_buf_reset(tmp);
  if (sl_buf_reserve(tmp, u->payload_len) != 0 ||
      pread_full(fd, tmp->base, u->payload_len, off + SL__UNIT_HDR) != 0)
    return false;
  return sl_crc32c(0, tmp->base, u->payload_len) == u->payload_crc;
}

uint64_t sl__unit_resync(int fd, uint64_t off, uint64_t end) {
  uint8_t buf[65536];
  struct sl_buf tmp;
  struct sl__unit u;
  uint64_t pos = off + 1;
  uint64_t found = 0;

  sl_buf_init(&tmp);
  while (pos + SL__UNIT_HDR <= end && found == 0) {
    size_t want = (size_t)(end - pos < sizeof(buf) ? end - pos : sizeof(buf));
    ssize_t n = pread(fd, buf, want, (off_t)pos);
    if (n < 3)
      break;
    for (ssize_t i = 0; i + 2 < n; i++) {
      if (buf[i] == 'S' && buf[i + 1] == 'L' && buf[i + 2] == 'U' &&
          unit_valid_at(fd, pos + (uint64_t)i, end, &u, &tmp)) {
        found = pos + (uint64_t)i;
        break;
      }
    }
    pos += (uint64_t)n - 2; /* overlap so a magic split across reads is seen */
  }
  sl_buf_dispose(&tmp);
  return found;
}

int sl__ack_grow(struct sl__seg *seg, uint32_t nbits) {
  uint32_t cap;
  uint8_t *p;

  if (nbits <= seg->ackcap)
    return 0;
  cap = seg->ackcap ? seg->ackcap : 1024;
  while (cap < nbits)
    cap = cap > UINT32_MAX / 2 ? UINT32_MAX : cap * 2;
  p = realloc(seg->ackbits, ((size_t)cap + 7) / 8);
  if (p == NULL)
    return -ENOMEM;
  memset(p + (seg->ackcap + 7) / 8, 0, (cap + 7) / 8 - (seg->ackcap + 7) / 8);
  seg->ackbits = p;
  seg->ackcap = cap;
  return 0;
}

bool sl__ack_test(const struct sl__seg *seg, uint32_t ord) {
  if (ord >= seg->ackcap)
    return false;
  return (seg->ackbits[ord / 8] >> (ord % 8)) & 1;
}

bool sl__ack_set(struct sl__seg *seg, uint32_t ord) {
  if (sl__ack_grow(seg, ord + 1) != 0) {
    /* Without memory the ack is kept nowhere: the record will be delivered again. */
    sl_log_error("spool: out of memory for an ack bitmap; record %" PRIu32 " may be redelivered",
                 ord);
    return false;
  }
  if (sl__ack_test(seg, ord))
    return false;
  seg->ackbits[ord / 8] |= (uint8_t)(1u << (ord % 8));
  return true;
}

/* Marks ordinals [from, to) lost: they were in a unit that could not be read. */
static void mark_lost(struct sl_spool *spool, struct sl__seg *seg, uint32_t from, uint32_t to) {
  for (uint32_t o = from; o < to; o++)
    if (sl__ack_set(seg, o)) {
      seg->nacked++;
      spool->st.lost_records++;
    }
}

static int read_footer(int fd, uint64_t size, struct sl__seg *seg) {
  uint8_t f[SL__FOOTER_SIZE];
  struct sl__unit u;

  if (size < SL__SEG_HDR + SL__FOOTER_SIZE || pread_full(fd, f, sizeof(f), size - sizeof(f)) != 0)
    return -1;
  if (sl__unit_decode(f, &u) != 0 || u.type != SL__UNIT_FOOTER ||
      sl_crc32c(0, f + SL__UNIT_HDR, SL__FOOTER_PAYLOAD) != u.payload_crc)
    return -1;
  if (sl_le_get64(f + SL__UNIT_HDR + 8) != size - SL__FOOTER_SIZE)
    return -1;
  seg->nrec = sl_le_get32(f + SL__UNIT_HDR);
  seg->wunits = sl_le_get32(f + SL__UNIT_HDR + 4);
  seg->committed = size - SL__FOOTER_SIZE;
  seg->min_enqueue_ms = sl_le_get64(f + SL__UNIT_HDR + 16);
  seg->wmax_enq = sl_le_get64(f + SL__UNIT_HDR + 24);
  return 0;
}

/* Whether [off, size) of <fd> holds only zeros: a preallocated tail no append reached. */
static bool zeros_to_end(int fd, uint64_t off, uint64_t size) {
  uint8_t buf[1u << 16];

  while (off < size) {
    size_t n = size - off < sizeof(buf) ? (size_t)(size - off) : sizeof(buf);
    if (pread_full(fd, buf, n, off) != 0)
      return false;
    for (size_t i = 0; i < n; i++)
      if (buf[i] != 0)
        return false;
    off += n;
  }
  return true;
}

int sl__seg_recover(struct sl_spool *spool, struct sl__seg *seg, bool last) {
  uint8_t h[SL__SEG_HDR];
  struct sl_buf tmp;
  struct sl__unit u;
  struct stat sb;
  uint64_t off, size, seq, start, width;
  uint32_t ord = 0;
  int store, fd, err;

  sl_buf_init(&tmp);
  fd = spool->io.open(seg->path, O_RDWR | O_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  if (fstat(fd, &sb) != 0) {
    err = -errno;
    goto fail;
  }
  size = (uint64_t)sb.st_size;
  if (size < SL__SEG_HDR) {
    /* Created but its header never reached the disk: it holds no record. */
    sl_log_warn("spool %s: %s is shorter than its header (%" PRIu64 " bytes): removed", spool->name,
                seg->path, size);
    err = 1;
    goto fail;
  }
  err = pread_full(fd, h, sizeof(h), 0);
  if (err != 0)
    goto fail;
  if (sl__seg_header_decode(h, &store, &seq, &start, &width) != 0 || store != seg->store ||
      seq != seg->seq) {
    sl_log_error("spool %s: %s has a bad header: file ignored", spool->name, seg->path);
    err = SL_ESPOOL_CORRUPT;
    goto fail;
  }
  seg->file_bytes = size;
  if (read_footer(fd, size, seg) == 0) {
    seg->sealed = true;
    seg->wsize = seg->committed;
    seg->wnrec = seg->nrec;
    spool->io.close(fd);
    sl_buf_dispose(&tmp);
    return 0;
  }
  off = SL__SEG_HDR;
  while (off < size) {
    uint64_t next;

    err = sl__unit_read(spool, NULL, fd, off, size, &u, &tmp, NULL);
    if (err == 0 && u.type == SL__UNIT_BLOCK && u.first_ord >= ord) {
      if (u.first_ord > ord)
        mark_lost(spool, seg, ord, u.first_ord);
      ord = u.first_ord + u.nrec;
      if (u.min_enqueue_ms < seg->min_enqueue_ms)
        seg->min_enqueue_ms = u.min_enqueue_ms;
      seg->wunits++;
      off += SL__UNIT_HDR + u.payload_len;
      continue;
    }
    if (err != 0 && zeros_to_end(fd, off, size)) {
      /* Preallocated and never written (see the writer): not a torn write. The segment
       * the writer goes on with keeps its zeros; any other is cut to its data. */
      if (last && seg->store == SL__STORE_READY) {
        seg->zero_end = size;
      } else if (spool->io.ftruncate(fd, (off_t)off) != 0) {
        err = -errno;
        sl_log_error("spool %s: cannot cut %s: %s", spool->name, seg->path, sl_strerror(err));
        goto fail;
      }
      size = off;
      break;
    }
    if (err != 0 && err != SL_ESPOOL_CORRUPT)
      goto fail;
    /* A header we can trust gives the unit's extent and ordinals: skip just it. */
    next = 0;
    if (u.type == SL__UNIT_BLOCK && u.first_ord >= ord)
      next = off + SL__UNIT_HDR + u.payload_len;
    struct sl__unit probe;
    if (next == 0 || next >= size)
      next = sl__unit_resync(fd, off, size);
    else if (!unit_valid_at(fd, next, size, &probe, &tmp))
      next = sl__unit_resync(fd, off, size);
    if (next == 0) {
      sl_log_error("spool %s: TORN TAIL in %s: cutting %" PRIu64 " bytes at offset %" PRIu64
                   " (a crash during a write; appends that completed are before it)",
                   spool->name, seg->path, size - off, off);
      spool->st.torn_tails++;
      if (spool->io.ftruncate(fd, (off_t)off) != 0 || spool->io.fdatasync(fd) != 0) {
        err = -errno;
        sl_log_error("spool %s: cannot cut %s: %s", spool->name, seg->path, sl_strerror(err));
        goto fail;
      }
      size = off;
      break;
    }
    spool->st.corrupt_units++;
    sl_log_error("spool %s: CORRUPT unit in %s at offset %" PRIu64 ": skipped %" PRIu64 " bytes",
                 spool->name, seg->path, off, next - off);
    if (u.type == SL__UNIT_BLOCK && u.first_ord >= ord) {
      mark_lost(spool, seg, ord, u.first_ord + u.nrec);
      ord = u.first_ord + u.nrec;
    } else {
      /* The ordinals of the skipped bytes are those up to the next unit's first. */
      struct sl__unit nu;
      if (unit_valid_at(fd, next, size, &nu, &tmp) && nu.first_ord > ord) {
        mark_lost(spool, seg, ord, nu.first_ord);
        ord = nu.first_ord;
      }
    }
    off = next;
  }
  seg->file_bytes = size;
  seg->committed = size;
  seg->wsize = size;
  seg->nrec = ord;
  seg->wnrec = ord;
  if (last && seg->store != SL__STORE_DELAY) {
    seg->wfd = fd; /* the writer goes on appending here */
  } else {
    /* A delay bucket stays open for appends until its window passes, but without a
     * descriptor: the writer reopens the few it writes to (there may be hundreds). */
    seg->sealed = seg->store != SL__STORE_DELAY;
    spool->io.close(fd);
  }
  sl_buf_dispose(&tmp);
  return 0;

fail:
  spool->io.close(fd);
  sl_buf_dispose(&tmp);
  return err;
}

/* ---- accounting of settled and committed records (caller holds mu) -------------------- */

void sl__seg_account_done(struct sl_spool *spool, struct sl__seg *seg) {
  (void)spool;
  if (!seg->done && seg->sealed && seg->nacked >= seg->nrec && seg->committed == seg->wsize)
    seg->done = true;
}

/*
 * A segment's data bytes (units after the header, up to what is committed) times the share of
 * its records still unsettled, rounded down. A unit is one zstd frame for many records, so a
 * record's own compressed size is not known; the even share is exact for a segment that is
 * all unsettled or all settled, and is 0 once its last record settles. Integers, so that the
 * spool's sum, kept up to date by differences, never drifts from the sum of the shares.
 */
static uint64_t backlog_share(const struct sl__seg *seg) {
  uint64_t data = seg->committed > SL__SEG_HDR ? seg->committed - SL__SEG_HDR : 0;
  uint64_t left = seg->nrec > seg->nacked ? seg->nrec - seg->nacked : 0;

  if (left == 0)
    return 0;
  /* data * left / nrec without overflow: data = q * nrec + r, and r * left < 2^64. */
  return data / seg->nrec * left + data % seg->nrec * left / seg->nrec;
}

void sl__seg_account_backlog(struct sl_spool *spool, struct sl__seg *seg) {
  uint64_t b = backlog_share(seg);

  spool->backlog_bytes = spool->backlog_bytes - seg->backlog + b;
  seg->backlog = b;
}

void sl__seg_commit_locked(struct sl_spool *spool, struct sl__seg *seg, const void *stage,
                           struct sl__op **ops, size_t nops) {
  sl__seg_account_backlog(spool, seg);
  /* The first commit to the ready log since the cursor found it read to its end holds the
   * next record the cursor hands out: cursor_wait (reader.c) decided "the end" under mu, and
   * the writer commits the ready log in its order (each commit to the newest segment, where
   * the last one ended). */
  if (seg->store != SL__STORE_READY || !spool->rtail_wait || spool->rtail_set)
    return;
  for (size_t i = 0; i < nops; i++)
    if (ops[i]->stage == stage) {
      spool->rtail_enq = ops[i]->enqueue_ms;
      spool->rtail_set = true;
      return;
    }
}

/* Sets the ack bit of <ord> and, if it was clear, counts the record settled: true then. */
static bool settle_one_locked(struct sl_spool *spool, struct sl__seg *seg, uint32_t ord) {
  if (!sl__ack_set(seg, ord))
    return false;
  seg->nacked++;
  sl__seg_account_backlog(spool, seg);
  if (seg->store == SL__STORE_READY)
    spool->main_unacked--;
  else if (seg->store == SL__STORE_DELAY)
    spool->delay_unacked--;
  else
    spool->dead_unacked--;
  return true;
}

void sl__settle_locked(struct sl_spool *spool, struct sl__seg *seg, uint32_t ord) {
  settle_one_locked(spool, seg, ord);
  if (!spool->ack_dirty)
    spool->ack_dirty_ns = sl_clock_mono_ns();
  spool->ack_dirty = true;
  sl__seg_account_done(spool, seg);
}

/* Only ordinals below seg->nrec count: in a damaged segment a reader can come upon the intact
 * header of a unit whose payload is bad and that recovery, resyncing past it, never counted
 * among the segment's records; settling its ordinals would take from counts they were never
 * added to (the ready count wrapped around to 2^64 - 1). */
void sl__seg_lose_locked(struct sl_spool *spool, struct sl__seg *seg, uint32_t from, uint32_t to) {
  bool any = false;

  if (to > seg->nrec)
    to = seg->nrec;
  for (uint32_t o = from; o < to; o++) {
    if (settle_one_locked(spool, seg, o)) {
      any = true;
      spool->st.lost_records++;
    }
  }
  if (!any)
    return; /* all settled already: nothing for the checkpoint (the cursor passes such ranges) */
  spool->ack_dirty = true;
  sl__seg_account_done(spool, seg);
}

/* ---- the record walk ----------------------------------------------------------------- */

void sl__walk_init(struct sl__walk *w, struct sl_spool *spool, struct sl__seg *seg, int fd,
                   ZSTD_DCtx *dctx, struct sl_buf *tmp, struct sl_buf *blk, unsigned flags) {
  *w = (struct sl__walk){.spool = spool,
                         .seg = seg,
                         .dctx = dctx,
                         .fd = fd,
                         .flags = flags,
                         .tmp = tmp,
                         .blk = blk,
                         .off = SL__SEG_HDR};
  pthread_mutex_lock(&spool->mu);
  w->end = seg->committed;
  w->nrec = seg->nrec; /* the ordinals of the units below <end>, which the writer sets with it */
  w->sealed = seg->sealed;
  pthread_mutex_unlock(&spool->mu);
}

void sl__walk_dispose(struct sl__walk *w) {
  if (w->own_fd && w->fd >= 0)
    close(w->fd);
  w->fd = -1;
  w->own_fd = false;
}

/* Moves the next ordinal forward to <to> (at most <nrec>: the writer's next unit starts
 * there, and going past it would skip that unit), settling what it passes as lost with
 * SL__WALK_SETTLE. Ordinals recovery counted but the walk never hands out (it can step over
 * a unit recovery counted, trusting a damaged unit's header for its extent) would otherwise
 * stay unsettled with no take ever returning them. */
static void walk_pass(struct sl__walk *w, uint32_t to) {
  if (to > w->nrec)
    to = w->nrec;
  if (to <= w->next_ord)
    return;
  if (w->flags & SL__WALK_SETTLE) {
    pthread_mutex_lock(&w->spool->mu);
    sl__seg_lose_locked(w->spool, w->seg, w->next_ord, to);
    pthread_mutex_unlock(&w->spool->mu);
  }
  w->next_ord = to;
}

/* With SL__WALK_SKIP_SETTLED: whether the unit at the walk's offset has only settled
 * records, read from its header alone (worth a read only when the segment has settled
 * records: after a restart, or out-of-order acks). Sets <u>. */
static bool walk_unit_settled(struct sl__walk *w, struct sl__unit *u) {
  uint8_t h[SL__UNIT_HDR];
  bool all = true;

  if (pread(w->fd, h, sizeof(h), (off_t)w->off) != (ssize_t)sizeof(h) ||
      sl__unit_decode(h, u) != 0 || u->type != SL__UNIT_BLOCK ||
      w->off + SL__UNIT_HDR + u->payload_len > w->end)
    return false;
  pthread_mutex_lock(&w->spool->mu);
  for (uint32_t o = u->first_ord; o < u->first_ord + u->nrec && all; o++)
    all = sl__ack_test(w->seg, o);
  pthread_mutex_unlock(&w->spool->mu);
  return all;
}

/* Steps over the damaged unit at the walk's offset (<u> as sl__unit_read left it): by its
 * header's extent if that checks out, else to the next valid header; the ordinals up to the
 * next unit's first are lost. */
static void walk_skip_damaged(struct sl__walk *w, const struct sl__unit *u) {
  struct sl_spool *spool = w->spool;
  uint64_t next =
      u->type ? w->off + SL__UNIT_HDR + u->payload_len : sl__unit_resync(w->fd, w->off, w->end);
  uint32_t lost_to = u->type ? u->first_ord + u->nrec : 0;
  uint32_t from = w->next_ord;

  if (!u->type && next != 0) {
    uint8_t h[SL__UNIT_HDR];
    struct sl__unit nu;
    if (pread(w->fd, h, sizeof(h), (off_t)next) == (ssize_t)sizeof(h) &&
        sl__unit_decode(h, &nu) == 0)
      lost_to = nu.first_ord;
  }
  if (next == 0 || next > w->end)
    next = w->end;
  if ((next == w->end && lost_to == 0) || lost_to > w->nrec)
    lost_to = w->nrec;
  if (w->flags & SL__WALK_SETTLE) {
    pthread_mutex_lock(&spool->mu);
    spool->st.corrupt_units++;
    pthread_mutex_unlock(&spool->mu);
    walk_pass(w, lost_to);
    sl_log_error("spool %s: CORRUPT unit in %s at offset %" PRIu64 ": skipped %" PRIu64
                 " bytes, records %" PRIu32 "..%" PRIu32 " lost",
                 spool->name, w->seg->path, w->off, next - w->off, from, lost_to);
  } else {
    walk_pass(w, lost_to);
  }
  w->off = next;
}

int sl__walk_unit(struct sl__walk *w) {
  struct sl_spool *spool = w->spool;
  bool some_settled = false;

  for (;;) {
    struct sl__unit u;
    int r;

    if (w->flags & (SL__WALK_FOLLOW | SL__WALK_SKIP_SETTLED)) {
      pthread_mutex_lock(&spool->mu);
      if (w->flags & SL__WALK_FOLLOW) {
        w->end = w->seg->committed;
        w->nrec = w->seg->nrec;
        w->sealed = w->seg->sealed;
      }
      some_settled = w->seg->nacked > 0;
      pthread_mutex_unlock(&spool->mu);
    }
    if (w->off >= w->end) {
      /* Walked to the end of what is committed: what it did not reach is lost. */
      walk_pass(w, w->nrec);
      return 0;
    }
    if (w->fd < 0) {
      w->fd = open(w->seg->path, O_RDONLY | O_CLOEXEC);
      if (w->fd < 0)
        return -errno;
      w->own_fd = true;
    }
    if ((w->flags & SL__WALK_SKIP_SETTLED) && some_settled && walk_unit_settled(w, &u)) {
      w->off += SL__UNIT_HDR + u.payload_len;
      walk_pass(w, u.first_ord + u.nrec);
      continue;
    }
    r = sl__unit_read(spool, w->dctx, w->fd, w->off, w->end, &u, w->tmp, w->blk);
    if (r == 0 && u.type == SL__UNIT_BLOCK && u.first_ord >= w->next_ord) {
      walk_pass(w, u.first_ord);
      w->u = u;
      w->unit_off = w->off;
      w->k = 0;
      w->at = 0;
      w->next_ord = u.first_ord + u.nrec;
      w->off += SL__UNIT_HDR + u.payload_len;
      return 1;
    }
    if (r == 0) {
      /* A valid unit with nothing to hand out: a footer amid the data (damage put it there:
       * a sealed segment's data ends before its own footer) or a stray copy of a unit already
       * read, its ordinals going back (handing them out again would deliver records twice).
       * Recovery resyncs past both and counts the units after them. */
      w->off += SL__UNIT_HDR + u.payload_len;
      continue;
    }
    if (r != SL_ESPOOL_CORRUPT)
      return r;
    walk_skip_damaged(w, &u);
  }
}

/* Settles the records [from, to) of the loaded unit as lost and counts a corrupt unit,
 * with SL__WALK_SETTLE. */
static void walk_lose_records(struct sl__walk *w, uint32_t from, uint32_t to) {
  if (!(w->flags & SL__WALK_SETTLE))
    return;
  pthread_mutex_lock(&w->spool->mu);
  w->spool->st.corrupt_units++;
  sl__seg_lose_locked(w->spool, w->seg, from, to);
  pthread_mutex_unlock(&w->spool->mu);
}

int sl__walk_record(struct sl__walk *w, uint32_t *ord, const uint8_t **rp, size_t *rl,
                    struct sl_spool_record *rec) {
  struct sl_spool_record scratch;

  if (rec == NULL)
    rec = &scratch;
  while (w->k < w->u.nrec) {
    uint32_t o = w->u.first_ord + w->k;
    bool settled;

    if (sl__block_next((const uint8_t *)w->blk->base, w->blk->len, &w->at, rp, rl) != 0) {
      walk_lose_records(w, o, w->u.first_ord + w->u.nrec);
      w->k = w->u.nrec;
      return 0;
    }
    w->k++;
    if (sl__record_decode(*rp, *rl, rec) != 0) {
      walk_lose_records(w, o, o + 1);
      continue;
    }
    pthread_mutex_lock(&w->spool->mu);
    settled = sl__ack_test(w->seg, o);
    pthread_mutex_unlock(&w->spool->mu);
    if (settled)
      continue;
    *ord = o;
    return 1;
  }
  return 0;
}

int sl__walk_next(struct sl__walk *w, uint32_t *ord, const uint8_t **rp, size_t *rl,
                  struct sl_spool_record *rec) {
  for (;;) {
    int r = sl__walk_record(w, ord, rp, rl, rec);
    if (r != 0)
      return r;
    r = sl__walk_unit(w);
    if (r <= 0)
      return r;
  }
}

/* ---- sets of segments, the clock ------------------------------------------------ */

uint64_t sl__now_ms(struct sl_spool *spool) {
  return spool->opts.now_ms ? spool->opts.now_ms(spool->opts.clock_arg) : sl_clock_wall_ms();
}

void sl__segvec_push(struct sl__segvec *v, struct sl__seg *seg) {
  if (v->n == v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 16;
    struct sl__seg **p = realloc(v->v, cap * sizeof(*p));
    if (p == NULL)
      abort(); /* a few pointers per segment file: no sane way on without them */
    v->v = p;
    v->cap = cap;
  }
  v->v[v->n++] = seg;
}

void sl__segvec_remove(struct sl__segvec *v, struct sl__seg *seg) {
  for (size_t i = 0; i < v->n; i++)
    if (v->v[i] == seg) {
      memmove(v->v + i, v->v + i + 1, (v->n - i - 1) * sizeof(*v->v));
      v->n--;
      return;
    }
}

/* ---- delay buckets -------------------------------------------------------------- */

int sl__bucket_index(struct sl_spool *spool, struct sl__seg *seg, ZSTD_DCtx *dctx,
                     struct sl_buf *tmp, struct sl_buf *blk) {
  struct sl__due *found = NULL;
  size_t nfound = 0, cap = 0;
  struct sl__walk w;
  /* The walk settles as lost what it passes without handing out, as the ready cursor does:
   * a record is either in the index once or settled, never both, or the index, whose entries
   * hold no reference, would keep pointing at the segment after it was settled in full and
   * deleted. */
  const uint8_t *rp;
  size_t rl;
  struct sl_spool_record rec;
  uint32_t ord;
  int r, fd = open(seg->path, O_RDONLY | O_CLOEXEC);

  if (fd < 0)
    return -errno;
  sl__walk_init(&w, spool, seg, fd, dctx, tmp, blk, SL__WALK_SETTLE);
  while ((r = sl__walk_next(&w, &ord, &rp, &rl, &rec)) > 0) {
    if (nfound == cap) {
      size_t ncap = cap ? cap * 2 : 64;
      struct sl__due *v = realloc(found, ncap * sizeof(*v));
      if (v == NULL) {
        r = -ENOMEM;
        break;
      }
      found = v;
      cap = ncap;
    }
    found[nfound++] = (struct sl__due){rec.not_before_ms, rec.enqueue_ms, seg, w.unit_off, ord};
  }
  close(fd);
  if (r < 0) {
    /* An I/O error is not damage: leave the bucket unindexed and try again later. */
    free(found);
    return r;
  }
  pthread_mutex_lock(&spool->mu);
  for (size_t i = 0; i < nfound; i++)
    sl__heap_push(spool, &found[i]);
  seg->indexed = true;
  pthread_mutex_unlock(&spool->mu);
  free(found);
  return 0;
}

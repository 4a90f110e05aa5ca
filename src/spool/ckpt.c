/*
 * The ack checkpoint: which records of which segments are settled.
 *
 * File "acks" in the spool directory, replaced whole on every write by the
 * crash-safe sequence: write "acks.tmp", fdatasync it, rename it over
 * "acks", fsync the directory. A crash at any point leaves either the old or
 * the new checkpoint, never a mix. Layout (little-endian):
 *
 *   "SLACKS01" | version u32 = 1 | entries u32 | next seq u64 |
 *   entries: store u8 | state u8 (1 partial, 2 done) | rsv u16 | nbits u32 | seq u64 |
 *            [partial: bitmap of nbits bits, (nbits + 7) / 8 bytes]
 *   crc32c u32 of everything before it
 *
 * Only segments with at least one settled record appear; a "done" entry
 * stays until the segment file's unlink is durable, so a file that comes
 * back after a crash is recognised and deleted again.
 *
 * Layer: above segment.c; called by the writer and at open.
 *
 * @thread sl__ckpt_write on the writer thread; sl__ckpt_load in sl_spool_open
 */
#include "spool_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice/crc32c.h"
#include "sluice/durable.h"
#include "sluice/log.h"

int sl__write_file_atomic(struct sl_spool *spool, const char *name, const void *data, size_t len) {
  char dst[4096];

  if (snprintf(dst, sizeof(dst), "%s/%s", spool->dir, name) >= (int)sizeof(dst))
    return -ENAMETOOLONG;
  /* On a failed directory fsync the new file is in place but its name may not survive a
   * crash; the next write tries again, and the old file is still a valid one. */
  return sl_durable_replace(&spool->io, spool->dirfd, dst, data, len, 0644);
}

static int put_entry(struct sl_buf *b, const struct sl__seg *seg, uint8_t state) {
  uint8_t e[16];
  uint32_t nbits = state == 1 ? seg->nrec : 0;

  e[0] = (uint8_t)seg->store;
  e[1] = state;
  sl_le_put16(e + 2, 0);
  sl_le_put32(e + 4, nbits);
  sl_le_put64(e + 8, seg->seq);
  if (sl_buf_append(b, e, sizeof(e)) != 0)
    return -ENOMEM;
  if (nbits == 0)
    return 0;
  if (sl_buf_reserve(b, (nbits + 7) / 8) != 0)
    return -ENOMEM;
  /* Bits beyond ackcap are clear; copy what exists and zero-fill. */
  size_t have = seg->ackcap < nbits ? (seg->ackcap + 7) / 8 : (nbits + 7) / 8;
  if (have)
    memcpy(b->base + b->len, seg->ackbits, have);
  memset(b->base + b->len + have, 0, (nbits + 7) / 8 - have);
  if (nbits % 8)
    b->base[b->len + (nbits + 7) / 8 - 1] &= (char)((1u << (nbits % 8)) - 1);
  b->len += (nbits + 7) / 8;
  return 0;
}

int sl__ckpt_write(struct sl_spool *spool) {
  struct sl__segvec *vecs[3] = {&spool->ready, &spool->delay, &spool->dead};
  struct sl__segvec done = {0};
  struct sl_buf b;
  uint8_t hdr[24], crc[4];
  uint32_t n = 0;
  int err = 0;

  sl_buf_init(&b);
  pthread_mutex_lock(&spool->mu);
  spool->ack_dirty = false;
  memcpy(hdr, SL__CKPT_MAGIC, 8);
  sl_le_put32(hdr + 8, 1);
  sl_le_put64(hdr + 16, spool->next_seq);
  err = sl_buf_append(&b, hdr, sizeof(hdr));
  for (int v = 0; v < 3 && err == 0; v++) {
    for (size_t i = 0; i < vecs[v]->n && err == 0; i++) {
      struct sl__seg *seg = vecs[v]->v[i];
      if (seg->done) {
        err = put_entry(&b, seg, 2);
        if (err == 0 && !seg->done_ckpt) {
          seg->refs++;
          sl__segvec_push(&done, seg);
        }
        n++;
      } else if (seg->nacked > 0) {
        err = put_entry(&b, seg, 1);
        n++;
      }
    }
  }
  if (err != 0)
    spool->ack_dirty = true;
  pthread_mutex_unlock(&spool->mu);
  if (err != 0)
    goto out;
  sl_le_put32((uint8_t *)b.base + 12, n);
  sl_le_put32(crc, sl_crc32c(0, b.base, b.len));
  err = sl_buf_append(&b, crc, 4);
  if (err == 0)
    err = sl__write_file_atomic(spool, "acks", b.base, b.len);
  pthread_mutex_lock(&spool->mu);
  if (err == 0) {
    spool->st.checkpoints++;
    spool->disk_bytes = spool->disk_bytes - spool->ckpt_bytes + b.len;
    spool->ckpt_bytes = b.len;
    for (size_t i = 0; i < done.n; i++)
      done.v[i]->done_ckpt = true;
  } else {
    spool->ack_dirty = true;
  }
  pthread_mutex_unlock(&spool->mu);
out:
  for (size_t i = 0; i < done.n; i++) {
    pthread_mutex_lock(&spool->mu);
    sl__seg_unref(done.v[i]);
    pthread_mutex_unlock(&spool->mu);
  }
  free(done.v);
  sl_buf_dispose(&b);
  return err;
}

static struct sl__seg *find_seq(struct sl_spool *spool, uint64_t seq) {
  struct sl__segvec *vecs[3] = {&spool->ready, &spool->delay, &spool->dead};

  for (int v = 0; v < 3; v++)
    for (size_t i = 0; i < vecs[v]->n; i++)
      if (vecs[v]->v[i]->seq == seq)
        return vecs[v]->v[i];
  return NULL;
}

int sl__ckpt_load(struct sl_spool *spool) {
  char path[4096];
  struct stat sb;
  uint8_t *p = NULL;
  size_t len, at;
  uint32_t n;
  int fd, err = 0;

  snprintf(path, sizeof(path), "%s/acks", spool->dir);
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT ? 0 : -errno;
  if (fstat(fd, &sb) != 0) {
    err = -errno;
    goto fail;
  }
  len = (size_t)sb.st_size;
  spool->ckpt_bytes = len; /* before the threads start: no lock */
  spool->disk_bytes += len;
  p = malloc(len ? len : 1);
  if (p == NULL) {
    err = -ENOMEM;
    goto fail;
  }
  if (pread(fd, p, len, 0) != (ssize_t)len) {
    err = -EIO;
    goto fail;
  }
  if (len < 28 || memcmp(p, SL__CKPT_MAGIC, 8) != 0 || sl_le_get32(p + 8) != 1 ||
      sl_le_get32(p + len - 4) != sl_crc32c(0, p, len - 4)) {
    sl_log_error("spool %s: the ack checkpoint %s is corrupt: ignoring it, so settled "
                 "records may be delivered again",
                 spool->name, path);
    spool->st.corrupt_units++;
    goto out;
  }
  n = sl_le_get32(p + 12);
  if (sl_le_get64(p + 16) > spool->next_seq)
    spool->next_seq = sl_le_get64(p + 16);
  at = 24;
  for (uint32_t i = 0; i < n; i++) {
    struct sl__seg *seg;
    uint32_t nbits;
    uint8_t state;
    size_t nbytes;

    if (at + 16 > len - 4)
      break;
    state = p[at + 1];
    nbits = sl_le_get32(p + at + 4);
    seg = find_seq(spool, sl_le_get64(p + at + 8));
    at += 16;
    nbytes = state == 1 ? ((size_t)nbits + 7) / 8 : 0;
    if (at + nbytes > len - 4)
      break;
    if (seg != NULL && state == 2) {
      /* Its unlink did not survive a crash (a power cut before the directory fsync). Every
       * record in it is settled: readers test the ack bits, so set them all, and have the
       * writer's next checkpoint delete the file again. */
      if (sl__ack_grow(seg, seg->nrec) != 0) {
        err = -ENOMEM;
        goto fail;
      }
      for (uint32_t o = 0; o < seg->nrec; o++)
        sl__ack_set(seg, o);
      seg->done = true;
      seg->done_ckpt = true;
      spool->ack_dirty = true;
    } else if (seg != NULL && state == 1) {
      if (sl__ack_grow(seg, nbits) != 0) {
        err = -ENOMEM;
        goto fail;
      }
      for (size_t k = 0; k < nbytes; k++)
        seg->ackbits[k] |= p[at + k];
    }
    at += nbytes;
  }
out:
  close(fd);
  free(p);
  return 0;
fail:
  close(fd);
  free(p);
  return err;
}

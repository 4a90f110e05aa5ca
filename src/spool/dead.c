/*
 * Dead letters on the writer thread: redrive (copy to the ready log, then settle the
 * dead original once the copy is durable) and purge (settle), by id or all.
 *
 * Layer: above segment.c (it reads dead segments through the record walk) and commit.c (it
 * writes the copies through sl__write_copies); called by writer.c's op loop (sl__dead_move)
 * and by spool.c (sl__dead_pin, for listings). Nothing below calls it back.
 *
 * @thread writer (sl__dead_pin: any, takes spool->mu)
 */
#include "spool_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

void sl__dead_pin(struct sl_spool *spool, struct sl__segvec *segs) {
  pthread_mutex_lock(&spool->mu);
  for (size_t i = 0; i < spool->dead.n; i++) {
    spool->dead.v[i]->refs++;
    sl__segvec_push(segs, spool->dead.v[i]);
  }
  pthread_mutex_unlock(&spool->mu);
}

/*
 * Redrives or purges the dead letters matching <op> (all, or by id). Redriven
 * copies are written to the ready log first; the dead originals are settled
 * only once the copies are durable. Returns 0, SL_ESPOOL_NOTFOUND or an error.
 */
int sl__dead_move(struct sl_spool *spool, struct sl__op *op) {
  struct sl_buf tmp, blk;
  struct sl__segvec segs = {0};
  int err = 0, found = 0;

  sl_buf_init(&tmp);
  sl_buf_init(&blk);
  sl__dead_pin(spool, &segs);
  for (size_t i = 0; i < segs.n && err == 0; i++) {
    struct sl__seg *seg = segs.v[i];
    struct sl__op **copies = NULL;
    size_t ncopies = 0;
    struct sl__walk w;
    const uint8_t *rp;
    size_t rl;
    struct sl_spool_record rec;
    uint32_t ord;
    int fd = open(seg->path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
      continue;
    /* The walk lists what sl_spool_dead_list lists: a stray copy of a unit already read is
     * stepped over, or its records would be redriven twice. An I/O error ends this file. */
    sl__walk_init(&w, spool, seg, fd, spool->wdctx, &tmp, &blk, 0);
    while (err == 0 && sl__walk_next(&w, &ord, &rp, &rl, &rec) > 0) {
      if (!op->all && memcmp(rec.id, op->id, 16) != 0)
        continue;
      found++;
      if (op->type == SL__OP_PURGE) {
        pthread_mutex_lock(&spool->mu);
        sl__settle_locked(spool, seg, ord);
        pthread_mutex_unlock(&spool->mu);
        continue;
      }
      rec.attempts = 0;
      rec.not_before_ms = 0;
      rec.error_len = 0;
      size_t len = sl__record_size(&rec);
      struct sl__op *c = calloc(1, sizeof(*c) + len);
      struct sl__op **nv = realloc(copies, (ncopies + 1) * sizeof(*nv));
      if (c == NULL || nv == NULL) {
        free(c);
        if (nv != NULL)
          copies = nv;
        err = -ENOMEM;
        break;
      }
      copies = nv;
      c->type = SL__OP_APPEND;
      c->store = SL__STORE_READY;
      c->enqueue_ms = rec.enqueue_ms;
      c->data = (uint8_t *)(c + 1);
      c->len = len;
      sl__record_encode(&rec, c->data);
      c->origin = seg;
      c->origin_ord = ord;
      copies[ncopies++] = c;
    }
    close(fd);
    if (ncopies > 0)
      sl__write_copies(spool, copies, ncopies, true, false);
    pthread_mutex_lock(&spool->mu);
    for (size_t k = 0; k < ncopies; k++) {
      if (copies[k]->status == 0)
        sl__settle_locked(spool, seg, copies[k]->origin_ord);
      else if (err == 0)
        err = copies[k]->status;
      free(copies[k]);
    }
    pthread_mutex_unlock(&spool->mu);
    free(copies);
  }
  pthread_mutex_lock(&spool->mu);
  for (size_t i = 0; i < segs.n; i++)
    sl__seg_unref(segs.v[i]);
  pthread_mutex_unlock(&spool->mu);
  free(segs.v);
  sl_buf_dispose(&tmp);
  sl_buf_dispose(&blk);
  if (err == 0 && found == 0 && !op->all)
    err = SL_ESPOOL_NOTFOUND;
  return err;
}

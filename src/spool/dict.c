/*
 * The compression dictionary: samples of the first records appended, a zstd dictionary
 * trained from them on a helper thread (so that a training run never holds up a group
 * commit), written beside the segments and handed to the compressor.
 *
 * Layer: a part of the write side, above segment.c and ckpt.c (sl__write_file_atomic) and
 * below commit.c (which calls sl__dict_add_sample as it stages records, and
 * sl__small_level) and writer.c (sl__dict_step between groups); spool.c loads the
 * dictionaries found at open with sl__cdicts_set.
 *
 * @thread writer (the trainer thread touches only the samples it was given)
 */
#include "spool_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <zdict.h>

#include "sluice/log.h"

/*
 * Small units (quiet times: a group of a few records, or `always`) are compressed two levels
 * higher than full ones: the writer has CPU to spare exactly when units are small, and small
 * units are where the ratio suffers. Full units under load keep the configured level.
 */
int sl__small_level(const struct sl_spool *spool) {
  int l = spool->opts.compression_level + 2;
  return l > 19 ? 19 : l;
}

int sl__cdicts_set(struct sl_spool *spool, const void *dict, size_t len, uint32_t id) {
  int level = spool->opts.compression_level > 0 ? spool->opts.compression_level : 1;
  ZSTD_CDict *cd = ZSTD_createCDict(dict, len, level);
  ZSTD_CDict *cds = ZSTD_createCDict(dict, len, sl__small_level(spool));

  if (cd == NULL || cds == NULL) {
    ZSTD_freeCDict(cd);
    ZSTD_freeCDict(cds);
    return -ENOMEM;
  }
  ZSTD_freeCDict(spool->cdict);
  ZSTD_freeCDict(spool->cdict_small);
  spool->cdict = cd;
  spool->cdict_small = cds;
  spool->cdict_id = id;
  return 0;
}

void sl__dict_add_sample(struct sl_spool *spool, const uint8_t *data, size_t len) {
  size_t *sz;

  if (spool->dict_done || spool->trainer_running || spool->opts.dict_train_records == 0 ||
      spool->opts.compression_level <= 0)
    return;
  if (len > 16384)
    len = 16384; /* a huge body teaches little beyond its first bytes */
  sz = realloc(spool->sample_sizes, (spool->nsamples + 1) * sizeof(*sz));
  if (sz == NULL)
    return;
  spool->sample_sizes = sz;
  if (sl_buf_append(&spool->samples, data, len) != 0)
    return;
  sz[spool->nsamples++] = len;
}

static void *trainer_main(void *arg) {
  struct sl_spool *spool = arg;
  size_t cap = spool->opts.dict_bytes;
  void *dict = malloc(cap);
  size_t n = 0;

  if (dict != NULL) {
    n = ZDICT_trainFromBuffer(dict, cap, spool->samples.base, spool->sample_sizes, spool->nsamples);
    if (ZDICT_isError(n)) {
      sl_log_warn("spool %s: dictionary training failed: %s; compressing without one", spool->name,
                  ZDICT_getErrorName(n));
      free(dict);
      dict = NULL;
      n = 0;
    }
  }
  pthread_mutex_lock(&spool->mu);
  spool->trained = dict;
  spool->trained_len = n;
  spool->trained_ready = true;
  pthread_cond_signal(&spool->wcond);
  pthread_mutex_unlock(&spool->mu);
  return NULL;
}

/* Starts training once enough samples are in; installs the dictionary once trained. */
void sl__dict_step(struct sl_spool *spool) {
  bool ready;
  char name[64];
  uint32_t id;
  int err;

  if (spool->dict_done)
    return;
  if (spool->opts.dict_train_records == 0 || spool->opts.compression_level <= 0) {
    spool->dict_done = true;
    return;
  }
  if (!spool->trainer_running) {
    if (spool->nsamples < spool->opts.dict_train_records)
      return;
    if (pthread_create(&spool->trainer, NULL, trainer_main, spool) != 0) {
      spool->dict_done = true;
      return;
    }
    spool->trainer_running = true;
    return;
  }
  pthread_mutex_lock(&spool->mu);
  ready = spool->trained_ready;
  pthread_mutex_unlock(&spool->mu);
  if (!ready)
    return;
  pthread_join(spool->trainer, NULL);
  spool->trainer_running = false;
  spool->dict_done = true;
  sl_buf_dispose(&spool->samples);
  free(spool->sample_sizes);
  spool->sample_sizes = NULL;
  if (spool->trained == NULL)
    return;
  id = ZDICT_getDictID(spool->trained, spool->trained_len);
  snprintf(name, sizeof(name), "dict-%08x.zdict", id);
  /* The dictionary must be on disk before any unit that needs it. */
  err = id == 0 ? SL_ESPOOL_CORRUPT
                : sl__write_file_atomic(spool, name, spool->trained, spool->trained_len);
  if (err == 0) {
    ZSTD_DDict *dd = ZSTD_createDDict(spool->trained, spool->trained_len);
    struct sl__dict *v;
    pthread_mutex_lock(&spool->mu);
    v = realloc(spool->dicts, (spool->ndicts + 1) * sizeof(*v));
    if (v != NULL)
      spool->dicts = v;
    /* The decompression side first: no unit may use a dictionary readers cannot find. */
    if (dd != NULL && v != NULL) {
      v[spool->ndicts].id = id;
      v[spool->ndicts].ddict = dd;
      spool->ndicts++;
      spool->disk_bytes += spool->trained_len;
      dd = NULL;
    }
    pthread_mutex_unlock(&spool->mu);
    if (dd == NULL && v != NULL)
      sl__cdicts_set(spool, spool->trained, spool->trained_len, id);
    ZSTD_freeDDict(dd);
    if (spool->cdict != NULL)
      sl_log_info("spool %s: trained compression dictionary %08x (%zu bytes) on %u records",
                  spool->name, id, spool->trained_len, spool->nsamples);
  } else {
    sl_log_warn("spool %s: cannot store the dictionary: %s; compressing without one", spool->name,
                sl_strerror(err));
  }
  free(spool->trained);
  spool->trained = NULL;
}

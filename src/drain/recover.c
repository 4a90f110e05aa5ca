/*
 * Statuses and Idempotency-Keys rebuilt from spool records: see
 * sluice/recover.h. The census keeps, per record, what its status entry
 * and its key need, in one array, and the keys' bytes in one buffer.
 */
#include "sluice/recover.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/buf.h"
#include "sluice/http.h"
#include "sluice/ledger_journal.h"

struct census_item {
  uint8_t id[16];
  uint64_t enqueue_ms, not_before_ms;
  uint32_t attempts;
  uint32_t key_len; /* 0: no Idempotency-Key */
  size_t key_off;   /* in <keys> */
};

struct sl_recover {
  struct census_item *v;
  size_t n, cap;
  struct sl_buf keys;
};

struct sl_recover *sl_recover_create(void) {
  struct sl_recover *r = calloc(1, sizeof(*r));

  if (r != NULL)
    sl_buf_init(&r->keys);
  return r;
}

void sl_recover_destroy(struct sl_recover *r) {
  if (r == NULL)
    return;
  free(r->v);
  sl_buf_dispose(&r->keys);
  free(r);
}

/* The record's Idempotency-Key, as the proxy stored it among the header fields. */
static bool record_key(const struct sl_spool_record *rec, const char **key, size_t *len) {
  return rec->headers != NULL &&
         sl_http_fields_get(rec->headers, rec->headers_len, "Idempotency-Key", key, len) &&
         *len > 0 && *len <= SL_DEDUPE_KEY_MAX;
}

int sl_recover_add(struct sl_recover *r, const struct sl_spool_record *rec) {
  struct census_item *it;
  const char *key;
  size_t key_len;

  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 256;
    struct census_item *grown = realloc(r->v, cap * sizeof(*grown));

    if (grown == NULL)
      return -ENOMEM;
    r->v = grown;
    r->cap = cap;
  }
  it = &r->v[r->n];
  memcpy(it->id, rec->id, 16);
  it->enqueue_ms = rec->enqueue_ms;
  it->not_before_ms = rec->not_before_ms;
  it->attempts = rec->attempts;
  it->key_len = 0;
  it->key_off = r->keys.len;
  if (record_key(rec, &key, &key_len)) {
    if (sl_buf_append(&r->keys, key, key_len) != 0)
      return -ENOMEM;
    it->key_len = (uint32_t)key_len;
  }
  r->n++;
  return 0;
}

/* Puts what one record says where the ledger and the key index lack it. */
static void rebuild(const uint8_t id[16], uint64_t enqueue_ms, uint64_t not_before_ms,
                    uint32_t attempts, const char *key, size_t key_len, uint64_t seq,
                    struct sl_ledger *l, struct sl_dedupe *d, uint16_t upstream, uint64_t now_ms,
                    struct sl_recover_counts *counts) {
  struct sl_ledger_entry e;
  uint8_t seen[16];

  counts->records++;
  if (sl_ledger_get(l, id, &e) != 1) {
    memset(&e, 0, sizeof(e));
    memcpy(e.id, id, 16);
    e.state = SL_LEDGER_QUEUED;
    e.upstream = upstream;
    e.attempts = attempts;
    e.seq = seq;
    e.enqueued_ms = enqueue_ms;
    e.updated_ms = enqueue_ms;
    e.not_before_ms = not_before_ms > enqueue_ms ? not_before_ms : 0;
    if (sl_ledger_put(l, &e) == 0)
      counts->entries++;
  } else if (e.state == SL_LEDGER_QUEUED && attempts > e.attempts) {
    /* The frames of its last retries were lost: the record knows better. */
    e.attempts = attempts;
    e.not_before_ms = not_before_ms > enqueue_ms ? not_before_ms : 0;
    e.updated_ms = now_ms;
    if (sl_ledger_put(l, &e) == 0)
      counts->entries++;
  }
  /* A key's window runs from its request's acceptance, as it did then. */
  if (d != NULL && key_len > 0 &&
      (now_ms < enqueue_ms || now_ms - enqueue_ms < sl_dedupe_window(d)) &&
      sl_dedupe_get(d, upstream, key, key_len, now_ms, seen) == 0 &&
      sl_dedupe_put(d, upstream, key, key_len, id, enqueue_ms) == 0)
    counts->keys++;
}

void sl_recover_apply(const struct sl_recover *r, struct sl_ledger *l, struct sl_dedupe *d,
                      uint16_t upstream, uint64_t now_ms, struct sl_recover_counts *counts) {
  size_t keyed = 0, skip;

  /* The index holds its newest keys only: older ones would be evicted again by newer ones,
   * and on the way evict the newest, which the journal gave back already. */
  for (size_t i = 0; i < r->n; i++)
    keyed += r->v[i].key_len > 0;
  skip = d != NULL && keyed > sl_dedupe_capacity(d) ? keyed - sl_dedupe_capacity(d) : 0;
  for (size_t i = 0; i < r->n; i++) {
    const struct census_item *it = &r->v[i];
    bool key = it->key_len > 0;

    if (key && skip > 0) {
      skip--;
      key = false;
    }
    rebuild(it->id, it->enqueue_ms, it->not_before_ms, it->attempts,
            key ? r->keys.base + it->key_off : NULL, key ? it->key_len : 0, i + 1, l, d, upstream,
            now_ms, counts);
  }
}

void sl_recover_record(const struct sl_spool_record *rec, uint64_t seq, struct sl_ledger *l,
                       struct sl_dedupe *d, uint16_t upstream, uint64_t now_ms,
                       struct sl_recover_counts *counts) {
  const char *key = NULL;
  size_t key_len = 0;

  if (!record_key(rec, &key, &key_len))
    key_len = 0;
  rebuild(rec->id, rec->enqueue_ms, rec->not_before_ms, rec->attempts, key, key_len, seq, l, d,
          upstream, now_ms, counts);
}

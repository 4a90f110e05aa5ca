/*
 * Unit tests for the rebuild of statuses and Idempotency-Keys from spool
 * records (src/drain/recover.c): what a census puts where the ledger and the
 * key index lack it, and what it leaves alone.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "sluice/ledger.h"
#include "sluice/recover.h"

#define NOW 1700000000000ull
#define HOUR_MS 3600000ull
#define UPSTREAM 3

static void rec_id(unsigned n, uint8_t id[16]) {
  memset(id, 0x77, 16);
  id[15] = (uint8_t)n;
}

/* A stored record as the proxy writes it; <key> NULL: no Idempotency-Key. */
static struct sl_spool_record record(unsigned n, const char *key, char *headers, size_t cap) {
  struct sl_spool_record r;
  int len = snprintf(headers, cap, "Host: shop\r\n%s%s%sVia: 1.1 sluice\r\n",
                     key ? "Idempotency-Key: " : "", key ? key : "", key ? "\r\n" : "");

  memset(&r, 0, sizeof(r));
  rec_id(n, r.id);
  r.enqueue_ms = NOW - 1000 * n;
  r.attempts = n % 3;
  r.method = "POST";
  r.method_len = 4;
  r.target = "/orders";
  r.target_len = 7;
  r.headers = headers;
  r.headers_len = (size_t)len;
  return r;
}

static void test_census_fills_what_is_missing(void **state) {
  struct sl_ledger *l = sl_ledger_create(64);
  struct sl_dedupe *d = sl_dedupe_create(64, HOUR_MS);
  struct sl_recover *r = sl_recover_create();
  struct sl_recover_counts c = {0};
  struct sl_ledger_entry e;
  char h[4][256];
  uint8_t id[16], other[16];
  struct sl_spool_record recs[4];

  (void)state;
  assert_non_null(r);
  recs[0] = record(1, "k1", h[0], sizeof(h[0])); /* unknown: rebuilt */
  recs[1] = record(2, NULL, h[1], sizeof(h[1])); /* unknown, no key */
  recs[2] = record(3, "k3", h[2], sizeof(h[2])); /* known, delivered: left alone */
  recs[3] = record(4, "k4", h[3], sizeof(h[3])); /* its key held by another id */
  recs[0].not_before_ms = NOW + 5000;            /* a retry's next attempt */
  memset(&e, 0, sizeof(e));
  rec_id(3, e.id);
  e.state = SL_LEDGER_DELIVERED;
  e.status = 200;
  e.upstream = UPSTREAM;
  assert_int_equal(sl_ledger_put(l, &e), 0);
  rec_id(9, other);
  assert_int_equal(sl_dedupe_put(d, UPSTREAM, "k4", 2, other, NOW), 0);
  for (int i = 0; i < 4; i++)
    assert_int_equal(sl_recover_add(r, &recs[i]), 0);
  sl_recover_apply(r, l, d, UPSTREAM, NOW, &c);
  assert_int_equal(c.records, 4);
  assert_int_equal(c.entries, 3);
  assert_int_equal(c.keys, 2); /* k1 and k3: k4 kept its first id */

  rec_id(1, id);
  assert_int_equal(sl_ledger_get(l, id, &e), 1);
  assert_int_equal(e.state, SL_LEDGER_QUEUED);
  assert_int_equal(e.upstream, UPSTREAM);
  assert_int_equal(e.seq, 1); /* its rank in the census */
  assert_int_equal(e.attempts, 1);
  assert_int_equal(e.enqueued_ms, NOW - 1000);
  assert_int_equal(e.not_before_ms, NOW + 5000);
  rec_id(2, id);
  assert_int_equal(sl_ledger_get(l, id, &e), 1);
  assert_int_equal(e.seq, 2);
  assert_int_equal(e.not_before_ms, 0);
  rec_id(3, id);
  assert_int_equal(sl_ledger_get(l, id, &e), 1);
  assert_int_equal(e.state, SL_LEDGER_DELIVERED);

  assert_int_equal(sl_dedupe_get(d, UPSTREAM, "k1", 2, NOW, id), 1);
  rec_id(1, other);
  assert_memory_equal(id, other, 16);
  assert_int_equal(sl_dedupe_get(d, UPSTREAM, "k3", 2, NOW, id), 1);
  assert_int_equal(sl_dedupe_get(d, UPSTREAM, "k4", 2, NOW, id), 1);
  rec_id(9, other);
  assert_memory_equal(id, other, 16);
  assert_int_equal(sl_dedupe_get(d, UPSTREAM + 1, "k1", 2, NOW, id), 0); /* its scope only */

  /* A queued entry behind its record (a retry's frame lost) is brought up to date. */
  memset(&e, 0, sizeof(e));
  rec_id(5, e.id);
  e.state = SL_LEDGER_QUEUED;
  e.seq = 7;
  assert_int_equal(sl_ledger_put(l, &e), 0);
  recs[0] = record(5, NULL, h[0], sizeof(h[0])); /* 5 % 3 = 2 attempts */
  recs[0].not_before_ms = NOW + 9000;
  memset(&c, 0, sizeof(c));
  sl_recover_record(&recs[0], 99, l, d, UPSTREAM, NOW, &c);
  assert_int_equal(c.entries, 1);
  rec_id(5, id);
  assert_int_equal(sl_ledger_get(l, id, &e), 1);
  assert_int_equal(e.attempts, 2);
  assert_int_equal(e.not_before_ms, NOW + 9000);
  assert_int_equal(e.seq, 7); /* its place is kept */

  /* Applied again (a second census): nothing new. */
  memset(&c, 0, sizeof(c));
  sl_recover_apply(r, l, d, UPSTREAM, NOW, &c);
  assert_int_equal(c.entries, 0);
  assert_int_equal(c.keys, 0);
  sl_recover_destroy(r);
  sl_ledger_destroy(l);
  sl_dedupe_destroy(d);
}

/* A key's window runs from its request's acceptance: past it, no key. */
static void test_key_window_from_acceptance(void **state) {
  struct sl_ledger *l = sl_ledger_create(64);
  struct sl_dedupe *d = sl_dedupe_create(64, HOUR_MS);
  struct sl_recover_counts c = {0};
  char h[2][256];
  struct sl_spool_record old = record(1, "old", h[0], sizeof(h[0]));
  struct sl_spool_record fresh = record(2, "fresh", h[1], sizeof(h[1]));
  uint8_t id[16];

  (void)state;
  old.enqueue_ms = NOW - HOUR_MS - 1;
  sl_recover_record(&old, 1, l, d, UPSTREAM, NOW, &c);
  sl_recover_record(&fresh, 2, l, d, UPSTREAM, NOW, &c);
  assert_int_equal(c.records, 2);
  assert_int_equal(c.entries, 2); /* the status is rebuilt either way */
  assert_int_equal(c.keys, 1);
  assert_int_equal(sl_dedupe_get(d, UPSTREAM, "old", 3, NOW, id), 0);
  assert_int_equal(sl_dedupe_get(d, UPSTREAM, "fresh", 5, NOW, id), 1);
  /* Without a key index (no statuses kept): entries only. */
  memset(&c, 0, sizeof(c));
  fresh.id[0] ^= 1;
  sl_recover_record(&fresh, 3, l, NULL, UPSTREAM, NOW, &c);
  assert_int_equal(c.entries, 1);
  assert_int_equal(c.keys, 0);
  sl_ledger_destroy(l);
  sl_dedupe_destroy(d);
}

/* A census with more keys than the index holds gives it the newest ones only,
 * without evicting those the journal gave back. */
static void test_census_keeps_the_newest_keys(void **state) {
  struct sl_ledger *l = sl_ledger_create(64);
  struct sl_dedupe *d = sl_dedupe_create(4, HOUR_MS);
  struct sl_recover *r = sl_recover_create();
  struct sl_recover_counts c = {0};
  char h[256], key[16];
  uint8_t id[16];

  (void)state;
  for (unsigned n = 1; n <= 10; n++) {
    struct sl_spool_record rec;

    snprintf(key, sizeof(key), "k%u", n);
    rec = record(n, key, h, sizeof(h));
    assert_int_equal(sl_recover_add(r, &rec), 0);
  }
  rec_id(10, id);
  assert_int_equal(sl_dedupe_put(d, UPSTREAM, "k10", 3, id, NOW), 0); /* from the journal */
  sl_recover_apply(r, l, d, UPSTREAM, NOW, &c);
  assert_int_equal(c.entries, 10);
  assert_int_equal(c.keys, 3); /* k7, k8, k9; k10 was there */
  for (unsigned n = 1; n <= 10; n++) {
    snprintf(key, sizeof(key), "k%u", n);
    assert_int_equal(sl_dedupe_get(d, UPSTREAM, key, strlen(key), NOW, id), n > 6);
  }
  sl_recover_destroy(r);
  sl_ledger_destroy(l);
  sl_dedupe_destroy(d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_census_fills_what_is_missing),
      cmocka_unit_test(test_key_window_from_acceptance),
      cmocka_unit_test(test_census_keeps_the_newest_keys),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Ledger: the id -> status index (put, get, replace, eviction order, bounds)
 * and the Idempotency-Key index (window, scopes, key limits, eviction,
 * colliding keys), on a driven clock. Every test checks the structures'
 * internal invariants (sl__ledger_check, sl__dedupe_check) as it goes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ledger/ledger_int.h"
#include "sluice/ledger.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void) {
  /* xorshift64*: deterministic, so a failure reproduces. */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545f4914f6cdd1dull;
}

static void random_id(uint8_t id[16]) {
  uint64_t a = rng(), b = rng();

  memcpy(id, &a, 8);
  memcpy(id + 8, &b, 8);
}

/* An id whose bytes spell <n>, for readable small tests. */
static void small_id(uint8_t id[16], unsigned n) {
  memset(id, 0, 16);
  id[15] = (uint8_t)n;
  id[14] = (uint8_t)(n >> 8);
  id[13] = (uint8_t)(n >> 16);
  id[12] = (uint8_t)(n >> 24);
}

static struct sl_ledger_entry entry(unsigned n, enum sl_ledger_state state) {
  struct sl_ledger_entry e;

  memset(&e, 0, sizeof(e));
  small_id(e.id, n);
  e.state = state;
  e.upstream = (uint16_t)(n % 7);
  e.seq = n;
  e.enqueued_ms = 1000 + n;
  e.updated_ms = 2000 + n;
  return e;
}

static int has(const struct sl_ledger *l, unsigned n) {
  struct sl_ledger_entry out;
  uint8_t id[16];

  small_id(id, n);
  return sl_ledger_get(l, id, &out);
}

/* ------------------------------------------------------------------------ */

static void test_siphash_vectors(void **state) {
  uint8_t key[16], msg[15];

  (void)state;
  for (int i = 0; i < 16; i++)
    key[i] = (uint8_t)i;
  for (int i = 0; i < 15; i++)
    msg[i] = (uint8_t)i;
  /* From the SipHash paper's reference vectors (SipHash-2-4). */
  assert_true(sl__ledger_siphash(key, msg, 0) == 0x726fdb47dd0e0e31ull);
  assert_true(sl__ledger_siphash(key, msg, 15) == 0xa129ca6149be45e5ull);
}

static void test_id_round_trip(void **state) {
  uint8_t id[16], back[16];
  char hex[33];

  (void)state;
  for (int i = 0; i < 1000; i++) {
    random_id(id);
    sl_ledger_id_format(id, hex);
    assert_int_equal(strlen(hex), 32);
    for (int c = 0; c < 32; c++)
      assert_true((hex[c] >= '0' && hex[c] <= '9') || (hex[c] >= 'a' && hex[c] <= 'f'));
    assert_int_equal(sl_ledger_id_parse(hex, 32, back), 0);
    assert_memory_equal(id, back, 16);
  }
  assert_int_equal(sl_ledger_id_parse("00112233445566778899AABBCCDDEEFF", 32, back), 0);
  sl_ledger_id_format(back, hex);
  assert_string_equal(hex, "00112233445566778899aabbccddeeff");
  assert_int_equal(sl_ledger_id_parse("00112233445566778899aAbBcCdDeEfF", 32, id), 0);
  assert_memory_equal(id, back, 16);
}

static void test_id_parse_rejects(void **state) {
  uint8_t id[16];
  const char *good = "0123456789abcdef0123456789abcdef";
  char buf[40];

  (void)state;
  assert_int_equal(sl_ledger_id_parse(good, 32, id), 0);
  assert_int_equal(sl_ledger_id_parse(good, 31, id), -1);
  assert_int_equal(sl_ledger_id_parse("0123456789abcdef0123456789abcdef0", 33, id), -1);
  assert_int_equal(sl_ledger_id_parse("", 0, id), -1);
  assert_int_equal(sl_ledger_id_parse(NULL, 32, id), -1);
  const char bad_chars[] = {'g', 'G', 'x', ' ', '-', '\0', '/', ':', '@', '`', '\xff'};
  for (size_t b = 0; b < sizeof(bad_chars); b++) {
    for (size_t pos = 0; pos < 32; pos += 7) {
      memcpy(buf, good, 33);
      buf[pos] = bad_chars[b];
      assert_int_equal(sl_ledger_id_parse(buf, 32, id), -1);
    }
  }
  /* A trailing character past <len> is not looked at. */
  memcpy(buf, good, 33);
  buf[32] = 'z';
  assert_int_equal(sl_ledger_id_parse(buf, 32, id), 0);
}

static void test_create_bounds(void **state) {
  (void)state;
  assert_null(sl_ledger_create(0));
  assert_null(sl_ledger_create((size_t)SL_LEDGER_CAPACITY_MAX + 1));
  assert_null(sl_dedupe_create(0, 1000));
  assert_null(sl_dedupe_create((size_t)SL_LEDGER_CAPACITY_MAX + 1, 1000));
  sl_ledger_destroy(NULL);
  sl_dedupe_destroy(NULL);
  assert_string_equal(sl_ledger_state_name(SL_LEDGER_INFLIGHT), "in_flight");
  assert_string_equal(sl_strerror(SL_ELEDGER_BADKEY), "Idempotency-Key empty or too long");
  assert_string_equal(sl_strerror(-ENOMEM), strerror(ENOMEM)); /* errno values: strerror() */
}

static void test_put_get_replace(void **state) {
  struct sl_ledger *l = sl_ledger_create(100);
  struct sl_ledger_entry e = entry(1, SL_LEDGER_QUEUED), out;
  uint8_t id[16];

  (void)state;
  assert_non_null(l);
  assert_int_equal(sl_ledger_capacity(l), 100);
  small_id(id, 1);
  assert_int_equal(sl_ledger_get(l, id, &out), 0);
  assert_int_equal(sl_ledger_put(l, &e), 0);
  assert_int_equal(sl_ledger_count(l), 1);
  memset(&out, 0xee, sizeof(out));
  assert_int_equal(sl_ledger_get(l, id, &out), 1);
  assert_memory_equal(out.id, id, 16);
  assert_int_equal(out.state, SL_LEDGER_QUEUED);
  assert_int_equal(out.upstream, 1);
  assert_int_equal(out.seq, 1);
  assert_int_equal(out.enqueued_ms, 1001);
  assert_int_equal(out.updated_ms, 2001);
  assert_int_equal(out.attempts, 0);
  assert_string_equal(out.error, "");

  /* The update pattern: get a copy, change it, put it back. */
  out.state = SL_LEDGER_INFLIGHT;
  out.attempts = 1;
  strcpy(out.error, "connect: connection refused");
  assert_int_equal(sl_ledger_put(l, &out), 0);
  assert_int_equal(sl_ledger_count(l), 1);
  assert_int_equal(sl_ledger_get(l, id, &out), 1);
  assert_int_equal(out.state, SL_LEDGER_INFLIGHT);
  assert_int_equal(out.attempts, 1);
  assert_string_equal(out.error, "connect: connection refused");

  out.state = SL_LEDGER_DELIVERED;
  out.status = 201;
  out.attempts = 2;
  out.updated_ms = 5000;
  out.error[0] = '\0'; /* an empty error releases the stored text */
  assert_int_equal(sl_ledger_put(l, &out), 0);
  memset(&out, 0, sizeof(out));
  assert_int_equal(sl_ledger_get(l, id, &out), 1);
  assert_int_equal(out.state, SL_LEDGER_DELIVERED);
  assert_int_equal(out.status, 201);
  assert_int_equal(out.attempts, 2);
  assert_int_equal(out.updated_ms, 5000);
  assert_string_equal(out.error, "");
  assert_int_equal(l->errs_used, 0);

  /* Unknown ids, including one that differs in the last byte only. */
  id[15] ^= 1;
  assert_int_equal(sl_ledger_get(l, id, &out), 0);
  id[15] ^= 1;
  id[0] ^= 0x80;
  assert_int_equal(sl_ledger_get(l, id, &out), 0);

  /* A state out of range is refused and changes nothing. */
  e = entry(2, SL_LEDGER_QUEUED);
  e.state = (enum sl_ledger_state)(SL_LEDGER_STATE_MAX + 1);
  assert_int_equal(sl_ledger_put(l, &e), -EINVAL);
  assert_int_equal(sl_ledger_count(l), 1);
  assert_int_equal(sl__ledger_check(l), 0);
  sl_ledger_destroy(l);
}

static void test_error_truncated(void **state) {
  struct sl_ledger *l = sl_ledger_create(4);
  struct sl_ledger_entry e = entry(9, SL_LEDGER_DEAD), out;

  (void)state;
  memset(e.error, 'x', sizeof(e.error)); /* no NUL at all */
  assert_int_equal(sl_ledger_put(l, &e), 0);
  assert_int_equal(sl_ledger_get(l, e.id, &out), 1);
  assert_int_equal(strlen(out.error), SL_LEDGER_ERROR_MAX - 1);
  assert_int_equal(out.error[0], 'x');
  assert_int_equal(sl__ledger_check(l), 0);
  sl_ledger_destroy(l);
}

static void test_remove(void **state) {
  struct sl_ledger *l = sl_ledger_create(8);
  uint8_t id[16];

  (void)state;
  for (unsigned n = 0; n < 8; n++) {
    struct sl_ledger_entry e = entry(n, n % 2 ? SL_LEDGER_DEAD : SL_LEDGER_QUEUED);
    snprintf(e.error, sizeof(e.error), "error %u", n);
    assert_int_equal(sl_ledger_put(l, &e), 0);
  }
  small_id(id, 3);
  assert_int_equal(sl_ledger_remove(l, id), 0);
  assert_int_equal(sl_ledger_remove(l, id), SL_ELEDGER_NOTFOUND);
  assert_false(has(l, 3));
  small_id(id, 4);
  assert_int_equal(sl_ledger_remove(l, id), 0);
  assert_int_equal(sl_ledger_count(l), 6);
  assert_int_equal(sl__ledger_check(l), 0);
  /* The freed places are reused: two more fit without evicting anything. */
  for (unsigned n = 100; n < 102; n++) {
    struct sl_ledger_entry e = entry(n, SL_LEDGER_QUEUED);
    assert_int_equal(sl_ledger_put(l, &e), 0);
  }
  assert_int_equal(sl_ledger_count(l), 8);
  for (unsigned n = 0; n < 8; n++)
    assert_int_equal(has(l, n), n != 3 && n != 4);
  assert_int_equal(sl__ledger_check(l), 0);
  sl_ledger_destroy(l);
}

static void test_eviction_order(void **state) {
  struct sl_ledger *l = sl_ledger_create(4);
  struct sl_ledger_entry e;

  (void)state;
  /* 1 queued, 2 queued, 3 delivered, 4 queued: full. */
  e = entry(1, SL_LEDGER_QUEUED);
  assert_int_equal(sl_ledger_put(l, &e), 0);
  e = entry(2, SL_LEDGER_QUEUED);
  assert_int_equal(sl_ledger_put(l, &e), 0);
  e = entry(3, SL_LEDGER_DELIVERED);
  assert_int_equal(sl_ledger_put(l, &e), 0);
  e = entry(4, SL_LEDGER_INFLIGHT);
  assert_int_equal(sl_ledger_put(l, &e), 0);

  /* The settled one goes first, although it is not the oldest. */
  e = entry(5, SL_LEDGER_QUEUED);
  assert_int_equal(sl_ledger_put(l, &e), 0);
  assert_false(has(l, 3));
  assert_true(has(l, 1) && has(l, 2) && has(l, 4) && has(l, 5));

  /* None settled: the oldest by insertion, even though it was replaced since. */
  e = entry(1, SL_LEDGER_INFLIGHT);
  e.attempts = 3;
  assert_int_equal(sl_ledger_put(l, &e), 0);
  e = entry(6, SL_LEDGER_QUEUED);
  assert_int_equal(sl_ledger_put(l, &e), 0);
  assert_false(has(l, 1));
  assert_true(has(l, 2) && has(l, 4) && has(l, 5) && has(l, 6));

  /* Settled in the order 5 (dead), then 4 (delivered): 5 goes first, then 4. */
  e = entry(5, SL_LEDGER_DEAD);
  strcpy(e.error, "HTTP 500 after 8 attempts");
  assert_int_equal(sl_ledger_put(l, &e), 0);
  e = entry(4, SL_LEDGER_DELIVERED);
  assert_int_equal(sl_ledger_put(l, &e), 0);
  e = entry(7, SL_LEDGER_QUEUED);
  assert_int_equal(sl_ledger_put(l, &e), 0);
  assert_false(has(l, 5));
  assert_true(has(l, 2) && has(l, 4) && has(l, 6) && has(l, 7));
  e = entry(8, SL_LEDGER_QUEUED);
  assert_int_equal(sl_ledger_put(l, &e), 0);
  assert_false(has(l, 4));
  assert_true(has(l, 2) && has(l, 6) && has(l, 7) && has(l, 8));

  /* A redriven dead letter is pending again, at the newest end. */
  uint8_t id8[16];
  small_id(id8, 8);
  assert_int_equal(sl_ledger_remove(l, id8), 0);
  e = entry(9, SL_LEDGER_DEAD);
  strcpy(e.error, "timeout");
  assert_int_equal(sl_ledger_put(l, &e), 0);
  e = entry(9, SL_LEDGER_QUEUED);
  assert_int_equal(sl_ledger_put(l, &e), 0);
  e = entry(10, SL_LEDGER_QUEUED);
  assert_int_equal(sl_ledger_put(l, &e), 0); /* evicts 2, the oldest pending */
  assert_false(has(l, 2));
  e = entry(11, SL_LEDGER_QUEUED);
  assert_int_equal(sl_ledger_put(l, &e), 0); /* then 6 */
  assert_false(has(l, 6));
  assert_true(has(l, 7) && has(l, 9) && has(l, 10) && has(l, 11));
  assert_int_equal(sl_ledger_count(l), 4);
  assert_int_equal(sl__ledger_check(l), 0);
  sl_ledger_destroy(l);
}

static void count_entry(void *arg, const struct sl_ledger_entry *e) {
  (void)e;
  (*(unsigned *)arg)++;
}

/* The states added for purge, cancel and damaged spool units: their names,
 * their eviction class (settled, except a cancellation whose record the
 * spool still holds), and the arguments put refuses. */
static void test_new_states(void **state) {
  struct sl_ledger *l = sl_ledger_create(3);
  struct sl_ledger_entry e, out;

  (void)state;
  assert_string_equal(sl_ledger_state_name(SL_LEDGER_PURGED), "purged");
  assert_string_equal(sl_ledger_state_name(SL_LEDGER_CANCELLED), "cancelled");
  assert_string_equal(sl_ledger_state_name(SL_LEDGER_LOST), "lost");
  assert_string_equal(sl_ledger_state_name(SL_LEDGER_EXPIRED), "expired");

  e = entry(1, SL_LEDGER_STATE_MAX + 1);
  assert_int_equal(sl_ledger_put(l, &e), -EINVAL);
  e = entry(1, SL_LEDGER_QUEUED);
  e.flags = SL_LEDGER_F_HELD; /* held means a cancellation */
  assert_int_equal(sl_ledger_put(l, &e), -EINVAL);
  e = entry(1, SL_LEDGER_CANCELLED);
  e.flags = 0x80;
  assert_int_equal(sl_ledger_put(l, &e), -EINVAL);
  assert_int_equal(sl_ledger_count(l), 0);

  /* 1 cancelled and held (pending), 2 queued, 3 lost (settled): the lost one goes first. */
  e = entry(1, SL_LEDGER_CANCELLED);
  e.flags = SL_LEDGER_F_HELD;
  assert_int_equal(sl_ledger_put(l, &e), 0);
  e = entry(2, SL_LEDGER_QUEUED);
  assert_int_equal(sl_ledger_put(l, &e), 0);
  e = entry(3, SL_LEDGER_LOST);
  strcpy(e.error, "damaged spool unit");
  assert_int_equal(sl_ledger_put(l, &e), 0);
  e = entry(4, SL_LEDGER_QUEUED);
  assert_int_equal(sl_ledger_put(l, &e), 0);
  assert_false(has(l, 3));
  assert_true(has(l, 1) && has(l, 2) && has(l, 4));
  {
    unsigned n = 0;
    sl_ledger_each_pending(l, count_entry, &n);
    assert_int_equal(n, 3); /* 1 (held), 2, 4 */
  }
  /* A purged one is settled too. */
  e = entry(4, SL_LEDGER_PURGED);
  assert_int_equal(sl_ledger_put(l, &e), 0);
  e = entry(5, SL_LEDGER_QUEUED);
  assert_int_equal(sl_ledger_put(l, &e), 0);
  assert_false(has(l, 4));
  /* Once its record is settled the cancellation is settled: it goes before 2. */
  e = entry(1, SL_LEDGER_CANCELLED);
  assert_int_equal(sl_ledger_put(l, &e), 0);
  assert_int_equal(sl__ledger_check(l), 0);
  e = entry(6, SL_LEDGER_QUEUED);
  assert_int_equal(sl_ledger_put(l, &e), 0);
  assert_false(has(l, 1));
  assert_true(has(l, 2) && has(l, 5) && has(l, 6));
  small_id(e.id, 6);
  assert_int_equal(sl_ledger_get(l, e.id, &out), 1);
  assert_int_equal(out.flags, 0);
  assert_int_equal(sl__ledger_check(l), 0);
  sl_ledger_destroy(l);
}

static void test_capacity_one(void **state) {
  struct sl_ledger *l = sl_ledger_create(1);
  struct sl_ledger_entry e, out;

  (void)state;
  for (unsigned n = 0; n < 100; n++) {
    e = entry(n, (enum sl_ledger_state)(n % 4));
    if (n % 3 == 0)
      strcpy(e.error, "boom");
    assert_int_equal(sl_ledger_put(l, &e), 0);
    assert_int_equal(sl_ledger_count(l), 1);
    assert_int_equal(sl_ledger_get(l, e.id, &out), 1);
    assert_int_equal(out.state, n % 4);
    if (n > 0)
      assert_false(has(l, n - 1));
    /* Replacing the one entry evicts nothing. */
    e.attempts = 5;
    assert_int_equal(sl_ledger_put(l, &e), 0);
    assert_int_equal(sl_ledger_get(l, e.id, &out), 1);
    assert_int_equal(out.attempts, 5);
    assert_int_equal(sl__ledger_check(l), 0);
  }
  assert_true(l->errs_alloc <= 2);
  sl_ledger_destroy(l);
}

/*
 * Random operations against a plain model of the eviction rule: an entry's
 * stamp is set when it is inserted or changes class; the victim is the
 * settled entry with the smallest stamp, else the pending one.
 */
#define MODEL_IDS 48
#define MODEL_CAP 16

struct model {
  int present[MODEL_IDS];
  uint64_t stamp[MODEL_IDS];
  struct sl_ledger_entry e[MODEL_IDS];
};

static int settled(enum sl_ledger_state s) { return s >= SL_LEDGER_DELIVERED; }

static void test_model(void **state) {
  struct sl_ledger *l = sl_ledger_create(MODEL_CAP);
  static struct model m;
  uint64_t clock = 0;
  size_t count = 0;

  (void)state;
  memset(&m, 0, sizeof(m));
  for (int op = 0; op < 50000; op++) {
    unsigned n = (unsigned)(rng() % MODEL_IDS);
    if (rng() % 10 == 0) {
      uint8_t id[16];
      small_id(id, n);
      assert_int_equal(sl_ledger_remove(l, id), m.present[n] ? 0 : SL_ELEDGER_NOTFOUND);
      if (m.present[n])
        count--;
      m.present[n] = 0;
    } else {
      struct sl_ledger_entry e = entry(n, (enum sl_ledger_state)(rng() % 4));
      e.attempts = (uint32_t)op;
      if (rng() % 3 == 0)
        snprintf(e.error, sizeof(e.error), "error at op %d", op);
      if (!m.present[n] && count == MODEL_CAP) {
        int victim = -1;
        for (int pass = 1; pass >= 0 && victim < 0; pass--) {
          for (int i = 0; i < MODEL_IDS; i++) {
            if (m.present[i] && settled(m.e[i].state) == pass &&
                (victim < 0 || m.stamp[i] < m.stamp[victim]))
              victim = i;
          }
        }
        m.present[victim] = 0;
        count--;
      }
      if (!m.present[n] || settled(m.e[n].state) != settled(e.state))
        m.stamp[n] = ++clock;
      if (!m.present[n])
        count++;
      m.present[n] = 1;
      m.e[n] = e;
      assert_int_equal(sl_ledger_put(l, &e), 0);
    }
    assert_int_equal(sl_ledger_count(l), count);
    if (op % 97 == 0) {
      assert_int_equal(sl__ledger_check(l), 0);
      for (unsigned i = 0; i < MODEL_IDS; i++) {
        struct sl_ledger_entry out;
        assert_int_equal(sl_ledger_get(l, m.e[i].id, &out), m.present[i]);
        if (m.present[i]) {
          assert_int_equal(out.attempts, m.e[i].attempts);
          assert_int_equal(out.state, m.e[i].state);
          assert_string_equal(out.error, m.e[i].error);
        }
      }
    }
  }
  assert_int_equal(sl__ledger_check(l), 0);
  sl_ledger_destroy(l);
}

#define MILLION 1000000

static void test_large(void **state) {
  struct sl_ledger *l = sl_ledger_create(MILLION);
  static uint8_t ids[MILLION][16];
  struct sl_ledger_entry e, out;

  (void)state;
  assert_non_null(l);
  for (size_t i = 0; i < MILLION; i++)
    random_id(ids[i]);
  memset(&e, 0, sizeof(e));
  for (size_t i = 0; i < MILLION; i++) {
    memcpy(e.id, ids[i], 16);
    e.seq = i;
    assert_int_equal(sl_ledger_put(l, &e), 0);
  }
  for (size_t i = 0; i < MILLION; i++) {
    if (sl_ledger_get(l, ids[i], &out) != 1 || out.seq != i)
      fail_msg("entry %zu lost", i);
  }
  assert_int_equal(sl_ledger_count(l), MILLION);
  assert_int_equal(sl__ledger_check(l), 0);
  sl_ledger_destroy(l);

  /* Churn: 1M inserts through a ledger of 100k keep exactly the newest 100k. */
  l = sl_ledger_create(MILLION / 10);
  for (size_t i = 0; i < MILLION; i++) {
    memcpy(e.id, ids[i], 16);
    e.seq = i;
    e.state = i % 2 ? SL_LEDGER_DELIVERED : SL_LEDGER_QUEUED;
    assert_int_equal(sl_ledger_put(l, &e), 0);
  }
  assert_int_equal(sl_ledger_count(l), MILLION / 10);
  /*
   * Settled ones went first: each queued put evicted the delivered one before
   * it, so what is left is the last put (delivered) and the newest queued
   * (even) ones.
   */
  for (size_t i = 0; i < MILLION; i++) {
    int want = i == MILLION - 1 || (i % 2 == 0 && i >= MILLION - 2 * (MILLION / 10) + 2);
    if (sl_ledger_get(l, ids[i], &out) != want)
      fail_msg("entry %zu: want %d", i, want);
  }
  assert_int_equal(sl__ledger_check(l), 0);
  sl_ledger_destroy(l);
}

/* ------------------------------------------------------------------------ */

static void id_of(uint8_t id[16], unsigned n) { small_id(id, n); }

static int dd_get(struct sl_dedupe *d, uint16_t scope, const char *key, uint64_t now,
                  unsigned *n_out) {
  uint8_t id[16], want[16];
  int rc = sl_dedupe_get(d, scope, key, strlen(key), now, id);

  if (rc == 1) {
    *n_out = (unsigned)id[15] | (unsigned)id[14] << 8 | (unsigned)id[13] << 16;
    id_of(want, *n_out);
    assert_memory_equal(id, want, 16);
  }
  return rc;
}

static int dd_put(struct sl_dedupe *d, uint16_t scope, const char *key, unsigned n, uint64_t now) {
  uint8_t id[16];

  id_of(id, n);
  return sl_dedupe_put(d, scope, key, strlen(key), id, now);
}

static void test_dedupe_window(void **state) {
  struct sl_dedupe *d = sl_dedupe_create(100, 1000);
  unsigned n = 0;

  (void)state;
  assert_int_equal(dd_get(d, 0, "order-42", 5000, &n), 0);
  assert_int_equal(dd_put(d, 0, "order-42", 7, 5000), 0);
  assert_int_equal(dd_get(d, 0, "order-42", 5000, &n), 1);
  assert_int_equal(n, 7);
  assert_int_equal(dd_get(d, 0, "order-42", 5999, &n), 1); /* younger than the window */
  assert_int_equal(dd_get(d, 0, "order-43", 5999, &n), 0);
  assert_int_equal(dd_get(d, 0, "order-4", 5999, &n), 0);
  assert_int_equal(dd_get(d, 0, "order-420", 5999, &n), 0);
  assert_int_equal(dd_get(d, 0, "order-42", 6000, &n), 0); /* window over */
  assert_int_equal(sl_dedupe_count(d), 0);                 /* and dropped */
  assert_int_equal(dd_get(d, 0, "order-42", 5500, &n), 0); /* even if the clock steps back */

  /* The clock stepping back leaves keys fresh. */
  assert_int_equal(dd_put(d, 0, "k", 8, 10000), 0);
  assert_int_equal(dd_get(d, 0, "k", 9000, &n), 1);
  assert_int_equal(n, 8);

  /* Replacing a key gives it the new id and a new time. */
  assert_int_equal(dd_put(d, 0, "k", 9, 10500), 0);
  assert_int_equal(sl_dedupe_count(d), 1);
  assert_int_equal(dd_get(d, 0, "k", 11200, &n), 1);
  assert_int_equal(n, 9);
  assert_int_equal(sl__dedupe_check(d), 0);

  /* Remove, e.g. after a failed spool append. */
  assert_int_equal(sl_dedupe_remove(d, 0, "k", 1), 0);
  assert_int_equal(sl_dedupe_remove(d, 0, "k", 1), SL_ELEDGER_NOTFOUND);
  assert_int_equal(dd_get(d, 0, "k", 11200, &n), 0);
  assert_int_equal(sl__dedupe_check(d), 0);
  sl_dedupe_destroy(d);
}

static void test_dedupe_expiry_collects(void **state) {
  struct sl_dedupe *d = sl_dedupe_create(1000, 1000);
  char key[32];
  unsigned n;

  (void)state;
  for (unsigned i = 0; i < 200; i++) {
    snprintf(key, sizeof(key), "key-%u", i);
    assert_int_equal(dd_put(d, 1, key, i, i), 0);
  }
  assert_int_equal(sl_dedupe_count(d), 200);
  /* At t=1050, keys put at t=50 or before have expired; any get drops them. */
  assert_int_equal(dd_get(d, 1, "other", 1050, &n), 0);
  assert_int_equal(sl_dedupe_count(d), 149);
  assert_int_equal(dd_get(d, 1, "key-50", 1050, &n), 0); /* 1000 ms old: expired */
  assert_int_equal(dd_get(d, 1, "key-51", 1050, &n), 1);
  assert_int_equal(n, 51);
  /* Puts collect too. */
  assert_int_equal(dd_put(d, 1, "late", 999, 5000), 0);
  assert_int_equal(sl_dedupe_count(d), 1);
  assert_int_equal(sl__dedupe_check(d), 0);
  sl_dedupe_destroy(d);
}

static void test_dedupe_set_window(void **state) {
  struct sl_dedupe *d = sl_dedupe_create(10, 10000);
  unsigned n;

  (void)state;
  assert_int_equal(dd_put(d, 0, "a", 1, 0), 0);
  assert_int_equal(dd_get(d, 0, "a", 1500, &n), 1);
  sl_dedupe_set_window(d, 1000); /* shorter: applies to keys already held */
  assert_int_equal(dd_get(d, 0, "a", 1500, &n), 0);
  assert_int_equal(dd_put(d, 0, "b", 2, 2000), 0);
  sl_dedupe_set_window(d, 60000); /* longer: held keys live longer */
  assert_int_equal(dd_get(d, 0, "b", 30000, &n), 1);
  assert_int_equal(n, 2);
  sl_dedupe_set_window(d, 0); /* off: nothing matches */
  assert_int_equal(dd_get(d, 0, "b", 30000, &n), 0);
  assert_int_equal(dd_put(d, 0, "c", 3, 30000), 0);
  assert_int_equal(dd_get(d, 0, "c", 30000, &n), 0);
  assert_int_equal(sl__dedupe_check(d), 0);
  sl_dedupe_destroy(d);
}

static void test_dedupe_scopes(void **state) {
  struct sl_dedupe *d = sl_dedupe_create(10, 1000);
  unsigned n;

  (void)state;
  assert_int_equal(dd_put(d, 1, "same-key", 11, 0), 0);
  assert_int_equal(dd_put(d, 2, "same-key", 22, 0), 0);
  assert_int_equal(dd_get(d, 1, "same-key", 10, &n), 1);
  assert_int_equal(n, 11);
  assert_int_equal(dd_get(d, 2, "same-key", 10, &n), 1);
  assert_int_equal(n, 22);
  assert_int_equal(dd_get(d, 0, "same-key", 10, &n), 0);
  assert_int_equal(dd_get(d, 258, "same-key", 10, &n), 0); /* 258 = 0x0102: no byte mix-up */
  assert_int_equal(dd_get(d, 513, "same-key", 10, &n), 0);
  assert_int_equal(sl_dedupe_remove(d, 1, "same-key", 8), 0);
  assert_int_equal(dd_get(d, 2, "same-key", 10, &n), 1);
  assert_int_equal(n, 22);
  assert_int_equal(sl__dedupe_check(d), 0);
  sl_dedupe_destroy(d);
}

static void test_dedupe_key_limits(void **state) {
  struct sl_dedupe *d = sl_dedupe_create(10, 1000);
  char key[SL_DEDUPE_KEY_MAX + 2];
  uint8_t id[16], out[16];

  (void)state;
  memset(key, 'k', sizeof(key));
  id_of(id, 5);
  assert_int_equal(sl_dedupe_put(d, 0, key, SL_DEDUPE_KEY_MAX + 1, id, 0), SL_ELEDGER_BADKEY);
  assert_int_equal(sl_dedupe_get(d, 0, key, SL_DEDUPE_KEY_MAX + 1, 0, out), SL_ELEDGER_BADKEY);
  assert_int_equal(sl_dedupe_remove(d, 0, key, SL_DEDUPE_KEY_MAX + 1), SL_ELEDGER_BADKEY);
  assert_int_equal(sl_dedupe_put(d, 0, key, 0, id, 0), SL_ELEDGER_BADKEY);
  assert_int_equal(sl_dedupe_get(d, 0, key, 0, 0, out), SL_ELEDGER_BADKEY);
  assert_int_equal(sl_dedupe_get(d, 0, NULL, 3, 0, out), SL_ELEDGER_BADKEY);
  assert_int_equal(sl_dedupe_count(d), 0);
  /* Exactly the limit is fine, and so is binary content. */
  assert_int_equal(sl_dedupe_put(d, 0, key, SL_DEDUPE_KEY_MAX, id, 0), 0);
  assert_int_equal(sl_dedupe_get(d, 0, key, SL_DEDUPE_KEY_MAX, 0, out), 1);
  assert_memory_equal(out, id, 16);
  assert_int_equal(sl_dedupe_get(d, 0, key, SL_DEDUPE_KEY_MAX - 1, 0, out), 0);
  const char bin[] = {'a', '\0', 'b'};
  assert_int_equal(sl_dedupe_put(d, 0, bin, 3, id, 0), 0);
  assert_int_equal(sl_dedupe_get(d, 0, bin, 3, 0, out), 1);
  assert_int_equal(sl_dedupe_get(d, 0, bin, 1, 0, out), 0);
  assert_int_equal(sl__dedupe_check(d), 0);
  sl_dedupe_destroy(d);
}

static void test_dedupe_full(void **state) {
  struct sl_dedupe *d = sl_dedupe_create(3, 1000000);
  unsigned n;

  (void)state;
  assert_int_equal(dd_put(d, 0, "k1", 1, 0), 0);
  assert_int_equal(dd_put(d, 0, "k2", 2, 1), 0);
  assert_int_equal(dd_put(d, 0, "k3", 3, 2), 0);
  assert_int_equal(dd_put(d, 0, "k4", 4, 3), 0); /* full: k1, the oldest, goes */
  assert_int_equal(sl_dedupe_count(d), 3);
  assert_int_equal(dd_get(d, 0, "k1", 4, &n), 0);
  assert_int_equal(dd_get(d, 0, "k2", 4, &n), 1);
  assert_int_equal(dd_get(d, 0, "k4", 4, &n), 1);
  assert_int_equal(dd_put(d, 0, "k5", 5, 5), 0); /* then k2 */
  assert_int_equal(dd_get(d, 0, "k2", 6, &n), 0);
  assert_int_equal(dd_get(d, 0, "k3", 6, &n), 1);
  assert_int_equal(sl__dedupe_check(d), 0);
  sl_dedupe_destroy(d);

  /* Capacity 1. */
  d = sl_dedupe_create(1, 1000);
  for (unsigned i = 0; i < 50; i++) {
    char key[16];
    snprintf(key, sizeof(key), "k%u", i % 5);
    assert_int_equal(dd_put(d, 0, key, i, i), 0);
    assert_int_equal(dd_get(d, 0, key, i, &n), 1);
    assert_int_equal(n, i);
    assert_int_equal(sl_dedupe_count(d), 1);
    assert_int_equal(sl__dedupe_check(d), 0);
  }
  sl_dedupe_destroy(d);
}

/* Replaced and removed keys leave tombstones; they must not push live keys out. */
static void test_dedupe_tombstones(void **state) {
  struct sl_dedupe *d = sl_dedupe_create(8, 1000000);
  unsigned n;

  (void)state;
  assert_int_equal(dd_put(d, 0, "first", 1, 0), 0);
  for (unsigned i = 0; i < 10000; i++) {
    assert_int_equal(dd_put(d, 0, "again", 2 + i, 1 + i), 0);
    if (i % 3 == 0) {
      assert_int_equal(dd_put(d, 0, "gone", 1, 1 + i), 0);
      assert_int_equal(sl_dedupe_remove(d, 0, "gone", 4), 0);
    }
  }
  assert_int_equal(dd_get(d, 0, "first", 20000, &n), 1);
  assert_int_equal(n, 1);
  assert_int_equal(dd_get(d, 0, "again", 20000, &n), 1);
  assert_int_equal(n, 10001);
  assert_int_equal(sl_dedupe_count(d), 2);
  assert_int_equal(sl__dedupe_check(d), 0);
  sl_dedupe_destroy(d);
}

/* Keys that share a long prefix (and differ only in their last bytes) must
 * spread over the index: a hash that only looked at a prefix would make this
 * quadratic. */
static void test_dedupe_colliding_prefix(void **state) {
  enum { KEYS = 100000 };
  struct sl_dedupe *d = sl_dedupe_create(KEYS, 60000);
  char key[SL_DEDUPE_KEY_MAX];
  uint8_t id[16], out[16];

  (void)state;
  memset(key, 'p', sizeof(key));
  for (unsigned i = 0; i < KEYS; i++) {
    memcpy(key + SL_DEDUPE_KEY_MAX - 8, &i, sizeof(i));
    id_of(id, i);
    assert_int_equal(sl_dedupe_put(d, (uint16_t)(i % 3), key, sizeof(key), id, 1000 + i / 100), 0);
  }
  for (unsigned i = 0; i < KEYS; i++) {
    memcpy(key + SL_DEDUPE_KEY_MAX - 8, &i, sizeof(i));
    id_of(id, i);
    if (sl_dedupe_get(d, (uint16_t)(i % 3), key, sizeof(key), 2000, out) != 1 ||
        memcmp(out, id, 16) != 0)
      fail_msg("key %u lost", i);
    if (sl_dedupe_get(d, (uint16_t)(i % 3 + 1), key, sizeof(key), 2000, out) != 0)
      fail_msg("key %u found in another scope", i);
  }
  assert_int_equal(sl_dedupe_count(d), KEYS);
  assert_int_equal(sl__dedupe_check(d), 0);
  /* One more evicts the oldest. */
  key[0] = 'q';
  assert_int_equal(sl_dedupe_put(d, 0, key, sizeof(key), id, 3000), 0);
  assert_int_equal(sl_dedupe_count(d), KEYS);
  sl_dedupe_destroy(d);
}

/* Random puts, gets and removes on a driven clock against a model: a hit must
 * be the id last put for that key within the window. */
static void test_dedupe_model(void **state) {
  enum { KEYS = 64, CAP = 24 };
  struct sl_dedupe *d = sl_dedupe_create(CAP, 500);
  static unsigned last_id[KEYS];
  static uint64_t last_t[KEYS];
  static int present[KEYS];
  uint64_t now = 1000;
  unsigned next_id = 1;

  (void)state;
  for (int op = 0; op < 50000; op++) {
    unsigned k = (unsigned)(rng() % KEYS);
    char key[16];
    unsigned n;
    snprintf(key, sizeof(key), "key%u", k);
    now += rng() % 8;
    switch (rng() % 4) {
    case 0:
      assert_int_equal(dd_put(d, (uint16_t)(k % 2), key, next_id, now), 0);
      present[k] = 1;
      last_id[k] = next_id++;
      last_t[k] = now;
      break;
    case 1:
      if (sl_dedupe_remove(d, (uint16_t)(k % 2), key, strlen(key)) == 0)
        assert_true(present[k]);
      present[k] = 0;
      break;
    default:
      if (dd_get(d, (uint16_t)(k % 2), key, now, &n) == 1) {
        assert_true(present[k]);
        assert_int_equal(n, last_id[k]);
        assert_true(now - last_t[k] < 500);
      } else if (present[k] && now - last_t[k] < 100) {
        /* Put less than 100 ms ago: at most ~100 / 3.5 puts since, far
         * fewer than half the capacity, so it cannot have been evicted. */
        fail_msg("key %u put at %llu missing at %llu", k, (unsigned long long)last_t[k],
                 (unsigned long long)now);
      }
    }
    assert_true(sl_dedupe_count(d) <= CAP);
    if (op % 101 == 0)
      assert_int_equal(sl__dedupe_check(d), 0);
  }
  assert_int_equal(sl__dedupe_check(d), 0);
  sl_dedupe_destroy(d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_siphash_vectors),
      cmocka_unit_test(test_id_round_trip),
      cmocka_unit_test(test_id_parse_rejects),
      cmocka_unit_test(test_create_bounds),
      cmocka_unit_test(test_put_get_replace),
      cmocka_unit_test(test_error_truncated),
      cmocka_unit_test(test_remove),
      cmocka_unit_test(test_eviction_order),
      cmocka_unit_test(test_new_states),
      cmocka_unit_test(test_capacity_one),
      cmocka_unit_test(test_model),
      cmocka_unit_test(test_large),
      cmocka_unit_test(test_dedupe_window),
      cmocka_unit_test(test_dedupe_expiry_collects),
      cmocka_unit_test(test_dedupe_set_window),
      cmocka_unit_test(test_dedupe_scopes),
      cmocka_unit_test(test_dedupe_key_limits),
      cmocka_unit_test(test_dedupe_full),
      cmocka_unit_test(test_dedupe_tombstones),
      cmocka_unit_test(test_dedupe_colliding_prefix),
      cmocka_unit_test(test_dedupe_model),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests for a spilled request's expiry (src/drain/expiry.c): the shorter
 * of the route's queue_ttl and X-Sluice-Expires-After wins, the header's bad
 * values and its bound, and the internal field written, read back and left
 * out of the request the backend sees.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sluice/buf.h"
#include "sluice/expiry.h"

#define DAY (24ull * 3600 * 1000)

static uint64_t ttl_ok(const char *header, uint64_t route_ttl) {
  uint64_t v = 12345;
  char why[128] = "";

  if (sl_expiry_ttl(header, route_ttl, 30 * DAY, "30d", &v, why, sizeof(why)) != 0)
    fail_msg("\"%s\" was refused: %s", header ? header : "(none)", why);
  return v;
}

static void ttl_bad(const char *header, const char *want) {
  uint64_t v = 0;
  char why[128] = "";

  if (sl_expiry_ttl(header, 5000, 30 * DAY, "30d", &v, why, sizeof(why)) == 0)
    fail_msg("\"%s\" was accepted as %llu ms", header, (unsigned long long)v);
  assert_string_equal(why, want);
}

static void test_shorter_wins(void **state) {
  (void)state;
  assert_int_equal(ttl_ok(NULL, 0), 0);         /* neither: never expires */
  assert_int_equal(ttl_ok(NULL, 60000), 60000); /* the route alone */
  assert_int_equal(ttl_ok("30s", 0), 30000);    /* the header alone */
  assert_int_equal(ttl_ok("30s", 60000), 30000);
  assert_int_equal(ttl_ok("2m", 60000), 60000);
  assert_int_equal(ttl_ok("1h30m", 2 * 3600 * 1000), 90 * 60 * 1000);
  assert_int_equal(ttl_ok("30d", 0), 30 * DAY); /* max_delay itself is allowed */
}

static void test_bad_header(void **state) {
  static const char malformed[] = "X-Sluice-Expires-After is not a duration greater than 0 such "
                                  "as 30s or 1h30m, or too large";

  (void)state;
  ttl_bad("", malformed);
  ttl_bad("soon", malformed);
  ttl_bad("-5s", malformed);
  ttl_bad("0s", malformed);
  ttl_bad("5x", malformed);
  ttl_bad("99999999999999999999d", malformed);
  ttl_bad("31d", "X-Sluice-Expires-After is beyond limits.max_delay (30d)");
}

static void test_deadline(void **state) {
  (void)state;
  assert_int_equal(sl_expiry_deadline(1000, 500), 1500);
  assert_true(sl_expiry_deadline(UINT64_MAX - 10, 500) == UINT64_MAX); /* saturates */
}

static void test_field_round_trip(void **state) {
  static const char before[] = "Host: example\r\nContent-Type: text/plain\r\n";
  static const char after[] = "Via: 1.1 sluice\r\n";
  struct sl_buf b, out;
  uint64_t deadline = 0;
  bool drop = true;

  (void)state;
  sl_buf_init(&b);
  sl_buf_init(&out);
  assert_int_equal(sl_buf_append_str(&b, before), 0);
  assert_false(sl_expiry_get(b.base, b.len, &deadline, &drop)); /* an old record: none */
  assert_int_equal(sl_expiry_append(&b, 1733500000123ull, false), 0);
  assert_int_equal(sl_buf_append_str(&b, after), 0);
  assert_true(sl_expiry_get(b.base, b.len, &deadline, &drop));
  assert_true(deadline == 1733500000123ull);
  assert_false(drop);

  /* The backend sees every other field, in order, and not this one. */
  assert_int_equal(sl_expiry_strip(&out, b.base, b.len), 0);
  assert_int_equal(out.len, strlen(before) + strlen(after));
  assert_memory_equal(out.base, before, strlen(before));
  assert_memory_equal(out.base + strlen(before), after, strlen(after));

  sl_buf_reset(&b);
  assert_int_equal(sl_expiry_append(&b, 42, true), 0);
  assert_true(sl_expiry_get(b.base, b.len, &deadline, &drop));
  assert_true(deadline == 42);
  assert_true(drop);
  sl_buf_dispose(&b);
  sl_buf_dispose(&out);
}

/* A damaged or foreign value reads as none: the record is delivered, not lost. */
static void test_field_malformed(void **state) {
  static const char *const bad[] = {
      "X-Sluice-Expiry: 12 keep\r\n", "X-Sluice-Expiry: 12\r\n",        "X-Sluice-Expiry: dead\r\n",
      "X-Sluice-Expiry:\r\n",         "X-Sluice-Expiry: 12 dead x\r\n",
  };
  uint64_t deadline;
  bool drop;

  (void)state;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    if (sl_expiry_get(bad[i], strlen(bad[i]), &deadline, &drop))
      fail_msg("\"%s\" was read as a deadline", bad[i]);
  }
  /* Another field with the same start is not the internal one. */
  assert_false(sl_expiry_get("X-Sluice-Expiry-Note: 12 dead\r\n", 31, &deadline, &drop));
  /* The last line may lack its CRLF. */
  assert_true(sl_expiry_get("x-sluice-expiry: 7 drop", 23, &deadline, &drop));
  assert_true(deadline == 7 && drop);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_shorter_wins),    cmocka_unit_test(test_bad_header),
      cmocka_unit_test(test_deadline),        cmocka_unit_test(test_field_round_trip),
      cmocka_unit_test(test_field_malformed),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}

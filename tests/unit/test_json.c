/*
 * JSON string escaping: ASCII, quotes, controls, valid UTF-8 of each length
 * and at the edges of each range, and every kind of invalid byte (stray
 * continuations, truncated sequences, overlong forms, surrogates, code points
 * above U+10FFFF). Random input then checks the output against a decoder
 * written here another way: by code point, not by the standard's byte table.
 *
 * Each input is copied into a heap block of its exact size, so that under
 * AddressSanitizer a read past the end of a truncated sequence is caught.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sluice/buf.h"
#include "sluice/json.h"

/* Escapes the <len> bytes at <in> and checks that the result is <want>. */
static void check(const char *in, size_t len, const char *want) {
  char *copy = malloc(len > 0 ? len : 1);
  struct sl_buf b;

  assert_non_null(copy);
  memcpy(copy, in, len);
  sl_buf_init(&b);
  assert_int_equal(sl_json_append_string(&b, copy, len), 0);
  assert_int_equal(b.len, strlen(want));
  assert_memory_equal(b.base, want, b.len);
  sl_buf_dispose(&b);
  free(copy);
}

#define CHECK(in, want) check(in, sizeof(in) - 1, want)

static void test_ascii(void **state) {
  (void)state;
  CHECK("", "\"\"");
  CHECK("hello, world", "\"hello, world\"");
  CHECK("/admin/upstreams/a?x=1&y=2", "\"/admin/upstreams/a?x=1&y=2\"");
  CHECK("~ !#$%&'()*+,-./:;<=>?@[]^_`{|}", "\"~ !#$%&'()*+,-./:;<=>?@[]^_`{|}\"");
}

static void test_quotes_and_backslashes(void **state) {
  (void)state;
  CHECK("\"", "\"\\\"\"");
  CHECK("\\", "\"\\\\\"");
  CHECK("say \"hi\" \\o/", "\"say \\\"hi\\\" \\\\o/\"");
}

static void test_controls(void **state) {
  (void)state;
  CHECK("a\nb\rc\td", "\"a\\nb\\rc\\td\"");
  CHECK("\x01\x08\x0b\x0c\x1b\x1f", "\"\\u0001\\u0008\\u000b\\u000c\\u001b\\u001f\"");
  CHECK("\x7f", "\"\\u007f\"");
  CHECK("a\0b", "\"a\\u0000b\""); /* the length counts, not a NUL */
}

static void test_valid_utf8(void **state) {
  (void)state;
  CHECK("caf\xc3\xa9", "\"caf\xc3\xa9\"");                           /* é, 2 bytes */
  CHECK("\xe2\x82\xac 5", "\"\xe2\x82\xac 5\"");                     /* €, 3 bytes */
  CHECK("\xf0\x9f\x98\x80", "\"\xf0\x9f\x98\x80\"");                 /* U+1F600, 4 bytes */
  CHECK("\xc2\x80\xdf\xbf", "\"\xc2\x80\xdf\xbf\"");                 /* U+0080, U+07FF */
  CHECK("\xe0\xa0\x80\xef\xbf\xbf", "\"\xe0\xa0\x80\xef\xbf\xbf\""); /* U+0800, U+FFFF */
  CHECK("\xed\x9f\xbf\xee\x80\x80", "\"\xed\x9f\xbf\xee\x80\x80\""); /* U+D7FF, U+E000 */
  CHECK("\xf0\x90\x80\x80\xf4\x8f\xbf\xbf",
        "\"\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\""); /* U+10000, U+10FFFF */
  CHECK("\xe6\x97\xa5\xe6\x9c\xac\"\n", "\"\xe6\x97\xa5\xe6\x9c\xac\\\"\\n\"");
}

#define R "\\ufffd"

static void test_invalid_bytes(void **state) {
  (void)state;
  CHECK("\x80", "\"" R "\""); /* a continuation byte alone */
  CHECK("a\xbf"
        "b",
        "\"a" R "b\"");
  CHECK("\xfe\xff", "\"" R R "\"");             /* never in UTF-8 */
  CHECK("\xf5\x80\x80\x80", "\"" R R R R "\""); /* a lead byte above F4 */
  /* Latin-1 text is not UTF-8: each byte is replaced, the ASCII kept. */
  CHECK("caf\xe9!", "\"caf" R "!\"");
  /* After an invalid byte, the next valid sequence is copied. */
  CHECK("\x80\xc3\xa9", "\"" R "\xc3\xa9\"");
}

static void test_truncated(void **state) {
  (void)state;
  CHECK("\xc3", "\"" R "\"");
  CHECK("\xe2\x82", "\"" R R "\"");
  CHECK("\xf0\x9f\x98", "\"" R R R "\"");
  CHECK("\xc3"
        "A",
        "\"" R "A\"");
  CHECK("\xe2\x82"
        "A",
        "\"" R R "A\"");
  CHECK("\xf0\x9f\x98\xc3\xa9", "\"" R R R "\xc3\xa9\"");
}

static void test_overlong(void **state) {
  (void)state;
  CHECK("\xc0\x80", "\"" R R "\"");             /* NUL in two bytes */
  CHECK("\xc1\xbf", "\"" R R "\"");             /* U+007F in two bytes */
  CHECK("\xe0\x80\x80", "\"" R R R "\"");       /* NUL in three */
  CHECK("\xe0\x9f\xbf", "\"" R R R "\"");       /* U+07FF in three */
  CHECK("\xf0\x80\x80\x80", "\"" R R R R "\""); /* NUL in four */
  CHECK("\xf0\x8f\xbf\xbf", "\"" R R R R "\""); /* U+FFFF in four */
}

static void test_surrogates_and_beyond(void **state) {
  (void)state;
  CHECK("\xed\xa0\x80", "\"" R R R "\"");                   /* U+D800 */
  CHECK("\xed\xbf\xbf", "\"" R R R "\"");                   /* U+DFFF */
  CHECK("\xed\xa0\xbd\xed\xb8\x80", "\"" R R R R R R "\""); /* a CESU-8 pair */
  CHECK("\xf4\x90\x80\x80", "\"" R R R R "\"");             /* U+110000 */
}

static void test_appends(void **state) {
  struct sl_buf b;
  (void)state;

  sl_buf_init(&b);
  sl_buf_append_str(&b, "{\"a\":");
  assert_int_equal(sl_json_append_string(&b, "x\ty", 3), 0);
  sl_buf_append_str(&b, "}");
  assert_int_equal(b.len, strlen("{\"a\":\"x\\ty\"}"));
  assert_memory_equal(b.base, "{\"a\":\"x\\ty\"}", b.len);
  sl_buf_dispose(&b);
}

/* ---- random input against a reference ---------------------------------- */

/* Decodes the UTF-8 sequence at the <n> bytes of <p> by code point: its length (1 to 4) with
 * the code point in <*cp>, or 0 if it is not a shortest-form scalar value. */
static size_t ref_decode(const unsigned char *p, size_t n, uint32_t *cp) {
  static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
  size_t len;
  uint32_t v;

  if (p[0] < 0x80) {
    *cp = p[0];
    return 1;
  }
  if ((p[0] & 0xe0) == 0xc0) {
    len = 2;
    v = p[0] & 0x1fu;
  } else if ((p[0] & 0xf0) == 0xe0) {
    len = 3;
    v = p[0] & 0x0fu;
  } else if ((p[0] & 0xf8) == 0xf0) {
    len = 4;
    v = p[0] & 0x07u;
  } else {
    return 0;
  }
  if (n < len)
    return 0;
  for (size_t i = 1; i < len; i++) {
    if ((p[i] & 0xc0) != 0x80)
      return 0;
    v = v << 6 | (p[i] & 0x3fu);
  }
  if (v < min[len] || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
    return 0;
  *cp = v;
  return len;
}

static int hexval(char c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/*
 * Parses the JSON string <json> (<len> bytes) back into code points in <out>
 * (room for <cap>); fails the test on anything a strict JSON parser rejects
 * or that is not valid UTF-8. Returns how many code points it wrote.
 */
static size_t ref_parse(const char *json, size_t len, uint32_t *out, size_t cap) {
  const unsigned char *p = (const unsigned char *)json;
  size_t i = 1, n = 0;

  assert_true(len >= 2 && p[0] == '"' && p[len - 1] == '"');
  while (i < len - 1) {
    uint32_t cp;

    assert_true(n < cap);
    if (p[i] == '\\')
      assert_true(i + 1 < len - 1); /* it does not escape the closing quote */
    if (p[i] == '\\' && p[i + 1] == 'u') {
      assert_true(i + 6 <= len - 1);
      cp = 0;
      for (int k = 0; k < 4; k++) {
        int h = hexval(json[i + 2 + k]);

        assert_true(h >= 0);
        cp = cp << 4 | (uint32_t)h;
      }
      out[n++] = cp;
      i += 6;
      continue;
    }
    if (p[i] == '\\') {
      static const char written[] = "\"\\nrt", meant[] = "\"\\\n\r\t";
      const char *k = memchr(written, p[i + 1], sizeof(written) - 1);

      if (k == NULL)
        fail_msg("unexpected escape \\%c", p[i + 1]);
      out[n++] = (unsigned char)meant[k - written];
      i += 2;
      continue;
    }
    assert_true(p[i] >= 0x20 && p[i] != '"'); /* raw controls and quotes are not JSON */
    size_t seq = ref_decode(p + i, len - 1 - i, &cp);
    assert_true(seq > 0); /* the output is valid UTF-8 */
    out[n++] = cp;
    i += seq;
  }
  return n;
}

static void test_random_against_reference(void **state) {
  enum { ROUNDS = 20000, MAXLEN = 24 };
  /* Bytes that make interesting sequences more often than uniform bytes would. */
  static const unsigned char pick[] = {'a',  '"',  '\\', '\n', 0x00, 0x1f, 0x7f, 0x80,
                                       0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2,
                                       0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff};
  (void)state;

  srand(10);
  for (int round = 0; round < ROUNDS; round++) {
    unsigned char in[MAXLEN];
    uint32_t want[MAXLEN], got[MAXLEN];
    size_t len = (size_t)rand() % (MAXLEN + 1), nwant = 0, ngot;
    struct sl_buf b;
    char *copy;

    for (size_t i = 0; i < len; i++)
      in[i] = rand() % 2 ? pick[(size_t)rand() % sizeof(pick)] : (unsigned char)rand();
    /* What the string must read as: valid sequences kept, each other byte U+FFFD. */
    for (size_t i = 0; i < len;) {
      uint32_t cp;
      size_t seq = ref_decode(in + i, len - i, &cp);

      want[nwant++] = seq > 0 ? cp : 0xfffd;
      i += seq > 0 ? seq : 1;
    }
    copy = malloc(len > 0 ? len : 1);
    assert_non_null(copy);
    memcpy(copy, in, len);
    sl_buf_init(&b);
    assert_int_equal(sl_json_append_string(&b, copy, len), 0);
    ngot = ref_parse(b.base, b.len, got, MAXLEN);
    assert_int_equal(ngot, nwant);
    assert_memory_equal(got, want, nwant * sizeof(want[0]));
    sl_buf_dispose(&b);
    free(copy);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ascii),         cmocka_unit_test(test_quotes_and_backslashes),
      cmocka_unit_test(test_controls),      cmocka_unit_test(test_valid_utf8),
      cmocka_unit_test(test_invalid_bytes), cmocka_unit_test(test_truncated),
      cmocka_unit_test(test_overlong),      cmocka_unit_test(test_surrogates_and_beyond),
      cmocka_unit_test(test_appends),       cmocka_unit_test(test_random_against_reference),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

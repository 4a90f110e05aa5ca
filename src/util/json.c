/*
 * JSON string escaping (see sluice/json.h).
 *
 * Runs of bytes that need no escape (printable ASCII and valid UTF-8) are
 * copied with one append each, so a plain string costs one scan and one copy.
 * The UTF-8 check follows the table of well-formed byte sequences in the
 * Unicode standard (3.9, table 3-7): the second byte's range depends on the
 * first, which rules out overlong forms, surrogates and code points above
 * U+10FFFF without decoding them.
 */
#include "sluice/json.h"

#include <errno.h>
#include <stdio.h>

/* The length (2 to 4) of the well-formed UTF-8 sequence that starts the <n> bytes at <p>
 * (<n> > 0, <p>[0] >= 0x80), or 0 if they do not start with one. */
static size_t utf8_sequence_len(const unsigned char *p, size_t n) {
  unsigned char lo = 0x80, hi = 0xbf; /* the range of the second byte */
  size_t len;

  if (p[0] >= 0xc2 && p[0] <= 0xdf) {
    len = 2; /* 0xc0 and 0xc1 could only start overlong forms of ASCII */
  } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
    len = 3;
    if (p[0] == 0xe0)
      lo = 0xa0; /* below: overlong */
    else if (p[0] == 0xed)
      hi = 0x9f; /* above: the surrogates U+D800..U+DFFF */
  } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
    len = 4;
    if (p[0] == 0xf0)
      lo = 0x90; /* below: overlong */
    else if (p[0] == 0xf4)
      hi = 0x8f; /* above: beyond U+10FFFF */
  } else {
    return 0; /* a continuation byte, or a lead byte no valid sequence has */
  }
  if (n < len || p[1] < lo || p[1] > hi)
    return 0;
  for (size_t i = 2; i < len; i++) {
    if ((p[i] & 0xc0) != 0x80)
      return 0;
  }
  return len;
}

/* How many of the <n> bytes at <p> may be copied into a JSON string as they are. */
static size_t plain_run(const unsigned char *p, size_t n) {
  size_t i = 0;

  while (i < n) {
    if (p[i] >= 0x80) {
      size_t seq = utf8_sequence_len(p + i, n - i);

      if (seq == 0)
        break;
      i += seq;
    } else if (p[i] >= 0x20 && p[i] != 0x7f && p[i] != '"' && p[i] != '\\') {
      i++;
    } else {
      break;
    }
  }
  return i;
}

int sl_json_append_string(struct sl_buf *b, const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s;
  size_t start = b->len, i = 0;

  /* The common case, nothing to escape, then grows the buffer once. */
  if (sl_buf_reserve(b, len + 2) != 0 || sl_buf_append(b, "\"", 1) != 0)
    goto fail;
  while (i < len) {
    size_t run = plain_run(p + i, len - i);
    const char *esc;
    char ctl[8];

    if (run > 0) {
      if (sl_buf_append(b, p + i, run) != 0)
        goto fail;
      i += run;
      continue;
    }
    switch (p[i]) {
    case '"':
      esc = "\\\"";
      break;
    case '\\':
      esc = "\\\\";
      break;
    case '\n':
      esc = "\\n";
      break;
    case '\r':
      esc = "\\r";
      break;
    case '\t':
      esc = "\\t";
      break;
    default:
      if (p[i] < 0x20 || p[i] == 0x7f) {
        snprintf(ctl, sizeof(ctl), "\\u%04x", p[i]);
        esc = ctl;
      } else {
        esc = "\\ufffd"; /* one byte of an invalid sequence */
      }
      break;
    }
    if (sl_buf_append_str(b, esc) != 0)
      goto fail;
    i++;
  }
  if (sl_buf_append(b, "\"", 1) != 0)
    goto fail;
  return 0;

fail:
  b->len = start;
  return -ENOMEM;
}

/*
 * Growable byte buffer: doubling growth, explicit consume from the front.
 */
#include "sluice/buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sl_buf_init(struct sl_buf *b) {
  b->base = NULL;
  b->len = 0;
  b->cap = 0;
}

void sl_buf_dispose(struct sl_buf *b) {
  free(b->base);
  sl_buf_init(b);
}

int sl_buf_reserve(struct sl_buf *b, size_t extra) {
  size_t cap;
  char *p;

  if (b->cap - b->len >= extra)
    return 0;
  cap = b->cap ? b->cap : 256;
  while (cap - b->len < extra)
    cap *= 2;
  p = realloc(b->base, cap);
  if (p == NULL)
    return -ENOMEM;
  b->base = p;
  b->cap = cap;
  return 0;
}

int sl_buf_append(struct sl_buf *b, const void *data, size_t len) {
  if (len == 0)
    return 0;
  if (sl_buf_reserve(b, len) != 0)
    return -ENOMEM;
  memcpy(b->base + b->len, data, len);
  b->len += len;
  return 0;
}

int sl_buf_append_str(struct sl_buf *b, const char *s) { return sl_buf_append(b, s, strlen(s)); }

int sl_buf_printf(struct sl_buf *b, const char *fmt, ...) {
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    return -EINVAL;
  if (sl_buf_reserve(b, (size_t)n + 1) != 0)
    return -ENOMEM;
  va_start(ap, fmt);
  vsnprintf(b->base + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return 0;
}

int sl_buf_append_u64(struct sl_buf *b, unsigned long long v) {
  char tmp[24];
  size_t i = sizeof(tmp);

  do {
    tmp[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  return sl_buf_append(b, tmp + i, sizeof(tmp) - i);
}

void sl_buf_consume(struct sl_buf *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->base, b->base + n, b->len - n);
  b->len -= n;
}

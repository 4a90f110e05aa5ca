/*
 * Growable byte buffer.
 *
 * A buffer owns its memory; sl_buf_dispose() frees it. Pointers into <base>
 * stay valid only until the next call that may grow the buffer.
 *
 * Errors are negative errno values (util does not include uv.h); libuv's
 * UV_E* codes are the same values on Unix, so a caller may compare a result
 * with UV_ENOMEM or pass it on as a libuv error.
 *
 * @thread owner only
 */
#ifndef SLUICE_BUF_H
#define SLUICE_BUF_H

#include <stddef.h>

struct sl_buf {
  char *base;
  size_t len;
  size_t cap;
};

void sl_buf_init(struct sl_buf *b);
void sl_buf_dispose(struct sl_buf *b);

/* Makes room for <extra> more bytes. Returns 0 or -ENOMEM. */
int sl_buf_reserve(struct sl_buf *b, size_t extra);

/* Appends <len> bytes; returns 0 or -ENOMEM and leaves <b> unchanged on failure. */
int sl_buf_append(struct sl_buf *b, const void *data, size_t len);
int sl_buf_append_str(struct sl_buf *b, const char *s);
int sl_buf_printf(struct sl_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends <v> in decimal. */
int sl_buf_append_u64(struct sl_buf *b, unsigned long long v);

/* Drops the first <n> bytes, moving the rest to the front. */
void sl_buf_consume(struct sl_buf *b, size_t n);

static inline void sl_buf_reset(struct sl_buf *b) { b->len = 0; }

#endif

/*
 * Spool format: encoding and checking of records, segment headers and unit
 * headers (layout in spool_int.h and docs/spool-format.md).
 *
 * Everything here is pure: bytes in, bytes out, no I/O. Every length read
 * from disk is checked against the bytes actually there before use, so a
 * corrupted file can make a decode fail but never read out of bounds.
 *
 * @thread any
 *
 * Layer: the bottom; depends on nothing else of the spool.
 */
#include "spool_int.h"

#include "sluice/crc32c.h"

size_t sl__record_size(const struct sl_spool_record *rec) {
  return SL__REC_HDR + rec->method_len + rec->target_len + rec->headers_len + rec->body_len +
         rec->error_len;
}

static uint8_t *put_bytes(uint8_t *p, const char *s, size_t n) {
  if (n)
    memcpy(p, s, n);
  return p + n;
}

void sl__record_encode(const struct sl_spool_record *rec, uint8_t *out) {
  uint8_t *p;

  out[0] = SL__REC_VERSION;
  out[1] = 0;
  sl_le_put16(out + 2, (uint16_t)rec->method_len);
  sl_le_put32(out + 4, (uint32_t)rec->target_len);
  sl_le_put32(out + 8, (uint32_t)rec->headers_len);
  sl_le_put32(out + 12, (uint32_t)rec->body_len);
  sl_le_put32(out + 16, rec->attempts);
  sl_le_put32(out + 20, (uint32_t)rec->error_len);
  sl_le_put64(out + 24, rec->enqueue_ms);
  sl_le_put64(out + 32, rec->not_before_ms);
  memcpy(out + 40, rec->id, 16);
  p = out + SL__REC_HDR;
  p = put_bytes(p, rec->method, rec->method_len);
  p = put_bytes(p, rec->target, rec->target_len);
  p = put_bytes(p, rec->headers, rec->headers_len);
  p = put_bytes(p, rec->body, rec->body_len);
  put_bytes(p, rec->error, rec->error_len);
}

int sl__record_decode(const uint8_t *p, size_t len, struct sl_spool_record *rec) {
  uint64_t need;
  const char *s;

  if (len < SL__REC_HDR || p[0] != SL__REC_VERSION)
    return SL_ESPOOL_CORRUPT;
  memset(rec, 0, sizeof(*rec));
  rec->method_len = sl_le_get16(p + 2);
  rec->target_len = sl_le_get32(p + 4);
  rec->headers_len = sl_le_get32(p + 8);
  rec->body_len = sl_le_get32(p + 12);
  rec->attempts = sl_le_get32(p + 16);
  rec->error_len = sl_le_get32(p + 20);
  rec->enqueue_ms = sl_le_get64(p + 24);
  rec->not_before_ms = sl_le_get64(p + 32);
  memcpy(rec->id, p + 40, 16);
  need = (uint64_t)SL__REC_HDR + rec->method_len + rec->target_len + rec->headers_len +
         rec->body_len + rec->error_len;
  if (need != len)
    return SL_ESPOOL_CORRUPT;
  s = (const char *)p + SL__REC_HDR;
  rec->method = s;
  s += rec->method_len;
  rec->target = s;
  s += rec->target_len;
  rec->headers = s;
  s += rec->headers_len;
  rec->body = s;
  s += rec->body_len;
  rec->error = s;
  return 0;
}

void sl__seg_header_encode(uint8_t *out, int store, uint64_t seq, uint64_t start_ms,
                           uint64_t width_ms) {
  memset(out, 0, SL__SEG_HDR);
  memcpy(out, SL__SEG_MAGIC, 8); /* includes the NUL */
  sl_le_put16(out + 8, SL__SEG_VERSION);
  out[10] = (uint8_t)store;
  sl_le_put32(out + 12, SL__SEG_HDR);
  sl_le_put64(out + 16, seq);
  sl_le_put64(out + 24, start_ms);
  sl_le_put64(out + 32, width_ms);
  sl_le_put32(out + 60, sl_crc32c(0, out, 60));
}

int sl__seg_header_decode(const uint8_t *p, int *store, uint64_t *seq, uint64_t *start_ms,
                          uint64_t *width_ms) {
  if (memcmp(p, SL__SEG_MAGIC, 8) != 0 || sl_le_get32(p + 60) != sl_crc32c(0, p, 60))
    return SL_ESPOOL_CORRUPT;
  if (sl_le_get16(p + 8) != SL__SEG_VERSION || sl_le_get32(p + 12) != SL__SEG_HDR)
    return SL_ESPOOL_CORRUPT;
  *store = p[10];
  *seq = sl_le_get64(p + 16);
  *start_ms = sl_le_get64(p + 24);
  *width_ms = sl_le_get64(p + 32);
  if (*store < SL__STORE_READY || *store > SL__STORE_DEAD)
    return SL_ESPOOL_CORRUPT;
  return 0;
}

void sl__unit_encode(uint8_t *h, const struct sl__unit *u) {
  memset(h, 0, SL__UNIT_HDR);
  h[0] = 'S';
  h[1] = 'L';
  h[2] = 'U';
  h[3] = u->type;
  sl_le_put32(h + 4, u->payload_len);
  sl_le_put32(h + 8, u->raw_len);
  sl_le_put32(h + 12, u->first_ord);
  sl_le_put32(h + 16, u->nrec);
  sl_le_put32(h + 20, u->dict_id);
  sl_le_put64(h + 24, u->min_enqueue_ms);
  h[32] = u->codec;
  sl_le_put32(h + 36, u->payload_crc);
  sl_le_put32(h + 44, sl_crc32c(0, h, 44));
}

int sl__unit_decode(const uint8_t *h, struct sl__unit *u) {
  if (h[0] != 'S' || h[1] != 'L' || h[2] != 'U')
    return SL_ESPOOL_CORRUPT;
  if (sl_le_get32(h + 44) != sl_crc32c(0, h, 44))
    return SL_ESPOOL_CORRUPT;
  u->type = h[3];
  u->payload_len = sl_le_get32(h + 4);
  u->raw_len = sl_le_get32(h + 8);
  u->first_ord = sl_le_get32(h + 12);
  u->nrec = sl_le_get32(h + 16);
  u->dict_id = sl_le_get32(h + 20);
  u->min_enqueue_ms = sl_le_get64(h + 24);
  u->codec = h[32];
  u->payload_crc = sl_le_get32(h + 36);
  if (u->type != SL__UNIT_BLOCK && u->type != SL__UNIT_FOOTER)
    return SL_ESPOOL_CORRUPT;
  if (u->codec > SL__CODEC_ZSTD || u->payload_len > SL__UNIT_MAX_PAYLOAD ||
      u->raw_len > SL__UNIT_MAX_PAYLOAD)
    return SL_ESPOOL_CORRUPT;
  if (u->type == SL__UNIT_FOOTER && (u->payload_len != SL__FOOTER_PAYLOAD || u->codec != 0))
    return SL_ESPOOL_CORRUPT;
  if (u->codec == SL__CODEC_RAW && u->raw_len != u->payload_len)
    return SL_ESPOOL_CORRUPT;
  /* Every record takes at least its 4-byte length and 56-byte header. */
  if (u->type == SL__UNIT_BLOCK &&
      (u->nrec == 0 || (uint64_t)u->nrec * (4 + SL__REC_HDR) > u->raw_len))
    return SL_ESPOOL_CORRUPT;
  return 0;
}

int sl__block_next(const uint8_t *blk, size_t blk_len, size_t *at, const uint8_t **rec,
                   size_t *rec_len) {
  uint32_t n;

  if (*at + 4 > blk_len)
    return SL_ESPOOL_CORRUPT;
  n = sl_le_get32(blk + *at);
  if (n > blk_len - *at - 4)
    return SL_ESPOOL_CORRUPT;
  *rec = blk + *at + 4;
  *rec_len = n;
  *at += 4 + (size_t)n;
  return 0;
}

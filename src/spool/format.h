/*
 * The spool's on-disk format: the layout of segment files, units and records, and their
 * encoders and decoders (format.c). docs/spool-format.md tells the whole story (stores,
 * recovery, the checkpoint); this header is what the code reads and writes.
 *
 * Layer: the bottom of the spool; depends on nothing else of it.
 */
#ifndef SLUICE_SPOOL_FORMAT_H
#define SLUICE_SPOOL_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/endian.h"
#include "sluice/spool.h"

// clang-format off
/*
 * All integers little-endian (sluice/endian.h).
 *
 *   segment file = seg header (64 B) | unit | unit | ... [| footer unit]
 *
 *   seg header
 *     0         8       10     11    12          16      24          32          40      60     64
 *     +---------+-------+------+-----+-----------+-------+-----------+-----------+-------+------+
 *     |"SLSPOOL"|ver = 1|store |rsv  |hdr size   |seq    |bucket     |bucket     |zero   |crc   |
 *     |  "\0"   |u16    |u8    |u8   |u32 = 64   |u64    |start ms   |width ms   |       |u32   |
 *     +---------+-------+------+-----+-----------+-------+-----------+-----------+-------+------+
 *
 *   unit header (48 B)
 *     0       4        8        12        16      20       24          32     33    36      40     44     48
 *     +-------+--------+--------+---------+-------+--------+-----------+------+-----+-------+------+------+
 *     |"SLU"  |payload |raw     |first    |nrec   |dict id |min enqueue|codec |rsv  |payload|rsv   |header|
 *     | +type |len u32 |len u32 |ord u32  |u32    |u32     |ms u64     |u8    |     |crc u32|u32   |crc   |
 *     +-------+--------+--------+---------+-------+--------+-----------+------+-----+-------+------+------+
 *     followed by <payload len> bytes: one zstd frame (codec 1) or raw (codec 0) whose
 *     decompressed bytes are <nrec> times [u32 len | encoded record].
 *
 *   footer unit: a unit of type 'F' whose payload is 32 bytes: nrec u32, nunits u32,
 *     data end u64, min enqueue u64, max enqueue u64. Written when a segment is sealed,
 *     so recovery reads 80 bytes instead of scanning the file.
 *
 *   encoded record (56 B header, then its parts)
 *     0    1    2        4        8         12       16       20       24         32         40    56
 *     +----+----+--------+--------+---------+--------+--------+--------+----------+----------+-----+
 *     |ver |rsv |method  |target  |headers  |body    |attempts|error   |enqueue ms|not before|id   |
 *     |u8=1|u8  |len u16 |len u32 |len u32  |len u32 |u32     |len u32 |u64       |ms u64    |16 B |
 *     +----+----+--------+--------+---------+--------+--------+--------+----------+----------+-----+
 *     then method, target, headers, body and error, back to back.
 *
 * Records inside a segment are numbered by ordinal (0, 1, 2, ...): the unit header says
 * which ordinal it starts at, so skipping a corrupted unit never shifts later ordinals and
 * the ack bitmaps in the checkpoint stay correct.
 */
// clang-format on

#define SL__SEG_MAGIC "SLSPOOL"
#define SL__SEG_VERSION 1
#define SL__SEG_HDR 64
#define SL__UNIT_HDR 48
#define SL__FOOTER_PAYLOAD 32
#define SL__FOOTER_SIZE (SL__UNIT_HDR + SL__FOOTER_PAYLOAD)
#define SL__UNIT_BLOCK 'B'
#define SL__UNIT_FOOTER 'F'
#define SL__CODEC_RAW 0
#define SL__CODEC_ZSTD 1
#define SL__REC_HDR 56
#define SL__REC_ID_OFF 40 /* where an encoded record keeps its 16-byte id */
#define SL__REC_VERSION 1
#define SL__UNIT_MAX_PAYLOAD (SL_SPOOL_RECORD_MAX + (8u << 20))
#define SL__CKPT_MAGIC "SLACKS01"

enum sl__store { SL__STORE_READY = 1, SL__STORE_DELAY = 2, SL__STORE_DEAD = 3 };

/* A parsed unit header. */
struct sl__unit {
  uint8_t type;
  uint32_t payload_len;
  uint32_t raw_len;
  uint32_t first_ord;
  uint32_t nrec;
  uint32_t dict_id;
  uint64_t min_enqueue_ms;
  uint8_t codec;
  uint32_t payload_crc;
};

/* Bytes <rec> takes once encoded (56-byte header plus its variable parts). */
size_t sl__record_size(const struct sl_spool_record *rec);
/* Encodes <rec> into <out>, which has sl__record_size(rec) bytes. */
void sl__record_encode(const struct sl_spool_record *rec, uint8_t *out);
/* Decodes the <len> bytes at <p> into the view <rec> (pointing into <p>): 0 or
 * SL_ESPOOL_CORRUPT when the lengths do not add up to exactly <len>. */
int sl__record_decode(const uint8_t *p, size_t len, struct sl_spool_record *rec);
void sl__seg_header_encode(uint8_t *out, int store, uint64_t seq, uint64_t start_ms,
                           uint64_t width_ms);
/* Checks magic, version and CRC of a 64-byte segment header; 0 or SL_ESPOOL_CORRUPT. */
int sl__seg_header_decode(const uint8_t *p, int *store, uint64_t *seq, uint64_t *start_ms,
                          uint64_t *width_ms);
/* Fills the 48-byte unit header <hdr> from <u>, computing the header CRC. */
void sl__unit_encode(uint8_t *hdr, const struct sl__unit *u);
/* Returns 0 if the header's own CRC and fields check out (the payload is not checked). */
int sl__unit_decode(const uint8_t *hdr, struct sl__unit *u);
/* Walks the records of a decompressed payload: stores the next record in <rec>/<rec_len>,
 * advances <at>; SL_ESPOOL_CORRUPT if a length runs past <blk_len>. */
int sl__block_next(const uint8_t *blk, size_t blk_len, size_t *at, const uint8_t **rec,
                   size_t *rec_len);

#endif

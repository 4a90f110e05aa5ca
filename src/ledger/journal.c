/*
 * Ledger journal: the ledger and the Idempotency-Key index written to an
 * append-only file and read back at startup. See ledger_journal.h for the
 * guarantees; the format is in docs/spool-format.md.
 *
 *   file   = header frame*
 *   header = "SLUICELJ" u32 version (1) u32 0                       16 bytes
 *   frame  = u32 len, u32 crc32c(len bytes || body), body[len]      len 1..BODY_MAX
 *   body   = u8 type, then by type (all integers little-endian):
 *     ENTRY (1):      u8 state, u16 upstream, u16 status, u8 error_len, u8 0,
 *                     u32 attempts, id[16], u64 seq, u64 enqueued_ms,
 *                     u64 updated_ms, u64 not_before_ms,
 *                     error[error_len]                               60 + error_len
 *     KEY (2):        u8 0, u16 scope, u16 key_len, u16 0, id[16], u64 t_ms,
 *                     key[key_len]                                   32 + key_len
 *     KEY_REMOVE (3): u8 0, u16 scope, u16 key_len, u16 0, key[key_len]  8 + key_len
 *     NAME (4):       u8 0, u16 id, u16 name_len, u16 0, name[name_len]  8 + name_len
 *     ENTRY2 (5):     as ENTRY, but the byte after error_len holds the entry's
 *                     flags (SL_LEDGER_F_*) and the state may be one of those
 *                     added later (purged, cancelled, lost)         60 + error_len
 *     ENTRY_REMOVE (6): u8 0, u16 0, u32 0, id[16]                   24
 *                     (the entry is dropped: sl_ledger_remove)
 *     CLOSED (7):     u8 0, u16 0, u32 0                              8
 *                     (the last frame of a journal closed cleanly: every
 *                     frame of the run is in the file before it)
 *
 * ENTRY2 exists for compatibility both ways: an entry in one of the first
 * four states without flags is still written as ENTRY, so a file that holds
 * no new state reads the same in an older version; and an older version
 * skips ENTRY2 frames as an unknown type (keeping the entry's previous state)
 * instead of stopping its load at a state it does not know.
 *
 * An ENTRY's upstream and a KEY's scope are upstream ids; NAME frames say
 * which upstream name each id stands for, so that ids keep their meaning
 * when the config's upstreams are reordered, added or removed.
 *
 * Reading applies frames in order and stops at the first frame that is torn,
 * fails its CRC or does not parse; later bytes are never trusted (a frame
 * that happens to parse after garbage may be a fragment of an older one).
 * Zeros from there to the end of the file are a clean end: under a sync
 * policy the file is zero-filled ahead of its frames (PREALLOC_STEP at a
 * time, with the group that needs it), so that a group's fdatasync writes
 * its data pages only, not the inode's new size as well; a clean close cuts
 * the zeros off, a crash leaves them.
 * Unknown types with a good CRC are skipped, so a later version may add some.
 *
 * The loop side is a small state machine around one buffer: records are
 * encoded into <pending>; a flush moves it to <inflight> and a threadpool
 * job writes it at the end of the file, one write at a time, and under a
 * sync policy fdatasyncs it before it returns when a waiter waits for
 * frames in it or before it: the group commit. A group nobody waits for is
 * only written; the next synced group makes it durable with its own (one
 * fdatasync covers the file). <inflight> is not touched until the job's
 * callback ran. A flush starts from a timer: sync_delay_ms after the first
 * frame while a waiter waits, flush_delay_ms otherwise; from a uv_check
 * handle at the end of the loop iteration for frames an answer waits for
 * (sl_ledger_journal_flush); at once, as a sync of its own, for a waiter
 * whose frames were written unsynced.
 *
 * Durability is counted in bytes of frames appended (st.appended_bytes): a
 * group's end is the count when it was flushed; <written> moves to it when
 * its job returned without error, <durable> too if the job fdatasynced;
 * waiters (sl_ledger_journal_wait) with a mark at or below <durable> are
 * then called, in order. A group written to
 * a compaction's temp file is durable only once that file is renamed over
 * the journal and the directory fsynced: until then its end is kept in
 * <synced_temp>. A run-time
 * compaction goes IDLE -> SNAPSHOT (a threadpool job replays the file up to
 * its current end into private structures and writes their snapshot to the
 * temp file, while the loop keeps appending to the old file and copies each
 * record into <capture> too) -> SWITCH (waiting for a write to the old file
 * to finish) -> CATCHUP (<capture> is written to the temp file, which now
 * takes the appends) -> RENAME (temp file over the journal) -> IDLE.
 *
 * @thread loop, except the functions marked "threadpool"
 */
#include "sluice/ledger_journal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ledger/ledger_int.h"
#include "sluice/buf.h"
#include "sluice/clock.h"
#include "sluice/crc32c.h"
#include "sluice/endian.h"
#include "sluice/log.h"
#include "sluice/durable.h"

#define MAGIC "SLUICELJ"
#define VERSION 1u
#define HEADER_LEN 16
#define FRAME_HEAD 8
#define ENTRY_LEN 60
#define KEY_LEN 32
#define KEY_REMOVE_LEN 8
#define BODY_MAX (KEY_LEN + SL_DEDUPE_KEY_MAX)
#define FRAME_MAX (FRAME_HEAD + BODY_MAX)
#define IO_CHUNK (1u << 20) /* read and snapshot buffer */
/* Under a sync policy the file is zero-filled this far ahead of its frames,
 * in steps of this size: see write_work. */
#define PREALLOC_STEP (256u * 1024)

#define NAME_LEN 8

#define ENTRY_REMOVE_LEN 24
#define CLOSED_LEN 8

enum {
  REC_ENTRY = 1,
  REC_KEY = 2,
  REC_KEY_REMOVE = 3,
  REC_NAME = 4,
  REC_ENTRY2 = 5,
  REC_ENTRY_REMOVE = 6,
  REC_CLOSED = 7
};

/* Upstream names by id (NULL where an id has none). */
struct names {
  char **v;
  size_t n;
};

static int names_set(struct names *t, uint16_t id, const char *name, size_t len) {
  char *copy = strndup(name, len);

  if (copy == NULL)
    return -ENOMEM;
  if (id >= t->n) {
    char **grown = realloc(t->v, ((size_t)id + 1) * sizeof(*grown));
    if (grown == NULL) {
      free(copy);
      return -ENOMEM;
    }
    memset(grown + t->n, 0, ((size_t)id + 1 - t->n) * sizeof(*grown));
    t->v = grown;
    t->n = (size_t)id + 1;
  }
  free(t->v[id]);
  t->v[id] = copy;
  return 0;
}

static void names_free(struct names *t) {
  for (size_t i = 0; i < t->n; i++)
    free(t->v[i]);
  free(t->v);
  t->v = NULL;
  t->n = 0;
}

enum compact_state {
  COMPACT_IDLE,
  COMPACT_SNAPSHOT,
  COMPACT_SWITCH,
  COMPACT_CATCHUP,
  COMPACT_RENAME
};

/* A run-time compaction. The threadpool fields are written by the job and
 * read by the loop only after it finished. */
struct compact_job {
  uv_work_t work;
  struct sl_ledger_journal *j;
  const char *path, *tmp_path; /* the journal's, which outlives the job */
  uint64_t limit;              /* bytes of the file the snapshot covers */
  size_t ledger_capacity, dedupe_capacity;
  uint64_t window_ms, now_ms;
  int rc;             /* threadpool: 0 or a negative errno */
  int fd;             /* threadpool: the temp file, open for appending, or -1 */
  uint64_t size;      /* threadpool: bytes of the snapshot */
  int64_t bad_offset; /* threadpool: where the replay stopped early, or -1 */
};

/* Closes file descriptors and unlinks a file on the threadpool. */
struct close_job {
  uv_work_t work;
  struct sl_ledger_journal *j;
  int fds[3];
  char *unlink_path;
  bool last;      /* frees the journal when done */
  int64_t cut_to; /* with <last>: cut fds[0] to this size (its zero tail), -1: no */
};

/* The one write (and fdatasync) in flight: <inflight> from <off>. */
struct write_job {
  uv_work_t work;
  struct sl_ledger_journal *j;
  int fd;
  const uint8_t *buf;
  size_t len;
  uint64_t off;
  bool sync;
  uint64_t zero_from, zero_to; /* zeros written there after the group; empty: none */
  const struct sl_io *io;      /* the journal's, filled */
  int rc;                      /* threadpool: 0 or a negative errno */
  bool synced;                 /* threadpool: an fdatasync ran */
  bool to_temp;                /* written to a compaction's temp file (not yet the journal) */
};

/* Renames the compaction's temp file over the journal and fsyncs the directory. */
struct rename_job {
  uv_work_t work;
  struct sl_ledger_journal *j;
  int rc; /* threadpool */
};

TAILQ_HEAD(waiters, sl_ledger_journal_waiter);

struct sl_ledger_journal {
  uv_loop_t *loop;
  struct sl_ledger *l;
  struct sl_dedupe *d;
  struct sl_ledger_journal_opts opts;
  char *path, *tmp_path;
  int fd, old_fd, lock_fd;
  uv_timer_t timer;
  bool timer_open;
  uv_check_t check; /* sync policy: flushes at the end of the loop iteration */
  uv_idle_t idle;   /* ... and keeps its poll from blocking until then */
  bool check_open, idle_open;
  struct write_job wjob;
  struct rename_job rjob;
  struct sl_io io; /* opts.io completed with the POSIX calls */
  bool writing;
  struct sl_buf pending, inflight;
  uint64_t inflight_end;             /* st.appended_bytes when <inflight> was flushed */
  uint64_t written;                  /* appended bytes written to the file (synced or not) */
  uint64_t durable;                  /* appended bytes known durable */
  uint64_t synced_temp;              /* appended bytes synced into a compaction's temp file */
  uint64_t urgent;                   /* appended bytes that an answer to a client waits for */
  uint64_t alloc_end, old_alloc_end; /* the file's size: its frames, then zeros */
  struct waiters waiters;
  uint64_t compact_at; /* file size that starts a run-time compaction */
  enum compact_state cstate;
  struct compact_job *job;
  struct sl_buf capture; /* records appended since the snapshot's end */
  bool capture_overflow;
  unsigned ops; /* threadpool jobs and renames in flight */
  bool closing, freeing, warned_drop;
  struct names names; /* as read at open */
  struct sl_ledger_journal_stats st;
};

void sl_ledger_journal_opts_init(struct sl_ledger_journal_opts *opts) {
  opts->sync = SL_LEDGER_JOURNAL_SYNC_BATCH;
  opts->io = NULL;
  opts->flush_bytes = 64u * 1024;
  opts->flush_delay_ms = 10;
  opts->sync_delay_ms = 2;
  opts->compact_min_bytes = 16ull * 1024 * 1024;
  opts->max_pending_bytes = 64u * 1024 * 1024;
}

/* ---- encoding ----------------------------------------------------------- */

/* Frames the <len> body bytes at <frame> + FRAME_HEAD; returns the frame's size. */
static size_t seal(uint8_t *frame, size_t len) {
  sl_le_put32(frame, (uint32_t)len);
  sl_le_put32(frame + 4, sl_crc32c(sl_crc32c(0, frame, 4), frame + FRAME_HEAD, len));
  return FRAME_HEAD + len;
}

static size_t encode_entry(uint8_t *frame, const struct sl_ledger_entry *e) {
  uint8_t *b = frame + FRAME_HEAD;
  size_t err_len = strnlen(e->error, SL_LEDGER_ERROR_MAX - 1);

  b[0] = e->state > SL_LEDGER_DEAD || e->flags != 0 ? REC_ENTRY2 : REC_ENTRY;
  b[1] = (uint8_t)e->state;
  sl_le_put16(b + 2, e->upstream);
  sl_le_put16(b + 4, e->status);
  b[6] = (uint8_t)err_len;
  b[7] = e->flags;
  sl_le_put32(b + 8, e->attempts);
  memcpy(b + 12, e->id, 16);
  sl_le_put64(b + 28, e->seq);
  sl_le_put64(b + 36, e->enqueued_ms);
  sl_le_put64(b + 44, e->updated_ms);
  sl_le_put64(b + 52, e->not_before_ms);
  memcpy(b + ENTRY_LEN, e->error, err_len);
  return seal(frame, ENTRY_LEN + err_len);
}

/* A KEY frame, or with <id> NULL a KEY_REMOVE frame. */
static size_t encode_key(uint8_t *frame, uint16_t scope, const char *key, size_t key_len,
                         const uint8_t *id, uint64_t t_ms) {
  uint8_t *b = frame + FRAME_HEAD;
  size_t head = id != NULL ? KEY_LEN : KEY_REMOVE_LEN;

  memset(b, 0, head);
  b[0] = id != NULL ? REC_KEY : REC_KEY_REMOVE;
  sl_le_put16(b + 2, scope);
  sl_le_put16(b + 4, (uint16_t)key_len);
  if (id != NULL) {
    memcpy(b + 8, id, 16);
    sl_le_put64(b + 24, t_ms);
  }
  memcpy(b + head, key, key_len);
  return seal(frame, head + key_len);
}

static size_t encode_closed(uint8_t *frame) {
  memset(frame + FRAME_HEAD, 0, CLOSED_LEN);
  frame[FRAME_HEAD] = REC_CLOSED;
  return seal(frame, CLOSED_LEN);
}

static size_t encode_entry_remove(uint8_t *frame, const uint8_t id[16]) {
  uint8_t *b = frame + FRAME_HEAD;

  memset(b, 0, ENTRY_REMOVE_LEN);
  b[0] = REC_ENTRY_REMOVE;
  memcpy(b + 8, id, 16);
  return seal(frame, ENTRY_REMOVE_LEN);
}

static size_t encode_name(uint8_t *frame, uint16_t id, const char *name, size_t len) {
  uint8_t *b = frame + FRAME_HEAD;

  memset(b, 0, NAME_LEN);
  b[0] = REC_NAME;
  sl_le_put16(b + 2, id);
  sl_le_put16(b + 4, (uint16_t)len);
  memcpy(b + NAME_LEN, name, len);
  return seal(frame, NAME_LEN + len);
}

static void header(uint8_t out[HEADER_LEN]) {
  memcpy(out, MAGIC, 8);
  sl_le_put32(out + 8, VERSION);
  sl_le_put32(out + 12, 0);
}

/* ---- reading ------------------------------------------------------------ */

struct loader {
  struct sl_ledger *l;
  struct sl_dedupe *d;
  struct names names;
  uint64_t now_ms;
  uint64_t entries, keys, expired, unknown;
  bool closed; /* the last frame applied was CLOSED */
};

static bool key_expired(const struct sl_dedupe *d, uint64_t t_ms, uint64_t now_ms) {
  if (d->window_ms == 0)
    return true;
  return now_ms >= t_ms && now_ms - t_ms >= d->window_ms;
}

/* Applies one checked frame body. Returns 0, 1 if the body does not parse
 * (the load stops there) or -ENOMEM. */
static int apply(struct loader *ld, const uint8_t *b, size_t len) {
  ld->closed = false;
  switch (b[0]) {
  case REC_ENTRY:
  case REC_ENTRY2: {
    struct sl_ledger_entry e;
    bool v2 = b[0] == REC_ENTRY2;

    if (len < ENTRY_LEN || len != ENTRY_LEN + (size_t)b[6] || b[6] >= SL_LEDGER_ERROR_MAX ||
        b[1] > (v2 ? SL_LEDGER_STATE_MAX : SL_LEDGER_DEAD) ||
        (v2 && ((b[7] & ~SL_LEDGER_F_HELD) != 0 ||
                ((b[7] & SL_LEDGER_F_HELD) && b[1] != SL_LEDGER_CANCELLED))) ||
        memchr(b + ENTRY_LEN, '\0', b[6]) != NULL)
      return 1;
    memset(&e, 0, sizeof(e));
    e.flags = v2 ? b[7] : 0; /* the first format wrote 0 there */
    /* In flight when it was written (not by this version): queued again now. */
    e.state = b[1] == SL_LEDGER_INFLIGHT ? SL_LEDGER_QUEUED : (enum sl_ledger_state)b[1];
    e.upstream = sl_le_get16(b + 2);
    e.status = sl_le_get16(b + 4);
    e.attempts = sl_le_get32(b + 8);
    memcpy(e.id, b + 12, 16);
    e.seq = sl_le_get64(b + 28);
    e.enqueued_ms = sl_le_get64(b + 36);
    e.updated_ms = sl_le_get64(b + 44);
    e.not_before_ms = sl_le_get64(b + 52);
    memcpy(e.error, b + ENTRY_LEN, b[6]);
    ld->entries++;
    return sl_ledger_put(ld->l, &e) == -ENOMEM ? -ENOMEM : 0;
  }
  case REC_KEY:
  case REC_KEY_REMOVE: {
    size_t head = b[0] == REC_KEY ? KEY_LEN : KEY_REMOVE_LEN;
    uint16_t scope = sl_le_get16(b + 2);
    size_t key_len = sl_le_get16(b + 4);
    const char *key = (const char *)b + head;

    if (len < head || key_len == 0 || key_len > SL_DEDUPE_KEY_MAX || len != head + key_len)
      return 1;
    if (b[0] == REC_KEY_REMOVE) {
      sl_dedupe_remove(ld->d, scope, key, key_len);
      return 0;
    }
    if (key_expired(ld->d, sl_le_get64(b + 24), ld->now_ms)) {
      ld->expired++;
      return 0;
    }
    ld->keys++;
    /* Put "at" its own time: the index keeps keys in time order and expires
     * them from there, as if they had come in now. */
    return sl_dedupe_put(ld->d, scope, key, key_len, b + 8, sl_le_get64(b + 24)) == -ENOMEM
               ? -ENOMEM
               : 0;
  }
  case REC_ENTRY_REMOVE:
    if (len != ENTRY_REMOVE_LEN)
      return 1;
    sl_ledger_remove(ld->l, b + 8);
    return 0;
  case REC_CLOSED:
    if (len != CLOSED_LEN)
      return 1;
    ld->closed = true;
    return 0;
  case REC_NAME: {
    size_t name_len = sl_le_get16(b + 4);

    if (len < NAME_LEN || name_len == 0 || name_len > SL_LEDGER_JOURNAL_NAME_MAX ||
        len != NAME_LEN + name_len || memchr(b + NAME_LEN, '\0', name_len) != NULL)
      return 1;
    return names_set(&ld->names, sl_le_get16(b + 2), (const char *)b + NAME_LEN, name_len);
  }
  default:
    ld->unknown++;
    return 0;
  }
}

/* Reads into <buf> (holding <*have> bytes) until it holds <want> or the file
 * or <limit> ends. Returns 0 or a negative errno. */
static int fill(int fd, uint8_t *buf, size_t *have, size_t want, uint64_t *left) {
  while (*have<want && * left> 0) {
    size_t n = IO_CHUNK - *have;
    ssize_t r;

    if (n > *left)
      n = (size_t)*left;
    r = read(fd, buf + *have, n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return -errno;
    if (r == 0)
      break;
    *have += (size_t)r;
    *left -= (uint64_t)r;
  }
  return 0;
}

/*
 * Threadpool or startup. Applies the frames of the open file <fd> from its
 * start, up to <limit> bytes, to <ld>. Sets <*bad_offset> to the offset of
 * the first frame (or header) that is torn or corrupt, -1 if there is none.
 * Returns 0 or a negative errno (a read error or no memory).
 */
static int load_fd(int fd, uint64_t limit, struct loader *ld, int64_t *bad_offset) {
  uint8_t *buf = malloc(IO_CHUNK);
  uint8_t hdr[HEADER_LEN];
  size_t have = 0, off = 0;
  uint64_t pos = 0; /* file offset of buf[0] */
  int rc;

  *bad_offset = -1;
  if (buf == NULL)
    return -ENOMEM;
  rc = fill(fd, buf, &have, IO_CHUNK, &limit);
  if (rc != 0 || have == 0)
    goto done;
  header(hdr);
  if (have < HEADER_LEN || memcmp(buf, hdr, HEADER_LEN) != 0) {
    *bad_offset = 0;
    goto done;
  }
  off = HEADER_LEN;
  for (;;) {
    if (have - off < FRAME_MAX) {
      memmove(buf, buf + off, have - off);
      pos += off;
      have -= off;
      off = 0;
      if ((rc = fill(fd, buf, &have, IO_CHUNK, &limit)) != 0)
        break;
    }
    if (have == off)
      break; /* a clean end */
    if (have - off >= 4 ? sl_le_get32(buf + off) == 0 : buf[off] == 0) {
      /* No frame has length 0: this is the zero-filled tail of a file written
       * under a sync policy, its clean end, unless something else follows. */
      int64_t at = (int64_t)(pos + off);
      bool zeros = true;

      while (zeros && have > off) {
        for (size_t i = off; i < have && zeros; i++)
          zeros = buf[i] == 0;
        pos += have;
        have = off = 0;
        if ((rc = fill(fd, buf, &have, IO_CHUNK, &limit)) != 0)
          goto done;
      }
      if (!zeros)
        *bad_offset = at;
      break;
    }
    size_t len = have - off >= FRAME_HEAD ? sl_le_get32(buf + off) : 0;
    if (len == 0 || len > BODY_MAX || have - off < FRAME_HEAD + len ||
        sl_le_get32(buf + off + 4) !=
            sl_crc32c(sl_crc32c(0, buf + off, 4), buf + off + FRAME_HEAD, len)) {
      *bad_offset = (int64_t)(pos + off);
      break;
    }
    rc = apply(ld, buf + off + FRAME_HEAD, len);
    if (rc < 0)
      break;
    if (rc > 0) {
      *bad_offset = (int64_t)(pos + off);
      rc = 0;
      break;
    }
    off += FRAME_HEAD + len;
  }

done:
  free(buf);
  return rc;
}

/* ---- writing a snapshot (startup and threadpool) ------------------------ */

struct snap {
  const struct sl_io *io;
  int fd;
  struct sl_buf buf;
  uint64_t size;
  int rc;
};

static void snap_add(struct snap *s, const uint8_t *frame, size_t len) {
  if (s->rc != 0)
    return;
  if (s->buf.len + len > IO_CHUNK) {
    s->rc = sl_io_pwrite_all(s->io, s->fd, s->buf.base, s->buf.len, s->size - s->buf.len);
    sl_buf_reset(&s->buf);
  }
  if (s->rc == 0 && sl_buf_append(&s->buf, frame, len) != 0)
    s->rc = -ENOMEM;
  s->size += len;
}

/*
 * Writes the header and what <names>, <l> and <d> hold to <fd>, which is
 * empty: the upstream names, the pending entries, then the settled ones, each in eviction order, so
 * that a reload rebuilds the same eviction order; then the keys still inside the window at
 * <now_ms>, oldest first. Sets <*size>. Returns 0 or a negative errno.
 */
static int write_snapshot(const struct sl_io *io, int fd, const struct names *names,
                          const struct sl_ledger *l, const struct sl_dedupe *d, uint64_t now_ms,
                          uint64_t *size) {
  struct snap s = {.io = io, .fd = fd};
  uint8_t frame[FRAME_MAX];
  struct sl_ledger_entry e;

  sl_buf_init(&s.buf);
  header(frame);
  snap_add(&s, frame, HEADER_LEN);
  for (size_t id = 0; id < names->n; id++)
    if (names->v[id] != NULL)
      snap_add(&s, frame, encode_name(frame, (uint16_t)id, names->v[id], strlen(names->v[id])));
  for (int which = SL__LEDGER_PENDING; which <= SL__LEDGER_SETTLED; which++) {
    for (uint32_t n = l->lists[which].head; n != SL__LEDGER_NONE; n = l->nodes[n].next) {
      sl__ledger_node_entry(l, n, &e);
      snap_add(&s, frame, encode_entry(frame, &e));
    }
  }
  for (uint32_t i = 0; i < d->len; i++) {
    const struct sl__dedupe_node *k = &d->ring[((uint64_t)d->head + i) % d->ring_alloc];
    if (k->key != NULL && !key_expired(d, k->t_ms, now_ms))
      snap_add(&s, frame, encode_key(frame, k->scope, k->key, k->key_len, k->id, k->t_ms));
  }
  if (s.rc == 0 && s.buf.len > 0)
    s.rc = sl_io_pwrite_all(io, fd, s.buf.base, s.buf.len, s.size - s.buf.len);
  sl_buf_dispose(&s.buf);
  *size = s.size;
  return s.rc;
}

/* Creates <tmp_path> with the snapshot of <l> and <d>, fsynced. Returns 0 and
 * sets <*fd_out> (open for writing, at its end) and <*size>, or a negative
 * errno (no file is left behind). */
static int write_temp(const struct sl_io *io, const char *tmp_path, const struct names *names,
                      const struct sl_ledger *l, const struct sl_dedupe *d, uint64_t now_ms,
                      int *fd_out, uint64_t *size) {
  int fd = io->open(tmp_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  int rc;

  if (fd < 0)
    return -errno;
  rc = write_snapshot(io, fd, names, l, d, now_ms, size);
  if (rc == 0 && io->fsync(fd) != 0)
    rc = -errno;
  if (rc != 0) {
    io->close(fd);
    io->unlink(tmp_path);
    return rc;
  }
  *fd_out = fd;
  return 0;
}

/* ---- startup ------------------------------------------------------------ */

/* The directory part of <path> (malloc'd), "." if it has none. */
static char *dir_of(const char *path) {
  const char *slash = strrchr(path, '/');

  if (slash == NULL)
    return strdup(".");
  if (slash == path)
    return strdup("/");
  return strndup(path, (size_t)(slash - path));
}

static int lock_file(const struct sl_io *io, const char *path, int *fd_out) {
  char lock[4096];
  int fd, rc;

  if (snprintf(lock, sizeof(lock), "%s.lock", path) >= (int)sizeof(lock))
    return -ENAMETOOLONG;
  rc = sl_durable_create(io, lock, O_RDWR, 0640, &fd);
  if (rc < 0)
    return rc;
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno == EWOULDBLOCK ? SL_ELEDGER_LOCKED : -errno;
    io->close(fd);
    return err;
  }
  *fd_out = fd;
  return 0;
}

struct queued_rank {
  uint64_t seq, enqueued_ms;
  uint32_t node;
  uint16_t upstream;
};

static int rank_cmp(const void *a, const void *b) {
  const struct queued_rank *x = a, *y = b;

  if (x->upstream != y->upstream)
    return x->upstream < y->upstream ? -1 : 1;
  if (x->seq != y->seq)
    return x->seq < y->seq ? -1 : 1;
  if (x->enqueued_ms != y->enqueued_ms)
    return x->enqueued_ms < y->enqueued_ms ? -1 : 1;
  return x->node < y->node ? -1 : x->node > y->node;
}

/* Renumbers the queued entries of each upstream 1, 2, ... in their order
 * (see sl_ledger_journal_open). Returns 0 or -ENOMEM. */
static int renumber_queued(struct sl_ledger *l) {
  const struct sl__ledger_list *pending = &l->lists[SL__LEDGER_PENDING];
  struct queued_rank *r;
  size_t n = 0;

  if (pending->len == 0)
    return 0;
  r = malloc(pending->len * sizeof(*r));
  if (r == NULL)
    return -ENOMEM;
  for (uint32_t i = pending->head; i != SL__LEDGER_NONE; i = l->nodes[i].next)
    if (l->nodes[i].state == SL_LEDGER_QUEUED) /* not a held cancellation */
      r[n++] =
          (struct queued_rank){l->nodes[i].seq, l->nodes[i].enqueued_ms, i, l->nodes[i].upstream};
  qsort(r, n, sizeof(*r), rank_cmp);
  for (size_t i = 0, rank = 0; i < n; i++) {
    rank = i > 0 && r[i].upstream == r[i - 1].upstream ? rank + 1 : 1;
    l->nodes[r[i].node].seq = rank;
  }
  free(r);
  return 0;
}

/* Reads <j>->path into the ledger and key index. Returns 0 or a negative errno. */
static int load(struct sl_ledger_journal *j, uint64_t now_ms) {
  struct loader ld = {.l = j->l, .d = j->d, .now_ms = now_ms};
  struct stat sb;
  int fd = open(j->path, O_RDONLY | O_CLOEXEC);
  int rc;

  j->st.bad_offset = -1;
  if (fd < 0)
    return errno == ENOENT ? 0 : -errno;
  rc = fstat(fd, &sb) != 0 ? -errno : load_fd(fd, UINT64_MAX, &ld, &j->st.bad_offset);
  close(fd);
  j->names = ld.names;
  if (rc != 0)
    return rc;
  j->st.clean_start = ld.closed && j->st.bad_offset < 0;
  j->st.loaded_entries = ld.entries;
  j->st.loaded_keys = ld.keys;
  j->st.expired_keys = ld.expired;
  if (j->st.bad_offset >= 0)
    sl_log_warn("ledger journal %s: unreadable frame at offset %lld of %lld (a torn tail after "
                "a crash, or corruption): the load stops there",
                j->path, (long long)j->st.bad_offset, (long long)sb.st_size);
  if (ld.unknown > 0)
    sl_log_warn("ledger journal %s: %llu record(s) of an unknown type skipped", j->path,
                (unsigned long long)ld.unknown);
  sl_log_info("ledger journal %s: %llu status record(s) and %llu Idempotency-Key(s) read "
              "(%llu expired), %zu status entries held; %s",
              j->path, (unsigned long long)ld.entries, (unsigned long long)ld.keys,
              (unsigned long long)ld.expired, sl_ledger_count(j->l),
              j->st.clean_start ? "closed cleanly by the last run"
                                : "not closed cleanly by the last run: the spools' records "
                                  "complete it");
  return 0;
}

/* Rewrites the journal with what the ledger and key index hold and keeps it
 * open for appending. Returns 0 or a negative errno. */
static int compact_at_startup(struct sl_ledger_journal *j, uint64_t now_ms) {
  uint64_t size = 0;
  int rc;

  rc = write_temp(&j->io, j->tmp_path, &j->names, j->l, j->d, now_ms, &j->fd, &size);
  if (rc == 0 && (rc = sl_durable_rename(&j->io, -1, j->tmp_path, j->path)) != 0) {
    j->io.close(j->fd);
    j->fd = -1;
    j->io.unlink(j->tmp_path);
  }
  j->st.file_bytes = j->alloc_end = size;
  j->compact_at = size * 4 > j->opts.compact_min_bytes ? size * 4 : j->opts.compact_min_bytes;
  return rc;
}

static void journal_free(struct sl_ledger_journal *j) {
  names_free(&j->names);
  sl_buf_dispose(&j->pending);
  sl_buf_dispose(&j->inflight);
  sl_buf_dispose(&j->capture);
  free(j->path);
  free(j->tmp_path);
  free(j);
}

int sl_ledger_journal_open(uv_loop_t *loop, const char *path, struct sl_ledger *l,
                           struct sl_dedupe *d, uint64_t now_ms,
                           const struct sl_ledger_journal_opts *opts,
                           struct sl_ledger_journal **out) {
  struct sl_ledger_journal *j = calloc(1, sizeof(*j));
  char *dir = NULL;
  int rc;

  if (j == NULL)
    return -ENOMEM;
  j->loop = loop;
  j->l = l;
  j->d = d;
  j->fd = j->old_fd = j->lock_fd = -1;
  if (opts != NULL)
    j->opts = *opts;
  else
    sl_ledger_journal_opts_init(&j->opts);
  sl_io_fill(&j->io, j->opts.io);
  sl_buf_init(&j->pending);
  sl_buf_init(&j->inflight);
  sl_buf_init(&j->capture);
  TAILQ_INIT(&j->waiters);
  j->path = strdup(path);
  j->tmp_path = malloc(strlen(path) + 5);
  dir = dir_of(path);
  if (j->path == NULL || j->tmp_path == NULL || dir == NULL) {
    rc = -ENOMEM;
    goto fail;
  }
  sprintf(j->tmp_path, "%s.tmp", path);
  /* The spool directory and its parents, each new name durable (the upstreams' spools are
   * created inside it later). */
  if ((rc = sl_durable_mkdir_p(&j->io, dir, 0750)) != 0 ||
      (rc = lock_file(&j->io, path, &j->lock_fd)) != 0 || (rc = load(j, now_ms)) != 0 ||
      (rc = renumber_queued(l)) != 0 || (rc = compact_at_startup(j, now_ms)) != 0)
    goto fail;
  free(dir);
  uv_timer_init(loop, &j->timer);
  j->timer.data = j;
  j->timer_open = true;
  uv_check_init(loop, &j->check);
  j->check.data = j;
  j->check_open = true; /* active only while frames wait for their group */
  uv_idle_init(loop, &j->idle);
  j->idle.data = j;
  j->idle_open = true;
  l->journal = j;
  d->journal = j;
  *out = j;
  return 0;

fail:
  free(dir);
  if (j->fd >= 0)
    close(j->fd);
  if (j->lock_fd >= 0)
    close(j->lock_fd);
  journal_free(j);
  return rc;
}

/* ---- appending on the loop ---------------------------------------------- */

static void flush(struct sl_ledger_journal *j);
static void maybe_compact(struct sl_ledger_journal *j);
static void write_failed(struct sl_ledger_journal *j, int err);
static void maybe_free(struct sl_ledger_journal *j);
static void start_compaction(struct sl_ledger_journal *j);
static void switch_files(struct sl_ledger_journal *j);
static void start_rename(struct sl_ledger_journal *j);

static void on_timer(uv_timer_t *t) { flush(t->data); }

static void on_close_done(uv_work_t *w, int status) {
  struct close_job *job = (struct close_job *)w;
  struct sl_ledger_journal *j = job->j;

  (void)status;
  free(job->unlink_path);
  if (job->last) {
    journal_free(j);
  } else {
    j->ops--;
    maybe_compact(j);
    maybe_free(j);
  }
  free(job);
}

/* threadpool */
static void close_work(uv_work_t *w) {
  struct close_job *job = (struct close_job *)w;
  const struct sl_io *io = &job->j->io;

  /* A journal closed cleanly has no zero tail. */
  if (job->cut_to >= 0 && job->fds[0] >= 0 && io->ftruncate(job->fds[0], (off_t)job->cut_to) == 0)
    io->fdatasync(job->fds[0]);
  for (int i = 0; i < 3; i++) {
    if (job->fds[i] >= 0)
      io->close(job->fds[i]);
  }
  if (job->unlink_path != NULL)
    io->unlink(job->unlink_path);
}

/* Closes <fd>, <fd2> and <fd3> (-1: none) and unlinks <path> (NULL: none)
 * off the loop. With <last>, frees <j> afterwards. */
static void close_later(struct sl_ledger_journal *j, int fd, int fd2, int fd3, const char *path,
                        bool last) {
  struct close_job *job = calloc(1, sizeof(*job));

  if (job != NULL && path != NULL && (job->unlink_path = strdup(path)) == NULL) {
    free(job);
    job = NULL;
  }
  if (job == NULL) {
    /* Out of memory at this point: a leaked descriptor is the lesser harm
     * than blocking the loop. */
    sl_log_error("ledger journal %s: out of memory closing files", j->path);
    if (last)
      journal_free(j);
    return;
  }
  job->j = j;
  job->fds[0] = fd;
  job->fds[1] = fd2;
  job->fds[2] = fd3;
  job->last = last;
  job->cut_to = last && fd == j->fd && j->alloc_end > j->st.file_bytes && !j->st.failed
                    ? (int64_t)j->st.file_bytes
                    : -1;
  if (!last)
    j->ops++;
  uv_queue_work(j->loop, &job->work, close_work, on_close_done);
}

static bool syncing(const struct sl_ledger_journal *j) {
  return j->opts.sync != SL_LEDGER_JOURNAL_SYNC_OFF;
}

/* Whether the first waiter waits for frames that are written but not synced:
 * a group of its own (with nothing new, a bare fdatasync) must go. */
static bool sync_owed(const struct sl_ledger_journal *j) {
  const struct sl_ledger_journal_waiter *w = TAILQ_FIRST(&j->waiters);

  return w != NULL && w->mark <= j->written && w->mark > j->durable;
}

/* Calls the waiters whose frames are durable, in order; with <err>, all of them. */
static void wake_waiters(struct sl_ledger_journal *j, int err) {
  struct sl_ledger_journal_waiter *w;

  while ((w = TAILQ_FIRST(&j->waiters)) != NULL && (err != 0 || w->mark <= j->durable)) {
    TAILQ_REMOVE(&j->waiters, w, link);
    w->j = NULL;
    w->cb(w, err);
  }
}

static void stop_journaling(struct sl_ledger_journal *j, const char *what, int err) {
  sl_log_error("ledger journal %s: %s: %s; status changes are not journaled until the next "
               "restart (the spool is not affected)",
               j->path, what, uv_strerror(err));
  j->st.failed = 1;
  sl_buf_reset(&j->pending);
  sl_buf_reset(&j->capture);
  wake_waiters(j, err);
}

/* A compaction that switched files cannot finish: back to the old file. */
static void abandon_switched(struct sl_ledger_journal *j) {
  close_later(j, j->fd, -1, -1, j->tmp_path, false);
  j->fd = j->old_fd;
  j->alloc_end = j->old_alloc_end;
  j->old_fd = -1;
  free(j->job);
  j->job = NULL;
  j->cstate = COMPACT_IDLE;
}

/* A write failed (<err>): nothing more is journaled, and a compaction
 * waiting for this write or writing its catch-up is given up. */
static void write_failed(struct sl_ledger_journal *j, int err) {
  sl_buf_reset(&j->inflight);
  stop_journaling(j, "write", err);
  if (j->cstate == COMPACT_CATCHUP) {
    abandon_switched(j);
  } else if (j->cstate == COMPACT_SWITCH) {
    close_later(j, j->job->fd, -1, -1, j->tmp_path, false);
    free(j->job);
    j->job = NULL;
    j->cstate = COMPACT_IDLE;
  }
}

static void on_written(uv_work_t *w, int status);

/* threadpool: writes the whole group at its offset, then fdatasyncs it if asked. */
static void write_work(uv_work_t *w) {
  struct write_job *job = (struct write_job *)w;

  job->synced = false;
  job->rc = sl_io_pwrite_all(job->io, job->fd, job->buf, job->len, job->off);
  /* Zeros ahead of the frames, synced with this group: the groups after it
   * overwrite blocks the file has, so their fdatasync writes data only, not
   * the inode's new size too (as the spool's preallocated segments do). */
  if (job->rc == 0)
    job->rc = sl_io_pwrite_zeros(job->io, job->fd, job->zero_from, job->zero_to);
  if (job->rc != 0)
    return;
  if (job->sync) {
    int r = job->io->fdatasync(job->fd);
    if (r != 0) {
      job->rc = -errno;
      return;
    }
    job->synced = true;
  }
}

static void start_write(struct sl_ledger_journal *j) {
  struct write_job *job = &j->wjob;
  int rc;

  job->j = j;
  job->fd = j->fd;
  job->buf = (const uint8_t *)j->inflight.base;
  job->len = j->inflight.len;
  job->off = j->st.file_bytes;
  job->io = &j->io;
  job->zero_from = job->zero_to = 0;
  if (syncing(j) && job->off + job->len > j->alloc_end) {
    job->zero_from = job->off + job->len;
    job->zero_to = (job->zero_from / PREALLOC_STEP + 1) * PREALLOC_STEP;
  }
  /* The temp file of a compaction takes the appends from its catch-up on;
   * it is the journal only once renamed. */
  job->to_temp = j->cstate == COMPACT_CATCHUP || j->cstate == COMPACT_RENAME;
  /* Synced when somebody waits: a waiter, a compaction's rename, the close
   * (always, so that its CLOSED frame never reaches the disk before the
   * frames it vouches for). A spilled request's frames need no sync of their
   * own: its spool record holds its status and key, and an open after an
   * unclean stop rebuilds them from there (sl_ledger_journal_unclean). */
  job->sync = j->closing || (syncing(j) && (job->to_temp || !TAILQ_EMPTY(&j->waiters)));
  j->writing = true;
  rc = uv_queue_work(j->loop, &job->work, write_work, on_written);
  if (rc != 0) {
    j->writing = false;
    write_failed(j, rc);
  }
}

static void stop_group_handles(struct sl_ledger_journal *j) {
  if (j->check_open)
    uv_check_stop(&j->check);
  if (j->idle_open)
    uv_idle_stop(&j->idle);
}

static void flush(struct sl_ledger_journal *j) {
  struct sl_buf tmp;

  if (j->writing || (j->pending.len == 0 && !sync_owed(j)) || j->st.failed ||
      j->cstate == COMPACT_SWITCH)
    return;
  uv_timer_stop(&j->timer);
  stop_group_handles(j);
  tmp = j->inflight;
  j->inflight = j->pending;
  j->pending = tmp;
  sl_buf_reset(&j->pending);
  j->inflight_end = j->st.appended_bytes;
  start_write(j);
}

static void on_check(uv_check_t *h) {
  stop_group_handles(h->data);
  flush(h->data);
}

/* Frames appended before the poll phase (say from a timer) go before it:
 * an active idle handle also makes that poll return at once. */
static void on_idle(uv_idle_t *h) {
  stop_group_handles(h->data);
  flush(h->data);
}

/* Whether <pending> holds frames that an answer to a client waits for. */
static bool urgent(const struct sl_ledger_journal *j) { return j->urgent > j->inflight_end; }

/*
 * Arranges for <pending> to be written. Under a sync policy: at the end of
 * this loop iteration when an answer waits for its frames (a cancellation's,
 * sl_ledger_journal_flush), within sync_delay_ms while a waiter waits (the
 * drain's acks can wait that long, and a group every few ms instead of one
 * per iteration keeps the drain's cost down), else within flush_delay_ms.
 * Without one: flush_delay_ms.
 */
static void schedule_flush(struct sl_ledger_journal *j) {
  uint64_t delay = j->opts.flush_delay_ms;

  if (j->closing || j->pending.len == 0)
    return;
  /* A write in flight (or the switch waiting for it) flushes when it returns. */
  if (syncing(j) && (j->writing || j->cstate == COMPACT_SWITCH))
    return;
  if (syncing(j) && urgent(j)) {
    if (j->check_open && !uv_is_active((uv_handle_t *)&j->check)) {
      uv_check_start(&j->check, on_check);
      uv_idle_start(&j->idle, on_idle);
    }
    return;
  }
  if (syncing(j) && !TAILQ_EMPTY(&j->waiters))
    delay = j->opts.sync_delay_ms;
  if (!uv_is_active((uv_handle_t *)&j->timer) || uv_timer_get_due_in(&j->timer) > delay)
    uv_timer_start(&j->timer, on_timer, delay, 0);
}

/* Whether a compaction may start now. Not while a job that closes files
 * runs (<ops>): it may be about to unlink the temp file of the last one. */
static bool can_compact(const struct sl_ledger_journal *j) {
  return j->cstate == COMPACT_IDLE && !j->closing && !j->st.failed && !j->writing && j->ops == 0;
}

static void maybe_compact(struct sl_ledger_journal *j) {
  if (can_compact(j) && j->st.file_bytes >= j->compact_at)
    start_compaction(j);
}

static void on_written(uv_work_t *w, int status) {
  struct write_job *job = (struct write_job *)w;
  struct sl_ledger_journal *j = job->j;
  int rc = status != 0 ? status : job->rc;

  j->writing = false;
  if (job->synced)
    j->st.syncs++;
  if (rc != 0) {
    write_failed(j, rc);
    maybe_free(j);
    return;
  }
  j->st.file_bytes += job->len;
  if (job->zero_to > j->alloc_end)
    j->alloc_end = job->zero_to;
  if (j->st.file_bytes > j->alloc_end)
    j->alloc_end = j->st.file_bytes;
  sl_buf_reset(&j->inflight);
  j->written = j->inflight_end;
  if (job->to_temp) {
    j->synced_temp = j->inflight_end;
  } else if (job->synced || !syncing(j)) {
    j->durable = j->inflight_end;
    j->st.durable_bytes = j->durable;
  }
  if (j->cstate == COMPACT_SWITCH)
    switch_files(j);
  else if (j->cstate == COMPACT_CATCHUP)
    start_rename(j);
  maybe_compact(j);
  /* Group commit: what came in during this write goes now if an answer waits for it. */
  if (j->pending.len >= j->opts.flush_bytes || j->closing || (syncing(j) && urgent(j)) ||
      (syncing(j) && sync_owed(j)))
    flush(j);
  else
    schedule_flush(j);
  wake_waiters(j, 0); /* last: a waiter's callback may append and flush */
  maybe_free(j);
}

/* Queues <frame> for the file. Past max_pending_bytes it is dropped, unless <always>: a NAME
 * frame must never be lost while frames that use its id get through. */
static void append_frame(struct sl_ledger_journal *j, const uint8_t *frame, size_t len,
                         bool always) {
  if (j->st.failed) {
    j->st.dropped_records++;
    return;
  }
  if ((!always && j->pending.len + len > j->opts.max_pending_bytes) ||
      sl_buf_append(&j->pending, frame, len) != 0) {
    if (!j->warned_drop)
      sl_log_warn("ledger journal %s: %zu bytes wait for the disk: status changes are dropped "
                  "until it catches up",
                  j->path, j->pending.len);
    j->warned_drop = true;
    j->st.dropped_records++;
    return;
  }
  j->warned_drop = false;
  j->st.appended_records++;
  j->st.appended_bytes += len;
  if ((j->cstate == COMPACT_SNAPSHOT || j->cstate == COMPACT_SWITCH) && !j->capture_overflow) {
    if (j->capture.len + len > j->opts.max_pending_bytes ||
        sl_buf_append(&j->capture, frame, len) != 0) {
      j->capture_overflow = true; /* the compaction is abandoned when its job returns */
      sl_buf_dispose(&j->capture);
    }
  }
  if (j->pending.len >= j->opts.flush_bytes)
    flush(j);
  else
    schedule_flush(j);
}

static void append(struct sl_ledger_journal *j, const uint8_t *frame, size_t len) {
  append_frame(j, frame, len, false);
}

void sl_ledger_journal_flush(struct sl_ledger_journal *j) {
  j->urgent = j->st.appended_bytes;
  flush(j);
}

bool sl_ledger_journal_unclean(const struct sl_ledger *l) {
  return l->journal != NULL && !l->journal->st.clean_start;
}

uint64_t sl_ledger_journal_mark(const struct sl_ledger *l) {
  return l->journal != NULL ? l->journal->st.appended_bytes : 0;
}

int sl_ledger_journal_wait(struct sl_ledger *l, struct sl_ledger_journal_waiter *w, uint64_t mark,
                           sl_ledger_journal_wait_cb cb) {
  struct sl_ledger_journal *j = l->journal;

  w->j = NULL;
  if (j == NULL || !syncing(j) || j->st.failed || j->closing || mark <= j->durable)
    return 1;
  w->cb = cb;
  w->mark = mark;
  w->j = j;
  TAILQ_INSERT_TAIL(&j->waiters, w, link);
  /* Its frames were written unsynced (nobody waited then): a sync now, or
   * after the write in flight; else its group goes within sync_delay_ms. */
  if (mark <= j->written)
    flush(j);
  else
    schedule_flush(j);
  return 0;
}

void sl_ledger_journal_unwait(struct sl_ledger_journal_waiter *w) {
  if (w->j == NULL)
    return;
  TAILQ_REMOVE(&w->j->waiters, w, link);
  w->j = NULL;
}

void sl__journal_entry(struct sl_ledger_journal *j, const struct sl_ledger_entry *e) {
  uint8_t frame[FRAME_MAX];

  if (e->state != SL_LEDGER_INFLIGHT)
    append(j, frame, encode_entry(frame, e));
}

void sl__journal_entry_removed(struct sl_ledger_journal *j, const uint8_t id[16]) {
  uint8_t frame[FRAME_MAX];

  append(j, frame, encode_entry_remove(frame, id));
}

void sl__journal_key(struct sl_ledger_journal *j, uint16_t scope, const char *key, size_t key_len,
                     const uint8_t *id, uint64_t t_ms) {
  uint8_t frame[FRAME_MAX];

  append(j, frame, encode_key(frame, scope, key, key_len, id, id != NULL ? t_ms : 0));
}

size_t sl_ledger_journal_names(const struct sl_ledger_journal *j, const char *const **names) {
  *names = (const char *const *)j->names.v;
  return j->names.n;
}

int sl_ledger_journal_put_name(struct sl_ledger_journal *j, uint16_t id, const char *name) {
  uint8_t frame[FRAME_MAX];
  size_t len = strlen(name);

  if (len == 0 || len > SL_LEDGER_JOURNAL_NAME_MAX)
    return -EINVAL;
  append_frame(j, frame, encode_name(frame, id, name, len), true);
  return 0;
}

/* ---- run-time compaction ------------------------------------------------ */

/* threadpool: replays the file's first <limit> bytes into private structures
 * and writes their snapshot to the temp file. */
static void compact_work(uv_work_t *w) {
  struct compact_job *job = (struct compact_job *)w;
  struct sl_ledger *l = sl_ledger_create(job->ledger_capacity);
  struct sl_dedupe *d = sl_dedupe_create(job->dedupe_capacity, job->window_ms);
  struct loader ld = {.l = l, .d = d, .now_ms = job->now_ms};
  int fd = -1;

  job->fd = -1;
  job->bad_offset = -1;
  job->rc = l == NULL || d == NULL ? -ENOMEM : 0;
  if (job->rc == 0 && (fd = open(job->path, O_RDONLY | O_CLOEXEC)) < 0)
    job->rc = -errno;
  if (job->rc == 0)
    job->rc = load_fd(fd, job->limit, &ld, &job->bad_offset);
  if (fd >= 0)
    close(fd);
  if (job->rc == 0)
    job->rc =
        write_temp(&job->j->io, job->tmp_path, &ld.names, l, d, job->now_ms, &job->fd, &job->size);
  names_free(&ld.names);
  sl_ledger_destroy(l);
  sl_dedupe_destroy(d);
}

static void on_compacted(uv_work_t *w, int status) {
  struct compact_job *job = (struct compact_job *)w;
  struct sl_ledger_journal *j = job->j;
  int rc = status != 0 ? status : job->rc;

  j->ops--;
  if (rc == 0 && job->bad_offset >= 0)
    sl_log_warn("ledger journal %s: compaction stopped at an unreadable frame at offset %lld",
                j->path, (long long)job->bad_offset);
  if (rc != 0 || j->closing || j->capture_overflow || j->st.failed) {
    if (rc != 0)
      sl_log_warn("ledger journal %s: compaction failed: %s; retried after the file doubles",
                  j->path, uv_strerror(rc));
    if (job->fd >= 0)
      close_later(j, job->fd, -1, -1, job->tmp_path, false);
    j->compact_at =
        j->st.file_bytes +
        (j->compact_at > j->opts.compact_min_bytes ? j->compact_at : j->opts.compact_min_bytes);
    j->capture_overflow = false;
    sl_buf_reset(&j->capture);
    j->cstate = COMPACT_IDLE;
    free(job);
    maybe_free(j);
    return;
  }
  j->job = job;
  if (j->writing)
    j->cstate = COMPACT_SWITCH; /* on_write switches once the old file has its bytes */
  else
    switch_files(j);
}

static void start_compaction(struct sl_ledger_journal *j) {
  struct compact_job *job = calloc(1, sizeof(*job));

  sl_buf_reset(&j->capture);
  if (job == NULL || sl_buf_append(&j->capture, j->pending.base, j->pending.len) != 0) {
    free(job);
    return; /* tried again after the next write */
  }
  job->j = j;
  job->path = j->path;
  job->tmp_path = j->tmp_path;
  job->limit = j->st.file_bytes;
  job->ledger_capacity = sl_ledger_capacity(j->l);
  job->dedupe_capacity = j->d->capacity;
  job->window_ms = j->d->window_ms;
  job->now_ms = sl_clock_wall_ms();
  j->cstate = COMPACT_SNAPSHOT;
  j->capture_overflow = false;
  j->ops++;
  uv_queue_work(j->loop, &job->work, compact_work, on_compacted);
}

/* The snapshot is written and no write is in flight: the temp file takes
 * the appends, starting with what was appended since the snapshot's end. */
static void switch_files(struct sl_ledger_journal *j) {
  struct sl_buf tmp = j->pending;

  j->old_fd = j->fd;
  j->fd = j->job->fd;
  j->old_alloc_end = j->alloc_end;
  j->st.file_bytes = j->alloc_end = j->job->size;
  j->pending = j->capture; /* holds every byte of <pending> and those written since */
  j->capture = tmp;
  sl_buf_reset(&j->capture);
  j->cstate = COMPACT_CATCHUP;
  if (j->pending.len > 0 && !j->st.failed)
    flush(j);
  else
    start_rename(j);
}

/* threadpool: the compacted file replaces the journal, its name durable before the old
 * file's descriptor is let go (a rename lost in a power cut would bring back the old file,
 * whose appends since the snapshot went to the new one). */
static void rename_work(uv_work_t *w) {
  struct rename_job *job = (struct rename_job *)w;
  struct sl_ledger_journal *j = job->j;

  job->rc = sl_durable_rename(&j->io, -1, j->tmp_path, j->path);
}

static void on_renamed(uv_work_t *w, int status) {
  struct rename_job *rjob = (struct rename_job *)w;
  struct sl_ledger_journal *j = rjob->j;
  int rc = status != 0 ? status : rjob->rc;
  uint64_t size = j->job->size;

  j->ops--;
  if (rc < 0) {
    stop_journaling(j, "renaming the compacted journal", rc);
    abandon_switched(j);
    maybe_free(j);
    return;
  }
  close_later(j, j->old_fd, -1, -1, NULL, false);
  j->old_fd = -1;
  free(j->job);
  j->job = NULL;
  j->cstate = COMPACT_IDLE;
  j->st.compactions++;
  j->compact_at = size * 4 > j->opts.compact_min_bytes ? size * 4 : j->opts.compact_min_bytes;
  /* What was synced into the temp file is now the journal's. A write still
   * in flight was started as to_temp and moves <durable> when it returns. */
  if (j->synced_temp > j->durable) {
    j->durable = j->synced_temp;
    j->st.durable_bytes = j->durable;
    wake_waiters(j, 0);
  }
  if (j->writing)
    j->wjob.to_temp = false; /* the file is the journal now: its sync is enough */
  sl_log_info("ledger journal %s: compacted to %llu bytes", j->path, (unsigned long long)size);
  maybe_free(j);
}

static void start_rename(struct sl_ledger_journal *j) {
  int rc;

  j->cstate = COMPACT_RENAME;
  j->rjob.j = j;
  rc = uv_queue_work(j->loop, &j->rjob.work, rename_work, on_renamed);
  if (rc != 0) {
    stop_journaling(j, "renaming the compacted journal", rc);
    abandon_switched(j);
    return;
  }
  j->ops++;
}

void sl_ledger_journal_compact(struct sl_ledger_journal *j) {
  if (can_compact(j))
    start_compaction(j);
  else if (j->cstate == COMPACT_IDLE)
    j->compact_at = 0; /* after the write in flight */
}

/* ---- closing ------------------------------------------------------------ */

static void on_timer_closed(uv_handle_t *h) {
  struct sl_ledger_journal *j = h->data;

  j->timer_open = false;
  maybe_free(j);
}

static void on_check_closed(uv_handle_t *h) {
  struct sl_ledger_journal *j = h->data;

  if (h == (uv_handle_t *)&j->check)
    j->check_open = false;
  else
    j->idle_open = false;
  maybe_free(j);
}

static void maybe_free(struct sl_ledger_journal *j) {
  if (!j->closing || j->freeing || j->writing || j->ops > 0 || j->timer_open || j->check_open ||
      j->idle_open || j->cstate != COMPACT_IDLE)
    return;
  if (j->pending.len > 0 && !j->st.failed) {
    flush(j);
    if (j->writing)
      return;
  }
  /* Everything is written (and synced, under a policy); a waiter still here
   * waits for frames that were dropped or never made it. */
  wake_waiters(j, 0);
  wake_waiters(j, UV_ECANCELED);
  j->freeing = true;
  close_later(j, j->fd, j->old_fd, j->lock_fd, NULL, true);
}

void sl_ledger_journal_close(struct sl_ledger_journal *j) {
  uint8_t frame[FRAME_MAX];

  if (j == NULL || j->closing)
    return;
  /* The next open may trust the file alone only if it holds every frame
   * of this run: none dropped, no write failed. */
  if (!j->st.failed && j->st.dropped_records == 0)
    append_frame(j, frame, encode_closed(frame), true);
  j->closing = true;
  if (j->l->journal == j)
    j->l->journal = NULL;
  if (j->d->journal == j)
    j->d->journal = NULL;
  uv_close((uv_handle_t *)&j->timer, on_timer_closed);
  uv_close((uv_handle_t *)&j->check, on_check_closed);
  uv_close((uv_handle_t *)&j->idle, on_check_closed);
  flush(j);
}

void sl_ledger_journal_stats(const struct sl_ledger_journal *j,
                             struct sl_ledger_journal_stats *out) {
  *out = j->st;
  out->compacting = j->cstate != COMPACT_IDLE;
}

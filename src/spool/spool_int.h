/*
 * Spool internals shared by the src/spool sources and the spool unit tests.
 *
 * The on-disk format, its diagrams and its encoders are in format.h.
 *
 * Threads: struct sl_spool fields are grouped by who touches them: "owner" (the loop
 * thread that calls the public API), "writer" (the writer thread) and "shared" (under
 * <mu>). A struct sl__seg is shared under <mu> except the fields marked writer/owner.
 */
#ifndef SLUICE_SPOOL_INT_H
#define SLUICE_SPOOL_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <zstd.h>

#include "sluice/buf.h"
#include "sluice/endian.h"
#include "sluice/spool.h"
#include "spool/format.h"

/* One segment file of any store. */
struct sl__seg {
  int store;
  uint64_t seq;      /* unique across the spool's stores; the file name and checkpoint key */
  uint64_t start_ms; /* delay buckets: [start_ms, start_ms + width_ms) */
  uint64_t width_ms;
  char *path;
  unsigned refs; /* spool list + owner cursor/cache + items; freed at 0 once removed */

  /* writer */
  int wfd;        /* open for appending, -1 once sealed or not the writer's */
  uint64_t wsize; /* end of the last good unit written */
  uint32_t wnrec; /* ordinals used by units written */
  uint32_t wunits;
  uint64_t wmin_enq, wmax_enq;
  uint64_t zero_end; /* the file is zero-filled from wsize up to here (0: not preallocated) */

  /* shared under spool->mu */
  uint64_t committed; /* readable data end: units durable under the policy */
  uint32_t nrec;      /* ordinals in committed units */
  uint32_t nacked;    /* ordinals acked, dead-lettered, cancelled or lost */
  uint32_t ninflight;
  uint64_t file_bytes;
  uint64_t zeros; /* preallocated zeros beyond file_bytes, as counted in spool->prealloc_bytes */
  uint64_t min_enqueue_ms;
  /* Its share of spool->backlog_bytes (sl__seg_account_backlog). */
  uint64_t backlog;
  bool sealed;    /* takes no more appends */
  bool indexed;   /* delay bucket: its records are in the due index */
  bool done;      /* fully acked and sealed: will be deleted */
  bool done_ckpt; /* "done" is durable in a checkpoint: may be unlinked */
  bool removed;   /* unlinked; no longer in the spool's lists */
  uint8_t *ackbits;
  uint32_t ackcap; /* bits allocated */

  /* owner */
  int rfd; /* the owner's read descriptor, opened on demand */
};

/* A delayed record indexed in memory once its bucket has come due. */
struct sl__due {
  uint64_t due_ms;
  uint64_t enqueue_ms;
  struct sl__seg *seg;
  uint64_t unit_off;
  uint32_t ord;
};

struct sl_spool_item {
  struct sl_spool_record rec;
  struct sl__seg *seg;
  uint32_t ord;
  bool in_returned_enq; /* given back, and its enqueue time is in spool->returned_enq */
  struct sl_spool_item *next, *prev; /* in-flight list (owner) */
  size_t len;
  uint8_t data[]; /* the encoded record; rec points into it */
};

enum sl__op_type {
  SL__OP_APPEND,
  SL__OP_ACK,
  SL__OP_RETRY,
  SL__OP_DEAD,
  SL__OP_REDRIVE,
  SL__OP_PURGE,
  SL__OP_BARRIER,
};

struct sl__op {
  struct sl__op *next;
  enum sl__op_type type;
  sl_spool_done_cb cb;
  void *arg;
  int status;
  int store;       /* APPEND/RETRY/DEAD: target store of the new copy */
  uint64_t due_ms; /* delay store target */
  uint64_t enqueue_ms;
  uint64_t queued_ns;
  struct sl_spool_item *item; /* ACK/RETRY/DEAD: the original */
  uint8_t id[16];             /* REDRIVE/PURGE */
  bool all;
  /* set by the writer for appends */
  struct sl__seg *seg;
  uint32_t ord;
  uint64_t unit_off;
  void *stage;            /* writer: the group stage it is in */
  struct sl__seg *origin; /* RETRY/DEAD/redrive: settled once the copy is durable */
  uint32_t origin_ord;
  size_t len;
  uint8_t *data; /* encoded record, owned */
};

/*
 * One walk over the units and records of a segment, the only one: the ready cursor, the
 * delay-bucket indexer, the dead-letter moves and the scans all read a segment through it,
 * so they agree on which records a segment holds (segment.c).
 *
 * Its rules, those of recovery: a unit counts if its header and payload check out; a damaged
 * unit is stepped over (by its header's extent if that header checks out, else by a resync
 * to the next valid header); ordinals only go forward, so a valid unit whose first ordinal
 * is below the next expected one (a stray copy of a unit already read) or a footer amid the
 * data is stepped over; ordinals passed without being handed out are lost, never beyond
 * <nrec>, the ordinals of the units below the committed end walked (the writer's next unit
 * starts there). With SL__WALK_SETTLE the walk settles what it passes as lost, counts and
 * logs damage (readers); without, it only steps past (listings, moves).
 */
enum {
  SL__WALK_SETTLE = 1,       /* settle passed ordinals as lost, count corrupt units, log */
  SL__WALK_FOLLOW = 2,       /* take the committed end again before each unit (live log) */
  SL__WALK_SKIP_SETTLED = 4, /* step over a unit whose records are all settled on its header */
};

struct sl__walk {
  struct sl_spool *spool;
  struct sl__seg *seg;
  ZSTD_DCtx *dctx;
  int fd;      /* -1: opened on demand and closed by sl__walk_dispose */
  bool own_fd; /* the walk opened <fd> */
  unsigned flags;
  struct sl_buf *tmp, *blk; /* the caller's: a unit's payload, its decompressed records */
  uint64_t off;             /* the next unit */
  uint64_t end;             /* the committed end walked to */
  uint32_t nrec;            /* the ordinals of the units below <end> */
  bool sealed;              /* <seg> was sealed when <end> was taken */
  uint32_t next_ord;        /* ordinals below it are handed out, stepped over or lost */
  /* the unit loaded by sl__walk_unit */
  struct sl__unit u;
  uint64_t unit_off;
  uint32_t k; /* records of <u> already passed */
  size_t at;  /* byte offset of record <k> in <blk> */
};

struct sl__dict {
  uint32_t id;
  ZSTD_DDict *ddict;
};

struct sl__segvec {
  struct sl__seg **v;
  size_t n, cap;
};

/* A binary min-heap of fixed-size elements (heap.c). */
struct sl__heap {
  void *v;
  size_t n, cap;
};

/* A multiset of times that gives its minimum in O(1) (heap.c). */
struct sl__minset {
  struct sl__heap live; /* the times added */
  struct sl__heap gone; /* the times removed, still in <live> below its top */
};

struct sl_spool {
  struct sl_spool_opts opts;
  struct sl_io io; /* opts.io completed with the POSIX calls */
  char *dir;
  char name[64];
  int dirfd;
  int lockfd;

  pthread_mutex_t mu;
  pthread_cond_t wcond; /* wakes the writer */
  pthread_cond_t icond; /* wakes sl_spool_wait_idle */
  pthread_cond_t scond; /* wakes the syncer */
  pthread_cond_t sdone; /* the syncer finished its group */
  pthread_t writer, syncer;
  bool writer_started, syncer_started;

  /* shared under mu */
  struct sl__op *q_head, *q_tail; /* writer queue */
  uint64_t q_bytes;
  struct sl__op *c_head, *c_tail; /* completions for the owner */
  uint64_t ops_queued, ops_done;
  bool stopping;
  bool sync_stop;
  void *sync_job; /* the group the syncer is syncing (struct group in commit.c) */
  struct sl__segvec ready, dead, delay;
  uint64_t next_seq;
  /* The due index (heap.c): delayed records of due buckets, by due time; <due_set> holds those
   * found due, the enqueue times of which are in <due_enq>. */
  struct sl__heap due_pending, due_set;
  struct sl__minset due_enq;
  struct sl__dict *dicts;
  size_t ndicts;
  uint64_t disk_bytes;     /* segment (up to their data end), dictionary and checkpoint files */
  uint64_t prealloc_bytes; /* zero-filled tails of preallocated segment files, the spare's too */
  uint64_t ckpt_bytes;     /* the checkpoint file, counted in disk_bytes */
  uint64_t backlog_bytes;  /* the segments' shares of their data for unsettled records */
  uint64_t main_unacked, delay_unacked, dead_unacked;
  uint64_t inflight_main, inflight_delay;
  bool ack_dirty;
  uint64_t ack_dirty_ns;
  struct sl_spool_stats st;    /* counters part */
  struct sl__segvec graveyard; /* removed segments still referenced */
  /* The ready cursor has read all that was committed to the ready log and waits (reader.c,
   * cursor_wait); the writer's next commit to it sets <rtail_enq> to the enqueue time of its
   * first record, the next the cursor hands out (sl__seg_commit_locked). */
  bool rtail_wait;
  bool rtail_set;
  uint64_t rtail_enq;
  /* Between sl_spool_track_begin and _end: the ids of the records committed (commit.c,
   * group_finish). */
  bool tracking;
  bool track_oom; /* some could not be kept */
  uint8_t (*tracked)[16];
  size_t ntracked, track_cap;

  /* writer */
  void *pending; /* the group written and being synced, not yet finished */
  struct sl_buf wpool[34];
  unsigned nwpool;
  ZSTD_CCtx *cctx;
  ZSTD_CDict *cdict;       /* full units, at the configured level */
  ZSTD_CDict *cdict_small; /* units under 16 KiB, two levels higher */
  uint32_t cdict_id;
  ZSTD_DCtx *wdctx;
  struct sl_buf wraw, wcomp, wout;
  struct sl__op *ack_waiters; /* ops completing with the next checkpoint */
  uint64_t last_ckpt_ns;
  struct sl_buf samples;
  size_t *sample_sizes;
  unsigned nsamples;
  bool dict_done; /* trained, loaded, or gave up */
  pthread_t trainer;
  bool trainer_running;
  void *trained; /* shared: trainer result (malloc) */
  size_t trained_len;
  bool trained_ready;
  pthread_t preparer;
  bool preparer_running;
  struct sl__seg *spare;   /* shared: a preallocated ready segment, not yet in any list */
  uint64_t ready_seq_max;  /* highest sequence number ever given to a ready segment */
  uint64_t spare_seq;      /* the spare's number, taken before its preparer starts */
  uint64_t spare_after_ns; /* no new spare before this (after a failure: disk full?) */
  bool spare_ready;        /* shared: the preparer finished (spare may still be NULL) */

  /* owner */
  ZSTD_DCtx *dctx;
  struct sl_spool_item *inflight; /* list head */
  struct sl_spool_item *returned_head, *returned_tail;
  /* Of the items given back: how many are of the delay store, and their enqueue times. */
  uint64_t returned_delayed;
  struct sl__minset returned_enq;
  struct sl__seg *cur;       /* ready-log read cursor: the segment */
  struct sl__walk cwalk;     /* and the walk over it (valid while cur is set) */
  struct sl_buf blk;         /* decompressed unit at the cursor */
  struct sl__seg *cache_seg; /* delayed reads: last unit decompressed */
  uint64_t cache_off;
  struct sl_buf cache;
  uint32_t cache_first, cache_n;
  struct sl_buf rbuf;
};

/* The functions shared by the spool's files, under the file that defines each, bottom layer
 * first: a file calls only those of the blocks above its own. */

/* heap.c: the due index (the caller holds mu) */
/* Adds a delayed record of a due bucket to the index; without memory it is left out
 * (logged), to be indexed again after the next open. */
void sl__heap_push(struct sl_spool *spool, const struct sl__due *d);
/* Removes the record due first into <out> if one is due by <now>: true then. */
bool sl__due_take(struct sl_spool *spool, uint64_t now, struct sl__due *out);
/* The number of records due by <now>, and in <oldest> their oldest enqueue time (UINT64_MAX
 * if none): O(1), plus O(log n) for each record found due since the last call or take. */
uint64_t sl__due_count(struct sl_spool *spool, uint64_t now, uint64_t *oldest);
/* The due time of the record due first; UINT64_MAX if none. */
uint64_t sl__due_next_ms(const struct sl_spool *spool);
void sl__due_dispose(struct sl_spool *spool);
/* heap.c: minsets (the caller owns the set) */
/* Makes room to add <more> times; 0 or -ENOMEM. */
int sl__minset_reserve(struct sl__minset *s, size_t more);
/* Adds <t>, for which room was made. */
void sl__minset_add(struct sl__minset *s, uint64_t t);
/* Removes one <t>, which was added. */
void sl__minset_del(struct sl__minset *s, uint64_t t);
/* The least time; UINT64_MAX if none. */
uint64_t sl__minset_min(const struct sl__minset *s);
void sl__minset_dispose(struct sl__minset *s);

/* segment.c */
/* Returns the malloc'd path of a segment file in <dir> (NULL without memory). */
char *sl__seg_path(const char *dir, int store, uint64_t seq, uint64_t start_ms, uint64_t width_ms);
/* Parses a segment file name; 0, or -1 if <name> is not one. */
int sl__seg_parse_name(const char *name, int *store, uint64_t *seq, uint64_t *start_ms,
                       uint64_t *width_ms);
/* A new in-memory segment with one reference (the caller's), no file opened. */
struct sl__seg *sl__seg_new(int store, uint64_t seq, uint64_t start_ms, uint64_t width_ms,
                            const char *dir);
/* Drops a reference; the last one closes the descriptors and frees. Accepts NULL. Once the
 * writer and syncer run, the caller holds spool->mu. */
void sl__seg_unref(struct sl__seg *seg);
/* Opens and recovers an existing segment file (may truncate a torn tail). Returns 0, 1 if
 * the file holds nothing and should be deleted, SL_ESPOOL_CORRUPT for a bad segment header
 * (the caller leaves the file out), or a negative errno. <last>: the newest of its store,
 * kept open for appending. */
int sl__seg_recover(struct sl_spool *spool, struct sl__seg *seg, bool last);
/* Reads and checks a whole unit at <off> of <fd>, not beyond <end>, into <u>, its payload
 * into <tmp> and, for a block, the decompressed records into <out> (may be NULL). Returns 0,
 * SL_ESPOOL_CORRUPT (u->type is 0 when the header itself is bad, else the header's extent
 * can be trusted) or a negative errno. <dctx> belongs to the calling thread. */
int sl__unit_read(struct sl_spool *spool, ZSTD_DCtx *dctx, int fd, uint64_t off, uint64_t end,
                  struct sl__unit *u, struct sl_buf *tmp, struct sl_buf *out);
/* Finds the next offset > <off> where a valid unit header starts, below <end>; 0 if none. */
uint64_t sl__unit_resync(int fd, uint64_t off, uint64_t end);
/* Starts a walk over <seg> (whose reference the caller holds) from its first unit, up to
 * its committed end as of now (takes spool->mu). <fd>: the caller's descriptor, or -1 to
 * open one on demand. <tmp>, <blk>: the caller's buffers. <dctx> belongs to the calling
 * thread. <flags>: SL__WALK_*. */
void sl__walk_init(struct sl__walk *w, struct sl_spool *spool, struct sl__seg *seg, int fd,
                   ZSTD_DCtx *dctx, struct sl_buf *tmp, struct sl_buf *blk, unsigned flags);
/* Closes what the walk opened. Accepts a walk never started (seg NULL). */
void sl__walk_dispose(struct sl__walk *w);
/* Loads the next unit with records to hand out. Returns 1, 0 at the end walked to (with
 * SL__WALK_SETTLE the ordinals up to <nrec> not reached are settled as lost), or a
 * negative errno on an I/O error (the walk stays before that unit: retry later). */
int sl__walk_unit(struct sl__walk *w);
/* The next unsettled record of the loaded unit: 1 with its ordinal in <ord> and its
 * encoded bytes in <rp>/<rl> (inside the walk's <blk>, valid until the next unit), decoded
 * into <rec> if not NULL; 0 when the unit has no more. A record that cannot be decoded is
 * passed (with SL__WALK_SETTLE, lost), and so is the rest of a unit whose framing breaks. */
int sl__walk_record(struct sl__walk *w, uint32_t *ord, const uint8_t **rp, size_t *rl,
                    struct sl_spool_record *rec);
/* sl__walk_record, loading units as needed: 1 with a record, 0 at the end, or <0. */
int sl__walk_next(struct sl__walk *w, uint32_t *ord, const uint8_t **rp, size_t *rl,
                  struct sl_spool_record *rec);
/* Settles ordinal <ord> of <seg>: marks it acked, updates the counts and the checkpoint's
 * dirty state (caller holds mu). */
void sl__settle_locked(struct sl_spool *spool, struct sl__seg *seg, uint32_t ord);
/* Settles ordinals [from, to) of <seg> as lost, those below seg->nrec only (caller holds mu). */
void sl__seg_lose_locked(struct sl_spool *spool, struct sl__seg *seg, uint32_t from, uint32_t to);
/* Marks <seg> done if it is sealed and every record is settled (caller holds mu). */
void sl__seg_account_done(struct sl_spool *spool, struct sl__seg *seg);
/* Brings <seg>'s share of its data bytes for its unsettled records into
 * spool->backlog_bytes after its nrec, nacked or committed end changed (caller holds mu, or
 * the threads have not started). A done segment's share is 0, so removing it changes
 * nothing. */
void sl__seg_account_backlog(struct sl_spool *spool, struct sl__seg *seg);
/* The writer committed units of a group to <seg>: the ops of <ops> (<nops>) whose stage is
 * <stage>, in order. Accounts the backlog and, if the ready cursor waits at the end of the
 * ready log, keeps the enqueue time of the first of them for it (caller holds mu). */
void sl__seg_commit_locked(struct sl_spool *spool, struct sl__seg *seg, const void *stage,
                           struct sl__op **ops, size_t nops);
/* Ack bitmap of a segment; the caller holds spool->mu once the threads run. */
int sl__ack_grow(struct sl__seg *seg, uint32_t nbits);
bool sl__ack_test(const struct sl__seg *seg, uint32_t ord);
/* Sets the ack bit of <ord>; returns true if it was clear. */
bool sl__ack_set(struct sl__seg *seg, uint32_t ord);
/* The decompression dictionary with id <id>, or NULL. Takes spool->mu: call without it. */
ZSTD_DDict *sl__dict_find(struct sl_spool *spool, uint32_t id);
/* Reads delay bucket <seg> and puts its unsettled records in the due heap, then marks it
 * indexed. On an I/O error leaves it unindexed (retried later). Writer thread. */
int sl__bucket_index(struct sl_spool *spool, struct sl__seg *seg, ZSTD_DCtx *dctx,
                     struct sl_buf *tmp, struct sl_buf *blk);
void sl__segvec_push(struct sl__segvec *v, struct sl__seg *seg);
void sl__segvec_remove(struct sl__segvec *v, struct sl__seg *seg);
/* The wall clock used for due times: opts.now_ms or sl_clock_wall_ms(). */
uint64_t sl__now_ms(struct sl_spool *spool);
/* Brings <seg>'s count of preallocated zeros (zero_end past file_bytes) into
 * spool->prealloc_bytes after either changed. The caller holds mu, or the threads have not
 * started; it is the thread that owns <seg>'s zero_end (writer, preparer for the spare). */
static inline void sl__seg_account_zeros(struct sl_spool *spool, struct sl__seg *seg) {
  uint64_t z = seg->zero_end > seg->file_bytes ? seg->zero_end - seg->file_bytes : 0;

  spool->prealloc_bytes = spool->prealloc_bytes - seg->zeros + z;
  seg->zeros = z;
}

/* ckpt.c */
/* Replaces <dir>/<name> with <len> bytes: temp file, fdatasync, rename, directory fsync. */
int sl__write_file_atomic(struct sl_spool *spool, const char *name, const void *data, size_t len);
/* Writes the ack checkpoint (writer thread); marks "done" segments as durably done. */
int sl__ckpt_write(struct sl_spool *spool);
/* Applies the checkpoint to the recovered segments (open, before the threads start). */
int sl__ckpt_load(struct sl_spool *spool);

/* alloc.c (writer thread; sl__sys_err on any) */
/* -errno, or <fallback> when the call that failed did not set errno. */
int sl__sys_err(int fallback);
/* Creates a segment of <store> (a delay bucket: [<start>, <start> + <width>)) and adds it to
 * its list, which holds its reference; a ready segment is the prepared spare when there is a
 * usable one, and the next spare is started. Returns 0 with the segment in <out>, or a
 * negative errno. */
int sl__create_seg(struct sl_spool *spool, int store, uint64_t start, uint64_t width,
                   struct sl__seg **out);
/* Starts preparing the next ready segment on the preparer thread, unless one is being
 * prepared or waits, preallocation is off, free space is short or the spool is stopping. */
void sl__prepare_spare(struct sl_spool *spool);
/* Joins a preparer that finished, or with <wait> waits for it; returns its spare (in no list:
 * the caller adds or drops it), or NULL if none or if it is still busy. */
struct sl__seg *sl__collect_spare(struct sl_spool *spool, bool wait);
/* Deletes a spare that was never used and drops the caller's reference. */
void sl__drop_spare(struct sl_spool *spool, struct sl__seg *seg);

/* dict.c */
/* Installs the compression dictionary <dict> (<len> bytes, id <id>) for both unit sizes. */
int sl__cdicts_set(struct sl_spool *spool, const void *dict, size_t len, uint32_t id);
/* The compression level of small units (quiet times): two above the configured one. */
int sl__small_level(const struct sl_spool *spool);
/* Keeps a sample of an appended record while the dictionary still wants samples. */
void sl__dict_add_sample(struct sl_spool *spool, const uint8_t *data, size_t len);
/* Starts a training run once enough samples are in, or installs a finished one. */
void sl__dict_step(struct sl_spool *spool);

/* commit.c (writer thread, except the syncer's main) */
void *sl__syncer_main(void *arg);
/* Writes the append ops <ops> (<nops>) as group commits; with <wait>, returns once they are
 * durable (or failed: ops[i]->status); with <complete_ops>, completes them to the owner. */
void sl__write_copies(struct sl_spool *spool, struct sl__op **ops, size_t nops, bool wait,
                      bool complete_ops);
/* Finishes the group whose fdatasync is running on the syncer, waiting for it. Call it before
 * closing or cutting a segment's descriptor, and before anything that must come after every
 * append written so far. */
void sl__pipeline_flush(struct sl_spool *spool);
/* Seals <seg> (flushing the pipeline first): cuts its preallocated zeros, writes the footer
 * if <footer> (never for a delay bucket), closes its descriptor and takes no more appends. */
void sl__seal(struct sl_spool *spool, struct sl__seg *seg, bool footer);
/* Puts <op> on the owner's completion queue; the caller holds mu, then calls sl__notify. */
void sl__complete_locked(struct sl_spool *spool, struct sl__op *op);
/* Wakes the owner (its notify callback) and sl_spool_wait_idle. Takes mu: call without it. */
void sl__notify(struct sl_spool *spool);

/* dead.c */
/* Takes a reference on every dead-letter segment and lists them in <segs>, so that a walk
 * over them (listing, redrive, purge) can run without holding mu; the caller drops the
 * references. */
void sl__dead_pin(struct sl_spool *spool, struct sl__segvec *segs);
/* Redrives or purges the dead letters matching <op>; 0, SL_ESPOOL_NOTFOUND or an error.
 * Writer thread. */
int sl__dead_move(struct sl_spool *spool, struct sl__op *op);

/* reader.c */
/* Takes <it> off the owner's in-flight list. Owner thread. */
void sl__inflight_unlink(struct sl_spool *spool, struct sl_spool_item *it);
/* Loads the ready cursor's first unit (at open, before the threads start), so that stats
 * know the next ready record without reading; after an error the first take reads it. */
void sl__cursor_start(struct sl_spool *spool);
/* Enqueue time of the next record the ready cursor would return, without reading; 0 if
 * none. Owner thread, holding mu. */
uint64_t sl__ready_oldest_locked(struct sl_spool *spool);
/* Appends <it> to the items given back, which the next takes return first. Owner. */
void sl__returned_push(struct sl_spool *spool, struct sl_spool_item *it);

/* writer.c */
void *sl__writer_main(void *arg);

#endif

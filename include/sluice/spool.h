/*
 * The spool: one durable, compressed, crash-safe on-disk queue per upstream.
 *
 * A spool lives in one directory and holds three stores of records:
 *   - ready: a FIFO log of segment files, read by one cursor;
 *   - delayed: records with a not-before time in the future, kept in
 *     time-bucketed files and served in due-time order once due;
 *   - dead: dead letters, kept apart until redriven or purged.
 * The on-disk format, the recovery rules and the choice of compression are
 * described in docs/spool-format.md.
 *
 * Life of a record: sl_spool_append() queues it to the spool's writer thread
 * and returns at once; the completion callback runs (from
 * sl_spool_poll_completions()) only once the record is durable under the
 * fsync policy. sl_spool_take() hands out the next ready record as an item;
 * the caller settles every item exactly once with sl_spool_ack(),
 * sl_spool_retry(), sl_spool_dead() or sl_spool_release(). Several items may
 * be in flight at once and may be settled in any order. Delivery is
 * at-least-once: after a crash, records that were in flight (taken but whose
 * ack had not completed) are delivered again; acked records whose ack
 * completed never come back.
 *
 * Threads: every function here is called from one owner thread (the loop
 * that owns the spool), except where noted. Disk writes, fdatasync, segment
 * creation and deletion happen on the spool's own writer thread (pthreads);
 * when it has completions ready it calls <notify>(<notify_arg>) from the
 * writer thread, and the owner then calls sl_spool_poll_completions() on its
 * own thread, which runs the callbacks (a second spool thread runs the
 * fdatasyncs of the batch policy). Reads (sl_spool_take, dead-letter
 * listing) use pread on the owner thread: they normally hit the page cache.
 * sl_spool_scan, which reads everything, may run on another thread.
 * The spool core never includes uv.h.
 *
 * Memory does not grow with the backlog: per segment file a few hundred
 * bytes, per record in flight one item; only delayed records whose time
 * bucket has come due are indexed in memory.
 *
 * Per upstream and shared (sluice/loop.h): one spool per upstream, whichever
 * loop spills to it; its owner thread is the drain's.
 */
#ifndef SLUICE_SPOOL_H
#define SLUICE_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sluice/error.h" /* the spool's own codes, SL_ESPOOL_*, and sl_strerror() */
#include "sluice/io.h"

enum sl_spool_fsync {
  SL_SPOOL_FSYNC_ALWAYS, /* each append gets its own fdatasync before it completes */
  SL_SPOOL_FSYNC_BATCH,  /* group commit: appends queued together share one fdatasync */
  SL_SPOOL_FSYNC_OFF,    /* complete after write(2): the page cache, lost on power failure */
};

/*
 * A view of one record. For sl_spool_append() the caller fills it and keeps
 * the pointed-to bytes valid only for the duration of the call (the spool
 * copies them). Records handed out by the spool point into memory owned by
 * the item (or valid during a callback): see each function.
 *
 * <headers> is an opaque block: the proxy decides how it serialises the
 * request's header fields into it; the spool stores it byte for byte.
 */
struct sl_spool_record {
  uint8_t id[16];         /* request id, random; copies made by retries keep it */
  uint64_t enqueue_ms;    /* wall clock at first acceptance, ms since the epoch */
  uint64_t not_before_ms; /* wall clock; 0 or <= now means ready at once */
  uint32_t attempts;      /* delivery attempts made so far */
  const char *method;
  size_t method_len;
  const char *target;
  size_t target_len;
  const char *headers;
  size_t headers_len;
  const char *body;
  size_t body_len;
  const char *error; /* dead letters: the last error; otherwise empty */
  size_t error_len;
};

/* Largest encoded record accepted by sl_spool_append (method + target + headers + body + 56). */
#define SL_SPOOL_RECORD_MAX (64u * 1024 * 1024)

typedef void (*sl_spool_notify_cb)(void *arg);
typedef void (*sl_spool_done_cb)(void *arg, int status);

struct sl_spool_opts {
  const char *name;            /* for log lines, e.g. the upstream name */
  enum sl_spool_fsync fsync;   /* default batch */
  uint64_t sync_delay_us;      /* batch: how long a group may wait to grow before its
                                  fdatasync; 0 (default) starts it as soon as the previous
                                  one returned, which gives natural group commit */
  size_t batch_bytes;          /* batch: a group is closed at this many raw bytes; 1 MiB */
  uint64_t max_bytes;          /* bytes on disk plus queued; 0 = no limit */
  uint64_t segment_bytes;      /* ready/dead segment size before rolling; 64 MiB */
  bool preallocate;            /* write ready segments into files zero-filled in advance
                                  (faster group syncs); default true, unless fsync is off */
  bool batch_appends;          /* appends do not wake the writer; the owner calls
                                  sl_spool_flush() once it has queued a batch (once per
                                  event-loop iteration): bigger groups and one wake-up per
                                  batch instead of per record. Default false */
  size_t block_bytes;          /* raw bytes per compressed unit; 64 KiB */
  int compression_level;       /* zstd level; default 1; 0 stores uncompressed */
  unsigned dict_train_records; /* train a dictionary on the first N records; 0 = never;
                                  default 2000 */
  size_t dict_bytes;           /* dictionary size; default 32 KiB */
  uint64_t ack_interval_us;    /* acks share one checkpoint write within this; 2 ms */
  sl_spool_notify_cb notify;   /* called on the writer thread when completions wait */
  /* Called on a spool thread after each group fdatasync with its duration in
   * ns (for a latency histogram); must be thread-safe and quick. NULL: none. */
  void (*on_fsync)(void *arg, uint64_t ns);
  void *fsync_arg;
  void *notify_arg;
  /* Every write-side call, the creation of files and directories and every
   * fsync go through <io> (sluice/io.h), so tests can inject ENOSPC and EIO or
   * build crash states; NULL members (or NULL) mean the POSIX calls. */
  const struct sl_io *io;
  uint64_t (*now_ms)(void *arg); /* wall clock for due times; NULL: sl_clock_wall_ms */
  void *clock_arg;
};

/* Fills <opts> with the defaults above. */
void sl_spool_opts_init(struct sl_spool_opts *opts);

struct sl_spool;
struct sl_spool_item;

/*
 * Opens (creating if needed) the spool in directory <dir> and recovers it:
 * cuts a torn tail at the last valid unit, skips corrupted units (logged and
 * counted), rebuilds counts and sizes, applies the ack checkpoint, reads the
 * first unit of the ready log still to deliver (for the stats) and starts
 * the writer thread. <opts> is copied. On success stores the spool in <out>
 * and returns 0; otherwise a negative code (SL_ESPOOL_LOCKED if another
 * process holds the directory). It blocks for as long as recovery takes, so
 * it may run on another thread than the owner's (a threadpool job) provided
 * that the hand-over of <out> to the owner synchronizes, as a mutex or
 * uv_queue_work's completion does.
 * @thread any, then owner
 */
int sl_spool_open(const char *dir, const struct sl_spool_opts *opts, struct sl_spool **out);

/*
 * Replaces opts.notify, opts.on_fsync and their arguments, for a spool
 * opened on another thread (a reload opens spools on the threadpool) whose
 * owner is only known afterwards. The spool's threads read them under its
 * lock, so this may be called while they run; notifications and fsyncs
 * before the call went to the old ones.
 * @thread owner
 */
void sl_spool_set_notify(struct sl_spool *spool, sl_spool_notify_cb notify, void *notify_arg,
                         void (*on_fsync)(void *arg, uint64_t ns), void *fsync_arg);

/*
 * Replaces opts.max_bytes (a reload changed the limit): appends from now on
 * are refused with SL_ESPOOL_FULL against <max_bytes>; nothing stored is
 * removed when the spool is already above it.
 * @thread owner
 */
void sl_spool_set_max_bytes(struct sl_spool *spool, uint64_t max_bytes);

/*
 * Stops accepting work, lets the writer finish every queued operation and
 * write a final checkpoint, runs the pending completion callbacks, then frees
 * the spool. Items still in flight are released (delivered again after the
 * next open). Accepts NULL.
 * @thread owner
 */
void sl_spool_close(struct sl_spool *spool);

/*
 * Queues <rec> (copied) for appending. A record whose not_before_ms is in
 * the future goes to the delayed store, otherwise to the ready log. <cb>
 * (may be NULL) runs from sl_spool_poll_completions() with status 0 once the
 * record is durable under the fsync policy, or with a negative code (-ENOSPC,
 * -EIO, ...) if it could not be written; then the record is not in the spool.
 * Returns 0 if queued (the callback will run exactly once), or at once
 * SL_ESPOOL_FULL, SL_ESPOOL_TOOBIG, SL_ESPOOL_CLOSED or -ENOMEM (the callback
 * will not run).
 * @thread owner
 */
int sl_spool_append(struct sl_spool *spool, const struct sl_spool_record *rec, sl_spool_done_cb cb,
                    void *arg);

/*
 * Hands the appends queued since the last call to the writer (with
 * opts.batch_appends; without it every append does so itself). Appends left
 * unflushed still go out, at the writer's next housekeeping wake-up (within
 * a second).
 * @thread owner
 */
void sl_spool_flush(struct sl_spool *spool);

/*
 * Runs the callbacks of every completed operation. The owner calls it after
 * <notify> fired (e.g. from a uv_async callback) and may call it any time.
 * Returns the number of callbacks run.
 * @thread owner
 */
int sl_spool_poll_completions(struct sl_spool *spool);

/*
 * Blocks until every operation queued so far has completed (callbacks not
 * yet run: call sl_spool_poll_completions() after). For tests, benchmarks
 * and shutdown; never call it from a loop that must stay responsive.
 * @thread owner
 */
void sl_spool_wait_idle(struct sl_spool *spool);

/*
 * Takes the next record to deliver: first records given back with
 * sl_spool_release(), then due delayed records in due-time order, then the
 * ready log in FIFO order. Stores an item in <out>, or NULL when nothing is
 * ready now (see sl_spool_next_due_ms). Returns 0, or a negative code on an
 * I/O error reading the spool (corrupted units are skipped, not errors).
 * The caller owns the item until it settles it with exactly one of
 * sl_spool_ack/retry/dead/release.
 * @thread owner
 */
int sl_spool_take(struct sl_spool *spool, struct sl_spool_item **out);

/* The record of <item>; valid until the item is settled. */
const struct sl_spool_record *sl_spool_item_record(const struct sl_spool_item *item);

/*
 * Marks the record of <item> delivered and frees the item. <cb> (may be NULL)
 * runs once the ack is durable in the checkpoint. Returns 0.
 * @thread owner
 */
int sl_spool_ack(struct sl_spool *spool, struct sl_spool_item *item, sl_spool_done_cb cb,
                 void *arg);

/*
 * Gives the record back to be delivered again not before <not_before_ms>
 * (wall clock), with its attempts count plus one. The spool stores the new
 * copy durably, then acks the original; <cb> runs after both. On failure
 * the record is given back as by sl_spool_release. The item is consumed.
 * @thread owner
 */
int sl_spool_retry(struct sl_spool *spool, struct sl_spool_item *item, uint64_t not_before_ms,
                   sl_spool_done_cb cb, void *arg);

/*
 * Moves the record to the dead-letter store with <error> (NUL-terminated,
 * copied) as its last error, then acks the original; <cb> runs after both.
 * On failure the record is given back as by sl_spool_release. The item is
 * consumed.
 * @thread owner
 */
int sl_spool_dead(struct sl_spool *spool, struct sl_spool_item *item, const char *error,
                  sl_spool_done_cb cb, void *arg);

/* Gives the record back unchanged: the next sl_spool_take returns it first. */
void sl_spool_release(struct sl_spool *spool, struct sl_spool_item *item);

/* Wall-clock ms at which the earliest delayed record becomes due; UINT64_MAX if none. */
uint64_t sl_spool_next_due_ms(struct sl_spool *spool);

/*
 * Calls <cb>(<arg>, rec) for each dead letter (rec->error holds its last
 * error; the view is valid during the call only), oldest first, until <cb>
 * returns non-zero. Reads the dead store synchronously. Returns 0 or a
 * negative code.
 * @thread owner
 */
int sl_spool_dead_list(struct sl_spool *spool,
                       int (*cb)(void *arg, const struct sl_spool_record *rec), void *arg);

/*
 * Calls <cb>(<arg>, rec) for every record the spool holds and has not
 * settled, in all three stores (ready, delayed, dead; records taken and in
 * flight included), until <cb> returns non-zero. The view is valid during
 * the call only. Reads and decompresses the whole spool: it is for the rare
 * reconciliation after records were lost to damage, and is meant to run off
 * the owner's loop (a threadpool). It may run on any one thread while the
 * owner, the writer and the syncer go on; the caller keeps the spool open
 * until it returns. Returns 0 or a negative code.
 *
 * The scan is not a snapshot: a record moved while it runs (a retry, a
 * dead-letter move or a redrive writes the copy, then settles the original)
 * can have its copy written behind the scan and its original settled ahead
 * of it, and a new append can land behind it. Whoever needs every record
 * held at some later moment brackets the scan with sl_spool_track_begin()
 * and sl_spool_track_end() and adds the ids those return.
 * @thread any
 */
int sl_spool_scan(struct sl_spool *spool, int (*cb)(void *arg, const struct sl_spool_record *rec),
                  void *arg);

/*
 * Starts keeping the id of every record the spool commits from now on
 * (appends and the copies of retries, dead-letter moves and redrives), for
 * a scan that starts after this call. A record held when
 * sl_spool_track_end() is called was then either read by that scan or
 * committed since this call. One tracking at a time; a new begin drops the
 * ids kept so far.
 * @thread owner
 */
void sl_spool_track_begin(struct sl_spool *spool);

/*
 * Stops keeping ids and calls <cb>(<arg>, id) (if <cb> is not NULL) for each
 * one kept since sl_spool_track_begin(). Returns 0, or -ENOMEM if memory ran
 * out and some ids were not kept (the caller cannot trust the set).
 * @thread owner
 */
int sl_spool_track_end(struct sl_spool *spool, void (*cb)(void *arg, const uint8_t id[16]),
                       void *arg);

/* Records lost to damaged units since open (stats' lost_records), cheaply.
 * @thread owner */
uint64_t sl_spool_lost_records(struct sl_spool *spool);

/*
 * Redrive: appends the dead letter with id <id> (16 bytes), or every dead
 * letter if <id> is NULL, back to the ready log with attempts reset to 0,
 * then removes it from the dead store. Purge: removes without appending.
 * Both run on the writer thread; <cb> gets 0, SL_ESPOOL_NOTFOUND (no such
 * id) or a negative I/O code. Returns 0 if queued.
 * @thread owner
 */
int sl_spool_dead_redrive(struct sl_spool *spool, const uint8_t *id, sl_spool_done_cb cb,
                          void *arg);
int sl_spool_dead_purge(struct sl_spool *spool, const uint8_t *id, sl_spool_done_cb cb, void *arg);

struct sl_spool_stats {
  uint64_t ready;                    /* records that can be taken now */
  uint64_t delayed;                  /* records waiting for their not-before time */
  uint64_t inflight;                 /* taken and not settled */
  uint64_t dead;                     /* dead letters */
  uint64_t disk_bytes;               /* segment, dictionary and checkpoint files, without the
                                        zeros of preallocated segments: what max_bytes limits */
  uint64_t prealloc_bytes;           /* zero-filled bytes of preallocated segment files beyond
                                        their data (the current segment's tail and the spare) */
  uint64_t backlog_bytes;            /* segment bytes of records not yet settled (ready, delayed,
                                        in flight, dead letters): each unit is compressed as a
                                        whole, so a segment's data bytes are shared out evenly
                                        among its records */
  uint64_t oldest_ready_ms;          /* enqueue time of the oldest ready record; 0 if none */
  uint64_t raw_bytes_written;        /* encoded record bytes appended, since open */
  uint64_t compressed_bytes_written; /* bytes of units written for them, since open */
  uint64_t appends;                  /* records appended durably, since open */
  uint64_t fsyncs;                   /* fdatasync calls on segment files, since open */
  uint64_t checkpoints;              /* ack checkpoints written, since open */
  uint64_t corrupt_units;            /* units skipped as corrupt, since open */
  uint64_t torn_tails;               /* torn tails cut at open */
  uint64_t lost_records;             /* records inside corrupt units, since open */
  uint64_t segments;                 /* segment files */
  int last_error;                    /* last write-side error, 0 once writes succeed again */
};

/*
 * Fills <st>. Cost: O(1) under the spool's mutex, and no I/O. The figures are kept up to date
 * as the writer commits and the owner takes and settles: backlog_bytes by each segment's share
 * as it changes, the due delayed records in a set of their own (counted, with their oldest
 * enqueue time). A call only moves into that set the delayed records that came due since the
 * last call or take, O(log n) for each, once.
 *
 * oldest_ready_ms is the oldest of three enqueue times: that of the next record the ready
 * cursor hands out (the ready log is read in append order), the oldest among the due delayed
 * records, and the oldest among the records given back (sl_spool_release, a failed retry or
 * dead-letter move). The first is known without reading: the take that uses up a unit of the
 * ready log reads the next one, and once the cursor has read all that is committed, the writer
 * tells it the time of the first record it commits after. After a reopen it is the same: the
 * open reads the cursor's first unit, the first one holding a record not yet settled, and the
 * figure is that unit's first record (which may itself have been delivered before: units are
 * skipped whole). Only after an error reading the ready log, until a take reads it, does the
 * figure stand at the oldest enqueue time recorded for the segment the cursor reads (its
 * settled records included): a lower bound there.
 * @thread owner
 */
void sl_spool_stats(struct sl_spool *spool, struct sl_spool_stats *st);

#endif

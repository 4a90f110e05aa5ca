/*
 * Ledger journal: makes the status ledger and the Idempotency-Key index
 * survive a restart, kill -9 included, and under spool.fsync "batch" or
 * "always" a power cut.
 *
 * The journal is an append-only file of framed records, <spool dir>/ledger.journal
 * (format in docs/spool-format.md, "The ledger journal"): a ledger entry
 * for each status change except the passage through in flight, an
 * Idempotency-Key when one is put and when one is taken back. At startup it
 * is read back into the ledger and the key index in order, up to the first
 * frame that is torn or fails its CRC32C, and rewritten with only what they
 * hold (temp file, fsync, rename), so the file never grows with history.
 *
 * Guarantees follow the spool's fsync policy (opts.sync, from spool.fsync).
 * Frames are buffered on the loop and written on libuv's threadpool, one
 * write at a time, so whatever comes in while one write is under way goes
 * out as the next group (group commit):
 *   - SYNC_BATCH and SYNC_ALWAYS: a group is fdatasynced when somebody waits
 *     for frames in it (sl_ledger_journal_wait): the drain acks a delivered
 *     record in the spool only once its "delivered" frame is durable, so
 *     that after a power cut every record the spool no longer holds has its
 *     final state in the journal; a cancellation is answered once its frame
 *     is. Such a group goes within sync_delay_ms (2 ms, the spool's ack
 *     interval), so that a drain at full speed costs a few hundred
 *     fdatasyncs a second rather than one per loop iteration. Frames nobody
 *     waits for (a spilled request's "queued" and Idempotency-Key, retries)
 *     are written within flush_delay_ms and become durable with the next
 *     synced group: the spool record of a spilled request holds its id, its
 *     times and its key, and after an unclean stop the drains rebuild what
 *     the journal lacks from their spools (sl_ledger_journal_unclean), so
 *     its 202 waits for the spool's fdatasync alone. ALWAYS commits in
 *     groups too: each frame is still fsynced before the answer that
 *     depends on it, which is what the policy promises.
 *   - SYNC_OFF: no fdatasync; a group is written flush_delay_ms (10 ms) after
 *     its first frame or once flush_bytes (64 KiB) wait, as before the policy
 *     existed. A process crash (kill -9) keeps every write made and loses at
 *     most the last ~10 ms of status; a power loss may lose what the page
 *     cache held (docs/spool-format.md says what that leaves stale).
 * A failed write or fdatasync stops the journal until the next restart (with
 * an error line): statuses are then no longer durable, the spool still is.
 *
 * Size. The file is compacted at run time once it passes max(compact_min_bytes,
 * 4 x its size after the last compaction): a threadpool job replays the file
 * up to the current end into private copies of the ledger and the key index
 * and writes their snapshot to a temp file, while the loop goes on appending
 * and keeps a copy of what it appends meanwhile; then the loop appends that
 * copy to the temp file and renames it over the journal. The loop never
 * walks the ledger (a million entries would stall it for tens of ms): the
 * price is memory, a second ledger and key index for the job's duration. A
 * snapshot is at most what the ledger and key index can hold (about 60 bytes
 * per entry, 32 plus the key per Idempotency-Key), so the file stays under 4
 * times that, and the bytes rewritten stay under a third of those appended.
 *
 * Per process and shared (sluice/loop.h), as the ledger it journals.
 *
 * @thread loop: everything runs on the loop given to sl_ledger_journal_open,
 * except the file I/O, which runs on libuv's threadpool. Open is blocking
 * and must run before the loop serves anything.
 */
#ifndef SLUICE_LEDGER_JOURNAL_H
#define SLUICE_LEDGER_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

#include <uv.h>

#include "sluice/io.h"
#include "sluice/ledger.h"

/* The file name of the journal inside the spool directory. */
#define SL_LEDGER_JOURNAL_FILE "ledger.journal"

/* The journal's own error code, SL_ELEDGER_LOCKED, is in sluice/error.h (through ledger.h). */

struct sl_ledger_journal;

/* When the journal's writes are made durable: the spool's policy (spool.fsync). */
enum sl_ledger_journal_sync {
  SL_LEDGER_JOURNAL_SYNC_BATCH,  /* group commit: write + fdatasync per group (default) */
  SL_LEDGER_JOURNAL_SYNC_ALWAYS, /* the same: a group commit fsyncs every frame in it */
  SL_LEDGER_JOURNAL_SYNC_OFF     /* written within flush_delay_ms, never fsynced */
};

struct sl_ledger_journal_opts {
  enum sl_ledger_journal_sync sync; /* default batch */
  size_t flush_bytes;               /* write as soon as this much is buffered (64 KiB) */
  uint64_t flush_delay_ms;    /* sync off: else this long after the first buffered record (10) */
  uint64_t sync_delay_ms;     /* sync policy: frames no answer waits for (deliveries, retries) are
                                 grouped this long (2); a spilled request's go at the end of the
                                 loop iteration (sl_ledger_journal_note) */
  uint64_t compact_min_bytes; /* no run-time compaction below this file size (16 MiB) */
  size_t max_pending_bytes;   /* records beyond this while the disk lags are dropped (64 MiB) */
  /* Every file and directory operation of the journal (creating it, its lock and its temp
   * file, the group commit's writes and fdatasyncs on the threadpool, renames and directory
   * fsyncs) goes through <io> (sluice/io.h), so that tests can count and fail them and build
   * crash states; NULL (default), or a NULL member: the POSIX call. */
  const struct sl_io *io;
};

/* Fills <opts> with the defaults above. */
void sl_ledger_journal_opts_init(struct sl_ledger_journal_opts *opts);

/* Counters, for logs, tests and the cost estimate in the docs. */
struct sl_ledger_journal_stats {
  uint64_t file_bytes;       /* size of the journal file, written and in flight excluded */
  uint64_t appended_bytes;   /* frames appended since open (file bytes, framing included) */
  uint64_t appended_records; /* frames appended since open */
  uint64_t dropped_records;  /* not journaled: buffer over max_pending_bytes or a write error */
  uint64_t compactions;      /* run-time compactions completed */
  int compacting;            /* 1 while a run-time compaction is under way */
  uint64_t loaded_entries;   /* ledger entries read at open */
  uint64_t loaded_keys;      /* Idempotency-Key records read at open and still in the window */
  uint64_t expired_keys;     /* Idempotency-Key records read at open and skipped as expired */
  int64_t bad_offset;        /* offset of the frame where the load stopped, -1 if none */
  int failed;                /* 1 once a write failed: nothing more is journaled */
  uint64_t syncs;            /* fdatasync calls of the group commit, since open */
  int clean_start;           /* 1 if the file read at open ended with a clean close */
  uint64_t durable_bytes;    /* appended_bytes known durable (under a sync policy) */
};

/*
 * Opens the journal at <path> (created if missing) for ledger <l> and key
 * index <d>, both empty: reads it into them, expiring keys against <now_ms>
 * and the key index's window, renumbers the queued entries (below), writes
 * the compacted file (temp file, fsync, rename, fsync of the directory) and
 * attaches itself to <l> and <d>, so that every change made to them from then
 * on (sl_ledger_put, sl_ledger_remove, sl_dedupe_put, sl_dedupe_remove: the
 * hook is in them, no caller can skip it) is recorded; in-flight states
 * are not (after a restart an in-flight record is queued again, and skipping
 * them saves a third of the writes). <opts> may be NULL for the defaults.
 * Blocking: call it before the loop runs. The directory of <path> is created if missing.
 *
 * Queued entries carry the drain's acceptance sequence number, which counts
 * from the spool's backlog again after a restart. So that positions stay
 * sensible, the loaded queued entries of each upstream are renumbered 1, 2,
 * ... in their old order: the drain starts counting new ones after the
 * backlog, and a reloaded entry's position is its rank in the backlog minus
 * what has been delivered since.
 *
 * A torn or corrupt frame is not an error: the load stops there with a
 * warning that names the offset, and the compaction drops the rest. Returns 0
 * and sets <*out>, SL_ELEDGER_LOCKED if another process holds the journal
 * (a second sluice on the same spool directory), or a negative errno; <l> and
 * <d> may then hold part of the file.
 */
int sl_ledger_journal_open(uv_loop_t *loop, const char *path, struct sl_ledger *l,
                           struct sl_dedupe *d, uint64_t now_ms,
                           const struct sl_ledger_journal_opts *opts,
                           struct sl_ledger_journal **out);

/*
 * Detaches <j> from its ledger and key index, writes what is buffered with a
 * CLOSED frame after it (unless frames were dropped or a write failed),
 * fdatasyncs it whatever the policy, and frees <j> once every write, a run-time compaction in
 * progress included, has finished: the loop must run on until then (uv_run returns only after).
 * Accepts NULL.
 */
void sl_ledger_journal_close(struct sl_ledger_journal *j);

/* Longest upstream name a NAME record holds. */
#define SL_LEDGER_JOURNAL_NAME_MAX 128

/*
 * Upstream ids. Status entries (their <upstream>) and Idempotency-Keys (their
 * scope) carry a 16-bit upstream id; the owner gives each upstream name an id
 * once and records it with sl_ledger_journal_put_name(), so that an id read
 * back after a restart means the same upstream even if the config's
 * upstreams were reordered, added or removed meanwhile. After open,
 * sl_ledger_journal_names() gives the names read from the file, by id (NULL
 * where an id has none); the array stays valid until close. put_name returns
 * 0, or -EINVAL for a name that is empty or over SL_LEDGER_JOURNAL_NAME_MAX.
 */
size_t sl_ledger_journal_names(const struct sl_ledger_journal *j, const char *const **names);
int sl_ledger_journal_put_name(struct sl_ledger_journal *j, uint16_t id, const char *name);

/*
 * Waiting for durability. sl_ledger_journal_mark() returns a mark for every
 * frame appended to <l>'s journal so far (the key index shares it);
 * sl_ledger_journal_wait() then runs <cb>(<w>, status) on the loop once
 * those frames are durable: written and fdatasynced under SYNC_BATCH or
 * SYNC_ALWAYS, and, during a run-time compaction, in the file that bears the
 * journal's name (its rename and the directory fsync done). status is 0, or
 * a negative errno when the journal failed or closed first: the frames may
 * then be lost in a power cut (the journal logged why).
 *
 * wait returns 0 when <cb> will run; 1 when there is nothing to wait for
 * (no journal, SYNC_OFF, a failed journal, or the frames are durable
 * already): <cb> is then never called and the caller goes on at once. <w>
 * is the caller's and must stay alive until <cb> ran or
 * sl_ledger_journal_unwait(<w>) took it back (which accepts a <w> that is
 * not waiting). Once the journal is closed, wait returns 1.
 *
 * @thread loop
 */
struct sl_ledger_journal_waiter;
typedef void (*sl_ledger_journal_wait_cb)(struct sl_ledger_journal_waiter *w, int status);

struct sl_ledger_journal_waiter {
  sl_ledger_journal_wait_cb cb;
  /* private */
  struct sl_ledger_journal *j; /* while waiting, else NULL */
  uint64_t mark;
  TAILQ_ENTRY(sl_ledger_journal_waiter) link;
};

uint64_t sl_ledger_journal_mark(const struct sl_ledger *l);
int sl_ledger_journal_wait(struct sl_ledger *l, struct sl_ledger_journal_waiter *w, uint64_t mark,
                           sl_ledger_journal_wait_cb cb);
void sl_ledger_journal_unwait(struct sl_ledger_journal_waiter *w);

/*
 * Whether <l>'s statuses and Idempotency-Keys may lack some of spilled
 * requests: its journal was not closed cleanly by the last run (a crash, a
 * power cut, kill -9, a missing file, frames dropped or a failed write), so
 * frames written without a sync of their own may be gone. The drains then
 * rebuild them from their spools' records (sluice/recover.h). false without
 * a journal.
 */
bool sl_ledger_journal_unclean(const struct sl_ledger *l);

/* Starts writing the buffer now instead of at the next timer tick. */
void sl_ledger_journal_flush(struct sl_ledger_journal *j);

/* Starts a run-time compaction now, if none is running (for tests; the
 * journal starts one by itself when the file passes its bound). */
void sl_ledger_journal_compact(struct sl_ledger_journal *j);

/* Copies <j>'s counters into <out>. */
void sl_ledger_journal_stats(const struct sl_ledger_journal *j,
                             struct sl_ledger_journal_stats *out);

#endif

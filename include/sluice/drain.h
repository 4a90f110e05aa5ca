/*
 * Drain: the shaping state of one upstream and the replay of its backlog.
 *
 * A drain owns the upstream's budget (sl_shaper), its spool (when a route
 * spills to it), the FIFO of live requests waiting in memory for a slot, and
 * the replays in flight. Live requests come first: the drainer starts a
 * replay only when no live request waits and the budget has room, so replay
 * fills exactly the capacity live traffic leaves free.
 *
 * Outcomes of a replay: 2xx, 3xx and 4xx other than 408/429 are final (the
 * record is acked); connect errors, timeouts, 5xx, 408 and 429 are retried
 * with exponential backoff and jitter (honouring Retry-After); after
 * max_attempts the record is a dead letter with its last error.
 *
 * The drain also owns the upstream's circuit (sluice/circuit.h), which live
 * requests report to as well: while it is open, replays stop and only one
 * probe at a time goes out, spaced by the circuit's own backoff. A replay
 * that failed before any byte reached the backend (its connect was refused
 * or timed out) was no attempt: the record keeps its place and its attempts,
 * so an outage neither burns attempts nor leaves records waiting out a long
 * per-record backoff once the backend is back.
 *
 * The ledger (shared by all drains, owned by the caller) tracks every spilled
 * id for the status URL; the dedupe index answers Idempotency-Key repeats.
 *
 * Per upstream and shared (sluice/loop.h): one drain per upstream however many
 * loops serve it, holding what must stay one (the budget, the spool, the
 * replay, the circuit); the pool it replays through is per loop. Today the
 * drain runs on one loop and its budget is that loop's; issue 14 separates
 * the two.
 *
 * @thread loop
 */
#ifndef SLUICE_DRAIN_H
#define SLUICE_DRAIN_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>
#include <sys/queue.h>

#include "sluice/adaptive.h"
#include "sluice/buf.h"
#include "sluice/circuit.h"
#include "sluice/config.h"
#include "sluice/http.h"
#include "sluice/ledger.h"
#include "sluice/metrics.h"
#include "sluice/shaper.h"
#include "sluice/spool.h"
#include "sluice/upstream.h"

struct sl_drain;

/* A live request waiting in memory for a slot of the budget. The caller owns
 * it (embedded in its connection) and bounds the wait with its own timer. */
struct sl_drain_waiter {
  TAILQ_ENTRY(sl_drain_waiter) link;
  void (*granted)(struct sl_drain_waiter *w); /* a slot was taken for it */
  bool queued;
};

/* Result of a spill: <status> 0 once durable, else SL_ESPOOL_FULL or an I/O
 * code (nothing was stored). <id> is the record's id. */
struct sl_drain_spilled {
  int status;
  uint8_t id[16];
  uint64_t position;
  double eta_seconds; /* < 0 when unknown */
};
typedef void (*sl_drain_spill_cb)(const struct sl_drain_spilled *res, void *arg);

/* The backend's final answer to a replayed request, for a client held in
 * wait mode. <head> and <body> are valid during the call only. */
typedef void (*sl_drain_result_cb)(const struct sl_http_msg *head, const struct sl_buf *body,
                                   void *arg);

/* A client in wait mode, waiting for the outcome of one id. */
struct sl_drain_watch {
  LIST_ENTRY(sl_drain_watch) link;
  uint8_t id[16];
  sl_drain_result_cb cb;
  void *arg;
  bool active;
};

/*
 * Creates the drain of upstream <ucfg> (upstream id <index>: what its ledger
 * entries carry, stable across reloads and restarts; see ledger_journal.h), using
 * connection pool <pool>, ledger <ledger>, Idempotency-Key index <keys> (both
 * may be NULL: no statuses) and metrics registry <reg>. With
 * <spool_dir> non-NULL it opens the spool there (recovering it); that is the
 * only blocking step, so only start-up, before the loop serves, passes one
 * (a reload opens spools on the threadpool: sl_drain_open_spool). Returns 0 and the
 * drain in <out>, or a negative code (logged).
 */
int sl_drain_create(uv_loop_t *loop, const struct sl_config *cfg,
                    const struct sl_upstream_config *ucfg, uint16_t index, struct sl_upstream *pool,
                    struct sl_ledger *ledger, struct sl_dedupe *keys, struct sl_metrics *reg,
                    const char *spool_dir, struct sl_drain **out);

/*
 * Opens the spool of upstream <ucfg> of <cfg> in directory <dir>, creating
 * the directory and recovering what it holds: the blocking step of giving a
 * drain a spool, which a reload runs on the threadpool. The spool notifies
 * no one until a drain adopts it. Returns 0 and the spool in <out>, or a
 * negative code with a line for the log in <err> (<errlen> bytes); <out> is
 * then NULL. The caller owns the spool until it hands it to
 * sl_drain_adopt_spool(), or closes it with sl_spool_close().
 * @thread any: touches no drain
 */
int sl_drain_open_spool(const struct sl_config *cfg, const struct sl_upstream_config *ucfg,
                        const char *dir, struct sl_spool **out, char *err, size_t errlen);

/*
 * Gives drain <d>, which has no spool, the spool <spool> opened by
 * sl_drain_open_spool(): from now on the drain owns it, spills into it and
 * replays its backlog. The caller must not use <spool> any more.
 */
void sl_drain_adopt_spool(struct sl_drain *d, struct sl_spool *spool);

/* Applies a reloaded config (rate, burst, max_inflight, retry, paused, max_spool_bytes). The
 * caller keeps <cfg> alive until the next call or destroy. */
void sl_drain_configure(struct sl_drain *d, const struct sl_config *cfg,
                        const struct sl_upstream_config *ucfg);

/* Stops replaying, waits for the spool's queued writes, closes it, frees. */
void sl_drain_destroy(struct sl_drain *d);

/* Whether this drain has a spool (some route spills to it). */
bool sl_drain_can_spill(const struct sl_drain *d);

/*
 * Whether the request spilled with id <id> is still being stored: its spool
 * append not yet durable, its answer not yet sent. A repeat of its Idempotency-Key must not be
 * answered 202 before the first request is: the append may yet fail.
 */
bool sl_drain_spilling(const struct sl_drain *d, const uint8_t id[16]);

/* Whether the spool may hold ready records (new spillable requests then
 * queue behind them). Cheap: no look into the spool. */
bool sl_drain_has_backlog(struct sl_drain *d);

/* Ready records may have appeared outside the drain's view (a redrive):
 * look again. */
void sl_drain_kick(struct sl_drain *d);

/* Whether the drain is rebuilding statuses and Idempotency-Keys from its
 * spool after an unclean stop (sluice/recover.h): until it is done, an id or
 * a key the ledger does not know may still be one of its records. */
bool sl_drain_rebuilding(const struct sl_drain *d);

/* The decision for a live request; FORWARD means a slot was taken, to be
 * given back with sl_drain_release() when the exchange ends. */
enum sl_shaper_verdict sl_drain_admit(struct sl_drain *d, bool spillable);
void sl_drain_release(struct sl_drain *d);

/* Queues <w> for the next free slot (FIFO); <w->granted> runs once one is
 * taken for it. sl_drain_cancel() takes it out (timeout, client gone). */
void sl_drain_wait(struct sl_drain *d, struct sl_drain_waiter *w);
void sl_drain_cancel(struct sl_drain *d, struct sl_drain_waiter *w);

/*
 * Spills one request: <method>, <target>, <fields> (the header block from
 * sl_http_write_request_fields), <body>; delivered not before <not_before_ms>
 * (wall clock, 0 = at once). Stores the new record's id in <id_out> and
 * returns 0; <cb> then runs exactly once, never from inside this call.
 * Returns a negative code (SL_ESPOOL_FULL, ...) if nothing was queued.
 */
int sl_drain_spill(struct sl_drain *d, const char *method, size_t method_len, const char *target,
                   size_t target_len, const struct sl_buf *fields, const struct sl_buf *body,
                   uint64_t not_before_ms, sl_drain_spill_cb cb, void *arg, uint8_t id_out[16]);

/* Watches id <w->id>: <w->cb> runs if the record is delivered while watched.
 * sl_drain_unwatch() stops it (timeout, client gone). */
void sl_drain_watch(struct sl_drain *d, struct sl_drain_watch *w);
void sl_drain_unwatch(struct sl_drain *d, struct sl_drain_watch *w);

/* The position of a queued record of sequence <seq> and its ETA in seconds
 * (< 0 when unknown: no rate known, replay paused or the circuit not closed),
 * for status answers. */
void sl_drain_position(struct sl_drain *d, uint64_t seq, uint64_t *position, double *eta);

/* Seconds a client should wait before retrying (Retry-After), at least 1:
 * the time until the next probe while the circuit is not closed, else the ETA. */
unsigned sl_drain_retry_after(struct sl_drain *d);

/*
 * Cancels the spilled request <id> of this drain's upstream: a queued one
 * (delayed, or waiting for a retry, included) becomes "cancelled" in the
 * ledger, which its journal keeps across restarts, and its record is settled
 * without a replay when the spool hands it out. Copies the entry into <out>
 * and returns 0 (also when it was cancelled already), or UV_EBUSY with <out>
 * filled when it is in another state (in flight, delivered, dead, ...),
 * SL_ELEDGER_NOTFOUND for an id the ledger does not know on this upstream,
 * or UV_ENOMEM. The caller flushes the ledger journal.
 */
int sl_drain_cancel_request(struct sl_drain *d, const uint8_t id[16], struct sl_ledger_entry *out);

/*
 * Redrives (<redrive>) or purges the dead letter <id>, or every dead letter
 * when <id> is NULL. The statuses change at once (queued at the end of the
 * line, or purged); the spool's writer moves the records after, and should
 * that fail, what the dead store still holds reads "dead" again. Returns 0,
 * SL_ESPOOL_NOTFOUND when <id> is not a dead letter, SL_ESPOOL_CLOSED
 * without a spool, or a negative I/O code from reading the dead store.
 */
int sl_drain_dead_op(struct sl_drain *d, bool redrive, const uint8_t *id);

/*
 * Whether a live request may go to the backend now: true while the circuit is
 * closed, or when a probe is due (the request is then the probe). A request
 * let through must report its result with sl_drain_report().
 */
bool sl_drain_circuit_allow(struct sl_drain *d);

/* Whether the circuit is closed (replays and live requests go out freely). */
bool sl_drain_circuit_closed(const struct sl_drain *d);

/*
 * A live request that started at <started_ns> (monotonic) reached the
 * backend and got an answer (<ok>: a status that is no failure of the
 * upstream, see sl_circuit_status_fails), or failed (<ok> false: it could not
 * connect, or got a 502, 503, 504 or 429).
 */
void sl_drain_report(struct sl_drain *d, bool ok, uint64_t started_ns);

/*
 * The backend answered a live request sent at <started_ns> (monotonic) with
 * <status> and a Retry-After of <retry_after_ms> (0: none or unreadable). A
 * 429 or 503 with one holds the upstream until then (replays wait, live
 * requests that may spill are spilled: sl_drain_admit) and counts as an
 * answer for the circuit; else the circuit hears it as sl_drain_report()
 * says. An adaptive rate learns from it. (A replay so answered keeps its
 * place and its attempts.)
 */
void sl_drain_live_answered(struct sl_drain *d, unsigned status, uint64_t retry_after_ms,
                            uint64_t started_ns);

/* A live request got no answer in time: an adaptive rate goes down. */
void sl_drain_live_timed_out(struct sl_drain *d);

/* Admin operations. */
void sl_drain_pause(struct sl_drain *d, bool paused);
void sl_drain_set_rate(struct sl_drain *d, double rate);
struct sl_spool *sl_drain_spool(struct sl_drain *d);
const char *sl_drain_name(const struct sl_drain *d);

struct sl_drain_info {
  double rate;
  bool paused;
  struct sl_spool_stats spool;
  double eta_seconds; /* < 0 when unknown, paused or the circuit not closed */
  enum sl_circuit_state circuit;
  unsigned circuit_failures; /* consecutive failure steps */
  uint64_t next_probe_ms;    /* wall clock; 0 when closed or a probe is out without end */
  uint64_t hold_until_ms;    /* wall clock the backend's Retry-After holds the drain to; 0: none */
  bool adaptive;             /* the rate adapts (sluice/adaptive.h); then: */
  double min_rate, max_rate; /* its bounds */
  uint64_t rate_increases;   /* steps up, and decreases by enum sl_adaptive_cause */
  uint64_t rate_decreases[SL_ADAPTIVE_CAUSES];
  /* Records that left the line (delivered, dead-lettered, cancelled, lost) since it last
   * started from empty, or since the start: with what is still queued, how far the drain of
   * the current backlog has come. It stays at its count once the line is empty again, until
   * the next record joins. */
  uint64_t drained_since_empty;
};
void sl_drain_info(struct sl_drain *d, struct sl_drain_info *info);

/*
 * The backend's HTTP status that a dead letter's last error <error> (<len>
 * bytes) records: the drain writes an answer that failed ("HTTP 503") so that
 * this reads it back. 0 when the last attempt got no answer (a connect error,
 * a timeout, a reset).
 */
unsigned sl_drain_error_status(const char *error, size_t len);

#endif

/*
 * The drain of one upstream: budget, spool, live waiters and replays.
 * See include/sluice/drain.h for the rules; this file is the mechanism.
 *
 * Scheduling is one function, pump(): it grants free slots to waiting live
 * requests first, then starts replays while the budget has room, and arms
 * one timer for the next moment something can change by itself (a token,
 * a delayed record coming due, the circuit's next probe). Everything
 * else that frees capacity or adds a record (a release, a completed append,
 * retry or dead-letter move, a finished replay, a resume, a redrive) calls
 * pump() again. Nothing polls the spool: a path that adds a record without
 * calling pump() is a stall, which tests/unit/test_drain.c looks for.
 *
 * Upstream health is the circuit (sluice/circuit.h), fed by replays here and
 * by live requests through sl_drain_report(). While it is not closed, pump()
 * starts a replay only when a probe is due, one at a time. Times in log lines
 * about the next attempt are wall-clock instants (RFC 3339), so that they
 * stay true however long the line waits to be read.
 */
#include "sluice/drain.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "sluice/clock.h"
#include "sluice/durable.h"
#include "sluice/expiry.h"
#include "sluice/ledger_journal.h"
#include "sluice/recover.h"
#include "sluice/log.h"
#include "sluice/random.h"
#include "sluice/replay.h"
#include "sluice/util.h"

/* Bytes of a replayed response kept for a client in wait mode. */
#define WAIT_BODY_MAX (8u * 1024 * 1024)

/* How long replays wait after the spool could not be read (an I/O error). */
#define TAKE_ERROR_HOLD_MS 1000u

enum drained_outcome { DRAINED_DELIVERED, DRAINED_RETRIED, DRAINED_DEAD, DRAINED_COUNT };
/* What became of an expired record (sluice/expiry.h), as its route said. */
enum expired_outcome { EXPIRED_DEAD, EXPIRED_DROP, EXPIRED_COUNT };

struct replay_job {
  struct sl_drain *d;
  uint64_t started_ns;
  struct sl_spool_item *item;
  struct sl_replay *replay;
  LIST_ENTRY(replay_job) link;
};

/*
 * A spilled request from sl_drain_spill() to its answer, which waits for its
 * spool record alone: the record holds all its status entry and its
 * Idempotency-Key say, so that a census of the spool rebuilds them when a
 * crash took their journal frames (sluice/recover.h).
 */
struct spill_job {
  struct sl_drain *d;
  sl_drain_spill_cb cb;
  void *arg;
  uint8_t id[16];
  uint64_t enqueue_ms;
  uint64_t not_before_ms;     /* delayed delivery; 0 if none */
  TAILQ_ENTRY(spill_job) all; /* in <spills> until answered */
};

/* A delivered record whose ack waits for its "delivered" frame to be durable. */
struct ack_job {
  struct sl_ledger_journal_waiter wait; /* first */
  struct sl_drain *d;
  struct sl_spool_item *item;
  LIST_ENTRY(ack_job) link;
};

struct sl_drain {
  uv_loop_t *loop;
  char *name;
  uint16_t index;
  const struct sl_config *cfg;
  const struct sl_upstream_config *ucfg;
  struct sl_upstream *pool;
  struct sl_ledger *ledger;
  struct sl_dedupe *keys; /* Idempotency-Keys, for a rebuild; NULL if none */
  struct sl_shaper shaper;
  struct sl_spool *spool;
  struct sl_spool_stats shown; /* for display, read at loop time <shown_at> (shown_stats) */
  uint64_t shown_at;
  bool shown_valid;
  uv_async_t async;       /* the spool's writer thread has completions for us */
  uv_check_t flush_check; /* hands the iteration's appends to the writer at once */
  bool appends_unflushed;
  uv_timer_t timer;
  int open_handles;
  bool closing;
  bool pumping;
  bool paused;
  /* Whether the spool may hold ready records: cleared when a take finds
   * none, set by whatever can add one (an append, a give-back, a redrive,
   * the completion of a retry's copy). It spares the request path a look
   * into the spool. pump() takes whether it is set or not; the records it
   * cannot see yet (a copy still on its way to disk) wake it through their
   * completion, and delayed ones through the timer (schedule()). */
  bool maybe_ready;

  TAILQ_HEAD(, sl_drain_waiter) waiters; /* live requests, FIFO */
  LIST_HEAD(, sl_drain_watch) watches;   /* wait-mode clients */
  LIST_HEAD(, replay_job) replays;       /* in flight to the backend */
  LIST_HEAD(, ack_job) acks;             /* delivered, waiting for the journal */
  TAILQ_HEAD(, spill_job) spills;        /* spilled, not yet answered, oldest first */
  uint64_t already_delivered;            /* records settled unsent: the ledger said delivered */

  uint64_t hold_until_ms; /* replays wait until then: a spool read error, or the backend's ask */
  /* Wall clock until which the backend asked for no requests (a 429 or 503 with Retry-After):
   * replays wait, live requests that may spill are spilled. 0: never asked. */
  uint64_t backend_hold_until_ms;
  struct sl_metric *backend_holds; /* times the backend asked to wait */
  struct sl_adaptive adaptive;     /* with ucfg->adaptive: what sets the shaper's rate */
  struct sl_circuit circuit;
  uint64_t circuit_opens;
  uint64_t seq_accepted;     /* sequence of the last record accepted */
  uint64_t seq_settled;      /* records delivered, dead-lettered, cancelled or lost */
  uint64_t settled_at_empty; /* seq_settled when the backlog last started from empty */
  uint64_t lost_seen;        /* the spool's lost_records when the ledger was last reconciled */
  struct census_job *scan;   /* the spool's census, while one runs */
  bool rebuilding;           /* ... for a rebuild after an unclean stop */
  struct sl_recover_counts rebuilt; /* records rebuilt when taken during that census */
  double delivered_rate;            /* smoothed deliveries per second, for the ETA without a rate */
  uint64_t rate_window_ns;
  unsigned rate_window_count;

  struct sl_metric *drained[DRAINED_COUNT];
  struct sl_metric *expired[EXPIRED_COUNT];
  struct sl_metric *skipped_delivered;
  struct sl_metric *queue_wait;
  struct sl_metric *fsync_seconds;                        /* observed on the spool's threads */
  struct sl_metric *upstream_seconds, *upstream_inflight; /* shared with live traffic */
  struct sl_metric *gauges[32];
  size_t n_gauges;
};

static void pump(struct sl_drain *d);
static bool being_spilled(const struct sl_drain *d, const struct sl_spool_record *rec);

static uint64_t now_ns(void) { return sl_clock_mono_ns(); }

/* ---- metrics ----------------------------------------------------------- */

/*
 * The spool's figures for display (metrics, the admin API, a 503's Retry-After), read once
 * per loop turn: a scrape asks for a dozen of them, each the same reading. The drain's own
 * decisions read the spool afresh.
 */
static const struct sl_spool_stats *shown_stats(struct sl_drain *d) {
  uint64_t now = uv_now(d->loop);

  if (!d->shown_valid || d->shown_at != now) {
    sl_spool_stats(d->spool, &d->shown);
    d->shown_at = now;
    d->shown_valid = true;
  }
  return &d->shown;
}

static double stat_of(struct sl_drain *d, size_t field) {
  const struct sl_spool_stats *st;

  if (d->spool == NULL)
    return 0;
  st = shown_stats(d);
  switch (field) {
  case 0:
    return (double)st->ready;
  case 1:
    return (double)st->delayed;
  case 2:
    return (double)st->inflight;
  case 3:
    return (double)st->dead;
  case 4:
    return (double)st->disk_bytes;
  case 5:
    return st->oldest_ready_ms ? (double)(sl_clock_wall_ms() - st->oldest_ready_ms) / 1e3 : 0;
  case 6:
    return (double)st->raw_bytes_written;
  case 7:
    return (double)st->compressed_bytes_written;
  case 8:
    return (double)st->corrupt_units;
  case 9:
    return (double)st->backlog_bytes;
  case 10:
    return (double)st->prealloc_bytes;
  case 11:
    return (double)st->lost_records;
  default:
    return 0;
  }
}

static double m_ready(void *a) { return stat_of(a, 0); }
static double m_delayed(void *a) { return stat_of(a, 1); }
static double m_inflight(void *a) { return stat_of(a, 2); }
static double m_dead(void *a) { return stat_of(a, 3); }
static double m_disk_bytes(void *a) { return stat_of(a, 4); }
static double m_backlog_bytes(void *a) { return stat_of(a, 9); }
static double m_prealloc_bytes(void *a) { return stat_of(a, 10); }
static double m_age(void *a) { return stat_of(a, 5); }
static double m_raw(void *a) { return stat_of(a, 6); }
static double m_compressed(void *a) { return stat_of(a, 7); }
static double m_corrupt(void *a) { return stat_of(a, 8); }
static double m_lost(void *a) { return stat_of(a, 11); }
/* The limit in force: the adaptive rate's ceiling, or the fixed rate. */
static double m_rate(void *a) {
  struct sl_drain *d = a;

  return d->ucfg->adaptive ? d->ucfg->max_rate : d->shaper.rate;
}
static double m_rate_effective(void *a) { return ((struct sl_drain *)a)->shaper.rate; }
static double m_increases(void *a) { return (double)((struct sl_drain *)a)->adaptive.increases; }
#define M_DECREASES(cause)                                                                         \
  static double m_decreases_##cause(void *a) {                                                     \
    return (double)((struct sl_drain *)a)->adaptive.decreases[SL_ADAPTIVE_CAUSE_##cause];          \
  }
M_DECREASES(429)
M_DECREASES(503)
M_DECREASES(RETRY_AFTER)
M_DECREASES(TIMEOUT)
M_DECREASES(LATENCY)
#undef M_DECREASES
static double m_paused(void *a) { return ((struct sl_drain *)a)->paused ? 1 : 0; }
static double m_hold_until(void *a) {
  struct sl_drain *d = a;

  return d->backend_hold_until_ms > sl_clock_wall_ms() ? (double)d->backend_hold_until_ms / 1e3 : 0;
}
static double m_max_bytes(void *a) { return (double)((struct sl_drain *)a)->ucfg->max_spool_bytes; }
/* NaN while the ETA is unknown because nothing drains (paused, circuit not
 * closed): a number there would be a promise, and NaN is how Prometheus
 * clients say "no value" (a summary's quantiles without observations). */
static double m_eta(void *a) {
  struct sl_drain *d = a;
  struct sl_drain_info info;

  sl_drain_info(d, &info);
  if (d->paused || d->circuit.state != SL_CIRCUIT_CLOSED)
    return NAN;
  return info.eta_seconds < 0 ? 0 : info.eta_seconds;
}
static double m_circuit(struct sl_drain *d, enum sl_circuit_state s) {
  return d->circuit.state == s ? 1 : 0;
}
static double m_closed(void *a) { return m_circuit(a, SL_CIRCUIT_CLOSED); }
static double m_half_open(void *a) { return m_circuit(a, SL_CIRCUIT_HALF_OPEN); }
static double m_open(void *a) { return m_circuit(a, SL_CIRCUIT_OPEN); }
static double m_failures(void *a) { return ((struct sl_drain *)a)->circuit.failures; }
static double m_opens(void *a) { return (double)((struct sl_drain *)a)->circuit_opens; }
static double m_next_probe(void *a) {
  struct sl_drain_info info;

  sl_drain_info(a, &info);
  return (double)info.next_probe_ms / 1e3;
}

/* A backlog is meant to wait: minutes to a day, not the milliseconds of a
 * request. */
static const double queue_wait_buckets[] = {0.01, 0.05, 0.1, 0.5, 1,    5,    10,    30,
                                            60,   120,  300, 600, 1800, 3600, 21600, 86400};

/* fdatasync takes from a few hundred microseconds up: finer buckets than
 * the request durations. */
static const double fsync_buckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                       0.01,   0.025,   0.05,   0.1,   0.25,   1};

/* Runs on a spool thread: the histogram is updated atomically. */
static void on_fsync(void *arg, uint64_t ns) {
  sl_metrics_observe_atomic(((struct sl_drain *)arg)->fsync_seconds, (double)ns / 1e9);
}

/* The one series of a family labelled by upstream alone: <name> (<type>, <help>) for
 * upstream <n>, its value read from <fn>(<d>). NULL on ENOMEM. */
static struct sl_metric *own_series(struct sl_metrics *reg, enum sl_metric_type type,
                                    const char *name, const char *help, const char *n,
                                    sl_metrics_value_fn fn, void *d) {
  static const char *const up[] = {"upstream", NULL};

  return sl_metrics_series_fn(sl_metrics_family(reg, type, name, help, up), (const char *[]){n}, fn,
                              d);
}

/* sluice_expired_total{upstream,outcome}: records that expired before delivery. */
static int register_expired(struct sl_drain *d, struct sl_metrics *reg) {
  static const char *const up_outcome[] = {"upstream", "outcome", NULL};
  static const char *const outcomes[EXPIRED_COUNT] = {"dead", "drop"};
  struct sl_metric_family *f = sl_metrics_family(
      reg, SL_METRIC_COUNTER, "sluice_expired_total",
      "Spilled requests whose queue_ttl or X-Sluice-Expires-After passed before delivery: "
      "dead-lettered (reason expired) or dropped, as their route's on_expire says.",
      up_outcome);

  if (f == NULL)
    return -1;
  for (int i = 0; i < EXPIRED_COUNT; i++) {
    d->expired[i] = sl_metrics_series(f, (const char *[]){d->name, outcomes[i]});
    if (d->expired[i] == NULL)
      return -1;
  }
  return 0;
}

static int register_metrics(struct sl_drain *d, struct sl_metrics *reg) {
  static const char *const up[] = {"upstream", NULL};
  static const char *const up_state[] = {"upstream", "state", NULL};
  static const char *const up_outcome[] = {"upstream", "outcome", NULL};
  static const char *const up_kind[] = {"upstream", "kind", NULL};
  static const char *const outcomes[DRAINED_COUNT] = {"delivered", "retried", "dead"};
  static const char *const up_cause[] = {"upstream", "cause", NULL};
  struct sl_metric_family *backlog, *drained, *written, *circuit, *decreases;
  const char *n = d->name;

  backlog = sl_metrics_family(reg, SL_METRIC_GAUGE, "sluice_backlog_requests",
                              "Records in the spool by state.", up_state);
  drained =
      sl_metrics_family(reg, SL_METRIC_COUNTER, "sluice_drained_total",
                        "Replays by outcome: delivered, retried later, dead-lettered.", up_outcome);
  written =
      sl_metrics_family(reg, SL_METRIC_COUNTER, "sluice_spool_written_bytes_total",
                        "Bytes appended to the spool: raw records and compressed units.", up_kind);
  circuit = sl_metrics_family(
      reg, SL_METRIC_GAUGE, "sluice_upstream_circuit_state",
      "1 for the circuit's current state (closed, half-open, open), else 0.", up_state);
  decreases = sl_metrics_family(
      reg, SL_METRIC_COUNTER, "sluice_drain_rate_decreases_total",
      "Times the adaptive rate went down, by cause: 429, 503, retry_after, timeout, latency.",
      up_cause);
  if (backlog == NULL || drained == NULL || written == NULL || circuit == NULL || decreases == NULL)
    return -1;
  d->skipped_delivered = sl_metrics_series(
      sl_metrics_family(reg, SL_METRIC_COUNTER, "sluice_drain_redelivery_skipped_total",
                        "Records the spool handed out again (their ack lost in a crash) whose "
                        "status already read delivered: settled without a second delivery.",
                        up),
      (const char *[]){n});
  d->backend_holds = sl_metrics_series(
      sl_metrics_family(reg, SL_METRIC_COUNTER, "sluice_drain_backend_holds_total",
                        "Answers (429 or 503) whose Retry-After held the upstream's drain.", up),
      (const char *[]){n});
  if (d->skipped_delivered == NULL || d->backend_holds == NULL)
    return -1;
  for (int i = 0; i < DRAINED_COUNT; i++) {
    d->drained[i] = sl_metrics_series(drained, (const char *[]){n, outcomes[i]});
    if (d->drained[i] == NULL)
      return -1;
  }
  if (register_expired(d, reg) != 0)
    return -1;
  d->queue_wait = sl_metrics_series(
      sl_metrics_histogram(reg, "sluice_queue_wait_seconds",
                           "Time from a spilled request's 202 to its delivery.", up,
                           queue_wait_buckets, sl_countof(queue_wait_buckets)),
      (const char *[]){n});
  if (d->queue_wait == NULL)
    return -1;
  d->fsync_seconds = sl_metrics_series(
      sl_metrics_histogram(reg, "sluice_spool_fsync_duration_seconds",
                           "Duration of the spool's fdatasync calls (one per commit group).", up,
                           fsync_buckets, sl_countof(fsync_buckets)),
      (const char *[]){n});
  if (d->fsync_seconds == NULL)
    return -1;
  /* The same series the live path uses (same family, same labels): replays
   * are upstream requests too. */
  d->upstream_seconds = sl_metrics_series(
      sl_metrics_histogram(reg, "sluice_upstream_request_duration_seconds",
                           "Time from sending a request upstream to the end of its response.", up,
                           NULL, 0),
      (const char *[]){n});
  d->upstream_inflight = sl_metrics_series(
      sl_metrics_family(reg, SL_METRIC_GAUGE, "sluice_upstream_inflight",
                        "Requests sent to the upstream and not yet answered.", up),
      (const char *[]){n});
  if (d->upstream_seconds == NULL || d->upstream_inflight == NULL)
    return -1;
  {
    struct sl_metric *s[] = {
        sl_metrics_series_fn(backlog, (const char *[]){n, "ready"}, m_ready, d),
        sl_metrics_series_fn(backlog, (const char *[]){n, "delayed"}, m_delayed, d),
        sl_metrics_series_fn(backlog, (const char *[]){n, "inflight"}, m_inflight, d),
        sl_metrics_series_fn(backlog, (const char *[]){n, "dead"}, m_dead, d),
        own_series(reg, SL_METRIC_GAUGE, "sluice_backlog_bytes",
                   "Bytes on disk of the records not yet delivered (ready, delayed, "
                   "in flight, dead letters).",
                   n, m_backlog_bytes, d),
        own_series(reg, SL_METRIC_GAUGE, "sluice_spool_disk_bytes",
                   "Bytes of the spool's files, preallocated zeros left out: what "
                   "max_spool_bytes limits.",
                   n, m_disk_bytes, d),
        own_series(reg, SL_METRIC_GAUGE, "sluice_spool_preallocated_bytes",
                   "Zero-filled bytes of preallocated spool segment files, beyond "
                   "their records.",
                   n, m_prealloc_bytes, d),
        own_series(reg, SL_METRIC_GAUGE, "sluice_backlog_oldest_age_seconds",
                   "Lag: age of the oldest ready record.", n, m_age, d),
        own_series(reg, SL_METRIC_GAUGE, "sluice_drain_eta_seconds",
                   "Time to drain the backlog at the current rate.", n, m_eta, d),
        own_series(reg, SL_METRIC_GAUGE, "sluice_drain_rate_limit",
                   "The configured rate in requests/s (0: none); with adaptive, max_rate.", n,
                   m_rate, d),
        own_series(reg, SL_METRIC_GAUGE, "sluice_drain_rate_effective",
                   "The rate in force in requests/s (0: none): the adaptive rate, or the "
                   "configured one.",
                   n, m_rate_effective, d),
        own_series(reg, SL_METRIC_COUNTER, "sluice_drain_rate_increases_total",
                   "Times the adaptive rate went up a step.", n, m_increases, d),
        sl_metrics_series_fn(decreases, (const char *[]){n, "429"}, m_decreases_429, d),
        sl_metrics_series_fn(decreases, (const char *[]){n, "503"}, m_decreases_503, d),
        sl_metrics_series_fn(decreases, (const char *[]){n, "retry_after"}, m_decreases_RETRY_AFTER,
                             d),
        sl_metrics_series_fn(decreases, (const char *[]){n, "timeout"}, m_decreases_TIMEOUT, d),
        sl_metrics_series_fn(decreases, (const char *[]){n, "latency"}, m_decreases_LATENCY, d),
        own_series(reg, SL_METRIC_GAUGE, "sluice_drain_hold_until_timestamp_seconds",
                   "Unix time until which the backend asked (Retry-After on a 429 or 503) "
                   "for no requests; 0 when not held.",
                   n, m_hold_until, d),
        own_series(reg, SL_METRIC_GAUGE, "sluice_drain_paused", "1 while replay is paused.", n,
                   m_paused, d),
        own_series(reg, SL_METRIC_GAUGE, "sluice_spool_max_bytes",
                   "The spool's size limit (max_spool_bytes).", n, m_max_bytes, d),
        sl_metrics_series_fn(written, (const char *[]){n, "raw"}, m_raw, d),
        sl_metrics_series_fn(written, (const char *[]){n, "compressed"}, m_compressed, d),
        sl_metrics_series_fn(circuit, (const char *[]){n, "closed"}, m_closed, d),
        sl_metrics_series_fn(circuit, (const char *[]){n, "half-open"}, m_half_open, d),
        sl_metrics_series_fn(circuit, (const char *[]){n, "open"}, m_open, d),
        own_series(reg, SL_METRIC_GAUGE, "sluice_upstream_circuit_failures",
                   "Consecutive failure steps of the upstream (0 after a success).", n, m_failures,
                   d),
        own_series(reg, SL_METRIC_GAUGE, "sluice_upstream_circuit_next_probe_timestamp_seconds",
                   "Unix time of the next probe while the circuit is not closed, else 0.", n,
                   m_next_probe, d),
        own_series(reg, SL_METRIC_COUNTER, "sluice_upstream_circuit_opens_total",
                   "Times the upstream's circuit opened.", n, m_opens, d),
        own_series(reg, SL_METRIC_COUNTER, "sluice_spool_corrupt_units_total",
                   "Spool units skipped as corrupt.", n, m_corrupt, d),
        own_series(reg, SL_METRIC_COUNTER, "sluice_spool_lost_records_total",
                   "Records lost in damaged spool units.", n, m_lost, d),
    };
    for (size_t i = 0; i < sl_countof(s); i++) {
      if (s[i] == NULL)
        return -1;
      d->gauges[d->n_gauges++] = s[i];
    }
  }
  return 0;
}

/* ---- the backlog's sequence numbers ---------------------------------------- */

/*
 * A record joins the line (a spill, a redrive): its sequence number. When the
 * line was empty, a new drain starts here, and what sl_drain_info reports as
 * drained_since_empty counts from zero again.
 */
static uint64_t accept_seq(struct sl_drain *d) {
  if (d->seq_settled >= d->seq_accepted)
    d->settled_at_empty = d->seq_settled;
  return ++d->seq_accepted;
}

/* ---- the delivery-rate estimate (for the ETA when no rate is set) ------ */

static void count_delivery(struct sl_drain *d) {
  uint64_t now = now_ns();

  if (d->rate_window_ns == 0)
    d->rate_window_ns = now;
  d->rate_window_count++;
  if (now - d->rate_window_ns >= 1000000000ull) {
    double r = d->rate_window_count * 1e9 / (double)(now - d->rate_window_ns);
    d->delivered_rate = d->delivered_rate == 0 ? r : 0.7 * d->delivered_rate + 0.3 * r;
    d->rate_window_ns = now;
    d->rate_window_count = 0;
  }
}

/* Requests per second the backlog drains at: the rate if one is set, else
 * what was measured. 0 when unknown. */
static double drain_rate(const struct sl_drain *d) {
  return d->shaper.rate > 0 ? d->shaper.rate : d->delivered_rate;
}

/* ---- waiters and watches ----------------------------------------------- */

void sl_drain_wait(struct sl_drain *d, struct sl_drain_waiter *w) {
  TAILQ_INSERT_TAIL(&d->waiters, w, link);
  w->queued = true;
  pump(d);
}

void sl_drain_cancel(struct sl_drain *d, struct sl_drain_waiter *w) {
  if (!w->queued)
    return;
  TAILQ_REMOVE(&d->waiters, w, link);
  w->queued = false;
}

void sl_drain_watch(struct sl_drain *d, struct sl_drain_watch *w) {
  LIST_INSERT_HEAD(&d->watches, w, link);
  w->active = true;
}

void sl_drain_unwatch(struct sl_drain *d, struct sl_drain_watch *w) {
  (void)d; /* the list head is not needed to unlink */
  if (!w->active)
    return;
  LIST_REMOVE(w, link);
  w->active = false;
}

/* Hands the backend's answer for <id> to the clients waiting for it. */
static void notify_watches(struct sl_drain *d, const uint8_t *id, const struct sl_http_msg *head,
                           const struct sl_buf *body) {
  struct sl_drain_watch *w = LIST_FIRST(&d->watches), *next;

  for (; w != NULL; w = next) {
    next = LIST_NEXT(w, link);
    if (memcmp(w->id, id, 16) != 0)
      continue;
    sl_drain_unwatch(d, w);
    w->cb(head, body, w->arg);
  }
}

/* ---- budget ------------------------------------------------------------ */

enum sl_shaper_verdict sl_drain_admit(struct sl_drain *d, bool spillable) {
  bool backlog = spillable && sl_drain_has_backlog(d);

  /* The backend asked for quiet: what can wait in the spool does. */
  if (spillable && d->spool != NULL && sl_clock_wall_ms() < d->backend_hold_until_ms)
    return SL_SHAPER_SPILL;

  return sl_shaper_decide(&d->shaper, now_ns(), spillable && d->spool != NULL, backlog,
                          !TAILQ_EMPTY(&d->waiters));
}

void sl_drain_release(struct sl_drain *d) {
  sl_shaper_release(&d->shaper);
  pump(d);
}

bool sl_drain_can_spill(const struct sl_drain *d) { return d->spool != NULL; }

bool sl_drain_has_backlog(struct sl_drain *d) { return d->spool != NULL && d->maybe_ready; }

bool sl_drain_rebuilding(const struct sl_drain *d) { return d->rebuilding; }

void sl_drain_kick(struct sl_drain *d) {
  d->maybe_ready = true;
  pump(d);
}

/* ---- circuit ----------------------------------------------------------- */

/* How long a probe may stay out before another may go: the longest a request
 * to <ucfg> can take. */
static uint64_t probe_timeout_ns(const struct sl_upstream_config *ucfg) {
  return (ucfg->connect_timeout_ms + ucfg->response_timeout_ms + 1000) * 1000000ull;
}

/* Wall-clock ms of the next probe as seen at <now> (monotonic ns) and <wall>;
 * 0 when the circuit is closed or a probe is out with no end. */
static uint64_t next_probe_wall_ms(const struct sl_drain *d, uint64_t now, uint64_t wall) {
  uint64_t w = sl_circuit_wait_ns(&d->circuit, now);

  if (d->circuit.state == SL_CIRCUIT_CLOSED || w == UINT64_MAX)
    return 0;
  return wall + (w + 999999) / 1000000;
}

/* A request that started at <started_ns> failed as the upstream's failure
 * (<error> says how); logs the circuit opening. */
static void circuit_failed(struct sl_drain *d, uint64_t started_ns, const char *error) {
  enum sl_circuit_state was = d->circuit.state;
  uint64_t now = now_ns();
  char when[SL_CLOCK_RFC3339_LEN];

  if (sl_circuit_failure(&d->circuit, started_ns, now) != SL_CIRCUIT_OPENED)
    return;
  sl_clock_format(next_probe_wall_ms(d, now, sl_clock_wall_ms()), true, when);
  if (was == SL_CIRCUIT_CLOSED) {
    d->circuit_opens++;
    sl_log_warn("upstream %s: circuit open after %u consecutive failures (last: %s); replays "
                "held, next probe at %s",
                d->name, d->circuit.failures, error, when);
  } else {
    sl_log_info("upstream %s: probe failed (%s); circuit open, next probe at %s", d->name, error,
                when);
  }
}

/* A request got an answer from the backend; logs the circuit closing. */
static void circuit_succeeded(struct sl_drain *d) {
  unsigned failures = d->circuit.failures;

  if (sl_circuit_success(&d->circuit) == SL_CIRCUIT_CLOSED_AGAIN)
    sl_log_info("upstream %s: circuit closed, the backend answered (after %u consecutive "
                "failures); replays resume",
                d->name, failures);
}

/* ---- replay ------------------------------------------------------------ */

/* The request to send for <rec>: as received, plus provenance headers. */
static int build_request(const struct sl_spool_record *rec, struct sl_buf *out) {
  char id[SL_LEDGER_ID_HEX + 1], when[40];
  uint64_t now = sl_clock_wall_ms();
  int r = 0;

  sl_ledger_id_format(rec->id, id);
  sl_clock_format(rec->enqueue_ms, true, when);
  r |= sl_http_write_request_line(out, rec->method, rec->method_len, rec->target, rec->target_len);
  r |= sl_expiry_strip(out, rec->headers, rec->headers_len); /* sluice's own field stays here */
  r |= sl_buf_printf(out,
                     "X-Sluice-Request-Id: %s\r\nX-Sluice-Attempt: %u\r\n"
                     "X-Sluice-Enqueued-At: %s\r\nX-Sluice-Queue-Wait: %.3f\r\n",
                     id, rec->attempts + 1, when,
                     now > rec->enqueue_ms ? (double)(now - rec->enqueue_ms) / 1e3 : 0.0);
  r |= sl_http_write_content_length(out, rec->method, rec->method_len, rec->body_len);
  r |= sl_buf_append(out, "\r\n", 2);
  r |= sl_buf_append(out, rec->body, rec->body_len);
  return r ? -1 : 0;
}

/* ---- adaptive rate ------------------------------------------------------- */

/* (Re)starts the adaptive rate at <rate>, brought within the config's bounds. */
static void adaptive_start(struct sl_drain *d, double rate) {
  struct sl_adaptive_params p;

  sl_adaptive_defaults(&p, rate, d->ucfg->min_rate, d->ucfg->max_rate,
                       d->ucfg->target_latency_ms * 1000000ull);
  sl_adaptive_init(&d->adaptive, &p, now_ns());
}

/* How an answer with <status> reads to the adaptive rate; <held>: it came with a Retry-After
 * that held the drain. */
static enum sl_adaptive_outcome adaptive_outcome(unsigned status, bool held) {
  if (held)
    return SL_ADAPTIVE_RETRY_AFTER;
  if (status == 429)
    return SL_ADAPTIVE_429;
  if (status == 503)
    return SL_ADAPTIVE_503;
  if (status == 408 || status == 504)
    return SL_ADAPTIVE_TIMEOUT;
  return status >= 500 ? SL_ADAPTIVE_NEUTRAL : SL_ADAPTIVE_OK;
}

/* A request to the backend, sent at <started_ns> (0: no latency to tell), ended with
 * <outcome>: the adaptive rate learns from it, and the shaper takes its new rate. */
static void adapt(struct sl_drain *d, enum sl_adaptive_outcome outcome, uint64_t started_ns) {
  uint64_t now = now_ns();
  double before = d->shaper.rate;

  if (!d->ucfg->adaptive ||
      !sl_adaptive_observe(&d->adaptive, now, outcome,
                           started_ns > 0 && now > started_ns ? now - started_ns : 0))
    return;
  sl_shaper_configure(&d->shaper, sl_adaptive_rate(&d->adaptive), d->ucfg->burst,
                      d->ucfg->max_inflight, now);
  sl_log_debug("upstream %s: adaptive rate %g/s -> %g/s", d->name, before, d->shaper.rate);
}

static bool backend_asked_wait(struct sl_drain *d, unsigned status, uint64_t retry_after_ms) {
  uint64_t until;

  if ((status != 429 && status != 503) || retry_after_ms == 0)
    return false;
  until = sl_clock_wall_ms() + retry_after_ms;
  if (until > d->backend_hold_until_ms) {
    char when[SL_CLOCK_RFC3339_LEN];

    sl_log_info("upstream %s: the backend answered %u with Retry-After: drain held until %s",
                d->name, status, sl_clock_format(until, true, when));
    d->backend_hold_until_ms = until;
  }
  if (until > d->hold_until_ms)
    d->hold_until_ms = until;
  sl_metrics_inc(d->backend_holds);
  return true;
}

/* Backoff before attempt number <attempts> + 1: exponential, capped, with
 * jitter, and never shorter than what the backend asked for. */
static uint64_t backoff_ms(const struct sl_retry_config *rc, uint32_t attempts,
                           uint64_t retry_after_ms) {
  double ms = (double)rc->initial_backoff_ms * pow(rc->multiplier, attempts > 0 ? attempts - 1 : 0);
  uint32_t rnd;

  if (ms > (double)rc->max_backoff_ms)
    ms = (double)rc->max_backoff_ms;
  if (rc->jitter > 0 && sl_random_bytes(&rnd, sizeof(rnd)) == 0)
    ms *= 1.0 + rc->jitter * ((double)rnd / 4294967295.0 * 2.0 - 1.0);
  if ((double)retry_after_ms > ms)
    ms = (double)retry_after_ms;
  return ms < 1 ? 1 : (uint64_t)ms;
}

/* Fills <e> with <rec>'s ledger entry; if the ledger has none (a record accepted before a
 * restart whose frames were lost, or a ledger that evicted it), with a fresh one made from
 * the record, and returns false. */
static bool entry_of(struct sl_drain *d, const struct sl_spool_record *rec,
                     struct sl_ledger_entry *e) {
  if (sl_ledger_get(d->ledger, rec->id, e) == 1)
    return true;
  memset(e, 0, sizeof(*e));
  memcpy(e->id, rec->id, 16);
  e->upstream = d->index;
  e->enqueued_ms = rec->enqueue_ms;
  return false;
}

/* Records <rec>'s new <state>; <not_before_ms> is when a queued record is due (0: its turn). */
static void ledger_update(struct sl_drain *d, const struct sl_spool_record *rec,
                          enum sl_ledger_state state, unsigned status, const char *error,
                          uint64_t not_before_ms) {
  struct sl_ledger_entry e;

  if (d->ledger == NULL)
    return;
  entry_of(d, rec, &e);
  e.state = state;
  /* Attempts made so far: the one in flight is not counted until it ends. */
  e.attempts = rec->attempts + (state == SL_LEDGER_INFLIGHT ? 0 : 1);
  e.status = (uint16_t)status;
  e.updated_ms = sl_clock_wall_ms();
  e.not_before_ms = not_before_ms;
  if (error != NULL) /* cut to the entry's room, as the ledger would */
    snprintf(e.error, sizeof(e.error), "%.*s", (int)sizeof(e.error) - 1, error);
  sl_ledger_put(d->ledger, &e); /* in flight is not journaled: queued after a restart */
}

/* Records that <rec> expired: its attempts stay those made (none is spent on it). */
static void rec_expired(struct sl_drain *d, const struct sl_spool_record *rec) {
  struct sl_ledger_entry e;

  if (d->ledger == NULL)
    return;
  entry_of(d, rec, &e);
  e.state = SL_LEDGER_EXPIRED;
  e.attempts = rec->attempts;
  e.status = 0;
  e.flags = 0;
  e.updated_ms = sl_clock_wall_ms();
  e.not_before_ms = 0;
  snprintf(e.error, sizeof(e.error), "expired");
  sl_ledger_put(d->ledger, &e);
}

/*
 * A retry's copy (or a dead letter) is durable, or it failed and the spool
 * gave the record back. Either way the spool changed under the drain after
 * pump() last looked: a copy due soon may be earlier than the timer, a
 * copy already due or a given-back record can be taken now. Look again.
 */
static void on_moved(void *arg, int status) {
  struct sl_drain *d = arg;

  (void)status;
  d->maybe_ready = true;
  pump(d);
}

/* A dead-letter move that sl_spool_dead() accepted, and what its completion
 * needs once the item is gone. */
struct dead_job {
  struct sl_drain *d;
  uint8_t id[16];
  uint64_t enqueue_ms;
  uint32_t attempts; /* before the last attempt, as in the record */
  bool expired;      /* its deadline passed: never sent */
  char error[128];
};

/*
 * The dead-letter move of <arg> (a struct dead_job) finished. Only a move that
 * succeeded makes the request dead: status, counter and log line. A failed
 * one left the record in the spool, given back for another replay, so its
 * status is queued again.
 */
static void on_dead_moved(void *arg, int status) {
  struct dead_job *dj = arg;
  struct sl_drain *d = dj->d;
  struct sl_spool_record rec;

  memset(&rec, 0, sizeof(rec));
  memcpy(rec.id, dj->id, 16);
  rec.enqueue_ms = dj->enqueue_ms;
  rec.attempts = dj->attempts;
  if (status == 0 && dj->expired) {
    sl_log_info("upstream %s: a request expired before delivery; dead-lettered (reason expired)",
                d->name);
    rec_expired(d, &rec);
    sl_metrics_inc(d->expired[EXPIRED_DEAD]);
    d->seq_settled++;
  } else if (status == 0) {
    sl_log_warn("upstream %s: request dead-lettered after %u attempts: %s", d->name,
                dj->attempts + 1, dj->error);
    ledger_update(d, &rec, SL_LEDGER_DEAD, 0, dj->error, 0);
    sl_metrics_inc(d->drained[DRAINED_DEAD]);
    d->seq_settled++;
  } else if (dj->expired) {
    /* Given back unchanged: still queued, and taken (and expired) again, after a
     * pause: unlike a replay, an expiry spends no token, so without one a dead
     * store that keeps failing would be retried in a busy loop. */
    sl_log_error("upstream %s: could not dead-letter an expired record: %s; it will be taken "
                 "again in %u ms",
                 d->name, sl_strerror(status), TAKE_ERROR_HOLD_MS);
    d->hold_until_ms = sl_clock_wall_ms() + TAKE_ERROR_HOLD_MS;
  } else {
    sl_log_error("upstream %s: could not dead-letter a record: %s; it will be replayed again",
                 d->name, sl_strerror(status));
    ledger_update(d, &rec, SL_LEDGER_QUEUED, 0, dj->error, 0);
  }
  free(dj);
  on_moved(d, status);
}

/* sl_spool_retry/dead could not even queue the move (no memory): the item
 * is still ours; give it back so that it is tried again. */
static void give_back(struct sl_drain *d, struct sl_spool_item *item, const char *what) {
  sl_log_error("upstream %s: %s; it will be retried", d->name, what);
  sl_spool_release(d->spool, item);
  d->maybe_ready = true;
}

/*
 * <job>'s record goes back to the head of the line with its attempts unchanged:
 * the try was no attempt of the record. Either nothing of it reached the
 * backend, or the backend asked to be left alone for a while (a 429 or 503 with
 * Retry-After), which holds the whole drain until <not_before_ms> (0: its turn).
 */
static void keep_place(struct sl_drain *d, struct replay_job *job, const char *error,
                       uint64_t not_before_ms) {
  const struct sl_spool_record *rec = sl_spool_item_record(job->item);
  struct sl_ledger_entry e;

  if (d->ledger != NULL && sl_ledger_get(d->ledger, rec->id, &e) == 1) {
    e.state = SL_LEDGER_QUEUED;
    e.attempts = rec->attempts;
    e.updated_ms = sl_clock_wall_ms();
    e.not_before_ms = not_before_ms;
    snprintf(e.error, sizeof(e.error), "%.*s", (int)sizeof(e.error) - 1, error);
    sl_ledger_put(d->ledger, &e);
  }
  sl_spool_release(d->spool, job->item);
  d->maybe_ready = true;
}

/*
 * A replay failed in a way worth another attempt (<error> says how). With
 * <unsent> nothing of it reached the backend: that was no attempt, so the
 * record goes back to the head of the line with its attempts unchanged, and
 * the circuit, not the record, spaces the next try.
 */
static void replay_failed(struct sl_drain *d, struct replay_job *job, const char *error,
                          uint64_t retry_after_ms, bool unsent) {
  const struct sl_spool_record *rec = sl_spool_item_record(job->item);
  const struct sl_retry_config *rc = &d->ucfg->retry;
  uint32_t attempts = rec->attempts + 1;
  uint64_t wall = sl_clock_wall_ms();
  uint64_t delay = backoff_ms(rc, attempts, retry_after_ms);
  char when[SL_CLOCK_RFC3339_LEN];

  if (unsent) {
    sl_log_debug("upstream %s: replay not sent (%s); the record keeps its place", d->name, error);
    keep_place(d, job, error, 0);
    return;
  }
  if (attempts >= rc->max_attempts) {
    struct dead_job *dj = calloc(1, sizeof(*dj));

    if (dj == NULL) {
      give_back(d, job->item, "could not dead-letter a record");
      return;
    }
    dj->d = d;
    memcpy(dj->id, rec->id, 16);
    dj->enqueue_ms = rec->enqueue_ms;
    dj->attempts = rec->attempts;
    snprintf(dj->error, sizeof(dj->error), "%s", error);
    /* The status and the counters change once the dead store has the record
     * (on_dead_moved): if the move fails, the record is given back and
     * replayed again, so it is not dead. */
    if (sl_spool_dead(d->spool, job->item, error, on_dead_moved, dj) != 0) {
      free(dj);
      give_back(d, job->item, "could not dead-letter a record");
    }
    return;
  }
  sl_clock_format(wall + delay, true, when);
  sl_log_info("upstream %s: replay attempt %u failed (%s); next attempt not before %s%s", d->name,
              attempts, error, when,
              d->circuit.state == SL_CIRCUIT_CLOSED ? "" : " (circuit open: at a probe)");
  ledger_update(d, rec, SL_LEDGER_QUEUED, 0, error, wall + delay);
  sl_metrics_inc(d->drained[DRAINED_RETRIED]);
  if (sl_spool_retry(d->spool, job->item, wall + delay, on_moved, d) != 0)
    give_back(d, job->item, "could not reschedule a record");
}

/* The ack of <item> may go: its "delivered" frame is durable (or cannot be). */
static void on_delivered_journaled(struct sl_ledger_journal_waiter *w, int status) {
  struct ack_job *a = (struct ack_job *)w;

  (void)status; /* a failed journal logged it; the record is delivered all the same */
  LIST_REMOVE(a, link);
  sl_spool_ack(a->d->spool, a->item, NULL, NULL);
  free(a);
}

/*
 * Acks delivered <item> in the spool once its "delivered" frame, just
 * journaled, is durable (at once under fsync "off"). In this order, a power
 * cut can lose the ack without the status (the record comes back, and
 * settle_delivered() drops it unsent) but never the status without the ack
 * (the record gone, its status stuck at "queued"). The item stays in flight
 * meanwhile; the backend's slot is already free.
 */
static void ack_when_journaled(struct sl_drain *d, struct sl_spool_item *item) {
  struct ack_job *a = d->ledger != NULL ? malloc(sizeof(*a)) : NULL;

  if (a != NULL) {
    a->d = d;
    a->item = item;
    if (sl_ledger_journal_wait(d->ledger, &a->wait, sl_ledger_journal_mark(d->ledger),
                               on_delivered_journaled) == 0) {
      LIST_INSERT_HEAD(&d->acks, a, link);
      return;
    }
    free(a);
  }
  sl_spool_ack(d->spool, item, NULL, NULL);
}

static void on_replay_done(const struct sl_replay_result *res, void *arg) {
  struct replay_job *job = arg;
  struct sl_drain *d = job->d;
  const struct sl_spool_record *rec = sl_spool_item_record(job->item);
  char error[128];

  LIST_REMOVE(job, link);
  sl_shaper_release(&d->shaper);
  sl_metrics_add(d->upstream_inflight, -1);
  sl_metrics_observe(d->upstream_seconds, (double)(now_ns() - job->started_ns) / 1e9);
  if (res->error != 0) {
    snprintf(error, sizeof(error), "%s: %s", res->what ? res->what : "failed",
             uv_strerror(res->error));
    if (!res->nothing_sent) /* what was not sent tells nothing of the backend's load */
      adapt(d, res->error == UV_ETIMEDOUT ? SL_ADAPTIVE_TIMEOUT : SL_ADAPTIVE_NEUTRAL, 0);
    circuit_failed(d, job->started_ns, error);
    replay_failed(d, job, error, 0, res->nothing_sent);
  } else if (res->status >= 500 || res->status == 408 || res->status == 429) {
    /* The form sl_drain_error_status() reads back. */
    bool held = backend_asked_wait(d, res->status, res->retry_after_ms);

    snprintf(error, sizeof(error), "HTTP %u", res->status);
    adapt(d, adaptive_outcome(res->status, held), job->started_ns);
    if (held) {
      /* A rate limit the backend spelled out is no failure, of the upstream (it answered,
       * and the hold spaces the next try) or of the record: it waits, with the whole
       * drain, and keeps its attempts. */
      circuit_succeeded(d);
      keep_place(d, job, error, d->backend_hold_until_ms);
    } else {
      if (sl_circuit_status_fails(res->status))
        circuit_failed(d, job->started_ns, error);
      else
        circuit_succeeded(d);
      replay_failed(d, job, error, res->retry_after_ms, false);
    }
  } else {
    uint64_t wall = sl_clock_wall_ms();

    adapt(d, SL_ADAPTIVE_OK, job->started_ns);
    circuit_succeeded(d);
    ledger_update(d, rec, SL_LEDGER_DELIVERED, res->status, NULL, 0);
    sl_metrics_inc(d->drained[DRAINED_DELIVERED]);
    sl_metrics_observe(d->queue_wait,
                       wall > rec->enqueue_ms ? (double)(wall - rec->enqueue_ms) / 1e3 : 0);
    count_delivery(d);
    d->seq_settled++;
    notify_watches(d, rec->id, res->head, res->body);
    ack_when_journaled(d, job->item);
  }
  free(job);
  pump(d);
}

/* Starts replaying <item>; a slot is already taken for it. */
static void start_replay(struct sl_drain *d, struct sl_spool_item *item) {
  const struct sl_spool_record *rec = sl_spool_item_record(item);
  struct replay_job *job = calloc(1, sizeof(*job));
  struct sl_buf req;
  int rc;

  sl_buf_init(&req);
  if (job == NULL || build_request(rec, &req) != 0) {
    free(job);
    sl_buf_dispose(&req);
    sl_spool_release(d->spool, item);
    d->maybe_ready = true;
    sl_shaper_release(&d->shaper);
    return;
  }
  job->d = d;
  job->item = item;
  job->started_ns = now_ns();
  ledger_update(d, rec, SL_LEDGER_INFLIGHT, 0, NULL, 0);
  rc = sl_replay_start(d->pool, req.base, req.len, d->ucfg->response_timeout_ms, WAIT_BODY_MAX,
                       on_replay_done, job, &job->replay);
  sl_buf_dispose(&req);
  if (rc != 0) {
    char error[128];

    sl_shaper_release(&d->shaper);
    snprintf(error, sizeof(error), "connect failed: %s", uv_strerror(rc));
    circuit_failed(d, job->started_ns, error);
    replay_failed(d, job, error, 0, true);
    free(job);
    return;
  }
  LIST_INSERT_HEAD(&d->replays, job, link);
  sl_metrics_inc(d->upstream_inflight);
}

/* ---- cancelled records -------------------------------------------------- */

struct cancel_job {
  struct sl_drain *d;
  uint8_t id[16];
};

/* The ack of a cancelled record is durable: the spool will not hand it out
 * again, so its ledger entry need no longer be held (kept from eviction). */
static void on_cancel_settled(void *arg, int status) {
  struct cancel_job *job = arg;
  struct sl_ledger_entry e;

  if (status == 0 && job->d->ledger != NULL && sl_ledger_get(job->d->ledger, job->id, &e) == 1 &&
      e.state == SL_LEDGER_CANCELLED && (e.flags & SL_LEDGER_F_HELD)) {
    e.flags = 0;
    sl_ledger_put(job->d->ledger, &e);
  }
  free(job);
}

/*
 * If the ledger says the record of <item> was cancelled, settles it without
 * replaying it and returns true; else returns false and the item is still
 * the caller's. The ledger is what remembers a cancellation across restarts
 * (its journal): a cancelled record the spool hands out again after a crash,
 * its ack not yet durable, is settled again here.
 */
static bool settle_cancelled(struct sl_drain *d, struct sl_spool_item *item) {
  const struct sl_spool_record *rec = sl_spool_item_record(item);
  struct sl_ledger_entry e;
  struct cancel_job *job;

  if (d->ledger == NULL || sl_ledger_get(d->ledger, rec->id, &e) != 1 ||
      e.state != SL_LEDGER_CANCELLED)
    return false;
  job = malloc(sizeof(*job));
  if (job != NULL) {
    job->d = d;
    memcpy(job->id, rec->id, 16);
  }
  sl_log_info("upstream %s: a cancelled request was dropped from the spool", d->name);
  sl_spool_ack(d->spool, item, job != NULL ? on_cancel_settled : NULL, job);
  return true;
}

/*
 * If the ledger says the record of <item> was delivered already, settles it
 * without replaying it and returns true; else returns false. This is a
 * record whose delivery was journaled (durable before its ack was even
 * issued, see ack_when_journaled) but whose ack checkpoint a crash took: it
 * is not sent twice. Counted in sluice_drain_redelivery_skipped_total.
 */
static bool settle_delivered(struct sl_drain *d, struct sl_spool_item *item) {
  const struct sl_spool_record *rec = sl_spool_item_record(item);
  struct sl_ledger_entry e;

  if (d->ledger == NULL || sl_ledger_get(d->ledger, rec->id, &e) != 1 ||
      e.state != SL_LEDGER_DELIVERED)
    return false;
  d->already_delivered++;
  sl_metrics_inc(d->skipped_delivered);
  if (d->already_delivered == 1)
    sl_log_info("upstream %s: a record delivered before a crash came back from the spool (its "
                "ack was lost); settled without sending it again (counted in "
                "sluice_drain_redelivery_skipped_total)",
                d->name);
  d->seq_settled++; /* it was counted in the backlog at startup */
  sl_spool_ack(d->spool, item, NULL, NULL);
  return true;
}

/*
 * If the record of <item> carries a deadline (sluice/expiry.h) that <wall>
 * has reached, settles it unsent and returns true; else returns false and the
 * item is still the caller's. As its route said: a dead letter with the
 * reason "expired" (the status once the move is durable, on_dead_moved), or
 * dropped, acked once its "expired" status is journaled (as a delivery is:
 * a crash then loses the ack at worst, and the record expires again). Either
 * way it spends no attempt, no token of the rate and no slot.
 */
static bool settle_expired(struct sl_drain *d, struct sl_spool_item *item, uint64_t wall) {
  const struct sl_spool_record *rec = sl_spool_item_record(item);
  uint64_t deadline;
  bool drop;
  struct dead_job *dj;

  if (!sl_expiry_get(rec->headers, rec->headers_len, &deadline, &drop) || wall < deadline)
    return false;
  if (drop) {
    sl_log_info("upstream %s: a request expired before delivery; dropped", d->name);
    rec_expired(d, rec);
    sl_metrics_inc(d->expired[EXPIRED_DROP]);
    d->seq_settled++;
    ack_when_journaled(d, item);
    return true;
  }
  dj = calloc(1, sizeof(*dj));
  if (dj == NULL) {
    give_back(d, item, "could not dead-letter an expired record");
    return true; /* taken again on the next pump */
  }
  dj->d = d;
  memcpy(dj->id, rec->id, 16);
  dj->enqueue_ms = rec->enqueue_ms;
  dj->attempts = rec->attempts;
  dj->expired = true;
  snprintf(dj->error, sizeof(dj->error), "expired");
  if (sl_spool_dead(d->spool, item, "expired", on_dead_moved, dj) != 0) {
    free(dj);
    give_back(d, item, "could not dead-letter an expired record");
  }
  return true;
}

int sl_drain_cancel_request(struct sl_drain *d, const uint8_t id[16], struct sl_ledger_entry *out) {
  struct sl_ledger_entry e;

  if (d->ledger == NULL || sl_ledger_get(d->ledger, id, &e) != 1 || e.upstream != d->index)
    return SL_ELEDGER_NOTFOUND;
  if (e.state == SL_LEDGER_CANCELLED) {
    *out = e;
    return 0; /* cancelled already: DELETE is idempotent */
  }
  if (e.state != SL_LEDGER_QUEUED) {
    *out = e;
    return UV_EBUSY;
  }
  e.state = SL_LEDGER_CANCELLED;
  e.flags = SL_LEDGER_F_HELD;
  e.updated_ms = sl_clock_wall_ms();
  e.not_before_ms = 0;
  if (sl_ledger_put(d->ledger, &e) != 0)
    return UV_ENOMEM;
  /* It leaves the line now: the positions behind it move up. */
  d->seq_settled++;
  sl_log_info("upstream %s: a queued request was cancelled", d->name);
  *out = e;
  return 0;
}

/* ---- records lost to damage --------------------------------------------- */

/* Request ids, sorted for bsearch once collected. */
struct id_set {
  uint8_t (*v)[16];
  size_t n, cap;
  bool oom;
};

static void add_id(struct id_set *s, const uint8_t *id) {
  if (s->oom)
    return;
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 256;
    uint8_t(*grown)[16] = realloc(s->v, cap * sizeof(*grown));
    if (grown == NULL) {
      s->oom = true;
      return;
    }
    s->v = grown;
    s->cap = cap;
  }
  memcpy(s->v[s->n++], id, 16);
}

static int id_cmp(const void *a, const void *b) { return memcmp(a, b, 16); }

/*
 * A census of the spool: sl_spool_scan runs on the threadpool (scan_work),
 * the ledger is updated on the loop (scan_done). It serves two needs, one
 * read for both when they come together: the ids the spool still holds,
 * after records were lost to damage (apply_lost), and what each record says
 * of its status and key, after an unclean stop (apply_rebuild).
 * The drain points to it from <d->scan> while it runs; sl_drain_destroy
 * waits for the worker to leave the spool and then detaches it (<d> NULL),
 * so the job, and the uv_work_t in it, lives until scan_done has run and
 * freed it, whatever happened to the drain.
 */
struct census_job {
  uv_work_t req;
  struct sl_drain *d;         /* loop thread only; NULL once detached */
  struct sl_spool *spool;     /* read by the worker; open until <finished> */
  bool check_lost;            /* collect <held> for apply_lost */
  uint64_t lost;              /* the spool's lost_records when the scan started */
  struct id_set held;         /* worker until <finished>, then the loop */
  struct sl_recover *recover; /* non-NULL: collect for apply_rebuild (worker, then loop) */
  bool recover_oom;
  int status;
  atomic_bool stop; /* the drain is going: the worker ends the scan early */
  uv_mutex_t mu;
  uv_cond_t cond;
  bool finished; /* under mu: the worker is done with the spool */
};

/* Runs on the worker thread: touches only the job. */
static int collect(void *arg, const struct sl_spool_record *rec) {
  struct census_job *job = arg;

  if (atomic_load(&job->stop))
    return 1;
  if (job->check_lost)
    add_id(&job->held, rec->id);
  if (job->recover != NULL && sl_recover_add(job->recover, rec) != 0)
    job->recover_oom = true;
  return job->held.oom || job->recover_oom;
}

static void scan_work(uv_work_t *req) {
  struct census_job *job = req->data;

  job->status = sl_spool_scan(job->spool, collect, job);
  uv_mutex_lock(&job->mu);
  job->finished = true;
  uv_cond_signal(&job->cond);
  uv_mutex_unlock(&job->mu);
}

static void add_tracked(void *arg, const uint8_t id[16]) { add_id(arg, id); }

struct lost_scan {
  struct sl_drain *d;
  const struct id_set *held; /* what the spool still holds */
  struct sl_ledger_entry *gone;
  size_t n, cap;
  bool oom;
};

/* Collects the pending entries of this upstream whose record the spool no longer holds. */
static void find_gone(void *arg, const struct sl_ledger_entry *e) {
  struct lost_scan *ls = arg;

  if (ls->oom || e->upstream != ls->d->index ||
      (e->state != SL_LEDGER_QUEUED && e->state != SL_LEDGER_CANCELLED) ||
      (ls->held->n > 0 && bsearch(e->id, ls->held->v, ls->held->n, 16, id_cmp) != NULL))
    return;
  if (ls->n == ls->cap) {
    size_t cap = ls->cap ? ls->cap * 2 : 16;
    struct sl_ledger_entry *grown = realloc(ls->gone, cap * sizeof(*grown));
    if (grown == NULL) {
      ls->oom = true;
      return;
    }
    ls->gone = grown;
    ls->cap = cap;
  }
  ls->gone[ls->n++] = *e;
}

/*
 * On the loop, once the scan of <job> ended: the ledger entries that still
 * read "queued" although the spool no longer holds their record now read
 * "lost", with the reason; held cancellations whose record went the same
 * way are no longer held. What the spool holds now is what the scan read
 * plus what was committed since the scan started (sl_spool_track_end): a
 * record that moved during the scan, or was spilled meanwhile, is among
 * the latter, so it is not taken for lost.
 */
static void apply_lost(struct sl_drain *d, struct census_job *job) {
  struct lost_scan ls = {.d = d, .held = &job->held};
  uint64_t now = sl_clock_wall_ms();
  size_t marked = 0;
  int rc = sl_spool_track_end(d->spool, add_tracked, &job->held);

  if (job->status != 0 || rc != 0 || job->held.oom) {
    sl_log_error("upstream %s: %llu record(s) lost in damaged spool units; their statuses "
                 "could not be updated: %s",
                 d->name, (unsigned long long)job->lost,
                 job->status != 0 ? sl_strerror(job->status) : "out of memory");
    return;
  }
  if (job->held.n > 0)
    qsort(job->held.v, job->held.n, 16, id_cmp);
  sl_ledger_each_pending(d->ledger, find_gone, &ls);
  for (size_t i = 0; i < ls.n; i++) {
    struct sl_ledger_entry *e = &ls.gone[i];

    if (e->state == SL_LEDGER_CANCELLED) {
      e->flags = 0; /* nothing left to settle */
    } else {
      e->state = SL_LEDGER_LOST;
      e->not_before_ms = 0;
      snprintf(e->error, sizeof(e->error), "its record was in a damaged spool unit");
      d->seq_settled++;
      marked++;
    }
    e->updated_ms = now;
    sl_ledger_put(d->ledger, e);
  }
  if (marked > 0 || ls.oom)
    sl_log_error("upstream %s: %llu record(s) lost in damaged spool units so far; %zu queued "
                 "request(s) now read \"lost\"%s",
                 d->name, (unsigned long long)job->lost, marked,
                 ls.oom ? " (out of memory: some may still read queued)" : "");
  free(ls.gone);
}

static int restore_dead(void *arg, const struct sl_spool_record *rec);

/*
 * On the loop, once the census of <job> for a rebuild ended: every record
 * the spool held gets the status entry and the Idempotency-Key the ledger
 * and the key index lack (sluice/recover.h). Records taken meanwhile were
 * rebuilt when taken (recover_taken). A dead letter rebuilt as queued is
 * set right by the dead store, which is the truth for those.
 */
static void apply_rebuild(struct sl_drain *d, struct census_job *job) {
  struct sl_recover_counts c = d->rebuilt;
  struct sl_spool_stats st;

  d->rebuilding = false;
  if (job->status != 0 || job->recover_oom) {
    sl_log_error("upstream %s: after an unclean stop, the statuses and Idempotency-Keys of "
                 "spooled requests could not all be rebuilt from the spool: %s; those the "
                 "journal lacks answer 404 and are accepted again",
                 d->name, job->status != 0 ? sl_strerror(job->status) : "out of memory");
    return;
  }
  sl_recover_apply(job->recover, d->ledger, d->keys, d->index, sl_clock_wall_ms(), &c);
  sl_spool_stats(d->spool, &st);
  if (st.dead > 0 && c.entries > 0)
    sl_spool_dead_list(d->spool, restore_dead, d);
  sl_log_info("upstream %s: %llu spooled record(s) read after an unclean stop: %llu status(es) "
              "and %llu Idempotency-Key(s) the journal lacked rebuilt",
              d->name, (unsigned long long)c.records, (unsigned long long)c.entries,
              (unsigned long long)c.keys);
}

/* A record the drain handles while a census for a rebuild runs is rebuilt
 * at once: the scan may pass it by while it moves (a retry's copy is written
 * behind the scan, its original settled ahead of it). */
static void recover_taken(struct sl_drain *d, const struct sl_spool_record *rec) {
  if (d->rebuilding)
    sl_recover_record(rec, d->seq_accepted, d->ledger, d->keys, d->index, sl_clock_wall_ms(),
                      &d->rebuilt);
}

static void free_census_job(struct census_job *job) {
  sl_recover_destroy(job->recover);
  free(job->held.v);
  uv_cond_destroy(&job->cond);
  uv_mutex_destroy(&job->mu);
  free(job);
}

/* On the loop, after scan_work, or instead of it if it was cancelled. */
static void scan_done(uv_work_t *req, int status) {
  struct census_job *job = req->data;
  struct sl_drain *d = job->d;

  if (d != NULL) {
    d->scan = NULL;
    if (status != 0 && job->status == 0)
      job->status = status;
    if (job->check_lost)
      apply_lost(d, job);
    if (job->recover != NULL)
      apply_rebuild(d, job);
  }
  free_census_job(job);
  /* The count grew again while the scan ran: pump() starts the next one. */
  if (d != NULL && sl_spool_lost_records(d->spool) != d->lost_seen)
    pump(d);
}

/*
 * Starts a census of the spool when it is due: the spool lost records to
 * damaged units (found at open or by the reader) since the last look, or
 * <rebuild> asks for one after an unclean stop. A damaged unit cannot tell
 * which ids it held, so the spool is read for the ids it still has; that
 * read and its decompression run on the threadpool, never on the loop, and
 * apply_lost() and apply_rebuild() then update the ledger on the loop. One
 * census at a time: a change seen while one runs is picked up by the pump()
 * that follows it (scan_done); a rebuild is asked for once, at adoption,
 * when no census can be running yet.
 */
static void start_census(struct sl_drain *d, bool rebuild) {
  uint64_t lost = sl_spool_lost_records(d->spool);
  bool check_lost = lost != d->lost_seen;
  struct census_job *job;
  int rc;

  if (d->scan != NULL || (!check_lost && !rebuild))
    return;
  d->lost_seen = lost; /* once per change, even if what follows fails */
  if (d->ledger == NULL)
    return;
  job = calloc(1, sizeof(*job));
  if (job == NULL || uv_mutex_init(&job->mu) != 0) {
    free(job);
    rc = UV_ENOMEM;
    goto fail;
  }
  if (uv_cond_init(&job->cond) != 0) {
    uv_mutex_destroy(&job->mu);
    free(job);
    rc = UV_ENOMEM;
    goto fail;
  }
  job->req.data = job;
  job->d = d;
  job->spool = d->spool;
  job->check_lost = check_lost;
  job->lost = lost;
  atomic_init(&job->stop, false);
  if (rebuild && (job->recover = sl_recover_create()) == NULL) {
    free_census_job(job);
    rc = UV_ENOMEM;
    goto fail;
  }
  /* Before the scan starts: what is committed from here on counts as held. */
  if (check_lost)
    sl_spool_track_begin(d->spool);
  rc = uv_queue_work(d->loop, &job->req, scan_work, scan_done);
  if (rc != 0) {
    if (check_lost)
      sl_spool_track_end(d->spool, NULL, NULL);
    free_census_job(job);
    goto fail;
  }
  d->scan = job;
  if (rebuild) {
    d->rebuilding = true;
    memset(&d->rebuilt, 0, sizeof(d->rebuilt));
  }
  return;

fail:
  if (check_lost)
    sl_log_error("upstream %s: %llu record(s) lost in damaged spool units; their statuses could "
                 "not be updated: %s",
                 d->name, (unsigned long long)lost, uv_strerror(rc));
  if (rebuild)
    sl_log_error("upstream %s: after an unclean stop, the statuses and Idempotency-Keys of "
                 "spooled requests cannot be rebuilt from the spool: %s",
                 d->name, uv_strerror(rc));
}

static void reconcile_lost(struct sl_drain *d) { start_census(d, false); }

/*
 * The drain is going: the scan in flight, if any, must be done with the
 * spool before the spool closes. A scan not started yet is cancelled; one
 * running is told to stop and waited for, as sl_spool_close waits for the
 * appends in flight (it stops at the next record it reports; settled records
 * not yet deleted are read through). Either way scan_done still runs later on
 * the loop and frees the job, which no longer knows the drain: the ledger
 * goes with the drain's owner, so nothing is applied.
 */
static void detach_scan(struct sl_drain *d) {
  struct census_job *job = d->scan;

  if (job == NULL)
    return;
  d->scan = NULL;
  job->d = NULL;
  atomic_store(&job->stop, true);
  if (uv_cancel((uv_req_t *)&job->req) != 0) {
    uv_mutex_lock(&job->mu);
    while (!job->finished)
      uv_cond_wait(&job->cond, &job->mu);
    uv_mutex_unlock(&job->mu);
  }
  if (job->check_lost)
    sl_spool_track_end(d->spool, NULL, NULL);
  d->rebuilding = false;
}

/* ---- scheduling -------------------------------------------------------- */

static void on_timer(uv_timer_t *t) { pump(t->data); }

/*
 * Arms the timer for the next moment pump() could do something, as seen at
 * the moments <now> (monotonic ns) and <wall> (wall-clock ms) on which pump()
 * based its decisions. They must be the same readings: a token or the end of
 * a hold that comes between pump()'s look and a fresh reading here would
 * otherwise be "there now", so no timer would be armed for it, and pump()
 * did not use it either. With no timer armed, nothing else wakes the drain.
 * A timer set from older readings can only fire early; pump() then arms it
 * again.
 */
static void schedule(struct sl_drain *d, uint64_t now, uint64_t wall) {
  uint64_t wait = UINT64_MAX;
  uint64_t token = sl_shaper_token_wait_ns(&d->shaper, now);
  uint64_t probe = sl_circuit_wait_ns(&d->circuit, now);
  bool replaying = d->spool != NULL && !d->paused;
  /* Replays are held until then: a spool read error's pause, the circuit's next
   * probe (UINT64_MAX while a probe is out: its result calls pump()). */
  uint64_t held = d->hold_until_ms > wall ? d->hold_until_ms - wall : 0;

  if (probe == UINT64_MAX)
    held = UINT64_MAX;
  else if ((probe + 999999) / 1000000 > held)
    held = (probe + 999999) / 1000000;
  if (!TAILQ_EMPTY(&d->waiters) || (replaying && sl_drain_has_backlog(d))) {
    if (token > 0)
      wait = (token + 999999) / 1000000;
    if (replaying && held > 0 && held < wait)
      wait = held;
  }
  if (replaying) {
    uint64_t due = sl_spool_next_due_ms(d->spool);
    if (due != UINT64_MAX) {
      uint64_t w = due > wall ? due - wall : 1;
      if (held > w)
        w = held;
      if (w < wait)
        wait = w;
    }
  }
  if (wait == UINT64_MAX)
    uv_timer_stop(&d->timer);
  else
    uv_timer_start(&d->timer, on_timer, wait ? wait : 1, 0);
}

static void pump(struct sl_drain *d) {
  uint64_t now = now_ns(), wall = sl_clock_wall_ms();

  if (d->pumping || d->closing)
    return;
  d->pumping = true;
  while (!TAILQ_EMPTY(&d->waiters) && sl_shaper_try_acquire(&d->shaper, now)) {
    struct sl_drain_waiter *w = TAILQ_FIRST(&d->waiters);

    sl_drain_cancel(d, w);
    w->granted(w);
  }
  if (TAILQ_EMPTY(&d->waiters) && d->spool != NULL && !d->paused) {
    /* With the circuit not closed, only a due probe goes, one at a time: once it
     * is out, the circuit's wait is no longer 0. */
    while (!sl_shaper_full(&d->shaper) && wall >= d->hold_until_ms &&
           sl_circuit_wait_ns(&d->circuit, now) == 0) {
      struct sl_spool_item *item = NULL;

      int rc = sl_spool_take(d->spool, &item);

      if (rc != 0) {
        sl_log_error("spool %s: reading the next record failed: %s (retrying in %u ms)", d->name,
                     sl_strerror(rc), TAKE_ERROR_HOLD_MS);
        /* The record is still there: hold off, then read again (schedule arms the timer
         * for the end of the hold since maybe_ready stays set). */
        if (wall + TAKE_ERROR_HOLD_MS > d->hold_until_ms)
          d->hold_until_ms = wall + TAKE_ERROR_HOLD_MS;
        d->maybe_ready = true;
        break;
      }
      if (item == NULL) {
        d->maybe_ready = false;
        break;
      }
      if (settle_cancelled(d, item) || settle_delivered(d, item))
        continue;
      /* Durable, but its completion has not run yet: not before the answer
       * (a wait-mode client registers for the replay's result then, and the
       * ledger gets its entry). finish_spill() pumps again. */
      if (being_spilled(d, sl_spool_item_record(item))) {
        sl_spool_release(d->spool, item);
        d->maybe_ready = true;
        break;
      }
      recover_taken(d, sl_spool_item_record(item));
      if (settle_expired(d, item, wall))
        continue;
      if (!sl_shaper_try_acquire(&d->shaper, now)) {
        sl_spool_release(d->spool, item);
        d->maybe_ready = true;
        break;
      }
      if (!sl_circuit_allow(&d->circuit, now)) {
        sl_shaper_release(&d->shaper);
        sl_spool_release(d->spool, item);
        d->maybe_ready = true;
        break;
      }
      start_replay(d, item);
    }
  }
  if (d->spool != NULL)
    reconcile_lost(d);
  schedule(d, now, wall);
  d->pumping = false;
}

/* ---- spill ------------------------------------------------------------- */

/* Answers the spill of <job> (<status> from the spool) and frees it. */
static void finish_spill(struct spill_job *job, int status) {
  struct sl_drain *d = job->d;
  struct sl_drain_spilled res = {.status = status};

  memcpy(res.id, job->id, 16);
  if (status == 0) {
    struct sl_ledger_entry e, seen;
    uint64_t seq = accept_seq(d);

    memset(&e, 0, sizeof(e));
    memcpy(e.id, job->id, 16);
    e.state = SL_LEDGER_QUEUED;
    e.upstream = d->index;
    e.seq = seq;
    e.enqueued_ms = job->enqueue_ms;
    e.updated_ms = job->enqueue_ms;
    e.not_before_ms = job->not_before_ms;
    /* The record is readable once durable, so a replay may have taken it, and even
     * finished or failed, before this completion ran: an entry there already is newer. */
    if (d->ledger != NULL && sl_ledger_get(d->ledger, e.id, &seen) != 1)
      sl_ledger_put(d->ledger, &e);
    sl_drain_position(d, seq, &res.position, &res.eta_seconds);
  }
  TAILQ_REMOVE(&d->spills, job, all);
  job->cb(&res, job->arg);
  free(job);
  if (status == 0)
    sl_drain_kick(d);
}

bool sl_drain_spilling(const struct sl_drain *d, const uint8_t id[16]) {
  const struct spill_job *job;

  TAILQ_FOREACH(job, &d->spills, all) {
    if (memcmp(job->id, id, 16) == 0)
      return true;
  }
  return false;
}

/* Whether <rec> is a record whose spill is not answered yet. A record older
 * than the oldest unanswered spill cannot be one: a backlog costs no scan. */
static bool being_spilled(const struct sl_drain *d, const struct sl_spool_record *rec) {
  const struct spill_job *oldest = TAILQ_FIRST(&d->spills);

  return oldest != NULL && rec->enqueue_ms >= oldest->enqueue_ms && sl_drain_spilling(d, rec->id);
}

/* The spool append of <arg> (a struct spill_job) completed: the record is
 * durable under the fsync policy, or <status> says why not. */
static void on_spilled(void *arg, int status) { finish_spill(arg, status); }

int sl_drain_spill(struct sl_drain *d, const char *method, size_t method_len, const char *target,
                   size_t target_len, const struct sl_buf *fields, const struct sl_buf *body,
                   uint64_t not_before_ms, sl_drain_spill_cb cb, void *arg, uint8_t id_out[16]) {
  struct sl_spool_record rec;
  struct spill_job *job;
  int rc;

  if (d->spool == NULL)
    return SL_ESPOOL_CLOSED;
  job = calloc(1, sizeof(*job));
  if (job == NULL)
    return UV_ENOMEM;
  if (sl_random_bytes(job->id, sizeof(job->id)) != 0) {
    free(job);
    return UV_EIO;
  }
  job->d = d;
  job->cb = cb;
  job->arg = arg;
  job->enqueue_ms = sl_clock_wall_ms();
  job->not_before_ms = not_before_ms > job->enqueue_ms ? not_before_ms : 0;
  memset(&rec, 0, sizeof(rec));
  memcpy(rec.id, job->id, 16);
  rec.enqueue_ms = job->enqueue_ms;
  rec.not_before_ms = not_before_ms;
  rec.method = method;
  rec.method_len = method_len;
  rec.target = target;
  rec.target_len = target_len;
  rec.headers = fields->base;
  rec.headers_len = fields->len;
  rec.body = body->base;
  rec.body_len = body->len;
  rc = sl_spool_append(d->spool, &rec, on_spilled, job);
  if (rc != 0) {
    free(job);
    return rc;
  }
  d->appends_unflushed = true;
  TAILQ_INSERT_TAIL(&d->spills, job, all);
  memcpy(id_out, rec.id, 16);
  return 0;
}

/* Whether the backlog drains now: not paused, circuit closed. An ETA is
 * only given while it does; otherwise it would promise what is not moving. */
static bool draining(const struct sl_drain *d) {
  return !d->paused && d->circuit.state == SL_CIRCUIT_CLOSED;
}

/* Seconds to drain the ready and in-flight records at the rate; < 0 when no
 * rate is known. */
static double backlog_eta(struct sl_drain *d, const struct sl_spool_stats *st) {
  double rate = drain_rate(d);

  return rate > 0 ? (double)(st->ready + st->inflight) / rate : -1;
}

void sl_drain_position(struct sl_drain *d, uint64_t seq, uint64_t *position, double *eta) {
  double rate = drain_rate(d);

  *position = seq > d->seq_settled ? seq - d->seq_settled : 1;
  *eta = rate > 0 && draining(d) ? (double)*position / rate : -1;
}

unsigned sl_drain_retry_after(struct sl_drain *d) {
  struct sl_spool_stats st;
  double eta;

  if (d->circuit.state != SL_CIRCUIT_CLOSED) {
    uint64_t w = sl_circuit_wait_ns(&d->circuit, now_ns());

    if (w == UINT64_MAX || w <= 1000000000ull)
      return 1;
    return w >= 3600000000000ull ? 3600 : (unsigned)((w + 999999999) / 1000000000);
  }
  memset(&st, 0, sizeof(st));
  if (d->spool != NULL)
    st = *shown_stats(d);
  eta = backlog_eta(d, &st);
  if (eta < 1)
    return 1;
  return eta > 3600 ? 3600 : (unsigned)ceil(eta);
}

bool sl_drain_circuit_allow(struct sl_drain *d) { return sl_circuit_allow(&d->circuit, now_ns()); }

bool sl_drain_circuit_closed(const struct sl_drain *d) {
  return d->circuit.state == SL_CIRCUIT_CLOSED;
}

void sl_drain_report(struct sl_drain *d, bool ok, uint64_t started_ns) {
  enum sl_circuit_state was = d->circuit.state;

  if (ok && was == SL_CIRCUIT_CLOSED && d->circuit.failures == 0)
    return; /* the common case, on every live response: nothing to do */
  if (ok)
    circuit_succeeded(d);
  else
    circuit_failed(d, started_ns, "a live request failed");
  /* Closed again: replays resume. Opened: the timer must wake the next probe. */
  if (d->circuit.state != was)
    pump(d);
}

void sl_drain_live_answered(struct sl_drain *d, unsigned status, uint64_t retry_after_ms,
                            uint64_t started_ns) {
  bool held = backend_asked_wait(d, status, retry_after_ms);

  adapt(d, adaptive_outcome(status, held), started_ns);
  /* A rate limit with a Retry-After is an answer for the circuit: the hold spaces the rest. */
  sl_drain_report(d, held || !sl_circuit_status_fails(status), started_ns);
}

void sl_drain_live_timed_out(struct sl_drain *d) { adapt(d, SL_ADAPTIVE_TIMEOUT, 0); }

/* ---- life cycle and admin ---------------------------------------------- */

static void on_async(uv_async_t *a) {
  struct sl_drain *d = a->data;

  if (d->spool != NULL)
    sl_spool_poll_completions(d->spool);
}

/* Runs on the spool's writer thread: only wakes the loop. */
static void spool_notify(void *arg) { uv_async_send(arg); }

static enum sl_spool_fsync fsync_of(enum sl_fsync_policy p) {
  switch (p) {
  case SL_FSYNC_ALWAYS:
    return SL_SPOOL_FSYNC_ALWAYS;
  case SL_FSYNC_OFF:
    return SL_SPOOL_FSYNC_OFF;
  default:
    return SL_SPOOL_FSYNC_BATCH;
  }
}

static int restore_dead(void *arg, const struct sl_spool_record *rec);

int sl_drain_open_spool(const struct sl_config *cfg, const struct sl_upstream_config *ucfg,
                        const char *dir, struct sl_spool **out, char *err, size_t errlen) {
  struct sl_spool_opts opts;
  int rc;

  *out = NULL;
  /* At start-up and on reload alike; each created level is durable before the spool's first
   * append can be acknowledged (sl_durable_mkdir_p fsyncs each parent). */
  rc = sl_durable_mkdir_p(NULL, dir, 0750);
  if (rc != 0) {
    snprintf(err, errlen, "spool %s: cannot create %s: %s", ucfg->name, dir, uv_strerror(rc));
    return rc;
  }
  sl_spool_opts_init(&opts);
  opts.name = ucfg->name;
  opts.fsync = fsync_of(cfg->spool.fsync);
  opts.sync_delay_us = cfg->spool.fsync_interval_ms * 1000;
  opts.max_bytes = ucfg->max_spool_bytes;
  opts.compression_level = cfg->spool.compression_level;
  opts.batch_appends = true; /* flushed once per loop iteration: on_flush_check */
  /* No notify yet: the drain that adopts the spool sets it (sl_spool_set_notify). */
  rc = sl_spool_open(dir, &opts, out);
  if (rc != 0) {
    snprintf(err, errlen, "spool %s: cannot open %s: %s", ucfg->name, dir, sl_strerror(rc));
    *out = NULL;
  }
  return rc;
}

void sl_drain_adopt_spool(struct sl_drain *d, struct sl_spool *spool) {
  struct sl_spool_stats st;

  d->spool = spool;
  d->shown_valid = false;
  d->settled_at_empty = d->seq_settled; /* the backlog found at the start is a drain of its own */
  sl_spool_set_notify(spool, spool_notify, &d->async, on_fsync, d);
  sl_spool_stats(d->spool, &st);
  /* Positions count from what survived the restart. */
  d->seq_accepted = st.ready + st.delayed;
  d->maybe_ready = st.ready > 0;
  /* A dead-letter move is durable before its "dead" status is journaled: a
   * crash between the two leaves the status at "queued". The dead store is
   * the truth; it is read once here when it holds anything. */
  if (d->ledger != NULL && st.dead > 0 && sl_spool_dead_list(d->spool, restore_dead, d) != 0)
    sl_log_warn("spool %s: could not read the dead letters to check their statuses", d->name);
  if (st.ready + st.delayed > 0)
    sl_log_info("spool %s: %llu record(s) to deliver (%llu delayed, %llu dead)", d->name,
                (unsigned long long)(st.ready + st.delayed), (unsigned long long)st.delayed,
                (unsigned long long)st.dead);
  /* The journal may lack the statuses and keys of the last requests spilled
   * before an unclean stop: their records tell them again. */
  if (d->ledger != NULL && sl_ledger_journal_unclean(d->ledger) &&
      st.ready + st.delayed + st.dead > 0)
    start_census(d, true);
  pump(d);
}

/* Opens the spool in <dir> on the loop: only before the loop serves (start-up). */
static int open_spool(struct sl_drain *d, const char *dir) {
  struct sl_spool *spool;
  char err[512];
  int rc = sl_drain_open_spool(d->cfg, d->ucfg, dir, &spool, err, sizeof(err));

  if (rc != 0) {
    sl_log_error("%s", err);
    return rc;
  }
  sl_drain_adopt_spool(d, spool);
  return 0;
}

/*
 * After each loop iteration's I/O: the spills parsed in it go to the spool's writer as one
 * group, with one wake-up. Waking it per append would split a burst of requests read in
 * one iteration into many small groups, each with its own fdatasync and thread switch.
 */
static void on_flush_check(uv_check_t *h) {
  struct sl_drain *d = h->data;

  if (d->appends_unflushed && d->spool != NULL) {
    d->appends_unflushed = false;
    sl_spool_flush(d->spool);
  }
}

static void on_handle_closed(uv_handle_t *h) {
  struct sl_drain *d = h->data;

  if (--d->open_handles == 0) {
    free(d->name);
    free(d);
  }
}

int sl_drain_create(uv_loop_t *loop, const struct sl_config *cfg,
                    const struct sl_upstream_config *ucfg, uint16_t index, struct sl_upstream *pool,
                    struct sl_ledger *ledger, struct sl_dedupe *keys, struct sl_metrics *reg,
                    const char *spool_dir, struct sl_drain **out) {
  struct sl_drain *d = calloc(1, sizeof(*d));
  int rc;

  if (d == NULL || (d->name = strdup(ucfg->name)) == NULL) {
    free(d);
    return UV_ENOMEM;
  }
  d->loop = loop;
  TAILQ_INIT(&d->waiters);
  LIST_INIT(&d->watches);
  LIST_INIT(&d->replays);
  LIST_INIT(&d->acks);
  TAILQ_INIT(&d->spills);
  d->index = index;
  d->cfg = cfg;
  d->ucfg = ucfg;
  d->pool = pool;
  d->ledger = ledger;
  d->keys = keys;
  d->paused = ucfg->paused;
  sl_shaper_init(&d->shaper, ucfg->rate, ucfg->burst, ucfg->max_inflight, now_ns());
  if (ucfg->adaptive)
    adaptive_start(d, ucfg->rate);
  sl_circuit_init(&d->circuit, SL_CIRCUIT_THRESHOLD, SL_CIRCUIT_FIRST_PROBE_NS,
                  SL_CIRCUIT_MAX_PROBE_NS, probe_timeout_ns(ucfg));
  uv_async_init(loop, &d->async, on_async);
  uv_timer_init(loop, &d->timer);
  uv_check_init(loop, &d->flush_check);
  d->async.data = d;
  d->timer.data = d;
  d->flush_check.data = d;
  d->open_handles = 3;
  uv_check_start(&d->flush_check, on_flush_check);
  uv_unref((uv_handle_t *)&d->flush_check);
  /* Metrics first: the spool's threads report fsyncs from the moment it opens. */
  rc = register_metrics(d, reg) != 0 ? UV_ENOMEM : 0;
  if (rc == 0 && spool_dir != NULL)
    rc = open_spool(d, spool_dir);
  if (rc != 0) {
    sl_drain_destroy(d);
    return rc;
  }
  *out = d;
  pump(d);
  return 0;
}

void sl_drain_configure(struct sl_drain *d, const struct sl_config *cfg,
                        const struct sl_upstream_config *ucfg) {
  bool was_adaptive = d->ucfg->adaptive;
  double rate = ucfg->rate;

  d->cfg = cfg;
  d->ucfg = ucfg;
  d->paused = ucfg->paused;
  /* An adaptive rate keeps what it learnt, within the new bounds; one switched on starts
   * at <rate>. */
  if (ucfg->adaptive) {
    adaptive_start(d, was_adaptive ? d->shaper.rate : ucfg->rate);
    rate = sl_adaptive_rate(&d->adaptive);
  }
  sl_shaper_configure(&d->shaper, rate, ucfg->burst, ucfg->max_inflight, now_ns());
  /* A reload is an operator's hint that things may have changed: probe now. */
  sl_circuit_set_probe_timeout(&d->circuit, probe_timeout_ns(ucfg));
  sl_circuit_probe_now(&d->circuit, now_ns());
  if (d->spool != NULL) /* the limit sluice_spool_max_bytes shows is the one enforced */
    sl_spool_set_max_bytes(d->spool, ucfg->max_spool_bytes);
  pump(d);
}

void sl_drain_destroy(struct sl_drain *d) {
  if (d == NULL)
    return;
  d->closing = true;
  while (!LIST_EMPTY(&d->replays)) {
    struct replay_job *job = LIST_FIRST(&d->replays);

    LIST_REMOVE(job, link);
    sl_replay_cancel(job->replay);
    sl_metrics_add(d->upstream_inflight, -1);
    sl_spool_release(d->spool, job->item);
    d->maybe_ready = true;
    free(job);
  }
  while (!TAILQ_EMPTY(&d->waiters))
    sl_drain_cancel(d, TAILQ_FIRST(&d->waiters));
  /* Closing: what waits for the journal goes on now; the journal, closed
   * after the drains, still writes and syncs its frames. */
  while (!LIST_EMPTY(&d->acks)) {
    struct ack_job *a = LIST_FIRST(&d->acks);

    LIST_REMOVE(a, link);
    sl_ledger_journal_unwait(&a->wait);
    sl_spool_ack(d->spool, a->item, NULL, NULL);
    free(a);
  }
  for (size_t i = 0; i < d->n_gauges; i++)
    sl_metrics_series_remove(d->gauges[i]);
  d->n_gauges = 0;
  if (d->spool != NULL) {
    /* Off the spool before it closes; the job itself goes in scan_done. */
    detach_scan(d);
    /* Queued appends finish and their callbacks run before the spool goes. */
    sl_spool_close(d->spool);
    d->spool = NULL;
  }
  uv_close((uv_handle_t *)&d->async, on_handle_closed);
  uv_close((uv_handle_t *)&d->timer, on_handle_closed);
  uv_close((uv_handle_t *)&d->flush_check, on_handle_closed);
}

void sl_drain_pause(struct sl_drain *d, bool paused) {
  d->paused = paused;
  sl_log_info("upstream %s: replay %s", d->name, paused ? "paused" : "resumed");
  if (!paused)
    sl_circuit_probe_now(&d->circuit, now_ns()); /* an operator's resume: probe now */
  pump(d);
}

void sl_drain_set_rate(struct sl_drain *d, double rate) {
  /* Adaptive: the operator's rate is where it goes on from, within its bounds. */
  if (d->ucfg->adaptive) {
    adaptive_start(d, rate);
    rate = sl_adaptive_rate(&d->adaptive);
  }
  sl_shaper_configure(&d->shaper, rate, d->ucfg->burst, d->ucfg->max_inflight, now_ns());
  sl_log_info("upstream %s: rate set to %g/s%s", d->name, rate,
              d->ucfg->adaptive ? " (adaptive: it goes on from there)" : "");
  pump(d);
}

struct sl_spool *sl_drain_spool(struct sl_drain *d) {
  return d->spool;
}

const char *sl_drain_name(const struct sl_drain *d) { return d->name; }

void sl_drain_info(struct sl_drain *d, struct sl_drain_info *info) {
  memset(info, 0, sizeof(*info));
  info->rate = d->shaper.rate;
  info->paused = d->paused;
  if (d->spool != NULL)
    info->spool = *shown_stats(d);
  info->eta_seconds = draining(d) ? backlog_eta(d, &info->spool) : -1;
  info->circuit = d->circuit.state;
  info->circuit_failures = d->circuit.failures;
  info->next_probe_ms = next_probe_wall_ms(d, now_ns(), sl_clock_wall_ms());
  info->adaptive = d->ucfg->adaptive;
  if (info->adaptive) {
    info->min_rate = d->ucfg->min_rate;
    info->max_rate = d->ucfg->max_rate;
    info->rate_increases = d->adaptive.increases;
    memcpy(info->rate_decreases, d->adaptive.decreases, sizeof(info->rate_decreases));
  }
  info->hold_until_ms =
      d->backend_hold_until_ms > sl_clock_wall_ms() ? d->backend_hold_until_ms : 0;
  info->drained_since_empty =
      d->seq_settled > d->settled_at_empty ? d->seq_settled - d->settled_at_empty : 0;
}

unsigned sl_drain_error_status(const char *error, size_t len) {
  unsigned status = 0;

  /* on_replay_done writes an answer that failed as "HTTP <status>" and nothing else. */
  if (error == NULL || len != 8 || memcmp(error, "HTTP ", 5) != 0)
    return 0;
  for (size_t i = 5; i < 8; i++) {
    if (error[i] < '0' || error[i] > '9')
      return 0;
    status = status * 10 + (unsigned)(error[i] - '0');
  }
  return status >= 100 ? status : 0;
}

/* ---- dead letters ------------------------------------------------------- */

struct dead_scan {
  const uint8_t *id; /* the one wanted, or NULL for all */
  struct sl_drain *d;
  bool redrive;
  uint64_t now_ms;
  size_t found;
};

/* Writes the status a dead letter <rec> gets from a redrive (queued, at the
 * end of the line) or a purge (purged). */
static void mark_dead_op(struct sl_drain *d, const struct sl_spool_record *rec, bool redrive,
                         uint64_t now_ms) {
  struct sl_ledger_entry e;

  if (d->ledger == NULL)
    return;
  if (!entry_of(d, rec, &e)) {
    e.attempts = rec->attempts + 1;
    snprintf(e.error, sizeof(e.error), "%.*s", (int)rec->error_len, rec->error ? rec->error : "");
  }
  e.flags = 0;
  e.updated_ms = now_ms;
  e.not_before_ms = 0;
  e.status = 0;
  if (redrive) {
    e.state = SL_LEDGER_QUEUED;
    e.attempts = 0; /* a redrive starts the count again, as the spool does */
    e.seq = accept_seq(d);
  } else {
    e.state = SL_LEDGER_PURGED;
  }
  sl_ledger_put(d->ledger, &e);
}

static int scan_dead(void *arg, const struct sl_spool_record *rec) {
  struct dead_scan *s = arg;

  if (s->id != NULL && memcmp(rec->id, s->id, 16) != 0)
    return 0;
  s->found++;
  recover_taken(s->d, rec);
  mark_dead_op(s->d, rec, s->redrive, s->now_ms);
  return s->id != NULL; /* one id: stop there */
}

/* Puts back "dead" for every record the dead store still holds whose status
 * says otherwise: after a redrive or purge that failed, the dead store is
 * the truth. */
static int restore_dead(void *arg, const struct sl_spool_record *rec) {
  struct sl_drain *d = arg;
  struct sl_ledger_entry e;

  if (sl_ledger_get(d->ledger, rec->id, &e) == 1 && e.state != SL_LEDGER_DEAD &&
      e.state != SL_LEDGER_EXPIRED && e.state != SL_LEDGER_INFLIGHT &&
      e.state != SL_LEDGER_DELIVERED) {
    char error[SL_LEDGER_ERROR_MAX];

    snprintf(error, sizeof(error), "%.*s", (int)rec->error_len, rec->error ? rec->error : "");
    e.state = SL_LEDGER_DEAD;
    e.attempts = rec->attempts + 1;
    e.updated_ms = sl_clock_wall_ms();
    memcpy(e.error, error, sizeof(error));
    sl_ledger_put(d->ledger, &e);
  }
  return 0;
}

static void on_dead_op_done(void *arg, int status) {
  struct sl_drain *d = arg;

  if (status != 0 && status != SL_ESPOOL_NOTFOUND) {
    sl_log_warn("spool %s: dead-letter operation failed: %s", d->name, sl_strerror(status));
    if (d->ledger != NULL && d->spool != NULL)
      sl_spool_dead_list(d->spool, restore_dead, d);
  }
  sl_drain_kick(d); /* redriven records are ready now */
}

int sl_drain_dead_op(struct sl_drain *d, bool redrive, const uint8_t *id) {
  struct dead_scan s = {id, d, redrive, sl_clock_wall_ms(), 0};
  int rc;

  if (d->spool == NULL)
    return SL_ESPOOL_CLOSED;
  /* The dead store is read here, on the loop, so that an unknown id is
   * answered at once and every status reads "queued" or "purged" before the
   * answer goes out; the spool's writer then does the move. */
  rc = sl_spool_dead_list(d->spool, scan_dead, &s);
  if (rc != 0)
    return rc;
  if (id != NULL && s.found == 0)
    return SL_ESPOOL_NOTFOUND;
  rc = redrive ? sl_spool_dead_redrive(d->spool, id, on_dead_op_done, d)
               : sl_spool_dead_purge(d->spool, id, on_dead_op_done, d);
  if (rc != 0 && d->ledger != NULL)
    sl_spool_dead_list(d->spool, restore_dead, d);
  return rc;
}

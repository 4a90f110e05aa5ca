/*
 * Adaptive rate: the rate an upstream's budget (sluice/shaper.h) should have,
 * learnt from how the backend answers, between bounds the operator sets.
 *
 * AIMD, as TCP and Vector's adaptive request concurrency do it, on a rate:
 *
 *   - additive increase: once per round, by <increase_step> requests/s, while
 *     the backend answers well (a good answer and no refusal in the round)
 *     and the latency (the 90th percentile of the answers since the rate last
 *     went down, from the last <window_ns>) stays under <target_latency_ns>;
 *   - multiplicative decrease: by <decrease_factor> on a 429, a 503, a
 *     Retry-After, a timeout, or a latency over the target; at most once per
 *     round, so that the answers to one burst (every request that was out
 *     when the backend started refusing) lower the rate once, not to the floor;
 *   - never outside [min_rate, max_rate].
 *
 * A round is the smoothed latency (an EWMA of the answers' times), and at
 * least <min_round_ns>: about the time the backend needs to show the effect
 * of the last change. Nothing changes without answers: an idle upstream keeps
 * its rate, and after a pause the rate moves again on the first answers,
 * judged on themselves (older samples leave the window with time).
 *
 * Pure logic: no I/O, no libuv; time is passed in (monotonic nanoseconds),
 * so tests drive it.
 *
 * @thread owner only
 */
#ifndef SLUICE_ADAPTIVE_H
#define SLUICE_ADAPTIVE_H

#include <stdbool.h>
#include <stdint.h>

/* How one request ended, as the controller reads it. */
enum sl_adaptive_outcome {
  SL_ADAPTIVE_OK,          /* a final answer (2xx-4xx but 408 and 429): the backend is well */
  SL_ADAPTIVE_NEUTRAL,     /* an error that says nothing about load (a 500, a reset) */
  SL_ADAPTIVE_429,         /* Too Many Requests */
  SL_ADAPTIVE_503,         /* Service Unavailable */
  SL_ADAPTIVE_RETRY_AFTER, /* a 429 or 503 with a Retry-After */
  SL_ADAPTIVE_TIMEOUT,     /* no answer in time (or a 408, 504) */
};

/* Why the rate went down; the latency is one cause. */
enum sl_adaptive_cause {
  SL_ADAPTIVE_CAUSE_429,
  SL_ADAPTIVE_CAUSE_503,
  SL_ADAPTIVE_CAUSE_RETRY_AFTER,
  SL_ADAPTIVE_CAUSE_TIMEOUT,
  SL_ADAPTIVE_CAUSE_LATENCY,
  SL_ADAPTIVE_CAUSES
};

struct sl_adaptive_params {
  double start_rate;          /* requests/s at first; within [min_rate, max_rate] */
  double min_rate, max_rate;  /* bounds, 0 < min_rate <= max_rate */
  uint64_t target_latency_ns; /* 0: latency is not looked at */
  double increase_step;       /* requests/s added per good round, > 0 */
  double decrease_factor;     /* the rate is multiplied by it on a decrease, in (0, 1) */
  uint64_t min_round_ns;      /* the shortest round, > 0 */
  uint64_t window_ns;         /* how long a latency sample counts, > 0 */
};

/* Latency samples kept: the percentile is taken over at most this many. */
#define SL_ADAPTIVE_SAMPLES 128
/* Answers a round needs before the latency may raise or lower the rate. */
#define SL_ADAPTIVE_MIN_SAMPLES 5

struct sl_adaptive {
  struct sl_adaptive_params p;
  double rate;
  uint64_t round_start_ns; /* when the current round began (the last change or look) */
  uint64_t srtt_ns;        /* smoothed latency; 0 before the first answer */
  bool round_bad;          /* a decrease signal came in this round */
  bool decreased;          /* ever: <last_decrease_ns> is set */
  uint64_t last_decrease_ns;
  uint32_t good_in_round; /* good answers in this round */
  /* The latency samples since the rate last went down: a ring, newest at <head - 1>. */
  uint64_t lat_ns[SL_ADAPTIVE_SAMPLES];
  uint64_t at_ns[SL_ADAPTIVE_SAMPLES];
  uint32_t head, count;
  uint64_t increases;
  uint64_t decreases[SL_ADAPTIVE_CAUSES];
};

/* Fills <p> with the defaults for what the config does not set: an increase step of 2 % of
 * <max_rate> (at least 0.1/s), a decrease to 70 %, rounds of at least 100 ms, a 10 s window. */
void sl_adaptive_defaults(struct sl_adaptive_params *p, double start_rate, double min_rate,
                          double max_rate, uint64_t target_latency_ns);

/* Sets up <a> at <p->start_rate> (brought within the bounds). */
void sl_adaptive_init(struct sl_adaptive *a, const struct sl_adaptive_params *p, uint64_t now_ns);

/*
 * A request ended at <now_ns> with <outcome>, <latency_ns> after it was sent
 * (0 when unknown: a timeout's time says nothing of the backend's speed).
 * Returns true when the rate changed (sl_adaptive_rate()).
 */
bool sl_adaptive_observe(struct sl_adaptive *a, uint64_t now_ns, enum sl_adaptive_outcome outcome,
                         uint64_t latency_ns);

/* The current rate, requests/s. */
double sl_adaptive_rate(const struct sl_adaptive *a);

/* The 90th percentile latency of the samples in the window at <now_ns> (since the rate
 * last went down, from the last <window_ns>), or 0 with fewer than SL_ADAPTIVE_MIN_SAMPLES
 * of them. */
uint64_t sl_adaptive_p90_ns(const struct sl_adaptive *a, uint64_t now_ns);

/* The name of <cause> for metrics and logs: "429", "503", "retry_after", "timeout",
 * "latency". */
const char *sl_adaptive_cause_name(enum sl_adaptive_cause cause);

#endif

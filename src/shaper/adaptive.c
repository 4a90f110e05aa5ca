/*
 * Adaptive rate: AIMD on an upstream's rate from its answers. See
 * include/sluice/adaptive.h.
 */
#include "sluice/adaptive.h"

#include <string.h>

#define MS 1000000ull

/* The share of <max_rate> one good round adds, and the least step. */
#define DEFAULT_STEP_SHARE 0.02
#define MIN_STEP 0.1
#define DEFAULT_DECREASE 0.7
#define DEFAULT_MIN_ROUND_NS (100 * MS)
#define DEFAULT_WINDOW_NS (10000 * MS)

void sl_adaptive_defaults(struct sl_adaptive_params *p, double start_rate, double min_rate,
                          double max_rate, uint64_t target_latency_ns) {
  memset(p, 0, sizeof(*p));
  p->start_rate = start_rate;
  p->min_rate = min_rate;
  p->max_rate = max_rate;
  p->target_latency_ns = target_latency_ns;
  p->increase_step =
      max_rate * DEFAULT_STEP_SHARE > MIN_STEP ? max_rate * DEFAULT_STEP_SHARE : MIN_STEP;
  p->decrease_factor = DEFAULT_DECREASE;
  p->min_round_ns = DEFAULT_MIN_ROUND_NS;
  p->window_ns = DEFAULT_WINDOW_NS;
}

static double clamp_rate(const struct sl_adaptive *a, double rate) {
  if (rate < a->p.min_rate)
    return a->p.min_rate;
  return rate > a->p.max_rate ? a->p.max_rate : rate;
}

/* A new round starts at <now_ns>: its verdict looks at what comes from here. */
static void new_round(struct sl_adaptive *a, uint64_t now_ns) {
  a->round_start_ns = now_ns;
  a->round_bad = false;
  a->good_in_round = 0;
}

void sl_adaptive_init(struct sl_adaptive *a, const struct sl_adaptive_params *p, uint64_t now_ns) {
  memset(a, 0, sizeof(*a));
  a->p = *p;
  a->rate = clamp_rate(a, p->start_rate);
  new_round(a, now_ns);
}

double sl_adaptive_rate(const struct sl_adaptive *a) { return a->rate; }

const char *sl_adaptive_cause_name(enum sl_adaptive_cause cause) {
  static const char *const names[SL_ADAPTIVE_CAUSES] = {"429", "503", "retry_after", "timeout",
                                                        "latency"};

  return (unsigned)cause < SL_ADAPTIVE_CAUSES ? names[cause] : "unknown";
}

static uint64_t round_ns(const struct sl_adaptive *a) {
  return a->srtt_ns > a->p.min_round_ns ? a->srtt_ns : a->p.min_round_ns;
}

/* The latency samples still in the window at <now_ns>, sorted, into <out>; their count. */
static uint32_t window_sorted(const struct sl_adaptive *a, uint64_t now_ns, uint64_t *out) {
  uint32_t n = 0;

  for (uint32_t i = 0; i < a->count; i++) {
    uint32_t k = (a->head + SL_ADAPTIVE_SAMPLES - 1 - i) % SL_ADAPTIVE_SAMPLES;
    uint32_t j = n++;

    if (a->at_ns[k] + a->p.window_ns < now_ns) {
      n--; /* and the older ones are older still */
      break;
    }
    for (; j > 0 && out[j - 1] > a->lat_ns[k]; j--) /* insertion: at most 128 of them */
      out[j] = out[j - 1];
    out[j] = a->lat_ns[k];
  }
  return n;
}

static uint64_t percentile90(const uint64_t *sorted, uint32_t n) {
  uint32_t rank = (n * 9 + 9) / 10; /* ceil(0.9 n), the nearest-rank percentile */

  return n == 0 ? 0 : sorted[rank - 1];
}

uint64_t sl_adaptive_p90_ns(const struct sl_adaptive *a, uint64_t now_ns) {
  uint64_t sorted[SL_ADAPTIVE_SAMPLES];
  uint32_t n = window_sorted(a, now_ns, sorted);

  return n < SL_ADAPTIVE_MIN_SAMPLES ? 0 : percentile90(sorted, n);
}

static void add_sample(struct sl_adaptive *a, uint64_t now_ns, uint64_t latency_ns) {
  if (a->srtt_ns == 0)
    a->srtt_ns = latency_ns;
  else if (latency_ns > a->srtt_ns)
    a->srtt_ns += (latency_ns - a->srtt_ns) / 8;
  else
    a->srtt_ns -= (a->srtt_ns - latency_ns) / 8;
  a->lat_ns[a->head] = latency_ns;
  a->at_ns[a->head] = now_ns;
  a->head = (a->head + 1) % SL_ADAPTIVE_SAMPLES;
  if (a->count < SL_ADAPTIVE_SAMPLES)
    a->count++;
}

/* Lowers the rate for <cause>. The samples go: they describe the old rate, and
 * would lower it again. */
static bool decrease(struct sl_adaptive *a, uint64_t now_ns, enum sl_adaptive_cause cause) {
  double before = a->rate;

  a->rate = clamp_rate(a, a->rate * a->p.decrease_factor);
  a->decreases[cause]++;
  a->last_decrease_ns = now_ns;
  a->decreased = true;
  a->count = 0;
  new_round(a, now_ns);
  return a->rate != before;
}

static bool cause_of(enum sl_adaptive_outcome outcome, enum sl_adaptive_cause *cause) {
  switch (outcome) {
  case SL_ADAPTIVE_429:
    *cause = SL_ADAPTIVE_CAUSE_429;
    return true;
  case SL_ADAPTIVE_503:
    *cause = SL_ADAPTIVE_CAUSE_503;
    return true;
  case SL_ADAPTIVE_RETRY_AFTER:
    *cause = SL_ADAPTIVE_CAUSE_RETRY_AFTER;
    return true;
  case SL_ADAPTIVE_TIMEOUT:
    *cause = SL_ADAPTIVE_CAUSE_TIMEOUT;
    return true;
  default:
    return false;
  }
}

/* The end of a round: the latency lowers the rate, or a good round raises it. */
static bool end_round(struct sl_adaptive *a, uint64_t now_ns) {
  uint64_t sorted[SL_ADAPTIVE_SAMPLES];
  uint32_t n = window_sorted(a, now_ns, sorted);
  uint64_t p90 = percentile90(sorted, n);
  uint64_t target = a->p.target_latency_ns;
  bool good = a->good_in_round > 0 && !a->round_bad;
  double before = a->rate;

  if (target > 0 && n >= SL_ADAPTIVE_MIN_SAMPLES && p90 > target)
    return decrease(a, now_ns, SL_ADAPTIVE_CAUSE_LATENCY);
  /* Latency known to be under the target (or not looked at), and no refusal. */
  if (good && (target == 0 || (n > 0 && p90 <= target))) {
    a->rate = clamp_rate(a, a->rate + a->p.increase_step);
    if (a->rate != before)
      a->increases++;
  }
  new_round(a, now_ns);
  return a->rate != before;
}

bool sl_adaptive_observe(struct sl_adaptive *a, uint64_t now_ns, enum sl_adaptive_outcome outcome,
                         uint64_t latency_ns) {
  enum sl_adaptive_cause cause;

  if (latency_ns > 0 && outcome != SL_ADAPTIVE_TIMEOUT)
    add_sample(a, now_ns, latency_ns);
  if (cause_of(outcome, &cause)) {
    /* Once per round: the answers to what was already out say the same thing again. */
    if (!a->decreased || now_ns - a->last_decrease_ns >= round_ns(a))
      return decrease(a, now_ns, cause);
    a->round_bad = true;
    return false;
  }
  if (outcome == SL_ADAPTIVE_OK)
    a->good_in_round++;
  if (now_ns - a->round_start_ns >= round_ns(a))
    return end_round(a, now_ns);
  return false;
}

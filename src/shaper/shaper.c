/*
 * Token bucket plus in-flight cap. Tokens are refilled lazily from the time
 * passed in, so the shaper needs no timer of its own.
 */
#include "sluice/shaper.h"

static void refill(struct sl_shaper *s, uint64_t now_ns) {
  if (s->rate <= 0) {
    s->tokens = s->burst;
  } else if (now_ns > s->last_ns) {
    s->tokens += s->rate * (double)(now_ns - s->last_ns) / 1e9;
    if (s->tokens > s->burst)
      s->tokens = s->burst;
  }
  if (now_ns > s->last_ns)
    s->last_ns = now_ns;
}

static double burst_of(uint32_t burst) { return burst >= 1 ? (double)burst : 1.0; }

void sl_shaper_init(struct sl_shaper *s, double rate, uint32_t burst, uint32_t max_inflight,
                    uint64_t now_ns) {
  s->rate = rate > 0 ? rate : 0;
  s->burst = burst_of(burst);
  s->max_inflight = max_inflight;
  s->tokens = s->burst;
  s->last_ns = now_ns;
  s->inflight = 0;
}

void sl_shaper_configure(struct sl_shaper *s, double rate, uint32_t burst, uint32_t max_inflight,
                         uint64_t now_ns) {
  refill(s, now_ns);
  s->rate = rate > 0 ? rate : 0;
  s->burst = burst_of(burst);
  s->max_inflight = max_inflight;
  if (s->tokens > s->burst)
    s->tokens = s->burst;
}

bool sl_shaper_full(const struct sl_shaper *s) {
  return s->max_inflight != 0 && s->inflight >= s->max_inflight;
}

bool sl_shaper_try_acquire(struct sl_shaper *s, uint64_t now_ns) {
  if (sl_shaper_full(s))
    return false;
  refill(s, now_ns);
  if (s->tokens < 1.0)
    return false;
  s->tokens -= 1.0;
  s->inflight++;
  return true;
}

void sl_shaper_release(struct sl_shaper *s) {
  if (s->inflight > 0)
    s->inflight--;
}

uint64_t sl_shaper_token_wait_ns(struct sl_shaper *s, uint64_t now_ns) {
  refill(s, now_ns);
  if (s->tokens >= 1.0 || s->rate <= 0)
    return 0;
  /* Rounded up, so that a timer set for it finds the token there. */
  return (uint64_t)((1.0 - s->tokens) / s->rate * 1e9) + 1;
}

enum sl_shaper_verdict sl_shaper_decide(struct sl_shaper *s, uint64_t now_ns, bool spillable,
                                        bool backlog, bool waiting) {
  /* Live first: a request that may not spill goes ahead of the backlog; one
   * that may queues behind it, so that requests are delivered in order. */
  bool behind = waiting || (spillable && backlog);

  if (!behind && sl_shaper_try_acquire(s, now_ns))
    return SL_SHAPER_FORWARD;
  return spillable ? SL_SHAPER_SPILL : SL_SHAPER_QUEUE;
}

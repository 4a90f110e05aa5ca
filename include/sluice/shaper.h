/*
 * Shaper: the budget of one upstream and the FORWARD / SPILL / QUEUE
 * decision for each request.
 *
 * The budget is a token bucket (<rate> tokens per second, at most <burst>
 * saved up) plus a cap on requests at the backend at once (<max_inflight>).
 * Live and replayed requests share it, live first: the drainer asks for a
 * slot only when no live request is waiting. A token bucket bounds the
 * requests started in any window of T seconds by burst + rate * T, which is
 * the guarantee an operator sets the rate for.
 *
 * Pure logic: no I/O, no libuv; time is passed in (monotonic nanoseconds), so
 * tests drive it.
 *
 * @thread owner only
 */
#ifndef SLUICE_SHAPER_H
#define SLUICE_SHAPER_H

#include <stdbool.h>
#include <stdint.h>

struct sl_shaper {
  double rate;           /* tokens per second; 0 = unlimited */
  double burst;          /* bucket size, >= 1 */
  uint32_t max_inflight; /* 0 = unlimited */
  double tokens;
  uint64_t last_ns; /* when <tokens> was last brought up to date */
  uint32_t inflight;
};

enum sl_shaper_verdict {
  SL_SHAPER_FORWARD, /* a slot was taken: send it now, then sl_shaper_release() */
  SL_SHAPER_SPILL,   /* store it in the spool and answer 202 */
  SL_SHAPER_QUEUE,   /* may not spill: wait in memory for a slot (or time out, 503) */
};

/* Sets up <s> with a full bucket. <rate> 0 means unlimited. */
void sl_shaper_init(struct sl_shaper *s, double rate, uint32_t burst, uint32_t max_inflight,
                    uint64_t now_ns);

/* Applies new settings (a reload or the admin API) without losing state: the
 * requests in flight stay counted and saved tokens are kept up to the new burst. */
void sl_shaper_configure(struct sl_shaper *s, double rate, uint32_t burst, uint32_t max_inflight,
                         uint64_t now_ns);

/* Takes one slot (a token and an in-flight place) if both are free now. */
bool sl_shaper_try_acquire(struct sl_shaper *s, uint64_t now_ns);

/* A request that held a slot has finished at the backend. */
void sl_shaper_release(struct sl_shaper *s);

/*
 * How long until sl_shaper_try_acquire() can succeed as far as the rate is
 * concerned: 0 if a token is there now. In-flight places free up on release,
 * not with time, so this ignores them.
 */
uint64_t sl_shaper_token_wait_ns(struct sl_shaper *s, uint64_t now_ns);

/* Whether every in-flight place is taken. */
bool sl_shaper_full(const struct sl_shaper *s);

/*
 * The decision for a new live request: FORWARD (slot taken) when the budget
 * has room and nothing is ahead of it: no live request <waiting> in memory
 * and, for a <spillable> request, no <backlog> in the spool (spillable
 * requests are delivered in order; others are live traffic and go first).
 * Otherwise SPILL when <spillable>, else QUEUE.
 */
enum sl_shaper_verdict sl_shaper_decide(struct sl_shaper *s, uint64_t now_ns, bool spillable,
                                        bool backlog, bool waiting);

#endif

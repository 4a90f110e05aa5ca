/*
 * Circuit: the health of one upstream as a circuit breaker, shared by the
 * live path and the drain.
 *
 *   closed ──(threshold failure steps)──► open ──(probe due)──► half-open
 *     ▲                                    ▲                        │
 *     └──────────(any success)─────────────┴───(probe failed)───────┘
 *
 * Closed: requests go out as the budget allows. Failures are counted in
 * steps: a failure counts only if its request started after the last counted
 * failure, so the requests that were out together when the backend went away
 * are one step, not one each. After <threshold> steps the circuit opens.
 *
 * Open: nothing is sent until the next probe is due; then one request at a
 * time may go out as a probe (half-open). A failed probe opens the circuit
 * again with the wait doubled, from <first_probe> up to <max_probe>: the
 * backoff grows per probe, never per failed request. A success of any request
 * (a probe, a replay or a live request) closes the circuit at once.
 *
 * A probe whose result never comes (a live client that went away) is given
 * up after <probe_timeout>, and another may go out.
 *
 * Pure logic: no I/O, no libuv; time is passed in (monotonic nanoseconds), so
 * tests drive it.
 *
 * @thread owner only
 */
#ifndef SLUICE_CIRCUIT_H
#define SLUICE_CIRCUIT_H

#include <stdbool.h>
#include <stdint.h>

/* Defaults: the circuit opens after 3 failure steps; the first probe goes 1 s
 * later and the wait doubles per failed probe up to 3 s, so a backend that
 * comes back is found within 3 s however long it was away. */
#define SL_CIRCUIT_THRESHOLD 3u
#define SL_CIRCUIT_FIRST_PROBE_NS 1000000000ull
#define SL_CIRCUIT_MAX_PROBE_NS 3000000000ull

enum sl_circuit_state {
  SL_CIRCUIT_CLOSED = 0,
  SL_CIRCUIT_HALF_OPEN = 1,
  SL_CIRCUIT_OPEN = 2,
};

/* What a reported result did to the circuit. */
enum sl_circuit_change {
  SL_CIRCUIT_SAME,         /* no change of state */
  SL_CIRCUIT_OPENED,       /* closed or half-open -> open */
  SL_CIRCUIT_CLOSED_AGAIN, /* open or half-open -> closed */
};

struct sl_circuit {
  enum sl_circuit_state state;
  unsigned threshold;
  uint64_t first_probe_ns, max_probe_ns, probe_timeout_ns;
  unsigned failures;         /* consecutive failure steps */
  unsigned probes_failed;    /* failed probes since it opened */
  uint64_t last_failure_ns;  /* when the last step was counted */
  uint64_t next_probe_ns;    /* open: when a probe may go out */
  uint64_t probe_started_ns; /* half-open: when the probe went out */
  uint64_t transitions;      /* state changes so far */
};

/* Sets up <c> closed. <threshold> 0 is taken as 1; <probe_timeout_ns> 0 means
 * a probe is never given up. */
void sl_circuit_init(struct sl_circuit *c, unsigned threshold, uint64_t first_probe_ns,
                     uint64_t max_probe_ns, uint64_t probe_timeout_ns);

/* Sets how long a probe may stay out before another may go (a reload). */
void sl_circuit_set_probe_timeout(struct sl_circuit *c, uint64_t probe_timeout_ns);

/*
 * Whether a request may go to the backend now, at <now_ns>. Closed: true.
 * Open with the probe due, or half-open with the probe given up: the circuit
 * is (again) half-open, the caller's request is the probe, and true. Else
 * false. The caller must report the request's result.
 */
bool sl_circuit_allow(struct sl_circuit *c, uint64_t now_ns);

/*
 * A request that started at <started_ns> failed at <now_ns> (the backend could
 * not be reached or answered as overloaded). Returns what it did: a step
 * towards opening, a failed probe opening the circuit again, or nothing for a
 * request that was out together with one already counted.
 */
enum sl_circuit_change sl_circuit_failure(struct sl_circuit *c, uint64_t started_ns,
                                          uint64_t now_ns);

/* A request got an answer from the backend: the circuit closes. */
enum sl_circuit_change sl_circuit_success(struct sl_circuit *c);

/* An operator asked for a try now (resume, reload): an open circuit's next
 * probe is due at <now_ns>. Does nothing to a closed or half-open circuit. */
void sl_circuit_probe_now(struct sl_circuit *c, uint64_t now_ns);

/* How long from <now_ns> until a probe may go out: 0 when closed or due now,
 * or UINT64_MAX while a probe is out with no timeout. */
uint64_t sl_circuit_wait_ns(const struct sl_circuit *c, uint64_t now_ns);

/* Whether an answer with <status> is a failure of the upstream (unavailable or
 * overloaded): 502, 503, 504 and 429. Any other status, 500 included, is the
 * request's own outcome, and the backend was reached. */
bool sl_circuit_status_fails(unsigned status);

/* "closed", "half-open" or "open". */
const char *sl_circuit_state_name(enum sl_circuit_state s);

#endif

/*
 * Circuit breaker arithmetic (see include/sluice/circuit.h for the rules).
 * One step per outage: a failure counts only when its request started after
 * the last counted failure, which is what tells a burst of requests that
 * failed together from failures one after another.
 */
#include "sluice/circuit.h"

#include "sluice/util.h"

static const char *const state_names[] = {"closed", "half-open", "open"};

static void set_state(struct sl_circuit *c, enum sl_circuit_state s) {
  if (c->state != s)
    c->transitions++;
  c->state = s;
}

/* The wait before the next probe after <probes_failed> failed probes: the
 * first wait, doubled per failed probe, capped. */
static uint64_t probe_wait(const struct sl_circuit *c) {
  uint64_t w = c->first_probe_ns;

  for (unsigned i = 0; i < c->probes_failed && w < c->max_probe_ns; i++)
    w *= 2;
  return w < c->max_probe_ns ? w : c->max_probe_ns;
}

static void open_at(struct sl_circuit *c, uint64_t now_ns) {
  set_state(c, SL_CIRCUIT_OPEN);
  c->next_probe_ns = now_ns + probe_wait(c);
}

void sl_circuit_init(struct sl_circuit *c, unsigned threshold, uint64_t first_probe_ns,
                     uint64_t max_probe_ns, uint64_t probe_timeout_ns) {
  c->state = SL_CIRCUIT_CLOSED;
  c->threshold = threshold > 0 ? threshold : 1;
  c->first_probe_ns = first_probe_ns > 0 ? first_probe_ns : 1;
  c->max_probe_ns = max_probe_ns >= c->first_probe_ns ? max_probe_ns : c->first_probe_ns;
  c->probe_timeout_ns = probe_timeout_ns;
  c->failures = 0;
  c->probes_failed = 0;
  c->last_failure_ns = 0;
  c->next_probe_ns = 0;
  c->probe_started_ns = 0;
  c->transitions = 0;
}

void sl_circuit_set_probe_timeout(struct sl_circuit *c, uint64_t probe_timeout_ns) {
  c->probe_timeout_ns = probe_timeout_ns;
}

static bool probe_given_up(const struct sl_circuit *c, uint64_t now_ns) {
  return c->probe_timeout_ns > 0 && now_ns - c->probe_started_ns >= c->probe_timeout_ns;
}

bool sl_circuit_allow(struct sl_circuit *c, uint64_t now_ns) {
  switch (c->state) {
  case SL_CIRCUIT_CLOSED:
    return true;
  case SL_CIRCUIT_OPEN:
    if (now_ns < c->next_probe_ns)
      return false;
    set_state(c, SL_CIRCUIT_HALF_OPEN);
    c->probe_started_ns = now_ns;
    return true;
  case SL_CIRCUIT_HALF_OPEN:
    if (!probe_given_up(c, now_ns))
      return false;
    c->probe_started_ns = now_ns;
    return true;
  }
  return false;
}

enum sl_circuit_change sl_circuit_failure(struct sl_circuit *c, uint64_t started_ns,
                                          uint64_t now_ns) {
  switch (c->state) {
  case SL_CIRCUIT_CLOSED:
    if (c->failures > 0 && started_ns < c->last_failure_ns)
      return SL_CIRCUIT_SAME; /* out together with a failure already counted */
    c->failures++;
    c->last_failure_ns = now_ns;
    if (c->failures < c->threshold)
      return SL_CIRCUIT_SAME;
    c->probes_failed = 0;
    open_at(c, now_ns);
    return SL_CIRCUIT_OPENED;
  case SL_CIRCUIT_HALF_OPEN:
    if (started_ns < c->probe_started_ns)
      return SL_CIRCUIT_SAME; /* older than the probe: not its result */
    c->failures++;
    c->last_failure_ns = now_ns;
    c->probes_failed++;
    open_at(c, now_ns);
    return SL_CIRCUIT_OPENED;
  case SL_CIRCUIT_OPEN:
    break; /* sent before it opened: part of the step that opened it */
  }
  return SL_CIRCUIT_SAME;
}

enum sl_circuit_change sl_circuit_success(struct sl_circuit *c) {
  bool was_closed = c->state == SL_CIRCUIT_CLOSED;

  c->failures = 0;
  c->probes_failed = 0;
  set_state(c, SL_CIRCUIT_CLOSED);
  return was_closed ? SL_CIRCUIT_SAME : SL_CIRCUIT_CLOSED_AGAIN;
}

void sl_circuit_probe_now(struct sl_circuit *c, uint64_t now_ns) {
  if (c->state == SL_CIRCUIT_OPEN && c->next_probe_ns > now_ns)
    c->next_probe_ns = now_ns;
}

uint64_t sl_circuit_wait_ns(const struct sl_circuit *c, uint64_t now_ns) {
  switch (c->state) {
  case SL_CIRCUIT_CLOSED:
    return 0;
  case SL_CIRCUIT_OPEN:
    return c->next_probe_ns > now_ns ? c->next_probe_ns - now_ns : 0;
  case SL_CIRCUIT_HALF_OPEN:
    if (c->probe_timeout_ns == 0)
      return UINT64_MAX;
    return probe_given_up(c, now_ns) ? 0 : c->probe_started_ns + c->probe_timeout_ns - now_ns;
  }
  return 0;
}

bool sl_circuit_status_fails(unsigned status) {
  return status == 502 || status == 503 || status == 504 || status == 429;
}

const char *sl_circuit_state_name(enum sl_circuit_state s) {
  return (unsigned)s < sl_countof(state_names) ? state_names[s] : "?";
}

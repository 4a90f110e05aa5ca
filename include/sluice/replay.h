/*
 * Replay: one HTTP exchange with an upstream on behalf of the drainer, not of
 * a connected client. The request is given as ready bytes (head and body);
 * the whole response is read and kept (up to a bound) so that a client held
 * in wait mode can be given the backend's real answer.
 *
 * The exchange itself is the one the live proxy uses (include/sluice/
 * exchange.h): the same connection reuse rules, the same stale-connection
 * retry (once, on a fresh connection, for an idempotent method as
 * sl_http_method_idempotent() says, read from the request line), and request
 * bytes that stay alive until their write has called back, even when the
 * replay ends or is cancelled first.
 *
 * @thread loop
 */
#ifndef SLUICE_REPLAY_H
#define SLUICE_REPLAY_H

#include <stdbool.h>
#include <stdint.h>

#include "sluice/buf.h"
#include "sluice/http.h"
#include "sluice/upstream.h"

struct sl_replay;

struct sl_replay_result {
  int error;               /* 0: a response arrived; else a UV_* code (connect, timeout, reset) */
  const char *what;        /* with <error>: what failed, for logs and dead letters */
  unsigned status;         /* the response's status when <error> is 0 */
  uint64_t retry_after_ms; /* from a Retry-After header (seconds or HTTP date); 0 if none */
  const struct sl_http_msg *head; /* the response head, valid during the callback */
  const struct sl_buf *body;      /* its body (cut at the bound: see <truncated>) */
  bool truncated;                 /* the body was longer than the bound */
  /* With <error>: no byte of the request reached any connection (connect refused or timed
   * out, no connection): the backend cannot have seen this attempt. */
  bool nothing_sent;
  uint64_t duration_ns; /* from the start, connecting included */
};

/* Runs once per replay, after which the replay is freed. */
typedef void (*sl_replay_cb)(const struct sl_replay_result *res, void *arg);

/*
 * Sends <req> (<len> bytes, copied: a request line, head and body) to <pool>
 * and reads the response; keeps up to <max_body> bytes of its body. The method
 * of the request line decides whether the response to it has a body (HEAD)
 * and whether a stale connection may be retried. <timeout_ms> bounds the wait
 * for the response head and every gap between reads. Stores the replay in
 * <out> and returns 0; <cb> then runs exactly once, never before this
 * returns. Returns a negative UV_* code if the exchange ended at once (then
 * <cb> never runs): the connect could not start, or the pooled connection
 * failed the first write (nothing was sent in both cases), or memory ran out
 * (UV_ENOMEM); UV_EINVAL if <req> does not start with a known method.
 */
int sl_replay_start(struct sl_upstream *pool, const char *req, size_t len, uint64_t timeout_ms,
                    size_t max_body, sl_replay_cb cb, void *arg, struct sl_replay **out);

/* Abandons a replay: its connection is closed and <cb> never runs; a write still
 * pending keeps the request bytes until it calls back. */
void sl_replay_cancel(struct sl_replay *r);

/* Parses a Retry-After value (delay-seconds or an HTTP date) relative to
 * <now_ms> (wall clock). Returns the delay in ms, or 0 if it does not parse. */
uint64_t sl_replay_parse_retry_after(const char *value, size_t len, uint64_t now_ms);

#endif

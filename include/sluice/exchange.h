/*
 * One request/response exchange with an upstream, the single implementation
 * of it: the live proxy (server/proxy.c) streams the response to its client
 * through it, the replayer (drain/replay.c) keeps the response in memory.
 *
 * An exchange gets a connection (a pooled one, else a new connect), writes
 * the request head and body, reads and parses the response (interim 1xx
 * responses are skipped), bounds the wait with the response timeout, and
 * retries once on a fresh connection when a pooled connection turns out to
 * have been closed by the backend and resending is safe
 * (sl_upconn_stale_retry_ok() with sl_http_method_idempotent()).
 *
 * Ownership of the request bytes: <head> and <body> of the request are
 * borrowed and sent in place. When they cannot all be written at once, the
 * pending write takes them over (the caller's buffers are moved into it and
 * left empty) and keeps them until libuv has called back, even if the
 * exchange ends, is cancelled or destroyed first; if the exchange still runs
 * then, they are moved back. So the caller must leave <head> and <body> alone
 * from sl_upx_start() until the end callback ran or it cancelled; then they
 * are either intact or empty (never freed under a pending write), and it may
 * reset, reuse or free them. In particular, after a failure with
 * <nothing_sent> they are intact.
 *
 * Connection reuse: the connection goes back to the pool only when the
 * response was complete and keep-alive, no byte followed it, and the request's
 * write has completed. A response that arrives while the request is still
 * being written (a backend that answers before reading the body) ends the
 * exchange at once; its connection is closed once the write has ended
 * (sl_upconn_release), never reused.
 *
 * Callbacks run from the loop, or from inside sl_upx_start() and
 * sl_upx_resume() when the exchange ends at once. Inside any callback the
 * user may cancel, destroy, or (in the end callback) start the next exchange
 * on the same object; the exchange checks that it is still its own afterwards.
 *
 * @thread loop (the loop of the upstream it is started on)
 */
#ifndef SLUICE_EXCHANGE_H
#define SLUICE_EXCHANGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/buf.h"
#include "sluice/http.h"
#include "sluice/upstream.h"

struct sl_upx;

struct sl_upx_request {
  uint8_t method;      /* llhttp_method_t: HEAD answers have no body; decides the stale retry */
  struct sl_buf *head; /* the request head, ready to send (borrowed, see above) */
  struct sl_buf *body; /* the body that follows it; NULL or empty: none (borrowed) */
  uint64_t timeout_ms; /* bounds the wait for the response head and each gap between reads */
};

struct sl_upx_result {
  int error;          /* 0: a complete response arrived; else a UV_* code */
  const char *what;   /* with <error>: what failed, static text for logs and dead letters */
  const char *detail; /* with <error> UV_EPROTO: the parser's reason, static text; else NULL */
  /* With <error>: no byte of the request was handed to any connection (there was no
   * connection: the connect could not start, was refused or timed out; or the first write
   * failed at once). The backend cannot have seen it, so it may be queued or sent again. */
  bool nothing_sent;
  bool response_started; /* a byte of a response arrived */
  uint64_t duration_ns;  /* since sl_upx_start(), connecting included */
  /* <error> 0: the final response head, valid until the callback returns or the
   * exchange is started again. */
  const struct sl_http_msg *head;
};

/* The final response head (status >= 200). Return 0 to go on, or a negative UV_*
 * code (UV_EPROTO: refused; UV_ENOMEM) to end the exchange with that error. */
typedef int (*sl_upx_head_cb)(struct sl_upx *x, const struct sl_http_msg *head, void *user);
/* Body bytes of the final response, de-chunked, borrowed for the call. Returns as above. */
typedef int (*sl_upx_body_cb)(struct sl_upx *x, const char *data, size_t len, void *user);
/* The bytes of one read were all passed on and the response is not complete yet: the
 * moment to flush what was passed on and, if the receiver is behind, sl_upx_pause(). */
typedef void (*sl_upx_read_cb)(struct sl_upx *x, void *user);
/* The exchange ended: <res> says how (borrowed for the call). The connection has
 * already been released or closed. Runs once per sl_upx_start(), unless cancelled. */
typedef void (*sl_upx_end_cb)(struct sl_upx *x, const struct sl_upx_result *res, void *user);

struct sl_upx_callbacks {
  sl_upx_head_cb on_head; /* may be NULL */
  sl_upx_body_cb on_body; /* may be NULL: the body is dropped */
  sl_upx_read_cb on_read; /* may be NULL */
  sl_upx_end_cb on_end;
};

/* Creates an idle exchange object that calls <cbs> (borrowed: keep it alive, e.g.
 * static) with <user>. One object serves one exchange at a time and can be started
 * again after each end, which costs no allocation. NULL on ENOMEM. */
struct sl_upx *sl_upx_create(const struct sl_upx_callbacks *cbs, void *user);

/* Cancels any exchange (sl_upx_cancel) and frees <x>; inside one of its callbacks the
 * memory is freed once the callback has returned. Accepts NULL. */
void sl_upx_destroy(struct sl_upx *x);

/* Starts an exchange of <req> (copied, its buffers borrowed) with upstream <up>. <x>
 * must be idle. The end callback runs exactly once, maybe before this returns
 * (a connect that could not start, a pooled connection that failed at once). */
void sl_upx_start(struct sl_upx *x, struct sl_upstream *up, const struct sl_upx_request *req);

/* Ends the current exchange, if any, without calling back: its connection is
 * closed, a pending write keeps the request bytes until it calls back. */
void sl_upx_cancel(struct sl_upx *x);

/* Stops reading the response (the receiver is behind) until sl_upx_resume(). The
 * response timeout still runs. An error on resuming ends the exchange. */
void sl_upx_pause(struct sl_upx *x);
void sl_upx_resume(struct sl_upx *x);

/* Whether an exchange is running on <x>. */
bool sl_upx_active(const struct sl_upx *x);

#endif

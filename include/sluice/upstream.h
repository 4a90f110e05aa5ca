/*
 * Upstream connection pool: keep-alive connections to one backend.
 *
 * `struct sl_upstream` is the run-time side of an upstream config: it lives
 * across reloads (matched by name) while its config pointer is swapped. A
 * connection (`struct sl_upconn`) is either idle in its upstream's pool or
 * lent to one user (a client request) until released or closed. An idle
 * connection that the backend closes or writes to is dropped from the pool at
 * once, so a stale connection is rarely handed out; when it still happens (the
 * close crossed the request on the wire), the user sees EOF before any
 * response byte and may retry an idempotent request on a fresh connection.
 *
 * A connection goes back to the pool only when its user says the response was
 * complete and reusable and no write it started through sl_upconn_write() is
 * pending: a connection released while its request is still being written (a
 * backend that answered before reading the whole body) is closed once that
 * write has ended, never handed to another request. The request/response
 * exchange over a connection is include/sluice/exchange.h.
 *
 * Per loop: a pool, its connections and their timers belong to one loop, and
 * read into that loop's buffer (sluice/loop.h). With several loops each has
 * its own pool of each upstream; what is per upstream and shared among them
 * (budget, spool, ledger) is the drain's (sluice/drain.h).
 *
 * @thread loop (one uv_loop_t owns an upstream and its connections)
 */
#ifndef SLUICE_UPSTREAM_H
#define SLUICE_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "sluice/config.h"
#include "sluice/loop.h"

struct sl_upstream;
struct sl_upconn;

/* <status> is 0 once connected, else a UV_* error (UV_ETIMEDOUT for the
 * connect timeout). On error the connection is already gone. */
typedef void (*sl_upconn_ready_cb)(struct sl_upconn *uc, int status, void *user);
/* Data or an error (UV_EOF included) on a lent connection. <buf> is borrowed for the call. */
typedef void (*sl_upconn_read_cb)(struct sl_upconn *uc, ssize_t nread, const char *buf, void *user);
typedef void (*sl_upconn_timer_cb)(struct sl_upconn *uc, void *user);

/* Creates the run-time state of upstream <cfg> (borrowed: the caller keeps the
 * config alive and calls sl_upstream_update() before freeing it) on the loop of
 * <lp> (borrowed: outlives the pool), whose read buffer its connections read into. */
struct sl_upstream *sl_upstream_create(struct sl_loop *lp, const struct sl_upstream_config *cfg);
/* Switches to a new config of the same upstream. Idle connections to an old
 * address are closed. */
void sl_upstream_update(struct sl_upstream *up, const struct sl_upstream_config *cfg);
const struct sl_upstream_config *sl_upstream_config_of(const struct sl_upstream *up);
/* Closes idle connections; lent ones close when released. Frees once all are
 * gone. Accepts NULL. */
void sl_upstream_destroy(struct sl_upstream *up);

/*
 * Gets a connection for one request. Unless <fresh> is set, an idle one is
 * reused: then it is stored in <out> and 1 is returned, and <cb> is not
 * called. Otherwise a connect starts, 0 is returned, <out> is set, and <cb>
 * runs once connected or failed. Returns a negative UV_* error when even the
 * connect could not start.
 */
int sl_upstream_get(struct sl_upstream *up, bool fresh, sl_upconn_ready_cb cb, void *user,
                    struct sl_upconn **out);

/* The stream to write the request to. */
uv_stream_t *sl_upconn_stream(struct sl_upconn *uc);
/* Requests this connection carried before the current one (0: fresh). */
unsigned sl_upconn_reuses(const struct sl_upconn *uc);

/*
 * Whether a request that failed on <uc> (NULL: none) may be sent again on a fresh
 * connection: <uc> was reused, so it most likely was closed by the backend while idle; no
 * response byte came (<response_started> false); it was not retried already; and resending
 * is safe (<idempotent>). The live proxy and the replayer both ask this.
 */
bool sl_upconn_stale_retry_ok(const struct sl_upconn *uc, bool retried, bool response_started,
                              bool idempotent);

/*
 * Writes <bufs> to the lent connection <uc> (uv_write: <req>, and the bytes
 * <bufs> point to, must stay valid until <cb> ran; the array itself is
 * copied). One such write at a time. <cb> always runs, also after the
 * connection was released or aborted (then with UV_ECANCELED unless the write
 * had completed). Returns 0 or a UV_* error (then <cb> never runs).
 */
int sl_upconn_write(struct sl_upconn *uc, uv_write_t *req, const uv_buf_t bufs[], unsigned nbufs,
                    uv_write_cb cb);

/* Starts/stops delivering reads to <cb>. */
int sl_upconn_read_start(struct sl_upconn *uc, sl_upconn_read_cb cb);
void sl_upconn_read_stop(struct sl_upconn *uc);
/* Arms the connection's timer (one per connection); 0 ms disarms. */
void sl_upconn_set_timer(struct sl_upconn *uc, uint64_t ms, sl_upconn_timer_cb cb);

/* Gives the connection back: pooled when <reusable>, no write of
 * sl_upconn_write() is pending and the pool has room; closed otherwise (with a
 * write pending: once it ends, or after the response timeout). The caller
 * must not touch <uc> afterwards. */
void sl_upconn_release(struct sl_upconn *uc, bool reusable);
/* Closes a lent or connecting connection; no callback runs afterwards. */
void sl_upconn_abort(struct sl_upconn *uc);

#endif

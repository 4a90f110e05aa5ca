/*
 * The per-loop context: what one event loop owns and lends to everything that runs on it, as
 * h2o's h2o_context_t does. Each worker loop (one today; several with issue 14) has exactly one,
 * and nothing in it is ever touched from another loop or thread, so it needs no lock.
 *
 * What is per loop and what is not, for the whole of sluice:
 *   - per loop (one of each per loop, never shared): this context and its read buffer; the
 *     client listener and its connections (sluice/http1.h) with their timers; the admin
 *     listener; the upstream connection pools (sluice/upstream.h), one per upstream on each
 *     loop; the access log's buffer and timer;
 *   - per upstream and shared by every loop that serves it (one of each however many loops):
 *     the budget (the shaper inside sluice/drain.h), the spool (sluice/spool.h), the drain's
 *     replay, the ledger of statuses and the Idempotency-Key index with their journal
 *     (sluice/ledger.h, sluice/ledger_journal.h). Today they run on the one loop too; issue 14
 *     gives them their own synchronisation;
 *   - per process: the config (a reload swaps it as a whole), the log, the metrics registry.
 *
 * The read buffer: every read callback on a loop hands its bytes on (parses them, copies what
 * is left over into the stream's own buffer) before it returns, and libuv never runs two read
 * callbacks at once on one loop, so one buffer serves every stream of the loop: client
 * connections, admin connections and upstream connections alike.
 *
 * Header only, and no uv.h: a loop is named by its struct tag, which is what uv_loop_t is.
 *
 * @thread the loop's own: created before the loop runs, freed after it stopped.
 */
#ifndef SLUICE_LOOP_H
#define SLUICE_LOOP_H

#include <stddef.h>

struct uv_loop_s;

/* The size of a loop's read buffer: the most one read callback gets. */
#define SL_LOOP_READ_BYTES (64 * 1024)

struct sl_loop {
  struct uv_loop_s *uv;              /* the libuv loop; borrowed, outlives the context */
  char read_buf[SL_LOOP_READ_BYTES]; /* see above: lent to each read callback in turn */
};

/* Sets up <lp> for libuv loop <uv>. Nothing to dispose: free <lp> once its users are gone. */
static inline void sl_loop_init(struct sl_loop *lp, struct uv_loop_s *uv) { lp->uv = uv; }

#endif

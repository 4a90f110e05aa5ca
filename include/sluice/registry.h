/*
 * The registry: sluice's run-time upstreams and the state they share, built
 * from the config and kept across reloads. The composition root of the back
 * end: the server asks it for an upstream's slot, the front end (conn) reads
 * slots, and nothing else creates drains, pools, upstream ids or the journal.
 *
 * It owns:
 *   - one slot per upstream name ever configured: its connection pool
 *     (sluice/upstream.h) and its drain (sluice/drain.h), pointed at the
 *     newest config that names it. A slot lives until the registry goes: a
 *     request that started under an older config may still use it;
 *   - the upstream ids that status entries and Idempotency-Key scopes carry,
 *     never reused, kept across restarts through the journal's NAME frames,
 *     so that an id always means the upstream it was made for;
 *   - the ledger of statuses, the key index and their journal
 *     (sluice/ledger_journal.h), opened when some route spills.
 *
 * Slots are resolved by name once per config: sl_registry_resolve() gives a
 * table indexed like cfg->upstreams, so that a request reaches its slot
 * without a string compare.
 *
 * Per loop and shared: in a slot, the pool is per loop (one loop's connections,
 * reading into that loop's buffer); the drain (budget, spool, replay) and the
 * ledger, key index and journal are per upstream or per process and shared by
 * every loop that serves them. Today one loop runs both kinds; a registry for
 * several loops keeps the shared ones once and a pool per loop.
 *
 * @thread loop: everything, on the loop given to sl_registry_create.
 */
#ifndef SLUICE_REGISTRY_H
#define SLUICE_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "sluice/config.h"
#include "sluice/drain.h"
#include "sluice/ledger.h"
#include "sluice/ledger_journal.h"
#include "sluice/loop.h"
#include "sluice/upstream.h"

#define SL_REGISTRY_NO_ID UINT16_MAX

struct sl_registry;
struct sl_upstream_stats;

/* An upstream at run time. The fields are the registry's: read them, do not change them. */
struct sl_registry_slot {
  char *name;
  uint16_t id;              /* status entries' upstream, keys' scope; SL_REGISTRY_NO_ID: none yet */
  struct sl_upstream *pool; /* keep-alive connections to it */
  struct sl_drain *drain;   /* its budget, spool and replay; NULL until complete */
  struct sl_config *cfg;    /* the config whose entry <pool> and <drain> point into (a ref) */
  struct sl_upstream_stats *stats; /* the front end's series for it, set by the server */
};

/*
 * Creates the registry for <cfg> on the loop of <lp> (borrowed: outlives the
 * registry): the ledger and key index and, if some route of <cfg> spills, the
 * journal in spool.dir, read back (blocking: before the loop serves). Returns 0
 * and the registry in <out>, or a negative code (logged).
 */
int sl_registry_create(struct sl_loop *lp, const struct sl_config *cfg, struct sl_registry **out);

/*
 * Destroys every drain (closing its spool: queued appends complete, their
 * statuses are journaled), then every pool, then closes the journal, whose
 * last write finishes on the loop afterwards. Accepts NULL.
 */
void sl_registry_destroy(struct sl_registry *reg);

struct sl_ledger *sl_registry_ledger(const struct sl_registry *reg);
struct sl_dedupe *sl_registry_keys(const struct sl_registry *reg);
/* NULL when nothing spilled at start-up. */
struct sl_ledger_journal *sl_registry_journal(const struct sl_registry *reg);

/*
 * Makes sure upstream <i> of <cfg> has a slot with its pool, id and a drain
 * (without a spool), creating what is missing. Returns 0 and the slot in
 * <out>, or a negative code; a slot may then be left incomplete, which no
 * config uses, and the next call for the same name completes it.
 */
int sl_registry_ensure(struct sl_registry *reg, struct sl_config *cfg, size_t i,
                       struct sl_registry_slot **out);

/* Points the slot of every upstream of <cfg> (each ensured) at <cfg>, its pool and drain
 * too, and the key index at its window: the switch of a reload. */
void sl_registry_configure(struct sl_registry *reg, struct sl_config *cfg);

/* The slot named <name>, or NULL. */
struct sl_registry_slot *sl_registry_find(const struct sl_registry *reg, const char *name);

/*
 * The slots of every upstream of <cfg>, in a table indexed like cfg->upstreams
 * (each ensured first), for the request path: the caller frees the table with
 * free(). Returns NULL without memory or if a slot is missing.
 */
struct sl_registry_slot **sl_registry_resolve(const struct sl_registry *reg,
                                              const struct sl_config *cfg);

/* The name upstream id <id> stands for, or NULL (an upstream from before a restart). */
const char *sl_registry_name(const struct sl_registry *reg, uint16_t id);

/* Slots, for walks over all of them (admin API, shutdown); i < sl_registry_count. */
size_t sl_registry_count(const struct sl_registry *reg);
struct sl_registry_slot *sl_registry_at(const struct sl_registry *reg, size_t i);

/* Whether a drain is rebuilding statuses and keys from its spool (sl_drain_rebuilding). */
bool sl_registry_rebuilding(const struct sl_registry *reg);

/* Whether some route of <cfg> spills to upstream <i>: only those get a spool. */
bool sl_registry_spills_to(const struct sl_config *cfg, size_t i);

/* The spool directory of upstream <i> of <cfg>, in <dir> of <len> bytes: 0 or UV_ENAMETOOLONG. */
int sl_registry_spool_dir(const struct sl_config *cfg, size_t i, char *dir, size_t len);

/*
 * Opens and recovers the spool of upstream <i> of <cfg> (spilled to) on the
 * loop and gives it to its slot's drain: only before the loop serves
 * (start-up). Returns 0 or a negative code (logged).
 */
int sl_registry_open_spool(struct sl_registry *reg, struct sl_config *cfg, size_t i);

#endif

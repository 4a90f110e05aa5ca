/*
 * The registry: run-time upstreams by name, their ids, the ledger, the key
 * index and their journal. See sluice/registry.h.
 */
#include "sluice/registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/clock.h"
#include "sluice/log.h"
#include "sluice/metrics.h"

#define LEDGER_CAPACITY (1u << 20)
#define KEYS_CAPACITY (1u << 18)

struct sl_registry {
  uv_loop_t *loop;
  struct sl_loop *lp;              /* the per-loop context its pools read with */
  struct sl_registry_slot **slots; /* one per upstream name ever configured, never moved */
  size_t n_slots;
  char **names_by_id; /* upstream name by id (ledger entries, key scopes); NULL: unused id */
  size_t n_ids;
  struct sl_ledger *ledger;          /* spilled ids, for status URLs */
  struct sl_dedupe *keys;            /* Idempotency-Key repeats */
  struct sl_ledger_journal *journal; /* both, across restarts; NULL if nothing spilled at start */
};

bool sl_registry_spills_to(const struct sl_config *cfg, size_t i) {
  for (size_t r = 0; r < cfg->n_routes; r++) {
    if (cfg->routes[r].spill && cfg->routes[r].upstream == i)
      return true;
  }
  return false;
}

int sl_registry_spool_dir(const struct sl_config *cfg, size_t i, char *dir, size_t len) {
  int n = snprintf(dir, len, "%s/%s", cfg->spool.dir, cfg->upstreams[i].name);

  return n < 0 || (size_t)n >= len ? UV_ENAMETOOLONG : 0;
}

/*
 * Reads the ledger journal back into the ledger and the key index and keeps
 * it open, if some route spills (else there is nothing to keep, and
 * spool.dir need not exist). Before the drains start, so that a record they
 * take at once finds its status already loaded.
 */
static int open_journal(struct sl_registry *reg, const struct sl_config *cfg) {
  struct sl_ledger_journal_opts opts;
  char path[4096];
  bool spills = false;
  int n, rc;

  for (size_t i = 0; i < cfg->n_upstreams; i++)
    spills = spills || sl_registry_spills_to(cfg, i);
  if (!spills)
    return 0;
  n = snprintf(path, sizeof(path), "%s/%s", cfg->spool.dir, SL_LEDGER_JOURNAL_FILE);
  if (n < 0 || (size_t)n >= sizeof(path))
    return UV_ENAMETOOLONG;
  /* The journal follows the spool's fsync policy (its header says what waits for it). */
  sl_ledger_journal_opts_init(&opts);
  opts.sync = cfg->spool.fsync == SL_FSYNC_OFF      ? SL_LEDGER_JOURNAL_SYNC_OFF
              : cfg->spool.fsync == SL_FSYNC_ALWAYS ? SL_LEDGER_JOURNAL_SYNC_ALWAYS
                                                    : SL_LEDGER_JOURNAL_SYNC_BATCH;
  rc = sl_ledger_journal_open(reg->loop, path, reg->ledger, reg->keys, sl_clock_wall_ms(), &opts,
                              &reg->journal);
  if (rc == SL_ELEDGER_LOCKED)
    sl_log_error("ledger journal %s: in use by another process (a second sluice on this spool?)",
                 path);
  else if (rc != 0)
    sl_log_error("ledger journal %s: %s", path, uv_strerror(rc));
  return rc;
}

/* Takes the upstream ids the journal recorded before a restart. */
static int load_ids(struct sl_registry *reg) {
  const char *const *names;
  size_t n = reg->journal != NULL ? sl_ledger_journal_names(reg->journal, &names) : 0;

  if (n == 0)
    return 0;
  reg->names_by_id = calloc(n, sizeof(*reg->names_by_id));
  if (reg->names_by_id == NULL)
    return UV_ENOMEM;
  reg->n_ids = n;
  for (size_t i = 0; i < n; i++)
    if (names[i] != NULL && (reg->names_by_id[i] = strdup(names[i])) == NULL)
      return UV_ENOMEM;
  return 0;
}

int sl_registry_create(struct sl_loop *lp, const struct sl_config *cfg, struct sl_registry **out) {
  struct sl_registry *reg = calloc(1, sizeof(*reg));
  int rc;

  *out = NULL;
  if (reg == NULL)
    return UV_ENOMEM;
  reg->loop = lp->uv;
  reg->lp = lp;
  reg->ledger = sl_ledger_create(LEDGER_CAPACITY);
  reg->keys = sl_dedupe_create(KEYS_CAPACITY, cfg->dedupe_window_ms);
  rc = reg->ledger == NULL || reg->keys == NULL ? UV_ENOMEM : 0;
  if (rc == 0)
    rc = open_journal(reg, cfg);
  if (rc == 0)
    rc = load_ids(reg);
  if (rc != 0) {
    sl_registry_destroy(reg);
    return rc;
  }
  *out = reg;
  return 0;
}

void sl_registry_destroy(struct sl_registry *reg) {
  if (reg == NULL)
    return;
  for (size_t i = 0; i < reg->n_slots; i++) {
    struct sl_registry_slot *s = reg->slots[i];

    sl_drain_destroy(s->drain);
    sl_upstream_destroy(s->pool);
    sl_config_unref(s->cfg);
    free(s->name);
    free(s);
  }
  free(reg->slots);
  for (size_t i = 0; i < reg->n_ids; i++)
    free(reg->names_by_id[i]);
  free(reg->names_by_id);
  /* After the drains: closing a spool completes its queued appends, whose
   * statuses are journaled too. The journal's last write finishes on the
   * loop after this returns. */
  sl_ledger_journal_close(reg->journal);
  sl_ledger_destroy(reg->ledger);
  sl_dedupe_destroy(reg->keys);
  free(reg);
}

struct sl_ledger *sl_registry_ledger(const struct sl_registry *reg) {
  return reg->ledger;
}

struct sl_dedupe *sl_registry_keys(const struct sl_registry *reg) {
  return reg->keys;
}

struct sl_ledger_journal *sl_registry_journal(const struct sl_registry *reg) {
  return reg->journal;
}

struct sl_registry_slot *sl_registry_find(const struct sl_registry *reg, const char *name) {
  for (size_t i = 0; i < reg->n_slots; i++) {
    if (strcmp(reg->slots[i]->name, name) == 0)
      return reg->slots[i];
  }
  return NULL;
}

const char *sl_registry_name(const struct sl_registry *reg, uint16_t id) {
  return id < reg->n_ids ? reg->names_by_id[id] : NULL;
}

size_t sl_registry_count(const struct sl_registry *reg) { return reg->n_slots; }

struct sl_registry_slot *sl_registry_at(const struct sl_registry *reg, size_t i) {
  return reg->slots[i];
}

bool sl_registry_rebuilding(const struct sl_registry *reg) {
  for (size_t i = 0; i < reg->n_slots; i++)
    if (reg->slots[i]->drain != NULL && sl_drain_rebuilding(reg->slots[i]->drain))
      return true;
  return false;
}

/*
 * Gives upstream <name> its id: the one it had (in this process, or before a restart as the
 * journal recorded), else the next free one, recorded in the journal. Ids are never reused,
 * so a status entry or an Idempotency-Key always means the upstream it was made for.
 */
static int assign_id(struct sl_registry *reg, const char *name, uint16_t *id) {
  char **grown;

  for (size_t i = 0; i < reg->n_ids; i++) {
    if (reg->names_by_id[i] != NULL && strcmp(reg->names_by_id[i], name) == 0) {
      *id = (uint16_t)i;
      return 0;
    }
  }
  if (reg->n_ids >= SL_REGISTRY_NO_ID)
    return UV_E2BIG;
  grown = realloc(reg->names_by_id, (reg->n_ids + 1) * sizeof(*grown));
  if (grown == NULL)
    return UV_ENOMEM;
  reg->names_by_id = grown;
  if ((grown[reg->n_ids] = strdup(name)) == NULL)
    return UV_ENOMEM;
  *id = (uint16_t)reg->n_ids++;
  if (reg->journal != NULL && sl_ledger_journal_put_name(reg->journal, *id, name) != 0)
    sl_log_warn("upstream %s: name too long to record in the ledger journal; after a restart "
                "its statuses and keys may be taken for another upstream's",
                name);
  return 0;
}

/* A new slot for upstream <ucfg> of <cfg>, with its pool: NULL without memory. */
static struct sl_registry_slot *new_slot(struct sl_registry *reg, struct sl_config *cfg,
                                         const struct sl_upstream_config *ucfg) {
  struct sl_registry_slot **grown = realloc(reg->slots, (reg->n_slots + 1) * sizeof(*grown));
  struct sl_registry_slot *s = calloc(1, sizeof(*s));

  if (grown != NULL)
    reg->slots = grown;
  if (grown == NULL || s == NULL || (s->name = strdup(ucfg->name)) == NULL ||
      (s->pool = sl_upstream_create(reg->lp, ucfg)) == NULL) {
    if (s != NULL)
      free(s->name);
    free(s);
    return NULL;
  }
  s->cfg = sl_config_ref(cfg);
  s->id = SL_REGISTRY_NO_ID; /* no id: no status entries or keys (it gets no drain either) */
  reg->slots[reg->n_slots++] = s;
  return s;
}

int sl_registry_ensure(struct sl_registry *reg, struct sl_config *cfg, size_t i,
                       struct sl_registry_slot **out) {
  const struct sl_upstream_config *ucfg = &cfg->upstreams[i];
  struct sl_registry_slot *s = sl_registry_find(reg, ucfg->name);

  if (s == NULL && (s = new_slot(reg, cfg, ucfg)) == NULL)
    return UV_ENOMEM;
  *out = s;
  if (s->id == SL_REGISTRY_NO_ID && assign_id(reg, ucfg->name, &s->id) != 0)
    return UV_ENOMEM;
  if (s->drain == NULL)
    return sl_drain_create(reg->loop, cfg, ucfg, s->id, s->pool, reg->ledger, reg->keys,
                           sl_metrics_default(), NULL, &s->drain);
  return 0;
}

void sl_registry_configure(struct sl_registry *reg, struct sl_config *cfg) {
  for (size_t i = 0; i < cfg->n_upstreams; i++) {
    const struct sl_upstream_config *ucfg = &cfg->upstreams[i];
    struct sl_registry_slot *s = sl_registry_find(reg, ucfg->name);

    sl_upstream_update(s->pool, ucfg);
    sl_drain_configure(s->drain, cfg, ucfg);
    sl_config_ref(cfg);
    sl_config_unref(s->cfg);
    s->cfg = cfg;
  }
  sl_dedupe_set_window(reg->keys, cfg->dedupe_window_ms);
}

struct sl_registry_slot **sl_registry_resolve(const struct sl_registry *reg,
                                              const struct sl_config *cfg) {
  struct sl_registry_slot **t = calloc(cfg->n_upstreams ? cfg->n_upstreams : 1, sizeof(*t));

  for (size_t i = 0; t != NULL && i < cfg->n_upstreams; i++) {
    if ((t[i] = sl_registry_find(reg, cfg->upstreams[i].name)) == NULL) {
      free(t);
      t = NULL;
    }
  }
  return t;
}

int sl_registry_open_spool(struct sl_registry *reg, struct sl_config *cfg, size_t i) {
  struct sl_registry_slot *s = sl_registry_find(reg, cfg->upstreams[i].name);
  struct sl_spool *spool;
  char dir[4096], err[1024];
  int rc = sl_registry_spool_dir(cfg, i, dir, sizeof(dir));

  if (rc == 0)
    rc = sl_drain_open_spool(cfg, &cfg->upstreams[i], dir, &spool, err, sizeof(err));
  if (rc != 0) {
    sl_log_error("%s", rc == UV_ENAMETOOLONG ? "spool.dir: path too long" : err);
    return rc;
  }
  sl_drain_adopt_spool(s->drain, spool);
  return 0;
}

/*
 * The server: listener, the list of client connections, the run-time
 * upstreams, reload and graceful shutdown.
 *
 * Run-time upstreams are kept by name across reloads: a reload points each at
 * its new config entry (holding a reference on that config), so pooled
 * connections survive a reload that does not move the upstream. An upstream
 * that disappears from the config stays until shutdown, because requests that
 * started under the old config may still be using it.
 */
#include "conn_int.h"

#include <stdlib.h>
#include <string.h>

#include "sluice/clock.h"
#include "sluice/log.h"
#include "sluice/metrics.h"

struct upstream_slot {
  char *name;
  uint16_t id;
  struct sl_upstream *up;
  struct sl_config *cfg; /* the config whose entry <up> points into */
  struct sl_upstream_stats *stats;
  struct sl_drain *drain;
};

static struct upstream_slot *slots(struct sl_server *srv) { return srv->upstreams; }

static struct upstream_slot *find_slot(struct sl_server *srv, const char *name) {
  for (size_t i = 0; i < srv->n_upstreams; i++) {
    if (strcmp(slots(srv)[i].name, name) == 0)
      return &slots(srv)[i];
  }
  return NULL;
}

struct sl_upstream *sl__server_upstream(struct sl_server *srv, const char *name,
                                        struct sl_upstream_stats **stats) {
  struct upstream_slot *s = find_slot(srv, name);

  *stats = s ? s->stats : NULL;
  return s ? s->up : NULL;
}

struct sl_drain *sl__server_drain(struct sl_server *srv, const char *name) {
  struct upstream_slot *s = find_slot(srv, name);
  return s ? s->drain : NULL;
}

uint16_t sl__server_upstream_id(struct sl_server *srv, const char *name) {
  struct upstream_slot *s = find_slot(srv, name);
  return s ? s->id : UINT16_MAX;
}

const char *sl__server_upstream_name(const struct sl_server *srv, uint16_t id) {
  return id < srv->n_upstream_ids ? srv->upstream_ids[id] : NULL;
}

/*
 * Gives upstream <name> its id: the one it had (in this process, or before a restart as the
 * journal recorded), else the next free one, recorded in the journal. Ids are never reused,
 * so a status entry or an Idempotency-Key always means the upstream it was made for.
 */
static int assign_upstream_id(struct sl_server *srv, const char *name, uint16_t *id) {
  char **grown;

  for (size_t i = 0; i < srv->n_upstream_ids; i++) {
    if (srv->upstream_ids[i] != NULL && strcmp(srv->upstream_ids[i], name) == 0) {
      *id = (uint16_t)i;
      return 0;
    }
  }
  if (srv->n_upstream_ids >= UINT16_MAX)
    return UV_E2BIG;
  grown = realloc(srv->upstream_ids, (srv->n_upstream_ids + 1) * sizeof(*grown));
  if (grown == NULL)
    return UV_ENOMEM;
  srv->upstream_ids = grown;
  if ((grown[srv->n_upstream_ids] = strdup(name)) == NULL)
    return UV_ENOMEM;
  *id = (uint16_t)srv->n_upstream_ids++;
  if (srv->journal != NULL && sl_ledger_journal_put_name(srv->journal, *id, name) != 0)
    sl_log_warn("upstream %s: name too long to record in the ledger journal; after a restart "
                "its statuses and keys may be taken for another upstream's",
                name);
  return 0;
}

/* Takes the upstream ids the journal recorded before a restart. */
static int load_upstream_ids(struct sl_server *srv) {
  const char *const *names;
  size_t n = srv->journal != NULL ? sl_ledger_journal_names(srv->journal, &names) : 0;

  if (n == 0)
    return 0;
  srv->upstream_ids = calloc(n, sizeof(*srv->upstream_ids));
  if (srv->upstream_ids == NULL)
    return UV_ENOMEM;
  srv->n_upstream_ids = n;
  for (size_t i = 0; i < n; i++)
    if (names[i] != NULL && (srv->upstream_ids[i] = strdup(names[i])) == NULL)
      return UV_ENOMEM;
  return 0;
}

/* Whether some route of <cfg> spills to upstream <i>: only those get a spool. */
static bool spills_to(const struct sl_config *cfg, size_t i) {
  for (size_t r = 0; r < cfg->n_routes; r++) {
    if (cfg->routes[r].spill && cfg->routes[r].upstream == i)
      return true;
  }
  return false;
}

/*
 * Reads the ledger journal back into the ledger and the key index and keeps
 * it open, if some route spills (else there is nothing to keep, and
 * spool.dir need not exist). Before the drains start, so that a record they
 * take at once finds its status already loaded.
 */
static int open_journal(struct sl_server *srv, const struct sl_config *cfg) {
  struct sl_ledger_journal_opts opts;
  char path[4096];
  bool spills = false;
  int n, rc;

  for (size_t i = 0; i < cfg->n_upstreams; i++)
    spills = spills || spills_to(cfg, i);
  if (!spills)
    return 0;
  n = snprintf(path, sizeof(path), "%s/%s", cfg->spool.dir, SL_LEDGER_JOURNAL_FILE);
  if (n < 0 || (size_t)n >= sizeof(path))
    return UV_ENAMETOOLONG;
  /* The journal follows the spool's fsync policy: a 202 waits for both. */
  sl_ledger_journal_opts_init(&opts);
  opts.sync = cfg->spool.fsync == SL_FSYNC_OFF      ? SL_LEDGER_JOURNAL_SYNC_OFF
              : cfg->spool.fsync == SL_FSYNC_ALWAYS ? SL_LEDGER_JOURNAL_SYNC_ALWAYS
                                                    : SL_LEDGER_JOURNAL_SYNC_BATCH;
  rc = sl_ledger_journal_open(srv->loop, path, srv->ledger, srv->dedupe, sl_clock_wall_ms(), &opts,
                              &srv->journal);
  if (rc == SL_ELEDGER_LOCKED)
    sl_log_error("ledger journal %s: in use by another process (a second sluice on this spool?)",
                 path);
  else if (rc != 0)
    sl_log_error("ledger journal %s: %s", path, uv_strerror(rc));
  return rc;
}

/* Creates the drain of slot <s> for upstream <i> of <cfg>. */
static int create_drain(struct sl_server *srv, struct upstream_slot *s, struct sl_config *cfg,
                        size_t i) {
  char dir[4096];
  int n = snprintf(dir, sizeof(dir), "%s/%s", cfg->spool.dir, cfg->upstreams[i].name);

  if (n < 0 || (size_t)n >= sizeof(dir))
    return UV_ENAMETOOLONG;
  return sl_drain_create(srv->loop, cfg, &cfg->upstreams[i], s->id, s->up, srv->ledger,
                         sl_metrics_default(), spills_to(cfg, i) ? dir : NULL, &s->drain);
}

struct sl_route_stats *sl__server_route_stats(struct sl_server *srv, const struct sl_config *cfg,
                                              const struct sl_route_config *r) {
  if (r == NULL)
    return srv->unrouted_stats;
  if (cfg == srv->cfg && srv->route_stats != NULL)
    return srv->route_stats[r - cfg->routes];
  return sl__stats_route(srv->stats, r); /* a request from before a reload */
}

/* Looks up the series of every route of <cfg> once, for the request path. */
static int bind_route_stats(struct sl_server *srv, const struct sl_config *cfg) {
  struct sl_route_stats **rs = calloc(cfg->n_routes ? cfg->n_routes : 1, sizeof(*rs));

  if (rs == NULL)
    return UV_ENOMEM;
  for (size_t i = 0; i < cfg->n_routes; i++)
    rs[i] = sl__stats_route(srv->stats, &cfg->routes[i]);
  free(srv->route_stats);
  srv->route_stats = rs;
  return 0;
}

/* Points the run-time upstreams at <cfg>, creating those that are new. */
static int bind_upstreams(struct sl_server *srv, struct sl_config *cfg) {
  for (size_t i = 0; i < cfg->n_upstreams; i++) {
    const struct sl_upstream_config *ucfg = &cfg->upstreams[i];
    struct upstream_slot *s = find_slot(srv, ucfg->name);

    if (s == NULL) {
      struct upstream_slot *grown =
          realloc(srv->upstreams, (srv->n_upstreams + 1) * sizeof(struct upstream_slot));
      if (grown == NULL)
        return UV_ENOMEM;
      srv->upstreams = grown;
      s = &grown[srv->n_upstreams];
      s->name = strdup(ucfg->name);
      s->up = sl_upstream_create(srv->loop, ucfg);
      if (s->name == NULL || s->up == NULL) {
        free(s->name);
        sl_upstream_destroy(s->up);
        return UV_ENOMEM;
      }
      s->cfg = sl_config_ref(cfg);
      s->stats = sl__stats_upstream(srv->stats, ucfg->name);
      s->drain = NULL;
      s->id = UINT16_MAX; /* no id: no status entries or keys (it gets no drain either) */
      srv->n_upstreams++;
      if (assign_upstream_id(srv, ucfg->name, &s->id) != 0)
        return UV_ENOMEM;
      if (create_drain(srv, s, cfg, i) != 0)
        return UV_EIO;
      continue;
    }
    sl_upstream_update(s->up, ucfg);
    if (s->drain != NULL)
      sl_drain_configure(s->drain, cfg, ucfg);
    if (s->drain != NULL && !sl_drain_can_spill(s->drain) && spills_to(cfg, i))
      sl_log_warn("upstream %s: a route spills to it now; its spool opens after a restart",
                  ucfg->name);
    sl_config_ref(cfg);
    sl_config_unref(s->cfg);
    s->cfg = cfg;
  }
  return 0;
}

struct sl_server *sl_server_create(uv_loop_t *loop, struct sl_config *cfg) {
  struct sl_server *srv = calloc(1, sizeof(*srv));

  if (srv == NULL)
    return NULL;
  srv->loop = loop;
  srv->cfg = sl_config_ref(cfg);
  srv->access_log = sl__access_log_create(loop);
  srv->stats = sl__stats_create(sl_metrics_default());
  srv->ledger = sl_ledger_create(1u << 20);
  srv->dedupe = sl_dedupe_create(1u << 18, cfg->dedupe_window_ms);
  uv_tcp_init(loop, &srv->listener);
  uv_timer_init(loop, &srv->grace_timer);
  srv->listener.data = srv;
  srv->grace_timer.data = srv;
  if (srv->access_log == NULL || srv->stats == NULL || srv->ledger == NULL || srv->dedupe == NULL ||
      open_journal(srv, cfg) != 0 || load_upstream_ids(srv) != 0 || bind_upstreams(srv, cfg) != 0 ||
      bind_route_stats(srv, cfg) != 0 ||
      (srv->unrouted_stats = sl__stats_route(srv->stats, NULL)) == NULL) {
    sl_log_error("cannot start the server (see above)");
    sl_server_destroy(srv);
    return NULL;
  }
  return srv;
}

static void on_connection(uv_stream_t *listener, int status) {
  struct sl_server *srv = listener->data;

  if (status < 0) {
    sl_log_warn("accept: %s", uv_strerror(status));
    return;
  }
  sl__conn_accept(srv);
}

int sl_server_start(struct sl_server *srv) {
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  char host[64];
  int r;

  r = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&srv->cfg->listen.sa, 0);
  if (r == 0)
    r = uv_listen((uv_stream_t *)&srv->listener, 511, on_connection);
  if (r != 0) {
    sl_log_error("listen on %s: %s", srv->cfg->listen.text, uv_strerror(r));
    return r;
  }
  srv->listening = true;
  uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &len);
  if (ss.ss_family == AF_INET6) {
    uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof(host));
    sl_log_info("listening on [%s]:%u", host, ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
  } else {
    uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof(host));
    sl_log_info("listening on %s:%u", host, ntohs(((struct sockaddr_in *)&ss)->sin_port));
  }
  return 0;
}

const struct sl_config *sl_server_config(const struct sl_server *srv) { return srv->cfg; }

void sl_server_reload(struct sl_server *srv, struct sl_config *cfg) {
  if (strcmp(cfg->listen.text, srv->cfg->listen.text) != 0)
    sl_log_warn("listen changed from %s to %s: takes effect after a restart", srv->cfg->listen.text,
                cfg->listen.text);
  if (bind_upstreams(srv, cfg) != 0 || bind_route_stats(srv, cfg) != 0) {
    sl_log_error("reload: out of memory, keeping the old config");
    return;
  }
  sl_dedupe_set_window(srv->dedupe, cfg->dedupe_window_ms);
  sl_config_unref(srv->cfg);
  srv->cfg = sl_config_ref(cfg);
}

static void on_shutdown_complete(uv_timer_t *t) {
  struct sl_server *srv = t->data;
  sl_server_shutdown_cb cb = srv->shutdown_cb;

  srv->shutdown_cb = NULL;
  if (cb != NULL)
    cb(srv);
}

/* The last connection closed. The callback may destroy the server, so it runs
 * from a fresh loop turn, not from inside the connection code that got here. */
static void finish_shutdown(struct sl_server *srv) {
  uv_timer_start(&srv->grace_timer, on_shutdown_complete, 0, 0);
}

void sl__server_conn_closed(struct sl_server *srv, struct sl_conn *c) {
  if (c->prev)
    c->prev->next = c->next;
  else if (srv->conns == c)
    srv->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  c->prev = c->next = NULL;
  srv->n_conns--;
  if (srv->shutting_down && srv->n_conns == 0)
    finish_shutdown(srv);
}

static void on_grace_expired(uv_timer_t *t) {
  struct sl_server *srv = t->data;

  sl_log_warn("shutdown: %u connection(s) still busy after the grace period, closing them",
              srv->n_conns);
  while (srv->conns != NULL)
    sl__conn_abort(srv->conns);
}

static void on_server_handle_closed(uv_handle_t *h);

static void on_listener_closed(uv_handle_t *h) {
  struct sl_server *srv = h->data;

  srv->listener_closed = true;
  if (srv->open_handles > 0)
    on_server_handle_closed(h);
}

void sl_server_shutdown(struct sl_server *srv, sl_server_shutdown_cb cb) {
  struct sl_conn *c, *next;

  if (srv->shutting_down)
    return;
  srv->shutting_down = true;
  srv->shutdown_cb = cb;
  if (srv->listening) {
    uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
    srv->listening = false;
  }
  sl_log_info("shutting down: %u connection(s) open", srv->n_conns);
  for (c = srv->conns; c != NULL; c = next) {
    next = c->next;
    sl__conn_shutdown(c);
  }
  if (srv->n_conns == 0) {
    finish_shutdown(srv);
    return;
  }
  uv_timer_start(&srv->grace_timer, on_grace_expired, srv->cfg->limits.shutdown_timeout_ms, 0);
}

static void on_server_handle_closed(uv_handle_t *h) {
  struct sl_server *srv = h->data;

  if (--srv->open_handles == 0)
    free(srv);
}

void sl_server_destroy(struct sl_server *srv) {
  if (srv == NULL)
    return;
  for (size_t i = 0; i < srv->n_upstreams; i++) {
    sl_drain_destroy(slots(srv)[i].drain);
    sl_upstream_destroy(slots(srv)[i].up);
    sl_config_unref(slots(srv)[i].cfg);
    free(slots(srv)[i].name);
  }
  free(srv->upstreams);
  for (size_t i = 0; i < srv->n_upstream_ids; i++)
    free(srv->upstream_ids[i]);
  free(srv->upstream_ids);
  free(srv->route_stats);
  sl__stats_destroy(srv->stats);
  /* After the drains: closing a spool completes its queued appends, whose
   * statuses are journaled too. The journal's last write finishes on the
   * loop after this returns. */
  sl_ledger_journal_close(srv->journal);
  sl_ledger_destroy(srv->ledger);
  sl_dedupe_destroy(srv->dedupe);
  sl__access_log_destroy(srv->access_log);
  sl_config_unref(srv->cfg);
  srv->open_handles = 1;
  if (!uv_is_closing((uv_handle_t *)&srv->listener)) {
    srv->open_handles++;
    uv_close((uv_handle_t *)&srv->listener, on_server_handle_closed);
  } else if (!srv->listener_closed) {
    srv->open_handles++; /* closed by shutdown: its callback is still to come */
  }
  uv_close((uv_handle_t *)&srv->grace_timer, on_server_handle_closed);
}

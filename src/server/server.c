/*
 * The server: listener, the list of client connections, the run-time
 * upstreams, reload and graceful shutdown.
 *
 * Run-time upstreams are kept by name across reloads: a reload points each at
 * its new config entry (holding a reference on that config), so pooled
 * connections survive a reload that does not move the upstream. An upstream
 * that disappears from the config stays until shutdown, because requests that
 * started under the old config may still be using it.
 *
 * A reload is a transaction: the file is parsed on the threadpool, then every
 * spool the new config needs and the running one lacks (a new upstream that a
 * route spills to, or an upstream whose route starts spilling) is opened and
 * recovered on the threadpool too. Only once all of that succeeded does the
 * loop switch to the new config, in one turn; if anything failed, the spools
 * opened for it are closed and the running config stays as it was, whole. The
 * outcome is logged, counted in sluice_config_reloads_total{result} and shown
 * at GET /admin/reload. POST /admin/reload runs the same reload and answers
 * when it has ended: each reload has a generation, and a POST waits for the
 * first reload that starts after it came (one that was already running read
 * the file before the POST, so it does not count).
 */
#include "server_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/admin.h"
#include "sluice/clock.h"
#include "sluice/json.h"
#include "sluice/log.h"
#include "sluice/metrics.h"
#include "sluice/registry.h"

struct sl_registry_slot *sl__server_slot(struct sl_server *srv, const struct sl_config *cfg,
                                         const struct sl_route_config *r) {
  if (r == NULL)
    return NULL;
  if (cfg == srv->cfg && srv->slots != NULL)
    return srv->slots[r->upstream];
  /* A request from before a reload: its upstream still has its slot (slots stay). */
  return sl_registry_find(srv->registry, cfg->upstreams[r->upstream].name);
}

struct sl_drain *sl__server_drain(struct sl_server *srv, const char *name) {
  struct sl_registry_slot *s = sl_registry_find(srv->registry, name);
  return s ? s->drain : NULL;
}

bool sl__server_rebuilding(struct sl_server *srv) { return sl_registry_rebuilding(srv->registry); }

const char *sl__server_upstream_name(const struct sl_server *srv, uint16_t id) {
  return sl_registry_name(srv->registry, id);
}

struct sl_route_stats *sl__server_route_stats(struct sl_server *srv, const struct sl_config *cfg,
                                              const struct sl_route_config *r) {
  if (r == NULL)
    return srv->unrouted_stats;
  if (cfg == srv->cfg && srv->route_stats != NULL)
    return srv->route_stats[r - cfg->routes];
  return sl__stats_route(srv->stats, r); /* a request from before a reload */
}

/* Looks up the series of every route of <cfg> once, for the request path: NULL on ENOMEM. */
static struct sl_route_stats **route_stats_of(struct sl_server *srv, const struct sl_config *cfg) {
  struct sl_route_stats **rs = calloc(cfg->n_routes ? cfg->n_routes : 1, sizeof(*rs));

  if (rs == NULL)
    return NULL;
  for (size_t i = 0; i < cfg->n_routes; i++)
    rs[i] = sl__stats_route(srv->stats, &cfg->routes[i]);
  return rs;
}

/* Ensures the slot of every upstream of <cfg> in the registry, with its front-end series. */
static int ensure_slots(struct sl_server *srv, struct sl_config *cfg) {
  for (size_t i = 0; i < cfg->n_upstreams; i++) {
    struct sl_registry_slot *s;
    int rc = sl_registry_ensure(srv->registry, cfg, i, &s);

    if (rc != 0)
      return rc;
    if (s->stats == NULL)
      s->stats = sl__stats_upstream(srv->stats, s->name);
  }
  return 0;
}

/* Creates the run-time upstreams of <cfg> at start-up, opening their spools on the loop
 * (it does not serve yet). */
static int bind_upstreams(struct sl_server *srv, struct sl_config *cfg) {
  int rc;

  srv->ledger = sl_registry_ledger(srv->registry);
  srv->dedupe = sl_registry_keys(srv->registry);
  srv->journal = sl_registry_journal(srv->registry);
  rc = ensure_slots(srv, cfg);

  for (size_t i = 0; rc == 0 && i < cfg->n_upstreams; i++)
    if (sl_registry_spills_to(cfg, i))
      rc = sl_registry_open_spool(srv->registry, cfg, i);
  if (rc == 0 && (srv->slots = sl_registry_resolve(srv->registry, cfg)) == NULL)
    rc = UV_ENOMEM;
  return rc;
}

/* ---- reload ------------------------------------------------------------ */

/* A spool the new config needs and the running one lacks. */
struct reload_spool {
  size_t upstream; /* its index in the new config */
  char dir[4096];
  struct sl_spool *spool; /* opened on the threadpool; NULL once a drain adopted it */
};

/*
 * One reload, from the file to the switch. Its steps run on the threadpool
 * (parse, then open the spools) and, between and after them, on the loop.
 * <srv> is NULL once the server was destroyed meanwhile: the job then only
 * closes what it opened and frees itself.
 */
struct sl_server_reload_job {
  uv_work_t req;
  struct sl_server *srv;
  uint64_t gen; /* srv->reload_gen when it started */
  char *path;
  struct sl_config *cfg; /* the parsed file, NULL until then */
  struct reload_spool *spools;
  size_t n_spools;
  int status;
  bool config_error; /* the file did not load: <err> is its "file:line: message" */
  char err[1024];
  sl_server_reload_cb cb;
  void *arg;
};

/* The client listener takes the limits of the running config. */
static void set_limits(struct sl_server *srv) {
  struct sl_http1_limits lim;

  sl__conn_limits(srv->cfg, &lim);
  sl_http1_listener_set_limits(srv->listener, &lim);
}

static int register_reload_metrics(struct sl_server *srv) {
  static const char *const result[] = {"result", NULL};
  struct sl_metric_family *f =
      sl_metrics_family(sl_metrics_default(), SL_METRIC_COUNTER, "sluice_config_reloads_total",
                        "Config reloads (SIGHUP) by result.", result);

  srv->reloads_ok = f ? sl_metrics_series(f, (const char *[]){"success"}) : NULL;
  srv->reloads_failed = f ? sl_metrics_series(f, (const char *[]){"failure"}) : NULL;
  return srv->reloads_ok != NULL && srv->reloads_failed != NULL ? 0 : UV_ENOMEM;
}

/* Closes the spools of <job> that no drain adopted. On the threadpool when an open
 * failed; on the loop only when the switch itself failed (memory) or the server is
 * going away, and then the spools are fresh, their writers idle: closing is quick. */
static void close_spools(struct sl_server_reload_job *job) {
  for (size_t i = 0; i < job->n_spools; i++) {
    sl_spool_close(job->spools[i].spool);
    job->spools[i].spool = NULL;
  }
}

static void job_free(struct sl_server_reload_job *job) {
  close_spools(job);
  sl_config_unref(job->cfg);
  free(job->spools);
  free(job->path);
  free(job);
}

static void reload_start(struct sl_server *srv, const char *path, sl_server_reload_cb cb,
                         void *arg);

/* Appends the state of reloads (GET /admin/reload) to <b>, with "error": <error> first when
 * <error> is not NULL. */
static void reload_info_json(const struct sl_server *srv, struct sl_buf *b, const char *error) {
  const struct sl_server_reload_info *r = &srv->last_reload;
  static const char *const results[] = {"none", "success", "failure"};

  sl_buf_append_str(b, "{");
  if (error != NULL) {
    sl_buf_append_str(b, "\"error\":");
    sl_json_append_string(b, error, strlen(error));
    sl_buf_append_str(b, ",");
  }
  sl_buf_printf(b, "\"last_result\":\"%s\",\"last_time\":", results[r->result]);
  if (r->result == SL_RELOAD_NONE) {
    sl_buf_append_str(b, "null");
  } else {
    char when[SL_CLOCK_RFC3339_LEN];

    sl_buf_printf(b, "\"%s\"", sl_clock_format(r->wall_ms, true, when));
  }
  sl_buf_append_str(b, ",\"last_error\":");
  if (r->result != SL_RELOAD_FAILURE)
    sl_buf_append_str(b, "null");
  else
    sl_json_append_string(b, r->error, strlen(r->error));
  sl_buf_printf(b, ",\"reloading\":%s,\"successes\":%llu,\"failures\":%llu}\n",
                srv->reload != NULL ? "true" : "false", (unsigned long long)r->successes,
                (unsigned long long)r->failures);
}

/*
 * Answers every POST /admin/reload waiting for a reload of generation <gen> or
 * older: <status> 200 for a reload that applied, else the status of its failure
 * with <error>.
 */
static void answer_reload_waiters(struct sl_server *srv, uint64_t gen, unsigned status,
                                  const char *error) {
  struct sl_server_reload_waiter *w, *next;

  for (w = LIST_FIRST(&srv->reload_waiters); w != NULL; w = next) {
    struct sl_admin_response *resp = sl_admin_deferred_response(w->answer);

    next = LIST_NEXT(w, link);
    if (w->gen > gen)
      continue;
    LIST_REMOVE(w, link);
    resp->status = status;
    resp->content_type = "application/json";
    reload_info_json(srv, &resp->body, status == 200 ? NULL : error);
    sl_admin_deferred_answer(w->answer);
    free(w);
  }
}

/* Reports how <job> ended, lets the next reload start and frees the job. */
static void reload_finish(struct sl_server_reload_job *job) {
  struct sl_server *srv = job->srv;
  bool ok = job->status == 0;

  srv->reload = NULL;
  srv->last_reload.result = ok ? SL_RELOAD_SUCCESS : SL_RELOAD_FAILURE;
  srv->last_reload.wall_ms = sl_clock_wall_ms();
  snprintf(srv->last_reload.error, sizeof(srv->last_reload.error), "%s", ok ? "" : job->err);
  if (ok) {
    sl_metrics_inc(srv->reloads_ok);
    srv->last_reload.successes++;
    sl_log_info("reloaded %s", job->path);
  } else {
    sl_metrics_inc(srv->reloads_failed);
    srv->last_reload.failures++;
    sl_log_error("reload failed, keeping the running config: %s", job->err);
  }
  if (job->cb != NULL)
    job->cb(srv, ok ? job->cfg : NULL, job->status, ok ? NULL : job->err, job->arg);
  answer_reload_waiters(srv, job->gen,
                        ok                            ? 200
                        : job->config_error           ? 422
                        : job->status == UV_ECANCELED ? 503
                                                      : 500,
                        job->err);
  if (srv->reload_again && !srv->shutting_down && job->path != NULL) {
    srv->reload_again = false;
    reload_start(srv, job->path, job->cb, job->arg);
  }
  job_free(job);
}

/*
 * Switches the server to <job>'s config, handing the spools opened for it to
 * their drains. Everything that can fail (memory) comes before anything that
 * the running config uses changes; the last failure point completes the
 * slots of new upstreams, which no route of the running config reaches.
 */
static int reload_commit(struct sl_server *srv, struct sl_server_reload_job *job) {
  struct sl_config *cfg = job->cfg;
  struct sl_route_stats **rs = route_stats_of(srv, cfg);
  struct sl_registry_slot **slots = NULL;
  int rc = rs == NULL ? UV_ENOMEM : ensure_slots(srv, cfg);

  if (rc == 0 && (slots = sl_registry_resolve(srv->registry, cfg)) == NULL)
    rc = UV_ENOMEM;
  if (rc != 0) {
    free(rs);
    return rc;
  }
  if (strcmp(cfg->listen.text, srv->cfg->listen.text) != 0)
    sl_log_warn("listen changed from %s to %s: takes effect after a restart", srv->cfg->listen.text,
                cfg->listen.text);
  sl_registry_configure(srv->registry, cfg);
  for (size_t k = 0; k < job->n_spools; k++) {
    struct reload_spool *sp = &job->spools[k];

    if (sp->spool != NULL) {
      sl_drain_adopt_spool(slots[sp->upstream]->drain, sp->spool);
      sp->spool = NULL;
      sl_log_info("upstream %s: spool opened at %s", cfg->upstreams[sp->upstream].name, sp->dir);
    }
  }
  free(srv->route_stats);
  srv->route_stats = rs;
  free(srv->slots);
  srv->slots = slots;
  sl_config_unref(srv->cfg);
  srv->cfg = sl_config_ref(cfg);
  set_limits(srv);
  return 0;
}

/* Threadpool: opens every spool of the job; if one fails, closes the others. */
static void open_spools_work(uv_work_t *req) {
  struct sl_server_reload_job *job = req->data;

  for (size_t i = 0; i < job->n_spools; i++) {
    struct reload_spool *sp = &job->spools[i];

    job->status = sl_drain_open_spool(job->cfg, &job->cfg->upstreams[sp->upstream], sp->dir,
                                      &sp->spool, job->err, sizeof(job->err));
    if (job->status != 0) {
      close_spools(job);
      return;
    }
  }
}

static void open_spools_done(uv_work_t *req, int status) {
  struct sl_server_reload_job *job = req->data;
  struct sl_server *srv = job->srv;

  if (srv == NULL) {
    job_free(job); /* the server went meanwhile */
    return;
  }
  if (status != 0 && job->status == 0) {
    job->status = status;
    snprintf(job->err, sizeof(job->err), "opening spools: %s", uv_strerror(status));
  }
  if (job->status == 0 && srv->shutting_down) {
    job->status = UV_ECANCELED;
    snprintf(job->err, sizeof(job->err), "shutting down");
  }
  if (job->status == 0 && (job->status = reload_commit(srv, job)) != 0)
    snprintf(job->err, sizeof(job->err), "switching to the new config: %s",
             uv_strerror(job->status));
  reload_finish(job); /* spools left unadopted are closed there */
}

/*
 * Loop, after the parse: lists the spools <job>'s config needs that are not open
 * (a spool stays where it opened: a changed spool.dir applies to new spools only)
 * and opens them on the threadpool.
 */
static void open_spools(struct sl_server_reload_job *job) {
  struct sl_server *srv = job->srv;
  const struct sl_config *cfg = job->cfg;
  int rc;

  if (strcmp(cfg->spool.dir, srv->cfg->spool.dir) != 0)
    sl_log_warn("spool.dir changed from %s to %s: spools already open stay where they are until a "
                "restart",
                srv->cfg->spool.dir, cfg->spool.dir);
  job->spools = calloc(cfg->n_upstreams ? cfg->n_upstreams : 1, sizeof(*job->spools));
  if (job->spools == NULL) {
    job->status = UV_ENOMEM;
    snprintf(job->err, sizeof(job->err), "out of memory");
    reload_finish(job);
    return;
  }
  for (size_t i = 0; i < cfg->n_upstreams; i++) {
    struct sl_registry_slot *s = sl_registry_find(srv->registry, cfg->upstreams[i].name);
    struct reload_spool *sp = &job->spools[job->n_spools];

    if (!sl_registry_spills_to(cfg, i) ||
        (s != NULL && s->drain != NULL && sl_drain_can_spill(s->drain)))
      continue;
    if (sl_registry_spool_dir(cfg, i, sp->dir, sizeof(sp->dir)) != 0) {
      job->status = UV_ENAMETOOLONG;
      snprintf(job->err, sizeof(job->err), "spool %s: spool.dir is too long",
               cfg->upstreams[i].name);
      reload_finish(job);
      return;
    }
    sp->upstream = i;
    job->n_spools++;
  }
  if (job->n_spools > 0 && sl_registry_journal(srv->registry) == NULL)
    sl_log_warn("spilling starts with this reload: request statuses are kept in memory only "
                "(not journaled) until a restart");
  rc = uv_queue_work(srv->loop, &job->req, open_spools_work, open_spools_done);
  if (rc != 0) {
    job->status = rc;
    snprintf(job->err, sizeof(job->err), "opening spools: %s", uv_strerror(rc));
    reload_finish(job);
  }
}

/* Threadpool: parses the file. */
static void parse_work(uv_work_t *req) {
  struct sl_server_reload_job *job = req->data;

  if (sl_config_load(job->path, &job->cfg, job->err, sizeof(job->err)) != 0) {
    job->cfg = NULL;
    job->status = UV_EINVAL;
    job->config_error = true;
  }
}

static void parse_done(uv_work_t *req, int status) {
  struct sl_server_reload_job *job = req->data;

  if (job->srv == NULL) {
    job_free(job);
    return;
  }
  if (status != 0 && job->status == 0) {
    job->status = status;
    snprintf(job->err, sizeof(job->err), "reading %s: %s", job->path, uv_strerror(status));
  }
  if (job->status != 0) {
    reload_finish(job);
    return;
  }
  open_spools(job);
}

static void reload_start(struct sl_server *srv, const char *path, sl_server_reload_cb cb,
                         void *arg) {
  struct sl_server_reload_job *job = calloc(1, sizeof(*job));
  uint64_t gen = ++srv->reload_gen;
  int rc = UV_ENOMEM;

  if (job != NULL && (job->path = strdup(path)) != NULL) {
    job->srv = srv;
    job->gen = gen;
    job->cb = cb;
    job->arg = arg;
    job->req.data = job;
    srv->reload = job;
    rc = uv_queue_work(srv->loop, &job->req, parse_work, parse_done);
    if (rc == 0)
      return;
  }
  if (job == NULL) {
    sl_metrics_inc(srv->reloads_failed);
    sl_log_error("reload failed, keeping the running config: out of memory");
    answer_reload_waiters(srv, gen, 500, "out of memory");
    return;
  }
  job->srv = srv;
  job->gen = gen;
  job->status = rc;
  snprintf(job->err, sizeof(job->err), "%s", uv_strerror(rc));
  reload_finish(job);
}

void sl_server_reload(struct sl_server *srv, const char *path, sl_server_reload_cb cb, void *arg) {
  if (srv->shutting_down)
    return;
  if (srv->reload != NULL) {
    srv->reload_again = true; /* read the file once more after the running one */
    return;
  }
  reload_start(srv, path, cb, arg);
}

static void on_reload_info(const struct sl_admin_request *req, struct sl_admin_response *resp,
                           void *arg) {
  const struct sl_server *srv = arg;

  (void)req;
  resp->content_type = "application/json";
  reload_info_json(srv, &resp->body, NULL);
}

/* POST /admin/reload: the reload SIGHUP runs, answered once it has ended (answer_reload_waiters);
 * a reload already running read the file before this request, so the answer is the next one's. */
static void on_reload_post(const struct sl_admin_request *req, struct sl_admin_response *resp,
                           void *arg) {
  struct sl_server *srv = arg;
  struct sl_server_reload_waiter *w;

  resp->content_type = "application/json";
  if (req->query[0] != '\0') {
    sl_admin_response_error(resp, 400, "POST /admin/reload takes no query parameter");
    return;
  }
  if (srv->shutting_down) {
    sl_admin_response_error(resp, 503, "shutting down");
    return;
  }
  w = calloc(1, sizeof(*w));
  if (w == NULL || (w->answer = sl_admin_defer(resp)) == NULL) {
    free(w);
    sl_admin_response_error(resp, 500, "out of memory");
    return;
  }
  w->gen = srv->reload_gen + 1;
  LIST_INSERT_HEAD(&srv->reload_waiters, w, link);
  sl_log_info("admin: reloading %s", srv->reload_path);
  sl_server_reload(srv, srv->reload_path, srv->reload_cb, srv->reload_arg);
}

int sl_server_register_reload_admin(struct sl_server *srv, struct sl_admin *admin, const char *path,
                                    sl_server_reload_cb cb, void *arg) {
  int rc;

  free(srv->reload_path);
  srv->reload_path = strdup(path);
  if (srv->reload_path == NULL)
    return UV_ENOMEM;
  srv->reload_cb = cb;
  srv->reload_arg = arg;
  rc = sl_admin_route(admin, SL_METHOD_GET, "/admin/reload", SL_ADMIN_PROTECTED, on_reload_info,
                      srv);
  if (rc == 0)
    rc = sl_admin_route(admin, SL_METHOD_POST, "/admin/reload", SL_ADMIN_PROTECTED, on_reload_post,
                        srv);
  if (rc == 0)
    rc = sl_admin_describe(admin, SL_METHOD_GET, "/admin/reload", SL_ADMIN_PROTECTED,
                           "the last reload: result, time, error");
  if (rc == 0)
    rc = sl_admin_describe(admin, SL_METHOD_POST, "/admin/reload", SL_ADMIN_PROTECTED,
                           "reload the config file as SIGHUP does; answers when it has ended "
                           "(200, or 422 with the file's error)");
  return rc;
}

struct sl_server *sl_server_create(struct sl_loop *lp, struct sl_config *cfg) {
  struct sl_server *srv = calloc(1, sizeof(*srv));
  struct sl_http1_limits lim;

  if (srv == NULL)
    return NULL;
  srv->loop = lp->uv;
  srv->cfg = sl_config_ref(cfg);
  srv->access_log = sl__access_log_create(srv->loop);
  srv->stats = sl__stats_create(sl_metrics_default());
  sl__conn_limits(cfg, &lim);
  srv->listener = sl_http1_listener_create(lp, &sl__conn_settings, &lim, srv);
  uv_timer_init(srv->loop, &srv->grace_timer);
  srv->grace_timer.data = srv;
  if (srv->listener == NULL || srv->access_log == NULL || srv->stats == NULL ||
      register_reload_metrics(srv) != 0 || sl_registry_create(lp, cfg, &srv->registry) != 0 ||
      bind_upstreams(srv, cfg) != 0 || (srv->route_stats = route_stats_of(srv, cfg)) == NULL ||
      (srv->unrouted_stats = sl__stats_route(srv->stats, NULL)) == NULL) {
    sl_log_error("cannot start the server (see above)");
    sl_server_destroy(srv);
    return NULL;
  }
  return srv;
}

int sl_server_start(struct sl_server *srv) {
  char addr[80];
  unsigned port;
  int r = sl_http1_listener_start(srv->listener, (const struct sockaddr *)&srv->cfg->listen.sa, 511,
                                  addr, sizeof(addr), &port);

  if (r != 0) {
    sl_log_error("listen on %s: %s", srv->cfg->listen.text, uv_strerror(r));
    return r;
  }
  sl_log_info("listening on %s", addr);
  return 0;
}

const struct sl_config *sl_server_config(const struct sl_server *srv) { return srv->cfg; }

static void on_shutdown_complete(uv_timer_t *t) {
  struct sl_server *srv = t->data;
  sl_server_shutdown_cb cb = srv->shutdown_cb;

  srv->shutdown_cb = NULL;
  if (cb != NULL)
    cb(srv);
}

/* The last connection closed. The callback may destroy the server, so it runs
 * from a fresh loop turn, not from inside the connection code that got here. */
static void finish_shutdown(struct sl_http1_listener *l, void *arg) {
  struct sl_server *srv = arg;

  (void)l;
  uv_timer_start(&srv->grace_timer, on_shutdown_complete, 0, 0);
}

static void on_grace_expired(uv_timer_t *t) {
  struct sl_server *srv = t->data;

  sl_log_warn("shutdown: %u connection(s) still busy after the grace period, closing them",
              sl_http1_listener_conns(srv->listener));
  sl_http1_listener_abort(srv->listener);
}

void sl_server_shutdown(struct sl_server *srv, sl_server_shutdown_cb cb) {
  if (srv->shutting_down)
    return;
  srv->shutting_down = true;
  srv->shutdown_cb = cb;
  sl_log_info("shutting down: %u connection(s) open", sl_http1_listener_conns(srv->listener));
  sl_http1_listener_shutdown(srv->listener, finish_shutdown, srv);
  if (sl_http1_listener_conns(srv->listener) > 0)
    uv_timer_start(&srv->grace_timer, on_grace_expired, srv->cfg->limits.shutdown_timeout_ms, 0);
}

static void on_server_handle_closed(uv_handle_t *h) { free(h->data); }

void sl_server_destroy(struct sl_server *srv) {
  if (srv == NULL)
    return;
  if (srv->reload != NULL)
    srv->reload->srv = NULL; /* its threadpool step finishes on its own, then frees it */
  answer_reload_waiters(srv, UINT64_MAX, 503, "shutting down");
  free(srv->reload_path);
  /* Connections still open (none after a shutdown) close before what they use goes; the
   * listener frees itself once the last of them is freed. */
  sl_http1_listener_close(srv->listener, NULL, NULL);
  sl_registry_destroy(srv->registry);
  free(srv->slots);
  free(srv->route_stats);
  sl__stats_destroy(srv->stats);
  sl__access_log_destroy(srv->access_log);
  sl_config_unref(srv->cfg);
  uv_close((uv_handle_t *)&srv->grace_timer, on_server_handle_closed);
}

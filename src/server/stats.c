/*
 * The proxy's metrics: per route and per upstream series of the registry,
 * looked up once and kept as handles so that a request only adds to them.
 *
 * Stats objects are keyed by their label (the route's host and prefix, the
 * upstream's name: values from the config, never from requests) and live as
 * long as the server, so a reload that keeps a route keeps its series, and a
 * request that started under an old config still has valid handles.
 */
#include "server_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/log.h"
#include "sluice/metrics.h"

struct sl_proxy_stats {
  struct sl_metric_family *requests, *responses, *request_duration;
  struct sl_metric_family *upstream_duration, *upstream_inflight;
  struct sl_route_stats *routes;
  struct sl_upstream_stats *upstreams;
};

static const char *const outcome_names[SL_OUTCOME_COUNT] = {"forwarded", "spilled", "rejected",
                                                            "error"};
static const char *const class_names[5] = {"1xx", "2xx", "3xx", "4xx", "5xx"};

struct sl_proxy_stats *sl__stats_create(struct sl_metrics *reg) {
  struct sl_proxy_stats *st = calloc(1, sizeof(*st));
  static const char *const route[] = {"route", NULL};
  static const char *const route_outcome[] = {"route", "outcome", NULL};
  static const char *const route_class[] = {"route", "code_class", NULL};
  static const char *const upstream[] = {"upstream", NULL};

  if (st == NULL)
    return NULL;
  st->requests =
      sl_metrics_family(reg, SL_METRIC_COUNTER, "sluice_requests_total",
                        "Requests by route and by what sluice did with them.", route_outcome);
  st->responses =
      sl_metrics_family(reg, SL_METRIC_COUNTER, "sluice_responses_total",
                        "Responses sent to clients by route and status class.", route_class);
  st->request_duration = sl_metrics_histogram(
      reg, "sluice_request_duration_seconds",
      "Time from the first byte of a request to its response being queued.", route, NULL, 0);
  st->upstream_duration = sl_metrics_histogram(
      reg, "sluice_upstream_request_duration_seconds",
      "Time from sending a request upstream to the end of its response.", upstream, NULL, 0);
  st->upstream_inflight =
      sl_metrics_family(reg, SL_METRIC_GAUGE, "sluice_upstream_inflight",
                        "Requests sent to the upstream and not yet answered.", upstream);
  if (st->requests == NULL || st->responses == NULL || st->request_duration == NULL ||
      st->upstream_duration == NULL || st->upstream_inflight == NULL) {
    free(st);
    return NULL;
  }
  return st;
}

void sl__stats_destroy(struct sl_proxy_stats *st) {
  if (st == NULL)
    return;
  while (st->routes != NULL) {
    struct sl_route_stats *next = st->routes->next;
    free(st->routes->label);
    free(st->routes);
    st->routes = next;
  }
  while (st->upstreams != NULL) {
    struct sl_upstream_stats *next = st->upstreams->next;
    free(st->upstreams->name);
    free(st->upstreams);
    st->upstreams = next;
  }
  free(st);
}

/* The label of <r>: its prefix, after its host when it has one. */
static void route_label(const struct sl_route_config *r, char *out, size_t len) {
  snprintf(out, len, "%s%s", r->host ? r->host : "", r->prefix);
}

struct sl_route_stats *sl__stats_route(struct sl_proxy_stats *st, const struct sl_route_config *r) {
  char label[512];
  struct sl_route_stats *rs;

  if (r != NULL)
    route_label(r, label, sizeof(label));
  else
    snprintf(label, sizeof(label), "none"); /* no route matched (404) */
  for (rs = st->routes; rs != NULL; rs = rs->next) {
    if (strcmp(rs->label, label) == 0)
      return rs;
  }
  rs = calloc(1, sizeof(*rs));
  if (rs == NULL || (rs->label = strdup(label)) == NULL)
    goto fail;
  for (int i = 0; i < SL_OUTCOME_COUNT; i++) {
    rs->outcome[i] = sl_metrics_series(st->requests, (const char *[]){label, outcome_names[i]});
    if (rs->outcome[i] == NULL)
      goto fail;
  }
  for (int i = 0; i < 5; i++) {
    rs->code_class[i] = sl_metrics_series(st->responses, (const char *[]){label, class_names[i]});
    if (rs->code_class[i] == NULL)
      goto fail;
  }
  rs->duration = sl_metrics_series(st->request_duration, (const char *[]){label});
  if (rs->duration == NULL)
    goto fail;
  rs->next = st->routes;
  st->routes = rs;
  return rs;

fail:
  sl_log_error("metrics: out of memory for route %s", label);
  if (rs != NULL)
    free(rs->label);
  free(rs);
  return NULL;
}

struct sl_upstream_stats *sl__stats_upstream(struct sl_proxy_stats *st, const char *name) {
  struct sl_upstream_stats *us;

  for (us = st->upstreams; us != NULL; us = us->next) {
    if (strcmp(us->name, name) == 0)
      return us;
  }
  us = calloc(1, sizeof(*us));
  if (us == NULL || (us->name = strdup(name)) == NULL)
    goto fail;
  us->duration = sl_metrics_series(st->upstream_duration, (const char *[]){name});
  us->inflight = sl_metrics_series(st->upstream_inflight, (const char *[]){name});
  if (us->duration == NULL || us->inflight == NULL)
    goto fail;
  us->next = st->upstreams;
  st->upstreams = us;
  return us;

fail:
  sl_log_error("metrics: out of memory for upstream %s", name);
  if (us != NULL)
    free(us->name);
  free(us);
  return NULL;
}

void sl__stats_request_done(struct sl_route_stats *rs, enum sl_outcome outcome, unsigned status,
                            double seconds) {
  if (rs == NULL)
    return;
  sl_metrics_inc(rs->outcome[outcome]);
  if (status >= 100 && status < 600)
    sl_metrics_inc(rs->code_class[status / 100 - 1]);
  sl_metrics_observe(rs->duration, seconds);
}

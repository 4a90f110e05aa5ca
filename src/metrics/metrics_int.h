/*
 * Layout of the metrics registry, shared by the module's files (registry.c,
 * render.c, process.c) and its tests.
 *
 * A registry is a list of families in registration order; a family is a list
 * of series in creation order. Each series keeps its label pairs already
 * rendered and escaped (`a="x",b="y"`): that is what the exposition prints,
 * and since escaping is one-to-one, comparing these strings is how a repeated
 * label tuple finds its existing series.
 *
 * @thread registry: owner loop only; the value fields: see sluice/metrics.h
 */
#ifndef SLUICE_METRICS_INT_H
#define SLUICE_METRICS_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "sluice/buf.h"
#include "sluice/metrics.h"

/* Room for a number as sl__metrics_format_double() writes it, with the NUL. */
#define SL_METRICS_NUM_MAX 32

struct sl_metric {
  struct sl_metric_family *family;
  STAILQ_ENTRY(sl_metric) link; /* in the family, in creation order */
  char *labels;                 /* rendered label pairs, "" when the family has no labels */
  sl_metrics_value_fn fn;       /* counters and gauges computed at scrape time */
  void *arg;
  _Atomic double value;     /* counters and gauges; histograms: the sum */
  _Atomic uint64_t *counts; /* histograms: per bucket (not cumulative), +Inf last */
};

struct sl_metric_family {
  STAILQ_ENTRY(sl_metric_family) link; /* in the registry, in registration order */
  enum sl_metric_type type;
  char *name;
  char *help;
  char **labels; /* label names */
  size_t n_labels;
  double *bounds; /* histograms: bucket upper bounds, +Inf not included */
  size_t n_bounds;
  char (*le)[SL_METRICS_NUM_MAX + 8]; /* histograms: `le="<bound>"` for each, then +Inf */
  STAILQ_HEAD(, sl_metric) series;
};

struct sl_metrics {
  STAILQ_HEAD(, sl_metric_family) families;
};

/* render.c: writes <v> into <out> (SL_METRICS_NUM_MAX bytes) the way the
 * text format writes sample values and `le` bounds: integers below 2^53 in
 * full, other numbers as the shortest of 15 or 17 significant digits that
 * reads back as <v>, or +Inf, -Inf, NaN. */
void sl__metrics_format_double(char *out, double v);

/* render.c: appends <v> formatted as above. */
int sl__metrics_append_double(struct sl_buf *out, double v);

/* render.c: appends <s> escaped for a label value (<help> false: backslash,
 * double quote and newline) or for HELP text (<help> true: backslash and
 * newline). */
int sl__metrics_append_escaped(struct sl_buf *out, const char *s, bool help);

#endif

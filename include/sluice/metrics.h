/*
 * Metrics registry and Prometheus text exposition (format 0.0.4).
 *
 * A registry holds families; a family has a type, a name, a help text and a
 * fixed list of label names given at registration. A series is one tuple of
 * label values within a family; asking for the same tuple twice returns the
 * same series, so the exposition never holds a duplicate. Label values must
 * come from the configuration (upstream and route names), never from request
 * data: every series lives until it is removed or the registry is destroyed.
 *
 * Hot path: the caller looks a series up once, keeps the `struct sl_metric *`
 * handle and updates it with sl_metrics_inc() / _add() / _set() / _observe(),
 * which do no lookup and take no lock.
 *
 * Threads: registration, removal and rendering belong to the thread that owns
 * the registry (the main loop). Series values are C11 atomics, so a scrape
 * never tears a value. A series updated from the loop thread only uses the
 * plain functions (a relaxed load and store, as cheap as a plain add); a
 * series that another thread updates, such as the spool writer's fsync
 * histogram, uses the *_atomic functions everywhere, never the plain ones,
 * or updates would be lost.
 *
 * Names follow Prometheus conventions: metric names match
 * [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* and do not
 * start with "__"; counters end in _total and units are base units
 * (_seconds, _bytes), as docs/metrics.md lists them.
 *
 * @thread registry: owner loop only; series updates: see above
 */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/buf.h"

struct sl_metrics;       /* a registry */
struct sl_metric_family; /* one metric name with its type, help and label names */
struct sl_metric;        /* one series: a family plus one tuple of label values */

enum sl_metric_type {
  SL_METRIC_COUNTER,
  SL_METRIC_GAUGE,
  SL_METRIC_HISTOGRAM,
};

/* Computes a series' value at scrape time, on the registry's thread. */
typedef double (*sl_metrics_value_fn)(void *arg);

/* The default bucket upper bounds for durations in seconds, 1 ms to 60 s. */
extern const double sl_metrics_duration_buckets[];
extern const size_t sl_metrics_duration_buckets_len;

/* Creates an empty registry. Returns NULL on ENOMEM. */
struct sl_metrics *sl_metrics_create(void);

/* Frees <reg> with its families and series; every handle into it becomes
 * invalid. Accepts NULL. */
void sl_metrics_destroy(struct sl_metrics *reg);

/*
 * The process-wide registry, created on the first call. The first call must
 * happen on the main thread before other threads start (it is not locked).
 * Returns NULL on ENOMEM. sl_metrics_default_destroy() frees it at exit.
 */
struct sl_metrics *sl_metrics_default(void);
void sl_metrics_default_destroy(void);

/*
 * Registers a counter or gauge family <name> with <help> and the label names
 * in <labels> (a NULL-terminated array; NULL for none). Registering a family
 * again with the same type and labels returns the existing one. Returns NULL
 * (and logs why) for an invalid or clashing name or label, or on ENOMEM;
 * these are programming errors, checked once at start-up.
 */
struct sl_metric_family *sl_metrics_family(struct sl_metrics *reg, enum sl_metric_type type,
                                           const char *name, const char *help,
                                           const char *const *labels);

/*
 * Registers a histogram family. <bounds> holds <n_bounds> finite, strictly
 * increasing bucket upper bounds (the +Inf bucket is implicit); NULL selects
 * sl_metrics_duration_buckets. The label name "le" is reserved. Otherwise as
 * sl_metrics_family().
 */
struct sl_metric_family *sl_metrics_histogram(struct sl_metrics *reg, const char *name,
                                              const char *help, const char *const *labels,
                                              const double *bounds, size_t n_bounds);

/*
 * Returns the series of family <f> for the label values <values> (as many as
 * the family has label names, in the same order; NULL when it has none),
 * creating it at zero the first time. The values are copied. Returns NULL for
 * a value that is not valid UTF-8, or on ENOMEM.
 */
struct sl_metric *sl_metrics_series(struct sl_metric_family *f, const char *const *values);

/*
 * Same for a counter or gauge series whose value is <fn>(<arg>), called at
 * every scrape. Asking again for an existing callback series replaces its
 * <fn> and <arg>; an existing plain series of that tuple is an error (NULL).
 * The caller keeps <arg> alive until it removes the series.
 */
struct sl_metric *sl_metrics_series_fn(struct sl_metric_family *f, const char *const *values,
                                       sl_metrics_value_fn fn, void *arg);

/* Removes series <s> from its family and frees it; the caller drops every
 * handle to it. Accepts NULL. */
void sl_metrics_series_remove(struct sl_metric *s);

/* Hot path, loop thread: add 1 or <v> (counters: v >= 0) to a counter or
 * gauge, set a gauge, record one observation <v> in a histogram. */
void sl_metrics_inc(struct sl_metric *s);
void sl_metrics_add(struct sl_metric *s, double v);
void sl_metrics_set(struct sl_metric *s, double v);
void sl_metrics_observe(struct sl_metric *s, double v);

/* Hot path, any thread: the same as atomic read-modify-write operations.
 * (sl_metrics_set() is one atomic store: a gauge that a single thread sets
 * may be set from that thread, whichever it is.) */
void sl_metrics_add_atomic(struct sl_metric *s, double v);
void sl_metrics_observe_atomic(struct sl_metric *s, double v);

/* The current value of a counter or gauge (callback series: the callback's),
 * or the observation count of a histogram. For tests and status pages. */
double sl_metrics_value(const struct sl_metric *s);

/*
 * Appends the exposition of every family of <reg> to <out>, in registration
 * order, series in creation order; families without series are left out.
 * Runs the value callbacks. Returns 0 or -ENOMEM, which is UV_ENOMEM (<out> then holds a
 * partial text that the caller must not serve).
 */
int sl_metrics_render(struct sl_metrics *reg, struct sl_buf *out);

/*
 * Registers the process collector in <reg>: process_cpu_seconds_total,
 * process_resident_memory_bytes, process_virtual_memory_bytes,
 * process_open_fds, process_max_fds, process_start_time_seconds and
 * sluice_build_info{version="..."} 1. Calling it again changes nothing.
 * Returns 0, or -EINVAL when a name is taken by another family (logged) or
 * memory ran out.
 */
int sl_metrics_register_process(struct sl_metrics *reg);

#endif

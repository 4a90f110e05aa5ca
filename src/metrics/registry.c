/*
 * The metrics registry: families, series and the hot-path updates.
 *
 * Invariants: family names and the sample names they expose (a histogram
 * exposes name_bucket, name_sum and name_count) are unique in a registry, and
 * a label tuple has at most one series in its family. Together they mean the
 * exposition never repeats a series, whatever the callers ask for.
 *
 * Values are C11 atomics (see sluice/metrics.h for which functions may be
 * used from which thread). The plain updates are a relaxed load plus a
 * relaxed store: on the usual targets these compile to ordinary moves, so the
 * loop thread pays nothing for a scrape being able to read them safely.
 */
#include "sluice/metrics.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics_int.h"
#include "sluice/log.h"
#include "sluice/util.h"

const double sl_metrics_duration_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                              0.5,   1,      2.5,   5,    10,    30,   60};
const size_t sl_metrics_duration_buckets_len = sl_countof(sl_metrics_duration_buckets);

static struct sl_metrics *default_reg;

struct sl_metrics *sl_metrics_create(void) {
  struct sl_metrics *reg = calloc(1, sizeof(*reg));

  if (reg != NULL)
    STAILQ_INIT(&reg->families);
  return reg;
}

static void series_free(struct sl_metric *s) {
  free(s->labels);
  free(s->counts);
  free(s);
}

static void family_free(struct sl_metric_family *f) {
  struct sl_metric *s;

  while ((s = STAILQ_FIRST(&f->series)) != NULL) {
    STAILQ_REMOVE_HEAD(&f->series, link);
    series_free(s);
  }
  for (size_t i = 0; i < f->n_labels; i++)
    free(f->labels[i]);
  free(f->labels);
  free(f->bounds);
  free(f->le);
  free(f->name);
  free(f->help);
  free(f);
}

void sl_metrics_destroy(struct sl_metrics *reg) {
  struct sl_metric_family *f;

  if (reg == NULL)
    return;
  while ((f = STAILQ_FIRST(&reg->families)) != NULL) {
    STAILQ_REMOVE_HEAD(&reg->families, link);
    family_free(f);
  }
  free(reg);
}

struct sl_metrics *sl_metrics_default(void) {
  if (default_reg == NULL)
    default_reg = sl_metrics_create();
  return default_reg;
}

void sl_metrics_default_destroy(void) {
  sl_metrics_destroy(default_reg);
  default_reg = NULL;
}

static bool valid_name(const char *s, bool metric) {
  if (s == NULL || *s == '\0')
    return false;
  for (const char *p = s; *p != '\0'; p++) {
    char ch = *p;
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' ||
              (metric && ch == ':') || (p != s && ch >= '0' && ch <= '9');
    if (!ok)
      return false;
  }
  /* Label names starting with "__" are reserved for Prometheus itself. */
  return metric || strncmp(s, "__", 2) != 0;
}

/* Whether <s> is well-formed UTF-8 (no overlongs, surrogates or values past
 * U+10FFFF): Prometheus rejects a whole scrape that is not. */
static bool valid_utf8(const char *s) {
  const unsigned char *p = (const unsigned char *)s;

  while (*p != '\0') {
    unsigned c = *p++;
    unsigned need, min, cp;

    if (c < 0x80)
      continue;
    if (c >= 0xc2 && c <= 0xdf) {
      need = 1, min = 0x80, cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      need = 2, min = 0x800, cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      need = 3, min = 0x10000, cp = c & 0x07;
    } else {
      return false;
    }
    while (need-- > 0) {
      if ((*p & 0xc0) != 0x80)
        return false; /* also stops at the terminating NUL */
      cp = (cp << 6) | (*p++ & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return false;
  }
  return true;
}

static const char *const hist_suffixes[] = {"_bucket", "_sum", "_count"};

/* Whether sample name <a> is one that family <f> exposes. */
static bool exposes(const struct sl_metric_family *f, const char *a) {
  size_t n = strlen(f->name);

  if (strcmp(a, f->name) == 0)
    return true;
  if (f->type != SL_METRIC_HISTOGRAM || strncmp(a, f->name, n) != 0)
    return false;
  for (size_t i = 0; i < 3; i++) {
    if (strcmp(a + n, hist_suffixes[i]) == 0)
      return true;
  }
  return false;
}

/* Whether a new family <name> (at most 200 bytes) of <type> would expose a
 * sample name that <f> exposes too. */
static bool clashes(const struct sl_metric_family *f, const char *name, enum sl_metric_type type) {
  char tmp[256];

  if (exposes(f, name))
    return true;
  for (size_t i = 0; type == SL_METRIC_HISTOGRAM && i < 3; i++) {
    snprintf(tmp, sizeof(tmp), "%s%s", name, hist_suffixes[i]);
    if (exposes(f, tmp))
      return true;
  }
  return false;
}

static size_t count_labels(const char *const *labels) {
  size_t n = 0;

  while (labels != NULL && labels[n] != NULL)
    n++;
  return n;
}

/* Whether the existing family <f> is the one being registered again. */
static bool same_family(const struct sl_metric_family *f, enum sl_metric_type type,
                        const char *const *labels, const double *bounds, size_t n_bounds) {
  if (f->type != type || f->n_labels != count_labels(labels) || f->n_bounds != n_bounds)
    return false;
  for (size_t i = 0; i < f->n_labels; i++) {
    if (strcmp(f->labels[i], labels[i]) != 0)
      return false;
  }
  for (size_t i = 0; i < n_bounds; i++) {
    if (f->bounds[i] != bounds[i])
      return false;
  }
  return true;
}

/* Checks the label names; returns NULL when fine, else why not. */
static const char *check_labels(enum sl_metric_type type, const char *const *labels) {
  size_t n = count_labels(labels);

  for (size_t i = 0; i < n; i++) {
    if (!valid_name(labels[i], false))
      return "invalid label name";
    if (type == SL_METRIC_HISTOGRAM && strcmp(labels[i], "le") == 0)
      return "label \"le\" is reserved in a histogram";
    for (size_t j = 0; j < i; j++) {
      if (strcmp(labels[i], labels[j]) == 0)
        return "duplicate label name";
    }
  }
  return NULL;
}

static struct sl_metric_family *family_register(struct sl_metrics *reg, enum sl_metric_type type,
                                                const char *name, const char *help,
                                                const char *const *labels, const double *bounds,
                                                size_t n_bounds) {
  struct sl_metric_family *f;
  const char *why = NULL;

  if (!valid_name(name, true) || strlen(name) > 200)
    why = "invalid metric name";
  if (why == NULL)
    why = check_labels(type, labels);
  for (size_t i = 0; why == NULL && i < n_bounds; i++) {
    if (!isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
      why = "bucket bounds must be finite and increasing";
  }
  STAILQ_FOREACH(f, &reg->families, link) {
    if (why != NULL)
      break;
    if (strcmp(f->name, name) == 0 && same_family(f, type, labels, bounds, n_bounds))
      return f;
    if (strcmp(f->name, name) == 0)
      why = "registered before with another type, labels or buckets";
    else if (clashes(f, name, type))
      why = "name clashes with a registered family";
  }
  if (why != NULL) {
    sl_log_error("metrics: cannot register %s: %s", name ? name : "(null)", why);
    return NULL;
  }

  f = calloc(1, sizeof(*f));
  if (f == NULL)
    return NULL;
  STAILQ_INIT(&f->series);
  f->type = type;
  f->n_labels = count_labels(labels);
  f->n_bounds = n_bounds;
  f->name = strdup(name);
  f->help = strdup(help ? help : "");
  f->labels = calloc(f->n_labels + 1, sizeof(char *));
  f->bounds = malloc((n_bounds + 1) * sizeof(double));
  f->le = malloc((n_bounds + 1) * sizeof(*f->le));
  if (f->name == NULL || f->help == NULL || f->labels == NULL || f->bounds == NULL || f->le == NULL)
    goto fail;
  for (size_t i = 0; i < f->n_labels; i++) {
    if ((f->labels[i] = strdup(labels[i])) == NULL)
      goto fail;
  }
  if (n_bounds > 0)
    memcpy(f->bounds, bounds, n_bounds * sizeof(double));
  /* The `le` labels are rendered once here rather than at every scrape. */
  for (size_t i = 0; i <= n_bounds; i++) {
    char num[SL_METRICS_NUM_MAX];

    sl__metrics_format_double(num, i < n_bounds ? bounds[i] : INFINITY);
    snprintf(f->le[i], sizeof(f->le[i]), "le=\"%s\"", num);
  }
  STAILQ_INSERT_TAIL(&reg->families, f, link);
  return f;

fail:
  family_free(f);
  return NULL;
}

struct sl_metric_family *sl_metrics_family(struct sl_metrics *reg, enum sl_metric_type type,
                                           const char *name, const char *help,
                                           const char *const *labels) {
  if (type != SL_METRIC_COUNTER && type != SL_METRIC_GAUGE) {
    sl_log_error("metrics: %s: histograms are registered with sl_metrics_histogram()", name);
    return NULL;
  }
  return family_register(reg, type, name, help, labels, NULL, 0);
}

struct sl_metric_family *sl_metrics_histogram(struct sl_metrics *reg, const char *name,
                                              const char *help, const char *const *labels,
                                              const double *bounds, size_t n_bounds) {
  if (bounds == NULL) {
    bounds = sl_metrics_duration_buckets;
    n_bounds = sl_metrics_duration_buckets_len;
  }
  return family_register(reg, SL_METRIC_HISTOGRAM, name, help, labels, bounds, n_bounds);
}

/* Renders the label pairs of <values> for family <f> into <out> (NUL-terminated). */
static int render_labels(const struct sl_metric_family *f, const char *const *values,
                         struct sl_buf *out) {
  int r = 0;

  for (size_t i = 0; i < f->n_labels; i++) {
    if (values[i] == NULL || !valid_utf8(values[i])) {
      sl_log_error("metrics: %s: the value of label %s is not valid UTF-8", f->name, f->labels[i]);
      return -1;
    }
    if (i > 0)
      r |= sl_buf_append(out, ",", 1);
    r |= sl_buf_append_str(out, f->labels[i]);
    r |= sl_buf_append(out, "=\"", 2);
    r |= sl__metrics_append_escaped(out, values[i], false);
    r |= sl_buf_append(out, "\"", 1);
  }
  r |= sl_buf_append(out, "", 1);
  return r;
}

/* Finds or creates the series of <values>; <*created> says which. */
static struct sl_metric *series_get(struct sl_metric_family *f, const char *const *values,
                                    bool *created) {
  struct sl_metric *s;
  struct sl_buf labels;

  *created = false;
  sl_buf_init(&labels);
  if (f->n_labels > 0 && values == NULL)
    goto fail;
  if (render_labels(f, values, &labels) != 0)
    goto fail;
  STAILQ_FOREACH(s, &f->series, link) {
    if (strcmp(s->labels, labels.base) == 0) {
      sl_buf_dispose(&labels);
      return s;
    }
  }
  s = calloc(1, sizeof(*s));
  if (s == NULL)
    goto fail;
  s->family = f;
  s->labels = labels.base; /* the buffer's memory now belongs to the series */
  atomic_init(&s->value, 0.0);
  if (f->type == SL_METRIC_HISTOGRAM) {
    s->counts = malloc((f->n_bounds + 1) * sizeof(*s->counts));
    if (s->counts == NULL) {
      series_free(s);
      return NULL;
    }
    for (size_t i = 0; i <= f->n_bounds; i++)
      atomic_init(&s->counts[i], 0);
  }
  STAILQ_INSERT_TAIL(&f->series, s, link);
  *created = true;
  return s;

fail:
  sl_buf_dispose(&labels);
  return NULL;
}

struct sl_metric *sl_metrics_series(struct sl_metric_family *f, const char *const *values) {
  bool created;

  return series_get(f, values, &created);
}

struct sl_metric *sl_metrics_series_fn(struct sl_metric_family *f, const char *const *values,
                                       sl_metrics_value_fn fn, void *arg) {
  struct sl_metric *s;
  bool created;

  if (f->type == SL_METRIC_HISTOGRAM || fn == NULL) {
    sl_log_error("metrics: %s: a callback series needs a counter or gauge and a function", f->name);
    return NULL;
  }
  s = series_get(f, values, &created);
  if (s == NULL)
    return NULL;
  if (!created && s->fn == NULL) {
    sl_log_error("metrics: %s{%s}: already a plain series", f->name, s->labels);
    return NULL;
  }
  s->fn = fn;
  s->arg = arg;
  return s;
}

void sl_metrics_series_remove(struct sl_metric *s) {
  if (s == NULL)
    return;
  STAILQ_REMOVE(&s->family->series, s, sl_metric, link);
  series_free(s);
}

/* The bucket that observation <v> falls into: the first bound >= v. */
static size_t bucket_of(const struct sl_metric_family *f, double v) {
  size_t i = 0;

  while (i < f->n_bounds && !(v <= f->bounds[i]))
    i++;
  return i;
}

void sl_metrics_inc(struct sl_metric *s) { sl_metrics_add(s, 1.0); }

void sl_metrics_add(struct sl_metric *s, double v) {
  assert(s->family->type != SL_METRIC_HISTOGRAM && s->fn == NULL);
  atomic_store_explicit(&s->value, atomic_load_explicit(&s->value, memory_order_relaxed) + v,
                        memory_order_relaxed);
}

void sl_metrics_set(struct sl_metric *s, double v) {
  assert(s->family->type == SL_METRIC_GAUGE && s->fn == NULL);
  atomic_store_explicit(&s->value, v, memory_order_relaxed);
}

void sl_metrics_observe(struct sl_metric *s, double v) {
  _Atomic uint64_t *c;

  assert(s->family->type == SL_METRIC_HISTOGRAM);
  c = &s->counts[bucket_of(s->family, v)];
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1, memory_order_relaxed);
  atomic_store_explicit(&s->value, atomic_load_explicit(&s->value, memory_order_relaxed) + v,
                        memory_order_relaxed);
}

/* There is no fetch_add for floating types: a compare-exchange loop instead. */
static void atomic_add_double(_Atomic double *p, double v) {
  double old = atomic_load_explicit(p, memory_order_relaxed);

  while (!atomic_compare_exchange_weak_explicit(p, &old, old + v, memory_order_relaxed,
                                                memory_order_relaxed))
    ;
}

void sl_metrics_add_atomic(struct sl_metric *s, double v) {
  assert(s->family->type != SL_METRIC_HISTOGRAM && s->fn == NULL);
  atomic_add_double(&s->value, v);
}

void sl_metrics_observe_atomic(struct sl_metric *s, double v) {
  assert(s->family->type == SL_METRIC_HISTOGRAM);
  atomic_fetch_add_explicit(&s->counts[bucket_of(s->family, v)], 1, memory_order_relaxed);
  atomic_add_double(&s->value, v);
}

double sl_metrics_value(const struct sl_metric *s) {
  uint64_t n = 0;

  if (s->fn != NULL)
    return s->fn(s->arg);
  if (s->family->type != SL_METRIC_HISTOGRAM)
    return atomic_load_explicit(&s->value, memory_order_relaxed);
  for (size_t i = 0; i <= s->family->n_bounds; i++)
    n += atomic_load_explicit(&s->counts[i], memory_order_relaxed);
  return (double)n;
}

/*
 * Prometheus text exposition, format 0.0.4:
 *
 *   # HELP <name> <help, with \ and newline escaped>
 *   # TYPE <name> counter|gauge|histogram
 *   <name>{<label>="<value, with \ " and newline escaped>",...} <value>
 *
 * A histogram series becomes cumulative <name>_bucket lines, one per bound
 * and a last one with le="+Inf", then <name>_sum and <name>_count. The
 * buckets are read once, in order, and summed as they go, so the buckets are
 * non-decreasing and _count equals the +Inf bucket even while another thread
 * observes; only _sum may be one observation ahead or behind.
 *
 * Numbers are printed with the C locale's decimal point: the process never
 * calls setlocale().
 *
 * @thread the registry's owner
 */
#include "sluice/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics_int.h"

void sl__metrics_format_double(char *out, double v) {
  char tmp[24];
  size_t i = sizeof(tmp);
  unsigned long long u;

  if (isnan(v)) {
    strcpy(out, "NaN");
  } else if (isinf(v)) {
    strcpy(out, v > 0 ? "+Inf" : "-Inf");
  } else if (v == trunc(v) && fabs(v) < 0x1p53) {
    /* Integers (most counters) exactly, without the cost of printf. */
    u = (unsigned long long)fabs(v);
    tmp[--i] = '\0';
    do {
      tmp[--i] = (char)('0' + u % 10);
      u /= 10;
    } while (u != 0);
    if (v < 0)
      tmp[--i] = '-';
    memcpy(out, tmp + i, sizeof(tmp) - i);
  } else {
    /* 15 significant digits print most values the way people write them;
     * 17 always round-trip. */
    snprintf(out, SL_METRICS_NUM_MAX, "%.15g", v);
    if (strtod(out, NULL) != v)
      snprintf(out, SL_METRICS_NUM_MAX, "%.17g", v);
  }
}

int sl__metrics_append_double(struct sl_buf *out, double v) {
  char tmp[SL_METRICS_NUM_MAX];

  sl__metrics_format_double(tmp, v);
  return sl_buf_append_str(out, tmp);
}

int sl__metrics_append_escaped(struct sl_buf *out, const char *s, bool help) {
  const char *run = s;
  int r = 0;

  for (; *s != '\0'; s++) {
    const char *esc = NULL;

    if (*s == '\\')
      esc = "\\\\";
    else if (*s == '\n')
      esc = "\\n";
    else if (*s == '"' && !help)
      esc = "\\\"";
    if (esc == NULL)
      continue;
    r |= sl_buf_append(out, run, (size_t)(s - run));
    r |= sl_buf_append(out, esc, 2);
    run = s + 1;
  }
  r |= sl_buf_append(out, run, (size_t)(s - run));
  return r;
}

static const char *type_name(enum sl_metric_type t) {
  switch (t) {
  case SL_METRIC_COUNTER:
    return "counter";
  case SL_METRIC_GAUGE:
    return "gauge";
  default:
    return "histogram";
  }
}

/* Appends "<name><suffix>{<labels>[,<extra>]} " for one sample line; <extra>
 * is an already rendered label pair or NULL. */
static int sample_start(struct sl_buf *out, const struct sl_metric *s, const char *suffix,
                        const char *extra) {
  const char *labels = s->labels;
  int r = 0;

  r |= sl_buf_append_str(out, s->family->name);
  r |= sl_buf_append_str(out, suffix);
  if (labels[0] != '\0' || extra != NULL) {
    r |= sl_buf_append(out, "{", 1);
    r |= sl_buf_append_str(out, labels);
    if (extra != NULL) {
      if (labels[0] != '\0')
        r |= sl_buf_append(out, ",", 1);
      r |= sl_buf_append_str(out, extra);
    }
    r |= sl_buf_append(out, "}", 1);
  }
  r |= sl_buf_append(out, " ", 1);
  return r;
}

static int render_histogram(struct sl_buf *out, const struct sl_metric *s) {
  const struct sl_metric_family *f = s->family;
  uint64_t cum = 0;
  int r = 0;

  for (size_t i = 0; i <= f->n_bounds; i++) {
    cum += atomic_load_explicit(&s->counts[i], memory_order_relaxed);
    r |= sample_start(out, s, "_bucket", f->le[i]);
    r |= sl_buf_append_u64(out, cum);
    r |= sl_buf_append(out, "\n", 1);
  }
  r |= sample_start(out, s, "_sum", NULL);
  r |= sl__metrics_append_double(out, atomic_load_explicit(&s->value, memory_order_relaxed));
  r |= sl_buf_append(out, "\n", 1);
  r |= sample_start(out, s, "_count", NULL);
  r |= sl_buf_append_u64(out, cum);
  r |= sl_buf_append(out, "\n", 1);
  return r;
}

int sl_metrics_render(struct sl_metrics *reg, struct sl_buf *out) {
  const struct sl_metric_family *f;
  const struct sl_metric *s;
  int r = 0;

  STAILQ_FOREACH(f, &reg->families, link) {
    if (r != 0)
      break;
    if (STAILQ_EMPTY(&f->series))
      continue;
    r |= sl_buf_printf(out, "# HELP %s ", f->name);
    r |= sl__metrics_append_escaped(out, f->help, true);
    r |= sl_buf_printf(out, "\n# TYPE %s %s\n", f->name, type_name(f->type));
    STAILQ_FOREACH(s, &f->series, link) {
      if (r != 0)
        break;
      if (f->type == SL_METRIC_HISTOGRAM) {
        r |= render_histogram(out, s);
        continue;
      }
      r |= sample_start(out, s, "", NULL);
      r |= sl__metrics_append_double(out, sl_metrics_value(s));
      r |= sl_buf_append(out, "\n", 1);
    }
  }
  return r ? -ENOMEM : 0;
}

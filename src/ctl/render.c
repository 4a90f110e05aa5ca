/*
 * The admin API's JSON into the text a person reads: the status table with the drain's
 * progress bars, the dead-letter table, one dead letter in full, a request's status. Pure:
 * JSON in, text appended to a buffer, so the tests compare the text itself.
 *
 * The progress bar of a drain shows how much of the current backlog has been worked off:
 * drained / (drained + left), where drained is what left the line (delivered, dead-lettered,
 * cancelled, lost) since the line last started from empty, as the server counts it
 * ("drained_since_empty"), and left is what is ready or in flight now. Delayed records are
 * not in it: they wait for their time, not for the drain (as in the ETA).
 *
 * @thread main
 */
#include "ctl.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define BAR_WIDTH 40

void sl_ctl_format_duration(double seconds, char *out, size_t len) {
  unsigned long long s;

  if (!isfinite(seconds) || seconds < 0)
    seconds = 0;
  if (seconds < 10) {
    snprintf(out, len, "%.1fs", seconds);
    return;
  }
  s = (unsigned long long)(seconds + 0.5);
  if (s < 60)
    snprintf(out, len, "%llus", s);
  else if (s < 3600)
    snprintf(out, len, "%llum%02llus", s / 60, s % 60);
  else if (s < 86400)
    snprintf(out, len, "%lluh%02llum", s / 3600, s % 3600 / 60);
  else
    snprintf(out, len, "%llud%02lluh", s / 86400, s % 86400 / 3600);
}

/* The whole number at <key> of <o>, 0 when it is absent or not a number. */
static unsigned long long num(const json_t *o, const char *key) {
  const json_t *v = json_object_get(o, key);

  if (json_is_integer(v))
    return json_integer_value(v) > 0 ? (unsigned long long)json_integer_value(v) : 0;
  if (json_is_real(v))
    return json_real_value(v) > 0 ? (unsigned long long)json_real_value(v) : 0;
  return 0;
}

/* A duration at <key> (seconds, or null) as text, "-" when null. */
static void duration_at(const json_t *o, const char *key, char *out, size_t len) {
  const json_t *v = json_object_get(o, key);

  if (json_is_number(v))
    sl_ctl_format_duration(json_number_value(v), out, len);
  else
    snprintf(out, len, "-");
}

static const char *str(const json_t *o, const char *key, const char *fallback) {
  const char *s = json_string_value(json_object_get(o, key));

  return s != NULL ? s : fallback;
}

double sl_ctl_drain_progress(const json_t *u) {
  double drained = (double)num(u, "drained_since_empty");
  double left = (double)(num(u, "ready") + num(u, "inflight"));

  if (drained + left == 0)
    return -1;
  return drained / (drained + left);
}

/* What an upstream is doing, in words: "flowing", "paused", "circuit open". */
static const char *state_words(const json_t *u) {
  const char *state = str(u, "state", NULL);

  if (state == NULL) /* a sluice from before "state": say what the other fields say */
    state = json_is_true(json_object_get(u, "paused")) ? "paused" : "flowing";
  return strcmp(state, "circuit_open") == 0 ? "circuit open" : state;
}

static void rate_text(const json_t *u, char *out, size_t len) {
  const json_t *r = json_object_get(u, "rate");

  if (!json_is_number(r) || json_number_value(r) <= 0)
    snprintf(out, len, "unlimited");
  else
    snprintf(out, len, "%g/s", json_number_value(r));
}

static void bar_row(struct sl_buf *out, int name_width, const json_t *u) {
  double p = sl_ctl_drain_progress(u);
  unsigned long long drained = num(u, "drained_since_empty");
  unsigned long long left = num(u, "ready") + num(u, "inflight");
  char bar[BAR_WIDTH + 1];
  int filled;

  if (p < 0)
    return; /* an empty line, and nothing drained through it yet */
  filled = (int)(p * BAR_WIDTH + 0.5);
  if (filled == BAR_WIDTH && left > 0)
    filled = BAR_WIDTH - 1; /* full only once nothing is left */
  memset(bar, '#', (size_t)filled);
  memset(bar + filled, '-', (size_t)(BAR_WIDTH - filled));
  bar[BAR_WIDTH] = '\0';
  sl_buf_printf(out, "%-*s  [%s] %3d%%  %llu drained, %llu left\n", name_width, "", bar,
                (int)(p * 100), drained, left);
}

int sl_ctl_render_status(struct sl_buf *out, const json_t *doc, const char *only, bool bars) {
  const json_t *list = json_object_get(doc, "upstreams");
  const json_t *u;
  size_t i;
  int width = 8, shown = 0;

  json_array_foreach(list, i, u) {
    int n = (int)strlen(str(u, "name", ""));

    if ((only == NULL || strcmp(str(u, "name", ""), only) == 0) && n > width)
      width = n;
  }
  sl_buf_printf(out, "%-*s  %-12s  %9s  %8s  %8s  %7s  %6s  %7s  %7s\n", width, "UPSTREAM", "STATE",
                "RATE", "INFLIGHT", "READY", "DELAYED", "DEAD", "OLDEST", "ETA");
  json_array_foreach(list, i, u) {
    char rate[32], oldest[32], eta[32];

    if (only != NULL && strcmp(str(u, "name", ""), only) != 0)
      continue;
    rate_text(u, rate, sizeof(rate));
    duration_at(u, "oldest_age_seconds", oldest, sizeof(oldest));
    duration_at(u, "eta_seconds", eta, sizeof(eta));
    sl_buf_printf(out, "%-*s  %-12s  %9s  %8llu  %8llu  %7llu  %6llu  %7s  %7s\n", width,
                  str(u, "name", "?"), state_words(u), rate, num(u, "inflight"), num(u, "ready"),
                  num(u, "delayed"), num(u, "dead"), oldest, eta);
    if (bars)
      bar_row(out, width, u);
    shown++;
  }
  return only != NULL && shown == 0 ? -1 : 0;
}

void sl_ctl_render_dead_header(struct sl_buf *out) {
  sl_buf_printf(out, "%-12s  %-32s  %6s  %8s  %7s  %-24s  %s\n", "UPSTREAM", "ID", "STATUS",
                "ATTEMPTS", "AGE", "ERROR", "REQUEST");
}

void sl_ctl_render_dead_row(struct sl_buf *out, const char *upstream, const json_t *dl) {
  char age[32], status[8];
  const json_t *st = json_object_get(dl, "status");

  duration_at(dl, "age_seconds", age, sizeof(age));
  if (json_is_integer(st))
    snprintf(status, sizeof(status), "%d", (int)json_integer_value(st));
  else
    snprintf(status, sizeof(status), "-");
  sl_buf_printf(out, "%-12s  %-32s  %6s  %8llu  %7s  %-24s  %s %s\n", upstream, str(dl, "id", "?"),
                status, num(dl, "attempts"), age, str(dl, "error", ""), str(dl, "method", "?"),
                str(dl, "target", "?"));
}

void sl_ctl_render_dead_show(struct sl_buf *out, const char *upstream, const json_t *dl) {
  const json_t *st = json_object_get(dl, "status");
  const json_t *headers = json_object_get(dl, "headers");
  const json_t *h;
  char age[32];
  size_t i;

  duration_at(dl, "age_seconds", age, sizeof(age));
  sl_buf_printf(out, "id:           %s\n", str(dl, "id", "?"));
  sl_buf_printf(out, "upstream:     %s\n", upstream);
  sl_buf_printf(out, "request:      %s %s\n", str(dl, "method", "?"), str(dl, "target", "?"));
  sl_buf_printf(out, "last error:   %s\n", str(dl, "error", ""));
  if (json_is_integer(st))
    sl_buf_printf(out, "last status:  %d\n", (int)json_integer_value(st));
  else
    sl_buf_printf(out, "last status:  - (no answer)\n");
  sl_buf_printf(out, "attempts:     %llu\n", num(dl, "attempts"));
  sl_buf_printf(out, "accepted at:  %s (%s ago)\n", str(dl, "enqueued_at", "?"), age);
  sl_buf_printf(out, "dead since:   %s\n", str(dl, "dead_at", "-"));
  sl_buf_printf(out, "body:         %llu bytes\n", num(dl, "body_bytes"));
  sl_buf_printf(out, "headers:\n");
  json_array_foreach(headers, i, h) {
    const char *name = json_string_value(json_array_get(h, 0));
    const char *value = json_string_value(json_array_get(h, 1));

    sl_buf_printf(out, "  %s: %s\n", name ? name : "", value ? value : "");
  }
}

void sl_ctl_render_request(struct sl_buf *out, const json_t *doc) {
  const json_t *v;

  sl_buf_printf(out, "id:           %s\n", str(doc, "id", "?"));
  sl_buf_printf(out, "status:       %s\n", str(doc, "status", "?"));
  sl_buf_printf(out, "attempts:     %llu\n", num(doc, "attempts"));
  v = json_object_get(doc, "position");
  if (json_is_integer(v))
    sl_buf_printf(out, "position:     %llu\n", num(doc, "position"));
  else if (v != NULL)
    sl_buf_printf(out, "position:     - (due at a time)\n");
  if (json_object_get(doc, "not_before") != NULL)
    sl_buf_printf(out, "not before:   %s\n", str(doc, "not_before", "?"));
  if ((v = json_object_get(doc, "eta_seconds")) != NULL) {
    char eta[32];

    duration_at(doc, "eta_seconds", eta, sizeof(eta));
    sl_buf_printf(out, "eta:          %s\n", json_is_number(v) ? eta : "- (the drain is held)");
  }
  if (json_object_get(doc, "code") != NULL)
    sl_buf_printf(out, "answer:       %llu\n", num(doc, "code"));
  if (json_object_get(doc, "delivered_at") != NULL)
    sl_buf_printf(out, "delivered at: %s\n", str(doc, "delivered_at", "?"));
  if (json_object_get(doc, "error") != NULL)
    sl_buf_printf(out, "last error:   %s\n", str(doc, "error", ""));
}

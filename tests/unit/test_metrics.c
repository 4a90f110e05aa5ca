/*
 * Unit tests for the metrics registry and its Prometheus text exposition
 * (src/metrics): values and exact rendering of counters, gauges and
 * histograms, escaping, callback series, atomic updates from two threads,
 * the no-duplicate rules and the process collector.
 *
 * With SLUICE_METRICS_DUMP=<file> in the environment, test_dump_every_kind
 * writes the exposition of a registry holding every kind of series to <file>,
 * for `promtool check metrics < <file>`.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "metrics/metrics_int.h"
#include "sluice/metrics.h"

/* Renders <reg> into a NUL-terminated string that the caller frees. */
static char *render(struct sl_metrics *reg) {
  struct sl_buf b;

  sl_buf_init(&b);
  assert_int_equal(sl_metrics_render(reg, &b), 0);
  assert_int_equal(sl_buf_append(&b, "", 1), 0);
  return b.base;
}

static void assert_renders(struct sl_metrics *reg, const char *want) {
  char *got = render(reg);

  if (strcmp(got, want) != 0)
    fail_msg("exposition differs\n--- want ---\n%s--- got ---\n%s", want, got);
  free(got);
}

static void test_counter_and_gauge(void **state) {
  static const char *const labels[] = {"upstream", "outcome", NULL};
  struct sl_metrics *reg = sl_metrics_create();
  struct sl_metric_family *req, *inflight;
  struct sl_metric *total, *fwd, *spill, *g;

  (void)state;
  total = sl_metrics_series(
      sl_metrics_family(reg, SL_METRIC_COUNTER, "sluice_up_total", "Starts.", NULL), NULL);
  req = sl_metrics_family(reg, SL_METRIC_COUNTER, "sluice_requests_total", "Requests by outcome.",
                          labels);
  inflight = sl_metrics_family(reg, SL_METRIC_GAUGE, "sluice_inflight", "In flight.", NULL);
  assert_non_null(total);
  assert_non_null(req);
  assert_non_null(inflight);
  fwd = sl_metrics_series(req, (const char *[]){"orders", "forward"});
  spill = sl_metrics_series(req, (const char *[]){"orders", "spill"});
  g = sl_metrics_series(inflight, NULL);
  assert_non_null(fwd);
  assert_non_null(spill);
  assert_non_null(g);

  sl_metrics_inc(total);
  sl_metrics_inc(fwd);
  sl_metrics_inc(fwd);
  sl_metrics_add(spill, 40);
  sl_metrics_add(spill, 0.5);
  sl_metrics_set(g, 7);
  sl_metrics_add(g, -2);
  assert_true(sl_metrics_value(fwd) == 2);
  assert_true(sl_metrics_value(spill) == 40.5);
  assert_true(sl_metrics_value(g) == 5);

  assert_renders(reg, "# HELP sluice_up_total Starts.\n"
                      "# TYPE sluice_up_total counter\n"
                      "sluice_up_total 1\n"
                      "# HELP sluice_requests_total Requests by outcome.\n"
                      "# TYPE sluice_requests_total counter\n"
                      "sluice_requests_total{upstream=\"orders\",outcome=\"forward\"} 2\n"
                      "sluice_requests_total{upstream=\"orders\",outcome=\"spill\"} 40.5\n"
                      "# HELP sluice_inflight In flight.\n"
                      "# TYPE sluice_inflight gauge\n"
                      "sluice_inflight 5\n");
  sl_metrics_destroy(reg);
}

static void test_histogram(void **state) {
  static const double bounds[] = {0.1, 1, 2.5};
  static const char *const labels[] = {"upstream", NULL};
  struct sl_metrics *reg = sl_metrics_create();
  struct sl_metric_family *f;
  struct sl_metric *h;

  (void)state;
  f = sl_metrics_histogram(reg, "sluice_upstream_seconds", "Upstream time.", labels, bounds, 3);
  assert_non_null(f);
  h = sl_metrics_series(f, (const char *[]){"orders"});
  assert_non_null(h);
  sl_metrics_observe(h, 0.05);
  sl_metrics_observe(h, 0.1); /* on a bound: counted in that bucket (le) */
  sl_metrics_observe(h, 0.5);
  sl_metrics_observe(h, 2);
  sl_metrics_observe(h, 100);
  assert_true(sl_metrics_value(h) == 5);

  assert_renders(reg, "# HELP sluice_upstream_seconds Upstream time.\n"
                      "# TYPE sluice_upstream_seconds histogram\n"
                      "sluice_upstream_seconds_bucket{upstream=\"orders\",le=\"0.1\"} 2\n"
                      "sluice_upstream_seconds_bucket{upstream=\"orders\",le=\"1\"} 3\n"
                      "sluice_upstream_seconds_bucket{upstream=\"orders\",le=\"2.5\"} 4\n"
                      "sluice_upstream_seconds_bucket{upstream=\"orders\",le=\"+Inf\"} 5\n"
                      "sluice_upstream_seconds_sum{upstream=\"orders\"} 102.65\n"
                      "sluice_upstream_seconds_count{upstream=\"orders\"} 5\n");
  sl_metrics_destroy(reg);
}

static void test_histogram_default_buckets(void **state) {
  struct sl_metrics *reg = sl_metrics_create();
  struct sl_metric *h;
  char *text, *p;
  unsigned long long prev = 0, v;
  int n = 0;

  (void)state;
  h = sl_metrics_series(sl_metrics_histogram(reg, "d_seconds", "d", NULL, NULL, 0), NULL);
  assert_non_null(h);
  for (int i = 0; i < 1000; i++)
    sl_metrics_observe(h, i * 0.07);
  text = render(reg);
  assert_non_null(strstr(text, "d_seconds_bucket{le=\"0.001\"} 1\n"));
  assert_non_null(strstr(text, "d_seconds_bucket{le=\"60\"} 858\n"));
  assert_non_null(strstr(text, "d_seconds_bucket{le=\"+Inf\"} 1000\n"));
  assert_non_null(strstr(text, "d_seconds_count 1000\n"));
  /* Buckets are cumulative: never decreasing. */
  for (p = strstr(text, "_bucket"); p != NULL; p = strstr(p + 1, "_bucket")) {
    v = strtoull(strchr(p, ' ') + 1, NULL, 10);
    assert_true(v >= prev);
    prev = v;
    n++;
  }
  assert_int_equal(n, (int)sl_metrics_duration_buckets_len + 1);
  free(text);
  sl_metrics_destroy(reg);
}

static void test_escaping(void **state) {
  static const char *const labels[] = {"name", NULL};
  struct sl_metrics *reg = sl_metrics_create();
  struct sl_metric_family *f;

  (void)state;
  f = sl_metrics_family(reg, SL_METRIC_GAUGE, "esc", "Back\\slash, \"quotes\"\nand newline.",
                        labels);
  assert_non_null(sl_metrics_series(f, (const char *[]){"a\\b\"c\nd"}));
  assert_non_null(sl_metrics_series(f, (const char *[]){"caf\xc3\xa9"}));
  assert_non_null(sl_metrics_series(f, (const char *[]){""}));
  assert_renders(reg, "# HELP esc Back\\\\slash, \"quotes\"\\nand newline.\n"
                      "# TYPE esc gauge\n"
                      "esc{name=\"a\\\\b\\\"c\\nd\"} 0\n"
                      "esc{name=\"caf\xc3\xa9\"} 0\n"
                      "esc{name=\"\"} 0\n");
  /* Not UTF-8: refused rather than breaking the whole scrape. */
  assert_null(sl_metrics_series(f, (const char *[]){"caf\xe9"}));
  assert_null(sl_metrics_series(f, (const char *[]){"\xc0\x80"}));     /* overlong NUL */
  assert_null(sl_metrics_series(f, (const char *[]){"\xed\xa0\x80"})); /* surrogate */
  sl_metrics_destroy(reg);
}

static void test_number_format(void **state) {
  static const struct {
    double v;
    const char *want;
  } cases[] = {
      {0, "0"},
      {1, "1"},
      {-3, "-3"},
      {0.1, "0.1"},
      {1e15, "1000000000000000"},
      {123456789, "123456789"},
      {0.1 + 0.2, "0.30000000000000004"},
      {1.0 / 3, "0.33333333333333331"},
      {-2.5e-7, "-2.5e-07"},
      {1e300, "1e+300"},
      {9007199254740993.0, "9007199254740992"},
      {1e17, "1e+17"},
  };
  struct sl_buf b;

  (void)state;
  sl_buf_init(&b);
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    sl_buf_reset(&b);
    assert_int_equal(sl__metrics_append_double(&b, cases[i].v), 0);
    sl_buf_append(&b, "", 1);
    assert_string_equal(b.base, cases[i].want);
    assert_true(strtod(b.base, NULL) == cases[i].v);
  }
  sl_buf_reset(&b);
  sl__metrics_append_double(&b, NAN);
  sl__metrics_append_double(&b, INFINITY);
  sl__metrics_append_double(&b, -INFINITY);
  sl_buf_append(&b, "", 1);
  assert_string_equal(b.base, "NaN+Inf-Inf");
  sl_buf_dispose(&b);
}

static double read_double(void *arg) { return *(double *)arg; }
static double twice(void *arg) { return 2 * *(double *)arg; }

static void test_callback_series(void **state) {
  static const char *const labels[] = {"upstream", NULL};
  struct sl_metrics *reg = sl_metrics_create();
  struct sl_metric_family *backlog, *drained;
  struct sl_metric *a, *b;
  double x = 3, y = 10;

  (void)state;
  backlog =
      sl_metrics_family(reg, SL_METRIC_GAUGE, "sluice_spool_backlog_records", "Backlog.", labels);
  drained = sl_metrics_family(reg, SL_METRIC_COUNTER, "sluice_drained_total", "Drained.", NULL);
  a = sl_metrics_series_fn(backlog, (const char *[]){"orders"}, read_double, &x);
  b = sl_metrics_series_fn(drained, NULL, read_double, &y);
  assert_non_null(a);
  assert_non_null(b);
  assert_true(sl_metrics_value(a) == 3);
  x = 4.5;
  assert_renders(reg, "# HELP sluice_spool_backlog_records Backlog.\n"
                      "# TYPE sluice_spool_backlog_records gauge\n"
                      "sluice_spool_backlog_records{upstream=\"orders\"} 4.5\n"
                      "# HELP sluice_drained_total Drained.\n"
                      "# TYPE sluice_drained_total counter\n"
                      "sluice_drained_total 10\n");

  /* Asking again replaces the callback; it is still one series. */
  assert_ptr_equal(sl_metrics_series_fn(backlog, (const char *[]){"orders"}, twice, &x), a);
  assert_true(sl_metrics_value(a) == 9);
  /* A plain series of the same tuple cannot become a callback one. */
  assert_non_null(sl_metrics_series(backlog, (const char *[]){"billing"}));
  assert_null(sl_metrics_series_fn(backlog, (const char *[]){"billing"}, twice, &x));
  /* Histograms have no callback series. */
  assert_null(sl_metrics_series_fn(sl_metrics_histogram(reg, "h_seconds", "h", NULL, NULL, 0), NULL,
                                   twice, &x));

  /* Removal: the series disappears, the others stay, and a new one goes last. */
  sl_metrics_series_remove(a);
  sl_metrics_series_remove(b);
  assert_non_null(sl_metrics_series(backlog, (const char *[]){"z"}));
  assert_renders(reg, "# HELP sluice_spool_backlog_records Backlog.\n"
                      "# TYPE sluice_spool_backlog_records gauge\n"
                      "sluice_spool_backlog_records{upstream=\"billing\"} 0\n"
                      "sluice_spool_backlog_records{upstream=\"z\"} 0\n");
  sl_metrics_series_remove(NULL);
  sl_metrics_destroy(reg);
}

static void test_no_duplicates(void **state) {
  static const char *const labels[] = {"upstream", NULL};
  static const char *const other[] = {"route", NULL};
  struct sl_metrics *reg = sl_metrics_create();
  struct sl_metric_family *f, *h;
  struct sl_metric *s;
  char *text;

  (void)state;
  f = sl_metrics_family(reg, SL_METRIC_COUNTER, "x_total", "X.", labels);
  assert_non_null(f);
  /* Same family again: the same object. Same name otherwise: refused. */
  assert_ptr_equal(sl_metrics_family(reg, SL_METRIC_COUNTER, "x_total", "X.", labels), f);
  assert_null(sl_metrics_family(reg, SL_METRIC_GAUGE, "x_total", "X.", labels));
  assert_null(sl_metrics_family(reg, SL_METRIC_COUNTER, "x_total", "X.", other));
  assert_null(sl_metrics_family(reg, SL_METRIC_COUNTER, "x_total", "X.", NULL));

  s = sl_metrics_series(f, (const char *[]){"orders"});
  assert_ptr_equal(sl_metrics_series(f, (const char *[]){"orders"}), s);
  sl_metrics_inc(s);
  sl_metrics_inc(sl_metrics_series(f, (const char *[]){"orders"}));
  text = render(reg);
  assert_string_equal(text, "# HELP x_total X.\n# TYPE x_total counter\n"
                            "x_total{upstream=\"orders\"} 2\n");
  free(text);

  /* Sample names a histogram exposes clash with other families both ways. */
  h = sl_metrics_histogram(reg, "lat_seconds", "L.", NULL, NULL, 0);
  assert_non_null(h);
  assert_null(sl_metrics_family(reg, SL_METRIC_GAUGE, "lat_seconds_count", "", NULL));
  assert_null(sl_metrics_family(reg, SL_METRIC_GAUGE, "lat_seconds", "", NULL));
  assert_non_null(sl_metrics_family(reg, SL_METRIC_GAUGE, "q_sum", "", NULL));
  assert_null(sl_metrics_histogram(reg, "q", "", NULL, NULL, 0));
  assert_null(sl_metrics_histogram(reg, "lat_seconds", "L.", NULL, (double[]){1, 2}, 2));
  assert_ptr_equal(sl_metrics_histogram(reg, "lat_seconds", "L.", NULL, NULL, 0), h);

  /* Invalid names and labels. */
  assert_null(sl_metrics_family(reg, SL_METRIC_GAUGE, "9lives", "", NULL));
  assert_null(sl_metrics_family(reg, SL_METRIC_GAUGE, "a-b", "", NULL));
  assert_null(sl_metrics_family(reg, SL_METRIC_GAUGE, "", "", NULL));
  assert_null(sl_metrics_family(reg, SL_METRIC_GAUGE, "ok", "", (const char *[]){"a:b", NULL}));
  assert_null(sl_metrics_family(reg, SL_METRIC_GAUGE, "ok", "", (const char *[]){"__x", NULL}));
  assert_null(sl_metrics_family(reg, SL_METRIC_GAUGE, "ok", "", (const char *[]){"a", "a", NULL}));
  assert_null(sl_metrics_histogram(reg, "ok", "", (const char *[]){"le", NULL}, NULL, 0));
  assert_null(sl_metrics_histogram(reg, "ok", "", NULL, (double[]){2, 1}, 2));
  assert_null(sl_metrics_histogram(reg, "ok", "", NULL, (double[]){1, INFINITY}, 2));
  assert_null(sl_metrics_family(reg, SL_METRIC_HISTOGRAM, "ok", "", NULL));
  assert_non_null(sl_metrics_family(reg, SL_METRIC_GAUGE, "ok:sub_1", "", NULL));
  /* A labelled family needs its values. */
  assert_null(sl_metrics_series(f, NULL));
  sl_metrics_destroy(reg);
}

#define THREAD_ITERS 200000

struct hammer {
  struct sl_metric *counter, *hist;
};

static void *hammer_run(void *arg) {
  struct hammer *h = arg;

  for (int i = 0; i < THREAD_ITERS; i++) {
    sl_metrics_add_atomic(h->counter, 1);
    sl_metrics_observe_atomic(h->hist, (i % 4) * 0.5); /* 0, 0.5, 1, 1.5 */
  }
  return NULL;
}

static void test_atomic_two_threads(void **state) {
  struct sl_metrics *reg = sl_metrics_create();
  struct hammer h;
  pthread_t t1, t2;
  char *text;

  (void)state;
  h.counter = sl_metrics_series(
      sl_metrics_family(reg, SL_METRIC_COUNTER, "fsyncs_total", "F.", NULL), NULL);
  h.hist = sl_metrics_series(
      sl_metrics_histogram(reg, "fsync_seconds", "F.", NULL, (double[]){0.5, 1}, 2), NULL);
  assert_non_null(h.counter);
  assert_non_null(h.hist);
  assert_int_equal(pthread_create(&t1, NULL, hammer_run, &h), 0);
  assert_int_equal(pthread_create(&t2, NULL, hammer_run, &h), 0);
  /* A scrape while they run must not get in their way. */
  text = render(reg);
  free(text);
  pthread_join(t1, NULL);
  pthread_join(t2, NULL);

  assert_true(sl_metrics_value(h.counter) == 2.0 * THREAD_ITERS);
  assert_true(sl_metrics_value(h.hist) == 2.0 * THREAD_ITERS);
  assert_renders(reg, "# HELP fsyncs_total F.\n# TYPE fsyncs_total counter\n"
                      "fsyncs_total 400000\n"
                      "# HELP fsync_seconds F.\n# TYPE fsync_seconds histogram\n"
                      "fsync_seconds_bucket{le=\"0.5\"} 200000\n"
                      "fsync_seconds_bucket{le=\"1\"} 300000\n"
                      "fsync_seconds_bucket{le=\"+Inf\"} 400000\n"
                      "fsync_seconds_sum 300000\n"
                      "fsync_seconds_count 400000\n");
  sl_metrics_destroy(reg);
}

/* The value on the line of sample <name> (followed by a space) in <text>. */
static double sample(const char *text, const char *name) {
  char pat[128];
  const char *p;

  snprintf(pat, sizeof(pat), "\n%s ", name);
  p = strstr(text, pat);
  if (p == NULL)
    fail_msg("no sample %s in\n%s", name, text);
  return strtod(p + strlen(pat), NULL);
}

static void test_process_collector(void **state) {
  struct sl_metrics *reg = sl_metrics_create();
  double now = (double)time(NULL), fds;
  char *text;
  int fd;

  (void)state;
  assert_int_equal(sl_metrics_register_process(reg), 0);
  assert_int_equal(sl_metrics_register_process(reg), 0); /* idempotent */
  text = render(reg);
  assert_true(sample(text, "process_cpu_seconds_total") >= 0);
  assert_true(sample(text, "process_resident_memory_bytes") > 1024 * 1024);
  assert_true(sample(text, "process_virtual_memory_bytes") >=
              sample(text, "process_resident_memory_bytes"));
  fds = sample(text, "process_open_fds");
  assert_true(fds >= 1);
  assert_true(sample(text, "process_max_fds") >= fds);
  assert_true(sample(text, "process_start_time_seconds") > now - 3600);
  assert_true(sample(text, "process_start_time_seconds") <= now + 1);
  assert_non_null(strstr(text, "\nsluice_build_info{version=\"" SLUICE_VERSION "\"} 1\n"));
  free(text);

  /* Values are read at scrape time: one more descriptor shows. */
  fd = open("/dev/null", O_RDONLY);
  assert_true(fd >= 0);
  text = render(reg);
  assert_true(sample(text, "process_open_fds") == fds + 1);
  free(text);
  close(fd);
  sl_metrics_destroy(reg);
}

static void test_default_registry(void **state) {
  struct sl_metrics *reg = sl_metrics_default();

  (void)state;
  assert_non_null(reg);
  assert_ptr_equal(sl_metrics_default(), reg);
  assert_non_null(sl_metrics_family(reg, SL_METRIC_GAUGE, "g", "", NULL));
  sl_metrics_default_destroy();
  sl_metrics_default_destroy();
  sl_metrics_destroy(NULL);
}

static double half(void *arg) {
  (void)arg;
  return 0.5;
}

/* Every kind of series in one registry; dumped for promtool when asked. */
static void test_dump_every_kind(void **state) {
  static const char *const up[] = {"upstream", NULL};
  static const char *const up_route[] = {"upstream", "route", NULL};
  struct sl_metrics *reg = sl_metrics_create();
  struct sl_metric_family *f;
  const char *path = getenv("SLUICE_METRICS_DUMP");
  char *text;

  (void)state;
  assert_int_equal(sl_metrics_register_process(reg), 0);
  f = sl_metrics_family(reg, SL_METRIC_COUNTER, "sluice_requests_total",
                        "Requests by upstream and route.", up_route);
  sl_metrics_add(sl_metrics_series(f, (const char *[]){"orders", "/api/orders"}), 12);
  sl_metrics_inc(sl_metrics_series(f, (const char *[]){"we\"ird\\name\n", "/"}));
  f = sl_metrics_family(reg, SL_METRIC_GAUGE, "sluice_inflight_requests", "In flight.", up);
  sl_metrics_set(sl_metrics_series(f, (const char *[]){"orders"}), 3);
  f = sl_metrics_family(reg, SL_METRIC_GAUGE, "sluice_spool_backlog_records",
                        "Records not yet delivered.\nSecond line with a \\ backslash.", up);
  assert_non_null(sl_metrics_series_fn(f, (const char *[]){"orders"}, half, NULL));
  f = sl_metrics_family(reg, SL_METRIC_COUNTER, "sluice_replayed_total", "Replays.", NULL);
  assert_non_null(sl_metrics_series_fn(f, NULL, half, NULL));
  f = sl_metrics_histogram(reg, "sluice_upstream_duration_seconds", "Upstream time.", up, NULL, 0);
  sl_metrics_observe(sl_metrics_series(f, (const char *[]){"orders"}), 0.042);
  sl_metrics_observe(sl_metrics_series(f, (const char *[]){"billing"}), 75);
  f = sl_metrics_histogram(reg, "sluice_spool_fsync_seconds", "Fsync time.", NULL,
                           (double[]){0.0001, 0.001, 0.01}, 3);
  sl_metrics_observe_atomic(sl_metrics_series(f, NULL), 0.0005);
  f = sl_metrics_family(reg, SL_METRIC_GAUGE, "sluice_empty_family", "Has no series.", NULL);
  assert_non_null(f);

  text = render(reg);
  assert_null(strstr(text, "sluice_empty_family"));
  if (path != NULL) {
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fputs(text, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
  }
  free(text);
  sl_metrics_destroy(reg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_counter_and_gauge),
      cmocka_unit_test(test_histogram),
      cmocka_unit_test(test_histogram_default_buckets),
      cmocka_unit_test(test_escaping),
      cmocka_unit_test(test_number_format),
      cmocka_unit_test(test_callback_series),
      cmocka_unit_test(test_no_duplicates),
      cmocka_unit_test(test_atomic_two_threads),
      cmocka_unit_test(test_process_collector),
      cmocka_unit_test(test_default_registry),
      cmocka_unit_test(test_dump_every_kind),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}

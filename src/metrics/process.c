/*
 * The process collector: the standard process_* metrics that Prometheus
 * client libraries export, plus sluice_build_info.
 *
 * The values come from getrusage(), getrlimit() and /proc, read at scrape
 * time through callback series. /proc is generated from kernel memory, so
 * reading it never waits for a disk and is fine on the loop thread; a scrape
 * costs a few small reads and one directory listing (/proc/self/fd). When a
 * file cannot be read the value is NaN rather than a plausible-looking 0.
 *
 * @thread the registry's owner
 */
#include "sluice/metrics.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* Reads up to <len> - 1 bytes of <path> into <buf>, NUL-terminated. Returns
 * the length, or -1. */
static ssize_t read_small(const char *path, char *buf, size_t len) {
  ssize_t n;
  size_t got = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);

  if (fd < 0)
    return -1;
  while (got < len - 1) {
    n = read(fd, buf + got, len - 1 - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    got += (size_t)n;
  }
  close(fd);
  buf[got] = '\0';
  return (ssize_t)got;
}

static double cpu_seconds(void *arg) {
  struct rusage ru;

  (void)arg;
  if (getrusage(RUSAGE_SELF, &ru) != 0)
    return NAN;
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Field <arg> (0: total program size, 1: resident set) of /proc/self/statm,
 * in bytes. */
static double statm_bytes(void *arg) {
  unsigned long long size, resident;
  char buf[256];

  if (read_small("/proc/self/statm", buf, sizeof(buf)) <= 0 ||
      sscanf(buf, "%llu %llu", &size, &resident) != 2)
    return NAN;
  return (double)(arg != NULL ? resident : size) * (double)sysconf(_SC_PAGESIZE);
}

static double open_fds(void *arg) {
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  double n = 0;

  (void)arg;
  if (d == NULL)
    return NAN;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] != '.')
      n++;
  }
  closedir(d);
  return n - 1; /* the directory stream's own descriptor */
}

static double max_fds(void *arg) {
  struct rlimit rl;

  (void)arg;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return NAN;
  return rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur;
}

/*
 * The process start time in seconds since the epoch: boot time (btime in
 * /proc/stat) plus the start time in clock ticks since boot (field 22 of
 * /proc/self/stat). Falls back to now, which is close for a caller that
 * registers the collector at start-up.
 */
static double start_time(void) {
  char stat[1024], sys[8192];
  const char *p;
  unsigned long long ticks, btime;
  int field;

  if (read_small("/proc/self/stat", stat, sizeof(stat)) <= 0 ||
      read_small("/proc/stat", sys, sizeof(sys)) <= 0)
    goto fail;
  p = strstr(sys, "\nbtime ");
  if (p == NULL || sscanf(p, "\nbtime %llu", &btime) != 1)
    goto fail;
  /* The command name (field 2) may hold spaces and parentheses: count fields
   * from the last ')'. Each step finds the space before field <field> + 1. */
  p = strrchr(stat, ')');
  for (field = 2; field < 22 && p != NULL; field++)
    p = strchr(p + 1, ' ');
  if (p == NULL || sscanf(p, " %llu", &ticks) != 1)
    goto fail;
  return (double)btime + (double)ticks / (double)sysconf(_SC_CLK_TCK);

fail:
  return (double)time(NULL);
}

/* Registers an unlabelled callback series. Returns 0 or -1. */
static int add_fn(struct sl_metrics *reg, enum sl_metric_type type, const char *name,
                  const char *help, sl_metrics_value_fn fn, void *arg) {
  struct sl_metric_family *f = sl_metrics_family(reg, type, name, help, NULL);

  return f != NULL && sl_metrics_series_fn(f, NULL, fn, arg) != NULL ? 0 : -1;
}

int sl_metrics_register_process(struct sl_metrics *reg) {
  static const char *const version_label[] = {"version", NULL};
  static const char *const version[] = {SLUICE_VERSION, NULL};
  struct sl_metric_family *f;
  struct sl_metric *s;
  static char resident_tag; /* any non-NULL arg selects the resident field */

  if (add_fn(reg, SL_METRIC_COUNTER, "process_cpu_seconds_total",
             "Total user and system CPU time spent in seconds.", cpu_seconds, NULL) != 0 ||
      add_fn(reg, SL_METRIC_GAUGE, "process_resident_memory_bytes",
             "Resident memory size in bytes.", statm_bytes, &resident_tag) != 0 ||
      add_fn(reg, SL_METRIC_GAUGE, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
             statm_bytes, NULL) != 0 ||
      add_fn(reg, SL_METRIC_GAUGE, "process_open_fds", "Number of open file descriptors.", open_fds,
             NULL) != 0 ||
      add_fn(reg, SL_METRIC_GAUGE, "process_max_fds", "Maximum number of open file descriptors.",
             max_fds, NULL) != 0)
    goto fail;
  f = sl_metrics_family(reg, SL_METRIC_GAUGE, "process_start_time_seconds",
                        "Start time of the process since unix epoch in seconds.", NULL);
  if (f == NULL || (s = sl_metrics_series(f, NULL)) == NULL)
    goto fail;
  sl_metrics_set(s, start_time());
  f = sl_metrics_family(reg, SL_METRIC_GAUGE, "sluice_build_info",
                        "A constant 1, labelled with the version of sluice.", version_label);
  if (f == NULL || (s = sl_metrics_series(f, version)) == NULL)
    goto fail;
  sl_metrics_set(s, 1);
  return 0;

fail:
  return -EINVAL; /* a name taken by another family (logged), or no memory */
}

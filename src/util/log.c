/*
 * Error log implementation: one formatted line per write(2) on its output
 * (stderr, or log.file); the outputs of both logs and their reopening.
 */
#include "sluice/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "sluice/util.h"

static enum sl_log_level min_level = SL_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* Each output's descriptor: its standard stream until a file is set, then the descriptor of
 * the first file opened, over which every later file (or the standard stream again) is
 * dup3()ed. Atomic because writers on other threads read it while main sets it. */
static const int standard_fd[] = {STDERR_FILENO, STDOUT_FILENO};
static _Atomic int output_fd[] = {STDERR_FILENO, STDOUT_FILENO};
static bool output_owned[2]; /* output_fd is ours, not a standard stream (one setter at a time) */

int sl_log_output_fd(enum sl_log_output out) {
  return atomic_load_explicit(&output_fd[out], memory_order_relaxed);
}

int sl_log_output_set(enum sl_log_output out, const char *path, char *err, size_t errlen) {
  int fd = standard_fd[out];

  if (path != NULL) {
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
      snprintf(err, errlen, "%s: %s", path, strerror(errno));
      return -1;
    }
    if (!output_owned[out]) {
      output_owned[out] = true;
      atomic_store(&output_fd[out], fd);
      return 0;
    }
  } else if (!output_owned[out]) {
    return 0; /* already on its standard stream */
  }
  /* Open new, then swap: the number writers hold now names the new file, in one step. */
  if (dup3(fd, sl_log_output_fd(out), O_CLOEXEC) < 0) {
    snprintf(err, errlen, "%s: %s", path != NULL ? path : "standard stream", strerror(errno));
    if (path != NULL)
      close(fd);
    return -1;
  }
  if (path != NULL)
    close(fd);
  return 0;
}

void sl_log_set_level(enum sl_log_level level) { min_level = level; }

enum sl_log_level sl_log_get_level(void) { return min_level; }

int sl_log_level_parse(const char *name, enum sl_log_level *level) {
  for (size_t i = 0; i < sl_countof(level_names); i++) {
    if (strcasecmp(name, level_names[i]) == 0) {
      *level = (enum sl_log_level)i;
      return 0;
    }
  }
  return -1;
}

void sl_log(enum sl_log_level level, const char *fmt, ...) {
  char line[1024];
  struct timeval tv;
  struct tm tm;
  size_t n;
  va_list ap;
  int r;

  if (level < min_level)
    return;
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
  r = snprintf(line + n, sizeof(line) - n, ".%03ldZ [%s] ", (long)(tv.tv_usec / 1000),
               level_names[level]);
  n += (size_t)r;
  va_start(ap, fmt);
  r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
  va_end(ap);
  /* A line that did not fit is cut, not dropped: the start says what went wrong. */
  n = r < 0 ? n : (n + (size_t)r < sizeof(line) - 1 ? n + (size_t)r : sizeof(line) - 2);
  line[n++] = '\n';
  if (write(sl_log_output_fd(SL_LOG_OUTPUT_ERROR), line, n) < 0) {
    /* Nowhere left to report a failing error log. */
  }
}

/*
 * Error log implementation: one formatted line per write(2) on stderr.
 */
#include "sluice/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "sluice/util.h"

static enum sl_log_level min_level = SL_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

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
  if (write(STDERR_FILENO, line, n) < 0) {
    /* Nowhere left to report a failing stderr. */
  }
}

/*
 * Error log: leveled lines on stderr.
 *
 * The log is one of the two process-wide singletons (with the metrics
 * registry). Lines are short and written with one write(2) each, so lines
 * from several threads never interleave. Errors are rare by design; the
 * per-request access log lives in server/access_log.c and never blocks the loop.
 *
 * @thread any
 */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

enum sl_log_level {
  SL_LOG_DEBUG,
  SL_LOG_INFO,
  SL_LOG_WARN,
  SL_LOG_ERROR,
};

/* Sets the lowest level that is written; lines below it are dropped. */
void sl_log_set_level(enum sl_log_level level);
enum sl_log_level sl_log_get_level(void);

/* Parses "debug", "info", "warn" or "error" into <level>. Returns 0 or -1. */
int sl_log_level_parse(const char *name, enum sl_log_level *level);

void sl_log(enum sl_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define sl_log_debug(...) sl_log(SL_LOG_DEBUG, __VA_ARGS__)
#define sl_log_info(...) sl_log(SL_LOG_INFO, __VA_ARGS__)
#define sl_log_warn(...) sl_log(SL_LOG_WARN, __VA_ARGS__)
#define sl_log_error(...) sl_log(SL_LOG_ERROR, __VA_ARGS__)

#endif

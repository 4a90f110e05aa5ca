/*
 * Error log: leveled lines on stderr, or in the file log.file names.
 *
 * The log is one of the two process-wide singletons (with the metrics
 * registry). Lines are short and written with one write(2) each, so lines
 * from several threads never interleave. Errors are rare by design; the
 * per-request access log lives in server/access_log.c and never blocks the loop.
 *
 * The log's two outputs, the error log and the access log, are also kept
 * here, so that every loop's access log writes into the same file and a
 * SIGUSR1 (logrotate) reopens both in one place. An output is a descriptor
 * whose number never changes once a file was given to it: a reopen opens the
 * new file and dup3()s it over that number, which is atomic, so a writer on
 * any thread (a threadpool write of the access log in flight, a spool thread
 * logging an error) writes into either the old file or the new one, never
 * into a closed or reused descriptor.
 *
 * @thread any
 */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#include <stddef.h>

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

/* The log's outputs: the error log (stderr by default) and the access log (stdout). */
enum sl_log_output {
  SL_LOG_OUTPUT_ERROR,
  SL_LOG_OUTPUT_ACCESS,
};

/*
 * Points <out> at the file <path>, opened for appending and created with mode
 * 0640 if missing, or back at stderr (stdout for the access log) when <path>
 * is NULL. Opening the same path again reopens it: the way a rotated file is
 * let go. On failure the output keeps writing where it did, and -1 is
 * returned with "<path>: <reason>" in <err> of <errlen> bytes; 0 on success.
 * Blocks on open(2): call it at start-up or from the threadpool, never from
 * a running loop. Calls must not overlap (main makes them one at a time).
 */
int sl_log_output_set(enum sl_log_output out, const char *path, char *err, size_t errlen);

/* The descriptor that output <out> writes to now: stable for the life of the process once a
 * file was set (see above). */
int sl_log_output_fd(enum sl_log_output out);

void sl_log(enum sl_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define sl_log_debug(...) sl_log(SL_LOG_DEBUG, __VA_ARGS__)
#define sl_log_info(...) sl_log(SL_LOG_INFO, __VA_ARGS__)
#define sl_log_warn(...) sl_log(SL_LOG_WARN, __VA_ARGS__)
#define sl_log_error(...) sl_log(SL_LOG_ERROR, __VA_ARGS__)

#endif

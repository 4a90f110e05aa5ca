/*
 * The pid file (the top-level pid_file setting): the process id on one line,
 * for scripts, init systems without notification and logrotate's
 * `kill -USR1 $(cat FILE)`.
 *
 * It is written once start-up succeeded (the listeners are bound, the spools
 * open) and removed on a clean exit, so its presence says "this process
 * serves". It is written whole through a temporary file and a rename
 * (sluice/durable.h), so a reader never sees half a number. Before anything
 * is opened, sl_pidfile_check refuses a second sluice on the pid file of one
 * that is alive.
 *
 * All block on the file system: call them at start-up and at exit, outside a
 * running loop.
 *
 * @thread main
 */
#ifndef SLUICE_PIDFILE_H
#define SLUICE_PIDFILE_H

#include <stddef.h>

/*
 * Checks that no other live sluice holds <path>: a missing file, one that holds
 * no pid, the pid of a process that is gone, or one that is no sluice (its pid
 * was reused after a crash) is fine and will be overwritten. Returns 0, or -1
 * with the reason in <err> of <errlen> bytes.
 */
int sl_pidfile_check(const char *path, char *err, size_t errlen);

/* Writes this process's pid into <path>. Returns 0, or -1 with the reason in <err>. */
int sl_pidfile_write(const char *path, char *err, size_t errlen);

/* Removes <path> if it still holds this process's pid (a later sluice may have taken it). */
void sl_pidfile_remove(const char *path);

#endif

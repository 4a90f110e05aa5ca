/*
 * The pid file: check, write, remove (sluice/pidfile.h).
 */
#include "sluice/pidfile.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice/durable.h"

/* The pid in the file at <path>: > 0, 0 when the file holds no pid, or a negative errno when
 * it cannot be read (-ENOENT: there is none). */
static long read_pid(const char *path) {
  FILE *f = fopen(path, "r");
  long pid = 0;

  if (f == NULL)
    return -errno;
  if (fscanf(f, "%ld", &pid) != 1 || pid < 0)
    pid = 0;
  fclose(f);
  return pid;
}

/* True when process <pid> runs a program called sluice. A process we may not signal still
 * exists (EPERM); when its name cannot be read, it is taken for a sluice: refusing to start
 * is the safe side. */
static bool runs_sluice(long pid) {
  char path[64], comm[32] = "";
  FILE *f;

  if (kill((pid_t)pid, 0) != 0 && errno != EPERM)
    return false;
  snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
  f = fopen(path, "r");
  if (f == NULL)
    return true;
  if (fgets(comm, sizeof(comm), f) == NULL)
    comm[0] = '\0';
  fclose(f);
  comm[strcspn(comm, "\n")] = '\0';
  return comm[0] == '\0' || strcmp(comm, "sluice") == 0;
}

int sl_pidfile_check(const char *path, char *err, size_t errlen) {
  long pid = read_pid(path);

  if (pid == -ENOENT || pid == 0 || pid == (long)getpid())
    return 0;
  if (pid < 0) {
    snprintf(err, errlen, "pid_file %s: cannot read: %s", path, strerror((int)-pid));
    return -1;
  }
  if (runs_sluice(pid)) {
    snprintf(err, errlen,
             "pid_file %s: sluice is already running as pid %ld (stop it first; if that "
             "process is no sluice, remove the file)",
             path, pid);
    return -1;
  }
  return 0;
}

int sl_pidfile_write(const char *path, char *err, size_t errlen) {
  char line[32];
  int n = snprintf(line, sizeof(line), "%ld\n", (long)getpid());
  int rc = sl_durable_replace(NULL, -1, path, line, (size_t)n, 0644);

  if (rc != 0) {
    snprintf(err, errlen, "pid_file %s: cannot write: %s", path, strerror(-rc));
    return -1;
  }
  return 0;
}

void sl_pidfile_remove(const char *path) {
  if (read_pid(path) == (long)getpid())
    unlink(path);
}

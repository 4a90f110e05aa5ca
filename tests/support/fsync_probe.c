/*
 * fsync probe for the power-cut end-to-end tests: a library for LD_PRELOAD
 * that, after each fsync(2) or fdatasync(2) that succeeded on a file whose
 * name starts with "ledger.journal", appends "<inode> <size>\n" to the file
 * named by $SL_FSYNC_PROBE_LOG. The journal is append-only and written one
 * write at a time, so the file cut to its size at its inode's last fsync is
 * what a power cut that drops every unsynced write leaves of it (a
 * compaction's temp file is another inode, renamed over the journal).
 * tests/e2e/test_status_power_cut.sh makes that cut after a kill -9.
 *
 * Without $SL_FSYNC_PROBE_LOG it only passes the calls through.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fsync(int fd);
int fdatasync(int fd);

static void probe(int fd) {
  const char *log = getenv("SL_FSYNC_PROBE_LOG");
  char link[64], path[4096], line[64];
  const char *base;
  struct stat sb;
  ssize_t n;
  int lfd, len;

  if (log == NULL)
    return;
  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  n = readlink(link, path, sizeof(path) - 1);
  if (n < 0)
    return;
  path[n] = '\0';
  base = strrchr(path, '/');
  base = base != NULL ? base + 1 : path;
  if (strncmp(base, "ledger.journal", 14) != 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
    return;
  len = snprintf(line, sizeof(line), "%llu %lld\n", (unsigned long long)sb.st_ino,
                 (long long)sb.st_size);
  lfd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (lfd < 0)
    return;
  if (write(lfd, line, (size_t)len) != len)
    abort(); /* a probe that loses lines would make the test lie */
  close(lfd);
}

int fsync(int fd) {
  static int (*real)(int);
  int r;

  if (real == NULL)
    *(void **)&real = dlsym(RTLD_NEXT, "fsync");
  r = real(fd);
  if (r == 0)
    probe(fd);
  return r;
}

int fdatasync(int fd) {
  static int (*real)(int);
  int r;

  if (real == NULL)
    *(void **)&real = dlsym(RTLD_NEXT, "fdatasync");
  r = real(fd);
  if (r == 0)
    probe(fd);
  return r;
}

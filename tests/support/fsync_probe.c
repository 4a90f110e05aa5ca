/*
 * fsync probe for the power-cut end-to-end tests: a library for LD_PRELOAD
 * that, after each fsync(2) or fdatasync(2) that succeeded on a file whose
 * name starts with "ledger.journal", copies the whole file to
 * "$SL_FSYNC_PROBE_LOG.<inode>" (through a temp file and a rename). The
 * journal is written one write at a time, each followed by its fdatasync
 * under a sync policy, so that copy is what a power cut that drops every
 * unsynced write leaves of the file with that inode (a compaction's temp
 * file is another inode, renamed over the journal). It also appends
 * "<inode> <size>" to $SL_FSYNC_PROBE_LOG, for the test's log.
 * tests/e2e/test_status_power_cut.sh puts the copy in place after a kill -9.
 *
 * Without $SL_FSYNC_PROBE_LOG it only passes the calls through. Meant for
 * small files: each sync copies the file.
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

/* Copies the <size> bytes of <fd> to "<log>.<ino>", replacing it atomically. */
static void copy(int fd, const char *log, unsigned long long ino, off_t size) {
  char path[4096], tmp[4200], buf[65536];
  off_t at = 0;
  int out;

  snprintf(path, sizeof(path), "%s.%llu", log, ino);
  snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0)
    abort();
  while (at < size) {
    ssize_t n = pread(fd, buf, sizeof(buf), at);
    if (n <= 0 || write(out, buf, (size_t)n) != n)
      abort(); /* a probe that loses data would make the test lie */
    at += n;
  }
  close(out);
  if (rename(tmp, path) != 0)
    abort();
}

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
  copy(fd, log, (unsigned long long)sb.st_ino, sb.st_size);
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

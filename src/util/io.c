/*
 * The POSIX I/O table (see sluice/io.h). Thin wrappers, so that the table's
 * members have the same types whatever the C library declares.
 *
 * @thread any
 */
#include "sluice/io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

static int io_open(const char *path, int flags, mode_t mode) {
  return open(path, flags | O_CLOEXEC, mode);
}
static int io_close(int fd) { return close(fd); }
static ssize_t io_pwrite(int fd, const void *buf, size_t len, off_t off) {
  return pwrite(fd, buf, len, off);
}
static int io_fdatasync(int fd) { return fdatasync(fd); }
static int io_fsync(int fd) { return fsync(fd); }
static int io_ftruncate(int fd, off_t len) { return ftruncate(fd, len); }
static int io_fallocate(int fd, int mode, off_t off, off_t len) {
  return fallocate(fd, mode, off, len);
}
static int io_rename(const char *from, const char *to) { return rename(from, to); }
static int io_unlink(const char *path) { return unlink(path); }
static int io_mkdir(const char *path, mode_t mode) { return mkdir(path, mode); }

const struct sl_io sl_io_posix = {
    .open = io_open,
    .close = io_close,
    .pwrite = io_pwrite,
    .fdatasync = io_fdatasync,
    .fsync = io_fsync,
    .ftruncate = io_ftruncate,
    .fallocate = io_fallocate,
    .rename = io_rename,
    .unlink = io_unlink,
    .mkdir = io_mkdir,
};

void sl_io_fill(struct sl_io *dst, const struct sl_io *src) {
  const struct sl_io *p = &sl_io_posix;

  if (src == NULL)
    src = p;
  dst->open = src->open ? src->open : p->open;
  dst->close = src->close ? src->close : p->close;
  dst->pwrite = src->pwrite ? src->pwrite : p->pwrite;
  dst->fdatasync = src->fdatasync ? src->fdatasync : p->fdatasync;
  dst->fsync = src->fsync ? src->fsync : p->fsync;
  dst->ftruncate = src->ftruncate ? src->ftruncate : p->ftruncate;
  dst->fallocate = src->fallocate ? src->fallocate : p->fallocate;
  dst->rename = src->rename ? src->rename : p->rename;
  dst->unlink = src->unlink ? src->unlink : p->unlink;
  dst->mkdir = src->mkdir ? src->mkdir : p->mkdir;
}

int sl_io_pwrite_all(const struct sl_io *io, int fd, const void *buf, size_t len, uint64_t off) {
  const char *p = buf;

  while (len > 0) {
    errno = 0;
    ssize_t n = io->pwrite(fd, p, len, (off_t)off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return n < 0 && errno != 0 ? -errno : -EIO;
    p += n;
    off += (uint64_t)n;
    len -= (size_t)n;
  }
  return 0;
}

int sl_io_pwrite_zeros(const struct sl_io *io, int fd, uint64_t from, uint64_t to) {
  static const char zeros[64 * 1024];
  int rc = 0;

  for (uint64_t at = from; at < to && rc == 0; at += sizeof(zeros)) {
    size_t n = to - at < sizeof(zeros) ? (size_t)(to - at) : sizeof(zeros);

    rc = sl_io_pwrite_all(io, fd, zeros, n, at);
  }
  return rc;
}

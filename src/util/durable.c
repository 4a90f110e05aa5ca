/*
 * Durable names (see sluice/durable.h): mkdir -p, create, rename and replace,
 * each followed by the fsync of the directory that holds the new name.
 *
 * @thread any (blocking)
 */
#include "sluice/durable.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* Writes the directory part of <path> into <out> (<cap> bytes): "." if it has none, "/"
 * for a name at the root. Returns 0 or -ENAMETOOLONG. */
static int dir_of(const char *path, char *out, size_t cap) {
  const char *slash = strrchr(path, '/');
  size_t n;

  if (slash == NULL) {
    snprintf(out, cap, ".");
    return 0;
  }
  n = slash == path ? 1 : (size_t)(slash - path);
  if (n >= cap)
    return -ENAMETOOLONG;
  memcpy(out, path, n);
  out[n] = '\0';
  return 0;
}

static int fsync_fd(const struct sl_io *io, int fd) {
  errno = 0;
  if (io->fsync(fd) != 0)
    return errno ? -errno : -EIO;
  return 0;
}

int sl_durable_fsync_dir(const struct sl_io *io, const char *dir) {
  int fd, rc;

  if (io == NULL)
    io = &sl_io_posix;
  fd = io->open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  rc = fsync_fd(io, fd);
  io->close(fd);
  return rc;
}

/* fsyncs the directory that holds <path>. */
static int fsync_parent(const struct sl_io *io, const char *path) {
  char dir[PATH_MAX];
  int rc = dir_of(path, dir, sizeof(dir));

  return rc != 0 ? rc : sl_durable_fsync_dir(io, dir);
}

int sl_durable_mkdir_p(const struct sl_io *io, const char *dir, mode_t mode) {
  char tmp[PATH_MAX];
  struct stat sb;
  size_t n = strlen(dir);
  int rc;

  if (io == NULL)
    io = &sl_io_posix;
  if (n == 0)
    return -EINVAL;
  if (n >= sizeof(tmp))
    return -ENAMETOOLONG;
  while (n > 1 && dir[n - 1] == '/')
    n--; /* "a/b/" is "a/b" */
  memcpy(tmp, dir, n);
  tmp[n] = '\0';
  for (size_t i = 1; i <= n; i++) {
    bool last = i == n;
    if (tmp[i] != '/' && tmp[i] != '\0')
      continue;
    if (tmp[i - 1] == '/')
      continue; /* "a//b" */
    tmp[i] = '\0';
    if (io->mkdir(tmp, mode) == 0) {
      /* A new name: durable once its parent is synced, before anything goes in it. */
      rc = fsync_parent(io, tmp);
      if (rc != 0)
        return rc;
    } else if (errno != EEXIST) {
      return -errno;
    } else if (stat(tmp, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
      return -ENOTDIR; /* a file where a directory should be */
    } else if (last) {
      rc = fsync_parent(io, tmp);
      if (rc != 0)
        return rc;
    }
    tmp[i] = last ? '\0' : '/';
  }
  return 0;
}

int sl_durable_create(const struct sl_io *io, const char *path, int flags, mode_t mode,
                      int *fd_out) {
  if (io == NULL)
    io = &sl_io_posix;
  flags &= ~(O_CREAT | O_EXCL);
  for (int tries = 0; tries < 16; tries++) {
    int fd = io->open(path, flags | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    int rc;

    if (fd >= 0) {
      rc = fsync_parent(io, path);
      if (rc != 0) {
        io->close(fd);
        return rc;
      }
      *fd_out = fd;
      return 1;
    }
    if (errno != EEXIST)
      return -errno;
    fd = io->open(path, flags | O_CLOEXEC, mode);
    if (fd >= 0) {
      *fd_out = fd;
      return 0;
    }
    if (errno != ENOENT)
      return -errno;
    /* Removed between the two opens: try again. */
  }
  return -EAGAIN;
}

int sl_durable_rename(const struct sl_io *io, int dirfd, const char *from, const char *to) {
  char dfrom[PATH_MAX], dto[PATH_MAX];
  int rc;

  if (io == NULL)
    io = &sl_io_posix;
  if ((rc = dir_of(from, dfrom, sizeof(dfrom))) != 0 || (rc = dir_of(to, dto, sizeof(dto))) != 0)
    return rc;
  if (io->rename(from, to) != 0)
    return -errno;
  rc = dirfd >= 0 ? fsync_fd(io, dirfd) : sl_durable_fsync_dir(io, dto);
  if (rc == 0 && strcmp(dfrom, dto) != 0)
    rc = sl_durable_fsync_dir(io, dfrom);
  return rc;
}

int sl_durable_replace(const struct sl_io *io, int dirfd, const char *path, const void *data,
                       size_t len, mode_t mode) {
  char tmp[PATH_MAX];
  int fd, rc = 0;

  if (io == NULL)
    io = &sl_io_posix;
  if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
    return -ENAMETOOLONG;
  fd = io->open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0)
    return -errno;
  if ((rc = sl_io_pwrite_all(io, fd, data, len, 0)) != 0)
    goto fail;
  errno = 0;
  if (io->fdatasync(fd) != 0) {
    rc = errno ? -errno : -EIO;
    goto fail;
  }
  io->close(fd);
  fd = -1;
  if (io->rename(tmp, path) != 0) {
    rc = -errno;
    goto fail;
  }
  /* After a failed directory fsync the new file is in place but its name may not survive a
   * crash: the caller sees the error, and the old file is still a valid one. */
  return dirfd >= 0 ? fsync_fd(io, dirfd) : fsync_parent(io, path);

fail:
  if (fd >= 0)
    io->close(fd);
  io->unlink(tmp);
  return rc;
}

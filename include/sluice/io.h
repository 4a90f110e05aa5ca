/*
 * The I/O table: every file-system call that decides what survives a crash
 * (open with create, write, sync, truncate, allocate, rename, unlink, mkdir,
 * fsync of a directory) goes through one of these, so that a test can
 * interpose each of them: inject ENOSPC or EIO, or record every operation and
 * build the states a power cut may leave (tests/crash).
 *
 * Each function behaves as the system call of the same name: it returns what
 * that returns, -1 with errno set on failure. Reads (read, pread, fstat,
 * readdir) and flock stay plain system calls: they change nothing on disk.
 *
 * A table may leave members NULL: sl_io_fill() completes it with the POSIX
 * calls. Modules that take a table (spool, ledger journal, the durable-file
 * helpers) accept NULL for the POSIX table itself.
 *
 * @thread any: the POSIX table is stateless; a test table must be thread-safe
 * (the spool calls it from its writer, syncer and preparer threads).
 */
#ifndef SLUICE_IO_H
#define SLUICE_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct sl_io {
  int (*open)(const char *path, int flags, mode_t mode); /* files and directories */
  int (*close)(int fd);
  ssize_t (*pwrite)(int fd, const void *buf, size_t len, off_t off);
  int (*fdatasync)(int fd);
  int (*fsync)(int fd); /* files and directories */
  int (*ftruncate)(int fd, off_t len);
  int (*fallocate)(int fd, int mode, off_t off, off_t len);
  int (*rename)(const char *from, const char *to);
  int (*unlink)(const char *path);
  int (*mkdir)(const char *path, mode_t mode);
};

/* The POSIX calls. */
extern const struct sl_io sl_io_posix;

/* Copies <src> into <dst>, taking the POSIX call for each member <src> leaves
 * NULL (and for all of them if <src> is NULL). */
void sl_io_fill(struct sl_io *dst, const struct sl_io *src);

/* Writes all <len> bytes of <buf> at <off> of <fd> through <io>->pwrite,
 * going on after a short write or EINTR. Returns 0, or -errno (-EIO for a
 * write that wrote nothing and set no errno). */
int sl_io_pwrite_all(const struct sl_io *io, int fd, const void *buf, size_t len, uint64_t off);

/* Writes zeros over [<from>, <to>) of <fd>, as sl_io_pwrite_all(). */
int sl_io_pwrite_zeros(const struct sl_io *io, int fd, uint64_t from, uint64_t to);

#endif

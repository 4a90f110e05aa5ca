/*
 * Durable names: the few steps that make a new directory, a new file or a
 * replaced file survive a power cut, in one place.
 *
 * A name is durable only once the directory that holds it has been fsynced
 * after the name was made (strict POSIX: ext4 and XFS often hide this, other
 * file systems and the standard do not). Each helper below fsyncs exactly
 * what it must for the names it makes, and nothing else; the data written
 * into a file is the caller's to sync. Every call goes through an I/O table
 * (sluice/io.h; NULL means POSIX), so the crash-state tests see each step.
 *
 * All of them block: call them from a thread that may wait for the disk
 * (start-up, a spool thread, the threadpool), never from a running loop.
 *
 * @thread any
 */
#ifndef SLUICE_DURABLE_H
#define SLUICE_DURABLE_H

#include <stddef.h>
#include <sys/types.h>

#include "sluice/io.h"

/* fsyncs directory <dir>. Returns 0 or a negative errno. */
int sl_durable_fsync_dir(const struct sl_io *io, const char *dir);

/*
 * Creates directory <dir> and every missing parent with <mode>, as
 * `mkdir -p` does, and makes each created name durable: after each mkdir
 * the parent that now holds it is fsynced, top level first, so the deepest
 * directory's name is durable last and never before its parents'. The
 * parent of <dir> itself is fsynced even when <dir> already existed: it may
 * be left over from a run that died between its mkdir and that fsync, and
 * the caller is about to put acknowledged data in it. Returns 0, -EINVAL for
 * an empty path, -ENAMETOOLONG, -ENOTDIR, or the negative errno of the call
 * that failed.
 */
int sl_durable_mkdir_p(const struct sl_io *io, const char *dir, mode_t mode);

/*
 * Opens <path> with <flags> (O_RDWR, O_WRONLY...; O_CREAT and O_EXCL are
 * the helper's), creating it with <mode> if it does not exist; when it was
 * created here, fsyncs its directory so that the name survives a crash.
 * On success stores the descriptor in <*fd_out> (the caller closes it with
 * io->close) and returns 1 if the file was created, 0 if it existed;
 * otherwise returns a negative errno.
 */
int sl_durable_create(const struct sl_io *io, const char *path, int flags, mode_t mode,
                      int *fd_out);

/*
 * Renames <from> over <to> and fsyncs the directory of <to> (and that of
 * <from> if it is another one), so that after a crash <to> names the new
 * file. The caller must have synced the file's data before: a rename that is
 * durable before the data would leave a name for an empty or torn file.
 * <dirfd>, if not -1, is an open descriptor of <to>'s directory, saving an
 * open per call. Returns 0 or a negative errno (after a failed directory
 * fsync the rename has happened but may not survive a crash).
 */
int sl_durable_rename(const struct sl_io *io, int dirfd, const char *from, const char *to);

/*
 * Replaces <path> with the <len> bytes at <data>: writes "<path>.tmp" (mode
 * <mode>), fdatasyncs it, renames it over <path> and fsyncs the directory
 * (through <dirfd> if not -1). A crash at any point leaves either the old
 * file or the new one, never a mix; a leftover "<path>.tmp" is the caller's
 * to remove at its next start. Returns 0 or a negative errno (the temp file
 * is then removed).
 */
int sl_durable_replace(const struct sl_io *io, int dirfd, const char *path, const void *data,
                       size_t len, mode_t mode);

#endif

/*
 * crashfs: a crash-simulating I/O layer for tests, in the manner of SQLite's
 * crash-test VFS and of the ALICE and CrashMonkey studies.
 *
 * Recording. crashfs_start(<root>) hands out an I/O table (sluice/io.h)
 * whose calls run on the real files under <root> (so the code under test
 * reads back what it wrote with plain pread and readdir) but never sync
 * anything, and that appends every operation which changes a file or a
 * directory under <root> to a log, with the data written. Files are known by
 * inode, so a write through a descriptor opened elsewhere is still seen;
 * one on a file under <root> that crashfs never saw created is counted as a
 * violation (crashfs_violations): the code bypassed the table. The test adds
 * its own events to the log with crashfs_mark() (an append's completion
 * fired, a 202 left...): the log orders them with the disk operations.
 *
 * Replaying. After the workload, crashfs_replay_*() walks the log, and at
 * any point (a cut) crashfs_materialize() writes into a fresh directory one
 * state that a power cut at that point may leave, under strict POSIX rules:
 *   - a file keeps the data it had at its last fsync/fdatasync; of the writes
 *     and truncations after it a prefix survives, and the last write of that
 *     prefix may be torn at a 512-byte boundary;
 *   - a directory keeps the entries it had at its last fsync; each entry made
 *     or removed since (create, mkdir, rename, unlink) is kept or dropped,
 *     independently of the others (a rename is atomic: both names or none);
 *   - a directory whose own name did not survive takes its contents with it.
 * CRASHFS_DROP_ALL gives the worst state (nothing unsynced survives),
 * CRASHFS_KEEP_ALL the state a process crash leaves (everything survives),
 * CRASHFS_RANDOM one of the states between, drawn from <seed>.
 *
 * Only one recording at a time (the I/O table has no context pointer).
 *
 * @thread the table: any (one mutex); everything else: the test's thread
 */
#ifndef SLUICE_TESTS_CRASHFS_H
#define SLUICE_TESTS_CRASHFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/io.h"

enum crashfs_op {
  CRASHFS_OPEN,     /* path, ino, created, trunc */
  CRASHFS_MKDIR,    /* path, ino */
  CRASHFS_PWRITE,   /* ino, off, len, data */
  CRASHFS_TRUNCATE, /* ino, len (also fallocate beyond the end) */
  CRASHFS_SYNC,     /* ino, dir: fsync or fdatasync */
  CRASHFS_RENAME,   /* path -> path2 */
  CRASHFS_UNLINK,   /* path */
  CRASHFS_MARK,     /* the test's event: kind, a, b */
};

struct crashfs_rec {
  enum crashfs_op op;
  char *path, *path2; /* relative to the root */
  uint64_t ino;
  bool created, trunc, dir;
  uint64_t off, len;
  uint8_t *data;
  uint32_t kind; /* MARK */
  uint64_t a, b;
};

/* Starts recording under <root>, an existing directory whose current contents count as
 * durable. Returns 0 or -1. */
int crashfs_start(const char *root);

/* The recording table. */
const struct sl_io *crashfs_io(void);

/* A table that runs on the real files and syncs nothing, recording nothing: for reopening a
 * materialized state quickly. */
const struct sl_io *crashfs_nosync_io(void);

/* Appends the test's event <kind>, <a>, <b> to the log. Any thread. */
void crashfs_mark(uint32_t kind, uint64_t a, uint64_t b);

/* Stops recording; the log stays for replay until crashfs_free(). */
void crashfs_stop(void);

/* The log: <*n> records. */
const struct crashfs_rec *crashfs_log(size_t *n);

/* Operations on files under the root that crashfs never saw created (0 if the code under
 * test routes everything through the table), counted while replaying. */
uint64_t crashfs_violations(void);

/* Frees the log and the replay state. */
void crashfs_free(void);

/* Replay: resets the model to the root's contents at start. */
void crashfs_replay_begin(void);
/* Applies record <i> (in order, from 0) to the model. */
void crashfs_replay_apply(size_t i);

enum crashfs_mode { CRASHFS_DROP_ALL, CRASHFS_KEEP_ALL, CRASHFS_RANDOM };

/* Writes the state a power cut after the records applied so far may leave into <dst> (an
 * existing empty directory), the choices drawn from <seed>. Returns 0 or -1. */
int crashfs_materialize(const char *dst, enum crashfs_mode mode, uint64_t seed);

/* Removes <path> and everything under it. */
void crashfs_rm_rf(const char *path);

#endif

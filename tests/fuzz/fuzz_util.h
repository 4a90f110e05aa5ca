/*
 * Helpers shared by the libFuzzer harnesses (tests/fuzz/README.md): a scratch
 * directory per input, an I/O table without fsync, a deterministic stream of
 * choices drawn from the input, and a way to make ASan read every byte of a
 * view the code under test handed out.
 *
 * @thread the harness's own (libFuzzer calls LLVMFuzzerTestOneInput on one thread)
 */
#ifndef SLUICE_FUZZ_UTIL_H
#define SLUICE_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/io.h"

/* The POSIX table with fsync and fdatasync made no-ops: a scratch directory in
 * tmpfs or /tmp need not survive a power cut, and a sync per input would make
 * the spool and journal harnesses a hundred times slower. */
extern const struct sl_io sl_fuzz_io;

/* Creates a fresh directory (under /dev/shm when it is writable, else /tmp)
 * and writes its path, NUL-terminated, into <out> of <len> bytes. Aborts on
 * failure: without a directory the harness cannot run at all. */
void sl_fuzz_tmpdir(char *out, size_t len);

/* Removes <path> and everything under it. */
void sl_fuzz_rm_rf(const char *path);

/* Writes <len> bytes of <data> into the new file <dir>/<name>. Aborts on failure. */
void sl_fuzz_write_file(const char *dir, const char *name, const void *data, size_t len);

/* A xorshift stream of choices seeded from the input, so that a run replays exactly. */
struct sl_fuzz_rng {
  uint64_t s;
};
void sl_fuzz_rng_init(struct sl_fuzz_rng *r, uint64_t seed);
uint32_t sl_fuzz_rng_next(struct sl_fuzz_rng *r);

/* Reads every byte of [<p>, <p> + <len>) so that ASan reports a view that
 * points outside its buffer, which a harness would otherwise never touch. */
void sl_fuzz_touch(const void *p, size_t len);

/* Silences sluice's log: the spool and the journal log every damaged unit,
 * which is most inputs. SLUICE_FUZZ_VERBOSE=1 in the environment keeps it. */
void sl_fuzz_quiet_log(void);

#endif

/*
 * Unguessable random bytes (request ids, jitter) from the kernel's CSPRNG.
 *
 * getrandom(2) is fetched a block at a time into a per-thread buffer, so a
 * request id costs a copy instead of a system call; the bytes are the
 * kernel's own, handed out once each. No fork() happens after start-up, so
 * a buffer is never shared between processes.
 *
 * @thread any (the buffer is thread-local)
 */
#ifndef SLUICE_RANDOM_H
#define SLUICE_RANDOM_H

#include <stddef.h>

/* Fills <out> with <len> random bytes. Returns 0, or -1 if the kernel gave none (errno set). */
int sl_random_bytes(void *out, size_t len);

#endif

/*
 * CRC32C (Castagnoli polynomial 0x1EDC6F41, reflected 0x82F63B78), the
 * checksum of every spool unit and checkpoint.
 *
 * The SSE4.2 crc32 instruction is used when the CPU has it (checked once at
 * run time); otherwise a slicing-by-8 table computes the same values. Both
 * paths give identical results; tests compare them on random inputs.
 *
 * @thread any (the tables are built once, race-free, on first use)
 */
#ifndef SLUICE_CRC32C_H
#define SLUICE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/*
 * Extends <crc> (0 for a fresh checksum, or the result of an earlier call)
 * with <len> bytes at <data> and returns the new checksum. Calls chain:
 * sl_crc32c(sl_crc32c(0, a, n), b, m) == sl_crc32c(0, a||b, n+m).
 */
uint32_t sl_crc32c(uint32_t crc, const void *data, size_t len);

/* The portable table implementation, exposed so tests can compare it with the hardware one. */
uint32_t sl_crc32c_sw(uint32_t crc, const void *data, size_t len);

/* Returns 1 if sl_crc32c() uses the SSE4.2 instruction, 0 if the table. */
int sl_crc32c_hw_available(void);

#endif

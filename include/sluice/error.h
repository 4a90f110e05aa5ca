/*
 * One error space for the whole project, as libuv has one.
 *
 * A function that can fail returns 0 or a negative code, and a caller passes
 * the code on unchanged. A code is one of:
 *   - a negative errno value; libuv's UV_E* codes are these very values on
 *     Unix (libuv defines them as negated errno there), so they mix freely;
 *   - one of libuv's few codes that are not errno values (UV_EOF, UV_EAI_*),
 *     which only calls into libuv return, on the loop;
 *   - one of the project's own SL_E* codes below. They start at -30000, far
 *     below every errno value (Linux's stay above -4096) and every libuv
 *     code (none below -4095), so no value means two things. The spool
 *     has -30001 on, the ledger -30101 on, the ledger journal -30111 on.
 * sl_strerror() names a code of the first and last kinds.
 *
 * The codes live here rather than in each module's header so that util,
 * which names them, depends on no module (as zstd's common/ holds the error
 * codes of compress and decompress).
 *
 * @thread any
 */
#ifndef SLUICE_ERROR_H
#define SLUICE_ERROR_H

/* The spool (sluice/spool.h). */
#define SL_ESPOOL_FULL (-30001)     /* max_bytes reached: the proxy answers 503 */
#define SL_ESPOOL_CLOSED (-30002)   /* the spool is closing; nothing new is accepted */
#define SL_ESPOOL_TOOBIG (-30003)   /* one record larger than the format allows */
#define SL_ESPOOL_CORRUPT (-30004)  /* a file failed its checks and could not be used */
#define SL_ESPOOL_LOCKED (-30005)   /* another process has the spool directory open */
#define SL_ESPOOL_NOTFOUND (-30006) /* no dead letter with that id */

/* The ledger (sluice/ledger.h). Allocation failure is -ENOMEM, invalid arguments -EINVAL. */
#define SL_ELEDGER_NOTFOUND (-30101) /* no entry with that id or key */
#define SL_ELEDGER_BADKEY (-30102)   /* Idempotency-Key empty or longer than SL_DEDUPE_KEY_MAX */

/* The ledger journal (sluice/ledger_journal.h). */
#define SL_ELEDGER_LOCKED (-30111) /* another process has the journal open */

/*
 * Returns a static description of <err>: "success" for 0, the project's text
 * for an SL_E* code, strerror()'s for a negative errno value (and so for a
 * UV_E* code that is one), "unknown error" for anything else. libuv's codes
 * that are not errno values (UV_EOF, UV_EAI_*) are uv_strerror()'s to name:
 * util does not include uv.h.
 */
const char *sl_strerror(int err);

#endif

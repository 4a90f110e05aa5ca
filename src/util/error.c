/*
 * The names of the project's error codes (see sluice/error.h).
 */
#include "sluice/error.h"

#include <string.h>

/* The lowest negative errno value: Linux keeps errno under 4096 (MAX_ERRNO). */
#define ERRNO_MIN (-4095)

const char *sl_strerror(int err) {
  switch (err) {
  case 0:
    return "success";
  case SL_ESPOOL_FULL:
    return "spool full";
  case SL_ESPOOL_CLOSED:
    return "spool closing";
  case SL_ESPOOL_TOOBIG:
    return "record too large for the spool";
  case SL_ESPOOL_CORRUPT:
    return "spool data corrupt";
  case SL_ESPOOL_LOCKED:
    return "spool directory in use by another process";
  case SL_ESPOOL_NOTFOUND:
    return "no such dead letter";
  case SL_ELEDGER_NOTFOUND:
    return "no such request id or key";
  case SL_ELEDGER_BADKEY:
    return "Idempotency-Key empty or too long";
  case SL_ELEDGER_LOCKED:
    return "ledger journal in use by another process";
  default:
    return err < 0 && err >= ERRNO_MIN ? strerror(-err) : "unknown error";
  }
}

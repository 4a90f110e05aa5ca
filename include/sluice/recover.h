/*
 * Statuses and Idempotency-Keys rebuilt from spool records.
 *
 * A spilled request's 202 waits for its spool record alone: its "queued"
 * status and its Idempotency-Key go to the ledger journal without a sync of
 * their own, since the record holds all they say (its id, its acceptance
 * and not-before times, its attempts, and the key among the stored header
 * fields). After an unclean stop (sl_ledger_journal_unclean) the journal may
 * lack them, so each drain takes a census of its spool: sl_spool_scan feeds
 * every record to sl_recover_add (on any one thread, off the loop), and
 * sl_recover_apply then gives the ledger an entry for each record it does
 * not know and the key index each key it does not hold (on the loop). A
 * record the drain handles while the census runs (taken for delivery, or a
 * dead letter redriven) goes through sl_recover_record at once, so that a
 * record the scan passes by while it moves is not missed.
 *
 * Memory: about 56 bytes per record plus its key, for the census's
 * duration.
 */
#ifndef SLUICE_RECOVER_H
#define SLUICE_RECOVER_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/ledger.h"
#include "sluice/spool.h"

struct sl_recover;

/* What a census or a record added. */
struct sl_recover_counts {
  uint64_t records; /* records looked at */
  uint64_t entries; /* status entries the ledger lacked, or held queued with fewer attempts */
  uint64_t keys;    /* Idempotency-Keys the index lacked, within its window */
};

/* Returns an empty census, or NULL without memory. */
struct sl_recover *sl_recover_create(void);

/* Accepts NULL. */
void sl_recover_destroy(struct sl_recover *r);

/*
 * Keeps what <rec> says about its status and key. Returns 0, or -ENOMEM
 * (the census is then incomplete and must not be applied).
 * @thread any one thread at a time (the scan's)
 */
int sl_recover_add(struct sl_recover *r, const struct sl_spool_record *rec);

/*
 * Gives ledger <l> a "queued" entry (with its not-before time, attempts and
 * times) for each record of <r> it has no entry for, numbered by its rank
 * in the census (the spool's order), brings a queued entry with fewer
 * attempts than its record up to date (the frames of its last retries were
 * lost), and gives index <d> (may be NULL) the Idempotency-Key of
 * each record whose key it does not hold and whose window (from the
 * record's acceptance) has not passed at <now_ms>; both through the journal.
 * <upstream> is the spool's upstream id, the keys' scope. Adds to <counts>.
 * @thread loop (the ledger's)
 */
void sl_recover_apply(const struct sl_recover *r, struct sl_ledger *l, struct sl_dedupe *d,
                      uint16_t upstream, uint64_t now_ms, struct sl_recover_counts *counts);

/* The same for one record, ranked <seq>. */
void sl_recover_record(const struct sl_spool_record *rec, uint64_t seq, struct sl_ledger *l,
                       struct sl_dedupe *d, uint16_t upstream, uint64_t now_ms,
                       struct sl_recover_counts *counts);

#endif

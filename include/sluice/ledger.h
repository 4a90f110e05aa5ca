/*
 * Ledger: bounded in-memory indexes of what happened to spilled requests.
 *
 * Two pure data structures behind the status URL and Idempotency-Key:
 *
 *   - struct sl_ledger maps a request id (16 random bytes, shown as 32 hex
 *     chars) to its status entry: queued, in flight, delivered, dead, purged,
 *     cancelled or lost. The
 *     status URL /_sluice/requests/<id> reads it; the proxy writes it on
 *     acceptance, on every attempt and when a record is settled.
 *   - struct sl_dedupe maps a client's Idempotency-Key, scoped by route or
 *     upstream, to the id of the first request that carried it, for a time
 *     window, so a repeated request is answered with the first id instead of
 *     being queued twice.
 *
 * Both are bounded by the capacity given at creation: when full they evict
 * (rules at each create function), so memory never grows with the backlog or
 * with what clients send. Memory is allocated on demand, doubling up to the
 * capacity, so a large capacity costs nothing until it is used. Both are
 * memory only; the ledger journal (ledger_journal.h) writes their changes to
 * a file in the spool directory and loads them back at startup, so statuses
 * and keys survive a restart, kill -9 included (the spool itself keeps
 * every record).
 *
 * Pure logic: no I/O, no libuv (the journal is the module's one part that
 * does I/O). Time is passed in (wall-clock milliseconds since the epoch), so
 * tests drive it. The only system call is getrandom(2) at creation, for hash
 * seeds.
 *
 * Per process and shared (sluice/loop.h): one ledger and one key index for
 * every upstream and every loop; the registry owns them.
 *
 * @thread owner only: each object is used by one thread (the loop that owns
 * it); there is no locking.
 */
#ifndef SLUICE_LEDGER_H
#define SLUICE_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/error.h" /* the ledger's own codes, SL_ELEDGER_*, and sl_strerror() */

/* Largest capacity either structure accepts (indexes are 32-bit). */
#define SL_LEDGER_CAPACITY_MAX (1u << 30)

/* ------------------------------------------------------------------------ */
/* Request ids                                                              */

#define SL_LEDGER_ID_HEX 32 /* characters in the text form of an id */

/*
 * Parses the text form of an id: exactly 32 hex digits (<len> bytes at <hex>,
 * either case, no NUL needed) into <id>. Returns 0, or -1 for any other input
 * (wrong length, a non-hex character); <id> is then unspecified.
 */
int sl_ledger_id_parse(const char *hex, size_t len, uint8_t id[16]);

/* Writes the text form of <id> into <out>: 32 lowercase hex digits and a NUL. */
void sl_ledger_id_format(const uint8_t id[16], char out[33]);

/* ------------------------------------------------------------------------ */
/* Status ledger: id -> entry                                               */

enum sl_ledger_state {
  SL_LEDGER_QUEUED,    /* accepted into the spool, waiting for its turn */
  SL_LEDGER_INFLIGHT,  /* being replayed to the backend now */
  SL_LEDGER_DELIVERED, /* the backend gave a final answer (<status>) */
  SL_LEDGER_DEAD,      /* max_attempts failed: a dead letter (<error>) */
  SL_LEDGER_PURGED,    /* a dead letter deleted by an operator */
  SL_LEDGER_CANCELLED, /* cancelled before delivery; never delivered */
  SL_LEDGER_LOST,      /* its record was in a damaged spool unit (<error> says where) */
  SL_LEDGER_EXPIRED,   /* its queue_ttl or X-Sluice-Expires-After passed first: never sent */
};

/* The last state; states up to SL_LEDGER_DEAD are those of the first journal format. */
#define SL_LEDGER_STATE_MAX SL_LEDGER_EXPIRED

/*
 * Entry flags. SL_LEDGER_F_HELD marks a cancelled entry whose record the spool
 * still holds: the drain settles such a record without replaying it when it
 * comes up and then clears the flag. A held entry is evicted with the pending
 * ones (last), because forgetting it would let its record be delivered.
 */
#define SL_LEDGER_F_HELD 0x01u

/* Returns the lowercase name of <state> ("queued", "in_flight", ...), for JSON and logs. */
const char *sl_ledger_state_name(enum sl_ledger_state state);

#define SL_LEDGER_ERROR_MAX 96 /* bytes of <error>, NUL included */

/*
 * One request's status, as the caller passes it in and gets it back (a copy:
 * the ledger stores entries in a compact form of its own).
 */
struct sl_ledger_entry {
  uint8_t id[16];
  enum sl_ledger_state state;
  uint16_t upstream; /* upstream index, opaque to the ledger */
  uint16_t status;   /* delivered: the backend's HTTP status */
  uint8_t flags;     /* SL_LEDGER_F_* */
  uint32_t attempts; /* delivery attempts made so far */
  uint64_t seq;      /* per-upstream acceptance sequence number, opaque to the ledger */
  uint64_t enqueued_ms, updated_ms;
  uint64_t not_before_ms;          /* queued: not replayed before this wall-clock time (a delayed
                                      request, or a retry's next attempt); 0 if it waits its turn */
  char error[SL_LEDGER_ERROR_MAX]; /* last error (any state, usually dead); "" if none */
};

struct sl_ledger;

/*
 * Creates an empty ledger that holds at most <capacity> entries (1 to
 * SL_LEDGER_CAPACITY_MAX). Returns NULL on a bad capacity or no memory.
 *
 * Memory: 72 bytes per entry plus 16 to 32 for the index, and
 * SL_LEDGER_ERROR_MAX bytes more for each entry whose <error> is not empty.
 * Arrays grow by doubling as entries come, never past <capacity>.
 *
 * Eviction when a new id arrives and the ledger is full: first the settled
 * entry (DELIVERED, DEAD, PURGED, LOST, or CANCELLED without
 * SL_LEDGER_F_HELD) that settled longest ago; only if there is none, the
 * oldest pending entry (QUEUED, INFLIGHT or a held CANCELLED) by insertion. Pending entries
 * are what the status URL is mostly asked about, so they go last; but memory
 * stays bounded whatever happens, so with more requests pending than the
 * capacity, the oldest pending ones are forgotten (their status URL answers
 * 404 although the spool still holds them). Size the capacity above the
 * expected backlog plus the settled history to keep.
 */
struct sl_ledger *sl_ledger_create(size_t capacity);

/* Frees <l> and everything in it. Accepts NULL. */
void sl_ledger_destroy(struct sl_ledger *l);

/*
 * Inserts <e> or, if an entry with <e>->id exists, replaces it (every field).
 * The ledger copies <e>; <e>->error is copied up to its first NUL and cut to
 * SL_LEDGER_ERROR_MAX - 1 bytes. Inserting into a full ledger evicts one entry
 * (see sl_ledger_create). Eviction order: a pending entry keeps its place by
 * insertion while it is replaced; an entry that becomes settled (or pending
 * again, e.g. a redriven dead letter) moves to the newest end of its class.
 * Returns 0, -EINVAL for a state out of range or SL_LEDGER_F_HELD on a state
 * other than CANCELLED, or -ENOMEM; on error the
 * ledger is unchanged.
 *
 * With a ledger journal attached (sluice/ledger_journal.h), every change made
 * here, by sl_ledger_remove and by sl_dedupe_put/remove on its key index is
 * also recorded there; no caller can skip it.
 */
int sl_ledger_put(struct sl_ledger *l, const struct sl_ledger_entry *e);

/*
 * Looks up <id>. Returns 1 and copies the entry into <out>, or returns 0 if
 * the id is unknown (never inserted, removed or evicted); <out> is then left
 * as it was. To change one field, get the entry, change the copy and put it.
 */
int sl_ledger_get(const struct sl_ledger *l, const uint8_t id[16], struct sl_ledger_entry *out);

/*
 * Calls <cb>(<arg>, entry) for every pending entry (queued, in flight, or a
 * held cancellation), oldest first. <cb> gets a copy and must not change the
 * ledger. O(pending entries): for rare reconciliations, not per request.
 */
void sl_ledger_each_pending(const struct sl_ledger *l,
                            void (*cb)(void *arg, const struct sl_ledger_entry *e), void *arg);

/* Forgets <id> (e.g. a purged dead letter). Returns 0 or SL_ELEDGER_NOTFOUND. */
int sl_ledger_remove(struct sl_ledger *l, const uint8_t id[16]);

/* Returns the number of entries held. */
size_t sl_ledger_count(const struct sl_ledger *l);

/* Returns the capacity given to sl_ledger_create(). */
size_t sl_ledger_capacity(const struct sl_ledger *l);

/* ------------------------------------------------------------------------ */
/* Idempotency keys: (scope, key) -> id within a window                     */

#define SL_DEDUPE_KEY_MAX 256 /* longest Idempotency-Key accepted, in bytes */

struct sl_dedupe;

/*
 * Creates an empty key index that holds at most <capacity> keys (1 to
 * SL_LEDGER_CAPACITY_MAX), each remembered for <window_ms> after it was put
 * (0: remember nothing, every get misses). Returns NULL on a bad capacity or
 * no memory.
 *
 * Keys are client data: they are hashed with SipHash under a random seed, so
 * a client cannot cheaply craft keys that collide, and compared byte for
 * byte. Memory: 40 bytes per key plus 16 to 32 for the index, and the key's
 * own bytes in an allocation of their own (at most SL_DEDUPE_KEY_MAX); the
 * arrays grow by doubling up to <capacity>.
 *
 * Expiry and eviction: keys are kept in the order they were put (oldest
 * first), which is time order. Expired keys are dropped from the oldest end
 * on every get and put, and a key found expired is dropped on the spot. When
 * full, a put evicts the oldest key even if it is still inside the window:
 * size the capacity above the peak rate of keyed requests times the window.
 * If the wall clock steps back, keys put "in the future" count as fresh
 * until the clock passes them or they are evicted.
 */
struct sl_dedupe *sl_dedupe_create(size_t capacity, uint64_t window_ms);

/* Frees <d> and every key in it. Accepts NULL. */
void sl_dedupe_destroy(struct sl_dedupe *d);

/*
 * Sets the window to <window_ms> (a reload). It applies to the keys already
 * held too: a shorter window expires older keys at the next get or put.
 */
void sl_dedupe_set_window(struct sl_dedupe *d, uint64_t window_ms);

/*
 * Looks up the <key_len> bytes at <key> in <scope> (a route or upstream
 * index, so two routes never share keys) at time <now_ms>. Returns 1 and
 * copies the first request's id into <id_out> if the key was put less than
 * the window ago; 0 if not (<id_out> untouched); SL_ELEDGER_BADKEY if
 * <key_len> is 0 or above SL_DEDUPE_KEY_MAX (answer 400).
 */
int sl_dedupe_get(struct sl_dedupe *d, uint16_t scope, const char *key, size_t key_len,
                  uint64_t now_ms, uint8_t id_out[16]);

/*
 * Remembers that <key> in <scope> was first seen at <now_ms> with request id
 * <id>, replacing any entry for the same key (which then counts as put now).
 * Returns 0, SL_ELEDGER_BADKEY (as for get) or -ENOMEM; on error <d> is
 * unchanged as far as gets can tell.
 *
 * The caller makes get-then-put atomic by calling both in the same loop turn
 * with nothing in between that could let a second request with the same key
 * in: put as soon as the new id is chosen, before the spool append, and call
 * sl_dedupe_remove() if the append fails, so a retry is not answered with an
 * id that was never queued.
 */
int sl_dedupe_put(struct sl_dedupe *d, uint16_t scope, const char *key, size_t key_len,
                  const uint8_t id[16], uint64_t now_ms);

/* The window keys are remembered for, in ms, and the most keys held. */
uint64_t sl_dedupe_window(const struct sl_dedupe *d);
size_t sl_dedupe_capacity(const struct sl_dedupe *d);

/* Forgets <key> in <scope>. Returns 0, SL_ELEDGER_NOTFOUND or SL_ELEDGER_BADKEY. */
int sl_dedupe_remove(struct sl_dedupe *d, uint16_t scope, const char *key, size_t key_len);

/* Returns the number of keys held, counting expired ones not yet dropped. */
size_t sl_dedupe_count(const struct sl_dedupe *d);

#endif

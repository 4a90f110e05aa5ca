/*
 * Regression tests for issue 17, part 1: a new spool's directory name was
 * never made durable. Each test runs a small workload through crashfs, cuts
 * it right after the event that a client would have seen (an append's
 * completion: the 202; a journal compaction that finished), and checks that
 * the worst state a power cut may then leave (every unsynced write and
 * every directory entry not fsynced dropped), and random states between,
 * still hold what was acknowledged.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "crashfs.h"
#include "sluice/durable.h"
#include "sluice/ledger.h"
#include "sluice/ledger_journal.h"
#include "sluice/log.h"
#include "sluice/spool.h"

#define MARK_ACKED 1
#define RANDOM_STATES 64

static char root[256], img[300];

static int setup(void **state) {
  (void)state;
  snprintf(root, sizeof(root), "/tmp/sl-crash-names.XXXXXX");
  assert_non_null(mkdtemp(root));
  assert_int_equal(crashfs_start(root), 0);
  sl_log_set_level((enum sl_log_level)(SL_LOG_ERROR + 1));
  return 0;
}

static int teardown(void **state) {
  (void)state;
  crashfs_free();
  crashfs_rm_rf(root);
  snprintf(img, sizeof(img), "%s.img", root);
  crashfs_rm_rf(img);
  return 0;
}

/* The index of the first MARK_ACKED record in the log. */
static size_t acked_at(void) {
  size_t n;
  const struct crashfs_rec *log = crashfs_log(&n);

  for (size_t i = 0; i < n; i++)
    if (log[i].op == CRASHFS_MARK && log[i].kind == MARK_ACKED)
      return i;
  fail_msg("no acknowledgement in the log");
  return 0;
}

/*
 * Replays the log up to the acknowledgement and calls <check>(<img>) on the worst state,
 * the process-crash state and RANDOM_STATES random ones.
 */
static void each_state_after_ack(void (*check)(const char *dir, const char *what)) {
  size_t cut = acked_at();

  crashfs_stop();
  crashfs_replay_begin();
  for (size_t i = 0; i < cut; i++)
    crashfs_replay_apply(i);
  assert_int_equal(crashfs_violations(), 0);
  for (int v = 0; v < RANDOM_STATES + 2; v++) {
    enum crashfs_mode mode = v == 0 ? CRASHFS_DROP_ALL : v == 1 ? CRASHFS_KEEP_ALL : CRASHFS_RANDOM;
    char what[64];

    snprintf(img, sizeof(img), "%s.img", root);
    crashfs_rm_rf(img);
    assert_int_equal(mkdir(img, 0755), 0);
    assert_int_equal(crashfs_materialize(img, mode, (uint64_t)v), 0);
    snprintf(what, sizeof(what), "state %d (%s)", v,
             mode == CRASHFS_DROP_ALL   ? "all unsynced dropped"
             : mode == CRASHFS_KEEP_ALL ? "all kept"
                                        : "random");
    check(img, what);
    crashfs_rm_rf(img);
  }
}

/* ---- the spool ------------------------------------------------------------------------- */

static int appended_status = 1;

static void on_appended(void *arg, int status) {
  (void)arg;
  appended_status = status;
  if (status == 0)
    crashfs_mark(MARK_ACKED, 0, 0);
}

static int scan_count(void *arg, const struct sl_spool_record *rec) {
  if (rec->body_len == 5 && memcmp(rec->body, "hello", 5) == 0)
    ++*(int *)arg;
  return 0;
}

static void check_spool(const char *dir, const char *what) {
  char path[400];
  struct sl_spool_opts o;
  struct sl_spool *s = NULL;
  int found = 0, rc;

  snprintf(path, sizeof(path), "%s/spool/up1", dir);
  sl_spool_opts_init(&o);
  o.io = crashfs_nosync_io();
  o.preallocate = false;
  o.dict_train_records = 0;
  rc = sl_spool_open(path, &o, &s);
  if (rc != 0)
    fail_msg("%s: the spool does not open: %s", what, sl_strerror(rc));
  assert_int_equal(sl_spool_scan(s, scan_count, &found), 0);
  sl_spool_close(s);
  if (found != 1)
    fail_msg("%s: the acknowledged record is %s", what, found ? "there twice" : "lost");
}

/* The spool directory <spool.dir>/<upstream> and its parent are new: every name on the way
 * must be durable before the append's completion fires. */
static void spool_new_directory_name_durable(void **state) {
  char path[400];
  struct sl_spool_opts o;
  struct sl_spool *s = NULL;
  struct sl_spool_record rec = {.method = "POST", .method_len = 4, .target = "/", .target_len = 1};
  (void)state;

  snprintf(path, sizeof(path), "%s/spool/up1", root);
  sl_spool_opts_init(&o);
  o.io = crashfs_io();
  o.fsync = SL_SPOOL_FSYNC_ALWAYS;
  o.dict_train_records = 0;
  assert_int_equal(sl_spool_open(path, &o, &s), 0);
  rec.body = "hello";
  rec.body_len = 5;
  rec.enqueue_ms = 1;
  assert_int_equal(sl_spool_append(s, &rec, on_appended, NULL), 0);
  sl_spool_wait_idle(s);
  sl_spool_poll_completions(s);
  assert_int_equal(appended_status, 0);
  sl_spool_close(s);
  each_state_after_ack(check_spool);
}

/* ---- the durable helpers --------------------------------------------------------------- */

static void check_file(const char *dir, const char *what) {
  char path[400], buf[16];
  int fd;
  ssize_t n;

  snprintf(path, sizeof(path), "%s/a/b/c/f", dir);
  fd = open(path, O_RDONLY);
  if (fd < 0)
    fail_msg("%s: a/b/c/f is lost", what);
  n = read(fd, buf, sizeof(buf));
  close(fd);
  if (n != 4 || memcmp(buf, "data", 4) != 0)
    fail_msg("%s: a/b/c/f holds %zd bytes, not its data", what, n);
}

/* Each level of a created path, then a file created in it, survive. */
static void mkdir_p_each_level_durable(void **state) {
  char path[400];
  const struct sl_io *io = crashfs_io();
  int fd;
  (void)state;

  snprintf(path, sizeof(path), "%s/a/b/c", root);
  assert_int_equal(sl_durable_mkdir_p(io, path, 0755), 0);
  snprintf(path, sizeof(path), "%s/a/b/c/f", root);
  assert_int_equal(sl_durable_create(io, path, O_RDWR, 0644, &fd), 1);
  assert_int_equal(io->pwrite(fd, "data", 4, 0), 4);
  assert_int_equal(io->fdatasync(fd), 0);
  io->close(fd);
  crashfs_mark(MARK_ACKED, 0, 0);
  each_state_after_ack(check_file);
}

static void check_replaced(const char *dir, const char *what) {
  char path[400], buf[16];
  int fd;
  ssize_t n;

  snprintf(path, sizeof(path), "%s/r", dir);
  fd = open(path, O_RDONLY);
  if (fd < 0)
    fail_msg("%s: r is lost", what);
  n = read(fd, buf, sizeof(buf));
  close(fd);
  if (n != 3 || memcmp(buf, "new", 3) != 0)
    fail_msg("%s: r does not hold its new data (%zd bytes)", what, n);
}

/* A replaced file reads new once sl_durable_replace returned. */
static void replace_durable(void **state) {
  char path[400];
  const struct sl_io *io = crashfs_io();
  (void)state;

  snprintf(path, sizeof(path), "%s/r", root);
  assert_int_equal(sl_durable_replace(io, -1, path, "old", 3, 0644), 0);
  assert_int_equal(sl_durable_replace(io, -1, path, "new", 3, 0644), 0);
  crashfs_mark(MARK_ACKED, 0, 0);
  each_state_after_ack(check_replaced);
}

/* ---- the ledger journal ---------------------------------------------------------------- */

static struct sl_ledger_entry entry(unsigned n) {
  struct sl_ledger_entry e;

  memset(&e, 0, sizeof(e));
  e.id[0] = 0xcd;
  e.id[15] = (uint8_t)n;
  e.state = SL_LEDGER_DELIVERED;
  e.status = 200;
  e.enqueued_ms = 1000 + n;
  e.updated_ms = 2000 + n;
  return e;
}

static void check_journal(const char *dir, const char *what) {
  char path[400];
  uv_loop_t loop;
  struct sl_ledger *l = sl_ledger_create(64);
  struct sl_dedupe *d = sl_dedupe_create(64, 3600000);
  struct sl_ledger_journal_opts o;
  struct sl_ledger_journal *j = NULL;
  int rc;

  sl_ledger_journal_opts_init(&o);
  o.io = crashfs_nosync_io();
  snprintf(path, sizeof(path), "%s/x/y/" SL_LEDGER_JOURNAL_FILE, dir);
  assert_int_equal(uv_loop_init(&loop), 0);
  rc = sl_ledger_journal_open(&loop, path, l, d, 5000, &o, &j);
  if (rc != 0)
    fail_msg("%s: the journal does not open: %s", what, uv_strerror(rc));
  for (unsigned n = 0; n < 8; n++) {
    struct sl_ledger_entry want = entry(n), e;
    if (sl_ledger_get(l, want.id, &e) != 1 || e.state != SL_LEDGER_DELIVERED)
      fail_msg("%s: status %u, in a finished compaction, is lost", what, n);
  }
  sl_ledger_journal_close(j);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  sl_ledger_destroy(l);
  sl_dedupe_destroy(d);
}

/* The journal's directories are new; a run-time compaction finished: every status it holds
 * survives (its rename was never followed by a directory fsync). */
static void journal_compaction_durable(void **state) {
  char path[400];
  uv_loop_t loop;
  struct sl_ledger *l = sl_ledger_create(64);
  struct sl_dedupe *d = sl_dedupe_create(64, 3600000);
  struct sl_ledger_journal_opts o;
  struct sl_ledger_journal *j = NULL;
  struct sl_ledger_journal_stats st;
  (void)state;

  sl_ledger_journal_opts_init(&o);
  o.io = crashfs_io();
  snprintf(path, sizeof(path), "%s/x/y/" SL_LEDGER_JOURNAL_FILE, root);
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(sl_ledger_journal_open(&loop, path, l, d, 5000, &o, &j), 0);
  for (unsigned n = 0; n < 8; n++) {
    struct sl_ledger_entry e = entry(n);
    assert_int_equal(sl_ledger_put(l, &e), 0);
  }
  sl_ledger_journal_flush(j);
  uv_run(&loop, UV_RUN_DEFAULT); /* returns once the journal is idle */
  sl_ledger_journal_compact(j);
  uv_run(&loop, UV_RUN_DEFAULT);
  sl_ledger_journal_stats(j, &st);
  assert_int_equal(st.compactions, 1);
  crashfs_mark(MARK_ACKED, 0, 0);
  sl_ledger_journal_close(j);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  sl_ledger_destroy(l);
  sl_dedupe_destroy(d);
  each_state_after_ack(check_journal);
}

/* sl_durable_mkdir_p on odd paths: doubled and trailing slashes, a path that exists, a file
 * in the way. */
static void mkdir_p_paths(void **state) {
  char path[400];
  int fd;
  (void)state;

  snprintf(path, sizeof(path), "%s/p//q/", root);
  assert_int_equal(sl_durable_mkdir_p(NULL, path, 0755), 0);
  snprintf(path, sizeof(path), "%s/p/q", root);
  assert_int_equal(access(path, F_OK), 0);
  assert_int_equal(sl_durable_mkdir_p(NULL, path, 0755), 0);
  snprintf(path, sizeof(path), "%s/p/f", root);
  fd = open(path, O_RDWR | O_CREAT, 0644);
  assert_true(fd >= 0);
  close(fd);
  assert_int_equal(sl_durable_mkdir_p(NULL, path, 0755), -ENOTDIR);
  snprintf(path, sizeof(path), "%s/p/f/g", root);
  assert_int_equal(sl_durable_mkdir_p(NULL, path, 0755), -ENOTDIR);
  assert_int_equal(sl_durable_mkdir_p(NULL, "", 0755), -EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(spool_new_directory_name_durable, setup, teardown),
      cmocka_unit_test_setup_teardown(mkdir_p_each_level_durable, setup, teardown),
      cmocka_unit_test_setup_teardown(replace_durable, setup, teardown),
      cmocka_unit_test_setup_teardown(journal_compaction_durable, setup, teardown),
      cmocka_unit_test_setup_teardown(mkdir_p_paths, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

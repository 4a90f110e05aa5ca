#!/usr/bin/env bash
#
# Runs one end-to-end test against the real binaries:
#
#   tests/e2e/run.sh TEST_FILE SLUICE BACKEND
#
# TEST_FILE is a varnishtest script (*.vtc) or a bash script (test_*.sh);
# SLUICE and BACKEND are the paths of the sluice and sluice-demo-backend
# binaries. ctest calls it once per test (tests/CMakeLists.txt).
#
# Every test gets a fresh work directory (mktemp -d) that holds the configs,
# the logs (NAME.out / NAME.err) and the bookkeeping of every process the
# test started (NAME.pid / NAME.status). On exit, whatever happened, this
# script stops each of those processes by its PID (SIGTERM, then SIGKILL),
# and fails the test if:
#   - a sluice process exited on its own with a non-zero status, or did not
#     exit within 10 s of SIGTERM, or exited non-zero after it;
#   - any process wrote a sanitizer report (ASan, LSan, UBSan) to stderr.
# The work directory is removed when the test passes and kept (its path is
# printed) when it fails, unless E2E_KEEP=1 asks to keep it always.
#
# A *.vtc runs under varnishtest with these macros:
#   ${sluice_port}    a free loopback port picked for sluice's listener
#   ${sluice_listen}  "127.0.0.1:<port>", for the config's listen setting
#   ${sluice_sock}    "127.0.0.1 <port>", for "client cN -connect"
#   ${start_sluice}   tests/e2e/start-sluice: reads a config (file argument
#                     or stdin), starts sluice on it in the background and
#                     returns once it listens
#   ${sluice_bin} ${backend_bin}  the binaries; ${e2e_dir} this directory;
#   ${e2e_work}       the work directory
# A test whose sluice could not bind the pre-picked port (another process
# took it in between) is run once more with fresh ports.
#
# A test_*.sh runs under bash with SLUICE, BACKEND, E2E_DIR and E2E_WORK in
# its environment; it sources "$E2E_DIR/lib.sh" for the helpers.
set -u

if [ $# -ne 3 ]; then
  echo "usage: $0 TEST_FILE SLUICE BACKEND" >&2
  exit 2
fi

test_file=$1
E2E_DIR=$(cd "$(dirname "$0")" && pwd)
SLUICE=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
BACKEND=$(cd "$(dirname "$3")" && pwd)/$(basename "$3")
E2E_WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-e2e.XXXXXX")
export E2E_DIR E2E_WORK SLUICE BACKEND
mkdir -p "$E2E_WORK/spool"
# Sanitizer builds: make every report fatal and visible; the caller's
# settings win (scripts/test sets the same).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# shellcheck source=lib.sh
. "$E2E_DIR/lib.sh"

finish() {
  local rc=$1
  if ! e2e_cleanup && [ "$rc" -eq 0 ]; then
    rc=1
  fi
  if [ "$rc" -eq "$E2E_SKIP" ]; then
    echo "e2e: SKIPPED: $(basename "$test_file")" >&2
    rm -rf "$E2E_WORK"
  elif [ "$rc" -ne 0 ]; then
    echo "e2e: FAILED: $(basename "$test_file") (exit $rc)" >&2
    e2e_dump_logs
    echo "e2e: work directory kept: $E2E_WORK" >&2
  elif [ "${E2E_KEEP:-0}" = 1 ]; then
    echo "e2e: work directory kept: $E2E_WORK" >&2
  else
    rm -rf "$E2E_WORK"
  fi
  exit "$rc"
}
trap 'finish $?' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for bin in "$SLUICE" "$BACKEND"; do
  if [ ! -x "$bin" ]; then
    echo "e2e: not an executable: $bin" >&2
    exit 1
  fi
done

run_vtc() {
  local attempt port log rc
  if ! command -v varnishtest >/dev/null 2>&1; then
    echo "e2e: varnishtest not found (Debian package 'varnish')" >&2
    return 1
  fi
  for attempt in 1 2; do
    port=$(e2e_free_port) || return 1
    log=$E2E_WORK/varnishtest.$attempt.log
    # -t: whole-test limit; every read or connect in the test then times out
    # after half of it unless the test sets "timeout".
    timeout -k 5 "$E2E_TEST_TIMEOUT" varnishtest -t 90 \
      -Dsluice_port="$port" \
      -Dsluice_listen="127.0.0.1:$port" \
      -Dsluice_sock="127.0.0.1 $port" \
      -Dstart_sluice="$E2E_DIR/start-sluice" \
      -Dsluice_bin="$SLUICE" \
      -Dbackend_bin="$BACKEND" \
      -De2e_dir="$E2E_DIR" \
      -De2e_work="$E2E_WORK" \
      "$test_file" >"$log" 2>&1
    rc=$?
    if [ "$rc" -ne 0 ] && [ "$attempt" = 1 ] && grep -q "E2E_PORT_IN_USE" "$log"; then
      echo "e2e: port $port was taken before sluice bound it; retrying with a new one" >&2
      e2e_cleanup 2>/dev/null || true
      e2e_reset_state
      continue
    fi
    cat "$log"
    return "$rc"
  done
}

# Each test must end (and this script clean up) before ctest's 120 s
# TIMEOUT: ctest kills only its own process tree, and processes started from
# a varnishtest shell step are not part of it.
E2E_TEST_TIMEOUT=${E2E_TEST_TIMEOUT:-100}

case "$test_file" in
  *.vtc) run_vtc ;;
  *.sh) timeout -k 5 "$E2E_TEST_TIMEOUT" bash "$test_file" ;;
  *)
    echo "e2e: unknown test type: $test_file" >&2
    exit 2
    ;;
esac

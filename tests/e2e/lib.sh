# shellcheck shell=bash
#
# Helpers for the end-to-end tests (sourced by run.sh, by test_*.sh and by
# start-sluice). Bash only.
#
# Environment (set by run.sh): SLUICE and BACKEND, the binaries under test;
# E2E_DIR, this directory; E2E_WORK, the test's private work directory.
#
# Processes: e2e_spawn starts one in the background under a NAME and keeps
# its bookkeeping in $E2E_WORK: NAME.pid, NAME.out (stdout), NAME.err
# (stderr) and, once it has exited, NAME.status (its exit status, 128+N for
# signal N). Every spawned NAME is listed in $E2E_WORK/procs so that
# e2e_cleanup (called by run.sh on exit) can stop it by PID and check it.
# A process the test stops or kills on purpose must go through e2e_stop,
# e2e_kill or e2e_signal (or be declared with e2e_expect_exit): any other
# exit of a sluice process with a non-zero status fails the test.
#
# Never call a bare "wait" in a test: it would also wait for every process
# e2e_spawn started. Wait for your own background jobs by PID.
#
# Assertions print "e2e: FAIL: <what>: expected ..., got ..." and exit 1.
# Every wait is bounded; timeouts are in seconds and may be fractional.

: "${E2E_WORK:?E2E_WORK is not set: run the test through tests/e2e/run.sh}"
: "${E2E_DIR:?E2E_DIR is not set: run the test through tests/e2e/run.sh}"

# How long a process gets to become ready or to exit; sanitizer builds are slower.
E2E_START_TIMEOUT=${E2E_START_TIMEOUT:-20}
E2E_STOP_TIMEOUT=${E2E_STOP_TIMEOUT:-10}

# A test script that stops on an error (set -e) says where.
case "$0" in
  *test_*.sh)
    set -E
    trap 'e2e_log "command failed at ${BASH_SOURCE[0]##*/}:$LINENO: $BASH_COMMAND"' ERR
    ;;
esac

# ---------------------------------------------------------------- messages

e2e_log() {
  printf 'e2e: %s\n' "$*" >&2
}

# e2e_fail MESSAGE: reports a failed assertion and ends the test.
e2e_fail() {
  printf 'e2e: FAIL: %s\n' "$*" >&2
  exit 1
}

# e2e_skip WHY: the test cannot run on this machine (ctest shows it as skipped, never passed).
E2E_SKIP=77
e2e_skip() {
  printf 'e2e: SKIP: %s\n' "$*" >&2
  exit "$E2E_SKIP"
}

# ---------------------------------------------------------------- assertions

# e2e_assert_eq EXPECTED ACTUAL WHAT
e2e_assert_eq() {
  if [ "$1" != "$2" ]; then
    e2e_fail "$3: expected '$1', got '$2'"
  fi
}

# e2e_assert_ne UNEXPECTED ACTUAL WHAT
e2e_assert_ne() {
  if [ "$1" = "$2" ]; then
    e2e_fail "$3: expected anything but '$1'"
  fi
}

# e2e_assert_match ERE STRING WHAT: STRING must match the extended regex.
# (A here-string, not a pipe: under pipefail, grep -q leaving early could make printf die of
# SIGPIPE and a match read as a failure.)
e2e_assert_match() {
  if ! grep -Eq -- "$1" <<<"$2"; then
    e2e_fail "$3: expected a match of /$1/, got '$2'"
  fi
}

# e2e_assert_no_match ERE STRING WHAT
e2e_assert_no_match() {
  if grep -Eq -- "$1" <<<"$2"; then
    e2e_fail "$3: expected no match of /$1/, got '$2'"
  fi
}

# e2e_assert_file_match ERE FILE WHAT: some line of FILE must match.
e2e_assert_file_match() {
  if ! grep -Eq -- "$1" "$2" 2>/dev/null; then
    e2e_fail "$3: no line of $(basename "$2") matches /$1/; it holds:
$(tail -n 20 "$2" 2>/dev/null)"
  fi
}

# e2e_assert_le A B WHAT: integer A <= integer B.
e2e_assert_le() {
  if [ "$1" -gt "$2" ]; then
    e2e_fail "$3: expected at most $2, got $1"
  fi
}

# ---------------------------------------------------------------- waiting

# e2e_ms SECONDS: prints SECONDS (may be fractional) in milliseconds.
e2e_ms() {
  awk -v s="$1" 'BEGIN { printf "%d\n", s * 1000 }'
}

# e2e_now_ms: milliseconds since the epoch.
e2e_now_ms() {
  local t
  t=$(date +%s%N)
  echo $((t / 1000000))
}

# e2e_wait_until TIMEOUT WHAT CMD [ARGS...]: runs CMD every 50 ms until it
# succeeds; fails the test with WHAT after TIMEOUT seconds.
e2e_wait_until() {
  local timeout=$1 what=$2 deadline
  shift 2
  deadline=$(($(e2e_now_ms) + $(e2e_ms "$timeout")))
  while ! "$@" >/dev/null 2>&1; do
    if [ "$(e2e_now_ms)" -ge "$deadline" ]; then
      e2e_fail "timed out after ${timeout}s waiting for: $what"
    fi
    sleep 0.05
  done
}

# ---------------------------------------------------------------- ports

# e2e_free_port: prints a TCP port that is free on 127.0.0.1 right now.
e2e_free_port() {
  python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# e2e_port_refuses PORT: true if a connection to 127.0.0.1:PORT is refused.
e2e_port_refuses() {
  python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.settimeout(2)
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
except ConnectionRefusedError:
    sys.exit(0)
except OSError:
    sys.exit(2)
sys.exit(1)
EOF
}

# ---------------------------------------------------------------- processes

e2e_pid() { cat "$E2E_WORK/$1.pid" 2>/dev/null; }

# e2e_exited NAME: true once NAME has exited (its status is known).
e2e_exited() { [ -s "$E2E_WORK/$1.status" ]; }

# e2e_alive NAME: true while NAME runs.
e2e_alive() {
  local pid
  pid=$(e2e_pid "$1") || return 1
  ! e2e_exited "$1" && kill -0 "$pid" 2>/dev/null
}

# e2e_status NAME: prints the exit status of NAME (empty while it runs).
e2e_status() { cat "$E2E_WORK/$1.status" 2>/dev/null; }

# e2e_spawn NAME CMD [ARGS...]: starts CMD in the background with stdin
# from /dev/null, stdout in $E2E_WORK/NAME.out and stderr in NAME.err, and
# returns once its PID is recorded in NAME.pid. A NAME may be reused once its
# previous process has exited: the old files are renamed NAME.<n>.*.
e2e_spawn() {
  local name=$1 w=$E2E_WORK n=1 f
  shift
  if [ -e "$w/$name.pid" ]; then
    if e2e_alive "$name"; then
      e2e_fail "e2e_spawn: a process named '$name' is still running"
    fi
    while [ -e "$w/$name.$n.pid" ]; do n=$((n + 1)); done
    for f in pid out err status expected is_sluice port admin_port; do
      if [ -e "$w/$name.$f" ]; then mv "$w/$name.$f" "$w/$name.$n.$f"; fi
    done
  fi
  grep -qx -- "$name" "$w/procs" 2>/dev/null || echo "$name" >>"$w/procs"
  # The wrapper subshell waits for the process to record its exit status;
  # all its descriptors are detached so that nobody (varnishtest's shell
  # step, a command substitution) waits for it to close a pipe.
  (
    "$@" </dev/null >"$w/$name.out" 2>"$w/$name.err" &
    child=$!
    echo "$child" >"$w/$name.pid.tmp"
    mv "$w/$name.pid.tmp" "$w/$name.pid"
    st=0
    wait "$child" || st=$? # a set -e test must still record the status
    echo "$st" >"$w/$name.status.tmp"
    mv "$w/$name.status.tmp" "$w/$name.status"
  ) </dev/null >/dev/null 2>&1 &
  e2e_wait_until 5 "process $name to start" test -s "$w/$name.pid"
}

# e2e_expect_exit NAME: NAME may exit with any status (the test checks it).
e2e_expect_exit() { : >"$E2E_WORK/$1.expected"; }

# e2e_signal NAME SIG: sends SIG (TERM, HUP, KILL...) to NAME. TERM, INT and
# KILL mark the coming exit as intended.
e2e_signal() {
  local pid
  pid=$(e2e_pid "$1") || e2e_fail "e2e_signal: no process named '$1'"
  case "$2" in TERM | INT | KILL | SIGTERM | SIGINT | SIGKILL) e2e_expect_exit "$1" ;; esac
  kill -s "$2" "$pid" 2>/dev/null || e2e_fail "e2e_signal: could not send $2 to $1 (pid $pid)"
}

# e2e_wait_exit NAME TIMEOUT: waits until NAME exits and prints its status;
# returns 1 (printing nothing) if it still runs after TIMEOUT seconds.
e2e_wait_exit() {
  local deadline
  deadline=$(($(e2e_now_ms) + $(e2e_ms "$2")))
  while ! e2e_exited "$1"; do
    if [ "$(e2e_now_ms)" -ge "$deadline" ]; then return 1; fi
    sleep 0.05
  done
  e2e_status "$1"
}

# e2e_stop NAME [TIMEOUT]: SIGTERM, then waits for the exit and prints the
# status; fails the test if NAME is still running after TIMEOUT seconds
# (default E2E_STOP_TIMEOUT), after killing it.
e2e_stop() {
  local name=$1 timeout=${2:-$E2E_STOP_TIMEOUT} st
  if ! e2e_exited "$name"; then
    e2e_signal "$name" TERM
  fi
  if ! st=$(e2e_wait_exit "$name" "$timeout"); then
    kill -KILL "$(e2e_pid "$name")" 2>/dev/null
    e2e_fail "$name did not exit within ${timeout}s of SIGTERM"
  fi
  echo "$st"
}

# e2e_kill NAME: SIGKILL and wait for the exit.
e2e_kill() {
  e2e_signal "$1" KILL
  e2e_wait_exit "$1" 5 >/dev/null || e2e_fail "$1 survived SIGKILL"
}

# e2e_wait_log NAME out|err ERE TIMEOUT: waits until a line of NAME's stdout
# or stderr matches; fails if NAME exits first or after TIMEOUT seconds.
e2e_wait_log() {
  local name=$1 file=$E2E_WORK/$1.$2 re=$3 deadline
  deadline=$(($(e2e_now_ms) + $(e2e_ms "$4")))
  until grep -Eq -- "$re" "$file" 2>/dev/null; do
    if e2e_exited "$name" && ! grep -Eq -- "$re" "$file" 2>/dev/null; then
      e2e_fail "$name exited (status $(e2e_status "$name")) before logging /$re/"
    fi
    if [ "$(e2e_now_ms)" -ge "$deadline" ]; then
      e2e_fail "timed out after ${4}s waiting for $name to log /$re/"
    fi
    sleep 0.05
  done
}

# ---------------------------------------------------------------- sluice

# e2e_config_base [FSYNC]: prints the settings every test config starts with:
# the listener and the admin listener on free ports (port 0: the real ports
# are logged), logs, and a spool directory inside the work directory with
# fsync policy FSYNC (default "off"). Append limits, upstreams and routes.
e2e_config_base() {
  cat <<EOF
listen = "127.0.0.1:0";
admin = { listen = "127.0.0.1:0"; };
log = { level = "info"; access = true; };
spool = { dir = "$E2E_WORK/spool"; fsync = "${1:-off}"; };
EOF
}

# e2e_write_config FILE: writes stdin to FILE (in $E2E_WORK unless the path
# has a slash) and prints its path.
e2e_write_config() {
  local f=$1
  case "$f" in */*) ;; *) f=$E2E_WORK/$f ;; esac
  cat >"$f"
  echo "$f"
}

# e2e_sluice_start [-n NAME] CONFIG [ARGS...]: runs "$SLUICE -c CONFIG ARGS"
# as NAME (default "sluice") and waits until it logs that it listens. Sets
# SLUICE_PORT (and writes NAME.port) and, when an admin listener is logged,
# SLUICE_ADMIN_PORT (NAME.admin_port). On failure prints the stderr of
# sluice; a failure to bind an address in use prints E2E_PORT_IN_USE.
e2e_sluice_start() {
  local name=sluice conf line port deadline
  if [ "${1:-}" = "-n" ]; then
    name=$2
    shift 2
  fi
  conf=$1
  shift
  [ -r "$conf" ] || e2e_fail "e2e_sluice_start: no config file $conf"
  e2e_spawn "$name" "$SLUICE" -c "$conf" "$@"
  : >"$E2E_WORK/$name.is_sluice"
  deadline=$(($(e2e_now_ms) + E2E_START_TIMEOUT * 1000))
  while :; do
    line=$(grep -E 'listening on 127\.0\.0\.1:[0-9]+' "$E2E_WORK/$name.err" 2>/dev/null |
      grep -v 'admin' | head -n 1) || true
    [ -n "$line" ] && break
    if e2e_exited "$name"; then
      if grep -Eqi 'in use|EADDRINUSE' "$E2E_WORK/$name.err"; then echo "E2E_PORT_IN_USE" >&2; fi
      e2e_fail "$name exited with status $(e2e_status "$name") before listening; stderr:
$(cat "$E2E_WORK/$name.err")"
    fi
    if [ "$(e2e_now_ms)" -ge "$deadline" ]; then
      e2e_fail "$name did not log 'listening on 127.0.0.1:PORT' within ${E2E_START_TIMEOUT}s; stderr:
$(cat "$E2E_WORK/$name.err")"
    fi
    sleep 0.05
  done
  port=$(printf '%s\n' "$line" | sed -E 's/.*listening on 127\.0\.0\.1:([0-9]+).*/\1/')
  echo "$port" >"$E2E_WORK/$name.port"
  # shellcheck disable=SC2034 # an output, for the tests
  SLUICE_PORT=$port
  SLUICE_ADMIN_PORT=
  line=$(grep -E 'admin listening on 127\.0\.0\.1:[0-9]+' "$E2E_WORK/$name.err" | head -n 1) || true
  if [ -n "$line" ]; then
    SLUICE_ADMIN_PORT=$(printf '%s\n' "$line" | sed -E 's/.*listening on 127\.0\.0\.1:([0-9]+).*/\1/')
    echo "$SLUICE_ADMIN_PORT" >"$E2E_WORK/$name.admin_port"
  fi
  e2e_log "$name (pid $(e2e_pid "$name")) listens on 127.0.0.1:$port${SLUICE_ADMIN_PORT:+, admin on 127.0.0.1:$SLUICE_ADMIN_PORT}"
}

# e2e_admin_port [NAME]: waits (briefly) for the admin listener and prints its port.
e2e_admin_port() {
  local name=${1:-sluice}
  e2e_wait_log "$name" err 'admin listening on 127\.0\.0\.1:[0-9]+' 5
  grep -E 'admin listening on 127\.0\.0\.1:[0-9]+' "$E2E_WORK/$name.err" | head -n 1 |
    sed -E 's/.*listening on 127\.0\.0\.1:([0-9]+).*/\1/'
}

# e2e_sluice_stop [NAME]: graceful stop; fails unless it exits 0 in time.
# shellcheck disable=SC2120 # NAME is optional
e2e_sluice_stop() {
  local name=${1:-sluice} st
  st=$(e2e_stop "$name") || exit 1
  e2e_assert_eq 0 "$st" "exit status of $name after SIGTERM"
}

# ---------------------------------------------------------------- backend

# e2e_backend_start [-n NAME] [ARGS...]: runs the demo backend as NAME
# (default "backend") on a free port, waits for "listening on
# 127.0.0.1:PORT" and sets BACKEND_PORT (and writes NAME.port). ARGS replace
# the defaults "--service-time 0ms --capacity 64".
e2e_backend_start() {
  local name=backend port
  if [ "${1:-}" = "-n" ]; then
    name=$2
    shift 2
  fi
  if [ $# -eq 0 ]; then set -- --service-time 0ms --capacity 64; fi
  e2e_spawn "$name" "$BACKEND" --listen 127.0.0.1:0 "$@"
  local deadline
  deadline=$(($(e2e_now_ms) + E2E_START_TIMEOUT * 1000))
  until port=$(cat "$E2E_WORK/$name.out" "$E2E_WORK/$name.err" 2>/dev/null |
    grep -Eo 'listening on 127\.0\.0\.1:[0-9]+' | head -n 1 | sed 's/.*://') && [ -n "$port" ]; do
    if e2e_exited "$name"; then
      e2e_fail "$name exited with status $(e2e_status "$name") before listening; stderr:
$(cat "$E2E_WORK/$name.err")"
    fi
    if [ "$(e2e_now_ms)" -ge "$deadline" ]; then
      e2e_fail "$name did not print 'listening on 127.0.0.1:PORT' within ${E2E_START_TIMEOUT}s"
    fi
    sleep 0.05
  done
  echo "$port" >"$E2E_WORK/$name.port"
  # shellcheck disable=SC2034 # an output, for the tests
  BACKEND_PORT=$port
  e2e_log "$name (pid $(e2e_pid "$name")) listens on 127.0.0.1:$port"
}

# ---------------------------------------------------------------- HTTP

# e2e_curl ARGS...: curl, silent but showing errors, never hanging more than 15 s.
e2e_curl() {
  curl -sS --max-time 15 "$@"
}

# e2e_http_status URL [CURL ARGS...]: prints the status code of one request
# ("000" when there was no response).
e2e_http_status() {
  local url=$1
  shift
  curl -s --max-time 15 -o /dev/null -w '%{http_code}' "$@" "$url" || true
}

# Python helpers for raw sockets: tests run "python3 - ARGS <<'EOF'" scripts
# that "from e2e_http import *" (see e2e_http.py).
export PYTHONPATH="$E2E_DIR${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1

# ---------------------------------------------------------------- cleanup

# e2e_cleanup: stops every process still running (newest first) and checks
# how each ended. Returns 1 if something was wrong (messages on stderr).
e2e_cleanup() {
  local w=$E2E_WORK name pid st bad=0 names
  [ -s "$w/procs" ] || return 0
  names=$(tac "$w/procs")
  for name in $names; do
    pid=$(e2e_pid "$name") || continue
    if ! e2e_exited "$name"; then
      if ! kill -0 "$pid" 2>/dev/null; then
        # The wrapper went away without recording a status.
        continue
      fi
      kill -TERM "$pid" 2>/dev/null
      if ! st=$(e2e_wait_exit "$name" "$E2E_STOP_TIMEOUT"); then
        kill -KILL "$pid" 2>/dev/null
        e2e_wait_exit "$name" 5 >/dev/null
        if [ -e "$w/$name.is_sluice" ]; then
          printf 'e2e: FAIL: %s (pid %s) did not exit within %ss of SIGTERM\n' \
            "$name" "$pid" "$E2E_STOP_TIMEOUT" >&2
          bad=1
        fi
      elif [ "$st" != 0 ]; then
        if [ -e "$w/$name.is_sluice" ]; then
          printf 'e2e: FAIL: %s exited with status %s after SIGTERM (expected 0)\n' \
            "$name" "$st" >&2
          bad=1
        fi
      fi
    else
      st=$(e2e_status "$name")
      if [ "$st" != 0 ] && [ ! -e "$w/$name.expected" ]; then
        if [ -e "$w/$name.is_sluice" ]; then
          printf 'e2e: FAIL: %s exited on its own with status %s during the test\n' \
            "$name" "$st" >&2
          bad=1
        fi
      fi
    fi
  done
  # Sanitizer reports of any process, including earlier runs of a NAME.
  local f
  for f in "$w"/*.err; do
    [ -e "$f" ] || continue
    if grep -Eq 'ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|SUMMARY: UndefinedBehaviorSanitizer' "$f"; then
      printf 'e2e: FAIL: sanitizer report in %s:\n' "$(basename "$f")" >&2
      grep -E -A 30 'ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:' "$f" | head -n 60 >&2
      bad=1
    fi
  done
  return "$bad"
}

# e2e_reset_state: forgets every process (after e2e_cleanup), for a rerun.
e2e_reset_state() {
  local d=$E2E_WORK/attempt.$$.$RANDOM
  mkdir -p "$d"
  find "$E2E_WORK" -maxdepth 1 -type f -exec mv {} "$d/" \;
}

# e2e_dump_logs: prints the tail of every process's stderr and stdout.
e2e_dump_logs() {
  local f
  for f in "$E2E_WORK"/*.err "$E2E_WORK"/*.out; do
    [ -s "$f" ] || continue
    printf -- '--- %s (last 40 lines)\n' "$(basename "$f")" >&2
    tail -n 40 "$f" >&2
  done
}
